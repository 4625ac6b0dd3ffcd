#!/usr/bin/perl

# How guard sits in nginx's request processing: refusals with a request
# body keep the connection usable, HEAD refusals carry no body, internal
# redirects are checked with the target's settings, other access modules still apply after an allow, and "guard
# off" in a nested location turns enforcement off.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Guard::Test;

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;

$t->write_file('static/files/page.html', "page\n");

$t->write_conf(http => <<'CONF');
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        guard on;

        add_header X-Id $guard_decision_id always;
        add_header X-Tenant $guard_tenant always;

        location /api/ {
            guard_tenant $http_x_tenant_id;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        # try_files redirects internally to /fallback, which binds the
        # tenant from another header: the request is checked again there
        location /files/ {
            root %%DIR%%/static;
            try_files $uri /fallback;
        }

        location = /fallback {
            guard_tenant $http_x_other_tenant;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /denied/ {
            deny all;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /open/ {
            guard off;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend $uri\n"; }
    }
CONF
$t->run;

my $tok = $t->mint({ kid => 'es256',
                     claims => { sub => 'u1', tenant_id => 'acme',
                                 exp => time() + 3600 } });
my @auth = (Authorization => "Bearer $tok");

# a refused POST with a body, then a second request on the same connection
my $body = 'x' x 100000;
my $raw = "POST /api/x HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body"
        . "GET /api/y HTTP/1.1\r\nHost: localhost\r\nX-Tenant-Id: acme\r\n"
        . "Authorization: Bearer $tok\r\nConnection: close\r\n\r\n";
my $r = $t->raw_request($raw);
my @statuses = ($r->{raw} // '') =~ m{^HTTP/1\.1 (\d{3})}mg;
is_deeply(\@statuses, [401, 200],
          'refused POST with a body, then the next request on the same '
          . 'connection is served');
like($r->{raw} // '', qr/backend \/api\/y/, 'the second answer is the backend');

# HEAD: the refusal's headers, no body
$r = $t->http('HEAD', '/api/x');
is($r->{status}, 401, 'HEAD without token: 401');
is($r->{body}, '', 'HEAD refusal has no body');
like($r->{headers}{'guard-decision-id'} // '', $UUID7, 'HEAD refusal has an id');

# internal redirect by try_files: checked again with the target's binding
$r = $t->get('/files/page.html', headers => [@auth]);
is($r->{status}, 200, 'static file: no tenant binding there, 200');
is($r->{body}, "page\n", 'static file served');

$r = $t->get('/files/missing', headers => [@auth, 'X-Other-Tenant' => 'acme']);
is($r->{status}, 200, 'try_files fallback with the right tenant: 200');
is($r->{body}, "backend /fallback\n", 'fallback reached the backend');
is($r->{headers}{'x-tenant'}, 'acme', 'the fallback bound the tenant');

$r = $t->get('/files/missing', headers => [@auth, 'X-Other-Tenant' => 'beta']);
problem_ok($r, 'tenant_mismatch', 'try_files fallback rechecks: mismatch');

$r = $t->get('/files/missing', headers => [@auth]);
problem_ok($r, 'tenant_unaddressed', 'try_files fallback rechecks: unaddressed');

# other access modules still apply after guard allows
$r = $t->get('/denied/x', headers => [@auth]);
is($r->{status}, 403, 'deny all still applies after an allow');
unlike($r->{headers}{'content-type'} // '', qr/problem/,
       'that 403 is nginx\'s own, not a guard refusal');

$r = $t->get('/denied/x');
problem_ok($r, 'token_missing', 'without a token guard refuses first');

# guard off in a nested location
$r = $t->get('/open/x');
is($r->{status}, 200, 'guard off: no token needed');
ok(!defined $r->{headers}{'x-id'}, 'guard off: no decision id');

$t->errlog_ok;

done_testing;
