/*
 * Fixed-width integers as bytes, in a stated byte order.
 *
 * Durable formats spell out their byte order rather than copy a host integer: checkpoints,
 * idempotency records and journal entry headers are little-endian; keys that must sort by
 * number (LMDB and table keys) are big-endian, so bytewise order is numeric order. These
 * helpers are the one spelling of that, shared by the daemon and the projector. They are pure,
 * header-only and never allocate; p must point at the full width of bytes.
 */
#ifndef CARDLEDGER_BYTES_H
#define CARDLEDGER_BYTES_H

#include <stdint.h>

/* Writes the low 16 bits of v at p, least significant byte first. */
static inline void
cl_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Writes v at p, least significant byte first. */
static inline void
cl_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes v at p, least significant byte first. */
static inline void
cl_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Reads 2 bytes at p, least significant byte first. */
static inline uint16_t
cl_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* Reads 4 bytes at p, least significant byte first. */
static inline uint32_t
cl_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads 8 bytes at p, least significant byte first. */
static inline uint64_t
cl_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Writes v at p, most significant byte first. */
static inline void
cl_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* Writes v at p, most significant byte first. */
static inline void
cl_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Reads 4 bytes at p, most significant byte first. */
static inline uint32_t
cl_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads 8 bytes at p, most significant byte first. */
static inline uint64_t
cl_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

#endif /* CARDLEDGER_BYTES_H */
