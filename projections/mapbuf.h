/*
 * mapbuf: a buffer that is a memory mapping of its own. It grows in place with mremap(), so no
 * byte is copied and of a new part only what is written is touched, and it asks for its memory
 * a window ahead of use (MAPBUF_AHEAD past what is in use, in whole huge pages), so that another
 * thread (daemon/prefault.h) faults it in before the owner writes it. The checkpoint's batch
 * (daemon/checkpoint.c) and the ledger's timer heap (ledger.c) are made of one.
 */
#ifndef CARDLEDGER_MAPBUF_H
#define CARDLEDGER_MAPBUF_H

#include <stddef.h>
#include <stdint.h>

#define MAPBUF_STEP  (2u << 20) /* sizes and asked ranges are whole huge pages */
#define MAPBUF_AHEAD (8u << 20) /* how far past what is in use the memory is asked for */

typedef struct mapbuf {
    uint8_t *base; /* NULL until the first mapbuf_reserve() */
    size_t cap;    /* bytes mapped: MAPBUF_STEP times a power of two */
    size_t asked;  /* bytes from base asked for so far */
    /* Asked for memory ahead of use (a table_ahead_fn); NULL asks for nothing. */
    void (*ahead)(void *ctx, void *addr, size_t len);
    void *ahead_ctx;
} mapbuf_t;

/* Makes cap reach at least bytes (doubling), moving the mapping if need be: pointers into it
 * do not survive a growth. Returns 0, or -1 when the memory cannot be had (nothing changed). */
int mapbuf_reserve(mapbuf_t *m, size_t bytes);

/* With `used` bytes in use, asks the ahead function for what is not asked yet up to
 * MAPBUF_AHEAD past them (not past cap). */
void mapbuf_ask(mapbuf_t *m, size_t used);

/* Unmaps the buffer; the ahead function stays. */
void mapbuf_free(mapbuf_t *m);

#endif /* CARDLEDGER_MAPBUF_H */
