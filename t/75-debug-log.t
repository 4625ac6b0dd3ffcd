#!/usr/bin/perl

# nginx built with debug logging (Debian's is), an error_log at the debug
# level, a sidecar and "guard on": the workers start and serve, with
# guardd down and with guardd up.  nginx's debug line for a timer reads
# the connection behind the event (ev->data); Guard's own events (the
# audit tick and kick, the sidecar's reconnect and flush, a request's
# wait for its verdict) must give it one.  While guardd is down, the
# failed connect() is logged at most once a second per worker, at the
# level of guard_sidecar_log_level.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(sleep time);
use Guard::Test qw(:DEFAULT wait_for);
use Guard::Frames qw(:DEFAULT guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";

my $t = Guard::Test->new;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new->canonical;

mkdir "$dir/spill" or die;
chmod 0777, "$dir/spill";

$t->write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 80, "when": {"method": ["DELETE"]}}
    ]
  }
}
JSON

$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-debug', spill => "$dir/spill"));

my $gpid;
END { kill 'KILL', $gpid if $gpid }

$t->write_conf(workers => 2,
               main => "error_log $dir/debug.log debug;",
               http => <<'CONF');
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=500ms connections=2;
    guard_sidecar_log_level warn;
    guard_audit_ring 64;
    guard_audit_spill %%DIR%%/spill;
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location = /status { guard_status; }
        location = /open { return 200 "open\n"; }

        location / {
            guard on;
            guard_risk on;
            guard_risk_fail open;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend\n"; }
    }
CONF

sub crashes {
    my @l = $t->errlog =~ /(.*exited on signal.*)/g;
    return scalar @l;
}

my $started = time;
$t->run;
my @workers = sort { $a <=> $b } $t->worker_pids;

my $exp = time() + 3600;
my $tok = $t->mint({ kid => 'hs256', claims => {
    sub => 'd1', tenant_id => 'acme', exp => $exp } });

# guardd down: the reconnect timers run, requests wait for no verdict
is($t->get('/open')->{status}, 200, 'guardd down: an open location serves');
my $r = $t->get('/x');
problem_ok($r, 'token_missing', 'guardd down: a refusal');
is($t->http('GET', '/ok', headers => [Authorization => "Bearer $tok"])
       ->{status}, 200, 'guardd down: risk fails open');
sleep 1.5;    # a few reconnect attempts and audit ticks
is(crashes(), 0, 'guardd down: no worker exited on a signal');
is_deeply([sort { $a <=> $b } $t->worker_pids], \@workers,
          'guardd down: the same workers');
like($t->read_file('debug.log') // '', qr/event timer add: -1: 1000:/,
     'the debug log has the audit tick (a dummy connection, fd -1)');

# the failed connect() is logged at the level set, at most once a second
# per worker (each worker has two connections retrying with a backoff)
my $elapsed = time - $started;
my @connect = $t->errlog =~ /^.* \[(\w+)\] .*guard sidecar: cannot connect.*$/mg;
ok(@connect >= 1, 'the failed connect is logged (' . @connect . ' lines)');
is_deeply([grep { $_ ne 'warn' } @connect], [],
          'at the level of guard_sidecar_log_level');
# two workers, a line a second each at the most, plus the first of each
ok(@connect <= 2 * (int($elapsed) + 2),
   sprintf 'at most a line a second per worker (%d lines in %.1f s)',
           scalar @connect, $elapsed);
$t->errlog_unlike(qr/\[crit\].*connect\(\)/, 'nginx\'s own crit line is not');

# guardd up: connections, DECIDE with its waiter's timer, AUDIT, ACKs
$gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
my $up = wait_for(15, sub {
    my $st = eval { $json->decode($t->get('/status')->{body}) } // {};
    return ($st->{audit}{pending} // 1) == 0;
});
ok($up, 'guardd up: the ring drains');
# each worker connects on its own: one may still be in its reconnect
# delay (failing open) when the other has drained the ring
wait_for(10, sub {
    $r = $t->http('DELETE', '/d', headers => [Authorization => "Bearer $tok"]);
    $r->{status} != 200;
});
problem_ok($r, 'risk_deny', 'guardd up: a risk refusal', token => $tok);
is($t->http('GET', '/ok', headers => [Authorization => "Bearer $tok"])
       ->{status}, 200, 'guardd up: an allowed request');
problem_ok($t->get('/y'), 'token_missing', 'guardd up: a refusal');
sleep 1.2;    # an audit tick or two

# guardd goes away with connections up: close, requeue, reconnect
kill 'TERM', $gpid;
waitpid $gpid, 0;
undef $gpid;
problem_ok($t->get('/z'), 'token_missing', 'guardd gone again: a refusal');
sleep 0.5;

is(crashes(), 0, 'no worker exited on a signal');
is_deeply([sort { $a <=> $b } $t->worker_pids], \@workers,
          'the same workers all along');
ok((-s "$dir/debug.log") > 0, 'the debug log was written');
$t->errlog_ok;

done_testing;
