#!/usr/bin/perl

# Readiness: guard_health answers 200 while Guard can do its job and 503
# when it cannot, naming the check that failed: guardd unreachable while
# a location fails closed without it, the audit ring's backlog over its
# threshold, the spill directory not writable.  A check switched off or
# to "warn" does not fail the answer; open breakers are reported only.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(sleep time);
use Guard::Test qw(:DEFAULT wait_for);
use Guard::Frames qw(:DEFAULT guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new;

mkdir "$dir/spill" or die;
chmod 0777, "$dir/spill";    # the workers (nobody) write, guardd removes

$t->write_file('pol/acme.json', <<'JSON');
{"tenant": "acme"}
JSON
$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-health', spill => "$dir/spill"));

my $gpid;
sub start_guardd {
    $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                         "$dir/guardd.log");
}
sub stop_guardd {
    end_guardd($gpid);
    undef $gpid;
}

start_guardd();

my $conf = <<'CONF';
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=500ms connections=2;
    guard_audit_ring 8;
    guard_audit_spill %%DIR%%/spill;
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location = /status { guard_status; }
        location = /ready { guard_health; }

        location = /ready-nosidecar {
            guard_health;
            guard_health_check sidecar off;
        }

        location = /ready-warn {
            guard_health;
            guard_health_check sidecar off;
            guard_health_check spill warn;
        }

        location / {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /r/ {
            guard on;
            guard_risk on;
            guard_risk_fail closed;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend\n"; }
    }
CONF
$t->write_conf(http => $conf);

# configuration errors that nginx -t catches
my $good = $t->read_file('nginx.conf');
for my $case (
    [ 'guard_health_check sidecar off;', 'guard_health_check sidecars off;',
      qr/unknown check "sidecars"/, 'an unknown check' ],
    [ 'guard_health_check sidecar off;', 'guard_health_check sidecar fail;',
      qr/invalid mode "fail"/, 'an unknown mode' ],
    [ 'guard_health;', 'guard_health; guard_health_backlog 1.5;',
      qr/"guard_health_backlog" directive must be a ratio/, 'a ratio over 1' ],
) {
    my ($from, $to, $re, $what) = @$case;
    (my $c = $good) =~ s/\Q$from\E/$to/ or die "no $from";
    $t->write_file('nginx.conf', $c);
    my ($rc, $out) = $t->test_conf;
    ok($rc != 0 && $out =~ $re, "nginx -t refuses $what") or diag $out;
}
$t->write_file('nginx.conf', $good);

$t->run;

# the answer of a location: status, its JSON (undef for none), response
sub ready {
    my ($path) = @_;
    my $r = $t->get($path // '/ready');
    my $doc = eval { $json->decode($r->{body}) };
    return ($r->{status}, $doc, $r);
}

# waits (bounded) until $path answers $status; returns the last answer
sub ready_wait {
    my ($path, $status, $secs) = @_;
    my @last;
    wait_for($secs // 10, sub {
        @last = ready($path);
        return $last[0] == $status;
    });
    return @last;
}

sub failed { join ',', @{ $_[0]{failed} // [] } }

# guard_status's gauge guard_health_ok
sub health_gauge {
    my $r = $t->get('/status?format=prometheus');
    return $r->{body} =~ /^guard_health_ok (\d+)$/m ? $1 : undef;
}

# healthy: every check ok
my ($st, $doc, $r) = ready_wait('/ready', 200);
is($st, 200, 'healthy: 200');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON');
is($r->{headers}{'cache-control'}, 'no-store', 'never cached');
is($doc->{status}, 'ok', 'status ok');
is(failed($doc), '', 'nothing failed');
is_deeply([sort keys %{ $doc->{checks} }],
          [qw(audit_backlog breakers policy sidecar spill)], 'every check');
ok($doc->{checks}{$_}{ok}, "$_ ok") for sort keys %{ $doc->{checks} };
my $status = $json->decode($t->get('/status')->{body});
is($doc->{policy_version}, $status->{policy_version},
   'the policy version guard_status shows');
is($doc->{checks}{policy}{version}, $status->{policy_version},
   'policy: the version loaded');
is($doc->{checks}{policy}{tenants}, 1, 'policy: one tenant');
is($doc->{checks}{sidecar}{mode}, 'on',
   'sidecar fails the answer: a location fails closed without guardd');
is($doc->{checks}{sidecar}{ready}, 2, 'sidecar: both connections up');
is($doc->{checks}{audit_backlog}{ring}, 8, 'audit_backlog: the ring');
is($doc->{checks}{audit_backlog}{threshold}, 0.9,
   'audit_backlog: threshold 0.9 by default');
is($doc->{checks}{breakers}{mode}, 'warn', 'breakers: reported only');
is_deeply($doc->{checks}{breakers}{open}, [], 'breakers: none open');
is(health_gauge(), 1, 'guard_health_ok 1');

# HEAD, and nothing but GET and HEAD
$r = $t->http('HEAD', '/ready');
is($r->{status}, 200, 'HEAD: 200');
is($r->{body}, '', 'HEAD: no body');
is($t->post('/ready', body => '{}')->{status}, 405, 'POST: 405');

# the spill directory not writable: 503 where it counts, a warning where
# it is switched to warn
chmod 0555, "$dir/spill";
($st, $doc) = ready_wait('/ready', 503);
is($st, 503, 'spill not writable: 503');
is(failed($doc), 'spill', '... naming spill');
is($doc->{status}, 'fail', '... status fail');
like($doc->{checks}{spill}{detail}, qr/not writable/, '... and why');
($st, $doc) = ready('/ready-warn');
is($st, 200, 'spill set to warn: 200');
is_deeply($doc->{warnings}, ['spill'], '... with a warning');
ok(!$doc->{checks}{spill}{ok}, '... spill not ok');
chmod 0777, "$dir/spill";
($st) = ready_wait('/ready', 200);
is($st, 200, 'spill writable again: 200');

# guardd stopped: 503 naming the sidecar; the check switched off: 200
stop_guardd();
($st, $doc) = ready_wait('/ready', 503);
is($st, 503, 'guardd stopped: 503');
is(failed($doc), 'sidecar', '... naming the sidecar');
like($doc->{checks}{sidecar}{detail}, qr/unreachable/, '... unreachable');
is($doc->{checks}{sidecar}{ready}, 0, '... no connection up');
is(health_gauge(), 0, '... guard_health_ok 0');
($st, $doc) = ready('/ready-nosidecar');
is($st, 200, 'sidecar check off: 200');
ok(!exists $doc->{checks}{sidecar}, '... and not reported');

# refusals while guardd is away fill the ring (8): the backlog check fails
for (1 .. 10) {
    $t->get('/api/x');    # no token: 401, an audit record
}
($st, $doc) = ready_wait('/ready-nosidecar', 503);
is($st, 503, 'audit ring full: 503');
is(failed($doc), 'audit_backlog', '... naming audit_backlog');
is($doc->{checks}{audit_backlog}{pending}, 8, '... 8 records wait');

# guardd back: it reconnects, the ring drains, ready again
start_guardd();
($st, $doc) = ready_wait('/ready', 200, 20);
is($st, 200, 'guardd back: 200');
is(failed($doc), '', '... nothing failed');
# ready as soon as the backlog is under the threshold; drained a little later
wait_for(10, sub {
    ($st, $doc) = ready('/ready');
    return ($doc->{checks}{audit_backlog}{pending} // -1) == 0;
});
is($doc->{checks}{audit_backlog}{pending}, 0, '... the ring drained');

# no location fails closed without guardd: the sidecar is reported only
(my $open = $conf) =~ s/guard_risk_fail closed;/guard_risk_fail open;/
    or die;
$t->write_conf(http => $open);
ok($t->reload, 'reload: risk fails open');
stop_guardd();
($st, $doc) = ready_wait('/ready', 200);
wait_for(10, sub {
    ($st, $doc) = ready('/ready');
    return !$doc->{checks}{sidecar}{ok};
});
is($st, 200, 'guardd stopped, risk fails open: 200');
is($doc->{checks}{sidecar}{mode}, 'warn', '... the sidecar check warns');
ok(!$doc->{checks}{sidecar}{ok}, '... sidecar not ok');
is_deeply($doc->{warnings}, ['sidecar'], '... a warning');

$t->stop;
$t->errlog_ok;

done_testing;
