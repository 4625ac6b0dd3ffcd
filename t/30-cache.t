#!/usr/bin/perl

# The verified-token cache in the guard zone, end to end: hits and misses,
# checks that still run on cached tokens (exp, tenant, iss), invalidation
# by a changed key set across reloads, sharing between workers, LRU
# eviction in a small zone, and the guard_zone directive itself.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Guard::Test;

my $t = Guard::Test->new;
my $kd = $t->jwt_keys;
my $dir = $t->dir;

my $BACKEND = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "tenant=$http_x_tenant sub=$http_x_sub\n"; }
    }
EOF

my $PROXY = <<'EOF';
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Tenant $guard_tenant;
            proxy_set_header X-Sub $guard_subject;
EOF

sub req {
    my ($path, $token, %o) = @_;
    my @h = (defined $token ? (Authorization => "Bearer $token") : ());
    push @h, 'X-Tenant-Id' => $o{tenant} if defined $o{tenant};
    return $t->get($path, headers => \@h);
}

sub reason_of {
    my ($r) = @_;
    my $doc = eval { decode_json($r->{body} // '') } || {};
    return $doc->{reason} // '';
}

# status, X-Cache, reason (refusals) in one go
sub check {
    my ($r, $status, $cache, $reason, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, $status, "status $status") or diag $r->{body};
        is($r->{headers}{'x-cache'}, $cache, "X-Cache $cache") if defined $cache;
        if (defined $reason) {
            is($r->{headers}{'content-type'}, 'application/problem+json',
               'problem+json');
            is(reason_of($r), $reason, "reason $reason");
        } else {
            like($r->{body}, qr/^tenant=\S+ sub=\S+$/, 'backend answered');
        }
    };
}

sub restart {
    my (%conf) = @_;
    $t->stop;
    $t->write_conf(%conf);
    my ($rc, $out) = $t->test_conf;
    is($rc, 0, 'configuration is valid') or diag $out;
    $t->errlog_mark;
    $t->run;
}

sub jwk { decode_json($t->read_file("$kd/$_[0].jwk.json")) }

sub write_jwks {
    my ($file, @jwks) = @_;
    $t->write_file($file, JSON::PP->new->canonical->pretty
                                  ->encode({ keys => \@jwks }));
}

my $exp = int(time) + 3600;

# --- hits, misses, off; checks that still run on cached tokens ----------------

restart(http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        add_header X-Cache \$guard_token_cache always;

        location /c/      { guard on; $PROXY }
        location /off/    { guard on; guard_jwt_cache off; $PROXY }
        location /exp/    { guard on; guard_jwt_leeway 0; $PROXY }
        location /ten/    { guard on; guard_tenant \$http_x_tenant_id; $PROXY }
        location /lax/    { guard on; $PROXY }
        location /strict/ { guard on; guard_jwt_issuer https://issuer.test; $PROXY }
        location /ptr/    { guard on; guard_tenant_claim /org/tenant; $PROXY }
    }
$BACKEND
EOF

{
    my $now = int time;
    my ($tok, $toff, $tten, $tother, $tgood, $texp, $tspec) = $t->mint(
        { kid => 'hs256', claims => { sub => 'u1', tenant_id => 'acme', exp => $exp } },
        { kid => 'es256', claims => { sub => 'u2', tenant_id => 'acme', exp => $exp } },
        { kid => 'hs256', claims => { sub => 'u3', tenant_id => 'acme', exp => $exp } },
        { kid => 'hs256', claims => { sub => 'u4', tenant_id => 'acme', exp => $exp,
                                      iss => 'https://other.test' } },
        { kid => 'hs256', claims => { sub => 'u5', tenant_id => 'acme', exp => $exp,
                                      iss => 'https://issuer.test' } },
        { kid => 'hs256', claims => { sub => 'u6', tenant_id => 'acme',
                                      exp => $now + 3 } },
        { kid => 'hs256', claims => { sub => 'u7', tenant_id => 'beta',
                                      org => { tenant => 'acme' }, exp => $exp } },
    );
    my $texp_at = $now + 3;

    # the short-lived token first, before its 3 seconds are gone
    my $r1 = req('/exp/x', $texp);
    my $r2 = req('/exp/x', $texp);
    check($r1, 200, 'miss', undef, 'exp: first request (miss)');
    check($r2, 200, 'hit', undef, 'exp: second request (hit)');
    check(req('/c/x', $texp), 200, 'hit', undef,
          'exp: same entry in a location with the default leeway (hit)');

    check(req('/c/x', $tok), 200, 'miss', undef, 'first request: miss');
    my $r = req('/c/x', $tok);
    check($r, 200, 'hit', undef, 'second request: hit');
    is($r->{body}, "tenant=acme sub=u1\n", 'hit: variables from the cached claims');

    check(req('/off/x', $toff), 200, 'off', undef, 'guard_jwt_cache off: off');
    check(req('/off/x', $toff), 200, 'off', undef, 'guard_jwt_cache off: still off');
    check(req('/c/x', $toff), 200, 'miss', undef,
          'a token seen only by an uncached location is not in the cache');

    # the tenant claim spec is part of the key: another spec, another entry
    $r = req('/c/x', $tspec);
    check($r, 200, 'miss', undef, 'claim spec: tenant_id location, miss');
    is($r->{body}, "tenant=beta sub=u7\n", 'claim spec: tenant_id is beta');
    $r = req('/ptr/x', $tspec);
    check($r, 200, 'miss', undef, 'claim spec: /org/tenant location, miss');
    is($r->{body}, "tenant=acme sub=u7\n", 'claim spec: /org/tenant is acme');
    $r = req('/ptr/x', $tspec);
    check($r, 200, 'hit', undef, 'claim spec: /org/tenant location, hit');
    is($r->{body}, "tenant=acme sub=u7\n", 'claim spec: cached /org/tenant is acme');
    $r = req('/c/x', $tspec);
    check($r, 200, 'hit', undef, 'claim spec: tenant_id location, hit');
    is($r->{body}, "tenant=beta sub=u7\n", 'claim spec: cached tenant_id is beta');

    # a cached token is still tenant-checked
    check(req('/ten/x', $tten, tenant => 'acme'), 200, 'miss', undef,
          'tenant: acme, miss');
    check(req('/ten/x', $tten, tenant => 'acme'), 200, 'hit', undef,
          'tenant: acme, hit');
    check(req('/ten/x', $tten, tenant => 'beta'), 403, 'hit', 'tenant_mismatch',
          'tenant: cached token addressed to beta is refused');
    check(req('/ten/x', $tten), 400, 'hit', 'tenant_unaddressed',
          'tenant: cached token without an addressed tenant is refused');

    # a cached token is still issuer-checked, per location
    check(req('/lax/x', $tother), 200, 'miss', undef, 'issuer: lax location, miss');
    check(req('/lax/x', $tother), 200, 'hit', undef, 'issuer: lax location, hit');
    my $rs = req('/strict/x', $tother);
    check($rs, 401, 'hit', 'token_issuer_refused',
          'issuer: strict location refuses the cached token');
    like($rs->{headers}{'www-authenticate'} // '', qr/error="invalid_token"/,
         'issuer: WWW-Authenticate invalid_token');
    check(req('/lax/x', $tother), 200, 'hit', undef,
          'issuer: lax location still allows it');
    check(req('/strict/x', $tgood), 200, 'miss', undef,
          'issuer: right issuer in the strict location (miss)');
    check(req('/lax/x', $tgood), 200, 'hit', undef,
          'issuer: the strict location\'s entry serves the lax one');

    # a cached token still expires (leeway 0): wait until exp has passed
    for (1 .. 60) {                      # at most 6 s
        last if time >= $texp_at + 0.2;
        sleep 0.1;
    }
    ok(time >= $texp_at, 'exp: the token has expired by now');
    my $re = req('/exp/x', $texp);
    is($re->{status}, 401, 'exp: expired cached token: 401');
    is(reason_of($re), 'token_expired', 'exp: reason token_expired');
    like($re->{headers}{'www-authenticate'} // '', qr/error="invalid_token"/,
         'exp: WWW-Authenticate invalid_token');
    $re = req('/exp/x', $texp);
    is($re->{status}, 401, 'exp: and it stays refused');

    # within the default 30 s leeway the token is still good, but its
    # cache entry did not outlive exp: verified again, never a hit
    check(req('/c/x', $texp), 200, 'miss', undef,
          'exp: past exp, within leeway: allowed, but a miss');
    check(req('/c/x', $texp), 200, 'miss', undef,
          'exp: past exp: not cached again (miss)');
}

$t->errlog_ok('hits and misses: no alert/emerg', since_mark => 1);

# --- invalidation on reload ----------------------------------------------------

my $jwks = "$dir/reload/jwks.json";
write_jwks($jwks, jwk('hs256'), jwk('es256'));

my %reload_conf = (http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys $jwks;
        add_header X-Cache \$guard_token_cache always;
        add_header X-Pid \$pid always;
        location / { guard on; $PROXY }
    }
$BACKEND
EOF
restart(%reload_conf);

{
    my ($ths, $tes) = $t->mint(
        { kid => 'hs256', claims => { sub => 'r1', tenant_id => 'acme', exp => $exp } },
        { kid => 'es256', claims => { sub => 'r2', tenant_id => 'acme', exp => $exp } },
    );

    check(req('/x', $ths), 200, 'miss', undef, 'reload: hs256 token, miss');
    my $r = req('/x', $ths);
    check($r, 200, 'hit', undef, 'reload: hs256 token, hit');
    my $pid_before = $r->{headers}{'x-pid'};
    check(req('/x', $tes), 200, 'miss', undef, 'reload: es256 token, miss');
    check(req('/x', $tes), 200, 'hit', undef, 'reload: es256 token, hit');

    # a reload that does not change the keys keeps the entries
    ok($t->reload, 'reload with the same key set');
    $r = req('/x', $ths);
    check($r, 200, 'hit', undef, 'reload, same keys: still a hit (zone survived)');
    isnt($r->{headers}{'x-pid'}, $pid_before, 'reload: answered by a new worker');

    # the key is removed: the cached entry must not be used
    write_jwks($jwks, jwk('es256'));
    ok($t->reload, 'reload without the hs256 key');
    $r = req('/x', $ths);
    check($r, 401, 'miss', 'token_key_unknown',
          'reload, key removed: token_key_unknown, not a cached 200');
    check(req('/x', $ths), 401, 'miss', 'token_key_unknown',
          'reload, key removed: still refused');
    check(req('/x', $tes), 200, 'miss', undef,
          'reload, key removed: cached es256 token is a miss (key set changed), allowed');
    check(req('/x', $tes), 200, 'hit', undef,
          'reload, key removed: es256 token cached under the new key set');

    # same kid, other key material
    my $new = $t->jwt_gen(kty => 'oct', kid => 'hs256', alg => 'HS256',
                          size => 32, dir => "$dir/keys2");
    write_jwks($jwks, $new, jwk('es256'));
    ok($t->reload, 'reload with new hs256 key material');
    check(req('/x', $ths), 401, 'miss', 'token_invalid',
          'reload, same kid, new material: token_invalid');
    my $tnew = $t->mint({ kid => 'hs256', alg => 'HS256', key => "$dir/keys2/hs256.key",
                          claims => { sub => 'r3', tenant_id => 'acme', exp => $exp } });
    check(req('/x', $tnew), 200, 'miss', undef, 'reload, new material: new token, miss');
    check(req('/x', $tnew), 200, 'hit', undef, 'reload, new material: new token, hit');
}

$t->errlog_ok('reload: no alert/emerg', since_mark => 1);

# --- two workers share the cache -----------------------------------------------

restart(workers => 2, http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        guard_jwt_keys %%KEYS%%/jwks.json;
        add_header X-Cache \$guard_token_cache always;
        add_header X-Pid \$pid always;
        location / { guard on; $PROXY }
    }
$BACKEND
EOF

{
    my @workers = $t->worker_pids;
    is(scalar @workers, 2, 'two workers');

    my $tok = $t->mint({ kid => 'es256',
                         claims => { sub => 'w', tenant_id => 'acme', exp => $exp } });
    my $r = req('/x', $tok);
    check($r, 200, 'miss', undef, 'workers: first request, miss');
    my %seen;    # pid -> hits

    my ($n, @bad) = (0);
    for my $i (1 .. 60) {
        $r = req('/x', $tok);
        $n++;
        my $pid = $r->{headers}{'x-pid'} // 'none';
        $seen{$pid}++ if $pid =~ /^\d+$/;
        push @bad, "#$i pid $pid: " . ($r->{status} // "no status") . " " . ($r->{headers}{'x-cache'} // '-')
            unless ($r->{status} // 0) == 200
                   && ($r->{headers}{'x-cache'} // '') eq 'hit';
        last if keys %seen >= 2;
    }
    ok($n >= 1 && !@bad, "workers: all $n later requests are 200 hits")
        or diag join "\n", @bad;
    is_deeply([sort { $a <=> $b } grep { /^\d+$/ } keys %seen], \@workers,
              'workers: the pids seen are the two workers')
        if keys %seen >= 2;
    SKIP: {
        skip "only worker(s) " . join(',', keys %seen) . " answered 60 requests", 1
            if keys %seen < 2;
        pass("workers: both workers answered with hits ($n requests)");
    }
}

$t->errlog_ok('workers: no alert/emerg', since_mark => 1);

# --- guard_zone: the directive -----------------------------------------------------

{
    my $tc = Guard::Test->new;
    my $srv = <<"EOF";
        listen 127.0.0.1:%%PORT_0%%;
        location / { guard on; guard_jwt_keys $kd/jwks.json;
                     proxy_pass http://127.0.0.1:%%PORT_1%%; }
EOF
    my $min = 8 * 4096;

    $tc->write_conf(http => "guard_zone 8k;\n server {\n$srv }");
    my ($rc, $out) = $tc->test_conf;
    isnt($rc, 0, 'guard_zone 8k: test_conf fails');
    like($out, qr/guard_zone of 8192 bytes is too small, the minimum is $min/,
         'guard_zone 8k: clear message');

    $tc->write_conf(http => "guard_zone 32k;\n server {\n$srv }");
    ($rc, $out) = $tc->test_conf;
    is($rc, 0, 'guard_zone 32k (the minimum, 8 pages): accepted') or diag $out;

    $tc->write_conf(http => "guard_zone 64k;\n server {\n$srv }");
    ($rc, $out) = $tc->test_conf;
    is($rc, 0, 'guard_zone 64k: accepted') or diag $out;

    $tc->write_conf(http => "server {\n guard_zone 1m;\n$srv }");
    ($rc, $out) = $tc->test_conf;
    isnt($rc, 0, 'guard_zone in server: test_conf fails');
    like($out, qr/"guard_zone" directive is not allowed here/,
         'guard_zone in server: not allowed here');

    $tc->write_conf(http => "server {\n$srv location /z { guard_zone 1m; } }");
    ($rc, $out) = $tc->test_conf;
    isnt($rc, 0, 'guard_zone in location: test_conf fails');
    like($out, qr/"guard_zone" directive is not allowed here/,
         'guard_zone in location: not allowed here');
}

# --- a small zone: LRU eviction, still correct -------------------------------------

restart(http => <<"EOF");
    guard_zone 64k;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        add_header X-Cache \$guard_token_cache always;
        location / { guard on; $PROXY }
    }
$BACKEND
EOF

{
    my $N = 300;
    my $pad = 'p' x 1024;
    my @tok = $t->mint(map {
        { kid => 'hs256', claims => { sub => "s$_", tenant_id => 'acme',
                                      exp => $exp, pad => "$_-$pad" } }
    } 1 .. $N);
    is(scalar @tok, $N, "small zone: $N tokens minted");

    my (@bad, %cache);
    for my $i (0 .. $#tok) {
        my $r = req('/x', $tok[$i]);
        $cache{ $r->{headers}{'x-cache'} // 'none' }++;
        my $want = 'tenant=acme sub=s' . ($i + 1) . "\n";
        push @bad, "#$i: " . ($r->{status} // 'no status') . " $r->{body}"
            unless ($r->{status} // 0) == 200 && $r->{body} eq $want;
    }
    ok(!@bad, "small zone: all $N distinct tokens allowed with the right claims")
        or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];
    is_deeply(\%cache, { miss => $N }, 'small zone: every first use is a miss');

    check(req('/x', $tok[-1]), 200, 'hit', undef,
          'small zone: the most recent token is a hit');
    check(req('/x', $tok[-2]), 200, 'hit', undef,
          'small zone: the one before it is a hit too');
    for my $i (0 .. 2) {
        check(req('/x', $tok[$i]), 200, 'miss', undef,
              "small zone: early token #$i was evicted (miss)");
    }
    check(req('/x', $tok[0]), 200, 'hit', undef,
          'small zone: an evicted token is cached again');

    my $log = $t->errlog(since_mark => 1);
    unlike($log, qr/\[(?:alert|emerg|crit)\]/, 'small zone: no alert/emerg/crit');
    unlike($log, qr/no memory/, 'small zone: no "no memory"');
}

$t->errlog_ok('small zone: no alert/emerg', since_mark => 1);
$t->stop;
$t->errlog_ok;

done_testing;
