#!/usr/bin/env bash
# bench/limits.sh: the cost of per-tenant rate limits, A/B interleaved on
# one nginx worker, with wrk on loopback.
#
#   plain        empty_gif, no guard
#   limit_req    nginx's limit_req on the same tenant key, never tripping
#   guard-jwt    guard, cached HS256 token, a tenant with no policy
#   guard-limit  guard, cached HS256 token, a tenant whose policy has a
#                rate rule that never trips (and RateLimit fields on)
#   guard-limit-nohdr  the same with `guard_limit_headers off`: the stage
#                without the two extra response header lines
#   proxy        plain nginx proxy: proxy_pass over keepalive connections
#                to empty_gif in the same server (the one worker serves
#                the backend's request too, in this row and the next)
#   guard-full-proxy  the full inline path in front of the same proxy:
#                cached HS256 token, tenant binding, a rate rule and a
#                concurrency limit that never trip
#
# Prints ratios to plain, the extra cost of the limit stage over the
# JWT-only path (goal: at most 0.03x), and the full inline path over plain
# proxy (goal: at least 0.97x).  Quote ratios, not absolute numbers.
# With BASELINE_MODULE (bench/lib.sh), each against the baseline too.

. "$(dirname "$0")/lib.sh"

bench_init

bench_policy acme
bench_policy full concurrency

read -r free acme full < <(bench_mint \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"free\",\"exp\":$((now + 86400))}}" \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}" \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"full\",\"exp\":$((now + 86400))}}" \
    | paste -sd' ')

{ bench_conf_head; cat <<CONF; } > "$dir/nginx.conf"

    limit_req_zone \$http_x_tenant_id zone=tenants:10m rate=100000r/s;

    guard_jwt_keys $dir/keys/jwks.json;
    guard_policies $dir/policies;
    guard_tenant \$http_x_tenant_id;

    upstream up {
        server 127.0.0.1:$port;
        keepalive 1024;
    }

    server {
        listen 127.0.0.1:$port;

        location = /plain { empty_gif; }
        location = /limit_req {
            limit_req zone=tenants burst=100000 nodelay;
            empty_gif;
        }
        location = /guard-jwt { guard on; empty_gif; }
        location = /guard-limit { guard on; empty_gif; }
        location = /guard-limit-nohdr {
            guard on;
            guard_limit_headers off;
            empty_gif;
        }
        location = /proxy {
            proxy_pass http://up/up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /guard-full-proxy {
            guard on;
            proxy_pass http://up/up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /up { empty_gif; }
    }
}
CONF

bench_start

bench_variant plain /plain "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant limit_req /limit_req "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant guard-jwt /guard-jwt "Authorization: Bearer $free" "X-Tenant-Id: free"
bench_variant guard-limit /guard-limit "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant guard-limit-nohdr /guard-limit-nohdr "Authorization: Bearer $acme" "X-Tenant-Id: acme"
bench_variant proxy /proxy "Authorization: Bearer $full" "X-Tenant-Id: full"
bench_variant guard-full-proxy /guard-full-proxy "Authorization: Bearer $full" "X-Tenant-Id: full"

bench_check
curl -s -D - -o /dev/null -H "Authorization: Bearer $acme" -H "X-Tenant-Id: acme" \
    "http://127.0.0.1:$port/guard-limit" | grep -q '^RateLimit:' \
    || { echo "guard-limit did not apply the rate rule" >&2; exit 1; }
curl -s -D - -o /dev/null -H "Authorization: Bearer $full" -H "X-Tenant-Id: full" \
    "http://127.0.0.1:$port/guard-full-proxy" | grep -q '^RateLimit:' \
    || { echo "guard-full-proxy did not apply the rate rule" >&2; exit 1; }

bench_run

echo
echo "Per-tenant limits, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median)"
bench_report plain
echo
for v in guard-limit guard-limit-nohdr; do
    printf '%s over the JWT-only path: %.3fx extra\n' \
        "$v" "$(echo "1 - $(bench_ratio $v guard-jwt)" | bc -l)"
    bench_derived "  $v" "$v" guard-jwt
done
bench_derived "full inline path over plain proxy" guard-full-proxy proxy
echo "(goals: the limit stage costs at most 0.03x over the JWT-only path;"
echo " the full inline path at least 0.97x plain proxy)"
bench_errlog_clean
