#!/usr/bin/perl

# The commands README.md shows under Benchmarks ("Before and after",
# "Instructions per request"), with one short round and few requests
# (bench/breaker.sh's outage 2 s long, bench/guardrails.sh's gr_bench
# 0.05 s per measure):
#
#   bench/baseline.sh main DIR          (HEAD when there is no main)
#   BASELINE_MODULE=DIR/ngx_http_guard_module.so \
#       BASELINE_GUARDD=DIR/guardd make bench
#   BASELINE_MODULE=DIR/ngx_http_guard_module.so bash bench/callgrind.sh
#
# The tables have the current module's ratios, the baseline's and
# current / baseline for every variant.  Skipped without wrk and in the
# sanitizer pass; the callgrind part without valgrind (scripts/setup.sh
# bench).  Asserts no figure, only that each is there.

use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use Test::More;

my $repo = "$FindBin::Bin/..";

plan skip_all => 'wrk is not installed (sh scripts/setup.sh)'
    unless system('command -v wrk >/dev/null 2>&1') == 0;
plan skip_all => 'the benchmarks measure the optimized module, not the '
    . 'sanitizer build (GUARD_SANITIZE)'
    if $ENV{GUARD_SANITIZE};

my $tmp = tempdir('guard-bench-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $rev = system("git -C '$repo' rev-parse -q --verify main >/dev/null") == 0
    ? 'main' : 'HEAD';
my $base = "$tmp/base";

# README.md's commands (Benchmarks), as shown there (t/90-docs.t checks
# that they are), run in the repository with /tmp/guard-baseline a
# directory of this test and main the revision above
my @readme = (
    'bench/baseline.sh main /tmp/guard-baseline',
    'BASELINE_MODULE=/tmp/guard-baseline/ngx_http_guard_module.so BASELINE_GUARDD=/tmp/guard-baseline/guardd make bench',
    'BASELINE_MODULE=/tmp/guard-baseline/ngx_http_guard_module.so bash bench/callgrind.sh',
);
sub readme_cmd {
    my $cmd = $readme[ $_[0] ] =~ s{/tmp/guard-baseline}{$base}gr;
    $cmd =~ s/ main / $rev /;
    return "cd '$repo' && $cmd 2>&1";
}

# bench/baseline.sh
my $out = `@{[ readme_cmd(0) ]}`;
is($?, 0, "bench/baseline.sh $rev DIR: exit status 0") or diag $out;
ok(-s "$base/ngx_http_guard_module.so" && -x "$base/guardd",
   'DIR/ngx_http_guard_module.so and DIR/guardd');
chomp(my $commit = `git -C '$repo' rev-parse $rev`);
is(`cat '$base/COMMIT'`, "$commit\n", 'DIR/COMMIT names the commit');

# make bench with a baseline
my $num = qr/\d+\.\d{3}/;
my $num0 = qr/\d+\.\d{2}/;
{
    local $ENV{ROUNDS} = 1;
    local $ENV{DURATION} = '1s';
    local $ENV{CONNS} = 4;
    local $ENV{OUTAGE} = 2;
    local $ENV{GR_SECONDS} = 0.05;
    local $ENV{STORE_RECORDS} = 20000;
    $out = `@{[ readme_cmd(1) ]}`;
}
is($?, 0, 'BASELINE_MODULE=... BASELINE_GUARDD=... make bench: exit status 0')
    or diag $out;

my @heads = $out =~ /^variant\s+ratio:plain\s+base:plain\b.*\scur\/base\s+runs \(current \| baseline\)$/mg;
is(scalar @heads, 4, 'jwt, jwt_algs, limits, sidecar: tables with the baseline');

for my $v (qw(plain-return hs256-cached rs256-cached rs256-nocache
              limit_req guard-jwt guard-limit guard-limit-nohdr proxy
              guard-full-proxy guard-risk guard-jwt-5 guard-risk-5
              auth_request hs256-nocache ps256-nocache es256-nocache
              ed25519-nocache)) {
    like($out, qr/^\Q$v\E(?:\s+$num){3,5}\s+\d+ \| \d+ $/m,
         "$v: ratios, baseline ratios, cur/base, runs of both");
}
like($out, qr/^full inline path over plain proxy: guard-full-proxy \/ proxy = $num, baseline $num, cur\/base $num$/m,
     'the full inline path over plain proxy, both');
like($out, qr/^rs256-nocache\@base req\/s vs openssl speed rsa2048 verify\/s: $num$/m,
     'the baseline uncached RS256 rate next to openssl speed');
like($out, qr/^5% delegated against its own baseline: .* cur\/base $num$/m,
     'sidecar: 5% delegated, both');
my @dps = $out =~ /decisions per CPU-second \(per core\): \d+/g;
is(scalar @dps, 2, 'decide_bench against the current and the baseline guardd');
like($out, qr/^baseline guardd: \Q$base\E\/guardd$/m, 'the baseline guardd');
like($out, qr/audit\.sh: no baseline run/, 'audit.sh says it runs no baseline');

# bench/breaker.sh: its variants, with or without a baseline (one without
# the breaker is dropped, and says so); the breaker's rows only when the
# module has guard_breaker
like($out, qr/^guard-\Q$_\E(?:\s+$num){2,5}\s+\d+ (?:\| \d+ )?$/m,
     "breaker.sh: guard-$_") for qw(proxy fail refused timeout empty);
like($out, qr/^  nginx alone \(max_fails=1 fail_timeout=10s\):\s+\d+ requests,\s+\d+ reached the upstream$/m,
     'breaker.sh: the outage, requests reaching the upstream, nginx alone');
SKIP: {
    skip 'the module has no guard_breaker', 6
        if $out =~ /^breaker variants skipped: this module has no guard_breaker$/m;
    like($out, qr/^guard-\Q$_\E(?:\s+$num){2,5}\s+\d+ (?:\| \d+ )?$/m,
         "breaker.sh: guard-$_") for qw(breaker open);
    like($out, qr/^  closed breaker: guard-breaker \/ guard-proxy = $num(?:, baseline $num, cur\/base $num)?$/m,
         'breaker.sh: the closed breaker over the guard path');
    like($out, qr/^open breaker over the failing upstream: guard-open \/ guard-fail = $num/m,
         'breaker.sh: the open breaker over the failing upstream');
    like($out, qr/^open breaker over the timing-out upstream \(\d+ ms\): guard-open \/ guard-timeout = $num/m,
         'breaker.sh: the open breaker over the timing-out upstream');
    like($out, qr/^  guard_breaker \(default thresholds\):\s+\d+ requests,\s+\d+ reached the upstream$/m,
         'breaker.sh: the outage, requests reaching the upstream, guard');
}

# bench/guardrails.sh: no baseline; plain proxy GET and POST, guard with
# the packs (unless the module or the packs cannot), ModSecurity + CRS
# (unless not installed), the ratios, and gr_bench's scan
like($out, qr/guardrails\.sh: no baseline run/, 'guardrails.sh says it runs no baseline');
like($out, qr/^\Q$_\E\s+$num\s+$num\s+\d+ $/m, "guardrails.sh: $_")
    for qw(plain-get plain-post);
SKIP: {
    skip 'guardrails.sh: no guardrails in the module or no packs', 7
        if $out =~ /^guard variants skipped: /m;
    like($out, qr/^\Q$_\E\s+$num\s+$num\s+\d+ $/m, "guardrails.sh: $_")
        for qw(guard-get guard-post);
    like($out, qr/^guard on the 1 KB JSON POST over plain proxy POST: guard-post \/ plain-post = $num \(median of the rounds' ratios: $num\) \(goal: >= 0\.75\)$/m,
         'guardrails.sh: guard over plain proxy, POST');
    like($out, qr/^guard on a GET over plain proxy GET: guard-get \/ plain-get = $num \(median of the rounds' ratios: $num\)$/m,
         'guardrails.sh: guard over plain proxy, GET');
    like($out, qr/^scan over standalone PCRE2: $num \(median of the rounds' ratios: $num; goal: >= 0\.7\)$/m,
         'gr_bench: the scan over standalone PCRE2-JIT');
    like($out, qr/^  (?:JSON parse \+ walk|normalisation|detectors \(\s*\d+\)|patterns \(\s*\d+\))\s+[\d.]+ us\s+[\d.]+%$/m,
         'gr_bench: where the engine\'s time goes');
    like($out, qr/^  engine with it\s+[\d.]+ us, [\d.]+ MB\/s: [\d.]+x$/m,
         'gr_bench: the engine with its literal prefilter and without');
}
SKIP: {
    skip 'guardrails.sh: ModSecurity or the CRS is not installed', 3
        if $out =~ /^ModSecurity variants skipped: /m;
    like($out, qr/^\Q$_\E\s+$num\s+$num\s+\d+ $/m, "guardrails.sh: $_")
        for qw(modsec-get modsec-post);
    like($out, qr/^ModSecurity\+CRS on the 1 KB JSON POST over plain proxy POST: modsec-post \/ plain-post = $num \(median of the rounds' ratios: $num\)$/m,
         'guardrails.sh: ModSecurity over plain proxy, POST');
}

# bench/store.sh (20,000 records here): every figure, beside its goal
SKIP: {
    skip 'redis-server or PostgreSQL is not installed', 5
        if $out =~ /^store\.sh: skipped: /m;
    like($out, qr/^journal: 20000 records in $num0 s: \d+ records\/s \(group commit of \d+; $num0 s with making the records: \d+ records\/s\)  goal >= 100000: (?:ok|BELOW)$/m,
         'store.sh: the journal\'s rate');
    like($out, qr/^redis sink \(AOF, appendfsync \w+; [^)]*\): \d+ records in $num0 s from guardd ready: \d+ records\/s .*goal >= 50000: (?:ok|BELOW)$/m,
         'store.sh: the Redis sink\'s rate');
    like($out, qr/^postgres sink \([^)]*\): \d+ records in $num0 s from guardd ready: \d+ records\/s .*goal >= 20000: (?:ok|BELOW)$/m,
         'store.sh: the PostgreSQL sink\'s rate');
    like($out, qr/^blocked --db --tenant t03 --since 1h: \d+\.\d{3} s .*goal < 1 s: (?:ok|ABOVE)$/m,
         'store.sh: blocked from the store');
    like($out, qr/^show ID --db: \d+\.\d{3} s \(median of 5\)  goal < 1 s: (?:ok|ABOVE)$/m,
         'store.sh: show from the store');
}

# bench/callgrind.sh with a baseline
SKIP: {
    skip 'valgrind is not installed (sh scripts/setup.sh bench)', 3
        unless system('command -v valgrind >/dev/null 2>&1') == 0;

    {
        local $ENV{COUNT} = 20;
        local $ENV{WARMUP} = 5;
        local $ENV{VARIANTS} = 'proxy full-cached';
        $out = `@{[ readme_cmd(2) ]}`;
    }
    is($?, 0, 'BASELINE_MODULE=... bash bench/callgrind.sh: exit status 0')
        or diag $out;
    like($out, qr/^proxy\s+\d+\s+1\.000\s+\d+\s+1\.000\s+$num$/m,
         'proxy: instructions per request, current and baseline');
    like($out, qr/^full-cached\s+\d+\s+$num\s+\d+\s+$num\s+$num$/m,
         'full-cached: instructions, x proxy, for both, and cur/base');
}

done_testing;
