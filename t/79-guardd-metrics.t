#!/usr/bin/perl

# guardd's Prometheus endpoint (guardd.conf "metrics"), issue 10:
# - on a Unix socket: known traffic (a spill file, DECIDEs that allow,
#   step up and deny, AUDIT records and duplicates, a bad payload, a bad
#   request, a framing error), then /metrics parsed by the real parser
#   (prometheus_client, t/tools/prom_parse.py) and every value checked
#   against what was sent; histogram counts agree with the counters;
# - the HTTP side: 404 for another path, 405 for another method, 400 for
#   a request head over 8 KiB or one that is not HTTP, at most 8 scrapes
#   at once, a silent scrape closed after its timeout;
# - on 127.0.0.1:PORT: served and counted too;
# - guardd -t refuses a non-loopback or malformed address;
# - every metric name in conf/grafana-dashboard.json's queries and in
#   conf/prometheus.yml is listed in docs/metrics.md, and guardd's appear
#   in a real scrape.

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
use Guard::Frames qw(:DEFAULT wait_for slurp write_text journal_records);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use IPC::Open2;
use JSON::PP ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
-x $guardd or BAIL_OUT("$guardd is missing: make -C policy-engine");
my $python = '/usr/bin/python3';
system("$python -c 'import prometheus_client' 2>/dev/null") == 0
    or plan skip_all => 'python3-prometheus-client is not installed '
                        . '(scripts/setup.sh)';

my $dir = tempdir('guardd-metrics-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
my $json = JSON::PP->new->canonical;
my $started = time;
$SIG{PIPE} = 'IGNORE';

mkdir "$dir/pol";
write_text("$dir/pol/acme.json", <<'JSON');
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 80, "when": {"method": ["DELETE"]}},
      {"id": "sensitive", "weight": 50, "when": {"route_sensitive": true}}
    ]
  }
}
JSON
write_text("$dir/pol/plain.json", '{"tenant": "plain"}');

my %pids;
END { kill 'KILL', $_ for grep { kill 0, $_ } keys %pids }

# start($name, $metrics, %more): a guardd with its own socket, journal
# and log, its metrics at $metrics; returns its socket
sub start {
    my ($name, $metrics, %more) = @_;
    my $sock = "$dir/$name.sock";
    write_text("$dir/$name.conf", $json->encode({
        listen => $sock, pid_file => "$dir/$name.pid",
        policies => "$dir/pol", journal => { dir => "$dir/$name.journal" },
        metrics => $metrics, %more,
    }));
    my $pid = spawn_guardd($guardd, "$dir/$name.conf", $sock,
                           "$dir/$name.log");
    $pids{$pid} = 1;
    ok(-S $sock, "$name: guardd is listening");
    return $sock;
}

# scrape(@curl_args): /metrics parsed, as { name => [[labels, value]...] };
# undef when curl or the parser fails
sub scrape {
    my @curl = @_;
    my $text = qx(curl -sf --max-time 5 @curl);
    return undef if $? != 0;
    my $pid = open2(my $out, my $in, $python, "$repo/t/tools/prom_parse.py");
    print $in $text;
    close $in;
    my $parsed = do { local $/; <$out> };
    waitpid $pid, 0;
    return undef if $? != 0;
    my %m;
    for my $f (@{ $json->decode($parsed) }) {
        push @{ $m{$_->{name}} }, [$_->{labels}, $_->{value}]
            for @{ $f->{samples} };
    }
    return \%m;
}

# value($m, $name, %labels): the sample's value (labels matched exactly)
sub value {
    my ($m, $name, %want) = @_;
    for my $s (@{ $m->{$name} // [] }) {
        my $l = $s->[0];
        next unless keys %$l == keys %want;
        next if grep { ($l->{$_} // "\0") ne $want{$_} } keys %want;
        return $s->[1];
    }
    return undef;
}

# http($sock_path, $bytes): guardd's whole answer to raw bytes sent on
# the metrics Unix socket ('' when it closed without one)
sub http {
    my ($path, $bytes) = @_;
    my $c = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM)
        or die "connect $path: $!";
    syswrite $c, $bytes;
    my ($buf, $sel) = ('', IO::Select->new($c));
    while ($sel->can_read(5)) {
        my $r = sysread $c, $buf, 65536, length $buf;
        last unless $r;
    }
    return $buf;
}

# closed($socket, $secs): the peer closed it within $secs
sub closed {
    my ($s, $secs) = @_;
    return 0 unless IO::Select->new($s)->can_read($secs);
    my $r = sysread $s, my $b, 1;
    return defined $r && $r == 0;
}

# a spill file, ingested at start: 3 records
mkdir "$dir/spill";
my @sid = map { sprintf '0190f000-0000-7000-8000-%012d', $_ } 1 .. 3;
write_text("$dir/spill/1000-1-1.jsonl",
           join '', map { $json->encode({ id => $_, tenant => 'acme',
                                          reason => 'rate_limited' }) . "\n" }
                    @sid);

my $msock = "$dir/metrics.sock";
my $sock = start('a', $msock, spill => "$dir/spill");
ok(-S $msock, 'the metrics socket exists');
is((stat $msock)[2] & 07777, 0660, 'with socket_mode, as the listener');
my $curl_a = "--unix-socket $msock http://localhost/metrics";

# at most 8 scrapes at once: the 9th is closed without an answer; the
# first of them stays silent, to be closed by the timeout
my @held = map {
    IO::Socket::UNIX->new(Peer => $msock, Type => SOCK_STREAM) or die $!
} 1 .. 8;
my $ninth = IO::Socket::UNIX->new(Peer => $msock, Type => SOCK_STREAM);
ok(closed($ninth, 5), 'a 9th scrape at once is closed at once');
my $silent = shift @held;
close $_ for @held;
my $silent_since = time;

ok(wait_for(10, sub { !glob "$dir/spill/*" }), 'the spill file is ingested');

my $s = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM) or die $!;
print $s frame(1, 1, { version => 1, max_frame => 65536, node => 'nginx' });
my ($hello) = read_frames($s, 1);

# DECIDEs: 3 allows, 1 allow without risk rules, 1 step-up, 2 denies, a
# shadow deny; one without a tenant (bad_request)
my @decide = (
    ([{ tenant => 'acme', method => 'GET', route => '/a' }, 'allow']) x 3,
    [{ tenant => 'plain', method => 'DELETE', route => '/a' }, 'allow'],
    [{ tenant => 'acme', method => 'GET', route => '/a',
       route_sensitive => JSON::PP::true }, 'step_up'],
    ([{ tenant => 'acme', method => 'DELETE', route => '/a' }, 'deny']) x 2,
    [{ tenant => 'acme', method => 'DELETE', route => '/a',
       shadow => JSON::PP::true }, 'deny'],
);
my $id = 100;
print $s join '', map { frame(2, ++$id, $_->[0]) } @decide;
my @v = read_frames($s, scalar @decide);
is_deeply([map { $_->{payload}{decision} } @v], [map { $_->[1] } @decide],
          'the DECIDEs get the verdicts expected');
print $s frame(2, ++$id, { method => 'GET' });
my ($e) = read_frames($s, 1);
is($e->{payload}{code}, 'bad_request', 'a DECIDE without a tenant: ERROR');

# AUDIT: 5 new records, then one of them and one of the spill file again
my @aid = map { sprintf '0190f000-0000-7000-8000-1%011d', $_ } 1 .. 5;
print $s join '', map { frame(4, ++$id, { id => $_, tenant => 'acme' }) }
    @aid, $aid[0], $sid[0];
my @acks = read_frames($s, 7);
is(scalar(grep { $_->{type} == 5 } @acks), 7, '7 AUDITs acknowledged');
is(scalar(grep { $_->{payload}{duplicate} } @acks), 2, '2 as duplicates');

# a bad payload (the connection goes on), a framing error (closed)
print $s pack('NCN', 5 + 3, 4, ++$id) . '{x]';
my ($bp) = read_frames($s, 1);
is($bp->{payload}{code}, 'bad_payload', 'a bad payload: ERROR bad_payload');
{
    my $bad = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM)
        or die $!;
    print $bad pack('NCN', 5, 0x7f, 1);
    ok(closed($bad, 5), 'a framing error closes its connection');
}

# the connection test of spawn_guardd, $s, the framing error's: 3
# accepted; $s is open
my $m;
wait_for(10, sub {
    $m = scrape($curl_a);
    $m && value($m, 'guardd_connections') == 1
});
ok($m, 'the Unix socket endpoint scrapes and parses') or BAIL_OUT('no scrape');

my %want = (allow => [4, 0], step_up => [1, 0], deny => [2, 1]);
for my $verdict (sort keys %want) {
    for my $shadow (0, 1) {
        is(value($m, 'guardd_decisions_total', verdict => $verdict,
                 shadow => $shadow ? 'true' : 'false'),
           $want{$verdict}[$shadow],
           "guardd_decisions_total{verdict=$verdict,shadow=$shadow}");
    }
}
my $decisions = 0;
$decisions += $_->[1] for @{ $m->{guardd_decisions_total} };
my $hist = 'guardd_decision_duration_microseconds';
is(value($m, "${hist}_count"), $decisions,
   'the decision latency histogram counts every decision');
is(value($m, "${hist}_bucket", le => '+Inf'), $decisions,
   'its +Inf bucket too');
my @b = map { $_->[1] } sort { $a->[0]{le} <=> $b->[0]{le} }
        grep { $_->[0]{le} ne '+Inf' } @{ $m->{"${hist}_bucket"} };
ok(!grep({ $b[$_] < $b[$_ - 1] } 1 .. $#b) && @b >= 5,
   'its buckets are cumulative');
ok(value($m, "${hist}_sum") > 0, 'and it sums some microseconds');

my $records = 3 + 5 + 4;    # spill, AUDITs, refusals of DECIDE
is(value($m, 'guardd_journal_records_total'), $records,
   "guardd_journal_records_total: $records");
is(scalar(journal_records("$dir/a.journal")), $records,
   'as many as the journal holds');
is(value($m, 'guardd_journal_duplicates_total'), 2,
   'guardd_journal_duplicates_total: 2');
is(value($m, 'guardd_spill_files_total'), 1, 'guardd_spill_files_total: 1');
is(value($m, 'guardd_spill_records_total'), 3,
   'guardd_spill_records_total: 3');
my $commits = value($m, 'guardd_journal_group_commits_total');
ok($commits >= 1 && $commits <= 4 + 7,
   "guardd_journal_group_commits_total: $commits (1 to 11)");
my $fsyncs = value($m, 'guardd_journal_fsync_duration_microseconds_count');
ok($fsyncs >= 2 && $fsyncs <= $commits + 1,
   "fsyncs: $fsyncs (the spill file's, and one per group at most)");

is(value($m, 'guardd_connections'), 1, 'guardd_connections: 1');
is(value($m, 'guardd_connections_total'), 3, 'guardd_connections_total: 3');
my %rej = (bad_payload => 1, bad_request => 1, framing => 1,
           unavailable => 0, max_connections => 0);
for (sort keys %rej) {
    is(value($m, 'guardd_frames_rejected_total', reason => $_), $rej{$_},
       "guardd_frames_rejected_total{reason=$_}: $rej{$_}");
}
is(value($m, 'guardd_policy_info', version => $hello->{payload}{policy_version}),
   1, 'guardd_policy_info carries the policy version HELLO gave');
my $st = value($m, 'process_start_time_seconds');
ok($st >= $started - 5 && $st <= time, 'process_start_time_seconds');

# the HTTP side
like(http($msock, "GET /nope HTTP/1.0\r\n\r\n"), qr{\AHTTP/1\.0 404 },
     'another path: 404');
like(http($msock, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
     qr{\AHTTP/1\.0 405 .*\r\nAllow: GET\r\n}s, 'another method: 405');
like(http($msock, "GET /metrics HTTP/1.1\r\nX: " . ('a' x 9000)),
     qr{\AHTTP/1\.0 400 }, 'a request head over 8 KiB: 400');
like(http($msock, "hello there\n\n"), qr{\AHTTP/1\.0 400 },
     'not HTTP: 400');
like(http($msock, "GET /metrics?x=1 HTTP/1.0\n\n"),
     qr{\AHTTP/1\.0 200 OK\r\nContent-Type: text/plain; version=0\.0\.4}s,
     'GET /metrics (bare newlines, a query): 200, the text format 0.0.4');
ok(closed($silent, 10), 'a silent scrape is closed after its timeout');
cmp_ok(time - $silent_since, '>=', 4, 'not before it (5 s)');

# on a loopback port
my $port = do {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1) or die $!;
    my $p = $l->sockport;
    close $l;
    $p;
};
my $sock_b = start('b', "127.0.0.1:$port");
my $sb = IO::Socket::UNIX->new(Peer => $sock_b, Type => SOCK_STREAM) or die $!;
print $sb frame(2, 1, { tenant => 'acme', method => 'DELETE', route => '/' });
read_frames($sb, 1);
my $mb = scrape("http://127.0.0.1:$port/metrics");
ok($mb, "127.0.0.1:$port scrapes and parses");
is(value($mb, 'guardd_decisions_total', verdict => 'deny', shadow => 'false'),
   1, 'and counts its own decisions');
like(slurp("$dir/b.log"), qr/metrics on 127\.0\.0\.1:$port/,
     'guardd logs where its metrics are');

# the commands docs/metrics.md shows, against these two guardds
for my $cmd ('curl -s --unix-socket /run/guard/metrics.sock http://localhost/metrics',
             'curl -s http://127.0.0.1:9466/metrics') {
    (my $run = $cmd) =~ s{/run/guard/metrics\.sock}{$msock};
    $run =~ s{:9466/}{:$port/};
    my $out = `$run`;
    ok($? == 0 && $out =~ /^guardd_policy_info\{version="[0-9a-f]{64}"\} 1$/m,
       "docs: $cmd");
}

# guardd -t: loopback or a Unix socket only
for my $case (['0.0.0.0:9466', qr/"0\.0\.0\.0:9466" is not a loopback address/],
              ['192.0.2.1:9466', qr/is not a loopback address/],
              ['[::]:9466', qr/is not a loopback address/],
              ['localhost:9466', qr/metrics must be a Unix socket path/],
              ['127.0.0.1:99999', qr/metrics must be a Unix socket path/],
              ['127.0.0.1', qr/metrics must be a Unix socket path/]) {
    write_text("$dir/bad.conf", $json->encode({
        listen => "$dir/bad.sock", policies => "$dir/pol",
        journal => { dir => "$dir/bad.journal" }, metrics => $case->[0] }));
    my $out = `$guardd -c $dir/bad.conf -t 2>&1`;
    ok($? >> 8 == 1 && $out =~ $case->[1], "guardd -t refuses $case->[0]")
        or diag $out;
}
write_text("$dir/good.conf", $json->encode({
    listen => "$dir/good.sock", policies => "$dir/pol",
    journal => { dir => "$dir/good.journal" }, metrics => '[::1]:9466' }));
is(system("$guardd -c $dir/good.conf -t >/dev/null 2>&1"), 0,
   'guardd -t accepts [::1]:PORT');

# the dashboard and the scrape config name only documented metrics
my $docs = slurp("$repo/docs/metrics.md");
my $module_documented = $docs =~ /^## Module/m;
my $dash = $json->decode(slurp("$repo/conf/grafana-dashboard.json"));
my @exprs;
my $walk;
$walk = sub {
    my ($n) = @_;
    if (ref $n eq 'HASH') {
        push @exprs, $n->{expr} if defined $n->{expr} && !ref $n->{expr};
        $walk->($_) for values %$n;
    } elsif (ref $n eq 'ARRAY') {
        $walk->($_) for @$n;
    }
};
$walk->($dash);
ok(@exprs >= 10, scalar(@exprs) . ' queries in the dashboard');
my %names;
(my $yml = slurp("$repo/conf/prometheus.yml")) =~ s/^\s*#.*\n//mg;
for my $text (@exprs, $yml) {
    (my $t = $text) =~ s/"[^"]*"//g;    # label values
    $names{$1} = 1 while $t =~ /\b((?:guardd?|process)_[a-z0-9_]+)/g;
}
ok(!grep({ !/\b(?:guardd?|process)_[a-z0-9_]+/ } @exprs),
   'each query names a Guard metric');
for my $name (sort keys %names) {
    (my $base = $name) =~ s/_(?:bucket|sum|count)$//;
    if ($name =~ /^guard_/ && !$module_documented) {
        note "$name: docs/metrics.md has no ## Module section yet";
        next;
    }
    ok($docs =~ /`\Q$name\E`/ || $docs =~ /`\Q$base\E`/,
       "$name is in docs/metrics.md");
    ok(exists $m->{$name}, "$name is in guardd's scrape")
        if $name !~ /^guard_/;
}
# and every metric of the scrape is documented
my %scraped = map { (my $n = $_) =~ s/_(?:bucket|sum|count)$//; ($n => 1) }
              keys %$m;
ok($docs =~ /`\Q$_\E`/, "scraped $_ is in docs/metrics.md")
    for sort keys %scraped;

like(slurp("$dir/a.log"), qr/metrics on \Q$msock\E/, 'the log says where');

# a clean stop: the metrics socket removed, nothing for the sanitizers
for my $pid (keys %pids) {
    kill 'TERM', $pid;
    waitpid $pid, 0;
    is($?, 0, "guardd $pid stops cleanly");
    delete $pids{$pid};
}
ok(!-e $msock, 'the metrics socket is removed');
my $logs = slurp("$dir/a.log") . slurp("$dir/b.log");
unlike($logs, qr/ (?:emerg|alert|crit):/, 'no emergencies logged');
unlike($logs, qr/Sanitizer|runtime error/, 'no sanitizer reports');

done_testing;
