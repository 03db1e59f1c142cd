/*
 * The ledger's write model: every merchant, store, program, card, open gift offer and
 * redemption, folded from journal events.
 *
 * This is a projection like the others, with one difference: the daemon decides commands
 * against it, so it lives in memory. ledger_apply() is the only way it changes, and it is pure:
 * the same events in the same order give the same state, whether they come from the live
 * daemon, a restart, the projector or the offline replay tool.
 *
 * Persistence is the caller's: the ledger keeps a dirty set per table, and the daemon writes
 * the dirty records into LMDB as "state as of sequence N" every so often (daemon/checkpoint.c),
 * then replays the journal's tail on start. Records are fixed-size plain structs, so a record
 * is its own serialised form; LEDGER_STATE_VERSION changes whenever one of them does, and a
 * checkpoint of another version is ignored (the state is rebuilt from the journal).
 *
 * A ledger is either whole in memory, or a cache over such a checkpoint (ledger_set_source()):
 * then only merchants, stores and programs are loaded, and a card, offer, redemption, holder
 * count, row key, code or timer is read from the checkpoint the first time it is asked for and
 * kept. Because the checkpoint only ever receives records that are in memory (the dirty ones),
 * a record not in memory is exactly as the checkpoint has it. A start then costs the journal's
 * tail, not the number of cards.
 *
 * The code -> card index and the timers (expiries, reminders, gift offer timeouts) are tables
 * like the others, so a cache needs no scan of all cards to rebuild them; the timers table is a
 * set whose keys sort in firing order, read through a cursor.
 */
#ifndef CARDLEDGER_LEDGER_H
#define CARDLEDGER_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"

/* Bumped whenever a record struct below or the meaning of a field changes. */
#define LEDGER_STATE_VERSION 4

/* Error codes, in their own range. */
#define LEDGER_EINVAL    (-33001) /* an argument out of its domain */
#define LEDGER_ENOMEM    (-33002) /* allocation failed */
#define LEDGER_EMISMATCH (-33003) /* the event does not fit the state (corruption or a bug) */
#define LEDGER_EOVERFLOW (-33004) /* an addition would overflow; the event is refused */

const char *ledger_strerror(int rc);

typedef struct ledger ledger_t;

typedef struct ledger_merchant {
    char merchant_id[CL_ID_MAX + 1];
    char name[CL_NAME_MAX + 1];
    int64_t registered_at_us;
} ledger_merchant_t;

typedef struct ledger_store {
    char merchant_id[CL_ID_MAX + 1];
    char store_id[CL_ID_MAX + 1];
    char name[CL_NAME_MAX + 1];
    char region[CL_REGION_MAX + 1];
} ledger_store_t;

typedef struct ledger_program {
    cl_program_spec_t spec;
    bool closed;
    uint64_t issued_count; /* cards ever issued: the stock counter */
} ledger_program_t;

typedef struct ledger_card {
    uint64_t card_id;
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char code[CL_CODE_MAX + 1];
    bool has_pin;
    uint8_t pin_hash[CL_HASH_LEN];
    char holder[CL_HOLDER_MAX + 1];
    cl_channel_t channel;
    char sold_store_id[CL_ID_MAX + 1];
    char sold_region[CL_REGION_MAX + 1];
    int64_t face_value_minor;
    int64_t price_paid_minor;
    int64_t issued_at_us;
    int64_t valid_from_us;
    int64_t expires_at_us; /* 0 = never */
    int64_t remind_at_us;  /* when ExpiryReminded is due (0 = no reminder): set at issue */
    uint32_t transfers_done;
    uint64_t open_offer_id; /* 0 = none */
    /*
     * The card's value and status, from balance_minor to the end: all that redeems, reversals,
     * reloads, balance transfers, adjustments, flags and expiry change. A checkpoint writes it
     * alone ("card_values") when nothing else of the card changed, so that a redeem rewrites 32
     * bytes, not 344.
     */
    int64_t balance_minor;  /* stored value */
    int64_t redeemed_minor; /* lifetime, net of reversals */
    uint32_t uses_left;     /* punch cards and vouchers */
    uint32_t pin_failures;  /* wrong PINs in a row */
    cl_card_state_t state;
    bool frozen;
    bool locked;
    bool reminded; /* ExpiryReminded written */
} ledger_card_t;

/* Where a card's value and status begin (see ledger_card_t). */
#define LEDGER_CARD_VALUE_OFF offsetof(ledger_card_t, balance_minor)

typedef struct ledger_offer {
    uint64_t offer_id;
    uint64_t card_id;
    char from_holder[CL_HOLDER_MAX + 1];
    char to_holder[CL_HOLDER_MAX + 1];
    uint8_t claim_hash[CL_HASH_LEN];
    int64_t expires_at_us;
} ledger_offer_t;

typedef struct ledger_redemption {
    uint64_t seq; /* the CardRedeemed event's sequence number */
    uint64_t card_id;
    char store_id[CL_ID_MAX + 1];
    int64_t amount_minor;
    uint32_t uses;
    int64_t reversed_minor;
    uint32_t reversed_uses;
} ledger_redemption_t;

/* The scalars of the state. */
typedef struct ledger_meta {
    uint64_t last_seq;  /* sequence of the last event applied */
    int64_t last_at_us; /* its timestamp */
    int64_t clock_us;   /* the latest ClockAdvanced (test clock); 0 = wall clock */
    uint64_t next_card_id;
    uint64_t next_batch_id;
    uint64_t cards; /* cards ever issued */
} ledger_meta_t;

/* A due timer: what the ledger must do by itself at a time. */
typedef enum ledger_timer_kind {
    LEDGER_TIMER_EXPIRE = 1, /* the card's validity ends: CardExpired */
    LEDGER_TIMER_REMIND = 2, /* N days before: ExpiryReminded */
    LEDGER_TIMER_OFFER = 3,  /* an unclaimed offer times out: GiftReturned */
} ledger_timer_kind_t;

typedef struct ledger_timer {
    int64_t due_us;
    ledger_timer_kind_t kind;
    uint64_t card_id;
    uint64_t offer_id; /* LEDGER_TIMER_OFFER */
} ledger_timer_t;

/* Creates an empty ledger. Returns 0 or LEDGER_ENOMEM. */
int ledger_new(ledger_t **out);

/* Frees the ledger; accepts NULL and clears the caller's pointer. */
void ledger_destroy(ledger_t **l);

/*
 * Folds one event (ev->seq and ev->at_us set) into the state. Events must come in sequence
 * order, each exactly once. Returns 0, or LEDGER_EMISMATCH when the event names something the
 * state does not have (a journal that does not fit this state: corruption or a bug), or
 * LEDGER_EOVERFLOW. On error the state is unchanged.
 */
int ledger_apply(ledger_t *l, const cl_event_t *ev);

/*
 * Lookups. The returned pointers are valid until the next ledger_apply(), ledger_load_*() or
 * ledger_destroy(); they are NULL when the thing does not exist.
 */
const ledger_meta_t *ledger_meta(const ledger_t *l);
const ledger_merchant_t *ledger_merchant(const ledger_t *l, const char *merchant_id);
const ledger_store_t *ledger_store(const ledger_t *l, const char *merchant_id,
                                   const char *store_id);
const ledger_program_t *ledger_program(const ledger_t *l, const char *merchant_id,
                                       const char *program_id);
const ledger_card_t *ledger_card(const ledger_t *l, uint64_t card_id);
const ledger_card_t *ledger_card_by_code(const ledger_t *l, const char *code);
const ledger_offer_t *ledger_offer(const ledger_t *l, uint64_t offer_id);
const ledger_redemption_t *ledger_redemption(const ledger_t *l, uint64_t seq);
/* Cards of a program held by one holder (for the per-holder limit). */
uint32_t ledger_holder_count(const ledger_t *l, const char *merchant_id, const char *program_id,
                             const char *holder);
/* The card issued for a batch row key, or 0. */
uint64_t ledger_row_card(const ledger_t *l, const char *merchant_id, const char *program_id,
                         const char *row_key);

/* A hint that ledger_row_card() of this row key comes soon: its index entry is fetched. */
void ledger_row_prefetch(const ledger_t *l, const char *merchant_id, const char *program_id,
                         const char *row_key);

/* Fills a reply's view of a card (code masked). */
void ledger_card_view(const ledger_t *l, const ledger_card_t *card, cl_card_view_t *out);

/*
 * Timers. ledger_timer_peek() gives the earliest pending timer (false when none);
 * ledger_timer_pop() moves past it. A timer leaves the set when the event it leads to is folded
 * (CardExpired, ExpiryReminded, the offer's end); one that comes due with nothing to do (a
 * used-up voucher's expiry) stays in the set, and the caller, which checks every timer against
 * the state, passes over it.
 */
bool ledger_timer_peek(const ledger_t *l, ledger_timer_t *out);
void ledger_timer_pop(ledger_t *l);

/*
 * Persistence of the state as plain records, table by table.
 *
 * Tables: "meta", "merchants", "stores", "programs", "cards", "offers", "redemptions",
 * "holders", "rows", "codes", "timers", and "card_values": a card is persisted whole under its
 * key in "cards", and a change to only its value and status (see ledger_card_t) makes only its
 * "card_values" record dirty, which then overrides those fields of "cards"; a change to
 * anything else writes the card whole and deletes its "card_values" record.
 * ledger_dirty_foreach() calls fn once per record changed
 * since the last ledger_dirty_clear(), with the record's key and bytes (rec == NULL: the record
 * was deleted; a "card_values" delete may name a record the store never had, and is then
 * nothing to do). ledger_load_record() puts one record back (during a load, before
 * ledger_rebuild_indexes()). ledger_foreach_record() visits every record of every table (a full
 * snapshot, every card whole and no "card_values": it must go into empty tables; LEDGER_EINVAL
 * for a ledger with a source, which holds only part of the state).
 */
typedef int (*ledger_record_fn)(const char *table, const void *key, size_t key_len, const void *rec,
                                size_t rec_len, void *ctx);
int ledger_dirty_foreach(const ledger_t *l, ledger_record_fn fn, void *ctx);
void ledger_dirty_clear(ledger_t *l);
int ledger_foreach_record(const ledger_t *l, ledger_record_fn fn, void *ctx);
int ledger_load_record(ledger_t *l, const char *table, const void *key, size_t key_len,
                       const void *rec, size_t rec_len);

/*
 * The same records as ledger_dirty_foreach() gives, copied a little at a time while the ledger
 * goes on changing (table_freeze_dirty() in table.h): ledger_freeze_dirty() hands the meta record
 * to fn at once and freezes every table's dirty records as they are now; each is then handed to
 * fn exactly once, as it is now: by ledger_copy_frozen() (about max records a call; *out_left
 * says how many are left, 0 when the freeze is over), or just before a change to it (a failing
 * fn then fails that change, as out of memory would). ledger_frozen_drop() ends a freeze without
 * the rest. fn and ctx must stay valid until the freeze is over. Returns 0 or fn's code.
 */
int ledger_freeze_dirty(ledger_t *l, ledger_record_fn fn, void *ctx);
int ledger_copy_frozen(ledger_t *l, size_t max, size_t *out_left);
void ledger_frozen_drop(ledger_t *l);
/* Before a load: room for `records` records of a table, so it does not grow record by record. */
int ledger_load_reserve(ledger_t *l, const char *table, size_t records);
int ledger_rebuild_indexes(ledger_t *l);

/*
 * Where a cache reads what it does not hold: the checkpoint the ledger was loaded from.
 *   get:  copies the record of table under key into rec (exactly rec_len bytes); returns 1, 0
 *         when there is none, or a negative code (an unreadable store: the ledger aborts).
 *   next: the first key of table greater than after (after_len 0: the first key at all), into
 *         key_out (cap bytes) and *key_len; returns 1, 0 when there is none, or negative.
 */
typedef struct ledger_source {
    int (*get)(void *ctx, const char *table, const void *key, size_t key_len, void *rec,
               size_t rec_len);
    int (*next)(void *ctx, const char *table, const void *after, size_t after_len, void *key_out,
                size_t cap, size_t *key_len);
    void *ctx;
} ledger_source_t;

/*
 * Makes the ledger a cache over source (NULL: no source). Call it after loading the tables
 * ledger_table_is_lazy() says no to, and ledger_rebuild_indexes(), before the first lookup.
 * The source must show the checkpoint the ledger was loaded from, or any later one.
 */
void ledger_set_source(ledger_t *l, const ledger_source_t *source);

/*
 * Lets every table, and the timers' heap, ask for memory before it first writes it
 * (table_set_ahead() in table.h: fn gets ctx, an address and a length, and must not block); NULL
 * asks for nothing.
 */
void ledger_set_ahead(ledger_t *l, void (*fn)(void *ctx, void *addr, size_t len), void *ctx);

/*
 * Bounds a cache's memory: in every lazy table holding more than keep_max records (live, deleted
 * or known absent), forgets the clean ones, which the source then gives back when asked. Only
 * when the source holds every clean record as it is: right after a checkpoint was written, with
 * none being written. Returns the number of records forgotten, LEDGER_EINVAL for a ledger
 * without a source, or LEDGER_ENOMEM (nothing forgotten in that table). Pointers from lookups
 * are void afterwards.
 */
long ledger_forget_clean(ledger_t *l, size_t keep_max);

/* Whether a cache reads this table on demand rather than loading it whole. */
bool ledger_table_is_lazy(const char *table);

/* The name of table i (0, 1, ...), or NULL past the last. */
const char *ledger_table_name(size_t i);

/*
 * A digest of the whole state (XXH3-128 over every record in key order), to show that a
 * restart reproduces exactly the state a full replay gives. Only for a ledger without a
 * source (the whole state in memory).
 */
void ledger_digest(const ledger_t *l, uint8_t out[16]);

#endif /* CARDLEDGER_LEDGER_H */
