#!/bin/sh
# The demo gateway: `make run` starts it, `make stop` stops it.
#
# nginx (stock Debian binary + the freshly built guard module) listens on
# 127.0.0.1:${GUARD_DEMO_PORT:-8080} and guards /api/<tenant>/..., proxying
# to an example upstream on the next port that echoes what it was told.
# guardd scores /api/<tenant>/admin/... and journals every refusal.
#
# Two directories:
#   GUARD_DEMO_STATE (build/demo-state): what the demo keeps across
#       `make stop` / `make run`: keys/, policies/, journal/ (every refusal
#       and every review), spill/.  Made when missing, never removed by
#       start or stop; `make clean` removes it with build/, or remove it
#       yourself to start over.
#   GUARD_DEMO_DIR (build/demo): what each start makes anew: nginx.conf,
#       guardd.conf, logs/, the pid files, guardd's socket, and the tokens,
#       minted afresh from the kept keys.
# GUARD_DEMO_POLICIES=dir: your own policy directory instead of the
# examples (nginx and guardd read it as it is; it is never written).
#
# When redis-server and PostgreSQL (initdb, pg_ctl) are installed
# (scripts/setup.sh installs them), the demo starts a private Redis and a
# private PostgreSQL cluster, each on a Unix socket in GUARD_DEMO_DIR only
# (their data kept in GUARD_DEMO_STATE: redis/, pgdata/), applies
# migrations/ and gives guardd both sinks (docs/events.md).  If either
# cannot run, the demo starts without it (journal only), and says why.
# GUARD_DEMO_REDIS=path, GUARD_DEMO_PG_BIN=dir: another redis-server, or
# PostgreSQL's bin directory ("none": do not start it).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
demo=${GUARD_DEMO_DIR:-$repo/build/demo}
state=${GUARD_DEMO_STATE:-$repo/build/demo-state}
port=${GUARD_DEMO_PORT:-8080}
upstream=$((port + 1))
nginx=${GUARD_NGINX:-/usr/sbin/nginx}
py=/usr/bin/python3
tool=$repo/t/tools/jwt_tool.py
guardd=$repo/policy-engine/build/release/guardd
guardctl=$repo/policy-engine/build/release/guardctl
redis_server=${GUARD_DEMO_REDIS:-$(command -v redis-server || echo none)}
pg_bin=${GUARD_DEMO_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null \
    | sort -V | tail -n 1)}
pg_port=$((port + 2)) # names the socket file only: no TCP
pg_dsn="host=$demo/pg port=$pg_port dbname=guard user=postgres"

# as PostgreSQL's user: postgres when root (initdb refuses root)
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# the private Redis: on $demo/redis.sock only (port 0), its append-only
# data in $state/redis; 0 when it answers
start_redis() {
    [ -x "$redis_server" ] || { why_redis="redis-server is not installed"; return 1; }
    mkdir -p "$state/redis"
    cat > "$demo/redis.conf" <<CONF
port 0
unixsocket $demo/redis.sock
unixsocketperm 700
dir $state/redis
appendonly yes
appendfsync everysec
save ""
daemonize yes
pidfile $demo/redis.pid
logfile $demo/logs/redis.log
CONF
    if ! "$redis_server" "$demo/redis.conf" >>"$demo/logs/redis.log" 2>&1; then
        why_redis="redis-server did not start (see $demo/logs/redis.log)"
        return 1
    fi
    for _ in $(seq 50); do
        redis-cli -s "$demo/redis.sock" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    why_redis="redis-server does not answer (see $demo/logs/redis.log)"
    return 1
}

# the private PostgreSQL: a cluster in $state/pgdata (made once), its
# socket in $demo/pg, the database guard, migrations/ applied
start_pg() {
    if [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
        why_pg="PostgreSQL (initdb, pg_ctl) is not installed"
        return 1
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        why_pg="there is no user postgres to run PostgreSQL as"
        return 1
    fi
    mkdir -p "$demo/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$demo/pg"
    if [ ! -f "$state/pgdata/PG_VERSION" ]; then
        rm -rf "$state/pgdata"
        mkdir -p "$state/pgdata"
        [ "$(id -u)" = 0 ] && chown postgres "$state/pgdata"
        if ! as_pg "$pg_bin/initdb" -D "$state/pgdata" -U postgres -A trust \
                -E UTF8 --locale=C --no-sync >>"$demo/logs/postgres.log" 2>&1
        then
            why_pg="initdb failed (see $demo/logs/postgres.log)"
            return 1
        fi
    fi
    touch "$demo/logs/postgres.log"
    [ "$(id -u)" = 0 ] && chown postgres "$demo/logs/postgres.log"
    if ! as_pg "$pg_bin/pg_ctl" -D "$state/pgdata" -l "$demo/logs/postgres.log" \
            -w -t 60 -o "-c listen_addresses='' -c unix_socket_directories='$demo/pg' -p $pg_port" \
            start >/dev/null 2>&1; then
        why_pg="PostgreSQL did not start (see $demo/logs/postgres.log)"
        return 1
    fi
    echo "$state/pgdata" > "$demo/pgdata"
    psql -X -q -h "$demo/pg" -p "$pg_port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'guard'" | grep -q 1 ||
        psql -X -q -h "$demo/pg" -p "$pg_port" -U postgres -d postgres \
            -c 'CREATE DATABASE guard' >/dev/null
    if ! "$guardctl" db migrate --db "$pg_dsn" --dir "$repo/migrations" \
            >>"$demo/logs/postgres.log" 2>&1; then
        why_pg="guardctl db migrate failed (see $demo/logs/postgres.log)"
        return 1
    fi
    return 0
}

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
        gpid=$(cat "$demo/guardd.pid")
        kill -TERM "$gpid"
        echo "guardd stopped"
        for _ in $(seq 50); do
            kill -0 "$gpid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    # after guardd: its sinks
    if [ -f "$demo/redis.pid" ] && kill -0 "$(cat "$demo/redis.pid")" 2>/dev/null
    then
        kill -TERM "$(cat "$demo/redis.pid")"
        echo "redis stopped"
    fi
    if [ -f "$demo/pgdata" ] && [ -n "$pg_bin" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$(cat "$demo/pgdata")" -m fast -w stop \
            >/dev/null 2>&1 && echo "postgres stopped"
        rm -f "$demo/pgdata"
    fi
}

start() {
    case "$state/" in
        "$demo"/*)
            echo "GUARD_DEMO_STATE ($state) must not be in GUARD_DEMO_DIR" \
                "($demo), which each start remakes" >&2
            exit 2 ;;
    esac
    stop >/dev/null 2>&1 || true
    sleep 0.3
    rm -rf "$demo"
    mkdir -p "$demo/logs" "$demo/tmp" "$state"
    chmod 755 "$demo" "$state"

    # the keys: made once, kept
    if [ ! -f "$state/keys/jwks.json" ]; then
        rm -rf "$state/keys"
        "$py" "$tool" keys "$state/keys.new" >/dev/null
        # acme's own key, whose private half is at hand to mint its tokens
        "$py" "$tool" gen --kty RSA --bits 2048 --kid acme-2026 \
            --alg RS256 "$state/keys.new" >/dev/null
        mv "$state/keys.new" "$state/keys"
        # the copy of the policies names the acme key made before
        rm -rf "$state/policies"
    fi

    # the policies: the operator's own, or a kept copy of the examples in
    # which acme's JWKS is replaced by the demo's acme key
    if [ -n "${GUARD_DEMO_POLICIES:-}" ]; then
        policies=$(cd "$GUARD_DEMO_POLICIES" && pwd)
    else
        policies=$state/policies
        if [ ! -d "$policies" ]; then
            rm -rf "$state/policies.new"
            cp -r "$repo/policies/examples" "$state/policies.new"
            printf '{"keys": [%s]}\n' "$(cat "$state/keys/acme-2026.jwk.json")" \
                > "$state/policies.new/keys/acme.jwks.json"
            mv "$state/policies.new" "$policies"
        fi
    fi

    # guardd: the policies, the journal, the spill directory that nginx's
    # workers (nobody) write into
    mkdir -p "$state/journal" "$state/spill"
    chmod 1777 "$state/spill"
    group=""
    [ "$(id -u)" = 0 ] && group='"socket_group": "nogroup",'

    # guardd's sinks: the private Redis and PostgreSQL, those that run
    why_redis="" why_pg="" sinks=""
    redis=no pg=no
    [ "$redis_server" != none ] && start_redis && redis=yes
    [ "$pg_bin" != none ] && start_pg && pg=yes
    [ "$redis_server" = none ] && why_redis="GUARD_DEMO_REDIS=none"
    [ "$pg_bin" = none ] && why_pg="GUARD_DEMO_PG_BIN=none"
    if [ $redis = yes ] || [ $pg = yes ]; then
        sinks=', "sinks": {"state_dir": "'$state/sinks'"'
        [ $redis = yes ] && sinks=$sinks', "redis": {"socket": "'$demo/redis.sock'"}'
        [ $pg = yes ] && sinks=$sinks', "postgres": {"dsn": "'$pg_dsn'"}'
        sinks=$sinks'}'
        mkdir -p "$state/sinks"
    fi

    cat > "$demo/guardd.conf" <<JSON
{"listen": "$demo/guardd.sock", $group "pid_file": "$demo/guardd.pid",
 "policies": "$policies", "journal": {"dir": "$state/journal"},
 "spill": "$state/spill", "node": "demo-guardd",
 "metrics": "$demo/guardd-metrics.sock"$sinks}
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
        -e "s|@STATE@|$state|g" \
        -e "s|@POLICIES@|$policies|g" \
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
        | sed "s|\"kid\":\"\([a-z0-9-]*\)\"|\"kid\":\"\1\",\"alg\":\"ALG_\1\",\"key\":\"$state/keys/\1.pem\"|" \
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
Kept across make stop / make run: $state (keys, policies, journal, reviews)
MSG
    if [ -n "${GUARD_DEMO_POLICIES:-}" ]; then
        cat <<MSG
Policies: $policies (GUARD_DEMO_POLICIES). The examples below assume the
example policies: with your own, the statuses may differ.
MSG
    fi
    cat <<MSG

For guardctl (the SOC commands below read these):
  export GUARD_JOURNAL_DIR=$state/journal GUARD_SOCKET=$demo/guardd.sock

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
burst 10. Thirty requests in a row (one connection): about a dozen pass,
the rest get 429 with Retry-After and RateLimit fields
  curl -s -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer \$(cat $demo/token-gamma)" "$base/api/gamma/orders?[1-30]"; echo

Acme's admin API asks guardd (guard_risk on). A DELETE by a reader scores
the signals "delete" and "no-admin-role", plus "new-ip" the first time and
"off-hours" outside 07:00-20:00 in Paris: step-up (401) or deny (403)
  curl -si -X DELETE -H "Authorization: Bearer \$(cat $demo/token-acme)" $base/api/acme/admin/users/7

Mint your own token from the kept keys: acme's own key (acme-2026), or the
gateway's (rs256, es256, ... in $state/keys/jwks.json) for other tenants
  curl -s -H "Authorization: Bearer \$($guardctl token mint --key $state/keys/acme-2026.pem --alg RS256 --kid acme-2026 --tenant acme --sub you@acme --iss https://idp.acme.example --aud api --ttl 10m)" $base/api/acme/orders
  curl -s -H "Authorization: Bearer \$($guardctl token mint --key $state/keys/rs256.pem --alg RS256 --kid rs256 --tenant gamma --sub you@gamma --iss https://idp.demo --aud api --ttl 10m)" $base/api/gamma/orders

The decision counts (guard_status), and the Prometheus metrics of the
module and of guardd (docs/metrics.md)
  curl -s $base/guard/status
  curl -s "$base/guard/status?format=prometheus"
  curl -s --unix-socket $demo/guardd-metrics.sock http://guardd/metrics

Every refusal above is an audit record in guardd's journal, for the SOC
(with the export line above; an id can be given by its first characters):
  $guardctl blocked
  $guardctl show ID
  $guardctl review ID --verdict confirmed --analyst you
  $guardctl audit verify

Policies: $policies (version in every access log line)
  $guardctl policy check $policies
MSG
    if [ $redis = yes ]; then
        cat <<MSG

guardd publishes every journal record to the demo's Redis stream
guard:records (docs/events.md): every entry, then the stream followed by
a consumer group, as a SIEM shipper would (exits after 5 records)
  redis-cli -s $demo/redis.sock XRANGE guard:records - +
  $guardctl events tail --redis $demo/redis.sock --group demo --count 5 --timeout 5s
MSG
    fi
    if [ $pg = yes ]; then
        cat <<MSG

And to the demo's PostgreSQL, the queryable audit store: the refusals in
SQL, the same SOC commands reading it (--db), and every row checked
against the journal
  psql "$pg_dsn" -c "SELECT ts, tenant, status, reason, id FROM decisions WHERE refusal ORDER BY ts DESC LIMIT 5"
  $guardctl blocked --db "$pg_dsn" --limit 5
  $guardctl audit verify --db "$pg_dsn"
MSG
    fi
    if [ $redis = no ]; then
        printf '\nNo Redis stream: %s; guardd runs without that sink (journal only).\n' "$why_redis"
    fi
    if [ $pg = no ]; then
        printf '\nNo PostgreSQL store: %s; guardd runs without that sink (journal only).\n' "$why_pg"
    fi
    cat <<MSG

Every decision is in $demo/logs/access.log (tenant, the tenant addressed,
subject, decision, reason, decision id); guardd logs to $demo/logs/guardd.log.
MSG
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
