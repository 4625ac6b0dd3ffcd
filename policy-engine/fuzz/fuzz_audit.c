/*
 * libFuzzer target for gd_audit_mask(): `make -C policy-engine fuzz`
 * (needs clang).  The input is masked as a string member of a record and,
 * when it is a JSON object, as a whole record; masking must not crash,
 * and must be idempotent: a second pass changes nothing (what is left
 * matches no pattern).  It is also masked and cut (gd_audit_mask_cut) to
 * a limit taken from its first bytes: the result fits the limit and is
 * a fixed point of both masking and cutting.  And it is the route (and,
 * its first half, the tenant) of a record cut to a budget taken from its
 * first bytes (gd_audit_record_text): the record fits, is JSON, and is a
 * fixed point of the masking.
 */
#include "gd_audit.h"
#include "gd_audit_record.h"

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

static void record(const uint8_t *data, size_t size)
{
    gd_audit_decision_t d = {0};
    size_t max, outlen;
    char *out;
    json_t *rec;

    if (size < 2) {
        return;
    }
    max = ((size_t)data[0] << 8 | data[1]) % 4096;
    data += 2;
    size -= 2;

    d.id = gd_audit_text("0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b");
    d.stage = gd_audit_text("authentication");
    d.reason = gd_audit_text("token_invalid");
    d.status = 401;
    d.latency_ms = 0;
    d.route.data = (const char *)data;
    d.route.len = size;
    d.tenant.data = (const char *)data;
    d.tenant.len = size / 2;
    d.method = gd_audit_text("GET");
    d.client_ip = gd_audit_text("127.0.0.1");
    d.node = gd_audit_text("node");

    if (gd_audit_record_text(&d, max, &out, &outlen) != 0) {
        return;
    }
    if (outlen > max || strlen(out) != outlen) {
        abort();
    }
    rec =
        json_loadb(out, outlen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (!json_is_object(rec) || gd_audit_mask(rec) != 0) {
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
    record(data, size);

    return 0;
}
