#!/usr/bin/perl

# A sidecar that gives no verdict: many requests waiting at once all go
# on when their timers fire (each resumed from a posted event), and the
# worker logs the timeouts at most once a second, each line with the
# number of timeouts since the previous one.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use Guard::Test qw(:DEFAULT wait_for);
use Guard::Frames;

my $t = Guard::Test->new;
my $dir = $t->dir;
my $sock = "$dir/silent.sock";

# a sidecar that says HELLO, reads, and never answers
my $silent = stand_in_guardd($sock, 60, sub { '' });
END { kill 'KILL', $silent if $silent }

$t->write_conf(http => <<'CONF');
    guard_sidecar unix:%%DIR%%/silent.sock timeout=100ms connections=1;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;
        guard on;
        guard_risk on;
        guard_risk_fail open;

        location / {
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "ok\n"; }
    }
CONF
$t->run;

my $tok = $t->mint({ kid => 'hs256', claims => {
    sub => 'u1', tenant_id => 'acme', exp => time() + 3600 } });

# n requests sent at once, then their answers
sub batch {
    my ($n) = @_;
    my @s;
    for my $i (1 .. $n) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $t->port(0),
                                      Proto => 'tcp', Timeout => 10)
            or die "connect: $@";
        print $s "GET /b$i HTTP/1.1\r\nHost: localhost\r\n"
               . "Authorization: Bearer $tok\r\nConnection: close\r\n\r\n";
        push @s, $s;
    }
    my @status;
    for my $s (@s) {
        local $/;
        my $raw = <$s> // '';
        push @status, $raw =~ m{^HTTP/1\.1 (\d{3})} ? $1 : 0;
    }
    return @status;
}

sub timeout_lines {
    return grep { /guard sidecar: no verdict within 100 ms/ }
           split /\n/, $t->errlog;
}

# wait until the worker's connection is up
wait_for(5, sub { $t->get('/warm', headers => [Authorization => "Bearer $tok"])
                   ->{status} == 200 && timeout_lines() });
sleep 1.2;    # past the line of the warm-up, and the cooldown it caused

my @before = timeout_lines();
my @st = batch(10);
is_deeply(\@st, [(200) x 10], 'ten requests without a verdict all go on');

my @lines = timeout_lines();
my $new = @lines - @before;
cmp_ok($new, '>=', 1, 'their timeouts are logged');
cmp_ok($new, '<', 10, 'but not one line each: at most a line a second');
like($lines[-1], qr/no verdict within 100 ms, \d+ request\(s\) since the last such line/,
     'the line counts the timeouts since the previous one');

# a second later, the next line says how many the first one hid
sleep 1.2;
@st = batch(3);
is_deeply(\@st, [(200) x 3], 'a later batch goes on too');
my @more = timeout_lines();
my ($hid) = $more[scalar @lines] =~ /, (\d+) request\(s\) since/;
cmp_ok($hid // 0, '>', 1, 'the next line counts the timeouts it did not log');

$t->errlog_ok;

done_testing;
