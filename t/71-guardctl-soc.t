#!/usr/bin/perl

# guardctl's SOC commands against a live guardd (Unix socket only, no
# nginx): blocked (filters, order, limit, JSON), show (every field of a
# module refusal and of a risk decision, signals with their weights),
# review through guardd (the journal keeps one writer and still verifies),
# token mint (HS256 from a JWKS, RS256 from a PEM, ES256 from a private
# JWK) checked by PyJWT, and usage errors.

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
use Guard::Frames qw(:DEFAULT slurp write_text);
use IO::Socket::UNIX;
use IO::Select;
use JSON::PP ();
use MIME::Base64 qw(encode_base64url);
use POSIX qw(strftime WNOHANG);
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";
-x $guardd or BAIL_OUT("$guardd is missing: make -C policy-engine");
-x $guardctl or BAIL_OUT("$guardctl is missing: make -C policy-engine");

my $dir = tempdir('guardctl-soc-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
my $json = JSON::PP->new->canonical;
my $journal = "$dir/journal";

delete @ENV{qw(GUARD_JOURNAL_DIR GUARD_SOCKET)};

sub write_file { write_text("$dir/$_[0]", $_[1]) }


# runs a command, bounded: (exit status, stdout, stderr)
my $sanitizer = 0;
sub run {
    my ($env, @cmd) = ref $_[0] eq 'HASH' ? @_ : ({}, @_);
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $env->{$_} for keys %$env;
        open STDOUT, '>', "$dir/run.out" or die;
        open STDERR, '>', "$dir/run.err" or die;
        exec @cmd;
        exit 127;
    }
    my $end = time + 30;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $end) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            return (-1, '', 'timed out');
        }
        sleep 0.01;
    }
    my $rc = $? >> 8;
    my ($out, $err) = (slurp("$dir/run.out"), slurp("$dir/run.err"));
    $sanitizer++ if $err =~ /AddressSanitizer|LeakSanitizer|runtime error/;
    return ($rc, $out, $err);
}

sub ctl { run($guardctl, @_) }

# --- guardd with risk rules ------------------------------------------------

mkdir "$dir/pol";
write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 50, "when": {"method": ["DELETE"]}},
      {"id": "sensitive", "weight": 30, "when": {"route_sensitive": true}},
      {"id": "big-body", "weight": 15, "when": {"body_size_over": 1000}},
      {"id": "not-admin", "weight": 5, "shadow": true,
       "when": {"claim": {"name": "roles", "lacks": "admin"}}}
    ]
  }
}
JSON
write_file('pol/shadowco.json', <<'JSON');
{
  "tenant": "shadowco",
  "shadow": true,
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 80, "when": {"method": ["DELETE"]}}
    ]
  }
}
JSON
write_file('guardd.conf', $json->encode({
    listen => "$dir/guardd.sock", pid_file => "$dir/guardd.pid",
    policies => "$dir/pol", node => 'test-node',
    journal => { dir => $journal }, log => 'warn',
}));

my $pid = spawn_guardd($guardd, "$dir/guardd.conf", "$dir/guardd.sock",
                       "$dir/guardd.log");
END { kill 'KILL', $pid if $pid && kill 0, $pid }

ok(-S "$dir/guardd.sock", 'guardd listens');


my $s = IO::Socket::UNIX->new(Peer => "$dir/guardd.sock", Type => SOCK_STREAM)
    or die "connect: $!";
print $s frame(1, 1, { version => 1, max_frame => 65536, node => 'test' });
my ($hello) = read_frames($s, 1);
my $pv = $hello->{payload}{policy_version};
like($pv, qr/^[0-9a-f]{64}$/, 'HELLO names the policy version');

# --- records: risk decisions (DECIDE) and module refusals (AUDIT) ---------

sub decide {
    my ($id, %req) = @_;
    print $s frame(2, $id, { tenant => 'acme', method => 'GET',
                             route => '/api/orders', client_ip => '10.0.0.9',
                             claims => { roles => ['reader'] }, %req });
    my ($v) = read_frames($s, 1);
    return $v->{payload};
}

my $tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
my $d0 = decide(10, subject => 'u9');
is($d0->{decision}, 'allow', 'a plain GET is allowed (and not journaled)');
my $d1 = decide(11, subject => 'u2', method => 'DELETE');
is($d1->{decision}, 'step_up', 'a DELETE: step_up');
my $d2 = decide(12, subject => 'u3', method => 'DELETE',
                route => '/api/admin', route_sensitive => JSON::PP::true,
                body_size => 5000, traceparent => $tp);
is($d2->{decision}, 'deny', 'a big DELETE on a sensitive route: deny');
my $d3 = decide(13, tenant => 'shadowco', subject => 's1', method => 'DELETE');
is($d3->{decision}, 'deny', 'a tenant in shadow mode: deny, not enforced');
ok($d3->{shadow}, 'the verdict says shadow');

my $now = int(time * 1000);
my $uuid = sub { sprintf '01900000-0000-7000-8000-%012d', $_[0] };
my %rec = (tenant => 'acme', subject => 'u1', client_ip => '10.0.0.1',
           method => 'GET', route => '/api/x', stage => 'jwt',
           outcome => 'deny', status => 401, reason => 'token_expired',
           policy_version => $pv, node => 'gw1');
my @audits = (
    a1 => { %rec, id => $uuid->(1), ts_ms => $now - 3 * 3600_000 },
    a2 => { %rec, id => $uuid->(2), ts_ms => $now - 2 * 3600_000,
            subject => 'u2', stage => 'limits', status => 429,
            reason => 'rate_limited' },
    a3 => { %rec, id => $uuid->(3), ts_ms => $now - 90 * 60_000,
            tenant => 'beta', stage => 'tenant', status => 403,
            reason => 'tenant_mismatch' },
    # the same time as a2, later in the journal: listed before it
    a4 => { %rec, id => $uuid->(4), ts_ms => $now - 2 * 3600_000,
            subject => 'u3', reason => 'token_invalid' },
    # an allowed request: not a refusal
    a5 => { %rec, id => $uuid->(5), ts_ms => $now - 10 * 60_000,
            outcome => 'allow', status => 200, reason => undef },
    # no outcome, but a reason and a 4xx status: a refusal
    a6 => { id => $uuid->(6), ts_ms => $now - 2 * 86400_000,
            tenant => 'acme', subject => 'u4', status => 401,
            reason => 'token_missing', stage => 'jwt' },
    # a reason with a 2xx status: not a refusal
    a7 => { id => $uuid->(7), ts_ms => $now - 20 * 60_000,
            tenant => 'acme', subject => 'u5', status => 200,
            reason => 'rate_limited' },
    # a subject with terminal escapes, shown harmlessly
    a8 => { %rec, id => $uuid->(8), ts_ms => $now - 5 * 60_000,
            subject => "evil\e[2J", reason => 'token_invalid' },
    # a risk refusal that carries its thresholds, and a member of its own
    a9 => { %rec, id => $uuid->(9), ts_ms => $now - 30 * 60_000,
            stage => 'risk', status => 403, reason => 'risk_deny',
            score => 75, thresholds => { step_up => 40, deny => 70 },
            signals => [{ id => 'new-ip', weight => 45, shadow => JSON::PP::false },
                        { id => 'night', weight => 30, shadow => JSON::PP::false },
                        { id => 'geo', weight => 10, shadow => JSON::PP::true }],
            region => 'eu-west' },
);
my (%id, %hash, @order);
my $seq = 100;
while (my ($name, $r) = splice @audits, 0, 2) {
    delete $r->{reason} unless defined $r->{reason};
    $id{$name} = $r->{id};
    push @order, $name;
    print $s frame(4, ++$seq, $r);
}
my @acks = read_frames($s, scalar @order, 20);
is(scalar(grep { $_->{type} == 5 } @acks), scalar @order,
   'every AUDIT record is acknowledged');
$hash{ $order[ $_->{id} - 101 ] } = $_->{payload}{hash} for @acks;
$id{d1} = $d1->{decision_id};
$id{d2} = $d2->{decision_id};
$id{d3} = $d3->{decision_id};

my ($rc, $out, $err) = ctl('audit', 'verify', '--dir', $journal);
like($out, qr/ok: 12 records/, 'the journal holds 12 records (3 risk, 9 AUDIT)');

# --- blocked ----------------------------------------------------------------

sub blocked_ids {
    my ($rc, $out, $err) = ctl('blocked', '--dir', $journal, '--json', @_);
    my $list = eval { $json->decode($out) };
    return [map { $_->{id} } @{ $list || [] }];
}
sub names { [map { $id{$_} } @_] }

my @all = qw(d3 d2 d1 a8 a9 a3 a4 a2 a1 a6);
($rc, $out, $err) = ctl('blocked', '--dir', $journal, '--json');
is($rc, 0, 'blocked --json exits 0');
my $list = eval { $json->decode($out) };
is(ref $list, 'ARRAY', 'blocked --json prints a JSON array');
is_deeply([map { $_->{id} } @$list], names(@all),
          'refusals newest first, ties by journal order reversed; allows, '
          . '2xx and reviews left out');
is($list->[0]{outcome}, 'shadow_deny', 'the shadow decision is listed');
is($list->[1]{reason}, 'risk_deny', 'with guardd\'s reasons');
is($list->[8]{hash}, $hash{a1}, 'whole records, with their chain hash');

is_deeply(blocked_ids('--tenant', 'beta'), names('a3'), '--tenant');
is_deeply(blocked_ids('--subject', 'u1'), names(qw(a9 a3 a1)), '--subject');
is_deeply(blocked_ids('--reason', 'rate_limited'), names('a2'),
          '--reason (a 2xx with that reason is no refusal)');
is_deeply(blocked_ids('--tenant', 'acme', '--subject', 'u3'),
          names(qw(d2 a4)), 'filters combine');
is_deeply(blocked_ids('--tenant', 'acm'), [], 'filters are exact');
is_deeply(blocked_ids('--limit', 3), names(qw(d3 d2 d1)), '--limit 3');
is_deeply(blocked_ids('--since', '150m'), names(qw(d3 d2 d1 a8 a9 a3 a4 a2)),
          '--since 150m');
is_deeply(blocked_ids('--since', '150m', '--until', '1h'),
          names(qw(a3 a4 a2)), '--since 150m --until 1h');
is_deeply(blocked_ids('--until', '1d'), names('a6'), '--until 1d');
my $iso = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(($now - 86400_000) / 1000));
is_deeply(blocked_ids('--since', $iso), names(@all[0 .. 8]),
          "--since $iso (ISO 8601)");
my $isooff = strftime('%Y-%m-%dT%H:%M:%S', gmtime(($now - 100 * 60_000) / 1000 + 7200));
is_deeply(blocked_ids('--since', "$isooff+02:00", '--until', '10m'),
          names(qw(a9 a3)), 'ISO 8601 with an offset');

($rc, $out, $err) = ctl('blocked', '--dir', $journal);
is($rc, 0, 'blocked exits 0');
my @lines = split /\n/, $out;
like($lines[0], qr/^TIME\s+DECISION\s+TENANT\s+SUBJECT\s+STATUS\s+REASON\s+STAGE\s+SCORE$/,
     'a table with a header');
is(scalar @lines, 11, 'a header and 10 rows (all under the default limit)');
my $col = index $lines[0], 'REASON';
ok(!grep({ substr($_, $col - 2, 2) ne '  ' } @lines[1 .. 10]),
   'the columns are aligned');
my $t1 = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(int(($now - 3 * 3600_000) / 1000)));
like($out, qr/^\Q$t1\E  \Q$id{a1}\E\s+acme\s+u1\s+401\s+token_expired\s+jwt\s+-$/m,
     'a row: UTC time, decision id, tenant, subject, status, reason, stage, score');
like($out, qr/^\S+  \Q$id{d2}\E\s+acme\s+u3\s+403\s+risk_deny\s+risk\s+95$/m,
     'a risk row with its score');
like($out, qr/\Q$id{d3}\E\s+shadowco\s+s1\s+403\s+risk_deny \(shadow\)\s+risk\s+80/,
     'a shadow refusal is marked');
like($out, qr/evil\\x1b\[2J/, 'control characters are escaped');
unlike($out, qr/\e/, 'no escape reaches the terminal');

($rc, $out) = ctl('blocked', '--dir', $journal, '--limit', '2');
like($out, qr/\(2 of 10 matching refusals, newest first; --limit N shows more\)/,
     'a cut list says so');
($rc, $out) = ctl('blocked', '--dir', $journal, '--reason', 'residency');
is("$rc $out", "0 no refusals match\n", 'nothing matches: said, exit 0');
($rc, $out, $err) = ctl('blocked', '--dir', $journal, '--reason', 'token_expird');
is($rc, 2, '--reason that is no reason code: exit 2');
like($err, qr/--reason "token_expird" is not a reason code; did you mean "token_expired"\?/,
     'the nearest code is named');
($rc, $out, $err) = ctl('blocked', '--dir', $journal, '--reason', 'nothing');
is($rc, 2, 'a code near none: exit 2');
like($err, qr/"nothing" is not a reason code; the codes \(docs\/reasons\.md\):\n  token_missing\n.*\n  risk_deny\n/s,
     'every code is listed');
unlike($err, qr/^  none$/m, 'but not "none", which is no refusal');
($rc, $out) = run({ GUARD_JOURNAL_DIR => $journal }, $guardctl, 'blocked',
                  '--limit=1', '--json');
is_deeply([map { $_->{id} } @{ $json->decode($out) }], names('d3'),
          '$GUARD_JOURNAL_DIR is the default directory; --opt=value works');
($rc, $out, $err) = ctl('blocked', '--dir', "$dir/none");
is($rc, 2, 'an unreadable journal: exit 2');
like($err, qr/none: No such file/, 'with the reason');
like($err, qr/no journal directory at \Q$dir\E\/none: name guardd's journal directory with --dir DIR or set GUARD_JOURNAL_DIR=DIR/,
     'and how to name the journal');
for my $cmd (['show', $id{a1}], ['audit', 'verify']) {
    ($rc, $out, $err) = run({ GUARD_JOURNAL_DIR => "$dir/none" }, $guardctl, @$cmd);
    ok($rc == 2 && $err =~ /--dir DIR or set GUARD_JOURNAL_DIR=DIR/,
       "@$cmd without a journal: exit 2, naming --dir and GUARD_JOURNAL_DIR")
        or diag "exit $rc: $err";
}

# --- show -------------------------------------------------------------------

($rc, $out, $err) = ctl('show', $id{a1}, '--dir', $journal);
is($rc, 0, 'show exits 0');
my $when = strftime('%Y-%m-%dT%H:%M:%S', gmtime(int(($now - 3 * 3600_000) / 1000)));
like($out, qr/^Decision \Q$id{a1}\E: refused with 401 \(token_expired\) by the jwt stage\.$/m,
     'show: one sentence first');
like($out, qr/^  when\s+\Q$when\E\.\d{3}Z \(3 hours ago\)$/m, 'when (UTC, and how long ago)');
like($out, qr/^  stage\s+jwt: the token check/m, 'which stage decided');
like($out, qr/^  outcome\s+deny: the request was refused with status 401$/m,
     'the outcome and status');
like($out, qr/^  reason\s+token_expired: the token has expired/m, 'the reason, explained');
like($out, qr/^  policy\s+\Q$pv\E$/m, 'the policy version');
like($out, qr/^  request\s+GET \/api\/x$/m, 'the method and route');
like($out, qr/^  client ip\s+10\.0\.0\.1$/m, 'the client IP');
like($out, qr/^  tenant\s+acme$/m, 'the tenant');
like($out, qr/^  subject\s+u1$/m, 'the subject');
like($out, qr/^  node\s+gw1$/m, 'the node');
like($out, qr/^  journal\s+journal-000001\.jsonl line 4$/m, 'where it is in the journal');
like($out, qr/^  hash\s+\Q$hash{a1}\E$/m, 'its chain hash');
like($out, qr/^Reviews: none yet/m, 'no reviews yet');

($rc, $out) = ctl('show', $id{d2}, '--dir', $journal);
like($out, qr/^Decision \Q$id{d2}\E: refused with 403 \(risk_deny\) by the risk stage\.$/m,
     'show a risk decision');
like($out, qr/^  signals\s+destructive weight 50$/m, 'each signal with its weight');
like($out, qr/^\s+sensitive\s+weight 30$/m, 'the second');
like($out, qr/^\s+big-body\s+weight 15$/m, 'the third');
like($out, qr/^\s+not-admin\s+weight 5  shadow: observed, not counted/m,
     'a shadow signal is marked');
like($out, qr/^  score\s+95 against step-up 40, deny 70: at or over the deny threshold$/m,
     'the score against the thresholds guardd journaled');
like($out, qr/^  request\s+DELETE \/api\/admin$/m, 'the request');
like($out, qr/^  client ip\s+10\.0\.0\.9$/m, 'the client IP');
like($out, qr/^  traceparent\s+\Q$tp\E$/m, 'the traceparent');
like($out, qr/^  node\s+test-node$/m, 'guardd\'s node');
like($out, qr/^  policy\s+\Q$pv\E$/m, 'the policy version');

($rc, $out) = ctl('show', $id{a9}, '--dir', $journal);
like($out, qr/^  score\s+75 against step-up 40, deny 70: at or over the deny threshold$/m,
     'the score against the thresholds when the record has them');
like($out, qr/^  signals\s+new-ip weight 45$/m, 'signals from an AUDIT record');
like($out, qr/^\s+geo\s+weight 10  shadow/m, 'and their shadow marks');
like($out, qr/^  other\s+\{"region":"eu-west"\}$/m, 'members it does not know are shown too');

($rc, $out) = ctl('show', $id{d3}, '--dir', $journal);
like($out, qr/would have been refused with 403 \(risk_deny\) by the risk stage, in shadow mode/,
     'a shadow refusal is explained as not enforced');
like($out, qr/^  outcome\s+shadow_deny: status 403 was NOT sent/m, 'its outcome');

($rc, $out) = ctl('show', $id{d2}, '--dir', $journal, '--json');
my $shown = eval { $json->decode($out) };
is($shown->{records}[0]{id}, $id{d2}, 'show --json: the record');

($rc, $out, $err) = ctl('show', '01900000-0000-7000-8000-999999999999', '--dir', $journal);
is($rc, 1, 'show of an unknown id: exit 1');
like($err, qr/no record with id "01900000-0000-7000-8000-999999999999" in \Q$journal\E/,
     'with a clear message');

# how long ago, in words
($rc, $out) = ctl('show', $id{a3}, '--dir', $journal);
like($out, qr/^  when\s+\S+Z \(1 hour ago\)$/m, '90 minutes: "1 hour ago"');
($rc, $out) = ctl('show', $id{a6}, '--dir', $journal);
like($out, qr/^  when\s+\S+Z \(2 days ago\)$/m, '"2 days ago"');

# an id in any case, and by the start of it when only one id starts so
sub unique_start {
    my ($name) = @_;
    for my $n (1 .. length $id{$name}) {
        my $p = substr $id{$name}, 0, $n;
        return $p if 1 == grep { index($_, $p) == 0 } values %id;
    }
}
($rc, $out, $err) = ctl('show', uc $id{a9}, '--dir', $journal);
like($out, qr/^Decision \Q$id{a9}\E: refused with 403/m, 'an id in capitals')
    or diag $err;
my $start = uc unique_start('d2');
($rc, $out, $err) = ctl('show', $start, '--dir', $journal);
like($out, qr/^Decision \Q$id{d2}\E: refused with 403 \(risk_deny\)/m,
     "the start of an id ($start)") or diag $err;
($rc, $out, $err) = ctl('show', '01900000', '--dir', $journal);
is($rc, 1, 'the start of several ids: exit 1');
like($err, qr/"01900000" is the start of 9 decision ids in \Q$journal\E; give more characters of the id:\n  01900000-0000-7000-8000-000000000001\n/,
     'says how many, names a few, asks for more characters');

# --- review through guardd --------------------------------------------------

my @sock = ('--socket', "$dir/guardd.sock", '--dir', $journal);
($rc, $out, $err) = ctl('review', $id{a1}, '--verdict', 'confirmed',
                        '--analyst', 'alice', '--note', 'replayed token', @sock);
is($rc, 0, 'review exits 0') or diag $err;
my ($rh1) = $out =~ /^review of \Q$id{a1}\E journaled: ([0-9a-f]{64})$/m;
ok($rh1, 'and prints the record hash');

($rc, $out, $err) = run({ GUARD_SOCKET => "$dir/guardd.sock",
                          GUARD_JOURNAL_DIR => $journal },
                        $guardctl, 'review', $id{a1}, '--verdict',
                        'false_positive', '--analyst', 'bob');
is($rc, 0, 'a second review, with $GUARD_SOCKET and $GUARD_JOURNAL_DIR') or diag $err;
my ($rh2) = $out =~ /journaled: ([0-9a-f]{64})$/m;

my @jl = split /\n/, slurp("$journal/journal-000001.jsonl");
my $last = $json->decode($jl[-1]);
is($last->{hash}, $rh2, 'the review is the last record of the chain');
is($last->{prev_hash}, $rh1, 'right after the first review');
is_deeply([@$last{qw(kind review_of verdict analyst)}],
          ['review', $id{a1}, 'false_positive', 'bob'], 'the review record');
ok(abs($last->{ts_ms} - time * 1000) < 60_000, 'with its time');
ok(!exists $last->{note}, 'no note when none was given');
is($json->decode($jl[-2])->{note}, 'replayed token', 'the note when given');

($rc, $out) = ctl('show', $id{a1}, '--dir', $journal);
like($out, qr/^Reviews \(2, oldest first\):$/m, 'show lists the reviews');
like($out, qr/^  1\. \S+Z  confirmed \(a true positive: the refusal was right\), by alice\n     note: replayed token\n     journal: journal-000001\.jsonl line 13, hash \Q$rh1\E$/m,
     'the first review: verdict, analyst, note, hash');
like($out, qr/^  2\. \S+Z  false_positive \(the refusal was wrong\), by bob\n     journal: journal-000001\.jsonl line 14, hash \Q$rh2\E$/m,
     'then the second');

is_deeply(blocked_ids(), names(@all), 'reviews are not listed as refusals');

($rc, $out) = ctl('audit', 'verify', '--dir', $journal);
is($rc, 0, 'the journal still verifies after the reviews');
like($out, qr/ok: 14 records/, '14 records');

($rc, $out, $err) = ctl('review', '01900000-0000-7000-8000-999999999999',
                        '--verdict', 'confirmed', '--analyst', 'alice', @sock);
is($rc, 1, 'review of an unknown id: exit 1');
like($err, qr/no record with id/, 'with a clear message');
($rc, $out, $err) = ctl('review', $id{a1}, '--verdict', 'maybe',
                        '--analyst', 'alice', @sock);
is($rc, 1, 'an unknown verdict: exit 1');
like($err, qr/"maybe" is neither confirmed nor false_positive/, 'named');
($rc, $out, $err) = ctl('review', $id{a1}, '--verdict', 'confirmed',
                        '--analyst', 'alice', '--socket', "$dir/nope.sock",
                        '--dir', $journal);
is($rc, 1, 'guardd unreachable: exit 1');
like($err, qr/cannot reach guardd at .*nope\.sock/, 'said so');
like($err, qr/with --socket PATH or set GUARD_SOCKET=PATH/,
     'naming --socket and GUARD_SOCKET');
($rc, $out, $err) = ctl('review', $id{a1}, '--verdict', 'confirmed',
                        '--analyst', 'alice', '--note', 'x' x 70000, @sock);
is($rc, 1, 'a review larger than guardd\'s frame: exit 1');
like($err, qr/larger than 65536 bytes/, 'said so');

($rc, $out) = ctl('audit', 'verify', '--dir', $journal);
like($out, qr/ok: 14 records/, 'refused reviews wrote nothing');

# a review of an id given by its start, in capitals: of the whole id
$start = uc unique_start('d3');
($rc, $out, $err) = ctl('review', $start, '--verdict', 'confirmed',
                        '--analyst', 'carol', @sock);
like($out, qr/^review of \Q$id{d3}\E journaled: [0-9a-f]{64}$/m,
     "review by the start of an id ($start)") or diag $err;
$last = $json->decode((split /\n/, slurp("$journal/journal-000001.jsonl"))[-1]);
is($last->{review_of}, $id{d3}, 'the review record names the whole id');
($rc, $out, $err) = ctl('review', '01900000', '--verdict', 'confirmed',
                        '--analyst', 'carol', @sock);
ok($rc == 1 && $err =~ /is the start of 9 decision ids/,
   'review of the start of several ids: exit 1, nothing journaled');

# --- token mint -------------------------------------------------------------

my $have_pyjwt = system('/usr/bin/python3 -c "import jwt, cryptography" 2>/dev/null') == 0;

write_file('verify.py', <<'PY');
import json, sys, jwt
token, keyfile, alg = sys.argv[1:4]
text = open(keyfile).read()
if alg.startswith("HS"):
    key = jwt.PyJWK(json.loads(text)).key
else:
    key = text
try:
    claims = jwt.decode(token, key, algorithms=[alg], audience=sys.argv[4] if len(sys.argv) > 4 else None)
    print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
except Exception as e:
    print(json.dumps({"error": str(e)}))
PY

sub pyjwt {
    my ($rc, $out, $err) = run('/usr/bin/python3', "$dir/verify.py", @_);
    return eval { $json->decode($out) } || { error => "$out$err" };
}

my $secret = join '', map { chr(($_ * 7 + 3) % 256) } 1 .. 32;
my $oct = { kty => 'oct', kid => 'hs-1', alg => 'HS256',
            k => encode_base64url($secret) };
write_file('oct.jwk', $json->encode($oct));
write_file('jwks.json', $json->encode({ keys => [
    { kty => 'oct', kid => 'other', alg => 'HS256',
      k => encode_base64url('y' x 32) }, $oct ] }));

($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/jwks.json",
                        '--kid', 'hs-1', '--tenant', 'acme', '--sub', 'u1',
                        '--ttl', '10m', '--claim', 'role=admin',
                        '--claim', 'level=3', '--iss', 'https://idp.test',
                        '--aud', 'api');
is($rc, 0, 'token mint (HS256 from a JWKS oct key) exits 0') or diag $err;
chomp(my $hs = $out);
like($hs, qr/^[\w-]+\.[\w-]+\.[\w-]+$/, 'a compact JWT');

SKIP: {
    skip 'PyJWT is not installed (python3-jwt)', 14 unless $have_pyjwt;

    my $v = pyjwt($hs, "$dir/oct.jwk", 'HS256', 'api');
    ok(!$v->{error}, 'PyJWT verifies the HS256 token') or diag $v->{error};
    is_deeply($v->{header}, { alg => 'HS256', kid => 'hs-1', typ => 'JWT' },
              'its header names the kid');
    my $c = $v->{claims};
    is_deeply([@$c{qw(tenant_id sub iss aud role level)}],
              ['acme', 'u1', 'https://idp.test', 'api', 'admin', 3],
              'tenant_id, sub, iss, aud and the --claim values (digits: a number)');
    is($c->{exp} - $c->{iat}, 600, 'exp = iat + ttl');
    ok(abs($c->{iat} - time) < 60, 'iat is now');

    # RS256 from a PEM made by openssl
    system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
           . "-out $dir/rsa.pem 2>/dev/null && "
           . "openssl pkey -in $dir/rsa.pem -pubout -out $dir/rsa.pub");
    ($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/rsa.pem",
                            '--alg', 'RS256', '--kid', 'rs-1',
                            '--tenant', 'beta', '--tenant-claim', 'org',
                            '--ttl', '2h');
    is($rc, 0, 'token mint (RS256 from a PEM) exits 0') or diag $err;
    chomp(my $rs = $out);
    $v = pyjwt($rs, "$dir/rsa.pub", 'RS256');
    ok(!$v->{error}, 'PyJWT verifies the RS256 token with the public key')
        or diag $v->{error};
    is($v->{header}{kid}, 'rs-1', 'the kid');
    is($v->{claims}{org}, 'beta', '--tenant-claim names the tenant claim');
    is($v->{claims}{exp} - $v->{claims}{iat}, 7200, 'the ttl');
    ok(!exists $v->{claims}{sub}, 'no sub when none was given');

    # ES256 from a private JWK in a JWKS
    system('/usr/bin/python3', '-c', <<"PY");
import json
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.utils import base64url_encode
k = ec.generate_private_key(ec.SECP256R1())
n = k.private_numbers()
# x, y and d at their full 32 bytes (RFC 7518 6.2.1.2): PyJWT's to_jwk
# drops leading zero bytes, one key in 128 or so
b = lambda i: base64url_encode(i.to_bytes(32, "big")).decode()
jwk = {"kty": "EC", "crv": "P-256", "x": b(n.public_numbers.x),
       "y": b(n.public_numbers.y), "d": b(n.private_value),
       "kid": "es-1", "alg": "ES256"}
json.dump({"keys": [jwk]}, open("$dir/ec.jwks", "w"))
open("$dir/ec.pub", "wb").write(k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
PY
    ($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/ec.jwks",
                            '--kid', 'es-1', '--tenant', 'acme');
    is($rc, 0, 'token mint (ES256 from a private EC JWK) exits 0') or diag $err;
    chomp(my $es = $out);
    $v = pyjwt($es, "$dir/ec.pub", 'ES256');
    ok(!$v->{error}, 'PyJWT verifies the ES256 token') or diag $v->{error};
    is($v->{claims}{exp} - $v->{claims}{iat}, 3600, 'the default ttl is 1h');
}

($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/jwks.json",
                        '--kid', 'nope', '--tenant', 'acme');
is($rc, 1, 'an unknown kid: exit 1');
like($err, qr/has no key with kid "nope"/, 'named');
($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/jwks.json",
                        '--kid', 'hs-1', '--tenant', 'acme', '--alg', 'HS512');
is($rc, 1, 'an algorithm the key is not pinned to: exit 1');
like($err, qr/pinned to HS256/, 'named');
($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/rsa.pem",
                        '--kid', 'rs-1', '--tenant', 'acme');
is($rc, 1, 'a PEM without --alg: exit 1');
like($err, qr/name its algorithm with --alg/, 'named');
($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/rsa.pem",
                        '--alg', 'PS256', '--kid', 'rs-1', '--tenant', 'acme');
is($rc, 1, 'PS256 (libjwt 1.10 cannot): exit 1');
($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/rsa.pub",
                        '--alg', 'RS256', '--kid', 'rs-1', '--tenant', 'acme');
is($rc, 1, 'a public key cannot sign: exit 1');
write_file('short.jwk', $json->encode({ kty => 'oct', kid => 's', k => encode_base64url('short') }));
($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/short.jwk",
                        '--kid', 's', '--tenant', 'acme');
is($rc, 1, 'an HMAC key shorter than the hash: exit 1');
like($err, qr/has 5 bytes: HS256 needs at least 32/, 'named');
($rc, $out, $err) = ctl('token', 'mint', '--key', "$dir/jwks.json",
                        '--kid', 'hs-1', '--tenant', 'acme',
                        '--claim', 'exp=1');
is($rc, 1, 'a claim given twice: exit 1');

# --- usage errors -----------------------------------------------------------

for my $case (
    [[], 'no command'],
    [['frobnicate'], 'an unknown command'],
    [['blocked', '--bogus'], 'blocked with an unknown option'],
    [['blocked', '--limit', 'many'], 'blocked --limit not a number'],
    [['blocked', '--since', 'yesterday'], 'blocked --since not a time'],
    [['blocked', '--until', '2024-13-01'], 'blocked --until not a date'],
    [['blocked', '--tenant'], 'blocked --tenant without a value'],
    [['show'], 'show without an id'],
    [['show', 'a', 'b'], 'show with two ids'],
    [['review', $id{a1}, '--verdict', 'confirmed'], 'review without --analyst'],
    [['review', '--analyst', 'x', '--verdict', 'confirmed'], 'review without an id'],
    [['token', 'mint', '--kid', 'k', '--tenant', 't'], 'token mint without --key'],
    [['token', 'mint', '--key', "$dir/jwks.json", '--kid', 'hs-1',
      '--tenant', 't', '--ttl', 'forever'], 'token mint with a bad --ttl'],
    [['token', 'mint', '--key', "$dir/jwks.json", '--kid', 'hs-1',
      '--tenant', 't', '--claim', 'novalue'], 'token mint with a bad --claim'],
    [['token', 'burn'], 'token with an unknown verb'],
) {
    my ($args, $what) = @$case;
    ($rc, $out, $err) = ctl(@$args);
    ok($rc == 2 && $err =~ /^usage: guardctl/m, "$what: exit 2 with the usage")
        or diag "exit $rc: $err";
}

# --- the end ----------------------------------------------------------------

kill 'TERM', $pid;
waitpid $pid, 0;
is($? >> 8, 0, 'guardd exits 0');
($rc, $out) = ctl('audit', 'verify', '--dir', $journal);
like($out, qr/ok: 15 records/, 'the journal verifies after guardd stopped');
is($sanitizer, 0, 'no sanitizer report from guardctl');
unlike(slurp("$dir/guardd.log"), qr/AddressSanitizer|runtime error/,
       'no sanitizer report from guardd');

done_testing;
