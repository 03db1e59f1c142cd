/*
 * cardledgerd: the ledger daemon's main: settings, data directory, journal, state, sockets.
 *
 * Start-up, in order: read the settings; refuse endpoints other machines could reach (there are
 * no CurveZMQ keys yet and the one principal is all-powerful); take the data directory's lock so
 * two daemons never write one journal; load or make the secret key; open the journal (refusing,
 * with exit status 2, one this build does not understand); load the checkpoint and replay the
 * journal's tail; bind the sockets; run the loop (server.c) until SIGTERM or SIGINT; checkpoint;
 * close everything; exit 0.
 *
 * The hidden flag --print-digest loads the state the same way (or, with --full-replay, from the
 * whole journal), prints its digest and the head sequence, and exits: tests use it to show that
 * a restart after kill -9 reproduces exactly the state a full replay gives.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "auth.h"
#include "cardledger-config.h"
#include "checkpoint.h"
#include "config.h"
#include "decide.h"
#include "idempotency.h"
#include "journal.h"
#include "ledger.h"
#include "log.h"
#include "server.h"

/* Exit statuses (docs/daemon.md). */
#define EXIT_OK      0
#define EXIT_RUNTIME 1  /* a failure while starting or running: sockets, disk, memory */
#define EXIT_DATA    2  /* the data directory holds something this build does not understand */
#define EXIT_USAGE   64 /* bad flags, config file or endpoint (sysexits.h EX_USAGE) */

#define S_JOURNAL_SUBDIR "journal"
#define S_STATE_SUBDIR   "state" /* the checkpoint's own environment (daemon/checkpoint.h) */
#define S_SECRET_FILE    "secret.key"
#define S_LOCK_FILE      "lock"
#define S_MAX_DBS        64 /* named databases in an environment: journal, state, idempotency */
#define S_PATH_TOO_LONG  1  /* s_open_env(): not a journal code (those are negative) */

static volatile sig_atomic_t s_stop;
static int s_wake_fd = -1; /* write end of the self-pipe that wakes zmq_poll() */

static void
s_on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    s_stop = 1;
    if (s_wake_fd >= 0) {
        ssize_t w = write(s_wake_fd, "x", 1);
        (void)w;
    }
    errno = saved;
}

static double
s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Whether a journal error means "this is not a journal this build understands". */
static bool
s_is_data_error(int rc)
{
    return rc == JOURNAL_EVERSION || rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN ||
           rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED ||
           rc == CHECKPOINT_EREPLAY;
}

static int
s_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Creates the data directory when missing (its parent must exist). */
static int
s_make_data_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create the data directory %s: %s", dir, strerror(errno));
        return EXIT_RUNTIME;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        log_error("%s is not a directory", dir);
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

/* Takes DATA/lock exclusively for the life of the process (released by the kernel on exit,
 * also after kill -9). Returns the descriptor or -1. */
static int
s_lock_data_dir(const char *dir)
{
    char path[CONFIG_PATH_MAX + 16];
    if (s_path(path, sizeof(path), dir, S_LOCK_FILE) != 0)
        return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        log_error("another cardledgerd is running on %s (its lock is held); refusing to start",
                  dir);
        close(fd);
        return -1;
    }
    return fd;
}

static int
s_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Loads DATA/secret.key, or makes it (32 bytes from the CSPRNG, mode 0600, fsync'd together with
 * the directory) at the first start. Returns an exit status.
 */
static int
s_secret_key(const char *dir, uint8_t key[DECIDE_KEY_LEN])
{
    char path[CONFIG_PATH_MAX + 16];
    if (s_path(path, sizeof(path), dir, S_SECRET_FILE) != 0)
        return EXIT_USAGE;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        struct stat st;
        ssize_t r = -1;
        if (fstat(fd, &st) == 0 && st.st_size == DECIDE_KEY_LEN)
            r = read(fd, key, DECIDE_KEY_LEN);
        if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0)
            log_warn("%s is readable by others (mode %03o); it should be 0600", path,
                     (unsigned)(st.st_mode & 0777));
        close(fd);
        if (r != DECIDE_KEY_LEN) {
            log_error("%s is not a %d-byte secret key; refusing to start (PIN and claim hashes "
                      "depend on it)",
                      path, DECIDE_KEY_LEN);
            return EXIT_DATA;
        }
        return EXIT_OK;
    }
    if (errno != ENOENT) {
        log_error("cannot read %s: %s", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    randombytes_buf(key, DECIDE_KEY_LEN);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || s_write_all(fd, key, DECIDE_KEY_LEN) != 0 || fsync(fd) != 0) {
        log_error("cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        return EXIT_RUNTIME;
    }
    close(fd);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    log_info("made a new secret key in %s", path);
    return EXIT_OK;
}

/*
 * Opens DATA/subdir, an LMDB environment through journal/ (--journal-map-max-mb caps each).
 * Returns journal_open()'s code, or S_PATH_TOO_LONG (logged); path receives the path.
 */
static int
s_open_env(const daemon_config_t *cfg, const char *subdir, bool read_only,
           char path[CONFIG_PATH_MAX + 16], journal_t **out)
{
    journal_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.read_only = read_only;
    opts.max_dbs = S_MAX_DBS;
    if (cfg->journal_map_max_mb != 0) {
        opts.map_size_max_bytes = cfg->journal_map_max_mb << 20;
        opts.map_size_bytes = opts.map_size_max_bytes < JOURNAL_MAP_SIZE_DEFAULT
                                  ? opts.map_size_max_bytes
                                  : JOURNAL_MAP_SIZE_DEFAULT;
    }
    *out = NULL;
    if (s_path(path, CONFIG_PATH_MAX + 16, cfg->data_dir, subdir) != 0) {
        log_error("the data directory's path is too long: %s", cfg->data_dir);
        return S_PATH_TOO_LONG;
    }
    return journal_open(path, &opts, out);
}

static int
s_open_journal(const daemon_config_t *cfg, bool read_only, journal_t **out)
{
    char path[CONFIG_PATH_MAX + 16];
    int rc = s_open_env(cfg, S_JOURNAL_SUBDIR, read_only, path, out);
    if (rc == 0)
        return EXIT_OK;
    if (rc == S_PATH_TOO_LONG)
        return EXIT_USAGE;
    if (rc == JOURNAL_EVERSION) {
        log_error("%s is not a journal this cardledgerd understands (%s); refusing to start. "
                  "Run the cardledgerd version that wrote it, or migrate it first.",
                  path, journal_strerror(rc));
        return EXIT_DATA;
    }
    if (s_is_data_error(rc)) {
        log_error("the journal in %s is damaged (%s); refusing to start. Verify it with "
                  "cardledger-journal verify.",
                  path, journal_strerror(rc));
        return EXIT_DATA;
    }
    log_error("cannot open the journal in %s: %s", path, journal_strerror(rc));
    return read_only && rc == JOURNAL_ENOTFOUND ? EXIT_DATA : EXIT_RUNTIME;
}

/*
 * Opens DATA/state, the checkpoint's environment. Read-only, a missing one is no error (*out
 * stays NULL: there is no checkpoint). The state is derived from the journal, so a damaged one
 * is named with the way out: remove it and start, and the state is rebuilt from the journal.
 */
static int
s_open_state(const daemon_config_t *cfg, bool read_only, journal_t **out)
{
    char path[CONFIG_PATH_MAX + 16];
    int rc = s_open_env(cfg, S_STATE_SUBDIR, read_only, path, out);
    if (rc == 0 || (read_only && rc == JOURNAL_ENOTFOUND))
        return EXIT_OK;
    if (rc == S_PATH_TOO_LONG)
        return EXIT_USAGE;
    log_error("cannot open the state checkpoint in %s: %s. It holds nothing the journal does not: "
              "remove it and start again to rebuild it from the journal.",
              path, journal_strerror(rc));
    return s_is_data_error(rc) ? EXIT_DATA : EXIT_RUNTIME;
}

static int
s_open_idem_fill(journal_txn_t *txn, void *ctx)
{
    return idem_open(journal_txn_mdb(txn), ctx);
}

static int
s_load_state(journal_t *j, journal_t *state, bool use_checkpoint, checkpoint_source_t *source,
             ledger_t **out_l, checkpoint_info_t *info)
{
    ledger_t *l = NULL;
    double t0 = s_mono_ms();
    int rc = ledger_new(&l);
    if (rc != 0) {
        log_error("out of memory");
        return EXIT_RUNTIME;
    }
    rc = checkpoint_load(j, state, &l, use_checkpoint, source, info);
    if (rc != 0) {
        log_error("the state cannot be loaded: %s", checkpoint_strerror(rc));
        ledger_destroy(&l);
        return s_is_data_error(rc) ? EXIT_DATA : EXIT_RUNTIME;
    }
    if (info->loaded)
        log_info("state loaded in %.1f ms: checkpoint at sequence %llu (%llu records, %.1f ms), "
                 "then %llu events replayed (%.1f ms); head %llu, %llu cards",
                 s_mono_ms() - t0, (unsigned long long)info->checkpoint_seq,
                 (unsigned long long)info->records, info->load_ms,
                 (unsigned long long)info->replayed, info->replay_ms,
                 (unsigned long long)info->head_seq, (unsigned long long)ledger_meta(l)->cards);
    else
        log_info("state loaded in %.1f ms: no usable checkpoint, %llu events replayed (%.1f ms); "
                 "head %llu, %llu cards",
                 s_mono_ms() - t0, (unsigned long long)info->replayed, info->replay_ms,
                 (unsigned long long)info->head_seq, (unsigned long long)ledger_meta(l)->cards);
    *out_l = l;
    return EXIT_OK;
}

/* --print-digest [--full-replay]: load, print "<digest hex> <head seq>", exit. */
static int
s_print_digest(const daemon_config_t *cfg)
{
    journal_t *j = NULL, *state = NULL;
    ledger_t *l = NULL;
    checkpoint_info_t info;
    uint8_t digest[16];
    int ex = s_open_journal(cfg, true, &j);
    if (ex == EXIT_OK)
        ex = s_open_state(cfg, true, &state);
    if (ex != EXIT_OK) {
        journal_close(&j);
        return ex;
    }
    ex = s_load_state(j, state, !cfg->full_replay, NULL, &l, &info);
    if (ex == EXIT_OK) {
        ledger_digest(l, digest);
        for (size_t i = 0; i < sizeof(digest); i++)
            printf("%02x", digest[i]);
        printf(" %llu\n", (unsigned long long)info.head_seq);
        fflush(stdout);
    }
    ledger_destroy(&l);
    journal_close(&state);
    journal_close(&j);
    return ex;
}

static void *
s_bind(void *zctx, int type, const char *endpoint, const char *what, const auth_t *auth)
{
    int linger = DAEMON_LINGER_MS;
    int hwm = DAEMON_ROUTER_HWM;
    if (type == ZMQ_PUB)
        hwm = DAEMON_PUB_HWM;
    int64_t max_msg = CL_FRAME_MAX_BYTES;
    void *s = zmq_socket(zctx, type);
    if (s == NULL) {
        log_error("cannot make the %s socket: %s", what, zmq_strerror(zmq_errno()));
        return NULL;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    if (type == ZMQ_ROUTER) {
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
        /* Frames over the limit are refused by libzmq itself: the peer is disconnected. */
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg, sizeof(max_msg));
    }
    if (auth != NULL && auth_curve_server(auth, s) != 0) {
        log_error("cannot make the %s socket a CurveZMQ server: %s", what,
                  zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    if (zmq_bind(s, endpoint) != 0) {
        log_error("cannot bind the %s socket to %s: %s", what, endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static int
s_run(const daemon_config_t *cfg)
{
    char why[CONFIG_ERROR_MAX];
    uint8_t key[DECIDE_KEY_LEN];
    journal_t *j = NULL;
    ledger_t *l = NULL;
    server_t *srv = NULL;
    journal_t *state = NULL;
    checkpoint_source_t *source = NULL;
    checkpointer_t *writer = NULL;
    void *zctx = NULL, *router = NULL, *pub = NULL;
    auth_t *auth = NULL;
    checkpoint_info_t info;
    idem_dbs_t idem;
    int lock_fd = -1;
    int wake[2] = { -1, -1 };
    struct sigaction sa;
    int ex;
    double t0 = s_mono_ms();

    /* Without keys every command runs as the local operator: only this machine may reach it.
     * The event stream carries card codes in clear, so it stays local either way. */
    bool curve = cfg->principals[0] != '\0';
    if ((!curve && !config_endpoint_local(cfg->listen, why, sizeof(why))) ||
        !config_endpoint_local(cfg->publish, why, sizeof(why))) {
        log_error("refusing to start: %s", why);
        return EXIT_USAGE;
    }
    if (curve && auth_load(cfg->principals, cfg->curve_secret_key, &auth, why, sizeof(why)) != 0) {
        log_error("refusing to start: %s", why);
        return EXIT_USAGE;
    }
    if (strcmp(cfg->listen, cfg->publish) == 0) {
        log_error("refusing to start: --listen and --publish are the same endpoint");
        auth_destroy(&auth);
        return EXIT_USAGE;
    }
    if (sodium_init() < 0) {
        log_error("libsodium cannot initialise");
        auth_destroy(&auth);
        return EXIT_RUNTIME;
    }
    ex = s_make_data_dir(cfg->data_dir);
    if (ex == EXIT_OK) {
        lock_fd = s_lock_data_dir(cfg->data_dir);
        if (lock_fd < 0)
            ex = EXIT_RUNTIME;
    }
    /* Signals are caught from here on: a SIGTERM during a long load stops the daemon cleanly
     * right after it. */
    if (ex == EXIT_OK && pipe2(wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        log_error("cannot make a pipe: %s", strerror(errno));
        close(lock_fd);
        ex = EXIT_RUNTIME;
    }
    if (ex != EXIT_OK) {
        auth_destroy(&auth);
        return ex;
    }
    s_wake_fd = wake[1];
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ex = s_secret_key(cfg->data_dir, key);
    if (ex == EXIT_OK)
        ex = s_open_journal(cfg, false, &j);
    if (ex == EXIT_OK) {
        int rc = journal_write(j, s_open_idem_fill, &idem, NULL);
        if (rc != 0) {
            log_error("cannot open the idempotency store: %s", journal_strerror(rc));
            ex = EXIT_RUNTIME;
        }
    }
    if (ex == EXIT_OK)
        ex = s_open_state(cfg, false, &state);
    if (ex == EXIT_OK) {
        int rc = checkpoint_source_new(state, &source);
        if (rc == 0)
            rc = checkpointer_new(state, &writer);
        if (rc != 0) {
            log_error("cannot open the state checkpoint: %s", checkpoint_strerror(rc));
            ex = EXIT_RUNTIME;
        }
    }
    if (ex == EXIT_OK)
        ex = s_load_state(j, state, true, source, &l, &info);
    if (ex == EXIT_OK) {
        zctx = zmq_ctx_new();
        if (zctx != NULL && auth != NULL && auth_zap_start(auth, zctx) != 0) {
            log_error("cannot start the CurveZMQ authentication handler: %s",
                      zmq_strerror(zmq_errno()));
            ex = EXIT_RUNTIME;
        }
        router = zctx != NULL && ex == EXIT_OK
                     ? s_bind(zctx, ZMQ_ROUTER, cfg->listen, "command", auth)
                     : NULL;
        pub = router != NULL ? s_bind(zctx, ZMQ_PUB, cfg->publish, "event", NULL) : NULL;
        if (pub == NULL)
            ex = EXIT_RUNTIME;
    }
    if (ex == EXIT_OK) {
        server_opts_t so = { .cfg = cfg,
                             .journal = j,
                             .ledger = l,
                             .state = state,
                             .source = source,
                             .writer = writer,
                             .loaded = &info,
                             .idem = idem,
                             .key = key,
                             .router = router,
                             .pub = pub,
                             .auth = auth };
        if (server_new(&so, &srv) != 0) {
            log_error("out of memory");
            ex = EXIT_RUNTIME;
        } else {
            l = NULL; /* the server owns it now */
        }
    }
    if (ex == EXIT_OK) {
        log_info("cardledgerd %s ready in %.0f ms: commands on %s (%s), events on %s%s",
                 CARDLEDGER_VERSION, s_mono_ms() - t0, cfg->listen,
                 auth != NULL ? "CurveZMQ" : "local operator, no keys", cfg->publish,
                 cfg->test_clock ? " (test clock)" : "");
        if (auth != NULL)
            log_info("%zu principals may send commands", auth_count(auth));
        int rc = server_run(srv, &s_stop, wake[0]);
        if (rc != 0) {
            log_error("stopping after a failure");
            ex = EXIT_RUNTIME;
        }
    }
    s_wake_fd = -1;
    if (wake[0] >= 0) {
        close(wake[0]);
        close(wake[1]);
    }
    server_destroy(&srv);
    ledger_destroy(&l);
    checkpointer_destroy(&writer);
    checkpoint_source_destroy(&source);
    if (router != NULL)
        zmq_close(router);
    if (pub != NULL)
        zmq_close(pub);
    if (zctx != NULL)
        zmq_ctx_term(zctx); /* ends the ZAP handler's socket too */
    auth_zap_stop(auth);
    auth_destroy(&auth);
    journal_close(&state);
    journal_close(&j);
    sodium_memzero(key, sizeof(key));
    if (lock_fd >= 0)
        close(lock_fd);
    return ex;
}

int
main(int argc, char **argv)
{
    daemon_config_t cfg;
    char err[CONFIG_ERROR_MAX];

    int rc = config_parse(argc, argv, &cfg, err, sizeof(err));
    if (rc == CONFIG_HELP) {
        fputs(config_usage(), stdout);
        return EXIT_OK;
    }
    if (rc == CONFIG_VERSION) {
        printf("cardledgerd %s\n", CARDLEDGER_VERSION);
        return EXIT_OK;
    }
    if (rc != 0) {
        fprintf(stderr, "cardledgerd: %s\n", err);
        return EXIT_USAGE;
    }
    log_set_level(cfg.log_level);
    if (cfg.print_digest)
        return s_print_digest(&cfg);
    return s_run(&cfg);
}
