/*
 * plog: the projector's and the replay tool's names for their log lines on stderr.
 *
 * The lines themselves are proto/cllog.c's, shared with the daemon: UTC time, the program name
 * and process id, the level, the message, written with a single write(2) so lines of processes
 * sharing a stderr never interleave. This header only keeps the projections' short names
 * (plog_info(), PLOG_INFO). Card codes never appear in the log.
 */
#ifndef CARDLEDGER_PLOG_H
#define CARDLEDGER_PLOG_H

#include <stdbool.h>

#include "cllog.h"

typedef cllog_level_t plog_level_t;

#define PLOG_ERROR CLLOG_ERROR /* a projection stopped, a start refused */
#define PLOG_WARN  CLLOG_WARN  /* something odd the projector recovered from */
#define PLOG_INFO  CLLOG_INFO  /* start, rebuild progress, takeover, stop */
#define PLOG_DEBUG CLLOG_DEBUG /* every batch */

/* The program name in each line ("cardledger-projector", a string literal) and the level
 * (default info); see cllog_setup(). */
static inline void
plog_setup(const char *program, plog_level_t level)
{
    cllog_setup(program, level);
}

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 for anything else. */
static inline int
plog_level_parse(const char *name, plog_level_t *out)
{
    return cllog_level_parse(name, out);
}

/* Whether a line of this level would be written (to skip building expensive messages). */
static inline bool
plog_enabled(plog_level_t level)
{
    return cllog_enabled(level);
}

/* Writes one line (a trailing newline is added). */
#define plog_msg(...)   cllog_msg(__VA_ARGS__)
#define plog_error(...) cllog_msg(CLLOG_ERROR, __VA_ARGS__)
#define plog_warn(...)  cllog_msg(CLLOG_WARN, __VA_ARGS__)
#define plog_info(...)  cllog_msg(CLLOG_INFO, __VA_ARGS__)
#define plog_debug(...) cllog_msg(CLLOG_DEBUG, __VA_ARGS__)

#endif /* CARDLEDGER_PLOG_H */
