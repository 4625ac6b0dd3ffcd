/*
 * gd_uuid: UUIDv7 (RFC 9562) decision and record ids.
 *
 * 48 bits of Unix time in milliseconds, then a 12-bit sequence that keeps
 * ids from one generator strictly increasing within a millisecond
 * (RFC 9562 section 6.2, method 1), then 62 random bits.
 *
 * Random bytes come from OpenSSL's RAND_bytes(), drawn a block at a time.
 * A generator is not thread-safe: keep one per thread or process, and
 * call gd_uuid_gen_init() again in a child after fork(), so that two
 * processes never share the random block.
 */
#ifndef GD_UUID_H
#define GD_UUID_H

#include <stddef.h>
#include <stdint.h>

#define GD_UUID_LEN 16
#define GD_UUID_STRLEN 36

#define GD_UUID_RANDOM_BLOCK 512

typedef struct {
    uint64_t last_ms;
    uint16_t seq;
    uint16_t used;
    uint8_t random[GD_UUID_RANDOM_BLOCK];
} gd_uuid_gen_t;

/* Resets a generator: the next id draws fresh random bytes. */
void gd_uuid_gen_init(gd_uuid_gen_t *gen);

/* Writes the next id for unix_ms into out; -1 when no randomness. */
int gd_uuid7_next(gd_uuid_gen_t *gen, uint64_t unix_ms,
                  uint8_t out[GD_UUID_LEN]);

/* Writes the 36-character lowercase text form (no NUL) into out. */
void gd_uuid_format(const uint8_t in[GD_UUID_LEN], char out[GD_UUID_STRLEN]);

/* The Unix time in milliseconds that an id carries. */
uint64_t gd_uuid7_ms(const uint8_t in[GD_UUID_LEN]);

#endif
