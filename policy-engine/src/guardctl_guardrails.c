/*
 * guardctl guardrails scan --policies DIR [--tenant T] [--content-type CT]
 *                          [--jsonl] [FILE|-]
 *
 * The tenant's (else _default's) guardrails applied by gd_gr_eval() to a
 * body read from FILE or stdin, as the module applies them: one JSON
 * object printed, {"verdict", "shadow_verdict", "score", "hits"} (hits as
 * in the audit record: never the matched text).  With --jsonl, each input
 * line is an object {"body": JSON value or string, "content_type",
 * "uri", "args", "headers": {NAME: VALUE}} (all but body optional) and a
 * result line is printed for each.  Exit 0: passed; 1: refused (any line);
 * 2: usage, policy or input errors.
 */
#include "guardctl.h"

#include "gd_guardrails.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the largest input read */
#define SCAN_INPUT_MAX (64 * 1024 * 1024)

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536;
    char *buf = malloc(cap + 1);

    *len = 0;
    while (buf != NULL) {
        size_t n = fread(buf + *len, 1, cap - *len, f);

        *len += n;
        if (n == 0 || *len > SCAN_INPUT_MAX) {
            break;
        }
        if (*len == cap) {
            char *more = realloc(buf, 2 * cap + 1);

            if (more == NULL) {
                free(buf);
                return NULL;
            }
            buf = more;
            cap *= 2;
        }
    }
    if (buf == NULL || ferror(f) || *len > SCAN_INPUT_MAX) {
        free(buf);
        return NULL;
    }
    buf[*len] = '\0';
    return buf;
}

/* evaluates req and prints the result line; 0 pass, 1 refused, 2 error */
static int scan_one(const gd_guardrails_t *g, const gd_gr_request_t *req,
                    gd_gr_scratch_t *s)
{
    gd_gr_result_t res;
    json_t *audit, *out;
    char *text;

    gd_gr_eval(g, req, s, &res);

    audit = gd_gr_audit(g, &res);
    out = json_object();
    if (audit == NULL || out == NULL) {
        json_decref(audit);
        json_decref(out);
        fprintf(stderr, "guardctl: out of memory\n");
        return 2;
    }

    json_object_set_new(out, "verdict",
                        json_string(gd_gr_verdict_name(res.verdict)));
    json_object_set_new(out, "shadow_verdict",
                        json_string(gd_gr_verdict_name(res.shadow_verdict)));
    json_object_set_new(out, "score", json_integer(res.score));
    if (res.shadow_score) {
        json_object_set_new(out, "shadow_score",
                            json_integer(res.shadow_score));
    }
    json_object_set(out, "hits", json_object_get(audit, "hits"));
    if (res.error) {
        json_object_set_new(out, "error", json_string(res.error));
    }

    text = json_dumps(out, JSON_COMPACT);
    if (text) {
        puts(text);
        free(text);
    }
    json_decref(audit);
    json_decref(out);

    return res.verdict == GD_GR_PASS ? 0 : 1;
}

/* an input line that cannot be scanned: an error line in its place */
static int line_error(size_t line, const char *why)
{
    char msg[256];
    json_t *out;

    snprintf(msg, sizeof(msg), "input line %zu: %s", line, why);
    out = json_pack("{s:s, s:s}", "verdict", "error", "error", msg);
    if (out) {
        char *text = json_dumps(out, JSON_COMPACT);

        if (text) {
            puts(text);
            free(text);
        }
        json_decref(out);
    }
    fprintf(stderr, "guardctl: %s\n", msg);
    return 2;
}

static int scan_jsonl(const gd_guardrails_t *g, const char *ct, char *input,
                      size_t len, gd_gr_scratch_t *s)
{
    int worst = 0;
    size_t lineno = 0;
    char *p = input, *end = input + len;

    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_error_t jerr;
        json_t *o, *body, *v, *hdrs;
        gd_gr_header_t headers[64];
        gd_gr_request_t req = {0};
        char *dump = NULL;
        int rc;

        lineno++;
        if (n == 0 || (n == 1 && p[0] == '\r')) {
            p += n + 1;
            continue;
        }

        o = json_loadb(p, n, JSON_ALLOW_NUL, &jerr);
        p += n + 1;

        if (!json_is_object(o) || (body = json_object_get(o, "body")) == NULL) {
            json_decref(o);
            rc = line_error(lineno, "not a JSON object with a \"body\"");
            worst = worst > rc ? worst : rc;
            continue;
        }

        if (json_is_string(body)) {
            req.body = json_string_value(body);
            req.body_len = json_string_length(body);
            req.content_type = ct;
        } else {
            dump = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
            req.body = dump ? dump : "";
            req.body_len = dump ? strlen(dump) : 0;
            req.content_type = ct ? ct : "application/json";
        }
        if ((v = json_object_get(o, "content_type")) && json_is_string(v)) {
            req.content_type = json_string_value(v);
        }
        req.content_type_len = req.content_type ? strlen(req.content_type) : 0;
        if ((v = json_object_get(o, "uri")) && json_is_string(v)) {
            req.uri = json_string_value(v);
            req.uri_len = json_string_length(v);
        }
        if ((v = json_object_get(o, "args")) && json_is_string(v)) {
            req.args = json_string_value(v);
            req.args_len = json_string_length(v);
        }
        if ((hdrs = json_object_get(o, "headers")) && json_is_object(hdrs)) {
            const char *key;

            json_object_foreach(hdrs, key, v)
            {
                if (req.nheaders < 64 && json_is_string(v)) {
                    headers[req.nheaders++] =
                        (gd_gr_header_t){key, strlen(key), json_string_value(v),
                                         json_string_length(v)};
                }
            }
            req.headers = headers;
        }

        rc = scan_one(g, &req, s);
        worst = worst > rc ? worst : rc;
        free(dump);
        json_decref(o);
    }
    return worst;
}

int guardrails_scan(int argc, char **argv)
{
    const char *dir = NULL, *tenant = NULL, *ct = NULL, *file = NULL;
    int jsonl = 0, rc;
    const guardctl_opt_t opts[] = {OPT("--policies", dir),
                                   OPT("--tenant", tenant),
                                   OPT("--content-type", ct),
                                   OPT_FLAG("--jsonl", jsonl),
                                   {NULL}};
    const gd_policy_t *p;
    gd_policy_set_t *set;
    gd_gr_scratch_t *s;
    size_t len;
    char *input;
    FILE *f;

    rc = opts_parse("guardrails scan", argc, argv, opts, &file);
    if (rc != 0) {
        return rc;
    }
    if (dir == NULL) {
        return usage_error("guardrails scan: --policies DIR is required");
    }

    set = policy_load(dir, NULL);
    if (set == NULL) {
        return 2;
    }

    p = tenant ? gd_policy_find(set, tenant, strlen(tenant)) : set->fallback;
    if (p == NULL || !p->has_guardrails) {
        fprintf(stderr,
                "guardctl: guardrails scan: %s%s%s has no guardrails "
                "section in %s\n",
                p ? "the policy of " : "no policy for ",
                tenant ? "tenant " : "",
                tenant ? tenant : "the default (_default.json)", dir);
        gd_policy_set_free(set);
        return 2;
    }

    f = file == NULL || strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "guardctl: guardrails scan: %s: %s\n", file,
                strerror(errno));
        gd_policy_set_free(set);
        return 2;
    }
    input = read_all(f, &len);
    if (f != stdin) {
        fclose(f);
    }
    if (input == NULL) {
        fprintf(stderr,
                "guardctl: guardrails scan: %s: cannot read it (or larger "
                "than %d bytes)\n",
                file ? file : "stdin", SCAN_INPUT_MAX);
        gd_policy_set_free(set);
        return 2;
    }

    s = gd_gr_scratch_new();
    if (s == NULL) {
        fprintf(stderr, "guardctl: out of memory\n");
        rc = 2;
    } else if (jsonl) {
        rc = scan_jsonl(&p->guardrails, ct, input, len, s);
    } else {
        gd_gr_request_t req = {.body = input,
                               .body_len = len,
                               .content_type = ct,
                               .content_type_len = ct ? strlen(ct) : 0};

        rc = scan_one(&p->guardrails, &req, s);
    }

    gd_gr_scratch_free(s);
    free(input);
    gd_policy_set_free(set);
    return rc;
}
