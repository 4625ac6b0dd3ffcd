#!/usr/bin/env bash
# bench/jwt.sh: the cost of JWT authentication, A/B interleaved on one
# nginx worker, with wrk on loopback.
#
#   plain-return  location with `return 200` (rewrite phase only)
#   plain         the same content handler as the guarded locations
#                 (empty_gif), no guard
#   hs256-cached  guard, HS256 token, verified-token cache on
#   rs256-cached  guard, RS256 token, cache on
#   rs256-nocache guard, RS256 token, `guard_jwt_cache off` (every request
#                 verifies the signature)
#
# Every variant gets the same request, Authorization header included.
# Prints the median req/s ratio of each variant to plain, and the RS256
# uncached rate next to `openssl speed rsa2048` verify/s on this machine.
# Quote the ratios, not the absolute numbers: these are noisy VMs.
#
# Environment: ROUNDS (5), DURATION (3s), CONNS (32).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
module=${GUARD_MODULE:-$repo/build/ngx_http_guard_module.so}
nginx=${GUARD_NGINX:-/usr/sbin/nginx}
rounds=${ROUNDS:-5}
duration=${DURATION:-3s}
conns=${CONNS:-32}
py=/usr/bin/python3

[ -f "$module" ] || { echo "build the module first: make" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: make setup" >&2; exit 1; }

dir=$(mktemp -d /tmp/guard-bench.XXXXXX)
chmod 755 "$dir"
cleanup() {
    [ -n "${KEEP:-}" ] && { echo "kept $dir" >&2; return; }
    [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null
    sleep 0.3
    rm -rf "$dir"
}
trap cleanup EXIT

port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

$py "$repo/t/tools/jwt_tool.py" keys "$dir/keys" >/dev/null
now=$(date +%s)
read -r hs rs < <(printf '%s\n' \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"key\":\"$dir/keys/hs256.key\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}" \
    "{\"kid\":\"rs256\",\"alg\":\"RS256\",\"key\":\"$dir/keys/rs256.pem\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}" \
    | $py "$repo/t/tools/jwt_tool.py" mint | paste -sd' ')

cpus=$(nproc)
affinity=""
wrk_pin=""
if [ "$cpus" -ge 2 ] && command -v taskset >/dev/null; then
    affinity="worker_cpu_affinity 01;"
    wrk_pin="taskset -c 1"
fi

cat > "$dir/nginx.conf" <<CONF
load_module $module;
worker_processes 1;
$affinity
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 1000000;

    guard_jwt_keys $dir/keys/jwks.json;
    guard_tenant \$http_x_tenant_id;

    server {
        listen 127.0.0.1:$port;

        location = /plain-return { return 200; }
        location = /plain { empty_gif; }
        location = /hs256-cached { guard on; empty_gif; }
        location = /rs256-cached { guard on; empty_gif; }
        location = /rs256-nocache { guard on; guard_jwt_cache off; empty_gif; }
    }
}
CONF

"$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
sleep 0.5

token_for() {
    case $1 in
        hs256*) echo "$hs" ;;
        *) echo "$rs" ;;
    esac
}

variants="plain-return plain hs256-cached rs256-cached rs256-nocache"

# sanity: every guarded variant answers 200 with its token
for v in $variants; do
    code=$(curl -s -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $(token_for "$v")" \
        -H "X-Tenant-Id: acme" "http://127.0.0.1:$port/$v")
    [ "$code" = 200 ] || { echo "$v answered $code" >&2; cat "$dir/error.log" >&2; exit 1; }
done

declare -A runs
for ((r = 1; r <= rounds; r++)); do
    for v in $variants; do
        rps=$($wrk_pin wrk -t1 -c"$conns" -d"$duration" \
            -H "Authorization: Bearer $(token_for "$v")" \
            -H "X-Tenant-Id: acme" "http://127.0.0.1:$port/$v" \
            | awk '/^Requests\/sec/ {print $2}')
        runs[$v]="${runs[$v]:-} $rps"
    done
    echo "round $r/$rounds done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A med
for v in $variants; do
    med[$v]=$(echo "${runs[$v]}" | median)
done

verify=$(openssl speed -seconds 3 rsa2048 2>/dev/null \
    | awk '/^rsa 2048 bits/ {print $NF}')

echo
echo "JWT authentication, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
printf '%-15s %14s %12s %16s\n' variant "ratio:plain" "ratio:return" "runs"
for v in $variants; do
    printf '%-15s %14.3f %12.3f  %s\n' "$v" \
        "$(echo "${med[$v]} / ${med[plain]}" | bc -l)" \
        "$(echo "${med[$v]} / ${med[plain-return]}" | bc -l)" \
        "$(echo "${runs[$v]}" | awk '{for(i=1;i<=NF;i++) printf "%.0f ", $i}')"
done
echo
printf 'rs256-nocache req/s vs openssl speed rsa2048 verify/s: %.3f\n' \
    "$(echo "${med[rs256-nocache]} / $verify" | bc -l)"
echo "(goals: cached >= 0.90 x plain; uncached RS256 >= 0.8 x openssl verify)"
grep -E '\[(alert|emerg|crit)\]' "$dir/error.log" && exit 1 || true
