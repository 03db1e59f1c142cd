/*
 * ahead.c: the thread that grows a journal's file ahead of its commits (see ahead.h).
 */
#include "ahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

struct journal_ahead {
    journal_t *j;
    uint64_t bytes;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* signalled by journal_ahead_stop() */
    bool stop;
    int error; /* last failure, until journal_ahead_error() takes it */
};

/* Waits ms milliseconds or until a stop (lock held). */
static void
s_wait(journal_ahead_t *a, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!a->stop && pthread_cond_timedwait(&a->wake, &a->lock, &until) != ETIMEDOUT) {
    }
}

static void *
s_main(void *arg)
{
    journal_ahead_t *a = arg;
    (void)pthread_setname_np(pthread_self(), "cl-journal-ahd");
    pthread_mutex_lock(&a->lock);
    while (!a->stop) {
        pthread_mutex_unlock(&a->lock);
        uint64_t written = 0;
        int rc = journal_grow_ahead(a->j, a->bytes, JOURNAL_AHEAD_MAX_STEP, &written);
        pthread_mutex_lock(&a->lock);
        if (rc != 0)
            a->error = rc;
        s_wait(a, rc != 0 ? JOURNAL_AHEAD_RETRY_MS : JOURNAL_AHEAD_POLL_MS);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int
journal_ahead_start(journal_t *j, uint64_t bytes, journal_ahead_t **out)
{
    if (j == NULL || bytes == 0 || out == NULL)
        return -EINVAL;
    journal_ahead_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->j = j;
    a->bytes = bytes;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->wake, &attr);
    pthread_condattr_destroy(&attr);
    int prc = pthread_create(&a->thread, NULL, s_main, a);
    if (prc != 0) {
        pthread_cond_destroy(&a->wake);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return -prc;
    }
    *out = a;
    return 0;
}

int
journal_ahead_error(journal_ahead_t *a)
{
    if (a == NULL)
        return 0;
    pthread_mutex_lock(&a->lock);
    int rc = a->error;
    a->error = 0;
    pthread_mutex_unlock(&a->lock);
    return rc;
}

void
journal_ahead_stop(journal_ahead_t **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    journal_ahead_t *a = *ap;
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->wake);
    pthread_mutex_destroy(&a->lock);
    free(a);
    *ap = NULL;
}
