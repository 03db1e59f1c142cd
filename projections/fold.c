/*
 * fold.c: journal -> decoded events -> projection batches (see fold.h).
 *
 * A step is a small pipeline. The calling thread reads the journal and decodes each entry once
 * into a ring of events; one worker thread per instance begins that instance's batch (an LMDB
 * write transaction, which must stay on one thread), folds every event of the ring it has not
 * folded yet, and commits with the sequence of the last event it saw. Decoding and the three
 * folds run side by side, which is where a rebuild's speed on several cores comes from; the
 * bytes written do not depend on it (each instance sees the same events in the same order).
 *
 * The reader is reopened whenever it is not exactly after the lowest checkpoint (after a failed
 * commit, or when the set of instances changed), so no event is ever skipped.
 *
 * Synchronisation: one mutex and two condition variables per fold. The reader publishes events
 * in chunks of S_PUBLISH_EVERY; a worker waits for published events, folds them without the
 * lock, and reports how far it got; the reader waits before reusing a ring slot that a worker
 * has not folded yet.
 */
#include "fold.h"

#include <assert.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "clcheck.h"
#include "codec.h"

#define S_RING_EVENTS    1024u  /* decoded events in flight (about 4.5 MiB) */
#define S_PUBLISH_EVERY  64u    /* events the reader hands over at a time */
#define S_PREFETCH_AHEAD 6u     /* events between prefetch stages 0 and 1, and 1 and the fold */
#define S_BULK_EVENTS    65536u /* a fold this far behind the head prefaults its workers' heaps */
#define S_PREFAULT_BYTES (48u * 1024 * 1024) /* per worker; below glibc's 64 MiB arena heap */

typedef struct worker {
    struct fold *f;
    size_t slot; /* which instance of the fold it drives */
    pthread_t thread;
    bool started;
    /* Per step, under the fold's lock: */
    bool go;           /* a step runs and this worker takes part */
    bool done;         /* it finished the step (committed, or left its batch open) */
    uint64_t consumed; /* ring events folded (an absolute count within the step) */
    int rc;            /* its begin or commit error */
    /* The batch, which may stay open over several steps; read by the reader between steps
     * (under the lock), changed only by the worker during a step: */
    bool begun;    /* a write transaction is open */
    uint64_t upto; /* the last sequence the open batch saw (0 when none is open) */
} worker_t;

struct fold {
    journal_t *j;
    journal_reader_t *reader;
    proj_t *projs[FOLD_PROJS_MAX];
    size_t n;
    uint64_t bad_seq;
    cl_event_t *ring; /* S_RING_EVENTS decoded events; type CL_EV_NONE = unknown, skipped */
    worker_t workers[FOLD_PROJS_MAX];
    pthread_mutex_t lock;
    pthread_cond_t more;         /* the reader published events, finished a step or is stopping */
    pthread_cond_t freed;        /* a worker folded events or finished */
    uint64_t step;               /* step number: workers wait for a new one */
    uint64_t published;          /* events of the step in the ring so far */
    bool finished;               /* the reader published the step's last event */
    bool commit;                 /* workers commit their batch at the end of this step */
    bool bulk;                   /* the fold was once far behind: workers prefault their heaps */
    bool quit;                   /* fold_destroy(): workers exit */
    uint64_t open_events;        /* events read since the batches were last committed */
    uint64_t open_ns;            /* when the first of them was read */
    uint64_t commit_interval_ns; /* fold_set_commit_interval() (0 = none) */
};

uint64_t
fold_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int s_flush(fold_t *f);

/* ---- Workers ------------------------------------------------------------------------------ */

/* One step of one worker: begin (unless a batch is open from an earlier step), fold what the
 * reader publishes, and commit when the reader says so. */
static void
s_work_step(fold_t *f, worker_t *w)
{
    proj_t *p = f->projs[w->slot];
    bool begun = w->begun;
    uint64_t upto = w->upto; /* the last sequence this instance saw in the open batch */
    int rc = 0;
    uint64_t next = 0;
    bool commit = false;
    for (;;) {
        pthread_mutex_lock(&f->lock);
        w->consumed = next;
        pthread_cond_signal(&f->freed);
        while (f->published == next && !f->finished)
            pthread_cond_wait(&f->more, &f->lock);
        uint64_t avail = f->published;
        bool last = f->finished;
        commit = f->commit;
        pthread_mutex_unlock(&f->lock);
        if (avail == next && last)
            break;
        for (; next < avail; next++) {
            if (begun) {
                /* Prefetch of the records of events a little ahead, in three stages: index
                 * entries, the records they point to, then what those records name. */
                if (next + 2 * S_PREFETCH_AHEAD < avail)
                    proj_batch_prefetch(p, &f->ring[(next + 2 * S_PREFETCH_AHEAD) % S_RING_EVENTS],
                                        0);
                if (next + S_PREFETCH_AHEAD < avail)
                    proj_batch_prefetch(p, &f->ring[(next + S_PREFETCH_AHEAD) % S_RING_EVENTS], 1);
                if (next + S_PREFETCH_AHEAD / 2 < avail)
                    proj_batch_prefetch(p, &f->ring[(next + S_PREFETCH_AHEAD / 2) % S_RING_EVENTS],
                                        2);
            }
            const cl_event_t *ev = &f->ring[next % S_RING_EVENTS];
            if (ev->seq <= proj_checkpoint(p) || ev->seq <= upto || ev->seq > proj_limit(p))
                continue;
            if (!begun && rc == 0) {
                rc = proj_batch_begin(p);
                begun = rc == 0;
                upto = 0;
            }
            if (!begun)
                continue;
            if (ev->type != CL_EV_NONE && proj_batch_apply(p, ev) != 0) {
                /* The event may be half applied: throw the batch away. The next step folds the
                 * events before it again and commits them; then the instance stops there. */
                proj_batch_abort(p);
                begun = false;
                upto = 0;
                continue;
            }
            upto = ev->seq;
        }
    }
    if (begun && commit) {
        assert(upto != 0);
        rc = proj_batch_commit(p, upto);
        begun = false;
        upto = 0;
    }
    pthread_mutex_lock(&f->lock);
    w->consumed = next;
    w->rc = rc;
    w->begun = begun;
    w->upto = upto;
    w->done = true;
    pthread_cond_signal(&f->freed);
    pthread_mutex_unlock(&f->lock);
}

/*
 * Faults in the worker's malloc arena once, in 2 MiB pages. LMDB mallocs every page a batch
 * dirties (4 KiB each: tens of MB per batch in a rebuild) and the cache's records come from
 * the same arena; faulting those in 4 KiB at a time was a fifth of a replay's CPU on this VM.
 * A block allocated, advised for huge pages, touched and freed stays at the top of the
 * thread's arena (the tools keep M_TRIM_THRESHOLD high), and later allocations reuse it.
 */
static void
s_prefault_arena(size_t bytes)
{
    uint8_t *p = malloc(bytes);
    if (p == NULL)
        return; /* an optimisation only */
    uintptr_t lo = ((uintptr_t)p + 0x1fffff) & ~(uintptr_t)0x1fffff;
    uintptr_t hi = ((uintptr_t)p + bytes) & ~(uintptr_t)0x1fffff;
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    for (size_t i = 0; i < bytes; i += 4096)
        ((volatile uint8_t *)p)[i] = 0;
    free(p);
}

static void *
s_worker(void *arg)
{
    worker_t *w = arg;
    fold_t *f = w->f;
    uint64_t seen = 0;
    bool prefaulted = false;
    char name[16]; /* the kernel's limit, with the NUL */
    snprintf(name, sizeof(name), "cl-%s", proj_def(f->projs[w->slot])->name);
    (void)pthread_setname_np(pthread_self(), name);
    for (;;) {
        pthread_mutex_lock(&f->lock);
        while (!f->quit && (f->step == seen || !w->go))
            pthread_cond_wait(&f->more, &f->lock);
        if (f->quit) {
            pthread_mutex_unlock(&f->lock);
            return NULL;
        }
        seen = f->step;
        bool bulk = f->bulk;
        pthread_mutex_unlock(&f->lock);
        if (bulk && !prefaulted) {
            s_prefault_arena(S_PREFAULT_BYTES);
            prefaulted = true;
        }
        s_work_step(f, w);
    }
}

/* ---- The fold ----------------------------------------------------------------------------- */

int
fold_new(journal_t *j, proj_t *const *projs, size_t n, fold_t **out)
{
    if (j == NULL || out == NULL || n > FOLD_PROJS_MAX || (n > 0 && projs == NULL))
        return PROJ_EINVAL;
    fold_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return PROJ_ENOMEM;
    f->ring = calloc(S_RING_EVENTS, sizeof(*f->ring));
    if (f->ring == NULL || pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f->ring);
        free(f);
        return PROJ_ENOMEM;
    }
    pthread_cond_init(&f->more, NULL);
    pthread_cond_init(&f->freed, NULL);
    f->j = j;
    f->commit_interval_ns = FOLD_COMMIT_INTERVAL_MS * 1000000ull;
    fold_set(f, projs, n);
    *out = f;
    return 0;
}

void
fold_destroy(fold_t **fp)
{
    if (fp == NULL || *fp == NULL)
        return;
    fold_t *f = *fp;
    (void)s_flush(f); /* a failed commit leaves the instance at its checkpoint: nothing lost */
    pthread_mutex_lock(&f->lock);
    f->quit = true;
    pthread_cond_broadcast(&f->more);
    pthread_mutex_unlock(&f->lock);
    for (size_t i = 0; i < FOLD_PROJS_MAX; i++) {
        if (f->workers[i].started)
            pthread_join(f->workers[i].thread, NULL);
    }
    pthread_cond_destroy(&f->more);
    pthread_cond_destroy(&f->freed);
    pthread_mutex_destroy(&f->lock);
    journal_reader_close(&f->reader);
    free(f->ring);
    free(f);
    *fp = NULL;
}

int
fold_set(fold_t *f, proj_t *const *projs, size_t n)
{
    if (f == NULL || n > FOLD_PROJS_MAX)
        return PROJ_EINVAL;
    /* The open batches belong to the instances being replaced: commit them first. */
    int rc = s_flush(f);
    for (size_t i = 0; i < n; i++)
        f->projs[i] = projs[i];
    f->n = n;
    return rc;
}

/* Where the reader must start: after the lowest sequence a healthy instance has folded,
 * committed or in its open batch. */
static uint64_t
s_low_position(const fold_t *f)
{
    uint64_t low = UINT64_MAX;
    for (size_t i = 0; i < f->n; i++) {
        const worker_t *w = &f->workers[i];
        if (proj_stopped(f->projs[i]))
            continue;
        uint64_t pos = w->begun ? w->upto : proj_checkpoint(f->projs[i]);
        if (pos < low)
            low = pos;
    }
    return low;
}

uint64_t
fold_low_checkpoint(const fold_t *f)
{
    uint64_t low = UINT64_MAX;
    for (size_t i = 0; i < f->n; i++) {
        if (!proj_stopped(f->projs[i]) && proj_checkpoint(f->projs[i]) < low)
            low = proj_checkpoint(f->projs[i]);
    }
    return low;
}

uint64_t
fold_bad_seq(const fold_t *f)
{
    return f->bad_seq;
}

/* Starts the workers a step needs (once per slot, kept for the fold's life). */
static int
s_start_workers(fold_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        worker_t *w = &f->workers[i];
        if (w->started)
            continue;
        w->f = f;
        w->slot = i;
        if (pthread_create(&w->thread, NULL, s_worker, w) != 0)
            return PROJ_ENOMEM;
        w->started = true;
    }
    return 0;
}

/* Publishes what the reader decoded so far, waiting first for room in the ring. */
static void
s_publish(fold_t *f, uint64_t count, bool finished, bool commit)
{
    pthread_mutex_lock(&f->lock);
    f->published = count;
    f->finished = finished;
    f->commit = commit;
    pthread_cond_broadcast(&f->more);
    pthread_mutex_unlock(&f->lock);
}

/* Waits until slot `index` of the ring may be overwritten (every worker folded it). The
 * reader remembers how far every worker had got (*room: events below it may be written), so it
 * only takes the lock when it catches up with the slowest worker. */
static void
s_wait_room(fold_t *f, uint64_t index, uint64_t *room)
{
    if (index < *room)
        return;
    uint64_t need = index - S_RING_EVENTS + 1;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        uint64_t low = UINT64_MAX;
        for (size_t i = 0; i < f->n; i++) {
            const worker_t *w = &f->workers[i];
            if (w->go && !w->done && w->consumed < low)
                low = w->consumed;
        }
        if (low >= need) {
            *room = low == UINT64_MAX ? UINT64_MAX : low + S_RING_EVENTS;
            break;
        }
        pthread_cond_wait(&f->freed, &f->lock);
    }
    pthread_mutex_unlock(&f->lock);
}

/* Starts a step for the workers: those of healthy instances, and any with an open batch. */
static void
s_start_step(fold_t *f)
{
    pthread_mutex_lock(&f->lock);
    f->published = 0;
    f->finished = false;
    f->commit = false;
    for (size_t i = 0; i < FOLD_PROJS_MAX; i++) {
        worker_t *w = &f->workers[i];
        w->go = i < f->n && (!proj_stopped(f->projs[i]) || w->begun);
        w->done = !w->go;
        w->consumed = 0;
        w->rc = 0;
    }
    f->step++;
    pthread_cond_broadcast(&f->more);
    pthread_mutex_unlock(&f->lock);
}

/* Waits for every worker to finish the step; returns the first error of one. */
static int
s_finish_step(fold_t *f)
{
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n; i++) {
        while (!f->workers[i].done)
            pthread_cond_wait(&f->freed, &f->lock);
        if (rc == 0)
            rc = f->workers[i].rc;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static bool
s_any_open(const fold_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        if (f->workers[i].begun)
            return true;
    }
    return false;
}

/* Commits every open batch: a step without events whose end says "commit". */
static int
s_flush(fold_t *f)
{
    if (!s_any_open(f))
        return 0;
    s_start_step(f);
    s_publish(f, 0, true, true);
    int rc = s_finish_step(f);
    f->open_events = 0;
    return rc;
}

void
fold_set_commit_interval(fold_t *f, uint64_t interval_ms)
{
    assert(f != NULL);
    f->commit_interval_ns = interval_ms * 1000000ull;
}

int
fold_flush(fold_t *f)
{
    assert(f != NULL);
    return s_flush(f);
}

/* A reader left anywhere but right after the lowest position is closed (reopened next step). */
static void
s_check_reader(fold_t *f)
{
    if (f->reader != NULL && journal_reader_next_seq(f->reader) != s_low_position(f) + 1)
        journal_reader_close(&f->reader);
}

int
fold_step(fold_t *f, uint64_t to_seq, size_t events_max, uint64_t budget_ns, fold_step_stats_t *out)
{
    assert(f != NULL);
    uint64_t t0 = fold_now_ns();
    fold_step_stats_t st = { 0, 0, 0, 0 };
    uint64_t low = s_low_position(f);
    if (low == UINT64_MAX || (to_seq != 0 && low >= to_seq)) {
        int rc = s_flush(f);
        s_check_reader(f);
        st.elapsed_ns = fold_now_ns() - t0;
        if (out != NULL)
            *out = st;
        return rc;
    }
    if (events_max == 0)
        events_max = FOLD_BATCH_EVENTS_DEFAULT;
    if (!f->bulk) {
        /* A rebuild or a long catch-up: worth faulting the workers' heaps in at once. */
        journal_head_t head;
        uint64_t end = to_seq;
        if (end == 0 && journal_head(f->j, &head) == 0)
            end = head.seq;
        f->bulk = end > low && end - low >= S_BULK_EVENTS && events_max >= S_BULK_EVENTS;
    }
    if (to_seq != 0 && to_seq - low < events_max)
        events_max = (size_t)(to_seq - low);

    int rc = 0;
    if (f->reader == NULL || journal_reader_next_seq(f->reader) != low + 1) {
        journal_reader_close(&f->reader);
        rc = journal_reader_open(f->j, low + 1, &f->reader);
        if (rc == JOURNAL_ENOTFOUND) {
            /* The journal is behind our checkpoint: another journal, or not there yet. */
            (void)s_flush(f);
            if (out != NULL)
                *out = st;
            return PROJ_EJOURNAL;
        }
        if (rc != 0)
            return rc;
    }
    /* Is there anything at all? Spare the workers a step for nothing (but commit what the
     * batches hold: the fold has caught up). */
    journal_entry_t e;
    rc = journal_reader_next(f->reader, &e);
    if (rc != 0) {
        if (rc != JOURNAL_END) {
            f->bad_seq = journal_reader_bad_seq(f->reader);
            journal_reader_close(&f->reader);
        }
        int frc = s_flush(f);
        s_check_reader(f);
        st.elapsed_ns = fold_now_ns() - t0;
        if (out != NULL)
            *out = st;
        return rc == JOURNAL_END ? frc : PROJ_EJOURNAL;
    }
    rc = s_start_workers(f);
    if (rc != 0)
        return rc;
    s_start_step(f);

    /* The first entry is already read: decode it, then the rest. */
    int jrc = 0;
    bool at_end = false; /* the journal's head (or to_seq) was reached */
    uint64_t room = S_RING_EVENTS;
    if (f->open_events == 0)
        f->open_ns = t0;
    for (;;) {
        s_wait_room(f, st.events, &room);
        cl_event_t *ev = &f->ring[st.events % S_RING_EVENTS];
        /* Straight into the ring slot: only the envelope and the event's own member are
         * written, and the folds read nothing else (codec_event_decode_fold()). */
        int drc = codec_event_decode_fold(e.payload, e.payload_len, ev);
        if (drc != 0 && drc != CODEC_EUNKNOWN) {
            /* A payload the codec refuses is a damaged journal: stop before it. */
            f->bad_seq = e.seq;
            journal_reader_close(&f->reader);
            jrc = PROJ_EJOURNAL;
            break;
        }
        if (drc == CODEC_EUNKNOWN) {
            ev->type = CL_EV_NONE; /* folded as a no-op */
            st.skipped++;
        }
        ev->seq = e.seq;
        ev->at_us = e.timestamp_us;
        st.events++;
        st.last_seq = e.seq;
        if (st.events % S_PUBLISH_EVERY == 0)
            s_publish(f, st.events, false, false);
        if (to_seq != 0 && e.seq >= to_seq) {
            at_end = true;
            break;
        }
        if (st.events >= events_max ||
            (budget_ns != 0 && (st.events & 255) == 0 && fold_now_ns() - t0 >= budget_ns))
            break;
        rc = journal_reader_next(f->reader, &e);
        if (rc == JOURNAL_END) {
            at_end = true;
            break;
        }
        if (rc != 0) {
            f->bad_seq = journal_reader_bad_seq(f->reader);
            journal_reader_close(&f->reader);
            jrc = PROJ_EJOURNAL;
            break;
        }
    }
    /* Commit when the fold caught up (what is folded becomes visible at once, as before), when
     * the batch is big enough, when it has been open long enough (queries read the last commit,
     * and a crash loses at most that much progress), on a journal error, and when an instance
     * met an event it cannot fold (so it stops right before it). Otherwise the batch stays open
     * into the next step: a catch-up in small, time-boxed steps then writes each hot record once
     * per FOLD_COMMIT_INTERVAL_MS instead of once per step. */
    f->open_events += st.events;
    bool commit =
        at_end || jrc != 0 || f->open_events >= events_max ||
        (f->commit_interval_ns != 0 && fold_now_ns() - f->open_ns >= f->commit_interval_ns);
    for (size_t i = 0; i < f->n && !commit; i++) {
        if (proj_error(f->projs[i], NULL) != 0)
            commit = true;
    }
    s_publish(f, st.events, true, commit);

    /* Wait for every worker (and its commit). */
    rc = s_finish_step(f);
    if (commit)
        f->open_events = 0;
    if (jrc != 0)
        rc = jrc;
    /* A failed commit or an aborted batch leaves an instance behind the reader: reopen it. */
    s_check_reader(f);
    st.elapsed_ns = fold_now_ns() - t0;
    if (out != NULL)
        *out = st;
    return rc;
}
