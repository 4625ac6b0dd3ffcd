/*
 * gd_proto: the sidecar protocol codec, see gd_proto.h.
 */
#include "gd_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *gd_proto_names[GD_FRAME_LAST] = {
    NULL,  "HELLO", "DECIDE", "VERDICT", "AUDIT",
    "ACK", "PING",  "PONG",   "ERROR",   "SYNC",
};

const char *gd_proto_type_name(int type)
{
    if (type <= 0 || type >= GD_FRAME_LAST) {
        return NULL;
    }
    return gd_proto_names[type];
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* why jansson refused a payload, without quoting it */
static const char *json_why(const json_error_t *jerr)
{
    switch (json_error_code(jerr)) {
    case json_error_invalid_utf8:
        return "text that is not UTF-8";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "a NUL character in a string";
    case json_error_duplicate_key:
        return "a duplicate member name";
    case json_error_premature_end_of_input:
        return "it ends too early";
    case json_error_end_of_input_expected:
        return "bytes after the value";
    case json_error_stack_overflow:
        return "it is nested too deeply";
    case json_error_numeric_overflow:
        return "a number out of range";
    default:
        return "a syntax error";
    }
}

gd_proto_rc_t gd_proto_decode(const uint8_t *buf, size_t len, size_t max_frame,
                              gd_frame_t *frame, size_t *used, char *err,
                              size_t errlen)
{
    uint32_t flen;
    size_t plen;
    json_error_t jerr;

    frame->payload = NULL;

    if (len < 4) {
        return GD_PROTO_AGAIN;
    }

    flen = get_be32(buf);

    /* the length first: never wait for more than the peer may send */

    if (flen < GD_PROTO_HEADER - 4) {
        snprintf(err, errlen, "frame length %u is shorter than a header", flen);
        return GD_PROTO_ERROR;
    }

    if ((size_t)flen + 4 > max_frame) {
        snprintf(err, errlen, "frame of %zu bytes exceeds the maximum of %zu",
                 (size_t)flen + 4, max_frame);
        return GD_PROTO_ERROR;
    }

    if (len >= 5 && gd_proto_type_name(buf[4]) == NULL) {
        snprintf(err, errlen, "unknown frame type %u", buf[4]);
        return GD_PROTO_ERROR;
    }

    if (len < (size_t)flen + 4) {
        return GD_PROTO_AGAIN;
    }

    frame->type = (gd_frame_type_t)buf[4];
    frame->id = get_be32(buf + 5);
    plen = (size_t)flen - (GD_PROTO_HEADER - 4);

    if (plen > 0) {
        frame->payload = json_loadb((const char *)buf + GD_PROTO_HEADER, plen,
                                    JSON_REJECT_DUPLICATES, &jerr);

        /* well framed: the frame is skipped, the stream stays in step */
        *used = (size_t)flen + 4;

        if (frame->payload == NULL) {
            if (json_error_code(&jerr) == json_error_out_of_memory) {
                /* not the payload's fault: the connection starts over */
                snprintf(err, errlen, "out of memory");
                return GD_PROTO_ERROR;
            }
            /* jansson's text may quote the payload: only its kind */
            snprintf(err, errlen, "%s payload is not acceptable JSON: %s",
                     gd_proto_type_name(frame->type), json_why(&jerr));
            return GD_PROTO_BAD_PAYLOAD;
        }

        if (!json_is_object(frame->payload)) {
            json_decref(frame->payload);
            frame->payload = NULL;
            snprintf(err, errlen, "%s payload is not a JSON object",
                     gd_proto_type_name(frame->type));
            return GD_PROTO_BAD_PAYLOAD;
        }
    }

    *used = (size_t)flen + 4;
    return GD_PROTO_OK;
}

int gd_proto_header(gd_frame_type_t type, uint32_t id, size_t payload_len,
                    size_t max_frame, uint8_t out[GD_PROTO_HEADER])
{
    if (gd_proto_type_name((int)type) == NULL || max_frame < GD_PROTO_HEADER ||
        payload_len > max_frame - GD_PROTO_HEADER) {
        return -1;
    }

    put_be32(out, (uint32_t)(GD_PROTO_HEADER - 4 + payload_len));
    out[4] = (uint8_t)type;
    put_be32(out + 5, id);
    return 0;
}

int gd_proto_buf_add(gd_proto_buf_t *b, const void *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    if (b->len + size > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        uint8_t *more;

        while (cap < b->len + size) {
            cap *= 2;
        }
        more = realloc(b->data, cap);
        if (more == NULL) {
            return -1;
        }
        b->data = more;
        b->cap = cap;
    }

    memcpy(b->data + b->len, data, size);
    b->len += size;
    return 0;
}

/* json_dump_callback() output, appended to a buffer */
static int append_cb(const char *data, size_t size, void *arg)
{
    return gd_proto_buf_add(arg, data, size);
}

int gd_proto_append(gd_proto_buf_t *out, gd_frame_type_t type, uint32_t id,
                    const json_t *payload, size_t max_frame)
{
    static const uint8_t zero[GD_PROTO_HEADER];
    size_t start = out->len;

    if (gd_proto_type_name((int)type) == NULL ||
        (payload && !json_is_object(payload))) {
        return -1;
    }

    /* the header once the payload's length is known */
    if (append_cb((const char *)zero, GD_PROTO_HEADER, out) != 0 ||
        (payload &&
         json_dump_callback(payload, append_cb, out, JSON_COMPACT) != 0) ||
        gd_proto_header(type, id, out->len - start - GD_PROTO_HEADER, max_frame,
                        out->data + start) != 0) {
        out->len = start;
        return -1;
    }

    return 0;
}

int gd_proto_encode(gd_frame_type_t type, uint32_t id, const json_t *payload,
                    size_t max_frame, uint8_t **out, size_t *outlen)
{
    gd_proto_buf_t b = {0};

    if (gd_proto_append(&b, type, id, payload, max_frame) != 0) {
        free(b.data);
        return -1;
    }

    *out = b.data;
    *outlen = b.len;
    return 0;
}
