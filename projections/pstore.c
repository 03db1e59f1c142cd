/*
 * pstore.c: a projection's LMDB environment (see pstore.h).
 *
 * Meta values are big-endian so that a hex dump reads naturally and the digest does not depend
 * on the host. The map starts at PSTORE_MAP_SIZE_DEFAULT and doubles when a commit finds it
 * full; LMDB only allows that with no transaction open, which the single-threaded callers
 * guarantee between batches.
 */
#include "pstore.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "bytes.h"

#define S_META_DB        "meta"
#define S_KEY_NAME       "name"
#define S_KEY_SCHEMA     "schema"
#define S_KEY_CHECKPOINT "checkpoint"
#define S_DIR_MAX        4096

struct pstore {
    MDB_env *env;
    MDB_dbi meta;
    MDB_dbi dbis[PROJ_TABLES_MAX];
    char names[PROJ_TABLES_MAX][PROJ_NAME_MAX * 2 + 1];
    size_t tables_count;
    uint64_t map_size;
    bool no_sync;
    char dir[S_DIR_MAX];
};

static int
s_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t v)
{
    uint8_t b[8];
    cl_put_be64(b, v);
    MDB_val k = { strlen(key), (void *)(uintptr_t)key };
    MDB_val d = { sizeof(b), b };
    return mdb_put(txn, dbi, &k, &d, 0);
}

static int
s_put_str(MDB_txn *txn, MDB_dbi dbi, const char *key, const char *v)
{
    MDB_val k = { strlen(key), (void *)(uintptr_t)key };
    MDB_val d = { strlen(v), (void *)(uintptr_t)v };
    return mdb_put(txn, dbi, &k, &d, 0);
}

/* Reads an unsigned big-endian number of `width` bytes; PROJ_ECORRUPT for another width. */
static int
s_get_uint(MDB_txn *txn, MDB_dbi dbi, const char *key, size_t width, uint64_t *out)
{
    MDB_val k = { strlen(key), (void *)(uintptr_t)key };
    MDB_val d;
    int rc = mdb_get(txn, dbi, &k, &d);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? PROJ_ECORRUPT : rc;
    if (d.mv_size != width)
        return PROJ_ECORRUPT;
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = (v << 8) | ((const uint8_t *)d.mv_data)[i];
    *out = v;
    return 0;
}

int
pstore_meta_get(pstore_t *s, MDB_txn *txn, pstore_meta_t *out)
{
    assert(s != NULL && txn != NULL && out != NULL);
    pstore_meta_t m;
    memset(&m, 0, sizeof(m));
    MDB_val k = { strlen(S_KEY_NAME), (void *)(uintptr_t)S_KEY_NAME };
    MDB_val d;
    int rc = mdb_get(txn, s->meta, &k, &d);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? PROJ_ECORRUPT : rc;
    if (d.mv_size == 0 || d.mv_size > PROJ_NAME_MAX)
        return PROJ_ECORRUPT;
    memcpy(m.name, d.mv_data, d.mv_size);
    uint64_t schema = 0;
    rc = s_get_uint(txn, s->meta, S_KEY_SCHEMA, 4, &schema);
    if (rc == 0)
        rc = s_get_uint(txn, s->meta, S_KEY_CHECKPOINT, 8, &m.checkpoint);
    if (rc != 0)
        return rc;
    m.schema_version = (uint32_t)schema;
    *out = m;
    return 0;
}

int
pstore_meta_read(pstore_t *s, pstore_meta_t *out)
{
    MDB_txn *txn = NULL;
    int rc = pstore_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = pstore_meta_get(s, txn, out);
    pstore_read_end(&txn);
    return rc;
}

/* Opens the databases and, in a new environment, writes the meta records. */
static int
s_init(pstore_t *s, const char *name, uint32_t schema_version, pstore_meta_t *out_meta)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_dbi_open(txn, S_META_DB, MDB_CREATE, &s->meta);
    for (size_t i = 0; rc == 0 && i < s->tables_count; i++)
        rc = mdb_dbi_open(txn, s->names[i], MDB_CREATE, &s->dbis[i]);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    pstore_meta_t m;
    rc = pstore_meta_get(s, txn, &m);
    if (rc == PROJ_ECORRUPT) {
        /* A new environment (or one whose first transaction never committed). */
        MDB_stat st;
        rc = mdb_stat(txn, s->meta, &st);
        if (rc == 0 && st.ms_entries != 0)
            rc = PROJ_ECORRUPT;
        if (rc == 0)
            rc = s_put_str(txn, s->meta, S_KEY_NAME, name);
        uint8_t b[4] = { (uint8_t)(schema_version >> 24), (uint8_t)(schema_version >> 16),
                         (uint8_t)(schema_version >> 8), (uint8_t)schema_version };
        MDB_val k = { strlen(S_KEY_SCHEMA), (void *)(uintptr_t)S_KEY_SCHEMA };
        MDB_val d = { sizeof(b), b };
        if (rc == 0)
            rc = mdb_put(txn, s->meta, &k, &d, 0);
        if (rc == 0)
            rc = s_put_u64(txn, s->meta, S_KEY_CHECKPOINT, 0);
        if (rc == 0)
            rc = pstore_meta_get(s, txn, &m);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    if (rc == 0 && out_meta != NULL)
        *out_meta = m;
    return rc;
}

int
pstore_open(const char *dir, const char *name, uint32_t schema_version, const char *const *tables,
            size_t tables_count, bool no_sync, pstore_t **out, pstore_meta_t *out_meta)
{
    if (dir == NULL || name == NULL || out == NULL || tables_count > PROJ_TABLES_MAX ||
        strlen(name) == 0 || strlen(name) > PROJ_NAME_MAX || strlen(dir) >= S_DIR_MAX)
        return PROJ_EINVAL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    pstore_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return PROJ_ENOMEM;
    strcpy(s->dir, dir);
    s->tables_count = tables_count;
    s->no_sync = no_sync;
    for (size_t i = 0; i < tables_count; i++) {
        if (strlen(tables[i]) >= sizeof(s->names[i]) || strcmp(tables[i], S_META_DB) == 0) {
            free(s);
            return PROJ_EINVAL;
        }
        strcpy(s->names[i], tables[i]);
    }
    int rc = mdb_env_create(&s->env);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->map_size = PSTORE_MAP_SIZE_DEFAULT;
    rc = mdb_env_set_maxdbs(s->env, (MDB_dbi)(tables_count + 1));
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, s->map_size);
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, MDB_NORDAHEAD | (no_sync ? MDB_NOSYNC : 0), 0600);
    if (rc == 0) {
        /* The file may already be larger than our default (a previous run grew it). */
        MDB_envinfo info;
        rc = mdb_env_info(s->env, &info);
        if (rc == 0 && info.me_mapsize > s->map_size)
            s->map_size = info.me_mapsize;
    }
    if (rc == 0)
        rc = s_init(s, name, schema_version, out_meta);
    if (rc != 0) {
        mdb_env_close(s->env);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void
pstore_close(pstore_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    pstore_t *s = *sp;
    if (s->no_sync)
        mdb_env_sync(s->env, 1);
    mdb_env_close(s->env);
    free(s);
    *sp = NULL;
}

const char *
pstore_dir(const pstore_t *s)
{
    return s->dir;
}

MDB_dbi
pstore_dbi(const pstore_t *s, size_t i)
{
    assert(i < s->tables_count);
    return s->dbis[i];
}

int
pstore_write_begin(pstore_t *s, MDB_txn **out_txn)
{
    assert(s != NULL && out_txn != NULL);
    int rc = mdb_txn_begin(s->env, NULL, 0, out_txn);
    if (rc == MDB_MAP_RESIZED) {
        rc = mdb_env_set_mapsize(s->env, 0);
        if (rc == 0)
            rc = mdb_txn_begin(s->env, NULL, 0, out_txn);
    }
    return rc;
}

int
pstore_write_commit(pstore_t *s, MDB_txn **txn, uint64_t checkpoint)
{
    assert(s != NULL && txn != NULL && *txn != NULL);
    int rc = s_put_u64(*txn, s->meta, S_KEY_CHECKPOINT, checkpoint);
    if (rc != 0) {
        mdb_txn_abort(*txn);
        *txn = NULL;
        return rc;
    }
    rc = mdb_txn_commit(*txn); /* frees the transaction whatever happens */
    *txn = NULL;
    if (rc == 0 && s->no_sync) {
        /* Nothing waits for these pages until pstore_close() syncs them: start writing them to
         * the disk now, while the fold goes on, so that the final sync finds little left to do
         * (a replay's three syncs took 0.2 s at its end). A hint: its failure changes nothing. */
        int fd;
        if (mdb_env_get_fd(s->env, &fd) == 0)
            (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    return rc;
}

void
pstore_write_abort(pstore_t *s, MDB_txn **txn)
{
    (void)s;
    if (txn == NULL || *txn == NULL)
        return;
    mdb_txn_abort(*txn);
    *txn = NULL;
}

int
pstore_grow(pstore_t *s)
{
    if (s->map_size >= PSTORE_MAP_SIZE_MAX)
        return MDB_MAP_FULL;
    uint64_t size = s->map_size * 2;
    int rc = mdb_env_set_mapsize(s->env, size);
    if (rc == 0)
        s->map_size = size;
    return rc;
}

int
pstore_read_begin(pstore_t *s, MDB_txn **out_txn)
{
    assert(s != NULL && out_txn != NULL);
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, out_txn);
    if (rc == MDB_MAP_RESIZED) {
        rc = mdb_env_set_mapsize(s->env, 0);
        if (rc == 0)
            rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, out_txn);
    }
    return rc;
}

int
pstore_query_begin(pstore_t *s, MDB_txn **out_txn, uint64_t *out_as_of)
{
    assert(out_as_of != NULL);
    int rc = pstore_read_begin(s, out_txn);
    if (rc != 0)
        return rc;
    pstore_meta_t meta;
    rc = pstore_meta_get(s, *out_txn, &meta);
    if (rc != 0) {
        pstore_read_end(out_txn);
        return rc;
    }
    *out_as_of = meta.checkpoint;
    return 0;
}

void
pstore_read_end(MDB_txn **txn)
{
    if (txn == NULL || *txn == NULL)
        return;
    mdb_txn_abort(*txn);
    *txn = NULL;
}

static int
s_digest_db(XXH3_state_t *st, MDB_txn *txn, MDB_dbi dbi, const char *name)
{
    XXH3_128bits_update(st, name, strlen(name) + 1);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t len[8];
        cl_put_le64(len, k.mv_size);
        XXH3_128bits_update(st, len, sizeof(len));
        XXH3_128bits_update(st, k.mv_data, k.mv_size);
        cl_put_le64(len, v.mv_size);
        XXH3_128bits_update(st, len, sizeof(len));
        XXH3_128bits_update(st, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int
pstore_digest(pstore_t *s, uint8_t out[16])
{
    XXH3_state_t *st = XXH3_createState();
    if (st == NULL)
        return PROJ_ENOMEM;
    XXH3_128bits_reset(st);
    MDB_txn *txn = NULL;
    int rc = pstore_read_begin(s, &txn);
    if (rc == 0)
        rc = s_digest_db(st, txn, s->meta, S_META_DB);
    for (size_t i = 0; rc == 0 && i < s->tables_count; i++)
        rc = s_digest_db(st, txn, s->dbis[i], s->names[i]);
    pstore_read_end(&txn);
    if (rc == 0) {
        XXH128_canonical_t canon;
        XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
        memcpy(out, canon.digest, 16);
    }
    XXH3_freeState(st);
    return rc;
}
