/*
 * Unit tests for gd_uuid: UUIDv7 layout, order and text form.
 */
#include "gd_uuid.h"
#include "tap.h"

#include <string.h>

int main(void)
{
    gd_uuid_gen_t gen, other;
    uint8_t a[GD_UUID_LEN], b[GD_UUID_LEN];
    char text[GD_UUID_STRLEN + 1];
    uint64_t ms = 1700000000123ULL;
    int ordered = 1, layout = 1;

    gd_uuid_gen_init(&gen);
    TAP_OK(gd_uuid7_next(&gen, ms, a) == 0, "an id is made");
    TAP_OK((a[6] >> 4) == 7, "version nibble is 7");
    TAP_OK((a[8] & 0xc0) == 0x80, "variant bits are 10");
    TAP_OK(gd_uuid7_ms(a) == ms, "the id carries its millisecond");

    /* many ids in one millisecond stay strictly increasing */
    for (int i = 0; i < 20000; i++) {
        gd_uuid7_next(&gen, ms, b);
        if (memcmp(a, b, GD_UUID_LEN) >= 0) {
            ordered = 0;
        }
        if ((b[6] >> 4) != 7 || (b[8] & 0xc0) != 0x80) {
            layout = 0;
        }
        memcpy(a, b, GD_UUID_LEN);
    }
    TAP_OK(ordered, "20000 ids within one millisecond sort in order");
    TAP_OK(layout, "every id keeps version and variant");
    TAP_OK(gd_uuid7_ms(a) > ms, "a spent sequence borrows the next ms");

    /* a clock that steps back does not reorder ids */
    uint8_t c[GD_UUID_LEN];
    gd_uuid7_next(&gen, ms - 5000, c);
    TAP_OK(memcmp(a, c, GD_UUID_LEN) < 0, "a clock step back keeps order");

    /* a later millisecond sorts after */
    gd_uuid7_next(&gen, ms + 100000, b);
    TAP_OK(memcmp(c, b, GD_UUID_LEN) < 0, "a later ms sorts later");

    /* two generators (two workers) in the same ms differ */
    gd_uuid_gen_init(&gen);
    gd_uuid_gen_init(&other);
    gd_uuid7_next(&gen, ms, a);
    gd_uuid7_next(&other, ms, b);
    TAP_OK(memcmp(a, b, GD_UUID_LEN) != 0, "two generators never repeat");

    const uint8_t fixed[GD_UUID_LEN] = {0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00,
                                        0x7a, 0xbc, 0x8d, 0xef, 0x01, 0x23,
                                        0x45, 0x67, 0x89, 0xab};
    gd_uuid_format(fixed, text);
    text[GD_UUID_STRLEN] = '\0';
    TAP_OK(strcmp(text, "018bcfe5-6800-7abc-8def-0123456789ab") == 0,
           "text form: %s", text);

    return tap_done();
}
