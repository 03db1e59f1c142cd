/*
 * config: defaults, then the --config file, then the command line (see config.h).
 *
 * The file and the flags go through one function, s_apply(), keyed by the long flag's name, so a
 * setting means exactly the same wherever it comes from. getopt_long() walks the command line
 * twice: the first pass only looks for --config, --help and --version, the second applies the
 * rest over what the file set.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"

enum {
    S_OPT_DATA = 256,
    S_OPT_LISTEN,
    S_OPT_PUBLISH,
    S_OPT_LOG_LEVEL,
    S_OPT_TEST_CLOCK,
    S_OPT_CHECKPOINT_EVENTS,
    S_OPT_CHECKPOINT_INTERVAL_MS,
    S_OPT_CACHE_RECORDS,
    S_OPT_COMMIT_EVENTS,
    S_OPT_RETENTION_HOURS,
    S_OPT_JOURNAL_MAP_MAX_MB,
    S_OPT_PREFAULT,
    S_OPT_JOURNAL_AHEAD_MB,
    S_OPT_CURVE_SECRET_KEY,
    S_OPT_PRINCIPALS,
    S_OPT_UNKNOWN_CARDS,
    S_OPT_CONFIG,
    S_OPT_HELP,
    S_OPT_VERSION,
    S_OPT_PRINT_DIGEST,
    S_OPT_FULL_REPLAY,
};

static const struct option s_options[] = {
    { "data", required_argument, NULL, S_OPT_DATA },
    { "listen", required_argument, NULL, S_OPT_LISTEN },
    { "publish", required_argument, NULL, S_OPT_PUBLISH },
    { "log-level", required_argument, NULL, S_OPT_LOG_LEVEL },
    { "test-clock", required_argument, NULL, S_OPT_TEST_CLOCK },
    { "checkpoint-events", required_argument, NULL, S_OPT_CHECKPOINT_EVENTS },
    { "checkpoint-interval-ms", required_argument, NULL, S_OPT_CHECKPOINT_INTERVAL_MS },
    { "cache-records", required_argument, NULL, S_OPT_CACHE_RECORDS },
    { "commit-events", required_argument, NULL, S_OPT_COMMIT_EVENTS },
    { "idempotency-retention-hours", required_argument, NULL, S_OPT_RETENTION_HOURS },
    { "journal-map-max-mb", required_argument, NULL, S_OPT_JOURNAL_MAP_MAX_MB },
    { "prefault", required_argument, NULL, S_OPT_PREFAULT },
    { "journal-ahead-mb", required_argument, NULL, S_OPT_JOURNAL_AHEAD_MB },
    { "curve-secret-key", required_argument, NULL, S_OPT_CURVE_SECRET_KEY },
    { "principals", required_argument, NULL, S_OPT_PRINCIPALS },
    { "unknown-cards-per-s", required_argument, NULL, S_OPT_UNKNOWN_CARDS },
    { "config", required_argument, NULL, S_OPT_CONFIG },
    { "help", no_argument, NULL, S_OPT_HELP },
    { "version", no_argument, NULL, S_OPT_VERSION },
    { "print-digest", no_argument, NULL, S_OPT_PRINT_DIGEST },
    { "full-replay", no_argument, NULL, S_OPT_FULL_REPLAY },
    { NULL, 0, NULL, 0 },
};

const char *
config_usage(void)
{
    return "Usage: cardledgerd [OPTION]...\n"
           "The cardledger daemon: decides gift-card commands, commits them to the journal and\n"
           "publishes the events. Runs in the foreground and logs to stderr.\n"
           "\n"
           "  --data DIR                       journal, state checkpoint and secret key "
           "(required)\n"
           "  --listen ENDPOINT                ZeroMQ ROUTER for commands\n"
           "                                   (default " CONFIG_LISTEN_DEFAULT ")\n"
           "  --publish ENDPOINT               ZeroMQ PUB for events\n"
           "                                   (default " CONFIG_PUBLISH_DEFAULT ")\n"
           "  --log-level LEVEL                error, warn, info (default) or debug\n"
           "  --checkpoint-events N            checkpoint the state every N events (default "
           "150000)\n"
           "  --checkpoint-interval-ms N       ... or every N ms when events came (default 10000)\n"
           "  --cache-records N                records of one state table kept in memory before\n"
           "                                   the clean ones are dropped after a checkpoint\n"
           "                                   (default 2000000)\n"
           "  --commit-events N                a commit group ends early when one more command\n"
           "                                   could take it past N events (default and most\n"
           "                                   32768)\n"
           "  --idempotency-retention-hours N  keep request ids this long (default 168)\n"
           "  --journal-map-max-mb N           never grow the journal's map beyond N MiB\n"
           "                                   (default 1048576, i.e. 1 TiB)\n"
           "  --journal-ahead-mb N             keep the journal's file up to N MiB of synced\n"
           "                                   zeros past its content, so that commits land in\n"
           "                                   written blocks (default 64; 0 = off)\n"
           "  --prefault on|off                a thread faults the state's memory in before\n"
           "                                   the loop writes it (default on)\n"
           "  --curve-secret-key FILE          the daemon's CurveZMQ secret key (Z85, made by\n"
           "                                   cardledger-keys); with --principals, commands\n"
           "                                   are encrypted and authenticated\n"
           "  --principals FILE                the client keys that may send commands, each\n"
           "                                   with its role, merchant and store\n"
           "  --unknown-cards-per-s N          a principal that names N cards a second that do\n"
           "                                   not exist is refused (rate_limited) until its\n"
           "                                   guesses age (default 1000; 0 = no limit)\n"
           "  --test-clock START_US            a clock that only AdvanceClock moves (tests, "
           "drills)\n"
           "  --config FILE                    read `key = value` lines named like the flags\n"
           "  --help                           show this and exit\n"
           "  --version                        show the version and exit\n"
           "\n"
           "Without CurveZMQ keys every command runs as one local operator, so the endpoints\n"
           "must be ipc://, inproc:// or tcp:// on a loopback address; with them --listen may\n"
           "be any tcp:// address (--publish stays local).\n"
           "Exit status: 0 clean stop, 1 runtime failure, 2 the data directory holds something\n"
           "this version does not understand, 64 bad usage. See docs/daemon.md.\n";
}

static void s_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_err(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static int
s_parse_u64(const char *name, const char *value, uint64_t min, uint64_t max, uint64_t *out,
            char *err, size_t cap)
{
    char *end = NULL;
    errno = 0;
    if (value[0] == '-' || value[0] == '\0') {
        s_err(err, cap, "--%s wants a whole number, not \"%s\"", name, value);
        return CONFIG_EUSAGE;
    }
    unsigned long long v = strtoull(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0') {
        s_err(err, cap, "--%s wants a whole number, not \"%s\"", name, value);
        return CONFIG_EUSAGE;
    }
    if (v < min || v > max) {
        s_err(err, cap, "--%s must be between %" PRIu64 " and %" PRIu64 ", not %llu", name, min,
              max, v);
        return CONFIG_EUSAGE;
    }
    *out = v;
    return 0;
}

static int
s_copy(const char *name, const char *value, char *dst, size_t dst_cap, char *err, size_t cap)
{
    size_t n = strlen(value);
    if (n == 0 || n >= dst_cap) {
        s_err(err, cap, "--%s must be 1 to %zu bytes long", name, dst_cap - 1);
        return CONFIG_EUSAGE;
    }
    memcpy(dst, value, n + 1);
    return 0;
}

/* Applies one setting by its long flag name. */
static int
s_apply(daemon_config_t *c, int opt, const char *name, const char *value, char *err, size_t cap)
{
    uint64_t v = 0;
    int rc;
    switch (opt) {
    case S_OPT_DATA:
        return s_copy(name, value, c->data_dir, sizeof(c->data_dir), err, cap);
    case S_OPT_LISTEN:
        return s_copy(name, value, c->listen, sizeof(c->listen), err, cap);
    case S_OPT_PUBLISH:
        return s_copy(name, value, c->publish, sizeof(c->publish), err, cap);
    case S_OPT_LOG_LEVEL:
        if (log_level_parse(value, &c->log_level) != 0) {
            s_err(err, cap, "--log-level is error, warn, info or debug, not \"%s\"", value);
            return CONFIG_EUSAGE;
        }
        return 0;
    case S_OPT_TEST_CLOCK:
        rc = s_parse_u64(name, value, 1, (uint64_t)INT64_MAX / 2, &v, err, cap);
        if (rc == 0) {
            c->test_clock = true;
            c->test_clock_start_us = (int64_t)v;
        }
        return rc;
    case S_OPT_CHECKPOINT_EVENTS:
        return s_parse_u64(name, value, 1, UINT64_MAX / 2, &c->checkpoint_events, err, cap);
    case S_OPT_CHECKPOINT_INTERVAL_MS:
        return s_parse_u64(name, value, 1, (uint64_t)INT32_MAX, &c->checkpoint_interval_ms, err,
                           cap);
    case S_OPT_CACHE_RECORDS:
        return s_parse_u64(name, value, 1, UINT64_C(1) << 40, &c->cache_records, err, cap);
    case S_OPT_COMMIT_EVENTS:
        return s_parse_u64(name, value, 1, CONFIG_COMMIT_EVENTS_MAX, &c->commit_events, err, cap);
    case S_OPT_JOURNAL_MAP_MAX_MB:
        return s_parse_u64(name, value, 1, UINT64_C(1) << 30, &c->journal_map_max_mb, err, cap);
    case S_OPT_JOURNAL_AHEAD_MB:
        return s_parse_u64(name, value, 0, CONFIG_JOURNAL_AHEAD_MB_MAX, &c->journal_ahead_mb, err,
                           cap);
    case S_OPT_CURVE_SECRET_KEY:
        return s_copy(name, value, c->curve_secret_key, sizeof(c->curve_secret_key), err, cap);
    case S_OPT_PRINCIPALS:
        return s_copy(name, value, c->principals, sizeof(c->principals), err, cap);
    case S_OPT_UNKNOWN_CARDS:
        return s_parse_u64(name, value, 0, 1000000000u, &c->unknown_cards_per_s, err, cap);
    case S_OPT_PREFAULT:
        if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
            s_err(err, cap, "--prefault is on or off, not \"%s\"", value);
            return CONFIG_EUSAGE;
        }
        c->prefault = strcmp(value, "on") == 0;
        return 0;
    case S_OPT_RETENTION_HOURS:
        rc = s_parse_u64(name, value, 1, CONFIG_IDEMPOTENCY_RETENTION_H_MAX, &v, err, cap);
        if (rc == 0)
            c->idempotency_retention_hours = (uint32_t)v;
        return rc;
    default:
        s_err(err, cap, "\"%s\" cannot be set here", name);
        return CONFIG_EUSAGE;
    }
}

static char *
s_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int
s_load_file(daemon_config_t *c, const char *path, char *err, size_t cap)
{
    char line[CONFIG_LINE_MAX];
    char why[CONFIG_ERROR_MAX];
    unsigned lineno = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        s_err(err, cap, "cannot read the config file %s: %s", path, strerror(errno));
        return CONFIG_EUSAGE;
    }
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            s_err(err, cap, "%s:%u: the line is longer than %d bytes", path, lineno,
                  CONFIG_LINE_MAX - 2);
            rc = CONFIG_EUSAGE;
            break;
        }
        char *s = s_trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            s_err(err, cap, "%s:%u: expected `key = value`", path, lineno);
            rc = CONFIG_EUSAGE;
            break;
        }
        *eq = '\0';
        char *key = s_trim(s);
        char *value = s_trim(eq + 1);
        int opt = 0;
        for (const struct option *o = s_options; o->name != NULL; o++) {
            if (strcmp(o->name, key) == 0 && o->has_arg == required_argument &&
                o->val != S_OPT_CONFIG)
                opt = o->val;
        }
        if (opt == 0) {
            s_err(err, cap, "%s:%u: unknown setting \"%s\"", path, lineno, key);
            rc = CONFIG_EUSAGE;
            break;
        }
        rc = s_apply(c, opt, key, value, why, sizeof(why));
        if (rc != 0)
            s_err(err, cap, "%s:%u: %s", path, lineno, why);
    }
    fclose(f);
    return rc;
}

static const char *
s_opt_name(int val)
{
    for (const struct option *o = s_options; o->name != NULL; o++) {
        if (o->val == val)
            return o->name;
    }
    return "?";
}

int
config_parse(int argc, char **argv, daemon_config_t *out, char *err, size_t err_cap)
{
    daemon_config_t c;
    int opt;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    snprintf(c.listen, sizeof(c.listen), "%s", CONFIG_LISTEN_DEFAULT);
    snprintf(c.publish, sizeof(c.publish), "%s", CONFIG_PUBLISH_DEFAULT);
    c.log_level = LOG_LEVEL_INFO;
    c.checkpoint_events = CONFIG_CHECKPOINT_EVENTS_DEFAULT;
    c.checkpoint_interval_ms = CONFIG_CHECKPOINT_INTERVAL_MS_DEFAULT;
    c.cache_records = CONFIG_CACHE_RECORDS_DEFAULT;
    c.prefault = true;
    c.journal_ahead_mb = CONFIG_JOURNAL_AHEAD_MB_DEFAULT;
    c.commit_events = CONFIG_COMMIT_EVENTS_MAX;
    c.idempotency_retention_hours = CONFIG_IDEMPOTENCY_RETENTION_H_DEFAULT;
    c.unknown_cards_per_s = CONFIG_UNKNOWN_CARDS_PER_S_DEFAULT;

    /* Pass 1: --help, --version and the config file; anything unknown is an error. */
    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, ":", s_options, NULL)) != -1) {
        if (opt == S_OPT_HELP)
            return CONFIG_HELP;
        if (opt == S_OPT_VERSION)
            return CONFIG_VERSION;
        if (opt == '?') {
            s_err(err, err_cap, "unknown option %s (try --help)", argv[optind - 1]);
            return CONFIG_EUSAGE;
        }
        if (opt == ':') {
            s_err(err, err_cap, "%s needs a value", argv[optind - 1]);
            return CONFIG_EUSAGE;
        }
        if (opt == S_OPT_CONFIG) {
            rc = s_load_file(&c, optarg, err, err_cap);
            if (rc != 0)
                return rc;
        }
    }
    if (optind < argc) {
        s_err(err, err_cap, "unexpected argument \"%s\" (try --help)", argv[optind]);
        return CONFIG_EUSAGE;
    }

    /* Pass 2: the flags, over the file. */
    optind = 0;
    while ((opt = getopt_long(argc, argv, ":", s_options, NULL)) != -1) {
        switch (opt) {
        case S_OPT_CONFIG:
            break;
        case S_OPT_PRINT_DIGEST:
            c.print_digest = true;
            break;
        case S_OPT_FULL_REPLAY:
            c.full_replay = true;
            break;
        default:
            rc = s_apply(&c, opt, s_opt_name(opt), optarg, err, err_cap);
            if (rc != 0)
                return rc;
            break;
        }
    }
    if (c.data_dir[0] == '\0') {
        s_err(err, err_cap, "--data DIR is required: the directory of the journal and state");
        return CONFIG_EUSAGE;
    }
    if ((c.curve_secret_key[0] != '\0') != (c.principals[0] != '\0')) {
        s_err(err, err_cap,
              "--curve-secret-key and --principals go together: the daemon's key and the keys "
              "of those who may connect");
        return CONFIG_EUSAGE;
    }
    if (c.full_replay && !c.print_digest) {
        s_err(err, err_cap, "--full-replay only goes with --print-digest");
        return CONFIG_EUSAGE;
    }
    *out = c;
    return 0;
}

bool
config_endpoint_local(const char *endpoint, char *why, size_t why_cap)
{
    /* The policy is cl_endpoint_check()'s; the daemon only words the refusal. */
    switch (cl_endpoint_check(endpoint)) {
    case CL_ENDPOINT_LOCAL:
        return true;
    case CL_ENDPOINT_BAD_TRANSPORT:
        s_err(why, why_cap,
              "%s is not ipc://, inproc:// or tcp://, and only those are allowed without "
              "CurveZMQ keys",
              endpoint);
        return false;
    case CL_ENDPOINT_HAS_SOURCE:
        s_err(why, why_cap, "%s names a source address, which a listening socket cannot use",
              endpoint);
        return false;
    case CL_ENDPOINT_BAD_TCP:
        s_err(why, why_cap, "%s is not tcp://HOST:PORT", endpoint);
        return false;
    case CL_ENDPOINT_NOT_LOOPBACK:
    default:
        s_err(why, why_cap,
              "%s would accept connections from other machines; without CurveZMQ keys the "
              "daemon only binds ipc://, inproc:// or tcp:// on a loopback address "
              "(127.0.0.0/8, [::1], localhost)",
              endpoint);
        return false;
    }
}
