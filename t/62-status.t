#!/usr/bin/perl

# guard_status: the counts of decisions (allowed, refused and shadow
# refusals per reason), shared by the workers and kept across a reload.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Guard::Test;

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;

$t->write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "limits": {
    "rate": [
      {"name": "api", "requests": 1, "period": "1h", "shadow": true}
    ]
  }
}
JSON

$t->write_conf(workers => 2, http => <<'CONF');
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location / {
            guard on;
            empty_gif;
        }

        location = /status {
            guard_status;
        }
    }
CONF
$t->run;

sub status {
    my $r = $t->get('/status');
    is($r->{status}, 200, 'status answers 200');
    is($r->{headers}{'content-type'}, 'application/json', 'as JSON');
    return JSON::PP->new->decode($r->{body});
}

my $s0 = status();
is($s0->{allowed}, 0, 'nothing allowed yet');
is_deeply($s0->{refused}, {}, 'nothing refused yet');
like($s0->{policy_version}, qr/^[0-9a-f]{64}$/, 'the policy version');

my $tok = $t->mint({ kid => 'hs256',
                     claims => { sub => 'u', tenant_id => 'acme',
                                 exp => time() + 3600 } });

# 4 allowed (the 2nd to 4th are shadow refusals), 3 refused without token
for (1 .. 4) {
    is($t->get('/x', headers => [Authorization => "Bearer $tok"])->{status},
       200, 'allowed');
}
for (1 .. 3) {
    is($t->get('/x')->{status}, 401, 'no token: 401');
}

my $s1 = status();
is($s1->{allowed}, 4, 'allowed: 4, counted by both workers together');
is($s1->{refused}{token_missing}, 3, 'refused: token_missing 3');
is($s1->{shadow}{rate_limited}, 3, 'shadow: rate_limited 3');

ok($t->reload, 'reload');
my $s2 = status();
is($s2->{allowed}, 4, 'the counts survive a reload');
is($s2->{refused}{token_missing}, 3, 'refusals too');

is($t->http('POST', '/status', body => 'x')->{status}, 405,
   'status is read-only');

$t->errlog_ok;

done_testing;
