package Guard::Outbox;

# guardd's sinks from the test side (t/85-*.t, t/86-sink-faults.t): a
# guardd.conf with sinks, AUDIT records sent as refusals (a batch, or a
# steady load from a forked child that survives guardd's restarts), the
# Redis stream and the PostgreSQL rows read back, and the check that
# each holds every journal record exactly once.

use strict;
use warnings;

use Exporter qw(import);
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use File::Temp ();
use Guard::Frames qw(frame read_frames journal_records wait_for);
use Guard::Services;

our @EXPORT = qw(outbox_setup audit_client send_refusals load_start load_stop
                 stream_entries pg_rows exactly_once sink_metrics
                 wait_caught_up);

my $json = JSON::PP->new->canonical;

# outbox_setup($name): a directory of the test (kept with GUARD_KEEP=1)
# with pol/ in it, a real Redis and a real PostgreSQL with the store's
# migrations applied; ($dir, $redis, $postgres)
sub outbox_setup {
    my ($name) = @_;
    my $dir = File::Temp::tempdir("guard-$name-XXXXXX", TMPDIR => 1,
                                  CLEANUP => !$ENV{GUARD_KEEP});
    chmod 0755, $dir;
    mkdir "$dir/$_" or die "$dir/$_: $!" for qw(pol redis pg);
    my $r = Guard::Services->redis("$dir/redis");
    my $p = Guard::Services->postgres("$dir/pg");
    $p->migrate;
    return ($dir, $r, $p);
}

# audit_client($sock): a connection that said HELLO, or undef
sub audit_client {
    my ($sock) = @_;
    my $c = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM)
        or return undef;
    print $c frame(1, 1, { version => 1, max_frame => 65536,
                           node => 'outbox-test' });
    my ($h) = read_frames($c, 1, 5);
    return $h && $h->{type} == 1 ? $c : undef;
}

# a refusal record, number $n
sub refusal {
    my ($n, %more) = @_;
    return { tenant => ('acme', 'globex', 'initech')[$n % 3],
             subject => "user-$n", outcome => 'deny', status => 429,
             reason => 'rate_limited', stage => 'limits', route => '/api',
             method => 'GET', source => 'nginx',
             ts_ms => int(time * 1000), %more };
}

# send_refusals($c, $n, %more): $n AUDIT refusals pipelined; how many
# were acknowledged
sub send_refusals {
    my ($c, $n, %more) = @_;
    print $c join '', map { frame(4, 100 + $_, refusal($_, %more)) } 1 .. $n;
    my @a = read_frames($c, $n, 30);
    return scalar grep { $_->{type} == 5 } @a;
}

# load_start($sock, $per_second): a forked child sending AUDIT refusals
# at about that rate, one at a time (each waits for its ACK), until
# load_stop; it reconnects when guardd goes away.  Returns its pid.
sub load_start {
    my ($sock, $rate) = @_;
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    my $stop = 0;
    $SIG{TERM} = sub { $stop = 1 };
    my ($c, $n) = (undef, 0);
    while (!$stop) {
        $c //= audit_client($sock);
        if (!$c) { sleep 0.1; next }
        my $t0 = time;
        print $c frame(4, ++$n, refusal($n, load => 1));
        my ($a) = read_frames($c, 1, 5);
        undef $c unless $a;
        my $left = 1 / $rate - (time - $t0);
        sleep $left if $left > 0;
    }
    POSIX::_exit(0);
}

sub load_stop {
    my ($pid) = @_;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

# stream_entries($r, $key): [[entry id, {field => value}], ...] of the
# stream, read with XRANGE in pages
sub stream_entries {
    my ($r, $key) = @_;
    my (@out, $from) = ();
    $from = '-';
    for (;;) {
        my @l = split /\n/, $r->cli('XRANGE', $key, $from, '+', 'COUNT',
                                    5000);
        last unless @l;
        my $got = 0;
        while (@l) {
            my $id = shift @l;
            my %f;
            for (1 .. 8) {
                my ($k, $v) = splice @l, 0, 2;
                $f{$k} = $v;
            }
            push @out, [$id, \%f];
            $got++;
        }
        last if $got < 5000;
        $from = '(' . $out[-1][0];
    }
    return \@out;
}

# pg_rows($p): { id => count } of decisions
sub pg_rows {
    my ($p) = @_;
    my %rows;
    for (split /\n/, $p->psql('SELECT id, count(*) FROM decisions GROUP BY id')) {
        my ($id, $n) = split /\|/;
        $rows{$id} = $n;
    }
    return \%rows;
}

# exactly_once($what, \@journal_ids, \%seen_counts): is() tests: every
# journal id seen once, nothing else
sub exactly_once {
    my ($what, $ids, $seen) = @_;
    my %j = map { $_ => 1 } @$ids;
    my @missing = grep { !$seen->{$_} } @$ids;
    my @twice = grep { $seen->{$_} > 1 } keys %$seen;
    my @extra = grep { !$j{$_} } keys %$seen;
    Test::More::is(scalar @missing, 0,
        "$what: none of the " . scalar(@$ids) . " journal records missing"
        . (@missing ? " (e.g. $missing[0])" : ''));
    Test::More::is(scalar @twice, 0, "$what: none twice"
        . (@twice ? " (e.g. $twice[0])" : ''));
    Test::More::is(scalar @extra, 0, "$what: nothing else");
}

# sink_metrics($msock): { "name{sink=...}" => value } of guardd's
# /metrics (the sink families only)
sub sink_metrics {
    my ($msock) = @_;
    my $c = IO::Socket::UNIX->new(Peer => $msock, Type => SOCK_STREAM)
        or return {};
    print $c "GET /metrics HTTP/1.0\r\n\r\n";
    local $/;
    my $text = <$c> // '';
    my %m;
    $m{"$1\{sink=\"$2\"}"} = $3
        while $text =~ /^(guardd_sink_\w+)\{sink="(\w+)"\} (\S+)$/mg;
    return \%m;
}

# wait_caught_up($msock, $secs, @sinks): until every sink's lag is 0
sub wait_caught_up {
    my ($msock, $secs, @sinks) = @_;
    return wait_for($secs, sub {
        my $m = sink_metrics($msock);
        !grep { ($m->{"guardd_sink_lag_records{sink=\"$_\"}"} // 1) != 0 }
            @sinks;
    });
}

1;
