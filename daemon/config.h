/*
 * config: cardledgerd's settings, from the command line and an optional config file.
 *
 * Every setting is a long flag (--data DIR); the same names work as `key = value` lines in the
 * file given with --config FILE. The file is read first wherever --config appears, and flags on
 * the command line override it. docs/daemon.md lists every setting with its default.
 *
 * Without CurveZMQ keys (--curve-secret-key and --principals, daemon/auth.h) the daemon runs
 * with one all-powerful local principal, so it only binds where nobody else can reach it:
 * config_endpoint_local() is the check. With them, the command endpoint may be any address.
 */
#ifndef CARDLEDGER_CONFIG_H
#define CARDLEDGER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define CONFIG_PATH_MAX     512  /* the data directory and the config file path */
#define CONFIG_ENDPOINT_MAX 256  /* a ZeroMQ endpoint */
#define CONFIG_LINE_MAX     1024 /* one line of the config file */
#define CONFIG_ERROR_MAX    320  /* the sentence of a refusal */

#define CONFIG_LISTEN_DEFAULT                  "tcp://127.0.0.1:7700"
#define CONFIG_PUBLISH_DEFAULT                 "tcp://127.0.0.1:7701"
#define CONFIG_CHECKPOINT_EVENTS_DEFAULT       150000u
#define CONFIG_CHECKPOINT_INTERVAL_MS_DEFAULT  10000u
#define CONFIG_CACHE_RECORDS_DEFAULT           2000000u
#define CONFIG_COMMIT_EVENTS_MAX               32768u        /* = DAEMON_COMMIT_EVENTS_MAX */
#define CONFIG_IDEMPOTENCY_RETENTION_H_DEFAULT 168u          /* 7 days */
#define CONFIG_IDEMPOTENCY_RETENTION_H_MAX     (24u * 3660u) /* about 10 years */
#define CONFIG_JOURNAL_AHEAD_MB_DEFAULT        64u
#define CONFIG_JOURNAL_AHEAD_MB_MAX            65536u /* 64 GiB */
#define CONFIG_UNKNOWN_CARDS_PER_S_DEFAULT     1000u

/* Results of config_parse() besides 0. */
#define CONFIG_EUSAGE  (-37001) /* a bad flag, value or config file line; see the message */
#define CONFIG_HELP    1        /* --help was given: print config_usage() and exit 0 */
#define CONFIG_VERSION 2        /* --version was given */

typedef struct daemon_config {
    char data_dir[CONFIG_PATH_MAX];         /* --data: journal, state and secret key */
    char listen[CONFIG_ENDPOINT_MAX];       /* --listen: the ROUTER for commands */
    char publish[CONFIG_ENDPOINT_MAX];      /* --publish: the PUB for events */
    log_level_t log_level;                  /* --log-level */
    bool test_clock;                        /* --test-clock given: AdvanceClock accepted */
    int64_t test_clock_start_us;            /* its start, until the first ClockAdvanced */
    uint64_t checkpoint_events;             /* --checkpoint-events: events between checkpoints */
    uint64_t checkpoint_interval_ms;        /* --checkpoint-interval-ms */
    uint64_t cache_records;                 /* --cache-records: a state table's records in memory */
    uint64_t commit_events;                 /* --commit-events: events of a group before it ends */
    uint32_t idempotency_retention_hours;   /* --idempotency-retention-hours */
    uint64_t journal_map_max_mb;            /* --journal-map-max-mb: 0 = the journal's 1 TiB */
    bool prefault;                          /* --prefault on|off: daemon/prefault.h */
    uint64_t journal_ahead_mb;              /* --journal-ahead-mb: journal/ahead.h; 0 = off */
    char curve_secret_key[CONFIG_PATH_MAX]; /* --curve-secret-key FILE (daemon/auth.h) */
    char principals[CONFIG_PATH_MAX];       /* --principals FILE; both or neither */
    uint64_t unknown_cards_per_s; /* --unknown-cards-per-s: a principal's guesses (0 = no limit) */
    bool print_digest;            /* --print-digest: load, print, exit (hidden) */
    bool full_replay;             /* --full-replay: ignore the checkpoint (hidden) */
} daemon_config_t;

/*
 * Fills *out with the defaults, then the config file (if --config is given), then the flags.
 * Returns 0, CONFIG_HELP, CONFIG_VERSION, or CONFIG_EUSAGE with a sentence in err.
 */
int config_parse(int argc, char **argv, daemon_config_t *out, char *err, size_t err_cap);

/* The --help text. */
const char *config_usage(void);

/*
 * Whether a ZeroMQ endpoint can only be reached from this machine: ipc://, inproc://, or tcp://
 * on a loopback address (127.0.0.0/8, [::1], localhost). Returns true, or false with the reason
 * in why.
 */
bool config_endpoint_local(const char *endpoint, char *why, size_t why_cap);

#endif /* CARDLEDGER_CONFIG_H */
