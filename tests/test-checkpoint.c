/*
 * daemon/checkpoint.c, from the inside: the batch's sort and the record packer.
 *
 * The daemon's tests show that a checkpoint loads back into the state a full replay gives; a
 * sort that misordered keys would still pass them (a put out of order is only slower), and so
 * would one that let an older copy of a record win, as long as no batch ever held two. These
 * cases check the sort itself on batches built to be hard for it: random keys that share a long
 * prefix (row keys: merchant and program first), keys shorter than the 8 bytes it sorts on,
 * keys that are prefixes of others, several copies of one key, and tables in any order. They
 * also check that a packed record unpacks to itself and packs into the same tokens a plain
 * byte-by-byte scan would make.
 *
 * The file includes checkpoint.c itself, so its static functions are in reach.
 */
#include "checkpoint.c"

#include <stdio.h>

#include "check.h"

/* A small deterministic generator (xorshift64*), so a failure repeats. */
static uint64_t s_rng = 0x9e3779b97f4a7c15u;

static uint64_t
s_rand(void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * UINT64_C(2685821657736338717);
}

/* A record's bytes: the copy number, so the test can tell which copy of a key came last. */
typedef struct s_rec {
    uint32_t copy;
    uint8_t pad[12];
} s_rec_t;

static void
s_add(s_batch_t *b, const char *table, const void *key, size_t key_len, uint32_t copy)
{
    s_rec_t rec = { copy, { 0 } };
    REQUIRE(s_batch_add(table, key, key_len, &rec, sizeof(rec), b) == 0);
}

/* Checks that the sorted batch holds each record once, table by table, in key order, with the
 * copies of one key in the order they were added; returns how many records it walked. */
static size_t
s_check_sorted(const s_batch_t *b)
{
    s_entry_t tables_seen[8];
    size_t tables = 0;
    s_entry_t prev = { 0 };
    uint32_t prev_copy = 0;
    for (size_t i = 0; i < b->count; i++) {
        s_entry_t e;
        s_batch_entry(b, b->order[i].off, &e);
        s_rec_t rec = { UINT32_MAX, { 0 } }; /* a delete: the last copy of its key */
        if (e.rec != NULL)
            memcpy(&rec, e.rec, sizeof(rec));
        bool same_table =
            i > 0 && prev.table_len == e.table_len && memcmp(prev.table, e.table, e.table_len) == 0;
        if (!same_table) {
            /* A table's records come together: a table seen before must not come back. */
            for (size_t t = 0; t < tables; t++)
                CHECK(s_bytes_cmp(tables_seen[t].table, tables_seen[t].table_len, e.table,
                                  e.table_len) != 0);
            REQUIRE(tables < 8);
            tables_seen[tables++] = e;
        } else {
            int c = s_bytes_cmp(prev.key, prev.key_len, e.key, e.key_len);
            CHECK(c <= 0);
            if (c == 0)
                CHECK(prev_copy < rec.copy);
        }
        prev = e;
        prev_copy = rec.copy;
    }
    return b->count;
}

static void
s_batch_drop(s_batch_t *b)
{
    mapbuf_free(&b->mem);
    free(b->order);
    free(b->grouped);
    memset(b, 0, sizeof(*b));
}

static void
the_batch_sorts_random_keys_with_a_shared_prefix_and_keeps_copy_order(void)
{
    s_batch_t b;
    memset(&b, 0, sizeof(b));
    uint32_t copy = 0;
    size_t added = 0;
    /* Row-like keys: a long shared prefix, then a random tail of 0 to 12 bytes (some shorter
     * than the 8 bytes sorted on, some prefixes of others, some with zero bytes). */
    static const char prefix[] = "m1\0gift\0run-nonce-";
    uint8_t keys[4000][sizeof(prefix) + 12];
    size_t lens[4000];
    for (size_t i = 0; i < 4000; i++) {
        memcpy(keys[i], prefix, sizeof(prefix) - 1);
        size_t tail = (size_t)(s_rand() % 13);
        for (size_t k = 0; k < tail; k++)
            keys[i][sizeof(prefix) - 1 + k] = (uint8_t)(s_rand() % 4 == 0 ? 0 : s_rand() % 7 + 'a');
        lens[i] = sizeof(prefix) - 1 + tail;
    }
    /* Random 16-byte codes, and card-like numbers in order; the tables interleave, as a
     * checkpoint's copy of a batch issue does. Every fifth row key comes again later. */
    for (size_t i = 0; i < 4000; i++) {
        s_add(&b, "rows", keys[i], lens[i], ++copy);
        uint8_t code[16];
        for (size_t k = 0; k < sizeof(code); k++)
            code[k] = (uint8_t)(s_rand() % 32 + '0');
        s_add(&b, "codes", code, sizeof(code), ++copy);
        uint8_t id[8];
        cl_put_be64(id, i + 1);
        s_add(&b, "cards", id, sizeof(id), ++copy);
        added += 3;
        if (i % 5 == 4) {
            size_t again = (size_t)(s_rand() % (i + 1));
            s_add(&b, "rows", keys[again], lens[again], ++copy);
            added++;
        }
    }
    /* Deletes (no record) sort as the others do. */
    REQUIRE(s_batch_add("codes", "0000", 4, NULL, 0, &b) == 0);
    REQUIRE(s_batch_add("rows", keys[0], lens[0], NULL, 0, &b) == 0);
    added += 2;
    REQUIRE(s_batch_sort(&b) == 0);
    CHECK_EQ_INT(s_check_sorted(&b), added);
    s_batch_drop(&b);

    /* One table alone: the same key twice in a row, and again much later. */
    memset(&b, 0, sizeof(b));
    copy = 0;
    for (size_t i = 0; i < 4000; i++) {
        s_add(&b, "rows", keys[i], lens[i], ++copy);
        if (i % 3 == 0)
            s_add(&b, "rows", keys[i], lens[i], ++copy);
    }
    for (size_t i = 0; i < 4000; i += 7)
        s_add(&b, "rows", keys[i], lens[i], ++copy);
    REQUIRE(s_batch_sort(&b) == 0);
    CHECK_EQ_INT(s_check_sorted(&b), copy);
    s_batch_drop(&b);
}

static void
a_batch_of_tables_in_order_and_out_of_order_sorts_each(void)
{
    s_batch_t b;
    memset(&b, 0, sizeof(b));
    uint32_t copy = 0;
    for (uint64_t i = 0; i < 20000; i++) {
        uint8_t id[8];
        cl_put_be64(id, i + 1);
        s_add(&b, "cards", id, sizeof(id), ++copy); /* in order: left as it is */
        cl_put_be64(id, s_rand());
        s_add(&b, "redemptions", id, sizeof(id), ++copy); /* 8 random bytes: no group ties */
        uint8_t timer[25] = { 0 };
        cl_put_be64(timer, s_rand() % 16); /* few due times: long runs of equal prefixes */
        cl_put_be64(timer + 9, i);
        s_add(&b, "timers", timer, sizeof(timer), ++copy);
    }
    REQUIRE(s_batch_sort(&b) == 0);
    CHECK_EQ_INT(s_check_sorted(&b), copy);
    s_batch_drop(&b);
}

/* The packer's tokens as a plain byte-by-byte scan makes them. */
static size_t
s_pack_bytewise(const uint8_t *rec, size_t len, uint8_t *out)
{
    size_t i = 0, o = 0;
    while (i < len) {
        size_t n = 0;
        if (rec[i] == 0) {
            while (i + n < len && rec[i + n] == 0 && n < S_PACK_ZEROS_MAX)
                n++;
            out[o++] = (uint8_t)(127 + n);
        } else {
            while (i + n < len && n < S_PACK_LITERAL_MAX &&
                   !(rec[i + n] == 0 && (i + n + 1 == len || rec[i + n + 1] == 0)))
                n++;
            out[o++] = (uint8_t)(n - 1);
            memcpy(out + o, rec + i, n);
            o += n;
        }
        i += n;
    }
    return o;
}

static void
records_pack_into_the_bytewise_tokens_and_unpack_to_themselves(void)
{
    static uint8_t packed[1200], want[1200], back[1100];
    for (int round = 0; round < 20000; round++) {
        size_t len = 1 + (size_t)(s_rand() % 1000);
        /* The record in a block of its own length, so that a read past it is an error under
         * the address sanitizer. */
        uint8_t *rec = malloc(len);
        REQUIRE(rec != NULL);
        /* Runs of zeros and of other bytes, of every length around the token limits and the
         * 8-byte steps, with lone zeros inside literals. */
        size_t i = 0;
        while (i < len) {
            size_t run = 1 + (size_t)(s_rand() % (s_rand() % 2 ? 9 : 300));
            bool zeros = s_rand() % 2;
            for (size_t k = 0; k < run && i < len; k++, i++)
                rec[i] = zeros ? 0 : (uint8_t)(s_rand() % 5 == 0 ? 0 : 1 + s_rand() % 255);
        }
        size_t n = s_pack(rec, len, packed);
        size_t m = s_pack_bytewise(rec, len, want);
        REQUIRE(n <= s_pack_bound(len));
        CHECK_EQ_INT(n, m);
        CHECK(memcmp(packed, want, n) == 0);
        CHECK_EQ_INT(s_unpack(packed, n, back, sizeof(back)), len);
        CHECK(memcmp(back, rec, len) == 0);
        free(rec);
        if (check_case_failures() > 0)
            return;
    }
}

int
main(int argc, char **argv)
{
    static const check_case_t cases[] = {
        CHECK_CASE(the_batch_sorts_random_keys_with_a_shared_prefix_and_keeps_copy_order),
        CHECK_CASE(a_batch_of_tables_in_order_and_out_of_order_sorts_each),
        CHECK_CASE(records_pack_into_the_bytewise_tokens_and_unpack_to_themselves),
    };
    return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
