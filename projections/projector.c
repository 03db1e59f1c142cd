/*
 * cardledger-projector: folds the daemon's journal into the projections and answers queries.
 *
 * It opens the daemon's journal read-only (DIR/journal, the environment cardledgerd keeps in
 * its data directory) and reads every event from it itself, from each projection's own
 * checkpoint, so it never misses one: after a crash, while the daemon was down, or when the
 * daemon's PUB socket dropped messages. The PUB subscription is only a wake-up: a message on
 * it means "the journal grew". Queries come on a ROUTER socket (query-server.c, qanswer.c).
 *
 * One thread: each turn of the loop answers the queries waiting, then folds one step with a
 * time budget (FOLD_BUDGET_MS), so queries are answered within about that long even while a
 * projection catches up or a blue/green rebuild runs (pset.h). docs/projections.md has the
 * whole story.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "cardledger-config.h"
#include "fold.h"
#include "journal.h"
#include "plog.h"
#include "proj.h"
#include "pset.h"
#include "query-server.h"

#define S_EXIT_OK      0
#define S_EXIT_FAILURE 1
#define S_EXIT_USAGE   64

#define S_LISTEN_DEFAULT     "tcp://127.0.0.1:7702"
#define S_ENDPOINT_MAX       256
#define S_PATH_MAX           4096
#define FOLD_BUDGET_MS       50   /* a fold step's time budget: the worst wait of a query */
#define S_IDLE_POLL_MS       1000 /* idle wait with a subscription (a message wakes us) */
#define S_IDLE_POLL_NOSUB_MS 100  /* idle wait without one: how often the journal is looked at */
#define S_QUERIES_PER_TURN   256
#define S_THROTTLE_POLL_MS   10  /* wait while a throttled rebuild waits for its rate */
#define S_JOURNAL_WAIT_MS    200 /* between tries while the daemon's journal does not exist */

typedef struct opts {
    char journal[S_PATH_MAX];
    char data[S_PATH_MAX];
    char subscribe[S_ENDPOINT_MAX];
    char listen[S_ENDPOINT_MAX];
    plog_level_t level;
    pset_opts_t pset;
    uint64_t batch_events;
    bool print_digests;
} opts_t;

static volatile sig_atomic_t s_stop;

static void
s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void
s_usage(FILE *to)
{
    fputs("Usage: cardledger-projector --journal DIR --data DIR [OPTION]...\n"
          "Folds the cardledger journal into its projections (balances, store redemptions,\n"
          "analytics) and answers queries about them. Runs in the foreground, logs to stderr.\n"
          "\n"
          "  --journal DIR        the daemon's data directory (its journal/ is read, read-only)\n"
          "  --data DIR           the projections' own directory\n"
          "  --subscribe ENDPOINT the daemon's PUB socket, to wake up as events are committed\n"
          "                       (without it the journal is looked at every 100 ms)\n"
          "  --listen ENDPOINT    ZeroMQ ROUTER for queries (default " S_LISTEN_DEFAULT ")\n"
          "  --rebuild-rate N     fold a blue/green rebuild at most N events/s (default: no cap)\n"
          "  --log-level LEVEL    error, warn, info (default) or debug\n"
          "  --print-digests      print \"NAME SEQ DIGEST\" for each projection and exit\n"
          "  --help               show this and exit\n"
          "  --version            show the version and exit\n"
          "\n"
          "Endpoints must be ipc://, inproc:// or tcp:// on a loopback address until CurveZMQ\n"
          "keys are configured. Exit status: 0 clean stop, 1 failure, 64 bad usage.\n"
          "See docs/projections.md.\n",
          to);
}

static bool
s_copy_arg(char *dst, size_t cap, const char *src, const char *flag)
{
    if (strlen(src) >= cap || src[0] == '\0') {
        fprintf(stderr, "cardledger-projector: %s needs a value shorter than %zu bytes\n", flag,
                cap);
        return false;
    }
    strcpy(dst, src);
    return true;
}

static bool
s_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 || v > max)
        return false;
    *out = v;
    return true;
}

/* Parses the command line. Returns -1 to go on, or an exit status. */
static int
s_parse(int argc, char **argv, opts_t *o)
{
    enum {
        O_JOURNAL = 256,
        O_DATA,
        O_SUBSCRIBE,
        O_LISTEN,
        O_LOG,
        O_HELP,
        O_VERSION,
        O_BUMP,
        O_DIGESTS,
        O_BATCH,
        O_CACHE,
        O_REBUILD_RATE,
    };
    static const struct option opts[] = {
        { "journal", required_argument, NULL, O_JOURNAL },
        { "data", required_argument, NULL, O_DATA },
        { "subscribe", required_argument, NULL, O_SUBSCRIBE },
        { "listen", required_argument, NULL, O_LISTEN },
        { "log-level", required_argument, NULL, O_LOG },
        { "rebuild-rate", required_argument, NULL, O_REBUILD_RATE },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        /* Hidden: tests and drills (docs/projections.md). */
        { "schema-bump", required_argument, NULL, O_BUMP },
        { "print-digests", no_argument, NULL, O_DIGESTS },
        { "batch-events", required_argument, NULL, O_BATCH },
        { "cache-mb", required_argument, NULL, O_CACHE },
        { NULL, 0, NULL, 0 },
    };
    memset(o, 0, sizeof(*o));
    strcpy(o->listen, S_LISTEN_DEFAULT);
    o->level = PLOG_INFO;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_JOURNAL:
            if (!s_copy_arg(o->journal, sizeof(o->journal) - 64, optarg, "--journal"))
                return S_EXIT_USAGE;
            break;
        case O_DATA:
            if (!s_copy_arg(o->data, sizeof(o->data) - 64, optarg, "--data"))
                return S_EXIT_USAGE;
            break;
        case O_SUBSCRIBE:
            if (!s_copy_arg(o->subscribe, sizeof(o->subscribe), optarg, "--subscribe"))
                return S_EXIT_USAGE;
            break;
        case O_LISTEN:
            if (!s_copy_arg(o->listen, sizeof(o->listen), optarg, "--listen"))
                return S_EXIT_USAGE;
            break;
        case O_LOG:
            if (plog_level_parse(optarg, &o->level) != 0) {
                fprintf(stderr, "cardledger-projector: unknown log level %s\n", optarg);
                return S_EXIT_USAGE;
            }
            break;
        case O_HELP:
            s_usage(stdout);
            return S_EXIT_OK;
        case O_VERSION:
            printf("cardledger-projector %s\n", CARDLEDGER_VERSION);
            return S_EXIT_OK;
        case O_BUMP: {
            bool found = false;
            for (size_t i = 0; i < PROJ_COUNT; i++) {
                if (strcmp(proj_def_at(i)->name, optarg) == 0) {
                    o->pset.schema_bump[i]++;
                    found = true;
                }
            }
            if (!found) {
                fprintf(stderr, "cardledger-projector: --schema-bump: no projection %s\n", optarg);
                return S_EXIT_USAGE;
            }
            break;
        }
        case O_REBUILD_RATE:
            if (!s_parse_u64(optarg, UINT32_MAX, &o->pset.rebuild_events_per_s)) {
                fprintf(stderr, "cardledger-projector: --rebuild-rate needs 1..4294967295\n");
                return S_EXIT_USAGE;
            }
            break;
        case O_DIGESTS:
            o->print_digests = true;
            break;
        case O_BATCH:
            if (!s_parse_u64(optarg, 16777216, &o->batch_events)) {
                fprintf(stderr, "cardledger-projector: --batch-events needs 1..16777216\n");
                return S_EXIT_USAGE;
            }
            break;
        case O_CACHE: {
            uint64_t mb;
            if (!s_parse_u64(optarg, 1024 * 1024, &mb)) {
                fprintf(stderr, "cardledger-projector: --cache-mb needs 1..1048576\n");
                return S_EXIT_USAGE;
            }
            o->pset.cache_bytes_max = (size_t)mb * 1024 * 1024;
            break;
        }
        default:
            s_usage(stderr);
            return S_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "cardledger-projector: unexpected argument %s\n", argv[optind]);
        return S_EXIT_USAGE;
    }
    if (o->journal[0] == '\0' || o->data[0] == '\0') {
        fprintf(stderr, "cardledger-projector: --journal DIR and --data DIR are required\n");
        return S_EXIT_USAGE;
    }
    char why[512];
    if (!qserver_endpoint_local(o->listen, why, sizeof(why)) ||
        (o->subscribe[0] != '\0' && !qserver_endpoint_local(o->subscribe, why, sizeof(why)))) {
        fprintf(stderr, "cardledger-projector: %s\n", why);
        return S_EXIT_USAGE;
    }
    return -1;
}

static void
s_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Opens the daemon's journal read-only, waiting while it does not exist yet. */
static int
s_open_journal(const opts_t *o, journal_t **out)
{
    char path[S_PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/journal", o->journal);
    if (n < 0 || (size_t)n >= sizeof(path))
        return PROJ_ELIMIT; /* s_parse() keeps --journal 64 bytes short: never happens */
    journal_opts_t jo = { .read_only = true };
    bool said = false;
    for (;;) {
        int rc = journal_open(path, &jo, out);
        if (rc == 0)
            return 0;
        if (rc != JOURNAL_ENOTFOUND) {
            plog_error("cannot open the journal in %s: %s", path, journal_strerror(rc));
            return rc;
        }
        if (!said) {
            plog_info("waiting for the daemon's journal in %s", path);
            said = true;
        }
        if (s_stop)
            return rc;
        s_sleep_ms(S_JOURNAL_WAIT_MS);
    }
}

static int
s_print_digests(pset_t *ps)
{
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        proj_t *p = pset_active(ps, i);
        uint8_t d[16];
        char hex[33];
        int rc = proj_digest(p, d);
        if (rc != 0) {
            plog_error("%s: digest failed: %s", proj_def(p)->name, proj_strerror(rc));
            return S_EXIT_FAILURE;
        }
        proj_digest_hex(d, hex);
        printf("%s %llu %s\n", proj_def(p)->name, (unsigned long long)proj_checkpoint(p), hex);
    }
    return fflush(stdout) == 0 ? S_EXIT_OK : S_EXIT_FAILURE;
}

static int
s_run(const opts_t *o, journal_t *j, pset_t *ps)
{
    void *ctx = zmq_ctx_new();
    if (ctx == NULL) {
        plog_error("cannot make a ZeroMQ context: %s", zmq_strerror(zmq_errno()));
        return S_EXIT_FAILURE;
    }
    char why[512];
    qserver_t *qs = NULL;
    void *sub = NULL;
    int code = S_EXIT_OK;
    if (qserver_open(ctx, o->listen, &qs, why, sizeof(why)) != 0) {
        plog_error("%s", why);
        code = S_EXIT_FAILURE;
    }
    if (code == S_EXIT_OK && o->subscribe[0] != '\0') {
        int linger = 0;
        sub = zmq_socket(ctx, ZMQ_SUB);
        if (sub == NULL || zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
            zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0 || zmq_connect(sub, o->subscribe) != 0) {
            plog_error("cannot subscribe to %s: %s", o->subscribe, zmq_strerror(zmq_errno()));
            code = S_EXIT_FAILURE;
        }
    }
    if (code == S_EXIT_OK) {
        journal_head_t head;
        memset(&head, 0, sizeof(head));
        journal_head(j, &head);
        plog_info("ready: answering queries on %s; journal head %llu; balances %llu, stores "
                  "%llu, analytics %llu",
                  o->listen, (unsigned long long)head.seq,
                  (unsigned long long)proj_checkpoint(pset_active(ps, 0)),
                  (unsigned long long)proj_checkpoint(pset_active(ps, 1)),
                  (unsigned long long)proj_checkpoint(pset_active(ps, 2)));
    }
    bool busy = true, throttled = false;
    uint64_t folded = 0, last_report_ns = fold_now_ns();
    while (code == S_EXIT_OK && !s_stop) {
        zmq_pollitem_t items[2] = {
            { qserver_socket(qs), 0, ZMQ_POLLIN, 0 },
            { sub, 0, ZMQ_POLLIN, 0 },
        };
        long timeout = busy          ? 0
                       : throttled   ? S_THROTTLE_POLL_MS
                       : sub != NULL ? S_IDLE_POLL_MS
                                     : S_IDLE_POLL_NOSUB_MS;
        if (zmq_poll(items, sub != NULL ? 2 : 1, timeout) < 0 && zmq_errno() != EINTR) {
            plog_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
            code = S_EXIT_FAILURE;
            break;
        }
        if (sub != NULL) {
            /* Only a wake-up: the events themselves are read from the journal. */
            char drop[16];
            while (zmq_recv(sub, drop, sizeof(drop), ZMQ_DONTWAIT) >= 0)
                ;
        }
        qserver_serve(qs, ps, j, S_QUERIES_PER_TURN);
        pset_round_t r;
        int rc = pset_step(ps, 0, (size_t)o->batch_events, FOLD_BUDGET_MS * 1000000ull, &r);
        /* Behind: fold again at once, unless only a throttled rebuild is behind. */
        busy = rc == 0 && r.behind && (r.live_events + r.rebuild_events > 0 || !r.throttled);
        throttled = r.throttled;
        folded += r.live_events + r.rebuild_events;
        if (r.live_events + r.rebuild_events > 0)
            plog_debug("folded %llu events (%llu rebuilding)",
                       (unsigned long long)(r.live_events + r.rebuild_events),
                       (unsigned long long)r.rebuild_events);
        uint64_t now = fold_now_ns();
        if (now - last_report_ns >= 60ull * 1000000000ull && folded > 0) {
            plog_info("folded %llu events in the last minute; balances at %llu",
                      (unsigned long long)folded,
                      (unsigned long long)proj_checkpoint(pset_active(ps, 0)));
            folded = 0;
            last_report_ns = now;
        }
    }
    if (code == S_EXIT_OK)
        plog_info("stopping: balances at %llu, stores at %llu, analytics at %llu",
                  (unsigned long long)proj_checkpoint(pset_active(ps, 0)),
                  (unsigned long long)proj_checkpoint(pset_active(ps, 1)),
                  (unsigned long long)proj_checkpoint(pset_active(ps, 2)));
    if (sub != NULL)
        zmq_close(sub);
    qserver_close(&qs);
    zmq_ctx_term(ctx);
    return code;
}

int
main(int argc, char **argv)
{
    static opts_t o;
    int code = s_parse(argc, argv, &o);
    if (code >= 0)
        return code;
    plog_setup("cardledger-projector", o.level);
    /* Batches allocate and free a lot (LMDB's dirty pages, the cache's chunks): keep the heap
     * instead of giving it back and faulting it in again every batch. */
    mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    journal_t *j = NULL;
    if (s_open_journal(&o, &j) != 0)
        return s_stop ? S_EXIT_OK : S_EXIT_FAILURE;
    pset_t *ps = NULL;
    int rc = pset_open(o.data, j, &o.pset, &ps);
    if (rc != 0) {
        plog_error("cannot open the projections in %s: %s", o.data,
                   rc == -EWOULDBLOCK ? "another projector uses that directory"
                                      : proj_strerror(rc));
        journal_close(&j);
        return S_EXIT_FAILURE;
    }
    code = o.print_digests ? s_print_digests(ps) : s_run(&o, j, ps);
    pset_close(&ps);
    journal_close(&j);
    return code;
}
