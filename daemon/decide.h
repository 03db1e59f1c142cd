/*
 * Deciding commands: what a command does to the ledger, given the state and the time.
 *
 * decide() is pure: it reads the ledger, never changes it, and touches no socket, disk or
 * clock. It answers with the events to append (none for a refusal, except the security events
 * PinRejected and CardLocked) and the reply. The daemon then folds the events into the ledger
 * with ledger_apply(), in order, and calls decide_finish() so the reply shows the card as it
 * is after the command. Commands of one group commit are decided one after the other against
 * the state as it evolves, so two redeems in one batch can never both spend the same balance.
 *
 * Randomness (card codes, PINs, claim secrets) comes through the context, so tests can make
 * it deterministic; the daemon passes libsodium's CSPRNG.
 */
#ifndef CARDLEDGER_DECIDE_H
#define CARDLEDGER_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"
#include "ledger.h"

#define DECIDE_EINVAL  (-34001) /* an argument out of its domain (a bug in the caller) */
#define DECIDE_ENOROOM (-34002) /* the events buffer is too small for this command */

/* Events one command may produce: a full batch issue plus its BatchIssued. */
#define DECIDE_EVENTS_MAX (CL_ISSUE_BATCH_MAX + 1)

/* Secret key length for the keyed hashes of PINs and gift claim secrets. */
#define DECIDE_KEY_LEN 32

typedef void (*decide_random_fn)(void *buf, size_t len, void *ctx);

typedef struct decide_ctx {
    int64_t now_us;          /* the daemon's clock */
    uint64_t next_seq;       /* the sequence number the command's first event will get */
    const uint8_t *key;      /* DECIDE_KEY_LEN bytes: keyed hashes of PINs, claim secrets */
    decide_random_fn random; /* fills buf with CSPRNG bytes */
    void *random_ctx;
    bool test_clock; /* AdvanceClock is accepted (tests and drills only) */
} decide_ctx_t;

typedef struct decide_out {
    cl_event_t *events; /* caller's buffer of events_cap events */
    size_t events_cap;
    size_t events_count;   /* out: events to append, in order */
    cl_reply_t *reply;     /* out: status, message and result (cards filled by decide_finish) */
    cl_issued_row_t *rows; /* caller's buffer for batch issue rows (CL_ISSUE_BATCH_MAX) */
    size_t rows_cap;
} decide_out_t;

const char *decide_strerror(int rc);

/*
 * Decides one command on behalf of `who`. Returns 0 when the command was decided, accepted or
 * refused (out->reply->status tells which; a refusal has a sentence in out->reply->message),
 * or a negative DECIDE_E* code when the call itself was wrong (nothing decided). Each event is
 * filled with its type, request id, actor and payload; seq is ctx->next_seq + its index and
 * at_us is ctx->now_us. Queries the daemon answers from its own state (GetCard) are decided here
 * too, with no events. GetRequest and GetStatus are the daemon's own (they need its storage)
 * and projector queries are refused with CL_WRONG_SERVICE.
 */
int decide(const ledger_t *l, const cl_principal_t *who, const cl_command_t *cmd,
           const decide_ctx_t *ctx, decide_out_t *out);

/*
 * After the daemon has applied out->events to the ledger: fills the reply's card views from
 * the state as it is now.
 */
void decide_finish(const ledger_t *l, const cl_command_t *cmd, decide_out_t *out);

/*
 * The ledger's own events for one due timer (popped with ledger_timer_pop()): CardExpired with
 * the breakage, ExpiryReminded, or GiftReturned. A stale timer (the card already expired, the
 * offer already claimed) produces no events. Returns 0 or a DECIDE_E* code.
 */
int decide_timer(const ledger_t *l, const ledger_timer_t *timer, const decide_ctx_t *ctx,
                 decide_out_t *out);

#endif /* CARDLEDGER_DECIDE_H */
