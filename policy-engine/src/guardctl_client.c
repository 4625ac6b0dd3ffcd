/* guardctl: a connection to guardd, frames sent and awaited within
 * GUARDCTL_TIMEOUT_MS */
#include "guardctl.h"

#include "gd_soc.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int wait_fd(conn_t *c, short events)
{
    for (;;) {
        int64_t left = c->deadline - gd_soc_now_ms();
        struct pollfd p = {.fd = c->fd, .events = events};
        int n;

        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        n = poll(&p, 1, (int)left);
        if (n > 0) {
            return 0;
        }
        if (n < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static int send_frame(conn_t *c, gd_frame_type_t type, uint32_t id,
                      json_t *payload, size_t max_frame, char *err,
                      size_t errlen)
{
    uint8_t *frame;
    size_t len, off = 0;

    if (gd_proto_encode(type, id, payload, max_frame, &frame, &len) != 0) {
        snprintf(err, errlen,
                 "the %s frame would be larger than %zu bytes (guardd's "
                 "limit): shorten the note",
                 gd_proto_type_name(type), max_frame);
        return -1;
    }

    while (off < len) {
        ssize_t n;

        if (wait_fd(c, POLLOUT) != 0) {
            break;
        }
        n = send(c->fd, frame + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                continue;
            }
            break;
        }
        off += (size_t)n;
    }

    free(frame);
    if (off < len) {
        snprintf(err, errlen, "sending to guardd: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* the next frame from guardd; 0, or -1 with err set */
static int recv_frame(conn_t *c, gd_frame_t *f, char *err, size_t errlen)
{
    for (;;) {
        size_t used;
        char derr[256];
        ssize_t n;
        gd_proto_rc_t rc =
            gd_proto_decode(c->buf, c->len, GD_PROTO_DEFAULT_MAX_FRAME, f,
                            &used, derr, sizeof(derr));

        if (rc == GD_PROTO_OK) {
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            return 0;
        }
        if (rc == GD_PROTO_ERROR || rc == GD_PROTO_BAD_PAYLOAD) {
            snprintf(err, errlen, "guardd sent a bad frame: %s", derr);
            return -1;
        }

        if (wait_fd(c, POLLIN) != 0) {
            snprintf(err, errlen, "no answer from guardd within %d s",
                     GUARDCTL_TIMEOUT_MS / 1000);
            return -1;
        }
        n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
        if (n == 0) {
            snprintf(err, errlen, "guardd closed the connection");
            return -1;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                continue;
            }
            snprintf(err, errlen, "reading from guardd: %s", strerror(errno));
            return -1;
        }
        c->len += (size_t)n;
    }
}

/* waits for the answer to request id: 0 with *answer (a new reference) */
static int await(conn_t *c, uint32_t id, gd_frame_type_t want, json_t **answer,
                 char *err, size_t errlen)
{
    for (;;) {
        gd_frame_t f;

        if (recv_frame(c, &f, err, errlen) != 0) {
            return -1;
        }
        if (f.id != id) {
            json_decref(f.payload); /* not ours */
            continue;
        }
        if (f.type == GD_FRAME_ERROR) {
            snprintf(err, errlen, "guardd refused it: %s: %s",
                     gd_soc_str(f.payload, "code")
                         ? gd_soc_str(f.payload, "code")
                         : "error",
                     gd_soc_str(f.payload, "message")
                         ? gd_soc_str(f.payload, "message")
                         : "");
            json_decref(f.payload);
            return -1;
        }
        if (f.type != want) {
            snprintf(err, errlen, "guardd answered %s instead of %s",
                     gd_proto_type_name(f.type) ? gd_proto_type_name(f.type)
                                                : "an unknown frame",
                     gd_proto_type_name(want));
            json_decref(f.payload);
            return -1;
        }
        *answer = f.payload;
        return 0;
    }
}

/* sends request id and waits for its answer, of the type want: 0 with
 * *answer (a new reference), or -1 with err set */
int exchange(conn_t *c, gd_frame_type_t type, uint32_t id, json_t *payload,
             size_t max_frame, gd_frame_type_t want, json_t **answer, char *err,
             size_t errlen)
{
    if (send_frame(c, type, id, payload, max_frame, err, errlen) != 0) {
        return -1;
    }
    return await(c, id, want, answer, err, errlen);
}

const char *guardd_socket(void)
{
    const char *path = getenv("GUARD_SOCKET");
    return path && *path ? path : "/run/guard/guardd.sock";
}

int client_open(const char *path, conn_t **out, size_t *max_frame,
                json_t **hello_out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    json_t *hello, *ans = NULL, *mf;
    char err[512];
    conn_t *c;

    *out = NULL;
    *max_frame = GD_PROTO_DEFAULT_MAX_FRAME;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "guardctl: %s: the socket path is too long\n", path);
        return 1;
    }
    strcpy(sa.sun_path, path);

    c = calloc(1, sizeof(conn_t));
    if (c == NULL) {
        fprintf(stderr, "guardctl: out of memory\n");
        return 1;
    }
    c->deadline = gd_soc_now_ms() + GUARDCTL_TIMEOUT_MS;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr,
                "guardctl: cannot reach guardd at %s: %s\n"
                "guardctl: is guardd running? name its socket (guardd.conf's "
                "\"listen\") with --socket PATH or set GUARD_SOCKET=PATH\n",
                path, strerror(errno));
        client_close(c);
        return 1;
    }

    hello =
        json_pack("{s:i, s:I, s:s}", "version", GD_PROTO_VERSION, "max_frame",
                  (json_int_t)GD_PROTO_DEFAULT_MAX_FRAME, "node", "guardctl");
    if (exchange(c, GD_FRAME_HELLO, 1, hello, *max_frame, GD_FRAME_HELLO, &ans,
                 err, sizeof(err)) != 0) {
        fprintf(stderr, "guardctl: %s\n", err);
        json_decref(hello);
        client_close(c);
        return 1;
    }
    json_decref(hello);

    /* the smaller of the two maximum frames */
    mf = json_object_get(ans, "max_frame");
    if (json_is_integer(mf) && json_integer_value(mf) >= GD_PROTO_MIN_FRAME &&
        (size_t)json_integer_value(mf) < *max_frame) {
        *max_frame = (size_t)json_integer_value(mf);
    }

    if (hello_out) {
        *hello_out = ans;
    } else {
        json_decref(ans);
    }
    *out = c;
    return 0;
}

void client_close(conn_t *c)
{
    if (c == NULL) {
        return;
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c);
}
