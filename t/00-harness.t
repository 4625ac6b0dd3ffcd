#!/usr/bin/perl

# Self-test of t/lib/Guard/Test.pm and t/tools/jwt_tool.py, without the
# guard module: plain nginx, raw HTTP client, reload/stop, token minting.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use Guard::Test;

# --- construction ------------------------------------------------------------

{
    local $ENV{GUARD_MODULE} = '/nonexistent/guard.so';
    eval { Guard::Test->new };
    like($@, qr{module /nonexistent/guard\.so does not exist},
         'missing module: new dies with a clear message');
}

my $t = Guard::Test->new(load_module => 0);
ok(-d $t->dir, 'temp dir exists');
is((stat $t->dir)[2] & 07777, 0755, 'temp dir is 0755');
my ($p0, $p1) = ($t->port(0), $t->port(1));
isnt($p0, $p1, 'distinct ports');
is($t->port(0), $p0, 'port(0) is stable');
is($t->subst('a %%PORT_1%% %%DIR%%/x'), "a $p1 " . $t->dir . '/x', 'subst');
is($t->python, '/usr/bin/python3', 'python');

# --- run, HTTP client ----------------------------------------------------------

$t->write_file('ssi/c.html', "start <!--# echo var=\"x\" default=\"mid\" --> end\n"
                             . ('z' x 20000) . "\n");

my %servers = (http => <<'EOF');
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / { return 200 "hello $request_method\n"; }
        location /h { add_header X-A 1; add_header X-A 2; return 204; }
        location /c { proxy_pass http://127.0.0.1:%%PORT_1%%; proxy_buffering off; }
        location /echo { proxy_pass http://127.0.0.1:%%PORT_1%%; }
    }
    server {
        listen 127.0.0.1:%%PORT_1%%;
        location /c { ssi on; ssi_types *; alias %%DIR%%/ssi/c.html; }
        location /echo { return 200 "len=$http_content_length x=$http_x\n"; }
    }
EOF

my $conf = $t->write_conf(%servers);
unlike($t->read_file($conf), qr/load_module/, 'load_module => 0 omits load_module');
like($t->read_file($conf), qr/listen 127\.0\.0\.1:$p1;/, 'conf substituted');

my ($rc, $out) = $t->test_conf;
is($rc, 0, 'test_conf ok') or diag $out;
like($out, qr/syntax is ok/, 'test_conf output');

is($t->run, $t, 'run returns $t');
ok($t->pid, 'master pid');
my @w1 = $t->worker_pids;
is(scalar @w1, 1, 'one worker');

my $r = $t->get('/');
is($r->{status}, 200, 'GET status');
is($r->{body}, "hello GET\n", 'GET body');
is($r->{headers}{'content-length'}, 10, 'content-length header');

$r = $t->http('POST', '/echo', body => 'abcdef', headers => { X => 'y' });
is($r->{body}, "len=6 x=y\n", 'POST body, hash headers');

$r = $t->http('HEAD', '/');
is($r->{status}, 200, 'HEAD status');
is($r->{body}, '', 'HEAD has no body');

$r = $t->get('/h', headers => [X => 1, X => 2]);
is($r->{status}, 204, 'status 204');
is($r->{headers}{'x-a'}, '1, 2', 'repeated header joined');
is_deeply([grep { $_->[0] eq 'X-A' } @{ $r->{raw_headers} }],
          [['X-A', 1], ['X-A', 2]], 'raw_headers keep repeats');

$r = $t->get('/c');
is($r->{headers}{'transfer-encoding'}, 'chunked', 'chunked response');
ok($r->{body} eq "start mid end\n" . ("z" x 20000) . "\n", "chunked body decoded")
    or diag length($r->{body}) . " bytes: " . substr($r->{body}, 0, 100);
ok($r->{complete}, 'last chunk seen');

$r = $t->get('/', port => $t->port(5));
ok(!defined $r->{status} && $r->{error}, "connection failure: $r->{error}");

$r = $t->raw_request("GET / HTTP/1.0\r\n\r\n");
is($r->{body}, "hello GET\n", 'raw_request');

$t->errlog_ok('error.log clean after requests');
like($t->read_file('access.log'), qr{"GET /h HTTP/1.1" 204}, 'access log');

# --- test_conf on a broken config, failed reload, good reload ----------------

$t->write_conf(http => "bogus_directive on;\n$servers{http}");
($rc, $out) = $t->test_conf;
isnt($rc, 0, 'broken config: test_conf fails');
like($out, qr/unknown directive "bogus_directive"/, 'test_conf names the problem');
is($t->pid && kill(0, $t->pid), 1, 'test_conf did not disturb running nginx');
$t->errlog_ok('test_conf does not pollute error.log');

$t->errlog_mark;
ok(!$t->reload, 'reload with broken config returns false');
$t->errlog_like(qr/\[emerg\].*bogus_directive/, 'emerg logged', since_mark => 1);
is_deeply([$t->worker_pids], \@w1, 'old worker still running');
is($t->get('/')->{status}, 200, 'still serving');

$t->write_conf(%servers, workers => 2);
$t->errlog_mark;
ok($t->reload, 'reload');
my @w2 = $t->worker_pids;
is(scalar @w2, 2, 'two new workers');
ok(!(grep { my $o = $_; grep { $_ == $o } @w1 } @w2), 'workers replaced');
is($t->get('/')->{body}, "hello GET\n", 'serving after reload');
$t->errlog_ok('no alert/emerg since the good reload', since_mark => 1);

# --- stop ----------------------------------------------------------------------

my $master = $t->pid;
ok($t->stop, 'stop');
ok(!Guard::Test::pid_alive($master), "master gone");
ok(!(grep { Guard::Test::pid_alive($_) } @w2), "workers gone");
ok(!defined $t->get('/')->{status}, 'port closed');

# DESTROY stops nginx too
{
    my $t2 = Guard::Test->new(load_module => 0);
    $t2->write_conf(http => 'server { listen 127.0.0.1:%%PORT_0%%; }');
    $t2->run;
    $master = $t2->pid;
}
ok(!$t->pid_alive($master), "DESTROY stopped nginx");

# run failure dies with the error log
{
    my $t3 = Guard::Test->new(load_module => 0);
    $t3->write_conf(http => 'server { listen 127.0.0.1:%%PORT_0%%; nope; }');
    eval { $t3->run };
    like($@, qr/failed to start.*unknown directive "nope"/s, 'run failure dies');
}

# --- sanitizer reports, crashed workers, the environment switches --------------

# a report found in any of nginx's outputs fails the test that owns it, once
# (these are made up: not copied to make test's report directory)
{
    delete local $ENV{GUARD_SANITIZE_REPORTS};
    my $t4 = Guard::Test->new(load_module => 0);
    is_deeply([$t4->sanitizer_reports], [], 'no reports in a new dir');
    $t4->write_file('asan.42', "==42==ERROR: AddressSanitizer: x\n");
    $t4->write_file('error.log', join '',
        "2026/01/01 00:00:00 [notice] 1#1: start worker process 2\n",
        "/src/x.c:7:9: runtime error: signed integer overflow\n",
        "    #0 0x1 in f /src/x.c:7\n",
        "2026/01/01 00:00:00 [notice] 1#1: worker process 2 exited with code 1\n",
        "2026/01/01 00:00:01 [alert] 1#1: worker process 3 exited on signal 11\n");
    my @r = $t4->sanitizer_reports;
    is_deeply([map { $_->[0] } @r], [qw(asan.42 error.log error.log)],
              'an ASan file, a UBSan report and a crash found');
    like($r[1][1], qr/runtime error.*\n.*#0 0x1 in f/, 'UBSan report with its stack');
    is(scalar(() = $t4->_unreported_reports), 3, 'three reports to fail on');
    is(scalar(() = $t4->_unreported_reports), 0, '... once');
}

# ... and a report nobody looked at fails the test file at exit
{
    my $t5 = Guard::Test->new(load_module => 0);
    my $script = $t5->write_file('report.t', <<'EOT');
use strict; use warnings; use Test::More; use Guard::Test;
my $t = Guard::Test->new(load_module => 0);
$t->write_file('error.log', "/x.c:1:1: runtime error: load of null pointer\n");
ok(1, 'a passing test');
done_testing;
EOT
    my $lib = "$FindBin::Bin/lib";
    delete local $ENV{GUARD_SANITIZE_REPORTS};
    my $out = qx{$^X -I$lib $script 2>&1};
    isnt($?, 0, 'a report nobody checked fails the test file') or diag $out;
    like($out, qr/not ok 2 - no sanitizer report and no crashed process/,
         '... with a failing test that names it');
    like($out, qr/runtime error: load of null pointer/, '... and shows it');
}

# GUARD_ERROR_LOG_LEVEL: the level of the generated error_log; errlog and
# friends leave the [debug] lines out, errlog(raw => 1) has them
{
    local $ENV{GUARD_ERROR_LOG_LEVEL} = 'debug';
    my $t6 = Guard::Test->new(load_module => 0);
    my $c = $t6->read_file($t6->write_conf(http => ''));
    like($c, qr{^error_log \S+/error\.log debug;$}m, 'error_log at debug');
    my $ts = '2026/01/01 00:00:00';
    $t6->write_file('error.log', "$ts [debug] 1#1: x\n"
                    . "$ts [debug] 1#1: proxy header:\n\"GET /?t=s HTTP/1.0\n"
                    . "Host: h\n\n$ts [info] 1#1: y\n");
    is($t6->errlog, "$ts [info] 1#1: y\n",
       'errlog leaves [debug] lines out, with the lines they span');
    like($t6->errlog(raw => 1), qr/\[debug\]/, 'errlog(raw => 1) has them');
}

# under GUARD_SANITIZE (make test's second pass), nginx runs with the ASan
# runtime preloaded (and UBSan's, and ubsan_init.so next to the module),
# and only nginx
SKIP: {
    skip 'GUARD_SANITIZE is not set', 4 unless $ENV{GUARD_SANITIZE};
    my $t7 = Guard::Test->new;
    $t7->write_conf(http => 'server { listen 127.0.0.1:%%PORT_0%%;
                                      location / { return 200 "x"; } }');
    $t7->run;
    my $maps = sub { local (@ARGV, $/) = "/proc/$_[0]/maps"; <> // '' };
    like($maps->($t7->pid), qr{/libasan\.so}, 'master runs with libasan');
    my ($w) = $t7->worker_pids;
    like($maps->($w), qr{/libasan\.so}, 'worker runs with libasan');
    unlike($maps->($$), qr{/libasan\.so}, 'the test itself does not');
    like($maps->($w), qr{/ubsan_init\.so}, 'worker runs with ubsan_init.so');
    $t7->stop;
}

# --- token helpers -------------------------------------------------------------

is(b64url("\xfb\xff"), '-_8', 'b64url');
is(b64url_decode('-_8'), "\xfb\xff", 'b64url_decode');
is(json_enc({ b => 1, a => [1, 'x'] }), '{"a":[1,"x"],"b":1}', 'json_enc canonical');
my $exp = time() + 3600;
my $str = "exp is $exp";     # stringified: still encoded as a number
is(json_enc({ exp => $exp, s => '42' }), qq({"exp":$exp,"s":"42"}),
   'numbers stay numbers, strings stay strings');
is(Guard::Test->b64url('a'), 'YQ', 'helpers work as class methods');
is($t->forge_raw('{}', '{}', ''), 'e30.e30.', 'forge_raw');

my $kd = $t->jwt_keys;
is($kd, $t->dir . '/keys', 'jwt_keys dir');
is($t->jwt_keys, $kd, 'jwt_keys cached');
ok(-f "$kd/jwks.json", 'jwks.json written');
my $jwks = decode_json($t->read_file("$kd/jwks.json"));
is(scalar @{ $jwks->{keys} }, 13, '13 keys in jwks.json');
my ($p521) = grep { $_->{kid} eq 'es512' } @{ $jwks->{keys} };
is(length b64url_decode($p521->{x}), 66, 'P-521 x is 66 bytes');
is(length b64url_decode($p521->{y}), 66, 'P-521 y is 66 bytes');
ok(!(grep { $_->{kty} ne 'oct' && exists $_->{d} } @{ $jwks->{keys} }),
   'no private parts in jwks.json');

my %alg = (rs256 => 'RS256', rs384 => 'RS384', rs512 => 'RS512',
           ps256 => 'PS256', ps384 => 'PS384', ps512 => 'PS512',
           es256 => 'ES256', es384 => 'ES384', es512 => 'ES512',
           ed25519 => 'EdDSA', hs256 => 'HS256', hs384 => 'HS384',
           hs512 => 'HS512');
my @kids = sort keys %alg;
my @tokens = $t->mint(map {
    { kid => $_, alg => $alg{$_},
      key => "$kd/$_" . (/^hs/ ? '.key' : '.pem'),
      claims => { sub => "user-$_", exp => $exp, n => 1 } }
} @kids);
is(scalar @tokens, 13, 'minted 13 tokens');

my $tok = $t->mint({ kid => 'rs256', claims => { sub => 'x' },
                     header => { typ => 'at+jwt' } });
is(scalar(() = $tok =~ /\./g), 2, 'scalar mint with standard-kid defaults');
my $hdr = decode_json(b64url_decode((split /\./, $tok)[0]));
is_deeply($hdr, { alg => 'RS256', kid => 'rs256', typ => 'at+jwt' }, 'header');

my $nokid = $t->mint({ kid => 'hs256', no_kid => 1, claims => {} });
ok(!exists decode_json(b64url_decode((split /\./, $nokid)[0]))->{kid}, 'no_kid');

eval { $t->mint({ alg => 'HS256', key => "$kd/rs256.pub.pem", claims => {} }) };
like($@, qr/should not be used as an HMAC secret/, 'PyJWT refusal reported');

# forged token with an exact header, verified by PyJWT below
my $secret = $t->read_file("$kd/hs384.key");
my $forged = forge_hs({ alg => 'HS384', kid => 'hs384' }, { sub => 'forged' },
                      $secret, 384);

# one-off weak keys
my $weak = $t->jwt_gen(kty => 'RSA', bits => 1024, kid => 'weak', alg => 'RS256');
is(length b64url_decode($weak->{n}), 128, 'RSA 1024 key generated');
my $short = $t->jwt_gen(kty => 'oct', size => 16, kid => 'short', alg => 'HS256');
is(length b64url_decode($short->{k}), 16, '16-byte oct key generated');
my $weak_tok = $t->mint({ kid => 'weak', alg => 'RS256', key => "$kd/weak.pem",
                          claims => { sub => 'weak' } });

# Verify everything with PyJWT, both with the PEM/secret files and with the
# JWKs (which proves the JWK encoding).
my @checks = (
    (map { [ $tokens[$_], $alg{ $kids[$_] }, $kids[$_], "user-$kids[$_]" ] }
         0 .. $#kids),
    [ $forged, 'HS384', 'hs384', 'forged' ],
    [ $weak_tok, 'RS256', 'weak', 'weak' ],
);
my $in = $t->write_file('checks.json', encode_json(\@checks));
my $py = <<'EOF';
import json, sys, jwt
kd, checks = sys.argv[1], json.load(open(sys.argv[2]))
for tok, alg, kid, sub in checks:
    hs = alg.startswith("HS")
    key = open("%s/%s.%s" % (kd, kid, "key" if hs else "pub.pem"), "rb").read()
    a = jwt.decode(tok, key, algorithms=[alg])
    b = jwt.decode(tok, jwt.PyJWK(json.load(open("%s/%s.jwk.json" % (kd, kid)))).key,
                   algorithms=[alg])
    h = jwt.get_unverified_header(tok)
    ok = a["sub"] == sub and b == a and h["kid"] == kid and h["alg"] == alg
    print("%s %s" % ("ok" if ok else "BAD", kid))
EOF
$t->write_file('verify.py', $py);
my $res = qx{/usr/bin/python3 @{[ $t->dir ]}/verify.py $kd $in 2>&1};
is($?, 0, 'PyJWT verification ran') or diag $res;
is_deeply([split /\n/, $res], [map { "ok $_->[2]" } @checks],
          'PyJWT verifies every minted/forged token with PEM and JWK');

done_testing;
