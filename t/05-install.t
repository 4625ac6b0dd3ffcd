#!/usr/bin/perl

# make install and make uninstall into a staging directory (what goes
# where, a reinstall keeps the configuration, uninstall leaves nothing but
# an edited file), make deb (the two packages and their fields), then the
# packages at work: both extracted into a throwaway root (dpkg-deb -x),
# the system nginx loading the module through the packaged snippet, and
# the packaged guardd, with the packaged guardd.conf moved into the test's
# directory, answering it and journaling a refusal.  Reuses what make
# built (make test builds it first); the first pass of make test only.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Temp qw(tempdir);
use File::Find ();
use JSON::PP ();
use Guard::Test;
use Guard::Frames qw(journal_records slurp write_text);

plan skip_all => 'packaging is checked in the first pass only'
    if $ENV{GUARD_SANITIZE};
my $repo = Guard::Test->repo;
plan skip_all => 'make has not built the module and the daemons'
    unless -f "$repo/build/ngx_http_guard_module.so"
        && -x "$repo/policy-engine/build/release/guardd";

# whether what make builds is up to date (else make install builds it)
my $built = system("make -s -q -C '$repo' GUARD_LOCKED=1 all >/dev/null 2>&1")
            == 0;
my $json = JSON::PP->new->canonical;
my $stage = "$repo/build/stage";

# run($cmd): the command in the repository; (exit status, output)
sub run {
    my ($cmd) = @_;
    my $out = `cd '$repo' && $cmd 2>&1`;
    return ($? >> 8, $out);
}

sub run_ok {
    my ($cmd) = @_;
    my ($rc, $out) = run($cmd);
    is($rc, 0, $cmd) or diag $out;
    return $out;
}

# files($dir): the files and links under $dir, relative, sorted
sub files {
    my ($dir) = @_;
    my @f;
    File::Find::find({ no_chdir => 1, wanted => sub {
        push @f, substr($_, length($dir) + 1) if -f $_ || -l $_;
    } }, $dir) if -d $dir;
    return sort @f;
}

sub mode { sprintf '%04o', (stat $_[0])[2] & 07777 }

# --- make install / make uninstall -----------------------------------------

system('rm', '-rf', $stage);
run_ok('make install DESTDIR=build/stage PREFIX=/usr');
my @policies = ((map { "etc/guard/policies/$_" }
                files("$repo/policies/examples")),
                (map { "etc/guard/policies/packs/$_" }
                files("$repo/policies/packs")),
                (map { "usr/share/guard/migrations/$_" }
                grep { /\.sql$/ } files("$repo/migrations")));
my @man = map { m{/([^/]+)\.(\d)$} ? "usr/share/man/man$2/$1.$2" : () }
          glob "$repo/docs/man/*.[1-8]";
is_deeply([files($stage)], [sort(
    'usr/lib/nginx/modules/ngx_http_guard_module.so',
    'usr/share/nginx/modules-available/mod-http-guard.conf',
    'usr/sbin/guardd', 'usr/bin/guardctl', 'etc/guard/guardd.conf',
    'lib/systemd/system/guardd.service', 'usr/lib/tmpfiles.d/guard.conf',
    @policies, @man)], 'make install puts the files in their places');
is(slurp("$stage/usr/share/nginx/modules-available/mod-http-guard.conf"),
   "load_module /usr/lib/nginx/modules/ngx_http_guard_module.so;\n",
   'the snippet loads the module from nginx\'s module directory');
is(mode("$stage/etc/guard/keys"), '0750', 'etc/guard/keys is 0750');
my $unit = slurp("$stage/lib/systemd/system/guardd.service");
like($unit, qr{^ExecStart=/usr/sbin/guardd -c /etc/guard/guardd\.conf$}m,
     'the unit starts the installed guardd');
like($unit, qr/^$_$/m, "the unit has $_")
    for 'User=guard', 'RuntimeDirectory=guard', 'StateDirectory=guard',
        'NoNewPrivileges=yes', 'ProtectSystem=strict', 'CapabilityBoundingSet=';
SKIP: {
    my $sa = '/usr/bin/systemd-analyze';
    skip 'no systemd-analyze', 1 unless -x $sa;
    # the binaries of the staged tree, and no Documentation (man pages)
    (my $u = $unit) =~ s{/usr/sbin/guardd}{$stage/usr/sbin/guardd}g;
    $u =~ s/^Documentation=.*\n//m;
    write_text("$stage/guardd.service", $u);
    my $out = `$sa verify '$stage/guardd.service' 2>&1`;
    is($out, '', 'systemd-analyze verify finds nothing in the unit');
    unlink "$stage/guardd.service";
}

# a reinstall keeps the operator's configuration; uninstall removes
# everything else, and the directories it leaves empty
write_text("$stage/etc/guard/guardd.conf", "{}\n");
like(run_ok('make install DESTDIR=build/stage PREFIX=/usr'),
     qr{kept .*/etc/guard/guardd\.conf}, 'a reinstall keeps guardd.conf');
is(slurp("$stage/etc/guard/guardd.conf"), "{}\n", 'unchanged');
like(run_ok('make uninstall DESTDIR=build/stage PREFIX=/usr'),
     qr{kept .*/etc/guard/guardd\.conf \(changed\)},
     'make uninstall keeps an edited guardd.conf');
is_deeply([files($stage)], ['etc/guard/guardd.conf'],
          'and removes every other file');
ok(!-e "$stage/etc/guard/policies" && !-e "$stage/etc/guard/keys",
   'and the directories of /etc/guard it emptied');
system('rm', '-rf', $stage);

# PREFIX: the programs move, the unit follows them; the rest stays
run_ok('make install DESTDIR=build/stage');
ok(-x "$stage/usr/local/sbin/guardd" && -x "$stage/usr/local/bin/guardctl",
   'the default PREFIX is /usr/local');
like(slurp("$stage/lib/systemd/system/guardd.service"),
     qr{^ExecStart=/usr/local/sbin/guardd }m, 'and the unit runs it there');
system('rm', '-rf', $stage);

# --- make deb --------------------------------------------------------------

my ($ver) = slurp("$repo/policy-engine/include/gd_version.h")
            =~ /GUARD_VERSION "([^"]+)"/;
my $arch = `dpkg --print-architecture`;
chomp $arch;
my $out = run_ok('make deb');
SKIP: {
    skip 'the build was not up to date', 1 unless $built;
    unlike($out, qr/\bcc\b|configure/, 'make deb builds nothing already built');
}
my $mod_deb = "$repo/build/deb/libnginx-mod-http-guard_${ver}_$arch.deb";
my $gd_deb = "$repo/build/deb/guard_${ver}_$arch.deb";
ok(-f $mod_deb && -f $gd_deb, "both packages in build/deb/ (version $ver)");

sub field { my ($deb, $f) = @_; my $v = `dpkg-deb -f '$deb' $f`; chomp $v; $v }
my ($abi) = `dpkg-query -W -f='\${Provides}' nginx` =~ /(nginx-abi-[^\s,]+)/;
like(field($mod_deb, 'Depends'), qr/^\Q$abi\E, .*libjansson4/,
     "the module depends on $abi and its libraries");
like(field($gd_deb, 'Depends'), qr/libjansson4.*libjwt.*libssl3/,
     'guard depends on its libraries');
like(`dpkg-deb -I '$gd_deb' conffiles`, qr{^/etc/guard/guardd\.conf$}m,
     'guardd.conf is a conffile');
like(`dpkg-deb -I '$mod_deb' postinst`,
     qr{/etc/nginx/modules-enabled/50-\$conf|modules-enabled/50-},
     'the module\'s postinst links modules-enabled/50-mod-http-guard.conf');

my $ctl = tempdir('guard-ctl-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system('dpkg-deb', '-e', $mod_deb, "$ctl/mod") == 0
    && system('dpkg-deb', '-e', $gd_deb, "$ctl/guard") == 0 or die;
my @scripts = grep { -f } glob "$ctl/*/{pre,post}{inst,rm}";
is(scalar(grep { system('sh', '-n', $_) == 0 } @scripts), 6,
   'the six maintainer scripts are valid sh');

# --- the packages at work, from a throwaway root ---------------------------

my $root = tempdir('guard-root-XXXXXX', TMPDIR => 1,
                   CLEANUP => !$ENV{GUARD_TEST_KEEP});
chmod 0755, $root;
is(system('dpkg-deb', '-x', $_, $root), 0, "dpkg-deb -x $_")
    for $mod_deb, $gd_deb;

is(`'$root/usr/bin/guardctl' --version`, "guardctl $ver (protocol 1)\n",
   'guardctl --version');
is(`'$root/usr/sbin/guardd' --version`, "guardd $ver (protocol 1)\n",
   'guardd --version');

my $t = Guard::Test->new(load_module => 0);
my $dir = $t->dir;

# the packaged configuration, its paths moved into the test's directory
my $conf = $json->decode(slurp("$root/etc/guard/guardd.conf"));
is($conf->{listen}, '/run/guard/guardd.sock', 'the packaged socket');
is($conf->{journal}{dir}, '/var/lib/guard/journal', 'the packaged journal');
delete $conf->{user};
mkdir "$dir/spill";
chmod 0777, "$dir/spill";
%$conf = (%$conf, listen => "$dir/guardd.sock", pid_file => "$dir/guardd.pid",
          socket_group => 'nogroup', policies => "$root/etc/guard/policies",
          journal => { %{ $conf->{journal} }, dir => "$dir/journal" },
          spill => "$dir/spill");
write_text("$dir/guardd.conf", $json->encode($conf));
like(`'$root/usr/sbin/guardd' -c '$dir/guardd.conf' -t 2>&1`,
     qr/is valid, policy version/, 'guardd -t accepts the packaged policies');
my $gpid = Guard::Frames::spawn_guardd("$root/usr/sbin/guardd",
                                       "$dir/guardd.conf", "$dir/guardd.sock",
                                       "$dir/guardd.log");
END { kill 'TERM', $gpid if $gpid }
ok(-S "$dir/guardd.sock", 'the packaged guardd listens');

# the snippet's load_module line, its path inside the root
(my $load = slurp("$root/usr/share/nginx/modules-available/"
                  . 'mod-http-guard.conf')) =~ s{ /}{ $root/};
# one HS256 key (the whole standard key set takes seconds to make)
my $jwk = $t->jwt_gen(kty => 'oct', kid => 'pkg', alg => 'HS256',
                      dir => "$dir/k");
write_text("$dir/k/jwks.json", $json->encode({ keys => [$jwk] }));
my $http = <<'CONF';
    guard_jwt_keys %%DIR%%/k/jwks.json;
    guard_policies %%ROOT%%/etc/guard/policies;
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=500ms;
    guard_audit_spill %%DIR%%/spill;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend\n"; }
    }
CONF
$http =~ s/%%ROOT%%/$root/g;
$t->write_conf(load_module => 0, main => $load, http => $http);
$t->run;

my $tok = $t->mint({ kid => 'pkg', alg => 'HS256', key => "$dir/k/pkg.key",
                     claims => {
    sub => 'u1', tenant_id => 'beta', exp => time() + 600 } });
is($t->get('/', headers => [Authorization => "Bearer $tok"])->{status}, 200,
   'the packaged module lets a good token through');
my $r = $t->get('/');
is($r->{status}, 401, 'and refuses a request without one') or diag explain $r;

my @recs;
for (1 .. 100) {
    @recs = journal_records("$dir/journal");
    last if @recs;
    select undef, undef, undef, 0.1;
}
is(scalar @recs, 1, 'the packaged guardd journals the refusal');
is($recs[0]{outcome}, 'deny', 'as a refusal') or diag explain $recs[0];
is($recs[0]{reason}, 'token_missing', 'for the missing token');
like(`'$root/usr/bin/guardctl' audit verify --dir '$dir/journal' 2>&1`,
     qr/^ok: 1 records, the chain is intact$/m,
     'guardctl from the root verifies the journal');

$t->stop;
$t->errlog_ok;
kill 'TERM', $gpid;
waitpid $gpid, 0;
undef $gpid;

done_testing;
