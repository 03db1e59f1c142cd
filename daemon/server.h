/*
 * server: cardledgerd's command loop with group commit, and its commit thread.
 *
 * One thread owns the ledger and both sockets. It sleeps in zmq_poll() until a message
 * arrives, a commit is done, a ledger timer is due or a checkpoint is due, then takes every
 * message already waiting (up to DAEMON_COMMIT_REQUESTS_MAX requests), decides each request in
 * order against the ledger as it evolves, and folds the events in at once. The group's events
 * and idempotency records are committed in ONE durable journal_write() by a second thread,
 * while the loop decides the next group. Only when a group's commit is done are its replies
 * sent (one ReplyBatch per incoming message, envelope preserved) and its events published on
 * the PUB socket. docs/daemon.md describes the write path in full.
 */
#ifndef CARDLEDGER_SERVER_H
#define CARDLEDGER_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "checkpoint.h"
#include "config.h"
#include "idempotency.h"
#include "journal.h"
#include "ledger.h"

/* ---- Named limits of the write path (docs/daemon.md lists them) ---------------------------- */

/* Requests decided in one commit cycle; messages are taken whole, so up to this plus one
 * message's CL_BATCH_REQUESTS_MAX. */
#define DAEMON_COMMIT_REQUESTS_MAX 4096
/* Incoming messages taken in one commit cycle. */
#define DAEMON_COMMIT_MESSAGES_MAX 4096
/* Journal entries in one transaction; a cycle that would pass it commits early. */
#define DAEMON_COMMIT_EVENTS_MAX 32768
/* Bytes of encoded events in one transaction before it commits early. */
#define DAEMON_COMMIT_EVENT_BYTES_MAX (32u * 1024u * 1024u)
/* Due ledger timers (expiry, reminders, gift returns) handled per cycle; the rest follow at
 * once in the next cycle. */
#define DAEMON_TIMERS_PER_CYCLE_MAX 8192
/* Idempotency records past retention deleted per commit. */
#define DAEMON_IDEMPOTENCY_PURGE_MAX 1024
/* Frames of a ROUTER envelope (identities and delimiters) in front of the request frame. */
#define DAEMON_ENVELOPE_FRAMES_MAX 8
/* Messages queued per peer on the ROUTER and for all subscribers on the PUB socket. */
#define DAEMON_ROUTER_HWM 100000
#define DAEMON_PUB_HWM    100000
/* How long closing a socket may wait to deliver what is queued. */
#define DAEMON_LINGER_MS 200
/* zmq_poll() never sleeps longer than this, so the loop looks at its clock now and then. */
#define DAEMON_POLL_MAX_MS 1000
/* A PUB topic: "<merchant_id>/<EventName>". */
#define DAEMON_TOPIC_MAX (CL_ID_MAX + 32)

typedef struct server server_t;

typedef struct server_opts {
    const daemon_config_t *cfg;
    journal_t *journal;              /* open for writing */
    ledger_t *ledger;                /* loaded; the server takes it over */
    journal_t *state;                /* the checkpoint's environment, open for writing */
    checkpoint_source_t *source;     /* the ledger's source (or NULL); stays the caller's */
    checkpointer_t *writer;          /* the background checkpoint writer; stays the caller's */
    const checkpoint_info_t *loaded; /* what checkpoint_load() did */
    idem_dbs_t idem;                 /* the idempotency databases, opened */
    const uint8_t *key;              /* DECIDE_KEY_LEN bytes: the secret for PIN and claim hashes */
    void *router;                    /* bound ROUTER socket for commands */
    void *pub;                       /* bound PUB socket for events */
    const auth_t *auth;              /* CurveZMQ principals (daemon/auth.h), or NULL */
} server_opts_t;

/* Errors besides the modules' own codes. */
#define SERVER_ENOMEM (-40001)
#define SERVER_EZMQ   (-40002) /* a socket failed in a way the loop cannot go on from */

/* Makes a server (allocating every buffer of the hot path). Returns 0 or SERVER_ENOMEM. */
int server_new(const server_opts_t *opts, server_t **out);

/*
 * Runs the loop until *stop becomes non-zero (set by a signal handler, which also writes a byte
 * to wake_fd, the write end of a pipe whose read end is wake_fd_read, so a signal that lands
 * just before zmq_poll() still wakes it); the cycle in hand is committed and answered before it
 * returns. Then writes a final checkpoint. Returns 0, or a negative code after a failure the
 * daemon cannot go on from (logged).
 */
int server_run(server_t *s, volatile sig_atomic_t *stop, int wake_fd_read);

/* Frees the server and the ledger it took over; accepts NULL and clears the pointer. */
void server_destroy(server_t **s);

#endif /* CARDLEDGER_SERVER_H */
