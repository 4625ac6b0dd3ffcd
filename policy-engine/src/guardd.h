/*
 * guardd's private header: what its files share.
 *
 *   guardd.c          main: start-up, privileges, shut-down
 *   guardd_conf.c     guardd.conf and the policies
 *   guardd_log.c      log lines, and conditions logged once in a while
 *   guardd_loop.c     the epoll loop: one handler per file descriptor,
 *                     the clock, signals
 *   guardd_conn.c     the listener and the connections: reading,
 *                     answering, backpressure, timeouts
 *   guardd_frames.c   the frame handlers (HELLO, PING, DECIDE, AUDIT)
 *   guardd_journal.c  the writer thread: journal appends, group commits,
 *                     and the ACKs back on the loop
 *   guardd_spill.c    spill files, ingested by the writer thread
 *   guardd_metrics.c  the counters, and the Prometheus endpoint (HTTP GET
 *                     /metrics on a Unix socket or a loopback port)
 *   guardd_sink.c     the sinks: threads that publish the journal behind
 *                     the writer, durable cursors, dead letters; and
 *                     guardd's lifecycle and policy records
 *   guardd_sink_redis.c  the Redis Streams sink (hiredis)
 *   guardd_sink_pg.c     the PostgreSQL sink (libpq)
 */
#ifndef GUARDD_H
#define GUARDD_H

#include "gd_audit.h"
#include "gd_idset.h"
#include "gd_journal.h"
#include "gd_policy.h"
#include "gd_proto.h"
#include "gd_risk.h"
#include "gd_uuid.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define GD_MAX_EVENTS 64
#define GD_READ_CHUNK 16384
#define GD_OUT_HIGH_WATER (256 * 1024)

/* connection limits (guardd.conf) */
#define GD_FD_RESERVE 32 /* descriptors kept for the journal, spill, ... */
#define GD_MIN_CONNECTIONS 4
#define GD_MAX_OUTPUT_DEFAULT (1024 * 1024)
#define GD_IDLE_DEFAULT 60
#define GD_STUCK_DEFAULT 30
#define GD_ACCEPT_PAUSE_MS 100 /* out of descriptors: listener off */
#define GD_SWEEP_MS 1000       /* idle and stuck connections checked */
#define GD_LOG_EVERY_MS 10000  /* a repeated condition: one line each */

#define GD_DEDUPE_DEFAULT 262144
#define GD_DEDUPE_MIN 1024
#define GD_SPILL_ORPHAN_DEFAULT 60
#define GD_SPILL_MAX_FILE ((off_t)256 * 1024 * 1024)
#define GD_SPILL_INTERVAL_MS 1000
#define GD_SPILL_MAX_STUCK 4096

/* configuration (guardd.conf, JSON) */

typedef struct {
    char *listen;
    mode_t socket_mode;
    char *socket_group;
    char *user;
    char *pid_file;
    char *policies;
    char *journal_dir;
    size_t segment_size;
    size_t max_frame;
    char *node;
    size_t dedupe_window;
    char *spill; /* NULL: no spill ingestion */
    long spill_orphan_after;
    size_t max_connections;
    long idle_timeout;       /* s, before HELLO; 0: never */
    long hello_idle_timeout; /* s, after HELLO; 0: never */
    size_t max_output;       /* answers queued per connection */
    long stuck_timeout;      /* s over max_output before closing */
    long nofile;             /* RLIMIT_NOFILE (soft), -1: unlimited */
    char *metrics;           /* the Prometheus endpoint; NULL: none */
} gd_conf_t;

/*
 * What one epoll registration carries: its descriptor and the handler
 * the loop calls with the events epoll reported.
 */

typedef struct gd_watch_s gd_watch_t;

typedef void (*gd_watch_handler_pt)(gd_watch_t *w, uint32_t events);

struct gd_watch_s {
    int fd;
    gd_watch_handler_pt handler;
};

/* a connection */

typedef struct gd_conn_s gd_conn_t;

struct gd_conn_s {
    gd_watch_t watch; /* first: what epoll hands back is the connection */
    uint64_t serial;  /* never reused: ACKs find their connection by it */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_cap;
    size_t max_frame;
    int want_write;    /* EPOLLOUT is on */
    int paused;        /* EPOLLIN is off: answers over max_output */
    int backlog;       /* whole frames wait in `in`: decode before reading */
    int hello;         /* it said HELLO (the nginx module's pool does) */
    int64_t active_ms; /* last frame received or byte sent */
    int64_t paused_ms; /* when it was paused */
    gd_conn_t *next;
};

/* an AUDIT on its way to the journal, and back as an ACK */

typedef struct gd_job_s gd_job_t;

struct gd_job_s {
    uint64_t conn;
    uint32_t id;
    json_t *record;
    uint8_t rid[GD_AUDIT_ID_LEN]; /* the record's "id" */
    int ok;
    int duplicate; /* ok, and journaled before: not appended again */
    char error[128];
    gd_job_t *next;
};

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    gd_job_t *todo, **todo_tail;
    gd_job_t *done, **done_tail;
    int stop;
    gd_watch_t acks; /* an eventfd: the writer tells the loop */
    gd_journal_t *journal;
    uint64_t commits, records, duplicates, spill_records; /* under lock */
    _Atomic uint64_t spill_files; /* the writer's, read by /metrics */
    /* the writer thread's own, read by main only after joining it */
    gd_idset_t *seen; /* the ids of the last dedupe_window records */
    int broken;       /* an fsync failed: nothing is appended any more */
    int spill_dir_failed;
    char **spill_stuck; /* ingested files that could not be removed */
    size_t spill_nstuck;
} gd_writer_t;

/* a condition logged at most once per GD_LOG_EVERY_MS */
typedef struct {
    int64_t last_ms;
    int logged;
    uint64_t count; /* since the last line */
} gd_every_t;

/*
 * Metrics (guardd_metrics.c).  Every counter has one thread that writes
 * it: the loop (decisions, connections, rejections) or the writer
 * (fsync); the loop reads them all for /metrics.  They are C11 atomics,
 * written by their one writer with relaxed loads and stores (no locked
 * instruction on the decision path); journal records, group commits and
 * duplicates stay in gd_writer_t, under its lock.
 */

#define GD_METRICS_MAX_REQUEST 8192 /* bytes of a request's head */
#define GD_METRICS_MAX_CONNS 8      /* scrapes served at once */
#define GD_METRICS_TIMEOUT_MS 5000  /* a scrape's whole time */
#define GD_HIST_MAX 16              /* buckets of a histogram, +Inf aside */

typedef enum {
    GD_REJECT_BAD_PAYLOAD = 0, /* ERROR bad_payload */
    GD_REJECT_BAD_REQUEST,     /* ERROR bad_request */
    GD_REJECT_UNAVAILABLE,     /* ERROR unavailable */
    GD_REJECT_FRAMING,         /* a framing error: connection closed */
    GD_REJECT_MAX_CONNECTIONS, /* a connection over max_connections */
    GD_REJECT_N
} gd_reject_t;

typedef struct {
    const uint64_t *le; /* upper bounds in µs, ascending */
    size_t n;
    _Atomic uint64_t bucket[GD_HIST_MAX + 1]; /* per bound, then +Inf */
    _Atomic uint64_t sum;                     /* µs */
} gd_hist_t;

typedef struct {
    _Atomic uint64_t decisions[3][2]; /* [gd_risk_decision_t][shadow] */
    gd_hist_t decide_us;
    gd_hist_t fsync_us;
    _Atomic uint64_t connections_total;
    _Atomic uint64_t rejected[GD_REJECT_N];
    double start_time; /* s since the epoch */
} gd_metrics_t;

/* adds n to a counter that only the calling thread writes */
static inline void metric_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* guardd_log.c */
extern int verbose;
void logmsg(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int every_due(gd_every_t *e, uint64_t *more);

/* guardd_conf.c */
extern gd_conf_t conf;
extern gd_policy_set_t *policies;
int conf_load(const char *path);
gd_policy_set_t *policies_load(void);

/* guardd_loop.c */
extern int64_t now_ms;   /* the loop's clock (CLOCK_MONOTONIC, ms) */
extern int sweep_needed; /* a connection may time out */
int loop_init(void);
void loop_add(gd_watch_t *w, uint32_t events);
void loop_mod(gd_watch_t *w, uint32_t events);
void loop_del(gd_watch_t *w);
void loop_run(void);

/* guardd_conn.c */
extern gd_conn_t *conns;
extern size_t nconns;     /* connections open */
extern int accept_paused; /* out of descriptors: listener out of epoll */
extern int64_t accept_resume_ms;
int unix_listen(const char *path);
int listen_socket(void);
void listener_start(void);
void listener_check(void);
void listener_stop(void);
gd_conn_t *conn_find(uint64_t serial);
void conn_close(gd_conn_t *c, const char *why);
int conn_flush(gd_conn_t *c);
int conn_send(gd_conn_t *c, gd_frame_type_t type, uint32_t id, json_t *payload);
int conn_error(gd_conn_t *c, uint32_t id, const char *code,
               const char *message);
void sweep(void);
void run_backlogs(void);
void conns_finish(void);

/* guardd_frames.c */
extern gd_risk_state_t *risk_state;
extern gd_uuid_gen_t uuid_gen;
int handle_frame(gd_conn_t *c, gd_frame_t *f);
int handle_bad_payload(gd_conn_t *c, gd_frame_t *f, const char *why);

/* guardd_journal.c */
extern gd_writer_t writer;
int record_id(json_t *rec, uint8_t rid[GD_AUDIT_ID_LEN]);
int record_set_id(json_t *rec, const uint8_t rid[GD_AUDIT_ID_LEN]);
void journal_broken(const char *what);
int journal_sync(void);
int journal_once(json_t *rec, const uint8_t rid[GD_AUDIT_ID_LEN], char *err,
                 size_t errlen);
int journal_open(void);
int journal_enqueue(uint64_t conn, uint32_t id, json_t *record,
                    const uint8_t rid[GD_AUDIT_ID_LEN]);
int stop_requested(void);
void deadline_in(struct timespec *ts, long ms);
int deadline_passed(const struct timespec *ts);
int writer_start(void);
void writer_stop(void);
void writer_close(void);
void deliver_acks(void);

/* guardd_spill.c */
int spill_round(void);

/*
 * The sinks (guardd_sink.c).  Each sink's thread reads the journal behind
 * the writer and publishes batches through its ops; its counters are
 * written by its thread alone (metric_add) and read by /metrics.
 */

#define GD_SINK_N 2
#define GD_SINK_BATCH_DEFAULT 500
#define GD_SINK_BATCH_MAX 100000
#define GD_SINK_BACKOFF_MIN_MS 100
#define GD_SINK_BACKOFF_MAX_MS 5000
#define GD_SINK_DRAIN_MS 3000          /* at shut-down, at most */
#define GD_SINK_LINGER_MS 200          /* linger_ms's default */
#define GD_SINK_LINGER_MAX_MS 60000    /* and its most */
#define GD_SINK_NICE 10                /* the sink threads' nice value */
#define GD_SINK_MAX_LINE (1024 * 1024) /* a cursor's line read back */
#define GD_SINK_STREAM_DEFAULT "guard:records"

typedef struct gd_sink_s gd_sink_t;

/* one journal record of a batch */
typedef struct {
    char *line; /* as written, without its newline */
    size_t len;
    json_t *rec;     /* parsed (sink_record); NULL when it is not JSON */
    int parsed;      /* rec is what the line parses to */
    void *arena;     /* guardd_sink.c's: where rec is parsed */
    unsigned seg;    /* journal-<seg>.jsonl */
    uint64_t lineno; /* 1-based */
    off_t end;       /* the offset after its newline */
    int rejected;    /* to the dead-letter file, with error */
    char error[256];
} gd_srec_t;

typedef struct {
    const char *name;
    int (*connect)(gd_sink_t *s, char *err, size_t errlen);
    void (*disconnect)(gd_sink_t *s);
    /*
     * Publishes the records of r[0..n-1] that are not rejected: 0 when the
     * sink confirmed them (*added and *dups counted; a record it refused
     * alone is marked rejected with its error), 1 when it refused the
     * batch as a whole because of its content (err set: the batch is
     * split), -1 when the sink is down or failed otherwise (err set: the
     * batch is tried again after a reconnect).
     */
    int (*publish)(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                   uint64_t *dups, char *err, size_t errlen);
    /*
     * 1: publish sends the lines as they are, and the sink itself refuses
     * a line that is not a JSON object (as a data error of its batch):
     * the records are not parsed when they are read, only the few that
     * guardd_sink.c needs (sink_record).  0: every record is parsed when
     * it is read, and a line that is not a JSON object is rejected then.
     */
    int raw;
    /*
     * Optional, both or neither: publish in two halves, so that the next
     * batch is read while the sink works on this one.  send sends the
     * batch (0, else as publish: -1 down, 1 refused as a whole); finish
     * awaits the sink's answer and returns as publish does.  publish is
     * then send and finish.
     */
    int (*send)(gd_sink_t *s, gd_srec_t *r, size_t n, char *err, size_t errlen);
    int (*finish)(gd_sink_t *s, gd_srec_t *r, size_t n, uint64_t *added,
                  uint64_t *dups, char *err, size_t errlen);
    /*
     * Optional, with send: the batch read ahead (r[0..n-1], parsed),
     * given while the sink works on the one before, to make ready what
     * send will send for it; it sends nothing, and send must check that
     * what it made is for the batch it is given.
     */
    void (*prepare)(gd_sink_t *s, gd_srec_t *r, size_t n);
} gd_sink_ops_t;

struct gd_sink_s {
    const gd_sink_ops_t *ops;
    /* guardd.conf */
    char *socket, *host, *stream, *dsn;
    int port;
    long long maxlen;
    size_t batch;
    long long linger_ms; /* the wait after a batch that was not full */
    /* the connection (the sink's own) */
    void *conn;
    int connected;
    /* the durable cursor: what the sink confirmed */
    unsigned seg;
    uint64_t line;
    off_t off;
    char hash[GD_JOURNAL_HASH_LEN + 1];
    char *cursor_path, *dead_path;
    /* the reader, ahead of the cursor by the batch in flight */
    unsigned rseg, fseg;
    uint64_t rline;
    off_t roff;
    FILE *f;
    uint64_t seen_records;
    int64_t log_last_ms;
    pthread_t thread;
    int started;
    /* counters */
    uint64_t base; /* records behind the cursor at start */
    _Atomic uint64_t done, published, duplicates, errors, dead_letters;
    _Atomic uint64_t up;      /* connected */
    _Atomic uint64_t head_ms; /* the ts_ms of the oldest record not done */
};

extern gd_sink_t *sinks[GD_SINK_N];
extern size_t nsinks;
extern const gd_sink_ops_t gd_sink_redis, gd_sink_pg;
int sinks_conf(json_t *v, const char *path);
int sinks_init(void);
int sinks_start(void);
void sinks_stop(void);
void sink_appended(void);
void sink_durable(void);
uint64_t sink_lag(gd_sink_t *s);
double sink_lag_seconds(gd_sink_t *s);
void sink_lifecycle(const char *event);
void sink_policy(const char *previous, const char *version);
json_t *sink_record(gd_srec_t *r);

/* guardd_metrics.c */
extern gd_metrics_t metrics;
int64_t monotonic_us(void);
void hist_observe(gd_hist_t *h, uint64_t us);
void metrics_decision(gd_risk_decision_t d, int shadow, int64_t t0_us);
void metrics_reject(gd_reject_t why);
void metrics_reject_code(const char *code);
int metrics_check(const char *addr, const char *path);
int metrics_listen(void);
void metrics_start(void);
void metrics_sweep(void);
void metrics_stop(void);

#endif /* GUARDD_H */
