/*
 * bench-hist: a small log-linear latency histogram for cardledger-bench (HdrHistogram's idea).
 *
 * Values are unsigned 64-bit nanoseconds. Below BENCH_HIST_SUB_BUCKETS every value has its own
 * bucket; above, every power of two is cut into BENCH_HIST_SUB_BUCKETS equal buckets, so a bucket
 * is never wider than 1/128 (0.8 %) of the values in it, from 1 ns up to 2^64 ns, in a fixed
 * array of counts: recording is a shift, a subtraction and an increment, with no allocation.
 * Percentiles are reported as the highest value of the bucket they fall in (never optimistic),
 * capped at the largest value recorded, which is kept exactly.
 *
 * A histogram is plain data: zero it with bench_hist_init(), record from one thread, and merge
 * per-thread histograms with bench_hist_merge() after the threads are joined.
 */
#ifndef CARDLEDGER_BENCH_HIST_H
#define CARDLEDGER_BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS    7u                          /* 2^7 buckets per power of two */
#define BENCH_HIST_SUB_BUCKETS (1u << BENCH_HIST_SUB_BITS) /* 128: precision 1/128 */
/* Exact buckets for 0..127, then 128 buckets for each power of two from 2^7 to 2^63. */
#define BENCH_HIST_BUCKETS (BENCH_HIST_SUB_BUCKETS + (64u - BENCH_HIST_SUB_BITS) * 128u)

typedef struct bench_hist {
    uint64_t counts[BENCH_HIST_BUCKETS]; /* values recorded per bucket */
    uint64_t total;                      /* values recorded */
    uint64_t min_ns;                     /* smallest value recorded (UINT64_MAX when empty) */
    uint64_t max_ns;                     /* largest value recorded (0 when empty) */
    long double sum_ns;                  /* for the mean */
} bench_hist_t;

/* Empties h. */
void bench_hist_init(bench_hist_t *h);

/* Records `count` values of `value_ns` (a message of k requests records its latency k times). */
void bench_hist_record(bench_hist_t *h, uint64_t value_ns, uint64_t count);

/* Adds every value of `from` into `into`. */
void bench_hist_merge(bench_hist_t *into, const bench_hist_t *from);

/* The value at percentile p (0..100]: the highest value of the bucket holding the
 * ceil(p/100 * total)-th smallest value, capped at max_ns. 0 when the histogram is empty. */
uint64_t bench_hist_percentile(const bench_hist_t *h, double p);

/* The mean of the values recorded, 0 when empty. */
double bench_hist_mean(const bench_hist_t *h);

/* The bucket index of a value and the highest value of a bucket (exposed for the tests of the
 * precision claim above; callers use the functions above). */
unsigned bench_hist_index(uint64_t value_ns);
uint64_t bench_hist_bucket_high(unsigned index);

#endif /* CARDLEDGER_BENCH_HIST_H */
