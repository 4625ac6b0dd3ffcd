#!/usr/bin/perl

# JWT signature algorithms: every supported alg accepted with its key (token
# cache on and off), tampered signatures refused, tokens without "kid",
# RFC 7515 Appendix A.1, and the key set (JWKS) checks at configuration time.
#
# Tokens come from the independent tool (PyJWT, t/tools/jwt_tool.py) or are
# forged in Perl; nothing here uses the module's own code to make them.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Digest::SHA qw(hmac_sha256);
use Guard::Test;

sub bearer { [Authorization => "Bearer $_[0]"] }

# refused($response, $reason, $name, token => $tok): the whole refusal
sub refused { problem_ok(@_) }

# accepted($response, $name, %want): 200 from the backend echo.
sub accepted {
    my ($r, $name, %want) = @_;
    subtest $name => sub {
        is($r->{status}, 200, 'status 200')
            or diag "$r->{status} $r->{body}";
        my %got = $r->{body} =~ /(\w+)=(\S*)/g;
        is($got{$_}, $want{$_}, "$_=$want{$_}") for sort keys %want;
    };
}

# tamper($token): change one character in the middle of the signature to
# another base64url character; all 6 bits of a non-final character count,
# so the decoded signature changes while staying valid base64url.
sub tamper {
    my ($tok) = @_;
    my ($h, $p, $s) = split /\./, $tok, 3;
    my $i = int(length($s) / 2);
    my $c = substr $s, $i, 1;
    substr($s, $i, 1) = $c eq 'A' ? 'B' : 'A';
    die "tamper: no change" if b64url_decode($s) eq b64url_decode((split /\./, $tok)[2]);
    return "$h.$p.$s";
}

# --- the runtime configuration ------------------------------------------------

my $t = Guard::Test->new;
my $kd = $t->jwt_keys;
my $jwks = JSON::PP->new->decode($t->read_file("$kd/jwks.json"));
my %jwk = map { ($_->{kid} => $_) } @{ $jwks->{keys} };
is(scalar keys %jwk, 13, 'standard key set: 13 keys');

my $enc = JSON::PP->new->canonical;

# only the hs256 key
$t->write_file('one.jwks', $enc->encode({ keys => [ $jwk{hs256} ] }));

# RFC 7515 Appendix A.1 key
my $RFC_K = 'AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow';
$t->write_file('rfc.jwks', $enc->encode({ keys => [
    { kty => 'oct', kid => 'rfc7515-a1', alg => 'HS256', k => $RFC_K } ] }));

my $echo = <<'EOF';
            proxy_set_header X-T $guard_tenant;
            proxy_set_header X-S $guard_subject;
            proxy_set_header X-C $guard_token_cache;
            proxy_set_header X-D $guard_decision;
            proxy_set_header X-Iss $guard_claim_iss;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
EOF

$t->write_conf(http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location /nc/ {
            guard on;
            guard_jwt_cache off;
$echo
        }
        location /c/ {
            guard on;
            guard_jwt_cache on;
$echo
        }
        location /one/ {
            guard on;
            guard_jwt_keys %%DIR%%/one.jwks;
$echo
        }
        location /rfc/ {
            guard on;
            guard_jwt_keys %%DIR%%/rfc.jwks;
$echo
        }
    }
    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / {
            return 200 "ok tenant=\$http_x_t sub=\$http_x_s cache=\$http_x_c decision=\$http_x_d iss=\$http_x_iss\\n";
        }
    }
EOF

$t->run;

# --- every algorithm, cache off and on ------------------------------------------

my %ALG = (hs256 => 'HS256', hs384 => 'HS384', hs512 => 'HS512',
           rs256 => 'RS256', rs384 => 'RS384', rs512 => 'RS512',
           ps256 => 'PS256', ps384 => 'PS384', ps512 => 'PS512',
           es256 => 'ES256', es384 => 'ES384', es512 => 'ES512',
           ed25519 => 'EdDSA');
my @kids = sort keys %ALG;
is_deeply([sort map { $_->{alg} } values %jwk], [sort values %ALG],
          'jwks.json has every supported alg');

my $exp = time() + 3600;
my @tok = $t->mint(map { { kid => $_, claims => {
    sub => "user-$_", tenant_id => 'acme', iss => "iss-$_", exp => $exp } } } @kids);
my %tok = map { ($kids[$_] => $tok[$_]) } 0 .. $#kids;

for my $kid (@kids) {
    my $h = JSON::PP->new->decode(b64url_decode((split /\./, $tok{$kid})[0]));
    is_deeply([$h->{alg}, $h->{kid}], [$ALG{$kid}, $kid], "$kid: token header");
    my %base = (tenant => 'acme', sub => "user-$kid", decision => 'allow',
                iss => "iss-$kid");
    accepted($t->get('/nc/', headers => bearer($tok{$kid})),
             "$ALG{$kid}: accepted, cache off", %base, cache => 'off');
    accepted($t->get('/nc/', headers => bearer($tok{$kid})),
             "$ALG{$kid}: accepted again, cache off", %base, cache => 'off');
    accepted($t->get('/c/', headers => bearer($tok{$kid})),
             "$ALG{$kid}: accepted, cache on (miss)", %base, cache => 'miss');
    accepted($t->get('/c/', headers => bearer($tok{$kid})),
             "$ALG{$kid}: accepted, cache on (hit)", %base, cache => 'hit');
}

# --- one signature byte changed ------------------------------------------------

for my $kid (@kids) {
    my $bad = tamper($tok{$kid});
    refused($t->get('/nc/', headers => bearer($bad)), 'token_invalid',
            "$ALG{$kid}: tampered signature refused, cache off", token => $bad);
    refused($t->get('/c/', headers => bearer($bad)), 'token_invalid',
            "$ALG{$kid}: tampered signature refused, cache on", token => $bad);
}

# a valid token's signature on another token's header+payload
{
    my ($h, $p) = split /\./, $tok{es256};
    my $mixed = "$h.$p." . (split /\./, $tok{es384})[2];
    refused($t->get('/nc/', headers => bearer($mixed)), 'token_invalid',
            'ES256 token with an ES384 signature: refused');
    my ($h2, $p2) = split /\./, $tok{rs256};
    my $other = $t->mint({ kid => 'rs256', claims => {
        sub => 'other', tenant_id => 'acme', exp => $exp } });
    my $swap = "$h2.$p2." . (split /\./, $other)[2];
    refused($t->get('/nc/', headers => bearer($swap)), 'token_invalid',
            'RS256 signature of another payload: refused');
}

# --- tokens without kid --------------------------------------------------------

{
    my %claims = (sub => 'nokid', tenant_id => 'acme', exp => $exp);
    my @nk = $t->mint(map { { kid => $_, no_kid => 1, claims => \%claims } }
                      qw(es256 hs256 ed25519 ps384));
    for my $nk (@nk) {
        my $h = JSON::PP->new->decode(b64url_decode((split /\./, $nk)[0]));
        ok(!exists $h->{kid}, "no kid in the $h->{alg} header");
        accepted($t->get('/nc/', headers => bearer($nk)),
                 "$h->{alg} without kid: accepted (a key has that alg)",
                 sub => 'nokid', tenant => 'acme');
        accepted($t->get('/c/', headers => bearer($nk)),
                 "$h->{alg} without kid: accepted, cache on",
                 sub => 'nokid', tenant => 'acme');
    }
    # /one/ only has the hs256 key
    accepted($t->get('/one/', headers => bearer($nk[1])),
             'HS256 without kid: accepted by the single-key set', sub => 'nokid');
    for my $i (0, 2, 3) {
        my $alg = JSON::PP->new->decode(b64url_decode((split /\./, $nk[$i])[0]))->{alg};
        refused($t->get('/one/', headers => bearer($nk[$i])), 'token_alg_refused',
                "$alg without kid, no key with that alg: token_alg_refused",
                token => $nk[$i]);
    }
    # a kid the single-key set lacks
    refused($t->get('/one/', headers => bearer($tok{es256})), 'token_key_unknown',
            'kid es256 unknown to the single-key set');
    # no kid, HS256, but signed with another HMAC secret
    my $wrong = $t->mint({ kid => 'hs256', alg => 'HS256', no_kid => 1,
                           key => "$kd/hs512.key", claims => \%claims });
    refused($t->get('/one/', headers => bearer($wrong)), 'token_invalid',
            'HS256 without kid, wrong secret: token_invalid');
}

# --- RFC 7515 Appendix A.1 -----------------------------------------------------

{
    my $rfc = 'eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9'
            . '.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ'
            . '.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
    my ($h, $p, $s) = split /\./, $rfc;
    my $key = b64url_decode($RFC_K);
    is(length $key, 64, 'RFC 7515 A.1 key is 64 bytes');
    is(b64url_decode($h), qq({"typ":"JWT",\r\n "alg":"HS256"}), 'RFC header bytes');
    is(b64url_decode($p),
       qq({"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}),
       'RFC payload bytes');
    is(hmac_sha256("$h.$p", $key), b64url_decode($s),
       'RFC 7515 A.1 signature verifies in Perl with the RFC key');

    # the signature is checked before the claims: expired, not invalid
    refused($t->get('/rfc/', headers => bearer($rfc)), 'token_expired',
            'RFC 7515 A.1 token: signature verified, then token_expired',
            token => $rfc);
    # the standard set's HS256 key does not verify it
    refused($t->get('/nc/', headers => bearer($rfc)), 'token_invalid',
            'RFC 7515 A.1 token against another HS256 key: token_invalid');
    refused($t->get('/rfc/', headers => bearer(tamper($rfc))), 'token_invalid',
            'RFC 7515 A.1 token with a changed signature: token_invalid');

    my $hdr = qq({"typ":"JWT",\r\n "alg":"HS256"});
    my $payload = json_enc({ iss => 'joe', exp => time() + 3600,
                             'http://example.com/is_root' => JSON::PP::true,
                             tenant_id => 'acme' });
    my $adapted = forge_hs($hdr, $payload, $key);
    is((split /\./, $adapted)[0], $h, 'adapted token keeps the RFC header bytes');
    accepted($t->get('/rfc/', headers => bearer($adapted)),
             'adapted RFC 7515 A.1 token (exp in the future): accepted',
             iss => 'joe', tenant => 'acme', decision => 'allow');
    # the same through forge_raw with a Perl HMAC
    my $raw = forge_raw($hdr, $payload, '');
    $raw .= b64url(hmac_sha256(substr($raw, 0, -1), $key));
    is($raw, $adapted, 'forge_raw + hmac_sha256 gives the same token');
}

$t->errlog_ok('runtime: error.log has no alert/emerg');

# --- key set rejected at configuration time ------------------------------------

my $tc = Guard::Test->new;    # nginx -t only; uses the key files of $t

sub conf_for {
    my ($file, %o) = @_;
    my $keys = defined $file ? "guard_jwt_keys $file;" : '';
    $tc->write_conf(http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / {
            guard on;
            $keys
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }
EOF
}

sub pub { my %k = %{ $jwk{ $_[0] } }; return \%k }

my $ex = $tc->dir . '/extra';
my $rsa1024 = $tc->jwt_gen(kty => 'RSA', bits => 1024, kid => 'weak', alg => 'RS256', dir => $ex);
my $oct16   = $tc->jwt_gen(kty => 'oct', size => 16, kid => 'short16', alg => 'HS256', dir => $ex);
my $oct32   = $tc->jwt_gen(kty => 'oct', size => 32, kid => 'short32', alg => 'HS512', dir => $ex);
my $p256    = $tc->jwt_gen(kty => 'EC', crv => 'P-256', kid => 'p256-es384', alg => 'ES384', dir => $ex);

my @bad = (
    [ 'key without alg',
      { keys => [ do { my $k = pub('rs256'); delete $k->{alg}; $k } ] },
      qr/keys\[0\] \(kid "rs256"\): no "alg"/ ],
    [ 'key without kid',
      { keys => [ pub('hs256'), do { my $k = pub('es256'); delete $k->{kid}; $k } ] },
      qr/keys\[1\]: no "kid"/ ],
    [ 'RS256 on an EC key',
      { keys => [ { %{ pub('es256') }, alg => 'RS256' } ] },
      qr/"alg" does not fit "kty"/ ],
    [ 'HS256 on an RSA key',
      { keys => [ { %{ pub('rs256') }, alg => 'HS256' } ] },
      qr/"alg" does not fit "kty"/ ],
    [ 'EdDSA on an oct key',
      { keys => [ { %{ pub('hs256') }, alg => 'EdDSA' } ] },
      qr/"alg" does not fit "kty"/ ],
    [ 'RSA 1024-bit key',
      { keys => [ $rsa1024 ] },
      qr/kid "weak"\): RSA key shorter than 2048 bits/ ],
    [ 'HS256 with a 16-byte secret',
      { keys => [ $oct16 ] },
      qr/kid "short16"\): oct key shorter than the hash output/ ],
    [ 'HS512 with a 32-byte secret',
      { keys => [ $oct32 ] },
      qr/kid "short32"\): oct key shorter than the hash output/ ],
    [ 'ES384 on a P-256 key',
      { keys => [ $p256 ] },
      qr/kid "p256-es384"\): "crv" does not fit "alg"/ ],
    [ 'duplicate kid',
      { keys => [ pub('hs256'), { %{ pub('hs384') }, kid => 'hs256' } ] },
      qr/keys\[1\]: duplicate kid "hs256"/ ],
    [ 'private member "d" (EC)',
      { keys => [ { %{ pub('es256') }, d => b64url('x' x 32) } ] },
      qr/private key material/ ],
    [ 'private member "d" (RSA)',
      { keys => [ { %{ pub('rs256') }, d => b64url('x' x 256) } ] },
      qr/private key material/ ],
    [ 'use "enc"',
      { keys => [ { %{ pub('rs256') }, use => 'enc' } ] },
      qr/"use" is not "sig"/ ],
    [ 'empty keys array',
      { keys => [] },
      qr/the key set is empty/ ],
    [ 'alg "none"',
      { keys => [ { %{ pub('hs256') }, alg => 'none' } ] },
      qr/unsupported "alg"/ ],
);

for my $case (@bad) {
    my ($name, $doc, $re) = @$case;
    (my $fn = $name) =~ s/\W+/_/g;
    my $path = $tc->write_file("jwks/$fn.json", $enc->encode($doc));
    conf_for($path);
    my ($rc, $out) = $tc->test_conf;
    subtest "JWKS rejected: $name" => sub {
        isnt($rc, 0, 'nginx -t fails');
        like($out, qr/\[emerg\] guard_jwt_keys "\Q$path\E": /, 'names the file');
        like($out, $re, 'names the reason');
    } or diag $out;
}

{
    my $path = $tc->write_file('jwks/invalid.json',
        qq({\n  "keys": [\n    {"kid": "a" "alg": "HS256"}\n  ]\n}\n));
    conf_for($path);
    my ($rc, $out) = $tc->test_conf;
    subtest 'JWKS rejected: invalid JSON' => sub {
        isnt($rc, 0, 'nginx -t fails');
        like($out, qr/guard_jwt_keys "\Q$path\E": line 3, column \d+: \S/,
             'names the file, line and column');
    } or diag $out;
}

{
    conf_for(undef);
    my ($rc, $out) = $tc->test_conf;
    my $conf = $tc->dir . '/nginx.conf';
    subtest 'guard on without guard_jwt_keys' => sub {
        isnt($rc, 0, 'nginx -t fails');
        like($out, qr/"guard" is on but no "guard_jwt_keys" is set/, 'reason');
        like($out, qr/in \Q$conf\E:\d+/, 'names nginx.conf');
    } or diag $out;
}

{
    conf_for("$kd/jwks.json");
    my ($rc, $out) = $tc->test_conf;
    subtest 'valid key set passes nginx -t' => sub {
        is($rc, 0, 'nginx -t succeeds');
        like($out, qr/syntax is ok/, 'syntax is ok');
        like($out, qr/test is successful/, 'test is successful');
    } or diag $out;
}

$tc->errlog_ok('config checks: error.log has no alert/emerg');
$t->errlog_ok;

done_testing;
