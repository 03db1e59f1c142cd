/*
 * Raw protobuf wire format for the codec: varints and fields, UTF-8 validation, the walker
 * that checks a message before protobuf-c unpacks it, and the arena protobuf-c unpacks into.
 *
 * The walker exists because protobuf-c trusts its input in two ways the ledger cannot: it
 * allocates every element of a repeated field it sees (a 4 MiB frame of two-byte IssueCard
 * rows would cost hundreds of MiB), and it unpacks strings as C strings without looking at
 * them (an embedded NUL silently shortens a string, invalid UTF-8 goes through). The walker
 * reads the bytes once, guided by protobuf-c's own descriptors, and reports the first such
 * problem by the field's path, so the request can be refused by name. It is as strict as
 * protobuf-c about the wire format itself: a known field with the wrong wire type, a truncated
 * varint or a length past the end is malformed for both.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec-private.h"

/* ---- Varints and fields ------------------------------------------------------------------- */

/* Reads a varint of at most 10 bytes; 0 or CODEC_EMALFORMED. */
static int
s_varint_get(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (unsigned shift = 0, i = 0; i < CODEC_VARINT_MAX; i++, shift += 7) {
        if (p >= end) {
            return CODEC_EMALFORMED;
        }
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return CODEC_EMALFORMED;
}

int
codec_field_next(const uint8_t **pp, const uint8_t *end, codec_field_t *out)
{
    const uint8_t *p = *pp;
    uint64_t tag;
    codec_field_t f = { 0 };

    assert(p < end);
    if (s_varint_get(&p, end, &tag) != 0 || tag > UINT32_MAX || (tag >> 3) == 0) {
        return CODEC_EMALFORMED;
    }
    f.number = (uint32_t)(tag >> 3);
    f.wire_type = (uint32_t)(tag & 7);
    switch (f.wire_type) {
    case CODEC_WT_VARINT:
        if (s_varint_get(&p, end, &f.varint) != 0) {
            return CODEC_EMALFORMED;
        }
        break;
    case CODEC_WT_64BIT:
    case CODEC_WT_32BIT:
        f.len = f.wire_type == CODEC_WT_64BIT ? 8 : 4;
        if ((size_t)(end - p) < f.len) {
            return CODEC_EMALFORMED;
        }
        f.data = p;
        p += f.len;
        break;
    case CODEC_WT_LEN: {
        uint64_t len;
        if (s_varint_get(&p, end, &len) != 0 || len > (uint64_t)(end - p)) {
            return CODEC_EMALFORMED;
        }
        f.len = (size_t)len;
        f.data = p;
        p += f.len;
        break;
    }
    default: /* groups (3, 4) are not proto3; 6 and 7 do not exist */
        return CODEC_EMALFORMED;
    }
    *pp = p;
    *out = f;
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

size_t
codec_utf8_seq(const uint8_t *s, size_t n)
{
    assert(n > 0);
    uint8_t c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf; /* the allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) {
            lo = 0xa0; /* no overlongs */
        } else if (c == 0xed) {
            hi = 0x9f; /* no surrogates */
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) {
            lo = 0x90; /* no overlongs */
        } else if (c == 0xf4) {
            hi = 0x8f; /* nothing above U+10FFFF */
        }
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return len;
}

bool
codec_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { /* the common case, without a call */
            i++;
            continue;
        }
        size_t len = codec_utf8_seq(s + i, n - i);
        if (len == 0) {
            return false;
        }
        i += len;
    }
    return true;
}

/* ---- The walker --------------------------------------------------------------------------- */

/* The named limit of a list the codec translates, or 0 for lists it leaves alone. */
static uint32_t
s_list_max(const ProtobufCMessageDescriptor *desc, uint32_t field)
{
    if (desc == &cardledger__v1__program_spec__descriptor) {
        switch (field) {
        case 6: /* denominations_minor */
            return CL_DENOMS_MAX;
        case 12: /* accepting_store_ids */
            return CL_ACCEPT_STORES_MAX;
        case 13: /* accepting_regions */
            return CL_ACCEPT_REGIONS_MAX;
        default:
            return 0;
        }
    }
    if (desc == &cardledger__v1__voucher_rule__descriptor && field == 5) { /* eligible_skus */
        return CL_SKUS_MAX;
    }
    if (desc == &cardledger__v1__issue_batch__descriptor && field == 4) { /* cards */
        return CL_ISSUE_BATCH_MAX;
    }
    if (desc == &cardledger__v1__issue_batch_result__descriptor && field == 2) { /* rows */
        return CL_ISSUE_BATCH_MAX;
    }
    return 0;
}

static uint32_t
s_wire_type_of(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return CODEC_WT_32BIT;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return CODEC_WT_64BIT;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return CODEC_WT_LEN;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_BOOL:
    case PROTOBUF_C_TYPE_ENUM:
        break;
    }
    return CODEC_WT_VARINT;
}

/* Counts the elements of a packed repeated scalar, checking every one is complete. */
static int
s_count_packed(uint32_t wire_type, const uint8_t *p, size_t len, size_t *out)
{
    size_t n = 0;
    if (wire_type == CODEC_WT_32BIT || wire_type == CODEC_WT_64BIT) {
        size_t size = wire_type == CODEC_WT_32BIT ? 4 : 8;
        if (len % size != 0) {
            return CODEC_EMALFORMED;
        }
        *out = len / size;
        return 0;
    }
    const uint8_t *end = p + len;
    while (p < end) {
        uint64_t ignored;
        if (s_varint_get(&p, end, &ignored) != 0) {
            return CODEC_EMALFORMED;
        }
        n++;
    }
    *out = n;
    return 0;
}

size_t
codec_path_append(char *path, size_t cap, size_t len, const char *name, long index)
{
    assert(path != NULL && name != NULL && len < cap);
    /* What snprintf(path + len, cap - len, "%s%s[%ld]", ...) would write, built by hand. */
    char digits[24];
    size_t nd = 0;
    if (index >= 0) {
        unsigned long v = (unsigned long)index;
        do {
            digits[nd++] = (char)('0' + v % 10u);
            v /= 10u;
        } while (v != 0);
    }
    size_t o = len;
    size_t last = cap - 1; /* room for characters ends here; the NUL always fits */
    bool cut = false;
/* ch is evaluated only when it fits: pass no side effects. */
#define S_PUT(ch)             \
    do {                      \
        if (o < last)         \
            path[o++] = (ch); \
        else                  \
            cut = true;       \
    } while (0)
    if (len > 0)
        S_PUT('.');
    for (const char *p = name; *p != '\0'; p++)
        S_PUT(*p);
    if (index >= 0) {
        S_PUT('[');
        while (nd > 0) {
            nd--;
            S_PUT(digits[nd]);
        }
        S_PUT(']');
    }
#undef S_PUT
    path[o] = '\0';
    return cut ? cap - 1 : o;
}

/* Appends ".name" or "name" and "[index]" (index >= 0) to w->path at path_len. */
static size_t
s_path_push(char *path, size_t path_len, const char *name, long index)
{
    return codec_path_append(path, CODEC_PATH_MAX, path_len, name, index);
}

static void s_problem(codec_walk_t *w, int problem, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_problem(codec_walk_t *w, int problem, const char *fmt, ...)
{
    if (w->problem != 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->problem_msg, sizeof w->problem_msg, fmt, ap);
    va_end(ap);
    w->problem = problem;
}

/* Adds n entries to the count of a limited list. */
static void
s_list_add(codec_walk_t *w, const ProtobufCMessageDescriptor *desc,
           const ProtobufCFieldDescriptor *fd, size_t n, size_t path_len)
{
    uint32_t max = s_list_max(desc, fd->id);
    if (max == 0) {
        return;
    }
    size_t i = 0;
    while (i < w->lists_n && (w->lists[i].desc != desc || w->lists[i].field != fd->id)) {
        i++;
    }
    if (i == w->lists_n) {
        /* The contract has fewer limited lists than slots; a new one is added here first. */
        assert(i < CODEC_WALK_LISTS);
        if (i == CODEC_WALK_LISTS) {
            return;
        }
        w->lists_n++;
        w->lists[i].desc = desc;
        w->lists[i].field = fd->id;
        w->lists[i].count = 0;
        w->lists[i].max = max;
        memcpy(w->lists[i].path, w->path, path_len);
        s_path_push(w->lists[i].path, path_len, fd->name, -1);
    }
    size_t count = w->lists[i].count + n;
    w->lists[i].count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
}

static int
s_walk(codec_walk_t *w, const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
       unsigned depth, size_t path_len)
{
    const uint8_t *end = p + len;
    uint32_t rep_field = 0; /* the repeated field read last, to number its elements */
    size_t rep_index = 0;

    while (p < end) {
        codec_field_t f;
        if (codec_field_next(&p, end, &f) != 0) {
            return CODEC_EMALFORMED;
        }
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(desc, f.number);
        if (fd == NULL) {
            /* Unknown fields are tolerated (evolution rules); the top level notes the first. */
            if (depth == 0 && w->top_unknown == 0) {
                w->top_unknown = f.number;
            }
            continue;
        }
        if (depth == 0 && f.number == 1 && f.wire_type == CODEC_WT_LEN) {
            w->top_id = f.data;
            w->top_id_len = f.len;
            w->has_top_id = true;
        }

        uint32_t want = s_wire_type_of(fd->type);
        bool repeated = fd->label == PROTOBUF_C_LABEL_REPEATED;
        bool packed = repeated && want != CODEC_WT_LEN && f.wire_type == CODEC_WT_LEN;
        if (f.wire_type != want && !packed) {
            return CODEC_EMALFORMED;
        }
        size_t count = 1;
        if (packed && s_count_packed(want, f.data, f.len, &count) != 0) {
            return CODEC_EMALFORMED;
        }
        long index = -1;
        if (repeated) {
            if (f.number != rep_field) {
                rep_field = f.number;
                rep_index = 0;
            }
            index = (long)rep_index;
            rep_index += count;
            s_list_add(w, desc, fd, count, path_len);
        }

        if (fd->type == PROTOBUF_C_TYPE_STRING && w->problem == 0) {
            const char *why = NULL;
            if (memchr(f.data, 0, f.len) != NULL) {
                why = "contains a NUL byte";
            } else if (!codec_utf8_valid(f.data, f.len)) {
                why = "is not valid UTF-8";
            }
            if (why != NULL) {
                s_path_push(w->path, path_len, fd->name, index);
                s_problem(w, CODEC_EINVALID, "%s %s", w->path, why);
                w->path[path_len] = '\0';
            }
        } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (depth + 1 >= CODEC_WALK_DEPTH_MAX) {
                return CODEC_EMALFORMED;
            }
            size_t sub_len = s_path_push(w->path, path_len, fd->name, index);
            int rc = s_walk(w, fd->descriptor, f.data, f.len, depth + 1, sub_len);
            w->path[path_len] = '\0';
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

int
codec_walk(codec_walk_t *w, const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len)
{
    assert(w != NULL && desc != NULL);
    assert(p != NULL || len == 0);
    w->problem = 0;
    w->problem_msg[0] = '\0';
    w->top_unknown = 0;
    w->top_id = NULL;
    w->top_id_len = 0;
    w->has_top_id = false;
    w->lists_n = 0;
    w->path[0] = '\0';

    int rc = s_walk(w, desc, p, len, 0, 0);
    if (rc != 0) {
        return rc;
    }
    /* A list over its limit wins over a bad string: it must stop the unpack. */
    for (size_t i = 0; i < w->lists_n; i++) {
        if (w->lists[i].count > w->lists[i].max) {
            w->problem = 0;
            s_problem(w, CODEC_ELIMIT, "%s has %u entries, the limit is %u", w->lists[i].path,
                      w->lists[i].count, w->lists[i].max);
            break;
        }
    }
    return 0;
}

/* ---- Arena -------------------------------------------------------------------------------- */

#define S_ARENA_ALIGN _Alignof(max_align_t)

static void *
s_arena_alloc(void *data, size_t size)
{
    codec_arena_t *a = data;
    size_t need = (size + S_ARENA_ALIGN - 1) & ~(size_t)(S_ARENA_ALIGN - 1);
    if (need == 0) {
        need = S_ARENA_ALIGN; /* a zero-size request still gets a pointer inside the arena */
    }
    if (need >= size && a->cap - a->used >= need) {
        void *p = a->mem + a->used;
        a->used += need;
        return p;
    }
    return malloc(size);
}

static void
s_arena_free(void *data, void *ptr)
{
    const codec_arena_t *a = data;
    uintptr_t p = (uintptr_t)ptr;
    uintptr_t lo = (uintptr_t)a->mem;
    if (ptr == NULL || (p >= lo && p - lo < a->cap)) {
        return; /* the arena's own memory comes back at the next reset */
    }
    free(ptr);
}

void
codec_arena_init(codec_arena_t *a, void *mem, size_t cap)
{
    assert(a != NULL);
    assert(((uintptr_t)mem & (S_ARENA_ALIGN - 1)) == 0);
    a->base.alloc = s_arena_alloc;
    a->base.free = s_arena_free;
    a->base.allocator_data = a;
    a->mem = mem;
    a->cap = mem != NULL ? cap : 0;
    a->used = 0;
}

void
codec_arena_reset(codec_arena_t *a)
{
    assert(a != NULL && a->used <= a->cap);
    a->used = 0;
}
