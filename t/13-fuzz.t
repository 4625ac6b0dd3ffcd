#!/usr/bin/perl

# `make fuzz FUZZ_SECONDS=2` (README.md, Fuzzing): every libFuzzer target
# builds, runs from its committed seed corpus, and reports its executions
# and no crash.  Skipped when clang is not installed (scripts/setup.sh fuzz
# installs it).

use strict;
use warnings;

use File::Copy qw(copy);
use File::Temp qw(tempdir);
use FindBin;
use Test::More;

# make test's sanitizer pass changes only the nginx module; this test
# starts no nginx, and its programs are the same ASan+UBSan builds in
# both passes: checked once, in the first pass
plan skip_all => 'checked once, in the first pass (no nginx)'
    if $ENV{GUARD_SANITIZE};

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

# fuzz_guardrails' section (policy-engine/fuzz/fuzz_guardrails.json with
# the two packs): under make test, its Hyperscan database is compiled by
# the release guardctl first (seconds; minutes under ASan and libFuzzer)
# into the shared cache, $GUARD_HSCACHE, keyed by the compile's input,
# where the target's initialisation (the same loader, the same section)
# reads it.  fuzz_prefilter's database is gr_bench's patterns-only
# subset, which t/80-bench.t compiles into the same cache.
my $rel_guardctl = "$repo/policy-engine/build/release/guardctl";
if ($ENV{GUARD_HSCACHE} && -x $rel_guardctl) {
    my $pol = tempdir('guard-fuzz-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$pol/packs" or die "$pol/packs: $!";
    copy("$repo/policies/packs/$_.json", "$pol/packs/$_.json") or die $!
        for qw(pii prompt-injection);
    copy("$repo/policy-engine/fuzz/fuzz_guardrails.json", "$pol/acme.json")
        or die $!;
    my $check = `'$rel_guardctl' policy check '$pol' 2>&1`;
    is($?, 0, 'fuzz_guardrails.json: guardctl policy check (the release '
              . 'guardctl compiles its database into $GUARD_HSCACHE)')
        or diag $check;
}

my $out = `make -s -C '$repo' fuzz FUZZ_SECONDS=2 2>&1`;
is($?, 0, 'make fuzz FUZZ_SECONDS=2: exit status 0') or diag $out;

for my $t (@targets) {
    like($out, qr/^\Q$t\E\s+[1-9]\d* executions in 2 s, 0 crashes$/m,
         "$t: executions and 0 crashes reported");
}

done_testing;
