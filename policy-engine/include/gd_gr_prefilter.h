/*
 * gd_gr_prefilter: the prefilter of a guardrails section's patterns, two
 * tiers of Hyperscan databases scanned once per normalised text.
 *
 * The full-pattern tier: each pattern rule's own expression, compiled by
 * Hyperscan with HS_FLAG_PREFILTER (it matches a superset of the
 * pattern, approximating what it does not support: back-references,
 * lookarounds, atomic groups, possessive quantifiers, conditionals) and
 * the flags of the rule's PCRE2 options (gd_gr_hs_expr).  Where the two
 * libraries could disagree the expression is widened first: a UCP
 * pattern's \w \W \d \D (their Unicode versions differ) become ASCII
 * sets plus every non-ASCII character (a subset in a negated class), its
 * \b \B require nothing, and a caseless UCP pattern's non-ASCII
 * characters become any character.  What it cannot widen soundly (flag
 * x, \Q, \K, \p, (*VERB)s, POSIX classes of a UCP pattern, a caseless
 * non-ASCII character by number, ...) and what Hyperscan refuses even in
 * prefilter mode goes to the second tier.  A pattern that also has atoms
 * (below) gets a database of its own, scanned only over a text that holds
 * one of them (both filters are sound, so is their conjunction); the
 * others are one database, scanned once per text.  The UTF-8 patterns'
 * rewrite assumes UTF-8, so on a text that is not, they run.
 *
 * The atoms tier: a pattern's "atoms" computed from its text, a set of
 * literals one of which appears (ASCII case ignored) in every text the
 * pattern matches.  A pattern for which that cannot be established
 * soundly (flag x, conditionals, callouts, (*ACCEPT), a required literal
 * shorter than GD_GR_ATOM_MIN bytes, ...) gets none and always runs.
 * Its atoms go into one Hyperscan literal database (caseless,
 * single-match), scanned with white space collapsed.
 *
 * gd_gr_eval() runs PCRE2 only for the rules either tier saw, plus those
 * that always run and the detectors.  The atoms' computation is a
 * widening: lookarounds, anchors, back-references, classes of more than
 * a few characters and optional parts require nothing; it never requires
 * more than the pattern does.  When Hyperscan is not usable (a CPU it
 * does not support, no memory) the section has no prefilter and every
 * rule runs: a prefilter changes speed, never a verdict.
 * docs/guardrails.md, "Speed".
 */
#ifndef GD_GR_PREFILTER_H
#define GD_GR_PREFILTER_H

#include <stddef.h>
#include <stdint.h>

#include "gd_guardrails.h"

#define GD_GR_ATOM_MIN 2  /* the shortest atom that filters */
#define GD_GR_ATOM_MAX 32 /* the longest literal kept */
#define GD_GR_ATOMS_MAX 1024

/*
 * White space in the scanned view: the scan sees each run of ASCII white
 * space (what \s matches on normalised text: gd_norm maps the Unicode
 * spaces to ' ') as one ' ', and so do the atoms, so that "from\s+now"
 * has the atom "from now" and "from \t now" holds it.
 */
static inline int gd_gr_ws(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* in[0..len) with each white-space run one ' ' into out (may be in):
   its length */
size_t gd_gr_ws_collapse(const char *in, size_t len, char *out);

/* whether gd_gr_ws_collapse would leave in[0..len) as it is (its white
   space single spaces): then the scan reads it in place */
int gd_gr_ws_single(const char *in, size_t len);

/* the atoms of one pattern */
typedef struct {
    size_t n;
    unsigned char len[GD_GR_ATOMS_MAX];
    char lit[GD_GR_ATOMS_MAX][GD_GR_ATOM_MAX]; /* ASCII lowercased */
    int caseless; /* a caseless pattern: in UTF mode 'k' and 's' also
                     match U+212A and U+017F */
} gd_gr_atoms_t;

/*
 * The atoms of pattern (PCRE2 options opts, as the loader compiles it)
 * into a: 0, or -1 when it has none (it always runs), with why[0..wn)
 * saying why.
 */
int gd_gr_atoms(const char *pattern, uint32_t opts, gd_gr_atoms_t *a, char *why,
                size_t wn);

typedef struct gd_gr_prefilter_s gd_gr_prefilter_t;

/*
 * The prefilter of rules[0..n), or NULL when no rule is in either tier
 * or Hyperscan is not usable (then every rule runs).  cache: the
 * directory of compiled full-pattern databases (gd_gr_hscache.h), or
 * NULL to compile them every time.
 */
gd_gr_prefilter_t *gd_gr_prefilter_new(const gd_gr_rule_t *rules, size_t n,
                                       const char *cache);
void gd_gr_prefilter_free(gd_gr_prefilter_t *p);

/* how many of the rules are on atoms, and how many atoms in all */
void gd_gr_prefilter_counts(const gd_gr_prefilter_t *p, size_t *rules,
                            size_t *atoms);

/*
 * The full-pattern tier's expression of pattern (PCRE2 options opts):
 * 0 with *expr (malloc'd) and *flags for hs_compile(), or -1 with
 * why[0..wn) saying why it has none.  Hyperscan may still refuse it.
 */
int gd_gr_hs_expr(const char *pattern, uint32_t opts, char **expr,
                  unsigned *flags, char *why, size_t wn);

enum { GD_GR_PF_ALWAYS, GD_GR_PF_ATOMS, GD_GR_PF_FULL };

/* rule i's tier (GD_GR_PF_*), *why saying why it is not in the full one */
int gd_gr_prefilter_tier(const gd_gr_prefilter_t *p, size_t i,
                         const char **why);

/* whether rule i, in the full tier, is scanned only where one of its atoms
   is (its own database) */
int gd_gr_prefilter_gated(const gd_gr_prefilter_t *p, size_t i);

/*
 * The parts of a pattern that every match holds: the groups of its top
 * level (a concatenation, no '|' there) that occur at least once.  Copies
 * (free()) of at most GD_GR_MAX_PARTS of them into parts[]; how many: 0
 * unless two or more, and 0 for a pattern whose meaning a cut could
 * change: back-references, recursion or calls, options set for the rest
 * of the pattern ((?i) at the top level), \Q..\E, verbs, branch resets,
 * conditions, a quantifier it does not read, flag x (opts: the pattern's
 * PCRE2 options).  A gated rule's parts have a database of their own,
 * scanned over a text its pattern's own database matched; the pattern
 * runs only when all of them match.
 */
#define GD_GR_MAX_PARTS 8
size_t gd_gr_parts(const char *pattern, uint32_t opts, char **parts);

typedef struct {
    size_t full;      /* pattern rules in the full-pattern tier */
    size_t atoms;     /* on atoms */
    size_t always;    /* that always run */
    size_t natoms;    /* atoms in all */
    size_t gated;     /* of the full tier, with a database of their own
                         that their atoms gate */
    size_t parts;     /* the parts of those patterns in their databases,
                         each a condition too (docs/guardrails.md) */
    size_t atoms_dbs; /* the atoms' databases: one per set of target kinds
                         (a text scans those of its kind) */
    size_t db_bytes;  /* the Hyperscan databases' size */
} gd_gr_pf_stats_t;

void gd_gr_prefilter_stats(const gd_gr_prefilter_t *p, gd_gr_pf_stats_t *st);

/* a worker's Hyperscan scratch, grown for every database it scans */
typedef struct {
    void *hs;     /* hs_scratch_t * */
    uint64_t gen; /* the database it was last grown for */
    char *buf;    /* the text with its white space collapsed */
    size_t cap;
} gd_gr_pf_scratch_t;

void gd_gr_pf_scratch_free(gd_gr_pf_scratch_t *s);

/*
 * Scans text[0..len) once per database: run[i] is set to 1 for every rule
 * i that must run on it (its prefilter expression or one of its atoms
 * seen, or in no tier), 0 for the others; run has one
 * byte more than the rules (the scan's own).  0, or -1
 * (no memory, a Hyperscan error): then run[] is all 1.
 */
int gd_gr_prefilter_scan(const gd_gr_prefilter_t *p, gd_gr_pf_scratch_t *s,
                         const char *text, size_t len, unsigned char *run);

/*
 * The same for the rules of some target kinds (GD_GR_KIND bits): only the
 * databases of such rules are scanned, and run[i] of a rule of none of
 * kinds says nothing (the engine does not run it on this text).
 */
int gd_gr_prefilter_scan_kinds(const gd_gr_prefilter_t *p,
                               gd_gr_pf_scratch_t *s, const char *text,
                               size_t len, unsigned kinds, unsigned char *run);

#endif
