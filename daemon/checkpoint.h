/*
 * checkpoint: the ledger's state in LMDB as "state as of sequence N", and the way back.
 *
 * The journal is the write-ahead log; the ledger lives in memory. Writing every changed card on
 * every commit would cost a random LMDB update per event (measured at 20-25x the journal append
 * itself), so the daemon instead writes the records the ledger marked dirty every so often, in
 * one transaction together with the sequence number they reflect. On start it loads that
 * checkpoint and replays the journal from the next sequence to the head. Because a checkpoint
 * and its sequence number commit atomically, and the journal already holds every event up to
 * that number, a crash at any instant leaves a state that checkpoint + replay turns into exactly
 * what a full replay gives.
 *
 * The checkpoint lives in an LMDB environment of its own, DATA/state, beside the journal's
 * DATA/journal: its writes (hundreds of thousands of records at a time) then never hold up the
 * journal's commits, and they can run in a thread of their own (checkpointer_* below). It is
 * opened through journal/ for the map handling (growth, remapping under readers); its journal
 * stays empty. Databases:
 *   "state.<table>"      one per table ledger_dirty_foreach() names (state.cards,
 *                        state.card_values, state.programs, ...): key -> the record as it
 *                        hands it out (a ledger record; for state.card_values the last 32
 *                        bytes of a card), with its runs of zero bytes packed (checkpoint.c,
 *                        s_pack())
 *   "daemon.checkpoint"  key "state": format (u32 LE, 2), LEDGER_STATE_VERSION (u32 LE),
 *                        sequence (u64 LE)
 * A checkpoint written by a build with another LEDGER_STATE_VERSION is ignored: the state is
 * rebuilt from the whole journal and the next checkpoint rewrites every table from scratch.
 */
#ifndef CARDLEDGER_CHECKPOINT_H
#define CARDLEDGER_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "ledger.h"

#define CHECKPOINT_DB           "daemon.checkpoint"
#define CHECKPOINT_STATE_PREFIX "state."
#define CHECKPOINT_FORMAT       2u /* 2: records packed (zero runs) */
#define CHECKPOINT_TABLES_MAX   32 /* ledger tables the checkpoint can hold */

/* Errors besides JOURNAL_E*, MDB_*, LEDGER_E* and CODEC_E* codes. */
#define CHECKPOINT_EREPLAY (-39001) /* a journal event does not fit the state: see the log */
#define CHECKPOINT_ETABLES (-39002) /* more ledger tables than CHECKPOINT_TABLES_MAX */
#define CHECKPOINT_EBUSY   (-39003) /* the background writer still writes the last checkpoint */

/*
 * A source over the state.* databases, for a ledger that is a cache over its checkpoint (see
 * ledger_set_source()). It reads in a read transaction of its own, begun on first use and kept
 * until checkpoint_source_release(): call that before any journal_write() on the same thread
 * (a held read transaction would make growing the map fail), and at the end of every cycle so
 * that old pages can be reused.
 */
typedef struct checkpoint_source checkpoint_source_t;

/*
 * Makes a source over a writable state environment: creates every lazy state.* database that is
 * missing (one journal_write() with no entries). Returns 0, LEDGER_ENOMEM, or a journal/MDB_*
 * code.
 */
int checkpoint_source_new(journal_t *state, checkpoint_source_t **out);
void checkpoint_source_release(checkpoint_source_t *source);
/* Makes l a cache over the source (ledger_set_source()); the source must hold l's state as of
 * a checkpoint written from it. */
void checkpoint_source_attach(checkpoint_source_t *source, ledger_t *l);
/* Frees the source (its transaction must be released); accepts NULL and clears the pointer. */
void checkpoint_source_destroy(checkpoint_source_t **source);

/* What checkpoint_load() did. */
typedef struct checkpoint_info {
    bool loaded;             /* a checkpoint was loaded (else the state came from seq 1) */
    bool full_needed;        /* the state.* tables are unusable: the next write must be full */
    uint64_t checkpoint_seq; /* the sequence the loaded checkpoint reflects (0 if none) */
    uint64_t records;        /* records loaded from the checkpoint */
    uint64_t replayed;       /* journal events replayed after it */
    uint64_t head_seq;       /* the journal's head: the ledger's last_seq after the load */
    double load_ms;          /* reading the checkpoint and rebuilding the indexes */
    double replay_ms;        /* replaying the journal's tail */
} checkpoint_info_t;

/*
 * Makes the ledger reflect the whole journal j: loads the checkpoint from the state environment
 * (unless use_checkpoint is false, or state is NULL, or there is no checkpoint, or it is of
 * another state version or unreadable, which is logged),
 * rebuilds the indexes and replays the journal's tail. With a source, a loaded checkpoint is
 * not read whole: only the tables ledger_table_is_lazy() says no to are loaded, and the ledger
 * becomes a cache over the source (a state rebuilt from the whole journal is in memory anyway
 * and gets no source). *l must be a fresh ledger; it may be
 * replaced by another fresh one when a checkpoint turns out unreadable half-way. Works on a
 * read-only journal too. Returns 0; CHECKPOINT_EREPLAY when an event does not decode or does not
 * fit the state (the journal is not one this build understands); a journal or MDB_* code.
 */
int checkpoint_load(journal_t *j, journal_t *state, ledger_t **l, bool use_checkpoint,
                    checkpoint_source_t *source, checkpoint_info_t *out);

/*
 * Writes the ledger's dirty records (every record, replacing all state.* content, when full)
 * and the checkpoint record for ledger_meta(l)->last_seq, in one durable journal_write() with no
 * journal entries, then clears the dirty set. The ledger must reflect exactly the committed
 * journal (no events of an uncommitted batch). *out_records (may be NULL) receives how many
 * records were written. Returns 0 or a journal/MDB_* code (then the dirty set is kept).
 */
int checkpoint_write(journal_t *state, ledger_t *l, bool full, size_t *out_records);

/*
 * The background writer: a thread that writes checkpoints while the daemon's loop goes on.
 *
 * checkpointer_start() copies the ledger's dirty records (and the sequence they are as of) into
 * a batch, clears the dirty set and hands the batch to the thread, which writes it like
 * checkpoint_write() does, in one durable transaction of the state environment. Copying all at
 * once costs the loop tens of milliseconds where writing cost it seconds; checkpointer_begin()
 * and the functions after it spread the copy over the loop's cycles. Records the loop changes
 * afterwards are dirty again and go into the next batch. A batch that fails to be written is
 * kept and written first with the next one (its records are cleared from the dirty set), so no
 * change is ever left out of the checkpoints; nothing is lost either way, as the journal has
 * every event.
 *
 * The thread owns the state environment's write transactions: the caller must not call
 * checkpoint_write() while a batch is in hand (checkpointer_wait() first), and must release a
 * checkpoint_source's read transaction before waiting (the writer may need to grow the map).
 */
typedef struct checkpointer checkpointer_t;

/* What a background checkpoint did. */
typedef struct checkpoint_result {
    int rc;         /* 0, or a journal/MDB_* code */
    uint64_t seq;   /* the sequence it is as of */
    size_t records; /* records written */
    double took_ms;
} checkpoint_result_t;

/* Starts the thread. Returns 0 or LEDGER_ENOMEM. */
int checkpointer_new(journal_t *state, checkpointer_t **out);
/* Hands the dirty records over. Returns 0, CHECKPOINT_EBUSY, or LEDGER_ENOMEM (then nothing
 * changed: the records stay dirty). */
int checkpointer_start(checkpointer_t *c, ledger_t *l);
/*
 * The same, a little at a time, so that the loop never stops for the whole copy (22 to 134 ms
 * for 300,000 changed records): checkpointer_begin() freezes the ledger's dirty records as of
 * its last sequence (ledger_freeze_dirty(): every one is copied into the batch exactly once, as
 * it is now, either by checkpointer_copy() or just before the loop changes it);
 * checkpointer_copy() copies about max more and says how many are left; once none is, and the
 * journal holds that sequence durably, checkpointer_hand() gives the batch to the thread. A
 * failure of either (out of memory) leaves the ledger's freeze half done: the caller rebuilds
 * the ledger from disk. Returns 0, CHECKPOINT_EBUSY (begin) or LEDGER_ENOMEM.
 */
int checkpointer_begin(checkpointer_t *c, ledger_t *l);
int checkpointer_copy(checkpointer_t *c, ledger_t *l, size_t max, size_t *out_left);
void checkpointer_hand(checkpointer_t *c);
/*
 * Makes room for a batch of `bytes` now, so that the first checkpoints after a start do not grow
 * the batch on the loop (60 ms stalls were seen), and asks ahead(ctx, addr, len) (NULL: nobody)
 * to fault that room in from another thread (daemon/prefault.h); from then on the batch asks it
 * for its memory 8 MiB ahead of what the copy writes. The room is made only with no batch in
 * hand (else CHECKPOINT_EBUSY); the function is set either way, and
 * checkpointer_reserve(c, 0, NULL, NULL) takes it back before its context goes. Returns 0,
 * CHECKPOINT_EBUSY or LEDGER_ENOMEM.
 */
int checkpointer_reserve(checkpointer_t *c, size_t bytes,
                         void (*ahead)(void *ctx, void *addr, size_t len), void *ctx);
/* The result of the last batch once it is written (true, once per batch), else false. */
bool checkpointer_collect(checkpointer_t *c, checkpoint_result_t *out);
/* Waits until no batch is in hand. */
void checkpointer_wait(checkpointer_t *c);
/* Waits, then forgets a failed batch: for a ledger rebuilt from the checkpoint, whose dirty
 * records cover every change since. */
void checkpointer_discard(checkpointer_t *c);
/* Waits for the batch in hand, stops the thread and frees it; accepts NULL, clears *c. */
void checkpointer_destroy(checkpointer_t **c);

/* A sentence for any code the functions above return. */
const char *checkpoint_strerror(int rc);

#endif /* CARDLEDGER_CHECKPOINT_H */
