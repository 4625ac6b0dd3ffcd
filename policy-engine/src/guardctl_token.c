/* guardctl token mint: a signed test token from a JWKS or a PEM key */
#include "guardctl.h"

#include "gd_jwk.h"
#include "gd_soc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>

#define GUARDCTL_MAX_KEY (1024 * 1024)

char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;

    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }

    buf = malloc(GUARDCTL_MAX_KEY + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        fclose(f);
        return NULL;
    }

    *len = fread(buf, 1, GUARDCTL_MAX_KEY + 1, f);
    if (ferror(f) || *len > GUARDCTL_MAX_KEY) {
        snprintf(err, errlen, "%s: %s", path,
                 ferror(f) ? strerror(errno) : "larger than 1 MiB");
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* the shortest secret Guard takes for an HS algorithm (gd_jwk) */
static int hmac_size(jwt_alg_t alg)
{
    const char *name = jwt_alg_str(alg);

    return (int)gd_jwk_alg(name, strlen(name))->hash_len;
}

static int is_hmac(jwt_alg_t alg)
{
    return alg == JWT_ALG_HS256 || alg == JWT_ALG_HS384 || alg == JWT_ALG_HS512;
}

/* the algorithm libjwt 1.10 can sign with, or JWT_ALG_INVAL */
static jwt_alg_t alg_parse(const char *name, char *err, size_t errlen)
{
    static const char *ok[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                               "RS512", "ES256", "ES384", "ES512", NULL};

    for (int i = 0; ok[i]; i++) {
        if (strcmp(name, ok[i]) == 0) {
            return jwt_str_alg(name);
        }
    }

    if (strncmp(name, "PS", 2) == 0 || strcmp(name, "EdDSA") == 0) {
        snprintf(err, errlen,
                 "libjwt 1.10 cannot sign %s tokens; use HS*, RS* or ES*",
                 name);
    } else {
        snprintf(err, errlen, "\"%s\" is not a signing algorithm", name);
    }
    return JWT_ALG_INVAL;
}

/*
 * The signing key from FILE: a PEM private key (with --alg), a JWKS or a
 * single JWK.  *key (malloc()ed) and *keylen are what jwt_set_alg takes.
 */
static int mint_key(const char *path, const char *kid, const char *alg_arg,
                    jwt_alg_t *alg, unsigned char **key, size_t *keylen,
                    char *err, size_t errlen)
{
    size_t len;
    char *text = read_file(path, &len, err, errlen);
    const char *p, *jalg, *kty;
    json_t *doc = NULL, *jwk = NULL;
    json_error_t jerr;
    int rc = -1;

    if (text == NULL) {
        return -1;
    }

    for (p = text; *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'; p++) {
    }

    if (strncmp(p, "-----BEGIN", 10) == 0) {
        if (alg_arg == NULL) {
            snprintf(err, errlen,
                     "%s is a PEM key: name its algorithm with --alg "
                     "(RS256, ES256, ...)",
                     path);
            goto done;
        }
        *alg = alg_parse(alg_arg, err, errlen);
        if (*alg == JWT_ALG_INVAL) {
            goto done;
        }
        if (is_hmac(*alg)) {
            snprintf(err, errlen,
                     "%s signs with a shared secret: give a JWKS with an "
                     "oct key",
                     alg_arg);
            goto done;
        }
        if (gd_soc_pem_check(text, len, alg_arg, err, errlen) != 0) {
            goto done;
        }
        *key = (unsigned char *)text;
        *keylen = len;
        return 0;
    }

    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        snprintf(err, errlen, "%s is neither a PEM key nor a JWKS: %s", path,
                 doc ? "not a JSON object" : jerr.text);
        goto done;
    }

    if (json_is_array(json_object_get(doc, "keys"))) {
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(doc, "keys"), i, k)
        {
            const char *kk = gd_soc_str(k, "kid");
            if (kk && strcmp(kk, kid) == 0) {
                jwk = k;
                break;
            }
        }
        if (jwk == NULL) {
            snprintf(err, errlen, "%s has no key with kid \"%s\"", path, kid);
            goto done;
        }
    } else {
        const char *kk = gd_soc_str(doc, "kid");
        if (kk && strcmp(kk, kid) != 0) {
            snprintf(err, errlen, "the key in %s has kid \"%s\", not \"%s\"",
                     path, kk, kid);
            goto done;
        }
        jwk = doc;
    }

    kty = gd_soc_str(jwk, "kty");
    jalg = gd_soc_str(jwk, "alg");

    if (alg_arg && jalg && strcmp(alg_arg, jalg) != 0) {
        snprintf(err, errlen,
                 "the key \"%s\" is pinned to %s: Guard would refuse a %s "
                 "token signed with it",
                 kid, jalg, alg_arg);
        goto done;
    }
    if (alg_arg == NULL) {
        alg_arg = jalg;
    }

    if (kty && strcmp(kty, "oct") == 0) {
        const char *k = gd_soc_str(jwk, "k");

        *alg = alg_parse(alg_arg ? alg_arg : "HS256", err, errlen);
        if (*alg == JWT_ALG_INVAL) {
            goto done;
        }
        if (!is_hmac(*alg)) {
            snprintf(err, errlen,
                     "an oct key signs HS256, HS384 or HS512, "
                     "not %s",
                     alg_arg);
            goto done;
        }
        if (k == NULL || (*key = gd_soc_b64url_decode(k, keylen)) == NULL) {
            snprintf(err, errlen, "the oct key \"%s\" has no valid \"k\"", kid);
            goto done;
        }
        if (*keylen < (size_t)hmac_size(*alg)) {
            snprintf(err, errlen,
                     "the oct key \"%s\" has %zu bytes: %s needs at least %d",
                     kid, *keylen, jwt_alg_str(*alg), hmac_size(*alg));
            free(*key);
            *key = NULL;
            goto done;
        }
        rc = 0;
        goto done;
    }

    if (kty && (strcmp(kty, "RSA") == 0 || strcmp(kty, "EC") == 0)) {
        const char *dflt = "RS256", *crv = gd_soc_str(jwk, "crv");
        char *pem;

        if (strcmp(kty, "EC") == 0) {
            dflt = gd_jwk_ec_curve(crv) ? gd_jwk_ec_curve(crv)->name : "ES256";
        }
        if (alg_arg == NULL) {
            alg_arg = dflt;
        }
        *alg = alg_parse(alg_arg, err, errlen);
        if (*alg == JWT_ALG_INVAL) {
            goto done;
        }
        if (json_object_get(jwk, "d") == NULL) {
            snprintf(err, errlen,
                     "the key \"%s\" is a public key (no \"d\"): minting "
                     "needs the private key",
                     kid);
            goto done;
        }
        pem = gd_soc_jwk_to_pem(jwk, err, errlen);
        if (pem == NULL) {
            goto done;
        }
        if (gd_soc_pem_check(pem, strlen(pem), alg_arg, err, errlen) != 0) {
            free(pem);
            goto done;
        }
        *key = (unsigned char *)pem;
        *keylen = strlen(pem);
        rc = 0;
        goto done;
    }

    snprintf(err, errlen,
             "the key \"%s\" has kty \"%s\": oct, RSA or EC is "
             "needed",
             kid, kty ? kty : "");

done:
    json_decref(doc);
    free(text);
    return rc;
}

int token_mint(int argc, char **argv)
{
    const char *keyfile = NULL, *kid = NULL, *tenant = NULL, *sub = NULL,
               *ttl_arg = "1h", *iss = NULL, *aud = NULL, *alg_arg = NULL,
               *tenant_claim = "tenant_id";
    const char **claims = calloc((size_t)argc + 1, sizeof(char *));
    size_t nclaims = 0, keylen = 0;
    unsigned char *key = NULL;
    jwt_alg_t alg = JWT_ALG_INVAL;
    jwt_t *jwt = NULL;
    json_t *names = json_object();
    int64_t ttl;
    time_t now = time(NULL);
    char err[512], *token = NULL;
    int rc = 1;

    if (claims == NULL || names == NULL) {
        fprintf(stderr, "guardctl: out of memory\n");
        free(claims);
        json_decref(names);
        return 1;
    }

    {
        const guardctl_opt_t opts[] = {OPT("--key", keyfile),
                                       OPT("--kid", kid),
                                       OPT("--tenant", tenant),
                                       OPT("--sub", sub),
                                       OPT("--ttl", ttl_arg),
                                       OPT_LIST("--claim", claims, nclaims),
                                       OPT("--iss", iss),
                                       OPT("--aud", aud),
                                       OPT("--alg", alg_arg),
                                       OPT("--tenant-claim", tenant_claim),
                                       {NULL}};

        rc = opts_parse("token mint", argc, argv, opts, NULL);
        if (rc != 0) {
            goto done;
        }
        rc = 1;
    }

    if (keyfile == NULL || kid == NULL || tenant == NULL) {
        rc = usage_error("token mint: %s", "--key, --kid and --tenant are "
                                           "needed");
        goto done;
    }
    if (gd_soc_parse_duration(ttl_arg, &ttl) != 0 || ttl < 1000) {
        rc = usage_error("--ttl: \"%s\" is not a duration of a second or "
                         "more (90s, 30m, 1h, 2d)",
                         ttl_arg);
        goto done;
    }
    if (*tenant_claim == '\0' || *kid == '\0') {
        rc = usage_error("token mint: %s", "empty --kid or --tenant-claim");
        goto done;
    }

    /* every claim once: a second value would silently replace the first */
    {
        const char *fixed[] = {tenant_claim,
                               "iat",
                               "exp",
                               sub ? "sub" : NULL,
                               iss ? "iss" : NULL,
                               aud ? "aud" : NULL};
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
            if (fixed[i]) {
                json_object_set_new(names, fixed[i], json_true());
            }
        }
        for (size_t i = 0; i < nclaims; i++) {
            const char *eq = strchr(claims[i], '=');
            char name[256];

            if (eq == NULL || eq == claims[i] ||
                (size_t)(eq - claims[i]) >= sizeof(name)) {
                rc =
                    usage_error("--claim: \"%s\" is not name=value", claims[i]);
                goto done;
            }
            memcpy(name, claims[i], (size_t)(eq - claims[i]));
            name[eq - claims[i]] = '\0';
            if (json_object_get(names, name)) {
                fprintf(stderr,
                        "guardctl: the claim \"%s\" is set twice (iat and "
                        "exp come from now and --ttl)\n",
                        name);
                goto done;
            }
            json_object_set_new(names, name, json_true());
        }
    }

    if (mint_key(keyfile, kid, alg_arg, &alg, &key, &keylen, err,
                 sizeof(err)) != 0) {
        fprintf(stderr, "guardctl: %s\n", err);
        goto done;
    }

    if (jwt_new(&jwt) != 0 || jwt_set_alg(jwt, alg, key, (int)keylen) != 0 ||
        jwt_add_header(jwt, "kid", kid) != 0 ||
        jwt_add_grant(jwt, tenant_claim, tenant) != 0 ||
        jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)(now + ttl / 1000)) != 0 ||
        (sub && jwt_add_grant(jwt, "sub", sub) != 0) ||
        (iss && jwt_add_grant(jwt, "iss", iss) != 0) ||
        (aud && jwt_add_grant(jwt, "aud", aud) != 0)) {
        fprintf(stderr, "guardctl: libjwt: %s\n", strerror(errno));
        goto done;
    }

    for (size_t i = 0; i < nclaims; i++) {
        const char *eq = strchr(claims[i], '=');
        char name[256];
        const char *value = eq + 1;
        size_t vlen = strlen(value);
        int r;

        memcpy(name, claims[i], (size_t)(eq - claims[i]));
        name[eq - claims[i]] = '\0';

        /* all digits: a number (up to 18 digits, so it fits a long) */
        if (vlen > 0 && vlen <= 18 && strspn(value, "0123456789") == vlen) {
            r = jwt_add_grant_int(jwt, name, strtol(value, NULL, 10));
        } else {
            r = jwt_add_grant(jwt, name, value);
        }
        if (r != 0) {
            fprintf(stderr, "guardctl: the claim \"%s\": %s\n", name,
                    strerror(r));
            goto done;
        }
    }

    token = jwt_encode_str(jwt);
    if (token == NULL) {
        fprintf(stderr, "guardctl: libjwt could not sign the token: %s\n",
                strerror(errno));
        goto done;
    }

    printf("%s\n", token);
    rc = 0;

done:
    free(token);
    jwt_free(jwt);
    if (key) {
        memset(key, 0, keylen);
        free(key);
    }
    json_decref(names);
    free(claims);
    return rc;
}
