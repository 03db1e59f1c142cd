/*
 * pcache.c: read-through record cache with a changed set (see pcache.h).
 *
 * One hash table per projection table: slots in chunks (so a record never moves), and an index
 * probed linearly and kept at most half full. An index entry holds the slot number plus one
 * and 32 bits of the key's hash, so a probe touches the slot (a cache miss on a large table)
 * only when the hash bits match, and growing the index never touches the slots. A slot holds a
 * small header, the key (key_max bytes) and the value (val_max bytes). A slot is either live
 * or gone; gone slots remember that LMDB has no such key (or that it must be deleted, when
 * changed).
 */
#include "pcache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xxhash.h>

#include "bytes.h"
#include "radix.h"

#define S_INDEX_MIN 1024u
/* Chunks of slots and indexes are sized and aligned to the transparent huge page size, and
 * marked for huge pages: a rebuild fills hundreds of megabytes, and on the VMs this runs on a
 * page fault per 4 KiB page cost more than the fold itself. */
#define S_HUGE_BYTES (2u * 1024 * 1024)

enum { S_GONE = 0, S_LIVE = 1 };

typedef struct slot {
    uint32_t val_len;
    uint32_t idx; /* the slot's own number */
    uint16_t key_len;
    uint8_t state; /* S_LIVE or S_GONE */
    uint8_t dirty; /* on the changed list */
    uint32_t pad;
} slot_t;

/* An index entry: the hash's low 32 bits (also the probe position) and slot number + 1. */
#define S_ENTRY(hash32, slot1) (((uint64_t)(hash32) << 32) | (uint64_t)(slot1))
#define S_ENTRY_SLOT1(e)       ((uint32_t)(e))
#define S_ENTRY_HASH(e)        ((uint32_t)((e) >> 32))

typedef struct ctable {
    size_t key_limit; /* the table's key_max */
    size_t key_max;   /* key_limit rounded up to 8 */
    size_t val_max;
    size_t slot_size;
    unsigned chunk_shift; /* log2 of the slots of a chunk */
    uint8_t **chunks;
    size_t chunks_count;
    size_t chunks_cap;
    size_t slots;
    uint64_t *index;  /* S_ENTRY()s, 0 = empty */
    size_t index_cap; /* a power of two */
    bool complete;    /* LMDB holds nothing this table does not */
    bool write_once;  /* dropped after every commit */
    uint32_t *dirty;
    size_t dirty_count;
    size_t dirty_cap;
    /* The slot of the last key looked up (NULL: none). A table whose lookups repeat a key (a
     * program, its liability, a store's day) finds it again without hashing and probing. */
    slot_t *last;
} ctable_t;

struct pcache {
    ctable_t t[PROJ_TABLES_MAX];
    size_t n;
    MDB_txn *txn;
    MDB_dbi dbis[PROJ_TABLES_MAX];
    int err;
};

static inline slot_t *
s_slot(const ctable_t *t, size_t i)
{
    assert(i < t->slots);
    size_t mask = ((size_t)1 << t->chunk_shift) - 1;
    return (slot_t *)(void *)(t->chunks[i >> t->chunk_shift] + (i & mask) * t->slot_size);
}

/* Memory for a chunk or an index: from 2 MiB up, its own mapping (the kernel aligns it to
 * 2 MiB), advised for huge pages, so the kernel faults it in 2 MiB at a time; smaller, plain
 * malloc(). Large blocks stay out of the malloc arena, which the fold keeps faulted in for
 * LMDB's pages (fold.c). Freed with s_big_free() and the same size. NULL when out of memory. */
static size_t
s_big_len(size_t bytes)
{
    return (bytes + S_HUGE_BYTES - 1) & ~(size_t)(S_HUGE_BYTES - 1);
}

static void *
s_big_alloc(size_t bytes, bool zero)
{
    if (bytes < S_HUGE_BYTES)
        return zero ? calloc(1, bytes) : malloc(bytes);
    void *p =
        mmap(NULL, s_big_len(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    (void)madvise(p, s_big_len(bytes), MADV_HUGEPAGE); /* a hint: fine when refused */
    return p;                                          /* a new mapping reads as zeros */
}

static void
s_big_free(void *p, size_t bytes)
{
    if (p == NULL)
        return;
    if (bytes < S_HUGE_BYTES)
        free(p);
    else
        munmap(p, s_big_len(bytes));
}

/* Bytes of one chunk of slots. */
static size_t
s_chunk_bytes(const ctable_t *t)
{
    return ((size_t)1 << t->chunk_shift) * t->slot_size;
}

static inline uint8_t *
s_key(slot_t *s)
{
    return (uint8_t *)(s + 1);
}

static inline uint8_t *
s_val(const ctable_t *t, slot_t *s)
{
    return (uint8_t *)(s + 1) + t->key_max;
}

static void
s_table_free(ctable_t *t)
{
    for (size_t i = 0; i < t->chunks_count; i++)
        if (i == 0)
            free(t->chunks[i]); /* the first chunk is plain malloc() (s_new_slot) */
        else
            s_big_free(t->chunks[i], s_chunk_bytes(t));
    free(t->chunks);
    s_big_free(t->index, t->index_cap * sizeof(*t->index));
    free(t->dirty);
    t->chunks = NULL;
    t->index = NULL;
    t->dirty = NULL;
}

static int
s_table_init(ctable_t *t, size_t key_max, size_t val_max, bool write_once)
{
    memset(t, 0, sizeof(*t));
    t->write_once = write_once;
    t->key_limit = key_max;
    t->val_max = val_max;
    /* Keys are padded so values start 8-aligned: the folds keep structs in them. */
    t->key_max = (key_max + 7) & ~(size_t)7;
    t->slot_size = (sizeof(slot_t) + t->key_max + val_max + 7) & ~(size_t)7;
    /* As many slots as fit in a huge page, a power of two (at least 1024). */
    t->chunk_shift = 10;
    while (((size_t)2 << t->chunk_shift) * t->slot_size <= S_HUGE_BYTES)
        t->chunk_shift++;
    t->index_cap = S_INDEX_MIN;
    t->index = calloc(t->index_cap, sizeof(*t->index));
    return t->index != NULL ? 0 : PROJ_ENOMEM;
}

int
pcache_new(const proj_table_def_t *tables, size_t n, pcache_t **out)
{
    if (tables == NULL || out == NULL || n == 0 || n > PROJ_TABLES_MAX)
        return PROJ_EINVAL;
    pcache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return PROJ_ENOMEM;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        if (tables[i].key_max == 0 || tables[i].key_max > PROJ_KEY_MAX ||
            tables[i].val_max > PROJ_VAL_MAX ||
            s_table_init(&c->t[i], tables[i].key_max, tables[i].val_max, tables[i].write_once) !=
                0) {
            pcache_destroy(&c);
            return PROJ_ENOMEM;
        }
    }
    *out = c;
    return 0;
}

void
pcache_destroy(pcache_t **cp)
{
    if (cp == NULL || *cp == NULL)
        return;
    pcache_t *c = *cp;
    for (size_t i = 0; i < c->n; i++)
        s_table_free(&c->t[i]);
    free(c);
    *cp = NULL;
}

void
pcache_bind(pcache_t *c, MDB_txn *txn, const MDB_dbi *dbis)
{
    c->txn = txn;
    if (txn != NULL)
        memcpy(c->dbis, dbis, c->n * sizeof(*dbis));
}

void
pcache_set_complete(pcache_t *c, bool complete)
{
    for (size_t i = 0; i < c->n; i++)
        c->t[i].complete = complete;
}

int
pcache_error(const pcache_t *c)
{
    return c->err;
}

static void
s_fail(pcache_t *c, int rc)
{
    if (c->err == 0)
        c->err = rc;
}

/* The index position of key, or the empty position where it would go. */
static size_t
s_find(const ctable_t *t, const void *key, size_t klen, uint32_t hash32)
{
    size_t mask = t->index_cap - 1;
    size_t pos = (size_t)hash32 & mask;
    for (;;) {
        uint64_t e = t->index[pos];
        if (e == 0)
            return pos;
        if (S_ENTRY_HASH(e) == hash32) {
            slot_t *s = s_slot(t, S_ENTRY_SLOT1(e) - 1);
            if (s->key_len == klen && memcmp(s_key(s), key, klen) == 0)
                return pos;
        }
        pos = (pos + 1) & mask;
    }
}

static int
s_grow_index(ctable_t *t)
{
    size_t cap = t->index_cap * 2;
    uint64_t *index = s_big_alloc(cap * sizeof(*index), true);
    if (index == NULL)
        return PROJ_ENOMEM;
    size_t mask = cap - 1;
    for (size_t i = 0; i < t->index_cap; i++) {
        uint64_t e = t->index[i];
        if (e == 0)
            continue;
        size_t pos = (size_t)S_ENTRY_HASH(e) & mask;
        while (index[pos] != 0)
            pos = (pos + 1) & mask;
        index[pos] = e;
    }
    s_big_free(t->index, t->index_cap * sizeof(*t->index));
    t->index = index;
    t->index_cap = cap;
    return 0;
}

/* A new slot for key at index position pos (recomputed if the index grows). */
static slot_t *
s_new_slot(ctable_t *t, const void *key, size_t klen, uint32_t hash32, size_t pos)
{
    if (t->slots >= UINT32_MAX - 1)
        return NULL;
    if ((t->slots >> t->chunk_shift) == t->chunks_count) { /* else: a kept chunk is reused */
        if (t->chunks_count == t->chunks_cap) {
            size_t cap = t->chunks_cap != 0 ? t->chunks_cap * 2 : 16;
            uint8_t **chunks = realloc(t->chunks, cap * sizeof(*chunks));
            if (chunks == NULL)
                return NULL;
            t->chunks = chunks;
            t->chunks_cap = cap;
        }
        /* The first chunk of a table is plain memory: most tables stay that small. */
        size_t bytes = s_chunk_bytes(t);
        uint8_t *chunk = t->chunks_count == 0 ? malloc(bytes) : s_big_alloc(bytes, false);
        if (chunk == NULL)
            return NULL;
        t->chunks[t->chunks_count++] = chunk;
    }
    if ((t->slots + 1) * 2 > t->index_cap) {
        if (s_grow_index(t) != 0)
            return NULL;
        pos = s_find(t, key, klen, hash32);
    }
    size_t i = t->slots++;
    slot_t *s = s_slot(t, i);
    memset(s, 0, sizeof(*s));
    s->idx = (uint32_t)i;
    s->key_len = (uint16_t)klen;
    s->state = S_GONE;
    memcpy(s_key(s), key, klen);
    assert(t->index[pos] == 0);
    t->index[pos] = S_ENTRY(hash32, i + 1);
    return s;
}

/* The slot of key, reading LMDB on a miss unless `fresh` (the caller knows LMDB has no such
 * key); NULL after an error (recorded). */
static slot_t *
s_lookup(pcache_t *c, size_t ti, const void *key, size_t klen, bool fresh)
{
    assert(ti < c->n);
    ctable_t *t = &c->t[ti];
    if (t->index == NULL) {
        s_fail(c, PROJ_ENOMEM);
        return NULL;
    }
    if (klen == 0 || klen > t->key_limit) {
        s_fail(c, PROJ_ELIMIT);
        return NULL;
    }
    if (t->last != NULL && t->last->key_len == klen && memcmp(s_key(t->last), key, klen) == 0)
        return t->last;
    uint32_t hash32 = (uint32_t)XXH3_64bits(key, klen);
    size_t pos = s_find(t, key, klen, hash32);
    if (t->index[pos] != 0)
        return t->last = s_slot(t, S_ENTRY_SLOT1(t->index[pos]) - 1);

    MDB_val v = { 0, NULL };
    bool found = false;
    if (!t->complete && !fresh) {
        if (c->txn == NULL) {
            s_fail(c, PROJ_EINVAL);
            return NULL;
        }
        MDB_val k = { klen, (void *)(uintptr_t)key };
        int rc = mdb_get(c->txn, c->dbis[ti], &k, &v);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            s_fail(c, rc);
            return NULL;
        }
        found = rc == 0;
        if (found && v.mv_size > t->val_max) {
            s_fail(c, PROJ_ECORRUPT);
            return NULL;
        }
    }
    slot_t *s = s_new_slot(t, key, klen, hash32, pos);
    if (s == NULL) {
        s_fail(c, PROJ_ENOMEM);
        return NULL;
    }
    if (found) {
        s->state = S_LIVE;
        s->val_len = (uint32_t)v.mv_size;
        memcpy(s_val(t, s), v.mv_data, v.mv_size);
    }
    return t->last = s;
}

void
pcache_prefetch(const pcache_t *c, size_t ti, const void *key, size_t klen, int stage)
{
    const ctable_t *t = &c->t[ti];
    if (t->index == NULL || klen == 0 || klen > t->key_limit)
        return;
    uint32_t hash32 = (uint32_t)XXH3_64bits(key, klen);
    size_t pos = (size_t)hash32 & (t->index_cap - 1);
    if (stage == 0) {
        __builtin_prefetch(&t->index[pos]);
        return;
    }
    uint64_t e = t->index[pos];
    if (e != 0 && S_ENTRY_HASH(e) == hash32 && S_ENTRY_SLOT1(e) - 1 < t->slots) {
        const uint8_t *slot = (const uint8_t *)s_slot(t, S_ENTRY_SLOT1(e) - 1);
        __builtin_prefetch(slot);
        __builtin_prefetch(slot + 64);
        __builtin_prefetch(slot + t->slot_size - 1);
    }
}

const void *
pcache_peek(const pcache_t *c, size_t ti, const void *key, size_t klen, size_t *out_len)
{
    const ctable_t *t = &c->t[ti];
    if (t->index == NULL || klen == 0 || klen > t->key_limit)
        return NULL;
    size_t pos = s_find(t, key, klen, (uint32_t)XXH3_64bits(key, klen));
    if (t->index[pos] == 0)
        return NULL;
    slot_t *s = s_slot(t, S_ENTRY_SLOT1(t->index[pos]) - 1);
    if (s->state != S_LIVE)
        return NULL;
    if (out_len != NULL)
        *out_len = s->val_len;
    return s_val(t, s);
}

const void *
pcache_get(pcache_t *c, size_t ti, const void *key, size_t klen, size_t *out_len)
{
    slot_t *s = s_lookup(c, ti, key, klen, false);
    if (s == NULL || s->state != S_LIVE)
        return NULL;
    if (out_len != NULL)
        *out_len = s->val_len;
    return s_val(&c->t[ti], s);
}

static int
s_mark(ctable_t *t, slot_t *s)
{
    if (s->dirty)
        return 0;
    if (t->dirty_count == t->dirty_cap) {
        size_t cap = t->dirty_cap != 0 ? t->dirty_cap * 2 : 256;
        uint32_t *d = realloc(t->dirty, cap * sizeof(*d));
        if (d == NULL)
            return PROJ_ENOMEM;
        t->dirty = d;
        t->dirty_cap = cap;
    }
    t->dirty[t->dirty_count++] = s->idx;
    s->dirty = 1;
    return 0;
}

void *
pcache_get_mut(pcache_t *c, size_t ti, const void *key, size_t klen, size_t *out_len)
{
    slot_t *s = s_lookup(c, ti, key, klen, false);
    if (s == NULL || s->state != S_LIVE)
        return NULL;
    ctable_t *t = &c->t[ti];
    if (s_mark(t, s) != 0) {
        s_fail(c, PROJ_ENOMEM);
        return NULL;
    }
    if (out_len != NULL)
        *out_len = s->val_len;
    return s_val(t, s);
}

static void *
s_put(pcache_t *c, size_t ti, const void *key, size_t klen, size_t vlen, bool fresh,
      bool *out_created)
{
    ctable_t *t = &c->t[ti];
    if (vlen > t->val_max) {
        s_fail(c, PROJ_ELIMIT);
        return NULL;
    }
    slot_t *s = s_lookup(c, ti, key, klen, fresh);
    if (s == NULL)
        return NULL;
    if (s_mark(t, s) != 0) {
        s_fail(c, PROJ_ENOMEM);
        return NULL;
    }
    bool created = s->state != S_LIVE;
    uint8_t *val = s_val(t, s);
    if (created) {
        memset(val, 0, vlen);
        s->state = S_LIVE;
    } else if (vlen > s->val_len) {
        memset(val + s->val_len, 0, vlen - s->val_len);
    }
    s->val_len = (uint32_t)vlen;
    if (out_created != NULL)
        *out_created = created;
    return val;
}

void *
pcache_put(pcache_t *c, size_t ti, const void *key, size_t klen, size_t vlen, bool *out_created)
{
    return s_put(c, ti, key, klen, vlen, false, out_created);
}

void *
pcache_insert(pcache_t *c, size_t ti, const void *key, size_t klen, size_t vlen)
{
    return s_put(c, ti, key, klen, vlen, true, NULL);
}

void
pcache_del(pcache_t *c, size_t ti, const void *key, size_t klen)
{
    slot_t *s = s_lookup(c, ti, key, klen, false);
    if (s == NULL || s->state != S_LIVE)
        return;
    if (s_mark(&c->t[ti], s) != 0) {
        s_fail(c, PROJ_ENOMEM);
        return;
    }
    s->state = S_GONE;
    s->val_len = 0;
}

/* LMDB's default key order: memcmp over the shorter length, then the shorter key first. Keys
 * are compared 8 bytes at a time as big-endian numbers (the same order as memcmp): most start
 * with a big-endian id, or with a merchant id that all keys of a table share, and the sort of a
 * commit's changed records was a good part of a fold's time. */
static int
s_slot_cmp(const void *a, const void *b)
{
    const slot_t *x = *(slot_t *const *)a;
    const slot_t *y = *(slot_t *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    const uint8_t *xk = (const uint8_t *)(x + 1), *yk = (const uint8_t *)(y + 1);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t xa = cl_get_be64(xk + i), ya = cl_get_be64(yk + i);
        if (xa != ya)
            return (xa > ya) - (xa < ya);
    }
    int r = memcmp(xk + i, yk + i, n - i);
    if (r != 0)
        return r;
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* s_slot_cmp() of a slot's key against a key. */
static int
s_key_cmp(slot_t *s, const uint8_t *key, size_t klen)
{
    size_t n = s->key_len < klen ? s->key_len : klen;
    int r = memcmp(s_key(s), key, n);
    if (r != 0)
        return r;
    return (s->key_len > klen) - (s->key_len < klen);
}

/* A slot in s_sort_keys(): 8 bytes of its key as a big-endian number (radix_head()), and the
 * slot. */
typedef struct s_head {
    uint64_t head;
    slot_t *slot;
} s_head_t;

static int
s_head_cmp(const void *x, const void *y, void *ctx)
{
    (void)ctx;
    return s_slot_cmp(&((const s_head_t *)x)->slot, &((const s_head_t *)y)->slot);
}

/*
 * Sorts n slots into s_slot_cmp() order, the way daemon/checkpoint.c sorts a batch's runs
 * (radix.h): by the 8 key bytes from where the keys start to differ, then each group whose 8
 * bytes are equal by the whole key, which only longer keys need (history keys, a card id and a
 * chunk number, group by card). A few passes over an array instead of n log n calls of a
 * comparison: qsort() of the history keys was 7 % of the balances worker in batches of 262144
 * events. False, with order untouched, when the scratch memory cannot be had (the caller then
 * uses qsort()).
 */
static bool
s_sort_keys(slot_t **order, size_t n)
{
    s_head_t *mem = malloc(2 * n * sizeof(*mem));
    if (mem == NULL)
        return false;
    const uint8_t *first = s_key(order[0]);
    size_t common = order[0]->key_len;
    for (size_t i = 1; i < n && common > 0; i++)
        common = radix_shared(first, s_key(order[i]), order[i]->key_len, common);
    s_head_t *a = mem, *b = mem + n;
    for (size_t i = 0; i < n; i++) {
        a[i].head = radix_head(s_key(order[i]), order[i]->key_len, common);
        a[i].slot = order[i];
    }
    a = radix_sort_u64(a, b, n, sizeof(*a), offsetof(s_head_t, head));
    radix_sort_ties(a, n, sizeof(*a), offsetof(s_head_t, head), s_head_cmp, NULL);
    for (size_t i = 0; i < n; i++)
        order[i] = a[i].slot;
    free(mem);
    return true;
}

int
pcache_write(pcache_t *c, MDB_txn *txn, const MDB_dbi *dbis)
{
    size_t most = 0;
    for (size_t ti = 0; ti < c->n; ti++)
        most = c->t[ti].dirty_count > most ? c->t[ti].dirty_count : most;
    if (most == 0)
        return 0;
    slot_t **order = malloc(most * sizeof(*order));
    if (order == NULL)
        return PROJ_ENOMEM;
    int rc = 0;
    for (size_t ti = 0; rc == 0 && ti < c->n; ti++) {
        ctable_t *t = &c->t[ti];
        if (t->dirty_count == 0)
            continue;
        MDB_cursor *cur;
        rc = mdb_cursor_open(txn, dbis[ti], &cur);
        if (rc != 0)
            break;
        /* The table's last key: records past it are appended (MDB_APPEND), which fills pages
         * completely and skips the descent from the root, where a put of keys in order would
         * split pages in the middle and leave them a half to two thirds full. */
        uint8_t last[PROJ_KEY_MAX];
        size_t last_len = 0;
        MDB_val lk, lv;
        int lrc = mdb_cursor_get(cur, &lk, &lv, MDB_LAST);
        if (lrc != 0 && lrc != MDB_NOTFOUND) {
            rc = lrc;
            mdb_cursor_close(cur);
            break;
        }
        bool empty = lrc == MDB_NOTFOUND;
        if (!empty) {
            if (lk.mv_size > sizeof(last)) {
                rc = PROJ_ECORRUPT;
                mdb_cursor_close(cur);
                break;
            }
            memcpy(last, lk.mv_data, lk.mv_size);
            last_len = lk.mv_size;
        }
        bool sorted = true;
        for (size_t i = 0; i < t->dirty_count; i++) {
            order[i] = s_slot(t, t->dirty[i]);
            if (i > 0 && sorted && s_slot_cmp(&order[i - 1], &order[i]) > 0)
                sorted = false;
        }
        /* Key order makes LMDB touch each page once, and lets the new keys past the end be
         * appended. write_once tables take new keys that mostly land at a few growing ends,
         * where order buys less than the sort costs, except into an empty table (the first
         * batch of a rebuild), where sorted it is all appends. */
        if (!sorted && (!t->write_once || empty)) {
            if (!s_sort_keys(order, t->dirty_count))
                qsort(order, t->dirty_count, sizeof(*order), s_slot_cmp);
            sorted = true;
        }
        bool append = sorted && empty;
        for (size_t i = 0; rc == 0 && i < t->dirty_count; i++) {
            slot_t *s = order[i];
            MDB_val k = { s->key_len, s_key(s) };
            if (sorted && !append && s_key_cmp(s, last, last_len) > 0)
                append = true; /* and so are all after it */
            if (s->state == S_LIVE) {
                MDB_val v = { s->val_len, s_val(t, s) };
                rc = mdb_cursor_put(cur, &k, &v, append ? MDB_APPEND : 0);
            } else if (!append) {
                MDB_val v;
                rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
                if (rc == 0)
                    rc = mdb_cursor_del(cur, 0);
                else if (rc == MDB_NOTFOUND)
                    rc = 0;
            } /* else: past the last key, so not in the table */
        }
        mdb_cursor_close(cur);
    }
    free(order);
    return rc;
}

static size_t
s_bytes(const ctable_t *t)
{
    return t->chunks_count * ((size_t)1 << t->chunk_shift) * t->slot_size +
           t->index_cap * sizeof(uint64_t);
}

/* Forgets every record of a write_once table after a commit, keeping its memory for the next
 * batch (freeing and faulting in the same chunks every batch costs more than folding). */
static void
s_table_forget(ctable_t *t)
{
    assert(t->dirty_count == 0);
    memset(t->index, 0, t->index_cap * sizeof(*t->index));
    t->slots = 0;
    t->complete = false;
    t->last = NULL;
}

/* Drops every record of a table (none may be changed); it is then no longer complete. */
static void
s_table_reset(pcache_t *c, ctable_t *t)
{
    size_t key_limit = t->key_limit, val_max = t->val_max;
    bool write_once = t->write_once;
    s_table_free(t);
    if (s_table_init(t, key_limit, val_max, write_once) != 0)
        s_fail(c, PROJ_ENOMEM); /* sticky: every later lookup fails too */
}

size_t
pcache_bytes(const pcache_t *c)
{
    size_t n = 0;
    for (size_t ti = 0; ti < c->n; ti++)
        n += s_bytes(&c->t[ti]);
    return n;
}

size_t
pcache_dirty_count(const pcache_t *c)
{
    size_t n = 0;
    for (size_t ti = 0; ti < c->n; ti++)
        n += c->t[ti].dirty_count;
    return n;
}

void
pcache_reset(pcache_t *c)
{
    c->err = 0;
    for (size_t ti = 0; ti < c->n; ti++)
        s_table_reset(c, &c->t[ti]);
}

void
pcache_committed(pcache_t *c, size_t max_bytes)
{
    for (size_t ti = 0; ti < c->n; ti++) {
        ctable_t *t = &c->t[ti];
        for (size_t i = 0; i < t->dirty_count; i++)
            s_slot(t, t->dirty[i])->dirty = 0;
        t->dirty_count = 0;
        if (t->write_once && t->slots > 0)
            s_table_forget(t);
    }
    if (max_bytes != 0 && pcache_bytes(c) > max_bytes)
        pcache_reset(c);
}
