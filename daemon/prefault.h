/*
 * prefault: a thread that faults memory in before the daemon's loop writes it for the first time.
 *
 * The loop's tables (projections/table.c) ask, through table_set_ahead(), for the memory of
 * their next slots and of the index they will grow into; this thread faults it in with
 * madvise(MADV_POPULATE_WRITE), which leaves whatever the memory holds as it is. 2 MiB of new
 * memory took about 1 ms to fault in, in 4 KiB pages, on the VM of 2026-12-07, and 5 to 13 ms as
 * one huge page on the VMs of 2026-11 (the host backs a guest's memory when the guest first
 * touches it); on the loop, that stopped every command behind it for as long.
 *
 * Requests go through a ring of PREFAULT_QUEUE; when it is full a request is dropped, and the
 * loop faults that memory in itself, as without this thread. A request for memory that has
 * been freed since is harmless: madvise() then fails, or faults in pages of whatever is mapped
 * there now, without changing their content.
 */
#ifndef CARDLEDGER_PREFAULT_H
#define CARDLEDGER_PREFAULT_H

#include <stddef.h>

#define PREFAULT_QUEUE 64

typedef struct prefault prefault_t;

/* Starts the thread. Returns 0, or -1 (out of memory, no thread, or a kernel without
 * MADV_POPULATE_WRITE: logged). */
int prefault_start(prefault_t **out);

/* Asks for [addr, addr + len) to be faulted in; never blocks (a table_ahead_fn, ctx = the
 * prefault_t). */
void prefault_ask(void *ctx, void *addr, size_t len);

/* Stops the thread (requests not yet served are dropped) and frees *p; NULL is fine. */
void prefault_stop(prefault_t **p);

#endif /* CARDLEDGER_PREFAULT_H */
