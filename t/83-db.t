#!/usr/bin/perl

# The PostgreSQL store against a real cluster (Guard::Services): guardctl
# db migrate and db status (schema_migrations and its checksums, an
# applied migration edited afterwards refused, a failing migration rolled
# back whole), guard_ingest (duplicates counted), blocked / show / review
# with --db (and GUARD_DB) printing what they print from the journal, and
# audit verify --db (clean; a row missing, a row too many, a row altered,
# a bad chain hash).  The records come from a live guardd (AUDIT frames,
# DECIDE risk decisions, a review through guardd) and are loaded into the
# store here, batch by batch, the way guardd's PostgreSQL sink calls
# guard_ingest.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

# make test's sanitizer pass changes only the nginx module; this test
# starts no nginx, and its programs are the same ASan+UBSan builds in
# both passes: checked once, in the first pass
plan skip_all => 'checked once, in the first pass (no nginx)'
    if $ENV{GUARD_SANITIZE};
use Guard::Services;
use Guard::Frames qw(:DEFAULT slurp write_text command);
use Digest::SHA qw(sha256_hex);
use File::Copy qw(copy);
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";
-x $guardd or BAIL_OUT("$guardd is missing: make -C policy-engine");
-x $guardctl or BAIL_OUT("$guardctl is missing: make -C policy-engine");

my $dir = tempdir('guard-db-XXXXXX', TMPDIR => 1,
                  CLEANUP => !$ENV{GUARD_TEST_KEEP});
mkdir "$dir/pg";
my $pg = Guard::Services->postgres("$dir/pg");
my $dsn = $pg->{dsn};
my $json = JSON::PP->new->canonical;
delete @ENV{qw(GUARD_JOURNAL_DIR GUARD_SOCKET GUARD_DB GUARD_MIGRATIONS)};

my $sanitizer = 0;
sub ctl {
    my $env = ref $_[0] eq 'HASH' ? shift : {};
    local @ENV{ keys %$env } = values %$env;
    my $r = command($guardctl, @_);
    $sanitizer++ if $r->{err} =~ /AddressSanitizer|LeakSanitizer|runtime error/;
    return $r;
}

# --- migrations ---------------------------------------------------------

mkdir "$dir/mig";
copy("$repo/migrations/$_", "$dir/mig/$_") or die "copy $_: $!"
    for grep { /^\d{4}_.*\.sql$/ } map { s{.*/}{}r } glob "$repo/migrations/*";
my @files = sort map { s{.*/}{}r } glob "$dir/mig/*.sql";
ok(@files >= 1 && $files[0] =~ /^0001_/, "migrations: @files");

my $r = ctl('db', 'status', '--db', $dsn, '--dir', "$dir/mig");
is($r->{exit}, 3, 'db status before migrate: exit 3 (pending)');
like($r->{out}, qr/^0001\s+pending\s+-\s+0001_/m, 'db status lists 0001 as pending');

$r = ctl('db', 'migrate', '--db', $dsn, '--dir', "$dir/mig");
is($r->{exit}, 0, 'db migrate: exit 0') or diag $r->{err};
like($r->{out}, qr/^applied 0001_\S+\.sql$/m, 'db migrate applies 0001');
like($r->{out}, qr/up to date: \Q$files[-1]\E \(\d+ applied now, 0 before\)/,
     'and says it is up to date');

my ($sum) = sha256_hex(slurp("$dir/mig/$files[0]"));
is($pg->psql('SELECT version, name, checksum FROM schema_migrations '
             . 'ORDER BY version LIMIT 1'),
   "1|$files[0]|$sum\n", 'schema_migrations records 0001 with its SHA-256');

$r = ctl({ GUARD_DB => $dsn, GUARD_MIGRATIONS => "$dir/mig" }, 'db', 'migrate');
is($r->{exit}, 0, 'migrate again (GUARD_DB, GUARD_MIGRATIONS): exit 0');
like($r->{out}, qr/\(0 applied now, \d+ before\)/, 'nothing applied twice');

$r = ctl('db', 'status', '--db', $dsn, '--dir', "$dir/mig");
is($r->{exit}, 0, 'db status: exit 0 when up to date');
like($r->{out}, qr/^0001\s+applied\s+\d{4}-\d\d-\d\dT[\d:]+Z\s+0001_/m,
     'db status: 0001 applied, with its time');

# a new migration that fails half way: nothing of it stays
write_text("$dir/mig/0900_broken.sql",
           "CREATE TABLE half_done (x int);\nSELECT no_such_function();\n");
$r = ctl('db', 'migrate', '--db', $dsn, '--dir', "$dir/mig");
is($r->{exit}, 1, 'a failing migration: exit 1');
like($r->{err}, qr/migration 0900_broken\.sql failed, nothing of it is applied: .*no_such_function/,
     'it says which migration failed and why');
is($pg->psql("SELECT to_regclass('half_done') IS NULL, "
             . '(SELECT count(*) FROM schema_migrations WHERE version = 900)'),
   "t|0\n", 'its table was rolled back, and it is not recorded');
unlink "$dir/mig/0900_broken.sql";

# an applied migration edited afterwards
open my $f, '>>', "$dir/mig/$files[0]" or die;
print $f "\n-- an edit after it was applied\n";
close $f;
$r = ctl('db', 'migrate', '--db', $dsn, '--dir', "$dir/mig");
is($r->{exit}, 1, 'an edited applied migration: db migrate refuses, exit 1');
like($r->{err}, qr/migration \Q$files[0]\E was applied on \S+ with checksum \Q${\ substr($sum, 0, 12)}\E\.\.\., and the file now has checksum [0-9a-f]{12}\.\.\.: an applied migration must not be edited/,
     'with a clear message: the file, both checksums');
$r = ctl('db', 'status', '--db', $dsn, '--dir', "$dir/mig");
is($r->{exit}, 1, 'db status: exit 1');
like($r->{out}, qr/^0001\s+EDITED\s/m, 'db status marks it EDITED');
copy("$repo/migrations/$files[0]", "$dir/mig/$files[0]") or die;
is(ctl('db', 'status', '--db', $dsn, '--dir', "$dir/mig")->{exit}, 0,
   'restored: up to date again');

$r = ctl('db', 'migrate', '--dir', "$dir/mig");
is($r->{exit}, 2, 'db migrate without --db: a usage error');
like($r->{err}, qr/--db DSN \(or GUARD_DB\) is needed/, 'that names --db and GUARD_DB');
$r = ctl('db', 'status', '--db', "host=$dir/nowhere port=1 dbname=guard user=postgres password=s3cret-pw",
         '--dir', "$dir/mig");
is($r->{exit}, 2, 'an unreachable database: exit 2');
like($r->{err}, qr/cannot connect to PostgreSQL \(--db DSN or GUARD_DB\)/,
     'saying it cannot connect');
unlike($r->{err} . $r->{out}, qr/s3cret-pw/, 'never printing the password');

# --- records: a live guardd -----------------------------------------------

my $journal = "$dir/journal";
mkdir "$dir/pol";
write_text("$dir/pol/acme.json", $json->encode({
    tenant => 'acme',
    risk => { thresholds => { step_up => 40, deny => 70 },
              signals => [{ id => 'destructive', weight => 80,
                            when => { method => ['DELETE'] } }] },
}));
write_text("$dir/guardd.conf", $json->encode({
    listen => "$dir/guardd.sock", pid_file => "$dir/guardd.pid",
    policies => "$dir/pol", node => 'test-node',
    journal => { dir => $journal }, log => 'warn',
}));
my $pid = spawn_guardd($guardd, "$dir/guardd.conf", "$dir/guardd.sock",
                       "$dir/guardd.log");
my $s = IO::Socket::UNIX->new(Peer => "$dir/guardd.sock", Type => SOCK_STREAM)
    or die "connect: $!";
print $s frame(1, 1, { version => 1, max_frame => 65536, node => 'test' });
read_frames($s, 1);

my $now = int(time * 1000);
my $uuid = sub { sprintf '01900000-0000-7000-8000-%012d', $_[0] };
my %base = (tenant => 'acme', subject => 'u1', client_ip => '10.0.0.1',
            method => 'GET', route => '/api/x', stage => 'jwt',
            outcome => 'deny', status => 401, reason => 'token_expired',
            node => 'gw1', source => 'nginx', latency_ms => 1.5);
my @recs = (
    { %base, id => $uuid->(1), ts_ms => $now - 3 * 3600_000 },
    { %base, id => $uuid->(2), ts_ms => $now - 2 * 3600_000, subject => 'u2',
      stage => 'limits', status => 429, reason => 'rate_limited' },
    { %base, id => $uuid->(3), ts_ms => $now - 90 * 60_000, tenant => 'beta',
      stage => 'tenant', status => 403, reason => 'tenant_mismatch' },
    # the same time as the second, later in the journal
    { %base, id => $uuid->(4), ts_ms => $now - 2 * 3600_000, subject => 'u3',
      reason => 'token_invalid' },
    { %base, id => $uuid->(5), ts_ms => $now - 10 * 60_000, outcome => 'allow',
      status => 200 },
    { id => $uuid->(6), ts_ms => $now - 2 * 86400_000, tenant => 'acme',
      subject => 'u4', status => 401, reason => 'token_missing', stage => 'jwt' },
    { %base, id => $uuid->(7), ts_ms => $now - 5 * 60_000,
      subject => "evil\e[2J", reason => 'token_invalid', outcome => 'shadow_deny' },
    { %base, id => $uuid->(8), ts_ms => $now - 30 * 60_000, stage => 'risk',
      status => 403, reason => 'risk_deny', score => 75,
      thresholds => { step_up => 40, deny => 70 },
      signals => [{ id => 'new-ip', weight => 45, shadow => JSON::PP::false },
                  { id => 'geo', weight => 10, shadow => JSON::PP::true }],
      region => 'eu-west' },
    # 0190...0009 and 0190...0010 start alike: an ambiguous prefix
    { %base, id => $uuid->(9), ts_ms => $now - 40 * 60_000, subject => 'u9' },
    { %base, id => $uuid->(10), ts_ms => $now - 41 * 60_000, subject => 'u10' },
    # a record without a time
    { %base, id => $uuid->(11), subject => 'u11' },
);
my $seq = 100;
print $s frame(4, ++$seq, $_) for @recs;
my @acks = read_frames($s, scalar @recs, 20);
is(scalar(grep { $_->{type} == 5 } @acks), scalar @recs, 'guardd journals the records');
print $s frame(2, 50, { tenant => 'acme', method => 'DELETE', subject => 'u5',
                        route => '/api/orders', client_ip => '10.0.0.9' });
my ($v) = read_frames($s, 1);
my $risk_id = $v->{payload}{decision_id};
is($v->{payload}{decision}, 'deny', 'and a risk decision of its own');

$r = ctl('review', $uuid->(8), '--verdict', 'confirmed', '--analyst', 'alice',
         '--note', 'a true positive', '--dir', $journal,
         '--socket', "$dir/guardd.sock");
is($r->{exit}, 0, 'a review through guardd') or diag $r->{err};

# the journal's records with their place, as the sink reads them
sub journal_placed {
    my @out;
    for my $seg (sort glob "$journal/journal-*.jsonl") {
        open my $j, '<', $seg or die;
        my $line = 0;
        while (my $l = <$j>) {
            $line++;
            next unless $l =~ /\n\z/;
            push @out, { record => $json->decode($l),
                         segment => $seg =~ s{.*/}{}r, line => $line };
        }
    }
    return @out;
}

# loads them into the store, in batches, as guardd's sink does
sub ingest {
    my ($batch) = @_;
    my $text = $json->encode($batch) =~ s/'/''/gr;
    my $out = $pg->psql("SELECT inserted, duplicates FROM guard_ingest('$text'::jsonb)");
    die "guard_ingest: $pg->{err}" if $pg->{exit};
    chomp $out;
    return $out;
}
my @placed = journal_placed();
my $n = @placed;
ok($n >= 13, "the journal holds $n records");
is(ingest([@placed[0 .. 4]]), '5|0', 'guard_ingest: a batch inserted');
is(ingest([@placed]), ($n - 5) . '|5', 'the whole journal again: the first 5 are duplicates');
is(ingest([@placed]), "0|$n", 'and once more: all duplicates');
is($pg->psql("SELECT count(*) FROM decisions") + $pg->psql("SELECT count(*) FROM reviews"),
   $n, 'one row per record');
like($pg->psql("SELECT string_agg(DISTINCT tableoid::regclass::text, ',') FROM decisions"),
     qr/decisions_\d{6}/, 'rows in monthly partitions');
is($pg->psql("SELECT tenant, subject, status, reason, refusal, segment, line "
             . "FROM decisions WHERE id = '" . $uuid->(2) . "'"),
   "acme|u2|429|rate_limited|t|journal-000001.jsonl|2\n",
   'the columns of docs/soc.md, the refusal flag and the place');
is($pg->psql("SELECT review_of, verdict, analyst FROM reviews"),
   $uuid->(8) . "|confirmed|alice\n", 'the review in reviews');

# --- 0002 applied on a store that has only 0001 --------------------------
# A second database migrated with 0001 alone takes the first records through
# 0001's guard_ingest; then db migrate applies the rest (0002: guard_ingest
# through guard_stage, guard_int without its regular expression) on it, and
# the rest of the journal goes in: every row has the same columns as in the
# store migrated at once.
$pg->psql('CREATE DATABASE guard_old', 'postgres');
is($pg->{exit}, 0, 'a second database') or diag $pg->{err};
(my $old_dsn = $dsn) =~ s/dbname=guard/dbname=guard_old/;
mkdir "$dir/mig1";
copy("$dir/mig/$files[0]", "$dir/mig1/$files[0]") or die;
$r = ctl('db', 'migrate', '--db', $old_dsn, '--dir', "$dir/mig1");
is($r->{exit}, 0, 'migrated with 0001 alone') or diag $r->{err};
sub ingest_old {
    my ($batch) = @_;
    my $text = $json->encode($batch) =~ s/'/''/gr;
    my $out = $pg->psql("SELECT inserted, duplicates FROM guard_ingest('$text'::jsonb)",
                        'guard_old');
    die "guard_ingest: $pg->{err}" if $pg->{exit};
    chomp $out;
    return $out;
}
is(ingest_old([@placed[0 .. 6]]), '7|0', "0001's guard_ingest: a batch");
$r = ctl('db', 'migrate', '--db', $old_dsn, '--dir', "$dir/mig");
is($r->{exit}, 0, 'db migrate on that store: exit 0') or diag $r->{err};
SKIP: {
    skip 'only 0001 in migrations/', 5 unless @files > 1;
    like($r->{out}, qr/^applied \Q$files[1]\E$/m, "it applies $files[1]");
    like($r->{out}, qr/\(\d+ applied now, 1 before\)/, 'and nothing twice');
    is(ingest_old([@placed]), ($n - 7) . '|7',
       'after it: the whole journal, the first 7 duplicates');
    my $cols = 'key, ts, id, kind, ts_ms, tenant, subject, client_ip, method, '
        . 'route, traceparent, stage, outcome, status, reason, score, signals, '
        . 'thresholds, rules, policy_version, node, source, shadow_reason, '
        . 'latency_ms, refusal, segment, line, prev_hash, hash, record';
    my $rows = "SELECT md5(string_agg(t::text, '|' ORDER BY segment, line)) FROM "
        . "(SELECT $cols, tableoid::regclass::text FROM decisions) t";
    my $revs = "SELECT md5(string_agg(t::text, '|' ORDER BY hash)) FROM (SELECT "
        . 'hash, review_of, verdict, analyst, note, ts_ms, ts, segment, line, '
        . 'prev_hash, record FROM reviews) t';
    is($pg->psql($rows, 'guard_old') . $pg->psql($revs, 'guard_old'),
       $pg->psql($rows) . $pg->psql($revs),
       'every row as in the store migrated at once (decisions, reviews)');
    # 0002's guard_int against 0001's (its regular expression) on numbers
    # jsonb writes in every form
    my @nums = qw(0 -0 1 -1 1e3 1E+2 1.0 10e-1 0.0e1 1.5 -0.0 0e5 -0e-2 1.5e1
                  25e-1 1e-3 1e17 1e18 999999999999999999 -999999999999999999
                  1000000000000000000 -1000000000000000000 9223372036854775807
                  123456789012345678.0 1799999999999 "5" null true [1] {});
    my $vals = join ',', map { "('$_')" } @nums;
    is($pg->psql("SELECT count(*) FROM (VALUES $vals) v(t), "
                 . "LATERAL (SELECT ('{\"a\":' || t || '}')::jsonb) x(r) "
                 . "WHERE guard_int(r, 'a') IS DISTINCT FROM "
                 . "(CASE WHEN jsonb_typeof(r -> 'a') = 'number' "
                 . "AND (r ->> 'a') ~ '^-?[0-9]{1,18}\$' "
                 . "THEN (r ->> 'a')::bigint END)"),
       "0\n", "guard_int: as 0001's on @{[ scalar @nums ]} numbers and others")
        or diag $pg->{err};
}
# 0003 on that store too: decisions without the index by place (no query
# uses it), the same indexes as the store migrated at once
my $idx = "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
    . "WHERE tablename = 'decisions'";
is($pg->psql($idx, 'guard_old'), $pg->psql($idx),
   'the same indexes on decisions in both stores');
is($pg->psql($idx), "decisions_id,decisions_pkey,decisions_reason_ts,"
   . "decisions_refusal_ts,decisions_subject_ts,decisions_tenant_ts\n",
   'decisions indexed by tenant and time, subject, reason, id, refusals by time');
# 0005: the time indexes ascending (guardd appends in time order), in both
# stores; newest first is a backward scan of the same index
my $defs = "SELECT string_agg(indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes "
    . "WHERE tablename = 'decisions' AND indexname LIKE '%\\_ts'";
is($pg->psql($defs, 'guard_old'), $pg->psql($defs),
   'the same time indexes in both stores');
is(join('', map { /\(([^)]*)\)/ ? "$1\n" : "?\n" } split /\n/, $pg->psql($defs)),
   "reason, ts\nts\nsubject, ts\ntenant, ts\n",
   '0005: the time indexes are ascending');
my $plan = $pg->psql('SET enable_seqscan = off; SET enable_bitmapscan = off; '
    . "EXPLAIN SELECT record FROM decisions WHERE tenant = 'acme' "
    . "AND ts > now() - interval '1 hour' ORDER BY ts DESC LIMIT 5");
like($plan, qr/Index Scan Backward using \S*tenant_ts/,
     'blocked --tenant: newest first by a backward scan of (tenant, ts)')
    or diag $plan;

# --- the same output from the journal and from the store ---------------------

sub same {
    my ($what, @args) = @_;
    my $j = ctl(@args, '--dir', $journal);
    my $d = ctl(@args, '--db', $dsn);
    my $e = ctl({ GUARD_DB => $dsn }, @args);
    # "(3 seconds ago)": the clock moves between the runs
    s/\(\d+ \w+ ago\)/(AGE ago)/g for $j->{out}, $d->{out}, $e->{out};
    ok($j->{exit} == $d->{exit} && $j->{out} eq $d->{out} && $e->{out} eq $d->{out}
       && $e->{exit} == $d->{exit},
       "$what: the same from the journal and from --db (and GUARD_DB)")
        or diag "journal ($j->{exit}):\n$j->{out}$j->{err}\ndb ($d->{exit}):\n$d->{out}$d->{err}";
    return ($j, $d);
}

my ($j, $d) = same('blocked', 'blocked');
like($j->{out}, qr/^TIME\s+DECISION/, 'blocked prints its table');
same('blocked --limit 3', 'blocked', '--limit', 3);
same('blocked --limit 0', 'blocked', '--limit', 0);
same('blocked --tenant acme --since 1h', 'blocked', '--tenant', 'acme', '--since', '1h');
same('blocked --since 3h --until 1h', 'blocked', '--since', '3h', '--until', '1h');
same('blocked --subject u2', 'blocked', '--subject', 'u2');
same('blocked --reason token_invalid', 'blocked', '--reason', 'token_invalid');
same('blocked --reason with no match', 'blocked', '--reason', 'residency');
same('blocked --json', 'blocked', '--json', '--limit', 0);
same('blocked --tenant beta --json', 'blocked', '--tenant', 'beta', '--json');
($j) = same('show (risk record, thresholds, a review)', 'show', $uuid->(8));
like($j->{out}, qr/Reviews \(1, oldest first\)/, 'show lists the review');
same('show --json', 'show', $uuid->(8), '--json');
same('show (guardd risk decision)', 'show', $risk_id);
same('show by a unique start, upper case', 'show', uc substr($uuid->(7), 0, 34));
same('show (no time)', 'show', $uuid->(11));
($j, $d) = same('show of an ambiguous start', 'show', '01900000-0000-7000-8000-0000000000');
is($d->{exit}, 1, 'an ambiguous start: exit 1');
like($d->{err}, qr/is the start of \d+ decision ids in the database/,
     'from the store, it says so');
$r = ctl('show', 'ffffffff', '--db', $dsn);
is($r->{exit}, 1, 'an unknown id from the store: exit 1');
like($r->{err}, qr/no record with id "ffffffff" in the database \(--db\)/, 'said');

# review --db: the id is looked up in the store
$r = ctl('review', $uuid->(2), '--verdict', 'false_positive', '--analyst', 'bob',
         '--db', $dsn, '--socket', "$dir/guardd.sock");
is($r->{exit}, 0, 'review --db: the id found in the store, sent to guardd')
    or diag $r->{err};
like($r->{out}, qr/^review of \Q${\ $uuid->(2)}\E journaled: [0-9a-f]{64}$/, 'and journaled');
$r = ctl('review', 'ffffffff', '--verdict', 'confirmed', '--analyst', 'bob',
         '--db', $dsn, '--socket', "$dir/guardd.sock");
is($r->{exit}, 1, 'review --db of an id the store does not have: exit 1');

# --- audit verify --db ----------------------------------------------------

@placed = journal_placed();
$n = @placed;
$r = ctl('audit', 'verify', '--dir', $journal, '--db', $dsn);
is($r->{exit}, 1, 'audit verify --db: the new review is not in the store yet');
like($r->{out}, qr/^NOT IN DATABASE: journal-000001\.jsonl line $n: /m,
     'it names the record missing from the store');
ingest([$placed[-1]]);
$r = ctl('audit', 'verify', '--dir', $journal, '--db', $dsn);
is($r->{exit}, 0, 'after the sink caught up: clean') or diag $r->{out};
like($r->{out}, qr/^ok: $n records, the chain is intact\nok: the database holds the journal's $n records, each row matching its record and chain hash$/,
     'both lines: the chain, then the store');
is(ctl({ GUARD_DB => $dsn }, 'audit', 'verify', '--dir', $journal)->{exit}, 0,
   'GUARD_DB too');

# a row missing, one too many, one altered, one with a bad hash
$pg->psql("DELETE FROM decisions WHERE id = '" . $uuid->(3) . "'");
$pg->psql("INSERT INTO reviews (hash, review_of, ts, segment, line, prev_hash, record) "
          . "VALUES (repeat('e', 64), 'x', now(), 'journal-000001.jsonl', 999, "
          . "repeat('0', 64), '{\"kind\": \"review\"}')");
$pg->psql("UPDATE decisions SET record = jsonb_set(record, '{status}', '200') "
          . "WHERE id = '" . $uuid->(4) . "'");
$pg->psql("UPDATE decisions SET hash = repeat('a', 64) WHERE id = '" . $uuid->(6) . "'");
$r = ctl('audit', 'verify', '--dir', $journal, '--db', $dsn);
is($r->{exit}, 1, 'audit verify --db with differences: exit 1');
like($r->{out}, qr/^NOT IN DATABASE: journal-000001\.jsonl line 3: /m, 'the deleted row');
like($r->{out}, qr/^NOT IN JOURNAL: journal-000001\.jsonl line 999: /m, 'the row the journal does not have');
like($r->{out}, qr/^DIFFERS: journal-000001\.jsonl line 4: /m, 'the altered row');
like($r->{out}, qr/^BAD HASH: journal-000001\.jsonl line 6: /m, 'the row with a wrong chain hash');
like($r->{out}, qr/^MISMATCH: $n journal records, $n database rows: 1 not in the database, 1 not in the journal, 1 differ, 1 with a bad hash$/m,
     'and the counts');

# --- the end ----------------------------------------------------------------

close $s;
is(end_guardd($pid) >> 8, 0, 'guardd exits 0');
is($sanitizer, 0, 'no sanitizer report from guardctl');
unlike(slurp("$dir/guardd.log"), qr/AddressSanitizer|runtime error|\berror\b/i,
       'no error in guardd\'s log');
my @pgerr = grep { /\b(ERROR|FATAL|PANIC):/ && !/no_such_function/ }
            split /\n/, slurp($pg->{log});
is("@pgerr", '', 'no error in PostgreSQL\'s log but the migration made to fail');

done_testing;
