/*
 * guardctl's private header: what its files share.
 *
 *   guardctl.c         the dispatcher (subcommand -> function), the usage
 *                      and the argument helpers
 *   guardctl_policy.c  policy check
 *   guardctl_audit.c   audit verify
 *   guardctl_soc.c     blocked, show, review: the SOC's view of the journal
 *   guardctl_client.c  a guardd connection: frames sent and awaited
 *   guardctl_token.c   token mint
 */
#ifndef GUARDCTL_H
#define GUARDCTL_H

#include "gd_proto.h"

#include <stdint.h>

#define GUARDCTL_TIMEOUT_MS 5000

/* guardctl.c */
int usage(void);
int usage_error(const char *fmt, const char *arg);
int opt(int argc, char **argv, int *i, const char *name, const char **val);
const char *journal_dir(void);

/* the subcommands: argc and argv after their name */
int policy_check(int argc, char **argv);
int audit_verify(int argc, char **argv);
int blocked(int argc, char **argv);
int show(int argc, char **argv);
int review(int argc, char **argv);
int token_mint(int argc, char **argv);

/* guardctl_client.c */
typedef struct {
    int fd;
    int64_t deadline;
    uint8_t buf[GD_PROTO_DEFAULT_MAX_FRAME + GD_PROTO_HEADER];
    size_t len;
} conn_t;

int send_frame(conn_t *c, gd_frame_type_t type, uint32_t id, json_t *payload,
               size_t max_frame, char *err, size_t errlen);
int await(conn_t *c, uint32_t id, gd_frame_type_t want, json_t **answer,
          char *err, size_t errlen);

#endif /* GUARDCTL_H */
