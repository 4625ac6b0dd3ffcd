#!/usr/bin/perl

# JWT refusals: missing / malformed / oversize tokens, alg none, alg
# mismatch and confusion, unknown kids, crit, key-carrying headers, time
# claims and leeway, max lifetime (also against the time left, whatever
# iat says), NumericDate ranges, canonical base64url (one spelling per
# token), NUL and invalid UTF-8 in the payload, issuer and audience, tenant
# missing, nothing of the token echoed, duplicate JSON members.  Every refusal is
# checked as a whole problem+json response, and against the access log
# ($guard_decision, $guard_reason, $guard_decision_id).
#
# Keys: hs256 and rs256 of the standard set.  Tokens come from PyJWT
# ($t->mint) or are forged in Perl (forge_hs / forge_raw).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Digest::SHA ();
use Guard::Test;

my %STATUS = (tenant_unaddressed => 400, tenant_missing => 403,
              tenant_mismatch => 403);

my @decisions;    # [status, decision, reason, id] expected in guard.log

sub bearer { [Authorization => "Bearer $_[0]"] }

# refused($response, $reason, $name, token => $tok): the whole refusal,
# remembered for the access log check
sub refused {
    my ($r, $reason) = @_;
    my $id = problem_ok(@_);
    my $status = $STATUS{$reason} // 401;
    push @decisions, [$status, 'deny', $reason, $id] if defined $id;
    return $id;
}

# accepted($response, $name, %want): 200 from the backend echo.
sub accepted {
    my ($r, $name, %want) = @_;
    subtest $name => sub {
        is($r->{status}, 200, 'status 200')
            or diag "got: $r->{status} $r->{body}";
        my %got = $r->{body} =~ /(\w+)=(\S*)/g;
        is($got{$_}, $want{$_}, "$_=$want{$_}") for sort keys %want;
        like($got{id} // '', $UUID7, '$guard_decision_id is a UUIDv7');
        push @decisions, [200, 'allow', '-', $got{id}] if $got{id};
    };
}

# --- configuration --------------------------------------------------------------

my $t = Guard::Test->new;
my $kd = $t->jwt_keys;
my $dir = $t->dir;
my %jwk = map { ($_ => JSON::PP->new->decode($t->read_file("$kd/$_.jwk.json"))) }
          qw(hs256 rs256);
$t->write_file('keys.jwks', JSON::PP->new->canonical->encode(
    { keys => [ $jwk{hs256}, $jwk{rs256} ] }));

my $HS = $t->read_file("$kd/hs256.key");          # raw HMAC secret
my $RS_PUB = $t->read_file("$kd/rs256.pub.pem");  # RSA public key PEM text
ok(length $HS == 32 && $RS_PUB =~ /BEGIN PUBLIC KEY/, 'key material read');

my $echo = <<'EOF';
            proxy_set_header X-T $guard_tenant;
            proxy_set_header X-S $guard_subject;
            proxy_set_header X-Id $guard_decision_id;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
EOF

$t->write_conf(http => <<"EOF");
    log_format guard '\$status \$guard_decision \$guard_reason \$guard_decision_id';
    server {
        listen 127.0.0.1:%%PORT_0%%;
        large_client_header_buffers 4 32k;
        access_log %%DIR%%/guard.log guard;
        guard_jwt_keys %%DIR%%/keys.jwks;

        location / {
            guard on;
$echo
        }
        location /cookie/ {
            guard on;
            guard_jwt_token \$cookie_tok;
$echo
        }
        location /leeway0/ {
            guard on;
            guard_jwt_leeway 0;
$echo
        }
        location /life/ {
            guard on;
            guard_jwt_max_lifetime 1h;
$echo
        }
        location /issaud/ {
            guard on;
            guard_jwt_issuer https://a.example https://b.example;
            guard_jwt_audience api1 api2;
$echo
        }
    }
    server {
        listen 127.0.0.1:%%PORT_1%%;
        large_client_header_buffers 4 32k;    # the proxied Cookie header
        location / {
            return 200 "ok tenant=\$http_x_t sub=\$http_x_s id=\$http_x_id\\n";
        }
    }
EOF

$t->run;

my $now = time();
my %ok = (tenant_id => 'acme', sub => 'alice', exp => $now + 3600);
my $HDR = { alg => 'HS256', kid => 'hs256' };

# HS256 tokens with the standard hs256 secret
sub hs { forge_hs($_[1] // $HDR, $_[0], $HS) }

# sanity: PyJWT and Perl tokens are accepted
accepted($t->get('/', headers => bearer($t->mint({ kid => 'hs256', claims => \%ok }))),
         'PyJWT HS256 token accepted', tenant => 'acme', sub => 'alice');
accepted($t->get('/', headers => bearer($t->mint({ kid => 'rs256', claims => \%ok }))),
         'PyJWT RS256 token accepted', tenant => 'acme', sub => 'alice');
accepted($t->get('/', headers => bearer(hs({ %ok }))),
         'Perl-forged HS256 token accepted', tenant => 'acme', sub => 'alice');

# --- missing ----------------------------------------------------------------------

refused($t->get('/'), 'token_missing', 'no Authorization: token_missing');
refused($t->get('/', headers => [Authorization => 'Basic YWxpY2U6c2VjcmV0']),
        'token_missing', 'Authorization: Basic: token_missing');
refused($t->get('/', headers => [Authorization => 'Bearer']),
        'token_missing', 'Authorization: Bearer (empty): token_missing');
refused($t->get('/cookie/', headers => bearer(hs({ %ok }))),
        'token_missing', 'cookie location ignores Authorization: token_missing');

# --- malformed ----------------------------------------------------------------------

{
    my $good = hs({ %ok });
    my ($h, $p, $s) = split /\./, $good;
    my $hdr_json = json_enc($HDR);
    is(length($hdr_json) % 3, 2, 'header length needs one "=" of padding');
    my %mal = (
        'abc'                          => 'abc',
        'a.b'                          => 'a.b',
        'a.b.c.d'                      => 'a.b.c.d',
        'four segments of a good token' => "$good.$s",
        '"*" in the header segment'    => "$h*.$p.$s",
        '"+" in the signature segment' => "$h.$p." . substr($s, 0, 10) . '+' . substr($s, 11),
        '"/" in the payload segment'   => "$h.$p/.$s",
        'padding "=" in the header'    => b64url($hdr_json) . "=.$p.$s",
        'padding "=" in the signature' => "$h.$p.$s=",
        'header not JSON'              => hs({ %ok }, 'alg=HS256,kid=hs256'),
        'header a JSON array'          => hs({ %ok }, '["HS256","hs256"]'),
        'header alg not a string'      => hs({ %ok }, '{"alg":256,"kid":"hs256"}'),
        'header kid not a string'      => hs({ %ok }, '{"alg":"HS256","kid":7}'),
        'duplicate member in the header' =>
            hs({ %ok }, '{"alg":"HS256","kid":"hs256","kid":"hs256"}'),
        'payload not JSON'             => hs('tenant_id=acme'),
        'payload a JSON array'         => hs(qq([{"tenant_id":"acme","exp":$ok{exp}}])),
    );
    for my $name (sort keys %mal) {
        refused($t->get('/', headers => bearer($mal{$name})), 'token_malformed',
                "malformed ($name): token_malformed", token => $mal{$name});
    }
}

# --- oversize (cookie) ----------------------------------------------------------------

{
    # largest token <= 8192 bytes and one just above, both correctly signed
    my ($fit, $over);
    for my $n (6000 .. 6200) {
        my $tok = hs({ %ok, pad => 'x' x $n });
        $fit = $tok if length $tok <= 8192;
        if (length $tok > 8192) { $over = $tok; last }
    }
    ok($fit && length $fit > 8180 && $over && length $over <= 8195,
       'tokens around 8 KiB: ' . length($fit) . ' and ' . length($over));
    accepted($t->get('/cookie/', headers => [Cookie => "tok=$fit"]),
             'token of ' . length($fit) . ' bytes via cookie: accepted',
             tenant => 'acme');
    refused($t->get('/cookie/', headers => [Cookie => "tok=$over"]),
            'token_oversize', 'token of ' . length($over) . ' bytes: token_oversize',
            token => $over);
    my $big = hs({ %ok, pad => 'y' x 12000 });
    refused($t->get('/cookie/', headers => [Cookie => "a=b; tok=$big; c=d"]),
            'token_oversize', 'token of ' . length($big) . ' bytes: token_oversize',
            token => $big);
}

# --- alg none ---------------------------------------------------------------------------

{
    my $none_kid = forge_raw({ alg => 'none', kid => 'hs256' }, { %ok }, '');
    my $none     = forge_raw({ alg => 'none' }, { %ok }, '');
    like($none_kid, qr/\.$/, 'alg none token has an empty signature');
    refused($t->get('/', headers => bearer($none_kid)), 'token_alg_refused',
            'alg none with kid hs256: token_alg_refused', token => $none_kid);
    refused($t->get('/', headers => bearer($none)), 'token_alg_refused',
            'alg none without kid: token_alg_refused', token => $none);
    my $py_none = $t->mint({ alg => 'none', claims => \%ok });
    refused($t->get('/', headers => bearer($py_none)), 'token_alg_refused',
            'PyJWT alg none: token_alg_refused', token => $py_none);
    # "none" with some signature bytes anyway
    my $none_sig = forge_raw({ alg => 'none', kid => 'hs256' }, { %ok }, 'x' x 32);
    refused($t->get('/', headers => bearer($none_sig)), 'token_alg_refused',
            'alg none with a signature: token_alg_refused', token => $none_sig);
    # a correct header but the signature stripped
    my ($h, $p) = split /\./, hs({ %ok });
    refused($t->get('/', headers => bearer("$h.$p.")), 'token_alg_refused',
            'HS256 with the signature stripped: token_alg_refused', token => "$h.$p.");
}

# --- alg mismatch and confusion -------------------------------------------------------------

{
    my @mm = $t->mint(
        { kid => 'rs256', alg => 'RS384', key => "$kd/rs256.pem", claims => \%ok },
        { kid => 'rs256', alg => 'PS256', key => "$kd/rs256.pem", claims => \%ok },
        { kid => 'hs256', alg => 'HS384', key => "$kd/hs256.key", claims => \%ok },
    );
    refused($t->get('/', headers => bearer($mm[0])), 'token_alg_refused',
            'kid rs256 with alg RS384: token_alg_refused', token => $mm[0]);
    refused($t->get('/', headers => bearer($mm[1])), 'token_alg_refused',
            'kid rs256 with alg PS256: token_alg_refused', token => $mm[1]);
    refused($t->get('/', headers => bearer($mm[2])), 'token_alg_refused',
            'kid hs256 with alg HS384: token_alg_refused', token => $mm[2]);
    my $rs_hs = forge_hs({ alg => 'HS256', kid => 'rs256' }, { %ok }, $HS);
    refused($t->get('/', headers => bearer($rs_hs)), 'token_alg_refused',
            'kid rs256 with alg HS256: token_alg_refused', token => $rs_hs);

    # alg confusion: HMAC with the RSA public key PEM as the secret
    my $conf_kid = forge_hs({ alg => 'HS256', kid => 'rs256' }, { %ok }, $RS_PUB);
    refused($t->get('/', headers => bearer($conf_kid)), 'token_alg_refused',
            'alg confusion, kid rs256, HMAC keyed with the PEM: token_alg_refused',
            token => $conf_kid);
    my $conf_nokid = forge_hs({ alg => 'HS256' }, { %ok }, $RS_PUB);
    my $r = $t->get('/', headers => bearer($conf_nokid));
    isnt($r->{status}, 200, 'alg confusion without kid: not accepted');
    my $reason = eval { JSON::PP->new->decode($r->{body})->{reason} } // '';
    ok($reason eq 'token_alg_refused' || $reason eq 'token_invalid',
       "alg confusion without kid: reason $reason");
    refused($r, $reason || 'token_invalid',
            'alg confusion without kid, HMAC keyed with the PEM: 401',
            token => $conf_nokid);
    # the same with the trailing newline stripped from the PEM
    (my $pem = $RS_PUB) =~ s/\n\z//;
    my $conf2 = forge_hs({ alg => 'HS256', kid => 'rs256' }, { %ok }, $pem);
    refused($t->get('/', headers => bearer($conf2)), 'token_alg_refused',
            'alg confusion with the PEM sans newline: token_alg_refused',
            token => $conf2);
}

# --- unknown kid ---------------------------------------------------------------------------

{
    my $unk = $t->mint({ kid => 'nope-unknown', alg => 'HS256',
                         key => "$kd/hs256.key", claims => \%ok });
    refused($t->get('/', headers => bearer($unk)), 'token_key_unknown',
            'unknown kid: token_key_unknown', token => $unk);
    my $case = forge_hs({ alg => 'HS256', kid => 'HS256' }, { %ok }, $HS);
    refused($t->get('/', headers => bearer($case)), 'token_key_unknown',
            'kid compared case-sensitively ("HS256"): token_key_unknown',
            token => $case);

    $t->errlog_mark;
    for my $kid ('../../etc/passwd', '/etc/passwd', '', "hs256 ", 'file:///etc/passwd') {
        my $tok = forge_hs({ alg => 'HS256', kid => $kid }, { %ok }, $HS);
        (my $show = $kid) =~ s/([^\x21-\x7e])/sprintf '\\x%02x', ord $1/ge;
        refused($t->get('/', headers => bearer($tok)), 'token_key_unknown',
                "kid \"$show\": token_key_unknown", token => $tok);
    }
    # a NUL inside the kid: the header JSON has "\u0000", refused as it
    # is read, never compared as a shorter C string
    my $nul_hdr = json_enc({ alg => 'HS256', kid => "rs256\x{0}x" });
    like($nul_hdr, qr/\\u0000/, 'header text carries \u0000');
    my $nul = forge_hs($nul_hdr, { %ok }, $HS);
    my $r = $t->get('/', headers => bearer($nul));
    is($r->{status}, 401, 'kid "rs256\u0000x": 401');
    like($r->{headers}{'www-authenticate'} // '', qr/error="invalid_token"/,
         'kid "rs256\u0000x": error="invalid_token"');
    refused($r, 'token_malformed', 'kid "rs256\u0000x": token_malformed',
            token => $nul);
    $t->errlog_unlike(qr/passwd/, 'error.log never mentions passwd', since_mark => 1);
}

# --- crit --------------------------------------------------------------------------------

{
    my $crit = hs({ %ok }, { alg => 'HS256', kid => 'hs256', crit => ['exp'], exp => $ok{exp} });
    refused($t->get('/', headers => bearer($crit)), 'token_crit_refused',
            'crit ["exp"]: token_crit_refused', token => $crit);
    my $b64 = hs({ %ok }, { alg => 'HS256', kid => 'hs256', b64 => JSON::PP::false,
                            crit => ['b64'] });
    refused($t->get('/', headers => bearer($b64)), 'token_crit_refused',
            '"b64": false with crit ["b64"]: token_crit_refused', token => $b64);
    my $py_crit = $t->mint({ kid => 'rs256', claims => \%ok,
                             header => { crit => ['x-ext'], 'x-ext' => 1 } });
    refused($t->get('/', headers => bearer($py_crit)), 'token_crit_refused',
            'PyJWT RS256 with crit ["x-ext"]: token_crit_refused', token => $py_crit);
    my $empty = hs({ %ok }, { alg => 'HS256', kid => 'hs256', crit => [] });
    refused($t->get('/', headers => bearer($empty)), 'token_crit_refused',
            'crit [] (not allowed by RFC 7515): token_crit_refused', token => $empty);
}

# --- jku / x5u / jwk headers never select a key ---------------------------------------------

{
    my $ad = "$dir/attacker";
    my $att = $t->jwt_gen(kty => 'EC', crv => 'P-256', kid => 'attacker',
                          alg => 'ES256', dir => $ad);
    my $att_oct = $t->jwt_gen(kty => 'oct', size => 32, kid => 'attacker-hs',
                              alg => 'HS256', dir => $ad);
    my %extra = (jku => 'http://127.0.0.1:1/jwks',
                 x5u => 'http://127.0.0.1:1/cert.pem',
                 jwk => $att);
    my $legit = $t->mint({ kid => 'hs256', claims => \%ok, header => \%extra });
    my $h = JSON::PP->new->decode(b64url_decode((split /\./, $legit)[0]));
    ok($h->{jku} && $h->{x5u} && ref $h->{jwk} eq 'HASH', 'header carries jku, x5u, jwk');
    accepted($t->get('/', headers => bearer($legit)),
             'hs256 token with jku/x5u/jwk headers: verified normally', tenant => 'acme');

    my @evil = $t->mint(
        # attacker key, its public JWK embedded, kid not in the set
        { kid => 'attacker', alg => 'ES256', key => "$ad/attacker.pem",
          claims => \%ok, header => { jwk => $att, jku => 'http://127.0.0.1:1/jwks' } },
        # the same without kid
        { kid => 'attacker', alg => 'ES256', key => "$ad/attacker.pem", no_kid => 1,
          claims => \%ok, header => { jwk => $att } },
        # claims a known kid, signed with the embedded attacker key
        { kid => 'rs256', alg => 'ES256', key => "$ad/attacker.pem",
          claims => \%ok, header => { jwk => $att } },
        # kid hs256, HMAC with the attacker's secret that it embeds
        { kid => 'hs256', alg => 'HS256', key => "$ad/attacker-hs.key",
          claims => \%ok, header => { jwk => $att_oct } },
    );
    refused($t->get('/', headers => bearer($evil[0])), 'token_key_unknown',
            'attacker key with embedded jwk, unknown kid: token_key_unknown',
            token => $evil[0]);
    refused($t->get('/', headers => bearer($evil[1])), 'token_alg_refused',
            'attacker ES256 key with embedded jwk, no kid: token_alg_refused',
            token => $evil[1]);
    refused($t->get('/', headers => bearer($evil[2])), 'token_alg_refused',
            'attacker ES256 key claiming kid rs256: token_alg_refused',
            token => $evil[2]);
    refused($t->get('/', headers => bearer($evil[3])), 'token_invalid',
            'kid hs256 signed with the embedded attacker oct key: token_invalid',
            token => $evil[3]);
}

# --- exp / nbf and leeway ------------------------------------------------------------------

{
    $now = time();
    my %base = (tenant_id => 'acme', sub => 'alice');
    my @tk = $t->mint(map { { kid => 'hs256', claims => { %base, %$_ } } }
        { exp => $now - 3600 },
        { exp => $now - 10 },
        { exp => $now - 60 },
        { exp => $now + 3600, nbf => $now + 10 },
        { exp => $now + 3600, nbf => $now + 60 },
        { exp => $now - 2 },
        { exp => $now + 3600, nbf => $now - 60 },
    );
    refused($t->get('/', headers => bearer($tk[0])), 'token_expired',
            'exp = now-3600: token_expired', token => $tk[0]);
    accepted($t->get('/', headers => bearer($tk[1])),
             'exp = now-10, within the default 30s leeway: accepted', tenant => 'acme');
    refused($t->get('/', headers => bearer($tk[2])), 'token_expired',
            'exp = now-60, beyond the leeway: token_expired', token => $tk[2]);
    accepted($t->get('/', headers => bearer($tk[3])),
             'nbf = now+10, within the leeway: accepted', tenant => 'acme');
    refused($t->get('/', headers => bearer($tk[4])), 'token_not_yet_valid',
            'nbf = now+60: token_not_yet_valid', token => $tk[4]);
    refused($t->get('/leeway0/', headers => bearer($tk[5])), 'token_expired',
            'guard_jwt_leeway 0: exp = now-2: token_expired', token => $tk[5]);
    accepted($t->get('/', headers => bearer($tk[5])),
             'default leeway: exp = now-2: accepted', tenant => 'acme');
    accepted($t->get('/leeway0/', headers => bearer($tk[6])),
             'guard_jwt_leeway 0: nbf in the past, exp in the future: accepted',
             tenant => 'acme');
    refused($t->get('/leeway0/', headers => bearer($tk[3])), 'token_not_yet_valid',
            'guard_jwt_leeway 0: nbf = now+10: token_not_yet_valid', token => $tk[3]);
    # expired tokens stay refused when asked again (token cache on)
    refused($t->get('/', headers => bearer($tk[0])), 'token_expired',
            'exp = now-3600 again: token_expired', token => $tk[0]);
    refused($t->get('/', headers => bearer($tk[4])), 'token_not_yet_valid',
            'nbf = now+60 again: token_not_yet_valid', token => $tk[4]);

    my $noexp = hs({ tenant_id => 'acme' });
    refused($t->get('/', headers => bearer($noexp)), 'token_claim_invalid',
            'no exp: token_claim_invalid', token => $noexp);
    my $e = $now + 3600;
    my $strexp = hs(qq({"exp":"$e","tenant_id":"acme"}));
    refused($t->get('/', headers => bearer($strexp)), 'token_claim_invalid',
            'exp as a string: token_claim_invalid', token => $strexp);
    my $nullexp = hs(qq({"exp":null,"tenant_id":"acme"}));
    refused($t->get('/', headers => bearer($nullexp)), 'token_claim_invalid',
            'exp null: token_claim_invalid', token => $nullexp);
    my $strnbf = hs(qq({"exp":$e,"nbf":"0","tenant_id":"acme"}));
    refused($t->get('/', headers => bearer($strnbf)), 'token_claim_invalid',
            'nbf as a string: token_claim_invalid', token => $strnbf);
}

# --- max lifetime ----------------------------------------------------------------------------

{
    $now = time();
    my %base = (tenant_id => 'acme', sub => 'alice');
    my @tk = $t->mint(map { { kid => 'rs256', claims => { %base, %$_ } } }
        { exp => $now + 1800 },
        { iat => $now, exp => $now + 7200 },
        { iat => $now, exp => $now + 1800 },
    );
    refused($t->get('/life/', headers => bearer($tk[0])), 'token_claim_invalid',
            'max_lifetime 1h, no iat: token_claim_invalid', token => $tk[0]);
    refused($t->get('/life/', headers => bearer($tk[1])), 'token_lifetime_exceeded',
            'max_lifetime 1h, exp-iat = 2h: token_lifetime_exceeded', token => $tk[1]);
    accepted($t->get('/life/', headers => bearer($tk[2])),
             'max_lifetime 1h, exp-iat = 30m: accepted', tenant => 'acme');
    accepted($t->get('/', headers => bearer($tk[1])),
             'no max_lifetime: the 2h token is accepted', tenant => 'acme');

    # iat is not trusted: the time left (exp - now) counts too
    my $ten = $now + 10 * 365 * 86400;
    my $long = hs({ %base, exp => $ten, iat => $ten - 60 });
    refused($t->get('/life/', headers => bearer($long)), 'token_lifetime_exceeded',
            'max_lifetime 1h, ten-year token with iat = exp-60: '
            . 'token_lifetime_exceeded', token => $long);
    my $edge = hs({ %base, exp => $now + 3600 + 20, iat => $now + 20 });
    accepted($t->get('/life/', headers => bearer($edge)),
             'max_lifetime 1h, exp - now = 1h+20s (within the leeway): accepted',
             tenant => 'acme');
    my $over = hs({ %base, exp => $now + 1800, iat => $now + 600 });
    refused($t->get('/life/', headers => bearer($over)), 'token_not_yet_valid',
            'max_lifetime 1h, iat = now+600: token_not_yet_valid', token => $over);
}

# --- NumericDate ranges and iat in the future ----------------------------------------------

{
    $now = time();
    my $e = $now + 3600;
    my $iat_future = hs({ tenant_id => 'acme', exp => $e, iat => $now + 600 });
    refused($t->get('/', headers => bearer($iat_future)), 'token_not_yet_valid',
            'iat = now+600: token_not_yet_valid', token => $iat_future);
    my $iat_near = hs({ tenant_id => 'acme', exp => $e, iat => $now + 10 });
    accepted($t->get('/', headers => bearer($iat_near)),
             'iat = now+10, within the leeway: accepted', tenant => 'acme');
    my $frac = hs(qq({"exp":$e.75,"iat":$now.5,"tenant_id":"acme"}));
    accepted($t->get('/life/', headers => bearer($frac)),
             'exp and iat with a fraction: accepted', tenant => 'acme');
    my $max = hs(qq({"exp":253402300799,"tenant_id":"acme"}));
    accepted($t->get('/', headers => bearer($max)),
             'exp = 253402300799 (9999-12-31T23:59:59Z): accepted', tenant => 'acme');

    # outside 0 .. 253402300799, or not a number: refused before any
    # arithmetic (an integer beyond 64 bits or a real beyond double too)
    my @bad = ('9223372036854775807', '-9223372036854775807',
               '-9223372036854775808', '9223372036854775808',
               '253402300800', '-1', '-0.5', '1e300', '-1e300', '1e400',
               '1.7976931348623157e308', '"NaN"', '"Infinity"', '"-Infinity"',
               '"1e3"', 'true', '[1]', '{}');
    for my $claim (qw(exp nbf iat)) {
        for my $v (@bad) {
            my %c = (exp => $e, $claim => $v);
            my $json = '{' . join(',', map { qq("$_":$c{$_}) } sort keys %c)
                     . ',"tenant_id":"acme"}';
            my $tok = hs($json);
            for my $loc ('/', '/life/') {
                refused($t->get($loc, headers => bearer($tok)), 'token_claim_invalid',
                        "$loc $claim = $v: token_claim_invalid", token => $tok);
            }
        }
    }
}

# --- one spelling per token: canonical base64url ----------------------------------------------

{
    my $B64 = join '', 'A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '_';
    # the same bits with the unused low bits of the last character set
    my $respell = sub {
        my ($seg) = @_;
        my $unused = (length($seg) % 4 == 2) ? 15 : 3;
        my $i = index($B64, substr($seg, -1));
        return substr($seg, 0, -1) . substr($B64, $i | $unused, 1);
    };
    my $sign = sub {
        my ($h, $p) = @_;
        return "$h.$p." . b64url(Digest::SHA::hmac_sha256("$h.$p", $HS));
    };

    my $e = time() + 3600;
    # header: 29 bytes, payload: 49 bytes, HMAC: 32 bytes: no segment is 4n
    my $payload = qq({"exp":$e,"tenant_id":"acme","sub":"bob"});
    my $good = hs($payload);
    my ($h, $p, $s) = split /\./, $good;
    ok(length($h) % 4 && length($p) % 4 && length($s) % 4,
       'no segment is a multiple of 4 characters: ' . join ' ', map { length } $h, $p, $s);
    accepted($t->get('/', headers => bearer($good)), 'canonical token: accepted',
             tenant => 'acme', sub => 'bob');

    my %alt = (
        header    => $sign->($respell->($h), $p),
        payload   => $sign->($h, $respell->($p)),
        signature => "$h.$p." . $respell->($s),
    );
    my %idx = (header => 0, payload => 1, signature => 2);
    for my $seg (sort keys %alt) {
        my $i = $idx{$seg};
        my $a = (split /\./, $alt{$seg})[$i];
        my $g = ($h, $p, $s)[$i];
        ok($a ne $g && b64url_decode($a) eq b64url_decode($g),
           "$seg respelled: other text ($a), same bytes");
        refused($t->get('/', headers => bearer($alt{$seg})), 'token_malformed',
                "non-canonical base64url in the $seg: token_malformed",
                token => $alt{$seg});
    }
    my $len1 = "$h.$p." . $s . 'AA';
    refused($t->get('/', headers => bearer($len1)), 'token_malformed',
            'a segment of 4n+1 characters: token_malformed', token => $len1);
}

# --- NUL, control characters and invalid UTF-8 in the payload -----------------------------------

{
    my $e = time() + 3600;
    my %nul = (
        'NUL in sub'           => qq({"exp":$e,"tenant_id":"acme","sub":"al\\u0000ice"}),
        'NUL at the end of sub' => qq({"exp":$e,"tenant_id":"acme","sub":"alice\\u0000"}),
        'NUL in the tenant'    => qq({"exp":$e,"tenant_id":"ac\\u0000me"}),
        'NUL in a nested claim' => qq({"exp":$e,"tenant_id":"acme","x":{"y":["\\u0000"]}}),
        'NUL in a member name' => qq({"exp":$e,"tenant_id":"acme","a\\u0000b":1}),
    );
    for my $name (sort keys %nul) {
        like($nul{$name}, qr/\\u0000/, "$name: the payload text has \\u0000");
        my $tok = hs($nul{$name});
        refused($t->get('/', headers => bearer($tok)), 'token_claim_invalid',
                "$name: token_claim_invalid", token => $tok);
    }
    # the signature is checked first: a NUL under a bad signature
    my $bad = forge_hs('{"alg":"HS256","kid":"hs256"}', $nul{'NUL in sub'}, 'x' x 32);
    refused($t->get('/', headers => bearer($bad)), 'token_invalid',
            'NUL in sub, wrong key: token_invalid', token => $bad);

    my %mal = (
        'invalid UTF-8 in sub'    => qq({"exp":$e,"tenant_id":"acme","sub":"al\xffice"}),
        'overlong UTF-8 in sub'   => qq({"exp":$e,"tenant_id":"acme","sub":"\xc0\x80"}),
        'a lone surrogate in sub' => qq({"exp":$e,"tenant_id":"acme","sub":"\\ud800"}),
        'a raw control character' => qq({"exp":$e,"tenant_id":"acme","sub":"a\x01b"}),
    );
    for my $name (sort keys %mal) {
        my $tok = hs($mal{$name});
        refused($t->get('/', headers => bearer($tok)), 'token_malformed',
                "$name: token_malformed", token => $tok);
    }
}

# --- issuer and audience ------------------------------------------------------------------------

{
    my %base = (tenant_id => 'acme', sub => 'alice', exp => time() + 3600);
    my @tk = $t->mint(map { { kid => 'hs256', claims => { %base, %$_ } } }
        { iss => 'https://c.example', aud => 'api1' },
        { aud => 'api1' },
        { iss => 'https://a.example', aud => 'api2' },
        { iss => 'https://b.example', aud => ['x', 'api1'] },
        { iss => 'https://a.example', aud => ['x'] },
        { iss => 'https://a.example' },
        { iss => 'https://a.example/', aud => 'api1' },
        { iss => 'https://a.example', aud => 'API1' },
        { iss => 'https://a.example', aud => [] },
    );
    my @want = (
        ['token_issuer_refused',   'wrong iss'],
        ['token_issuer_refused',   'no iss'],
        [undef,                    'aud "api2"'],
        [undef,                    'aud ["x","api1"], iss b'],
        ['token_audience_refused', 'aud ["x"]'],
        ['token_audience_refused', 'no aud'],
        ['token_issuer_refused',   'iss with a trailing slash'],
        ['token_audience_refused', 'aud "API1" (case differs)'],
        ['token_audience_refused', 'aud []'],
    );
    for my $i (0 .. $#tk) {
        my ($reason, $name) = @{ $want[$i] };
        my $r = $t->get('/issaud/', headers => bearer($tk[$i]));
        if (defined $reason) {
            refused($r, $reason, "$name: $reason", token => $tk[$i]);
        } else {
            accepted($r, "$name: accepted", tenant => 'acme');
        }
    }
    my $numaud = hs(qq({"exp":$base{exp},"iss":"https://a.example","aud":7,"tenant_id":"acme"}));
    refused($t->get('/issaud/', headers => bearer($numaud)), 'token_claim_invalid',
            'aud a number: token_claim_invalid', token => $numaud);
    my $numiss = hs(qq({"exp":$base{exp},"iss":1,"aud":"api1","tenant_id":"acme"}));
    refused($t->get('/issaud/', headers => bearer($numiss)), 'token_claim_invalid',
            'iss a number: token_claim_invalid', token => $numiss);
}

# --- tenant missing --------------------------------------------------------------------------

{
    my $exp = time() + 3600;
    my @tk = $t->mint(
        { kid => 'hs256', claims => { sub => 'alice', exp => $exp } },
        { kid => 'rs256', claims => { sub => 'alice', exp => $exp, tenant_id => '' } },
        { kid => 'rs256', claims => { sub => 'alice', exp => $exp, tenant_id => [] } },
        { kid => 'hs256', claims => { sub => 'alice', exp => $exp, tenant => 'acme' } },
    );
    refused($t->get('/', headers => bearer($tk[0])), 'tenant_missing',
            'no tenant claim: 403 tenant_missing', token => $tk[0]);
    refused($t->get('/', headers => bearer($tk[1])), 'tenant_missing',
            'empty tenant_id: 403 tenant_missing', token => $tk[1]);
    refused($t->get('/', headers => bearer($tk[2])), 'tenant_missing',
            'tenant_id []: 403 tenant_missing', token => $tk[2]);
    refused($t->get('/', headers => bearer($tk[3])), 'tenant_missing',
            'claim "tenant" is not "tenant_id": 403 tenant_missing', token => $tk[3]);
}

# --- duplicate members in the payload ----------------------------------------------------------

{
    my $e = time() + 3600;
    my $dup = hs(qq({"exp":$e,"tenant_id":"acme","tenant_id":"evil"}));
    refused($t->get('/', headers => bearer($dup)), 'token_malformed',
            'duplicate "tenant_id" in the payload: token_malformed', token => $dup);
    my $dup_exp = hs(qq({"exp":$e,"tenant_id":"acme","exp":1}));
    refused($t->get('/', headers => bearer($dup_exp)), 'token_malformed',
            'duplicate "exp" in the payload: token_malformed', token => $dup_exp);
    my $dup_hdr = forge_hs('{"alg":"HS256","alg":"HS256","kid":"hs256"}',
                           qq({"exp":$e,"tenant_id":"acme"}), $HS);
    refused($t->get('/', headers => bearer($dup_hdr)), 'token_malformed',
            'duplicate "alg" in the header: token_malformed', token => $dup_hdr);
}

# --- decision ids and the access log ---------------------------------------------------------

{
    my @ids = map { $_->[3] } @decisions;
    my %seen;
    ok(!(grep { $seen{$_}++ } @ids), scalar(@ids) . ' decision ids, all distinct');

    my $log = '';
    for (1 .. 40) {    # the last line may lag the response by a moment
        $log = $t->read_file('guard.log') // '';
        last if index($log, $ids[-1]) >= 0;
        select undef, undef, undef, 0.05;
    }
    my %line = map { my @f = split ' '; ($f[3] => \@f) } split /\n/, $log;
    my @bad;
    for my $d (@decisions) {
        my $l = $line{ $d->[3] };
        push @bad, "$d->[3]: want @$d[0 .. 2], got " . ($l ? "@$l" : 'no line')
            unless $l && $l->[0] eq $d->[0] && $l->[1] eq $d->[1]
                   && $l->[2] eq $d->[2];
    }
    ok(!@bad, 'access log: $status $guard_decision $guard_reason $guard_decision_id '
              . 'match every response') or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];
    like($log, qr/^401 deny token_missing \S+$/m, 'access log: a token_missing line');
    like($log, qr/^403 deny tenant_missing \S+$/m, 'access log: a tenant_missing line');
}

# under a sanitizer build of the module, any report fails
$t->errlog_unlike(qr/runtime error|AddressSanitizer/, 'no sanitizer report');
$t->errlog_ok;

done_testing;
