/*
 * check: runs a table of test cases and counts what passed (see check.h).
 *
 * Each case runs in the same process, one after the other, with a setjmp point so REQUIRE()
 * can leave it early. Output goes to stdout, one line per case, then the summary line
 * "N passed, N failed" that CI greps for.
 */
#include "check.h"

#include <setjmp.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static jmp_buf s_case_jmp;
static bool s_in_case;
static unsigned s_case_failures;
static const char *s_case_name;

void
check_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    s_case_failures++;
    fprintf(stdout, "  %s:%d: %s: ", file, line, s_case_name ? s_case_name : "?");
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

_Noreturn void
check_abort_case(void)
{
    if (s_in_case)
        longjmp(s_case_jmp, 1);
    fprintf(stdout, "REQUIRE failed outside a test case\n");
    fflush(stdout);
    abort();
}

unsigned
check_case_failures(void)
{
    return s_case_failures;
}

bool
check_str_eq_(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static double
s_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs one case; its own frame holds the setjmp point, so no local of the caller is live
 * across the longjmp. */
static void
s_run_case(const check_case_t *c)
{
    if (setjmp(s_case_jmp) == 0) {
        s_in_case = true;
        c->fn();
    }
    s_in_case = false;
}

int
check_main(int argc, char **argv, const check_case_t *cases, size_t n)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    unsigned passed = 0;
    unsigned failed = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++) {
        if (filter != NULL && strstr(cases[i].name, filter) == NULL)
            continue;
        s_case_name = cases[i].name;
        s_case_failures = 0;
        fprintf(stdout, "--- %s\n", cases[i].name);
        double t0 = s_now_s();
        s_run_case(&cases[i]);
        double took = s_now_s() - t0;
        if (s_case_failures == 0) {
            passed++;
            fprintf(stdout, "ok   %s (%.2f s)\n", cases[i].name, took);
        } else {
            failed++;
            fprintf(stdout, "FAIL %s (%u failed checks, %.2f s)\n", cases[i].name, s_case_failures,
                    took);
        }
        s_case_name = NULL;
    }
    fprintf(stdout, "%u passed, %u failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}
