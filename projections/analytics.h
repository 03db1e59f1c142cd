/*
 * analytics: the figures of PRODUCT.md section 7 per merchant, program, UTC day, channel,
 * region and store, summable over any range of days.
 *
 * The fold keeps, per merchant, day and program, three sets of cells: one per sales channel,
 * one per region and one per store. Every figure an event makes is added to one cell of each
 * set, so each set alone sums to the merchant's totals. docs/analytics.md gives every figure's
 * definition and, for each, which event time, program, channel, region and store it is
 * attributed to; analytics_query() computes the rows of the Analytics query from the cells.
 *
 * Money sums are int64 minor units, overflow-checked (an overflow stops the fold); rates are
 * integer parts per million, rounded down, clamped to 0 .. UINT32_MAX.
 */
#ifndef CARDLEDGER_ANALYTICS_H
#define CARDLEDGER_ANALYTICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"
#include "proj.h"

#define ANALYTICS_SCHEMA_VERSION 1

#define ANALYTICS_ROWS_MAX    5000 /* rows one reply lists */
#define ANALYTICS_DENOMS_MAX  32   /* denominations one row lists (the most issued) */
#define ANALYTICS_KEY_MAX     40   /* a row key: a day, program, channel, region or store */
#define ANALYTICS_LAG_BUCKETS 5    /* <1 d, 1-7 d, 7-30 d, 30-90 d, >= 90 d */

/* How rows are grouped: the numbers are the wire's (enum GroupBy). */
typedef enum analytics_group {
    ANALYTICS_GROUP_NONE = 0,
    ANALYTICS_GROUP_DAY = 1,
    ANALYTICS_GROUP_PROGRAM = 2,
    ANALYTICS_GROUP_CHANNEL = 3,
    ANALYTICS_GROUP_REGION = 4,
    ANALYTICS_GROUP_STORE = 5,
} analytics_group_t;

typedef struct analytics_denom {
    int64_t face_value_minor;
    uint64_t cards;
} analytics_denom_t;

/* One row: a group (and currency) over the range. See docs/analytics.md. */
typedef struct analytics_row {
    char key[ANALYTICS_KEY_MAX + 1]; /* YYYY-MM-DD, program, channel, region, store; "" = all */
    char currency[CL_CURRENCY_LEN + 1];
    uint64_t issued_count;
    int64_t issued_face_minor;
    int64_t price_paid_minor;
    int64_t reloaded_minor;
    int64_t redeemed_net_minor; /* value redeemed minus value reversed */
    uint64_t redemption_count;
    uint64_t reversal_count;
    int64_t avg_redemption_minor; /* redeemed_net / redemption_count, toward zero */
    int64_t breakage_minor;
    uint64_t expired_cards;
    int64_t adjusted_minor;
    int64_t transferred_net_minor; /* balance transfers in minus out */
    int64_t discount_net_minor;    /* vouchers: discounts given minus discounts reversed */
    int64_t outstanding_minor;     /* at the end of the range (see docs/analytics.md) */
    uint32_t value_redemption_rate_ppm;
    uint32_t card_redemption_rate_ppm;
    uint32_t gift_rate_ppm;
    uint32_t cross_region_share_ppm;
    uint64_t cards_redeemed;
    uint64_t cards_gifted;
    uint64_t cross_region_redemptions;
    uint64_t lag_buckets[ANALYTICS_LAG_BUCKETS];
    analytics_denom_t denominations[ANALYTICS_DENOMS_MAX]; /* by face value */
    size_t denominations_count;
} analytics_row_t;

/*
 * The rows of a merchant over the UTC days touching [from_us, to_us) (0: no bound), grouped
 * by `group`, optionally for one program (program_id NULL or empty: all), sorted by key then
 * currency. At most cap rows (<= ANALYTICS_ROWS_MAX); *out_more says whether some were left
 * out. Reads in one short read transaction; *out_as_of is the checkpoint it reflects.
 * Returns 0, PROJ_EINVAL (an unknown group), PROJ_ENOMEM, PROJ_ECORRUPT or an MDB_* code.
 */
int analytics_query(pstore_t *s, const char *merchant_id, int64_t from_us, int64_t to_us,
                    analytics_group_t group, const char *program_id, analytics_row_t *out,
                    size_t cap, size_t *out_n, bool *out_more, uint64_t *out_as_of);

#endif /* CARDLEDGER_ANALYTICS_H */
