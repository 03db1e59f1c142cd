/*
 * journal: the append-only, hash-chained event journal of cardledger, on LMDB.
 *
 * The journal stores opaque payloads (the daemon's protobuf JournalEntry envelopes) under
 * 64-bit sequence numbers that start at 1, only grow and never leave a gap. Every entry
 * carries a timestamp and an XXH3-128 hash over the previous entry's hash, its own header and
 * its payload, so a single flipped bit anywhere in the history is detected by the verifier and
 * named by sequence number. The journal knows bytes and sequence numbers, never card rules.
 *
 * The on-disk format (version 1) is specified in docs/journal-format.md; this header is the
 * C interface to it. One LMDB environment holds the journal's two named databases
 * ("journal.meta" and "journal.entries") and may hold the caller's own databases, which the
 * caller writes in the same transactions as journal entries (see journal_write()).
 *
 * Threads: journal_write()/journal_append() may be called from any thread; they are
 * serialized internally. Readers, journal_read(), journal_head(), journal_verify(),
 * journal_stat() and journal_copy() may run concurrently with them from other threads; a single
 * journal_reader_t must be used by one thread at a time. A journal_t must not be used across
 * fork(): a child process opens its own. Only one process should write a journal at a time;
 * any number of processes may read it, also while it grows (MDB_MAP_RESIZED is handled).
 *
 * Errors: every function returns 0 on success or a negative code: one of the JOURNAL_E*
 * codes below, an LMDB MDB_* code, or a negated errno value. journal_strerror() names all of
 * them. JOURNAL_END (positive) is not an error: it ends a reader's iteration.
 */
#ifndef CARDLEDGER_JOURNAL_H
#define CARDLEDGER_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Format constants and limits ------------------------------------------------------- */

/** The journal format version this code reads and writes (journal.meta key "format"). */
#define JOURNAL_FORMAT_VERSION 1u
/** The entry header version written at offset 20 of every entry value. */
#define JOURNAL_ENTRY_VERSION 1u
/** Size of an entry's hash: XXH3-128 in canonical (big-endian) form. */
#define JOURNAL_HASH_SIZE 16u
/** Size of the fixed header in front of every entry's payload. */
#define JOURNAL_HEADER_SIZE 40u
/** Size of the random journal id stored in journal.meta. */
#define JOURNAL_ID_SIZE 16u
/** Largest payload one entry may carry (1 MiB). Larger payloads get JOURNAL_ETOOBIG. */
#define JOURNAL_PAYLOAD_MAX (1024u * 1024u)
/** Most entries one journal_write() transaction (or one journal_append() batch) may append. */
#define JOURNAL_TXN_ENTRIES_MAX 65536u

/** Default initial map size for a writer (64 MiB); the map doubles on demand. */
#define JOURNAL_MAP_SIZE_DEFAULT (64ull * 1024 * 1024)
/** Default ceiling for map growth (1 TiB). */
#define JOURNAL_MAP_SIZE_MAX_DEFAULT (1024ull * 1024 * 1024 * 1024)
/** Smallest accepted map size (1 MiB). */
#define JOURNAL_MAP_SIZE_MIN (1024ull * 1024)
/** Default and smallest number of named databases in the environment (2 are the journal's). */
#define JOURNAL_MAX_DBS_DEFAULT 16u
/** Largest accepted number of named databases in the environment. */
#define JOURNAL_MAX_DBS_MAX 1024u

/** Names of the journal's own databases; callers must not use these names. */
#define JOURNAL_DB_META    "journal.meta"
#define JOURNAL_DB_ENTRIES "journal.entries"

/* ---- Return codes ---------------------------------------------------------------------- */

/** journal_reader_next(): no entry after the last one returned (not an error). */
#define JOURNAL_END 1

/* The journal's own codes lie below LMDB's range (MDB_KEYEXIST is -30799) and far below the
 * negated errno values (-1 .. -4095). */
/** The append would leave a gap or reuse a sequence number. */
#define JOURNAL_EGAP -31000
/** An entry is structurally bad: key/sequence mismatch, bad length, unknown version or flags,
 *  or a sequence number is missing. */
#define JOURNAL_ECORRUPT -31001
/** An entry's stored hash does not match the hash chain. */
#define JOURNAL_ECHAIN -31002
/** The environment is not a journal of a format this code understands. */
#define JOURNAL_EVERSION -31003
/** The disk is full, or the map would have to grow beyond map_size_max_bytes. */
#define JOURNAL_EFULL -31004
/** No such journal, entry or range. */
#define JOURNAL_ENOTFOUND -31005
/** An argument is out of range or inconsistent. */
#define JOURNAL_EINVAL -31006
/** A write was attempted on a journal opened read-only. */
#define JOURNAL_EREADONLY -31007
/** A payload exceeds JOURNAL_PAYLOAD_MAX, a batch exceeds JOURNAL_TXN_ENTRIES_MAX, or an
 *  entry does not fit the caller's buffer. */
#define JOURNAL_ETOOBIG -31008
/** The first and last of the journal's own codes, for range checks. */
#define JOURNAL_ERRCODE_FIRST JOURNAL_ETOOBIG
#define JOURNAL_ERRCODE_LAST  JOURNAL_EGAP

/* ---- Types ----------------------------------------------------------------------------- */

/** An open journal (one LMDB environment). */
typedef struct journal journal_t;
/** A write transaction in progress, handed to a journal_fill_fn. */
typedef struct journal_txn journal_txn_t;
/** A verifying iterator over the journal's entries. */
typedef struct journal_reader journal_reader_t;

/** Options for journal_open(). A zeroed struct (or NULL) means all defaults. */
typedef struct journal_opts {
    /** Open without writing: no directory creation, journal_write() gets JOURNAL_EREADONLY. */
    bool read_only;
    /** Writer: map size to start with if the journal's stored map is smaller; 0 = default.
     *  Rounded up to the OS page size. Ignored by read-only openers. */
    uint64_t map_size_bytes;
    /** Writer: the map never grows beyond this; 0 = JOURNAL_MAP_SIZE_MAX_DEFAULT. */
    uint64_t map_size_max_bytes;
    /** Named databases the environment may hold, the journal's two included; 0 = default. */
    unsigned max_dbs;
} journal_opts_t;

/** The last entry of the journal: what the next entry chains onto. */
typedef struct journal_head {
    /** Sequence number of the last entry; 0 for an empty journal. */
    uint64_t seq;
    /** Timestamp of the last entry; 0 for an empty journal. */
    int64_t timestamp_us;
    /** Hash of the last entry; all zero for an empty journal. */
    uint8_t hash[JOURNAL_HASH_SIZE];
} journal_head_t;

/** One entry as read from the journal, or as handed to journal_txn_append_entry(). */
typedef struct journal_entry {
    /** Sequence number (1, 2, 3, ...). */
    uint64_t seq;
    /** Microseconds since the Unix epoch, from the writer's clock. */
    int64_t timestamp_us;
    /** Entry header version (JOURNAL_ENTRY_VERSION). */
    uint16_t version;
    /** Entry flags; 0 in format version 1. */
    uint16_t flags;
    /** XXH3-128 chain hash, canonical big-endian bytes. */
    uint8_t hash[JOURNAL_HASH_SIZE];
    /** Payload bytes; lifetime depends on the function that filled the struct. */
    const void *payload;
    /** Payload length in bytes, at most JOURNAL_PAYLOAD_MAX. */
    size_t payload_len;
} journal_entry_t;

/** One payload to append with journal_append(). */
typedef struct journal_record {
    /** Microseconds since the Unix epoch, from the caller's (the daemon's) clock. */
    int64_t timestamp_us;
    /** Payload bytes (may be NULL when payload_len is 0). */
    const void *payload;
    /** Payload length in bytes, at most JOURNAL_PAYLOAD_MAX. */
    size_t payload_len;
} journal_record_t;

/** What journal_verify() looked at. */
typedef struct journal_verify_stats {
    /** Entries whose structure and chain link were checked and found intact. */
    uint64_t entries_checked;
    /** First and last sequence number of the checked range (0, 0 if empty). */
    uint64_t first_seq;
    uint64_t last_seq;
    /** Sum of the checked entries' payload lengths. */
    uint64_t payload_bytes;
} journal_verify_stats_t;

/** What journal_stat() reports. */
typedef struct journal_stat {
    /** Format version from journal.meta. */
    uint32_t format_version;
    /** Random id of this journal, from journal.meta (copies keep it). */
    uint8_t journal_id[JOURNAL_ID_SIZE];
    /** When the journal was created, microseconds since the Unix epoch. */
    int64_t created_us;
    /** Number of entries. */
    uint64_t entries;
    /** Sequence numbers of the first and last entry (0 when empty). */
    uint64_t first_seq;
    uint64_t head_seq;
    /** Hash of the last entry (zero when empty). */
    uint8_t head_hash[JOURNAL_HASH_SIZE];
    /** Timestamps of the first and last entry (0 when empty). */
    int64_t first_timestamp_us;
    int64_t last_timestamp_us;
    /** Size of data.mdb on disk. */
    uint64_t file_size_bytes;
    /** Current map size of this opener. */
    uint64_t map_size_bytes;
    /** Bytes of the map in use: (last page number + 1) * page size. */
    uint64_t map_used_bytes;
    /** LMDB page size. */
    uint32_t page_size_bytes;
    /** Pages of journal.entries: B-tree branch, leaf and overflow pages, and tree depth. */
    uint64_t entries_branch_pages;
    uint64_t entries_leaf_pages;
    uint64_t entries_overflow_pages;
    uint32_t entries_depth;
} journal_stat_t;

/**
 * Fills one write transaction; see journal_write().
 *
 * @param txn  the transaction; valid only during this call.
 * @param ctx  the caller's context, as passed to journal_write().
 * @return 0 to commit, any other value to abort (journal_write() then returns it).
 */
typedef int (*journal_fill_fn)(journal_txn_t *txn, void *ctx);

/* ---- Opening and closing ----------------------------------------------------------------- */

/**
 * Opens (a writer creates, if missing) the journal in directory @p dir.
 *
 * A writer creates @p dir (mode 0700, parent must exist) and a new journal in it when the
 * directory holds no LMDB environment yet, writing journal.meta (format, created_us, a random
 * journal_id). It then loads the head and checks that the last entry is structurally valid,
 * chains onto the one before it, and that the entry count equals the last sequence number.
 *
 * @param dir          directory of the LMDB environment (data.mdb, lock.mdb).
 * @param opts         options, or NULL for defaults (a writer with default map sizes).
 * @param out_journal  receives the journal; untouched on failure.
 * @return 0; JOURNAL_EINVAL for bad options; JOURNAL_ENOTFOUND if a read-only opener finds no
 *         journal; JOURNAL_EVERSION if the environment is not a format-1 journal;
 *         JOURNAL_ECORRUPT/JOURNAL_ECHAIN if a writer finds a damaged last entry; an MDB_* code
 *         or negated errno otherwise.
 */
int journal_open(const char *dir, const journal_opts_t *opts, journal_t **out_journal);

/**
 * Closes a journal and sets *@p j to NULL. Accepts NULL and a pointer to NULL.
 * All readers of the journal must have been closed first.
 */
void journal_close(journal_t **j);

/**
 * The LMDB environment, so callers can keep their own named databases next to the journal.
 *
 * Every transaction on it must go through the journal, because the journal remaps the
 * environment when it grows and that must not happen under an open transaction in this
 * process: write with journal_write() (mdb_dbi_open with MDB_CREATE inside a fill callback,
 * via journal_txn_mdb()), and read with journal_read_txn_begin()/journal_read_txn_end().
 * Valid until journal_close().
 */
MDB_env *journal_env(journal_t *j);

/** Whether the journal was opened read-only. */
bool journal_is_read_only(const journal_t *j);

/**
 * Maps every page the environment uses into this process now, in one system call
 * (madvise MADV_POPULATE_READ), so that reads that follow take no page fault. A first touch of
 * a mapped page costs a fault, and on the project's virtual machines a fault costs 25-50 us
 * (measured: 20,000 random touches of a 1.3 GB data file took 0.5-1.1 s, while populating the
 * whole file took 57 ms): a process that is about to read many scattered records, such as a
 * daemon starting from a checkpoint, calls this first. The pages are the page cache's, shared,
 * not copies. Advice only: a kernel without MADV_POPULATE_READ (before Linux 5.14) ignores it.
 *
 * @return 0, or a journal/MDB_* code from reading the environment's size.
 */
int journal_prefault(journal_t *j);

/* ---- Writing ----------------------------------------------------------------------------- */

/**
 * Makes the data file reach @p ahead_bytes past the environment's last used page (never past
 * map_size_max_bytes), with zeros that are written and synced before LMDB needs them: writes at
 * most @p max_bytes of them, in pieces of up to 64 KiB, then syncs once. For the journal's only
 * writer process, from a thread of its own (journal/ahead.h), called often: it holds the write
 * lock only while it writes one piece, so a commit waits at most that long, and never for the
 * sync.
 *
 * Why: LMDB grows its file by writing past the end. A commit whose pages extend the file, or
 * land in blocks the file system has not allocated yet, makes its fdatasync() also commit the
 * file system's own journal (the new size and blocks). Pages that land in blocks already
 * written and synced need only their data flushed. The zeros are never part of the
 * environment: LMDB reads no page past its last one, and journal_copy() copies only what is
 * used; journal_stat() reports both sizes.
 *
 * @param out_written  receives the bytes written (0: the file already reaches that far).
 * @return 0; JOURNAL_EREADONLY for a read-only opener; a negated errno from the write or the
 *         sync, or from opening the data file for them (-ENOSPC: no room for the zeros; the
 *         journal itself is not affected, but the disk is nearly full).
 */
int journal_grow_ahead(journal_t *j, uint64_t ahead_bytes, uint64_t max_bytes,
                       uint64_t *out_written);

/**
 * Runs one durable write transaction: begins it, calls @p fill, commits.
 *
 * @p fill appends entries with journal_txn_append()/journal_txn_append_entry() and may write
 * the caller's own databases through journal_txn_mdb(). When the map is full (MDB_MAP_FULL
 * from an append, from the caller's own mdb_put, or from the commit), the transaction is
 * aborted, the map is doubled (up to map_size_max_bytes, else JOURNAL_EFULL) and @p fill is
 * called again from scratch in a new transaction. So @p fill must be re-runnable: it may
 * run several times and only the last run counts; it must not keep state from an earlier run.
 * A fill that gets MDB_MAP_FULL from its own mdb_put must return it (or JOURNAL_EFULL); a
 * database handle it opened with mdb_dbi_open() in an aborted run is gone and is reopened by
 * the next run.
 *
 * If @p fill returns non-zero the transaction is aborted and that value is returned: the
 * batch leaves no trace, the head is unchanged in memory and on disk. The head only advances
 * when the commit succeeded. Commits are durable (fsync'd) before this returns.
 *
 * @p fill must not call journal_write() (it would deadlock) nor begin other transactions on
 * this journal. The calling thread must not hold a journal_read_txn_begin() transaction:
 * growing the map then fails with -EDEADLK instead of waiting for itself.
 *
 * @param out_head  if not NULL, receives the head after the commit; untouched on failure.
 * @return 0; fill's own non-zero value; JOURNAL_EREADONLY; JOURNAL_EFULL; -EDEADLK; an MDB_*
 *         code (for example MDB_TXN_FULL for a transaction of hundreds of MiB) or negated
 *         errno.
 */
int journal_write(journal_t *j, journal_fill_fn fill, void *ctx, journal_head_t *out_head);

/**
 * Appends one entry in the transaction: sequence = previous + 1, hash chained.
 *
 * @param timestamp_us  the caller's clock; not required to be monotonic.
 * @param payload       may be NULL only when @p len is 0.
 * @param out_seq       if not NULL, receives the new entry's sequence; untouched on failure.
 * @return 0; JOURNAL_ETOOBIG (payload > JOURNAL_PAYLOAD_MAX or more than
 *         JOURNAL_TXN_ENTRIES_MAX in this transaction); JOURNAL_EINVAL; JOURNAL_EFULL (map
 *         full: return it from fill and journal_write() grows the map and retries); an MDB_*
 *         code. After any failure the transaction is spoiled; fill should return the code.
 */
int journal_txn_append(journal_txn_t *txn, int64_t timestamp_us, const void *payload, size_t len,
                       uint64_t *out_seq);

/**
 * Appends a complete entry verbatim (import, restore, replication).
 *
 * @return 0; JOURNAL_EGAP if e->seq is not the transaction's head + 1; JOURNAL_ECORRUPT for a
 *         version or flags this format does not allow; JOURNAL_ECHAIN if e->hash is not the
 *         hash recomputed over the head's hash, the header and the payload; otherwise as
 *         journal_txn_append(). Nothing is written on failure.
 */
int journal_txn_append_entry(journal_txn_t *txn, const journal_entry_t *e);

/**
 * The LMDB write transaction, for the caller's own databases.
 * Valid only during the fill callback; never commit or abort it yourself.
 */
MDB_txn *journal_txn_mdb(journal_txn_t *txn);

/** The head as of this transaction, including entries appended in it so far. */
void journal_txn_head(const journal_txn_t *txn, journal_head_t *out_head);

/**
 * Appends @p n records in one durable transaction (a convenience over journal_write()).
 *
 * @param n         1 .. JOURNAL_TXN_ENTRIES_MAX.
 * @param out_head  if not NULL, receives the head after the commit; untouched on failure.
 * @return as journal_write(); JOURNAL_EINVAL for n == 0; JOURNAL_ETOOBIG for n too large or a
 *         payload too large (then nothing of the batch is written).
 */
int journal_append(journal_t *j, const journal_record_t *recs, size_t n, journal_head_t *out_head);

/* ---- Reading ----------------------------------------------------------------------------- */

/**
 * The head: the last entry's sequence, timestamp and hash (zeros for an empty journal).
 * A writer answers from memory; a read-only opener reads the current last entry.
 *
 * @return 0; JOURNAL_ECORRUPT if the last entry is structurally bad; an MDB_* code.
 */
int journal_head(journal_t *j, journal_head_t *out_head);

/**
 * Opens a verifying reader positioned at @p from_seq (0 means 1).
 *
 * The reader checks every entry it returns: its structure, that sequence numbers follow each
 * other without a gap, and its hash against the chain, starting from the stored hash of entry
 * from_seq - 1 (which is trusted as the anchor; journal_verify() from 1 checks everything).
 *
 * The reader never holds an LMDB read transaction between calls: each refill reads at most
 * JOURNAL_READER_TXN_ENTRIES_MAX entries in one short read transaction and copies them into
 * a buffer allocated here, so a slow consumer does not pin old pages and make the file grow.
 * A reader that returned JOURNAL_END returns new entries later as the writer appends them.
 *
 * @param from_seq    at most head + 1.
 * @param out_reader  receives the reader; untouched on failure.
 * @return 0; JOURNAL_ENOTFOUND if from_seq > head + 1; JOURNAL_ECORRUPT if entry
 *         from_seq - 1 is damaged; -ENOMEM; an MDB_* code.
 */
int journal_reader_open(journal_t *j, uint64_t from_seq, journal_reader_t **out_reader);

/** Entries one reader refill reads in one read transaction. */
#define JOURNAL_READER_TXN_ENTRIES_MAX 1024u
/** Size of a reader's buffer; always holds at least one entry of the largest size. */
#define JOURNAL_READER_BUFFER_BYTES (2u * 1024u * 1024u)

/**
 * Returns the next entry.
 *
 * @param out_entry  receives the entry; untouched unless 0 is returned. Its payload points
 *                   into the reader's buffer and is valid only until the next
 *                   journal_reader_next() or journal_reader_close() call.
 * @return 0 with an entry; JOURNAL_END when there is no next entry yet (a later call may
 *         return new entries); JOURNAL_ECORRUPT or JOURNAL_ECHAIN when the next entry is
 *         damaged (see journal_reader_bad_seq(); sticky: later calls return it again); -EDEADLK
 *         or an MDB_* code for a failure that is not about the data (a later call retries).
 */
int journal_reader_next(journal_reader_t *r, journal_entry_t *out_entry);

/** The sequence number a reader failed at with JOURNAL_ECORRUPT/JOURNAL_ECHAIN, else 0. */
uint64_t journal_reader_bad_seq(const journal_reader_t *r);

/** The sequence number the next journal_reader_next() will return. */
uint64_t journal_reader_next_seq(const journal_reader_t *r);

/** Closes a reader and sets *@p r to NULL. Accepts NULL and a pointer to NULL. */
void journal_reader_close(journal_reader_t **r);

/**
 * Reads one entry, checking its structure and its link to entry seq - 1, and copies its
 * payload into the caller's buffer.
 *
 * @param buf        receives the payload; out_entry->payload points into it (valid as long as
 *                   buf is).
 * @param buf_size   size of buf; JOURNAL_PAYLOAD_MAX always suffices.
 * @param out_entry  receives the entry; untouched on failure.
 * @return 0; JOURNAL_ENOTFOUND; JOURNAL_ETOOBIG if the payload does not fit buf;
 *         JOURNAL_ECORRUPT; JOURNAL_ECHAIN; an MDB_* code.
 */
int journal_read(journal_t *j, uint64_t seq, void *buf, size_t buf_size,
                 journal_entry_t *out_entry);

/**
 * Begins a read transaction on journal_env() for the caller's own databases (or raw reads).
 *
 * Keep it short and end it with journal_read_txn_end() on the same thread: while it is open
 * the map cannot be remapped, so journal_write() in another thread waits if it needs to grow
 * the map. While this thread holds it, a journal call on this thread that would have to remap
 * (journal_write() growing the map, or any read meeting MDB_MAP_RESIZED) fails with -EDEADLK
 * rather than wait for itself. Handles MDB_MAP_RESIZED.
 *
 * @param out_txn  receives the transaction (valid until journal_read_txn_end()); untouched
 *                 on failure.
 * @return 0; -EDEADLK; an MDB_* code.
 */
int journal_read_txn_begin(journal_t *j, MDB_txn **out_txn);

/** Ends (aborts) a read transaction from journal_read_txn_begin() and sets *@p txn to NULL.
 *  Accepts NULL and a pointer to NULL. Must run on the thread that began it. */
void journal_read_txn_end(journal_t *j, MDB_txn **txn);

/* ---- Verification, statistics, backup ---------------------------------------------------- */

/** Entries journal_verify() checks per read transaction before starting a fresh one. */
#define JOURNAL_VERIFY_TXN_ENTRIES_MAX 65536u

/**
 * Verifies entries @p from_seq .. @p to_seq: structure, gap-free sequence numbers and the hash
 * chain (anchored at the stored hash of entry from_seq - 1, so from_seq 1 checks everything).
 *
 * @param from_seq      0 means 1.
 * @param to_seq        0 means the head when the verification starts.
 * @param out_bad_seq   if not NULL, receives the first bad sequence number on
 *                      JOURNAL_ECORRUPT/JOURNAL_ECHAIN, 0 on success; untouched otherwise.
 * @param out_stats     if not NULL, receives what was checked (also up to the bad entry).
 * @return 0 if the range is intact (an empty journal is intact); JOURNAL_ECORRUPT;
 *         JOURNAL_ECHAIN; JOURNAL_ENOTFOUND if the range goes beyond the head;
 *         JOURNAL_EINVAL if from_seq > to_seq; an MDB_* code.
 */
int journal_verify(journal_t *j, uint64_t from_seq, uint64_t to_seq, uint64_t *out_bad_seq,
                   journal_verify_stats_t *out_stats);

/**
 * Fills @p out_stat with counts, sizes and the head.
 * @return 0; JOURNAL_ECORRUPT if the first or last entry is structurally bad; an MDB_* code.
 */
int journal_stat(journal_t *j, journal_stat_t *out_stat);

/**
 * Writes a consistent, compacted copy of the environment (the journal and the caller's
 * databases, as of one read snapshot) to @p dest_dir/data.mdb, fsyncs it and the directory.
 * Works while a writer appends and from a read-only opener. @p dest_dir is created (0700) if
 * missing and must not already hold a data.mdb. While the copy runs the map cannot grow, so a
 * writer that needs to grow the map waits for the copy.
 *
 * @return 0; -EEXIST if dest_dir/data.mdb exists; an MDB_* code or negated errno.
 */
int journal_copy(journal_t *j, const char *dest_dir);

/**
 * fsync()s a directory, so that files made, renamed or linked in it stay after a crash.
 * @return 0 or a negated errno.
 */
int journal_fsync_dir(const char *dir);

/**
 * A human sentence for any code the journal returns: its own codes, JOURNAL_END, MDB_* codes
 * and negated errno values. The string is static; never NULL.
 */
const char *journal_strerror(int rc);

#ifdef __cplusplus
}
#endif

#endif /* CARDLEDGER_JOURNAL_H */
