#!/usr/bin/perl

# Tenant policies end to end (guard_policies): a tenant's own keys and
# issuers (a key trusted for one tenant never authenticates another's
# token, in bound and unbound locations, and not through the token cache
# either), auth in shadow mode, residency (421, fail closed without
# guard_region), concurrency bulkheads whose slots never leak (client
# aborts, upstream errors, internal redirects, two workers, a reload),
# concurrency in shadow mode, $guard_policy_version against guardctl, and
# bad tenant JWKS files at nginx -t.
#
# The slow upstream is a small Perl server forked here: it answers a
# request with "hold=1" only when told to (GET /release?id=ID on its own
# port, or after 10 s at the latest), one with "d=MS" after MS
# milliseconds, one with "close=1" by closing the connection, and every
# other request at once.  It appends "recv ID" to backend.log when a
# request arrives and "gone ID" when nginx drops one.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(sleep time);
use Guard::Test qw(:DEFAULT wait_for);

my $t = Guard::Test->new;
my $kd = $t->jwt_keys;
my $dir = $t->dir;
my $pol = "$dir/pol";
my $GUARDCTL = $t->repo . '/policy-engine/build/guardctl';

my $exp = int(time) + 3600;
my $GLOBAL_ISS = 'https://global.test';
my %ISS = (acme    => 'https://idp.acme.test',
           beta    => 'https://idp.beta.test',
           epsilon => 'https://idp.epsilon.test');

# ---------------------------------------------------------------------------
# helpers

sub jenc { JSON::PP->new->canonical->pretty->encode($_[0]) }

sub write_json { my ($file, $doc) = @_; $t->write_file($file, jenc($doc)) }

sub reason_of {
    my ($r) = @_;
    my $doc = eval { decode_json($r->{body} // '') } || {};
    return $doc->{reason} // '';
}

sub req {
    my ($path, $token, %o) = @_;
    my @h = (defined $token ? (Authorization => "Bearer $token") : ());
    push @h, @{ delete $o{headers} } if $o{headers};
    return $t->get($path, headers => \@h, %o);
}

# an allowed request: status 200 from the backend, X-Decision, X-Reason
sub allow_ok {
    my ($r, $decision, $reason, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, 200, 'status 200')
            or diag(($r->{status} // 'none') . ' ' . ($r->{body} // '')
                    . ' ' . ($r->{error} // ''));
        like($r->{body} // '', qr/^ok /, 'the backend answered');
        is($r->{headers}{'x-decision'}, $decision, "decision $decision");
        is($r->{headers}{'x-reason'}, $reason,
           'reason ' . ($reason // '(none)'));
    };
}

# a refusal that is not a 401 (problem_ok knows only the 401/400/403
# reasons): 421 residency, 429 concurrency_limited
sub refusal_ok {
    my ($r, $status, $reason, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, $status, "status $status")
            or diag(($r->{status} // 'none') . ' ' . ($r->{body} // ''));
        like($r->{headers}{'content-type'} // '',
             qr{^application/problem\+json\s*$}, 'application/problem+json');
        is($r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store');
        my $doc = eval { decode_json($r->{body} // '') };
        $doc = {} unless ref $doc eq 'HASH';
        (my $urn = "urn:guard:$reason") =~ tr/_/-/;
        is($doc->{type}, $urn, "type $urn");
        is($doc->{status}, $status, 'status member');
        is($doc->{reason}, $reason, "reason $reason");
        ok(length($doc->{title} // '') && length($doc->{detail} // ''),
           'title and detail');
        my $id = $r->{headers}{'guard-decision-id'};
        like($id // '', $UUID7, 'Guard-Decision-Id is a UUIDv7');
        is($doc->{decision_id}, $id, 'decision_id equals Guard-Decision-Id');
        ok(!defined $r->{headers}{'www-authenticate'}, 'no WWW-Authenticate');
        is($r->{headers}{'x-decision'}, 'deny', '$guard_decision deny');
        is($r->{headers}{'x-reason'}, $reason, "\$guard_reason $reason");
        if ($reason eq 'concurrency_limited') {
            is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
        }
    };
}


# --- the slow backend --------------------------------------------------------

my $BPORT = $t->port(2);
my $BLOG = "$dir/backend.log";
my $bpid;
my $parent = $$;

sub backend_main {
    my ($srv) = @_;
    $SIG{PIPE} = 'IGNORE';
    $SIG{$_} = 'DEFAULT' for qw(INT TERM);
    open my $lf, '>>', $BLOG or POSIX::_exit(1);
    $lf->autoflush(1);

    my $sel = IO::Select->new($srv);
    my (%conn, %released);
    my $end = time + 120;                       # never outlive the test

    my $answer = sub {
        my ($st, $body) = @_;
        my $s = $st->{s};
        $s->blocking(1);
        syswrite $s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   . "Content-Length: " . length($body) . "\r\n"
                   . "Connection: close\r\n\r\n$body";
        $sel->remove($s);
        delete $conn{ fileno $s };
        close $s;
    };

    while (time < $end) {
        for my $s ($sel->can_read(0.01)) {
            if ($s == $srv) {
                my $c = $srv->accept or next;
                $c->blocking(0);
                $sel->add($c);
                $conn{ fileno $c } = { s => $c, buf => '' };
                next;
            }
            my $st = $conn{ fileno $s } or next;
            my $n = sysread $s, my $buf, 65536;
            next if !defined $n && $!{EAGAIN};
            if (!$n) {
                print $lf "gone $st->{id}\n" if defined $st->{id};
                $sel->remove($s);
                delete $conn{ fileno $s };
                close $s;
                next;
            }
            $st->{buf} .= $buf;
            next if defined $st->{id} || $st->{buf} !~ /\r\n\r\n/;

            my ($path, $q) = $st->{buf} =~ m{^\S+ ([^?\s]*)\??(\S*) HTTP/};
            my %a = map { /^([^=]*)=?(.*)$/ ? ($1 => $2) : () }
                    split /&/, $q // '';
            $st->{id} = $a{id} // '-';
            if (($path // '') eq '/release') {
                $released{ $st->{id} } = 1;
                $answer->($st, "released $st->{id}\n");
                next;
            }
            print $lf "recv $st->{id}\n";
            if ($a{close}) {
                $sel->remove($s);
                delete $conn{ fileno $s };
                close $s;
                next;
            }
            $st->{hold} = $a{hold} ? 1 : 0;
            my $d = $a{hold} ? 10_000 : ($a{d} // 0);
            $d = 10_000 if $d > 10_000;
            $st->{due} = time + $d / 1000;
        }
        for my $st (values %conn) {
            next unless defined $st->{due};
            if (time >= $st->{due}
                || ($st->{hold} && ($released{ $st->{id} } || $released{'*'})))
            {
                $answer->($st, "ok id=$st->{id}\n");
            }
        }
    }
    POSIX::_exit(0);
}

sub start_backend {
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => $BPORT, Proto => 'tcp',
                                    Listen => 128, ReuseAddr => 1)
        or die "backend: listen 127.0.0.1:$BPORT: $!";
    $t->write_file($BLOG, '');
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        eval { backend_main($srv) };
        POSIX::_exit(0);
    }
    close $srv;
    return $pid;
}

sub stop_backend {
    return unless $bpid && $$ == $parent;
    kill 'TERM', $bpid;
    waitpid $bpid, 0;
    undef $bpid;
}

END { stop_backend() }

sub release {
    my ($id) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $BPORT,
                                  Proto => 'tcp', Timeout => 3) or return 0;
    syswrite $s, "GET /release?id=$id HTTP/1.0\r\n\r\n";
    my $sel = IO::Select->new($s);
    my ($raw, $end) = ('', time + 3);
    while (time < $end && $sel->can_read($end - time)) {
        my $n = sysread $s, my $buf, 4096;
        last unless $n;
        $raw .= $buf;
    }
    close $s;
    return $raw =~ /released/;
}

# all the ids arrived at the backend (bounded)
sub wait_recv {
    my (@ids) = @_;
    return wait_for(5, sub {
        my $log = $t->read_file($BLOG) // '';
        !grep { $log !~ /^recv \Q$_\E$/m } @ids;
    });
}

# the status nginx logged for an id (access log "ids"), bounded
sub wait_logged {
    my ($id, $secs) = @_;
    my $st;
    wait_for($secs // 5, sub {
        my $log = $t->read_file("$dir/ids.log") // '';
        ($st) = $log =~ /^\Q$id\E (\d{3}) /m;
        defined $st;
    });
    return $st;
}

# --- a client that holds requests open -----------------------------------------

my $SEQ = 0;
sub nid { my ($p) = @_; return ($p // 'r') . ++$SEQ }

sub open_req {
    my ($path, $token, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $o{port} // $t->port(0),
                                  Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    binmode $s;
    my $h = '';
    my @h = @{ $o{headers} // [] };
    while (my ($k, $v) = splice @h, 0, 2) { $h .= "$k: $v\r\n" }
    my $r = "GET $path HTTP/1.1\r\nHost: localhost\r\n"
          . (defined $token ? "Authorization: Bearer $token\r\n" : '')
          . "${h}Connection: close\r\n\r\n";
    local $SIG{PIPE} = 'IGNORE';
    syswrite $s, $r;
    return $s;
}

sub finish_req {
    my ($s, $secs) = @_;
    my $sel = IO::Select->new($s);
    my ($raw, $end) = ('', time + ($secs // 8));
    while (1) {
        my $left = $end - time;
        last if $left <= 0 || !$sel->can_read($left);
        my $n = sysread $s, my $buf, 65536;
        last unless $n;
        $raw .= $buf;
    }
    close $s;
    return Guard::Test::parse_response($raw);
}

# a keep-alive connection and the worker that answered a quick request
# on it
sub probe_conn {
    my ($token, $path, $s) = @_;
    $path //= '/t/gamma/x';
    $s //= IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $t->port(0), Proto => 'tcp',
                                 Timeout => 5) or return;
    binmode $s;
    syswrite $s, "GET $path HTTP/1.1\r\nHost: localhost\r\n"
               . "Authorization: Bearer $token\r\n\r\n";
    my $sel = IO::Select->new($s);
    my ($raw, $end) = ('', time + 5);
    while (time < $end && $sel->can_read($end - time)) {
        my $n = sysread $s, my $buf, 65536;
        last unless $n;
        $raw .= $buf;
        if ($raw =~ /^(.*?\r\n\r\n)/s) {
            my $hl = length $1;
            my ($cl) = $raw =~ /^Content-Length:\s*(\d+)/mi;
            last if defined $cl && length($raw) >= $hl + $cl;
        }
    }
    my $r = Guard::Test::parse_response($raw);
    return ($s, $r->{headers}{'x-pid'} // '?', $r);
}

sub send_req {
    my ($s, $path, $token) = @_;
    local $SIG{PIPE} = 'IGNORE';
    syswrite $s, "GET $path HTTP/1.1\r\nHost: localhost\r\n"
               . "Authorization: Bearer $token\r\nConnection: close\r\n\r\n";
}

# nothing came back on $s within $secs (a refusal comes at once)
sub unanswered {
    my ($s, $secs) = @_;
    return !IO::Select->new($s)->can_read($secs // 0.15);
}

sub abort_req {
    my ($s, $rst) = @_;
    setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0)) if $rst;
    close $s;
}

# Tokens per tenant (global key unless told otherwise).
sub tok {
    my ($tenant, %o) = @_;
    my %claims = (sub => $o{sub} // "u-$tenant", tenant_id => $tenant,
                  exp => $exp, iss => $o{iss} // $GLOBAL_ISS);
    delete $claims{iss} if exists $o{iss} && !defined $o{iss};
    my %spec = (kid => $o{kid} // 'rs256', claims => \%claims);
    @spec{qw(alg key)} = @o{qw(alg key)} if $o{key};
    return scalar $t->mint(\%spec);
}

# Send $n requests of $tenant to /slow/ that the backend holds until
# released; returns (ids, sockets).
sub hold {
    my ($tenant, $token, $n, %o) = @_;
    my $loc = $o{loc} // 'slow';
    my @ids = map { nid('h') } 1 .. $n;
    my @s = map { open_req("/$loc/$tenant/x?id=$_&hold=1", $token, %o) } @ids;
    return (\@ids, \@s);
}

# the whole limit (2) is available: 2 held requests are let in, a third
# is refused; then the two are released and end with 200.  Returns the
# two responses and the refusal.
sub full_limit_ok {
    my ($token, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($ids, $socks) = hold('conc', $token, 2, %o);
    my ($r3, @resp);
    subtest $name => sub {
        ok(wait_recv(@$ids), "both held requests reached the backend (@$ids)");
        ok(unanswered($_), 'held request not refused') for @$socks;
        my $id3 = nid('x');
        $r3 = req("/slow/conc/x?id=$id3", $token);
        refusal_ok($r3, 429, 'concurrency_limited',
                   'a third request while 2 are in flight: 429');
        if ($o{keep}) {
            return;
        }
        ok(release($_), "released $_") for @$ids;
        @resp = map { finish_req($_) } @$socks;
        is($_->{status}, 200, 'held request ends with 200') for @resp;
    };
    return $o{keep} ? ($ids, $socks, $r3) : (\@resp, $r3);
}

# ---------------------------------------------------------------------------
# keys and policies

# tenant key sets: acme (RS256 "acme-key" + RS256 "shared"), beta (ES256
# "beta-key" + its own RS256 "shared": same kid and alg, other material),
# delta (ES256 "delta-key")
my %tk;
for my $spec (['acme', kty => 'RSA', kid => 'acme-key', alg => 'RS256'],
              ['acme', kty => 'RSA', kid => 'shared', alg => 'RS256'],
              ['beta', kty => 'EC', kid => 'beta-key', alg => 'ES256',
                       crv => 'P-256'],
              ['beta', kty => 'RSA', kid => 'shared', alg => 'RS256'],
              ['delta', kty => 'EC', kid => 'delta-key', alg => 'ES256',
                        crv => 'P-256'])
{
    my ($tenant, %g) = @$spec;
    my $jwk = $t->jwt_gen(%g, dir => "$dir/tk/$tenant");
    push @{ $tk{$tenant} }, $jwk;
}
write_json("pol/keys/$_.jwks.json", { keys => $tk{$_} }) for keys %tk;

sub tkey {   # (kid, alg, key file) of a tenant key
    my ($tenant, $kid) = @_;
    my ($jwk) = grep { $_->{kid} eq $kid } @{ $tk{$tenant} };
    return (kid => $kid, alg => $jwk->{alg}, key => "$dir/tk/$tenant/$kid.pem");
}

my %POLICIES = (
    '_default' => { description => 'every other tenant: global keys',
                    limits => { concurrency => { max => 50 } } },
    acme    => { tenant => 'acme',
                 auth => { issuers => [$ISS{acme}],
                           jwks => 'keys/acme.jwks.json' },
                 residency => { regions => ['eu-west-1', 'eu-central-1'] } },
    beta    => { tenant => 'beta',
                 auth => { issuers => [$ISS{beta}],
                           jwks => 'keys/beta.jwks.json' },
                 residency => { regions => ['us-east-1'] } },
    delta   => { tenant => 'delta',
                 auth => { jwks => 'keys/delta.jwks.json',
                           shadow => JSON::PP::true } },
    epsilon => { tenant => 'epsilon',
                 auth => { issuers => [$ISS{epsilon}] } },
    rshadow => { tenant => 'rshadow',
                 residency => { regions => ['us-east-1'],
                                shadow => JSON::PP::true } },
    tshadow => { tenant => 'tshadow', shadow => JSON::PP::true,
                 residency => { regions => ['us-east-1'] } },
    ashadow => { tenant => 'ashadow', shadow => JSON::PP::true,
                 auth => { issuers => ['https://idp.ashadow.test'] } },
    conc    => { tenant => 'conc', description => 'first',
                 limits => { concurrency => { max => 2 } } },
    cshadow => { tenant => 'cshadow',
                 limits => { concurrency => { max => 1,
                                              shadow => JSON::PP::true } } },
);
write_json("pol/$_.json", $POLICIES{$_}) for keys %POLICIES;

sub gateway_conf {
    my (%o) = @_;
    my $region = $o{region} ? "guard_region $o{region};" : '';
    my $reuse = $o{reuseport} ? ' reuseport' : '';
    my $pdir = $o{policies} // $pol;
    return (workers => $o{workers} // 1, main => $o{main} // '',
            http => <<"EOF");
    guard_policies $pdir;
    $region
    log_format ids '\$arg_id \$status \$guard_decision \$guard_reason \$guard_tenant \$pid';

    server {
        listen 127.0.0.1:%%PORT_0%%$reuse;
        access_log %%DIR%%/ids.log ids;

        guard_jwt_keys $kd/jwks.json;
        guard_jwt_issuer $GLOBAL_ISS;

        add_header X-Decision \$guard_decision always;
        add_header X-Reason \$guard_reason always;
        add_header X-Tenant \$guard_tenant always;
        add_header X-Pid \$pid always;
        add_header X-Policy-Version \$guard_policy_version always;

        location ~ ^/t/(?<tenant>[^/]+)/ {
            guard on;
            guard_tenant \$tenant;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /u/ {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/slow/(?<tenant>[^/]+)/ {
            guard on;
            guard_tenant \$tenant;
            proxy_pass http://127.0.0.1:%%PORT_2%%;
        }

        location ~ ^/slowto/(?<tenant>[^/]+)/ {
            guard on;
            guard_tenant \$tenant;
            proxy_read_timeout 300ms;
            proxy_pass http://127.0.0.1:%%PORT_2%%;
        }

        location ~ ^/dead/(?<tenant>[^/]+)/ {
            guard on;
            guard_tenant \$tenant;
            proxy_connect_timeout 2s;
            proxy_pass http://127.0.0.1:%%PORT_3%%;
        }

        location ~ ^/redir/(?<tenant>[^/]+)/ {
            guard on;
            guard_tenant \$tenant;
            proxy_pass http://127.0.0.1:%%PORT_3%%;
            error_page 502 = /fallback/?\$args;
        }

        location /fallback/ {
            guard on;
            guard_tenant \$http_x_tenant;
            proxy_pass http://127.0.0.1:%%PORT_2%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "ok \$uri\\n"; }
    }
EOF
}

sub restart {
    my ($tt, %conf) = @_;
    $tt->stop;
    $tt->write_conf(%conf);
    my ($rc, $out) = $tt->test_conf;
    is($rc, 0, 'configuration is valid') or diag $out;
    $tt->errlog_mark;
    $tt->run;
}

$t->port(3);    # a port nobody listens on (picked, then closed)
$bpid = start_backend();
restart($t, gateway_conf(region => 'eu-west-1'));

# ---------------------------------------------------------------------------
# 1. cross-tenant key misuse

{
    my $acme_ok = tok('acme', tkey('acme', 'acme-key'), iss => $ISS{acme});
    allow_ok(req('/t/acme/x', $acme_ok), 'allow', undef,
             'acme token, acme key, acme issuer: 200 at /t/acme/');
    my $r = req('/u/x', $acme_ok);
    allow_ok($r, 'allow', undef,
             'acme token, acme key, acme issuer: 200 in the unbound location');
    is($r->{headers}{'x-tenant'}, 'acme', 'unbound: $guard_tenant is acme');
    allow_ok(req('/t/acme/x', tok('acme', tkey('acme', 'shared'),
                                  iss => $ISS{acme})),
             'allow', undef, 'acme token, acme\'s second key: 200');

    # beta's key never speaks for acme
    my $beta_as_acme = tok('acme', tkey('beta', 'beta-key'), iss => $ISS{acme});
    problem_ok(req('/t/acme/x', $beta_as_acme), 'token_key_unknown',
               'beta\'s key, token claims acme, addressed to acme: 401',
               token => $beta_as_acme);
    problem_ok(req('/u/x', $beta_as_acme), 'token_key_unknown',
               'unbound: beta\'s key, token claims acme: 401',
               token => $beta_as_acme);

    my $beta_tok = tok('beta', tkey('beta', 'beta-key'), iss => $ISS{beta});
    $r = req('/t/acme/x', $beta_tok);
    isnt($r->{status}, 200, 'beta token (beta key) addressed to acme: not 200');
    like($r->{status} // '', qr/^40[13]$/,
         'beta token addressed to acme: 401 or 403');

    # the beta token does authenticate beta: it gets as far as residency
    refusal_ok(req('/t/beta/x', $beta_tok), 421, 'residency',
               'beta token at /t/beta/: authenticated, then 421 residency');
    refusal_ok(req('/u/x', $beta_tok), 421, 'residency',
               'beta token, unbound: authenticated, then 421 residency');

    # beta's key under acme's kid: acme-key is RSA, the token ES256
    my $spoof = tok('acme', key => "$dir/tk/beta/beta-key.pem",
                    kid => 'acme-key', alg => 'ES256', iss => $ISS{acme});
    $r = req('/t/acme/x', $spoof);
    is($r->{status}, 401, 'beta\'s key with kid acme-key: 401');
    like(reason_of($r), qr/^token_(?:alg_refused|invalid|key_unknown)$/,
         'beta\'s key with kid acme-key: a token_* key reason')
        or diag $r->{body};

    # same kid, same alg in both tenants, other material; the token names
    # acme first and beta second; the cache must not carry beta's
    # verification over to acme
    my $shared = $t->mint({ tkey('beta', 'shared'),
                         claims => { sub => 'mallory', exp => $exp,
                                     iss => $ISS{beta},
                                     tenant_id => ['acme', 'beta'] } });
    refusal_ok(req('/t/beta/x', $shared), 421, 'residency',
               'beta\'s "shared" key, tenants [acme, beta], at /t/beta/: '
               . 'authenticated as beta (421 residency)');
    refusal_ok(req('/t/beta/x', $shared), 421, 'residency',
               'same again (cached): 421 residency');
    problem_ok(req('/t/acme/x', $shared), 'token_invalid',
               'the same token at /t/acme/ (acme\'s "shared" is other '
               . 'material): 401 token_invalid', token => $shared);
    problem_ok(req('/u/x', $shared), 'token_invalid',
               'the same token unbound (first tenant acme): 401 token_invalid',
               token => $shared);

    # the gateway-wide key does not verify acme's tokens
    my $global_acme = tok('acme', iss => $ISS{acme});
    problem_ok(req('/t/acme/x', $global_acme), 'token_key_unknown',
               'acme token signed by the location\'s key: 401',
               token => $global_acme);
    problem_ok(req('/u/x', $global_acme), 'token_key_unknown',
               'unbound: acme token signed by the location\'s key: 401',
               token => $global_acme);

    # acme's issuers replace guard_jwt_issuer
    my $beta_iss = tok('acme', tkey('acme', 'acme-key'), iss => $ISS{beta});
    problem_ok(req('/t/acme/x', $beta_iss), 'token_issuer_refused',
               'acme token with beta\'s issuer: 401 token_issuer_refused',
               token => $beta_iss);
    problem_ok(req('/u/x', $beta_iss), 'token_issuer_refused',
               'unbound: acme token with beta\'s issuer: 401',
               token => $beta_iss);
    my $glob_iss = tok('acme', tkey('acme', 'acme-key'), iss => $GLOBAL_ISS);
    problem_ok(req('/t/acme/x', $glob_iss), 'token_issuer_refused',
               'acme token with the location\'s issuer: 401 (replaced)',
               token => $glob_iss);

    # gamma has no file (_default.json, no auth): the location's keys
    my $gamma = tok('gamma');
    allow_ok(req('/t/gamma/x', $gamma), 'allow', undef,
             'gamma (default policy), global key: 200');
    allow_ok(req('/u/x', $gamma), 'allow', undef,
             'gamma, global key, unbound: 200');
    my $gamma_acme_key = tok('gamma', tkey('acme', 'acme-key'));
    problem_ok(req('/t/gamma/x', $gamma_acme_key), 'token_key_unknown',
               'gamma token signed with acme\'s key: 401',
               token => $gamma_acme_key);
    problem_ok(req('/t/gamma/x', tok('gamma', iss => $ISS{acme})),
               'token_issuer_refused',
               'gamma token with acme\'s issuer: 401 (the location\'s issuer)');

    # a token for acme addressed to gamma: the binding refuses it
    my $glob_acme = tok('acme');    # the location's key and issuer
    problem_ok(req('/t/gamma/x', $glob_acme), 'tenant_mismatch',
               'acme token (global key, global issuer) addressed to gamma: 403');
    # and after that, its verification with the global keys is cached:
    # acme must still refuse it
    problem_ok(req('/t/acme/x', $glob_acme), 'token_key_unknown',
               'acme token (global key) at /t/acme/ after it was verified '
               . 'for gamma: still 401');

    # epsilon has issuers only: the location's keys, its own issuers
    allow_ok(req('/t/epsilon/x', tok('epsilon', iss => $ISS{epsilon})),
             'allow', undef, 'epsilon, own issuer, global key: 200');
    allow_ok(req('/u/x', tok('epsilon', iss => $ISS{epsilon})),
             'allow', undef, 'epsilon, own issuer, unbound: 200');
    problem_ok(req('/t/epsilon/x', tok('epsilon')), 'token_issuer_refused',
               'epsilon with the location\'s issuer: 401');
    problem_ok(req('/u/x', tok('epsilon')), 'token_issuer_refused',
               'epsilon with the location\'s issuer, unbound: 401');
}

# ---------------------------------------------------------------------------
# 2. auth in shadow mode

{
    $t->errlog_mark;
    my $r = req('/t/delta/x', tok('delta'));
    is($r->{status}, 200, 'delta (auth shadow), global key: 200');
    is($r->{headers}{'x-decision'}, 'shadow_deny', 'delta: shadow_deny');
    like($r->{headers}{'x-reason'} // '', qr/^token_/,
         'delta: the reason is a token_* reason');
    is($r->{headers}{'x-reason'}, 'token_key_unknown',
       'delta: token_key_unknown (the global kid is not in delta\'s keys)');
    is($r->{headers}{'x-tenant'}, 'delta', 'delta: $guard_tenant');
    $t->errlog_like(qr/guard: shadow refusal, reason: token_key_unknown/,
                    'delta: shadow refusal logged', since_mark => 1);
    $t->errlog_like(qr/guard: shadow refusal, reason: token_key_unknown, tenant: "delta"/,
                    'delta: the shadow refusal log line names the tenant',
                    since_mark => 1);

    $r = req('/u/x', tok('delta'));
    is($r->{status}, 200, 'delta, unbound: 200');
    is($r->{headers}{'x-decision'}, 'shadow_deny', 'delta, unbound: shadow_deny');

    # a whole tenant in shadow mode: its issuers only record
    allow_ok(req('/t/ashadow/x', tok('ashadow')), 'shadow_deny',
             'token_issuer_refused',
             'tenant in shadow mode, location\'s issuer: 200 shadow_deny '
             . 'token_issuer_refused');
    problem_ok(req('/t/ashadow/x', tok('ashadow', iss => 'https://idp.ashadow.test')),
               'token_issuer_refused',
               'tenant in shadow mode, its own issuer only: 401 (the '
               . 'location\'s issuer enforces)');

    my $own = tok('delta', tkey('delta', 'delta-key'));
    problem_ok(req('/t/delta/x', $own), 'token_key_unknown',
               'delta\'s own key only: 401 (in shadow mode the location\'s '
               . 'keys enforce)', token => $own);
    problem_ok(req('/u/x', $own), 'token_key_unknown',
               'delta\'s own key only, unbound: 401', token => $own);
}

# ---------------------------------------------------------------------------
# 3. residency

{
    $t->errlog_mark;
    allow_ok(req('/t/acme/x', tok('acme', tkey('acme', 'acme-key'),
                                  iss => $ISS{acme})),
             'allow', undef, 'residency: acme in eu-west-1: 200');
    # (beta: 421, checked above)
    allow_ok(req('/t/rshadow/x', tok('rshadow')), 'shadow_deny', 'residency',
             'residency shadow: 200, shadow_deny residency');
    allow_ok(req('/t/tshadow/x', tok('tshadow')), 'shadow_deny', 'residency',
             'whole tenant in shadow mode: 200, shadow_deny residency');
    allow_ok(req('/u/x', tok('rshadow')), 'shadow_deny', 'residency',
             'residency shadow, unbound: 200, shadow_deny residency');
    $t->errlog_like(qr/guard: shadow refusal, reason: residency, tenant: "rshadow"/,
                    'residency shadow refusal logged', since_mark => 1);
}

{
    # a second gateway without guard_region: pinned tenants are refused
    my $t2 = Guard::Test->new;
    $t2->write_conf(gateway_conf());
    my ($rc, $out) = $t2->test_conf;
    is($rc, 0, 'gateway without guard_region: configuration valid') or diag $out;
    $t2->run;

    my $r = $t2->get('/t/acme/x', headers => [Authorization => 'Bearer '
        . tok('acme', tkey('acme', 'acme-key'), iss => $ISS{acme})]);
    refusal_ok($r, 421, 'residency', 'no guard_region: acme (pinned): 421');
    $r = $t2->get('/u/x', headers => [Authorization => 'Bearer '
        . tok('acme', tkey('acme', 'acme-key'), iss => $ISS{acme})]);
    refusal_ok($r, 421, 'residency', 'no guard_region, unbound: acme: 421');
    $r = $t2->get('/t/gamma/x', headers => [Authorization => 'Bearer ' . tok('gamma')]);
    allow_ok($r, 'allow', undef, 'no guard_region: gamma (not pinned): 200');
    $r = $t2->get('/t/rshadow/x', headers => [Authorization => 'Bearer ' . tok('rshadow')]);
    allow_ok($r, 'shadow_deny', 'residency',
             'no guard_region: residency shadow: 200 shadow_deny');

    # a policy set with issuers but no tenant keys at all: a tenant's
    # issuers still replace guard_jwt_issuer in an unbound location
    write_json("pol2/_default.json", { description => 'nothing' });
    write_json("pol2/epsilon.json", $POLICIES{epsilon});
    restart($t2, gateway_conf(policies => "$dir/pol2"));
    my $eps_own = tok('epsilon', iss => $ISS{epsilon});
    my $eps_glob = tok('epsilon');
    allow_ok($t2->get('/t/epsilon/x', headers => [Authorization => "Bearer $eps_own"]),
             'allow', undef, 'no tenant keys in the set: epsilon, own issuer, bound: 200');
    problem_ok($t2->get('/t/epsilon/x', headers => [Authorization => "Bearer $eps_glob"]),
               'token_issuer_refused',
               'no tenant keys in the set: epsilon, location issuer, bound: 401');
    allow_ok($t2->get('/u/x', headers => [Authorization => "Bearer $eps_own"]),
             'allow', undef,
             'no tenant keys in the set: epsilon, own issuer, unbound: 200');
    problem_ok($t2->get('/u/x', headers => [Authorization => "Bearer $eps_glob"]),
               'token_issuer_refused',
               'no tenant keys in the set: epsilon, location issuer, unbound: 401');

    $t2->errlog_ok('second gateway: no alert/emerg');
    $t2->stop;
}

# ---------------------------------------------------------------------------
# 4. concurrency slots never leak

my $conc = tok('conc');

{
    # (a) two in flight, a third refused; afterwards two more
    my ($ids, $socks) = hold('conc', $conc, 2);
    ok(wait_recv(@$ids), '(a) two slow requests reached the backend');
    ok(unanswered($_), '(a) slow request in flight') for @$socks;
    my $r = req('/slow/conc/x?id=' . nid('x'), $conc);
    refusal_ok($r, 429, 'concurrency_limited', '(a) third request: 429');
    like($r->{headers}{'x-policy-version'} // '', qr/^[0-9a-f]{64}$/,
         '(a) the refusal carries $guard_policy_version');
    my $r2 = req('/t/conc/x', $conc);
    refusal_ok($r2, 429, 'concurrency_limited',
               '(a) the limit is the tenant\'s, not the location\'s: 429');
    ok(release($_), "(a) release $_") for @$ids;
    my @resp = map { finish_req($_) } @$socks;
    allow_ok($_, 'allow', undef, '(a) slow request ends with 200') for @resp;
    full_limit_ok($conc, '(a) after they finished: 2 more go through, '
                         . 'the third is refused');
    allow_ok(req('/t/conc/x', $conc), 'allow', undef,
             '(a) nothing in flight: a quick request passes');

    # requests that end on a keep-alive connection give their slot back
    my ($s, $pid, $r1) = probe_conn($conc, '/t/conc/x');
    my @st = ($r1->{status} // '-');
    for (2 .. 4) {
        my ($s2, $pid2, $rn) = probe_conn($conc, '/t/conc/x', $s);
        push @st, $rn->{status} // '-';
    }
    close $s;
    is("@st", '200 200 200 200', '(a) 4 requests on one keep-alive connection');
    full_limit_ok($conc, '(a) after keep-alive requests: the full limit');
}

{
    # (b) client aborts: requests in flight (FIN and RST), and requests
    # abandoned right after they were sent
    my ($ids, $socks, $r3) = full_limit_ok($conc, '(b) 2 held', keep => 1);
    for my $cycle (1 .. 5) {
        abort_req($_, $cycle % 2 == 0) for @$socks;
        my @st = map { wait_logged($_) // 'none' } @$ids;
        is("@st", '499 499', "(b) cycle $cycle: nginx saw both aborts (499)");

        # abandoned at once: each ends somehow (499 or 200 after 200 ms)
        my @quick = map { nid('q') } 1 .. 2;
        abort_req(open_req("/slow/conc/x?id=$_&d=200", $conc), $cycle % 2)
            for @quick;
        my @qs = map { wait_logged($_) // 'none' } @quick;
        like("@qs", qr/^(?:499|200) (?:499|200)$/,
             "(b) cycle $cycle: requests abandoned at once have ended (@qs)");

        ($ids, $socks, $r3) = full_limit_ok($conc,
            "(b) cycle $cycle: both slots free again", keep => 1);
    }
    ok(release($_), "(b) release $_") for @$ids;
    my @resp = map { finish_req($_) } @$socks;
    is($_->{status}, 200, '(b) last pair ends with 200') for @resp;
    full_limit_ok($conc, '(b) after 5 abort cycles: the full limit');
}

{
    # (c) upstream errors
    for my $i (1 .. 3) {
        my $r = req('/dead/conc/x?id=' . nid('d'), $conc);
        is($r->{status}, 502, "(c) closed upstream port: 502 ($i)");
    }
    my $id = nid('c');
    my $r = req("/slow/conc/x?id=$id&close=1", $conc);
    is($r->{status}, 502, '(c) upstream closes without an answer: 502');
    $id = nid('to');
    $r = req("/slowto/conc/x?id=$id&hold=1", $conc);
    is($r->{status}, 504, '(c) upstream read timeout: 504');
    release($id);
    full_limit_ok($conc, '(c) after upstream errors: the full limit');
}

{
    # (d) internal redirect to another guarded location
    my $rid = nid('rd');
    my $s = open_req("/redir/conc/x?id=$rid&hold=1", $conc,
                     headers => ['X-Tenant' => 'conc']);
    ok(wait_recv($rid), '(d) the redirected request reached the fallback');
    ok(unanswered($s), '(d) redirected request in flight');
    my ($ids, $socks) = hold('conc', $conc, 1);
    ok(wait_recv(@$ids), '(d) a second request is let in: the redirected '
                         . 'one holds only one slot');
    ok(unanswered($socks->[0]), '(d) second request in flight');
    refusal_ok(req('/slow/conc/x?id=' . nid('x'), $conc), 429,
               'concurrency_limited', '(d) a third is refused');
    release($_) for $rid, @$ids;
    my $r = finish_req($s);
    allow_ok($r, 'allow', undef, '(d) the redirected request: 200 from the fallback');
    like($r->{body} // '', qr/^ok id=\Q$rid\E$/, '(d) fallback body');
    is(finish_req($socks->[0])->{status}, 200, '(d) second request: 200');

    # the fallback decides again: without X-Tenant it is unaddressed
    my $r2 = req('/redir/conc/x?id=' . nid('rd'), $conc);
    problem_ok($r2, 'tenant_unaddressed',
               '(d) fallback without X-Tenant: decided again, 400');
    for my $i (1 .. 3) {
        my $id = nid('rd');
        my $r3 = req("/redir/conc/x?id=$id", $conc,
                     headers => ['X-Tenant' => 'conc']);
        is($r3->{status}, 200, "(d) quick redirected request $i: 200");
    }
    full_limit_ok($conc, '(d) after internal redirects: the full limit');
}

{
    # (e) two workers share the count
    restart($t, gateway_conf(region => 'eu-west-1', workers => 2,
                             reuseport => 1));
    my @w = $t->worker_pids;
    is(scalar @w, 2, '(e) two workers');
    # learn the worker of each connection with a keep-alive request,
    # then hold one request on a connection of each worker
    my $gamma = tok('gamma');
    my %by_pid;
    my @spare;
    for (1 .. 16) {
        my ($s, $pid) = probe_conn($gamma);
        last unless $s;
        if (!$by_pid{$pid}) { $by_pid{$pid} = $s } else { push @spare, [$s, $pid] }
        last if keys %by_pid == 2 && @spare >= 2
                && (grep { $_->[1] ne $spare[0][1] } @spare);
    }
    my @pids = sort keys %by_pid;
    is(scalar @pids, 2, "(e) connections to both workers (@pids)");
    my @ids = map { nid('w') } @pids;
    for my $i (0 .. $#pids) {
        send_req($by_pid{ $pids[$i] }, "/slow/conc/x?id=$ids[$i]&hold=1", $conc);
    }
    ok(wait_recv(@ids), '(e) one held request on each worker');
    # a third request on a kept connection of each worker: both refused
    my %third;
    for my $sp (@spare) {
        next if $third{ $sp->[1] };
        $third{ $sp->[1] } = 1;
        send_req($sp->[0], '/slow/conc/x?id=' . nid('x'), $conc);
        my $r = finish_req($sp->[0]);
        refusal_ok($r, 429, 'concurrency_limited',
                   "(e) third request on worker $sp->[1]: 429");
        is($r->{headers}{'x-pid'}, $sp->[1], "(e) ... answered by $sp->[1]");
    }
    close $_->[0] for grep { $_->[0]->opened } @spare;
    is(scalar keys %third, 2, '(e) the third request was refused by both workers');
    release($_) for @ids;
    for my $i (0 .. $#pids) {
        my $r = finish_req($by_pid{ $pids[$i] });
        is($r->{status}, 200, "(e) held request on worker $pids[$i]: 200");
        is($r->{headers}{'x-pid'}, $pids[$i], "(e) ... answered by $pids[$i]");
    }
    full_limit_ok($conc, '(e) two workers: the full limit afterwards');
}

{
    # (f) a reload keeps the shared zone and its counts
    my $old_version = req('/t/gamma/x', tok('gamma'))->{headers}{'x-policy-version'};
    my ($ids, $socks) = hold('conc', $conc, 1);
    ok(wait_recv(@$ids), '(f) one request held before the reload');

    # change the set (conc keeps max 2), then HUP; the old worker that
    # holds the request stays until it ends
    write_json('pol/conc.json', { %{ $POLICIES{conc} }, description => 'second' });
    my $master = $t->pid;
    my %old = map { $_ => 1 } $t->worker_pids;
    $t->errlog_mark;
    kill 'HUP', $master;
    my $ok = wait_for(10, sub {
        (grep { !$old{$_} } $t->worker_pids) >= 2
    });
    ok($ok, '(f) reload: two new workers');
    $t->errlog_unlike(qr/\[emerg\]/, '(f) reload: no emerg', since_mark => 1);
    ok((grep { $t->pid_alive($_) } keys %old) >= 1,
       '(f) an old worker is still serving the held request');
    my $new_version;
    wait_for(5, sub {
        my $r = req('/t/gamma/x', tok('gamma'));
        $new_version = $r->{headers}{'x-policy-version'} // '';
        $new_version ne ($old_version // '')
    });
    like($new_version, qr/^[0-9a-f]{64}$/, '(f) new workers: a version');
    isnt($new_version, $old_version,
         '(f) a changed policy file gives a new $guard_policy_version');

    my ($ids2, $socks2) = hold('conc', $conc, 1);
    ok(wait_recv(@$ids2), '(f) after the reload: one more is let in');
    ok(unanswered($socks2->[0]), '(f) second request in flight');
    my $r = req('/slow/conc/x?id=' . nid('x'), $conc);
    refusal_ok($r, 429, 'concurrency_limited',
               '(f) the count still includes the request of the old worker');
    ok(!$old{ $r->{headers}{'x-pid'} // 0 }, '(f) refused by a new worker');

    release($ids->[0]);
    my $ra = finish_req($socks->[0]);
    is($ra->{status}, 200, '(f) the held request ends with 200');
    ok($old{ $ra->{headers}{'x-pid'} // 0 }, '(f) ... answered by an old worker');
    ok(wait_for(10, sub { !grep { $t->pid_alive($_) } keys %old }),
       '(f) the old workers exit');

    my ($ids3, $socks3) = hold('conc', $conc, 1);
    ok(wait_recv(@$ids3), '(f) its slot is free: one more is let in');
    refusal_ok(req('/slow/conc/x?id=' . nid('x'), $conc), 429,
               'concurrency_limited', '(f) and a third is refused');
    release($_) for @$ids2, @$ids3;
    is(finish_req($_)->{status}, 200, '(f) held request: 200')
        for @$socks2, @$socks3;
    full_limit_ok($conc, '(f) after the reload: the full limit');
}

{
    # (g) a worker that is shut down while requests are in flight
    # (worker_shutdown_timeout closes them) gives their slots back
    restart($t, gateway_conf(region => 'eu-west-1', workers => 2,
                             reuseport => 1,
                             main => 'worker_shutdown_timeout 300ms;'));
    my ($ids, $socks) = hold('conc', $conc, 2);
    ok(wait_recv(@$ids), '(g) two requests held');
    my %old = map { $_ => 1 } $t->worker_pids;
    $t->errlog_mark;
    kill 'HUP', $t->pid;
    ok(wait_for(10, sub { (grep { !$old{$_} } $t->worker_pids) >= 2 }),
       '(g) reload: two new workers');
    ok(wait_for(10, sub { !grep { $t->pid_alive($_) } keys %old }),
       '(g) the old workers are gone after worker_shutdown_timeout');
    my @resp = map { finish_req($_, 3) } @$socks;
    ok(!grep({ ($_->{status} // 0) == 200 } @resp),
       '(g) the held requests were cut off');
    full_limit_ok($conc, '(g) after the old workers were shut down: the '
                         . 'full limit');
    release($_) for @$ids;
}

# ---------------------------------------------------------------------------
# 5. concurrency in shadow mode

{
    $t->errlog_mark;
    my $cs = tok('cshadow');
    my ($ids, $socks) = hold('cshadow', $cs, 2);
    ok(wait_recv(@$ids), 'shadow concurrency (max 1): both held requests pass');
    my $r = req('/slow/cshadow/x?id=' . nid('x'), $cs);
    allow_ok($r, 'shadow_deny', 'concurrency_limited',
             'shadow concurrency: a third passes, shadow_deny concurrency_limited');
    ok(!defined $r->{headers}{'retry-after'}, 'shadow concurrency: no Retry-After');
    release($_) for @$ids;
    my @resp = map { finish_req($_) } @$socks;
    is(join(',', sort map { $_->{headers}{'x-decision'} // '-' } @resp),
       'allow,shadow_deny', 'shadow concurrency: first held allow, second shadow_deny');
    is(join(',', map { $_->{status} // '-' } @resp), '200,200',
       'shadow concurrency: both held end with 200');
    $t->errlog_like(qr/guard: shadow refusal, reason: concurrency_limited, tenant: "cshadow"/,
                    'shadow concurrency refusal logged', since_mark => 1);
    allow_ok(req('/slow/cshadow/x?id=' . nid('x'), $cs), 'allow', undef,
             'shadow concurrency: alone again: allow');
}

# ---------------------------------------------------------------------------
# 6. $guard_policy_version and guardctl

sub guardctl {
    my (@args) = @_;
    my $pid = open my $fh, '-|' // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec $GUARDCTL, @args or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

SKIP: {
    skip "no $GUARDCTL", 4 unless -x $GUARDCTL;
    my $r = req('/t/gamma/x', tok('gamma'));
    my $v = $r->{headers}{'x-policy-version'} // '';
    like($v, qr/^[0-9a-f]{64}$/, '$guard_policy_version: 64 hex');
    my ($rc, $out) = guardctl('policy', 'check', $pol);
    is($rc, 0, 'guardctl policy check: exit 0') or diag $out;
    my ($gv) = $out =~ /version: ([0-9a-f]{64})$/m;
    is($v, $gv, '$guard_policy_version equals guardctl\'s version');
    my $rel = do {
        my $cwd = POSIX::getcwd();
        chdir $dir;
        my @x = guardctl('policy', 'check', 'pol');
        chdir $cwd;
        $x[1];
    };
    my ($gv2) = $rel =~ /version: ([0-9a-f]{64})$/m;
    is($gv2, $gv, 'guardctl: same version for a relative directory');
}

$t->errlog_ok('main gateway: no alert/emerg');
$t->stop;
stop_backend();

# ---------------------------------------------------------------------------
# 7. bad tenant key files fail nginx -t

{
    my $t3 = Guard::Test->new;
    my $d3 = $t3->dir;
    my $srv = <<"EOF";
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / { guard on; guard_jwt_keys $kd/jwks.json; empty_gif; }
    }
EOF

    $t3->write_file('p1/acme.json', jenc({ tenant => 'acme',
        auth => { jwks => 'keys/missing.json' } }));
    $t3->write_conf(http => "guard_policies $d3/p1;\n$srv");
    my ($rc, $out) = $t3->test_conf;
    isnt($rc, 0, 'auth.jwks names a missing file: nginx -t fails');
    like($out, qr{\Q$d3\E/p1/keys/missing\.json}, '... naming the file');
    like($out, qr/No such file|unable to open|cannot open/i, '... and why');

    my $bad = { kty => 'RSA', kid => 'bad', alg => 'RS256', use => 'sig',
                n => '!!not-base64url!!', e => 'AQAB' };
    $t3->write_file('p2/keys/bad.jwks.json', jenc({ keys => [ $tk{acme}[0], $bad ] }));
    $t3->write_file('p2/acme.json', jenc({ tenant => 'acme',
        auth => { jwks => 'keys/bad.jwks.json' } }));
    $t3->write_conf(http => "guard_policies $d3/p2;\n$srv");
    ($rc, $out) = $t3->test_conf;
    isnt($rc, 0, 'a bad key in a tenant JWKS: nginx -t fails');
    like($out, qr{\Q$d3\E/p2/keys/bad\.jwks\.json}, '... naming the JWKS file');
    like($out, qr/keys\[1\].*kid "bad".*: \S.*base64url/,
         '... the key and the reason');

    my $priv = { %{ $tk{delta}[0] }, d => 'AAAA' };
    $t3->write_file('p3/keys/priv.jwks.json', jenc({ keys => [$priv] }));
    $t3->write_file('p3/delta.json', jenc({ tenant => 'delta',
        auth => { jwks => 'keys/priv.jwks.json', shadow => JSON::PP::true } }));
    $t3->write_conf(http => "guard_policies $d3/p3;\n$srv");
    ($rc, $out) = $t3->test_conf;
    isnt($rc, 0, 'private key material in a tenant JWKS: nginx -t fails');
    like($out, qr{\Q$d3\E/p3/keys/priv\.jwks\.json.*private key}s,
         '... naming the file and the reason');

    # and a good set passes
    $t3->write_file('p4/keys/ok.jwks.json', jenc({ keys => $tk{acme} }));
    $t3->write_file('p4/acme.json', jenc({ tenant => 'acme',
        auth => { jwks => 'keys/ok.jwks.json' } }));
    $t3->write_conf(http => "guard_policies $d3/p4;\n$srv");
    ($rc, $out) = $t3->test_conf;
    is($rc, 0, 'a good tenant JWKS: nginx -t passes') or diag $out;
}

done_testing;
