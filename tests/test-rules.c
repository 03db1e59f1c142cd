/*
 * test-rules: every refusal of PRODUCT.md section 5, shown through the real daemon.
 *
 * tests/test-decide.c shows each rule at the domain level (decide() and ledger_apply() in
 * memory). This file shows the same refusals end to end: cardledgerd runs as a process on
 * ipc:// endpoints in a temporary directory with a test clock (tests/harness.h), commands go
 * over ZeroMQ, and for every refusal the test checks what a client can see:
 *   - the status, a sentence, no events (last_seq 0) and no result in the reply;
 *   - the journal head (GetStatus) and the number of cards did not move;
 *   - every card the command named reads back (GetCard) exactly as before.
 * The one refusal that writes is a wrong PIN: exactly PinRejected, and CardLocked with it at the
 * fifth, read back from the journal.
 *
 * One daemon serves the whole file (started by the first case, with merchants m1 and m2, their
 * stores and the stored-value program "gift"); each case defines the programs it needs and
 * issues its own cards. The clock only moves in the expiry case, by a day; every other card is
 * valid for a year, so no other timer comes due. Nothing sleeps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "codec.h"
#include "harness.h"
#include "journal.h"

#define DAY_US     (86400LL * 1000000LL)
#define TIMEOUT_MS 20000

static harness_t *H;
static harness_client_t *C;
static cl_reply_t R[CL_BATCH_REQUESTS_MAX];
static unsigned s_ids;

/* ---- Talking to the daemon ------------------------------------------------------------------ */

static cl_command_t
s_cmd(cl_command_type_t type)
{
    cl_command_t c;
    memset(&c, 0, sizeof(c));
    c.type = type;
    snprintf(c.request_id, sizeof(c.request_id), "rules-%u-%u", (unsigned)getpid(), ++s_ids);
    return c;
}

/* Sends one command and returns its reply (R[0], valid until the next call). */
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

static const cl_reply_t *
s_ok(const cl_command_t *c)
{
    const cl_reply_t *r = s_call(c);
    CHECK_STATUS(r, CL_OK);
    return r;
}

static cl_reply_t
s_status(void)
{
    cl_command_t c = s_cmd(CL_CMD_GET_STATUS);
    return *s_ok(&c);
}

static uint64_t
s_head(void)
{
    return s_status().status_head_seq;
}

static cl_card_view_t
s_view(uint64_t card_id)
{
    cl_command_t c = s_cmd(CL_CMD_GET_CARD);
    c.u.card_flag.card.card_id = card_id;
    const cl_reply_t *r = s_call(&c);
    CHECK_STATUS(r, CL_OK);
    REQUIRE(r->result == CL_RES_CARD && r->card.card_id == card_id);
    return r->card;
}

/* ---- The world ------------------------------------------------------------------------------ */

static cl_program_spec_t
s_spec(const char *merchant, const char *program, cl_kind_t kind)
{
    cl_program_spec_t s;
    memset(&s, 0, sizeof(s));
    snprintf(s.merchant_id, sizeof(s.merchant_id), "%s", merchant);
    snprintf(s.program_id, sizeof(s.program_id), "%s", program);
    snprintf(s.name, sizeof(s.name), "Program %s", program);
    snprintf(s.currency, sizeof(s.currency), "CNY");
    s.kind = kind;
    s.accept_scope = CL_ACCEPT_ALL;
    s.transferable = true;
    if (kind == CL_KIND_STORED_VALUE) {
        s.custom_min_minor = 1;
        s.custom_max_minor = 100000000;
        s.reloadable = true;
        s.balance_max_minor = 50000;
    } else if (kind == CL_KIND_PUNCH) {
        s.uses_per_card = 10;
        s.denoms_count = 1;
        s.denoms_minor[0] = 50000;
    }
    s.valid_days = 365;
    s.remind_days_before_expiry = 30;
    return s;
}

static void
s_program(const cl_program_spec_t *spec)
{
    cl_command_t c = s_cmd(CL_CMD_DEFINE_PROGRAM);
    c.u.program = *spec;
    s_ok(&c);
}

/*
 * Starts the daemon on first use: merchant m1 with stores s1 (region 310000) and s2 (region
 * 110000) and the stored-value program "gift" (any amount 1..1e8, reloadable up to 50000);
 * merchant m2 with store t1 and the stored-value program "other". One message, one commit.
 */
static void
s_world(void)
{
    if (H != NULL)
        return;
    REQUIRE(harness_start(NULL, &H) == 0);
    REQUIRE(harness_client_open(harness_cmd_endpoint(H), &C) == 0);

    static const struct {
        const char *merchant, *store, *region;
    } stores[] = { { "m1", "s1", "310000" }, { "m1", "s2", "110000" }, { "m2", "t1", "310000" } };
    cl_command_t cmds[7];
    size_t n = 0;
    static const char *const merchants[] = { "m1", "m2" };
    for (size_t i = 0; i < 2; i++) {
        cl_command_t c = s_cmd(CL_CMD_REGISTER_MERCHANT);
        snprintf(c.u.register_merchant.merchant_id, CL_ID_MAX + 1, "%s", merchants[i]);
        snprintf(c.u.register_merchant.name, CL_NAME_MAX + 1, "Merchant %s", merchants[i]);
        cmds[n++] = c;
    }
    for (size_t i = 0; i < sizeof(stores) / sizeof(stores[0]); i++) {
        cl_command_t c = s_cmd(CL_CMD_REGISTER_STORE);
        snprintf(c.u.register_store.merchant_id, CL_ID_MAX + 1, "%s", stores[i].merchant);
        snprintf(c.u.register_store.store_id, CL_ID_MAX + 1, "%s", stores[i].store);
        snprintf(c.u.register_store.name, CL_NAME_MAX + 1, "Store %s", stores[i].store);
        snprintf(c.u.register_store.region, CL_REGION_MAX + 1, "%s", stores[i].region);
        cmds[n++] = c;
    }
    cmds[n] = s_cmd(CL_CMD_DEFINE_PROGRAM);
    cmds[n++].u.program = s_spec("m1", "gift", CL_KIND_STORED_VALUE);
    cmds[n] = s_cmd(CL_CMD_DEFINE_PROGRAM);
    cmds[n++].u.program = s_spec("m2", "other", CL_KIND_STORED_VALUE);
    REQUIRE(harness_client_call(C, cmds, n, R, TIMEOUT_MS) == 0);
    for (size_t i = 0; i < n; i++)
        CHECK_STATUS(&R[i], CL_OK);
    REQUIRE(check_case_failures() == 0);
}

static cl_command_t
s_issue_cmd(const char *merchant, const char *program, const char *holder, int64_t face)
{
    cl_command_t c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c.u.issue_card.merchant_id, CL_ID_MAX + 1, "%s", merchant);
    snprintf(c.u.issue_card.program_id, CL_ID_MAX + 1, "%s", program);
    snprintf(c.u.issue_card.holder, CL_HOLDER_MAX + 1, "%s", holder);
    c.u.issue_card.channel = CL_CHANNEL_ONLINE;
    snprintf(c.u.issue_card.region, CL_REGION_MAX + 1, "310000");
    c.u.issue_card.face_value_minor = face;
    return c;
}

/* Issues one card and returns its id; writes its PIN when pin is not NULL. */
static uint64_t
s_issue_pin(const char *merchant, const char *program, const char *holder, int64_t face,
            char pin[CL_PIN_MAX + 1])
{
    cl_command_t c = s_issue_cmd(merchant, program, holder, face);
    const cl_reply_t *r = s_ok(&c);
    REQUIRE(r->status == CL_OK && r->card.card_id != 0);
    if (pin != NULL)
        snprintf(pin, CL_PIN_MAX + 1, "%s", r->pin);
    return r->card.card_id;
}

static uint64_t
s_issue(const char *merchant, const char *program, const char *holder, int64_t face)
{
    return s_issue_pin(merchant, program, holder, face, NULL);
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

static cl_command_t
s_voucher_cmd(uint64_t card_id, int64_t order, const char *sku)
{
    cl_command_t c = s_redeem_cmd(card_id, "s1", 0);
    c.u.redeem.order_amount_minor = order;
    snprintf(c.u.redeem.sku, sizeof(c.u.redeem.sku), "%s", sku);
    return c;
}

static cl_command_t
s_reload_cmd(uint64_t card_id, int64_t amount)
{
    cl_command_t c = s_cmd(CL_CMD_RELOAD);
    c.u.reload.card.card_id = card_id;
    c.u.reload.amount_minor = amount;
    return c;
}

static cl_command_t
s_transfer_cmd(uint64_t from, uint64_t to, int64_t amount)
{
    cl_command_t c = s_cmd(CL_CMD_TRANSFER_BALANCE);
    c.u.transfer_balance.from_card.card_id = from;
    c.u.transfer_balance.to_card.card_id = to;
    c.u.transfer_balance.amount_minor = amount;
    return c;
}

/* OfferGift and TransferCard. */
static cl_command_t
s_gift_cmd(cl_command_type_t type, uint64_t card_id, const char *from, const char *to)
{
    cl_command_t c = s_cmd(type);
    c.u.gift.card.card_id = card_id;
    snprintf(c.u.gift.from_holder, sizeof(c.u.gift.from_holder), "%s", from);
    snprintf(c.u.gift.to_holder, sizeof(c.u.gift.to_holder), "%s", to);
    return c;
}

static cl_command_t
s_claim_cmd(uint64_t card_id, uint64_t offer_id, const char *secret, const char *holder)
{
    cl_command_t c = s_cmd(CL_CMD_CLAIM_GIFT);
    c.u.gift_close.card.card_id = card_id;
    c.u.gift_close.offer_id = offer_id;
    snprintf(c.u.gift_close.claim_secret, sizeof(c.u.gift_close.claim_secret), "%s", secret);
    snprintf(c.u.gift_close.holder, sizeof(c.u.gift_close.holder), "%s", holder);
    return c;
}

static cl_command_t
s_flag_cmd(cl_command_type_t type, uint64_t card_id)
{
    cl_command_t c = s_cmd(type);
    c.u.card_flag.card.card_id = card_id;
    snprintf(c.u.card_flag.reason, sizeof(c.u.card_flag.reason), "test");
    return c;
}

static cl_command_t
s_reverse_cmd(uint64_t card_id, uint64_t redemption_seq, int64_t amount)
{
    cl_command_t c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c.u.reverse.card.card_id = card_id;
    c.u.reverse.redemption_seq = redemption_seq;
    c.u.reverse.amount_minor = amount;
    return c;
}

/* ---- Nothing changed ------------------------------------------------------------------------ */

#define SNAP_CARDS_MAX 2

/* What a refusal must leave alone: the journal head, the card count, the cards it names. */
typedef struct snap {
    uint64_t head;
    uint64_t cards;
    size_t n;
    uint64_t ids[SNAP_CARDS_MAX];
    cl_card_view_t views[SNAP_CARDS_MAX];
} snap_t;

/* Takes a snapshot with the views of cards a and b (0: none). */
static snap_t
s_snap(uint64_t a, uint64_t b)
{
    snap_t s;
    memset(&s, 0, sizeof(s));
    cl_reply_t st = s_status();
    s.head = st.status_head_seq;
    s.cards = st.status_cards;
    const uint64_t ids[SNAP_CARDS_MAX] = { a, b };
    for (size_t i = 0; i < SNAP_CARDS_MAX; i++) {
        if (ids[i] != 0) {
            s.ids[s.n] = ids[i];
            s.views[s.n++] = s_view(ids[i]);
        }
    }
    return s;
}

/* Every field of two views of one card, named when it differs. */
static void
s_view_same_at(const char *file, int line, const cl_card_view_t *a, const cl_card_view_t *b)
{
    unsigned long long id = (unsigned long long)a->card_id;
#define SAME_NUM(f)                                                                   \
    do {                                                                              \
        if (a->f != b->f)                                                             \
            check_fail(file, line, "card %llu: " #f " changed from %lld to %lld", id, \
                       (long long)a->f, (long long)b->f);                             \
    } while (0)
#define SAME_STR(f)                                                                             \
    do {                                                                                        \
        if (strcmp(a->f, b->f) != 0)                                                            \
            check_fail(file, line, "card %llu: " #f " changed from \"%s\" to \"%s\"", id, a->f, \
                       b->f);                                                                   \
    } while (0)
    SAME_NUM(card_id);
    SAME_STR(code_masked);
    SAME_STR(merchant_id);
    SAME_STR(program_id);
    SAME_NUM(kind);
    SAME_STR(currency);
    SAME_NUM(state);
    SAME_NUM(frozen);
    SAME_NUM(locked);
    SAME_NUM(balance_minor);
    SAME_NUM(uses_left);
    SAME_NUM(face_value_minor);
    SAME_NUM(issued_at_us);
    SAME_NUM(valid_from_us);
    SAME_NUM(expires_at_us);
    SAME_STR(holder);
    SAME_NUM(pin_failures);
    SAME_NUM(open_offer_id);
    SAME_NUM(transfers_done);
    SAME_NUM(redeemed_minor);
#undef SAME_NUM
#undef SAME_STR
}

/* Checks that the journal head, the card count and the snapshot's cards are as they were. */
static void
s_unchanged_at(const char *file, int line, const snap_t *before)
{
    snap_t now = s_snap(before->n > 0 ? before->ids[0] : 0, before->n > 1 ? before->ids[1] : 0);
    if (now.head != before->head)
        check_fail(file, line, "the journal head moved from %llu to %llu",
                   (unsigned long long)before->head, (unsigned long long)now.head);
    if (now.cards != before->cards)
        check_fail(file, line, "the card count moved from %llu to %llu",
                   (unsigned long long)before->cards, (unsigned long long)now.cards);
    for (size_t i = 0; i < before->n; i++)
        s_view_same_at(file, line, &before->views[i], &now.views[i]);
}

#define CHECK_UNCHANGED(snap) s_unchanged_at(__FILE__, __LINE__, (snap))

/* Checks that a reply is a refusal with `want`: a sentence, no result, no event. */
static void
s_refusal_at(const char *file, int line, const cl_reply_t *r, cl_status_t want)
{
    if (r->status != want)
        check_fail(file, line, "expected %s, got %s: %s", cl_status_name(want),
                   cl_status_name(r->status), r->message);
    if (r->message[0] == '\0')
        check_fail(file, line, "the %s refusal has no sentence", cl_status_name(want));
    if (r->replayed)
        check_fail(file, line, "a first refusal is marked replayed");
    if (r->result != CL_RES_NONE)
        check_fail(file, line, "a refusal carries result %d", (int)r->result);
    if (r->last_seq != 0)
        check_fail(file, line, "a refusal appended event %llu", (unsigned long long)r->last_seq);
}

/*
 * Sends c, which must be refused with `want`, and checks that nothing changed: the reply holds
 * no event and no result, and the journal head, the card count and cards a and b (0: none) read
 * back as before. Returns the reply.
 */
static cl_reply_t
s_refused_at(const char *file, int line, const cl_command_t *c, cl_status_t want, uint64_t a,
             uint64_t b)
{
    snap_t before = s_snap(a, b);
    cl_reply_t r = *s_call(c);
    s_refusal_at(file, line, &r, want);
    s_unchanged_at(file, line, &before);
    return r;
}

#define REFUSED(c, want, a, b)  s_refused_at(__FILE__, __LINE__, (c), (want), (a), (b))
#define REFUSED1(c, want, card) REFUSED((c), (want), (card), 0)

/* ---- The journal ---------------------------------------------------------------------------- */

/* Reads events from..to (inclusive) of the running daemon's journal into out. Returns how many. */
static size_t
s_journal_events(uint64_t from, uint64_t to, cl_event_t *out, size_t cap)
{
    static uint8_t payload[CODEC_EVENT_MAX_BYTES];
    char path[512];
    journal_t *j = NULL;
    journal_opts_t o;
    memset(&o, 0, sizeof(o));
    o.read_only = true;
    snprintf(path, sizeof(path), "%s/journal", harness_data_dir(H));
    REQUIRE(journal_open(path, &o, &j) == 0);
    size_t n = 0;
    for (uint64_t seq = from; seq <= to && n < cap; seq++) {
        journal_entry_t e;
        int rc = journal_read(j, seq, payload, sizeof(payload), &e);
        if (rc != 0) {
            check_fail(__FILE__, __LINE__, "journal_read(%llu): %s", (unsigned long long)seq,
                       journal_strerror(rc));
            break;
        }
        rc = codec_event_decode(e.payload, e.payload_len, &out[n]);
        if (rc != 0) {
            check_fail(__FILE__, __LINE__, "event %llu: %s", (unsigned long long)seq,
                       codec_strerror(rc));
            break;
        }
        out[n++].seq = seq;
    }
    journal_close(&j);
    return n;
}

/* ---- Building frames by hand ---------------------------------------------------------------- */

static size_t
s_pb_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* A length-delimited field (string, bytes, message). */
static size_t
s_pb_bytes(uint8_t *p, unsigned field, const void *data, size_t len)
{
    size_t n = s_pb_varint(p, (uint64_t)field << 3 | 2);
    n += s_pb_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

static size_t
s_pb_uint(uint8_t *p, unsigned field, uint64_t v)
{
    size_t n = s_pb_varint(p, (uint64_t)field << 3);
    return n + s_pb_varint(p + n, v);
}

/* Frames one packed Request as a RequestBatch and sends it; returns its one reply (R[0]). */
static const cl_reply_t *
s_send_request_bytes(const uint8_t *req, size_t len)
{
    static uint8_t frame[4096];
    size_t frame_len = 0, n = 0;
    const uint8_t *reqs[1] = { req };
    REQUIRE(codec_request_batch_frame(reqs, &len, 1, frame, sizeof(frame), &frame_len) == 0);
    REQUIRE(harness_client_send_raw(C, frame, frame_len) == 0);
    REQUIRE(harness_client_recv(C, TIMEOUT_MS, R, CL_BATCH_REQUESTS_MAX, &n) == 0);
    REQUIRE(n == 1);
    return &R[0];
}

/* ---- Idempotency ---------------------------------------------------------------------------- */

static void
same_request_id_with_the_same_content_replays_and_with_other_content_is_refused(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);
    cl_command_t redeem = s_redeem_cmd(card, "s1", 2500);
    cl_reply_t first = *s_ok(&redeem);
    CHECK(!first.replayed);
    CHECK(first.last_seq != 0);
    CHECK_EQ_INT(first.card.balance_minor, 7500);

    snap_t before = s_snap(card, 0);
    const cl_reply_t *r = s_call(&redeem);
    CHECK_STATUS(r, CL_OK);
    CHECK(r->replayed);
    CHECK_EQ_U64(r->last_seq, first.last_seq);
    CHECK_EQ_INT(r->card.balance_minor, 7500);
    CHECK_UNCHANGED(&before);

    cl_command_t other = redeem;
    other.u.redeem.amount_minor = 100;
    REFUSED1(&other, CL_REQUEST_ID_REUSED, card);
    CHECK_EQ_INT(s_view(card).balance_minor, 7500);
}

/* ---- Who and where -------------------------------------------------------------------------- */

static void
unknown_merchant_store_program_and_card_are_refused_and_change_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);

    cl_command_t c = s_issue_cmd("m9", "gift", "alice", 10000);
    REFUSED(&c, CL_UNKNOWN_MERCHANT, 0, 0);
    c = s_issue_cmd("m1", "nope", "alice", 10000);
    REFUSED(&c, CL_UNKNOWN_PROGRAM, 0, 0);
    c = s_redeem_cmd(card, "nowhere", 100);
    REFUSED1(&c, CL_UNKNOWN_STORE, card);
    /* m2's store is not one of m1's. */
    c = s_redeem_cmd(card, "t1", 100);
    REFUSED1(&c, CL_UNKNOWN_STORE, card);
    c = s_redeem_cmd(999999, "s1", 100);
    REFUSED(&c, CL_UNKNOWN_CARD, 0, 0);
    c = s_redeem_cmd(0, "s1", 100);
    snprintf(c.u.redeem.card.code, sizeof(c.u.redeem.card.code), "0000000000000000000");
    REFUSED(&c, CL_UNKNOWN_CARD, 0, 0);

    c = s_cmd(CL_CMD_REGISTER_STORE);
    snprintf(c.u.register_store.merchant_id, CL_ID_MAX + 1, "m9");
    snprintf(c.u.register_store.store_id, CL_ID_MAX + 1, "x1");
    snprintf(c.u.register_store.region, CL_REGION_MAX + 1, "310000");
    REFUSED(&c, CL_UNKNOWN_MERCHANT, 0, 0);
    c = s_cmd(CL_CMD_DEFINE_PROGRAM);
    c.u.program = s_spec("m9", "ghost", CL_KIND_STORED_VALUE);
    REFUSED(&c, CL_UNKNOWN_MERCHANT, 0, 0);
    /* The refused definition made no program. */
    c = s_issue_cmd("m9", "ghost", "alice", 10000);
    REFUSED(&c, CL_UNKNOWN_MERCHANT, 0, 0);
}

static void
balance_transfer_to_another_merchants_card_is_refused_and_changes_nothing(void)
{
    s_world();
    uint64_t mine = s_issue("m1", "gift", "alice", 20000);
    uint64_t theirs = s_issue("m2", "other", "alice", 10000);
    cl_command_t c = s_transfer_cmd(mine, theirs, 100);
    REFUSED(&c, CL_WRONG_MERCHANT, mine, theirs);
    c = s_transfer_cmd(theirs, mine, 0);
    REFUSED(&c, CL_WRONG_MERCHANT, mine, theirs);
}

static void
redeem_at_a_store_outside_the_programs_stores_or_regions_is_refused_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "local", CL_KIND_STORED_VALUE);
    spec.accept_scope = CL_ACCEPT_STORE_LIST;
    spec.accept_stores_count = 1;
    snprintf(spec.accept_stores[0], sizeof(spec.accept_stores[0]), "s1");
    s_program(&spec);
    spec = s_spec("m1", "north", CL_KIND_STORED_VALUE);
    spec.accept_scope = CL_ACCEPT_REGION_LIST;
    spec.accept_regions_count = 1;
    snprintf(spec.accept_regions[0], sizeof(spec.accept_regions[0]), "110000");
    s_program(&spec);
    uint64_t local = s_issue("m1", "local", "alice", 10000);
    uint64_t north = s_issue("m1", "north", "alice", 10000);

    cl_command_t c = s_redeem_cmd(local, "s2", 100);
    REFUSED1(&c, CL_STORE_NOT_ACCEPTING, local);
    c = s_redeem_cmd(north, "s1", 100);
    REFUSED1(&c, CL_STORE_NOT_ACCEPTING, north);
    /* At the stores the programs name, the same redemptions go through. */
    c = s_redeem_cmd(local, "s1", 100);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 9900);
    c = s_redeem_cmd(north, "s2", 100);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 9900);
}

/* ---- Amounts -------------------------------------------------------------------------------- */

static void
zero_negative_and_over_the_limit_amounts_are_refused_and_change_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);
    uint64_t other = s_issue("m1", "gift", "alice", 10000);

    cl_command_t c = s_redeem_cmd(card, "s1", 0);
    REFUSED1(&c, CL_AMOUNT_INVALID, card);
    c = s_redeem_cmd(card, "s1", -5);
    REFUSED1(&c, CL_AMOUNT_INVALID, card);
    c = s_redeem_cmd(card, "s1", CL_AMOUNT_MAX_MINOR + 1);
    REFUSED1(&c, CL_AMOUNT_ABOVE_LIMIT, card);

    c = s_issue_cmd("m1", "gift", "alice", 0);
    REFUSED(&c, CL_AMOUNT_INVALID, 0, 0);
    c = s_issue_cmd("m1", "gift", "alice", -1);
    REFUSED(&c, CL_AMOUNT_INVALID, 0, 0);
    c = s_issue_cmd("m1", "gift", "alice", CL_AMOUNT_MAX_MINOR + 1);
    REFUSED(&c, CL_AMOUNT_ABOVE_LIMIT, 0, 0);
    /* Above the program's own range (custom_max 1e8). */
    c = s_issue_cmd("m1", "gift", "alice", 100000001);
    REFUSED(&c, CL_DENOMINATION_INVALID, 0, 0);

    c = s_reload_cmd(card, 0);
    REFUSED1(&c, CL_AMOUNT_INVALID, card);
    c = s_reload_cmd(card, -100);
    REFUSED1(&c, CL_AMOUNT_INVALID, card);
    c = s_reload_cmd(card, CL_AMOUNT_MAX_MINOR + 1);
    REFUSED1(&c, CL_AMOUNT_ABOVE_LIMIT, card);

    c = s_transfer_cmd(card, other, -1);
    REFUSED(&c, CL_AMOUNT_INVALID, card, other);
    c = s_transfer_cmd(card, other, CL_AMOUNT_MAX_MINOR + 1);
    REFUSED(&c, CL_AMOUNT_ABOVE_LIMIT, card, other);

    c = s_cmd(CL_CMD_ADJUST);
    c.u.adjust.card.card_id = card;
    c.u.adjust.delta_minor = CL_AMOUNT_MAX_MINOR + 1;
    snprintf(c.u.adjust.reason, sizeof(c.u.adjust.reason), "test");
    REFUSED1(&c, CL_AMOUNT_ABOVE_LIMIT, card);
}

static void
redeem_more_than_the_balance_is_refused_and_changes_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);
    uint64_t other = s_issue("m1", "gift", "alice", 10000);
    cl_command_t c = s_redeem_cmd(card, "s1", 10001);
    REFUSED1(&c, CL_INSUFFICIENT_BALANCE, card);
    c = s_transfer_cmd(card, other, 10001);
    REFUSED(&c, CL_INSUFFICIENT_BALANCE, card, other);
    /* The whole balance is still there to take. */
    c = s_redeem_cmd(card, "s1", 10000);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 0);
    c = s_redeem_cmd(card, "s1", 1);
    REFUSED1(&c, CL_INSUFFICIENT_BALANCE, card);
}

static void
redeem_more_uses_than_the_punch_card_has_is_refused_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "yoga", CL_KIND_PUNCH);
    s_program(&spec);
    uint64_t card = s_issue("m1", "yoga", "alice", 0);
    CHECK_EQ_INT(s_view(card).uses_left, 10);
    cl_command_t c = s_redeem_cmd(card, "s1", 0);
    c.u.redeem.uses = 11;
    REFUSED1(&c, CL_INSUFFICIENT_BALANCE, card);
    c = s_redeem_cmd(card, "s1", 0);
    c.u.redeem.uses = 10;
    CHECK_EQ_INT(s_ok(&c)->card.uses_left, 0);
    c = s_redeem_cmd(card, "s1", 0);
    REFUSED1(&c, CL_INSUFFICIENT_BALANCE, card);
}

/* ---- The card's state ----------------------------------------------------------------------- */

static void
frozen_card_refuses_redeem_gift_reload_and_transfer_and_changes_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);
    uint64_t other = s_issue("m1", "gift", "alice", 10000);
    cl_command_t c = s_flag_cmd(CL_CMD_FREEZE, card);
    s_ok(&c);
    CHECK(s_view(card).frozen);

    c = s_redeem_cmd(card, "s1", 100);
    REFUSED1(&c, CL_CARD_FROZEN, card);
    c = s_gift_cmd(CL_CMD_OFFER_GIFT, card, "alice", "");
    REFUSED1(&c, CL_CARD_FROZEN, card);
    c = s_gift_cmd(CL_CMD_TRANSFER_CARD, card, "alice", "bob");
    REFUSED1(&c, CL_CARD_FROZEN, card);
    c = s_reload_cmd(card, 100);
    REFUSED1(&c, CL_CARD_FROZEN, card);
    c = s_transfer_cmd(card, other, 100);
    REFUSED(&c, CL_CARD_FROZEN, card, other);
    c = s_transfer_cmd(other, card, 100);
    REFUSED(&c, CL_CARD_FROZEN, card, other);
    c = s_flag_cmd(CL_CMD_FREEZE, card);
    REFUSED1(&c, CL_STATE_CONFLICT, card);
}

static void
wrong_pins_append_only_pin_rejected_and_the_fifth_locks_the_card(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "pinned", CL_KIND_STORED_VALUE);
    spec.pin_required = true;
    s_program(&spec);
    char pin[CL_PIN_MAX + 1];
    uint64_t card = s_issue_pin("m1", "pinned", "alice", 10000, pin);
    REQUIRE(strlen(pin) == 6);

    /* No PIN at all is a plain refusal: nothing is written. */
    cl_command_t c = s_redeem_cmd(card, "s1", 100);
    REFUSED1(&c, CL_PIN_REQUIRED, card);

    for (uint32_t i = 1; i <= CL_PIN_FAILURES_LOCK; i++) {
        snap_t before = s_snap(card, 0);
        c = s_redeem_cmd(card, "s1", 100);
        snprintf(c.u.redeem.pin, sizeof(c.u.redeem.pin), "999999x");
        cl_reply_t r = *s_call(&c);
        CHECK_STATUS(&r, CL_PIN_WRONG);
        CHECK(r.result == CL_RES_NONE);

        /* Exactly PinRejected, and CardLocked with it at the fifth. */
        uint64_t want = i < CL_PIN_FAILURES_LOCK ? 1 : 2;
        snap_t after = s_snap(card, 0);
        CHECK_EQ_U64(after.head, before.head + want);
        CHECK_EQ_U64(r.last_seq, after.head);
        CHECK_EQ_U64(after.cards, before.cards);
        cl_event_t evs[2];
        size_t n = s_journal_events(before.head + 1, after.head, evs, 2);
        REQUIRE(n == want);
        CHECK_EQ_STR(cl_event_name(evs[0].type), cl_event_name(CL_EV_PIN_REJECTED));
        CHECK_EQ_U64(evs[0].u.pin.card_id, card);
        CHECK_EQ_INT(evs[0].u.pin.failures_in_row, i);
        if (want == 2) {
            CHECK_EQ_STR(cl_event_name(evs[1].type), cl_event_name(CL_EV_CARD_LOCKED));
            CHECK_EQ_U64(evs[1].u.pin.card_id, card);
        }

        /* The card: one more failure, locked at the fifth, and nothing else moved. */
        cl_card_view_t expect = before.views[0];
        expect.pin_failures = i;
        expect.locked = i == CL_PIN_FAILURES_LOCK;
        s_view_same_at(__FILE__, __LINE__, &expect, &after.views[0]);
    }

    /* Locked: even the right PIN is refused, and now nothing at all is written. */
    c = s_redeem_cmd(card, "s1", 100);
    snprintf(c.u.redeem.pin, sizeof(c.u.redeem.pin), "%s", pin);
    REFUSED1(&c, CL_CARD_LOCKED, card);
    c = s_gift_cmd(CL_CMD_OFFER_GIFT, card, "alice", "");
    snprintf(c.u.gift.pin, sizeof(c.u.gift.pin), "%s", pin);
    REFUSED1(&c, CL_CARD_LOCKED, card);
    c = s_redeem_cmd(card, "s1", 100);
    snprintf(c.u.redeem.pin, sizeof(c.u.redeem.pin), "000000");
    REFUSED1(&c, CL_CARD_LOCKED, card);
    CHECK_EQ_INT(s_view(card).balance_minor, 10000);
}

static void
card_past_its_expiry_refuses_redemption_before_and_after_its_expiry_event(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "day", CL_KIND_STORED_VALUE);
    spec.valid_days = 1;
    spec.remind_days_before_expiry = 0;
    s_program(&spec);
    uint64_t card = s_issue("m1", "day", "alice", 10000);
    uint64_t other = s_issue("m1", "gift", "alice", 10000);
    cl_card_view_t issued = s_view(card);
    REQUIRE(issued.expires_at_us != 0);
    CHECK_EQ_INT(issued.expires_at_us, issued.issued_at_us + DAY_US);

    /*
     * One message: move the clock to exactly the expiry instant, read the card, redeem. The
     * daemon decides the requests of a message in order and fires the timers the clock moved
     * past after them, so the card still reads active (no CardExpired yet) and the redemption
     * is refused anyway.
     */
    uint64_t head = s_head();
    cl_command_t batch[3] = { s_cmd(CL_CMD_ADVANCE_CLOCK), s_cmd(CL_CMD_GET_CARD),
                              s_redeem_cmd(card, "s1", 100) };
    batch[0].u.set_now_us = issued.expires_at_us;
    batch[1].u.card_flag.card.card_id = card;
    REQUIRE(harness_client_call(C, batch, 3, R, TIMEOUT_MS) == 0);
    CHECK_STATUS(&R[0], CL_OK);
    CHECK_EQ_U64(R[0].last_seq, head + 1);
    CHECK_STATUS(&R[1], CL_OK);
    CHECK_EQ_INT(R[1].card.state, CL_CARDSTATE_ACTIVE);
    CHECK_EQ_U64(R[1].as_of_seq, head + 1);
    s_view_same_at(__FILE__, __LINE__, &issued, &R[1].card);
    s_refusal_at(__FILE__, __LINE__, &R[2], CL_CARD_EXPIRED);

    /* What was written: the clock, then the expiry, and no redemption. */
    cl_reply_t st = s_status();
    CHECK_EQ_INT(st.status_now_us, issued.expires_at_us);
    CHECK_EQ_U64(st.status_head_seq, head + 2);
    cl_event_t evs[2];
    size_t n = s_journal_events(head + 1, st.status_head_seq, evs, 2);
    REQUIRE(n == 2);
    CHECK_EQ_STR(cl_event_name(evs[0].type), cl_event_name(CL_EV_CLOCK_ADVANCED));
    CHECK_EQ_STR(cl_event_name(evs[1].type), cl_event_name(CL_EV_CARD_EXPIRED));
    CHECK_EQ_U64(evs[1].u.card_expired.card_id, card);
    CHECK_EQ_INT(evs[1].u.card_expired.breakage_minor, 10000);

    /* After its expiry event the card reads expired and everything else is as issued. */
    cl_card_view_t expired = s_view(card);
    CHECK_EQ_INT(expired.state, CL_CARDSTATE_EXPIRED);
    cl_card_view_t expect = issued;
    expect.state = CL_CARDSTATE_EXPIRED;
    s_view_same_at(__FILE__, __LINE__, &expect, &expired);

    /* ... and refuses redemption, gifts, reloads, transfers, adjustments. */
    cl_command_t c = s_redeem_cmd(card, "s1", 100);
    REFUSED1(&c, CL_CARD_EXPIRED, card);
    c = s_gift_cmd(CL_CMD_TRANSFER_CARD, card, "alice", "bob");
    REFUSED1(&c, CL_CARD_EXPIRED, card);
    c = s_reload_cmd(card, 100);
    REFUSED1(&c, CL_CARD_EXPIRED, card);
    c = s_transfer_cmd(card, other, 100);
    REFUSED(&c, CL_CARD_EXPIRED, card, other);
    c = s_transfer_cmd(other, card, 100);
    REFUSED(&c, CL_CARD_EXPIRED, card, other);
    c = s_cmd(CL_CMD_ADJUST);
    c.u.adjust.card.card_id = card;
    c.u.adjust.delta_minor = 100;
    snprintf(c.u.adjust.reason, sizeof(c.u.adjust.reason), "test");
    REFUSED1(&c, CL_CARD_EXPIRED, card);
}

static void
card_before_its_validity_window_refuses_redemption_and_changes_nothing(void)
{
    s_world();
    int64_t now = s_status().status_now_us;
    cl_program_spec_t spec = s_spec("m1", "summer", CL_KIND_STORED_VALUE);
    spec.has_window = true;
    spec.valid_from_us = now + 10 * DAY_US;
    spec.valid_until_us = now + 300 * DAY_US;
    s_program(&spec);
    uint64_t card = s_issue("m1", "summer", "alice", 10000);
    uint64_t other = s_issue("m1", "gift", "alice", 10000);
    CHECK_EQ_INT(s_view(card).valid_from_us, spec.valid_from_us);
    cl_command_t c = s_redeem_cmd(card, "s1", 100);
    REFUSED1(&c, CL_NOT_YET_VALID, card);
    c = s_transfer_cmd(card, other, 100);
    REFUSED(&c, CL_NOT_YET_VALID, card, other);
}

static void
used_up_voucher_is_refused_as_closed_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "v20once", CL_KIND_VOUCHER_THRESHOLD);
    spec.voucher.threshold_minor = 10000;
    spec.voucher.amount_off_minor = 2000;
    spec.voucher.uses_per_card = 1;
    s_program(&spec);
    uint64_t card = s_issue("m1", "v20once", "alice", 0);
    cl_command_t c = s_voucher_cmd(card, 12000, "");
    const cl_reply_t *r = s_ok(&c);
    CHECK_EQ_INT(r->discount_minor, 2000);
    CHECK_EQ_INT(r->card.state, CL_CARDSTATE_EXHAUSTED);
    c = s_voucher_cmd(card, 12000, "");
    REFUSED1(&c, CL_CARD_CLOSED, card);
}

/* ---- The program ---------------------------------------------------------------------------- */

static void
closed_program_refuses_issue_and_reload_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "closing", CL_KIND_STORED_VALUE);
    s_program(&spec);
    uint64_t card = s_issue("m1", "closing", "alice", 10000);
    cl_command_t c = s_cmd(CL_CMD_CLOSE_PROGRAM);
    snprintf(c.u.close_program.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c.u.close_program.program_id, CL_ID_MAX + 1, "closing");
    s_ok(&c);
    cl_command_t again = c;
    snprintf(again.request_id, sizeof(again.request_id), "%s", s_cmd(CL_CMD_NONE).request_id);
    REFUSED1(&again, CL_STATE_CONFLICT, card);
    c = s_issue_cmd("m1", "closing", "bob", 10000);
    REFUSED(&c, CL_PROGRAM_CLOSED, 0, 0);
    c = s_reload_cmd(card, 100);
    REFUSED1(&c, CL_PROGRAM_CLOSED, card);
    /* A card already sold stays redeemable. */
    c = s_redeem_cmd(card, "s1", 100);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 9900);
}

/* Imported cards (pre-printed or platform codes, PRODUCT.md section 4): a code already a card's,
 * a code of fewer than 6 letters or digits, or a PIN that is not 4 to 12 digits is refused, and
 * nothing changes; a good one is issued under its normalised code and redeems with its PIN. */
static void
imported_codes_and_pins_are_refused_when_taken_short_or_not_digits_and_change_nothing(void)
{
    s_world();
    cl_command_t c = s_issue_cmd("m1", "gift", "alice", 10000);
    snprintf(c.u.issue_card.import_code, CL_CODE_MAX + 1, "pre-7788-9911-a");
    snprintf(c.u.issue_card.import_pin, CL_PIN_MAX + 1, "4829");
    const cl_reply_t *r = s_ok(&c);
    uint64_t card = r->card.card_id;
    CHECK_EQ_STR(r->code, "PRE77889911A");
    static const struct {
        const char *code, *pin;
        cl_status_t want;
    } bad[] = {
        { "PRE 7788 9911 A", "", CL_ALREADY_EXISTS },    /* the same code as typed differently */
        { "AB-12", "", CL_INVALID_ARGUMENT },            /* 4 letters or digits */
        { "GOOD-CODE-77", "48a9", CL_INVALID_ARGUMENT }, /* a PIN with a letter */
        { "GOOD-CODE-78", "123", CL_INVALID_ARGUMENT },  /* a PIN of 3 digits */
        { "GOOD*CODE*79", "", CL_INVALID_ARGUMENT },     /* not letters or digits */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = s_issue_cmd("m1", "gift", "alice", 10000);
        snprintf(c.u.issue_card.import_code, CL_CODE_MAX + 1, "%s", bad[i].code);
        snprintf(c.u.issue_card.import_pin, CL_PIN_MAX + 1, "%s", bad[i].pin);
        REFUSED1(&c, bad[i].want, card);
    }
    c = s_redeem_cmd(card, "s1", 100);
    REFUSED1(&c, CL_PIN_REQUIRED, card);
    c = s_redeem_cmd(card, "s1", 100); /* a new request: the refused one is remembered */
    snprintf(c.u.redeem.pin, sizeof(c.u.redeem.pin), "4829");
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 9900);
}

static void
stock_and_per_holder_limits_refuse_issue_and_gift_claim_and_change_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "few", CL_KIND_STORED_VALUE);
    spec.stock_max = 3;
    spec.per_holder_max = 2;
    s_program(&spec);
    s_issue("m1", "few", "alice", 10000);
    uint64_t alices = s_issue("m1", "few", "alice", 10000);
    cl_command_t c = s_issue_cmd("m1", "few", "alice", 10000);
    REFUSED(&c, CL_HOLDER_LIMIT_REACHED, 0, 0);
    /* The refused issue took no stock: the third card still goes to bob ... */
    uint64_t bobs = s_issue("m1", "few", "bob", 10000);
    /* ... and the stock ends there. */
    c = s_issue_cmd("m1", "few", "carol", 10000);
    REFUSED(&c, CL_STOCK_EXHAUSTED, 0, 0);

    /* bob offers his card; alice, at her limit, cannot claim it, and the offer stays open. */
    c = s_gift_cmd(CL_CMD_OFFER_GIFT, bobs, "bob", "");
    const cl_reply_t *r = s_ok(&c);
    uint64_t offer = r->offer_id;
    char secret[CL_SECRET_MAX + 1];
    snprintf(secret, sizeof(secret), "%s", r->claim_secret);
    REQUIRE(offer != 0 && secret[0] != '\0');
    c = s_claim_cmd(bobs, offer, secret, "alice");
    REFUSED(&c, CL_HOLDER_LIMIT_REACHED, bobs, alices);
    cl_card_view_t v = s_view(bobs);
    CHECK_EQ_STR(v.holder, "bob");
    CHECK_EQ_U64(v.open_offer_id, offer);
    c = s_claim_cmd(bobs, offer, secret, "carol");
    CHECK_EQ_STR(s_ok(&c)->card.holder, "carol");

    /* A direct transfer to alice is refused the same way. */
    c = s_gift_cmd(CL_CMD_TRANSFER_CARD, bobs, "carol", "alice");
    REFUSED(&c, CL_HOLDER_LIMIT_REACHED, bobs, alices);
}

static void
non_transferable_card_and_a_used_up_transfer_limit_are_refused_and_change_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "mine", CL_KIND_STORED_VALUE);
    spec.transferable = false;
    s_program(&spec);
    spec = s_spec("m1", "once", CL_KIND_STORED_VALUE);
    spec.transfers_max = 1;
    s_program(&spec);
    uint64_t mine = s_issue("m1", "mine", "alice", 10000);
    uint64_t once = s_issue("m1", "once", "alice", 10000);

    cl_command_t c = s_gift_cmd(CL_CMD_TRANSFER_CARD, mine, "alice", "bob");
    REFUSED1(&c, CL_NOT_TRANSFERABLE, mine);
    c = s_gift_cmd(CL_CMD_OFFER_GIFT, mine, "alice", "");
    REFUSED1(&c, CL_NOT_TRANSFERABLE, mine);

    c = s_gift_cmd(CL_CMD_TRANSFER_CARD, once, "alice", "bob");
    CHECK_EQ_INT(s_ok(&c)->card.transfers_done, 1);
    c = s_gift_cmd(CL_CMD_TRANSFER_CARD, once, "bob", "carol");
    REFUSED1(&c, CL_NOT_TRANSFERABLE, once);
    c = s_gift_cmd(CL_CMD_OFFER_GIFT, once, "bob", "");
    REFUSED1(&c, CL_NOT_TRANSFERABLE, once);
    CHECK_EQ_STR(s_view(once).holder, "bob");
}

static void
reload_of_a_fixed_card_or_above_the_maximum_balance_is_refused_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "fixed", CL_KIND_STORED_VALUE);
    spec.reloadable = false;
    s_program(&spec);
    uint64_t fixed = s_issue("m1", "fixed", "alice", 10000);
    uint64_t card = s_issue("m1", "gift", "alice", 20000);
    uint64_t other = s_issue("m1", "gift", "alice", 10000);

    cl_command_t c = s_reload_cmd(fixed, 100);
    REFUSED1(&c, CL_NOT_RELOADABLE, fixed);
    /* "gift" holds at most 50000. */
    c = s_reload_cmd(card, 30001);
    REFUSED1(&c, CL_MAX_BALANCE_EXCEEDED, card);
    c = s_reload_cmd(card, 30000);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 50000);
    c = s_reload_cmd(card, 1);
    REFUSED1(&c, CL_MAX_BALANCE_EXCEEDED, card);
    c = s_transfer_cmd(other, card, 1);
    REFUSED(&c, CL_MAX_BALANCE_EXCEEDED, card, other);
}

/* A card is sold at one of its program's prices and within its maximum balance: a stored-value
 * face above the maximum, a punch card's face off its price list, are refused. */
static void
issue_above_the_maximum_balance_or_off_the_price_list_is_refused_and_changes_nothing(void)
{
    s_world();
    /* "gift" sells any amount 1..1e8 but holds at most 50000. */
    cl_command_t c = s_issue_cmd("m1", "gift", "alice", 50001);
    REFUSED(&c, CL_MAX_BALANCE_EXCEEDED, 0, 0);
    c = s_issue_cmd("m1", "gift", "alice", 50000);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 50000);
    cl_program_spec_t spec = s_spec("m1", "punch10", CL_KIND_PUNCH); /* sold at 50000 only */
    s_program(&spec);
    c = s_issue_cmd("m1", "punch10", "alice", 1);
    REFUSED(&c, CL_DENOMINATION_INVALID, 0, 0);
    c = s_issue_cmd("m1", "punch10", "alice", 99999999);
    REFUSED(&c, CL_DENOMINATION_INVALID, 0, 0);
    c = s_issue_cmd("m1", "punch10", "alice", 0); /* no price given: the first one */
    CHECK_EQ_INT(s_ok(&c)->card.face_value_minor, 50000);
}

/* An UpdateProgram leaves the cards already sold as they were: it cannot change how many uses
 * a sold card is worth against, and turning PINs on does not lock out the cards sold without
 * one (the cards issued after it get PINs). */
static void
program_update_keeps_the_cards_already_sold_working_and_worth_the_same(void)
{
    s_world();
    cl_program_spec_t punch = s_spec("m1", "punch-upd", CL_KIND_PUNCH);
    s_program(&punch);
    uint64_t card = s_issue("m1", "punch-upd", "alice", 50000);
    cl_command_t c = s_cmd(CL_CMD_UPDATE_PROGRAM);
    c.u.program = punch;
    c.u.program.uses_per_card = 2;
    REFUSED1(&c, CL_INVALID_ARGUMENT, card);
    c = s_cmd(CL_CMD_UPDATE_PROGRAM);
    c.u.program = punch;
    snprintf(c.u.program.name, sizeof(c.u.program.name), "Ten visits");
    s_ok(&c);

    cl_program_spec_t later = s_spec("m1", "pin-later", CL_KIND_STORED_VALUE);
    s_program(&later);
    uint64_t old = s_issue("m1", "pin-later", "alice", 20000);
    c = s_cmd(CL_CMD_UPDATE_PROGRAM);
    c.u.program = later;
    c.u.program.pin_required = true;
    s_ok(&c);
    char pin[CL_PIN_MAX + 1];
    uint64_t fresh = s_issue_pin("m1", "pin-later", "bob", 20000, pin);
    CHECK(pin[0] != '\0');
    c = s_redeem_cmd(old, "s1", 500);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 19500);
    c = s_redeem_cmd(fresh, "s1", 500);
    REFUSED1(&c, CL_PIN_REQUIRED, fresh);
    c = s_redeem_cmd(fresh, "s1", 500);
    snprintf(c.u.redeem.pin, sizeof(c.u.redeem.pin), "%s", pin);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 19500);
}

/* ---- Reversals, currencies, vouchers -------------------------------------------------------- */

static void
reversal_beyond_the_redemption_or_of_an_unknown_redemption_is_refused_and_changes_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 20000);
    uint64_t other = s_issue("m1", "gift", "alice", 20000);
    cl_command_t c = s_redeem_cmd(card, "s1", 8000);
    uint64_t red = s_ok(&c)->redemption_seq;
    c = s_redeem_cmd(other, "s1", 500);
    uint64_t other_red = s_ok(&c)->redemption_seq;
    REQUIRE(red != 0 && other_red != 0);

    c = s_reverse_cmd(card, red, 8001);
    REFUSED1(&c, CL_REVERSAL_EXCEEDS, card);
    c = s_reverse_cmd(card, red, 3000);
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 15000);
    c = s_reverse_cmd(card, red, 5001);
    REFUSED1(&c, CL_REVERSAL_EXCEEDS, card);
    c = s_reverse_cmd(card, red, 0); /* the rest */
    CHECK_EQ_INT(s_ok(&c)->card.balance_minor, 20000);
    c = s_reverse_cmd(card, red, 0);
    REFUSED1(&c, CL_REVERSAL_EXCEEDS, card);

    c = s_reverse_cmd(card, 999999, 100);
    REFUSED1(&c, CL_UNKNOWN_REDEMPTION, card);
    /* Another card's redemption is not this card's. */
    c = s_reverse_cmd(card, other_red, 100);
    REFUSED(&c, CL_UNKNOWN_REDEMPTION, card, other);
}

static void
balance_transfer_between_currencies_is_refused_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "usd", CL_KIND_STORED_VALUE);
    snprintf(spec.currency, sizeof(spec.currency), "USD");
    s_program(&spec);
    uint64_t cny = s_issue("m1", "gift", "alice", 10000);
    uint64_t usd = s_issue("m1", "usd", "alice", 10000);
    cl_command_t c = s_transfer_cmd(cny, usd, 100);
    REFUSED(&c, CL_CURRENCY_MISMATCH, cny, usd);
    c = s_transfer_cmd(usd, cny, 0);
    REFUSED(&c, CL_CURRENCY_MISMATCH, cny, usd);
}

static void
voucher_below_its_threshold_or_for_an_ineligible_item_is_refused_and_changes_nothing(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "v20", CL_KIND_VOUCHER_THRESHOLD);
    spec.voucher.threshold_minor = 10000;
    spec.voucher.amount_off_minor = 2000;
    s_program(&spec);
    spec = s_spec("m1", "cake", CL_KIND_VOUCHER_EXCHANGE);
    spec.voucher.skus_count = 2;
    snprintf(spec.voucher.skus[0], sizeof(spec.voucher.skus[0]), "CAKE-6IN");
    snprintf(spec.voucher.skus[1], sizeof(spec.voucher.skus[1]), "CAKE-8IN");
    s_program(&spec);
    uint64_t v20 = s_issue("m1", "v20", "alice", 0);
    uint64_t cake = s_issue("m1", "cake", "alice", 0);

    cl_command_t c = s_voucher_cmd(v20, 9999, "");
    REFUSED1(&c, CL_THRESHOLD_NOT_MET, v20);
    c = s_voucher_cmd(cake, 0, "BREAD");
    REFUSED1(&c, CL_ITEM_NOT_ELIGIBLE, cake);
    /* The vouchers are whole: each still takes its one use. */
    c = s_voucher_cmd(v20, 10000, "");
    CHECK_EQ_INT(s_ok(&c)->discount_minor, 2000);
    c = s_voucher_cmd(cake, 0, "CAKE-8IN");
    CHECK_EQ_STR(s_ok(&c)->sku, "CAKE-8IN");
}

/* ---- Messages ------------------------------------------------------------------------------- */

static void
garbage_frame_is_refused_as_malformed_and_changes_nothing(void)
{
    s_world();
    snap_t before = s_snap(0, 0);
    static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    size_t n = 0;
    REQUIRE(harness_client_send_raw(C, junk, sizeof(junk)) == 0);
    REQUIRE(harness_client_recv(C, TIMEOUT_MS, R, CL_BATCH_REQUESTS_MAX, &n) == 0);
    CHECK_EQ_INT(n, 1);
    s_refusal_at(__FILE__, __LINE__, &R[0], CL_MALFORMED);
    CHECK_EQ_STR(R[0].request_id, "");
    CHECK_UNCHANGED(&before);
}

static void
batch_of_more_than_the_request_limit_is_refused_whole_and_changes_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);
    enum { N = CL_BATCH_REQUESTS_MAX + 1, REQ_MAX = 128 };
    static uint8_t bufs[N][REQ_MAX];
    static const uint8_t *reqs[N];
    static size_t lens[N];
    static uint8_t frame[N * (REQ_MAX + 4)];
    for (size_t i = 0; i < N; i++) {
        cl_command_t c = s_redeem_cmd(card, "s1", 1);
        REQUIRE(codec_request_encode(&c, bufs[i], REQ_MAX, &lens[i]) == 0);
        reqs[i] = bufs[i];
    }
    size_t frame_len = 0, n = 0;
    REQUIRE(codec_request_batch_frame(reqs, lens, N, frame, sizeof(frame), &frame_len) == 0);
    snap_t before = s_snap(card, 0);
    REQUIRE(harness_client_send_raw(C, frame, frame_len) == 0);
    REQUIRE(harness_client_recv(C, TIMEOUT_MS, R, CL_BATCH_REQUESTS_MAX, &n) == 0);
    CHECK_EQ_INT(n, 1);
    s_refusal_at(__FILE__, __LINE__, &R[0], CL_TOO_LARGE);
    CHECK_UNCHANGED(&before);
    /* None of the 257 redemptions ran. */
    CHECK_EQ_INT(s_view(card).balance_minor, 10000);
}

static void
string_over_its_limit_is_refused_as_too_large_naming_the_field_and_changes_nothing(void)
{
    s_world();
    uint64_t card = s_issue("m1", "gift", "alice", 10000);
    char long_ref[CL_ORDER_REF_MAX + 17];
    memset(long_ref, 'r', sizeof(long_ref) - 1);
    long_ref[sizeof(long_ref) - 1] = '\0';

    /* Request { request_id, redeem { card { card_id }, store_id, order_ref (80 bytes),
     * amount_minor } }, written field by field: the codec's encoder refuses such a string. */
    uint8_t ref[16], redeem[256], req[512];
    size_t ref_len = s_pb_uint(ref, 2, card);
    size_t redeem_len = s_pb_bytes(redeem, 1, ref, ref_len);
    redeem_len += s_pb_bytes(redeem + redeem_len, 3, "s1", 2);
    redeem_len += s_pb_bytes(redeem + redeem_len, 4, long_ref, strlen(long_ref));
    redeem_len += s_pb_uint(redeem + redeem_len, 5, 100);
    cl_command_t id = s_cmd(CL_CMD_NONE);
    size_t req_len = s_pb_bytes(req, 1, id.request_id, strlen(id.request_id));
    req_len += s_pb_bytes(req + req_len, 26, redeem, redeem_len);

    snap_t before = s_snap(card, 0);
    const cl_reply_t *r = s_send_request_bytes(req, req_len);
    s_refusal_at(__FILE__, __LINE__, r, CL_TOO_LARGE);
    CHECK_EQ_STR(r->request_id, id.request_id);
    CHECK(strstr(r->message, "order_ref") != NULL);
    CHECK_UNCHANGED(&before);

    /* A request id over its limit, on an otherwise good redemption. */
    char long_id[CL_REQUEST_ID_MAX + 2];
    memset(long_id, 'i', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    redeem_len = s_pb_bytes(redeem, 1, ref, ref_len);
    redeem_len += s_pb_bytes(redeem + redeem_len, 3, "s1", 2);
    redeem_len += s_pb_uint(redeem + redeem_len, 5, 100);
    req_len = s_pb_bytes(req, 1, long_id, strlen(long_id));
    req_len += s_pb_bytes(req + req_len, 26, redeem, redeem_len);
    r = s_send_request_bytes(req, req_len);
    s_refusal_at(__FILE__, __LINE__, r, CL_TOO_LARGE);
    CHECK(strstr(r->message, "request_id") != NULL);
    CHECK_UNCHANGED(&before);
}

static void
request_without_a_command_is_refused_as_unknown_and_changes_nothing(void)
{
    s_world();
    uint8_t req[128];
    cl_command_t id = s_cmd(CL_CMD_NONE);
    size_t req_len = s_pb_bytes(req, 1, id.request_id, strlen(id.request_id));
    snap_t before = s_snap(0, 0);
    const cl_reply_t *r = s_send_request_bytes(req, req_len);
    s_refusal_at(__FILE__, __LINE__, r, CL_UNKNOWN_COMMAND);
    CHECK_EQ_STR(r->request_id, id.request_id);
    CHECK_UNCHANGED(&before);

    /* A command field this contract does not know (Request field 45, an empty message). */
    id = s_cmd(CL_CMD_NONE);
    req_len = s_pb_bytes(req, 1, id.request_id, strlen(id.request_id));
    req_len += s_pb_bytes(req + req_len, 45, "", 0);
    r = s_send_request_bytes(req, req_len);
    s_refusal_at(__FILE__, __LINE__, r, CL_UNKNOWN_COMMAND);
    CHECK_EQ_STR(r->request_id, id.request_id);
    CHECK_UNCHANGED(&before);
}

static void
projector_query_sent_to_the_daemon_is_refused_as_wrong_service_and_changes_nothing(void)
{
    s_world();
    /* StoreDay (Request field 63). */
    cl_command_t c = s_cmd((cl_command_type_t)63);
    REFUSED(&c, CL_WRONG_SERVICE, 0, 0);
}

int
main(int argc, char **argv)
{
    static const check_case_t cases[] = {
        CHECK_CASE(same_request_id_with_the_same_content_replays_and_with_other_content_is_refused),
        CHECK_CASE(unknown_merchant_store_program_and_card_are_refused_and_change_nothing),
        CHECK_CASE(balance_transfer_to_another_merchants_card_is_refused_and_changes_nothing),
        CHECK_CASE(
            redeem_at_a_store_outside_the_programs_stores_or_regions_is_refused_and_changes_nothing),
        CHECK_CASE(zero_negative_and_over_the_limit_amounts_are_refused_and_change_nothing),
        CHECK_CASE(redeem_more_than_the_balance_is_refused_and_changes_nothing),
        CHECK_CASE(redeem_more_uses_than_the_punch_card_has_is_refused_and_changes_nothing),
        CHECK_CASE(frozen_card_refuses_redeem_gift_reload_and_transfer_and_changes_nothing),
        CHECK_CASE(wrong_pins_append_only_pin_rejected_and_the_fifth_locks_the_card),
        CHECK_CASE(card_past_its_expiry_refuses_redemption_before_and_after_its_expiry_event),
        CHECK_CASE(card_before_its_validity_window_refuses_redemption_and_changes_nothing),
        CHECK_CASE(used_up_voucher_is_refused_as_closed_and_changes_nothing),
        CHECK_CASE(closed_program_refuses_issue_and_reload_and_changes_nothing),
        CHECK_CASE(
            imported_codes_and_pins_are_refused_when_taken_short_or_not_digits_and_change_nothing),
        CHECK_CASE(stock_and_per_holder_limits_refuse_issue_and_gift_claim_and_change_nothing),
        CHECK_CASE(
            non_transferable_card_and_a_used_up_transfer_limit_are_refused_and_change_nothing),
        CHECK_CASE(
            reload_of_a_fixed_card_or_above_the_maximum_balance_is_refused_and_changes_nothing),
        CHECK_CASE(
            issue_above_the_maximum_balance_or_off_the_price_list_is_refused_and_changes_nothing),
        CHECK_CASE(program_update_keeps_the_cards_already_sold_working_and_worth_the_same),
        CHECK_CASE(
            reversal_beyond_the_redemption_or_of_an_unknown_redemption_is_refused_and_changes_nothing),
        CHECK_CASE(balance_transfer_between_currencies_is_refused_and_changes_nothing),
        CHECK_CASE(
            voucher_below_its_threshold_or_for_an_ineligible_item_is_refused_and_changes_nothing),
        CHECK_CASE(garbage_frame_is_refused_as_malformed_and_changes_nothing),
        CHECK_CASE(batch_of_more_than_the_request_limit_is_refused_whole_and_changes_nothing),
        CHECK_CASE(
            string_over_its_limit_is_refused_as_too_large_naming_the_field_and_changes_nothing),
        CHECK_CASE(request_without_a_command_is_refused_as_unknown_and_changes_nothing),
        CHECK_CASE(
            projector_query_sent_to_the_daemon_is_refused_as_wrong_service_and_changes_nothing),
    };
    int rc = check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
    harness_client_close(&C);
    if (H != NULL && harness_stop(H) != 0) {
        fprintf(stdout, "cardledgerd did not stop cleanly\n");
        rc = 1;
    }
    harness_destroy(&H);
    return rc;
}
