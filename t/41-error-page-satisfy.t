#!/usr/bin/perl

# Guard's refusals with nginx's own mechanisms.  error_page: a refusal
# whose status the location has an error_page for goes there (401 to a
# login page, 429 and 503 to a fallback), with the Guard-Decision-Id and
# RateLimit headers, the refusal logged and audited as ever; a status
# without one is the problem+json body.  satisfy any: Guard's allow
# admits the request; its 401 and 403 (also a risk_deny, after waiting
# for guardd's verdict) let allow/deny and auth_basic admit it, with no
# refusal logged or audited, and when none does the client gets Guard's
# refusal (or the error_page for it); other refusals (429) end the
# request at once.  And guard_log_level, the level of the refusal lines.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use MIME::Base64 ();
use Guard::Test;
use Guard::Frames;

my $t = Guard::Test->new;
my $dir = $t->dir;

my $UUID7 = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

# a tenant allowed one request a minute
$t->write_file('pol/slow.json', JSON::PP->new->encode({
    tenant => 'slow',
    limits => { rate => [ { name => 'api', requests => 1, period => '1m' } ] },
}));

# the htpasswd file auth_basic reads, written with openssl passwd
my $hash = `openssl passwd -apr1 s3cret`;
die "openssl passwd failed\n" if $? || !$hash;
chomp $hash;
$t->write_file('htpasswd', "staff:$hash\n");
chmod 0644, "$dir/htpasswd";

# a stand-in guardd: DECIDE for /risk/ is "unavailable" (sidecar_unavailable),
# for the others a deny; every AUDIT is written to audits.log and acknowledged
my $json = JSON::PP->new->canonical;
my $alog = "$dir/audits.log";
my $fake = stand_in_guardd("$dir/guardd.sock", 120, sub {
    my ($type, $id, $body) = @_;
    my $d = eval { $json->decode($body) } // {};
    if ($type == 2) {
        return ($d->{route} // '') =~ m{^/risk/}
            ? frame(8, $id, { code => 'unavailable', message => 'test' })
            : frame(3, $id, { decision => 'deny', score => 90, signals => [],
                              decision_id => sprintf('01900000-0000-7000-8000-%012d',
                                                     $id) });
    }
    return '' unless $type == 4;
    open my $f, '>>', $alog or die "$alog: $!";
    print $f join(' ', map { $_ // '-' } @$d{qw(id route outcome reason status)}),
             "\n";
    close $f;
    return frame(5, $id, { id => $d->{id}, hash => '0' x 64 });
});
END { kill 'KILL', $fake if $fake }

# the audit line of a decision id, once it arrived
sub audited {
    my ($id) = @_;
    for (1 .. 50) {
        my ($line) = grep { index($_, $id) == 0 }
                     split /\n/, ($t->read_file('audits.log') // '');
        return $line if defined $line;
        select undef, undef, undef, 0.1;
    }
    return '';
}

$t->write_conf(http => <<'CONF');
    log_format guard '$uri $status $guard_decision $guard_reason '
                     '$guard_decision_id';

    guard_policies %%DIR%%/pol;
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=2s;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        guard on;
        access_log %%DIR%%/guard.log guard;

        location /ep/ {
            error_page 401 = @login;
            error_page 429 = @fallback;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /risk/ {
            guard_risk on;
            error_page 503 = @fallback;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        # "guard on" is inherited here: a refused request is not decided
        # again on its way to the error page
        location @fallback {
            return 200 "fallback $guard_reason $guard_decision\n";
        }

        location @login {
            guard off;
            return 200 "login $guard_reason\n";
        }

        location /quiet/ {
            guard_log_level error;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /any/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /nobody/ {
            satisfy any;
            deny all;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /nobody-ep/ {
            satisfy any;
            deny all;
            error_page 401 = @login;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        # guardd's verdict (a deny) is waited for, then the other
        # modules decide
        location /risk-any/ {
            satisfy any;
            guard_risk on;
            allow 127.0.0.1;
            deny all;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /risk-nobody/ {
            satisfy any;
            guard_risk on;
            deny all;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /basic/ {
            satisfy any;
            auth_basic "staff";
            auth_basic_user_file %%DIR%%/htpasswd;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend $uri\n"; }
    }
CONF
$t->run;

sub token {
    my ($tenant) = @_;
    return $t->mint({ kid => 'es256',
                      claims => { sub => 'u1',
                                  $tenant ? (tenant_id => $tenant) : (),
                                  exp => time() + 3600 } });
}

my $acme = token('acme');
my $slow = token('slow');
my $none = token(undef);
my $basic = 'Basic ' . MIME::Base64::encode_base64('staff:s3cret', '');
my $wrong = 'Basic ' . MIME::Base64::encode_base64('staff:nope', '');

# the access log line of a request: uri status decision reason id
sub logged {
    my ($id) = @_;
    for (1 .. 50) {
        my $log = $t->read_file('guard.log') // '';
        my ($line) = grep { index($_, $id) >= 0 } split /\n/, $log;
        return $line if defined $line;
        select undef, undef, undef, 0.1;
    }
    return '';
}

# ---------------------------------------------------------------------------
# error_page

my $r = $t->get('/ep/x');
is($r->{status}, 200, 'error_page 401 = @login: no token goes to the login page');
is($r->{body}, "login token_missing\n", 'the page sees $guard_reason');
my $id = $r->{headers}{'guard-decision-id'} // '';
like($id, $UUID7, 'the page carries the Guard-Decision-Id');
like(logged($id), qr{^/ep/x 200 deny token_missing \Q$id\E$},
     'the request is logged as refused, with its decision id');
is(audited($id), "$id /ep/x deny token_missing 200",
   'and audited, with the status sent');
$t->errlog_like(qr/\[info\].*guard: refused with 401, reason: token_missing, decision: \Q$id\E/,
                'the refusal line, at info by default');

$r = $t->get('/ep/x', headers => [Authorization => "Bearer $acme"]);
is($r->{status}, 200, 'error_page: an allowed request');
is($r->{body}, "backend /ep/x\n", 'reaches the backend');

$r = $t->get('/ep/x', headers => [Authorization => "Bearer $slow"]);
is($r->{body}, "backend /ep/x\n", 'the slow tenant\'s first request passes');
$r = $t->get('/ep/x', headers => [Authorization => "Bearer $slow"]);
is($r->{status}, 200, 'error_page 429 = @fallback: the fallback answers');
is($r->{body}, "fallback rate_limited deny\n",
   'the fallback sees $guard_reason and $guard_decision');
$id = $r->{headers}{'guard-decision-id'} // '';
like($id, $UUID7, 'the fallback carries the Guard-Decision-Id');
like($r->{headers}{'ratelimit'} // '', qr/"api";r=0/,
     'and the RateLimit fields of the refusal');
like(logged($id), qr{^/ep/x 200 deny rate_limited \Q$id\E$},
     'rate refusal logged with its decision id');
is(audited($id), "$id /ep/x deny rate_limited 200", 'and audited');

# a status without an error_page: the problem+json body as ever
$r = $t->get('/ep/x', headers => [Authorization => "Bearer $none"]);
problem_ok($r, 'tenant_missing', 'no error_page for 403: problem+json');

# 503: the sidecar is not there, guard_risk fails closed
$r = $t->get('/risk/x', headers => [Authorization => "Bearer $acme"]);
is($r->{status}, 200, 'error_page 503 = @fallback: the fallback answers');
is($r->{body}, "fallback sidecar_unavailable deny\n",
   'for the sidecar_unavailable refusal');
is($r->{headers}{'retry-after'}, '1', 'with the refusal\'s Retry-After');
$id = $r->{headers}{'guard-decision-id'} // '';
like(logged($id), qr{^/risk/x 200 deny sidecar_unavailable \Q$id\E$},
     'sidecar refusal logged with its decision id');
is(audited($id), "$id /risk/x deny sidecar_unavailable 200", 'and audited');

# guard_log_level
$r = $t->get('/quiet/x');
$id = problem_ok($r, 'token_missing', 'guard_log_level error: still refused');
$t->errlog_like(qr/\[error\].*guard: refused with 401, reason: token_missing, decision: \Q$id\E/,
                'guard_log_level error: the refusal line is at error');

# ---------------------------------------------------------------------------
# satisfy any

$r = $t->get('/any/x');
is($r->{status}, 200, 'satisfy any: allow 127.0.0.1 admits a request '
                      . 'Guard refuses');
is($r->{body}, "backend /any/x\n", 'it reaches the backend');
ok(!defined $r->{headers}{'guard-decision-id'}
   && !defined $r->{headers}{'www-authenticate'},
   'without the headers of a refusal');
$t->errlog_unlike(qr/guard: refused.*request: "GET \/any\/x /,
                  'and no refusal is counted or logged for it');
my ($admitted) = logged('/any/x 200') =~ /^\/any\/x 200 deny token_missing (\S+)$/;
ok($admitted, '$guard_decision and $guard_reason say what Guard decided');

$r = $t->get('/any/x', headers => [Authorization => "Bearer $acme"]);
is($r->{body}, "backend /any/x\n", 'satisfy any: Guard\'s allow admits');

$r = $t->get('/nobody/x');
$id = problem_ok($r, 'token_missing',
                 'satisfy any, deny all, no token: Guard\'s refusal');
like(logged($id), qr{^/nobody/x 401 deny token_missing \Q$id\E$},
     'logged as Guard\'s refusal');
is(audited($id), "$id /nobody/x deny token_missing 401", 'and audited');
$t->errlog_like(qr/guard: refused with 401, reason: token_missing, decision: \Q$id\E/,
                'the refusal line');

$r = $t->get('/nobody-ep/x');
is($r->{status}, 200, 'satisfy any, deny all, error_page 401: the page');
is($r->{body}, "login token_missing\n", 'the login page answers');

$r = $t->get('/basic/x', headers => [Authorization => $basic]);
is($r->{status}, 200, 'satisfy any: auth_basic admits without a token');
is($r->{body}, "backend /basic/x\n", 'the backend answers');

$r = $t->get('/basic/x', headers => [Authorization => "Bearer $acme"]);
is($r->{body}, "backend /basic/x\n", 'satisfy any: a token admits too');

$r = $t->get('/basic/x', headers => [Authorization => $wrong]);
is($r->{status}, 401, 'satisfy any, wrong password: 401');
like($r->{headers}{'content-type'} // '', qr{^application/problem\+json},
     'Guard\'s problem+json');
my @wa = map { $_->[1] } grep { lc $_->[0] eq 'www-authenticate' }
         @{ $r->{raw_headers} };
ok((grep { /^Basic realm="staff"/ } @wa) && (grep { /^Bearer realm="guard"/ } @wa),
   'both challenges: Basic and Bearer')
    or diag(join ' | ', @wa);

$r = $t->get('/basic/x');
is($r->{status}, 401, 'satisfy any, no credentials at all: 401');
like($r->{body}, qr/"reason":"token_missing"/, 'Guard\'s refusal');

# risk: the request waits for guardd's deny, resumes, and then allow
# admits it; where nothing admits it, Guard's 403 with guardd's id
$r = $t->get('/risk-any/x', headers => [Authorization => "Bearer $acme"]);
is($r->{status}, 200, 'satisfy any: allow admits a request guardd denies');
is($r->{body}, "backend /risk-any/x\n", 'after the verdict');

$r = $t->get('/risk-nobody/x', headers => [Authorization => "Bearer $acme"]);
$id = problem_ok($r, 'risk_deny', 'satisfy any, deny all: Guard\'s risk_deny');
like($id, qr/^01900000-0000-7000-8000-/, 'with guardd\'s decision id');
is(audited($id), "$id /risk-nobody/x deny risk_deny 403", 'and audited');

# the admitted requests left no audit record
ok(length(audited($id)) && !grep({ /\/any\/x|\/risk-any\// }
                                 split /\n/, $t->read_file('audits.log')),
   'no audit record for the requests another module admitted');

# a refusal other than 401/403 does not wait for the other modules
$r = $t->get('/basic/x', headers => [Authorization => "Bearer $slow"]);
problem_ok($r, 'rate_limited',
           'satisfy any: a 429 ends the request at once, as limit_req');

# ---------------------------------------------------------------------------
# guard_log_level: its values

for my $case (['guard_log_level crit;', 'invalid value "crit"'],
              ['guard_log_level notice;', undef]) {
    my ($line, $err) = @$case;
    my $conf = $t->read_file('nginx.conf');
    (my $c2 = $conf) =~ s/guard on;/guard on;\n        $line/;
    $t->write_file('nginx.conf', $c2);
    my ($rc, $out) = $t->test_conf;
    if ($err) {
        isnt($rc, 0, "nginx -t refuses $line");
        like($out, qr/\Q$err\E/, 'and says why');
    } else {
        is($rc, 0, "nginx -t accepts $line") or diag($out);
    }
    $t->write_file('nginx.conf', $conf);
}

$t->errlog_ok;

done_testing;
