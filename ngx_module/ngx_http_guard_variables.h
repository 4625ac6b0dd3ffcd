
/*
 * Copyright (C) Guard authors
 *
 * The variables.
 */


#ifndef _NGX_HTTP_GUARD_VARIABLES_H_INCLUDED_
#define _NGX_HTTP_GUARD_VARIABLES_H_INCLUDED_


#include "ngx_http_guard_module.h"


ngx_int_t ngx_http_guard_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_GUARD_VARIABLES_H_INCLUDED_ */
