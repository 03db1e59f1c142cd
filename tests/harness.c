/*
 * harness: the real daemon as a child process, for integration tests (see harness.h).
 *
 * The readiness probe speaks the wire protocol through proto/codec: a RequestBatch with one
 * GetStatus on a DEALER socket, answered by a ReplyBatch whose one Reply says STATUS_OK.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "codec.h"

#define S_DIR_MAX       128 /* the temporary directory */
#define S_PATH_MAX      256 /* paths and endpoints in it */
#define S_ARGS_MAX      64  /* arguments of one daemon command line */
#define S_STOP_WAIT_MS  60000
#define S_POLL_STEP_MS  20
#define S_SUN_PATH_ROOM 100 /* sockaddr_un.sun_path is 108 bytes; keep a margin */

struct harness {
    char dir[S_DIR_MAX];       /* the temporary directory */
    char data_dir[S_PATH_MAX]; /* DIR/data */
    char cmd_ep[S_PATH_MAX];   /* ipc://DIR/cmd.sock */
    char pub_ep[S_PATH_MAX];   /* ipc://DIR/pub.sock */
    char clock_arg[32];        /* the test clock start, as text */
    char *extra;               /* a private copy of opts->extra_args, or NULL */
    char curve[3][41];         /* opts->curve_keys, or empty */
    pid_t pid;                 /* the running daemon, or 0 */
    void *zctx;                /* ZeroMQ context for the probe and harness_roundtrip() */
};

static int64_t
s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

const char *
harness_daemon_path(void)
{
    static char path[S_PATH_MAX];
    if (path[0] == '\0') {
        const char *root = getenv("CARDLEDGER_BUILD_ROOT");
        if (root == NULL || root[0] == '\0')
            root = ".";
        snprintf(path, sizeof(path), "%s/daemon/cardledgerd", root);
    }
    return path;
}

/* Splits a copy of the extra arguments on spaces into argv (which has room for cap pointers). */
static size_t
s_split_args(char *s, char **argv, size_t cap)
{
    size_t n = 0;
    char *save = NULL;
    if (s == NULL)
        return 0;
    for (char *tok = strtok_r(s, " ", &save); tok != NULL && n < cap;
         tok = strtok_r(NULL, " ", &save))
        argv[n++] = tok;
    return n;
}

static int
s_spawn(harness_t *h)
{
    char *argv[S_ARGS_MAX];
    size_t n = 0;
    char *extra = h->extra != NULL ? strdup(h->extra) : NULL;

    argv[n++] = (char *)(uintptr_t)harness_daemon_path();
    argv[n++] = (char *)(uintptr_t) "--data";
    argv[n++] = h->data_dir;
    argv[n++] = (char *)(uintptr_t) "--listen";
    argv[n++] = h->cmd_ep;
    argv[n++] = (char *)(uintptr_t) "--publish";
    argv[n++] = h->pub_ep;
    argv[n++] = (char *)(uintptr_t) "--test-clock";
    argv[n++] = h->clock_arg;
    n += s_split_args(extra, argv + n, S_ARGS_MAX - n - 1);
    argv[n] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        free(extra);
        return -1;
    }
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    free(extra);
    h->pid = pid;
    return 0;
}

/* Encodes a RequestBatch with one GetStatus. Returns the length, or 0 on failure. */
static size_t
s_encode_get_status(uint8_t *buf, size_t cap)
{
    cl_command_t cmd;
    uint8_t req[128];
    size_t req_len = 0;
    size_t len = 0;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_STATUS;
    snprintf(cmd.request_id, sizeof(cmd.request_id), "harness-ready");
    const uint8_t *reqs[1] = { req };
    if (codec_request_encode(&cmd, req, sizeof(req), &req_len) != 0 ||
        codec_request_batch_frame(reqs, &req_len, 1, buf, cap, &len) != 0)
        return 0;
    return len;
}

static bool
s_reply_is_ok(const void *data, size_t len)
{
    size_t off = 0;
    const uint8_t *reply = NULL;
    size_t reply_len = 0;
    cl_reply_t *r = malloc(sizeof(*r));
    bool ok = r != NULL && codec_reply_batch_next(data, len, &off, &reply, &reply_len) == 0 &&
              codec_reply_decode(reply, reply_len, r, NULL, 0) == 0 && r->status == CL_OK;
    free(r);
    return ok;
}

/* Reaps the child if it has exited; returns true (and clears h->pid) when it has. */
static bool
s_child_exited(harness_t *h, int *out_status)
{
    int st = 0;
    pid_t r = waitpid(h->pid, &st, WNOHANG);
    if (r != h->pid)
        return false;
    h->pid = 0;
    if (out_status != NULL)
        *out_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return true;
}

static int
s_wait_ready(harness_t *h)
{
    uint8_t req[64];
    size_t req_len = s_encode_get_status(req, sizeof(req));
    int64_t deadline = s_mono_ms() + HARNESS_READY_TIMEOUT_MS;
    int linger = 0;
    int rc = -1;

    void *s = zmq_socket(h->zctx, ZMQ_DEALER);
    if (s == NULL) {
        fprintf(stderr, "harness: zmq_socket: %s\n", zmq_strerror(zmq_errno()));
        return -1;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    if (h->curve[0][0] != '\0' && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, h->curve[0], 40) != 0 ||
                                   zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, h->curve[1], 40) != 0 ||
                                   zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, h->curve[2], 40) != 0)) {
        fprintf(stderr, "harness: the CurveZMQ keys: %s\n", zmq_strerror(zmq_errno()));
        zmq_close(s);
        return -1;
    }
    if (zmq_connect(s, h->cmd_ep) != 0 || zmq_send(s, req, req_len, 0) < 0) {
        fprintf(stderr, "harness: %s: %s\n", h->cmd_ep, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return -1;
    }
    while (s_mono_ms() < deadline) {
        zmq_pollitem_t item = { .socket = s, .events = ZMQ_POLLIN };
        int n = zmq_poll(&item, 1, S_POLL_STEP_MS * 5);
        if (n > 0) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, s, 0) >= 0) {
                bool ok = s_reply_is_ok(zmq_msg_data(&msg), zmq_msg_size(&msg));
                zmq_msg_close(&msg);
                if (ok) {
                    rc = 0;
                    break;
                }
                fprintf(stderr, "harness: the daemon answered GetStatus with a refusal\n");
                break;
            }
            zmq_msg_close(&msg);
        }
        int status = 0;
        if (s_child_exited(h, &status)) {
            fprintf(stderr, "harness: the daemon exited with status %d before it was ready\n",
                    status);
            break;
        }
    }
    if (rc != 0 && h->pid != 0)
        fprintf(stderr, "harness: the daemon did not answer within %d ms\n",
                HARNESS_READY_TIMEOUT_MS);
    zmq_close(s);
    return rc;
}

static int
s_rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

static void
s_rm_rf(const char *dir)
{
    nftw(dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
s_kill_and_reap(harness_t *h, int sig)
{
    if (h->pid == 0)
        return;
    kill(h->pid, sig);
    while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    h->pid = 0;
}

int
harness_start(const harness_opts_t *opts, harness_t **out)
{
    const char *tmp = getenv("TMPDIR");
    int64_t start_us = opts != NULL && opts->test_clock_start_us != 0
                           ? opts->test_clock_start_us
                           : HARNESS_CLOCK_START_US_DEFAULT;

    harness_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    /* ipc:// paths must fit sockaddr_un; a long TMPDIR falls back to /tmp. */
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > S_SUN_PATH_ROOM - 40)
        tmp = "/tmp";
    snprintf(h->dir, sizeof(h->dir), "%s/cardledger-test-XXXXXX", tmp);
    if (mkdtemp(h->dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", h->dir, strerror(errno));
        free(h);
        return -1;
    }
    snprintf(h->data_dir, sizeof(h->data_dir), "%s/data", h->dir);
    snprintf(h->cmd_ep, sizeof(h->cmd_ep), "ipc://%s/cmd.sock", h->dir);
    snprintf(h->pub_ep, sizeof(h->pub_ep), "ipc://%s/pub.sock", h->dir);
    snprintf(h->clock_arg, sizeof(h->clock_arg), "%lld", (long long)start_us);
    if (opts != NULL && opts->extra_args != NULL)
        h->extra = strdup(opts->extra_args);
    for (int i = 0; i < 3 && opts != NULL && opts->curve_keys[0] != NULL; i++)
        snprintf(h->curve[i], sizeof(h->curve[i]), "%s", opts->curve_keys[i]);
    h->zctx = zmq_ctx_new();
    if (h->zctx == NULL || s_spawn(h) != 0 || s_wait_ready(h) != 0) {
        harness_destroy(&h);
        return -1;
    }
    *out = h;
    return 0;
}

const char *
harness_dir(const harness_t *h)
{
    return h->dir;
}

const char *
harness_cmd_endpoint(const harness_t *h)
{
    return h->cmd_ep;
}

const char *
harness_pub_endpoint(const harness_t *h)
{
    return h->pub_ep;
}

const char *
harness_data_dir(const harness_t *h)
{
    return h->data_dir;
}

pid_t
harness_pid(const harness_t *h)
{
    return h->pid;
}

int
harness_stop(harness_t *h)
{
    int status = -1;
    if (h == NULL || h->pid == 0)
        return -1;
    kill(h->pid, SIGTERM);
    int64_t deadline = s_mono_ms() + S_STOP_WAIT_MS;
    while (s_mono_ms() < deadline) {
        if (s_child_exited(h, &status))
            return status;
        s_sleep_ms(S_POLL_STEP_MS / 4);
    }
    fprintf(stderr, "harness: the daemon did not stop within %d ms; killing it\n", S_STOP_WAIT_MS);
    s_kill_and_reap(h, SIGKILL);
    return -1;
}

int
harness_kill9(harness_t *h)
{
    if (h == NULL || h->pid == 0)
        return -1;
    s_kill_and_reap(h, SIGKILL);
    return 0;
}

int
harness_restart(harness_t *h)
{
    if (h == NULL || h->pid != 0)
        return -1;
    if (s_spawn(h) != 0)
        return -1;
    if (s_wait_ready(h) != 0) {
        s_kill_and_reap(h, SIGKILL);
        return -1;
    }
    return 0;
}

void
harness_destroy(harness_t **hp)
{
    if (hp == NULL || *hp == NULL)
        return;
    harness_t *h = *hp;
    if (h->pid != 0 && harness_stop(h) != 0)
        fprintf(stderr, "harness: the daemon did not exit cleanly\n");
    if (h->zctx != NULL)
        zmq_ctx_term(h->zctx);
    if (h->dir[0] != '\0')
        s_rm_rf(h->dir);
    free(h->extra);
    free(h);
    *hp = NULL;
}

int
harness_exec(const char *const *args, int timeout_ms, char *out, size_t out_cap, int *out_status)
{
    char *argv[S_ARGS_MAX];
    size_t n = 0;
    int fds[2];
    size_t used = 0;

    argv[n++] = (char *)(uintptr_t)harness_daemon_path();
    for (size_t i = 0; args != NULL && args[i] != NULL && n < S_ARGS_MAX - 1; i++)
        argv[n++] = (char *)(uintptr_t)args[i];
    argv[n] = NULL;

    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);

    int64_t deadline = s_mono_ms() + timeout_ms;
    bool killed = false;
    for (;;) {
        int64_t left = deadline - s_mono_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
        int pr = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        char buf[4096];
        ssize_t r = read(fds[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (out != NULL && out_cap > 1 && used < out_cap - 1) {
            size_t take = (size_t)r;
            if (take > out_cap - 1 - used)
                take = out_cap - 1 - used;
            memcpy(out + used, buf, take);
            used += take;
        }
    }
    close(fds[0]);
    if (out != NULL && out_cap > 0)
        out[used] = '\0';

    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    if (killed)
        fprintf(stderr, "harness: %s did not finish within %d ms\n", argv[0], timeout_ms);
    *out_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return 0;
}

int
harness_roundtrip(const harness_t *h, const void *msg, size_t len, int timeout_ms, void **out_reply,
                  size_t *out_len)
{
    int linger = 0;
    int rc = -1;
    void *s = zmq_socket(h->zctx, ZMQ_DEALER);
    if (s == NULL)
        return -1;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(s, h->cmd_ep) != 0 || zmq_send(s, msg, len, 0) < 0) {
        zmq_close(s);
        return -1;
    }
    zmq_pollitem_t item = { .socket = s, .events = ZMQ_POLLIN };
    if (zmq_poll(&item, 1, timeout_ms) > 0) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) >= 0) {
            void *copy = malloc(zmq_msg_size(&m) + 1);
            if (copy != NULL) {
                memcpy(copy, zmq_msg_data(&m), zmq_msg_size(&m));
                *out_reply = copy;
                *out_len = zmq_msg_size(&m);
                rc = 0;
            }
        }
        zmq_msg_close(&m);
    }
    zmq_close(s);
    return rc;
}

/* ---- The test client ------------------------------------------------------------------------ */

struct harness_client {
    void *zctx;
    void *sock;
    zmq_msg_t last; /* the last ReplyBatch received: replies point into it */
    bool have_last;
    uint8_t *frame;        /* CL_FRAME_MAX_BYTES: the RequestBatch being built */
    uint8_t *req;          /* one encoded Request */
    cl_issued_row_t *rows; /* rows of batch results */
};

#define S_REQ_MAX (512u * 1024u) /* one encoded Request (an IssueBatch of 1000 rows fits) */

int
harness_client_open(const char *endpoint, harness_client_t **out)
{
    int linger = 0;
    harness_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->zctx = zmq_ctx_new();
    c->frame = malloc(CL_FRAME_MAX_BYTES);
    c->req = malloc(S_REQ_MAX);
    c->rows = calloc(CL_ISSUE_BATCH_MAX * 4, sizeof(*c->rows));
    if (c->zctx != NULL)
        c->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (c->sock == NULL || c->frame == NULL || c->req == NULL || c->rows == NULL ||
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
        zmq_connect(c->sock, endpoint) != 0) {
        harness_client_close(&c);
        return -1;
    }
    *out = c;
    return 0;
}

void
harness_client_close(harness_client_t **cp)
{
    if (cp == NULL || *cp == NULL)
        return;
    harness_client_t *c = *cp;
    if (c->have_last)
        zmq_msg_close(&c->last);
    if (c->sock != NULL)
        zmq_close(c->sock);
    if (c->zctx != NULL)
        zmq_ctx_term(c->zctx);
    free(c->frame);
    free(c->req);
    free(c->rows);
    free(c);
    *cp = NULL;
}

int
harness_client_send_raw(harness_client_t *c, const void *frame, size_t len)
{
    return zmq_send(c->sock, frame, len, 0) < 0 ? -1 : 0;
}

int
harness_client_send(harness_client_t *c, const cl_command_t *cmds, size_t n)
{
    size_t len = 0;
    if (n == 0 || n > CL_BATCH_REQUESTS_MAX)
        return -1;
    /* Requests are framed one by one: field 1, length-delimited, concatenated. */
    for (size_t i = 0; i < n; i++) {
        size_t req_len = 0;
        size_t part = 0;
        const uint8_t *reqs[1] = { c->req };
        if (codec_request_encode(&cmds[i], c->req, S_REQ_MAX, &req_len) != 0 ||
            codec_request_batch_frame(reqs, &req_len, 1, c->frame + len, CL_FRAME_MAX_BYTES - len,
                                      &part) != 0) {
            fprintf(stderr, "harness: a command does not encode\n");
            return -1;
        }
        len += part;
    }
    return harness_client_send_raw(c, c->frame, len);
}

int
harness_client_recv(harness_client_t *c, int timeout_ms, cl_reply_t *out, size_t cap, size_t *out_n)
{
    zmq_pollitem_t item = { .socket = c->sock, .events = ZMQ_POLLIN };
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return -1;
    if (c->have_last)
        zmq_msg_close(&c->last);
    zmq_msg_init(&c->last);
    c->have_last = true;
    if (zmq_msg_recv(&c->last, c->sock, 0) < 0)
        return -1;
    const uint8_t *data = zmq_msg_data(&c->last);
    size_t len = zmq_msg_size(&c->last);
    size_t off = 0;
    size_t n = 0;
    size_t rows_used = 0;
    for (;;) {
        const uint8_t *reply = NULL;
        size_t reply_len = 0;
        int rc = codec_reply_batch_next(data, len, &off, &reply, &reply_len);
        if (rc == CODEC_EEND)
            break;
        if (rc != 0 || n == cap)
            return -1;
        rc = codec_reply_decode(reply, reply_len, &out[n], c->rows + rows_used,
                                CL_ISSUE_BATCH_MAX * 4 - rows_used);
        if (rc != 0) {
            fprintf(stderr, "harness: a reply does not decode: %s\n", codec_strerror(rc));
            return -1;
        }
        rows_used += out[n].rows_count;
        n++;
    }
    *out_n = n;
    return 0;
}

int
harness_client_call(harness_client_t *c, const cl_command_t *cmds, size_t n, cl_reply_t *out,
                    int timeout_ms)
{
    size_t got = 0;
    if (harness_client_send(c, cmds, n) != 0 || harness_client_recv(c, timeout_ms, out, n, &got))
        return -1;
    return got == n ? 0 : -1;
}
