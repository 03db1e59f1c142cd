/*
 * proj: what every projection of the projector shares.
 *
 * A projection folds journal events into its own LMDB environment (pstore.h) through an
 * in-memory record cache (pcache.h): the fold changes records in the cache, and at the end of a
 * batch the changed records are written with the checkpoint in one transaction. A projection
 * is described by a proj_def_t (its name, schema version, named databases and fold function);
 * balances.c, stores.c and analytics.c each export one. proj_t is one open instance of a
 * definition on one environment; fold.c drives instances over the journal and pset.c decides
 * which environment is active (blue/green).
 *
 * This header also holds the error codes of every projections/ module except the ledger's, the
 * key helpers (big-endian integers, NUL-joined ids) that keep LMDB's byte order equal to the
 * order queries scan in, and the valuation rule that the balances, stores and analytics folds
 * all use, so their figures reconcile to the minor unit.
 *
 * Nothing here touches a socket; only projector.c and query-server.c include zmq.h.
 */
#ifndef CARDLEDGER_PROJ_H
#define CARDLEDGER_PROJ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lmdb.h>

#include "bytes.h"
#include "clcheck.h"
#include "domain.h"

/* ---- Errors ------------------------------------------------------------------------------- */

/* The projections' own range, clear of errno, LMDB (-30799..-30780), the journal (-31000..),
 * the codec (-32000..), the ledger (-33000..) and decide (-34000..). MDB_* codes and negated
 * errno values pass through the projections modules unchanged; proj_strerror() names them. */
#define PROJ_EBASE     (-35000)
#define PROJ_EINVAL    (-35001) /* an argument out of its domain */
#define PROJ_ENOMEM    (-35002) /* an allocation failed */
#define PROJ_EMISMATCH (-35003) /* an event does not fit the projection (corrupt journal, bug) */
#define PROJ_EOVERFLOW (-35004) /* an int64 sum would overflow; the batch is not written */
#define PROJ_ESCHEMA   (-35005) /* the environment holds another projection or schema */
#define PROJ_ECORRUPT  (-35006) /* a stored record has the wrong size or shape */
#define PROJ_ENOTFOUND (-35007) /* no such card, store, environment, ... */
#define PROJ_ELIMIT    (-35008) /* a key or value over its named maximum */
#define PROJ_EJOURNAL  (-35009) /* the journal could not be read (see the log for why) */

/* A sentence for any code the projections modules return (theirs, MDB_*, -errno). Static. */
const char *proj_strerror(int rc);

/* ---- Limits ------------------------------------------------------------------------------- */

#define PROJ_NAME_MAX   16   /* projection names: "balances", "stores", "analytics" */
#define PROJ_TABLES_MAX 12   /* named databases of one projection, the meta database excluded */
#define PROJ_KEY_MAX    160  /* longest key of any table (LMDB's default limit is 511) */
#define PROJ_VAL_MAX    1024 /* longest value of any table */

/* ---- Definitions and instances ------------------------------------------------------------ */

typedef struct pcache pcache_t;
typedef struct pstore pstore_t;

/* One table of a projection: an LMDB named database and its cache limits. */
typedef struct proj_table_def {
    const char *name; /* the LMDB database name */
    uint16_t key_max; /* longest key */
    uint32_t val_max; /* longest value */
    /* Records the fold writes once (by pcache_insert()) and rarely reads back: the cache
     * forgets them after every commit instead of keeping them (redemption lines, codes, ...). */
    bool write_once;
} proj_table_def_t;

/*
 * A projection: its name, the schema version of its records (bumped whenever a record layout
 * or the meaning of a figure changes: a different version is rebuilt from sequence 0), its
 * tables, and its fold. apply() changes records only through the cache (pcache_get, pcache_put,
 * pcache_del on the table indexes of `tables`); it returns 0, PROJ_EMISMATCH, PROJ_EOVERFLOW,
 * PROJ_ENOMEM, or a read error of the cache. After an error the batch is thrown away.
 */
typedef struct proj_def {
    const char *name;
    uint32_t schema_version;
    const proj_table_def_t *tables;
    size_t tables_count;
    int (*apply)(pcache_t *cache, const cl_event_t *ev);
    /* Optional: pcache_prefetch() the records apply() will want for ev (see fold.c): stage 0
     * and 1 as pcache_prefetch()'s, stage 2 (a few events before the fold, when the records of
     * stage 1 are in cache) for the records they name, found with pcache_peek(). */
    void (*prefetch)(const pcache_t *cache, const cl_event_t *ev, int stage);
} proj_def_t;

/* The three projections, in the fixed order of status replies and digests. */
extern const proj_def_t balances_def;
extern const proj_def_t stores_def;
extern const proj_def_t analytics_def;

#define PROJ_COUNT 3
/* The definitions in order: balances, stores, analytics. */
const proj_def_t *proj_def_at(size_t i);
/* The definition named `name`, or NULL. */
const proj_def_t *proj_def_find(const char *name);

/* Options of an instance. */
typedef struct proj_opts {
    uint32_t schema_version; /* 0 = def->schema_version (tests bump it: --schema-bump) */
    bool no_sync;            /* MDB_NOSYNC: for rebuilds and the replay tool, synced at close */
    size_t cache_bytes_max;  /* clean records are dropped above this; 0 = the default */
} proj_opts_t;

#define PROJ_CACHE_BYTES_DEFAULT (1024ull * 1024 * 1024)

/* One projection on one environment: the store, the cache and where the fold stands. */
typedef struct proj proj_t;

/*
 * Opens (creating when missing) the environment in `dir` for `def`. A new environment records
 * the name and the schema version (opts->schema_version or the definition's). An existing one
 * must hold the same projection (PROJ_ESCHEMA otherwise); its schema version may differ from
 * the code's (the caller decides what to do: pset.c rebuilds), and is in out->schema_version.
 * Returns 0, PROJ_ESCHEMA, PROJ_ENOMEM, an MDB_* code or -errno; *out untouched on failure.
 */
int proj_open(const proj_def_t *def, const char *dir, const proj_opts_t *opts, proj_t **out);

/* Closes the instance (syncing a no_sync environment) and clears the pointer. NULL is fine. */
void proj_close(proj_t **p);

/* Begins a batch: a write transaction that cache misses read through. Returns 0, the error
 * of a stopped instance, or MDB_*. */
int proj_batch_begin(proj_t *p);

/* Folds one event (checkpoint < seq <= proj_limit(), in order) into the cache. Returns as
 * def->apply; after a failure the caller aborts the batch (proj_batch_abort()). */
int proj_batch_apply(proj_t *p, const cl_event_t *ev);

/* Hints that ev will be folded soon (stage 0, 1, then 2; see proj_def_t.prefetch). */
void proj_batch_prefetch(const proj_t *p, const cl_event_t *ev, int stage);

/*
 * The prefetch hook of a projection whose cards live in table cards_table under
 * proj_key_of_u64(card_id): hints the record of the card ev concerns (cl_event_card_id(); the
 * from card of a transfer). Events without a card, and CardIssued, which creates its card,
 * hint nothing; nor does stage 2. Never changes anything.
 */
void proj_prefetch_card(const pcache_t *c, size_t cards_table, const cl_event_t *ev, int stage);

/*
 * Ends a batch: writes every changed record and the checkpoint `seq` in the batch's
 * transaction and commits it (growing the map and retrying when it is full). On failure the
 * transaction is aborted, nothing of the batch is on disk and the cache is reset, so the next
 * batch starts again from the committed checkpoint. Returns 0, or an MDB_* code, PROJ_E*.
 */
int proj_batch_commit(proj_t *p, uint64_t seq);

/* Throws a batch away: aborts its transaction and resets the cache. */
void proj_batch_abort(proj_t *p);

/* Accessors. The checkpoint is the last sequence committed; the schema version is the one the
 * environment records; error is the sticky fold error of this instance (0 = none), error_seq
 * the event it failed on. An instance with an error still folds (again) the events before
 * error_seq, whose batch was thrown away with the failing event, and then stops there:
 * proj_stopped() says when it got there, proj_limit() is the last sequence it may fold. */
const proj_def_t *proj_def(const proj_t *p);
uint64_t proj_checkpoint(const proj_t *p);
uint32_t proj_schema(const proj_t *p);
int proj_error(const proj_t *p, uint64_t *out_seq);
bool proj_stopped(const proj_t *p);
uint64_t proj_limit(const proj_t *p);
/* The environment, for the projection's own query functions (read transactions). */
pstore_t *proj_store(proj_t *p);

/* XXH3-128 over every key and value of every database (meta included), in LMDB order. */
int proj_digest(proj_t *p, uint8_t out[16]);

/* Formats a 16-byte digest as 32 lower-case hex digits plus NUL. */
void proj_digest_hex(const uint8_t digest[16], char out[33]);

/* ---- Keys --------------------------------------------------------------------------------- */

/*
 * A key being built: bytes and length. Only the first n bytes are the key: proj_key_start()
 * sets n to 0 and leaves the bytes as they are, since zeroing all PROJ_KEY_MAX of them for
 * every key (several per event in a fold) cost more than building the key itself.
 */
typedef struct proj_key {
    uint8_t b[PROJ_KEY_MAX];
    size_t n;
} proj_key_t;

/* The builders are inline: a fold builds several keys per event, and each is a few stores. */
static inline void
proj_key_start(proj_key_t *k)
{
    k->n = 0;
}

static inline void
proj_key_bytes(proj_key_t *k, const void *b, size_t n)
{
    CL_CHECK(k->n <= sizeof(k->b) && n <= sizeof(k->b) - k->n);
    memcpy(k->b + k->n, b, n);
    k->n += n;
}

/* Appends a string and its terminating NUL (so "ab" sorts before "abc" and no id is a prefix
 * of another's key), a big-endian u64/u32, a day, one byte. Lengths are bounded by the
 * callers' named limits; an overlong key trips an always-on check. */
static inline void
proj_key_str(proj_key_t *k, const char *s)
{
    proj_key_bytes(k, s, strlen(s) + 1);
}

static inline void
proj_key_u64(proj_key_t *k, uint64_t v)
{
    uint8_t b[8];
    cl_put_be64(b, v);
    proj_key_bytes(k, b, sizeof(b));
}

static inline void
proj_key_u32(proj_key_t *k, uint32_t v)
{
    uint8_t b[4];
    cl_put_be32(b, v);
    proj_key_bytes(k, b, sizeof(b));
}

static inline void
proj_key_u8(proj_key_t *k, uint8_t v)
{
    proj_key_bytes(k, &v, 1);
}

/* A signed time or day, biased so that LMDB's byte order is numeric order. */
static inline void
proj_key_i64(proj_key_t *k, int64_t v)
{
    proj_key_u64(k, (uint64_t)v ^ (1ull << 63));
}

static inline void
proj_key_i32(proj_key_t *k, int32_t v)
{
    proj_key_u32(k, (uint32_t)v ^ (1u << 31));
}

/* A key of one big-endian u64 (a card id, a sequence number): the commonest key of all. */
static inline proj_key_t
proj_key_of_u64(uint64_t v)
{
    proj_key_t k;
    proj_key_start(&k);
    proj_key_u64(&k, v);
    return k;
}

uint64_t proj_get_u64(const uint8_t *p);
uint32_t proj_get_u32(const uint8_t *p);
int64_t proj_get_i64(const uint8_t *p);
int32_t proj_get_i32(const uint8_t *p);

/* ---- Time --------------------------------------------------------------------------------- */

#define PROJ_US_PER_DAY (86400LL * 1000000LL)

/* The UTC day of a time: days since 1970-01-01, rounded down (negative before 1970). */
int32_t proj_day(int64_t at_us);
/* The first microsecond of a day. */
int64_t proj_day_start_us(int32_t day);
/* The UTC days a query range [from_us, to_us) touches, inclusive: from_us 0 means from the
 * beginning, to_us 0 means without end. Returns false when the range is empty. */
bool proj_day_range(int64_t from_us, int64_t to_us, int32_t *out_first, int32_t *out_last);
/* "YYYY-MM-DD" of a day (out has room for 11 bytes; years beyond 9999 are clamped). */
void proj_day_str(int32_t day, char out[16]);

/* ---- Valuation ---------------------------------------------------------------------------- */

/*
 * The liability value of a card, the one rule every projection uses (docs/analytics.md):
 *   - stored value: its balance;
 *   - punch cards and vouchers: face x uses_left / uses_total, rounded down, where uses_total
 *     is the uses the card was issued with (CardIssued.uses); the rule decide_timer() uses for
 *     breakage. uses_total 0 values the card at 0.
 * face and uses are within the ledger's limits (1e11 x 1e4 fits in int64); the product is
 * computed in 128 bits anyway so that a foreign journal cannot overflow it. The rule itself is
 * cl_card_value_minor() (proto/domain.h); this keeps the projections' argument order.
 */
int64_t proj_value(cl_kind_t kind, int64_t face_minor, uint32_t uses_total, int64_t balance_minor,
                   uint32_t uses_left);

/* Whether the kind holds a balance (stored value) rather than uses. */
static inline bool
proj_kind_is_value(cl_kind_t kind)
{
    return kind == CL_KIND_STORED_VALUE;
}

static inline bool
proj_kind_is_voucher(cl_kind_t kind)
{
    return kind >= CL_KIND_VOUCHER_THRESHOLD && kind <= CL_KIND_VOUCHER_EXCHANGE;
}

/* Checked int64 addition into *acc; false (and *acc unchanged) on overflow. */
static inline bool
proj_add(int64_t *acc, int64_t v)
{
    int64_t r;
    if (__builtin_add_overflow(*acc, v, &r))
        return false;
    *acc = r;
    return true;
}

/* Copies a string into a fixed array, zero-filling the rest (records compare bytewise). */
void proj_copy(char *dst, size_t cap, const char *src);
#define PROJ_COPY(dst, src) proj_copy((dst), sizeof(dst), (src))

/* Copies the place a card sold without a store is booked under, "region:<code>" ("region:-"
 * for none), as proj_copy() does: cut to the array, the rest zero-filled. */
void proj_copy_region_place(char *dst, size_t cap, const char *region);
#define PROJ_COPY_REGION_PLACE(dst, region) proj_copy_region_place((dst), sizeof(dst), (region))

/* The name of a channel as analytics keys use it ("online", "store", ...; "unspecified"). */
const char *proj_channel_name(cl_channel_t channel);

#endif /* CARDLEDGER_PROJ_H */
