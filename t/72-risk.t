#!/usr/bin/perl

# Risk delegation end to end: nginx asks a real guardd over its Unix socket
# without blocking, and applies allow / step_up / deny; shadow mode; both
# fail modes with guardd stopped, hung and answering garbage; many risky
# requests in flight on one worker; recovery when guardd comes back.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::UNIX;
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use Guard::Test;
use Guard::Frames qw(:DEFAULT guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = "$repo/policy-engine/build/guardd";
my $guardctl = "$repo/policy-engine/build/guardctl";

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";

$t->write_file('gpol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 50, "when": {"method": ["DELETE"]}},
      {"id": "not-admin", "weight": 30,
       "when": {"claim": {"name": "roles", "lacks": "admin"}}}
    ]
  }
}
JSON
# outside_hours in a time zone: UTC+14 (Etc/GMT-14), hours from an hour
# before its time of day now to an hour after; the same hours without the
# zone are UTC's, 14 hours off, so they do not hold now
my $tz_ok = -r '/usr/share/zoneinfo/Etc/GMT-14';
{
    my @l = gmtime(time() + 14 * 3600);
    my $m = $l[2] * 60 + $l[1];
    my ($from, $to) = map { my $x = ($m + $_) % 1440;
                            sprintf '%02d:%02d', int($x / 60), $x % 60 }
                      (-60, 60);
    for my $tenant ('tz', 'tzutc') {
        my $zone = $tenant eq 'tz' ? '"time_zone": "Etc/GMT-14",' : '';
        $t->write_file("gpol/$tenant.json", <<JSON);
{
  "tenant": "$tenant",
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70}, $zone
    "signals": [
      {"id": "off-hours", "weight": 10,
       "when": {"outside_hours": {"from": "$from", "to": "$to"}}}
    ]
  }
}
JSON
    }
}
$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/gpol", node => 'gd-test'));

my $gpid;
sub start_guardd {
    $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                         "$dir/guardd.log");
    ok(-S $sock, 'guardd is listening');
}
sub stop_guardd {
    end_guardd($gpid);
    undef $gpid;
}

start_guardd();

$t->write_conf(workers => 1, http => <<'CONF');
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=300ms connections=2;

    log_format risk '$request_method $uri $status $guard_decision '
                    '$guard_reason $guard_decision_id $guard_risk_score';

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        access_log %%DIR%%/risk.log risk;

        location /r/ {
            guard on;
            guard_risk on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Score $guard_risk_score;
            proxy_set_header X-Id $guard_decision_id;
        }

        location /shadow/ {
            guard on;
            guard_risk shadow;
            add_header X-Decision $guard_decision always;
            add_header X-Reason $guard_reason always;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /open/ {
            guard on;
            guard_risk on;
            guard_risk_fail open;
            add_header X-Decision $guard_decision always;
            add_header X-Reason $guard_reason always;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / {
            return 200 "backend $request_method score=$http_x_score id=$http_x_id\n";
        }
    }
CONF
$t->run;

my $exp = time() + 3600;
my ($user, $admin) = $t->mint(
    { kid => 'hs256', claims => { sub => 'u1', tenant_id => 'acme',
                                  roles => ['reader'], exp => $exp } },
    { kid => 'hs256', claims => { sub => 'a1', tenant_id => 'acme',
                                  roles => ['admin'], exp => $exp } });

sub req {
    my ($method, $path, $tok) = @_;
    return $t->http($method, $path,
                    headers => [Authorization => "Bearer $tok"]);
}

# the outcomes
my $r = req('GET', '/r/x', $user);
is($r->{status}, 200, 'GET by a reader: score 30 < 40, allowed');
like($r->{body}, qr/score=30 /, '$guard_risk_score reaches the backend');
my ($bid) = $r->{body} =~ /id=(\S+)/;
like($bid, $UUID7, "the decision id is guardd's UUIDv7");

$r = req('DELETE', '/r/x', $admin);
my $id_step = problem_ok($r, 'risk_step_up', 'DELETE by an admin: step-up');
like($r->{headers}{'www-authenticate'} // '',
     qr/^Bearer realm="guard", error="insufficient_user_authentication"/,
     'RFC 9470 insufficient_user_authentication');

$r = req('DELETE', '/r/x', $user);
my $id_deny = problem_ok($r, 'risk_deny', 'DELETE by a reader: 80, deny');
is($r->{status}, 403, 'deny is 403');

# the policy's time zone, its offset computed when guardd loaded it
SKIP: {
    skip 'no Etc/GMT-14 in the zone database', 2 unless $tz_ok;
    my ($tz, $tzutc) = $t->mint(
        map { { kid => 'hs256', claims => { sub => 't1', tenant_id => $_,
                                            exp => $exp } } } qw(tz tzutc));
    $r = req('GET', '/r/x', $tz);
    like($r->{body}, qr/score=0 /,
         'outside_hours in time_zone UTC+14: within the hours, score 0');
    $r = req('GET', '/r/x', $tzutc);
    like($r->{body}, qr/score=10 /,
         'the same hours in UTC: outside them, score 10');
}

# guardd journaled both refusals, under the ids nginx answered with
# (guardd journals decisions on its writer thread: wait a little for them)
my $journal = '';
for (1 .. 50) {
    $journal = '';
    for my $f (glob "$dir/journal/*.jsonl") {
        open my $fh, '<', $f or die;
        local $/;
        $journal .= <$fh>;
    }
    last if index($journal, $id_deny) >= 0 && index($journal, $id_step) >= 0;
    sleep 0.1;
}
like($journal, qr/"id":"\Q$id_step\E"/, 'the step-up is in the journal');
like($journal, qr/"id":"\Q$id_deny\E"/, 'the deny is in the journal');

# shadow mode computes and passes
$r = req('DELETE', '/shadow/x', $user);
is($r->{status}, 200, 'shadow: the deny is not enforced');
is($r->{headers}{'x-decision'}, 'shadow_deny', 'shadow: $guard_decision');
is($r->{headers}{'x-reason'}, 'risk_deny', 'shadow: $guard_reason');

# many risky requests in flight at once on one worker
my @socks;
for my $i (1 .. 40) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port(0)) or die;
    my ($m, $tok) = $i % 2 ? ('DELETE', $admin) : ('GET', $admin);
    print $s "$m /r/$i HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           . "Authorization: Bearer $tok\r\n\r\n";
    push @socks, [$s, $i % 2 ? 401 : 200];
}
my $right = 0;
for my $p (@socks) {
    my ($s, $want) = @$p;
    my $sel = IO::Select->new($s);
    my $buf = '';
    while ($sel->can_read(10)) {
        my $n = sysread $s, $buf, 65536, length $buf;
        last unless $n;
    }
    $right++ if $buf =~ m{^HTTP/1\.1 (\d+)} && $1 == $want;
}
is($right, 40, '40 concurrent risky requests, each answered correctly');

# guardd stopped: fail closed and open
stop_guardd();
sleep 0.2;
$r = req('GET', '/r/x', $admin);
problem_ok($r, 'sidecar_unavailable', 'guardd stopped, fail closed: 503');
is($r->{headers}{'retry-after'}, '1', '503 with Retry-After');
$r = req('GET', '/open/x', $admin);
is($r->{status}, 200, 'guardd stopped, fail open: 200');
is($r->{headers}{'x-reason'}, 'sidecar_unavailable',
   'fail open: $guard_reason sidecar_unavailable');

# guardd hung: accepts and never answers
sub fake_guardd {
    my ($mode) = @_;
    unlink $sock;
    my $pid = fork // die;
    if ($pid == 0) {
        my $l = IO::Socket::UNIX->new(Local => $sock, Listen => 16,
                                      Type => SOCK_STREAM) or die;
        chmod 0666, $sock;
        my @held;
        my $end = time + 15;
        my $sel = IO::Select->new($l);
        while (time < $end) {
            for my $h ($sel->can_read(0.1)) {
                if ($h == $l) {
                    my $c = $l->accept or next;
                    push @held, $c;
                    $sel->add($c);
                } else {
                    my $n = sysread $h, my $b, 65536;
                    if (!$n) { $sel->remove($h); next }
                    syswrite $h, "\x00\x00\x00\x0c\x03garbage!{{{{"
                        if $mode eq 'garbage';
                }
            }
        }
        exit 0;
    }
    for (1 .. 100) { last if -S $sock; sleep 0.05 }
    return $pid;
}

my $fake = fake_guardd('hang');
my ($ok503, $timed_out) = (0, 0);
for (1 .. 40) {    # until a request reached the hung guardd and timed out
    $r = req('GET', '/r/x', $admin);
    $ok503++ if $r->{status} == 503;
    if ($t->errlog =~ /no verdict within 300 ms/) { $timed_out = 1; last }
    sleep 0.2;
}
ok($ok503 >= 1 && $r->{status} == 503, 'guardd hung: 503');
ok($timed_out, 'after the 300 ms timeout, logged');
kill 'KILL', $fake; waitpid $fake, 0;

$fake = fake_guardd('garbage');
my $garbage503 = 0;
for (1 .. 40) {
    $r = req('GET', '/r/x', $admin);
    $garbage503++ if $r->{status} == 503;
    last if $garbage503 >= 2 && $t->errlog =~ /closed: .*(frame|JSON|type)/;
    sleep 0.2;
}
ok($garbage503 >= 2, 'guardd answering garbage: 503');
like($t->errlog, qr/guard sidecar: connection to .* closed: .*/,
     'the bad stream closes the connection, logged');
kill 'KILL', $fake; waitpid $fake, 0;
unlink $sock;

# guardd back: the worker reconnects (backoff at most 5 s)
start_guardd();
my $back = 0;
for (1 .. 60) {
    $r = req('GET', '/r/x', $user);
    if ($r->{status} == 200) { $back = 1; last }
    sleep 0.25;
}
ok($back, 'guardd restarted: decisions resume');

stop_guardd();
my $v = `$guardctl audit verify --dir $dir/journal`;
is($? >> 8, 0, "guardd's journal verifies") or diag $v;

$t->errlog_ok;

done_testing;
