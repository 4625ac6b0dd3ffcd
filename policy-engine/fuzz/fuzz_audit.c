/*
 * libFuzzer target for gd_audit_mask(): `make -C policy-engine fuzz`
 * (needs clang).  The input is masked as a string member of a record and,
 * when it is a JSON object, as a whole record; masking must not crash,
 * and must be idempotent: a second pass changes nothing (what is left
 * matches no pattern).  It is also masked and cut (gd_audit_mask_cut) to
 * a limit taken from its first bytes: the result fits the limit and is
 * a fixed point of both masking and cutting.
 */
#include "gd_audit.h"

#include <stdlib.h>
#include <string.h>

static void mask_twice(json_t *rec)
{
    if (gd_audit_mask(rec) >= 0 && gd_audit_mask(rec) != 0) {
        abort();
    }
}

static void mask_cut(const uint8_t *data, size_t size)
{
    size_t limit, outlen, againlen;
    char *out, *again;
    json_t *rec;

    if (size < 2) {
        return;
    }
    limit = ((size_t)data[0] << 8 | data[1]) % (size + 16);
    data += 2;
    size -= 2;

    if (gd_audit_mask_cut("route", (const char *)data, size, limit, &out,
                          &outlen) != 0) {
        return;
    }
    if (outlen > limit) {
        abort();
    }

    if (gd_audit_mask_cut("route", out, outlen, limit, &again, &againlen) ==
        0) {
        if (againlen != outlen || memcmp(again, out, outlen) != 0) {
            abort();
        }
        free(again);
    }

    rec = json_object();
    json_object_set_new(rec, "route", json_stringn(out, outlen));
    if (json_object_get(rec, "route") != NULL && gd_audit_mask(rec) > 0) {
        abort();
    }
    json_decref(rec);
    free(out);
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

    mask_cut(data, size);

    return 0;
}
