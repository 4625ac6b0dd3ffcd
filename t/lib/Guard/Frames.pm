package Guard::Frames;

# guardd from the test side: starting it, and the sidecar protocol written
# independently of the C codec (docs/protocol.md): a 4-byte big-endian
# length, a type byte, a 4-byte request id, a JSON payload.

use strict;
use warnings;

use Exporter qw(import);
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use JSON::PP ();
use File::Temp ();
use POSIX ();
use Guard::Test qw(wait_for);    # re-exported: one poll helper
use Time::HiRes qw(sleep time);

our @EXPORT = qw(frame read_frames spawn_guardd end_guardd stand_in_guardd);
our @EXPORT_OK = qw(journal_records wait_for slurp write_text guardd_conf
                    command);

my $json = JSON::PP->new->canonical;

# frame($type, $id, $payload_hashref_or_undef): the bytes of one frame
sub frame {
    my ($type, $id, $payload) = @_;
    my $body = defined $payload ? $json->encode($payload) : '';
    return pack('NCN', 5 + length $body, $type, $id) . $body;
}

# read_frames($socket, $n, $timeout): whole frames, until n arrived, the
# peer closed or the timeout (default 10 s) passed; each a hashref
# { type, id, payload }
sub read_frames {
    my ($s, $n, $timeout) = @_;
    my ($buf, @frames) = ('');
    my $sel = IO::Select->new($s);
    my $end = time + ($timeout // 10);
    while (@frames < $n) {
        my $left = $end - time;
        last if $left <= 0 || !$sel->can_read($left);
        my $r = sysread $s, $buf, 65536, length $buf;
        last unless $r;
        while (length $buf >= 4) {
            my $len = unpack 'N', $buf;
            last if length $buf < 4 + $len;
            my ($type, $id) = unpack 'CN', substr($buf, 4, 5);
            my $body = substr $buf, 9, $len - 5;
            push @frames, { type => $type, id => $id,
                            payload => length $body ? $json->decode($body)
                                                    : undef };
            substr($buf, 0, 4 + $len) = '';
        }
    }
    return @frames;
}

# the guardds spawn_guardd started that end_guardd has not stopped: killed
# when the test ends, however it ends (by the process that started them,
# not by a forked child of the test that exits)
my %spawned;
END { kill 'KILL', grep { $spawned{$_} == $$ } keys %spawned }

# end_guardd($pid): stops a guardd of spawn_guardd with SIGTERM and waits
# for it; its exit status ($?)
sub end_guardd {
    my ($pid) = @_;
    return undef unless $pid;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    my $status = $?;
    delete $spawned{$pid};
    return $status;
}

# spawn_guardd($guardd, $conf, $socket, $log): starts guardd with its
# stderr appended to $log, waits (at most 10 s) for its socket; returns
# the pid, the socket being there or not
sub spawn_guardd {
    my ($guardd, $conf, $sock, $log) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>>', $log or die "$log: $!";
        exec $guardd, '-c', $conf;
        die "exec: $!";
    }
    $spawned{$pid} = $$;
    # the socket file exists from bind(); it accepts after listen()
    for (1 .. 200) {
        last if -S $sock
                && IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM);
        sleep 0.05;
    }
    return $pid;
}

# stand_in_guardd($sock, $secs, $answer): a forked stand-in for guardd on
# the Unix socket $sock for at most $secs seconds; it answers HELLO, and
# every other frame with what $answer->($type, $id, $body) returns (frame
# bytes, or '' for no answer).  Returns its pid, once it accepts.
sub stand_in_guardd {
    my ($sock, $secs, $answer) = @_;
    unlink $sock;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $l = IO::Socket::UNIX->new(Local => $sock, Listen => 16,
                                      Type => SOCK_STREAM) or POSIX::_exit(1);
        chmod 0666, $sock;
        my $sel = IO::Select->new($l);
        my %buf;
        my $end = time + $secs;
        while (time < $end) {
            for my $h ($sel->can_read(0.1)) {
                if ($h == $l) {
                    my $c = $l->accept or next;
                    $sel->add($c);
                    next;
                }
                my $n = sysread $h, $buf{$h}, 65536, length($buf{$h} // '');
                if (!$n) { $sel->remove($h); next }
                while (length $buf{$h} >= 9) {
                    my ($len, $type, $id) = unpack 'NCN', $buf{$h};
                    last if length $buf{$h} < 4 + $len;
                    my $body = substr $buf{$h}, 9, $len - 5;
                    substr($buf{$h}, 0, 4 + $len) = '';
                    syswrite $h, $type == 1
                        ? frame(1, $id, { version => 1, max_frame => 65536,
                                          node => 'stand-in' })
                        : $answer->($type, $id, $body);
                }
            }
        }
        POSIX::_exit(0);
    }
    wait_for(10, sub {
        -S $sock && IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM)
    });
    return $pid;
}

# journal_records($dir): every record of guardd's journal in $dir, in
# chain order (segments by number, lines in order), each a hashref; a
# line that is not JSON (a torn last line) is skipped
sub journal_records {
    my ($dir) = @_;
    my @recs;
    for my $seg (sort glob "$dir/journal-*.jsonl") {
        open my $f, '<', $seg or next;
        while (my $line = <$f>) {
            next unless $line =~ /\n\z/;
            my $rec = eval { $json->decode($line) };
            push @recs, $rec if ref $rec eq 'HASH';
        }
    }
    return @recs;
}


# guardd_conf($dir, $sock, member => value, ...): guardd.conf's text for a
# guardd listening on $sock, its pid file and journal in $dir, the socket
# group nogroup (the nginx workers run as nobody), and the members given
sub guardd_conf {
    my ($dir, $sock, %more) = @_;
    return $json->encode({
        listen => $sock, pid_file => "$dir/guardd.pid",
        socket_group => 'nogroup',
        journal => { dir => "$dir/journal" },
        %more,
    });
}

# slurp($path): the file's text, '' when it cannot be read
sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or return '';
    local $/;
    return scalar(<$f>) // '';
}

# write_text($path, $text): the file, written whole
sub write_text {
    my ($path, $text) = @_;
    open my $f, '>', $path or die "$path: $!";
    print $f $text;
    close $f or die "$path: $!";
}

# command([\&in_child,] @argv): runs it (no shell, stdin /dev/null), its
# output in files; { exit, out, err }.  in_child runs in the child before
# the exec (to change user, environment, ...)
sub command {
    my $in_child = ref $_[0] eq 'CODE' ? shift : undef;
    my @cmd = @_;
    my $tmp = File::Temp->newdir('guard-cmd-XXXXXX', TMPDIR => 1);
    chmod 0777, "$tmp" if $in_child;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $in_child->() if $in_child;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$tmp/out";
        open STDERR, '>', "$tmp/err";
        { exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return { exit => $? >> 8, out => slurp("$tmp/out"),
             err => slurp("$tmp/err") };
}


1;
