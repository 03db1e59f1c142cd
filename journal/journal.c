/*
 * journal: the append-only, hash-chained journal over one LMDB environment.
 *
 * This file owns every LMDB call of the journal: opening the environment and checking its
 * format, write transactions with automatic map growth, verifying readers, verification,
 * statistics and hot copies. The bytes of an entry are encoded, decoded and hashed by
 * journal-format.c; nothing here interprets a payload.
 *
 * Map growth. LMDB maps the data file at a fixed size, and a write that needs more pages gets
 * MDB_MAP_FULL, which spoils its transaction. journal_write() therefore runs the caller's fill
 * callback inside a transaction, and on MDB_MAP_FULL aborts, doubles the map and runs the
 * callback again. mdb_env_set_mapsize() remaps the file and must not run while any
 * transaction of this process is open, so every transaction the journal begins holds
 * map_lock shared, and resizing takes it exclusively. Readers never keep a transaction open
 * between calls (they copy a bounded chunk of entries out and end the transaction), so a
 * resize waits at most for one chunk. Other processes that read the journal while this one
 * grows it get MDB_MAP_RESIZED when they begin a transaction; s_txn_begin() adopts the new
 * size and retries.
 *
 * The head. A writer keeps the last committed entry (sequence, timestamp, hash) in memory and
 * advances it only after a successful, durable commit. Every write transaction first reads the
 * last key on disk: an always-on check aborts the process if the durable sequence went
 * backwards, because appending on a stale head would fork the chain.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "journal-format.h"

/* Always-on check for invariants whose violation would corrupt durable state; unlike assert()
 * it stays in NDEBUG builds. */
#define JOURNAL_CHECK(cond)                            \
    do {                                               \
        if (!(cond)) {                                 \
            s_check_failed(__FILE__, __LINE__, #cond); \
        }                                              \
    } while (0)

/* How often a transaction begin may meet MDB_MAP_RESIZED in a row before giving up; another
 * process would have to grow the map this often between two of our attempts. */
#define S_RESIZE_RETRIES_MAX 16
/* Meta keys (ASCII, no terminating NUL on disk). */
#define S_META_FORMAT     "format"
#define S_META_CREATED_US "created_us"
#define S_META_JOURNAL_ID "journal_id"
/* A visitor's way of saying "no room: stop before this entry, it was not consumed". */
#define S_VISIT_STOP 2
/* Journals one thread may have transactions open on at the same time. */
#define S_HELD_JOURNALS_MAX 8

struct journal {
    MDB_env *env;               /* the environment, shared with the caller's databases */
    MDB_dbi dbi_meta;           /* journal.meta */
    MDB_dbi dbi_entries;        /* journal.entries */
    bool read_only;             /* opened with MDB_RDONLY */
    size_t map_size_max_bytes;  /* writer: growth ceiling */
    pthread_mutex_t write_lock; /* serializes journal_write() */
    pthread_mutex_t head_lock;  /* guards head against journal_head() readers */
    pthread_rwlock_t map_lock;  /* shared by every txn, exclusive for a remap */
    journal_head_t head;        /* writer: last durably committed entry */
    atomic_uint readers_open;   /* readers not yet closed, checked at close */
    int ahead_fd;               /* journal_grow_ahead()'s own descriptor of data.mdb, or -1 */
    uint32_t format_version;    /* from journal.meta */
    int64_t created_us;         /* from journal.meta */
    uint8_t journal_id[JOURNAL_ID_SIZE]; /* from journal.meta */
};

struct journal_txn {
    journal_t *j;        /* the journal being written */
    MDB_txn *txn;        /* the LMDB write transaction */
    journal_head_t head; /* head including the entries appended so far in this txn */
    uint32_t appended;   /* entries appended in this txn */
    bool map_full;       /* an append met MDB_MAP_FULL: grow and rerun the fill */
};

struct journal_reader {
    journal_t *j;                         /* the journal read */
    uint64_t scan_seq;                    /* next sequence to fetch from LMDB */
    uint8_t scan_hash[JOURNAL_HASH_SIZE]; /* hash of entry scan_seq - 1 (chain anchor) */
    journal_entry_t *ents;                /* buffered, verified entries */
    uint32_t ents_len;                    /* entries in ents */
    uint32_t ents_pos;                    /* next entry of ents to hand out */
    uint8_t *buf;                         /* payload bytes of the buffered entries */
    size_t buf_used;                      /* bytes used in buf */
    int pending_rc;                       /* error met after the buffered entries, or 0 */
    uint64_t pending_bad_seq;             /* its sequence number */
    int err;                              /* sticky error handed out, or 0 */
    uint64_t bad_seq;                     /* its sequence number */
};

typedef int (*s_visit_fn)(void *ctx, const journal_entry_t *e);

static _Noreturn void
s_check_failed(const char *file, int line, const char *cond)
{
    fprintf(stderr, "%s:%d: journal: invariant violated: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}

/* Converts an LMDB or errno result (positive errno, as LMDB returns them) to a journal code. */
static int
s_rc(int mrc)
{
    switch (mrc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
        return JOURNAL_EFULL;
    case MDB_NOTFOUND:
        return JOURNAL_ENOTFOUND;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return JOURNAL_EVERSION;
    default:
        break;
    }
    return mrc > 0 ? -mrc : mrc;
}

static void
s_mutex_lock(pthread_mutex_t *m)
{
    int prc = pthread_mutex_lock(m);
    JOURNAL_CHECK(prc == 0);
}

static void
s_mutex_unlock(pthread_mutex_t *m)
{
    int prc = pthread_mutex_unlock(m);
    JOURNAL_CHECK(prc == 0);
}

/* The map_lock read locks this thread holds, per journal. A thread that already holds the
 * lock does not take it again (a writer-preferring rwlock would make it queue behind a waiting
 * resize, which waits for this very thread), and it must not wait for the write lock. */
struct s_held {
    const journal_t *j; /* journal whose map_lock this thread holds, or NULL */
    unsigned depth;     /* transactions of this thread on it */
};
static _Thread_local struct s_held s_held[S_HELD_JOURNALS_MAX];

static struct s_held *
s_held_find(const journal_t *j)
{
    for (unsigned i = 0; i < S_HELD_JOURNALS_MAX; i++) {
        if (s_held[i].j == j) {
            return &s_held[i];
        }
    }
    return NULL;
}

static void
s_map_rdlock(journal_t *j)
{
    struct s_held *h = s_held_find(j);
    if (h != NULL) {
        assert(h->depth > 0);
        h->depth++;
        return;
    }
    h = s_held_find(NULL);
    /* A thread with transactions open on more journals at once than this is a bug. */
    JOURNAL_CHECK(h != NULL);
    int prc = pthread_rwlock_rdlock(&j->map_lock);
    JOURNAL_CHECK(prc == 0);
    h->j = j;
    h->depth = 1;
}

static void
s_map_rdunlock(journal_t *j)
{
    struct s_held *h = s_held_find(j);
    JOURNAL_CHECK(h != NULL && h->depth > 0); /* released by the thread that took it */
    if (--h->depth > 0) {
        return;
    }
    h->j = NULL;
    int prc = pthread_rwlock_unlock(&j->map_lock);
    JOURNAL_CHECK(prc == 0);
}

/* Takes map_lock exclusively, or refuses with -EDEADLK when this thread still has a
 * transaction open on this journal (for example a journal_read_txn_begin() not yet ended). */
static int
s_map_wrlock(journal_t *j)
{
    if (s_held_find(j) != NULL) {
        return -EDEADLK;
    }
    int prc = pthread_rwlock_wrlock(&j->map_lock);
    JOURNAL_CHECK(prc == 0);
    return 0;
}

static void
s_map_wrunlock(journal_t *j)
{
    int prc = pthread_rwlock_unlock(&j->map_lock);
    JOURNAL_CHECK(prc == 0);
}

/* Adopts the map size another process recorded in the meta page (after MDB_MAP_RESIZED). */
static int
s_map_adopt(journal_t *j)
{
    int rc = s_map_wrlock(j);
    if (rc != 0) {
        return rc;
    }
    int mrc = mdb_env_set_mapsize(j->env, 0);
    s_map_wrunlock(j);
    return s_rc(mrc);
}

/* Doubles the map, up to the configured ceiling. No transaction of ours may be open. */
static int
s_map_grow(journal_t *j)
{
    assert(!j->read_only);
    int rc = s_map_wrlock(j);
    if (rc != 0) {
        return rc;
    }
    MDB_envinfo info;
    int mrc = mdb_env_info(j->env, &info);
    if (mrc == 0) {
        size_t cur = info.me_mapsize;
        if (cur >= j->map_size_max_bytes) {
            mrc = MDB_MAP_FULL;
        } else {
            size_t next = cur > j->map_size_max_bytes / 2 ? j->map_size_max_bytes : cur * 2;
            assert(next > cur);
            mrc = mdb_env_set_mapsize(j->env, next);
        }
    }
    s_map_wrunlock(j);
    return s_rc(mrc);
}

/* Begins a transaction holding map_lock shared; on success the caller must end it with
 * s_txn_abort() or s_txn_commit(), which release the lock. */
static int
s_txn_begin(journal_t *j, unsigned flags, MDB_txn **out_txn)
{
    assert(j != NULL && out_txn != NULL);
    for (int attempt = 0;; attempt++) {
        MDB_txn *txn = NULL;
        s_map_rdlock(j);
        int mrc = mdb_txn_begin(j->env, NULL, flags, &txn);
        if (mrc == 0) {
            *out_txn = txn;
            return 0;
        }
        s_map_rdunlock(j);
        if (mrc != MDB_MAP_RESIZED || attempt >= S_RESIZE_RETRIES_MAX) {
            return s_rc(mrc);
        }
        int rc = s_map_adopt(j);
        if (rc != 0) {
            return rc;
        }
    }
}

static void
s_txn_abort(journal_t *j, MDB_txn **txn)
{
    assert(txn != NULL && *txn != NULL);
    mdb_txn_abort(*txn);
    *txn = NULL;
    s_map_rdunlock(j);
}

/* Commits and releases map_lock; returns the raw LMDB result so callers can see MAP_FULL. */
static int
s_txn_commit(journal_t *j, MDB_txn **txn)
{
    assert(txn != NULL && *txn != NULL);
    int mrc = mdb_txn_commit(*txn);
    *txn = NULL;
    s_map_rdunlock(j);
    return mrc;
}

/* ---- Meta and open ---------------------------------------------------------------------- */

static int
s_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, size_t size, void *out)
{
    MDB_val k = { strlen(key), (void *)(uintptr_t)key };
    MDB_val v;
    int mrc = mdb_get(txn, dbi, &k, &v);
    if (mrc != 0) {
        return mrc;
    }
    if (v.mv_size != size) {
        return MDB_INCOMPATIBLE;
    }
    memcpy(out, v.mv_data, size);
    return 0;
}

static int
s_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t size)
{
    MDB_val k = { strlen(key), (void *)(uintptr_t)key };
    MDB_val v = { size, (void *)(uintptr_t)data };
    return mdb_put(txn, dbi, &k, &v, MDB_NOOVERWRITE);
}

static int
s_random_bytes(uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

static int64_t
s_now_us(void)
{
    struct timespec ts;
    int prc = clock_gettime(CLOCK_REALTIME, &ts);
    assert(prc == 0);
    (void)prc;
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Writes journal.meta into a brand-new environment. */
static int
s_create_meta(journal_t *j, MDB_txn *txn)
{
    uint8_t format[4];
    uint8_t created[8];
    uint8_t id[JOURNAL_ID_SIZE];
    int64_t now_us = s_now_us();
    journal_format_put_le32(format, JOURNAL_FORMAT_VERSION);
    journal_format_put_le64(created, (uint64_t)now_us);
    int rc = s_random_bytes(id, sizeof(id));
    if (rc != 0) {
        return rc;
    }
    int mrc = s_meta_put(txn, j->dbi_meta, S_META_FORMAT, format, sizeof(format));
    if (mrc == 0) {
        mrc = s_meta_put(txn, j->dbi_meta, S_META_CREATED_US, created, sizeof(created));
    }
    if (mrc == 0) {
        mrc = s_meta_put(txn, j->dbi_meta, S_META_JOURNAL_ID, id, sizeof(id));
    }
    if (mrc != 0) {
        return s_rc(mrc);
    }
    j->format_version = JOURNAL_FORMAT_VERSION;
    j->created_us = now_us;
    memcpy(j->journal_id, id, sizeof(id));
    return 0;
}

/* Reads and checks journal.meta of an existing environment. */
static int
s_load_meta(journal_t *j, MDB_txn *txn)
{
    uint8_t format[4];
    int mrc = s_meta_get(txn, j->dbi_meta, S_META_FORMAT, sizeof(format), format);
    if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) {
        return JOURNAL_EVERSION;
    }
    if (mrc != 0) {
        return s_rc(mrc);
    }
    j->format_version = journal_format_get_le32(format);
    if (j->format_version != JOURNAL_FORMAT_VERSION) {
        return JOURNAL_EVERSION;
    }
    uint8_t created[8];
    mrc = s_meta_get(txn, j->dbi_meta, S_META_CREATED_US, sizeof(created), created);
    if (mrc == 0) {
        mrc = s_meta_get(txn, j->dbi_meta, S_META_JOURNAL_ID, JOURNAL_ID_SIZE, j->journal_id);
    }
    if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) {
        return JOURNAL_ECORRUPT;
    }
    if (mrc != 0) {
        return s_rc(mrc);
    }
    j->created_us = (int64_t)journal_format_get_le64(created);
    return 0;
}

/* Reads the entry at the cursor's current position and decodes it, checking its structure
 * and that it is entry @p expect_seq (0: any). */
static int
s_cursor_decode(MDB_cursor *cur, MDB_cursor_op op, uint64_t expect_seq, journal_entry_t *out,
                const void **out_val)
{
    MDB_val k;
    MDB_val v;
    int mrc = mdb_cursor_get(cur, &k, &v, op);
    if (mrc != 0) {
        return s_rc(mrc);
    }
    journal_entry_t e;
    if (journal_format_decode(k.mv_data, k.mv_size, v.mv_data, v.mv_size, &e) != 0) {
        return JOURNAL_ECORRUPT;
    }
    if (expect_seq != 0 && e.seq != expect_seq) {
        return JOURNAL_ECORRUPT;
    }
    *out = e;
    if (out_val != NULL) {
        *out_val = v.mv_data;
    }
    return 0;
}

/* Reads the last entry (structure checked); an empty journal gives a zero head. With
 * @p check_link, also checks the last entry's hash against the one before it and that the
 * entry count equals the last sequence (cheap proof that no entry is missing). */
static int
s_read_head(journal_t *j, MDB_txn *txn, bool check_link, journal_head_t *out)
{
    MDB_cursor *cur = NULL;
    int mrc = mdb_cursor_open(txn, j->dbi_entries, &cur);
    if (mrc != 0) {
        return s_rc(mrc);
    }
    journal_head_t head;
    memset(&head, 0, sizeof(head));
    journal_entry_t last;
    const void *last_val = NULL;
    int rc = s_cursor_decode(cur, MDB_LAST, 0, &last, &last_val);
    if (rc == JOURNAL_ENOTFOUND) {
        rc = 0; /* empty journal */
    } else if (rc == 0) {
        head.seq = last.seq;
        head.timestamp_us = last.timestamp_us;
        memcpy(head.hash, last.hash, JOURNAL_HASH_SIZE);
        if (check_link) {
            uint8_t prev_hash[JOURNAL_HASH_SIZE] = { 0 };
            if (last.seq > 1) {
                journal_entry_t prev;
                rc = s_cursor_decode(cur, MDB_PREV, last.seq - 1, &prev, NULL);
                if (rc == 0) {
                    memcpy(prev_hash, prev.hash, JOURNAL_HASH_SIZE);
                } else if (rc == JOURNAL_ENOTFOUND) {
                    rc = JOURNAL_ECORRUPT;
                }
            }
            if (rc == 0) {
                rc = journal_format_check_chain(prev_hash, last_val, &last);
            }
            MDB_stat st;
            if (rc == 0 && (mrc = mdb_stat(txn, j->dbi_entries, &st)) != 0) {
                rc = s_rc(mrc);
            }
            if (rc == 0 && st.ms_entries != last.seq) {
                rc = JOURNAL_ECORRUPT;
            }
        }
    }
    mdb_cursor_close(cur);
    if (rc == 0) {
        *out = head;
    }
    return rc;
}

/* Opens (and for a new writer environment, creates) the journal's databases, checks the
 * format and, for a writer, loads the head. */
static int
s_setup(journal_t *j, bool *out_created)
{
    MDB_txn *txn = NULL;
    int rc = s_txn_begin(j, j->read_only ? MDB_RDONLY : 0, &txn);
    if (rc != 0) {
        return rc;
    }
    bool created = false;
    MDB_dbi main_dbi;
    MDB_stat main_st;
    int mrc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (mrc == 0) {
        mrc = mdb_stat(txn, main_dbi, &main_st);
    }
    if (mrc != 0) {
        rc = s_rc(mrc);
    } else if (main_st.ms_entries == 0) {
        /* No named database at all: a new environment. */
        if (j->read_only) {
            rc = JOURNAL_ENOTFOUND;
        } else {
            mrc = mdb_dbi_open(txn, JOURNAL_DB_META, MDB_CREATE, &j->dbi_meta);
            if (mrc == 0) {
                mrc = mdb_dbi_open(txn, JOURNAL_DB_ENTRIES, MDB_CREATE, &j->dbi_entries);
            }
            rc = mrc != 0 ? s_rc(mrc) : s_create_meta(j, txn);
            created = true;
        }
    } else {
        mrc = mdb_dbi_open(txn, JOURNAL_DB_META, 0, &j->dbi_meta);
        if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) {
            rc = JOURNAL_EVERSION; /* some other LMDB environment */
        } else if (mrc != 0) {
            rc = s_rc(mrc);
        } else {
            rc = s_load_meta(j, txn);
        }
        if (rc == 0) {
            mrc = mdb_dbi_open(txn, JOURNAL_DB_ENTRIES, 0, &j->dbi_entries);
            rc = (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE) ? JOURNAL_ECORRUPT : s_rc(mrc);
        }
        if (rc == 0 && !j->read_only) {
            rc = s_read_head(j, txn, true, &j->head);
        }
    }
    if (rc != 0) {
        s_txn_abort(j, &txn);
        return rc;
    }
    /* Commit also for a read-only txn: that keeps the database handles open. */
    mrc = s_txn_commit(j, &txn);
    if (mrc != 0) {
        return s_rc(mrc);
    }
    *out_created = created;
    return 0;
}

int
journal_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static uint64_t
s_round_up(uint64_t v, uint64_t unit)
{
    assert(unit > 0);
    return (v + unit - 1) / unit * unit;
}

int
journal_open(const char *dir, const journal_opts_t *opts, journal_t **out_journal)
{
    assert(dir != NULL && out_journal != NULL);
    if (dir == NULL || dir[0] == '\0' || out_journal == NULL) {
        return JOURNAL_EINVAL;
    }
    journal_opts_t o;
    memset(&o, 0, sizeof(o));
    if (opts != NULL) {
        o = *opts;
    }
    long page = sysconf(_SC_PAGESIZE);
    uint64_t page_bytes = page > 0 ? (uint64_t)page : 4096;
    if (o.max_dbs == 0) {
        o.max_dbs = JOURNAL_MAX_DBS_DEFAULT;
    }
    if (o.map_size_bytes == 0) {
        o.map_size_bytes = JOURNAL_MAP_SIZE_DEFAULT;
    }
    if (o.map_size_max_bytes == 0) {
        o.map_size_max_bytes = JOURNAL_MAP_SIZE_MAX_DEFAULT;
    }
    if (o.max_dbs < JOURNAL_MAX_DBS_DEFAULT || o.max_dbs > JOURNAL_MAX_DBS_MAX ||
        o.map_size_bytes < JOURNAL_MAP_SIZE_MIN || o.map_size_max_bytes < o.map_size_bytes ||
        o.map_size_max_bytes > SIZE_MAX - page_bytes) {
        return JOURNAL_EINVAL;
    }
    o.map_size_bytes = s_round_up(o.map_size_bytes, page_bytes);
    o.map_size_max_bytes = s_round_up(o.map_size_max_bytes, page_bytes);

    if (!o.read_only && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return errno == ENOENT ? JOURNAL_ENOTFOUND : -errno;
    }

    journal_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return -ENOMEM;
    }
    j->read_only = o.read_only;
    j->ahead_fd = -1;
    j->map_size_max_bytes = (size_t)o.map_size_max_bytes;
    atomic_init(&j->readers_open, 0);
    int prc = pthread_mutex_init(&j->write_lock, NULL);
    JOURNAL_CHECK(prc == 0);
    prc = pthread_mutex_init(&j->head_lock, NULL);
    JOURNAL_CHECK(prc == 0);
    /* Writer-preferring, so a resize is not starved by readers that keep overlapping; each
     * thread takes the lock once per journal however many transactions it nests (s_held). */
    pthread_rwlockattr_t attr;
    prc = pthread_rwlockattr_init(&attr);
    JOURNAL_CHECK(prc == 0);
#ifdef __GLIBC__
    prc = pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    JOURNAL_CHECK(prc == 0);
#endif
    prc = pthread_rwlock_init(&j->map_lock, &attr);
    JOURNAL_CHECK(prc == 0);
    pthread_rwlockattr_destroy(&attr);

    int rc = s_rc(mdb_env_create(&j->env));
    if (rc == 0) {
        rc = s_rc(mdb_env_set_maxdbs(j->env, o.max_dbs));
    }
    if (rc == 0) {
        /* MDB_NOTLS: read transactions are not bound to threads, so a thread may hold the
         * caller's read txn while a journal reader refills. No NOSYNC/NOMETASYNC: durable. */
        unsigned flags = MDB_NOTLS | (o.read_only ? MDB_RDONLY : 0u);
        int mrc = mdb_env_open(j->env, dir, flags, 0600);
        rc = (mrc == ENOENT) ? JOURNAL_ENOTFOUND : s_rc(mrc);
    }
    if (rc == 0 && !o.read_only) {
        /* Keep a map that earlier runs grew; raise a smaller one to the requested size. */
        MDB_envinfo info;
        rc = s_rc(mdb_env_info(j->env, &info));
        if (rc == 0 && info.me_mapsize < o.map_size_bytes) {
            rc = s_rc(mdb_env_set_mapsize(j->env, (size_t)o.map_size_bytes));
        }
    }
    bool created = false;
    if (rc == 0) {
        rc = s_setup(j, &created);
    }
    if (rc == 0 && created) {
        rc = journal_fsync_dir(dir); /* make the new files' directory entries durable too */
    }
    if (rc != 0) {
        journal_close(&j);
        return rc;
    }
    assert(j->format_version == JOURNAL_FORMAT_VERSION);
    *out_journal = j;
    return 0;
}

void
journal_close(journal_t **jp)
{
    if (jp == NULL || *jp == NULL) {
        return;
    }
    journal_t *j = *jp;
    /* A reader outliving its journal would use freed memory. */
    JOURNAL_CHECK(atomic_load(&j->readers_open) == 0);
    assert(s_held_find(j) == NULL); /* no journal_read_txn_begin() left open on this thread */
    if (j->env != NULL) {
        mdb_env_close(j->env);
    }
    if (j->ahead_fd >= 0) {
        close(j->ahead_fd);
    }
    pthread_rwlock_destroy(&j->map_lock);
    pthread_mutex_destroy(&j->head_lock);
    pthread_mutex_destroy(&j->write_lock);
    free(j);
    *jp = NULL;
}

MDB_env *
journal_env(journal_t *j)
{
    assert(j != NULL && j->env != NULL);
    return j->env;
}

bool
journal_is_read_only(const journal_t *j)
{
    assert(j != NULL);
    return j->read_only;
}

/* ---- Writing ---------------------------------------------------------------------------- */

#ifndef NDEBUG
/* Reads back what was just written into LMDB's reserved space (for assert() only). */
static bool
s_written_entry_ok(const uint8_t *key, const MDB_val *v, uint64_t seq,
                   const uint8_t prev_hash[JOURNAL_HASH_SIZE],
                   const uint8_t hash[JOURNAL_HASH_SIZE])
{
    journal_entry_t e;
    return journal_format_decode(key, JOURNAL_FORMAT_KEY_SIZE, v->mv_data, v->mv_size, &e) == 0 &&
           e.seq == seq && memcmp(e.hash, hash, JOURNAL_HASH_SIZE) == 0 &&
           journal_format_check_chain(prev_hash, v->mv_data, &e) == 0;
}
#endif

/* Puts one entry at txn->head.seq + 1 and advances the transaction's head. */
static int
s_txn_put(journal_txn_t *t, int64_t timestamp_us, const void *payload, size_t len,
          uint64_t *out_seq)
{
    assert(t != NULL && t->txn != NULL);
    assert(len <= JOURNAL_PAYLOAD_MAX);
    assert(payload != NULL || len == 0);
    const uint64_t seq = t->head.seq + 1;
    JOURNAL_CHECK(seq > t->head.seq); /* the sequence only grows */

    uint8_t key[JOURNAL_FORMAT_KEY_SIZE];
    journal_format_key_encode(seq, key);
    MDB_val k = { sizeof(key), key };
    MDB_val v = { JOURNAL_HEADER_SIZE + len, NULL };
    int mrc = mdb_put(t->txn, t->j->dbi_entries, &k, &v, MDB_APPEND | MDB_RESERVE);
    /* MDB_APPEND refuses a key not above the last one: our head would be behind the disk. */
    JOURNAL_CHECK(mrc != MDB_KEYEXIST);
    if (mrc != 0) {
        if (mrc == MDB_MAP_FULL) {
            t->map_full = true;
        }
        return s_rc(mrc);
    }
    assert(v.mv_data != NULL && v.mv_size == JOURNAL_HEADER_SIZE + len);
    uint8_t hash[JOURNAL_HASH_SIZE];
    journal_format_encode(v.mv_data, seq, timestamp_us, 0, payload, len, t->head.hash, hash);
    assert(s_written_entry_ok(key, &v, seq, t->head.hash, hash));

    t->head.seq = seq;
    t->head.timestamp_us = timestamp_us;
    memcpy(t->head.hash, hash, JOURNAL_HASH_SIZE);
    t->appended++;
    if (out_seq != NULL) {
        *out_seq = seq;
    }
    return 0;
}

int
journal_txn_append(journal_txn_t *txn, int64_t timestamp_us, const void *payload, size_t len,
                   uint64_t *out_seq)
{
    assert(txn != NULL && txn->txn != NULL);
    if (payload == NULL && len > 0) {
        return JOURNAL_EINVAL;
    }
    if (len > JOURNAL_PAYLOAD_MAX || txn->appended >= JOURNAL_TXN_ENTRIES_MAX) {
        return JOURNAL_ETOOBIG;
    }
    return s_txn_put(txn, timestamp_us, payload, len, out_seq);
}

int
journal_txn_append_entry(journal_txn_t *txn, const journal_entry_t *e)
{
    assert(txn != NULL && txn->txn != NULL && e != NULL);
    if (e->seq != txn->head.seq + 1) {
        return JOURNAL_EGAP;
    }
    if (e->version != JOURNAL_ENTRY_VERSION || (e->flags & ~JOURNAL_FORMAT_FLAGS_KNOWN) != 0) {
        return JOURNAL_ECORRUPT;
    }
    if (e->payload == NULL && e->payload_len > 0) {
        return JOURNAL_EINVAL;
    }
    if (e->payload_len > JOURNAL_PAYLOAD_MAX || txn->appended >= JOURNAL_TXN_ENTRIES_MAX) {
        return JOURNAL_ETOOBIG;
    }
    uint8_t header[JOURNAL_FORMAT_HASHED_HEADER_SIZE];
    journal_format_header_encode(header, e->seq, e->timestamp_us, (uint32_t)e->payload_len,
                                 e->flags);
    uint8_t want[JOURNAL_HASH_SIZE];
    journal_format_hash(txn->head.hash, header, e->payload, e->payload_len, want);
    if (memcmp(want, e->hash, JOURNAL_HASH_SIZE) != 0) {
        return JOURNAL_ECHAIN;
    }
    int rc = s_txn_put(txn, e->timestamp_us, e->payload, e->payload_len, NULL);
    assert(rc != 0 || memcmp(txn->head.hash, e->hash, JOURNAL_HASH_SIZE) == 0);
    return rc;
}

MDB_txn *
journal_txn_mdb(journal_txn_t *txn)
{
    assert(txn != NULL && txn->txn != NULL);
    return txn->txn;
}

void
journal_txn_head(const journal_txn_t *txn, journal_head_t *out_head)
{
    assert(txn != NULL && out_head != NULL);
    *out_head = txn->head;
}

/* Start of a write transaction: the head on disk must be the one in memory. Another process
 * may have appended (the head then moves forward), but the durable sequence never goes back. */
static int
s_txn_load_head(journal_txn_t *t)
{
    journal_t *j = t->j;
    MDB_cursor *cur = NULL;
    int mrc = mdb_cursor_open(t->txn, j->dbi_entries, &cur);
    if (mrc != 0) {
        return s_rc(mrc);
    }
    MDB_val k;
    MDB_val v;
    uint64_t disk_seq = 0;
    int rc = 0;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (mrc == 0) {
        rc = journal_format_key_decode(k.mv_data, k.mv_size, &disk_seq);
    } else if (mrc != MDB_NOTFOUND) {
        rc = s_rc(mrc);
    }
    mdb_cursor_close(cur);
    if (rc != 0) {
        return rc;
    }
    JOURNAL_CHECK(disk_seq >= j->head.seq);
    if (disk_seq != j->head.seq) {
        /* Another writer process appended; chain onto what is really there. */
        return s_read_head(j, t->txn, false, &t->head);
    }
    return 0;
}

int
journal_write(journal_t *j, journal_fill_fn fill, void *ctx, journal_head_t *out_head)
{
    assert(j != NULL && fill != NULL);
    if (j->read_only) {
        return JOURNAL_EREADONLY;
    }
    s_mutex_lock(&j->write_lock);
    int rc;
    for (;;) {
        journal_txn_t t;
        memset(&t, 0, sizeof(t));
        t.j = j;
        t.head = j->head;
        rc = s_txn_begin(j, 0, &t.txn);
        if (rc != 0) {
            break;
        }
        rc = s_txn_load_head(&t);
        const journal_head_t start = t.head;
        if (rc == 0) {
            rc = fill(&t, ctx);
        }
        /* Inside a transaction only a full map makes a put fail with MAP_FULL/EFULL (ENOSPC
         * can only come from the commit). */
        bool grow = t.map_full || rc == MDB_MAP_FULL || rc == JOURNAL_EFULL;
        if (rc == 0 && !grow) {
            int mrc = s_txn_commit(j, &t.txn);
            if (mrc == 0) {
                JOURNAL_CHECK(t.head.seq >= start.seq && start.seq >= j->head.seq);
                JOURNAL_CHECK(t.head.seq - start.seq == t.appended);
                s_mutex_lock(&j->head_lock);
                j->head = t.head;
                s_mutex_unlock(&j->head_lock);
                if (out_head != NULL) {
                    *out_head = t.head;
                }
                break;
            }
            grow = mrc == MDB_MAP_FULL;
            rc = s_rc(mrc);
        } else {
            s_txn_abort(j, &t.txn);
        }
        if (!grow) {
            break; /* the fill's own error, or a commit failure other than a full map */
        }
        rc = s_map_grow(j);
        if (rc != 0) {
            break;
        }
    }
    s_mutex_unlock(&j->write_lock);
    return rc;
}

struct s_append_ctx {
    const journal_record_t *recs;
    size_t n;
};

static int
s_append_fill(journal_txn_t *txn, void *ctx)
{
    const struct s_append_ctx *a = ctx;
    for (size_t i = 0; i < a->n; i++) {
        const journal_record_t *r = &a->recs[i];
        int rc = journal_txn_append(txn, r->timestamp_us, r->payload, r->payload_len, NULL);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int
journal_append(journal_t *j, const journal_record_t *recs, size_t n, journal_head_t *out_head)
{
    assert(j != NULL);
    if (n == 0 || recs == NULL) {
        return JOURNAL_EINVAL;
    }
    if (n > JOURNAL_TXN_ENTRIES_MAX) {
        return JOURNAL_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        if (recs[i].payload_len > JOURNAL_PAYLOAD_MAX) {
            return JOURNAL_ETOOBIG;
        }
        if (recs[i].payload == NULL && recs[i].payload_len > 0) {
            return JOURNAL_EINVAL;
        }
    }
    struct s_append_ctx a = { recs, n };
    return journal_write(j, s_append_fill, &a, out_head);
}

/* Zeros for journal_grow_ahead(), written one piece per hold of the write lock. */
static const uint8_t s_zeros[64 * 1024];

/* Writes at most `limit` bytes of zeros where the file should grow next. Returns 0 or a negated
 * errno; *out_written is 0 when the file already reaches ahead_bytes past its used pages (or the
 * map's ceiling). */
static int
s_grow_piece(journal_t *j, uint64_t ahead_bytes, uint64_t limit, uint64_t *out_written)
{
    *out_written = 0;
    /*
     * Under the write lock no write transaction of this process is open, and the daemon's lock
     * file keeps other writers out (journal_grow_ahead() is for the only writer), so LMDB has
     * written nothing past its last committed page and writes nothing until the lock is
     * released: the zeros cannot land on a page LMDB wrote, and LMDB's next pages land on zeros
     * already in the file. mdb_env_stat() and mdb_env_info() read the meta pages in the map:
     * the write lock keeps this process's commits from remapping it (a map growth), the map
     * lock another process's growth from being adopted meanwhile.
     */
    s_mutex_lock(&j->write_lock);
    int rc = 0;
    if (j->ahead_fd < 0) {
        /* A descriptor of its own, so that a failed write-back of LMDB's pages is reported to
         * LMDB's next sync, not taken by this one's (Linux reports it once per descriptor). */
        const char *dir = NULL;
        char path[PATH_MAX];
        rc = s_rc(mdb_env_get_path(j->env, &dir));
        if (rc == 0 && snprintf(path, sizeof(path), "%s/data.mdb", dir) >= (int)sizeof(path)) {
            rc = -ENAMETOOLONG;
        }
        if (rc == 0) {
            j->ahead_fd = open(path, O_WRONLY | O_CLOEXEC);
            rc = j->ahead_fd < 0 ? -errno : 0;
        }
    }
    MDB_envinfo info;
    MDB_stat env_ms;
    struct stat sb;
    if (rc == 0) {
        s_map_rdlock(j);
        rc = s_rc(mdb_env_info(j->env, &info));
        if (rc == 0) {
            rc = s_rc(mdb_env_stat(j->env, &env_ms));
        }
        s_map_rdunlock(j);
    }
    if (rc == 0 && fstat(j->ahead_fd, &sb) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        uint64_t used = ((uint64_t)info.me_last_pgno + 1) * env_ms.ms_psize;
        uint64_t from = (uint64_t)sb.st_size > used ? (uint64_t)sb.st_size : used;
        uint64_t want = used + ahead_bytes;
        if (want > j->map_size_max_bytes) {
            want = j->map_size_max_bytes; /* LMDB could never use more */
        }
        uint64_t n = want > from ? want - from : 0;
        if (n > limit) {
            n = limit;
        }
        if (n > sizeof(s_zeros)) {
            n = sizeof(s_zeros);
        }
        ssize_t w = 0;
        do {
            w = n > 0 ? pwrite(j->ahead_fd, s_zeros, (size_t)n, (off_t)from) : 0;
        } while (w < 0 && errno == EINTR);
        if (w < 0) {
            rc = -errno;
        } else {
            *out_written = (uint64_t)w;
        }
    }
    s_mutex_unlock(&j->write_lock);
    return rc;
}

int
journal_grow_ahead(journal_t *j, uint64_t ahead_bytes, uint64_t max_bytes, uint64_t *out_written)
{
    assert(j != NULL && out_written != NULL);
    *out_written = 0;
    if (j->read_only) {
        return JOURNAL_EREADONLY;
    }
    int rc = 0;
    uint64_t done = 0;
    while (rc == 0 && done < max_bytes) {
        uint64_t written = 0;
        rc = s_grow_piece(j, ahead_bytes, max_bytes - done, &written);
        if (written == 0) {
            break;
        }
        done += written;
    }
    /* One sync for the pieces, outside the lock: commits go on meanwhile. A commit whose sync
     * comes first flushes these blocks and the file's new size too (as it would without this
     * function); the next commits find them written. */
    if (done > 0 && fdatasync(j->ahead_fd) != 0 && rc == 0) {
        rc = -errno;
    }
    *out_written = done;
    return rc;
}

/* ---- Reading ---------------------------------------------------------------------------- */

int
journal_head(journal_t *j, journal_head_t *out_head)
{
    assert(j != NULL && out_head != NULL);
    if (!j->read_only) {
        s_mutex_lock(&j->head_lock);
        *out_head = j->head;
        s_mutex_unlock(&j->head_lock);
        return 0;
    }
    MDB_txn *txn = NULL;
    int rc = s_txn_begin(j, MDB_RDONLY, &txn);
    if (rc != 0) {
        return rc;
    }
    rc = s_read_head(j, txn, false, out_head);
    s_txn_abort(j, &txn);
    return rc;
}

/* Reads the stored hash of entry @p seq - 1, the chain anchor for entry @p seq (zeros for 1). */
static int
s_anchor(journal_t *j, uint64_t seq, uint8_t out_hash[JOURNAL_HASH_SIZE], uint64_t *out_bad_seq)
{
    assert(seq >= 1);
    if (seq == 1) {
        memset(out_hash, 0, JOURNAL_HASH_SIZE);
        return 0;
    }
    MDB_txn *txn = NULL;
    int rc = s_txn_begin(j, MDB_RDONLY, &txn);
    if (rc != 0) {
        return rc;
    }
    MDB_cursor *cur = NULL;
    int mrc = mdb_cursor_open(txn, j->dbi_entries, &cur);
    if (mrc != 0) {
        s_txn_abort(j, &txn);
        return s_rc(mrc);
    }
    uint8_t key[JOURNAL_FORMAT_KEY_SIZE];
    journal_format_key_encode(seq - 1, key);
    MDB_val k = { sizeof(key), key };
    MDB_val v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (mrc != 0) {
        rc = s_rc(mrc);
    } else {
        journal_entry_t e;
        rc = journal_format_decode(k.mv_data, k.mv_size, v.mv_data, v.mv_size, &e);
        if (rc == 0) {
            memcpy(out_hash, e.hash, JOURNAL_HASH_SIZE);
        } else {
            *out_bad_seq = seq - 1;
        }
    }
    mdb_cursor_close(cur);
    s_txn_abort(j, &txn);
    return rc;
}

/*
 * The verifying scan every read path shares. In one short read transaction, starting at
 * *io_seq whose predecessor's hash is io_hash, visits at most @p max_entries consecutive
 * entries up to @p to_seq, checking each one's key, structure and chain link. Advances
 * *io_seq and io_hash past every entry the visitor consumed.
 *
 * Returns 0 when it stopped early (max_entries reached, or the visitor said S_VISIT_STOP),
 * JOURNAL_END when there is nothing more (end of journal or past to_seq), or an error; for
 * JOURNAL_ECORRUPT/JOURNAL_ECHAIN *out_bad_seq names the entry.
 */
static int
s_scan(journal_t *j, uint64_t *io_seq, uint8_t io_hash[JOURNAL_HASH_SIZE], uint64_t to_seq,
       uint32_t max_entries, s_visit_fn visit, void *ctx, uint64_t *out_bad_seq)
{
    assert(j != NULL && io_seq != NULL && *io_seq >= 1 && visit != NULL);
    assert(max_entries > 0);
    if (*io_seq > to_seq) {
        return JOURNAL_END;
    }
    MDB_txn *txn = NULL;
    int rc = s_txn_begin(j, MDB_RDONLY, &txn);
    if (rc != 0) {
        return rc;
    }
    MDB_cursor *cur = NULL;
    int mrc = mdb_cursor_open(txn, j->dbi_entries, &cur);
    if (mrc != 0) {
        s_txn_abort(j, &txn);
        return s_rc(mrc);
    }
    uint8_t key[JOURNAL_FORMAT_KEY_SIZE];
    journal_format_key_encode(*io_seq, key);
    MDB_val k = { sizeof(key), key };
    MDB_val v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    uint32_t visited = 0;
    for (;;) {
        if (mrc == MDB_NOTFOUND) {
            rc = JOURNAL_END;
            break;
        }
        if (mrc != 0) {
            rc = s_rc(mrc);
            break;
        }
        const uint64_t seq = *io_seq;
        uint64_t key_seq = 0;
        journal_entry_t e;
        if (journal_format_key_decode(k.mv_data, k.mv_size, &key_seq) != 0 || key_seq != seq ||
            journal_format_decode(k.mv_data, k.mv_size, v.mv_data, v.mv_size, &e) != 0) {
            /* A key other than the expected one means entry seq is missing (or its key was
             * damaged); either way seq is the first sequence number that is not intact. */
            rc = JOURNAL_ECORRUPT;
            *out_bad_seq = seq;
            break;
        }
        assert(e.seq == seq);
        if (journal_format_check_chain(io_hash, v.mv_data, &e) != 0) {
            rc = JOURNAL_ECHAIN;
            *out_bad_seq = seq;
            break;
        }
        rc = visit(ctx, &e);
        if (rc != 0) {
            if (rc == S_VISIT_STOP) {
                rc = 0;
            }
            break;
        }
        *io_seq = seq + 1;
        memcpy(io_hash, e.hash, JOURNAL_HASH_SIZE);
        if (seq >= to_seq) {
            rc = JOURNAL_END;
            break;
        }
        if (++visited == max_entries) {
            rc = 0;
            break;
        }
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    s_txn_abort(j, &txn);
    return rc;
}

static int
s_reader_visit(void *ctx, const journal_entry_t *e)
{
    journal_reader_t *r = ctx;
    assert(r->ents_len < JOURNAL_READER_TXN_ENTRIES_MAX);
    if (JOURNAL_READER_BUFFER_BYTES - r->buf_used < e->payload_len) {
        assert(r->ents_len > 0); /* an empty buffer holds the largest entry */
        return S_VISIT_STOP;
    }
    journal_entry_t *dst = &r->ents[r->ents_len++];
    *dst = *e;
    if (e->payload_len > 0) {
        memcpy(r->buf + r->buf_used, e->payload, e->payload_len);
    }
    dst->payload = r->buf + r->buf_used;
    r->buf_used += e->payload_len;
    return 0;
}

int
journal_reader_open(journal_t *j, uint64_t from_seq, journal_reader_t **out_reader)
{
    static_assert(JOURNAL_READER_BUFFER_BYTES >= JOURNAL_PAYLOAD_MAX,
                  "a reader's buffer must hold the largest entry");
    assert(j != NULL && out_reader != NULL);
    if (from_seq == 0) {
        from_seq = 1;
    }
    journal_reader_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    r->ents = calloc(JOURNAL_READER_TXN_ENTRIES_MAX, sizeof(*r->ents));
    r->buf = malloc(JOURNAL_READER_BUFFER_BYTES);
    if (r->ents == NULL || r->buf == NULL) {
        free(r->ents);
        free(r->buf);
        free(r);
        return -ENOMEM;
    }
    r->j = j;
    r->scan_seq = from_seq;
    uint64_t bad_seq = 0;
    int rc = s_anchor(j, from_seq, r->scan_hash, &bad_seq);
    if (rc != 0) {
        free(r->ents);
        free(r->buf);
        free(r);
        return rc;
    }
    atomic_fetch_add(&j->readers_open, 1);
    *out_reader = r;
    return 0;
}

int
journal_reader_next(journal_reader_t *r, journal_entry_t *out_entry)
{
    assert(r != NULL && out_entry != NULL);
    assert(r->ents_pos <= r->ents_len);
    if (r->err != 0) {
        return r->err;
    }
    if (r->ents_pos == r->ents_len) {
        if (r->pending_rc != 0) {
            r->err = r->pending_rc;
            r->bad_seq = r->pending_bad_seq;
            return r->err;
        }
        r->ents_pos = 0;
        r->ents_len = 0;
        r->buf_used = 0;
        uint64_t bad_seq = 0;
        int rc = s_scan(r->j, &r->scan_seq, r->scan_hash, UINT64_MAX,
                        JOURNAL_READER_TXN_ENTRIES_MAX, s_reader_visit, r, &bad_seq);
        if (rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN) {
            /* Hand out_entry the intact entries before the damaged one first; then it sticks. */
            r->pending_rc = rc;
            r->pending_bad_seq = bad_seq;
        }
        if (r->ents_len == 0) {
            if (rc == JOURNAL_END) {
                return JOURNAL_END; /* not sticky: the writer may append more */
            }
            assert(rc < 0);
            if (r->pending_rc != 0) {
                r->err = r->pending_rc;
                r->bad_seq = r->pending_bad_seq;
                return r->err;
            }
            return rc; /* not about the data (say MDB_READERS_FULL): a later call retries */
        }
    }
    *out_entry = r->ents[r->ents_pos++];
    assert(out_entry->seq + (r->ents_len - r->ents_pos) + 1 == r->scan_seq);
    return 0;
}

uint64_t
journal_reader_bad_seq(const journal_reader_t *r)
{
    assert(r != NULL);
    return (r->err == JOURNAL_ECORRUPT || r->err == JOURNAL_ECHAIN) ? r->bad_seq : 0;
}

uint64_t
journal_reader_next_seq(const journal_reader_t *r)
{
    assert(r != NULL);
    if (r->ents_pos < r->ents_len) {
        return r->ents[r->ents_pos].seq;
    }
    return r->scan_seq;
}

void
journal_reader_close(journal_reader_t **rp)
{
    if (rp == NULL || *rp == NULL) {
        return;
    }
    journal_reader_t *r = *rp;
    unsigned before = atomic_fetch_sub(&r->j->readers_open, 1);
    assert(before > 0);
    (void)before;
    free(r->ents);
    free(r->buf);
    free(r);
    *rp = NULL;
}

struct s_read_one {
    void *buf;
    size_t buf_size;
    journal_entry_t entry;
    bool found;
};

static int
s_read_one_visit(void *ctx, const journal_entry_t *e)
{
    struct s_read_one *o = ctx;
    if (e->payload_len > o->buf_size) {
        return JOURNAL_ETOOBIG;
    }
    o->entry = *e;
    if (e->payload_len > 0) {
        memcpy(o->buf, e->payload, e->payload_len);
    }
    o->entry.payload = o->buf;
    o->found = true;
    return 0;
}

int
journal_read(journal_t *j, uint64_t seq, void *buf, size_t buf_size, journal_entry_t *out_entry)
{
    assert(j != NULL && out_entry != NULL);
    assert(buf != NULL || buf_size == 0);
    if (seq == 0) {
        return JOURNAL_ENOTFOUND;
    }
    uint8_t hash[JOURNAL_HASH_SIZE];
    uint64_t bad_seq = 0;
    int rc = s_anchor(j, seq, hash, &bad_seq);
    if (rc != 0) {
        return rc;
    }
    struct s_read_one o = { buf, buf_size, { 0 }, false };
    uint64_t at = seq;
    rc = s_scan(j, &at, hash, seq, 1, s_read_one_visit, &o, &bad_seq);
    if (rc < 0) {
        return rc;
    }
    if (!o.found) {
        return JOURNAL_ENOTFOUND;
    }
    assert(o.entry.seq == seq);
    *out_entry = o.entry;
    return 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older glibc headers lack the name */
#endif

/*
 * Where LMDB mapped the data file in this process: LMDB does not say (mdb_env_info() gives the
 * address only for MDB_FIXEDMAP), so the mapping is found in /proc/self/maps by the file's
 * device and inode. Returns false when it is not found.
 */
static bool
s_map_range(journal_t *j, uintptr_t *out_start, uintptr_t *out_end)
{
    mdb_filehandle_t fd;
    struct stat st;
    if (mdb_env_get_fd(j->env, &fd) != 0 || fstat(fd, &st) != 0) {
        return false;
    }
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL) {
        return false;
    }
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof(line), maps) != NULL) {
        unsigned long start, end, offset, inode;
        unsigned dev_major, dev_minor;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &dev_major,
                   &dev_minor, &inode) == 7 &&
            inode == (unsigned long)st.st_ino && offset == 0 &&
            makedev(dev_major, dev_minor) == st.st_dev) {
            *out_start = (uintptr_t)start;
            *out_end = (uintptr_t)end;
            found = true;
        }
    }
    fclose(maps);
    return found;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older glibc headers lack the name */
#endif

int
journal_prefault(journal_t *j)
{
    assert(j != NULL);
    MDB_txn *txn = NULL;
    MDB_envinfo info;
    MDB_stat st;
    uintptr_t start, end;
    /* The read transaction holds the map where it is while the pages are populated. */
    int rc = journal_read_txn_begin(j, &txn);
    if (rc != 0) {
        return rc;
    }
    rc = mdb_env_info(j->env, &info);
    if (rc == 0) {
        rc = mdb_env_stat(j->env, &st);
    }
    if (rc == 0 && s_map_range(j, &start, &end)) {
        size_t used = (size_t)(info.me_last_pgno + 1) * st.ms_psize;
        size_t len = end - start < used ? end - start : used;
        (void)madvise((void *)start, len, MADV_POPULATE_READ); /* advice only */
    }
    journal_read_txn_end(j, &txn);
    return rc;
}

int
journal_read_txn_begin(journal_t *j, MDB_txn **out_txn)
{
    assert(j != NULL && out_txn != NULL);
    return s_txn_begin(j, MDB_RDONLY, out_txn);
}

void
journal_read_txn_end(journal_t *j, MDB_txn **txn)
{
    assert(j != NULL);
    if (txn == NULL || *txn == NULL) {
        return;
    }
    s_txn_abort(j, txn);
}

/* ---- Verification, statistics, backup --------------------------------------------------- */

/* The last key's sequence number, without trusting the entry's value: verification must get
 * as far as the damaged entry to name it, even when that entry is the last one. */
static int
s_last_key(journal_t *j, uint64_t *out_seq)
{
    MDB_txn *txn = NULL;
    int rc = s_txn_begin(j, MDB_RDONLY, &txn);
    if (rc != 0) {
        return rc;
    }
    MDB_cursor *cur = NULL;
    int mrc = mdb_cursor_open(txn, j->dbi_entries, &cur);
    if (mrc == 0) {
        MDB_val k;
        MDB_val v;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (mrc == 0) {
            rc = journal_format_key_decode(k.mv_data, k.mv_size, out_seq);
        } else if (mrc == MDB_NOTFOUND) {
            *out_seq = 0;
            mrc = 0;
        }
        mdb_cursor_close(cur);
    }
    s_txn_abort(j, &txn);
    return rc != 0 ? rc : s_rc(mrc);
}

static int
s_verify_visit(void *ctx, const journal_entry_t *e)
{
    journal_verify_stats_t *st = ctx;
    if (st->entries_checked == 0) {
        st->first_seq = e->seq;
    }
    assert(st->entries_checked == 0 || e->seq == st->last_seq + 1);
    st->entries_checked++;
    st->last_seq = e->seq;
    st->payload_bytes += e->payload_len;
    return 0;
}

int
journal_verify(journal_t *j, uint64_t from_seq, uint64_t to_seq, uint64_t *out_bad_seq,
               journal_verify_stats_t *out_stats)
{
    assert(j != NULL);
    journal_verify_stats_t st;
    memset(&st, 0, sizeof(st));
    journal_head_t head;
    int rc = s_last_key(j, &head.seq);
    if (rc != 0) {
        return rc;
    }
    if (from_seq == 0) {
        from_seq = 1;
    }
    if (to_seq == 0) {
        to_seq = head.seq;
        if (head.seq == 0 || from_seq == head.seq + 1) {
            /* Nothing (new) to check. */
            if (out_bad_seq != NULL) {
                *out_bad_seq = 0;
            }
            if (out_stats != NULL) {
                *out_stats = st;
            }
            return from_seq <= head.seq + 1 ? 0 : JOURNAL_ENOTFOUND;
        }
    }
    if (from_seq > to_seq) {
        return from_seq > head.seq ? JOURNAL_ENOTFOUND : JOURNAL_EINVAL;
    }
    if (to_seq > head.seq) {
        return JOURNAL_ENOTFOUND;
    }
    uint8_t hash[JOURNAL_HASH_SIZE];
    uint64_t bad_seq = 0;
    uint64_t seq = from_seq;
    rc = s_anchor(j, from_seq, hash, &bad_seq);
    if (rc == JOURNAL_ENOTFOUND) {
        /* Entry from_seq - 1 is below the head, so it is missing. */
        rc = JOURNAL_ECORRUPT;
        bad_seq = from_seq - 1;
    }
    while (rc == 0) {
        rc = s_scan(j, &seq, hash, to_seq, JOURNAL_VERIFY_TXN_ENTRIES_MAX, s_verify_visit, &st,
                    &bad_seq);
    }
    if (rc == JOURNAL_END) {
        if (seq <= to_seq) {
            /* The journal ended before to_seq, which was below the head: entries vanished. */
            rc = JOURNAL_ECORRUPT;
            bad_seq = seq;
        } else {
            rc = 0;
            assert(st.entries_checked == to_seq - from_seq + 1);
        }
    }
    if (out_stats != NULL) {
        *out_stats = st;
    }
    if (rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN) {
        assert(bad_seq != 0);
        if (out_bad_seq != NULL) {
            *out_bad_seq = bad_seq;
        }
    } else if (rc == 0 && out_bad_seq != NULL) {
        *out_bad_seq = 0;
    }
    return rc;
}

int
journal_stat(journal_t *j, journal_stat_t *out_stat)
{
    assert(j != NULL && out_stat != NULL);
    journal_stat_t st;
    memset(&st, 0, sizeof(st));
    st.format_version = j->format_version;
    st.created_us = j->created_us;
    memcpy(st.journal_id, j->journal_id, JOURNAL_ID_SIZE);

    MDB_txn *txn = NULL;
    int rc = s_txn_begin(j, MDB_RDONLY, &txn);
    if (rc != 0) {
        return rc;
    }
    MDB_stat ms;
    MDB_envinfo info;
    MDB_stat env_ms;
    int mrc = mdb_stat(txn, j->dbi_entries, &ms);
    if (mrc == 0) {
        mrc = mdb_env_info(j->env, &info);
    }
    if (mrc == 0) {
        mrc = mdb_env_stat(j->env, &env_ms);
    }
    MDB_cursor *cur = NULL;
    if (mrc == 0) {
        mrc = mdb_cursor_open(txn, j->dbi_entries, &cur);
    }
    rc = s_rc(mrc);
    if (rc == 0 && ms.ms_entries > 0) {
        journal_entry_t first;
        journal_entry_t last;
        rc = s_cursor_decode(cur, MDB_FIRST, 0, &first, NULL);
        if (rc == 0) {
            rc = s_cursor_decode(cur, MDB_LAST, 0, &last, NULL);
        }
        if (rc == 0) {
            st.first_seq = first.seq;
            st.first_timestamp_us = first.timestamp_us;
            st.head_seq = last.seq;
            st.last_timestamp_us = last.timestamp_us;
            memcpy(st.head_hash, last.hash, JOURNAL_HASH_SIZE);
        }
    }
    if (cur != NULL) {
        mdb_cursor_close(cur);
    }
    /* mdb_env_info reads the newest meta page; this opener's snapshot is what we report. */
    s_txn_abort(j, &txn);
    if (rc != 0) {
        return rc;
    }
    st.entries = ms.ms_entries;
    st.entries_branch_pages = ms.ms_branch_pages;
    st.entries_leaf_pages = ms.ms_leaf_pages;
    st.entries_overflow_pages = ms.ms_overflow_pages;
    st.entries_depth = ms.ms_depth;
    st.page_size_bytes = env_ms.ms_psize;
    st.map_size_bytes = info.me_mapsize;
    st.map_used_bytes = ((uint64_t)info.me_last_pgno + 1) * env_ms.ms_psize;

    mdb_filehandle_t fd;
    mrc = mdb_env_get_fd(j->env, &fd);
    if (mrc != 0) {
        return s_rc(mrc);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        return -errno;
    }
    st.file_size_bytes = (uint64_t)sb.st_size;
    *out_stat = st;
    return 0;
}

int
journal_copy(journal_t *j, const char *dest_dir)
{
    assert(j != NULL && dest_dir != NULL);
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/data.mdb", dest_dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return -ENAMETOOLONG;
    }
    if (mkdir(dest_dir, 0700) != 0 && errno != EEXIST) {
        return -errno;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    /* The copy runs a read transaction (and, compacting, a helper thread) on our map. */
    s_map_rdlock(j);
    int rc = s_rc(mdb_env_copyfd2(j->env, fd, MDB_CP_COMPACT));
    s_map_rdunlock(j);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = journal_fsync_dir(dest_dir);
    }
    if (rc != 0) {
        unlink(path);
    }
    return rc;
}

const char *
journal_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case JOURNAL_END:
        return "end of journal";
    case JOURNAL_EGAP:
        return "append would leave a gap in the sequence numbers";
    case JOURNAL_ECORRUPT:
        return "journal entry is corrupt (bad key, length, version, flags or missing entry)";
    case JOURNAL_ECHAIN:
        return "journal hash chain mismatch";
    case JOURNAL_EVERSION:
        return "not a journal of a supported format version";
    case JOURNAL_EFULL:
        return "journal is full (disk full or maximum map size reached)";
    case JOURNAL_ENOTFOUND:
        return "no such journal, entry or range";
    case JOURNAL_EINVAL:
        return "invalid argument";
    case JOURNAL_EREADONLY:
        return "journal is opened read-only";
    case JOURNAL_ETOOBIG:
        return "entry, batch or payload too big";
    default:
        break;
    }
    if (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE) {
        return mdb_strerror(rc);
    }
    if (rc < 0 && rc > -4096) {
        return strerror(-rc);
    }
    return "unknown journal error";
}
