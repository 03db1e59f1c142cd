/*
 * bench-table: how long single inserts into the daemon's in-memory tables (projections/table.c)
 * take, one by one, as a table grows from empty to N records.
 *
 * The daemon's loop inserts a record for every redemption, every card issued and every card read
 * from the checkpoint; an insert that takes long holds every command behind it. This measures
 * each put of N records with 8-byte numbered keys (as redemptions and cards are keyed) and
 * 96-byte records, and prints the percentiles and the slowest puts with the record count at
 * which they happened. Not installed; docs/BENCHMARKS.md quotes it.
 *
 *   build-release/tools/bench-table [N]     (default 4,000,000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-hist.h"
#include "table.h"

#define S_REC_SIZE 96
#define S_SLOWEST  8

static uint64_t
s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct s_slow {
    uint64_t ns;
    uint64_t at; /* records in the table before the put */
} s_slow_t;

/* Keeps the S_SLOWEST slowest puts, slowest first. */
static void
s_keep_slow(s_slow_t *slow, uint64_t ns, uint64_t at)
{
    if (ns <= slow[S_SLOWEST - 1].ns)
        return;
    int i = S_SLOWEST - 1;
    while (i > 0 && slow[i - 1].ns < ns) {
        slow[i] = slow[i - 1];
        i--;
    }
    slow[i] = (s_slow_t){ ns, at };
}

int
main(int argc, char **argv)
{
    uint64_t n = 4000000;
    if (argc > 2 || (argc == 2 && (n = strtoull(argv[1], NULL, 10)) == 0)) {
        fprintf(stderr, "usage: bench-table [RECORDS]\n");
        return 64;
    }
    table_t *t = NULL;
    if (table_new_numbered(8, 0, S_REC_SIZE, &t) != 0) {
        fprintf(stderr, "bench-table: out of memory\n");
        return 1;
    }
    static bench_hist_t hist;
    bench_hist_init(&hist);
    s_slow_t slow[S_SLOWEST];
    memset(slow, 0, sizeof(slow));
    uint64_t over_1ms = 0;
    uint64_t t0 = s_now_ns();
    for (uint64_t i = 1; i <= n; i++) {
        uint8_t key[8];
        for (int b = 7, v = 0; b >= 0; b--, v += 8)
            key[b] = (uint8_t)(i >> v);
        uint64_t a = s_now_ns();
        uint8_t *rec = table_put(t, key, sizeof(key), NULL);
        if (rec == NULL) {
            fprintf(stderr, "bench-table: out of memory at %" PRIu64 " records\n", i - 1);
            return 1;
        }
        rec[0] = (uint8_t)i; /* the caller writes its record, as the ledger does */
        uint64_t ns = s_now_ns() - a;
        bench_hist_record(&hist, ns, 1);
        s_keep_slow(slow, ns, i - 1);
        over_1ms += ns > 1000000;
    }
    double total_s = (double)(s_now_ns() - t0) / 1e9;
    printf("bench-table: %" PRIu64
           " puts of %d-byte records under 8-byte numbered keys in %.3f s\n",
           n, S_REC_SIZE, total_s);
    printf("put: p50 %.0f ns, p99 %.0f ns, p99.9 %.0f ns, p99.99 %.0f ns, max %.2f ms; "
           "%" PRIu64 " puts over 1 ms\n",
           (double)bench_hist_percentile(&hist, 50), (double)bench_hist_percentile(&hist, 99),
           (double)bench_hist_percentile(&hist, 99.9), (double)bench_hist_percentile(&hist, 99.99),
           (double)hist.max_ns / 1e6, over_1ms);
    printf("slowest:");
    for (int i = 0; i < S_SLOWEST && slow[i].ns > 0; i++)
        printf(" %.2f ms at %" PRIu64 "%s", (double)slow[i].ns / 1e6, slow[i].at,
               i + 1 < S_SLOWEST ? "," : "");
    printf("\n");
    table_destroy(&t);
    return 0;
}
