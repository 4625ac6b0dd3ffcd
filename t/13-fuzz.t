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
use JSON::PP ();
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

# The Hyperscan databases two targets compile in their initialisation
# (seconds each without sanitizers, minutes under ASan and libFuzzer):
# under make test, the release guardctl compiles them first into the
# shared cache, $GUARD_HSCACHE, keyed by the compile's input (expressions,
# flags, ids), where the targets read them:
#   - fuzz_guardrails: its policy, policy-engine/fuzz/fuzz_guardrails.json,
#     with the two packs (the same loader, the same section);
#   - fuzz_prefilter: every pattern rule of the two packs, in order, with
#     its flags, alone in a section (tenant "patterns" here, the rules
#     its own).
# A database that does not match (a target changed) is compiled by the
# target as before: slower, not wrong.
my $rel_guardctl = "$repo/policy-engine/build/release/guardctl";
if ($ENV{GUARD_HSCACHE} && -x $rel_guardctl) {
    my $pol = tempdir('guard-fuzz-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $js = JSON::PP->new->utf8->canonical;
    mkdir "$pol/packs" or die "$pol/packs: $!";
    my @patterns;
    for my $pack (qw(pii prompt-injection)) {
        my $f = "$repo/policies/packs/$pack.json";
        copy($f, "$pol/packs/$pack.json") or die "$f: $!";
        open my $fh, '<:raw', $f or die "$f: $!";
        my $doc = $js->decode(do { local $/; <$fh> });
        push @patterns, map {
            +{ targets => ['body'], pattern => $_->{pattern},
               action => 'log',
               defined $_->{flags} ? (flags => $_->{flags}) : () }
        } grep { defined $_->{pattern} } @{ $doc->{rules} };
    }
    $patterns[$_]{id} = "p$_" for 0 .. $#patterns;
    copy("$repo/policy-engine/fuzz/fuzz_guardrails.json", "$pol/acme.json")
        or die $!;
    open my $out, '>:raw', "$pol/patterns.json" or die $!;
    print $out $js->encode({ tenant => 'patterns',
                             guardrails => { rules => \@patterns } });
    close $out or die $!;
    my $check = `'$rel_guardctl' policy check '$pol' 2>&1`;
    is($?, 0, 'the release guardctl compiles the databases of '
              . 'fuzz_guardrails and fuzz_prefilter into $GUARD_HSCACHE')
        or diag $check;
}

my $out = `make -s -C '$repo' fuzz FUZZ_SECONDS=2 2>&1`;
is($?, 0, 'make fuzz FUZZ_SECONDS=2: exit status 0') or diag $out;

for my $t (@targets) {
    like($out, qr/^\Q$t\E\s+[1-9]\d* executions in 2 s, 0 crashes$/m,
         "$t: executions and 0 crashes reported");
}

done_testing;
