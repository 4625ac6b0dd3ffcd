#!/usr/bin/perl

# Guard's own lines about a request in error.log (a refusal, a shadow
# refusal, a sidecar that gives no verdict) name the request without its
# query string and with its path masked: an access_token or an e-mail
# address in the URL, or a token in the Referer, never reaches error.log.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes qw(sleep time);
use Guard::Test qw(:DEFAULT wait_for);

my $t = Guard::Test->new;
my $dir = $t->dir;
my $sock = "$dir/silent.sock";

# a sidecar that accepts and reads, and never answers
my $silent = fork // die;
if ($silent == 0) {
    my $l = IO::Socket::UNIX->new(Local => $sock, Listen => 16,
                                  Type => SOCK_STREAM) or POSIX::_exit(1);
    chmod 0666, $sock;
    my @held;
    my $end = time + 60;
    while (time < $end) {
        my $c = $l->accept or next;
        push @held, $c;
    }
    POSIX::_exit(0);
}
END { kill 'KILL', $silent if $silent }
for (1 .. 100) { last if -S $sock; sleep 0.05 }

$t->write_conf(http => <<'CONF');
    guard_sidecar unix:%%DIR%%/silent.sock timeout=100ms;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        server_name gw.example;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location / {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /r/ {
            guard on;
            guard_risk on;
            guard_risk_fail open;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "ok\n"; }
    }
CONF
$t->run;

my $secret = 'SeCrEtToKeN0123456789';
my $query = "access_token=$secret&email=bob.victim%40example.com"
          . '&mail=carol@example.org';
my $tok = $t->mint({ kid => 'hs256', claims => {
    sub => 'u1', tenant_id => 'acme', exp => time() + 3600 } });

# a refusal: no token, and one in the query string
my $r = $t->http('GET', "/a/dave\@example.net/x?$query",
                 headers => [Referer => "https://app.example/?token=$secret"]);
problem_ok($r, 'token_missing', 'a refusal with secrets in the URL');

# a sidecar that does not answer: the request goes on (a shadow refusal,
# sidecar_unavailable, as guard_risk_fail is open), and it is logged
$r = $t->http('GET', "/r/frank\@example.net?$query",
              headers => [Authorization => "Bearer $tok"]);
is($r->{status}, 200, 'no verdict: fails open');

my $log;
wait_for(5, sub {
    $log = $t->errlog;
    $log =~ /no verdict/ && $log =~ /shadow refusal/;
});

my $want = 'client: 127.0.0.1, server: gw.example, '
         . 'request: "GET /a/[email]/x?[masked] HTTP/1.1", host: "localhost"';
my $head = 'guard: refused with 401, reason: token_missing, decision: ';
like($log, qr/\Q$head\E[-0-9a-f]+, \Q$want\E$/m,
     'the refusal names the request: path masked, query left out');
like($log,
     qr/guard: shadow refusal.*request: "GET \/r\/\[email\]\?\[masked\] /,
     'the shadow refusal too');
like($log,
     qr/no verdict within 100 ms.*request: "GET \/r\/\[email\]\?\[masked\] /,
     'the sidecar timeout too');

for my $piece ($secret, 'access_token=', 'bob.victim', 'carol@', 'dave@',
               'frank@', $tok, 'referrer')
{
    ok(index($log, $piece) < 0, "error.log has no \"$piece\"");
}

$t->errlog_ok;

done_testing;
