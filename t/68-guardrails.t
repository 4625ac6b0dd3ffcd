#!/usr/bin/perl

# The guardrails stage end to end: each target (uri, args, arg:NAME,
# header:NAME, body, json:POINTER, json:*, form:NAME) and action (block,
# redact, score, log), the redactions as the upstream sees them (an
# echoing backend: the original never reaches it), the anomaly threshold,
# shadow rules and sections, a ReDoS-style pattern stopped by the match
# limit (closed and open), GET without a body, guard_guardrails off, an
# error_page, the variables, the counters, the anomaly score in guardd's
# DECIDE (inline_score), and the audit records in guardd's journal, which
# never hold the matched text.  Bodies (encodings, sizes, chunked, temp
# files) are in t/68-guardrails-body.t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP ();
use Time::HiRes qw(sleep time);
use Guard::Test;
use Guard::Echo;
use Guard::Frames qw(:DEFAULT journal_records guardd_conf);

my $repo = "$FindBin::Bin/..";
my $guardd = $ENV{GUARDD} || "$repo/policy-engine/build/guardd";

my $t = Guard::Test->new;
my $keys = $t->jwt_keys;
my $dir = $t->dir;
my $sock = "$dir/guardd.sock";
my $json = JSON::PP->new->canonical;

# the secrets of the requests: none may reach the upstream, a record or
# the error log
my $EMAIL = 'alice.secret@example.com';
my $CARD = '4111 1111 1111 1111';
my $KEY = 'sk-q7w8e9r0';
my $EMAIL2 = 'bob.hidden@example.org';
my $SSN = '536-22-8726';

sub policy {
    my ($tenant, $gr, %more) = @_;
    $t->write_file("pol/$tenant.json",
                   $json->encode({ tenant => $tenant, guardrails => $gr,
                                   %more }));
}

policy('tg', { rules => [
    { id => 't-uri', targets => ['uri'], pattern => 'evil-uri',
      action => 'block' },
    { id => 't-args', targets => ['args'], pattern => 'evil-args',
      action => 'block' },
    { id => 't-arg', targets => ['arg:q'], pattern => 'evil-arg\b',
      action => 'block' },
    { id => 't-header', targets => ['header:X-Probe'],
      pattern => 'evil-header', flags => 'i', action => 'block' },
    { id => 't-body', targets => ['body'], pattern => 'evil-body',
      action => 'block' },
    { id => 't-json', targets => ['json:/cmd'], pattern => 'evil-json',
      action => 'block' },
    { id => 't-json-all', targets => ['json:*'], pattern => 'evil-deep',
      action => 'block' },
    { id => 't-form', targets => ['form:comment'], pattern => 'evil-form',
      action => 'block' },
] });

policy('rd', { rules => [
    { id => 'r-arg', targets => ['arg:email'], detector => 'email',
      action => 'redact' },
    { id => 'r-header', targets => ['header:X-Card'], detector => 'card',
      action => 'redact' },
    { id => 'r-body', targets => ['body'], pattern => 'sk-[a-z0-9]{8}',
      action => 'redact', kind => 'key' },
    { id => 'r-json', targets => ['json:*'], detector => 'email',
      action => 'redact' },
    { id => 'r-form', targets => ['form:comment'], detector => 'ssn',
      action => 'redact' },
] });

policy('sc', { threshold => 7, rules => [
    { id => 's-alpha', targets => ['body'], pattern => 'alpha',
      action => 'score', weight => 3 },
    { id => 's-beta', targets => ['body'], pattern => 'beta',
      action => 'score', weight => 4 },
    { id => 'l-gamma', targets => ['body'], pattern => 'gamma',
      action => 'log' },
] }, risk => {
    thresholds => { step_up => 40, deny => 70 },
    signals => [ { id => 'inline', weight => 100,
                   when => { inline_score_over => 2 } } ],
});

policy('sr', { rules => [
    { id => 'sr-block', targets => ['body'], pattern => 'evil',
      action => 'block', shadow => JSON::PP::true },
] });

policy('sh', { shadow => JSON::PP::true, rules => [
    { id => 'sh-block', targets => ['body'], pattern => 'evil',
      action => 'block' },
] });

for my $mode ('closed', 'open') {
    policy("rx-$mode", { on_error => $mode, match_limit => 1000,
                         rules => [
        { id => 'redos', targets => ['body'], pattern => '(a+)+b',
          action => 'block' },
    ] });
}

# a pack: the policy directory's packs/pii.json, included by name
$t->write_file('pol/packs/pii.json',
               Guard::Frames::slurp("$repo/policies/packs/pii.json"));
policy('pk', { packs => ['pii'] });

$t->write_file('guardd.conf', guardd_conf($dir, $sock,
    policies => "$dir/pol", node => 'gd-guardrails'));
my $gpid = spawn_guardd($guardd, "$dir/guardd.conf", $sock,
                        "$dir/guardd.log");
ok(-S $sock, 'guardd runs') or diag $t->read_file('guardd.log');

Guard::Echo::start($t, 1);

$t->write_conf(http => <<'CONF');
    guard_sidecar unix:%%DIR%%/guardd.sock timeout=2s connections=1;
    guard_policies %%DIR%%/pol;

    server {
        listen 127.0.0.1:%%PORT_0%%;
        guard_jwt_keys %%KEYS%%/jwks.json;

        add_header X-GR-Score $guard_guardrails_score always;
        add_header X-GR-Hits $guard_guardrails_hits always;
        add_header X-Reason $guard_reason always;
        add_header X-Id $guard_decision_id always;

        location = /status { guard_status; }

        location ~ ^/t/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/off/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            guard_guardrails off;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/risk/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            guard_risk on;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location ~ ^/ep/(?<tn>[^/]+)/ {
            guard on;
            guard_tenant $tn;
            error_page 403 = @refused;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        # an internal redirect to other settings: decided again
        location /tf/ {
            guard on;
            guard_tenant tg;
            guard_guardrails off;
            try_files /nowhere @inspect;
        }

        location @inspect {
            guard on;
            guard_tenant tg;
            proxy_pass http://127.0.0.1:%%PORT_1%%;
        }

        location @refused {
            return 200 "fallback $guard_reason $guard_guardrails_hits\n";
        }
    }
CONF
$t->run;

my %tok;
my @tenants = qw(tg rd sc sr sh rx-closed rx-open pk);
@tok{@tenants} = $t->mint(
    map { { kid => 'hs256', claims => { sub => "u-$_", tenant_id => $_,
                                        exp => time + 3600 } } } @tenants);

# a request of a tenant: req(METHOD, PATH, TENANT, body => .., ct => ..,
# headers => [..])
sub req {
    my ($method, $path, $tenant, %o) = @_;
    my @h = (Authorization => "Bearer $tok{$tenant}", @{ $o{headers} // [] });
    push @h, 'Content-Type' => $o{ct} if $o{ct};
    return $t->http($method, $path, headers => \@h,
                    defined $o{body} ? (body => $o{body}) : ());
}

my $J = 'application/json';
my $F = 'application/x-www-form-urlencoded';
my %ids;    # decision id -> what the journal should say

# ---------------------------------------------------------------------------
# each target, with the block action

my $r = req('GET', '/t/tg/plain?q=fine', 'tg');
is($r->{status}, 200, 'GET without a body passes');
is($r->{headers}{'x-gr-score'}, '0', 'its score is 0');
is(Guard::Echo::echo($r)->{path}, '/t/tg/plain?q=fine', 'sent as it came');

for my $case (
    [ 'uri', 'GET', '/t/tg/evil-uri', {}, 't-uri' ],
    [ 'uri, percent-encoded', 'GET', '/t/tg/%65vil-uri', {}, 't-uri' ],
    [ 'args', 'GET', '/t/tg/a?x=1&y=evil-args', {}, 't-args' ],
    [ 'arg:q', 'GET', '/t/tg/a?q=evil-arg', {}, 't-arg' ],
    [ 'header:X-Probe', 'GET', '/t/tg/a',
      { headers => ['X-Probe' => 'EVIL-Header'] }, 't-header' ],
    [ 'body', 'POST', '/t/tg/a', { body => 'x evil-body y', ct => 'text/plain' },
      't-body' ],
    [ 'json:/cmd', 'POST', '/t/tg/a',
      { body => '{"cmd": "run evil-json"}', ct => $J }, 't-json' ],
    [ 'json:*', 'POST', '/t/tg/a',
      { body => '{"a": [{"b": {"c": "x evil-deep"}}]}', ct => $J },
      't-json-all' ],
    [ 'form:comment', 'POST', '/t/tg/a',
      { body => 'name=x&comment=an+evil-form', ct => $F }, 't-form' ],
) {
    my ($what, $method, $path, $o, $rule) = @$case;
    $r = req($method, $path, 'tg', %$o);
    my $id = problem_ok($r, 'guardrail_blocked', "$what: blocked");
    is($r->{headers}{'x-gr-hits'}, $rule, "$what: \$guard_guardrails_hits");
    $ids{$id} = { reason => 'guardrail_blocked', rule => $rule } if $id;
}

# the same text where the rule does not look
for my $case (
    [ 'arg:q looks at q only', 'GET', '/t/tg/a?other=evil-arg', {} ],
    [ 'header:X-Probe looks at X-Probe only', 'GET', '/t/tg/a',
      { headers => ['X-Other' => 'evil-header'] } ],
    [ 'json:/cmd looks at /cmd only', 'POST', '/t/tg/a',
      { body => '{"cmd": "ls", "note": "evil-json"}', ct => $J } ],
    [ 'form:comment looks at comment only', 'POST', '/t/tg/a',
      { body => 'name=evil-form&comment=ok', ct => $F } ],
) {
    my ($what, $method, $path, $o) = @$case;
    is(req($method, $path, 'tg', %$o)->{status}, 200, $what);
}

$r = req('GET', '/off/tg/evil-uri', 'tg');
is($r->{status}, 200, 'guard_guardrails off: not inspected');
ok(!defined $r->{headers}{'x-gr-score'}, 'guard_guardrails off: no score');

# ---------------------------------------------------------------------------
# redaction: what the upstream sees

$r = req('POST', "/t/rd/a?email=$EMAIL&keep=1", 'rd',
         headers => ['X-Card' => $CARD], ct => 'text/plain',
         body => "token $KEY end");
is($r->{status}, 200, 'redacted request passes');
my $e = Guard::Echo::echo($r);
is($e->{path}, '/t/rd/a?email=%5BREDACTED%3Aemail%5D&keep=1',
   'arg redacted upstream (proxy_pass without URI)');
is($e->{header}{'x-card'}, '[REDACTED:card]', 'header redacted upstream');
is($e->{body}, 'token [REDACTED:key] end', 'raw body redacted upstream');
is($e->{header}{'content-length'}, length $e->{body},
   'Content-Length of the redacted body');
is($r->{headers}{'x-gr-hits'}, 'r-arg,r-header,r-body',
   'the redact rules in $guard_guardrails_hits');
for my $secret ($EMAIL, $CARD, $KEY) {
    unlike($r->{body}, qr/\Q$secret\E/, "upstream never sees '$secret'");
}

my $chat = $json->encode({ model => 'm', messages => [
    { role => 'user', content => "mail $EMAIL2 now" } ] });
$r = req('POST', '/t/rd/chat', 'rd', ct => $J, body => $chat);
$e = Guard::Echo::echo($r);
my $doc = eval { $json->decode($e->{body}) } // {};
is($doc->{messages}[0]{content}, 'mail [REDACTED:email] now',
   'json:* redacted upstream');
is($doc->{model}, 'm', 'the rest of the JSON body kept');
is($e->{header}{'content-length'}, length $e->{body},
   'Content-Length of the redacted JSON body');
unlike($r->{body}, qr/\Q$EMAIL2\E/, 'upstream never sees the JSON e-mail');

$r = req('POST', '/t/rd/form', 'rd', ct => $F,
         body => "comment=my+ssn+$SSN&x=1");
$e = Guard::Echo::echo($r);
like($e->{body}, qr/^comment=my\+ssn\+.*REDACTED.*&x=1$/,
     'form:comment redacted upstream') or diag $e->{body};
unlike($e->{body}, qr/\Q$SSN\E/, 'upstream never sees the SSN');
is($e->{header}{'content-length'}, length $e->{body},
   'Content-Length of the redacted form');
my $redact_id = $r->{headers}{'x-id'};

# the pii pack on a chat body
$chat = $json->encode({ messages => [
    { role => 'system', content => 'be brief' },
    { role => 'user', content => "I am $EMAIL2, card $CARD" } ] });
$r = req('POST', '/t/pk/v1/chat', 'pk', ct => $J, body => $chat);
$e = Guard::Echo::echo($r);
$doc = eval { $json->decode($e->{body}) } // {};
is($doc->{messages}[1]{content},
   'I am [REDACTED:email], card [REDACTED:card]', 'the pii pack redacts');
is($doc->{messages}[0]{content}, 'be brief', 'and leaves the rest');
is($r->{headers}{'x-gr-hits'}, 'pii-email,pii-card', 'its rule ids');

# ---------------------------------------------------------------------------
# score, threshold, log

$r = req('POST', '/t/sc/a', 'sc', ct => 'text/plain', body => 'alpha');
is($r->{status}, 200, 'score under the threshold passes');
is($r->{headers}{'x-gr-score'}, '3', '$guard_guardrails_score');
$r = req('POST', '/t/sc/a', 'sc', ct => 'text/plain', body => 'alpha beta');
my $id = problem_ok($r, 'guardrail_anomaly', 'score at the threshold');
is($r->{headers}{'x-gr-score'}, '7', 'the score that refused');
$ids{$id} = { reason => 'guardrail_anomaly', rule => 's-alpha' } if $id;
$r = req('POST', '/t/sc/a', 'sc', ct => 'text/plain', body => 'gamma');
is($r->{status}, 200, 'a log rule passes');
is($r->{headers}{'x-gr-hits'}, 'l-gamma', 'and names its rule');
my $log_id = $r->{headers}{'x-id'};

# the score goes to guardd (inline_score_over 2 weighs 100: deny)
$r = req('POST', '/risk/sc/a', 'sc', ct => 'text/plain', body => 'alpha');
problem_ok($r, 'risk_deny', 'inline_score reaches guardd');
is(req('POST', '/risk/sc/a', 'sc', ct => 'text/plain',
       body => 'gamma')->{status}, 200, 'inline_score 0: allowed');

# ---------------------------------------------------------------------------
# shadow

$r = req('POST', '/t/sr/a', 'sr', ct => 'text/plain', body => 'evil');
is($r->{status}, 200, 'a shadow rule does not refuse');
is($r->{headers}{'x-reason'}, 'guardrail_blocked', 'it is a shadow refusal');
$r = req('POST', '/t/sh/a', 'sh', ct => 'text/plain', body => 'evil');
is($r->{status}, 200, 'a shadow section does not refuse');
is($r->{headers}{'x-reason'}, 'guardrail_blocked', 'it is a shadow refusal');

# ---------------------------------------------------------------------------
# a ReDoS-style pattern: the match limit ends it

# (a run of a's without a b, then a match: the prefilter lets the pattern
# run, since it can match, and PCRE2 backtracks over the run)
my $redos = ('a' x 40) . '! ab';
$r = req('POST', '/t/rx-closed/a', 'rx-closed', ct => 'text/plain',
         body => $redos);
$id = problem_ok($r, 'guardrail_error', 'match limit, on_error closed');
$ids{$id} = { reason => 'guardrail_error' } if $id;
$r = req('POST', '/t/rx-open/a', 'rx-open', ct => 'text/plain',
         body => $redos);
is($r->{status}, 200, 'match limit, on_error open: passes');
is($r->{headers}{'x-reason'}, 'guardrail_error', 'with a shadow marker');

# ---------------------------------------------------------------------------
# error_page

$r = req('POST', '/ep/tg/a', 'tg', ct => 'text/plain', body => 'evil-body');
is($r->{status}, 200, 'error_page 403 serves the fallback');
is($r->{body}, "fallback guardrail_blocked t-body\n",
   'the fallback sees $guard_reason and $guard_guardrails_hits');

# ---------------------------------------------------------------------------
# an internal redirect to a location with other settings

$r = req('POST', '/tf/a', 'tg', ct => 'text/plain', body => 'evil-body');
problem_ok($r, 'guardrail_blocked', 'inspected again after try_files');
$r = req('POST', '/tf/a', 'tg', ct => 'text/plain', body => 'fine body');
is(Guard::Echo::echo($r)->{body}, 'fine body',
   'after try_files, the body reaches the upstream');

# ---------------------------------------------------------------------------
# counters

my $st = eval { $json->decode($t->get('/status')->{body}) } // {};
cmp_ok($st->{guardrails}{verdicts}{blocked} // 0, '>=', 10,
       'guard_status counts blocked verdicts');
cmp_ok($st->{guardrails}{hits}{redact} // 0, '>=', 5,
       'guard_status counts redact hits');
cmp_ok($st->{refused}{guardrail_blocked} // 0, '>=', 10,
       'and the refusals per reason');
my $prom = $t->get('/status?format=prometheus')->{body};
like($prom, qr/^guard_guardrails_verdicts_total\{verdict="anomaly"\} 1$/m,
     'Prometheus: verdicts');
like($prom, qr/^guard_guardrails_hits_total\{action="log"\} [1-9]/m,
     'Prometheus: hits per action');

# ---------------------------------------------------------------------------
# the audit records: in guardd's journal, never the matched text

my %by;
my $end = time + 15;
my @want = (keys %ids, grep { defined } $redact_id, $log_id);
while (1) {
    %by = ();
    push @{ $by{$_->{id} // ''} }, $_ for journal_records("$dir/journal");
    last if !grep { !$by{$_} } @want or time > $end;
    sleep 0.1;
}

for my $id (sort keys %ids) {
    my $rec = $by{$id}[0] // {};
    is($rec->{stage}, 'guardrails', "$ids{$id}{reason}: stage");
    is($rec->{reason}, $ids{$id}{reason}, "$ids{$id}{reason}: reason");
    is($rec->{outcome}, 'deny', "$ids{$id}{reason}: outcome");
    ok(ref $rec->{guardrails} eq 'HASH', "$ids{$id}{reason}: guardrails")
        or next;
    next unless $ids{$id}{rule};
    is($rec->{guardrails}{hits}[0]{rule}, $ids{$id}{rule},
       "$ids{$id}{reason}: the rule");
}

my $rec = $redact_id ? $by{$redact_id}[0] // {} : {};
is($rec->{outcome}, 'redact', 'a redacted request has a record: redact');
is($rec->{guardrails}{hits}[0]{action}, 'redact', 'its hit');
ok(defined $rec->{guardrails}{hits}[0]{offset}, 'with the offset');
$rec = $log_id ? $by{$log_id}[0] // {} : {};
is($rec->{outcome}, 'log', 'a logged hit has a record: log');
is($rec->{guardrails}{hits}[0]{rule}, 'l-gamma', 'naming the rule');

my $journal = join '', map { Guard::Frames::slurp($_) }
                       glob "$dir/journal/*";
my $errlog = $t->errlog;
for my $secret ($EMAIL, $CARD, $KEY, $EMAIL2, $SSN, 'evil-body',
                'evil-deep', 'EVIL-Header')
{
    unlike($journal, qr/\Q$secret\E/, "the journal never holds '$secret'");
    unlike($errlog, qr/\Q$secret\E/, "the error log never holds '$secret'");
}

$t->stop;
end_guardd($gpid);
$t->errlog_ok;

done_testing;
