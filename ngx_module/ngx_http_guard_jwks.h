
/*
 * Copyright (C) Guard authors
 *
 * JWK sets (guard_jwt_keys), loaded at configuration time: every key
 * pinned to its algorithm, with what verifying a token needs ready.
 */


#ifndef _NGX_HTTP_GUARD_JWKS_H_INCLUDED_
#define _NGX_HTTP_GUARD_JWKS_H_INCLUDED_


#include "ngx_http_guard_module.h"

#include "gd_jwks.h"


typedef struct {
    ngx_str_t                    kid;
    gd_jwk_t                     jwk;         /* alg, pkey, secret */
    EVP_MD                      *md;          /* NULL for EdDSA */
    EVP_PKEY_CTX                *vctx;        /* RS, PS, ES: verify ready */
    EVP_MAC_CTX                 *mac;         /* HS: keyed, init per token */
    EVP_MD_CTX                  *dvctx;       /* EdDSA: copied per token */
} ngx_http_guard_jwks_key_t;


struct ngx_http_guard_keyset_s {
    ngx_str_t                    file;
    ngx_array_t                  keys;        /* ngx_http_guard_jwks_key_t */
    u_char                       fingerprint[NGX_HTTP_GUARD_HASH_LEN];
};


char *ngx_http_guard_jwt_load_keys(ngx_conf_t *cf, ngx_str_t *path,
    ngx_http_guard_keyset_t **keyset);
char *ngx_http_guard_jwks_keyset(ngx_conf_t *cf, ngx_str_t *file,
    gd_jwks_t *jwks, ngx_http_guard_keyset_t **keyset);
u_char *ngx_http_guard_jwt_keyset_fingerprint(ngx_http_guard_keyset_t *ks);


#endif /* _NGX_HTTP_GUARD_JWKS_H_INCLUDED_ */
