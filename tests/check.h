/*
 * check: the project's small test framework.
 *
 * A test executable lists its cases in a table and hands it to check_main(), which runs every
 * case (or those whose name contains argv[1]), prints one line per case and ends with exactly
 * one line "N passed, N failed"; the exit status is non-zero when a case failed. Checks never
 * use assert(), so the suite means the same with -Db_ndebug=true.
 *
 * CHECK() and the CHECK_EQ_* macros record a failure and let the case go on; REQUIRE() records
 * it and leaves the case at once (a longjmp back into check_main()), for preconditions without
 * which the rest of the case would only crash.
 *
 *     static void
 *     redeem_more_than_balance_is_refused(void)
 *     {
 *         CHECK_EQ_INT(status, CL_INSUFFICIENT_BALANCE);
 *     }
 *
 *     int
 *     main(int argc, char **argv)
 *     {
 *         static const check_case_t cases[] = { CHECK_CASE(redeem_more_than_balance_is_refused) };
 *         return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
 *     }
 */
#ifndef CARDLEDGER_TESTS_CHECK_H
#define CARDLEDGER_TESTS_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*check_fn)(void);

/* One test case: its name (a sentence of behaviour) and its function. */
typedef struct check_case {
    const char *name;
    check_fn fn;
} check_case_t;

/* clang-format off */
#define CHECK_CASE(fn) { #fn, fn }
/* clang-format on */

/* Records a failure of the running case with its location and a formatted explanation. */
void check_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Leaves the running case (after check_fail()); never returns. */
_Noreturn void check_abort_case(void);

/* How many checks failed in the running case so far. */
unsigned check_case_failures(void);

/* Runs the cases; returns the process exit status (0 when every case passed). */
int check_main(int argc, char **argv, const check_case_t *cases, size_t n);

#define CHECK(cond)                                             \
    do {                                                        \
        if (!(cond))                                            \
            check_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
    } while (0)

#define REQUIRE(cond)                                             \
    do {                                                          \
        if (!(cond)) {                                            \
            check_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond); \
            check_abort_case();                                   \
        }                                                         \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                        \
    do {                                                                                          \
        long long check_a_ = (long long)(a);                                                      \
        long long check_b_ = (long long)(b);                                                      \
        if (check_a_ != check_b_)                                                                 \
            check_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, check_a_, check_b_); \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                        \
    do {                                                                                          \
        unsigned long long check_a_ = (unsigned long long)(a);                                    \
        unsigned long long check_b_ = (unsigned long long)(b);                                    \
        if (check_a_ != check_b_)                                                                 \
            check_fail(__FILE__, __LINE__, "%s == %s: %llu != %llu", #a, #b, check_a_, check_b_); \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                              \
    do {                                                                                \
        const char *check_a_ = (a);                                                     \
        const char *check_b_ = (b);                                                     \
        if (!check_str_eq_(check_a_, check_b_))                                         \
            check_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,        \
                       check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
    } while (0)

/* Helper of CHECK_EQ_STR: both NULL, or both equal strings. */
bool check_str_eq_(const char *a, const char *b);

#endif /* CARDLEDGER_TESTS_CHECK_H */
