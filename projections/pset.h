/*
 * pset: the projector's data directory: which environment of each projection answers, and the
 * blue/green rebuilds.
 *
 * Layout (docs/projections.md):
 *   DATA/lock                    flock()ed by the one process using the directory
 *   DATA/<name>/ACTIVE           one line: the directory of the environment that answers
 *   DATA/<name>/s<schema>-g<gen> an LMDB environment of that schema version and generation
 *
 * At open, a projection whose active environment records the code's schema version folds on
 * (the "live" set, sharing one journal reader). When the versions differ, or when an operator
 * asks with pset_rebuild(), a new environment (generation + 1, the code's version) is built from
 * sequence 0 beside the active one, by its own fold, while the active one keeps answering (an
 * active environment of another version no longer folds: the code to fold it is gone). Once the
 * new environment has caught up with the journal's head, ACTIVE is replaced atomically (write,
 * fsync, rename, fsync the directory) and the old environment is deleted. A crash at any point
 * leaves either the old or the new environment active, and a half-built one is resumed from its
 * own checkpoint at the next start.
 *
 * Not thread-safe: the projector's loop and the replay tool each use a set from one thread.
 */
#ifndef CARDLEDGER_PSET_H
#define CARDLEDGER_PSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fold.h"
#include "journal.h"
#include "proj.h"

typedef struct pset pset_t;

typedef struct pset_opts {
    /* Added to the code's schema version of each projection (in proj_def_at() order): the
     * hidden --schema-bump flag, so tests can force a blue/green rebuild without recompiling. */
    uint32_t schema_bump[PROJ_COUNT];
    bool no_sync;           /* MDB_NOSYNC everywhere (the replay tool; synced at close) */
    size_t cache_bytes_max; /* per instance; 0 = PROJ_CACHE_BYTES_DEFAULT */
    /* Most events per second a rebuild folds (0 = as fast as it goes): an operator can keep a
     * rebuild from competing with the live fold and the daemon for the disk. */
    uint64_t rebuild_events_per_s;
} pset_opts_t;

/* Where a projection stands. */
typedef struct pset_status {
    const char *name;
    uint32_t code_schema_version; /* what this build folds */
    uint32_t schema_version;      /* the active environment's */
    uint64_t checkpoint;          /* the active environment's */
    bool frozen;                  /* the active environment is of another version */
    int error;                    /* the active environment's sticky fold error, or 0 */
    uint64_t error_seq;
    bool rebuilding;
    uint32_t rebuild_schema_version;
    uint64_t rebuild_checkpoint;
    uint64_t rebuild_events_per_s; /* recent rate */
    uint64_t rebuild_eta_s;        /* (head - rebuild_checkpoint) / rate; 0 when unknown */
} pset_status_t;

/* What one round did. */
typedef struct pset_round {
    uint64_t live_events;    /* events the live set folded */
    uint64_t rebuild_events; /* events the rebuilds folded */
    size_t takeovers;        /* rebuilt environments that became active */
    bool behind;             /* some healthy environment is still behind to_seq (or the head) */
    bool throttled;          /* a rebuild waits for its rate (rebuild_events_per_s) */
} pset_round_t;

/*
 * Opens (creating) the data directory `dir`, locks it, and opens or creates every projection's
 * active environment, starting rebuilds where the schema differs. The journal must outlive the
 * set. Returns 0, -EWOULDBLOCK (another process holds the directory), PROJ_E*, MDB_* or -errno.
 */
int pset_open(const char *dir, journal_t *j, const pset_opts_t *opts, pset_t **out);

/* Closes every environment, unlocks the directory, clears the pointer; NULL is fine. */
void pset_close(pset_t **s);

/*
 * One round: the live set folds one step, then every rebuild folds one step (each at most
 * events_max events and budget_ns / 2 when budget_ns is not 0, up to to_seq, 0 = the head);
 * then every rebuild that has reached the head (or to_seq) takes over. Returns 0, or the first
 * error of a step or a takeover (the round still did what it could; errors are also logged).
 */
int pset_step(pset_t *s, uint64_t to_seq, size_t events_max, uint64_t budget_ns, pset_round_t *out);

/* Starts a rebuild of the named projection at the code's version (a no-op when one runs).
 * Returns 0, PROJ_ENOTFOUND (no such projection), or an error opening the environment. */
int pset_rebuild(pset_t *s, const char *name);

/* The active instance of projection i (proj_def_at() order): what queries read. */
proj_t *pset_active(pset_t *s, size_t i);

/* Where projection i stands; head is the journal's head (for the ETA). */
void pset_status(const pset_t *s, size_t i, uint64_t head, pset_status_t *out);

#endif /* CARDLEDGER_PSET_H */
