#!/usr/bin/perl

# The container files, checked without a container engine (none runs
# here): docker/Dockerfile, .dockerignore, docker/compose.yaml,
# docker/entrypoint.sh, docker/nginx.conf, docker/guardd.conf, and the
# commands docs/docker.md shows.
#
#  - the Dockerfile: two stages from debian:12; every COPY source exists
#    and is not excluded by .dockerignore (COPY . . leaves out no tracked
#    file the build needs); what is copied from the build stage is made
#    there; every `make TARGET` of a RUN is a target (`make -n` succeeds);
#    every repository path a RUN names exists; the runtime stage installs
#    no compiler and every library the built programs need; ENTRYPOINT and
#    CMD are the entrypoint script and one of its roles;
#  - guardd never runs as root: a system user guard, and the entrypoint
#    runs guardd through setpriv as that user;
#  - compose: the build context and Dockerfile exist, nginx and guardd run
#    the same image and share the socket and spill volumes, guardd keeps
#    its journal in a volume, every bind mount exists, each mount point is
#    a directory the image makes (a new volume takes its owner and mode);
#  - docker/nginx.conf listens on 0.0.0.0 and names the socket, spill and
#    policy paths of docker/guardd.conf;
#  - the image's tree: the build stage's make install, run into a temporary
#    directory, holds the module nginx.conf loads, the policies, and guardd
#    and guardctl in the PATH, and nothing under debian:12's symlinks
#    /bin, /sbin, /lib* (COPY cannot merge into them); with the container's paths moved into that
#    tree (and its ports to free loopback ports), nginx -t accepts
#    docker/nginx.conf with the installed module, the installed guardd -t
#    accepts docker/guardd.conf, and the two run together: a token minted
#    by the installed guardctl from the key set the entrypoint generates is
#    let through, a refusal reaches guardd's journal, guard_status answers;
#  - docs/docker.md: every line of its container blocks (marked
#    `<!-- run by t/06-docker.t -->`) is in @DOC_COMMANDS below, verbatim,
#    and the files, services, ports and commands they name exist.
#
# Skipped in make test's sanitizer pass (nothing here depends on the
# module variant).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP ();
use Text::ParseWords qw(shellwords);
use Test::More;
use Guard::Test;
use Guard::Frames qw(spawn_guardd journal_records slurp write_text wait_for);

plan skip_all => 'checked once, in the first pass' if $ENV{GUARD_SANITIZE};

my $REPO     = abs_path("$FindBin::Bin/..");
my $PYTHON   = '/usr/bin/python3';
my $GUARDD   = $ENV{GUARDD}   || "$REPO/policy-engine/build/guardd";
my $GUARDCTL = $ENV{GUARDCTL} || "$REPO/policy-engine/build/guardctl";
my $json     = JSON::PP->new->canonical;

# the container commands of docs/docker.md, verbatim (see the end)
my @DOC_COMMANDS = (
    'docker build -f docker/Dockerfile -t guard .',
    'docker compose -f docker/compose.yaml up -d --build',
    'TOKEN=$(docker compose -f docker/compose.yaml exec -T nginx guardctl token mint --key /etc/guard/keys/jwks.json --kid gateway --tenant globex)',
    'curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/globex/orders',
    'docker compose -f docker/compose.yaml exec guardd guardctl blocked',
    'docker compose -f docker/compose.yaml logs guardd',
    'docker compose -f docker/compose.yaml kill -s HUP nginx guardd',
    'docker compose -f docker/compose.yaml down',
);

# ---------------------------------------------------------------------------
# the Dockerfile: stages, each a list of [INSTRUCTION, arguments]

sub dockerfile_stages {
    my ($text) = @_;
    my (@stages, $cur);
    $text =~ s/\\\n(?:[ \t]*(?:#[^\n]*)?\n)*/ /g;    # continuations
    for my $line (split /\n/, $text) {
        next if $line =~ /^\s*(?:#|$)/;
        my ($ins, $args) = $line =~ /^\s*(\w+)\s+(.*?)\s*$/
            or die "Dockerfile: cannot read: $line\n";
        $ins = uc $ins;
        if ($ins eq 'FROM') {
            my ($image, $name) = $args =~ /^(\S+)(?:\s+AS\s+(\S+))?$/i;
            push @stages, $cur = { image => $image, name => $name // '',
                                   ins => [] };
            next;
        }
        die "Dockerfile: $ins before FROM\n" unless $cur;
        push @{ $cur->{ins} }, [$ins, $args];
    }
    return @stages;
}

sub instructions {
    my ($stage, $ins) = @_;
    return map { $_->[1] } grep { $_->[0] eq $ins } @{ $stage->{ins} };
}

# the simple commands of a RUN, each a list of words
sub run_commands {
    my ($run) = @_;
    my @cmds;
    for my $c (split /\s*(?:&&|\|\||;|\|)\s*/, $run) {
        my @w = shellwords($c);
        push @cmds, \@w if @w;
    }
    return @cmds;
}

# COPY [--from=X] [--chown=..] SRC... DEST
sub copy_args {
    my ($args) = @_;
    my @w = $args =~ /^\[/ ? @{ $json->decode($args) } : shellwords($args);
    my %opt;
    while (@w && $w[0] =~ /^--(\w+)=(.*)$/) { $opt{$1} = $2; shift @w }
    my $dest = pop @w;
    return (\%opt, \@w, $dest);
}

# .dockerignore: Docker's rules (Go filepath.Match with **, a directory
# pattern covering what is under it, a later !pattern taking files back)
sub dockerignore_rules {
    my @rules;
    for my $p (split /\n/, slurp("$REPO/.dockerignore")) {
        $p =~ s/^\s+|\s+$//g;
        next if $p eq '' || $p =~ /^#/;
        my $neg = $p =~ s/^!//;
        $p =~ s{^/+}{};
        $p =~ s{/+$}{};
        my $re = join '', map {
            $_ eq '**/' ? '(?:.*/)?' : $_ eq '**' ? '.*' : $_ eq '*' ? '[^/]*'
              : $_ eq '?' ? '[^/]' : quotemeta $_
        } $p =~ m{(\*\*/|\*\*|\*|\?|[^*?]+)}g;
        push @rules, [$neg, qr{^$re(?:/.*)?$}];
    }
    return @rules;
}

sub dockerignored {
    my ($rules, $path) = @_;
    my $out = 0;
    for my $r (@$rules) {
        $out = !$r->[0] if $path =~ $r->[1];
    }
    return $out;
}

my $df_text = slurp("$REPO/docker/Dockerfile");
my @stages = dockerfile_stages($df_text);
is(scalar @stages, 2, 'Dockerfile: two stages');
my ($build, $runtime) = @stages;
is($build->{image}, 'debian:12', 'build stage: FROM debian:12');
is($build->{name}, 'build', 'build stage: named build');
is($runtime->{image}, 'debian:12', 'runtime stage: FROM debian:12');

my @ignore = dockerignore_rules();
ok(dockerignored(\@ignore, $_), ".dockerignore: $_ left out")
    for qw(.git/config build/ngx_http_guard_module.so
           policy-engine/build/guardd);

# what the build stage's COPY . . brings: every tracked file the build
# needs (all but the ignore files themselves)
SKIP: {
    my @files = split /\n/, `git -C '$REPO' ls-files 2>/dev/null`;
    skip 'not a git checkout', 1 unless @files;
    my @out = grep { !m{^\.(?:git|docker)ignore$} && dockerignored(\@ignore, $_) }
              @files;
    is_deeply(\@out, [], '.dockerignore leaves out no tracked source file');
}

# COPY sources
for my $stage (@stages) {
    for my $args (instructions($stage, 'COPY'), instructions($stage, 'ADD')) {
        my ($opt, $srcs, $dest) = copy_args($args);
        if (my $from = $opt->{from}) {
            my ($src_stage) = grep { $_->{name} eq $from } @stages;
            ok($src_stage, "COPY --from=$from: a stage of this file");
            my $runs = join "\n", instructions($src_stage // {ins => []}, 'RUN');
            for my $s (@$srcs) {
                like($runs, qr{(?:DESTDIR=|>\s*)\Q$s\E(?:\s|$)},
                     "COPY --from=$from $s: made by a RUN of that stage");
            }
            next;
        }
        for my $s (@$srcs) {
            (my $rel = $s) =~ s{^\./}{};
            ok(-e "$REPO/$rel", "COPY $s: exists");
            ok($rel eq '.' || !dockerignored(\@ignore, $rel),
               "COPY $s: not excluded by .dockerignore");
        }
    }
}

# every RUN is shell that parses (sh -n)
for my $stage (@stages) {
    for my $run (instructions($stage, 'RUN')) {
        system('sh', '-n', '-c', $run);
        is($?, 0, "RUN " . substr($run, 0, 40) . "...: sh -n");
    }
}

# RUN: make targets, repository paths, packages
my $destdir = tempdir('guard-docker-XXXXXX', TMPDIR => 1,
                      CLEANUP => !$ENV{GUARD_TEST_KEEP});
my (%made, @make_lines);
for my $run (instructions($build, 'RUN')) {
    for my $cmd (run_commands($run)) {
        my @w = @$cmd;
        if ($w[0] eq 'make') {
            my @args = @w[1 .. $#w];
            ok(!grep({ /^-/ } @args), "RUN @w: no make options");
            # a dry run, with DESTDIR moved out of the way
            my @dry = map { s/^DESTDIR=.*/DESTDIR=$destdir\/out/r } @args;
            my $out = `make -n -C '$REPO' @dry 2>&1`;
            is($?, 0, "RUN @w: make -n succeeds (a target of the Makefile)")
                or diag($out);
            push @make_lines, "@w";
            next;
        }
        for my $word (@w) {
            next unless $word =~ m{^[\w.-]+/[\w./-]*$} && $word !~ m{^/};
            ok(-e "$REPO/$word", "RUN @w: $word exists");
        }
    }
}
ok((grep { $_ eq 'make' } @make_lines), 'the build stage runs make');
ok((grep { /^make install DESTDIR=\S+ PREFIX=\/usr$/ } @make_lines),
   'the build stage runs make install DESTDIR=... PREFIX=/usr');
like(join("\n", instructions($build, 'RUN')), qr{^sh scripts/setup\.sh\b},
     'the build stage runs scripts/setup.sh first');

# the runtime stage's packages: no compiler, and what the programs link
my @pkgs;
for my $run (instructions($runtime, 'RUN')) {
    for my $cmd (run_commands($run)) {
        my @w = @$cmd;
        next unless $w[0] eq 'apt-get' && grep { $_ eq 'install' } @w;
        my $seen = 0;
        for (@w) {
            if ($_ eq 'install') { $seen = 1; next }
            next if !$seen || /^-/;
            push @pkgs, s/=.*//r;
        }
    }
}
ok((grep { $_ eq 'nginx' } @pkgs), 'runtime stage: Debian nginx');
my @compilers = grep {
    /^(?:gcc|g\+\+|cpp|clang|make|build-essential|binutils|libtool|autoconf)(?:-[\d.]+)?$/
      || /-dev$/ || /^lib.*-dev:/
} @pkgs;
is_deeply(\@compilers, [], "runtime stage: no compiler nor -dev package (@pkgs)");
unlike($df_text =~ s/.*^FROM debian:12\s*$//msr, qr{COPY --from=build /src},
       'runtime stage: nothing copied from the build tree, only the install');

# every library the built programs and the module need directly, by
# package: in the runtime stage's list (libc6 is in every Debian image)
SKIP: {
    my @bins = grep { -f }
        ("$REPO/build/ngx_http_guard_module.so",
         "$REPO/policy-engine/build/release/guardd",
         "$REPO/policy-engine/build/release/guardctl");
    skip 'the release programs are not built (make)', 1 unless @bins == 3;
    my %paths;    # NEEDED name -> [the path ldd finds, the real file]
    for my $bin (@bins) {
        my %where = map { /^\s*(\S+) => (\S+)/ ? ($1 => $2) : () } `ldd '$bin'`;
        for my $so (`readelf -d '$bin'` =~ /\(NEEDED\).*\[(.+?)\]/g) {
            $paths{$so} = [grep { defined } $where{$so}, abs_path($where{$so} // '')];
        }
    }
    my @all = map { @$_ } values %paths;
    my %pkg_of = map { /^([^:\s]+)(?::\w+)?: (\S+)$/ ? ($2 => $1) : () }
                 `dpkg -S @all 2>/dev/null`;
    my %need;
    for my $so (keys %paths) {
        my ($pkg) = grep { defined } map { $pkg_of{$_} } @{ $paths{$so} };
        $need{ $pkg // "?$so" } = 1;
    }
    my %have = map { $_ => 1 } @pkgs, 'libc6';
    my @missing = grep { !$have{$_} } sort keys %need;
    is_deeply(\@missing, [], 'runtime stage installs the libraries the '
              . 'programs link: ' . join(' ', sort keys %need));
}

# entrypoint, roles, user
my ($entrypoint) = instructions($runtime, 'ENTRYPOINT');
my ($cmd) = instructions($runtime, 'CMD');
my $ep_name = $json->decode($entrypoint)->[0];
my ($ep_copy) = grep { (copy_args($_))[2] =~ m{/\Q$ep_name\E$} }
                instructions($runtime, 'COPY');
ok($ep_copy, "ENTRYPOINT $ep_name: copied into the image");
my $ep_src = $ep_copy ? (copy_args($ep_copy))[1][0] : '';
is($ep_src, 'docker/entrypoint.sh', 'the entrypoint is docker/entrypoint.sh');
my $ep_text = slurp("$REPO/docker/entrypoint.sh");
system('sh', '-n', "$REPO/docker/entrypoint.sh");
is($?, 0, 'docker/entrypoint.sh: sh -n');
SKIP: {
    skip 'no shellcheck', 1 unless -x '/usr/bin/shellcheck';
    my $sc = `/usr/bin/shellcheck '$REPO/docker/entrypoint.sh' 2>&1`;
    is($sc, '', 'docker/entrypoint.sh: shellcheck is quiet');
}
my %roles = map { $_ => 1 } $ep_text =~ /^(\w+)\)$/mg;
ok($roles{nginx} && $roles{guardd}, 'the entrypoint has the roles nginx and guardd');
ok($roles{$json->decode($cmd)->[0]}, "CMD $cmd: a role of the entrypoint");

unlike($df_text, qr/^\s*USER\s+(?:root|0)\b/mi, 'no USER root');
ok((grep { $_->[0] eq 'useradd' && (grep { $_ eq '--system' } @$_)
            && $_->[-1] eq 'guard' } map { run_commands($_) }
           instructions($runtime, 'RUN')),
   'the image has a system user guard');
like($df_text, qr/--groups www-data\b/, 'guard is in www-data (the socket group)');
like($ep_text, qr/exec setpriv --reuid=guard --regid=guard --init-groups --[\s\\]+guardd\b/,
     'the entrypoint runs guardd as guard when started as root');
my $gconf = $json->decode(slurp("$REPO/docker/guardd.conf"));
is($gconf->{user}, 'guard', 'docker/guardd.conf: user guard');
is($gconf->{socket_group}, 'www-data', 'docker/guardd.conf: socket group www-data');
is($gconf->{socket_mode}, '0660', 'docker/guardd.conf: socket mode 0660');

# directories the image makes, for the volumes
my %image_dirs;
for my $run (instructions($runtime, 'RUN')) {
    for my $c (run_commands($run)) {
        $image_dirs{ $c->[-1] } = 1 if $c->[0] eq 'install' && $c->[1] eq '-d';
    }
}

# ---------------------------------------------------------------------------
# docker/nginx.conf

my $nconf = slurp("$REPO/docker/nginx.conf");
(my $nconf_code = $nconf) =~ s/#[^\n]*//g;
my @listen = $nconf_code =~ /^\s*listen\s+(\S+);/mg;
ok((grep { $_ eq '0.0.0.0:8080' } @listen), 'nginx.conf: listen 0.0.0.0:8080');
ok(!grep({ !/^(?:0\.0\.0\.0:8080|127\.0\.0\.1:\d+)$/ } @listen),
   "nginx.conf: nothing else but loopback (@listen)");
my ($port) = $df_text =~ /^EXPOSE\s+(\d+)/m;
is($port, 8080, 'Dockerfile: EXPOSE 8080');
my %d = map { /^\s*(\w+)\s+(.*?);/ ? ($1 => $2) : () } split /\n/, $nconf_code;
is($d{load_module}, '/usr/lib/nginx/modules/ngx_http_guard_module.so',
   'nginx.conf: loads the module from where make install puts it');
is($d{guard_sidecar} =~ s/^unix:(\S+).*/$1/r, $gconf->{listen},
   'nginx.conf: guard_sidecar is guardd.conf\'s listen');
is($d{guard_audit_spill}, $gconf->{spill},
   'nginx.conf: guard_audit_spill is guardd.conf\'s spill');
is($d{guard_policies}, $gconf->{policies},
   'nginx.conf: guard_policies is guardd.conf\'s policies');
is($d{user}, $gconf->{socket_group}, 'nginx.conf: workers in the socket group');
like($nconf_code, qr/^\s*guard_status;/m, 'nginx.conf: guard_status');

# ---------------------------------------------------------------------------
# compose

my $compose;
SKIP: {
    my $out = `$PYTHON -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)' '$REPO/docker/compose.yaml' 2>&1`;
    skip "no YAML parser ($PYTHON, python3-yaml): $out", 1 if $?;
    $compose = $json->decode($out);
    pass('compose.yaml parses');
}

SKIP: {
    skip 'compose.yaml not parsed', 1 unless $compose;
    my $svc = $compose->{services};
    is_deeply([sort keys %$svc], [qw(guardd nginx)], 'compose: services guardd and nginx');
    my %image;
    for my $name (sort keys %$svc) {
        my $s = $svc->{$name};
        my $b = $s->{build};
        my $ctx = abs_path("$REPO/docker/" . ($b->{context} // '.'));
        is($ctx, $REPO, "compose $name: the build context is the repository");
        ok(-f "$ctx/$b->{dockerfile}", "compose $name: $b->{dockerfile} exists");
        $image{ $s->{image} // '' } = 1;
        my $role = ref $s->{command} ? $s->{command}[0] : (split ' ', $s->{command} // 'nginx')[0];
        ok($roles{$role}, "compose $name: command $role is a role of the entrypoint");
        ok(!defined $s->{user} || $s->{user} !~ /^(?:root|0)(?::|$)/,
           "compose $name: not user root");
    }
    is(scalar keys %image, 1, 'compose: both services run the same image');

    my %mounts;
    for my $name (sort keys %$svc) {
        for my $v (@{ $svc->{$name}{volumes} // [] }) {
            my ($src, $dst) = ref $v ? ($v->{source}, $v->{target}) : split /:/, $v;
            $mounts{$name}{$dst} = $src;
            if ($src =~ m{^[./~]}) {
                ok(-e "$REPO/docker/$src", "compose $name: bind mount $src exists");
            } else {
                ok(exists $compose->{volumes}{$src},
                   "compose $name: volume $src declared");
                ok($image_dirs{$dst}, "compose $name: $dst is made by the image");
            }
        }
    }
    (my $rundir = $gconf->{listen}) =~ s{/[^/]+$}{};
    ok($mounts{nginx}{$rundir} && $mounts{guardd}{$rundir}
       && $mounts{nginx}{$rundir} eq $mounts{guardd}{$rundir},
       "compose: nginx and guardd share the socket volume at $rundir");
    ok($mounts{nginx}{ $gconf->{spill} } && $mounts{guardd}{ $gconf->{spill} }
       && $mounts{nginx}{ $gconf->{spill} } eq $mounts{guardd}{ $gconf->{spill} },
       "compose: nginx and guardd share the spill volume at $gconf->{spill}");
    ok($mounts{guardd}{ $gconf->{journal}{dir} },
       "compose: guardd's journal $gconf->{journal}{dir} is a volume");
    ok(!$mounts{nginx}{ $gconf->{journal}{dir} }, 'compose: nginx has no journal');
    ok((grep { /:8080$/ } @{ $svc->{nginx}{ports} // [] }),
       'compose: nginx publishes port 8080');
    my $ctext = slurp("$REPO/docker/compose.yaml");
    like($ctext, qr/Redis.*PostgreSQL/s, 'compose.yaml: Redis and PostgreSQL to come');
}

# ---------------------------------------------------------------------------
# docs/docker.md: its container blocks are these commands, and what they
# name exists

my $doc = slurp("$REPO/docs/docker.md");
my @blocks = $doc =~ /<!-- run by t\/06-docker\.t -->\s*\n```sh\n(.*?)```/sg;
ok(@blocks, 'docs/docker.md: blocks run by this test');
my @lines = grep { /\S/ && !/^\s*#/ } map { split /\n/ } @blocks;
is_deeply([sort @lines], [sort @DOC_COMMANDS],
          'docs/docker.md: its container commands are the ones checked here');
for my $c (@DOC_COMMANDS) {
    my @w = shellwords($c =~ s/^TOKEN=\$\((.*)\)$/$1/r);
    if ($w[0] eq 'docker') {
        my %f = $c =~ /-f (\S+)/ ? (file => $1) : ();
        ok(-f "$REPO/$f{file}", "$c: $f{file} exists") if $f{file};
        if ($c =~ / exec (?:-T )?(\w+) (\w+)/) {
            ok($compose && $compose->{services}{$1}, "$c: service $1");
            ok(-x "$REPO/policy-engine/build/$2", "$c: $2 is built and installed");
        }
        if ($c =~ / logs (\w+)/) {
            ok($compose && $compose->{services}{$1}, "$c: service $1");
        }
        if ($c =~ / kill -s HUP (.*)$/) {
            for my $svc (split ' ', $1) {
                ok($compose && $compose->{services}{$svc}, "$c: service $svc");
                like($ep_text, qr/^\s+exec (?:setpriv .*\s+)?\Q$svc\E\b/m,
                     "$c: $svc is the container's first process (exec)");
            }
        }
        if ($w[1] eq 'build') {
            is($w[-1], '.', "$c: the context is the repository");
        }
    } elsif ($w[0] eq 'curl') {
        like($c, qr{http://127\.0\.0\.1:8080/api/globex/},
             "$c: the port compose publishes, the path run above");
    }
}

# ---------------------------------------------------------------------------
# the image's tree: what make install puts in the build stage's DESTDIR,
# as the Dockerfile runs it, with the directories the image adds; then the
# entrypoint's key set, and nginx.conf and guardd.conf with their paths in
# that tree, checked and run together

my $t = Guard::Test->new;
my $dir = $t->dir;
my $root = "$dir/root";    # what the container's / holds
my ($install) = grep { /^make install / } @make_lines;
my @install = map { s/^DESTDIR=.*/DESTDIR=$root/r } split ' ', $install // '';
shift @install;
my $iout = `make -s -C '$REPO' @install 2>&1`;
is($?, 0, "make @install: the tree the image copies") or do {
    diag($iout);
    done_testing;
    exit;
};
my ($module) = $nconf_code =~ /^\s*load_module\s+(\S+);/m;
ok(-f "$root$module", "the install holds the module nginx.conf loads ($module)");
like(slurp("$root/usr/share/nginx/modules-available/mod-http-guard.conf"),
     qr/^load_module \Q$module\E;$/m, 'the same as its modules-available snippet');
ok(-d "$root$gconf->{policies}", "the install holds $gconf->{policies}");
# COPY --from=build /out / merges each top directory of the tree into
# the image's: none may be one of debian:12's symlinks to usr/ (BuildKit
# refuses to copy a directory onto them; the classic builder replaces the
# symlink, and with it every library)
my ($destdir_img) = $install =~ /DESTDIR=(\S+)/;
my %removed = map { m{^\Q$destdir_img\E/([^/]+)$} ? ($1 => 1) : () }
              map { @$_ } grep { $_->[0] eq 'rm' }
              map { run_commands($_) } instructions($build, 'RUN');
opendir my $dh, $root or die "$root: $!";
my @top = sort grep { !/^\.\.?$/ && !$removed{$_} } readdir $dh;
my @usrmerged = grep { /^(?:bin|sbin|lib|lib32|lib64|libx32)$/ } @top;
is_deeply(\@usrmerged, [], "what the image copies has no /bin, /sbin, /lib* (@top)");
my %in_path;
for my $prog (qw(guardd guardctl)) {
    ($in_path{$prog}) = grep { -x } map { "$root$_/$prog" }
                        qw(/usr/local/sbin /usr/local/bin /usr/sbin /usr/bin);
    ok($in_path{$prog}, "the install puts $prog in the image's PATH");
}
make_path("$root/etc/guard/keys", "$root/run/guard", "$root/var/lib/guard/journal",
          "$root/var/lib/guard/spill", "$dir/bin");
chmod 0777, "$root/var/lib/guard/spill";
my $GUARDD_IMG   = $in_path{guardd}   // $GUARDD;
my $GUARDCTL_IMG = $in_path{guardctl} // $GUARDCTL;

# the nginx role, with an nginx that only says how it was called
write_text("$dir/bin/nginx", "#!/bin/sh\necho \"\$@\" > '$dir/nginx.args'\n");
chmod 0755, "$dir/bin/nginx";
my $jwks = "$root/etc/guard/keys/jwks.json";
my $ep = "env PATH='$dir/bin:$ENV{PATH}' GUARD_JWKS='$jwks' sh '$REPO/docker/entrypoint.sh' nginx";
my $out = `$ep 2>&1`;
isnt($?, 0, 'entrypoint nginx: stops without a JWKS');
like($out, qr/no JWKS at \Q$jwks\E/, 'and says where it is wanted');
$out = `GUARD_GENERATE_KEY=1 $ep 2>&1`;
is($?, 0, 'entrypoint nginx with GUARD_GENERATE_KEY=1: runs nginx') or diag($out);
is(slurp("$dir/nginx.args"), "-g daemon off;\n", "nginx -g 'daemon off;'");
is((stat $jwks)[2] & 0777, 0600, 'the generated JWKS is 0600');
my $keyset = eval { $json->decode(slurp($jwks)) } // {};
is($keyset->{keys}[0]{kid}, 'gateway', 'the generated JWKS: kid gateway');
my $before = slurp($jwks);
`GUARD_GENERATE_KEY=1 $ep 2>&1`;
is(slurp($jwks), $before, 'an existing JWKS is kept');

my $conf = $nconf;
$conf =~ s{(?<=[\s:])/(usr/lib/nginx/modules|etc/guard|run/guard|var/lib/guard)\b}{$root/$1}g;
$conf =~ s{^pid /run/nginx\.pid;}{pid $dir/nginx.pid;}m;
$conf =~ s{^error_log stderr}{error_log $dir/error.log}m;
$conf =~ s{access_log /dev/stdout}{access_log $dir/access.log}g;
$conf =~ s{^worker_processes auto;}{worker_processes 1;}m;
$conf =~ s{listen 0\.0\.0\.0:8080;}{listen 127.0.0.1:%%PORT_0%%;}g;
$conf =~ s{127\.0\.0\.1:8081}{127.0.0.1:%%PORT_1%%}g;
$conf =~ s{^user www-data;\n}{}m if $> != 0;
my $temp = join '', map { "    ${_}_temp_path $dir/tmp_$_;\n" }
           qw(client_body proxy fastcgi uwsgi scgi);
$conf =~ s/^http \{\n/http {\n$temp/m;
$t->write_file('nginx.conf', $t->subst($conf));
unlike($t->read_file('nginx.conf'), qr{[\s:](?:/etc/guard|/run/guard|/var/lib/guard|/usr/lib/nginx)},
       'nginx.conf: every container path moved to the temporary directory');
my ($rc, $tout) = $t->test_conf;
is($rc, 0, 'nginx -t accepts docker/nginx.conf with the installed module')
    or diag($tout);

my $g = { %$gconf };
$g->{$_} =~ s{^/}{$root/} for qw(listen pid_file policies spill);
$g->{journal} = { %{ $gconf->{journal} },
                  dir => "$root$gconf->{journal}{dir}" };
# the test machine's users: guardd started as root drops to guard only if
# it exists; started as another user it gives its socket to its own group
delete $g->{user} unless getpwnam($g->{user});
$g->{socket_group} = getgrgid($)) if $> != 0;
write_text("$dir/guardd.conf", $json->encode($g));
$out = `'$GUARDD_IMG' -c '$dir/guardd.conf' -t 2>&1`;
is($?, 0, 'guardd -t accepts docker/guardd.conf') or diag($out);

my $gpid = spawn_guardd($GUARDD_IMG, "$dir/guardd.conf", $g->{listen}, "$dir/guardd.log");
ok(-S $g->{listen}, 'guardd listens on the socket of docker/guardd.conf')
    or diag(slurp("$dir/guardd.log"));
$t->run;

# the line docs/docker.md shows, with the container's paths moved here
my ($mint) = map { /exec -T nginx guardctl (.*)\)$/ } @DOC_COMMANDS;
$mint =~ s{/etc/guard/keys/jwks\.json}{$jwks};
my $token = `'$GUARDCTL_IMG' $mint 2>&1`;
chomp $token;
is($?, 0, "guardctl $mint") or diag($token);
my $r = $t->get('/api/globex/orders', headers => { Authorization => "Bearer $token" });
is($r->{status}, 200, 'a token from the generated key set: 200');
like($r->{body}, qr/"tenant":"globex"/, 'the example upstream saw tenant globex');
$r = $t->get('/api/globex/orders');
is($r->{status}, 401, 'no token: 401');
my $id = $r->{headers}{'guard-decision-id'} // '';
ok(wait_for(10, sub { grep { ($_->{id} // '') eq $id } journal_records($g->{journal}{dir}) }),
   "the refusal's audit record is in guardd's journal ($id)");
$r = $t->get('/guard/status');
is($r->{status}, 200, 'guard_status answers on loopback');
like($r->{body} // '', qr/"allowed":\s*1\b/, 'and counts the allowed request');
$r = $t->get('/health');
is($r->{status}, 200, '/health');
$t->stop;
kill 'TERM', $gpid;
waitpid $gpid, 0;
is($?, 0, 'guardd stops cleanly');
$t->errlog_ok;

done_testing;
