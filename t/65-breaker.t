#!/usr/bin/perl

# The circuit breaker (guard_breaker NAME; the policy's "breaker"
# section), end to end against a backend the test drives: a small Python
# server that answers GET /b/status/CODE with CODE and GET /b/sleep/MS
# after MS milliseconds, and logs every request it gets (the calls that
# reached the upstream are counted there); and a closed port for
# connection errors.  Opening on the failure ratio, on the slow-call
# ratio and on connection errors; no opening below min_calls; 503
# circuit_open with Retry-After, without contacting the upstream; tenant
# isolation on the same upstream; half-open letting exactly "probes"
# requests through under parallel load on two workers; re-opening with a
# growing open_for; state across a reload, with a lowered open_for_max
# applied (no stuck OPEN); shadow per breaker and per tenant; the
# error_page fallback; $guard_breaker_state; guard_status and the
# Prometheus lines; the audit records of transitions in guardd's journal,
# and circuit_open refusals in "guardctl blocked".

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use Guard::Test qw(:DEFAULT wait_for);
use Guard::Frames qw(spawn_guardd journal_records guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";

plan skip_all => "no guardd ($guardd): make unit" unless -x $guardd;

my $t = Guard::Test->new;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new->canonical;
my $exp = int(time) + 3600;

# ---------------------------------------------------------------------------
# the backend

$t->write_file('backend.py', <<'PY');
import sys, time, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

log = open(sys.argv[2], "a", buffering=1)
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a):
        pass
    def do_GET(self):
        with lock:
            log.write("%s %s\n" % (self.headers.get("X-Tenant", "-"),
                                   self.path))
        parts = self.path.split("/")
        code, body = 200, b"ok\n"
        if len(parts) > 3 and parts[2] == "status":
            code = int(parts[3])
        elif len(parts) > 3 and parts[2] == "sleep":
            time.sleep(int(parts[3]) / 1000.0)
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

my $bport = $t->port(1);
my $bpid = fork // die "fork: $!";
if (!$bpid) {
    exec $t->python, "$dir/backend.py", $bport, "$dir/backend.log";
    exit 127;
}
END { kill 'KILL', $bpid if $bpid }
wait_for(10, sub {
    IO::Socket::INET->new(PeerAddr => "127.0.0.1:$bport", Proto => 'tcp')
}) or BAIL_OUT('the backend did not start');

# the calls of a tenant that reached the backend
sub calls {
    my ($tenant) = @_;
    my $log = $t->read_file('backend.log') // '';
    return scalar grep { /^\Q$tenant\E / } split /\n/, $log;
}

# ---------------------------------------------------------------------------
# guardd, for the audit records

$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-breaker'));

# ---------------------------------------------------------------------------
# policies

sub bk {
    my (%o) = @_;
    return { window => '10s', min_calls => 4, failure_ratio => 0.5,
             open_for => '1s', open_for_max => '4s', backoff => 2,
             probes => 2, %o };
}

sub policy {
    my ($tenant, $breaker, %top) = @_;
    $t->write_file("pol/$tenant.json", $json->encode({
        tenant => $tenant, %top, breaker => { api => $breaker } }));
}

policy('a', bk());
policy('b', bk());
policy('minc', bk(min_calls => 10));
policy('slow', bk(min_calls => 2, slow_ms => 100, slow_ratio => 0.5));
policy('conn', bk(min_calls => 2));
policy('rl', bk(min_calls => 2, open_for => '30s', open_for_max => '60s'));
policy('sh', bk(min_calls => 2, shadow => JSON::PP::true));
policy('sht', bk(min_calls => 2), shadow => JSON::PP::true);
policy('fb', bk(min_calls => 2));

my $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                        "$dir/guardd.log");
END { kill 'KILL', $gpid if $gpid }

$t->write_conf(workers => 2, http => <<'EOF');
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=500ms connections=2;
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        guard_jwt_keys %%KEYS%%/jwks.json;
        proxy_set_header X-Tenant $guard_tenant;
        add_header X-Breaker $guard_breaker_state always;
        add_header X-Reason $guard_reason always;

        location /b/ {
            guard on;
            guard_breaker api;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /dead/ {
            guard on;
            guard_breaker api;
            proxy_connect_timeout 1s;
            proxy_pass http://127.0.0.1:%%PORT_2%%;
        }

        location /fb/ {
            guard on;
            guard_breaker api;
            error_page 503 = @fallback;
            proxy_pass http://127.0.0.1:%%PORT_1%%/b/;
        }

        location @fallback {
            add_header X-Fallback $guard_reason always;
            return 200 "fallback\n";
        }

        location /off/ {
            guard on;
            guard_breaker off;
            proxy_pass http://127.0.0.1:%%PORT_1%%/b/;
        }

        location /status { guard_status; }
    }
EOF

# nothing listens on port 2: connection refused
$t->port(2);

{
    my ($rc, $out) = $t->test_conf;
    is($rc, 0, 'guard_breaker in the configuration is valid') or diag $out;
}
$t->run;

my %tok;
{
    my @ten = qw(a b minc slow conn rl sh sht fb);
    my @t = $t->mint(map {
        { kid => 'hs256', claims => { sub => "u-$_", tenant_id => $_,
                                      exp => $exp } }
    } @ten);
    @tok{@ten} = @t;
}

sub get {
    my ($tenant, $path) = @_;
    return $t->get($path, headers => [Authorization => "Bearer $tok{$tenant}"]);
}

sub reason {
    my ($r) = @_;
    my $doc = eval { decode_json($r->{body} // '') } || {};
    return ($r->{status} // 'none') . ' ' . ($doc->{reason} // '-');
}

sub status_doc {
    return eval { decode_json($t->get('/status')->{body}) } || {};
}

sub breaker_of {
    my ($tenant) = @_;
    my ($b) = grep { $_->{tenant} eq $tenant && $_->{breaker} eq 'api' }
              @{ status_doc()->{breakers} // [] };
    return $b // {};
}

# ---------------------------------------------------------------------------
# closed: calls pass, outcomes counted

my $r = get('a', '/b/ok');
is($r->{status}, 200, 'closed: a call passes');
is($r->{headers}{'x-breaker'}, 'closed', '$guard_breaker_state closed');
$r = get('a', '/off/ok');
ok(!defined $r->{headers}{'x-breaker'}, 'guard_breaker off: no state');

# min_calls: failures below it never open
for (1 .. 6) { get('minc', '/b/status/502') }
$r = get('minc', '/b/status/502');
is(reason($r), '502 -', 'below min_calls: 7 failures of 7, still closed');
is(breaker_of('minc')->{state}, 'closed', 'guard_status: closed');
is(breaker_of('minc')->{failures}, 7, 'guard_status: the failures counted');

# ---------------------------------------------------------------------------
# opening on the failure ratio (min_calls 4, ratio 0.5)

get('a', '/b/status/500') for 1 .. 2;    # not a failure status by default
get('a', '/b/status/502');
is(breaker_of('a')->{state}, 'closed',
   '4 calls, a 502 and two 500s (no failure): still closed');
is(get('a', '/b/status/503')->{status}, 503,
   '5 calls, 2 failures: closed, the upstream answers 503');
get('a', '/b/status/504');    # 6 calls, 3 failures: open

my $before = calls('a');
$r = get('a', '/b/ok');
problem_ok($r, 'circuit_open', 'open: 503 circuit_open');
is($r->{headers}{'retry-after'}, 1, 'Retry-After: 1 (open_for 1s)');
is($r->{headers}{'x-breaker'}, 'open', '$guard_breaker_state open');
is(calls('a'), $before, 'the upstream was not contacted');

# tenant isolation: b's breaker on the same upstream is closed
$r = get('b', '/b/ok');
is($r->{status}, 200, "tenant b passes while a's breaker is open");
is($r->{headers}{'x-breaker'}, 'closed', "b's breaker is closed");

# a client abort (499) is no call: counted when it started, taken out
{
    my $calls = breaker_of('b')->{calls};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(0),
                                  Proto => 'tcp', Timeout => 5);
    print $s "GET /b/sleep/500 HTTP/1.1\r\nHost: localhost\r\n"
           . "Authorization: Bearer $tok{b}\r\n\r\n";
    sleep 0.2;
    close $s;
    wait_for(3, sub { ($t->read_file('access.log') // '') =~ m{/b/sleep/500 HTTP/1.1" 499} });
    is(breaker_of('b')->{calls}, $calls, 'a client abort (499) is no call');
}

# ---------------------------------------------------------------------------
# half-open: a failing probe re-opens, for open_for * backoff

sleep 1.1;
$r = get('a', '/b/status/502');
is($r->{status}, 502, 'half-open: a probe reaches the upstream');
$r = get('a', '/b/ok');
is(reason($r), '503 circuit_open', 'the probe failed: open again');
is($r->{headers}{'retry-after'}, 2, 'Retry-After: 2 (open_for 1s x 2)');

# half-open under parallel load on two workers: exactly 2 probes pass
sleep 2.1;
$before = calls('a');
my @socks;
for (1 .. 16) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(0),
                                  Proto => 'tcp', Timeout => 5) or next;
    print $s "GET /b/sleep/800 HTTP/1.1\r\nHost: localhost\r\n"
           . "Authorization: Bearer $tok{a}\r\nConnection: close\r\n\r\n";
    push @socks, $s;
}
my %st;
for my $s (@socks) {
    local $/;
    my $raw = <$s> // '';
    $st{$raw =~ m{^HTTP/1\.1 (\d+)} ? $1 : 'none'}++;
    close $s;
}
is(scalar @socks, 16, '16 parallel requests');
is($st{200} // 0, 2, 'half-open: exactly 2 (probes) passed')
    or diag explain \%st;
is($st{503} // 0, 14, 'the other 14 refused with 503');
is(calls('a') - $before, 2, 'exactly 2 requests reached the upstream');

# both probes succeeded: closed, its window empty
$r = get('a', '/b/ok');
is($r->{status}, 200, 'both probes succeeded: closed');
is($r->{headers}{'x-breaker'}, 'closed', '$guard_breaker_state closed');
is(breaker_of('a')->{calls}, 1, 'the window starts empty');

# ---------------------------------------------------------------------------
# the slow-call ratio; connection errors

get('slow', '/b/sleep/250') for 1 .. 2;
is(reason(get('slow', '/b/ok')), '503 circuit_open',
   'two slow calls of two (slow_ms 100, slow_ratio 0.5): open');

for (1 .. 2) {
    is(get('conn', '/dead/x')->{status}, 502, 'connection refused: 502');
}
is(reason(get('conn', '/dead/x')), '503 circuit_open',
   'connection errors open the breaker');
is(breaker_of('conn')->{state}, 'open', 'guard_status: conn is open');

# ---------------------------------------------------------------------------
# shadow: transitions computed and recorded, nothing refused

for my $ten (qw(sh sht)) {
    get($ten, '/b/status/502') for 1 .. 2;
    $r = get($ten, '/b/ok');
    is($r->{status}, 200, "$ten: shadow, the call passes");
    is($r->{headers}{'x-breaker'}, 'open', "$ten: the breaker is open");
    is($r->{headers}{'x-reason'}, 'circuit_open',
       "$ten: \$guard_reason is the shadow refusal circuit_open");
}
$t->errlog_like(qr/shadow breaker "api" of tenant "sh": closed -> open/,
                'the shadow transition is logged');
$t->errlog_like(qr/shadow breaker "api" of tenant "sht": closed -> open/,
                'the tenant shadow transition is logged');
ok((status_doc()->{shadow}{circuit_open} // 0) >= 2,
   'guard_status counts the shadow refusals');

# ---------------------------------------------------------------------------
# the fallback: error_page 503 = @fallback

get('fb', '/fb/status/502') for 1 .. 2;
$before = calls('fb');
$r = get('fb', '/fb/ok');
is($r->{status}, 200, 'circuit_open sent to the fallback location');
is($r->{body}, "fallback\n", 'the fallback answer');
is($r->{headers}{'x-fallback'}, 'circuit_open',
   'the fallback sees $guard_reason circuit_open');
is(calls('fb'), $before, 'the upstream was not contacted');

# ---------------------------------------------------------------------------
# metrics

{
    my $doc = status_doc();
    my ($c) = grep { $_->{tenant} eq 'conn' } @{ $doc->{breakers} // [] };
    is($c->{state}, 'open', 'guard_status: breakers, state');
    is($c->{transitions}{open}, 1, 'guard_status: transitions');
    ok($c->{retry_after} >= 0, 'guard_status: retry_after');
    ok(($doc->{refused}{circuit_open} // 0) >= 14,
       'guard_status counts circuit_open refusals');

    my $prom = $t->get('/status?format=prometheus')->{body} // '';
    like($prom, qr/^guard_breaker_state\{tenant="conn",breaker="api"\} 1$/m,
         'Prometheus: guard_breaker_state 1 (open)');
    like($prom, qr/^guard_breaker_state\{tenant="b",breaker="api"\} 0$/m,
         'Prometheus: a closed breaker is 0');
    like($prom, qr/^guard_breaker_transitions_total\{tenant="a",breaker="api",to="open"\} 2$/m,
         'Prometheus: transitions to open');
    like($prom, qr/^guard_breaker_transitions_total\{tenant="a",breaker="api",to="half_open"\} 2$/m,
         'Prometheus: transitions to half-open');
}

# ---------------------------------------------------------------------------
# reload: the state is kept, a lowered open_for_max applies at once

get('rl', '/b/status/502') for 1 .. 2;
$r = get('rl', '/b/ok');
is(reason($r), '503 circuit_open', 'rl: open');
ok($r->{headers}{'retry-after'} >= 29, 'rl: Retry-After ~30');

policy('rl', bk(min_calls => 2, open_for => '2s', open_for_max => '2s'));
ok($t->reload, 'reload with open_for_max lowered to 2s');
$r = get('rl', '/b/ok');
is(reason($r), '503 circuit_open', 'after the reload: still open');
my $ra = $r->{headers}{'retry-after'} // 99;
ok($ra <= 2, "Retry-After $ra capped by the new open_for_max");
is(reason(get('a', '/b/ok')), '200 -', "a's closed breaker is still closed");
sleep(($ra > 2 ? 2 : $ra) + 0.1);
is(get('rl', '/b/ok')->{status}, 200, 'rl: half-open after the cap: a probe');
is(reason(get('conn', '/dead/x')), '502 -',
   'conn (open before the reload, open_for 1s): half-open, its probe passes');

# ---------------------------------------------------------------------------
# audit: every transition is a record in guardd's journal

my @tr;
wait_for(10, sub {
    @tr = grep { ($_->{kind} // '') eq 'breaker' }
          journal_records("$dir/journal");
    return @tr >= 12;
});
my %moves;
$moves{"$_->{tenant} $_->{breaker}{from}>$_->{breaker}{to}"}++ for @tr;
is($moves{'a closed>open'}, 1, 'audit: a closed -> open');
is($moves{'a open>half_open'}, 2, 'audit: a open -> half_open, twice');
is($moves{'a half_open>open'}, 1, 'audit: a half_open -> open');
is($moves{'a half_open>closed'}, 1, 'audit: a half_open -> closed');
my ($open) = grep { $_->{tenant} eq 'a' && $_->{breaker}{to} eq 'open'
                    && $_->{breaker}{from} eq 'closed' } @tr;
is_deeply([@{ $open->{breaker} }{qw(name calls failures slow window_ms)}],
          ['api', 6, 3, 0, 10000], 'audit: the counts that opened it');
is($open->{outcome}, 'transition', 'audit: outcome transition');
like($open->{id} // '', $UUID7, 'audit: an id of its own');
my ($sh) = grep { $_->{tenant} eq 'sh' } @tr;
is($sh->{outcome}, 'shadow_transition', 'audit: a shadow transition');
my ($slow) = grep { $_->{tenant} eq 'slow' } @tr;
is($slow->{breaker}{slow}, 2, 'audit: the slow calls that opened it');

# guardctl blocked lists circuit_open refusals like any other
SKIP: {
    skip 'no guardctl', 1 unless -x $guardctl;
    my $out = '';
    wait_for(10, sub {
        $out = `$guardctl blocked --dir $dir/journal --json 2>&1`;
        return $out =~ /circuit_open/;
    });
    like($out, qr/"reason":\s*"circuit_open"/,
         'guardctl blocked lists circuit_open refusals');
}

$t->errlog_ok;

# a bad name is a configuration error
{
    my $k = Guard::Test->new;
    $k->write_conf(http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        location / { guard on; guard_breaker "no spaces"; }
    }
EOF
    my ($rc, $out) = $k->test_conf;
    isnt($rc, 0, 'guard_breaker with a bad name fails nginx -t');
    like($out, qr/guard_breaker.*A-Z a-z 0-9 _ -/, 'and says why');
}

done_testing;
