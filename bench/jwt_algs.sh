#!/usr/bin/env bash
# bench/jwt_algs.sh: the uncached JWT path per algorithm (guard_jwt_cache
# off: every request verifies), one nginx worker, wrk on loopback, next to
# what `openssl speed` verifies per second on this machine for the same
# algorithm (HS256: HMAC-SHA256 of 128 bytes, about the signing input).
#
#   plain          empty_gif, no guard, the same request
#   ALG-nocache    guard, a token of ALG, every request verified
#
# Prints the median req/s per variant, its ratio to plain, and the
# ratio of the uncached rate to openssl's verify rate.

. "$(dirname "$0")/lib.sh"

bench_init

algs="hs256 rs256 ps256 es256 ed25519"
bench_alg_tokens $algs

{ bench_conf_head; cat <<CONF; } > "$dir/nginx.conf"

    guard_jwt_keys $dir/keys/jwks.json;
    guard_tenant \$http_x_tenant_id;

    server {
        listen 127.0.0.1:$port;

        location = /plain { empty_gif; }
        location /nocache/ { guard on; guard_jwt_cache off; empty_gif; }
    }
}
CONF

bench_start

bench_variant plain /plain "Authorization: Bearer ${tok[rs256]}" "X-Tenant-Id: acme"
for k in $algs; do
    bench_variant "$k-nocache" "/nocache/$k" "Authorization: Bearer ${tok[$k]}" "X-Tenant-Id: acme"
done

bench_check
bench_run

speed=$(openssl speed -seconds 3 rsa2048 ecdsap256 ed25519 2>/dev/null)
hmac=$(openssl speed -seconds 3 -bytes 128 -hmac sha256 2>/dev/null \
    | awk '/^hmac\(sha256\)/ {v=$NF; sub(/k$/, "", v); printf "%.0f\n", v * 1000 / 128}')
declare -A verify=(
    [hs256]=$hmac
    [rs256]=$(echo "$speed" | awk '/^rsa 2048 bits/ {print $NF}')
    [ps256]=$(echo "$speed" | awk '/^rsa 2048 bits/ {print $NF}')
    [es256]=$(echo "$speed" | awk '/256 bits ecdsa \(nistp256\)/ {print $NF}')
    [ed25519]=$(echo "$speed" | awk '/253 bits EdDSA \(Ed25519\)/ {print $NF}')
)

echo
echo "uncached JWT verification, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
bench_report plain
echo
printf '%-18s %12s %14s %10s\n' variant req/s "openssl/s" ratio
for k in $algs; do
    printf '%-18s %12.0f %14.0f %10.4f\n' "$k-nocache" "${bench_med[$k-nocache]}" \
        "${verify[$k]}" "$(echo "${bench_med[$k-nocache]} / ${verify[$k]}" | bc -l)"
done
bench_errlog_clean
