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

/*
 * The members named key of the object that text is (its top level, not
 * nested ones): how many there are, and the byte span [*start, *end) of
 * the last one's value, as written (untouched when there is none).  text
 * is a document jansson accepted; keys are compared after the simple
 * escapes are undone, as gd_jsonloc_find compares them.
 */
int gd_jsonloc_member(const char *text, size_t len, const char *key,
                      size_t *start, size_t *end);

/* The 1-based line and column of byte offset off in text. */
void gd_jsonloc_linecol(const char *text, size_t len, size_t off, int *line,
                        int *column);

#endif
