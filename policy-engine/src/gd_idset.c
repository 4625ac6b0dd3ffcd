/*
 * gd_idset: a bounded FIFO set of 16-byte ids, see gd_idset.h.
 */
#include "gd_idset.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

struct gd_idset_s {
    size_t capacity;
    size_t count;
    size_t head;   /* the ring position of the oldest id */
    size_t nslots; /* 2 * capacity */
    uint64_t key[2];
    uint8_t (*ring)[GD_IDSET_ID_LEN];
    uint32_t *slots; /* 0 empty, else the ring position + 1 */
};

static uint64_t mix(uint64_t x)
{
    /* the splitmix64 / murmur3 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* the home slot of id */
static size_t home(const gd_idset_t *s, const uint8_t *id)
{
    uint64_t a, b, h;

    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    h = mix(mix(a ^ s->key[0]) + (b ^ s->key[1]));

    /* the high 32 bits scaled to nslots (no modulo, no power of two) */
    return (size_t)(((h >> 32) * (uint64_t)s->nslots) >> 32);
}

static size_t next_slot(const gd_idset_t *s, size_t i)
{
    return i + 1 == s->nslots ? 0 : i + 1;
}

/* the slot that holds id, or the empty slot where it would go */
static size_t find(const gd_idset_t *s, const uint8_t *id, int *found)
{
    size_t i = home(s, id);

    while (s->slots[i] != 0) {
        if (memcmp(s->ring[s->slots[i] - 1], id, GD_IDSET_ID_LEN) == 0) {
            *found = 1;
            return i;
        }
        i = next_slot(s, i);
    }

    *found = 0;
    return i;
}

/* empties slot i, moving later entries of its cluster back into place */
static void remove_slot(gd_idset_t *s, size_t i)
{
    size_t j = i;

    s->slots[i] = 0;

    for (;;) {
        size_t k;

        j = next_slot(s, j);
        if (s->slots[j] == 0) {
            return;
        }

        /* an entry may move to i unless its home lies cyclically in
         * (i, j]: then it is already as close to home as it can be */
        k = home(s, s->ring[s->slots[j] - 1]);
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) {
            continue;
        }

        s->slots[i] = s->slots[j];
        s->slots[j] = 0;
        i = j;
    }
}

gd_idset_t *gd_idset_new(size_t capacity)
{
    gd_idset_t *s;

    if (capacity == 0 || capacity > GD_IDSET_MAX_CAPACITY) {
        return NULL;
    }

    s = calloc(1, sizeof(gd_idset_t));
    if (s == NULL) {
        return NULL;
    }

    s->capacity = capacity;
    s->nslots = capacity * 2;
    s->ring = malloc(capacity * GD_IDSET_ID_LEN);
    s->slots = calloc(s->nslots, sizeof(uint32_t));

    if (s->ring == NULL || s->slots == NULL) {
        gd_idset_free(s);
        return NULL;
    }

    if (RAND_bytes((unsigned char *)s->key, sizeof(s->key)) != 1) {
        /* still a good hash, only not a secret one */
        s->key[0] = mix((uint64_t)time(NULL));
        s->key[1] = mix((uint64_t)(uintptr_t)s);
    }

    return s;
}

int gd_idset_has(const gd_idset_t *s, const uint8_t id[GD_IDSET_ID_LEN])
{
    int found;

    find(s, id, &found);
    return found;
}

int gd_idset_add(gd_idset_t *s, const uint8_t id[GD_IDSET_ID_LEN])
{
    size_t slot, pos;
    int found;

    slot = find(s, id, &found);
    if (found) {
        return 0;
    }

    if (s->count == s->capacity) {
        /* full: the oldest goes, its ring place takes the new id */
        size_t old;
        int present;

        pos = s->head;
        old = find(s, s->ring[pos], &present);
        if (present) {
            remove_slot(s, old);
        }
        s->head = s->head + 1 == s->capacity ? 0 : s->head + 1;

        /* the removal may have moved entries: look again */
        slot = find(s, id, &found);
    } else {
        pos = s->head + s->count;
        if (pos >= s->capacity) {
            pos -= s->capacity;
        }
        s->count++;
    }

    memcpy(s->ring[pos], id, GD_IDSET_ID_LEN);
    s->slots[slot] = (uint32_t)(pos + 1);
    return 1;
}

size_t gd_idset_count(const gd_idset_t *s)
{
    return s->count;
}

size_t gd_idset_capacity(const gd_idset_t *s)
{
    return s->capacity;
}

void gd_idset_free(gd_idset_t *s)
{
    if (s == NULL) {
        return;
    }
    free(s->ring);
    free(s->slots);
    free(s);
}
