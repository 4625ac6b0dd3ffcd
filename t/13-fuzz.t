#!/usr/bin/perl

# `make fuzz FUZZ_SECONDS=2` (README.md, Fuzzing): every libFuzzer target
# builds, runs from its committed seed corpus, and reports its executions
# and no crash.  Skipped when clang is not installed (scripts/setup.sh fuzz
# installs it).

use strict;
use warnings;

use FindBin;
use Test::More;

my $repo = "$FindBin::Bin/..";
my @targets = qw(fuzz_proto fuzz_audit fuzz_jwt fuzz_policy fuzz_detect fuzz_norm
                 fuzz_prefilter fuzz_guardrails);

plan skip_all => 'clang is not installed (sh scripts/setup.sh fuzz)'
    unless system('command -v clang >/dev/null 2>&1') == 0;

for my $t (@targets) {
    my @seeds = glob "$repo/policy-engine/fuzz/corpus/$t/*";
    ok(@seeds >= 2, "$t: a committed seed corpus (" . @seeds . ' files)');
    my @big = grep { -s $_ > 16384 } @seeds;
    ok(!@big, "$t: seed files are small") or diag "@big";
}

my $out = `make -s -C '$repo' fuzz FUZZ_SECONDS=2 2>&1`;
is($?, 0, 'make fuzz FUZZ_SECONDS=2: exit status 0') or diag $out;

for my $t (@targets) {
    like($out, qr/^\Q$t\E\s+[1-9]\d* executions in 2 s, 0 crashes$/m,
         "$t: executions and 0 crashes reported");
}

done_testing;
