#!/usr/bin/perl

# Robustness of the token path: a bounded, seeded stream of mutated and
# hostile tokens.  Many are correctly signed (HMAC in Perl), so that the
# header and payload parsers really see the hostile JSON.  Every answer
# must be a clean 200/400/401/403 with a problem+json body on refusal, and
# no worker may crash.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use Guard::Test;

my $N = $ENV{GUARD_FUZZ_N} || 1500;

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $secret = do {
    local $/;
    open my $f, '<', "$keys/hs256.key" or die "hs256.key: $!";
    binmode $f;
    <$f>;
};

$t->write_conf(http => <<'CONF');
    server {
        listen 127.0.0.1:%%PORT_0%%;
        large_client_header_buffers 4 256k;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location / {
            guard on;
            guard_tenant $http_x_tenant_id;
            guard_tenant_claim /org/tenants;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Claim $guard_claim_x;
            proxy_set_header X-Sub $guard_subject;
        }

        location /nocache/ {
            guard on;
            guard_jwt_cache off;
            guard_tenant $http_x_tenant_id;
            guard_tenant_claim /org/tenants;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        large_client_header_buffers 4 256k;
        location / { return 200 "ok\n"; }
    }
CONF
$t->run;

srand(20261121);

my $exp = time() + 3600;
my @values = (
    '0', '-1', '1e308', '-1e308', '1.5', 'null', 'true', 'false', '""',
    '"\u0000"', '"\ud800"', '"\uffff"', '[]', '{}', '[[[[[]]]]]',
    '{"a":{"b":{"c":{}}}}', '"' . ('x' x 3000) . '"',
    '18446744073709551616', '"acme"', '["acme",1]', '["acme"]',
    '{"tenants":"acme"}', '"a\r\nb"', '"\u00e9"', '9007199254740993',
    '9223372036854775807', '-9223372036854775807', '253402300800', '1e400',
);

sub rv { $values[int rand @values] }

sub random_header {
    my @h = (
        '{"alg":"HS256","kid":"hs256"}',
        '{"alg":"HS256"}',
        '{"alg":"HS256","kid":' . rv() . '}',
        '{"alg":' . rv() . ',"kid":"hs256"}',
        '{"alg":"HS256","kid":"hs256","crit":' . rv() . '}',
        '{"alg":"HS256","kid":"hs256","alg":"HS256"}',
        '{"alg":"HS256","kid":"hs256","jwk":' . rv() . '}',
        '[' . rv() . ']',
        rv(),
        '{"alg":"HS256","kid":"hs256"',
        "{\"alg\":\"HS256\",\"kid\":\"hs256\"}\x00",
        '{"alg":"HS256","kid":"hs256","x":'
            . ('[' x 3000) . (']' x 3000) . '}',
    );
    return $h[int rand @h];
}

sub random_payload {
    my @p = (
        qq({"exp":$exp,"org":{"tenants":["acme"]},"x":) . rv() . '}',
        qq({"exp":) . rv() . qq(,"org":{"tenants":"acme"}}),
        qq({"exp":$exp,"nbf":) . rv() . qq(,"iat":) . rv()
            . qq(,"org":{"tenants":"acme"}}),
        qq({"exp":$exp,"sub":) . rv() . qq(,"aud":) . rv()
            . qq(,"org":{"tenants":"acme"}}),
        qq({"exp":$exp,"org":) . rv() . '}',
        qq({"exp":$exp,"org":{"tenants":) . rv() . '}}',
        qq({"exp":$exp,"exp":$exp}),
        '[' . rv() . ']',
        rv(),
        qq({"exp":$exp,"x":) . ('{"a":' x 2500) . '1' . ('}' x 2500) . '}',
        join('', map { chr int rand 256 } 1 .. 1 + int rand 64),
    );
    return $p[int rand @p];
}

sub mutate {
    my ($tok) = @_;
    my $n = length $tok;
    my $k = int rand 6;

    if ($k == 0) {              # replace a character
        my $i = int rand $n;
        substr($tok, $i, 1) = substr('AZaz09-_.=+/%', int rand 13, 1);
    } elsif ($k == 1) {         # truncate
        $tok = substr $tok, 0, int rand $n;
    } elsif ($k == 2) {         # repeat a segment
        my @s = split /\./, $tok, -1;
        $tok = join '.', @s, $s[int rand @s];
    } elsif ($k == 3) {         # swap header and payload
        my @s = split /\./, $tok, -1;
        @s[0, 1] = @s[1, 0] if @s > 1;
        $tok = join '.', @s;
    } elsif ($k == 4) {         # drop the signature
        $tok =~ s/\.[^.]*$/./;
    }                           # 5: unchanged

    return $tok;
}

my (%status, $bad, $ok200);

for my $i (1 .. $N) {
    my $tok = forge_hs(random_header(), random_payload(), $secret);
    $tok = mutate($tok) if $i % 3 == 0;

    my $path = ($i % 2) ? "/t$i" : "/nocache/t$i";
    my $r = $t->get($path, headers => [
        Authorization => "Bearer $tok", 'X-Tenant-Id' => 'acme' ]);

    my $s = $r->{status} // 'none';
    $status{$s}++;

    if ($s !~ /^(?:200|400|401|403)$/) {
        $bad++;
        diag "token #$i: status $s";
        next;
    }

    if ($s == 200) {
        $ok200++;
        next;
    }

    my $doc = eval { decode_json($r->{body}) };
    unless ($doc && $doc->{reason} && $doc->{status} == $s
            && (length($tok) < 8 || index($r->{body}, $tok) < 0))
    {
        $bad++;
        diag "token #$i: bad problem body ($s): " . substr($r->{body} // "", 0, 120);
    }
}

ok(!$bad, "$N hostile tokens: every answer a clean 200/400/401/403")
    or diag explain \%status;
ok($ok200, 'some signed hostile payloads were still valid tokens (200)');
ok(($status{401} // 0) > $N / 4, 'most hostile tokens were refused with 401');
note explain \%status;

my $good = forge_hs('{"alg":"HS256","kid":"hs256"}',
                    qq({"exp":$exp,"org":{"tenants":["acme"]}}), $secret);
my $after = $t->get('/x', headers => [
    Authorization => "Bearer $good", 'X-Tenant-Id' => 'acme' ]);
is($after->{status}, 200, 'the gateway still serves afterwards');

$t->errlog_unlike(qr/exited on signal|\[crit\]/, 'no worker crashed');
$t->errlog_ok;

done_testing;
