/*
 * journal-format: encoding, decoding and hashing of version-1 journal entries.
 *
 * Integers are written byte by byte rather than by memcpy of host integers, so the format is
 * the same on every host and no unaligned access happens on LMDB's (unaligned) value
 * pointers. The hash is XXH3-128 with seed 0, streamed over the previous entry's hash, the
 * first 24 header bytes and the payload; for small entries the three parts are copied into one
 * stack buffer and hashed in one call, which XXH3 guarantees gives the same digest as
 * streaming. See docs/journal-format.md for the layout this file implements.
 */
#include <assert.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack: no allocation per entry */
#include <xxhash.h>

#include "journal-format.h"

/* Entries whose hashed bytes fit this buffer are hashed in one call (the common case: events
 * are a few hundred bytes); larger ones are streamed. */
#define S_ONESHOT_BYTES_MAX 1024u

void
journal_format_put_le32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

void
journal_format_put_le64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint32_t
journal_format_get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

uint64_t
journal_format_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void
s_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t
s_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

void
journal_format_key_encode(uint64_t seq, uint8_t out[JOURNAL_FORMAT_KEY_SIZE])
{
    assert(out != NULL);
    for (unsigned i = 0; i < JOURNAL_FORMAT_KEY_SIZE; i++) {
        out[i] = (uint8_t)(seq >> (8 * (JOURNAL_FORMAT_KEY_SIZE - 1 - i)));
    }
}

int
journal_format_key_decode(const void *key, size_t key_len, uint64_t *out_seq)
{
    assert(out_seq != NULL);
    if (key == NULL || key_len != JOURNAL_FORMAT_KEY_SIZE) {
        return JOURNAL_ECORRUPT;
    }
    const uint8_t *k = key;
    uint64_t seq = 0;
    for (unsigned i = 0; i < JOURNAL_FORMAT_KEY_SIZE; i++) {
        seq = (seq << 8) | k[i];
    }
    *out_seq = seq;
    return 0;
}

void
journal_format_hash(const uint8_t prev_hash[JOURNAL_HASH_SIZE], const uint8_t *header,
                    const void *payload, size_t payload_len, uint8_t out_hash[JOURNAL_HASH_SIZE])
{
    assert(prev_hash != NULL && header != NULL && out_hash != NULL);
    assert(payload != NULL || payload_len == 0);
    assert(payload_len <= JOURNAL_PAYLOAD_MAX);

    XXH128_hash_t h;
    const size_t fixed = JOURNAL_HASH_SIZE + JOURNAL_FORMAT_HASHED_HEADER_SIZE;
    if (payload_len <= S_ONESHOT_BYTES_MAX - fixed) {
        uint8_t buf[S_ONESHOT_BYTES_MAX];
        memcpy(buf, prev_hash, JOURNAL_HASH_SIZE);
        memcpy(buf + JOURNAL_HASH_SIZE, header, JOURNAL_FORMAT_HASHED_HEADER_SIZE);
        if (payload_len > 0) {
            memcpy(buf + fixed, payload, payload_len);
        }
        h = XXH3_128bits(buf, fixed + payload_len);
    } else {
        XXH3_state_t state;
        XXH3_INITSTATE(&state);
        XXH_errorcode ec = XXH3_128bits_reset(&state);
        ec |= XXH3_128bits_update(&state, prev_hash, JOURNAL_HASH_SIZE);
        ec |= XXH3_128bits_update(&state, header, JOURNAL_FORMAT_HASHED_HEADER_SIZE);
        ec |= XXH3_128bits_update(&state, payload, payload_len);
        /* XXH3 only reports errors for NULL state or input, which cannot happen here. */
        assert(ec == XXH_OK);
        (void)ec;
        h = XXH3_128bits_digest(&state);
    }
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, h);
    static_assert(sizeof(canon.digest) == JOURNAL_HASH_SIZE, "XXH3-128 digest is 16 bytes");
    memcpy(out_hash, canon.digest, JOURNAL_HASH_SIZE);
}

void
journal_format_header_encode(uint8_t *dst, uint64_t seq, int64_t timestamp_us, uint32_t payload_len,
                             uint16_t flags)
{
    assert(dst != NULL);
    journal_format_put_le64(dst + JOURNAL_FORMAT_OFF_SEQ, seq);
    journal_format_put_le64(dst + JOURNAL_FORMAT_OFF_TIMESTAMP, (uint64_t)timestamp_us);
    journal_format_put_le32(dst + JOURNAL_FORMAT_OFF_LEN, payload_len);
    s_put_le16(dst + JOURNAL_FORMAT_OFF_VERSION, (uint16_t)JOURNAL_ENTRY_VERSION);
    s_put_le16(dst + JOURNAL_FORMAT_OFF_FLAGS, flags);
}

void
journal_format_encode(uint8_t *dst, uint64_t seq, int64_t timestamp_us, uint16_t flags,
                      const void *payload, size_t payload_len,
                      const uint8_t prev_hash[JOURNAL_HASH_SIZE],
                      uint8_t out_hash[JOURNAL_HASH_SIZE])
{
    assert(dst != NULL && prev_hash != NULL);
    assert(seq >= 1);
    assert(payload_len <= JOURNAL_PAYLOAD_MAX);
    assert(payload != NULL || payload_len == 0);
    assert((flags & ~JOURNAL_FORMAT_FLAGS_KNOWN) == 0);

    journal_format_header_encode(dst, seq, timestamp_us, (uint32_t)payload_len, flags);
    if (payload_len > 0) {
        memcpy(dst + JOURNAL_HEADER_SIZE, payload, payload_len);
    }
    uint8_t hash[JOURNAL_HASH_SIZE];
    journal_format_hash(prev_hash, dst, dst + JOURNAL_HEADER_SIZE, payload_len, hash);
    memcpy(dst + JOURNAL_FORMAT_OFF_HASH, hash, JOURNAL_HASH_SIZE);
    if (out_hash != NULL) {
        memcpy(out_hash, hash, JOURNAL_HASH_SIZE);
    }
}

int
journal_format_decode(const void *key, size_t key_len, const void *val, size_t val_len,
                      journal_entry_t *out)
{
    assert(out != NULL);
    uint64_t key_seq = 0;
    if (journal_format_key_decode(key, key_len, &key_seq) != 0) {
        return JOURNAL_ECORRUPT;
    }
    if (val == NULL || val_len < JOURNAL_HEADER_SIZE ||
        val_len - JOURNAL_HEADER_SIZE > JOURNAL_PAYLOAD_MAX) {
        return JOURNAL_ECORRUPT;
    }
    const uint8_t *v = val;
    journal_entry_t e;
    e.seq = journal_format_get_le64(v + JOURNAL_FORMAT_OFF_SEQ);
    e.timestamp_us = (int64_t)journal_format_get_le64(v + JOURNAL_FORMAT_OFF_TIMESTAMP);
    e.payload_len = journal_format_get_le32(v + JOURNAL_FORMAT_OFF_LEN);
    e.version = s_get_le16(v + JOURNAL_FORMAT_OFF_VERSION);
    e.flags = s_get_le16(v + JOURNAL_FORMAT_OFF_FLAGS);
    memcpy(e.hash, v + JOURNAL_FORMAT_OFF_HASH, JOURNAL_HASH_SIZE);
    e.payload = v + JOURNAL_HEADER_SIZE;

    if (key_seq == 0 || e.seq != key_seq || e.payload_len != val_len - JOURNAL_HEADER_SIZE ||
        e.version != JOURNAL_ENTRY_VERSION || (e.flags & ~JOURNAL_FORMAT_FLAGS_KNOWN) != 0) {
        return JOURNAL_ECORRUPT;
    }
    *out = e;
    return 0;
}

int
journal_format_check_chain(const uint8_t prev_hash[JOURNAL_HASH_SIZE], const void *val,
                           const journal_entry_t *e)
{
    assert(prev_hash != NULL && val != NULL && e != NULL);
    assert(e->payload == (const uint8_t *)val + JOURNAL_HEADER_SIZE);
    uint8_t want[JOURNAL_HASH_SIZE];
    journal_format_hash(prev_hash, val, e->payload, e->payload_len, want);
    return memcmp(want, e->hash, JOURNAL_HASH_SIZE) == 0 ? 0 : JOURNAL_ECHAIN;
}
