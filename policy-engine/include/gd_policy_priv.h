/*
 * gd_policy_priv: private to the policy loader's files (gd_policy.c and
 * gd_guardrails_policy.c), not part of the library's interface: the
 * validation context and the helpers gd_policy.c defines, so that the
 * "guardrails" section and the packs are checked by the same code as the
 * rest of a policy (one loader, file:line:col errors).
 *
 * The helpers keep their short names in the loader's files; the macros
 * give them a gd_policy_ prefix in the library's symbol table.
 */
#ifndef GD_POLICY_PRIV_H
#define GD_POLICY_PRIV_H

#include "gd_policy.h"

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define GD_POLICY_PATH_MAX 512

struct gd_gr_packs_s;

/* validation context: the file, its text, and the pointer being checked */
typedef struct {
    const char *file;
    const char *text;
    size_t len;
    gd_errors_t *errs;
    char path[GD_POLICY_PATH_MAX];
    size_t plen;
    int failed;
    const char *dir;             /* the policy directory */
    struct gd_gr_packs_s *packs; /* its packs (gd_guardrails_policy.c) */
} gd_vctx_t;

#define verr gd_policy_verr
#define push_key gd_policy_push_key
#define push_index gd_policy_push_index
#define pop gd_policy_pop
#define name_ok gd_policy_name_ok
#define check_members gd_policy_check_members
#define member gd_policy_member
#define get_bool gd_policy_get_bool
#define get_uint gd_policy_get_uint
#define get_text gd_policy_get_text
#define text_error gd_policy_text_error
#define free_strings gd_policy_free_strings
#define list_json gd_policy_list_json
#define read_file gd_policy_read_file
#define load_json gd_policy_load_json

/* an error at the current pointer (at its value when at_value) */
void verr(gd_vctx_t *c, int at_value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* pointer tokens: push returns the length to pop back to */
size_t push_key(gd_vctx_t *c, const char *key);
size_t push_index(gd_vctx_t *c, size_t i);
void pop(gd_vctx_t *c, size_t old);

int name_ok(const char *s, size_t min, size_t max, const char *extra,
            int first_alnum);
/* rejects members outside allowed (NULL-terminated), with did-you-mean */
void check_members(gd_vctx_t *c, json_t *obj, const char **allowed);
/* the member key of obj, or NULL when absent or of the wrong type */
json_t *member(gd_vctx_t *c, json_t *obj, const char *key, int type,
               int required);
int get_bool(gd_vctx_t *c, json_t *obj, const char *key);
uint64_t get_uint(gd_vctx_t *c, json_t *obj, const char *key, int required,
                  uint64_t min, uint64_t max, uint64_t dflt);
/* a string member's text: NULL absent or wrong, "" when it holds a NUL */
const char *get_text(gd_vctx_t *c, json_t *obj, const char *key, int required);
/* an error at member key of the current object */
void text_error(gd_vctx_t *c, const char *key, const char *msg);
void free_strings(char **s, size_t n);

/*
 * The names of the regular *.json files of dir, sorted; required: an
 * error when dir cannot be opened or holds none.
 */
char **list_json(const char *dir, size_t *n, int required, gd_errors_t *errs);
/* a file of at most 1 MiB, NUL-terminated */
char *read_file(const char *path, size_t *len, gd_errors_t *errs);
/* text parsed (duplicate members refused), or NULL after an error */
json_t *load_json(const char *file, const char *text, size_t len,
                  gd_errors_t *errs);

/* gd_guardrails_policy.c */

/*
 * Loads every pack DIR/packs/NAME.json (none when DIR/packs does not
 * exist), each checked and compiled once; canon, when given, gets each
 * pack's document (the policy version).  NULL only when out of memory.
 */
struct gd_gr_packs_s *gd_gr_packs_load(const char *dir, gd_errors_t *errs,
                                       json_t *canon);
void gd_gr_packs_free(struct gd_gr_packs_s *packs);

/* the "guardrails" section v of a policy (c's pointer is at it) */
void gd_gr_section_load(gd_vctx_t *c, json_t *v, gd_guardrails_t *g);
void gd_gr_section_free(gd_guardrails_t *g);

#endif
