/*
 * The CLI's protobuf edge for the projector's queries.
 *
 * The codec (proto/) translates the daemon's commands and replies into domain.h's structs, but
 * carries no payload for the projector's queries (Request fields 60..68) or their results
 * (Reply fields 20..27). This module is the one place in client/ that includes the generated
 * cardledger.pb-c.h, like projections/qanswer.c on the projector's side: it packs a query
 * (cliq_query_t) into a Request, sends it with cl_client_call_raw() (so the timeout and the
 * retries with the same request id are libcardledger's), and unpacks the Reply into the plain
 * structs below, which the CLI prints. For --json it also writes the whole result, every field
 * of the contract, by walking the message's descriptor (cliq_reply_json()).
 */
#ifndef CARDLEDGER_CLI_QUERIES_H
#define CARDLEDGER_CLI_QUERIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cardledger.h"
#include "json.h"

#define CLIQ_ENOMEM  (-36201) /* an allocation failed */
#define CLIQ_EPROTO  (-36202) /* the reply is not a Reply, or not the result the query asks */
#define CLIQ_EENCODE (-36203) /* the query could not be encoded (a string over its limit) */

/* The projector's limits the CLI checks before sending (docs/projections.md). */
#define CLIQ_LIMIT_MAX    1000 /* CardHistory and StoreRedemptions rows */
#define CLIQ_NAME_MAX     32   /* a projection's name */
#define CLIQ_GROUP_BY_MAX 5    /* GROUP_BY_STORE */

/* The queries, numbered as their Request fields. */
typedef enum cliq_type {
    CLIQ_HISTORY = 60,
    CLIQ_WALLET = 61,
    CLIQ_LIABILITY = 62,
    CLIQ_STORE_DAY = 63,
    CLIQ_STORE_REDEMPTIONS = 64,
    CLIQ_SETTLEMENT = 65,
    CLIQ_ANALYTICS = 66,
    CLIQ_PROJECTION_STATUS = 67,
    CLIQ_REBUILD = 68,
} cliq_type_t;

/* One query; which fields count depends on the type (cardledger.proto). */
typedef struct cliq_query {
    cliq_type_t type;
    char request_id[CL_REQUEST_ID_MAX + 1]; /* the idempotency key; must not be empty */
    cl_card_ref_t card;                     /* HISTORY */
    uint32_t limit;                         /* HISTORY, STORE_REDEMPTIONS (0 = default) */
    char merchant_id[CL_ID_MAX + 1];        /* all but HISTORY, status and rebuild */
    char holder[CL_HOLDER_MAX + 1];         /* WALLET */
    char program_id[CL_ID_MAX + 1];         /* LIABILITY, ANALYTICS (empty = all) */
    char store_id[CL_ID_MAX + 1];           /* STORE_DAY, STORE_REDEMPTIONS */
    int64_t day_us;                         /* STORE_DAY: any time inside the UTC day */
    int64_t from_us;                        /* STORE_REDEMPTIONS, SETTLEMENT, ANALYTICS */
    int64_t to_us;                          /* ... (0 = no end) */
    uint64_t after_seq;                     /* STORE_REDEMPTIONS: paging */
    uint32_t group_by;                      /* ANALYTICS: 0 = none, 1 day .. 5 store */
    char name[CLIQ_NAME_MAX + 1];           /* REBUILD: the projection */
} cliq_query_t;

/* One event of a card's history. Strings point into the reply (see cliq_reply_t). */
typedef struct cliq_history_entry {
    uint64_t seq;         /* the journal sequence */
    int64_t at_us;        /* when it was written */
    const char *event;    /* the JournalEntry's event field name ("card_redeemed") */
    bool has_amount;      /* the event carries an amount (below) */
    int64_t amount_minor; /* amount_minor, delta_minor, face_value_minor or breakage_minor */
    const char *store_id; /* the event's store, "" when it has none */
} cliq_history_entry_t;

typedef struct cliq_liability_row {
    const char *merchant_id;
    const char *program_id; /* "" on a per-currency total row */
    const char *currency;
    int64_t outstanding_minor; /* value of the cards that have not expired */
    uint64_t live_cards;       /* active cards */
    uint64_t uses_outstanding; /* uses left on punch cards and vouchers */
} cliq_liability_row_t;

typedef struct cliq_store_day {
    const char *store_id;
    int64_t day_start_us;   /* 00:00 UTC of the day */
    uint64_t redemptions;   /* redemptions made there that day */
    int64_t redeemed_minor; /* their value */
    uint64_t reversals;     /* reversals made there that day */
    int64_t reversed_minor; /* their value */
    uint64_t uses_redeemed; /* punch and voucher uses */
    int64_t discount_minor; /* voucher discounts given, before reversals */
} cliq_store_day_t;

typedef struct cliq_redemption_line {
    uint64_t seq;            /* the CardRedeemed event's sequence */
    int64_t at_us;           /* when */
    uint64_t card_id;        /* which card */
    const char *code_masked; /* its code, masked */
    const char *order_ref;   /* the merchant's order */
    int64_t amount_minor;    /* value taken */
    uint32_t uses;           /* uses taken */
    int64_t reversed_minor;  /* value reversed since */
    uint32_t reversed_uses;  /* uses reversed since */
    int64_t discount_minor;  /* vouchers: the discount */
} cliq_redemption_line_t;

typedef struct cliq_settlement_cell {
    const char *sold_store_id;     /* or "region:<code>" when sold without a store */
    const char *redeemed_store_id; /* where it was redeemed */
    uint64_t redemptions;          /* how many */
    int64_t value_minor;           /* value, net of reversals */
} cliq_settlement_cell_t;

/* The figures of one analytics row the tables show; --json carries all of them. */
typedef struct cliq_analytics_row {
    const char *key;                    /* the group's value, "" for one row over the range */
    const char *currency;               /* rows never mix currencies */
    uint64_t issued_count;              /* cards issued */
    int64_t issued_face_minor;          /* their face value */
    int64_t price_paid_minor;           /* what buyers paid */
    int64_t reloaded_minor;             /* reloads */
    int64_t redeemed_net_minor;         /* redemptions net of reversals */
    uint64_t redemption_count;          /* redemptions */
    int64_t breakage_minor;             /* value expired */
    int64_t outstanding_minor;          /* value still on the cards */
    uint32_t value_redemption_rate_ppm; /* redeemed / issued value */
    uint32_t card_redemption_rate_ppm;  /* cards redeemed / issued */
    uint32_t gift_rate_ppm;             /* cards gifted / issued */
    uint32_t cross_region_share_ppm;    /* redemptions outside the selling region */
} cliq_analytics_row_t;

typedef struct cliq_projection {
    const char *name;                /* balances, stores, analytics */
    uint32_t schema_version;         /* of the active environment */
    uint32_t code_schema_version;    /* the version this projector folds */
    uint64_t checkpoint_seq;         /* folded up to here */
    uint64_t journal_head_seq;       /* the journal's head */
    uint64_t lag_events;             /* head - checkpoint */
    bool rebuilding;                 /* a blue/green rebuild runs */
    uint32_t rebuild_schema_version; /* ... at this version */
    uint64_t rebuild_checkpoint_seq; /* ... folded up to here */
    uint64_t rebuild_events_per_s;   /* ... this fast */
    uint64_t rebuild_eta_s;          /* ... done in about this long */
    const char *error;               /* why it stopped folding; "" when healthy */
} cliq_projection_t;

/*
 * A decoded reply. Strings and arrays point into memory the reply owns; they stay valid until
 * cliq_reply_free(). Only the arrays of the result the query asked for are set (n > 0).
 */
typedef struct cliq_reply {
    const char *request_id;
    cl_status_t status; /* CL_OK, or the refusal */
    const char *message;
    bool replayed;
    uint64_t last_seq;
    uint64_t as_of_seq; /* the checkpoint the answer reflects */
    int result;         /* the Reply field of the result (20..27), 0 for none */

    cl_card_view_t card; /* HISTORY */
    cliq_history_entry_t *entries;
    size_t entries_n;
    const char **holders; /* HISTORY: the chain of holders, first first */
    size_t holders_n;
    uint64_t events_total;

    cl_card_view_t *cards; /* WALLET */
    size_t cards_n;

    cliq_liability_row_t *liability; /* LIABILITY */
    size_t liability_n;

    cliq_store_day_t store_day; /* STORE_DAY */

    cliq_redemption_line_t *lines; /* STORE_REDEMPTIONS */
    size_t lines_n;
    bool more;

    cliq_settlement_cell_t *cells; /* SETTLEMENT */
    size_t cells_n;

    cliq_analytics_row_t *rows; /* ANALYTICS */
    size_t rows_n;

    cliq_projection_t *projections; /* PROJECTION_STATUS */
    size_t projections_n;

    void *priv; /* the unpacked message; private to queries.c */
} cliq_reply_t;

/* The sentence of a CLIQ_E* code; never NULL. */
const char *cliq_strerror(int rc);

/*
 * Sends q over c (cl_client_call_raw(): timeout and retries with q->request_id) and decodes the
 * reply. Returns 0 with a new reply in *out (free it with cliq_reply_free()), a CLIENT_E* code
 * from libcardledger (CLIENT_ETIMEOUT: the projector did not answer), CLIQ_EENCODE, CLIQ_EPROTO
 * or CLIQ_ENOMEM. *out is untouched on failure.
 */
int cliq_call(cl_client_t *c, const cliq_query_t *q, cliq_reply_t **out);

/* Frees a reply and sets *r to NULL; accepts NULL and *r == NULL. */
void cliq_reply_free(cliq_reply_t **r);

/* Parses a grouping name (day, program, channel, region, store) into *out (1..5). */
bool cliq_group_by_parse(const char *s, uint32_t *out);

/*
 * Writes the reply's members into the JSON object open in j: request_id, status (its name),
 * status_code, message, replayed, last_seq, as_of_seq, result (the result's field name, or
 * "none"), and the result itself as an object under that name with every field of the
 * contract. Money and counts are integers (minor units, ppm); enum values are names
 * ("stored-value"); bytes are hex.
 */
void cliq_reply_json(const cliq_reply_t *r, json_t *j);

#endif /* CARDLEDGER_CLI_QUERIES_H */
