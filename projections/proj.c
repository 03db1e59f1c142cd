/*
 * proj.c: projection instances, batches, keys, days and the valuation rule (see proj.h).
 *
 * A batch is one write transaction on the instance's environment: proj_batch_begin() opens it
 * and binds the cache to it (cache misses read through it), proj_batch_apply() folds events
 * into the cache, proj_batch_commit() writes the changed records and the checkpoint and
 * commits. The transaction stays open while the batch folds; that is fine because nobody else
 * writes the environment, and readers (queries) are never blocked by an LMDB writer.
 */
#include "proj.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "clcheck.h"
#include "journal.h"
#include "pcache.h"
#include "pstore.h"

struct proj {
    const proj_def_t *def;
    pstore_t *store;
    pcache_t *cache;
    MDB_txn *txn;            /* the open batch, or NULL */
    uint32_t schema_version; /* the environment's */
    uint64_t checkpoint;     /* last applied sequence, as committed */
    uint64_t batch_seq;      /* last sequence applied in the open batch */
    int error;               /* sticky: a fold error stops this instance */
    uint64_t error_seq;
    size_t cache_bytes_max;
};

const char *
proj_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case PROJ_EINVAL:
        return "projections: invalid argument";
    case PROJ_ENOMEM:
        return "projections: out of memory";
    case PROJ_EMISMATCH:
        return "projections: an event does not fit the projection (corrupt journal or a bug)";
    case PROJ_EOVERFLOW:
        return "projections: a sum would overflow int64";
    case PROJ_ESCHEMA:
        return "projections: the environment holds another projection";
    case PROJ_ECORRUPT:
        return "projections: a stored record has the wrong shape";
    case PROJ_ENOTFOUND:
        return "projections: not found";
    case PROJ_ELIMIT:
        return "projections: a key or value is over its limit";
    case PROJ_EJOURNAL:
        return "projections: the journal could not be read";
    default:
        break;
    }
    if (rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE)
        return mdb_strerror(rc);
    if (rc <= JOURNAL_ERRCODE_LAST && rc >= JOURNAL_ERRCODE_FIRST)
        return journal_strerror(rc);
    if (rc < 0 && rc > -4096)
        return strerror(-rc);
    return "projections: unknown error";
}

/* ---- Definitions -------------------------------------------------------------------------- */

const proj_def_t *
proj_def_at(size_t i)
{
    static const proj_def_t *const defs[PROJ_COUNT] = { &balances_def, &stores_def,
                                                        &analytics_def };
    return i < PROJ_COUNT ? defs[i] : NULL;
}

const proj_def_t *
proj_def_find(const char *name)
{
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        if (name != NULL && strcmp(proj_def_at(i)->name, name) == 0)
            return proj_def_at(i);
    }
    return NULL;
}

/* ---- Instances ---------------------------------------------------------------------------- */

int
proj_open(const proj_def_t *def, const char *dir, const proj_opts_t *opts, proj_t **out)
{
    if (def == NULL || dir == NULL || out == NULL || def->tables_count > PROJ_TABLES_MAX)
        return PROJ_EINVAL;
    uint32_t schema =
        opts != NULL && opts->schema_version != 0 ? opts->schema_version : def->schema_version;
    const char *names[PROJ_TABLES_MAX];
    for (size_t i = 0; i < def->tables_count; i++)
        names[i] = def->tables[i].name;
    proj_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return PROJ_ENOMEM;
    p->def = def;
    p->cache_bytes_max = opts != NULL && opts->cache_bytes_max != 0 ? opts->cache_bytes_max
                                                                    : PROJ_CACHE_BYTES_DEFAULT;
    pstore_meta_t meta;
    int rc = pstore_open(dir, def->name, schema, names, def->tables_count,
                         opts != NULL && opts->no_sync, &p->store, &meta);
    if (rc == 0 && strcmp(meta.name, def->name) != 0)
        rc = PROJ_ESCHEMA;
    if (rc == 0)
        rc = pcache_new(def->tables, def->tables_count, &p->cache);
    if (rc != 0) {
        pstore_close(&p->store);
        free(p);
        return rc;
    }
    p->schema_version = meta.schema_version;
    p->checkpoint = meta.checkpoint;
    /* Checkpoint 0: no batch was ever committed, so the tables are empty and the cache knows
     * everything the environment holds. */
    pcache_set_complete(p->cache, meta.checkpoint == 0);
    *out = p;
    return 0;
}

void
proj_close(proj_t **pp)
{
    if (pp == NULL || *pp == NULL)
        return;
    proj_t *p = *pp;
    if (p->txn != NULL)
        proj_batch_abort(p);
    pcache_destroy(&p->cache);
    pstore_close(&p->store);
    free(p);
    *pp = NULL;
}

const proj_def_t *
proj_def(const proj_t *p)
{
    return p->def;
}

uint64_t
proj_checkpoint(const proj_t *p)
{
    return p->checkpoint;
}

uint32_t
proj_schema(const proj_t *p)
{
    return p->schema_version;
}

int
proj_error(const proj_t *p, uint64_t *out_seq)
{
    if (out_seq != NULL)
        *out_seq = p->error_seq;
    return p->error;
}

bool
proj_stopped(const proj_t *p)
{
    return p->error != 0 && p->checkpoint + 1 >= p->error_seq;
}

uint64_t
proj_limit(const proj_t *p)
{
    return p->error != 0 ? p->error_seq - 1 : UINT64_MAX;
}

pstore_t *
proj_store(proj_t *p)
{
    return p->store;
}

static void
s_bind(proj_t *p)
{
    MDB_dbi dbis[PROJ_TABLES_MAX];
    for (size_t i = 0; i < p->def->tables_count; i++)
        dbis[i] = pstore_dbi(p->store, i);
    pcache_bind(p->cache, p->txn, dbis);
}

int
proj_batch_begin(proj_t *p)
{
    assert(p != NULL && p->txn == NULL);
    if (proj_stopped(p))
        return p->error;
    int rc = pstore_write_begin(p->store, &p->txn);
    if (rc != 0)
        return rc;
    p->batch_seq = p->checkpoint;
    s_bind(p);
    return 0;
}

int
proj_batch_apply(proj_t *p, const cl_event_t *ev)
{
    assert(p != NULL && ev != NULL && p->txn != NULL);
    /* Always on: folding an event twice or out of order would corrupt the projection. */
    CL_CHECK(ev->seq > p->batch_seq && ev->seq <= proj_limit(p));
    int rc = p->def->apply(p->cache, ev);
    if (rc == 0)
        rc = pcache_error(p->cache);
    if (rc != 0) {
        if (p->error == 0 || ev->seq < p->error_seq) {
            p->error = rc;
            p->error_seq = ev->seq;
        }
        return rc;
    }
    p->batch_seq = ev->seq;
    return 0;
}

void
proj_batch_prefetch(const proj_t *p, const cl_event_t *ev, int stage)
{
    if (p->def->prefetch != NULL && p->txn != NULL)
        p->def->prefetch(p->cache, ev, stage);
}

void
proj_batch_abort(proj_t *p)
{
    pcache_bind(p->cache, NULL, NULL);
    pstore_write_abort(p->store, &p->txn);
    pcache_reset(p->cache);
    p->batch_seq = p->checkpoint;
}

int
proj_batch_commit(proj_t *p, uint64_t seq)
{
    assert(p != NULL && p->txn != NULL);
    CL_CHECK(seq >= p->checkpoint && seq <= proj_limit(p));
    int rc = pcache_error(p->cache);
    for (int tries = 0; rc == 0; tries++) {
        MDB_dbi dbis[PROJ_TABLES_MAX];
        for (size_t i = 0; i < p->def->tables_count; i++)
            dbis[i] = pstore_dbi(p->store, i);
        rc = pcache_write(p->cache, p->txn, dbis);
        if (rc == 0)
            rc = pstore_write_commit(p->store, &p->txn, seq);
        if (rc != MDB_MAP_FULL || tries > 40)
            break;
        /* The map is full: nothing of this attempt is on disk. Grow and write again; the
         * changed set is still in the cache and reads (already cached) need no transaction. */
        pcache_bind(p->cache, NULL, NULL);
        pstore_write_abort(p->store, &p->txn);
        rc = pstore_grow(p->store);
        if (rc == 0)
            rc = pstore_write_begin(p->store, &p->txn);
    }
    if (rc != 0) {
        proj_batch_abort(p);
        return rc;
    }
    pcache_bind(p->cache, NULL, NULL);
    pcache_committed(p->cache, p->cache_bytes_max);
    p->checkpoint = seq;
    p->batch_seq = seq;
    return 0;
}

int
proj_digest(proj_t *p, uint8_t out[16])
{
    assert(p != NULL && p->txn == NULL);
    return pstore_digest(p->store, out);
}

void
proj_digest_hex(const uint8_t digest[16], char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[32] = '\0';
}

/* ---- Keys --------------------------------------------------------------------------------- */

uint64_t
proj_get_u64(const uint8_t *p)
{
    return cl_get_be64(p);
}

uint32_t
proj_get_u32(const uint8_t *p)
{
    return cl_get_be32(p);
}

int64_t
proj_get_i64(const uint8_t *p)
{
    return (int64_t)(proj_get_u64(p) ^ (1ull << 63));
}

int32_t
proj_get_i32(const uint8_t *p)
{
    return (int32_t)(proj_get_u32(p) ^ (1u << 31));
}

/* ---- Time --------------------------------------------------------------------------------- */

int32_t
proj_day(int64_t at_us)
{
    int64_t d = at_us / PROJ_US_PER_DAY;
    if (at_us % PROJ_US_PER_DAY < 0)
        d--;
    if (d > INT32_MAX)
        return INT32_MAX;
    if (d < INT32_MIN)
        return INT32_MIN;
    return (int32_t)d;
}

int64_t
proj_day_start_us(int32_t day)
{
    return (int64_t)day * PROJ_US_PER_DAY;
}

bool
proj_day_range(int64_t from_us, int64_t to_us, int32_t *out_first, int32_t *out_last)
{
    int32_t first = from_us == 0 ? INT32_MIN : proj_day(from_us);
    int32_t last = to_us == 0 ? INT32_MAX : proj_day(to_us - 1);
    if (to_us != 0 && to_us <= from_us)
        return false;
    *out_first = first;
    *out_last = last;
    return first <= last;
}

void
proj_day_str(int32_t day, char out[16])
{
    /* Howard Hinnant's civil_from_days. */
    int64_t z = (int64_t)day + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    unsigned yy = y < 0 ? 0u : y > 9999 ? 9999u : (unsigned)y;
    unsigned mm = (unsigned)m % 13u, dd = (unsigned)d % 32u;
    snprintf(out, 16, "%04u-%02u-%02u", yy, mm, dd);
}

/* ---- Valuation and small helpers ---------------------------------------------------------- */

void
proj_prefetch_card(const pcache_t *c, size_t cards_table, const cl_event_t *ev, int stage)
{
    if (stage > 1)
        return;
    uint64_t card_id = cl_event_card_id(ev);
    if (card_id == 0 || ev->type == CL_EV_CARD_ISSUED)
        return;
    uint8_t key[8];
    cl_put_be64(key, card_id);
    pcache_prefetch(c, cards_table, key, sizeof(key), stage);
}

int64_t
proj_value(cl_kind_t kind, int64_t face_minor, uint32_t uses_total, int64_t balance_minor,
           uint32_t uses_left)
{
    return cl_card_value_minor(kind, face_minor, balance_minor, uses_left, uses_total);
}

void
proj_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, cap - n);
}

void
proj_copy_region_place(char *dst, size_t cap, const char *region)
{
    static const char prefix[] = "region:";
    size_t n = sizeof(prefix) - 1 < cap - 1 ? sizeof(prefix) - 1 : cap - 1;
    memcpy(dst, prefix, n);
    proj_copy(dst + n, cap - n, region[0] != '\0' ? region : "-");
}

const char *
proj_channel_name(cl_channel_t channel)
{
    switch (channel) {
    case CL_CHANNEL_ONLINE:
        return "online";
    case CL_CHANNEL_STORE:
        return "store";
    case CL_CHANNEL_ENTERPRISE:
        return "enterprise";
    case CL_CHANNEL_PLATFORM:
        return "platform";
    default:
        return "unspecified";
    }
}
