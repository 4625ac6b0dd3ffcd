/*
 * gd_jsonptr: JSON Pointer (RFC 6901) over jansson values.
 */
#ifndef GD_JSONPTR_H
#define GD_JSONPTR_H

#include <stddef.h>

#include <jansson.h>

/*
 * Checks the syntax of a pointer: empty, or '/'-separated tokens where
 * '~' is only ever followed by '0' or '1'. Returns 0 or -1.
 */
int gd_jsonptr_valid(const char *ptr, size_t len);

/*
 * Resolves ptr (len bytes, need not be NUL-terminated) against root.
 * Returns a borrowed reference, or NULL when the pointer is invalid or
 * names nothing.
 */
json_t *gd_jsonptr_get(json_t *root, const char *ptr, size_t len);

#endif
