/*
 * Fixed-width integers as bytes, in a stated byte order.
 *
 * Durable formats spell out their byte order rather than copy a host integer: checkpoints,
 * idempotency records and journal entry headers are little-endian; keys that must sort by
 * number (LMDB and table keys) are big-endian, so bytewise order is numeric order. These
 * helpers are the one spelling of that, shared by the daemon and the projector. They are pure,
 * header-only and never allocate; p must point at the full width of bytes.
 *
 * The 64-bit ones move the bytes with one memcpy() and swap them on a host of the other order:
 * a byte loop becomes one load or store only where the optimiser unrolls it, which -O2 did not
 * (the checkpoint's packer read words 8 bytes at a time, 2026-12-07).
 */
#ifndef CARDLEDGER_BYTES_H
#define CARDLEDGER_BYTES_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CL_HOST_TO_LE64(v) __builtin_bswap64(v)
#define CL_HOST_TO_BE64(v) (v)
#else
#define CL_HOST_TO_LE64(v) (v)
#define CL_HOST_TO_BE64(v) __builtin_bswap64(v)
#endif

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
    v = CL_HOST_TO_LE64(v);
    memcpy(p, &v, sizeof(v));
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
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return CL_HOST_TO_LE64(v); /* the swap is its own inverse */
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
    v = CL_HOST_TO_BE64(v);
    memcpy(p, &v, sizeof(v));
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
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return CL_HOST_TO_BE64(v);
}

#endif /* CARDLEDGER_BYTES_H */
