/*
 * bench-hist: the log-linear latency histogram of cardledger-bench (see bench-hist.h).
 *
 * Bucket i < 128 holds exactly the value i. Above, a value v with its highest set bit at e >= 7
 * keeps its 7 bits below that one: bucket 128 + (e - 7) * 128 + ((v >> (e - 7)) - 128). So the
 * width of a bucket is 2^(e-7), at most 1/128 of the smallest value in it.
 */
#include "bench-hist.h"

#include <assert.h>
#include <string.h>

void
bench_hist_init(bench_hist_t *h)
{
    assert(h != NULL);
    memset(h, 0, sizeof(*h));
    h->min_ns = UINT64_MAX;
}

unsigned
bench_hist_index(uint64_t value_ns)
{
    if (value_ns < BENCH_HIST_SUB_BUCKETS)
        return (unsigned)value_ns;
    unsigned e = 63u - (unsigned)__builtin_clzll(value_ns);
    unsigned shift = e - BENCH_HIST_SUB_BITS;
    unsigned sub = (unsigned)(value_ns >> shift) - BENCH_HIST_SUB_BUCKETS;
    unsigned i = BENCH_HIST_SUB_BUCKETS + shift * BENCH_HIST_SUB_BUCKETS + sub;
    assert(i < BENCH_HIST_BUCKETS);
    return i;
}

uint64_t
bench_hist_bucket_high(unsigned index)
{
    assert(index < BENCH_HIST_BUCKETS);
    if (index < BENCH_HIST_SUB_BUCKETS)
        return index;
    unsigned shift = (index - BENCH_HIST_SUB_BUCKETS) / BENCH_HIST_SUB_BUCKETS;
    uint64_t sub = (index - BENCH_HIST_SUB_BUCKETS) % BENCH_HIST_SUB_BUCKETS;
    uint64_t low = (BENCH_HIST_SUB_BUCKETS + sub) << shift;
    return low + ((UINT64_C(1) << shift) - 1);
}

void
bench_hist_record(bench_hist_t *h, uint64_t value_ns, uint64_t count)
{
    assert(h != NULL);
    if (count == 0)
        return;
    h->counts[bench_hist_index(value_ns)] += count;
    h->total += count;
    if (value_ns < h->min_ns)
        h->min_ns = value_ns;
    if (value_ns > h->max_ns)
        h->max_ns = value_ns;
    h->sum_ns += (long double)value_ns * (long double)count;
}

void
bench_hist_merge(bench_hist_t *into, const bench_hist_t *from)
{
    assert(into != NULL && from != NULL);
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    if (from->min_ns < into->min_ns)
        into->min_ns = from->min_ns;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
    into->sum_ns += from->sum_ns;
}

uint64_t
bench_hist_percentile(const bench_hist_t *h, double p)
{
    assert(h != NULL);
    if (h->total == 0)
        return 0;
    if (p >= 100.0)
        return h->max_ns;
    /* The rank of the value asked for, 1-based: ceil(p/100 * total), at least 1. */
    long double want_ld = (long double)p / 100.0L * (long double)h->total;
    uint64_t want = (uint64_t)want_ld;
    if ((long double)want < want_ld)
        want++;
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t v = bench_hist_bucket_high(i);
            return v < h->max_ns ? v : h->max_ns;
        }
    }
    return h->max_ns;
}

double
bench_hist_mean(const bench_hist_t *h)
{
    assert(h != NULL);
    return h->total > 0 ? (double)(h->sum_ns / (long double)h->total) : 0.0;
}
