
/*
 * Copyright (C) Guard authors
 *
 * JWT authentication: JWKS key sets pinned per algorithm, JWS verification
 * with OpenSSL EVP, and the registered claim checks.
 */


#ifndef _NGX_HTTP_GUARD_JWT_H_INCLUDED_
#define _NGX_HTTP_GUARD_JWT_H_INCLUDED_


#include "ngx_http_guard_module.h"


char *ngx_http_guard_jwt_load_keys(ngx_conf_t *cf, ngx_str_t *path,
    ngx_http_guard_keyset_t **keyset);
u_char *ngx_http_guard_jwt_keyset_fingerprint(ngx_http_guard_keyset_t *ks);

ngx_int_t ngx_http_guard_jwt_token(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_str_t *token);
ngx_http_guard_reason_e ngx_http_guard_jwt_verify(ngx_http_request_t *r,
    ngx_http_guard_keyset_t *ks, ngx_str_t *token, json_t **payload,
    ngx_str_t *payload_text);
ngx_http_guard_reason_e ngx_http_guard_jwt_claims(ngx_http_request_t *r,
    json_t *payload, ngx_http_guard_claims_t *claims);
ngx_http_guard_reason_e ngx_http_guard_jwt_check(ngx_http_request_t *r,
    ngx_http_guard_loc_conf_t *conf, ngx_array_t *issuers,
    ngx_http_guard_claims_t *claims);
json_t *ngx_http_guard_jwt_peek(ngx_http_request_t *r, ngx_str_t *token);


#endif /* _NGX_HTTP_GUARD_JWT_H_INCLUDED_ */
