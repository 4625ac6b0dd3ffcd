/*
 * decide_bench: DECIDE round trips to a running guardd, against a raw
 * Unix-socket ping-pong of the same size, and guardd's decisions per
 * second (it serves on one loop thread: per core).  Used by
 * bench/sidecar.sh.
 *
 *   decide_bench SOCKET [ROUNDTRIPS] [SECONDS]
 */
#define _GNU_SOURCE

#include "gd_proto.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* reads one frame into buf; returns its length or -1 */
static ssize_t read_frame(int fd, uint8_t *buf, size_t cap)
{
    uint32_t len;

    if (read_all(fd, buf, 4) != 0) {
        return -1;
    }
    len = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) |
          ((uint32_t)buf[2] << 8) | buf[3];
    if (len + 4 > cap || read_all(fd, buf + 4, len) != 0) {
        return -1;
    }
    return (ssize_t)len + 4;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror(path);
        exit(1);
    }
    return fd;
}

static void *echo_main(void *arg)
{
    int fd = *(int *)arg;
    uint8_t buf[65536];

    for (;;) {
        ssize_t n = read_frame(fd, buf, sizeof(buf));
        if (n < 0 || write_all(fd, buf, (size_t)n) != 0) {
            return NULL;
        }
    }
}

static void report(const char *name, double *lat, int n)
{
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    printf("%-22s p50 %8.1f us   p99 %8.1f us\n", name, lat[n / 2],
           lat[(int)(n * 0.99)]);
}

int main(int argc, char **argv)
{
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    double seconds = argc > 3 ? atof(argv[3]) : 3;
    uint8_t *decide, buf[65536];
    size_t dlen;
    double *lat_d, *lat_r;
    int fd, sv[2];
    pthread_t echo;

    if (argc < 2) {
        fprintf(stderr, "usage: decide_bench SOCKET [N] [SECONDS]\n");
        return 2;
    }

    json_t *req =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:{s:s, s:[s]}}", "tenant",
                  "acme", "subject", "bench", "method", "GET", "route",
                  "/api/orders", "client_ip", "127.0.0.1", "body_size", 0,
                  "claims", "sub", "bench", "roles", "reader");
    gd_proto_encode(GD_FRAME_DECIDE, 1, req, sizeof(buf), &decide, &dlen);
    json_decref(req);

    lat_d = malloc(sizeof(double) * (size_t)n);
    lat_r = malloc(sizeof(double) * (size_t)n);

    /* DECIDE round trips, one at a time */
    fd = connect_unix(argv[1]);
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        if (write_all(fd, decide, dlen) != 0 ||
            read_frame(fd, buf, sizeof(buf)) < 0) {
            fprintf(stderr, "guardd closed the connection\n");
            return 1;
        }
        lat_d[i] = now_us() - t0;
    }
    size_t vlen =
        (size_t)((buf[0] << 24) | (buf[1] << 16) | (buf[2] << 8) | buf[3]) + 4;

    /* the same sizes over a raw Unix socket pair with an echo thread */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pthread_create(&echo, NULL, echo_main, &sv[1]);
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        write_all(sv[0], decide, dlen);
        read_frame(sv[0], buf, sizeof(buf));
        lat_r[i] = now_us() - t0;
    }
    close(sv[0]);

    printf("request %zu bytes, verdict %zu bytes, %d round trips each\n", dlen,
           vlen, n);
    report("DECIDE -> VERDICT", lat_d, n);
    report("raw Unix ping-pong", lat_r, n);
    printf("p99 ratio (DECIDE / raw): %.2f   p50 ratio: %.2f\n",
           lat_d[(int)(n * 0.99)] / lat_r[(int)(n * 0.99)],
           lat_d[n / 2] / lat_r[n / 2]);

    /* throughput: a window of 64 DECIDEs in flight on one connection */
    long done = 0, sent = 0;
    double t0 = now_us(), end = t0 + seconds * 1e6;
    while (now_us() < end || done < sent) {
        while (sent - done < 64 && now_us() < end) {
            write_all(fd, decide, dlen);
            sent++;
        }
        if (read_frame(fd, buf, sizeof(buf)) < 0) {
            fprintf(stderr, "guardd closed the connection\n");
            return 1;
        }
        done++;
    }
    printf("guardd decisions per second (one loop thread): %.0f\n",
           done / ((now_us() - t0) / 1e6));

    close(fd);
    free(decide);
    free(lat_d);
    free(lat_r);
    return 0;
}
