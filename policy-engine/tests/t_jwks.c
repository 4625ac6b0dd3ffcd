/*
 * Unit tests for gd_jwks: a JWK set file loaded, its errors worded once
 * for the module and guardctl, a policy's set located in its file.
 */
#include "gd_jwks.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GD_TEST_DATA
#define GD_TEST_DATA "t/policies"
#endif

#define GOOD GD_TEST_DATA "/good/keys/acme.jwks.json"

static char tmp[] = "/tmp/t_jwks_XXXXXX";
static char path[256];

static const char *write_file(const char *text)
{
    FILE *f;

    snprintf(path, sizeof(path), "%s/k.json", tmp);
    f = fopen(path, "w");
    if (f == NULL) {
        return NULL;
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* the error of loading text (NULL: loaded) */
static const char *load_text(const char *text, char *err, size_t errlen)
{
    gd_jwks_t set;
    int rc = gd_jwks_load(write_file(text), &set, err, errlen);

    gd_jwks_free(&set);
    return rc == 0 ? NULL : err;
}

int main(void)
{
    gd_jwks_t set, again;
    char err[512], *good = NULL, *dup;
    const char *e;
    size_t len = 0;
    FILE *f;

    if (mkdtemp(tmp) == NULL) {
        TAP_OK(0, "a temporary directory");
        return tap_done();
    }

    TAP_OK(gd_jwks_load(GOOD, &set, err, sizeof(err)) == 0,
           "the good set loads");
    TAP_OK(set.nkeys == 1 && set.keys[0].kid &&
               strlen(set.keys[0].kid) == set.keys[0].kid_len &&
               set.keys[0].pkey != NULL,
           "one RSA key, its kid a string of its own");

    /* the fingerprint: of the canonical form, not of the bytes */
    f = fopen(GOOD, "r");
    if (f) {
        good = calloc(1, 4096);
        len = good ? fread(good, 1, 4095, f) : 0;
        fclose(f);
    }
    TAP_OK(good && len > 0, "the good file read");
    if (good) {
        char *re = malloc(2 * len + 1), *o = re;
        for (size_t i = 0; re && i < len; i++) {
            *o++ = good[i];
            if (good[i] == ',') {
                *o++ = '\n';
            }
        }
        if (re) {
            *o = '\0';
        }
        TAP_OK(
            re && gd_jwks_load(write_file(re), &again, err, sizeof(err)) == 0 &&
                memcmp(again.fingerprint, set.fingerprint,
                       GD_JWKS_FINGERPRINT_LEN) == 0,
            "reformatted: the same fingerprint");
        gd_jwks_free(&again);
        free(re);
    }

    e = load_text("{\"keys\": [", err, sizeof(err));
    TAP_OK(e && strncmp(e, "line 1, column ", 15) == 0, "not JSON: %s",
           e ? e : "loaded");
    e = load_text("[]", err, sizeof(err));
    TAP_OK(e && strcmp(e, "not a JWKS: no \"keys\" array") == 0, "%s",
           e ? e : "loaded");
    e = load_text("{\"keys\": {}}", err, sizeof(err));
    TAP_OK(e && strcmp(e, "not a JWKS: no \"keys\" array") == 0,
           "keys not an array: %s", e ? e : "loaded");
    e = load_text("{\"keys\": []}", err, sizeof(err));
    TAP_OK(e && strcmp(e, "the key set is empty") == 0, "%s", e ? e : "loaded");
    e = load_text("{\"keys\": [{\"kid\": \"k1\", \"kty\": \"oct\"}]}", err,
                  sizeof(err));
    TAP_OK(e && strncmp(e, "keys[0] (kid \"k1\"): no \"alg\"", 27) == 0,
           "a bad key: named by index and kid: %s", e ? e : "loaded");
    e = load_text("{\"keys\": [3]}", err, sizeof(err));
    TAP_OK(e && strcmp(e, "keys[0]: not a JSON object") == 0,
           "a key without a kid: by index: %s", e ? e : "loaded");

    /* two copies of the good key */
    dup = good ? strstr(good, "[") : NULL;
    if (dup) {
        char *end = strrchr(good, ']'), *text = malloc(3 * len + 32);
        size_t klen = end ? (size_t)(end - dup - 1) : 0;
        if (text && end) {
            snprintf(text, 3 * len + 32, "{\"keys\": [%.*s, %.*s]}", (int)klen,
                     dup + 1, (int)klen, dup + 1);
            e = load_text(text, err, sizeof(err));
            TAP_OK(e && strstr(e, "keys[1]: duplicate kid \"") == e,
                   "a duplicate kid: %s", e ? e : "loaded");
        }
        free(text);
    }

    /* a policy's set: the error points at its "jwks" value */
    {
        gd_errors_t errs = {0};
        gd_policy_t p = {0};

        p.file = "/p/acme.json";
        p.jwks = "/nonexistent/k.json";
        p.jwks_line = 4;
        p.jwks_column = 13;
        TAP_OK(gd_jwks_policy_load(&p, &again, &errs) == -1 && errs.n == 1 &&
                   strcmp(errs.lines[0],
                          "/p/acme.json:4:13: /auth/jwks: "
                          "\"/nonexistent/k.json\": cannot open: No such "
                          "file or directory") == 0,
               "a policy's set: %s", errs.n ? errs.lines[0] : "no error");
        gd_jwks_free(&again);
        gd_errors_free(&errs);

        const char *want = "guard_jwt_keys \"/nonexistent/k.json\": cannot "
                           "open: ";
        TAP_OK(
            gd_jwks_check_file("/nonexistent/k.json", &errs) == -1 &&
                errs.n == 1 && strncmp(errs.lines[0], want, strlen(want)) == 0,
            "the guard_jwt_keys file: %s", errs.n ? errs.lines[0] : "no error");
        gd_errors_free(&errs);
    }

    gd_jwks_free(&set);
    free(good);
    unlink(path);
    rmdir(tmp);
    return tap_done();
}
