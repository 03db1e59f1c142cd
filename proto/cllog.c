/*
 * cllog: one line per event on stderr (see cllog.h).
 *
 * Each line is formatted into a local buffer and written with a single write(2), so lines from
 * the daemon, the projector and anything sharing their stderr (the test harness) never
 * interleave inside a line.
 */
#include "cllog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define S_LINE_MAX 2048 /* longer lines are truncated */

static cllog_level_t s_level = CLLOG_INFO;
static const char *s_program = "cardledger";

static const char *const s_names[] = { "error", "warn", "info", "debug" };

void
cllog_setup(const char *program, cllog_level_t level)
{
    if (program != NULL)
        s_program = program;
    s_level = level;
}

bool
cllog_enabled(cllog_level_t level)
{
    return level <= s_level;
}

int
cllog_level_parse(const char *name, cllog_level_t *out)
{
    for (size_t i = 0; i < sizeof(s_names) / sizeof(s_names[0]); i++) {
        if (strcmp(name, s_names[i]) == 0) {
            *out = (cllog_level_t)i;
            return 0;
        }
    }
    return -1;
}

void
cllog_msg(cllog_level_t level, const char *fmt, ...)
{
    char line[S_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (!cllog_enabled(level))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000L, s_program, (long)getpid(), s_names[level]);
    if (n < 0)
        return;
    size_t used = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    va_start(ap, fmt);
    int m = vsnprintf(line + used, sizeof(line) - used, fmt, ap);
    va_end(ap);
    if (m > 0)
        used += (size_t)m < sizeof(line) - used ? (size_t)m : sizeof(line) - used - 1;
    if (used >= sizeof(line) - 1)
        used = sizeof(line) - 2;
    line[used++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, used);
    (void)w;
}
