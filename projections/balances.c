/*
 * balances.c: the balances projection, fold and queries (see balances.h).
 *
 * Tables and records (integers in keys are big-endian, so LMDB order is numeric order):
 *   programs   merchant\0program\0        -> u32 program index (1, 2, ... in definition order)
 *   progs      index (u32)                -> bal_prog_t
 *   cards      card_id (u64)              -> bal_card_t (with its first history sequences)
 *   history    card_id, chunk (u32)       -> up to BAL_CHUNK_SEQS u64 sequences, in order
 *   chain      card_id, n (u32, from 1)   -> bal_claim_t: the n-th change of holder
 *   wallet     merchant\0holder\0card_id  -> empty
 *   codes      XXH3-128 of the code       -> card_id (u64, big-endian)
 *   liability  program index (u32)        -> bal_liab_t
 *   counters   "programs"                 -> u32 programs defined
 * Cards refer to their program by index, which keeps the card record small (there are
 * millions of cards and every fold batch rewrites the ones it touched).
 */
#include "balances.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "pcache.h"
#include "pstore.h"

enum {
    T_PROGRAMS,
    T_PROGS,
    T_CARDS,
    T_HISTORY,
    T_CHAIN,
    T_WALLET,
    T_CODES,
    T_LIABILITY,
    T_COUNTERS,
    T_COUNT
};

#define BAL_HIST_INLINE 6  /* sequences kept in the card record itself */
#define BAL_CHUNK_SEQS  32 /* sequences per history chunk */

typedef struct bal_prog {
    uint32_t ix;
    uint32_t kind;
    char currency[8];
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    uint8_t pad[6];
} bal_prog_t;
_Static_assert(sizeof(bal_prog_t) == 88, "bal_prog_t has no padding holes");

typedef struct bal_card {
    uint64_t card_id;
    int64_t balance_minor;
    int64_t face_value_minor;
    int64_t redeemed_minor; /* lifetime, net of reversals */
    int64_t issued_at_us;
    int64_t valid_from_us;
    int64_t expires_at_us; /* 0 = never */
    uint64_t open_offer_id;
    uint64_t hist[BAL_HIST_INLINE]; /* the card's first event sequences */
    uint32_t prog_ix;
    uint32_t uses_left;
    uint32_t uses_total; /* uses the card was issued with */
    uint32_t transfers_done;
    uint32_t pin_failures;
    uint32_t hist_count;  /* events of the card */
    uint32_t chain_count; /* changes of holder */
    uint32_t pad32;
    uint8_t state;
    uint8_t frozen;
    uint8_t locked;
    uint8_t has_pin;
    uint8_t reminded;
    uint8_t code_len;
    uint8_t pad8[2];
    char code_tail[8]; /* the last 4 bytes of the code: what a masked code shows */
    char holder[CL_HOLDER_MAX + 1];
    uint8_t pad_holder[7];
} bal_card_t;
_Static_assert(sizeof(bal_card_t) == 232, "bal_card_t has no padding holes");

typedef struct bal_claim {
    int64_t at_us;
    uint64_t seq;
    char previous_holder[CL_HOLDER_MAX + 1];
    char new_holder[CL_HOLDER_MAX + 1];
    uint8_t pad[6];
} bal_claim_t;
_Static_assert(sizeof(bal_claim_t) == 152, "bal_claim_t has no padding holes");

typedef struct bal_liab {
    int64_t outstanding_minor;
    uint64_t live_cards;
    uint64_t uses_outstanding;
} bal_liab_t;

static const proj_table_def_t s_tables[T_COUNT] = {
    [T_PROGRAMS] = { "programs", 2 * (CL_ID_MAX + 1), 4, false },
    [T_PROGS] = { "progs", 4, sizeof(bal_prog_t), false },
    [T_CARDS] = { "cards", 8, sizeof(bal_card_t), false },
    [T_HISTORY] = { "history", 12, 8 * BAL_CHUNK_SEQS, true },
    [T_CHAIN] = { "chain", 12, sizeof(bal_claim_t), true },
    [T_WALLET] = { "wallet", CL_ID_MAX + 1 + CL_HOLDER_MAX + 1 + 8, 0, true },
    [T_CODES] = { "codes", 16, 8, true },
    [T_LIABILITY] = { "liability", 4, sizeof(bal_liab_t), false },
    [T_COUNTERS] = { "counters", 16, 4, false },
};

static int s_apply(pcache_t *c, const cl_event_t *ev);
static void s_prefetch(const pcache_t *c, const cl_event_t *ev, int stage);

const proj_def_t balances_def = {
    .name = "balances",
    .schema_version = BALANCES_SCHEMA_VERSION,
    .tables = s_tables,
    .tables_count = T_COUNT,
    .apply = s_apply,
    .prefetch = s_prefetch,
};

static proj_key_t s_key_sub(uint64_t card_id, uint32_t n);

/* The card record is the one random lookup of nearly every event: start fetching it early.
 * Past its first BAL_HIST_INLINE events a card's event also lands in a history chunk, which
 * the card names (stage 2, once the card is in cache). */
static void
s_prefetch(const pcache_t *c, const cl_event_t *ev, int stage)
{
    proj_prefetch_card(c, T_CARDS, ev, stage);
    if (stage != 2 || ev->type == CL_EV_CARD_ISSUED)
        return;
    uint64_t card_id = cl_event_card_id(ev);
    proj_key_t k = proj_key_of_u64(card_id);
    size_t len;
    const bal_card_t *card = card_id != 0 ? pcache_peek(c, T_CARDS, k.b, k.n, &len) : NULL;
    if (card == NULL || len != sizeof(*card) || card->hist_count < BAL_HIST_INLINE)
        return;
    proj_key_t hk = s_key_sub(card_id, (card->hist_count - BAL_HIST_INLINE) / BAL_CHUNK_SEQS);
    pcache_prefetch(c, T_HISTORY, hk.b, hk.n, 0);
}

/* ---- Keys --------------------------------------------------------------------------------- */

static proj_key_t
s_key_ix(uint32_t ix)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_u32(&k, ix);
    return k;
}

static proj_key_t
s_key_program(const char *merchant_id, const char *program_id)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, merchant_id);
    proj_key_str(&k, program_id);
    return k;
}

static proj_key_t
s_key_wallet(const char *merchant_id, const char *holder, uint64_t card_id)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, merchant_id);
    proj_key_str(&k, holder);
    proj_key_u64(&k, card_id);
    return k;
}

static proj_key_t
s_key_code_hash(const uint8_t hash[CL_HASH_LEN])
{
    proj_key_t k = { .n = CL_HASH_LEN };
    memcpy(k.b, hash, CL_HASH_LEN);
    return k;
}

static proj_key_t
s_key_code(const char *code)
{
    uint8_t hash[CL_HASH_LEN];
    cl_code_hash(code, hash);
    return s_key_code_hash(hash);
}

static proj_key_t
s_key_sub(uint64_t card_id, uint32_t n)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_u64(&k, card_id);
    proj_key_u32(&k, n);
    return k;
}

/* ---- Fold helpers ------------------------------------------------------------------------- */

static const bal_prog_t *
s_prog(pcache_t *c, uint32_t ix)
{
    proj_key_t k = s_key_ix(ix);
    size_t len;
    const bal_prog_t *p = pcache_get(c, T_PROGS, k.b, k.n, &len);
    return p != NULL && len == sizeof(*p) ? p : NULL;
}

static bal_card_t *
s_card_mut(pcache_t *c, uint64_t card_id)
{
    proj_key_t k = proj_key_of_u64(card_id);
    size_t len = 0;
    bal_card_t *card = pcache_get_mut(c, T_CARDS, k.b, k.n, &len);
    /* A record of another size is never changed (it was marked, and is written back as it is:
     * the batch fails with PROJ_EMISMATCH anyway). */
    return card != NULL && len == sizeof(bal_card_t) ? card : NULL;
}

/* What a card adds to its program's liability. */
typedef struct contrib {
    int64_t value;
    uint64_t live;
    uint64_t uses;
} contrib_t;

static contrib_t
s_contrib(const bal_card_t *card, cl_kind_t kind)
{
    contrib_t r = { 0, 0, 0 };
    if (card->state == CL_CARDSTATE_EXPIRED)
        return r;
    r.value = proj_value(kind, card->face_value_minor, card->uses_total, card->balance_minor,
                         card->uses_left);
    r.live = card->state == CL_CARDSTATE_ACTIVE;
    r.uses = proj_kind_is_value(kind) ? 0 : card->uses_left;
    return r;
}

static int
s_liab_delta(pcache_t *c, uint32_t ix, contrib_t before, contrib_t after)
{
    if (before.value == after.value && before.live == after.live && before.uses == after.uses)
        return 0;
    proj_key_t k = s_key_ix(ix);
    bal_liab_t *l = pcache_put(c, T_LIABILITY, k.b, k.n, sizeof(bal_liab_t), NULL);
    if (l == NULL)
        return PROJ_ENOMEM;
    if (!proj_add(&l->outstanding_minor, after.value) ||
        !proj_add(&l->outstanding_minor, -before.value))
        return PROJ_EOVERFLOW;
    l->live_cards = l->live_cards + after.live - before.live;
    l->uses_outstanding = l->uses_outstanding + after.uses - before.uses;
    return 0;
}

/* Appends an event sequence to a card's history. */
static int
s_hist(pcache_t *c, bal_card_t *card, uint64_t seq)
{
    uint32_t n = card->hist_count;
    if (n < BAL_HIST_INLINE) {
        card->hist[n] = seq;
    } else {
        uint32_t i = n - BAL_HIST_INLINE;
        proj_key_t k = s_key_sub(card->card_id, i / BAL_CHUNK_SEQS);
        size_t pos = i % BAL_CHUNK_SEQS;
        uint8_t *chunk = pcache_put(c, T_HISTORY, k.b, k.n, 8 * (pos + 1), NULL);
        if (chunk == NULL)
            return PROJ_ENOMEM;
        cl_put_be64(chunk + 8 * pos, seq);
    }
    card->hist_count = n + 1;
    return 0;
}

/* A card event: the card (mutable, with its program), liability before; after the caller
 * changed it, s_card_done() books the liability change and the history entry. */
typedef struct card_op {
    bal_card_t *card;
    const bal_prog_t *prog;
    contrib_t before;
} card_op_t;

static int
s_card_begin(pcache_t *c, uint64_t card_id, card_op_t *op)
{
    op->card = s_card_mut(c, card_id);
    if (op->card == NULL)
        return pcache_error(c) != 0 ? pcache_error(c) : PROJ_EMISMATCH;
    op->prog = s_prog(c, op->card->prog_ix);
    if (op->prog == NULL)
        return PROJ_EMISMATCH;
    op->before = s_contrib(op->card, (cl_kind_t)op->prog->kind);
    return 0;
}

static int
s_card_done(pcache_t *c, card_op_t *op, uint64_t seq)
{
    contrib_t after = s_contrib(op->card, (cl_kind_t)op->prog->kind);
    int rc = s_liab_delta(c, op->card->prog_ix, op->before, after);
    if (rc == 0)
        rc = s_hist(c, op->card, seq);
    return rc;
}

static int
s_wallet(pcache_t *c, const bal_card_t *card, const bal_prog_t *prog, bool add)
{
    if (card->holder[0] == '\0')
        return 0;
    proj_key_t k = s_key_wallet(prog->merchant_id, card->holder, card->card_id);
    if (!add) {
        pcache_del(c, T_WALLET, k.b, k.n);
        return pcache_error(c);
    }
    /* A card has one holder at a time: this holder's key for it cannot be stored already. */
    return pcache_insert(c, T_WALLET, k.b, k.n, 0) != NULL ? 0 : PROJ_ENOMEM;
}

/* ---- The fold ----------------------------------------------------------------------------- */

static int
s_program_defined(pcache_t *c, const cl_event_t *ev)
{
    const cl_program_spec_t *spec = &ev->u.program;
    proj_key_t k = s_key_program(spec->merchant_id, spec->program_id);
    bool exists = pcache_get(c, T_PROGRAMS, k.b, k.n, NULL) != NULL;
    if (ev->type == CL_EV_PROGRAM_UPDATED)
        return exists ? 0 : PROJ_EMISMATCH; /* kind and currency never change */
    if (exists || spec->program_id[0] == '\0')
        return PROJ_EMISMATCH;
    static const char counter[] = "programs";
    uint32_t *count = pcache_put(c, T_COUNTERS, counter, sizeof(counter) - 1, 4, NULL);
    if (count == NULL)
        return PROJ_ENOMEM;
    uint32_t ix = ++*count;
    uint32_t *slot = pcache_put(c, T_PROGRAMS, k.b, k.n, 4, NULL);
    proj_key_t ik = s_key_ix(ix);
    bal_prog_t *p = pcache_put(c, T_PROGS, ik.b, ik.n, sizeof(bal_prog_t), NULL);
    if (slot == NULL || p == NULL)
        return PROJ_ENOMEM;
    *slot = ix;
    p->ix = ix;
    p->kind = (uint32_t)spec->kind;
    PROJ_COPY(p->currency, spec->currency);
    PROJ_COPY(p->merchant_id, spec->merchant_id);
    PROJ_COPY(p->program_id, spec->program_id);
    return 0;
}

static int
s_issued(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_card_issued_t *e = &ev->u.card_issued;
    proj_key_t pk = s_key_program(e->merchant_id, e->program_id);
    size_t len;
    const uint32_t *ixp = pcache_get(c, T_PROGRAMS, pk.b, pk.n, &len);
    if (ixp == NULL || len != 4)
        return PROJ_EMISMATCH;
    uint32_t ix = *ixp;
    const bal_prog_t *prog = s_prog(c, ix);
    if (prog == NULL || e->face_value_minor < 0)
        return PROJ_EMISMATCH;
    proj_key_t k = proj_key_of_u64(e->card_id);
    bool created;
    bal_card_t *card = pcache_put(c, T_CARDS, k.b, k.n, sizeof(bal_card_t), &created);
    if (card == NULL)
        return PROJ_ENOMEM;
    if (!created)
        return PROJ_EMISMATCH;
    cl_kind_t kind = (cl_kind_t)prog->kind;
    card->card_id = e->card_id;
    card->balance_minor = proj_kind_is_value(kind) ? e->face_value_minor : 0;
    card->face_value_minor = e->face_value_minor;
    card->issued_at_us = ev->at_us;
    card->valid_from_us = e->valid_from_us;
    card->expires_at_us = e->expires_at_us;
    card->prog_ix = ix;
    card->uses_left = e->uses;
    card->uses_total = e->uses;
    card->state = CL_CARDSTATE_ACTIVE;
    card->has_pin = e->has_pin;
    size_t code_len = strlen(e->code);
    card->code_len = (uint8_t)code_len;
    PROJ_COPY(card->code_tail, code_len > 4 ? e->code + code_len - 4 : e->code);
    PROJ_COPY(card->holder, e->holder);

    /* The ledger never issues a code twice. An export carries the code's hash, its code being
     * masked. */
    proj_key_t ck = e->has_code_hash ? s_key_code_hash(e->code_hash) : s_key_code(e->code);
    uint8_t *id = pcache_insert(c, T_CODES, ck.b, ck.n, 8);
    if (id == NULL)
        return PROJ_ENOMEM;
    proj_key_t idk = proj_key_of_u64(e->card_id);
    memcpy(id, idk.b, 8);

    contrib_t none = { 0, 0, 0 };
    int rc = s_wallet(c, card, prog, true);
    if (rc == 0)
        rc = s_liab_delta(c, ix, none, s_contrib(card, kind));
    if (rc == 0)
        rc = s_hist(c, card, ev->seq);
    return rc;
}

static int
s_gift(pcache_t *c, const cl_event_t *ev)
{
    card_op_t op;
    uint64_t card_id =
        ev->type == CL_EV_GIFT_OFFERED ? ev->u.gift_offered.card_id : ev->u.gift_closed.card_id;
    int rc = s_card_begin(c, card_id, &op);
    if (rc != 0)
        return rc;
    bal_card_t *card = op.card;
    switch (ev->type) {
    case CL_EV_GIFT_OFFERED:
        card->open_offer_id = ev->u.gift_offered.offer_id;
        if (card->has_pin)
            card->pin_failures = 0;
        break;
    case CL_EV_GIFT_CLAIMED: {
        const cl_ev_gift_closed_t *e = &ev->u.gift_closed;
        if (e->new_holder[0] == '\0')
            return PROJ_EMISMATCH;
        rc = s_wallet(c, card, op.prog, false);
        bal_claim_t claim;
        memset(&claim, 0, sizeof(claim));
        claim.at_us = ev->at_us;
        claim.seq = ev->seq;
        PROJ_COPY(claim.previous_holder, card->holder);
        PROJ_COPY(claim.new_holder, e->new_holder);
        PROJ_COPY(card->holder, e->new_holder);
        card->transfers_done++;
        card->open_offer_id = 0;
        card->chain_count++;
        proj_key_t k = s_key_sub(card_id, card->chain_count);
        bal_claim_t *slot = pcache_insert(c, T_CHAIN, k.b, k.n, sizeof(claim));
        if (slot == NULL)
            return PROJ_ENOMEM;
        memcpy(slot, &claim, sizeof(claim));
        if (rc == 0)
            rc = s_wallet(c, card, op.prog, true);
        if (rc != 0)
            return rc;
        break;
    }
    default: /* recalled, returned */
        card->open_offer_id = 0;
        break;
    }
    return s_card_done(c, &op, ev->seq);
}

static int
s_value_event(pcache_t *c, const cl_event_t *ev)
{
    card_op_t op;
    int rc;
    switch (ev->type) {
    case CL_EV_CARD_REDEEMED: {
        const cl_ev_card_redeemed_t *e = &ev->u.card_redeemed;
        if ((rc = s_card_begin(c, e->card_id, &op)) != 0)
            return rc;
        if (e->balance_after_minor < 0 || !proj_add(&op.card->redeemed_minor, e->amount_minor))
            return PROJ_EMISMATCH;
        op.card->balance_minor = e->balance_after_minor;
        op.card->uses_left = e->uses_after;
        if (op.card->has_pin)
            op.card->pin_failures = 0;
        if (proj_kind_is_voucher((cl_kind_t)op.prog->kind) && e->uses_after == 0)
            op.card->state = CL_CARDSTATE_EXHAUSTED;
        break;
    }
    case CL_EV_REDEMPTION_REVERSED: {
        const cl_ev_redemption_reversed_t *e = &ev->u.redemption_reversed;
        if ((rc = s_card_begin(c, e->card_id, &op)) != 0)
            return rc;
        if (e->balance_after_minor < 0 || !proj_add(&op.card->redeemed_minor, -e->amount_minor))
            return PROJ_EMISMATCH;
        op.card->balance_minor = e->balance_after_minor;
        op.card->uses_left = e->uses_after;
        if (op.card->state == CL_CARDSTATE_EXHAUSTED && e->uses_after > 0)
            op.card->state = CL_CARDSTATE_ACTIVE;
        break;
    }
    case CL_EV_CARD_RELOADED:
        if ((rc = s_card_begin(c, ev->u.card_reloaded.card_id, &op)) != 0)
            return rc;
        op.card->balance_minor = ev->u.card_reloaded.balance_after_minor;
        break;
    case CL_EV_CARD_ADJUSTED:
        if ((rc = s_card_begin(c, ev->u.card_adjusted.card_id, &op)) != 0)
            return rc;
        op.card->balance_minor = ev->u.card_adjusted.balance_after_minor;
        op.card->uses_left = ev->u.card_adjusted.uses_after;
        break;
    default: { /* CL_EV_BALANCE_TRANSFERRED: two cards */
        const cl_ev_balance_transferred_t *e = &ev->u.balance_transferred;
        if (e->from_card_id == e->to_card_id)
            return PROJ_EMISMATCH;
        if ((rc = s_card_begin(c, e->from_card_id, &op)) != 0)
            return rc;
        op.card->balance_minor = e->from_balance_after_minor;
        if (op.card->has_pin)
            op.card->pin_failures = 0;
        if ((rc = s_card_done(c, &op, ev->seq)) != 0)
            return rc;
        if ((rc = s_card_begin(c, e->to_card_id, &op)) != 0)
            return rc;
        op.card->balance_minor = e->to_balance_after_minor;
        break;
    }
    }
    if (op.card->balance_minor < 0)
        return PROJ_EMISMATCH;
    return s_card_done(c, &op, ev->seq);
}

static int
s_flag_event(pcache_t *c, const cl_event_t *ev)
{
    /* Only the flag events come here (s_apply dispatches them), each with its card. */
    uint64_t card_id = cl_event_card_id(ev);
    card_op_t op;
    int rc = s_card_begin(c, card_id, &op);
    if (rc != 0)
        return rc;
    bal_card_t *card = op.card;
    switch (ev->type) {
    case CL_EV_CARD_FROZEN:
        card->frozen = 1;
        break;
    case CL_EV_CARD_UNFROZEN:
        card->frozen = 0;
        break;
    case CL_EV_CARD_UNLOCKED:
        card->locked = 0;
        card->pin_failures = 0;
        break;
    case CL_EV_PIN_REJECTED:
        card->pin_failures = ev->u.pin.failures_in_row;
        break;
    case CL_EV_CARD_LOCKED:
        card->locked = 1;
        card->pin_failures = ev->u.pin.failures_in_row;
        break;
    case CL_EV_CARD_EXPIRED:
        card->state = CL_CARDSTATE_EXPIRED;
        break;
    default: /* reminded */
        card->reminded = 1;
        break;
    }
    return s_card_done(c, &op, ev->seq);
}

static int
s_apply(pcache_t *c, const cl_event_t *ev)
{
    switch (ev->type) {
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        return s_program_defined(c, ev);
    case CL_EV_CARD_ISSUED:
        return s_issued(c, ev);
    case CL_EV_GIFT_OFFERED:
    case CL_EV_GIFT_CLAIMED:
    case CL_EV_GIFT_RECALLED:
    case CL_EV_GIFT_RETURNED:
        return s_gift(c, ev);
    case CL_EV_CARD_REDEEMED:
    case CL_EV_REDEMPTION_REVERSED:
    case CL_EV_CARD_RELOADED:
    case CL_EV_CARD_ADJUSTED:
    case CL_EV_BALANCE_TRANSFERRED:
        return s_value_event(c, ev);
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
    case CL_EV_CARD_EXPIRED:
    case CL_EV_EXPIRY_REMINDED:
        return s_flag_event(c, ev);
    default:
        /* Merchants, stores, closed programs, batches, the clock: nothing a card view shows. */
        return 0;
    }
}

/* ---- Queries ------------------------------------------------------------------------------ */

static int
s_get(MDB_txn *txn, pstore_t *s, int t, const proj_key_t *k, MDB_val *out)
{
    MDB_val key = { k->n, (void *)(uintptr_t)k->b };
    int rc = mdb_get(txn, pstore_dbi(s, (size_t)t), &key, out);
    return rc == MDB_NOTFOUND ? PROJ_ENOTFOUND : rc;
}

static int
s_read_card(MDB_txn *txn, pstore_t *s, uint64_t card_id, bal_card_t *out)
{
    proj_key_t k = proj_key_of_u64(card_id);
    MDB_val v;
    int rc = s_get(txn, s, T_CARDS, &k, &v);
    if (rc != 0)
        return rc;
    if (v.mv_size != sizeof(*out))
        return PROJ_ECORRUPT;
    memcpy(out, v.mv_data, sizeof(*out));
    return 0;
}

static int
s_read_prog(MDB_txn *txn, pstore_t *s, uint32_t ix, bal_prog_t *out)
{
    proj_key_t k = s_key_ix(ix);
    MDB_val v;
    int rc = s_get(txn, s, T_PROGS, &k, &v);
    if (rc != 0)
        return rc == PROJ_ENOTFOUND ? PROJ_ECORRUPT : rc;
    if (v.mv_size != sizeof(*out))
        return PROJ_ECORRUPT;
    memcpy(out, v.mv_data, sizeof(*out));
    return 0;
}

static int
s_resolve(MDB_txn *txn, pstore_t *s, const cl_card_ref_t *ref, uint64_t *out_id)
{
    if (ref->card_id != 0) {
        *out_id = ref->card_id;
        return 0;
    }
    if (ref->code[0] == '\0')
        return PROJ_ENOTFOUND;
    proj_key_t k = s_key_code(ref->code);
    MDB_val v;
    int rc = s_get(txn, s, T_CODES, &k, &v);
    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return PROJ_ECORRUPT;
    *out_id = proj_get_u64(v.mv_data);
    return 0;
}

static int
s_view(MDB_txn *txn, pstore_t *s, const bal_card_t *card, cl_card_view_t *out)
{
    bal_prog_t prog;
    int rc = s_read_prog(txn, s, card->prog_ix, &prog);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->card_id = card->card_id;
    /* A code of code_len bytes ending in code_tail masks exactly as the code itself. */
    char code[CL_CODE_MAX + 1];
    size_t tail = strnlen(card->code_tail, 4);
    size_t len = card->code_len < tail ? tail : card->code_len;
    if (len > CL_CODE_MAX)
        len = CL_CODE_MAX;
    memset(code, '0', len - tail);
    memcpy(code + (len - tail), card->code_tail, tail);
    code[len] = '\0';
    cl_code_mask(code, out->code_masked, sizeof(out->code_masked));
    PROJ_COPY(out->merchant_id, prog.merchant_id);
    PROJ_COPY(out->program_id, prog.program_id);
    out->kind = (cl_kind_t)prog.kind;
    PROJ_COPY(out->currency, prog.currency);
    out->state = (cl_card_state_t)card->state;
    out->frozen = card->frozen != 0;
    out->locked = card->locked != 0;
    out->balance_minor = card->balance_minor;
    out->uses_left = card->uses_left;
    out->face_value_minor = card->face_value_minor;
    out->issued_at_us = card->issued_at_us;
    out->valid_from_us = card->valid_from_us;
    out->expires_at_us = card->expires_at_us;
    PROJ_COPY(out->holder, card->holder);
    out->pin_failures = card->pin_failures;
    out->open_offer_id = card->open_offer_id;
    out->transfers_done = card->transfers_done;
    out->redeemed_minor = card->redeemed_minor;
    return 0;
}

int
balances_card(pstore_t *s, const cl_card_ref_t *ref, cl_card_view_t *out, uint64_t *out_as_of)
{
    if (s == NULL || ref == NULL || out == NULL || out_as_of == NULL)
        return PROJ_EINVAL;
    MDB_txn *txn;
    uint64_t as_of, card_id = 0;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    bal_card_t card;
    cl_card_view_t view;
    rc = s_resolve(txn, s, ref, &card_id);
    if (rc == 0)
        rc = s_read_card(txn, s, card_id, &card);
    if (rc == 0)
        rc = s_view(txn, s, &card, &view);
    pstore_read_end(&txn);
    if (rc != 0)
        return rc;
    *out = view;
    *out_as_of = as_of;
    return 0;
}

/* The i-th event sequence of a card (0-based), from the record or its chunks. */
static int
s_hist_at(MDB_txn *txn, pstore_t *s, const bal_card_t *card, uint32_t i, MDB_val *chunk,
          uint32_t *chunk_no, uint64_t *out)
{
    if (i < BAL_HIST_INLINE) {
        *out = card->hist[i];
        return 0;
    }
    uint32_t j = i - BAL_HIST_INLINE;
    if (chunk->mv_data == NULL || *chunk_no != j / BAL_CHUNK_SEQS) {
        proj_key_t k = s_key_sub(card->card_id, j / BAL_CHUNK_SEQS);
        int rc = s_get(txn, s, T_HISTORY, &k, chunk);
        if (rc != 0)
            return rc == PROJ_ENOTFOUND ? PROJ_ECORRUPT : rc;
        *chunk_no = j / BAL_CHUNK_SEQS;
    }
    size_t pos = j % BAL_CHUNK_SEQS;
    if (chunk->mv_size < 8 * (pos + 1))
        return PROJ_ECORRUPT;
    *out = proj_get_u64((const uint8_t *)chunk->mv_data + 8 * pos);
    return 0;
}

int
balances_history(pstore_t *s, const cl_card_ref_t *ref, uint32_t limit, balances_history_t *out,
                 uint64_t *out_as_of)
{
    if (s == NULL || ref == NULL || out == NULL || out_as_of == NULL)
        return PROJ_EINVAL;
    if (limit == 0)
        limit = BALANCES_HISTORY_DEFAULT;
    if (limit > BALANCES_HISTORY_MAX)
        limit = BALANCES_HISTORY_MAX;
    MDB_txn *txn;
    uint64_t as_of, card_id = 0;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    bal_card_t card;
    rc = s_resolve(txn, s, ref, &card_id);
    if (rc == 0)
        rc = s_read_card(txn, s, card_id, &card);
    if (rc == 0)
        rc = s_view(txn, s, &card, &out->card);
    if (rc == 0) {
        uint32_t first = card.hist_count > limit ? card.hist_count - limit : 0;
        MDB_val chunk = { 0, NULL };
        uint32_t chunk_no = 0;
        out->seqs_count = 0;
        out->events_total = card.hist_count;
        for (uint32_t i = first; rc == 0 && i < card.hist_count; i++)
            rc = s_hist_at(txn, s, &card, i, &chunk, &chunk_no, &out->seqs[out->seqs_count++]);
    }
    if (rc == 0) {
        /* The chain: the first holder, then one entry per claim. */
        out->holders_count = 0;
        balances_holder_t *h = &out->holders[out->holders_count++];
        memset(h, 0, sizeof(*h));
        h->since_us = card.issued_at_us;
        h->since_seq = card.hist_count > 0 ? card.hist[0] : 0;
        PROJ_COPY(h->holder, card.holder);
        for (uint32_t n = 1; rc == 0 && n <= card.chain_count; n++) {
            proj_key_t k = s_key_sub(card.card_id, n);
            MDB_val v;
            rc = s_get(txn, s, T_CHAIN, &k, &v);
            if (rc == 0 && v.mv_size != sizeof(bal_claim_t))
                rc = PROJ_ECORRUPT;
            if (rc != 0)
                break;
            bal_claim_t claim;
            memcpy(&claim, v.mv_data, sizeof(claim));
            if (n == 1)
                PROJ_COPY(out->holders[0].holder, claim.previous_holder);
            if (out->holders_count == BALANCES_CHAIN_MAX)
                break;
            h = &out->holders[out->holders_count++];
            memset(h, 0, sizeof(*h));
            h->since_us = claim.at_us;
            h->since_seq = claim.seq;
            PROJ_COPY(h->holder, claim.new_holder);
        }
        if (rc == PROJ_ENOTFOUND)
            rc = PROJ_ECORRUPT;
    }
    pstore_read_end(&txn);
    if (rc != 0)
        return rc;
    *out_as_of = as_of;
    return 0;
}

int
balances_wallet(pstore_t *s, const char *merchant_id, const char *holder, cl_card_view_t *out,
                size_t cap, size_t *out_n, bool *out_more, uint64_t *out_as_of)
{
    if (s == NULL || merchant_id == NULL || holder == NULL || out == NULL || out_n == NULL ||
        out_more == NULL || out_as_of == NULL || holder[0] == '\0')
        return PROJ_EINVAL;
    MDB_txn *txn;
    uint64_t as_of;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    proj_key_t prefix;
    proj_key_start(&prefix);
    proj_key_str(&prefix, merchant_id);
    proj_key_str(&prefix, holder);
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, pstore_dbi(s, T_WALLET), &cur);
    size_t n = 0;
    bool more = false;
    if (rc == 0) {
        MDB_val k = { prefix.n, prefix.b }, v;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != prefix.n + 8 || memcmp(k.mv_data, prefix.b, prefix.n) != 0)
                break;
            if (n == cap) {
                more = true;
                break;
            }
            bal_card_t card;
            rc = s_read_card(txn, s, proj_get_u64((const uint8_t *)k.mv_data + prefix.n), &card);
            if (rc == 0)
                rc = s_view(txn, s, &card, &out[n]);
            if (rc != 0)
                break;
            n++;
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        if (rc == PROJ_ENOTFOUND)
            rc = PROJ_ECORRUPT;
        mdb_cursor_close(cur);
    }
    pstore_read_end(&txn);
    if (rc != 0)
        return rc;
    *out_n = n;
    *out_more = more;
    *out_as_of = as_of;
    return 0;
}

/* Adds one program's row to the per-currency totals at the end of out. */
static void
s_total(balances_liability_t *out, size_t first_total, size_t *n, size_t cap,
        const balances_liability_t *row)
{
    for (size_t i = first_total; i < *n; i++) {
        if (strcmp(out[i].currency, row->currency) == 0) {
            proj_add(&out[i].outstanding_minor, row->outstanding_minor);
            out[i].live_cards += row->live_cards;
            out[i].uses_outstanding += row->uses_outstanding;
            return;
        }
    }
    if (*n == cap)
        return;
    balances_liability_t *t = &out[(*n)++];
    *t = *row;
    t->program_id[0] = '\0';
}

int
balances_liability(pstore_t *s, const char *merchant_id, const char *program_id,
                   balances_liability_t *out, size_t cap, size_t *out_n, uint64_t *out_as_of)
{
    if (s == NULL || merchant_id == NULL || out == NULL || out_n == NULL || out_as_of == NULL ||
        cap == 0)
        return PROJ_EINVAL;
    MDB_txn *txn;
    uint64_t as_of;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    proj_key_t prefix;
    proj_key_start(&prefix);
    proj_key_str(&prefix, merchant_id);
    bool one = program_id != NULL && program_id[0] != '\0';
    if (one)
        proj_key_str(&prefix, program_id);
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, pstore_dbi(s, T_PROGRAMS), &cur);
    size_t n = 0;
    /* Program rows first; the totals go after them, so count programs to know where. */
    balances_liability_t *rows = NULL;
    if (rc == 0) {
        rows = malloc(BALANCES_LIABILITY_MAX * sizeof(*rows));
        if (rows == NULL) {
            mdb_cursor_close(cur);
            rc = PROJ_ENOMEM;
        }
    }
    if (rc == 0) {
        MDB_val k = { prefix.n, prefix.b }, v;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size < prefix.n || memcmp(k.mv_data, prefix.b, prefix.n) != 0)
                break;
            if (v.mv_size != 4 || n == BALANCES_LIABILITY_MAX)
                break;
            uint32_t ix;
            memcpy(&ix, v.mv_data, 4);
            bal_prog_t prog;
            rc = s_read_prog(txn, s, ix, &prog);
            if (rc != 0)
                break;
            balances_liability_t *r = &rows[n++];
            memset(r, 0, sizeof(*r));
            PROJ_COPY(r->merchant_id, prog.merchant_id);
            PROJ_COPY(r->program_id, prog.program_id);
            PROJ_COPY(r->currency, prog.currency);
            proj_key_t lk = s_key_ix(ix);
            MDB_val lv;
            int lrc = s_get(txn, s, T_LIABILITY, &lk, &lv);
            if (lrc == 0 && lv.mv_size == sizeof(bal_liab_t)) {
                bal_liab_t l;
                memcpy(&l, lv.mv_data, sizeof(l));
                r->outstanding_minor = l.outstanding_minor;
                r->live_cards = l.live_cards;
                r->uses_outstanding = l.uses_outstanding;
            } else if (lrc != PROJ_ENOTFOUND) {
                rc = lrc == 0 ? PROJ_ECORRUPT : lrc;
                break;
            }
            if (one)
                break;
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        mdb_cursor_close(cur);
    }
    pstore_read_end(&txn);
    if (rc == 0 && one && n == 0)
        rc = PROJ_ENOTFOUND;
    if (rc != 0) {
        free(rows);
        return rc;
    }
    size_t m = 0;
    for (size_t i = 0; i < n && m < cap; i++)
        out[m++] = rows[i];
    if (!one) {
        size_t first_total = m;
        for (size_t i = 0; i < n; i++)
            s_total(out, first_total, &m, cap, &rows[i]);
    }
    free(rows);
    *out_n = m;
    *out_as_of = as_of;
    return 0;
}
