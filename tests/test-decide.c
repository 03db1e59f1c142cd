/*
 * test-decide: the ledger's rules, decided and folded without a socket or a disk.
 *
 * A tiny in-test engine runs each command the way the daemon does: decide() against the
 * ledger, ledger_apply() of every event in order, decide_finish(). Every refusal is checked
 * for its status and for "nothing changed": no events (but the security events of a wrong PIN)
 * and the same ledger digest as before. The clock and the randomness are the test's own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "decide.h"
#include "ledger.h"
#include "table.h"

#define DAY_US  (86400LL * 1000000LL)
#define T0      1767225600000000LL /* 2026-01-01T00:00:00Z */
#define LOG_MAX 4096

static ledger_t *L;
static int64_t now_us;
static uint64_t next_seq;
static uint64_t rng_state;
static uint8_t key[DECIDE_KEY_LEN];
static cl_event_t events[DECIDE_EVENTS_MAX];
static cl_issued_row_t rows[CL_ISSUE_BATCH_MAX];
static cl_reply_t reply;
static size_t last_events;
static cl_event_t *event_log; /* every event applied, for replays */
static size_t event_log_count;
static cl_principal_t operator_p = { .role = CL_ROLE_OPERATOR, .name = "test" };

static void
s_random(void *buf, size_t len, void *ctx)
{
    (void)ctx;
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        p[i] = (uint8_t)(rng_state >> 24);
    }
}

static void
s_reset(void)
{
    ledger_destroy(&L);
    REQUIRE(ledger_new(&L) == 0);
    now_us = T0;
    next_seq = 1;
    rng_state = 0x9e3779b97f4a7c15ULL;
    memset(key, 7, sizeof(key));
    if (event_log == NULL)
        event_log = calloc(LOG_MAX, sizeof(*event_log));
    REQUIRE(event_log != NULL);
    event_log_count = 0;
}

static decide_ctx_t
s_ctx(void)
{
    decide_ctx_t ctx = {
        .now_us = now_us, .next_seq = next_seq, .key = key, .random = s_random, .test_clock = true
    };
    return ctx;
}

static void
s_apply_out(decide_out_t *out)
{
    for (size_t i = 0; i < out->events_count; i++) {
        int rc = ledger_apply(L, &out->events[i]);
        if (rc != 0)
            check_fail(__FILE__, __LINE__, "ledger_apply: %s", ledger_strerror(rc));
        if (event_log_count < LOG_MAX)
            event_log[event_log_count++] = out->events[i];
    }
    next_seq += out->events_count;
    last_events = out->events_count;
}

/* Runs one command as `who`, the way the daemon does. */
static const cl_reply_t *
s_run_as(const cl_principal_t *who, cl_command_t *cmd)
{
    static unsigned request_counter;
    if (cmd->request_id[0] == '\0')
        snprintf(cmd->request_id, sizeof(cmd->request_id), "req-%u", ++request_counter);
    decide_ctx_t ctx = s_ctx();
    decide_out_t out = { events, DECIDE_EVENTS_MAX, 0, &reply, rows, CL_ISSUE_BATCH_MAX };
    int rc = decide(L, who, cmd, &ctx, &out);
    if (rc != 0)
        check_fail(__FILE__, __LINE__, "decide: %s", decide_strerror(rc));
    s_apply_out(&out);
    decide_finish(L, cmd, &out);
    return &reply;
}

static const cl_reply_t *
s_run(cl_command_t *cmd)
{
    return s_run_as(&operator_p, cmd);
}

/* Fires every timer due at now_us, as the daemon's loop does. */
static size_t
s_fire_timers(void)
{
    size_t fired = 0;
    ledger_timer_t t;
    while (ledger_timer_peek(L, &t) && t.due_us <= now_us) {
        ledger_timer_pop(L);
        decide_ctx_t ctx = s_ctx();
        decide_out_t out = { events, DECIDE_EVENTS_MAX, 0, &reply, rows, CL_ISSUE_BATCH_MAX };
        REQUIRE(decide_timer(L, &t, &ctx, &out) == 0);
        s_apply_out(&out);
        fired += out.events_count;
    }
    return fired;
}

static void
s_digest(uint8_t out[16])
{
    ledger_digest(L, out);
}

/* Runs a command that must be refused with `status` and change nothing. */
#define CHECK_REFUSED_AS(who, cmd, want)                                \
    do {                                                                \
        uint8_t before_[16], after_[16];                                \
        s_digest(before_);                                              \
        const cl_reply_t *r_ = s_run_as((who), (cmd));                  \
        s_digest(after_);                                               \
        CHECK_EQ_STR(cl_status_name(r_->status), cl_status_name(want)); \
        CHECK_EQ_INT(last_events, 0);                                   \
        CHECK(memcmp(before_, after_, 16) == 0);                        \
        CHECK(r_->message[0] != '\0');                                  \
    } while (0)

#define CHECK_REFUSED(cmd, want) CHECK_REFUSED_AS(&operator_p, cmd, want)

#define CHECK_OK(r)                                                                                \
    do {                                                                                           \
        const cl_reply_t *ok_ = (r);                                                               \
        if (ok_->status != CL_OK)                                                                  \
            check_fail(__FILE__, __LINE__, "expected ok, got %s: %s", cl_status_name(ok_->status), \
                       ok_->message);                                                              \
    } while (0)

/* ---- Building commands -------------------------------------------------------------------- */

static cl_command_t cmd;

static cl_command_t *
s_cmd(cl_command_type_t type)
{
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = type;
    return &cmd;
}

static void
s_merchant(const char *id)
{
    cl_command_t *c = s_cmd(CL_CMD_REGISTER_MERCHANT);
    snprintf(c->u.register_merchant.merchant_id, CL_ID_MAX + 1, "%s", id);
    snprintf(c->u.register_merchant.name, CL_NAME_MAX + 1, "Merchant %s", id);
    CHECK_OK(s_run(c));
}

static void
s_store(const char *merchant, const char *store, const char *region)
{
    cl_command_t *c = s_cmd(CL_CMD_REGISTER_STORE);
    snprintf(c->u.register_store.merchant_id, CL_ID_MAX + 1, "%s", merchant);
    snprintf(c->u.register_store.store_id, CL_ID_MAX + 1, "%s", store);
    snprintf(c->u.register_store.region, CL_REGION_MAX + 1, "%s", region);
    CHECK_OK(s_run(c));
}

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
        s.denoms_count = 2;
        s.denoms_minor[0] = 10000;
        s.denoms_minor[1] = 20000;
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
    cl_command_t *c = s_cmd(CL_CMD_DEFINE_PROGRAM);
    c->u.program = *spec;
    CHECK_OK(s_run(c));
}

/* Issues one card; returns its id and writes its code (and PIN, when it has one). */
static uint64_t
s_issue(const char *merchant, const char *program, const char *holder, int64_t face,
        char code[CL_CODE_MAX + 1], char pin[CL_PIN_MAX + 1])
{
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "%s", merchant);
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "%s", program);
    snprintf(c->u.issue_card.holder, CL_HOLDER_MAX + 1, "%s", holder);
    c->u.issue_card.channel = CL_CHANNEL_ONLINE;
    snprintf(c->u.issue_card.region, CL_REGION_MAX + 1, "310000");
    c->u.issue_card.face_value_minor = face;
    const cl_reply_t *r = s_run(c);
    CHECK_OK(r);
    if (code != NULL)
        snprintf(code, CL_CODE_MAX + 1, "%s", r->code);
    if (pin != NULL)
        snprintf(pin, CL_PIN_MAX + 1, "%s", r->pin);
    return r->card.card_id;
}

static cl_command_t *
s_redeem_cmd(uint64_t card_id, const char *store, int64_t amount)
{
    cl_command_t *c = s_cmd(CL_CMD_REDEEM);
    c->u.redeem.card.card_id = card_id;
    snprintf(c->u.redeem.store_id, CL_ID_MAX + 1, "%s", store);
    snprintf(c->u.redeem.order_ref, CL_ORDER_REF_MAX + 1, "order-1");
    c->u.redeem.amount_minor = amount;
    return c;
}

static const ledger_card_t *
s_card(uint64_t id)
{
    const ledger_card_t *c = ledger_card(L, id);
    REQUIRE(c != NULL);
    return c;
}

/* One merchant "m1" with stores s1 (region 310000) and s2 (region 110000), program "gift". */
static void
s_world(void)
{
    s_reset();
    s_merchant("m1");
    s_store("m1", "s1", "310000");
    s_store("m1", "s2", "110000");
    cl_program_spec_t spec = s_spec("m1", "gift", CL_KIND_STORED_VALUE);
    s_program(&spec);
}

/* ---- Cases -------------------------------------------------------------------------------- */

/* Lookups of programs that differ in one id only, one after the other, each find their own
 * (ledger_program() checks the program it found last first). */
static void
programs_are_found_by_both_ids_one_after_the_other(void)
{
    s_world();
    s_merchant("m2");
    cl_program_spec_t spec = s_spec("m1", "gift2", CL_KIND_STORED_VALUE);
    s_program(&spec);
    spec = s_spec("m2", "gift", CL_KIND_PUNCH);
    s_program(&spec);
    for (int round = 0; round < 3; round++) {
        const ledger_program_t *a = ledger_program(L, "m1", "gift");
        const ledger_program_t *b = ledger_program(L, "m1", "gift2");
        const ledger_program_t *c = ledger_program(L, "m2", "gift");
        REQUIRE(a != NULL && b != NULL && c != NULL);
        CHECK(a != b && b != c && a != c);
        CHECK(strcmp(a->spec.program_id, "gift") == 0 && strcmp(a->spec.merchant_id, "m1") == 0);
        CHECK(strcmp(b->spec.program_id, "gift2") == 0 && b->spec.kind == CL_KIND_STORED_VALUE);
        CHECK(strcmp(c->spec.merchant_id, "m2") == 0 && c->spec.kind == CL_KIND_PUNCH);
        CHECK(ledger_program(L, "m1", "gift") == a);
        CHECK(ledger_program(L, "m2", "gift2") == NULL);
        CHECK(ledger_program(L, "m1", "gif") == NULL);
        CHECK(ledger_program(L, "m", "gift") == NULL);
    }
    /* An update changes the record the lookup gives. */
    cl_command_t *u = s_cmd(CL_CMD_UPDATE_PROGRAM);
    u->u.program = s_spec("m1", "gift", CL_KIND_STORED_VALUE);
    snprintf(u->u.program.name, sizeof(u->u.program.name), "Renamed");
    CHECK_OK(s_run(u));
    CHECK(strcmp(ledger_program(L, "m1", "gift")->spec.name, "Renamed") == 0);
}

static void
issued_card_has_a_luhn_checked_code_and_full_balance(void)
{
    s_world();
    char code[CL_CODE_MAX + 1];
    uint64_t id = s_issue("m1", "gift", "alice", 20000, code, NULL);
    CHECK_EQ_U64(id, 1);
    CHECK_EQ_INT(strlen(code), 19);
    int sum = 0;
    for (int i = 0; i < 19; i++) {
        int v = code[18 - i] - '0';
        if (i % 2 == 1) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    CHECK_EQ_INT(sum % 10, 0);
    CHECK_EQ_INT(s_card(id)->balance_minor, 20000);
    CHECK(ledger_card_by_code(L, code) == s_card(id));
    CHECK_EQ_INT(reply.card.balance_minor, 20000);
    CHECK(strstr(reply.card.code_masked, code) == NULL);
    CHECK_EQ_INT(s_card(id)->expires_at_us, T0 + 365 * DAY_US);
}

static void
partial_redemption_reduces_the_balance(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    const cl_reply_t *r = s_run(s_redeem_cmd(id, "s1", 1250));
    CHECK_OK(r);
    CHECK_EQ_INT(r->card.balance_minor, 18750);
    CHECK_EQ_INT(r->amount_minor, 1250);
    CHECK_EQ_U64(r->redemption_seq, next_seq - 1);
    const ledger_redemption_t *red = ledger_redemption(L, r->redemption_seq);
    REQUIRE(red != NULL);
    CHECK_EQ_INT(red->amount_minor, 1250);
}

static void
redeem_more_than_balance_is_refused(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", 10001), CL_INSUFFICIENT_BALANCE);
    CHECK_EQ_INT(s_card(id)->balance_minor, 10000);
}

static void
redeem_of_zero_negative_or_huge_amounts_is_refused(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", 0), CL_AMOUNT_INVALID);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", -5), CL_AMOUNT_INVALID);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", CL_AMOUNT_MAX_MINOR + 1), CL_AMOUNT_ABOVE_LIMIT);
}

static void
unknown_merchant_store_program_and_card_are_refused(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_redeem_cmd(id, "nowhere", 100), CL_UNKNOWN_STORE);
    CHECK_REFUSED(s_redeem_cmd(999, "s1", 100), CL_UNKNOWN_CARD);
    cl_command_t *c = s_redeem_cmd(0, "s1", 100);
    snprintf(c->u.redeem.card.code, sizeof(c->u.redeem.card.code), "0000000000000000000");
    CHECK_REFUSED(c, CL_UNKNOWN_CARD);
    c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m9");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "gift");
    c->u.issue_card.channel = CL_CHANNEL_ONLINE;
    c->u.issue_card.face_value_minor = 10000;
    CHECK_REFUSED(c, CL_UNKNOWN_MERCHANT);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "nope");
    CHECK_REFUSED(c, CL_UNKNOWN_PROGRAM);
}

static void
another_merchants_principal_cannot_touch_the_card(void)
{
    s_world();
    s_merchant("m2");
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    cl_principal_t other = { .role = CL_ROLE_MERCHANT_ADMIN, .merchant_id = "m2" };
    CHECK_REFUSED_AS(&other, s_redeem_cmd(id, "s1", 100), CL_WRONG_MERCHANT);
    cl_command_t *c = s_cmd(CL_CMD_GET_CARD);
    c->u.card_flag.card.card_id = id;
    CHECK_REFUSED_AS(&other, c, CL_WRONG_MERCHANT);
    cl_principal_t analyst = { .role = CL_ROLE_ANALYST, .merchant_id = "m1" };
    CHECK_REFUSED_AS(&analyst, s_redeem_cmd(id, "s1", 100), CL_PERMISSION_DENIED);
}

static void
store_terminal_redeems_and_reverses_only_at_its_own_store(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    cl_principal_t terminal = { .role = CL_ROLE_STORE_TERMINAL,
                                .merchant_id = "m1",
                                .store_id = "s1" };
    CHECK_REFUSED_AS(&terminal, s_redeem_cmd(id, "s2", 100), CL_PERMISSION_DENIED);
    CHECK_OK(s_run_as(&terminal, s_redeem_cmd(id, "s1", 100)));
    /* It reverses only the redemptions made at its own store. */
    uint64_t at_s2 = s_run(s_redeem_cmd(id, "s2", 300))->redemption_seq;
    uint64_t at_s1 = s_run(s_redeem_cmd(id, "s1", 200))->redemption_seq;
    cl_command_t *c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = id;
    c->u.reverse.redemption_seq = at_s2;
    CHECK_REFUSED_AS(&terminal, c, CL_PERMISSION_DENIED);
    c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = id;
    c->u.reverse.redemption_seq = at_s1;
    CHECK_OK(s_run_as(&terminal, c));
    CHECK_EQ_INT(s_card(id)->balance_minor, 10000 - 100 - 300);
}

static void
store_outside_the_programs_stores_or_regions_is_refused(void)
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
    uint64_t a = s_issue("m1", "local", "alice", 10000, NULL, NULL);
    uint64_t b = s_issue("m1", "north", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_redeem_cmd(a, "s2", 100), CL_STORE_NOT_ACCEPTING);
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 100)));
    CHECK_REFUSED(s_redeem_cmd(b, "s1", 100), CL_STORE_NOT_ACCEPTING);
    CHECK_OK(s_run(s_redeem_cmd(b, "s2", 100)));
}

static cl_command_t *
s_flag_cmd(cl_command_type_t type, uint64_t id)
{
    cl_command_t *c = s_cmd(type);
    c->u.card_flag.card.card_id = id;
    snprintf(c->u.card_flag.reason, sizeof(c->u.card_flag.reason), "test");
    return c;
}

static cl_command_t *
s_reload_cmd(uint64_t id, int64_t amount)
{
    cl_command_t *c = s_cmd(CL_CMD_RELOAD);
    c->u.reload.card.card_id = id;
    c->u.reload.amount_minor = amount;
    return c;
}

static cl_command_t *
s_gift_cmd(cl_command_type_t type, uint64_t id, const char *from, const char *to)
{
    cl_command_t *c = s_cmd(type);
    c->u.gift.card.card_id = id;
    snprintf(c->u.gift.from_holder, sizeof(c->u.gift.from_holder), "%s", from);
    snprintf(c->u.gift.to_holder, sizeof(c->u.gift.to_holder), "%s", to);
    return c;
}

static cl_command_t *
s_transfer_cmd(uint64_t from, uint64_t to, int64_t amount)
{
    cl_command_t *c = s_cmd(CL_CMD_TRANSFER_BALANCE);
    c->u.transfer_balance.from_card.card_id = from;
    c->u.transfer_balance.to_card.card_id = to;
    c->u.transfer_balance.amount_minor = amount;
    return c;
}

static void
frozen_card_refuses_redeem_gift_reload_and_transfer(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    uint64_t other = s_issue("m1", "gift", "bob", 10000, NULL, NULL);
    CHECK_OK(s_run(s_flag_cmd(CL_CMD_FREEZE, id)));
    CHECK(s_card(id)->frozen);
    CHECK_REFUSED(s_flag_cmd(CL_CMD_FREEZE, id), CL_STATE_CONFLICT);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", 100), CL_CARD_FROZEN);
    CHECK_REFUSED(s_gift_cmd(CL_CMD_OFFER_GIFT, id, "alice", ""), CL_CARD_FROZEN);
    CHECK_REFUSED(s_reload_cmd(id, 100), CL_CARD_FROZEN);
    CHECK_REFUSED(s_transfer_cmd(id, other, 100), CL_CARD_FROZEN);
    CHECK_REFUSED(s_transfer_cmd(other, id, 100), CL_CARD_FROZEN);
    CHECK_OK(s_run(s_flag_cmd(CL_CMD_UNFREEZE, id)));
    CHECK_OK(s_run(s_redeem_cmd(id, "s1", 100)));
    CHECK_REFUSED(s_flag_cmd(CL_CMD_UNFREEZE, id), CL_STATE_CONFLICT);
}

static void
card_past_expiry_refuses_redemption_before_its_expiry_event(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    now_us = T0 + 365 * DAY_US; /* the expiry instant; no timer has fired */
    CHECK_EQ_INT(s_card(id)->state, CL_CARDSTATE_ACTIVE);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", 100), CL_CARD_EXPIRED);
}

static void
expiry_timer_records_breakage_once(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    CHECK_OK(s_run(s_redeem_cmd(id, "s1", 5000)));
    now_us = T0 + 400 * DAY_US;
    size_t fired = s_fire_timers();
    CHECK_EQ_INT(fired, 1); /* the reminder is stale once the card has expired */
    CHECK_EQ_INT(s_card(id)->state, CL_CARDSTATE_EXPIRED);
    const cl_event_t *last = &event_log[event_log_count - 1];
    CHECK_EQ_INT(last->type, CL_EV_CARD_EXPIRED);
    CHECK_EQ_INT(last->u.card_expired.breakage_minor, 15000);
    CHECK_EQ_INT(s_fire_timers(), 0);
}

static void
reminder_fires_once_before_expiry_for_cards_with_value(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    uint64_t empty = s_issue("m1", "gift", "bob", 10000, NULL, NULL);
    CHECK_OK(s_run(s_redeem_cmd(empty, "s1", 10000)));
    now_us = T0 + 336 * DAY_US; /* 29 days before expiry */
    CHECK_EQ_INT(s_fire_timers(), 1);
    CHECK_EQ_INT(event_log[event_log_count - 1].type, CL_EV_EXPIRY_REMINDED);
    CHECK_EQ_U64(event_log[event_log_count - 1].u.expiry_reminded.card_id, id);
    CHECK(s_card(id)->reminded);
    CHECK(!s_card(empty)->reminded);
    CHECK_EQ_INT(s_fire_timers(), 0);
}

static void
five_wrong_pins_in_a_row_lock_the_card_until_unlocked(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "pinned", CL_KIND_STORED_VALUE);
    spec.pin_required = true;
    s_program(&spec);
    char pin[CL_PIN_MAX + 1];
    uint64_t id = s_issue("m1", "pinned", "alice", 10000, NULL, pin);
    CHECK_EQ_INT(strlen(pin), 6);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", 100), CL_PIN_REQUIRED);
    for (int i = 1; i <= CL_PIN_FAILURES_LOCK; i++) {
        cl_command_t *c = s_redeem_cmd(id, "s1", 100);
        snprintf(c->u.redeem.pin, sizeof(c->u.redeem.pin), "%s", "999999x");
        const cl_reply_t *r = s_run(c);
        CHECK_EQ_INT(r->status, CL_PIN_WRONG);
        CHECK_EQ_INT(last_events, i < CL_PIN_FAILURES_LOCK ? 1 : 2);
        CHECK_EQ_INT(s_card(id)->pin_failures, i);
    }
    CHECK(s_card(id)->locked);
    CHECK_EQ_INT(s_card(id)->balance_minor, 10000);
    cl_command_t *c = s_redeem_cmd(id, "s1", 100);
    snprintf(c->u.redeem.pin, sizeof(c->u.redeem.pin), "%s", pin);
    CHECK_REFUSED(c, CL_CARD_LOCKED);
    CHECK_OK(s_run(s_flag_cmd(CL_CMD_UNLOCK, id)));
    c = s_redeem_cmd(id, "s1", 100);
    snprintf(c->u.redeem.pin, sizeof(c->u.redeem.pin), "%s", pin);
    CHECK_OK(s_run(c));
    CHECK_EQ_INT(s_card(id)->pin_failures, 0);
}

static void
punch_card_spends_uses_and_refuses_when_used_up(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "yoga", CL_KIND_PUNCH);
    s_program(&spec);
    uint64_t id = s_issue("m1", "yoga", "alice", 0, NULL, NULL);
    CHECK_EQ_INT(s_card(id)->uses_left, 10);
    cl_command_t *c = s_redeem_cmd(id, "s1", 0);
    c->u.redeem.uses = 9;
    CHECK_OK(s_run(c));
    c = s_redeem_cmd(id, "s1", 0);
    c->u.redeem.uses = 2;
    CHECK_REFUSED(c, CL_INSUFFICIENT_BALANCE);
    CHECK_OK(s_run(s_redeem_cmd(id, "s1", 0)));
    CHECK_EQ_INT(s_card(id)->uses_left, 0);
    CHECK_REFUSED(s_redeem_cmd(id, "s1", 0), CL_INSUFFICIENT_BALANCE);
}

static cl_command_t *
s_voucher_cmd(uint64_t id, int64_t order, const char *sku)
{
    cl_command_t *c = s_redeem_cmd(id, "s1", 0);
    c->u.redeem.order_amount_minor = order;
    snprintf(c->u.redeem.sku, sizeof(c->u.redeem.sku), "%s", sku);
    return c;
}

static void
threshold_voucher_takes_its_amount_off_orders_at_or_above_the_threshold(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "v20", CL_KIND_VOUCHER_THRESHOLD);
    spec.voucher.threshold_minor = 10000;
    spec.voucher.amount_off_minor = 2000;
    spec.voucher.uses_per_card = 2;
    s_program(&spec);
    uint64_t id = s_issue("m1", "v20", "alice", 0, NULL, NULL);
    CHECK_REFUSED(s_voucher_cmd(id, 9999, ""), CL_THRESHOLD_NOT_MET);
    const cl_reply_t *r = s_run(s_voucher_cmd(id, 12000, ""));
    CHECK_OK(r);
    CHECK_EQ_INT(r->discount_minor, 2000);
    CHECK_OK(s_run(s_voucher_cmd(id, 10000, "")));
    CHECK_EQ_INT(s_card(id)->state, CL_CARDSTATE_EXHAUSTED);
    CHECK_REFUSED(s_voucher_cmd(id, 10000, ""), CL_CARD_CLOSED);
}

static void
percent_voucher_discount_is_capped(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "p15", CL_KIND_VOUCHER_PERCENT);
    spec.voucher.percent_off_bp = 1500;
    spec.voucher.cap_minor = 3000;
    s_program(&spec);
    uint64_t a = s_issue("m1", "p15", "alice", 0, NULL, NULL);
    uint64_t b = s_issue("m1", "p15", "alice", 0, NULL, NULL);
    CHECK_EQ_INT(s_run(s_voucher_cmd(a, 10001, ""))->discount_minor, 1500);
    CHECK_EQ_INT(s_run(s_voucher_cmd(b, 100000, ""))->discount_minor, 3000);
    CHECK_REFUSED(s_voucher_cmd(a, 10000, ""), CL_CARD_CLOSED);
}

static void
cash_voucher_never_discounts_more_than_the_order(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "cash", CL_KIND_VOUCHER_CASH);
    spec.voucher.amount_off_minor = 5000;
    s_program(&spec);
    uint64_t id = s_issue("m1", "cash", "alice", 0, NULL, NULL);
    CHECK_REFUSED(s_voucher_cmd(id, 0, ""), CL_AMOUNT_INVALID);
    CHECK_EQ_INT(s_run(s_voucher_cmd(id, 3000, ""))->discount_minor, 3000);
}

static void
exchange_voucher_accepts_only_eligible_items(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "cake", CL_KIND_VOUCHER_EXCHANGE);
    spec.voucher.skus_count = 2;
    snprintf(spec.voucher.skus[0], sizeof(spec.voucher.skus[0]), "CAKE-6IN");
    snprintf(spec.voucher.skus[1], sizeof(spec.voucher.skus[1]), "CAKE-8IN");
    s_program(&spec);
    uint64_t id = s_issue("m1", "cake", "alice", 0, NULL, NULL);
    CHECK_REFUSED(s_voucher_cmd(id, 0, "BREAD"), CL_ITEM_NOT_ELIGIBLE);
    CHECK_REFUSED(s_voucher_cmd(id, 0, ""), CL_INVALID_ARGUMENT);
    const cl_reply_t *r = s_run(s_voucher_cmd(id, 0, "CAKE-8IN")); /* the 6-inch sold out */
    CHECK_OK(r);
    CHECK_EQ_STR(r->sku, "CAKE-8IN");
}

static void
reversal_restores_value_and_never_exceeds_the_redemption(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    uint64_t red = s_run(s_redeem_cmd(id, "s1", 8000))->redemption_seq;
    cl_command_t *c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = id;
    c->u.reverse.redemption_seq = red;
    c->u.reverse.amount_minor = 3000;
    CHECK_OK(s_run(c));
    CHECK_EQ_INT(s_card(id)->balance_minor, 15000);
    c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = id;
    c->u.reverse.redemption_seq = red;
    c->u.reverse.amount_minor = 5001;
    CHECK_REFUSED(c, CL_REVERSAL_EXCEEDS);
    c->u.reverse.amount_minor = 0; /* the rest */
    CHECK_OK(s_run(c));
    CHECK_EQ_INT(s_card(id)->balance_minor, 20000);
    CHECK_REFUSED(c, CL_REVERSAL_EXCEEDS);
    c->u.reverse.redemption_seq = 12345;
    CHECK_REFUSED(c, CL_UNKNOWN_REDEMPTION);
}

static void
reload_only_for_reloadable_programs_and_never_above_the_maximum(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "fixed", CL_KIND_STORED_VALUE);
    spec.reloadable = false;
    s_program(&spec);
    uint64_t id = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    uint64_t fixed = s_issue("m1", "fixed", "alice", 20000, NULL, NULL);
    CHECK_REFUSED(s_reload_cmd(fixed, 100), CL_NOT_RELOADABLE);
    CHECK_OK(s_run(s_reload_cmd(id, 30000)));
    CHECK_EQ_INT(s_card(id)->balance_minor, 50000);
    CHECK_REFUSED(s_reload_cmd(id, 1), CL_MAX_BALANCE_EXCEEDED);
    CHECK_REFUSED(s_reload_cmd(id, 0), CL_AMOUNT_INVALID);
}

static void
balance_transfer_moves_value_between_cards_of_one_merchant_and_currency(void)
{
    s_world();
    s_merchant("m2");
    cl_program_spec_t spec = s_spec("m2", "other", CL_KIND_STORED_VALUE);
    s_program(&spec);
    spec = s_spec("m1", "usd", CL_KIND_STORED_VALUE);
    snprintf(spec.currency, sizeof(spec.currency), "USD");
    s_program(&spec);
    uint64_t a = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    uint64_t b = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    uint64_t foreign = s_issue("m2", "other", "alice", 10000, NULL, NULL);
    uint64_t usd = s_issue("m1", "usd", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_transfer_cmd(a, foreign, 100), CL_WRONG_MERCHANT);
    CHECK_REFUSED(s_transfer_cmd(a, usd, 100), CL_CURRENCY_MISMATCH);
    CHECK_REFUSED(s_transfer_cmd(a, b, 20001), CL_INSUFFICIENT_BALANCE);
    const cl_reply_t *r = s_run(s_transfer_cmd(a, b, 0));
    CHECK_OK(r);
    CHECK_EQ_INT(r->amount_minor, 20000);
    CHECK_EQ_INT(s_card(a)->balance_minor, 0);
    CHECK_EQ_INT(s_card(b)->balance_minor, 30000);
    CHECK_EQ_INT(last_events, 1);
}

static void
adjustment_needs_a_reason_and_never_goes_below_zero(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    cl_command_t *c = s_cmd(CL_CMD_ADJUST);
    c->u.adjust.card.card_id = id;
    c->u.adjust.delta_minor = -10001;
    CHECK_REFUSED(c, CL_INVALID_ARGUMENT);
    snprintf(c->u.adjust.reason, sizeof(c->u.adjust.reason), "till error");
    CHECK_REFUSED(c, CL_INSUFFICIENT_BALANCE);
    c->u.adjust.delta_minor = -500;
    CHECK_OK(s_run(c));
    CHECK_EQ_INT(s_card(id)->balance_minor, 9500);
}

static void
gift_offer_and_claim_hand_the_card_to_the_new_holder(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_gift_cmd(CL_CMD_OFFER_GIFT, id, "mallory", ""), CL_PERMISSION_DENIED);
    const cl_reply_t *r = s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, id, "alice", ""));
    CHECK_OK(r);
    uint64_t offer = r->offer_id;
    char secret[CL_SECRET_MAX + 1];
    snprintf(secret, sizeof(secret), "%s", r->claim_secret);
    CHECK_EQ_INT(strlen(secret), 16);
    CHECK_REFUSED(s_gift_cmd(CL_CMD_OFFER_GIFT, id, "alice", ""), CL_GIFT_PENDING);
    cl_command_t *c = s_cmd(CL_CMD_CLAIM_GIFT);
    c->u.gift_close.card.card_id = id;
    c->u.gift_close.offer_id = offer;
    snprintf(c->u.gift_close.holder, sizeof(c->u.gift_close.holder), "bob");
    snprintf(c->u.gift_close.claim_secret, sizeof(c->u.gift_close.claim_secret), "WRONG");
    CHECK_REFUSED(c, CL_PERMISSION_DENIED);
    snprintf(c->u.gift_close.claim_secret, sizeof(c->u.gift_close.claim_secret), "%s", secret);
    CHECK_OK(s_run(c));
    CHECK_EQ_STR(s_card(id)->holder, "bob");
    CHECK_EQ_INT(s_card(id)->transfers_done, 1);
    CHECK_EQ_INT(ledger_holder_count(L, "m1", "gift", "bob"), 1);
    CHECK_EQ_INT(ledger_holder_count(L, "m1", "gift", "alice"), 0);
    CHECK_REFUSED(c, CL_UNKNOWN_OFFER);
}

static void
unclaimed_offer_returns_after_its_time_and_can_be_recalled(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, id, "alice", "")));
    now_us += 73 * 3600 * 1000000LL;
    CHECK_EQ_INT(s_fire_timers(), 1);
    CHECK_EQ_INT(event_log[event_log_count - 1].type, CL_EV_GIFT_RETURNED);
    CHECK_EQ_U64(s_card(id)->open_offer_id, 0);
    const cl_reply_t *r = s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, id, "alice", ""));
    CHECK_OK(r);
    cl_command_t *c = s_cmd(CL_CMD_RECALL_GIFT);
    c->u.gift_close.card.card_id = id;
    c->u.gift_close.offer_id = r->offer_id;
    CHECK_OK(s_run(c));
    CHECK_EQ_U64(s_card(id)->open_offer_id, 0);
    CHECK_EQ_STR(s_card(id)->holder, "alice");
}

static void
non_transferable_cards_and_used_up_transfers_are_refused(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "mine", CL_KIND_STORED_VALUE);
    spec.transferable = false;
    s_program(&spec);
    spec = s_spec("m1", "once", CL_KIND_STORED_VALUE);
    spec.transfers_max = 1;
    s_program(&spec);
    uint64_t mine = s_issue("m1", "mine", "alice", 10000, NULL, NULL);
    uint64_t once = s_issue("m1", "once", "alice", 10000, NULL, NULL);
    CHECK_REFUSED(s_gift_cmd(CL_CMD_TRANSFER_CARD, mine, "alice", "bob"), CL_NOT_TRANSFERABLE);
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, once, "alice", "bob")));
    CHECK_EQ_INT(last_events, 2);
    CHECK_EQ_STR(s_card(once)->holder, "bob");
    CHECK_REFUSED(s_gift_cmd(CL_CMD_TRANSFER_CARD, once, "bob", "carol"), CL_NOT_TRANSFERABLE);
}

static void
stock_and_per_holder_limits_are_enforced(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "few", CL_KIND_STORED_VALUE);
    spec.stock_max = 3;
    spec.per_holder_max = 2;
    s_program(&spec);
    s_issue("m1", "few", "alice", 10000, NULL, NULL);
    uint64_t second = s_issue("m1", "few", "alice", 10000, NULL, NULL);
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "few");
    snprintf(c->u.issue_card.holder, CL_HOLDER_MAX + 1, "alice");
    c->u.issue_card.channel = CL_CHANNEL_ONLINE;
    c->u.issue_card.face_value_minor = 10000;
    CHECK_REFUSED(c, CL_HOLDER_LIMIT_REACHED);
    uint64_t third = s_issue("m1", "few", "bob", 10000, NULL, NULL);
    snprintf(c->u.issue_card.holder, CL_HOLDER_MAX + 1, "carol");
    CHECK_REFUSED(c, CL_STOCK_EXHAUSTED);
    /* bob gives his card to alice, who has two already. */
    CHECK_REFUSED(s_gift_cmd(CL_CMD_TRANSFER_CARD, third, "bob", "alice"), CL_HOLDER_LIMIT_REACHED);
    (void)second;
}

static void
issue_refuses_a_face_value_outside_the_denominations(void)
{
    s_world();
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "gift");
    c->u.issue_card.channel = CL_CHANNEL_ONLINE;
    c->u.issue_card.face_value_minor = 15000;
    CHECK_REFUSED(c, CL_DENOMINATION_INVALID);
    c->u.issue_card.channel = CL_CHANNEL_NONE;
    c->u.issue_card.face_value_minor = 10000;
    CHECK_REFUSED(c, CL_INVALID_ARGUMENT);
}

static void
closed_program_issues_no_more_cards_but_its_cards_still_redeem(void)
{
    s_world();
    uint64_t id = s_issue("m1", "gift", "alice", 10000, NULL, NULL);
    cl_command_t *c = s_cmd(CL_CMD_CLOSE_PROGRAM);
    snprintf(c->u.close_program.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.close_program.program_id, CL_ID_MAX + 1, "gift");
    CHECK_OK(s_run(c));
    CHECK_REFUSED(c, CL_STATE_CONFLICT);
    c = s_cmd(CL_CMD_ISSUE_CARD);
    snprintf(c->u.issue_card.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_card.program_id, CL_ID_MAX + 1, "gift");
    c->u.issue_card.channel = CL_CHANNEL_ONLINE;
    c->u.issue_card.face_value_minor = 10000;
    CHECK_REFUSED(c, CL_PROGRAM_CLOSED);
    CHECK_REFUSED(s_reload_cmd(id, 100), CL_PROGRAM_CLOSED);
    CHECK_OK(s_run(s_redeem_cmd(id, "s1", 100)));
}

/* An IssueBatch of n rows for program prog of merchant "m1". */
static cl_command_t *
s_batch_cmd(const char *prog, cl_cmd_issue_card_t *batch, uint32_t n)
{
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_BATCH);
    snprintf(c->u.issue_batch.merchant_id, CL_ID_MAX + 1, "m1");
    snprintf(c->u.issue_batch.program_id, CL_ID_MAX + 1, "%s", prog);
    c->u.issue_batch.rows_count = n;
    c->batch_rows = batch;
    return c;
}

struct s_asks {
    size_t count;
    size_t bytes;
    size_t misaligned;
};

static void
s_record_ask(void *ctx, void *addr, size_t len)
{
    struct s_asks *a = ctx;
    a->count++;
    a->bytes += len;
    /* The prefault thread needs ranges of whole pages (daemon/prefault.h). */
    if (((uintptr_t)addr & 4095u) != 0 || len % 4096u != 0 || len == 0)
        a->misaligned++;
}

/* 70,000 cards: their 140,000 timers outgrow the heap's first array and then its mapping (it
 * grows in place, asking ahead). Every timer is still there, in firing order. */
static void
timers_of_many_cards_come_out_in_order(void)
{
    s_world();
    struct s_asks asks = { 0, 0, 0 };
    ledger_set_ahead(L, s_record_ask, &asks);
    static cl_cmd_issue_card_t batch_rows[CL_ISSUE_BATCH_MAX];
    enum { BATCHES = 70 };
    for (int b = 0; b < BATCHES; b++) {
        memset(batch_rows, 0, sizeof(batch_rows));
        for (int i = 0; i < CL_ISSUE_BATCH_MAX; i++) {
            snprintf(batch_rows[i].row_key, sizeof(batch_rows[i].row_key), "r%d-%d", b, i);
            batch_rows[i].face_value_minor = 10000;
        }
        cl_command_t *c = s_batch_cmd("gift", batch_rows, CL_ISSUE_BATCH_MAX);
        const cl_reply_t *r = s_run(c);
        CHECK_OK(r);
        CHECK_EQ_INT(r->batch_issued, CL_ISSUE_BATCH_MAX);
        now_us += 1000000; /* each batch a second later: later expiries */
    }
    CHECK(asks.count > 0);
    CHECK_EQ_INT(asks.misaligned, 0);
    ledger_set_ahead(L, NULL, NULL);
    ledger_timer_t t, prev = { 0 };
    size_t n = 0;
    while (ledger_timer_peek(L, &t)) {
        if (n > 0)
            CHECK(t.due_us > prev.due_us ||
                  (t.due_us == prev.due_us &&
                   (t.kind > prev.kind || (t.kind == prev.kind && t.card_id > prev.card_id))));
        prev = t;
        ledger_timer_pop(L);
        n++;
    }
    CHECK_EQ_INT(n, 2 * BATCHES * CL_ISSUE_BATCH_MAX);
}

static void
batch_issue_skips_rows_already_issued(void)
{
    s_world();
    static cl_cmd_issue_card_t batch_rows[3];
    memset(batch_rows, 0, sizeof(batch_rows));
    for (int i = 0; i < 3; i++) {
        snprintf(batch_rows[i].row_key, sizeof(batch_rows[i].row_key), "row-%d", i);
        snprintf(batch_rows[i].holder, sizeof(batch_rows[i].holder), "emp-%d", i);
        batch_rows[i].face_value_minor = i == 2 ? 12345 : 10000; /* row 2: bad denomination */
    }
    cl_command_t *c = s_batch_cmd("gift", batch_rows, 3);
    const cl_reply_t *r = s_run(c);
    CHECK_OK(r);
    CHECK_EQ_INT(r->batch_issued, 2);
    CHECK_EQ_INT(r->rows[2].status, CL_DENOMINATION_INVALID);
    CHECK_EQ_INT(last_events, 3); /* two cards and BatchIssued */
    uint64_t first = r->rows[0].card_id;
    batch_rows[2].face_value_minor = 20000;
    c = s_batch_cmd("gift", batch_rows, 3);
    r = s_run(c);
    CHECK_OK(r);
    CHECK_EQ_INT(r->batch_issued, 1);
    CHECK_EQ_INT(r->batch_already_issued, 2);
    CHECK(r->rows[0].already_issued);
    CHECK_EQ_U64(r->rows[0].card_id, first);
    CHECK_EQ_INT(ledger_meta(L)->cards, 3);
}

static void
batch_issue_counts_its_own_rows_for_limits_and_duplicate_keys(void)
{
    s_world();
    cl_program_spec_t spec = s_spec("m1", "capped", CL_KIND_STORED_VALUE);
    spec.per_holder_max = 2;
    spec.stock_max = CL_ISSUE_BATCH_MAX;
    s_program(&spec);
    static cl_cmd_issue_card_t batch_rows[CL_ISSUE_BATCH_MAX];
    memset(batch_rows, 0, sizeof(batch_rows));
    for (int i = 0; i < CL_ISSUE_BATCH_MAX; i++) {
        /* Rows 0..2 share a holder; row 3 repeats row 0's key; the rest are distinct. */
        snprintf(batch_rows[i].row_key, sizeof(batch_rows[i].row_key), "k%d", i == 3 ? 0 : i);
        snprintf(batch_rows[i].holder, sizeof(batch_rows[i].holder), "h%d", i < 3 ? 0 : i);
        batch_rows[i].face_value_minor = 10000;
    }
    cl_command_t *c = s_batch_cmd("capped", batch_rows, CL_ISSUE_BATCH_MAX);
    const cl_reply_t *r = s_run(c);
    CHECK_OK(r);
    CHECK_EQ_INT(r->rows[2].status, CL_HOLDER_LIMIT_REACHED);
    CHECK(r->rows[3].already_issued);
    CHECK_EQ_U64(r->rows[3].card_id, r->rows[0].card_id);
    CHECK_EQ_STR(r->rows[3].code, r->rows[0].code);
    CHECK_EQ_INT(r->batch_issued, CL_ISSUE_BATCH_MAX - 2);
    CHECK_EQ_INT(ledger_holder_count(L, "m1", "capped", "h0"), 2);
    /* Every issued card got the next card id in order, and its own code. */
    for (int i = 5; i < CL_ISSUE_BATCH_MAX; i++)
        CHECK_EQ_U64(r->rows[i].card_id, r->rows[i - 1].card_id + 1);
    CHECK(ledger_card_by_code(L, r->rows[999].code) != NULL);
    CHECK_EQ_INT(ledger_meta(L)->cards, CL_ISSUE_BATCH_MAX - 2);
}

static void
projector_queries_and_unknown_commands_are_refused(void)
{
    s_world();
    CHECK_REFUSED(s_cmd((cl_command_type_t)63), CL_WRONG_SERVICE);
    CHECK_REFUSED(s_cmd((cl_command_type_t)45), CL_UNKNOWN_COMMAND);
    cl_command_t *c = s_cmd(CL_CMD_ADVANCE_CLOCK);
    c->u.set_now_us = T0 - 1;
    CHECK_REFUSED(c, CL_INVALID_ARGUMENT);
}

static void
replaying_the_events_gives_the_same_state(void)
{
    s_world();
    uint64_t a = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    uint64_t b = s_issue("m1", "gift", "bob", 10000, NULL, NULL);
    CHECK_OK(s_run(s_redeem_cmd(a, "s2", 700)));
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, b, "bob", "carol")));
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, a, "alice", "")));
    CHECK_OK(s_run(s_transfer_cmd(b, a, 500)));
    uint8_t live[16], replayed[16];
    s_digest(live);

    ledger_t *fresh = NULL;
    REQUIRE(ledger_new(&fresh) == 0);
    for (size_t i = 0; i < event_log_count; i++)
        REQUIRE(ledger_apply(fresh, &event_log[i]) == 0);
    ledger_digest(fresh, replayed);
    CHECK(memcmp(live, replayed, 16) == 0);
    /* The same event twice is refused and changes nothing. */
    CHECK_EQ_INT(ledger_apply(fresh, &event_log[event_log_count - 1]), LEDGER_EMISMATCH);
    ledger_destroy(&fresh);
    CHECK(fresh == NULL);

    /* A CardIssued as an export writes it (its code masked, its hash beside it) is refused and
     * changes nothing: a journal imported from an export cannot run a ledger. */
    REQUIRE(ledger_new(&fresh) == 0);
    size_t i = 0;
    for (; i < event_log_count && event_log[i].type != CL_EV_CARD_ISSUED; i++)
        REQUIRE(ledger_apply(fresh, &event_log[i]) == 0);
    REQUIRE(i < event_log_count);
    static cl_event_t exported;
    exported = event_log[i];
    exported.u.card_issued.has_code_hash = true;
    cl_code_hash(exported.u.card_issued.code, exported.u.card_issued.code_hash);
    uint8_t before[16], after[16];
    ledger_digest(fresh, before);
    CHECK_EQ_INT(ledger_apply(fresh, &exported), LEDGER_EMISMATCH);
    ledger_digest(fresh, after);
    CHECK(memcmp(before, after, 16) == 0);
    CHECK_EQ_INT(ledger_apply(fresh, &event_log[i]), 0);
    ledger_destroy(&fresh);
}

static int
s_copy_record(const char *table, const void *k, size_t klen, const void *rec, size_t len, void *ctx)
{
    return ledger_load_record(ctx, table, k, klen, rec, len);
}

static void
records_loaded_into_a_new_ledger_give_the_same_state_and_indexes(void)
{
    s_world();
    char code[CL_CODE_MAX + 1];
    uint64_t a = s_issue("m1", "gift", "alice", 20000, code, NULL);
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, a, "alice", "")));
    uint8_t live[16], loaded[16];
    s_digest(live);
    ledger_t *copy = NULL;
    REQUIRE(ledger_new(&copy) == 0);
    REQUIRE(ledger_foreach_record(L, s_copy_record, copy) == 0);
    REQUIRE(ledger_rebuild_indexes(copy) == 0);
    ledger_digest(copy, loaded);
    CHECK(memcmp(live, loaded, 16) == 0);
    const ledger_card_t *card = ledger_card_by_code(copy, code);
    CHECK(card != NULL && card->card_id == a);
    ledger_timer_t t;
    CHECK(ledger_timer_peek(copy, &t));
    CHECK_EQ_INT(t.kind, LEDGER_TIMER_OFFER);
    ledger_destroy(&copy);
}

/* ---- A ledger over a source: the checkpoint the daemon reads from, here in memory -------- */

static int s_count_dirty(const char *table, const void *k, size_t klen, const void *rec, size_t len,
                         void *ctx);

typedef struct snap_rec {
    char table[32];
    uint8_t key[TABLE_KEY_MAX];
    size_t key_len;
    uint8_t rec[sizeof(ledger_card_t) + sizeof(ledger_program_t)];
    size_t rec_len;
} snap_rec_t;

typedef struct snap {
    snap_rec_t *recs;
    size_t count;
    size_t reads;
} snap_t;

static int
s_snap_record(const char *table, const void *k, size_t klen, const void *rec, size_t len, void *ctx)
{
    snap_t *sn = ctx;
    REQUIRE(sn->count < 256 && klen <= TABLE_KEY_MAX && len <= sizeof(sn->recs[0].rec));
    snap_rec_t *r = &sn->recs[sn->count++];
    snprintf(r->table, sizeof(r->table), "%s", table);
    memcpy(r->key, k, klen);
    r->key_len = klen;
    memcpy(r->rec, rec, len);
    r->rec_len = len;
    return 0;
}

static int
s_snap_get(void *ctx, const char *table, const void *k, size_t key_len, void *rec, size_t len)
{
    snap_t *sn = ctx;
    for (size_t i = 0; i < sn->count; i++) {
        snap_rec_t *r = &sn->recs[i];
        if (strcmp(r->table, table) == 0 && r->key_len == key_len &&
            memcmp(r->key, k, key_len) == 0) {
            REQUIRE(r->rec_len == len);
            memcpy(rec, r->rec, len);
            sn->reads++;
            return 1;
        }
    }
    return 0;
}

static int
s_key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

static int
s_snap_next(void *ctx, const char *table, const void *after, size_t after_len, void *key_out,
            size_t cap, size_t *key_len)
{
    snap_t *sn = ctx;
    const snap_rec_t *best = NULL;
    for (size_t i = 0; i < sn->count; i++) {
        const snap_rec_t *r = &sn->recs[i];
        if (strcmp(r->table, table) != 0 ||
            (after_len > 0 && s_key_cmp(r->key, r->key_len, after, after_len) <= 0))
            continue;
        if (best == NULL || s_key_cmp(r->key, r->key_len, best->key, best->key_len) < 0)
            best = r;
    }
    if (best == NULL)
        return 0;
    REQUIRE(best->key_len <= cap);
    memcpy(key_out, best->key, best->key_len);
    *key_len = best->key_len;
    return 1;
}

static void
s_check_same_card(const ledger_t *a, const ledger_t *b, uint64_t id)
{
    const ledger_card_t *x = ledger_card(a, id), *y = ledger_card(b, id);
    REQUIRE(x != NULL && y != NULL);
    CHECK(memcmp(x, y, sizeof(*x)) == 0);
}

static void
a_ledger_over_a_checkpoint_folds_and_answers_like_the_whole_one(void)
{
    s_world();
    char code[CL_CODE_MAX + 1];
    uint64_t a = s_issue("m1", "gift", "alice", 20000, code, NULL);
    uint64_t b = s_issue("m1", "gift", "bob", 10000, NULL, NULL);
    uint64_t red = s_run(s_redeem_cmd(a, "s1", 8000))->redemption_seq;
    const cl_reply_t *r = s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, b, "bob", ""));
    CHECK_OK(r);
    uint64_t offer_id = r->offer_id;
    char secret[CL_SECRET_MAX + 1];
    snprintf(secret, sizeof(secret), "%s", r->claim_secret);

    /* The checkpoint: every record now. The cache loads only what ledger_table_is_lazy() says
     * no to; everything else it must find in the source when asked. */
    snap_t sn = { calloc(256, sizeof(snap_rec_t)), 0, 0 };
    REQUIRE(sn.recs != NULL);
    REQUIRE(ledger_foreach_record(L, s_snap_record, &sn) == 0);
    ledger_t *c = NULL;
    REQUIRE(ledger_new(&c) == 0);
    size_t lazy = 0;
    for (size_t i = 0; i < sn.count; i++) {
        snap_rec_t *x = &sn.recs[i];
        if (ledger_table_is_lazy(x->table)) {
            lazy++;
            continue;
        }
        REQUIRE(ledger_load_record(c, x->table, x->key, x->key_len, x->rec, x->rec_len) == 0);
    }
    CHECK(lazy >= 8); /* cards, codes, timers, the offer, the redemption, holders */
    REQUIRE(ledger_rebuild_indexes(c) == 0);
    ledger_source_t src = { s_snap_get, s_snap_next, &sn };
    ledger_set_source(c, &src);
    CHECK(ledger_foreach_record(c, s_snap_record, &sn) == LEDGER_EINVAL); /* only part of it */

    /* Lookups come from the source, once each. */
    const ledger_card_t *by_code = ledger_card_by_code(c, code);
    CHECK(by_code != NULL && by_code->card_id == a);
    size_t reads = sn.reads;
    CHECK(ledger_card_by_code(c, code) == by_code);
    CHECK_EQ_INT(sn.reads, reads);
    CHECK_EQ_INT(ledger_holder_count(c, "m1", "gift", "alice"), 1);
    CHECK(ledger_card(c, 999) == NULL);

    /* The same events fold into both: a reversal (the redemption comes from the source), a
     * claim (the offer and its timer leave both), then the expiries fire from both. */
    ledger_dirty_clear(c);
    size_t from = event_log_count;
    cl_command_t *rev = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    rev->u.reverse.card.card_id = a;
    rev->u.reverse.redemption_seq = red;
    rev->u.reverse.amount_minor = 3000;
    CHECK_OK(s_run(rev));
    cl_command_t *claim = s_cmd(CL_CMD_CLAIM_GIFT);
    claim->u.gift_close.offer_id = offer_id;
    claim->u.gift_close.card.card_id = b;
    snprintf(claim->u.gift_close.claim_secret, sizeof(claim->u.gift_close.claim_secret), "%s",
             secret);
    snprintf(claim->u.gift_close.holder, sizeof(claim->u.gift_close.holder), "carol");
    CHECK_OK(s_run(claim));
    for (size_t i = from; i < event_log_count; i++)
        CHECK_EQ_INT(ledger_apply(c, &event_log[i]), 0);
    s_check_same_card(L, c, a);
    s_check_same_card(L, c, b);
    CHECK_EQ_INT(ledger_redemption(c, red)->reversed_minor, 3000);
    CHECK_EQ_INT(ledger_holder_count(c, "m1", "gift", "carol"), 1);
    CHECK_EQ_INT(ledger_holder_count(c, "m1", "gift", "bob"), 0);

    /* Forgetting what is clean loses nothing: it comes back from the source; the records the
     * events changed (dirty, not yet in any checkpoint) stay. */
    size_t dirty_before = 0;
    ledger_dirty_foreach(c, s_count_dirty, &dirty_before);
    CHECK(ledger_forget_clean(c, 0) > 0);
    size_t dirty_after = 0;
    ledger_dirty_foreach(c, s_count_dirty, &dirty_after);
    CHECK_EQ_INT(dirty_after, dirty_before);
    reads = sn.reads;
    s_check_same_card(L, c, a);
    s_check_same_card(L, c, b);
    CHECK(ledger_card_by_code(c, code) != NULL);
    CHECK(sn.reads > reads); /* the code came back from the source */
    CHECK_EQ_INT(ledger_redemption(c, red)->reversed_minor, 3000);
    CHECK_EQ_INT(ledger_holder_count(c, "m1", "gift", "bob"), 0);
    CHECK_EQ_INT(ledger_forget_clean(L, 0), LEDGER_EINVAL); /* no source: all of it is here */

    /* Timers: the same ones, in the same order, from the source's cursor. */
    ledger_timer_t x, y;
    size_t timers = 0;
    while (ledger_timer_peek(L, &x)) {
        REQUIRE(ledger_timer_peek(c, &y));
        CHECK(x.due_us == y.due_us && x.kind == y.kind && x.card_id == y.card_id &&
              x.offer_id == y.offer_id);
        ledger_timer_pop(L);
        ledger_timer_pop(c);
        timers++;
    }
    CHECK(!ledger_timer_peek(c, &y));
    CHECK_EQ_INT(timers, 4); /* each card's reminder and expiry; the claimed offer's left */

    /* What the cache would checkpoint is only what the events changed. */
    size_t dirty = 0;
    ledger_dirty_foreach(c, s_count_dirty, &dirty);
    CHECK(dirty > 0 && dirty < 12);
    ledger_destroy(&c);
    free(sn.recs);
}

static int
s_count_dirty(const char *table, const void *k, size_t klen, const void *rec, size_t len, void *ctx)
{
    (void)table;
    (void)k;
    (void)klen;
    (void)rec;
    (void)len;
    (*(size_t *)ctx)++;
    return 0;
}

/* The names of the dirty records' tables, joined by spaces, into ctx (a char[256]). */
static int
s_dirty_tables(const char *table, const void *k, size_t klen, const void *rec, size_t len,
               void *ctx)
{
    char *out = ctx;
    (void)k;
    (void)klen;
    (void)len;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s%s%s", n > 0 ? " " : "", table, rec == NULL ? "(deleted)" : "");
    return 0;
}

static void
only_changed_records_are_dirty_after_a_checkpoint(void)
{
    s_world();
    uint64_t a = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    s_issue("m1", "gift", "bob", 20000, NULL, NULL);
    ledger_dirty_clear(L);
    size_t dirty = 0;
    ledger_dirty_foreach(L, s_count_dirty, &dirty);
    CHECK_EQ_INT(dirty, 0);
    /* A redeem changes the card's value only: its large record is not rewritten. */
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 100)));
    char tables[256] = "";
    ledger_dirty_foreach(L, s_dirty_tables, tables);
    CHECK_EQ_STR(tables, "meta card_values redemptions");
    /* A gift changes the holder: the card is written whole, and its values record deleted. */
    ledger_dirty_clear(L);
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, a, "alice", "carol")));
    tables[0] = '\0';
    ledger_dirty_foreach(L, s_dirty_tables, tables);
    CHECK(strstr(tables, "cards card_values(deleted)") != NULL);
    /* A redeem after a gift, before the next checkpoint, keeps the whole card dirty. */
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 100)));
    tables[0] = '\0';
    ledger_dirty_foreach(L, s_dirty_tables, tables);
    CHECK(strstr(tables, "cards card_values(deleted)") != NULL);
    /* A new card is one record, and a delete that the checkpoint writer skips. */
    ledger_dirty_clear(L);
    s_issue("m1", "gift", "dan", 20000, NULL, NULL);
    tables[0] = '\0';
    ledger_dirty_foreach(L, s_dirty_tables, tables);
    CHECK(strstr(tables, "cards card_values(deleted)") != NULL);
    CHECK_EQ_STR(tables, "meta programs cards card_values(deleted) holders codes timers timers");
}

/* Stores a dirty record as a checkpoint would: replacing or deleting the table's record under
 * the key. */
static int
s_store_record(const char *table, const void *k, size_t klen, const void *rec, size_t len,
               void *ctx)
{
    snap_t *sn = ctx;
    for (size_t i = 0; i < sn->count; i++) {
        snap_rec_t *r = &sn->recs[i];
        if (strcmp(r->table, table) == 0 && r->key_len == klen && memcmp(r->key, k, klen) == 0) {
            if (rec == NULL) {
                *r = sn->recs[--sn->count];
                return 0;
            }
            REQUIRE(r->rec_len == len);
            memcpy(r->rec, rec, len);
            return 0;
        }
    }
    return rec != NULL ? s_snap_record(table, k, klen, rec, len, ctx) : 0;
}

/* A checkpoint into the store: the dirty records stored, then cleared. */
static void
s_checkpoint(snap_t *sn)
{
    REQUIRE(ledger_dirty_foreach(L, s_store_record, sn) == 0);
    ledger_dirty_clear(L);
}

/* A new ledger from the store's records, in their order or backwards. */
static void
s_load_store(const snap_t *sn, bool backwards, uint8_t digest[16])
{
    ledger_t *copy = NULL;
    REQUIRE(ledger_new(&copy) == 0);
    for (size_t n = 0; n < sn->count; n++) {
        const snap_rec_t *x = &sn->recs[backwards ? sn->count - 1 - n : n];
        REQUIRE(ledger_load_record(copy, x->table, x->key, x->key_len, x->rec, x->rec_len) == 0);
    }
    REQUIRE(ledger_rebuild_indexes(copy) == 0);
    ledger_digest(copy, digest);
    ledger_destroy(&copy);
}

/*
 * Every kind of card change, with a checkpoint (the dirty records stored, then cleared) after
 * each: the stored records load back into the same state, in either order. A change marked as
 * touching only a card's value and status that touched anything else would be lost here.
 */
static void
checkpoints_after_every_change_load_back_the_same_state(void)
{
    s_world();
    snap_t sn = { calloc(256, sizeof(snap_rec_t)), 0, 0 };
    REQUIRE(sn.recs != NULL);
    uint64_t a = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    uint64_t b = s_issue("m1", "gift", "bob", 10000, NULL, NULL);
    s_checkpoint(&sn);
    uint64_t red = s_run(s_redeem_cmd(a, "s1", 700))->redemption_seq;
    s_checkpoint(&sn);
    cl_command_t *c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = a;
    c->u.reverse.redemption_seq = red;
    c->u.reverse.amount_minor = 200;
    CHECK_OK(s_run(c));
    s_checkpoint(&sn);
    CHECK_OK(s_run(s_reload_cmd(b, 500)));
    s_checkpoint(&sn);
    CHECK_OK(s_run(s_transfer_cmd(b, a, 300)));
    s_checkpoint(&sn);
    CHECK_OK(s_run(s_flag_cmd(CL_CMD_FREEZE, b)));
    s_checkpoint(&sn);
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, a, "alice", "carol")));
    s_checkpoint(&sn);
    CHECK_OK(s_run(s_flag_cmd(CL_CMD_UNFREEZE, b)));
    s_checkpoint(&sn);
    CHECK_OK(s_run(s_redeem_cmd(b, "s2", 1000)));
    s_checkpoint(&sn);
    const cl_reply_t *r = s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, b, "bob", ""));
    CHECK_OK(r);
    uint64_t offer_id = r->offer_id;
    char secret[CL_SECRET_MAX + 1];
    snprintf(secret, sizeof(secret), "%s", r->claim_secret);
    s_checkpoint(&sn);
    c = s_cmd(CL_CMD_CLAIM_GIFT);
    c->u.gift_close.offer_id = offer_id;
    c->u.gift_close.card.card_id = b;
    snprintf(c->u.gift_close.claim_secret, sizeof(c->u.gift_close.claim_secret), "%s", secret);
    snprintf(c->u.gift_close.holder, sizeof(c->u.gift_close.holder), "dave");
    CHECK_OK(s_run(c));
    s_checkpoint(&sn);
    c = s_cmd(CL_CMD_ADJUST);
    c->u.adjust.card.card_id = a;
    c->u.adjust.delta_minor = -250;
    snprintf(c->u.adjust.reason, sizeof(c->u.adjust.reason), "till error");
    CHECK_OK(s_run(c));
    s_checkpoint(&sn);
    /* A redeem and a gift between two checkpoints write the card whole, its new value with
     * it: the values record of the adjustment above must not outlive them. */
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 50)));
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, a, "carol", "erin")));
    s_checkpoint(&sn);
    CHECK_EQ_INT(s_card(a)->balance_minor, 20000 - 700 + 200 + 300 - 250 - 50);
    CHECK(strcmp(s_card(a)->holder, "erin") == 0);
    CHECK(strcmp(s_card(b)->holder, "dave") == 0 && s_card(b)->transfers_done == 1);

    uint8_t live[16], forwards[16], backwards[16];
    s_digest(live);
    s_load_store(&sn, false, forwards);
    s_load_store(&sn, true, backwards);
    CHECK(memcmp(live, forwards, 16) == 0);
    CHECK(memcmp(live, backwards, 16) == 0);
    free(sn.recs);
}

/*
 * A checkpoint copied a little at a time (ledger_freeze_dirty()) while commands go on: what it
 * copies is the state as of the freeze, every record once, whatever changes meanwhile (a redeem
 * of a frozen card, a gift of one, a deletion, new cards), and the changes after the freeze are
 * the next checkpoint's. Stored one after the other, both load back into the live state.
 */
static void
a_frozen_copy_holds_the_state_of_its_freeze(void)
{
    s_world();
    snap_t sn = { calloc(256, sizeof(snap_rec_t)), 0, 0 };
    REQUIRE(sn.recs != NULL);
    uint64_t a = s_issue("m1", "gift", "alice", 20000, NULL, NULL);
    uint64_t b = s_issue("m1", "gift", "bob", 10000, NULL, NULL);
    uint64_t c = s_issue("m1", "gift", "carol", 10000, NULL, NULL);
    s_checkpoint(&sn);
    /* Changed before the freeze: a's value, b whole (a gift), a pending offer of c. */
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 700)));
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, b, "bob", "dave")));
    const cl_reply_t *r = s_run(s_gift_cmd(CL_CMD_OFFER_GIFT, c, "carol", ""));
    CHECK_OK(r);
    uint64_t offer_id = r->offer_id;
    uint8_t at_freeze[16];
    s_digest(at_freeze);

    snap_t frozen = { calloc(256, sizeof(snap_rec_t)), sn.count, 0 };
    REQUIRE(frozen.recs != NULL);
    memcpy(frozen.recs, sn.recs, sn.count * sizeof(snap_rec_t));
    REQUIRE(ledger_freeze_dirty(L, s_store_record, &frozen) == 0);
    size_t left = 0;
    REQUIRE(ledger_copy_frozen(L, 1, &left) == 0); /* one record copied, the rest still frozen */
    CHECK(left > 0);
    /* Meanwhile: a frozen card's value changes again, b gets a new holder again (whole), the
     * offer goes away (recalled), a new card comes. Each frozen record is copied before. */
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 300)));
    CHECK_OK(s_run(s_gift_cmd(CL_CMD_TRANSFER_CARD, b, "dave", "erin")));
    cl_command_t *recall = s_cmd(CL_CMD_RECALL_GIFT);
    recall->u.gift_close.offer_id = offer_id;
    recall->u.gift_close.card.card_id = c;
    CHECK_OK(s_run(recall));
    uint64_t d = s_issue("m1", "gift", "frank", 10000, NULL, NULL);
    while (left > 0) {
        REQUIRE(ledger_copy_frozen(L, 2, &left) == 0);
        CHECK_OK(s_run(s_redeem_cmd(d, "s1", 10)));
    }
    uint8_t got[16];
    s_load_store(&frozen, false, got);
    CHECK(memcmp(got, at_freeze, 16) == 0);
    s_load_store(&frozen, true, got);
    CHECK(memcmp(got, at_freeze, 16) == 0);

    /* The changes since the freeze, stored on top, give the live state. */
    s_checkpoint(&frozen);
    uint8_t live[16];
    s_digest(live);
    CHECK(memcmp(live, at_freeze, 16) != 0);
    s_load_store(&frozen, false, got);
    CHECK(memcmp(got, live, 16) == 0);
    CHECK_EQ_INT(s_card(a)->balance_minor, 20000 - 700 - 300);
    CHECK(strcmp(s_card(b)->holder, "erin") == 0);

    /* A freeze dropped halfway leaves no frozen record behind: the next freeze starts clean. */
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 1)));
    REQUIRE(ledger_freeze_dirty(L, s_store_record, &frozen) == 0);
    ledger_frozen_drop(L);
    CHECK_OK(s_run(s_redeem_cmd(a, "s1", 1)));
    size_t dirty = 0;
    ledger_dirty_foreach(L, s_count_dirty, &dirty);
    CHECK(dirty > 0);
    free(sn.recs);
    free(frozen.recs);
}

int
main(int argc, char **argv)
{
    static const check_case_t cases[] = {
        CHECK_CASE(programs_are_found_by_both_ids_one_after_the_other),
        CHECK_CASE(issued_card_has_a_luhn_checked_code_and_full_balance),
        CHECK_CASE(partial_redemption_reduces_the_balance),
        CHECK_CASE(redeem_more_than_balance_is_refused),
        CHECK_CASE(redeem_of_zero_negative_or_huge_amounts_is_refused),
        CHECK_CASE(unknown_merchant_store_program_and_card_are_refused),
        CHECK_CASE(another_merchants_principal_cannot_touch_the_card),
        CHECK_CASE(store_terminal_redeems_and_reverses_only_at_its_own_store),
        CHECK_CASE(store_outside_the_programs_stores_or_regions_is_refused),
        CHECK_CASE(frozen_card_refuses_redeem_gift_reload_and_transfer),
        CHECK_CASE(card_past_expiry_refuses_redemption_before_its_expiry_event),
        CHECK_CASE(expiry_timer_records_breakage_once),
        CHECK_CASE(reminder_fires_once_before_expiry_for_cards_with_value),
        CHECK_CASE(five_wrong_pins_in_a_row_lock_the_card_until_unlocked),
        CHECK_CASE(punch_card_spends_uses_and_refuses_when_used_up),
        CHECK_CASE(threshold_voucher_takes_its_amount_off_orders_at_or_above_the_threshold),
        CHECK_CASE(percent_voucher_discount_is_capped),
        CHECK_CASE(cash_voucher_never_discounts_more_than_the_order),
        CHECK_CASE(exchange_voucher_accepts_only_eligible_items),
        CHECK_CASE(reversal_restores_value_and_never_exceeds_the_redemption),
        CHECK_CASE(reload_only_for_reloadable_programs_and_never_above_the_maximum),
        CHECK_CASE(balance_transfer_moves_value_between_cards_of_one_merchant_and_currency),
        CHECK_CASE(adjustment_needs_a_reason_and_never_goes_below_zero),
        CHECK_CASE(gift_offer_and_claim_hand_the_card_to_the_new_holder),
        CHECK_CASE(unclaimed_offer_returns_after_its_time_and_can_be_recalled),
        CHECK_CASE(non_transferable_cards_and_used_up_transfers_are_refused),
        CHECK_CASE(stock_and_per_holder_limits_are_enforced),
        CHECK_CASE(timers_of_many_cards_come_out_in_order),
        CHECK_CASE(issue_refuses_a_face_value_outside_the_denominations),
        CHECK_CASE(closed_program_issues_no_more_cards_but_its_cards_still_redeem),
        CHECK_CASE(batch_issue_skips_rows_already_issued),
        CHECK_CASE(batch_issue_counts_its_own_rows_for_limits_and_duplicate_keys),
        CHECK_CASE(projector_queries_and_unknown_commands_are_refused),
        CHECK_CASE(replaying_the_events_gives_the_same_state),
        CHECK_CASE(records_loaded_into_a_new_ledger_give_the_same_state_and_indexes),
        CHECK_CASE(only_changed_records_are_dirty_after_a_checkpoint),
        CHECK_CASE(checkpoints_after_every_change_load_back_the_same_state),
        CHECK_CASE(a_frozen_copy_holds_the_state_of_its_freeze),
        CHECK_CASE(a_ledger_over_a_checkpoint_folds_and_answers_like_the_whole_one),
    };
    int rc = check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
    ledger_destroy(&L);
    free(event_log);
    return rc;
}
