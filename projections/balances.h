/*
 * balances: every card as it stands, each holder's wallet, the ownership chain of gifted cards,
 * each card's history index, and the outstanding liability per merchant, program and currency.
 *
 * The fold (balances_def.apply) mirrors the card fields of the ledger's write model
 * (projections/ledger.c), so a card view from here equals the daemon's GetCard view at the same
 * sequence; it takes balances and uses from the events' "after" values. Liability follows the
 * valuation rule of proj.h over every card that has not expired (docs/projections.md).
 *
 * The query functions below read the environment in one short read transaction each and
 * report the checkpoint they reflect in *out_as_of. They return 0, PROJ_ENOTFOUND (no such
 * card), PROJ_ECORRUPT, or an MDB_* code; outputs are untouched on failure.
 */
#ifndef CARDLEDGER_BALANCES_H
#define CARDLEDGER_BALANCES_H

#include <stddef.h>
#include <stdint.h>

#include "domain.h"
#include "proj.h"

/* Bumped whenever a record below or the meaning of a figure changes. */
#define BALANCES_SCHEMA_VERSION 1

/* Named limits of the queries. */
#define BALANCES_HISTORY_MAX     1000 /* history entries one reply lists (the most recent) */
#define BALANCES_HISTORY_DEFAULT 100
#define BALANCES_CHAIN_MAX       64   /* holders of the ownership chain one reply lists */
#define BALANCES_WALLET_MAX      1000 /* cards of one wallet one reply lists */
#define BALANCES_LIABILITY_MAX   1024 /* liability rows one reply lists */

/* One holder of a card's ownership chain. */
typedef struct balances_holder {
    char holder[CL_HOLDER_MAX + 1]; /* empty: a bearer card */
    int64_t since_us;               /* issue or claim time */
    uint64_t since_seq;             /* the CardIssued or GiftClaimed sequence */
} balances_holder_t;

/* A card's history: its view, the sequences of its events, and its chain of holders. */
typedef struct balances_history {
    cl_card_view_t card;
    uint64_t seqs[BALANCES_HISTORY_MAX]; /* oldest first: the last `limit` events of the card */
    size_t seqs_count;
    uint64_t events_total;                         /* all events of the card */
    balances_holder_t holders[BALANCES_CHAIN_MAX]; /* first holder first */
    size_t holders_count;
} balances_history_t;

/* Outstanding liability of one program, or (program_id empty) of one currency of a merchant. */
typedef struct balances_liability {
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char currency[CL_CURRENCY_LEN + 1];
    int64_t outstanding_minor; /* value of the cards that have not expired */
    uint64_t live_cards;       /* cards in state active */
    uint64_t uses_outstanding; /* uses left on punch cards and vouchers that have not expired */
} balances_liability_t;

/* A card's view (by card_id, or by code when card_id is 0). */
int balances_card(pstore_t *s, const cl_card_ref_t *ref, cl_card_view_t *out, uint64_t *out_as_of);

/* A card's history: the most recent `limit` events (0 = BALANCES_HISTORY_DEFAULT, capped at
 * BALANCES_HISTORY_MAX) and the chain of holders (the first BALANCES_CHAIN_MAX). */
int balances_history(pstore_t *s, const cl_card_ref_t *ref, uint32_t limit, balances_history_t *out,
                     uint64_t *out_as_of);

/* The cards a holder holds at a merchant, by card_id; at most cap (<= BALANCES_WALLET_MAX).
 * *out_more says whether there were more. */
int balances_wallet(pstore_t *s, const char *merchant_id, const char *holder, cl_card_view_t *out,
                    size_t cap, size_t *out_n, bool *out_more, uint64_t *out_as_of);

/*
 * Liability rows of a merchant: one per program (in program id order), then one per currency
 * with an empty program_id (the merchant's total in that currency). With program_id not
 * empty, only that program's row (PROJ_ENOTFOUND when there is no such program).
 */
int balances_liability(pstore_t *s, const char *merchant_id, const char *program_id,
                       balances_liability_t *out, size_t cap, size_t *out_n, uint64_t *out_as_of);

#endif /* CARDLEDGER_BALANCES_H */
