
/*
 * Copyright (C) Guard authors
 *
 * JWT authentication.
 *
 * Keys come from a JWKS file (RFC 7517).  Every key carries its "alg",
 * and that algorithm is the only one the key verifies: the token header's
 * "alg" selects nothing, it must merely agree.  "jku", "x5u", "x5c" and
 * "jwk" header parameters are never used to find a key, "kid" is only ever
 * compared byte-wise with the kids of the file.
 */


#include "ngx_http_guard_jwt.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>


#define NGX_HTTP_GUARD_RSA_MIN_BITS  2048


typedef enum {
    NGX_HTTP_GUARD_ALG_HS = 0,
    NGX_HTTP_GUARD_ALG_RS,
    NGX_HTTP_GUARD_ALG_PS,
    NGX_HTTP_GUARD_ALG_ES,
    NGX_HTTP_GUARD_ALG_EDDSA
} ngx_http_guard_alg_family_e;


typedef struct {
    ngx_str_t                    name;
    ngx_http_guard_alg_family_e  family;
    char                        *md;          /* digest, NULL for EdDSA */
    size_t                       hash_len;
    char                        *kty;
    char                        *crv;         /* JWK curve name */
    char                        *group;       /* OpenSSL group name */
    size_t                       coord_len;   /* EC and OKP */
} ngx_http_guard_alg_t;


typedef struct {
    ngx_str_t                    kid;
    ngx_http_guard_alg_t        *alg;
    EVP_MD                      *md;
    EVP_PKEY                    *pkey;
    EVP_PKEY_CTX                *vctx;        /* RS, PS, ES: verify ready */
    ngx_str_t                    secret;      /* HS */
} ngx_http_guard_key_t;


struct ngx_http_guard_keyset_s {
    ngx_str_t                    file;
    ngx_array_t                  keys;        /* ngx_http_guard_key_t */
    u_char                       fingerprint[NGX_HTTP_GUARD_HASH_LEN];
};


static ngx_http_guard_alg_t  ngx_http_guard_algs[] = {
    { ngx_string("HS256"), NGX_HTTP_GUARD_ALG_HS, "SHA256", 32,
      "oct", NULL, NULL, 0 },
    { ngx_string("HS384"), NGX_HTTP_GUARD_ALG_HS, "SHA384", 48,
      "oct", NULL, NULL, 0 },
    { ngx_string("HS512"), NGX_HTTP_GUARD_ALG_HS, "SHA512", 64,
      "oct", NULL, NULL, 0 },
    { ngx_string("RS256"), NGX_HTTP_GUARD_ALG_RS, "SHA256", 32,
      "RSA", NULL, NULL, 0 },
    { ngx_string("RS384"), NGX_HTTP_GUARD_ALG_RS, "SHA384", 48,
      "RSA", NULL, NULL, 0 },
    { ngx_string("RS512"), NGX_HTTP_GUARD_ALG_RS, "SHA512", 64,
      "RSA", NULL, NULL, 0 },
    { ngx_string("PS256"), NGX_HTTP_GUARD_ALG_PS, "SHA256", 32,
      "RSA", NULL, NULL, 0 },
    { ngx_string("PS384"), NGX_HTTP_GUARD_ALG_PS, "SHA384", 48,
      "RSA", NULL, NULL, 0 },
    { ngx_string("PS512"), NGX_HTTP_GUARD_ALG_PS, "SHA512", 64,
      "RSA", NULL, NULL, 0 },
    { ngx_string("ES256"), NGX_HTTP_GUARD_ALG_ES, "SHA256", 32,
      "EC", "P-256", "prime256v1", 32 },
    { ngx_string("ES384"), NGX_HTTP_GUARD_ALG_ES, "SHA384", 48,
      "EC", "P-384", "secp384r1", 48 },
    { ngx_string("ES512"), NGX_HTTP_GUARD_ALG_ES, "SHA512", 64,
      "EC", "P-521", "secp521r1", 66 },
    { ngx_string("EdDSA"), NGX_HTTP_GUARD_ALG_EDDSA, NULL, 0,
      "OKP", "Ed25519", NULL, 32 },
    { ngx_null_string, 0, NULL, 0, NULL, NULL, NULL, 0 }
};


static char *ngx_http_guard_jwt_load_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key);
static char *ngx_http_guard_jwt_b64_member(ngx_conf_t *cf, json_t *jwk,
    const char *name, ngx_str_t *out);
static char *ngx_http_guard_jwt_rsa_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key);
static char *ngx_http_guard_jwt_ec_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key);
static char *ngx_http_guard_jwt_okp_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key);
static char *ngx_http_guard_jwt_oct_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key);
static void ngx_http_guard_jwt_keyset_cleanup(void *data);

static ngx_int_t ngx_http_guard_jwt_b64(ngx_pool_t *pool,
    gd_jwt_span_t *in, ngx_str_t *out);
static ngx_int_t ngx_http_guard_jwt_verify_sig(ngx_http_request_t *r,
    ngx_http_guard_key_t *key, ngx_str_t *data, ngx_str_t *sig);
static ngx_int_t ngx_http_guard_jwt_string(json_t *v, ngx_str_t *out);


/* configuration: the key set */

char *
ngx_http_guard_jwt_load_keys(ngx_conf_t *cf, ngx_str_t *path,
    ngx_http_guard_keyset_t **keyset)
{
    char                     *rv, *canon;
    size_t                    i, n;
    json_t                   *root, *keys, *jwk;
    json_error_t              err;
    ngx_str_t                 file;
    ngx_uint_t                j;
    ngx_pool_cleanup_t       *cln;
    ngx_http_guard_key_t     *key, *k;
    ngx_http_guard_keyset_t  *ks;

    file = *path;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ks = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_keyset_t));
    if (ks == NULL) {
        return NGX_CONF_ERROR;
    }

    ks->file = file;

    if (ngx_array_init(&ks->keys, cf->pool, 4, sizeof(ngx_http_guard_key_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_guard_jwt_keyset_cleanup;
    cln->data = ks;

    root = json_load_file((char *) file.data, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard_jwt_keys \"%V\": line %d, column %d: %s",
                           &file, err.line, err.column, err.text);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_OK;

    keys = json_object_get(root, "keys");

    if (!json_is_object(root) || !json_is_array(keys)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard_jwt_keys \"%V\": not a JWKS: "
                           "no \"keys\" array", &file);
        rv = NGX_CONF_ERROR;
        goto done;
    }

    n = json_array_size(keys);

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "guard_jwt_keys \"%V\": the key set is empty",
                           &file);
        rv = NGX_CONF_ERROR;
        goto done;
    }

    for (i = 0; i < n; i++) {
        jwk = json_array_get(keys, i);

        key = ngx_array_push(&ks->keys);
        if (key == NULL) {
            rv = NGX_CONF_ERROR;
            goto done;
        }

        ngx_memzero(key, sizeof(ngx_http_guard_key_t));

        rv = ngx_http_guard_jwt_load_key(cf, jwk, key);

        if (rv != NGX_CONF_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "guard_jwt_keys \"%V\": keys[%uz]%s%V%s: %s",
                               &file, i,
                               key->kid.len ? " (kid \"" : "", &key->kid,
                               key->kid.len ? "\")" : "", rv);
            rv = NGX_CONF_ERROR;
            goto done;
        }

        k = ks->keys.elts;

        for (j = 0; j + 1 < ks->keys.nelts; j++) {
            if (k[j].kid.len == key->kid.len
                && ngx_memcmp(k[j].kid.data, key->kid.data, key->kid.len)
                   == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "guard_jwt_keys \"%V\": keys[%uz]: "
                                   "duplicate kid \"%V\"",
                                   &file, i, &key->kid);
                rv = NGX_CONF_ERROR;
                goto done;
            }
        }
    }

    /* the fingerprint: SHA-256 of the canonical form of the file */

    canon = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (canon == NULL) {
        rv = NGX_CONF_ERROR;
        goto done;
    }

    SHA256((u_char *) canon, ngx_strlen(canon), ks->fingerprint);
    free(canon);

    *keyset = ks;

done:

    json_decref(root);

    return rv;
}


u_char *
ngx_http_guard_jwt_keyset_fingerprint(ngx_http_guard_keyset_t *ks)
{
    return ks->fingerprint;
}


static char *
ngx_http_guard_jwt_load_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key)
{
    json_t                *v, *op;
    size_t                 i;
    ngx_str_t              s;
    const char            *kty;
    ngx_http_guard_alg_t  *alg;

    if (!json_is_object(jwk)) {
        return "not a JSON object";
    }

    v = json_object_get(jwk, "kid");

    if (v == NULL) {
        return "no \"kid\"";
    }

    if (ngx_http_guard_jwt_string(v, &s) != NGX_OK || s.len == 0) {
        return "\"kid\" must be a non-empty string";
    }

    key->kid.data = ngx_pstrdup(cf->pool, &s);
    if (key->kid.data == NULL) {
        return "out of memory";
    }

    key->kid.len = s.len;

    v = json_object_get(jwk, "kty");
    if (!json_is_string(v)) {
        return "no \"kty\"";
    }

    kty = json_string_value(v);

    v = json_object_get(jwk, "alg");

    if (v == NULL) {
        return "no \"alg\": every key must pin its algorithm";
    }

    if (ngx_http_guard_jwt_string(v, &s) != NGX_OK) {
        return "\"alg\" must be a string";
    }

    for (alg = ngx_http_guard_algs; alg->name.len; alg++) {
        if (alg->name.len == s.len
            && ngx_memcmp(alg->name.data, s.data, s.len) == 0)
        {
            break;
        }
    }

    if (alg->name.len == 0) {
        return "unsupported \"alg\" (supported: HS256, HS384, HS512, "
               "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, "
               "ES512, EdDSA)";
    }

    key->alg = alg;

    if (ngx_strcmp(kty, alg->kty) != 0) {
        return "\"alg\" does not fit \"kty\"";
    }

    v = json_object_get(jwk, "use");
    if (v != NULL && !(json_is_string(v)
                       && ngx_strcmp(json_string_value(v), "sig") == 0))
    {
        return "\"use\" is not \"sig\"";
    }

    v = json_object_get(jwk, "key_ops");
    if (v != NULL) {
        if (!json_is_array(v)) {
            return "\"key_ops\" must be an array";
        }

        for (i = 0; i < json_array_size(v); i++) {
            op = json_array_get(v, i);
            if (json_is_string(op)
                && ngx_strcmp(json_string_value(op), "verify") == 0)
            {
                break;
            }
        }

        if (i == json_array_size(v)) {
            return "\"key_ops\" does not allow \"verify\"";
        }
    }

    if (alg->md) {
        key->md = EVP_MD_fetch(NULL, alg->md, NULL);
        if (key->md == NULL) {
            return "digest not available in OpenSSL";
        }
    }

    switch (alg->family) {

    case NGX_HTTP_GUARD_ALG_HS:
        return ngx_http_guard_jwt_oct_key(cf, jwk, key);

    case NGX_HTTP_GUARD_ALG_RS:
    case NGX_HTTP_GUARD_ALG_PS:
        return ngx_http_guard_jwt_rsa_key(cf, jwk, key);

    case NGX_HTTP_GUARD_ALG_ES:
        return ngx_http_guard_jwt_ec_key(cf, jwk, key);

    default: /* NGX_HTTP_GUARD_ALG_EDDSA */
        return ngx_http_guard_jwt_okp_key(cf, jwk, key);
    }
}


static char *
ngx_http_guard_jwt_b64_member(ngx_conf_t *cf, json_t *jwk, const char *name,
    ngx_str_t *out)
{
    json_t         *v;
    gd_jwt_span_t   s;

    v = json_object_get(jwk, name);

    if (v == NULL) {
        return "a required key member is missing";
    }

    if (!json_is_string(v)) {
        return "a key member is not base64url";
    }

    s.p = json_string_value(v);
    s.len = json_string_length(v);

    if (ngx_http_guard_jwt_b64(cf->pool, &s, out) != NGX_OK
        || out->len == 0)
    {
        return "a key member is not base64url";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_jwt_no_private(json_t *jwk, const char **members)
{
    for ( /* void */ ; *members; members++) {
        if (json_object_get(jwk, *members) != NULL) {
            return "private key material in the key set "
                   "(publish public keys only)";
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_jwt_verify_ctx(ngx_http_guard_key_t *key)
{
    key->vctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (key->vctx == NULL) {
        return "EVP_PKEY_CTX_new_from_pkey() failed";
    }

    if (EVP_PKEY_verify_init(key->vctx) != 1
        || EVP_PKEY_CTX_set_signature_md(key->vctx, key->md) != 1)
    {
        return "EVP_PKEY_verify_init() failed";
    }

    if (key->alg->family == NGX_HTTP_GUARD_ALG_PS) {
        if (EVP_PKEY_CTX_set_rsa_padding(key->vctx, RSA_PKCS1_PSS_PADDING)
            != 1
            || EVP_PKEY_CTX_set_rsa_mgf1_md(key->vctx, key->md) != 1
            || EVP_PKEY_CTX_set_rsa_pss_saltlen(key->vctx,
                                                RSA_PSS_SALTLEN_DIGEST)
               != 1)
        {
            return "cannot set RSA-PSS parameters";
        }

    } else if (key->alg->family == NGX_HTTP_GUARD_ALG_RS) {
        if (EVP_PKEY_CTX_set_rsa_padding(key->vctx, RSA_PKCS1_PADDING) != 1)
        {
            return "cannot set RSA padding";
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_jwt_rsa_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key)
{
    char            *rv;
    BIGNUM          *n, *e;
    ngx_str_t        nb, eb;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *pctx;
    OSSL_PARAM_BLD  *bld;

    static const char  *private[] = { "d", "p", "q", "dp", "dq", "qi",
                                      "oth", NULL };

    rv = ngx_http_guard_jwt_no_private(jwk, private);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    rv = ngx_http_guard_jwt_b64_member(cf, jwk, "n", &nb);
    if (rv != NGX_CONF_OK) {
        return "RSA key needs \"n\" in base64url";
    }

    rv = ngx_http_guard_jwt_b64_member(cf, jwk, "e", &eb);
    if (rv != NGX_CONF_OK) {
        return "RSA key needs \"e\" in base64url";
    }

    n = BN_bin2bn(nb.data, nb.len, NULL);
    e = BN_bin2bn(eb.data, eb.len, NULL);
    bld = OSSL_PARAM_BLD_new();
    params = NULL;
    pctx = NULL;
    rv = "cannot build the RSA key";

    if (n == NULL || e == NULL || bld == NULL
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
    {
        goto failed;
    }

    params = OSSL_PARAM_BLD_to_param(bld);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    if (params == NULL || pctx == NULL
        || EVP_PKEY_fromdata_init(pctx) != 1
        || EVP_PKEY_fromdata(pctx, &key->pkey, EVP_PKEY_PUBLIC_KEY, params)
           != 1)
    {
        goto failed;
    }

    if (EVP_PKEY_get_bits(key->pkey) < NGX_HTTP_GUARD_RSA_MIN_BITS) {
        rv = "RSA key shorter than 2048 bits";
        goto failed;
    }

    rv = ngx_http_guard_jwt_verify_ctx(key);

failed:

    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    ERR_clear_error();

    return rv;
}


static char *
ngx_http_guard_jwt_ec_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key)
{
    char                  *rv;
    u_char                *pub;
    json_t                *crv;
    ngx_str_t              x, y;
    OSSL_PARAM             params[3];
    EVP_PKEY_CTX          *pctx;
    ngx_http_guard_alg_t  *alg;

    static const char  *private[] = { "d", NULL };

    alg = key->alg;

    rv = ngx_http_guard_jwt_no_private(jwk, private);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    crv = json_object_get(jwk, "crv");

    if (!json_is_string(crv)
        || ngx_strcmp(json_string_value(crv), alg->crv) != 0)
    {
        return "\"crv\" does not fit \"alg\" (ES256: P-256, ES384: P-384, "
               "ES512: P-521)";
    }

    if (ngx_http_guard_jwt_b64_member(cf, jwk, "x", &x) != NGX_CONF_OK
        || ngx_http_guard_jwt_b64_member(cf, jwk, "y", &y) != NGX_CONF_OK)
    {
        return "EC key needs \"x\" and \"y\" in base64url";
    }

    if (x.len != alg->coord_len || y.len != alg->coord_len) {
        return "EC coordinates have the wrong length for the curve";
    }

    pub = ngx_pnalloc(cf->pool, 1 + 2 * alg->coord_len);
    if (pub == NULL) {
        return "out of memory";
    }

    pub[0] = 0x04;   /* uncompressed point */
    ngx_memcpy(pub + 1, x.data, x.len);
    ngx_memcpy(pub + 1 + x.len, y.data, y.len);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                 alg->group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                  pub, 1 + 2 * alg->coord_len);
    params[2] = OSSL_PARAM_construct_end();

    rv = "EC point is not on the curve";

    pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    if (pctx == NULL
        || EVP_PKEY_fromdata_init(pctx) != 1
        || EVP_PKEY_fromdata(pctx, &key->pkey, EVP_PKEY_PUBLIC_KEY, params)
           != 1)
    {
        goto failed;
    }

    EVP_PKEY_CTX_free(pctx);

    pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);

    if (pctx == NULL || EVP_PKEY_public_check(pctx) != 1) {
        goto failed;
    }

    rv = ngx_http_guard_jwt_verify_ctx(key);

failed:

    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();

    return rv;
}


static char *
ngx_http_guard_jwt_okp_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key)
{
    char       *rv;
    json_t     *crv;
    ngx_str_t   x;

    static const char  *private[] = { "d", NULL };

    rv = ngx_http_guard_jwt_no_private(jwk, private);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    crv = json_object_get(jwk, "crv");

    if (!json_is_string(crv)
        || ngx_strcmp(json_string_value(crv), key->alg->crv) != 0)
    {
        return "\"crv\" must be \"Ed25519\"";
    }

    if (ngx_http_guard_jwt_b64_member(cf, jwk, "x", &x) != NGX_CONF_OK
        || x.len != key->alg->coord_len)
    {
        return "Ed25519 key needs a 32-byte \"x\" in base64url";
    }

    key->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                            x.data, x.len);
    ERR_clear_error();

    if (key->pkey == NULL) {
        return "cannot build the Ed25519 key";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_guard_jwt_oct_key(ngx_conf_t *cf, json_t *jwk,
    ngx_http_guard_key_t *key)
{
    if (ngx_http_guard_jwt_b64_member(cf, jwk, "k", &key->secret)
        != NGX_CONF_OK)
    {
        return "oct key needs \"k\" in base64url";
    }

    if (key->secret.len < key->alg->hash_len) {
        return "oct key shorter than the hash output of its \"alg\"";
    }

    return NGX_CONF_OK;
}


static void
ngx_http_guard_jwt_keyset_cleanup(void *data)
{
    ngx_http_guard_keyset_t  *ks = data;

    ngx_uint_t             i;
    ngx_http_guard_key_t  *key;

    key = ks->keys.elts;

    for (i = 0; i < ks->keys.nelts; i++) {
        EVP_PKEY_CTX_free(key[i].vctx);
        EVP_PKEY_free(key[i].pkey);
        EVP_MD_free(key[i].md);

        if (key[i].secret.len) {
            OPENSSL_cleanse(key[i].secret.data, key[i].secret.len);
        }
    }
}


/* requests: the token */

ngx_int_t
ngx_http_guard_jwt_token(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_str_t *token)
{
    u_char           *p, *last;
    ngx_table_elt_t  *h;

    if (conf->token) {
        if (ngx_http_complex_value(r, conf->token, token) != NGX_OK) {
            return NGX_ERROR;
        }

        return token->len ? NGX_OK : NGX_DECLINED;
    }

    h = r->headers_in.authorization;

    if (h == NULL) {
        return NGX_DECLINED;
    }

    p = h->value.data;
    last = p + h->value.len;

    if (h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(p, (u_char *) "Bearer ", sizeof("Bearer ") - 1)
           != 0)
    {
        return NGX_DECLINED;
    }

    p += sizeof("Bearer ") - 1;

    while (p < last && *p == ' ') {
        p++;
    }

    while (last > p && last[-1] == ' ') {
        last--;
    }

    token->data = p;
    token->len = last - p;

    return token->len ? NGX_OK : NGX_DECLINED;
}


/*
 * The payload of a token whose signature is not verified yet: only to
 * choose the tenant's key set, never to decide anything.
 */

json_t *
ngx_http_guard_jwt_peek(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_str_t      pb;
    gd_jwt_rc_t    rc;
    gd_jwt_span_t  part[3];

    if (token->len > NGX_HTTP_GUARD_TOKEN_MAX
        || gd_jwt_split((char *) token->data, token->len, part) != 0
        || ngx_http_guard_jwt_b64(r->pool, &part[1], &pb) != NGX_OK)
    {
        return NULL;
    }

    return gd_jwt_payload(pb.data, pb.len, &rc);
}


/* requests: the JWS signature */

/*
 * RFC 7515: base64url with all trailing '=' omitted, and canonical
 * (RFC 4648 section 3.5), so that a token has one spelling only
 */

static ngx_int_t
ngx_http_guard_jwt_b64(ngx_pool_t *pool, gd_jwt_span_t *in, ngx_str_t *out)
{
    out->data = ngx_pnalloc(pool, GD_B64URL_DECODED_MAX(in->len));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    if (gd_b64url_decode(in->p, in->len, out->data, &out->len) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_http_guard_reason_e
ngx_http_guard_jwt_verify(ngx_http_request_t *r, ngx_http_guard_keyset_t *ks,
    ngx_str_t *token, json_t **payload, ngx_str_t *payload_text)
{
    ngx_str_t              hb, pb, sig, data, kid, alg;
    ngx_uint_t             i, tried;
    gd_jwt_rc_t            jrc;
    gd_jwt_span_t          part[3];
    gd_jwt_header_t        h;
    ngx_http_guard_key_t  *key;

    ngx_http_guard_reason_e  rc;

    /* the caller refused tokens over NGX_HTTP_GUARD_TOKEN_MAX already */

    if (gd_jwt_split((char *) token->data, token->len, part) != 0
        || ngx_http_guard_jwt_b64(r->pool, &part[0], &hb) != NGX_OK
        || ngx_http_guard_jwt_b64(r->pool, &part[1], &pb) != NGX_OK
        || ngx_http_guard_jwt_b64(r->pool, &part[2], &sig) != NGX_OK)
    {
        return NGX_HTTP_GUARD_TOKEN_MALFORMED;
    }

    switch (gd_jwt_header(hb.data, hb.len, &h)) {

    case GD_JWT_OK:
        break;

    case GD_JWT_CRIT:
        return NGX_HTTP_GUARD_TOKEN_CRIT_REFUSED;

    default:
        return NGX_HTTP_GUARD_TOKEN_MALFORMED;
    }

    alg.data = (u_char *) h.alg;
    alg.len = h.alg_len;
    kid.data = (u_char *) h.kid;
    kid.len = h.kid_len;

    if (sig.len == 0) {
        /* "alg": "none" and other unsigned forms */
        rc = NGX_HTTP_GUARD_TOKEN_ALG_REFUSED;
        goto done;
    }

    /* the signing input: header "." payload */
    data.data = token->data;
    data.len = part[1].p + part[1].len - (char *) token->data;

    key = ks->keys.elts;
    tried = 0;
    rc = NGX_HTTP_GUARD_TOKEN_KEY_UNKNOWN;

    for (i = 0; i < ks->keys.nelts; i++) {

        if (h.kid != NULL) {
            if (key[i].kid.len != kid.len
                || ngx_memcmp(key[i].kid.data, kid.data, kid.len) != 0)
            {
                continue;
            }

            /* the key pins the algorithm */

            if (key[i].alg->name.len != alg.len
                || ngx_memcmp(key[i].alg->name.data, alg.data, alg.len) != 0)
            {
                rc = NGX_HTTP_GUARD_TOKEN_ALG_REFUSED;
                goto done;
            }

        } else if (key[i].alg->name.len != alg.len
                   || ngx_memcmp(key[i].alg->name.data, alg.data, alg.len)
                      != 0)
        {
            continue;
        }

        tried++;

        switch (ngx_http_guard_jwt_verify_sig(r, &key[i], &data, &sig)) {

        case NGX_OK:
            rc = NGX_HTTP_GUARD_OK;
            goto verified;

        case NGX_ERROR:
            rc = NGX_HTTP_GUARD_INTERNAL_ERROR;
            goto done;

        default: /* NGX_DECLINED */
            rc = NGX_HTTP_GUARD_TOKEN_INVALID;
        }

        if (h.kid != NULL) {
            break;
        }
    }

    if (tried == 0 && h.kid == NULL) {
        /* no kid and no key for this algorithm */
        rc = NGX_HTTP_GUARD_TOKEN_ALG_REFUSED;
    }

    goto done;

verified:

    *payload = gd_jwt_payload(pb.data, pb.len, &jrc);

    if (*payload == NULL) {
        /* "\u0000" or a number out of range: the claims' fault */
        rc = (jrc == GD_JWT_CLAIM_INVALID)
             ? NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID
             : NGX_HTTP_GUARD_TOKEN_MALFORMED;
        goto done;
    }

    *payload_text = pb;

done:

    json_decref(h.root);

    return rc;
}


static ngx_int_t
ngx_http_guard_jwt_verify_sig(ngx_http_request_t *r,
    ngx_http_guard_key_t *key, ngx_str_t *data, ngx_str_t *sig)
{
    int            ok;
    u_char         md[EVP_MAX_MD_SIZE], der[256], *p;
    BIGNUM        *br, *bs;
    size_t         n;
    ngx_str_t      dsig;
    ECDSA_SIG     *es;
    unsigned int   mdlen;
    EVP_MD_CTX    *mctx;

    switch (key->alg->family) {

    case NGX_HTTP_GUARD_ALG_HS:

        if (HMAC(key->md, key->secret.data, (int) key->secret.len,
                 data->data, data->len, md, &mdlen)
            == NULL)
        {
            ERR_clear_error();
            return NGX_ERROR;
        }

        if (sig->len != mdlen || CRYPTO_memcmp(md, sig->data, mdlen) != 0) {
            return NGX_DECLINED;
        }

        return NGX_OK;

    case NGX_HTTP_GUARD_ALG_EDDSA:

        if (sig->len != 64) {
            return NGX_DECLINED;
        }

        mctx = EVP_MD_CTX_new();
        if (mctx == NULL) {
            return NGX_ERROR;
        }

        ok = EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, key->pkey) == 1
             && EVP_DigestVerify(mctx, sig->data, sig->len,
                                 data->data, data->len) == 1;

        EVP_MD_CTX_free(mctx);
        ERR_clear_error();

        return ok ? NGX_OK : NGX_DECLINED;

    case NGX_HTTP_GUARD_ALG_ES:

        /* JWS carries R || S; OpenSSL wants DER */

        n = key->alg->coord_len;

        if (sig->len != 2 * n) {
            return NGX_DECLINED;
        }

        es = ECDSA_SIG_new();
        br = BN_bin2bn(sig->data, n, NULL);
        bs = BN_bin2bn(sig->data + n, n, NULL);

        if (es == NULL || br == NULL || bs == NULL
            || ECDSA_SIG_set0(es, br, bs) != 1)
        {
            ECDSA_SIG_free(es);
            BN_free(br);
            BN_free(bs);
            ERR_clear_error();
            return NGX_ERROR;
        }

        p = der;
        ok = i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);

        if (ok <= 0 || (size_t) ok > sizeof(der)) {
            ERR_clear_error();
            return NGX_ERROR;
        }

        dsig.data = der;
        dsig.len = ok;
        sig = &dsig;

        break;

    default: /* RS, PS */
        break;
    }

    if (EVP_Digest(data->data, data->len, md, &mdlen, key->md, NULL) != 1) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    ok = EVP_PKEY_verify(key->vctx, sig->data, sig->len, md, mdlen);

    if (ok != 1) {
        ERR_clear_error();
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* requests: the claims */

static ngx_int_t
ngx_http_guard_jwt_string(json_t *v, ngx_str_t *out)
{
    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    out->data = (u_char *) json_string_value(v);
    out->len = json_string_length(v);

    return NGX_OK;
}


static ngx_int_t
ngx_http_guard_jwt_copy(ngx_pool_t *pool, json_t *v, ngx_str_t *out)
{
    ngx_str_t  s;

    if (ngx_http_guard_jwt_string(v, &s) != NGX_OK) {
        return NGX_DECLINED;
    }

    out->data = ngx_pnalloc(pool, s.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, s.data, s.len);
    out->len = s.len;

    return NGX_OK;
}


ngx_http_guard_reason_e
ngx_http_guard_jwt_claims(ngx_http_request_t *r, json_t *payload,
    ngx_http_guard_claims_t *claims)
{
    size_t           i;
    json_t          *v;
    ngx_int_t        rc;
    gd_jwt_times_t   t;

    /* "exp" is required; every date is range-checked */

    if (gd_jwt_times(payload, &t) != GD_JWT_OK) {
        return NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
    }

    claims->exp = (time_t) t.exp;
    claims->nbf = (time_t) t.nbf;
    claims->iat = (time_t) t.iat;
    claims->has_nbf = t.has_nbf;
    claims->has_iat = t.has_iat;

    v = json_object_get(payload, "sub");
    if (v != NULL) {
        rc = ngx_http_guard_jwt_copy(r->pool, v, &claims->sub);
        if (rc != NGX_OK) {
            return rc == NGX_ERROR ? NGX_HTTP_GUARD_INTERNAL_ERROR
                                   : NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
        }

        claims->has_sub = 1;
    }

    v = json_object_get(payload, "iss");
    if (v != NULL) {
        rc = ngx_http_guard_jwt_copy(r->pool, v, &claims->iss);
        if (rc != NGX_OK) {
            return rc == NGX_ERROR ? NGX_HTTP_GUARD_INTERNAL_ERROR
                                   : NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
        }

        claims->has_iss = 1;
    }

    v = json_object_get(payload, "aud");
    if (v == NULL) {
        return NGX_HTTP_GUARD_OK;
    }

    claims->has_aud = 1;

    if (json_is_string(v)) {
        claims->aud = ngx_palloc(r->pool, sizeof(ngx_str_t));
        if (claims->aud == NULL) {
            return NGX_HTTP_GUARD_INTERNAL_ERROR;
        }

        claims->naud = 1;

        return ngx_http_guard_jwt_copy(r->pool, v, claims->aud) == NGX_OK
               ? NGX_HTTP_GUARD_OK : NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    if (!json_is_array(v)) {
        return NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
    }

    claims->aud = ngx_palloc(r->pool, (json_array_size(v) + 1)
                                      * sizeof(ngx_str_t));
    if (claims->aud == NULL) {
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    for (i = 0; i < json_array_size(v); i++) {
        rc = ngx_http_guard_jwt_copy(r->pool, json_array_get(v, i),
                                     &claims->aud[i]);
        if (rc != NGX_OK) {
            return rc == NGX_ERROR ? NGX_HTTP_GUARD_INTERNAL_ERROR
                                   : NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
        }
    }

    claims->naud = i;

    return NGX_HTTP_GUARD_OK;
}


static ngx_uint_t
ngx_http_guard_jwt_one_of(ngx_array_t *allowed, ngx_str_t *values,
    ngx_uint_t n)
{
    ngx_str_t   *a;
    ngx_uint_t   i, j;

    a = allowed->elts;

    for (i = 0; i < allowed->nelts; i++) {
        for (j = 0; j < n; j++) {
            if (a[i].len == values[j].len
                && ngx_memcmp(a[i].data, values[j].data, a[i].len) == 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/* checks that run on every request, cached token or not */

ngx_http_guard_reason_e
ngx_http_guard_jwt_check(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_array_t *issuers,
    ngx_http_guard_claims_t *claims)
{
    gd_jwt_times_t  t;

    t.exp = claims->exp;
    t.nbf = claims->nbf;
    t.iat = claims->iat;
    t.has_nbf = claims->has_nbf;
    t.has_iat = claims->has_iat;

    switch (gd_jwt_check_times(&t, ngx_time(), conf->leeway,
                               conf->max_lifetime))
    {
    case GD_JWT_OK:
        break;

    case GD_JWT_EXPIRED:
        return NGX_HTTP_GUARD_TOKEN_EXPIRED;

    case GD_JWT_NOT_YET_VALID:
        return NGX_HTTP_GUARD_TOKEN_NOT_YET_VALID;

    case GD_JWT_LIFETIME_EXCEEDED:
        return NGX_HTTP_GUARD_TOKEN_LIFETIME_EXCEEDED;

    default:
        return NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
    }

    if (issuers
        && (!claims->has_iss
            || !ngx_http_guard_jwt_one_of(issuers, &claims->iss, 1)))
    {
        return NGX_HTTP_GUARD_TOKEN_ISSUER_REFUSED;
    }

    if (conf->audiences
        && !ngx_http_guard_jwt_one_of(conf->audiences, claims->aud,
                                      claims->naud))
    {
        return NGX_HTTP_GUARD_TOKEN_AUDIENCE_REFUSED;
    }

    return NGX_HTTP_GUARD_OK;
}
