/*
 * An in-memory table of fixed-size records keyed by short byte strings, with a dirty set.
 *
 * The ledger's write model keeps every entity (cards, programs, offers, ...) in one of these:
 * a hash index (XXH3, open addressing) over records stored in chunks, so a record's address
 * never changes once made. Every change marks the record dirty; the daemon's checkpoint writes
 * the dirty records and clears the set. Deleting a record keeps its slot (a tombstone that the
 * checkpoint turns into an LMDB delete); the same key may be put again later.
 */
#ifndef CARDLEDGER_TABLE_H
#define CARDLEDGER_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TABLE_KEY_MAX 160 /* longest key any table may use */

typedef struct table table_t;

/* Creates a table for keys of at most key_max bytes and records of rec_size bytes. */
int table_new(size_t key_max, size_t rec_size, table_t **out);

/*
 * Creates a numbered table: its keys hold, at byte number_off, an 8-byte big-endian number that
 * the caller hands out in order (card ids, sequence numbers), and records whose keys differ only
 * in that number sit next to each other in the index. A key too short to hold the number is
 * still taken (hashed as by table_new()). Returns -1 also when number_off + 8 > key_max.
 */
int table_new_numbered(size_t key_max, size_t number_off, size_t rec_size, table_t **out);

/* Frees the table; accepts NULL and clears the caller's pointer. */
void table_destroy(table_t **t);

/* The live record under key, or NULL. Valid until table_destroy(). */
void *table_get(const table_t *t, const void *key, size_t key_len);

/*
 * Like table_get(), and *out_known says whether the table has a slot for the key at all: a
 * live record, or one deleted (or filled as absent) since. A table used as a cache over a
 * persisted copy consults the copy only for keys it does not know.
 */
void *table_lookup(const table_t *t, const void *key, size_t key_len, bool *out_known);

/*
 * Fills the cache: makes a clean (not dirty) slot for a key the table does not know, holding a
 * copy of rec, or, with rec NULL, remembering that the key has no record. Returns the record
 * (NULL for an absent one), or NULL with *out_failed set when memory runs out. The key must be
 * unknown to the table (table_lookup() said so).
 */
void *table_fill(table_t *t, const void *key, size_t key_len, const void *rec, bool *out_failed);

/*
 * The live record under key, made (zero-filled) when missing, and marked dirty: call it before
 * changing a record. Returns NULL only when memory runs out. *out_created (may be NULL) says
 * whether the record is new.
 */
void *table_put(table_t *t, const void *key, size_t key_len, bool *out_created);

/*
 * Marks the live record rec dirty, as table_put() of its key would, without looking the key up:
 * rec is a pointer this table gave out (table_get(), table_lookup(), table_put(), ...) and that
 * is still valid. Returns rec, writable, or NULL when memory runs out (nothing changed).
 */
void *table_touch(table_t *t, const void *rec);

/*
 * Like table_touch(), for a change to only part of the record: which part is the owner's to
 * define (the ledger's cards: their value and status), and table_dirty_in_part() tells it apart
 * when the dirty records are written. Any whole-record mark (table_put(), table_touch(),
 * table_del()) before the next table_dirty_clear() makes the record dirty as a whole again.
 */
void *table_touch_part(table_t *t, const void *rec);

/* Whether the live dirty record rec was marked only by table_touch_part() since the last clear. */
bool table_dirty_in_part(const table_t *t, const void *rec);

/*
 * Makes room for at least `records` records without growing again (a load of known size).
 * Returns 0, or -1 when memory runs out (the table is unchanged).
 */
int table_reserve(table_t *t, size_t records);

/*
 * Memory a table will soon write for the first time: the slots up to a few MiB past its newest
 * one, and the index it will grow into. A thread of the caller's may fault it in
 * (madvise(MADV_POPULATE_WRITE), which leaves any content as it is), so that the thread using
 * the table does not wait for page faults (about 1 ms per 2 MiB on the VM of 2026-12-07). The
 * function is called on the table's thread and must not block; it may ignore
 * a request. The memory stays the table's: it may be freed at any time after the call (by a
 * later growth, table_forget_clean() or table_destroy()), which such a fault-in survives.
 * NULL (the default) asks for nothing.
 */
typedef void (*table_ahead_fn)(void *ctx, void *addr, size_t len);
void table_set_ahead(table_t *t, table_ahead_fn fn, void *ctx);

/* Is the index still being copied into a larger one (a few entries per insert)? For tests. */
bool table_index_growing(const table_t *t);

/*
 * Asks the CPU to fetch the index entry where key would be (a hint: nothing changes, nothing is
 * waited for), so that a lookup of the key a little later does not wait for memory.
 */
void table_prefetch(const table_t *t, const void *key, size_t key_len);

/* Deletes the record under key (a no-op when missing). Returns 0, or -1 when memory runs out
 * (the record is then as it was). */
int table_del(table_t *t, const void *key, size_t key_len);

/* Live records. */
size_t table_count(const table_t *t);

/* Visitor: rec is NULL for a deleted record (dirty iteration only). Non-zero stops the walk. */
typedef int (*table_visit_fn)(const void *key, size_t key_len, const void *rec, void *ctx);

/* Every live record, in insertion order. */
int table_foreach(const table_t *t, table_visit_fn fn, void *ctx);

/* Every record changed or deleted since the last table_dirty_clear(), in first-change order. */
int table_foreach_dirty(const table_t *t, table_visit_fn fn, void *ctx);
void table_dirty_clear(table_t *t);
size_t table_dirty_count(const table_t *t);

/*
 * A copy of the dirty records made a little at a time (a checkpoint's, while commands go on):
 * table_freeze_dirty() makes the dirty records frozen and the dirty list empty (in O(1)); from
 * then on, each frozen record is handed to visit exactly once, as it was at the freeze: by
 * table_copy_frozen(), a few at a time, or, when the table is about to change it (put, touch,
 * delete), just before, by that call (which fails, returning NULL or -1, if visit fails).
 * table_dirty_in_part() answers for a record handed to visit. Changes after the freeze mark
 * records dirty as usual. table_copy_frozen() walks at most *budget frozen records (and takes
 * what it walked off *budget), returns 0 (or visit's code) and the frozen records left in
 * *out_left; at 0 the freeze is over. table_frozen_drop() ends it without handing the
 * rest over (their marks are dropped: the caller writes them some other way). One freeze at a
 * time; table_forget_clean() only without one.
 */
void table_freeze_dirty(table_t *t, table_visit_fn visit, void *ctx);
int table_copy_frozen(table_t *t, size_t *budget, size_t *out_left);
void table_frozen_drop(table_t *t);

/*
 * Forgets every clean record (live ones and keys known to have none): only the dirty ones stay,
 * in memory freshly allocated. For a table that is a cache over a copy holding every clean
 * record as it is. Returns 0, or -1 when memory runs out (the table is unchanged). Pointers to
 * records are void afterwards.
 */
int table_forget_clean(table_t *t);

/* Slots in memory: live records, deleted ones and keys known to have none. */
size_t table_slots(const table_t *t);

/* Size of one record. */
size_t table_rec_size(const table_t *t);

#endif /* CARDLEDGER_TABLE_H */
