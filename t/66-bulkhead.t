#!/usr/bin/perl

# The bulkhead queue (limits.concurrency.queue and queue_timeout), end to
# end, on two workers, against a slow backend the test controls (a Python
# server on 127.0.0.1 that sleeps as told and records the order in which
# requests reach it, and the nginx worker that sent each).
#
#   - with max 1 and queue 2: the queued requests reach the backend in the
#     order they came (FIFO), the one over the queue's depth is refused at
#     once with 429 concurrency_limited and Retry-After;
#   - a queued request whose wait passes queue_timeout gets 429;
#   - no leak: after a client abort of a queued request and of an active
#     one, an upstream error with an error_page redirect, a kill -9 of the
#     worker holding the slot (the master starts another; the slot comes
#     back), and a reload while requests are queued (the old worker serves
#     them), the full capacity is there again: the "capacity probe" sends
#     one slow request and three more, and expects two of those queued and
#     served and the third refused at once (1 slot + 2 places, no more, no
#     less).
#
# The kill -9 makes the master log "[alert] worker process PID exited on
# signal 9": allow_signal_exit (Guard::Test) expects that one line for
# that one pid; errlog_ok fails on any other alert.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(sleep time);
use Guard::Test;

my $t = Guard::Test->new;
my $dir = $t->dir;
my $exp = int(time) + 3600;
my $JSON = JSON::PP->new->canonical;

# --- the backend ------------------------------------------------------------

$t->write_file('backend.py', <<'EOF');
import sys, time, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs

port, log = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        with lock:
            with open(log, 'a') as f:
                f.write('%s %s\n' % (q.get('id', ['-'])[0],
                                     self.headers.get('X-Worker', '-')))
        time.sleep(int(q.get('ms', ['0'])[0]) / 1000.0)
        body = ('ok %s\n' % q.get('id', ['-'])[0]).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass
    def log_message(self, *a):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(('127.0.0.1', port), H).serve_forever()
EOF

my $BLOG = "$dir/backend.log";
my @ports = map { $t->port($_) } 0 .. 2;    # picked here, not in the child
my $backend = fork // die "fork: $!";
if (!$backend) {
    { exec $t->python, "$dir/backend.py", $ports[1], $BLOG; }
    POSIX::_exit(127);
}
END { kill 'KILL', $backend if $backend; }

ok(wait_for_port($t->port(1)), 'the backend listens');

sub wait_for_port {
    my ($port) = @_;
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        return 1 if $s;
        sleep 0.05;
    }
    return 0;
}

# the ids the backend saw, in order, and the worker of each
sub seen {
    my @l = split /\n/, $t->read_file($BLOG) // '';
    return map { [split / /] } @l;
}

sub seen_ids {
    my ($prefix) = @_;
    return join ' ', grep { /^\Q$prefix\E/ } map { $_->[0] } seen();
}

# --- nginx ------------------------------------------------------------------

sub policy {
    my ($tenant, %conc) = @_;
    $t->write_file("pol/$tenant.json", $JSON->encode({
        tenant => $tenant, limits => { concurrency => { %conc } } }));
}

policy('bh', max => 1, queue => 2, queue_timeout => '5s');
policy('to', max => 1, queue => 1, queue_timeout => '300ms');
policy('nq', max => 1);

$t->write_conf(workers => 2, http => <<'EOF');
    guard_policies %%DIR%%/pol;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        proxy_set_header X-Worker $pid;
        add_header X-Reason $guard_reason always;

        location = /status { guard_status; }

        location / {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        # an upstream that refuses connections, and a fallback reached by
        # an internal redirect to other Guard settings
        location /broken/ {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_2%%;
            error_page 502 = @fallback;
        }
        location @fallback {
            guard on;
            guard_limit_headers off;
            return 200 "fallback\n";
        }
    }
EOF

$t->run;

my %tok;
{
    my @ten = qw(bh to nq);
    my @t = $t->mint(map {
        { kid => 'hs256', claims => { sub => 'u', tenant_id => $_,
                                      exp => $exp } }
    } @ten);
    @tok{@ten} = @t;
}

# --- parallel clients -------------------------------------------------------

# start a request, return its socket (and when it was sent)
my $cur = $t;    # the nginx the requests go to

sub start {
    my ($tenant, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $cur->port(0), Proto => 'tcp')
        or die "connect: $@";
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
           . "Authorization: Bearer $tok{$tenant}\r\n"
           . "Connection: close\r\n\r\n";
    $s->flush;
    return { sock => $s, sent => time };
}

# the response of a started request (waits up to $timeout seconds)
sub finish {
    my ($c, $timeout) = @_;
    my $sel = IO::Select->new($c->{sock});
    my $raw = '';
    my $end = time + ($timeout // 10);
    while (time < $end) {
        last unless $sel->can_read($end - time);
        my $n = sysread $c->{sock}, my $buf, 65536;
        last unless $n;
        $raw .= $buf;
    }
    close $c->{sock};
    my $r = Guard::Test::parse_response($raw);
    $r->{took} = time - $c->{sent};
    return $r;
}

sub status_of { $_[0]{status} // 'none' }

# start requests of tenant bh one after the other: [path, pause after it]
sub launch {
    my @c;
    for my $x (@_) {
        push @c, start('bh', $x->[0]);
        sleep $x->[1];
    }
    return @c;
}

# 1 slot and 2 places, no more and no less: one slow request, then three
# (two wait and are served in order, the third is refused at once)
my $probe = 0;

sub capacity_ok {
    my ($name) = @_;
    $probe++;
    my $p = "p$probe";
    my @c = launch(["/slow?id=$p-a&ms=600", 0.15],
                   ["/slow?id=$p-q1&ms=50", 0.1],
                   ["/slow?id=$p-q2&ms=50", 0.1]);
    my $over = finish(start('bh', "/slow?id=$p-over&ms=0"), 5);
    my @r = map { finish($_) } @c;

    subtest "capacity: 1 slot and 2 places ($name)" => sub {
        is(join(' ', map { status_of($_) } @r), '200 200 200',
           'the slow request and the two queued ones are served');
        problem_ok($over, 'concurrency_limited', 'the fourth is refused');
        cmp_ok($over->{took}, '<', 0.4, 'at once');
        is(seen_ids("$p-"), "$p-a $p-q1 $p-q2", 'in the order they came');
    };
}

# --- FIFO, queue full, Retry-After --------------------------------------------

{
    my ($a, $b, $c) = launch(['/slow?id=f-a&ms=800', 0.2],
                             ['/slow?id=f-b&ms=100', 0.1],
                             ['/slow?id=f-c&ms=100', 0.1]);
    my $d = finish(start('bh', '/slow?id=f-d&ms=0'), 5);

    problem_ok($d, 'concurrency_limited',
               'max 1, queue 2: the fourth request is refused');
    cmp_ok($d->{took}, '<', 0.4, 'at once (' . sprintf('%.3f', $d->{took})
                                  . ' s), without waiting');
    is($d->{headers}{'retry-after'}, '1', 'with Retry-After: 1');

    my @r = map { finish($_) } $a, $b, $c;
    is(join(' ', map { status_of($_) } @r), '200 200 200',
       'the active request and both queued ones are served');
    like($r[1]{body}, qr/^ok f-b/, 'the first queued one has its answer');
    cmp_ok($r[1]{took}, '>', 0.4, 'it waited for the slot ('
                                  . sprintf('%.3f', $r[1]{took}) . ' s)');
    is(seen_ids('f-'), 'f-a f-b f-c',
       'the backend saw them in the order they came (FIFO)');
}

# --- queue_timeout ------------------------------------------------------------

{
    my $a = start('to', '/slow?id=t-a&ms=1500');
    sleep 0.2;
    my $b = finish(start('to', '/slow?id=t-b&ms=0'), 5);
    problem_ok($b, 'concurrency_limited',
               'a queued request whose wait passes queue_timeout (300ms)');
    ok($b->{took} > 0.25 && $b->{took} < 1.2,
       'refused after its wait (' . sprintf('%.3f', $b->{took}) . ' s)');
    is($b->{headers}{'retry-after'}, '1', 'with Retry-After: 1');
    is(status_of(finish($a)), 200, 'the active one is served');
    is(seen_ids('t-'), 't-a', 'the timed-out request never reached the '
                              . 'backend');
}

# --- queue 0: refused at once, as before -------------------------------------

{
    my $a = start('nq', '/slow?id=n-a&ms=500');
    sleep 0.2;
    my $b = finish(start('nq', '/slow?id=n-b&ms=0'), 5);
    problem_ok($b, 'concurrency_limited', 'no queue: refused at once');
    cmp_ok($b->{took}, '<', 0.3, 'without waiting');
    is(status_of(finish($a)), 200, 'the active one is served');
}

capacity_ok('to begin with');

# --- client aborts ------------------------------------------------------------

{
    # a queued request whose client goes away: its place comes back
    my ($a, $b) = launch(['/slow?id=ab-a&ms=1000', 0.15],
                         ['/slow?id=ab-b&ms=0', 0.15]);
    close $b->{sock};
    sleep 0.15;
    my ($c, $d) = launch(['/slow?id=ab-c&ms=0', 0.1],
                         ['/slow?id=ab-d&ms=0', 0.1]);
    my $e = finish(start('bh', '/slow?id=ab-e&ms=0'), 5);
    problem_ok($e, 'concurrency_limited',
               'queue full again with two waiting after the abort');
    my @r = map { finish($_) } $a, $c, $d;
    is(join(' ', map { status_of($_) } @r), '200 200 200',
       'an aborted queued request gave its place back: two more waited');
    is(seen_ids('ab-'), 'ab-a ab-c ab-d',
       'the aborted one never reached the backend');
}

capacity_ok('after the abort of a queued request');

{
    # an active request whose client goes away: its slot comes back
    my $a = start('bh', '/slow?id=aa-a&ms=1500');
    sleep 0.3;
    close $a->{sock};
    sleep 0.2;
}

capacity_ok('after the abort of an active request');

# --- upstream error and internal redirect ---------------------------------------

{
    my $r = finish(start('bh', '/broken/x'), 5);
    is(status_of($r), 200, 'an upstream error, redirected to a fallback');
    like($r->{body}, qr/^fallback/, 'the fallback answered');
}

capacity_ok('after an upstream error and an internal redirect');

# --- kill -9 of the worker that holds the slot ---------------------------------

# two workers: the queued request is in the killed worker (gone with it)
# or in the other one, whose poll finds the dead owner and takes the slot

{
    my $a = start('bh', '/slow?id=k-a&ms=3000');
    my ($w) = Guard::Test::wait_for(3, sub {
        my ($e) = grep { $_->[0] eq 'k-a' } seen();
        return $e ? $e->[1] : 0;
    });
    ok($w, "the slot is held by worker $w");
    my $b = start('bh', '/slow?id=k-b&ms=0');
    sleep 0.1;

    $t->allow_signal_exit($w, 9);
    ok(kill('KILL', $w), "kill -9 $w");
    my $ra = finish($a, 5);
    ok(!defined $ra->{status}, 'its client sees the connection closed');
    ok(Guard::Test::wait_for(5, sub { $t->worker_pids == 2 && !$t->pid_alive($w) }),
       'the master started another worker');

    # the queued one was in the dead worker (gone with it) or in the
    # other: then it gets the slot once the dead owner is found out
    my $rb = finish($b, 5);
    my $bseen = seen_ids('k-b');
    ok((!defined $rb->{status} && $bseen eq '')
       || (status_of($rb) eq '200' && $bseen eq 'k-b'),
       'the queued request: gone with the killed worker, or served ('
       . status_of($rb) . ')');
    cmp_ok($rb->{took}, '<', 4, 'within a bounded time');
}

# the owners of a tenant's entries are checked at most every 100 ms (and
# the killed worker's own waiters checked them last): the slot comes back
# within that bound
sleep 0.2;
capacity_ok('after kill -9 of the worker holding the slot');
$t->errlog_like(qr/concurrency slot\(s\) and place\(s\) of exited worker\(s\) given back, tenant "bh"/,
                'the dead worker\'s slot was given back (logged)');

# --- reload while requests are queued -----------------------------------------

{
    my ($a, $b, $c) = launch(['/slow?id=r-a&ms=800', 0.15],
                             ['/slow?id=r-b&ms=100', 0.1],
                             ['/slow?id=r-c&ms=100', 0.1]);
    ok($t->reload, 'reload while two requests wait');
    my @r = map { finish($_) } $a, $b, $c;
    is(join(' ', map { status_of($_) } @r), '200 200 200',
       'the old worker served its queued requests');
    is(seen_ids('r-'), 'r-a r-b r-c', 'in order');
}

capacity_ok('after the reload');

# --- the metrics -------------------------------------------------------------

{
    my $r = $t->get('/status?format=prometheus');
    my %m = map { /^(\w+) (\d+)$/ ? ($1 => $2) : () } split /\n/, $r->{body};
    is($m{guard_concurrency_waiting}, 0, 'guard_concurrency_waiting: 0 now');
    cmp_ok($m{guard_concurrency_queued_total} // 0, '>=', 15,
           'guard_concurrency_queued_total counts the queued requests ('
           . ($m{guard_concurrency_queued_total} // 'none') . ')');
    is($m{guard_concurrency_queue_timeouts_total}, 1,
       'guard_concurrency_queue_timeouts_total: the one timeout');
}

$t->errlog_ok;

# --- kill -9 of the one worker, with a slot and two queue places --------------

# One worker: the slot and both queued requests are certainly the killed
# worker's.  The master starts a new worker; its first request finds the
# slot taken by a dead process and gives back the slot and both places.
{
    my $k = Guard::Test->new;
    $k->write_conf(workers => 1, http => <<"EOF");
    guard_policies $dir/pol;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys ${\ $t->jwt_keys}/jwks.json;
        proxy_set_header X-Worker \$pid;
        location / {
            guard on;
            proxy_pass http://127.0.0.1:$ports[1];
        }
    }
EOF
    $k->run;
    $cur = $k;

    my ($w) = $k->worker_pids;
    my @c = launch(['/slow?id=o-a&ms=3000', 0.15],
                   ['/slow?id=o-b&ms=0', 0.1],
                   ['/slow?id=o-c&ms=0', 0.1]);
    is(seen_ids('o-'), 'o-a', 'one worker: one request active, two queued');

    $k->allow_signal_exit($w, 9);
    ok(kill('KILL', $w), "kill -9 $w");
    is(join(' ', map { status_of(finish($_, 5)) } @c), 'none none none',
       'their clients see the connection closed');
    ok(Guard::Test::wait_for(5, sub { $k->worker_pids == 1
                                      && !$k->pid_alive($w) }),
       'the master started another worker');

    sleep 0.2;    # the 100 ms between two checks of the owners, as above
    capacity_ok('one worker, after kill -9 with a slot and two places held');
    $k->errlog_like(qr/guard: 3 concurrency slot\(s\) and place\(s\) of exited worker\(s\) given back, tenant "bh"/,
                    'the slot and both places were given back (logged)');
    $k->errlog_ok('one worker: error.log has no alert but the expected one');
    $k->stop;
}

done_testing;
