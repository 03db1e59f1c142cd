/*
 * radix: a stable sort of fixed-size items by an unsigned 64-bit key inside each, least
 * significant byte first, skipping the bytes all keys share: a few passes over an array instead
 * of n log n calls of a comparison. Byte-string keys (LMDB's order: memcmp, then the shorter
 * first) are sorted by it in three steps: the bytes all the keys share (radix_shared()), the 8
 * bytes after them as a number (radix_head()), and then each group whose numbers are equal by
 * the whole keys (radix_sort_ties()). The projections' cache sorts a commit's keys so
 * (pcache.c), and the daemon's checkpoint its batches' out-of-order runs (daemon/checkpoint.c).
 * Header-only, so that each caller's item size is a constant the copies are made with.
 */
#ifndef CARDLEDGER_RADIX_H
#define CARDLEDGER_RADIX_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

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

/* How many of its first `common` bytes a key shares with first: the common prefix of a set of
 * keys is this folded over them, from the first key's length. */
static inline size_t
radix_shared(const uint8_t *first, const uint8_t *key, size_t key_len, size_t common)
{
    if (key_len >= common && memcmp(key, first, common) == 0)
        return common;
    size_t n = key_len < common ? key_len : common;
    size_t k = 0;
    while (k < n && key[k] == first[k])
        k++;
    return k;
}

/* The 8 bytes of a key from byte `from` on, zero-padded, as a big-endian number. For keys that
 * share their first `from` bytes, a smaller number means a smaller key; equal numbers need the
 * whole keys (a key may be longer, or end in zeros where another ends). */
static inline uint64_t
radix_head(const uint8_t *key, size_t key_len, size_t from)
{
    uint8_t head[8] = { 0 };
    if (key_len > from)
        memcpy(head, key + from, key_len - from < 8 ? key_len - from : 8);
    return cl_get_be64(head);
}

/* After radix_sort_u64(): sorts each group of items whose keys at key_off are equal with cmp. */
static inline void
radix_sort_ties(void *items, size_t n, size_t size, size_t key_off,
                int (*cmp)(const void *, const void *, void *), void *ctx)
{
    uint8_t *p = items;
    for (size_t i = 0; i < n;) {
        uint64_t k = radix_key(p + i * size, key_off);
        size_t j = i + 1;
        while (j < n && radix_key(p + j * size, key_off) == k)
            j++;
        if (j - i > 1)
            qsort_r(p + i * size, j - i, size, cmp, ctx);
        i = j;
    }
}

#endif /* CARDLEDGER_RADIX_H */
