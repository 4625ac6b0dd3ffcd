/*
 * gd_jsonloc: where an RFC 6901 pointer points in JSON text.
 *
 * jansson parses the documents; it keeps no source positions for values,
 * so error messages about a value (an unknown key, a wrong type) need this
 * to name a line and column.  It only scans the text that jansson has
 * already accepted: strings, nesting and commas, never values.
 */
#ifndef GD_JSONLOC_H
#define GD_JSONLOC_H

#include <stddef.h>

/*
 * Finds ptr in text.  With want_value, the position is that of the
 * value's first character; otherwise, for an object member, that of its
 * key's opening quote (array items and the root: the value).  A pointer
 * that names nothing gives the position of its deepest existing parent.
 * line and column are 1-based; column counts bytes.
 */
void gd_jsonloc_find(const char *text, size_t len, const char *ptr,
                     int want_value, int *line, int *column);

/* The 1-based line and column of byte offset off in text. */
void gd_jsonloc_linecol(const char *text, size_t len, size_t off, int *line,
                        int *column);

#endif
