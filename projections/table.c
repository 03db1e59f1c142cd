/*
 * table.c: fixed-size records under short keys, with a dirty set (see table.h).
 *
 * Slots live in chunks of TABLE_CHUNK_SLOTS so that a record never moves. A slot is a small
 * header, the key (key_max bytes) and the record, padded to 8 bytes. The index is an array of
 * slot numbers plus one (0 = empty), probed linearly, at most half full.
 */
#include "table.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#define TABLE_CHUNK_SLOTS 4096
#define TABLE_INDEX_MIN   1024

typedef struct slot_head {
    uint16_t key_len;
    uint8_t live;  /* 0 = deleted */
    uint8_t dirty; /* on the dirty list */
    uint32_t pad;
} slot_head_t;

struct table {
    size_t key_max;
    size_t rec_size;
    size_t key_room;  /* key_max rounded up to 8, so records are 8-aligned */
    size_t slot_size; /* header + key room + record, 8-aligned */
    uint8_t **chunks;
    size_t chunks_count;
    size_t chunks_cap;
    size_t slots; /* slots in use, live or deleted */
    size_t live;
    uint32_t *index;  /* slot number + 1, or 0 */
    size_t index_cap; /* a power of two */
    bool untracked;   /* no dirty set: a derived index */
    uint32_t *dirty;  /* slot numbers */
    size_t dirty_count;
    size_t dirty_cap;
};

static inline slot_head_t *
s_slot(const table_t *t, size_t n)
{
    assert(n < t->slots);
    return (slot_head_t *)(void *)(t->chunks[n / TABLE_CHUNK_SLOTS] +
                                   (n % TABLE_CHUNK_SLOTS) * t->slot_size);
}

static inline uint8_t *
s_key(slot_head_t *h)
{
    return (uint8_t *)(h + 1);
}

static inline void *
s_rec(const table_t *t, slot_head_t *h)
{
    return (uint8_t *)(h + 1) + t->key_room;
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
    t->key_room = (key_max + 7) & ~(size_t)7;
    t->slot_size = (sizeof(slot_head_t) + t->key_room + rec_size + 7) & ~(size_t)7;
    t->index_cap = TABLE_INDEX_MIN;
    t->index = calloc(t->index_cap, sizeof(*t->index));
    if (t->index == NULL) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void
table_set_untracked(table_t *t)
{
    assert(t != NULL && t->slots == 0);
    t->untracked = true;
}

void
table_destroy(table_t **tp)
{
    if (tp == NULL || *tp == NULL)
        return;
    table_t *t = *tp;
    for (size_t i = 0; i < t->chunks_count; i++)
        free(t->chunks[i]);
    free(t->chunks);
    free(t->index);
    free(t->dirty);
    free(t);
    *tp = NULL;
}

/* Index position holding key, or the empty position where it would go. */
static size_t
s_find(const table_t *t, const void *key, size_t key_len)
{
    size_t mask = t->index_cap - 1;
    size_t pos = (size_t)XXH3_64bits(key, key_len) & mask;
    for (;;) {
        uint32_t v = t->index[pos];
        if (v == 0)
            return pos;
        slot_head_t *h = s_slot(t, v - 1);
        if (h->key_len == key_len && memcmp(s_key(h), key, key_len) == 0)
            return pos;
        pos = (pos + 1) & mask;
    }
}

static int
s_grow_index(table_t *t)
{
    size_t cap = t->index_cap * 2;
    uint32_t *index = calloc(cap, sizeof(*index));
    if (index == NULL)
        return -1;
    uint32_t *old = t->index;
    t->index = index;
    t->index_cap = cap;
    for (size_t n = 0; n < t->slots; n++) {
        slot_head_t *h = s_slot(t, n);
        size_t pos = s_find(t, s_key(h), h->key_len);
        assert(t->index[pos] == 0);
        t->index[pos] = (uint32_t)(n + 1);
    }
    free(old);
    return 0;
}

static int
s_mark_dirty(table_t *t, size_t n)
{
    slot_head_t *h = s_slot(t, n);
    if (h->dirty || t->untracked)
        return 0;
    if (t->dirty_count == t->dirty_cap) {
        size_t cap = t->dirty_cap ? t->dirty_cap * 2 : 256;
        uint32_t *d = realloc(t->dirty, cap * sizeof(*d));
        if (d == NULL)
            return -1;
        t->dirty = d;
        t->dirty_cap = cap;
    }
    t->dirty[t->dirty_count++] = (uint32_t)n;
    h->dirty = 1;
    return 0;
}

void *
table_get(const table_t *t, const void *key, size_t key_len)
{
    assert(t != NULL && key != NULL);
    if (key_len > t->key_max)
        return NULL;
    uint32_t v = t->index[s_find(t, key, key_len)];
    if (v == 0)
        return NULL;
    slot_head_t *h = s_slot(t, v - 1);
    return h->live ? s_rec(t, h) : NULL;
}

void *
table_put(table_t *t, const void *key, size_t key_len, bool *out_created)
{
    assert(t != NULL && key != NULL);
    if (key_len == 0 || key_len > t->key_max)
        return NULL;
    size_t pos = s_find(t, key, key_len);
    uint32_t v = t->index[pos];
    if (v != 0) {
        size_t n = v - 1;
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

    /* A new slot: room in the chunks, then in the index (kept at most half full). */
    if (t->slots % TABLE_CHUNK_SLOTS == 0 && t->slots / TABLE_CHUNK_SLOTS == t->chunks_count) {
        if (t->chunks_count == t->chunks_cap) {
            size_t cap = t->chunks_cap ? t->chunks_cap * 2 : 16;
            uint8_t **c = realloc(t->chunks, cap * sizeof(*c));
            if (c == NULL)
                return NULL;
            t->chunks = c;
            t->chunks_cap = cap;
        }
        uint8_t *chunk = calloc(TABLE_CHUNK_SLOTS, t->slot_size);
        if (chunk == NULL)
            return NULL;
        t->chunks[t->chunks_count++] = chunk;
    }
    if ((t->slots + 1) * 2 > t->index_cap) {
        if (s_grow_index(t) != 0)
            return NULL;
        pos = s_find(t, key, key_len);
    }
    size_t n = t->slots++;
    slot_head_t *h = s_slot(t, n);
    memset(h, 0, t->slot_size);
    h->key_len = (uint16_t)key_len;
    h->live = 1;
    memcpy(s_key(h), key, key_len);
    t->index[pos] = (uint32_t)(n + 1);
    t->live++;
    if (s_mark_dirty(t, n) != 0)
        return NULL;
    if (out_created != NULL)
        *out_created = true;
    return s_rec(t, h);
}

void
table_del(table_t *t, const void *key, size_t key_len)
{
    assert(t != NULL && key != NULL);
    if (key_len > t->key_max)
        return;
    uint32_t v = t->index[s_find(t, key, key_len)];
    if (v == 0)
        return;
    slot_head_t *h = s_slot(t, v - 1);
    if (!h->live)
        return;
    /* Marked dirty first: if that fails the record stays live, nothing half-done. */
    if (s_mark_dirty(t, v - 1) != 0)
        return;
    h->live = 0;
    memset(s_rec(t, h), 0, t->rec_size);
    assert(t->live > 0);
    t->live--;
}

size_t
table_count(const table_t *t)
{
    return t->live;
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
        int rc = fn(s_key(h), h->key_len, s_rec(t, h), ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
table_foreach_dirty(const table_t *t, table_visit_fn fn, void *ctx)
{
    for (size_t i = 0; i < t->dirty_count; i++) {
        slot_head_t *h = s_slot(t, t->dirty[i]);
        assert(h->dirty);
        int rc = fn(s_key(h), h->key_len, h->live ? s_rec(t, h) : NULL, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void
table_dirty_clear(table_t *t)
{
    for (size_t i = 0; i < t->dirty_count; i++)
        s_slot(t, t->dirty[i])->dirty = 0;
    t->dirty_count = 0;
}

size_t
table_dirty_count(const table_t *t)
{
    return t->dirty_count;
}
