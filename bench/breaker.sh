#!/usr/bin/env bash
# bench/breaker.sh: the circuit breaker (`guard_breaker`), A/B interleaved
# on one nginx worker, with wrk on loopback.  Every guarded variant has a
# cached HS256 token and a tenant (acme, whose policy has a `breaker`
# section); every proxy goes over keepalive connections to a location of
# the same server (the one worker serves the backend's request too).
#
#   guard-proxy    guard in front of proxy_pass to empty_gif, no breaker
#   guard-breaker  the same with `guard_breaker api;`: the breaker closed,
#                  the upstream healthy (every answer recorded as a call)
#   guard-fail     guard, no breaker, in front of an upstream that answers
#                  502 (`return 502`): the rate at which a failing upstream
#                  answers through nginx
#   guard-refused  guard, no breaker, in front of a port nobody listens on
#                  (connection refused, 502; nginx logs every one)
#   guard-timeout  guard, no breaker, in front of an upstream that takes the
#                  connection and never answers: it fails by timing out
#                  (proxy_read_timeout TIMEOUT_MS, 250 ms by default, a
#                  tight production setting; nginx's default is 60 s), 504
#   guard-open     guard with `guard_breaker down;` in front of the 502
#                  upstream, the breaker opened before the rounds: every
#                  request refused at once with 503 circuit_open
#   guard-empty    guard in front of empty_gif, no proxy: guard's quickest
#                  answer, the ceiling of guard-open
#
# Prints ratios to guard-proxy and guard-fail; the closed breaker's cost
# over the guard path (goal: at most 0.02x, a ratio of at least 0.98), the
# open breaker's rate over the failing upstream's (goal: at least 3x) and
# over guard-empty's.  The 502 upstream answers at once, in the same
# worker: the hardest case for the open breaker's ratio (bounded by what a
# proxied request costs nginx over an answer of its own); the timing-out
# upstream is the failure a breaker is for (its rate is CONNS over the
# timeout, whatever the machine).
#
# Then an outage, side by side with nginx's passive health checks: for
# OUTAGE seconds (20) wrk sends CONNS connections' worth of requests to an
# upstream that answers 502 throughout, first through nginx alone
# (`max_fails`/`fail_timeout` on the server, `proxy_next_upstream error
# timeout http_502`, a backup server answering 503), then through guard
# with `guard_breaker outage;` (the default thresholds); the backend's
# access log counts the requests that reached it.  NGX_MAX_FAILS (1) and
# NGX_FAIL_TIMEOUT (10s) set nginx's side, nginx's defaults.
#
# Without `guard_breaker` in the module (or the `breaker` policy section),
# the breaker variants and the breaker's outage count are skipped with a
# message.  Quote ratios and counts, not absolute rates.  With
# BASELINE_MODULE (bench/lib.sh), the A/B variants against the baseline
# too, when the baseline has the breaker (else no baseline run); the
# outage runs on the current module only.

. "$(dirname "$0")/lib.sh"

bench_init

outage=${OUTAGE:-20}
max_fails=${NGX_MAX_FAILS:-1}
fail_timeout=${NGX_FAIL_TIMEOUT:-10s}
dead=$(bench_free_port)
hung=$(bench_free_port)
timeout_ms=${TIMEOUT_MS:-250}

read -r acme < <(bench_mint \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}")

# policy WITH_BREAKER: acme's policy, with a breaker section (`down` opens
# after a few calls and stays open; `api` and `outage` use the defaults)
# or without one
policy() {
    mkdir -p "$dir/policies"
    if [ "$1" = yes ]; then
        cat > "$dir/policies/acme.json" <<'JSON'
{
  "tenant": "acme",
  "breaker": {
    "down": {"min_calls": 5, "open_for": "1m", "open_for_max": "1m"}
  }
}
JSON
    else
        echo '{"tenant": "acme"}' > "$dir/policies/acme.json"
    fi
}

# conf WITH_BREAKER: the A/B nginx.conf, with the breaker's locations or
# without them
conf() {
    local brk=""
    [ "$1" != yes ] || brk="
        location = /guard-breaker {
            guard on;
            guard_breaker api;
            proxy_pass http://up/ok;
        }
        location = /guard-open {
            guard on;
            guard_breaker down;
            proxy_pass http://up/fail;
        }"
    { bench_conf_head; bench_conf_upstream; cat <<CONF; } \
        > "$dir/nginx.conf"

    server {
        listen 127.0.0.1:$port;

        location = /guard-proxy { guard on; proxy_pass http://up/ok; }
        location = /guard-fail { guard on; proxy_pass http://up/fail; }
        location = /guard-refused {
            guard on;
            proxy_pass http://127.0.0.1:$dead/refused;
        }
        location = /guard-timeout {
            guard on;
            proxy_pass http://127.0.0.1:$hung/hung;
            proxy_read_timeout ${timeout_ms}ms;
        }$brk
        location = /guard-empty { guard on; empty_gif; }
        location = /ok { empty_gif; }
        location = /fail { return 502 "failing\n"; }
    }
}
CONF
}

# conf_ok MODULE: nginx -t accepts nginx.conf with MODULE loaded; its
# complaint on stderr otherwise
conf_ok() {
    sed "s|^load_module $module;|load_module $1;|" "$dir/nginx.conf" \
        > "$dir/probe.conf"
    "$nginx" -t -q -p "$dir/" -c "$dir/probe.conf" -e "$dir/probe.log" \
        2> "$dir/probe.err"
}

breaker=yes
policy yes
conf yes
if ! conf_ok "$module"; then
    why=$(grep -m1 emerg "$dir/probe.err" || head -1 "$dir/probe.err")
    breaker=no
    policy no
    conf no
    conf_ok "$module" || { cat "$dir/probe.err" >&2; exit 1; }
    echo "breaker.sh: this module has no guard_breaker ($why):" \
         "breaker variants skipped" >&2
fi
if [ -n "$baseline" ] && ! conf_ok "$baseline"; then
    echo "breaker.sh: the baseline module cannot run these variants" \
         "($(grep -m1 emerg "$dir/probe.err" || head -1 "$dir/probe.err")):" \
         "no baseline run (BASELINE_MODULE ignored)" >&2
    baseline=""
    bench_inst=("")
fi

# the hung upstream: takes every connection, reads, never answers
$py - "$hung" > /dev/null 2>&1 <<'PY' &
import selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(4096)
sel.register(ls, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is ls:
            c, _ = ls.accept()
            sel.register(c, selectors.EVENT_READ)
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
PY
hung_pid=$!
trap 'kill "$hung_pid" 2>/dev/null; bench_cleanup' EXIT
for ((n = 0; n < 50; n++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$hung") 2>/dev/null && break
    sleep 0.1
done

bench_start

bench_variant guard-proxy /guard-proxy "Authorization: Bearer $acme" "X-Tenant-Id: acme"
[ $breaker = no ] || bench_variant guard-breaker /guard-breaker \
    "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant guard-fail /guard-fail "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant guard-refused /guard-refused "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant guard-timeout /guard-timeout "Authorization: Bearer $acme" "X-Tenant-Id: acme"
[ $breaker = no ] || bench_variant guard-open /guard-open \
    "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant guard-empty /guard-empty "Authorization: Bearer $acme" "X-Tenant-Id: acme"

# status URL: one request's status code, acme's token
status() {
    curl -s -o "$dir/body" -w '%{http_code}' \
        -H "Authorization: Bearer $acme" -H "X-Tenant-Id: acme" "$1"
}

# expect VARIANT CODE [BODY]: every instance answers CODE (and BODY)
expect() {
    local i code
    for i in "${bench_inst[@]}"; do
        code=$(status "${bench_url[$1$i]}")
        if [ "$code" != "$2" ] \
            || { [ -n "${3:-}" ] && ! grep -q "$3" "$dir/body"; }; then
            echo "$1$i answered $code, not $2 ${3:-}" >&2
            cat "$dir/body" "$dir/error.log" >&2
            exit 1
        fi
    done
}

expect guard-proxy 200
expect guard-fail 502
expect guard-refused 502
expect guard-timeout 504
expect guard-empty 200
if [ $breaker = yes ]; then
    expect guard-breaker 200
    # open `down`: failing calls until it refuses (min_calls is 5)
    for i in "${bench_inst[@]}"; do
        for ((n = 0; n < 50; n++)); do
            [ "$(status "${bench_url[guard-open$i]}")" != 503 ] || break
        done
    done
    expect guard-open 503 circuit_open
fi

bench_run

echo
echo "Circuit breaker, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
bench_report guard-proxy guard-fail
echo
if [ $breaker = yes ]; then
    printf 'closed breaker over the guard path: %.3fx extra\n' \
        "$(echo "1 - $(bench_ratio guard-breaker guard-proxy)" | bc -l)"
    bench_derived "  closed breaker" guard-breaker guard-proxy
    # two runs one right after the other weigh load that comes and goes
    # on both sides of a ratio
    printf '  closed breaker, the median of the rounds'"'"' ratios: %.3f\n' \
        "$(bench_round_ratios guard-breaker guard-proxy | bench_median)"
    bench_derived "open breaker over the failing upstream" guard-open guard-fail
    bench_derived "open breaker over the refusing upstream" guard-open guard-refused
    bench_derived "open breaker over the timing-out upstream (${timeout_ms} ms)" \
        guard-open guard-timeout
    bench_derived "open breaker over guard's quickest answer" guard-open guard-empty
    echo "(goals: the closed breaker costs at most 0.02x over the guard path;"
    echo " an open breaker refuses at least 3x as fast as the failing upstream answers:"
    echo " a timing-out upstream answers at CONNS/timeout; one that fails at once, in"
    echo " the same worker, bounds the ratio by a proxied request's cost to nginx)"
else
    echo "breaker variants skipped: this module has no guard_breaker"
fi
bench_errlog_clean

# The outage: a second nginx, the current module only, a backend that
# answers 502 and logs every request it gets
mkdir -p "$dir/outage"
oport=$(bench_free_port)
bport=$(bench_free_port)
brk_loc=""
[ $breaker = no ] || brk_loc="
        location = /guard {
            guard on;
            guard_breaker outage;
            proxy_pass http://single/hit-guard;
        }"
bench_conf_head | sed -e "s|$dir/nginx.pid|$dir/outage/nginx.pid|" \
    -e "s|$dir/error.log|$dir/outage/error.log|" \
    > "$dir/outage/nginx.conf"
cat >> "$dir/outage/nginx.conf" <<CONF

    guard_jwt_keys $dir/keys/jwks.json;
    guard_policies $dir/policies;
    guard_tenant \$http_x_tenant_id;

    proxy_http_version 1.1;
    proxy_set_header Connection "";

    # nginx alone: passive health checks, the backup answers 503
    upstream pool {
        zone pool 64k;
        server 127.0.0.1:$bport max_fails=$max_fails fail_timeout=$fail_timeout;
        server 127.0.0.1:$oport backup;
        keepalive 64;
    }
    # guard's: one server (nginx never marks a lone server down)
    upstream single {
        server 127.0.0.1:$bport;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$oport;

        location = /nginx {
            proxy_pass http://pool/hit-nginx;
            proxy_next_upstream error timeout http_502;
        }$brk_loc
        # the backup server's answer
        location = /hit-nginx { return 503 "fallback\n"; }
    }

    # the failing backend
    server {
        listen 127.0.0.1:$bport;

        location = /hit-nginx {
            access_log $dir/outage/hits-nginx.log;
            return 502 "failing\n";
        }
        location = /hit-guard {
            access_log $dir/outage/hits-guard.log;
            return 502 "failing\n";
        }
    }
}
CONF
"$nginx" -p "$dir/outage/" -c "$dir/outage/nginx.conf" -e "$dir/outage/error.log"
trap '[ -f "$dir/outage/nginx.pid" ] && kill -QUIT "$(cat "$dir/outage/nginx.pid")" 2>/dev/null; kill "$hung_pid" 2>/dev/null; bench_cleanup' EXIT
sleep 0.5
touch "$dir/outage/hits-nginx.log" "$dir/outage/hits-guard.log"

# outage_run PATH: wrk for OUTAGE seconds; prints the requests it sent
outage_run() {
    $wrk_pin wrk -t1 -c"$conns" -d"${outage}s" \
        -H "Authorization: Bearer $acme" -H "X-Tenant-Id: acme" \
        "http://127.0.0.1:$oport$1" | awk '/ requests in / {print $1}'
}

echo
echo "Outage of ${outage}s: the upstream answers 502 throughout, wrk -c$conns"
sent=$(outage_run /nginx)
printf '  %-52s %8s requests, %6d reached the upstream\n' \
    "nginx alone (max_fails=$max_fails fail_timeout=$fail_timeout):" "$sent" \
    "$(wc -l < "$dir/outage/hits-nginx.log")"
if [ $breaker = yes ]; then
    sent=$(outage_run /guard)
    printf '  %-52s %8s requests, %6d reached the upstream\n' \
        "guard_breaker (default thresholds):" "$sent" \
        "$(wc -l < "$dir/outage/hits-guard.log")"
else
    echo "  guard_breaker: skipped, this module has no guard_breaker"
fi
echo "(nginx alone: proxy_next_upstream error timeout http_502, a backup answering"
echo " 503; max_fails failures mark the server down for fail_timeout, then one"
echo " request tries it again.  guard: min_calls calls in the window open the"
echo " breaker, then probes requests per half-open, open_for growing by backoff."
echo " Both: the requests already on their way when it trips reach it too.)"
if grep -E '\[(alert|emerg|crit)\]' "$dir/outage/error.log"; then
    exit 1
fi
exit 0
