/*
 * Unit tests for gd_proto: round trips, frames split at every byte,
 * several frames in one buffer, every framing error, refused payloads
 * (reported per frame, the stream kept in step), and a bounded,
 * seeded mutation run over valid frames (under ASan+UBSan).
 */
#include "gd_proto.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#define MAX GD_PROTO_DEFAULT_MAX_FRAME

static gd_proto_rc_t dec(const uint8_t *b, size_t n, gd_frame_t *f,
                         size_t *used, char *err)
{
    return gd_proto_decode(b, n, MAX, f, used, err, 256);
}

int main(void)
{
    uint8_t *buf, *buf2;
    size_t len, len2, used;
    gd_frame_t f;
    char err[256];
    json_t *p = json_pack("{s:s, s:i, s:[s,s]}", "tenant", "acme", "score", 42,
                          "signals", "a", "b");

    /* round trip */
    TAP_OK(gd_proto_encode(GD_FRAME_DECIDE, 0xdeadbeef, p, MAX, &buf, &len) ==
               0,
           "encode DECIDE");
    TAP_OK(len > GD_PROTO_HEADER && buf[4] == GD_FRAME_DECIDE,
           "type byte after the length");
    TAP_OK(buf[0] == 0 && buf[1] == 0 &&
               (size_t)((buf[2] << 8) | buf[3]) == len - 4,
           "big-endian length counts type, id and payload");
    TAP_OK(dec(buf, len, &f, &used, err) == GD_PROTO_OK, "decode");
    TAP_OK(used == len && f.type == GD_FRAME_DECIDE && f.id == 0xdeadbeef,
           "type, id and size survive");
    TAP_OK(json_equal(f.payload, p), "the payload survives");
    json_decref(f.payload);

    /* every prefix is "again", never an error */
    int again = 1;
    for (size_t i = 0; i < len; i++) {
        if (dec(buf, i, &f, &used, err) != GD_PROTO_AGAIN) {
            again = 0;
        }
    }
    TAP_OK(again, "each of the %zu prefixes asks for more bytes", len);

    /* two frames back to back, replies out of order share one buffer */
    TAP_OK(gd_proto_encode(GD_FRAME_PING, 7, NULL, MAX, &buf2, &len2) == 0,
           "encode an empty PING");
    TAP_OK(len2 == GD_PROTO_HEADER, "an empty payload is a bare header");
    uint8_t *two = malloc(len + len2);
    memcpy(two, buf2, len2);
    memcpy(two + len2, buf, len);
    TAP_OK(dec(two, len + len2, &f, &used, err) == GD_PROTO_OK &&
               f.type == GD_FRAME_PING && f.id == 7 && f.payload == NULL &&
               used == len2,
           "the first frame of two");
    TAP_OK(dec(two + used, len + len2 - used, &f, &used, err) == GD_PROTO_OK &&
               f.id == 0xdeadbeef,
           "then the second");
    json_decref(f.payload);
    free(two);

    /* errors */
    uint8_t big[9] = {0x01, 0x00, 0x00, 0x00, GD_FRAME_PING, 0, 0, 0, 1};
    TAP_OK(dec(big, 4, &f, &used, err) == GD_PROTO_ERROR &&
               strstr(err, "exceeds"),
           "an oversize length is refused from its first 4 bytes: %s", err);

    uint8_t tiny[4] = {0, 0, 0, 2};
    TAP_OK(dec(tiny, 4, &f, &used, err) == GD_PROTO_ERROR,
           "a length shorter than a header: %s", err);

    uint8_t unknown[9] = {0, 0, 0, 5, 0x7f, 0, 0, 0, 1};
    TAP_OK(dec(unknown, 5, &f, &used, err) == GD_PROTO_ERROR &&
               strstr(err, "unknown"),
           "an unknown type is refused at once: %s", err);

    uint8_t zero[9] = {0, 0, 0, 5, 0, 0, 0, 0, 1};
    TAP_OK(dec(zero, 9, &f, &used, err) == GD_PROTO_ERROR, "type 0 is unknown");

    /*
     * a well-framed frame whose payload is refused: reported with its
     * type and id, skipped whole, and the next frame decodes
     */
    const char *bad[] = {"{\"a\":",
                         "[1,2]",
                         "\"x\"",
                         "{\"a\":1,\"a\":2}",
                         "nul\x01",
                         "{\"sub\":\"a\\u0000b\"}",
                         "{\"k\\u0000\":1}",
                         "{\"route\":\"/\xff\xfe\"}",
                         "{\"secret-text\": tru}",
                         "{\"a\":1} x"};
    uint8_t ping[GD_PROTO_HEADER] = {0, 0, 0, 5, GD_FRAME_PING, 0, 0, 0, 9};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = strlen(bad[i]);
        uint8_t *fr = malloc(GD_PROTO_HEADER + n + GD_PROTO_HEADER);
        fr[0] = 0;
        fr[1] = 0;
        fr[2] = (uint8_t)((n + 5) >> 8);
        fr[3] = (uint8_t)(n + 5);
        fr[4] = GD_FRAME_AUDIT;
        memset(fr + 5, 0, 4);
        fr[8] = (uint8_t)(i + 1);
        memcpy(fr + GD_PROTO_HEADER, bad[i], n);
        memcpy(fr + GD_PROTO_HEADER + n, ping, GD_PROTO_HEADER);
        err[0] = '\0';
        TAP_OK(dec(fr, GD_PROTO_HEADER + n + GD_PROTO_HEADER, &f, &used, err) ==
                       GD_PROTO_BAD_PAYLOAD &&
                   f.payload == NULL && f.type == GD_FRAME_AUDIT &&
                   f.id == i + 1 && used == GD_PROTO_HEADER + n,
               "a refused payload is that frame's problem: %s", err);
        TAP_OK(strstr(err, "secret") == NULL && strstr(err, "tru") == NULL &&
                   strstr(err, "sub") == NULL,
               "the reason does not quote the payload");
        TAP_OK(dec(fr + used, GD_PROTO_HEADER, &f, &used, err) == GD_PROTO_OK &&
                   f.type == GD_FRAME_PING && f.id == 9,
               "the next frame decodes");
        /* a prefix of it is still "again", never a refusal */
        TAP_OK(dec(fr, GD_PROTO_HEADER + n - 1, &f, &used, err) ==
                   GD_PROTO_AGAIN,
               "a part of it asks for more bytes");
        free(fr);
    }

    json_t *huge = json_object();
    char *s = malloc(MAX + 1);
    memset(s, 'x', MAX);
    s[MAX] = '\0';
    json_object_set_new(huge, "x", json_string(s));
    uint8_t *hb;
    size_t hl;
    TAP_OK(gd_proto_encode(GD_FRAME_AUDIT, 1, huge, MAX, &hb, &hl) == -1,
           "encode refuses a frame over the maximum");
    free(s);
    json_decref(huge);
    TAP_OK(gd_proto_encode(GD_FRAME_LAST, 1, NULL, MAX, &hb, &hl) == -1,
           "encode refuses an unknown type");

    TAP_OK(strcmp(gd_proto_type_name(GD_FRAME_VERDICT), "VERDICT") == 0 &&
               gd_proto_type_name(0) == NULL && gd_proto_type_name(200) == NULL,
           "type names");

    /* mutations: every outcome is a clean OK / AGAIN / ERROR / BAD */
    srand(20261121);
    long ok = 0, again_n = 0, error_n = 0, bad_n = 0, broken = 0;
    uint8_t *m = malloc(len);
    for (long i = 0; i < 200000; i++) {
        memcpy(m, buf, len);
        int flips = 1 + rand() % 4;
        for (int k = 0; k < flips; k++) {
            m[rand() % len] = (uint8_t)rand();
        }
        size_t n = (size_t)(rand() % (int)(len + 1));
        gd_proto_rc_t rc = dec(m, n, &f, &used, err);
        if (rc == GD_PROTO_OK) {
            ok++;
            if (used > n || used < GD_PROTO_HEADER) {
                broken++;
            }
            json_decref(f.payload);
        } else if (rc == GD_PROTO_AGAIN) {
            again_n++;
        } else if (rc == GD_PROTO_BAD_PAYLOAD) {
            bad_n++;
            if (used > n || used < GD_PROTO_HEADER || f.payload != NULL) {
                broken++;
            }
        } else {
            error_n++;
        }
    }
    free(m);
    TAP_OK(broken == 0,
           "200000 mutated frames: %ld ok, %ld again, %ld "
           "error, %ld bad payload, none out of bounds",
           ok, again_n, error_n, bad_n);

    free(buf);
    free(buf2);
    json_decref(p);
    return tap_done();
}
