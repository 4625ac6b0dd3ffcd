
/*
 * Copyright (C) Guard authors
 *
 * The concurrency stage: a bulkhead per tenant (limits.concurrency.max)
 * with a FIFO queue of waiting requests (queue, queue_timeout), in the
 * guard zone and shared by all workers.
 */


#ifndef _NGX_HTTP_GUARD_BULKHEAD_H_INCLUDED_
#define _NGX_HTTP_GUARD_BULKHEAD_H_INCLUDED_


#include "ngx_http_guard_module.h"


void ngx_http_guard_bulkhead_init(ngx_rbtree_t *tree,
    ngx_rbtree_node_t *sentinel);
ngx_int_t ngx_http_guard_bulkhead(ngx_http_request_t *r,
    ngx_http_guard_ctx_t *ctx, ngx_uint_t *shadow);


#endif /* _NGX_HTTP_GUARD_BULKHEAD_H_INCLUDED_ */
