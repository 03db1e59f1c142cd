/*
 * test-projections: the projector's folds (balances, store redemptions, analytics) over real
 * journals, without a daemon or a socket.
 *
 * A small in-test engine runs commands the way the daemon does (decide() against the ledger,
 * ledger_apply() of every event, the ledger's own timers for expiries) and writes every event
 * into a real journal in a temporary directory with codec_event_encode() + journal_append().
 * The projections are then folded from that journal through pset (the same code the projector
 * and the replay tool run) and every view and figure is checked: a scripted history against
 * values computed by hand, random histories against invariants (card views equal the daemon's
 * ledger, liability equals the value of the cards that have not expired, the analytics
 * identity), and the bytes: any batch size and the replay tool give the same digests.
 *
 * Built with -DTEST_PROJECTIONS_LOAD (the test-projections-load row of tests/meson.build, suite
 * slow) it runs only the fold-rate measurement over a large generated journal.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analytics.h"
#include "balances.h"
#include "check.h"
#include "codec.h"
#include "decide.h"
#include "fold.h"
#include "journal.h"
#include "ledger.h"
#include "pcache.h"
#include "plog.h"
#include "proj.h"
#include "pset.h"
#include "pstore.h"
#include "stores.h"

#define DAY_US (86400LL * 1000000LL)
#define T0     1767225600000000LL /* 2026-01-01T00:00:00Z */
#define D0     20454              /* its day number */

/* snprintf that must fit (a test's own strings always do). */
static void s_fmt(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_fmt(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        check_fail(__FILE__, __LINE__, "a test string does not fit %zu bytes", cap);
        check_abort_case();
    }
}

/* ---- The engine: decide, apply, journal ---------------------------------------------------- */

#define ARENA_BYTES (64u * 1024 * 1024)
#define PENDING_MAX JOURNAL_TXN_ENTRIES_MAX

static char root[PATH_MAX];  /* the test's temporary directory */
static unsigned dir_counter; /* subdirectories made so far */
static char journal_dir[PATH_MAX];
static ledger_t *L;
static journal_t *J;
static int64_t now_us;
static uint64_t next_seq;
static uint64_t rng_state;
static uint8_t hash_key[DECIDE_KEY_LEN];
static cl_event_t *events; /* DECIDE_EVENTS_MAX */
static cl_issued_row_t *rows;
static cl_reply_t reply;
static uint8_t *arena; /* encoded events waiting for the journal */
static size_t arena_used;
static journal_record_t *pending;
static size_t pending_count;
static cl_principal_t operator_p = { .role = CL_ROLE_OPERATOR, .name = "test" };
/* Write redemptions as the daemon did before it left the store's region out of them. */
static bool old_redeem_region;
static size_t old_redeem_regions_written;

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

/* A test-chosen random number in [0, n). */
static uint64_t
s_rand(uint64_t n)
{
    uint64_t v;
    s_random(&v, sizeof(v), NULL);
    return n != 0 ? v % n : 0;
}

static void
s_mkdir_sub(char out[PATH_MAX], const char *what)
{
    s_fmt(out, PATH_MAX, "%s/%u-%s", root, ++dir_counter, what);
    REQUIRE(mkdir(out, 0700) == 0);
}

static void
s_flush(void)
{
    if (pending_count == 0)
        return;
    journal_head_t head;
    int rc = journal_append(J, pending, pending_count, &head);
    if (rc != 0)
        check_fail(__FILE__, __LINE__, "journal_append: %s", journal_strerror(rc));
    REQUIRE(rc == 0);
    REQUIRE(head.seq == next_seq - 1);
    pending_count = 0;
    arena_used = 0;
}

/* A fresh ledger and journal. */
static void
s_reset(void)
{
    journal_close(&J);
    ledger_destroy(&L);
    REQUIRE(ledger_new(&L) == 0);
    if (events == NULL) {
        events = calloc(DECIDE_EVENTS_MAX, sizeof(*events));
        rows = calloc(CL_ISSUE_BATCH_MAX, sizeof(*rows));
        arena = malloc(ARENA_BYTES);
        pending = calloc(PENDING_MAX, sizeof(*pending));
    }
    REQUIRE(events != NULL && rows != NULL && arena != NULL && pending != NULL);
    s_mkdir_sub(journal_dir, "journal");
    journal_opts_t o = { .read_only = false };
    REQUIRE(journal_open(journal_dir, &o, &J) == 0);
    now_us = T0;
    next_seq = 1;
    rng_state = 0x9e3779b97f4a7c15ULL;
    memset(hash_key, 7, sizeof(hash_key));
    arena_used = 0;
    pending_count = 0;
}

static decide_ctx_t
s_ctx(void)
{
    decide_ctx_t ctx = { .now_us = now_us,
                         .next_seq = next_seq,
                         .key = hash_key,
                         .random = s_random,
                         .test_clock = true };
    return ctx;
}

/* Applies decided events to the ledger and queues them for the journal. */
static void
s_apply_out(decide_out_t *out)
{
    if (pending_count + out->events_count > PENDING_MAX ||
        arena_used + out->events_count * CODEC_EVENT_MAX_BYTES > ARENA_BYTES)
        s_flush();
    for (size_t i = 0; i < out->events_count; i++) {
        const cl_event_t *ev = &out->events[i];
        int rc = ledger_apply(L, ev);
        if (rc != 0)
            check_fail(__FILE__, __LINE__, "ledger_apply: %s", ledger_strerror(rc));
        size_t len;
        static cl_event_t old;
        if (old_redeem_region && ev->type == CL_EV_CARD_REDEEMED) {
            old = *ev;
            const ledger_card_t *card = ledger_card(L, ev->u.card_redeemed.card_id);
            REQUIRE(card != NULL);
            const ledger_store_t *st =
                ledger_store(L, card->merchant_id, ev->u.card_redeemed.store_id);
            REQUIRE(st != NULL && old.u.card_redeemed.region[0] == '\0');
            s_fmt(old.u.card_redeemed.region, sizeof(old.u.card_redeemed.region), "%s", st->region);
            old_redeem_regions_written += st->region[0] != '\0';
            ev = &old;
        }
        REQUIRE(codec_event_encode(ev, arena + arena_used, ARENA_BYTES - arena_used, &len) == 0);
        pending[pending_count++] = (journal_record_t){ .timestamp_us = ev->at_us,
                                                       .payload = arena + arena_used,
                                                       .payload_len = len };
        arena_used += len;
    }
    next_seq += out->events_count;
}

static const cl_reply_t *
s_run(cl_command_t *cmd)
{
    static unsigned counter;
    if (cmd->request_id[0] == '\0')
        s_fmt(cmd->request_id, sizeof(cmd->request_id), "req-%u", ++counter);
    decide_ctx_t ctx = s_ctx();
    decide_out_t out = { events, DECIDE_EVENTS_MAX, 0, &reply, rows, CL_ISSUE_BATCH_MAX };
    int rc = decide(L, &operator_p, cmd, &ctx, &out);
    if (rc != 0)
        check_fail(__FILE__, __LINE__, "decide: %s", decide_strerror(rc));
    s_apply_out(&out);
    decide_finish(L, cmd, &out);
    return &reply;
}

/* Fires every ledger timer due at now_us, as the daemon's loop does. */
static void
s_fire_timers(void)
{
    ledger_timer_t t;
    while (ledger_timer_peek(L, &t) && t.due_us <= now_us) {
        ledger_timer_pop(L);
        decide_ctx_t ctx = s_ctx();
        decide_out_t out = { events, DECIDE_EVENTS_MAX, 0, &reply, rows, CL_ISSUE_BATCH_MAX };
        REQUIRE(decide_timer(L, &t, &ctx, &out) == 0);
        s_apply_out(&out);
    }
}

/* Moves the clock (with a ClockAdvanced event, as the daemon's test clock does) and fires
 * the timers that came due. */
static void
s_advance_to(int64_t at_us)
{
    static cl_command_t c;
    memset(&c, 0, sizeof(c));
    c.type = CL_CMD_ADVANCE_CLOCK;
    c.u.set_now_us = at_us;
    now_us = at_us;
    s_run(&c);
    s_fire_timers();
}

#define CHECK_OK(r)                                                                                \
    do {                                                                                           \
        const cl_reply_t *ok_ = (r);                                                               \
        if (ok_->status != CL_OK)                                                                  \
            check_fail(__FILE__, __LINE__, "expected ok, got %s: %s", cl_status_name(ok_->status), \
                       ok_->message);                                                              \
    } while (0)

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
    s_fmt(c->u.register_merchant.merchant_id, CL_ID_MAX + 1, "%s", id);
    CHECK_OK(s_run(c));
}

static void
s_store(const char *merchant, const char *store, const char *region)
{
    cl_command_t *c = s_cmd(CL_CMD_REGISTER_STORE);
    s_fmt(c->u.register_store.merchant_id, CL_ID_MAX + 1, "%s", merchant);
    s_fmt(c->u.register_store.store_id, CL_ID_MAX + 1, "%s", store);
    s_fmt(c->u.register_store.region, CL_REGION_MAX + 1, "%s", region);
    CHECK_OK(s_run(c));
}

static cl_program_spec_t
s_spec(const char *merchant, const char *program, cl_kind_t kind, const char *currency)
{
    cl_program_spec_t s;
    memset(&s, 0, sizeof(s));
    s_fmt(s.merchant_id, sizeof(s.merchant_id), "%s", merchant);
    s_fmt(s.program_id, sizeof(s.program_id), "%s", program);
    s_fmt(s.currency, sizeof(s.currency), "%s", currency);
    s.kind = kind;
    s.accept_scope = CL_ACCEPT_ALL;
    s.transferable = true;
    s.valid_days = 365;
    return s;
}

static void
s_program(const cl_program_spec_t *spec)
{
    cl_command_t *c = s_cmd(CL_CMD_DEFINE_PROGRAM);
    c->u.program = *spec;
    CHECK_OK(s_run(c));
}

typedef struct issue {
    const char *merchant, *program, *holder;
    cl_channel_t channel;
    const char *store, *region;
    int64_t face, price;
    bool free;
} issue_t;

static uint64_t
s_issue(const issue_t *i, char code[CL_CODE_MAX + 1])
{
    cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
    cl_cmd_issue_card_t *ic = &c->u.issue_card;
    s_fmt(ic->merchant_id, sizeof(ic->merchant_id), "%s", i->merchant);
    s_fmt(ic->program_id, sizeof(ic->program_id), "%s", i->program);
    s_fmt(ic->holder, sizeof(ic->holder), "%s", i->holder != NULL ? i->holder : "");
    ic->channel = i->channel;
    s_fmt(ic->store_id, sizeof(ic->store_id), "%s", i->store != NULL ? i->store : "");
    s_fmt(ic->region, sizeof(ic->region), "%s", i->region != NULL ? i->region : "");
    ic->face_value_minor = i->face;
    ic->price_paid_minor = i->price;
    ic->paid_nothing = i->free;
    const cl_reply_t *r = s_run(c);
    CHECK_OK(r);
    if (code != NULL)
        s_fmt(code, CL_CODE_MAX + 1, "%s", r->code);
    return r->card.card_id;
}

/* Redeems; returns the redemption's sequence (0 when refused). */
static uint64_t
s_redeem(uint64_t card, const char *store, int64_t amount, uint32_t uses, int64_t order)
{
    cl_command_t *c = s_cmd(CL_CMD_REDEEM);
    c->u.redeem.card.card_id = card;
    s_fmt(c->u.redeem.store_id, sizeof(c->u.redeem.store_id), "%s", store);
    s_fmt(c->u.redeem.order_ref, sizeof(c->u.redeem.order_ref), "order-%llu",
          (unsigned long long)next_seq);
    c->u.redeem.amount_minor = amount;
    c->u.redeem.uses = uses;
    c->u.redeem.order_amount_minor = order;
    const cl_reply_t *r = s_run(c);
    return r->status == CL_OK ? r->redemption_seq : 0;
}

/* A redemption with a PIN (of a stored-value card: 1 minor unit). */
static void
s_redeem_pin(uint64_t card, const char *store, const char *pin)
{
    cl_command_t *c = s_cmd(CL_CMD_REDEEM);
    c->u.redeem.card.card_id = card;
    s_fmt(c->u.redeem.store_id, sizeof(c->u.redeem.store_id), "%s", store);
    s_fmt(c->u.redeem.pin, sizeof(c->u.redeem.pin), "%s", pin);
    c->u.redeem.amount_minor = 1;
    s_run(c);
}

static const cl_reply_t *
s_reverse(uint64_t card, uint64_t redemption_seq, int64_t amount, uint32_t uses)
{
    cl_command_t *c = s_cmd(CL_CMD_REVERSE_REDEMPTION);
    c->u.reverse.card.card_id = card;
    c->u.reverse.redemption_seq = redemption_seq;
    c->u.reverse.amount_minor = amount;
    c->u.reverse.uses = uses;
    s_fmt(c->u.reverse.reason, sizeof(c->u.reverse.reason), "refund");
    return s_run(c);
}

static const cl_reply_t *
s_reload(uint64_t card, int64_t amount)
{
    cl_command_t *c = s_cmd(CL_CMD_RELOAD);
    c->u.reload.card.card_id = card;
    c->u.reload.amount_minor = amount;
    c->u.reload.channel = CL_CHANNEL_ONLINE;
    return s_run(c);
}

static const cl_reply_t *
s_transfer_card(uint64_t card, const char *from, const char *to, const char *pin)
{
    cl_command_t *c = s_cmd(CL_CMD_TRANSFER_CARD);
    c->u.gift.card.card_id = card;
    s_fmt(c->u.gift.pin, sizeof(c->u.gift.pin), "%s", pin);
    s_fmt(c->u.gift.from_holder, sizeof(c->u.gift.from_holder), "%s", from);
    s_fmt(c->u.gift.to_holder, sizeof(c->u.gift.to_holder), "%s", to);
    return s_run(c);
}

static const cl_reply_t *
s_offer(uint64_t card, const char *from, const char *pin)
{
    cl_command_t *c = s_cmd(CL_CMD_OFFER_GIFT);
    c->u.gift.card.card_id = card;
    s_fmt(c->u.gift.pin, sizeof(c->u.gift.pin), "%s", pin);
    s_fmt(c->u.gift.from_holder, sizeof(c->u.gift.from_holder), "%s", from);
    return s_run(c);
}

static const cl_reply_t *
s_claim(uint64_t card, uint64_t offer, const char *secret, const char *holder)
{
    cl_command_t *c = s_cmd(CL_CMD_CLAIM_GIFT);
    c->u.gift_close.card.card_id = card;
    c->u.gift_close.offer_id = offer;
    s_fmt(c->u.gift_close.claim_secret, sizeof(c->u.gift_close.claim_secret), "%s", secret);
    s_fmt(c->u.gift_close.holder, sizeof(c->u.gift_close.holder), "%s", holder);
    return s_run(c);
}

static const cl_reply_t *
s_recall(uint64_t card, uint64_t offer)
{
    cl_command_t *c = s_cmd(CL_CMD_RECALL_GIFT);
    c->u.gift_close.card.card_id = card;
    c->u.gift_close.offer_id = offer;
    return s_run(c);
}

static const cl_reply_t *
s_transfer_balance(uint64_t from, uint64_t to, int64_t amount, const char *pin)
{
    cl_command_t *c = s_cmd(CL_CMD_TRANSFER_BALANCE);
    s_fmt(c->u.transfer_balance.from_pin, sizeof(c->u.transfer_balance.from_pin), "%s", pin);
    c->u.transfer_balance.from_card.card_id = from;
    c->u.transfer_balance.to_card.card_id = to;
    c->u.transfer_balance.amount_minor = amount;
    return s_run(c);
}

static const cl_reply_t *
s_adjust(uint64_t card, int64_t delta_minor, int32_t delta_uses)
{
    cl_command_t *c = s_cmd(CL_CMD_ADJUST);
    c->u.adjust.card.card_id = card;
    c->u.adjust.delta_minor = delta_minor;
    c->u.adjust.delta_uses = delta_uses;
    s_fmt(c->u.adjust.reason, sizeof(c->u.adjust.reason), "goodwill");
    return s_run(c);
}

static const cl_reply_t *
s_flag(cl_command_type_t type, uint64_t card)
{
    cl_command_t *c = s_cmd(type);
    c->u.card_flag.card.card_id = card;
    s_fmt(c->u.card_flag.reason, sizeof(c->u.card_flag.reason), "test");
    return s_run(c);
}

/* ---- Folding ------------------------------------------------------------------------------- */

/* Folds the journal into a fresh data directory (events_max per step, 0 = default) and returns
 * the set; *dir receives the directory. */
static pset_t *
s_fold_budget(size_t events_max, uint64_t budget_ns, const pset_opts_t *opts, char dir[PATH_MAX])
{
    s_flush();
    s_mkdir_sub(dir, "proj");
    pset_t *ps = NULL;
    int rc = pset_open(dir, J, opts, &ps);
    if (rc != 0)
        check_fail(__FILE__, __LINE__, "pset_open: %s", proj_strerror(rc));
    REQUIRE(rc == 0);
    for (int guard = 0; guard < 10000000; guard++) {
        pset_round_t r;
        rc = pset_step(ps, 0, events_max, budget_ns, &r);
        REQUIRE(rc == 0);
        if (!r.behind)
            break;
    }
    return ps;
}

static pset_t *
s_fold(size_t events_max, const pset_opts_t *opts, char dir[PATH_MAX])
{
    return s_fold_budget(events_max, 0, opts, dir);
}

static pstore_t *
s_store_of(pset_t *ps, size_t i)
{
    return proj_store(pset_active(ps, i));
}

static void
s_digests(pset_t *ps, uint8_t out[PROJ_COUNT][16])
{
    for (size_t i = 0; i < PROJ_COUNT; i++)
        REQUIRE(proj_digest(pset_active(ps, i), out[i]) == 0);
}

/* ---- Invariants ---------------------------------------------------------------------------- */

/* Uses a card of the program starts with (CardIssued.uses), as decide.c computes it. */
static uint32_t
s_uses_total(const cl_program_spec_t *spec)
{
    if (spec->kind == CL_KIND_PUNCH)
        return spec->uses_per_card;
    if (spec->kind >= CL_KIND_VOUCHER_THRESHOLD)
        return spec->voucher.uses_per_card != 0 ? spec->voucher.uses_per_card : 1;
    return 0;
}

/* The value a card holds as the ledger sees it (docs/analytics.md's valuation). */
static int64_t
s_ledger_value(const ledger_card_t *c)
{
    const ledger_program_t *p = ledger_program(L, c->merchant_id, c->program_id);
    if (c->state == CL_CARDSTATE_EXPIRED)
        return 0;
    if (p->spec.kind == CL_KIND_STORED_VALUE)
        return c->balance_minor;
    uint32_t total = s_uses_total(&p->spec);
    return total != 0 ? c->face_value_minor * (int64_t)c->uses_left / total : 0;
}

typedef struct total {
    char merchant[CL_ID_MAX + 1];
    char currency[CL_CURRENCY_LEN + 1];
    int64_t value;
    uint64_t live;
} total_t;

/*
 * Every invariant of a history: each card's view equals the ledger's; liability per program
 * and per currency equals the value of the cards that have not expired; analytics over all time
 * has the same outstanding, and outstanding = issued + reloaded + adjusted + transferred -
 * redeemed net - breakage; the store days sum to the analytics redemptions.
 */
static void
s_check_invariants(pset_t *ps, const char *const *merchants, size_t merchants_count)
{
    pstore_t *bal = s_store_of(ps, 0), *st = s_store_of(ps, 1), *an = s_store_of(ps, 2);
    uint64_t cards = ledger_meta(L)->cards, as_of;
    uint64_t head = next_seq - 1;
    static total_t totals[64];
    size_t totals_count = 0;
    for (uint64_t id = 1; id <= cards; id++) {
        const ledger_card_t *lc = ledger_card(L, id);
        REQUIRE(lc != NULL);
        cl_card_view_t want, got;
        ledger_card_view(L, lc, &want);
        cl_card_ref_t ref = { .card_id = id };
        REQUIRE(balances_card(bal, &ref, &got, &as_of) == 0);
        CHECK_EQ_U64(as_of, head);
        if (memcmp(&want, &got, sizeof(want)) != 0) {
            check_fail(__FILE__, __LINE__,
                       "card %llu: view differs (balance %lld/%lld uses %u/%u state %d/%d "
                       "holder %s/%s pin %u/%u masked %s/%s)",
                       (unsigned long long)id, (long long)got.balance_minor,
                       (long long)want.balance_minor, got.uses_left, want.uses_left, got.state,
                       want.state, got.holder, want.holder, got.pin_failures, want.pin_failures,
                       got.code_masked, want.code_masked);
        }
        ref.card_id = 0;
        s_fmt(ref.code, sizeof(ref.code), "%s", lc->code);
        REQUIRE(balances_card(bal, &ref, &got, &as_of) == 0);
        CHECK_EQ_U64(got.card_id, id);
        size_t t;
        for (t = 0; t < totals_count; t++) {
            if (strcmp(totals[t].merchant, lc->merchant_id) == 0 &&
                strcmp(totals[t].currency, want.currency) == 0)
                break;
        }
        if (t == totals_count) {
            REQUIRE(totals_count < 64);
            memset(&totals[t], 0, sizeof(totals[t]));
            s_fmt(totals[t].merchant, sizeof(totals[t].merchant), "%s", lc->merchant_id);
            s_fmt(totals[t].currency, sizeof(totals[t].currency), "%s", want.currency);
            totals_count++;
        }
        totals[t].value += s_ledger_value(lc);
        totals[t].live += lc->state == CL_CARDSTATE_ACTIVE;
    }

    static balances_liability_t liab[BALANCES_LIABILITY_MAX];
    analytics_row_t *rows_a = calloc(64, sizeof(*rows_a));
    REQUIRE(rows_a != NULL);
    for (size_t m = 0; m < merchants_count; m++) {
        size_t n;
        REQUIRE(balances_liability(bal, merchants[m], NULL, liab, BALANCES_LIABILITY_MAX, &n,
                                   &as_of) == 0);
        CHECK_EQ_U64(as_of, head);
        size_t na;
        bool more;
        REQUIRE(analytics_query(an, merchants[m], 0, 0, ANALYTICS_GROUP_NONE, NULL, rows_a, 64, &na,
                                &more, &as_of) == 0);
        CHECK_EQ_U64(as_of, head);
        for (size_t t = 0; t < totals_count; t++) {
            if (strcmp(totals[t].merchant, merchants[m]) != 0)
                continue;
            const balances_liability_t *row = NULL;
            for (size_t i = 0; i < n; i++) {
                if (liab[i].program_id[0] == '\0' &&
                    strcmp(liab[i].currency, totals[t].currency) == 0)
                    row = &liab[i];
            }
            REQUIRE(row != NULL);
            CHECK_EQ_INT(row->outstanding_minor, totals[t].value);
            CHECK_EQ_U64(row->live_cards, totals[t].live);
            const analytics_row_t *a = NULL;
            for (size_t i = 0; i < na; i++) {
                if (strcmp(rows_a[i].currency, totals[t].currency) == 0)
                    a = &rows_a[i];
            }
            REQUIRE(a != NULL);
            CHECK_EQ_INT(a->outstanding_minor, totals[t].value);
            CHECK_EQ_INT(a->issued_face_minor + a->reloaded_minor + a->adjusted_minor +
                             a->transferred_net_minor - a->redeemed_net_minor - a->breakage_minor,
                         a->outstanding_minor);
        }
        /* Program rows sum to the currency rows. */
        for (size_t i = 0; i < n; i++) {
            if (liab[i].program_id[0] != '\0')
                continue;
            int64_t sum = 0;
            for (size_t k = 0; k < n; k++) {
                if (liab[k].program_id[0] != '\0' &&
                    strcmp(liab[k].currency, liab[i].currency) == 0)
                    sum += liab[k].outstanding_minor;
            }
            CHECK_EQ_INT(sum, liab[i].outstanding_minor);
        }
        /* The region and store sets sum to the same totals as the channel set. */
        for (int g = ANALYTICS_GROUP_REGION; g <= ANALYTICS_GROUP_STORE; g++) {
            analytics_row_t *rg = calloc(ANALYTICS_ROWS_MAX, sizeof(*rg));
            REQUIRE(rg != NULL);
            size_t ng;
            REQUIRE(analytics_query(an, merchants[m], 0, 0, (analytics_group_t)g, NULL, rg,
                                    ANALYTICS_ROWS_MAX, &ng, &more, &as_of) == 0);
            for (size_t i = 0; i < na; i++) {
                int64_t out_sum = 0, red_sum = 0;
                uint64_t cnt = 0;
                for (size_t k = 0; k < ng; k++) {
                    if (strcmp(rg[k].currency, rows_a[i].currency) != 0)
                        continue;
                    out_sum += rg[k].outstanding_minor;
                    red_sum += rg[k].redeemed_net_minor;
                    cnt += rg[k].redemption_count;
                }
                CHECK_EQ_INT(out_sum, rows_a[i].outstanding_minor);
                CHECK_EQ_INT(red_sum, rows_a[i].redeemed_net_minor);
                CHECK_EQ_U64(cnt, rows_a[i].redemption_count);
            }
            free(rg);
        }
        /* The settlement matrix sums to the analytics redemptions. */
        stores_cell_t *cells = calloc(STORES_SETTLEMENT_MAX, sizeof(*cells));
        REQUIRE(cells != NULL);
        size_t nc;
        REQUIRE(stores_settlement(st, merchants[m], 0, 0, cells, STORES_SETTLEMENT_MAX, &nc, &more,
                                  &as_of) == 0);
        CHECK_EQ_U64(as_of, head);
        int64_t settled = 0, redeemed = 0;
        uint64_t settled_count = 0, redemption_count = 0;
        for (size_t i = 0; i < nc; i++) {
            settled += cells[i].value_minor;
            settled_count += cells[i].redemptions;
        }
        for (size_t i = 0; i < na; i++) {
            redeemed += rows_a[i].redeemed_net_minor;
            redemption_count += rows_a[i].redemption_count;
        }
        CHECK_EQ_INT(settled, redeemed);
        CHECK_EQ_U64(settled_count, redemption_count);
        free(cells);
    }
    free(rows_a);
}

/* ---- The scripted history ------------------------------------------------------------------ */

typedef struct script {
    uint64_t a, b, y, v, z;                             /* the cards */
    char code_a[CL_CODE_MAX + 1];                       /* A's code */
    uint64_t red_a, red_b, red_y, red_v, red_z, red_y2; /* redemption sequences */
} script_t;

/*
 * m1 (CNY): stores s-sh (310000) and s-bj (110000); programs gift (stored value, 30 days,
 * reloadable), yoga (10-visit punch card, face 50000) and v20 (a 20-off-100 voucher valued
 * 2000, 10 days). m2 (USD): store t1 (440300), program card (stored value).
 */
static void
s_script(script_t *s)
{
    memset(s, 0, sizeof(*s));
    s_reset();
    s_merchant("m1");
    s_merchant("m2");
    s_store("m1", "s-sh", "310000");
    s_store("m1", "s-bj", "110000");
    s_store("m2", "t1", "440300");
    cl_program_spec_t gift = s_spec("m1", "gift", CL_KIND_STORED_VALUE, "CNY");
    gift.denoms_count = 2;
    gift.denoms_minor[0] = 10000;
    gift.denoms_minor[1] = 20000;
    gift.reloadable = true;
    gift.balance_max_minor = 50000;
    gift.valid_days = 30;
    s_program(&gift);
    cl_program_spec_t yoga = s_spec("m1", "yoga", CL_KIND_PUNCH, "CNY");
    yoga.uses_per_card = 10;
    yoga.denoms_count = 1;
    yoga.denoms_minor[0] = 50000;
    s_program(&yoga);
    cl_program_spec_t v20 = s_spec("m1", "v20", CL_KIND_VOUCHER_THRESHOLD, "CNY");
    v20.voucher.threshold_minor = 10000;
    v20.voucher.amount_off_minor = 2000;
    v20.voucher.uses_per_card = 1;
    v20.denoms_count = 1;
    v20.denoms_minor[0] = 2000;
    v20.valid_days = 10;
    s_program(&v20);
    cl_program_spec_t card = s_spec("m2", "card", CL_KIND_STORED_VALUE, "USD");
    card.denoms_count = 1;
    card.denoms_minor[0] = 5000;
    s_program(&card);

    /* Day 0. */
    s->a = s_issue(
        &(issue_t){ "m1", "gift", "alice", CL_CHANNEL_ONLINE, NULL, "310000", 20000, 18000, false },
        s->code_a);
    s->b = s_issue(
        &(issue_t){ "m1", "gift", "bob", CL_CHANNEL_STORE, "s-bj", NULL, 10000, 0, false }, NULL);
    s->y = s_issue(
        &(issue_t){ "m1", "yoga", "carol", CL_CHANNEL_STORE, "s-sh", NULL, 0, 45000, false }, NULL);
    s->v = s_issue(
        &(issue_t){ "m1", "v20", "dave", CL_CHANNEL_PLATFORM, NULL, "110000", 0, 0, true }, NULL);
    s->z = s_issue(
        &(issue_t){ "m2", "card", "alice", CL_CHANNEL_ONLINE, NULL, "440300", 5000, 0, false },
        NULL);
    s->red_a = s_redeem(s->a, "s-sh", 5000, 0, 0);
    s->red_b = s_redeem(s->b, "s-sh", 3000, 0, 0);
    s->red_y = s_redeem(s->y, "s-bj", 0, 2, 0);
    REQUIRE(s->red_a != 0 && s->red_b != 0 && s->red_y != 0);

    /* Day 2. */
    s_advance_to(T0 + 2 * DAY_US + 3600LL * 1000000);
    CHECK_OK(s_reverse(s->b, s->red_b, 1000, 0));
    CHECK_OK(s_reload(s->a, 10000));
    CHECK_OK(s_transfer_card(s->a, "alice", "erin", ""));
    s->red_v = s_redeem(s->v, "s-bj", 0, 0, 15000);
    REQUIRE(s->red_v != 0);

    /* Day 8. */
    s_advance_to(T0 + 8 * DAY_US);
    CHECK_OK(s_adjust(s->y, 0, 1));
    CHECK_OK(s_transfer_balance(s->a, s->b, 5000, ""));
    s->red_z = s_redeem(s->z, "t1", 5000, 0, 0);
    REQUIRE(s->red_z != 0);
    CHECK_OK(s_flag(CL_CMD_FREEZE, s->b));
    CHECK_OK(s_flag(CL_CMD_UNFREEZE, s->b));

    /* Day 31: gift cards A and B have expired (30 days); one more visit on the yoga pass. */
    s_advance_to(T0 + 31 * DAY_US);
    s->red_y2 = s_redeem(s->y, "s-sh", 0, 1, 0);
    REQUIRE(s->red_y2 != 0);
}

static const analytics_row_t *
s_row(const analytics_row_t *rows_in, size_t n, const char *key, const char *currency)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows_in[i].key, key) == 0 && strcmp(rows_in[i].currency, currency) == 0)
            return &rows_in[i];
    }
    check_fail(__FILE__, __LINE__, "no analytics row %s/%s", key, currency);
    check_abort_case();
}

static void
scripted_history_gives_the_hand_computed_balances(void)
{
    script_t s;
    s_script(&s);
    char dir[PATH_MAX];
    pset_t *ps = s_fold(0, NULL, dir);
    pstore_t *bal = s_store_of(ps, 0);
    uint64_t head = next_seq - 1, as_of;

    /* A: 20000 - 5000 + 10000 (reload) - 5000 (transfer to B), then expired with 20000 left;
     * given to erin. */
    cl_card_view_t v;
    cl_card_ref_t ref = { .card_id = s.a };
    REQUIRE(balances_card(bal, &ref, &v, &as_of) == 0);
    CHECK_EQ_U64(as_of, head);
    CHECK_EQ_INT(v.balance_minor, 20000);
    CHECK_EQ_INT(v.state, CL_CARDSTATE_EXPIRED);
    CHECK_EQ_STR(v.holder, "erin");
    CHECK_EQ_INT(v.redeemed_minor, 5000);
    CHECK_EQ_INT(v.transfers_done, 1);
    CHECK_EQ_STR(v.currency, "CNY");
    CHECK(strstr(v.code_masked, s.code_a) == NULL);
    CHECK_EQ_STR(v.code_masked + strlen(v.code_masked) - 4, s.code_a + strlen(s.code_a) - 4);
    /* The same card by its code, typed with dashes and spaces. */
    memset(&ref, 0, sizeof(ref));
    s_fmt(ref.code, sizeof(ref.code), "%.4s-%.4s %s", s.code_a, s.code_a + 4, s.code_a + 8);
    REQUIRE(balances_card(bal, &ref, &v, &as_of) == 0);
    CHECK_EQ_U64(v.card_id, s.a);
    s_fmt(ref.code, sizeof(ref.code), "0000000000000000000");
    CHECK_EQ_INT(balances_card(bal, &ref, &v, &as_of), PROJ_ENOTFOUND);

    /* B: 10000 - 3000 + 1000 (reversal) + 5000 (transfer in) = 13000, expired. */
    ref = (cl_card_ref_t){ .card_id = s.b };
    REQUIRE(balances_card(bal, &ref, &v, &as_of) == 0);
    CHECK_EQ_INT(v.balance_minor, 13000);
    CHECK_EQ_INT(v.redeemed_minor, 2000);
    CHECK(!v.frozen);
    /* Y: 10 - 2 + 1 - 1 = 8 uses. V: used up. */
    ref.card_id = s.y;
    REQUIRE(balances_card(bal, &ref, &v, &as_of) == 0);
    CHECK_EQ_INT(v.uses_left, 8);
    CHECK_EQ_INT(v.state, CL_CARDSTATE_ACTIVE);
    CHECK_EQ_INT(v.kind, CL_KIND_PUNCH);
    ref.card_id = s.v;
    REQUIRE(balances_card(bal, &ref, &v, &as_of) == 0);
    CHECK_EQ_INT(v.uses_left, 0);
    CHECK_EQ_INT(v.state, CL_CARDSTATE_EXHAUSTED);
    CHECK_EQ_INT(v.redeemed_minor, 2000);

    /* A's history: issued, redeemed, reloaded, offered, claimed, transferred, expired. */
    balances_history_t *h = calloc(1, sizeof(*h));
    REQUIRE(h != NULL);
    ref = (cl_card_ref_t){ .card_id = s.a };
    REQUIRE(balances_history(bal, &ref, 0, h, &as_of) == 0);
    CHECK_EQ_U64(h->events_total, 7);
    REQUIRE(h->seqs_count == 7);
    CHECK_EQ_U64(h->seqs[1], s.red_a);
    static const cl_event_type_t want_types[7] = {
        CL_EV_CARD_ISSUED,  CL_EV_CARD_REDEEMED,       CL_EV_CARD_RELOADED, CL_EV_GIFT_OFFERED,
        CL_EV_GIFT_CLAIMED, CL_EV_BALANCE_TRANSFERRED, CL_EV_CARD_EXPIRED,
    };
    for (size_t i = 0; i < 7; i++) {
        static uint8_t buf[JOURNAL_PAYLOAD_MAX];
        journal_entry_t e;
        REQUIRE(journal_read(J, h->seqs[i], buf, sizeof(buf), &e) == 0);
        cl_event_type_t type;
        REQUIRE(codec_event_peek_type(e.payload, e.payload_len, &type) == 0);
        CHECK_EQ_INT(type, want_types[i]);
        if (i > 0)
            CHECK(h->seqs[i] > h->seqs[i - 1]);
    }
    REQUIRE(h->holders_count == 2);
    CHECK_EQ_STR(h->holders[0].holder, "alice");
    CHECK_EQ_STR(h->holders[1].holder, "erin");
    CHECK_EQ_U64(h->holders[1].since_seq, h->seqs[4]);
    /* The most recent 3 only. */
    uint64_t all[7];
    memcpy(all, h->seqs, sizeof(all));
    REQUIRE(balances_history(bal, &ref, 3, h, &as_of) == 0);
    REQUIRE(h->seqs_count == 3);
    CHECK_EQ_U64(h->seqs[0], all[4]);
    CHECK_EQ_U64(h->seqs[2], all[6]);
    CHECK_EQ_U64(h->events_total, 7);
    free(h);

    /* Wallets: alice holds Z at m2 and nothing at m1 any more; erin holds A. */
    cl_card_view_t w[8];
    size_t n;
    bool more;
    REQUIRE(balances_wallet(bal, "m1", "alice", w, 8, &n, &more, &as_of) == 0);
    CHECK_EQ_U64(n, 0);
    REQUIRE(balances_wallet(bal, "m1", "erin", w, 8, &n, &more, &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_U64(w[0].card_id, s.a);
    REQUIRE(balances_wallet(bal, "m2", "alice", w, 8, &n, &more, &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_U64(w[0].card_id, s.z);
    CHECK(!more);
    REQUIRE(balances_wallet(bal, "m1", "carol", w, 8, &n, &more, &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_INT(w[0].uses_left, 8);

    /* Liability: gift 0 (both expired), v20 0 (used up), yoga 50000 x 8 / 10 = 40000. */
    balances_liability_t l[16];
    REQUIRE(balances_liability(bal, "m1", NULL, l, 16, &n, &as_of) == 0);
    REQUIRE(n == 4);
    CHECK_EQ_STR(l[0].program_id, "gift");
    CHECK_EQ_INT(l[0].outstanding_minor, 0);
    CHECK_EQ_U64(l[0].live_cards, 0);
    CHECK_EQ_STR(l[1].program_id, "v20");
    CHECK_EQ_INT(l[1].outstanding_minor, 0);
    CHECK_EQ_U64(l[1].live_cards, 0);
    CHECK_EQ_STR(l[2].program_id, "yoga");
    CHECK_EQ_INT(l[2].outstanding_minor, 40000);
    CHECK_EQ_U64(l[2].live_cards, 1);
    CHECK_EQ_U64(l[2].uses_outstanding, 8);
    CHECK_EQ_STR(l[3].program_id, "");
    CHECK_EQ_STR(l[3].currency, "CNY");
    CHECK_EQ_INT(l[3].outstanding_minor, 40000);
    CHECK_EQ_U64(l[3].live_cards, 1);
    REQUIRE(balances_liability(bal, "m1", "yoga", l, 16, &n, &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_INT(l[0].outstanding_minor, 40000);
    CHECK_EQ_INT(balances_liability(bal, "m1", "nope", l, 16, &n, &as_of), PROJ_ENOTFOUND);
    REQUIRE(balances_liability(bal, "m2", NULL, l, 16, &n, &as_of) == 0);
    REQUIRE(n == 2);
    CHECK_EQ_STR(l[1].currency, "USD");
    CHECK_EQ_INT(l[1].outstanding_minor, 0);
    CHECK_EQ_U64(l[1].live_cards, 1);

    static const char *const merchants[] = { "m1", "m2" };
    s_check_invariants(ps, merchants, 2);
    pset_close(&ps);
}

static void
scripted_history_gives_the_hand_computed_store_views(void)
{
    script_t s;
    s_script(&s);
    char dir[PATH_MAX];
    pset_t *ps = s_fold(0, NULL, dir);
    pstore_t *st = s_store_of(ps, 1);
    uint64_t as_of;

    stores_day_t d;
    REQUIRE(stores_day(st, "m1", "s-sh", T0 + 5, &d, &as_of) == 0);
    CHECK_EQ_U64(as_of, next_seq - 1);
    CHECK_EQ_U64(d.redemptions, 2); /* A 5000, B 3000 */
    CHECK_EQ_INT(d.redeemed_minor, 8000);
    CHECK_EQ_U64(d.reversals, 0);
    REQUIRE(stores_day(st, "m1", "s-sh", T0 + 2 * DAY_US + 7, &d, &as_of) == 0);
    CHECK_EQ_U64(d.redemptions, 0);
    CHECK_EQ_U64(d.reversals, 1);
    CHECK_EQ_INT(d.reversed_minor, 1000);
    REQUIRE(stores_day(st, "m1", "s-bj", T0 + DAY_US - 1, &d, &as_of) == 0);
    CHECK_EQ_U64(d.redemptions, 1); /* Y, 2 visits of 10 on a 50000 pass */
    CHECK_EQ_INT(d.redeemed_minor, 10000);
    CHECK_EQ_U64(d.uses_redeemed, 2);
    REQUIRE(stores_day(st, "m1", "s-bj", T0 + 2 * DAY_US, &d, &as_of) == 0);
    CHECK_EQ_U64(d.redemptions, 1); /* V: the voucher's value 2000, discount 2000 */
    CHECK_EQ_INT(d.redeemed_minor, 2000);
    CHECK_EQ_INT(d.discount_minor, 2000);
    REQUIRE(stores_day(st, "m1", "s-sh", T0 + 31 * DAY_US, &d, &as_of) == 0);
    CHECK_EQ_U64(d.redemptions, 1);
    CHECK_EQ_INT(d.redeemed_minor, 5000);
    REQUIRE(stores_day(st, "m1", "s-sh", T0 + 40 * DAY_US, &d, &as_of) == 0);
    CHECK_EQ_U64(d.redemptions, 0);
    REQUIRE(stores_day(st, "m2", "t1", T0 + 8 * DAY_US, &d, &as_of) == 0);
    CHECK_EQ_INT(d.redeemed_minor, 5000);

    /* s-sh's redemptions, two at a time. */
    stores_line_t lines[4];
    size_t n;
    bool more;
    REQUIRE(stores_redemptions(st, "m1", "s-sh", 0, 0, 2, 0, lines, 4, &n, &more, &as_of) == 0);
    REQUIRE(n == 2);
    CHECK(more);
    CHECK_EQ_U64(lines[0].seq, s.red_a);
    CHECK_EQ_U64(lines[0].card_id, s.a);
    CHECK_EQ_INT(lines[0].amount_minor, 5000);
    CHECK_EQ_U64(lines[1].seq, s.red_b);
    CHECK_EQ_INT(lines[1].amount_minor, 3000);
    CHECK_EQ_INT(lines[1].reversed_minor, 1000);
    CHECK_EQ_INT(lines[1].at_us, T0);
    CHECK(strstr(lines[0].code_masked, s.code_a) == NULL);
    CHECK(strncmp(lines[0].order_ref, "order-", 6) == 0);
    REQUIRE(stores_redemptions(st, "m1", "s-sh", 0, 0, 2, lines[1].seq, lines, 4, &n, &more,
                               &as_of) == 0);
    REQUIRE(n == 1);
    CHECK(!more);
    CHECK_EQ_U64(lines[0].seq, s.red_y2);
    CHECK_EQ_INT(lines[0].amount_minor, 5000);
    CHECK_EQ_U64(lines[0].uses, 1);
    /* A time range: day 0 only. */
    REQUIRE(stores_redemptions(st, "m1", "s-sh", T0, T0 + DAY_US, 0, 0, lines, 4, &n, &more,
                               &as_of) == 0);
    CHECK_EQ_U64(n, 2);
    REQUIRE(stores_redemptions(st, "m1", "s-sh", T0 + 1, T0 + 40 * DAY_US, 0, 0, lines, 4, &n,
                               &more, &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_U64(lines[0].seq, s.red_y2);

    /* Settlement: sold where, redeemed where, net of reversals. */
    stores_cell_t cells[16];
    REQUIRE(stores_settlement(st, "m1", 0, 0, cells, 16, &n, &more, &as_of) == 0);
    REQUIRE(n == 5);
    static const struct {
        const char *sold, *redeemed;
        uint64_t count;
        int64_t value;
    } want[5] = {
        { "region:110000", "s-bj", 1, 2000 }, { "region:310000", "s-sh", 1, 5000 },
        { "s-bj", "s-sh", 1, 2000 },          { "s-sh", "s-bj", 1, 10000 },
        { "s-sh", "s-sh", 1, 5000 },
    };
    for (size_t i = 0; i < 5; i++) {
        CHECK_EQ_STR(cells[i].sold, want[i].sold);
        CHECK_EQ_STR(cells[i].redeemed_store_id, want[i].redeemed);
        CHECK_EQ_U64(cells[i].redemptions, want[i].count);
        CHECK_EQ_INT(cells[i].value_minor, want[i].value);
    }
    /* Day 2 alone: the reversal of B's redemption and V. */
    REQUIRE(stores_settlement(st, "m1", T0 + 2 * DAY_US, T0 + 3 * DAY_US, cells, 16, &n, &more,
                              &as_of) == 0);
    REQUIRE(n == 2);
    CHECK_EQ_STR(cells[0].sold, "region:110000");
    CHECK_EQ_INT(cells[0].value_minor, 2000);
    CHECK_EQ_STR(cells[1].sold, "s-bj");
    CHECK_EQ_U64(cells[1].redemptions, 0);
    CHECK_EQ_INT(cells[1].value_minor, -1000);
    pset_close(&ps);
}

static void
scripted_history_gives_every_hand_computed_analytics_figure(void)
{
    script_t s;
    s_script(&s);
    char dir[PATH_MAX];
    pset_t *ps = s_fold(0, NULL, dir);
    pstore_t *an = s_store_of(ps, 2);
    analytics_row_t *r = calloc(64, sizeof(*r));
    REQUIRE(r != NULL);
    size_t n;
    bool more;
    uint64_t as_of;

    /* m1 over all time. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_NONE, NULL, r, 64, &n, &more, &as_of) ==
            0);
    CHECK_EQ_U64(as_of, next_seq - 1);
    REQUIRE(n == 1);
    const analytics_row_t *t = &r[0];
    CHECK_EQ_STR(t->key, "");
    CHECK_EQ_STR(t->currency, "CNY");
    CHECK_EQ_U64(t->issued_count, 4);
    CHECK_EQ_INT(t->issued_face_minor, 82000); /* 20000 + 10000 + 50000 + 2000 */
    CHECK_EQ_INT(t->price_paid_minor, 73000);  /* 18000 + 10000 + 45000 + 0 */
    CHECK_EQ_INT(t->reloaded_minor, 10000);
    CHECK_EQ_U64(t->redemption_count, 5);
    CHECK_EQ_INT(t->redeemed_net_minor, 24000); /* 5000 + 3000 + 10000 + 2000 + 5000 - 1000 */
    CHECK_EQ_U64(t->reversal_count, 1);
    CHECK_EQ_INT(t->avg_redemption_minor, 4800);
    CHECK_EQ_INT(t->breakage_minor, 33000); /* A 20000 + B 13000 */
    CHECK_EQ_U64(t->expired_cards, 2);
    CHECK_EQ_INT(t->adjusted_minor, 5000); /* one visit of 50000 / 10 */
    CHECK_EQ_INT(t->transferred_net_minor, 0);
    CHECK_EQ_INT(t->discount_net_minor, 2000);
    CHECK_EQ_INT(t->outstanding_minor, 40000);          /* 82000 + 10000 + 5000 - 24000 - 33000 */
    CHECK_EQ_U64(t->value_redemption_rate_ppm, 260869); /* 24000 / 92000 */
    CHECK_EQ_U64(t->cards_redeemed, 4);
    CHECK_EQ_U64(t->card_redemption_rate_ppm, 1000000);
    CHECK_EQ_U64(t->cards_gifted, 1);
    CHECK_EQ_U64(t->gift_rate_ppm, 250000);
    CHECK_EQ_U64(t->cross_region_redemptions, 2); /* B at s-sh, Y at s-bj */
    CHECK_EQ_U64(t->cross_region_share_ppm, 400000);
    CHECK_EQ_U64(t->lag_buckets[0], 3); /* A, B, Y on their issue day */
    CHECK_EQ_U64(t->lag_buckets[1], 1); /* V after 2 days */
    CHECK_EQ_U64(t->lag_buckets[2], 0);
    CHECK_EQ_U64(t->lag_buckets[3], 0);
    CHECK_EQ_U64(t->lag_buckets[4], 0);
    REQUIRE(t->denominations_count == 4);
    CHECK_EQ_INT(t->denominations[0].face_value_minor, 2000);
    CHECK_EQ_INT(t->denominations[1].face_value_minor, 10000);
    CHECK_EQ_INT(t->denominations[2].face_value_minor, 20000);
    CHECK_EQ_INT(t->denominations[3].face_value_minor, 50000);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_U64(t->denominations[i].cards, 1);

    /* m2. */
    REQUIRE(analytics_query(an, "m2", 0, 0, ANALYTICS_GROUP_NONE, NULL, r, 64, &n, &more, &as_of) ==
            0);
    REQUIRE(n == 1);
    CHECK_EQ_STR(r[0].currency, "USD");
    CHECK_EQ_INT(r[0].issued_face_minor, 5000);
    CHECK_EQ_INT(r[0].price_paid_minor, 5000);
    CHECK_EQ_INT(r[0].redeemed_net_minor, 5000);
    CHECK_EQ_INT(r[0].outstanding_minor, 0);
    CHECK_EQ_U64(r[0].lag_buckets[2], 1); /* 8 days */
    CHECK_EQ_U64(r[0].value_redemption_rate_ppm, 1000000);
    CHECK_EQ_U64(r[0].cross_region_redemptions, 0);

    /* By day: the liability at the end of each day. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_DAY, NULL, r, 64, &n, &more, &as_of) ==
            0);
    REQUIRE(n == 4);
    CHECK_EQ_STR(r[0].key, "2026-01-01");
    CHECK_EQ_U64(r[0].issued_count, 4);
    CHECK_EQ_INT(r[0].redeemed_net_minor, 18000);
    CHECK_EQ_INT(r[0].outstanding_minor, 64000);
    CHECK_EQ_STR(r[1].key, "2026-01-03");
    CHECK_EQ_INT(r[1].redeemed_net_minor, 1000); /* V 2000 - reversal 1000 */
    CHECK_EQ_U64(r[1].redemption_count, 1);
    CHECK_EQ_U64(r[1].cards_gifted, 1);
    CHECK_EQ_INT(r[1].outstanding_minor, 73000);
    CHECK_EQ_STR(r[2].key, "2026-01-09");
    CHECK_EQ_INT(r[2].adjusted_minor, 5000);
    CHECK_EQ_INT(r[2].outstanding_minor, 78000);
    CHECK_EQ_STR(r[3].key, "2026-02-01");
    CHECK_EQ_INT(r[3].breakage_minor, 33000);
    CHECK_EQ_INT(r[3].outstanding_minor, 40000);

    /* A range (days 1 .. 8): flows inside it, liability at its end. */
    REQUIRE(analytics_query(an, "m1", T0 + DAY_US, T0 + 9 * DAY_US, ANALYTICS_GROUP_NONE, NULL, r,
                            64, &n, &more, &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_U64(r[0].issued_count, 0);
    CHECK_EQ_INT(r[0].reloaded_minor, 10000);
    CHECK_EQ_INT(r[0].redeemed_net_minor, 1000);
    CHECK_EQ_INT(r[0].adjusted_minor, 5000);
    CHECK_EQ_INT(r[0].outstanding_minor, 78000);
    CHECK_EQ_U64(r[0].value_redemption_rate_ppm, 100000); /* 1000 / 10000 */
    CHECK_EQ_U64(r[0].card_redemption_rate_ppm, 0);       /* no card issued in the range */

    /* By program. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_PROGRAM, NULL, r, 64, &n, &more,
                            &as_of) == 0);
    REQUIRE(n == 3);
    const analytics_row_t *g = s_row(r, n, "gift", "CNY");
    CHECK_EQ_U64(g->issued_count, 2);
    CHECK_EQ_INT(g->redeemed_net_minor, 7000);
    CHECK_EQ_INT(g->breakage_minor, 33000);
    CHECK_EQ_INT(g->outstanding_minor, 0);
    CHECK_EQ_INT(g->transferred_net_minor, 0);
    const analytics_row_t *y = s_row(r, n, "yoga", "CNY");
    CHECK_EQ_INT(y->redeemed_net_minor, 15000);
    CHECK_EQ_INT(y->outstanding_minor, 40000);
    CHECK_EQ_U64(y->redemption_count, 2);
    CHECK_EQ_U64(y->cards_redeemed, 1);
    const analytics_row_t *vv = s_row(r, n, "v20", "CNY");
    CHECK_EQ_INT(vv->discount_net_minor, 2000);
    CHECK_EQ_U64(vv->lag_buckets[1], 1);
    /* One program only. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_NONE, "yoga", r, 64, &n, &more,
                            &as_of) == 0);
    REQUIRE(n == 1);
    CHECK_EQ_INT(r[0].outstanding_minor, 40000);
    CHECK_EQ_U64(r[0].issued_count, 1);

    /* By channel. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_CHANNEL, NULL, r, 64, &n, &more,
                            &as_of) == 0);
    REQUIRE(n == 3);
    CHECK_EQ_U64(s_row(r, n, "online", "CNY")->issued_count, 1);
    CHECK_EQ_INT(s_row(r, n, "online", "CNY")->transferred_net_minor, -5000);
    CHECK_EQ_INT(s_row(r, n, "store", "CNY")->transferred_net_minor, 5000);
    CHECK_EQ_U64(s_row(r, n, "store", "CNY")->issued_count, 2);
    CHECK_EQ_INT(s_row(r, n, "store", "CNY")->outstanding_minor, 40000);
    CHECK_EQ_U64(s_row(r, n, "platform", "CNY")->issued_count, 1);

    /* By region: redemptions where they happened, liability where the cards were sold. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_REGION, NULL, r, 64, &n, &more,
                            &as_of) == 0);
    REQUIRE(n == 2);
    const analytics_row_t *sh = s_row(r, n, "310000", "CNY");
    CHECK_EQ_U64(sh->issued_count, 2); /* A online in 310000, Y at s-sh */
    CHECK_EQ_U64(sh->redemption_count, 3);
    CHECK_EQ_INT(sh->redeemed_net_minor, 12000); /* 5000 + 3000 + 5000 - 1000 */
    CHECK_EQ_U64(sh->cross_region_redemptions, 1);
    CHECK_EQ_INT(sh->outstanding_minor, 40000);
    const analytics_row_t *bj = s_row(r, n, "110000", "CNY");
    CHECK_EQ_U64(bj->issued_count, 2);
    CHECK_EQ_U64(bj->redemption_count, 2);
    CHECK_EQ_INT(bj->redeemed_net_minor, 12000);
    CHECK_EQ_INT(bj->outstanding_minor, 0);

    /* By store: the selling store, or region:<code> for cards sold without one. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_STORE, NULL, r, 64, &n, &more,
                            &as_of) == 0);
    REQUIRE(n == 4);
    CHECK_EQ_U64(s_row(r, n, "region:310000", "CNY")->issued_count, 1);
    CHECK_EQ_U64(s_row(r, n, "region:110000", "CNY")->issued_count, 1);
    CHECK_EQ_U64(s_row(r, n, "s-sh", "CNY")->redemption_count, 3);
    CHECK_EQ_U64(s_row(r, n, "s-bj", "CNY")->redemption_count, 2);
    CHECK_EQ_INT(s_row(r, n, "s-sh", "CNY")->outstanding_minor, 40000);
    CHECK(!more);
    /* A cap on rows says there were more. */
    REQUIRE(analytics_query(an, "m1", 0, 0, ANALYTICS_GROUP_STORE, NULL, r, 2, &n, &more, &as_of) ==
            0);
    CHECK_EQ_U64(n, 2);
    CHECK(more);
    /* An empty range, and an unknown merchant. */
    REQUIRE(analytics_query(an, "m1", T0 + 5, T0 + 5, ANALYTICS_GROUP_NONE, NULL, r, 64, &n, &more,
                            &as_of) == 0);
    CHECK_EQ_U64(n, 0);
    REQUIRE(analytics_query(an, "nobody", 0, 0, ANALYTICS_GROUP_DAY, NULL, r, 64, &n, &more,
                            &as_of) == 0);
    CHECK_EQ_U64(n, 0);
    CHECK_EQ_INT(
        analytics_query(an, "m1", 0, 0, (analytics_group_t)9, NULL, r, 64, &n, &more, &as_of),
        PROJ_EINVAL);
    free(r);
    pset_close(&ps);
}

/* ---- Random histories ---------------------------------------------------------------------- */

static const char *const s_rand_merchants[] = { "ma", "mb", "mc" };

/* A random history over every event kind: several merchants, stores, regions, channels,
 * programs of every kind, gifts (claimed, recalled, timed out), reversals, reloads, transfers,
 * adjustments, freezes, expiries with breakage and reminders. */
static void
s_random_history(uint64_t seed, size_t commands)
{
    s_reset();
    rng_state = seed;
    static const char *const regions[] = { "310000", "110000", "440300", "" };
    static const char *const holders[] = { "h1", "h2", "h3", "h4", "h5", "" };
    static const cl_channel_t channels[] = { CL_CHANNEL_ONLINE, CL_CHANNEL_STORE,
                                             CL_CHANNEL_ENTERPRISE, CL_CHANNEL_PLATFORM };
    char store_ids[3][4][CL_ID_MAX + 1];
    for (size_t m = 0; m < 3; m++) {
        s_merchant(s_rand_merchants[m]);
        for (size_t k = 0; k < 4; k++) {
            s_fmt(store_ids[m][k], CL_ID_MAX + 1, "%s-s%zu", s_rand_merchants[m], k);
            s_store(s_rand_merchants[m], store_ids[m][k], regions[k % 3]);
        }
        static const cl_kind_t kinds[] = { CL_KIND_STORED_VALUE, CL_KIND_PUNCH,
                                           CL_KIND_VOUCHER_CASH, CL_KIND_VOUCHER_PERCENT,
                                           CL_KIND_VOUCHER_EXCHANGE };
        for (size_t p = 0; p < 5; p++) {
            char pid[CL_ID_MAX + 1];
            s_fmt(pid, sizeof(pid), "p%zu", p);
            cl_program_spec_t spec =
                s_spec(s_rand_merchants[m], pid, kinds[p], m == 2 && p == 0 ? "USD" : "CNY");
            spec.valid_days = 5 + (uint32_t)s_rand(60);
            spec.remind_days_before_expiry = p == 0 ? 3 : 0;
            spec.denoms_count = 2;
            spec.denoms_minor[0] = 5000 + 1000 * (int64_t)p;
            spec.denoms_minor[1] = 10000;
            if (kinds[p] == CL_KIND_STORED_VALUE) {
                spec.reloadable = true;
                spec.balance_max_minor = 100000;
            }
            if (kinds[p] == CL_KIND_PUNCH)
                spec.uses_per_card = 3 + (uint32_t)s_rand(8);
            spec.pin_required = m == 1 && p == 0; /* wrong PINs, locks and unlocks */
            spec.voucher.uses_per_card = 1 + (uint32_t)s_rand(3);
            spec.voucher.amount_off_minor = 500;
            spec.voucher.percent_off_bp = 1500;
            spec.voucher.cap_minor = 3000;
            spec.voucher.skus_count = 1;
            s_fmt(spec.voucher.skus[0], sizeof(spec.voucher.skus[0]), "tea");
            s_program(&spec);
        }
    }
    uint64_t *redemptions = calloc(commands + 1, sizeof(*redemptions));
    uint64_t *red_card = calloc(commands + 1, sizeof(*red_card));
    /* The PINs the ledger made, by card id (batches issue up to 3 cards per command). */
    char(*pins)[CL_PIN_MAX + 1] = calloc(4 * commands + 16, sizeof(*pins));
    static cl_cmd_issue_card_t batch_rows[3];
    REQUIRE(redemptions != NULL && red_card != NULL && pins != NULL);
    size_t red_count = 0;
    for (size_t i = 0; i < commands; i++) {
        uint64_t cards = ledger_meta(L)->cards;
        uint64_t op = s_rand(100);
        if (i == commands / 3) {
            /* A program update (the kind and currency stay) and, later, a closed program. */
            cl_program_spec_t spec = ledger_program(L, "ma", "p2")->spec;
            spec.valid_days += 7;
            cl_command_t *c = s_cmd(CL_CMD_UPDATE_PROGRAM);
            c->u.program = spec;
            CHECK_OK(s_run(c));
        } else if (i == commands / 2) {
            cl_command_t *c = s_cmd(CL_CMD_CLOSE_PROGRAM);
            s_fmt(c->u.close_program.merchant_id, CL_ID_MAX + 1, "mc");
            s_fmt(c->u.close_program.program_id, CL_ID_MAX + 1, "p4");
            s_fmt(c->u.close_program.reason, CL_REASON_MAX + 1, "season over");
            CHECK_OK(s_run(c));
        }
        if (cards < 5 || op < 18) {
            size_t m = (size_t)s_rand(3), p = (size_t)s_rand(5);
            char pid[CL_ID_MAX + 1];
            s_fmt(pid, sizeof(pid), "p%zu", p);
            cl_channel_t ch = channels[s_rand(4)];
            const char *store =
                ch == CL_CHANNEL_STORE || s_rand(3) == 0 ? store_ids[m][s_rand(4)] : NULL;
            issue_t is = { s_rand_merchants[m],
                           pid,
                           holders[s_rand(6)],
                           ch,
                           store,
                           regions[s_rand(4)],
                           s_rand(2) == 0 ? 10000 : 5000 + 1000 * (int64_t)p,
                           (int64_t)s_rand(3) * 1000,
                           false };
            cl_command_t *c = s_cmd(CL_CMD_ISSUE_CARD);
            cl_cmd_issue_card_t *ic = &c->u.issue_card;
            s_fmt(ic->merchant_id, sizeof(ic->merchant_id), "%s", is.merchant);
            s_fmt(ic->program_id, sizeof(ic->program_id), "%s", is.program);
            s_fmt(ic->holder, sizeof(ic->holder), "%s", is.holder);
            ic->channel = is.channel;
            s_fmt(ic->store_id, sizeof(ic->store_id), "%s", is.store != NULL ? is.store : "");
            s_fmt(ic->region, sizeof(ic->region), "%s", is.region);
            ic->face_value_minor = is.face;
            ic->price_paid_minor = is.price;
            const cl_reply_t *r = s_run(c);
            if (r->status == CL_OK)
                s_fmt(pins[r->card.card_id], CL_PIN_MAX + 1, "%s", r->pin);
            continue;
        }
        if (op >= 91 && op < 94) {
            /* A batch of enterprise cards; the last row repeats an earlier row key. */
            size_t m = (size_t)s_rand(3);
            memset(batch_rows, 0, sizeof(batch_rows));
            for (size_t k = 0; k < 3; k++) {
                s_fmt(batch_rows[k].row_key, sizeof(batch_rows[k].row_key), "row-%zu",
                      k < 2 ? i * 3 + k : i * 3 - 3);
                s_fmt(batch_rows[k].holder, sizeof(batch_rows[k].holder), "emp-%zu", k);
                batch_rows[k].face_value_minor = 10000;
            }
            cl_command_t *c = s_cmd(CL_CMD_ISSUE_BATCH);
            s_fmt(c->u.issue_batch.merchant_id, CL_ID_MAX + 1, "%s", s_rand_merchants[m]);
            s_fmt(c->u.issue_batch.program_id, CL_ID_MAX + 1, "p1");
            c->u.issue_batch.rows_count = 3;
            c->batch_rows = batch_rows;
            const cl_reply_t *r = s_run(c);
            for (size_t k = 0; r->status == CL_OK && k < r->rows_count; k++) {
                if (r->rows[k].status == CL_OK && !r->rows[k].already_issued)
                    s_fmt(pins[r->rows[k].card_id], CL_PIN_MAX + 1, "%s", r->rows[k].pin);
            }
            continue;
        }
        uint64_t card = 1 + s_rand(cards);
        const ledger_card_t *lc = ledger_card(L, card);
        REQUIRE(lc != NULL);
        size_t m = lc->merchant_id[1] - 'a';
        /* The card's PIN, or (now and then) a wrong one. */
        const char *pin = s_rand(8) == 0 ? "999999" : pins[card];
        const char *store = store_ids[m % 3][s_rand(4)];
        if (op < 50) {
            const cl_program_spec_t *spec =
                &ledger_program(L, lc->merchant_id, lc->program_id)->spec;
            cl_command_t *c = s_cmd(CL_CMD_REDEEM);
            c->u.redeem.card.card_id = card;
            s_fmt(c->u.redeem.store_id, sizeof(c->u.redeem.store_id), "%s", store);
            s_fmt(c->u.redeem.order_ref, sizeof(c->u.redeem.order_ref), "o%zu", i);
            c->u.redeem.amount_minor = 1 + (int64_t)s_rand(4000);
            c->u.redeem.uses = spec->kind == CL_KIND_PUNCH ? 1 + (uint32_t)s_rand(2) : 0;
            c->u.redeem.order_amount_minor = 1000 + (int64_t)s_rand(30000);
            s_fmt(c->u.redeem.sku, sizeof(c->u.redeem.sku), "tea");
            s_fmt(c->u.redeem.pin, sizeof(c->u.redeem.pin), "%s", pin);
            const cl_reply_t *r = s_run(c);
            if (r->status == CL_OK) {
                red_card[red_count] = card;
                redemptions[red_count++] = r->redemption_seq;
            }
        } else if (op < 58 && red_count > 0) {
            size_t k = (size_t)s_rand(red_count);
            s_reverse(red_card[k], redemptions[k], s_rand(2) == 0 ? 0 : 1 + (int64_t)s_rand(500),
                      0);
        } else if (op < 64) {
            s_reload(card, 1 + (int64_t)s_rand(20000));
        } else if (op < 69) {
            /* To another card of the same merchant and program, when one can be found. */
            uint64_t to = 1 + s_rand(cards);
            for (int tries = 0; tries < 30; tries++) {
                const ledger_card_t *tc = ledger_card(L, to);
                if (to != card && strcmp(tc->merchant_id, lc->merchant_id) == 0 &&
                    strcmp(tc->program_id, lc->program_id) == 0)
                    break;
                to = 1 + s_rand(cards);
            }
            s_transfer_balance(card, to, s_rand(2) == 0 ? 0 : 1 + (int64_t)s_rand(3000), pin);
        } else if (op < 73) {
            const cl_program_spec_t *spec =
                &ledger_program(L, lc->merchant_id, lc->program_id)->spec;
            if (spec->kind == CL_KIND_STORED_VALUE)
                s_adjust(card, (int64_t)s_rand(3000) - 1000, 0);
            else
                s_adjust(card, 0, (int32_t)s_rand(3) - 1);
        } else if (op < 78) {
            s_transfer_card(card, lc->holder, holders[s_rand(5)], pin);
        } else if (op < 84) {
            const cl_reply_t *r = s_offer(card, lc->holder, pin);
            if (r->status == CL_OK) {
                uint64_t offer = r->offer_id;
                char secret[CL_SECRET_MAX + 1];
                s_fmt(secret, sizeof(secret), "%s", r->claim_secret);
                uint64_t what = s_rand(3);
                if (what == 0)
                    s_claim(card, offer, secret, holders[s_rand(5)]);
                else if (what == 1)
                    s_recall(card, offer);
                /* else: left open, it times out (GiftReturned) */
            }
        } else if (op < 88) {
            s_flag(lc->frozen ? CL_CMD_UNFREEZE : CL_CMD_FREEZE, card);
        } else if (op < 91) {
            if (lc->has_pin && !lc->locked) {
                /* Wrong PINs in a row: PinRejected, and CardLocked at the fifth. */
                uint64_t tries = 1 + s_rand(CL_PIN_FAILURES_LOCK);
                for (uint64_t k = 0; k < tries; k++)
                    s_redeem_pin(card, store, "999999");
                if (ledger_card(L, card)->locked && s_rand(2) == 0)
                    s_flag(CL_CMD_UNLOCK, card);
            } else {
                s_flag(CL_CMD_UNLOCK, card);
            }
        } else {
            s_advance_to(now_us + (int64_t)s_rand(4 * DAY_US));
        }
    }
    /* Far enough that every card and offer of the history has expired or timed out. */
    s_advance_to(now_us + 70 * DAY_US);
    free(redemptions);
    free(red_card);
    free(pins);
}

/* Adds the event types of the journal to seen[]. */
static void
s_count_types(bool seen[64])
{
    journal_reader_t *rd;
    REQUIRE(journal_reader_open(J, 1, &rd) == 0);
    journal_entry_t e;
    while (journal_reader_next(rd, &e) == 0) {
        cl_event_type_t type;
        REQUIRE(codec_event_peek_type(e.payload, e.payload_len, &type) == 0);
        if ((int)type < 64)
            seen[type] = true;
    }
    journal_reader_close(&rd);
}

static void
random_histories_keep_every_invariant(void)
{
    bool seen[64] = { false };
    for (uint64_t seed = 1; seed <= 4; seed++) {
        s_random_history(0x1234567ULL * seed + 99, 1500);
        char dir[PATH_MAX];
        pset_t *ps = s_fold(0, NULL, dir);
        s_check_invariants(ps, s_rand_merchants, 3);
        pset_close(&ps);
        s_count_types(seen);
    }
    /* The histories hold every kind of event the journal knows. */
    static const cl_event_type_t all[] = {
        CL_EV_MERCHANT_REGISTERED, CL_EV_STORE_REGISTERED, CL_EV_PROGRAM_DEFINED,
        CL_EV_PROGRAM_UPDATED,     CL_EV_PROGRAM_CLOSED,   CL_EV_CARD_ISSUED,
        CL_EV_BATCH_ISSUED,        CL_EV_GIFT_OFFERED,     CL_EV_GIFT_CLAIMED,
        CL_EV_GIFT_RECALLED,       CL_EV_GIFT_RETURNED,    CL_EV_CARD_REDEEMED,
        CL_EV_REDEMPTION_REVERSED, CL_EV_CARD_RELOADED,    CL_EV_BALANCE_TRANSFERRED,
        CL_EV_CARD_ADJUSTED,       CL_EV_CARD_FROZEN,      CL_EV_CARD_UNFROZEN,
        CL_EV_CARD_EXPIRED,        CL_EV_EXPIRY_REMINDED,  CL_EV_PIN_REJECTED,
        CL_EV_CARD_LOCKED,         CL_EV_CARD_UNLOCKED,    CL_EV_CLOCK_ADVANCED,
    };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (!seen[all[i]])
            check_fail(__FILE__, __LINE__, "no %s in the random histories", cl_event_name(all[i]));
    }
}

static void
invariants_hold_at_every_point_of_a_history(void)
{
    /* The same history folded to several points: the ledger is rebuilt up to each point from
     * the journal, so the invariants are checked mid-history too (live cards, open offers). */
    s_random_history(777, 900);
    s_flush();
    uint64_t head = next_seq - 1;
    const uint64_t points[] = { head / 4, head / 2, head - head / 4, head };
    for (size_t pi = 0; pi < sizeof(points) / sizeof(points[0]); pi++) {
        uint64_t to = points[pi];
        char dir[PATH_MAX];
        s_mkdir_sub(dir, "proj");
        pset_t *ps;
        REQUIRE(pset_open(dir, J, NULL, &ps) == 0);
        pset_round_t r;
        do {
            REQUIRE(pset_step(ps, to, 0, 0, &r) == 0);
        } while (r.behind);
        for (size_t i = 0; i < PROJ_COUNT; i++)
            CHECK_EQ_U64(proj_checkpoint(pset_active(ps, i)), to);
        /* A ledger at the same point, from the journal. */
        ledger_t *full = L;
        REQUIRE(ledger_new(&L) == 0);
        journal_reader_t *rd;
        REQUIRE(journal_reader_open(J, 1, &rd) == 0);
        static cl_event_t ev;
        for (uint64_t seq = 1; seq <= to; seq++) {
            journal_entry_t e;
            REQUIRE(journal_reader_next(rd, &e) == 0);
            REQUIRE(codec_event_decode(e.payload, e.payload_len, &ev) == 0);
            ev.seq = e.seq;
            ev.at_us = e.timestamp_us;
            REQUIRE(ledger_apply(L, &ev) == 0);
        }
        journal_reader_close(&rd);
        uint64_t saved_next = next_seq;
        next_seq = to + 1; /* s_check_invariants compares as_of with next_seq - 1 */
        s_check_invariants(ps, s_rand_merchants, 3);
        next_seq = saved_next;
        ledger_destroy(&L);
        L = full;
        pset_close(&ps);
    }
}

/* ---- Bytes --------------------------------------------------------------------------------- */

static void
any_batch_size_gives_the_same_bytes(void)
{
    s_random_history(4242, 1200);
    uint8_t want[PROJ_COUNT][16], got[PROJ_COUNT][16];
    char dir[PATH_MAX];
    pset_t *ps = s_fold(0, NULL, dir);
    s_digests(ps, want);
    pset_close(&ps);
    static const size_t sizes[] = { 1, 7, 64, 1000 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ps = s_fold(sizes[i], NULL, dir);
        s_digests(ps, got);
        for (size_t k = 0; k < PROJ_COUNT; k++) {
            if (memcmp(want[k], got[k], 16) != 0)
                check_fail(__FILE__, __LINE__, "%s differs with batches of %zu events",
                           proj_def_at(k)->name, sizes[i]);
        }
        pset_close(&ps);
    }
    /* Time-boxed steps (the projector's: here 256 events each) keep one batch open over many
     * steps and commit it at the head: same bytes, and every instance at the head. */
    ps = s_fold_budget(0, 1, NULL, dir);
    s_digests(ps, got);
    for (size_t k = 0; k < PROJ_COUNT; k++) {
        CHECK(memcmp(want[k], got[k], 16) == 0);
        CHECK_EQ_U64(proj_checkpoint(pset_active(ps, k)), next_seq - 1);
    }
    pset_close(&ps);
    /* A tiny cache (evicting after every batch) reads its records back: same bytes. */
    pset_opts_t o = { .cache_bytes_max = 1 };
    ps = s_fold(97, &o, dir);
    s_digests(ps, got);
    for (size_t k = 0; k < PROJ_COUNT; k++)
        CHECK(memcmp(want[k], got[k], 16) == 0);
    pset_close(&ps);
}

/* Journals written before the daemon stopped recording a redemption's region (it is the
 * store's) fold to exactly the projections of journals written after. */
static void
redemptions_with_or_without_their_region_fold_to_the_same_bytes(void)
{
    uint8_t want[PROJ_COUNT][16], got[PROJ_COUNT][16];
    char dir[PATH_MAX];
    s_random_history(4243, 1200);
    pset_t *ps = s_fold(0, NULL, dir);
    s_digests(ps, want);
    pset_close(&ps);

    old_redeem_region = true;
    old_redeem_regions_written = 0;
    s_random_history(4243, 1200);
    old_redeem_region = false;
    CHECK(old_redeem_regions_written > 0);
    ps = s_fold(0, NULL, dir);
    s_digests(ps, got);
    for (size_t k = 0; k < PROJ_COUNT; k++) {
        if (memcmp(want[k], got[k], 16) != 0)
            check_fail(__FILE__, __LINE__, "%s differs when redemptions carry their region",
                       proj_def_at(k)->name);
    }
    pset_close(&ps);
}

static void
folding_more_later_continues_from_the_checkpoint(void)
{
    /* Fold half, close (as a crash between batches would), reopen and fold the rest. */
    s_random_history(31337, 1000);
    s_flush();
    uint8_t want[PROJ_COUNT][16], got[PROJ_COUNT][16];
    char dir[PATH_MAX];
    pset_t *ps = s_fold(0, NULL, dir);
    s_digests(ps, want);
    pset_close(&ps);
    s_mkdir_sub(dir, "proj");
    uint64_t half = (next_seq - 1) / 2;
    REQUIRE(pset_open(dir, J, NULL, &ps) == 0);
    pset_round_t r;
    do {
        REQUIRE(pset_step(ps, half, 100, 0, &r) == 0);
    } while (r.behind);
    /* A batch that never commits (the process dies mid-batch) leaves nothing behind. */
    proj_t *p = pset_active(ps, 0);
    REQUIRE(proj_batch_begin(p) == 0);
    proj_batch_abort(p);
    CHECK_EQ_U64(proj_checkpoint(p), half);
    pset_close(&ps);
    REQUIRE(pset_open(dir, J, NULL, &ps) == 0);
    for (size_t i = 0; i < PROJ_COUNT; i++)
        CHECK_EQ_U64(proj_checkpoint(pset_active(ps, i)), half);
    do {
        REQUIRE(pset_step(ps, 0, 333, 0, &r) == 0);
    } while (r.behind);
    s_digests(ps, got);
    for (size_t k = 0; k < PROJ_COUNT; k++)
        CHECK(memcmp(want[k], got[k], 16) == 0);
    pset_close(&ps);
}

/* Runs the replay tool; returns its exit status and its output in out. */
static int
s_replay_tool(const char *const *args, char *out, size_t cap)
{
    const char *root_dir = getenv("CARDLEDGER_BUILD_ROOT");
    char path[PATH_MAX];
    s_fmt(path, sizeof(path), "%s/tools/cardledger-replay", root_dir != NULL ? root_dir : ".");
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        const char *argv[16] = { path };
        for (size_t i = 0; args[i] != NULL && i < 14; i++)
            argv[i + 1] = args[i];
        execv(path, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t used = 0;
    ssize_t got;
    while ((got = read(pipefd[0], out + used, cap - 1 - used)) > 0)
        used += (size_t)got;
    out[used] = '\0';
    close(pipefd[0]);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void
replay_tool_gives_the_same_bytes_as_the_projector_fold(void)
{
    s_random_history(9001, 1000);
    s_flush();
    uint64_t head = next_seq - 1, to = head - head / 3;
    char dir[PATH_MAX], out_dir[PATH_MAX], seq[32];
    /* In process, to `to`, in small batches. */
    s_mkdir_sub(dir, "proj");
    pset_t *ps;
    REQUIRE(pset_open(dir, J, NULL, &ps) == 0);
    pset_round_t r;
    do {
        REQUIRE(pset_step(ps, to, 50, 0, &r) == 0);
    } while (r.behind);
    uint8_t want[PROJ_COUNT][16];
    s_digests(ps, want);
    pset_close(&ps);
    /* The tool, into a directory of its own, over the same journal. */
    s_fmt(out_dir, sizeof(out_dir), "%s/%u-replay", root, ++dir_counter);
    s_fmt(seq, sizeof(seq), "%llu", (unsigned long long)to);
    static char out[8192];
    const char *args[] = { journal_dir, out_dir, "--to", seq, "--digest", NULL };
    int status = s_replay_tool(args, out, sizeof(out));
    CHECK_EQ_INT(status, 0);
    for (size_t k = 0; k < PROJ_COUNT; k++) {
        char hex[33], line[128];
        proj_digest_hex(want[k], hex);
        s_fmt(line, sizeof(line), "%s %llu %s", proj_def_at(k)->name, (unsigned long long)to, hex);
        if (strstr(out, line) == NULL)
            check_fail(__FILE__, __LINE__, "replay output lacks \"%s\":\n%s", line, out);
    }
    /* Replaying on to the head continues from the tool's own checkpoints. */
    const char *args2[] = { journal_dir, out_dir, "--digest", NULL };
    CHECK_EQ_INT(s_replay_tool(args2, out, sizeof(out)), 0);
    char dir2[PATH_MAX];
    ps = s_fold(0, NULL, dir2);
    s_digests(ps, want);
    pset_close(&ps);
    for (size_t k = 0; k < PROJ_COUNT; k++) {
        char hex[33];
        proj_digest_hex(want[k], hex);
        CHECK(strstr(out, hex) != NULL);
    }
    /* Going back is refused; a missing journal is refused. */
    const char *args3[] = { journal_dir, out_dir, "--to", "3", NULL };
    CHECK(s_replay_tool(args3, out, sizeof(out)) != 0);
    const char *args4[] = { "/nonexistent/journal", out_dir, NULL };
    CHECK(s_replay_tool(args4, out, sizeof(out)) != 0);
    const char *args5[] = { "--help", NULL };
    CHECK_EQ_INT(s_replay_tool(args5, out, sizeof(out)), 0);
    CHECK(strstr(out, "cardledger-replay") != NULL);
}

/* ---- Blue/green and errors ---------------------------------------------------------------- */

static void
schema_bump_rebuilds_beside_the_active_one_and_takes_over(void)
{
    s_random_history(555, 800);
    char dir[PATH_MAX];
    pset_t *ps = s_fold(0, NULL, dir);
    uint8_t before[PROJ_COUNT][16];
    s_digests(ps, before);
    pset_close(&ps);

    pset_opts_t bump = { .schema_bump = { 0, 0, 1 } };
    REQUIRE(pset_open(dir, J, &bump, &ps) == 0);
    pset_status_t st;
    pset_status(ps, 2, next_seq - 1, &st);
    CHECK(st.rebuilding);
    CHECK(st.frozen);
    CHECK_EQ_U64(st.schema_version, ANALYTICS_SCHEMA_VERSION);
    CHECK_EQ_U64(st.rebuild_schema_version, ANALYTICS_SCHEMA_VERSION + 1);
    CHECK_EQ_U64(st.rebuild_checkpoint, 0);
    /* The old environment answers while the new one builds. */
    proj_t *old = pset_active(ps, 2);
    CHECK_EQ_U64(proj_checkpoint(old), next_seq - 1);
    pset_round_t r;
    REQUIRE(pset_step(ps, 0, 100, 0, &r) == 0);
    CHECK_EQ_U64(r.takeovers, 0);
    CHECK(r.behind);
    CHECK(pset_active(ps, 2) == old);
    pset_status(ps, 2, next_seq - 1, &st);
    CHECK_EQ_U64(st.rebuild_checkpoint, 100);
    /* A restart in the middle resumes the rebuild from its checkpoint. */
    pset_close(&ps);
    REQUIRE(pset_open(dir, J, &bump, &ps) == 0);
    pset_status(ps, 2, next_seq - 1, &st);
    CHECK(st.rebuilding);
    CHECK_EQ_U64(st.rebuild_checkpoint, 100);
    size_t takeovers = 0;
    do {
        REQUIRE(pset_step(ps, 0, 100, 0, &r) == 0);
        takeovers += r.takeovers;
    } while (r.behind);
    CHECK_EQ_U64(takeovers, 1);
    pset_status(ps, 2, next_seq - 1, &st);
    CHECK(!st.rebuilding);
    CHECK(!st.frozen);
    CHECK_EQ_U64(st.schema_version, ANALYTICS_SCHEMA_VERSION + 1);
    CHECK_EQ_U64(st.checkpoint, next_seq - 1);
    /* Only the new environment is left, and ACTIVE names it. */
    char path[PATH_MAX + 64];
    struct stat sb;
    s_fmt(path, sizeof(path), "%s/analytics/s%u-g1", dir, ANALYTICS_SCHEMA_VERSION);
    CHECK(stat(path, &sb) != 0);
    s_fmt(path, sizeof(path), "%s/analytics/s%u-g2", dir, ANALYTICS_SCHEMA_VERSION + 1);
    CHECK(stat(path, &sb) == 0);
    s_fmt(path, sizeof(path), "%s/analytics/ACTIVE", dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char line[64] = "";
    CHECK(fgets(line, sizeof(line), f) != NULL);
    fclose(f);
    char want_line[64];
    s_fmt(want_line, sizeof(want_line), "s%u-g2\n", ANALYTICS_SCHEMA_VERSION + 1);
    CHECK_EQ_STR(line, want_line);
    /* The others were untouched. */
    uint8_t after[PROJ_COUNT][16];
    s_digests(ps, after);
    CHECK(memcmp(before[0], after[0], 16) == 0);
    CHECK(memcmp(before[1], after[1], 16) == 0);

    /* A rebuild held to a rate waits for it (the live fold does not). */
    pset_close(&ps);
    pset_opts_t slow = bump;
    slow.rebuild_events_per_s = 1;
    REQUIRE(pset_open(dir, J, &slow, &ps) == 0);
    REQUIRE(pset_rebuild(ps, "stores") == 0);
    REQUIRE(pset_step(ps, 0, 0, 0, &r) == 0);
    CHECK(r.throttled);
    CHECK(r.behind);
    CHECK_EQ_U64(r.rebuild_events, 0);
    pset_close(&ps);
    /* Reopened without the cap, the half-done rebuild resumes and takes over. */
    REQUIRE(pset_open(dir, J, &bump, &ps) == 0);
    pset_status(ps, 1, next_seq - 1, &st);
    CHECK(st.rebuilding);
    takeovers = 0;
    do {
        REQUIRE(pset_step(ps, 0, 0, 0, &r) == 0);
        takeovers += r.takeovers;
    } while (r.behind);
    CHECK_EQ_U64(takeovers, 1);
    s_digests(ps, after);
    CHECK(memcmp(before[1], after[1], 16) == 0);

    /* An operator's rebuild at the same version: the old one keeps folding meanwhile. */
    REQUIRE(pset_rebuild(ps, "balances") == 0);
    CHECK_EQ_INT(pset_rebuild(ps, "nope"), PROJ_ENOTFOUND);
    pset_status(ps, 0, next_seq - 1, &st);
    CHECK(st.rebuilding);
    CHECK(!st.frozen);
    takeovers = 0;
    do {
        REQUIRE(pset_step(ps, 0, 0, 0, &r) == 0);
        takeovers += r.takeovers;
    } while (r.behind);
    CHECK_EQ_U64(takeovers, 1);
    s_digests(ps, after);
    CHECK(memcmp(before[0], after[0], 16) == 0);
    pset_close(&ps);
    /* Another process cannot take the directory while one holds it. */
    REQUIRE(pset_open(dir, J, NULL, &ps) == 0);
    pset_t *second = NULL;
    CHECK_EQ_INT(pset_open(dir, J, NULL, &second), -EWOULDBLOCK);
    pset_close(&ps);
}

static void
an_event_that_does_not_fit_stops_the_projection_right_before_it(void)
{
    s_reset();
    s_merchant("m1");
    s_store("m1", "s1", "310000");
    cl_program_spec_t spec = s_spec("m1", "gift", CL_KIND_STORED_VALUE, "CNY");
    spec.denoms_count = 1;
    spec.denoms_minor[0] = 10000;
    s_program(&spec);
    uint64_t card = s_issue(
        &(issue_t){ "m1", "gift", "h", CL_CHANNEL_ONLINE, NULL, "310000", 10000, 0, false }, NULL);
    s_flush();
    /* A forged redemption of a card that does not exist, appended straight to the journal. */
    static cl_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = CL_EV_CARD_REDEEMED;
    ev.u.card_redeemed.card_id = card + 100;
    s_fmt(ev.u.card_redeemed.store_id, sizeof(ev.u.card_redeemed.store_id), "s1");
    ev.u.card_redeemed.amount_minor = 10;
    uint8_t buf[CODEC_EVENT_MAX_BYTES];
    size_t len;
    REQUIRE(codec_event_encode(&ev, buf, sizeof(buf), &len) == 0);
    journal_record_t rec = { now_us, buf, len };
    REQUIRE(journal_append(J, &rec, 1, NULL) == 0);
    uint64_t bad = next_seq++;
    s_redeem(card, "s1", 100, 0, 0);
    s_flush();
    char dir[PATH_MAX];
    /* Folded in one step, then in time-boxed steps (one batch open over several steps). */
    for (int boxed = 0; boxed < 2; boxed++) {
        pset_t *ps;
        s_mkdir_sub(dir, boxed ? "proj-boxed" : "proj");
        REQUIRE(pset_open(dir, J, NULL, &ps) == 0);
        pset_round_t r;
        do {
            REQUIRE(pset_step(ps, 0, 0, boxed ? 1 : 0, &r) == 0);
        } while (r.behind);
        for (size_t i = 0; i < PROJ_COUNT; i++) {
            /* Every projection folds redemptions: each stops right before the forged event, with
             * everything before it folded and committed. */
            proj_t *p = pset_active(ps, i);
            uint64_t at;
            CHECK_EQ_INT(proj_error(p, &at), PROJ_EMISMATCH);
            CHECK_EQ_U64(at, bad);
            CHECK_EQ_U64(proj_checkpoint(p), bad - 1);
            CHECK(proj_stopped(p));
        }
        cl_card_view_t v;
        cl_card_ref_t ref = { .card_id = card };
        uint64_t as_of;
        REQUIRE(balances_card(s_store_of(ps, 0), &ref, &v, &as_of) == 0);
        CHECK_EQ_U64(as_of, bad - 1);
        CHECK_EQ_INT(v.balance_minor, 10000);
        pset_status_t st;
        pset_status(ps, 0, next_seq - 1, &st);
        CHECK_EQ_INT(st.error, PROJ_EMISMATCH);
        CHECK_EQ_U64(st.error_seq, bad);
        /* Nothing more is folded, and asking again is harmless. */
        REQUIRE(pset_step(ps, 0, 0, 0, &r) == 0);
        CHECK(!r.behind);
        pset_close(&ps);
    }
}

static void
valuation_rounds_down_and_keys_sort_numerically(void)
{
    CHECK_EQ_INT(proj_value(CL_KIND_PUNCH, 10000, 3, 0, 2), 6666);
    CHECK_EQ_INT(proj_value(CL_KIND_PUNCH, 10000, 3, 0, 3), 10000);
    CHECK_EQ_INT(proj_value(CL_KIND_PUNCH, 10000, 0, 0, 3), 0);
    CHECK_EQ_INT(proj_value(CL_KIND_STORED_VALUE, 10000, 0, 1234, 0), 1234);
    CHECK_EQ_INT(proj_value(CL_KIND_VOUCHER_CASH, CL_AMOUNT_MAX_MINOR, 1, 0, CL_USES_MAX),
                 CL_AMOUNT_MAX_MINOR * CL_USES_MAX);
    char day[16];
    proj_day_str(D0, day);
    CHECK_EQ_STR(day, "2026-01-01");
    CHECK_EQ_INT(proj_day(T0), D0);
    CHECK_EQ_INT(proj_day(T0 - 1), D0 - 1);
    CHECK_EQ_INT(proj_day(-1), -1);
    proj_day_str(-1, day);
    CHECK_EQ_STR(day, "1969-12-31");
    proj_key_t a = { .n = 0 }, b = { .n = 0 };
    proj_key_i64(&a, -5);
    proj_key_i64(&b, 3);
    CHECK(memcmp(a.b, b.b, 8) < 0);
    CHECK_EQ_INT(proj_get_i64(a.b), -5);
    int32_t f, l;
    CHECK(proj_day_range(T0, T0 + DAY_US, &f, &l));
    CHECK_EQ_INT(f, D0);
    CHECK_EQ_INT(l, D0);
    CHECK(!proj_day_range(T0, T0, &f, &l));
    CHECK(proj_day_range(0, 0, &f, &l));
    CHECK_EQ_INT(f, INT32_MIN);
    CHECK_EQ_INT(l, INT32_MAX);
    CHECK(proj_strerror(PROJ_EMISMATCH) != NULL);
    CHECK(strcmp(proj_strerror(MDB_NOTFOUND), proj_strerror(PROJ_EINVAL)) != 0);
}

/* A one-table environment under root/name and a cache over it (complete: nothing on disk). */
static void
s_cache_env(const char *name, const proj_table_def_t *def, pstore_t **st, pcache_t **c)
{
    char dir[PATH_MAX];
    s_fmt(dir, sizeof(dir), "%s/%s", root, name);
    const char *names[1] = { def->name };
    REQUIRE(pstore_open(dir, def->name, 1, names, 1, true, st, NULL) == 0);
    REQUIRE(pcache_new(def, 1, c) == 0);
    pcache_set_complete(*c, true);
}

/* Writes the cache's changes in one transaction that commits sequence seq. */
static void
s_cache_commit(pstore_t *st, pcache_t *c, uint64_t seq)
{
    MDB_txn *txn = NULL;
    MDB_dbi dbi = pstore_dbi(st, 0);
    REQUIRE(pstore_write_begin(st, &txn) == 0);
    pcache_bind(c, txn, &dbi);
    CHECK_EQ_INT(pcache_write(c, txn, &dbi), 0);
    CHECK_EQ_INT(pstore_write_commit(st, &txn, seq), 0);
    pcache_bind(c, NULL, NULL);
    pcache_committed(c, 0);
}

/* pcache_peek() gives what the cache holds and nothing else: no record made or marked, no
 * error, no LMDB read (a record only on disk is not there for it), a deleted one is gone. */
static void
pcache_peek_reads_only_the_cache(void)
{
    static const proj_table_def_t defs[1] = { { "t", 8, 8, false } };
    pstore_t *st = NULL;
    pcache_t *c = NULL;
    s_cache_env("peek-env", defs, &st, &c);
    const uint8_t a[8] = { 'a' }, b[8] = { 'b' }, gone[8] = { 'g' }, absent[8] = { 'x' };
    uint8_t *va = pcache_put(c, 0, a, 8, 8, NULL);
    uint8_t *vb = pcache_put(c, 0, b, 8, 8, NULL);
    REQUIRE(va != NULL && vb != NULL && pcache_put(c, 0, gone, 8, 8, NULL) != NULL);
    memcpy(va, "AAAAAAAA", 8);
    memcpy(vb, "BBBBBBBB", 8);
    pcache_del(c, 0, gone, 8);
    s_cache_commit(st, c, 1);

    size_t len = 0;
    CHECK(pcache_peek(c, 0, a, 8, &len) == va);
    CHECK_EQ_U64(len, 8);
    CHECK(memcmp(pcache_peek(c, 0, b, 8, NULL), "BBBBBBBB", 8) == 0);
    CHECK(pcache_peek(c, 0, gone, 8, NULL) == NULL);
    CHECK(pcache_peek(c, 0, absent, 8, NULL) == NULL);
    CHECK(pcache_peek(c, 0, a, 0, NULL) == NULL);  /* no key */
    CHECK(pcache_peek(c, 0, a, 99, NULL) == NULL); /* longer than the table's keys */
    CHECK_EQ_U64(pcache_dirty_count(c), 0);
    CHECK_EQ_INT(pcache_error(c), 0);

    /* Emptied, with the environment bound: get reads "a" back from disk, peek never does. */
    pcache_reset(c);
    pcache_set_complete(c, false);
    MDB_txn *txn = NULL;
    MDB_dbi dbi = pstore_dbi(st, 0);
    REQUIRE(pstore_read_begin(st, &txn) == 0);
    pcache_bind(c, txn, &dbi);
    CHECK(pcache_peek(c, 0, b, 8, NULL) == NULL);
    CHECK(pcache_get(c, 0, a, 8, NULL) != NULL);
    CHECK(pcache_peek(c, 0, a, 8, NULL) != NULL); /* now the cache holds it */
    CHECK(pcache_peek(c, 0, b, 8, NULL) == NULL);
    CHECK_EQ_INT(pcache_error(c), 0);
    pcache_bind(c, NULL, NULL);
    pstore_read_end(&txn);
    pcache_destroy(&c);
    pstore_close(&st);
}

/* The keys of a table on disk, checked to be in memcmp-then-length order; their count. */
static size_t
s_count_in_order(pstore_t *st)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    REQUIRE(pstore_read_begin(st, &txn) == 0);
    REQUIRE(mdb_cursor_open(txn, pstore_dbi(st, 0), &cur) == 0);
    MDB_val k, d, prev = { 0, NULL };
    size_t count = 0;
    for (int rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (prev.mv_data != NULL) {
            size_t n = prev.mv_size < k.mv_size ? prev.mv_size : k.mv_size;
            int r = memcmp(prev.mv_data, k.mv_data, n);
            CHECK(r < 0 || (r == 0 && prev.mv_size < k.mv_size));
        }
        prev = k;
        count++;
    }
    mdb_cursor_close(cur);
    pstore_read_end(&txn);
    return count;
}

/* Byte `at` of the record stored under key, or -1 when there is none. */
static int
s_stored_byte(pstore_t *st, const void *key, size_t klen, size_t at)
{
    MDB_txn *txn = NULL;
    REQUIRE(pstore_read_begin(st, &txn) == 0);
    MDB_val k = { klen, (void *)(uintptr_t)key }, d;
    int byte = mdb_get(txn, pstore_dbi(st, 0), &k, &d) == 0 && d.mv_size > at
                   ? ((const uint8_t *)d.mv_data)[at]
                   : -1;
    pstore_read_end(&txn);
    return byte;
}

/*
 * The commit's sort on keys that are hard for it: all share a 14-byte prefix (a merchant id,
 * as wallet and cell keys do), then tails of 0 to 20 bytes whose first 8 take only 3 values
 * each and whose later ones are random, so many keys differ only past their 22nd byte and many
 * are prefixes of others. Into an empty table every record is appended (MDB_APPEND refuses a
 * key that is not past the last, so a wrong order fails the commit); the second round lands
 * among and past the first round's keys.
 */
static void
pcache_sorts_keys_sharing_a_long_prefix(void)
{
    static const proj_table_def_t defs[1] = { { "t", 40, 8, false } };
    pstore_t *st = NULL;
    pcache_t *c = NULL;
    s_cache_env("pcache-prefix", defs, &st, &c);
    rng_state = 0x2545f4914f6cdd1dULL;
    enum { N = 3000 };
    size_t made = 0;
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < N; i++) {
            uint8_t key[40];
            memcpy(key, "merchant-0001", 14); /* with its NUL */
            size_t tail = (size_t)s_rand(21);
            for (size_t j = 0; j < tail; j++)
                key[14 + j] = (uint8_t)(j < 8 ? s_rand(3) : s_rand(256)); /* few heads */
            bool created = false;
            uint8_t *v = pcache_put(c, 0, key, 14 + tail, 8, &created);
            REQUIRE(v != NULL);
            v[0] = (uint8_t)round;
            made += created ? 1 : 0;
        }
        s_cache_commit(st, c, (uint64_t)round + 1);
        CHECK_EQ_U64(s_count_in_order(st), made);
    }
    CHECK(made > N); /* the second round added keys, not only rewrote the first's */
    CHECK_EQ_INT(pcache_error(c), 0);
    pcache_destroy(&c);
    pstore_close(&st);
}

/* pcache_get_mut() changes a live record in place and marks it; a missing key gets nothing
 * (no record is made, nothing is marked). The changed records are written in LMDB's key
 * order, whatever order they were changed in and however long their keys are (keys all of 8
 * bytes take a radix sort of their own). */
static void
pcache_get_mut_and_the_commit_order(void)
{
    static const proj_table_def_t defs[1] = { { "t", 24, 16, false } };
    pstore_t *st = NULL;
    pcache_t *c = NULL;
    s_cache_env("pcache-env", defs, &st, &c);

    /* Keys of 8 to 24 bytes, many sharing their first 8 bytes, put in a scrambled order. */
    enum { N = 300 };
    uint8_t keys[N][24];
    size_t lens[N];
    for (size_t i = 0; i < N; i++) {
        size_t j = (i * 7919u) % N; /* a permutation: 7919 is prime to N */
        memset(keys[i], 0, sizeof(keys[i]));
        keys[i][6] = (uint8_t)(j / 40);
        keys[i][7] = (uint8_t)(j % 5);
        keys[i][8] = (uint8_t)(255 - j);
        lens[i] = 8 + j % 17;
        uint8_t *v = pcache_put(c, 0, keys[i], lens[i], 8, NULL);
        REQUIRE(v != NULL);
        memcpy(v, &i, sizeof(i) < 8 ? sizeof(i) : 8);
    }
    s_cache_commit(st, c, 1);
    CHECK_EQ_U64(pcache_dirty_count(c), 0);

    /* A missing key: NULL, nothing made, nothing marked. */
    uint8_t absent[8] = { 9, 9, 9, 9, 9, 9, 9, 9 };
    size_t len = 77;
    CHECK(pcache_get_mut(c, 0, absent, sizeof(absent), &len) == NULL);
    CHECK_EQ_U64(len, 77);
    CHECK_EQ_U64(pcache_dirty_count(c), 0);
    CHECK(pcache_get(c, 0, absent, sizeof(absent), NULL) == NULL);
    CHECK_EQ_INT(pcache_error(c), 0);

    /* A live one: its bytes, marked once however often it is taken. */
    uint8_t *v = pcache_get_mut(c, 0, keys[5], lens[5], &len);
    REQUIRE(v != NULL);
    CHECK_EQ_U64(len, 8);
    v[7] = 0xee;
    CHECK(pcache_get_mut(c, 0, keys[5], lens[5], NULL) == v);
    CHECK_EQ_U64(pcache_dirty_count(c), 1);
    s_cache_commit(st, c, 2);

    /* On disk: N records in memcmp-then-length order, the changed byte included. */
    CHECK_EQ_U64(s_count_in_order(st), N);
    CHECK_EQ_INT(s_stored_byte(st, keys[5], lens[5], 7), 0xee);

    /* Keys of exactly 8 bytes (the radix sort's case): values spread over every byte, some
     * bytes shared by all keys, changed in a scrambled order, over two commits. */
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < 4 * N; i++) {
            uint64_t j = (i * 7919u + (size_t)round * 13u) % (4 * N);
            uint64_t kv =
                0x0000abcd00000000ull | (j * 0x9e3779b97f4a7c15ull >> 40) | ((j & 3u) << 56);
            uint8_t k8[8];
            for (int b = 0; b < 8; b++)
                k8[b] = (uint8_t)(kv >> (56 - 8 * b));
            uint8_t *val = pcache_put(c, 0, k8, 8, 8, NULL);
            REQUIRE(val != NULL);
            val[0] = (uint8_t)round;
        }
        s_cache_commit(st, c, 3 + (uint64_t)round);
    }
    CHECK_EQ_U64(s_count_in_order(st), 5 * N); /* the first N and the 4 N of 8 bytes */
    for (size_t j = 0; j < 4 * N; j++) {
        uint64_t kv = 0x0000abcd00000000ull | (j * 0x9e3779b97f4a7c15ull >> 40) | ((j & 3u) << 56);
        uint8_t k8[8];
        for (int b = 0; b < 8; b++)
            k8[b] = (uint8_t)(kv >> (56 - 8 * b));
        CHECK_EQ_INT(s_stored_byte(st, k8, 8, 0), 1); /* the second round's value */
    }
    pcache_destroy(&c);
    pstore_close(&st);
}

/* ---- Load (the slow suite) ---------------------------------------------------------------- */

#ifdef TEST_PROJECTIONS_LOAD
/*
 * A large journal: 100k stored-value cards, then redemptions, reversals and reloads spread
 * over 120 days and 50 stores. Folds it with pset_step (the projector's and the replay tool's
 * code) and prints the fold rate; the figures must still reconcile.
 */
static void
fold_rate_of_a_large_journal(void)
{
    const char *env = getenv("CARDLEDGER_LOAD_EVENTS");
    uint64_t target = env != NULL ? strtoull(env, NULL, 10) : 2000000;
    s_reset();
    s_merchant("m1");
    char stores[50][CL_ID_MAX + 1];
    for (int i = 0; i < 50; i++) {
        s_fmt(stores[i], sizeof(stores[i]), "s%02d", i);
        s_store("m1", stores[i], i % 5 == 0 ? "310000" : "110000");
    }
    cl_program_spec_t spec = s_spec("m1", "gift", CL_KIND_STORED_VALUE, "CNY");
    spec.denoms_count = 2;
    spec.denoms_minor[0] = 10000000;
    spec.denoms_minor[1] = 20000000;
    spec.reloadable = true;
    spec.valid_days = 3650;
    s_program(&spec);
    uint64_t cards = target / 20 < 100000 ? target / 20 : 100000;
    uint64_t t_gen = fold_now_ns();
    for (uint64_t i = 0; i < cards; i++) {
        s_issue(&(issue_t){ "m1", "gift", NULL, i % 3 == 0 ? CL_CHANNEL_STORE : CL_CHANNEL_ONLINE,
                            i % 3 == 0 ? stores[i % 50] : NULL, "310000",
                            i % 2 == 0 ? 10000000 : 20000000, 0, false },
                NULL);
    }
    uint64_t last_red = 0, last_card = 0;
    for (uint64_t i = 0; next_seq <= target; i++) {
        if (i % 20000 == 0)
            now_us += DAY_US / 170; /* about 120 days over the run */
        uint64_t card = 1 + s_rand(cards);
        uint64_t op = s_rand(100);
        if (op < 90) {
            last_red = s_redeem(card, stores[s_rand(50)], 1 + (int64_t)s_rand(500), 0, 0);
            last_card = card;
        } else if (op < 95 && last_red != 0) {
            s_reverse(last_card, last_red, 0, 0);
            last_red = 0;
        } else {
            s_reload(card, 100 + (int64_t)s_rand(1000));
        }
    }
    s_flush();
    uint64_t events_n = next_seq - 1;
    double gen_s = (double)(fold_now_ns() - t_gen) / 1e9;
    /* Keep a copy for measuring the replay tool on its own (docs/projections.md). */
    const char *keep = getenv("CARDLEDGER_LOAD_JOURNAL_COPY");
    if (keep != NULL && keep[0] != '\0') {
        int rc = journal_copy(J, keep);
        if (rc != 0)
            check_fail(__FILE__, __LINE__, "journal_copy %s: %s", keep, journal_strerror(rc));
    }
    char dir[PATH_MAX];
    s_mkdir_sub(dir, "proj");
    pset_t *ps;
    pset_opts_t o = { .no_sync = true };
    REQUIRE(pset_open(dir, J, &o, &ps) == 0);
    uint64_t t0 = fold_now_ns();
    pset_round_t r;
    do {
        REQUIRE(pset_step(ps, 0, 0, 0, &r) == 0);
    } while (r.behind);
    double fold_s = (double)(fold_now_ns() - t0) / 1e9;
    printf("# generated %llu events in %.1f s; folded into 3 projections in %.2f s: %.0f "
           "events/s\n",
           (unsigned long long)events_n, gen_s, fold_s, (double)events_n / fold_s);
    static const char *const merchants[] = { "m1" };
    analytics_row_t *row = calloc(1, sizeof(*row));
    REQUIRE(row != NULL);
    size_t n;
    bool more;
    uint64_t as_of;
    REQUIRE(analytics_query(proj_store(pset_active(ps, 2)), "m1", 0, 0, ANALYTICS_GROUP_NONE, NULL,
                            row, 1, &n, &more, &as_of) == 0);
    CHECK_EQ_U64(as_of, events_n);
    free(row);
    (void)merchants;
    pset_close(&ps);
}
#endif

/* ---- Main ---------------------------------------------------------------------------------- */

static void
s_cleanup(void)
{
    journal_close(&J);
    ledger_destroy(&L);
    free(events);
    free(rows);
    free(arena);
    free(pending);
    if (root[0] != '\0') {
        char cmdline[PATH_MAX + 16];
        s_fmt(cmdline, sizeof(cmdline), "rm -rf '%s'", root);
        if (system(cmdline) != 0)
            fprintf(stderr, "could not remove %s\n", root);
    }
}

int
main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    s_fmt(root, sizeof(root), "%s/test-projections-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    atexit(s_cleanup);
    plog_setup("test-projections", PLOG_WARN);
    static const check_case_t cases[] = {
#ifdef TEST_PROJECTIONS_LOAD
        CHECK_CASE(fold_rate_of_a_large_journal),
#endif
        CHECK_CASE(valuation_rounds_down_and_keys_sort_numerically),
        CHECK_CASE(pcache_peek_reads_only_the_cache),
        CHECK_CASE(pcache_sorts_keys_sharing_a_long_prefix),
        CHECK_CASE(pcache_get_mut_and_the_commit_order),
        CHECK_CASE(scripted_history_gives_the_hand_computed_balances),
        CHECK_CASE(scripted_history_gives_the_hand_computed_store_views),
        CHECK_CASE(scripted_history_gives_every_hand_computed_analytics_figure),
        CHECK_CASE(random_histories_keep_every_invariant),
        CHECK_CASE(invariants_hold_at_every_point_of_a_history),
        CHECK_CASE(any_batch_size_gives_the_same_bytes),
        CHECK_CASE(redemptions_with_or_without_their_region_fold_to_the_same_bytes),
        CHECK_CASE(folding_more_later_continues_from_the_checkpoint),
        CHECK_CASE(replay_tool_gives_the_same_bytes_as_the_projector_fold),
        CHECK_CASE(schema_bump_rebuilds_beside_the_active_one_and_takes_over),
        CHECK_CASE(an_event_that_does_not_fit_stops_the_projection_right_before_it),
    };
#ifdef TEST_PROJECTIONS_LOAD
    /* The slow build runs only the measurement (the other cases are the unit build's). */
    char *load_argv[] = { argv[0], (char *)(uintptr_t) "fold_rate_of_a_large_journal", NULL };
    if (argc < 2) {
        argc = 2;
        argv = load_argv;
    }
#endif
    return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
