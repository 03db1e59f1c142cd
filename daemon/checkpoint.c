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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "codec.h"
#include "log.h"

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

/* ---- Writing ------------------------------------------------------------------------------- */

typedef struct s_write {
    ledger_t *l;
    bool full;
    size_t records;
    MDB_txn *txn;
    int err;
    /* The databases opened in this run of the fill (handles of an aborted run are void). */
    char names[CHECKPOINT_TABLES_MAX][S_DB_NAME_MAX];
    MDB_dbi dbis[CHECKPOINT_TABLES_MAX];
    size_t count;
} s_write_t;

static int
s_dbi(s_write_t *w, const char *table, MDB_dbi *out)
{
    for (size_t i = 0; i < w->count; i++) {
        if (strcmp(w->names[i] + S_PREFIX_LEN, table) == 0) {
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
    *out = w->dbis[w->count++];
    return 0;
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
        rc = mdb_del(w->txn, dbi, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    } else {
        MDB_val v = { rec_len, (void *)(uintptr_t)rec };
        rc = mdb_put(w->txn, dbi, &k, &v, 0);
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

    int rc = mdb_dbi_open(w->txn, CHECKPOINT_DB, MDB_CREATE, &cp_dbi);
    if (rc != 0)
        return rc;
    if (w->full) {
        /* Empty every state table first: records of another state version must not linger. */
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
    cl_put_le64(rec + 8, ledger_meta(w->l)->last_seq);
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
    w->full = full;
    int rc = journal_write(j, s_write_fill, w, NULL);
    if (rc == 0) {
        ledger_dirty_clear(l);
        if (out_records != NULL)
            *out_records = w->records;
    }
    free(w);
    return rc;
}

/* ---- The source of a cache ---------------------------------------------------------------- */

struct checkpoint_source {
    journal_t *j;
    MDB_txn *txn; /* NULL between checkpoint_source_release() and the next read */
    char names[CHECKPOINT_TABLES_MAX][S_DB_NAME_MAX];
    MDB_dbi dbis[CHECKPOINT_TABLES_MAX];
    size_t count;
    uint64_t reads;
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

uint64_t
checkpoint_source_reads(const checkpoint_source_t *src)
{
    return src != NULL ? src->reads : 0;
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
    if (rc != 0 || v.mv_size != rec_len) {
        log_error("checkpoint: a record of state.%s cannot be read: %s", table,
                  rc != 0 ? mdb_strerror(rc) : "it has the wrong size");
        return -1;
    }
    memcpy(rec, v.mv_data, rec_len);
    src->reads++;
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

/* ---- Loading ------------------------------------------------------------------------------- */

/* Loads every state.* table of a checkpoint (but the lazy ones when lazy). */
static int
s_load_tables(MDB_txn *txn, ledger_t *l, bool lazy, uint64_t *out_records)
{
    s_names_t names;
    uint64_t records = 0;
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
            rc = ledger_load_record(l, table, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
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
s_load_checkpoint(journal_t *j, ledger_t *l, uint64_t head_seq, bool lazy, checkpoint_info_t *info,
                  bool *out_loaded)
{
    MDB_txn *txn = NULL;
    MDB_dbi cp_dbi;
    MDB_val k = { sizeof(S_KEY_STATE) - 1, (void *)(uintptr_t)S_KEY_STATE };
    MDB_val v;
    *out_loaded = false;

    int rc = journal_read_txn_begin(j, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_dbi_open(txn, CHECKPOINT_DB, 0, &cp_dbi);
    if (rc == 0)
        rc = mdb_get(txn, cp_dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        journal_read_txn_end(j, &txn);
        return 0; /* no checkpoint yet */
    }
    if (rc != 0) {
        journal_read_txn_end(j, &txn);
        return rc;
    }
    const uint8_t *p = v.mv_data;
    if (v.mv_size != S_RECORD_LEN || cl_get_le32(p) != CHECKPOINT_FORMAT) {
        log_warn("checkpoint: the checkpoint record is not in a format this build reads; "
                 "rebuilding the state from the journal");
        info->full_needed = true;
        journal_read_txn_end(j, &txn);
        return 0;
    }
    uint32_t version = cl_get_le32(p + 4);
    uint64_t seq = cl_get_le64(p + 8);
    if (version != LEDGER_STATE_VERSION) {
        log_info("checkpoint: the stored state is version %u, this build makes version %u; "
                 "rebuilding the state from the journal",
                 version, (unsigned)LEDGER_STATE_VERSION);
        info->full_needed = true;
        journal_read_txn_end(j, &txn);
        return 0;
    }
    if (seq > head_seq) {
        log_warn("checkpoint: the checkpoint is at sequence %llu but the journal ends at %llu; "
                 "rebuilding the state from the journal",
                 (unsigned long long)seq, (unsigned long long)head_seq);
        info->full_needed = true;
        journal_read_txn_end(j, &txn);
        return 0;
    }
    rc = s_load_tables(txn, l, lazy, &info->records);
    journal_read_txn_end(j, &txn);
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
        int drc = codec_event_decode(e.payload, e.payload_len, ev);
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
checkpoint_load(journal_t *j, ledger_t **lp, bool use_checkpoint, checkpoint_source_t *source,
                checkpoint_info_t *out)
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
    if (use_checkpoint) {
        rc = s_load_checkpoint(j, *lp, head.seq, source != NULL, &info, &loaded);
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
        rc = journal_prefault(j);
        if (rc != 0)
            return rc;
        ledger_source_t ls = { s_source_get, s_source_next, source };
        ledger_set_source(*lp, &ls);
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
