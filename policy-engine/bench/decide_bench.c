/*
 * decide_bench: DECIDE round trips to a running guardd, against a raw
 * Unix-socket ping-pong of the same sizes (a DECIDE out, a VERDICT back,
 * answered by a separate process), and guardd's decisions per second,
 * and, given guardd's pid, per second of guardd's CPU time (per core: the
 * load generator shares this machine's cores).  Used by bench/sidecar.sh.
 *
 *   decide_bench SOCKET [ROUNDTRIPS] [SECONDS] [GUARDD_PID]
 */
#define _GNU_SOURCE

#include "gd_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
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

/* moves all n bytes: write(2) when out, else read(2) (0 bytes: -1) */
static int io_all(int fd, uint8_t *p, size_t n, int out)
{
    while (n) {
        ssize_t k = out ? write(fd, p, n) : read(fd, p, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 || (k == 0 && !out)) {
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    return io_all(fd, (uint8_t *)p, n, 1);
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    return io_all(fd, p, n, 0);
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

/* the raw peer: answers each frame of the request's size with a frame of
 * the verdict's size, from another process, as guardd does */
static void echo_main(int fd, const uint8_t *answer, size_t alen)
{
    uint8_t buf[65536];

    for (;;) {
        if (read_frame(fd, buf, sizeof(buf)) < 0 ||
            write_all(fd, answer, alen) != 0) {
            _exit(0);
        }
    }
}

/* user + system CPU seconds of a process, or -1 */
static double cpu_seconds(const char *pid)
{
    char path[64], text[1024], *p;
    unsigned long ut, st;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%s/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';

    /* after the command name in parentheses: fields 3 and on */
    p = strrchr(text, ')');
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2) {
        return -1;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
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
    pid_t echo;
    const char *gpid = argc > 4 ? argv[4] : NULL;

    if (argc < 2) {
        fprintf(stderr,
                "usage: decide_bench SOCKET [N] [SECONDS] [GUARDD_PID]\n");
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
    uint8_t *verdict = malloc(vlen);
    memcpy(verdict, buf, vlen);

    /* the same sizes over a raw Unix socket pair, echoed by a process */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    echo = fork();
    if (echo == 0) {
        close(sv[0]);
        echo_main(sv[1], verdict, vlen);
    }
    close(sv[1]);
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        write_all(sv[0], decide, dlen);
        read_frame(sv[0], buf, sizeof(buf));
        lat_r[i] = now_us() - t0;
    }
    close(sv[0]);
    waitpid(echo, NULL, 0);
    free(verdict);

    printf("request %zu bytes, verdict %zu bytes, %d round trips each\n", dlen,
           vlen, n);
    report("DECIDE -> VERDICT", lat_d, n);
    report("raw Unix ping-pong", lat_r, n);
    printf("p99 ratio (DECIDE / raw): %.2f   p50 ratio: %.2f\n",
           lat_d[(int)(n * 0.99)] / lat_r[(int)(n * 0.99)],
           lat_d[n / 2] / lat_r[n / 2]);

    /*
     * throughput: a window of 64 DECIDEs in flight on one connection,
     * written and read in batches so that the generator, which shares
     * the cores, takes as little CPU as it can
     */
    enum { WINDOW = 64 };
    static uint8_t rbuf[1 << 20];
    uint8_t *batch = malloc(dlen * WINDOW);
    long done = 0, sent = WINDOW;
    size_t have = 0;
    double cpu0 = gpid ? cpu_seconds(gpid) : -1;
    double t0 = now_us(), end = t0 + seconds * 1e6;

    for (int i = 0; i < WINDOW; i++) {
        memcpy(batch + (size_t)i * dlen, decide, dlen);
    }
    write_all(fd, batch, dlen * WINDOW);

    while (done < sent) {
        ssize_t r = read(fd, rbuf + have, sizeof(rbuf) - have);
        size_t off = 0;
        long got = 0;

        if (r <= 0) {
            fprintf(stderr, "guardd closed the connection\n");
            return 1;
        }
        have += (size_t)r;
        while (have - off >= 4) {
            size_t len =
                ((size_t)rbuf[off] << 24 | (size_t)rbuf[off + 1] << 16 |
                 (size_t)rbuf[off + 2] << 8 | rbuf[off + 3]) +
                4;
            if (have - off < len) {
                break;
            }
            off += len;
            got++;
        }
        memmove(rbuf, rbuf + off, have - off);
        have -= off;
        done += got;
        if (got && now_us() < end) {
            write_all(fd, batch, dlen * (size_t)got);
            sent += got;
        }
    }

    double wall = (now_us() - t0) / 1e6;
    printf("guardd decisions per second (one loop thread): %.0f\n",
           done / wall);
    if (cpu0 >= 0) {
        double cpu = cpu_seconds(gpid) - cpu0;
        printf("guardd CPU: %.2f s in %.2f s; decisions per CPU-second "
               "(per core): %.0f\n",
               cpu, wall, cpu > 0 ? done / cpu : 0);
    }
    free(batch);

    close(fd);
    free(decide);
    free(lat_d);
    free(lat_r);
    return 0;
}
