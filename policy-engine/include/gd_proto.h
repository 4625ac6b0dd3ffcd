/*
 * gd_proto: the one codec of the Guard sidecar protocol, shared by the
 * nginx module, guardd and guardctl.  See docs/protocol.md.
 *
 * A frame: a 4-byte big-endian length, then a 1-byte type, a 4-byte
 * big-endian request id and the payload.  The length counts the type, the
 * id and the payload (so it is at least 5).  The payload is a JSON object
 * (jansson), or empty.
 */
#ifndef GD_PROTO_H
#define GD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define GD_PROTO_VERSION 1
#define GD_PROTO_HEADER 9 /* length + type + id */
#define GD_PROTO_MIN_FRAME 1024
#define GD_PROTO_DEFAULT_MAX_FRAME (64 * 1024)
#define GD_PROTO_MAX_FRAME (16 * 1024 * 1024)

typedef enum {
    GD_FRAME_HELLO = 1,
    GD_FRAME_DECIDE = 2,
    GD_FRAME_VERDICT = 3,
    GD_FRAME_AUDIT = 4,
    GD_FRAME_ACK = 5,
    GD_FRAME_PING = 6,
    GD_FRAME_PONG = 7,
    GD_FRAME_ERROR = 8,
    GD_FRAME_SYNC = 9,
    GD_FRAME_LAST
} gd_frame_type_t;

typedef struct {
    gd_frame_type_t type;
    uint32_t id;
    json_t *payload; /* a new reference, or NULL for an empty payload */
} gd_frame_t;

typedef enum {
    GD_PROTO_OK = 1,          /* a whole frame was decoded */
    GD_PROTO_AGAIN = 0,       /* more bytes are needed */
    GD_PROTO_ERROR = -1,      /* a framing error: close the connection */
    GD_PROTO_BAD_PAYLOAD = -2 /* a whole frame whose payload is refused */
} gd_proto_rc_t;

/* The name of a frame type ("DECIDE"), or NULL for an unknown type. */
const char *gd_proto_type_name(int type);

/*
 * Decodes the first frame of buf.  On GD_PROTO_OK, *used is the number
 * of bytes the frame took, and frame->payload must be json_decref()ed.
 *
 * On GD_PROTO_ERROR (a framing error: the stream cannot be read on, so
 * the connection must be closed), err (errlen bytes) says why: a frame
 * larger than max_frame, shorter than a header, or of an unknown type.
 * The length is checked before anything else, so a peer can never make
 * the decoder wait for more than max_frame bytes.
 *
 * On GD_PROTO_BAD_PAYLOAD, the frame is whole and well framed, but its
 * payload is not an acceptable JSON object (not JSON, not UTF-8, a NUL
 * in a string, not an object, a duplicate member name): frame->type,
 * frame->id and *used are set, frame->payload is NULL, and err says why
 * (never quoting the payload).  The stream stays in step: the caller
 * answers that request (ERROR) and decodes the next frame at used.
 */
gd_proto_rc_t gd_proto_decode(const uint8_t *buf, size_t len, size_t max_frame,
                              gd_frame_t *frame, size_t *used, char *err,
                              size_t errlen);

/* a growing output buffer (malloc()ed; data may be NULL when empty) */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} gd_proto_buf_t;

/* Appends size bytes to b, growing it.  0, or -1 (no memory: b as it was). */
int gd_proto_buf_add(gd_proto_buf_t *b, const void *data, size_t size);

/*
 * Appends a frame to out, serializing payload (may be NULL) straight into
 * it.  Returns -1 (out unchanged) when the frame would exceed max_frame
 * or on no memory.
 */
int gd_proto_append(gd_proto_buf_t *out, gd_frame_type_t type, uint32_t id,
                    const json_t *payload, size_t max_frame);

/*
 * Encodes a frame into a new malloc()ed buffer.  payload may be NULL.
 * Returns -1 when the frame would exceed max_frame or on no memory.
 */
int gd_proto_encode(gd_frame_type_t type, uint32_t id, const json_t *payload,
                    size_t max_frame, uint8_t **out, size_t *outlen);

/*
 * Writes the header of a frame whose payload (payload_len bytes, a JSON
 * object already serialized, or none) the caller sends after it.
 * Returns -1 for an unknown type or a frame that would exceed max_frame.
 */
int gd_proto_header(gd_frame_type_t type, uint32_t id, size_t payload_len,
                    size_t max_frame, uint8_t out[GD_PROTO_HEADER]);

#endif
