/*
 * bench-probe: how fast this machine is at this minute, by two fixed jobs. tools/bench-suite runs
 * it before every benchmark run, so that a figure measured in a slow minute of a shared VM shows
 * as such beside the figure, instead of being argued afterwards.
 *
 * - cpu: XXH3-64 over a 64 KiB buffer (it stays in the core's caches), 16384 times: 1 GiB
 *   hashed, the same instructions every time. Its wall time moves only with the CPU the VM gets.
 * - touch: a fresh 256 MiB anonymous mapping, written once per 4 KiB page, then unmapped: page
 *   faults and zeroing by the kernel (and by the host, when the guest's freed memory went back to
 *   it). The daemon's 1M-card ledger and a projection rebuild pay this for hundreds of MB.
 *
 * Each job runs 3 times; the median is printed, as one JSON object on one line:
 *
 *   {"cpu_ms": 41.2, "touch_ms": 118.5, "touch_mib": 256}
 *
 * Not installed; docs/BENCHMARKS.md quotes it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <xxhash.h>

#define S_ROUNDS      3
#define S_CPU_BYTES   (64u * 1024)
#define S_CPU_LOOPS   16384u
#define S_TOUCH_BYTES (256u * 1024 * 1024)
#define S_PAGE        4096u

static double
s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Where the hash job leaves its result, so the compiler cannot drop the work. */
static volatile uint64_t s_sink;

/* The hash job; returns its wall time in ms. */
static double
s_cpu_job(const uint8_t *buf)
{
    double t0 = s_now_ms();
    uint64_t h = 0;
    for (unsigned i = 0; i < S_CPU_LOOPS; i++)
        h ^= XXH3_64bits_withSeed(buf, S_CPU_BYTES, h);
    s_sink = h;
    return s_now_ms() - t0;
}

/* The first-touch job; returns its wall time in ms, or a negative number when mmap() fails. */
static double
s_touch_job(void)
{
    double t0 = s_now_ms();
    uint8_t *p =
        mmap(NULL, S_TOUCH_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    for (size_t i = 0; i < S_TOUCH_BYTES; i += S_PAGE)
        ((volatile uint8_t *)p)[i] = 1;
    munmap(p, S_TOUCH_BYTES);
    return s_now_ms() - t0;
}

static int
s_cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double
s_median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), s_cmp_double);
    return v[n / 2];
}

int
main(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: bench-probe (no arguments; prints one JSON line)\n");
        return 64;
    }
    uint8_t *buf = malloc(S_CPU_BYTES);
    if (buf == NULL) {
        fprintf(stderr, "bench-probe: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < S_CPU_BYTES; i++)
        buf[i] = (uint8_t)(i * 131u + 7u);
    double cpu[S_ROUNDS], touch[S_ROUNDS];
    for (int r = 0; r < S_ROUNDS; r++) {
        cpu[r] = s_cpu_job(buf);
        touch[r] = s_touch_job();
        if (touch[r] < 0) {
            fprintf(stderr, "bench-probe: cannot map %u MiB\n", S_TOUCH_BYTES >> 20);
            free(buf);
            return 1;
        }
    }
    free(buf);
    printf("{\"cpu_ms\": %.1f, \"touch_ms\": %.1f, \"touch_mib\": %u}\n", s_median(cpu, S_ROUNDS),
           s_median(touch, S_ROUNDS), S_TOUCH_BYTES >> 20);
    return 0;
}
