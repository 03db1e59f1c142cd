/*
 * plog: the projector's and the replay tool's log lines on stderr.
 *
 * Same shape as the daemon's log (daemon/log.c): one line per event, prefixed with the UTC time,
 * the program name, the process id and the level, written with a single write(2) so lines of
 * processes sharing a stderr never interleave. Card codes never appear in the log.
 */
#ifndef CARDLEDGER_PLOG_H
#define CARDLEDGER_PLOG_H

#include <stdbool.h>

typedef enum plog_level {
    PLOG_ERROR = 0, /* a projection stopped, a start refused */
    PLOG_WARN = 1,  /* something odd the projector recovered from */
    PLOG_INFO = 2,  /* start, rebuild progress, takeover, stop */
    PLOG_DEBUG = 3, /* every batch */
} plog_level_t;

/* The program name in each line ("cardledger-projector") and the level (default info). */
void plog_setup(const char *program, plog_level_t level);

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 for anything else. */
int plog_level_parse(const char *name, plog_level_t *out);

bool plog_enabled(plog_level_t level);

void plog_msg(plog_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define plog_error(...) plog_msg(PLOG_ERROR, __VA_ARGS__)
#define plog_warn(...)  plog_msg(PLOG_WARN, __VA_ARGS__)
#define plog_info(...)  plog_msg(PLOG_INFO, __VA_ARGS__)
#define plog_debug(...) plog_msg(PLOG_DEBUG, __VA_ARGS__)

#endif /* CARDLEDGER_PLOG_H */
