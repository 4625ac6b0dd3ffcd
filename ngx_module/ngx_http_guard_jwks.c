
/*
 * Copyright (C) Guard authors
 *
 * JWK sets: the guard_jwt_keys files and the policies' "jwks", read at
 * configuration time.
 *
 * The file is read and every key imported by gd_jwks (policy-engine),
 * the loader guardctl policy check shares, so both refuse the same files
 * with the same words; here every key also gets what verification reuses
 * for every token: the digest, a verify context (RS, PS, ES), a keyed
 * HMAC state (HS), or a DigestVerify context (EdDSA).
 */


#include "ngx_http_guard_jwks.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>


#if (NGX_HTTP_GUARD_HASH_LEN != GD_JWKS_FINGERPRINT_LEN)
#error "a keyset's fingerprint is the loader's"
#endif


static char *ngx_http_guard_jwks_key(ngx_http_guard_jwks_key_t *key);
static char *ngx_http_guard_jwks_verify_ctx(ngx_http_guard_jwks_key_t *key);
static void ngx_http_guard_jwks_cleanup(void *data);


/* guard_jwt_keys: the file read by the loader guardctl shares (gd_jwks) */

char *
ngx_http_guard_jwt_load_keys(ngx_conf_t *cf, ngx_str_t *path,
    ngx_http_guard_keyset_t **keyset)
{
    char        err[512];
    ngx_int_t   rc;
    ngx_str_t   file;
    gd_jwks_t   jwks;

    file = *path;

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rc = gd_jwks_load((char *) file.data, &jwks, err, sizeof(err));

    if (rc != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "guard_jwt_keys \"%V\": %s",
                           &file, err);
        gd_jwks_free(&jwks);
        return NGX_CONF_ERROR;
    }

    return ngx_http_guard_jwks_keyset(cf, &file, &jwks, keyset);
}


/*
 * The keyset of a loaded JWK set: its keys move here (jwks is freed),
 * each with what verification reuses for every token.
 */

char *
ngx_http_guard_jwks_keyset(ngx_conf_t *cf, ngx_str_t *file, gd_jwks_t *jwks,
    ngx_http_guard_keyset_t **keyset)
{
    char                       *rv, *why;
    size_t                      i;
    ngx_pool_cleanup_t         *cln;
    ngx_http_guard_keyset_t    *ks;
    ngx_http_guard_jwks_key_t  *key;

    rv = NGX_CONF_ERROR;

    ks = ngx_pcalloc(cf->pool, sizeof(ngx_http_guard_keyset_t));
    if (ks == NULL) {
        goto done;
    }

    ks->file = *file;

    if (ngx_array_init(&ks->keys, cf->pool, jwks->nkeys,
                       sizeof(ngx_http_guard_jwks_key_t))
        != NGX_OK)
    {
        goto done;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        goto done;
    }

    cln->handler = ngx_http_guard_jwks_cleanup;
    cln->data = ks;

    ngx_memcpy(ks->fingerprint, jwks->fingerprint, NGX_HTTP_GUARD_HASH_LEN);

    for (i = 0; i < jwks->nkeys; i++) {
        key = ngx_array_push(&ks->keys);
        if (key == NULL) {
            goto done;
        }

        ngx_memzero(key, sizeof(ngx_http_guard_jwks_key_t));

        /* the key moves: its kid (the loader's copy) goes to the pool */

        key->jwk = jwks->keys[i];
        key->jwk.kid = NULL;
        jwks->keys[i].pkey = NULL;
        jwks->keys[i].secret = NULL;

        if (jwks->keys[i].kid != NULL) {
            key->kid.len = jwks->keys[i].kid_len;
            key->kid.data = ngx_pnalloc(cf->pool, key->kid.len);
            if (key->kid.data == NULL) {
                goto done;
            }

            ngx_memcpy(key->kid.data, jwks->keys[i].kid, key->kid.len);
        }

        why = ngx_http_guard_jwks_key(key);

        if (why != NGX_CONF_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "guard_jwt_keys \"%V\": keys[%uz]%s%V%s: %s",
                               file, i,
                               key->kid.len ? " (kid \"" : "", &key->kid,
                               key->kid.len ? "\")" : "", why);
            goto done;
        }
    }

    *keyset = ks;
    rv = NGX_CONF_OK;

done:

    gd_jwks_free(jwks);

    return rv;
}


u_char *
ngx_http_guard_jwt_keyset_fingerprint(ngx_http_guard_keyset_t *ks)
{
    return ks->fingerprint;
}


static char *
ngx_http_guard_jwks_key(ngx_http_guard_jwks_key_t *key)
{
    size_t               klen;
    EVP_MAC             *mac;
    OSSL_PARAM           params[2];
    const gd_jwk_alg_t  *alg;

    alg = key->jwk.alg;

    if (alg->md) {
        key->md = EVP_MD_fetch(NULL, alg->md, NULL);
        if (key->md == NULL) {
            return "digest not available in OpenSSL";
        }
    }

    switch (alg->family) {

    case GD_JWK_HS:

        /* the key's HMAC state, reinitialized (not rekeyed) per token */

        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        key->mac = (mac != NULL) ? EVP_MAC_CTX_new(mac) : NULL;
        EVP_MAC_free(mac);   /* the context holds its own reference */

        klen = key->jwk.secret_len;

        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                     (char *) alg->md, 0);
        params[1] = OSSL_PARAM_construct_end();

        if (key->mac == NULL
            || EVP_MAC_init(key->mac, key->jwk.secret, klen, params) != 1)
        {
            ERR_clear_error();
            return "cannot set up HMAC";
        }

        return NGX_CONF_OK;

    case GD_JWK_EDDSA:

        key->dvctx = EVP_MD_CTX_new();

        if (key->dvctx == NULL
            || EVP_DigestVerifyInit(key->dvctx, NULL, NULL, NULL,
                                    key->jwk.pkey)
               != 1)
        {
            ERR_clear_error();
            return "cannot set up Ed25519 verification";
        }

        return NGX_CONF_OK;

    default: /* RS, PS, ES */
        return ngx_http_guard_jwks_verify_ctx(key);
    }
}


static char *
ngx_http_guard_jwks_verify_ctx(ngx_http_guard_jwks_key_t *key)
{
    char  *rv;

    rv = NGX_CONF_OK;

    key->vctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->jwk.pkey, NULL);
    if (key->vctx == NULL) {
        rv = "EVP_PKEY_CTX_new_from_pkey() failed";
        goto done;
    }

    if (EVP_PKEY_verify_init(key->vctx) != 1
        || EVP_PKEY_CTX_set_signature_md(key->vctx, key->md) != 1)
    {
        rv = "EVP_PKEY_verify_init() failed";
        goto done;
    }

    if (key->jwk.alg->family == GD_JWK_PS) {
        if (EVP_PKEY_CTX_set_rsa_padding(key->vctx, RSA_PKCS1_PSS_PADDING)
            != 1
            || EVP_PKEY_CTX_set_rsa_mgf1_md(key->vctx, key->md) != 1
            || EVP_PKEY_CTX_set_rsa_pss_saltlen(key->vctx,
                                                RSA_PSS_SALTLEN_DIGEST)
               != 1)
        {
            rv = "cannot set RSA-PSS parameters";
        }

    } else if (key->jwk.alg->family == GD_JWK_RS) {
        if (EVP_PKEY_CTX_set_rsa_padding(key->vctx, RSA_PKCS1_PADDING) != 1)
        {
            rv = "cannot set RSA padding";
        }
    }

done:

    ERR_clear_error();

    return rv;
}


static void
ngx_http_guard_jwks_cleanup(void *data)
{
    ngx_http_guard_keyset_t  *ks = data;

    ngx_uint_t                  i;
    ngx_http_guard_jwks_key_t  *key;

    key = ks->keys.elts;

    for (i = 0; i < ks->keys.nelts; i++) {
        EVP_PKEY_CTX_free(key[i].vctx);
        EVP_MD_CTX_free(key[i].dvctx);
        EVP_MD_free(key[i].md);

        EVP_MAC_CTX_free(key[i].mac);
        gd_jwk_free(&key[i].jwk);
    }
}
