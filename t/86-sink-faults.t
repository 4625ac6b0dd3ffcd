#!/usr/bin/perl

# Faults that must lose nothing, each under a steady load of refusals
# (AUDIT frames from a forked client, about 100 a second):
#   - Redis killed with SIGKILL for 30 s, then restarted;
#   - PostgreSQL stopped (immediate shutdown) for 30 s, then restarted;
#   - guardd killed with SIGKILL while a backlog drains (mid-batch), then
#     restarted;
#   - a record PostgreSQL refuses, among the load;
# after each, once the sinks caught up: the stream and the table hold
# every journal record exactly once (and `guardctl audit verify --db`
# finds the table clean), and guardd kept deciding meanwhile.
#
# Under GUARD_SANITIZE=1 (the ASan pass) the outages last 5 s, not 30 s.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
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
my $outage = $ENV{GUARD_SINK_OUTAGE} || ($ENV{GUARD_SANITIZE} ? 5 : 30);
# GUARD_SINK_PHASES=3,4: only those faults (to look at one)
my %phase = map { $_ => 1 } split /,/, $ENV{GUARD_SINK_PHASES} || '1,2,3,4';

my ($dir, $r, $p) = outbox_setup('faults');

write_text("$dir/pol/acme.json", '{"tenant": "acme"}');
my $sock = "$dir/guardd.sock";
my $msock = "$dir/metrics.sock";
write_text("$dir/guardd.conf", guardd_conf($dir, $sock,
    policies => "$dir/pol", metrics => $msock,
    sinks => { redis => { socket => $r->{socket}, batch => 20 },
               postgres => { dsn => $p->{dsn}, batch => 20 } }));

my $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                        "$dir/guardd.log");
ok(-S $sock, 'guardd with both sinks');

# the stream and the table against the journal, once the sinks caught up
sub check {
    my ($what) = @_;
    my $t0 = time;
    ok(wait_caught_up($msock, 60, qw(redis postgres)),
       "$what: both sinks caught up");
    my @recs = journal_records("$dir/journal");
    my %n;
    $n{ $_->[1]{id} }++ for @{ stream_entries($r, 'guard:records') };
    exactly_once("$what: redis", [map { $_->{id} } @recs], \%n);
    exactly_once("$what: postgres",
                 [map { $_->{id} } grep { ($_->{subject} // '') ne 'bad' }
                  @recs], pg_rows($p));
    note sprintf "%s: checked in %.1f s", $what, time - $t0;
}

# the journal grows during an outage: guardd goes on
sub journaled { scalar journal_records("$dir/journal") }

# outage($sink, $other, $what, $down, $up): under the load, $down->(),
# $outage seconds, $up->(): meanwhile the sink says it is down, its lag
# grows, the other sink goes on and guardd journals; then every record
# exactly once
sub outage {
    my ($sink, $other, $what, $down, $up) = @_;
    my $load = load_start($sock, 100);
    sleep 1;
    $down->();
    my $before = journaled();
    sleep $outage;
    my $m = sink_metrics($msock);
    my $v = sub { $m->{"guardd_sink_$_[0]\{sink=\"$_[1]\"}"} };
    is($v->('up', $sink), 0, "$sink down: the sink says so");
    cmp_ok($v->('lag_records', $sink), '>', 50,
           "$sink down: its lag grows (" . $v->('lag_records', $sink)
           . ' records)');
    cmp_ok($v->('lag_seconds', $sink), '>', $outage / 2, 'and in seconds');
    cmp_ok($v->('errors_total', $sink), '>', 0, 'errors counted');
    cmp_ok($v->('lag_records', $other), '<', 100, "$other goes on meanwhile");
    cmp_ok(journaled() - $before, '>', 10 * $outage,
           "refusals journaled while $sink was down");
    $up->();
    sleep 1;
    load_stop($load);
    check($what);
}

# 1. Redis: SIGKILL, 30 s down, restarted
outage('redis', 'postgres', 'redis SIGKILL', sub { $r->kill9 },
       sub { $r->start }) if $phase{1};

# 2. PostgreSQL: immediate shutdown, 30 s down, restarted; audit verify
if ($phase{2}) {
    outage('postgres', 'redis', 'postgres immediate stop',
           sub { $p->stop_immediate }, sub { $p->start });
    my $v = command($guardctl, 'audit', 'verify', '--dir', "$dir/journal",
                    '--db', $p->{dsn});
    is($v->{exit}, 0, 'guardctl audit verify --db: clean')
        or diag "$v->{out}$v->{err}";
}

# 3. guardd SIGKILL while a backlog drains: both sinks down for a moment
# so that batches are in flight when guardd dies.  This guardd writes
# each cursor 250 ms after the sink confirmed its batch
# (GUARDD_SINK_CURSOR_DELAY_MS, a knob for this test): the kill lands
# between the two, and the restarted guardd publishes those batches again
my ($load, $m);
if ($phase{3}) {
is(end_guardd($gpid), 0, 'guardd stops');
{
    local $ENV{GUARDD_SINK_CURSOR_DELAY_MS} = 250;
    $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                         "$dir/guardd.log");
}
ok(wait_caught_up($msock, 30, qw(redis postgres)), 'a guardd with a cursor delay');
$load = load_start($sock, 100);
$r->kill9;
$p->stop_immediate;
sleep 5;
# what was published before the outage: taken while both are down, so
# that a batch the sinks sent before they saw the kill does not count
$m = sink_metrics($msock);
$r->start;
$p->start;
# the kill while batches go out: both sinks back up, each published a
# batch since, and the backlog still there
my $mid = wait_for(30, sub {
    my $x = sink_metrics($msock);
    !grep {
        ($x->{"guardd_sink_up{sink=\"$_\"}"} // 0) != 1
        || ($x->{"guardd_sink_published_total{sink=\"$_\"}"} // 0) <=
            ($m->{"guardd_sink_published_total{sink=\"$_\"}"} // 0)
        || ($x->{"guardd_sink_lag_records{sink=\"$_\"}"} // 0) <= 40
    } qw(redis postgres)
});
ok($mid, 'both sinks back and draining the backlog when guardd is killed')
    or diag explain sink_metrics($msock);
kill 'KILL', $gpid;
waitpid $gpid, 0;
$gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock, "$dir/guardd.log");
ok(-S $sock, 'guardd restarted after SIGKILL');
sleep 2;
load_stop($load);
check('guardd SIGKILL');
$m = sink_metrics($msock);
my %dups = map { $_ => $m->{"guardd_sink_duplicates_total{sink=\"$_\"}"} }
           qw(redis postgres);
cmp_ok($dups{redis} + $dups{postgres}, '>', 0,
       'batches confirmed before the kill, published again, are refused as '
       . "duplicates (redis $dups{redis}, postgres $dups{postgres})");
}

# 4. a record PostgreSQL refuses, among the load: dead letter, the rest on
if ($phase{4}) {
$load = load_start($sock, 100);
sleep 0.5;
{
    my $c = audit_client($sock);
    is(send_refusals($c, 1, ts_ms => 99999999999999999, subject => 'bad'), 1,
       'a record PostgreSQL refuses, among the load');
}
sleep 1;
load_stop($load);
check('a rejected record');
$m = sink_metrics($msock);
is($m->{'guardd_sink_dead_letters_total{sink="postgres"}'}, 1,
   'postgres: one dead letter');
my @dead = map { $json->decode($_) } split /\n/,
           slurp("$dir/journal/sink-postgres.dead.jsonl");
is(scalar @dead, 1, 'one line in the dead-letter file (beside the journal)');
is($dead[0]{record}{subject}, 'bad', 'the refused record, with its error')
    and like($dead[0]{error}, qr/out of range/, '... out of range');
}

is(end_guardd($gpid), 0, 'guardd stops cleanly');
my $log = slurp("$dir/guardd.log");
unlike($log, qr/ (?:emerg|alert|crit):/, 'no emergencies logged');
unlike($log, qr/Sanitizer|runtime error/, 'no sanitizer reports');
my @errors = grep { !/ sink (?:redis|postgres): / } $log =~ /^.* error: .*$/mg;
is(scalar @errors, 0, 'no errors but the sinks\' outages')
    or diag join "\n", @errors;

done_testing;
