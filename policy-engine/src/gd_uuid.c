/*
 * gd_uuid: UUIDv7 ids, see gd_uuid.h.
 */
#include "gd_uuid.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define GD_UUID_SEQ_MAX 0x0fff
#define GD_UUID_RANDOM_PER_ID 10

void gd_uuid_gen_init(gd_uuid_gen_t *gen)
{
    OPENSSL_cleanse(gen, sizeof(*gen));
    gen->used = GD_UUID_RANDOM_BLOCK;
}

int gd_uuid7_next(gd_uuid_gen_t *gen, uint64_t unix_ms,
                  uint8_t out[GD_UUID_LEN])
{
    uint8_t *rnd;

    if (gen->used > GD_UUID_RANDOM_BLOCK - GD_UUID_RANDOM_PER_ID) {
        if (RAND_bytes(gen->random, GD_UUID_RANDOM_BLOCK) != 1) {
            return -1;
        }
        gen->used = 0;
    }

    rnd = gen->random + gen->used;
    gen->used += GD_UUID_RANDOM_PER_ID;

    if (unix_ms > gen->last_ms) {
        /* a new millisecond: start the sequence low, leave headroom */
        gen->last_ms = unix_ms;
        gen->seq = (uint16_t)(((rnd[8] << 8) | rnd[9]) & 0x01ff);

    } else if (gen->seq < GD_UUID_SEQ_MAX) {
        /* same millisecond, or the clock went back: keep increasing */
        gen->seq++;

    } else {
        /* the sequence is spent: borrow the next millisecond */
        gen->last_ms++;
        gen->seq = 0;
    }

    out[0] = (uint8_t)(gen->last_ms >> 40);
    out[1] = (uint8_t)(gen->last_ms >> 32);
    out[2] = (uint8_t)(gen->last_ms >> 24);
    out[3] = (uint8_t)(gen->last_ms >> 16);
    out[4] = (uint8_t)(gen->last_ms >> 8);
    out[5] = (uint8_t)gen->last_ms;
    out[6] = (uint8_t)(0x70 | ((gen->seq >> 8) & 0x0f));
    out[7] = (uint8_t)gen->seq;
    out[8] = (uint8_t)(0x80 | (rnd[0] & 0x3f));

    for (size_t i = 9; i < GD_UUID_LEN; i++) {
        out[i] = rnd[i - 8];
    }

    return 0;
}

void gd_uuid_format(const uint8_t in[GD_UUID_LEN], char out[GD_UUID_STRLEN])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    for (size_t i = 0; i < GD_UUID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[n++] = '-';
        }
        out[n++] = hex[in[i] >> 4];
        out[n++] = hex[in[i] & 0x0f];
    }
}

uint64_t gd_uuid7_ms(const uint8_t in[GD_UUID_LEN])
{
    uint64_t ms = 0;

    for (size_t i = 0; i < 6; i++) {
        ms = (ms << 8) | in[i];
    }

    return ms;
}
