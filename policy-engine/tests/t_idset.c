/*
 * Unit tests for gd_idset: add/has, duplicates, eviction of the oldest
 * (first in, first out), and a few hundred thousand random ids checked
 * against a plain model of the window.
 */
#include "gd_idset.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* a deterministic id from a number: low-entropy, like test UUIDs */
static void id_of(uint64_t n, uint8_t id[GD_IDSET_ID_LEN])
{
    memset(id, 0, GD_IDSET_ID_LEN);
    id[0] = 0x01;
    id[1] = 0x90;
    id[6] = 0x70;
    id[8] = 0x80;
    for (int i = 0; i < 6; i++) {
        id[15 - i] = (uint8_t)(n >> (8 * i));
    }
}

/* xorshift64*: reproducible random ids */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static void random_id(uint8_t id[GD_IDSET_ID_LEN])
{
    uint64_t a = rng(), b = rng();
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
}

int main(void)
{
    uint8_t id[GD_IDSET_ID_LEN];

    TAP_OK(gd_idset_new(0) == NULL, "capacity 0 is refused");
    TAP_OK(gd_idset_new(GD_IDSET_MAX_CAPACITY + 1) == NULL,
           "a capacity past the maximum is refused");

    /* basics */
    gd_idset_t *s = gd_idset_new(4);
    TAP_OK(s != NULL && gd_idset_capacity(s) == 4 && gd_idset_count(s) == 0,
           "a set for 4 ids, empty");
    id_of(1, id);
    TAP_OK(!gd_idset_has(s, id), "an id not added is not there");
    TAP_OK(gd_idset_add(s, id) == 1, "add: 1");
    TAP_OK(gd_idset_has(s, id), "then it is there");
    TAP_OK(gd_idset_add(s, id) == 0 && gd_idset_count(s) == 1,
           "adding it again: 0, counted once");

    /* eviction order: first in, first out */
    for (uint64_t n = 2; n <= 4; n++) {
        id_of(n, id);
        gd_idset_add(s, id);
    }
    TAP_OK(gd_idset_count(s) == 4, "full at 4");
    id_of(5, id);
    TAP_OK(gd_idset_add(s, id) == 1 && gd_idset_count(s) == 4,
           "a 5th id is added, the count stays 4");
    id_of(1, id);
    TAP_OK(!gd_idset_has(s, id), "the oldest (1) was evicted");
    int kept = 1;
    for (uint64_t n = 2; n <= 5; n++) {
        id_of(n, id);
        kept &= gd_idset_has(s, id);
    }
    TAP_OK(kept, "2 to 5 are kept");

    /* a duplicate does not refresh its place */
    id_of(2, id);
    TAP_OK(gd_idset_add(s, id) == 0, "2 again: a duplicate");
    id_of(6, id);
    gd_idset_add(s, id);
    id_of(2, id);
    TAP_OK(!gd_idset_has(s, id), "and is still the next evicted");
    id_of(3, id);
    TAP_OK(gd_idset_has(s, id), "3 stays");

    /* evicted ids can come back, as new */
    id_of(1, id);
    TAP_OK(gd_idset_add(s, id) == 1, "an evicted id is added again");
    id_of(3, id);
    TAP_OK(!gd_idset_has(s, id), "evicting 3 in turn");
    gd_idset_free(s);

    /* capacity 1 */
    s = gd_idset_new(1);
    id_of(7, id);
    gd_idset_add(s, id);
    id_of(8, id);
    TAP_OK(gd_idset_add(s, id) == 1 && gd_idset_has(s, id), "capacity 1");
    id_of(7, id);
    TAP_OK(!gd_idset_has(s, id), "holds only the last id");
    gd_idset_free(s);

    /* many ids: the set agrees with a model of the window (the last
     * capacity distinct ids), through many evictions */
    size_t cap = 65536, total = 400000;
    uint8_t(*all)[GD_IDSET_ID_LEN] = malloc(total * GD_IDSET_ID_LEN);
    s = gd_idset_new(cap);
    int adds = 1, window = 1, gone = 1, dups = 1;

    for (size_t i = 0; i < total; i++) {
        random_id(all[i]);
        if (gd_idset_add(s, all[i]) != 1) {
            adds = 0;
        }
        /* now and then, one from the window again: a duplicate */
        if (i % 7 == 0 && i > 0) {
            size_t back = (size_t)(rng() % (i < cap ? i : cap));
            if (gd_idset_add(s, all[i - back]) != 0) {
                dups = 0;
            }
        }
    }
    TAP_OK(adds, "%zu random ids added", total);
    TAP_OK(dups, "ids still in the window are duplicates");
    TAP_OK(gd_idset_count(s) == cap, "the count is the capacity");
    for (size_t i = total - cap; i < total; i++) {
        window &= gd_idset_has(s, all[i]);
    }
    TAP_OK(window, "the last %zu ids are all there", cap);
    for (size_t i = 0; i < total - cap; i++) {
        gone &= !gd_idset_has(s, all[i]);
    }
    TAP_OK(gone, "the %zu older ones are all gone", total - cap);
    gd_idset_free(s);

    /* sequential, low-entropy ids (as tests and some clients make) */
    s = gd_idset_new(100000);
    int seq = 1;
    for (uint64_t n = 0; n < 300000; n++) {
        id_of(n, id);
        seq &= gd_idset_add(s, id) == 1;
    }
    for (uint64_t n = 0; n < 300000; n++) {
        id_of(n, id);
        seq &= gd_idset_has(s, id) == (n >= 200000);
    }
    TAP_OK(seq, "300000 sequential ids: the last 100000 kept");
    gd_idset_free(s);
    free(all);

    gd_idset_free(NULL);
    TAP_OK(1, "freeing NULL is harmless");

    return tap_done();
}
