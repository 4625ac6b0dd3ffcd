/*
 * Unit tests for gd_nearest: edit distances, and the nearest name only
 * when it is near enough to be a typo.
 */
#include "gd_nearest.h"
#include "tap.h"

#include <stdint.h>
#include <string.h>

static const char *const reasons[] = {"token_expired", "token_invalid",
                                      "token_missing", "rate_limited",
                                      "risk_deny",     "risk_step_up"};
#define NREASONS (sizeof(reasons) / sizeof(reasons[0]))

static int nearest_is(const char *word, const char *want)
{
    const char *got = gd_nearest(word, reasons, NREASONS);
    return want ? got != NULL && strcmp(got, want) == 0 : got == NULL;
}

int main(void)
{
    char long_name[300];

    TAP_OK(gd_nearest_distance("", "") == 0, "empty to empty: 0");
    TAP_OK(gd_nearest_distance("abc", "") == 3, "to empty: the length");
    TAP_OK(gd_nearest_distance("", "abc") == 3, "from empty: the length");
    TAP_OK(gd_nearest_distance("burst", "burst") == 0, "the same: 0");
    TAP_OK(gd_nearest_distance("burts", "burst") == 1, "a swap counts 1");
    TAP_OK(gd_nearest_distance("bust", "burst") == 1, "an insertion counts 1");
    TAP_OK(gd_nearest_distance("bursts", "burst") == 1, "a deletion counts 1");
    TAP_OK(gd_nearest_distance("kitten", "sitting") == 3, "kitten/sitting: 3");
    TAP_OK(gd_nearest_distance("ca", "abc") == 3, "ca/abc: 3 (no edit twice)");

    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    TAP_OK(gd_nearest_distance(long_name, "a") == SIZE_MAX,
           "over 255 bytes: SIZE_MAX");

    TAP_OK(nearest_is("token_expird", "token_expired"), "a letter missing");
    TAP_OK(nearest_is("token_exipred", "token_expired"), "two letters swapped");
    TAP_OK(nearest_is("TOKEN_EXPIRED", NULL), "case counts: too far");
    TAP_OK(nearest_is("rate_limit", "rate_limited"), "a short form");
    TAP_OK(nearest_is("risk_deni", "risk_deny"), "one letter wrong");
    TAP_OK(nearest_is("nothing", NULL), "nothing near: NULL");
    TAP_OK(nearest_is("", NULL), "the empty word: NULL");
    TAP_OK(gd_nearest("x", reasons, 0) == NULL, "no names: NULL");

    return tap_done();
}
