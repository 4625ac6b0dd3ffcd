/*
 * gd_jsonptr: JSON Pointer (RFC 6901), see gd_jsonptr.h.
 */
#include "gd_jsonptr.h"

#include <stdlib.h>
#include <string.h>

int gd_jsonptr_valid(const char *ptr, size_t len)
{
    if (len == 0) {
        return 0;
    }

    if (ptr[0] != '/') {
        return -1;
    }

    for (size_t i = 0; i < len; i++) {
        if (ptr[i] == '~') {
            if (i + 1 == len || (ptr[i + 1] != '0' && ptr[i + 1] != '1')) {
                return -1;
            }
        }
    }

    return 0;
}

/* Unescapes one reference token into buf; returns its length or -1. */
static long gd_jsonptr_token(const char *p, size_t len, char *buf)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (n == GD_JSONPTR_TOKEN_MAX) {
            return -1;
        }

        if (p[i] != '~') {
            buf[n++] = p[i];
            continue;
        }

        if (i + 1 == len) {
            return -1;
        }

        i++;

        if (p[i] == '0') {
            buf[n++] = '~';
        } else if (p[i] == '1') {
            buf[n++] = '/';
        } else {
            return -1;
        }
    }

    return (long)n;
}

/* An array index: "0" or digits with no leading zero. */
static int gd_jsonptr_index(const char *tok, size_t len, size_t *index)
{
    size_t v = 0;

    if (len == 0 || (len > 1 && tok[0] == '0') || len > 9) {
        return -1;
    }

    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9') {
            return -1;
        }
        v = v * 10 + (size_t)(tok[i] - '0');
    }

    *index = v;
    return 0;
}

long gd_jsonptr_next(const char *ptr, size_t len, size_t *pos, char *buf)
{
    size_t start, end;
    long n;

    if (*pos >= len || ptr[*pos] != '/') {
        return -1;
    }

    start = *pos + 1;
    end = start;

    while (end < len && ptr[end] != '/') {
        end++;
    }

    n = gd_jsonptr_token(ptr + start, end - start, buf);
    if (n < 0) {
        return -1;
    }

    buf[n] = '\0';
    *pos = end;
    return n;
}

json_t *gd_jsonptr_get(json_t *root, const char *ptr, size_t len)
{
    char buf[GD_JSONPTR_TOKEN_MAX + 1];
    json_t *cur = root;
    size_t pos = 0;

    if (gd_jsonptr_valid(ptr, len) != 0) {
        return NULL;
    }

    while (pos < len && cur != NULL) {
        long n = gd_jsonptr_next(ptr, len, &pos, buf);
        if (n < 0) {
            return NULL;
        }

        if (json_is_object(cur)) {
            cur = json_object_getn(cur, buf, (size_t)n);

        } else if (json_is_array(cur)) {
            size_t index;

            if (gd_jsonptr_index(buf, (size_t)n, &index) != 0) {
                return NULL;
            }
            cur = json_array_get(cur, index);

        } else {
            return NULL;
        }
    }

    return cur;
}
