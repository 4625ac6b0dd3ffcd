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
print "store.sh: $n synthetic refusals (20 tenants, times over the last "
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
my $pg = Guard::Services->postgres("$dir/pg");
$pg->migrate($guardctl);
write_text("$dir/pol/t00.json", '{"tenant": "t00"}');

sub drain {
    my ($name, %sink) = @_;
    my $sock = "$dir/guardd.sock";
    my $msock = "$dir/metrics.sock";
    write_text("$dir/guardd.conf", guardd_conf($dir, $sock,
        policies => "$dir/pol", metrics => $msock, log => 'warn',
        sinks => { %sink, state_dir => "$dir/state-$name" }));
    my $t0 = time;
    my $pid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                           "$dir/guardd-$name.log");
    my $lag;
    my $ok = wait_for(3600, sub {
        my $m = sink_metrics($msock);
        $lag = $m->{"guardd_sink_lag_records{sink=\"$name\"}"};
        defined $lag && $lag == 0
            && ($m->{"guardd_sink_published_total{sink=\"$name\"}"} // 0) > 0;
    });
    my $t = time - $t0;
    my $m = sink_metrics($msock);
    end_guardd($pid);
    die "$name: not caught up (lag $lag)" unless $ok;
    my $pub = $m->{"guardd_sink_published_total{sink=\"$name\"}"} // 0;
    return ($pub, $t);
}

my ($rp, $rt) = drain('redis', redis => { socket => $redis->{socket},
                                           batch => $batch });
my ($rlen) = $redis->cli('XLEN', 'guard:records') =~ /(\d+)/;
printf "redis sink: %d records in %.2f s: %.0f records/s (stream length %d)"
     . "  goal >= 50000: %s\n", $rp, $rt, $rp / $rt, $rlen,
     $rp / $rt >= 50_000 ? 'ok' : 'BELOW';

my ($pp, $pt) = drain('postgres', postgres => { dsn => $pg->{dsn},
                                                batch => $batch });
printf "postgres sink: %d records in %.2f s: %.0f records/s"
     . "  goal >= 20000: %s\n", $pp, $pt, $pp / $pt,
     $pp / $pt >= 20_000 ? 'ok' : 'BELOW';

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
