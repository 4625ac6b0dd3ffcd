/*
 * gd_idset: a bounded set of 16-byte ids that forgets its oldest.
 *
 * guardd remembers the ids of the records it journaled last, so that a
 * record sent again (after a reconnect, from a spill file, after a crash)
 * is recognised and not journaled twice.  When the set is full, adding an
 * id evicts the one added longest ago (first in, first out).
 *
 * The ids live in a ring (16 bytes each) indexed by an open-addressing
 * hash table of 2 * capacity 32-bit slots (linear probing, deletion by
 * backward shift: no tombstones): about capacity * 24 bytes, allocated
 * once.  add and has are O(1) on average.  The hash is keyed with random
 * bytes per set, so ids chosen by a peer cannot force long probes.
 *
 * Not thread-safe: guardd uses it from its writer thread only.
 */
#ifndef GD_IDSET_H
#define GD_IDSET_H

#include <stddef.h>
#include <stdint.h>

#define GD_IDSET_ID_LEN 16

/* the largest capacity (slot numbers must fit in 32 bits) */
#define GD_IDSET_MAX_CAPACITY ((size_t)1 << 30)

typedef struct gd_idset_s gd_idset_t;

/* A set for at most capacity ids (1 to GD_IDSET_MAX_CAPACITY); NULL when
 * out of memory or capacity is out of range. */
gd_idset_t *gd_idset_new(size_t capacity);

/* Adds id: 1 when added (evicting the oldest id when the set was full),
 * 0 when it was already there (it then keeps its place in the order). */
int gd_idset_add(gd_idset_t *s, const uint8_t id[GD_IDSET_ID_LEN]);

/* 1 when id is in the set, else 0. */
int gd_idset_has(const gd_idset_t *s, const uint8_t id[GD_IDSET_ID_LEN]);

/* How many ids the set holds now, and at most. */
size_t gd_idset_count(const gd_idset_t *s);
size_t gd_idset_capacity(const gd_idset_t *s);

void gd_idset_free(gd_idset_t *s);

#endif
