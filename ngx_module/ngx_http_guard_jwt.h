
/*
 * Copyright (C) Guard authors
 *
 * JWT authentication at request time: JWS verification with OpenSSL EVP
 * and the registered claim checks.  The key sets: ngx_http_guard_jwks.h.
 */


#ifndef _NGX_HTTP_GUARD_JWT_H_INCLUDED_
#define _NGX_HTTP_GUARD_JWT_H_INCLUDED_


#include "ngx_http_guard_module.h"
#include "ngx_http_guard_jwks.h"


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
ngx_int_t ngx_http_guard_jwt_payload_segment(ngx_str_t *token,
    ngx_str_t *segment);
json_t *ngx_http_guard_jwt_payload_json(ngx_str_t *segment);


#endif /* _NGX_HTTP_GUARD_JWT_H_INCLUDED_ */
