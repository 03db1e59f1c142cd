/*
 * cardledger-bench: the load generator behind docs/BENCHMARKS.md (PRODUCT.md section 9).
 *
 *   cardledger-bench [--connect ENDPOINT | --spawn-daemon [--data DIR]] --cards N --duration S
 *                    --workload redeem|mix --clients C [--threads T] --window W [--per-message K]
 *                    [--rate R] [--restart] [--replay] [--json]
 *
 * It drives a real cardledgerd over ZeroMQ through libcardledger, the way services do. A run:
 *
 *  1. With --spawn-daemon, starts the build's daemon/cardledgerd on ipc:// endpoints in a
 *     temporary directory (bench-daemon.c); with --connect, uses a running one.
 *  2. Registers a merchant, a store and a stored-value program (idempotent: "already exists" is
 *     fine), then issues N cards with IssueBatch commands of CL_ISSUE_BATCH_MAX rows, pipelined,
 *     and times it (cards/s).
 *  3. Runs the workload for the duration on C clients, each with its own cl_client_t and
 *     connection, all in one ZeroMQ context (so one I/O thread), driven by T threads (--threads,
 *     default 1: every thread of this process wakes for the messages it sends and takes, and
 *     takes a core from the daemon on a 2-core machine). Each client keeps up to W messages in
 *     flight, each message carrying K requests. Closed loop (no --rate): every client sends as
 *     fast as replies come back, and a latency is measured from the message's send. Open loop
 *     (--rate R requests/s across all clients): every client sends on a fixed schedule, and a
 *     latency is measured from the message's SCHEDULED send time, so a stall of the daemon (or
 *     of this process) shows in the latencies of everything that should have been sent
 *     meanwhile instead of being hidden by sending less (no coordinated omission). Between sends
 *     a thread sleeps in ppoll() on its clients' descriptors (cl_client_fd()) until a reply
 *     arrives or the next send is due, whichever is first, so it reads each reply when it
 *     arrives and sends on time without spending CPU on polling.
 *  4. Reports throughput, latency percentiles from a log-linear histogram (bench-hist.c, 1/128
 *     precision), replies by status, and CPU used by the daemon and by this process over the
 *     run (warm-up included), with the time their threads spent runnable but waiting for a CPU
 *     (the run queue, from /proc/PID/task/TID/schedstat: the daemon's loop, its commit thread,
 *     all its threads, all of ours); reads the journal's statistics (journal_stat, read-only)
 *     before and after the run for the bytes per event, and the daemon's peak memory (VmHWM).
 *  5. With --restart: SIGKILL the daemon and start it again on the same data, timing the start
 *     to the first answered GetStatus. With --replay: times tools/cardledger-replay over the
 *     journal (the offline fold) and cardledger-projector folding it from sequence 0 on an empty
 *     directory (a rebuild), when they were built.
 *
 * Errors: the exit status is 0 when the run completed and no request failed (a domain refusal
 * such as insufficient_balance is an answer, not a failure), 1 when something failed (a client
 * error, a reply with a protocol or ledger-failure status, setup), 64 for bad usage. So a smoke
 * test only checks the exit status.
 *
 * Workloads. `redeem`: redeems of 1..200 minor units on uniformly random cards (each card holds
 * 1000.00, so they succeed). `mix`, per request: redeem 70 %, card show (GetCard) 15 %, issue
 * one card 5 %, reload 5 %, gift transfer (TransferCard) 3 %, and a redeem of more than any
 * balance 2 % (refused with insufficient_balance). Transfers name the card's current holder:
 * each client gives away only 64 cards of its own (asking the ledger their holders first) and
 * tracks their holders, so none is refused for a stale holder, also on a reused ledger.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "bench-daemon.h"
#include "bench-hist.h"
#include "cardledger-config.h"
#include "cardledger.h"
#include "journal.h"

#define S_PROG "cardledger-bench"

#define S_EXIT_OK     0
#define S_EXIT_FAILED 1
#define S_EXIT_USAGE  64

/* Named limits and defaults. */
#define S_CARDS_DEFAULT         100000
#define S_CARDS_MAX             100000000 /* the card id array: 800 MB at most */
#define S_DURATION_DEFAULT_S    10.0
#define S_DURATION_MAX_S        86400.0
#define S_CLIENTS_DEFAULT       4
#define S_CLIENTS_MAX           256
#define S_THREADS_DEFAULT       1
#define S_WINDOW_DEFAULT        16
#define S_ISSUE_WINDOW_DEFAULT  4      /* IssueBatch messages in flight */
#define S_ISSUE_PER_MSG_DEFAULT 2      /* IssueBatch commands per message */
#define S_ISSUE_PER_MSG_MAX     4      /* the reply of one message holds 4000 rows at most */
#define S_TIMEOUT_MS            30000  /* setup calls */
#define S_CONNECT_WAIT_MS       10000  /* --connect: the ledger must answer GetStatus by then */
#define S_STALL_MS              10000  /* no reply for this long: resend what is outstanding */
#define S_STOP_DRAIN_MS         60000  /* after the run, wait this long for the last replies */
#define S_STATUS_SLOTS          128    /* replies counted by status number, 0..127 */
#define S_NONCE_LEN             8      /* random characters that make this run's ids unique */
#define S_FACE_MINOR            100000 /* every benchmark card holds 1000.00 */
#define S_REDEEM_MAX_MINOR      200    /* a redeem takes 1..200 minor units */
#define S_RELOAD_MINOR          5000   /* a reload adds 50.00 */
#define S_TOO_MUCH_MINOR        1000000000LL /* more than any benchmark card ever holds */
#define S_ISSUE_ONE_MINOR       20000        /* the mix's single issues */
#define S_PROGRESS_NS           1000000000ull
#define S_OPEN_WAIT_MAX_NS      100000000ull /* open loop: longest sleep before a stall check */
#define S_LOG_LINE_MAX          512
#define S_XFER_CARDS            64 /* cards each client of the mix gives away, again and again */
#define S_REBUILD_MAX_S         60 /* a projector rebuild is timed for this long at most */

static const char s_merchant[] = "bench";
static const char s_store[] = "s1";
static const char s_region[] = "310000";
static const char s_program[] = "gift";

/* What one request of a message is, so its reply can be counted per kind. */
typedef enum s_op {
    S_OP_REDEEM,
    S_OP_REDEEM_TOO_MUCH,
    S_OP_SHOW,
    S_OP_ISSUE,
    S_OP_RELOAD,
    S_OP_TRANSFER,
    S_OP_COUNT,
} s_op_t;

static const char *const s_op_names[S_OP_COUNT] = {
    "redeem", "redeem_too_much", "card_show", "issue", "reload", "gift_transfer",
};

typedef enum s_workload {
    S_WORKLOAD_REDEEM,
    S_WORKLOAD_MIX,
    S_WORKLOAD_NONE,
} s_workload_t;

/* The command line. */
/* How the workers make request ids. */
typedef enum s_ids {
    S_IDS_CLIENT,     /* cl_client_new_request_id(): time first, then 80 random bits (sorting) */
    S_IDS_SEQUENTIAL, /* --sequential-ids: run nonce, client, counter (sorting, per client) */
    S_IDS_RANDOM,     /* --random-ids: 128 random bits, all over the idempotency index */
} s_ids_t;

typedef struct s_config {
    const char *connect;     /* --connect ENDPOINT, or NULL */
    bool spawn;              /* --spawn-daemon */
    const char *data_dir;    /* --data DIR */
    const char *daemon_path; /* --daemon PATH */
    bench_daemon_opts_t dopts;
    uint64_t cards;              /* --cards */
    bool reuse_cards;            /* --reuse-cards */
    unsigned issue_window;       /* --issue-window */
    unsigned issue_per_msg;      /* --issue-per-message */
    s_workload_t workload;       /* --workload */
    double duration_s;           /* --duration */
    double warmup_s;             /* --warmup */
    unsigned clients;            /* --clients */
    unsigned threads;            /* --threads */
    unsigned window;             /* --window */
    unsigned per_message;        /* --per-message */
    double rate;                 /* --rate, requests/s; 0 = closed loop */
    s_ids_t ids;                 /* --sequential-ids, --random-ids; default libcardledger's */
    bool restart;                /* --restart */
    bool replay;                 /* --replay */
    bool json;                   /* --json */
    bool quiet;                  /* --quiet */
    uint64_t seed;               /* --seed */
    const char *server_key_file; /* --server-key-file: for a daemon with CurveZMQ keys */
    const char *key_file;        /* --key-file */
} s_config_t;

/* Shared by the workers. */
typedef struct s_shared {
    const s_config_t *cfg;
    const char *endpoint;
    void *zctx;            /* the ZeroMQ context every client of the run shares */
    const uint64_t *cards; /* card ids of the run, cfg->cards of them */
    uint64_t ncards;
    char nonce[S_NONCE_LEN + 1];
    uint64_t id_seed;       /* random per run, even with --seed: request ids never repeat */
    _Atomic unsigned ready; /* clients connected (or failed to), counted by their threads */
    _Atomic bool go;        /* start_ns and the rest are set: start */
    uint64_t start_ns;      /* the run's start (warm-up included) */
    uint64_t measure_ns;    /* start + warm-up: what is measured starts here */
    uint64_t end_ns;        /* no send is scheduled at or after this */
    double interval_ns;     /* open loop: between two messages of one client; 0 closed loop */
} s_shared_t;

/* One message in flight. */
typedef struct s_flight {
    bool used;
    uint64_t tag;      /* cl_client_send()'s tag */
    uint64_t sched_ns; /* scheduled (open loop) or actual (closed loop) send time */
    uint32_t n;        /* requests in it */
} s_flight_t;

/* One client (one connection) and everything it counts. */
typedef struct s_worker {
    s_shared_t *sh;
    unsigned index;
    cl_client_t *client;
    int setup_rc;         /* 0, or why the client could not start */
    bool failed;          /* gave up: a ZeroMQ failure */
    double next_sched;    /* open loop: when its next message is due */
    uint64_t stall_since; /* its last reply (or resend) */

    uint64_t rng;                                      /* xorshift64* state (--seed) */
    uint64_t id_rng;                                   /* request ids (random per run) */
    uint64_t xfer_cards[S_XFER_CARDS];                 /* cards only this worker gives away */
    char xfer_holder[S_XFER_CARDS][CL_HOLDER_MAX + 1]; /* and their holders now */
    size_t xfer_n;                                     /* entries in use */
    uint64_t counter;                                  /* request ids and order refs */
    s_flight_t *flights;                               /* window of them */
    uint8_t *ops;        /* window * per_message: the op of each request in flight */
    cl_command_t *cmds;  /* per_message commands being built */
    cl_reply_t *replies; /* per_message replies */

    bench_hist_t hist; /* latencies of the measured requests */
    uint64_t measured; /* requests answered after the warm-up */
    uint64_t last_reply_ns;
    uint64_t status_counts[S_STATUS_SLOTS]; /* every reply, warm-up included */
    uint64_t status_other;                  /* statuses beyond the table */
    uint64_t op_sent[S_OP_COUNT];
    uint64_t op_ok[S_OP_COUNT];
    uint64_t client_errors; /* library errors (send, receive, decode) */
    uint64_t bad_replies;   /* protocol or ledger-failure statuses */
    uint64_t resends;       /* lazy-pirate resends after a stall */
    uint64_t replayed;      /* replies marked replayed (answers to a resend) */
    uint64_t late_sends;    /* open loop: sends that left >1 ms after their schedule */
    uint64_t unsent;        /* open loop: requests due before the end and never sent (overload) */
    _Atomic uint64_t progress_done;   /* requests answered so far (for the progress line) */
    _Atomic uint64_t progress_errors; /* client errors + bad replies so far */
} s_worker_t;

/* One thread of the run and the clients it drives. */
typedef struct s_thread {
    s_shared_t *sh;
    s_worker_t *w; /* its clients, n of them */
    unsigned n;
    struct pollfd *pfds; /* n of them: the descriptors one wait sleeps on */
    pthread_t thread;
    bool started;
} s_thread_t;

static _Atomic int s_stop_flag; /* SIGINT or SIGTERM: stop sending, drain, report */

static void
s_on_signal(int sig)
{
    (void)sig;
    s_stop_flag = 1;
}

/* ---- Small helpers --------------------------------------------------------------------------- */

static void s_die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
s_die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, S_PROG ": ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" S_PROG " --help'.\n");
    exit(S_EXIT_USAGE);
}

static uint64_t
s_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, S_PROG ": %s: '%s' is not a whole number in %" PRIu64 "..%" PRIu64 "\n",
                opt, s, min, max);
        exit(S_EXIT_USAGE);
    }
    return v;
}

static double
s_parse_double(const char *opt, const char *s, double min, double max)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max)) {
        fprintf(stderr, S_PROG ": %s: '%s' is not a number in %g..%g\n", opt, s, min, max);
        exit(S_EXIT_USAGE);
    }
    return v;
}

static uint64_t
s_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A uniform number in 0..n-1 (n > 0); the modulo bias is far below what a benchmark sees. */
static uint64_t
s_below(uint64_t *state, uint64_t n)
{
    return s_rand(state) % n;
}

static void
s_sleep_ns(uint64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
                           .tv_nsec = (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !s_stop_flag) {
    }
}

static double
s_self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* What happened between two readings of bench_daemon_sched() or bench_self_sched(). */
static void
s_sched_delta(const bench_sched_t *a, const bench_sched_t *b, bench_sched_t *out)
{
    out->loop_run_s = b->loop_run_s - a->loop_run_s;
    out->loop_wait_s = b->loop_wait_s - a->loop_wait_s;
    out->commit_run_s = b->commit_run_s - a->commit_run_s;
    out->commit_wait_s = b->commit_wait_s - a->commit_wait_s;
    out->all_run_s = b->all_run_s - a->all_run_s;
    out->all_wait_s = b->all_wait_s - a->all_wait_s;
}

/* A random run nonce in lower-case base32, so the request ids and row keys of this run never
 * meet those of an earlier run on the same ledger (the ledger remembers ids for 7 days), and a
 * random 64-bit seed (the workload's, unless --seed names one; and the request ids'). */
static void
s_make_nonce(char out[S_NONCE_LEN + 1], uint64_t *seed_out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t raw[S_NONCE_LEN + 8];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        uint64_t t = bench_now_ns() ^ ((uint64_t)getpid() << 32);
        memcpy(raw, &t, sizeof(t));
        memcpy(raw + 8, &t, sizeof(t));
    }
    for (size_t i = 0; i < S_NONCE_LEN; i++)
        out[i] = alphabet[raw[i] & 31u];
    out[S_NONCE_LEN] = '\0';
    uint64_t seed = 0;
    memcpy(&seed, raw + S_NONCE_LEN, sizeof(seed));
    *seed_out = seed | 1u;
}

/* A request id of the same length as libcardledger's own (26 characters): the run's nonce,
 * the worker and a counter. Its length matters: it is stored in every event. Ids made this way
 * sort in a few runs (one per worker), which is kind to the ledger's idempotency B-tree. By
 * default the workers send what real clients send: cl_client_new_request_id(). */
static void
s_request_id(char out[CL_REQUEST_ID_MAX + 1], const char *nonce, unsigned worker, uint64_t n)
{
    snprintf(out, CL_REQUEST_ID_MAX + 1, "%s%02x%016" PRIx64, nonce, worker & 0xffu, n);
}

/* A request id of 26 random lower-case base32 characters (128 bits from two draws; xorshift64*
 * instead of libsodium, because the benchmark needs ids that are random in the ledger's B-tree,
 * not secret), as libcardledger made them before its ids began with the time (--random-ids).
 * Random ids land all over the ledger's idempotency index, so every commit dirties about one
 * index page per request: the load of clients that do not follow docs/client.md. */
static void
s_random_request_id(char out[CL_REQUEST_ID_MAX + 1], uint64_t *rng)
{
    uint64_t a = s_rand(rng);
    uint64_t b = s_rand(rng);
    uint8_t raw[16];
    for (int i = 0; i < 8; i++) {
        raw[i] = (uint8_t)(a >> (8 * i));
        raw[8 + i] = (uint8_t)(b >> (8 * i));
    }
    cl_client_request_id_from_bytes(raw, out);
}

/* ---- Setup: the merchant, store and program, and the cards ------------------------------- */

static int
s_call_ok(cl_client_t *c, cl_command_t *cmd, cl_reply_t *r, const char *what, bool exists_ok)
{
    int rc = cl_client_call(c, cmd, r);
    if (rc < 0) {
        fprintf(stderr, S_PROG ": %s: %s\n", what, cl_client_strerror(rc));
        return -1;
    }
    if (r->status == CL_OK || (exists_ok && r->status == CL_ALREADY_EXISTS))
        return 0;
    fprintf(stderr, S_PROG ": %s: %s: %s\n", what, cl_status_name(r->status), r->message);
    return -1;
}

static int
s_setup_world(cl_client_t *c, cl_reply_t *r)
{
    cl_command_t *cmd = calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        return -1;
    int rc = 0;

    cmd->type = CL_CMD_REGISTER_MERCHANT;
    snprintf(cmd->u.register_merchant.merchant_id, CL_ID_MAX + 1, "%s", s_merchant);
    snprintf(cmd->u.register_merchant.name, CL_NAME_MAX + 1, "Benchmark merchant");
    rc |= s_call_ok(c, cmd, r, "RegisterMerchant", true);

    memset(cmd, 0, sizeof(*cmd));
    cmd->type = CL_CMD_REGISTER_STORE;
    snprintf(cmd->u.register_store.merchant_id, CL_ID_MAX + 1, "%s", s_merchant);
    snprintf(cmd->u.register_store.store_id, CL_ID_MAX + 1, "%s", s_store);
    snprintf(cmd->u.register_store.name, CL_NAME_MAX + 1, "Benchmark store");
    snprintf(cmd->u.register_store.region, CL_REGION_MAX + 1, "%s", s_region);
    if (rc == 0)
        rc |= s_call_ok(c, cmd, r, "RegisterStore", true);

    memset(cmd, 0, sizeof(*cmd));
    cmd->type = CL_CMD_DEFINE_PROGRAM;
    cl_program_spec_t *s = &cmd->u.program;
    snprintf(s->merchant_id, sizeof(s->merchant_id), "%s", s_merchant);
    snprintf(s->program_id, sizeof(s->program_id), "%s", s_program);
    snprintf(s->name, sizeof(s->name), "Benchmark gift card");
    snprintf(s->currency, sizeof(s->currency), "CNY");
    s->kind = CL_KIND_STORED_VALUE;
    s->custom_min_minor = 1;
    s->custom_max_minor = 100000000;
    s->accept_scope = CL_ACCEPT_ALL;
    s->transferable = true;
    s->reloadable = true;
    s->valid_days = 3650; /* no card expires, and no reminder falls due, during a run */
    if (rc == 0)
        rc |= s_call_ok(c, cmd, r, "DefineProgram", true);
    free(cmd);
    return rc;
}

static void
s_issue_row(cl_cmd_issue_card_t *row, const char *nonce, uint64_t n)
{
    memset(row, 0, sizeof(*row));
    snprintf(row->merchant_id, sizeof(row->merchant_id), "%s", s_merchant);
    snprintf(row->program_id, sizeof(row->program_id), "%s", s_program);
    snprintf(row->holder, sizeof(row->holder), "h0");
    row->channel = CL_CHANNEL_ENTERPRISE;
    snprintf(row->region, sizeof(row->region), "%s", s_region);
    row->face_value_minor = S_FACE_MINOR;
    snprintf(row->row_key, sizeof(row->row_key), "%s-%" PRIu64, nonce, n);
}

/* Issues cfg->cards cards with pipelined IssueBatch commands and fills cards[] with their ids.
 * Returns 0 with the seconds taken, or -1. */
static int
s_issue_cards(const s_config_t *cfg, const char *endpoint, const char *nonce, uint64_t *cards,
              double *out_s)
{
    const unsigned per_msg = cfg->issue_per_msg;
    cl_client_opts_t o;
    bench_client_opts(&o);
    o.timeout_ms = S_TIMEOUT_MS * 4;
    o.window = cfg->issue_window;
    cl_client_t *c = NULL;
    int rc = cl_client_open(endpoint, &o, &c);
    if (rc < 0) {
        fprintf(stderr, S_PROG ": %s: %s\n", endpoint, cl_client_strerror(rc));
        return -1;
    }
    /* Every message in flight keeps its rows until cl_client_send() has encoded them; the
     * client copies the frame, so one message's worth of rows is enough. */
    cl_cmd_issue_card_t *rows = calloc((size_t)per_msg * CL_ISSUE_BATCH_MAX, sizeof(*rows));
    cl_command_t *cmds = calloc(per_msg, sizeof(*cmds));
    cl_reply_t *replies = calloc(per_msg, sizeof(*replies));
    int result = rows != NULL && cmds != NULL && replies != NULL ? 0 : -1;

    uint64_t next_row = 0; /* rows handed to a command */
    uint64_t issued = 0;   /* cards answered as issued */
    uint64_t batch_no = 0;
    uint64_t last_progress = bench_now_ns();
    uint64_t t0 = bench_now_ns();
    while (result == 0 && (next_row < cfg->cards || cl_client_outstanding(c) > 0)) {
        if (s_stop_flag) {
            fprintf(stderr, S_PROG ": interrupted while issuing cards\n");
            result = -1;
            break;
        }
        while (next_row < cfg->cards && cl_client_outstanding(c) < cfg->issue_window) {
            unsigned n = 0;
            for (; n < per_msg && next_row < cfg->cards; n++) {
                cl_command_t *cmd = &cmds[n];
                memset(cmd, 0, sizeof(*cmd));
                cmd->type = CL_CMD_ISSUE_BATCH;
                s_request_id(cmd->request_id, nonce, 0xffu, batch_no);
                snprintf(cmd->u.issue_batch.merchant_id, CL_ID_MAX + 1, "%s", s_merchant);
                snprintf(cmd->u.issue_batch.program_id, CL_ID_MAX + 1, "%s", s_program);
                snprintf(cmd->u.issue_batch.batch_ref, CL_NAME_MAX + 1, "bench-%s-%" PRIu64, nonce,
                         batch_no);
                batch_no++;
                uint64_t left = cfg->cards - next_row;
                uint32_t count = left < CL_ISSUE_BATCH_MAX ? (uint32_t)left : CL_ISSUE_BATCH_MAX;
                cl_cmd_issue_card_t *r = rows + (size_t)n * CL_ISSUE_BATCH_MAX;
                for (uint32_t i = 0; i < count; i++)
                    s_issue_row(&r[i], nonce, next_row + i);
                cmd->u.issue_batch.rows_count = count;
                cmd->batch_rows = r;
                next_row += count;
            }
            uint64_t tag = 0;
            rc = cl_client_send(c, cmds, n, &tag);
            if (rc < 0) {
                fprintf(stderr, S_PROG ": sending IssueBatch: %s\n", cl_client_strerror(rc));
                result = -1;
                break;
            }
        }
        if (result != 0 || cl_client_outstanding(c) == 0)
            break;
        size_t got = 0;
        uint64_t tag = 0;
        rc = cl_client_recv(c, S_TIMEOUT_MS * 4, replies, per_msg, &got, &tag);
        if (rc < 0) {
            fprintf(stderr, S_PROG ": waiting for IssueBatch replies: %s\n",
                    cl_client_strerror(rc));
            result = -1;
            break;
        }
        for (size_t k = 0; k < got && result == 0; k++) {
            const cl_reply_t *r = &replies[k];
            if (r->status != CL_OK || r->result != CL_RES_BATCH) {
                fprintf(stderr, S_PROG ": IssueBatch: %s: %s\n", cl_status_name(r->status),
                        r->message);
                result = -1;
                break;
            }
            for (uint32_t i = 0; i < r->rows_count; i++) {
                const cl_issued_row_t *row = &r->rows[i];
                /* The row key says where the card goes: "<nonce>-<row number>". */
                const char *dash = strrchr(row->row_key, '-');
                uint64_t at = dash != NULL ? strtoull(dash + 1, NULL, 10) : UINT64_MAX;
                if (row->status != CL_OK || at >= cfg->cards) {
                    fprintf(stderr, S_PROG ": IssueBatch row %s: %s: %s\n", row->row_key,
                            cl_status_name(row->status), row->message);
                    result = -1;
                    break;
                }
                cards[at] = row->card_id;
                issued++;
            }
        }
        uint64_t now = bench_now_ns();
        if (!cfg->quiet && now - last_progress >= S_PROGRESS_NS) {
            fprintf(stderr, "[issue] %" PRIu64 " of %" PRIu64 " cards, %.0f cards/s\n", issued,
                    cfg->cards, (double)issued / ((double)(now - t0) / 1e9));
            last_progress = now;
        }
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    if (result == 0 && issued != cfg->cards) {
        fprintf(stderr, S_PROG ": %" PRIu64 " cards issued, %" PRIu64 " asked\n", issued,
                cfg->cards);
        result = -1;
    }
    free(rows);
    free(cmds);
    free(replies);
    cl_client_close(&c);
    if (result == 0)
        *out_s = secs;
    return result;
}

/* --reuse-cards: cards 1..N, when the ledger holds at least N and card N is ours. */
static int
s_reuse_cards(const s_config_t *cfg, cl_client_t *c, cl_reply_t *r, uint64_t *cards)
{
    cl_command_t *cmd = calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        return -1;
    cmd->type = CL_CMD_GET_STATUS;
    int rc = s_call_ok(c, cmd, r, "GetStatus", false);
    if (rc == 0 && r->status_cards < cfg->cards) {
        fprintf(stderr,
                S_PROG ": --reuse-cards: the ledger holds %" PRIu64 " cards, %" PRIu64 " asked\n",
                r->status_cards, cfg->cards);
        rc = -1;
    }
    for (uint64_t probe = 1; rc == 0 && probe <= cfg->cards; probe += cfg->cards - 1) {
        memset(cmd, 0, sizeof(*cmd));
        cmd->type = CL_CMD_GET_CARD;
        cmd->u.card_flag.card.card_id = probe;
        rc = s_call_ok(c, cmd, r, "GetCard", false);
        if (rc == 0 && (strcmp(r->card.merchant_id, s_merchant) != 0 ||
                        strcmp(r->card.program_id, s_program) != 0)) {
            fprintf(stderr, S_PROG ": --reuse-cards: card %" PRIu64 " is not a benchmark card\n",
                    probe);
            rc = -1;
        }
        if (cfg->cards == 1)
            break;
    }
    free(cmd);
    for (uint64_t i = 0; rc == 0 && i < cfg->cards; i++)
        cards[i] = i + 1;
    return rc;
}

/* ---- The workload ---------------------------------------------------------------------------- */

static s_op_t
s_pick_op(s_worker_t *w)
{
    if (w->sh->cfg->workload == S_WORKLOAD_REDEEM)
        return S_OP_REDEEM;
    uint64_t r = s_below(&w->rng, 1000);
    if (r < 700)
        return S_OP_REDEEM;
    if (r < 720)
        return S_OP_REDEEM_TOO_MUCH;
    if (r < 870)
        return S_OP_SHOW;
    if (r < 920)
        return S_OP_ISSUE;
    if (r < 970)
        return S_OP_RELOAD;
    return S_OP_TRANSFER;
}

/* Fills cmd for one request of kind op. Only the union member the type uses is written, so the
 * big command struct is not cleared for every request (that alone would cost a core's worth of
 * memset at 150k requests/s). */
static void
s_build(s_worker_t *w, cl_command_t *cmd, s_op_t op)
{
    const s_shared_t *sh = w->sh;
    uint64_t n = w->counter++;
    switch (sh->cfg->ids) {
    case S_IDS_SEQUENTIAL:
        s_request_id(cmd->request_id, sh->nonce, w->index, n);
        break;
    case S_IDS_RANDOM:
        s_random_request_id(cmd->request_id, &w->id_rng);
        break;
    case S_IDS_CLIENT:
    default:
        cl_client_new_request_id(cmd->request_id);
        break;
    }
    cmd->batch_rows = NULL;
    uint64_t idx = s_below(&w->rng, sh->ncards);
    uint64_t card = sh->cards[idx];
    switch (op) {
    case S_OP_REDEEM:
    case S_OP_REDEEM_TOO_MUCH: {
        cl_cmd_redeem_t *r = &cmd->u.redeem;
        cmd->type = CL_CMD_REDEEM;
        memset(r, 0, sizeof(*r));
        r->card.card_id = card;
        memcpy(r->store_id, s_store, sizeof(s_store));
        /* A point-of-sale order number: 16 characters. */
        snprintf(r->order_ref, sizeof(r->order_ref), "o%02x%013" PRIx64, w->index & 0xffu,
                 n & UINT64_C(0xfffffffffffff));
        r->amount_minor = op == S_OP_REDEEM ? 1 + (int64_t)s_below(&w->rng, S_REDEEM_MAX_MINOR)
                                            : S_TOO_MUCH_MINOR;
        break;
    }
    case S_OP_SHOW:
        cmd->type = CL_CMD_GET_CARD;
        memset(&cmd->u.card_flag, 0, sizeof(cmd->u.card_flag));
        cmd->u.card_flag.card.card_id = card;
        break;
    case S_OP_ISSUE: {
        cl_cmd_issue_card_t *i = &cmd->u.issue_card;
        cmd->type = CL_CMD_ISSUE_CARD;
        memset(i, 0, sizeof(*i));
        memcpy(i->merchant_id, s_merchant, sizeof(s_merchant));
        memcpy(i->program_id, s_program, sizeof(s_program));
        snprintf(i->holder, sizeof(i->holder), "buyer-%02x-%" PRIx64, w->index & 0xffu, n);
        i->channel = CL_CHANNEL_ONLINE;
        memcpy(i->region, s_region, sizeof(s_region));
        i->face_value_minor = S_ISSUE_ONE_MINOR;
        break;
    }
    case S_OP_RELOAD: {
        cl_cmd_reload_t *r = &cmd->u.reload;
        cmd->type = CL_CMD_RELOAD;
        memset(r, 0, sizeof(*r));
        r->card.card_id = card;
        r->amount_minor = S_RELOAD_MINOR;
        r->channel = CL_CHANNEL_STORE;
        memcpy(r->store_id, s_store, sizeof(s_store));
        break;
    }
    case S_OP_TRANSFER: {
        if (w->xfer_n == 0) {
            /* No card of its own to give away (fewer cards than clients): show one instead. */
            cmd->type = CL_CMD_GET_CARD;
            memset(&cmd->u.card_flag, 0, sizeof(cmd->u.card_flag));
            cmd->u.card_flag.card.card_id = card;
            break;
        }
        /* One of this worker's own cards, whose holder it knows (s_xfer_setup()). */
        size_t j = (size_t)s_below(&w->rng, w->xfer_n);
        cl_cmd_gift_t *g = &cmd->u.gift;
        cmd->type = CL_CMD_TRANSFER_CARD;
        memset(g, 0, sizeof(*g));
        g->card.card_id = w->xfer_cards[j];
        memcpy(g->from_holder, w->xfer_holder[j], sizeof(g->from_holder));
        snprintf(g->to_holder, sizeof(g->to_holder), "friend-%s-%02x-%" PRIx64, sh->nonce,
                 w->index & 0xffu, n);
        /* The ledger decides one connection's messages in order, so the next transfer of this
         * card, even if sent before this reply comes, already names the new holder. */
        memcpy(w->xfer_holder[j], g->to_holder, sizeof(w->xfer_holder[j]));
        break;
    }
    default:
        abort();
    }
}

/* Whether a status means something failed (not a domain answer): the protocol refusals
 * (10..19: a bug of this program) and the ledger's failures (90+). */
static bool
s_status_is_failure(cl_status_t st)
{
    return st != CL_OK && (st < CL_UNKNOWN_MERCHANT || st >= CL_UNAVAILABLE);
}

static s_flight_t *
s_flight_find(s_worker_t *w, uint64_t tag, size_t *out_i)
{
    for (size_t i = 0; i < w->sh->cfg->window; i++) {
        if (w->flights[i].used && w->flights[i].tag == tag) {
            *out_i = i;
            return &w->flights[i];
        }
    }
    return NULL;
}

static int
s_send_one(s_worker_t *w, uint64_t sched_ns)
{
    const s_config_t *cfg = w->sh->cfg;
    size_t slot = 0;
    while (slot < cfg->window && w->flights[slot].used)
        slot++;
    if (slot == cfg->window)
        return CLIENT_EFULL;
    uint8_t *ops = w->ops + slot * cfg->per_message;
    for (unsigned k = 0; k < cfg->per_message; k++) {
        s_op_t op = s_pick_op(w);
        ops[k] = (uint8_t)op;
        s_build(w, &w->cmds[k], op);
    }
    uint64_t tag = 0;
    int rc = cl_client_send(w->client, w->cmds, cfg->per_message, &tag);
    if (rc < 0)
        return rc;
    for (unsigned k = 0; k < cfg->per_message; k++)
        w->op_sent[ops[k]]++;
    w->flights[slot] =
        (s_flight_t){ .used = true, .tag = tag, .sched_ns = sched_ns, .n = cfg->per_message };
    return 0;
}

/* Takes one reply if one comes within timeout_ms. Returns 1 when one was taken, 0 on timeout,
 * or a negative CLIENT_E* code. */
static int
s_recv_one(s_worker_t *w, int timeout_ms)
{
    const s_config_t *cfg = w->sh->cfg;
    size_t got = 0;
    uint64_t tag = 0;
    int rc = cl_client_recv(w->client, timeout_ms, w->replies, cfg->per_message, &got, &tag);
    if (rc == CLIENT_ETIMEOUT || rc == CLIENT_EEMPTY)
        return 0;
    if (rc < 0)
        return rc;
    uint64_t now = bench_now_ns();
    size_t slot = 0;
    s_flight_t *f = s_flight_find(w, tag, &slot);
    if (f == NULL)
        return CLIENT_EPROTO;
    const uint8_t *ops = w->ops + slot * cfg->per_message;
    uint64_t errors = 0;
    for (size_t k = 0; k < got; k++) {
        const cl_reply_t *r = &w->replies[k];
        if ((unsigned)r->status < S_STATUS_SLOTS)
            w->status_counts[r->status]++;
        else
            w->status_other++;
        if (r->replayed)
            w->replayed++;
        if (k < f->n && r->status == CL_OK)
            w->op_ok[ops[k]]++;
        if (s_status_is_failure(r->status))
            errors++;
    }
    if (got != f->n)
        errors++;
    w->bad_replies += errors;
    /* Latency: every message scheduled (or, closed loop, sent) after the warm-up. Throughput:
     * every request answered after the warm-up, whenever it was scheduled (in an overloaded open
     * loop the answers lag their schedule by more than the run). */
    if (f->sched_ns >= w->sh->measure_ns) {
        uint64_t lat = now > f->sched_ns ? now - f->sched_ns : 0;
        bench_hist_record(&w->hist, lat, f->n);
    }
    if (now >= w->sh->measure_ns) {
        w->measured += got;
        w->last_reply_ns = now;
    }
    f->used = false;
    atomic_fetch_add_explicit(&w->progress_done, got, memory_order_relaxed);
    if (errors > 0)
        atomic_fetch_add_explicit(&w->progress_errors, errors, memory_order_relaxed);
    return 1;
}

static void
s_client_error(s_worker_t *w, int rc, const char *what)
{
    if (w->client_errors < 5)
        fprintf(stderr, S_PROG ": client %u: %s: %s\n", w->index, what, cl_client_strerror(rc));
    w->client_errors++;
    atomic_fetch_add_explicit(&w->progress_errors, 1, memory_order_relaxed);
}

/* After a wait without a reply: when nothing has come for S_STALL_MS, resends everything
 * outstanding. Returns false when the worker must give up. */
static bool
s_stall_check(s_worker_t *w, uint64_t *stall_since)
{
    if (cl_client_outstanding(w->client) > 0 &&
        bench_now_ns() - *stall_since > (uint64_t)S_STALL_MS * 1000000u) {
        /* Lazy pirate: the same messages with the same request ids on a fresh socket. */
        int rc = cl_client_resend(w->client);
        w->resends++;
        *stall_since = bench_now_ns();
        if (rc < 0) {
            s_client_error(w, rc, "resending");
            return false;
        }
    }
    return true;
}

/*
 * Open loop behind its schedule at the end, or when the client gave up (the ledger could not
 * keep up, the window was full, the connection failed): the messages that were due and never
 * sent are the slowest of all. Each counts in the latencies with what it has waited so far, a
 * lower bound, instead of being dropped; none counts as answered. So an overload shows as huge
 * percentiles, and the run still ends on time instead of working through the backlog. The
 * client's schedule then ends: nothing more is counted for it.
 */
static void
s_count_unsent(s_worker_t *w)
{
    const s_shared_t *sh = w->sh;
    if (sh->interval_ns <= 0)
        return;
    uint64_t now = bench_now_ns();
    while ((uint64_t)w->next_sched < sh->end_ns && (uint64_t)w->next_sched < now) {
        uint64_t sched = (uint64_t)w->next_sched;
        if (sched >= sh->measure_ns)
            bench_hist_record(&w->hist, now - sched, sh->cfg->per_message);
        w->unsent += sh->cfg->per_message;
        w->next_sched += sh->interval_ns;
    }
    w->next_sched = (double)sh->end_ns;
}

/* The client gives up (a ZeroMQ failure): what it was due to send so far counts as unsent. */
static void
s_worker_fail(s_worker_t *w)
{
    if (!w->failed)
        s_count_unsent(w);
    w->failed = true;
}

/* s_wait(): no client of the thread can send before a reply comes (every window is full). */
#define S_DUE_NEVER UINT64_MAX

/*
 * Takes every reply that has arrived for the thread's clients, then sleeps until the next reply
 * arrives on any of them or until due_ns (the next scheduled send of a client with room in its
 * window; S_DUE_NEVER when there is none), whichever comes first, to the nanosecond: ppoll() on
 * the clients' descriptors (cl_client_fd(), edge-triggered, so only after cl_client_recv() has
 * said nothing is there) with a timespec timeout, at most S_OPEN_WAIT_MAX_NS so that a stall is
 * noticed. So a reply is read when it arrives, not at the next step of a poll, replies that
 * arrived together are read together, and the thread costs nothing while it waits. Returns at
 * once when a client whose window was full took a reply, or a client resent. The caller sends
 * what is due and comes back. A client that must give up is marked failed (s_worker_fail());
 * one whose reply could not be taken otherwise is left out of this wait.
 */
static void
s_wait(s_thread_t *t, uint64_t due_ns)
{
    nfds_t nfds = 0;
    bool again = false;
    for (unsigned i = 0; i < t->n; i++) {
        s_worker_t *w = &t->w[i];
        if (w->failed || cl_client_outstanding(w->client) == 0)
            continue;
        int rc;
        bool took = false;
        bool was_full = cl_client_outstanding(w->client) >= t->sh->cfg->window;
        while ((rc = s_recv_one(w, 0)) > 0)
            took = true;
        if (rc < 0) {
            /* Any other failure (a reply that matches nothing) is counted; the client goes on
             * and is read again at the next wait. */
            s_client_error(w, rc, "receiving");
            if (rc == CLIENT_EZMQ)
                s_worker_fail(w);
            continue;
        }
        if (took) {
            w->stall_since = bench_now_ns();
            /* A full window has room again: what is due goes first. */
            again = again || was_full;
        } else {
            uint64_t resends = w->resends;
            if (!s_stall_check(w, &w->stall_since)) {
                s_worker_fail(w);
                continue;
            }
            /* A resend went out on a new socket: take what it has before waiting on it. */
            if (w->resends != resends)
                again = true;
        }
        /* With nothing outstanding any more the descriptor may stay readable: leave it out. */
        if (cl_client_outstanding(w->client) > 0) {
            int fd = -1;
            rc = cl_client_fd(w->client, &fd);
            if (rc < 0) {
                s_client_error(w, rc, "waiting");
                s_worker_fail(w);
                continue;
            }
            t->pfds[nfds++] = (struct pollfd){ .fd = fd, .events = POLLIN };
        }
    }
    uint64_t now = bench_now_ns();
    if (again || due_ns <= now)
        return;
    uint64_t wait_ns = due_ns - now < S_OPEN_WAIT_MAX_NS ? due_ns - now : S_OPEN_WAIT_MAX_NS;
    struct timespec ts = { .tv_sec = (time_t)(wait_ns / 1000000000u),
                           .tv_nsec = (long)(wait_ns % 1000000000u) };
    if (ppoll(nfds > 0 ? t->pfds : NULL, nfds, &ts, NULL) < 0 && errno != EINTR) {
        s_client_error(&t->w[0], CLIENT_EZMQ, "waiting");
        for (unsigned i = 0; i < t->n; i++)
            s_worker_fail(&t->w[i]);
    }
}

/*
 * The mix's gift transfers must name the card's current holder. Each worker takes S_XFER_CARDS
 * cards of its own (indexes equal to its number modulo the clients, so no two workers share
 * one) and asks the ledger who holds them, since an earlier run on the same ledger may have
 * given them away. From then on it knows, because only it transfers them. Returns 0 or a
 * CLIENT_E* code (a card that is not there is CLIENT_EPROTO).
 */
static int
s_xfer_setup(s_worker_t *w)
{
    const s_shared_t *sh = w->sh;
    uint64_t clients = sh->cfg->clients;
    uint64_t per_class = sh->ncards / clients;
    if (w->index >= sh->ncards)
        return 0;
    size_t want = per_class < S_XFER_CARDS ? (size_t)(per_class > 0 ? per_class : 1) : S_XFER_CARDS;
    uint64_t step = per_class / want > 0 ? per_class / want : 1;
    cl_command_t *cmds = calloc(want, sizeof(*cmds));
    cl_reply_t *replies = calloc(want, sizeof(*replies));
    int rc = cmds != NULL && replies != NULL ? 0 : CLIENT_ENOMEM;
    size_t n = 0;
    for (size_t k = 0; rc == 0 && k < want; k++) {
        uint64_t idx = w->index + clients * (k * step);
        if (idx >= sh->ncards)
            break;
        w->xfer_cards[n] = sh->cards[idx];
        cmds[n].type = CL_CMD_GET_CARD;
        cmds[n].u.card_flag.card.card_id = sh->cards[idx];
        n++;
    }
    if (rc == 0 && n > 0)
        rc = cl_client_call_batch(w->client, cmds, n, replies);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        if (replies[k].status != CL_OK) {
            fprintf(stderr, S_PROG ": card %" PRIu64 ": %s\n", w->xfer_cards[k],
                    cl_status_name(replies[k].status));
            rc = CLIENT_EPROTO;
            break;
        }
        memcpy(w->xfer_holder[k], replies[k].card.holder, sizeof(w->xfer_holder[k]));
    }
    if (rc == 0)
        w->xfer_n = n;
    free(cmds);
    free(replies);
    return rc;
}

/* Opens a client on the run's shared context and connects it; sets w->setup_rc. */
static void
s_worker_setup(s_worker_t *w)
{
    const s_shared_t *sh = w->sh;
    cl_client_opts_t o;
    bench_client_opts(&o);
    o.timeout_ms = S_TIMEOUT_MS;
    o.window = sh->cfg->window;
    o.zmq_context = sh->zctx;
    w->setup_rc = cl_client_open(sh->endpoint, &o, &w->client);
    if (w->setup_rc == 0) {
        /* Connect now, so connecting is not part of the measurement. */
        cl_command_t *cmd = calloc(1, sizeof(*cmd));
        if (cmd == NULL) {
            w->setup_rc = CLIENT_ENOMEM;
        } else {
            cmd->type = CL_CMD_GET_STATUS;
            w->setup_rc = cl_client_call(w->client, cmd, &w->replies[0]);
            free(cmd);
        }
    }
    if (w->setup_rc == 0 && sh->cfg->workload == S_WORKLOAD_MIX)
        w->setup_rc = s_xfer_setup(w);
}

/*
 * Sends what is due for one client while its window has room: in the open loop every message
 * whose scheduled time has come (sh->interval_ns apart), in the closed loop until the window is
 * full. Returns false when the client must give up.
 */
static bool
s_send_due(s_worker_t *w, uint64_t now)
{
    const s_config_t *cfg = w->sh->cfg;
    const bool open_loop = w->sh->interval_ns > 0;
    while (cl_client_outstanding(w->client) < cfg->window) {
        uint64_t sched = now;
        if (open_loop) {
            if ((uint64_t)w->next_sched > now || (uint64_t)w->next_sched >= w->sh->end_ns)
                break;
            sched = (uint64_t)w->next_sched;
            w->next_sched += w->sh->interval_ns;
            if (now - sched > 1000000u)
                w->late_sends++;
        }
        int rc = s_send_one(w, sched);
        if (rc < 0) {
            s_client_error(w, rc, "sending");
            return rc != CLIENT_EZMQ;
        }
        if (!open_loop)
            now = bench_now_ns();
    }
    return true;
}

/*
 * A thread of the run: connects its clients, then drives them all from one loop (send what is
 * due, then s_wait()), so that C connections need not cost C threads, each woken for every
 * message on a 2-core machine shared with the daemon. Then it waits for the last replies.
 */
static void *
s_thread_main(void *arg)
{
    s_thread_t *t = arg;
    s_shared_t *sh = t->sh;
    const s_config_t *cfg = sh->cfg;

    /* One client that cannot start fails the run: the others are not set up. */
    bool setup_ok = true;
    for (unsigned i = 0; setup_ok && i < t->n; i++) {
        s_worker_setup(&t->w[i]);
        setup_ok = t->w[i].setup_rc == 0;
    }
    atomic_fetch_add(&sh->ready, t->n);
    while (!atomic_load(&sh->go))
        s_sleep_ns(100000);
    if (!setup_ok || s_stop_flag)
        return NULL;

    const bool open_loop = sh->interval_ns > 0;
    /* Open loop: the clients' schedules are staggered evenly so their sends do not arrive in
     * lockstep. */
    for (unsigned i = 0; i < t->n; i++) {
        s_worker_t *w = &t->w[i];
        w->next_sched = (double)sh->start_ns + sh->interval_ns * w->index / cfg->clients;
        w->stall_since = bench_now_ns();
    }

    while (!s_stop_flag) {
        uint64_t now = bench_now_ns();
        if (now >= sh->end_ns)
            break;
        /* Send everything due, and find the earliest next send of a client with room. */
        uint64_t due = S_DUE_NEVER;
        unsigned sending = 0;
        for (unsigned i = 0; i < t->n; i++) {
            s_worker_t *w = &t->w[i];
            if (w->failed || (open_loop && (uint64_t)w->next_sched >= sh->end_ns))
                continue;
            sending++;
            if (!s_send_due(w, now)) {
                s_worker_fail(w);
                continue;
            }
            /* In the closed loop (every window full) only a reply lets a send go. */
            if (open_loop && cl_client_outstanding(w->client) < cfg->window &&
                (uint64_t)w->next_sched < due)
                due = (uint64_t)w->next_sched;
        }
        if (sending == 0)
            break;
        s_wait(t, due);
    }

    for (unsigned i = 0; i < t->n; i++)
        s_count_unsent(&t->w[i]);

    /* Drain: every message sent is answered (or counted as failed), so the counts add up. */
    uint64_t drain_until = bench_now_ns() + (uint64_t)S_STOP_DRAIN_MS * 1000000u;
    for (;;) {
        bool waiting = false;
        for (unsigned i = 0; i < t->n; i++)
            waiting = waiting || (!t->w[i].failed && cl_client_outstanding(t->w[i].client) > 0);
        if (!waiting || bench_now_ns() >= drain_until)
            break;
        s_wait(t, S_DUE_NEVER);
    }
    for (unsigned i = 0; i < t->n; i++) {
        s_worker_t *w = &t->w[i];
        size_t left = cl_client_outstanding(w->client);
        if (left > 0) {
            fprintf(stderr, S_PROG ": client %u: %zu messages never answered\n", w->index, left);
            w->client_errors += left;
        }
    }
    return NULL;
}

/* ---- Journal figures ----------------------------------------------------------------------- */

typedef struct s_jstat {
    bool ok;
    journal_stat_t st;
} s_jstat_t;

static void
s_journal_path(const char *data_dir, char *out, size_t cap)
{
    snprintf(out, cap, "%s/journal", data_dir);
}

static void
s_journal_stat(const char *data_dir, s_jstat_t *out)
{
    memset(out, 0, sizeof(*out));
    if (data_dir == NULL)
        return;
    char path[PATH_MAX];
    s_journal_path(data_dir, path, sizeof(path));
    journal_opts_t jo = { .read_only = true };
    journal_t *j = NULL;
    int rc = journal_open(path, &jo, &j);
    if (rc == 0)
        rc = journal_stat(j, &out->st);
    if (rc != 0)
        fprintf(stderr, S_PROG ": journal stat of %s: %s\n", path, journal_strerror(rc));
    out->ok = rc == 0;
    journal_close(&j);
}

/* The payload bytes of entries from..to (verifying them on the way). Returns 0 or -1. */
static int
s_journal_payload(const char *data_dir, uint64_t from, uint64_t to, uint64_t *out_bytes,
                  uint64_t *out_entries)
{
    char path[PATH_MAX];
    s_journal_path(data_dir, path, sizeof(path));
    journal_opts_t jo = { .read_only = true };
    journal_t *j = NULL;
    int rc = journal_open(path, &jo, &j);
    journal_verify_stats_t vs;
    memset(&vs, 0, sizeof(vs));
    if (rc == 0)
        rc = journal_verify(j, from, to, NULL, &vs);
    if (rc != 0)
        fprintf(stderr, S_PROG ": journal verify of %s: %s\n", path, journal_strerror(rc));
    journal_close(&j);
    if (rc != 0)
        return -1;
    *out_bytes = vs.payload_bytes;
    *out_entries = vs.entries_checked;
    return 0;
}

static uint64_t
s_entries_pages(const journal_stat_t *st)
{
    return st->entries_branch_pages + st->entries_leaf_pages + st->entries_overflow_pages;
}

/* ---- The offline fold and the projector's rebuild, when they are built ------------------- */

typedef struct s_replay {
    bool measured;
    bool partial; /* the rebuild was stopped at S_REBUILD_MAX_S: events is how far it got */
    double seconds;
    uint64_t events;
    int status;
    char note[S_LOG_LINE_MAX];
} s_replay_t;

/* A program of this build: BUILD/<sub>/<name>, found from /proc/self/exe (BUILD/tools/). */
static int
s_build_program(const char *sub, const char *name, char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *dir = dirname(self);
    int len = sub != NULL ? snprintf(out, cap, "%s/../%s/%s", dir, sub, name)
                          : snprintf(out, cap, "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= cap || access(out, X_OK) != 0)
        return -1;
    return 0;
}

static void
s_rm_rf(const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid > 0)
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
}

/* Runs a program to its end with stdout on /dev/null; returns its exit status (128 + signal). */
static int
s_run_program(const char *const *argv)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The offline fold: tools/cardledger-replay DATA OUT, timed from start to exit. */
static void
s_measure_replay(const char *data_dir, uint64_t events, s_replay_t *out)
{
    memset(out, 0, sizeof(*out));
    char tool[PATH_MAX];
    if (s_build_program(NULL, "cardledger-replay", tool, sizeof(tool)) != 0) {
        snprintf(out->note, sizeof(out->note), "not measured yet (projector not landed)");
        return;
    }
    char tmp[] = "/tmp/clbench-replay.XXXXXX";
    if (mkdtemp(tmp) == NULL) {
        snprintf(out->note, sizeof(out->note), "mkdtemp: %s", strerror(errno));
        return;
    }
    char target[sizeof(tmp) + 8];
    snprintf(target, sizeof(target), "%s/out", tmp);
    const char *argv[] = { tool, data_dir, target, "--log-level", "warn", NULL };
    uint64_t t0 = bench_now_ns();
    out->status = s_run_program(argv);
    out->seconds = (double)(bench_now_ns() - t0) / 1e9;
    out->events = events;
    out->measured = out->status == 0;
    if (!out->measured)
        snprintf(out->note, sizeof(out->note), "cardledger-replay exited with %d", out->status);
    s_rm_rf(tmp);
}

/*
 * The projector's rebuild: cardledger-projector on a new, empty projections directory folds
 * every projection from sequence 0, exactly as a blue/green rebuild after a schema change does.
 * Timed from its start until its GetStatus says the lowest checkpoint reached the head.
 */
static void
s_measure_rebuild(const char *data_dir, uint64_t head, s_replay_t *out)
{
    memset(out, 0, sizeof(*out));
    char tool[PATH_MAX];
    if (s_build_program("projections", "cardledger-projector", tool, sizeof(tool)) != 0) {
        snprintf(out->note, sizeof(out->note), "not measured yet (projector not landed)");
        return;
    }
    char tmp[] = "/tmp/clbench-proj.XXXXXX";
    if (mkdtemp(tmp) == NULL) {
        snprintf(out->note, sizeof(out->note), "mkdtemp: %s", strerror(errno));
        return;
    }
    char pdata[sizeof(tmp) + 8];
    char ep[sizeof(tmp) + 32];
    snprintf(pdata, sizeof(pdata), "%s/data", tmp);
    snprintf(ep, sizeof(ep), "ipc://%s/q.sock", tmp);
    const char *argv[] = { tool,       "--journal", data_dir,      "--data", pdata,
                           "--listen", ep,          "--log-level", "warn",   NULL };
    fflush(stdout);
    fflush(stderr);
    uint64_t t0 = bench_now_ns();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    if (pid < 0) {
        snprintf(out->note, sizeof(out->note), "fork: %s", strerror(errno));
        s_rm_rf(tmp);
        return;
    }
    cl_client_opts_t o;
    bench_client_opts(&o);
    o.timeout_ms = 200;
    o.retries = 0;
    o.window = 1;
    cl_client_t *c = NULL;
    cl_reply_t *r = calloc(1, sizeof(*r));
    cl_command_t *cmd = calloc(1, sizeof(*cmd));
    int rc = r != NULL && cmd != NULL ? cl_client_open(ep, &o, &c) : CLIENT_ENOMEM;
    bool done = false;
    uint64_t last_checkpoint = 0;
    while (rc == 0 && !done && !s_stop_flag) {
        int st = 0;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            pid = 0;
            snprintf(out->note, sizeof(out->note), "cardledger-projector exited with %d",
                     WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            break;
        }
        memset(cmd, 0, sizeof(*cmd));
        cmd->type = CL_CMD_GET_STATUS;
        int crc = cl_client_call(c, cmd, r);
        if (crc == 0 && r->status == CL_OK) {
            last_checkpoint = r->status_checkpoint_seq;
            if (last_checkpoint >= head) {
                done = true;
                break;
            }
            if (bench_now_ns() - t0 > (uint64_t)S_REBUILD_MAX_S * 1000000000u &&
                last_checkpoint > 0) {
                /* Long enough for a rate: report how far it got. */
                out->partial = true;
                done = true;
                break;
            }
        }
        if (crc != 0 && crc != CLIENT_ETIMEOUT) {
            snprintf(out->note, sizeof(out->note), "GetStatus on the projector: %s",
                     cl_client_strerror(crc));
            break;
        }
        s_sleep_ns(20000000); /* 20 ms between looks */
    }
    if (done) {
        out->seconds = (double)(bench_now_ns() - t0) / 1e9;
        out->events = out->partial ? last_checkpoint : head;
        out->measured = true;
    }
    cl_client_close(&c);
    free(r);
    free(cmd);
    if (pid > 0) {
        kill(pid, SIGTERM);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    s_rm_rf(tmp);
}

/* ---- Results --------------------------------------------------------------------------------- */

typedef struct s_results {
    double issue_s;
    bool issued;
    double run_s;      /* from the end of the warm-up to the last reply */
    uint64_t measured; /* requests answered after the warm-up */
    bench_hist_t hist; /* their latencies */
    uint64_t status_counts[S_STATUS_SLOTS];
    uint64_t status_other;
    uint64_t op_sent[S_OP_COUNT];
    uint64_t op_ok[S_OP_COUNT];
    uint64_t client_errors, bad_replies, resends, replayed, late_sends, unsent;
    double daemon_cpu_s, self_cpu_s;
    bool have_daemon_cpu;
    double cpu_wall_s;            /* the wall time the CPU and scheduling figures span */
    bench_sched_t dsched, ssched; /* the daemon's and this process's, over cpu_wall_s */
    bool have_dsched, have_ssched;
    bool have_disk;        /* the daemon's disk writes during the run are known */
    uint64_t disk_written; /* bytes */
    s_jstat_t j_before, j_after;
    bool have_payload;
    uint64_t payload_bytes, payload_entries;
    bool have_mem;
    bench_daemon_mem_t mem; /* after the run, before any restart */
    double start_ms;
    bool restarted;
    double restart_ms;
    char restart_load[S_LOG_LINE_MAX];
    char restart_ready[S_LOG_LINE_MAX];
    bool stopped;
    double stop_ms;
    int stop_status;
    s_replay_t replay;  /* the offline fold */
    s_replay_t rebuild; /* the projector's rebuild from sequence 0 */
} s_results_t;

static uint64_t
s_errors(const s_results_t *res)
{
    return res->client_errors + res->bad_replies;
}

static const char *
s_mode(const s_config_t *cfg)
{
    return cfg->rate > 0 ? "open" : "closed";
}

static const char *
s_ids_name(s_ids_t ids)
{
    switch (ids) {
    case S_IDS_SEQUENTIAL:
        return "sequential";
    case S_IDS_RANDOM:
        return "random";
    case S_IDS_CLIENT:
    default:
        return "libcardledger";
    }
}

static const char *
s_workload_name(s_workload_t w)
{
    return w == S_WORKLOAD_REDEEM ? "redeem" : w == S_WORKLOAD_MIX ? "mix" : "none";
}

static void
s_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static double
s_us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void
s_fold_json(FILE *f, const s_replay_t *r)
{
    if (r->measured) {
        fprintf(f, "{\"events\":%" PRIu64 ",\"seconds\":%.3f,\"events_per_s\":%.0f,\"partial\":%s}",
                r->events, r->seconds, (double)r->events / r->seconds,
                r->partial ? "true" : "false");
    } else if (r->note[0] != '\0') {
        fprintf(f, "{\"note\":");
        s_json_string(f, r->note);
        fprintf(f, "}");
    } else {
        fprintf(f, "null");
    }
}

static void
s_fold_text(FILE *f, const char *what, const s_replay_t *r)
{
    if (r->measured)
        fprintf(f, "%s: %" PRIu64 " events in %.2f s = %.0f events/s%s\n", what, r->events,
                r->seconds, (double)r->events / r->seconds,
                r->partial ? " (stopped before the head)" : "");
    else if (r->note[0] != '\0')
        fprintf(f, "%s: %s\n", what, r->note);
}

static void
s_print_json(const s_config_t *cfg, const s_results_t *res)
{
    FILE *f = stdout;
    fprintf(f, "{\"version\":\"%s\",", CARDLEDGER_VERSION);
    fprintf(f,
            "\"config\":{\"target\":\"%s\",\"cards\":%" PRIu64 ",\"workload\":\"%s\","
            "\"mode\":\"%s\",\"rate\":%.0f,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
            "\"clients\":%u,\"threads\":%u,\"window\":%u,\"per_message\":%u,"
            "\"issue_window\":%u,\"issue_per_message\":%u,\"request_ids\":\"%s\"},",
            cfg->spawn ? "spawned" : "connected", cfg->cards, s_workload_name(cfg->workload),
            s_mode(cfg), cfg->rate, cfg->duration_s, cfg->warmup_s, cfg->clients, cfg->threads,
            cfg->window, cfg->per_message, cfg->issue_window, cfg->issue_per_msg,
            s_ids_name(cfg->ids));
    if (res->issued)
        fprintf(f, "\"issue\":{\"cards\":%" PRIu64 ",\"seconds\":%.3f,\"cards_per_s\":%.0f},",
                cfg->cards, res->issue_s, (double)cfg->cards / res->issue_s);
    else
        fprintf(f, "\"issue\":null,");
    if (cfg->workload != S_WORKLOAD_NONE) {
        const bench_hist_t *h = &res->hist;
        fprintf(f,
                "\"run\":{\"requests\":%" PRIu64 ",\"seconds\":%.3f,\"requests_per_s\":%.0f,"
                "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p99_9\":%.1f,"
                "\"max\":%.1f,\"mean\":%.1f},",
                res->measured, res->run_s,
                res->run_s > 0 ? (double)res->measured / res->run_s : 0.0,
                s_us(bench_hist_percentile(h, 50)), s_us(bench_hist_percentile(h, 90)),
                s_us(bench_hist_percentile(h, 99)), s_us(bench_hist_percentile(h, 99.9)),
                s_us(h->max_ns), bench_hist_mean(h) / 1000.0);
        fprintf(f, "\"statuses\":{");
        bool first = true;
        for (unsigned s = 0; s < S_STATUS_SLOTS; s++) {
            if (res->status_counts[s] == 0)
                continue;
            fprintf(f, "%s\"%s\":%" PRIu64, first ? "" : ",", cl_status_name((cl_status_t)s),
                    res->status_counts[s]);
            first = false;
        }
        if (res->status_other > 0)
            fprintf(f, "%s\"other\":%" PRIu64, first ? "" : ",", res->status_other);
        fprintf(f, "},\"ops\":{");
        first = true;
        for (unsigned o = 0; o < S_OP_COUNT; o++) {
            if (res->op_sent[o] == 0)
                continue;
            fprintf(f, "%s\"%s\":{\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 "}", first ? "" : ",",
                    s_op_names[o], res->op_sent[o], res->op_ok[o]);
            first = false;
        }
        fprintf(f,
                "},\"errors\":%" PRIu64 ",\"client_errors\":%" PRIu64 ",\"bad_replies\":%" PRIu64
                ",\"resends\":%" PRIu64 ",\"replayed\":%" PRIu64 ",\"late_sends\":%" PRIu64
                ",\"unsent\":%" PRIu64 ",\"bench_cpu_cores\":%.2f",
                s_errors(res), res->client_errors, res->bad_replies, res->resends, res->replayed,
                res->late_sends, res->unsent,
                res->cpu_wall_s > 0 ? res->self_cpu_s / res->cpu_wall_s : 0.0);
        if (res->have_daemon_cpu)
            fprintf(f, ",\"daemon_cpu_cores\":%.2f",
                    res->cpu_wall_s > 0 ? res->daemon_cpu_s / res->cpu_wall_s : 0.0);
        if (res->have_dsched && res->cpu_wall_s > 0)
            fprintf(f,
                    ",\"daemon_loop_cpu_cores\":%.2f,\"daemon_loop_runq_wait_per_s\":%.3f"
                    ",\"daemon_commit_runq_wait_per_s\":%.3f,\"daemon_runq_wait_per_s\":%.3f",
                    res->dsched.loop_run_s / res->cpu_wall_s,
                    res->dsched.loop_wait_s / res->cpu_wall_s,
                    res->dsched.commit_wait_s / res->cpu_wall_s,
                    res->dsched.all_wait_s / res->cpu_wall_s);
        if (res->have_ssched && res->cpu_wall_s > 0)
            fprintf(f, ",\"bench_runq_wait_per_s\":%.3f", res->ssched.all_wait_s / res->cpu_wall_s);
        if (res->have_disk)
            fprintf(f,
                    ",\"daemon_disk_written_bytes\":%" PRIu64
                    ",\"daemon_disk_written_per_request\":%.0f",
                    res->disk_written,
                    res->measured > 0 ? (double)res->disk_written / (double)res->measured : 0.0);
        fprintf(f, "},");
    } else {
        fprintf(f, "\"run\":null,");
    }
    if (res->j_before.ok && res->j_after.ok) {
        const journal_stat_t *a = &res->j_before.st;
        const journal_stat_t *b = &res->j_after.st;
        uint64_t d = b->entries - a->entries;
        fprintf(f,
                "\"journal\":{\"entries\":%" PRIu64 ",\"run_entries\":%" PRIu64
                ",\"file_bytes\":%" PRIu64 ",\"map_used_bytes\":%" PRIu64
                ",\"page_bytes\":%u,\"entries_pages\":%" PRIu64,
                b->entries, d, b->file_size_bytes, b->map_used_bytes, b->page_size_bytes,
                s_entries_pages(b));
        fprintf(f, ",\"file_bytes_per_entry\":%.1f,\"map_used_bytes_per_entry\":%.1f",
                b->entries ? (double)b->file_size_bytes / (double)b->entries : 0.0,
                b->entries ? (double)b->map_used_bytes / (double)b->entries : 0.0);
        if (d > 0) {
            fprintf(f,
                    ",\"run_tree_bytes_per_event\":%.1f,\"run_map_used_bytes_per_event\":%.1f,"
                    "\"run_file_bytes_per_event\":%.1f",
                    (double)(s_entries_pages(b) - s_entries_pages(a)) * b->page_size_bytes /
                        (double)d,
                    (double)(b->map_used_bytes - a->map_used_bytes) / (double)d,
                    ((double)b->file_size_bytes - (double)a->file_size_bytes) / (double)d);
        }
        if (res->have_payload && res->payload_entries > 0)
            fprintf(f, ",\"run_payload_bytes_per_event\":%.1f,\"entry_header_bytes\":%u",
                    (double)res->payload_bytes / (double)res->payload_entries, JOURNAL_HEADER_SIZE);
        fprintf(f, "},");
    } else {
        fprintf(f, "\"journal\":null,");
    }
    fprintf(f, "\"daemon\":{");
    bool first = true;
    if (cfg->spawn) {
        fprintf(f, "\"start_ms\":%.1f", res->start_ms);
        first = false;
    }
    if (res->have_mem) {
        fprintf(f,
                "%s\"peak_rss_kb\":%" PRIu64 ",\"rss_kb\":%" PRIu64 ",\"rss_anon_kb\":%" PRIu64
                ",\"rss_file_kb\":%" PRIu64,
                first ? "" : ",", res->mem.hwm_kb, res->mem.rss_kb, res->mem.rss_anon_kb,
                res->mem.rss_file_kb);
        first = false;
    }
    if (res->restarted) {
        fprintf(f, "%s\"restart_ready_ms\":%.1f,\"restart_load\":", first ? "" : ",",
                res->restart_ms);
        s_json_string(f, res->restart_load);
        fprintf(f, ",\"restart_ready\":");
        s_json_string(f, res->restart_ready);
        first = false;
    }
    if (res->stopped) {
        fprintf(f, "%s\"stop_ms\":%.1f,\"stop_status\":%d", first ? "" : ",", res->stop_ms,
                res->stop_status);
    }
    fprintf(f, "},\"replay\":");
    s_fold_json(f, &res->replay);
    fprintf(f, ",\"rebuild\":");
    s_fold_json(f, &res->rebuild);
    fprintf(f, ",\"ok\":%s}\n", s_errors(res) == 0 ? "true" : "false");
}

static void
s_print_text(const s_config_t *cfg, const s_results_t *res)
{
    FILE *f = stdout;
    fprintf(f, "cardledger-bench %s: %" PRIu64 " cards, workload %s, %s loop", CARDLEDGER_VERSION,
            cfg->cards, s_workload_name(cfg->workload), s_mode(cfg));
    if (cfg->rate > 0)
        fprintf(f, " at %.0f requests/s", cfg->rate);
    fprintf(f,
            ", %u clients on %u thread%s x window %u x %u per message, %.1f s (+%.1f s warm-up)\n",
            cfg->clients, cfg->threads, cfg->threads == 1 ? "" : "s", cfg->window, cfg->per_message,
            cfg->duration_s, cfg->warmup_s);
    if (res->issued)
        fprintf(f,
                "batch issue:  %" PRIu64 " cards in %.2f s = %.0f cards/s (IssueBatch of %d rows, "
                "%u per message, %u messages in flight)\n",
                cfg->cards, res->issue_s, (double)cfg->cards / res->issue_s, CL_ISSUE_BATCH_MAX,
                cfg->issue_per_msg, cfg->issue_window);
    if (cfg->workload != S_WORKLOAD_NONE) {
        const bench_hist_t *h = &res->hist;
        fprintf(f, "throughput:   %" PRIu64 " requests in %.2f s = %.0f requests/s (durable)\n",
                res->measured, res->run_s,
                res->run_s > 0 ? (double)res->measured / res->run_s : 0.0);
        fprintf(f,
                "latency (%s): p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max "
                "%.1f us, mean %.1f us\n",
                cfg->rate > 0 ? "from scheduled send" : "from send",
                s_us(bench_hist_percentile(h, 50)), s_us(bench_hist_percentile(h, 90)),
                s_us(bench_hist_percentile(h, 99)), s_us(bench_hist_percentile(h, 99.9)),
                s_us(h->max_ns), bench_hist_mean(h) / 1000.0);
        fprintf(f, "replies:     ");
        for (unsigned s = 0; s < S_STATUS_SLOTS; s++)
            if (res->status_counts[s] > 0)
                fprintf(f, " %s %" PRIu64, cl_status_name((cl_status_t)s), res->status_counts[s]);
        if (res->status_other > 0)
            fprintf(f, " other %" PRIu64, res->status_other);
        fprintf(f, "\nrequests:    ");
        for (unsigned o = 0; o < S_OP_COUNT; o++)
            if (res->op_sent[o] > 0)
                fprintf(f, " %s %" PRIu64 " (ok %" PRIu64 ")", s_op_names[o], res->op_sent[o],
                        res->op_ok[o]);
        fprintf(f,
                "\nerrors:       %" PRIu64 " (client errors %" PRIu64 ", failed replies %" PRIu64
                "); resends %" PRIu64 ", replayed %" PRIu64 ", sends >1 ms late %" PRIu64
                ", never sent (behind schedule at the end) %" PRIu64 "\n",
                s_errors(res), res->client_errors, res->bad_replies, res->resends, res->replayed,
                res->late_sends, res->unsent);
        double wall = res->cpu_wall_s > 0 ? res->cpu_wall_s : 1.0;
        fprintf(f, "cpu:          bench %.2f cores", res->self_cpu_s / wall);
        if (res->have_daemon_cpu)
            fprintf(f, ", daemon %.2f cores", res->daemon_cpu_s / wall);
        fprintf(f, " (of %ld; over %.1f s, warm-up included)\n", sysconf(_SC_NPROCESSORS_ONLN),
                wall);
        if (res->have_dsched)
            fprintf(f,
                    "run queue:    per second, the daemon's loop ran %.2f s and waited %.2f s for "
                    "a CPU; its commit thread ran %.2f s and waited %.2f s; all its threads "
                    "waited %.2f s",
                    res->dsched.loop_run_s / wall, res->dsched.loop_wait_s / wall,
                    res->dsched.commit_run_s / wall, res->dsched.commit_wait_s / wall,
                    res->dsched.all_wait_s / wall);
        if (res->have_ssched)
            fprintf(f, "%sthis bench's threads waited %.2f s\n",
                    res->have_dsched ? "; " : "run queue:    ", res->ssched.all_wait_s / wall);
        else if (res->have_dsched)
            fprintf(f, "\n");
        if (res->have_disk)
            fprintf(f,
                    "disk:         the daemon wrote %.1f MiB during the run, %.0f B per request\n",
                    (double)res->disk_written / 1048576.0,
                    res->measured > 0 ? (double)res->disk_written / (double)res->measured : 0.0);
    }
    if (res->j_before.ok && res->j_after.ok) {
        const journal_stat_t *a = &res->j_before.st;
        const journal_stat_t *b = &res->j_after.st;
        uint64_t d = b->entries - a->entries;
        fprintf(f,
                "journal:      %" PRIu64 " entries, data.mdb %.1f MiB (%.1f B/entry, with the "
                "zeros kept ahead), map used %.1f MiB (%.1f B/entry)\n",
                b->entries, (double)b->file_size_bytes / 1048576.0,
                b->entries ? (double)b->file_size_bytes / (double)b->entries : 0.0,
                (double)b->map_used_bytes / 1048576.0,
                b->entries ? (double)b->map_used_bytes / (double)b->entries : 0.0);
        if (d > 0) {
            fprintf(f, "  the run's %" PRIu64 " events:", d);
            if (res->have_payload && res->payload_entries > 0)
                fprintf(f, " payload %.1f B + header %u B;",
                        (double)res->payload_bytes / (double)res->payload_entries,
                        JOURNAL_HEADER_SIZE);
            fprintf(f,
                    " journal tree %.1f B/event; map used %.1f B/event (with idempotency "
                    "records; the state checkpoint is in DATA/state)\n",
                    (double)(s_entries_pages(b) - s_entries_pages(a)) * b->page_size_bytes /
                        (double)d,
                    (double)(b->map_used_bytes - a->map_used_bytes) / (double)d);
        }
    }
    if (res->have_mem)
        fprintf(f,
                "daemon:       peak RSS %.1f MiB (now %.1f MiB: heap %.1f MiB, mapped journal "
                "pages %.1f MiB)\n",
                (double)res->mem.hwm_kb / 1024, (double)res->mem.rss_kb / 1024,
                (double)res->mem.rss_anon_kb / 1024, (double)res->mem.rss_file_kb / 1024);
    if (res->restarted)
        fprintf(f,
                "restart:      after kill -9: GetStatus answered %.1f ms after the start\n"
                "              (daemon: %s; %s)\n",
                res->restart_ms, res->restart_load, res->restart_ready);
    if (res->stopped)
        fprintf(f, "stop:         SIGTERM to exit %d in %.1f ms (final checkpoint)\n",
                res->stop_status, res->stop_ms);
    s_fold_text(f, "replay:       cardledger-replay (offline fold)", &res->replay);
    s_fold_text(f, "rebuild:      cardledger-projector from sequence 0", &res->rebuild);
    fprintf(f, "result:       %s\n", s_errors(res) == 0 ? "ok" : "FAILED");
}

/* ---- The run -----------------------------------------------------------------------------------
 */

static int
s_run_workload(const s_config_t *cfg, s_shared_t *sh, s_results_t *res, bench_daemon_t *d)
{
    s_worker_t *workers = calloc(cfg->clients, sizeof(*workers));
    s_thread_t *threads = calloc(cfg->threads, sizeof(*threads));
    sh->zctx = zmq_ctx_new();
    int result = workers != NULL && threads != NULL && sh->zctx != NULL ? 0 : -1;
    unsigned started = 0; /* clients whose thread started */
    for (unsigned i = 0; result == 0 && i < cfg->clients; i++) {
        s_worker_t *w = &workers[i];
        w->sh = sh;
        w->index = i;
        w->rng = (cfg->seed + 0x9E3779B97F4A7C15ull * (i + 1)) | 1u;
        w->id_rng = (sh->id_seed ^ (0xD1B54A32D192ED03ull * (i + 1))) | 1u;
        bench_hist_init(&w->hist);
        w->flights = calloc(cfg->window, sizeof(*w->flights));
        w->ops = calloc((size_t)cfg->window * cfg->per_message, 1);
        w->cmds = calloc(cfg->per_message, sizeof(*w->cmds));
        w->replies = calloc(cfg->per_message, sizeof(*w->replies));
        if (w->flights == NULL || w->ops == NULL || w->cmds == NULL || w->replies == NULL) {
            result = -1;
            break;
        }
    }
    /* The clients, spread evenly over the threads. */
    for (unsigned i = 0; result == 0 && i < cfg->threads; i++) {
        s_thread_t *t = &threads[i];
        unsigned first = (unsigned)((uint64_t)cfg->clients * i / cfg->threads);
        t->sh = sh;
        t->w = &workers[first];
        t->n = (unsigned)((uint64_t)cfg->clients * (i + 1) / cfg->threads) - first;
        t->pfds = calloc(t->n, sizeof(*t->pfds));
        if (t->pfds == NULL) {
            result = -1;
            break;
        }
        if (pthread_create(&t->thread, NULL, s_thread_main, t) != 0) {
            fprintf(stderr, S_PROG ": cannot start client thread %u\n", i);
            result = -1;
            break;
        }
        t->started = true;
        started += t->n;
    }
    /* Every client connects first, so connecting is not measured. */
    while (atomic_load(&sh->ready) < started)
        s_sleep_ns(1000000);
    for (unsigned i = 0; i < started; i++) {
        if (workers[i].setup_rc != 0) {
            fprintf(stderr, S_PROG ": client %u could not connect: %s\n", i,
                    cl_client_strerror(workers[i].setup_rc));
            result = -1;
        }
    }
    if (result != 0) {
        /* Release the clients that did start, with nothing to do. */
        s_stop_flag = 1;
        atomic_store(&sh->go, true);
    } else {
        uint64_t cpu_t0 = bench_now_ns();
        double cpu0 = s_self_cpu_s();
        double dcpu0 = 0;
        res->have_daemon_cpu = d != NULL && bench_daemon_cpu_s(d, &dcpu0) == 0;
        bench_sched_t ds0, ss0;
        res->have_dsched = d != NULL && bench_daemon_sched(d, &ds0) == 0;
        res->have_ssched = bench_self_sched(&ss0) == 0;
        uint64_t disk0 = 0;
        res->have_disk = d != NULL && bench_daemon_disk_written(d, &disk0) == 0;
        sh->start_ns = bench_now_ns();
        sh->measure_ns = sh->start_ns + (uint64_t)(cfg->warmup_s * 1e9);
        sh->end_ns = sh->measure_ns + (uint64_t)(cfg->duration_s * 1e9);
        /* Open loop: each client's share of the rate, in messages. */
        sh->interval_ns = cfg->rate > 0 ? 1e9 * cfg->per_message * cfg->clients / cfg->rate : 0;
        atomic_store(&sh->go, true);

        /* Progress, once a second, until every client is done. */
        uint64_t last_done = 0;
        uint64_t last_ns = sh->start_ns;
        uint64_t tick = sh->start_ns + S_PROGRESS_NS;
        for (;;) {
            uint64_t now = bench_now_ns();
            if (now >= sh->end_ns || s_stop_flag)
                break;
            s_sleep_ns(tick > now ? (tick - now < sh->end_ns - now ? tick - now : sh->end_ns - now)
                                  : 0);
            now = bench_now_ns();
            if (now < tick)
                continue;
            tick += S_PROGRESS_NS;
            uint64_t done = 0;
            uint64_t errors = 0;
            for (unsigned i = 0; i < cfg->clients; i++) {
                done += atomic_load_explicit(&workers[i].progress_done, memory_order_relaxed);
                errors += atomic_load_explicit(&workers[i].progress_errors, memory_order_relaxed);
            }
            if (!cfg->quiet)
                fprintf(stderr,
                        "[%5.1fs]%s %9.0f requests/s, %" PRIu64 " answered, %" PRIu64 " errors\n",
                        (double)(now - sh->start_ns) / 1e9, now < sh->measure_ns ? " warm-up" : "",
                        (double)(done - last_done) / ((double)(now - last_ns) / 1e9), done, errors);
            last_done = done;
            last_ns = now;
        }
        for (unsigned i = 0; i < cfg->threads; i++) {
            pthread_join(threads[i].thread, NULL);
            threads[i].started = false;
        }
        double dcpu1 = 0;
        if (res->have_daemon_cpu && bench_daemon_cpu_s(d, &dcpu1) == 0)
            res->daemon_cpu_s = dcpu1 - dcpu0;
        else
            res->have_daemon_cpu = false;
        res->self_cpu_s = s_self_cpu_s() - cpu0;
        bench_sched_t ds1, ss1;
        res->have_dsched = res->have_dsched && bench_daemon_sched(d, &ds1) == 0;
        res->have_ssched = res->have_ssched && bench_self_sched(&ss1) == 0;
        res->cpu_wall_s = (double)(bench_now_ns() - cpu_t0) / 1e9;
        if (res->have_dsched)
            s_sched_delta(&ds0, &ds1, &res->dsched);
        if (res->have_ssched)
            s_sched_delta(&ss0, &ss1, &res->ssched);
        uint64_t disk1 = 0;
        if (res->have_disk && bench_daemon_disk_written(d, &disk1) == 0 && disk1 >= disk0)
            res->disk_written = disk1 - disk0;
        else
            res->have_disk = false;

        uint64_t last_reply = sh->measure_ns;
        bench_hist_init(&res->hist);
        for (unsigned i = 0; i < cfg->clients; i++) {
            s_worker_t *w = &workers[i];
            bench_hist_merge(&res->hist, &w->hist);
            res->measured += w->measured;
            if (w->last_reply_ns > last_reply)
                last_reply = w->last_reply_ns;
            for (unsigned s = 0; s < S_STATUS_SLOTS; s++)
                res->status_counts[s] += w->status_counts[s];
            res->status_other += w->status_other;
            for (unsigned o = 0; o < S_OP_COUNT; o++) {
                res->op_sent[o] += w->op_sent[o];
                res->op_ok[o] += w->op_ok[o];
            }
            res->client_errors += w->client_errors;
            res->bad_replies += w->bad_replies;
            res->resends += w->resends;
            res->replayed += w->replayed;
            res->late_sends += w->late_sends;
            res->unsent += w->unsent;
        }
        res->run_s = (double)(last_reply - sh->measure_ns) / 1e9;
        if (res->measured == 0) {
            fprintf(stderr, S_PROG ": no request was answered in the measured window\n");
            result = -1;
        }
    }
    for (unsigned i = 0; threads != NULL && i < cfg->threads; i++) {
        if (threads[i].started)
            pthread_join(threads[i].thread, NULL);
        free(threads[i].pfds);
    }
    for (unsigned i = 0; workers != NULL && i < cfg->clients; i++) {
        s_worker_t *w = &workers[i];
        cl_client_close(&w->client);
        free(w->flights);
        free(w->ops);
        free(w->cmds);
        free(w->replies);
    }
    /* Every client on it is closed (with linger 0): this returns at once. */
    if (sh->zctx != NULL)
        zmq_ctx_term(sh->zctx);
    sh->zctx = NULL;
    free(threads);
    free(workers);
    return result;
}

static void
s_usage(FILE *to)
{
    fputs(
        "Usage: " S_PROG " [--connect ENDPOINT | --spawn-daemon [--data DIR]] [OPTION]...\n"
        "Load generator for cardledgerd: prepares cards with batch issue, runs a workload over\n"
        "ZeroMQ through libcardledger, and reports throughput, latency percentiles, replies by\n"
        "status, journal bytes per event, daemon memory and restart time.\n"
        "\n"
        "The ledger:\n"
        "  --connect ENDPOINT     a running daemon (tcp://127.0.0.1:7700, ipc://...)\n"
        "  --spawn-daemon         start ../daemon/cardledgerd (next to this program) on ipc://\n"
        "                         endpoints in a temporary directory; stop it at the end\n"
        "  --data DIR             the daemon's data directory (spawned: default a temporary one,\n"
        "                         removed at the end; connected: read for the journal figures)\n"
        "  --daemon PATH          the cardledgerd binary to spawn\n"
        "  --daemon-arg ARG       one more argument for the spawned daemon (repeatable)\n"
        "  --daemon-log           the spawned daemon logs to this stderr, not to its temp dir\n"
        "\n"
        "Cards:\n"
        "  --cards N              cards to issue before the run (default 100000)\n"
        "  --reuse-cards          use cards 1..N already in the ledger (from an earlier run)\n"
        "  --issue-window W       IssueBatch messages in flight (default 4)\n"
        "  --issue-per-message K  IssueBatch commands of 1000 rows per message, 1..4 (default 2)\n"
        "\n"
        "Workload:\n"
        "  --workload redeem|mix|none   redeems only; or redeem 70%, card show 15%, issue 5%,\n"
        "                         reload 5%, gift transfer 3%, over-balance redeem 2% (refused)\n"
        "  --duration S           measured seconds (default 10)\n"
        "  --warmup S             seconds run before the measured ones (default 0)\n"
        "  --clients C            clients, each with its own connection (default 4)\n"
        "  --threads T            threads that drive the clients between them, 1..C (default 1)\n"
        "  --window W             messages in flight per client (default 16)\n"
        "  --per-message K        requests per message, 1..256 (default 1)\n"
        "  --rate R               open loop: R requests/s across all clients, latency from the\n"
        "                         scheduled send; default: closed loop (as fast as it goes)\n"
        "  --seed N               random seed (default: random)\n"
        "  --sequential-ids       request ids (run, client, counter) instead of libcardledger's\n"
        "                         own (time-ordered, docs/client.md)\n"
        "  --random-ids           request ids of 128 random bits instead of libcardledger's:\n"
        "                         every one lands on its own page of the idempotency index\n"
        "  --server-key-file F, --key-file F\n"
        "                         CurveZMQ: the daemon's public key and the bench's secret key\n"
        "                         (cardledger-keys), for a daemon started with keys (give it\n"
        "                         --curve-secret-key and --principals with --daemon-arg)\n"
        "\n"
        "More measurements:\n"
        "  --restart              kill -9 the spawned daemon after the run, start it again and\n"
        "                         time it until GetStatus is answered\n"
        "  --replay               time the offline fold (tools/cardledger-replay) and a projector\n"
        "                         rebuild from sequence 0 over the journal, when they are built\n"
        "\n"
        "Output:\n"
        "  --json                 one JSON object on stdout instead of text\n"
        "  --quiet                no progress lines on stderr\n"
        "  --help, --version\n"
        "\n"
        "Exit status: 0 completed without errors (refusals such as insufficient_balance are\n"
        "answers, not errors), 1 a request or the setup failed, 64 bad usage.\n"
        "See docs/BENCHMARKS.md.\n",
        to);
}

static void
s_parse(int argc, char **argv, s_config_t *cfg)
{
    enum {
        O_CONNECT = 256,
        O_SPAWN,
        O_DATA,
        O_DAEMON,
        O_DAEMON_ARG,
        O_DAEMON_LOG,
        O_CARDS,
        O_REUSE,
        O_ISSUE_WINDOW,
        O_ISSUE_PER_MSG,
        O_WORKLOAD,
        O_DURATION,
        O_WARMUP,
        O_CLIENTS,
        O_THREADS,
        O_WINDOW,
        O_PER_MSG,
        O_RATE,
        O_SEED,
        O_SEQ_IDS,
        O_RANDOM_IDS,
        O_SERVER_KEY_FILE,
        O_KEY_FILE,
        O_RESTART,
        O_REPLAY,
        O_JSON,
        O_QUIET,
        O_HELP,
        O_VERSION,
    };
    static const struct option longopts[] = {
        { "connect", required_argument, NULL, O_CONNECT },
        { "spawn-daemon", no_argument, NULL, O_SPAWN },
        { "data", required_argument, NULL, O_DATA },
        { "daemon", required_argument, NULL, O_DAEMON },
        { "daemon-arg", required_argument, NULL, O_DAEMON_ARG },
        { "daemon-log", no_argument, NULL, O_DAEMON_LOG },
        { "cards", required_argument, NULL, O_CARDS },
        { "reuse-cards", no_argument, NULL, O_REUSE },
        { "issue-window", required_argument, NULL, O_ISSUE_WINDOW },
        { "issue-per-message", required_argument, NULL, O_ISSUE_PER_MSG },
        { "workload", required_argument, NULL, O_WORKLOAD },
        { "duration", required_argument, NULL, O_DURATION },
        { "warmup", required_argument, NULL, O_WARMUP },
        { "clients", required_argument, NULL, O_CLIENTS },
        { "threads", required_argument, NULL, O_THREADS },
        { "window", required_argument, NULL, O_WINDOW },
        { "per-message", required_argument, NULL, O_PER_MSG },
        { "rate", required_argument, NULL, O_RATE },
        { "seed", required_argument, NULL, O_SEED },
        { "sequential-ids", no_argument, NULL, O_SEQ_IDS },
        { "random-ids", no_argument, NULL, O_RANDOM_IDS },
        { "server-key-file", required_argument, NULL, O_SERVER_KEY_FILE },
        { "key-file", required_argument, NULL, O_KEY_FILE },
        { "restart", no_argument, NULL, O_RESTART },
        { "replay", no_argument, NULL, O_REPLAY },
        { "json", no_argument, NULL, O_JSON },
        { "quiet", no_argument, NULL, O_QUIET },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 },
    };
    memset(cfg, 0, sizeof(*cfg));
    cfg->cards = S_CARDS_DEFAULT;
    cfg->issue_window = S_ISSUE_WINDOW_DEFAULT;
    cfg->issue_per_msg = S_ISSUE_PER_MSG_DEFAULT;
    cfg->workload = S_WORKLOAD_REDEEM;
    cfg->duration_s = S_DURATION_DEFAULT_S;
    cfg->clients = S_CLIENTS_DEFAULT;
    cfg->threads = S_THREADS_DEFAULT;
    cfg->window = S_WINDOW_DEFAULT;
    cfg->per_message = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case O_CONNECT:
            cfg->connect = optarg;
            break;
        case O_SPAWN:
            cfg->spawn = true;
            break;
        case O_DATA:
            cfg->data_dir = optarg;
            break;
        case O_DAEMON:
            cfg->daemon_path = optarg;
            break;
        case O_DAEMON_ARG:
            if (cfg->dopts.extra_count >= BENCH_DAEMON_ARGS_MAX)
                s_die_usage("--daemon-arg: at most %d", BENCH_DAEMON_ARGS_MAX);
            cfg->dopts.extra_args[cfg->dopts.extra_count++] = optarg;
            break;
        case O_DAEMON_LOG:
            cfg->dopts.log_to_stderr = 1;
            break;
        case O_CARDS:
            cfg->cards = s_parse_u64("--cards", optarg, 1, S_CARDS_MAX);
            break;
        case O_REUSE:
            cfg->reuse_cards = true;
            break;
        case O_ISSUE_WINDOW:
            cfg->issue_window =
                (unsigned)s_parse_u64("--issue-window", optarg, 1, CL_CLIENT_WINDOW_MAX);
            break;
        case O_ISSUE_PER_MSG:
            cfg->issue_per_msg =
                (unsigned)s_parse_u64("--issue-per-message", optarg, 1, S_ISSUE_PER_MSG_MAX);
            break;
        case O_WORKLOAD:
            if (strcmp(optarg, "redeem") == 0)
                cfg->workload = S_WORKLOAD_REDEEM;
            else if (strcmp(optarg, "mix") == 0)
                cfg->workload = S_WORKLOAD_MIX;
            else if (strcmp(optarg, "none") == 0)
                cfg->workload = S_WORKLOAD_NONE;
            else
                s_die_usage("--workload: '%s' is not redeem, mix or none", optarg);
            break;
        case O_DURATION:
            cfg->duration_s = s_parse_double("--duration", optarg, 0.001, S_DURATION_MAX_S);
            break;
        case O_WARMUP:
            cfg->warmup_s = s_parse_double("--warmup", optarg, 0.0, S_DURATION_MAX_S);
            break;
        case O_CLIENTS:
            cfg->clients = (unsigned)s_parse_u64("--clients", optarg, 1, S_CLIENTS_MAX);
            break;
        case O_THREADS:
            cfg->threads = (unsigned)s_parse_u64("--threads", optarg, 1, S_CLIENTS_MAX);
            break;
        case O_WINDOW:
            cfg->window = (unsigned)s_parse_u64("--window", optarg, 1, CL_CLIENT_WINDOW_MAX);
            break;
        case O_PER_MSG:
            cfg->per_message =
                (unsigned)s_parse_u64("--per-message", optarg, 1, CL_BATCH_REQUESTS_MAX);
            break;
        case O_RATE:
            cfg->rate = s_parse_double("--rate", optarg, 0.0, 1e9);
            break;
        case O_SEED:
            cfg->seed = s_parse_u64("--seed", optarg, 1, UINT64_MAX);
            break;
        case O_SEQ_IDS:
            cfg->ids = S_IDS_SEQUENTIAL;
            break;
        case O_RANDOM_IDS:
            cfg->ids = S_IDS_RANDOM;
            break;
        case O_SERVER_KEY_FILE:
            cfg->server_key_file = optarg;
            break;
        case O_KEY_FILE:
            cfg->key_file = optarg;
            break;
        case O_RESTART:
            cfg->restart = true;
            break;
        case O_REPLAY:
            cfg->replay = true;
            break;
        case O_JSON:
            cfg->json = true;
            break;
        case O_QUIET:
            cfg->quiet = true;
            break;
        case O_HELP:
            s_usage(stdout);
            exit(S_EXIT_OK);
        case O_VERSION:
            printf(S_PROG " %s\n", CARDLEDGER_VERSION);
            exit(S_EXIT_OK);
        default:
            fprintf(stderr, "Try '" S_PROG " --help'.\n");
            exit(S_EXIT_USAGE);
        }
    }
    if (optind < argc)
        s_die_usage("unexpected argument '%s'", argv[optind]);
    if ((cfg->connect == NULL) == !cfg->spawn)
        s_die_usage("%s", "give exactly one of --connect ENDPOINT and --spawn-daemon");
    if (cfg->threads > cfg->clients)
        s_die_usage("--threads %u is more than --clients %u (a thread drives whole clients)",
                    cfg->threads, cfg->clients);
    if (cfg->restart && !cfg->spawn)
        s_die_usage("%s", "--restart needs --spawn-daemon (it kills and restarts the daemon)");
    if (cfg->replay && cfg->data_dir == NULL && !cfg->spawn)
        s_die_usage("%s", "--replay with --connect needs --data DIR");
    if ((cfg->server_key_file == NULL) != (cfg->key_file == NULL))
        s_die_usage("%s", "--server-key-file and --key-file go together");
    if (cfg->key_file != NULL && bench_set_keys(cfg->server_key_file, cfg->key_file) != 0)
        s_die_usage("cannot read the CurveZMQ keys from %s and %s", cfg->server_key_file,
                    cfg->key_file);
}

int
main(int argc, char **argv)
{
    s_config_t cfg;
    s_parse(argc, argv, &cfg);
    cfg.dopts.daemon_path = cfg.daemon_path;
    cfg.dopts.data_dir = cfg.data_dir;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The open loop wakes for its next send with ppoll(): ask the kernel not to defer that by
     * its default 50 us of timer slack (the worker threads inherit this). */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

    s_results_t *res = calloc(1, sizeof(*res));
    s_shared_t *sh = calloc(1, sizeof(*sh));
    uint64_t *cards = calloc(cfg.cards, sizeof(*cards));
    cl_reply_t *reply = calloc(1, sizeof(*reply));
    if (res == NULL || sh == NULL || cards == NULL || reply == NULL) {
        fprintf(stderr, S_PROG ": out of memory\n");
        return S_EXIT_FAILED;
    }
    uint64_t seed = 0;
    s_make_nonce(sh->nonce, &seed);
    sh->id_seed = seed;
    if (cfg.seed == 0)
        cfg.seed = seed;

    int rc = 0;
    bench_daemon_t *d = NULL;
    const char *endpoint = cfg.connect;
    const char *data_dir = cfg.data_dir;
    if (cfg.spawn) {
        rc = bench_daemon_start(&cfg.dopts, &d, &res->start_ms);
        if (rc == 0) {
            endpoint = bench_daemon_endpoint(d);
            data_dir = bench_daemon_data_dir(d);
            if (!cfg.quiet)
                fprintf(stderr, "[setup] cardledgerd pid %d on %s, data %s, ready in %.0f ms\n",
                        (int)bench_daemon_pid(d), endpoint, data_dir, res->start_ms);
        }
    }

    if (rc == 0 && !cfg.spawn && bench_wait_ready(endpoint, 0, S_CONNECT_WAIT_MS, NULL) != 0)
        rc = -1; /* nobody answers there: say so now, not after every retry of every setup call */
    cl_client_t *c = NULL;
    if (rc == 0) {
        cl_client_opts_t o;
        bench_client_opts(&o);
        o.timeout_ms = S_TIMEOUT_MS;
        rc = cl_client_open(endpoint, &o, &c);
        if (rc < 0)
            fprintf(stderr, S_PROG ": %s: %s\n", endpoint, cl_client_strerror(rc));
    }
    if (rc == 0)
        rc = s_setup_world(c, reply);
    if (rc == 0 && cfg.reuse_cards) {
        rc = s_reuse_cards(&cfg, c, reply, cards);
    } else if (rc == 0) {
        rc = s_issue_cards(&cfg, endpoint, sh->nonce, cards, &res->issue_s);
        res->issued = rc == 0;
        if (rc == 0 && !cfg.quiet)
            fprintf(stderr, "[issue] %" PRIu64 " cards in %.2f s: %.0f cards/s\n", cfg.cards,
                    res->issue_s, (double)cfg.cards / res->issue_s);
    }
    cl_client_close(&c);

    if (rc == 0 && cfg.workload != S_WORKLOAD_NONE) {
        sh->cfg = &cfg;
        sh->endpoint = endpoint;
        sh->cards = cards;
        sh->ncards = cfg.cards;
        s_journal_stat(data_dir, &res->j_before);
        rc = s_run_workload(&cfg, sh, res, d);
        if (res->j_before.ok) {
            s_journal_stat(data_dir, &res->j_after);
            if (res->j_after.ok && res->j_after.st.head_seq > res->j_before.st.head_seq)
                res->have_payload = s_journal_payload(data_dir, res->j_before.st.head_seq + 1,
                                                      res->j_after.st.head_seq, &res->payload_bytes,
                                                      &res->payload_entries) == 0;
        }
    }
    if (d != NULL && bench_daemon_pid(d) != 0)
        res->have_mem = bench_daemon_memory(d, &res->mem) == 0;

    if (rc == 0 && cfg.restart && d != NULL && !s_stop_flag) {
        if (!cfg.quiet)
            fprintf(stderr, "[restart] kill -9 and start again\n");
        bench_daemon_kill9(d);
        rc = bench_daemon_restart(d, &res->restart_ms);
        if (rc == 0) {
            res->restarted = true;
            (void)bench_daemon_log_line(d, "state loaded", res->restart_load,
                                        sizeof(res->restart_load));
            (void)bench_daemon_log_line(d, "ready in", res->restart_ready,
                                        sizeof(res->restart_ready));
        }
    }
    if (d != NULL && bench_daemon_pid(d) != 0) {
        res->stop_status = bench_daemon_stop(d, &res->stop_ms);
        res->stopped = true;
        if (res->stop_status != 0) {
            fprintf(stderr, S_PROG ": the daemon exited with status %d\n", res->stop_status);
            rc = -1;
        }
    }
    if (rc == 0 && cfg.replay && data_dir != NULL && !s_stop_flag) {
        uint64_t events = res->j_after.ok ? res->j_after.st.entries : 0;
        if (events == 0) {
            s_jstat_t js;
            s_journal_stat(data_dir, &js);
            events = js.ok ? js.st.entries : 0;
        }
        if (!cfg.quiet)
            fprintf(stderr, "[replay] folding %" PRIu64 " events offline\n", events);
        s_measure_replay(data_dir, events, &res->replay);
        if (!cfg.quiet)
            fprintf(stderr, "[rebuild] the projector folds %" PRIu64 " events from 0\n", events);
        s_measure_rebuild(data_dir, events, &res->rebuild);
    }

    if (rc == 0 || res->measured > 0) {
        if (cfg.json)
            s_print_json(&cfg, res);
        else
            s_print_text(&cfg, res);
    }
    int exit_code = rc == 0 && s_errors(res) == 0 && !s_stop_flag ? S_EXIT_OK : S_EXIT_FAILED;
    bench_daemon_destroy(&d);
    free(reply);
    free(cards);
    free(sh);
    free(res);
    return exit_code;
}
