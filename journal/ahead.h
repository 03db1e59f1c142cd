/*
 * ahead: a thread that keeps a writer's journal file ahead of what it holds (journal_grow_ahead()).
 *
 * Every JOURNAL_AHEAD_POLL_MS it tops the data file up to `bytes` past the last used page,
 * writing at most JOURNAL_AHEAD_MAX_STEP of zeros each time, and syncs them: so the file stays
 * ahead of the commits in small, steady writes rather than in bursts that would hold up the
 * commits' own syncs. A commit then lands in blocks that are already allocated and written,
 * and its fdatasync() flushes data only. A failure (a full disk, most likely) is kept for the
 * owner to report and retried after JOURNAL_AHEAD_RETRY_MS; the journal itself works on as it
 * would without this thread.
 */
#ifndef CARDLEDGER_JOURNAL_AHEAD_H
#define CARDLEDGER_JOURNAL_AHEAD_H

#include <stdint.h>

#include "journal.h"

#define JOURNAL_AHEAD_POLL_MS  10
#define JOURNAL_AHEAD_MAX_STEP (2u << 20) /* 200 MB/s at most: more than the journal grows */
#define JOURNAL_AHEAD_RETRY_MS 1000

typedef struct journal_ahead journal_ahead_t;

/* Starts the thread for the writer journal j (which must outlive it). bytes > 0. Returns 0,
 * -ENOMEM, or a negated errno from pthread_create(). */
int journal_ahead_start(journal_t *j, uint64_t bytes, journal_ahead_t **out);

/* The last failure of journal_grow_ahead() not reported yet (then cleared), or 0. */
int journal_ahead_error(journal_ahead_t *a);

/* Stops the thread (after the step it is writing, if any) and frees *ap; NULL is fine. */
void journal_ahead_stop(journal_ahead_t **ap);

#endif /* CARDLEDGER_JOURNAL_AHEAD_H */
