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
#define S_REPLY_BATCH    12u
#define S_REPLY_REQUEST  16u

static size_t
s_varint_field_size(uint32_t field, uint64_t v)
{
    return v == 0 ? 0 : codec_varint_len((uint64_t)field << 3) + codec_varint_len(v);
}

/* Writes a varint field unless v is 0 (proto3 leaves zero out); returns the bytes written. */
static size_t
s_varint_field_put(uint8_t *p, uint32_t field, uint64_t v)
{
    if (v == 0) {
        return 0;
    }
    size_t n = codec_varint_put(p, (uint64_t)field << 3 | CODEC_WT_VARINT);
    return n + codec_varint_put(p + n, v);
}

static void
s_card_view_out(int *err, const cl_card_view_t *v, Cardledger__V1__CardView *m)
{
    cardledger__v1__card_view__init(m);
    m->card_id = v->card_id;
    m->code_masked = CODEC_OUT_STR(err, v->code_masked);
    m->merchant_id = CODEC_OUT_STR(err, v->merchant_id);
    m->program_id = CODEC_OUT_STR(err, v->program_id);
    m->kind = (Cardledger__V1__CardKind)v->kind;
    m->currency = CODEC_OUT_STR(err, v->currency);
    m->state = (Cardledger__V1__CardState)v->state;
    m->frozen = v->frozen;
    m->locked = v->locked;
    m->balance_minor = v->balance_minor;
    m->uses_left = v->uses_left;
    m->face_value_minor = v->face_value_minor;
    m->issued_at_us = v->issued_at_us;
    m->valid_from_us = v->valid_from_us;
    m->expires_at_us = v->expires_at_us;
    m->holder = CODEC_OUT_STR(err, v->holder);
    m->pin_failures = v->pin_failures;
    m->open_offer_id = v->open_offer_id;
    m->transfers_done = v->transfers_done;
    m->redeemed_minor = v->redeemed_minor;
}

static void
s_row_out(int *err, const cl_issued_row_t *s, Cardledger__V1__IssuedRow *m)
{
    cardledger__v1__issued_row__init(m);
    m->row_key = CODEC_OUT_STR(err, s->row_key);
    m->status = (Cardledger__V1__Status)s->status;
    m->message = CODEC_OUT_STR(err, s->message);
    m->already_issued = s->already_issued;
    m->card_id = s->card_id;
    m->code = CODEC_OUT_STR(err, s->code);
    m->pin = CODEC_OUT_STR(err, s->pin);
}

/* The IssueBatchResult's bytes: batch_id (1), rows (2), issued (3), already_issued (4). */
static size_t
s_batch_write(int *err, const cl_reply_t *r, uint8_t *p)
{
    size_t o = 0;
    o +=
        p != NULL ? s_varint_field_put(p + o, 1, r->batch_id) : s_varint_field_size(1, r->batch_id);
    for (uint32_t i = 0; i < r->rows_count; i++) {
        Cardledger__V1__IssuedRow row;
        s_row_out(err, &r->rows[i], &row);
        size_t size = protobuf_c_message_get_packed_size(&row.base);
        if (p != NULL) {
            o += codec_len_field_head(p + o, 2, size);
            o += protobuf_c_message_pack(&row.base, p + o);
        } else {
            o += codec_len_field_size(2, size);
        }
    }
    o += p != NULL ? s_varint_field_put(p + o, 3, r->batch_issued)
                   : s_varint_field_size(3, r->batch_issued);
    o += p != NULL ? s_varint_field_put(p + o, 4, r->batch_already_issued)
                   : s_varint_field_size(4, r->batch_already_issued);
    return o;
}

/* The RequestRecord's bytes: found (1), then the stored Reply as it is (2). */
static size_t
s_request_write(const cl_reply_t *r, uint8_t *p)
{
    size_t o = 0;
    o += p != NULL ? s_varint_field_put(p + o, 1, r->found) : s_varint_field_size(1, r->found);
    if (r->stored_reply != NULL) {
        if (p != NULL) {
            o += codec_len_field_head(p + o, 2, r->stored_reply_len);
            memcpy(p + o, r->stored_reply, r->stored_reply_len);
            o += r->stored_reply_len;
        } else {
            o += codec_len_field_size(2, r->stored_reply_len);
        }
    }
    return o;
}

/* Encodes r into buf, or only measures it when buf is NULL. */
static int
s_reply_write(const cl_reply_t *r, uint8_t *buf, size_t cap, size_t *out_len)
{
    int err = 0;
    Cardledger__V1__Reply m;
    Cardledger__V1__CardView view1;
    Cardledger__V1__CardView view2;
    union {
        Cardledger__V1__IssueResult issued;
        Cardledger__V1__RedeemResult redeemed;
        Cardledger__V1__GiftResult gift;
        Cardledger__V1__TransferResult transfer;
        Cardledger__V1__DaemonStatus status;
    } res;
    uint32_t tail_field = 0; /* a result written by hand after the rest, or 0 */
    size_t tail_body = 0;

    cardledger__v1__reply__init(&m);
    m.request_id = CODEC_OUT_STR(&err, r->request_id);
    m.status = (Cardledger__V1__Status)r->status;
    m.message = CODEC_OUT_STR(&err, r->message);
    m.replayed = r->replayed;
    m.last_seq = r->last_seq;
    m.as_of_seq = r->as_of_seq;

    switch (r->result) {
    case CL_RES_NONE:
        break;
    case CL_RES_CARD:
        s_card_view_out(&err, &r->card, &view1);
        m.card = &view1;
        break;
    case CL_RES_ISSUED:
        cardledger__v1__issue_result__init(&res.issued);
        s_card_view_out(&err, &r->card, &view1);
        res.issued.card = &view1;
        res.issued.code = CODEC_OUT_STR(&err, r->code);
        res.issued.pin = CODEC_OUT_STR(&err, r->pin);
        m.issued = &res.issued;
        break;
    case CL_RES_BATCH:
        if (r->rows_count > CL_ISSUE_BATCH_MAX) {
            return CODEC_ELIMIT;
        }
        if (r->rows_count > 0 && r->rows == NULL) {
            return CODEC_EINVAL;
        }
        tail_field = S_REPLY_BATCH;
        tail_body = s_batch_write(&err, r, NULL);
        break;
    case CL_RES_REDEEMED:
        cardledger__v1__redeem_result__init(&res.redeemed);
        s_card_view_out(&err, &r->card, &view1);
        res.redeemed.card = &view1;
        res.redeemed.redemption_seq = r->redemption_seq;
        res.redeemed.amount_minor = r->amount_minor;
        res.redeemed.uses = r->uses;
        res.redeemed.discount_minor = r->discount_minor;
        res.redeemed.sku = CODEC_OUT_STR(&err, r->sku);
        m.redeemed = &res.redeemed;
        break;
    case CL_RES_GIFT:
        cardledger__v1__gift_result__init(&res.gift);
        s_card_view_out(&err, &r->card, &view1);
        res.gift.card = &view1;
        res.gift.offer_id = r->offer_id;
        res.gift.claim_secret = CODEC_OUT_STR(&err, r->claim_secret);
        res.gift.offer_expires_at_us = r->offer_expires_at_us;
        m.gift = &res.gift;
        break;
    case CL_RES_TRANSFER:
        cardledger__v1__transfer_result__init(&res.transfer);
        s_card_view_out(&err, &r->card, &view1);
        s_card_view_out(&err, &r->card2, &view2);
        res.transfer.from_card = &view1;
        res.transfer.to_card = &view2;
        res.transfer.amount_minor = r->amount_minor;
        m.transfer = &res.transfer;
        break;
    case CL_RES_REQUEST:
        if (r->stored_reply != NULL) {
            codec_walk_t walk;
            if (codec_walk(&walk, &cardledger__v1__reply__descriptor, r->stored_reply,
                           r->stored_reply_len) != 0) {
                return CODEC_EMALFORMED;
            }
        }
        tail_field = S_REPLY_REQUEST;
        tail_body = s_request_write(r, NULL);
        break;
    case CL_RES_STATUS:
        cardledger__v1__daemon_status__init(&res.status);
        res.status.version = CODEC_OUT_STR(&err, CARDLEDGER_VERSION);
        res.status.head_seq = r->status_head_seq;
        res.status.now_us = r->status_now_us;
        res.status.cards = r->status_cards;
        res.status.checkpoint_seq = r->status_checkpoint_seq;
        m.daemon_status = &res.status;
        break;
    default:
        return CODEC_EINVAL;
    }
    if (err != 0) {
        return err;
    }
    if (tail_field == 0) {
        /* The result oneof's case numbers are the result field numbers. */
        m.result_case = (Cardledger__V1__Reply__ResultCase)r->result;
    }

    size_t head = protobuf_c_message_get_packed_size(&m.base);
    size_t total = head + (tail_field != 0 ? codec_len_field_size(tail_field, tail_body) : 0);
    if (buf == NULL) {
        *out_len = total;
        return 0;
    }
    if (total > cap) {
        return CODEC_ENOSPC;
    }
    size_t o = head > 0 ? protobuf_c_message_pack(&m.base, buf) : 0;
    assert(o == head);
    if (tail_field != 0) {
        o += codec_len_field_head(buf + o, tail_field, tail_body);
        o += tail_field == S_REPLY_BATCH ? s_batch_write(&err, r, buf + o)
                                         : s_request_write(r, buf + o);
    }
    assert(o == total && err == 0);
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
codec_reply_decode(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
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
