#!/usr/bin/perl

# The token cache and the rate limits share the guard zone: a zone filled
# with cached tokens must still make room for rate keys (and the other way
# round), so that a full zone never switches a limit off.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Guard::Test;

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;

$t->write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "limits": {
    "rate": [
      {"name": "strict", "requests": 1, "period": "1h"}
    ]
  }
}
JSON

$t->write_conf(http => <<'CONF');
    guard_zone 32k;
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location / {
            guard on;
            add_header X-Cache $guard_token_cache always;
            empty_gif;
        }
    }
CONF
$t->run;

my $exp = time() + 3600;
my $pad = 'p' x ($ENV{PAD} // 200);

# 48 tokens of other tenants, about 400 bytes of cached claims each: more
# than a 32k zone holds.  With these sizes the zone ends with no free page,
# so a rate key finds room only by evicting cache entries: a zone that
# evicted only within each structure kept no rate key here (seen with fill
# counts 48, 64 and 80).
my @fill = $t->mint(map {
    { kid => 'hs256', claims => { sub => "f$_", tenant_id => "fill$_",
                                  pad => $pad, exp => $exp } }
} 1 .. ($ENV{NFILL} // 48));
my ($acme) = $t->mint({ kid => 'hs256',
                        claims => { sub => 'a', tenant_id => 'acme',
                                    exp => $exp } });

my $ok = 0;
for my $tok (@fill) {
    $ok++ if $t->get('/x', headers => [Authorization => "Bearer $tok"])
                 ->{status} == 200;
}
is($ok, scalar(@fill), 'the zone fills with cached tokens, every request served');

my $last = $t->get('/x', headers => [Authorization => "Bearer $fill[-1]"]);
is($last->{headers}{'x-cache'}, 'hit', 'the newest token is cached');

# the zone is full of cache entries: the rate key must still be kept
is($t->get('/x', headers => [Authorization => "Bearer $acme"])->{status},
   200, 'first request of the strict rule: 200');
problem_ok($t->get('/x', headers => [Authorization => "Bearer $acme"]),
           'rate_limited', 'second request: 429, the rate key found room');

# and rate keys do not starve the cache: tokens are cached again
my $again = $t->get('/x', headers => [Authorization => "Bearer $fill[0]"]);
is($again->{status}, 200, 'an evicted token is served');
$again = $t->get('/x', headers => [Authorization => "Bearer $fill[0]"]);
is($again->{headers}{'x-cache'}, 'hit', 'and cached again');

$t->errlog_unlike(qr/rate key not kept|\[crit\]/, 'no rate key was dropped');
$t->errlog_ok;

done_testing;
