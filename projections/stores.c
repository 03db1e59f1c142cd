/*
 * stores.c: the store redemptions projection, fold and queries (see stores.h).
 *
 * Tables (integers in keys big-endian, times and days biased so byte order is numeric order):
 *   programs  merchant\0program\0                        -> st_prog_t
 *   cards     card_id                                    -> st_card_t
 *   lines     merchant\0store\0at_us seq                 -> st_line_t (one per redemption)
 *   byseq     seq                                        -> the redemption's lines key
 *   days      merchant\0store\0day                       -> st_day_t
 *   settle    merchant\0day sold\0redeemed_store\0       -> st_cell_t
 * A redemption's line is keyed by time then sequence, so a range of time is a range of keys;
 * byseq finds the line again when a reversal names the redemption by its sequence.
 */
#include "stores.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "pcache.h"
#include "pstore.h"

enum { T_PROGRAMS, T_CARDS, T_LINES, T_BYSEQ, T_DAYS, T_SETTLE, T_COUNT };

#define S_LINE_KEY_MAX (2 * (CL_ID_MAX + 1) + 16)

typedef struct st_prog {
    uint32_t kind;
    uint32_t pad;
} st_prog_t;

typedef struct st_card {
    int64_t face_value_minor;
    uint32_t uses_total;
    uint32_t kind;
    char merchant_id[CL_ID_MAX + 1];
    char sold[STORES_SOLD_KEY_MAX + 1]; /* the selling store or "region:<code>" */
    char code_tail[8];
    uint8_t code_len;
    uint8_t pad[4];
} st_card_t;
_Static_assert(sizeof(st_card_t) == 96, "st_card_t has no padding holes");

typedef struct st_line {
    uint64_t seq;
    int64_t at_us;
    uint64_t card_id;
    int64_t value_minor;
    int64_t discount_minor;
    int64_t reversed_minor;
    uint32_t uses;
    uint32_t reversed_uses;
    char order_ref[CL_ORDER_REF_MAX + 1];
    char code_tail[8];
    uint8_t code_len;
    uint8_t pad[6];
} st_line_t;
_Static_assert(sizeof(st_line_t) == 136, "st_line_t has no padding holes");

typedef struct st_day {
    uint64_t redemptions;
    int64_t redeemed_minor;
    uint64_t uses_redeemed;
    uint64_t reversals;
    int64_t reversed_minor;
    uint64_t uses_reversed;
    int64_t discount_minor;
} st_day_t;

typedef struct st_cell {
    uint64_t redemptions;
    int64_t value_minor; /* net of reversals */
} st_cell_t;

static const proj_table_def_t s_tables[T_COUNT] = {
    [T_PROGRAMS] = { "programs", 2 * (CL_ID_MAX + 1), sizeof(st_prog_t), false },
    [T_CARDS] = { "cards", 8, sizeof(st_card_t), false },
    [T_LINES] = { "lines", S_LINE_KEY_MAX, sizeof(st_line_t), true },
    [T_BYSEQ] = { "byseq", 8, S_LINE_KEY_MAX, true },
    [T_DAYS] = { "days", 2 * (CL_ID_MAX + 1) + 4, sizeof(st_day_t), false },
    [T_SETTLE] = { "settle", CL_ID_MAX + 1 + 4 + STORES_SOLD_KEY_MAX + 1 + CL_ID_MAX + 1,
                   sizeof(st_cell_t), false },
};

static int s_apply(pcache_t *c, const cl_event_t *ev);
static void s_prefetch(const pcache_t *c, const cl_event_t *ev, int stage);

const proj_def_t stores_def = {
    .name = "stores",
    .schema_version = STORES_SCHEMA_VERSION,
    .tables = s_tables,
    .tables_count = T_COUNT,
    .apply = s_apply,
    .prefetch = s_prefetch,
};

static proj_key_t s_key_line(const char *merchant_id, const char *store_id, int64_t at_us,
                             uint64_t seq);

/* The card record is the one random lookup of nearly every event: start fetching it early. A
 * redemption also inserts two records under new keys; their index entries are all there is to
 * fetch, one from the event itself, the other once its card is in cache (stage 2). */
static void
s_prefetch(const pcache_t *c, const cl_event_t *ev, int stage)
{
    proj_prefetch_card(c, T_CARDS, ev, stage);
    if (ev->type != CL_EV_CARD_REDEEMED)
        return;
    if (stage == 0) {
        proj_key_t sk = proj_key_of_u64(ev->seq);
        pcache_prefetch(c, T_BYSEQ, sk.b, sk.n, 0);
    } else if (stage == 2) {
        const cl_ev_card_redeemed_t *e = &ev->u.card_redeemed;
        proj_key_t k = proj_key_of_u64(e->card_id);
        size_t len;
        const st_card_t *card = pcache_peek(c, T_CARDS, k.b, k.n, &len);
        if (card == NULL || len != sizeof(*card) || e->store_id[0] == '\0')
            return;
        proj_key_t lk = s_key_line(card->merchant_id, e->store_id, ev->at_us, ev->seq);
        pcache_prefetch(c, T_LINES, lk.b, lk.n, 0);
    }
}

/* ---- Keys --------------------------------------------------------------------------------- */

static proj_key_t
s_key_line(const char *merchant_id, const char *store_id, int64_t at_us, uint64_t seq)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, merchant_id);
    proj_key_str(&k, store_id);
    proj_key_i64(&k, at_us);
    proj_key_u64(&k, seq);
    return k;
}

static proj_key_t
s_key_day(const char *merchant_id, const char *store_id, int32_t day)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, merchant_id);
    proj_key_str(&k, store_id);
    proj_key_i32(&k, day);
    return k;
}

static proj_key_t
s_key_settle(const char *merchant_id, int32_t day, const char *sold, const char *store_id)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, merchant_id);
    proj_key_i32(&k, day);
    proj_key_str(&k, sold);
    proj_key_str(&k, store_id);
    return k;
}

/* ---- Fold --------------------------------------------------------------------------------- */

static const st_card_t *
s_card(pcache_t *c, uint64_t card_id)
{
    proj_key_t k = proj_key_of_u64(card_id);
    size_t len;
    const st_card_t *card = pcache_get(c, T_CARDS, k.b, k.n, &len);
    return card != NULL && len == sizeof(*card) ? card : NULL;
}

static int
s_program(pcache_t *c, const cl_event_t *ev)
{
    const cl_program_spec_t *spec = &ev->u.program;
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, spec->merchant_id);
    proj_key_str(&k, spec->program_id);
    if (ev->type == CL_EV_PROGRAM_UPDATED)
        return pcache_get(c, T_PROGRAMS, k.b, k.n, NULL) != NULL ? 0 : PROJ_EMISMATCH;
    bool created;
    st_prog_t *p = pcache_put(c, T_PROGRAMS, k.b, k.n, sizeof(*p), &created);
    if (p == NULL)
        return PROJ_ENOMEM;
    if (!created)
        return PROJ_EMISMATCH;
    p->kind = (uint32_t)spec->kind;
    return 0;
}

static int
s_issued(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_card_issued_t *e = &ev->u.card_issued;
    proj_key_t pk;
    proj_key_start(&pk);
    proj_key_str(&pk, e->merchant_id);
    proj_key_str(&pk, e->program_id);
    size_t len;
    const st_prog_t *prog = pcache_get(c, T_PROGRAMS, pk.b, pk.n, &len);
    if (prog == NULL || len != sizeof(*prog))
        return PROJ_EMISMATCH;
    uint32_t kind = prog->kind;
    proj_key_t k = proj_key_of_u64(e->card_id);
    bool created;
    st_card_t *card = pcache_put(c, T_CARDS, k.b, k.n, sizeof(*card), &created);
    if (card == NULL)
        return PROJ_ENOMEM;
    if (!created)
        return PROJ_EMISMATCH;
    card->face_value_minor = e->face_value_minor;
    card->uses_total = e->uses;
    card->kind = kind;
    PROJ_COPY(card->merchant_id, e->merchant_id);
    if (e->store_id[0] != '\0') {
        PROJ_COPY(card->sold, e->store_id);
    } else {
        PROJ_COPY_REGION_PLACE(card->sold, e->region);
    }
    size_t code_len = strlen(e->code);
    card->code_len = (uint8_t)code_len;
    PROJ_COPY(card->code_tail, code_len > 4 ? e->code + code_len - 4 : e->code);
    return 0;
}

/* The value `uses` uses take from a card left with uses_after (punch cards, vouchers). */
static int64_t
s_uses_value(const st_card_t *card, uint32_t uses_low, uint32_t uses_high)
{
    cl_kind_t kind = (cl_kind_t)card->kind;
    return proj_value(kind, card->face_value_minor, card->uses_total, 0, uses_high) -
           proj_value(kind, card->face_value_minor, card->uses_total, 0, uses_low);
}

static int
s_redeemed(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_card_redeemed_t *e = &ev->u.card_redeemed;
    const st_card_t *card = s_card(c, e->card_id);
    if (card == NULL || e->store_id[0] == '\0' || e->amount_minor < 0)
        return pcache_error(c) != 0 ? pcache_error(c) : PROJ_EMISMATCH;
    bool value_kind = proj_kind_is_value((cl_kind_t)card->kind);
    int64_t value =
        value_kind ? e->amount_minor : s_uses_value(card, e->uses_after, e->uses_after + e->uses);
    int64_t discount = proj_kind_is_voucher((cl_kind_t)card->kind) ? e->amount_minor : 0;

    /* Both keys hold this event's own sequence: they cannot be stored already. */
    proj_key_t lk = s_key_line(card->merchant_id, e->store_id, ev->at_us, ev->seq);
    st_line_t *line = pcache_insert(c, T_LINES, lk.b, lk.n, sizeof(*line));
    if (line == NULL)
        return PROJ_ENOMEM;
    line->seq = ev->seq;
    line->at_us = ev->at_us;
    line->card_id = e->card_id;
    line->value_minor = value;
    line->discount_minor = discount;
    line->uses = e->uses;
    PROJ_COPY(line->order_ref, e->order_ref);
    memcpy(line->code_tail, card->code_tail, sizeof(line->code_tail));
    line->code_len = card->code_len;

    proj_key_t sk = proj_key_of_u64(ev->seq);
    uint8_t *back = pcache_insert(c, T_BYSEQ, sk.b, sk.n, lk.n);
    if (back == NULL)
        return PROJ_ENOMEM;
    memcpy(back, lk.b, lk.n);

    proj_key_t dk = s_key_day(card->merchant_id, e->store_id, proj_day(ev->at_us));
    st_day_t *day = pcache_put(c, T_DAYS, dk.b, dk.n, sizeof(*day), NULL);
    proj_key_t ck = s_key_settle(card->merchant_id, proj_day(ev->at_us), card->sold, e->store_id);
    st_cell_t *cell = pcache_put(c, T_SETTLE, ck.b, ck.n, sizeof(*cell), NULL);
    if (day == NULL || cell == NULL)
        return PROJ_ENOMEM;
    day->redemptions++;
    day->uses_redeemed += e->uses;
    cell->redemptions++;
    if (!proj_add(&day->redeemed_minor, value) || !proj_add(&day->discount_minor, discount) ||
        !proj_add(&cell->value_minor, value))
        return PROJ_EOVERFLOW;
    return 0;
}

static int
s_reversed(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_redemption_reversed_t *e = &ev->u.redemption_reversed;
    const st_card_t *card = s_card(c, e->card_id);
    proj_key_t sk = proj_key_of_u64(e->redemption_seq);
    size_t klen;
    const uint8_t *lkb = pcache_get(c, T_BYSEQ, sk.b, sk.n, &klen);
    if (card == NULL || lkb == NULL || e->uses > e->uses_after)
        return pcache_error(c) != 0 ? pcache_error(c) : PROJ_EMISMATCH;
    proj_key_t lk = { .n = klen };
    memcpy(lk.b, lkb, klen);
    st_line_t *line = pcache_put(c, T_LINES, lk.b, lk.n, sizeof(*line), NULL);
    if (line == NULL || line->seq != e->redemption_seq || line->card_id != e->card_id)
        return pcache_error(c) != 0 ? pcache_error(c) : PROJ_EMISMATCH;
    bool value_kind = proj_kind_is_value((cl_kind_t)card->kind);
    int64_t value =
        value_kind ? e->amount_minor : s_uses_value(card, e->uses_after - e->uses, e->uses_after);
    if (!proj_add(&line->reversed_minor, value))
        return PROJ_EOVERFLOW;
    line->reversed_uses += e->uses;

    /* The redeeming store is the first string of the line key after the merchant. */
    const char *merchant = (const char *)lk.b;
    const char *redeemed_store = merchant + strlen(merchant) + 1;
    const char *store = e->store_id[0] != '\0' ? e->store_id : redeemed_store;
    proj_key_t dk = s_key_day(card->merchant_id, store, proj_day(ev->at_us));
    st_day_t *day = pcache_put(c, T_DAYS, dk.b, dk.n, sizeof(*day), NULL);
    proj_key_t ck =
        s_key_settle(card->merchant_id, proj_day(ev->at_us), card->sold, redeemed_store);
    st_cell_t *cell = pcache_put(c, T_SETTLE, ck.b, ck.n, sizeof(*cell), NULL);
    if (day == NULL || cell == NULL)
        return PROJ_ENOMEM;
    day->reversals++;
    day->uses_reversed += e->uses;
    if (!proj_add(&day->reversed_minor, value) || !proj_add(&cell->value_minor, -value))
        return PROJ_EOVERFLOW;
    return 0;
}

static int
s_apply(pcache_t *c, const cl_event_t *ev)
{
    switch (ev->type) {
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        return s_program(c, ev);
    case CL_EV_CARD_ISSUED:
        return s_issued(c, ev);
    case CL_EV_CARD_REDEEMED:
        return s_redeemed(c, ev);
    case CL_EV_REDEMPTION_REVERSED:
        return s_reversed(c, ev);
    default:
        return 0;
    }
}

/* ---- Queries ------------------------------------------------------------------------------ */

int
stores_day(pstore_t *s, const char *merchant_id, const char *store_id, int64_t day_us,
           stores_day_t *out, uint64_t *out_as_of)
{
    if (s == NULL || merchant_id == NULL || store_id == NULL || out == NULL || out_as_of == NULL)
        return PROJ_EINVAL;
    MDB_txn *txn;
    uint64_t as_of;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    proj_key_t k = s_key_day(merchant_id, store_id, proj_day(day_us));
    MDB_val key = { k.n, k.b }, v;
    st_day_t day;
    memset(&day, 0, sizeof(day));
    rc = mdb_get(txn, pstore_dbi(s, T_DAYS), &key, &v);
    if (rc == 0 && v.mv_size != sizeof(day))
        rc = PROJ_ECORRUPT;
    if (rc == 0)
        memcpy(&day, v.mv_data, sizeof(day));
    else if (rc == MDB_NOTFOUND)
        rc = 0;
    pstore_read_end(&txn);
    if (rc != 0)
        return rc;
    stores_day_t r = {
        .redemptions = day.redemptions,
        .redeemed_minor = day.redeemed_minor,
        .uses_redeemed = day.uses_redeemed,
        .reversals = day.reversals,
        .reversed_minor = day.reversed_minor,
        .uses_reversed = day.uses_reversed,
        .discount_minor = day.discount_minor,
    };
    *out = r;
    *out_as_of = as_of;
    return 0;
}

static void
s_mask(const char *tail, uint8_t code_len, char *out, size_t cap)
{
    char code[CL_CODE_MAX + 1];
    size_t t = strnlen(tail, 4);
    size_t len = code_len < t ? t : code_len;
    if (len > CL_CODE_MAX)
        len = CL_CODE_MAX;
    memset(code, '0', len - t);
    memcpy(code + (len - t), tail, t);
    code[len] = '\0';
    cl_code_mask(code, out, cap);
}

int
stores_redemptions(pstore_t *s, const char *merchant_id, const char *store_id, int64_t from_us,
                   int64_t to_us, uint32_t limit, uint64_t after_seq, stores_line_t *out,
                   size_t cap, size_t *out_n, bool *out_more, uint64_t *out_as_of)
{
    if (s == NULL || merchant_id == NULL || store_id == NULL || out == NULL || out_n == NULL ||
        out_more == NULL || out_as_of == NULL)
        return PROJ_EINVAL;
    size_t max = limit == 0 ? STORES_LINES_DEFAULT : limit;
    if (max > STORES_LINES_MAX)
        max = STORES_LINES_MAX;
    if (max > cap)
        max = cap;
    MDB_txn *txn;
    uint64_t as_of;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    proj_key_t prefix;
    proj_key_start(&prefix);
    proj_key_str(&prefix, merchant_id);
    proj_key_str(&prefix, store_id);
    proj_key_t start = s_key_line(merchant_id, store_id, from_us, 0);
    bool skip_after = false;
    if (after_seq != 0) {
        /* Continue after that redemption when it is one of this store's. */
        proj_key_t sk = proj_key_of_u64(after_seq);
        MDB_val key = { sk.n, sk.b }, v;
        int lrc = mdb_get(txn, pstore_dbi(s, T_BYSEQ), &key, &v);
        if (lrc == 0 && v.mv_size == prefix.n + 16 && memcmp(v.mv_data, prefix.b, prefix.n) == 0 &&
            memcmp(v.mv_data, start.b, start.n) >= 0) {
            start.n = v.mv_size;
            memcpy(start.b, v.mv_data, v.mv_size);
            skip_after = true;
        } else if (lrc != 0 && lrc != MDB_NOTFOUND) {
            rc = lrc;
        }
    }
    MDB_cursor *cur = NULL;
    if (rc == 0)
        rc = mdb_cursor_open(txn, pstore_dbi(s, T_LINES), &cur);
    size_t n = 0;
    bool more = false;
    if (rc == 0) {
        MDB_val k = { start.n, start.b }, v;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != prefix.n + 16 || memcmp(k.mv_data, prefix.b, prefix.n) != 0)
                break;
            int64_t at = proj_get_i64((const uint8_t *)k.mv_data + prefix.n);
            uint64_t seq = proj_get_u64((const uint8_t *)k.mv_data + prefix.n + 8);
            if (to_us != 0 && at >= to_us)
                break;
            if (skip_after && seq == after_seq)
                continue;
            if (n == max) {
                more = true;
                break;
            }
            if (v.mv_size != sizeof(st_line_t)) {
                rc = PROJ_ECORRUPT;
                break;
            }
            st_line_t line;
            memcpy(&line, v.mv_data, sizeof(line));
            stores_line_t *o = &out[n++];
            memset(o, 0, sizeof(*o));
            o->seq = line.seq;
            o->at_us = line.at_us;
            o->card_id = line.card_id;
            s_mask(line.code_tail, line.code_len, o->code_masked, sizeof(o->code_masked));
            PROJ_COPY(o->order_ref, line.order_ref);
            o->amount_minor = line.value_minor;
            o->uses = line.uses;
            o->discount_minor = line.discount_minor;
            o->reversed_minor = line.reversed_minor;
            o->reversed_uses = line.reversed_uses;
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
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

static int
s_cell_cmp(const void *a, const void *b)
{
    const stores_cell_t *x = a, *y = b;
    int r = strcmp(x->sold, y->sold);
    return r != 0 ? r : strcmp(x->redeemed_store_id, y->redeemed_store_id);
}

int
stores_settlement(pstore_t *s, const char *merchant_id, int64_t from_us, int64_t to_us,
                  stores_cell_t *out, size_t cap, size_t *out_n, bool *out_more,
                  uint64_t *out_as_of)
{
    if (s == NULL || merchant_id == NULL || out == NULL || out_n == NULL || out_more == NULL ||
        out_as_of == NULL)
        return PROJ_EINVAL;
    int32_t first, last;
    MDB_txn *txn;
    uint64_t as_of;
    int rc = pstore_query_begin(s, &txn, &as_of);
    if (rc != 0)
        return rc;
    stores_cell_t *cells = NULL;
    size_t count = 0, cells_cap = 0;
    if (proj_day_range(from_us, to_us, &first, &last)) {
        proj_key_t prefix;
        proj_key_start(&prefix);
        proj_key_str(&prefix, merchant_id);
        proj_key_t start = prefix;
        proj_key_i32(&start, first);
        MDB_cursor *cur;
        rc = mdb_cursor_open(txn, pstore_dbi(s, T_SETTLE), &cur);
        if (rc == 0) {
            MDB_val k = { start.n, start.b }, v;
            for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
                 rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
                const uint8_t *kb = k.mv_data;
                if (k.mv_size < prefix.n + 4 || memcmp(kb, prefix.b, prefix.n) != 0 ||
                    proj_get_i32(kb + prefix.n) > last)
                    break;
                const char *sold = (const char *)kb + prefix.n + 4;
                size_t sold_len = strnlen(sold, k.mv_size - prefix.n - 4);
                const char *store = sold + sold_len + 1;
                if (prefix.n + 4 + sold_len + 1 >= k.mv_size || v.mv_size != sizeof(st_cell_t) ||
                    sold_len > STORES_SOLD_KEY_MAX ||
                    strnlen(store, k.mv_size - prefix.n - 4 - sold_len - 1) > CL_ID_MAX) {
                    rc = PROJ_ECORRUPT;
                    break;
                }
                st_cell_t cell;
                memcpy(&cell, v.mv_data, sizeof(cell));
                if (count == cells_cap) {
                    size_t ncap = cells_cap != 0 ? cells_cap * 2 : 64;
                    stores_cell_t *nc = realloc(cells, ncap * sizeof(*nc));
                    if (nc == NULL) {
                        rc = PROJ_ENOMEM;
                        break;
                    }
                    cells = nc;
                    cells_cap = ncap;
                }
                stores_cell_t *o = &cells[count++];
                memset(o, 0, sizeof(*o));
                PROJ_COPY(o->sold, sold);
                PROJ_COPY(o->redeemed_store_id, store);
                o->redemptions = cell.redemptions;
                o->value_minor = cell.value_minor;
            }
            if (rc == MDB_NOTFOUND)
                rc = 0;
            mdb_cursor_close(cur);
        }
    }
    pstore_read_end(&txn);
    if (rc != 0) {
        free(cells);
        return rc;
    }
    if (count > 0)
        qsort(cells, count, sizeof(*cells), s_cell_cmp);
    size_t n = 0;
    bool more = false;
    for (size_t i = 0; i < count; i++) {
        if (n > 0 && s_cell_cmp(&out[n - 1], &cells[i]) == 0) {
            out[n - 1].redemptions += cells[i].redemptions;
            proj_add(&out[n - 1].value_minor, cells[i].value_minor);
            continue;
        }
        if (n == cap) {
            more = true;
            break;
        }
        out[n++] = cells[i];
    }
    free(cells);
    *out_n = n;
    *out_more = more;
    *out_as_of = as_of;
    return 0;
}
