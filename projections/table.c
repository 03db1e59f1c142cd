/*
 * table.c: fixed-size records under short keys, with a dirty set (see table.h).
 *
 * Slots live in chunks so that a record never moves; chunk k holds TABLE_CHUNK_SLOTS << k
 * slots, so a table of any size has a few dozen chunks at most, and every chunk but the first
 * few of a table is aligned to huge pages (see s_alloc()). A slot is a small header, the
 * key and the record, padded to 8 bytes. A key of up to TABLE_KEY_INLINE bytes is kept in the
 * slot; a longer one (a table's key_max may be 160) in the table's key arena, with a pointer to it
 * in the slot, so that a table whose keys may be long but mostly are not (row keys: merchant,
 * program and row, up to 131 bytes, most of them under 40) does not give every slot the room of
 * the longest. The index is an array of
 * 64-bit entries, probed linearly and kept at most half full: the slot number plus one in the
 * low half (0 = empty) and a 32-bit hash of the key in the high half, so a probe only reads a
 * slot whose hash matches (one cache miss per lookup instead of one per probe). The same 32 bits
 * place the entry (their low bits are its home position), so growing the index moves entries
 * without reading a slot or hashing a key again.
 *
 * The index grows a little at a time: a new index of twice the size takes the new keys at once,
 * and the entries of the old one are copied over S_MOVE_STEP positions per new slot, while a
 * lookup that misses in the new index looks in the old one too (which stays whole until the
 * last entry is copied, and then is freed). Growing at once stalled the daemon's loop for the
 * whole copy: 18, 25 and 74 ms when the redemptions of a run passed 128k, 256k and 512k records
 * (2026-12-07), and it doubles with every growth.
 *
 * A numbered table (table_new_numbered()) has keys that hold an 8-byte big-endian number handed
 * out in order (card ids, sequence numbers), alone or at a fixed place in the key; keys that
 * differ only in the number's low three bits hash to eight neighbouring entries, so records made
 * one after another share cache lines of the index instead of taking one each.
 */
#include "table.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xxhash.h>

#define TABLE_CHUNK_SLOTS 4096 /* slots of the first chunk; each next one holds twice as many */
#define TABLE_CHUNKS_MAX  32   /* chunks a table may have: more slots than 32-bit numbers name */
#define TABLE_KEY_INLINE  40   /* key bytes a slot holds; a longer key goes to the key arena */
#define TABLE_ARENA_MAX   (2u << 20) /* the key arena's blocks grow from 4 KiB to this */
#define TABLE_INDEX_MIN   1024
/*
 * Chunks and key blocks from this size on are whole 2 MiB blocks, aligned, so that a kernel that
 * backs memory with transparent huge pages on its own (THP "always") can give them huge pages;
 * indexes of this size get a mapping of their own. None of it is advised for huge pages
 * (MADV_HUGEPAGE): with the kernel's default THP defrag setting ("madvise"), an advised fault
 * tries to get a 2 MiB page and, when none is free, reclaims and compacts memory on the spot
 * before it falls back to 4 KiB pages. On the VM measured on 2026-12-07 (kernel 6.18) a first
 * touch of 512 MiB took 0.19 to 0.26 s in 4 KiB pages; advised, 0.05 to 0.26 s when huge pages
 * were free and 0.64 to 1.16 s when they were not. In 7 alternated 1M-card batch issues the
 * daemon's prefault thread spent 1.4 to 1.9 s faulting advised tables in, against 0.27 to 0.39 s
 * unadvised, and redeems over those cards did not get slower (docs/BENCHMARKS.md).
 */
#define TABLE_HUGE_MIN  (1u << 20)
#define TABLE_HUGE_PAGE (2u << 20)
#define TABLE_PAGE      4096u /* what ranges asked for ahead start at a multiple of */
/* With table_set_ahead(): how far past the newest slot the memory of the slots is asked for: a
 * few MiB ahead give the asked thread time to keep up (2 MiB took about 1 ms to fault in, in
 * 4 KiB pages, on the VM of 2026-12-07; as one huge page 5 to 13 ms on the VMs of 2026-11,
 * tools/bench-table, and 2.5 to 4.5 ms on that of 2026-12-07 when memory had to be compacted). */
#define TABLE_AHEAD (8u << 20)

/* Memory for chunks and key blocks: whole aligned huge pages for large blocks (above). Freed
 * with free(). */
static void *
s_alloc(size_t size)
{
    if (size < TABLE_HUGE_MIN)
        return malloc(size);
    size_t rounded = (size + TABLE_HUGE_PAGE - 1) / TABLE_HUGE_PAGE * TABLE_HUGE_PAGE;
    return aligned_alloc(TABLE_HUGE_PAGE, rounded);
}

/*
 * Zero-filled memory for an index of cap entries. A large one is mapped by itself, so that its
 * pages are zeroed by the kernel when first touched (spread over the inserts that move entries
 * into it) rather than all at once by a memset. Freed with s_index_free().
 */
static uint64_t *
s_index_alloc(size_t cap)
{
    size_t size = cap * sizeof(uint64_t);
    if (size < TABLE_HUGE_MIN)
        return calloc(cap, sizeof(uint64_t));
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void
s_index_free(uint64_t *index, size_t cap)
{
    if (index == NULL)
        return;
    if (cap * sizeof(uint64_t) < TABLE_HUGE_MIN)
        free(index);
    else
        (void)munmap(index, cap * sizeof(uint64_t));
}

typedef struct slot_head {
    uint16_t key_len;
    uint8_t live;  /* 0 = deleted */
    uint8_t dirty; /* 0, or a mark: S_DIRTY_WHOLE or S_DIRTY_PART, with S_MARK_ROUND */
    uint32_t slot; /* this slot's number, so a record's pointer leads back to it */
} slot_head_t;

struct table {
    size_t key_max;
    size_t rec_size;
    bool numbered;     /* keys hold a big-endian number at number_off: see table_new_numbered() */
    size_t number_off; /* where in the key */
    size_t key_room;   /* key bytes in a slot: key_max (at most TABLE_KEY_INLINE) rounded up to 8 */
    size_t slot_size;  /* header + key room + record, 8-aligned */
    uint8_t *chunks[TABLE_CHUNKS_MAX]; /* chunk k: TABLE_CHUNK_SLOTS << k slots */
    size_t chunks_count;
    uint8_t **arena;    /* blocks holding the keys longer than key_room */
    size_t arena_count; /* blocks in use */
    size_t arena_cap;   /* room in the blocks array */
    size_t arena_used;  /* bytes taken in the last block */
    size_t arena_size;  /* the last block's size */
    size_t slots;       /* slots in use, live or deleted */
    size_t live;
    uint64_t *index;  /* hash << 32 | (slot number + 1), or 0 */
    size_t index_cap; /* a power of two */
    /* While the index grows: the one it replaces (NULL otherwise), its size, and how many of its
     * positions have been copied into the new one. */
    uint64_t *old_index;
    size_t old_cap;
    size_t moved;
    uint32_t *dirty; /* slot numbers */
    size_t dirty_count;
    size_t dirty_cap;
    /* Asking ahead (table_set_ahead()): the function and its context; how far the slots' memory
     * was asked for, in bytes over all chunks end to end (chunk k starts at byte
     * s_chunk_first(k) * slot_size); the next index, allocated and asked for before a growth. */
    table_ahead_fn ahead;
    void *ahead_ctx;
    size_t asked;
    uint64_t *next_index; /* 2 * index_cap entries, or NULL */
    /* Marks carry the round they were made in (one bit, `round`). table_freeze_dirty() starts a
     * new round: the dirty list becomes the frozen list, whose records (marked in the last
     * round, not yet handed to frozen_visit) are handed over either by table_copy_frozen() or
     * just before they change. */
    uint8_t round;
    uint32_t *frozen; /* slot numbers */
    size_t frozen_count;
    size_t frozen_cap;
    size_t frozen_pos;           /* handed over (or skipped) up to here */
    table_visit_fn frozen_visit; /* NULL: nothing frozen */
    void *frozen_ctx;
};

/* The number of the first slot of chunk k. */
static inline size_t
s_chunk_first(size_t k)
{
    return ((size_t)TABLE_CHUNK_SLOTS << k) - TABLE_CHUNK_SLOTS;
}

/* The chunk of slot n. Chunk k holds slots [4096 (2^k - 1), 4096 (2^(k+1) - 1)): k is the top
 * bit of n/4096 + 1. */
static inline size_t
s_chunk_of(size_t n)
{
    return (size_t)(63 - __builtin_clzll((unsigned long long)(n / TABLE_CHUNK_SLOTS + 1)));
}

static inline slot_head_t *
s_slot(const table_t *t, size_t n)
{
    assert(n < t->slots);
    size_t k = s_chunk_of(n);
    assert(k < t->chunks_count);
    return (slot_head_t *)(void *)(t->chunks[k] + (n - s_chunk_first(k)) * t->slot_size);
}

/* The key of a slot: in the slot, or (longer than key_room) where the slot's pointer says. */
static inline uint8_t *
s_key(const table_t *t, slot_head_t *h)
{
    if (h->key_len <= t->key_room)
        return (uint8_t *)(h + 1);
    uint8_t *p;
    memcpy(&p, h + 1, sizeof(p));
    return p;
}

static inline void *
s_rec(const table_t *t, slot_head_t *h)
{
    return (uint8_t *)(h + 1) + t->key_room;
}

int
table_new_numbered(size_t key_max, size_t number_off, size_t rec_size, table_t **out)
{
    if (number_off + 8 > key_max)
        return -1;
    int rc = table_new(key_max, rec_size, out);
    if (rc == 0) {
        (*out)->numbered = true;
        (*out)->number_off = number_off;
    }
    return rc;
}

int
table_new(size_t key_max, size_t rec_size, table_t **out)
{
    assert(out != NULL);
    if (key_max == 0 || key_max > TABLE_KEY_MAX || rec_size == 0)
        return -1;
    table_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    t->key_max = key_max;
    t->rec_size = rec_size;
    t->key_room = ((key_max < TABLE_KEY_INLINE ? key_max : TABLE_KEY_INLINE) + 7) & ~(size_t)7;
    t->slot_size = (sizeof(slot_head_t) + t->key_room + rec_size + 7) & ~(size_t)7;
    t->index_cap = TABLE_INDEX_MIN;
    t->index = s_index_alloc(t->index_cap);
    if (t->index == NULL) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void
table_destroy(table_t **tp)
{
    if (tp == NULL || *tp == NULL)
        return;
    table_t *t = *tp;
    for (size_t i = 0; i < t->chunks_count; i++)
        free(t->chunks[i]);
    for (size_t i = 0; i < t->arena_count; i++)
        free(t->arena[i]);
    free(t->arena);
    s_index_free(t->index, t->index_cap);
    s_index_free(t->old_index, t->old_cap);
    s_index_free(t->next_index, 2 * t->index_cap);
    free(t->dirty);
    free(t->frozen);
    free(t);
    *tp = NULL;
}

/* The 32 bits of a key that place its index entry and tell it from its neighbours. */
static inline uint32_t
s_hash(const table_t *t, const void *key, size_t key_len)
{
    if (t->numbered && key_len >= t->number_off + 8) {
        /* Eight numbers in a row share a cache line of the index (eight 8-byte entries): the
         * key is hashed without the number's low three bits, which then place the entry in
         * its group. The groups are spread by the hash, so a run of numbers is no run of
         * entries that a lookup of some other key would have to probe through. */
        uint8_t k[TABLE_KEY_MAX];
        assert(key_len <= sizeof(k));
        memcpy(k, key, key_len);
        uint32_t low = k[t->number_off + 7] & 7u;
        k[t->number_off + 7] &= (uint8_t)~7u;
        uint32_t h = (uint32_t)(XXH3_64bits(k, key_len) >> 32);
        return (h & ~(uint32_t)7) | low;
    }
    return (uint32_t)(XXH3_64bits(key, key_len) >> 32);
}

/* The slot number + 1 of an index entry (0 = empty). */
static inline uint32_t
s_entry_slot(uint64_t e)
{
    return (uint32_t)(e & 0xffffffffu);
}

/* Position in index (cap entries) holding key (whose hash is h), or the empty one where it would
 * go. */
static size_t
s_probe(const table_t *t, const uint64_t *index, size_t cap, const void *key, size_t key_len,
        uint32_t h)
{
    size_t mask = cap - 1;
    size_t pos = (size_t)h & mask;
    uint64_t tag = h;
    for (;;) {
        uint64_t e = index[pos];
        if (e == 0)
            return pos;
        if ((e >> 32) == tag) {
            slot_head_t *sh = s_slot(t, s_entry_slot(e) - 1);
            if (sh->key_len == key_len && memcmp(s_key(t, sh), key, key_len) == 0)
                return pos;
        }
        pos = (pos + 1) & mask;
    }
}

/*
 * The index entry of key (whose hash is h), or 0 when the table does not know it; *out_pos is
 * its position in the current index, or the empty one where a new entry for it would go.
 */
static uint64_t
s_find_h(const table_t *t, const void *key, size_t key_len, uint32_t h, size_t *out_pos)
{
    size_t pos = s_probe(t, t->index, t->index_cap, key, key_len, h);
    *out_pos = pos;
    uint64_t e = t->index[pos];
    if (e == 0 && t->old_index != NULL)
        e = t->old_index[s_probe(t, t->old_index, t->old_cap, key, key_len, h)];
    return e;
}

static uint64_t
s_find(const table_t *t, const void *key, size_t key_len)
{
    size_t pos;
    return s_find_h(t, key, key_len, s_hash(t, key, key_len), &pos);
}

/* The first empty position of the current index from the home of hash h. */
static size_t
s_empty_pos(const table_t *t, uint32_t h)
{
    size_t mask = t->index_cap - 1;
    size_t pos = (size_t)h & mask;
    while (t->index[pos] != 0)
        pos = (pos + 1) & mask;
    return pos;
}

/* Positions of the old index copied per new slot while the index grows: the copy must be done
 * before the new index is half full (old_cap / 2 more slots), and the sooner the better, since
 * until then a lookup that misses looks in both. 16 ends it after old_cap / 16 new slots. */
#define S_MOVE_STEP 16

/* Copies up to `positions` more positions of the old index into the new one; frees the old one
 * when all are copied. Returns whether it moved any entry (positions in the index change). */
static bool
s_move(table_t *t, size_t positions)
{
    if (t->old_index == NULL)
        return false;
    size_t end = t->old_cap - t->moved < positions ? t->old_cap : t->moved + positions;
    bool any = false;
    for (size_t i = t->moved; i < end; i++) {
        uint64_t e = t->old_index[i];
        if (e != 0) {
            t->index[s_empty_pos(t, (uint32_t)(e >> 32))] = e;
            any = true;
        }
    }
    t->moved = end;
    if (t->moved == t->old_cap) {
        s_index_free(t->old_index, t->old_cap);
        t->old_index = NULL;
        t->old_cap = 0;
        t->moved = 0;
    }
    return any;
}

/* Starts growing the index to cap entries (a power of two, more than twice the slots), after
 * ending a growth still under way. Returns 0, or -1 when memory runs out (nothing changed). */
static int
s_grow_index(table_t *t, size_t cap)
{
    /* A position comes from the entry's 32 hash bits: no index is larger than they place. */
    if (cap > ((size_t)1 << 32))
        return -1;
    uint64_t *index = NULL;
    if (t->next_index != NULL && cap == 2 * t->index_cap) {
        index = t->next_index; /* made and asked for ahead: see s_ask_ahead() */
    } else {
        index = s_index_alloc(cap);
        if (index == NULL)
            return -1;
        s_index_free(t->next_index, 2 * t->index_cap);
    }
    t->next_index = NULL;
    (void)s_move(t, SIZE_MAX);
    t->old_index = t->index;
    t->old_cap = t->index_cap;
    t->moved = 0;
    t->index = index;
    t->index_cap = cap;
    return 0;
}

int
table_reserve(table_t *t, size_t records)
{
    assert(t != NULL);
    size_t cap = t->index_cap;
    while (cap < 2 * (records + 1))
        cap *= 2;
    if (cap != t->index_cap) {
        /* A load of known size: no lookups to keep going meanwhile, so all at once. */
        if (s_grow_index(t, cap) != 0)
            return -1;
        (void)s_move(t, SIZE_MAX);
    }
    return 0;
}

bool
table_index_growing(const table_t *t)
{
    return t->old_index != NULL;
}

/* How much of a dirty record changed: all of it, or only its owner's part (table_touch_part()). */
#define S_DIRTY_WHOLE 1
#define S_DIRTY_PART  2
#define S_DIRTY_KIND  3
/* The bit of a mark that says its round: a mark of the other round is a frozen record's. */
#define S_MARK_ROUND 4

static inline bool
s_marked_now(const table_t *t, uint8_t mark)
{
    return (mark & S_DIRTY_KIND) != 0 && ((mark & S_MARK_ROUND) != 0) == (t->round != 0);
}

static inline bool
s_marked_frozen(const table_t *t, uint8_t mark)
{
    return (mark & S_DIRTY_KIND) != 0 && ((mark & S_MARK_ROUND) != 0) != (t->round != 0);
}

/* Hands a frozen record to frozen_visit as it is (its frozen mark still on, so that
 * table_dirty_in_part() answers for it), then clears the mark. */
static int
s_hand_frozen(table_t *t, slot_head_t *h)
{
    int rc = t->frozen_visit(s_key(t, h), h->key_len, h->live ? s_rec(t, h) : NULL, t->frozen_ctx);
    if (rc == 0)
        h->dirty = 0;
    return rc;
}

/* Puts slot n on the dirty list; `how` whole also widens a record dirty only in part. A frozen
 * record is handed over first, as it was before this change. */
static int
s_mark_dirty_as(table_t *t, size_t n, uint8_t how)
{
    slot_head_t *h = s_slot(t, n);
    if (s_marked_now(t, h->dirty)) {
        if (how == S_DIRTY_WHOLE)
            h->dirty = (uint8_t)((h->dirty & S_MARK_ROUND) | S_DIRTY_WHOLE);
        return 0;
    }
    if (h->dirty != 0 && s_hand_frozen(t, h) != 0)
        return -1;
    if (t->dirty_count == t->dirty_cap) {
        size_t cap = t->dirty_cap ? t->dirty_cap * 2 : 256;
        uint32_t *d = realloc(t->dirty, cap * sizeof(*d));
        if (d == NULL)
            return -1;
        t->dirty = d;
        t->dirty_cap = cap;
    }
    t->dirty[t->dirty_count++] = (uint32_t)n;
    h->dirty = (uint8_t)(how | (t->round ? S_MARK_ROUND : 0));
    return 0;
}

static int
s_mark_dirty(table_t *t, size_t n)
{
    return s_mark_dirty_as(t, n, S_DIRTY_WHOLE);
}

void *
table_lookup(const table_t *t, const void *key, size_t key_len, bool *out_known)
{
    assert(t != NULL && key != NULL && out_known != NULL);
    *out_known = false;
    if (key_len > t->key_max)
        return NULL;
    uint64_t v = s_find(t, key, key_len);
    if (v == 0)
        return NULL;
    *out_known = true;
    slot_head_t *h = s_slot(t, s_entry_slot(v) - 1);
    return h->live ? s_rec(t, h) : NULL;
}

void *
table_get(const table_t *t, const void *key, size_t key_len)
{
    bool known;
    return table_lookup(t, key, key_len, &known);
}

/* Room for a key longer than key_room in the key arena, or NULL when memory runs out. */
static uint8_t *
s_arena_take(table_t *t, size_t len)
{
    assert(len <= TABLE_KEY_MAX && TABLE_KEY_MAX <= 4096);
    if (t->arena_count == 0 || t->arena_used + len > t->arena_size) {
        if (t->arena_count == t->arena_cap) {
            size_t cap = t->arena_cap ? t->arena_cap * 2 : 16;
            uint8_t **a = realloc(t->arena, cap * sizeof(*a));
            if (a == NULL)
                return NULL;
            t->arena = a;
            t->arena_cap = cap;
        }
        size_t size = t->arena_count == 0 ? 4096 : t->arena_size * 2;
        if (size > TABLE_ARENA_MAX)
            size = TABLE_ARENA_MAX;
        uint8_t *block = s_alloc(size);
        if (block == NULL)
            return NULL;
        t->arena[t->arena_count++] = block;
        t->arena_size = size;
        t->arena_used = 0;
    }
    uint8_t *p = t->arena[t->arena_count - 1] + t->arena_used;
    t->arena_used += len;
    return p;
}

/* Bytes of chunk k. */
static size_t
s_chunk_bytes(const table_t *t, size_t k)
{
    return ((size_t)TABLE_CHUNK_SLOTS << k) * t->slot_size;
}

/* Allocates the next chunk. Returns 0, or -1 when memory runs out or no chunk is left. */
static int
s_add_chunk(table_t *t)
{
    /* Slot numbers are 32-bit (the index keeps slot + 1 in 32 bits): far below the limit. */
    if (t->chunks_count == TABLE_CHUNKS_MAX || s_chunk_first(t->chunks_count) >= UINT32_MAX)
        return -1;
    /* Not zeroed here: each slot is cleared when it is first used. */
    uint8_t *chunk = s_alloc(s_chunk_bytes(t, t->chunks_count));
    if (chunk == NULL)
        return -1;
    t->chunks[t->chunks_count++] = chunk;
    return 0;
}

/*
 * With an ahead function, after slot n was taken: asks for the slots' memory up to TABLE_AHEAD
 * past it, 2 MiB at most per call (the next chunk is allocated early for that), and for
 * the next index once the index is 7/16 full, so that it is faulted in when the growth comes
 * (at 1/2: 1/16 of the index's size in new records later, time enough for the thread that
 * faults it in). A table that stops growing in between keeps that index unused:
 * twice the memory of its index, for a table that stopped just short of a growth. Chunks and
 * indexes smaller than TABLE_HUGE_MIN (from malloc) are not asked for. Allocation failures here
 * change nothing: the memory is then allocated when needed, as without asking.
 */
static void
s_ask_ahead(table_t *t, size_t n)
{
    size_t want = (n + 1) * t->slot_size + TABLE_AHEAD;
    while (t->asked < want) {
        size_t k = s_chunk_of(t->asked / t->slot_size);
        if (k >= TABLE_CHUNKS_MAX || (k == t->chunks_count && s_add_chunk(t) != 0))
            break;
        size_t start = s_chunk_first(k) * t->slot_size;
        size_t len = s_chunk_bytes(t, k);
        size_t off = t->asked - start;
        if (len < TABLE_HUGE_MIN) { /* from malloc: not asked for */
            t->asked = start + len;
            continue;
        }
        size_t piece = TABLE_HUGE_PAGE - off % TABLE_HUGE_PAGE;
        if (piece > len - off)
            piece = len - off;
        /* From a page boundary (madvise() wants one): the bytes before off are in use already,
         * and asking for them again changes nothing. */
        size_t from = off & ~(size_t)(TABLE_PAGE - 1);
        t->ahead(t->ahead_ctx, t->chunks[k] + from, piece + (off - from));
        t->asked += piece;
    }
    size_t next_bytes = 2 * t->index_cap * sizeof(uint64_t);
    if (t->next_index == NULL && next_bytes >= TABLE_HUGE_MIN &&
        16 * t->slots >= 7 * t->index_cap && 2 * t->index_cap <= ((size_t)1 << 32)) {
        t->next_index = s_index_alloc(2 * t->index_cap);
        if (t->next_index != NULL)
            t->ahead(t->ahead_ctx, t->next_index, next_bytes);
    }
}

void
table_set_ahead(table_t *t, table_ahead_fn fn, void *ctx)
{
    assert(t != NULL);
    t->ahead = fn;
    t->ahead_ctx = ctx;
    t->asked = t->slots * t->slot_size; /* what is in use was touched already */
}

/*
 * A new zero-filled slot (not live, not dirty) for key at index position pos (from s_find_h()
 * with hash): room in the chunks, then in the index (kept at most half full, counting the
 * entries still in the old one). NULL when memory runs out (the table is unchanged, but for the
 * bytes a long key may have taken in the arena).
 */
static slot_head_t *
s_new_slot(table_t *t, const void *key, size_t key_len, uint32_t hash, size_t pos)
{
    uint8_t *long_key = NULL;
    if (key_len > t->key_room && (long_key = s_arena_take(t, key_len)) == NULL)
        return NULL;
    /* The chunk of the new slot may have been allocated ahead (s_ask_ahead()). */
    if (t->slots == s_chunk_first(t->chunks_count) && s_add_chunk(t) != 0)
        return NULL;
    bool moved = false;
    if ((t->slots + 1) * 2 > t->index_cap) {
        if (s_grow_index(t, t->index_cap * 2) != 0)
            return NULL;
        moved = true;
    }
    moved |= s_move(t, S_MOVE_STEP);
    if (moved) /* the key is in neither index: its place is the first empty one from home */
        pos = s_empty_pos(t, hash);
    size_t n = t->slots++;
    slot_head_t *h = s_slot(t, n);
    memset(h, 0, t->slot_size);
    h->key_len = (uint16_t)key_len;
    h->slot = (uint32_t)n;
    if (long_key != NULL) {
        memcpy(long_key, key, key_len);
        memcpy(h + 1, &long_key, sizeof(long_key));
    } else {
        memcpy(h + 1, key, key_len);
    }
    t->index[pos] = (uint64_t)hash << 32 | (uint64_t)(n + 1);
    if (t->ahead != NULL)
        s_ask_ahead(t, n);
    return h;
}

void *
table_put(table_t *t, const void *key, size_t key_len, bool *out_created)
{
    assert(t != NULL && key != NULL);
    if (key_len == 0 || key_len > t->key_max)
        return NULL;
    uint32_t hash = s_hash(t, key, key_len);
    size_t pos;
    uint64_t v = s_find_h(t, key, key_len, hash, &pos);
    if (v != 0) {
        size_t n = s_entry_slot(v) - 1;
        slot_head_t *h = s_slot(t, n);
        if (s_mark_dirty(t, n) != 0)
            return NULL;
        bool created = !h->live;
        if (created) {
            memset(s_rec(t, h), 0, t->rec_size);
            h->live = 1;
            t->live++;
        }
        if (out_created != NULL)
            *out_created = created;
        return s_rec(t, h);
    }

    slot_head_t *h = s_new_slot(t, key, key_len, hash, pos);
    if (h == NULL)
        return NULL;
    h->live = 1;
    t->live++;
    if (s_mark_dirty(t, t->slots - 1) != 0)
        return NULL;
    if (out_created != NULL)
        *out_created = true;
    return s_rec(t, h);
}

/* The slot of a record pointer this table gave out. */
static slot_head_t *
s_head_of(const table_t *t, const void *rec)
{
    slot_head_t *h = (slot_head_t *)(void *)((uint8_t *)(uintptr_t)rec - t->key_room - sizeof(*h));
    assert(h->slot < t->slots && s_slot(t, h->slot) == h);
    return h;
}

static void *
s_touch(table_t *t, const void *rec, uint8_t how)
{
    assert(t != NULL && rec != NULL);
    slot_head_t *h = s_head_of(t, rec);
    assert(h->live);
    if (s_mark_dirty_as(t, h->slot, how) != 0)
        return NULL;
    return s_rec(t, h);
}

void *
table_touch(table_t *t, const void *rec)
{
    return s_touch(t, rec, S_DIRTY_WHOLE);
}

void *
table_touch_part(table_t *t, const void *rec)
{
    return s_touch(t, rec, S_DIRTY_PART);
}

bool
table_dirty_in_part(const table_t *t, const void *rec)
{
    return (s_head_of(t, rec)->dirty & S_DIRTY_KIND) == S_DIRTY_PART;
}

void *
table_fill(table_t *t, const void *key, size_t key_len, const void *rec, bool *out_failed)
{
    assert(t != NULL && key != NULL && out_failed != NULL);
    *out_failed = false;
    if (key_len == 0 || key_len > t->key_max) {
        *out_failed = true;
        return NULL;
    }
    uint32_t hash = s_hash(t, key, key_len);
    size_t pos;
    uint64_t known = s_find_h(t, key, key_len, hash, &pos);
    assert(known == 0); /* only keys the table does not know */
    (void)known;
    slot_head_t *h = s_new_slot(t, key, key_len, hash, pos);
    if (h == NULL) {
        *out_failed = true;
        return NULL;
    }
    if (rec == NULL)
        return NULL;
    h->live = 1;
    t->live++;
    memcpy(s_rec(t, h), rec, t->rec_size);
    return s_rec(t, h);
}

void
table_prefetch(const table_t *t, const void *key, size_t key_len)
{
    assert(t != NULL && key != NULL);
    uint32_t h = s_hash(t, key, key_len);
    __builtin_prefetch(&t->index[(size_t)h & (t->index_cap - 1)]);
    if (t->old_index != NULL)
        __builtin_prefetch(&t->old_index[(size_t)h & (t->old_cap - 1)]);
}

int
table_del(table_t *t, const void *key, size_t key_len)
{
    assert(t != NULL && key != NULL);
    if (key_len > t->key_max)
        return 0;
    uint64_t v = s_find(t, key, key_len);
    if (v == 0)
        return 0;
    slot_head_t *h = s_slot(t, s_entry_slot(v) - 1);
    if (!h->live)
        return 0;
    /* Marked dirty first: if that fails the record stays live, nothing half-done. */
    if (s_mark_dirty(t, s_entry_slot(v) - 1) != 0)
        return -1;
    h->live = 0;
    memset(s_rec(t, h), 0, t->rec_size);
    assert(t->live > 0);
    t->live--;
    return 0;
}

size_t
table_count(const table_t *t)
{
    return t->live;
}

size_t
table_slots(const table_t *t)
{
    return t->slots;
}

int
table_forget_clean(table_t *t)
{
    assert(t->frozen_visit == NULL); /* the frozen records are not on disk yet */
    table_t *fresh = NULL;
    if (table_new(t->key_max, t->rec_size, &fresh) != 0)
        return -1;
    fresh->numbered = t->numbered;
    fresh->number_off = t->number_off;
    fresh->round = t->round; /* the marks copied below carry it */
    if (table_reserve(fresh, t->dirty_count) != 0) {
        table_destroy(&fresh);
        return -1;
    }
    for (size_t i = 0; i < t->dirty_count; i++) {
        slot_head_t *h = s_slot(t, t->dirty[i]);
        void *rec = table_put(fresh, s_key(t, h), h->key_len, NULL);
        if (rec == NULL) {
            table_destroy(&fresh);
            return -1;
        }
        if (h->live) {
            memcpy(rec, s_rec(t, h), t->rec_size);
            s_head_of(fresh, rec)->dirty = h->dirty; /* whole or in part, as it was */
        } else
            table_del(fresh, s_key(t, h), h->key_len); /* stays dirty: a deletion to write */
    }
    table_set_ahead(fresh, t->ahead, t->ahead_ctx);
    /* The fresh table's insides replace the old ones; the old ones are freed with it. */
    table_t old = *t;
    *t = *fresh;
    *fresh = old;
    table_destroy(&fresh);
    return 0;
}

size_t
table_rec_size(const table_t *t)
{
    return t->rec_size;
}

int
table_foreach(const table_t *t, table_visit_fn fn, void *ctx)
{
    for (size_t n = 0; n < t->slots; n++) {
        slot_head_t *h = s_slot(t, n);
        if (!h->live)
            continue;
        int rc = fn(s_key(t, h), h->key_len, s_rec(t, h), ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* How far ahead the walks of the dirty list ask for slots: changed records lie anywhere (cards
 * redeemed at random), and a checkpoint's copy would otherwise wait for memory at each one. */
#define S_DIRTY_PREFETCH 8

/* Asks the CPU for the head and the record's last bytes of slot list[i], if i < count (a
 * hint). */
static inline void
s_prefetch_listed(const table_t *t, const uint32_t *list, size_t count, size_t i)
{
    if (i >= count)
        return;
    const uint8_t *h = (const uint8_t *)s_slot(t, list[i]);
    __builtin_prefetch(h);
    __builtin_prefetch(h + t->slot_size - 1);
}

int
table_foreach_dirty(const table_t *t, table_visit_fn fn, void *ctx)
{
    for (size_t i = 0; i < t->dirty_count; i++) {
        s_prefetch_listed(t, t->dirty, t->dirty_count, i + S_DIRTY_PREFETCH);
        slot_head_t *h = s_slot(t, t->dirty[i]);
        assert(h->dirty);
        int rc = fn(s_key(t, h), h->key_len, h->live ? s_rec(t, h) : NULL, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void
table_freeze_dirty(table_t *t, table_visit_fn visit, void *ctx)
{
    assert(t != NULL && visit != NULL && t->frozen_visit == NULL);
    uint32_t *list = t->frozen;
    size_t cap = t->frozen_cap;
    t->frozen = t->dirty;
    t->frozen_cap = t->dirty_cap;
    t->frozen_count = t->dirty_count;
    t->frozen_pos = 0;
    t->dirty = list;
    t->dirty_cap = cap;
    t->dirty_count = 0;
    t->round ^= 1;
    t->frozen_visit = visit;
    t->frozen_ctx = ctx;
}

/* Ends a freeze: nothing frozen any more. */
static void
s_end_freeze(table_t *t)
{
    t->frozen_visit = NULL;
    t->frozen_ctx = NULL;
    t->frozen_count = 0;
    t->frozen_pos = 0;
}

int
table_copy_frozen(table_t *t, size_t *budget, size_t *out_left)
{
    assert(t != NULL && budget != NULL && out_left != NULL);
    for (; t->frozen_visit != NULL && t->frozen_count > t->frozen_pos && *budget > 0;
         t->frozen_pos++, (*budget)--) {
        s_prefetch_listed(t, t->frozen, t->frozen_count, t->frozen_pos + S_DIRTY_PREFETCH);
        slot_head_t *h = s_slot(t, t->frozen[t->frozen_pos]);
        if (s_marked_frozen(t, h->dirty)) { /* else handed over already, before a change */
            int rc = s_hand_frozen(t, h);
            if (rc != 0) {
                *out_left = t->frozen_count - t->frozen_pos;
                return rc;
            }
        }
    }
    if (t->frozen_visit != NULL && t->frozen_pos == t->frozen_count)
        s_end_freeze(t);
    *out_left = t->frozen_count - t->frozen_pos;
    return 0;
}

void
table_frozen_drop(table_t *t)
{
    for (size_t i = t->frozen_pos; t->frozen_visit != NULL && i < t->frozen_count; i++) {
        slot_head_t *h = s_slot(t, t->frozen[i]);
        if (s_marked_frozen(t, h->dirty))
            h->dirty = 0;
    }
    s_end_freeze(t);
}

void
table_dirty_clear(table_t *t)
{
    for (size_t i = 0; i < t->dirty_count; i++) {
        if (i + S_DIRTY_PREFETCH < t->dirty_count)
            __builtin_prefetch(s_slot(t, t->dirty[i + S_DIRTY_PREFETCH]), 1);
        s_slot(t, t->dirty[i])->dirty = 0;
    }
    t->dirty_count = 0;
}

size_t
table_dirty_count(const table_t *t)
{
    return t->dirty_count;
}
