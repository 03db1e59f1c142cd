/*
 * radix: a stable sort of fixed-size items by an unsigned 64-bit key inside each, least
 * significant byte first, skipping the bytes all keys share: a few passes over an array instead
 * of n log n calls of a comparison. The projections' cache sorts its 8-byte keys with it before
 * a write (pcache.c), and the daemon's checkpoint its batches' out-of-order runs
 * (daemon/checkpoint.c). Header-only, so that each caller's item size is a constant the copies
 * are made with.
 */
#ifndef CARDLEDGER_RADIX_H
#define CARDLEDGER_RADIX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t
radix_key(const uint8_t *item, size_t key_off)
{
    uint64_t k;
    memcpy(&k, item + key_off, sizeof(k));
    return k;
}

/*
 * Sorts n items of `size` bytes at items by the uint64_t at key_off in each, keeping the order
 * of equal keys. tmp has room for n items. Returns where the sorted items are: items or tmp.
 */
static inline void *
radix_sort_u64(void *items, void *tmp, size_t n, size_t size, size_t key_off)
{
    uint8_t *src = items, *dst = tmp;
    if (n < 2)
        return items;
    for (unsigned shift = 0; shift < 64; shift += 8) {
        size_t at[256] = { 0 };
        for (size_t i = 0; i < n; i++)
            at[(radix_key(src + i * size, key_off) >> shift) & 0xffu]++;
        if (at[(radix_key(src, key_off) >> shift) & 0xffu] == n)
            continue; /* one byte value throughout: the pass would change nothing */
        size_t pos = 0;
        for (size_t d = 0; d < 256; d++) {
            size_t here = at[d];
            at[d] = pos;
            pos += here;
        }
        for (size_t i = 0; i < n; i++) {
            size_t d = (radix_key(src + i * size, key_off) >> shift) & 0xffu;
            memcpy(dst + at[d]++ * size, src + i * size, size);
        }
        uint8_t *swap = src;
        src = dst;
        dst = swap;
    }
    return src;
}

#endif /* CARDLEDGER_RADIX_H */
