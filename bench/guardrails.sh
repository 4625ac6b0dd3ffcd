#!/usr/bin/env bash
# bench/guardrails.sh: guardrails in line (the "guardrails" stage), side
# by side with ModSecurity v3 + the OWASP CRS, A/B interleaved on one
# nginx worker, with wrk on loopback.  Every variant proxies over
# keepalive connections to a location of the same server that answers
# 200 with an empty body (the one worker serves the backend's request
# too, as in the other benches), and sends the same headers (a cached
# HS256 token, tenant acme).
#
#   plain-get     nginx alone: proxy_pass, a GET
#   plain-post    the same, a POST of bench/data/chat-1k.json, a 1 KB
#                 OpenAI-style chat body (a system and a user message of
#                 ordinary text), Content-Type application/json
#   guard-get     guard on, acme's policy with the "pii" and
#                 "prompt-injection" packs and an anomaly threshold, a GET
#   guard-post    the same on the 1 KB chat POST: the body read, parsed
#                 and scanned by every rule of both packs (goal: at least
#                 0.75x plain-post)
#   modsec-get    ModSecurity v3 (libnginx-mod-http-modsecurity) with
#   modsec-post   Debian's recommended modsecurity.conf (SecRuleEngine On,
#                 SecRequestBodyAccess On, JSON bodies parsed) and the
#                 OWASP CRS (modsecurity-crs, paranoia level 1), on the
#                 same GET and the same POST
#
# ModSecurity's module is loaded into the same nginx (modsecurity off
# but in its own locations).  Prints each variant's ratio to plain-get
# and plain-post, guard over ModSecurity, and the goal.  Without
# ModSecurity or the CRS (sh scripts/setup.sh bench installs them), its
# variants are skipped with a message; without guardrails in the module
# or the packs in policies/packs/, guard's are.  Quote ratios, not
# absolute rates.  No baseline run (BASELINE_MODULE is ignored).
#
# Then policy-engine's gr_bench on the same body: the engine's scan
# (gd_gr_eval) in MB/s against a standalone PCRE2-JIT loop of the same
# patterns (goal: at least 0.7x), and where the engine's time goes.
# GR_SECONDS: gr_bench's seconds per measure (default 1); GR_PACKS: the
# directory of pii.json and prompt-injection.json (policies/packs;
# bench/data/floor-packs has one rule in each: the floor of a guarded
# JSON POST, the body still read, parsed and walked).

. "$(dirname "$0")/lib.sh"

bench_no_baseline
bench_init

body=$repo/bench/data/chat-1k.json
modsec_so=${MODSEC_MODULE:-/usr/lib/nginx/modules/ngx_http_modsecurity_module.so}
crs_load=${CRS_LOAD:-/usr/share/modsecurity-crs/owasp-crs.load}

read -r acme < <(bench_mint \
    "{\"kid\":\"hs256\",\"alg\":\"HS256\",\"claims\":{\"sub\":\"bench\",\"tenant_id\":\"acme\",\"exp\":$((now + 86400))}}")

# ModSecurity: Debian's recommended configuration, made to block
# (SecRuleEngine On), its files in $dir/modsec, then the CRS
modsec=yes
modsec_why=""
modsec_conf=""
for f in /etc/modsecurity/modsecurity.conf-recommended \
         /etc/nginx/modsecurity.conf \
         /usr/share/nginx/docs/modsecurity/modsecurity.conf; do
    [ -f "$f" ] && { modsec_conf=$f; break; }
done
if [ ! -f "$modsec_so" ]; then
    modsec=no; modsec_why="no $modsec_so (libnginx-mod-http-modsecurity)"
elif [ -z "$modsec_conf" ]; then
    modsec=no; modsec_why="no modsecurity.conf-recommended"
elif [ ! -f "$crs_load" ]; then
    modsec=no; modsec_why="no $crs_load (modsecurity-crs)"
fi
if [ $modsec = yes ]; then
    mkdir -p "$dir/modsec"
    map=$(dirname "$modsec_conf")/unicode.mapping
    [ -f "$map" ] || map=/etc/nginx/unicode.mapping
    [ ! -f "$map" ] || cp "$map" "$dir/modsec/unicode.mapping"
    sed -e 's|^SecRuleEngine .*|SecRuleEngine On|' \
        -e 's|^SecRequestBodyAccess .*|SecRequestBodyAccess On|' \
        -e "s|^SecAuditLog .*|SecAuditLog $dir/modsec/audit.log|" \
        -e "s|^SecTmpDir .*|SecTmpDir $dir/modsec/|" \
        -e "s|^SecDataDir .*|SecDataDir $dir/modsec/|" \
        -e "s|^SecUnicodeMapFile unicode.mapping|SecUnicodeMapFile $dir/modsec/unicode.mapping|" \
        -e 's|^SecStatusEngine .*|SecStatusEngine Off|' \
        "$modsec_conf" > "$dir/modsec/modsecurity.conf"
    [ -f "$map" ] || sed -i '/^SecUnicodeMapFile/d' "$dir/modsec/modsecurity.conf"
    # owasp-crs.load, with IncludeOptional (which ModSecurity v3 does not
    # know) as Include of the files that exist
    {
        echo "Include $dir/modsec/modsecurity.conf"
        while read -r d f; do
            case $d in
                Include) echo "Include $f" ;;
                IncludeOptional) [ ! -f "$f" ] || echo "Include $f" ;;
            esac
        done < "$crs_load"
    } > "$dir/modsec/main.conf"
fi

# Guard: acme's policy, the two packs of policies/packs/ and a threshold
guard=yes
guard_why=""
mkdir -p "$dir/policies/packs"
packs=${GR_PACKS:-$repo/policies/packs}
for p in pii prompt-injection; do
    if [ -f "$packs/$p.json" ]; then
        cp "$packs/$p.json" "$dir/policies/packs/"
    else
        guard=no; guard_why="no $packs/$p.json"
    fi
done
policy() {
    if [ "$1" = yes ]; then
        cat > "$dir/policies/acme.json" <<'JSON'
{
  "tenant": "acme",
  "guardrails": {
    "packs": ["pii", "prompt-injection"],
    "threshold": 10
  }
}
JSON
    else
        echo '{"tenant": "acme"}' > "$dir/policies/acme.json"
    fi
}

# conf: nginx.conf with the variants $guard and $modsec allow
conf() {
    local ms_load="" ms_srv="" ms_loc="" g_loc=""
    if [ $modsec = yes ]; then
        ms_load="load_module $modsec_so;"
        ms_srv="
        modsecurity off;
        modsecurity_rules_file $dir/modsec/main.conf;"
        ms_loc="
        location = /modsec { modsecurity on; proxy_pass http://up/up; }"
    fi
    [ $guard = no ] || g_loc="
        location = /guard { guard on; proxy_pass http://up/up; }"
    { [ -z "$ms_load" ] || echo "$ms_load"; bench_conf_head
      bench_conf_upstream; cat <<CONF; } > "$dir/nginx.conf"

    server {
        listen 127.0.0.1:$port;
$ms_srv
        location = /plain { proxy_pass http://up/up; }$g_loc$ms_loc
        location = /up { return 200; }
    }
}
CONF
}

# conf_ok: nginx -t accepts nginx.conf; its complaint in $dir/probe.err
conf_ok() {
    "$nginx" -t -q -p "$dir/" -c "$dir/nginx.conf" -e "$dir/probe.log" \
        2> "$dir/probe.err"
}

policy $guard
conf
# what nginx -t refuses: ModSecurity's part first, then guard's
if ! conf_ok; then
    if [ $modsec = yes ]; then
        modsec=no
        modsec_why=$(grep -m1 emerg "$dir/probe.err" || head -1 "$dir/probe.err")
        conf
    fi
    if ! conf_ok && [ $guard = yes ]; then
        guard=no
        guard_why=$(grep -m1 emerg "$dir/probe.err" || head -1 "$dir/probe.err")
        policy no
        conf
    fi
    conf_ok || { cat "$dir/probe.err" >&2; exit 1; }
fi
[ $guard = yes ] || echo "guardrails.sh: guard variants skipped: $guard_why" >&2
[ $modsec = yes ] || echo "guardrails.sh: ModSecurity variants skipped: $modsec_why (sh scripts/setup.sh bench)" >&2

bench_start

hdrs=("Authorization: Bearer $acme" "X-Tenant-Id: acme")
# the POSTs, then the GETs: each ratio's two sides measured close in time
bench_variant plain-post /plain "${hdrs[@]}"
bench_post plain-post "$body" application/json
if [ $guard = yes ]; then
    bench_variant guard-post /guard "${hdrs[@]}"
    bench_post guard-post "$body" application/json
fi
if [ $modsec = yes ]; then
    bench_variant modsec-post /modsec "${hdrs[@]}"
    bench_post modsec-post "$body" application/json
fi
bench_variant plain-get /plain "${hdrs[@]}"
[ $guard = no ] || bench_variant guard-get /guard "${hdrs[@]}"
[ $modsec = no ] || bench_variant modsec-get /modsec "${hdrs[@]}"
bench_check

bench_run

echo
echo "Guardrails, 1 worker, wrk -c$conns -d$duration, $rounds interleaved rounds (median);"
echo "POST: $(wc -c < "$body")-byte JSON chat body (bench/data/chat-1k.json)"
bench_report plain-post plain-get
echo
# ratio LABEL A B [NOTE]: A / B, the ratio of the medians and the median
# of the rounds' ratios (two runs close in time: load that comes and goes
# weighs on both)
ratio() {
    printf '%s: %s / %s = %.3f (median of the rounds'"'"' ratios: %.3f)%s\n' \
        "$1" "$2" "$3" "$(bench_ratio "$2" "$3")" \
        "$(bench_round_ratios "$2" "$3" | bench_median)" "${4:+ $4}"
}
if [ $guard = yes ]; then
    ratio "guard on the 1 KB JSON POST over plain proxy POST" \
        guard-post plain-post "(goal: >= 0.75)"
    ratio "guard on a GET over plain proxy GET" guard-get plain-get
else
    echo "guard variants skipped: $guard_why"
fi
if [ $modsec = yes ]; then
    ratio "ModSecurity+CRS on the 1 KB JSON POST over plain proxy POST" \
        modsec-post plain-post
    ratio "ModSecurity+CRS on a GET over plain proxy GET" \
        modsec-get plain-get
    echo "(the issue quotes ModSecurity+CRS at about 0.01x on a 1 KB JSON POST"
    echo " and 0.03x on a GET against a plain keep-alive proxy)"
else
    echo "ModSecurity variants skipped: $modsec_why"
fi
if [ $guard = yes ] && [ $modsec = yes ]; then
    ratio "guard over ModSecurity+CRS, POST" guard-post modsec-post
    ratio "guard over ModSecurity+CRS, GET" guard-get modsec-get
fi
bench_errlog_clean

# the scan alone: gd_gr_eval against standalone PCRE2-JIT, same body
if [ $guard = yes ]; then
    echo
    make -s -C "$repo/policy-engine" build/release/gr_bench >&2
    "$repo/policy-engine/build/release/gr_bench" "$dir/policies" acme \
        "$body" "${GR_SECONDS:-1}" "$rounds"
fi
exit 0
