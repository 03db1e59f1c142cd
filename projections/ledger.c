/*
 * ledger.c: the fold of journal events into the ledger's write model (see ledger.h).
 *
 * Every case of ledger_apply() first checks that the event fits the state, then changes it, so
 * an event that does not fit leaves the state exactly as it was. Amounts are re-derived from
 * the event's deltas and compared with the "after" values the event carries: a journal whose
 * arithmetic does not add up is refused rather than silently folded.
 */
#include "ledger.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "bytes.h"
#include "clcheck.h"
#include "mapbuf.h"
#include "table.h"

#define LEDGER_US_PER_DAY (86400LL * 1000000LL)

/* Persisted tables, in the fixed order of checkpoints and digests. */
enum {
    T_MERCHANTS,
    T_STORES,
    T_PROGRAMS,
    T_CARDS,
    T_OFFERS,
    T_REDEMPTIONS,
    T_HOLDERS,
    T_ROWS,
    T_CODES,
    T_TIMERS,
    T_COUNT
};

static const char *const s_table_names[T_COUNT] = {
    "merchants",   "stores",  "programs", "cards", "offers",
    "redemptions", "holders", "rows",     "codes", "timers",
};

/*
 * A card is persisted in up to two records under its key: "cards" holds it whole as it was when
 * last written whole, and "card_values", when there is one, its value and status
 * (LEDGER_CARD_VALUE_OFF to the end) written since, which override those of "cards". A change
 * to only the value and status (s_card_value_mut(): every redeem) then rewrites the small record
 * and leaves the large one, and its page, as they are; any other change (an issue, a gift)
 * writes the card whole and deletes its "card_values". A new card is so one record, not two:
 * a fifth fewer of a batch issue's records reach LMDB (the writer skips the delete of a key past
 * the table's last one).
 */
#define CARD_VALUES    "card_values"
#define CARD_VALUE_LEN (sizeof(ledger_card_t) - LEDGER_CARD_VALUE_OFF)
/* The value is the struct's tail, from balance_minor: a field added after it (or before it)
 * changes this, and must be one that only value changes touch (or never touch). */
_Static_assert(CARD_VALUE_LEN == 32, "ledger_card_t's value region moved: see CARD_VALUES");

/*
 * Tables read lazily when the ledger has a source: only their records that commands touch are
 * ever in memory. Merchants, stores and programs are few and always loaded whole.
 */
static const bool s_table_lazy[T_COUNT] = {
    [T_CARDS] = true, [T_OFFERS] = true, [T_REDEMPTIONS] = true, [T_HOLDERS] = true,
    [T_ROWS] = true,  [T_CODES] = true,  [T_TIMERS] = true,
};

/* Keys: ids joined by a NUL, card/offer/redemption numbers as 8 big-endian bytes. */
#define KEY2_MAX (2 * (CL_ID_MAX + 1))
#define KEY3_MAX (2 * (CL_ID_MAX + 1) + CL_HOLDER_MAX + 1)
/* A timer's key sorts in firing order: due time (biased so negative times sort first, big
 * endian), kind, card, offer. Its record is one byte: the table is a set. */
#define TIMER_KEY_LEN 25

/* Room for a record of any lazy table. */
typedef union lazy_rec {
    ledger_card_t card;
    ledger_offer_t offer;
    ledger_redemption_t redemption;
    uint64_t number;
} lazy_rec_t;

typedef struct timer_heap {
    ledger_timer_t *items; /* realloc()ed, or mem.base once the array is a mapping */
    size_t count;
    size_t cap;
    mapbuf_t mem;     /* the array from MAPBUF_STEP bytes on (mem.base NULL before; mapbuf.h) */
    bool grow_failed; /* an early growth failed: none until the array is full */
} timer_heap_t;

/* How the persistence walks (s_walk(), freezes) hand a table's records to a ledger_record_fn. */
typedef struct visit_ctx {
    const char *table;
    size_t rec_size;
    ledger_record_fn fn;
    void *ctx;
} visit_ctx_t;

typedef struct card_visit_ctx {
    const table_t *cards; /* NULL: every record counts as changed whole */
    ledger_record_fn fn;
    void *ctx;
} card_visit_ctx_t;

struct ledger {
    ledger_meta_t meta;
    bool meta_dirty;
    table_t *tables[T_COUNT];
    /*
     * Timers in firing order: a heap of those put since the ledger was made or loaded, merged
     * with the source's persisted ones through a cursor (the last persisted key passed). Either
     * may hold timers deleted since: the "timers" table says which are live.
     */
    timer_heap_t timers;
    ledger_source_t source; /* fn NULL: every record is in memory */
    uint8_t cursor_key[TIMER_KEY_LEN];
    bool cursor_started; /* cursor_key holds a key */
    bool cursor_done;    /* the source has no persisted timer after cursor_key */
    lazy_rec_t scratch;
    /* The program ledger_program() found last. Commands and events come in runs on one
     * program (a batch issue's rows), and a program's record never moves nor goes away (its
     * table is no cache), so the pointer stays good for the ledger's life. */
    const ledger_program_t *last_program;
    /* What each table hands its frozen records to (ledger_freeze_dirty()). */
    visit_ctx_t frozen_v[T_COUNT];
    card_visit_ctx_t frozen_cards;
};

const char *
ledger_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case LEDGER_EINVAL:
        return "ledger: invalid argument";
    case LEDGER_ENOMEM:
        return "ledger: out of memory";
    case LEDGER_EMISMATCH:
        return "ledger: the event does not fit the state (corrupt journal or a bug)";
    case LEDGER_EOVERFLOW:
        return "ledger: an amount would overflow";
    default:
        return "ledger: unknown error";
    }
}

/* ---- Small helpers ------------------------------------------------------------------------ */

/* Copies a string into a fixed buffer, zero-filling the rest so records compare bytewise. */
static void
s_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, cap - n);
}

#define COPY(dst, src) s_copy((dst), sizeof(dst), (src))

/* Joins up to three strings with NULs into out; returns the key length. */
static size_t
s_join(uint8_t *out, size_t cap, const char *a, const char *b, const char *c)
{
    size_t n = 0;
    const char *parts[3] = { a, b, c };
    for (int i = 0; i < 3 && parts[i] != NULL; i++) {
        size_t len = strlen(parts[i]);
        assert(n + len + 1 <= cap);
        if (i > 0)
            out[n++] = 0;
        memcpy(out + n, parts[i], len);
        n += len;
    }
    (void)cap;
    return n;
}

static bool
s_add(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* ---- Cache over the source ---------------------------------------------------------------- */

/*
 * The record under key in table t: from memory, or, for a key a lazy table does not know yet,
 * from the source (then kept, clean, as a record or as "absent"). Reading the source does not
 * change the state the ledger describes, only what of it is in memory, hence the cast. A source
 * that fails (an unreadable checkpoint under a running daemon) or memory running out would leave
 * the ledger unable to answer truthfully: that aborts, and a restart replays the journal.
 */
static void *
s_get(const ledger_t *cl, int t, const void *key, size_t key_len)
{
    ledger_t *l = (ledger_t *)(uintptr_t)cl;
    bool known;
    void *rec = table_lookup(l->tables[t], key, key_len, &known);
    if (known || l->source.get == NULL || !s_table_lazy[t])
        return rec;
    size_t rec_size = table_rec_size(l->tables[t]);
    int rc = l->source.get(l->source.ctx, s_table_names[t], key, key_len, &l->scratch, rec_size);
    CL_CHECK(rc == 0 || rc == 1);
    if (t == T_CARDS && rc == 1) {
        /* The value and status written since the card was last written whole, if any. */
        uint8_t *value = (uint8_t *)&l->scratch.card + LEDGER_CARD_VALUE_OFF;
        int vrc = l->source.get(l->source.ctx, CARD_VALUES, key, key_len, value, CARD_VALUE_LEN);
        CL_CHECK(vrc == 0 || vrc == 1);
    }
    bool failed;
    rec = table_fill(l->tables[t], key, key_len, rc == 1 ? &l->scratch : NULL, &failed);
    CL_CHECK(!failed);
    return rec;
}

/* table_put() on a cache: the record is read in first, so a change starts from its value. A
 * record that exists is marked dirty through its pointer (no second lookup). */
static void *
s_put(ledger_t *l, int t, const void *key, size_t key_len)
{
    void *rec = s_get(l, t, key, key_len);
    if (rec != NULL)
        return table_touch(l->tables[t], rec);
    return table_put(l->tables[t], key, key_len, NULL);
}

/* table_del() on a cache: the key must be known for its deletion to reach the checkpoint. */
static void
s_del(ledger_t *l, int t, const void *key, size_t key_len)
{
    /* Out of memory here would leave the state unlike the journal: stop, as a failed touch does
     * (the command is not committed; a restart replays the journal). */
    if (s_get(l, t, key, key_len) != NULL)
        CL_CHECK(table_del(l->tables[t], key, key_len) == 0);
}

/* ---- Timers: a set in firing order ------------------------------------------------------- */

static void
s_timer_key(const ledger_timer_t *t, uint8_t key[TIMER_KEY_LEN])
{
    cl_put_be64(key, (uint64_t)t->due_us ^ (UINT64_C(1) << 63));
    key[8] = (uint8_t)t->kind;
    cl_put_be64(key + 9, t->card_id);
    cl_put_be64(key + 17, t->offer_id);
}

static void
s_timer_from_key(const uint8_t key[TIMER_KEY_LEN], ledger_timer_t *t)
{
    t->due_us = (int64_t)(cl_get_be64(key) ^ (UINT64_C(1) << 63));
    t->kind = (ledger_timer_kind_t)key[8];
    t->card_id = cl_get_be64(key + 9);
    t->offer_id = cl_get_be64(key + 17);
}

static bool
s_timer_less(const ledger_timer_t *a, const ledger_timer_t *b)
{
    if (a->due_us != b->due_us)
        return a->due_us < b->due_us;
    if (a->kind != b->kind)
        return a->kind < b->kind;
    if (a->card_id != b->card_id)
        return a->card_id < b->card_id;
    return a->offer_id < b->offer_id;
}

/*
 * Gives the heap room for cap timers. From MAPBUF_STEP bytes on, the array is a mapping of its
 * own that grows in place (mapbuf.h: a million cards' timers take 64 MB): no timer is copied,
 * and of the new part only what is pushed or asked for (s_heap_push()) is touched. (It grew by a
 * new allocation and a copy before: during a batch issue the loop spent 4.6 % of its time
 * first-touching the copy.)
 */
static int
s_heap_reserve(timer_heap_t *h, size_t cap)
{
    assert(cap >= h->count);
    size_t bytes = cap * sizeof(*h->items);
    if (h->mem.base == NULL && bytes < MAPBUF_STEP) {
        ledger_timer_t *items = realloc(h->items, bytes);
        if (items == NULL)
            return LEDGER_ENOMEM;
        h->items = items;
        h->cap = cap;
        return 0;
    }
    bool was_mapped = h->mem.base != NULL;
    if (mapbuf_reserve(&h->mem, bytes) != 0)
        return LEDGER_ENOMEM;
    if (!was_mapped) {
        if (h->count > 0)
            memcpy(h->mem.base, h->items, h->count * sizeof(*h->items));
        free(h->items);
    }
    h->items = (ledger_timer_t *)(void *)h->mem.base;
    h->cap = h->mem.cap / sizeof(*h->items);
    return 0;
}

static void
s_heap_free(timer_heap_t *h)
{
    if (h->mem.base != NULL)
        mapbuf_free(&h->mem);
    else
        free(h->items);
    h->items = NULL;
    h->count = h->cap = 0;
    h->grow_failed = false;
}

static int
s_heap_push(timer_heap_t *h, const ledger_timer_t *t)
{
    /* With an ahead function, a mapped array grows before the pushes come within MAPBUF_AHEAD
     * of its end, so that the memory asked for past them is always inside it. */
    size_t used = (h->count + 1) * sizeof(*h->items);
    bool early = h->mem.base != NULL && h->mem.ahead != NULL && !h->grow_failed &&
                 used + MAPBUF_AHEAD > h->mem.cap;
    if (h->count == h->cap || early) {
        int rc = s_heap_reserve(h, h->cap ? h->cap * 2 : 1024);
        if (rc != 0 && h->count == h->cap)
            return rc;
        h->grow_failed = rc != 0; /* no early growth again until the array is full */
    }
    if (h->mem.base != NULL)
        mapbuf_ask(&h->mem, used);
    size_t i = h->count++;
    h->items[i] = *t;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!s_timer_less(&h->items[i], &h->items[parent]))
            break;
        ledger_timer_t tmp = h->items[i];
        h->items[i] = h->items[parent];
        h->items[parent] = tmp;
        i = parent;
    }
    return 0;
}

static void
s_heap_pop(timer_heap_t *h)
{
    assert(h->count > 0);
    h->items[0] = h->items[--h->count];
    size_t i = 0;
    for (;;) {
        size_t left = 2 * i + 1, right = left + 1, least = i;
        if (left < h->count && s_timer_less(&h->items[left], &h->items[least]))
            least = left;
        if (right < h->count && s_timer_less(&h->items[right], &h->items[least]))
            least = right;
        if (least == i)
            break;
        ledger_timer_t tmp = h->items[i];
        h->items[i] = h->items[least];
        h->items[least] = tmp;
        i = least;
    }
}

/* Adds a timer to the set (a new key: timers are unique to their card or offer). */
static int
s_timer_add(ledger_t *l, const ledger_timer_t *t)
{
    uint8_t key[TIMER_KEY_LEN];
    s_timer_key(t, key);
    uint8_t *rec = table_put(l->tables[T_TIMERS], key, sizeof(key), NULL);
    if (rec == NULL)
        return LEDGER_ENOMEM;
    *rec = 1;
    return s_heap_push(&l->timers, t);
}

static void
s_timer_del(ledger_t *l, const ledger_timer_t *t)
{
    uint8_t key[TIMER_KEY_LEN];
    s_timer_key(t, key);
    s_del(l, T_TIMERS, key, sizeof(key));
}

/* The heap's earliest live timer (dropping deleted ones from the top), or false. */
static bool
s_heap_top(ledger_t *l, uint8_t key[TIMER_KEY_LEN])
{
    while (l->timers.count > 0) {
        s_timer_key(&l->timers.items[0], key);
        if (s_get(l, T_TIMERS, key, TIMER_KEY_LEN) != NULL)
            return true;
        s_heap_pop(&l->timers);
    }
    return false;
}

/* The source's earliest live timer after the cursor (moving past deleted ones), or false. */
static bool
s_cursor_top(ledger_t *l, uint8_t key[TIMER_KEY_LEN])
{
    while (l->source.next != NULL && !l->cursor_done) {
        size_t len = 0;
        int rc = l->source.next(l->source.ctx, s_table_names[T_TIMERS], l->cursor_key,
                                l->cursor_started ? TIMER_KEY_LEN : 0, key, TIMER_KEY_LEN, &len);
        CL_CHECK(rc == 0 || rc == 1);
        if (rc == 0) {
            l->cursor_done = true;
            break;
        }
        CL_CHECK(len == TIMER_KEY_LEN);
        if (s_get(l, T_TIMERS, key, TIMER_KEY_LEN) != NULL)
            return true;
        memcpy(l->cursor_key, key, TIMER_KEY_LEN);
        l->cursor_started = true;
    }
    return false;
}

/* 1: the heap's top is first; 2: the cursor's; 3: both (the same timer); 0: none. */
static int
s_timer_first(ledger_t *l, ledger_timer_t *out)
{
    uint8_t hk[TIMER_KEY_LEN], ck[TIMER_KEY_LEN];
    bool h = s_heap_top(l, hk);
    bool c = s_cursor_top(l, ck);
    if (!h && !c)
        return 0;
    int cmp = h && c ? memcmp(hk, ck, TIMER_KEY_LEN) : (h ? -1 : 1);
    s_timer_from_key(cmp <= 0 ? hk : ck, out);
    return cmp < 0 ? 1 : cmp > 0 ? 2 : 3;
}

bool
ledger_timer_peek(const ledger_t *l, ledger_timer_t *out)
{
    assert(l != NULL && out != NULL);
    return s_timer_first((ledger_t *)(uintptr_t)l, out) != 0;
}

void
ledger_timer_pop(ledger_t *l)
{
    ledger_timer_t t;
    int which = s_timer_first(l, &t);
    assert(which != 0);
    if (which & 1)
        s_heap_pop(&l->timers);
    if (which & 2) {
        s_timer_key(&t, l->cursor_key);
        l->cursor_started = true;
    }
}

/* The expiry and reminder timers of a newly issued card. */
static int
s_card_timers(ledger_t *l, const ledger_card_t *card)
{
    if (card->expires_at_us == 0)
        return 0;
    ledger_timer_t t = { .due_us = card->expires_at_us,
                         .kind = LEDGER_TIMER_EXPIRE,
                         .card_id = card->card_id };
    int rc = s_timer_add(l, &t);
    if (rc == 0 && card->remind_at_us != 0) {
        t.kind = LEDGER_TIMER_REMIND;
        t.due_us = card->remind_at_us;
        rc = s_timer_add(l, &t);
    }
    return rc;
}

/* ---- Lifetime ----------------------------------------------------------------------------- */

int
ledger_new(ledger_t **out)
{
    assert(out != NULL);
    static const size_t key_max[T_COUNT] = {
        [T_MERCHANTS] = CL_ID_MAX,
        [T_STORES] = KEY2_MAX,
        [T_PROGRAMS] = KEY2_MAX,
        [T_CARDS] = 8,
        [T_OFFERS] = 8,
        [T_REDEMPTIONS] = 8,
        [T_HOLDERS] = KEY3_MAX,
        [T_ROWS] = KEY3_MAX,
        [T_CODES] = CL_CODE_MAX,
        [T_TIMERS] = TIMER_KEY_LEN,
    };
    static const size_t rec_size[T_COUNT] = {
        [T_MERCHANTS] = sizeof(ledger_merchant_t),
        [T_STORES] = sizeof(ledger_store_t),
        [T_PROGRAMS] = sizeof(ledger_program_t),
        [T_CARDS] = sizeof(ledger_card_t),
        [T_OFFERS] = sizeof(ledger_offer_t),
        [T_REDEMPTIONS] = sizeof(ledger_redemption_t),
        [T_HOLDERS] = sizeof(uint32_t),
        [T_ROWS] = sizeof(uint64_t),
        [T_CODES] = sizeof(uint64_t),
        [T_TIMERS] = 1,
    };
    ledger_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return LEDGER_ENOMEM;
    for (int i = 0; i < T_COUNT; i++) {
        /* Cards, offers and redemptions are keyed by numbers the ledger hands out in order;
         * a timer's key holds its card's (the cards of a batch share a due time). */
        bool numbered = i == T_CARDS || i == T_OFFERS || i == T_REDEMPTIONS || i == T_TIMERS;
        size_t number_off = i == T_TIMERS ? 9 : 0;
        int rc = numbered ? table_new_numbered(key_max[i], number_off, rec_size[i], &l->tables[i])
                          : table_new(key_max[i], rec_size[i], &l->tables[i]);
        if (rc != 0) {
            ledger_destroy(&l);
            return LEDGER_ENOMEM;
        }
    }
    l->meta.next_card_id = 1;
    l->meta.next_batch_id = 1;
    l->meta_dirty = true;
    *out = l;
    return 0;
}

void
ledger_destroy(ledger_t **lp)
{
    if (lp == NULL || *lp == NULL)
        return;
    ledger_t *l = *lp;
    for (int i = 0; i < T_COUNT; i++)
        table_destroy(&l->tables[i]);
    s_heap_free(&l->timers);
    free(l);
    *lp = NULL;
}

/* ---- Lookups ------------------------------------------------------------------------------ */

const ledger_meta_t *
ledger_meta(const ledger_t *l)
{
    return &l->meta;
}

const ledger_merchant_t *
ledger_merchant(const ledger_t *l, const char *merchant_id)
{
    return table_get(l->tables[T_MERCHANTS], merchant_id, strlen(merchant_id));
}

const ledger_store_t *
ledger_store(const ledger_t *l, const char *merchant_id, const char *store_id)
{
    uint8_t key[KEY2_MAX];
    size_t n = s_join(key, sizeof(key), merchant_id, store_id, NULL);
    return table_get(l->tables[T_STORES], key, n);
}

const ledger_program_t *
ledger_program(const ledger_t *l, const char *merchant_id, const char *program_id)
{
    const ledger_program_t *last = l->last_program;
    if (last != NULL && strcmp(last->spec.program_id, program_id) == 0 &&
        strcmp(last->spec.merchant_id, merchant_id) == 0)
        return last;
    uint8_t key[KEY2_MAX];
    size_t n = s_join(key, sizeof(key), merchant_id, program_id, NULL);
    const ledger_program_t *p = table_get(l->tables[T_PROGRAMS], key, n);
    if (p != NULL)
        ((ledger_t *)(uintptr_t)l)->last_program = p; /* a lookup aid, not the state */
    return p;
}

const ledger_card_t *
ledger_card(const ledger_t *l, uint64_t card_id)
{
    uint8_t key[8];
    cl_put_be64(key, card_id);
    return s_get(l, T_CARDS, key, sizeof(key));
}

const ledger_card_t *
ledger_card_by_code(const ledger_t *l, const char *code)
{
    size_t n = strlen(code);
    if (n == 0 || n > CL_CODE_MAX)
        return NULL;
    const uint64_t *id = s_get(l, T_CODES, code, n);
    return id != NULL ? ledger_card(l, *id) : NULL;
}

const ledger_offer_t *
ledger_offer(const ledger_t *l, uint64_t offer_id)
{
    uint8_t key[8];
    cl_put_be64(key, offer_id);
    return s_get(l, T_OFFERS, key, sizeof(key));
}

const ledger_redemption_t *
ledger_redemption(const ledger_t *l, uint64_t seq)
{
    uint8_t key[8];
    cl_put_be64(key, seq);
    return s_get(l, T_REDEMPTIONS, key, sizeof(key));
}

uint32_t
ledger_holder_count(const ledger_t *l, const char *merchant_id, const char *program_id,
                    const char *holder)
{
    uint8_t key[KEY3_MAX];
    size_t n = s_join(key, sizeof(key), merchant_id, program_id, holder);
    const uint32_t *count = s_get(l, T_HOLDERS, key, n);
    return count != NULL ? *count : 0;
}

uint64_t
ledger_row_card(const ledger_t *l, const char *merchant_id, const char *program_id,
                const char *row_key)
{
    uint8_t key[KEY3_MAX];
    size_t n = s_join(key, sizeof(key), merchant_id, program_id, row_key);
    const uint64_t *id = s_get(l, T_ROWS, key, n);
    return id != NULL ? *id : 0;
}

void
ledger_row_prefetch(const ledger_t *l, const char *merchant_id, const char *program_id,
                    const char *row_key)
{
    uint8_t key[KEY3_MAX];
    size_t n = s_join(key, sizeof(key), merchant_id, program_id, row_key);
    table_prefetch(l->tables[T_ROWS], key, n);
}

void
ledger_card_view(const ledger_t *l, const ledger_card_t *card, cl_card_view_t *out)
{
    assert(card != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    const ledger_program_t *prog = ledger_program(l, card->merchant_id, card->program_id);
    out->card_id = card->card_id;
    cl_code_mask(card->code, out->code_masked, sizeof(out->code_masked));
    COPY(out->merchant_id, card->merchant_id);
    COPY(out->program_id, card->program_id);
    if (prog != NULL) {
        out->kind = prog->spec.kind;
        COPY(out->currency, prog->spec.currency);
    }
    out->state = card->state;
    out->frozen = card->frozen;
    out->locked = card->locked;
    out->balance_minor = card->balance_minor;
    out->uses_left = card->uses_left;
    out->face_value_minor = card->face_value_minor;
    out->issued_at_us = card->issued_at_us;
    out->valid_from_us = card->valid_from_us;
    out->expires_at_us = card->expires_at_us;
    COPY(out->holder, card->holder);
    out->pin_failures = card->pin_failures;
    out->open_offer_id = card->open_offer_id;
    out->transfers_done = card->transfers_done;
    out->redeemed_minor = card->redeemed_minor;
}

/* ---- Mutable access for the fold ---------------------------------------------------------- */

/*
 * A card the caller has checked exists, for changing (marked dirty). Running out of memory
 * half way through folding an event would leave a state no journal describes: that aborts.
 * With value_only, the caller changes only the card's value and status (the fields from
 * balance_minor on), and the checkpoint writes only those (see CARD_VALUES).
 */
static ledger_card_t *
s_card_touch(ledger_t *l, uint64_t card_id, bool value_only)
{
    uint8_t key[8];
    cl_put_be64(key, card_id);
    const ledger_card_t *cur = s_get(l, T_CARDS, key, sizeof(key));
    CL_CHECK(cur != NULL);
    table_t *t = l->tables[T_CARDS];
    ledger_card_t *c = value_only ? table_touch_part(t, cur) : table_touch(t, cur);
    CL_CHECK(c != NULL);
    return c;
}

static ledger_card_t *
s_card_mut(ledger_t *l, uint64_t card_id)
{
    return s_card_touch(l, card_id, false);
}

static ledger_card_t *
s_card_value_mut(ledger_t *l, uint64_t card_id)
{
    return s_card_touch(l, card_id, true);
}

/* A program the caller has checked exists, for changing. */
static ledger_program_t *
s_program_mut(ledger_t *l, const char *merchant_id, const char *program_id)
{
    const ledger_program_t *cur = ledger_program(l, merchant_id, program_id);
    CL_CHECK(cur != NULL);
    ledger_program_t *p = table_touch(l->tables[T_PROGRAMS], cur);
    CL_CHECK(p != NULL);
    return p;
}

/* Adds delta (+1 or -1) to a holder's count of cards in a program; 0 drops the record. */
static int
s_holder_add(ledger_t *l, const char *merchant_id, const char *program_id, const char *holder,
             int delta)
{
    if (holder[0] == '\0')
        return 0;
    uint8_t key[KEY3_MAX];
    size_t n = s_join(key, sizeof(key), merchant_id, program_id, holder);
    uint32_t *count = s_put(l, T_HOLDERS, key, n);
    if (count == NULL)
        return LEDGER_ENOMEM;
    if (delta < 0 && *count == 0)
        return LEDGER_EMISMATCH;
    *count = (uint32_t)((int64_t)*count + delta);
    if (*count == 0)
        CL_CHECK(table_del(l->tables[T_HOLDERS], key, n) == 0);
    return 0;
}

static bool
s_is_voucher(cl_kind_t kind)
{
    return kind >= CL_KIND_VOUCHER_THRESHOLD && kind <= CL_KIND_VOUCHER_EXCHANGE;
}

/* ---- The fold, one function per kind of event --------------------------------------------- */

static int
s_apply_merchant(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_merchant_registered_t *e = &ev->u.merchant_registered;
    table_t *t = l->tables[T_MERCHANTS];
    size_t n = strlen(e->merchant_id);
    if (n == 0 || table_get(t, e->merchant_id, n) != NULL)
        return LEDGER_EMISMATCH;
    ledger_merchant_t *m = table_put(t, e->merchant_id, n, NULL);
    if (m == NULL)
        return LEDGER_ENOMEM;
    COPY(m->merchant_id, e->merchant_id);
    COPY(m->name, e->name);
    m->registered_at_us = ev->at_us;
    return 0;
}

static int
s_apply_store(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_store_registered_t *e = &ev->u.store_registered;
    if (ledger_merchant(l, e->merchant_id) == NULL || e->store_id[0] == '\0' ||
        ledger_store(l, e->merchant_id, e->store_id) != NULL)
        return LEDGER_EMISMATCH;
    uint8_t key[KEY2_MAX];
    size_t n = s_join(key, sizeof(key), e->merchant_id, e->store_id, NULL);
    ledger_store_t *s = table_put(l->tables[T_STORES], key, n, NULL);
    if (s == NULL)
        return LEDGER_ENOMEM;
    COPY(s->merchant_id, e->merchant_id);
    COPY(s->store_id, e->store_id);
    COPY(s->name, e->name);
    COPY(s->region, e->region);
    return 0;
}

static int
s_apply_program(ledger_t *l, const cl_event_t *ev)
{
    const cl_program_spec_t *spec = &ev->u.program;
    const ledger_program_t *cur = ledger_program(l, spec->merchant_id, spec->program_id);
    if (ledger_merchant(l, spec->merchant_id) == NULL || spec->program_id[0] == '\0')
        return LEDGER_EMISMATCH;
    if (ev->type == CL_EV_PROGRAM_DEFINED && cur != NULL)
        return LEDGER_EMISMATCH;
    if (ev->type == CL_EV_PROGRAM_UPDATED && (cur == NULL || cur->spec.kind != spec->kind ||
                                              strcmp(cur->spec.currency, spec->currency) != 0))
        return LEDGER_EMISMATCH;
    uint8_t key[KEY2_MAX];
    size_t n = s_join(key, sizeof(key), spec->merchant_id, spec->program_id, NULL);
    ledger_program_t *p = table_put(l->tables[T_PROGRAMS], key, n, NULL);
    if (p == NULL)
        return LEDGER_ENOMEM;
    p->spec = *spec;
    return 0;
}

static int
s_apply_program_closed(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_program_closed_t *e = &ev->u.program_closed;
    if (ledger_program(l, e->merchant_id, e->program_id) == NULL)
        return LEDGER_EMISMATCH;
    s_program_mut(l, e->merchant_id, e->program_id)->closed = true;
    return 0;
}

static int
s_apply_issued(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_card_issued_t *e = &ev->u.card_issued;
    const ledger_program_t *prog = ledger_program(l, e->merchant_id, e->program_id);
    size_t code_len = strlen(e->code);
    /* A CardIssued with a code hash comes from an export, its code masked: a journal imported
     * from one is for the replay, never a daemon's state. */
    if (e->has_code_hash || prog == NULL || e->card_id != l->meta.next_card_id || code_len == 0 ||
        s_get(l, T_CODES, e->code, code_len) != NULL || e->face_value_minor < 0 ||
        e->price_paid_minor < 0)
        return LEDGER_EMISMATCH;
    uint8_t rkey[KEY3_MAX];
    size_t rkey_len = 0;
    if (e->row_key[0] != '\0') {
        rkey_len = s_join(rkey, sizeof(rkey), e->merchant_id, e->program_id, e->row_key);
        const uint64_t *row = s_get(l, T_ROWS, rkey, rkey_len);
        if (row != NULL && *row != 0)
            return LEDGER_EMISMATCH;
    }

    uint8_t key[8];
    cl_put_be64(key, e->card_id);
    ledger_card_t *c = table_put(l->tables[T_CARDS], key, sizeof(key), NULL);
    uint64_t *code_id = table_put(l->tables[T_CODES], e->code, code_len, NULL);
    if (c == NULL || code_id == NULL)
        return LEDGER_ENOMEM;
    *code_id = e->card_id;
    c->card_id = e->card_id;
    COPY(c->merchant_id, e->merchant_id);
    COPY(c->program_id, e->program_id);
    COPY(c->code, e->code);
    c->has_pin = e->has_pin;
    memcpy(c->pin_hash, e->pin_hash, sizeof(c->pin_hash));
    COPY(c->holder, e->holder);
    c->channel = e->channel;
    COPY(c->sold_store_id, e->store_id);
    COPY(c->sold_region, e->region);
    c->face_value_minor = e->face_value_minor;
    c->price_paid_minor = e->price_paid_minor;
    c->balance_minor = prog->spec.kind == CL_KIND_STORED_VALUE ? e->face_value_minor : 0;
    c->uses_left = e->uses;
    c->issued_at_us = ev->at_us;
    c->valid_from_us = e->valid_from_us;
    c->expires_at_us = e->expires_at_us;
    uint32_t days = prog->spec.remind_days_before_expiry;
    if (e->expires_at_us != 0 && days > 0)
        c->remind_at_us = e->expires_at_us - (int64_t)days * LEDGER_US_PER_DAY;
    c->state = CL_CARDSTATE_ACTIVE;

    ledger_program_t *p = table_touch(l->tables[T_PROGRAMS], prog);
    CL_CHECK(p != NULL);
    p->issued_count++;
    l->meta.next_card_id++;
    l->meta.cards++;
    int rc = s_holder_add(l, e->merchant_id, e->program_id, e->holder, +1);
    if (rc == 0 && rkey_len > 0) {
        /* The s_get() above read the key in: a cache knows it has no record, a plain put. */
        uint64_t *row = table_put(l->tables[T_ROWS], rkey, rkey_len, NULL);
        if (row == NULL)
            return LEDGER_ENOMEM;
        *row = e->card_id;
    }
    if (rc == 0)
        rc = s_card_timers(l, c);
    return rc;
}

static int
s_apply_batch(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_batch_issued_t *e = &ev->u.batch_issued;
    if (e->batch_id != l->meta.next_batch_id)
        return LEDGER_EMISMATCH;
    l->meta.next_batch_id++;
    return 0;
}

static int
s_apply_gift_offered(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_gift_offered_t *e = &ev->u.gift_offered;
    const ledger_card_t *cur = ledger_card(l, e->card_id);
    if (cur == NULL || cur->open_offer_id != 0 || e->offer_id != ev->seq ||
        ledger_offer(l, e->offer_id) != NULL)
        return LEDGER_EMISMATCH;
    uint8_t key[8];
    cl_put_be64(key, e->offer_id);
    ledger_offer_t *o = s_put(l, T_OFFERS, key, sizeof(key));
    if (o == NULL)
        return LEDGER_ENOMEM;
    o->offer_id = e->offer_id;
    o->card_id = e->card_id;
    COPY(o->from_holder, e->from_holder);
    COPY(o->to_holder, e->to_holder);
    memcpy(o->claim_hash, e->claim_hash, sizeof(o->claim_hash));
    o->expires_at_us = e->expires_at_us;
    ledger_card_t *c = s_card_mut(l, e->card_id);
    c->open_offer_id = e->offer_id;
    if (c->has_pin)
        c->pin_failures = 0;
    ledger_timer_t t = { .due_us = e->expires_at_us,
                         .kind = LEDGER_TIMER_OFFER,
                         .card_id = e->card_id,
                         .offer_id = e->offer_id };
    return s_timer_add(l, &t);
}

static int
s_apply_gift_closed(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_gift_closed_t *e = &ev->u.gift_closed;
    const ledger_card_t *cur = ledger_card(l, e->card_id);
    const ledger_offer_t *offer = ledger_offer(l, e->offer_id);
    if (cur == NULL || offer == NULL || cur->open_offer_id != e->offer_id ||
        offer->card_id != e->card_id)
        return LEDGER_EMISMATCH;
    if (ev->type == CL_EV_GIFT_CLAIMED) {
        if (e->new_holder[0] == '\0' || strcmp(cur->holder, e->previous_holder) != 0)
            return LEDGER_EMISMATCH;
        int rc = s_holder_add(l, cur->merchant_id, cur->program_id, cur->holder, -1);
        if (rc == 0)
            rc = s_holder_add(l, cur->merchant_id, cur->program_id, e->new_holder, +1);
        if (rc != 0)
            return rc;
    }
    ledger_card_t *c = s_card_mut(l, e->card_id);
    if (ev->type == CL_EV_GIFT_CLAIMED) {
        COPY(c->holder, e->new_holder);
        c->transfers_done++;
    }
    c->open_offer_id = 0;
    ledger_timer_t t = { .due_us = offer->expires_at_us,
                         .kind = LEDGER_TIMER_OFFER,
                         .card_id = e->card_id,
                         .offer_id = e->offer_id };
    s_timer_del(l, &t);
    uint8_t key[8];
    cl_put_be64(key, e->offer_id);
    s_del(l, T_OFFERS, key, sizeof(key));
    return 0;
}

/* Balance and uses after a change, checked against what the event says they are. */
static int
s_after(const ledger_card_t *c, int64_t delta_minor, int64_t delta_uses, int64_t want_balance,
        int64_t want_uses, int64_t *out_balance, uint32_t *out_uses)
{
    int64_t balance, uses;
    if (!s_add(c->balance_minor, delta_minor, &balance) ||
        !s_add((int64_t)c->uses_left, delta_uses, &uses))
        return LEDGER_EOVERFLOW;
    if (balance < 0 || uses < 0 || uses > UINT32_MAX || balance != want_balance ||
        uses != want_uses)
        return LEDGER_EMISMATCH;
    *out_balance = balance;
    *out_uses = (uint32_t)uses;
    return 0;
}

static int
s_apply_redeemed(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_card_redeemed_t *e = &ev->u.card_redeemed;
    const ledger_card_t *cur = ledger_card(l, e->card_id);
    /* A redemption is keyed by its own sequence number, later than any checkpoint: whether it
     * exists is known from memory alone. */
    uint8_t key[8];
    cl_put_be64(key, ev->seq);
    if (cur == NULL || e->amount_minor < 0 ||
        table_get(l->tables[T_REDEMPTIONS], key, sizeof(key)) != NULL)
        return LEDGER_EMISMATCH;
    const ledger_program_t *prog = ledger_program(l, cur->merchant_id, cur->program_id);
    if (prog == NULL)
        return LEDGER_EMISMATCH;
    bool value = prog->spec.kind == CL_KIND_STORED_VALUE;
    int64_t balance, redeemed;
    uint32_t uses;
    int rc = s_after(cur, value ? -e->amount_minor : 0, -(int64_t)e->uses, e->balance_after_minor,
                     e->uses_after, &balance, &uses);
    if (rc != 0)
        return rc;
    if (!s_add(cur->redeemed_minor, e->amount_minor, &redeemed))
        return LEDGER_EOVERFLOW;

    ledger_redemption_t *r = table_put(l->tables[T_REDEMPTIONS], key, sizeof(key), NULL);
    if (r == NULL)
        return LEDGER_ENOMEM;
    r->seq = ev->seq;
    r->card_id = e->card_id;
    COPY(r->store_id, e->store_id);
    r->amount_minor = e->amount_minor;
    r->uses = e->uses;

    ledger_card_t *c = s_card_value_mut(l, e->card_id);
    c->balance_minor = balance;
    c->uses_left = uses;
    c->redeemed_minor = redeemed;
    if (c->has_pin)
        c->pin_failures = 0;
    if (s_is_voucher(prog->spec.kind) && uses == 0)
        c->state = CL_CARDSTATE_EXHAUSTED;
    return 0;
}

static int
s_apply_reversed(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_redemption_reversed_t *e = &ev->u.redemption_reversed;
    const ledger_card_t *cur = ledger_card(l, e->card_id);
    const ledger_redemption_t *red = ledger_redemption(l, e->redemption_seq);
    if (cur == NULL || red == NULL || red->card_id != e->card_id || e->amount_minor < 0 ||
        e->amount_minor > red->amount_minor - red->reversed_minor ||
        e->uses > red->uses - red->reversed_uses)
        return LEDGER_EMISMATCH;
    const ledger_program_t *prog = ledger_program(l, cur->merchant_id, cur->program_id);
    if (prog == NULL)
        return LEDGER_EMISMATCH;
    bool value = prog->spec.kind == CL_KIND_STORED_VALUE;
    int64_t balance;
    uint32_t uses;
    int rc = s_after(cur, value ? e->amount_minor : 0, (int64_t)e->uses, e->balance_after_minor,
                     e->uses_after, &balance, &uses);
    if (rc != 0)
        return rc;

    uint8_t key[8];
    cl_put_be64(key, e->redemption_seq);
    ledger_redemption_t *r = table_put(l->tables[T_REDEMPTIONS], key, sizeof(key), NULL);
    CL_CHECK(r != NULL);
    r->reversed_minor += e->amount_minor;
    r->reversed_uses += e->uses;
    ledger_card_t *c = s_card_value_mut(l, e->card_id);
    c->balance_minor = balance;
    c->uses_left = uses;
    c->redeemed_minor -= e->amount_minor;
    if (c->state == CL_CARDSTATE_EXHAUSTED && uses > 0)
        c->state = CL_CARDSTATE_ACTIVE;
    return 0;
}

static int
s_apply_reloaded(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_card_reloaded_t *e = &ev->u.card_reloaded;
    const ledger_card_t *cur = ledger_card(l, e->card_id);
    if (cur == NULL || e->amount_minor <= 0)
        return LEDGER_EMISMATCH;
    int64_t balance;
    uint32_t uses;
    int rc =
        s_after(cur, e->amount_minor, 0, e->balance_after_minor, cur->uses_left, &balance, &uses);
    if (rc != 0)
        return rc;
    s_card_value_mut(l, e->card_id)->balance_minor = balance;
    return 0;
}

static int
s_apply_transferred(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_balance_transferred_t *e = &ev->u.balance_transferred;
    const ledger_card_t *from = ledger_card(l, e->from_card_id);
    const ledger_card_t *to = ledger_card(l, e->to_card_id);
    if (from == NULL || to == NULL || from == to || e->amount_minor <= 0)
        return LEDGER_EMISMATCH;
    int64_t from_balance, to_balance;
    uint32_t uses;
    int rc = s_after(from, -e->amount_minor, 0, e->from_balance_after_minor, from->uses_left,
                     &from_balance, &uses);
    if (rc == 0)
        rc = s_after(to, e->amount_minor, 0, e->to_balance_after_minor, to->uses_left, &to_balance,
                     &uses);
    if (rc != 0)
        return rc;
    ledger_card_t *f = s_card_value_mut(l, e->from_card_id);
    f->balance_minor = from_balance;
    if (f->has_pin)
        f->pin_failures = 0;
    s_card_value_mut(l, e->to_card_id)->balance_minor = to_balance;
    return 0;
}

static int
s_apply_adjusted(ledger_t *l, const cl_event_t *ev)
{
    const cl_ev_card_adjusted_t *e = &ev->u.card_adjusted;
    const ledger_card_t *cur = ledger_card(l, e->card_id);
    if (cur == NULL)
        return LEDGER_EMISMATCH;
    int64_t balance;
    uint32_t uses;
    int rc = s_after(cur, e->delta_minor, e->delta_uses, e->balance_after_minor, e->uses_after,
                     &balance, &uses);
    if (rc != 0)
        return rc;
    ledger_card_t *c = s_card_value_mut(l, e->card_id);
    c->balance_minor = balance;
    c->uses_left = uses;
    return 0;
}

static int
s_apply_card_flag(ledger_t *l, const cl_event_t *ev)
{
    switch (ev->type) {
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
    case CL_EV_CARD_EXPIRED:
    case CL_EV_EXPIRY_REMINDED:
        break;
    default:
        return LEDGER_EINVAL;
    }
    uint64_t card_id = cl_event_card_id(ev);
    if (ledger_card(l, card_id) == NULL)
        return LEDGER_EMISMATCH;
    ledger_card_t *c = s_card_value_mut(l, card_id);
    switch (ev->type) {
    case CL_EV_CARD_FROZEN:
        c->frozen = true;
        break;
    case CL_EV_CARD_UNFROZEN:
        c->frozen = false;
        break;
    case CL_EV_CARD_UNLOCKED:
        c->locked = false;
        c->pin_failures = 0;
        break;
    case CL_EV_PIN_REJECTED:
        c->pin_failures = ev->u.pin.failures_in_row;
        break;
    case CL_EV_CARD_LOCKED:
        c->locked = true;
        c->pin_failures = ev->u.pin.failures_in_row;
        break;
    case CL_EV_CARD_EXPIRED:
        c->state = CL_CARDSTATE_EXPIRED;
        break;
    default:
        c->reminded = true;
        break;
    }
    /* A card's timers leave the set once they have done their work. */
    ledger_timer_t t = { .card_id = card_id };
    if (ev->type == CL_EV_CARD_EXPIRED && c->expires_at_us != 0) {
        t.kind = LEDGER_TIMER_EXPIRE;
        t.due_us = c->expires_at_us;
        s_timer_del(l, &t);
    }
    if ((ev->type == CL_EV_CARD_EXPIRED || ev->type == CL_EV_EXPIRY_REMINDED) &&
        c->remind_at_us != 0) {
        t.kind = LEDGER_TIMER_REMIND;
        t.due_us = c->remind_at_us;
        s_timer_del(l, &t);
    }
    return 0;
}

int
ledger_apply(ledger_t *l, const cl_event_t *ev)
{
    assert(l != NULL && ev != NULL);
    if (ev->seq <= l->meta.last_seq)
        return LEDGER_EMISMATCH;
    int rc;
    switch (ev->type) {
    case CL_EV_MERCHANT_REGISTERED:
        rc = s_apply_merchant(l, ev);
        break;
    case CL_EV_STORE_REGISTERED:
        rc = s_apply_store(l, ev);
        break;
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        rc = s_apply_program(l, ev);
        break;
    case CL_EV_PROGRAM_CLOSED:
        rc = s_apply_program_closed(l, ev);
        break;
    case CL_EV_CARD_ISSUED:
        rc = s_apply_issued(l, ev);
        break;
    case CL_EV_BATCH_ISSUED:
        rc = s_apply_batch(l, ev);
        break;
    case CL_EV_GIFT_OFFERED:
        rc = s_apply_gift_offered(l, ev);
        break;
    case CL_EV_GIFT_CLAIMED:
    case CL_EV_GIFT_RECALLED:
    case CL_EV_GIFT_RETURNED:
        rc = s_apply_gift_closed(l, ev);
        break;
    case CL_EV_CARD_REDEEMED:
        rc = s_apply_redeemed(l, ev);
        break;
    case CL_EV_REDEMPTION_REVERSED:
        rc = s_apply_reversed(l, ev);
        break;
    case CL_EV_CARD_RELOADED:
        rc = s_apply_reloaded(l, ev);
        break;
    case CL_EV_BALANCE_TRANSFERRED:
        rc = s_apply_transferred(l, ev);
        break;
    case CL_EV_CARD_ADJUSTED:
        rc = s_apply_adjusted(l, ev);
        break;
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
    case CL_EV_CARD_EXPIRED:
    case CL_EV_EXPIRY_REMINDED:
        rc = s_apply_card_flag(l, ev);
        break;
    case CL_EV_CLOCK_ADVANCED:
        if (ev->u.clock_advanced.now_us < l->meta.clock_us)
            return LEDGER_EMISMATCH;
        l->meta.clock_us = ev->u.clock_advanced.now_us;
        rc = 0;
        break;
    default:
        return LEDGER_EMISMATCH;
    }
    if (rc != 0)
        return rc;
    l->meta.last_seq = ev->seq;
    l->meta.last_at_us = ev->at_us;
    l->meta_dirty = true;
    return 0;
}

/* ---- Persistence -------------------------------------------------------------------------- */

static int
s_visit(const void *key, size_t key_len, const void *rec, void *ctx)
{
    visit_ctx_t *v = ctx;
    return v->fn(v->table, key, key_len, rec, rec != NULL ? v->rec_size : 0, v->ctx);
}

/*
 * A card as its persisted records (see CARD_VALUES): its value and status alone when only they
 * changed; else the card whole and a delete of its "card_values" (a deleted card: two deletes).
 * A walk of the whole state (v->cards NULL) writes every card whole and nothing else: its
 * checkpoint starts from empty tables.
 */
static int
s_visit_card(const void *key, size_t key_len, const void *rec, void *ctx)
{
    card_visit_ctx_t *v = ctx;
    if (rec != NULL && v->cards != NULL && table_dirty_in_part(v->cards, rec))
        return v->fn(CARD_VALUES, key, key_len, (const uint8_t *)rec + LEDGER_CARD_VALUE_OFF,
                     CARD_VALUE_LEN, v->ctx);
    int rc = v->fn(s_table_names[T_CARDS], key, key_len, rec,
                   rec != NULL ? sizeof(ledger_card_t) : 0, v->ctx);
    if (rc != 0 || v->cards == NULL)
        return rc;
    return v->fn(CARD_VALUES, key, key_len, NULL, 0, v->ctx);
}

static int
s_walk(const ledger_t *l, bool dirty_only, ledger_record_fn fn, void *ctx)
{
    if (!dirty_only || l->meta_dirty) {
        int rc = fn("meta", "meta", 4, &l->meta, sizeof(l->meta), ctx);
        if (rc != 0)
            return rc;
    }
    for (int i = 0; i < T_COUNT; i++) {
        visit_ctx_t v = { s_table_names[i], table_rec_size(l->tables[i]), fn, ctx };
        card_visit_ctx_t cv = { dirty_only ? l->tables[i] : NULL, fn, ctx };
        table_visit_fn visit = i == T_CARDS ? s_visit_card : s_visit;
        void *visit_ctx = i == T_CARDS ? (void *)&cv : (void *)&v;
        int rc = dirty_only ? table_foreach_dirty(l->tables[i], visit, visit_ctx)
                            : table_foreach(l->tables[i], visit, visit_ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
ledger_dirty_foreach(const ledger_t *l, ledger_record_fn fn, void *ctx)
{
    return s_walk(l, true, fn, ctx);
}

int
ledger_foreach_record(const ledger_t *l, ledger_record_fn fn, void *ctx)
{
    /* With a source, memory holds only part of the state. */
    if (l->source.get != NULL)
        return LEDGER_EINVAL;
    return s_walk(l, false, fn, ctx);
}

int
ledger_freeze_dirty(ledger_t *l, ledger_record_fn fn, void *ctx)
{
    assert(l != NULL && fn != NULL);
    if (l->meta_dirty) {
        int rc = fn("meta", "meta", 4, &l->meta, sizeof(l->meta), ctx);
        if (rc != 0)
            return rc;
        l->meta_dirty = false;
    }
    l->frozen_cards = (card_visit_ctx_t){ l->tables[T_CARDS], fn, ctx };
    for (int i = 0; i < T_COUNT; i++) {
        l->frozen_v[i] = (visit_ctx_t){ s_table_names[i], table_rec_size(l->tables[i]), fn, ctx };
        if (i == T_CARDS)
            table_freeze_dirty(l->tables[i], s_visit_card, &l->frozen_cards);
        else
            table_freeze_dirty(l->tables[i], s_visit, &l->frozen_v[i]);
    }
    return 0;
}

int
ledger_copy_frozen(ledger_t *l, size_t max, size_t *out_left)
{
    assert(l != NULL && out_left != NULL);
    size_t left_all = 0;
    for (int i = 0; i < T_COUNT; i++) {
        size_t left = 0;
        int rc = table_copy_frozen(l->tables[i], &max, &left);
        if (rc != 0)
            return rc;
        left_all += left;
    }
    *out_left = left_all;
    return 0;
}

void
ledger_frozen_drop(ledger_t *l)
{
    for (int i = 0; i < T_COUNT; i++)
        table_frozen_drop(l->tables[i]);
}

void
ledger_dirty_clear(ledger_t *l)
{
    l->meta_dirty = false;
    for (int i = 0; i < T_COUNT; i++)
        table_dirty_clear(l->tables[i]);
}

int
ledger_load_record(ledger_t *l, const char *table, const void *key, size_t key_len, const void *rec,
                   size_t rec_len)
{
    if (strcmp(table, "meta") == 0) {
        if (rec_len != sizeof(l->meta))
            return LEDGER_EINVAL;
        memcpy(&l->meta, rec, sizeof(l->meta));
        return 0;
    }
    /* A card's two records may come in either order: its "card_values", when there is one,
     * overrides the value and status of its "cards" (see CARD_VALUES). */
    if (strcmp(table, CARD_VALUES) == 0) {
        if (rec_len != CARD_VALUE_LEN)
            return LEDGER_EINVAL;
        uint8_t *dst = table_put(l->tables[T_CARDS], key, key_len, NULL);
        if (dst == NULL)
            return key_len == 0 ? LEDGER_EINVAL : LEDGER_ENOMEM;
        memcpy(dst + LEDGER_CARD_VALUE_OFF, rec, CARD_VALUE_LEN);
        return 0;
    }
    for (int i = 0; i < T_COUNT; i++) {
        if (strcmp(table, s_table_names[i]) != 0)
            continue;
        if (rec_len != table_rec_size(l->tables[i]))
            return LEDGER_EINVAL;
        bool created;
        void *dst = table_put(l->tables[i], key, key_len, &created);
        if (dst == NULL)
            return key_len == 0 ? LEDGER_EINVAL : LEDGER_ENOMEM;
        /* A card whose "card_values" came first keeps that value and status. */
        memcpy(dst, rec, i == T_CARDS && !created ? LEDGER_CARD_VALUE_OFF : rec_len);
        return 0;
    }
    return LEDGER_EINVAL;
}

int
ledger_load_reserve(ledger_t *l, const char *table, size_t records)
{
    for (int i = 0; i < T_COUNT; i++) {
        if (strcmp(table, s_table_names[i]) == 0)
            return table_reserve(l->tables[i], records) == 0 ? 0 : LEDGER_ENOMEM;
    }
    if (strcmp(table, CARD_VALUES) == 0) /* one per card, and it may come first */
        return table_reserve(l->tables[T_CARDS], records) == 0 ? 0 : LEDGER_ENOMEM;
    return strcmp(table, "meta") == 0 ? 0 : LEDGER_EINVAL;
}

static int
s_index_timer(const void *key, size_t key_len, const void *rec, void *ctx)
{
    ledger_t *l = ctx;
    ledger_timer_t t;
    (void)rec;
    if (key_len != TIMER_KEY_LEN)
        return LEDGER_EINVAL;
    s_timer_from_key(key, &t);
    return s_heap_push(&l->timers, &t);
}

int
ledger_rebuild_indexes(ledger_t *l)
{
    l->timers.count = 0;
    size_t timers = table_count(l->tables[T_TIMERS]);
    if (timers > l->timers.cap && s_heap_reserve(&l->timers, timers) != 0)
        return LEDGER_ENOMEM;
    int rc = table_foreach(l->tables[T_TIMERS], s_index_timer, l);
    if (rc == 0)
        ledger_dirty_clear(l);
    return rc;
}

bool
ledger_table_is_lazy(const char *table)
{
    if (strcmp(table, CARD_VALUES) == 0)
        return s_table_lazy[T_CARDS];
    for (int i = 0; i < T_COUNT; i++) {
        if (strcmp(table, s_table_names[i]) == 0)
            return s_table_lazy[i];
    }
    return false;
}

long
ledger_forget_clean(ledger_t *l, size_t keep_max)
{
    if (l->source.get == NULL)
        return LEDGER_EINVAL;
    long forgotten = 0;
    for (int i = 0; i < T_COUNT; i++) {
        size_t slots = table_slots(l->tables[i]);
        if (!s_table_lazy[i] || slots <= keep_max)
            continue;
        if (table_forget_clean(l->tables[i]) != 0)
            return LEDGER_ENOMEM;
        forgotten += (long)(slots - table_slots(l->tables[i]));
    }
    return forgotten;
}

const char *
ledger_table_name(size_t i)
{
    if (i == T_COUNT)
        return CARD_VALUES;
    return i < T_COUNT ? s_table_names[i] : NULL;
}

void
ledger_set_source(ledger_t *l, const ledger_source_t *source)
{
    assert(l != NULL);
    memset(&l->source, 0, sizeof(l->source));
    if (source != NULL)
        l->source = *source;
    l->cursor_started = false;
    l->cursor_done = false;
}

void
ledger_set_ahead(ledger_t *l, void (*fn)(void *ctx, void *addr, size_t len), void *ctx)
{
    assert(l != NULL);
    for (int i = 0; i < T_COUNT; i++)
        table_set_ahead(l->tables[i], fn, ctx);
    l->timers.mem.ahead = fn;
    l->timers.mem.ahead_ctx = ctx;
}

/* ---- Digest ------------------------------------------------------------------------------- */

typedef struct digest_item {
    const void *key;
    size_t key_len;
    const void *rec;
} digest_item_t;

typedef struct digest_list {
    digest_item_t *items;
    size_t count;
} digest_list_t;

static int
s_collect(const void *key, size_t key_len, const void *rec, void *ctx)
{
    digest_list_t *d = ctx;
    d->items[d->count++] = (digest_item_t){ key, key_len, rec };
    return 0;
}

static int
s_item_cmp(const void *a, const void *b)
{
    const digest_item_t *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c != 0)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

void
ledger_digest(const ledger_t *l, uint8_t out[16])
{
    CL_CHECK(l->source.get == NULL); /* the whole state must be in memory */
    XXH3_state_t *st = XXH3_createState();
    CL_CHECK(NULL != st);
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, &l->meta, sizeof(l->meta));
    for (int i = 0; i < T_COUNT; i++) {
        const table_t *t = l->tables[i];
        digest_list_t d = { calloc(table_count(t) + 1, sizeof(digest_item_t)), 0 };
        CL_CHECK(NULL != d.items);
        table_foreach(t, s_collect, &d);
        qsort(d.items, d.count, sizeof(*d.items), s_item_cmp);
        XXH3_128bits_update(st, s_table_names[i], strlen(s_table_names[i]) + 1);
        for (size_t k = 0; k < d.count; k++) {
            uint64_t klen = d.items[k].key_len;
            XXH3_128bits_update(st, &klen, sizeof(klen));
            XXH3_128bits_update(st, d.items[k].key, d.items[k].key_len);
            XXH3_128bits_update(st, d.items[k].rec, table_rec_size(t));
        }
        free(d.items);
    }
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
    memcpy(out, canon.digest, 16);
    XXH3_freeState(st);
}
