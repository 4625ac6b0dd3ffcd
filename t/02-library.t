#!/usr/bin/perl

# policy-engine's library (README.md, Building, The library): every
# policy-engine/src/gd_*.c is compiled into libguard.a, once per set of
# flags, and the programs link it instead of compiling the sources again.
# Then the commands README.md shows for building the module as an addon of
# an nginx tree, and for linking an archive built beforehand (GUARD_LIB),
# run in fresh copies of the nginx tree, and the module loads into nginx.  Skipped in make test's sanitizer
# pass (the build does not depend on the module under test).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use File::Basename qw(basename);
use File::Temp qw(tempdir);
use Test::More;
use Guard::Test;

plan skip_all => 'checked once, in the first pass' if $ENV{GUARD_SANITIZE};

my $REPO = abs_path("$FindBin::Bin/..");
my $PE   = "$REPO/policy-engine";
my $NGINX_SRC = $ENV{NGINX_SRC} || '/usr/share/nginx/src';

my @members = sort map { basename($_) =~ s/\.c$/.o/r } glob "$PE/src/gd_*.c";
ok(@members >= 10, scalar(@members) . ' library sources (src/gd_*.c)');
ok(!grep({ /^guard/ } @members), 'no program file in the library');

sub archive_members {
    my ($a) = @_;
    return [sort split /\n/, `ar t '$a' 2>&1`];
}

# the archives make unit and make module built
for my $a ("$PE/build/lib/san/libguard.a",
           "$REPO/build/nginx/objs/addon/policy-engine/libguard.a") {
  SKIP: {
        skip "$a is not built", 1 unless -f $a;
        is_deeply(archive_members($a), \@members,
                  "$a: one object per src/gd_*.c");
    }
}

# the module's tree compiles no policy-engine source itself: it links
# the archive, and builds it with its own flags
SKIP: {
    my $mk = "$REPO/build/nginx/objs/Makefile";
    skip "$mk: no configured tree (make module)", 3 unless -f $mk;
    open my $fh, '<', $mk or die "$mk: $!";
    my $text = do { local $/; <$fh> };
    unlike($text, qr{objs/addon/src/gd_\w+\.o}, 'no gd_*.c compiled by nginx');
    like($text, qr{objs/addon/policy-engine/libguard\.a -ljansson},
         'the module links objs/addon/policy-engine/libguard.a');
    like($text, qr{\$\(MAKE\) -C \S+/policy-engine module-lib},
         'nginx make builds the library (config.make)');
}

# guardd and guardctl link the sanitized archive, not the sources
(my $made = `make -n -B -C '$PE' build/guardd build/guardctl 2>&1`)
    =~ s/\\\n\s*/ /g;    # a command continued on the next line: one line
my @lines = grep { m{-o build/guard(?:d|ctl) } } split /\n/, $made;
is(scalar(@lines), 2, 'the lines that build guardd and guardctl');
for my $l (@lines) {
    my ($prog) = $l =~ m{-o build/(\S+)};
    unlike($l, qr{ src/gd_\w+\.c}, "$prog: no gd_*.c compiled again");
    like($l, qr{ build/lib/san/libguard\.a }, "$prog: links the archive");
}

# README.md's commands (Building), as shown there (t/90-docs.t checks that
# they are), run with /path/to/guard the repository and /tmp/guard-lib a
# directory of this test
my @addon = (
    './configure --with-compat --with-http_ssl_module --add-dynamic-module=/path/to/guard',
    'make modules',
);
my @prebuilt = (
    'make -C /path/to/guard/policy-engine module-lib MODULE_LIB_DIR=/tmp/guard-lib MODULE_CFLAGS="-O2 -g"',
    'GUARD_LIB=/tmp/guard-lib/libguard.a ./configure --with-compat --with-http_ssl_module --add-dynamic-module=/path/to/guard',
    'make modules',
);

my $tmp = tempdir('guard-lib-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
diag("test directory: $tmp") if $ENV{GUARD_TEST_KEEP};

sub run_ok {
    my ($cmd, $name) = @_;
    my $out = `$cmd 2>&1`;
    is($?, 0, $name) or diag(substr($out, -3000));
    return $out;
}

# a README command in the nginx tree $tree: a release tarball's configure
# writes a Makefile that runs objs/Makefile; the Debian nginx-dev tree has
# none, so there "make modules" is make -f objs/Makefile modules
sub readme_ok {
    my ($tree, $cmd) = @_;
    my $run = $cmd =~ s{/path/to/guard}{$REPO}gr =~ s{/tmp/guard-lib}{$tmp/guard-lib}gr;
    $run =~ s/^make modules$/make -f objs\/Makefile modules/
        unless -f "$tree/Makefile";
    return run_ok("cd '$tree' && $run", "README: $cmd");
}

# the repository as an ordinary addon: the library built by nginx's make
run_ok("cp -a '$NGINX_SRC' '$tmp/addon'", 'a copy of the nginx tree');
readme_ok("$tmp/addon", $_) for @addon;
ok(-f "$tmp/addon/objs/ngx_http_guard_module.so", 'the module is built');
is_deeply(archive_members("$tmp/addon/objs/addon/policy-engine/libguard.a"),
          \@members, 'with the library built in the tree');

# an archive built beforehand, named in GUARD_LIB
run_ok("cp -a '$NGINX_SRC' '$tmp/nginx'", 'a copy of the nginx tree');
readme_ok("$tmp/nginx", $prebuilt[0]);
is_deeply(archive_members("$tmp/guard-lib/libguard.a"), \@members,
          'the archive holds every gd_*.c');
readme_ok("$tmp/nginx", $_) for @prebuilt[1 .. $#prebuilt];

my $so = "$tmp/nginx/objs/ngx_http_guard_module.so";
ok(-f $so, 'the module is built');
ok(!-e "$tmp/nginx/objs/addon/policy-engine",
   'GUARD_LIB: the tree built no library of its own');

for my $m ("$tmp/addon/objs/ngx_http_guard_module.so", $so) {
    my $t = Guard::Test->new(module => $m, sanitize => 0);
    $t->write_conf(http => 'server { listen 127.0.0.1:%%PORT_0%%; guard off; }');
    my ($rc, $out) = $t->test_conf;
    is($rc, 0, "nginx -t loads $m (every symbol resolved)") or diag $out;
}

done_testing;
