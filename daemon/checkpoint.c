/*
 * checkpoint: write the ledger's dirty records as "state as of N", load them back and replay
 * the journal's tail (see checkpoint.h).
 *
 * The table names are not hard-coded here: a checkpoint writes whatever tables
 * ledger_dirty_foreach() names, as "state.<table>" databases, and a load finds them again by
 * listing LMDB's main database (which holds the names of the named databases) from the prefix
 * "state.". A new ledger table therefore needs no change here, only a LEDGER_STATE_VERSION bump.
 */
#include "checkpoint.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "codec.h"
#include "log.h"
#include "mapbuf.h"
#include "radix.h"

#define S_KEY_STATE   "state"
#define S_RECORD_LEN  16
#define S_DB_NAME_MAX 64
#define S_PREFIX_LEN  (sizeof(CHECKPOINT_STATE_PREFIX) - 1)

static double
s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

const char *
checkpoint_strerror(int rc)
{
    switch (rc) {
    case CHECKPOINT_EREPLAY:
        return "a journal event does not fit the state this build makes of it";
    case CHECKPOINT_ETABLES:
        return "the ledger has more tables than a checkpoint can hold";
    case CHECKPOINT_EBUSY:
        return "the last checkpoint is still being written";
    default:
        break;
    }
    if (rc <= -39000 && rc > -40000)
        return "unknown checkpoint error";
    if (rc <= -33000 && rc > -34000)
        return ledger_strerror(rc);
    if (rc <= -32000 && rc > -33000)
        return codec_strerror(rc);
    return journal_strerror(rc);
}

/* ---- Listing the state.* databases --------------------------------------------------------- */

typedef struct s_names {
    char name[CHECKPOINT_TABLES_MAX][S_DB_NAME_MAX];
    size_t count;
} s_names_t;

/* Lists the names of the state.* databases (from LMDB's main database). */
static int
s_list_state_dbs(MDB_txn *txn, s_names_t *out)
{
    MDB_dbi main_dbi;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    out->count = 0;
    int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, main_dbi, &cur);
    if (rc != 0)
        return rc;
    k.mv_size = S_PREFIX_LEN;
    k.mv_data = (void *)(uintptr_t)CHECKPOINT_STATE_PREFIX;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size < S_PREFIX_LEN || memcmp(k.mv_data, CHECKPOINT_STATE_PREFIX, S_PREFIX_LEN))
            break;
        if (k.mv_size >= S_DB_NAME_MAX || out->count == CHECKPOINT_TABLES_MAX) {
            rc = CHECKPOINT_ETABLES;
            break;
        }
        memcpy(out->name[out->count], k.mv_data, k.mv_size);
        out->name[out->count][k.mv_size] = '\0';
        out->count++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- Records on disk: zero runs packed --------------------------------------------------- */

/*
 * The ledger's records are fixed-size structs whose strings are zero-padded to their longest
 * and whose numbers are mostly small: a card is 344 bytes, most of them zero. On disk each
 * record is packed as a series of tokens: a byte c < 128 followed by c + 1 bytes as they are,
 * or a byte c >= 128 standing for c - 127 zero bytes. The benchmark's 1M cards then fill
 * 28,600 leaf pages of state.cards (about 117 bytes a card with LMDB's own overhead, value
 * included: state version 4), so a checkpoint rewrites and a start reads about a third of the
 * pages the bare structs would take.
 */
#define S_PACK_LITERAL_MAX 128
#define S_PACK_ZEROS_MAX   128
#define S_UNPACKED_MAX     65536 /* larger than any ledger record */

/* The most a record of len bytes packs into. */
static size_t
s_pack_bound(size_t len)
{
    return len + len / S_PACK_LITERAL_MAX + 1;
}

/* The zero bytes of v: bit 8k + 7 is set for byte k if it is zero, exactly so for the lowest
 * zero byte (a byte above a zero one may show as zero too: only the lowest is used). */
static inline uint64_t
s_zero_bytes(uint64_t v)
{
    return (v - UINT64_C(0x0101010101010101)) & ~v & UINT64_C(0x8080808080808080);
}

/* Packs a record. The ends of runs are found 8 bytes at a time (the bytes read as a
 * little-endian number, so byte k is bits 8k to 8k + 7 on any host, and the lowest set bit
 * names the first byte that ends the run); the tokens are the same as a byte-by-byte scan
 * makes (tests/test-checkpoint.c checks). */
static size_t
s_pack(const uint8_t *rec, size_t len, uint8_t *out)
{
    _Static_assert(S_PACK_LITERAL_MAX == S_PACK_ZEROS_MAX, "one limit for both kinds of run");
    size_t i = 0, o = 0;
    while (i < len) {
        size_t max = len - i < S_PACK_ZEROS_MAX ? len - i : S_PACK_ZEROS_MAX;
        size_t n = 0;
        if (rec[i] == 0) {
            for (;;) {
                if (n + 8 > max) {
                    while (n < max && rec[i + n] == 0)
                        n++;
                    break;
                }
                uint64_t v = cl_get_le64(rec + i + n);
                if (v != 0) {
                    n += (size_t)__builtin_ctzll(v) / 8;
                    break;
                }
                n += 8;
            }
            out[o++] = (uint8_t)(127 + n);
        } else {
            /* Literal bytes up to a run of two zeros (a lone zero is cheaper kept). */
            for (;;) {
                /* Up to the next zero byte, or max. */
                for (;;) {
                    if (n + 8 > max) {
                        while (n < max && rec[i + n] != 0)
                            n++;
                        break;
                    }
                    uint64_t z = s_zero_bytes(cl_get_le64(rec + i + n));
                    if (z != 0) {
                        n += (size_t)__builtin_ctzll(z) / 8;
                        break;
                    }
                    n += 8;
                }
                if (n == max || i + n + 1 == len || rec[i + n + 1] == 0)
                    break;
                n++; /* a lone zero */
            }
            out[o++] = (uint8_t)(n - 1);
            memcpy(out + o, rec + i, n);
            o += n;
        }
        i += n;
    }
    return o;
}

/* Unpacks into rec (cap bytes); returns the record's length, or 0 when the bytes are not a
 * packed record of at most cap bytes. */
static size_t
s_unpack(const uint8_t *in, size_t in_len, uint8_t *rec, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < in_len) {
        uint8_t c = in[i++];
        size_t n = c < 128 ? (size_t)c + 1 : (size_t)c - 127;
        if (o + n > cap || (c < 128 && i + n > in_len))
            return 0;
        if (c < 128) {
            memcpy(rec + o, in + i, n);
            i += n;
        } else {
            memset(rec + o, 0, n);
        }
        o += n;
    }
    return o;
}

/* ---- Writing ------------------------------------------------------------------------------- */

/*
 * A batch: records copied out of the ledger, to be written while the ledger goes on changing.
 * Each record is: table name length (u8), the name, key length (u16 LE), the key, record length
 * (u32 LE; S_DELETED for a deleted record) and the record. Later records of the same key win.
 */
#define S_DELETED UINT32_MAX

typedef struct s_batch {
    mapbuf_t mem;            /* the records, in mem.base (projections/mapbuf.h) */
    size_t len;              /* bytes of records */
    uint64_t seq;            /* the ledger's last_seq when the latest records were copied */
    struct s_order *order;   /* s_batch_sort(): the records in (table, key, copy) order */
    size_t count;            /* records in order */
    struct s_order *grouped; /* room for as many: s_sort_by_table()'s second copy */
    size_t order_cap;
} s_batch_t;

/*
 * Room for n more bytes, with the memory MAPBUF_AHEAD past them asked for when the owner gave an
 * ahead function (checkpointer_reserve()). The batch grows in place (mapbuf.h); it grew by
 * aligned_alloc() and memcpy() before: a batch of a batch issue grew to 128 and 256 MiB, and the
 * loop copied and first-touched each old size, up to 350 ms.
 */
static int
s_batch_room(s_batch_t *b, size_t n)
{
    if (n > SIZE_MAX / 4 - b->len)
        return LEDGER_ENOMEM;
    size_t need = b->len + n;
    /* Room for the window too if possible; room enough now is what must be had. */
    size_t want = need + (b->mem.ahead != NULL ? MAPBUF_AHEAD : 0);
    if (mapbuf_reserve(&b->mem, want) != 0 && need > b->mem.cap)
        return LEDGER_ENOMEM;
    mapbuf_ask(&b->mem, need);
    return 0;
}

static int
s_batch_add(const char *table, const void *key, size_t key_len, const void *rec, size_t rec_len,
            void *ctx)
{
    s_batch_t *b = ctx;
    size_t name_len = strlen(table);
    if (name_len > UINT8_MAX || key_len > UINT16_MAX || rec_len >= S_DELETED)
        return LEDGER_EINVAL;
    int rc = s_batch_room(b, 1 + name_len + 2 + key_len + 4 + (rec != NULL ? rec_len : 0));
    if (rc != 0)
        return rc;
    uint8_t *p = b->mem.base + b->len;
    *p++ = (uint8_t)name_len;
    memcpy(p, table, name_len);
    p += name_len;
    cl_put_le16(p, (uint16_t)key_len);
    memcpy(p + 2, key, key_len);
    p += 2 + key_len;
    cl_put_le32(p, rec != NULL ? (uint32_t)rec_len : S_DELETED);
    p += 4;
    if (rec != NULL) {
        memcpy(p, rec, rec_len);
        p += rec_len;
    }
    b->len = (size_t)(p - b->mem.base);
    return 0;
}

/* A record of the batch at offset off: its fields, and the offset of the next one. */
typedef struct s_entry {
    const uint8_t *table; /* not NUL-terminated */
    size_t table_len;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *rec; /* NULL: deleted */
    size_t rec_len;
    size_t next;
} s_entry_t;

static void
s_batch_entry(const s_batch_t *b, size_t off, s_entry_t *e)
{
    const uint8_t *p = b->mem.base + off;
    e->table_len = *p++;
    e->table = p;
    p += e->table_len;
    e->key_len = cl_get_le16(p);
    e->key = p + 2;
    p += 2 + e->key_len;
    uint32_t rec_len = cl_get_le32(p);
    p += 4;
    e->rec = rec_len == S_DELETED ? NULL : p;
    e->rec_len = rec_len == S_DELETED ? 0 : rec_len;
    e->next = (size_t)(p + e->rec_len - b->mem.base);
}

static int
s_bytes_cmp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    return c != 0 ? c : (a_len > b_len) - (a_len < b_len);
}

/* A record in the sort: its table's number (in order of first appearance), 8 bytes of its key
 * as a big-endian number (the first 8; in a run s_sort_run() sorts, the 8 after the bytes all
 * the run's keys share), and its offset. Most comparisons end at the numbers. */
struct s_order {
    uint32_t table;
    uint64_t prefix;
    size_t off;
};

static int
s_order_cmp(const void *x, const void *y, void *ctx)
{
    const struct s_order *a = x, *b = y;
    if (a->table != b->table)
        return a->table < b->table ? -1 : 1;
    if (a->prefix != b->prefix)
        return a->prefix < b->prefix ? -1 : 1;
    s_entry_t ea, eb;
    s_batch_entry(ctx, a->off, &ea);
    s_batch_entry(ctx, b->off, &eb);
    int c = s_bytes_cmp(ea.key, ea.key_len, eb.key, eb.key_len);
    return c != 0 ? c : (a->off > b->off) - (a->off < b->off); /* copy order: the later wins */
}

/* How many leading bytes the keys of a run share (radix_shared()). */
static size_t
s_common_prefix(const s_batch_t *b, const struct s_order *run, size_t n)
{
    s_entry_t first;
    s_batch_entry(b, run[0].off, &first);
    size_t common = first.key_len;
    for (size_t i = 1; i < n && common > 0; i++) {
        s_entry_t e;
        s_batch_entry(b, run[i].off, &e);
        common = radix_shared(first.key, e.key, e.key_len, common);
    }
    return common;
}

/*
 * Sorts a table's run of n records by key (then copy order): a radix sort, least significant
 * byte first and so stable, on the 8 key bytes from where the run's keys start to differ (row
 * keys share their merchant and program), then each group whose 8 bytes are equal by the whole
 * key. tmp has room for n. qsort_r() on the whole run took about 2,100 instructions per card of
 * a batch issue, whose codes and row keys come in random order.
 */
static void
s_sort_run(const s_batch_t *b, struct s_order *run, struct s_order *tmp, size_t n)
{
    size_t common = s_common_prefix(b, run, n);
    for (size_t i = 0; i < n; i++) {
        s_entry_t e;
        s_batch_entry(b, run[i].off, &e);
        run[i].prefix = radix_head(e.key, e.key_len, common);
    }
    struct s_order *sorted =
        radix_sort_u64(run, tmp, n, sizeof(*run), offsetof(struct s_order, prefix));
    if (sorted != run)
        memcpy(run, sorted, n * sizeof(*run));
    /* s_order_cmp() takes the prefixes as they are now: equal within a group. */
    radix_sort_ties(run, n, sizeof(*run), offsetof(struct s_order, prefix), s_order_cmp,
                    (void *)(uintptr_t)b);
}

/*
 * The second half of s_batch_sort(): groups the records by table (a counting sort, which keeps
 * their copy order), then sorts each table's run by key, unless it is in key order already, as
 * the cards and card values of a batch issue or the redemptions of any checkpoint are.
 */
static int
s_sort_by_table(s_batch_t *b, const size_t *per_table, uint32_t tables)
{
    size_t start[CHECKPOINT_TABLES_MAX + 2];
    start[0] = 0;
    for (uint32_t t = 0; t < tables; t++)
        start[t + 1] = start[t] + per_table[t];
    if (tables > 1) {
        size_t at[CHECKPOINT_TABLES_MAX + 1];
        memcpy(at, start, tables * sizeof(at[0]));
        for (size_t i = 0; i < b->count; i++)
            b->grouped[at[b->order[i].table]++] = b->order[i];
        struct s_order *swap = b->order;
        b->order = b->grouped;
        b->grouped = swap;
    }
    for (uint32_t t = 0; t < tables; t++) {
        struct s_order *run = b->order + start[t];
        size_t n = per_table[t];
        size_t i = 1;
        while (i < n && s_order_cmp(&run[i - 1], &run[i], b) < 0)
            i++;
        if (i < n)
            s_sort_run(b, run, b->grouped + start[t], n);
    }
    return 0;
}

/*
 * Orders the records by table and key: LMDB then meets each page of a table once, in order,
 * instead of jumping across the tree record by record (cards are changed in random order).
 */
static int
s_batch_sort(s_batch_t *b)
{
    size_t n = 0;
    for (size_t off = 0; off < b->len; n++) {
        s_entry_t e;
        s_batch_entry(b, off, &e);
        off = e.next;
    }
    if (n > b->order_cap) {
        struct s_order *order = realloc(b->order, n * sizeof(*order));
        if (order == NULL)
            return LEDGER_ENOMEM;
        b->order = order;
        /* Both arrays hold at least order_cap entries; the cap grows once both have grown. */
        struct s_order *grouped = realloc(b->grouped, n * sizeof(*grouped));
        if (grouped == NULL)
            return LEDGER_ENOMEM;
        b->grouped = grouped;
        b->order_cap = n;
    }
    /* The tables met so far; records come table by table, so the last one usually matches. */
    s_entry_t seen[CHECKPOINT_TABLES_MAX + 1];
    size_t per_table[CHECKPOINT_TABLES_MAX + 1] = { 0 };
    uint32_t tables = 0, last = 0;
    b->count = 0;
    for (size_t off = 0; off < b->len;) {
        s_entry_t e;
        s_batch_entry(b, off, &e);
        if (tables == 0 ||
            s_bytes_cmp(e.table, e.table_len, seen[last].table, seen[last].table_len) != 0) {
            for (last = 0; last < tables; last++) {
                if (s_bytes_cmp(e.table, e.table_len, seen[last].table, seen[last].table_len) == 0)
                    break;
            }
            if (last == tables) {
                if (tables == CHECKPOINT_TABLES_MAX + 1)
                    return CHECKPOINT_ETABLES;
                seen[tables++] = e;
            }
        }
        uint8_t head[8] = { 0 };
        memcpy(head, e.key, e.key_len < 8 ? e.key_len : 8);
        b->order[b->count++] = (struct s_order){ last, cl_get_be64(head), off };
        per_table[last]++;
        off = e.next;
    }
    return s_sort_by_table(b, per_table, tables);
}

/* Calls fn for every record of a sorted batch, in order. */
static int
s_batch_foreach(const s_batch_t *b, ledger_record_fn fn, void *ctx)
{
    char table[UINT8_MAX + 1];
    for (size_t i = 0; i < b->count; i++) {
        s_entry_t e;
        s_batch_entry(b, b->order[i].off, &e);
        memcpy(table, e.table, e.table_len);
        table[e.table_len] = '\0';
        int rc = fn(table, e.key, e.key_len, e.rec, e.rec_len, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* LMDB's longest key (its default build) */
#define S_TAIL_KEY_MAX 511

typedef struct s_write {
    uint8_t *packed; /* room for a packed record */
    size_t packed_cap;
    ledger_t *l;            /* records from the ledger (a synchronous write), or */
    const s_batch_t *batch; /* records from a batch (the background writer) */
    uint64_t seq;           /* the sequence the checkpoint is as of */
    bool full;
    size_t records;
    MDB_txn *txn;
    /* The databases opened in this run of the fill (handles of an aborted run are void). */
    char names[CHECKPOINT_TABLES_MAX][S_DB_NAME_MAX];
    MDB_dbi dbis[CHECKPOINT_TABLES_MAX];
    size_t count;
    size_t last; /* the index s_dbi() found last */
    /* Appends: a sorted batch puts each table's keys in order, so the ones past the table's
     * last key go in with MDB_APPEND, which skips the search down the tree. */
    bool sorted;      /* records come in key order within each table */
    bool tail_known;  /* tail describes tail_dbi */
    bool tail_usable; /* the table was empty, or its last key fit tail[] */
    MDB_dbi tail_dbi;
    uint8_t tail[S_TAIL_KEY_MAX]; /* the table's last key, when tail_len > 0 */
    size_t tail_len;              /* 0: the table is empty */
} s_write_t;

static int
s_dbi(s_write_t *w, const char *table, MDB_dbi *out)
{
    /* Records come table by table: the last table found is the likely one. */
    if (w->count > 0 && strcmp(w->names[w->last] + S_PREFIX_LEN, table) == 0) {
        *out = w->dbis[w->last];
        return 0;
    }
    for (size_t i = 0; i < w->count; i++) {
        if (strcmp(w->names[i] + S_PREFIX_LEN, table) == 0) {
            w->last = i;
            *out = w->dbis[i];
            return 0;
        }
    }
    if (w->count == CHECKPOINT_TABLES_MAX || strlen(table) + S_PREFIX_LEN >= S_DB_NAME_MAX)
        return CHECKPOINT_ETABLES;
    char *name = w->names[w->count];
    memcpy(name, CHECKPOINT_STATE_PREFIX, S_PREFIX_LEN);
    memcpy(name + S_PREFIX_LEN, table, strlen(table) + 1);
    int rc = mdb_dbi_open(w->txn, name, MDB_CREATE, &w->dbis[w->count]);
    if (rc != 0)
        return rc;
    w->last = w->count;
    *out = w->dbis[w->count++];
    return 0;
}

/* Whether key sorts after the last key of the table (read once per table and run). */
static bool
s_past_tail(s_write_t *w, MDB_dbi dbi, const void *key, size_t key_len)
{
    if (!w->tail_known || w->tail_dbi != dbi) {
        MDB_cursor *cur = NULL;
        MDB_val k, v;
        w->tail_known = true;
        w->tail_dbi = dbi;
        w->tail_usable = false;
        w->tail_len = 0;
        if (mdb_cursor_open(w->txn, dbi, &cur) != 0)
            return false;
        int rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        mdb_cursor_close(cur);
        if (rc == 0 && k.mv_size > 0 && k.mv_size <= sizeof(w->tail)) {
            memcpy(w->tail, k.mv_data, k.mv_size);
            w->tail_len = k.mv_size;
            w->tail_usable = true;
        } else if (rc == MDB_NOTFOUND) {
            w->tail_usable = true;
        }
    }
    return w->tail_usable &&
           (w->tail_len == 0 || s_bytes_cmp(key, key_len, w->tail, w->tail_len) > 0);
}

static int
s_write_record(const char *table, const void *key, size_t key_len, const void *rec, size_t rec_len,
               void *ctx)
{
    s_write_t *w = ctx;
    MDB_dbi dbi;
    int rc = s_dbi(w, table, &dbi);
    if (rc != 0)
        return rc;
    MDB_val k = { key_len, (void *)(uintptr_t)key };
    if (rec == NULL) {
        /* A key past the table's last one has nothing to delete: the card_values delete that
         * comes with every new card (projections/ledger.c) costs no search down the tree. */
        if (w->sorted && key_len <= sizeof(w->tail) && s_past_tail(w, dbi, key, key_len))
            return 0;
        rc = mdb_del(w->txn, dbi, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    } else {
        if (s_pack_bound(rec_len) > w->packed_cap) {
            uint8_t *p = realloc(w->packed, s_pack_bound(rec_len));
            if (p == NULL)
                return LEDGER_ENOMEM;
            w->packed = p;
            w->packed_cap = s_pack_bound(rec_len);
        }
        MDB_val v = { s_pack(rec, rec_len, w->packed), w->packed };
        bool append = w->sorted && key_len <= sizeof(w->tail) && s_past_tail(w, dbi, key, key_len);
        rc = mdb_put(w->txn, dbi, &k, &v, append ? MDB_APPEND : 0);
        if (rc == MDB_KEYEXIST && append)
            rc = mdb_put(w->txn, dbi, &k, &v, 0); /* not past the last key after all */
        else if (rc == 0 && append) {
            memcpy(w->tail, key, key_len);
            w->tail_len = key_len;
        }
    }
    if (rc == 0)
        w->records++;
    return rc;
}

static int
s_write_fill(journal_txn_t *jt, void *ctx)
{
    s_write_t *w = ctx;
    MDB_dbi cp_dbi;
    w->txn = journal_txn_mdb(jt);
    w->records = 0;
    w->count = 0;
    w->sorted = w->batch != NULL;
    w->tail_known = false;

    int rc = mdb_dbi_open(w->txn, CHECKPOINT_DB, MDB_CREATE, &cp_dbi);
    if (rc != 0)
        return rc;
    if (w->batch != NULL) {
        rc = s_batch_foreach(w->batch, s_write_record, w);
    } else if (w->full) {
        /* Empty every state table first: records of another state version must not linger,
         * and neither may a card's state.card_values, which would override the value of the
         * card written whole below (ledger_foreach_record() writes no card_values). */
        s_names_t names;
        rc = s_list_state_dbs(w->txn, &names);
        for (size_t i = 0; rc == 0 && i < names.count; i++) {
            MDB_dbi dbi;
            rc = s_dbi(w, names.name[i] + S_PREFIX_LEN, &dbi);
            if (rc == 0)
                rc = mdb_drop(w->txn, dbi, 0);
        }
        if (rc == 0)
            rc = ledger_foreach_record(w->l, s_write_record, w);
    } else {
        rc = ledger_dirty_foreach(w->l, s_write_record, w);
    }
    if (rc != 0)
        return rc;

    uint8_t rec[S_RECORD_LEN];
    cl_put_le32(rec, CHECKPOINT_FORMAT);
    cl_put_le32(rec + 4, LEDGER_STATE_VERSION);
    cl_put_le64(rec + 8, w->seq);
    MDB_val k = { sizeof(S_KEY_STATE) - 1, (void *)(uintptr_t)S_KEY_STATE };
    MDB_val v = { sizeof(rec), rec };
    return mdb_put(w->txn, cp_dbi, &k, &v, 0);
}

int
checkpoint_write(journal_t *j, ledger_t *l, bool full, size_t *out_records)
{
    s_write_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return LEDGER_ENOMEM;
    w->l = l;
    w->seq = ledger_meta(l)->last_seq;
    w->full = full;
    int rc = journal_write(j, s_write_fill, w, NULL);
    if (rc == 0) {
        ledger_dirty_clear(l);
        if (out_records != NULL)
            *out_records = w->records;
    }
    if (w != NULL)
        free(w->packed);
    free(w);
    return rc;
}

/* ---- The background writer --------------------------------------------------------------- */

struct checkpointer {
    journal_t *state;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool busy;     /* a batch is handed over and not yet written */
    bool finished; /* a result waits for checkpointer_collect() */
    checkpoint_result_t result;
    s_batch_t batch; /* the thread's while busy; kept after a failure, to be written again */
};

static void *
s_writer_main(void *arg)
{
    checkpointer_t *c = arg;
    (void)pthread_setname_np(pthread_self(), "cl-checkpoint");
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && !c->busy)
            pthread_cond_wait(&c->cv, &c->mu);
        if (!c->busy)
            break; /* stopping with nothing in hand */
        pthread_mutex_unlock(&c->mu);

        /* The batch is the thread's alone until busy is cleared. */
        double t0 = s_mono_ms();
        s_write_t *w = calloc(1, sizeof(*w));
        int rc = w != NULL ? s_batch_sort(&c->batch) : LEDGER_ENOMEM;
        size_t records = 0;
        if (rc == 0) {
            w->batch = &c->batch;
            w->seq = c->batch.seq;
            rc = journal_write(c->state, s_write_fill, w, NULL);
            records = w->records;
        }
        if (w != NULL)
            free(w->packed);
        free(w);

        pthread_mutex_lock(&c->mu);
        c->result = (checkpoint_result_t){
            .rc = rc, .seq = c->batch.seq, .records = records, .took_ms = s_mono_ms() - t0
        };
        if (rc == 0)
            c->batch.len = 0; /* written: a failed batch stays, to go first next time */
        c->busy = false;
        c->finished = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int
checkpointer_new(journal_t *state, checkpointer_t **out)
{
    checkpointer_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return LEDGER_ENOMEM;
    c->state = state;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, s_writer_main, c) != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return LEDGER_ENOMEM;
    }
    *out = c;
    return 0;
}

int
checkpointer_start(checkpointer_t *c, ledger_t *l)
{
    pthread_mutex_lock(&c->mu);
    if (c->busy) {
        pthread_mutex_unlock(&c->mu);
        return CHECKPOINT_EBUSY;
    }
    /* Copied after what a failed write left, so the newer records win. */
    size_t kept = c->batch.len;
    int rc = ledger_dirty_foreach(l, s_batch_add, &c->batch);
    if (rc != 0) {
        c->batch.len = kept;
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    ledger_dirty_clear(l);
    c->batch.seq = ledger_meta(l)->last_seq;
    c->busy = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int
checkpointer_reserve(checkpointer_t *c, size_t bytes,
                     void (*ahead)(void *ctx, void *addr, size_t len), void *ctx)
{
    pthread_mutex_lock(&c->mu);
    /* The function changes even with a batch in hand: only the loop's copy grows the batch. */
    c->batch.mem.ahead = ahead;
    c->batch.mem.ahead_ctx = ctx;
    int rc = CHECKPOINT_EBUSY;
    if (!c->busy) {
        rc = s_batch_room(&c->batch, bytes);
        if (rc == 0) /* the whole reserve, not only the first window: a checkpoint needs it */
            mapbuf_ask(&c->batch.mem, c->batch.mem.cap);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int
checkpointer_begin(checkpointer_t *c, ledger_t *l)
{
    pthread_mutex_lock(&c->mu);
    bool busy = c->busy;
    pthread_mutex_unlock(&c->mu);
    if (busy)
        return CHECKPOINT_EBUSY;
    /* The batch is the loop's until it is handed over. Records go after what a failed write
     * left, so the newer ones win. */
    c->batch.seq = ledger_meta(l)->last_seq;
    return ledger_freeze_dirty(l, s_batch_add, &c->batch);
}

int
checkpointer_copy(checkpointer_t *c, ledger_t *l, size_t max, size_t *out_left)
{
    (void)c; /* the batch was given to the ledger's freeze */
    return ledger_copy_frozen(l, max, out_left);
}

void
checkpointer_hand(checkpointer_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->busy = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

bool
checkpointer_collect(checkpointer_t *c, checkpoint_result_t *out)
{
    pthread_mutex_lock(&c->mu);
    bool finished = c->finished;
    if (finished) {
        *out = c->result;
        c->finished = false;
    }
    pthread_mutex_unlock(&c->mu);
    return finished;
}

void
checkpointer_wait(checkpointer_t *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->busy)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

void
checkpointer_discard(checkpointer_t *c)
{
    checkpointer_wait(c);
    pthread_mutex_lock(&c->mu);
    c->batch.len = 0;
    pthread_mutex_unlock(&c->mu);
}

void
checkpointer_destroy(checkpointer_t **cp)
{
    if (cp == NULL || *cp == NULL)
        return;
    checkpointer_t *c = *cp;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    mapbuf_free(&c->batch.mem);
    free(c->batch.order);
    free(c->batch.grouped);
    free(c);
    *cp = NULL;
}

/* ---- The source of a cache ---------------------------------------------------------------- */

struct checkpoint_source {
    journal_t *j;
    MDB_txn *txn; /* NULL between checkpoint_source_release() and the next read */
    char names[CHECKPOINT_TABLES_MAX][S_DB_NAME_MAX];
    MDB_dbi dbis[CHECKPOINT_TABLES_MAX];
    size_t count;
};

/* Opens (creating when missing) the state.* database of every lazy table. */
static int
s_source_fill(journal_txn_t *jt, void *ctx)
{
    checkpoint_source_t *src = ctx;
    MDB_txn *txn = journal_txn_mdb(jt);
    src->count = 0;
    for (size_t i = 0; ledger_table_name(i) != NULL; i++) {
        const char *table = ledger_table_name(i);
        if (!ledger_table_is_lazy(table))
            continue;
        if (src->count == CHECKPOINT_TABLES_MAX || strlen(table) + S_PREFIX_LEN >= S_DB_NAME_MAX)
            return CHECKPOINT_ETABLES;
        char *name = src->names[src->count];
        memcpy(name, CHECKPOINT_STATE_PREFIX, S_PREFIX_LEN);
        memcpy(name + S_PREFIX_LEN, table, strlen(table) + 1);
        int rc = mdb_dbi_open(txn, name, MDB_CREATE, &src->dbis[src->count]);
        if (rc != 0)
            return rc;
        src->count++;
    }
    return 0;
}

int
checkpoint_source_new(journal_t *j, checkpoint_source_t **out)
{
    checkpoint_source_t *src = calloc(1, sizeof(*src));
    if (src == NULL)
        return LEDGER_ENOMEM;
    src->j = j;
    int rc = journal_write(j, s_source_fill, src, NULL);
    if (rc != 0) {
        free(src);
        return rc;
    }
    *out = src;
    return 0;
}

void
checkpoint_source_release(checkpoint_source_t *src)
{
    if (src != NULL && src->txn != NULL)
        journal_read_txn_end(src->j, &src->txn);
}

void
checkpoint_source_destroy(checkpoint_source_t **srcp)
{
    if (srcp == NULL || *srcp == NULL)
        return;
    checkpoint_source_release(*srcp);
    free(*srcp);
    *srcp = NULL;
}

/* The read transaction and the database of a table; 0 or a code (logged). */
static int
s_source_open(checkpoint_source_t *src, const char *table, MDB_dbi *out)
{
    size_t i = 0;
    while (i < src->count && strcmp(src->names[i] + S_PREFIX_LEN, table) != 0)
        i++;
    if (i == src->count) {
        log_error("checkpoint: no database for the state table %s", table);
        return CHECKPOINT_ETABLES;
    }
    *out = src->dbis[i];
    int rc = src->txn != NULL ? 0 : journal_read_txn_begin(src->j, &src->txn);
    if (rc != 0)
        log_error("checkpoint: cannot read the state: %s", journal_strerror(rc));
    return rc;
}

static int
s_source_get(void *ctx, const char *table, const void *key, size_t key_len, void *rec,
             size_t rec_len)
{
    checkpoint_source_t *src = ctx;
    MDB_dbi dbi;
    int rc = s_source_open(src, table, &dbi);
    if (rc != 0)
        return -1;
    MDB_val k = { key_len, (void *)(uintptr_t)key };
    MDB_val v;
    rc = mdb_get(src->txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0 || s_unpack(v.mv_data, v.mv_size, rec, rec_len) != rec_len) {
        log_error("checkpoint: a record of state.%s cannot be read: %s", table,
                  rc != 0 ? mdb_strerror(rc) : "it does not unpack to its size");
        return -1;
    }
    return 1;
}

static int
s_source_next(void *ctx, const char *table, const void *after, size_t after_len, void *key_out,
              size_t cap, size_t *key_len)
{
    checkpoint_source_t *src = ctx;
    MDB_dbi dbi;
    MDB_cursor *cur = NULL;
    int rc = s_source_open(src, table, &dbi);
    if (rc == 0)
        rc = mdb_cursor_open(src->txn, dbi, &cur);
    if (rc != 0)
        return -1;
    MDB_val k = { after_len, (void *)(uintptr_t)after };
    MDB_val v;
    rc = after_len == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST)
                        : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after_len != 0 && k.mv_size == after_len &&
        memcmp(k.mv_data, after, after_len) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    int result = 0;
    if (rc == 0 && k.mv_size <= cap) {
        memcpy(key_out, k.mv_data, k.mv_size);
        *key_len = k.mv_size;
        result = 1;
    } else if (rc != MDB_NOTFOUND) {
        log_error("checkpoint: state.%s cannot be read: %s", table,
                  rc != 0 ? mdb_strerror(rc) : "a key is too long");
        result = -1;
    }
    mdb_cursor_close(cur);
    return result;
}

void
checkpoint_source_attach(checkpoint_source_t *src, ledger_t *l)
{
    ledger_source_t ls = { s_source_get, s_source_next, src };
    ledger_set_source(l, &ls);
}

/* ---- Loading ------------------------------------------------------------------------------- */

/* Loads every state.* table of a checkpoint (but the lazy ones when lazy). */
static int
s_load_tables(MDB_txn *txn, ledger_t *l, bool lazy, uint64_t *out_records)
{
    s_names_t names;
    uint64_t records = 0;
    uint8_t *rec = malloc(S_UNPACKED_MAX);
    if (rec == NULL)
        return LEDGER_ENOMEM;
    int rc = s_list_state_dbs(txn, &names);
    for (size_t i = 0; rc == 0 && i < names.count; i++) {
        MDB_dbi dbi;
        MDB_cursor *cur = NULL;
        MDB_val k, v;
        if (lazy && ledger_table_is_lazy(names.name[i] + S_PREFIX_LEN))
            continue;
        rc = mdb_dbi_open(txn, names.name[i], 0, &dbi);
        if (rc == 0)
            rc = mdb_cursor_open(txn, dbi, &cur);
        if (rc != 0)
            break;
        const char *table = names.name[i] + S_PREFIX_LEN;
        /* Sized once from the count LMDB keeps, rather than grown record by record. */
        MDB_stat st;
        if (mdb_stat(txn, dbi, &st) == 0)
            rc = ledger_load_reserve(l, table, st.ms_entries);
        if (rc != 0) {
            mdb_cursor_close(cur);
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (rc == 0) {
            size_t len = s_unpack(v.mv_data, v.mv_size, rec, S_UNPACKED_MAX);
            rc = ledger_load_record(l, table, k.mv_data, k.mv_size, rec, len);
            if (rc != 0) {
                log_warn("checkpoint: a record of %s does not load: %s", names.name[i],
                         ledger_strerror(rc));
                break;
            }
            records++;
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    free(rec);
    if (rc == 0)
        *out_records = records;
    return rc;
}

/*
 * Reads the checkpoint record and, when it is usable, the tables. Returns 0 with *out_loaded
 * telling whether the ledger now holds a checkpoint; a non-zero code means the ledger may hold
 * part of one and must be thrown away.
 */
static int
s_load_checkpoint(journal_t *state, ledger_t *l, uint64_t head_seq, bool lazy,
                  checkpoint_info_t *info, bool *out_loaded)
{
    MDB_txn *txn = NULL;
    MDB_dbi cp_dbi;
    MDB_val k = { sizeof(S_KEY_STATE) - 1, (void *)(uintptr_t)S_KEY_STATE };
    MDB_val v;
    *out_loaded = false;

    int rc = journal_read_txn_begin(state, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_dbi_open(txn, CHECKPOINT_DB, 0, &cp_dbi);
    if (rc == 0)
        rc = mdb_get(txn, cp_dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        journal_read_txn_end(state, &txn);
        return 0; /* no checkpoint yet */
    }
    if (rc != 0) {
        journal_read_txn_end(state, &txn);
        return rc;
    }
    const uint8_t *p = v.mv_data;
    if (v.mv_size != S_RECORD_LEN || cl_get_le32(p) != CHECKPOINT_FORMAT) {
        log_warn("checkpoint: the checkpoint record is not in a format this build reads; "
                 "rebuilding the state from the journal");
        info->full_needed = true;
        journal_read_txn_end(state, &txn);
        return 0;
    }
    uint32_t version = cl_get_le32(p + 4);
    uint64_t seq = cl_get_le64(p + 8);
    if (version != LEDGER_STATE_VERSION) {
        log_info("checkpoint: the stored state is version %u, this build makes version %u; "
                 "rebuilding the state from the journal",
                 version, (unsigned)LEDGER_STATE_VERSION);
        info->full_needed = true;
        journal_read_txn_end(state, &txn);
        return 0;
    }
    if (seq > head_seq) {
        log_warn("checkpoint: the checkpoint is at sequence %llu but the journal ends at %llu; "
                 "rebuilding the state from the journal",
                 (unsigned long long)seq, (unsigned long long)head_seq);
        info->full_needed = true;
        journal_read_txn_end(state, &txn);
        return 0;
    }
    rc = s_load_tables(txn, l, lazy, &info->records);
    journal_read_txn_end(state, &txn);
    if (rc != 0)
        return rc;
    if (ledger_meta(l)->last_seq != seq) {
        log_warn("checkpoint: the state says sequence %llu, the checkpoint record %llu",
                 (unsigned long long)ledger_meta(l)->last_seq, (unsigned long long)seq);
        return CHECKPOINT_EREPLAY;
    }
    info->checkpoint_seq = seq;
    *out_loaded = true;
    return 0;
}

/* Replays the journal from ledger_meta(l)->last_seq + 1 to its end. */
static int
s_replay(journal_t *j, ledger_t *l, uint64_t *out_replayed)
{
    journal_reader_t *r = NULL;
    journal_entry_t e;
    uint64_t n = 0;
    cl_event_t *ev = malloc(sizeof(*ev));
    if (ev == NULL)
        return LEDGER_ENOMEM;
    int rc = journal_reader_open(j, ledger_meta(l)->last_seq + 1, &r);
    while (rc == 0) {
        rc = journal_reader_next(r, &e);
        if (rc != 0)
            break;
        int drc = codec_event_decode_scratch(e.payload, e.payload_len, ev);
        if (drc != 0) {
            log_error("replay: the event at sequence %llu does not decode: %s",
                      (unsigned long long)e.seq, codec_strerror(drc));
            rc = CHECKPOINT_EREPLAY;
            break;
        }
        ev->seq = e.seq;
        ev->at_us = e.timestamp_us;
        int arc = ledger_apply(l, ev);
        if (arc != 0) {
            log_error("replay: the %s event at sequence %llu does not fit the state: %s",
                      cl_event_name(ev->type), (unsigned long long)e.seq, ledger_strerror(arc));
            rc = CHECKPOINT_EREPLAY;
            break;
        }
        n++;
    }
    if (rc == JOURNAL_END)
        rc = 0;
    else if (rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN)
        log_error("replay: the journal is damaged at sequence %llu: %s",
                  (unsigned long long)journal_reader_bad_seq(r), journal_strerror(rc));
    journal_reader_close(&r);
    free(ev);
    *out_replayed = n;
    return rc;
}

int
checkpoint_load(journal_t *j, journal_t *state, ledger_t **lp, bool use_checkpoint,
                checkpoint_source_t *source, checkpoint_info_t *out)
{
    checkpoint_info_t info;
    journal_head_t head;
    memset(&info, 0, sizeof(info));
    assert(lp != NULL && *lp != NULL);
    assert(ledger_meta(*lp)->last_seq == 0);

    double t0 = s_mono_ms();
    int rc = journal_head(j, &head);
    if (rc != 0)
        return rc;
    bool loaded = false;
    if (source != NULL)
        checkpoint_source_release(source); /* it must show this checkpoint, not an older one */
    if (use_checkpoint && state != NULL) {
        rc = s_load_checkpoint(state, *lp, head.seq, source != NULL, &info, &loaded);
        if (rc != 0) {
            log_warn("checkpoint: the checkpoint does not load (%s); rebuilding the state from "
                     "the journal",
                     checkpoint_strerror(rc));
            ledger_destroy(lp);
            rc = ledger_new(lp);
            if (rc != 0)
                return rc;
            info.full_needed = true;
            info.records = 0;
            loaded = false;
        }
    } else {
        info.full_needed = true;
    }
    info.loaded = loaded;
    rc = ledger_rebuild_indexes(*lp);
    if (rc != 0)
        return rc;
    if (loaded && source != NULL) {
        /* The records left in the checkpoint are read one by one as they are asked for, each
         * on another page: have every page mapped before, rather than fault them one at a time. */
        rc = journal_prefault(state);
        if (rc != 0)
            return rc;
        checkpoint_source_attach(source, *lp);
        /* The tail brings in about a card and makes about a redemption per event: sized once
         * rather than grown (and re-hashed) step by step. */
        uint64_t tail = head.seq - info.checkpoint_seq;
        rc = ledger_load_reserve(*lp, "cards", tail);
        if (rc == 0)
            rc = ledger_load_reserve(*lp, "redemptions", tail);
        if (rc != 0)
            return rc;
    }
    double t1 = s_mono_ms();
    rc = s_replay(j, *lp, &info.replayed);
    if (source != NULL)
        checkpoint_source_release(source);
    if (rc != 0)
        return rc;
    double t2 = s_mono_ms();
    /* A read-only opener may see entries appended after it read the head; never fewer. */
    if (ledger_meta(*lp)->last_seq < head.seq)
        return CHECKPOINT_EREPLAY;
    info.head_seq = ledger_meta(*lp)->last_seq;
    info.load_ms = t1 - t0;
    info.replay_ms = t2 - t1;
    *out = info;
    return 0;
}
