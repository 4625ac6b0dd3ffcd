#!/usr/bin/perl

# guardd's core, over its Unix socket: HELLO, PING, AUDIT acknowledged only
# once durable (group commits, a verifiable journal), bad frames closing
# only their own connection, a 0660 socket, SIGHUP reloads that keep the
# old policies when the new ones are invalid, and a clean SIGTERM.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Guard::Frames;
use IO::Socket::UNIX;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";
-x $guardd or BAIL_OUT("$guardd is missing: make -C policy-engine");

my $dir = tempdir('guardd-test-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
my $json = JSON::PP->new->canonical;

mkdir "$dir/pol";
sub write_file {
    my ($name, $text) = @_;
    open my $f, '>', "$dir/$name" or die "$name: $!";
    print $f $text;
    close $f;
}
write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "ttl": "30s",
    "signals": [
      {"id": "destructive", "weight": 50, "when": {"method": ["DELETE"]}},
      {"id": "sensitive", "weight": 30, "when": {"route_sensitive": true}},
      {"id": "big-body", "weight": 15, "when": {"body_size_over": 1000}},
      {"id": "burst", "weight": 40,
       "when": {"subject_rate_over": {"requests": 3, "window": "1m"}}},
      {"id": "not-admin", "weight": 5, "shadow": true,
       "when": {"claim": {"name": "roles", "lacks": "admin"}}}
    ]
  }
}
JSON
write_file('pol/plain.json', '{"tenant": "plain"}');
write_file('guardd.conf', $json->encode({
    listen => "$dir/guardd.sock", pid_file => "$dir/guardd.pid",
    policies => "$dir/pol", node => 'test-node',
    journal => { dir => "$dir/journal", segment_size => 65536 },
    max_frame => 4096,
}));

# -t checks the configuration and the policies
my $out = `$guardd -c $dir/guardd.conf -t 2>&1`;
is($? >> 8, 0, 'guardd -t accepts a valid configuration');
like($out, qr/policy version [0-9a-f]{64}/, 'and names the policy version');

my $pid = spawn_guardd($guardd, "$dir/guardd.conf", "$dir/guardd.sock",
                       "$dir/guardd.log");
END { kill 'KILL', $pid if $pid && kill 0, $pid }

ok(-S "$dir/guardd.sock", 'the socket exists');
is((stat "$dir/guardd.sock")[2] & 07777, 0660, 'the socket is 0660');
ok(-f "$dir/guardd.pid", 'the pid file exists');

sub connect_sock {
    IO::Socket::UNIX->new(Peer => "$dir/guardd.sock", Type => SOCK_STREAM)
        or die "connect: $!";
}


sub closed {
    my ($s) = @_;
    my $sel = IO::Select->new($s);
    return 0 unless $sel->can_read(5);
    my $r = sysread $s, my $b, 1;
    return defined $r && $r == 0;
}

my $s = connect_sock();
print $s frame(1, 1, { version => 1, max_frame => 65536, node => 'nginx' });
my ($hello) = read_frames($s, 1);
is($hello->{type}, 1, 'HELLO answered with HELLO');
is($hello->{payload}{node}, 'test-node', 'with the node name');
is($hello->{payload}{max_frame}, 4096, 'and the smaller maximum frame');
like($hello->{payload}{policy_version}, qr/^[0-9a-f]{64}$/,
     'and the policy version');

print $s frame(6, 77);
my ($pong) = read_frames($s, 1);
is_deeply([$pong->{type}, $pong->{id}], [7, 77], 'PING 77 gets PONG 77');

# 200 AUDIT records pipelined: every one acknowledged, each once
my $n = 200;
print $s join '', map {
    frame(4, 1000 + $_, { tenant => 'acme', reason => 'rate_limited',
                          seq => $_ })
} 1 .. $n;
my @acks = read_frames($s, $n, 30);
is(scalar @acks, $n, "$n AUDIT frames, $n answers");
is(scalar(grep { $_->{type} == 5 } @acks), $n, 'all are ACKs');
my %ids = map { $_->{id} => 1 } @acks;
is(scalar keys %ids, $n, 'each request id acknowledged once');
ok(!grep({ ($_->{payload}{hash} // '') !~ /^[0-9a-f]{64}$/ } @acks),
   'each ACK carries the record hash');

my $v = `$guardctl audit verify --dir $dir/journal`;
is($? >> 8, 0, 'the journal verifies');
like($v, qr/ok: $n records/, "it holds the $n records");

# DECIDE: explainable scores against the tenant's thresholds
sub decide {
    my ($id, %req) = @_;
    print $s frame(2, $id, { tenant => 'acme', method => 'GET',
                             route => '/api/orders', client_ip => '10.0.0.1',
                             claims => { roles => ['reader'] }, %req });
    my ($v) = read_frames($s, 1);
    return $v;
}

my $v1 = decide(11, subject => 'u1');
is($v1->{type}, 3, 'DECIDE answered with VERDICT');
is($v1->{id}, 11, 'with the request id');
is($v1->{payload}{decision}, 'allow', 'a plain GET: allow');
is($v1->{payload}{score}, 0, 'score 0 (shadow signals are not added)');
is_deeply([map { "$_->{id}:$_->{weight}:" . ($_->{shadow} ? 1 : 0) }
           @{ $v1->{payload}{signals} }], ['not-admin:5:1'],
          'the shadow signal is listed with its weight');
like($v1->{payload}{decision_id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-7/,
     'a UUIDv7 decision id');
is($v1->{payload}{policy_version}, $hello->{payload}{policy_version},
   'the policy version');
is($v1->{payload}{ttl_ms}, 30000, 'the verdict TTL');
is_deeply($v1->{payload}{thresholds}, { step_up => 40, deny => 70 },
          'the thresholds');

my $v2 = decide(12, subject => 'u2', method => 'DELETE');
is($v2->{payload}{decision}, 'step_up', 'DELETE: 50 >= 40, step_up');
is($v2->{payload}{score}, 50, 'score 50');

my $v3 = decide(13, subject => 'u3', method => 'DELETE',
                route_sensitive => JSON::PP::true, body_size => 5000);
is($v3->{payload}{decision}, 'deny', 'DELETE on a sensitive route: deny');
is($v3->{payload}{score}, 95, 'score 50 + 30 + 15');
is_deeply([sort map { $_->{id} } grep { !$_->{shadow} }
           @{ $v3->{payload}{signals} }],
          [qw(big-body destructive sensitive)], 'each matched signal listed');

# the subject's rate is state kept in guardd
my @burst = map { decide(20 + $_, subject => 'busy') } 1 .. 5;
is_deeply([map { $_->{payload}{decision} } @burst],
          [qw(allow allow allow step_up step_up)],
          'the 4th request of a subject within a minute: burst, step_up');

my $vp = decide(30, tenant => 'plain', subject => 'u1', method => 'DELETE');
is($vp->{payload}{decision}, 'allow', 'a tenant without risk rules: allow');

print $s frame(2, 31, { subject => 'x' });
my ($e) = read_frames($s, 1);
is($e->{type}, 8, 'DECIDE without a tenant: ERROR');
is($e->{payload}{code}, 'bad_request', 'bad_request');

# many decisions in flight on one connection, each answered by its id
print $s join '', map {
    frame(2, 100 + $_, { tenant => 'acme', subject => "m$_",
                         method => $_ % 2 ? 'DELETE' : 'GET' })
} 1 .. 50;
my @many = read_frames($s, 50, 20);
is(scalar @many, 50, '50 pipelined DECIDEs, 50 VERDICTs');
is(scalar(grep { $_->{payload}{decision} eq ($_->{id} % 2 ? 'step_up'
                                                          : 'allow') }
              @many), 50, 'each verdict matches its own request');

# journaled: every decision that is not an allow
my $refusals = 4 + 25;    # v2, v3, 2 of the burst, 25 of the 50
# bad frames close their connection only
my $good = connect_sock();
for my $case (['garbage JSON', pack('NCN', 5 + 3, 4, 9) . '{x]'],
              ['unknown type', pack('NCN', 5, 0x7f, 1)],
              ['oversize frame', pack('NCN', 1 << 20, 4, 1)],
              ['short length', pack('N', 2)]) {
    my $bad = connect_sock();
    print $bad $case->[1];
    ok(closed($bad), "$case->[0]: the connection is closed");
}
print $good frame(6, 9);
my ($p2) = read_frames($good, 1);
is($p2->{type}, 7, 'another connection is still served');

open my $log, '<', "$dir/guardd.log";
my $logtext = do { local $/; <$log> };
like($logtext, qr/closing connection \d+: unknown frame type/,
     'bad frames are logged');

# SIGHUP: an invalid policy set keeps the old one
write_file('pol/bad.json', '{"tenant": "bad", "nope": 1}');
kill 'HUP', $pid;
sleep 0.5;
write_file('pol/bad.json', '{"tenant": "beta"}');
kill 'HUP', $pid;
sleep 0.5;
open $log, '<', "$dir/guardd.log";
$logtext = do { local $/; <$log> };
like($logtext, qr/bad\.json:1:\d+: \/nope: unknown member/,
     'a bad reload names the error');
like($logtext, qr/reload failed: keeping policy version/,
     'and keeps the old policies');
like($logtext, qr/reloaded: policy version [0-9a-f]{64}/,
     'a good reload loads the new set');

# SIGTERM: in-flight records are answered, the journal closed
print $s join '', map { frame(4, 5000 + $_, { seq => $_ }) } 1 .. 20;
kill 'TERM', $pid;
my @last = read_frames($s, 20, 10);
is(scalar(grep { $_->{type} == 5 } @last), 20,
   'records in flight at SIGTERM are acknowledged');
waitpid $pid, 0;
is($? >> 8, 0, 'guardd exits 0');
ok(!-e "$dir/guardd.pid", 'the pid file is removed');
ok(!-e "$dir/guardd.sock", 'the socket is removed');
$v = `$guardctl audit verify --dir $dir/journal`;
my $total = 220 + $refusals;
like($v, qr/ok: $total records/,
     "all $total records (220 AUDITs, $refusals risk refusals) verify");

open $log, '<', "$dir/guardd.log";
$logtext = do { local $/; <$log> };
like($logtext, qr/stopped: $total records in (\d+) group commits/,
     'group commits are reported');
my ($commits) = $logtext =~ /in (\d+) group commits/;
ok($commits < $total, "fewer fsyncs ($commits) than records ($total)");
unlike($logtext, qr/AddressSanitizer|runtime error/, 'no sanitizer report');

done_testing;
