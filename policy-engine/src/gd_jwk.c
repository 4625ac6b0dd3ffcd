/*
 * gd_jwk: a JSON Web Key as an OpenSSL key, see gd_jwk.h.
 */
#include "gd_jwk.h"
#include "gd_jwt.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

static const gd_jwk_alg_t gd_jwk_algs[] = {
    {"HS256", GD_JWK_HS, "SHA256", 32, "oct", NULL, NULL, 0},
    {"HS384", GD_JWK_HS, "SHA384", 48, "oct", NULL, NULL, 0},
    {"HS512", GD_JWK_HS, "SHA512", 64, "oct", NULL, NULL, 0},
    {"RS256", GD_JWK_RS, "SHA256", 32, "RSA", NULL, NULL, 0},
    {"RS384", GD_JWK_RS, "SHA384", 48, "RSA", NULL, NULL, 0},
    {"RS512", GD_JWK_RS, "SHA512", 64, "RSA", NULL, NULL, 0},
    {"PS256", GD_JWK_PS, "SHA256", 32, "RSA", NULL, NULL, 0},
    {"PS384", GD_JWK_PS, "SHA384", 48, "RSA", NULL, NULL, 0},
    {"PS512", GD_JWK_PS, "SHA512", 64, "RSA", NULL, NULL, 0},
    {"ES256", GD_JWK_ES, "SHA256", 32, "EC", "P-256", "prime256v1", 32},
    {"ES384", GD_JWK_ES, "SHA384", 48, "EC", "P-384", "secp384r1", 48},
    {"ES512", GD_JWK_ES, "SHA512", 64, "EC", "P-521", "secp521r1", 66},
    {"EdDSA", GD_JWK_EDDSA, NULL, 0, "OKP", "Ed25519", NULL, 32},
};

#define GD_JWK_NALGS (sizeof(gd_jwk_algs) / sizeof(gd_jwk_algs[0]))

const gd_jwk_alg_t *gd_jwk_alg(const char *name, size_t len)
{
    for (size_t i = 0; i < GD_JWK_NALGS; i++) {
        if (strlen(gd_jwk_algs[i].name) == len &&
            memcmp(gd_jwk_algs[i].name, name, len) == 0) {
            return &gd_jwk_algs[i];
        }
    }

    return NULL;
}

/* the member name as canonical base64url, malloc()ed; -1 when bad */
static int gd_jwk_b64(const json_t *jwk, const char *name, unsigned char **out,
                      size_t *len)
{
    const json_t *v = json_object_get(jwk, name);

    *out = NULL;

    if (!json_is_string(v)) {
        return -1;
    }

    *out = malloc(GD_B64URL_DECODED_MAX(json_string_length(v)) + 1);
    if (*out == NULL) {
        return -1;
    }

    if (gd_b64url_decode(json_string_value(v), json_string_length(v), *out,
                         len) != 0 ||
        *len == 0) {
        free(*out);
        *out = NULL;
        return -1;
    }

    return 0;
}

static int gd_jwk_has_private(const json_t *jwk, const char **members)
{
    for (; *members; members++) {
        if (json_object_get(jwk, *members) != NULL) {
            return 1;
        }
    }

    return 0;
}

#define GD_JWK_PRIVATE                                                         \
    "private key material in the key set (publish public keys only)"

/* the key of type from the parameters in bld: a key pair or public key */
static int gd_jwk_fromdata(const char *type, OSSL_PARAM_BLD *bld, int selection,
                           EVP_PKEY **pkey)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    int rc = -1;

    if (params != NULL && pctx != NULL && EVP_PKEY_fromdata_init(pctx) == 1 &&
        EVP_PKEY_fromdata(pctx, pkey, selection, params) == 1) {
        rc = 0;
    }

    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    ERR_clear_error();

    return rc;
}

int gd_jwk_rsa_pkey(const unsigned char *const member[], const size_t len[],
                    size_t nmembers, EVP_PKEY **pkey)
{
    static const char *names[] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    BIGNUM *bn[8] = {0};
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    int rc = -1;

    *pkey = NULL;

    if (bld == NULL || (nmembers != 2 && nmembers != 8)) {
        goto done;
    }

    for (size_t i = 0; i < nmembers; i++) {
        bn[i] = BN_bin2bn(member[i], (int)len[i], NULL);
        if (bn[i] == NULL ||
            OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i]) != 1) {
            goto done;
        }
    }

    rc = gd_jwk_fromdata("RSA", bld,
                         nmembers == 8 ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
                         pkey);

done:
    OSSL_PARAM_BLD_free(bld);
    for (size_t i = 0; i < 8; i++) {
        BN_clear_free(bn[i]);
    }
    ERR_clear_error();

    return rc;
}

int gd_jwk_ec_pkey(const char *group, const unsigned char *x,
                   const unsigned char *y, size_t size, const unsigned char *d,
                   size_t dlen, EVP_PKEY **pkey)
{
    unsigned char pub[1 + 2 * 66];
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *priv = NULL;
    int rc = -1;

    *pkey = NULL;

    if (bld == NULL || size > 66) {
        goto done;
    }

    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, size);
    memcpy(pub + 1 + size, y, size);

    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                        0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                         1 + 2 * size) != 1) {
        goto done;
    }

    if (d != NULL &&
        ((priv = BN_bin2bn(d, (int)dlen, NULL)) == NULL ||
         OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv) != 1)) {
        goto done;
    }

    rc = gd_jwk_fromdata(
        "EC", bld, d != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, pkey);

done:
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(priv);
    ERR_clear_error();

    return rc;
}

const gd_jwk_alg_t *gd_jwk_ec_curve(const char *crv)
{
    for (size_t i = 0; crv != NULL && i < GD_JWK_NALGS; i++) {
        if (gd_jwk_algs[i].family == GD_JWK_ES &&
            strcmp(gd_jwk_algs[i].crv, crv) == 0) {
            return &gd_jwk_algs[i];
        }
    }

    return NULL;
}

static const char *gd_jwk_rsa(const json_t *jwk, gd_jwk_t *key)
{
    static const char *private[] = {"d",  "p",  "q",   "dp",
                                    "dq", "qi", "oth", NULL};
    const char *rv = "cannot build the RSA key";
    unsigned char *m[2] = {NULL, NULL};
    size_t len[2];

    if (gd_jwk_has_private(jwk, private)) {
        return GD_JWK_PRIVATE;
    }

    if (gd_jwk_b64(jwk, "n", &m[0], &len[0]) != 0) {
        return "RSA key needs \"n\" in base64url";
    }

    if (gd_jwk_b64(jwk, "e", &m[1], &len[1]) != 0) {
        free(m[0]);
        return "RSA key needs \"e\" in base64url";
    }

    if (gd_jwk_rsa_pkey((const unsigned char *const *)m, len, 2, &key->pkey) ==
        0) {
        rv = EVP_PKEY_get_bits(key->pkey) < GD_JWK_RSA_MIN_BITS
                 ? "RSA key shorter than 2048 bits"
                 : NULL;
    }

    free(m[0]);
    free(m[1]);

    return rv;
}

static const char *gd_jwk_ec(const json_t *jwk, gd_jwk_t *key)
{
    static const char *private[] = {"d", NULL};
    const gd_jwk_alg_t *alg = key->alg;
    const json_t *crv = json_object_get(jwk, "crv");
    const char *rv;
    unsigned char *x = NULL, *y = NULL;
    size_t xlen, ylen;
    EVP_PKEY_CTX *pctx = NULL;

    if (gd_jwk_has_private(jwk, private)) {
        return GD_JWK_PRIVATE;
    }

    if (!json_is_string(crv) || strcmp(json_string_value(crv), alg->crv) != 0) {
        return "\"crv\" does not fit \"alg\" (ES256: P-256, ES384: P-384, "
               "ES512: P-521)";
    }

    if (gd_jwk_b64(jwk, "x", &x, &xlen) != 0 ||
        gd_jwk_b64(jwk, "y", &y, &ylen) != 0) {
        rv = "EC key needs \"x\" and \"y\" in base64url";
        goto done;
    }

    if (xlen != alg->coord_len || ylen != alg->coord_len) {
        rv = "EC coordinates have the wrong length for the curve";
        goto done;
    }

    rv = "EC point is not on the curve";

    if (gd_jwk_ec_pkey(alg->group, x, y, xlen, NULL, 0, &key->pkey) != 0) {
        goto done;
    }

    pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);

    if (pctx != NULL && EVP_PKEY_public_check(pctx) == 1) {
        rv = NULL;
    }

done:
    EVP_PKEY_CTX_free(pctx);
    free(x);
    free(y);
    ERR_clear_error();

    return rv;
}

static const char *gd_jwk_okp(const json_t *jwk, gd_jwk_t *key)
{
    static const char *private[] = {"d", NULL};
    const json_t *crv = json_object_get(jwk, "crv");
    unsigned char *x;
    size_t xlen;

    if (gd_jwk_has_private(jwk, private)) {
        return GD_JWK_PRIVATE;
    }

    if (!json_is_string(crv) ||
        strcmp(json_string_value(crv), key->alg->crv) != 0) {
        return "\"crv\" must be \"Ed25519\"";
    }

    if (gd_jwk_b64(jwk, "x", &x, &xlen) != 0 || xlen != key->alg->coord_len) {
        free(x);
        return "Ed25519 key needs a 32-byte \"x\" in base64url";
    }

    key->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
    free(x);
    ERR_clear_error();

    return key->pkey == NULL ? "cannot build the Ed25519 key" : NULL;
}

static const char *gd_jwk_oct(const json_t *jwk, gd_jwk_t *key)
{
    if (gd_jwk_b64(jwk, "k", &key->secret, &key->secret_len) != 0) {
        return "oct key needs \"k\" in base64url";
    }

    if (key->secret_len < key->alg->hash_len) {
        return "oct key shorter than the hash output of its \"alg\"";
    }

    return NULL;
}

const char *gd_jwk_import(const json_t *jwk, gd_jwk_t *key)
{
    const json_t *v, *op;
    const char *kty;
    size_t i;

    memset(key, 0, sizeof(*key));

    if (!json_is_object(jwk)) {
        return "not a JSON object";
    }

    v = json_object_get(jwk, "kid");

    if (v == NULL) {
        return "no \"kid\"";
    }

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return "\"kid\" must be a non-empty string";
    }

    key->kid = json_string_value(v);
    key->kid_len = json_string_length(v);

    v = json_object_get(jwk, "kty");
    if (!json_is_string(v)) {
        return "no \"kty\"";
    }

    kty = json_string_value(v);

    v = json_object_get(jwk, "alg");

    if (v == NULL) {
        return "no \"alg\": every key must pin its algorithm";
    }

    if (!json_is_string(v)) {
        return "\"alg\" must be a string";
    }

    key->alg = gd_jwk_alg(json_string_value(v), json_string_length(v));

    if (key->alg == NULL) {
        return "unsupported \"alg\" (supported: HS256, HS384, HS512, "
               "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, "
               "ES512, EdDSA)";
    }

    if (strcmp(kty, key->alg->kty) != 0) {
        return "\"alg\" does not fit \"kty\"";
    }

    v = json_object_get(jwk, "use");
    if (v != NULL &&
        !(json_is_string(v) && strcmp(json_string_value(v), "sig") == 0)) {
        return "\"use\" is not \"sig\"";
    }

    v = json_object_get(jwk, "key_ops");
    if (v != NULL) {
        if (!json_is_array(v)) {
            return "\"key_ops\" must be an array";
        }

        for (i = 0; i < json_array_size(v); i++) {
            op = json_array_get(v, i);
            if (json_is_string(op) &&
                strcmp(json_string_value(op), "verify") == 0) {
                break;
            }
        }

        if (i == json_array_size(v)) {
            return "\"key_ops\" does not allow \"verify\"";
        }
    }

    switch (key->alg->family) {
    case GD_JWK_HS:
        return gd_jwk_oct(jwk, key);
    case GD_JWK_RS:
    case GD_JWK_PS:
        return gd_jwk_rsa(jwk, key);
    case GD_JWK_ES:
        return gd_jwk_ec(jwk, key);
    default: /* GD_JWK_EDDSA */
        return gd_jwk_okp(jwk, key);
    }
}

void gd_jwk_free(gd_jwk_t *key)
{
    EVP_PKEY_free(key->pkey);
    key->pkey = NULL;

    if (key->secret != NULL) {
        OPENSSL_clear_free(key->secret, key->secret_len);
        key->secret = NULL;
    }
}
