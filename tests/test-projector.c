/*
 * test-projector: cardledger-projector as a process beside the real daemon.
 *
 * harness.h runs cardledgerd on ipc:// endpoints in a temporary directory with a test clock;
 * the projector runs beside it (--journal the daemon's data directory, --subscribe its PUB,
 * --listen ipc:// in the same directory). Commands go to the daemon through the harness
 * client; queries go to the projector as protobuf RequestBatch frames, built and read here with
 * protobuf-c. The cases: every query answered with the checkpoint it reflects; kill -9 of the
 * projector while commands flow, and after catch-up the same bytes as a from-scratch replay at
 * the same sequence; a schema bump rebuilt blue/green while queries keep being answered.
 *
 * Built with -DTEST_PROJECTOR_SLOW (suite slow) the crash loop runs longer with more load.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "cardledger.pb-c.h"
#include "check.h"
#include "codec.h"
#include "harness.h"
#include "journal.h"

#define T0            HARNESS_CLOCK_START_US_DEFAULT
#define QUERY_WAIT_MS 5000
#define CATCH_UP_MS   60000
#define S_PATH_MAX    512

#ifdef TEST_PROJECTOR_SLOW
#define CRASH_ROUNDS  30
#define CRASH_BATCHES 8
#else
#define CRASH_ROUNDS  4
#define CRASH_BATCHES 2
#endif

static harness_t *H;
static harness_client_t *C;
static pid_t proj_pid;
static char proj_data[S_PATH_MAX];
static char proj_ep[S_PATH_MAX];
static void *zctx;

/* ---- Processes ---------------------------------------------------------------------------- */

static const char *
s_build_path(const char *rel)
{
    static char path[4][S_PATH_MAX];
    static int next;
    const char *root = getenv("CARDLEDGER_BUILD_ROOT");
    char *p = path[next++ % 4];
    snprintf(p, S_PATH_MAX, "%s/%s", root != NULL ? root : ".", rel);
    return p;
}

static int64_t
s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Starts the projector with up to 4 extra arguments (NULL-terminated). */
static void
s_proj_start(const char *extra1, const char *extra2)
{
    REQUIRE(proj_pid == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const char *argv[16] = {
            s_build_path("projections/cardledger-projector"),
            "--journal",
            harness_data_dir(H),
            "--data",
            proj_data,
            "--subscribe",
            harness_pub_endpoint(H),
            "--listen",
            proj_ep,
            "--log-level",
            "warn",
        };
        size_t n = 11;
        if (extra1 != NULL)
            argv[n++] = extra1;
        if (extra2 != NULL)
            argv[n++] = extra2;
        argv[n] = NULL;
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    proj_pid = pid;
}

static int
s_proj_wait(int sig)
{
    REQUIRE(proj_pid != 0);
    kill(proj_pid, sig);
    int status = 0;
    REQUIRE(waitpid(proj_pid, &status, 0) == proj_pid);
    proj_pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs a program to completion; its stdout goes to out. Returns the exit status. */
static int
s_exec(const char *const *argv, char *out, size_t cap)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t got;
    while (used + 1 < cap && (got = read(fds[0], out + used, cap - 1 - used)) > 0)
        used += (size_t)got;
    out[used] = '\0';
    close(fds[0]);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- Queries ------------------------------------------------------------------------------ */

/* One query, answered: the ReplyBatch (free with ..._free_unpacked) or NULL on a timeout. */
static Cardledger__V1__ReplyBatch *
s_ask(const Cardledger__V1__Request *rq, int timeout_ms)
{
    Cardledger__V1__RequestBatch rb;
    cardledger__v1__request_batch__init(&rb);
    Cardledger__V1__Request *one = (Cardledger__V1__Request *)(uintptr_t)rq;
    rb.n_requests = 1;
    rb.requests = &one;
    size_t len = cardledger__v1__request_batch__get_packed_size(&rb);
    uint8_t *buf = malloc(len);
    REQUIRE(buf != NULL);
    cardledger__v1__request_batch__pack(&rb, buf);
    /* A fresh socket per question: a projector killed with a question in flight loses it. */
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    REQUIRE(zmq_connect(s, proj_ep) == 0);
    Cardledger__V1__ReplyBatch *out = NULL;
    if (zmq_send(s, buf, len, 0) == (int)len) {
        zmq_pollitem_t it = { s, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, timeout_ms) == 1) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) >= 0)
                out = cardledger__v1__reply_batch__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            zmq_msg_close(&m);
        }
    }
    zmq_close(s);
    free(buf);
    return out;
}

/* Sends raw bytes; returns the ReplyBatch or NULL. */
static Cardledger__V1__ReplyBatch *
s_ask_raw(const void *bytes, size_t len)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    REQUIRE(zmq_connect(s, proj_ep) == 0);
    Cardledger__V1__ReplyBatch *out = NULL;
    if (zmq_send(s, bytes, len, 0) == (int)len) {
        zmq_pollitem_t it = { s, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, QUERY_WAIT_MS) == 1) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) >= 0)
                out = cardledger__v1__reply_batch__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            zmq_msg_close(&m);
        }
    }
    zmq_close(s);
    return out;
}

static char s_rid[32];

static Cardledger__V1__Request *
s_request(Cardledger__V1__Request *rq)
{
    static unsigned counter;
    cardledger__v1__request__init(rq);
    snprintf(s_rid, sizeof(s_rid), "q-%u", ++counter);
    rq->request_id = s_rid;
    return rq;
}

/* The one reply of a batch, required. */
static const Cardledger__V1__Reply *
s_one(const Cardledger__V1__ReplyBatch *b)
{
    REQUIRE(b != NULL);
    REQUIRE(b->n_replies == 1);
    return b->replies[0];
}

static Cardledger__V1__ReplyBatch *
s_status_query(int timeout_ms)
{
    Cardledger__V1__Request rq;
    Cardledger__V1__ProjectionStatus ps;
    cardledger__v1__projection_status__init(&ps);
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_PROJECTION_STATUS;
    rq.projection_status = &ps;
    return s_ask(&rq, timeout_ms);
}

/* The daemon's head. */
static uint64_t
s_daemon_head(void)
{
    cl_command_t c;
    memset(&c, 0, sizeof(c));
    c.type = CL_CMD_GET_STATUS;
    snprintf(c.request_id, sizeof(c.request_id), "head-%lld", (long long)s_mono_ms());
    cl_reply_t r;
    REQUIRE(harness_client_call(C, &c, 1, &r, QUERY_WAIT_MS) == 0);
    REQUIRE(r.status == CL_OK);
    return r.status_head_seq;
}

/* Waits until every projection is at `seq` (and none rebuilds); false on a timeout. */
static bool
s_wait_caught_up(uint64_t seq)
{
    int64_t until = s_mono_ms() + CATCH_UP_MS;
    while (s_mono_ms() < until) {
        Cardledger__V1__ReplyBatch *b = s_status_query(1000);
        bool done = false;
        if (b != NULL && b->n_replies == 1 &&
            b->replies[0]->result_case == CARDLEDGER__V1__REPLY__RESULT_PROJECTIONS) {
            const Cardledger__V1__ProjectionStatusResult *st = b->replies[0]->projections;
            done = st->n_projections == 3;
            for (size_t i = 0; i < st->n_projections; i++)
                done = done && st->projections[i]->checkpoint_seq == seq &&
                       !st->projections[i]->rebuilding;
        }
        if (b != NULL)
            cardledger__v1__reply_batch__free_unpacked(b, NULL);
        if (done)
            return true;
        s_nap_ms(20);
    }
    return false;
}

/* ---- Commands ----------------------------------------------------------------------------- */

static cl_command_t cmd;

static cl_command_t *
s_cmd(cl_command_type_t type)
{
    static unsigned counter;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = type;
    snprintf(cmd.request_id, sizeof(cmd.request_id), "t-%u-%lld", ++counter,
             (long long)s_mono_ms());
    return &cmd;
}

static cl_reply_t reply;

static const cl_reply_t *
s_call(const cl_command_t *c)
{
    REQUIRE(harness_client_call(C, c, 1, &reply, QUERY_WAIT_MS) == 0);
    if (reply.status != CL_OK)
        check_fail(__FILE__, __LINE__, "%s: %s", cl_status_name(reply.status), reply.message);
    return &reply;
}

static void
s_world(void)
{
    cl_command_t *c = s_cmd(CL_CMD_REGISTER_MERCHANT);
    snprintf(c->u.register_merchant.merchant_id, CL_ID_MAX + 1, "m1");
    s_call(c);
    static const char *const stores[2][2] = { { "s1", "310000" }, { "s2", "110000" } };
    for (int i = 0; i < 2; i++) {
        c = s_cmd(CL_CMD_REGISTER_STORE);
        snprintf(c->u.register_store.merchant_id, CL_ID_MAX + 1, "m1");
        snprintf(c->u.register_store.store_id, CL_ID_MAX + 1, "%s", stores[i][0]);
        snprintf(c->u.register_store.region, CL_REGION_MAX + 1, "%s", stores[i][1]);
        s_call(c);
    }
    c = s_cmd(CL_CMD_DEFINE_PROGRAM);
    cl_program_spec_t *s = &c->u.program;
    snprintf(s->merchant_id, sizeof(s->merchant_id), "m1");
    snprintf(s->program_id, sizeof(s->program_id), "gift");
    snprintf(s->currency, sizeof(s->currency), "CNY");
    s->kind = CL_KIND_STORED_VALUE;
    s->accept_scope = CL_ACCEPT_ALL;
    s->denoms_count = 2;
    s->denoms_minor[0] = 10000;
    s->denoms_minor[1] = 20000;
    s->transferable = true;
    s->reloadable = true;
    s->balance_max_minor = 1000000;
    s->valid_days = 365;
    s_call(c);
}

static uint64_t
s_issue(const char *holder, int64_t face, char code[CL_CODE_MAX + 1])
{
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "gift");
    snprintf(c->u.issue_card.holder, CL_HOLDER_MAX + 1, "%s", holder);
    c->u.issue_card.channel = CL_CHANNEL_ONLINE;
    snprintf(c->u.issue_card.region, CL_REGION_MAX + 1, "310000");
    c->u.issue_card.face_value_minor = face;
    const cl_reply_t *r = s_call(c);
    if (code != NULL)
        snprintf(code, CL_CODE_MAX + 1, "%.*s", (int)CL_CODE_MAX, r->code);
    return r->card.card_id;
}

static uint64_t
s_redeem(uint64_t card, const char *store, int64_t amount)
{
    cl_command_t *c = s_cmd(CL_CMD_REDEEM);
    c->u.redeem.card.card_id = card;
    snprintf(c->u.redeem.store_id, CL_ID_MAX + 1, "%s", store);
    snprintf(c->u.redeem.order_ref, CL_ORDER_REF_MAX + 1, "o-%llu", (unsigned long long)card);
    c->u.redeem.amount_minor = amount;
    return s_call(c)->redemption_seq;
}

/* Sends n redeems of 1 minor unit (on cards 1..cards, at s1/s2) as one message. */
static void
s_redeem_burst(uint64_t cards, size_t n, unsigned salt)
{
    static cl_command_t many[CL_BATCH_REQUESTS_MAX];
    static cl_reply_t replies[CL_BATCH_REQUESTS_MAX];
    REQUIRE(n <= CL_BATCH_REQUESTS_MAX);
    for (size_t i = 0; i < n; i++) {
        memset(&many[i], 0, sizeof(many[i]));
        many[i].type = CL_CMD_REDEEM;
        snprintf(many[i].request_id, sizeof(many[i].request_id), "b-%u-%zu-%lld", salt, i,
                 (long long)s_mono_ms());
        many[i].u.redeem.card.card_id = 1 + (i * 7 + salt) % cards;
        snprintf(many[i].u.redeem.store_id, CL_ID_MAX + 1, "%s", i % 2 ? "s1" : "s2");
        many[i].u.redeem.amount_minor = 1;
    }
    REQUIRE(harness_client_call(C, many, n, replies, 30000) == 0);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_INT(replies[i].status, CL_OK);
}

/* ---- Setup -------------------------------------------------------------------------------- */

static void s_teardown(void);

static void
s_setup(void)
{
    s_teardown(); /* whatever a failed case left behind */
    REQUIRE(harness_start(NULL, &H) == 0);
    REQUIRE(harness_client_open(harness_cmd_endpoint(H), &C) == 0);
    snprintf(proj_data, sizeof(proj_data), "%s/proj", harness_dir(H));
    snprintf(proj_ep, sizeof(proj_ep), "ipc://%s/q.sock", harness_dir(H));
    if (zctx == NULL)
        zctx = zmq_ctx_new();
    REQUIRE(zctx != NULL);
}

static void
s_teardown(void)
{
    if (proj_pid != 0) {
        kill(proj_pid, SIGKILL);
        waitpid(proj_pid, NULL, 0);
        proj_pid = 0;
    }
    harness_client_close(&C);
    harness_destroy(&H);
}

/* Waits for the projector's first answer. */
static void
s_proj_ready(void)
{
    int64_t until = s_mono_ms() + 10000;
    for (;;) {
        Cardledger__V1__ReplyBatch *b = s_status_query(500);
        if (b != NULL) {
            cardledger__v1__reply_batch__free_unpacked(b, NULL);
            return;
        }
        REQUIRE(s_mono_ms() < until);
    }
}

/* ---- Cases -------------------------------------------------------------------------------- */

static void
projector_answers_every_query_with_the_checkpoint_it_reflects(void)
{
    s_setup();
    s_proj_start(NULL, NULL);
    s_proj_ready();
    s_world();
    char code1[CL_CODE_MAX + 1];
    uint64_t c1 = s_issue("alice", 20000, code1);
    uint64_t c2 = s_issue("bob", 10000, NULL);
    uint64_t c3 = s_issue("bob", 10000, NULL);
    uint64_t r1 = s_redeem(c1, "s1", 3000);
    s_redeem(c2, "s2", 2500);
    cl_command_t *c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = c1;
    c->u.reverse.redemption_seq = r1;
    c->u.reverse.amount_minor = 1000;
    s_call(c);
    c = s_cmd(CL_CMD_TRANSFER_CARD);
    c->u.gift.card.card_id = c3;
    snprintf(c->u.gift.from_holder, CL_HOLDER_MAX + 1, "bob");
    snprintf(c->u.gift.to_holder, CL_HOLDER_MAX + 1, "carol");
    s_call(c);
    uint64_t head = s_daemon_head();
    REQUIRE(s_wait_caught_up(head));

    Cardledger__V1__Request rq;
    char m1[] = "m1", s1[] = "s1", alice[] = "alice", nope[] = "nope", empty[] = "";
    char code_typed[64];
    snprintf(code_typed, sizeof(code_typed), "%.4s-%s", code1, code1 + 4);

    /* Card history, by the code as typed at a counter. */
    Cardledger__V1__CardRef ref;
    cardledger__v1__card_ref__init(&ref);
    ref.ref_case = CARDLEDGER__V1__CARD_REF__REF_CODE;
    ref.code = code_typed;
    Cardledger__V1__CardHistory hq;
    cardledger__v1__card_history__init(&hq);
    hq.card = &ref;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_CARD_HISTORY;
    rq.card_history = &hq;
    Cardledger__V1__ReplyBatch *b = s_ask(&rq, QUERY_WAIT_MS);
    const Cardledger__V1__Reply *r = s_one(b);
    CHECK_EQ_INT(r->status, CARDLEDGER__V1__STATUS__STATUS_OK);
    CHECK_EQ_U64(r->as_of_seq, head);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_HISTORY);
    CHECK_EQ_U64(r->history->card->card_id, c1);
    CHECK_EQ_INT(r->history->card->balance_minor, 18000);
    CHECK_EQ_U64(r->history->events_total, 3); /* issued, redeemed, reversed */
    REQUIRE(r->history->n_entries == 3);
    const Cardledger__V1__JournalEntry *first = r->history->entries[0]->entry;
    REQUIRE(first != NULL);
    REQUIRE(first->event_case == CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ISSUED);
    CHECK(strstr(first->card_issued->code, code1) == NULL);
    CHECK(strchr(first->card_issued->code, '*') != NULL);
    CHECK_EQ_U64(first->card_issued->pin_hash.len, 0);
    CHECK_EQ_U64(r->history->entries[1]->seq, r1);
    CHECK(r->history->entries[1]->at_us >= T0);
    REQUIRE(r->history->n_holders == 1);
    CHECK_EQ_STR(r->history->holders[0], "alice");
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    /* An unknown card. */
    ref.ref_case = CARDLEDGER__V1__CARD_REF__REF_CARD_ID;
    ref.card_id = 999999;
    b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_UNKNOWN_CARD);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* Wallet. */
    Cardledger__V1__HolderWallet wq;
    cardledger__v1__holder_wallet__init(&wq);
    wq.merchant_id = m1;
    wq.holder = alice;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_HOLDER_WALLET;
    rq.holder_wallet = &wq;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    CHECK_EQ_U64(r->as_of_seq, head);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_WALLET);
    REQUIRE(r->wallet->n_cards == 1);
    CHECK_EQ_U64(r->wallet->cards[0]->card_id, c1);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    wq.holder = empty;
    b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* Liability: 18000 + 7500 + 10000. */
    Cardledger__V1__GetLiability lq;
    cardledger__v1__get_liability__init(&lq);
    lq.merchant_id = m1;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_GET_LIABILITY;
    rq.get_liability = &lq;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    CHECK_EQ_U64(r->as_of_seq, head);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_LIABILITY);
    REQUIRE(r->liability->n_rows == 2);
    CHECK_EQ_STR(r->liability->rows[0]->program_id, "gift");
    CHECK_EQ_INT(r->liability->rows[0]->outstanding_minor, 35500);
    CHECK_EQ_U64(r->liability->rows[0]->live_cards, 3);
    CHECK_EQ_STR(r->liability->rows[1]->currency, "CNY");
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    lq.program_id = nope;
    b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_UNKNOWN_PROGRAM);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* Store day and the store's redemptions. */
    Cardledger__V1__StoreDay dq;
    cardledger__v1__store_day__init(&dq);
    dq.merchant_id = m1;
    dq.store_id = s1;
    dq.day_start_us = T0 + 3600LL * 1000000;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_STORE_DAY;
    rq.store_day = &dq;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    CHECK_EQ_U64(r->as_of_seq, head);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_STORE_DAY);
    CHECK_EQ_U64(r->store_day->redemptions, 1);
    CHECK_EQ_INT(r->store_day->redeemed_minor, 3000);
    CHECK_EQ_U64(r->store_day->reversals, 1);
    CHECK_EQ_INT(r->store_day->reversed_minor, 1000);
    CHECK_EQ_INT(r->store_day->day_start_us, T0);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    Cardledger__V1__StoreRedemptions sq;
    cardledger__v1__store_redemptions__init(&sq);
    sq.merchant_id = m1;
    sq.store_id = s1;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_STORE_REDEMPTIONS;
    rq.store_redemptions = &sq;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_REDEMPTIONS);
    REQUIRE(r->redemptions->n_lines == 1);
    CHECK_EQ_U64(r->redemptions->lines[0]->seq, r1);
    CHECK_EQ_INT(r->redemptions->lines[0]->reversed_minor, 1000);
    CHECK(!r->redemptions->more);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    sq.to_us = 5;
    sq.from_us = 10;
    b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* Settlement: sold online in 310000, redeemed at s1 (2000 net) and s2 (2500). */
    Cardledger__V1__Settlement tq;
    cardledger__v1__settlement__init(&tq);
    tq.merchant_id = m1;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_SETTLEMENT;
    rq.settlement = &tq;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_SETTLEMENT);
    REQUIRE(r->settlement->n_cells == 2);
    CHECK_EQ_STR(r->settlement->cells[0]->sold_store_id, "region:310000");
    CHECK_EQ_STR(r->settlement->cells[0]->redeemed_store_id, "s1");
    CHECK_EQ_INT(r->settlement->cells[0]->value_minor, 2000);
    CHECK_EQ_INT(r->settlement->cells[1]->value_minor, 2500);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* Analytics by day. */
    Cardledger__V1__Analytics aq;
    cardledger__v1__analytics__init(&aq);
    aq.merchant_id = m1;
    aq.group_by = CARDLEDGER__V1__GROUP_BY__GROUP_BY_DAY;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_ANALYTICS;
    rq.analytics = &aq;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    CHECK_EQ_U64(r->as_of_seq, head);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_ANALYTICS);
    REQUIRE(r->analytics->n_rows == 1);
    const Cardledger__V1__AnalyticsRow *row = r->analytics->rows[0];
    CHECK_EQ_STR(row->key, "2026-01-01");
    CHECK_EQ_STR(row->currency, "CNY");
    CHECK_EQ_U64(row->issued_count, 3);
    CHECK_EQ_INT(row->issued_face_minor, 40000);
    CHECK_EQ_INT(row->redeemed_net_minor, 4500);
    CHECK_EQ_U64(row->redemption_count, 2);
    CHECK_EQ_INT(row->avg_redemption_minor, 2250);
    CHECK_EQ_INT(row->outstanding_minor, 35500);
    CHECK_EQ_U64(row->cards_gifted, 1);
    CHECK_EQ_U64(row->n_lag_buckets, 5);
    CHECK_EQ_U64(row->n_denominations, 2);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* Status of the projections, and the common GetStatus. */
    b = s_status_query(QUERY_WAIT_MS);
    r = s_one(b);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_PROJECTIONS);
    REQUIRE(r->projections->n_projections == 3);
    CHECK_EQ_STR(r->projections->projections[0]->name, "balances");
    CHECK_EQ_STR(r->projections->projections[2]->name, "analytics");
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_U64(r->projections->projections[i]->checkpoint_seq, head);
        CHECK_EQ_U64(r->projections->projections[i]->journal_head_seq, head);
        CHECK_EQ_U64(r->projections->projections[i]->lag_events, 0);
        CHECK_EQ_U64(r->projections->projections[i]->schema_version, 1);
        CHECK_EQ_STR(r->projections->projections[i]->error, "");
    }
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    Cardledger__V1__GetStatus gs;
    cardledger__v1__get_status__init(&gs);
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_GET_STATUS;
    rq.get_status = &gs;
    b = s_ask(&rq, QUERY_WAIT_MS);
    r = s_one(b);
    REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_DAEMON_STATUS);
    CHECK_EQ_U64(r->daemon_status->head_seq, head);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    /* A daemon command, an unknown projection, a message that is not a RequestBatch. */
    Cardledger__V1__Redeem rd;
    cardledger__v1__redeem__init(&rd);
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_REDEEM;
    rq.redeem = &rd;
    b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_WRONG_SERVICE);
    CHECK_EQ_STR(s_one(b)->request_id, s_rid);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    Cardledger__V1__RebuildProjection rb;
    cardledger__v1__rebuild_projection__init(&rb);
    rb.name = nope;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_REBUILD_PROJECTION;
    rq.rebuild_projection = &rb;
    b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    static const uint8_t junk[] = { 0x0a, 0x05, 0xff, 0xff };
    b = s_ask_raw(junk, sizeof(junk));
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_MALFORMED);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);

    CHECK_EQ_INT(s_proj_wait(SIGTERM), 0);
    s_teardown();
}

/* The projector's digests (it must be stopped), as "name seq hex" lines. */
static void
s_proj_digests(char *out, size_t cap)
{
    const char *argv[] = { s_build_path("projections/cardledger-projector"),
                           "--journal",
                           harness_data_dir(H),
                           "--data",
                           proj_data,
                           "--print-digests",
                           NULL };
    CHECK_EQ_INT(s_exec(argv, out, cap), 0);
}

static void
killed_projector_catches_up_to_the_bytes_of_a_fresh_replay(void)
{
    s_setup();
    s_world();
    uint64_t cards = 60;
    for (uint64_t i = 0; i < cards; i++)
        s_issue(i % 2 ? "alice" : "bob", 20000, NULL);
    s_proj_start("--batch-events", "64");
    srand(12345);
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        /* Commands flow while the projector folds; then it dies at a random moment. */
        for (int k = 0; k < CRASH_BATCHES; k++)
            s_redeem_burst(cards, CL_BATCH_REQUESTS_MAX, (unsigned)(round * 100 + k));
        s_nap_ms(rand() % 40);
        CHECK_EQ_INT(s_proj_wait(SIGKILL), 128 + SIGKILL);
        s_proj_start("--batch-events", "64");
    }
    uint64_t head = s_daemon_head();
    REQUIRE(s_wait_caught_up(head));
    CHECK_EQ_INT(s_proj_wait(SIGTERM), 0);
    static char mine[1024], fresh[1024];
    s_proj_digests(mine, sizeof(mine));
    char out_dir[S_PATH_MAX], to[32];
    snprintf(out_dir, sizeof(out_dir), "%s/replay", harness_dir(H));
    snprintf(to, sizeof(to), "%llu", (unsigned long long)head);
    const char *argv[] = { s_build_path("tools/cardledger-replay"),
                           harness_data_dir(H),
                           out_dir,
                           "--to",
                           to,
                           "--digest",
                           NULL };
    CHECK_EQ_INT(s_exec(argv, fresh, sizeof(fresh)), 0);
    CHECK_EQ_STR(mine, fresh);
    char want[64];
    snprintf(want, sizeof(want), "balances %llu ", (unsigned long long)head);
    CHECK(strstr(mine, want) != NULL);
    s_teardown();
}

/* The whole of a file, malloc()ed, its length in *len. */
static uint8_t *
s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    REQUIRE(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    REQUIRE(n > 0 && fseek(f, 0, SEEK_SET) == 0);
    uint8_t *p = malloc((size_t)n);
    REQUIRE(p != NULL && fread(p, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/*
 * PRODUCT.md sections 6 to 8: `cardledger-journal export` writes a portable, checksummed file in
 * which no card code, PIN hash or claim hash of the journal appears, and the replay of that
 * file gives the projector's bytes. A damaged export is refused with the entry named, and the
 * replay of it makes nothing.
 */
static void
an_export_replays_to_the_projectors_bytes_and_holds_no_code_or_secret(void)
{
    s_setup();
    s_world();
    enum { CODES = 5 };
    char codes[CODES + 1][CL_CODE_MAX + 1];
    uint64_t cards[CODES + 1];
    for (int i = 0; i < CODES; i++)
        cards[i] = s_issue(i % 2 ? "alice" : "bob", 20000, codes[i]);
    /* A card with a printed code and PIN: the journal holds its PIN's hash. */
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "gift");
    snprintf(c->u.issue_card.holder, CL_HOLDER_MAX + 1, "dora");
    c->u.issue_card.channel = CL_CHANNEL_STORE;
    snprintf(c->u.issue_card.store_id, CL_ID_MAX + 1, "s2");
    c->u.issue_card.face_value_minor = 10000;
    snprintf(c->u.issue_card.import_code, CL_CODE_MAX + 1, "PRINTED-7788-9911");
    snprintf(c->u.issue_card.import_pin, CL_PIN_MAX + 1, "482913");
    cards[CODES] = s_call(c)->card.card_id;
    snprintf(codes[CODES], CL_CODE_MAX + 1, "PRINTED77889911");
    /* A gift offer: the journal holds its claim secret's hash. */
    c = s_cmd(CL_CMD_OFFER_GIFT);
    c->u.gift.card.card_id = cards[0];
    snprintf(c->u.gift.from_holder, CL_HOLDER_MAX + 1, "bob");
    snprintf(c->u.gift.to_holder, CL_HOLDER_MAX + 1, "carol");
    s_call(c);
    c = s_cmd(CL_CMD_REDEEM);
    c->u.redeem.card.card_id = cards[CODES];
    snprintf(c->u.redeem.store_id, CL_ID_MAX + 1, "s1");
    snprintf(c->u.redeem.pin, CL_PIN_MAX + 1, "482913");
    c->u.redeem.amount_minor = 2500;
    s_call(c);
    for (int k = 0; k < 4; k++)
        s_redeem_burst(CODES, CL_BATCH_REQUESTS_MAX, (unsigned)k);
    uint64_t head = s_daemon_head();
    s_proj_start(NULL, NULL);
    REQUIRE(s_wait_caught_up(head));
    CHECK_EQ_INT(s_proj_wait(SIGTERM), 0);
    static char mine[1024], out[4096];
    s_proj_digests(mine, sizeof(mine));

    char jdir[S_PATH_MAX], file[S_PATH_MAX], bad[S_PATH_MAX], rdir[S_PATH_MAX];
    snprintf(jdir, sizeof(jdir), "%s/journal", harness_data_dir(H));
    snprintf(file, sizeof(file), "%s/ledger.export", harness_dir(H));
    const char *jtool = s_build_path("tools/cardledger-journal");
    const char *exp_argv[] = { jtool, "export", jdir, file, NULL };
    CHECK_EQ_INT(s_exec(exp_argv, out, sizeof(out)), 0);
    char want[64];
    snprintf(want, sizeof(want), "%llu entries", (unsigned long long)head);
    CHECK(strstr(out, want) != NULL);

    /* What the journal holds in clear that an export must not: the codes, the hashes. */
    size_t n = 0;
    uint8_t *bytes = s_slurp(file, &n);
    for (int i = 0; i <= CODES; i++)
        CHECK(memmem(bytes, n, codes[i], strlen(codes[i])) == NULL);
    journal_t *j = NULL;
    journal_opts_t jo = { .read_only = true };
    REQUIRE(journal_open(jdir, &jo, &j) == 0);
    journal_reader_t *r = NULL;
    REQUIRE(journal_reader_open(j, 1, &r) == 0);
    static cl_event_t ev;
    journal_entry_t e;
    int pins = 0, claims = 0, code_seen = 0;
    while (journal_reader_next(r, &e) == 0) {
        REQUIRE(codec_event_decode(e.payload, e.payload_len, &ev) == 0);
        const uint8_t *secret = NULL;
        if (ev.type == CL_EV_CARD_ISSUED) {
            /* The test's list of codes is the journal's. */
            for (int i = 0; i <= CODES; i++)
                code_seen += strcmp(ev.u.card_issued.code, codes[i]) == 0;
            if (ev.u.card_issued.has_pin) {
                secret = ev.u.card_issued.pin_hash;
                pins++;
            }
        } else if (ev.type == CL_EV_GIFT_OFFERED) {
            secret = ev.u.gift_offered.claim_hash;
            claims++;
        }
        if (secret != NULL)
            CHECK(memmem(bytes, n, secret, CL_HASH_LEN) == NULL);
    }
    journal_reader_close(&r);
    journal_close(&j);
    CHECK_EQ_INT(code_seen, CODES + 1);
    CHECK_EQ_INT(pins, 1);
    CHECK_EQ_INT(claims, 1);

    /* The replay of the export: the projector's bytes. */
    snprintf(rdir, sizeof(rdir), "%s/replay-export", harness_dir(H));
    static char fresh[1024];
    const char *rep_argv[] = { s_build_path("tools/cardledger-replay"), file, rdir, "--digest",
                               NULL };
    CHECK_EQ_INT(s_exec(rep_argv, fresh, sizeof(fresh)), 0);
    CHECK_EQ_STR(fresh, mine);
    /* An OUT_DIR whose export-journal the replay did not make is refused and left as it is. */
    snprintf(rdir, sizeof(rdir), "%s/replay-not-mine", harness_dir(H));
    char foreign[S_PATH_MAX + 32];
    snprintf(foreign, sizeof(foreign), "%s/export-journal", rdir);
    REQUIRE(mkdir(rdir, 0700) == 0 && mkdir(foreign, 0700) == 0);
    const char *not_mine_argv[] = { s_build_path("tools/cardledger-replay"), file, rdir, NULL };
    CHECK_EQ_INT(s_exec(not_mine_argv, out, sizeof(out)), 1);
    struct stat st;
    CHECK(stat(foreign, &st) == 0 && S_ISDIR(st.st_mode));
    snprintf(foreign, sizeof(foreign), "%s/export-journal/data.mdb", rdir);
    CHECK(stat(foreign, &st) != 0 && errno == ENOENT);

    /* One byte changed in the middle of the entries: refused, the entry named, nothing made. */
    bytes[n / 2] ^= 0x20;
    snprintf(bad, sizeof(bad), "%s/damaged.export", harness_dir(H));
    FILE *f = fopen(bad, "wb");
    REQUIRE(f != NULL && fwrite(bytes, 1, n, f) == n && fclose(f) == 0);
    free(bytes);
    const char *ver_argv[] = { jtool, "verify", bad, NULL };
    CHECK_EQ_INT(s_exec(ver_argv, out, sizeof(out)), 3);
    snprintf(rdir, sizeof(rdir), "%s/replay-damaged", harness_dir(H));
    const char *bad_argv[] = { s_build_path("tools/cardledger-replay"), bad, rdir, NULL };
    CHECK_EQ_INT(s_exec(bad_argv, out, sizeof(out)), 1);
    CHECK(stat(rdir, &st) != 0 && errno == ENOENT);
    snprintf(rdir, sizeof(rdir), "%s/imported", harness_dir(H));
    const char *imp_argv[] = { jtool, "import", bad, rdir, NULL };
    CHECK_EQ_INT(s_exec(imp_argv, out, sizeof(out)), 3);
    CHECK(stat(rdir, &st) != 0 && errno == ENOENT);
    s_teardown();
}

static void
schema_bump_is_rebuilt_while_queries_are_answered(void)
{
    s_setup();
    s_world();
    uint64_t cards = 40;
    for (uint64_t i = 0; i < cards; i++)
        s_issue("alice", 10000, NULL);
    for (int k = 0; k < 8; k++)
        s_redeem_burst(cards, CL_BATCH_REQUESTS_MAX, (unsigned)k);
    s_proj_start(NULL, NULL);
    uint64_t head = s_daemon_head();
    REQUIRE(s_wait_caught_up(head));
    CHECK_EQ_INT(s_proj_wait(SIGTERM), 0);

    /* Restart with analytics at the next schema version; the rebuild is held to 1000 events/s
     * so that it surely takes a while (about 2 s). */
    s_proj_start("--schema-bump=analytics", "--rebuild-rate=1000");
    s_proj_ready();
    Cardledger__V1__Request rq;
    char m1[] = "m1";
    Cardledger__V1__Analytics aq;
    cardledger__v1__analytics__init(&aq);
    aq.merchant_id = m1;
    bool saw_rebuilding = false, saw_old = false, saw_new = false;
    int64_t until = s_mono_ms() + CATCH_UP_MS;
    while (s_mono_ms() < until && !saw_new) {
        Cardledger__V1__ReplyBatch *b = s_status_query(QUERY_WAIT_MS);
        const Cardledger__V1__Reply *r = s_one(b);
        REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_PROJECTIONS);
        const Cardledger__V1__ProjectionInfo *an = r->projections->projections[2];
        if (an->rebuilding) {
            saw_rebuilding = true;
            CHECK_EQ_U64(an->schema_version, 1);
            CHECK_EQ_U64(an->rebuild_schema_version, 2);
            CHECK(an->rebuild_checkpoint_seq <= head);
        }
        bool done = !an->rebuilding && an->schema_version == 2;
        cardledger__v1__reply_batch__free_unpacked(b, NULL);
        /* Analytics answers throughout: the old version until the new one takes over. */
        s_request(&rq);
        rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_ANALYTICS;
        rq.analytics = &aq;
        b = s_ask(&rq, QUERY_WAIT_MS);
        r = s_one(b);
        CHECK_EQ_INT(r->status, CARDLEDGER__V1__STATUS__STATUS_OK);
        CHECK_EQ_U64(r->as_of_seq, head);
        REQUIRE(r->result_case == CARDLEDGER__V1__REPLY__RESULT_ANALYTICS);
        REQUIRE(r->analytics->n_rows == 1);
        CHECK_EQ_U64(r->analytics->rows[0]->redemption_count, 8 * CL_BATCH_REQUESTS_MAX);
        cardledger__v1__reply_batch__free_unpacked(b, NULL);
        if (done)
            saw_new = true;
        else
            saw_old = true;
    }
    CHECK(saw_rebuilding);
    CHECK(saw_old);
    CHECK(saw_new);
    /* New events after the takeover are folded by the new version. */
    s_redeem_burst(cards, 10, 999);
    head = s_daemon_head();
    REQUIRE(s_wait_caught_up(head));
    /* An operator's rebuild at the same version. */
    Cardledger__V1__RebuildProjection rb;
    cardledger__v1__rebuild_projection__init(&rb);
    char name[] = "stores";
    rb.name = name;
    s_request(&rq);
    rq.command_case = CARDLEDGER__V1__REQUEST__COMMAND_REBUILD_PROJECTION;
    rq.rebuild_projection = &rb;
    Cardledger__V1__ReplyBatch *b = s_ask(&rq, QUERY_WAIT_MS);
    CHECK_EQ_INT(s_one(b)->status, CARDLEDGER__V1__STATUS__STATUS_OK);
    cardledger__v1__reply_batch__free_unpacked(b, NULL);
    REQUIRE(s_wait_caught_up(head));
    CHECK_EQ_INT(s_proj_wait(SIGTERM), 0);
    char path[S_PATH_MAX + 64];
    struct stat st;
    snprintf(path, sizeof(path), "%s/analytics/s2-g2", proj_data);
    CHECK(stat(path, &st) == 0);
    snprintf(path, sizeof(path), "%s/analytics/s1-g1", proj_data);
    CHECK(stat(path, &st) != 0);
    snprintf(path, sizeof(path), "%s/stores/s1-g2", proj_data);
    CHECK(stat(path, &st) == 0);
    s_teardown();
}

static void
projector_refuses_endpoints_beyond_loopback_and_bad_usage(void)
{
    static char out[4096];
    const char *argv1[] = { s_build_path("projections/cardledger-projector"),
                            "--journal",
                            "/tmp",
                            "--data",
                            "/tmp/nope",
                            "--listen",
                            "tcp://0.0.0.0:7702",
                            NULL };
    CHECK_EQ_INT(s_exec(argv1, out, sizeof(out)), 64);
    const char *argv2[] = { s_build_path("projections/cardledger-projector"), "--data", "/tmp/x",
                            NULL };
    CHECK_EQ_INT(s_exec(argv2, out, sizeof(out)), 64);
    const char *argv3[] = { s_build_path("projections/cardledger-projector"), "--help", NULL };
    CHECK_EQ_INT(s_exec(argv3, out, sizeof(out)), 0);
    CHECK(strstr(out, "--subscribe") != NULL);
    const char *argv4[] = { s_build_path("projections/cardledger-projector"), "--version", NULL };
    CHECK_EQ_INT(s_exec(argv4, out, sizeof(out)), 0);
    CHECK(strstr(out, "cardledger-projector") != NULL);
    const char *argv5[] = { s_build_path("projections/cardledger-projector"),
                            "--journal",
                            "/tmp",
                            "--data",
                            "/tmp/nope",
                            "--schema-bump",
                            "nothing",
                            NULL };
    CHECK_EQ_INT(s_exec(argv5, out, sizeof(out)), 64);
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static const check_case_t cases[] = {
        CHECK_CASE(projector_refuses_endpoints_beyond_loopback_and_bad_usage),
        CHECK_CASE(projector_answers_every_query_with_the_checkpoint_it_reflects),
        CHECK_CASE(killed_projector_catches_up_to_the_bytes_of_a_fresh_replay),
        CHECK_CASE(an_export_replays_to_the_projectors_bytes_and_holds_no_code_or_secret),
        CHECK_CASE(schema_bump_is_rebuilt_while_queries_are_answered),
    };
    int rc = check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
    s_teardown(); /* after a case that failed part-way */
    if (zctx != NULL)
        zmq_ctx_term(zctx);
    return rc;
}
