/*
 * Unit tests for gd_reason: the table is whole, and docs/reasons.md lists
 * exactly its reasons, with the same status, stage and type URN.
 */
#include "gd_reason.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GD_TEST_DATA
#define GD_TEST_DATA "t/policies"
#endif

#define DOC GD_TEST_DATA "/../../docs/reasons.md"
#define MAX_CELLS 8

/* splits a table row "| a | `b` | c |" into its cells, trimmed of spaces
 * and backticks; the number of cells, 0 for a line that is no row */
static int cells(char *line, char *cell[MAX_CELLS])
{
    int n = 0;
    char *p, *end;

    if (line[0] != '|') {
        return 0;
    }
    line[strcspn(line, "\r\n")] = '\0';
    for (p = line + 1; n < MAX_CELLS && (end = strchr(p, '|')); p = end + 1) {
        *end = '\0';
        while (*p == ' ' || *p == '`') {
            p++;
        }
        for (char *q = end; q > p && (q[-1] == ' ' || q[-1] == '`');) {
            *--q = '\0';
        }
        cell[n++] = p;
    }
    return n;
}

static int column(char *cell[], int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(cell[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

static void table_is_whole(void)
{
    int names = 1, urns = 1, words = 1, auth = 1;

    TAP_OK(strcmp(gd_reason(GD_REASON_NONE)->name, "none") == 0 &&
               GD_REASON_NONE == 0,
           "reason 0 is none");
    TAP_OK(gd_reason(GD_REASON_LAST) == gd_reason(GD_REASON_INTERNAL_ERROR) &&
               gd_reason((gd_reason_e)-1) ==
                   gd_reason(GD_REASON_INTERNAL_ERROR),
           "a value out of range reads as internal_error");
    TAP_OK(gd_reason_find("no_such_reason") == GD_REASON_LAST &&
               gd_reason_find(NULL) == GD_REASON_LAST,
           "an unknown name is found as GD_REASON_LAST");

    for (int i = GD_REASON_NONE + 1; i < GD_REASON_LAST; i++) {
        const gd_reason_t *rs = gd_reason((gd_reason_e)i);
        char urn[128];

        if (gd_reason_find(rs->name) != (gd_reason_e)i) {
            names = 0;
            TAP_OK(0, "%s is found as itself", rs->name);
        }
        snprintf(urn, sizeof(urn), "urn:guard:%s", rs->name);
        for (char *p = urn; *p; p++) {
            *p = *p == '_' ? '-' : *p;
        }
        if (rs->type == NULL || strcmp(rs->type, urn) != 0) {
            urns = 0;
            TAP_OK(0, "%s has type %s", rs->name, urn);
        }
        if (rs->title == NULL || rs->detail == NULL || rs->words == NULL ||
            gd_reason_stage_words(rs->stage) == NULL || rs->status < 400 ||
            rs->status > 599) {
            words = 0;
            TAP_OK(0, "%s has a status, a stage with words and words",
                   rs->name);
        }
        if (rs->bearer_error && rs->status != 401) {
            auth = 0;
            TAP_OK(0, "%s has a bearer error only with 401", rs->name);
        }
    }
    TAP_OK(names, "every name is found, once");
    TAP_OK(urns, "every type is urn:guard: and the name with dashes");
    TAP_OK(words, "every refusal has a 4xx/5xx status, a title, a detail, "
                  "and words for guardctl explain, for itself and its stage");
    TAP_OK(gd_reason_stage_words("jwt") != NULL &&
               gd_reason_stage_words("no_such_stage") == NULL &&
               gd_reason_stage_words(NULL) == NULL,
           "stage words are found by name");
    TAP_OK(auth, "only 401 refusals name a WWW-Authenticate error");
}

static void doc_matches(void)
{
    FILE *f = fopen(DOC, "r");
    char line[4096], *cell[MAX_CELLS];
    int seen[GD_REASON_LAST] = {0};
    int c_reason = -1, c_status = -1, c_type = -1, c_stage = -1;
    int rows = 0, all = 1;

    TAP_OK(f != NULL, "%s is read", DOC);
    if (f == NULL) {
        return;
    }

    while (fgets(line, sizeof(line), f)) {
        int n = cells(line, cell);

        if (n == 0 || cell[0][0] == '-') {
            continue;
        }
        if (c_reason < 0) {
            c_reason = column(cell, n, "reason");
            c_status = column(cell, n, "status");
            c_type = column(cell, n, "type");
            c_stage = column(cell, n, "stage");
            TAP_OK(c_reason >= 0 && c_status >= 0 && c_type >= 0 &&
                       c_stage >= 0,
                   "the table has the columns reason, status, type, stage");
            if (c_reason < 0 || c_status < 0 || c_type < 0 || c_stage < 0) {
                break;
            }
            continue;
        }
        if (n <= c_reason || n <= c_status || n <= c_type || n <= c_stage) {
            TAP_OK(0, "a row has every column: %s", cell[0]);
            all = 0;
            continue;
        }

        gd_reason_e r = gd_reason_find(cell[c_reason]);
        const gd_reason_t *rs = gd_reason(r);

        rows++;
        if (r == GD_REASON_LAST || r == GD_REASON_NONE) {
            TAP_OK(0, "the doc's %s is a reason of the table", cell[c_reason]);
            all = 0;
            continue;
        }
        if (seen[r]++) {
            TAP_OK(0, "the doc lists %s once", rs->name);
            all = 0;
        }
        if (atoi(cell[c_status]) != rs->status ||
            strcmp(cell[c_type], rs->type) != 0 ||
            strcmp(cell[c_stage], rs->stage) != 0) {
            TAP_OK(0, "the doc's %s: %s %s %s, the table's: %d %s %s", rs->name,
                   cell[c_status], cell[c_stage], cell[c_type], rs->status,
                   rs->stage, rs->type);
            all = 0;
        }
    }
    fclose(f);

    for (int i = GD_REASON_NONE + 1; i < GD_REASON_LAST; i++) {
        if (!seen[i]) {
            TAP_OK(0, "the doc lists %s", gd_reason((gd_reason_e)i)->name);
            all = 0;
        }
    }
    TAP_OK(rows == GD_REASON_LAST - 1, "the doc lists %d reasons, the table %d",
           rows, GD_REASON_LAST - 1);
    TAP_OK(all, "every reason of the doc has the table's status, stage and "
                "type");
}

int main(void)
{
    table_is_whole();
    doc_matches();
    return tap_done();
}
