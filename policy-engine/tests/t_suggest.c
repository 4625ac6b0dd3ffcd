/*
 * Unit tests for gd_suggest: the edit distance, and the nearest known
 * name within 1 edit (short words) or 2.
 */
#include "gd_suggest.h"
#include "tap.h"

#include <stdint.h>
#include <string.h>

int main(void)
{
    static const char *const members[] = {"name", "requests", "period", "burst",
                                          "per",  "match",    "shadow", NULL};
    static const char *const none[] = {NULL};
    char long_name[GD_SUGGEST_MAX + 2];

    TAP_OK(gd_suggest_distance("", "") == 0, "empty: 0");
    TAP_OK(gd_suggest_distance("burst", "burst") == 0, "equal: 0");
    TAP_OK(gd_suggest_distance("", "abc") == 3, "from nothing: its length");
    TAP_OK(gd_suggest_distance("burts", "burst") == 1,
           "a swap of two adjacent characters: 1");
    TAP_OK(gd_suggest_distance("bust", "burst") == 1, "a deletion: 1");
    TAP_OK(gd_suggest_distance("bursts", "burst") == 1, "an insertion: 1");
    TAP_OK(gd_suggest_distance("barst", "burst") == 1, "a substitution: 1");
    TAP_OK(gd_suggest_distance("kitten", "sitting") == 3, "kitten, sitting: 3");
    TAP_OK(gd_suggest_distance("ca", "abc") == 3,
           "ca, abc: 3 (optimal string alignment, no edit twice)");

    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    TAP_OK(gd_suggest_distance(long_name, "a") == SIZE_MAX,
           "a name longer than GD_SUGGEST_MAX: SIZE_MAX");

    const char *s = gd_suggest("burts", members);
    TAP_OK(s && strcmp(s, "burst") == 0, "burts: burst");
    s = gd_suggest("reqeusts", members);
    TAP_OK(s && strcmp(s, "requests") == 0, "reqeusts: requests");
    s = gd_suggest("shdw", members);
    TAP_OK(s == NULL, "shdw (4 bytes, 2 edits): nothing");
    s = gd_suggest("pre", members);
    TAP_OK(s && strcmp(s, "per") == 0, "pre: per (1 edit)");
    s = gd_suggest("periods", members);
    TAP_OK(s && strcmp(s, "period") == 0, "periods: period");
    TAP_OK(gd_suggest("x", members) == NULL, "x: nothing");
    TAP_OK(gd_suggest("tenant", members) == NULL, "tenant: nothing near");
    TAP_OK(gd_suggest("burst", none) == NULL, "no known names: nothing");

    /* reason codes (guardctl blocked --reason) */
    static const char *const reasons[] = {"token_expired",
                                          "token_invalid",
                                          "token_missing",
                                          "rate_limited",
                                          "risk_deny",
                                          "risk_step_up",
                                          NULL};
    s = gd_suggest("token_expird", reasons);
    TAP_OK(s && strcmp(s, "token_expired") == 0, "a letter missing");
    s = gd_suggest("token_exipred", reasons);
    TAP_OK(s && strcmp(s, "token_expired") == 0, "two letters swapped");
    TAP_OK(gd_suggest("TOKEN_EXPIRED", reasons) == NULL,
           "case counts: too far");
    s = gd_suggest("rate_limit", reasons);
    TAP_OK(s && strcmp(s, "rate_limited") == 0, "a short form");
    s = gd_suggest("risk_deni", reasons);
    TAP_OK(s && strcmp(s, "risk_deny") == 0, "one letter wrong");
    TAP_OK(gd_suggest("nothing", reasons) == NULL, "nothing near: NULL");
    TAP_OK(gd_suggest("", reasons) == NULL, "the empty word: NULL");

    return tap_done();
}
