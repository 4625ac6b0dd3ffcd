/*
 * gd_jsonloc: where a JSON pointer points in JSON text, see gd_jsonloc.h.
 */
#include "gd_jsonloc.h"
#include "gd_jsonptr.h"

#include <stdlib.h>
#include <string.h>

#define GD_JSONLOC_KEY_MAX 256

static size_t skip_ws(const char *t, size_t len, size_t p)
{
    while (p < len &&
           (t[p] == ' ' || t[p] == '\t' || t[p] == '\n' || t[p] == '\r')) {
        p++;
    }
    return p;
}

/* p is at an opening quote; returns the position after the closing one */
static size_t skip_string(const char *t, size_t len, size_t p)
{
    for (p++; p < len; p++) {
        if (t[p] == '\\') {
            p++;
        } else if (t[p] == '"') {
            return p + 1;
        }
    }
    return len;
}

static size_t skip_value(const char *t, size_t len, size_t p)
{
    int depth = 0;

    if (p >= len) {
        return len;
    }

    if (t[p] == '"') {
        return skip_string(t, len, p);
    }

    if (t[p] != '{' && t[p] != '[') {
        while (p < len && strchr(",]} \t\r\n", t[p]) == NULL) {
            p++;
        }
        return p;
    }

    while (p < len) {
        if (t[p] == '"') {
            p = skip_string(t, len, p);
            continue;
        }
        if (t[p] == '{' || t[p] == '[') {
            depth++;
        } else if (t[p] == '}' || t[p] == ']') {
            if (--depth == 0) {
                return p + 1;
            }
        }
        p++;
    }

    return len;
}

/*
 * Reads the key string at p (an opening quote) into buf, undoing the
 * simple escapes; non-ASCII \u escapes never compare equal.
 */
static size_t read_key(const char *t, size_t len, size_t p, char *buf,
                       size_t *n)
{
    *n = 0;

    for (p++; p < len && t[p] != '"'; p++) {
        char c = t[p];

        if (c == '\\' && p + 1 < len) {
            p++;
            switch (t[p]) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u':
                if (p + 4 < len && strncmp(t + p + 1, "00", 2) == 0) {
                    char hex[3] = {t[p + 3], t[p + 4], 0};
                    c = (char)strtol(hex, NULL, 16);
                    p += 4;
                } else {
                    c = '\x01'; /* never part of a policy key */
                    p += 4;
                }
                break;
            default:
                c = t[p];
            }
        }

        if (*n < GD_JSONLOC_KEY_MAX) {
            buf[(*n)++] = c;
        }
    }

    return p < len ? p + 1 : len;
}

void gd_jsonloc_linecol(const char *text, size_t len, size_t off, int *line,
                        int *column)
{
    int l = 1;
    size_t start = 0;

    if (off > len) {
        off = len;
    }

    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            l++;
            start = i + 1;
        }
    }

    *line = l;
    *column = (int)(off - start) + 1;
}

int gd_jsonloc_member(const char *text, size_t len, const char *key,
                      size_t *start, size_t *end)
{
    char name[GD_JSONLOC_KEY_MAX];
    size_t keylen = strlen(key);
    size_t pos = skip_ws(text, len, 0);
    int count = 0;

    if (pos >= len || text[pos] != '{') {
        return 0;
    }
    pos = skip_ws(text, len, pos + 1);
    while (pos < len && text[pos] == '"') {
        size_t kn, value;

        pos = read_key(text, len, pos, name, &kn);
        pos = skip_ws(text, len, pos);
        if (pos < len && text[pos] == ':') {
            pos = skip_ws(text, len, pos + 1);
        }
        value = pos;
        pos = skip_value(text, len, pos);
        if (kn == keylen && keylen < GD_JSONLOC_KEY_MAX &&
            memcmp(name, key, kn) == 0) {
            *start = value;
            *end = pos;
            count++;
        }
        pos = skip_ws(text, len, pos);
        if (pos < len && text[pos] == ',') {
            pos = skip_ws(text, len, pos + 1);
        }
    }
    return count;
}

void gd_jsonloc_find(const char *text, size_t len, const char *ptr,
                     int want_value, int *line, int *column)
{
    char tok[GD_JSONPTR_TOKEN_MAX + 1], key[GD_JSONLOC_KEY_MAX];
    size_t ppos = 0, plen = strlen(ptr);
    size_t pos = skip_ws(text, len, 0);
    size_t found = pos;
    long tn;

    while ((tn = gd_jsonptr_next(ptr, plen, &ppos, tok)) >= 0) {
        int last = (ppos >= plen);
        size_t member = pos, value = len;

        if (pos < len && text[pos] == '{') {
            pos = skip_ws(text, len, pos + 1);

            while (pos < len && text[pos] == '"') {
                size_t kn;

                member = pos;
                pos = read_key(text, len, pos, key, &kn);
                pos = skip_ws(text, len, pos);
                if (pos < len && text[pos] == ':') {
                    pos = skip_ws(text, len, pos + 1);
                }

                if ((long)kn == tn && memcmp(key, tok, kn) == 0) {
                    value = pos;
                    break;
                }

                pos = skip_ws(text, len, skip_value(text, len, pos));
                if (pos < len && text[pos] == ',') {
                    pos = skip_ws(text, len, pos + 1);
                }
            }

            if (value == len) {
                break;
            }

            found = (last && !want_value) ? member : value;

        } else if (pos < len && text[pos] == '[') {
            char *end;
            long index = strtol(tok, &end, 10);

            if (tn == 0 || end != tok + tn || index < 0) {
                break;
            }

            pos = skip_ws(text, len, pos + 1);

            for (long i = 0; i < index && pos < len && text[pos] != ']'; i++) {
                pos = skip_ws(text, len, skip_value(text, len, pos));
                if (pos < len && text[pos] == ',') {
                    pos = skip_ws(text, len, pos + 1);
                }
            }

            if (pos >= len || text[pos] == ']') {
                break;
            }

            value = pos;
            found = value;

        } else {
            break;
        }

        pos = value;
    }

    gd_jsonloc_linecol(text, len, found, line, column);
}
