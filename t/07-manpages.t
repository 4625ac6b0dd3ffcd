#!/usr/bin/perl

# The man pages docs/man/guardd.8 and docs/man/guardctl.1 (written by
# hand, installed by make install) against what they describe, so that
# they cannot drift:
#
#  - both render without a warning (groff -ww, and man -l), with the
#    sections a man page of each kind has;
#  - every option `guardd --help` prints is in guardd.8, and every setting
#    of the table in docs/guardd.md; every signal guardd handles is under
#    SIGNALS;
#  - every subcommand `guardctl --help` prints is in guardctl.1's synopsis
#    and in the documentation (docs/*.md), and every subcommand of the
#    synopsis is in --help; every option of --help is in guardctl.1; the
#    environment variables guardctl reads are under ENVIRONMENT;
#  - the version in .TH is GUARD_VERSION (policy-engine/include/gd_version.h).
#
# Uses the programs make unit builds (policy-engine/build/).  Skipped in
# make test's sanitizer pass (no nginx involved).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use Test::More;
use Guard::Frames qw(slurp);

plan skip_all => 'checked once, in the first pass' if $ENV{GUARD_SANITIZE};

my $REPO     = abs_path("$FindBin::Bin/..");
my $GUARDD   = $ENV{GUARDD}   || "$REPO/policy-engine/build/guardd";
my $GUARDCTL = $ENV{GUARDCTL} || "$REPO/policy-engine/build/guardctl";
-x $GUARDD && -x $GUARDCTL
    or BAIL_OUT("$GUARDD or $GUARDCTL is missing: make unit");

my %PAGE = (guardd => "$REPO/docs/man/guardd.8",
            guardctl => "$REPO/docs/man/guardctl.1");
my $GROFF = -x '/usr/bin/groff' ? '/usr/bin/groff' : undef;

# the page as plain text: groff's ASCII output on lines long enough never
# to break (so no word is hyphenated); without groff, the source less its
# requests and escapes
sub text_of {
    my ($file) = @_;
    if ($GROFF) {
        return `$GROFF -t -man -Tascii -P-cbou -rLL=5000n '$file' 2>/dev/null`;
    }
    my $t = slurp($file);
    $t =~ s/^\.\\".*\n//mg;
    $t =~ s/^\.(?:B|I|BR|RB|BI|IB|IR|RI)\s+//mg;
    $t =~ s/^\.\w+.*\n//mg;
    $t =~ s/\\f[BIRP]|\\&//g;
    $t =~ s/\\-/-/g;
    $t =~ s/"//g;
    return $t;
}

# the text of one section (.SH NAME) of a rendered page
sub section {
    my ($text, $name) = @_;
    return $text =~ /^\Q$name\E\n(.*?)(?=^[A-Z][A-Z ]+\n|\z)/ms ? $1 : '';
}

sub has_word {
    my ($text, $word) = @_;
    return $text =~ /(?<![\w-])\Q$word\E(?![\w-])/;
}

# ---------------------------------------------------------------------------
# rendering

for my $name (sort keys %PAGE) {
    my $file = $PAGE{$name};
    ok(-f $file, "$file exists") or next;
    my $src = slurp($file);
    my ($sect) = $file =~ /\.(\d)$/;
    like($src, qr/^\.TH \U$name\E $sect /m, "$name: .TH \U$name\E $sect");
  SKIP: {
        skip 'no groff', 2 unless $GROFF;
        my $err = `$GROFF -t -man -Tutf8 -ww -z '$file' 2>&1`;
        is($?, 0, "$name: groff renders it");
        is($err, '', "$name: without a warning");
    }
  SKIP: {
        skip 'no man', 1 unless -x '/usr/bin/man';
        my $err = `MANWIDTH=80 man --warnings -l '$file' 2>&1 >/dev/null`;
        is($err, '', "$name: man -l renders it without a warning");
    }
    unless ($GROFF) {
        # a simple check of the source: only the requests used here
        my @bad = grep { !/^\.(?:\\"|TH|SH|SS|TP|PP|IP|B|I|BR|RB|BI|IB|IR|RI|br|nh|ad|hy)\b/ }
                  $src =~ /^(\..*)$/mg;
        is_deeply(\@bad, [], "$name: only man requests");
    }
    my $text = text_of($file);
    my @want = $name eq 'guardd'
        ? ('NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'CONFIGURATION',
           'SIGNALS', 'FILES', 'EXIT STATUS', 'SEE ALSO')
        : ('NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'ENVIRONMENT',
           'FILES', 'EXIT STATUS', 'SEE ALSO');
    my @missing = grep { section($text, $_) !~ /\S/ } @want;
    is_deeply(\@missing, [], "$name: sections @want");

  SKIP: {
        my $h = slurp("$REPO/policy-engine/include/gd_version.h");
        my ($v) = $h =~ /#define\s+GUARD_VERSION\s+"([^"]+)"/;
        skip 'no gd_version.h', 1 unless $v;
        like($src, qr/^\.TH \S+ \d \S+ "Guard \Q$v\E"/m, "$name: version $v");
    }
}

# ---------------------------------------------------------------------------
# guardd

my $gd = text_of($PAGE{guardd});
my $help = `'$GUARDD' --help 2>&1`;
is($?, 0, 'guardd --help: exit 0');
like($help, qr/^usage: guardd /, 'guardd --help: the usage');
my %gopts = map { $_ => 1 } $help =~ /(?<![\w-])(--?[a-z][\w-]*)/g;
ok(scalar(keys %gopts) >= 3, 'guardd --help: options ' . join(' ', sort keys %gopts));
my $gopt_text = section($gd, 'OPTIONS') . section($gd, 'SYNOPSIS');
ok(has_word($gopt_text, $_), "guardd.8: option $_") for sort keys %gopts;

`'$GUARDD' --no-such-option 2>&1`;
is($? >> 8, 2, 'guardd: a usage error exits 2, as EXIT STATUS says');
like(section($gd, 'EXIT STATUS'), qr/^\s*2\s+A usage error/m, 'guardd.8: 2, a usage error');

# the settings table of docs/guardd.md
my $gmd = slurp("$REPO/docs/guardd.md");
my ($table) = $gmd =~ /^\| setting \|.*?\n((?:\|.*\n)+)/m;
my @settings = ($table // '') =~ /^\| `([\w.]+)` \|/mg;
ok(@settings >= 15, scalar(@settings) . ' settings in docs/guardd.md');
my $gconf = section($gd, 'CONFIGURATION');
ok(has_word($gconf, $_), "guardd.8: setting $_") for @settings;

# the signals guardd handles (guardd_loop.c)
my $loop = slurp("$REPO/policy-engine/src/guardd_loop.c");
my %sigs = map { $_ => 1 } $loop =~ /ssi_signo == (SIG\w+)/g;
ok(keys %sigs, 'guardd handles ' . join(' ', sort keys %sigs));
ok(has_word(section($gd, 'SIGNALS'), $_), "guardd.8: signal $_") for sort keys %sigs;

# ---------------------------------------------------------------------------
# guardctl

my $gc = text_of($PAGE{guardctl});
my $chelp = `'$GUARDCTL' --help 2>&1`;
is($?, 0, 'guardctl --help: exit 0');

# "guardctl policy check DIR", "guardctl show ID", "guardctl blocked [...":
# the words before the first argument or option
sub subcommands {
    my ($text) = @_;
    my %sub;
    for ($text =~ /^(?:usage:)?\s*guardctl ([a-z][a-z ]*?)(?= [A-Z\[-]| *$)/mg) {
        $sub{$_} = 1;
    }
    return \%sub;
}
my $subs = subcommands($chelp);
ok(keys %$subs >= 6, 'guardctl --help: ' . join(', ', sort keys %$subs));
# the synopsis: one line per form, "guardctl SUBCOMMAND ..." or an option
my @forms = section($gc, 'SYNOPSIS') =~ /^\s*guardctl (.*?)\s*$/mg;
ok(@forms >= keys %$subs, scalar(@forms) . ' forms in guardctl.1\'s synopsis');
my $docs = join "\n", map { slurp($_) } glob("$REPO/docs/*.md"), "$REPO/README.md";
for my $s (sort keys %$subs) {
    ok((grep { /^\Q$s\E(?: |$)/ } @forms), "guardctl.1: synopsis has guardctl $s");
    like(section($gc, 'COMMANDS'), qr/^\s+\Q$s\E\b/m,
         "guardctl.1: COMMANDS explains $s");
    like($docs, qr/guardctl \Q$s\E\b/, "docs: guardctl $s");
}
for my $f (grep { !/^-/ } @forms) {
    ok((grep { $f =~ /^\Q$_\E(?: |$)/ } keys %$subs),
       'guardctl --help has guardctl.1\'s guardctl ' . (split ' ', $f)[0]);
}
my %copts = map { $_ => 1 } $chelp =~ /(?<![\w-])(--[a-z][\w-]*)/g;
ok(has_word($gc, $_), "guardctl.1: option $_") for sort keys %copts;

# the environment guardctl reads
my $src = join "\n", map { slurp($_) } glob "$REPO/policy-engine/src/guardctl*.c";
my %env = map { $_ => 1 } $src =~ /getenv\("(\w+)"\)/g;
ok(keys %env, 'guardctl reads ' . join(' ', sort keys %env));
my $envsec = section($gc, 'ENVIRONMENT');
ok(has_word($envsec, $_), "guardctl.1: ENVIRONMENT $_") for sort keys %env;
my @man_env = $envsec =~ /^\s+(GUARD_\w+)\s*$/mg;
ok($env{$_}, "guardctl reads $_, as guardctl.1 says") for @man_env;

`'$GUARDCTL' no-such-command 2>&1`;
is($? >> 8, 2, 'guardctl: a usage error exits 2, as EXIT STATUS says');

done_testing;
