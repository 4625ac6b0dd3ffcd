#!/bin/sh
# Installs the Debian packages that Guard builds, runs and tests with.
# Idempotent and quiet when everything is already there.
#
#   sh scripts/setup.sh          what make, make run and make test need
#   sh scripts/setup.sh fuzz     and clang with libFuzzer, for make fuzz
#   sh scripts/setup.sh bench    and valgrind, for bench/callgrind.sh
set -eu

PKGS="nginx nginx-dev libjansson-dev libssl-dev libpcre2-dev libhiredis-dev
libjwt-dev libpq-dev zlib1g-dev gcc make perl openssl curl wrk bc
redis-server postgresql python3 python3-jwt python3-cryptography
python3-jsonschema python3-prometheus-client python3-yaml groff-base
dpkg-dev jq libutf8proc-dev libhyperscan-dev"

if [ "${1:-}" = fuzz ]; then
    PKGS="$PKGS clang libclang-rt-dev"
fi
if [ "${1:-}" = bench ]; then
    PKGS="$PKGS valgrind libnginx-mod-http-modsecurity modsecurity-crs"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages:$missing" >&2
    echo "setup: run 'sudo $0' (or make as root) to install them" >&2
    exit 1
fi

echo "setup: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# keep the stock nginx service from starting on port 80 inside containers
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "setup: done"
