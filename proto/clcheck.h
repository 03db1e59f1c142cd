/*
 * Always-on checks for invariants whose violation would corrupt durable state.
 *
 * assert() documents and tests assumptions in debug builds; CL_CHECK stays in release builds
 * too (Redis keeps its asserts on in production for the same reason): it logs the expression
 * with file:line and aborts, because going on would write a wrong ledger.
 */
#ifndef CARDLEDGER_CLCHECK_H
#define CARDLEDGER_CLCHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CL_CHECK(cond)                                                               \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#endif /* CARDLEDGER_CLCHECK_H */
