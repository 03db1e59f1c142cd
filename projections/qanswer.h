/*
 * qanswer: the projector's queries on the wire: a RequestBatch in, a ReplyBatch out.
 *
 * The protobuf edge of the projector. It unpacks the RequestBatch with protobuf-c (the
 * projector queries, Request fields 60..68, are not part of proto/codec, whose domain structs
 * carry no payload for them), checks every named limit, runs each query on the active
 * environments (balances.h, stores.h, analytics.h, pset.h) and on the journal (card history),
 * and packs the ReplyBatch. Each reply carries as_of_seq: the checkpoint of the environment
 * that answered. Commands and queries meant for the daemon get STATUS_WRONG_SERVICE; GetStatus
 * is answered by both.
 *
 * No socket here: query-server.c moves the bytes, and tests can call qanswer_batch() directly.
 * Card codes leave only masked: history entries are re-packed with CardIssued.code masked and
 * the PIN and claim hashes removed.
 */
#ifndef CARDLEDGER_QANSWER_H
#define CARDLEDGER_QANSWER_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "pset.h"

typedef struct qanswer qanswer_t;

/* Makes an answerer (its buffers: about 5 MiB). Returns 0 or PROJ_ENOMEM. */
int qanswer_new(qanswer_t **out);

/* Frees it and clears the pointer; NULL is fine. */
void qanswer_destroy(qanswer_t **q);

/*
 * Answers one frame. The ReplyBatch bytes are written to q's output buffer: *out points to them
 * (valid until the next call or qanswer_destroy()), *out_len is their length, never more than
 * CL_FRAME_MAX_BYTES. A frame that is not a RequestBatch, is over CL_FRAME_MAX_BYTES or holds
 * more than CL_BATCH_REQUESTS_MAX requests is answered with one reply (STATUS_MALFORMED or
 * STATUS_TOO_LARGE, empty request id). A reply that would not fit the frame is replaced by a
 * STATUS_TOO_LARGE one. Returns 0, or PROJ_ENOMEM (nothing to send).
 */
int qanswer_batch(qanswer_t *q, pset_t *ps, journal_t *j, const void *frame, size_t len,
                  const uint8_t **out, size_t *out_len);

#endif /* CARDLEDGER_QANSWER_H */
