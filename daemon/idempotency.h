/*
 * idempotency: the durable "did this request already happen" store of the daemon.
 *
 * Every command the daemon decides, accepted or refused, leaves a record under its request id:
 * the XXH3-128 hash of the request's content, when it was decided, and the packed Reply that
 * answered it. A retry with the same id and the same hash is answered with those bytes (plus
 * replayed = true) and appends nothing; the same id with another hash is refused as
 * request_id_reused. Records are written in the same LMDB transaction as the command's journal
 * entries, so a record exists exactly when its events do, across crashes and restarts.
 *
 * Two databases in the journal's environment:
 *   "idempotency"          key request_id        value: version (1 byte), content hash (16),
 *                                                 decided_at_us (8, little-endian), reply length
 *                                                 (4, little-endian), Reply bytes, sealed PINs
 * Version 3 (since 2026-12-07) stores the Reply without its request_id field, which is the key:
 * a packed Reply begins with that field, and idem_get() puts it back, so a replay sends the
 * same bytes. That is 28 of a redeem record's 174 bytes. Version 2 records (the whole Reply)
 * are still read.
 *   "idempotency.by_time"  key decided_at_us (8, big-endian) + request_id, empty value
 * The second keeps records in time order, so the retention purge deletes the oldest ones a few
 * at a time (idem_purge()) without scanning the whole store.
 *
 * The module knows LMDB transactions but not the journal: the caller hands it the transaction
 * (journal_txn_mdb() inside a journal_write() fill, or a read transaction).
 */
#ifndef CARDLEDGER_IDEMPOTENCY_H
#define CARDLEDGER_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "domain.h"

#define IDEM_DB_RECORDS "idempotency"
#define IDEM_DB_BY_TIME "idempotency.by_time"

#define IDEM_RECORD_VERSION       3
#define IDEM_RECORD_VERSION_WHOLE 2 /* the Reply with its request_id field: still read */
#define IDEM_HASH_LEN             16
#define IDEM_HEADER_LEN           (1 + IDEM_HASH_LEN + 8 + 4) /* bytes in front of the Reply */
#define IDEM_KEY_LEN              32 /* the daemon's secret, from which the PIN sealing key derives */

/* Errors besides MDB_* codes. */
#define IDEM_ECORRUPT (-38001) /* a stored record is not in the format above */
#define IDEM_EINVAL   (-38002) /* an argument out of its domain */
#define IDEM_ENOMEM   (-38003) /* allocation failed */

/* The two database handles, opened once in a write transaction that commits. */
typedef struct idem_dbs {
    MDB_dbi records;
    MDB_dbi by_time;
} idem_dbs_t;

/*
 * One stored record. reply is the Reply as it was sent (request_id included): in `owned`, a
 * copy made by idem_get() when the record was stored without the id (free it with
 * idem_record_release()), else in LMDB's memory like sealed, valid until the transaction ends.
 * The stored reply never holds a PIN: PINs shown once at issue are kept apart, sealed
 * (sealed_len > 0), so that a retry of a lost issue reply gets them back while no PIN rests
 * on disk in clear.
 */
typedef struct idem_record {
    uint8_t content_hash[IDEM_HASH_LEN];
    int64_t at_us;
    const uint8_t *reply;
    size_t reply_len;
    const uint8_t *sealed;
    size_t sealed_len;
    uint8_t *owned; /* NULL, or the malloc'd copy reply points at */
} idem_record_t;

/* Frees what idem_get() made for a record (accepts one it never filled, zeroed). */
void idem_record_release(idem_record_t *r);

/* Opens (creates) both databases in a write transaction. Returns 0 or an MDB_* code. */
int idem_open(MDB_txn *txn, idem_dbs_t *out);

/* Looks up a request id. Returns 0 and fills *out (idem_record_release() it after use),
 * MDB_NOTFOUND, IDEM_ECORRUPT, IDEM_ENOMEM or MDB_*. */
int idem_get(MDB_txn *txn, const idem_dbs_t *dbs, const char *request_id, idem_record_t *out);

/*
 * Stores a record (write transaction). Returns 0, IDEM_EINVAL or an MDB_* code (MDB_MAP_FULL:
 * return it from the journal fill so the map grows).
 */
int idem_put(MDB_txn *txn, const idem_dbs_t *dbs, const char *request_id,
             const uint8_t content_hash[IDEM_HASH_LEN], int64_t at_us, const uint8_t *reply,
             size_t reply_len, const uint8_t *sealed, size_t sealed_len);

/* Does the reply carry a PIN (an issue result's, or a batch row's)? */
bool idem_reply_has_pins(const cl_reply_t *r);

/*
 * Moves the reply's PINs into a sealed block (libsodium crypto_secretbox, random nonce, key
 * derived from the daemon's secret) and clears them in *r. *out_sealed is malloc'd; the caller
 * frees it. Returns 0, IDEM_EINVAL or IDEM_ENOMEM.
 */
int idem_seal_pins(const uint8_t key[IDEM_KEY_LEN], cl_reply_t *r, uint8_t **out_sealed,
                   size_t *out_len);

/*
 * Puts the PINs of a sealed block back into a reply decoded from the stored bytes. Returns 0,
 * or IDEM_ECORRUPT when the block does not open with this key or does not fit the reply.
 */
int idem_unseal_pins(const uint8_t key[IDEM_KEY_LEN], const uint8_t *sealed, size_t len,
                     cl_reply_t *r);

/*
 * Deletes at most max_records records decided before cutoff_us, oldest first (write
 * transaction). *out_purged (may be NULL) receives how many went. Returns 0 or an MDB_* code.
 */
int idem_purge(MDB_txn *txn, const idem_dbs_t *dbs, int64_t cutoff_us, size_t max_records,
               size_t *out_purged);

#endif /* CARDLEDGER_IDEMPOTENCY_H */
