/*
 * prefault.c: the ring of requests and the thread that serves them (see prefault.h).
 */
#include "prefault.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it with EINVAL */
#endif

/* A large request (an index) is served in pieces of this much, so that a stop waits for one
 * piece at most. */
#define S_PIECE (2u << 20)

typedef struct s_req {
    uint8_t *addr;
    size_t len;
} s_req_t;

struct prefault {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    s_req_t ring[PREFAULT_QUEUE];
    size_t head; /* next request to serve */
    size_t count;
    bool stop;
};

static void *
s_main(void *arg)
{
    prefault_t *p = arg;
    (void)pthread_setname_np(pthread_self(), "cl-prefault");
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->count == 0)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop)
            break;
        s_req_t r = p->ring[p->head];
        p->head = (p->head + 1) % PREFAULT_QUEUE;
        p->count--;
        pthread_mutex_unlock(&p->lock);
        for (size_t off = 0; off < r.len;) {
            size_t n = r.len - off < S_PIECE ? r.len - off : S_PIECE;
            /* A failure means the memory was freed or remapped since it was asked for (or, a
             * bug, a range not starting at a page): nothing to do either way. */
            (void)madvise(r.addr + off, n, MADV_POPULATE_WRITE);
            off += n;
            pthread_mutex_lock(&p->lock);
            bool stop = p->stop;
            pthread_mutex_unlock(&p->lock);
            if (stop)
                return NULL;
        }
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int
prefault_start(prefault_t **out)
{
    /* Does the kernel know MADV_POPULATE_WRITE (Linux 5.14)? Asked once, of a page of ours. */
    void *page = aligned_alloc(4096, 4096);
    if (page == NULL)
        return -1;
    int known = madvise(page, 4096, MADV_POPULATE_WRITE);
    int err = errno;
    free(page);
    if (known != 0) {
        log_info("prefault: the kernel cannot fault memory in ahead (MADV_POPULATE_WRITE: %s); "
                 "the loop faults its memory in itself",
                 strerror(err));
        return -1;
    }
    prefault_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (pthread_create(&p->thread, NULL, s_main, p) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

void
prefault_ask(void *ctx, void *addr, size_t len)
{
    prefault_t *p = ctx;
    pthread_mutex_lock(&p->lock);
    if (!p->stop && p->count < PREFAULT_QUEUE) {
        p->ring[(p->head + p->count) % PREFAULT_QUEUE] = (s_req_t){ addr, len };
        p->count++;
        pthread_cond_signal(&p->wake);
    }
    pthread_mutex_unlock(&p->lock);
}

void
prefault_stop(prefault_t **pp)
{
    if (pp == NULL || *pp == NULL)
        return;
    prefault_t *p = *pp;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
    *pp = NULL;
}
