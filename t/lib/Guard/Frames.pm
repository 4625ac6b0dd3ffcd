package Guard::Frames;

# The sidecar protocol from the test side, written independently of the
# C codec (docs/protocol.md): a 4-byte big-endian length, a type byte, a
# 4-byte request id, a JSON payload.

use strict;
use warnings;

use Exporter qw(import);
use IO::Select;
use JSON::PP ();
use Time::HiRes qw(time);

our @EXPORT = qw(frame read_frames);

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

1;
