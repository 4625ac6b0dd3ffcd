/*
 * gd_guardrails_policy: the loader's part for guardrails (see
 * gd_guardrails.h and docs/guardrails.md): the packs DIR/packs/NAME.json
 * and the "guardrails" section of a policy, checked with the helpers of
 * gd_policy.c (gd_policy_priv.h) so that every error is a
 * "FILE:LINE:COL: POINTER: message" line; patterns compiled (and JIT
 * compiled) here, once.
 */
#include "gd_detect.h"
#include "gd_gr_prefilter.h"
#include "gd_gr_hscache.h"
#include "gd_guardrails.h"
#include "gd_jsonptr.h"
#include "gd_policy_priv.h"
#include "gd_suggest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* one pack file, checked and compiled */
typedef struct {
    char *name;
    gd_gr_rule_t *rules;
    size_t nrules;
    int failed; /* its errors are reported; policies naming it fail */
} gd_gr_pack_t;

struct gd_gr_packs_s {
    gd_gr_pack_t *items; /* sorted by name (list_json) */
    size_t n;
};

static const char *gd_gr_actions[] = {"block", "redact", "score", "log", NULL};

/* rule ids and pack names: [a-z0-9][a-z0-9_.-]{0,63} */
static int id_ok(const char *s)
{
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9'))) {
        return 0;
    }
    for (size_t i = 1; s[i]; i++) {
        char ch = s[i];

        if (i >= 64 || !((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                         ch == '_' || ch == '.' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

#define GD_GR_ID_WHAT                                                          \
    "1-64 characters of a-z 0-9 _ . -, starting with a letter or digit"

/* an HTTP header name: a token */
static int header_name_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 256) {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s))) {
            return 0;
        }
    }
    return 1;
}

static void rule_free(gd_gr_rule_t *r)
{
    free(r->id);
    free(r->description);
    for (size_t i = 0; i < r->ntargets; i++) {
        free(r->targets[i].name);
    }
    free(r->targets);
    free(r->pattern);
    free(r->kind);
    pcre2_code_free((pcre2_code *)r->code);
    pcre2_code_free((pcre2_code *)r->code_invalid_utf);
    memset(r, 0, sizeof(*r));
}

static void rules_free(gd_gr_rule_t *rules, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        rule_free(&rules[i]);
    }
    free(rules);
}

/* a target's text into t; NULL, or why it is not one */
static const char *target_parse(const char *s, gd_gr_target_t *t)
{
    static const struct {
        const char *prefix;
        gd_gr_target_e kind;
    } named[] = {{"arg:", GD_GR_T_ARG},
                 {"header:", GD_GR_T_HEADER},
                 {"json:", GD_GR_T_JSON},
                 {"form:", GD_GR_T_FORM}};

    t->name = NULL;

    if (strcmp(s, "uri") == 0) {
        t->kind = GD_GR_T_URI;
        return NULL;
    }
    if (strcmp(s, "args") == 0) {
        t->kind = GD_GR_T_ARGS;
        return NULL;
    }
    if (strcmp(s, "body") == 0) {
        t->kind = GD_GR_T_BODY;
        return NULL;
    }
    if (strcmp(s, "json:*") == 0) {
        t->kind = GD_GR_T_JSON_ALL;
        return NULL;
    }

    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        size_t n = strlen(named[i].prefix);
        const char *name = s + n;

        if (strncmp(s, named[i].prefix, n) != 0) {
            continue;
        }

        t->kind = named[i].kind;

        switch (t->kind) {
        case GD_GR_T_HEADER:
            if (!header_name_ok(name)) {
                return "a header name (a token of 1-256 characters) must "
                       "follow \"header:\"";
            }
            break;
        case GD_GR_T_JSON:
            if (name[0] != '/' || strlen(name) > 1024 ||
                gd_jsonptr_valid(name, strlen(name)) != 0) {
                return "\"json:\" takes \"*\" or a JSON pointer such as "
                       "\"/messages/0/content\" (RFC 6901)";
            }
            break;
        default:
            if (name[0] == '\0' || strlen(name) > 256) {
                return "a name of 1-256 bytes must follow the \":\"";
            }
            break;
        }

        t->name = strdup(name);
        return NULL;
    }

    return "must be \"uri\", \"args\", \"arg:NAME\", \"header:NAME\", "
           "\"body\", \"json:*\", \"json:POINTER\" or \"form:NAME\"";
}

/* the PCRE2 options of "flags" (i m s x u), or -1 */
static int64_t flags_parse(const char *f)
{
    uint32_t opts = 0;
    const char *seen = f;

    for (; *f; f++) {
        if (memchr(seen, *f, (size_t)(f - seen)) != NULL) {
            return -1;
        }
        switch (*f) {
        case 'i':
            opts |= PCRE2_CASELESS;
            break;
        case 'm':
            opts |= PCRE2_MULTILINE;
            break;
        case 's':
            opts |= PCRE2_DOTALL;
            break;
        case 'x':
            opts |= PCRE2_EXTENDED;
            break;
        case 'u':
            /* UTF-8 and Unicode properties (a text that is not UTF-8 is
               matched by the rule's code_invalid_utf) */
            opts |= PCRE2_UTF | PCRE2_UCP;
            break;
        default:
            return -1;
        }
    }
    return opts;
}

/* compiles r->pattern, with the JIT where it is available */
static void *compile(gd_vctx_t *c, const char *pattern, uint32_t opts)
{
    int err;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                     opts, &err, &off, NULL);

    if (code == NULL) {
        PCRE2_UCHAR msg[256];

        if (pcre2_get_error_message(err, msg, sizeof(msg)) < 0) {
            snprintf((char *)msg, sizeof(msg), "error %d", err);
        }
        size_t old = push_key(c, "pattern");
        verr(c, 1, "invalid pattern at offset %zu: %s", (size_t)off,
             (const char *)msg);
        pop(c, old);
        return NULL;
    }

    /* without the JIT (not built in), pcre2_match() interprets */
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return code;
}

/* one rule object (c's pointer is at it); 0 when it is usable */
static int rule_load(gd_vctx_t *c, json_t *o, gd_gr_rule_t *r, const char *pack)
{
    static const char *members[] = {
        "id",     "description", "targets", "pattern", "flags", "detector",
        "action", "weight",      "shadow",  "kind",    NULL};
    size_t before = c->errs->n;
    const char *s;
    json_t *v;

    memset(r, 0, sizeof(*r));
    r->detector = -1;
    r->pack = pack;

    check_members(c, o, members);

    if ((s = get_text(c, o, "id", 1)) != NULL) {
        if (!id_ok(s)) {
            text_error(c, "id", "must be " GD_GR_ID_WHAT);
        } else {
            r->id = strdup(s);
        }
    }

    if ((s = get_text(c, o, "description", 0)) != NULL) {
        r->description = strdup(s);
    }

    if ((v = member(c, o, "targets", JSON_ARRAY, 1)) != NULL) {
        size_t old = push_key(c, "targets"), n = json_array_size(v);

        if (n == 0) {
            verr(c, 0, "must have at least one target");
        }
        r->targets = calloc(n + 1, sizeof(gd_gr_target_t));
        for (size_t i = 0; r->targets && i < n; i++) {
            json_t *t = json_array_get(v, i);
            size_t o2 = push_index(c, i);
            const char *why;
            gd_gr_target_t *tg = &r->targets[r->ntargets];

            if (!json_is_string(t) ||
                strlen(json_string_value(t)) != json_string_length(t)) {
                verr(c, 0, "a target must be a string");
            } else if ((why = target_parse(json_string_value(t), tg))) {
                verr(c, 0, "%s", why);
            } else {
                for (size_t j = 0; j < r->ntargets; j++) {
                    if (r->targets[j].kind == tg->kind &&
                        (tg->name == NULL ||
                         strcmp(r->targets[j].name, tg->name) == 0)) {
                        verr(c, 0, "duplicate target \"%s\"",
                             json_string_value(t));
                        break;
                    }
                }
                r->ntargets++;
            }
            pop(c, o2);
        }
        pop(c, old);
    }

    const char *pattern = get_text(c, o, "pattern", 0);
    const char *detector = get_text(c, o, "detector", 0);
    const char *flags = get_text(c, o, "flags", 0);

    if (json_object_get(o, "pattern") && json_object_get(o, "detector")) {
        text_error(c, "detector",
                   "a rule has one matcher: \"pattern\" or \"detector\", "
                   "not both");
    } else if (!json_object_get(o, "pattern") &&
               !json_object_get(o, "detector")) {
        verr(c, 1, "a rule needs a matcher: \"pattern\" or \"detector\"");
    }

    if (flags != NULL) {
        int64_t opts = flags_parse(flags);

        if (opts < 0) {
            text_error(c, "flags",
                       "must be letters among i m s x u, each once");
        } else if (json_object_get(o, "pattern") == NULL) {
            text_error(c, "flags", "flags apply to a \"pattern\"");
        } else {
            r->pattern_options = (uint32_t)opts;
        }
    }

    if (pattern != NULL && detector == NULL) {
        if (pattern[0] == '\0') {
            text_error(c, "pattern",
                       "must be a non-empty PCRE2 pattern (a NUL byte is "
                       "written \\x00)");
        } else if (c->errs->n == before) {
            r->code = compile(c, pattern, r->pattern_options);
            if (r->code) {
                r->pattern = strdup(pattern);
            }
            if (r->code && (r->pattern_options & PCRE2_UTF)) {
                /* PCRE2_MATCH_INVALID_UTF makes many patterns several
                   times slower: only for texts that need it */
                r->code_invalid_utf = compile(
                    c, pattern, r->pattern_options | PCRE2_MATCH_INVALID_UTF);
            }
        }
    }

    if (detector != NULL && pattern == NULL) {
        r->detector = gd_detector_find(detector, strlen(detector));
        if (r->detector < 0) {
            const char *names[GD_DET_LAST + 1];
            const char *near;

            for (int d = 0; d < GD_DET_LAST; d++) {
                names[d] = gd_detector_name((gd_detector_e)d);
            }
            names[GD_DET_LAST] = NULL;
            near = gd_suggest(detector, names);

            size_t old = push_key(c, "detector");
            if (near) {
                verr(c, 0, "unknown detector \"%s\"; did you mean \"%s\"?",
                     detector, near);
            } else {
                verr(c, 0, "unknown detector \"%s\"", detector);
            }
            pop(c, old);
        }
    }

    if ((s = get_text(c, o, "action", 1)) != NULL) {
        int a;

        for (a = 0; gd_gr_actions[a]; a++) {
            if (strcmp(gd_gr_actions[a], s) == 0) {
                break;
            }
        }
        if (gd_gr_actions[a] == NULL) {
            text_error(c, "action",
                       "must be \"block\", \"redact\", \"score\" or \"log\"");
        } else {
            r->action = (gd_gr_action_e)a;
        }
    }

    r->weight = (uint32_t)get_uint(c, o, "weight", 0, 1, 1000, 0);
    r->shadow = get_bool(c, o, "shadow");

    if ((s = get_text(c, o, "kind", 0)) != NULL) {
        if (!name_ok(s, 1, 32, "_-", 0)) {
            text_error(c, "kind", "must be 1-32 characters of A-Z a-z 0-9 _ -");
        } else {
            r->kind = strdup(s);
        }
    }

    if (c->errs->n != before) {
        return -1;
    }

    if (r->action == GD_GR_SCORE && r->weight == 0) {
        verr(c, 1, "a \"score\" rule needs a \"weight\" (1-1000)");
    }
    for (size_t i = 0; r->action == GD_GR_REDACT && i < r->ntargets; i++) {
        if (r->targets[i].kind == GD_GR_T_URI) {
            text_error(c, "action",
                       "\"uri\" cannot be redacted (the path routes the "
                       "request): block it, or target args");
            break;
        }
    }

    if (r->kind == NULL) {
        r->kind = strdup(r->detector >= 0
                             ? gd_detector_name((gd_detector_e)r->detector)
                             : r->id);
    }

    return c->errs->n == before && r->id && r->kind ? 0 : -1;
}

/* a copy of src (its pattern compiled again: the copy owns its code) */
static int rule_copy(gd_gr_rule_t *dst, const gd_gr_rule_t *src)
{
    *dst = *src;
    dst->id = strdup(src->id);
    dst->description = src->description ? strdup(src->description) : NULL;
    dst->pattern = src->pattern ? strdup(src->pattern) : NULL;
    dst->kind = strdup(src->kind);
    dst->targets = calloc(src->ntargets + 1, sizeof(gd_gr_target_t));
    dst->code = NULL;

    for (size_t i = 0; dst->targets && i < src->ntargets; i++) {
        dst->targets[i].kind = src->targets[i].kind;
        if (src->targets[i].name &&
            (dst->targets[i].name = strdup(src->targets[i].name)) == NULL) {
            dst->ntargets = i;
            return -1;
        }
    }

    dst->code_invalid_utf = NULL;
    if (src->code) {
        dst->code = pcre2_code_copy((const pcre2_code *)src->code);
        if (dst->code) {
            (void)pcre2_jit_compile((pcre2_code *)dst->code,
                                    PCRE2_JIT_COMPLETE);
        }
    }
    if (src->code_invalid_utf) {
        dst->code_invalid_utf =
            pcre2_code_copy((const pcre2_code *)src->code_invalid_utf);
        if (dst->code_invalid_utf) {
            (void)pcre2_jit_compile((pcre2_code *)dst->code_invalid_utf,
                                    PCRE2_JIT_COMPLETE);
        }
    }

    if (dst->id == NULL || dst->kind == NULL || dst->targets == NULL ||
        (src->description && dst->description == NULL) ||
        (src->pattern && dst->pattern == NULL) ||
        (src->code && dst->code == NULL) ||
        (src->code_invalid_utf && dst->code_invalid_utf == NULL)) {
        if (dst->targets == NULL) {
            dst->ntargets = 0;
        }
        return -1;
    }
    return 0;
}

/* the rules array of obj (a pack or a section), into *rules / *n */
static void rules_load(gd_vctx_t *c, json_t *a, gd_gr_rule_t **rules, size_t *n,
                       const char *pack)
{
    size_t old = push_key(c, "rules"), count = json_array_size(a);

    *rules = calloc(count + 1, sizeof(gd_gr_rule_t));
    *n = 0;

    for (size_t i = 0; *rules && i < count; i++) {
        json_t *o = json_array_get(a, i);
        size_t o2 = push_index(c, i);
        gd_gr_rule_t *r = &(*rules)[*n];

        if (!json_is_object(o)) {
            verr(c, 0, "a rule must be an object");
        } else if (rule_load(c, o, r, pack) != 0) {
            rule_free(r);
        } else {
            int dup = 0;

            for (size_t j = 0; j < *n; j++) {
                if (strcmp((*rules)[j].id, r->id) == 0) {
                    size_t o3 = push_key(c, "id");
                    verr(c, 0, "duplicate rule id \"%s\"", r->id);
                    pop(c, o3);
                    dup = 1;
                }
            }
            if (dup) {
                rule_free(r);
            } else {
                (*n)++;
            }
        }
        pop(c, o2);
    }
    pop(c, old);
}

/* the packs */

static void pack_load(gd_vctx_t *c, json_t *doc, const char *name,
                      gd_gr_pack_t *pack)
{
    static const char *members[] = {"$schema", "pack", "description", "rules",
                                    NULL};
    const char *s;
    json_t *v;

    if (!json_is_object(doc)) {
        verr(c, 1, "a pack must be a JSON object");
        return;
    }

    check_members(c, doc, members);
    member(c, doc, "$schema", JSON_STRING, 0);
    member(c, doc, "description", JSON_STRING, 0);

    if ((s = get_text(c, doc, "pack", 1)) != NULL && strcmp(s, name) != 0) {
        size_t old = push_key(c, "pack");
        verr(c, 0, "must be \"%s\", the name of the file", name);
        pop(c, old);
    }

    if ((v = member(c, doc, "rules", JSON_ARRAY, 1)) != NULL) {
        if (json_array_size(v) == 0) {
            text_error(c, "rules", "must have at least one rule");
        }
        rules_load(c, v, &pack->rules, &pack->nrules, pack->name);
    }
}

void gd_gr_packs_free(struct gd_gr_packs_s *packs)
{
    if (packs == NULL) {
        return;
    }
    for (size_t i = 0; i < packs->n; i++) {
        rules_free(packs->items[i].rules, packs->items[i].nrules);
        free(packs->items[i].name);
    }
    free(packs->items);
    free(packs);
}

struct gd_gr_packs_s *gd_gr_packs_load(const char *dir, gd_errors_t *errs,
                                       json_t *canon)
{
    struct gd_gr_packs_s *packs = calloc(1, sizeof(*packs));
    char pdir[4096];
    struct stat st;
    size_t nfiles = 0;
    char **files;

    if (packs == NULL) {
        return NULL;
    }

    snprintf(pdir, sizeof(pdir), "%s/packs", dir);
    if (stat(pdir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return packs;
    }

    files = list_json(pdir, &nfiles, 0, errs);
    packs->items = calloc(nfiles + 1, sizeof(gd_gr_pack_t));
    if (packs->items == NULL) {
        free_strings(files, nfiles);
        free(packs);
        return NULL;
    }

    for (size_t i = 0; i < nfiles; i++) {
        gd_gr_pack_t *pack = &packs->items[packs->n];
        char path[4200];
        size_t len, before = errs->n;
        char *text;
        json_t *doc;

        snprintf(path, sizeof(path), "%s/%s", pdir, files[i]);
        pack->name = strndup(files[i], strlen(files[i]) - 5);
        if (pack->name == NULL) {
            continue;
        }
        packs->n++;

        gd_vctx_t c = {.file = path, .errs = errs, .dir = dir};

        if (!id_ok(pack->name)) {
            gd_errors_add(errs,
                          "%s: a pack's file name must be NAME.json, NAME "
                          "being " GD_GR_ID_WHAT,
                          path);
        }

        text = read_file(path, &len, errs);
        doc = text ? load_json(path, text, len, errs) : NULL;
        if (doc != NULL) {
            c.text = text;
            c.len = len;
            pack_load(&c, doc, pack->name, pack);

            json_t *copy = json_deep_copy(doc);
            if (canon && copy) {
                json_object_del(copy, "$schema");
                json_object_set_new(canon, pack->name, copy);
            } else {
                json_decref(copy);
            }
            json_decref(doc);
        }
        free(text);

        pack->failed = errs->n != before || doc == NULL;
    }

    free_strings(files, nfiles);
    return packs;
}

static const gd_gr_pack_t *pack_find(const struct gd_gr_packs_s *packs,
                                     const char *name)
{
    for (size_t i = 0; packs && i < packs->n; i++) {
        if (strcmp(packs->items[i].name, name) == 0) {
            return &packs->items[i];
        }
    }
    return NULL;
}

/* the section */

void gd_gr_section_free(gd_guardrails_t *g)
{
    gd_gr_prefilter_free(g->prefilter);
    free_strings(g->packs, g->npacks);
    rules_free(g->rules, g->nrules);
    free(g->redact_with);
    memset(g, 0, sizeof(*g));
}

/* the rule id among the packs' rules, or NULL */
static const gd_gr_rule_t *pack_rule(const gd_gr_pack_t **packs, size_t npacks,
                                     const char *id)
{
    for (size_t i = 0; i < npacks; i++) {
        for (size_t j = 0; packs[i] && j < packs[i]->nrules; j++) {
            if (strcmp(packs[i]->rules[j].id, id) == 0) {
                return &packs[i]->rules[j];
            }
        }
    }
    return NULL;
}

/* an override's members, checked; applied to r when r is given */
static void override_load(gd_vctx_t *c, json_t *o, const gd_gr_rule_t *base)
{
    static const char *members[] = {"action", "weight", "shadow", "enabled",
                                    NULL};
    const char *s;

    check_members(c, o, members);
    member(c, o, "shadow", JSON_TRUE, 0);
    member(c, o, "enabled", JSON_TRUE, 0);
    uint32_t weight = (uint32_t)get_uint(c, o, "weight", 0, 1, 1000, 0);
    int action = (int)base->action;

    if ((s = get_text(c, o, "action", 0)) != NULL) {
        for (action = 0; gd_gr_actions[action]; action++) {
            if (strcmp(gd_gr_actions[action], s) == 0) {
                break;
            }
        }
        if (gd_gr_actions[action] == NULL) {
            text_error(c, "action",
                       "must be \"block\", \"redact\", \"score\" or \"log\"");
            return;
        }
    }

    if (action == GD_GR_SCORE && weight == 0 && base->weight == 0) {
        verr(c, 1,
             "rule \"%s\" becomes a \"score\" rule and needs a \"weight\" "
             "(1-1000)",
             base->id);
    }
    for (size_t i = 0; action == GD_GR_REDACT && i < base->ntargets; i++) {
        if (base->targets[i].kind == GD_GR_T_URI) {
            text_error(c, "action",
                       "the rule targets \"uri\", which cannot be redacted");
            break;
        }
    }
}

static void override_apply(json_t *o, gd_gr_rule_t *r)
{
    json_t *v;

    if ((v = json_object_get(o, "action")) != NULL) {
        for (int a = 0; gd_gr_actions[a]; a++) {
            if (strcmp(gd_gr_actions[a], json_string_value(v)) == 0) {
                r->action = (gd_gr_action_e)a;
            }
        }
    }
    if ((v = json_object_get(o, "weight")) != NULL) {
        r->weight = (uint32_t)json_integer_value(v);
    }
    if ((v = json_object_get(o, "shadow")) != NULL) {
        r->shadow = json_is_true(v);
    }
}

void gd_gr_section_load(gd_vctx_t *c, json_t *v, gd_guardrails_t *g)
{
    static const char *members[] = {
        "packs",       "rules",       "overrides",   "threshold", "shadow",
        "body_over",   "on_error",    "encoded",     "max_ratio", "json_depth",
        "match_limit", "depth_limit", "redact_with", NULL};
    struct gd_gr_packs_s *own_packs = NULL;
    const gd_gr_pack_t **used = NULL;
    gd_gr_rule_t *own = NULL;
    size_t nown = 0, before = c->errs->n;
    json_t *a, *ov = NULL;
    const char *s;

    memset(g, 0, sizeof(*g));
    check_members(c, v, members);

    g->threshold = (uint32_t)get_uint(c, v, "threshold", 0, 0, 1000000, 0);
    g->shadow = get_bool(c, v, "shadow");
    g->max_ratio =
        (uint32_t)get_uint(c, v, "max_ratio", 0, 1, 100000, GD_GR_MAX_RATIO);
    g->json_depth =
        (uint32_t)get_uint(c, v, "json_depth", 0, 1, 1024, GD_GR_JSON_DEPTH);
    g->match_limit = (uint32_t)get_uint(c, v, "match_limit", 0, 1, 100000000,
                                        GD_GR_MATCH_LIMIT);
    g->depth_limit = (uint32_t)get_uint(c, v, "depth_limit", 0, 1, 100000000,
                                        GD_GR_DEPTH_LIMIT);

    if ((s = get_text(c, v, "body_over", 0)) != NULL) {
        if (strcmp(s, "skip") == 0) {
            g->body_over = GD_GR_BODY_SKIP;
        } else if (strcmp(s, "refuse") != 0) {
            text_error(c, "body_over", "must be \"refuse\" or \"skip\"");
        }
    }
    if ((s = get_text(c, v, "on_error", 0)) != NULL) {
        if (strcmp(s, "open") == 0) {
            g->on_error = GD_GR_FAIL_OPEN;
        } else if (strcmp(s, "closed") != 0) {
            text_error(c, "on_error", "must be \"closed\" or \"open\"");
        }
    }
    if ((s = get_text(c, v, "encoded", 0)) != NULL) {
        if (strcmp(s, "refuse") == 0) {
            g->encoded = GD_GR_ENCODED_REFUSE;
        } else if (strcmp(s, "inflate") != 0) {
            text_error(c, "encoded", "must be \"inflate\" or \"refuse\"");
        }
    }
    if ((s = get_text(c, v, "redact_with", 0)) != NULL) {
        if (s[0] == '\0' || strlen(s) > 256) {
            text_error(c, "redact_with",
                       "must be 1-256 bytes (\"{kind}\" is the rule's kind)");
        } else {
            g->redact_with = strdup(s);
        }
    }
    if (g->redact_with == NULL) {
        g->redact_with = strdup(GD_GR_REDACT_WITH);
    }

    /* the packs it includes */
    if (c->packs == NULL) {
        own_packs = gd_gr_packs_load(c->dir, c->errs, NULL);
        c->packs = own_packs;
    }

    if ((a = member(c, v, "packs", JSON_ARRAY, 0)) != NULL) {
        size_t old = push_key(c, "packs"), n = json_array_size(a);

        g->packs = calloc(n + 1, sizeof(char *));
        used = calloc(n + 1, sizeof(*used));

        for (size_t i = 0; g->packs && used && i < n; i++) {
            json_t *p = json_array_get(a, i);
            size_t o2 = push_index(c, i);
            const gd_gr_pack_t *pack;

            if (!json_is_string(p) ||
                strlen(json_string_value(p)) != json_string_length(p)) {
                verr(c, 0, "a pack name must be a string");
            } else if ((pack = pack_find(c->packs, json_string_value(p))) ==
                       NULL) {
                const char **names =
                    calloc((c->packs ? c->packs->n : 0) + 1, sizeof(char *));
                const char *near = NULL;

                for (size_t k = 0; names && c->packs && k < c->packs->n; k++) {
                    names[k] = c->packs->items[k].name;
                }
                if (names) {
                    near = gd_suggest(json_string_value(p), names);
                }
                if (near) {
                    verr(c, 0,
                         "unknown pack \"%s\" (no packs/%s.json in %s); did "
                         "you mean \"%s\"?",
                         json_string_value(p), json_string_value(p), c->dir,
                         near);
                } else {
                    verr(c, 0, "unknown pack \"%s\" (no packs/%s.json in %s)",
                         json_string_value(p), json_string_value(p), c->dir);
                }
                free(names);
            } else {
                for (size_t k = 0; k < g->npacks; k++) {
                    if (strcmp(g->packs[k], pack->name) == 0) {
                        verr(c, 0, "duplicate pack \"%s\"", pack->name);
                        pack = NULL;
                        break;
                    }
                }
                if (pack && pack->failed) {
                    /* its errors are reported at the pack file; its
                       good rules still check the overrides */
                    c->failed = 1;
                }
                if (pack) {
                    used[g->npacks] = pack;
                    g->packs[g->npacks++] = strdup(pack->name);
                }
            }
            pop(c, o2);
        }
        pop(c, old);
    }

    /* its own rules */
    if ((a = member(c, v, "rules", JSON_ARRAY, 0)) != NULL) {
        rules_load(c, a, &own, &nown, NULL);
    }

    /* the overrides of the packs' rules */
    if ((ov = member(c, v, "overrides", JSON_OBJECT, 0)) != NULL) {
        size_t old = push_key(c, "overrides");
        const char *id;
        json_t *o;

        json_object_foreach(ov, id, o)
        {
            size_t o2 = push_key(c, id);
            const gd_gr_rule_t *base = pack_rule(used, g->npacks, id);

            if (base == NULL) {
                size_t total = 0, k = 0;

                for (size_t i = 0; i < g->npacks; i++) {
                    total += used[i]->nrules;
                }

                const char **ids = calloc(total + 1, sizeof(char *));
                const char *near = NULL;

                for (size_t i = 0; ids && i < g->npacks; i++) {
                    for (size_t j = 0; j < used[i]->nrules; j++) {
                        ids[k++] = used[i]->rules[j].id;
                    }
                }
                if (ids) {
                    near = gd_suggest(id, ids);
                }
                if (near) {
                    verr(c, 0,
                         "no rule \"%s\" in the packs included; did you "
                         "mean \"%s\"?",
                         id, near);
                } else {
                    verr(c, 0, "no rule \"%s\" in the packs included", id);
                }
                free(ids);
            } else if (!json_is_object(o)) {
                verr(c, 0, "an override must be an object");
            } else {
                override_load(c, o, base);
            }
            pop(c, o2);
        }
        pop(c, old);
    }

    /* duplicate ids: between packs, and between packs and own rules */
    for (size_t i = 0; i < g->npacks; i++) {
        for (size_t j = 0; j < used[i]->nrules; j++) {
            const char *id = used[i]->rules[j].id;

            for (size_t k = 0; k < i; k++) {
                if (pack_rule(&used[k], 1, id)) {
                    size_t old = push_key(c, "packs"), o2 = push_index(c, i);
                    verr(c, 0, "pack \"%s\" has rule \"%s\", as pack \"%s\"",
                         used[i]->name, id, used[k]->name);
                    pop(c, o2);
                    pop(c, old);
                }
            }
        }
    }
    for (size_t i = 0; i < nown; i++) {
        const gd_gr_rule_t *dup = pack_rule(used, g->npacks, own[i].id);

        if (dup) {
            size_t old = push_key(c, "rules"), o2 = push_index(c, i),
                   o3 = push_key(c, "id");
            verr(c, 0, "duplicate rule id \"%s\" (also in pack \"%s\")",
                 own[i].id, dup->pack);
            pop(c, o3);
            pop(c, o2);
            pop(c, old);
        }
    }

    if (c->errs->n != before || c->failed) {
        rules_free(own, nown);
        goto done;
    }

    /* resolved: the packs' rules in order, overridden, then its own */
    size_t total = nown;

    for (size_t i = 0; i < g->npacks; i++) {
        total += used[i]->nrules;
    }
    g->rules = calloc(total + 1, sizeof(gd_gr_rule_t));
    if (g->rules == NULL) {
        rules_free(own, nown);
        verr(c, 1, "out of memory");
        goto done;
    }

    for (size_t i = 0; i < g->npacks; i++) {
        for (size_t j = 0; j < used[i]->nrules; j++) {
            const gd_gr_rule_t *src = &used[i]->rules[j];
            json_t *o = ov ? json_object_get(ov, src->id) : NULL;
            gd_gr_rule_t *r = &g->rules[g->nrules];

            if (o && json_is_false(json_object_get(o, "enabled"))) {
                continue;
            }
            g->nrules++;
            if (rule_copy(r, src) != 0) {
                verr(c, 1, "out of memory");
                continue;
            }
            r->pack = g->packs[i];
            if (o) {
                override_apply(o, r);
            }
        }
    }
    for (size_t i = 0; i < nown; i++) {
        g->rules[g->nrules++] = own[i];
    }
    free(own);

    for (size_t i = 0; i < g->nrules; i++) {
        gd_gr_rule_t *r = &g->rules[i];

        r->kinds = 0;
        for (size_t t = 0; t < r->ntargets; t++) {
            r->kinds |= GD_GR_KIND(r->targets[t].kind);
        }
        g->targeted |= r->kinds;
    }
    g->needs_body =
        (g->targeted &
         (GD_GR_KIND(GD_GR_T_BODY) | GD_GR_KIND(GD_GR_T_JSON) |
          GD_GR_KIND(GD_GR_T_JSON_ALL) | GD_GR_KIND(GD_GR_T_FORM))) != 0;

    /* without a prefilter (Hyperscan not usable) every pattern runs */
    char cache[4096];

    g->prefilter = gd_gr_prefilter_new(
        g->rules, g->nrules, gd_gr_hscache_dir(c->dir, cache, sizeof(cache)));

done:
    free(used);
    if (own_packs) {
        gd_gr_packs_free(own_packs);
        c->packs = NULL;
    }
}
