/*
 * prefault.c: the ring of requests and the thread that serves them (see prefault.h).
 */
#include "prefault.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
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
    bool stop; /* also when the kernel does not know MADV_POPULATE_WRITE: requests dropped */
};

static void *
s_main(void *arg)
{
    prefault_t *p = arg;
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
            if (madvise(r.addr + off, n, MADV_POPULATE_WRITE) != 0 && errno == EINVAL) {
                log_info("prefault: the kernel cannot fault memory in ahead (MADV_POPULATE_WRITE); "
                         "the loop will fault its memory in itself");
                pthread_mutex_lock(&p->lock);
                p->stop = true;
                pthread_mutex_unlock(&p->lock);
                return NULL;
            }
            off += n;
            /* ENOMEM, EFAULT: freed or remapped since it was asked for; nothing to do. */
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
