/*
 * Preloaded after GCC's libubsan into nginx by t/lib/Guard/Test.pm under
 * GUARD_SANITIZE: makes UBSan read its options at process start.
 *
 * GCC's UBSan runtime initializes at the first report, and reads
 * UBSAN_OPTIONS from /proc/self/environ; by then nginx has overwritten
 * that memory with the process title, so the options (print_stacktrace,
 * abort_on_error) are lost.  This constructor runs before nginx's main()
 * and hands UBSan one made-up report, which the harness's suppressions
 * file (a line "signed-integer-overflow:guard-ubsan-init") suppresses:
 * looking the suppression up initializes the runtime, with the options.
 *
 * The structures are the compiler's ABI with the runtime (ubsan_value.h,
 * ubsan_handlers.h): a type descriptor, a source location, and the data
 * of an overflow check.
 */

#include <stdint.h>

typedef struct {
    uint16_t     kind;       /* 0: integer */
    uint16_t     info;       /* log2(bits) << 1 | signed */
    char         name[8];
} guard_ubsan_type_t;

typedef struct {
    const char  *file;
    uint32_t     line;
    uint32_t     column;
} guard_ubsan_loc_t;

typedef struct {
    guard_ubsan_loc_t          loc;
    const guard_ubsan_type_t  *type;
} guard_ubsan_overflow_t;

void __ubsan_handle_add_overflow(void *data, uintptr_t lhs, uintptr_t rhs);

static const guard_ubsan_type_t  guard_ubsan_int = { 0, (5 << 1) | 1, "'int'" };


__attribute__((constructor)) static void
guard_ubsan_init(void)
{
    guard_ubsan_overflow_t  data = {
        { "guard-ubsan-init", 1, 1 }, &guard_ubsan_int
    };

    __ubsan_handle_add_overflow(&data, 1, 1);
}
