/*
 * tap.h: the few TAP helpers the unit tests need.
 */
#ifndef GD_TAP_H
#define GD_TAP_H

#include <stdio.h>

static int tap_n;
static int tap_failed;

#define TAP_OK(cond, ...)                                                      \
    do {                                                                       \
        int tap_c_ = (cond);                                                   \
        printf("%sok %d - ", tap_c_ ? "" : "not ", ++tap_n);                   \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
        if (!tap_c_) {                                                         \
            tap_failed++;                                                      \
            printf("#   failed at %s line %d\n", __FILE__, __LINE__);          \
        }                                                                      \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
