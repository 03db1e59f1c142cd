/*
 * mapbuf.c: a buffer that grows in place and asks for its memory ahead (see mapbuf.h).
 */
#include "mapbuf.h"

#include <sys/mman.h>

int
mapbuf_reserve(mapbuf_t *m, size_t bytes)
{
    if (bytes <= m->cap)
        return 0;
    if (bytes > SIZE_MAX / 4)
        return -1;
    size_t cap = m->cap ? m->cap : MAPBUF_STEP;
    while (cap < bytes)
        cap *= 2;
    void *p = m->base == NULL
                  ? mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                  : mremap(m->base, m->cap, cap, MREMAP_MAYMOVE);
    if (p == MAP_FAILED)
        return -1;
    (void)madvise(p, cap, MADV_HUGEPAGE); /* advice only: fine if refused */
    m->base = p;
    m->cap = cap;
    return 0;
}

void
mapbuf_ask(mapbuf_t *m, size_t used)
{
    if (m->ahead == NULL || m->base == NULL || used > SIZE_MAX - MAPBUF_AHEAD - MAPBUF_STEP)
        return;
    size_t want = used + MAPBUF_AHEAD;
    if (want <= m->asked)
        return;
    size_t to = (want + MAPBUF_STEP - 1) / MAPBUF_STEP * MAPBUF_STEP;
    if (to > m->cap)
        to = m->cap;
    size_t from = m->asked / MAPBUF_STEP * MAPBUF_STEP; /* at a page */
    if (to > from)
        m->ahead(m->ahead_ctx, m->base + from, to - from);
    m->asked = to;
}

void
mapbuf_free(mapbuf_t *m)
{
    if (m->base != NULL)
        (void)munmap(m->base, m->cap);
    m->base = NULL;
    m->cap = m->asked = 0;
}
