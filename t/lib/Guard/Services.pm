package Guard::Services;

# Real Redis and PostgreSQL for the tests, each private to a directory and
# reachable only through a Unix socket in it (no TCP port is opened).
#
#   use Guard::Services;
#   my $r = Guard::Services->redis($dir);      # redis-server, $r->{socket}
#   $r->cli('XLEN', 'guard:records');          # redis-cli -s, its output
#   $r->kill9; $r->start;                      # SIGKILL; restart, same data
#   my $p = Guard::Services->postgres($dir);   # initdb + pg_ctl, db "guard"
#   $p->psql('SELECT 1');                      # psql -At, its output
#   $p->migrate;                               # guardctl db migrate
#   $p->stop_immediate; $p->start;             # pg_ctl -m immediate; again
#
# Redis keeps an append-only file with appendfsync always, so a SIGKILL
# loses nothing it acknowledged.  PostgreSQL runs as the unprivileged user
# postgres when the test runs as root (the directory is chowned to it),
# with trust authentication on its socket; $p->{dsn} is the libpq
# connection string.  Both are stopped when the test ends (by the process
# that started them).  If the binaries are missing, the test is skipped
# (skip_all) with a message that says which.
#
# Core Perl modules only.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp ();
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Test::More ();
use Time::HiRes qw(sleep time);
use Guard::Frames ();

my $REPO = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)),
                                       File::Spec->updir, File::Spec->updir,
                                       File::Spec->updir));

my @LIVE;    # [object, pid of the process that started it]
END {
    my $rc = $?;
    for (reverse @LIVE) {
        my ($obj, $owner) = @$_;
        $obj->stop if $owner == $$;
    }
    $? = $rc;
}

# the directory of PostgreSQL's server binaries (the newest version), or
# undef
sub pg_bindir {
    my @dirs = sort { _ver($b) <=> _ver($a) }
               grep { -x "$_/initdb" && -x "$_/pg_ctl" }
               glob '/usr/lib/postgresql/*/bin';
    return $dirs[0];
}
sub _ver { ($_[0] =~ m{/(\d+)(?:\.\d+)?/bin$})[0] // 0 }

# redis_missing / postgres_missing: why the service cannot run here, or ''
sub redis_missing {
    for my $b (qw(redis-server redis-cli)) {
        return "$b is not installed (scripts/setup.sh installs redis-server)"
            unless _which($b);
    }
    return '';
}
sub postgres_missing {
    return 'initdb/pg_ctl not found in /usr/lib/postgresql/*/bin '
         . '(scripts/setup.sh installs postgresql)' unless pg_bindir();
    return 'psql is not installed (scripts/setup.sh installs postgresql)'
        unless _which('psql');
    return 'the user postgres does not exist (running as root, PostgreSQL '
         . 'needs an unprivileged user)'
        if $> == 0 && !defined getpwnam('postgres');
    return '';
}

sub _which {
    my ($b) = @_;
    for (split /:/, $ENV{PATH} // '/usr/bin:/bin') {
        return "$_/$b" if -x "$_/$b";
    }
    return -x "/usr/sbin/$b" ? "/usr/sbin/$b" : undef;
}

sub _skip {
    my ($why) = @_;
    Test::More::plan(skip_all => $why);
}

# _run(\%opt, @cmd): runs @cmd (Guard::Frames::command); { exit, out,
# err }.  opt: user => name (setuid to it when root), env => {...}
sub _run {
    my ($opt, @cmd) = @_;
    return Guard::Frames::command(sub {
        _become($opt->{user}) if $opt->{user};
        $ENV{$_} = $opt->{env}{$_} for keys %{ $opt->{env} // {} };
    }, @cmd);
}

# _become($user): in a child, drops root for $user (nothing if not root)
sub _become {
    my ($user) = @_;
    return unless $> == 0;
    my (undef, undef, $uid, $gid, undef, undef, undef, $home) = getpwnam $user
        or POSIX::_exit(125);
    $( = $) = "$gid $gid";
    POSIX::setgid($gid);
    POSIX::setuid($uid) or POSIX::_exit(125);
    $ENV{HOME} = $home // '/';
    $ENV{USER} = $ENV{LOGNAME} = $user;
    chdir '/';
}

# ---------------------------------------------------------------------------
# Redis

# redis($dir): a redis-server on the Unix socket $dir/redis.sock, its data
# (appendonly) in $dir/redis, log $dir/redis.log; started
sub redis {
    my ($class, $dir) = @_;
    if (my $why = redis_missing()) { _skip($why) }
    $dir = abs_path($dir) // croak "redis: no directory $_[1]";
    my $self = bless {
        dir => $dir, socket => "$dir/redis.sock", data => "$dir/redis",
        log => "$dir/redis.log", conf => "$dir/redis.conf",
    }, 'Guard::Services::Redis';
    mkdir $self->{data};
    Guard::Frames::write_text($self->{conf}, <<"EOF");
port 0
unixsocket $self->{socket}
unixsocketperm 770
dir $self->{data}
logfile $self->{log}
daemonize no
save ""
appendonly yes
appendfsync always
protected-mode yes
databases 1
EOF
    push @LIVE, [$self, $$];
    $self->start;
    return $self;
}

# postgres($dir): a PostgreSQL cluster in $dir/pgdata listening only on a
# Unix socket in $dir (port P: the socket file $dir/.s.PGSQL.P), database
# guard created; started.  postgres($dir, settings => {name => value, ...}):
# those server settings too, after the harness's own (which they override:
# bench/store.sh sizes the cluster for its 1M rows; the tests keep the
# harness's small one); $p->{settings} holds them
sub postgres {
    my ($class, $dir, %opt) = @_;
    if (my $why = postgres_missing()) { _skip($why) }
    $dir = abs_path($dir) // croak "postgres: no directory $_[1]";
    my $bin = pg_bindir();
    my $user = $> == 0 ? 'postgres' : undef;
    # a port of its own, only to name the socket; no TCP listener
    my $port = 20000 + ($$ * 7 + int(rand 1000)) % 40000;
    my $self = bless {
        dir => $dir, bin => $bin, user => $user, port => $port,
        data => "$dir/pgdata", log => "$dir/postgres.log",
        dsn => "host=$dir port=$port dbname=guard user=postgres",
        settings => { %{ $opt{settings} // {} } },
    }, 'Guard::Services::Postgres';
    if ($user) {
        my (undef, undef, $uid, $gid) = getpwnam $user;
        chown $uid, $gid, $dir or croak "chown $dir: $!";
        # postgres must reach $dir: every directory above it searchable
        for (my $d = dirname($dir); $d ne '/' && $d ne '.'; $d = dirname($d)) {
            my $mode = (stat $d)[2] // next;
            chmod(($mode & 07777) | 0001, $d) unless $mode & 0001;
        }
        open my $l, '>>', $self->{log}; close $l;
        chown $uid, $gid, $self->{log};
    }
    my $r = _run({ user => $user }, "$bin/initdb", '-D', $self->{data},
                 '-U', 'postgres', '-A', 'trust', '-E', 'UTF8',
                 '--locale=C', '--no-sync');
    croak "initdb failed: $r->{err}$r->{out}" if $r->{exit};
    open my $c, '>>', "$self->{data}/postgresql.conf"
        or croak "postgresql.conf: $!";
    print $c <<"EOF";
# Guard::Services: a private cluster on a Unix socket only
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
max_connections = 40
shared_buffers = 64MB
logging_collector = off
log_min_messages = warning
EOF
    if (my %set = %{ $self->{settings} }) {
        print $c "# settings given to Guard::Services->postgres\n";
        print $c "$_ = $set{$_}\n" for sort keys %set;
    }
    close $c;
    push @LIVE, [$self, $$];
    $self->start;
    $r = _run({}, 'psql', '-X', '-q', '-h', $dir, '-p', $port,
              '-U', 'postgres', '-d', 'postgres', '-c', 'CREATE DATABASE guard');
    croak "CREATE DATABASE guard failed: $r->{err}" if $r->{exit};
    return $self;
}

package Guard::Services::Redis;

use strict;
use warnings;
use Carp qw(croak);
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(sleep time);

# start: runs redis-server (same data dir) and waits until it answers PING
sub start {
    my ($self) = @_;
    croak 'redis already running' if $self->{pid};
    unlink $self->{socket};
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $self->{log};
        open STDERR, '>>', $self->{log};
        { exec 'redis-server', $self->{conf}; }
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $end = time + 20;
    while (time < $end) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{pid};
            croak "redis-server exited ($?): see $self->{log}";
        }
        last if -S $self->{socket} && $self->cli('PING') =~ /PONG/;
        sleep 0.05;
    }
    croak "redis-server did not answer within 20 s: see $self->{log}"
        unless $self->cli('PING') =~ /PONG/;
    return $self;
}

# kill9: SIGKILL, reaped
sub kill9 {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# stop: SIGTERM (redis-server shuts down cleanly), reaped
sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $end = time + 10;
    while (time < $end) {
        return if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# cli(@args): redis-cli -s socket @args; its standard output
sub cli {
    my ($self, @args) = @_;
    my $r = Guard::Services::_run({}, 'redis-cli', '-s', $self->{socket},
                                  @args);
    $self->{err} = $r->{err};
    return $r->{out};
}

package Guard::Services::Postgres;

use strict;
use warnings;
use Carp qw(croak);

sub _ctl {
    my ($self, @args) = @_;
    return Guard::Services::_run({ user => $self->{user} },
                                 "$self->{bin}/pg_ctl", '-D', $self->{data},
                                 '-l', $self->{log}, @args);
}

# start: pg_ctl start, waiting until it accepts connections
sub start {
    my ($self) = @_;
    my $r = $self->_ctl('-w', '-t', '60', 'start');
    croak "pg_ctl start failed: $r->{err}$r->{out} (see $self->{log})"
        if $r->{exit};
    $self->{running} = 1;
    return $self;
}

# stop_immediate: pg_ctl stop -m immediate (no shutdown checkpoint; the
# next start recovers from the WAL)
sub stop_immediate {
    my ($self) = @_;
    $self->_ctl('-w', '-m', 'immediate', 'stop');
    $self->{running} = 0;
}

# stop: pg_ctl stop -m fast
sub stop {
    my ($self) = @_;
    return unless $self->{running};
    $self->_ctl('-w', '-m', 'fast', 'stop');
    $self->{running} = 0;
}

# psql($sql): psql -At -v ON_ERROR_STOP=1 -c $sql on database guard; its
# standard output ($p->{err}, $p->{exit}: its error output and status)
sub psql {
    my ($self, $sql, $db) = @_;
    my $r = Guard::Services::_run({}, 'psql', '-X', '-q', '-At',
                                  '-v', 'ON_ERROR_STOP=1',
                                  '-h', $self->{dir}, '-p', $self->{port},
                                  '-U', 'postgres', '-d', $db // 'guard',
                                  '-c', $sql);
    @$self{qw(err exit)} = @$r{qw(err exit)};
    return $r->{out};
}

# migrate($guardctl): applies migrations/ with `guardctl db migrate --db`
# (default: the release guardctl of this tree); dies if it fails
sub migrate {
    my ($self, $guardctl) = @_;
    $guardctl //= "$REPO/policy-engine/build/release/guardctl";
    my $r = Guard::Services::_run({}, $guardctl, 'db', 'migrate',
                                  '--db', $self->{dsn},
                                  '--dir', "$REPO/migrations");
    croak "guardctl db migrate failed: $r->{err}" if $r->{exit};
    return $r->{out};
}

1;
