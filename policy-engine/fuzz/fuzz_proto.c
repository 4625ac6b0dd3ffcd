/*
 * libFuzzer target for gd_proto_decode(): `make -C policy-engine fuzz`
 * (needs clang).  Decodes every frame of the input, as a server reading
 * one connection would, and checks that no frame claims more bytes than
 * it was given.
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
        if (rc != GD_PROTO_OK) {
            break;
        }
        if (used > size) {
            abort();
        }
        json_decref(f.payload);
        data += used;
        size -= used;
    }

    return 0;
}
