/*
 * stores: what happened at each store. Per store and UTC day the redemptions (count, value,
 * uses) and reversals (count, value); the list of a store's redemptions in a time range for a
 * cashier's end-of-day reconciliation; and the settlement matrix: value of cards sold at store
 * A (or online in region R) and redeemed at store B, net of reversals.
 *
 * "Value" is the liability a redemption consumes, by the valuation rule of proj.h: the amount
 * taken from a stored-value card; for punch cards and vouchers the share of the face value the
 * uses represent. A voucher's discount is kept beside it (docs/analytics.md explains why the
 * two differ). Everything is attributed to the day of the event's journal timestamp.
 *
 * Query functions read in one short read transaction and report the checkpoint they reflect.
 * They return 0, PROJ_EINVAL, PROJ_ECORRUPT or an MDB_* code; outputs untouched on failure.
 */
#ifndef CARDLEDGER_STORES_H
#define CARDLEDGER_STORES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"
#include "proj.h"

#define STORES_SCHEMA_VERSION 1

#define STORES_LINES_MAX      1000 /* redemption lines one reply lists */
#define STORES_LINES_DEFAULT  100
#define STORES_SETTLEMENT_MAX 10000           /* settlement cells one reply lists */
#define STORES_SOLD_KEY_MAX   (CL_ID_MAX + 1) /* a store id or "region:<code>" */

/* One store's day. */
typedef struct stores_day {
    uint64_t redemptions;
    int64_t redeemed_minor; /* value, before reversals */
    uint64_t uses_redeemed;
    uint64_t reversals; /* reversals made at this store this day */
    int64_t reversed_minor;
    uint64_t uses_reversed;
    int64_t discount_minor; /* vouchers: discounts given, before reversals */
} stores_day_t;

/* One redemption of a store. */
typedef struct stores_line {
    uint64_t seq;
    int64_t at_us;
    uint64_t card_id;
    char code_masked[CL_CODE_MAX + 8];
    char order_ref[CL_ORDER_REF_MAX + 1];
    int64_t amount_minor; /* value */
    uint32_t uses;
    int64_t discount_minor;
    int64_t reversed_minor; /* value reversed so far, wherever */
    uint32_t reversed_uses;
} stores_line_t;

/* One cell of the settlement matrix. */
typedef struct stores_cell {
    char sold[STORES_SOLD_KEY_MAX + 1]; /* the selling store, or "region:<code>" */
    char redeemed_store_id[CL_ID_MAX + 1];
    uint64_t redemptions;
    int64_t value_minor; /* net of reversals */
} stores_cell_t;

/* A store's day (any time inside the UTC day); zeros when nothing happened. */
int stores_day(pstore_t *s, const char *merchant_id, const char *store_id, int64_t day_us,
               stores_day_t *out, uint64_t *out_as_of);

/*
 * A store's redemptions with from_us <= at < to_us (to_us 0: no end), oldest first, after the
 * redemption after_seq when it is not 0 (paging), at most limit (0 = STORES_LINES_DEFAULT,
 * capped at STORES_LINES_MAX and cap). *out_more says whether more lines follow.
 */
int stores_redemptions(pstore_t *s, const char *merchant_id, const char *store_id, int64_t from_us,
                       int64_t to_us, uint32_t limit, uint64_t after_seq, stores_line_t *out,
                       size_t cap, size_t *out_n, bool *out_more, uint64_t *out_as_of);

/* The settlement matrix of a merchant over the UTC days touching [from_us, to_us), by selling
 * place then redeeming store. At most cap cells; *out_more says whether some were left out. */
int stores_settlement(pstore_t *s, const char *merchant_id, int64_t from_us, int64_t to_us,
                      stores_cell_t *out, size_t cap, size_t *out_n, bool *out_more,
                      uint64_t *out_as_of);

#endif /* CARDLEDGER_STORES_H */
