#!/usr/bin/perl

# bench/sinks.pl (run by bench/sinks.sh): guardd's DECIDE p99 with its
# sinks off, with both sinks on, and with each sink down, under a steady
# load of refusals (AUDIT frames, SINKS_LOAD a second, default 500) that
# the sinks publish.  A private redis-server and PostgreSQL cluster
# (t/lib/Guard/Services.pm), the release guardd and decide_bench; the
# configurations interleaved for SINKS_ROUNDS rounds (default 7), their
# order rotated from round to round; in each round the p99 of each
# configuration is divided by the p99 of sinks off of that round, and the
# figure is the median of those per-round ratios (goal: <= 1.2), with
# their range.  A ratio within a round compares runs a few seconds apart,
# under the same load of the machine; the median leaves out the rounds a
# burst of other work hit one run of.
#
# The machine's cores are shared by the load, Redis, PostgreSQL, guardd
# and decide_bench: quote the ratios, not the microseconds.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use Guard::Frames qw(spawn_guardd end_guardd guardd_conf write_text slurp);
use Guard::Services;
use Guard::Outbox;

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARD_GUARDD} || "$repo/policy-engine/build/release/guardd";
my $bench = "$repo/policy-engine/build/release/decide_bench";
my $rounds = $ENV{SINKS_ROUNDS} || 7;
my $rate = $ENV{SINKS_LOAD} || 500;
my $n = $ENV{SINKS_DECIDES} || 20000;

die "no Redis: " . Guard::Services::redis_missing() . "\n"
    if Guard::Services::redis_missing();
die "no PostgreSQL: " . Guard::Services::postgres_missing() . "\n"
    if Guard::Services::postgres_missing();

my ($dir, $r, $p) = outbox_setup('bench-sinks');

# SINKS_SERVERS_NICE=N: redis-server and PostgreSQL (the postmaster and
# its processes; backends forked later inherit it) at nice N.  On a
# machine of few cores where Redis and PostgreSQL run beside guardd, they
# compete with guardd's loop for the CPU: this separates that from what
# the sinks cost guardd itself.
my $servers_nice = $ENV{SINKS_SERVERS_NICE} // 0;
if ($servers_nice) {
    my ($pm) = split /\n/, slurp("$p->{data}/postmaster.pid");
    my @pids = ($r->{pid}, $pm, split ' ', qx(pgrep -P $pm));
    system('renice', '-n', $servers_nice, '-p', @pids) == 0
        or die "renice failed\n";
    # with the kernel's autogroups (sched_autogroup_enabled), a process
    # in a session of its own (the postmaster calls setsid) is scheduled
    # as a group beside this session's, and its nice counts only inside
    # its group: the group's own nice is set too
    my $mine = slurp('/proc/self/autogroup');
    my %done;
    for my $pid (@pids) {
        my $g = slurp("/proc/$pid/autogroup");
        next if $g eq '' || $g eq $mine || $done{$g}++;
        open my $f, '>', "/proc/$pid/autogroup" or die "autogroup: $!\n";
        print $f $servers_nice;
        close $f or die "autogroup of $pid: $!\n";
    }
}

write_text("$dir/pol/acme.json", <<'JSON');
{"tenant": "acme",
 "risk": {"thresholds": {"step_up": 400, "deny": 700},
          "signals": [{"id": "not-admin", "weight": 30,
                       "when": {"claim": {"name": "roles", "lacks": "admin"}}}]}}
JSON

# a stream per run: each run has a journal of its own
my $redis = { socket => $r->{socket}, maxlen => 1000000,
              stream => 'guard:{node}' };
my $pg = { dsn => $p->{dsn} };
my %configs = (
    'sinks off' => undef,
    'both on' => { redis => $redis, postgres => $pg },
    'redis down' => { redis => { socket => "$dir/no-redis.sock" },
                      postgres => $pg },
    'postgres down' => { redis => $redis,
                         postgres => { dsn => "host=$dir/nowhere port=1 "
                                              . "dbname=guard user=postgres" } },
);
my @order = ('sinks off', 'both on', 'redis down', 'postgres down');
my %p99;
my $run = 0;

my %ratios;
for my $round (1 .. $rounds) {
    my %this;
    my $k = ($round - 1) % @order;
    for my $name (@order[$k .. $#order], @order[0 .. $k - 1]) {
        my $d = "$dir/run" . ++$run;
        mkdir $d or die;
        my $sock = "$d/guardd.sock";
        write_text("$d/guardd.conf", guardd_conf($d, $sock,
            policies => "$dir/pol", log => 'warn', metrics => "$d/m.sock",
            node => "run$run",
            $configs{$name} ? (sinks => $configs{$name}) : ()));
        my $pid = spawn_guardd($guardd, "$d/guardd.conf", $sock,
                               "$d/guardd.log");
        my $load = load_start($sock, $rate);
        sleep 1;
        my $out = qx($bench $sock $n 1 $pid);
        load_stop($load);
        my $m = sink_metrics("$d/m.sock");
        end_guardd($pid);
        my ($v) = $out =~ /^DECIDE -> VERDICT\s+p50\s+\S+ us\s+p99\s+(\S+) us/m
            or die "decide_bench: $out";
        push @{ $p99{$name} }, $v;
        $this{$name} = $v;
        my $pub = join ', ', map {
            "$_ " . ($m->{"guardd_sink_published_total{sink=\"$_\"}"} // '-')
        } qw(redis postgres);
        printf "round %d %-14s DECIDE p99 %8.1f us   published: %s\n",
               $round, $name, $v, $pub;
    }
    push @{ $ratios{$_} }, $this{$_} / $this{'sinks off'} for @order;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return $s[$#s / 2];
}

print "\nDECIDE p99 under $rate refusals/s, $n DECIDEs, $rounds rounds "
    . "(order rotated each round)"
    . ($servers_nice ? ", Redis and PostgreSQL at nice $servers_nice" : '')
    . "\n";
for my $name (@order) {
    my @r = sort { $a <=> $b } @{ $ratios{$name} };
    printf "%-14s p99 median %8.1f us   ratio to sinks off: median of "
         . "rounds %.2f (range %.2f-%.2f)\n", $name, median(@{ $p99{$name} }),
         median(@r), $r[0], $r[-1];
}
print "(goal: every median ratio <= 1.2)\n";
