/*
 * journal-format: the bytes of one journal entry (format version 1), with no LMDB and no I/O.
 *
 * An entry is stored in journal.entries under an 8-byte big-endian key (its sequence number)
 * as a 40-byte little-endian header followed by the payload. This module encodes and decodes
 * that value, computes the XXH3-128 chain hash, and checks an entry's structure and its link
 * to the previous hash. journal.c does all LMDB work and calls in here for every byte it writes
 * or reads, so the format lives in exactly one place (docs/journal-format.md describes it for
 * readers without this code). Internal to the journal library; not installed.
 */
#ifndef CARDLEDGER_JOURNAL_FORMAT_H
#define CARDLEDGER_JOURNAL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"

/** Size of an entry key: the sequence number, big-endian. */
#define JOURNAL_FORMAT_KEY_SIZE 8u

/* Offsets inside the 40-byte header (all integers little-endian). */
#define JOURNAL_FORMAT_OFF_SEQ       0u
#define JOURNAL_FORMAT_OFF_TIMESTAMP 8u
#define JOURNAL_FORMAT_OFF_LEN       16u
#define JOURNAL_FORMAT_OFF_VERSION   20u
#define JOURNAL_FORMAT_OFF_FLAGS     22u
#define JOURNAL_FORMAT_OFF_HASH      24u
/** The header bytes covered by the hash: [0, 24), everything before the hash itself. */
#define JOURNAL_FORMAT_HASHED_HEADER_SIZE 24u
/** Flags a version-1 entry may carry: none. */
#define JOURNAL_FORMAT_FLAGS_KNOWN 0u

/** Writes @p seq as the 8-byte big-endian key. */
void journal_format_key_encode(uint64_t seq, uint8_t out[JOURNAL_FORMAT_KEY_SIZE]);

/**
 * Reads a key.
 * @return 0; JOURNAL_ECORRUPT if @p key_len is not 8 (then *out_seq is untouched).
 */
int journal_format_key_decode(const void *key, size_t key_len, uint64_t *out_seq);

/**
 * Computes an entry's chain hash: XXH3-128 (seed 0) over @p prev_hash (16 bytes),
 * @p header (its first 24 bytes) and @p payload, in canonical big-endian form.
 */
void journal_format_hash(const uint8_t prev_hash[JOURNAL_HASH_SIZE], const uint8_t *header,
                         const void *payload, size_t payload_len,
                         uint8_t out_hash[JOURNAL_HASH_SIZE]);

/**
 * Writes the hashed part of a header (bytes [0, 24): sequence, timestamp, payload length,
 * version JOURNAL_ENTRY_VERSION, flags) into @p dst.
 */
void journal_format_header_encode(uint8_t *dst, uint64_t seq, int64_t timestamp_us,
                                  uint32_t payload_len, uint16_t flags);

/**
 * Encodes a complete entry value (header with its hash, then the payload) into @p dst.
 *
 * @param dst        JOURNAL_HEADER_SIZE + payload_len bytes (may be LMDB-reserved space).
 * @param prev_hash  hash of entry seq - 1, or 16 zero bytes for seq 1.
 * @param out_hash   if not NULL, receives the new entry's hash.
 * Preconditions (asserted): seq >= 1, payload_len <= JOURNAL_PAYLOAD_MAX.
 */
void journal_format_encode(uint8_t *dst, uint64_t seq, int64_t timestamp_us, uint16_t flags,
                           const void *payload, size_t payload_len,
                           const uint8_t prev_hash[JOURNAL_HASH_SIZE],
                           uint8_t out_hash[JOURNAL_HASH_SIZE]);

/**
 * Decodes and checks the structure of a stored entry.
 *
 * Checks: the key is 8 bytes; the value is at least 40 bytes; the header's sequence equals the
 * key's; the value length is exactly 40 + payload length; the payload length is at most
 * JOURNAL_PAYLOAD_MAX; version is JOURNAL_ENTRY_VERSION; no unknown flags.
 *
 * @param out  receives the entry, its payload pointing into @p val; untouched on failure.
 * @return 0; JOURNAL_ECORRUPT.
 */
int journal_format_decode(const void *key, size_t key_len, const void *val, size_t val_len,
                          journal_entry_t *out);

/**
 * Checks that a decoded entry's stored hash equals the hash recomputed over @p prev_hash,
 * its header and its payload.
 *
 * @param val  the stored value @p e was decoded from.
 * @return 0; JOURNAL_ECHAIN.
 */
int journal_format_check_chain(const uint8_t prev_hash[JOURNAL_HASH_SIZE], const void *val,
                               const journal_entry_t *e);

/** Little-endian and big-endian integer helpers shared by journal.c. */
void journal_format_put_le32(uint8_t *p, uint32_t v);
void journal_format_put_le64(uint8_t *p, uint64_t v);
uint32_t journal_format_get_le32(const uint8_t *p);
uint64_t journal_format_get_le64(const uint8_t *p);

#endif /* CARDLEDGER_JOURNAL_FORMAT_H */
