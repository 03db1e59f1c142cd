/*
 * test-daemon: cardledgerd as a process, over ZeroMQ on ipc:// endpoints in a temporary
 * directory (tests/harness.h).
 *
 * What it shows: the daemon starts, answers and refuses what it must refuse at start-up;
 * idempotent retries hold within a message, across messages and across restarts; concurrent
 * clients never double-spend; kill -9 under load never loses an acknowledged command and the
 * restarted state equals a full replay; events are published after the commit with gap-free
 * sequence numbers and merchant topics; timers fire when a test moves the clock (no test sleeps
 * on a clock); SIGTERM stops cleanly.
 *
 * Built twice (tests/meson.build): as test-daemon in the integration suite, and with
 * TEST_DAEMON_SLOW as test-daemon-slow, which runs the long kill -9 loop and the 1M-card restart
 * measurement only.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <zmq.h>

#include "check.h"
#include "codec.h"
#include "harness.h"
#include "journal.h"

#define T0         HARNESS_CLOCK_START_US_DEFAULT
#define HOUR_US    (3600LL * 1000000LL)
#define DAY_US     (24 * HOUR_US)
#define TIMEOUT_MS 20000
#define OUT_MAX    4096

static harness_t *H;
static harness_client_t *C;
static cl_reply_t R[CL_BATCH_REQUESTS_MAX];
static unsigned s_ids;

/* ---- Helpers ------------------------------------------------------------------------------- */

static double
s_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
s_down(void)
{
    harness_client_close(&C);
    harness_destroy(&H);
}

static void
s_up(const char *extra_args)
{
    s_down();
    harness_opts_t o = { .test_clock_start_us = 0, .extra_args = extra_args };
    REQUIRE(harness_start(&o, &H) == 0);
    REQUIRE(harness_client_open(harness_cmd_endpoint(H), &C) == 0);
}

/* Reconnects the client after a restart (the old socket may hold a reply of a dead daemon). */
static void
s_reconnect(void)
{
    harness_client_close(&C);
    REQUIRE(harness_client_open(harness_cmd_endpoint(H), &C) == 0);
}

static cl_command_t
s_cmd(cl_command_type_t type)
{
    cl_command_t c;
    memset(&c, 0, sizeof(c));
    c.type = type;
    snprintf(c.request_id, sizeof(c.request_id), "t-%u-%u", (unsigned)getpid(), ++s_ids);
    return c;
}

/* Sends one command and returns its reply (R[0]). */
static const cl_reply_t *
s_call(const cl_command_t *c)
{
    REQUIRE(harness_client_call(C, c, 1, R, TIMEOUT_MS) == 0);
    return &R[0];
}

#define CHECK_STATUS(r, want)                                                               \
    do {                                                                                    \
        const cl_reply_t *st_ = (r);                                                        \
        if (st_->status != (want))                                                          \
            check_fail(__FILE__, __LINE__, "expected %s, got %s: %s", cl_status_name(want), \
                       cl_status_name(st_->status), st_->message);                          \
    } while (0)

static void
s_ok(const cl_command_t *c)
{
    CHECK_STATUS(s_call(c), CL_OK);
}

static const cl_reply_t *
s_status(void)
{
    cl_command_t c = s_cmd(CL_CMD_GET_STATUS);
    const cl_reply_t *r = s_call(&c);
    CHECK_STATUS(r, CL_OK);
    return r;
}

static uint64_t
s_head(void)
{
    return s_status()->status_head_seq;
}

static cl_program_spec_t
s_spec(const char *merchant, const char *program)
{
    cl_program_spec_t s;
    memset(&s, 0, sizeof(s));
    snprintf(s.merchant_id, sizeof(s.merchant_id), "%s", merchant);
    snprintf(s.program_id, sizeof(s.program_id), "%s", program);
    snprintf(s.name, sizeof(s.name), "Program %s", program);
    snprintf(s.currency, sizeof(s.currency), "CNY");
    s.kind = CL_KIND_STORED_VALUE;
    s.custom_min_minor = 1;
    s.custom_max_minor = 100000000;
    s.accept_scope = CL_ACCEPT_ALL;
    s.transferable = true;
    s.valid_days = 365;
    s.remind_days_before_expiry = 30;
    return s;
}

static void
s_merchant(const char *m, const char *store)
{
    cl_command_t c = s_cmd(CL_CMD_REGISTER_MERCHANT);
    snprintf(c.u.register_merchant.merchant_id, CL_ID_MAX + 1, "%s", m);
    snprintf(c.u.register_merchant.name, CL_NAME_MAX + 1, "Merchant %s", m);
    s_ok(&c);
    c = s_cmd(CL_CMD_REGISTER_STORE);
    snprintf(c.u.register_store.merchant_id, CL_ID_MAX + 1, "%s", m);
    snprintf(c.u.register_store.store_id, CL_ID_MAX + 1, "%s", store);
    snprintf(c.u.register_store.name, CL_NAME_MAX + 1, "Store %s", store);
    snprintf(c.u.register_store.region, CL_REGION_MAX + 1, "310000");
    s_ok(&c);
}

static void
s_program(const cl_program_spec_t *spec)
{
    cl_command_t c = s_cmd(CL_CMD_DEFINE_PROGRAM);
    c.u.program = *spec;
    s_ok(&c);
}

/* Merchant m1 with store s1 and the stored-value program "gift". */
static void
s_world(void)
{
    s_merchant("m1", "s1");
    cl_program_spec_t spec = s_spec("m1", "gift");
    s_program(&spec);
}

static cl_command_t
s_issue_cmd(const char *m, const char *program, int64_t face)
{
    cl_command_t c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c.u.issue_card.merchant_id, CL_ID_MAX + 1, "%s", m);
    snprintf(c.u.issue_card.program_id, CL_ID_MAX + 1, "%s", program);
    snprintf(c.u.issue_card.holder, CL_HOLDER_MAX + 1, "holder-1");
    c.u.issue_card.channel = CL_CHANNEL_ONLINE;
    snprintf(c.u.issue_card.region, CL_REGION_MAX + 1, "310000");
    c.u.issue_card.face_value_minor = face;
    return c;
}

/* An IssueBatch of n m1/gift rows of 10,000 each, keyed "<key_prefix><i>", into rows[n]. */
static cl_command_t
s_batch_cmd(cl_cmd_issue_card_t *rows, int n, const char *key_prefix)
{
    cl_command_t c = s_cmd(CL_CMD_ISSUE_BATCH);
    snprintf(c.u.issue_batch.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c.u.issue_batch.program_id, CL_ID_MAX + 1, "gift");
    c.u.issue_batch.rows_count = (uint32_t)n;
    for (int i = 0; i < n; i++) {
        cl_command_t one = s_issue_cmd("m1", "gift", 10000);
        rows[i] = one.u.issue_card;
        int len = snprintf(rows[i].row_key, CL_ID_MAX + 1, "%s%d", key_prefix, i);
        REQUIRE(len > 0 && len <= CL_ID_MAX); /* a cut key would name another row */
    }
    c.batch_rows = rows;
    return c;
}

static uint64_t
s_issue(const char *m, const char *program, int64_t face)
{
    cl_command_t c = s_issue_cmd(m, program, face);
    const cl_reply_t *r = s_call(&c);
    CHECK_STATUS(r, CL_OK);
    return r->card.card_id;
}

static cl_command_t
s_redeem_cmd(uint64_t card_id, const char *store, int64_t amount)
{
    cl_command_t c = s_cmd(CL_CMD_REDEEM);
    c.u.redeem.card.card_id = card_id;
    snprintf(c.u.redeem.store_id, CL_ID_MAX + 1, "%s", store);
    snprintf(c.u.redeem.order_ref, CL_ORDER_REF_MAX + 1, "order-%u", s_ids);
    c.u.redeem.amount_minor = amount;
    return c;
}

static const cl_reply_t *
s_get_card(uint64_t card_id)
{
    cl_command_t c = s_cmd(CL_CMD_GET_CARD);
    c.u.card_flag.card.card_id = card_id;
    const cl_reply_t *r = s_call(&c);
    CHECK_STATUS(r, CL_OK);
    return r;
}

static int64_t
s_balance(uint64_t card_id)
{
    return s_get_card(card_id)->card.balance_minor;
}

static void
s_advance(int64_t now_us)
{
    cl_command_t c = s_cmd(CL_CMD_ADVANCE_CLOCK);
    c.u.set_now_us = now_us;
    s_ok(&c);
}

/* Runs cardledgerd --print-digest [--full-replay] on the harness's data directory. */
static void
s_digest(bool full, char out[OUT_MAX])
{
    const char *args[] = { "--data", harness_data_dir(H), "--print-digest",
                           full ? "--full-replay" : NULL, NULL };
    int status = -1;
    char buf[OUT_MAX];
    REQUIRE(harness_exec(args, 60000, buf, sizeof(buf), &status) == 0);
    if (status != 0)
        check_fail(__FILE__, __LINE__, "--print-digest exited %d: %s", status, buf);
    /* The digest line is the last line of the output (logs come first, on stderr). */
    char *line = buf;
    for (char *p = strchr(buf, '\n'); p != NULL && p[1] != '\0'; p = strchr(p + 1, '\n'))
        line = p + 1;
    snprintf(out, OUT_MAX, "%s", line);
}

static uint64_t
s_digest_head(const char *digest_line)
{
    const char *sp = strchr(digest_line, ' ');
    return sp != NULL ? strtoull(sp + 1, NULL, 10) : 0;
}

static void
s_check_digests_equal(void)
{
    char a[OUT_MAX], b[OUT_MAX];
    s_digest(false, a);
    s_digest(true, b);
    CHECK_EQ_STR(a, b);
    CHECK(strlen(a) > 32);
}

static int
s_journal_verify(uint64_t *out_head)
{
    char path[512];
    journal_t *j = NULL;
    journal_opts_t o;
    journal_verify_stats_t st;
    uint64_t bad = 0;
    memset(&o, 0, sizeof(o));
    o.read_only = true;
    snprintf(path, sizeof(path), "%s/journal", harness_data_dir(H));
    int rc = journal_open(path, &o, &j);
    if (rc == 0)
        rc = journal_verify(j, 0, 0, &bad, &st);
    if (rc != 0)
        fprintf(stdout, "  journal_verify: %s (bad seq %llu)\n", journal_strerror(rc),
                (unsigned long long)bad);
    else if (out_head != NULL)
        *out_head = st.last_seq;
    journal_close(&j);
    return rc;
}

/* ---- Subscribers --------------------------------------------------------------------------- */

typedef struct sub {
    void *zctx;
    void *sock;
} sub_t;

static void
s_sub_open(sub_t *s, const char *const *topics)
{
    int linger = 0;
    s->zctx = zmq_ctx_new();
    REQUIRE(s->zctx != NULL);
    s->sock = zmq_socket(s->zctx, ZMQ_SUB);
    REQUIRE(s->sock != NULL);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof(linger));
    for (size_t i = 0; topics[i] != NULL; i++)
        REQUIRE(zmq_setsockopt(s->sock, ZMQ_SUBSCRIBE, topics[i], strlen(topics[i])) == 0);
    REQUIRE(zmq_connect(s->sock, harness_pub_endpoint(H)) == 0);
}

static void
s_sub_close(sub_t *s)
{
    if (s->sock != NULL)
        zmq_close(s->sock);
    if (s->zctx != NULL)
        zmq_ctx_term(s->zctx);
    memset(s, 0, sizeof(*s));
}

/* One published event: its topic, the decoded journal header and the decoded payload. */
typedef struct pub_event {
    char topic[128];
    uint64_t seq;
    int64_t at_us;
    uint32_t len;
    uint8_t hash[16];
    cl_event_t ev;
} pub_event_t;

static uint64_t
s_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Receives one event within timeout_ms. Returns 0 or -1. */
static int
s_sub_recv(sub_t *s, int timeout_ms, pub_event_t *out)
{
    zmq_pollitem_t item = { .socket = s->sock, .events = ZMQ_POLLIN };
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return -1;
    zmq_msg_t topic, entry;
    zmq_msg_init(&topic);
    zmq_msg_init(&entry);
    int rc = -1;
    if (zmq_msg_recv(&topic, s->sock, 0) >= 0 && zmq_msg_more(&topic) &&
        zmq_msg_recv(&entry, s->sock, 0) >= 0 && !zmq_msg_more(&entry) &&
        zmq_msg_size(&entry) >= JOURNAL_HEADER_SIZE) {
        const uint8_t *p = zmq_msg_data(&entry);
        size_t tlen = zmq_msg_size(&topic) < sizeof(out->topic) - 1 ? zmq_msg_size(&topic)
                                                                    : sizeof(out->topic) - 1;
        memcpy(out->topic, zmq_msg_data(&topic), tlen);
        out->topic[tlen] = '\0';
        out->seq = s_le(p, 8);
        out->at_us = (int64_t)s_le(p + 8, 8);
        out->len = (uint32_t)s_le(p + 16, 4);
        memcpy(out->hash, p + 24, 16);
        if (out->len == zmq_msg_size(&entry) - JOURNAL_HEADER_SIZE &&
            codec_event_decode(p + JOURNAL_HEADER_SIZE, out->len, &out->ev) == 0)
            rc = 0;
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&entry);
    return rc;
}

/*
 * Waits until the subscribers receive events, which shows their subscriptions reached the
 * daemon: sends AdvanceClock (to the current time, which appends a ClockAdvanced) until each
 * has seen one, then drains each up to the last ClockAdvanced sent. No sleeping: each try waits
 * on the socket.
 */
static void
s_sub_sync(sub_t *subs, size_t n)
{
    uint64_t seen[8] = { 0 }; /* the last sequence each subscriber received */
    uint64_t last = 0;
    pub_event_t e;
    REQUIRE(n <= 8);
    for (int attempt = 0; attempt < 200; attempt++) {
        cl_command_t c = s_cmd(CL_CMD_ADVANCE_CLOCK);
        c.u.set_now_us = s_status()->status_now_us;
        const cl_reply_t *r = s_call(&c);
        CHECK_STATUS(r, CL_OK);
        last = r->last_seq;
        bool all = true;
        for (size_t i = 0; i < n; i++) {
            if (seen[i] == 0 && s_sub_recv(&subs[i], 50, &e) == 0)
                seen[i] = e.seq;
            all = all && seen[i] != 0;
        }
        if (all)
            break;
    }
    for (size_t i = 0; i < n; i++) {
        REQUIRE(seen[i] != 0);
        /* Drain up to the last ClockAdvanced. */
        while (seen[i] < last) {
            REQUIRE(s_sub_recv(&subs[i], 5000, &e) == 0);
            seen[i] = e.seq;
        }
    }
}

/* ---- Start-up ------------------------------------------------------------------------------ */

static void
daemon_starts_and_answers_get_status(void)
{
    s_up(NULL);
    const cl_reply_t *r = s_status();
    CHECK_EQ_U64(r->status_head_seq, 0);
    CHECK_EQ_INT(r->status_now_us, T0);
    CHECK_EQ_U64(r->status_cards, 0);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_down();
}

/* GetCard of a card by its code. */
static cl_command_t
s_get_by_code(const char *code)
{
    cl_command_t c = s_cmd(CL_CMD_GET_CARD);
    snprintf(c.u.card_flag.card.code, CL_CODE_MAX + 1, "%s", code);
    return c;
}

/*
 * PRODUCT.md section 8: codes are not found by guessing. A principal that named
 * --unknown-cards-per-s codes of no card within a second is refused (rate_limited) whenever it
 * names a code, a real one too, until its guesses age: the refusal changes nothing and is not
 * remembered, so the same request id goes through afterwards. Cards named by id are not
 * guesses.
 */
static void
guessing_codes_is_refused_as_rate_limited_until_the_guesses_age(void)
{
    s_up("--unknown-cards-per-s 5");
    s_world();
    cl_command_t issue = s_issue_cmd("m1", "gift", 20000);
    const cl_reply_t *ir = s_call(&issue);
    CHECK_STATUS(ir, CL_OK);
    uint64_t card = ir->card.card_id;
    char code[CL_CODE_MAX + 1];
    snprintf(code, sizeof(code), "%s", ir->code);
    for (int i = 0; i < 5; i++) {
        char guess[32];
        snprintf(guess, sizeof(guess), "99999999999999999%d", i);
        cl_command_t g = s_get_by_code(guess);
        CHECK_STATUS(s_call(&g), CL_UNKNOWN_CARD);
    }
    uint64_t head = s_head();
    cl_command_t real = s_get_by_code(code);
    CHECK_STATUS(s_call(&real), CL_RATE_LIMITED);
    cl_command_t redeem = s_redeem_cmd(card, "s1", 500);
    memset(&redeem.u.redeem.card, 0, sizeof(redeem.u.redeem.card));
    snprintf(redeem.u.redeem.card.code, CL_CODE_MAX + 1, "%s", code);
    CHECK_STATUS(s_call(&redeem), CL_RATE_LIMITED);
    CHECK_EQ_U64(s_head(), head);
    CHECK_EQ_INT(s_balance(card), 20000); /* by id: not a guess, answered */
    /* A second later (the test clock), one guess has aged per fifth of a second. */
    s_advance(T0 + 1000000);
    CHECK_STATUS(s_call(&real), CL_OK);
    CHECK_STATUS(s_call(&redeem), CL_OK); /* the same request id, applied once now */
    CHECK_EQ_INT(R[0].card.balance_minor, 19500);
    CHECK_STATUS(s_call(&redeem), CL_OK);
    CHECK_EQ_INT(R[0].card.balance_minor, 19500);
    s_down();
}

static void
non_loopback_tcp_endpoints_are_refused_at_start(void)
{
    char dir[] = "/tmp/cardledger-test-XXXXXX";
    char data[64], out[OUT_MAX];
    int status = -1;
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(data, sizeof(data), "%s/data", dir);
    static const char *const bad[] = { "tcp://0.0.0.0:7700", "tcp://*:7700",
                                       "tcp://192.168.1.10:7700", "tcp://[::]:7700",
                                       "udp://127.0.0.1:7700" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *args[] = { "--data", data,        "--listen",
                               bad[i],   "--publish", "ipc:///nonexistent",
                               NULL };
        REQUIRE(harness_exec(args, 10000, out, sizeof(out), &status) == 0);
        CHECK_EQ_INT(status, 64);
        CHECK(strstr(out, "refusing to start") != NULL);
        CHECK(strstr(out, bad[i]) != NULL);
        /* The refusal comes before anything is written. */
        CHECK(access(data, F_OK) != 0);
    }
    const char *args[] = {
        "--data", data, "--listen", "ipc:///tmp/x.sock", "--publish", "tcp://10.0.0.1:7701", NULL
    };
    REQUIRE(harness_exec(args, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "loopback") != NULL);
    rmdir(dir);
}

static void
bad_flags_and_config_lines_are_refused(void)
{
    char out[OUT_MAX];
    int status = -1;
    const char *a1[] = { "--data", "/tmp/x", "--checkpoint-events", "lots", NULL };
    REQUIRE(harness_exec(a1, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "--checkpoint-events") != NULL);
    const char *a1b[] = { "--data", "/tmp/x", "--commit-events", "32769", NULL };
    REQUIRE(harness_exec(a1b, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "--commit-events") != NULL);
    const char *a2[] = { "--no-such-flag", NULL };
    REQUIRE(harness_exec(a2, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    const char *a3[] = { "--help", NULL };
    REQUIRE(harness_exec(a3, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 0);
    CHECK(strstr(out, "--listen") != NULL);
    const char *a4[] = { "--version", NULL };
    REQUIRE(harness_exec(a4, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 0);
    CHECK(strstr(out, "cardledgerd ") == out);

    char path[] = "/tmp/cardledger-test-conf-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const char conf[] = "# a comment\ndata = /tmp/x\nlisten = tcp://0.0.0.0:1\n";
    REQUIRE(write(fd, conf, sizeof(conf) - 1) == (ssize_t)(sizeof(conf) - 1));
    close(fd);
    /* The file's listen endpoint is refused ... */
    const char *a5[] = { "--config", path, NULL };
    REQUIRE(harness_exec(a5, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, "tcp://0.0.0.0:1") != NULL);
    /* ... and an unknown key names its line. */
    fd = open(path, O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    const char conf2[] = "data = /tmp/x\nlisen = ipc:///tmp/y\n";
    REQUIRE(write(fd, conf2, sizeof(conf2) - 1) == (ssize_t)(sizeof(conf2) - 1));
    close(fd);
    REQUIRE(harness_exec(a5, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 64);
    CHECK(strstr(out, ":2: unknown setting \"lisen\"") != NULL);
    unlink(path);
}

static void
journal_of_another_format_version_is_refused(void)
{
    s_up(NULL);
    s_world();
    CHECK_EQ_INT(harness_stop(H), 0);

    /* Rewrite journal.meta "format" as version 2, as a future build would have written it. */
    char path[512];
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    snprintf(path, sizeof(path), "%s/journal", harness_data_dir(H));
    REQUIRE(mdb_env_create(&env) == 0);
    REQUIRE(mdb_env_set_maxdbs(env, 64) == 0);
    REQUIRE(mdb_env_open(env, path, 0, 0600) == 0);
    REQUIRE(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    REQUIRE(mdb_dbi_open(txn, JOURNAL_DB_META, 0, &dbi) == 0);
    uint8_t two[4] = { 2, 0, 0, 0 };
    MDB_val k = { 6, (void *)(uintptr_t) "format" }, v = { sizeof(two), two };
    REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);

    const char *args[] = { "--data",    harness_data_dir(H),
                           "--listen",  harness_cmd_endpoint(H),
                           "--publish", harness_pub_endpoint(H),
                           NULL };
    char out[OUT_MAX];
    int status = -1;
    REQUIRE(harness_exec(args, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 2);
    CHECK(strstr(out, "not a journal this cardledgerd understands") != NULL);
    s_down();
}

static void
second_daemon_on_the_same_data_directory_is_refused(void)
{
    s_up(NULL);
    char cmd[512], pub[512], out[OUT_MAX];
    int status = -1;
    snprintf(cmd, sizeof(cmd), "ipc://%s/other-cmd.sock", harness_dir(H));
    snprintf(pub, sizeof(pub), "ipc://%s/other-pub.sock", harness_dir(H));
    const char *args[] = { "--data", harness_data_dir(H), "--listen", cmd, "--publish", pub, NULL };
    REQUIRE(harness_exec(args, 10000, out, sizeof(out), &status) == 0);
    CHECK_EQ_INT(status, 1);
    CHECK(strstr(out, "another cardledgerd is running") != NULL);
    s_status();
    s_down();
}

/* ---- Messages ------------------------------------------------------------------------------ */

static void
malformed_and_oversized_messages_get_one_refusal(void)
{
    s_up(NULL);
    size_t n = 0;
    static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    REQUIRE(harness_client_send_raw(C, junk, sizeof(junk)) == 0);
    REQUIRE(harness_client_recv(C, TIMEOUT_MS, R, 4, &n) == 0);
    CHECK_EQ_INT(n, 1);
    CHECK_STATUS(&R[0], CL_MALFORMED);
    CHECK(R[0].message[0] != '\0');

    /* CL_BATCH_REQUESTS_MAX + 1 requests in one message. */
    cl_command_t c = s_cmd(CL_CMD_GET_STATUS);
    uint8_t one[128];
    size_t one_len = 0;
    REQUIRE(codec_request_encode(&c, one, sizeof(one), &one_len) == 0);
    enum { N = CL_BATCH_REQUESTS_MAX + 1 };
    static const uint8_t *reqs[N];
    static size_t lens[N];
    static uint8_t frame[N * 160];
    size_t frame_len = 0;
    for (size_t i = 0; i < N; i++) {
        reqs[i] = one;
        lens[i] = one_len;
    }
    REQUIRE(codec_request_batch_frame(reqs, lens, N, frame, sizeof(frame), &frame_len) == 0);
    REQUIRE(harness_client_send_raw(C, frame, frame_len) == 0);
    REQUIRE(harness_client_recv(C, TIMEOUT_MS, R, 4, &n) == 0);
    CHECK_EQ_INT(n, 1);
    CHECK_STATUS(&R[0], CL_TOO_LARGE);

    /* A frame over CL_FRAME_MAX_BYTES is cut off by libzmq (ZMQ_MAXMSGSIZE): that peer is
     * disconnected, nothing is decided, and everyone else is still served. */
    harness_client_t *big = NULL;
    uint8_t *huge = calloc(1, (size_t)CL_FRAME_MAX_BYTES + 1);
    REQUIRE(huge != NULL);
    REQUIRE(harness_client_open(harness_cmd_endpoint(H), &big) == 0);
    REQUIRE(harness_client_send_raw(big, huge, (size_t)CL_FRAME_MAX_BYTES + 1) == 0);
    free(huge);
    s_status();
    harness_client_close(&big);

    /* A request without an id is refused alone; its neighbours in the message still run. */
    cl_command_t two[2] = { s_cmd(CL_CMD_GET_STATUS), s_cmd(CL_CMD_GET_STATUS) };
    two[0].request_id[0] = '\0';
    REQUIRE(harness_client_call(C, two, 2, R, TIMEOUT_MS) == 0);
    CHECK_STATUS(&R[0], CL_INVALID_ARGUMENT);
    CHECK_STATUS(&R[1], CL_OK);
    CHECK_EQ_U64(s_head(), 0);
    s_down();
}

/* ---- Idempotency --------------------------------------------------------------------------- */

/* Checks that request c (already applied with reply `first`) replays and reuse is refused. */
static void
s_check_idempotent(const cl_command_t *c, const cl_reply_t *first, uint64_t card, int64_t bal)
{
    uint64_t head = s_head();
    const cl_reply_t *r = s_call(c);
    CHECK_STATUS(r, first->status);
    CHECK(r->replayed);
    CHECK_EQ_STR(r->request_id, c->request_id);
    CHECK_EQ_U64(r->last_seq, first->last_seq);
    CHECK_EQ_INT(r->card.balance_minor, first->card.balance_minor);
    CHECK_EQ_U64(s_head(), head);

    cl_command_t other = *c;
    other.u.redeem.amount_minor += 1;
    r = s_call(&other);
    CHECK_STATUS(r, CL_REQUEST_ID_REUSED);
    CHECK(!r->replayed);
    CHECK_EQ_U64(s_head(), head);
    CHECK_EQ_INT(s_balance(card), bal);

    cl_command_t q = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "%s", c->request_id);
    r = s_call(&q);
    CHECK_STATUS(r, CL_OK);
    CHECK(r->found);
    cl_reply_t stored;
    REQUIRE(r->stored_reply != NULL);
    REQUIRE(codec_reply_decode(r->stored_reply, r->stored_reply_len, &stored, NULL, 0) == 0);
    CHECK_EQ_STR(stored.request_id, c->request_id);
    CHECK_EQ_INT(stored.status, first->status);
    CHECK_EQ_U64(stored.last_seq, first->last_seq);
}

/* The world, a card of 10,000 and a redeem of 2,500 on it: returns the card, with the redeem
 * command and its first reply. */
static uint64_t
s_card_redeemed(cl_command_t *redeem, cl_reply_t *first)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    *redeem = s_redeem_cmd(card, "s1", 2500);
    *first = *s_call(redeem);
    CHECK_STATUS(first, CL_OK);
    CHECK(!first->replayed);
    CHECK_EQ_INT(first->card.balance_minor, 7500);
    return card;
}

static void
same_request_id_replays_the_first_reply_and_appends_nothing(void)
{
    s_up(NULL);
    cl_command_t redeem;
    cl_reply_t first;
    uint64_t card = s_card_redeemed(&redeem, &first);
    s_check_idempotent(&redeem, &first, card, 7500);

    /* A refusal is an answer too: it replays as the same refusal. */
    cl_command_t too_much = s_redeem_cmd(card, "s1", 1000000);
    cl_reply_t refused = *s_call(&too_much);
    CHECK_STATUS(&refused, CL_INSUFFICIENT_BALANCE);
    s_check_idempotent(&too_much, &refused, card, 7500);

    /* Both hold across a clean restart ... */
    CHECK_EQ_INT(harness_stop(H), 0);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    s_check_idempotent(&redeem, &first, card, 7500);
    s_check_idempotent(&too_much, &refused, card, 7500);

    /* ... and across kill -9. */
    REQUIRE(harness_kill9(H) == 0);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    s_check_idempotent(&redeem, &first, card, 7500);

    /* An unknown id is not found. */
    cl_command_t q = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "never-sent");
    const cl_reply_t *r = s_call(&q);
    CHECK_STATUS(r, CL_OK);
    CHECK(!r->found);
    s_down();
}

/* The raw idempotency record of a request id, copied out of the daemon's environment. */
static size_t
s_raw_idem_record(const char *request_id, uint8_t *out, size_t cap)
{
    char path[512];
    journal_t *j = NULL;
    journal_opts_t o;
    memset(&o, 0, sizeof(o));
    o.read_only = true;
    snprintf(path, sizeof(path), "%s/journal", harness_data_dir(H));
    REQUIRE(journal_open(path, &o, &j) == 0);
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_val k = { strlen(request_id), (void *)(uintptr_t)request_id }, v = { 0, NULL };
    size_t n = 0;
    REQUIRE(journal_read_txn_begin(j, &txn) == 0);
    if (mdb_dbi_open(txn, "idempotency", 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0 &&
        v.mv_size <= cap) {
        memcpy(out, v.mv_data, v.mv_size);
        n = v.mv_size;
    }
    journal_read_txn_end(j, &txn);
    journal_close(&j);
    return n;
}

/* The stored reply of a request id as GetRequest gives it, copied into out; its length. */
static size_t
s_stored_reply(const char *request_id, uint8_t *out, size_t cap)
{
    cl_command_t q = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "%s", request_id);
    const cl_reply_t *r = s_call(&q);
    CHECK_STATUS(r, CL_OK);
    REQUIRE(r->found && r->stored_reply != NULL && r->stored_reply_len <= cap);
    memcpy(out, r->stored_reply, r->stored_reply_len);
    return r->stored_reply_len;
}

typedef struct s_raw_put {
    const char *request_id;
    const uint8_t *value;
    size_t len;
} s_raw_put_t;

static int
s_raw_put_fill(journal_txn_t *jt, void *ctx)
{
    const s_raw_put_t *p = ctx;
    MDB_txn *txn = journal_txn_mdb(jt);
    MDB_dbi dbi;
    MDB_val k = { strlen(p->request_id), (void *)(uintptr_t)p->request_id };
    MDB_val v = { p->len, (void *)(uintptr_t)p->value };
    int rc = mdb_dbi_open(txn, "idempotency", 0, &dbi);
    return rc != 0 ? rc : mdb_put(txn, dbi, &k, &v, 0);
}

/* Replaces the raw idempotency record of a request id (the daemon stopped). */
static void
s_put_raw_idem_record(const char *request_id, const uint8_t *value, size_t len)
{
    char path[512];
    journal_t *j = NULL;
    journal_opts_t o;
    memset(&o, 0, sizeof(o));
    snprintf(path, sizeof(path), "%s/journal", harness_data_dir(H));
    REQUIRE(journal_open(path, &o, &j) == 0);
    s_raw_put_t p = { request_id, value, len };
    CHECK_EQ_INT(journal_write(j, s_raw_put_fill, &p, NULL), 0);
    journal_close(&j);
}

/*
 * A record keeps the reply without its request id (version 3: the key holds it), and a retry
 * gets it back in front; a record of the older form (version 2, the whole reply), as a daemon
 * before 2026-12-07 wrote it, replays the same.
 */
static void
stored_replies_leave_out_the_request_id_and_old_whole_ones_still_replay(void)
{
    s_up(NULL);
    cl_command_t redeem;
    cl_reply_t first;
    uint64_t card = s_card_redeemed(&redeem, &first);
    CHECK_EQ_INT(harness_stop(H), 0);

    static uint8_t raw[4096], whole[4096];
    size_t n = s_raw_idem_record(redeem.request_id, raw, sizeof(raw));
    REQUIRE(n > 29);
    CHECK_EQ_INT(raw[0], 3);
    size_t reply_len =
        (size_t)raw[25] | (size_t)raw[26] << 8 | (size_t)raw[27] << 16 | (size_t)raw[28] << 24;
    REQUIRE(29 + reply_len == n);
    CHECK(memmem(raw + 29, reply_len, redeem.request_id, strlen(redeem.request_id)) == NULL);
    cl_reply_t stored;
    REQUIRE(codec_reply_decode(raw + 29, reply_len, &stored, NULL, 0) == 0);
    CHECK_EQ_STR(stored.request_id, "");
    CHECK_EQ_INT(stored.card.balance_minor, 7500);

    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    s_check_idempotent(&redeem, &first, card, 7500);
    static uint8_t sent[4096];
    size_t sent_len = s_stored_reply(redeem.request_id, sent, sizeof(sent));
    CHECK_EQ_INT(harness_stop(H), 0);

    /* The same record as version 2: the request id field (tag, length, id) in front. */
    size_t id_len = strlen(redeem.request_id);
    REQUIRE(id_len < 128 && n + 2 + id_len <= sizeof(whole));
    memcpy(whole, raw, 29);
    whole[0] = 2;
    size_t whole_reply_len = reply_len + 2 + id_len;
    for (int i = 0; i < 4; i++)
        whole[25 + i] = (uint8_t)(whole_reply_len >> (8 * i));
    whole[29] = 0x0a;
    whole[30] = (uint8_t)id_len;
    memcpy(whole + 31, redeem.request_id, id_len);
    memcpy(whole + 31 + id_len, raw + 29, reply_len);
    /* The bytes given back are the record's with the id field in front, exactly. */
    CHECK_EQ_INT(sent_len, whole_reply_len);
    CHECK(memcmp(sent, whole + 29, whole_reply_len) == 0);
    s_put_raw_idem_record(redeem.request_id, whole, 29 + whole_reply_len);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    s_check_idempotent(&redeem, &first, card, 7500);
    static uint8_t again[4096];
    CHECK_EQ_INT(s_stored_reply(redeem.request_id, again, sizeof(again)), sent_len);
    CHECK(memcmp(again, sent, sent_len) == 0);
    CHECK_EQ_INT(harness_stop(H), 0);
    n = s_raw_idem_record(redeem.request_id, raw, sizeof(raw));
    CHECK_EQ_INT(raw[0], 2); /* a replay writes nothing */
    s_down();
}

static void
issue_pin_comes_back_on_retry_but_never_rests_on_disk_in_clear(void)
{
    s_up(NULL);
    s_world();
    cl_program_spec_t spec = s_spec("m1", "pinned");
    spec.pin_required = true;
    s_program(&spec);
    cl_command_t issue = s_issue_cmd("m1", "pinned", 10000);
    cl_reply_t first = *s_call(&issue);
    CHECK_STATUS(&first, CL_OK);
    CHECK_EQ_INT(strlen(first.pin), 6);
    /* The commits after it go on as usual (its record's slot is reused without PINs). */
    uint64_t other = s_issue("m1", "gift", 10000);
    cl_command_t redeem = s_redeem_cmd(other, "s1", 100);
    s_ok(&redeem);

    /* The first reply was lost, the daemon restarted, the client retries: same card and PIN. */
    CHECK_EQ_INT(harness_stop(H), 0);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    const cl_reply_t *r = s_call(&issue);
    CHECK_STATUS(r, CL_OK);
    CHECK(r->replayed);
    CHECK_EQ_U64(r->card.card_id, first.card.card_id);
    CHECK_EQ_STR(r->code, first.code);
    CHECK_EQ_STR(r->pin, first.pin);

    /* "Did it happen?" shows the card and its code, never the PIN. */
    cl_command_t q = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "%s", issue.request_id);
    r = s_call(&q);
    CHECK_STATUS(r, CL_OK);
    CHECK(r->found);
    cl_reply_t stored;
    REQUIRE(r->stored_reply != NULL);
    REQUIRE(codec_reply_decode(r->stored_reply, r->stored_reply_len, &stored, NULL, 0) == 0);
    CHECK_EQ_STR(stored.code, first.code);
    CHECK_EQ_STR(stored.pin, "");

    /* On disk: the stored reply has no PIN, and the PIN's digits appear nowhere in clear. */
    CHECK_EQ_INT(harness_stop(H), 0);
    static uint8_t raw[65536];
    size_t n = s_raw_idem_record(issue.request_id, raw, sizeof(raw));
    REQUIRE(n > 29);
    size_t reply_len =
        (size_t)raw[25] | (size_t)raw[26] << 8 | (size_t)raw[27] << 16 | (size_t)raw[28] << 24;
    REQUIRE(29 + reply_len < n);
    REQUIRE(codec_reply_decode(raw + 29, reply_len, &stored, NULL, 0) == 0);
    CHECK_EQ_STR(stored.code, first.code);
    CHECK_EQ_STR(stored.pin, "");
    /* (Unless the six digits happen to stand inside the 19-digit code, about 1 in 70,000.) */
    if (strstr(first.code, first.pin) == NULL)
        CHECK(memmem(raw, n, first.pin, strlen(first.pin)) == NULL);
    s_down();
}

/*
 * A batch issue sent again is answered with its first reply, also after a restart and also when
 * its bytes are laid out differently on the wire; with one row changed it is refused. The daemon
 * reads a batch issue packed as protobuf-c packs it by a fast path and any other layout by the
 * general one (proto/codec-request.c): both must give the request the same content hash.
 */
static void
batch_issue_sent_again_replays_and_with_a_row_changed_is_refused(void)
{
    enum { ROWS = 50 };
    static cl_cmd_issue_card_t rows[ROWS];
    static uint8_t req[1 << 16], frame[1 << 16];
    s_up(NULL);
    s_world();
    cl_command_t c = s_batch_cmd(rows, ROWS, "again-");
    const cl_reply_t *r = s_call(&c);
    CHECK_STATUS(r, CL_OK);
    CHECK(!r->replayed);
    CHECK_EQ_INT(r->batch_issued, ROWS);
    REQUIRE(r->rows_count == ROWS);
    uint64_t batch_id = r->batch_id, first_card = r->rows[0].card_id,
             last_card = r->rows[ROWS - 1].card_id;
    uint64_t head = s_head();

    /* Once more, then after a restart (the record and its hash come from disk). */
    for (int round = 0; round < 2; round++) {
        r = s_call(&c);
        CHECK_STATUS(r, CL_OK);
        CHECK(r->replayed);
        CHECK_EQ_U64(r->batch_id, batch_id);
        REQUIRE(r->rows_count == ROWS);
        CHECK_EQ_U64(r->rows[0].card_id, first_card);
        CHECK_EQ_U64(r->rows[ROWS - 1].card_id, last_card);
        CHECK_EQ_U64(s_head(), head);
        if (round == 0) {
            CHECK_EQ_INT(harness_stop(H), 0);
            REQUIRE(harness_restart(H) == 0);
            s_reconnect();
        }
    }

    /* The same request with its id written twice (protobuf keeps the last): the same content,
     * not the bytes protobuf-c packs, so it takes the general path. */
    size_t len = 0, frame_len = 0;
    REQUIRE(codec_request_encode(&c, req, sizeof(req) - 2 - CL_REQUEST_ID_MAX, &len) == 0);
    size_t id_len = strlen(c.request_id);
    req[len++] = 1 << 3 | 2;
    req[len++] = (uint8_t)id_len;
    memcpy(req + len, c.request_id, id_len);
    len += id_len;
    const uint8_t *reqs[1] = { req };
    REQUIRE(codec_request_batch_frame(reqs, &len, 1, frame, sizeof(frame), &frame_len) == 0);
    REQUIRE(harness_client_send_raw(C, frame, frame_len) == 0);
    size_t n = 0;
    REQUIRE(harness_client_recv(C, TIMEOUT_MS, R, 1, &n) == 0 && n == 1);
    CHECK_STATUS(&R[0], CL_OK);
    CHECK(R[0].replayed);
    CHECK_EQ_U64(R[0].batch_id, batch_id);
    CHECK_EQ_U64(s_head(), head);

    /* One row changed: a different request under a used id. */
    rows[ROWS / 2].face_value_minor += 100;
    r = s_call(&c);
    CHECK_STATUS(r, CL_REQUEST_ID_REUSED);
    CHECK(!r->replayed);
    CHECK_EQ_U64(s_head(), head);
    s_down();
}

static void
duplicate_ids_inside_one_message_apply_once(void)
{
    s_up(NULL);
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    uint64_t head = s_head();
    cl_command_t cmds[4];
    cmds[0] = s_redeem_cmd(card, "s1", 1000);
    cmds[1] = cmds[0];
    cmds[2] = cmds[0];
    cmds[2].u.redeem.amount_minor = 1001;
    cmds[3] = s_redeem_cmd(card, "s1", 1000);
    REQUIRE(harness_client_call(C, cmds, 4, R, TIMEOUT_MS) == 0);
    CHECK_STATUS(&R[0], CL_OK);
    CHECK(!R[0].replayed);
    CHECK_STATUS(&R[1], CL_OK);
    CHECK(R[1].replayed);
    CHECK_EQ_U64(R[1].last_seq, R[0].last_seq);
    CHECK_STATUS(&R[2], CL_REQUEST_ID_REUSED);
    CHECK_STATUS(&R[3], CL_OK);
    CHECK_EQ_INT(R[3].card.balance_minor, 8000);
    CHECK_EQ_U64(s_head(), head + 2);
    CHECK_EQ_INT(s_balance(card), 8000);
    s_down();
}

static void
idempotency_records_are_purged_after_their_retention(void)
{
    s_up("--idempotency-retention-hours 1");
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    cl_command_t redeem = s_redeem_cmd(card, "s1", 100);
    s_ok(&redeem);
    /* The purge runs in the next commit: the one of the ClockAdvanced event itself. */
    s_advance(T0 + 2 * HOUR_US);
    cl_command_t q = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "%s", redeem.request_id);
    const cl_reply_t *r = s_call(&q);
    CHECK_STATUS(r, CL_OK);
    CHECK(!r->found);
    /* The id is free again: different content is a new request. */
    cl_command_t again = redeem;
    again.u.redeem.amount_minor = 200;
    r = s_call(&again);
    CHECK_STATUS(r, CL_OK);
    CHECK(!r->replayed);
    CHECK_EQ_INT(s_balance(card), 10000 - 100 - 200);
    s_down();
}

/* ---- Storage full ---------------------------------------------------------------------------- */

static void
full_journal_refuses_the_batch_and_keeps_the_state_consistent(void)
{
    enum { ROWS = 500 };
    static cl_cmd_issue_card_t rows[ROWS];
    s_up("--journal-map-max-mb 2");
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    uint64_t head = 0;
    cl_command_t failed;
    bool full = false;
    for (int batch = 0; batch < 200 && !full; batch++) {
        head = s_head();
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "b%d-r", batch);
        cl_command_t c = s_batch_cmd(rows, ROWS, prefix);
        const cl_reply_t *r = s_call(&c);
        if (r->status == CL_STORAGE_FULL) {
            full = true;
            failed = c;
        } else {
            CHECK_STATUS(r, CL_OK);
        }
    }
    REQUIRE(full);
    /* Nothing of the refused batch stayed: not in the journal, not in the state, not in the
     * idempotency store. */
    CHECK_EQ_U64(s_head(), head);
    cl_command_t q = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(q.u.get_request_id, sizeof(q.u.get_request_id), "%s", failed.request_id);
    const cl_reply_t *r = s_call(&q);
    CHECK_STATUS(r, CL_OK);
    CHECK(!r->found);
    CHECK_EQ_INT(s_balance(card), 10000);
    /* The daemon goes on answering; a small command either fits or is refused the same way. */
    cl_command_t redeem = s_redeem_cmd(card, "s1", 10);
    r = s_call(&redeem);
    CHECK(r->status == CL_OK || r->status == CL_STORAGE_FULL);
    int64_t want = r->status == CL_OK ? 9990 : 10000;
    CHECK_EQ_INT(s_balance(card), want);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_check_digests_equal();
    CHECK_EQ_INT(s_journal_verify(NULL), 0);
    s_down();
}

/* ---- Concurrency --------------------------------------------------------------------------- */

typedef struct redeem_result {
    uint32_t ok;
    uint32_t insufficient;
    uint32_t other;
    uint32_t replies;
} redeem_result_t;

/*
 * A child process: `count` redeems of `amount` on one card (a negative amount: that many uses of
 * a punch card), `per_msg` per message, up to `window` messages in flight. Writes its
 * redeem_result_t to fd and exits.
 */
static _Noreturn void
s_redeemer(const char *endpoint, int child, uint64_t card, int count, int per_msg, int window,
           int64_t amount, int fd)
{
    harness_client_t *c = NULL;
    redeem_result_t res = { 0, 0, 0, 0 };
    static cl_command_t cmds[CL_BATCH_REQUESTS_MAX];
    static cl_reply_t replies[CL_BATCH_REQUESTS_MAX];
    int sent = 0, inflight = 0;
    if (harness_client_open(endpoint, &c) != 0)
        _exit(3);
    while (sent < count || inflight > 0) {
        while (sent < count && inflight < window) {
            int n = count - sent < per_msg ? count - sent : per_msg;
            for (int i = 0; i < n; i++) {
                memset(&cmds[i], 0, sizeof(cmds[i]));
                cmds[i].type = CL_CMD_REDEEM;
                snprintf(cmds[i].request_id, sizeof(cmds[i].request_id), "c%d-%d-%d", child,
                         (int)getpid(), sent + i);
                cmds[i].u.redeem.card.card_id = card;
                snprintf(cmds[i].u.redeem.store_id, CL_ID_MAX + 1, "s1");
                snprintf(cmds[i].u.redeem.order_ref, CL_ORDER_REF_MAX + 1, "o-%d-%d", child,
                         sent + i);
                if (amount > 0)
                    cmds[i].u.redeem.amount_minor = amount;
                else
                    cmds[i].u.redeem.uses = (uint32_t)-amount; /* a punch card's uses */
            }
            if (harness_client_send(c, cmds, (size_t)n) != 0)
                _exit(4);
            sent += n;
            inflight++;
        }
        size_t got = 0;
        if (harness_client_recv(c, TIMEOUT_MS, replies, CL_BATCH_REQUESTS_MAX, &got) != 0)
            _exit(5);
        inflight--;
        for (size_t i = 0; i < got; i++) {
            res.replies++;
            if (replies[i].status == CL_OK)
                res.ok++;
            else if (replies[i].status == CL_INSUFFICIENT_BALANCE)
                res.insufficient++;
            else
                res.other++;
        }
    }
    harness_client_close(&c);
    if (write(fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
        _exit(6);
    _exit(0);
}

/* Runs `children` s_redeemer() processes on one card and adds up their results. */
static redeem_result_t
s_redeem_from_children(uint64_t card, int children, int each, int per_msg, int window,
                       int64_t amount)
{
    enum { CHILDREN_MAX = 8 };
    int fds[CHILDREN_MAX][2];
    pid_t pids[CHILDREN_MAX];
    redeem_result_t total = { 0, 0, 0, 0 };
    REQUIRE(children <= CHILDREN_MAX);
    for (int i = 0; i < children; i++) {
        REQUIRE(pipe(fds[i]) == 0);
        fflush(NULL);
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            close(fds[i][0]);
            s_redeemer(harness_cmd_endpoint(H), i, card, each, per_msg, window, amount, fds[i][1]);
        }
        close(fds[i][1]);
    }
    for (int i = 0; i < children; i++) {
        redeem_result_t r;
        int st = 0;
        ssize_t n = read(fds[i][0], &r, sizeof(r));
        close(fds[i][0]);
        waitpid(pids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK_EQ_INT(n, (ssize_t)sizeof(r));
        if (n == (ssize_t)sizeof(r)) {
            total.ok += r.ok;
            total.insufficient += r.insufficient;
            total.other += r.other;
            total.replies += r.replies;
        }
    }
    return total;
}

/* The same for a punch card's uses: four processes redeem one use at a time, and exactly as
 * many as the card has are taken (PRODUCT.md section 5: nor a use count below zero). */
static void
concurrent_punches_on_one_card_never_take_more_uses_than_it_has(void)
{
    enum { CHILDREN = 4, EACH = 300, PER_MSG = 10, WINDOW = 4, USES = 500 };
    s_up(NULL);
    s_merchant("m1", "s1");
    cl_program_spec_t spec = s_spec("m1", "punch");
    spec.kind = CL_KIND_PUNCH;
    spec.uses_per_card = USES;
    spec.custom_min_minor = 0;
    spec.custom_max_minor = 0;
    spec.denoms_count = 1;
    spec.denoms_minor[0] = 50000;
    s_program(&spec);
    uint64_t card = s_issue("m1", "punch", 50000);
    CHECK_EQ_INT(s_get_card(card)->card.uses_left, USES);
    uint64_t head = s_head();
    redeem_result_t total = s_redeem_from_children(card, CHILDREN, EACH, PER_MSG, WINDOW, -1);
    CHECK_EQ_INT(total.replies, CHILDREN * EACH);
    CHECK_EQ_INT(total.ok, USES);
    CHECK_EQ_INT(total.insufficient, CHILDREN * EACH - USES);
    CHECK_EQ_INT(total.other, 0);
    CHECK_EQ_INT(s_get_card(card)->card.uses_left, 0);
    CHECK_EQ_U64(s_head(), head + USES);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_check_digests_equal();
    s_down();
}

static void
concurrent_redeems_on_one_card_never_double_spend(void)
{
    enum { CHILDREN = 4, EACH = 4000, PER_MSG = 25, WINDOW = 8 };
    const int64_t balance = 100000, amount = 7;
    s_up(NULL);
    s_world();
    uint64_t card = s_issue("m1", "gift", balance);
    uint64_t head = s_head();

    double t0 = s_now_s();
    redeem_result_t total = s_redeem_from_children(card, CHILDREN, EACH, PER_MSG, WINDOW, amount);
    double took = s_now_s() - t0;
    const uint32_t want_ok = (uint32_t)(balance / amount);
    CHECK_EQ_INT(total.replies, CHILDREN * EACH);
    CHECK_EQ_INT(total.ok, want_ok);
    CHECK_EQ_INT(total.insufficient, CHILDREN * EACH - want_ok);
    CHECK_EQ_INT(total.other, 0);
    CHECK_EQ_INT(s_balance(card), balance - (int64_t)want_ok * amount);
    CHECK_EQ_U64(s_head(), head + want_ok);
    fprintf(stdout, "  %d redeems from %d processes in %.2f s: %.0f redeems/s\n", CHILDREN * EACH,
            CHILDREN, took, (double)(CHILDREN * EACH) / took);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_check_digests_equal();
    s_down();
}

/*
 * With --commit-events 1 every command is a commit group of its own, so a message is cut into
 * groups that are decided while the one before syncs: it is still answered once, in order, when
 * its last request is committed. A repeat of a request finds it in the group in flight or on
 * disk, and pipelined redeems from several processes still never double spend.
 */
static void
groups_cut_inside_messages_answer_each_message_once_and_in_order(void)
{
    s_up("--commit-events 1");
    s_world();
    uint64_t card = s_issue("m1", "gift", 1000);
    uint64_t head = s_head();
    cl_command_t cmds[6];
    cmds[0] = s_redeem_cmd(card, "s1", 100);
    cmds[1] = cmds[0];
    cmds[2] = s_redeem_cmd(card, "s1", 200);
    cmds[3] = s_cmd(CL_CMD_GET_REQUEST);
    snprintf(cmds[3].u.get_request_id, sizeof(cmds[3].u.get_request_id), "%s", cmds[0].request_id);
    cmds[4] = cmds[0];
    cmds[4].u.redeem.amount_minor = 101;
    cmds[5] = s_redeem_cmd(card, "s1", 800); /* more than is left */
    REQUIRE(harness_client_call(C, cmds, 6, R, TIMEOUT_MS) == 0);
    CHECK_STATUS(&R[0], CL_OK);
    CHECK(!R[0].replayed);
    CHECK_EQ_INT(R[0].card.balance_minor, 900);
    CHECK_STATUS(&R[1], CL_OK);
    CHECK(R[1].replayed);
    CHECK_EQ_U64(R[1].last_seq, R[0].last_seq);
    CHECK_STATUS(&R[2], CL_OK);
    CHECK_EQ_INT(R[2].card.balance_minor, 700);
    CHECK_EQ_U64(R[2].last_seq, R[0].last_seq + 1);
    CHECK_STATUS(&R[3], CL_OK);
    CHECK(R[3].found);
    CHECK_STATUS(&R[4], CL_REQUEST_ID_REUSED);
    CHECK_STATUS(&R[5], CL_INSUFFICIENT_BALANCE);
    CHECK_EQ_U64(s_head(), head + 2);

    enum { CHILDREN = 3, EACH = 300, PER_MSG = 10, WINDOW = 4 };
    card = s_issue("m1", "gift", 1000);
    head = s_head();
    redeem_result_t total = s_redeem_from_children(card, CHILDREN, EACH, PER_MSG, WINDOW, 7);
    CHECK_EQ_INT(total.replies, CHILDREN * EACH);
    CHECK_EQ_INT(total.ok, 1000 / 7);
    CHECK_EQ_INT(total.insufficient, CHILDREN * EACH - 1000 / 7);
    CHECK_EQ_INT(total.other, 0);
    CHECK_EQ_INT(s_balance(card), 1000 - (1000 / 7) * 7);
    CHECK_EQ_U64(s_head(), head + 1000 / 7);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_check_digests_equal();
    s_down();
}

/*
 * The journal fills up while commits follow each other (a window in flight and the next one
 * decided on top of it): every request is answered, exactly the acknowledged redeems are
 * applied, and the journal, the state and a full replay agree.
 */
static void
full_journal_under_load_applies_exactly_the_acknowledged_redeems(void)
{
    enum { CHILDREN = 4, EACH = 6000, PER_MSG = 25, WINDOW = 8 };
    const int64_t balance = 1000000, amount = 1;
    s_up("--journal-map-max-mb 2");
    s_world();
    uint64_t card = s_issue("m1", "gift", balance);
    uint64_t head = s_head();

    redeem_result_t total = s_redeem_from_children(card, CHILDREN, EACH, PER_MSG, WINDOW, amount);
    CHECK_EQ_INT(total.replies, CHILDREN * EACH);
    CHECK_EQ_INT(total.insufficient, 0);
    REQUIRE(total.ok > 0);    /* some fit before the journal was full */
    REQUIRE(total.other > 0); /* and the rest were refused (storage_full) */
    CHECK_EQ_INT(s_balance(card), balance - (int64_t)total.ok * amount);
    CHECK_EQ_U64(s_head(), head + total.ok);
    fprintf(stdout, "  %u redeems acknowledged, %u refused when the journal was full\n", total.ok,
            total.other);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_check_digests_equal();
    CHECK_EQ_INT(s_journal_verify(NULL), 0);
    s_down();
}

/* ---- Crash --------------------------------------------------------------------------------- */

/*
 * A child under kill -9: redeems on random cards, writes "request_id status" for every reply
 * to its ack file and one byte per reply message to progress_fd; stops at the first timeout
 * (the daemon died) or after `count` redeems.
 */
static _Noreturn void
s_crash_client(const char *endpoint, const char *ack_path, int round, int child,
               const uint64_t *cards, int ncards, int count, int progress_fd)
{
    enum { PER_MSG = 16, WINDOW = 4 };
    harness_client_t *c = NULL;
    static cl_command_t cmds[PER_MSG];
    static cl_reply_t replies[CL_BATCH_REQUESTS_MAX];
    FILE *acks = fopen(ack_path, "w");
    unsigned seed = (unsigned)getpid();
    int sent = 0, inflight = 0;
    if (acks == NULL || harness_client_open(endpoint, &c) != 0)
        _exit(3);
    while (sent < count || inflight > 0) {
        while (sent < count && inflight < WINDOW) {
            for (int i = 0; i < PER_MSG; i++) {
                memset(&cmds[i], 0, sizeof(cmds[i]));
                cmds[i].type = CL_CMD_REDEEM;
                snprintf(cmds[i].request_id, sizeof(cmds[i].request_id), "k%d-%d-%d", round, child,
                         sent + i);
                cmds[i].u.redeem.card.card_id = cards[rand_r(&seed) % (unsigned)ncards];
                snprintf(cmds[i].u.redeem.store_id, CL_ID_MAX + 1, "s1");
                snprintf(cmds[i].u.redeem.order_ref, CL_ORDER_REF_MAX + 1, "o-%d", sent + i);
                cmds[i].u.redeem.amount_minor = 1 + rand_r(&seed) % 5;
            }
            if (harness_client_send(c, cmds, PER_MSG) != 0)
                _exit(4);
            sent += PER_MSG;
            inflight++;
        }
        size_t got = 0;
        if (harness_client_recv(c, 2000, replies, CL_BATCH_REQUESTS_MAX, &got) != 0)
            break; /* the daemon is gone */
        inflight--;
        for (size_t i = 0; i < got; i++)
            fprintf(acks, "%s %d\n", replies[i].request_id, (int)replies[i].status);
        fflush(acks);
        char b = 1;
        if (write(progress_fd, &b, 1) != 1)
            break;
    }
    fclose(acks);
    harness_client_close(&c);
    _exit(0);
}

/* Asks GetRequest for every acknowledged id of one ack file; returns how many were checked. */
static size_t
s_check_acks(const char *ack_path)
{
    FILE *f = fopen(ack_path, "r");
    char id[CL_REQUEST_ID_MAX + 1];
    int status = 0;
    size_t checked = 0;
    if (f == NULL)
        return 0;
    static cl_command_t qs[CL_BATCH_REQUESTS_MAX];
    static int want[CL_BATCH_REQUESTS_MAX];
    size_t n = 0;
    for (;;) {
        bool more = fscanf(f, "%64s %d", id, &status) == 2;
        if (more) {
            qs[n] = s_cmd(CL_CMD_GET_REQUEST);
            snprintf(qs[n].u.get_request_id, sizeof(qs[n].u.get_request_id), "%s", id);
            want[n] = status;
            n++;
        }
        if ((!more && n > 0) || n == CL_BATCH_REQUESTS_MAX) {
            REQUIRE(harness_client_call(C, qs, n, R, TIMEOUT_MS) == 0);
            for (size_t i = 0; i < n; i++) {
                cl_reply_t stored;
                if (!R[i].found) {
                    check_fail(__FILE__, __LINE__, "acknowledged request %s is not in the ledger",
                               qs[i].u.get_request_id);
                    continue;
                }
                if (codec_reply_decode(R[i].stored_reply, R[i].stored_reply_len, &stored, NULL,
                                       0) != 0 ||
                    (int)stored.status != want[i])
                    check_fail(__FILE__, __LINE__, "request %s: stored reply differs",
                               qs[i].u.get_request_id);
            }
            checked += n;
            n = 0;
        }
        if (!more)
            break;
    }
    fclose(f);
    return checked;
}

static void
s_crash_rounds(int rounds, int clients, int per_client)
{
    enum { CARDS = 64, CLIENTS_MAX = 8 };
    uint64_t cards[CARDS];
    size_t acked_total = 0;
    s_up("--checkpoint-events 300 --checkpoint-interval-ms 20 --cache-records 50");
    s_world();
    for (int i = 0; i < CARDS; i++)
        cards[i] = s_issue("m1", "gift", 10000000);
    unsigned seed = 12345;

    for (int round = 0; round < rounds; round++) {
        int fds[CLIENTS_MAX][2];
        pid_t pids[CLIENTS_MAX];
        char ack_paths[CLIENTS_MAX][512];
        for (int k = 0; k < clients; k++) {
            snprintf(ack_paths[k], sizeof(ack_paths[k]), "%s/acks-%d-%d", harness_dir(H), round, k);
            REQUIRE(pipe(fds[k]) == 0);
            fflush(NULL);
            pids[k] = fork();
            REQUIRE(pids[k] >= 0);
            if (pids[k] == 0) {
                close(fds[k][0]);
                s_crash_client(harness_cmd_endpoint(H), ack_paths[k], round, k, cards, CARDS,
                               per_client, fds[k][1]);
            }
            close(fds[k][1]);
        }
        /* Kill after a random number of acknowledged messages: the crash lands anywhere in the
         * write path (deciding, committing, checkpointing, answering, publishing). */
        int kill_after = 5 + (int)(rand_r(&seed) % 120);
        int progress = 0, open_fds = clients;
        while (progress < kill_after && open_fds > 0) {
            struct pollfd pfd[CLIENTS_MAX];
            for (int k = 0; k < clients; k++)
                pfd[k] = (struct pollfd){ .fd = fds[k][0], .events = POLLIN };
            if (poll(pfd, (nfds_t)clients, 10000) <= 0)
                break;
            for (int k = 0; k < clients; k++) {
                if (pfd[k].revents == 0 || fds[k][0] < 0)
                    continue;
                char buf[256];
                ssize_t n = read(fds[k][0], buf, sizeof(buf));
                if (n <= 0) {
                    close(fds[k][0]);
                    fds[k][0] = -1;
                    open_fds--;
                } else {
                    progress += (int)n;
                }
            }
        }
        REQUIRE(harness_kill9(H) == 0);
        for (int k = 0; k < clients; k++) {
            int st = 0;
            if (fds[k][0] >= 0)
                close(fds[k][0]);
            waitpid(pids[k], &st, 0);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }

        /* The journal verifies, and the checkpoint + tail equals a full replay. */
        uint64_t verified_head = 0;
        CHECK_EQ_INT(s_journal_verify(&verified_head), 0);
        char a[OUT_MAX], b[OUT_MAX];
        s_digest(false, a);
        s_digest(true, b);
        CHECK_EQ_STR(a, b);
        CHECK_EQ_U64(s_digest_head(a), verified_head);

        REQUIRE(harness_restart(H) == 0);
        s_reconnect();
        CHECK_EQ_U64(s_head(), verified_head);
        size_t acked = 0;
        for (int k = 0; k < clients; k++)
            acked += s_check_acks(ack_paths[k]);
        acked_total += acked;
        fprintf(stdout, "  round %d: killed after %d replies, head %llu, %zu acks checked\n", round,
                progress, (unsigned long long)verified_head, acked);
        if (check_case_failures() != 0)
            break;
    }
    CHECK(acked_total > 0);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_check_digests_equal();
    s_down();
}

static void
kill_9_under_load_loses_no_acknowledged_command(void)
{
    s_crash_rounds(3, 3, 3000);
}

/* ---- Publishing ---------------------------------------------------------------------------- */

static void
events_are_published_after_commit_with_merchant_topics_and_no_gaps(void)
{
    s_up(NULL);
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    sub_t subs[2];
    memset(subs, 0, sizeof(subs));
    static const char *const all[] = { "", NULL };
    static const char *const m1[] = { "m1/", "-/", NULL };
    s_sub_open(&subs[0], all);
    s_sub_open(&subs[1], m1);
    s_sub_sync(subs, 2);

    /* Another merchant's events, then a redeem on m1's card. */
    s_merchant("m2", "t1");
    cl_program_spec_t spec = s_spec("m2", "cards");
    s_program(&spec);
    uint64_t card2 = s_issue("m2", "cards", 5000);
    cl_command_t r2 = s_redeem_cmd(card2, "t1", 100);
    s_ok(&r2);
    cl_command_t redeem = s_redeem_cmd(card, "s1", 1234);
    cl_reply_t reply = *s_call(&redeem);
    CHECK_STATUS(&reply, CL_OK);

    /* Everything, in order, without a gap. */
    pub_event_t e;
    uint64_t prev = 0;
    bool saw_m2 = false;
    for (;;) {
        REQUIRE(s_sub_recv(&subs[0], 5000, &e) == 0);
        if (prev != 0)
            CHECK_EQ_U64(e.seq, prev + 1);
        prev = e.seq;
        saw_m2 = saw_m2 || strncmp(e.topic, "m2/", 3) == 0;
        if (e.seq == reply.last_seq)
            break;
    }
    CHECK(saw_m2);
    CHECK_EQ_STR(e.topic, "m1/CardRedeemed");
    CHECK_EQ_INT(e.ev.type, CL_EV_CARD_REDEEMED);
    CHECK_EQ_U64(e.ev.u.card_redeemed.card_id, card);
    CHECK_EQ_INT(e.ev.u.card_redeemed.amount_minor, 1234);
    CHECK_EQ_STR(e.ev.request_id, redeem.request_id);
    CHECK_EQ_INT(e.at_us, s_status()->status_now_us);

    /* The frame is the journal entry as stored: same header and chain hash. */
    char path[512];
    journal_t *j = NULL;
    journal_opts_t o;
    journal_entry_t stored;
    static uint8_t payload[JOURNAL_PAYLOAD_MAX];
    memset(&o, 0, sizeof(o));
    o.read_only = true;
    snprintf(path, sizeof(path), "%s/journal", harness_data_dir(H));
    REQUIRE(journal_open(path, &o, &j) == 0);
    REQUIRE(journal_read(j, e.seq, payload, sizeof(payload), &stored) == 0);
    CHECK_EQ_INT(stored.timestamp_us, e.at_us);
    CHECK_EQ_INT(stored.payload_len, e.len);
    CHECK(memcmp(stored.hash, e.hash, 16) == 0);
    journal_close(&j);

    /* The m1 subscriber sees m1's events and merchant-less ones only. */
    for (;;) {
        REQUIRE(s_sub_recv(&subs[1], 5000, &e) == 0);
        CHECK(strncmp(e.topic, "m1/", 3) == 0 || strncmp(e.topic, "-/", 2) == 0);
        if (e.seq == reply.last_seq)
            break;
    }
    CHECK_EQ_STR(e.topic, "m1/CardRedeemed");
    s_sub_close(&subs[0]);
    s_sub_close(&subs[1]);
    s_down();
}

/* ---- Timers -------------------------------------------------------------------------------- */

/* Receives events until one of `type` for `card` arrives (or fails after 5 s of silence). */
static bool
s_await_event(sub_t *sub, cl_event_type_t type, uint64_t card, pub_event_t *out)
{
    for (;;) {
        if (s_sub_recv(sub, 5000, out) != 0)
            return false;
        uint64_t id = 0;
        switch (out->ev.type) {
        case CL_EV_GIFT_RETURNED:
            id = out->ev.u.gift_closed.card_id;
            break;
        case CL_EV_EXPIRY_REMINDED:
            id = out->ev.u.expiry_reminded.card_id;
            break;
        case CL_EV_CARD_EXPIRED:
            id = out->ev.u.card_expired.card_id;
            break;
        default:
            break;
        }
        if (out->ev.type == type && id == card)
            return true;
    }
}

/*
 * A fresh daemon with a 10-day program that reminds 3 days ahead and returns gifts after 24 h,
 * card a (5000) and card b (3000), and b offered as a gift. Returns the offer's id.
 */
static uint64_t
s_short_cards_with_an_offer(uint64_t *a, uint64_t *b)
{
    s_up(NULL);
    s_merchant("m1", "s1");
    cl_program_spec_t spec = s_spec("m1", "short");
    spec.valid_days = 10;
    spec.remind_days_before_expiry = 3;
    spec.gift_offer_ttl_hours = 24;
    s_program(&spec);
    *a = s_issue("m1", "short", 5000);
    *b = s_issue("m1", "short", 3000);
    cl_command_t offer = s_cmd(CL_CMD_OFFER_GIFT);
    offer.u.gift.card.card_id = *b;
    snprintf(offer.u.gift.from_holder, CL_HOLDER_MAX + 1, "holder-1");
    const cl_reply_t *r = s_call(&offer);
    CHECK_STATUS(r, CL_OK);
    CHECK(r->offer_id != 0);
    return r->offer_id;
}

static void
expiry_reminder_and_gift_return_fire_when_the_clock_moves(void)
{
    uint64_t a, b;
    uint64_t offer_id = s_short_cards_with_an_offer(&a, &b);
    CHECK_EQ_U64(s_get_card(b)->card.open_offer_id, offer_id);

    sub_t sub;
    memset(&sub, 0, sizeof(sub));
    static const char *const all[] = { "", NULL };
    s_sub_open(&sub, all);
    s_sub_sync(&sub, 1);
    pub_event_t e;

    /* Nothing is due before its time. */
    s_advance(T0 + 23 * HOUR_US);
    CHECK_EQ_U64(s_get_card(b)->card.open_offer_id, offer_id);

    s_advance(T0 + 25 * HOUR_US);
    CHECK(s_await_event(&sub, CL_EV_GIFT_RETURNED, b, &e));
    CHECK_EQ_STR(e.topic, "m1/GiftReturned");
    CHECK_EQ_U64(e.ev.u.gift_closed.offer_id, offer_id);
    CHECK_EQ_U64(s_get_card(b)->card.open_offer_id, 0);

    s_advance(T0 + 7 * DAY_US + HOUR_US);
    CHECK(s_await_event(&sub, CL_EV_EXPIRY_REMINDED, a, &e));
    CHECK_EQ_INT(e.ev.u.expiry_reminded.balance_minor, 5000);

    s_advance(T0 + 10 * DAY_US + HOUR_US);
    CHECK(s_await_event(&sub, CL_EV_CARD_EXPIRED, a, &e));
    CHECK_EQ_INT(e.ev.u.card_expired.breakage_minor, 5000);
    CHECK_EQ_INT(e.at_us, T0 + 10 * DAY_US + HOUR_US);
    CHECK_EQ_INT(s_get_card(a)->card.state, CL_CARDSTATE_EXPIRED);
    CHECK_EQ_INT(s_get_card(b)->card.state, CL_CARDSTATE_EXPIRED);
    cl_command_t late = s_redeem_cmd(a, "s1", 100);
    CHECK_STATUS(s_call(&late), CL_CARD_EXPIRED);

    /* The clock never goes back, and the expiries survive a restart. */
    cl_command_t back = s_cmd(CL_CMD_ADVANCE_CLOCK);
    back.u.set_now_us = T0;
    CHECK_STATUS(s_call(&back), CL_INVALID_ARGUMENT);
    s_sub_close(&sub);
    CHECK_EQ_INT(harness_stop(H), 0);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    CHECK_EQ_INT(s_status()->status_now_us, T0 + 10 * DAY_US + HOUR_US);
    CHECK_EQ_INT(s_get_card(a)->card.state, CL_CARDSTATE_EXPIRED);
    s_down();
}

/*
 * After a restart the ledger holds no card until one is asked for: its timers come from the
 * checkpoint's timers table, in order, and each leaves the set once its event is written, so
 * checkpoint + tail still equals a full replay.
 */
static void
timers_fire_from_the_checkpoint_after_a_restart(void)
{
    uint64_t a, b;
    uint64_t offer_id = s_short_cards_with_an_offer(&a, &b);

    sub_t sub;
    pub_event_t e;
    static const char *const all[] = { "", NULL };
    char cp[OUT_MAX], full[OUT_MAX];
    /* Each step starts from a restart, so the timer comes from the checkpoint, not memory. */
    for (int step = 0; step < 3; step++) {
        CHECK_EQ_INT(harness_stop(H), 0);
        REQUIRE(harness_restart(H) == 0);
        s_reconnect();
        memset(&sub, 0, sizeof(sub));
        s_sub_open(&sub, all);
        s_sub_sync(&sub, 1);
        if (step == 0) {
            s_advance(T0 + 25 * HOUR_US);
            CHECK(s_await_event(&sub, CL_EV_GIFT_RETURNED, b, &e));
            CHECK_EQ_U64(e.ev.u.gift_closed.offer_id, offer_id);
        } else if (step == 1) {
            s_advance(T0 + 7 * DAY_US + HOUR_US);
            CHECK(s_await_event(&sub, CL_EV_EXPIRY_REMINDED, a, &e));
        } else {
            s_advance(T0 + 10 * DAY_US + HOUR_US);
            CHECK(s_await_event(&sub, CL_EV_CARD_EXPIRED, a, &e));
            CHECK_EQ_INT(e.ev.u.card_expired.breakage_minor, 5000);
            CHECK(s_await_event(&sub, CL_EV_CARD_EXPIRED, b, &e));
            CHECK_EQ_INT(e.ev.u.card_expired.breakage_minor, 3000);
        }
        s_sub_close(&sub);
    }
    CHECK_EQ_INT(s_get_card(a)->card.state, CL_CARDSTATE_EXPIRED);
    CHECK_EQ_U64(s_get_card(b)->card.open_offer_id, 0);
    uint64_t head = s_head();
    /* A later restart fires nothing twice. */
    CHECK_EQ_INT(harness_stop(H), 0);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    s_advance(T0 + 20 * DAY_US);
    CHECK_EQ_U64(s_head(), head + 1); /* the ClockAdvanced alone */
    CHECK_EQ_INT(harness_stop(H), 0);
    s_digest(false, cp);
    s_digest(true, full);
    CHECK_EQ_STR(cp, full);
    s_down();
}

/* ---- Stopping ------------------------------------------------------------------------------ */

static void
sigterm_exits_zero_and_a_restart_has_the_same_state(void)
{
    s_up(NULL);
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    cl_command_t c = s_redeem_cmd(card, "s1", 10);
    s_ok(&c);
    uint64_t head = s_head();
    CHECK_EQ_INT(harness_stop(H), 0);
    char before[OUT_MAX], full[OUT_MAX], after[OUT_MAX];
    s_digest(false, before);
    s_digest(true, full);
    CHECK_EQ_STR(before, full);
    CHECK_EQ_U64(s_digest_head(before), head);

    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    const cl_reply_t *st = s_status();
    CHECK_EQ_U64(st->status_head_seq, head);
    CHECK_EQ_U64(st->status_checkpoint_seq, head); /* the shutdown checkpoint */
    CHECK_EQ_INT(s_balance(card), 9990);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_digest(false, after);
    CHECK_EQ_STR(before, after);
    s_down();
}

/* Waits (up to 5 s) until a checkpoint holds everything up to the journal's head. */
static void
s_await_checkpoint(void)
{
    uint64_t head = s_head();
    for (int i = 0; i < 500 && s_status()->status_checkpoint_seq < head; i++)
        usleep(10000);
    CHECK_EQ_U64(s_status()->status_checkpoint_seq, head);
}

/*
 * A card is checkpointed whole, or as its value and status alone when only they changed
 * (projections/ledger.c, CARD_VALUES). Its value written alone, then the card written whole with
 * a newer value (a redeem and a gift in one message, so in one checkpoint): a start from the
 * checkpoint must take the newer value, not the older record of the value alone.
 */
static void
a_card_written_whole_after_its_value_alone_restarts_with_its_latest_value(void)
{
    s_up("--checkpoint-events 1");
    s_world();
    uint64_t card = s_issue("m1", "gift", 10000);
    /* The issue's checkpoint (the card whole) lands, then the redeem's (the value alone): were
     * they one checkpoint, the value would never be on disk alone and this case would pass
     * without the delete it checks. */
    s_await_checkpoint();
    cl_command_t c = s_redeem_cmd(card, "s1", 10);
    s_ok(&c);
    s_await_checkpoint();
    cl_command_t two[2] = { s_redeem_cmd(card, "s1", 25), s_cmd(CL_CMD_TRANSFER_CARD) };
    two[1].u.gift.card.card_id = card;
    snprintf(two[1].u.gift.from_holder, CL_HOLDER_MAX + 1, "holder-1");
    snprintf(two[1].u.gift.to_holder, CL_HOLDER_MAX + 1, "holder-2");
    REQUIRE(harness_client_call(C, two, 2, R, TIMEOUT_MS) == 0);
    CHECK_STATUS(&R[0], CL_OK);
    CHECK_STATUS(&R[1], CL_OK);
    s_await_checkpoint();
    REQUIRE(harness_kill9(H) == 0);
    s_check_digests_equal();
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    CHECK_EQ_INT(s_balance(card), 10000 - 10 - 25);
    CHECK_EQ_STR(s_get_card(card)->card.holder, "holder-2");
    s_down();
}

#ifdef TEST_DAEMON_SLOW
/* ---- Slow: the long kill -9 loop, and the restart time with 1M cards ----------------------- */

static void
kill_9_under_load_many_times_loses_no_acknowledged_command(void)
{
    s_crash_rounds(25, 4, 20000);
}

static void
a_million_cards_survive_kill_9_and_restart_to_the_same_state(void)
{
    enum { CARDS = 1000000, ROWS = CL_ISSUE_BATCH_MAX, PER_MSG = 4 };
    s_up("--checkpoint-events 100000000 --checkpoint-interval-ms 100000000");
    s_world();
    static cl_cmd_issue_card_t rows[PER_MSG][ROWS];
    static cl_command_t cmds[PER_MSG];
    double t0 = s_now_s();
    for (int done = 0; done < CARDS; done += PER_MSG * ROWS) {
        for (int m = 0; m < PER_MSG; m++) {
            cmds[m] = s_cmd(CL_CMD_ISSUE_BATCH);
            snprintf(cmds[m].u.issue_batch.merchant_id, CL_ID_MAX + 1, "m1");
            snprintf(cmds[m].u.issue_batch.program_id, CL_ID_MAX + 1, "gift");
            snprintf(cmds[m].u.issue_batch.batch_ref, CL_NAME_MAX + 1, "b%d", done);
            cmds[m].u.issue_batch.rows_count = ROWS;
            for (int i = 0; i < ROWS; i++) {
                cl_command_t one = s_issue_cmd("m1", "gift", 10000);
                rows[m][i] = one.u.issue_card;
                rows[m][i].channel = CL_CHANNEL_ENTERPRISE;
                snprintf(rows[m][i].row_key, CL_ID_MAX + 1, "r%d", done + m * ROWS + i);
            }
            cmds[m].batch_rows = rows[m];
        }
        REQUIRE(harness_client_call(C, cmds, PER_MSG, R, 120000) == 0);
        for (int m = 0; m < PER_MSG; m++)
            CHECK_STATUS(&R[m], CL_OK);
    }
    double issued_s = s_now_s() - t0;
    fprintf(stdout, "  issued %d cards in %.1f s: %.0f cards/s\n", CARDS, issued_s,
            CARDS / issued_s);
    /* Some redeems after the checkpoint so the restart replays a tail. */
    for (int i = 0; i < 1000; i++) {
        cl_command_t c = s_redeem_cmd((uint64_t)(1 + i * 997 % CARDS), "s1", 1);
        s_ok(&c);
    }
    t0 = s_now_s();
    CHECK_EQ_INT(harness_stop(H), 0);
    fprintf(stdout, "  clean stop (full checkpoint of %d cards) took %.1f s\n", CARDS,
            s_now_s() - t0);
    REQUIRE(harness_restart(H) == 0);
    s_reconnect();
    for (int i = 0; i < 1000; i++) {
        cl_command_t c = s_redeem_cmd((uint64_t)(1 + i * 991 % CARDS), "s1", 1);
        s_ok(&c);
    }
    REQUIRE(harness_kill9(H) == 0);
    s_check_digests_equal();
    t0 = s_now_s();
    REQUIRE(harness_restart(H) == 0);
    fprintf(stdout, "  restart after kill -9 with %d cards: ready (GetStatus answered) in %.2f s\n",
            CARDS, s_now_s() - t0);
    s_reconnect();
    CHECK_EQ_U64(s_status()->status_cards, CARDS);
    CHECK_EQ_INT(harness_stop(H), 0);
    s_down();
}
#endif

int
main(int argc, char **argv)
{
    static const check_case_t integration[] = {
        CHECK_CASE(daemon_starts_and_answers_get_status),
        CHECK_CASE(non_loopback_tcp_endpoints_are_refused_at_start),
        CHECK_CASE(guessing_codes_is_refused_as_rate_limited_until_the_guesses_age),
        CHECK_CASE(bad_flags_and_config_lines_are_refused),
        CHECK_CASE(journal_of_another_format_version_is_refused),
        CHECK_CASE(second_daemon_on_the_same_data_directory_is_refused),
        CHECK_CASE(malformed_and_oversized_messages_get_one_refusal),
        CHECK_CASE(same_request_id_replays_the_first_reply_and_appends_nothing),
        CHECK_CASE(issue_pin_comes_back_on_retry_but_never_rests_on_disk_in_clear),
        CHECK_CASE(stored_replies_leave_out_the_request_id_and_old_whole_ones_still_replay),
        CHECK_CASE(batch_issue_sent_again_replays_and_with_a_row_changed_is_refused),
        CHECK_CASE(duplicate_ids_inside_one_message_apply_once),
        CHECK_CASE(idempotency_records_are_purged_after_their_retention),
        CHECK_CASE(full_journal_refuses_the_batch_and_keeps_the_state_consistent),
        CHECK_CASE(concurrent_redeems_on_one_card_never_double_spend),
        CHECK_CASE(concurrent_punches_on_one_card_never_take_more_uses_than_it_has),
        CHECK_CASE(groups_cut_inside_messages_answer_each_message_once_and_in_order),
        CHECK_CASE(full_journal_under_load_applies_exactly_the_acknowledged_redeems),
        CHECK_CASE(kill_9_under_load_loses_no_acknowledged_command),
        CHECK_CASE(events_are_published_after_commit_with_merchant_topics_and_no_gaps),
        CHECK_CASE(expiry_reminder_and_gift_return_fire_when_the_clock_moves),
        CHECK_CASE(timers_fire_from_the_checkpoint_after_a_restart),
        CHECK_CASE(sigterm_exits_zero_and_a_restart_has_the_same_state),
        CHECK_CASE(a_card_written_whole_after_its_value_alone_restarts_with_its_latest_value),
    };
#ifdef TEST_DAEMON_SLOW
    static const check_case_t slow[] = {
        CHECK_CASE(kill_9_under_load_many_times_loses_no_acknowledged_command),
        CHECK_CASE(a_million_cards_survive_kill_9_and_restart_to_the_same_state),
    };
    (void)integration;
    int rc = check_main(argc, argv, slow, sizeof(slow) / sizeof(slow[0]));
#else
    int rc = check_main(argc, argv, integration, sizeof(integration) / sizeof(integration[0]));
#endif
    s_down();
    return rc;
}
