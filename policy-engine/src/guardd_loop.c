/*
 * guardd: the epoll loop.  Every descriptor in it is registered with a
 * gd_watch_t, whose handler the loop calls with the events: the listener
 * (guardd_conn.c), each connection (guardd_conn.c), the writer's eventfd
 * (guardd_journal.c) and the signalfd (here).
 */
#define _GNU_SOURCE

#include "guardd.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* the loop's clock (CLOCK_MONOTONIC, ms), read after each wait */
int64_t now_ms;
int sweep_needed; /* a connection may time out */
static int64_t sweep_due_ms;
static int epfd;
static int running = 1;

static void signals_handler(gd_watch_t *w, uint32_t events);

static gd_watch_t signals = {-1, signals_handler};

static int64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* how long the loop may wait: until the listener comes back, or the next
 * sweep of connections that may time out; -1: no limit */
static int loop_timeout(void)
{
    int64_t t = -1;

    if (accept_paused) {
        t = accept_resume_ms - now_ms;
    }
    if (sweep_needed && (t < 0 || sweep_due_ms - now_ms < t)) {
        t = sweep_due_ms - now_ms;
    }
    return t < 0 ? (accept_paused || sweep_needed ? 0 : -1) : (int)t;
}

/* signals arrive as file descriptor events on the loop; blocked in every
 * thread (call it before starting any) */
int loop_init(void)
{
    sigset_t mask;

    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signals.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (signals.fd < 0 || epfd < 0) {
        return -1;
    }

    loop_add(&signals, EPOLLIN);
    return 0;
}

void loop_add(gd_watch_t *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

void loop_mod(gd_watch_t *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void loop_del(gd_watch_t *w)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

/* SIGHUP reloads the policies; SIGTERM and SIGINT end the loop */
static void signals_handler(gd_watch_t *w, uint32_t events)
{
    struct signalfd_siginfo si;

    (void)events;

    while (read(w->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            gd_policy_set_t *set = policies_load();
            if (set == NULL) {
                logmsg("error",
                       "reload failed: keeping policy "
                       "version %s",
                       policies->version);
            } else {
                sink_policy(policies->version, set->version);
                gd_policy_set_free(policies);
                policies = set;
                logmsg("notice", "reloaded: policy version %s",
                       policies->version);
            }
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            running = 0;
        }
    }
}

/* runs until SIGTERM or SIGINT */
void loop_run(void)
{
    struct epoll_event events[GD_MAX_EVENTS];

    now_ms = monotonic_ms();
    sweep_due_ms = now_ms + GD_SWEEP_MS;

    while (running) {
        int n = epoll_wait(epfd, events, GD_MAX_EVENTS, loop_timeout());

        now_ms = monotonic_ms();

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            logmsg("emerg", "epoll_wait: %s", strerror(errno));
            break;
        }

        for (int i = 0; i < n; i++) {
            gd_watch_t *w = events[i].data.ptr;
            w->handler(w, events[i].events);
        }

        run_backlogs();
        listener_check();

        if (now_ms >= sweep_due_ms) {
            if (sweep_needed) {
                sweep();
                metrics_sweep();
            }
            sweep_due_ms = now_ms + GD_SWEEP_MS;
        }
    }
}
