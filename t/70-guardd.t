#!/usr/bin/perl

# guardd's core, over its Unix socket: HELLO, PING, AUDIT acknowledged only
# once durable (group commits, a verifiable journal), bad frames closing
# only their own connection, a 0660 socket, SIGHUP reloads that keep the
# old policies when the new ones are invalid, and a clean SIGTERM.
# Then exactly once: records journaled once by id across resends, SIGTERM
# and kill -9 restarts; bad ids refused; secrets and personal data masked
# end to end; spill files ingested, deduplicated, set aside when bad.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

# make test's sanitizer pass changes only the nginx module; this test
# starts no nginx, and its programs are the same ASan+UBSan builds in
# both passes: checked once, in the first pass
plan skip_all => 'checked once, in the first pass (no nginx)'
    if $ENV{GUARD_SANITIZE};
use Guard::Frames qw(:DEFAULT journal_records wait_for slurp write_text);
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
sub write_file { write_text("$dir/$_[0]", $_[1]) }
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
my %given = map { ($_->{payload}{id} // '') => 1 } @acks;
ok(!grep({ !/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/ }
         keys %given) && keys %given == $n,
   'and the UUIDv7 guardd gave each record without an id');

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
# a bad payload is answered for its id, the connection goes on
my $good = connect_sock();
{
    my $c = connect_sock();
    print $c pack('NCN', 5 + 3, 4, 9) . '{x]' . frame(6, 10);
    my @f = read_frames($c, 2);
    ok(@f == 2 && $f[0]{type} == 8 && $f[0]{id} == 9
       && $f[0]{payload}{code} eq 'bad_payload',
       'garbage JSON: ERROR bad_payload for its id');
    ok(@f == 2 && $f[1]{type} == 7 && $f[1]{id} == 10,
       'and the connection goes on');
}
# framing errors close their connection only
for my $case (['unknown type', pack('NCN', 5, 0x7f, 1)],
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

# --- exactly once, masking, spill files --------------------------------------

my $jdir = "$dir/journal";
my $spill = "$dir/spill";
mkdir $spill or die "$spill: $!";
my $UUID7 = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

# the new settings are checked
for my $bad ([{ dedupe_window => 10 }, qr/dedupe_window must be/],
             [{ dedupe_window => 'many' }, qr/dedupe_window must be/],
             [{ spill => '' }, qr/spill must name a directory/],
             [{ spill_orphan_after => 0 }, qr/spill_orphan_after must be/],
             [{ spil => $spill },
              qr/unknown setting "spil"; did you mean "spill"\?/]) {
    write_file('bad.conf', $json->encode({ policies => "$dir/pol",
                                           %{ $bad->[0] } }));
    my $o = `$guardd -c $dir/bad.conf -t 2>&1`;
    ok($? >> 8 != 0 && $o =~ $bad->[1],
       '-t refuses ' . $json->encode($bad->[0]));
}

write_file('guardd2.conf', $json->encode({
    listen => "$dir/guardd.sock", pid_file => "$dir/guardd.pid",
    policies => "$dir/pol", node => 'test-node',
    journal => { dir => $jdir, segment_size => 65536 },
    max_frame => 4096, dedupe_window => 10_000,
    spill => $spill, spill_orphan_after => 30,
}));
$out = `$guardd -c $dir/guardd2.conf -t 2>&1`;
is($? >> 8, 0, '-t accepts dedupe_window, spill and spill_orphan_after');

my $run = 1;
my $glog;
sub start {
    $glog = "$dir/guardd-" . ++$run . '.log';
    unlink "$dir/guardd.sock";    # left behind by kill -9
    $pid = spawn_guardd($guardd, "$dir/guardd2.conf", "$dir/guardd.sock",
                        $glog);
    ok(-S "$dir/guardd.sock", "guardd (run $run) listens");
    my $c = connect_sock();
    print $c frame(1, 1, { version => 1, max_frame => 4096, node => 'nginx' });
    read_frames($c, 1);
    return $c;
}
sub stop {
    my ($sig) = @_;
    kill $sig, $pid;
    waitpid $pid, 0;
    my $st = $?;
    undef $pid;
    return $st;
}
my $rid = 10_000;
sub audit {
    my ($c, $rec) = @_;
    print $c frame(4, ++$rid, $rec);
    my ($f) = read_frames($c, 1);
    return $f || { type => 0, payload => {} };
}
sub new_id {
    sprintf '%08x-%04x-7%03x-%04x-%04x%08x', rand 2**32, rand 2**16,
        rand 2**12, 0x8000 | rand 2**14, rand 2**16, rand 2**32;
}
sub count_id {
    my ($id) = @_;
    return scalar grep { ($_->{id} // '') eq $id } journal_records($jdir);
}
sub nrecords { scalar(my @r = journal_records($jdir)) }
sub is_dup { $_[0]{type} == 5 && $_[0]{payload}{duplicate} && !exists $_[0]{payload}{hash} }

my $c = start();

# the same id twice: journaled once, acknowledged twice
my $idA = new_id();
my %recA = (id => $idA, tenant => 'acme', stage => 'jwt', status => 401,
            reason => 'token_expired');
my $a1 = audit($c, \%recA);
is($a1->{type}, 5, 'an AUDIT with an id: ACK');
is($a1->{payload}{id}, $idA, 'the ACK carries the id');
like($a1->{payload}{hash} // '', qr/^[0-9a-f]{64}$/, 'and the hash');
ok(!exists $a1->{payload}{duplicate}, 'and is not a duplicate');
my $a2 = audit($c, \%recA);
is($a2->{type}, 5, 'the same id again: ACK too');
is($a2->{payload}{id}, $idA, 'carrying the id');
ok(is_dup($a2), 'with duplicate: true and no hash');
is(count_id($idA), 1, 'the record is journaled once');

# twice in one group commit
my $idB = new_id();
print $c frame(4, 501, { id => $idB, seq => 1 }) .
         frame(4, 502, { id => $idB, seq => 2 });
my @pair = sort { $a->{id} <=> $b->{id} } read_frames($c, 2);
ok(@pair == 2 && $pair[0]{payload}{hash} && is_dup($pair[1]),
   'twice in one write: the first appended, the second a duplicate');
my @recB = grep { ($_->{id} // '') eq $idB } journal_records($jdir);
ok(@recB == 1 && $recB[0]{seq} == 1, 'one record, the first sent');

# ids in upper case are the same ids
my $idU = new_id();
my $u = audit($c, { id => uc $idU, tenant => 'acme' });
is($u->{payload}{id}, $idU, 'an upper-case id is acknowledged in lower case');
is(count_id($idU), 1, 'and journaled in lower case');
ok(is_dup(audit($c, { id => $idU })), 'the same id in lower case: a duplicate');

# invalid ids: ERROR bad_request, nothing journaled, the connection goes on
my $nrec = nrecords();
for my $bad ('not-a-uuid', '', substr($idA, 0, 35), "$idA ", "{$idA}",
             join('', split /-/, $idA), 'g' . substr($idA, 1), 42, undef,
             [$idA], { id => $idA }) {
    my $e = audit($c, { id => $bad, tenant => 'acme' });
    my $what = defined $bad ? $json->encode([$bad]) : 'null';
    ok($e->{type} == 8 && $e->{payload}{code} eq 'bad_request',
       "id $what: ERROR bad_request");
}
print $c frame(6, 9);
my ($pong2) = read_frames($c, 1);
is($pong2->{type}, 7, 'the connection still works');
is(nrecords(), $nrec, 'nothing was journaled');

# no id: guardd gives one
my $g = audit($c, { tenant => 'acme', reason => 'rate_limited' });
like($g->{payload}{id} // '', $UUID7, 'an AUDIT without an id gets a UUIDv7');
is(count_id($g->{payload}{id} // 'x'), 1, 'journaled under it');

# masking end to end
my $jwt = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9'
        . '.eyJzdWIiOiJ1MSIsInRlbmFudCI6ImFjbWUifQ.c2lnbmF0dXJlLXNlY3JldA';
my $bearer = 'mF_9.B5f-4.1JqMbearersecret';
my $cookie = 'cookiesecret6b2f';
my $email = 'alice.smith@example.com';
my $card = '4111 1111 1111 1111';
my $idM = new_id();
my $m = audit($c, { id => $idM, tenant => 'acme', stage => 'jwt',
                    status => 401, reason => 'token_invalid',
                    route => "/api/export/$jwt",
                    headers => { Authorization => "Bearer $bearer",
                                 Cookie => "session=$cookie",
                                 'User-Agent' => 'curl/8.0' },
                    note => "reported by $email, card $card",
                    client_ip => '192.168.10.20' });
is($m->{type}, 5, 'a record full of secrets: ACK');
my ($recM) = grep { ($_->{id} // '') eq $idM } journal_records($jdir);
is($recM->{route}, '/api/export/[token]', 'the JWT in the route: [token]');
is_deeply($recM->{headers}, { Authorization => '[masked]',
                              Cookie => '[masked]',
                              'User-Agent' => 'curl/8.0' },
          'Authorization and Cookie: [masked]');
is($recM->{note}, 'reported by [email], card [card]',
   'the e-mail address and the card number masked');
is($recM->{client_ip}, '192.168.10.20', 'the client IP kept');

# guardd's own refusals are masked too
print $c frame(2, 601, { tenant => 'acme', subject => 'm1', method => 'DELETE',
                         route => '/users/bob@example.org',
                         client_ip => '10.0.0.9' });
my ($vd) = read_frames($c, 1);
is($vd->{payload}{decision}, 'step_up', 'a DELETE: step_up, journaled');
my $did = $vd->{payload}{decision_id} // 'x';
ok(wait_for(10, sub { count_id($did) }), 'the decision is journaled');
my ($recD) = grep { ($_->{id} // '') eq $did } journal_records($jdir);
is($recD->{route}, '/users/[email]', 'masked as well');

my @secrets = ($jwt, $bearer, $cookie, $email, $card, '4111111111111111',
               'bob@example.org');
sub leaks {
    my (@files) = @_;
    my @found;
    for my $f (@files) {
        my $text = slurp($f);
        push @found, "$f: $_" for grep { index($text, $_) >= 0 } @secrets;
    }
    return @found;
}
is_deeply([leaks(grep { -f } glob "$jdir/* $jdir/.*")], [],
          'no secret is in any file of the journal directory');

is(stop('TERM') >> 8, 0, 'SIGTERM: guardd exits 0');

# restarted: the set comes back from the journal
$c = start();
like(slurp($glog), qr/dedupe: the last \d+ ids of the journal remembered \(window 10000\)/,
     'the dedupe set is seeded from the journal');
ok(is_dup(audit($c, \%recA)), 'after a restart, the same id is a duplicate');
is(count_id($idA), 1, 'still journaled once');

# kill -9 with records in flight: sent again, each journaled once
my $idK = new_id();
ok(audit($c, { id => $idK })->{payload}{hash}, 'a record before kill -9');
my @flight = map { new_id() } 1 .. 50;
print $c join '', map { frame(4, 700 + $_, { id => $flight[$_ - 1], seq => $_ }) }
    1 .. 50;
stop('KILL');
$c = start();
ok(is_dup(audit($c, { id => $idK })), 'after kill -9, a journaled id is a duplicate');
print $c join '', map { frame(4, 800 + $_, { id => $flight[$_ - 1], seq => $_ }) }
    1 .. 50;
my @again = read_frames($c, 50, 20);
is(scalar(grep { $_->{type} == 5 } @again), 50,
   'the 50 records in flight at kill -9, sent again: all acknowledged');
my %cnt;
$cnt{ $_->{id} // '' }++ for journal_records($jdir);
is(scalar(grep { ($cnt{$_} // 0) == 1 } @flight), 50, 'each journaled exactly once');

# spill files: written as NAME.part, sealed as NAME.jsonl
my $spill_seq = 0;
sub spill_name {
    my ($ext, $ms) = @_;
    sprintf '%013d-%d-%d.%s', $ms // int(time * 1000), 4242, ++$spill_seq, $ext;
}
sub spill_put {
    my ($name, $text, $mtime) = @_;
    open my $f, '>', "$spill/.tmp" or die "$spill/.tmp: $!";
    print $f $text;
    close $f;
    utime $mtime, $mtime, "$spill/.tmp" if defined $mtime;
    rename "$spill/.tmp", "$spill/$name" or die "rename: $!";
}
sub lines { join '', map { $json->encode($_) . "\n" } @_ }

my ($s1, $s3) = (new_id(), new_id());
my $fa = spill_name('jsonl');
my $texta = lines({ id => $s1, seq => 'a1', note => 'from carol@example.net' },
                  { id => $idA, seq => 'a2' }, { id => $s3, seq => 'a3' });
$nrec = nrecords();
spill_put($fa, $texta);
ok(wait_for(10, sub { !-e "$spill/$fa" }), 'a sealed spill file is ingested and removed');
my @recs = journal_records($jdir);
is(scalar @recs, $nrec + 2, 'two records appended: one id was journaled already');
is_deeply([map { $_->{seq} } @recs[-2, -1]], ['a1', 'a3'], 'in file order');
is($recs[-2]{note}, 'from [email]', 'masked');
is(count_id($idA), 1, 'the known id is not appended again');
like(slurp($glog), qr/spill \Q$fa\E: 2 records ingested, 1 duplicates, 0 bad lines/,
     'logged per file');
ok(is_dup(audit($c, { id => $s3 })), 'a spilled record sent on the socket: a duplicate');

# a bad line in the middle: the good ones journaled, the file set aside
my ($b1, $b3) = (new_id(), new_id());
my $fb = spill_name('jsonl');
spill_put($fb, lines({ id => $b1, seq => 'b1' })
               . qq({"id": "secret-in-a-bad-line", oops\n)
               . lines({ id => $b3, seq => 'b3' }));
ok(wait_for(10, sub { -e "$spill/$fb.rejected" && !-e "$spill/$fb" }),
   'a file with a bad line is renamed .rejected');
is(count_id($b1) + count_id($b3), 2, 'its good lines are journaled');
my $gl = slurp($glog);
like($gl, qr/spill \Q$fb\E:2: not JSON/, 'the bad line is logged by number');
like($gl, qr/spill \Q$fb\E: 2 records ingested, 0 duplicates, 1 bad lines/,
     'and counted');
unlike($gl, qr/secret-in-a-bad-line/, 'never by content');

# every kind of bad line
my $c3 = new_id();
my $fc = spill_name('jsonl');
spill_put($fc, join "\n", '[1,2]', '{"seq":"no id"}', '{"id":"nope"}',
          '{"id":42}', '{"id":"' . new_id() . '","a":1,"a":2}',
          $json->encode({ id => $c3 }), '',
          $json->encode({ id => new_id(), seq => 'torn' }));
ok(wait_for(10, sub { -e "$spill/$fc.rejected" }), 'bad lines: .rejected');
is(count_id($c3), 1, 'the good line is journaled');
ok(!grep({ ($_->{seq} // '') eq 'torn' } journal_records($jdir)),
   'a last line without a newline is not');
$gl = slurp($glog);
for (['1', 'not a JSON object'], ['2', 'no "id"'],
     ['3', 'the "id" is not a canonical UUID'],
     ['4', 'the "id" is not a canonical UUID'], ['5', 'not JSON'],
     ['7', 'not JSON'], ['8', 'no newline at the end']) {
    like($gl, qr/spill \Q$fc\E:$_->[0]: \Q$_->[1]\E/, "line $_->[0]: $_->[1]");
}
like($gl, qr/spill \Q$fc\E: 1 records ingested, 0 duplicates, 7 bad lines/,
     '7 bad lines counted');

# .part files: an orphan (its writer died: old mtime) is ingested, one
# being written is left alone until it is sealed
my $fresh = spill_name('part', int(time * 1000) - 60_000);    # sorts first
my $orphan = spill_name('part');
my ($pf, $po) = (new_id(), new_id());
spill_put($fresh, lines({ id => $pf, seq => 'fresh' }));
spill_put($orphan, lines({ id => $po, seq => 'orphan' }), time - 3600);
ok(wait_for(10, sub { !-e "$spill/$orphan" }), 'an orphaned .part is ingested');
is(count_id($po), 1, 'its record journaled');
my $fd = spill_name('jsonl');
my $d1 = new_id();
spill_put($fd, lines({ id => $d1 }));
ok(wait_for(10, sub { !-e "$spill/$fd" }), 'a later sealed file is ingested');
ok(-e "$spill/$fresh", 'a fresh .part is left alone');
is(count_id($pf), 0, 'and not read');
(my $sealed = $fresh) =~ s/\.part$/.jsonl/;
rename "$spill/$fresh", "$spill/$sealed";
ok(wait_for(10, sub { !-e "$spill/$sealed" }), 'once sealed, it is ingested');
is(count_id($pf), 1, 'its record journaled');

# an ingested file put back: all duplicates, nothing appended
$nrec = nrecords();
spill_put($fa, $texta);
ok(wait_for(10, sub { !-e "$spill/$fa" }), 'an ingested file put back is read again');
is(nrecords(), $nrec, 'nothing appended');
like(slurp($glog), qr/spill \Q$fa\E: 0 records ingested, 3 duplicates, 0 bad lines/,
     'three duplicates');

# a file over 256 MiB is set aside unread (a sparse file)
my $fbig = spill_name('jsonl');
open my $big, '>', "$spill/.tmp" or die;
truncate $big, 257 * 1024 * 1024;
close $big;
rename "$spill/.tmp", "$spill/$fbig";
ok(wait_for(10, sub { -e "$spill/$fbig.rejected" }), 'a file over 256 MiB: .rejected');
like(slurp($glog), qr/spill \Q$fbig\E: larger than 256 MiB/, 'logged');
unlink "$spill/$fbig.rejected";

# the spill directory gone: one error, guardd goes on, and picks up again
rename $spill, "$spill.away";
ok(wait_for(10, sub { slurp($glog) =~ /spill: \Q$spill\E: No such file or directory/ }),
   'a missing spill directory is logged');
sleep 2.2;    # two more rounds
my @errs = slurp($glog) =~ /(spill: \Q$spill\E: No such file)/g;
is(scalar @errs, 1, 'once per failure streak');
print $c frame(6, 10);
my ($pong3) = read_frames($c, 1);
is($pong3->{type}, 7, 'guardd still serves');
rename "$spill.away", $spill;
my $fe = spill_name('jsonl');
my $e1 = new_id();
spill_put($fe, lines({ id => $e1 }));
ok(wait_for(10, sub { !-e "$spill/$fe" }), 'the directory back: ingestion resumes');
like(slurp($glog), qr/spill: \Q$spill\E can be read again/, 'and says so');

# kill -9 while a big spill file is ingested (most likely: as soon as the
# journal grows): nothing lost, nothing twice
my $nmany = 5000;
my @many_ids = map { new_id() } 1 .. $nmany;
my $fk = spill_name('jsonl');
my $jsize = sub { my $t = 0; $t += -s $_ for glob "$jdir/journal-*.jsonl"; $t };
my $size0 = $jsize->();
spill_put($fk, lines(map { { id => $_, tenant => 'acme', reason => 'rate_limited' } }
                     @many_ids));
my $end = time + 10;
sleep 0.002 while $jsize->() == $size0 && time < $end;
stop('KILL');
note(-e "$spill/$fk" ? 'killed during the ingestion of the file'
                     : 'guardd finished the file before it was killed');
$c = start();
ok(wait_for(20, sub { !-e "$spill/$fk" }), 'restarted: the file is ingested');
%cnt = ();
$cnt{ $_->{id} // '' }++ for journal_records($jdir);
is(scalar(grep { ($cnt{$_} // 0) == 1 } @many_ids), $nmany,
   "each of its $nmany records journaled exactly once");
is(stop('TERM') >> 8, 0, 'SIGTERM');

# a file spilled while guardd was down is ingested at startup
my $fs = spill_name('jsonl');
my $st1 = new_id();
spill_put($fs, lines({ id => $st1 }, { id => $idA }));
$c = start();
ok(wait_for(10, sub { !-e "$spill/$fs" }), 'a file spilled while guardd was down: ingested at start');
is(count_id($st1), 1, 'its new record journaled');
ok(is_dup(audit($c, \%recA)), 'and the first record is still a duplicate');
is(count_id($idA), 1, 'journaled once over five runs');
ok(-e "$spill/$fb.rejected" && -e "$spill/$fc.rejected",
   'the .rejected files are kept');

$v = `$guardctl audit verify --dir $jdir`;
is($? >> 8, 0, 'guardctl audit verify: the chain is intact') or diag $v;
is(stop('TERM') >> 8, 0, 'SIGTERM');
like(slurp($glog),
     qr/stopped: 1 records in 1 group commits, 2 duplicates, 1 records from 1 spill files/,
     'the stop line counts duplicates and spilled records');

# started as root with "user": it drops to that user after binding the
# socket and opening the journal, and still serves, reloads and journals
SKIP: {
    skip 'needs root', 7 if $> != 0;
    my ($uid, $gid) = (getpwnam 'nobody')[2, 3];
    skip 'no user nobody', 7 unless defined $uid;
    my $dd = "$dir/drop";
    mkdir $dd;
    chmod 0755, $dir, $dd;
    mkdir "$dd/pol";
    chmod 0755, "$dd/pol";
    write_file('drop/pol/plain.json', '{"tenant": "plain"}');
    chmod 0644, "$dd/pol/plain.json";
    write_file('drop/guardd.conf', $json->encode({
        listen => "$dd/g.sock", pid_file => "$dd/g.pid",
        policies => "$dd/pol", user => 'nobody',
        journal => { dir => "$dd/journal" },
    }));
    my $gp = spawn_guardd($guardd, "$dd/guardd.conf", "$dd/g.sock",
                          "$dir/guardd-drop.log");
    # the socket is bound before the drop: wait for it (bounded)
    my ($ruid, $euid);
    wait_for(10, sub {
        ($ruid, $euid) = slurp("/proc/$gp/status") =~ /^Uid:\s+(\d+)\s+(\d+)/m;
        defined $euid && $euid == $uid;
    });
    is_deeply([$ruid, $euid], [$uid, $uid], 'guardd runs as nobody');
    is((stat "$dd/journal")[4], $uid, 'its journal directory is nobody\'s');
    my $ds = IO::Socket::UNIX->new(Peer => "$dd/g.sock", Type => SOCK_STREAM);
    ok($ds, 'the socket still accepts');
    print $ds frame(4, 9, { tenant => 'plain', reason => 'token_missing' })
        if $ds;
    my ($ack) = $ds ? read_frames($ds, 1) : ();
    is($ack->{type} // 0, 5, 'an AUDIT is journaled and acknowledged');
    kill 'HUP', $gp;
    ok(wait_for(10, sub { slurp("$dir/guardd-drop.log") =~ /reloaded/ }),
       'SIGHUP reloads the policies as nobody');
    kill 'TERM', $gp;
    waitpid $gp, 0;
    is($? >> 8, 0, 'SIGTERM: exit 0');
    like(slurp("$dir/guardd-drop.log"), qr/running as nobody/,
         'the drop is logged');
}

my @logs = glob "$dir/guardd*.log";
is_deeply([leaks(@logs)], [], 'no secret is in guardd\'s logs');
my $all = join '', map { slurp($_) } @logs;
unlike($all, qr/AddressSanitizer|runtime error|LeakSanitizer/, 'no sanitizer report');

done_testing;
