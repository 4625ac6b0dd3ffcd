#!/usr/bin/perl

# guardctl events tail against a real Redis (Guard::Services) fed by
# guardd's Redis sink: the stream read from its start (a line per record,
# in journal order, or the records as JSON), a tenant filter, following
# new records live, consumer groups (created when missing; two consumers
# share the records, each once; acknowledged after printing; a consumer's
# entries delivered but never acknowledged come back to it first), a
# stream per tenant, and the errors (no Redis, a per-tenant stream without
# --tenant).

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
use Guard::Services;
use Guard::Frames qw(:DEFAULT slurp write_text command guardd_conf);
use Guard::Outbox;
use File::Temp qw(tempdir);
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";
-x $guardd or BAIL_OUT("$guardd is missing: make -C policy-engine");
-x $guardctl or BAIL_OUT("$guardctl is missing: make -C policy-engine");

my $dir = tempdir('guard-events-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
mkdir "$dir/$_" for qw(redis pol);
my $r = Guard::Services->redis("$dir/redis");
my $json = JSON::PP->new->canonical;
delete @ENV{qw(GUARD_REDIS GUARD_STREAM)};

my $sanitizer = 0;
sub tail {
    my $res = command($guardctl, 'events', 'tail', '--redis', $r->{socket},
                      '--timeout', '3s', @_);
    $sanitizer++ if $res->{err} =~ /AddressSanitizer|LeakSanitizer|runtime error/;
    return $res;
}
sub lines { [grep { length } split /\n/, $_[0]] }
# the stream's entries: { entry => ID, its fields }
sub entries { [map { { entry => $_->[0], %{ $_->[1] } } }
               @{ stream_entries($r, $_[0] // 'guard:records') }] }

# --- guardd publishing to the stream ----------------------------------------

write_text("$dir/pol/acme.json", '{"tenant": "acme"}');
my $sock = "$dir/guardd.sock";
my $msock = "$dir/metrics.sock";
write_text("$dir/guardd.conf", guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-events', metrics => $msock,
    sinks => { redis => { socket => $r->{socket}, batch => 16 },
               state_dir => "$dir/state" }));
my $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
ok(-S $sock, 'guardd with a Redis sink listens');
my $c = audit_client($sock) or die 'no HELLO';
is(send_refusals($c, 30), 30, '30 refusals journaled');
ok(wait_caught_up($msock, 30, 'redis'), 'the sink caught up');

my @entries = @{ entries() };
my @refusals = grep { $_->{kind} ne 'lifecycle' && $_->{kind} ne 'policy' } @entries;
is(scalar @refusals, 30, 'the stream holds the 30 refusals (and guardd\'s own records)');
my $total = @entries;

# --- reading the stream -----------------------------------------------------

my $t = tail('--from', '0', '--count', $total);
is($t->{exit}, 0, 'events tail --from 0 --count N: exit 0') or diag $t->{err};
my $l = lines($t->{out});
is(scalar @$l, $total, 'one line per record');
my ($sample) = grep { /\brate_limited\b/ } @$l;
like($sample, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  \d+-\d+  decision  (acme|globex|initech)  deny  rate_limited  [0-9a-f-]{36}$/,
     'a line: time, entry id, kind, tenant, outcome, reason, id');
is_deeply([map { (split /  /)[1] } @$l], [map { $_->{entry} } @entries],
          'in the stream\'s order (the journal\'s)');

$t = tail('--from', '0', '--count', $total, '--json');
my @recs = map { $json->decode($_) } @{ lines($t->{out}) };
is_deeply([map { $_->{hash} } @recs], [map { $_->{hash} } @entries],
          '--json: the whole records, with their chain hash');

$t = tail('--from', '0', '--tenant', 'acme', '--timeout', '1s');
is($t->{exit}, 0, '--timeout: stops when nothing more arrives');
is(scalar @{ lines($t->{out}) }, 10, '--tenant acme: its 10 refusals only');
ok(!(grep { !/  acme  / } @{ lines($t->{out}) }), 'all of acme');

# live: only what arrives after the start
my $bg = "$dir/live.out";
my $lpid = fork // die;
if (!$lpid) {
    open STDOUT, '>', $bg; open STDERR, '>', "$bg.err";
    exec $guardctl, 'events', 'tail', '--redis', $r->{socket}, '--count', 5,
         '--timeout', '20s';
    exit 127;
}
sleep 1;
is(send_refusals($c, 5, subject => 'live'), 5, '5 more refusals while it follows');
my $end = time + 20;
sleep 0.1 while waitpid($lpid, WNOHANG) == 0 && time < $end;
is($? >> 8, 0, 'the live tail ended after --count 5');
my $live = lines(slurp($bg));
is(scalar @$live, 5, 'it printed the 5 new records, none of the older');

# --- consumer groups ---------------------------------------------------------

ok(wait_caught_up($msock, 30, 'redis'), 'caught up');
@entries = @{ entries() };
$total = @entries;
unlike($r->cli('XINFO', 'GROUPS', 'guard:records'), qr/siem/, 'no group yet');
my $a = tail('--group', 'siem', '--consumer', 'c1', '--count', 10, '--json');
is($a->{exit}, 0, '--group siem (created when missing) --count 10') or diag $a->{err};
like($r->cli('XINFO', 'GROUPS', 'guard:records'), qr/siem/, 'the group exists');
my $b = tail('--group', 'siem', '--consumer', 'c2', '--json');
my @got = map { $json->decode($_)->{hash} } @{ lines($a->{out}) }, @{ lines($b->{out}) };
is(scalar @{ lines($a->{out}) }, 10, 'the first consumer took 10');
is_deeply(\@got, [map { $_->{hash} } @entries],
          'the second the rest: each record once, in order')
    or diag "a: $a->{err}\nb: $b->{err}\n", scalar(@got), " of $total";
like($r->cli('XPENDING', 'guard:records', 'siem'), qr/^0\n/, 'every one acknowledged');
is(tail('--group', 'siem', '--consumer', 'c1', '--timeout', '1s')->{out}, '',
   'the group has nothing more');

# delivered but never acknowledged (a consumer that died before XACK)
is(send_refusals($c, 3, subject => 'pending'), 3, '3 more');
ok(wait_caught_up($msock, 30, 'redis'), 'caught up');
my $raw = $r->cli('XREADGROUP', 'GROUP', 'siem', 'c3', 'COUNT', '2', 'STREAMS',
                  'guard:records', '>');
like($r->cli('XPENDING', 'guard:records', 'siem'), qr/^2\n/, 'two delivered to c3, not acknowledged');
$t = tail('--group', 'siem', '--consumer', 'c3', '--count', 3, '--json');
my @p = map { $json->decode($_) } @{ lines($t->{out}) };
is(scalar @p, 3, 'c3 again: three records');
is_deeply([map { $_->{subject} } @p], [('pending') x 3],
          'the two pending ones first, then the next')
    or diag $t->{out}, $raw;
like($r->cli('XPENDING', 'guard:records', 'siem'), qr/^0\n/, 'all acknowledged now');

# --- one stream per tenant ---------------------------------------------------

$r->cli('XADD', 'guard:t:acme', '1-1', 'id', 'x1', 'kind', 'decision',
        'outcome', 'deny', 'tenant', 'acme', 'reason', 'residency',
        'ts_ms', '1714565051318', 'hash', 'h', 'record', '{"id":"x1"}');
$t = tail('--stream', 'guard:t:{tenant}', '--tenant', 'acme', '--from', 0,
          '--count', 1);
is($t->{out}, "2024-05-01T12:04:11.318Z  1-1  decision  acme  deny  residency  x1\n",
   '--stream guard:t:{tenant} --tenant acme reads guard:t:acme');
$t = tail('--stream', 'guard:t:{tenant}');
is($t->{exit}, 2, 'a per-tenant stream without --tenant: exit 2');
like($t->{err}, qr/the stream "guard:t:\{tenant\}" is per tenant: --tenant T names which/,
     'saying why');

$t = command($guardctl, 'events', 'tail', '--redis', "$dir/no.sock", '--count', 1);
is($t->{exit}, 2, 'no Redis: exit 2');
like($t->{err}, qr/cannot connect to Redis at \Q$dir\E\/no\.sock: .* \(--redis PATH\|HOST:PORT or GUARD_REDIS\)/,
     'saying where it looked');
$t = command($guardctl, 'events', 'tail', '--count', 'x');
is($t->{exit}, 2, 'a bad --count: a usage error');

# --- the end ----------------------------------------------------------------

close $c;
is(end_guardd($gpid) >> 8, 0, 'guardd exits 0');
is($sanitizer, 0, 'no sanitizer report from guardctl');
unlike(slurp("$dir/guardd.log"), qr/AddressSanitizer|runtime error|\berror\b/i,
       'no error in guardd\'s log');
unlike(slurp($r->{log}), qr/\b(?:error|ERR)\b/i, 'no error in Redis\'s log');

done_testing;
