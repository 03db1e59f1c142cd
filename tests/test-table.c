/*
 * projections/table.c: records under keys, with a dirty set, across many chunks.
 *
 * The ledger's tests drive the table through a few thousand records at most, all in its first
 * chunk. These cases fill tables past several chunk boundaries (chunks double in size) and check
 * that every record is found where it was put, never moves, and is walked in insertion order;
 * that the dirty set, deletions and forgetting the clean records hold across chunks; and that
 * a reserved table takes the same records; and that a numbered table (card ids, sequence
 * numbers) finds numbers in a long run and numbers far from it; and that keys of every length up
 * to TABLE_KEY_MAX, in the slot or in the key arena, are kept whole; that a record touched
 * in part stays so until it is touched whole; and that while the index grows (a few entries
 * copied per insert) every record is found, and deletions, reserves and forgetting hold; and
 * that a table with an ahead function asks for its slots' memory before it uses it, once.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"
#include "table.h"

/* Past the fifth chunk: 4096 + 8192 + 16384 + 32768 + 65536 = 126,976 slots. */
#define S_RECORDS 150000

typedef struct s_rec {
    uint64_t n;
    char tag[20];
} s_rec_t;

static size_t
s_key(uint64_t n, char *key)
{
    /* Keys of different lengths, so slots hold short and long ones. */
    return (size_t)snprintf(key, 40, "key-%llu-%.*s", (unsigned long long)n, (int)(n % 17),
                            "abcdefghijklmnopq");
}

static void *s_addr[S_RECORDS];

typedef struct s_walk {
    uint64_t next;
    bool in_order;
} s_walk_t;

static int
s_visit(const void *key, size_t key_len, const void *rec, void *ctx)
{
    s_walk_t *w = ctx;
    char want[40];
    size_t n = s_key(w->next, want);
    if (rec == NULL || ((const s_rec_t *)rec)->n != w->next || key_len != n ||
        memcmp(key, want, n) != 0)
        w->in_order = false;
    w->next++;
    return 0;
}

/* Collects the numbers of the first two records visited into ctx (uint64_t[2]). */
static int
s_collect(const void *key, size_t key_len, const void *rec, void *ctx)
{
    uint64_t *seen = ctx;
    (void)key;
    (void)key_len;
    if (seen[0] == 0)
        seen[0] = ((const s_rec_t *)rec)->n;
    else
        seen[1] = ((const s_rec_t *)rec)->n;
    return 0;
}

static size_t s_long_key(uint64_t n, uint8_t key[TABLE_KEY_MAX]);

static int
s_visit_long(const void *key, size_t key_len, const void *rec, void *ctx)
{
    s_walk_t *w = ctx;
    uint8_t want[TABLE_KEY_MAX];
    size_t n = s_long_key(w->next, want);
    if (rec == NULL || ((const s_rec_t *)rec)->n != w->next || key_len != n ||
        memcmp(key, want, n) != 0)
        w->in_order = false;
    w->next++;
    return 0;
}

static void
records_stay_put_and_are_found_across_many_chunks(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    char key[40];
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        bool created = false;
        s_rec_t *r = table_put(t, key, s_key(i, key), &created);
        REQUIRE(r != NULL);
        CHECK(created);
        CHECK(r->n == 0 && r->tag[0] == '\0'); /* a new record is zero-filled */
        r->n = i;
        snprintf(r->tag, sizeof(r->tag), "t%llu", (unsigned long long)i);
        s_addr[i] = r;
    }
    CHECK_EQ_U64(table_count(t), S_RECORDS);
    CHECK_EQ_U64(table_slots(t), S_RECORDS);
    CHECK_EQ_U64(table_dirty_count(t), S_RECORDS);
    size_t bad = 0;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_rec_t *r = table_get(t, key, s_key(i, key));
        char tag[20];
        snprintf(tag, sizeof(tag), "t%llu", (unsigned long long)i);
        bad += r != s_addr[i] || r->n != i || strcmp(r->tag, tag) != 0;
    }
    CHECK_EQ_U64(bad, 0);
    CHECK(table_get(t, "key-none", 8) == NULL);
    /* A prefetch is a hint: it changes nothing, for keys present or not. */
    table_prefetch(t, "key-none", 8);
    table_prefetch(t, key, s_key(7, key));
    CHECK_EQ_U64(table_count(t), S_RECORDS);
    CHECK_EQ_U64(table_slots(t), S_RECORDS);
    CHECK_EQ_U64(table_dirty_count(t), S_RECORDS);
    s_walk_t w = { 0, true };
    CHECK(table_foreach(t, s_visit, &w) == 0);
    CHECK(w.in_order && w.next == S_RECORDS);
    w = (s_walk_t){ 0, true };
    CHECK(table_foreach_dirty(t, s_visit, &w) == 0);
    CHECK(w.in_order && w.next == S_RECORDS);

    /* After a checkpoint: a put of an existing record changes nothing but its dirty mark. */
    table_dirty_clear(t);
    CHECK_EQ_U64(table_dirty_count(t), 0);
    bool created = true;
    s_rec_t *r = table_put(t, key, s_key(S_RECORDS - 1, key), &created);
    CHECK(r == s_addr[S_RECORDS - 1] && !created && r->n == S_RECORDS - 1);
    CHECK_EQ_U64(table_dirty_count(t), 1);

    /* Touching a record through its pointer marks it dirty once, like a put of its key. */
    table_dirty_clear(t);
    CHECK(table_touch(t, s_addr[S_RECORDS / 2]) == s_addr[S_RECORDS / 2]);
    CHECK(table_touch(t, s_addr[S_RECORDS / 2]) == s_addr[S_RECORDS / 2]);
    CHECK(table_touch(t, s_addr[S_RECORDS - 1]) == s_addr[S_RECORDS - 1]);
    CHECK_EQ_U64(table_dirty_count(t), 2);
    uint64_t seen[2] = { 0, 0 };
    CHECK(table_foreach_dirty(t, s_collect, seen) == 0);
    CHECK(seen[0] == S_RECORDS / 2 && seen[1] == S_RECORDS - 1);
    table_dirty_clear(t);
    CHECK(table_put(t, key, s_key(S_RECORDS - 1, key), NULL) == s_addr[S_RECORDS - 1]);

    /* Deleting every third record, in every chunk. */
    for (uint64_t i = 0; i < S_RECORDS; i += 3)
        table_del(t, key, s_key(i, key));
    CHECK_EQ_U64(table_count(t), S_RECORDS - (S_RECORDS + 2) / 3);
    bad = 0;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        bool known = false;
        s_rec_t *got = table_lookup(t, key, s_key(i, key), &known);
        bad += !known || (i % 3 == 0 ? got != NULL : got != s_addr[i]);
    }
    CHECK_EQ_U64(bad, 0);

    /* Forgetting the clean records keeps only the dirty ones (the deletions and the put). */
    CHECK(table_forget_clean(t) == 0);
    CHECK_EQ_U64(table_slots(t), (S_RECORDS + 2) / 3 + 1);
    CHECK_EQ_U64(table_count(t), 1);
    r = table_get(t, key, s_key(S_RECORDS - 1, key));
    CHECK(r != NULL && r->n == S_RECORDS - 1);
    bool known = true;
    CHECK(table_lookup(t, key, s_key(1, key), &known) == NULL && !known);
    CHECK(table_lookup(t, key, s_key(3, key), &known) == NULL && known);
    table_destroy(&t);
    CHECK(t == NULL);
    table_destroy(&t);
}

static void
reserved_and_filled_tables_hold_the_same_records(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    REQUIRE(table_reserve(t, S_RECORDS) == 0);
    char key[40];
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_rec_t rec = { .n = i };
        bool failed = true;
        s_rec_t *r = table_fill(t, key, s_key(i, key), i % 5 == 0 ? NULL : &rec, &failed);
        REQUIRE(!failed);
        CHECK(i % 5 == 0 ? r == NULL : r != NULL && r->n == i);
    }
    CHECK_EQ_U64(table_slots(t), S_RECORDS);
    CHECK_EQ_U64(table_count(t), S_RECORDS - S_RECORDS / 5);
    CHECK_EQ_U64(table_dirty_count(t), 0); /* filled records are clean */
    size_t bad = 0;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        bool known = false;
        s_rec_t *r = table_lookup(t, key, s_key(i, key), &known);
        bad += !known || (i % 5 == 0 ? r != NULL : r == NULL || r->n != i);
    }
    CHECK_EQ_U64(bad, 0);
    table_destroy(&t);
}

static void
s_be64(uint64_t n, uint8_t key[8])
{
    for (int i = 7; i >= 0; i--, n >>= 8)
        key[i] = (uint8_t)n;
}

static void
numbered_tables_find_numbers_in_runs_and_far_from_them(void)
{
    table_t *t = NULL;
    REQUIRE(table_new_numbered(8, 0, sizeof(s_rec_t), &t) == 0);
    uint8_t key[8];
    for (uint64_t i = 1; i <= S_RECORDS; i++) {
        s_be64(i, key);
        s_rec_t *r = table_put(t, key, 8, NULL);
        REQUIRE(r != NULL);
        r->n = i;
        s_addr[i - 1] = r;
    }
    /* Numbers whose low 32 bits are those of numbers in the table are other keys. */
    s_be64((UINT64_C(1) << 32) + 5, key);
    s_rec_t *far = table_put(t, key, 8, NULL);
    REQUIRE(far != NULL);
    far->n = 42;
    size_t bad = 0;
    for (uint64_t i = 1; i <= S_RECORDS; i++) {
        s_be64(i, key);
        s_rec_t *r = table_get(t, key, 8);
        bad += r != s_addr[i - 1] || r->n != i;
        /* Absent numbers: past the run, and where the index wraps around into it. */
        s_be64(i + ((uint64_t)1 << 21), key);
        bad += table_get(t, key, 8) != NULL;
        s_be64(i * 977 + ((uint64_t)1 << 40), key);
        bad += table_get(t, key, 8) != NULL;
    }
    CHECK_EQ_U64(bad, 0);
    s_be64((UINT64_C(1) << 32) + 5, key);
    CHECK(table_get(t, key, 8) == far && far->n == 42);
    s_be64(5, key);
    s_rec_t *five = table_get(t, key, 8);
    CHECK(five != NULL && five->n == 5);
    /* Keys of another length are hashed like any table's. */
    s_rec_t *odd = table_put(t, "abc", 3, NULL);
    REQUIRE(odd != NULL);
    odd->n = 7;
    CHECK(table_get(t, "abc", 3) == odd);
    CHECK_EQ_U64(table_count(t), S_RECORDS + 2);
    /* Forgetting the clean records keeps a numbered table numbered. */
    table_dirty_clear(t);
    s_be64(77, key);
    CHECK(table_put(t, key, 8, NULL) == s_addr[76]);
    CHECK(table_forget_clean(t) == 0);
    CHECK_EQ_U64(table_slots(t), 1);
    s_rec_t *r = table_get(t, key, 8);
    CHECK(r != NULL && r->n == 77);
    table_destroy(&t);
}

/* A timer's key: a due time, a kind, then the number (at byte 9), then another number. */
static void
s_timer_like_key(uint64_t n, uint8_t key[25])
{
    memset(key, 0, 25);
    s_be64(UINT64_C(1700000000000000) + (n / 1000) * 1000000, key);
    key[8] = (uint8_t)(1 + n % 2);
    s_be64(n, key + 9);
}

static void
numbered_tables_take_the_number_anywhere_in_the_key(void)
{
    table_t *t = NULL;
    CHECK(table_new_numbered(16, 9, sizeof(s_rec_t), &t) == -1 && t == NULL);
    REQUIRE(table_new_numbered(25, 9, sizeof(s_rec_t), &t) == 0);
    uint8_t key[25];
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_timer_like_key(i, key);
        s_rec_t *r = table_put(t, key, sizeof(key), NULL);
        REQUIRE(r != NULL);
        r->n = i;
        s_addr[i] = r;
    }
    size_t bad = 0;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_timer_like_key(i, key);
        bad += table_get(t, key, sizeof(key)) != s_addr[i];
        key[8] ^= 3; /* another kind: another key */
        bad += table_get(t, key, sizeof(key)) != NULL;
    }
    CHECK_EQ_U64(bad, 0);
    /* A key too short to hold the number is hashed whole. */
    s_rec_t *short_key = table_put(t, "abc", 3, NULL);
    CHECK(short_key != NULL && table_get(t, "abc", 3) == short_key);
    table_destroy(&t);
}

/* A key of 8 to TABLE_KEY_MAX bytes made from n (n's bytes first, so keys differ): short ones
 * live in the slot, long ones in the key arena. */
static size_t
s_long_key(uint64_t n, uint8_t key[TABLE_KEY_MAX])
{
    size_t len = 8 + (size_t)(n % (TABLE_KEY_MAX - 7));
    for (size_t i = 0; i < len; i++)
        key[i] = i < 8 ? (uint8_t)(n >> (8 * i)) : (uint8_t)(n * 31 + i);
    return len;
}

static void
keys_of_every_length_are_kept_whole(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(TABLE_KEY_MAX, sizeof(s_rec_t), &t) == 0);
    uint8_t key[TABLE_KEY_MAX];
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_rec_t *r = table_put(t, key, s_long_key(i, key), NULL);
        REQUIRE(r != NULL);
        r->n = i;
        s_addr[i] = r;
    }
    size_t bad = 0;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        size_t len = s_long_key(i, key);
        bad += table_get(t, key, len) != s_addr[i];
        key[len - 1] ^= 0x80; /* the same length, another last byte */
        bad += table_get(t, key, len) != NULL;
    }
    CHECK_EQ_U64(bad, 0);
    /* Visitors see every key whole, in insertion order. */
    s_walk_t w = { 0, true };
    CHECK(table_foreach(t, s_visit_long, &w) == 0);
    CHECK(w.in_order && w.next == S_RECORDS);
    /* Forgetting the clean records copies the long keys of the dirty ones. */
    table_dirty_clear(t);
    for (uint64_t i = 100; i < 400; i++)
        CHECK(table_put(t, key, s_long_key(i, key), NULL) == s_addr[i]);
    CHECK(table_forget_clean(t) == 0);
    CHECK_EQ_U64(table_slots(t), 300);
    w = (s_walk_t){ 100, true };
    CHECK(table_foreach_dirty(t, s_visit_long, &w) == 0);
    CHECK(w.in_order && w.next == 400);
    for (uint64_t i = 100; i < 400; i++) {
        s_rec_t *r = table_get(t, key, s_long_key(i, key));
        bad += r == NULL || r->n != i;
    }
    CHECK_EQ_U64(bad, 0);
    table_destroy(&t);
}

typedef struct s_part_count {
    const table_t *t;
    size_t dirty, in_part;
} s_part_count_t;

static int
s_count_parts(const void *key, size_t key_len, const void *rec, void *ctx)
{
    s_part_count_t *c = ctx;
    (void)key;
    (void)key_len;
    c->dirty++;
    c->in_part += rec != NULL && table_dirty_in_part(c->t, rec);
    return 0;
}

static s_part_count_t
s_parts(const table_t *t)
{
    s_part_count_t c = { t, 0, 0 };
    CHECK(table_foreach_dirty(t, s_count_parts, &c) == 0);
    return c;
}

/* A record touched in part stays so until a whole-record mark; forgetting keeps the marks. */
static void
records_touched_in_part_stay_so_until_touched_whole(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    char key[40];
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_addr[i] = table_put(t, key, s_key(i, key), NULL);
        REQUIRE(s_addr[i] != NULL);
    }
    s_part_count_t c = s_parts(t);
    CHECK(c.dirty == S_RECORDS && c.in_part == 0); /* new records are dirty whole */
    table_dirty_clear(t);
    /* Every third record in part, every fifth whole (some of them both, in either order). */
    for (uint64_t i = 0; i < S_RECORDS; i += 3)
        CHECK(table_touch_part(t, s_addr[i]) == s_addr[i]);
    for (uint64_t i = 0; i < S_RECORDS; i += 5) {
        if (i % 2 == 0)
            CHECK(table_touch(t, s_addr[i]) == s_addr[i]);
        else
            CHECK(table_put(t, key, s_key(i, key), NULL) == s_addr[i]);
    }
    for (uint64_t i = 0; i < S_RECORDS; i += 15)
        CHECK(table_touch_part(t, s_addr[i]) == s_addr[i]); /* stays whole */
    size_t thirds = (S_RECORDS + 2) / 3, fifths = (S_RECORDS + 4) / 5, both = (S_RECORDS + 14) / 15;
    c = s_parts(t);
    CHECK_EQ_U64(c.dirty, thirds + fifths - both);
    CHECK_EQ_U64(c.in_part, thirds - both);
    size_t bad = 0;
    for (uint64_t i = 0; i < S_RECORDS; i += 3)
        bad += table_dirty_in_part(t, s_addr[i]) != (i % 5 != 0);
    CHECK_EQ_U64(bad, 0);
    /* Forgetting the clean ones keeps each dirty record's mark. */
    CHECK(table_forget_clean(t) == 0);
    c = s_parts(t);
    CHECK_EQ_U64(c.dirty, thirds + fifths - both);
    CHECK_EQ_U64(c.in_part, thirds - both);
    /* A clear makes them clean; the next touch in part is in part again. */
    table_dirty_clear(t);
    s_rec_t *r = table_get(t, key, s_key(15, key));
    REQUIRE(r != NULL);
    CHECK(table_touch_part(t, r) == r);
    c = s_parts(t);
    CHECK(c.dirty == 1 && c.in_part == 1);
    table_destroy(&t);
}

/* Checks that records 0..n-1 (those not deleted) are where they were put; returns the misses. */
static size_t
s_misses(const table_t *t, uint64_t n, uint64_t deleted)
{
    char key[40];
    size_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        bool known = false;
        s_rec_t *r = table_lookup(t, key, s_key(i, key), &known);
        bad += !known || (i == deleted ? r != NULL : r != s_addr[i] || r->n != i);
    }
    return bad;
}

static void
the_index_grows_a_little_at_a_time(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    char key[40];
    size_t growths = 0;
    size_t growing_puts = 0; /* puts made while the last growth was under way */
    size_t bad = 0;
    uint64_t deleted = UINT64_MAX;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        bool was_growing = table_index_growing(t);
        s_rec_t *r = table_put(t, key, s_key(i, key), NULL);
        REQUIRE(r != NULL);
        r->n = i;
        s_addr[i] = r;
        if (!table_index_growing(t))
            continue;
        if (!was_growing) {
            growths++;
            growing_puts = 0;
        }
        growing_puts++;
        /* Meanwhile every record is found: the newest, ones put long before (their entries
         * copied or not yet), and absent keys are absent. */
        uint64_t probes[4] = { i, i / 2, i - i / 7, (i * 2654435761u) % (i + 1) };
        for (size_t k = 0; k < 4; k++) {
            if (probes[k] == deleted)
                continue;
            bad += table_get(t, key, s_key(probes[k], key)) != s_addr[probes[k]];
        }
        bad += table_get(t, "key-none", 8) != NULL;
        if (growths == 4 && growing_puts == 10) {
            /* A deletion in the middle of a growth: the key stays known, without a record;
             * putting it again brings back the same slot. */
            deleted = i / 3;
            table_del(t, key, s_key(deleted, key));
            bool known = false;
            bad += table_lookup(t, key, s_key(deleted, key), &known) != NULL || !known;
            CHECK(table_put(t, key, s_key(deleted, key), NULL) == s_addr[deleted]);
            table_del(t, key, s_key(deleted, key));
        }
    }
    CHECK_EQ_U64(bad, 0);
    /* From 1024 entries to 2^19: one growth per doubling, each spread over many puts. */
    CHECK_EQ_U64(growths, 9);
    CHECK(growing_puts > 1000);
    CHECK_EQ_U64(s_misses(t, S_RECORDS, deleted), 0);

    /* Reserving ends a growth under way, and finds every record after. */
    for (uint64_t i = S_RECORDS; !table_index_growing(t); i++) {
        REQUIRE(i < 2 * S_RECORDS);
        REQUIRE(table_put(t, key, s_key(i, key), NULL) != NULL);
    }
    REQUIRE(table_reserve(t, 4 * S_RECORDS) == 0);
    CHECK(!table_index_growing(t));
    CHECK_EQ_U64(s_misses(t, S_RECORDS, deleted), 0);
    table_destroy(&t);

    /* Forgetting the clean records in the middle of a growth keeps the dirty ones. */
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    uint64_t i = 0;
    for (; i < 3000; i++)
        REQUIRE(table_put(t, key, s_key(i, key), NULL) != NULL);
    table_dirty_clear(t);
    for (; !table_index_growing(t); i++) {
        REQUIRE(i < 10000);
        s_rec_t *r = table_put(t, key, s_key(i, key), NULL);
        REQUIRE(r != NULL);
        r->n = i;
    }
    CHECK(table_forget_clean(t) == 0);
    CHECK(!table_index_growing(t));
    CHECK_EQ_U64(table_count(t), i - 3000);
    bad = 0;
    for (uint64_t j = 0; j < i; j++) {
        s_rec_t *r = table_get(t, key, s_key(j, key));
        bad += j < 3000 ? r != NULL : r == NULL || r->n != j;
    }
    CHECK_EQ_U64(bad, 0);
    table_destroy(&t);
}

/* What a table asked for ahead: ranges, and how many puts had been made when each came. */
#define S_ASKS_MAX 4096
typedef struct s_asks {
    uintptr_t addr[S_ASKS_MAX];
    size_t len[S_ASKS_MAX];
    uint64_t at[S_ASKS_MAX];
    size_t count;
    uint64_t puts;
    bool populate;    /* the kernel knows MADV_POPULATE_WRITE */
    size_t unmapped;  /* ranges madvise() refused: not mapped, or not starting at a page */
    size_t unaligned; /* ranges not starting at a page */
} s_asks_t;

static s_asks_t s_asks;

static void
s_ask(void *ctx, void *addr, size_t len)
{
    s_asks_t *a = ctx;
    /* Fault it in, as the daemon's thread does: this fails for memory that is not mapped, and
     * for a range that does not start at a page. */
    if (a->populate && madvise(addr, len, MADV_POPULATE_WRITE) != 0)
        a->unmapped++;
    a->unaligned += (uintptr_t)addr % 4096 != 0;
    if (a->count < S_ASKS_MAX) {
        a->addr[a->count] = (uintptr_t)addr;
        a->len[a->count] = len;
        a->at[a->count] = a->puts;
        a->count++;
    }
}

/* The ask that holds p, or SIZE_MAX. */
static size_t
s_asked(const s_asks_t *a, const void *p)
{
    for (size_t i = 0; i < a->count; i++) {
        if ((uintptr_t)p >= a->addr[i] && (uintptr_t)p < a->addr[i] + a->len[i])
            return i;
    }
    return SIZE_MAX;
}

/* Whether this kernel knows MADV_POPULATE_WRITE (Linux 5.14): asked of a page of ours. */
static bool
s_populate_known(void)
{
    static uint8_t page[4096] __attribute__((aligned(4096)));
    return madvise(page, sizeof(page), MADV_POPULATE_WRITE) == 0;
}

static void
tables_ask_for_their_memory_ahead(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    memset(&s_asks, 0, sizeof(s_asks));
    s_asks.populate = s_populate_known();
    table_set_ahead(t, s_ask, &s_asks);
    char key[40];
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        s_rec_t *r = table_put(t, key, s_key(i, key), NULL);
        REQUIRE(r != NULL);
        r->n = i;
        s_addr[i] = r;
        s_asks.puts++;
    }
    CHECK_EQ_U64(s_asks.unmapped, 0);
    CHECK(s_asks.count > 10 && s_asks.count < S_ASKS_MAX);
    /* Asked ranges never overlap: nothing is asked for twice. */
    size_t overlaps = 0;
    for (size_t i = 0; i < s_asks.count; i++)
        for (size_t j = i + 1; j < s_asks.count; j++)
            overlaps += s_asks.addr[i] < s_asks.addr[j] + s_asks.len[j] &&
                        s_asks.addr[j] < s_asks.addr[i] + s_asks.len[i];
    CHECK_EQ_U64(overlaps, 0);
    /* Past the small first chunks (from malloc, never asked for), every record lies in memory
     * asked for before the put that made it; and the index it grew into was asked for whole. */
    size_t first = SIZE_MAX, late = 0;
    for (uint64_t i = 0; i < S_RECORDS; i++) {
        size_t k = s_asked(&s_asks, s_addr[i]);
        if (k == SIZE_MAX)
            continue;
        if (first == SIZE_MAX)
            first = i;
        late += s_asks.at[k] >= i;
    }
    CHECK(first < 30000);
    size_t outside = 0;
    for (uint64_t i = first; i < S_RECORDS; i++)
        outside += s_asked(&s_asks, s_addr[i]) == SIZE_MAX;
    CHECK_EQ_U64(outside, 0);
    CHECK_EQ_U64(late, 0);
    size_t index_asks = 0;
    for (size_t i = 0; i < s_asks.count; i++)
        index_asks += s_asks.len[i] > (2u << 20); /* slots are asked a huge page at a time */
    CHECK(index_asks >= 1);
    CHECK_EQ_U64(s_misses(t, S_RECORDS, UINT64_MAX), 0);

    /* A table that forgot its clean records keeps asking, from where it is. */
    table_dirty_clear(t);
    for (uint64_t i = 0; i < 20000; i++)
        REQUIRE(table_put(t, key, s_key(i, key), NULL) != NULL);
    CHECK(table_forget_clean(t) == 0);
    size_t before = s_asks.count;
    for (uint64_t i = S_RECORDS; i < S_RECORDS + 60000; i++)
        REQUIRE(table_put(t, key, s_key(i, key), NULL) != NULL);
    CHECK(s_asks.count > before);
    CHECK_EQ_U64(s_asks.unmapped, 0);
    CHECK_EQ_U64(s_asks.unaligned, 0);
    table_destroy(&t);

    /* Asking from a table already in use (as the daemon does after a load): from a page on. */
    REQUIRE(table_new(40, 344, &t) == 0);
    for (uint64_t i = 0; i < 31000; i++)
        REQUIRE(table_put(t, key, s_key(i, key), NULL) != NULL);
    memset(&s_asks, 0, sizeof(s_asks));
    s_asks.populate = s_populate_known();
    table_set_ahead(t, s_ask, &s_asks);
    for (uint64_t i = 31000; i < 32000; i++)
        REQUIRE(table_put(t, key, s_key(i, key), NULL) != NULL);
    CHECK(s_asks.count > 0);
    CHECK_EQ_U64(s_asks.unaligned, 0);
    CHECK_EQ_U64(s_asks.unmapped, 0);
    table_destroy(&t);
}

/* What a freeze handed over: per record number, how often, and the value it had. */
#define S_FROZEN_N 20000
typedef struct s_handed {
    uint32_t times[S_FROZEN_N];
    uint64_t value[S_FROZEN_N]; /* UINT64_MAX: handed as deleted */
    size_t calls;
} s_handed_t;

static s_handed_t s_handed;

static int
s_hand(const void *key, size_t key_len, const void *rec, void *ctx)
{
    s_handed_t *h = ctx;
    char buf[48];
    REQUIRE(key_len < sizeof(buf));
    memcpy(buf, key, key_len);
    buf[key_len] = '\0';
    unsigned long long n = 0;
    REQUIRE(sscanf(buf, "key-%llu-", &n) == 1 && n < S_FROZEN_N);
    h->times[n]++;
    h->value[n] = rec != NULL ? ((const s_rec_t *)rec)->n : UINT64_MAX;
    h->calls++;
    return 0;
}

static void
a_freeze_hands_each_frozen_record_over_once_as_it_was(void)
{
    table_t *t = NULL;
    REQUIRE(table_new(40, sizeof(s_rec_t), &t) == 0);
    char key[40];
    for (uint64_t i = 0; i < S_FROZEN_N; i++) {
        s_rec_t *r = table_put(t, key, s_key(i, key), NULL);
        REQUIRE(r != NULL);
        r->n = i;
    }
    table_dirty_clear(t);
    /* Dirty at the freeze: every third record changed, every 300th deleted. */
    for (uint64_t i = 0; i < S_FROZEN_N; i += 3)
        ((s_rec_t *)table_put(t, key, s_key(i, key), NULL))->n = i + 1000000;
    for (uint64_t i = 0; i < S_FROZEN_N; i += 300)
        CHECK(table_del(t, key, s_key(i, key)) == 0);
    memset(&s_handed, 0, sizeof(s_handed));
    table_freeze_dirty(t, s_hand, &s_handed);
    CHECK_EQ_U64(table_dirty_count(t), 0);

    /* After it: frozen records change (put, touch, delete, a deleted one comes back), and so do
     * records that were clean; the copy goes on 7 at a time in between. */
    size_t left = 1, walks = 0;
    uint64_t i = 0;
    while (left > 0) {
        size_t budget = 7;
        REQUIRE(table_copy_frozen(t, &budget, &left) == 0);
        walks += 7 - budget;
        for (int k = 0; k < 5 && i < S_FROZEN_N; k++, i += 7) {
            s_rec_t *r = table_put(t, key, s_key(i, key), NULL); /* revives a deleted one */
            REQUIRE(r != NULL);
            r->n = i + 2000000;
        }
    }
    uint64_t frozen = 0;
    size_t bad = 0;
    for (uint64_t n = 0; n < S_FROZEN_N; n++) {
        bool was_dirty = n % 3 == 0 || n % 300 == 0;
        uint64_t want = n % 300 == 0 ? UINT64_MAX : n + 1000000;
        frozen += was_dirty;
        bad += s_handed.times[n] != (was_dirty ? 1u : 0u);
        bad += was_dirty && s_handed.value[n] != want;
    }
    CHECK_EQ_U64(bad, 0);
    CHECK_EQ_U64(s_handed.calls, frozen);
    CHECK(walks <= frozen); /* the budget bounds the walk */
    /* The changes after the freeze are dirty as usual, for the next one. */
    size_t after = table_dirty_count(t);
    CHECK(after > 0 && after <= (S_FROZEN_N + 6) / 7);

    /* A freeze dropped hands nothing over, and leaves no frozen mark behind. */
    size_t calls = s_handed.calls;
    table_freeze_dirty(t, s_hand, &s_handed);
    table_frozen_drop(t);
    for (uint64_t n = 0; n < S_FROZEN_N; n += 7)
        REQUIRE(table_put(t, key, s_key(n, key), NULL) != NULL);
    CHECK_EQ_U64(s_handed.calls, calls);
    /* ... and the next freeze is an ordinary one. */
    table_freeze_dirty(t, s_hand, &s_handed);
    size_t budget = SIZE_MAX;
    REQUIRE(table_copy_frozen(t, &budget, &left) == 0);
    CHECK_EQ_U64(left, 0);
    CHECK_EQ_U64(s_handed.calls, calls + (S_FROZEN_N + 6) / 7);
    CHECK(table_forget_clean(t) == 0); /* allowed again once the freeze is over */
    table_destroy(&t);
}

int
main(int argc, char **argv)
{
    static const check_case_t cases[] = {
        CHECK_CASE(records_stay_put_and_are_found_across_many_chunks),
        CHECK_CASE(reserved_and_filled_tables_hold_the_same_records),
        CHECK_CASE(numbered_tables_find_numbers_in_runs_and_far_from_them),
        CHECK_CASE(numbered_tables_take_the_number_anywhere_in_the_key),
        CHECK_CASE(keys_of_every_length_are_kept_whole),
        CHECK_CASE(records_touched_in_part_stay_so_until_touched_whole),
        CHECK_CASE(the_index_grows_a_little_at_a_time),
        CHECK_CASE(tables_ask_for_their_memory_ahead),
        CHECK_CASE(a_freeze_hands_each_frozen_record_over_once_as_it_was),
    };
    return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
