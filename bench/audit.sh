#!/usr/bin/env bash
# bench/audit.sh: the cost of auditing refusals, A/B interleaved on one
# nginx worker, with wrk on loopback.  Every request is refused (no token:
# 401 token_missing), so every request makes an audit record.
#
#   plain-401      nginx alone: `return 401` with a problem+json body
#   guard          guard's refusal, no sidecar: no audit record
#   guard-audit    guard's refusal, and its audit record: log phase, shared
#                  ring, AUDIT frame to guardd, which journals it (fsync,
#                  group commit) and acknowledges it
#   guard-log      the peer: guard's refusal with nginx's own access_log
#                  writing a JSON line per refusal to a local file (no
#                  fsync, no delivery guarantee)
#
# guard-audit runs on a second nginx (guard_sidecar is an http-level
# setting), on the same CPU, interleaved with the others.  Prints ratios to
# guard and to plain-401.  Quote ratios, not absolute numbers.

. "$(dirname "$0")/lib.sh"

bench_init
# guard-audit has a second nginx of its own
bench_no_baseline

make -s -C "$repo/policy-engine" release >&2
guardd=$repo/policy-engine/build/release/guardd

mkdir -p "$dir/gpol" "$dir/spill" "$dir/b"
echo '{"tenant": "acme"}' > "$dir/gpol/acme.json"
chmod 777 "$dir/spill"
cat > "$dir/guardd.conf" <<JSON
{"listen": "$dir/guardd.sock", "pid_file": "$dir/guardd.pid",
 "policies": "$dir/gpol", "socket_group": "nogroup",
 "journal": {"dir": "$dir/journal"}, "spill": "$dir/spill", "log": "warn"}
JSON

"$guardd" -c "$dir/guardd.conf" 2> "$dir/guardd.log" &
guardd_pid=$!
cleanup() {
    kill "$guardd_pid" 2>/dev/null || true
    [ -f "$dir/b/nginx.pid" ] && kill -QUIT "$(cat "$dir/b/nginx.pid")" 2>/dev/null
    bench_cleanup
}
trap cleanup EXIT
sleep 0.5

port_b=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

{ bench_conf_head; cat <<CONF; } > "$dir/nginx.conf"
    guard_jwt_keys $dir/keys/jwks.json;

    log_format refusal escape=json '{"id":"\$guard_decision_id",'
        '"time":"\$time_iso8601","client_ip":"\$remote_addr",'
        '"method":"\$request_method","route":"\$uri","status":\$status,'
        '"reason":"\$guard_reason","tenant":"\$guard_tenant"}';

    server {
        listen 127.0.0.1:$port;

        location = /plain-401 {
            default_type application/problem+json;
            return 401 '{"type":"urn:guard:token-missing","status":401}';
        }
        location = /guard { guard on; empty_gif; }
        location = /guard-log {
            guard on;
            access_log $dir/refusals.log refusal;
            empty_gif;
        }
    }
}
CONF

sed -e "s|$dir/nginx.pid|$dir/b/nginx.pid|" \
    -e "s|listen 127.0.0.1:$port;|listen 127.0.0.1:$port_b;|" \
    -e "s|guard_jwt_keys .*;|&\n    guard_sidecar unix:$dir/guardd.sock connections=2;\n    guard_audit_spill $dir/spill;|" \
    -e "s|location = /guard {|location = /status { guard_status; }\n        location = /guard-audit {|" \
    "$dir/nginx.conf" > "$dir/b/nginx.conf"

bench_start
"$nginx" -p "$dir/b/" -c "$dir/b/nginx.conf" -e "$dir/b/error.log"
sleep 0.5

for v in plain-401 guard guard-log; do
    bench_variant "$v" "/$v"
done
bench_variant guard-audit /guard-audit
bench_url[guard-audit]="http://127.0.0.1:$port_b/guard-audit"

for v in $variants; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${bench_url[$v]}")
    [ "$code" = 401 ] || { echo "$v answered $code" >&2; exit 1; }
done

bench_run

echo
echo "Refusal auditing, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
bench_report guard plain-401

sleep 2
echo "guard-audit ring and delivery (guard_status):"
curl -s "http://127.0.0.1:$port_b/status" | $py -c 'import json,sys; print(json.load(sys.stdin)["audit"])'
echo "guardd journaled $(cat "$dir"/journal/*.jsonl | wc -l) records;" \
     "access_log wrote $(wc -l < "$dir/refusals.log") lines"
grep -E '\[(alert|emerg|crit)\]' "$dir/error.log" "$dir/b/error.log" && exit 1
exit 0
