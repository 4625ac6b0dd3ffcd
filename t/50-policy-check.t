#!/usr/bin/perl

# The policy format contract, checked two ways: `guardctl policy check DIR`
# (the C loader) and policies/schema.json (JSON Schema 2020-12, run with
# /usr/bin/python3 and python3-jsonschema).  The shipped examples and
# t/policies/good must pass both, with a stable version; every case of
# t/policies/broken must fail both, at the place its EXPECT file names:
#
#   line 1: FILE:LINE:COLUMN   (FILE: a base name in the case directory)
#   line 2: the JSON pointer   (empty for the root and for syntax errors)
#
# Some rules depend on the file name or on the whole directory, and no
# schema of one file can see them: those cases are listed in %SET_LEVEL
# below, and the schema must accept them, so that the difference stays
# visible.  No nginx is needed.

use strict;
use warnings;

use FindBin;
use Cwd qw(abs_path);
use File::Copy qw(copy);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use POSIX ();
use Test::More;

# make test's sanitizer pass changes only the nginx module; this test
# starts no nginx, and its programs are the same ASan+UBSan builds in
# both passes: checked once, in the first pass
plan skip_all => 'checked once, in the first pass (no nginx)'
    if $ENV{GUARD_SANITIZE};

my $REPO     = abs_path("$FindBin::Bin/..");
my $GUARDCTL = $ENV{GUARDCTL} || "$REPO/policy-engine/build/guardctl";
my $PYTHON   = '/usr/bin/python3';
my $SCHEMA   = "$REPO/policies/schema.json";
my $BROKEN   = "$REPO/t/policies/broken";
my @GOOD     = ("$REPO/policies/examples", "$REPO/t/policies/good");

# Broken cases whose files are each valid against the schema: the error
# is in the set (or in a file-name rule), which only the loader sees.
my %SET_LEVEL = (
    'tenant-duplicate'    => 'two files with the same tenant',
    'tenant-in-default'   => 'tenant is forbidden in _default.json',
    'tenant-missing'      => 'tenant is required in a tenant file',
    'rate-name-duplicate' => 'rate rule names are unique within a file',
    'risk-signal-id-duplicate'    => 'risk signal ids are unique within a file',
    'risk-step-up-not-below-deny' => 'risk step_up is less than deny',
    'risk-hours-equal'            => 'outside_hours from and to differ',
    'guardrails-pattern-invalid'  => 'a guardrail pattern compiles (PCRE2)',
    'guardrails-pack-unknown'     => 'a pack included exists in DIR/packs',
    'guardrails-rule-id-duplicate' => 'guardrail rule ids are unique',
    'guardrails-score-without-weight' => 'a score rule has a weight',
);

# Cases whose error must also name another file (the spec: a duplicate
# tenant names both files).
my %ALSO_NAMES = ('tenant-duplicate' => 'one.json');

my $TMP = tempdir('guard-policy-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
diag("test directory: $TMP") if $ENV{GUARD_TEST_KEEP};

# ---------------------------------------------------------------------------
# helpers

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or die "$f: $!";
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub spew {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh or die "$f: $!";
}

# run(@argv): exit code, stdout and stderr; no shell, stdin /dev/null,
# killed by SIGALRM after 60 s
sub run {
    my @cmd = @_;
    my ($out, $err) = ("$TMP/stdout", "$TMP/stderr");
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        alarm 60;
        { exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $st = $?;
    return { exit   => ($st & 127) ? -1 : $st >> 8,
             signal => $st & 127,
             out    => slurp($out),
             err    => slurp($err) };
}

sub check { return run($GUARDCTL, 'policy', 'check', @_) }

sub show {
    my ($r) = @_;
    return "exit $r->{exit}" . ($r->{signal} ? " (signal $r->{signal})" : '')
         . "\n--- stdout\n$r->{out}--- stderr\n$r->{err}---";
}

# no sanitizer report (policy-engine builds with ASan and UBSan, whose
# reports also exit 1)
sub clean_ok {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok($r->{err} !~ /AddressSanitizer|LeakSanitizer|runtime error:/
       && !$r->{signal}, "$name: no crash, no sanitizer report")
        or diag(show($r));
}

sub json_files {
    my ($dir) = @_;
    return sort grep { -f } glob("$dir/*.json");
}

# The schema's verdict on each file: { path => 'valid' | 'invalid: ...' |
# 'parse: ...' }.  NaN and Infinity are not JSON: refused like jansson.
my $SCHEMA_PY = <<'EOF';
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
def no_constant(c):
    raise ValueError("not JSON: " + c)
for f in sys.argv[2:]:
    try:
        with open(f, encoding="utf-8") as fh:
            doc = json.load(fh, parse_constant=no_constant)
    except ValueError as e:
        res = "parse: %s" % e
    else:
        errs = list(v.iter_errors(doc))
        res = "valid"
        if errs:
            e = errs[0]
            res = "invalid: /%s: %s" % ("/".join(map(str, e.absolute_path)),
                                       e.message)
    print(f + "\t" + res.replace("\n", " ").replace("\t", " "))
EOF

# one python run for every file: { path => verdict }
my %VERDICT;

sub schema_verdicts {
    my (@files) = @_;
    my $r = run($PYTHON, '-c', $SCHEMA_PY, $SCHEMA, @files);
    die "schema check failed:\n" . show($r) if $r->{exit} != 0;
    my %v = map { split /\t/, $_, 2 } split /\n/, $r->{out};
    die "schema check: no verdict for $_\n" . show($r)
        for grep { !defined $v{$_} } @files;
    %VERDICT = (%VERDICT, %v);
}

sub verdicts { return { map { ($_ => $VERDICT{$_}) } @_ } }

# version(dir): the version printed by a successful check, else undef
sub version_of {
    my ($dir, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = check($dir);
    is($r->{exit}, 0, "$name: guardctl policy check exits 0")
        or diag(show($r));
    my ($v) = $r->{out} =~ /version: ([0-9a-f]{64})$/m;
    ok(defined $v, "$name: a 64-hex version") or diag(show($r));
    return $v;
}

sub copy_tree {
    my ($from, $to) = @_;
    make_path($to);
    opendir my $dh, $from or die "$from: $!";
    for my $e (grep { !/^\.\.?$/ } readdir $dh) {
        if (-d "$from/$e") {
            copy_tree("$from/$e", "$to/$e");
        } else {
            copy("$from/$e", "$to/$e") or die "copy $from/$e: $!";
        }
    }
}

# rewrite(file, python expression of d): load, change, dump sorted and
# indented by 4
sub rewrite {
    my ($file, $expr) = @_;
    my $py = 'import json, sys; f = sys.argv[1]; d = json.load(open(f)); '
           . "$expr; open(f, 'w').write(json.dumps(d, sort_keys=True, "
           . "indent=4) + '\\n')";
    my $r = run($PYTHON, '-c', $py, $file);
    die "rewrite $file:\n" . show($r) if $r->{exit} != 0;
}

# ---------------------------------------------------------------------------
# the schema, without guardctl

my $r0 = run($PYTHON, '-c', $SCHEMA_PY, $SCHEMA);
is($r0->{exit}, 0, 'policies/schema.json is a valid 2020-12 schema')
    or diag(show($r0));

opendir my $bd, $BROKEN or die "$BROKEN: $!";
my @CASES = sort grep { !/^\./ && -d "$BROKEN/$_" } readdir $bd;
closedir $bd;

schema_verdicts(map { json_files($_) } @GOOD, map { "$BROKEN/$_" } @CASES);

for my $dir (@GOOD) {
    (my $name = $dir) =~ s{^\Q$REPO\E/}{};
    my @files = json_files($dir);
    ok(@files >= 3, "$name: has policy files");
    my $v = verdicts(@files);
    for my $f (@files) {
        (my $b = $f) =~ s{.*/}{};
        is($v->{$f}, 'valid', "$name/$b: valid against the schema");
    }
}

ok(@CASES >= 20, scalar(@CASES) . ' broken cases');
ok(-d "$BROKEN/$_", "set-level case $_ exists") for sort keys %SET_LEVEL;

my %EXPECT;
for my $case (@CASES) {
    my $dir = "$BROKEN/$case";
    my @lines = split /\n/, slurp("$dir/EXPECT"), -1;
    my ($file, $line, $col) = ($lines[0] // '') =~ /^([^\/:]+):(\d+):(\d+)$/;
    ok(defined $file && -f "$dir/$file", "$case: EXPECT names a file")
        or next;
    my @files = json_files($dir);
    my $v = verdicts(@files);

    # a file that is not JSON at all: a syntax error, located where
    # jansson reports it, with no pointer
    $EXPECT{$case} = { file => $file, line => $line, col => $col,
                       ptr => $lines[1] // '',
                       syntax => scalar($v->{"$dir/$file"} =~ /^parse:/) };
    my @bad = grep { $v->{$_} ne 'valid' } @files;
    if ($SET_LEVEL{$case}) {
        # documented: the schema cannot see this rule
        ok(!@bad, "$case: the schema accepts it ($SET_LEVEL{$case}: "
                . 'a set-level rule only guardctl checks)')
            or diag(join "\n", map { "$_: $v->{$_}" } @bad);
    } else {
        ok(@bad, "$case: the schema refuses it")
            or diag(join "\n", map { "$_: $v->{$_}" } @files);
    }
}

# ---------------------------------------------------------------------------
# guardctl

if (!ok(-f $GUARDCTL && -x _, "guardctl is built: $GUARDCTL")) {
    diag('build it with `make -C policy-engine`, or set GUARDCTL');
    done_testing();
    exit;
}

for my $dir (@GOOD) {
    (my $name = $dir) =~ s{^\Q$REPO\E/}{};
    my @files = json_files($dir);
    my $tenants = grep { !m{/_default\.json$} } @files;
    my $default = (grep { m{/_default\.json$} } @files) ? 'yes' : 'no';

    my $r = check($dir);
    is($r->{exit}, 0, "$name: guardctl policy check exits 0")
        or diag(show($r));
    clean_ok($r, $name);
    like($r->{out},
         qr/^ok: $tenants tenant policies, default: $default, version: [0-9a-f]{64}$/m,
         "$name: ok: $tenants tenant policies, default: $default, version")
        or diag(show($r));
    my ($v1) = $r->{out} =~ /version: ([0-9a-f]{64})$/m;
    my $v2 = version_of($dir, "$name, again");
    ok(defined $v1 && defined $v2 && $v1 eq $v2,
       "$name: the same version twice");
}

for my $case (@CASES) {
    my $e = $EXPECT{$case} or next;
    my $dir = "$BROKEN/$case";
    my $at = "$dir/$e->{file}:$e->{line}:$e->{col}:";

    my $r = check($dir);
    is($r->{exit}, 1, "$case: guardctl exits 1") or diag(show($r));
    clean_ok($r, $case);
    if ($e->{syntax}) {
        # where jansson reports the syntax error; no pointer
        like($r->{err}, qr/^\Q$at\E/m,
             "$case: error at $e->{file}:$e->{line}:$e->{col}")
            or diag(show($r));
    } else {
        # FILE:LINE:COLUMN: POINTER: message
        like($r->{err}, qr/^\Q$at $e->{ptr}:\E/m,
             "$case: error at $e->{file}:$e->{line}:$e->{col}, "
             . "pointer '$e->{ptr}'")
            or diag(show($r));
    }
    if (my $other = $ALSO_NAMES{$case}) {
        like($r->{err}, qr/^\Q$at\E.*\Q$other\E/m,
             "$case: the error also names $other") or diag(show($r));
    }
}

# usage and empty directories
{
    my $r = run($GUARDCTL, 'policy', 'check');
    is($r->{exit}, 2, 'policy check without a directory: exit 2')
        or diag(show($r));

    my $empty = "$TMP/empty";
    make_path("$empty/keys");
    copy("$REPO/t/policies/good/keys/acme.jwks.json",
         "$empty/keys/acme.json") or die $!;
    $r = check($empty);
    is($r->{exit}, 1, 'a directory without top-level *.json: exit 1 '
                    . '(subdirectories are not read)') or diag(show($r));
    ok(length $r->{err}, '... with an error on stderr');
}

# the version: the canonical form, not the bytes
{
    my $good = "$REPO/t/policies/good";
    my $orig = version_of($good, 'good');

    my $copy = "$TMP/copy";
    copy_tree($good, $copy);
    is(version_of($copy, 'a copy elsewhere'), $orig,
       'a copy in another directory has the same version');

    rewrite("$copy/$_", 'pass')
        for map { s{.*/}{}r } json_files($copy);
    like(slurp("$copy/acme.json"), qr/^    "auth": \{$/m,
         'the copy is reformatted (sorted keys, indent 4)');
    is(version_of($copy, 'reformatted'), $orig,
       'whitespace and member order do not change the version');

    my $v = "$TMP/value";
    copy_tree($good, $v);
    rewrite("$v/acme.json", "d['limits']['rate'][0]['requests'] += 1");
    my $changed = version_of($v, 'requests + 1');
    ok(defined $changed && defined $orig && $changed ne $orig,
       'one value changed in one file: another version');

    my $s = "$TMP/shadow";
    copy_tree($good, $s);
    rewrite("$s/beta.json", "d['shadow'] = False");
    my $shadow = version_of($s, 'beta shadow off');
    ok(defined $shadow && defined $orig && $shadow ne $orig
       && (!defined $changed || $shadow ne $changed),
       'a shadow flag changed: another version');
}

done_testing();
