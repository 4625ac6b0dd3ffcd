package Guard::Test;

# End-to-end test harness for the Guard nginx module, in the spirit of
# nginx-tests: every object owns a temp dir, writes an nginx.conf into it,
# runs the system nginx against it and talks raw HTTP/1.1 to it.
#
#   use FindBin; use lib "$FindBin::Bin/lib";
#   use Guard::Test;
#   my $t = Guard::Test->new;
#   $t->write_conf(http => 'server { listen 127.0.0.1:%%PORT_0%%; ... }');
#   $t->run;
#   is($t->get('/')->{status}, 200);
#
# Core Perl modules only.  nginx is always stopped when the object goes
# away or the program ends (END block, also on die / INT / TERM).
#
# Environment switches (make test sets them for its second pass):
#   GUARD_MODULE=path           the module to load (default build/...so)
#   GUARD_NGINX=path            the nginx binary (default /usr/sbin/nginx)
#   GUARD_SANITIZE=1            the module is a sanitizer build (make asan):
#                               nginx runs with the ASan and UBSan runtimes
#                               preloaded, reports go to dir/asan.PID and
#                               dir/ubsan.PID, and any report fails the test
#   GUARD_SANITIZE_REPORTS=dir  also copy every report there
#   GUARD_ERROR_LOG_LEVEL=lvl   level of the generated error_log (default
#                               info); errlog() and friends still see only
#                               the lines above debug, errlog(raw => 1) all
#
# Whatever the switches, a report of a sanitizer or a worker that "exited
# on signal" fails the test: in errlog_ok, or, if that did not see it,
# as an extra failing test when nginx stops (stop, DESTROY, END).

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA ();
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX ();
use Scalar::Util qw(blessed looks_like_number refaddr weaken);
use Test::More ();
use Time::HiRes qw(sleep time);

our @EXPORT    = qw(b64url b64url_decode json_enc forge_hs forge_raw
                   problem_ok $UUID7);
our @EXPORT_OK = (@EXPORT, 'wait_for');

# a UUIDv7 in text form (RFC 9562)
our $UUID7 = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

# the status of each reason code; the rest are 401
my %REASON_STATUS = (tenant_unaddressed => 400, tenant_missing => 403,
                     tenant_mismatch => 403, residency => 421,
                     rate_limited => 429, concurrency_limited => 429,
                     risk_deny => 403, sidecar_unavailable => 503,
                     circuit_open => 503,
                     guardrail_blocked => 403, guardrail_anomaly => 403,
                     guardrail_error => 403, body_too_large => 413,
                     body_malformed => 400,
                     internal_error => 500);

# <repo>/t/lib/Guard/Test.pm -> <repo>
my $REPO = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)),
                                       File::Spec->updir, File::Spec->updir,
                                       File::Spec->updir));
my $PYTHON = '/usr/bin/python3';

# Standard key set of t/tools/jwt_tool.py: kid -> [alg, key file suffix].
my %STD_KEYS = (
    (map { ($_ => [uc $_, '.pem']) } qw(rs256 rs384 rs512 ps256 ps384 ps512
                                        es256 es384 es512)),
    ed25519 => ['EdDSA', '.pem'],
    (map { ($_ => [uc $_, '.key']) } qw(hs256 hs384 hs512)),
);

my %LIVE;    # refaddr -> weakened object, for the END safety net

# ---------------------------------------------------------------------------
# construction

# new(%opts): load_module => 0 allows running without a built module;
# module / nginx override GUARD_MODULE / GUARD_NGINX.
sub new {
    my ($class, %opt) = @_;

    my $self = bless {
        module  => $opt{module} // $ENV{GUARD_MODULE}
                   // "$REPO/build/ngx_http_guard_module.so",
        nginx   => $opt{nginx} // $ENV{GUARD_NGINX} // '/usr/sbin/nginx',
        use_module => $opt{load_module} // 1,
        sanitize => $opt{sanitize} // $ENV{GUARD_SANITIZE},
        log_level => $ENV{GUARD_ERROR_LOG_LEVEL} || 'info',
        ports   => [],
        owner   => $$,
    }, $class;

    $self->{module} = File::Spec->rel2abs($self->{module});
    $self->_check_module if $self->{use_module};
    -x $self->{nginx} or croak "Guard::Test: nginx binary $self->{nginx} "
                              . "is not executable (set GUARD_NGINX)";

    $self->{dir} = tempdir('guard-test-XXXXXX', TMPDIR => 1,
                           CLEANUP => !$ENV{GUARD_TEST_KEEP});
    # workers run as nobody and must be able to traverse the directory
    chmod 0755, $self->{dir} or croak "chmod $self->{dir}: $!";
    Test::More::diag("Guard::Test: keeping $self->{dir}")
        if $ENV{GUARD_TEST_KEEP};

    $LIVE{refaddr $self} = $self;
    weaken $LIVE{refaddr $self};
    return $self;
}

sub _check_module {
    my ($self) = @_;
    -f $self->{module}
        or die "Guard::Test: module $self->{module} does not exist; "
             . "build it first (make module) or set GUARD_MODULE\n";
}

sub dir    { $_[0]{dir} }
sub python { $PYTHON }
sub repo   { $REPO }

# port($n): n-th free loopback port, picked on first use and then stable.
sub port {
    my ($self, $n) = @_;
    $n //= 0;
    return $self->{ports}[$n] if defined $self->{ports}[$n];

    my %taken = map { defined $_ ? ($_ => 1) : () } @{ $self->{ports} };
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                      Proto => 'tcp', Listen => 1)
            or croak "Guard::Test: cannot bind a free port: $!";
        my $p = $s->sockport;
        close $s;
        next if $taken{$p};
        return $self->{ports}[$n] = $p;
    }
    croak "Guard::Test: no free port found";
}

# subst($s): %%PORT_<n>%% -> port(n), %%DIR%% -> dir,
# %%KEYS%% -> jwt_keys() (generates the standard key set on first use).
sub subst {
    my ($self, $s) = @_;
    return $s unless defined $s;
    $s =~ s/%%PORT_(\d+)%%/$self->port($1)/ge;
    $s =~ s/%%DIR%%/$self->{dir}/g;
    $s =~ s/%%KEYS%%/$self->jwt_keys/ge;
    return $s;
}

# write_file($name, $content): relative to dir, subdirs created; no subst.
sub write_file {
    my ($self, $name, $content) = @_;
    my $path = File::Spec->file_name_is_absolute($name)
             ? $name : File::Spec->catfile($self->{dir}, $name);
    make_path(dirname($path));
    open my $fh, '>:raw', $path or croak "write $path: $!";
    print $fh $content // '';
    close $fh or croak "close $path: $!";
    return $path;
}

sub read_file {
    my ($self, $name) = @_;
    my $path = File::Spec->file_name_is_absolute($name)
             ? $name : File::Spec->catfile($self->{dir}, $name);
    open my $fh, '<:raw', $path or return undef;
    local $/;
    return scalar <$fh>;
}

# write_conf(http => ..., main => ..., events => ..., workers => N,
#            load_module => 0|1): writes dir/nginx.conf after subst().
sub write_conf {
    my ($self, %opt) = @_;
    my $d = $self->{dir};
    my $load = $opt{load_module} // $self->{use_module};
    $self->_check_module if $load;

    my $conf = '';
    $conf .= "load_module $self->{module};\n" if $load;
    $conf .= "worker_processes " . ($opt{workers} // 1) . ";\n"
          .  "pid $d/nginx.pid;\n"
          .  "error_log $d/error.log $self->{log_level};\n"
          .  ($opt{main} // '') . "\n"
          .  "events {\n    worker_connections 1024;\n"
          .  ($opt{events} // '') . "\n}\n"
          .  "http {\n"
          .  "    access_log $d/access.log;\n"
          .  "    client_body_temp_path $d/client_body_temp;\n"
          .  "    proxy_temp_path $d/proxy_temp;\n"
          .  "    fastcgi_temp_path $d/fastcgi_temp;\n"
          .  "    uwsgi_temp_path $d/uwsgi_temp;\n"
          .  "    scgi_temp_path $d/scgi_temp;\n"
          .  ($opt{http} // '') . "\n}\n";

    return $self->write_file('nginx.conf', $self->subst($conf));
}

# ---------------------------------------------------------------------------
# process control

sub _nginx_args {
    my ($self, $errlog) = @_;
    my $d = $self->{dir};
    return ('-p', "$d/", '-c', "$d/nginx.conf", '-e', $errlog // "$d/error.log");
}

# Run nginx with @args, stdout+stderr into $out; returns (exit code, output).
sub _exec_nginx {
    my ($self, $out, @args) = @_;
    my %env = $self->_sanitizer_env;
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        @ENV{keys %env} = values %env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        exec { $self->{nginx} } $self->{nginx}, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($rc, $self->read_file($out) // '');
}

# The environment nginx (and nothing else the tests run) gets under
# GUARD_SANITIZE: the runtimes the module was linked with, preloaded into
# the stock nginx, and options that make the first ASan report kill the
# process (abort: "exited on signal 6" in error.log) and leave a file,
# dir/asan.PID.  No leak checks: nginx does not free its pools at exit.
# GCC's UBSan reads its options lazily, at the first report, from
# /proc/self/environ, which nginx has overwritten with the process title
# by then; ubsan_init.so (t/tools/ubsan_init.c, built by make asan next
# to the module) makes it read them at start, with the help of a
# suppressions file.  Its reports go to stderr whatever log_path says,
# and a worker's stderr is error.log ("runtime error: ..." and the
# stack); sanitizer_reports finds them there.  Without ubsan_init.so a
# UBSan report has no stack and the worker exits with code 1.
sub _sanitizer_env {
    my ($self) = @_;
    return () unless $self->{sanitize} && -f $self->{module};
    my $d = $self->{dir};
    my $libs = $self->{san_libs} //= do {
        my $ldd = `ldd '$self->{module}' 2>/dev/null`;
        my @l = map { $ldd =~ m{\b\Q$_\E\S*\s+=>\s+(/\S+)} ? $1 : () }
                qw(libasan.so libubsan.so);
        croak "Guard::Test: GUARD_SANITIZE set, but $self->{module} is "
            . "not linked with libasan (build it with make asan)"
            unless @l && $l[0] =~ /libasan/;
        my $init = File::Spec->catfile(dirname($self->{module}),
                                       'ubsan_init.so');
        push @l, $init if @l == 2 && -f $init;
        join ':', @l;
    };
    my $common = 'halt_on_error=1:abort_on_error=1:disable_coredump=1'
               . ':print_stacktrace=1';
    my $supp = $self->write_file('ubsan.supp',
                                 "signed-integer-overflow:guard-ubsan-init\n");
    return (
        LD_PRELOAD   => $libs,
        ASAN_OPTIONS => "$common:detect_leaks=0:log_path=$d/asan",
        UBSAN_OPTIONS => "$common:suppressions=$supp",
    );
}

# sanitizer_reports: the reports of this object's nginx so far, as
# [file name, text] pairs: ASan's report files, and each report found in
# nginx's logs and captured output (UBSan writes to stderr whatever its
# log_path, and a worker's stderr is error.log), a line saying that a
# process "exited on signal" included.
sub sanitizer_reports {
    my ($self) = @_;
    my $d = $self->{dir} // return ();
    my @r;
    opendir my $dh, $d or return ();
    for my $f (sort grep { /^(?:asan|ubsan)\.\d+$/ } readdir $dh) {
        push @r, [$f, $self->read_file($f) // ''];
    }
    for my $f (qw(error.log nginx.stderr nginx-t.out test_conf.log)) {
        open my $fh, '<:raw', "$d/$f" or next;
        my $cur;
        while (my $l = <$fh>) {
            if ($l =~ /runtime error:|ERROR: \w+Sanitizer|exited on signal/) {
                push @r, $cur = [$f, $l];
            } elsif ($cur && $l =~ /^\s+#\d+ /) {
                $cur->[1] .= $l;      # the stack trace of a UBSan report
            } else {
                undef $cur;
            }
        }
    }
    return @r;
}

# _unreported_reports: sanitizer_reports not yet turned into a failure;
# marks them reported, and copies them to GUARD_SANITIZE_REPORTS.
sub _unreported_reports {
    my ($self) = @_;
    my @new;
    for my $r ($self->sanitizer_reports) {
        my $key = "$r->[0]\0$r->[1]";
        next if $self->{reported}{$key}++;
        next if $self->_allowed($r->[1]);
        push @new, $r;
        my $to = $ENV{GUARD_SANITIZE_REPORTS} or next;
        (my $test = File::Basename::basename($0)) =~ s/\.t$//;
        (my $tag = File::Basename::basename($self->{dir})) =~ s/^guard-test-//;
        make_path($to);
        open my $fh, '>>:raw', "$to/$test.$tag.$r->[0]" or next;
        print $fh $r->[1];
        close $fh;
    }
    return @new;
}

# the first 5 reports, each cut to 60 lines
sub _report_text {
    my ($self, @r) = @_;
    my $rest = @r > 5 ? "... and " . (@r - 5) . " more reports\n" : '';
    splice @r, 5 if @r > 5;
    return join('', map {
        my @l = split /\n/, $_->[1];
        my $more = @l > 60 ? "\n... (" . (@l - 60) . " more lines)" : '';
        "--- $self->{dir}/$_->[0]\n" . join("\n", @l[0 .. ($#l < 59 ? $#l : 59)])
        . "$more\n";
    } @r) . $rest;
}

# _fail_on_reports($when): one failing test for reports nobody saw yet;
# true if there were any.
sub _fail_on_reports {
    my ($self, $when) = @_;
    my @r = $self->_unreported_reports or return 0;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::ok(0, "no sanitizer report and no crashed process ($when)");
    Test::More::diag($self->_report_text(@r));
    return 1;
}

# Ports of "listen [127.0.0.1:|localhost:|*:]NNNN" lines in nginx.conf.
sub _listen_ports {
    my ($self) = @_;
    my $conf = $self->read_file('nginx.conf') // '';
    $conf =~ s/#[^\n]*//g;
    my %p = map { $_ => 1 } $conf =~
        /\blisten\s+(?:(?:127\.0\.0\.1|localhost|\*|0\.0\.0\.0):)?(\d+)\b/g;
    return sort { $a <=> $b } keys %p;
}

# worker_processes N of nginx.conf (1 if absent or "auto").
sub _conf_workers {
    my ($self) = @_;
    my $conf = $self->read_file('nginx.conf') // '';
    return $conf =~ /^\s*worker_processes\s+(\d+)\s*;/m ? $1 : 1;
}

sub _port_open {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

# wait_for($secs, $cond): polls $cond every 50 ms until it returns true or
# $secs passed; returns its last value.
sub wait_for {
    my ($secs, $cond) = @_;
    my $end = time + $secs;
    while (1) {
        my $r = $cond->();
        return $r if $r || time >= $end;
        sleep 0.05;
    }
}

# run: start nginx (daemon), wait for the pid file and all listen ports;
# dies if it fails to start, or if a process crashed or hit a sanitizer
# while starting.
sub run {
    my ($self) = @_;
    croak "Guard::Test: nginx already running (pid $self->{pid})"
        if $self->{pid} && _alive($self->{pid});
    my $d = $self->{dir};
    -f "$d/nginx.conf" or croak "Guard::Test: write_conf before run";
    unlink "$d/nginx.pid";

    my ($rc, $out) = $self->_exec_nginx("$d/nginx.stderr", $self->_nginx_args);
    my $fail = sub {
        my ($why) = @_;
        $self->stop if $self->{pid};
        my @log = split /^/, $self->errlog;
        splice @log, 0, @log - 40 if @log > 40;
        die "Guard::Test: nginx failed to start: $why\n"
          . "--- nginx stderr ---\n$out"
          . "--- error.log (the last 40 lines) ---\n" . join('', @log) . "---\n";
    };
    $fail->("exit code $rc") if $rc;

    my $pid = wait_for(5, sub {
        my $p = $self->read_file('nginx.pid');
        return $p && $p =~ /^(\d+)/ && _alive($1) ? $1 : 0;
    }) or $fail->("no live pid in $d/nginx.pid");
    $self->{pid} = $pid;

    my $nw = $self->_conf_workers;
    wait_for(5, sub { $self->worker_pids >= $nw })
        or $fail->("expected $nw worker(s), found " . $self->worker_pids);
    for my $port ($self->_listen_ports) {
        wait_for(5, sub { _port_open($port) })
            or $fail->("port $port does not accept connections");
    }
    # a process that crashed or hit a sanitizer while starting: fail now,
    # rather than let every request of the test time out
    if (my @r = $self->_unreported_reports) {
        $fail->("sanitizer report or crash while starting\n"
                . $self->_report_text(@r));
    }
    return $self;
}

# test_conf: nginx -t; returns (exit code, stdout+stderr).  Uses its own
# log file (test_conf.log) so a deliberately broken config does not leave
# [emerg] lines in error.log.
sub test_conf {
    my ($self) = @_;
    my $d = $self->{dir};
    return $self->_exec_nginx("$d/nginx-t.out", '-t',
                              $self->_nginx_args("$d/test_conf.log"));
}

# pid_alive($pid): process exists and is not a zombie (a daemonized
# master is reaped by init, which may take a moment).
sub pid_alive { _strip_self(\@_); _alive($_[0]) }

sub _alive {
    my ($pid) = @_;
    return 0 unless $pid && kill 0, $pid;
    my $stat = _proc_stat($pid) or return 0;
    return $stat->{state} ne 'Z';
}

sub _proc_stat {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my $s = <$fh> // return undef;
    # "pid (comm) state ppid ..."; comm may contain spaces and parens
    my $rest = substr $s, rindex($s, ')') + 2;
    my ($state, $ppid) = split ' ', $rest;
    return { state => $state, ppid => $ppid };
}

sub pid { $_[0]{pid} }

# worker_pids: live children of the master (workers, cache processes).
sub worker_pids {
    my ($self) = @_;
    my $master = $self->{pid} // 0;
    my @w;
    opendir my $dh, "/proc" or croak "opendir /proc: $!";
    for my $pid ($master ? grep { /^\d+$/ } readdir $dh : ()) {
        my $st = _proc_stat($pid) or next;
        push @w, $pid if $st->{ppid} == $master && $st->{state} ne 'Z';
    }
    @w = sort { $a <=> $b } @w;
    return @w;    # count in scalar context
}

# reload: HUP; true once all old workers are gone and the new ones exist
# (and all listen ports of the current nginx.conf accept connections);
# false if an [emerg] shows up in error.log or on timeout, and false with
# a failing test if a process crashed or hit a sanitizer.
sub reload {
    my ($self) = @_;
    my $master = $self->{pid};
    croak "Guard::Test: nginx is not running" unless $master && _alive($master);

    my %old = map { $_ => 1 } $self->worker_pids;
    my $nw = $self->_conf_workers;
    my $mark = (-s "$self->{dir}/error.log") || 0;
    kill 'HUP', $master or croak "kill HUP $master: $!";

    my $r = wait_for(10, sub {
        my $log = $self->_errlog_from($mark);
        return 'emerg' if $log =~ /\[emerg\]/;
        my @new = grep { !$old{$_} } $self->worker_pids;
        return @new >= $nw && !grep({ _alive($_) } keys %old) ? 'ok' : 0;
    });
    return 0 unless $r && $r eq 'ok';

    for my $port ($self->_listen_ports) {
        wait_for(5, sub { _port_open($port) }) or return 0;
    }
    # new workers that crashed or hit a sanitizer: a failing test, and
    # the reload failed
    return 0 if $self->_fail_on_reports('after a reload');
    return 1;
}

# stop: QUIT, then TERM, then KILL (master and its workers); waits for exit.
sub stop {
    my ($self) = @_;
    my $master = delete $self->{pid} or return 1;
    return 1 unless _alive($master);
    my @workers = do { local $self->{pid} = $master; $self->worker_pids };

    for my $sig (qw(QUIT TERM KILL)) {
        kill $sig, $master;
        kill 'KILL', @workers if $sig eq 'KILL' && @workers;
        my $secs = $sig eq 'QUIT' ? 10 : 3;
        if (wait_for($secs, sub { !_alive($master) })) {
            # workers exit before the master; make sure of it anyway
            wait_for(3, sub { !grep { _alive($_) } @workers });
            kill 'KILL', grep { _alive($_) } @workers;
            $self->_fail_on_reports('when nginx stopped');
            return 1;
        }
    }
    $self->_fail_on_reports('when nginx stopped');
    return 0;
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    return unless $self->{owner} && $self->{owner} == $$;
    $self->stop if $self->{pid};
    # also reports of nginx -t runs; END has checked what lives to the end
    $self->_fail_on_reports('when the test object went away')
        unless ${^GLOBAL_PHASE} eq 'DESTRUCT';
    delete $LIVE{refaddr $self};
}

# runs before Test::Builder's own END (Test::More was loaded first), so
# that a failure added here still decides the exit status
END {
    local ($?, $!);
    for my $t (grep { defined } values %LIVE) {
        next unless $t->{owner} == $$;
        $t->stop if $t->{pid};
        $t->_fail_on_reports('at exit');
    }
}

# Turn INT/TERM into die so the END block still stops nginx.
for my $sig (qw(INT TERM)) {
    $SIG{$sig} = sub { die "Guard::Test: caught SIG$sig\n" }
        unless defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT';
}

# ---------------------------------------------------------------------------
# error log

# errlog(since_mark => 0|1, raw => 0|1): error.log; without raw, the
# [debug] lines that GUARD_ERROR_LOG_LEVEL=debug adds are left out, so
# that tests see what they would see at the default level.
sub errlog {
    my ($self, %opt) = @_;
    return $self->_errlog_from($opt{since_mark} ? $self->{mark} // 0 : 0,
                               $opt{raw});
}

sub _errlog_from {
    my ($self, $off, $raw) = @_;
    open my $fh, '<:raw', "$self->{dir}/error.log" or return '';
    seek $fh, $off, 0 if $off;
    local $/;
    my $log = scalar(<$fh>) // '';
    # a debug entry goes with the lines it spans (nginx logs a request's
    # headers on several); a sanitizer's lines are never taken with it
    $log =~ s{^[^\n]*? \[debug\] [^\n]*(?:\n|\z)
              (?:(?!\d{4}/\d\d/\d\d\ |==|[^\n]*runtime\ error)[^\n]*(?:\n|\z))*}{}mgx
        if !$raw && $self->{log_level} =~ /^debug/;
    return $log;
}

# errlog_mark: later errlog/errlog_ok/errlog_like(since_mark => 1) only
# look at what was logged after this point.
sub errlog_mark {
    my ($self) = @_;
    $self->{mark} = (-s "$self->{dir}/error.log") || 0;
    return $self->{mark};
}

# errlog_ok($name, since_mark => 0|1): no [alert] / [emerg] lines, and
# no sanitizer report or crashed process (since the start, whatever the
# mark) that an earlier check did not already fail on.
sub errlog_ok {
    my ($self, $name, %opt) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @bad = grep { /\[(?:alert|emerg)\]/ && !$self->_allowed($_) }
              split /\n/, $self->errlog(%opt);
    my @rep = $self->_unreported_reports;
    my $ok = Test::More::ok(!@bad && !@rep,
                            $name // 'error.log has no alert/emerg');
    Test::More::diag(join "\n", @bad) if @bad;
    Test::More::diag($self->_report_text(@rep)) if @rep;
    return $ok;
}

# allow_signal_exit($pid, $signo): the test kills process $pid with
# signal $signo on purpose (t/66-bulkhead.t: kill -9 of a worker).  The
# master's "[alert] ... worker process $pid exited on signal $signo" is
# then expected: neither errlog_ok nor the crash check fails on that line;
# any other alert or crash still fails.
sub allow_signal_exit {
    my ($self, $pid, $signo) = @_;
    push @{ $self->{allowed} },
        qr/\bprocess $pid exited on signal $signo\b(?! \(core dumped\))/;
}

sub _allowed {
    my ($self, $text) = @_;
    return scalar grep { $text =~ $_ } @{ $self->{allowed} // [] };
}

# errlog_like(qr//, $name, since_mark => 0|1)
sub errlog_like {
    my ($self, $re, $name, %opt) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::like($self->errlog(%opt), $re, $name);
}

sub errlog_unlike {
    my ($self, $re, $name, %opt) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::unlike($self->errlog(%opt), $re, $name);
}

# ---------------------------------------------------------------------------
# HTTP client

# http($method, $path, headers => [..] | {..}, body => $s, host => $h,
#      port => $p, timeout => $secs, proto => 'HTTP/1.1')
sub http {
    my ($self, $method, $path, %opt) = @_;
    my $proto = $opt{proto} // 'HTTP/1.1';
    my @h = ref $opt{headers} eq 'HASH'
          ? map { ($_ => $opt{headers}{$_}) } sort keys %{ $opt{headers} }
          : @{ $opt{headers} // [] };

    my $req = "$method $path $proto\r\n";
    $req .= "Host: " . ($opt{host} // 'localhost') . "\r\n"
        unless defined $opt{host} && $opt{host} eq '';   # host => '' omits
    while (my ($k, $v) = splice @h, 0, 2) {
        $req .= "$k: $v\r\n";
    }
    $req .= "Content-Length: " . length($opt{body}) . "\r\n"
        if defined $opt{body};
    $req .= "Connection: close\r\n\r\n";
    $req .= $opt{body} if defined $opt{body};

    return $self->raw_request($req, %opt, head => $method eq 'HEAD');
}

sub get  { my ($self, $path, %opt) = @_; $self->http('GET',  $path, %opt) }
sub post { my ($self, $path, %opt) = @_; $self->http('POST', $path, %opt) }

# raw_request($bytes, port => .., timeout => .., head => 0|1): send bytes
# verbatim, read until EOF and parse the response.
sub raw_request {
    my ($self, $req, %opt) = @_;
    my $timeout = $opt{timeout} // 10;
    my $port = $opt{port} // $self->port(0);

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $timeout)
        or return { status => undef, error => "connect 127.0.0.1:$port: $@" };
    $s->autoflush(1);
    binmode $s;

    my ($raw, $err) = ('', undef);
    local $SIG{PIPE} = 'IGNORE';
    my $end = time + $timeout;
    my $sel = IO::Select->new($s);

    my $off = 0;
    while ($off < length $req) {   # write, but keep an eye on the deadline
        unless ($sel->can_write($end - time)) { $err = 'write timeout'; last }
        my $n = syswrite $s, $req, 65536, $off;
        unless (defined $n) { $err = "write: $!"; last }
        $off += $n;
    }
    while (1) {                    # read until EOF (the server may answer
        my $left = $end - time;    # early, so read even after a write error)
        if ($left <= 0 || !$sel->can_read($left)) { $err //= 'read timeout'; last }
        my $n = sysread $s, my $buf, 65536;
        if (!defined $n) { $err //= "read: $!"; last }
        last if $n == 0;
        $raw .= $buf;
    }
    close $s;

    my $r = parse_response($raw, head => $opt{head});
    $r->{error} = $err if defined $err;

    # no answer because a worker crashed or hit a sanitizer (say, in a
    # crash loop that began after run returned): stop the test here
    if (!defined $r->{status} && $self->{pid}
        and my @rep = $self->_unreported_reports)
    {
        die "Guard::Test: no response, and a process crashed or hit a "
          . "sanitizer\n" . $self->_report_text(@rep);
    }
    return $r;
}

# parse_response($raw, head => 0|1): status, headers, body (de-chunked).
sub parse_response {
    _strip_self(\@_);
    my ($raw, %opt) = @_;
    my $r = { status => undef, headers => {}, raw_headers => [],
              body => '', raw => $raw };
    my $rest = $raw;
    my $head;
    while (1) {
        ($head, $rest) = split /\r?\n\r?\n/, $rest, 2;
        return $r unless defined $head && $head =~ m{^HTTP/\d\.\d (\d{3})};
        $r->{status} = $1;
        last unless $1 =~ /^1/ && defined $rest;    # skip 1xx responses
    }
    my ($status_line, @lines) = split /\r?\n/, $head;
    $r->{status_line} = $status_line;
    for (@lines) {
        my ($k, $v) = /^([^:]+):[ \t]*(.*?)\s*$/ or next;
        push @{ $r->{raw_headers} }, [$k, $v];
        my $lk = lc $k;
        $r->{headers}{$lk} = exists $r->{headers}{$lk}
                           ? "$r->{headers}{$lk}, $v" : $v;
    }
    $rest //= '';
    return $r if $opt{head} || $r->{status} =~ /^(?:204|304)$/;

    if (($r->{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        my $body = '';
        while ($rest =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $len = hex $1;
            if ($len == 0) { $r->{complete} = 1; last }
            $body .= substr $rest, 0, $len, '';
            $rest =~ s/^\r\n//;
        }
        $r->{body} = $body;
    } elsif (defined $r->{headers}{'content-length'}) {
        $r->{body} = substr $rest, 0, $r->{headers}{'content-length'};
    } else {
        $r->{body} = $rest;
    }
    return $r;
}

# ---------------------------------------------------------------------------
# JWT helpers

sub jwt_tool { "$REPO/t/tools/jwt_tool.py" }

# jwt_keys: standard key set in dir/keys (generated once), returns the path.
sub jwt_keys {
    my ($self) = @_;
    return $self->{keys} if $self->{keys};
    my $kd = "$self->{dir}/keys";
    $self->_python_io(undef, $self->jwt_tool, 'keys', $kd);
    return $self->{keys} = $kd;
}

# jwt_gen(kty => .., kid => .., alg => .., bits/crv/size => ..,
#         dir => ...): one extra key via `jwt_tool.py gen`; returns the
# public JWK as a hashref (files land in dir, default dir/keys).
sub jwt_gen {
    my ($self, %o) = @_;
    my $kd = $o{dir} // "$self->{dir}/keys";
    my @args = map { defined $o{$_} ? ("--$_", $o{$_}) : () }
               qw(kty kid alg bits crv size);
    my $out = $self->_python_io(undef, $self->jwt_tool, 'gen', @args, $kd);
    return JSON::PP->new->decode($out);
}

# mint(@specs): spec = { kid, alg, key, claims, header, no_kid }.
# alg and key default from the standard key set when kid is one of its
# kids.  Returns the tokens (list) or the first token (scalar context).
sub mint {
    my ($self, @specs) = @_;
    my $json = JSON::PP->new->canonical;
    my $in = '';
    for my $s (@specs) {
        my %s = %$s;
        if (defined $s{kid} && $STD_KEYS{$s{kid}}) {
            $s{alg} //= $STD_KEYS{$s{kid}}[0];
            $s{key} //= $self->jwt_keys . "/$s{kid}$STD_KEYS{$s{kid}}[1]"
                unless ($s{alg} // '') eq 'none';
        }
        croak "Guard::Test::mint: spec without alg" unless defined $s{alg};
        $s{claims} = _numify($s{claims} // {});
        $s{header} = _numify($s{header}) if $s{header};
        $s{no_kid} = $s{no_kid} ? JSON::PP::true : JSON::PP::false;
        $in .= $json->encode(\%s) . "\n";
    }
    my @tok = split /\n/, $self->_python_io($in, $self->jwt_tool, 'mint');
    croak "Guard::Test::mint: expected " . @specs . " tokens, got " . @tok
        unless @tok == @specs;
    return wantarray ? @tok : $tok[0];
}

# Run /usr/bin/python3 @args with $in on stdin; die on failure; stdout.
sub _python_io {
    my ($self, $in, @args) = @_;
    my $d = $self->{dir};
    my $inf = $self->write_file('.py.in', $in // '');
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        open STDIN,  '<', $inf;
        open STDOUT, '>', "$d/.py.out";
        open STDERR, '>', "$d/.py.err";
        exec { $PYTHON } $PYTHON, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my ($out, $err) = map { $self->read_file($_) // '' } '.py.out', '.py.err';
    die "Guard::Test: python @args[0 .. ($#args < 1 ? $#args : 1)] failed "
      . "(status $?): $err" if $?;
    return $out;
}

# Deep copy; scalars that were used as numbers (IOK/NOK flag set, e.g.
# time()+3600 later interpolated into a string) are encoded as numbers.
sub _numify {
    my ($v) = @_;
    if (ref $v eq 'HASH')  { return { map { ($_ => _numify($v->{$_})) } keys %$v } }
    if (ref $v eq 'ARRAY') { return [ map { _numify($_) } @$v ] }
    return $v if ref $v || !defined $v;
    require B;
    my $f = B::svref_2object(\$v)->FLAGS;
    if ($f & (B::SVp_IOK() | B::SVp_NOK()) && looks_like_number($v)
        && "$v" eq (0 + $v) . '') {
        return 0 + $v;
    }
    return $v;
}

# ---------------------------------------------------------------------------
# pure-perl token helpers (exported; also callable as methods)

sub _is_self { my $x = shift; blessed($x) && $x->isa(__PACKAGE__) }

# Drop the invocant when called as $t->f(...) or Guard::Test->f(...).
sub _strip_self {
    my ($args) = @_;
    shift @$args if @$args > 1 && defined $args->[0]
        && (_is_self($args->[0]) || $args->[0] eq __PACKAGE__);
}

sub b64url {
    _strip_self(\@_);
    my $s = encode_base64($_[0] // '', '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub b64url_decode {
    _strip_self(\@_);
    my $s = $_[0] // '';
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return decode_base64($s);
}

sub json_enc {
    _strip_self(\@_);
    return JSON::PP->new->canonical->encode(_numify($_[0]));
}

# forge_raw($header_json, $payload_json, $sig_bytes): compact JWS from
# exact JSON texts (hashrefs are encoded with json_enc); sig may be undef.
sub forge_raw {
    _strip_self(\@_);
    my ($h, $p, $sig) = @_;
    $h = json_enc($h) if ref $h;
    $p = json_enc($p) if ref $p;
    return join '.', b64url($h), b64url($p), b64url($sig // '');
}

# forge_hs($header, $payload, $secret, $bits = 256): HMAC-SHA-signed JWS
# with whatever header the test wants (alg confusion, crit, ...).
sub forge_hs {
    _strip_self(\@_);
    my ($h, $p, $secret, $bits) = @_;
    $bits //= 256;
    croak "forge_hs: bits must be 256, 384 or 512" unless $bits =~ /^(256|384|512)$/;
    $h = json_enc($h) if ref $h;
    $p = json_enc($p) if ref $p;
    my $input = b64url($h) . '.' . b64url($p);
    my $mac = Digest::SHA->can("hmac_sha$bits")->($input, $secret);
    return "$input." . b64url($mac);
}

# problem_ok($response, $reason, $name, token => $tok): one subtest that
# checks a whole refusal: the status for the reason, problem+json with
# type/title/status/detail/reason/decision_id, Cache-Control: no-store, the
# Guard-Decision-Id header (a UUIDv7, equal to decision_id), the
# WWW-Authenticate header a 401 needs (and none otherwise), and, given the
# token, that neither it, nor any 20-character piece of its signature, nor
# its kid is echoed.  Returns the decision id.
sub problem_ok {
    my ($r, $reason, $name, %o) = @_;
    my $status = $REASON_STATUS{$reason} // 401;
    my $id = $r->{headers}{'guard-decision-id'};
    local $Test::Builder::Level = $Test::Builder::Level + 1;

    Test::More::subtest($name => sub {
        Test::More::is($r->{status}, $status, "status $status")
            or Test::More::diag("got: " . ($r->{status} // 'none')
                                . " " . ($r->{body} // ''));
        Test::More::like($r->{headers}{'content-type'} // '',
            qr{^application/problem\+json\s*$}, 'application/problem+json');
        Test::More::is($r->{headers}{'cache-control'}, 'no-store',
                       'Cache-Control: no-store');
        my $doc = eval { JSON::PP->new->decode($r->{body}) };
        Test::More::ok(ref $doc eq 'HASH', 'body is a JSON object')
            or Test::More::diag($r->{body});
        $doc = {} unless ref $doc eq 'HASH';
        (my $urn = "urn:guard:$reason") =~ tr/_/-/;
        Test::More::is($doc->{type}, $urn, "type $urn");
        Test::More::is($doc->{status}, $status, 'status member');
        Test::More::like($r->{body} // '', qr/"status":\s*$status\b/,
                         'status is a JSON number');
        Test::More::is($doc->{reason}, $reason, "reason $reason");
        Test::More::ok(length($doc->{title} // '')
                       && length($doc->{detail} // ''), 'title and detail');
        Test::More::like($id // '', $UUID7, 'Guard-Decision-Id is a UUIDv7');
        Test::More::is($doc->{decision_id}, $id,
                       'decision_id equals Guard-Decision-Id');

        my $wa = $r->{headers}{'www-authenticate'};
        if ($status != 401) {
            Test::More::ok(!defined $wa, 'no WWW-Authenticate');
        } elsif ($reason eq 'token_missing') {
            Test::More::is($wa, 'Bearer realm="guard"',
                           'WWW-Authenticate exactly Bearer realm="guard"');
        } else {
            my $error = $reason eq 'risk_step_up'
                        ? 'insufficient_user_authentication' : 'invalid_token';
            Test::More::like($wa // '',
                qr/^Bearer realm="guard", error="$error", error_description="[^"]+"$/,
                "WWW-Authenticate with error=\"$error\"");
        }

        return unless defined $o{token} && length $o{token};

        # the decision id is hex: drop it, so that a short token such as
        # "abc" cannot match it by chance
        my $seen = ($r->{body} // '') . "\n" . ($wa // '');
        $seen =~ s/\Q$id\E//g if defined $id;
        my $tok = $o{token};
        Test::More::ok(index($seen, $tok) < 0, 'token not echoed');
        my @seg = split /\./, $tok, -1;
        my $sig = @seg >= 3 ? $seg[2] : '';
        my @hit = grep { index($seen, substr($sig, $_, 20)) >= 0 }
                  0 .. length($sig) - 20;
        Test::More::ok(!@hit, 'no 20-character piece of the signature echoed');
        my $h = eval { JSON::PP->new->decode(b64url_decode($seg[0])) };
        if (ref $h eq 'HASH' && defined $h->{kid} && !ref $h->{kid}
            && length $h->{kid} >= 3)
        {
            Test::More::ok(index($seen, $h->{kid}) < 0,
                           "kid \"$h->{kid}\" not echoed");
        }
    });

    return $id;
}

1;
