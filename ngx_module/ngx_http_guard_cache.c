
/*
 * Copyright (C) Guard authors
 *
 * The verified-token cache.
 *
 * Entries live in the guard zone, shared by all workers: an rbtree keyed
 * by the token's cache key and the fingerprint of the key set that
 * verified it, plus an LRU queue.  The cache key is SipHash-2-4 with a
 * 128-bit output, keyed by 16 random bytes drawn when the zone is made,
 * of the tenant claim spec and the token: a keyed PRF whose output never
 * leaves the zone, so that no one can plan two tokens with one key, and
 * a hit is for the exact token that was verified (a chance collision is
 * 2^-128 per pair).  It costs a fraction of a SHA-256 of the token.
 *
 * An entry holds the claims of a verified token, once: the registered
 * claims and the tenants, not the payload (the claim variables read the
 * payload from the request's own token, which is the verified one), and
 * never the token.  It never outlives the token's "exp".  When the zone
 * is full the oldest entries go; when even that fails the token is simply
 * not cached.
 */


#include "ngx_http_guard_cache.h"
#include "ngx_http_guard_zone.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>


typedef struct {
    ngx_http_guard_lru_node_t    lru;         /* expires: the token's exp */
    u_short                      key_len;     /* the zone's key layout */
    u_char                       key[NGX_HTTP_GUARD_CACHE_KEY_LEN
                                     + NGX_HTTP_GUARD_HASH_LEN];
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
} ngx_http_guard_cache_pack_t;


#define NGX_HTTP_GUARD_PACK_NBF  0x01
#define NGX_HTTP_GUARD_PACK_IAT  0x02
#define NGX_HTTP_GUARD_PACK_SUB  0x04
#define NGX_HTTP_GUARD_PACK_ISS  0x08
#define NGX_HTTP_GUARD_PACK_AUD  0x10


static ngx_int_t ngx_http_guard_cache_key(ngx_http_request_t *r,
    ngx_str_t *claim, ngx_str_t *token, u_char *key);
static void ngx_http_guard_cache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_guard_cache_node_t *ngx_http_guard_cache_lookup(
    ngx_http_guard_cache_sh_t *cache, u_char *key, u_char *fingerprint);
static size_t ngx_http_guard_cache_pack_size(ngx_http_guard_claims_t *c);
static void ngx_http_guard_cache_pack(ngx_http_guard_claims_t *c,
    u_char *p);
static u_char *ngx_http_guard_cache_cpystr(u_char *p, ngx_str_t *s);
static ngx_int_t ngx_http_guard_cache_unpack(ngx_pool_t *pool, u_char *p,
    size_t len, ngx_http_guard_claims_t *c);


ngx_int_t
ngx_http_guard_cache_init(ngx_http_guard_cache_sh_t *cache)
{
    ngx_rbtree_init(&cache->lru.rbtree, &cache->lru.sentinel,
                    ngx_http_guard_cache_insert_value);
    ngx_queue_init(&cache->lru.queue);

    if (RAND_bytes(cache->seed, sizeof(cache->seed)) != 1) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The cache key of the request's token (ctx->cache_key), made once per
 * request and guard settings.
 */

ngx_int_t
ngx_http_guard_cache_token_key(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->cache_keyed == ctx->conf) {
        return NGX_OK;
    }

    rc = ngx_http_guard_cache_key(r, &ctx->conf->tenant_claim.name,
                                  &ctx->token, ctx->cache_key);
    if (rc == NGX_OK) {
        ctx->cache_keyed = ctx->conf;
    }

    return rc;
}


/*
 * The cache key of a token read with the tenant claim spec claim.  The
 * worker keeps one SipHash context, keyed with the zone's seed (a reload
 * may bring a new zone), and reinitializes it per token.
 */

static ngx_int_t
ngx_http_guard_cache_key(ngx_http_request_t *r, ngx_str_t *claim,
    ngx_str_t *token, u_char *key)
{
    size_t                  len;
    EVP_MAC                *siphash;
    OSSL_PARAM              params[2];
    ngx_http_guard_zone_t  *zone;

    static u_char           seed[NGX_HTTP_GUARD_CACHE_KEY_LEN];
    static EVP_MAC_CTX     *mctx;

    zone = ngx_http_guard_zone_get(r);
    if (zone == NULL) {
        return NGX_DECLINED;
    }

    if (mctx == NULL) {
        siphash = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
        mctx = (siphash != NULL) ? EVP_MAC_CTX_new(siphash) : NULL;
        EVP_MAC_free(siphash);

        if (mctx == NULL) {
            ERR_clear_error();
            return NGX_ERROR;
        }

        ngx_memzero(seed, sizeof(seed));
    }

    if (ngx_memcmp(seed, zone->sh->cache.seed, sizeof(seed)) != 0) {
        len = NGX_HTTP_GUARD_CACHE_KEY_LEN;
        params[0] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &len);
        params[1] = OSSL_PARAM_construct_end();

        if (EVP_MAC_init(mctx, zone->sh->cache.seed, sizeof(seed), params)
            != 1)
        {
            ERR_clear_error();
            return NGX_ERROR;
        }

        ngx_memcpy(seed, zone->sh->cache.seed, sizeof(seed));

    } else if (EVP_MAC_init(mctx, NULL, 0, NULL) != 1) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    if (EVP_MAC_update(mctx, claim->data, claim->len) != 1
        || EVP_MAC_update(mctx, (u_char *) "", 1) != 1
        || EVP_MAC_update(mctx, token->data, token->len) != 1
        || EVP_MAC_final(mctx, key, &len, NGX_HTTP_GUARD_CACHE_KEY_LEN) != 1
        || len != NGX_HTTP_GUARD_CACHE_KEY_LEN)
    {
        ERR_clear_error();
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The claims of the token with this cache key, verified with the key set
 * of this fingerprint; with no fingerprint, with any key set (for the
 * tenant a token names, which does not depend on the keys).
 */

ngx_int_t
ngx_http_guard_cache_get(ngx_http_request_t *r, u_char *key,
    u_char *fingerprint, ngx_http_guard_claims_t *claims)
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

    cn = ngx_http_guard_cache_lookup(&zone->sh->cache, key, fingerprint);

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
    u_char *fingerprint, ngx_http_guard_claims_t *claims)
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

    if (ngx_http_guard_cache_lookup(&zone->sh->cache, key, fingerprint)
        != NULL)
    {
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
    cn->key_len = sizeof(cn->key);
    ngx_memcpy(ngx_cpymem(cn->key, key, NGX_HTTP_GUARD_CACHE_KEY_LEN),
               fingerprint, NGX_HTTP_GUARD_HASH_LEN);

    cn->lru.expires = (uint64_t) claims->exp * 1000000;
    cn->len = len;
    ngx_http_guard_cache_pack(claims, cn->data);

    ngx_rbtree_insert(&zone->sh->cache.lru.rbtree, &cn->lru.node);
    ngx_queue_insert_head(&zone->sh->cache.lru.queue, &cn->lru.queue);

    zone->sh->metrics.cache_entries++;

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


static void
ngx_http_guard_cache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_http_guard_zone_insert(temp, node, sentinel,
                               NGX_HTTP_GUARD_CACHE_OFF);
}


/*
 * Nodes of one cache key sit together, ordered by fingerprint (the tree
 * orders by rbtree key, then by the whole key bytes): without a
 * fingerprint, any node of the cache key is found.
 */

static ngx_http_guard_cache_node_t *
ngx_http_guard_cache_lookup(ngx_http_guard_cache_sh_t *cache, u_char *key,
    u_char *fingerprint)
{
    u_char                        full[NGX_HTTP_GUARD_CACHE_KEY_LEN
                                           + NGX_HTTP_GUARD_HASH_LEN];
    ngx_int_t                     rc;
    ngx_rbtree_key_t              hash;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_guard_cache_node_t  *cn;

    if (fingerprint != NULL) {
        ngx_memcpy(ngx_cpymem(full, key, NGX_HTTP_GUARD_CACHE_KEY_LEN),
                   fingerprint, NGX_HTTP_GUARD_HASH_LEN);
        ngx_memcpy(&hash, key, sizeof(ngx_rbtree_key_t));

        return (ngx_http_guard_cache_node_t *)
                   ngx_http_guard_zone_lookup(&cache->lru.rbtree, full,
                                              sizeof(full), hash,
                                              NGX_HTTP_GUARD_CACHE_OFF);
    }

    ngx_memcpy(&hash, key, sizeof(ngx_rbtree_key_t));

    node = cache->lru.rbtree.root;
    sentinel = cache->lru.rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        cn = (ngx_http_guard_cache_node_t *) node;
        rc = ngx_memcmp(key, cn->key, NGX_HTTP_GUARD_CACHE_KEY_LEN);

        if (rc == 0) {
            return cn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static size_t
ngx_http_guard_cache_pack_size(ngx_http_guard_claims_t *c)
{
    size_t      len;
    ngx_uint_t  i;

    len = sizeof(ngx_http_guard_cache_pack_t)
          + (c->naud + c->ntenants) * sizeof(uint32_t)
          + c->sub.len + c->iss.len;

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

    if ((size_t) (last - p) < (size_t) h.sub_len + h.iss_len) {
        return NGX_ERROR;
    }

    c->sub.data = p;
    c->sub.len = h.sub_len;
    p += h.sub_len;

    c->iss.data = p;
    c->iss.len = h.iss_len;
    p += h.iss_len;

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
