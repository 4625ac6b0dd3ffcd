#!/usr/bin/perl
# bench/store.sh's body (see there).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Guard::Services;
use Guard::Frames qw(spawn_guardd end_guardd write_text guardd_conf wait_for
                     command);
use Guard::Outbox qw(sink_metrics);
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM);

my $repo = "$FindBin::Bin/..";
my $rel = "$repo/policy-engine/build/release";
my ($guardd, $guardctl, $jbench) = map { "$rel/$_" }
    qw(guardd guardctl journal_bench);
my $n = $ENV{STORE_RECORDS} // 1_000_000;
my $batch = $ENV{STORE_BATCH} // 2000;
$| = 1;

for my $why (Guard::Services::redis_missing(),
             Guard::Services::postgres_missing()) {
    if ($why) { print "store.sh: skipped: $why\n"; exit 0 }
}

my $dir = tempdir('guard-store-bench-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{KEEP});
chmod 0755, $dir;
mkdir "$dir/$_" for qw(redis pg pol);
print "store.sh: $n synthetic refusals (20 tenants, times in journal order over the last "
    . "24 h), sinks' batch $batch; in $dir\n";

# 1. the journal
my $group = $ENV{STORE_GROUP} // 1024;
my $r = command($jbench, "$dir/journal", $n, $group, 20);
die "journal_bench: $r->{err}" if $r->{exit};
my @ids = split /\n/, $r->{err};
my ($jrate) = $r->{out} =~ /: (\d+) records\/s/;
chomp(my $jline = $r->{out});
printf "%s  goal >= 100000: %s\n", $jline, $jrate >= 100_000 ? 'ok' : 'BELOW';

# 2. the sinks, one at a time
my $redis = Guard::Services->redis("$dir/redis");
# PostgreSQL sized as an operator would run a store of this size (the
# harness's tests keep 64MB of shared_buffers and the default WAL
# settings): the table and its indexes in shared buffers, checkpoints
# not every few seconds during the load; printed as the server has them
my %pgset = (shared_buffers => $ENV{STORE_PG_SHARED_BUFFERS} // '512MB',
             max_wal_size => $ENV{STORE_PG_MAX_WAL_SIZE} // '4GB',
             checkpoint_timeout => '15min', wal_buffers => '64MB');
%pgset = () if ($ENV{STORE_PG} // '') eq 'harness'; # the tests' cluster
my $pg = Guard::Services->postgres("$dir/pg", settings => \%pgset);
$pg->migrate($guardctl);
{
    my @names = qw(shared_buffers max_wal_size checkpoint_timeout
                   wal_buffers synchronous_commit fsync);
    my $out = $pg->psql(join ' UNION ALL ', map {
        "SELECT '$_' || ' = ' || current_setting('$_')" } @names);
    print "postgres (", (split /\n/, $pg->psql('SHOW server_version'))[0]
        =~ s/^\s+|\s+$//gr, "): ",
        join(', ', grep { /=/ } map { s/^\s+|\s+$//gr } split /\n/, $out),
        "\n";
}
write_text("$dir/pol/t00.json", '{"tenant": "t00"}');

# CPU seconds: this process's children that were reaped (guardd), a
# server (redis-server and what it forked and reaped: its AOF rewrites),
# the PostgreSQL cluster (the postmaster, what it reaped: backends,
# autovacuum workers; and its live processes)
my $tck = POSIX::sysconf(POSIX::_SC_CLK_TCK());
sub proc_cpu {
    my ($pid, $children) = @_;
    open my $f, '<', "/proc/$pid/stat" or return 0;
    my @f = split ' ', (scalar(<$f>) =~ s/.*\)//r);
    return ($f[11] + $f[12] + ($children ? $f[13] + $f[14] : 0)) / $tck;
}
sub pg_cpu {
    my ($pm) = split /\n/, Guard::Frames::slurp("$pg->{data}/postmaster.pid");
    my $s = proc_cpu($pm, 1);
    $s += proc_cpu($_, 0) for split ' ', qx(pgrep -P $pm);
    return $s;
}
sub children_cpu { my @t = POSIX::times(); return ($t[3] + $t[4]) / $tck }

# drain(name, label, server_cpu, sink conf): guardd started on the journal
# with that sink alone; the rate from guardd ready (its socket accepting:
# after its start-up, which reads the journal whatever the sinks) until
# the sink's lag is 0; the CPU time guardd and the server spent, per record
sub drain {
    my ($name, $label, $server_cpu, %sink) = @_;
    my $sock = "$dir/guardd.sock";
    my $msock = "$dir/metrics.sock";
    write_text("$dir/guardd.conf", guardd_conf($dir, $sock,
        policies => "$dir/pol", metrics => $msock, log => 'warn',
        sinks => { %sink, state_dir => "$dir/state-$label" }));
    my ($c0, $s0) = (children_cpu(), $server_cpu->());
    my $t0 = time;
    my $pid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                           "$dir/guardd-$label.log");
    wait_for(600, sub {
        IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM) });
    my $tready = time;
    my $lag;
    my $ok = wait_for(3600, sub {
        my $m = sink_metrics($msock);
        $lag = $m->{"guardd_sink_lag_records{sink=\"$name\"}"};
        defined $lag && $lag == 0
            && ($m->{"guardd_sink_published_total{sink=\"$name\"}"} // 0) > 0;
    });
    my $t = time;
    my $m = sink_metrics($msock);
    end_guardd($pid);
    die "$name: not caught up (lag $lag)" unless $ok;
    sleep 0.5; # the backend gone, reaped
    my $pub = $m->{"guardd_sink_published_total{sink=\"$name\"}"} // 0;
    return { pub => $pub, secs => $t - $tready, start => $tready - $t0,
             rate => $pub / ($t - $tready),
             guardd_us => 1e6 * (children_cpu() - $c0) / $pub,
             server_us => 1e6 * ($server_cpu->() - $s0) / $pub };
}
sub report {
    my ($what, $d, $goal) = @_;
    printf "%s: %d records in %.2f s from guardd ready: %.0f records/s "
         . "(guardd's start-up before it %.2f s)  goal >= %d: %s\n"
         . "    CPU per record: guardd %.1f us (its start-up included), "
         . "the server %.1f us\n", $what, $d->{pub}, $d->{secs}, $d->{rate},
         $d->{start}, $goal, $d->{rate} >= $goal ? 'ok' : 'BELOW',
         $d->{guardd_us}, $d->{server_us};
}

# Redis: appendonly yes (Guard::Services), measured with appendfsync
# everysec (Redis's default for an AOF: fsync once a second, in a
# background thread), then with appendfsync always (the harness's: an
# fsync before every reply, one per batch's EXEC); AOF rewrites as
# configured by default (auto-aof-rewrite-percentage 100); each with the
# stream bounded as production runs it (guardd's sinks.redis "maxlen",
# XADD MAXLEN ~ N: Redis trims whole nodes of the stream), then unbounded
# (every record kept: the AOF rewrites copy a stream of N records)
my $maxlen = $ENV{STORE_MAXLEN} // 100_000;
my $redis_cpu = sub { proc_cpu($redis->{pid}, 1) };
my $only = $ENV{STORE_SINKS} // 'redis,postgres'; # STORE_SINKS=postgres
if ($only =~ /redis/) {
    # STORE_AOF_MIN_SIZE: Redis's auto-aof-rewrite-min-size, 1gb as an
    # operator would set it for a stream bounded by maxlen (Redis's own
    # default, 64mb: the file rewritten from a bounded stream is small,
    # and the AOF reaches twice its size again within seconds: a rewrite
    # every 2 s measured, each a fork serialising the whole stream)
    $redis->cli('CONFIG', 'SET', 'auto-aof-rewrite-min-size',
                $ENV{STORE_AOF_MIN_SIZE} // '1gb');
    my @conf = map { [ split /\n/, $redis->cli('CONFIG', 'GET', $_) ] }
        qw(appendonly auto-aof-rewrite-percentage auto-aof-rewrite-min-size
           aof-use-rdb-preamble);
    my ($ver) = $redis->cli('INFO', 'server') =~ /redis_version:(\S+)/;
    print "redis ($ver): ", join(', ', map { "$_->[0] $_->[1]" } @conf),
        "; streams bounded by sinks.redis maxlen $maxlen, then unbounded\n";
}
# the AOF rewrites Redis started so far (its log)
sub aof_rewrites {
    my $log = Guard::Frames::slurp($redis->{log}) // '';
    return scalar(() = $log =~ /append only file rewriting started/gi);
}
for my $bound (grep { $only =~ /redis/ } $maxlen, 0) {
    for my $fsync (qw(everysec always)) {
        $redis->cli('CONFIG', 'SET', 'appendfsync', $fsync);
        my $stream = "guard:records:$fsync:$bound";
        my $rw = aof_rewrites();
        my $d = drain('redis', "redis-$fsync-$bound", $redis_cpu,
                      redis => { socket => $redis->{socket}, batch => $batch,
                                 stream => $stream, maxlen => $bound });
        $rw = aof_rewrites() - $rw;
        my ($rlen) = $redis->cli('XLEN', $stream) =~ /(\d+)/;
        $redis->cli('DEL', $stream); # each run starts from an empty store
        $redis->cli('BGREWRITEAOF');
        wait_for(120, sub {
            $redis->cli('INFO', 'persistence')
                =~ /aof_rewrite_in_progress:0/ });
        report("redis sink (AOF, appendfsync $fsync; "
             . ($bound ? "maxlen ~$bound" : 'unbounded')
             . "; stream length $rlen; $rw AOF rewrites)", $d, 50_000);
    }
}
$redis->cli('CONFIG', 'SET', 'appendfsync', 'always');
exit 0 if $only !~ /postgres/;

my $d = drain('postgres', 'postgres', \&pg_cpu,
              postgres => { dsn => $pg->{dsn}, batch => $batch });
report('postgres sink (typed rows COPYed into decisions)', $d,
       20_000);

# 3. the SOC queries on the store (statistics up to date, as autovacuum
# keeps them)
$pg->psql('ANALYZE decisions');
sub timed {
    my @cmd = @_;
    my (@t, $out);
    for (1 .. 5) {
        my $t0 = time;
        my $res = command($guardctl, @cmd);
        push @t, time - $t0;
        die "guardctl @cmd: $res->{err}" if $res->{exit};
        $out = $res->{out};
    }
    @t = sort { $a <=> $b } @t;
    return ($t[2], $out);
}
my ($bt, $bout) = timed('blocked', '--db', $pg->{dsn}, '--tenant', 't03',
                        '--since', '1h');
my ($matching) = $bout =~ /\(\d+ of (\d+) matching/;
printf "blocked --db --tenant t03 --since 1h: %.3f s (median of 5; %s "
     . "matching refusals)  goal < 1 s: %s\n", $bt, $matching // 'all',
     $bt < 1 ? 'ok' : 'ABOVE';
my $id = $ids[ int(@ids / 2) ];
my ($st, $sout) = timed('show', $id, '--db', $pg->{dsn});
die "show $id: $sout" unless $sout =~ /^Decision \Q$id\E/;
printf "show ID --db: %.3f s (median of 5)  goal < 1 s: %s\n", $st,
     $st < 1 ? 'ok' : 'ABOVE';
my ($rows) = $pg->psql('SELECT count(*) FROM decisions') =~ /(\d+)/;
print "store.sh: $rows rows in decisions\n";
