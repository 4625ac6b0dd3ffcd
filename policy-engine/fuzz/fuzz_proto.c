/*
 * libFuzzer target for gd_proto_decode(): `make -C policy-engine fuzz`
 * (needs clang).  Decodes every frame of the input, as a server reading
 * one connection would, and checks that no frame claims more bytes than
 * it was given, that a refused payload still consumes its whole frame
 * (the stream stays in step), and that encoding a decoded frame again
 * gives a frame that decodes to the same thing.
 */
#include "gd_proto.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gd_frame_t f;
    size_t used;
    char err[256];

    while (size > 0) {
        gd_proto_rc_t rc =
            gd_proto_decode(data, size, 4096, &f, &used, err, sizeof(err));
        if (rc == GD_PROTO_BAD_PAYLOAD) {
            /* answered with an ERROR by the caller, then the next frame */
            if (used > size || used < GD_PROTO_HEADER || f.payload != NULL ||
                gd_proto_type_name(f.type) == NULL) {
                abort();
            }
            data += used;
            size -= used;
            continue;
        }
        if (rc != GD_PROTO_OK) {
            break;
        }
        if (used > size) {
            abort();
        }

        uint8_t *again;
        size_t len, used2;
        gd_frame_t g;

        if (gd_proto_encode(f.type, f.id, f.payload, 65536, &again, &len) ==
            0) {
            if (gd_proto_decode(again, len, 65536, &g, &used2, err,
                                sizeof(err)) != GD_PROTO_OK ||
                used2 != len || g.type != f.type || g.id != f.id ||
                (f.payload == NULL) != (g.payload == NULL) ||
                (f.payload && !json_equal(f.payload, g.payload))) {
                abort();
            }
            json_decref(g.payload);
            free(again);
        }

        json_decref(f.payload);
        data += used;
        size -= used;
    }

    return 0;
}
