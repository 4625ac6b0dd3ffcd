#!/usr/bin/env bash
# bench/sidecar.sh: the cost of risk delegation to guardd, A/B interleaved
# on one nginx worker, with wrk on loopback and one guardd.
#
#   plain         empty_gif, no guard
#   guard-jwt     guard, cached HS256 token, no delegation
#   guard-risk    the same, every request asks guardd (DECIDE/VERDICT over
#                 the Unix socket, a risk policy with three signals)
#   auth_request  the peer: nginx auth_request to a minimal HTTP service
#                 (an nginx location answering 204) on loopback
#
#   guard-risk-5  guard with 5% of requests delegated (a map on $request_id)
#   guard-jwt-5   the same map, if and redirect, without delegation: the
#                 baseline of guard-risk-5
#
# Then decide_bench: DECIDE round-trip p50/p99 against a raw Unix-socket
# ping-pong of the same sizes answered by another process (goal: p99 <=
# 3x), and guardd's decisions per second on its one loop thread, and per
# second of guardd's own CPU time, since the load generator shares the
# cores (goal: >= 100k/s per core).
# Prints ratios to plain and to guard-jwt.  Quote ratios, not absolute
# numbers.  With BASELINE_MODULE (bench/lib.sh), each against the
# baseline too; the baseline nginx asks a guardd of its own when
# BASELINE_GUARDD names one (its decide_bench is then run too), else the
# same guardd.  GUARD_GUARDD: the current guardd (default: the release
# build of this tree).

. "$(dirname "$0")/lib.sh"

bench_init

# the optimized guardd, not the sanitizer build the tests use (and
# decide_bench); GUARD_GUARDD: another guardd
make -s -C "$repo/policy-engine" release >&2
guardd=${GUARD_GUARDD:-$repo/policy-engine/build/release/guardd}

mkdir -p "$dir/gpol"
cat > "$dir/gpol/acme.json" <<'JSON'
{
  "tenant": "acme",
  "risk": {
    "thresholds": {"step_up": 400, "deny": 700},
    "signals": [
      {"id": "destructive", "weight": 50, "when": {"method": ["DELETE"]}},
      {"id": "big-body", "weight": 15, "when": {"body_size_over": 100000}},
      {"id": "not-admin", "weight": 30,
       "when": {"claim": {"name": "roles", "lacks": "admin"}}}
    ]
  }
}
JSON

# guardd_start BINARY DIR: a guardd listening on DIR/guardd.sock; its pid
# in guardd_pid[DIR]
declare -A guardd_pid
guardd_start() {
    mkdir -p "$2"
    cat > "$2/guardd.conf" <<JSON
{"listen": "$2/guardd.sock", "pid_file": "$2/guardd.pid",
 "policies": "$dir/gpol", "socket_group": "nogroup",
 "journal": {"dir": "$2/journal"}, "log": "warn"}
JSON
    "$1" -c "$2/guardd.conf" 2> "$2/guardd.log" &
    guardd_pid[$2]=$!
}

guardd_start "$guardd" "$dir"
# the baseline nginx asks its own guardd, BASELINE_GUARDD, else this one
base_guardd=""
if [ -n "$baseline" ] && [ -n "${BASELINE_GUARDD:-}" ]; then
    base_guardd=$BASELINE_GUARDD
    guardd_start "$base_guardd" "$dir/base"
    bench_base_sed="s|unix:$dir/guardd.sock|unix:$dir/base/guardd.sock|"
fi
trap 'kill ${guardd_pid[*]} 2>/dev/null; bench_cleanup' EXIT
sleep 0.5

read -r tok < <(bench_mint \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"roles\":[\"reader\"],\"exp\":$((now + 86400))}}")

{ bench_conf_head; cat <<CONF; } > "$dir/nginx.conf"
    guard_jwt_keys $dir/keys/jwks.json;
    guard_sidecar unix:$dir/guardd.sock timeout=100ms connections=2;

    # 5% of the requests: the first hex digit of \$request_id is uniform
    map \$request_id \$risky {
        ~^0[0-c] on;
        default  off;
    }

    server {
        listen 127.0.0.1:$port;

        location = /plain { empty_gif; }
        location = /guard-risk-5 {
            guard on;
            error_page 418 = @risk;
            if (\$risky = on) { return 418; }
            empty_gif;
        }
        location @risk { guard on; guard_risk on; empty_gif; }
        location = /guard-jwt-5 {
            guard on;
            error_page 418 = @norisk;
            if (\$risky = on) { return 418; }
            empty_gif;
        }
        location @norisk { guard on; empty_gif; }
        location = /guard-jwt { guard on; empty_gif; }
        location = /guard-risk { guard on; guard_risk on; empty_gif; }
        location = /auth_request {
            auth_request /_auth;
            empty_gif;
        }
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:$port/_decide;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
        location = /_decide { return 204; }
    }
}
CONF

bench_start

for v in plain guard-jwt guard-risk guard-jwt-5 guard-risk-5 auth_request; do
    bench_variant "$v" "/$v" "Authorization: Bearer $tok"
done

bench_check
bench_run

echo
echo "Risk delegation, 1 worker + guardd, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
bench_report plain guard-jwt
bench_derived "5% delegated against its own baseline" guard-risk-5 guard-jwt-5

echo
echo "guardd: $guardd"
"$repo/policy-engine/build/release/decide_bench" "$dir/guardd.sock" 20000 3 \
    "${guardd_pid[$dir]}"
if [ -n "$base_guardd" ]; then
    echo
    echo "baseline guardd: $base_guardd"
    "$repo/policy-engine/build/release/decide_bench" "$dir/base/guardd.sock" \
        20000 3 "${guardd_pid[$dir/base]}"
fi
echo "(goals: DECIDE p99 <= 3x the raw ping-pong; >= 100k decisions/s per core)"
bench_errlog_clean
