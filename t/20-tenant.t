#!/usr/bin/perl

# Tenant binding and the guard variables, end to end: the addressed tenant
# from a header, a regex capture and a map of $host; string and array
# tenant claims; JSON pointer claims; every $guard_* variable as the
# backend sees it, in a map and in an access log; header hygiene.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use Guard::Test;


my $t = Guard::Test->new;
my $keys = $t->jwt_keys;

# The backend echoes what the gateway passed on.  $http_x_* of nginx 1.22
# shows the first header line of that name only; the raw backend below
# shows every header line.
my $ECHO = 'tenant=$http_x_tenant|sub=$http_x_sub|role=$http_x_role|'
         . 'roles=$http_x_roles|num=$http_x_num|obj=$http_x_obj|'
         . 'dec=$http_x_dec|reason=$http_x_reason|id=$http_x_id|'
         . 'cache=$http_x_cache|admin=$http_x_admin|evil=$http_x_evil|'
         . 'csub=$http_x_csub|uid=$http_x_uid\n';

my $PROXY = <<'EOF';
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Tenant $guard_tenant;
            add_header X-Cache $guard_token_cache always;
            add_header X-Decision $guard_decision_id always;
EOF

my $conf = <<"EOF";
    map \$host \$host_tenant {
        acme.api.test  acme;
        beta.api.test  beta;
        default        "";
    }

    map \$guard_claim_role \$is_admin {
        admin    1;
        default  0;
    }

    log_format guard 'uri=\$uri status=\$status decision=\$guard_decision '
                     'reason=\$guard_reason id=\$guard_decision_id '
                     'tenant=\$guard_tenant sub=\$guard_subject';

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location /hdr/ {
            guard on;
            guard_tenant \$http_x_tenant_id;
$PROXY
        }

        location ~ ^/t/(?<tenant>[^/]+)/ {
            guard on;
            guard_tenant \$tenant;
$PROXY
        }

        location /host/ {
            guard on;
            guard_tenant \$host_tenant;
$PROXY
        }

        location /ptr/ {
            guard on;
            guard_tenant_claim /org/tenant;
            guard_tenant \$http_x_tenant_id;
$PROXY
        }

        location /esc/ {
            guard on;
            guard_tenant_claim /a~1b/t;
            guard_tenant \$http_x_tenant_id;
$PROXY
        }

        location /idx/ {
            guard on;
            guard_tenant_claim /orgs/0;
            guard_tenant \$http_x_tenant_id;
$PROXY
        }

        location /free/ {
            guard on;
$PROXY
        }

        location /vars/ {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
            proxy_set_header X-Tenant \$guard_tenant;
            proxy_set_header X-Sub    \$guard_subject;
            proxy_set_header X-Role   \$guard_claim_role;
            proxy_set_header X-Roles  \$guard_claim_roles;
            proxy_set_header X-Num    \$guard_claim_level;
            proxy_set_header X-Obj    \$guard_claim_org;
            proxy_set_header X-Dec    \$guard_decision;
            proxy_set_header X-Reason \$guard_reason;
            proxy_set_header X-Id     \$guard_decision_id;
            proxy_set_header X-Cache  \$guard_token_cache;
            proxy_set_header X-Admin  \$is_admin;
            proxy_set_header X-Csub   \$guard_claim_sub;
            proxy_set_header X-Uid    \$guard_claim_userId;
            add_header X-Decision \$guard_decision_id always;
        }

        location /raw/ {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_2%%;
            proxy_set_header X-Tenant \$guard_tenant;
            proxy_set_header X-Sub    \$guard_subject;
            proxy_set_header X-Csub   \$guard_claim_sub;
        }

        location /logged/ {
            guard on;
            guard_tenant \$http_x_tenant_id;
            access_log %%DIR%%/guard.log guard;
$PROXY
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "$ECHO"; }
    }
EOF

$t->write_conf(http => $conf);
my ($rc, $out) = $t->test_conf;
is($rc, 0, 'configuration is valid') or diag $out;
$t->run;

my $exp = time() + 3600;
$exp = int $exp;

# one mint call for all tokens (python start-up is the slow part)
my %claims = (
    acme      => { sub => 'u-acme', tenant_id => 'acme', exp => $exp },
    beta      => { sub => 'u-beta', tenant_id => 'beta', exp => $exp },
    none      => { sub => 'u-none', exp => $exp },
    arr       => { sub => 'u-arr', tenant_id => ['acme', 'beta'], exp => $exp },
    arr_rev   => { sub => 'u-rev', tenant_id => ['beta', 'acme'], exp => $exp },
    arr_empty => { sub => 'u-empty', tenant_id => [], exp => $exp },
    arr_bad   => { sub => 'u-bad', tenant_id => ['acme', 5], exp => $exp },
    ptr       => { sub => 'u-ptr', org => { tenant => 'acme' }, exp => $exp },
    ptr_flat  => { sub => 'u-flat', tenant_id => 'acme', exp => $exp },
    esc       => { sub => 'u-esc', 'a/b' => { t => 'acme' }, exp => $exp },
    esc_wrong => { sub => 'u-escw', a => { b => { t => 'acme' } }, exp => $exp },
    idx       => { sub => 'u-idx', orgs => ['acme', 'beta'], exp => $exp },
    vars      => { sub => 'user-1', tenant_id => 'acme', role => 'admin',
                   roles => ['a', 'b'], level => 7,
                   org => { id => 5, name => 'Acme' }, exp => $exp },
    user      => { sub => 'user-2', tenant_id => 'acme', role => 'user',
                   exp => $exp },
    crlf      => { sub => "a\r\nX-Evil: 1", tenant_id => 'acme',
                   exp => $exp },
    crlf_ten  => { sub => 'u-ct', tenant_id => "acme\r\nX-Evil: 1",
                   exp => $exp },
    crlf_arr  => { sub => 'u-ca', tenant_id => ['acme', "beta\n"],
                   exp => $exp },
    camel     => { sub => 'u-camel', tenant_id => 'acme', userId => 'U-42',
                   exp => $exp },
);
my @names = sort keys %claims;
my %tok;
@tok{@names} = $t->mint(map { { kid => 'hs256', claims => $claims{$_} } } @names);

sub req {
    my ($path, $token, %o) = @_;
    my @h = (defined $token ? (Authorization => "Bearer $token") : ());
    push @h, 'X-Tenant-Id' => $o{tenant} if defined $o{tenant};
    push @h, @{ $o{headers} } if $o{headers};
    return $t->get($path, headers => \@h,
                   (defined $o{host} ? (host => $o{host}) : ()));
}

sub echo_field {
    my ($r, $name) = @_;
    return undef unless defined $r->{body};
    return $r->{body} =~ /(?:^|\|)\Q$name\E=([^|\n]*)/ ? $1 : undef;
}

# problem+json refusal, checked as a whole by the harness; the status
# given here must be the one the reason maps to
sub refused {
    my ($r, $status, $reason, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    problem_ok($r, $reason, "$name ($status)");
}

sub allowed {
    my ($r, $tenant, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subtest $name => sub {
        is($r->{status}, 200, 'status 200') or diag $r->{body};
        is(echo_field($r, 'tenant'), $tenant, "backend sees tenant $tenant");
    };
}

# --- binding from a header ---------------------------------------------------

allowed(req('/hdr/x', $tok{acme}, tenant => 'acme'), 'acme',
        'header: matching tenant');
refused(req('/hdr/x', $tok{acme}, tenant => 'beta'), 403, 'tenant_mismatch',
        'header: other tenant');
refused(req('/hdr/x', $tok{acme}), 400, 'tenant_unaddressed',
        'header: missing X-Tenant-Id');
refused(req('/hdr/x', $tok{acme}, tenant => ''), 400, 'tenant_unaddressed',
        'header: empty X-Tenant-Id');
refused(req('/hdr/x', $tok{none}, tenant => 'acme'), 403, 'tenant_missing',
        'header: token without a tenant claim');
refused(req('/hdr/x', $tok{acme}, tenant => 'ACME'), 403, 'tenant_mismatch',
        'header: case differs (byte-wise comparison)');
refused(req('/hdr/x', $tok{acme}, tenant => 'acm'), 403, 'tenant_mismatch',
        'header: prefix of the tenant');
refused(req('/hdr/x', $tok{acme}, tenant => 'acmex'), 403, 'tenant_mismatch',
        'header: tenant is a prefix of the addressed one');
refused(req('/hdr/x', undef, tenant => 'acme'), 401, 'token_missing',
        'header: no token at all');

# --- binding from a regex capture --------------------------------------------

allowed(req('/t/acme/orders', $tok{acme}), 'acme', 'capture: matching tenant');
allowed(req('/t/beta/orders', $tok{beta}), 'beta', 'capture: beta token, beta path');
refused(req('/t/beta/orders', $tok{acme}), 403, 'tenant_mismatch',
        'capture: other tenant in the path');
refused(req('/t/Acme/orders', $tok{acme}), 403, 'tenant_mismatch',
        'capture: case differs');

# --- binding from a map of $host ---------------------------------------------

allowed(req('/host/x', $tok{acme}, host => 'acme.api.test'), 'acme',
        'host map: acme.api.test');
allowed(req('/host/x', $tok{beta}, host => 'beta.api.test'), 'beta',
        'host map: beta.api.test');
refused(req('/host/x', $tok{acme}, host => 'beta.api.test'), 403,
        'tenant_mismatch', 'host map: acme token on beta host');
refused(req('/host/x', $tok{acme}, host => 'unknown.api.test'), 400,
        'tenant_unaddressed', 'host map: unknown host');

# --- array tenant claims -----------------------------------------------------

allowed(req('/hdr/x', $tok{arr}, tenant => 'acme'), 'acme',
        'array claim: first element addressed');
allowed(req('/hdr/x', $tok{arr}, tenant => 'beta'), 'beta',
        'array claim: second element addressed, $guard_tenant is the addressed one');
refused(req('/hdr/x', $tok{arr}, tenant => 'gamma'), 403, 'tenant_mismatch',
        'array claim: tenant not in the array');
refused(req('/hdr/x', $tok{arr_empty}, tenant => 'acme'), 403,
        'tenant_missing', 'array claim: empty array');
refused(req('/hdr/x', $tok{arr_bad}, tenant => 'acme'), 403,
        'tenant_missing', 'array claim: a non-string element');
refused(req('/t/acme/x', $tok{arr_bad}), 403, 'tenant_missing',
        'array claim: a non-string element (capture binding)');

# --- JSON pointer claims -----------------------------------------------------

allowed(req('/ptr/x', $tok{ptr}, tenant => 'acme'), 'acme',
        'pointer /org/tenant: nested claim');
refused(req('/ptr/x', $tok{ptr}, tenant => 'beta'), 403, 'tenant_mismatch',
        'pointer /org/tenant: other tenant');
refused(req('/ptr/x', $tok{ptr_flat}, tenant => 'acme'), 403,
        'tenant_missing', 'pointer /org/tenant: path missing from the token');
allowed(req('/esc/x', $tok{esc}, tenant => 'acme'), 'acme',
        'pointer /a~1b/t: key "a/b"');
refused(req('/esc/x', $tok{esc_wrong}, tenant => 'acme'), 403,
        'tenant_missing', 'pointer /a~1b/t: ~1 is not a path separator');
allowed(req('/idx/x', $tok{idx}, tenant => 'acme'), 'acme',
        'pointer /orgs/0: array element');
refused(req('/idx/x', $tok{idx}, tenant => 'beta'), 403, 'tenant_mismatch',
        'pointer /orgs/0: only element 0 is the tenant');
refused(req('/idx/x', $tok{acme}, tenant => 'acme'), 403, 'tenant_missing',
        'pointer /orgs/0: no orgs claim');

{
    my $tc = Guard::Test->new;
    for my $case (['/a~2', 'escape ~2'], ['/a~', 'dangling ~']) {
        $tc->write_conf(http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / {
            guard on;
            guard_jwt_keys $keys/jwks.json;
            guard_tenant_claim $case->[0];
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }
EOF
        my ($rc2, $out2) = $tc->test_conf;
        isnt($rc2, 0, "invalid pointer $case->[0] ($case->[1]): test_conf fails");
        like($out2, qr/guard_tenant_claim.*not a valid JSON pointer/,
             "invalid pointer $case->[0]: clear message");
    }
}

# --- without guard_tenant ------------------------------------------------------

allowed(req('/free/x', $tok{acme}), 'acme', 'no binding: string tenant');
allowed(req('/free/x', $tok{arr}), 'acme', 'no binding: first array element');
allowed(req('/free/x', $tok{arr_rev}), 'beta',
        'no binding: first array element (other order)');
refused(req('/free/x', $tok{none}), 403, 'tenant_missing',
        'no binding: token without a tenant');
allowed(req('/free/x', $tok{acme}, headers => ['X-Tenant-Id' => 'beta']),
        'acme', 'no binding: X-Tenant-Id is ignored');

# --- every variable at the backend ---------------------------------------------

my $r1 = req('/vars/x', $tok{vars});
is($r1->{status}, 200, 'vars: status 200') or diag $r1->{body};
my %want = (
    tenant => 'acme', sub => 'user-1', role => 'admin', roles => 'a,b',
    num => '7', obj => '{"id":5,"name":"Acme"}', dec => 'allow',
    reason => '', cache => 'miss', admin => '1', csub => 'user-1',
);
for my $f (sort keys %want) {
    is(echo_field($r1, $f), $want{$f}, "vars: $f = '$want{$f}'");
}
my $id1 = echo_field($r1, 'id') // '';
like($id1, $UUID7, 'vars: $guard_decision_id is a UUIDv7');
is($r1->{headers}{'x-decision'}, $id1,
   'vars: same decision id in the response (add_header)');

sleep 0.01;
my $r2 = req('/vars/x', $tok{vars});
is($r2->{status}, 200, 'vars: second request 200');
is(echo_field($r2, 'cache'), 'hit', 'vars: second request is a cache hit');
for my $f (qw(tenant sub role roles num obj dec admin csub)) {
    is(echo_field($r2, $f), $want{$f}, "vars from the cache: $f = '$want{$f}'");
}
my $id2 = echo_field($r2, 'id') // '';
like($id2, $UUID7, 'vars: second decision id is a UUIDv7');
isnt($id2, $id1, 'vars: decision ids differ');
(my $hex = $id1) =~ tr/-//d;
my $ms = hex(substr $hex, 0, 6) * 2**24 + hex(substr $hex, 6, 6);
ok(abs($ms / 1000 - time) < 60, 'vars: the UUIDv7 timestamp is now');
ok($id1 lt $id2, "vars: decision ids sort in time order ($id1 < $id2)");

my $ru = req('/vars/x', $tok{user});
is($ru->{status}, 200, 'vars: role user 200');
is(echo_field($ru, 'role'), 'user', 'vars: role user');
is(echo_field($ru, 'admin'), '0', 'map of $guard_claim_role: user -> 0');
is(echo_field($ru, 'roles'), '', 'vars: absent array claim is empty');
is(echo_field($ru, 'obj'), '', 'vars: absent object claim is empty');

# --- variables in the access log -------------------------------------------------

sub wait_log_lines {
    my ($n) = @_;
    my @l;
    for (1 .. 40) {
        @l = split /\n/, ($t->read_file('guard.log') // '');
        last if @l >= $n;
        sleep 0.05;
    }
    return @l;
}

my $rl = req('/logged/x', $tok{acme}, tenant => 'acme');
is($rl->{status}, 200, 'log: allowed request');
my $rd = req('/logged/x', $tok{acme}, tenant => 'beta');
refused($rd, 403, 'tenant_mismatch', 'log: refused request');
my @lines = wait_log_lines(2);
is(scalar @lines, 2, 'log: two lines');
like($lines[0] // '', qr/^uri=\/logged\/x status=200 decision=allow reason=- id=[0-9a-f-]{36} tenant=acme sub=u-acme$/,
     'log: allowed line');
is(($lines[0] // '') =~ /id=(\S+)/ ? $1 : undef, $rl->{headers}{'x-decision'},
   'log: allowed line has the response decision id');
my $hid = $rd->{headers}{'guard-decision-id'} // 'none';
like($lines[1] // '', qr/^uri=\/logged\/x status=403 decision=deny reason=tenant_mismatch id=\Q$hid\E tenant=- sub=u-acme$/,
     'log: refused line shows deny, tenant_mismatch and the Guard-Decision-Id');

# --- client-supplied spoofing ------------------------------------------------------

# one-shot raw HTTP backend on PORT_2: answers with the request head it got
sub raw_backend {
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => $t->port(2), Proto => 'tcp',
                                    Listen => 5, ReuseAddr => 1)
        or die "raw backend: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 10;
        my $c = $srv->accept or POSIX::_exit(1);
        my $head = '';
        while ($head !~ /\r\n\r\n/) {
            my $n = sysread $c, my $buf, 8192;
            last unless $n;
            $head .= $buf;
        }
        $head =~ s/\r\n\r\n.*//s;
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   . "Content-Length: " . length($head)
                   . "\r\nConnection: close\r\n\r\n$head";
        close $c;
        POSIX::_exit(0);
    }
    close $srv;
    return $pid;
}

my $rs = req('/vars/x', $tok{acme}, headers => ['X-Tenant' => 'evil']);
is($rs->{status}, 200, 'spoof: 200');
is(echo_field($rs, 'tenant'), 'acme',
   'spoof: backend sees the guard tenant, not the client X-Tenant');

my $bp = raw_backend();
my $rr = req('/raw/x', $tok{acme}, headers => ['X-Tenant' => 'evil',
                                               'X-Sub' => 'evil-sub']);
waitpid $bp, 0;
is($rr->{status}, 200, 'spoof (raw backend): 200');
my @xt = $rr->{body} =~ /^X-Tenant:\s*(.*?)\s*$/mig;
is_deeply(\@xt, ['acme'], 'spoof (raw backend): exactly one X-Tenant, the guard one')
    or diag $rr->{body};
my @xs = $rr->{body} =~ /^X-Sub:\s*(.*?)\s*$/mig;
is_deeply(\@xs, ['u-acme'], 'spoof (raw backend): exactly one X-Sub, the guard one');

# --- control characters in claims ---------------------------------------------------

my $rc1 = req('/vars/x', $tok{crlf});
is($rc1->{status}, 200, 'crlf sub: allowed');
is(echo_field($rc1, 'sub'), '', 'crlf sub: $guard_subject is empty at the backend');
is(echo_field($rc1, 'csub'), '', 'crlf sub: $guard_claim_sub is empty too');
is(echo_field($rc1, 'evil'), '', 'crlf sub: no X-Evil header at the backend');
is(echo_field($rc1, 'tenant'), 'acme', 'crlf sub: other variables unaffected');

$bp = raw_backend();
$rr = req('/raw/x', $tok{crlf});
waitpid $bp, 0;
is($rr->{status}, 200, 'crlf sub (raw backend): 200');
unlike($rr->{body}, qr/^X-Evil/mi, 'crlf sub (raw backend): no X-Evil line');
unlike($rr->{body}, qr/^X-(?:Sub|Csub):/mi,
       'crlf sub (raw backend): no X-Sub / X-Csub line at all');
like($rr->{body}, qr/^X-Tenant: acme\r?$/mi, 'crlf sub (raw backend): X-Tenant passed');

# a tenant with control characters names no tenant at all
refused(req('/free/x', $tok{crlf_ten}), 403, 'tenant_missing',
        'crlf tenant, no binding: tenant_missing');
refused(req('/hdr/x', $tok{crlf_ten}, tenant => 'acme'), 403,
        'tenant_missing', 'crlf tenant, bound: tenant_missing');
refused(req('/hdr/x', $tok{crlf_arr}, tenant => 'acme'), 403,
        'tenant_missing', 'array with a crlf tenant: tenant_missing');

# nginx lowercases variable names: $guard_claim_userId finds "userId"
my $rcm = req('/vars/x', $tok{camel});
is($rcm->{status}, 200, 'camelCase claim: allowed');
is(echo_field($rcm, 'uid'), 'U-42', 'camelCase claim: $guard_claim_userId');

$t->errlog_ok;

done_testing;
