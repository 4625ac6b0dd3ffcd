#!/usr/bin/perl

# Rate limits from the policy files, end to end: GCRA counts at the edge of
# a burst (pipelined on one connection, so that the requests arrive within
# a few milliseconds), Retry-After and the RateLimit fields, recovery over
# time, per-subject keys, route classes (methods and path globs), several
# rules on one request (checked before any is charged), the _default.json
# fallback, counters shared by two workers and kept across reloads,
# guard_limit_headers off, $guard_limit_remaining, shadow mode, a zone too
# small for every key, and bad policy files (nginx -t and reload).  Also:
# a rule raised or lowered by a reload (the key's use converted, never a
# longer wait than the new rule allows), requests refused by the
# concurrency stage given their rate charges back, the RateLimit t=
# parameter of draft-ietf-httpapi-ratelimit-headers on every response,
# and a high-rate rule under load on two workers (no false refusals).
#
# GCRA: T = period / requests; from idle burst + 1 requests pass back to
# back, then one every T.  "requests: 2, period: 1m" with the default
# burst 0 therefore allows ONE request and refuses the second (they are
# not T = 30 s apart); rules meant to let N requests through back to back
# below say "burst": N - 1.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use POSIX qw(ceil);
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use Guard::Test;

my $t = Guard::Test->new;
my $dir = $t->dir;
my $GUARDCTL = $t->repo . '/policy-engine/build/guardctl';
my $exp = int(time) + 3600;

# ---------------------------------------------------------------------------
# helpers

my $JSON = JSON::PP->new->canonical->pretty;

sub policy {
    my ($inst, $pdir, $file, $doc) = @_;
    $inst->write_file("$pdir/$file", ref $doc ? $JSON->encode($doc) : $doc);
}

sub rule {
    my ($name, $requests, $period, %o) = @_;
    return { name => $name, requests => $requests, period => $period, %o };
}

sub tenant_policy {
    my ($tenant, @rules) = @_;
    my %top = ref $rules[0] eq 'HASH' && !exists $rules[0]{name}
            ? %{ shift @rules } : ();
    return { tenant => $tenant, %top, limits => { rate => \@rules } };
}

# the version guardctl computes for a directory (undef without guardctl)
sub guardctl_version {
    my ($pdir) = @_;
    return undef unless -x $GUARDCTL;
    my $out = `$GUARDCTL policy check $pdir 2>/dev/null`;
    return $out =~ /version: ([0-9a-f]{64})/ ? $1 : undef;
}

# Split a pipelined response stream; every response here has a
# Content-Length (empty_gif and the problem+json refusals).
sub split_responses {
    my ($raw) = @_;
    my @out;
    while (length $raw) {
        my $i = index $raw, "\r\n\r\n";
        last if $i < 0;
        my $head = substr $raw, 0, $i;
        my ($cl) = $head =~ /^Content-Length:[ \t]*(\d+)\r?$/mi;
        if (!defined $cl) {
            push @out, { status => undef, error => "no Content-Length: $head" };
            last;
        }
        my $chunk = substr $raw, 0, $i + 4 + $cl, '';
        push @out, Guard::Test::parse_response($chunk);
    }
    return @out;
}

# $n GETs of $path pipelined on one connection (the last one closes it).
sub pipeline {
    my ($inst, $path, $tok, $n) = @_;
    my $req = '';
    for my $i (1 .. $n) {
        $req .= "GET $path HTTP/1.1\r\nHost: localhost\r\n"
              . "Authorization: Bearer $tok\r\n"
              . ($i == $n ? "Connection: close\r\n" : '') . "\r\n";
    }
    my $r = $inst->raw_request($req);
    diag("pipeline $path: $r->{error}") if defined $r->{error};
    return split_responses($r->{raw});
}

sub req {
    my ($inst, $method, $path, $tok, %o) = @_;
    my @h = (Authorization => "Bearer $tok");
    push @h, 'X-Tenant-Id' => $o{tenant} if defined $o{tenant};
    return $inst->http($method, $path, headers => \@h,
                       ($method eq 'POST' ? (body => '') : ()));
}

# the RateLimit field: (name, r, t), or () if absent
sub ratelimit {
    my ($r) = @_;
    my $v = $r->{headers}{ratelimit} // return ();
    return $v =~ /^"([^"]+)";r=(\d+);t=(\d+)$/ ? ($1, $2, $3) : ('?', -1, -1);
}

sub statuses { join ' ', map { $_->{status} // 'none' } @_ }

sub reason_of {
    my ($r) = @_;
    return (($r->{status} // 'none') . ' '
            . ((eval { decode_json($r->{body} // '') } || {})->{reason}
               // 'none')) =~ s/^429 //r;
}

# The Retry-After a refusal must carry: ceil(ahead - e), where ahead is
# the wait in seconds right after the charging request sent at $since,
# and e the time nginx saw pass since then: at most what the client saw
# (plus 2 ms for nginx's millisecond clock).  So [ceil(ahead - elapsed),
# ceil(ahead)]: one exact value unless a whole second boundary passed.
sub within {
    my ($ahead, $since) = @_;
    my $lo = ceil($ahead - (time - $since + 0.002));
    $lo = 1 if $lo < 1;
    return [$lo, ceil($ahead)];
}

# A rate-limit refusal as a whole: the harness's problem_ok (429,
# problem+json with reason rate_limited, the decision id, no
# WWW-Authenticate), then Retry-After and the RateLimit fields.
# %o: policy => the RateLimit-Policy value, name => the tripped rule,
# retry => [min, max] or a number.
sub limited_ok {
    my ($r, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($lo, $hi) = ref $o{retry} ? @{ $o{retry} } : ($o{retry}, $o{retry});
    subtest $name => sub {
        problem_ok($r, 'rate_limited', '429 rate_limited refusal');
        my $ra = $r->{headers}{'retry-after'};
        like($ra // '', qr/^\d+$/, 'Retry-After is a number of seconds');
        $ra = -1 unless defined $ra && $ra =~ /^\d+$/;
        if (defined $lo) {
            ok($ra >= $lo && $ra <= $hi,
               "Retry-After $ra is " . ($lo == $hi ? $lo : "$lo..$hi"));
        }
        is($r->{headers}{'ratelimit-policy'}, $o{policy},
           "RateLimit-Policy $o{policy}") if defined $o{policy};
        my ($n, $rem, $reset) = ratelimit($r);
        is($n, $o{name}, "RateLimit names \"$o{name}\"") if defined $o{name};
        is($rem, 0, 'RateLimit r=0');
        is($reset, $ra, 'RateLimit t equals Retry-After');
        is($r->{headers}{'x-remaining'}, $rem,
           '$guard_limit_remaining equals RateLimit r=');
        is($r->{headers}{'x-decision'}, 'deny', '$guard_decision deny');
        is($r->{headers}{'x-reason'}, 'rate_limited', '$guard_reason rate_limited');
    };
}

# An allowed response.  %o: name => the reported rule, r => remaining,
# t => the RateLimit t= (a number or [min, max]), policy =>
# RateLimit-Policy; none => 1: no rule applied (no fields).
sub allowed_ok {
    my ($r, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, 200, 'status 200')
            or diag(($r->{status} // 'none') . ' ' . ($r->{body} // ''));
        ok(!defined $r->{headers}{'retry-after'}, 'no Retry-After');
        if ($o{none}) {
            ok(!defined $r->{headers}{ratelimit}, 'no RateLimit');
            ok(!defined $r->{headers}{'ratelimit-policy'}, 'no RateLimit-Policy');
            ok(!defined $r->{headers}{'x-remaining'},
               '$guard_limit_remaining is empty');
            is($1, '', '$guard_limit_remaining passed upstream is empty')
                if ($r->{body} // '') =~ /^\S+ \S+ rem=(\d*)\n\z/;
            return;
        }
        is($r->{headers}{'ratelimit-policy'}, $o{policy},
           "RateLimit-Policy $o{policy}") if defined $o{policy};
        my ($n, $rem, $reset) = ratelimit($r);
        is($n, $o{name}, "RateLimit names \"$o{name}\"") if defined $o{name};
        is($rem, $o{r}, "RateLimit r=$o{r}") if defined $o{r};
        if (defined $o{t}) {
            my ($lo, $hi) = ref $o{t} ? @{ $o{t} } : ($o{t}, $o{t});
            ok($reset >= $lo && $reset <= $hi, "RateLimit t=$reset is "
               . ($lo == $hi ? $lo : "$lo..$hi")
               . ' (seconds until one more request is allowed)');
        }
        is($r->{headers}{'x-remaining'}, $rem,
           '$guard_limit_remaining equals RateLimit r=');
        is($1, $rem, '$guard_limit_remaining passed upstream equals RateLimit r=')
            if ($r->{body} // '') =~ /^\S+ \S+ rem=(\d*)\n\z/;
    };
}

# ---------------------------------------------------------------------------
# the policies and the configuration

my $P = "$dir/pol";

policy($t, 'pol', 'burst.json',
       tenant_policy('burst', rule('api', 10, '1s', burst => 5)));
policy($t, 'pol', 'slow0.json',
       tenant_policy('slow0', rule('slow', 2, '1m')));
policy($t, 'pol', 'slow1.json',
       tenant_policy('slow1', rule('slow', 2, '1m', burst => 1)));
policy($t, 'pol', 'ceil.json',
       tenant_policy('ceil', rule('c', 40, '1m')));
policy($t, 'pol', 'subj.json',
       tenant_policy('subj', rule('per-user', 2, '1m', burst => 1,
                                  per => 'subject')));
policy($t, 'pol', 'routes.json', tenant_policy('routes',
       rule('orders-create', 1, '1m',
            match => { methods => ['POST'], path => '/api/*/orders' }),
       rule('files', 1, '1m', match => { path => '/files/**' })));
policy($t, 'pol', 'multi.json', tenant_policy('multi',
       rule('tenant-wide', 100, '1h', burst => 49),
       rule('per-user', 2, '1m', burst => 1, per => 'subject',
            match => { path => '/multi/b/**' })));
policy($t, 'pol', 'multi2.json', tenant_policy('multi2',
       rule('strict', 1, '1m', match => { path => '/m2/strict/**' }),
       rule('generous', 100, '1h', burst => 49, per => 'subject')));
policy($t, 'pol', '_default.json',
       { limits => { rate => [ rule('default', 3, '1m', burst => 2) ] } });
policy($t, 'pol', 'workers.json',
       tenant_policy('workers', rule('w5', 5, '1m', burst => 4)));
policy($t, 'pol', 'keep.json',
       tenant_policy('keep', rule('k3', 3, '1m', burst => 2)));
policy($t, 'pol', 'unrelated.json',
       tenant_policy('unrelated', rule('u', 10, '1m')));
policy($t, 'pol', 'quiet.json',
       tenant_policy('quiet', rule('q', 2, '1m', burst => 1)));
policy($t, 'pol', 'shadow-rule.json',
       tenant_policy('shadow-rule', rule('probe', 1, '1m', shadow => JSON::PP::true)));
policy($t, 'pol', 'shadow-all.json', tenant_policy('shadow-all',
       { shadow => JSON::PP::true },
       rule('one', 1, '1m', match => { path => '/sa/one/**' }),
       rule('two', 1, '1m', match => { path => '/sa/two/**' })));
policy($t, 'pol', 'raise.json', tenant_policy('raise', rule('rl', 1, '1h')));
policy($t, 'pol', 'lower.json',
       tenant_policy('lower', rule('lw', 100, '1h', burst => 99)));
policy($t, 'pol', 'bulk.json', { tenant => 'bulk', limits => {
       rate => [ rule('bk', 5, '1h', burst => 4) ],
       concurrency => { max => 1 } } });
policy($t, 'pol', 'bind-a.json', tenant_policy('bind-a', rule('a-rule', 1, '1m')));
policy($t, 'pol', 'bind-b.json', tenant_policy('bind-b', rule('b-rule', 1, '1m')));

my $HEADERS = <<'EOF';
        add_header X-Remaining $guard_limit_remaining always;
        add_header X-Decision $guard_decision always;
        add_header X-Reason $guard_reason always;
        add_header X-Version $guard_policy_version always;
        add_header X-Pid $pid always;
EOF

$t->write_conf(workers => 2, http => <<"EOF");
    guard_policies %%DIR%%/pol;
    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        guard_jwt_keys %%KEYS%%/jwks.json;
        proxy_set_header X-Guard-Remaining \$guard_limit_remaining;
$HEADERS
        location /gif/   { guard on; empty_gif; }
        location /quiet/ { guard on; guard_limit_headers off;
                           proxy_pass http://127.0.0.1:%%PORT_1%%; }
        location /bound/ { guard on; guard_tenant \$http_x_tenant_id;
                           proxy_pass http://127.0.0.1:%%PORT_1%%; }
        location /       { guard on; proxy_pass http://127.0.0.1:%%PORT_1%%; }
    }
    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200
            "\$request_method \$uri rem=\$http_x_guard_remaining\\n"; }
    }
EOF

{
    my ($rc, $out) = $t->test_conf;
    is($rc, 0, 'configuration with the policy directory is valid') or diag $out;
}
$t->run;

# every token in one mint call: tenant/subject -> token
my @who = (map({ ['burst', "b$_"] } 1 .. 3),
           ['slow0', 's'], ['slow1', 's'], ['ceil', 'c'],
           ['subj', 'A'], ['subj', 'B'],
           ['routes', 'r'],
           ['multi', 'U1'], ['multi', 'U2'], ['multi', 'U3'],
           ['multi2', 'V1'],
           ['d1', 'x'], ['d2', 'x'],
           ['workers', 'w'], ['keep', 'k'], ['quiet', 'q'],
           ['shadow-rule', 's'], ['shadow-all', 's'],
           ['raise', 'x'], ['lower', 'x'], ['bulk', 'u']);
my %tok;
{
    my @t = $t->mint(map {
        { kid => 'hs256', claims => { sub => $_->[1], tenant_id => $_->[0],
                                      exp => $exp } }
    } @who);
    $tok{"$who[$_][0]/$who[$_][1]"} = $t[$_] for 0 .. $#who;
    $tok{bind} = $t->mint({ kid => 'hs256',
                            claims => { sub => 'bb', exp => $exp,
                                        tenant_id => ['bind-a', 'bind-b'] } });
}

sub get  { my ($path, $who, %o) = @_; req($t, 'GET',  $path, $tok{$who}, %o) }
sub post { my ($path, $who, %o) = @_; req($t, 'POST', $path, $tok{$who}, %o) }

my $version = guardctl_version($P);

# --- exact counts at the edge of a burst ------------------------------------

{
    my $api = '"api";q=10;w=1';
    my $ta = time;
    my @r = pipeline($t, '/gif/x', $tok{'burst/b1'}, 20);
    my $tb = time;
    my @rem;
    is(scalar @r, 20, 'burst: 20 pipelined responses');

    # nginx answers the 20 within a few ms: exactly 6 pass.  Only if the
    # machine stalled the pipeline for 100 ms (measured from here, which
    # bounds what nginx saw) could one more have passed per 100 ms.
    my $extra = int(($tb - $ta) * 10);
    my $k1 = () = statuses(@r) =~ /200/g;
    if ($extra) {
        my $st = statuses(@r);
        my $k = () = $st =~ /200/g;
        ok($st =~ /^(?:200 ){6}/ && $k >= 6 && $k <= 6 + $extra,
           "burst 10/s, burst 5: 6 x 200 first, and at most $extra more "
           . '(the pipeline took ' . int(($tb - $ta) * 1000) . ' ms)')
            or diag $st;
    }

    SKIP: {
        skip 'burst: the pipeline was stalled, exact counts not checked', 14
            if $extra;
        is(statuses(@r), join(' ', (200) x 6, (429) x 14),
           'burst 10/s, burst 5: exactly 6 x 200, then 14 x 429, in order');

        @rem = map { (ratelimit($_))[1] // 'none' } @r[0 .. 5];
        is("@rem", '5 4 3 2 1 0',
           'burst: RateLimit r= on the 200s: 5 4 3 2 1 0');
        for my $i (0 .. 5) {
            my $ok = ($r[$i]{headers}{'content-type'} // '') eq 'image/gif'
                  && length($r[$i]{body}) == 43
                  && ($r[$i]{headers}{'ratelimit-policy'} // '') eq $api
                  && ($r[$i]{headers}{'x-remaining'} // '') eq (5 - $i)
                  && ($r[$i]{headers}{'x-decision'} // '') eq 'allow'
                  && !defined $r[$i]{headers}{'retry-after'};
            ok($ok, "burst: 200 #" . ($i + 1) . ": the gif, $api, "
                  . "\$guard_limit_remaining " . (5 - $i) . ", no Retry-After")
                or diag explain $r[$i]{headers};
        }
        for my $i (6, 7, 19) {
            limited_ok($r[$i], 'burst: 429 #' . ($i - 5) . ' of 14',
                       policy => $api, name => 'api', retry => 1);
        }
        my @ra = map { $_->{headers}{'retry-after'} // 'none' } @r[6 .. 19];
        is("@ra", join(' ', (1) x 14), 'burst: every 429 has Retry-After: 1');
        my @reason = map {
            (eval { decode_json($_->{body}) } || {})->{reason} // 'none'
        } @r[6 .. 19];
        is("@reason", join(' ', ('rate_limited') x 14),
           'burst: every 429 is problem+json with reason rate_limited');
        my %ids = map { ($_->{headers}{'guard-decision-id'} // '') => 1 }
                  @r[6 .. 19];
        is(scalar keys %ids, 14, 'burst: 14 distinct decision ids');
    }

    # --- recovery: 1 request per 100 ms, the full burst after 600 ms ---------

    # The first request of the burst above set the TAT to its arrival
    # + 600 ms; g ms after that arrival floor(g / 100) requests pass.
    # nginx saw g somewhere between (this pipeline's start - the end of
    # the burst's) and (this pipeline's end - the start of the burst's):
    # the count must lie in that window, whatever the machine's load.
    sleep 0.25;
    my $tc = time;
    @r = pipeline($t, '/gif/x', $tok{'burst/b2'}, 5);
    my $td = time;
    my ($klo, $khi) = (int(($tc - $tb) * 10), int(($td - $ta) * 10));
    $klo -= $k1 - 6 if $k1 > 6;     # a stalled burst let more through
    $khi = 5 if $khi > 5;
    my $st = statuses(@r);
    my $k = () = $st =~ /200/g;
    # (allowed first, then refused: unless the pipeline itself took 100 ms)
    ok(($st =~ /^(?:200(?: |$))*(?:429(?: |$))*$/ || $td - $tc >= 0.1)
       && $k >= $klo && $k <= $khi,
       "recovery: 250 ms later 1 more per 100 ms elapsed ($klo..$khi)")
        or diag(sprintf "%s; %.0f..%.0f ms after the burst began", $st,
                        ($tc - $tb) * 1000, ($td - $ta) * 1000);
    # (a pipeline slower than 100 ms may interleave them: the checks
    # take the last allowed before the first refusal, and that refusal)
    my ($first) = grep { ($r[$_]{status} // 0) != 200 } 0 .. $#r;
    @rem = map { (ratelimit($_))[1] // 'none' } @r[0 .. ($first // 5) - 1];
    is($rem[-1], 0, "recovery: RateLimit r= down to 0 (@rem)") if @rem;
    SKIP: {
        skip "recovery: $khi ms windows elapsed, none refused", 1
            unless defined $first;
        limited_ok($r[$first], 'recovery: then 429 again', name => 'api',
                   retry => 1);
    }

    # after 600 ms of silence the burst is full again: 6 pass, then one
    # more per 100 ms the pipeline itself took (none, unless the machine
    # stalled the pipeline)
    sleep 0.75;
    my $te = time;
    @r = pipeline($t, '/gif/x', $tok{'burst/b3'}, 8);
    my $more = int((time - $te) * 10);
    $st = statuses(@r);
    $k = () = $st =~ /200/g;
    ok(($st =~ /^(?:200(?: |$))*(?:429(?: |$))*$/ || $more)
       && $k >= 6 && $k <= 6 + $more,
       'recovery: after a pause of 750 ms all 6 are available again')
        or diag $st;
    @rem = map { (ratelimit($_))[1] // 'none' } @r[0 .. 5];
    is("@rem", '5 4 3 2 1 0', 'recovery: RateLimit r= 5 4 3 2 1 0 again')
        if $more == 0;
}

# --- Retry-After of a slow rule ------------------------------------------------

{
    # 2 per minute, burst 0: T = 30 s, the second request is too early
    my $since = time;
    my $r = get('/slow', 'slow0/s');
    allowed_ok($r, 'slow, burst 0: the first request is allowed',
               policy => '"slow";q=2;w=60', name => 'slow', r => 0);
    limited_ok(get('/slow', 'slow0/s'),
               'slow, burst 0: the second is refused, Retry-After 30',
               policy => '"slow";q=2;w=60', name => 'slow',
               retry => within(30, $since));

    # 2 per minute, burst 1: two back to back, the third waits T = 30 s
    $since = time;
    # t= is the wait for one more request (draft-ietf-httpapi-ratelimit-
    # headers-10, 4.1.2), on allowed responses as on refusals: 30 s each
    # time here, not the 60 s until the bucket is full again
    allowed_ok(get('/slow', 'slow1/s'), 'slow, burst 1: request 1 allowed',
               name => 'slow', r => 1, t => 30);
    allowed_ok(get('/slow', 'slow1/s'), 'slow, burst 1: request 2 allowed',
               name => 'slow', r => 0, t => within(30, $since));
    limited_ok(get('/slow', 'slow1/s'),
               'slow, burst 1: request 3 refused, Retry-After 30',
               policy => '"slow";q=2;w=60', name => 'slow',
               retry => within(30, $since));

    # 40 per minute: T = 1.5 s, the wait is rounded up, to 2
    $since = time;
    allowed_ok(get('/c', 'ceil/c'), 'ceil: request 1 allowed',
               policy => '"c";q=40;w=60', name => 'c', r => 0);
    limited_ok(get('/c', 'ceil/c'),
               'ceil: request 2 refused, Retry-After 2 (1.5 s rounded up)',
               policy => '"c";q=40;w=60', name => 'c',
               retry => within(1.5, $since));
}

# --- per-subject keys ----------------------------------------------------------

{
    my %o = (policy => '"per-user";q=2;w=60', name => 'per-user');
    my $since = time;
    allowed_ok(get('/s', 'subj/A'), 'per subject: A 1', %o, r => 1);
    allowed_ok(get('/s', 'subj/A'), 'per subject: A 2', %o, r => 0);
    limited_ok(get('/s', 'subj/A'), 'per subject: A 3 refused', %o,
               retry => within(30, $since));
    $since = time;
    allowed_ok(get('/s', 'subj/B'), 'per subject: B (same tenant) 1', %o, r => 1);
    allowed_ok(get('/s', 'subj/B'), 'per subject: B 2', %o, r => 0);
    limited_ok(get('/s', 'subj/B'), 'per subject: B 3 refused', %o,
               retry => within(30, $since));
}

# --- route classes -------------------------------------------------------------

my $orders_since;

{
    my %orders = (policy => '"orders-create";q=1;w=60', name => 'orders-create');
    for my $i (1 .. 3) {
        my $r = get('/api/x/orders', 'routes/r');
        allowed_ok($r, "routes: GET /api/x/orders #$i: no rule applies", none => 1);
    }
    $orders_since = time;
    my $r = post('/api/x/orders', 'routes/r');
    allowed_ok($r, 'routes: POST /api/x/orders allowed once', %orders, r => 0);
    is($r->{body}, "POST /api/x/orders rem=0\n",
       'routes: the backend got the POST, and $guard_limit_remaining 0');
    limited_ok(post('/api/x/orders', 'routes/r'),
               'routes: POST /api/x/orders again: refused', %orders,
               retry => within(60, $orders_since));
    limited_ok(post('/api/other-tenant-seg/orders', 'routes/r'),
               'routes: POST /api/<other>/orders: the same per-tenant bucket',
               %orders, retry => within(60, $orders_since));
    allowed_ok(get('/api/x/orders', 'routes/r'),
               'routes: GET /api/x/orders still unaffected', none => 1);
    for my $p (qw(/api/x/other /api/x/orders/42 /api/a/b/orders /api/orders)) {
        allowed_ok(post($p, 'routes/r'), "routes: POST $p does not match", none => 1);
    }

    my %files = (policy => '"files";q=1;w=60', name => 'files');
    my $since = time;
    allowed_ok(get('/files/a/b/c', 'routes/r'),
               'routes: "/files/**" matches /files/a/b/c', %files, r => 0);
    limited_ok(get('/files/d/e', 'routes/r'),
               'routes: /files/d/e is in the same rule: refused', %files,
               retry => within(60, $since));
    allowed_ok(get('/filesx/a', 'routes/r'),
               'routes: /filesx/a does not match "/files/**"', none => 1);
    allowed_ok(get('/other/files/a', 'routes/r'),
               'routes: /other/files/a does not match "/files/**"', none => 1);
}

# --- several rules: a refused request costs nothing in the others ----------------

{
    # tenant-wide (100/h, burst 49) for everything, then per-user (2/min,
    # burst 1) for /multi/b/**: the tripping rule comes second
    my $both = '"tenant-wide";q=100;w=3600, "per-user";q=2;w=60';
    my %a = (policy => '"tenant-wide";q=100;w=3600', name => 'tenant-wide');

    allowed_ok(get('/multi/a', 'multi/U1'), 'multi: U1 /multi/a: tenant-wide r=49',
               %a, r => 49);
    my $since = time;
    allowed_ok(get('/multi/b/x', 'multi/U2'),
               'multi: U2 /multi/b/x #1: both rules, per-user nearest (r=1)',
               policy => $both, name => 'per-user', r => 1);
    allowed_ok(get('/multi/b/x', 'multi/U2'), 'multi: U2 /multi/b/x #2: per-user r=0',
               policy => $both, name => 'per-user', r => 0);
    for my $i (3 .. 7) {
        limited_ok(get('/multi/b/x', 'multi/U2'),
                   "multi: U2 /multi/b/x #$i: refused by per-user",
                   policy => $both, name => 'per-user',
                   retry => within(30, $since));
    }
    # 1 + 2 allowed requests charged tenant-wide; the 5 refused ones not
    allowed_ok(get('/multi/a', 'multi/U1'),
               'multi: tenant-wide r=46: the 5 refused requests were not charged',
               %a, r => 46);
    allowed_ok(get('/multi/b/x', 'multi/U3'),
               'multi: U3 has its own per-user counter (r=1)',
               policy => $both, name => 'per-user', r => 1);
    allowed_ok(get('/multi/a', 'multi/U1'), 'multi: tenant-wide r=44',
               %a, r => 44);

    # strict (1/min) for /m2/strict/**, then generous per-subject (100/h,
    # burst 49) for everything: the tripping rule comes first
    my $both2 = '"strict";q=1;w=60, "generous";q=100;w=3600';
    my %g = (policy => '"generous";q=100;w=3600', name => 'generous');
    allowed_ok(get('/m2/other', 'multi2/V1'), 'multi2: generous r=49', %g, r => 49);
    $since = time;
    allowed_ok(get('/m2/strict/x', 'multi2/V1'),
               'multi2: /m2/strict/x #1: strict nearest (r=0)',
               policy => $both2, name => 'strict', r => 0);
    for my $i (2 .. 5) {
        limited_ok(get('/m2/strict/x', 'multi2/V1'),
                   "multi2: /m2/strict/x #$i: refused by strict",
                   policy => $both2, name => 'strict',
                   retry => within(60, $since));
    }
    allowed_ok(get('/m2/other', 'multi2/V1'),
               'multi2: generous r=47: the 4 refused requests were not charged',
               %g, r => 47);
}

# --- the _default.json fallback -----------------------------------------------------

{
    my %d = (policy => '"default";q=3;w=60', name => 'default');
    for my $tenant (qw(d1 d2)) {
        my $since = time;
        for my $i (1 .. 3) {
            allowed_ok(get('/d', "$tenant/x"),
                       "default: tenant $tenant (no file) request $i",
                       %d, r => 3 - $i);
        }
        limited_ok(get('/d', "$tenant/x"), "default: tenant $tenant request 4",
                   %d, retry => within(20, $since));
    }
}

# --- the policy of the bound tenant ---------------------------------------------------

{
    # the token names bind-a and bind-b: without guard_tenant bind-a's
    # policy applies (the first tenant), with it the addressed tenant's
    my $sa = time;
    allowed_ok(get('/x', 'bind'), 'bind: unbound: bind-a\'s a-rule',
               policy => '"a-rule";q=1;w=60', name => 'a-rule', r => 0);
    my $sb = time;
    allowed_ok(get('/bound/x', 'bind', tenant => 'bind-b'),
               'bind: bound to bind-b: b-rule, its own counter',
               policy => '"b-rule";q=1;w=60', name => 'b-rule', r => 0);
    limited_ok(get('/bound/x', 'bind', tenant => 'bind-b'),
               'bind: bound to bind-b again: refused by b-rule',
               name => 'b-rule', retry => within(60, $sb));
    limited_ok(get('/bound/x', 'bind', tenant => 'bind-a'),
               'bind: bound to bind-a: refused by a-rule',
               name => 'a-rule', retry => within(60, $sa));
}

# --- two workers share the counters ---------------------------------------------------

my $workers_since;

{
    my @workers = $t->worker_pids;
    is(scalar @workers, 2, 'workers: two workers');
    my (%pid, %status, @seq);
    my $n = 0;
    $workers_since = time;
    while ($n < 40) {           # 10, and more only until both workers answered
        my $r = get('/w', 'workers/w');
        $n++;
        $pid{ $r->{headers}{'x-pid'} // 'none' }++;
        $status{ $r->{status} // 'none' }++;
        push @seq, $r->{status} // 'none';
        last if $n >= 10 && keys %pid >= 2;
    }
    is_deeply([sort keys %pid], [map { "$_" } sort @workers],
              "workers: both workers answered ($n requests)")
        or diag explain \%pid;
    is($status{200} // 0, 5, 'workers: exactly 5 x 200 in total (5 per minute)');
    is($status{429} // 0, $n - 5, 'workers: all the others 429');
    is("@seq", join(' ', (200) x 5, (429) x ($n - 5)),
       'workers: the 5 allowed are the first 5');
}

# --- guard_limit_headers off -----------------------------------------------------------

{
    my $since = time;
    for my $i (1, 2) {
        my $r = get('/quiet/x', 'quiet/q');
        is($r->{status}, 200, "limit_headers off: request $i allowed");
        ok(!defined $r->{headers}{'ratelimit-policy'}
           && !defined $r->{headers}{ratelimit}
           && !defined $r->{headers}{'retry-after'},
           "limit_headers off: request $i carries no RateLimit fields")
            or diag explain $r->{headers};
    }
    limited_ok(get('/quiet/x', 'quiet/q'),
               'limit_headers off: the refusal still carries the fields',
               policy => '"q";q=2;w=60', name => 'q',
               retry => within(30, $since));
}

# --- shadow mode -------------------------------------------------------------------------

{
    $t->errlog_mark;
    my @r = map { get('/sh', 'shadow-rule/s') } 1 .. 3;
    is(statuses(@r), '200 200 200', 'shadow rule: every request passes');
    is($r[0]{headers}{'x-decision'}, 'allow', 'shadow rule: #1 decision allow');
    ok(!defined $r[0]{headers}{'x-reason'}, 'shadow rule: #1 no reason');
    for my $i (1, 2) {
        is($r[$i]{headers}{'x-decision'}, 'shadow_deny',
           'shadow rule: #' . ($i + 1) . ' decision shadow_deny');
        is($r[$i]{headers}{'x-reason'}, 'rate_limited',
           'shadow rule: #' . ($i + 1) . ' reason rate_limited');
        ok(!defined $r[$i]{headers}{'retry-after'},
           'shadow rule: #' . ($i + 1) . ' no Retry-After');
    }

    my @one = map { get('/sa/one/x', 'shadow-all/s') } 1 .. 2;
    my @two = map { get('/sa/two/x', 'shadow-all/s') } 1 .. 2;
    is(statuses(@one, @two), '200 200 200 200',
       'shadow tenant: every request passes');
    is(join(' ', map { $_->{headers}{'x-decision'} // 'none' } @one, @two),
       'allow shadow_deny allow shadow_deny',
       'shadow tenant: the second request of each rule is shadow_deny');
    is(join(' ', map { $_->{headers}{'x-reason'} // 'none' } @one, @two),
       'none rate_limited none rate_limited',
       'shadow tenant: reason rate_limited');
    is(join(' ', map { (ratelimit($_))[0] // 'none' } @one, @two),
       'one one two two', 'shadow tenant: each path has its rule');

    my $log = $t->errlog(since_mark => 1);
    my $nr = () = $log =~ /shadow refusal, reason: rate_limited, tenant: "shadow-rule"/g;
    my $na = () = $log =~ /shadow refusal, reason: rate_limited, tenant: "shadow-all"/g;
    is($nr, 2, 'shadow rule: error.log has 2 "shadow refusal" lines');
    is($na, 2, 'shadow tenant: error.log has 2 "shadow refusal" lines');
}

# --- counters kept across reloads --------------------------------------------------------

{
    my %k = (policy => '"k3";q=3;w=60', name => 'k3');
    my $since = time;
    for my $i (1 .. 3) {
        allowed_ok(get('/k', 'keep/k'), "reload: keep request $i", %k, r => 3 - $i);
    }
    my $r = get('/k', 'keep/k');
    limited_ok($r, 'reload: keep request 4 refused', %k, retry => within(20, $since));
    my $v1 = $r->{headers}{'x-version'} // '';
    like($v1, qr/^[0-9a-f]{64}$/, '$guard_policy_version is 64 hex digits');
    SKIP: {
        skip 'no guardctl', 1 unless defined $version;
        is($v1, $version, '$guard_policy_version is the version guardctl prints');
    }
    my $pid1 = $r->{headers}{'x-pid'};

    ok($t->reload, 'reload: same policies');
    $r = get('/k', 'keep/k');
    limited_ok($r, 'reload: keep is still refused after the reload', %k,
               retry => within(20, $since));
    isnt($r->{headers}{'x-pid'}, $pid1, 'reload: answered by a new worker');
    is($r->{headers}{'x-version'}, $v1, 'reload: same policies, same version');

    # change an unrelated tenant's file: a new version, the same counters
    policy($t, 'pol', 'unrelated.json',
           tenant_policy('unrelated', rule('u', 11, '1m')));
    my $v2x = guardctl_version($P);
    ok($t->reload, 'reload: an unrelated policy file changed');
    $r = get('/k', 'keep/k');
    limited_ok($r, 'reload: keep is still refused with the new policy set', %k,
               retry => within(20, $since));
    my $v2 = $r->{headers}{'x-version'} // '';
    like($v2, qr/^[0-9a-f]{64}$/, 'reload: a version');
    isnt($v2, $v1, 'reload: $guard_policy_version changed');
    SKIP: {
        skip 'no guardctl', 1 unless defined $v2x;
        is($v2, $v2x, 'reload: the new version is the one guardctl prints');
    }
    limited_ok(post('/api/x/orders', 'routes/r'),
               'reload: other counters kept too (orders-create)',
               name => 'orders-create', retry => within(60, $orders_since));
    limited_ok(get('/w', 'workers/w'), 'reload: workers counter kept',
               name => 'w5', retry => within(12, $workers_since));
}

# --- a reload that raises or lowers a rule ------------------------------------------------

{
    # raised: 1 per hour, used up, then 100 per second with a burst of
    # 10.  The request used stays used, in requests: 1 of the new 11, so
    # the next request passes with r=9 (not a 429 for the rest of the
    # hour, nor a fresh bucket).
    my $since = time;
    allowed_ok(get('/r', 'raise/x'), 'raise: 1 per hour, request 1',
               policy => '"rl";q=1;w=3600', name => 'rl', r => 0, t => 3600);
    limited_ok(get('/r', 'raise/x'), 'raise: request 2 refused for an hour',
               name => 'rl', retry => within(3600, $since));
    policy($t, 'pol', 'raise.json',
           tenant_policy('raise', rule('rl', 100, '1s', burst => 10)));

    # lowered: 100 per hour with a burst of 99 (T = 36 s), 3 used, then
    # 1 per hour with a burst of 2: the 3 requests used are the new
    # burst + 1, so the next is refused, and waits no more than the new
    # T of 3600 s (the third request's share, less the time passed at
    # 100 new seconds per old one)
    my $lsince = time;
    for my $i (1 .. 3) {
        allowed_ok(get('/l', 'lower/x'), "lower: 100 per hour, request $i",
                   name => 'lw', r => 100 - $i);
    }
    policy($t, 'pol', 'lower.json',
           tenant_policy('lower', rule('lw', 1, '1h', burst => 2)));

    ok($t->reload, 'rule change: reload');

    my $r = get('/r', 'raise/x');
    allowed_ok($r, 'raise: after the reload the next request passes, r=9',
               policy => '"rl";q=100;w=1', name => 'rl', r => 9, t => 1);
    my $ra = 0;
    for my $i (1 .. 12) {
        $r = get('/r', 'raise/x');
        my $v = $r->{headers}{'retry-after'} // 0;
        $ra = $v if $v > $ra;
    }
    ok($ra <= 1, "raise: no Retry-After longer than the new rule's (max $ra)");

    my $lo = ceil(3600 - 100 * (time - $lsince + 0.002));
    limited_ok(get('/l', 'lower/x'),
               'lower: after the reload the 3 used requests count: refused',
               policy => '"lw";q=1;w=3600', name => 'lw',
               retry => [$lo < 1 ? 1 : $lo, 3600]);
}

# --- a request refused by a later stage gives its rate charge back ---------------------

{
    # bk: 5 per hour (burst 4), and 1 request in flight at most.  One
    # request is held in flight (its body never comes); every request
    # meanwhile is refused by the concurrency stage, after the rate
    # stage charged it: the refusal gives the charge back, so the rate
    # rule never trips, however many the client sends.
    my $hold = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $t->port(0), Proto => 'tcp');
    ok($hold, 'refund: a connection to hold a request') or diag $@;
    print $hold "POST /hold HTTP/1.1\r\nHost: localhost\r\n"
              . "Authorization: Bearer $tok{'bulk/u'}\r\n"
              . "Content-Length: 10\r\n\r\n";
    $hold->flush;

    my ($allowed, $r) = (0);
    for (1 .. 100) {
        $r = get('/gif/x', 'bulk/u');
        last if ($r->{status} // 0) == 429;
        $allowed++;
        sleep 0.02;
    }
    problem_ok($r, 'concurrency_limited',
               "refund: the held request fills the bulkhead ($allowed passed "
               . 'before it arrived)');

    my (@st, @rem);
    for (1 .. 10) {
        $r = get('/gif/x', 'bulk/u');
        push @st, reason_of($r);
        push @rem, (ratelimit($r))[1] // 'none';
    }
    is("@st", join(' ', ('concurrency_limited') x 10),
       'refund: 10 more refused by the bulkhead, none by the rate rule');
    is("@rem", join(' ', (4 - $allowed) x 10),
       'refund: each refusal reports r= as if it had not been counted');

    close $hold;
    my $n = 0;
    for (1 .. 100) {
        $r = get('/gif/x', 'bulk/u');
        last if ($r->{status} // 0) == 200;
        $n++;
        sleep 0.02;
    }
    allowed_ok($r, "refund: once the held request ends the next passes "
               . "($n refused meanwhile), r=" . (3 - $allowed)
               . ': only the allowed requests were charged',
               name => 'bk', r => 3 - $allowed);
}

# --- and by the risk stage, after the bulkhead ------------------------------------------------

{
    # guardd is not there, and guard_risk_fail is closed: the risk stage
    # refuses every request with 503, after the rate stage counted it.
    # None of them uses the 1 request per hour.
    my $k = Guard::Test->new;
    policy($k, 'pol', 'rk.json', tenant_policy('rk', rule('rk', 1, '1h')));
    $k->write_conf(http => <<"EOF");
    guard_policies %%DIR%%/pol;
    guard_sidecar unix:%%DIR%%/no-guardd.sock timeout=300ms;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
$HEADERS
        location /risk/ { guard on; guard_risk on; guard_risk_fail closed;
                          empty_gif; }
        location /      { guard on; empty_gif; }
    }
EOF
    $k->run;
    my ($kt) = $k->mint({ kid => 'hs256',
                          claims => { sub => 'k', tenant_id => 'rk',
                                      exp => $exp } });
    my @st = map {
        reason_of(req($k, 'GET', '/risk/x', $kt))
    } 1 .. 3;
    is("@st", join(' ', ('503 sidecar_unavailable') x 3),
       'refund: the risk stage refuses 3 requests, none by the rate rule');
    allowed_ok(req($k, 'GET', '/x', $kt),
               'refund: then the one request of the hour still passes',
               name => 'rk', r => 0);
    $k->stop;
    $k->errlog_ok('refund (risk): no alert/emerg');
}

# --- a high-rate rule on two workers under load: no false refusals -------------------------

SKIP: {
    # 1,000,000 per second with a burst of 1000: tau is 1 ms.  The
    # workers once each counted with their own cached clock, a few ms
    # apart, and refused about 1.6% of requests at 23k per second; they
    # now share one clock that never runs backwards.
    chomp(my $wrk = `command -v wrk 2>/dev/null` // '');
    skip 'wrk is not installed (scripts/setup.sh installs it)', 5
        unless $wrk;

    my $h = Guard::Test->new;
    policy($h, 'pol', 'fast.json',
           tenant_policy('fast', rule('fast', 1000000, '1s', burst => 1000)));
    $h->write_conf(workers => 2, http => <<"EOF");
    guard_policies %%DIR%%/pol;
    log_format guard_st '\$status \$pid';
    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        guard_jwt_keys %%KEYS%%/jwks.json;
        access_log %%DIR%%/fast.log guard_st;
        location / { guard on; empty_gif; }
    }
EOF
    $h->run;
    my ($ft) = $h->mint({ kid => 'hs256',
                          claims => { sub => 'f', tenant_id => 'fast',
                                      exp => $exp } });
    my $port = $h->port(0);
    my $t0 = time;
    my $out = `timeout 30 $wrk -t2 -c32 -d3s -H 'Authorization: Bearer $ft' http://127.0.0.1:$port/x 2>&1`;
    my $secs = time - $t0;
    note($out);

    my (%st, %pid);
    if (open my $fh, '<', $h->dir . '/fast.log') {
        while (<$fh>) {
            my ($code, $pid) = split;
            $st{$code}++;
            $pid{$pid}++;
        }
    }
    my $total = 0;
    $total += $_ for values %st;
    ok($total >= 1000, "high rate: $total requests in "
       . sprintf('%.1f s (%.0f per second)', $secs, $total / ($secs || 1)));
    ok($total / ($secs || 1) < 1000000, 'high rate: below the limit');
    is(scalar keys %pid, 2, 'high rate: both workers served');
    is($st{429} // 0, 0, 'high rate: no request refused')
        or diag explain \%st;
    $h->stop;
    $h->errlog_ok('high rate: no alert/emerg');
}

# --- a zone too small to hold every key ----------------------------------------------------

{
    my $s = Guard::Test->new;
    policy($s, 'pol', 'many.json', tenant_policy('many',
           rule('per-user', 1, '1h', per => 'subject')));
    $s->write_conf(http => <<"EOF");
    guard_zone 32k;
    guard_policies %%DIR%%/pol;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
$HEADERS
        location / { guard on; empty_gif; }
    }
EOF
    my ($rc, $out) = $s->test_conf;
    is($rc, 0, 'small zone: guard_zone 32k is valid') or diag $out;
    $s->run;

    my $N = 500;
    my @tok = $s->mint(map {
        { kid => 'hs256', claims => { sub => "subject-$_", tenant_id => 'many',
                                      exp => $exp } }
    } 1 .. $N);
    is(scalar @tok, $N, "small zone: $N tokens minted");

    my (%st, @bad, $last_since);
    for my $i (0 .. $#tok) {
        $last_since = time;
        my $r = req($s, 'GET', '/x', $tok[$i]);
        $st{ $r->{status} // 'none' }++;
        push @bad, "#$i: " . ($r->{status} // 'none') . ' '
                   . ($r->{headers}{ratelimit} // '-')
            unless ($r->{status} // 0) == 200
                   && ($r->{headers}{ratelimit} // '') eq '"per-user";r=0;t=3600';
    }
    is_deeply(\%st, { 200 => $N },
              "small zone: $N distinct subjects, 1 request each: all 200")
        or diag explain \%st;
    ok(!@bad, 'small zone: each with RateLimit "per-user";r=0;t=3600')
        or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];

    # 500 keys take a 128-byte slab chunk each (64000 bytes), more than
    # the whole 32k zone, which the token cache shares: keys were evicted.
    # Eviction takes the least recently charged keys (8 at a time, from
    # the LRU tail; a TAT 1 h ahead never expires on its own), so the
    # first subject's key is certainly gone and the last subject's, the
    # most recent, certainly kept: both results are deterministic.
    my $r = req($s, 'GET', '/x', $tok[-1]);
    limited_ok($r, 'small zone: the last subject is refused (its key is kept)',
               name => 'per-user', retry => within(3600, $last_since));
    my $since = time;
    allowed_ok(req($s, 'GET', '/x', $tok[0]),
               'small zone: the first subject passes again (its key was evicted)',
               name => 'per-user', r => 0);
    limited_ok(req($s, 'GET', '/x', $tok[0]),
               'small zone: and is then counted again', name => 'per-user',
               retry => within(3600, $since));

    my $log = $s->errlog;
    unlike($log, qr/\[(?:alert|emerg|crit)\]/, 'small zone: no alert/emerg/crit');
    my $nk = () = $log =~ /zone full, rate key not kept/g;
    note("small zone: \"rate key not kept\" logged $nk times");
    $s->stop;
    $s->errlog_ok('small zone: no alert/emerg');
}

# --- bad policy files: nginx -t and reload -------------------------------------------------

{
    my $b = Guard::Test->new;
    my $bd = $b->dir;
    policy($b, 'pol', 'acme.json', tenant_policy('acme', rule('api', 1, '1m')));
    policy($b, 'pol', 'other.json',
           tenant_policy('other', rule('o', 5, '1m', burst => 4)));
    $b->write_conf(http => <<"EOF");
    guard_policies %%DIR%%/pol;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
$HEADERS
        location / { guard on; empty_gif; }
    }
EOF
    my ($rc, $out) = $b->test_conf;
    is($rc, 0, 'bad policy: the good set is valid') or diag $out;
    $b->run;

    my ($ta, $to, $tn) = $b->mint(
        map { { kid => 'hs256', claims => { sub => 'u', tenant_id => $_,
                                            exp => $exp } } }
            qw(acme other nofile));

    my $since = time;
    allowed_ok(req($b, 'GET', '/x', $ta), 'bad policy: acme 1 allowed',
               name => 'api', r => 0);
    my $r = req($b, 'GET', '/x', $ta);
    limited_ok($r, 'bad policy: acme 2 refused', name => 'api',
               retry => within(60, $since));
    my $v1 = $r->{headers}{'x-version'};
    allowed_ok(req($b, 'GET', '/x', $to), 'bad policy: other 1', name => 'o', r => 4);
    allowed_ok(req($b, 'GET', '/x', $to), 'bad policy: other 2', name => 'o', r => 3);
    for my $i (1 .. 3) {
        allowed_ok(req($b, 'GET', '/x', $tn),
                   "bad policy: a tenant without a file and no _default.json: "
                   . "no limit ($i)", none => 1);
    }
    my @w1 = $b->worker_pids;

    # line 7, column 9: the opening quote of "requests"
    $b->write_file('pol/acme.json', <<'EOF');
{
  "tenant": "acme",
  "limits": {
    "rate": [
      {
        "name": "api",
        "requests": 0,
        "period": "1m"
      }
    ]
  }
}
EOF
    ($rc, $out) = $b->test_conf;
    isnt($rc, 0, 'bad policy: nginx -t fails');
    like($out, qr{\Q$bd/pol/acme.json:7:9: /limits/rate/0/requests:\E},
         'bad policy: nginx -t names acme.json:7:9 and /limits/rate/0/requests')
        or diag $out;
    like($out, qr/test failed/, 'bad policy: nginx -t says the test failed');

    $b->errlog_mark;
    ok(!$b->reload, 'bad policy: the reload fails');
    like($b->errlog(since_mark => 1),
         qr{\[emerg\].*\Q$bd/pol/acme.json:7:9: /limits/rate/0/requests:\E},
         'bad policy: error.log names the file, line, column and pointer');
    is_deeply([$b->worker_pids], \@w1, 'bad policy: the old workers still serve');

    $r = req($b, 'GET', '/x', $ta);
    limited_ok($r, 'bad policy: acme is still refused by the old rule',
               name => 'api', retry => within(60, $since));
    is($r->{headers}{'x-version'}, $v1, 'bad policy: the old version is in force');
    allowed_ok(req($b, 'GET', '/x', $to),
               'bad policy: other continues from its old counter (r=2)',
               name => 'o', r => 2);

    $b->errlog_mark;
    $b->stop;
    $b->errlog_ok('bad policy: no alert/emerg after the failed reload',
                  since_mark => 1);
}

$t->stop;
$t->errlog_ok('main instance: no alert/emerg');

done_testing;
