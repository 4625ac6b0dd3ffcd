#!/usr/bin/perl

# guard_status in the Prometheus text format, read with the real parser
# (prometheus_client, t/tools/prom_parse.py): decisions per reason and
# per tenant (capped by guard_metrics_tenants, the rest as "_other"),
# Guard's time per request, the token cache, the zone, the audit ring,
# the sidecar's round trips, timeouts and fail-opens, refusals per rate
# rule and the policy version; the values are those of the traffic sent,
# shared by both workers, kept across reloads (one that changes the
# tenant cap too).  JSON stays the default.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Guard::Test qw(:DEFAULT wait_for);
use Guard::Frames qw(:DEFAULT guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = "$repo/policy-engine/build/guardd";
plan skip_all => "no $guardd (make unit)" unless -x $guardd;

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";

# acme: a rate rule for /orders; beta: a shadow rule for every path
$t->write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "limits": {
    "rate": [
      {"name": "orders", "requests": 1, "period": "1h",
       "match": {"path": "/orders"}}
    ]
  },
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 50, "when": {"method": ["DELETE"]}}
    ]
  }
}
JSON
$t->write_file('pol/beta.json', '{"tenant": "beta", "limits": {"rate": ['
    . '{"name": "api", "requests": 1, "period": "1h", "shadow": true}]}}');
$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-metrics'));

my $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                        "$dir/guardd.log");
END { kill 'KILL', $gpid if $gpid }
ok(-S $sock, 'guardd is listening');

my $conf = <<'CONF';
    guard_policies %%DIR%%/pol;
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=200ms connections=1;
    guard_metrics_tenants CAP;
    guard_jwt_keys %%KEYS%%/jwks.json;

    server {
        listen 127.0.0.1:%%PORT_0%% reuseport;
        guard on;

        location / { empty_gif; }
        location /r/ { guard_risk on; empty_gif; }
        location /open/ { guard_risk on; guard_risk_fail open; empty_gif; }

        location = /status {
            guard off;
            guard_status;
        }
    }
CONF

sub write_conf {
    my ($cap) = @_;
    (my $c = $conf) =~ s/CAP/$cap/;
    $t->write_conf(workers => 2, http => $c);
}

write_conf(3);
$t->run;

# the metrics: "name{label=value,...}" => value, and the families
sub scrape {
    my (%o) = @_;
    my $r = $t->get('/status' . ($o{query} // '?format=prometheus'),
                    headers => $o{headers} // []);
    is($r->{status}, 200, 'status answers 200');
    return $r if $o{raw};
    like($r->{headers}{'content-type'} // '',
         qr{^text/plain; version=0\.0\.4}, 'in the text format 0.0.4');
    my $fam = JSON::PP->new->decode(
        $t->_python_io($r->{body}, "$repo/t/tools/prom_parse.py"));
    my (%m, %f);
    for my $f (@$fam) {
        $f{$f->{name}} = $f;
        for my $s (@{$f->{samples}}) {
            my $l = $s->{labels};
            my $k = $s->{name};
            $k .= '{' . join(',', map { "$_=$l->{$_}" } sort keys %$l) . '}'
                if %$l;
            $m{$k} = $s->{value};
        }
    }
    return (\%m, \%f, $r->{body});
}

sub json_status {
    my $r = $t->get('/status');
    is($r->{headers}{'content-type'}, 'application/json', 'JSON');
    return JSON::PP->new->decode($r->{body});
}

sub req {
    my ($path, $tok) = @_;
    return $t->get($path, headers => $tok ? [Authorization => "Bearer $tok"]
                                          : []);
}

my $exp = time() + 3600;
my @tenants = ('acme', 'beta', 'q"uo\\te', 't4', 't5', 't6');
my %tok;
@tok{@tenants} = $t->mint(map {
    { kid => 'hs256', claims => { sub => 'u', tenant_id => $_, exp => $exp } }
} @tenants);
my $expired = $t->mint({ kid => 'hs256', claims => {
    sub => 'u', tenant_id => 'acme', exp => time() - 3600 } });
my $forged = Guard::Test::forge_hs({ alg => 'HS256', kid => 'hs256' },
    { sub => 'u', tenant_id => 'acme', exp => $exp }, 'not the key');

# before any traffic: the families are there, at zero
my ($m0, $f0) = scrape();
is($m0->{'guard_decisions_total{decision=allow,reason=none}'}, 0,
   'nothing allowed yet');
is($m0->{'guard_request_duration_microseconds_count'}, 0, 'nothing timed');
for my $name (qw(guard_decisions guard_tenant_decisions
                 guard_request_duration_microseconds
                 guard_token_cache_hits guard_token_cache_misses
                 guard_token_cache_evictions guard_token_cache_entries
                 guard_zone_size_bytes guard_zone_used_bytes
                 guard_audit_ring_depth guard_audit_records_sent
                 guard_audit_records_acked guard_audit_records_spilled
                 guard_audit_records_dead_lettered
                 guard_sidecar_rtt_microseconds guard_sidecar_timeouts
                 guard_sidecar_fail_open guard_rate_refusals guard_policy_info))
{
    ok($f0->{$name}, "family $name");
    ok(($f0->{$name}{help} // '') ne '', "$name has HELP")
        if $f0->{$name};
}
is($f0->{guard_decisions}{type}, 'counter', 'decisions: a counter');
is($f0->{guard_request_duration_microseconds}{type}, 'histogram',
   'duration: a histogram');
is($f0->{guard_token_cache_entries}{type}, 'gauge', 'entries: a gauge');
is($m0->{'guard_zone_size_bytes'}, 32 * 1024 * 1024,
   'the zone size: guard_zone\'s default');
cmp_ok($m0->{'guard_zone_used_bytes'}, '>', 0, 'some of the zone is used');
cmp_ok($m0->{'guard_zone_used_bytes'}, '<', $m0->{'guard_zone_size_bytes'},
       'not all of it');

# the traffic, one request at a time (the tenants named in this order)
my %st;
$st{$_}++ for map { req('/a', $tok{acme})->{status} } 1 .. 3;
$st{$_}++ for map { req('/orders', $tok{acme})->{status} } 1 .. 2;
$st{$_}++ for map { req('/r/x', $tok{acme})->{status} } 1 .. 2;
$st{$_}++ for map { req('/a', $tok{beta})->{status} } 1 .. 3;
$st{$_}++ for map { req('/a', $tok{$_})->{status} } 'q"uo\\te', 't4', 't5';
$st{$_}++ for map { req('/a')->{status} } 1 .. 2;
$st{req('/a', $expired)->{status}}++;
$st{req('/a', $forged)->{status}}++;
is_deeply(\%st, { 200 => 12, 429 => 1, 401 => 4 },
          'the answers: 12 allowed, 1 rate limited, 4 unauthenticated');

# a hung guardd: two DECIDEs time out, and fail open
kill 'STOP', $gpid;
is(req('/open/x', $tok{beta})->{status}, 200, 'fail open: allowed') for 1 .. 2;
kill 'CONT', $gpid;

my ($m, $f, $text) = scrape();

my %want = (
    'guard_decisions_total{decision=allow,reason=none}' => 14,
    'guard_decisions_total{decision=refuse,reason=rate_limited}' => 1,
    'guard_decisions_total{decision=refuse,reason=token_missing}' => 2,
    'guard_decisions_total{decision=refuse,reason=token_expired}' => 1,
    'guard_decisions_total{decision=refuse,reason=token_invalid}' => 1,
    'guard_decisions_total{decision=refuse,reason=risk_deny}' => 0,
    'guard_decisions_total{decision=shadow_refuse,reason=rate_limited}' => 4,
    'guard_decisions_total{decision=shadow_refuse,reason=sidecar_unavailable}'
        => 2,
    'guard_tenant_decisions_total{decision=allow,tenant=acme}' => 6,
    'guard_tenant_decisions_total{decision=refuse,tenant=acme}' => 1,
    'guard_tenant_decisions_total{decision=shadow_refuse,tenant=acme}' => 0,
    'guard_tenant_decisions_total{decision=allow,tenant=beta}' => 5,
    'guard_tenant_decisions_total{decision=shadow_refuse,tenant=beta}' => 6,
    'guard_tenant_decisions_total{decision=allow,tenant=q"uo\\te}' => 1,
    'guard_tenant_decisions_total{decision=allow,tenant=_other}' => 2,
    'guard_tenant_decisions_total{decision=refuse,tenant=_other}' => 0,
    'guard_request_duration_microseconds_count' => 19,
    'guard_token_cache_hits_total' => 10,
    'guard_token_cache_misses_total' => 7,
    'guard_token_cache_evictions_total' => 0,
    'guard_token_cache_entries' => 5,
    'guard_sidecar_rtt_microseconds_count' => 2,
    'guard_sidecar_timeouts_total' => 2,
    'guard_sidecar_fail_open_total' => 2,
    'guard_rate_refusals_total{rule=orders}' => 1,
    'guard_rate_refusals_total{rule=_other}' => 0,
    'guard_audit_records_spilled_total' => 0,
    'guard_audit_records_dead_lettered_total' => 0,
);
for my $k (sort keys %want) {
    is($m->{$k}, $want{$k}, "$k = $want{$k}");
}
ok(!exists $m->{'guard_tenant_decisions_total{decision=allow,tenant=t4}'},
   'past the cap of 3 tenants: t4 is not counted by name');
ok(!exists $m->{'guard_rate_refusals_total{rule=api}'},
   'a shadow rule refuses nothing');
like($text, qr/tenant="q\\"uo\\\\te"/, 'the label value escaped');

# the histograms: cumulative buckets, +Inf = _count
for my $h (qw(guard_request_duration_microseconds
              guard_sidecar_rtt_microseconds))
{
    my @b = sort { $a->[0] <=> $b->[0] }
            map { /^${h}_bucket\{le=(.+)\}$/
                  ? [$1 eq '+Inf' ? 9**9**9 : $1, $m->{$_}] : () } keys %$m;
    is(scalar @b, 11, "$h: 11 buckets");
    is(join(',', map { $_->[0] } @b[0 .. 9]),
       '10,25,50,100,250,500,1000,2500,5000,10000', "$h: the bounds");
    ok(!grep({ $b[$_][1] < $b[$_ - 1][1] } 1 .. $#b), "$h: monotone");
    is($b[-1][1], $m->{"${h}_count"}, "$h: +Inf is the count");
    cmp_ok($m->{"${h}_sum"}, '>=', 0, "$h: a sum");
}

# the policy version, as in the JSON
my $js = json_status();
is($m->{"guard_policy_info{version=$js->{policy_version}}"}, 1,
   'guard_policy_info names the version guard_status has');
is($js->{allowed}, 14, 'JSON: the same count of allowed');
is($js->{refused}{token_missing}, 2, 'JSON: and of refusals');

# the audit ring: its own counts, delivered once guardd goes on
ok(wait_for(10, sub {
    my $a = json_status()->{audit};
    $a && $a->{acked} >= 9 && $a->{pending} == 0;
}), 'the 9 audit records (5 refusals, 4 shadow) are acknowledged');
$js = json_status();
($m) = scrape();
is($m->{guard_audit_records_acked_total}, $js->{audit}{acked},
   'acked: the ring\'s count');
is($m->{guard_audit_records_sent_total}, $js->{audit}{sent},
   'sent: the ring\'s count');
cmp_ok($m->{guard_audit_records_sent_total}, '>=', 9, 'sent: 9 at least');
is($m->{guard_audit_ring_depth}, 0, 'the ring is empty');

# the format: by Accept too; JSON when JSON is asked for, or nothing
my $prom_accept = 'application/openmetrics-text;version=1.0.0,'
                . 'application/openmetrics-text;version=0.0.1;q=0.75,'
                . 'text/plain;version=0.0.4;q=0.5,*/*;q=0.1';
my $r = scrape(query => '', raw => 1, headers => [Accept => $prom_accept]);
like($r->{headers}{'content-type'}, qr{^text/plain}, 'Prometheus\'s Accept');
$r = scrape(query => '', raw => 1, headers => [Accept => 'text/plain']);
like($r->{body}, qr/^# HELP /, 'Accept: text/plain');
$r = scrape(query => '', raw => 1,
            headers => [Accept => 'application/json, text/plain']);
is($r->{headers}{'content-type'}, 'application/json',
   'Accept with JSON: JSON');
$r = scrape(query => '?format=json', raw => 1,
            headers => [Accept => 'text/plain']);
is($r->{headers}{'content-type'}, 'application/json',
   'format=json over Accept');
$r = scrape(query => '', raw => 1);
is($r->{headers}{'content-type'}, 'application/json', 'JSON by default');
$r = $t->http('HEAD', '/status?format=prometheus');
like($r->{headers}{'content-type'}, qr{^text/plain}, 'HEAD too');

# a reload keeps every count, and they go on
ok($t->reload, 'reload');
my ($m1) = scrape();
for my $k (sort keys %want) {
    is($m1->{$k}, $m->{$k}, "after a reload: $k");
}
req('/a', $tok{acme}) for 1 .. 2;
($m1) = scrape();
is($m1->{'guard_decisions_total{decision=allow,reason=none}'}, 16,
   'after a reload: allowed goes on');
is($m1->{'guard_tenant_decisions_total{decision=allow,tenant=acme}'}, 8,
   'and per tenant');
is($m1->{'guard_request_duration_microseconds_count'}, 21,
   'and the histogram');

# a reload with a higher cap: the counts stay, the next tenant is named
write_conf(5);
ok($t->reload, 'reload with guard_metrics_tenants 5');
($m1) = scrape();
is($m1->{'guard_tenant_decisions_total{decision=allow,tenant=acme}'}, 8,
   'a new cap keeps the named tenants\' counts');
is($m1->{'guard_tenant_decisions_total{decision=allow,tenant=_other}'}, 2,
   'and _other\'s');
req('/a', $tok{t6});
($m1) = scrape();
is($m1->{'guard_tenant_decisions_total{decision=allow,tenant=t6}'}, 1,
   'a fourth tenant is counted by name now');

# guard_metrics_tenants 0: every tenant is _other
write_conf(0);
ok($t->reload, 'reload with guard_metrics_tenants 0');
req('/a', $tok{acme});
($m1) = scrape();
is($m1->{'guard_tenant_decisions_total{decision=allow,tenant=_other}'}, 18,
   'with no tenant counted by name, all are _other');
ok(!exists $m1->{'guard_tenant_decisions_total{decision=allow,tenant=acme}'},
   'and none by name');

write_conf(100000);
my ($rc, $out) = $t->test_conf;
isnt($rc, 0, 'guard_metrics_tenants 100000: nginx -t fails');
like($out, qr/must be between 0 and 65536/,
     'the bounds');

$t->errlog_ok;

done_testing;
