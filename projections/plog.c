/*
 * plog.c: log lines on stderr (see plog.h).
 */
#include "plog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define S_LINE_MAX 2048 /* longer lines are truncated */

static plog_level_t s_level = PLOG_INFO;
static const char *s_program = "cardledger-projector";

static const char *const s_names[] = { "error", "warn", "info", "debug" };

void
plog_setup(const char *program, plog_level_t level)
{
    if (program != NULL)
        s_program = program;
    s_level = level;
}

int
plog_level_parse(const char *name, plog_level_t *out)
{
    for (size_t i = 0; i < sizeof(s_names) / sizeof(s_names[0]); i++) {
        if (strcmp(name, s_names[i]) == 0) {
            *out = (plog_level_t)i;
            return 0;
        }
    }
    return -1;
}

bool
plog_enabled(plog_level_t level)
{
    return level <= s_level;
}

void
plog_msg(plog_level_t level, const char *fmt, ...)
{
    char line[S_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (!plog_enabled(level))
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
