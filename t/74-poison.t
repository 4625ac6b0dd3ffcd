#!/usr/bin/perl

# A request's bad payload is that request's problem only (issue 8, 1).
# guardd answers a DECIDE or AUDIT whose payload it cannot accept (a NUL
# in a string, bytes that are not UTF-8, not JSON) with an ERROR for that
# request id and keeps the connection; only a framing error closes it.
# The module never sends what guardd refuses: paths, headers and claims
# with NUL, control characters or invalid UTF-8 are delegated and audited
# with those bytes as %XX.  A token with a NUL in its subject does not cut
# other tenants off guardd.  A record guardd refuses goes to the
# dead-letter file, is counted and logged once, and the records behind it
# are acknowledged.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::UNIX;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use Guard::Test;
use Guard::Frames qw(:DEFAULT wait_for journal_records guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new->canonical;
$SIG{PIPE} = 'IGNORE';    # a peer that closed is a failed test, not a death

mkdir "$dir/spill" or die;
chmod 0777, "$dir/spill";    # the workers (nobody) write, guardd removes

$t->write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 80, "when": {"method": ["DELETE"]}},
      {"id": "not-admin", "weight": 1,
       "when": {"claim": {"name": "roles", "lacks": "admin"}}}
    ]
  }
}
JSON

$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-poison', spill => "$dir/spill"));

my $gpid;
sub start_guardd {
    $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                         "$dir/guardd.log");
}
sub stop_guardd {
    end_guardd($gpid);
    undef $gpid;
}

# a raw frame with the payload bytes as given
sub raw_frame {
    my ($type, $id, $body) = @_;
    return pack('NCN', 5 + length $body, $type, $id) . $body;
}

sub connect_guardd {
    my $s = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM)
        or die "connect $sock: $!";
    binmode $s;
    syswrite $s, frame(1, 0, { version => 1, max_frame => 65536,
                               node => 'poison-test' });
    my ($hello) = read_frames($s, 1);
    return ($s, $hello);
}

start_guardd();
ok(-S $sock, 'guardd is listening');

# 1. guardd: bad payloads get an ERROR for their id; the connection stays

{
    my ($s, $hello) = connect_guardd();
    is($hello->{type} // 0, 1, 'HELLO answered');

    my $secret = 'hunter2-secret';
    my @bad = (
        [ 2, 11, qq({"tenant":"acme","subject":"a\\u0000b-$secret"}),
          'DECIDE with \\u0000 in a string' ],
        [ 2, 12, qq({"tenant":"acme","route":"/\xff\xfe-$secret"}),
          'DECIDE with bytes that are not UTF-8' ],
        [ 2, 13, qq({"tenant":"acme", $secret), 'DECIDE that is not JSON' ],
        [ 4, 14, qq({"id":"01900000-0000-7000-8000-0000000000aa",)
                 . qq("route":"/x\\u0000$secret"}),
          'AUDIT with \\u0000 in a string' ],
        [ 4, 15, qq({"id": $secret}), 'AUDIT that is not JSON' ],
        [ 4, 16, qq({"a":1,"a":2}), 'AUDIT with a duplicate member' ],
        [ 2, 17, qq([1,2,3]), 'DECIDE that is not an object' ],
    );
    syswrite $s, join '', map { raw_frame(@$_[0 .. 2]) } @bad;
    # then good requests on the same connection
    syswrite $s, frame(2, 21, { tenant => 'acme', subject => 'ok',
                                method => 'GET', route => '/fine' })
               . frame(6, 22, undef);

    my %got = map { ($_->{id} => $_) } read_frames($s, @bad + 2);
    for my $b (@bad) {
        my $f = $got{$b->[1]} // {};
        is($f->{type} // 0, 8, "$b->[3]: ERROR for its id");
        is($f->{payload}{code} // '', 'bad_payload', "$b->[3]: bad_payload");
        unlike($json->encode($f->{payload} // {}), qr/\Q$secret\E|\\u0000/,
               "$b->[3]: the message does not echo the payload");
    }
    is($got{21}{type} // 0, 3, 'then a good DECIDE gets its VERDICT');
    like($got{21}{payload}{decision} // '', qr/^(allow|step_up|deny)$/,
         'with a decision');
    is($got{22}{type} // 0, 7, 'and a PING its PONG');

    # a framing error closes that connection (an unknown type)
    syswrite $s, pack('NCN', 5, 0x7f, 30);
    my $sel = IO::Select->new($s);
    my ($closed, $buf) = (0, '');
    for (1 .. 100) {
        next unless $sel->can_read(0.1);
        my $n = sysread $s, $buf, 4096;
        if (!$n) { $closed = 1; last }
    }
    ok($closed, 'a framing error (an unknown type) closes the connection');

    my ($s2) = connect_guardd();
    syswrite $s2, frame(6, 40, undef);
    my ($pong) = read_frames($s2, 1);
    is($pong->{type} // 0, 7, 'a new connection is served');

    # an oversize length closes too
    syswrite $s2, pack('NCN', 16 * 1024 * 1024, 2, 41);
    ($closed, $buf) = (0, '');
    $sel = IO::Select->new($s2);
    for (1 .. 100) {
        next unless $sel->can_read(0.1);
        my $n = sysread $s2, $buf, 4096;
        if (!$n) { $closed = 1; last }
    }
    ok($closed, 'an oversize frame closes the connection');

    my $log = $t->read_file('guardd.log');
    like($log, qr/DECIDE 11 refused: .*NUL/, 'guardd logs the refusal');
    unlike($log, qr/\Q$secret\E/, 'and never the payload');
    like($log, qr/closing connection \d+: unknown frame type/,
         'the framing error is logged as closing');
}

# 2. nginx: text with control bytes and invalid UTF-8 is delegated and
#    audited, with those bytes as %XX

$t->write_conf(workers => 1, http => <<'CONF');
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=2s connections=2;
    guard_audit_ring 16;
    guard_audit_spill %%DIR%%/spill;
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location = /status { guard_status; }

        location / {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /r/ {
            guard on;
            guard_risk on;
            guard_risk_fail closed;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /h/ {
            guard on;
            guard_tenant $http_x_tenant;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend\n"; }
    }
CONF
$t->run;

my $exp = time() + 3600;
my ($acme, $beta, $poison, $ctl) = $t->mint(
    { kid => 'hs256', claims => { sub => 'u1', tenant_id => 'acme',
                                  roles => ['reader'], exp => $exp } },
    { kid => 'hs256', claims => { sub => 'b1', tenant_id => 'beta',
                                  exp => $exp } },
    { kid => 'hs256', claims => { sub => "p\x00oison", tenant_id => 'acme',
                                  roles => ["re\x00ader"], exp => $exp } },
    { kid => 'hs256', claims => { sub => "c\x07tl", tenant_id => 'acme',
                                  exp => $exp } });

sub req {
    my ($method, $path, $tok, @h) = @_;
    return $t->http($method, $path, headers => [
        (defined $tok ? (Authorization => "Bearer $tok") : ()), @h]);
}

sub journal { journal_records("$dir/journal") }

sub wait_journal {
    my ($ids) = @_;
    my %by;
    wait_for(20, sub {
        %by = ();
        push @{ $by{$_->{id} // ''} }, $_ for journal();
        return !grep { !$by{$_} } @$ids;
    });
    return \%by;
}

sub status {
    my $r = $t->get('/status');
    return eval { $json->decode($r->{body}) } // {};
}

my $r = req('DELETE', '/r/%01%1f%7f%ff%c3%28/%C3%A9', $acme);
my $risk_id = problem_ok($r, 'risk_deny',
                         'a path with control bytes and bad UTF-8: delegated');
$r = req('GET', '/x/%01%09%ff');
my $jwt_id = problem_ok($r, 'token_missing', 'and refused before a token');
$r = req('GET', '/h/x', $acme, 'X-Tenant' => "\x01be\xfft\x7f");
my $hdr_id = problem_ok($r, 'tenant_mismatch',
                        'a tenant header with control bytes and bad UTF-8',
                        token => $acme);

my $by = wait_journal([$risk_id, $jwt_id, $hdr_id]);
is($by->{$risk_id}[0]{route}, "/r/%01%1f%7f%ff%c3(/\xc3\xa9",
   'DECIDE: the route is carried with those bytes as %XX');
is($by->{$jwt_id}[0]{route}, '/x/%01%09%ff',
   'AUDIT: the route is carried with those bytes as %XX');
is($by->{$hdr_id}[0]{tenant}, '%01be%fft%7f',
   'AUDIT: the addressed tenant from a header, as %XX');

# a subject with a control character (a claim guardd receives)
$r = req('DELETE', '/r/ctl', $ctl);
if (($r->{status} // 0) == 401) {
    pass('a subject with a control character is refused at verification');
} else {
    my $ctl_id = problem_ok($r, 'risk_deny',
                            'a subject with a control character: delegated');
    $by = wait_journal([$ctl_id]);
    is($by->{$ctl_id}[0]{subject}, 'c%07tl', 'the subject is carried as %XX');
}

# a token with NUL in its subject and in a claim the risk rules read:
# refused at verification, or delegated with the NUL as %00; never 503
$r = req('DELETE', '/r/nul', $poison);
ok(($r->{status} // 0) == 401 || ($r->{status} // 0) == 403,
   'a NUL-bearing token: refused (401 at verification or 403 by guardd), '
   . 'not 503: ' . ($r->{status} // 'none'));
$r = req('GET', '/r/nul', $poison);
ok(($r->{status} // 0) == 401 || ($r->{status} // 0) == 200,
   'GET with it: 401 or allowed, not 503: ' . ($r->{status} // 'none'));

my $st = status()->{audit} // {};
is($st->{rejected}, 0, 'guardd refused no record');
is($st->{dead_letter}, 0, 'nothing in the dead-letter file');
my $after_raw = () = $t->read_file('guardd.log') =~ /closing connection/g;
is($after_raw, 2, 'guardd closed only the two raw connections');

# 3. poison requests while other tenants are served, fail closed

my ($rounds, $clients) = (30, 3);
my @kids;
for my $k (1 .. 2 * $clients) {
    my $pid = fork // die;
    if ($pid == 0) {
        my $bad = $k <= $clients;
        open my $out, '>', "$dir/conc.$k" or POSIX::_exit(1);
        for my $i (1 .. $rounds) {
            my $resp = $bad ? req('DELETE', "/r/poison/$i", $poison)
                            : req('GET', "/r/good/$k/$i", $beta);
            print $out (($bad ? 'bad ' : 'good ') . ($resp->{status} // 0)
                        . "\n");
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid $_, 0 for @kids;
my (%good, %bad);
for my $k (1 .. 2 * $clients) {
    open my $in, '<', "$dir/conc.$k" or die;
    while (<$in>) {
        my ($kind, $status) = split;
        ($kind eq 'bad' ? \%bad : \%good)->{$status}++;
    }
}
is_deeply(\%good, { 200 => $rounds * $clients },
          'other tenants: every request answered normally, none 503');
is(scalar(grep { $_ != 401 && $_ != 403 } keys %bad), 0,
   'the poison requests: each refused for itself ('
   . join(', ', map { "$_: $bad{$_}" } sort keys %bad) . ')');
is(req('GET', '/r/after', $beta)->{status}, 200, 'a good token afterwards');
$after_raw = () = $t->read_file('guardd.log') =~ /closing connection/g;
is($after_raw, 2, 'guardd closed no nginx connection');
unlike($t->errlog, qr/guard sidecar: .*(closed by guardd|refused)/,
       'nginx saw no connection closed and no DECIDE refused');

# 4. the dead-letter file: a stand-in guardd refuses one record, makes
#    another wait ("unavailable"), and acknowledges the rest

for (1 .. 100) { last if (status()->{audit}{pending} // 1) == 0; sleep 0.1 }
stop_guardd();
open my $alog, '>', "$dir/audits.log" or die;
$alog->autoflush(1);
my %tried;
my $fake = stand_in_guardd($sock, 90, sub {
    my ($type, $id, $body) = @_;
    if ($type == 2) {
        my $d = eval { $json->decode($body) } // {};
        return ($d->{route} // '') =~ m{^/r/refuse/}
            ? frame(8, $id, { code => 'bad_payload',
                              message => 'refused for the test' })
            : frame(3, $id, { decision => 'allow', score => 0,
                  signals => [], decision_id =>
                  '01900000-0000-7000-8000-000000000001' });
    }
    return '' unless $type == 4;
    my $rec = eval { $json->decode($body) } // {};
    my $route = $rec->{route} // '';
    print $alog "$rec->{id} $route\n";
    if ($route =~ m{^/poison/}) {
        return frame(8, $id, { code => 'bad_payload',
                               message => 'refused for the test' });
    } elsif ($route =~ m{^/retry/} && !$tried{$rec->{id}}++) {
        return frame(8, $id, { code => 'unavailable',
                               message => 'try again' });
    }
    return frame(5, $id, { id => $rec->{id}, hash => '0' x 64 });
});

my $before = status()->{audit};
$t->errlog_mark;
my $dead_id = req('GET', '/poison/1')->{headers}{'guard-decision-id'};
my $retry_id = req('GET', '/retry/1')->{headers}{'guard-decision-id'};
my @behind = map { req('GET', "/behind/$_")->{headers}{'guard-decision-id'} }
             1 .. 5;
ok($dead_id && $retry_id && @behind == 5, 'refusals with decision ids');

my $after;
wait_for(30, sub {
    $after = status()->{audit};
    return $after->{pending} == 0;
});
is($after->{pending}, 0, 'the ring drains: nothing pending');
is($after->{acked} - $before->{acked}, 6,
   'the five records behind and the retried one are acknowledged');
is($after->{dead_letter} - $before->{dead_letter}, 1,
   'guard_status counts the dead letter');
is($after->{rejected} - $before->{rejected}, 1, 'and the refusal');
is($after->{dropped} - $before->{dropped}, 0, 'nothing dropped');

my @dead = map { $json->decode($_) }
           split /\n/, $t->read_file('spill/dead-letter.jsonl.dead');
is(scalar @dead, 1, 'one line in the dead-letter file');
is($dead[0]{record}{id}, $dead_id, 'the refused record');
is($dead[0]{record}{route}, '/poison/1', 'as it was sent');
is($dead[0]{code}, 'bad_payload', "with guardd's code");
like($dead[0]{ts_ms} // '', qr/^\d{13}$/, 'and a time');

# a resend period (5 s) later, the refused record was still sent once
sleep 6;
my %sent;
open my $al, '<', "$dir/audits.log" or die;
while (<$al>) { my ($id) = split; $sent{$id}++ }
is($sent{$dead_id}, 1, 'the refused record was sent once, never again');
is($sent{$retry_id}, 2, 'the "unavailable" one was sent again, once');
my @lines = $t->errlog(since_mark => 1) =~ /refused audit record \Q$dead_id\E/g;
is(scalar @lines, 1, 'the refusal is logged once');
like($t->errlog(since_mark => 1),
     qr/refused audit record \Q$dead_id\E \(bad_payload\): moved to ".*dead-letter\.jsonl\.dead"/,
     'naming the code and the file');
is(status()->{audit}{dead_letter} - $before->{dead_letter}, 1,
   'still one dead letter');

# a DECIDE guardd refuses fails that request alone (fail closed: 503),
# and does not count as guardd failing: the next request is served
my @refused = map { req('GET', "/r/refuse/$_", $acme)->{status} } 1 .. 5;
is_deeply(\@refused, [(503) x 5], 'each refused DECIDE: 503 for itself');
is(req('GET', '/r/fine', $acme)->{status}, 200,
   'the next request is decided at once: guardd is not counted as down');
like($t->errlog(since_mark => 1),
     qr/guardd refused the DECIDE \(bad_payload\)/, 'the refusal is logged');

# guardd never ingests the dead-letter file
kill 'KILL', $fake;
waitpid $fake, 0;
unlink $sock;
start_guardd();
sleep 2;
ok(-e "$dir/spill/dead-letter.jsonl.dead",
   'guardd leaves the dead-letter file alone');
stop_guardd();

$t->errlog_ok('no alert or emerg');

done_testing;
