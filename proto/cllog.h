/*
 * cllog: the log lines of every cardledger program on stderr.
 *
 * The daemon, the projector and the tools run in the foreground and leave log collection to
 * whatever runs them (systemd's journal, a container runtime, a terminal). One line per event,
 * prefixed with the UTC time, the program name, the process id and the level, so lines from
 * several processes can be told apart:
 *
 *     2026-01-31T12:00:00.123Z cardledgerd[4242] info: ...
 *
 * Card codes never appear in the log unmasked (callers use cl_code_mask()). daemon/log.h and
 * projections/plog.h give the daemon's and the projector's own names to this one module.
 */
#ifndef CARDLEDGER_CLLOG_H
#define CARDLEDGER_CLLOG_H

#include <stdbool.h>

typedef enum cllog_level {
    CLLOG_ERROR = 0, /* something failed: a command not committed, a projection stopped */
    CLLOG_WARN = 1,  /* something odd the program recovered from */
    CLLOG_INFO = 2,  /* start, ready, checkpoints, rebuild progress, stop */
    CLLOG_DEBUG = 3, /* every commit, every batch */
} cllog_level_t;

/*
 * Sets the program name each line carries and the level: lines above it are dropped. program
 * must stay valid for the life of the process (a string literal); NULL keeps the current name.
 * Until this is called the name is "cardledger" and the level CLLOG_INFO. Not thread-safe:
 * call it at start-up, before any other thread logs.
 */
void cllog_setup(const char *program, cllog_level_t level);

/* Whether a line of this level would be written (to skip building expensive messages). */
bool cllog_enabled(cllog_level_t level);

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 (and *out untouched). */
int cllog_level_parse(const char *name, cllog_level_t *out);

/*
 * Writes one line (a trailing newline is added; lines over 2 KiB are truncated) with a single
 * write(2), so lines of processes sharing a stderr never interleave inside a line.
 */
void cllog_msg(cllog_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* CARDLEDGER_CLLOG_H */
