#!/bin/sh
# The demo gateway: `make run` starts it, `make stop` stops it.
#
# nginx (stock Debian binary + the freshly built guard module) listens on
# 127.0.0.1:${GUARD_DEMO_PORT:-8080} and guards /api/<tenant>/..., proxying
# to an example upstream on the next port that echoes what it was told.
# guardd (build/demo/guardd.sock) scores /api/<tenant>/admin/... and
# journals every refusal in build/demo/journal.
# Demo keys and tokens are made fresh in build/demo on every start.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
demo=$repo/build/demo
port=${GUARD_DEMO_PORT:-8080}
upstream=$((port + 1))
nginx=${GUARD_NGINX:-/usr/sbin/nginx}
py=/usr/bin/python3
tool=$repo/t/tools/jwt_tool.py
guardd=$repo/policy-engine/build/release/guardd
guardctl=$repo/policy-engine/build/release/guardctl

stop() {
    if [ -f "$demo/nginx.pid" ] && kill -0 "$(cat "$demo/nginx.pid")" 2>/dev/null
    then
        kill -QUIT "$(cat "$demo/nginx.pid")"
        echo "demo gateway stopped"
    else
        echo "demo gateway is not running"
    fi
    # after nginx: its master spills the records guardd has not acknowledged
    sleep 0.5
    if [ -f "$demo/guardd.pid" ] && kill -0 "$(cat "$demo/guardd.pid")" 2>/dev/null
    then
        kill -TERM "$(cat "$demo/guardd.pid")"
        echo "guardd stopped"
    fi
}

start() {
    stop >/dev/null 2>&1 || true
    sleep 0.3
    rm -rf "$demo"
    mkdir -p "$demo/logs" "$demo/tmp"
    chmod 755 "$demo"

    "$py" "$tool" keys "$demo/keys" >/dev/null

    # the example policies; acme's own JWKS is replaced by a fresh demo key
    # whose private half is at hand to mint acme's tokens
    cp -r "$repo/policies/examples" "$demo/policies"
    acme_jwk=$("$py" "$tool" gen --kty RSA --bits 2048 --kid acme-2026 \
        --alg RS256 "$demo/keys")
    printf '{"keys": [%s]}\n' "$acme_jwk" > "$demo/policies/keys/acme.jwks.json"

    # guardd: the same policies, the journal, the spill directory that
    # nginx's workers (nobody) write into
    mkdir -p "$demo/journal" "$demo/spill"
    chmod 1777 "$demo/spill"
    group=""
    [ "$(id -u)" = 0 ] && group='"socket_group": "nogroup",'
    cat > "$demo/guardd.conf" <<JSON
{"listen": "$demo/guardd.sock", $group "pid_file": "$demo/guardd.pid",
 "policies": "$demo/policies", "journal": {"dir": "$demo/journal"},
 "spill": "$demo/spill", "node": "demo-guardd"}
JSON
    setsid "$guardd" -c "$demo/guardd.conf" </dev/null >/dev/null \
        2>>"$demo/logs/guardd.log" &
    for _ in $(seq 50); do
        [ -S "$demo/guardd.sock" ] && break
        sleep 0.1
    done
    if [ ! -S "$demo/guardd.sock" ]; then
        echo "guardd did not start; see $demo/logs/guardd.log" >&2
        exit 1
    fi

    sed -e "s|@MODULE@|$repo/build/ngx_http_guard_module.so|g" \
        -e "s|@DEMO@|$demo|g" \
        -e "s|@PORT@|$port|g" \
        -e "s|@UPSTREAM@|$upstream|g" \
        "$repo/conf/nginx-demo.conf" > "$demo/nginx.conf"

    if ! "$nginx" -p "$demo/" -c "$demo/nginx.conf" -e "$demo/logs/error.log"
    then
        echo "nginx did not start; see $demo/logs/error.log" >&2
        exit 1
    fi

    now=$(date +%s)
    claims() { # tenant subject exp [issuer]
        printf '{"iss":"%s","aud":"api","sub":"%s",' \
            "${4:-https://idp.demo}" "$2"
        printf '"tenant_id":"%s","roles":["reader"],"iat":%s,"exp":%s}' \
            "$1" "$now" "$3"
    }
    tokens=$(printf '%s\n' \
        "{\"kid\":\"acme-2026\",\"claims\":$(claims acme alice@acme $((now + 3600)) https://idp.acme.example)}" \
        "{\"kid\":\"es256\",\"claims\":$(claims beta bob@beta $((now + 3600)))}" \
        "{\"kid\":\"acme-2026\",\"claims\":$(claims acme alice@acme $((now - 600)) https://idp.acme.example)}" \
        "{\"kid\":\"rs256\",\"claims\":$(claims gamma carol@gamma $((now + 3600)))}" \
        "{\"kid\":\"rs256\",\"claims\":$(claims acme mallory $((now + 3600)))}" \
        | sed "s|\"kid\":\"\([a-z0-9-]*\)\"|\"kid\":\"\1\",\"alg\":\"ALG_\1\",\"key\":\"$demo/keys/\1.pem\"|" \
        | sed 's/ALG_rs256/RS256/; s/ALG_es256/ES256/; s/ALG_acme-2026/RS256/' \
        | "$py" "$tool" mint)
    acme=$(echo "$tokens" | sed -n 1p)
    beta=$(echo "$tokens" | sed -n 2p)
    expired=$(echo "$tokens" | sed -n 3p)
    gamma=$(echo "$tokens" | sed -n 4p)
    forged=$(echo "$tokens" | sed -n 5p)
    printf '%s\n' "$gamma" > "$demo/token-gamma"
    printf '%s\n' "$forged" > "$demo/token-acme-wrong-key"
    printf '%s\n' "$acme" > "$demo/token-acme"
    printf '%s\n' "$beta" > "$demo/token-beta"
    printf '%s\n' "$expired" > "$demo/token-expired"

    base="http://127.0.0.1:$port"
    cat <<MSG
Guard demo gateway is running on $base (nginx with ngx_http_guard_module).
Config: $demo/nginx.conf   Logs: $demo/logs/   Stop: make stop

A valid token for tenant acme (RS256), addressed to acme: 200
  curl -s -H "Authorization: Bearer \$(cat $demo/token-acme)" $base/api/acme/orders

A token for tenant gamma addressed to tenant beta: 403 tenant_mismatch
  curl -s -H "Authorization: Bearer \$(cat $demo/token-gamma)" $base/api/beta/orders

A token for beta (ES256), addressed to beta: 200
  curl -s -H "Authorization: Bearer \$(cat $demo/token-beta)" $base/api/beta/orders

An expired token: 401 token_expired
  curl -si -H "Authorization: Bearer \$(cat $demo/token-expired)" $base/api/acme/orders

No token: 401 with WWW-Authenticate
  curl -si $base/api/acme/orders

A token for acme signed with the gateway's key, not acme's own: 401
  curl -s -H "Authorization: Bearer \$(cat $demo/token-acme-wrong-key)" $base/api/acme/orders

Tenant gamma has no policy of its own: policies/_default.json allows 20/s,
burst 10. Thirty requests in a row: about a dozen pass, the rest get 429
with Retry-After and RateLimit fields
  for i in \$(seq 30); do curl -s -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer \$(cat $demo/token-gamma)" $base/api/gamma/orders; done; echo

Acme's admin API asks guardd (guard_risk on). A DELETE by a reader scores
the signals "delete" and "no-admin-role", plus "new-ip" the first time and
"off-hours" outside 07:00-20:00 in Paris: step-up (401) or deny (403)
  curl -si -X DELETE -H "Authorization: Bearer \$(cat $demo/token-acme)" $base/api/acme/admin/users/7

Every refusal above is an audit record in guardd's journal, for the SOC:
  $guardctl blocked --dir $demo/journal
  $guardctl show --dir $demo/journal ID
  $guardctl review --socket $demo/guardd.sock --dir $demo/journal ID --verdict confirmed --analyst you
  $guardctl audit verify --dir $demo/journal

Policies: $demo/policies (version in every access log line)
  $guardctl policy check $demo/policies

Every decision is in $demo/logs/access.log (tenant, subject, decision,
reason, decision id); guardd logs to $demo/logs/guardd.log.
MSG
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
