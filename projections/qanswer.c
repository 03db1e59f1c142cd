/*
 * qanswer.c: RequestBatch -> queries -> ReplyBatch (see qanswer.h).
 *
 * Replies are built as protobuf-c structs in an arena, packed one by one straight into the
 * output frame (a ReplyBatch is the concatenation of its replies as field 1), and the arena is
 * reset after each: memory stays bounded by one reply whatever the batch holds.
 */
#include "qanswer.h"

#include <assert.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analytics.h"
#include "balances.h"
#include "cardledger-config.h"
#include "cardledger.pb-c.h"
#include "clcheck.h"
#include "codec.h"
#include "pstore.h"
#include "stores.h"

/* The projections by their place in proj_def_at() order. */
enum { Q_BALANCES = 0, Q_STORES = 1, Q_ANALYTICS = 2 };

#define S_ARENA_BLOCK (1024u * 1024u)

typedef struct block {
    struct block *next;
    size_t used;
    size_t cap;
    alignas(max_align_t) uint8_t data[];
} block_t;

struct qanswer {
    block_t *blocks; /* the arena of the reply being built */
    uint8_t *out;    /* the ReplyBatch: CL_FRAME_MAX_BYTES */
    size_t out_used;
    uint8_t *payload; /* one journal entry (card history) */
    balances_history_t *history;
    cl_card_view_t *views;      /* BALANCES_WALLET_MAX */
    balances_liability_t *liab; /* BALANCES_LIABILITY_MAX */
    stores_line_t *lines;       /* STORES_LINES_MAX */
    stores_cell_t *cells;       /* STORES_SETTLEMENT_MAX */
    analytics_row_t *rows;      /* ANALYTICS_ROWS_MAX */
    ProtobufCAllocator alloc;   /* the arena, for unpacking history entries */
};

typedef Cardledger__V1__Reply reply_t;
typedef Cardledger__V1__Request request_t;

/* ---- Arena -------------------------------------------------------------------------------- */

static void *
s_alloc(qanswer_t *q, size_t size)
{
    size = (size + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    block_t *b = q->blocks;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > S_ARENA_BLOCK ? size : S_ARENA_BLOCK;
        block_t *nb = malloc(sizeof(*nb) + cap);
        CL_CHECK(nb != NULL); /* out of memory answering a bounded query: nothing sane to do */
        nb->next = q->blocks;
        nb->used = 0;
        nb->cap = cap;
        q->blocks = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

static void
s_arena_reset(qanswer_t *q)
{
    while (q->blocks != NULL && q->blocks->next != NULL) {
        block_t *next = q->blocks->next;
        free(q->blocks);
        q->blocks = next;
    }
    if (q->blocks != NULL)
        q->blocks->used = 0;
}

static void *
s_pb_alloc(void *ctx, size_t size)
{
    return s_alloc(ctx, size);
}

static void
s_pb_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p; /* the arena is reset as a whole */
}

static char *
s_str(qanswer_t *q, const char *s)
{
    size_t n = strlen(s);
    char *p = s_alloc(q, n + 1);
    memcpy(p, s, n);
    return p;
}

/* A new message in the arena, set up by its generated __init() function. */
#define S_NEW(q, type, init_fn)                \
    __extension__({                            \
        type *m_ = s_alloc((q), sizeof(type)); \
        init_fn(m_);                           \
        m_;                                    \
    })

#define S_ARRAY(q, type, n) ((type **)s_alloc((q), ((n) != 0 ? (n) : 1) * sizeof(type *)))

/* ---- Lifetime ----------------------------------------------------------------------------- */

int
qanswer_new(qanswer_t **out)
{
    qanswer_t *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return PROJ_ENOMEM;
    q->out = malloc(CL_FRAME_MAX_BYTES);
    q->payload = malloc(JOURNAL_PAYLOAD_MAX);
    q->history = malloc(sizeof(*q->history));
    q->views = malloc(BALANCES_WALLET_MAX * sizeof(*q->views));
    q->liab = malloc(BALANCES_LIABILITY_MAX * sizeof(*q->liab));
    q->lines = malloc(STORES_LINES_MAX * sizeof(*q->lines));
    q->cells = malloc(STORES_SETTLEMENT_MAX * sizeof(*q->cells));
    q->rows = malloc(ANALYTICS_ROWS_MAX * sizeof(*q->rows));
    if (q->out == NULL || q->payload == NULL || q->history == NULL || q->views == NULL ||
        q->liab == NULL || q->lines == NULL || q->cells == NULL || q->rows == NULL) {
        qanswer_destroy(&q);
        return PROJ_ENOMEM;
    }
    q->alloc = (ProtobufCAllocator){ .alloc = s_pb_alloc, .free = s_pb_free, .allocator_data = q };
    CL_CHECK(strcmp(proj_def_at(Q_BALANCES)->name, "balances") == 0);
    CL_CHECK(strcmp(proj_def_at(Q_STORES)->name, "stores") == 0);
    CL_CHECK(strcmp(proj_def_at(Q_ANALYTICS)->name, "analytics") == 0);
    *out = q;
    return 0;
}

void
qanswer_destroy(qanswer_t **qp)
{
    if (qp == NULL || *qp == NULL)
        return;
    qanswer_t *q = *qp;
    while (q->blocks != NULL) {
        block_t *next = q->blocks->next;
        free(q->blocks);
        q->blocks = next;
    }
    free(q->out);
    free(q->payload);
    free(q->history);
    free(q->views);
    free(q->liab);
    free(q->lines);
    free(q->cells);
    free(q->rows);
    free(q);
    *qp = NULL;
}

/* ---- Replies ------------------------------------------------------------------------------ */

static void s_status(qanswer_t *q, reply_t *r, Cardledger__V1__Status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
s_status(qanswer_t *q, reply_t *r, Cardledger__V1__Status status, const char *fmt, ...)
{
    char sentence[CL_MESSAGE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sentence, sizeof(sentence), fmt, ap);
    va_end(ap);
    r->status = status;
    r->message = s_str(q, sentence);
}

/* A failed query function: its error as a status. */
static void
s_query_failed(qanswer_t *q, reply_t *r, int rc)
{
    s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INTERNAL, "the query failed: %s",
             proj_strerror(rc));
}

/* Checks a string argument against its named limit (and presence when required). */
static bool
s_arg(qanswer_t *q, reply_t *r, const char *value, size_t max, const char *field, bool required)
{
    size_t n = value != NULL ? strlen(value) : 0;
    if (required && n == 0) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT, "%s is required", field);
        return false;
    }
    if (n > max) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_TOO_LARGE,
                 "%s is %zu bytes, the limit is %zu", field, n, max);
        return false;
    }
    return true;
}

static bool
s_range(qanswer_t *q, reply_t *r, int64_t from_us, int64_t to_us)
{
    if (to_us != 0 && to_us <= from_us) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT,
                 "to_us must be after from_us (or 0 for no end)");
        return false;
    }
    return true;
}

static pstore_t *
s_store(pset_t *ps, int i)
{
    return proj_store(pset_active(ps, (size_t)i));
}

static Cardledger__V1__CardView *
s_card_view(qanswer_t *q, const cl_card_view_t *v)
{
    Cardledger__V1__CardView *c =
        S_NEW(q, Cardledger__V1__CardView, cardledger__v1__card_view__init);
    c->card_id = v->card_id;
    c->code_masked = s_str(q, v->code_masked);
    c->merchant_id = s_str(q, v->merchant_id);
    c->program_id = s_str(q, v->program_id);
    c->kind = (Cardledger__V1__CardKind)v->kind;
    c->currency = s_str(q, v->currency);
    c->state = (Cardledger__V1__CardState)v->state;
    c->frozen = v->frozen;
    c->locked = v->locked;
    c->balance_minor = v->balance_minor;
    c->uses_left = v->uses_left;
    c->face_value_minor = v->face_value_minor;
    c->issued_at_us = v->issued_at_us;
    c->valid_from_us = v->valid_from_us;
    c->expires_at_us = v->expires_at_us;
    c->holder = s_str(q, v->holder);
    c->pin_failures = v->pin_failures;
    c->open_offer_id = v->open_offer_id;
    c->transfers_done = v->transfers_done;
    c->redeemed_minor = v->redeemed_minor;
    return c;
}

/* ---- Queries ------------------------------------------------------------------------------ */

/* Reads a card reference; false after setting a refusal. */
static bool
s_card_ref(qanswer_t *q, reply_t *r, const Cardledger__V1__CardRef *in, cl_card_ref_t *out)
{
    memset(out, 0, sizeof(*out));
    if (in != NULL && in->ref_case == CARDLEDGER__V1__CARD_REF__REF_CARD_ID && in->card_id != 0) {
        out->card_id = in->card_id;
        return true;
    }
    if (in != NULL && in->ref_case == CARDLEDGER__V1__CARD_REF__REF_CODE) {
        /* A typed code may carry dashes and spaces: allow room for them. */
        if (!s_arg(q, r, in->code, 2 * CL_CODE_MAX, "card.code", true))
            return false;
        cl_code_normalize(in->code, out->code);
        if (out->code[0] != '\0')
            return true;
    }
    s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT,
             "card: a card code or card id is required");
    return false;
}

/* A journal entry as a history shows it: codes masked, hashes gone, the request id as text
 * whichever form the journal holds it in (cardledger.proto, JournalEntry). */
static Cardledger__V1__JournalEntry *
s_history_entry(qanswer_t *q, journal_t *j, uint64_t seq, int64_t *out_at)
{
    journal_entry_t e;
    int rc = journal_read(j, seq, q->payload, JOURNAL_PAYLOAD_MAX, &e);
    if (rc != 0)
        return NULL;
    *out_at = e.timestamp_us;
    Cardledger__V1__JournalEntry *je =
        cardledger__v1__journal_entry__unpack(&q->alloc, e.payload_len, e.payload);
    if (je == NULL)
        return NULL;
    if (je->request_id_b32.len > 0) {
        char id[CL_REQUEST_ID_MAX + 1];
        if (codec_request_id_b32_text(je->request_id_b32.data, je->request_id_b32.len, id) != 0)
            return NULL;
        je->request_id = s_str(q, id);
        je->request_id_b32.len = 0;
        je->request_id_b32.data = NULL;
    }
    if (je->event_case == CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ISSUED &&
        je->card_issued != NULL) {
        char masked[CL_CODE_MAX + 8];
        cl_code_mask(je->card_issued->code, masked, sizeof(masked));
        je->card_issued->code = s_str(q, masked);
        je->card_issued->pin_hash.len = 0;
        je->card_issued->pin_hash.data = NULL;
    }
    if (je->event_case == CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_OFFERED &&
        je->gift_offered != NULL) {
        je->gift_offered->claim_hash.len = 0;
        je->gift_offered->claim_hash.data = NULL;
    }
    return je;
}

static void
s_card_history(qanswer_t *q, pset_t *ps, journal_t *j, const Cardledger__V1__CardHistory *in,
               reply_t *r)
{
    cl_card_ref_t ref;
    if (!s_card_ref(q, r, in->card, &ref))
        return;
    uint64_t as_of;
    balances_history_t *h = q->history;
    int rc = balances_history(s_store(ps, Q_BALANCES), &ref, in->limit, h, &as_of);
    if (rc == PROJ_ENOTFOUND) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_UNKNOWN_CARD, "no such card");
        return;
    }
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__HistoryResult *res =
        S_NEW(q, Cardledger__V1__HistoryResult, cardledger__v1__history_result__init);
    res->card = s_card_view(q, &h->card);
    res->events_total = h->events_total;
    res->entries = S_ARRAY(q, Cardledger__V1__HistoryEntry, h->seqs_count);
    for (size_t i = 0; i < h->seqs_count; i++) {
        Cardledger__V1__HistoryEntry *he =
            S_NEW(q, Cardledger__V1__HistoryEntry, cardledger__v1__history_entry__init);
        he->seq = h->seqs[i];
        he->entry = s_history_entry(q, j, h->seqs[i], &he->at_us);
        if (he->entry == NULL) {
            s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INTERNAL,
                     "journal entry %llu could not be read", (unsigned long long)h->seqs[i]);
            return;
        }
        res->entries[res->n_entries++] = he;
    }
    res->holders = (char **)s_alloc(q, (h->holders_count + 1) * sizeof(char *));
    for (size_t i = 0; i < h->holders_count; i++)
        res->holders[res->n_holders++] = s_str(q, h->holders[i].holder);
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_HISTORY;
    r->history = res;
    r->as_of_seq = as_of;
}

static void
s_wallet(qanswer_t *q, pset_t *ps, const Cardledger__V1__HolderWallet *in, reply_t *r)
{
    if (!s_arg(q, r, in->merchant_id, CL_ID_MAX, "merchant_id", true) ||
        !s_arg(q, r, in->holder, CL_HOLDER_MAX, "holder", true))
        return;
    size_t n;
    bool more;
    uint64_t as_of;
    int rc = balances_wallet(s_store(ps, Q_BALANCES), in->merchant_id, in->holder, q->views,
                             BALANCES_WALLET_MAX, &n, &more, &as_of);
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__WalletResult *res =
        S_NEW(q, Cardledger__V1__WalletResult, cardledger__v1__wallet_result__init);
    res->cards = S_ARRAY(q, Cardledger__V1__CardView, n);
    for (size_t i = 0; i < n; i++)
        res->cards[res->n_cards++] = s_card_view(q, &q->views[i]);
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_WALLET;
    r->wallet = res;
    r->as_of_seq = as_of;
    if (more)
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_OK, "the first %d cards of the wallet",
                 BALANCES_WALLET_MAX);
}

static void
s_liability(qanswer_t *q, pset_t *ps, const Cardledger__V1__GetLiability *in, reply_t *r)
{
    if (!s_arg(q, r, in->merchant_id, CL_ID_MAX, "merchant_id", true) ||
        !s_arg(q, r, in->program_id, CL_ID_MAX, "program_id", false))
        return;
    size_t n;
    uint64_t as_of;
    int rc = balances_liability(s_store(ps, Q_BALANCES), in->merchant_id, in->program_id, q->liab,
                                BALANCES_LIABILITY_MAX, &n, &as_of);
    if (rc == PROJ_ENOTFOUND) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_UNKNOWN_PROGRAM, "no program %s",
                 in->program_id);
        return;
    }
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__LiabilityResult *res =
        S_NEW(q, Cardledger__V1__LiabilityResult, cardledger__v1__liability_result__init);
    res->rows = S_ARRAY(q, Cardledger__V1__LiabilityRow, n);
    for (size_t i = 0; i < n; i++) {
        const balances_liability_t *l = &q->liab[i];
        Cardledger__V1__LiabilityRow *row =
            S_NEW(q, Cardledger__V1__LiabilityRow, cardledger__v1__liability_row__init);
        row->merchant_id = s_str(q, l->merchant_id);
        row->program_id = s_str(q, l->program_id);
        row->currency = s_str(q, l->currency);
        row->outstanding_minor = l->outstanding_minor;
        row->live_cards = l->live_cards;
        row->uses_outstanding = l->uses_outstanding;
        res->rows[res->n_rows++] = row;
    }
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_LIABILITY;
    r->liability = res;
    r->as_of_seq = as_of;
}

static void
s_store_day(qanswer_t *q, pset_t *ps, const Cardledger__V1__StoreDay *in, reply_t *r)
{
    if (!s_arg(q, r, in->merchant_id, CL_ID_MAX, "merchant_id", true) ||
        !s_arg(q, r, in->store_id, CL_ID_MAX, "store_id", true))
        return;
    stores_day_t d;
    uint64_t as_of;
    int rc = stores_day(s_store(ps, Q_STORES), in->merchant_id, in->store_id, in->day_start_us, &d,
                        &as_of);
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__StoreDayResult *res =
        S_NEW(q, Cardledger__V1__StoreDayResult, cardledger__v1__store_day_result__init);
    res->store_id = s_str(q, in->store_id);
    res->day_start_us = proj_day_start_us(proj_day(in->day_start_us));
    res->redemptions = d.redemptions;
    res->redeemed_minor = d.redeemed_minor;
    res->reversals = d.reversals;
    res->reversed_minor = d.reversed_minor;
    res->uses_redeemed = d.uses_redeemed;
    res->discount_minor = d.discount_minor;
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_STORE_DAY;
    r->store_day = res;
    r->as_of_seq = as_of;
}

static void
s_store_redemptions(qanswer_t *q, pset_t *ps, const Cardledger__V1__StoreRedemptions *in,
                    reply_t *r)
{
    if (!s_arg(q, r, in->merchant_id, CL_ID_MAX, "merchant_id", true) ||
        !s_arg(q, r, in->store_id, CL_ID_MAX, "store_id", true) ||
        !s_range(q, r, in->from_us, in->to_us))
        return;
    if (in->limit > STORES_LINES_MAX) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_TOO_LARGE,
                 "limit is %u, at most %d lines come in one reply", in->limit, STORES_LINES_MAX);
        return;
    }
    size_t n;
    bool more;
    uint64_t as_of;
    int rc = stores_redemptions(s_store(ps, Q_STORES), in->merchant_id, in->store_id, in->from_us,
                                in->to_us, in->limit, in->after_seq, q->lines, STORES_LINES_MAX, &n,
                                &more, &as_of);
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__RedemptionList *res =
        S_NEW(q, Cardledger__V1__RedemptionList, cardledger__v1__redemption_list__init);
    res->lines = S_ARRAY(q, Cardledger__V1__RedemptionLine, n);
    for (size_t i = 0; i < n; i++) {
        const stores_line_t *l = &q->lines[i];
        Cardledger__V1__RedemptionLine *o =
            S_NEW(q, Cardledger__V1__RedemptionLine, cardledger__v1__redemption_line__init);
        o->seq = l->seq;
        o->at_us = l->at_us;
        o->card_id = l->card_id;
        o->code_masked = s_str(q, l->code_masked);
        o->order_ref = s_str(q, l->order_ref);
        o->amount_minor = l->amount_minor;
        o->uses = l->uses;
        o->reversed_minor = l->reversed_minor;
        o->reversed_uses = l->reversed_uses;
        o->discount_minor = l->discount_minor;
        res->lines[res->n_lines++] = o;
    }
    res->more = more;
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_REDEMPTIONS;
    r->redemptions = res;
    r->as_of_seq = as_of;
}

static void
s_settlement(qanswer_t *q, pset_t *ps, const Cardledger__V1__Settlement *in, reply_t *r)
{
    if (!s_arg(q, r, in->merchant_id, CL_ID_MAX, "merchant_id", true) ||
        !s_range(q, r, in->from_us, in->to_us))
        return;
    size_t n;
    bool more;
    uint64_t as_of;
    int rc = stores_settlement(s_store(ps, Q_STORES), in->merchant_id, in->from_us, in->to_us,
                               q->cells, STORES_SETTLEMENT_MAX, &n, &more, &as_of);
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__SettlementResult *res =
        S_NEW(q, Cardledger__V1__SettlementResult, cardledger__v1__settlement_result__init);
    res->cells = S_ARRAY(q, Cardledger__V1__SettlementCell, n);
    for (size_t i = 0; i < n; i++) {
        Cardledger__V1__SettlementCell *c =
            S_NEW(q, Cardledger__V1__SettlementCell, cardledger__v1__settlement_cell__init);
        c->sold_store_id = s_str(q, q->cells[i].sold);
        c->redeemed_store_id = s_str(q, q->cells[i].redeemed_store_id);
        c->redemptions = q->cells[i].redemptions;
        c->value_minor = q->cells[i].value_minor;
        res->cells[res->n_cells++] = c;
    }
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_SETTLEMENT;
    r->settlement = res;
    r->as_of_seq = as_of;
    if (more)
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_OK,
                 "the first %d cells; ask for a shorter range for the rest", STORES_SETTLEMENT_MAX);
}

static void
s_analytics(qanswer_t *q, pset_t *ps, const Cardledger__V1__Analytics *in, reply_t *r)
{
    if (!s_arg(q, r, in->merchant_id, CL_ID_MAX, "merchant_id", true) ||
        !s_arg(q, r, in->program_id, CL_ID_MAX, "program_id", false) ||
        !s_range(q, r, in->from_us, in->to_us))
        return;
    if ((int)in->group_by < 0 || (int)in->group_by > ANALYTICS_GROUP_STORE) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT,
                 "group_by %d is not a known grouping", (int)in->group_by);
        return;
    }
    size_t n;
    bool more;
    uint64_t as_of;
    int rc = analytics_query(s_store(ps, Q_ANALYTICS), in->merchant_id, in->from_us, in->to_us,
                             (analytics_group_t)in->group_by, in->program_id, q->rows,
                             ANALYTICS_ROWS_MAX, &n, &more, &as_of);
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    Cardledger__V1__AnalyticsResult *res =
        S_NEW(q, Cardledger__V1__AnalyticsResult, cardledger__v1__analytics_result__init);
    res->rows = S_ARRAY(q, Cardledger__V1__AnalyticsRow, n);
    for (size_t i = 0; i < n; i++) {
        const analytics_row_t *a = &q->rows[i];
        Cardledger__V1__AnalyticsRow *o =
            S_NEW(q, Cardledger__V1__AnalyticsRow, cardledger__v1__analytics_row__init);
        o->key = s_str(q, a->key);
        o->currency = s_str(q, a->currency);
        o->issued_count = a->issued_count;
        o->issued_face_minor = a->issued_face_minor;
        o->price_paid_minor = a->price_paid_minor;
        o->reloaded_minor = a->reloaded_minor;
        o->redeemed_net_minor = a->redeemed_net_minor;
        o->redemption_count = a->redemption_count;
        o->avg_redemption_minor = a->avg_redemption_minor;
        o->breakage_minor = a->breakage_minor;
        o->outstanding_minor = a->outstanding_minor;
        o->value_redemption_rate_ppm = a->value_redemption_rate_ppm;
        o->card_redemption_rate_ppm = a->card_redemption_rate_ppm;
        o->lag_buckets = s_alloc(q, sizeof(uint64_t) * ANALYTICS_LAG_BUCKETS);
        memcpy(o->lag_buckets, a->lag_buckets, sizeof(uint64_t) * ANALYTICS_LAG_BUCKETS);
        o->n_lag_buckets = ANALYTICS_LAG_BUCKETS;
        o->denominations = S_ARRAY(q, Cardledger__V1__DenominationCount, a->denominations_count);
        for (size_t k = 0; k < a->denominations_count; k++) {
            Cardledger__V1__DenominationCount *d = S_NEW(q, Cardledger__V1__DenominationCount,
                                                         cardledger__v1__denomination_count__init);
            d->face_value_minor = a->denominations[k].face_value_minor;
            d->cards = a->denominations[k].cards;
            o->denominations[o->n_denominations++] = d;
        }
        o->gift_rate_ppm = a->gift_rate_ppm;
        o->cross_region_share_ppm = a->cross_region_share_ppm;
        o->adjusted_minor = a->adjusted_minor;
        o->cards_redeemed = a->cards_redeemed;
        o->cards_gifted = a->cards_gifted;
        o->cross_region_redemptions = a->cross_region_redemptions;
        o->transferred_net_minor = a->transferred_net_minor;
        o->discount_net_minor = a->discount_net_minor;
        o->reversal_count = a->reversal_count;
        o->expired_cards = a->expired_cards;
        res->rows[res->n_rows++] = o;
    }
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_ANALYTICS;
    r->analytics = res;
    r->as_of_seq = as_of;
    if (more)
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_OK,
                 "the first %d rows; ask for a shorter range or another grouping for the rest",
                 ANALYTICS_ROWS_MAX);
}

static uint64_t
s_head(journal_t *j)
{
    journal_head_t h;
    return journal_head(j, &h) == 0 ? h.seq : 0;
}

static uint64_t
s_low_checkpoint(pset_t *ps)
{
    uint64_t low = UINT64_MAX;
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        uint64_t cp = proj_checkpoint(pset_active(ps, i));
        low = cp < low ? cp : low;
    }
    return low;
}

static void
s_projection_status(qanswer_t *q, pset_t *ps, journal_t *j, reply_t *r)
{
    uint64_t head = s_head(j);
    Cardledger__V1__ProjectionStatusResult *res = S_NEW(
        q, Cardledger__V1__ProjectionStatusResult, cardledger__v1__projection_status_result__init);
    res->projections = S_ARRAY(q, Cardledger__V1__ProjectionInfo, PROJ_COUNT);
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        pset_status_t st;
        pset_status(ps, i, head, &st);
        Cardledger__V1__ProjectionInfo *p =
            S_NEW(q, Cardledger__V1__ProjectionInfo, cardledger__v1__projection_info__init);
        p->name = s_str(q, st.name);
        p->schema_version = st.schema_version;
        p->code_schema_version = st.code_schema_version;
        p->checkpoint_seq = st.checkpoint;
        p->journal_head_seq = head;
        p->lag_events = head > st.checkpoint ? head - st.checkpoint : 0;
        p->rebuilding = st.rebuilding;
        p->rebuild_schema_version = st.rebuild_schema_version;
        p->rebuild_checkpoint_seq = st.rebuild_checkpoint;
        p->rebuild_events_per_s = st.rebuild_events_per_s;
        p->rebuild_eta_s = st.rebuild_eta_s;
        if (st.error != 0) {
            char why[CL_MESSAGE_MAX + 1];
            snprintf(why, sizeof(why), "stopped before sequence %llu: %s",
                     (unsigned long long)st.error_seq, proj_strerror(st.error));
            p->error = s_str(q, why);
        }
        res->projections[res->n_projections++] = p;
    }
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_PROJECTIONS;
    r->projections = res;
    r->as_of_seq = s_low_checkpoint(ps);
}

static void
s_get_status(qanswer_t *q, pset_t *ps, journal_t *j, reply_t *r)
{
    journal_head_t h;
    memset(&h, 0, sizeof(h));
    journal_head(j, &h);
    Cardledger__V1__DaemonStatus *st =
        S_NEW(q, Cardledger__V1__DaemonStatus, cardledger__v1__daemon_status__init);
    st->version = s_str(q, CARDLEDGER_VERSION);
    st->head_seq = h.seq;
    st->now_us = h.timestamp_us; /* the projector has no clock: the last event's time */
    st->checkpoint_seq = s_low_checkpoint(ps);
    r->result_case = CARDLEDGER__V1__REPLY__RESULT_DAEMON_STATUS;
    r->daemon_status = st;
    r->as_of_seq = st->checkpoint_seq;
}

static void
s_rebuild(qanswer_t *q, pset_t *ps, const Cardledger__V1__RebuildProjection *in, reply_t *r)
{
    if (!s_arg(q, r, in->name, PROJ_NAME_MAX, "name", true))
        return;
    if (proj_def_find(in->name) == NULL) {
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_INVALID_ARGUMENT,
                 "no projection %s (balances, stores or analytics)", in->name);
        return;
    }
    int rc = pset_rebuild(ps, in->name);
    if (rc != 0) {
        s_query_failed(q, r, rc);
        return;
    }
    s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_OK,
             "%s is being rebuilt beside the active environment; see the projection status",
             in->name);
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        if (proj_def_at(i) == proj_def_find(in->name))
            r->as_of_seq = proj_checkpoint(pset_active(ps, i));
    }
}

static void
s_answer(qanswer_t *q, pset_t *ps, journal_t *j, const request_t *rq, reply_t *r)
{
    r->status = CARDLEDGER__V1__STATUS__STATUS_OK;
    if (!s_arg(q, r, rq->request_id, CL_REQUEST_ID_MAX, "request_id", true))
        return;
    switch (rq->command_case) {
    case CARDLEDGER__V1__REQUEST__COMMAND_GET_STATUS:
        s_get_status(q, ps, j, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_CARD_HISTORY:
        s_card_history(q, ps, j, rq->card_history, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_HOLDER_WALLET:
        s_wallet(q, ps, rq->holder_wallet, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_GET_LIABILITY:
        s_liability(q, ps, rq->get_liability, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_STORE_DAY:
        s_store_day(q, ps, rq->store_day, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_STORE_REDEMPTIONS:
        s_store_redemptions(q, ps, rq->store_redemptions, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_SETTLEMENT:
        s_settlement(q, ps, rq->settlement, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_ANALYTICS:
        s_analytics(q, ps, rq->analytics, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_PROJECTION_STATUS:
        s_projection_status(q, ps, j, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND_REBUILD_PROJECTION:
        s_rebuild(q, ps, rq->rebuild_projection, r);
        return;
    case CARDLEDGER__V1__REQUEST__COMMAND__NOT_SET:
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_UNKNOWN_COMMAND,
                 "no command set, or one this projector does not know");
        return;
    default:
        s_status(q, r, CARDLEDGER__V1__STATUS__STATUS_WRONG_SERVICE,
                 "this is the projector: commands and card lookups go to the daemon");
        return;
    }
}

/* ---- Framing ------------------------------------------------------------------------------ */

static size_t
s_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = (uint8_t)(v & 0x7f);
        v >>= 7;
        p[n++] = (uint8_t)(b | (v != 0 ? 0x80 : 0));
    } while (v != 0);
    return n;
}

/* Appends a packed reply as field 1 of the ReplyBatch; false when it does not fit. */
static bool
s_append(qanswer_t *q, const reply_t *r)
{
    size_t size = cardledger__v1__reply__get_packed_size(r);
    if (q->out_used + 1 + 10 + size > CL_FRAME_MAX_BYTES)
        return false;
    q->out[q->out_used++] = 0x0a; /* field 1, length-delimited */
    q->out_used += s_varint(q->out + q->out_used, size);
    q->out_used += cardledger__v1__reply__pack(r, q->out + q->out_used);
    return true;
}

/* A reply with a status and no result (always fits: the frame keeps room for it). */
static void
s_append_simple(qanswer_t *q, const char *request_id, Cardledger__V1__Status status,
                const char *message)
{
    reply_t r;
    cardledger__v1__reply__init(&r);
    char id[CL_REQUEST_ID_MAX + 1];
    proj_copy(id, sizeof(id), request_id != NULL ? request_id : "");
    char msg[CL_MESSAGE_MAX + 1];
    proj_copy(msg, sizeof(msg), message);
    r.request_id = id;
    r.status = status;
    r.message = msg;
    bool ok = s_append(q, &r);
    CL_CHECK(ok); /* the caller leaves room: a few hundred bytes per request */
}

int
qanswer_batch(qanswer_t *q, pset_t *ps, journal_t *j, const void *frame, size_t len,
              const uint8_t **out, size_t *out_len)
{
    if (q == NULL || ps == NULL || j == NULL || out == NULL || out_len == NULL ||
        (frame == NULL && len > 0))
        return PROJ_EINVAL;
    q->out_used = 0;
    if (len > CL_FRAME_MAX_BYTES) {
        s_append_simple(q, "", CARDLEDGER__V1__STATUS__STATUS_TOO_LARGE,
                        "the message is larger than the frame limit");
    } else {
        Cardledger__V1__RequestBatch *rb =
            cardledger__v1__request_batch__unpack(NULL, len, (const uint8_t *)frame);
        if (rb == NULL) {
            s_append_simple(q, "", CARDLEDGER__V1__STATUS__STATUS_MALFORMED,
                            "the message is not a valid RequestBatch");
        } else if (rb->n_requests > CL_BATCH_REQUESTS_MAX) {
            char msg[CL_MESSAGE_MAX + 1];
            snprintf(msg, sizeof(msg), "the batch holds %zu requests, the limit is %d",
                     rb->n_requests, CL_BATCH_REQUESTS_MAX);
            s_append_simple(q, "", CARDLEDGER__V1__STATUS__STATUS_TOO_LARGE, msg);
        } else {
            /* Room kept at the end for a short refusal of every request still to come. */
            const size_t spare = 512;
            for (size_t i = 0; i < rb->n_requests; i++) {
                const request_t *rq = rb->requests[i];
                reply_t *r = S_NEW(q, reply_t, cardledger__v1__reply__init);
                char id[CL_REQUEST_ID_MAX + 1];
                proj_copy(id, sizeof(id), rq->request_id != NULL ? rq->request_id : "");
                r->request_id = s_str(q, id);
                s_answer(q, ps, j, rq, r);
                size_t keep = q->out_used;
                size_t left = (rb->n_requests - i - 1) * spare;
                bool ok = q->out_used + left < CL_FRAME_MAX_BYTES;
                if (ok) {
                    /* Pack, then check that what is left still leaves room for the rest. */
                    ok = s_append(q, r) && q->out_used + left <= CL_FRAME_MAX_BYTES;
                    if (!ok)
                        q->out_used = keep;
                }
                if (!ok)
                    s_append_simple(q, id, CARDLEDGER__V1__STATUS__STATUS_TOO_LARGE,
                                    "the reply would not fit in one message; ask for fewer rows");
                s_arena_reset(q);
            }
            cardledger__v1__request_batch__free_unpacked(rb, NULL);
        }
    }
    s_arena_reset(q);
    *out = q->out;
    *out_len = q->out_used;
    return 0;
}
