/*
 * libFuzzer target for gd_audit_mask(): `make -C policy-engine fuzz`
 * (needs clang).  The input is masked as a string member of a record and,
 * when it is a JSON object, as a whole record; masking must not crash,
 * and must be idempotent: a second pass changes nothing (what is left
 * matches no pattern).
 */
#include "gd_audit.h"

#include <stdlib.h>

static void mask_twice(json_t *rec)
{
    if (gd_audit_mask(rec) >= 0 && gd_audit_mask(rec) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *s = json_stringn((const char *)data, size);
    json_t *rec;
    json_error_t err;

    if (s != NULL) {
        rec = json_object();
        json_object_set_new(rec, "route", s);
        mask_twice(rec);
        json_decref(rec);
    }

    rec = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
    if (json_is_object(rec)) {
        mask_twice(rec);
    }
    json_decref(rec);

    return 0;
}
