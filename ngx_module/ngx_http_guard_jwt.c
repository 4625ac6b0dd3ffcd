
/*
 * Copyright (C) Guard authors
 *
 * JWT authentication at request time: the token, its JWS signature, and
 * the registered claims.
 *
 * The keys come from a JWK set (ngx_http_guard_jwks.c).  Every key carries
 * its "alg", and that algorithm is the only one the key verifies: the
 * token header's "alg" selects nothing, it must merely agree.  "jku",
 * "x5u", "x5c" and "jwk" header parameters are never used to find a key,
 * "kid" is only ever compared byte-wise with the kids of the file.
 */


#include "ngx_http_guard_jwt.h"
#include "ngx_http_guard_jwks.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>


/*
 * The header a worker decoded last: tokens of one issuer share their
 * header bytes, and the same bytes give the same "alg" and "kid".
 */

#define NGX_HTTP_GUARD_HEADER_MAX  256

typedef struct {
    size_t                       len;         /* of text; 0: none */
    u_char                       text[NGX_HTTP_GUARD_HEADER_MAX];
    size_t                       alg_len;
    u_char                       alg[16];
    size_t                       kid_len;
    u_char                       kid[NGX_HTTP_GUARD_HEADER_MAX];
    unsigned                     has_kid:1;
} ngx_http_guard_jwt_header_t;


static ngx_int_t ngx_http_guard_jwt_b64(ngx_pool_t *pool,
    gd_jwt_span_t *in, ngx_str_t *out);
static ngx_uint_t ngx_http_guard_jwt_header_known(gd_jwt_span_t *part,
    ngx_str_t *alg, ngx_str_t *kid);
static ngx_http_guard_reason_e ngx_http_guard_jwt_header(
    ngx_http_request_t *r, gd_jwt_span_t *part, ngx_str_t *hb,
    ngx_str_t *alg, ngx_str_t *kid);
static ngx_int_t ngx_http_guard_jwt_verify_sig(
    ngx_http_guard_jwks_key_t *key, ngx_str_t *data, ngx_str_t *sig);
static ngx_int_t ngx_http_guard_jwt_string(json_t *v, ngx_str_t *out);


static ngx_http_guard_jwt_header_t  ngx_http_guard_jwt_last_header;


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


/* the payload segment of a token (base64url), for the claim variables */

ngx_int_t
ngx_http_guard_jwt_payload_segment(ngx_str_t *token, ngx_str_t *segment)
{
    gd_jwt_span_t  part[3];

    if (gd_jwt_split((char *) token->data, token->len, part) != 0) {
        return NGX_ERROR;
    }

    segment->data = (u_char *) part[1].p;
    segment->len = part[1].len;

    return NGX_OK;
}


/*
 * The JSON of the payload segment of a verified token (NULL when memory
 * runs out): decoded into memory of its own, as the caller has no pool.
 */

json_t *
ngx_http_guard_jwt_payload_json(ngx_str_t *segment)
{
    u_char       *text;
    size_t        len;
    json_t       *payload;
    gd_jwt_rc_t   rc;

    text = ngx_alloc(GD_B64URL_DECODED_MAX(segment->len), ngx_cycle->log);
    if (text == NULL) {
        return NULL;
    }

    payload = NULL;

    if (gd_b64url_decode((char *) segment->data, segment->len, text, &len)
        == 0)
    {
        payload = gd_jwt_payload(text, len, &rc);
    }

    ngx_free(text);

    return payload;
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
    ngx_str_t                   hb, pb, sig, data, kid, alg;
    ngx_uint_t                  i, tried, known;
    gd_jwt_rc_t                 jrc;
    gd_jwt_span_t               part[3];
    ngx_http_guard_jwks_key_t  *key;

    ngx_http_guard_reason_e     rc;

    /* the caller refused tokens over NGX_HTTP_GUARD_TOKEN_MAX already */

    if (gd_jwt_split((char *) token->data, token->len, part) != 0) {
        return NGX_HTTP_GUARD_TOKEN_MALFORMED;
    }

    known = ngx_http_guard_jwt_header_known(&part[0], &alg, &kid);

    if ((!known && ngx_http_guard_jwt_b64(r->pool, &part[0], &hb) != NGX_OK)
        || ngx_http_guard_jwt_b64(r->pool, &part[1], &pb) != NGX_OK
        || ngx_http_guard_jwt_b64(r->pool, &part[2], &sig) != NGX_OK)
    {
        return NGX_HTTP_GUARD_TOKEN_MALFORMED;
    }

    if (!known) {
        rc = ngx_http_guard_jwt_header(r, &part[0], &hb, &alg, &kid);
        if (rc != NGX_HTTP_GUARD_OK) {
            return rc;
        }
    }

    if (sig.len == 0) {
        /* "alg": "none" and other unsigned forms */
        return NGX_HTTP_GUARD_TOKEN_ALG_REFUSED;
    }

    /* the signing input: header "." payload */
    data.data = token->data;
    data.len = part[1].p + part[1].len - (char *) token->data;

    key = ks->keys.elts;
    tried = 0;
    rc = NGX_HTTP_GUARD_TOKEN_KEY_UNKNOWN;

    for (i = 0; i < ks->keys.nelts; i++) {

        if (kid.data != NULL) {
            if (key[i].kid.len != kid.len
                || ngx_memcmp(key[i].kid.data, kid.data, kid.len) != 0)
            {
                continue;
            }

            /* the key pins the algorithm */

            if (ngx_strlen(key[i].jwk.alg->name) != alg.len
                || ngx_memcmp(key[i].jwk.alg->name, alg.data, alg.len) != 0)
            {
                return NGX_HTTP_GUARD_TOKEN_ALG_REFUSED;
            }

        } else if (ngx_strlen(key[i].jwk.alg->name) != alg.len
                   || ngx_memcmp(key[i].jwk.alg->name, alg.data, alg.len)
                      != 0)
        {
            continue;
        }

        tried++;

        switch (ngx_http_guard_jwt_verify_sig(&key[i], &data, &sig)) {

        case NGX_OK:
            goto verified;

        case NGX_ERROR:
            return NGX_HTTP_GUARD_INTERNAL_ERROR;

        default: /* NGX_DECLINED */
            rc = NGX_HTTP_GUARD_TOKEN_INVALID;
        }

        if (kid.data != NULL) {
            break;
        }
    }

    if (tried == 0 && kid.data == NULL) {
        /* no kid and no key for this algorithm */
        rc = NGX_HTTP_GUARD_TOKEN_ALG_REFUSED;
    }

    return rc;

verified:

    *payload = gd_jwt_payload(pb.data, pb.len, &jrc);

    if (*payload == NULL) {
        /* "\u0000" or a number out of range: the claims' fault */
        return (jrc == GD_JWT_CLAIM_INVALID)
               ? NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID
               : NGX_HTTP_GUARD_TOKEN_MALFORMED;
    }

    payload_text->data = (u_char *) part[1].p;
    payload_text->len = part[1].len;

    return NGX_HTTP_GUARD_OK;
}


/*
 * The "alg" and "kid" (kid->data NULL: no "kid") of a header segment with
 * the bytes of the one this worker decoded last.
 */

static ngx_uint_t
ngx_http_guard_jwt_header_known(gd_jwt_span_t *part, ngx_str_t *alg,
    ngx_str_t *kid)
{
    ngx_http_guard_jwt_header_t  *last;

    last = &ngx_http_guard_jwt_last_header;

    if (last->len == 0
        || last->len != part->len
        || ngx_memcmp(last->text, part->p, part->len) != 0)
    {
        return 0;
    }

    alg->data = last->alg;
    alg->len = last->alg_len;
    kid->data = last->has_kid ? last->kid : NULL;
    kid->len = last->kid_len;

    return 1;
}


/* the decoded header hb of the segment part: parsed, and kept if small */

static ngx_http_guard_reason_e
ngx_http_guard_jwt_header(ngx_http_request_t *r, gd_jwt_span_t *part,
    ngx_str_t *hb, ngx_str_t *alg, ngx_str_t *kid)
{
    gd_jwt_header_t               h;
    ngx_http_guard_jwt_header_t  *last;

    switch (gd_jwt_header(hb->data, hb->len, &h)) {

    case GD_JWT_OK:
        break;

    case GD_JWT_CRIT:
        return NGX_HTTP_GUARD_TOKEN_CRIT_REFUSED;

    default:
        return NGX_HTTP_GUARD_TOKEN_MALFORMED;
    }

    last = &ngx_http_guard_jwt_last_header;
    last->len = 0;

    if (part->len <= sizeof(last->text)
        && h.alg_len <= sizeof(last->alg)
        && h.kid_len <= sizeof(last->kid))
    {
        ngx_memcpy(last->text, part->p, part->len);
        ngx_memcpy(last->alg, h.alg, h.alg_len);
        last->alg_len = h.alg_len;
        last->has_kid = (h.kid != NULL);
        last->kid_len = h.kid_len;

        if (h.kid_len) {
            ngx_memcpy(last->kid, h.kid, h.kid_len);
        }

        last->len = part->len;

        json_decref(h.root);

        (void) ngx_http_guard_jwt_header_known(part, alg, kid);

        return NGX_HTTP_GUARD_OK;
    }

    /* too long to keep: copies for this request */

    alg->data = ngx_pnalloc(r->pool, h.alg_len + h.kid_len + 1);
    if (alg->data == NULL) {
        json_decref(h.root);
        return NGX_HTTP_GUARD_INTERNAL_ERROR;
    }

    alg->len = h.alg_len;
    ngx_memcpy(alg->data, h.alg, h.alg_len);

    kid->data = (h.kid != NULL) ? alg->data + h.alg_len : NULL;
    kid->len = h.kid_len;

    if (h.kid_len) {
        ngx_memcpy(kid->data, h.kid, h.kid_len);
    }

    json_decref(h.root);

    return NGX_HTTP_GUARD_OK;
}


/*
 * The signature with the key's prepared state: a keyed HMAC reinitialized
 * (HS), a DigestVerify context copied (EdDSA), a digest into the key's
 * verify context (RS, PS, ES).  The worker keeps its digest contexts.
 */

static ngx_int_t
ngx_http_guard_jwt_verify_sig(ngx_http_guard_jwks_key_t *key,
    ngx_str_t *data, ngx_str_t *sig)
{
    int                  ok;
    u_char               md[EVP_MAX_MD_SIZE], der[256], *p;
    BIGNUM              *br, *bs;
    size_t               n, maclen;
    ngx_str_t            dsig;
    ECDSA_SIG           *es;
    unsigned int         mdlen;

    static EVP_MD_CTX   *mctx, *vctx;

    switch (key->jwk.alg->family) {

    case GD_JWK_HS:

        if (EVP_MAC_init(key->mac, NULL, 0, NULL) != 1
            || EVP_MAC_update(key->mac, data->data, data->len) != 1
            || EVP_MAC_final(key->mac, md, &maclen, sizeof(md)) != 1)
        {
            ERR_clear_error();
            return NGX_ERROR;
        }

        if (sig->len != maclen
            || CRYPTO_memcmp(md, sig->data, maclen) != 0)
        {
            return NGX_DECLINED;
        }

        return NGX_OK;

    case GD_JWK_EDDSA:

        if (sig->len != 64) {
            return NGX_DECLINED;
        }

        if (vctx == NULL) {
            vctx = EVP_MD_CTX_new();
            if (vctx == NULL) {
                return NGX_ERROR;
            }
        }

        if (EVP_MD_CTX_copy_ex(vctx, key->dvctx) != 1) {
            ERR_clear_error();
            return NGX_ERROR;
        }

        ok = EVP_DigestVerify(vctx, sig->data, sig->len,
                              data->data, data->len) == 1;
        ERR_clear_error();

        return ok ? NGX_OK : NGX_DECLINED;

    case GD_JWK_ES:

        /* JWS carries R || S; OpenSSL wants DER */

        n = key->jwk.alg->coord_len;

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

    if (mctx == NULL) {
        mctx = EVP_MD_CTX_new();
        if (mctx == NULL) {
            return NGX_ERROR;
        }
    }

    if (EVP_DigestInit_ex(mctx, key->md, NULL) != 1
        || EVP_DigestUpdate(mctx, data->data, data->len) != 1
        || EVP_DigestFinal_ex(mctx, md, &mdlen) != 1)
    {
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


/* the string claim name, copied into *out (*has set) when present */

static ngx_http_guard_reason_e
ngx_http_guard_jwt_claim(ngx_pool_t *pool, json_t *payload, const char *name,
    ngx_str_t *out, ngx_uint_t *has)
{
    json_t     *v;
    ngx_int_t   rc;

    *has = 0;

    v = json_object_get(payload, name);
    if (v == NULL) {
        return NGX_HTTP_GUARD_OK;
    }

    rc = ngx_http_guard_jwt_copy(pool, v, out);
    *has = (rc == NGX_OK);

    return ngx_http_guard_rc_reason(rc, NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID);
}


ngx_http_guard_reason_e
ngx_http_guard_jwt_claims(ngx_http_request_t *r, json_t *payload,
    ngx_http_guard_claims_t *claims)
{
    size_t                    i;
    json_t                   *v;
    ngx_int_t                 rc;
    ngx_uint_t                has;
    gd_jwt_times_t            t;
    ngx_http_guard_reason_e   reason;

    /* "exp" is required; every date is range-checked */

    if (gd_jwt_times(payload, &t) != GD_JWT_OK) {
        return NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID;
    }

    claims->exp = (time_t) t.exp;
    claims->nbf = (time_t) t.nbf;
    claims->iat = (time_t) t.iat;
    claims->has_nbf = t.has_nbf;
    claims->has_iat = t.has_iat;

    reason = ngx_http_guard_jwt_claim(r->pool, payload, "sub", &claims->sub,
                                      &has);
    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    claims->has_sub = has;

    reason = ngx_http_guard_jwt_claim(r->pool, payload, "iss", &claims->iss,
                                      &has);
    if (reason != NGX_HTTP_GUARD_OK) {
        return reason;
    }

    claims->has_iss = has;

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
            return ngx_http_guard_rc_reason(rc,
                                            NGX_HTTP_GUARD_TOKEN_CLAIM_INVALID);
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
