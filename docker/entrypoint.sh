#!/bin/sh
# The entrypoint of the Guard image (docker/Dockerfile): one image, two
# roles, as the two services of docker/compose.yaml run it.
#
#   guard-entrypoint nginx        nginx in the foreground (the default)
#   guard-entrypoint guardd       guardd in the foreground, as user guard
#   guard-entrypoint guardctl ... guardctl
#   guard-entrypoint CMD ...      any other command, as given
#
# nginx: its master runs as root and its workers as www-data (the user
# directive of docker/nginx.conf).  Without a JWKS at GUARD_JWKS
# (/etc/guard/keys/jwks.json) it stops with a message, unless
# GUARD_GENERATE_KEY=1 asks for a fresh HS256 key set for a first try.
#
# guardd: started as root, it gives the volume directories back to guard
# (a bind mount may bring other owners) and runs guardd as guard, never as
# root; started as another user (docker run --user), it runs guardd as is.
set -eu

GUARD_CONF=${GUARD_CONF:-/etc/guard/guardd.conf}
GUARD_JWKS=${GUARD_JWKS:-/etc/guard/keys/jwks.json}

# an HS256 key set with one fresh 256-bit secret, kid "gateway"
generate_key() {
    secret=$(head -c 32 /dev/urandom | basenc --base64url | tr -d '=\n')
    (
        umask 077
        printf '{"keys": [{"kty": "oct", "kid": "gateway", "alg": "HS256", "k": "%s"}]}\n' \
            "$secret" > "$GUARD_JWKS.tmp"
    )
    mv "$GUARD_JWKS.tmp" "$GUARD_JWKS"
    echo "guard-entrypoint: generated $GUARD_JWKS (HS256, kid gateway) for" \
         "a first try; mount your own JWKS for real use (docs/docker.md)" >&2
}

role=${1:-nginx}

case "$role" in
nginx)
    shift $(($# > 0 ? 1 : 0))
    if [ ! -f "$GUARD_JWKS" ]; then
        if [ "${GUARD_GENERATE_KEY:-0}" = 1 ]; then
            generate_key
        else
            echo "guard-entrypoint: no JWKS at $GUARD_JWKS: mount your key" \
                 "set there, or set GUARD_GENERATE_KEY=1 for a first try" \
                 "(docs/docker.md)" >&2
            exit 1
        fi
    fi
    exec nginx -g 'daemon off;' "$@"
    ;;
guardd)
    shift
    if [ "$(id -u)" -eq 0 ]; then
        chown guard:www-data /run/guard
        chmod 0750 /run/guard
        chown -R guard:guard /var/lib/guard/journal
        chown guard:www-data /var/lib/guard/spill
        chmod 2770 /var/lib/guard/spill
        exec setpriv --reuid=guard --regid=guard --init-groups -- \
            guardd -c "$GUARD_CONF" "$@"
    fi
    exec guardd -c "$GUARD_CONF" "$@"
    ;;
*)
    exec "$@"
    ;;
esac
