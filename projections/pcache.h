/*
 * pcache: the in-memory record cache a projection folds a batch into.
 *
 * Writing every event's changes to LMDB one put at a time is far too slow for a rebuild of
 * millions of events, and would make the bytes on disk depend on where batches end. So a fold
 * changes records here, in memory, and at the end of a batch pcache_write() puts every record
 * changed since the last commit (its whole current value, never a delta), in LMDB key order,
 * in the transaction that also stores the checkpoint. Whatever the batch boundaries, the
 * environment at checkpoint N holds exactly the records of the fold of events 1..N.
 *
 * A record not in the cache is read from the environment through the batch's transaction
 * (read-through) and kept; a key found missing is remembered as missing, so a new card costs
 * one lookup. A cache marked complete (the environment was empty when the fold started and
 * nothing was evicted since) answers misses without asking LMDB at all. After a commit, a cache
 * above its memory limit drops every record (they are all clean then) and reads them again as
 * needed.
 *
 * Records are byte strings of at most the table's val_max bytes; the folds keep fixed-layout
 * structs in them (no padding holes, zero-filled when made, so equal states are equal bytes).
 *
 * Pointers returned by pcache_get()/pcache_put() stay valid until pcache_reset(),
 * pcache_committed() (which may evict) or pcache_destroy(); records never move otherwise.
 */
#ifndef CARDLEDGER_PCACHE_H
#define CARDLEDGER_PCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "proj.h"

/* Creates a cache for `n` tables (n <= PROJ_TABLES_MAX). Returns 0, PROJ_EINVAL, PROJ_ENOMEM. */
int pcache_new(const proj_table_def_t *tables, size_t n, pcache_t **out);

/* Frees the cache and clears the pointer; NULL is fine. */
void pcache_destroy(pcache_t **c);

/* Sets the transaction (and the table handles, in table order) misses read through; txn NULL
 * means misses are answered "missing" only when the cache is complete, else they fail. */
void pcache_bind(pcache_t *c, MDB_txn *txn, const MDB_dbi *dbis);

/* Declares that the environment holds nothing the cache does not (a fresh environment). */
void pcache_set_complete(pcache_t *c, bool complete);

/*
 * The record under key in table t, or NULL when there is none (or a read failed: see
 * pcache_error()). *out_len (may be NULL) receives its length.
 */
const void *pcache_get(pcache_t *c, size_t t, const void *key, size_t klen, size_t *out_len);

/*
 * The record under key, marked changed, for the caller to change in place; NULL when there is
 * none (nothing is made or marked then) or a read failed (see pcache_error()). *out_len (may be
 * NULL) receives its length, which stays as it is. One lookup where pcache_get() followed by
 * pcache_put() of the same length takes two.
 */
void *pcache_get_mut(pcache_t *c, size_t t, const void *key, size_t klen, size_t *out_len);

/*
 * The record under key, made (zero-filled) when missing, marked changed, with its length set
 * to vlen (a longer record is zero-extended, a shorter one cut). *out_created (may be NULL)
 * says whether it is new. NULL when memory runs out, vlen or klen is over the table's limit,
 * or a read failed (pcache_error() says which).
 */
void *pcache_put(pcache_t *c, size_t t, const void *key, size_t klen, size_t vlen,
                 bool *out_created);

/*
 * A new record under a key the caller knows is not in the environment (it contains the
 * sequence of the event being folded, or the ledger guarantees it is unique): made zero-filled
 * and marked changed without asking LMDB. When the key is in the cache already it behaves as
 * pcache_put(). NULL as pcache_put().
 */
void *pcache_insert(pcache_t *c, size_t t, const void *key, size_t klen, size_t vlen);

/*
 * The record under key if the cache holds it (live), else NULL; never reads LMDB, never records
 * an error, changes nothing. For prefetch hooks that need a record to name the next one.
 */
const void *pcache_peek(const pcache_t *c, size_t t, const void *key, size_t klen, size_t *out_len);

/*
 * A hint that key will be looked up soon: stage 0 prefetches its index entry, stage 1 (some
 * events later, when the entry is in cache) the record it points to. For a key about to be
 * inserted, stage 0 is all there is to fetch. Never changes anything.
 */
void pcache_prefetch(const pcache_t *c, size_t t, const void *key, size_t klen, int stage);

/* Deletes the record under key (nothing when missing). */
void pcache_del(pcache_t *c, size_t t, const void *key, size_t klen);

/* The first error a get/put/del met since the last reset (0 = none): PROJ_ENOMEM,
 * PROJ_ELIMIT, PROJ_ECORRUPT (a stored value over val_max) or an MDB_* read error. */
int pcache_error(const pcache_t *c);

/* Writes every changed record (put or delete) into txn, table by table, in key order. The
 * changed set is kept until pcache_committed(), so a failed commit can be redone. Returns 0
 * or an MDB_* code (MDB_MAP_FULL: grow the map and redo in a new transaction). */
int pcache_write(pcache_t *c, MDB_txn *txn, const MDB_dbi *dbis);

/* After the commit of pcache_write()'s transaction: forgets the changed set, drops the records
 * of write_once tables and, above max_bytes of records, every record (the cache is then no
 * longer complete). */
void pcache_committed(pcache_t *c, size_t max_bytes);

/* Drops everything, changes included (after an aborted batch); clears the error and the
 * complete flag. */
void pcache_reset(pcache_t *c);

/* Bytes of record memory held. */
size_t pcache_bytes(const pcache_t *c);

/* Records changed since the last commit, over all tables. */
size_t pcache_dirty_count(const pcache_t *c);

#endif /* CARDLEDGER_PCACHE_H */
