#!/usr/bin/perl

# Every command shown in README.md and docs/*.md is run, or checked where
# it is run.
#
# The blocks: every fenced ```sh, ```bash or ```shell block (commands
# only: a prompt "$ " in one is an error), and every ```console block,
# whose "$ " lines are the commands and the rest their output (not run,
# not compared: the docs' ids, counts and times are examples).  A command
# is a line with its continuation lines joined: a trailing backslash, or
# an open single quote; lines that are only a comment are not commands.
#
# A block preceded (blank lines allowed) by an HTML comment:
#   <!-- run by t/NN-name.t -->  is run by that test: the file must
#                                exist and contain each command verbatim;
#   <!-- make -n -->             is make commands that cannot run inside
#                                the suite (make run, make test: the suite
#                                itself; make: a nested build): each runs
#                                as `make -n ...` in the repository, which
#                                proves that the target exists and its
#                                recipe expands, and nothing more
#                                (t/91-demo.t runs what `make run` runs).
# Every other block is run here, its commands in order by one bash with
# pipefail (so that export and cd carry over, and a pipe fails when any of
# its commands does; each command is checked), in this setup:
#  - PATH starts with the built guardctl and guardd (policy-engine/build/
#    release/, what `make` builds, else policy-engine/build/), then
#    /usr/bin (Debian's python3, with python3-jsonschema);
#  - the installed paths the docs use are a temporary root's: /etc/guard,
#    /var/lib/guard, /run/guard and /var/spool/guard are rewritten to
#    ROOT/etc/guard, ... (ROOT/etc/guard holds guardd.conf, policies/ (the
#    examples) and private/jwks.json (an HS256 key, kid hs-2024)); the
#    docs' gateway https://gw/ is the nginx this test starts;
#  - GUARD_JOURNAL_DIR and GUARD_SOCKET name ROOT's journal and socket;
#  - the working directory is the repository (README.md, policies.md,
#    directives.md) or an empty directory (the others);
#  - docs/soc.md's commands run against a guardd this test started, whose
#    journal holds the records the page shows (by their ids), and an nginx
#    with the module that accepts tokens of ROOT/etc/guard/private/jwks.json.
# Each command must exit 0; one whose comment says it runs "in the
# foreground" (a daemon) must still run after a second, and exit 0 on
# SIGTERM.  A failure names the file, the line and the command.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Guard::Test;
use Guard::Frames qw(:DEFAULT slurp write_text wait_for);
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use IO::Socket::UNIX;
use JSON::PP ();
use MIME::Base64 qw(encode_base64url);
use POSIX qw(WNOHANG);
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(sleep time);
use Cwd qw(abs_path);

my $repo = abs_path("$FindBin::Bin/..");
my $bin = -x "$repo/policy-engine/build/release/guardctl"
          && -x "$repo/policy-engine/build/release/guardd"
        ? "$repo/policy-engine/build/release" : "$repo/policy-engine/build";
-x "$bin/guardctl" && -x "$bin/guardd"
    or BAIL_OUT("no guardctl and guardd: make (or make -C policy-engine)");

my $json = JSON::PP->new->canonical;
my $tmp = tempdir('guard-docs-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
chmod 0755, $tmp;
my $root = "$tmp/root";
my $work = "$tmp/work";
make_path("$root/etc/guard/private", "$root/var/lib/guard/journal",
          "$root/run/guard", "$root/var/spool/guard", $work);

# --- the blocks --------------------------------------------------------------

# blocks($file): each shell or console block: { file, line, kind, mark,
# cmds => [[line, command], ...] }
sub blocks {
    my ($file) = @_;
    open my $f, '<', "$repo/$file" or die "$file: $!";
    my @lines = <$f>;
    chomp @lines;
    my (@blocks, $mark);
    for (my $i = 0; $i < @lines; $i++) {
        my $l = $lines[$i];
        if ($l =~ /^<!--\s*(.*?)\s*-->\s*$/) {
            $mark = $1;
            next;
        }
        # a fence, maybe indented (in a list item): so is its body
        if ($l =~ /^(\s*)```\s*(\S*)/) {
            my ($indent, $info) = (length $1, $2);
            my $start = $i + 1;
            my @body;
            for ($i++; $i < @lines && $lines[$i] !~ /^\s*```\s*$/; $i++) {
                push @body, [$i + 1, $lines[$i] =~ s/^ {0,$indent}//r];
            }
            my $kind = $info =~ /^(?:sh|bash|shell)$/ ? 'sh'
                     : $info eq 'console' ? 'console' : undef;
            push @blocks, { file => $file, line => $start, kind => $kind,
                            mark => $mark, body => \@body } if $kind;
            undef $mark;
            next;
        }
        undef $mark if $l =~ /\S/;
    }
    $_->{cmds} = commands($_) for @blocks;
    return @blocks;
}

# an open single quote (outside double quotes) at the end of the text
sub open_quote {
    my ($s) = @_;
    my ($sq, $dq) = (0, 0);
    for my $c (split //, $s =~ s/\\.//gr) {
        if ($c eq "'" && !$dq) { $sq = !$sq }
        elsif ($c eq '"' && !$sq) { $dq = !$dq }
    }
    return $sq;
}

sub commands {
    my ($b) = @_;
    my (@cmds, $cur, $at, $bad);
    for my $pair (@{ $b->{body} }) {
        my ($n, $l) = @$pair;
        if (defined $cur) {             # a continuation
            if ($cur =~ s/\s*\\$//) {
                $cur .= ' ' . ($l =~ s/^\s+//r);
            } else {
                $cur .= "\n$l";
            }
        } elsif ($b->{kind} eq 'console') {
            next unless $l =~ s/^\$ //;
            ($cur, $at) = ($l, $n);
        } else {
            next if $l =~ /^\s*(?:#.*)?$/;
            push @{ $b->{prompts} }, $n if $l =~ /^\$ /;
            ($cur, $at) = ($l, $n);
        }
        next if $cur =~ /\\$/ || open_quote($cur);
        push @cmds, [$at, $cur];
        undef $cur;
    }
    push @cmds, [$at, $cur] if defined $cur;
    # a trailing comment is not part of the command
    for (@cmds) { $_->[1] =~ s/\s+#[^'"]*$// }
    return \@cmds;
}

my @docs = ('README.md', map { s{^\Q$repo\E/}{}r } sort glob "$repo/docs/*.md");
my @blocks = map { blocks($_) } @docs;
ok(@blocks > 10, scalar(@blocks) . ' shell and console blocks in '
   . scalar(@docs) . ' files');

for my $b (grep { $_->{prompts} } @blocks) {
    fail("$b->{file}:$b->{prompts}[0]: a \"\$ \" prompt in a ```sh block: "
         . "use ```console for a command with its output");
}

# --- blocks run by another test: that test holds each command ----------------

for my $b (grep { ($_->{mark} // '') =~ /^run by / } @blocks) {
    my ($t) = $b->{mark} =~ /^run by (t\/[\w.-]+\.t)$/;
    if (!$t) {
        fail("$b->{file}:$b->{line}: \"<!-- $b->{mark} -->\" names no t/NN-name.t");
        next;
    }
    my $text = slurp("$repo/$t");
    ok(length $text, "$b->{file}:$b->{line}: $t exists") or next;
    for my $c (@{ $b->{cmds} }) {
        ok(index($text, $c->[1]) >= 0,
           "$b->{file}:$c->[0]: $t holds the command: $c->[1]");
    }
}

# --- the environment ---------------------------------------------------------

my %rewrite = map { ($_ => "$root$_") }
    qw(/etc/guard /var/lib/guard /run/guard /var/spool/guard);
my $t;    # the nginx of docs/soc.md

sub rewrite {
    my ($cmd) = @_;
    $cmd =~ s{(?<![\w/.-])(/etc/guard|/var/lib/guard|/run/guard|/var/spool/guard)(?=[/\s'"]|$)}
             {$rewrite{$1}}g;
    $cmd =~ s{https://gw/}{'http://127.0.0.1:' . $t->port . '/'}ge if $t;
    return $cmd;
}

my %env = (
    PATH => "$bin:/usr/bin:/bin:$ENV{PATH}",
    GUARD_JOURNAL_DIR => "$root/var/lib/guard/journal",
    GUARD_SOCKET => "$root/run/guard/guardd.sock",
);

system('cp', '-r', "$repo/policies/examples", "$root/etc/guard/policies") == 0
    or die "cp: $?";
write_text("$root/etc/guard/guardd.conf", $json->encode({
    listen => "$root/run/guard/guardd.sock",
    pid_file => "$root/run/guard/guardd.pid",
    policies => "$root/etc/guard/policies",
    journal => { dir => "$root/var/lib/guard/journal" },
    node => 'guardd-docs', log => 'warn',
}));
my $hs = join '', map { chr(int rand 256) } 1 .. 32;
write_text("$root/etc/guard/private/jwks.json", $json->encode({ keys => [{
    kty => 'oct', kid => 'hs-2024', alg => 'HS256', k => encode_base64url($hs),
}] }));

# run_cmd($cmd, $cwd, $daemon): (exit status, output); a daemon
# must run for a second and exit 0 on SIGTERM
sub run_cmd {
    my ($cmd, $cwd, $daemon) = @_;
    my $out = "$tmp/cmd.out";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        @ENV{ keys %env } = values %env;
        chdir $cwd or die "$cwd: $!";
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or die;
        open STDERR, '>&', \*STDOUT or die;
        setpgrp(0, 0);
        exec '/bin/bash', '-o', 'pipefail', '-c', $cmd;
        exit 127;
    }
    my $end = time + ($daemon ? 1 : 120);
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $end) {
            if ($daemon) {
                kill 'TERM', -$pid;
                my $stop = time + 10;
                sleep 0.05 while waitpid($pid, WNOHANG) == 0 && time < $stop;
                kill 'KILL', -$pid if kill 0, $pid;
                return ($? >> 8, slurp($out));
            }
            kill 'KILL', -$pid;
            waitpid $pid, 0;
            return (-1, slurp($out) . "\n(timed out)");
        }
        sleep 0.02;
    }
    return ($daemon ? -2 : $? >> 8,
            slurp($out) . ($daemon ? "\n(exited before a second)" : ''));
}

# --- docs/soc.md's guardd, journal and gateway -------------------------------

my $guardd;
my @soc_records = (
    { id => '018f39f0-0c6e-7b4d-9e13-8a5f2c7d1b09', subject => 'u9',
      status => 403, reason => 'risk_deny', stage => 'risk',
      outcome => 'shadow_deny', score => 80, ago => 66 },
    { id => '018f39fd-1b3a-7f92-a7d0-3e8c5b2f6d41', subject => 'u7',
      status => 429, reason => 'rate_limited', stage => 'limits', ago => 52 },
    { id => '018f3a1d-77c4-7a08-b1e5-6c2d8f4a9b13', subject => 'u1',
      status => 401, reason => 'token_expired', stage => 'jwt', ago => 17 },
    { id => '018f3a2c-2a90-7e11-8f4c-0d9b3e5a1c20', subject => 'u2',
      status => 401, reason => 'risk_step_up', stage => 'risk', score => 50,
      ago => 7 },
    { id => '018f3a2c-5b1e-7c3a-9d2e-4b6f1a0c9e77', subject => 'u3',
      status => 403, reason => 'risk_deny', stage => 'risk', score => 95,
      method => 'DELETE', route => '/api/admin', ago => 6,
      traceparent => '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      signals => [
          { id => 'destructive', weight => 50 },
          { id => 'sensitive', weight => 30 },
          { id => 'big-body', weight => 15 },
          { id => 'not-admin', weight => 5, shadow => JSON::PP::true },
      ] },
);

sub soc_setup {
    my $sock = "$root/run/guard/guardd.sock";
    $guardd = spawn_guardd("$bin/guardd", "$root/etc/guard/guardd.conf", $sock,
                           "$tmp/guardd.log");
    my $s = IO::Socket::UNIX->new(Peer => $sock, Type => SOCK_STREAM)
        or BAIL_OUT("guardd: $!: " . slurp("$tmp/guardd.log"));
    print $s frame(1, 1, { version => 1, max_frame => 65536, node => 'docs' });
    read_frames($s, 1);
    my $now = int(time * 1000);
    my $n = 1;
    for my $r (@soc_records) {
        my %rec = (tenant => 'acme', client_ip => '10.0.0.9', method => 'GET',
                   route => '/api/orders', outcome => 'deny',
                   node => 'guardd-eu1', %$r);
        $rec{ts_ms} = $now - 60_000 * delete $rec{ago};
        print $s frame(4, ++$n, \%rec);
    }
    my @acks = read_frames($s, scalar @soc_records, 20);
    is(scalar(grep { $_->{type} == 5 } @acks), scalar @soc_records,
       'docs/soc.md: its records are in the journal');
    close $s;

    gateway_setup();
}

# the docs' gateway, https://gw/: nginx with the module, a guarded API
# and guard_status at /guard/status
sub gateway_setup {
    $t = Guard::Test->new;
    $t->write_conf(http => <<"CONF");
    guard_jwt_keys $root/etc/guard/private/jwks.json;
    guard_jwt_issuer https://idp.example.com;
    guard_jwt_audience api;
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location ~ ^/api/(?<path_tenant>[^/]+)/ {
            guard on;
            guard_tenant \$path_tenant;
            return 200 "ok \$guard_tenant\\n";
        }
        location = /guard/status {
            guard_status;
        }
    }
CONF
    $t->run;
}

sub soc_teardown {
    if ($guardd) {
        kill 'TERM', $guardd;
        waitpid $guardd, 0;
        is($? >> 8, 0, 'docs/soc.md: guardd exits 0');
        undef $guardd;
    }
    gateway_teardown();
}

sub gateway_teardown {
    if ($t) {
        $t->stop;
        $t->errlog_ok;
        undef $t;
    }
}
END { kill 'KILL', $guardd if $guardd }

# --- run the blocks ----------------------------------------------------------

my %cwd = ('README.md' => $repo, 'docs/policies.md' => $repo,
           'docs/directives.md' => $repo);
my %setup = ('docs/soc.md' => [\&soc_setup, \&soc_teardown],
             'docs/metrics.md' => [\&gateway_setup, \&gateway_teardown]);

for my $file (@docs) {
    my @mine = grep { $_->{file} eq $file && ($_->{mark} // '') !~ /^run by /
                      && @{ $_->{cmds} } } @blocks;
    next unless @mine;
    $setup{$file}[0]->() if $setup{$file};
    for my $b (@mine) {
        my $dry = ($b->{mark} // '') eq 'make -n';
        if ($b->{mark} && !$dry) {
            fail("$file:$b->{line}: unknown mark \"<!-- $b->{mark} -->\"");
            next;
        }
        # the block's commands in one shell, in order (so that export and
        # cd carry over), each checked; a daemon runs alone
        my @chunk;
        my $flush = sub {
            return unless @chunk;
            my $script = '';
            for my $i (0 .. $#chunk) {
                $script .= rewrite($chunk[$i][1])
                    . "\n__rc=\$?; [ \$__rc -eq 0 ] || { echo; "
                    . "echo \"__FAILED \$__rc $i\"; exit \$__rc; }\n";
            }
            my ($rc, $out) = run_cmd($script, $cwd{$file} // $work);
            my ($frc, $at) = $out =~ /^__FAILED (\d+) (\d+)$/m;
            $at //= $rc == 0 ? scalar @chunk : 0;
            for my $i (0 .. $#chunk) {
                my ($n, $cmd) = @{ $chunk[$i] };
                my $run = rewrite($cmd);
                my $how = $run ne $cmd ? "\nrun as: $run" : '';
                if ($i < $at) {
                    pass("$file:$n: $cmd");
                } elsif ($i == $at) {
                    fail("$file:$n: $cmd");
                    diag("exit " . ($frc // $rc) . "$how\n"
                         . ($out =~ s/^__FAILED .*\n?//mr));
                } else {
                    fail("$file:$n: $cmd: not run, an earlier command failed");
                }
            }
            @chunk = ();
        };
        for my $c (@{ $b->{cmds} }) {
            my ($n, $cmd) = @$c;
            my $where = "$file:$n: $cmd";
            if ($dry) {
                if ($cmd !~ /^make(?:\s|$)/) {
                    fail("$where: a <!-- make -n --> block holds only make commands");
                    next;
                }
                my ($rc, $out) = run_cmd($cmd =~ s/^make/make -n/r, $repo);
                ok($rc == 0, "$where (as make -n)") or diag "exit $rc:\n$out";
                next;
            }
            # a command that needs the user guard (install -o guard, ...)
            if ($cmd =~ /-o guard\b/ && (!getpwnam('guard') || $> != 0)) {
                $flush->();
                SKIP: { skip "$where: needs root and the user guard", 1 }
                next;
            }
            my ($line) = grep { $_->[0] == $n } @{ $b->{body} };
            if ($line->[1] =~ /#.*\bforeground\b/) {
                $flush->();
                my $run = rewrite($cmd);
                my ($rc, $out) = run_cmd($run, $cwd{$file} // $work, 1);
                ok($rc == 0, "$where (runs until stopped)")
                    or diag "exit $rc" . ($run ne $cmd ? ", run as: $run" : '')
                            . "\n$out";
                next;
            }
            push @chunk, $c;
        }
        $flush->();
    }
    $setup{$file}[1]->() if $setup{$file};
}

done_testing;
