#!/usr/bin/perl

# The guardrails stage's bodies: read without blocking (a body sent late
# resumes the request), chunked bodies, bodies in temporary files,
# guard_body_max (refused 413 body_too_large, or skipped with a shadow
# marker), client_max_body_size still nginx's, gzip and deflate bodies
# inflated (a bomb over max_ratio, a corrupt stream and an unknown
# encoding are 400 body_malformed; "encoded": "refuse" refuses them),
# malformed and deep JSON, NUL bytes and invalid UTF-8; redactions reach
# the upstream (an echoing backend) with the right Content-Length, in
# place of a chunked or compressed body too.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use Time::HiRes qw(sleep time);
use Compress::Zlib ();
use Guard::Test;
use Guard::Echo;

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $json = JSON::PP->new->canonical;

my @rules = (
    { id => 'b-redact', targets => ['body'], pattern => 'SECRET[0-9]+',
      action => 'redact', kind => 's' },
    { id => 'b-block', targets => ['body'], pattern => 'evil',
      action => 'block' },
    { id => 'b-json', targets => ['json:*'], pattern => 'jsonevil',
      action => 'block' },
);

for my $p (
    [ 'bd', {} ],
    [ 'sk', { body_over => 'skip' } ],
    [ 'enc', { encoded => 'refuse' } ],
    [ 'rt', { max_ratio => 10, json_depth => 4 } ],
    [ 'shw', { shadow => JSON::PP::true } ],
) {
    my ($tenant, $more) = @$p;
    $t->write_file("pol/$tenant.json", $json->encode({
        tenant => $tenant, guardrails => { %$more, rules => \@rules } }));
}

Guard::Echo::start($t, 1);

$t->write_conf(http => <<'CONF');
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        client_body_buffer_size 1k;
        client_body_temp_path %%DIR%%/body_temp;

        add_header X-GR-Score $guard_guardrails_score always;
        add_header X-Reason $guard_reason always;

        location ~ ^/t/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            guard_body_max 64k;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/small/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            guard_body_max 100;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/cmbs/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            client_max_body_size 200;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }
CONF
$t->run;

my %tok;
my @tenants = qw(bd sk enc rt shw);
@tok{@tenants} = $t->mint(
    map { { kid => 'hs256', claims => { sub => "u-$_", tenant_id => $_,
                                        exp => time + 3600 } } } @tenants);

sub req {
    my ($path, $tenant, $body, @h) = @_;
    my %h = @h;
    return $t->http('POST', $path, body => $body, headers => [
        Authorization => "Bearer $tok{$tenant}",
        ($h{'Content-Type'} ? () : ('Content-Type' => 'text/plain')), @h]);
}

# a chunked request of the given chunks
sub chunked {
    my ($path, $tenant, @chunks) = @_;
    my $req = "POST $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Authorization: Bearer $tok{$tenant}\r\n"
            . "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            . "Connection: close\r\n\r\n";
    $req .= sprintf("%x\r\n%s\r\n", length $_, $_) for @chunks;
    return $t->raw_request($req . "0\r\n\r\n");
}

sub upstream_ok {
    my ($r, $body, $what) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, 200, "$what: passes") or diag $r->{body};
    my $e = Guard::Echo::echo($r);
    is($e->{body}, $body, "$what: the upstream's body");
    is($e->{header}{'content-length'}, length $body,
       "$what: its Content-Length");
    ok(!$e->{chunked}, "$what: not chunked upstream");
    return $e;
}

# ---------------------------------------------------------------------------
# reading

upstream_ok(req('/t/bd/a', 'bd', 'one SECRET1 two'), 'one [REDACTED:s] two',
            'a body in memory');

my $big = ('a' x 3000) . ' SECRET22 ' . ('b' x 3000);
(my $big_red = $big) =~ s/SECRET22/[REDACTED:s]/;
upstream_ok(req('/t/bd/a', 'bd', $big), $big_red,
            'a body in a temporary file');
problem_ok(req('/t/bd/a', 'bd', ('c' x 5000) . 'evil'), 'guardrail_blocked',
           'a temporary file is inspected');

upstream_ok(chunked('/t/bd/a', 'bd', 'x SEC', 'RET333', ' y'),
            'x [REDACTED:s] y', 'a chunked body');
upstream_ok(chunked('/t/bd/a', 'bd', 'plain ', 'text'), 'plain text',
            'a chunked body without hits: sent with a Content-Length');
problem_ok(chunked('/t/bd/a', 'bd', 'ev', 'il'), 'guardrail_blocked',
           'a chunked body is inspected');

# the body comes late: the worker waits for it without blocking
{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(0))
        or die;
    print $s "POST /t/bd/a HTTP/1.1\r\nHost: localhost\r\n"
           . "Authorization: Bearer $tok{bd}\r\nContent-Type: text/plain\r\n"
           . "Content-Length: 13\r\nConnection: close\r\n\r\nlate SEC";
    sleep 0.3;
    # meanwhile, the worker serves others
    is(req('/t/bd/a', 'bd', 'other')->{status}, 200,
       'another request while one waits for its body');
    print $s "RET4!";
    my $raw = '';
    my $sel = IO::Select->new($s);
    while ($sel->can_read(10)) {
        last unless sysread $s, $raw, 65536, length $raw;
    }
    upstream_ok(Guard::Test::parse_response($raw), 'late [REDACTED:s]!',
                'a body sent late');
}

# ---------------------------------------------------------------------------
# limits

problem_ok(req('/small/bd/a', 'bd', 'x' x 101), 'body_too_large',
           'Content-Length over guard_body_max');
problem_ok(chunked('/small/bd/a', 'bd', 'x' x 60, 'y' x 60),
           'body_too_large', 'chunked over guard_body_max');
upstream_ok(req('/small/bd/a', 'bd', 'x' x 100), 'x' x 100,
            'exactly guard_body_max');

my $r = req('/small/sk/a', 'sk', ('z' x 120) . 'evil SECRET5');
upstream_ok($r, ('z' x 120) . 'evil SECRET5',
            'body_over skip: not inspected, sent as it came');
is($r->{headers}{'x-reason'}, 'body_too_large',
   'body_over skip: a shadow marker');
$r = chunked('/small/sk/a', 'sk', 'z' x 80, 'evil' x 10);
is($r->{status}, 200, 'body_over skip, chunked: passes');
is($r->{headers}{'x-reason'}, 'body_too_large',
   'body_over skip, chunked: a shadow marker');
is(Guard::Echo::echo($r)->{body_len}, 120, 'and the whole body goes on');

# client_max_body_size: nginx's page when nginx sees it by Content-Length
# (before the access phase); Guard's 413 when its reading finds it
$r = req('/cmbs/bd/a', 'bd', 'x' x 300);
is($r->{status}, 413, 'client_max_body_size still applies');
unlike($r->{headers}{'content-type'} // '', qr/problem/,
       "by Content-Length: nginx's own refusal");
is(chunked('/cmbs/bd/a', 'bd', 'x' x 150, 'y' x 150)->{status}, 413,
   'client_max_body_size, chunked: 413');

# ---------------------------------------------------------------------------
# encodings

my $gz = Compress::Zlib::memGzip('zip SECRET6 zip');
upstream_ok(req('/t/bd/a', 'bd', $gz, 'Content-Encoding' => 'gzip'),
            'zip [REDACTED:s] zip', 'gzip: redacted, sent inflated');
$r = req('/t/bd/a', 'bd', $gz, 'Content-Encoding' => 'gzip');
is(Guard::Echo::echo($r)->{header}{'content-encoding'}, 'identity',
   'gzip: redacted, Content-Encoding identity upstream');

my $gz_clean = Compress::Zlib::memGzip('nothing to see');
$r = req('/t/bd/a', 'bd', $gz_clean, 'Content-Encoding' => 'gzip');
my $e = upstream_ok($r, $gz_clean, 'gzip without hits: sent as it came');
is($e->{header}{'content-encoding'}, 'gzip', 'with its Content-Encoding');
is($r->{headers}{'x-gr-score'}, '0', 'and it was inspected');

problem_ok(req('/t/bd/a', 'bd', Compress::Zlib::memGzip('an evil one'),
               'Content-Encoding' => 'gzip'),
           'guardrail_blocked', 'gzip: inspected inflated');
problem_ok(req('/t/bd/a', 'bd', Compress::Zlib::compress('deflate evil'),
               'Content-Encoding' => 'deflate'),
           'guardrail_blocked', 'deflate (zlib): inspected inflated');
my ($d) = Compress::Zlib::deflateInit(-WindowBits => -15);
my $raw_deflate = $d->deflate('raw evil') . $d->flush;
problem_ok(req('/t/bd/a', 'bd', $raw_deflate, 'Content-Encoding' => 'deflate'),
           'guardrail_blocked', 'deflate (raw): inspected inflated');

problem_ok(req('/t/rt/a', 'rt', Compress::Zlib::memGzip('0' x 20000),
               'Content-Encoding' => 'gzip'),
           'body_malformed', 'a gzip bomb over max_ratio');
problem_ok(req('/small/bd/a', 'bd', Compress::Zlib::memGzip('0' x 300),
               'Content-Encoding' => 'gzip'),
           'body_too_large', 'inflated over guard_body_max');
problem_ok(req('/t/bd/a', 'bd', substr($gz, 0, 12) . 'garbage-garbage',
               'Content-Encoding' => 'gzip'),
           'body_malformed', 'a corrupt gzip body');
problem_ok(req('/t/bd/a', 'bd', Compress::Zlib::memGzip('harmless ')
                                . Compress::Zlib::memGzip('but evil'),
               'Content-Encoding' => 'gzip'),
           'guardrail_blocked', 'every member of a multi-member gzip body');
problem_ok(req('/t/bd/a', 'bd', $gz_clean . 'evil',
               'Content-Encoding' => 'gzip'),
           'body_malformed', 'bytes after the gzip stream');
problem_ok(req('/t/bd/a', 'bd', $gz_clean, 'Content-Encoding' => 'identity',
               'Content-Encoding' => 'gzip'),
           'body_malformed', 'Content-Encoding twice');
problem_ok(req('/t/bd/a', 'bd', $gz_clean, 'Content-Encoding' => 'gzip, br'),
           'body_malformed', 'a list of codings');
problem_ok(req('/t/bd/a', 'bd', 'abc', 'Content-Encoding' => 'br'),
           'body_malformed', 'an encoding that cannot be inspected');
problem_ok(req('/t/enc/a', 'enc', $gz_clean, 'Content-Encoding' => 'gzip'),
           'body_malformed', 'encoded "refuse"');

# a shadow section refuses nothing, a body it cannot inspect included
for my $case (
    [ '/small/shw/a', 'x' x 150, [], 'body_too_large', 'over the limit' ],
    [ '/t/shw/a', 'abc', ['Content-Encoding' => 'br'], 'body_malformed',
      'not inflatable' ],
) {
    my ($path, $body, $h, $reason, $what) = @$case;
    $r = req($path, 'shw', $body, @$h);
    is($r->{status}, 200, "shadow section, $what: passes");
    is($r->{headers}{'x-reason'}, $reason, "shadow section, $what: marked");
    is(Guard::Echo::echo($r)->{body}, $body,
       "shadow section, $what: sent as it came");
}

# ---------------------------------------------------------------------------
# JSON, NUL bytes, invalid UTF-8

is(req('/t/bd/a', 'bd', '', 'Content-Type' => 'application/json')->{status},
   200, 'an empty JSON POST passes');
is($t->raw_request("POST /t/bd/a HTTP/1.1\r\nHost: localhost\r\n"
                   . "Authorization: Bearer $tok{bd}\r\n"
                   . "Content-Type: application/json\r\n"
                   . "Transfer-Encoding: chunked\r\nConnection: close\r\n"
                   . "\r\n0\r\n\r\n")->{status},
   200, 'an empty chunked JSON POST passes');
problem_ok(req('/t/bd/a', 'bd', '{"a": [1, 2', 'Content-Type' => 'application/json'),
           'body_malformed', 'malformed JSON where a JSON rule applies');
problem_ok(req('/t/bd/a', 'bd', '{"m": "x jsonevil", "m": "fine"}',
               'Content-Type' => 'application/json'),
           'body_malformed', 'a JSON member named twice');
problem_ok(req('/t/bd/a', 'bd', '{"m": "fine", "m": "fine"}',
               'Content-Type' => 'application/json'),
           'body_malformed', 'a JSON member named twice, both harmless');
problem_ok(req('/t/rt/a', 'rt', '{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}',
               'Content-Type' => 'application/json'),
           'body_malformed', 'JSON deeper than json_depth');
problem_ok(req('/t/bd/a', 'bd', '{"m": ["x jsonevil"]}',
               'Content-Type' => 'application/json'),
           'guardrail_blocked', 'a JSON body is inspected');

problem_ok(req('/t/bd/a', 'bd', "nul\0 and \xff\xfe evil"),
           'guardrail_blocked', 'NUL and invalid UTF-8: still inspected');
upstream_ok(req('/t/bd/a', 'bd', "a\0b \xffSECRET7\xfe"),
            "a\0b \xff[REDACTED:s]\xfe",
            'NUL and invalid UTF-8: redacted, the rest kept byte for byte');

$t->errlog_unlike(qr/SECRET\d/, 'no secret in the error log');
$t->errlog_ok;

done_testing;
