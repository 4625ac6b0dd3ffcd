#!/usr/bin/perl

# policy-engine's library (README.md, Building, The library): every
# policy-engine/src/gd_*.c is compiled into libguard.a, once per set of
# flags, and the programs link it instead of compiling the sources again.
# Then the commands README.md shows for linking an archive built
# beforehand (GUARD_LIB) run in a fresh copy of the nginx tree, and the
# module they build loads into nginx.  Skipped in make test's sanitizer
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
my @lines = grep { m{-o build/guard(?:d|ctl) } }
            split /\n/, `make -n -B -C '$PE' build/guardd build/guardctl 2>&1`;
is(scalar(@lines), 2, 'the lines that build guardd and guardctl');
for my $l (@lines) {
    my ($prog) = $l =~ m{-o build/(\S+)};
    unlike($l, qr{ src/gd_\w+\.c}, "$prog: no gd_*.c compiled again");
    like($l, qr{ build/lib/san/libguard\.a }, "$prog: links the archive");
}

# README.md: an archive built beforehand, named in GUARD_LIB
my $tmp = tempdir('guard-lib-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
diag("test directory: $tmp") if $ENV{GUARD_TEST_KEEP};

sub run_ok {
    my ($cmd, $name) = @_;
    my $out = `$cmd 2>&1`;
    is($?, 0, $name) or diag(substr($out, -3000));
    return $out;
}

run_ok("make -C '$PE' module-lib MODULE_LIB_DIR=$tmp/guard-lib "
       . "MODULE_CFLAGS=\"-O2 -g\"",
       'make -C policy-engine module-lib MODULE_LIB_DIR=... MODULE_CFLAGS=...');
is_deeply(archive_members("$tmp/guard-lib/libguard.a"), \@members,
          'the archive holds every gd_*.c');

run_ok("cp -a '$NGINX_SRC' '$tmp/nginx'", 'a copy of the nginx tree');
run_ok("cd '$tmp/nginx' && GUARD_LIB=$tmp/guard-lib/libguard.a "
       . "./configure --with-compat --with-http_ssl_module "
       . "--add-dynamic-module=$REPO",
       'GUARD_LIB=... ./configure --with-compat --with-http_ssl_module ...');
# a release tarball's configure writes a Makefile that runs objs/Makefile;
# the Debian nginx-dev tree has none
run_ok("cd '$tmp/nginx' && "
       . (-f "$tmp/nginx/Makefile" ? 'make modules'
                                   : 'make -f objs/Makefile modules'),
       'make modules');

my $so = "$tmp/nginx/objs/ngx_http_guard_module.so";
ok(-f $so, 'the module is built');
ok(!-e "$tmp/nginx/objs/addon/policy-engine",
   'GUARD_LIB: the tree built no library of its own');

my $t = Guard::Test->new(module => $so, sanitize => 0);
$t->write_conf(http => 'server { listen 127.0.0.1:%%PORT_0%%; guard off; }');
my ($rc, $out) = $t->test_conf;
is($rc, 0, 'nginx -t loads it (every symbol resolved)') or diag $out;

done_testing;
