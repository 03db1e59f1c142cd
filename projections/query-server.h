/*
 * query-server: the projector's ZeroMQ ROUTER for queries.
 *
 * Moves bytes only: a message is ROUTER envelope frames then one frame holding a RequestBatch
 * (the daemon's framing, docs/protocol.md); the answer goes back under the same envelope as
 * one frame holding the ReplyBatch that qanswer.c made. With projector.c, the one place in
 * projections/ that includes zmq.h.
 */
#ifndef CARDLEDGER_QUERY_SERVER_H
#define CARDLEDGER_QUERY_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "journal.h"
#include "pset.h"

/* Envelope frames a query may carry (ROUTER identities and proxies). */
#define QSERVER_ENVELOPE_FRAMES_MAX 8

typedef struct qserver qserver_t;

/*
 * Binds a ROUTER on endpoint in the ZeroMQ context. Returns 0, or -1 with a sentence in why
 * (bind failure, ...).
 */
int qserver_open(void *zmq_ctx, const char *endpoint, qserver_t **out, char *why, size_t why_cap);

/* Closes the socket (linger 0) and clears the pointer; NULL is fine. */
void qserver_close(qserver_t **s);

/* The socket, for zmq_poll(). */
void *qserver_socket(const qserver_t *s);

/* Answers the queries already waiting, at most max_messages, without blocking. Returns the
 * number of messages answered. */
size_t qserver_serve(qserver_t *s, pset_t *ps, journal_t *j, size_t max_messages);

/* Whether endpoint is ipc://, inproc:// or tcp:// on a loopback address: all this development
 * build (no CurveZMQ keys yet) binds or connects. Otherwise false with a sentence in why. */
bool qserver_endpoint_local(const char *endpoint, char *why, size_t why_cap);

#endif /* CARDLEDGER_QUERY_SERVER_H */
