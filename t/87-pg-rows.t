#!/usr/bin/perl

# guardd's PostgreSQL sink computes each record's columns itself and COPYs
# typed rows (migrations/0004_ingest_rows.sql, guardd_sink_pg.c rows_row);
# 0002's guard_ingest_staged() computed them in SQL from the record jsonb.
# Both must store exactly the same rows.  A journal of tricky records
# (members missing, of the wrong type, huge numbers, reals for integers,
# negative times, zero and subnormal reals, unicode and COPY's special
# characters, duplicates, reviews, lines that are not records) goes
# through guardd's sink (with a batch of 1: each record alone, and of 64:
# batches mixing records computed in guardd with records that are not)
# into its own database, and record by record through guard_stage and
# guard_ingest_staged() into another: every column of every row is the
# same, the records the old path refuses are exactly guardd's dead
# letters, and the duplicates are counted the same.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Guard::Services;
use Guard::Frames qw(:DEFAULT guardd_conf slurp write_text command);
use Guard::Outbox;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";
my $guardctl = $ENV{GUARDCTL} || "$repo/policy-engine/build/guardctl";
-x $guardd or BAIL_OUT("$guardd is missing: make -C policy-engine");
my $json = JSON::PP->new->canonical;

my ($dir, $redis, $p) = outbox_setup('pgrows');
my $base = $p->{dsn};
write_text("$dir/pol/acme.json", '{"tenant": "acme"}');

# the journal: one record per line, as text (the numbers as written)
my $t = 1764000000000;    # 2025-11-24, a month of its own partition
my $h = 'a' x 64;
my $hp = 'b' x 64;
my $ch = qq("prev_hash":"$hp");
my @lines = (
    # a refusal with every member
    qq({"id":"r-1","kind":"decision","ts_ms":$t,"tenant":"acme","subject":"u1","client_ip":"10.0.0.1","method":"GET","route":"/a","traceparent":"00-x","stage":"jwt","outcome":"deny","status":403,"reason":"token_invalid","score":0.75,"signals":{"a":0.1,"b":[1,2.50,1e2]},"thresholds":{"deny":0.9},"rules":["r1",{"x":null}],"policy_version":"v1","node":"n1","source":"module","shadow_reason":"s","latency_ms":1.25,$ch,"hash":"${h}01"}),
    # members missing: the key is the hash, kind decision, the time 0
    qq({$ch,"hash":"${h}02"}),
    # members of the wrong type
    qq({"id":5,"decision_id":"d-3","tenant":7,"status":"403","reason":["x"],"outcome":true,"score":"0.5","latency_ms":null,"kind":3,"ts_ms":"123",$ch,"hash":"${h}03"}),
    qq({"id":null,"decision_id":null,"kind":null,"tenant":null,"signals":null,$ch,"hash":"${h}04"}),
    # integers: beyond int4, at and beyond 10^18, beyond int8
    qq({"id":"n-5","ts_ms":$t,"status":3000000000,"reason":"big",$ch,"hash":"${h}05"}),
    qq({"id":"n-6","ts_ms":$t,"status":-2147483649,"reason":"neg",$ch,"hash":"${h}06"}),
    qq({"id":"n-7","ts_ms":$t,"status":1000000000000000000,"reason":"e18",$ch,"hash":"${h}07"}),
    qq({"id":"n-8","ts_ms":$t,"status":999999999999999999,"reason":"e18-1",$ch,"hash":"${h}08"}),
    qq({"id":"n-9","ts_ms":$t,"status":9223372036854775807,"reason":"max",$ch,"hash":"${h}09"}),
    qq({"id":"n-10","ts_ms":$t,"status":9223372036854775808,"reason":"over",$ch,"hash":"${h}10"}),
    qq({"id":"n-11","ts_ms":$t,"score":123456789012345678901234567890,$ch,"hash":"${h}11"}),
    # reals for the integers: their scale decides
    qq({"id":"f-12","ts_ms":$t,"status":403.0,"reason":"real",$ch,"hash":"${h}12"}),
    qq({"id":"f-13","ts_ms":$t,"status":4e2,"reason":"exp",$ch,"hash":"${h}13"}),
    qq({"id":"f-14","ts_ms":1.764e12,"status":429,"reason":"tsreal",$ch,"hash":"${h}14"}),
    qq({"id":"f-15","ts_ms":1764000000000.5,$ch,"hash":"${h}15"}),
    # times: negative, zero, far
    qq({"id":"t-16","ts_ms":-5,"outcome":"deny",$ch,"hash":"${h}16"}),
    qq({"id":"t-17","ts_ms":0,$ch,"hash":"${h}17"}),
    qq({"id":"t-18","ts_ms":99999999999999999,"subject":"bad",$ch,"hash":"${h}18"}),
    qq({"id":"t-19","ts_ms":-99999999999999999999,$ch,"hash":"${h}19"}),
    # score and latency: zero, negative zero, subnormal, underflow, huge
    qq({"id":"s-20","ts_ms":$t,"score":0.0,"latency_ms":-0.0,$ch,"hash":"${h}20"}),
    qq({"id":"s-21","ts_ms":$t,"score":0,"latency_ms":-0,$ch,"hash":"${h}21"}),
    qq({"id":"s-22","ts_ms":$t,"score":1e-310,"latency_ms":4.9e-324,$ch,"hash":"${h}22"}),
    qq({"id":"s-23","ts_ms":$t,"score":1e-400,$ch,"hash":"${h}23"}),
    qq({"id":"s-24","ts_ms":$t,"score":1.7976931348623157e308,"latency_ms":0.1,$ch,"hash":"${h}24"}),
    qq({"id":"s-25","ts_ms":$t,"score":1e400,$ch,"hash":"${h}25"}),
    qq({"id":"s-26","ts_ms":$t,"score":-9007199254740993,"latency_ms":0.30000000000000004,$ch,"hash":"${h}26"}),
    qq({"id":"s-27","ts_ms":$t,"score":2.2250738585072014e-308,"latency_ms":123456.789e-3,$ch,"hash":"${h}27"}),
    # strings: unicode, escapes, COPY's special characters
    qq({"id":"u-28","ts_ms":$t,"tenant":"\\u00fcml\\u00e4ut \\u2713 \\ud83d\\ude00","subject":"ümlaut ✓ 😀","route":"/a\\tb\\nc\\\\d\\re","method":"\\\\N","node":"","source":"\\"q\\"","reason":"x\\/y",$ch,"hash":"${h}28"}),
    qq({"id":"u-29","ts_ms":$t,"tenant":"\\ud800",$ch,"hash":"${h}29"}),
    qq({"id":"u-30","ts_ms":$t,"tenant":"a\\u0000b",$ch,"hash":"${h}30"}),
    # the refusal flag
    qq({"id":"g-31","ts_ms":$t,"outcome":"shadow_deny",$ch,"hash":"${h}31"}),
    qq({"id":"g-32","ts_ms":$t,"reason":"r","status":399,$ch,"hash":"${h}32"}),
    qq({"id":"g-33","ts_ms":$t,"reason":"r","status":400,$ch,"hash":"${h}33"}),
    qq({"id":"g-34","ts_ms":$t,"status":500,$ch,"hash":"${h}34"}),
    qq({"id":"g-35","ts_ms":$t,"outcome":"allow","reason":"r","status":"500",$ch,"hash":"${h}35"}),
    # reviews
    qq({"kind":"review","review_of":"r-1","verdict":"confirmed","analyst":"alice","note":"ok\\tfine","ts_ms":$t,"outcome":"deny",$ch,"hash":"${h}36"}),
    qq({"kind":"review","verdict":"x",$ch,"hash":"${h}37"}),
    qq({"kind":"review","review_of":"r-1","ts_ms":-1,$ch,"hash":"${h}38"}),
    qq({"kind":"Review","review_of":"r-1",$ch,"hash":"${h}39"}),
    # duplicates: the same id and time, the same review; the same id at
    # another time
    qq({"id":"r-1","kind":"decision","ts_ms":$t,"tenant":"other",$ch,"hash":"${h}40"}),
    qq({"kind":"review","review_of":"zzz",$ch,"hash":"${h}36"}),
    qq({"id":"r-1","ts_ms":@{[ $t + 1 ]},$ch,"hash":"${h}42"}),
    qq({"decision_id":"only-decision-id","ts_ms":$t,$ch,"hash":"${h}43"}),
    # a member given twice: the last one
    qq({"id":"k-44","id":"k-44b","ts_ms":$t,"status":1,"status":403,"reason":"twice",$ch,"hash":"${h}44"}),
    # lines that are not records
    qq(not json),
    qq([1,2]),
    qq("a string"),
    qq({"id":"no-hashes","ts_ms":$t}),
    qq({"id":"m-49","ts_ms":$t,"kind":"lifecycle","event":"start",$ch,"hash":"${h}49"}),
    # guardd's direct path (COPY into decisions): signals, thresholds and
    # rules as written (reals, their scale, spaces, an escaped key, a
    # member twice); times at the ends of its range and months apart
    qq({"id":"j-50","ts_ms":$t,"signals":{"b":[1,2.50,1e2,-0.0],"a":0.1},"thresholds":0.50,"rules":"x\\ty",$ch,"hash":"${h}50"}),
    qq({"id":"j-51", "ts_ms" : $t , "sign\\u0061ls" : [ 1.0 , {"a" : "}\\"]"} ] , "rules":null,$ch,"hash":"${h}51"}),
    qq({"id":"j-52","ts_ms":$t,"signals":{"x":1},"signals":{"y":2.0},$ch,"hash":"${h}52"}),
    qq({"id":"j-53","ts_ms":1,"thresholds":{},"rules":[],$ch,"hash":"${h}53"}),
    qq({"id":"j-54","ts_ms":946684799999,$ch,"hash":"${h}54"}),
    qq({"id":"j-55","ts_ms":946684800001,$ch,"hash":"${h}55"}),
    qq({"id":"j-56","ts_ms":253402300799999,$ch,"hash":"${h}56"}),
    qq({"id":"j-57","ts_ms":253402300800000,$ch,"hash":"${h}57"}),
    qq({"id":"j-58","ts_ms":4102444799999,"outcome":"deny",$ch,"hash":"${h}58"}),
    qq({"id":"j-59","ts_ms":1234567890123,"reason":"r","status":401,$ch,"hash":"${h}59"}),
);
# more ordinary records, so that the batches of 64 mix both ways
push @lines, map {
    qq({"id":"b-$_","ts_ms":@{[ $t + $_ ]},"tenant":"t@{[ $_ % 3 ]}","outcome":"deny","status":403,"reason":"rate_limited","score":0.$_,"latency_ms":$_.5,$ch,"hash":"${h}b$_"})
} 1 .. 150;
# the hashes: 64 hex digits (guardd reads the last one at its start)
s/"hash":"a{64}(\w+)"/'"hash":"' . sha256_hex($1) . '"'/e for @lines;

my $cols = 'key, ts, id, kind, ts_ms, tenant, subject, client_ip, method, '
    . 'route, traceparent, stage, outcome, status, reason, score, signals, '
    . 'thresholds, rules, policy_version, node, source, shadow_reason, '
    . 'latency_ms, refusal, segment, line, prev_hash, hash, record, '
    . 'tableoid::regclass::text';
my $rcols = 'hash, review_of, verdict, analyst, note, ts_ms, ts, segment, '
    . 'line, prev_hash, record';
sub rows {
    my ($db, $n) = @_;
    # each row as a JSON string: one line, its newlines escaped
    my @d = split /\n/, $p->psql("SELECT to_json(t::text) FROM (SELECT $cols FROM "
                                 . "decisions WHERE line <= $n) t ORDER BY segment, line", $db);
    my @r = split /\n/, $p->psql("SELECT to_json(t::text) FROM (SELECT $rcols FROM "
                                 . "reviews WHERE line <= $n) t ORDER BY segment, line", $db);
    return { decisions => \@d, reviews => \@r };
}
sub dsn_of { my ($db) = @_; return $base =~ s/dbname=guard\b/dbname=$db/r }
sub new_db {
    my ($db) = @_;
    $p->psql("CREATE DATABASE $db", 'postgres');
    die "create $db: $p->{err}" if $p->{exit};
    my $r = command($guardctl, 'db', 'migrate', '--db', dsn_of($db), '--dir',
                    "$repo/migrations");
    die "migrate $db: $r->{err}" if $r->{exit};
}

# guardd's sink, a batch of $batch, into the database $db: the journal's
# records and its dead letters (their lines)
my $n_journal;
sub through_guardd {
    my ($db, $batch) = @_;
    my $d = "$dir/$db";
    mkdir $d;
    mkdir "$d/journal";
    write_text("$d/journal/journal-000001.jsonl", join('', map { "$_\n" } @lines));
    new_db($db);
    # the calls of guard_ingest_rows(), counted (the direct path has none)
    $p->psql("ALTER DATABASE $db SET track_functions = 'pl'", 'postgres');
    my $sock = "$d/guardd.sock";
    my $msock = "$d/metrics.sock";
    write_text("$d/guardd.conf", guardd_conf($d, $sock,
        policies => "$dir/pol", node => 'gd-rows', metrics => $msock,
        sinks => { postgres => { dsn => dsn_of($db), batch => $batch },
                   state_dir => "$d/state" }));
    my $pid = spawn_guardd($guardd, "$d/guardd.conf", $sock, "$d/guardd.log");
    ok(-S $sock, "guardd (batch $batch) listens");
    ok(wait_caught_up($msock, 60, 'postgres'), "batch $batch: the sink caught up")
        or diag slurp("$d/guardd.log");
    # what it published up to here (guardd's own lifecycle records after
    # the tricky ones included); not what it may publish as it stops
    my $m = sink_metrics($msock);
    my @dead = map { $json->decode($_)->{line} } split /\n/,
        slurp("$d/state/sink-postgres.dead.jsonl");
    my @j = split /\n/, slurp("$d/journal/journal-000001.jsonl");
    end_guardd($pid);
    return (\@j, \@dead, $m);
}

# the old way: each line alone through guard_stage and
# guard_ingest_staged() (in a subtransaction of its own: a line refused
# is noted in t_refused, one counted as a duplicate in t_dups)
sub through_stage {
    my ($db, $journal) = @_;
    new_db($db);
    my $sql = 'CREATE TABLE t_refused (line bigint); '
        . 'CREATE TABLE t_dups (line bigint); ';
    for my $i (0 .. $#$journal) {
        my ($l, $n) = ($journal->[$i], $i + 1);
        die "a line with the quote" if $l =~ /\$g[qd]\$/;
        $sql .= "DO \$gd\$ DECLARE r record; BEGIN "
            . 'PERFORM guard_stage_open(); '
            . "INSERT INTO guard_stage (record, segment, line) VALUES "
            . "(\$gq\$$l\$gq\$, 'journal-000001.jsonl', $n); "
            . 'SELECT * INTO r FROM guard_ingest_staged(); '
            . "IF r.duplicates > 0 THEN INSERT INTO t_dups VALUES ($n); END IF; "
            . 'TRUNCATE guard_stage; '
            . "EXCEPTION WHEN others THEN INSERT INTO t_refused VALUES ($n); "
            . "END \$gd\$;\n";
        # psql's argument: at most 128 KB
        next if length $sql < 64 * 1024 && $i < $#$journal;
        $p->psql($sql, $db);
        die "the old way: $p->{err}" if $p->{exit};
        $sql = '';
    }
    my @refused = split /\n/,
        $p->psql('SELECT line FROM t_refused ORDER BY line', $db);
    my ($dups) = $p->psql('SELECT count(*) FROM t_dups', $db) =~ /(\d+)/;
    return (\@refused, $dups);
}

for my $batch (1, 64) {
    my ($journal, $dead, $m) = through_guardd("rows$batch", $batch);
    my ($refused, $dups) = through_stage("stage$batch", $journal);
    my $new = rows("rows$batch", scalar @$journal);
    my $old = rows("stage$batch", scalar @$journal);
    ok(@{ $old->{decisions} } > 150 && @{ $old->{reviews} } >= 2,
       "batch $batch: the old way stored @{[ scalar @{ $old->{decisions} } ]} "
       . "decisions and @{[ scalar @{ $old->{reviews} } ]} reviews");
    is_deeply($new->{decisions}, $old->{decisions},
              "batch $batch: every column of every decision as the old way");
    is_deeply($new->{reviews}, $old->{reviews},
              "batch $batch: every column of every review as the old way");
    is_deeply($dead, $refused,
              "batch $batch: the dead letters are the lines the old way refuses "
              . "(@$refused)");
    is($m->{'guardd_sink_duplicates_total{sink="postgres"}'}, $dups,
       "batch $batch: $dups duplicates counted, as the old way");
    is($m->{'guardd_sink_published_total{sink="postgres"}'},
       @{ $old->{decisions} } + @{ $old->{reviews} },
       "batch $batch: published, one per row");
    # most batches went straight into decisions (guardd_sink_pg.c
    # path_direct); the reviews, the records it does not compute and the
    # duplicates (the batch again, conflicts ignored) through guard_rows
    my ($calls) = $p->psql('SELECT coalesce(sum(calls), 0) FROM '
        . "pg_stat_user_functions WHERE funcname = 'guard_ingest_rows'",
        "rows$batch") =~ /(\d+)/;
    my $batches = int((@$journal + $batch - 1) / $batch);
    ok($calls > 0 && ($batch > 1 || $calls < $batches / 2),
       "batch $batch: $calls of some $batches batches through guard_rows");

    next if $batch != 1;
    # the lines refused: not JSON, not an object, no hashes, a review
    # without review_of, times and reals PostgreSQL cannot hold, unicode
    # jsonb refuses
    my %dead = map { $_ => 1 } @$dead;
    for my $what ('"t-18"', '"s-23"', '"s-25"', '"u-29"', '"u-30"',
                  '"verdict":"x"', 'not json', '[1,2]', '"a string"',
                  '"no-hashes"') {
        my ($at) = grep { index($lines[$_], $what) >= 0 } 0 .. $#lines;
        ok($dead{ $at + 1 }, "a dead letter: $what");
    }
}

done_testing();
