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
# With BASELINE_MODULE (bench/lib.sh), each against the baseline too.

. "$(dirname "$0")/lib.sh"

bench_init

read -r hs rs < <(bench_mint \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}" \
    "{\"kid\":\"rs256\",\"alg\":\"RS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}" \
    | paste -sd' ')

{ bench_conf_head; cat <<CONF; } > "$dir/nginx.conf"

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

bench_start

bench_variant plain-return /plain-return "Authorization: Bearer $rs" "X-Tenant-Id: acme"
bench_variant plain /plain "Authorization: Bearer $rs" "X-Tenant-Id: acme"
bench_variant hs256-cached /hs256-cached "Authorization: Bearer $hs" "X-Tenant-Id: acme"
bench_variant rs256-cached /rs256-cached "Authorization: Bearer $rs" "X-Tenant-Id: acme"
bench_variant rs256-nocache /rs256-nocache "Authorization: Bearer $rs" "X-Tenant-Id: acme"

bench_check
bench_run

verify=$(openssl speed -seconds 3 rsa2048 2>/dev/null \
    | awk '/^rsa 2048 bits/ {print $NF}')

echo
echo "JWT authentication, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
bench_report plain plain-return
echo
for i in "${bench_inst[@]}"; do
    printf 'rs256-nocache%s req/s vs openssl speed rsa2048 verify/s: %.3f\n' \
        "$i" "$(echo "${bench_med[rs256-nocache$i]} / $verify" | bc -l)"
done
echo "(goals: cached >= 0.90 x plain; uncached RS256 >= 0.8 x openssl verify)"
bench_errlog_clean
