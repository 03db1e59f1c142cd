/*
 * analytics.c: the analytics projection, fold and query (see analytics.h, docs/analytics.md).
 *
 * Tables (integers in keys big-endian, days biased so byte order is numeric order):
 *   programs  merchant\0program\0                           -> an_prog_t (kind, currency)
 *   stores    merchant\0store\0                             -> the store's region
 *   cards     card_id                                       -> an_card_t (the card's dimensions)
 *   cells     merchant\0 set day program\0 value\0         -> an_cell_t (figures, int64 each)
 *   denoms    merchant\0 set day program\0 value\0 face    -> u64 cards issued
 * where set is S_SET_CHANNEL (value: the channel's name), S_SET_REGION (a region code, "-" for
 * none) or S_SET_STORE (a store id, or "region:<code>" for cards sold without a store).
 *
 * A figure is "card-located" when it is booked under the card's selling region and store, and
 * "activity-located" when it is booked where the redemption or reversal happened. Channel
 * cells do not care (the channel is always the card's). The liability change of every event is
 * card-located, so the region and store sets carry the outstanding liability of the cards sold
 * there, while their redemption figures tell what was redeemed there.
 */
#include "analytics.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "pcache.h"
#include "pstore.h"

enum { T_PROGRAMS, T_STORES, T_CARDS, T_CELLS, T_DENOMS, T_COUNT };

enum { S_SET_CHANNEL = 1, S_SET_REGION = 2, S_SET_STORE = 3 };

/* The figures of a cell. */
enum {
    F_ISSUED_COUNT,
    F_ISSUED_FACE,
    F_PRICE_PAID,
    F_RELOADED,
    F_REDEEMED, /* value redeemed, before reversals */
    F_REVERSED, /* value reversed */
    F_REDEMPTIONS,
    F_REVERSALS,
    F_BREAKAGE,
    F_EXPIRED_CARDS,
    F_ADJUSTED,
    F_TRANSFERRED,
    F_CARDS_REDEEMED,
    F_CARDS_GIFTED,
    F_CROSS_REGION,
    F_DISCOUNT,  /* voucher discounts given minus reversed */
    F_LIABILITY, /* the change of outstanding liability (card-located) */
    F_LAG0,
    F_FIGURES = F_LAG0 + ANALYTICS_LAG_BUCKETS
};

typedef struct an_cell {
    int64_t f[F_FIGURES];
} an_cell_t;

typedef struct an_prog {
    uint32_t kind;
    char currency[4];
} an_prog_t;

#define S_PLACE_MAX (CL_ID_MAX + 1) /* a store id or "region:<code>" */

typedef struct an_card {
    int64_t face_value_minor;
    int64_t issued_at_us;
    uint32_t uses_total;
    uint32_t kind;
    uint8_t channel;
    uint8_t redeemed; /* a first redemption was counted */
    uint8_t gifted;   /* a first claim was counted */
    uint8_t pad[5];
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char region[CL_REGION_MAX + 1]; /* the selling region, "-" for none */
    char store[S_PLACE_MAX + 1];    /* the selling store, or "region:<code>" */
    char currency[4];
    uint8_t pad2[7];
} an_card_t;
_Static_assert(sizeof(an_card_t) == 160, "an_card_t has no padding holes");

#define S_CELL_KEY_MAX (CL_ID_MAX + 1 + 1 + 4 + CL_ID_MAX + 1 + S_PLACE_MAX + 1)

static const proj_table_def_t s_tables[T_COUNT] = {
    [T_PROGRAMS] = { "programs", 2 * (CL_ID_MAX + 1), sizeof(an_prog_t), false },
    [T_STORES] = { "stores", 2 * (CL_ID_MAX + 1), 24, false },
    [T_CARDS] = { "cards", 8, sizeof(an_card_t), false },
    [T_CELLS] = { "cells", S_CELL_KEY_MAX, sizeof(an_cell_t), false },
    [T_DENOMS] = { "denoms", S_CELL_KEY_MAX + 8, 8, false },
};

static int s_apply(pcache_t *c, const cl_event_t *ev);
static void s_prefetch(const pcache_t *c, const cl_event_t *ev, int stage);

const proj_def_t analytics_def = {
    .name = "analytics",
    .schema_version = ANALYTICS_SCHEMA_VERSION,
    .tables = s_tables,
    .tables_count = T_COUNT,
    .apply = s_apply,
    .prefetch = s_prefetch,
};

/* The card record is the one random lookup of nearly every event: start fetching it early. */
static void
s_prefetch(const pcache_t *c, const cl_event_t *ev, int stage)
{
    proj_prefetch_card(c, T_CARDS, ev, stage);
}

/* ---- Fold --------------------------------------------------------------------------------- */

static proj_key_t
s_key2(const char *a, const char *b)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_str(&k, a);
    proj_key_str(&k, b);
    return k;
}

/*
 * A card's cell keys of one day: merchant\0 set day program\0 value\0. The part before the
 * value is built once (s_cell_key_start()), and each key takes it with its own set byte and
 * value (s_cell_key()).
 */
typedef struct cell_keys {
    proj_key_t k;
    size_t set_at;   /* where the set byte is */
    size_t prefix_n; /* where the value begins */
} cell_keys_t;

static void
s_cell_key_start(cell_keys_t *ck, const an_card_t *card, int32_t day)
{
    proj_key_start(&ck->k);
    proj_key_str(&ck->k, card->merchant_id);
    ck->set_at = ck->k.n;
    proj_key_u8(&ck->k, 0);
    proj_key_i32(&ck->k, day);
    proj_key_str(&ck->k, card->program_id);
    ck->prefix_n = ck->k.n;
}

/* The key of the cell of set keyed by value; it stays valid until the next call. */
static proj_key_t *
s_cell_key(cell_keys_t *ck, int set, const char *value)
{
    ck->k.n = ck->prefix_n;
    ck->k.b[ck->set_at] = (uint8_t)set;
    proj_key_str(&ck->k, value);
    return &ck->k;
}

/* The three cells an event's figures go to: the card's channel, a region and a store, with
 * the value each is keyed by. */
typedef struct cells {
    an_cell_t *set[3];
    const char *value[3];
} cells_t;

/*
 * The cells of a card's event on a day, in region and store. Cells of `known` (found for the
 * same card and day, or NULL) whose value is the same are taken from it, not looked up again:
 * a redemption books its liability under the card's own region and store after booking the
 * redemption where it happened, and the channel cell is the same for both.
 */
static int
s_cells(pcache_t *c, const an_card_t *card, int32_t day, const char *region, const char *store,
        const cells_t *known, cells_t *out)
{
    out->value[0] = proj_channel_name(card->channel);
    out->value[1] = region[0] != '\0' ? region : "-";
    out->value[2] = store;
    cell_keys_t ck;
    bool started = false;
    for (int i = 0; i < 3; i++) {
        if (known != NULL && strcmp(known->value[i], out->value[i]) == 0) {
            out->set[i] = known->set[i];
        } else {
            if (!started)
                s_cell_key_start(&ck, card, day);
            started = true;
            const proj_key_t *k = s_cell_key(&ck, S_SET_CHANNEL + i, out->value[i]);
            out->set[i] = pcache_put(c, T_CELLS, k->b, k->n, sizeof(an_cell_t), NULL);
        }
        if (out->set[i] == NULL)
            return pcache_error(c) != 0 ? pcache_error(c) : PROJ_ENOMEM;
    }
    return 0;
}

static int
s_add(cells_t *cells, int fig, int64_t v)
{
    for (int i = 0; i < 3; i++) {
        if (!proj_add(&cells->set[i]->f[fig], v))
            return PROJ_EOVERFLOW;
    }
    return 0;
}

/* Adds v to a figure in the card-located cells of the day (see s_cells() for known). */
static int
s_card_fig(pcache_t *c, const an_card_t *card, int32_t day, const cells_t *known, int fig,
           int64_t v)
{
    cells_t cells;
    int rc = s_cells(c, card, day, card->region, card->store, known, &cells);
    return rc != 0 ? rc : s_add(&cells, fig, v);
}

static const an_card_t *
s_card(pcache_t *c, uint64_t card_id)
{
    proj_key_t k = proj_key_of_u64(card_id);
    size_t len;
    const an_card_t *card = pcache_get(c, T_CARDS, k.b, k.n, &len);
    return card != NULL && len == sizeof(*card) ? card : NULL;
}

static an_card_t *
s_card_mut(pcache_t *c, uint64_t card_id)
{
    proj_key_t k = proj_key_of_u64(card_id);
    return pcache_put(c, T_CARDS, k.b, k.n, sizeof(an_card_t), NULL);
}

static int
s_missing(pcache_t *c)
{
    return pcache_error(c) != 0 ? pcache_error(c) : PROJ_EMISMATCH;
}

/* The value `from` .. `to` uses represent on a punch card or voucher (to >= from). */
static int64_t
s_uses_value(const an_card_t *card, int64_t from, int64_t to)
{
    cl_kind_t kind = (cl_kind_t)card->kind;
    if (from < 0 || to < from || to > UINT32_MAX)
        return 0;
    return proj_value(kind, card->face_value_minor, card->uses_total, 0, (uint32_t)to) -
           proj_value(kind, card->face_value_minor, card->uses_total, 0, (uint32_t)from);
}

static int
s_program(pcache_t *c, const cl_event_t *ev)
{
    const cl_program_spec_t *spec = &ev->u.program;
    proj_key_t k = s_key2(spec->merchant_id, spec->program_id);
    if (ev->type == CL_EV_PROGRAM_UPDATED)
        return pcache_get(c, T_PROGRAMS, k.b, k.n, NULL) != NULL ? 0 : s_missing(c);
    bool created;
    an_prog_t *p = pcache_put(c, T_PROGRAMS, k.b, k.n, sizeof(*p), &created);
    if (p == NULL)
        return s_missing(c);
    if (!created)
        return PROJ_EMISMATCH;
    p->kind = (uint32_t)spec->kind;
    PROJ_COPY(p->currency, spec->currency);
    return 0;
}

static int
s_store(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_store_registered_t *e = &ev->u.store_registered;
    proj_key_t k = s_key2(e->merchant_id, e->store_id);
    char *region = pcache_put(c, T_STORES, k.b, k.n, 24, NULL);
    if (region == NULL)
        return s_missing(c);
    proj_copy(region, 24, e->region);
    return 0;
}

static int
s_issued(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_card_issued_t *e = &ev->u.card_issued;
    proj_key_t pk = s_key2(e->merchant_id, e->program_id);
    size_t len;
    const an_prog_t *prog = pcache_get(c, T_PROGRAMS, pk.b, pk.n, &len);
    if (prog == NULL || len != sizeof(*prog) || e->face_value_minor < 0 || e->price_paid_minor < 0)
        return s_missing(c);
    an_prog_t p = *prog;
    proj_key_t k = proj_key_of_u64(e->card_id);
    bool created;
    an_card_t *card = pcache_put(c, T_CARDS, k.b, k.n, sizeof(*card), &created);
    if (card == NULL)
        return s_missing(c);
    if (!created)
        return PROJ_EMISMATCH;
    card->face_value_minor = e->face_value_minor;
    card->issued_at_us = ev->at_us;
    card->uses_total = e->uses;
    card->kind = p.kind;
    card->channel = (uint8_t)e->channel;
    PROJ_COPY(card->merchant_id, e->merchant_id);
    PROJ_COPY(card->program_id, e->program_id);
    PROJ_COPY(card->region, e->region[0] != '\0' ? e->region : "-");
    if (e->store_id[0] != '\0') {
        PROJ_COPY(card->store, e->store_id);
    } else {
        PROJ_COPY_REGION_PLACE(card->store, card->region);
    }
    PROJ_COPY(card->currency, p.currency);

    int32_t day = proj_day(ev->at_us);
    cells_t cells;
    int rc = s_cells(c, card, day, card->region, card->store, NULL, &cells);
    if (rc != 0)
        return rc;
    int64_t value =
        proj_value((cl_kind_t)p.kind, e->face_value_minor, e->uses, e->face_value_minor, e->uses);
    if ((rc = s_add(&cells, F_ISSUED_COUNT, 1)) != 0 ||
        (rc = s_add(&cells, F_ISSUED_FACE, e->face_value_minor)) != 0 ||
        (rc = s_add(&cells, F_PRICE_PAID, e->price_paid_minor)) != 0 ||
        (rc = s_add(&cells, F_LIABILITY, value)) != 0)
        return rc;
    const char *values[3] = { proj_channel_name(card->channel), card->region, card->store };
    cell_keys_t ck;
    s_cell_key_start(&ck, card, day);
    for (int i = 0; i < 3; i++) {
        proj_key_t *dk = s_cell_key(&ck, S_SET_CHANNEL + i, values[i]);
        proj_key_i64(dk, e->face_value_minor);
        uint64_t *count = pcache_put(c, T_DENOMS, dk->b, dk->n, 8, NULL);
        if (count == NULL)
            return s_missing(c);
        (*count)++;
    }
    return 0;
}

static int
s_lag_bucket(int64_t lag_us)
{
    static const int64_t bounds_days[ANALYTICS_LAG_BUCKETS - 1] = { 1, 7, 30, 90 };
    for (int i = 0; i < ANALYTICS_LAG_BUCKETS - 1; i++) {
        if (lag_us < bounds_days[i] * PROJ_US_PER_DAY)
            return i;
    }
    return ANALYTICS_LAG_BUCKETS - 1;
}

static int
s_redeemed(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_card_redeemed_t *e = &ev->u.card_redeemed;
    /* Only a card's first redemption changes its record: later ones read it, so a batch does
     * not rewrite every redeemed card (the bytes written are the same either way). */
    const an_card_t *card = s_card(c, e->card_id);
    bool first = card == NULL || card->redeemed == 0;
    if (first) {
        an_card_t *mut = s_card_mut(c, e->card_id);
        if (mut == NULL || mut->merchant_id[0] == '\0' || e->amount_minor < 0)
            return mut == NULL ? s_missing(c) : PROJ_EMISMATCH;
        first = mut->redeemed == 0;
        mut->redeemed = 1;
        card = mut;
    } else if (card->merchant_id[0] == '\0' || e->amount_minor < 0) {
        return PROJ_EMISMATCH;
    }
    int64_t value = proj_kind_is_value((cl_kind_t)card->kind)
                        ? e->amount_minor
                        : s_uses_value(card, e->uses_after, (int64_t)e->uses_after + e->uses);
    int64_t discount = proj_kind_is_voucher((cl_kind_t)card->kind) ? e->amount_minor : 0;
    /* The redemption's region is its store's (the event carries it only in old journals,
     * always equal to the store's; the store table wins, the event's is the fallback). */
    proj_key_t sk = s_key2(card->merchant_id, e->store_id);
    const char *region = e->store_id[0] != '\0' ? pcache_get(c, T_STORES, sk.b, sk.n, NULL) : NULL;
    if (pcache_error(c) != 0)
        return pcache_error(c);
    if (region == NULL || region[0] == '\0')
        region = e->region;
    int32_t day = proj_day(ev->at_us);
    cells_t at;
    int rc = s_cells(c, card, day, region, e->store_id, NULL, &at);
    if (rc != 0)
        return rc;
    bool cross =
        strcmp(card->region, "-") != 0 && region[0] != '\0' && strcmp(card->region, region) != 0;
    if ((rc = s_add(&at, F_REDEMPTIONS, 1)) != 0 || (rc = s_add(&at, F_REDEEMED, value)) != 0 ||
        (rc = s_add(&at, F_DISCOUNT, discount)) != 0 ||
        (cross && (rc = s_add(&at, F_CROSS_REGION, 1)) != 0))
        return rc;
    if (first) {
        if ((rc = s_add(&at, F_CARDS_REDEEMED, 1)) != 0 ||
            (rc = s_add(&at, F_LAG0 + s_lag_bucket(ev->at_us - card->issued_at_us), 1)) != 0)
            return rc;
    }
    return s_card_fig(c, card, day, &at, F_LIABILITY, -value);
}

static int
s_reversed(pcache_t *c, const cl_event_t *ev)
{
    const cl_ev_redemption_reversed_t *e = &ev->u.redemption_reversed;
    const an_card_t *card = s_card(c, e->card_id);
    if (card == NULL)
        return s_missing(c);
    int64_t value = proj_kind_is_value((cl_kind_t)card->kind)
                        ? e->amount_minor
                        : s_uses_value(card, (int64_t)e->uses_after - e->uses, e->uses_after);
    int64_t discount = proj_kind_is_voucher((cl_kind_t)card->kind) ? e->amount_minor : 0;
    proj_key_t sk = s_key2(card->merchant_id, e->store_id);
    const char *region = e->store_id[0] != '\0' ? pcache_get(c, T_STORES, sk.b, sk.n, NULL) : NULL;
    if (pcache_error(c) != 0)
        return pcache_error(c);
    char store[CL_ID_MAX + 1];
    PROJ_COPY(store, e->store_id[0] != '\0' ? e->store_id : "-");
    int32_t day = proj_day(ev->at_us);
    cells_t at;
    int rc = s_cells(c, card, day, region != NULL ? region : "-", store, NULL, &at);
    if (rc != 0 || (rc = s_add(&at, F_REVERSALS, 1)) != 0 ||
        (rc = s_add(&at, F_REVERSED, value)) != 0 || (rc = s_add(&at, F_DISCOUNT, -discount)) != 0)
        return rc;
    return s_card_fig(c, card, day, &at, F_LIABILITY, value);
}

/* A change of value booked under the card: reload, adjustment, transfer, expiry. */
static int
s_card_change(pcache_t *c, uint64_t card_id, int64_t at_us, int fig, int64_t fig_v,
              int64_t liability_v, bool expired)
{
    const an_card_t *card = s_card(c, card_id);
    if (card == NULL)
        return s_missing(c);
    cells_t cells;
    int rc = s_cells(c, card, proj_day(at_us), card->region, card->store, NULL, &cells);
    if (rc == 0)
        rc = s_add(&cells, fig, fig_v);
    if (rc == 0)
        rc = s_add(&cells, F_LIABILITY, liability_v);
    if (rc == 0 && expired)
        rc = s_add(&cells, F_EXPIRED_CARDS, 1);
    return rc;
}

static int
s_gift_claimed(pcache_t *c, const cl_event_t *ev)
{
    const an_card_t *cur = s_card(c, ev->u.gift_closed.card_id);
    if (cur == NULL)
        return s_missing(c);
    if (cur->gifted)
        return 0;
    an_card_t *card = s_card_mut(c, ev->u.gift_closed.card_id);
    if (card == NULL)
        return s_missing(c);
    card->gifted = 1;
    return s_card_fig(c, card, proj_day(ev->at_us), NULL, F_CARDS_GIFTED, 1);
}

static int
s_apply(pcache_t *c, const cl_event_t *ev)
{
    switch (ev->type) {
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        return s_program(c, ev);
    case CL_EV_STORE_REGISTERED:
        return s_store(c, ev);
    case CL_EV_CARD_ISSUED:
        return s_issued(c, ev);
    case CL_EV_GIFT_CLAIMED:
        return s_gift_claimed(c, ev);
    case CL_EV_CARD_REDEEMED:
        return s_redeemed(c, ev);
    case CL_EV_REDEMPTION_REVERSED:
        return s_reversed(c, ev);
    case CL_EV_CARD_RELOADED: {
        int64_t v = ev->u.card_reloaded.amount_minor;
        return s_card_change(c, ev->u.card_reloaded.card_id, ev->at_us, F_RELOADED, v, v, false);
    }
    case CL_EV_BALANCE_TRANSFERRED: {
        const cl_ev_balance_transferred_t *e = &ev->u.balance_transferred;
        int rc = s_card_change(c, e->from_card_id, ev->at_us, F_TRANSFERRED, -e->amount_minor,
                               -e->amount_minor, false);
        if (rc == 0)
            rc = s_card_change(c, e->to_card_id, ev->at_us, F_TRANSFERRED, e->amount_minor,
                               e->amount_minor, false);
        return rc;
    }
    case CL_EV_CARD_ADJUSTED: {
        const cl_ev_card_adjusted_t *e = &ev->u.card_adjusted;
        const an_card_t *card = s_card(c, e->card_id);
        if (card == NULL)
            return s_missing(c);
        int64_t v;
        if (proj_kind_is_value((cl_kind_t)card->kind)) {
            v = e->delta_minor;
        } else {
            int64_t before = (int64_t)e->uses_after - e->delta_uses;
            v = e->delta_uses >= 0 ? s_uses_value(card, before, e->uses_after)
                                   : -s_uses_value(card, e->uses_after, before);
        }
        return s_card_change(c, e->card_id, ev->at_us, F_ADJUSTED, v, v, false);
    }
    case CL_EV_CARD_EXPIRED: {
        const cl_ev_card_expired_t *e = &ev->u.card_expired;
        const an_card_t *card = s_card(c, e->card_id);
        if (card == NULL)
            return s_missing(c);
        int64_t v = proj_kind_is_value((cl_kind_t)card->kind)
                        ? e->breakage_minor
                        : proj_value((cl_kind_t)card->kind, card->face_value_minor,
                                     card->uses_total, 0, e->uses_left);
        return s_card_change(c, e->card_id, ev->at_us, F_BREAKAGE, v, -v, true);
    }
    default:
        return 0;
    }
}

/* ---- Query -------------------------------------------------------------------------------- */

/* One group being summed: its figures and its denominations. */
typedef struct group {
    char key[ANALYTICS_KEY_MAX + 1];
    char currency[CL_CURRENCY_LEN + 1];
    int64_t f[F_FIGURES];      /* activity in the range */
    int64_t outstanding;       /* liability changes up to the end of the range */
    bool active;               /* a cell of the range */
    analytics_denom_t *denoms; /* all denominations seen */
    size_t denoms_count;
    size_t denoms_cap;
} group_t;

typedef struct groups {
    group_t *items;
    size_t count;
    size_t cap;
    uint32_t *index; /* item + 1, open addressing */
    size_t index_cap;
} groups_t;

static uint64_t
s_group_hash(const char *key, const char *currency)
{
    char buf[ANALYTICS_KEY_MAX + CL_CURRENCY_LEN + 2];
    size_t n = strlen(key);
    memcpy(buf, key, n);
    buf[n++] = 0;
    size_t m = strlen(currency);
    memcpy(buf + n, currency, m);
    return XXH3_64bits(buf, n + m);
}

static group_t *
s_group(groups_t *g, const char *key, const char *currency)
{
    if ((g->count + 1) * 2 > g->index_cap) {
        size_t cap = g->index_cap != 0 ? g->index_cap * 2 : 256;
        uint32_t *index = calloc(cap, sizeof(*index));
        if (index == NULL)
            return NULL;
        for (size_t i = 0; i < g->count; i++) {
            size_t pos = (size_t)s_group_hash(g->items[i].key, g->items[i].currency) & (cap - 1);
            while (index[pos] != 0)
                pos = (pos + 1) & (cap - 1);
            index[pos] = (uint32_t)(i + 1);
        }
        free(g->index);
        g->index = index;
        g->index_cap = cap;
    }
    size_t pos = (size_t)s_group_hash(key, currency) & (g->index_cap - 1);
    while (g->index[pos] != 0) {
        group_t *it = &g->items[g->index[pos] - 1];
        if (strcmp(it->key, key) == 0 && strcmp(it->currency, currency) == 0)
            return it;
        pos = (pos + 1) & (g->index_cap - 1);
    }
    if (g->count == g->cap) {
        size_t cap = g->cap != 0 ? g->cap * 2 : 64;
        group_t *items = realloc(g->items, cap * sizeof(*items));
        if (items == NULL)
            return NULL;
        g->items = items;
        g->cap = cap;
    }
    group_t *it = &g->items[g->count];
    memset(it, 0, sizeof(*it));
    PROJ_COPY(it->key, key);
    PROJ_COPY(it->currency, currency);
    g->index[pos] = (uint32_t)(++g->count);
    return it;
}

static void
s_groups_free(groups_t *g)
{
    for (size_t i = 0; i < g->count; i++)
        free(g->items[i].denoms);
    free(g->items);
    free(g->index);
}

/* A parsed cell or denomination key. */
typedef struct cell_key {
    int32_t day;
    const char *program;
    const char *value;
    const uint8_t *rest; /* after the value's NUL */
    size_t rest_len;
} cell_key_t;

static bool
s_parse(const MDB_val *k, size_t prefix_len, cell_key_t *out)
{
    const uint8_t *b = k->mv_data;
    size_t n = k->mv_size;
    if (n < prefix_len + 4)
        return false;
    out->day = proj_get_i32(b + prefix_len);
    size_t off = prefix_len + 4;
    const uint8_t *nul = memchr(b + off, 0, n - off);
    if (nul == NULL || nul - (b + off) > CL_ID_MAX)
        return false;
    out->program = (const char *)b + off;
    off = (size_t)(nul - b) + 1;
    nul = memchr(b + off, 0, n - off);
    if (nul == NULL || nul - (b + off) > ANALYTICS_KEY_MAX)
        return false;
    out->value = (const char *)b + off;
    off = (size_t)(nul - b) + 1;
    out->rest = b + off;
    out->rest_len = n - off;
    return true;
}

/* The currency of a program, remembered across the scan (programs are few). */
typedef struct currencies {
    char program[64][CL_ID_MAX + 1];
    char currency[64][CL_CURRENCY_LEN + 1];
    size_t count;
    size_t next; /* the slot replaced when full */
} currencies_t;

static int
s_currency(MDB_txn *txn, pstore_t *s, const char *merchant_id, const char *program,
           currencies_t *cur, const char **out)
{
    for (size_t i = 0; i < cur->count; i++) {
        if (strcmp(cur->program[i], program) == 0) {
            *out = cur->currency[i];
            return 0;
        }
    }
    proj_key_t k = s_key2(merchant_id, program);
    MDB_val key = { k.n, k.b }, v;
    int rc = mdb_get(txn, pstore_dbi(s, T_PROGRAMS), &key, &v);
    if (rc != 0 || v.mv_size != sizeof(an_prog_t))
        return rc == 0 || rc == MDB_NOTFOUND ? PROJ_ECORRUPT : rc;
    an_prog_t prog;
    memcpy(&prog, v.mv_data, sizeof(prog));
    size_t i = cur->count < 64 ? cur->count++ : cur->next++ % 64;
    PROJ_COPY(cur->program[i], program);
    proj_copy(cur->currency[i], sizeof(cur->currency[i]), prog.currency);
    *out = cur->currency[i];
    return 0;
}

#define S_CURRENCIES_MAX 32 /* currencies of one merchant a day-grouped query can carry */

typedef struct scan {
    pstore_t *s;
    MDB_txn *txn;
    const char *merchant_id;
    analytics_group_t group;
    const char *program_id; /* NULL: all */
    int32_t first, last;
    proj_key_t prefix; /* merchant\0 set */
    currencies_t currencies;
    groups_t groups;
    /* GROUP_BY_DAY: the running liability per currency, up to the day being scanned. */
    char run_currency[S_CURRENCIES_MAX][CL_CURRENCY_LEN + 1];
    int64_t run_value[S_CURRENCIES_MAX];
    size_t run_count;
} scan_t;

static void
s_group_key(const scan_t *sc, const cell_key_t *ck, char out[ANALYTICS_KEY_MAX + 1])
{
    switch (sc->group) {
    case ANALYTICS_GROUP_NONE:
        out[0] = '\0';
        break;
    case ANALYTICS_GROUP_DAY: {
        char day[16];
        proj_day_str(ck->day, day);
        proj_copy(out, ANALYTICS_KEY_MAX + 1, day);
        break;
    }
    case ANALYTICS_GROUP_PROGRAM:
        proj_copy(out, ANALYTICS_KEY_MAX + 1, ck->program);
        break;
    default:
        proj_copy(out, ANALYTICS_KEY_MAX + 1, ck->value);
        break;
    }
}

static int64_t *
s_running(scan_t *sc, const char *currency)
{
    for (size_t i = 0; i < sc->run_count; i++) {
        if (strcmp(sc->run_currency[i], currency) == 0)
            return &sc->run_value[i];
    }
    if (sc->run_count == S_CURRENCIES_MAX)
        return NULL;
    PROJ_COPY(sc->run_currency[sc->run_count], currency);
    sc->run_value[sc->run_count] = 0;
    return &sc->run_value[sc->run_count++];
}

/* GROUP_BY_DAY: the rows of one day get the liability as it stands after that day. */
static void
s_day_done(scan_t *sc, size_t first_item)
{
    for (size_t i = first_item; i < sc->groups.count; i++) {
        group_t *g = &sc->groups.items[i];
        int64_t *run = s_running(sc, g->currency);
        g->outstanding = run != NULL ? *run : 0;
    }
}

static int
s_scan_cells(scan_t *sc)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(sc->txn, pstore_dbi(sc->s, T_CELLS), &cur);
    if (rc != 0)
        return rc;
    MDB_val k = { sc->prefix.n, sc->prefix.b }, v;
    int32_t day_open = INT32_MIN; /* GROUP_BY_DAY: the day whose rows are being summed */
    size_t day_first_item = 0;    /* ... and its first group (a day's groups are made last) */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < sc->prefix.n || memcmp(k.mv_data, sc->prefix.b, sc->prefix.n) != 0)
            break;
        cell_key_t ck;
        if (!s_parse(&k, sc->prefix.n, &ck) || ck.rest_len != 0 || v.mv_size != sizeof(an_cell_t)) {
            rc = PROJ_ECORRUPT;
            break;
        }
        if (ck.day > sc->last)
            break;
        if (sc->program_id != NULL && strcmp(sc->program_id, ck.program) != 0)
            continue;
        const char *currency;
        rc = s_currency(sc->txn, sc->s, sc->merchant_id, ck.program, &sc->currencies, &currency);
        if (rc != 0)
            break;
        an_cell_t cell;
        memcpy(&cell, v.mv_data, sizeof(cell));
        bool in_range = ck.day >= sc->first;
        if (sc->group == ANALYTICS_GROUP_DAY) {
            if (ck.day != day_open) {
                s_day_done(sc, day_first_item);
                day_first_item = sc->groups.count;
                day_open = ck.day;
            }
            int64_t *run = s_running(sc, currency);
            if (run == NULL) {
                rc = PROJ_ELIMIT;
                break;
            }
            if (!proj_add(run, cell.f[F_LIABILITY])) {
                rc = PROJ_EOVERFLOW;
                break;
            }
            if (!in_range)
                continue;
        }
        char key[ANALYTICS_KEY_MAX + 1];
        s_group_key(sc, &ck, key);
        group_t *g = s_group(&sc->groups, key, currency);
        if (g == NULL) {
            rc = PROJ_ENOMEM;
            break;
        }
        if (sc->group != ANALYTICS_GROUP_DAY)
            proj_add(&g->outstanding, cell.f[F_LIABILITY]);
        if (in_range) {
            g->active = true;
            for (int f = 0; f < F_FIGURES; f++)
                proj_add(&g->f[f], cell.f[f]);
        }
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 && sc->group == ANALYTICS_GROUP_DAY)
        s_day_done(sc, day_first_item);
    mdb_cursor_close(cur);
    return rc;
}

static int
s_scan_denoms(scan_t *sc)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(sc->txn, pstore_dbi(sc->s, T_DENOMS), &cur);
    if (rc != 0)
        return rc;
    proj_key_t start = sc->prefix;
    proj_key_i32(&start, sc->first);
    MDB_val k = { start.n, start.b }, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < sc->prefix.n || memcmp(k.mv_data, sc->prefix.b, sc->prefix.n) != 0)
            break;
        cell_key_t ck;
        if (!s_parse(&k, sc->prefix.n, &ck) || ck.rest_len != 8 || v.mv_size != 8) {
            rc = PROJ_ECORRUPT;
            break;
        }
        if (ck.day > sc->last)
            break;
        if (sc->program_id != NULL && strcmp(sc->program_id, ck.program) != 0)
            continue;
        const char *currency;
        rc = s_currency(sc->txn, sc->s, sc->merchant_id, ck.program, &sc->currencies, &currency);
        if (rc != 0)
            break;
        char key[ANALYTICS_KEY_MAX + 1];
        s_group_key(sc, &ck, key);
        group_t *g = s_group(&sc->groups, key, currency);
        if (g == NULL) {
            rc = PROJ_ENOMEM;
            break;
        }
        int64_t face = proj_get_i64(ck.rest);
        uint64_t count;
        memcpy(&count, v.mv_data, 8);
        size_t i;
        for (i = 0; i < g->denoms_count && g->denoms[i].face_value_minor != face; i++)
            ;
        if (i == g->denoms_count) {
            if (g->denoms_count == g->denoms_cap) {
                size_t cap = g->denoms_cap != 0 ? g->denoms_cap * 2 : 8;
                analytics_denom_t *d = realloc(g->denoms, cap * sizeof(*d));
                if (d == NULL) {
                    rc = PROJ_ENOMEM;
                    break;
                }
                g->denoms = d;
                g->denoms_cap = cap;
            }
            g->denoms[g->denoms_count].face_value_minor = face;
            g->denoms[g->denoms_count++].cards = 0;
        }
        g->denoms[i].cards += count;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    return rc;
}

static uint32_t
s_ppm(int64_t num, int64_t den)
{
    if (num <= 0 || den <= 0)
        return 0;
    __extension__ typedef unsigned __int128 s_u128;
    s_u128 v = (s_u128)num * 1000000u / (s_u128)den;
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static int
s_denom_by_count(const void *a, const void *b)
{
    const analytics_denom_t *x = a, *y = b;
    if (x->cards != y->cards)
        return x->cards > y->cards ? -1 : 1;
    return (x->face_value_minor > y->face_value_minor) -
           (x->face_value_minor < y->face_value_minor);
}

static int
s_denom_by_face(const void *a, const void *b)
{
    const analytics_denom_t *x = a, *y = b;
    return (x->face_value_minor > y->face_value_minor) -
           (x->face_value_minor < y->face_value_minor);
}

static int
s_group_cmp(const void *a, const void *b)
{
    const group_t *x = a, *y = b;
    int r = strcmp(x->key, y->key);
    return r != 0 ? r : strcmp(x->currency, y->currency);
}

static void
s_row(group_t *g, analytics_row_t *r)
{
    memset(r, 0, sizeof(*r));
    PROJ_COPY(r->key, g->key);
    PROJ_COPY(r->currency, g->currency);
    const int64_t *f = g->f;
    r->issued_count = (uint64_t)f[F_ISSUED_COUNT];
    r->issued_face_minor = f[F_ISSUED_FACE];
    r->price_paid_minor = f[F_PRICE_PAID];
    r->reloaded_minor = f[F_RELOADED];
    r->redeemed_net_minor = f[F_REDEEMED];
    proj_add(&r->redeemed_net_minor, -f[F_REVERSED]);
    r->redemption_count = (uint64_t)f[F_REDEMPTIONS];
    r->reversal_count = (uint64_t)f[F_REVERSALS];
    r->avg_redemption_minor = f[F_REDEMPTIONS] > 0 ? r->redeemed_net_minor / f[F_REDEMPTIONS] : 0;
    r->breakage_minor = f[F_BREAKAGE];
    r->expired_cards = (uint64_t)f[F_EXPIRED_CARDS];
    r->adjusted_minor = f[F_ADJUSTED];
    r->transferred_net_minor = f[F_TRANSFERRED];
    r->discount_net_minor = f[F_DISCOUNT];
    r->outstanding_minor = g->outstanding;
    int64_t base = f[F_ISSUED_FACE];
    proj_add(&base, f[F_RELOADED]);
    r->value_redemption_rate_ppm = s_ppm(r->redeemed_net_minor, base);
    r->card_redemption_rate_ppm = s_ppm(f[F_CARDS_REDEEMED], f[F_ISSUED_COUNT]);
    r->gift_rate_ppm = s_ppm(f[F_CARDS_GIFTED], f[F_ISSUED_COUNT]);
    r->cross_region_share_ppm = s_ppm(f[F_CROSS_REGION], f[F_REDEMPTIONS]);
    r->cards_redeemed = (uint64_t)f[F_CARDS_REDEEMED];
    r->cards_gifted = (uint64_t)f[F_CARDS_GIFTED];
    r->cross_region_redemptions = (uint64_t)f[F_CROSS_REGION];
    for (int i = 0; i < ANALYTICS_LAG_BUCKETS; i++)
        r->lag_buckets[i] = (uint64_t)f[F_LAG0 + i];
    if (g->denoms_count > ANALYTICS_DENOMS_MAX)
        qsort(g->denoms, g->denoms_count, sizeof(*g->denoms), s_denom_by_count);
    size_t n = g->denoms_count < ANALYTICS_DENOMS_MAX ? g->denoms_count : ANALYTICS_DENOMS_MAX;
    if (n > 0) {
        memcpy(r->denominations, g->denoms, n * sizeof(*g->denoms));
        qsort(r->denominations, n, sizeof(*r->denominations), s_denom_by_face);
    }
    r->denominations_count = n;
}

int
analytics_query(pstore_t *s, const char *merchant_id, int64_t from_us, int64_t to_us,
                analytics_group_t group, const char *program_id, analytics_row_t *out, size_t cap,
                size_t *out_n, bool *out_more, uint64_t *out_as_of)
{
    if (s == NULL || merchant_id == NULL || out == NULL || out_n == NULL || out_more == NULL ||
        out_as_of == NULL || (int)group < ANALYTICS_GROUP_NONE || group > ANALYTICS_GROUP_STORE)
        return PROJ_EINVAL;
    scan_t *sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return PROJ_ENOMEM;
    sc->s = s;
    sc->merchant_id = merchant_id;
    sc->group = group;
    sc->program_id = program_id != NULL && program_id[0] != '\0' ? program_id : NULL;
    int set = group == ANALYTICS_GROUP_REGION  ? S_SET_REGION
              : group == ANALYTICS_GROUP_STORE ? S_SET_STORE
                                               : S_SET_CHANNEL;
    proj_key_str(&sc->prefix, merchant_id);
    proj_key_u8(&sc->prefix, (uint8_t)set);
    uint64_t as_of = 0;
    int rc = pstore_read_begin(s, &sc->txn);
    if (rc == 0) {
        pstore_meta_t meta;
        rc = pstore_meta_get(s, sc->txn, &meta);
        as_of = meta.checkpoint;
    }
    if (rc == 0 && proj_day_range(from_us, to_us, &sc->first, &sc->last)) {
        rc = s_scan_cells(sc);
        if (rc == 0)
            rc = s_scan_denoms(sc);
    }
    pstore_read_end(&sc->txn);
    size_t n = 0;
    bool more = false;
    if (rc == 0) {
        groups_t *g = &sc->groups;
        if (g->count > 0)
            qsort(g->items, g->count, sizeof(*g->items), s_group_cmp);
        for (size_t i = 0; i < g->count; i++) {
            group_t *it = &g->items[i];
            if (!it->active && it->outstanding == 0)
                continue;
            if (n == cap || n == ANALYTICS_ROWS_MAX) {
                more = true;
                break;
            }
            s_row(it, &out[n++]);
        }
    }
    s_groups_free(&sc->groups);
    free(sc);
    if (rc != 0)
        return rc;
    *out_n = n;
    *out_more = more;
    *out_as_of = as_of;
    return 0;
}
