
/*
 * Copyright (C) Guard authors
 *
 * The verified-token cache.
 *
 * Entries live in the guard zone, shared by all workers: an rbtree keyed
 * by SHA-256(key set fingerprint || tenant claim spec || token), so that
 * a token verified with other keys, or read for its tenant another way,
 * is another entry, plus an LRU queue.  An entry holds the claims of
 * a verified token, never the token itself, and never outlives the
 * token's "exp".  When the zone is full the oldest entries go; when even
 * that fails the token is simply not cached.
 */


#include "ngx_http_guard_cache.h"
#include "ngx_http_guard_zone.h"

#include <openssl/evp.h>


typedef struct {
    ngx_http_guard_lru_node_t    lru;         /* expires: the token's exp */
    u_short                      key_len;     /* the zone's key layout */
    u_char                       key[NGX_HTTP_GUARD_HASH_LEN];
    size_t                       len;
    u_char                       data[1];
} ngx_http_guard_cache_node_t;


#define NGX_HTTP_GUARD_CACHE_OFF                                             \
    offsetof(ngx_http_guard_cache_node_t, key_len)


/* the packed claims: this header, then lengths, then bytes */

typedef struct {
    int64_t                      exp;
    int64_t                      nbf;
    int64_t                      iat;
    uint32_t                     flags;
    uint32_t                     naud;
    uint32_t                     ntenants;
    uint32_t                     sub_len;
    uint32_t                     iss_len;
    uint32_t                     payload_len;
} ngx_http_guard_cache_pack_t;


#define NGX_HTTP_GUARD_PACK_NBF  0x01
#define NGX_HTTP_GUARD_PACK_IAT  0x02
#define NGX_HTTP_GUARD_PACK_SUB  0x04
#define NGX_HTTP_GUARD_PACK_ISS  0x08
#define NGX_HTTP_GUARD_PACK_AUD  0x10


static void ngx_http_guard_cache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_guard_cache_node_t *ngx_http_guard_cache_lookup(
    ngx_http_guard_cache_sh_t *cache, u_char *key);
static size_t ngx_http_guard_cache_pack_size(ngx_http_guard_claims_t *c);
static void ngx_http_guard_cache_pack(ngx_http_guard_claims_t *c,
    u_char *p);
static u_char *ngx_http_guard_cache_cpystr(u_char *p, ngx_str_t *s);
static ngx_int_t ngx_http_guard_cache_unpack(ngx_pool_t *pool, u_char *p,
    size_t len, ngx_http_guard_claims_t *c);


void
ngx_http_guard_cache_init(ngx_http_guard_cache_sh_t *cache)
{
    ngx_rbtree_init(&cache->lru.rbtree, &cache->lru.sentinel,
                    ngx_http_guard_cache_insert_value);
    ngx_queue_init(&cache->lru.queue);
}


ngx_int_t
ngx_http_guard_cache_key(u_char *fingerprint, ngx_str_t *claim,
    ngx_str_t *token, u_char *key)
{
    static EVP_MD      *sha256;
    static EVP_MD_CTX  *mctx;

    if (sha256 == NULL) {
        sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        mctx = EVP_MD_CTX_new();

        if (sha256 == NULL || mctx == NULL) {
            return NGX_ERROR;
        }
    }

    if (EVP_DigestInit_ex(mctx, sha256, NULL) != 1
        || EVP_DigestUpdate(mctx, fingerprint, NGX_HTTP_GUARD_HASH_LEN) != 1
        || EVP_DigestUpdate(mctx, claim->data, claim->len) != 1
        || EVP_DigestUpdate(mctx, "", 1) != 1
        || EVP_DigestUpdate(mctx, token->data, token->len) != 1
        || EVP_DigestFinal_ex(mctx, key, NULL) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_guard_cache_get(ngx_http_request_t *r, u_char *key,
    ngx_http_guard_claims_t *claims)
{
    u_char                       *copy;
    size_t                        len;
    uint64_t                      now;
    ngx_http_guard_zone_t        *zone;
    ngx_http_guard_cache_node_t  *cn;

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return NGX_DECLINED;
    }

    now = ngx_http_guard_zone_now();
    copy = NULL;
    len = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    cn = ngx_http_guard_cache_lookup(&zone->sh->cache, key);

    if (cn != NULL) {
        if (cn->lru.expires <= now) {
            ngx_http_guard_lru_free_locked(zone, &zone->sh->cache.lru,
                                           &cn->lru);
            cn = NULL;

        } else {
            len = cn->len;
            copy = ngx_pnalloc(r->pool, len);

            if (copy != NULL) {
                ngx_memcpy(copy, cn->data, len);
                ngx_queue_remove(&cn->lru.queue);
                ngx_queue_insert_head(&zone->sh->cache.lru.queue,
                                      &cn->lru.queue);
            }
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (cn == NULL) {
        return NGX_DECLINED;
    }

    if (copy == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_guard_cache_unpack(r->pool, copy, len, claims);
}


void
ngx_http_guard_cache_put(ngx_http_request_t *r, u_char *key,
    ngx_http_guard_claims_t *claims)
{
    size_t                        n, len;
    time_t                        now;
    ngx_http_guard_zone_t        *zone;
    ngx_http_guard_cache_node_t  *cn;

    now = ngx_time();

    if (claims->exp <= now) {
        return;
    }

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return;
    }

    len = ngx_http_guard_cache_pack_size(claims);
    n = offsetof(ngx_http_guard_cache_node_t, data) + len;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (ngx_http_guard_cache_lookup(&zone->sh->cache, key) != NULL) {
        /* another worker was first */
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    cn = ngx_http_guard_zone_alloc_locked(zone, n,
                                          ngx_http_guard_zone_now());

    if (cn == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "guard: token cache full, not cached");
        return;
    }

    ngx_memcpy(&cn->lru.node.key, key, sizeof(ngx_rbtree_key_t));
    cn->key_len = NGX_HTTP_GUARD_HASH_LEN;
    ngx_memcpy(cn->key, key, NGX_HTTP_GUARD_HASH_LEN);

    cn->lru.expires = (uint64_t) claims->exp * 1000000;
    cn->len = len;
    ngx_http_guard_cache_pack(claims, cn->data);

    ngx_rbtree_insert(&zone->sh->cache.lru.rbtree, &cn->lru.node);
    ngx_queue_insert_head(&zone->sh->cache.lru.queue, &cn->lru.queue);

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


static void
ngx_http_guard_cache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_http_guard_zone_insert(temp, node, sentinel,
                               NGX_HTTP_GUARD_CACHE_OFF);
}


static ngx_http_guard_cache_node_t *
ngx_http_guard_cache_lookup(ngx_http_guard_cache_sh_t *cache, u_char *key)
{
    ngx_rbtree_key_t  hash;

    ngx_memcpy(&hash, key, sizeof(ngx_rbtree_key_t));

    return (ngx_http_guard_cache_node_t *)
               ngx_http_guard_zone_lookup(&cache->lru.rbtree, key,
                                          NGX_HTTP_GUARD_HASH_LEN, hash,
                                          NGX_HTTP_GUARD_CACHE_OFF);
}


static size_t
ngx_http_guard_cache_pack_size(ngx_http_guard_claims_t *c)
{
    size_t      len;
    ngx_uint_t  i;

    len = sizeof(ngx_http_guard_cache_pack_t)
          + (c->naud + c->ntenants) * sizeof(uint32_t)
          + c->sub.len + c->iss.len + c->payload.len;

    for (i = 0; i < c->naud; i++) {
        len += c->aud[i].len;
    }

    for (i = 0; i < c->ntenants; i++) {
        len += c->tenants[i].len;
    }

    return len;
}


static void
ngx_http_guard_cache_pack(ngx_http_guard_claims_t *c, u_char *p)
{
    uint32_t                     len;
    ngx_uint_t                   i;
    ngx_http_guard_cache_pack_t  h;

    h.exp = c->exp;
    h.nbf = c->nbf;
    h.iat = c->iat;
    h.flags = (c->has_nbf ? NGX_HTTP_GUARD_PACK_NBF : 0)
              | (c->has_iat ? NGX_HTTP_GUARD_PACK_IAT : 0)
              | (c->has_sub ? NGX_HTTP_GUARD_PACK_SUB : 0)
              | (c->has_iss ? NGX_HTTP_GUARD_PACK_ISS : 0)
              | (c->has_aud ? NGX_HTTP_GUARD_PACK_AUD : 0);
    h.naud = c->naud;
    h.ntenants = c->ntenants;
    h.sub_len = c->sub.len;
    h.iss_len = c->iss.len;
    h.payload_len = c->payload.len;

    p = ngx_cpymem(p, &h, sizeof(h));

    for (i = 0; i < c->naud; i++) {
        len = c->aud[i].len;
        p = ngx_cpymem(p, &len, sizeof(uint32_t));
    }

    for (i = 0; i < c->ntenants; i++) {
        len = c->tenants[i].len;
        p = ngx_cpymem(p, &len, sizeof(uint32_t));
    }

    p = ngx_http_guard_cache_cpystr(p, &c->sub);
    p = ngx_http_guard_cache_cpystr(p, &c->iss);
    p = ngx_http_guard_cache_cpystr(p, &c->payload);

    for (i = 0; i < c->naud; i++) {
        p = ngx_http_guard_cache_cpystr(p, &c->aud[i]);
    }

    for (i = 0; i < c->ntenants; i++) {
        p = ngx_http_guard_cache_cpystr(p, &c->tenants[i]);
    }
}


/*
 * ngx_cpymem() of a string that may be empty: an absent claim is
 * { 0, NULL }, and memcpy() from NULL is undefined even for 0 bytes
 */

static u_char *
ngx_http_guard_cache_cpystr(u_char *p, ngx_str_t *s)
{
    return s->len ? ngx_cpymem(p, s->data, s->len) : p;
}


static ngx_int_t
ngx_http_guard_cache_unpack(ngx_pool_t *pool, u_char *p, size_t len,
    ngx_http_guard_claims_t *c)
{
    u_char                       *lens, *last;
    uint32_t                      n;
    ngx_uint_t                    i;
    ngx_str_t                    *s;
    ngx_http_guard_cache_pack_t   h;

    /* the bytes came from the zone, written by pack(): still, check */

    last = p + len;

    if (len < sizeof(h)) {
        return NGX_ERROR;
    }

    ngx_memcpy(&h, p, sizeof(h));
    p += sizeof(h);

    if ((size_t) (last - p) < (h.naud + h.ntenants) * sizeof(uint32_t)) {
        return NGX_ERROR;
    }

    c->exp = h.exp;
    c->nbf = h.nbf;
    c->iat = h.iat;
    c->has_nbf = (h.flags & NGX_HTTP_GUARD_PACK_NBF) ? 1 : 0;
    c->has_iat = (h.flags & NGX_HTTP_GUARD_PACK_IAT) ? 1 : 0;
    c->has_sub = (h.flags & NGX_HTTP_GUARD_PACK_SUB) ? 1 : 0;
    c->has_iss = (h.flags & NGX_HTTP_GUARD_PACK_ISS) ? 1 : 0;
    c->has_aud = (h.flags & NGX_HTTP_GUARD_PACK_AUD) ? 1 : 0;
    c->naud = h.naud;
    c->ntenants = h.ntenants;

    s = ngx_palloc(pool, (h.naud + h.ntenants + 1) * sizeof(ngx_str_t));
    if (s == NULL) {
        return NGX_ERROR;
    }

    c->aud = s;
    c->tenants = s + h.naud;

    lens = p;
    p += (h.naud + h.ntenants) * sizeof(uint32_t);

    if ((size_t) (last - p) < (size_t) h.sub_len + h.iss_len + h.payload_len)
    {
        return NGX_ERROR;
    }

    c->sub.data = p;
    c->sub.len = h.sub_len;
    p += h.sub_len;

    c->iss.data = p;
    c->iss.len = h.iss_len;
    p += h.iss_len;

    c->payload.data = p;
    c->payload.len = h.payload_len;
    p += h.payload_len;

    for (i = 0; i < h.naud + h.ntenants; i++) {
        ngx_memcpy(&n, lens + i * sizeof(uint32_t), sizeof(uint32_t));

        if ((size_t) (last - p) < n) {
            return NGX_ERROR;
        }

        s[i].data = p;
        s[i].len = n;
        p += n;
    }

    return NGX_OK;
}
