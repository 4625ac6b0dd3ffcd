#!/usr/bin/perl

# `guardctl policy check` loads what nginx loads: the JWK set each policy
# names ("auth": {"jwks"}) and, with --keys, the guard_jwt_keys file, with
# one loader (policy-engine/src/gd_jwks.c).  For every broken key file,
# guardctl fails and `nginx -t` with the same directory fails, with the
# same error text: nginx's line is "guard_policies: " + guardctl's.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Copy qw(copy);
use JSON::PP ();
use POSIX ();
use Guard::Test;
use Guard::Frames qw(command slurp write_text);

my $repo = "$FindBin::Bin/..";
my $guardctl = "$repo/policy-engine/build/guardctl";

plan skip_all => 'guardctl is not built (make unit)' unless -x $guardctl;

my $t = Guard::Test->new;
my $dir = $t->dir;

sub show { "exit $_[0]{exit}\n--- stdout\n$_[0]{out}--- stderr\n$_[0]{err}" }

my $good_jwks = slurp("$repo/t/policies/good/keys/acme.jwks.json");
my $jwk = JSON::PP->new->decode($good_jwks)->{keys}[0];
my $kid = $jwk->{kid};
my $enc = sub { JSON::PP->new->canonical->encode(@_) };

# name => [the key file's text (undef: no file), what the error says]
my %CASES = (
    'missing' => [undef, qr/cannot open: No such file or directory/],
    'not-json' => ["{\"keys\": [\n", qr/line \d+, column \d+: /],
    'no-keys' => ['{"k": []}', qr/not a JWKS: no "keys" array/],
    'empty' => ['{"keys": []}', qr/the key set is empty/],
    'bad-member' => [$enc->({ keys => [{ %$jwk, use => 'enc' }] }),
                     qr/keys\[0\] \(kid "$kid"\): "use" is not "sig"/],
    'duplicate-kid' => [$enc->({ keys => [$jwk, $jwk] }),
                        qr/keys\[1\]: duplicate kid "$kid"/],
);

sub policy_dir {
    my ($name, $text) = @_;
    my $p = "$dir/$name";
    mkdir $p;
    mkdir "$p/keys";
    write_text("$p/acme.json", <<'JSON');
{
  "tenant": "acme",
  "auth": {
    "jwks": "keys/acme.jwks.json"
  }
}
JSON
    write_text("$p/keys/acme.jwks.json", $text) if defined $text;
    return $p;
}

sub nginx_t {
    my ($http) = @_;
    $t->write_conf(http => $http . <<'CONF');
    server {
        listen 127.0.0.1:%%PORT_0%%;
        location / { guard on; guard_jwt_keys %%KEYS%%/jwks.json; }
    }
CONF
    my ($rc, $out) = $t->test_conf;
    return ($rc, $out);
}

# a good directory: both pass
{
    my $p = policy_dir('good', $good_jwks);
    my $r = command($guardctl, 'policy', 'check', $p);
    is($r->{exit}, 0, 'good: guardctl policy check exits 0') or diag(show($r));
    my ($rc, $out) = nginx_t("    guard_policies $p;\n");
    is($rc, 0, 'good: nginx -t passes') or diag($out);
}

for my $case (sort keys %CASES) {
    my ($text, $says) = @{ $CASES{$case} };
    my $p = policy_dir($case, $text);

    my $r = command($guardctl, 'policy', 'check', $p);
    is($r->{exit}, 1, "$case: guardctl policy check exits 1") or diag(show($r));
    my ($line) = $r->{err} =~ m{^(\Q$p\E/acme\.json:\d+:\d+: /auth/jwks: .*)$}m;
    ok(defined $line, "$case: guardctl names the file, line, column and "
                      . '/auth/jwks') or diag(show($r));
    $line //= '';
    like($line, qr/"\Q$p\E\/keys\/acme\.jwks\.json": /,
         "$case: and the key file");
    like($line, $says, "$case: and the problem");

    my ($rc, $out) = nginx_t("    guard_policies $p;\n");
    isnt($rc, 0, "$case: nginx -t fails") or diag($out);
    like($out, qr/\[emerg\] guard_policies: \Q$line\E in /,
         "$case: nginx -t says what guardctl says") or diag($out);
}

# the guard_jwt_keys file: guardctl policy check DIR --keys FILE
{
    my $p = policy_dir('keys-good', $good_jwks);
    my $keys = "$dir/http-keys.json";
    write_text($keys, $enc->({ keys => [$jwk, $jwk] }));

    my $r = command($guardctl, 'policy', 'check', $p, '--keys',
                "$p/keys/acme.jwks.json");
    is($r->{exit}, 0, '--keys with a good file: exit 0') or diag(show($r));

    $r = command($guardctl, 'policy', 'check', $p, '--keys', $keys);
    is($r->{exit}, 1, '--keys with a duplicate kid: exit 1') or diag(show($r));
    my ($line) = $r->{err} =~ /^(guard_jwt_keys .*)$/m;
    is($line // '', "guard_jwt_keys \"$keys\": keys[1]: duplicate kid "
                    . "\"$kid\"", '--keys: the error');

    my ($rc, $out) = nginx_t("    guard_policies $p;\n"
                             . "    guard_jwt_keys $keys;\n");
    isnt($rc, 0, 'guard_jwt_keys with a duplicate kid: nginx -t fails');
    like($out, qr/\[emerg\] \Q$line\E in /,
         'guard_jwt_keys: nginx -t says what guardctl says') or diag($out);
}

done_testing();
