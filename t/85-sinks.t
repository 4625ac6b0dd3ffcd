#!/usr/bin/perl

# guardd's sinks: every journal record published to a real Redis stream
# (XADD with the entry id <segment>-<line>, the documented fields, MAXLEN
# ~) and to a real PostgreSQL (guard_ingest, one transaction per batch),
# exactly once across a restart (durable cursors); guardd's lifecycle and
# policy records; one stream per tenant; a record PostgreSQL refuses goes
# to the dead-letter file and the records behind it go on; the per-sink
# metrics; the "sinks" settings checked; and with no sinks guardd journals
# exactly what it did before.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

# make test's sanitizer pass changes only the nginx module; this test
# starts no nginx, and its programs are the same ASan+UBSan builds in
# both passes: checked once, in the first pass
plan skip_all => 'checked once, in the first pass (no nginx)'
    if $ENV{GUARD_SANITIZE};
use File::Temp qw(tempdir);
use JSON::PP ();
use Time::HiRes qw(sleep time);
use Guard::Frames qw(:DEFAULT journal_records guardd_conf slurp write_text
                     command wait_for);
use Guard::Services;
use Guard::Outbox;

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";
my $json = JSON::PP->new->canonical;

my ($dir, $r, $p) = outbox_setup('sinks');
like($p->psql("SELECT count(*) FROM pg_proc WHERE proname = 'guard_ingest'"),
     qr/^1$/, 'the store migrations are applied (guard_ingest)');

write_text("$dir/pol/acme.json", '{"tenant": "acme"}');
my $sock = "$dir/guardd.sock";
my $msock = "$dir/metrics.sock";
my %sinks = (
    # linger_ms: Redis publishes every batch at once, PostgreSQL waits
    # half a second after a batch that was not full (the default: 200)
    redis => { socket => $r->{socket}, maxlen => 100000, batch => 64,
               linger_ms => 0 },
    postgres => { dsn => $p->{dsn}, batch => 64, linger_ms => 500 },
    state_dir => "$dir/state",
);
sub conf_with {
    my (%s) = @_;
    write_text("$dir/guardd.conf", guardd_conf($dir, $sock,
        policies => "$dir/pol", node => 'gd-sinks', metrics => $msock,
        sinks => \%s));
}
conf_with(%sinks);

my $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
ok(-S $sock, 'guardd with both sinks listens');

my $c = audit_client($sock);
is(send_refusals($c, 300), 300, '300 refusals acknowledged');
ok(wait_caught_up($msock, 30, qw(redis postgres)), 'both sinks caught up');

my @recs = journal_records("$dir/journal");
is(scalar @recs, 301, 'the journal: a lifecycle record and 300 refusals');
my ($start) = grep { ($_->{kind} // '') eq 'lifecycle' } @recs;
is($start->{event}, 'start', 'lifecycle start');
like($start->{pid} // '', qr/^\d+$/, 'with the pid');
like($start->{version} // '', qr/^\d+\.\d+/, 'and guardd version');
like($start->{policy_version} // '', qr/\S/, 'and the policy version');

my $s = stream_entries($r, 'guard:records');
is(scalar @$s, 301, 'the stream holds every record');
is($s->[0][0], '1-1', 'entry ids are <segment>-<line>: 1-1');
is($s->[-1][0], '1-301', '... to 1-301');
is($s->[0][1]{kind}, 'lifecycle', 'fields: kind');
my $e = $s->[5][1];
is($e->{kind}, 'decision', 'a refusal: kind decision');
is_deeply($json->decode($e->{record}), $recs[5], 'record: the journal record');
is($e->{$_}, $recs[5]{$_}, "field $_") for qw(id outcome tenant reason hash);
is($e->{ts_ms}, $recs[5]{ts_ms}, 'field ts_ms');

my %ids = map { $_->{id} => 1 } @recs;
exactly_once('redis', [map { $_->{id} } @recs],
             { map { $_->[1]{id} => 1 } @$s });
exactly_once('postgres', [map { $_->{id} } @recs], pg_rows($p));
is($p->psql("SELECT hash FROM decisions WHERE id = '$recs[7]{id}'"),
   "$recs[7]{hash}\n", 'the row keeps the chain hash');

my $m = sink_metrics($msock);
is($m->{"guardd_sink_published_total{sink=\"$_\"}"}, 301, "$_: 301 published")
    for qw(redis postgres);
is($m->{"guardd_sink_duplicates_total{sink=\"$_\"}"}, 0, "$_: no duplicates")
    for qw(redis postgres);
is($m->{"guardd_sink_up{sink=\"$_\"}"}, 1, "$_: up") for qw(redis postgres);
is($m->{"guardd_sink_lag_seconds{sink=\"$_\"}"}, '0.000', "$_: no lag")
    for qw(redis postgres);
ok(-s "$dir/state/sink-$_.cursor", "$_: a cursor in state_dir")
    for qw(redis postgres);
my $cur = $json->decode(slurp("$dir/state/sink-redis.cursor"));
is_deeply([@$cur{qw(segment line hash)}],
          ['journal-000001.jsonl', 301, $recs[-1]{hash}],
          'the cursor: segment, line and hash of the last record');

# a policy change is a record of its own
write_text("$dir/pol/acme.json",
           '{"tenant": "acme", "residency": {"regions": ["eu-west-1"]}}');
kill 'HUP', $gpid;
ok(wait_for(10, sub {
    grep { ($_->{kind} // '') eq 'policy' } journal_records("$dir/journal")
}), 'SIGHUP with a new version: a policy record');
my ($pol) = grep { ($_->{kind} // '') eq 'policy' }
            journal_records("$dir/journal");
is_deeply([@$pol{qw(event previous_version node)}],
          ['reload', $start->{policy_version}, 'gd-sinks'],
          'policy: reload, from the version of the start');
isnt($pol->{policy_version}, $start->{policy_version}, 'to a new version');

# a record PostgreSQL refuses (a time out of its range) goes to the dead
# letter file; the records around it go on
is(send_refusals($c, 10), 10, '10 more');
is(send_refusals($c, 1, ts_ms => 99999999999999999, subject => 'bad'), 1,
   'a refusal with a time PostgreSQL cannot hold');
is(send_refusals($c, 10), 10, 'and 10 more');
ok(wait_caught_up($msock, 30, qw(redis postgres)), 'caught up again');
$m = sink_metrics($msock);
is($m->{'guardd_sink_dead_letters_total{sink="postgres"}'}, 1,
   'postgres: one dead letter');
is($m->{'guardd_sink_dead_letters_total{sink="redis"}'}, 0,
   'redis: none (it takes the record)');
my @dead = map { $json->decode($_) } split /\n/,
           slurp("$dir/state/sink-postgres.dead.jsonl");
is(scalar @dead, 1, 'one line in sink-postgres.dead.jsonl');
is($dead[0]{record}{subject}, 'bad', 'the refused record');
like($dead[0]{error}, qr/postgres: 22\w+: .*range/, 'with the error');
is($dead[0]{segment}, 'journal-000001.jsonl', 'and its place');
@recs = journal_records("$dir/journal");
my @good = grep { ($_->{subject} // '') ne 'bad' } @recs;
exactly_once('postgres around a dead letter', [map { $_->{id} } @good],
             pg_rows($p));
undef $c;

# a restart: the cursors resume, nothing published twice; the stop and
# start records published
is(end_guardd($gpid), 0, 'guardd stops cleanly');
@recs = journal_records("$dir/journal");
is($recs[-1]{event}, 'stop', 'the last record: lifecycle stop');
$gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
$c = audit_client($sock);
is(send_refusals($c, 50), 50, '50 after the restart');
ok(wait_caught_up($msock, 30, qw(redis postgres)), 'caught up');
@recs = journal_records("$dir/journal");
$s = stream_entries($r, 'guard:records');
exactly_once('redis after a restart', [map { $_->{id} } @recs],
             { map { $_->[1]{id} => 1 } @$s });
@good = grep { ($_->{subject} // '') ne 'bad' } @recs;
exactly_once('postgres after a restart', [map { $_->{id} } @good],
             pg_rows($p));
$m = sink_metrics($msock);
is($m->{"guardd_sink_duplicates_total{sink=\"$_\"}"}, 0,
   "$_: nothing published twice") for qw(redis postgres);
undef $c;
is(end_guardd($gpid), 0, 'guardd stops');

# one stream per tenant, from a fresh cursor: the whole journal again
conf_with(redis => { socket => $r->{socket}, stream => 'guard:t:{tenant}',
                     maxlen => 0 },
          state_dir => "$dir/state2");
$gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
ok(wait_caught_up($msock, 30, 'redis'), 'per tenant: caught up');
@recs = journal_records("$dir/journal");
my %per;
$per{$_->{tenant} // '_none'}++ for @recs;
for my $t (sort keys %per) {
    my $got = stream_entries($r, "guard:t:$t");
    is(scalar @$got, $per{$t}, "guard:t:$t holds its $per{$t} records");
}
is(end_guardd($gpid), 0, 'guardd stops');

# MAXLEN ~: Redis trims the stream to about maxlen entries (whole nodes
# of 100 entries at a time), the newest kept
conf_with(redis => { socket => $r->{socket}, stream => 'guard:trim',
                     maxlen => 50 },
          state_dir => "$dir/state3");
$gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
ok(wait_caught_up($msock, 30, 'redis'), 'maxlen 50: caught up');
@recs = journal_records("$dir/journal");
my $xlen = $r->cli('XLEN', 'guard:trim') + 0;
ok($xlen >= 50 && $xlen < 150 && $xlen < @recs,
   "maxlen 50: $xlen of the " . scalar(@recs) . ' records kept');
my $trim = stream_entries($r, 'guard:trim');
is($trim->[-1][1]{id}, $recs[-1]{id}, 'the newest kept');
is(end_guardd($gpid), 0, 'guardd stops');

# the settings are checked
for my $bad (
    [{ redis => { stream => 'x' } }, qr/needs either "socket" or "host"/],
    [{ redis => { socket => 's', batch => 0 } }, qr/batch must be an integer/],
    [{ redis => { socket => 's', linger_ms => -1 } },
     qr/sinks\.redis\.linger_ms must be an integer from 0 to 60000/],
    [{ postgres => { dsn => 'x', linger_ms => 60001 } },
     qr/sinks\.postgres\.linger_ms must be an integer from 0 to 60000/],
    [{ postgres => { dsn => 'x', linger_ms => '1s' } },
     qr/sinks\.postgres\.linger_ms must be an integer/],
    [{ postgres => {} }, qr/needs a "dsn"/],
    [{ postgres => { dsn => 'x', dns => 1 } },
     qr/unknown setting "dns" in sinks.postgres/],
    [{ kafka => {} }, qr/unknown setting "kafka" in sinks/],
) {
    write_text("$dir/bad.conf", guardd_conf($dir, $sock,
        policies => "$dir/pol", sinks => $bad->[0]));
    my $out = command($guardd, '-c', "$dir/bad.conf", '-t');
    ok($out->{exit} != 0 && $out->{err} =~ $bad->[1],
       'refused: ' . $json->encode($bad->[0]));
}

# no sinks: no lifecycle records, nothing published, as before
mkdir "$dir/plain";
write_text("$dir/plain.conf", guardd_conf("$dir/plain", "$dir/plain.sock",
    policies => "$dir/pol", metrics => "$dir/plain-metrics.sock"));
$gpid = spawn_guardd($guardd, "$dir/plain.conf", "$dir/plain.sock",
                     "$dir/plain.log");
$c = audit_client("$dir/plain.sock");
is(send_refusals($c, 5), 5, 'no sinks: 5 refusals');
undef $c;
is(end_guardd($gpid), 0, 'and a clean stop');
@recs = journal_records("$dir/plain/journal");
is(scalar @recs, 5, 'the journal holds the 5 refusals and nothing else');
ok(!glob("$dir/plain/journal/sink-*"), 'no cursor files');

my $log = slurp("$dir/guardd.log") . slurp("$dir/plain.log");
unlike($log, qr/ (?:emerg|alert|crit):/, 'no emergencies logged');
unlike($log, qr/Sanitizer|runtime error/, 'no sanitizer reports');
my @errors = grep { !/sink postgres: journal-\d+\.jsonl line \d+ rejected/ }
             $log =~ /^.* error: .*$/mg;
is(scalar @errors, 0, 'no errors but the dead letter')
    or diag join "\n", @errors;
unlike($log, qr/\Q$p->{dsn}\E/, 'the DSN is never logged');

done_testing;
