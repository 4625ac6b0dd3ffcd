/*
 * Unit tests for gd_jsonptr: the examples of RFC 6901 section 5, and
 * pointers that must name nothing.
 */
#include "gd_jsonptr.h"
#include "tap.h"

#include <string.h>

static const char *doc_text =
    "{\"foo\": [\"bar\", \"baz\"], \"\": 0, \"a/b\": 1, \"c%d\": 2, "
    "\"e^f\": 3, \"g|h\": 4, \"i\\\\j\": 5, \"k\\\"l\": 6, \" \": 7, "
    "\"m~n\": 8, \"org\": {\"tenant\": \"acme\"}}";

static json_t *get(json_t *doc, const char *p)
{
    return gd_jsonptr_get(doc, p, strlen(p));
}

static int is_int(json_t *v, json_int_t n)
{
    return json_is_integer(v) && json_integer_value(v) == n;
}

int main(void)
{
    json_error_t err;
    json_t *doc = json_loads(doc_text, 0, &err);

    TAP_OK(doc != NULL, "the RFC 6901 document parses");

    TAP_OK(get(doc, "") == doc, "\"\" is the whole document");
    TAP_OK(json_is_array(get(doc, "/foo")), "/foo is the array");
    TAP_OK(json_is_string(get(doc, "/foo/0")) &&
               strcmp(json_string_value(get(doc, "/foo/0")), "bar") == 0,
           "/foo/0 is \"bar\"");
    TAP_OK(is_int(get(doc, "/"), 0), "/ is 0");
    TAP_OK(is_int(get(doc, "/a~1b"), 1), "/a~1b is 1");
    TAP_OK(is_int(get(doc, "/c%d"), 2), "/c%%d is 2");
    TAP_OK(is_int(get(doc, "/e^f"), 3), "/e^f is 3");
    TAP_OK(is_int(get(doc, "/g|h"), 4), "/g|h is 4");
    TAP_OK(is_int(get(doc, "/i\\j"), 5), "/i\\j is 5");
    TAP_OK(is_int(get(doc, "/k\"l"), 6), "/k\"l is 6");
    TAP_OK(is_int(get(doc, "/ "), 7), "/<space> is 7");
    TAP_OK(is_int(get(doc, "/m~0n"), 8), "/m~0n is 8");
    TAP_OK(strcmp(json_string_value(get(doc, "/org/tenant")), "acme") == 0,
           "/org/tenant is \"acme\"");

    TAP_OK(get(doc, "foo") == NULL, "a pointer must start with /");
    TAP_OK(get(doc, "/foo/2") == NULL, "an index past the end");
    TAP_OK(get(doc, "/foo/-") == NULL, "\"-\" names nothing to read");
    TAP_OK(get(doc, "/foo/01") == NULL, "no leading zeros in an index");
    TAP_OK(get(doc, "/foo/0/x") == NULL, "no member of a string");
    TAP_OK(get(doc, "/m~2n") == NULL, "~2 is not an escape");
    TAP_OK(get(doc, "/m~") == NULL, "a trailing ~ is invalid");
    TAP_OK(get(doc, "/nope") == NULL, "an absent member");

    TAP_OK(gd_jsonptr_valid("/a~1b/c", 7) == 0, "valid syntax accepted");
    TAP_OK(gd_jsonptr_valid("a", 1) != 0, "no leading / rejected");
    TAP_OK(gd_jsonptr_valid("/a~", 3) != 0, "dangling ~ rejected");

    /* a pointer that is not NUL-terminated is read to its length only */
    TAP_OK(is_int(gd_jsonptr_get(doc, "/a~1bXYZ", 5), 1),
           "the length bounds the pointer");

    json_decref(doc);
    return tap_done();
}
