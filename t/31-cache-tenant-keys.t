#!/usr/bin/perl

# The verified-token cache with tenant policies that bring their own keys
# (guard_policies, "auth": {"jwks": ...}): the tenant a token names is
# read from the cache entry before any payload parse, and an entry made
# with other keys never lets a token through a tenant's own keys.  The
# claim variables of a cached token come from the request's own token.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use Guard::Test;

my $t = Guard::Test->new;
my $kd = $t->jwt_keys;
my $dir = $t->dir;

sub write_json {
    my ($file, $doc) = @_;
    $t->write_file($file, JSON::PP->new->canonical->pretty->encode($doc));
}

my $acme = $t->jwt_gen(kty => 'RSA', kid => 'acme-key', alg => 'RS256',
                       dir => "$dir/tk");
write_json('pol/keys/acme.jwks.json', { keys => [$acme] });
write_json('pol/_default.json', { description => 'the global keys' });
write_json('pol/acme.json', { tenant => 'acme',
                              auth => { jwks => 'keys/acme.jwks.json' } });

$t->write_conf(http => <<"EOF");
    guard_policies $dir/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys $kd/jwks.json;
        add_header X-Cache \$guard_token_cache always;
        add_header X-Reason \$guard_reason always;

        location /c/ {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Tenant \$guard_tenant;
            proxy_set_header X-Claim \$guard_claim_team;
        }

        location /bound/ {
            guard on;
            guard_tenant \$http_x_tenant_id;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Tenant \$guard_tenant;
            proxy_set_header X-Claim \$guard_claim_team;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "tenant=\$http_x_tenant team=\$http_x_claim\\n"; }
    }
EOF

my ($rc, $out) = $t->test_conf;
is($rc, 0, 'configuration is valid') or diag $out;
$t->run;

my $exp = time + 3600;
my ($tacme, $tglobal, $tforged) = $t->mint(
    { kid => 'acme-key', alg => 'RS256', key => "$dir/tk/acme-key.pem",
      claims => { sub => 'a1', tenant_id => 'acme', team => 'red', exp => $exp } },
    { kid => 'hs256', claims => { sub => 'g1', tenant_id => 'zeta', team => 'blue',
                                  exp => $exp } },
    { kid => 'hs256', claims => { sub => 'f1', tenant_id => 'acme', team => 'black',
                                  exp => $exp } },
);

sub req {
    my ($path, $token, %h) = @_;
    return $t->get($path, headers => [Authorization => "Bearer $token", %h]);
}

sub answer_ok {
    my ($r, $cache, $body, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, 200, 'status 200') or diag $r->{body};
        is($r->{headers}{'x-cache'}, $cache, "X-Cache $cache");
        is($r->{body}, $body, 'tenant and claim variable');
    };
}

sub refused_ok {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, 401, 'status 401');
        like($r->{headers}{'x-reason'}, qr/^token_/, 'a token reason')
            or diag $r->{headers}{'x-reason'};
        isnt($r->{headers}{'x-cache'}, 'hit', 'not a cache hit');
    };
}

# a tenant with its own keys: miss, then hits
answer_ok(req('/c/x', $tacme), 'miss', "tenant=acme team=red\n",
          'acme key: first request, miss');
answer_ok(req('/c/x', $tacme), 'hit', "tenant=acme team=red\n",
          'acme key: second request, hit, variables from the token');
answer_ok(req('/c/x', $tacme), 'hit', "tenant=acme team=red\n",
          'acme key: third request, hit');

# a tenant without a policy: the global keys
answer_ok(req('/c/x', $tglobal), 'miss', "tenant=zeta team=blue\n",
          'global key: first request, miss');
answer_ok(req('/c/x', $tglobal), 'hit', "tenant=zeta team=blue\n",
          'global key: second request, hit');

# a token naming acme signed with a global key: verified with the global
# keys where the tenant is addressed (and refused there as a mismatch),
# which caches it; where the token names the tenant, acme's keys alone
# count, and the entry made with the global keys does not
my $r = req('/bound/x', $tforged, 'X-Tenant-Id' => 'zeta');
is($r->{status}, 403, 'addressed zeta, the token names acme: 403');
refused_ok(req('/c/x', $tforged), 'named acme, global key: refused');
refused_ok(req('/c/x', $tforged), 'and refused again');
answer_ok(req('/c/x', $tacme), 'hit', "tenant=acme team=red\n",
          'the acme token is still a hit');

$t->stop;
$t->errlog_ok;

done_testing;
