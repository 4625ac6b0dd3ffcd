#!/usr/bin/env bash
# bench/jwt_callgrind.sh: instructions per request of the JWT path, counted
# by callgrind on one nginx process (master_process off), each variant
# counted over N requests after a warm-up, on one keep-alive connection.
#
#   plain          empty_gif, no guard, the same request
#   hs256-cached   guard, HS256 token, token cache on
#   rs256-cached   guard, RS256 token, token cache on
#   *-nocache      guard_jwt_cache off: every request verifies
#
# GUARD_MODULE picks the module (default build/ngx_http_guard_module.so);
# N (default 2000) the requests counted per variant.  Needs valgrind.

. "$(dirname "$0")/lib.sh"

n=${N:-2000}

command -v callgrind_control >/dev/null || { echo "valgrind is missing" >&2; exit 1; }

bench_init

algs="hs256 rs256 ps256 es256 ed25519"
bench_alg_tokens $algs

{ echo "master_process off;"; echo "daemon off;"; bench_conf_head; cat <<CONF; } > "$dir/nginx.conf"

    guard_jwt_keys $dir/keys/jwks.json;
    guard_tenant \$http_x_tenant_id;

    server {
        listen 127.0.0.1:$port;

        location = /plain { empty_gif; }
        location /cached/ { guard on; empty_gif; }
        location /nocache/ { guard on; guard_jwt_cache off; empty_gif; }
    }
}
CONF

valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
    2>"$dir/valgrind.log" &
vpid=$!
trap 'kill $vpid 2>/dev/null; wait $vpid 2>/dev/null; bench_cleanup' EXIT

for ((i = 0; i < 300; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$port/plain" && break
    sleep 0.2
done

# requests PATH TOKEN N: N requests on one keep-alive connection
requests() {
    $py - "$port" "$1" "$2" "$3" <<'PY'
import http.client, sys
port, path, tok, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", int(port))
for _ in range(n):
    c.request("GET", path, headers={"Authorization": "Bearer " + tok,
                                    "X-Tenant-Id": "acme"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit("%s answered %d" % (path, r.status))
PY
}

# count VARIANT PATH TOKEN: instructions per request
count() {
    local name=$1 path=$2 token=$3 f
    requests "$path" "$token" 50
    callgrind_control -z "$vpid" >/dev/null 2>&1
    requests "$path" "$token" "$n"
    rm -f "$dir"/cg.out.*
    callgrind_control -d "$vpid" >/dev/null 2>&1
    sleep 0.5
    f=$(ls "$dir"/cg.out.* | head -1)
    printf '%-18s %10.0f instructions/request\n' "$name" \
        "$(awk '/^(summary|totals):/ {print $2; exit}' "$f" | awk -v n="$n" '{print $1 / n}')"
}

echo "module: $module, $n requests per variant"
count plain /plain "${tok[rs256]}"
count hs256-cached /cached/hs "${tok[hs256]}"
count rs256-cached /cached/rs "${tok[rs256]}"
for k in $algs; do
    count "$k-nocache" "/nocache/$k" "${tok[$k]}"
done
