/*
 * Integration tests of libcardledger and the cardledger CLI's exit codes, against the real
 * daemon (tests/harness: cardledgerd on ipc:// endpoints in a temporary directory, test clock).
 *
 * The retry tests put a small proxy between the client and the daemon (a ROUTER the client
 * talks to, a DEALER to the daemon, on a thread). The proxy loses the first reply on purpose,
 * so the client's retry is certain to happen, without timing guesses: the tests then show that
 * the retry carried the very same bytes (the same request id), that the ledger answered it with
 * its stored reply, and that the command applied exactly once (GetRequest and the balance).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "cardledger.h"
#include "check.h"
#include "harness.h"

#define S_MERCHANT "m1"
#define S_STORE    "s1"
#define S_PROGRAM  "gift200"
#define S_FACE     20000 /* 200.00 */

/* ---- helpers -------------------------------------------------------------------------------- */

/* Clients of the running case, so a case that REQUIRE leaves early leaks nothing. */
#define S_CLIENTS_MAX 4
static cl_client_t *s_clients[S_CLIENTS_MAX];

static void
s_close(cl_client_t **c)
{
    for (size_t i = 0; i < S_CLIENTS_MAX; i++) {
        if (*c != NULL && s_clients[i] == *c)
            s_clients[i] = NULL;
    }
    cl_client_close(c);
}

static cl_client_t *
s_open_opts(const char *endpoint, const cl_client_opts_t *o)
{
    cl_client_t *c = NULL;
    int rc = cl_client_open(endpoint, o, &c);
    if (rc != 0)
        check_fail(__FILE__, __LINE__, "cl_client_open(%s): %s", endpoint, cl_client_strerror(rc));
    for (size_t i = 0; c != NULL && i < S_CLIENTS_MAX; i++) {
        if (s_clients[i] == NULL) {
            s_clients[i] = c;
            break;
        }
    }
    return c;
}

static cl_client_t *
s_open(const char *endpoint, int timeout_ms, int retries, unsigned window)
{
    cl_client_opts_t o;
    cl_client_opts_init(&o);
    o.timeout_ms = timeout_ms;
    o.retries = retries;
    if (window > 0)
        o.window = window;
    return s_open_opts(endpoint, &o);
}

/* Calls and requires a reply with the given status. */
static void
s_call_expect(cl_client_t *c, const cl_command_t *cmd, cl_status_t want, cl_reply_t *out)
{
    int rc = cl_client_call(c, cmd, out);
    if (rc != 0) {
        check_fail(__FILE__, __LINE__, "cl_client_call: %s", cl_client_strerror(rc));
        check_abort_case();
    }
    if (out->status != want) {
        check_fail(__FILE__, __LINE__, "command %d: status %s (%s), wanted %s", (int)cmd->type,
                   cl_status_name(out->status), out->message, cl_status_name(want));
        check_abort_case();
    }
}

/* Registers merchant, store and a stored-value program; issues one card of S_FACE. */
static void
s_setup(cl_client_t *c, char code[CL_CODE_MAX + 1])
{
    static cl_command_t cmd;
    static cl_reply_t r;

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REGISTER_MERCHANT;
    strcpy(cmd.u.register_merchant.merchant_id, S_MERCHANT);
    strcpy(cmd.u.register_merchant.name, "Merchant One");
    s_call_expect(c, &cmd, CL_OK, &r);

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REGISTER_STORE;
    strcpy(cmd.u.register_store.merchant_id, S_MERCHANT);
    strcpy(cmd.u.register_store.store_id, S_STORE);
    strcpy(cmd.u.register_store.name, "Store One");
    strcpy(cmd.u.register_store.region, "310000");
    s_call_expect(c, &cmd, CL_OK, &r);

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_DEFINE_PROGRAM;
    cl_program_spec_t *p = &cmd.u.program;
    strcpy(p->merchant_id, S_MERCHANT);
    strcpy(p->program_id, S_PROGRAM);
    strcpy(p->name, "Gift card");
    p->kind = CL_KIND_STORED_VALUE;
    strcpy(p->currency, "CNY");
    p->custom_min_minor = 100;
    p->custom_max_minor = 100000;
    p->valid_days = 365;
    p->accept_scope = CL_ACCEPT_ALL;
    s_call_expect(c, &cmd, CL_OK, &r);

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_ISSUE_CARD;
    strcpy(cmd.u.issue_card.merchant_id, S_MERCHANT);
    strcpy(cmd.u.issue_card.program_id, S_PROGRAM);
    strcpy(cmd.u.issue_card.holder, "h1");
    cmd.u.issue_card.channel = CL_CHANNEL_ONLINE;
    cmd.u.issue_card.face_value_minor = S_FACE;
    s_call_expect(c, &cmd, CL_OK, &r);
    CHECK_EQ_INT(r.result, CL_RES_ISSUED);
    CHECK_EQ_INT(r.card.balance_minor, S_FACE);
    REQUIRE(r.code[0] != '\0');
    memcpy(code, r.code, CL_CODE_MAX + 1);
}

static void
s_redeem_cmd(cl_command_t *cmd, const char *code, int64_t amount_minor, const char *request_id)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->type = CL_CMD_REDEEM;
    if (request_id != NULL)
        snprintf(cmd->request_id, sizeof(cmd->request_id), "%s", request_id);
    snprintf(cmd->u.redeem.card.code, sizeof(cmd->u.redeem.card.code), "%s", code);
    strcpy(cmd->u.redeem.store_id, S_STORE);
    cmd->u.redeem.amount_minor = amount_minor;
}

static int64_t
s_balance(cl_client_t *c, const char *code)
{
    static cl_command_t cmd;
    static cl_reply_t r;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_CARD;
    snprintf(cmd.u.card_flag.card.code, sizeof(cmd.u.card_flag.card.code), "%s", code);
    s_call_expect(c, &cmd, CL_OK, &r);
    return r.card.balance_minor;
}

static harness_t *s_h; /* the running case's harness, destroyed by the case */
static void *s_ctx;    /* a ZeroMQ context of the running case, terminated by the case */

/* Closes what a case that REQUIRE left early still holds. */
static void
s_cleanup(void)
{
    for (size_t i = 0; i < S_CLIENTS_MAX; i++)
        cl_client_close(&s_clients[i]);
    if (s_ctx != NULL)
        zmq_ctx_term(s_ctx);
    s_ctx = NULL;
    harness_destroy(&s_h);
}

/* Starts the daemon for a case; first cleans up after a case that REQUIRE left early. */
static harness_t *
s_start(void)
{
    s_cleanup();
    harness_t *h = NULL;
    REQUIRE(harness_start(NULL, &h) == 0);
    return h;
}

/* ---- call, batch, pipelining ---------------------------------------------------------------- */

static void
call_issues_and_redeems_a_card(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);

    static cl_command_t cmd;
    static cl_reply_t r;
    s_redeem_cmd(&cmd, code, 1250, NULL);
    s_call_expect(c, &cmd, CL_OK, &r);
    CHECK_EQ_INT(r.result, CL_RES_REDEEMED);
    CHECK_EQ_INT(r.amount_minor, 1250);
    CHECK_EQ_INT(r.card.balance_minor, S_FACE - 1250);
    CHECK_EQ_INT(strlen(r.request_id), CL_CLIENT_REQUEST_ID_LEN); /* made by the client */
    CHECK(!r.replayed);
    CHECK(r.last_seq > 0);

    /* The same request again (same id, same content): the stored reply, nothing applied. */
    snprintf(cmd.request_id, sizeof(cmd.request_id), "%s", r.request_id);
    static cl_reply_t again;
    s_call_expect(c, &cmd, CL_OK, &again);
    CHECK(again.replayed);
    CHECK_EQ_U64(again.last_seq, r.last_seq);
    CHECK_EQ_INT(s_balance(c, code), S_FACE - 1250);

    /* A refusal is a reply, not an error. */
    s_redeem_cmd(&cmd, code, S_FACE, NULL);
    s_call_expect(c, &cmd, CL_INSUFFICIENT_BALANCE, &r);
    CHECK(r.message[0] != '\0');
    CHECK_EQ_INT(s_balance(c, code), S_FACE - 1250);

    s_close(&c);
    CHECK(c == NULL);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
call_batch_answers_each_request_in_order(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);

    static cl_command_t cmds[4];
    static cl_reply_t r[4];
    s_redeem_cmd(&cmds[0], code, 5000, "batch-a");
    s_redeem_cmd(&cmds[1], code, 999999, "batch-b"); /* more than is left: refused alone */
    s_redeem_cmd(&cmds[2], code, 5000, "batch-c");
    memset(&cmds[3], 0, sizeof(cmds[3]));
    cmds[3].type = CL_CMD_GET_CARD;
    strcpy(cmds[3].request_id, "batch-d");
    strcpy(cmds[3].u.card_flag.card.code, code);
    REQUIRE(cl_client_call_batch(c, cmds, 4, r) == 0);
    CHECK_EQ_STR(r[0].request_id, "batch-a");
    CHECK_EQ_STR(r[1].request_id, "batch-b");
    CHECK_EQ_STR(r[2].request_id, "batch-c");
    CHECK_EQ_STR(r[3].request_id, "batch-d");
    CHECK_EQ_INT(r[0].status, CL_OK);
    CHECK_EQ_INT(r[1].status, CL_INSUFFICIENT_BALANCE);
    CHECK_EQ_INT(r[2].status, CL_OK);
    CHECK_EQ_INT(r[3].status, CL_OK);
    CHECK_EQ_INT(r[0].card.balance_minor, S_FACE - 5000);
    CHECK_EQ_INT(r[2].card.balance_minor, S_FACE - 10000);
    CHECK_EQ_INT(r[3].card.balance_minor, S_FACE - 10000);

    s_close(&c);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
pipelined_messages_are_matched_by_request_id(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 3, 8);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);

    /* 20 messages of 3 redeems of 1.00 each, with at most 8 in flight. */
    enum { MESSAGES = 20, PER = 3 };
    static cl_command_t cmds[PER];
    static cl_reply_t r[PER + 2];
    uint64_t tags[MESSAGES] = { 0 };
    bool answered[MESSAGES] = { false };
    size_t sent = 0, received = 0;
    while (received < MESSAGES) {
        while (sent < MESSAGES) {
            for (size_t k = 0; k < PER; k++) {
                char id[32];
                snprintf(id, sizeof(id), "pipe-%zu-%zu", sent, k);
                s_redeem_cmd(&cmds[k], code, 100, id);
            }
            int rc = cl_client_send(c, cmds, PER, &tags[sent]);
            if (rc == CLIENT_EFULL) {
                CHECK_EQ_INT(cl_client_outstanding(c), 8);
                break;
            }
            REQUIRE(rc == 0);
            sent++;
        }
        size_t n = 0;
        uint64_t tag = 0;
        int rc = cl_client_recv(c, 5000, r, PER + 2, &n, &tag);
        REQUIRE(rc == 0);
        CHECK_EQ_INT(n, PER);
        size_t m = MESSAGES;
        for (size_t i = 0; i < sent; i++) {
            if (tags[i] == tag)
                m = i;
        }
        REQUIRE(m < MESSAGES);
        CHECK(!answered[m]);
        answered[m] = true;
        for (size_t k = 0; k < n; k++) {
            char id[32];
            snprintf(id, sizeof(id), "pipe-%zu-%zu", m, k);
            CHECK_EQ_STR(r[k].request_id, id);
            CHECK_EQ_INT(r[k].status, CL_OK);
        }
        received++;
    }
    CHECK_EQ_INT(cl_client_outstanding(c), 0);
    size_t n;
    uint64_t tag;
    CHECK_EQ_INT(cl_client_recv(c, 0, r, PER, &n, &tag), CLIENT_EEMPTY);
    CHECK_EQ_INT(s_balance(c, code), S_FACE - MESSAGES * PER * 100);

    /* A synchronous call waits for nothing else: refused while messages are outstanding. */
    s_redeem_cmd(&cmds[0], code, 100, NULL);
    REQUIRE(cl_client_send(c, cmds, 1, &tag) == 0);
    CHECK_EQ_INT(cl_client_call(c, &cmds[1], r), CLIENT_EBUSY);
    CHECK_EQ_INT(cl_client_recv(c, 5000, r, 1, &n, &tag), 0);

    s_close(&c);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
batch_issue_rows_come_back_and_reissue_is_refused(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);

    enum { ROWS = 5 };
    static cl_cmd_issue_card_t rows[ROWS];
    for (size_t i = 0; i < ROWS; i++) {
        memset(&rows[i], 0, sizeof(rows[i]));
        snprintf(rows[i].row_key, sizeof(rows[i].row_key), "emp-%zu", i);
        snprintf(rows[i].holder, sizeof(rows[i].holder), "holder-%zu", i);
        rows[i].face_value_minor = 10000;
        rows[i].channel = CL_CHANNEL_ENTERPRISE;
    }
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_ISSUE_BATCH;
    strcpy(cmd.u.issue_batch.merchant_id, S_MERCHANT);
    strcpy(cmd.u.issue_batch.program_id, S_PROGRAM);
    strcpy(cmd.u.issue_batch.batch_ref, "test");
    cmd.u.issue_batch.rows_count = ROWS;
    cmd.batch_rows = rows;
    static cl_reply_t r;
    s_call_expect(c, &cmd, CL_OK, &r);
    CHECK_EQ_INT(r.result, CL_RES_BATCH);
    REQUIRE(r.rows_count == ROWS && r.rows != NULL);
    CHECK_EQ_INT(r.batch_issued, ROWS);
    char first_code[CL_CODE_MAX + 1];
    memcpy(first_code, r.rows[0].code, sizeof(first_code));
    for (size_t i = 0; i < ROWS; i++) {
        CHECK_EQ_INT(r.rows[i].status, CL_OK);
        CHECK(!r.rows[i].already_issued);
        CHECK(r.rows[i].code[0] != '\0');
        CHECK(r.rows[i].card_id != 0);
    }

    /* A new request id for the same rows: nothing is issued twice, no PIN shown again. */
    cmd.request_id[0] = '\0';
    s_call_expect(c, &cmd, CL_OK, &r);
    REQUIRE(r.rows_count == ROWS && r.rows != NULL);
    CHECK_EQ_INT(r.batch_issued, 0);
    CHECK_EQ_INT(r.batch_already_issued, ROWS);
    CHECK_EQ_STR(r.rows[0].code, first_code);
    for (size_t i = 0; i < ROWS; i++) {
        CHECK(r.rows[i].already_issued);
        CHECK_EQ_STR(r.rows[i].pin, "");
    }

    s_close(&c);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
get_request_returns_the_stored_reply(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);

    static cl_command_t cmd;
    static cl_reply_t r, q, stored;
    s_redeem_cmd(&cmd, code, 700, "stored-1");
    s_call_expect(c, &cmd, CL_OK, &r);

    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_REQUEST;
    strcpy(cmd.u.get_request_id, "stored-1");
    s_call_expect(c, &cmd, CL_OK, &q);
    CHECK_EQ_INT(q.result, CL_RES_REQUEST);
    REQUIRE(q.found);
    REQUIRE(cl_client_stored_reply(c, &q, &stored) == 0);
    CHECK_EQ_STR(stored.request_id, "stored-1");
    CHECK_EQ_INT(stored.status, CL_OK);
    CHECK_EQ_INT(stored.amount_minor, 700);
    CHECK_EQ_U64(stored.last_seq, r.last_seq);

    strcpy(cmd.u.get_request_id, "never-sent");
    s_call_expect(c, &cmd, CL_OK, &q);
    CHECK(!q.found);
    CHECK_EQ_INT(cl_client_stored_reply(c, &q, &stored), CLIENT_EINVAL);

    s_close(&c);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

/* ---- retries -------------------------------------------------------------------------------- */

/* The lossy proxy: forwards every message to the daemon and back, except that it drops the
 * replies to the first drop_replies messages (and with kill9_between, kills and restarts the
 * daemon before forwarding the retry). It records the frames it forwarded. With hold_ms, it
 * holds each message that long before forwarding it, so a test knows no reply can come sooner. */
typedef struct s_proxy {
    harness_t *h;
    char front[256];    /* the endpoint the client connects to */
    bool kill9_between; /* crash the daemon between the lost reply and the retry */
    int drop_replies;   /* replies to lose on the way back, the first ones */
    int hold_ms;        /* how long each message waits in the proxy before it goes on */
    volatile bool stop; /* set by the test to end the thread */
    int forwarded;      /* messages sent to the daemon */
    int dropped;        /* replies dropped */
    int restarted;      /* kill9+restart cycles that succeeded */
    size_t len[4];      /* the first frames forwarded, for comparison */
    unsigned char frame[4][4096];
    void *ctx;
} s_proxy_t;

static void *
s_proxy_main(void *arg)
{
    s_proxy_t *p = arg;
    void *front = zmq_socket(p->ctx, ZMQ_ROUTER);
    void *back = zmq_socket(p->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(front, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(back, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_bind(front, p->front) != 0 || zmq_connect(back, harness_cmd_endpoint(p->h)) != 0) {
        fprintf(stderr, "proxy: bind/connect failed: %s\n", zmq_strerror(errno));
        zmq_close(front);
        zmq_close(back);
        return NULL;
    }
    /* One client at a time: remember its identity frame for the way back. */
    unsigned char ident[256];
    size_t ident_len = 0;
    while (!p->stop) {
        zmq_pollitem_t items[] = { { front, 0, ZMQ_POLLIN, 0 }, { back, 0, ZMQ_POLLIN, 0 } };
        if (zmq_poll(items, 2, 50) <= 0)
            continue;
        static unsigned char buf[CL_FRAME_MAX_BYTES];
        if (items[0].revents & ZMQ_POLLIN) {
            int n = zmq_recv(front, ident, sizeof(ident), 0);
            if (n < 0)
                continue;
            ident_len = (size_t)n;
            int len = zmq_recv(front, buf, sizeof(buf), 0);
            if (len < 0)
                continue;
            if (p->forwarded < 4 && (size_t)len <= sizeof(p->frame[0])) {
                memcpy(p->frame[p->forwarded], buf, (size_t)len);
                p->len[p->forwarded] = (size_t)len;
            }
            if (p->forwarded == 1 && p->kill9_between) {
                /* The daemon applied try 1 and its reply was lost; now it crashes. */
                if (harness_kill9(p->h) == 0 && harness_restart(p->h) == 0)
                    p->restarted++;
            }
            p->forwarded++;
            if (p->hold_ms > 0) {
                struct timespec hold = { .tv_sec = p->hold_ms / 1000,
                                         .tv_nsec = (long)(p->hold_ms % 1000) * 1000000L };
                while (nanosleep(&hold, &hold) != 0 && errno == EINTR) {
                }
            }
            zmq_send(back, buf, (size_t)len, 0);
        }
        if (items[1].revents & ZMQ_POLLIN) {
            int len = zmq_recv(back, buf, sizeof(buf), 0);
            if (len < 0)
                continue;
            if (p->dropped < p->drop_replies) {
                p->dropped++; /* the first replies are lost on the way back */
                continue;
            }
            zmq_send(front, ident, ident_len, ZMQ_SNDMORE);
            zmq_send(front, buf, (size_t)len, 0);
        }
    }
    zmq_close(front);
    zmq_close(back);
    return NULL;
}

static void
s_retry_case(bool kill9_between)
{
    s_h = s_start();
    cl_client_t *direct = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(direct != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(direct, code);
    s_close(&direct);

    static s_proxy_t p;
    memset(&p, 0, sizeof(p));
    p.h = s_h;
    p.kill9_between = kill9_between;
    p.drop_replies = 1;
    snprintf(p.front, sizeof(p.front), "ipc://%s/proxy.sock", harness_dir(s_h));
    p.ctx = zmq_ctx_new();
    REQUIRE(p.ctx != NULL);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, s_proxy_main, &p) == 0);

    /* A short timeout so the lost reply is noticed quickly; the restart may take a while, so
     * leave retries enough. */
    cl_client_t *c = s_open(p.front, 300, 40, 0);
    CHECK(c != NULL);
    static cl_command_t cmd;
    static cl_reply_t r;
    s_redeem_cmd(&cmd, code, 1000, NULL);
    int rc = c != NULL ? cl_client_call(c, &cmd, &r) : CLIENT_EINVAL;
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.status, CL_OK);
    CHECK(r.replayed); /* answered from the ledger's stored reply */
    CHECK_EQ_INT(r.card.balance_minor, S_FACE - 1000);
    CHECK(p.forwarded >= 2);
    CHECK_EQ_INT(p.dropped, 1);
    if (kill9_between)
        CHECK_EQ_INT(p.restarted, 1);
    /* Every try carried the same bytes: the same request id and content. */
    CHECK(p.len[0] > 0);
    CHECK(p.len[1] == p.len[0] && memcmp(p.frame[0], p.frame[1], p.len[0]) == 0);
    s_close(&c);
    p.stop = true;
    pthread_join(thread, NULL);
    zmq_ctx_term(p.ctx);

    /* Applied exactly once: the request is on record and the balance moved once. */
    direct = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(direct != NULL);
    static cl_command_t q;
    static cl_reply_t qr;
    memset(&q, 0, sizeof(q));
    q.type = CL_CMD_GET_REQUEST;
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "%s", r.request_id);
    s_call_expect(direct, &q, CL_OK, &qr);
    CHECK(qr.found);
    CHECK_EQ_INT(s_balance(direct, code), S_FACE - 1000);
    s_close(&direct);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
retry_after_a_lost_reply_reuses_the_request_id_and_applies_once(void)
{
    s_retry_case(false);
}

static void
retry_across_a_daemon_crash_applies_once(void)
{
    s_retry_case(true);
}

static void
pipelined_resend_after_timeout_applies_once(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 0, 4);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);

    /* The daemon is down: the message waits, times out, and is sent again once it is back. */
    CHECK_EQ_INT(harness_stop(s_h), 0);
    static cl_command_t cmd;
    static cl_reply_t r[2];
    s_redeem_cmd(&cmd, code, 300, "resend-1");
    uint64_t tag = 0, got_tag = 0;
    size_t n = 0;
    REQUIRE(cl_client_send(c, &cmd, 1, &tag) == 0);
    CHECK_EQ_INT(cl_client_recv(c, 200, r, 2, &n, &got_tag), CLIENT_ETIMEOUT);
    CHECK_EQ_INT(cl_client_outstanding(c), 1);
    REQUIRE(harness_restart(s_h) == 0);
    REQUIRE(cl_client_resend(c) == 0);
    REQUIRE(cl_client_recv(c, 5000, r, 2, &n, &got_tag) == 0);
    CHECK_EQ_U64(got_tag, tag);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(r[0].request_id, "resend-1");
    CHECK_EQ_INT(r[0].status, CL_OK);
    /* The ipc connection may have delivered the first try too once the daemon came back:
     * either way the balance moved once. */
    CHECK_EQ_INT(s_balance(c, code), S_FACE - 300);

    s_close(&c);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
clients_share_the_callers_zeromq_context(void)
{
    s_h = s_start();
    s_ctx = zmq_ctx_new();
    REQUIRE(s_ctx != NULL);
    cl_client_opts_t o;
    cl_client_opts_init(&o);
    o.zmq_context = s_ctx;
    o.timeout_ms = 2000;
    o.retries = 0;
    cl_client_t *a = s_open_opts(harness_cmd_endpoint(s_h), &o);
    cl_client_t *b = s_open_opts(harness_cmd_endpoint(s_h), &o);
    REQUIRE(a != NULL && b != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(a, code);
    CHECK_EQ_INT(s_balance(b, code), S_FACE);

    /* A resend opens a fresh socket, in the same context (below). */
    static cl_command_t cmd;
    static cl_reply_t r[2];
    s_redeem_cmd(&cmd, code, 250, "shared-ctx-1");
    uint64_t tag = 0, got_tag = 0;
    size_t n = 0;
    REQUIRE(cl_client_send(b, &cmd, 1, &tag) == 0);
    REQUIRE(cl_client_resend(b) == 0);
    REQUIRE(cl_client_recv(b, 5000, r, 2, &n, &got_tag) == 0);
    CHECK_EQ_U64(got_tag, tag);
    CHECK_EQ_INT(r[0].status, CL_OK);

    /* Closing one client leaves the context, and so the other client, working (a client that
     * terminated it would hang here, waiting for b's socket). */
    s_close(&a);
    CHECK_EQ_INT(s_balance(b, code), S_FACE - 250);

    /* b's socket lives in the caller's context: shutting that down fails b's next call. */
    CHECK_EQ_INT(zmq_ctx_shutdown(s_ctx), 0);
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_CARD;
    snprintf(cmd.u.card_flag.card.code, sizeof(cmd.u.card_flag.card.code), "%s", code);
    CHECK_EQ_INT(cl_client_call(b, &cmd, &r[0]), CLIENT_EZMQ);
    s_close(&b);
    /* Every socket on it is closed: the termination returns at once. */
    CHECK_EQ_INT(zmq_ctx_term(s_ctx), 0);
    s_ctx = NULL;
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static uint64_t
s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits for one reply the way an event loop does with cl_client_fd() (docs/client.md): takes
 * what has arrived with cl_client_recv(c, 0), then ppoll()s the descriptor for the rest of
 * timeout_ns, and again after every wake. Returns 1 with the reply in r (room for cap) and its
 * count in *out_n, 0 at the timeout, or a CLIENT_E* code. *out_wakes counts the wakes that
 * found no reply (ZeroMQ's own traffic); a busy loop would make thousands. */
static int
s_fd_wait(cl_client_t *c, uint64_t timeout_ns, cl_reply_t *r, size_t cap, size_t *out_n,
          unsigned *out_wakes)
{
    uint64_t deadline = s_now_ns() + timeout_ns;
    *out_wakes = 0;
    for (bool woke = false;; woke = true) {
        uint64_t tag = 0;
        int rc = cl_client_recv(c, 0, r, cap, out_n, &tag);
        if (rc == 0)
            return 1;
        if (rc != CLIENT_ETIMEOUT)
            return rc;
        if (woke)
            (*out_wakes)++;
        uint64_t now = s_now_ns();
        if (now >= deadline)
            return 0;
        struct pollfd pfd = { .fd = -1, .events = POLLIN };
        rc = cl_client_fd(c, &pfd.fd);
        if (rc < 0)
            return rc;
        struct timespec left = { .tv_sec = (time_t)((deadline - now) / 1000000000u),
                                 .tv_nsec = (long)((deadline - now) % 1000000000u) };
        if (ppoll(&pfd, 1, &left, NULL) < 0 && errno != EINTR)
            return CLIENT_EZMQ;
    }
}

static void
a_wait_on_the_fd_ends_at_a_reply_or_at_its_timeout(void)
{
    s_h = s_start();
    cl_client_t *direct = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(direct != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(direct, code);
    s_close(&direct);

    /* Every message waits HOLD_MS in the proxy, so no reply can come sooner. */
    enum { HOLD_MS = 300, SHORT_MS = 50, LONG_MS = 5000 };
    static s_proxy_t p;
    memset(&p, 0, sizeof(p));
    p.h = s_h;
    p.hold_ms = HOLD_MS;
    snprintf(p.front, sizeof(p.front), "ipc://%s/proxy.sock", harness_dir(s_h));
    p.ctx = zmq_ctx_new();
    REQUIRE(p.ctx != NULL);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, s_proxy_main, &p) == 0);

    cl_client_t *c = s_open(p.front, 5000, 0, 4);
    CHECK(c != NULL);
    int fd = -1;
    if (c != NULL) {
        CHECK_EQ_INT(cl_client_fd(c, &fd), 0);
        CHECK(fd >= 0);
        CHECK_EQ_INT(cl_client_fd(NULL, &fd), CLIENT_EINVAL);
        CHECK_EQ_INT(cl_client_fd(c, NULL), CLIENT_EINVAL);
    }
    static cl_command_t cmd;
    static cl_reply_t r[2];
    size_t n = 0;
    unsigned wakes = 0;
    uint64_t tag = 0;
    s_redeem_cmd(&cmd, code, 100, "fd-1");
    if (c != NULL && cl_client_send(c, &cmd, 1, &tag) == 0) {
        /* No reply is due yet: the wait sleeps to its timeout, not less, and not in a busy
         * loop. */
        uint64_t t0 = s_now_ns();
        CHECK_EQ_INT(s_fd_wait(c, SHORT_MS * 1000000ull, r, 2, &n, &wakes), 0);
        uint64_t took = s_now_ns() - t0;
        CHECK(took >= SHORT_MS * 1000000ull);
        CHECK(took < HOLD_MS * 1000000ull);
        CHECK(wakes < 20);
        /* The reply comes after the hold: the wait ends with it, long before its timeout. */
        CHECK_EQ_INT(s_fd_wait(c, LONG_MS * 1000000ull, r, 2, &n, &wakes), 1);
        took = s_now_ns() - t0;
        CHECK(took >= HOLD_MS * 1000000ull);
        CHECK(took < (LONG_MS - 1000) * 1000000ull);
        CHECK(wakes < 20);
        CHECK_EQ_INT(n, 1);
        CHECK_EQ_STR(r[0].request_id, "fd-1");
        CHECK_EQ_INT(r[0].status, CL_OK);
    } else {
        CHECK(false);
    }

    /* A resend opens a new socket: the descriptor to wait on is asked for again. */
    s_redeem_cmd(&cmd, code, 100, "fd-2");
    if (c != NULL && cl_client_send(c, &cmd, 1, &tag) == 0) {
        CHECK_EQ_INT(cl_client_resend(c), 0);
        CHECK_EQ_INT(cl_client_fd(c, &fd), 0);
        CHECK(fd >= 0);
        uint64_t t0 = s_now_ns();
        CHECK_EQ_INT(s_fd_wait(c, LONG_MS * 1000000ull, r, 2, &n, &wakes), 1);
        uint64_t took = s_now_ns() - t0;
        CHECK(took < (LONG_MS - 1000) * 1000000ull);
        CHECK_EQ_STR(r[0].request_id, "fd-2");
        CHECK_EQ_INT(r[0].status, CL_OK);
    } else {
        CHECK(false);
    }
    s_close(&c);
    p.stop = true;
    pthread_join(thread, NULL);
    zmq_ctx_term(p.ctx);

    /* fd-2 went twice (the resend) and applied once. */
    direct = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(direct != NULL);
    CHECK_EQ_INT(s_balance(direct, code), S_FACE - 200);
    s_close(&direct);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

static void
nothing_listening_times_out_after_every_retry(void)
{
    char dir[] = "/tmp/cl-client-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char ep[128];
    snprintf(ep, sizeof(ep), "ipc://%s/nobody.sock", dir);
    cl_client_t *c = s_open(ep, 100, 2, 0);
    REQUIRE(c != NULL);
    static cl_command_t cmd;
    static cl_reply_t r;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_STATUS;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(cl_client_call(c, &cmd, &r), CLIENT_ETIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 300); /* three tries of 100 ms */
    CHECK_EQ_INT(cl_client_outstanding(c), 0);
    CHECK(strstr(cl_client_strerror(CLIENT_ETIMEOUT), "could not reach the ledger") != NULL);
    s_close(&c);
    rmdir(dir);
}

/* ---- CurveZMQ principals ----------------------------------------------------------------------
 */

typedef struct s_keys {
    char pub[41], sec[41];
} s_keys_t;

static void
s_keypair(s_keys_t *k)
{
    REQUIRE(zmq_curve_keypair(k->pub, k->sec) == 0);
}

static void
s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0);
}

/* A client of the running case that connects with the key pair k to a daemon of key server. */
static cl_client_t *
s_open_keys(const char *endpoint, const s_keys_t *server, const s_keys_t *k, int timeout_ms)
{
    cl_client_opts_t o;
    cl_client_opts_init(&o);
    o.timeout_ms = timeout_ms;
    o.retries = 0;
    if (k != NULL) {
        memcpy(o.curve_server_key, server->pub, sizeof(o.curve_server_key));
        memcpy(o.curve_public_key, k->pub, sizeof(o.curve_public_key));
        memcpy(o.curve_secret_key, k->sec, sizeof(o.curve_secret_key));
    }
    return s_open_opts(endpoint, &o);
}

static int s_cli(const char *const *args);

/*
 * PRODUCT.md section 8: with CurveZMQ keys, the daemon decides each command as the principal its
 * key is listed as. A store terminal redeems at its own store only; another merchant's admin
 * reaches none of this merchant's cards; the same request id from another key is another
 * request; only an operator looks requests up; a key that is not listed, or no key, gets no
 * connection. A bad principals file is refused at start.
 */
static void
principals_decide_over_curvezmq_and_unlisted_keys_get_no_connection(void)
{
    s_cleanup();
    char dir[] = "/tmp/cl-keys-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    s_keys_t server, op, till, till2, till3, admin2, stranger;
    s_keypair(&server);
    s_keypair(&op);
    s_keypair(&till);
    s_keypair(&till2);
    s_keypair(&till3);
    s_keypair(&admin2);
    s_keypair(&stranger);
    char secret_file[128], principals[128], bad[128], text[1024];
    snprintf(secret_file, sizeof(secret_file), "%s/server.key", dir);
    snprintf(principals, sizeof(principals), "%s/principals", dir);
    snprintf(bad, sizeof(bad), "%s/bad-principals", dir);
    snprintf(text, sizeof(text), "%s\n", server.sec);
    s_write(secret_file, text);
    snprintf(text, sizeof(text),
             "# key role merchant store name\n"
             "%s operator - - ops\n"
             "%s store_terminal m1 s1 till-1\n"
             "  %s   store_terminal  m1  s1  till-2\n"
             "\n"
             "%s merchant_admin m2 - admin-m2\n"
             "%s store_terminal m1 s1 till-2\n", /* the same fields as another key */
             op.pub, till.pub, till2.pub, admin2.pub, till3.pub);
    s_write(principals, text);

    /* Refused at start: a key file without principals, a principals line that is wrong. */
    snprintf(text, sizeof(text), "%s store_terminal m1 - till-without-store\n", till.pub);
    s_write(bad, text);
    char data[160], out[2048];
    snprintf(data, sizeof(data), "%s/data", dir);
    int status = -1;
    const char *alone[] = {
        "--data",    data, "--listen", "ipc:///tmp/cl-unused.sock", "--curve-secret-key",
        secret_file, NULL
    };
    REQUIRE(harness_exec(alone, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "go together") != NULL);
    const char *wrong[] = { "--data",
                            data,
                            "--listen",
                            "ipc:///tmp/cl-unused.sock",
                            "--curve-secret-key",
                            secret_file,
                            "--principals",
                            bad,
                            NULL };
    REQUIRE(harness_exec(wrong, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "line 1: a store terminal names its store") != NULL);
    /* A line too long is refused whole, never read as two (a key after a long comment). */
    char *long_line = malloc(1400);
    REQUIRE(long_line != NULL);
    memset(long_line, 'x', 1100);
    snprintf(long_line + 1100, 300, "%s operator - - ops\n", op.pub);
    long_line[0] = '#';
    s_write(bad, long_line);
    free(long_line);
    REQUIRE(harness_exec(wrong, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "line 1 is longer than") != NULL);
    /* A merchant that is no id, a key twice, a key of zeros. */
    struct {
        char text[256];
        const char *says;
    } bads[3];
    snprintf(bads[0].text, sizeof(bads[0].text), "%s merchant_admin m/1 - a\n", op.pub);
    bads[0].says = "line 1: the merchant or store is not an id";
    snprintf(bads[1].text, sizeof(bads[1].text), "%s operator - - a\n%s analyst m1 - b\n", op.pub,
             op.pub);
    bads[1].says = "twice (lines 1 and 2)";
    snprintf(bads[2].text, sizeof(bads[2].text), "%s operator - - zero\n",
             "0000000000000000000000000000000000000000");
    bads[2].says =
        "line 1: '0000000000000000000000000000000000000000' is not a CurveZMQ public key";
    for (size_t i = 0; i < 3; i++) {
        s_write(bad, bads[i].text);
        REQUIRE(harness_exec(wrong, 10000, out, sizeof(out), &status) == 0);
        CHECK_EQ_INT(status, 64);
        if (strstr(out, bads[i].says) == NULL)
            check_fail(__FILE__, __LINE__, "bad principals file %zu: %s", i, out);
    }

    char extra[512];
    snprintf(extra, sizeof(extra),
             "--curve-secret-key %s --principals %s --unknown-cards-per-s 2 --commit-events 1",
             secret_file, principals);
    harness_opts_t ho = { .extra_args = extra, .curve_keys = { server.pub, op.pub, op.sec } };
    REQUIRE(harness_start(&ho, &s_h) == 0);
    const char *ep = harness_cmd_endpoint(s_h);

    cl_client_t *ops = s_open_keys(ep, &server, &op, 5000);
    REQUIRE(ops != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(ops, code);
    static cl_command_t cmd;
    static cl_reply_t r;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REGISTER_STORE;
    strcpy(cmd.u.register_store.merchant_id, S_MERCHANT);
    strcpy(cmd.u.register_store.store_id, "s2");
    strcpy(cmd.u.register_store.region, "110000");
    s_call_expect(ops, &cmd, CL_OK, &r);
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REGISTER_MERCHANT;
    strcpy(cmd.u.register_merchant.merchant_id, "m2");
    s_call_expect(ops, &cmd, CL_OK, &r);

    /* The terminal of s1 redeems there, never at s2; the other merchant's admin not at all. */
    cl_client_t *t1 = s_open_keys(ep, &server, &till, 5000);
    REQUIRE(t1 != NULL);
    s_redeem_cmd(&cmd, code, 1000, "rid-1");
    s_call_expect(t1, &cmd, CL_OK, &r);
    CHECK_EQ_INT(r.card.balance_minor, S_FACE - 1000);
    s_redeem_cmd(&cmd, code, 1000, NULL);
    strcpy(cmd.u.redeem.store_id, "s2");
    s_call_expect(t1, &cmd, CL_PERMISSION_DENIED, &r);
    cl_client_t *a2 = s_open_keys(ep, &server, &admin2, 5000);
    REQUIRE(a2 != NULL);
    s_redeem_cmd(&cmd, code, 1000, NULL);
    s_call_expect(a2, &cmd, CL_WRONG_MERCHANT, &r);
    CHECK_EQ_INT(s_balance(ops, code), S_FACE - 1000);
    /* A message cut across commit groups (--commit-events 1) is decided as its key throughout:
     * the admin may register its store, never a merchant. */
    static cl_command_t two[2];
    static cl_reply_t two_r[2];
    memset(two, 0, sizeof(two));
    two[0].type = CL_CMD_REGISTER_STORE;
    strcpy(two[0].u.register_store.merchant_id, "m2");
    strcpy(two[0].u.register_store.store_id, "t9");
    strcpy(two[0].u.register_store.region, "310000");
    two[1].type = CL_CMD_REGISTER_MERCHANT;
    strcpy(two[1].u.register_merchant.merchant_id, "evil");
    REQUIRE(cl_client_call_batch(a2, two, 2, two_r) == 0);
    CHECK_EQ_INT(two_r[0].status, CL_OK);
    CHECK_EQ_INT(two_r[1].status, CL_PERMISSION_DENIED);

    /* The same request id and content from another key is another request; from the same key
     * it replays the first reply and applies nothing. */
    cl_client_t *t2 = s_open_keys(ep, &server, &till2, 5000);
    REQUIRE(t2 != NULL);
    s_redeem_cmd(&cmd, code, 1000, "rid-1");
    s_call_expect(t2, &cmd, CL_REQUEST_ID_REUSED, &r);
    s_call_expect(t1, &cmd, CL_OK, &r);
    CHECK_EQ_INT(r.card.balance_minor, S_FACE - 1000);
    CHECK_EQ_INT(s_balance(ops, code), S_FACE - 1000);
    /* ... also between keys listed with the very same role, merchant, store and name. */
    cl_client_t *t3 = s_open_keys(ep, &server, &till3, 5000);
    REQUIRE(t3 != NULL);
    s_redeem_cmd(&cmd, code, 500, "rid-2");
    s_call_expect(t2, &cmd, CL_OK, &r);
    s_call_expect(t3, &cmd, CL_REQUEST_ID_REUSED, &r);
    CHECK_EQ_INT(s_balance(ops, code), S_FACE - 1500);
    s_close(&t3);

    /* Looking a request up is an operator's. */
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_REQUEST;
    strcpy(cmd.u.get_request_id, "rid-1");
    s_call_expect(t1, &cmd, CL_PERMISSION_DENIED, &r);
    s_call_expect(ops, &cmd, CL_OK, &r);
    CHECK(r.found);

    /* Guessing codes is limited per key: the terminal that named 2 codes of no card is refused
     * when it names one more, even a real one; the other terminal is not. */
    for (int i = 0; i < 2; i++) {
        memset(&cmd, 0, sizeof(cmd));
        cmd.type = CL_CMD_GET_CARD;
        snprintf(cmd.u.card_flag.card.code, sizeof(cmd.u.card_flag.card.code), "1234567890%d", i);
        s_call_expect(t1, &cmd, CL_UNKNOWN_CARD, &r);
    }
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_CARD;
    snprintf(cmd.u.card_flag.card.code, sizeof(cmd.u.card_flag.card.code), "%s", code);
    s_call_expect(t1, &cmd, CL_RATE_LIMITED, &r);
    s_call_expect(t2, &cmd, CL_OK, &r);

    /* An unlisted key, or none, gets no connection at all. */
    cl_client_t *x = s_open_keys(ep, &server, &stranger, 300);
    REQUIRE(x != NULL);
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_STATUS;
    CHECK_EQ_INT(cl_client_call(x, &cmd, &r), CLIENT_ETIMEOUT);
    s_close(&x);
    x = s_open_keys(ep, &server, NULL, 300);
    REQUIRE(x != NULL);
    CHECK_EQ_INT(cl_client_call(x, &cmd, &r), CLIENT_ETIMEOUT);
    s_close(&x);

    /* The CLI with the operator's key files is answered; without keys it cannot reach it. */
    char server_pub[128], op_key[128];
    snprintf(server_pub, sizeof(server_pub), "%s/server.pub", dir);
    snprintf(op_key, sizeof(op_key), "%s/op.key", dir);
    snprintf(text, sizeof(text), "%s\n", server.pub);
    s_write(server_pub, text);
    snprintf(text, sizeof(text), "%s\n", op.sec);
    s_write(op_key, text);
    const char *with[] = { "--connect", ep,  "--server-key-file", server_pub, "--key-file", op_key,
                           "status",    NULL };
    CHECK_EQ_INT(s_cli(with), 0);
    const char *without[] = { "--connect", ep,  "--timeout-ms", "300",
                              "--retries", "0", "status",       NULL };
    CHECK_EQ_INT(s_cli(without), 2);
    const char *half[] = { "--connect", ep, "--key-file", op_key, "status", NULL };
    CHECK_EQ_INT(s_cli(half), 1);
    unlink(server_pub);
    unlink(op_key);
    s_close(&t1);
    s_close(&t2);
    s_close(&a2);
    s_close(&ops);
    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
    unlink(secret_file);
    unlink(principals);
    unlink(bad);
    rmdir(dir);
}

/* ---- the CLI's exit codes ------------------------------------------------------------------- */

/* Runs the CLI with args (NULL-terminated), output discarded; returns its exit status. */
static int
s_cli(const char *const *args)
{
    const char *root = getenv("CARDLEDGER_BUILD_ROOT");
    char path[512];
    snprintf(path, sizeof(path), "%s/client/cardledger", root != NULL ? root : ".");
    char *argv[32];
    size_t n = 0;
    argv[n++] = path;
    for (; args[n - 1] != NULL && n < 31; n++)
        argv[n] = (char *)(uintptr_t)args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(path, argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void
cli_exit_codes_tell_refused_from_unreachable(void)
{
    s_h = s_start();
    cl_client_t *c = s_open(harness_cmd_endpoint(s_h), 5000, 3, 0);
    REQUIRE(c != NULL);
    char code[CL_CODE_MAX + 1];
    s_setup(c, code);
    s_close(&c);
    const char *ep = harness_cmd_endpoint(s_h);

    const char *ok[] = { "--connect", ep, "status", NULL };
    CHECK_EQ_INT(s_cli(ok), 0);
    const char *redeem[] = { "--connect", ep,         "redeem", code, "--store",
                             S_STORE,     "--amount", "1.00",   NULL };
    CHECK_EQ_INT(s_cli(redeem), 0);
    const char *refused[] = { "--connect", ep,         "redeem",  code, "--store",
                              S_STORE,     "--amount", "9999.00", NULL };
    CHECK_EQ_INT(s_cli(refused), 3);
    const char *usage[] = { "--connect", ep, "redeem", code, "--amount", "1.005", NULL };
    CHECK_EQ_INT(s_cli(usage), 1);
    const char *unknown[] = { "--connect", ep, "teleport", NULL };
    CHECK_EQ_INT(s_cli(unknown), 1);

    char nobody[300];
    snprintf(nobody, sizeof(nobody), "ipc://%s/nobody.sock", harness_dir(s_h));
    const char *unreachable[] = { "--connect", nobody, "--timeout-ms", "100",
                                  "--retries", "1",    "status",       NULL };
    CHECK_EQ_INT(s_cli(unreachable), 2);

    CHECK_EQ_INT(harness_stop(s_h), 0);
    harness_destroy(&s_h);
}

int
main(int argc, char **argv)
{
    static const check_case_t cases[] = {
        CHECK_CASE(call_issues_and_redeems_a_card),
        CHECK_CASE(call_batch_answers_each_request_in_order),
        CHECK_CASE(pipelined_messages_are_matched_by_request_id),
        CHECK_CASE(batch_issue_rows_come_back_and_reissue_is_refused),
        CHECK_CASE(get_request_returns_the_stored_reply),
        CHECK_CASE(retry_after_a_lost_reply_reuses_the_request_id_and_applies_once),
        CHECK_CASE(retry_across_a_daemon_crash_applies_once),
        CHECK_CASE(pipelined_resend_after_timeout_applies_once),
        CHECK_CASE(clients_share_the_callers_zeromq_context),
        CHECK_CASE(a_wait_on_the_fd_ends_at_a_reply_or_at_its_timeout),
        CHECK_CASE(nothing_listening_times_out_after_every_retry),
        CHECK_CASE(principals_decide_over_curvezmq_and_unlisted_keys_get_no_connection),
        CHECK_CASE(cli_exit_codes_tell_refused_from_unreachable),
    };
    int rc = check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
    /* A case left early by REQUIRE leaves its daemon: stop it so nothing outlives the test. */
    s_cleanup();
    return rc;
}
