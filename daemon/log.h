/*
 * log: the daemon's names for its log lines on stderr.
 *
 * The lines themselves are proto/cllog.c's, shared with the projector and the tools: UTC time,
 * "cardledgerd[pid]", the level, the message. This header only keeps the daemon's short names
 * (log_info(), LOG_LEVEL_INFO) and puts the daemon's program name on every line. Card codes
 * never appear in the log unmasked (callers use cl_code_mask()).
 */
#ifndef CARDLEDGER_LOG_H
#define CARDLEDGER_LOG_H

#include <stdbool.h>

#include "cllog.h"

typedef cllog_level_t log_level_t;

#define LOG_LEVEL_ERROR CLLOG_ERROR /* a command could not be committed, a start refused */
#define LOG_LEVEL_WARN  CLLOG_WARN  /* something odd the daemon recovered from */
#define LOG_LEVEL_INFO  CLLOG_INFO  /* start, ready, checkpoints, stop */
#define LOG_LEVEL_DEBUG CLLOG_DEBUG /* every commit */

/* Names the lines "cardledgerd" and drops those above level. The default is LOG_LEVEL_INFO. */
static inline void
log_set_level(log_level_t level)
{
    cllog_setup("cardledgerd", level);
}

/* Whether a line of this level would be written (to skip building expensive messages). */
static inline bool
log_enabled(log_level_t level)
{
    return cllog_enabled(level);
}

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 for anything else. */
static inline int
log_level_parse(const char *name, log_level_t *out)
{
    return cllog_level_parse(name, out);
}

/* Writes one line (a trailing newline is added). */
#define log_msg(...)   cllog_msg(__VA_ARGS__)
#define log_error(...) cllog_msg(CLLOG_ERROR, __VA_ARGS__)
#define log_warn(...)  cllog_msg(CLLOG_WARN, __VA_ARGS__)
#define log_info(...)  cllog_msg(CLLOG_INFO, __VA_ARGS__)
#define log_debug(...) cllog_msg(CLLOG_DEBUG, __VA_ARGS__)

#endif /* CARDLEDGER_LOG_H */
