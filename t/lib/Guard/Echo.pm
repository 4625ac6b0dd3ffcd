package Guard::Echo;

# The echoing upstream of the guardrails tests (t/tools/echo_backend.py):
# what the upstream received, to see that redactions reached it and the
# originals did not.
#
#   my $pid = Guard::Echo::start($t, 1);      # on $t->port(1)
#   my $e = Guard::Echo::echo($r);            # {method, path, headers,
#                                             #  body, body_len, header}

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use Guard::Test qw(wait_for);

my %started;
END { kill 'KILL', grep { $started{$_} == $$ } keys %started }

sub start {
    my ($t, $index) = @_;
    my $port = $t->port($index);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        exec $t->python, $t->repo . '/t/tools/echo_backend.py', $port;
        exit 127;
    }
    $started{$pid} = $$;
    wait_for(10, sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp')
    }) or die "the echo backend did not start\n";
    return $pid;
}

# the upstream's view of a response of the echo backend; {} if none
sub echo {
    my ($r) = @_;
    my $d = eval { JSON::PP->new->decode($r->{body} // '') };
    return {} unless ref $d eq 'HASH';
    $d->{body} = decode_base64($d->{body_b64} // '');
    $d->{header} = {};
    for my $h (@{ $d->{headers} // [] }) {
        $d->{header}{ lc $h->[0] } = $h->[1];
    }
    return $d;
}

1;
