/*
 * gd_guardrails: the engine that applies a policy's guardrails to a
 * request, see gd_guardrails.h; what it does is documented in
 * docs/guardrails.md ("The engine").
 *
 * A request is a list of texts (the path, each argument's name and value,
 * the headers, the raw body, each string value of a JSON body, each value
 * of a form body).  Each text is normalised (gd_norm) once, when some
 * rule looks at it, and every rule that looks at it is run over the
 * normalised text; a match is mapped back to the original text
 * (gd_norm_span).  Redactions are collected as spans of the original text
 * and applied once the text is done.
 */
#include "gd_guardrails.h"
#include "gd_detect.h"
#include "gd_gr_prefilter.h"
#include "gd_norm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* the JIT stack: patterns that need more hit the limit (an error) */
#define GD_GR_JIT_STACK_MIN (32 * 1024)
#define GD_GR_JIT_STACK_MAX (512 * 1024)

/* the longest name or pointer kept in a hit */
#define GD_GR_NAME_MAX 128

/* detector matches fetched at a time */
#define GD_GR_SPANS 64

typedef struct {
    char *p;
    size_t len;
    size_t cap;
} gd_gr_buf_t;

/* a redaction: a span of an original text and what replaces it */
typedef struct {
    size_t off;
    size_t len;
    const char *kind;
    int encode; /* the replacement percent-encoded (args, form values) */
} gd_gr_cut_t;

typedef struct {
    gd_gr_cut_t *v;
    size_t n;
    size_t cap;
} gd_gr_cuts_t;

/* a name=value pair of a query string or form body: offsets in it */
typedef struct {
    size_t name;
    size_t name_len;
    size_t value;
    size_t value_len;
} gd_gr_pair_t;

struct gd_gr_scratch_s {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    gd_norm_t norm;
    gd_norm_t name; /* decoded argument and form names */
    gd_norm_t raw;  /* the text before the Unicode stage ("invisible") */

    gd_gr_hit_t hits[GD_GR_MAX_HITS];
    size_t hit_name[GD_GR_MAX_HITS]; /* names' offset, SIZE_MAX: direct */
    gd_detect_span_t spans[GD_GR_SPANS];

    unsigned char *done; /* per rule: its one hit is recorded */
    size_t done_cap;
    unsigned char *run; /* per rule: the prefilter says it may match */
    size_t run_cap;
    gd_gr_pf_scratch_t pf;

    gd_gr_pair_t *pairs;
    size_t pairs_cap;

    gd_gr_cuts_t cuts; /* the text being inspected */
    gd_gr_cuts_t body_cuts;
    gd_gr_cuts_t args_cuts;

    gd_gr_buf_t names; /* JSON pointers of hits */
    gd_gr_buf_t ptr;   /* the JSON pointer of the value inspected */
    gd_gr_buf_t text;  /* a redacted text */
    gd_gr_buf_t body;
    gd_gr_buf_t args;
    gd_gr_buf_t hvalues; /* redacted header values */

    gd_gr_header_t *headers;
    size_t *header_value; /* offsets in hvalues */
    size_t headers_cap;
    size_t header_value_cap;

    json_t *doc;
    char *json_text;
    char error[200];
};

/* an evaluation */
typedef struct {
    const gd_guardrails_t *g;
    const gd_gr_request_t *req;
    gd_gr_scratch_t *s;
    gd_gr_result_t *res;
    int stop;     /* decided (a block, an error, closed) */
    int nomem;    /* out of memory */
    int json_doc; /* the body is the JSON document s->doc */
    int rescan;   /* redacting a re-serialised body: no hits */
} gd_gr_ctx_t;

/* a text of the request */
typedef struct {
    gd_gr_target_e target; /* as reported in hits */
    const char *name;      /* arg, header or form name (NULL: none) */
    size_t name_len;
    const char *dname; /* the decoded arg or form name */
    size_t dname_len;
    int json; /* a JSON string value: its pointer is s->ptr */
    const char *text;
    size_t len;
    unsigned opts;      /* gd_norm's */
    int encode;         /* redactions percent-encoded */
    gd_gr_cuts_t *into; /* where its redactions go, at base */
    size_t base;
} gd_gr_item_t;

/* buffers */

static int buf_reserve(gd_gr_buf_t *b, size_t more)
{
    if (b->len + more + 1 <= b->cap) {
        return 0;
    }

    size_t cap = b->cap ? b->cap : 256;

    while (cap < b->len + more + 1) {
        cap *= 2;
    }

    char *p = realloc(b->p, cap);
    if (p == NULL) {
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(gd_gr_buf_t *b, const void *data, size_t n)
{
    if (buf_reserve(b, n) != 0) {
        return -1;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int grow(void **v, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap) {
        return 0;
    }

    size_t n = *cap ? *cap : 16;

    while (n < want) {
        n *= 2;
    }

    void *p = realloc(*v, n * size);
    if (p == NULL) {
        return -1;
    }
    *v = p;
    *cap = n;
    return 0;
}

static int cut_add(gd_gr_cuts_t *c, size_t off, size_t len, const char *kind,
                   int encode)
{
    if (grow((void **)&c->v, &c->cap, c->n + 1, sizeof(gd_gr_cut_t)) != 0) {
        return -1;
    }
    c->v[c->n++] = (gd_gr_cut_t){off, len, kind, encode};
    return 0;
}

/* the scratch */

gd_gr_scratch_t *gd_gr_scratch_new(void)
{
    gd_gr_scratch_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        return NULL;
    }

    gd_norm_init(&s->norm);
    gd_norm_init(&s->name);
    gd_norm_init(&s->raw);

    /* one pair: the whole match (capture groups are not reported) */
    s->md = pcre2_match_data_create(1, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jit =
        pcre2_jit_stack_create(GD_GR_JIT_STACK_MIN, GD_GR_JIT_STACK_MAX, NULL);

    if (s->md == NULL || s->mctx == NULL) {
        gd_gr_scratch_free(s);
        return NULL;
    }
    if (s->jit) {
        pcre2_jit_stack_assign(s->mctx, NULL, s->jit);
    }
    return s;
}

void gd_gr_scratch_free(gd_gr_scratch_t *s)
{
    if (s == NULL) {
        return;
    }

    gd_norm_free(&s->norm);
    gd_norm_free(&s->name);
    gd_norm_free(&s->raw);
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jit);
    free(s->done);
    free(s->run);
    gd_gr_pf_scratch_free(&s->pf);
    free(s->pairs);
    free(s->cuts.v);
    free(s->body_cuts.v);
    free(s->args_cuts.v);
    free(s->names.p);
    free(s->ptr.p);
    free(s->text.p);
    free(s->body.p);
    free(s->args.p);
    free(s->hvalues.p);
    free(s->headers);
    free(s->header_value);
    json_decref(s->doc);
    free(s->json_text);
    free(s);
}

/* verdicts */

const char *gd_gr_verdict_name(gd_gr_verdict_e v)
{
    static const char *names[] = {"pass", "blocked", "anomaly", "malformed",
                                  "error"};

    return (unsigned)v < sizeof(names) / sizeof(names[0]) ? names[v] : "?";
}

/* refuses (or records the shadow refusal of) verdict v */
static void decide(gd_gr_ctx_t *x, gd_gr_verdict_e v, int shadow)
{
    if (shadow) {
        if (x->res->shadow_verdict == GD_GR_PASS) {
            x->res->shadow_verdict = v;
        }
        return;
    }
    if (x->res->verdict == GD_GR_PASS) {
        x->res->verdict = v;
    }
    x->stop = 1;
}

static void fail(gd_gr_ctx_t *x, gd_gr_verdict_e v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(gd_gr_ctx_t *x, gd_gr_verdict_e v, const char *fmt, ...)
{
    va_list ap;

    if (x->res->error == NULL) {
        va_start(ap, fmt);
        vsnprintf(x->s->error, sizeof(x->s->error), fmt, ap);
        va_end(ap);
        x->res->error = x->s->error;
    }

    if (v == GD_GR_ERROR) {
        decide(x, v, x->g->on_error == GD_GR_FAIL_OPEN);
    } else {
        decide(x, v, x->g->shadow);
    }
}

/* does rule r look at item it? */

static int name_is(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && memcmp(a, b, alen) == 0;
}

static int pointer_under(const gd_gr_buf_t *ptr, const char *p)
{
    size_t n = strlen(p);

    return ptr->len >= n && memcmp(ptr->p, p, n) == 0 &&
           (ptr->len == n || ptr->p[n] == '/');
}

static int applies(const gd_gr_ctx_t *x, const gd_gr_rule_t *r,
                   const gd_gr_item_t *it)
{
    int body = 0, json_all = 0;

    for (size_t i = 0; i < r->ntargets; i++) {
        const gd_gr_target_t *t = &r->targets[i];

        switch (t->kind) {
        case GD_GR_T_URI:
            if (it->target == GD_GR_T_URI) {
                return 1;
            }
            break;
        case GD_GR_T_ARGS:
            if (it->target == GD_GR_T_ARGS || it->target == GD_GR_T_ARG) {
                return 1;
            }
            break;
        case GD_GR_T_ARG:
            if (it->target == GD_GR_T_ARG &&
                name_is(it->dname, it->dname_len, t->name)) {
                return 1;
            }
            break;
        case GD_GR_T_HEADER:
            if (it->target == GD_GR_T_HEADER &&
                strlen(t->name) == it->name_len &&
                strncasecmp(it->name, t->name, it->name_len) == 0) {
                return 1;
            }
            break;
        case GD_GR_T_BODY:
            body = 1;
            break;
        case GD_GR_T_JSON:
            if (it->json && pointer_under(&x->s->ptr, t->name)) {
                return 1;
            }
            break;
        case GD_GR_T_JSON_ALL:
            json_all = 1;
            if (it->json) {
                return 1;
            }
            break;
        case GD_GR_T_FORM:
            if (it->target == GD_GR_T_FORM &&
                name_is(it->dname, it->dname_len, t->name)) {
                return 1;
            }
            break;
        }
    }

    /* a rule on "body" and "json:*" sees a JSON body's values, not its
       raw text (once, and redacted in the document) */
    return body && it->target == GD_GR_T_BODY && !(json_all && x->json_doc);
}

/* matching */

static void hit(gd_gr_ctx_t *x, size_t ri, const gd_gr_item_t *it,
                const gd_norm_t *from, size_t noff, size_t nlen, int detector)
{
    const gd_gr_rule_t *r = &x->g->rules[ri];
    gd_gr_scratch_t *s = x->s;
    gd_gr_result_t *res = x->res;
    int shadow = r->shadow || x->g->shadow;
    size_t off, len;

    gd_norm_span(from, noff, nlen, &off, &len);

    /* a match that maps to no input byte has nothing to replace */
    if (r->action == GD_GR_REDACT && !shadow && len > 0) {
        if (cut_add(it->into, it->base + off, len, r->kind, it->encode) != 0) {
            x->nomem = 1;
            x->stop = 1;
            return;
        }
    }

    if (x->rescan) {
        return;
    }

    if (r->action != GD_GR_REDACT) {
        s->done[ri] = 1;
    }

    res->nhits_total++;

    if (res->nhits < GD_GR_MAX_HITS) {
        gd_gr_hit_t *h = &s->hits[res->nhits];

        h->rule = r;
        h->target = it->target;
        h->name = it->name;
        h->name_len =
            it->name_len > GD_GR_NAME_MAX ? GD_GR_NAME_MAX : it->name_len;
        s->hit_name[res->nhits] = SIZE_MAX;
        if (it->json) {
            size_t n =
                s->ptr.len > GD_GR_NAME_MAX ? GD_GR_NAME_MAX : s->ptr.len;

            s->hit_name[res->nhits] = s->names.len;
            h->name_len = n;
            if (buf_add(&s->names, s->ptr.p ? s->ptr.p : "", n) != 0) {
                x->nomem = 1;
                x->stop = 1;
                return;
            }
        }
        h->off = off;
        h->len = len;
        h->detector = detector;
        h->score = r->action == GD_GR_SCORE ? r->weight : 0;
        h->shadow = shadow;
        res->nhits++;
    }

    switch (r->action) {
    case GD_GR_BLOCK:
        decide(x, GD_GR_BLOCKED, shadow);
        break;
    case GD_GR_SCORE:
        if (shadow) {
            res->shadow_score += r->weight;
        } else {
            res->score += r->weight;
        }
        break;
    default:
        break;
    }
}

/*
 * A match from start: pcre2_jit_match() (no checks) for a byte pattern,
 * or a UTF-8 pattern over a text that gd_norm found to be UTF-8;
 * pcre2_match() with the rule's PCRE2_MATCH_INVALID_UTF code for a text
 * that is not, or when the pattern has no JIT code.
 */
static int match_at(gd_gr_ctx_t *x, const gd_gr_rule_t *r, PCRE2_SPTR text,
                    size_t len, size_t start)
{
    const pcre2_code *code = r->code;
    int rc;

    if (r->code_invalid_utf != NULL &&
        (x->s->norm.flags & GD_NORM_F_INVALID_UTF8)) {
        code = r->code_invalid_utf;
    } else {
        rc = pcre2_jit_match(code, text, len, start, 0, x->s->md, x->s->mctx);
        if (rc != PCRE2_ERROR_JIT_BADOPTION) {
            return rc;
        }
    }
    return pcre2_match(code, text, len, start, 0, x->s->md, x->s->mctx);
}

static void run_pattern(gd_gr_ctx_t *x, size_t ri, const gd_gr_item_t *it)
{
    const gd_gr_rule_t *r = &x->g->rules[ri];
    PCRE2_SPTR text = (PCRE2_SPTR)x->s->norm.text;
    size_t len = x->s->norm.len, start = 0;

    while (start <= len && !x->stop) {
        int rc = match_at(x, r, text, len, start);

        if (rc == PCRE2_ERROR_NOMATCH) {
            return;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[120];

            pcre2_get_error_message(rc, msg, sizeof(msg));
            fail(x, GD_GR_ERROR, "rule %s: %s", r->id, (const char *)msg);
            return;
        }

        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->s->md);

        if (ov[1] <= ov[0]) {
            /* an empty match is no hit: on from the next character */
            start = ov[0] + 1;
            while (start < len && (text[start] & 0xc0) == 0x80) {
                start++;
            }
            continue;
        }

        hit(x, ri, it, &x->s->norm, ov[0], ov[1] - ov[0], -1);
        if (r->action != GD_GR_REDACT) {
            return;
        }
        start = ov[1];
    }
}

/* a detector over nt's text (s->norm, or s->raw for "invisible") */
static void run_detector(gd_gr_ctx_t *x, size_t ri, const gd_gr_item_t *it,
                         const gd_norm_t *nt)
{
    const gd_gr_rule_t *r = &x->g->rules[ri];
    const char *text = nt->text;
    size_t len = nt->len, pos = 0;

    while (pos < len && !x->stop) {
        size_t n = gd_detect((gd_detector_e)r->detector, text + pos, len - pos,
                             x->s->spans, GD_GR_SPANS);
        size_t kept = n < GD_GR_SPANS ? n : GD_GR_SPANS;

        for (size_t i = 0; i < kept && !x->stop; i++) {
            hit(x, ri, it, nt, pos + x->s->spans[i].off, x->s->spans[i].len,
                r->detector);
            if (r->action != GD_GR_REDACT) {
                return;
            }
        }
        if (n <= GD_GR_SPANS || kept == 0) {
            return;
        }
        pos += x->s->spans[kept - 1].off + x->s->spans[kept - 1].len;
    }
}

/* whether an item's text is ASCII, and stays ASCII when percent-decoded */
static int plain_ascii(const gd_gr_item_t *it)
{
    return !gd_norm_has_high((const unsigned char *)it->text, it->len) &&
           !((it->opts & GD_NORM_PERCENT) && memchr(it->text, '%', it->len));
}

/* the kinds of target that may look at an item */
static unsigned item_kinds(const gd_gr_item_t *it)
{
    switch (it->target) {
    case GD_GR_T_ARGS:
    case GD_GR_T_ARG:
        return GD_GR_KIND(GD_GR_T_ARGS) | GD_GR_KIND(GD_GR_T_ARG);
    case GD_GR_T_JSON:
    case GD_GR_T_JSON_ALL:
        return GD_GR_KIND(GD_GR_T_JSON) | GD_GR_KIND(GD_GR_T_JSON_ALL);
    default:
        return GD_GR_KIND(it->target);
    }
}

/* runs every rule that looks at it */
static void inspect(gd_gr_ctx_t *x, const gd_gr_item_t *it)
{
    const gd_guardrails_t *g = x->g;
    unsigned kinds = item_kinds(it);
    int normalised = 0, raw = 0;

    for (size_t ri = 0; ri < g->nrules && !x->stop; ri++) {
        const gd_gr_rule_t *r = &g->rules[ri];

        if (!(r->kinds & kinds) || x->s->done[ri]) {
            continue;
        }
        if (normalised && r->code && g->prefilter && !x->s->run[ri]) {
            continue; /* the scan below: it cannot match */
        }
        if (!applies(x, r, it)) {
            continue;
        }
        if (x->rescan && r->action != GD_GR_REDACT) {
            continue;
        }

        if (!normalised) {
            if (gd_norm(&x->s->norm, it->text, it->len, it->opts) != 0) {
                x->nomem = 1;
                x->stop = 1;
                return;
            }
            x->res->norm_flags |= x->s->norm.flags;
            normalised = 1;
            /* one scan of the text for every pattern's atoms (an error
               leaves every rule to run) */
            if (g->prefilter) {
                (void)gd_gr_prefilter_scan_kinds(
                    g->prefilter, &x->s->pf, x->s->norm.text, x->s->norm.len,
                    kinds, x->s->run);
            }
        }

        if (r->code && g->prefilter && !x->s->run[ri]) {
            continue; /* no atom of its in the text: it cannot match */
        }
        if (r->code) {
            run_pattern(x, ri, it);
        } else if (r->detector == GD_DET_INVISIBLE) {
            /* what gd_norm's Unicode stage removes: the text only
               percent-decoded (args, forms), else as it is; every such
               character is beyond ASCII, so ASCII text has none */
            if (!raw && plain_ascii(it)) {
                continue;
            }
            if (!raw && gd_norm(&x->s->raw, it->text, it->len,
                                it->opts & ~(unsigned)GD_NORM_UNICODE) != 0) {
                x->nomem = 1;
                x->stop = 1;
                return;
            }
            raw = 1;
            run_detector(x, ri, it, &x->s->raw);
        } else if (r->detector >= 0) {
            run_detector(x, ri, it, &x->s->norm);
        }
    }
}

/* redaction */

static int cut_cmp(const void *a, const void *b)
{
    const gd_gr_cut_t *x = a, *y = b;

    return (x->off > y->off) - (x->off < y->off);
}

/* the replacement of a cut, appended to out */
static int replacement(const gd_gr_ctx_t *x, const gd_gr_cut_t *c,
                       gd_gr_buf_t *out)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *w = x->g->redact_with ? x->g->redact_with : GD_GR_REDACT_WITH;

    while (*w) {
        const char *part = w;
        size_t n = 1;

        if (strncmp(w, "{kind}", 6) == 0) {
            part = c->kind;
            n = strlen(c->kind);
            w += 6;
        } else {
            w++;
        }

        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)part[i];

            if (!c->encode || (ch >= 'a' && ch <= 'z') ||
                (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                ch == '-' || ch == '.' || ch == '_' || ch == '~') {
                if (buf_add(out, &ch, 1) != 0) {
                    return -1;
                }
            } else {
                char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};

                if (buf_add(out, e, 3) != 0) {
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* text with the cuts (sorted and merged here) applied, into out */
static int apply_cuts(const gd_gr_ctx_t *x, gd_gr_cuts_t *cuts,
                      const char *text, size_t len, gd_gr_buf_t *out)
{
    size_t pos = 0;

    out->len = 0;
    if (buf_reserve(out, len) != 0) {
        return -1;
    }

    qsort(cuts->v, cuts->n, sizeof(gd_gr_cut_t), cut_cmp);

    for (size_t i = 0; i < cuts->n; i++) {
        gd_gr_cut_t c = cuts->v[i];
        size_t end = c.off + c.len;

        /* overlapping cuts are one, named by the first */
        while (i + 1 < cuts->n && cuts->v[i + 1].off < end) {
            i++;
            if (cuts->v[i].off + cuts->v[i].len > end) {
                end = cuts->v[i].off + cuts->v[i].len;
            }
        }
        if (c.off < pos) {
            continue;
        }
        if (buf_add(out, text + pos, c.off - pos) != 0 ||
            replacement(x, &c, out) != 0) {
            return -1;
        }
        pos = end;
    }

    if (buf_add(out, text + pos, len - pos) != 0) {
        return -1;
    }
    return 0;
}

/* the texts */

/* name=value pairs of text split at '&' (and ';' never), into s->pairs */
static size_t split_pairs(gd_gr_ctx_t *x, const char *text, size_t len)
{
    size_t n = 0, pos = 0;

    while (pos < len) {
        const char *amp = memchr(text + pos, '&', len - pos);
        size_t end = amp ? (size_t)(amp - text) : len;

        if (end > pos) {
            const char *eq = memchr(text + pos, '=', end - pos);
            size_t ne = eq ? (size_t)(eq - text) : end;

            if (grow((void **)&x->s->pairs, &x->s->pairs_cap, n + 1,
                     sizeof(gd_gr_pair_t)) != 0) {
                x->nomem = 1;
                x->stop = 1;
                return n;
            }
            x->s->pairs[n++] = (gd_gr_pair_t){pos, ne - pos, eq ? ne + 1 : end,
                                              eq ? end - ne - 1 : 0};
        }
        pos = end + 1;
    }
    return n;
}

/* whether some rule has a target of kind k */
static int targeted(const gd_guardrails_t *g, gd_gr_target_e k)
{
    return (g->targeted & GD_GR_KIND(k)) != 0;
}

/* the arguments of the query string, or the values of a form body */
static void inspect_pairs(gd_gr_ctx_t *x, const char *text, size_t len,
                          int form, gd_gr_cuts_t *into)
{
    size_t n = split_pairs(x, text, len);

    for (size_t i = 0; i < n && !x->stop; i++) {
        gd_gr_pair_t p = x->s->pairs[i];
        gd_gr_item_t it = {.name = text + p.name,
                           .name_len = p.name_len,
                           .opts =
                               GD_NORM_PERCENT | GD_NORM_FORM | GD_NORM_UNICODE,
                           .encode = 1,
                           .into = into};

        /* the decoded name, that arg:NAME and form:NAME compare */
        if (gd_norm(&x->s->name, text + p.name, p.name_len,
                    GD_NORM_PERCENT | GD_NORM_FORM) != 0) {
            x->nomem = 1;
            x->stop = 1;
            return;
        }
        it.dname = x->s->name.text;
        it.dname_len = x->s->name.len;

        if (!form) {
            /* "args": the name too */
            it.target = GD_GR_T_ARGS;
            it.text = text + p.name;
            it.len = p.name_len;
            it.base = p.name;
            inspect(x, &it);
        }

        it.target = form ? GD_GR_T_FORM : GD_GR_T_ARG;
        it.text = text + p.value;
        it.len = p.value_len;
        it.base = p.value;
        if (!x->stop) {
            inspect(x, &it);
        }
    }
}

static void inspect_headers(gd_gr_ctx_t *x)
{
    const gd_gr_request_t *req = x->req;
    gd_gr_scratch_t *s = x->s;

    for (size_t i = 0; i < req->nheaders && !x->stop; i++) {
        const gd_gr_header_t *h = &req->headers[i];
        gd_gr_item_t it = {.target = GD_GR_T_HEADER,
                           .name = h->name,
                           .name_len = h->name_len,
                           .text = h->value,
                           .len = h->value_len,
                           .opts = GD_NORM_UNICODE,
                           .into = &s->cuts};

        s->cuts.n = 0;
        inspect(x, &it);

        if (s->cuts.n == 0 || x->stop) {
            continue;
        }

        size_t n = x->res->nheaders, at;

        if (grow((void **)&s->headers, &s->headers_cap, n + 1,
                 sizeof(gd_gr_header_t)) != 0) {
            x->nomem = x->stop = 1;
            return;
        }
        if (grow((void **)&s->header_value, &s->header_value_cap, n + 1,
                 sizeof(size_t)) != 0 ||
            apply_cuts(x, &s->cuts, h->value, h->value_len, &s->text) != 0) {
            x->nomem = x->stop = 1;
            return;
        }
        at = s->hvalues.len;
        if (buf_add(&s->hvalues, s->text.p, s->text.len) != 0) {
            x->nomem = x->stop = 1;
            return;
        }
        s->headers[n] =
            (gd_gr_header_t){h->name, h->name_len, NULL, s->text.len};
        s->header_value[n] = at;
        x->res->nheaders = n + 1;
    }
}

/* JSON */

static int media_type_is(const gd_gr_request_t *req, int json)
{
    const char *ct = req->content_type;
    size_t len = req->content_type_len, end;

    while (len && (*ct == ' ' || *ct == '\t')) {
        ct++;
        len--;
    }
    for (end = 0; end < len && ct[end] != ';'; end++) {
    }
    while (end && (ct[end - 1] == ' ' || ct[end - 1] == '\t')) {
        end--;
    }

    if (json) {
        return (end == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
               (end > 5 && strncasecmp(ct + end - 5, "+json", 5) == 0);
    }
    return end == 33 &&
           strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0;
}

static size_t json_depth(json_t *v, size_t limit)
{
    size_t d = 0, sub;
    const char *key;
    json_t *m;

    if (json_is_object(v)) {
        json_object_foreach(v, key, m)
        {
            if ((sub = json_depth(m, limit)) > d) {
                d = sub;
            }
            if (d > limit) {
                break;
            }
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && d <= limit; i++) {
            if ((sub = json_depth(json_array_get(v, i), limit)) > d) {
                d = sub;
            }
        }
        return d + 1;
    }
    return 0;
}

static int ptr_push(gd_gr_buf_t *ptr, const char *token, size_t len)
{
    if (buf_add(ptr, "/", 1) != 0) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        const char *e = token[i] == '~' ? "~0" : token[i] == '/' ? "~1" : NULL;

        if (e ? buf_add(ptr, e, 2) : buf_add(ptr, token + i, 1)) {
            return -1;
        }
    }
    return 0;
}

static void inspect_json(gd_gr_ctx_t *x, json_t *v, int *changed)
{
    gd_gr_scratch_t *s = x->s;
    size_t at = s->ptr.len;

    if (x->stop) {
        return;
    }

    if (json_is_string(v)) {
        gd_gr_item_t it = {.target = GD_GR_T_JSON,
                           .json = 1,
                           .text = json_string_value(v),
                           .len = json_string_length(v),
                           .opts = GD_NORM_UNICODE,
                           .into = &s->cuts};

        s->cuts.n = 0;
        inspect(x, &it);
        if (s->cuts.n && !x->stop) {
            if (apply_cuts(x, &s->cuts, it.text, it.len, &s->text) != 0 ||
                json_string_setn(v, s->text.p, s->text.len) != 0) {
                x->nomem = x->stop = 1;
                return;
            }
            *changed = 1;
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *m;

        json_object_foreach(v, key, m)
        {
            if (ptr_push(&s->ptr, key, strlen(key)) != 0) {
                x->nomem = x->stop = 1;
                return;
            }
            inspect_json(x, m, changed);
            s->ptr.len = at;
            if (x->stop) {
                return;
            }
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && !x->stop; i++) {
            char idx[24];
            int n = snprintf(idx, sizeof(idx), "%zu", i);

            if (ptr_push(&s->ptr, idx, (size_t)n) != 0) {
                x->nomem = x->stop = 1;
                return;
            }
            inspect_json(x, json_array_get(v, i), changed);
            s->ptr.len = at;
        }
    }
    if (s->ptr.p) {
        s->ptr.p[at] = '\0';
    }
}

/* the body: JSON values, form values, the raw text; its redactions */
static void inspect_body(gd_gr_ctx_t *x)
{
    const gd_gr_request_t *req = x->req;
    const gd_guardrails_t *g = x->g;
    gd_gr_scratch_t *s = x->s;
    int json_changed = 0;

    /* an empty body is no document: JSON rules do not apply */
    if (req->body_len > 0 &&
        (targeted(g, GD_GR_T_JSON) || targeted(g, GD_GR_T_JSON_ALL)) &&
        (req->content_type_len == 0 || media_type_is(req, 1))) {
        json_error_t jerr;

        /* a member named twice is refused: upstream parsers differ on
           which of the two they keep, so either could be the one not
           inspected */
        s->doc = json_loadb(
            req->body, req->body_len,
            JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);

        if (s->doc == NULL) {
            if (req->content_type_len ||
                json_error_code(&jerr) == json_error_duplicate_key) {
                fail(x, GD_GR_MALFORMED, "the body is not JSON: %s at byte %d",
                     jerr.text, jerr.position);
                return;
            }
            /* no Content-Type and not JSON: no JSON rule applies */
        } else if (json_depth(s->doc, g->json_depth) > g->json_depth) {
            fail(x, GD_GR_MALFORMED, "the JSON body is nested deeper than %u",
                 g->json_depth);
            json_decref(s->doc);
            s->doc = NULL;
            return;
        } else {
            x->json_doc = 1;
            s->ptr.len = 0;
            if (buf_reserve(&s->ptr, 64) != 0) {
                x->nomem = x->stop = 1;
                return;
            }
            s->ptr.p[0] = '\0';
            inspect_json(x, s->doc, &json_changed);
        }
    }

    if (!x->stop && targeted(g, GD_GR_T_FORM) && media_type_is(req, 0)) {
        inspect_pairs(x, req->body, req->body_len, 1, &s->body_cuts);
    }

    if (!x->stop && targeted(g, GD_GR_T_BODY)) {
        gd_gr_item_t it = {.target = GD_GR_T_BODY,
                           .text = req->body,
                           .len = req->body_len,
                           .opts = GD_NORM_UNICODE,
                           .into = &s->body_cuts};

        inspect(x, &it);
    }

    if (x->stop) {
        return;
    }

    if (json_changed) {
        /* the document, compact, with its redacted values */
        free(s->json_text);
        s->json_text = json_dumps(s->doc, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s->json_text == NULL) {
            x->nomem = x->stop = 1;
            return;
        }

        if (s->body_cuts.n) {
            /* raw body redactions: found again in the new text */
            gd_gr_item_t it = {.target = GD_GR_T_BODY,
                               .text = s->json_text,
                               .len = strlen(s->json_text),
                               .opts = GD_NORM_UNICODE,
                               .into = &s->body_cuts};

            s->body_cuts.n = 0;
            x->rescan = 1;
            inspect(x, &it);
            x->rescan = 0;
            if (x->stop) {
                return;
            }
            if (apply_cuts(x, &s->body_cuts, it.text, it.len, &s->body) != 0) {
                x->nomem = x->stop = 1;
                return;
            }
            x->res->body = s->body.p;
            x->res->body_len = s->body.len;
        } else {
            x->res->body = s->json_text;
            x->res->body_len = strlen(s->json_text);
        }
        return;
    }

    if (s->body_cuts.n) {
        if (apply_cuts(x, &s->body_cuts, req->body, req->body_len, &s->body) !=
            0) {
            x->nomem = x->stop = 1;
            return;
        }
        x->res->body = s->body.p;
        x->res->body_len = s->body.len;
    }
}

int gd_gr_eval(const gd_guardrails_t *g, const gd_gr_request_t *req,
               gd_gr_scratch_t *s, gd_gr_result_t *res)
{
    gd_gr_ctx_t x = {.g = g, .req = req, .s = s, .res = res};

    memset(res, 0, sizeof(*res));
    res->hits = s->hits;

    json_decref(s->doc);
    s->doc = NULL;
    s->names.len = 0;
    s->body_cuts.n = 0;
    s->args_cuts.n = 0;
    s->hvalues.len = 0;

    if (grow((void **)&s->done, &s->done_cap, g->nrules + 1, 1) != 0 ||
        grow((void **)&s->run, &s->run_cap, g->nrules + 1, 1) != 0) {
        res->verdict = GD_GR_ERROR;
        res->error = "out of memory";
        return -1;
    }
    memset(s->done, 0, g->nrules + 1);

    pcre2_set_match_limit(s->mctx,
                          g->match_limit ? g->match_limit : GD_GR_MATCH_LIMIT);
    pcre2_set_depth_limit(s->mctx,
                          g->depth_limit ? g->depth_limit : GD_GR_DEPTH_LIMIT);

    if (req->uri_len && targeted(g, GD_GR_T_URI)) {
        gd_gr_item_t it = {.target = GD_GR_T_URI,
                           .text = req->uri,
                           .len = req->uri_len,
                           .opts = GD_NORM_PERCENT | GD_NORM_UNICODE,
                           .into = &s->cuts};

        inspect(&x, &it);
    }

    if (!x.stop && req->args_len &&
        (targeted(g, GD_GR_T_ARGS) || targeted(g, GD_GR_T_ARG))) {
        inspect_pairs(&x, req->args, req->args_len, 0, &s->args_cuts);
        if (!x.stop && s->args_cuts.n) {
            if (apply_cuts(&x, &s->args_cuts, req->args, req->args_len,
                           &s->args) != 0) {
                x.nomem = x.stop = 1;
            } else {
                res->args = s->args.p;
                res->args_len = s->args.len;
            }
        }
    }

    if (!x.stop && req->nheaders && targeted(g, GD_GR_T_HEADER)) {
        inspect_headers(&x);
    }

    if (!x.stop && req->body && !req->body_skipped && g->needs_body) {
        inspect_body(&x);
    }

    if (x.nomem) {
        res->verdict = GD_GR_ERROR;
        res->error = "out of memory";
        res->body = res->args = NULL;
        res->nheaders = 0;
        return -1;
    }

    /* the anomaly score */
    if (g->threshold && res->verdict == GD_GR_PASS &&
        res->score >= g->threshold) {
        res->verdict = GD_GR_ANOMALY;
    }
    if (g->threshold && res->shadow_verdict == GD_GR_PASS &&
        res->verdict != GD_GR_ANOMALY &&
        res->score + res->shadow_score >= g->threshold) {
        res->shadow_verdict = GD_GR_ANOMALY;
    }

    /* names kept in s->names are pointed at now that it no longer moves */
    for (size_t i = 0; i < res->nhits; i++) {
        if (s->hit_name[i] != SIZE_MAX) {
            s->hits[i].name = s->names.p + s->hit_name[i];
        }
    }
    for (size_t i = 0; i < res->nheaders; i++) {
        s->headers[i].value = s->hvalues.p + s->header_value[i];
    }
    res->headers = s->headers;

    if (res->verdict != GD_GR_PASS) {
        /* refused: nothing goes upstream */
        res->body = res->args = NULL;
        res->body_len = res->args_len = 0;
        res->headers = NULL;
        res->nheaders = 0;
    }
    return 0;
}

/* the audit member */

static const char *target_name(gd_gr_target_e t)
{
    static const char *names[] = {"uri",  "args", "arg",  "header",
                                  "body", "json", "json", "form"};

    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static const char *action_name(gd_gr_action_e a)
{
    static const char *names[] = {"block", "redact", "score", "log"};

    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}

static int put(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new_nocheck(o, key, v);
}

/* a request's name as JSON text: "[not UTF-8]" when it is not */
static json_t *name_value(const char *name, size_t len)
{
    json_t *v = json_stringn(name, len);

    return v ? v : json_string("[not UTF-8]");
}

json_t *gd_gr_audit(const gd_guardrails_t *g, const gd_gr_result_t *res)
{
    static const struct {
        unsigned flag;
        const char *name;
    } flags[] = {{GD_NORM_F_DECODED, "decoded"},
                 {GD_NORM_F_DOUBLE_ENCODED, "double_encoded"},
                 {GD_NORM_F_INVALID_UTF8, "invalid_utf8"},
                 {GD_NORM_F_INVISIBLE, "invisible"},
                 {GD_NORM_F_CHANGED, "nfkc"},
                 {GD_NORM_F_NUL, "nul"}};
    json_t *o = json_object(), *a, *hits;

    if (o == NULL) {
        return NULL;
    }

    if (put(o, "verdict", json_string(gd_gr_verdict_name(res->verdict))) ||
        (res->shadow_verdict != GD_GR_PASS &&
         put(o, "shadow_verdict",
             json_string(gd_gr_verdict_name(res->shadow_verdict)))) ||
        put(o, "score", json_integer(res->score)) ||
        (res->shadow_score &&
         put(o, "shadow_score", json_integer(res->shadow_score))) ||
        put(o, "threshold", json_integer(g ? g->threshold : 0)) ||
        (res->error && put(o, "error", json_string(res->error)))) {
        goto failed;
    }

    if (res->norm_flags) {
        if (put(o, "flags", a = json_array())) {
            goto failed;
        }
        for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
            if ((res->norm_flags & flags[i].flag) &&
                json_array_append_new(a, json_string(flags[i].name))) {
                goto failed;
            }
        }
    }

    if (put(o, "hits", hits = json_array())) {
        goto failed;
    }

    for (size_t i = 0; i < res->nhits; i++) {
        const gd_gr_hit_t *h = &res->hits[i];
        json_t *j = json_object();

        if (json_array_append_new(hits, j) ||
            put(j, "rule", json_string(h->rule->id)) ||
            (h->rule->pack && put(j, "pack", json_string(h->rule->pack))) ||
            put(j, "target", json_string(target_name(h->target))) ||
            (h->name && put(j, h->target == GD_GR_T_JSON ? "pointer" : "name",
                            name_value(h->name, h->name_len))) ||
            put(j, "offset", json_integer((json_int_t)h->off)) ||
            put(j, "length", json_integer((json_int_t)h->len)) ||
            (h->detector >= 0 &&
             put(j, "detector",
                 json_string(gd_detector_name((gd_detector_e)h->detector)))) ||
            put(j, "action", json_string(action_name(h->rule->action))) ||
            (h->score && put(j, "score", json_integer(h->score))) ||
            (h->shadow && put(j, "shadow", json_true()))) {
            goto failed;
        }
    }

    if (res->nhits_total > res->nhits &&
        put(o, "hits_total", json_integer((json_int_t)res->nhits_total))) {
        goto failed;
    }

    return o;

failed:
    json_decref(o);
    return NULL;
}
