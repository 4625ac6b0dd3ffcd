#!/usr/bin/perl

# The demo gateway (conf/demo.sh, what `make run` and `make stop` run) in
# a directory of its own (GUARD_DEMO_STATE, GUARD_DEMO_DIR, a free
# GUARD_DEMO_PORT), so that the developer's demo is never touched:
#  - every command it prints is run as printed (the curl lines, the
#    guardctl lines with the export line it prints) and gives the status
#    its description says;
#  - after `stop` and `start`, the keys, the journal and a review are
#    still there, and a token minted from the kept key still works;
#  - with GUARD_DEMO_POLICIES, nginx and guardd read that directory, which
#    is left as it was.
# The demo runs the release guardd and guardctl and the plain module: the
# sanitizer pass skips it (pass 1 runs it).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Guard::Frames qw(slurp wait_for);
use Guard::Services ();
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $repo = "$FindBin::Bin/..";
my $guardctl = "$repo/policy-engine/build/release/guardctl";

plan skip_all => 'the demo runs the plain module (pass 1 runs this test)'
    if $ENV{GUARD_SANITIZE};
for my $f ("$repo/build/ngx_http_guard_module.so", $guardctl,
           "$repo/policy-engine/build/release/guardd") {
    -f $f or plan skip_all => "$f is missing: make module daemons";
}

my $dir = tempdir('guard-demo-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
chmod 0755, $dir;
my $json = JSON::PP->new;

# a free port whose next port (the demo's upstream) is free too
sub free_pair {
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                      Proto => 'tcp', Listen => 1) or next;
        my $p = $s->sockport;
        my $t = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $p + 1, Proto => 'tcp',
                                      Listen => 1);
        next unless $t && $p < 65534;
        return $p;
    }
    die "no free pair of ports";
}

my $port = free_pair();
my %env = (GUARD_DEMO_PORT => $port, GUARD_DEMO_STATE => "$dir/state",
           GUARD_DEMO_DIR => "$dir/run");
delete @ENV{qw(GUARD_JOURNAL_DIR GUARD_SOCKET GUARD_DEMO_POLICIES)};

# sh -c CMD with the environment given, bounded: (exit status, output)
sub sh {
    my ($cmd, %more) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        @ENV{ keys %more } = values %more;
        open STDOUT, '>', "$dir/sh.out" or die;
        open STDERR, '>&', \*STDOUT or die;
        exec '/bin/sh', '-c', $cmd;
        exit 127;
    }
    my $end = time + 60;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $end) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            return (-1, "timed out: $cmd");
        }
        sleep 0.02;
    }
    return ($? >> 8, slurp("$dir/sh.out"));
}

sub demo { sh("sh $repo/conf/demo.sh $_[0]", %env, @_[1 .. $#_]) }

END { demo('stop') if $dir && -d "$dir/run" }

# --- start: every printed command does what it says ----------------------

my ($rc, $out) = demo('start');
is($rc, 0, 'demo start exits 0') or diag $out;

my ($export) = $out =~ /^  (export GUARD_JOURNAL_DIR=\S+ GUARD_SOCKET=\S+)$/m;
ok($export, 'it prints the export line') or diag $out;
my %exported = ($export // '') =~ /(GUARD_\w+)=(\S+)/g;
is($exported{GUARD_JOURNAL_DIR}, "$dir/state/journal", 'the journal: kept state');
is($exported{GUARD_SOCKET}, "$dir/run/guardd.sock", 'the socket');

# the paragraphs: a description, then the commands, indented
my (@paras, $checked);
for my $p (split /\n\n+/, $out) {
    my @cmds = map { s/^  //r } grep { /^  \S/ } split /\n/, $p;
    my $words = join ' ', grep { !/^  \S/ } split /\n/, $p;
    push @paras, { words => $words, cmds => \@cmds } if @cmds;
}

my $upstream = qr/"upstream":"example"/;
my $problem = sub {
    my ($status, $reason) = @_;
    return qr/"status":\s*$status\b.*"reason":\s*"$reason"|"reason":\s*"$reason".*"status":\s*$status\b/s;
};

# what each paragraph says, as checks of each command's output; a
# paragraph this table does not know fails the test, so that a command
# added to the demo's output is checked here too
my @expect = (
    [qr/^For guardctl/, sub { 1 }],
    [qr/^A valid token for tenant acme .*: 200/, sub { $_[0] =~ $upstream }],
    [qr/^A token for tenant gamma addressed to tenant beta: 403 tenant_mismatch/,
     sub { $_[0] =~ $problem->(403, 'tenant_mismatch') }],
    [qr/^A token for beta .*: 200/, sub { $_[0] =~ $upstream }],
    [qr/^An expired token: 401 token_expired/,
     sub { $_[0] =~ /^HTTP\/1\.1 401 / && $_[0] =~ /token_expired/ }],
    [qr/^No token: 401 with WWW-Authenticate/,
     sub { $_[0] =~ /^HTTP\/1\.1 401 / && $_[0] =~ /^WWW-Authenticate: Bearer/mi }],
    [qr/^A token for acme signed with the gateway's key, not acme's own: 401/,
     sub { $_[0] =~ /"status":\s*401\b/ }],
    # 30 statuses, the first ones 200, then 200 or 429: how many pass
    # depends on how fast they came (t/60-rate-limits.t tests the limit)
    [qr/^Tenant gamma has no policy of its own/, sub {
        my @s = split ' ', $_[0];
        note("statuses: @s");
        @s == 30 && $s[0] == 200 && !grep { !/^(?:200|429)$/ } @s;
    }],
    [qr/^Acme's admin API asks guardd/,
     sub { $_[0] =~ /^HTTP\/1\.1 40[13] / && $_[0] =~ /risk_(?:deny|step_up)/ }],
    [qr/^Mint your own token/, sub { $_[0] =~ $upstream }],
    [qr/^The decision counts/, sub {
        $_[0] =~ /"refused":/
            || $_[0] =~ /^guard_decisions_total\{decision="allow",reason="none"\} [1-9]/m
            || $_[0] =~ /^guardd_decisions_total\{.*verdict="(?:deny|step_up)".*\} [1-9]/m;
    }],
    [qr/^Every refusal above is an audit record/, sub { 1 }],
    [qr/^Policies: /, sub { $_[0] =~ /\bok\b/ }],
    # the sinks: the refusals above reached Redis and PostgreSQL
    [qr/^guardd publishes every journal record to the demo's Redis stream/,
     sub { $_[0] =~ /\b(?:token_expired|tenant_mismatch|rate_limited|risk_\w+|decision|review)\b/ }],
    [qr/^And to the demo's PostgreSQL/, sub {
        $_[0] =~ /tenant_mismatch|token_expired|rate_limited/
            || $_[0] =~ /^ok: the database holds the journal's \d+ records/m;
    }],
);

my ($first_id, $reviewed);
for my $p (@paras) {
    my ($e) = grep { $p->{words} =~ $_->[0] } @expect;
    ok($e, "a known paragraph: $p->{words}") or next;
    for my $cmd (@{ $p->{cmds} }) {
        next if $cmd =~ /^export /;
        # ID: the place of a decision id, the newest refusal's
        if ($cmd =~ /\bID\b/) {
            $first_id //= do {
                my ($r, $o) = sh("$guardctl blocked --limit 1 --json", %exported);
                ($o =~ /"id"\s*:\s*"([0-9a-f-]{36})"/)[0];
            };
            # by its first characters, in capitals: as the demo says
            $cmd =~ s/\bID\b/uc substr($first_id, 0, 23)/e;
            $reviewed = $first_id if $cmd =~ / review /;
        }
        my ($r, $o) = sh($cmd, %exported);
        ok($r == 0 && $e->[1]->($o), "$cmd: exit 0, as described")
            or diag "exit $r:\n$o";
        $checked++;
    }
}
cmp_ok($checked, '>=', 15, "every printed command was run ($checked)");
my $sinks = !Guard::Services::redis_missing() && !Guard::Services::postgres_missing();
SKIP: {
    skip 'redis-server or PostgreSQL is not installed', 2 unless $sinks;
    ok((grep { $_->{words} =~ /Redis stream/
               && grep { /^redis-cli -s \S+ XRANGE guard:records - \+$/ } @{ $_->{cmds} } } @paras),
       'Redis installed: the demo prints a redis-cli XRANGE command (run above)');
    ok((grep { $_->{words} =~ /PostgreSQL, the queryable/
               && grep { /^psql "host=\S+ port=\d+ dbname=guard user=postgres" -c "SELECT / } @{ $_->{cmds} } } @paras),
       'PostgreSQL installed: the demo prints a psql command (run above)');
}
ok($reviewed, 'a refusal was reviewed');

# the tenant addressed is logged, also when the token was refused
like(slurp("$dir/run/logs/access.log"),
     qr/" 401 tenant=- addressed=acme .*reason=token_missing/,
     'a refusal before binding logs the tenant addressed');

# a token minted now, from the kept key, for after the restart
my ($mrc, $token) = sh("$guardctl token mint --key $dir/state/keys/acme-2026.pem"
                       . " --alg RS256 --kid acme-2026 --tenant acme --sub keep"
                       . " --iss https://idp.acme.example --aud api --ttl 10m");
chomp $token;
is($mrc, 0, 'a token minted from the kept key');
my ($vrc, $verify) = sh("$guardctl audit verify", %exported);
my ($records) = $verify =~ /ok: (\d+) records/;
ok($records, "the journal verifies ($verify)");
my $pem = slurp("$dir/state/keys/acme-2026.pem");

# --- stop, start: the state is kept ---------------------------------------

($rc, $out) = demo('stop');
is($rc, 0, 'demo stop exits 0') or diag $out;
ok(!-S "$dir/run/guardd.sock" || !IO::Socket::UNIX->new(Peer => "$dir/run/guardd.sock"),
   'guardd is gone');
($rc, $out) = demo('start');
is($rc, 0, 'demo start again exits 0') or diag $out;

is(slurp("$dir/state/keys/acme-2026.pem"), $pem, 'the keys are kept');
($rc, $out) = sh("curl -s -H 'Authorization: Bearer $token' "
                 . "http://127.0.0.1:$port/api/acme/orders");
like($out, $upstream, 'a token minted before the restart still works');
($rc, $out) = sh("$guardctl show $reviewed", %exported);
like($out, qr/^Reviews \(1, oldest first\):\n  1\. \S+Z  confirmed .*, by you$/m,
     'the review is kept') or diag $out;
($rc, $out) = sh("$guardctl audit verify", %exported);
like($out, qr/^ok: (\d+) records/, 'the journal still verifies');
my ($after) = $out =~ /ok: (\d+) records/;
cmp_ok($after // 0, '>=', $records // 1, 'with every record of the first run');

($rc, $out) = demo('stop');
is($rc, 0, 'demo stop exits 0');
unlike(slurp("$dir/run/logs/error.log"), qr/\[(?:alert|emerg|crit)\]/,
       'no alert in the error log');

# --- neither Redis nor PostgreSQL: the journal alone ------------------------

($rc, $out) = demo('start', GUARD_DEMO_REDIS => 'none', GUARD_DEMO_PG_BIN => 'none');
is($rc, 0, 'demo start without Redis and PostgreSQL exits 0') or diag $out;
like($out, qr/^No Redis stream: GUARD_DEMO_REDIS=none; guardd runs without that sink \(journal only\)\.$/m,
     'it says there is no Redis stream');
like($out, qr/^No PostgreSQL store: GUARD_DEMO_PG_BIN=none; .*journal only/m,
     'nor PostgreSQL store');
unlike(slurp("$dir/run/guardd.conf"), qr/"sinks"/, 'guardd runs without sinks');
($rc, $out) = sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/api/acme/orders");
is($out, '401', 'the gateway refuses a request without a token');
($rc, $out) = sh("$guardctl audit verify", %exported);
like($out, qr/^ok: \d+ records/, 'and journals it');
($rc, $out) = demo('stop', GUARD_DEMO_REDIS => 'none', GUARD_DEMO_PG_BIN => 'none');
is($rc, 0, 'demo stop exits 0');

# --- the operator's own policies ------------------------------------------

system('cp', '-r', "$repo/policies/examples", "$dir/mine") == 0 or die;
my $before = slurp("$dir/mine/keys/acme.jwks.json");
($rc, $out) = demo('start', GUARD_DEMO_POLICIES => "$dir/mine");
is($rc, 0, 'demo start with GUARD_DEMO_POLICIES exits 0') or diag $out;
like($out, qr/^Policies: \Q$dir\E\/mine \(GUARD_DEMO_POLICIES\)/m, 'says so');
like(slurp("$dir/run/nginx.conf"), qr/guard_policies \Q$dir\E\/mine;/,
     'nginx reads them');
like(slurp("$dir/run/guardd.conf"), qr/"policies": "\Q$dir\E\/mine"/,
     'guardd reads them');
is(slurp("$dir/mine/keys/acme.jwks.json"), $before,
   'and acme\'s keys there are left as they were');
($rc, $out) = sh("curl -s http://127.0.0.1:$port/guard/status");
like($out, qr/"policy_version"/, 'the gateway runs');
($rc, $out) = demo('stop');
is($rc, 0, 'demo stop exits 0');

done_testing;
