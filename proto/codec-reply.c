/*
 * Replies: cl_reply_t -> a packed Reply (the daemon), ReplyBatch framing, and the way back
 * (clients and tests).
 *
 * Two results are written in pieces rather than through protobuf-c structs: a batch result,
 * whose up to CL_ISSUE_BATCH_MAX rows would otherwise need an array of protobuf-c structs, and
 * a request result, whose stored Reply is embedded exactly as it was stored (the bytes of a
 * message field are the message's encoding, so nothing is unpacked or re-packed). Both are the
 * last field of the Reply, so the field order stays canonical.
 *
 * Replaying a stored reply costs no decoding at all: codec_reply_batch_append() copies its
 * bytes and appends `replayed = true`; protobuf readers keep the last value of a field.
 */
#include <assert.h>
#include <stdalign.h>
#include <string.h>

#include "cardledger-config.h"
#include "codec-private.h"

/* A stack arena large enough that a reply without batch rows needs no malloc to unpack. */
#define S_REPLY_ARENA_BYTES 16384

/* Reply fields written by hand. */
#define S_REPLY_REPLAYED 4u
#define S_REPLY_REQUEST  16u

/*
 * Replies are written by hand. A reply is what the daemon makes for every command, and
 * protobuf_c_message_pack() reads the descriptors field by field and sizes each nested message
 * again at every level above it (a redeem's CardView three times). Here each message is written
 * field by field in number order with proto3's rules, which is what protobuf-c writes: a zero
 * number, false and an empty string are left out; a message that is present is written even
 * when it is empty. tests/test-codec.c unpacks every result with protobuf-c, packs it again and
 * compares the bytes. Only DaemonStatus (a query of operators) still goes through protobuf-c.
 */
static void
s_out_card_view(codec_out_t *o, const cl_card_view_t *v)
{
    codec_out_varint(o, 1, v->card_id);
    CODEC_OUT_ARRAY(o, 2, v->code_masked);
    CODEC_OUT_ARRAY(o, 3, v->merchant_id);
    CODEC_OUT_ARRAY(o, 4, v->program_id);
    codec_out_int32(o, 5, (int32_t)v->kind);
    CODEC_OUT_ARRAY(o, 6, v->currency);
    codec_out_int32(o, 7, (int32_t)v->state);
    codec_out_varint(o, 8, v->frozen);
    codec_out_varint(o, 9, v->locked);
    codec_out_varint(o, 10, (uint64_t)v->balance_minor);
    codec_out_varint(o, 11, v->uses_left);
    codec_out_varint(o, 12, (uint64_t)v->face_value_minor);
    codec_out_varint(o, 13, (uint64_t)v->issued_at_us);
    codec_out_varint(o, 14, (uint64_t)v->valid_from_us);
    codec_out_varint(o, 15, (uint64_t)v->expires_at_us);
    CODEC_OUT_ARRAY(o, 16, v->holder);
    codec_out_varint(o, 17, v->pin_failures);
    codec_out_varint(o, 18, v->open_offer_id);
    codec_out_varint(o, 19, v->transfers_done);
    codec_out_varint(o, 20, (uint64_t)v->redeemed_minor);
}

/* A CardView field whose body is len bytes long (counted once, not again). */
static void
s_out_card_view_field(codec_out_t *o, uint32_t field, const cl_card_view_t *v, size_t len)
{
    codec_out_head(o, field, len);
    if (o->p != NULL) {
        s_out_card_view(o, v);
    } else {
        o->n += len;
    }
}

static void
s_out_row(codec_out_t *o, const cl_issued_row_t *row)
{
    CODEC_OUT_ARRAY(o, 1, row->row_key);
    codec_out_int32(o, 2, (int32_t)row->status);
    CODEC_OUT_ARRAY(o, 3, row->message);
    codec_out_varint(o, 4, row->already_issued);
    codec_out_varint(o, 5, row->card_id);
    CODEC_OUT_ARRAY(o, 6, row->code);
    CODEC_OUT_ARRAY(o, 7, row->pin);
}

/* IssueBatchResult: batch_id (1), rows (2), issued (3), already_issued (4). */
static void
s_out_batch(codec_out_t *o, const cl_reply_t *r)
{
    codec_out_varint(o, 1, r->batch_id);
    for (uint32_t i = 0; i < r->rows_count; i++) {
        codec_out_t c = { NULL, 0, 0 };
        s_out_row(&c, &r->rows[i]);
        codec_out_head(o, 2, c.n);
        s_out_row(o, &r->rows[i]);
    }
    codec_out_varint(o, 3, r->batch_issued);
    codec_out_varint(o, 4, r->batch_already_issued);
}

/* RequestRecord: found (1), then the stored Reply as it is (2). */
static void
s_out_request(codec_out_t *o, const cl_reply_t *r)
{
    codec_out_varint(o, 1, r->found);
    if (r->stored_reply != NULL) {
        codec_out_head(o, 2, r->stored_reply_len);
        if (o->p != NULL) {
            memcpy(o->p + o->n, r->stored_reply, r->stored_reply_len);
        }
        o->n += r->stored_reply_len;
    }
}

/* The result message's body; cv[] are the bodies' lengths of its card views, status a packed
 * DaemonStatus's length. */
static void
s_out_result(codec_out_t *o, const cl_reply_t *r, const size_t cv[2],
             const Cardledger__V1__DaemonStatus *status, size_t status_len)
{
    switch (r->result) {
    case CL_RES_CARD:
        if (o->p != NULL) {
            s_out_card_view(o, &r->card);
        } else {
            o->n += cv[0];
        }
        break;
    case CL_RES_ISSUED:
        s_out_card_view_field(o, 1, &r->card, cv[0]);
        CODEC_OUT_ARRAY(o, 2, r->code);
        CODEC_OUT_ARRAY(o, 3, r->pin);
        break;
    case CL_RES_BATCH:
        s_out_batch(o, r);
        break;
    case CL_RES_REDEEMED:
        s_out_card_view_field(o, 1, &r->card, cv[0]);
        codec_out_varint(o, 2, r->redemption_seq);
        codec_out_varint(o, 3, (uint64_t)r->amount_minor);
        codec_out_varint(o, 4, r->uses);
        codec_out_varint(o, 5, (uint64_t)r->discount_minor);
        CODEC_OUT_ARRAY(o, 6, r->sku);
        break;
    case CL_RES_GIFT:
        s_out_card_view_field(o, 1, &r->card, cv[0]);
        codec_out_varint(o, 2, r->offer_id);
        CODEC_OUT_ARRAY(o, 3, r->claim_secret);
        codec_out_varint(o, 4, (uint64_t)r->offer_expires_at_us);
        break;
    case CL_RES_TRANSFER:
        s_out_card_view_field(o, 1, &r->card, cv[0]);
        s_out_card_view_field(o, 2, &r->card2, cv[1]);
        codec_out_varint(o, 3, (uint64_t)r->amount_minor);
        break;
    case CL_RES_REQUEST:
        s_out_request(o, r);
        break;
    case CL_RES_STATUS:
        if (o->p != NULL) {
            protobuf_c_message_pack(&status->base, o->p + o->n);
        }
        o->n += status_len;
        break;
    default:
        break;
    }
}

/* The Reply's own fields: request_id (1), status (2), message (3), replayed (4), last_seq (5),
 * as_of_seq (6). */
static void
s_out_top(codec_out_t *o, const cl_reply_t *r)
{
    CODEC_OUT_ARRAY(o, 1, r->request_id);
    codec_out_int32(o, 2, (int32_t)r->status);
    CODEC_OUT_ARRAY(o, 3, r->message);
    codec_out_varint(o, 4, r->replayed);
    codec_out_varint(o, 5, r->last_seq);
    codec_out_varint(o, 6, r->as_of_seq);
}

/* Encodes r into buf[cap], or only measures it when buf is NULL. */
static int
s_reply_write(const cl_reply_t *r, uint8_t *buf, size_t cap, size_t *out_len)
{
    int err = 0;
    Cardledger__V1__DaemonStatus status;
    size_t status_len = 0;
    size_t cv[2] = { 0, 0 };

    switch (r->result) {
    case CL_RES_NONE:
        break;
    case CL_RES_CARD:
    case CL_RES_ISSUED:
    case CL_RES_REDEEMED:
    case CL_RES_GIFT:
    case CL_RES_TRANSFER: {
        codec_out_t c = { NULL, 0, 0 };
        s_out_card_view(&c, &r->card);
        cv[0] = c.n;
        if (r->result == CL_RES_TRANSFER) {
            s_out_card_view(&c, &r->card2);
            cv[1] = c.n - cv[0];
        }
        err = c.err;
        break;
    }
    case CL_RES_BATCH:
        if (r->rows_count > CL_ISSUE_BATCH_MAX) {
            return CODEC_ELIMIT;
        }
        if (r->rows_count > 0 && r->rows == NULL) {
            return CODEC_EINVAL;
        }
        break;
    case CL_RES_REQUEST:
        if (r->stored_reply != NULL) {
            codec_walk_t walk;
            if (codec_walk(&walk, &cardledger__v1__reply__descriptor, r->stored_reply,
                           r->stored_reply_len) != 0) {
                return CODEC_EMALFORMED;
            }
        }
        break;
    case CL_RES_STATUS:
        cardledger__v1__daemon_status__init(&status);
        status.version = CODEC_OUT_STR(&err, CARDLEDGER_VERSION);
        status.head_seq = r->status_head_seq;
        status.now_us = r->status_now_us;
        status.cards = r->status_cards;
        status.checkpoint_seq = r->status_checkpoint_seq;
        status_len = protobuf_c_message_get_packed_size(&status.base);
        break;
    default:
        return CODEC_EINVAL;
    }

    /* The Reply's own fields, then the result, whose field number is its case. */
    codec_out_t o = { NULL, 0, err };
    s_out_top(&o, r);
    size_t top = o.n;
    size_t body = 0;
    if (r->result != CL_RES_NONE) {
        s_out_result(&o, r, cv, &status, status_len);
        body = o.n - top;
        o.n = top + codec_len_field_size((uint32_t)r->result, body);
    }
    if (o.err != 0) {
        return o.err;
    }
    size_t total = o.n;
    if (buf == NULL) {
        *out_len = total;
        return 0;
    }
    if (total > cap) {
        return CODEC_ENOSPC;
    }
    o = (codec_out_t){ buf, 0, 0 };
    s_out_top(&o, r);
    if (r->result != CL_RES_NONE) {
        codec_out_head(&o, (uint32_t)r->result, body);
        s_out_result(&o, r, cv, &status, status_len);
    }
    assert(o.n == total && o.err == 0);
    *out_len = total;
    return 0;
}

int
codec_reply_encode(const cl_reply_t *r, uint8_t *buf, size_t cap, size_t *out_len)
{
    if (r == NULL || out_len == NULL || (buf == NULL && cap > 0)) {
        return CODEC_EINVAL;
    }
    uint8_t none;
    return s_reply_write(r, buf != NULL ? buf : &none, cap, out_len);
}

int
codec_reply_encoded_size(const cl_reply_t *r, size_t *out_len)
{
    if (r == NULL || out_len == NULL) {
        return CODEC_EINVAL;
    }
    return s_reply_write(r, NULL, 0, out_len);
}

/* ---- ReplyBatch --------------------------------------------------------------------------- */

int
codec_reply_batch_append(uint8_t *buf, size_t cap, size_t *inout_len, const uint8_t *reply,
                         size_t reply_len, bool mark_replayed)
{
    if (buf == NULL || inout_len == NULL || *inout_len > cap || (reply == NULL && reply_len > 0)) {
        return CODEC_EINVAL;
    }
    size_t body = reply_len + (mark_replayed ? 2 : 0);
    size_t need = codec_len_field_size(1, body);
    if (need > cap - *inout_len) {
        return CODEC_ENOSPC;
    }
    size_t o = *inout_len;
    o += codec_len_field_head(buf + o, 1, body);
    if (reply_len > 0) {
        memmove(buf + o, reply, reply_len);
        o += reply_len;
    }
    if (mark_replayed) {
        buf[o++] = (uint8_t)(S_REPLY_REPLAYED << 3 | CODEC_WT_VARINT);
        buf[o++] = 1;
    }
    assert(o - *inout_len == need);
    *inout_len = o;
    return 0;
}

int
codec_reply_batch_next(const void *batch, size_t len, size_t *inout_off, const uint8_t **out_reply,
                       size_t *out_len)
{
    if (inout_off == NULL || out_reply == NULL || out_len == NULL || (batch == NULL && len > 0) ||
        *inout_off > len) {
        return CODEC_EINVAL;
    }
    const uint8_t *start = batch;
    const uint8_t *p = start + *inout_off;
    const uint8_t *end = start + len;
    while (p < end) {
        codec_field_t f;
        if (codec_field_next(&p, end, &f) != 0) {
            return CODEC_EMALFORMED;
        }
        if (f.number != 1) {
            continue;
        }
        if (f.wire_type != CODEC_WT_LEN) {
            return CODEC_EMALFORMED;
        }
        *out_reply = f.data;
        *out_len = f.len;
        *inout_off = (size_t)(p - start);
        return 0;
    }
    return CODEC_EEND;
}

/* ---- Decoding ----------------------------------------------------------------------------- */

static void
s_card_view_in(codec_in_t *in, cl_card_view_t *d, const Cardledger__V1__CardView *s)
{
    if (s == NULL) {
        return;
    }
    d->card_id = s->card_id;
    codec_in_str(in, d->code_masked, sizeof d->code_masked, s->code_masked, "code_masked");
    codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
    codec_in_str(in, d->program_id, sizeof d->program_id, s->program_id, "program_id");
    d->kind = (cl_kind_t)s->kind;
    codec_in_str(in, d->currency, sizeof d->currency, s->currency, "currency");
    d->state = (cl_card_state_t)s->state;
    d->frozen = s->frozen != 0;
    d->locked = s->locked != 0;
    d->balance_minor = s->balance_minor;
    d->uses_left = s->uses_left;
    d->face_value_minor = s->face_value_minor;
    d->issued_at_us = s->issued_at_us;
    d->valid_from_us = s->valid_from_us;
    d->expires_at_us = s->expires_at_us;
    codec_in_str(in, d->holder, sizeof d->holder, s->holder, "holder");
    d->pin_failures = s->pin_failures;
    d->open_offer_id = s->open_offer_id;
    d->transfers_done = s->transfers_done;
    d->redeemed_minor = s->redeemed_minor;
}

/* The payload of the last length-delimited field `field` at the top level of p[0..len). */
static bool
s_find_last(const uint8_t *p, size_t len, uint32_t field, const uint8_t **out, size_t *out_len)
{
    const uint8_t *end = p + len;
    bool found = false;
    while (p < end) {
        codec_field_t f;
        if (codec_field_next(&p, end, &f) != 0) {
            return false;
        }
        if (f.number == field && f.wire_type == CODEC_WT_LEN) {
            *out = f.data;
            *out_len = f.len;
            found = true;
        }
    }
    return found;
}

/* Translates the result of an unpacked reply into d (zero). */
static int
s_result_in(codec_in_t *in, const Cardledger__V1__Reply *m, const uint8_t *buf, size_t len,
            cl_reply_t *d, cl_issued_row_t *rows, size_t rows_cap)
{
    switch (m->result_case) {
    case CARDLEDGER__V1__REPLY__RESULT__NOT_SET:
        break;
    case CARDLEDGER__V1__REPLY__RESULT_CARD:
        s_card_view_in(in, &d->card, m->card);
        break;
    case CARDLEDGER__V1__REPLY__RESULT_ISSUED:
        s_card_view_in(in, &d->card, m->issued->card);
        codec_in_str(in, d->code, sizeof d->code, m->issued->code, "code");
        codec_in_str(in, d->pin, sizeof d->pin, m->issued->pin, "pin");
        break;
    case CARDLEDGER__V1__REPLY__RESULT_BATCH: {
        const Cardledger__V1__IssueBatchResult *s = m->batch;
        d->batch_id = s->batch_id;
        d->batch_issued = s->issued;
        d->batch_already_issued = s->already_issued;
        if (!codec_in_count(in, s->n_rows, CL_ISSUE_BATCH_MAX, "batch.rows")) {
            break;
        }
        if (s->n_rows > rows_cap) {
            return CODEC_ENOSPC;
        }
        for (size_t i = 0; i < s->n_rows; i++) {
            const Cardledger__V1__IssuedRow *sr = s->rows[i];
            cl_issued_row_t *dr = &rows[i];
            memset(dr, 0, sizeof *dr);
            codec_in_str(in, dr->row_key, sizeof dr->row_key, sr->row_key, "row_key");
            dr->status = (cl_status_t)sr->status;
            codec_in_str(in, dr->message, sizeof dr->message, sr->message, "message");
            dr->already_issued = sr->already_issued != 0;
            dr->card_id = sr->card_id;
            codec_in_str(in, dr->code, sizeof dr->code, sr->code, "code");
            codec_in_str(in, dr->pin, sizeof dr->pin, sr->pin, "pin");
        }
        d->rows_count = (uint32_t)s->n_rows;
        d->rows = rows;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_REDEEMED: {
        const Cardledger__V1__RedeemResult *s = m->redeemed;
        s_card_view_in(in, &d->card, s->card);
        d->redemption_seq = s->redemption_seq;
        d->amount_minor = s->amount_minor;
        d->uses = s->uses;
        d->discount_minor = s->discount_minor;
        codec_in_str(in, d->sku, sizeof d->sku, s->sku, "sku");
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_GIFT: {
        const Cardledger__V1__GiftResult *s = m->gift;
        s_card_view_in(in, &d->card, s->card);
        d->offer_id = s->offer_id;
        codec_in_str(in, d->claim_secret, sizeof d->claim_secret, s->claim_secret, "claim_secret");
        d->offer_expires_at_us = s->offer_expires_at_us;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_TRANSFER:
        s_card_view_in(in, &d->card, m->transfer->from_card);
        s_card_view_in(in, &d->card2, m->transfer->to_card);
        d->amount_minor = m->transfer->amount_minor;
        break;
    case CARDLEDGER__V1__REPLY__RESULT_REQUEST: {
        const uint8_t *rec;
        size_t rec_len;
        d->found = m->request->found != 0;
        if (m->request->reply != NULL && s_find_last(buf, len, S_REPLY_REQUEST, &rec, &rec_len)) {
            const uint8_t *stored;
            size_t stored_len;
            if (s_find_last(rec, rec_len, 2, &stored, &stored_len)) {
                d->stored_reply = stored;
                d->stored_reply_len = stored_len;
            }
        }
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_DAEMON_STATUS: {
        const Cardledger__V1__DaemonStatus *s = m->daemon_status;
        codec_in_str(in, d->status_version, sizeof d->status_version, s->version, "version");
        d->status_head_seq = s->head_seq;
        d->status_now_us = s->now_us;
        d->status_cards = s->cards;
        d->status_checkpoint_seq = s->checkpoint_seq;
        break;
    }
    default:
        /* The projector's results: the field number, without a payload for now. */
        break;
    }
    d->result = (cl_result_type_t)m->result_case;
    return 0;
}

int
codec_reply_decode_general(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
                           size_t rows_cap)
{
    if (out == NULL || (buf == NULL && len > 0) || (rows == NULL && rows_cap > 0)) {
        return CODEC_EINVAL;
    }
    const uint8_t *p = buf;
    codec_walk_t walk;
    int rc = codec_walk(&walk, &cardledger__v1__reply__descriptor, p, len);
    if (rc != 0) {
        return rc;
    }
    if (walk.problem != 0) {
        return walk.problem;
    }

    alignas(max_align_t) unsigned char mem[S_REPLY_ARENA_BYTES];
    codec_arena_t arena;
    codec_arena_init(&arena, mem, sizeof mem);
    Cardledger__V1__Reply *m = cardledger__v1__reply__unpack(&arena.base, len, p);
    if (m == NULL) {
        return CODEC_EMALFORMED;
    }

    cl_reply_t d;
    memset(&d, 0, sizeof d);
    codec_in_t in;
    codec_in_init(&in, NULL, 0, false);
    codec_in_str(&in, d.request_id, sizeof d.request_id, m->request_id, "request_id");
    d.status = (cl_status_t)m->status;
    codec_in_str(&in, d.message, sizeof d.message, m->message, "message");
    d.replayed = m->replayed != 0;
    d.last_seq = m->last_seq;
    d.as_of_seq = m->as_of_seq;
    rc = s_result_in(&in, m, p, len, &d, rows, rows_cap);
    cardledger__v1__reply__free_unpacked(m, &arena.base);
    if (rc == 0) {
        rc = in.err;
    }
    if (rc != 0) {
        return rc;
    }
    memcpy(out, &d, sizeof d);
    return 0;
}

/* ---- The replies read most, the fast way -------------------------------------------------- */

/*
 * The general path above walks a reply, unpacks it with protobuf-c into an arena and copies every
 * string out of it: about 12,800 instructions for a redeem's reply, and 4,000 a row for a batch
 * issue's (callgrind, in the bench). The fast path reads a Reply whose result is none, a card,
 * an issued card, a batch or a redemption straight into the caller's structs, and only when it
 * is written as protobuf-c writes it and nothing in it is refused (codec-private.h): each field
 * once and in number order, no unknown field, enums and counts within their C types, strings
 * within their arrays, without a NUL, in UTF-8. Anything else, it leaves to the general path:
 * the result is the same either way (tests/test-codec.c decodes the same bytes both ways).
 */

enum {
    S_F_U64 = 1, /* uint64, or int64 as its two's complement (protobuf-c reads it so) */
    S_F_U32,     /* uint32 */
    S_F_ENUM,    /* an enum, stored as an int32: 0 to INT32_MAX only */
    S_F_BOOL,    /* bool: protobuf-c writes true as 1 */
    S_F_STR,     /* string into char[cap] */
    S_F_MSG,     /* an embedded message, read by the table sub */
};

/* One field of a message: where it goes, from the base the message is read into. The fields of
 * a table are in number order and end with number 0. */
typedef struct s_fast_slot {
    uint8_t number;
    uint8_t kind;                  /* S_F_* */
    uint16_t off;                  /* offset from the base */
    uint16_t cap;                  /* S_F_STR: the array's size */
    const struct s_fast_slot *sub; /* S_F_MSG: its fields, from base + off */
} s_fast_slot_t;

_Static_assert(sizeof(cl_reply_t) < 65536, "offsets fit 16 bits");
_Static_assert(sizeof(cl_status_t) == sizeof(int32_t) && sizeof(cl_kind_t) == sizeof(int32_t) &&
                   sizeof(cl_card_state_t) == sizeof(int32_t),
               "an enum is stored as an int32");

#define S_SLOT(n, type, member, kind)                          \
    {                                                          \
        (n), (kind), (uint16_t)offsetof(type, member), 0, NULL \
    }
#define S_STR(n, type, member)                                                                 \
    {                                                                                          \
        (n), S_F_STR, (uint16_t)offsetof(type, member), (uint16_t)sizeof(((type *)0)->member), \
            NULL                                                                               \
    }

static const s_fast_slot_t s_fast_card[] = {
    S_SLOT(1, cl_card_view_t, card_id, S_F_U64),
    S_STR(2, cl_card_view_t, code_masked),
    S_STR(3, cl_card_view_t, merchant_id),
    S_STR(4, cl_card_view_t, program_id),
    S_SLOT(5, cl_card_view_t, kind, S_F_ENUM),
    S_STR(6, cl_card_view_t, currency),
    S_SLOT(7, cl_card_view_t, state, S_F_ENUM),
    S_SLOT(8, cl_card_view_t, frozen, S_F_BOOL),
    S_SLOT(9, cl_card_view_t, locked, S_F_BOOL),
    S_SLOT(10, cl_card_view_t, balance_minor, S_F_U64),
    S_SLOT(11, cl_card_view_t, uses_left, S_F_U32),
    S_SLOT(12, cl_card_view_t, face_value_minor, S_F_U64),
    S_SLOT(13, cl_card_view_t, issued_at_us, S_F_U64),
    S_SLOT(14, cl_card_view_t, valid_from_us, S_F_U64),
    S_SLOT(15, cl_card_view_t, expires_at_us, S_F_U64),
    S_STR(16, cl_card_view_t, holder),
    S_SLOT(17, cl_card_view_t, pin_failures, S_F_U32),
    S_SLOT(18, cl_card_view_t, open_offer_id, S_F_U64),
    S_SLOT(19, cl_card_view_t, transfers_done, S_F_U32),
    S_SLOT(20, cl_card_view_t, redeemed_minor, S_F_U64),
    { 0, 0, 0, 0, NULL },
};

/* The fields of a Reply before its result, and each result read here, from the cl_reply_t. */
static const s_fast_slot_t s_fast_head[] = {
    S_STR(1, cl_reply_t, request_id),
    S_SLOT(2, cl_reply_t, status, S_F_ENUM),
    S_STR(3, cl_reply_t, message),
    S_SLOT(4, cl_reply_t, replayed, S_F_BOOL),
    S_SLOT(5, cl_reply_t, last_seq, S_F_U64),
    S_SLOT(6, cl_reply_t, as_of_seq, S_F_U64),
    { 0, 0, 0, 0, NULL },
};

static const s_fast_slot_t s_fast_issued[] = {
    { 1, S_F_MSG, (uint16_t)offsetof(cl_reply_t, card), 0, s_fast_card },
    S_STR(2, cl_reply_t, code),
    S_STR(3, cl_reply_t, pin),
    { 0, 0, 0, 0, NULL },
};

static const s_fast_slot_t s_fast_redeemed[] = {
    { 1, S_F_MSG, (uint16_t)offsetof(cl_reply_t, card), 0, s_fast_card },
    S_SLOT(2, cl_reply_t, redemption_seq, S_F_U64),
    S_SLOT(3, cl_reply_t, amount_minor, S_F_U64),
    S_SLOT(4, cl_reply_t, uses, S_F_U32),
    S_SLOT(5, cl_reply_t, discount_minor, S_F_U64),
    S_STR(6, cl_reply_t, sku),
    { 0, 0, 0, 0, NULL },
};

static const s_fast_slot_t s_fast_row[] = {
    S_STR(1, cl_issued_row_t, row_key),
    S_SLOT(2, cl_issued_row_t, status, S_F_ENUM),
    S_STR(3, cl_issued_row_t, message),
    S_SLOT(4, cl_issued_row_t, already_issued, S_F_BOOL),
    S_SLOT(5, cl_issued_row_t, card_id, S_F_U64),
    S_STR(6, cl_issued_row_t, code),
    S_STR(7, cl_issued_row_t, pin),
    { 0, 0, 0, 0, NULL },
};

static const s_fast_slot_t s_fast_counts[] = {
    S_SLOT(1, cl_reply_t, batch_id, S_F_U64),
    S_SLOT(3, cl_reply_t, batch_issued, S_F_U32),
    S_SLOT(4, cl_reply_t, batch_already_issued, S_F_U32),
    { 0, 0, 0, 0, NULL },
};

/* The slot of field `number` in a table, searched from *cursor on (fields come in number order,
 * so the search goes on from the last one found); NULL when the table has none. */
static const s_fast_slot_t *
s_fast_seek(const s_fast_slot_t **cursor, uint32_t number)
{
    const s_fast_slot_t *s = *cursor;
    while (s->number != 0 && s->number < number) {
        s++;
    }
    *cursor = s;
    return s->number == number ? s : NULL;
}

/* One field f into its slot at base. */
static bool s_fast_put(const s_fast_slot_t *slot, const codec_field_t *f, uint8_t *base);

/* The fields of one message in p[0..len) into base, by the table slots: false at anything
 * outside the fast path's subset, a field the table lacks included. */
static bool
s_fast_fields(const uint8_t *p, size_t len, const s_fast_slot_t *slots, uint8_t *base)
{
    const uint8_t *end = p + len;
    uint32_t last = 0;
    while (p < end) {
        codec_field_t f;
        if (!codec_fast_field(&p, end, &f) || f.number <= last) {
            return false;
        }
        last = f.number;
        const s_fast_slot_t *slot = s_fast_seek(&slots, f.number);
        if (slot == NULL || !s_fast_put(slot, &f, base)) {
            return false; /* unknown here, or outside the subset */
        }
    }
    return true;
}

static bool
s_fast_put(const s_fast_slot_t *slot, const codec_field_t *f, uint8_t *base)
{
    uint8_t *at = base + slot->off;
    if (slot->kind == S_F_STR) {
        return codec_fast_str(f, (char *)at, slot->cap);
    }
    if (slot->kind == S_F_MSG) {
        return f->wire_type == CODEC_WT_LEN && s_fast_fields(f->data, f->len, slot->sub, at);
    }
    if (!codec_fast_varint(f)) {
        return false;
    }
    switch (slot->kind) {
    case S_F_U32:
        if (f->varint > UINT32_MAX) {
            return false;
        }
        uint32_t u = (uint32_t)f->varint;
        memcpy(at, &u, sizeof u);
        return true;
    case S_F_ENUM:
        if (f->varint > INT32_MAX) {
            return false;
        }
        int32_t e = (int32_t)f->varint;
        memcpy(at, &e, sizeof e);
        return true;
    case S_F_BOOL:
        *(bool *)(void *)at = true;
        return f->varint == 1;
    default: /* S_F_U64 */
        memcpy(at, &f->varint, sizeof f->varint);
        return true;
    }
}

/* The IssueBatchResult into d, its rows into rows[0..rows_cap). */
static bool
s_fast_batch(const uint8_t *p, size_t len, cl_reply_t *d, cl_issued_row_t *rows, size_t rows_cap)
{
    const uint8_t *end = p + len;
    const s_fast_slot_t *counts = s_fast_counts;
    uint32_t last = 0;
    size_t n = 0;
    while (p < end) {
        codec_field_t f;
        /* Only the repeated rows (field 2) may come more than once, one after the other. */
        if (!codec_fast_field(&p, end, &f) || f.number < last || (f.number == last && last != 2)) {
            return false;
        }
        last = f.number;
        bool ok;
        if (f.number == 2) {
            /* More rows than CL_ISSUE_BATCH_MAX or rows_cap are the general path's to refuse. */
            ok = f.wire_type == CODEC_WT_LEN && n < CL_ISSUE_BATCH_MAX && n < rows_cap;
            if (ok) {
                memset(&rows[n], 0, sizeof rows[n]);
                ok = s_fast_fields(f.data, f.len, s_fast_row, (uint8_t *)&rows[n]);
                n++;
            }
        } else {
            const s_fast_slot_t *slot = s_fast_seek(&counts, f.number);
            ok = slot != NULL && s_fast_put(slot, &f, (uint8_t *)d);
        }
        if (!ok) {
            return false;
        }
    }
    d->rows_count = (uint32_t)n;
    d->rows = rows;
    return true;
}

/* A Reply into d (zeroed by the caller), when its result is one the fast path reads. */
static bool
s_fast_reply(const uint8_t *p, size_t len, cl_reply_t *d, cl_issued_row_t *rows, size_t rows_cap)
{
    const uint8_t *end = p + len;
    uint8_t *base = (uint8_t *)d;
    const s_fast_slot_t *head = s_fast_head;
    uint32_t last = 0;
    while (p < end) {
        codec_field_t f;
        if (!codec_fast_field(&p, end, &f) || f.number <= last) {
            return false;
        }
        last = f.number;
        bool ok = false;
        const s_fast_slot_t *slot = s_fast_seek(&head, f.number);
        if (slot != NULL) {
            ok = s_fast_put(slot, &f, base);
        } else if (f.wire_type == CODEC_WT_LEN) {
            /* The result, which must be the last field: of two (a oneof keeps the last one),
             * the general path decides. */
            switch (f.number) {
            case CARDLEDGER__V1__REPLY__RESULT_CARD:
                ok = s_fast_fields(f.data, f.len, s_fast_card, (uint8_t *)&d->card);
                break;
            case CARDLEDGER__V1__REPLY__RESULT_ISSUED:
                ok = s_fast_fields(f.data, f.len, s_fast_issued, base);
                break;
            case CARDLEDGER__V1__REPLY__RESULT_BATCH:
                ok = s_fast_batch(f.data, f.len, d, rows, rows_cap);
                break;
            case CARDLEDGER__V1__REPLY__RESULT_REDEEMED:
                ok = s_fast_fields(f.data, f.len, s_fast_redeemed, base);
                break;
            default:
                break; /* another result, or an unknown field */
            }
            ok = ok && p == end;
            d->result = (cl_result_type_t)f.number;
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool
codec_reply_decode_fast(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
                        size_t rows_cap)
{
    if (len == 0) {
        return false;
    }
    cl_reply_t d;
    memset(&d, 0, sizeof d);
    if (!s_fast_reply(buf, len, &d, rows, rows_cap)) {
        return false;
    }
    memcpy(out, &d, sizeof d);
    return true;
}

int
codec_reply_decode(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
                   size_t rows_cap)
{
    if (out == NULL || (buf == NULL && len > 0) || (rows == NULL && rows_cap > 0)) {
        return CODEC_EINVAL;
    }
    if (codec_reply_decode_fast(buf, len, out, rows, rows_cap)) {
        return 0;
    }
    return codec_reply_decode_general(buf, len, out, rows, rows_cap);
}
