#!/usr/bin/perl

# guardctl reload: nginx and guardd loaded from one policy directory and
# reloaded as one.  The directory is checked first (nothing is signalled
# when it fails); nginx and guardd get SIGHUP; guardctl then reads both
# versions back (nginx through guard_status, guardd through its HELLO
# answer) and exits 0 only when both are the directory's and every old
# nginx worker has stopped accepting (under load, one answer of the new
# version from a new worker came while the old worker still accepted,
# and the next request reached it).  guardd warns,
# once per pair of versions, when the module's HELLO or DECIDE carries a
# version other than its own.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::UNIX;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep);
use Guard::Test;
use Guard::Frames qw(:DEFAULT command guardd_conf slurp wait_for write_text);

my $repo = "$FindBin::Bin/..";
my $guardd = "$repo/policy-engine/build/guardd";
my $guardctl = "$repo/policy-engine/build/guardctl";

plan skip_all => 'guardd and guardctl are not built (make unit)'
    unless -x $guardd && -x $guardctl;

my $t = Guard::Test->new;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new->canonical;

# a policy with risk rules, so that a request makes a DECIDE
sub acme {
    my ($weight) = @_;
    return <<JSON;
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": $weight, "when": {"method": ["DELETE"]}}
    ]
  }
}
JSON
}
$t->write_file('pol/acme.json', acme(50));
$t->write_file('other/acme.json', acme(20));
$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol"));
$t->write_file('guardd-other.conf', guardd_conf($dir, $sock,
    policies => "$dir/other"));

my $gpid;
sub start_guardd {
    my ($conf) = @_;
    $gpid = spawn_guardd($guardd, "$dir/$conf", $sock, "$dir/guardd.log");
    ok(-S $sock, "guardd ($conf) is listening");
}
sub stop_guardd {
    end_guardd($gpid);
    undef $gpid;
}

start_guardd('guardd.conf');

$t->write_conf(workers => 1, http => <<'CONF');
    guard_policies %%DIR%%/pol;
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=1s connections=2;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        listen unix:%%DIR%%/nginx.sock;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location /r/ {
            guard on;
            guard_risk on;
            empty_gif;
        }

        location = /guard_status {
            guard_status;
        }
    }
CONF
$t->run;

my $status = 'http://127.0.0.1:' . $t->port(0) . '/guard_status';
my @where = ('--nginx-pid', "$dir/nginx.pid", '--guardd-pid',
             "$dir/guardd.pid", '--socket', $sock, '--status', $status);

# a command's result, for a failing test
sub show { "exit $_[0]{exit}\n--- stdout\n$_[0]{out}--- stderr\n$_[0]{err}" }

sub version_of {
    my ($pdir) = @_;
    my $r = command($guardctl, 'policy', 'check', $pdir);
    my ($v) = $r->{out} =~ /version: ([0-9a-f]{64})$/m;
    return $v;
}
sub nginx_version {
    my $r = $t->get('/guard_status');
    return eval { $json->decode($r->{body})->{policy_version} } // '';
}
sub guardd_version {
    my $c = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM)
        or return '';
    syswrite $c, frame(1, 7, { version => 1, max_frame => 65536,
                               node => 't52' });
    my ($f) = read_frames($c, 1, 5);
    return $f && $f->{payload} ? $f->{payload}{policy_version} // '' : '';
}

my $v1 = version_of("$dir/pol");
like($v1, qr/^[0-9a-f]{64}$/, 'the directory has a version');
is(nginx_version(), $v1, 'nginx started with it');
is(guardd_version(), $v1, "guardd's HELLO answer carries it");

# the commands of docs/soc.md, with this test's directory, pid files,
# socket and guard_status URL
my @DOCS = (
    'guardctl policy check /etc/guard/policies',
    'guardctl reload --policies /etc/guard/policies',
);
for my $line (@DOCS) {
    my @argv = split ' ', $line;
    s{^/etc/guard/policies$}{$dir/pol} for @argv;
    $argv[0] = $guardctl;
    push @argv, @where if $argv[1] eq 'reload';
    my $r = command(@argv);
    is($r->{exit}, 0, "docs: $line") or diag(show($r));
}

# a changed policy: both reloaded, both at the new version
$t->write_file('pol/acme.json', acme(60));
my $v2 = version_of("$dir/pol");
isnt($v2, $v1, 'the changed directory has another version');
my $r = command($guardctl, 'reload', '--policies', "$dir/pol", @where);
is($r->{exit}, 0, 'reload: exit 0') or diag(show($r));
is($r->{out}, "reloaded: nginx and guardd at policy version $v2\n",
   'reload: says both are at the new version');
is(nginx_version(), $v2, 'guard_status reports the new version');
is(guardd_version(), $v2, 'guardd reports the new version');
like(slurp("$dir/guardd.log"), qr/reloaded: policy version \Q$v2\E/,
     'guardd logged its reload');

# guard_status over nginx's Unix socket: http://unix:PATH:URI
$r = command($guardctl, 'reload', '--policies', "$dir/pol", @where,
             '--status', "http://unix:$dir/nginx.sock:/guard_status");
is($r->{exit}, 0, 'reload, guard_status on a Unix socket: exit 0')
    or diag(show($r));

# an old worker that has not stopped accepting (here: stopped, so that
# it cannot take its QUIT): a new connection could still reach it and
# its policies, so the reload is not done, whatever guard_status says
{
    wait_for(10, sub { $t->worker_pids == 1 });
    my ($old) = $t->worker_pids;
    kill 'STOP', $old;
    $r = command($guardctl, 'reload', '--policies', "$dir/pol", @where,
                 '--timeout', '1');
    kill 'CONT', $old;
    is($r->{exit}, 1, 'an old worker still accepting: exit 1')
        or diag(show($r));
    like($r->{err}, qr/nginx's old worker $old still accepts connections \(with the old policies\); guardd reports \Q$v2\E, the directory is \Q$v2\E/,
         'an old worker still accepting: named');
    ok(wait_for(10, sub { !grep { $_ == $old } $t->worker_pids }),
       'once it runs again, it takes its QUIT and exits');
}

# an invalid policy: nothing is signalled
{
    # the workers of the last reload (its old ones may still be exiting)
    wait_for(10, sub { $t->worker_pids == 1 });
    my %workers = map { $_ => 1 } $t->worker_pids;
    my $glog = length slurp("$dir/guardd.log");
    $t->write_file('pol/broken.json', '{"tenant": "broken", "burts": 1}');
    $r = command($guardctl, 'reload', '--policies', "$dir/pol", @where);
    is($r->{exit}, 1, 'invalid policy: exit 1') or diag(show($r));
    like($r->{err}, qr/broken\.json:1:\d+: \/burts: unknown member "burts"/,
         'invalid policy: the error is shown');
    like($r->{err}, qr/do not load: nothing was reloaded/,
         'invalid policy: nothing was reloaded');
    sleep 0.3;
    is_deeply([grep { !$workers{$_} } $t->worker_pids], [],
              'nginx was not reloaded: no new worker');
    unlike(substr(slurp("$dir/guardd.log"), $glog), qr/reload/,
           'guardd was not reloaded');
    is(nginx_version(), $v2, 'nginx keeps its version');
    is(guardd_version(), $v2, 'guardd keeps its version');
    unlink "$dir/pol/broken.json";
}

# a missing pid file: nothing is signalled either
$r = command($guardctl, 'reload', '--policies', "$dir/pol", @where,
         '--guardd-pid', "$dir/nope.pid");
is($r->{exit}, 1, 'no guardd pid file: exit 1') or diag(show($r));
like($r->{err}, qr/cannot read guardd's pid file .*nope\.pid/,
     'no guardd pid file: named');

# guardd on another directory: the versions differ, named both
stop_guardd();
start_guardd('guardd-other.conf');
my $v3 = version_of("$dir/other");
$r = command($guardctl, 'reload', '--policies', "$dir/pol", @where,
         '--timeout', '1');
is($r->{exit}, 1, 'guardd on another directory: exit 1') or diag(show($r));
like($r->{err}, qr/nginx reports \Q$v2\E, guardd reports \Q$v3\E, the directory is \Q$v2\E/,
     'the versions of nginx, guardd and the directory, each named');

# nginx's HELLO and DECIDEs carry its version: one warning for the pair
my $tok = $t->mint({ kid => 'hs256',
                     claims => { sub => 'u1', tenant_id => 'acme',
                                 exp => time() + 3600 } });
my $warn = qr/(?:HELLO|DECIDE) carries policy version \Q$v2\E, guardd has \Q$v3\E/;
my $n = 0;
for (1 .. 50) {
    $t->get('/r/x', headers => [Authorization => "Bearer $tok"]);
    $n = () = slurp("$dir/guardd.log") =~ /$warn/g;
    last if $n;
    sleep 0.1;
}
$t->get('/r/x', headers => [Authorization => "Bearer $tok"])
    for 1 .. 3;
sleep 0.2;
$n = () = slurp("$dir/guardd.log") =~ /$warn/g;
is($n, 1, 'guardd warned once for the pair (nginx, guardd)');
unlike(slurp("$dir/guardd.log"), qr/\Q$tok\E/, 'no token in the log');

# guardd reloaded to a third version: a new pair, a new warning
$t->write_file('other/acme.json', acme(30));
my $v4 = version_of("$dir/other");
kill 'HUP', $gpid;
# (the module's connections said HELLO before: a DECIDE carries it now)
my $warn4 = qr/DECIDE carries policy version \Q$v2\E, guardd has \Q$v4\E/;
$n = 0;
for (1 .. 50) {
    $t->get('/r/x', headers => [Authorization => "Bearer $tok"]);
    $n = () = slurp("$dir/guardd.log") =~ /$warn4/g;
    last if $n;
    sleep 0.1;
}
is($n, 1, 'after a reload of guardd, the new pair warns once, on a DECIDE');

# back on one directory: no more warnings, reload exits 0
stop_guardd();
start_guardd('guardd.conf');
$r = command($guardctl, 'reload', '--policies', "$dir/pol", @where);
is($r->{exit}, 0, 'back on one directory: exit 0') or diag(show($r));

$t->errlog_ok;
done_testing();
