/*
 * pstore: the one place projections touch LMDB.
 *
 * Each projection environment is a directory with LMDB's data.mdb and lock.mdb, holding a
 * "meta" database (the projection's name, its schema version and its checkpoint: the last
 * journal sequence folded into it) and the projection's own named databases. The checkpoint
 * is written in the same write transaction as the records it covers, so what is on disk is
 * always "the fold of events 1..checkpoint", never more, never less.
 *
 * The projector and the offline replay tool both reach LMDB only through this module and the
 * record cache above it (pcache.h), so the same events give the same keys and values in both.
 * pstore_digest() hashes those contents (not the file, whose page layout depends on the
 * transaction history) so two environments can be compared byte for byte.
 *
 * Threads: an environment is used by one thread at a time (the projector's loop).
 * Errors: 0, PROJ_E* (proj.h), an MDB_* code, or a negated errno value.
 */
#ifndef CARDLEDGER_PSTORE_H
#define CARDLEDGER_PSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "proj.h"

/* Map size an environment starts with, and the ceiling of its growth (the map doubles when a
 * commit finds it full). The file on disk only grows as pages are used. */
#define PSTORE_MAP_SIZE_DEFAULT (256ull * 1024 * 1024)
#define PSTORE_MAP_SIZE_MAX     (1024ull * 1024 * 1024 * 1024)

/* What the meta database says. */
typedef struct pstore_meta {
    char name[PROJ_NAME_MAX + 1]; /* the projection's name */
    uint32_t schema_version;
    uint64_t checkpoint; /* 0 = nothing folded yet */
} pstore_meta_t;

/*
 * Opens the environment in `dir` (created, mode 0700, with its parent existing, when missing)
 * with the meta database and `tables_count` named databases called `tables[i]`, created when
 * missing. A new environment gets meta {name, schema_version, checkpoint 0}; an existing one
 * keeps its meta, read into *out_meta (which may be NULL). no_sync opens with MDB_NOSYNC
 * (pstore_close() then syncs). Returns 0 or an error; *out untouched on failure.
 */
int pstore_open(const char *dir, const char *name, uint32_t schema_version,
                const char *const *tables, size_t tables_count, bool no_sync, pstore_t **out,
                pstore_meta_t *out_meta);

/* Syncs (when opened no_sync) and closes; clears the pointer. NULL is fine. No transaction of
 * the environment may be open. */
void pstore_close(pstore_t **s);

/* The directory the environment lives in. */
const char *pstore_dir(const pstore_t *s);

/* The handle of table i (0 .. tables_count - 1). */
MDB_dbi pstore_dbi(const pstore_t *s, size_t i);

/* Begins a write transaction (one at a time). Returns 0 or an MDB_* code. */
int pstore_write_begin(pstore_t *s, MDB_txn **out_txn);

/*
 * Writes the checkpoint into meta and commits the write transaction; *txn is cleared whatever
 * happens. MDB_MAP_FULL means nothing was written: call pstore_grow() and redo the writes in a
 * new transaction. Returns 0 or an MDB_* code.
 */
int pstore_write_commit(pstore_t *s, MDB_txn **txn, uint64_t checkpoint);

/* Aborts a write transaction and clears the pointer (NULL and *txn NULL are fine). */
void pstore_write_abort(pstore_t *s, MDB_txn **txn);

/* Doubles the map (up to PSTORE_MAP_SIZE_MAX, else MDB_MAP_FULL). No transaction may be open
 * in this process on the environment. Returns 0 or an MDB_* code. */
int pstore_grow(pstore_t *s);

/* Begins and ends a read transaction (short: queries and digests). */
int pstore_read_begin(pstore_t *s, MDB_txn **out_txn);
void pstore_read_end(MDB_txn **txn);

/*
 * Begins a query: a read transaction and the checkpoint (sequence) its data reflects. On
 * success the caller ends *out_txn with pstore_read_end(); on failure no transaction is left
 * open and *out_as_of is untouched. Returns 0, PROJ_ECORRUPT, or an MDB_* code.
 */
int pstore_query_begin(pstore_t *s, MDB_txn **out_txn, uint64_t *out_as_of);

/* Reads meta within a transaction (read or write). Returns 0, PROJ_ECORRUPT, or MDB_*. */
int pstore_meta_get(pstore_t *s, MDB_txn *txn, pstore_meta_t *out);

/* Reads meta in its own short read transaction. */
int pstore_meta_read(pstore_t *s, pstore_meta_t *out);

/*
 * XXH3-128 over the whole contents: for the meta database and then each table in order, the
 * database name with its NUL, then for every entry in LMDB key order its key length (8 bytes,
 * little-endian), key, value length and value. Returns 0 or MDB_*.
 */
int pstore_digest(pstore_t *s, uint8_t out[16]);

#endif /* CARDLEDGER_PSTORE_H */
