/*
 * fold: reads the journal and folds its events into a set of projection instances, in batches.
 *
 * A fold owns one journal reader positioned after the lowest checkpoint of its instances. A
 * step reads up to a named number of events (or until a time budget runs out), decodes each
 * JournalEntry once with proto/codec (codec_event_decode, the one translation layer) and hands
 * it to every instance that has not folded it yet; then each instance commits its batch with
 * the checkpoint. The journal reader never keeps a read transaction open between calls (each
 * refill is a short transaction, journal.h), so a fold that pauses pins no pages of the
 * daemon's journal.
 *
 * The projector's live projections share one fold; a projection being rebuilt (blue/green)
 * has its own. The offline replay tool runs the very same steps.
 */
#ifndef CARDLEDGER_FOLD_H
#define CARDLEDGER_FOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "proj.h"

/* Most instances one fold drives. */
#define FOLD_PROJS_MAX 8
/* Events one step folds by default: large enough that a rebuild writes each hot record once
 * per many events, small enough that the batch's cache stays modest. */
#define FOLD_BATCH_EVENTS_DEFAULT 262144u
/* Longest a batch stays open over time-boxed steps before it is committed anyway: how stale
 * queries may be, and how much progress a crash may lose, while a fold catches up. */
#define FOLD_COMMIT_INTERVAL_MS 1000u

typedef struct fold fold_t;

/* What one step did. */
typedef struct fold_step_stats {
    uint64_t events;     /* events read from the journal and folded */
    uint64_t last_seq;   /* the last of them (0 when none) */
    uint64_t skipped;    /* events of a type this build does not know (folded as no-ops) */
    uint64_t elapsed_ns; /* time the step took, commits included */
} fold_step_stats_t;

/* Creates a fold over the journal for n instances (0 .. FOLD_PROJS_MAX). The journal and the
 * instances must outlive the fold. Returns 0, PROJ_EINVAL, PROJ_ENOMEM. */
int fold_new(journal_t *j, proj_t *const *projs, size_t n, fold_t **out);

/* Frees the fold (not the instances) and clears the pointer; NULL is fine. */
void fold_destroy(fold_t **f);

/* Replaces the instances the fold drives (the reader is repositioned on the next step),
 * committing the open batches of the old ones first. Returns 0 or that commit's error. */
int fold_set(fold_t *f, proj_t *const *projs, size_t n);

/* Commits every open batch now (see fold_step()). Returns 0 or the first commit error (that
 * instance stays at its previous checkpoint). Call it before closing an instance the fold
 * drives; fold_set() and fold_destroy() do it themselves. */
int fold_flush(fold_t *f);

/* How long a batch may stay open over steps that do not reach the head (default
 * FOLD_COMMIT_INTERVAL_MS; 0 = until events_max events or the head). A fold whose instances
 * answer no queries yet (a blue/green rebuild) needs no interval: a crash loses at most one
 * batch of its progress. */
void fold_set_commit_interval(fold_t *f, uint64_t interval_ms);

/*
 * Folds the events after the instances' checkpoints, up to to_seq (0 = the head), at most
 * events_max events (0 = FOLD_BATCH_EVENTS_DEFAULT) and, when budget_ns is not 0, stopping
 * early once that much time has gone by. Instances with a sticky fold error are left out (see
 * proj_error()).
 *
 * Each instance folds into a batch (one write transaction, on its worker thread) that may stay
 * open over several steps: it is committed, with its checkpoint, when the step reached the
 * journal's head or to_seq, when events_max events have been folded since the last commit, when
 * FOLD_COMMIT_INTERVAL_MS have passed since then, or on an error. So after a step that did not
 * reach the head, proj_checkpoint() may not have moved yet; a step that reaches the head (or
 * to_seq) always leaves every instance committed.
 *
 * Returns 0 (also when there was nothing to fold); PROJ_EJOURNAL when the journal could not be
 * read (a damaged entry: fold_bad_seq() names it; nothing after it is folded), or the first
 * commit error of an instance (that instance stays at its previous checkpoint and will fold
 * the same events again on the next step).
 */
int fold_step(fold_t *f, uint64_t to_seq, size_t events_max, uint64_t budget_ns,
              fold_step_stats_t *out);

/* The lowest checkpoint of the healthy instances (UINT64_MAX when there are none). */
uint64_t fold_low_checkpoint(const fold_t *f);

/* The sequence the journal reader failed at, or 0. */
uint64_t fold_bad_seq(const fold_t *f);

/* Monotonic nanoseconds (for budgets and rates). */
uint64_t fold_now_ns(void);

#endif /* CARDLEDGER_FOLD_H */
