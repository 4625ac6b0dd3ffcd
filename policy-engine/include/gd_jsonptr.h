/*
 * gd_jsonptr: JSON Pointer (RFC 6901) over jansson values.
 */
#ifndef GD_JSONPTR_H
#define GD_JSONPTR_H

#include <stddef.h>

#include <jansson.h>

#define GD_JSONPTR_TOKEN_MAX 256

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

/*
 * The reference token of ptr (len bytes) that starts at *pos (a '/'),
 * unescaped into buf (GD_JSONPTR_TOKEN_MAX + 1 bytes, NUL-terminated);
 * *pos moves past it.  Returns its length, or -1 at the end, on a bad
 * escape, or for a token longer than GD_JSONPTR_TOKEN_MAX.
 */
long gd_jsonptr_next(const char *ptr, size_t len, size_t *pos, char *buf);

#endif
