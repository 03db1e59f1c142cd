/*
 * Internals shared by the codec's files; nothing outside proto/codec*.c includes this.
 *
 * Four pieces:
 *   - wire primitives: varints, tags and a field reader over raw protobuf bytes, used where the
 *     codec writes or reads a message in pieces (batch framing, the replayed flag, IssueBatch
 *     rows, a stored reply embedded as it is), and the readers of the fast paths, which take
 *     only what protobuf-c itself writes;
 *   - the walker: one pass over raw bytes, guided by protobuf-c's descriptors, that runs
 *     before protobuf-c unpacks anything. It checks the wire format, refuses lists over their
 *     named limit before protobuf-c would allocate them, and finds strings with a NUL byte or
 *     invalid UTF-8 (protobuf-c unpacks a string as a C string, so a NUL would silently cut
 *     it, and it does not check UTF-8);
 *   - an arena allocator for protobuf-c's unpack, so the hot paths do not call malloc;
 *   - translation helpers between protobuf-c structs and domain.h structs shared by requests,
 *     events and replies (strings with limits, card references, program specs).
 */
#ifndef CARDLEDGER_CODEC_PRIVATE_H
#define CARDLEDGER_CODEC_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "cardledger.pb-c.h"
#include "codec.h"

/* ---- Wire primitives ---------------------------------------------------------------------- */

#define CODEC_WT_VARINT 0u
#define CODEC_WT_64BIT  1u
#define CODEC_WT_LEN    2u
#define CODEC_WT_32BIT  5u

/* The longest varint (a negative int64). */
#define CODEC_VARINT_MAX 10u

/* The four writers below are inline: replies and journal entries are written with them field
 * by field, and as calls into another file they cost as much as the rest of the writing. */

/* Bytes the varint encoding of v takes (1..10). */
static inline size_t
codec_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v as a varint at p, which has room for codec_varint_len(v) bytes; returns that. */
static inline size_t
codec_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Bytes a length-delimited field (tag, length, payload) of payload_len bytes takes. */
static inline size_t
codec_len_field_size(uint32_t field, size_t payload_len)
{
    return codec_varint_len((uint64_t)field << 3 | CODEC_WT_LEN) + codec_varint_len(payload_len) +
           payload_len;
}

/* Writes the tag and length of a length-delimited field at p; returns the bytes written. */
static inline size_t
codec_len_field_head(uint8_t *p, uint32_t field, size_t payload_len)
{
    size_t n = codec_varint_put(p, (uint64_t)field << 3 | CODEC_WT_LEN);
    return n + codec_varint_put(p + n, payload_len);
}

/* One field as read from the wire. */
typedef struct codec_field {
    uint32_t number;     /* field number, >= 1 */
    uint32_t wire_type;  /* CODEC_WT_* */
    uint64_t varint;     /* CODEC_WT_VARINT: the value */
    const uint8_t *data; /* CODEC_WT_LEN: the payload; 64BIT/32BIT: the value's bytes */
    size_t len;          /* payload length (8 or 4 for the fixed types, 0 for a varint) */
} codec_field_t;

/* ---- Writing a message by hand ------------------------------------------------------------ */

/*
 * Field by field in number order with proto3's rules, which is what protobuf_c_message_pack()
 * writes: a zero number, false and an empty string are left out. A writer either writes at
 * p + n or, with p NULL, only counts.
 */
typedef struct codec_out {
    uint8_t *p;
    size_t n;
    int err; /* CODEC_ELIMIT: a string filled its whole array (no NUL) */
} codec_out_t;

/* A varint field (uint64, uint32, bool, int64 as its two's complement), left out when 0. */
static inline void
codec_out_varint(codec_out_t *o, uint32_t field, uint64_t v)
{
    if (v == 0) {
        return;
    }
    uint64_t tag = (uint64_t)field << 3 | CODEC_WT_VARINT;
    if (o->p != NULL) {
        size_t k = codec_varint_put(o->p + o->n, tag);
        o->n += k + codec_varint_put(o->p + o->n + k, v);
    } else {
        o->n += codec_varint_len(tag) + codec_varint_len(v);
    }
}

/* int32 and enum values: a negative one is sign-extended to ten bytes, as protobuf does. */
static inline void
codec_out_int32(codec_out_t *o, uint32_t field, int32_t v)
{
    codec_out_varint(o, field, (uint64_t)(int64_t)v);
}

/* The tag and length of a length-delimited field whose len bytes follow. */
static inline void
codec_out_head(codec_out_t *o, uint32_t field, size_t len)
{
    o->n += o->p != NULL ? codec_len_field_head(o->p + o->n, field, len)
                         : codec_len_field_size(field, len) - len;
}

/* A bytes or string field, left out when empty. */
static inline void
codec_out_bytes(codec_out_t *o, uint32_t field, const void *data, size_t len)
{
    if (len == 0) {
        return;
    }
    codec_out_head(o, field, len);
    if (o->p != NULL) {
        memcpy(o->p + o->n, data, len);
    }
    o->n += len;
}

/* A string from a char array of cap bytes, which must hold its NUL (as codec_out_str() checks). */
static inline void
codec_out_chars(codec_out_t *o, uint32_t field, const char *s, size_t cap)
{
    const char *end = memchr(s, '\0', cap);
    if (end == NULL) {
        o->err = CODEC_ELIMIT;
        return;
    }
    codec_out_bytes(o, field, s, (size_t)(end - s));
}

#define CODEC_OUT_ARRAY(o, field, array) codec_out_chars((o), (field), (array), sizeof(array))

/* Reads the field at *p (p < end) and advances *p past it. Returns 0 or CODEC_EMALFORMED
 * (truncated, bad varint, field number 0, groups, unknown wire type). */
int codec_field_next(const uint8_t **p, const uint8_t *end, codec_field_t *out);

/*
 * Whether codec_batch_decode() may take a batch issue by its fast path (see codec-request.c); on
 * by default. For tests, which decode the same bytes both ways and compare the results.
 */
void codec_batch_fast_path(codec_batch_t *b, bool on);

/*
 * codec_event_encode() the way every event type can take: the protobuf-c message filled from ev,
 * then s_entry_pack(). codec_event_encode() writes CardRedeemed and CardIssued straight from ev
 * instead; tests encode the same events both ways and compare the bytes.
 */
int codec_event_encode_generic(const cl_event_t *ev, uint8_t *buf, size_t cap, size_t *out_len);

/*
 * codec_reply_decode()'s two paths. The fast one reads a reply whose result is none, a card, an
 * issued card, a batch or a redemption when protobuf-c wrote it and nothing in it is refused,
 * and returns true; otherwise it returns false and *out is as it was (rows may have been
 * written). The general one is the walker, protobuf-c's unpack into an arena, then the
 * translation; codec_reply_decode() takes it when the fast one declines. Tests decode the same
 * bytes both ways and compare.
 */
bool codec_reply_decode_fast(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
                             size_t rows_cap);
int codec_reply_decode_general(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
                               size_t rows_cap);

/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or values > U+10FFFF). */
bool codec_utf8_valid(const uint8_t *s, size_t n);

/* Length of the UTF-8 sequence starting at s[0..n), or 0 when it is not a valid one. */
size_t codec_utf8_seq(const uint8_t *s, size_t n);

/* ---- Reading a message the way protobuf-c writes it ------------------------------------ */

/*
 * The fast paths (a batch issue or a redeem in codec-request.c, an IssueBatch reply in
 * codec-reply.c) read only what protobuf-c itself writes: each field once, in number order,
 * varints in their shortest form, strings not empty and within their limit. Anything else makes
 * them return false, and the caller decodes the bytes by the general path instead.
 */

/* Reads a varint in its shortest form (protobuf-c writes no other), of at most 64 bits. */
static inline bool
codec_fast_varint_get(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64 && p < end; shift += 7) {
        uint8_t byte = *p++;
        v |= (uint64_t)(byte & 0x7fu) << shift;
        if (byte < 0x80u) {
            /* A last byte of 0 makes a longer form than needed; the tenth holds one bit. */
            if ((byte == 0 && shift > 0) || (shift == 63 && byte > 1)) {
                return false;
            }
            *out = v;
            *pp = p;
            return true;
        }
    }
    return false;
}

/* Reads the field at *p, and says whether it was read and is written as protobuf-c writes it. */
static inline bool
codec_fast_field(const uint8_t **pp, const uint8_t *end, codec_field_t *f)
{
    const uint8_t *p = *pp;
    uint64_t tag, v;
    if (!codec_fast_varint_get(&p, end, &tag) || tag > UINT32_MAX || (tag >> 3) == 0) {
        return false;
    }
    f->number = (uint32_t)(tag >> 3);
    f->wire_type = (uint32_t)(tag & 7);
    if (!codec_fast_varint_get(&p, end, &v)) {
        return false;
    }
    if (f->wire_type == CODEC_WT_VARINT) {
        f->varint = v;
        f->data = NULL;
        f->len = 0;
    } else if (f->wire_type == CODEC_WT_LEN && v <= (uint64_t)(end - p)) {
        f->varint = 0;
        f->data = p;
        f->len = (size_t)v;
        p += v;
    } else {
        return false; /* no fixed-width field in the messages read here */
    }
    *pp = p;
    return true;
}

/* A string field protobuf-c would pack (not empty) that the general path takes as it is. */
static inline bool
codec_fast_str(const codec_field_t *f, char *dst, size_t cap)
{
    if (f->wire_type != CODEC_WT_LEN || f->len == 0 || f->len >= cap) {
        return false;
    }
    /* No NUL byte, and UTF-8: plain ASCII is both; anything else is checked in full. */
    bool ascii = true;
    for (size_t i = 0; i < f->len; i++) {
        if (f->data[i] == 0) {
            return false;
        }
        ascii &= f->data[i] < 0x80u;
    }
    if (!ascii && !codec_utf8_valid(f->data, f->len)) {
        return false;
    }
    memcpy(dst, f->data, f->len);
    dst[f->len] = '\0';
    return true;
}

/* A varint field protobuf-c would pack (not zero). */
static inline bool
codec_fast_varint(const codec_field_t *f)
{
    return f->wire_type == CODEC_WT_VARINT && f->varint != 0;
}

/* ---- The walker --------------------------------------------------------------------------- */

/* Nesting the walker follows: Request -> DefineProgram -> ProgramSpec -> VoucherRule is 3, a
 * Reply embedding a stored Reply a few more. Deeper is malformed (and would let a peer make
 * protobuf-c's recursive unpack run out of stack). */
#define CODEC_WALK_DEPTH_MAX 16
#define CODEC_WALK_LISTS     8
#define CODEC_PATH_MAX       128

/* What one walk found. */
typedef struct codec_walk {
    /* The first content problem: 0, CODEC_ELIMIT (a list over its limit; these win, as they
     * must stop the unpack) or CODEC_EINVALID (a string with a NUL or invalid UTF-8). */
    int problem;
    char problem_msg[CL_MESSAGE_MAX + 1]; /* "redeem.order_ref is not valid UTF-8" */
    uint32_t top_unknown;                 /* the first unknown top-level field number, or 0 */
    const uint8_t *top_id;                /* the last top-level field 1, when length-delimited */
    size_t top_id_len;
    bool has_top_id;
    /* Entries counted so far of each limited list, over the whole message. */
    struct {
        const ProtobufCMessageDescriptor *desc;
        uint32_t field;
        uint32_t count;
        uint32_t max;
        char path[CODEC_PATH_MAX];
    } lists[CODEC_WALK_LISTS];
    size_t lists_n;
    char path[CODEC_PATH_MAX]; /* scratch: the path of the field being read */
} codec_walk_t;

/*
 * Appends ".name" (just "name" when len is 0) and "[index]" when index >= 0 to the path of len
 * characters in path[cap], NUL-terminated, exactly as snprintf() would. Returns the new length,
 * or cap - 1 when the path had to be cut. No formatted printing: this runs for every nested
 * field of every request.
 */
size_t codec_path_append(char *path, size_t cap, size_t len, const char *name, long index);

/*
 * Walks len bytes at p as a message of type desc, filling *w (which it initialises). Returns 0
 * (look at w->problem for content problems) or CODEC_EMALFORMED.
 */
int codec_walk(codec_walk_t *w, const ProtobufCMessageDescriptor *desc, const uint8_t *p,
               size_t len);

/* ---- Arena allocator for protobuf-c ------------------------------------------------------- */

/* A bump allocator over a caller's buffer, falling back to malloc when the buffer is full.
 * free() is a no-op inside the buffer; codec_arena_reset() makes all of it free again. */
typedef struct codec_arena {
    ProtobufCAllocator base; /* first: protobuf-c gets &arena->base */
    unsigned char *mem;
    size_t cap;
    size_t used;
} codec_arena_t;

void codec_arena_init(codec_arena_t *a, void *mem, size_t cap);
void codec_arena_reset(codec_arena_t *a);

/* ---- Translation: protobuf-c -> domain ---------------------------------------------------- */

/*
 * A sticky translation context: the first failure is kept, later calls do nothing. For a
 * request the failure is a refusal with a sentence naming the field by its path; for an event
 * or a reply it is just an error code.
 */
typedef struct codec_in {
    int err;            /* 0, CODEC_ELIMIT or CODEC_EINVALID */
    cl_status_t status; /* CL_OK, CL_TOO_LARGE or CL_INVALID_ARGUMENT (mirrors err) */
    char *msg;          /* where the sentence goes, or NULL */
    size_t msg_cap;
    bool strict_enums;         /* requests: refuse enum values outside the known set */
    char path[CODEC_PATH_MAX]; /* the enclosing fields, "issue_batch.cards[3]" */
    size_t path_len;
} codec_in_t;

void codec_in_init(codec_in_t *in, char *msg, size_t msg_cap, bool strict_enums);

/* Records a failure (when none is recorded yet) with a printf-style sentence. */
void codec_in_fail(codec_in_t *in, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends ".name" (or "name[index]" with index >= 0) to the path; returns the length to give
 * back to codec_in_pop(). */
size_t codec_in_push(codec_in_t *in, const char *name, long index);
void codec_in_pop(codec_in_t *in, size_t len);

/* Copies src (NULL reads as "") into dst[dst_cap], or fails with CODEC_ELIMIT naming field. */
void codec_in_str(codec_in_t *in, char *dst, size_t dst_cap, const char *src, const char *field);

/* Checks a list count against its limit; false (and a failure) when over. */
bool codec_in_count(codec_in_t *in, size_t n, size_t max, const char *field);

/* An enum value: with strict_enums, a value outside [0, max] fails with CODEC_EINVALID. */
int codec_in_enum(codec_in_t *in, int value, int max, const char *field);

/* A card reference (NULL reads as none); field names it ("card"). */
void codec_in_card_ref(codec_in_t *in, cl_card_ref_t *dst, const Cardledger__V1__CardRef *src,
                       const char *field);

/* A program spec (NULL reads as an empty spec); the caller has pushed "spec". */
void codec_in_spec(codec_in_t *in, cl_program_spec_t *dst, const Cardledger__V1__ProgramSpec *src);

/* ---- Translation: domain -> protobuf-c ---------------------------------------------------- */

/*
 * protobuf-c's structs hold `char *` for strings it never writes through when packing. These
 * helpers hand it the domain struct's arrays; an array without a NUL inside it sets *err to
 * CODEC_ELIMIT and gives "".
 */
char *codec_out_str(int *err, const char *s, size_t cap);
#define CODEC_OUT_STR(err, array) codec_out_str((err), (array), sizeof(array))

/* Fills m from r; returns m, or NULL when the reference is empty (card_id 0 and no code). */
Cardledger__V1__CardRef *codec_out_card_ref(int *err, const cl_card_ref_t *r,
                                            Cardledger__V1__CardRef *m);

/* Storage a packed ProgramSpec points into while it is packed. */
typedef struct codec_spec_scratch {
    Cardledger__V1__ValidityWindow window;
    Cardledger__V1__VoucherRule voucher;
    char *stores[CL_ACCEPT_STORES_MAX];
    char *regions[CL_ACCEPT_REGIONS_MAX];
    char *skus[CL_SKUS_MAX];
} codec_spec_scratch_t;

void codec_out_spec(int *err, const cl_program_spec_t *s, Cardledger__V1__ProgramSpec *m,
                    codec_spec_scratch_t *scratch);

/* Packs msg into buf[cap] (buf may be NULL when cap is 0, to size only). Returns 0 with the
 * size in *out_len, or CODEC_ENOSPC. */
int codec_pack(const ProtobufCMessage *msg, uint8_t *buf, size_t cap, size_t *out_len);

/* ---- Events ------------------------------------------------------------------------------- */

/* codec_event_decode() without its fast path for plain card events: always the walker,
 * protobuf-c and the mapping. For tests that hold the fast path to the same bytes. */
int codec_event_decode_full(const void *buf, size_t len, cl_event_t *out);

/* The fast path alone: 0 when it took the entry (*out decoded, zeroed first), 1 when it leaves
 * it to the full path (*out garbage). For tests that hold an entry to the fast path. */
int codec_event_decode_fast(const void *buf, size_t len, cl_event_t *out);

#endif /* CARDLEDGER_CODEC_PRIVATE_H */
