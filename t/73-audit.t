#!/usr/bin/perl

# Refusals are never lost: every refusal (JWT, tenant, limits, residency,
# risk, sidecar) and every shadow refusal becomes one audit record in
# guardd's journal, with the fields SOC analysts need and nothing secret.
# Records wait in a shared ring while guardd is away, overflow into spill
# files that guardd ingests, survive a reload, are spilled by the master
# when nginx stops, and a kill -9 of guardd under load loses none and
# duplicates none.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use IO::Socket::UNIX;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use Guard::Test;
use Guard::Frames qw(:DEFAULT journal_records guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new->canonical;

mkdir "$dir/spill" or die;
chmod 0777, "$dir/spill";    # the workers (nobody) write, guardd removes

$t->write_file('pol/acme.json', <<'JSON');
{
  "tenant": "acme",
  "limits": {
    "rate": [
      {"name": "slow-lane", "requests": 1, "period": "1m", "burst": 0,
       "match": {"path": "/limited/*"}}
    ]
  },
  "risk": {
    "thresholds": {"step_up": 40, "deny": 70},
    "signals": [
      {"id": "destructive", "weight": 80, "when": {"method": ["DELETE"]}},
      {"id": "not-admin", "weight": 1,
       "when": {"claim": {"name": "roles", "lacks": "admin"}}}
    ]
  }
}
JSON
$t->write_file('pol/eu.json', <<'JSON');
{"tenant": "eu", "residency": {"regions": ["eu-west-1"]}}
JSON

$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-audit',
    spill => "$dir/spill", spill_orphan_after => 2));

my $gpid;
sub start_guardd {
    $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                         "$dir/guardd.log");
}
sub stop_guardd {
    my ($sig) = @_;
    # a clean stop first lets the ring drain: every ACK has arrived
    if (!$sig && $t->pid && $t->pid_alive($t->pid)) {
        for (1 .. 100) {
            my $r = $t->get('/status');
            my $p = eval { $json->decode($r->{body})->{audit}{pending} };
            last if defined $p && $p == 0;
            sleep 0.1;
        }
    }
    kill $sig // 'TERM', $gpid;
    waitpid $gpid, 0;
    undef $gpid;
}
END { kill 'KILL', $gpid if $gpid }

start_guardd();

$t->write_conf(workers => 2, http => <<'CONF');
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=500ms connections=2;
    guard_audit_ring 16;
    guard_audit_spill %%DIR%%/spill;
    guard_policies %%DIR%%/pol;
    guard_region us-east-1;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        location = /status { guard_status; }

        location / {
            guard on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/t/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /r/ {
            guard on;
            guard_risk on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location /shadow/ {
            guard on;
            guard_risk shadow;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "backend\n"; }
    }
CONF
# configuration errors that nginx -t catches
my $good = $t->read_file('nginx.conf');
for my $case (
    [ 'guard_audit_spill %%DIR%%/nowhere;', qr/nowhere.* failed/,
      'a spill directory that does not exist' ],
    [ 'guard_audit_spill %%DIR%%/nginx.conf;', qr/is not a directory/,
      'a spill path that is a file' ],
    [ 'guard_audit_ring 4;', qr/guard_audit_ring must be from 8/,
      'a ring too small' ],
) {
    my ($line, $re, $what) = @$case;
    my ($directive) = $line =~ /^(\S+)/;
    (my $conf = $good) =~ s/\Q$directive\E [^;]*;/$line/
        or die "no $directive to replace";
    $t->write_file('nginx.conf', $t->subst($conf));
    my ($rc, $out) = $t->test_conf;
    ok($rc != 0 && $out =~ $re, "nginx -t refuses $what") or diag $out;
}
$t->write_file('nginx.conf', $good);

$t->run;

my $exp = time() + 3600;
my ($acme, $eu, $expired) = $t->mint(
    { kid => 'hs256', claims => { sub => 'alice@acme.example',
                                  tenant_id => 'acme', exp => $exp } },
    { kid => 'hs256', claims => { sub => 'e1', tenant_id => 'eu',
                                  exp => $exp } },
    { kid => 'hs256', claims => { sub => 'old', tenant_id => 'acme',
                                  exp => time() - 3600 } });

sub req {
    my ($method, $path, $tok, @h) = @_;
    return $t->http($method, $path, headers => [
        (defined $tok ? (Authorization => "Bearer $tok") : ()), @h]);
}

sub journal { journal_records("$dir/journal") }

sub journal_text {
    my $text = '';
    for my $f (glob "$dir/journal/*") {
        open my $fh, '<', $f or die;
        local $/;
        $text .= <$fh>;
    }
    return $text;
}

sub status {
    my $r = $t->get('/status');
    return eval { $json->decode($r->{body}) } // {};
}

# waits until the journal holds every id (bounded); returns id -> records
sub wait_journal {
    my ($ids, $secs) = @_;
    my %by;
    my $end = time + ($secs // 20);
    while (1) {
        %by = ();
        push @{ $by{$_->{id} // ''} }, $_ for journal();
        last if !grep { !$by{$_} } @$ids;
        last if time > $end;
        sleep 0.1;
    }
    return \%by;
}

# each stage's refusal, one record each
my %want;
my $r = req('GET', '/x');
$want{problem_ok($r, 'token_missing', 'no token')} =
    { stage => 'jwt', reason => 'token_missing', status => 401 };

$r = req('GET', '/x', $expired);
$want{problem_ok($r, 'token_expired', 'expired token', token => $expired)} =
    { stage => 'jwt', reason => 'token_expired', status => 401 };

$r = req('GET', '/t/beta/x', $acme,
         traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
$want{problem_ok($r, 'tenant_mismatch', 'tenant mismatch', token => $acme)} =
    { stage => 'tenant', reason => 'tenant_mismatch', status => 403,
      tenant => 'beta',
      traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' };

$r = req('GET', '/eu/x', $eu);
$want{problem_ok($r, 'residency', 'residency', token => $eu)} =
    { stage => 'residency', reason => 'residency', status => 421,
      tenant => 'eu', subject => 'e1' };

is(req('GET', '/limited/a', $acme)->{status}, 200, 'first of the slow lane');
$r = req('POST', '/limited/b', $acme);
$want{problem_ok($r, 'rate_limited', 'rate limited', token => $acme)} =
    { stage => 'limits', reason => 'rate_limited', status => 429,
      tenant => 'acme', subject => 'alice@acme.example', method => 'POST',
      route => '/limited/b', rules => ['slow-lane'] };

$r = req('DELETE', '/r/x', $acme);
my $risk_id = problem_ok($r, 'risk_deny', 'risk deny', token => $acme);
$want{$risk_id} = { stage => 'risk', reason => 'risk_deny', status => 403,
                    tenant => 'acme', score => 81 };

$r = req('DELETE', '/shadow/x', $acme);
is($r->{status}, 200, 'a shadow refusal passes');

my $by = wait_journal([keys %want]);
for my $id (sort keys %want) {
    my $w = $want{$id};
    my $recs = $by->{$id} // [];
    is(scalar @$recs, 1, "$w->{reason}: one journal record");
    my $rec = $recs->[0] // {};
    for my $k (sort keys %$w) {
        is_deeply($rec->{$k}, $w->{$k}, "$w->{reason}: $k");
    }
    is($rec->{outcome}, 'deny', "$w->{reason}: outcome deny");
    is($rec->{client_ip}, '127.0.0.1', "$w->{reason}: client ip");
    like($rec->{policy_version} // '', qr/^[0-9a-f]{64}$/,
         "$w->{reason}: policy version");
    like($rec->{hash} // '', qr/^[0-9a-f]{64}$/, "$w->{reason}: chained");
    next if $w->{stage} eq 'risk';    # guardd's own record came first
    is($rec->{source}, 'nginx', "$w->{reason}: sent by nginx");
    ok(defined $rec->{latency_ms} && $rec->{latency_ms} >= 0,
       "$w->{reason}: latency");
    like($rec->{node} // '', qr/\S/, "$w->{reason}: gateway node");
}

my @risk = @{ $by->{$risk_id} // [] };
is_deeply([map { $_->{id} } @{ $risk[0]{signals} // [] }],
          ['destructive', 'not-admin'],
          'the risk record keeps the signals guardd matched');

my ($shadow);
for (1 .. 50) {
    ($shadow) = grep { ($_->{outcome} // '') eq 'shadow_deny' } journal();
    last if $shadow;
    sleep 0.1;
}
ok($shadow, 'the shadow refusal is journaled');
is($shadow->{reason}, 'risk_deny', 'shadow refusal: reason');

# masking: what the request carried never reaches the journal
my $jwt_in_path = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2hlcmU';
$r = req('GET', "/reset/$jwt_in_path/to/bob\@example.com");
my $mask_id = problem_ok($r, 'token_missing', 'a path with a token');
$r = req('GET', '/t/acme/%FF%FE/4111111111111111', undef);
my $bin_id = problem_ok($r, 'token_missing', 'a path with bytes and a card');
$by = wait_journal([$mask_id, $bin_id]);
is($by->{$mask_id}[0]{route}, '/reset/[token]/to/[email]',
   'a token and an e-mail in the path are masked');
is($by->{$bin_id}[0]{route}, '/t/acme/%ff%fe/[card]',
   'bytes that are not UTF-8 are escaped, a card number masked');
is($by->{$bin_id}[0]{tenant}, 'acme', 'the addressed tenant');
my $text = journal_text();
for my $secret ($acme, $eu, $expired, $jwt_in_path, 'bob@example.com',
                '4111111111111111')
{
    ok(index($text, $secret) < 0, 'no secret or PII in the journal: '
                                  . substr($secret, 0, 12));
}

# masking comes before the cut: a secret across a field's limit (the
# route: 512 bytes in a record, 4096 in DECIDE) leaves no piece of itself
my $email = 'bob.victim@example.com';
my $card = '4111111111111111';
my $tail = '/' . ('y' x 40);
my $pre501 = '/' . ('x/' x 250);    # 501 bytes: the e-mail across 512
my $pre507 = '/' . ('x/' x 253);    # 507 bytes: [card] across 512 too
my $pre480 = '/' . ('x/' x 239) . 'x';
my @cut = (
    [ "$pre501$email$tail", $pre501 . '[email]/yyy',
      'an e-mail across the cut: masked, then cut after its placeholder' ],
    [ "$pre507$card$tail", $pre507,
      'a card number across the cut: its placeholder is not split' ],
    [ "$pre480/$jwt_in_path$tail",
      substr("$pre480/[token]$tail", 0, 512),
      'a token across the cut: masked, then cut' ],
);
my @cut_ids = map { problem_ok(req('GET', $_->[0]), 'token_missing',
                               'a long path: ' . substr($_->[2], 0, 12)) }
              @cut;
$by = wait_journal(\@cut_ids);
for my $i (0 .. $#cut) {
    my $route = $by->{$cut_ids[$i]}[0]{route} // '';
    is($route, $cut[$i][1], $cut[$i][2]);
    ok(length $route <= 512, 'the route is at most 512 bytes');
}
# DECIDE: guardd journals its risk refusal with the route it was sent
my $pre4091 = '/' . ('x/' x 2045);    # with "/r": [email] across 4096
$r = req('DELETE', "/r$pre4091$email$tail", $acme);
my $decide_id = problem_ok($r, 'risk_deny', 'a risk refusal of a long path',
                           token => $acme);
$by = wait_journal([$decide_id]);
my $drec = $by->{$decide_id}[0] // {};
is($drec->{stage}, 'risk', 'DECIDE: guardd journaled the refusal');
is($drec->{route}, "/r$pre4091",
   'DECIDE: an e-mail across 4096 bytes leaves nothing, not even [em');
my $routes = join "\n", map { $_->{route} // '' } journal();
for my $piece ('bob.vi', 'victim', '@exa', '411111', 'eyJhbGci', 'c2lnbmF0') {
    ok(index($routes, $piece) < 0, "no piece of a cut secret: $piece");
}

# guardd away: records wait in the ring, then arrive
stop_guardd();
my @away = map { req('GET', "/away/$_")->{headers}{'guard-decision-id'} }
           1 .. 10;
my $st = status();
is($st->{audit}{pending} // -1, 10, 'ten records wait in the ring');
start_guardd();
$by = wait_journal(\@away);
is(scalar(grep { @{ $by->{$_} // [] } == 1 } @away), 10,
   'guardd back: all ten journaled once');

# the ring overflows: spill files, ingested once sealed
stop_guardd();
my @over = map { req('GET', "/over/$_")->{headers}{'guard-decision-id'} }
           1 .. 40;
$st = status();
is($st->{audit}{spilled}, 24, '24 of 40 records spilled (a ring of 16)');
my @spill;
for (1 .. 60) {
    @spill = glob "$dir/spill/*.jsonl";
    my @part = glob "$dir/spill/*.part";
    last if @spill && !@part;
    sleep 0.1;
}
ok(@spill >= 1, 'the spill files are sealed after a second');
start_guardd();
$by = wait_journal(\@over);
is(scalar(grep { @{ $by->{$_} // [] } == 1 } @over), 40,
   'guardd back: ring and spill, all 40 journaled once');
for (1 .. 50) { my @f = glob "$dir/spill/*"; last unless @f; sleep 0.1 }
is_deeply([glob "$dir/spill/*"], [], 'the spill files are removed');

# a reload keeps the ring
stop_guardd();
my @reload = map { req('GET', "/reload/$_")->{headers}{'guard-decision-id'} }
             1 .. 5;
ok($t->reload, 'reload');
start_guardd();
$by = wait_journal(\@reload);
is(scalar(grep { @{ $by->{$_} // [] } == 1 } @reload), 5,
   'records from before a reload arrive once');

# DECIDE carries only the claims the tenant's risk signals read: a
# stand-in guardd records what it is sent
stop_guardd();
my ($rich) = $t->mint({ kid => 'hs256', claims => {
    sub => 'r1', tenant_id => 'acme', exp => $exp, roles => ['reader'],
    email => 'r1@acme.example', ssn => '078-05-1120' } });
open my $dlog, '>', "$dir/decides.jsonl" or die;
$dlog->autoflush(1);
my $fake = stand_in_guardd($sock, 20, sub {
    my ($type, $id, $body) = @_;
    # AUDITs are not acknowledged: they wait for the real one
    return '' unless $type == 2;
    print $dlog "$body\n";
    return frame(3, $id, { decision => 'allow', score => 0, signals => [],
        decision_id => '01900000-0000-7000-8000-000000000001' });
});
for (1 .. 100) {
    $r = req('GET', '/r/claims', $rich);
    last if ($r->{status} // 0) == 200 && -s "$dir/decides.jsonl";
    sleep 0.1;
}
kill 'KILL', $fake;
waitpid $fake, 0;
open my $dl, '<', "$dir/decides.jsonl" or die;
my ($decide) = map { $json->decode($_) } grep { /"r1"/ } <$dl>;
is_deeply($decide->{claims}, { roles => ['reader'] },
          'DECIDE sends the claims the risk rules read, and no others');
unlink $sock;
start_guardd();

# the ring's size cannot change on a reload (its records would be lost)
$t->errlog_ok('no alert or emerg before the refused reload');
my $conf = $t->read_file('nginx.conf');
(my $bigger = $conf) =~ s/guard_audit_ring 16;/guard_audit_ring 32;/;
$t->write_file('nginx.conf', $bigger);
ok(!$t->reload, 'a reload that changes guard_audit_ring is refused');
$t->errlog_like(qr/guard_audit_ring cannot change on a reload/,
                'and says why');
$t->write_file('nginx.conf', $conf);
$t->errlog_mark;
is(req('GET', '/x')->{status}, 401, 'the old configuration still serves');

# kill -9 guardd under load: none missing, none duplicated
my $clients = 4;
my $most = 3000;    # requests per client at the most
my @kids;
for my $c (1 .. $clients) {
    my $pid = fork // die;
    if ($pid == 0) {
        open my $out, '>', "$dir/ids.$c" or POSIX::_exit(1);
        $out->autoflush(1);
        for my $i (1 .. $most) {
            last if -e "$dir/load.stop";
            my $resp = $t->http('GET', "/load/$c/$i");
            print $out ($resp->{headers}{'guard-decision-id'} // 'none'),
                       "\n";
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
sub load_count {
    my $n = 0;
    for my $c (1 .. $clients) {
        open my $in, '<', "$dir/ids.$c" or next;
        $n++ while <$in>;
    }
    return $n;
}
sleep 0.3;
my $at_kill = load_count();
stop_guardd('KILL');
sleep 0.8;
start_guardd();
sleep 0.5;
open my $stop, '>', "$dir/load.stop" or die;
close $stop;
waitpid $_, 0 for @kids;
my $total = load_count();
ok($at_kill > 0 && $total > $at_kill,
   "the load ran before and after the kill ($at_kill, then $total)");
my @load;
for my $c (1 .. $clients) {
    open my $in, '<', "$dir/ids.$c" or die;
    chomp(my @l = <$in>);
    push @load, @l;
}
ok(@load >= 100, 'load requests answered: ' . scalar @load);
is(scalar(grep { $_ eq 'none' } @load), 0, 'every one a refusal with an id');
$by = wait_journal(\@load, 40);
is(scalar(grep { !$by->{$_} } @load), 0, 'kill -9 under load: none missing');
is(scalar(grep { @{ $by->{$_} // [] } > 1 } @load), 0,
   'kill -9 under load: none duplicated');
my %seen;
my @dups = grep { $seen{$_}++ } map { $_->{id} } journal();
is_deeply(\@dups, [], 'no record id twice anywhere in the journal');
$st = status();
is($st->{audit}{dropped}, 0, 'nothing dropped');
diag(sprintf "audit: %d recorded, %d spilled, %d duplicates acknowledged",
     $st->{audit}{recorded}, $st->{audit}{spilled},
     $st->{audit}{duplicates});

# a spill directory nginx cannot write: records are dropped, counted and
# logged (once a second), nothing else breaks
stop_guardd();
chmod 0555, "$dir/spill";
my $before = status()->{audit};
my @lost = map { req('GET', "/lost/$_")->{status} } 1 .. 30;
is(scalar(grep { $_ == 401 } @lost), 30, 'refusals go on');
my $after = status()->{audit};
is($after->{dropped} - $before->{dropped}, 14,
   'a full ring and no spill file: 14 of 30 records dropped');
my @opens = $t->errlog(since_mark => 1) =~ /open\(\) ".*spill.*" failed/g;
# at most a line a second in each of the two workers
ok(@opens >= 1 && @opens < 14, 'logged, not once per record (' . @opens . ')');
chmod 0777, "$dir/spill";
start_guardd();
for (1 .. 100) { last if status()->{audit}{pending} == 0; sleep 0.1 }
is(status()->{audit}{pending}, 0, 'guardd back: the ring drains');

# nginx stops while guardd is away: the master spills the ring
stop_guardd();
my @last = map { req('GET', "/last/$_")->{headers}{'guard-decision-id'} }
           1 .. 5;
$t->stop;
my @master = glob "$dir/spill/*.jsonl";
ok(@master >= 1, 'nginx stopped: the ring is in a spill file');
start_guardd();
$by = wait_journal(\@last);
is(scalar(grep { @{ $by->{$_} // [] } == 1 } @last), 5,
   'records held when nginx stopped arrive once');

stop_guardd();
my $v = `$guardctl audit verify --dir $dir/journal`;
is($? >> 8, 0, 'the journal verifies') or diag $v;

# one altered byte in one record of the journal: audit verify names it
my ($seg) = sort glob "$dir/journal/*.jsonl";
open my $sf, '<:raw', $seg or die;
my @lines = <$sf>;
close $sf;
my $victim = int(@lines / 2);
my $orig = $lines[$victim];
(my $bad = $orig) =~ s/"status":(\d)/'"status":' . ($1 == 4 ? 5 : 4)/e;
isnt($bad, $orig, 'one byte of a record changed');
open $sf, '>:raw', $seg or die;
print $sf @lines[0 .. $victim - 1], $bad, @lines[$victim + 1 .. $#lines];
close $sf;
$v = `$guardctl audit verify --dir $dir/journal`;
is($? >> 8, 1, 'audit verify: the chain is broken');
my $name = (split m{/}, $seg)[-1];
like($v, qr/\Q$name\E line @{[$victim + 1]}: .*altered/,
     'it names the segment and the line of the altered record');

$t->errlog_ok('no alert or emerg after the refused reload', since_mark => 1);

done_testing;
