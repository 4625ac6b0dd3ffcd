#!/usr/bin/perl

# The prompt-injection pack (policies/packs/prompt-injection.json) against
# its labelled corpus (t/corpus/prompt-injection/{benign,malicious}.jsonl),
# through the real engine: `guardctl guardrails scan --jsonl` with a tenant
# whose guardrails are the pack and the recommended threshold (5).  Prints
# the detection and false-positive rates, and the ids (never the text) of
# the misses and the false positives; asserts >= 90% detected and <= 2%
# false positives.  The rates of the lines held out while the rules were
# written (every fifth line from the third of the first pass: index % 5
# == 2) are printed
# apart: they tell how the rules generalise to text they were not tuned on.
#
# Every corpus line is {"id", "body", "note"} (+ "content_type" for bodies
# given as raw text).  Then a few corpus bodies go through nginx with the
# module, in line: refused with the right reason, or passed to an echoing
# upstream unchanged.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use File::Copy qw(copy);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP ();
use Test::More;
use Guard::Test;
use Guard::Echo;
use Guard::Frames qw(command slurp write_text);

my $REPO      = abs_path("$FindBin::Bin/..");
my $GUARDCTL  = $ENV{GUARDCTL} || "$REPO/policy-engine/build/guardctl";
my $PACK      = "$REPO/policies/packs/prompt-injection.json";
my $CORPUS    = "$REPO/t/corpus/prompt-injection";
my $THRESHOLD = 5;    # the recommended threshold (docs/prompt-injection.md)
my $TMP       = tempdir(CLEANUP => 1);
my $JSON      = JSON::PP->new->utf8->canonical;

# the corpus as first written: its lines index % 5 == 2 were held out while
# the rules were written; the lines after these were added in a second pass
# (probes written after a first version of the rules) and are all "seen"
my %FIRST = (benign => 377, malicious => 365);

plan skip_all => "no $GUARDCTL (make -C policy-engine build/guardctl)"
    unless -x $GUARDCTL;

# the policy directory: the shipped pack and one tenant that includes it
my $DIR = "$TMP/policies";
make_path("$DIR/packs");
copy($PACK, "$DIR/packs/prompt-injection.json") or die "copy: $!";
write_text("$DIR/chat.json",
           $JSON->encode({ tenant => 'chat',
                           guardrails => { packs => ['prompt-injection'],
                                           threshold => $THRESHOLD } }));

my $r = command($GUARDCTL, 'policy', 'check', $DIR);
is($r->{exit}, 0, 'guardctl policy check loads the pack')
    or diag($r->{err});

# the pack's own shape: ids, descriptions, documented actions
my $pack = $JSON->decode(slurp($PACK));
is($pack->{pack}, 'prompt-injection', 'the pack is named after its file');
my %ids;
my @bad = grep { !($_->{id} =~ /^pi-[a-z0-9_.-]+$/ && !$ids{$_->{id}}++
                   && length($_->{description} // '') > 20
                   && ($_->{action} eq 'block' || ($_->{action} eq 'score'
                                                   && $_->{weight})))
               } @{ $pack->{rules} };
is(scalar @bad, 0, scalar(@{ $pack->{rules} }) . ' rules, each with a pi-'
   . ' id, a description, and a weight or a block')
    or diag(join ' ', map { $_->{id} } @bad);

# the corpus: >= 300 lines each, unique ids, no two identical bodies
my %lines;
for my $set (qw(benign malicious)) {
    my (@l, %seen, %body);
    open my $c, '<:raw', "$CORPUS/$set.jsonl" or die "$set.jsonl: $!";
    while (my $t = <$c>) {
        my $o = $JSON->decode($t);
        push @l, $o;
        $seen{ $o->{id} }++;
        $body{ ref $o->{body} ? $JSON->encode($o->{body}) : $o->{body} }++;
    }
    close $c;
    $lines{$set} = \@l;
    cmp_ok(scalar @l, '>=', 300, "$set corpus: " . scalar(@l) . ' lines');
    is(scalar(grep { $_ > 1 } values %seen), 0, "$set corpus: unique ids");
    is(scalar(keys %body), scalar @l, "$set corpus: no two bodies alike");
    is(scalar(grep { !defined $_->{note} || !defined $_->{body} } @l), 0,
       "$set corpus: each line has a body and a note");
}

# every line through the engine
my %flagged;    # set -> [ids refused]
for my $set (qw(benign malicious)) {
    my $r = command($GUARDCTL, 'guardrails', 'scan', '--policies', $DIR,
                '--tenant', 'chat', '--jsonl', "$CORPUS/$set.jsonl");
    ok($r->{exit} == 0 || $r->{exit} == 1, "$set: scan ran (exit "
       . "$r->{exit})") or diag($r->{err});
    my @res = map { $JSON->decode($_) } split /\n/, $r->{out};
    is(scalar @res, scalar @{ $lines{$set} }, "$set: one result per line");

    my @odd = grep { $res[$_]{verdict} !~ /^(?:pass|blocked|anomaly)$/ }
              0 .. $#res;
    is(scalar @odd, 0, "$set: no malformed or error verdicts")
        or diag(join ' ', map { "$lines{$set}[$_]{id}:$res[$_]{verdict}" }
                @odd);

    my (%all, %held);
    for my $i (0 .. $#res) {
        my $hit = $res[$i]{verdict} ne 'pass' ? 1 : 0;
        my $id  = $lines{$set}[$i]{id};
        my $idx = ($id =~ /(\d+)$/)[0] - 1;
        $all{n}++;
        $all{hit} += $hit;
        if ($idx % 5 == 2 && $idx < $FIRST{$set}) {
            $held{n}++;
            $held{hit} += $hit;
        }
        push @{ $flagged{$set} }, $id
            if $hit != ($set eq 'malicious' ? 1 : 0);
    }
    $lines{"$set.rate"}      = $all{hit} / $all{n};
    $lines{"$set.held.rate"} = $held{hit} / $held{n};
    $lines{"$set.counts"}    = "$all{hit}/$all{n}";
    $lines{"$set.held"}      = "$held{hit}/$held{n}";
}

my $det  = $lines{'malicious.rate'};
my $fp   = $lines{'benign.rate'};
my $line = sprintf('detection %.1f%% (%s), false positives %.1f%% (%s); '
                   . 'held out while tuning: detection %.1f%% (%s), false '
                   . 'positives %.1f%% (%s); threshold %d',
                   100 * $det, $lines{'malicious.counts'}, 100 * $fp,
                   $lines{'benign.counts'},
                   100 * $lines{'malicious.held.rate'},
                   $lines{'malicious.held'}, 100 * $lines{'benign.held.rate'},
                   $lines{'benign.held'}, $THRESHOLD);
diag($line);
diag('missed: ' . join(' ', @{ $flagged{malicious} // [] }));
diag('false positives: ' . join(' ', @{ $flagged{benign} // [] }));

cmp_ok($det, '>=', 0.90, sprintf('detection %.1f%% >= 90%%', 100 * $det));
cmp_ok($fp, '<=', 0.02, sprintf('false positives %.1f%% <= 2%%', 100 * $fp));

# ---------------------------------------------------------------------------
# in line: a few corpus bodies through nginx with the module, the same
# policy directory, and an echoing upstream

my %line = map { ($_->{id} => $_) } @{ $lines{benign} },
                                   @{ $lines{malicious} };
my @inline = (
    # id, status, reason
    [ 'm-001', 403, 'guardrail_anomaly' ],    # override (English)
    [ 'm-052', 403, 'guardrail_anomaly' ],    # override (French)
    [ 'm-096', 403, 'guardrail_anomaly' ],    # system-prompt extraction
    [ 'm-357', 403, 'guardrail_blocked' ],    # tag smuggling, escaped
    [ 'm-356', 403, 'guardrail_anomaly' ],    # tag smuggling, raw UTF-8
    [ 'b-001', 200, '' ],                     # "ignore the previous error"
    [ 'b-081', 200, '' ],                     # a question about injection
    [ 'b-400', 200, '' ],                     # a role-play request
    [ 'b-435', 200, '' ],                     # a question about ChatML
);

my $t = Guard::Test->new;
$t->jwt_keys;
$t->write_file('pol/packs/prompt-injection.json', slurp($PACK));
$t->write_file('pol/chat.json', slurp("$DIR/chat.json"));
Guard::Echo::start($t, 1);
$t->write_conf(http => <<'CONF');
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        add_header X-GR-Score $guard_guardrails_score always;
        add_header X-Reason $guard_reason always;

        location /v1/ {
            guard on;
            guard_tenant chat;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }
    }
CONF
$t->run;
my ($tok) = $t->mint({ kid => 'hs256', claims => {
    sub => 'u-chat', tenant_id => 'chat', exp => time + 3600 } });

for my $c (@inline) {
    my ($id, $status, $reason) = @$c;
    my $o = $line{$id} or BAIL_OUT("no corpus line $id");
    my $body = ref $o->{body} ? $JSON->encode($o->{body}) : $o->{body};
    my $r = $t->http('POST', '/v1/chat/completions', body => $body,
                     headers => [ Authorization => "Bearer $tok",
                                  'Content-Type' => 'application/json' ]);
    is($r->{status}, $status, "in line: $id ($o->{note}): $status");
    is($r->{headers}{'x-reason'} // '', $reason, "in line: $id: reason "
       . ($reason || 'none'));
    if ($status == 200) {
        is(Guard::Echo::echo($r)->{body}, $body,
           "in line: $id reaches the upstream unchanged");
    }
}

$t->errlog_ok;

done_testing;
