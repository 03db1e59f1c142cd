/*
 * log: the daemon's log lines on stderr.
 *
 * cardledgerd runs in the foreground and leaves log collection to whatever runs it (systemd's
 * journal, a container runtime, a terminal). One line per event, prefixed with the UTC time,
 * the process id and the level, so lines from several processes can be told apart. Card codes
 * never appear in the log unmasked (callers use cl_code_mask()).
 */
#ifndef CARDLEDGER_LOG_H
#define CARDLEDGER_LOG_H

#include <stdbool.h>

typedef enum log_level {
    LOG_LEVEL_ERROR = 0, /* something failed: a command could not be committed, a start refused */
    LOG_LEVEL_WARN = 1,  /* something odd the daemon recovered from */
    LOG_LEVEL_INFO = 2,  /* start, ready, checkpoints, stop */
    LOG_LEVEL_DEBUG = 3, /* every commit */
} log_level_t;

/* Lines above this level are dropped. The default is LOG_LEVEL_INFO. */
void log_set_level(log_level_t level);

/* Whether a line of this level would be written (to skip building expensive messages). */
bool log_enabled(log_level_t level);

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 for anything else. */
int log_level_parse(const char *name, log_level_t *out);

/* Writes one line (a trailing newline is added). */
void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif /* CARDLEDGER_LOG_H */
