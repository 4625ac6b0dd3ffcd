/*
 * gd_jwks: JWK set files, see gd_jwks.h.
 */
#include "gd_jwks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

/* imports keys[i] into set->keys[set->nkeys]; 0, or -1 with err set */
static int import_key(json_t *jwk, size_t i, gd_jwks_t *set, char *err,
                      size_t errlen)
{
    gd_jwk_t *key = &set->keys[set->nkeys];
    const char *e;
    char *kid = NULL;

    memset(key, 0, sizeof(*key));
    e = gd_jwk_import(jwk, key);
    set->nkeys++; /* freed by gd_jwks_free() from here on */

    if (key->kid != NULL) {
        kid = malloc(key->kid_len + 1);
        if (kid == NULL) {
            key->kid = NULL;
            snprintf(err, errlen, "keys[%zu]: out of memory", i);
            return -1;
        }
        memcpy(kid, key->kid, key->kid_len);
        kid[key->kid_len] = '\0';
    }
    key->kid = kid; /* the JSON's copy goes with the document */

    if (e != NULL) {
        snprintf(err, errlen, "keys[%zu]%s%s%s: %s", i, kid ? " (kid \"" : "",
                 kid ? kid : "", kid ? "\")" : "", e);
        return -1;
    }

    for (size_t j = 0; j + 1 < set->nkeys; j++) {
        const gd_jwk_t *k = &set->keys[j];
        size_t klen = k->kid ? k->kid_len : 0;
        size_t len = kid ? key->kid_len : 0;

        if (klen == len && (len == 0 || memcmp(k->kid, kid, len) == 0)) {
            snprintf(err, errlen, "keys[%zu]: duplicate kid \"%s\"", i,
                     kid ? kid : "");
            return -1;
        }
    }

    return 0;
}

int gd_jwks_load(const char *file, gd_jwks_t *set, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root, *keys;
    FILE *f;
    char *canon;
    int rc = -1;

    memset(set, 0, sizeof(*set));

    f = fopen(file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }
    root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);

    if (root == NULL) {
        snprintf(err, errlen, "line %d, column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return -1;
    }

    keys = json_object_get(root, "keys");

    if (!json_is_object(root) || !json_is_array(keys)) {
        snprintf(err, errlen, "not a JWKS: no \"keys\" array");
        goto done;
    }

    if (json_array_size(keys) == 0) {
        snprintf(err, errlen, "the key set is empty");
        goto done;
    }

    set->keys = calloc(json_array_size(keys), sizeof(gd_jwk_t));
    if (set->keys == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    for (size_t i = 0; i < json_array_size(keys); i++) {
        if (import_key(json_array_get(keys, i), i, set, err, errlen) != 0) {
            goto done;
        }
    }

    /* the fingerprint: of the canonical form, not of the bytes */
    canon = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (canon == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    SHA256((const unsigned char *)canon, strlen(canon), set->fingerprint);
    free(canon);
    rc = 0;

done:
    json_decref(root);
    return rc;
}

void gd_jwks_free(gd_jwks_t *set)
{
    for (size_t i = 0; i < set->nkeys; i++) {
        free((char *)set->keys[i].kid);
        set->keys[i].kid = NULL;
        gd_jwk_free(&set->keys[i]);
    }
    free(set->keys);
    set->keys = NULL;
    set->nkeys = 0;
}

int gd_jwks_policy_load(const gd_policy_t *p, gd_jwks_t *set, gd_errors_t *errs)
{
    char err[512];

    if (gd_jwks_load(p->jwks, set, err, sizeof(err)) != 0) {
        gd_errors_add(errs, "%s:%d:%d: /auth/jwks: \"%s\": %s", p->file,
                      p->jwks_line, p->jwks_column, p->jwks, err);
        return -1;
    }
    return 0;
}

int gd_policy_set_check_keys(const gd_policy_set_t *set, gd_errors_t *errs)
{
    int rc = 0;

    for (size_t i = 0; i <= set->ntenants; i++) {
        const gd_policy_t *p =
            i < set->ntenants ? &set->tenants[i] : set->fallback;
        gd_jwks_t keys;

        if (p == NULL || p->jwks == NULL) {
            continue;
        }
        if (gd_jwks_policy_load(p, &keys, errs) != 0) {
            rc = -1;
        }
        gd_jwks_free(&keys);
    }

    return rc;
}

int gd_jwks_check_file(const char *file, gd_errors_t *errs)
{
    gd_jwks_t keys;
    char err[512];
    int rc = gd_jwks_load(file, &keys, err, sizeof(err));

    if (rc != 0) {
        gd_errors_add(errs, "guard_jwt_keys \"%s\": %s", file, err);
    }
    gd_jwks_free(&keys);
    return rc;
}
