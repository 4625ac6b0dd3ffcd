/*
 * libFuzzer target for the policy loader (`make fuzz`, needs clang): the
 * input is the text of one policy file, checked by gd_policy_parse() as
 * a tenant's file and as _default.json.  Every outcome must be clean:
 * either errors, one line each, or a policy; never both, never a crash.
 */
#include "gd_policy.h"

#include <stdlib.h>
#include <string.h>

static void parse(const char *text, size_t len, int is_default)
{
    gd_errors_t errs = {0};
    gd_policy_t p;
    json_t *doc = gd_policy_parse("fuzz.json", text, len, "/policies",
                                  is_default, &p, &errs);

    if (doc == NULL && errs.n == 0) {
        abort(); /* not JSON, yet no error */
    }
    for (size_t i = 0; i < errs.n; i++) {
        if (strchr(errs.lines[i], '\n') != NULL) {
            abort(); /* one line each */
        }
    }
    if (doc && errs.n == 0 && (p.file == NULL || (!is_default && !p.tenant))) {
        abort(); /* a valid tenant policy names its tenant */
    }

    gd_policy_free(&p);
    gd_errors_free(&errs);
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the loader reads a file into a NUL-terminated buffer */
    char *text = malloc(size + 1);

    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';

    parse(text, size, 0);
    parse(text, size, 1);

    free(text);
    return 0;
}
