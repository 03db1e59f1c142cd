/*
 * Requests: a RequestBatch frame -> codec_request_t slots (the daemon's way in), and
 * cl_command_t -> a packed Request (clients and tests).
 *
 * The decoder is an object because the hot path must not allocate: codec_batch_new() takes
 * every buffer once (the request slots, the IssueBatch row pool, protobuf-c's unpack arena and
 * the hash state) and each decode reuses them. A frame is read in three steps:
 *   1. its top level is scanned by hand (field 1, length-delimited, once per request), which
 *      refuses an oversized batch before any request is looked at;
 *   2. each request's bytes are walked (codec-wire.c): wire format, lists over their limits,
 *      strings with a NUL or invalid UTF-8, the request id's bytes;
 *   3. each request is unpacked by protobuf-c into the arena on its own, hashed, translated
 *      into a cl_command_t with every string limit checked, and freed.
 * Unpacking request by request (rather than the whole RequestBatch) keeps the arena the size
 * of one request and lets one request be refused while the others of the batch go through.
 */
#include <assert.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "codec-private.h"

/* The unpack arena: one request at a time. A 1000-row IssueBatch takes about 200 KiB (540 KiB
 * with every string at its limit); anything bigger falls back to malloc inside protobuf-c. */
#define S_ARENA_BYTES (1024 * 1024)

struct codec_batch {
    size_t count;     /* requests held by the last decode */
    size_t rows_used; /* rows of the pool taken by the last decode */
    codec_request_t reqs[CL_BATCH_REQUESTS_MAX];
    const uint8_t *spans[CL_BATCH_REQUESTS_MAX]; /* each request's bytes in the frame */
    size_t span_lens[CL_BATCH_REQUESTS_MAX];
    cl_cmd_issue_card_t rows[CODEC_BATCH_ROWS_MAX]; /* IssueBatch rows of all the requests */
    bool no_fast_path;   /* every request takes the general path (tests) */
    codec_walk_t walk;   /* the walker's findings for the current request */
    XXH3_state_t *hash;  /* content_hash state, reset per request */
    codec_arena_t arena; /* protobuf-c's allocator */
    alignas(max_align_t) unsigned char arena_mem[S_ARENA_BYTES];
};

int
codec_batch_new(codec_batch_t **out)
{
    if (out == NULL) {
        return CODEC_EINVAL;
    }
    codec_batch_t *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return CODEC_ENOMEM;
    }
    b->hash = XXH3_createState();
    if (b->hash == NULL) {
        free(b);
        return CODEC_ENOMEM;
    }
    codec_arena_init(&b->arena, b->arena_mem, sizeof b->arena_mem);
    *out = b;
    return 0;
}

void
codec_batch_destroy(codec_batch_t **b)
{
    if (b == NULL || *b == NULL) {
        return;
    }
    XXH3_freeState((*b)->hash);
    free(*b);
    *b = NULL;
}

size_t
codec_batch_count(const codec_batch_t *b)
{
    return b != NULL ? b->count : 0;
}

const codec_request_t *
codec_batch_request(const codec_batch_t *b, size_t i)
{
    if (b == NULL || i >= b->count) {
        return NULL;
    }
    return &b->reqs[i];
}

/* ---- Decoding one request ----------------------------------------------------------------- */

static void s_refuse(codec_request_t *r, cl_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Marks r refused (keeping the first refusal) with a sentence. */
static void
s_refuse(codec_request_t *r, cl_status_t status, const char *fmt, ...)
{
    if (r->status != CL_OK) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    r->status = status;
}

/* A ProtobufCBuffer that feeds what protobuf-c packs straight into the XXH3 state. */
typedef struct s_hash_sink {
    ProtobufCBuffer base; /* first: protobuf-c gets &sink->base */
    XXH3_state_t *state;
} s_hash_sink_t;

static void
s_hash_append(ProtobufCBuffer *buffer, size_t len, const uint8_t *data)
{
    s_hash_sink_t *sink = (s_hash_sink_t *)buffer;
    XXH3_128bits_update(sink->state, data, len);
}

static void
s_content_hash(codec_batch_t *b, const Cardledger__V1__Request *m, uint8_t out[16])
{
    s_hash_sink_t sink = { .base = { .append = s_hash_append }, .state = b->hash };
    XXH3_128bits_reset(b->hash);
    protobuf_c_message_pack_to_buffer(&m->base, &sink.base);
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(b->hash));
    static_assert(sizeof canonical.digest == 16, "XXH3-128 is 16 bytes");
    memcpy(out, canonical.digest, 16);
}

/* The last command field on the wire of a request already walked (a oneof keeps the last). */
static cl_command_type_t
s_peek_command(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    uint32_t type = CL_CMD_NONE;
    while (p < end) {
        codec_field_t f;
        if (codec_field_next(&p, end, &f) != 0) {
            break;
        }
        if (f.number >= CL_CMD_REGISTER_MERCHANT &&
            protobuf_c_message_descriptor_get_field(&cardledger__v1__request__descriptor,
                                                    f.number) != NULL) {
            type = f.number;
        }
    }
    return (cl_command_type_t)type;
}

static void
s_issue_card_in(codec_in_t *in, cl_cmd_issue_card_t *d, const Cardledger__V1__IssueCard *s)
{
    codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
    codec_in_str(in, d->program_id, sizeof d->program_id, s->program_id, "program_id");
    codec_in_str(in, d->holder, sizeof d->holder, s->holder, "holder");
    d->channel = (cl_channel_t)codec_in_enum(in, (int)s->channel, CL_CHANNEL_PLATFORM, "channel");
    codec_in_str(in, d->store_id, sizeof d->store_id, s->store_id, "store_id");
    codec_in_str(in, d->region, sizeof d->region, s->region, "region");
    d->face_value_minor = s->face_value_minor;
    d->price_paid_minor = s->price_paid_minor;
    d->paid_nothing = s->paid_nothing != 0;
    codec_in_str(in, d->import_code, sizeof d->import_code, s->import_code, "import_code");
    codec_in_str(in, d->import_pin, sizeof d->import_pin, s->import_pin, "import_pin");
    codec_in_str(in, d->row_key, sizeof d->row_key, s->row_key, "row_key");
}

static void
s_issue_batch_in(codec_batch_t *b, codec_in_t *in, cl_command_t *c,
                 const Cardledger__V1__IssueBatch *s)
{
    cl_cmd_issue_batch_t *d = &c->u.issue_batch;
    codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
    codec_in_str(in, d->program_id, sizeof d->program_id, s->program_id, "program_id");
    codec_in_str(in, d->batch_ref, sizeof d->batch_ref, s->batch_ref, "batch_ref");
    if (!codec_in_count(in, s->n_cards, CL_ISSUE_BATCH_MAX, "cards")) {
        return;
    }
    size_t room = CODEC_BATCH_ROWS_MAX - b->rows_used;
    if (s->n_cards > room) {
        codec_in_fail(in, CODEC_ELIMIT,
                      "issue_batch.cards has %zu rows and this frame has room for %zu more "
                      "(%d per frame); send this request in another frame",
                      s->n_cards, room, CODEC_BATCH_ROWS_MAX);
        return;
    }
    cl_cmd_issue_card_t *rows = &b->rows[b->rows_used];
    memset(rows, 0, s->n_cards * sizeof rows[0]);
    for (size_t i = 0; i < s->n_cards && in->err == 0; i++) {
        size_t saved = codec_in_push(in, "cards", (long)i);
        s_issue_card_in(in, &rows[i], s->cards[i]);
        codec_in_pop(in, saved);
    }
    if (in->err == 0) {
        d->rows_count = (uint32_t)s->n_cards;
        c->batch_rows = s->n_cards > 0 ? rows : NULL;
        b->rows_used += s->n_cards;
    }
}

/* OfferGift and TransferCard have the same fields. */
static void
s_gift_in(codec_in_t *in, cl_cmd_gift_t *d, const Cardledger__V1__CardRef *card, const char *pin,
          const char *from_holder, const char *to_holder)
{
    codec_in_card_ref(in, &d->card, card, "card");
    codec_in_str(in, d->pin, sizeof d->pin, pin, "pin");
    codec_in_str(in, d->from_holder, sizeof d->from_holder, from_holder, "from_holder");
    codec_in_str(in, d->to_holder, sizeof d->to_holder, to_holder, "to_holder");
}

/* Freeze, Unfreeze, Unlock and GetCard. */
static void
s_card_flag_in(codec_in_t *in, cl_cmd_card_flag_t *d, const Cardledger__V1__CardRef *card,
               const char *reason)
{
    codec_in_card_ref(in, &d->card, card, "card");
    codec_in_str(in, d->reason, sizeof d->reason, reason, "reason");
}

/* Translates the command of an unpacked request into c (zero but for the request id). */
static void
s_command_in(codec_batch_t *b, codec_in_t *in, const Cardledger__V1__Request *m, cl_command_t *c)
{
    switch (m->command_case) {
    case CARDLEDGER__V1__REQUEST__COMMAND_REGISTER_MERCHANT: {
        const Cardledger__V1__RegisterMerchant *s = m->register_merchant;
        cl_ev_merchant_registered_t *d = &c->u.register_merchant;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
        codec_in_str(in, d->name, sizeof d->name, s->name, "name");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_REGISTER_STORE: {
        const Cardledger__V1__RegisterStore *s = m->register_store;
        cl_ev_store_registered_t *d = &c->u.register_store;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
        codec_in_str(in, d->store_id, sizeof d->store_id, s->store_id, "store_id");
        codec_in_str(in, d->name, sizeof d->name, s->name, "name");
        codec_in_str(in, d->region, sizeof d->region, s->region, "region");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_DEFINE_PROGRAM:
    case CARDLEDGER__V1__REQUEST__COMMAND_UPDATE_PROGRAM: {
        const Cardledger__V1__ProgramSpec *spec =
            m->command_case == CARDLEDGER__V1__REQUEST__COMMAND_DEFINE_PROGRAM
                ? m->define_program->spec
                : m->update_program->spec;
        size_t saved = codec_in_push(in, "spec", -1);
        codec_in_spec(in, &c->u.program, spec);
        codec_in_pop(in, saved);
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_CLOSE_PROGRAM: {
        const Cardledger__V1__CloseProgram *s = m->close_program;
        cl_ev_program_closed_t *d = &c->u.close_program;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
        codec_in_str(in, d->program_id, sizeof d->program_id, s->program_id, "program_id");
        codec_in_str(in, d->reason, sizeof d->reason, s->reason, "reason");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_ISSUE_CARD:
        s_issue_card_in(in, &c->u.issue_card, m->issue_card);
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_ISSUE_BATCH:
        s_issue_batch_in(b, in, c, m->issue_batch);
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_OFFER_GIFT: {
        const Cardledger__V1__OfferGift *s = m->offer_gift;
        s_gift_in(in, &c->u.gift, s->card, s->pin, s->from_holder, s->to_holder);
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_TRANSFER_CARD: {
        const Cardledger__V1__TransferCard *s = m->transfer_card;
        s_gift_in(in, &c->u.gift, s->card, s->pin, s->from_holder, s->to_holder);
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_CLAIM_GIFT: {
        const Cardledger__V1__ClaimGift *s = m->claim_gift;
        cl_cmd_gift_close_t *d = &c->u.gift_close;
        codec_in_card_ref(in, &d->card, s->card, "card");
        d->offer_id = s->offer_id;
        codec_in_str(in, d->claim_secret, sizeof d->claim_secret, s->claim_secret, "claim_secret");
        codec_in_str(in, d->holder, sizeof d->holder, s->new_holder, "new_holder");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_RECALL_GIFT: {
        const Cardledger__V1__RecallGift *s = m->recall_gift;
        cl_cmd_gift_close_t *d = &c->u.gift_close;
        codec_in_card_ref(in, &d->card, s->card, "card");
        d->offer_id = s->offer_id;
        codec_in_str(in, d->holder, sizeof d->holder, s->holder, "holder");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_REDEEM: {
        const Cardledger__V1__Redeem *s = m->redeem;
        cl_cmd_redeem_t *d = &c->u.redeem;
        codec_in_card_ref(in, &d->card, s->card, "card");
        codec_in_str(in, d->pin, sizeof d->pin, s->pin, "pin");
        codec_in_str(in, d->store_id, sizeof d->store_id, s->store_id, "store_id");
        codec_in_str(in, d->order_ref, sizeof d->order_ref, s->order_ref, "order_ref");
        d->amount_minor = s->amount_minor;
        d->uses = s->uses;
        d->order_amount_minor = s->order_amount_minor;
        codec_in_str(in, d->sku, sizeof d->sku, s->sku, "sku");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_REVERSE_REDEMPTION: {
        const Cardledger__V1__ReverseRedemption *s = m->reverse_redemption;
        cl_cmd_reverse_t *d = &c->u.reverse;
        codec_in_card_ref(in, &d->card, s->card, "card");
        d->redemption_seq = s->redemption_seq;
        codec_in_str(in, d->store_id, sizeof d->store_id, s->store_id, "store_id");
        d->amount_minor = s->amount_minor;
        d->uses = s->uses;
        codec_in_str(in, d->reason, sizeof d->reason, s->reason, "reason");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_RELOAD: {
        const Cardledger__V1__Reload *s = m->reload;
        cl_cmd_reload_t *d = &c->u.reload;
        codec_in_card_ref(in, &d->card, s->card, "card");
        d->amount_minor = s->amount_minor;
        d->price_paid_minor = s->price_paid_minor;
        d->channel =
            (cl_channel_t)codec_in_enum(in, (int)s->channel, CL_CHANNEL_PLATFORM, "channel");
        codec_in_str(in, d->store_id, sizeof d->store_id, s->store_id, "store_id");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_TRANSFER_BALANCE: {
        const Cardledger__V1__TransferBalance *s = m->transfer_balance;
        cl_cmd_transfer_balance_t *d = &c->u.transfer_balance;
        codec_in_card_ref(in, &d->from_card, s->from_card, "from_card");
        codec_in_str(in, d->from_pin, sizeof d->from_pin, s->from_pin, "from_pin");
        codec_in_card_ref(in, &d->to_card, s->to_card, "to_card");
        d->amount_minor = s->amount_minor;
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_ADJUST: {
        const Cardledger__V1__Adjust *s = m->adjust;
        cl_cmd_adjust_t *d = &c->u.adjust;
        codec_in_card_ref(in, &d->card, s->card, "card");
        d->delta_minor = s->delta_minor;
        d->delta_uses = s->delta_uses;
        codec_in_str(in, d->reason, sizeof d->reason, s->reason, "reason");
        break;
    }
    case CARDLEDGER__V1__REQUEST__COMMAND_FREEZE:
        s_card_flag_in(in, &c->u.card_flag, m->freeze->card, m->freeze->reason);
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_UNFREEZE:
        s_card_flag_in(in, &c->u.card_flag, m->unfreeze->card, m->unfreeze->reason);
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_UNLOCK:
        s_card_flag_in(in, &c->u.card_flag, m->unlock->card, m->unlock->reason);
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_ADVANCE_CLOCK:
        c->u.set_now_us = m->advance_clock->set_now_us;
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_GET_CARD:
        codec_in_card_ref(in, &c->u.card_flag.card, m->get_card->card, "card");
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_GET_REQUEST:
        codec_in_str(in, c->u.get_request_id, sizeof c->u.get_request_id,
                     m->get_request->request_id, "request_id");
        break;
    case CARDLEDGER__V1__REQUEST__COMMAND_GET_STATUS:
        break;
    default:
        /* Projector queries (60..68): the type alone; their payloads come in a later issue. */
        assert((int)m->command_case >= (int)CL_CMD_PROJECTOR_FIRST);
        break;
    }
}

/* ---- The fast way in for a batch issue and a redeem --------------------------------------- */

/*
 * A batch issue carries a thousand rows of a dozen fields each, and the general path above
 * walks them, unpacks them with protobuf-c, re-packs them for the content hash and translates
 * them: about 9,000 instructions per row. Most batch issues arrive exactly as protobuf-c packs
 * them (libcardledger packs with protobuf-c): fields in number order, each once, zero and empty
 * fields left out, every varint and length in its shortest form, no unknown fields. For such a
 * request the received bytes are the re-packed bytes, so their XXH3-128 is the content hash the
 * general path computes, and the rows can be read straight from the wire into the row pool.
 * A redeem is small, but it is the command sent most: the general path costs it about 10,000
 * instructions, a third of what the daemon's loop spends on it.
 *
 * The fast path takes only such requests, and only when nothing in them is refused (every
 * string within its limit, valid UTF-8 without a NUL, every channel a known one, the rows within
 * CL_ISSUE_BATCH_MAX and the frame's pool). Anything else, it leaves to the general path, which
 * gives the refusal its sentence or hashes the request's canonical form: the result is the same
 * either way (tests/test-codec.c decodes the same bytes both ways and compares).
 */

/* One IssueCard row into d (zeroed by the caller). */
static bool
s_fast_row(const uint8_t *p, size_t len, cl_cmd_issue_card_t *d)
{
    const uint8_t *end = p + len;
    uint32_t last = 0;
    while (p < end) {
        codec_field_t f;
        if (!codec_fast_field(&p, end, &f) || f.number <= last) {
            return false;
        }
        last = f.number;
        bool ok = false;
        switch (f.number) {
        case 1:
            ok = codec_fast_str(&f, d->merchant_id, sizeof d->merchant_id);
            break;
        case 2:
            ok = codec_fast_str(&f, d->program_id, sizeof d->program_id);
            break;
        case 3:
            ok = codec_fast_str(&f, d->holder, sizeof d->holder);
            break;
        case 4:
            ok = codec_fast_varint(&f) && f.varint <= CL_CHANNEL_PLATFORM;
            d->channel = (cl_channel_t)f.varint;
            break;
        case 5:
            ok = codec_fast_str(&f, d->store_id, sizeof d->store_id);
            break;
        case 6:
            ok = codec_fast_str(&f, d->region, sizeof d->region);
            break;
        case 7:
            ok = codec_fast_varint(&f);
            d->face_value_minor = (int64_t)f.varint;
            break;
        case 8:
            ok = codec_fast_varint(&f);
            d->price_paid_minor = (int64_t)f.varint;
            break;
        case 9:
            ok = codec_fast_varint(&f) && f.varint == 1; /* protobuf-c packs true as 1 */
            d->paid_nothing = true;
            break;
        case 10:
            ok = codec_fast_str(&f, d->import_code, sizeof d->import_code);
            break;
        case 11:
            ok = codec_fast_str(&f, d->import_pin, sizeof d->import_pin);
            break;
        case 12:
            ok = codec_fast_str(&f, d->row_key, sizeof d->row_key);
            break;
        default:
            break; /* unknown: the general path keeps it, and it counts for the hash */
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* The IssueBatch message of a request into c, its rows into b's pool. */
static bool
s_fast_issue_batch(codec_batch_t *b, const uint8_t *p, size_t len, cl_command_t *c)
{
    cl_cmd_issue_batch_t *d = &c->u.issue_batch;
    cl_cmd_issue_card_t *rows = &b->rows[b->rows_used];
    size_t room = CODEC_BATCH_ROWS_MAX - b->rows_used;
    size_t n = 0;
    const uint8_t *end = p + len;
    uint32_t last = 0;
    while (p < end) {
        codec_field_t f;
        /* Only the repeated rows (field 4) may come more than once, one after the other. */
        if (!codec_fast_field(&p, end, &f) || f.number < last || (f.number == last && last != 4)) {
            return false;
        }
        last = f.number;
        bool ok = false;
        switch (f.number) {
        case 1:
            ok = codec_fast_str(&f, d->merchant_id, sizeof d->merchant_id);
            break;
        case 2:
            ok = codec_fast_str(&f, d->program_id, sizeof d->program_id);
            break;
        case 3:
            ok = codec_fast_str(&f, d->batch_ref, sizeof d->batch_ref);
            break;
        case 4:
            if (f.wire_type != CODEC_WT_LEN || n >= room || n >= CL_ISSUE_BATCH_MAX) {
                return false;
            }
            memset(&rows[n], 0, sizeof rows[n]);
            ok = s_fast_row(f.data, f.len, &rows[n]);
            n++;
            break;
        default:
            break;
        }
        if (!ok) {
            return false;
        }
    }
    d->rows_count = (uint32_t)n;
    c->batch_rows = n > 0 ? rows : NULL;
    b->rows_used += n;
    return true;
}

/* A CardRef of exactly one reference: a code (1) or a card id (2), not empty or zero. */
static bool
s_fast_card_ref(const uint8_t *p, size_t len, cl_card_ref_t *d)
{
    const uint8_t *end = p + len;
    codec_field_t f;
    if (len == 0 || !codec_fast_field(&p, end, &f) || p != end) {
        return false;
    }
    if (f.number == 1) {
        return codec_fast_str(&f, d->code, sizeof d->code);
    }
    d->card_id = f.varint;
    return f.number == 2 && codec_fast_varint(&f);
}

/* A Redeem message into d (zeroed by the caller): the command a store's terminal sends most. */
static bool
s_fast_redeem(const uint8_t *p, size_t len, cl_cmd_redeem_t *d)
{
    const uint8_t *end = p + len;
    uint32_t last = 0;
    while (p < end) {
        codec_field_t f;
        if (!codec_fast_field(&p, end, &f) || f.number <= last) {
            return false;
        }
        last = f.number;
        bool ok = false;
        switch (f.number) {
        case 1:
            ok = f.wire_type == CODEC_WT_LEN && s_fast_card_ref(f.data, f.len, &d->card);
            break;
        case 2:
            ok = codec_fast_str(&f, d->pin, sizeof d->pin);
            break;
        case 3:
            ok = codec_fast_str(&f, d->store_id, sizeof d->store_id);
            break;
        case 4:
            ok = codec_fast_str(&f, d->order_ref, sizeof d->order_ref);
            break;
        case 5:
            ok = codec_fast_varint(&f);
            d->amount_minor = (int64_t)f.varint;
            break;
        case 6:
            ok = codec_fast_varint(&f) && f.varint <= UINT32_MAX;
            d->uses = (uint32_t)f.varint;
            break;
        case 7:
            ok = codec_fast_varint(&f);
            d->order_amount_minor = (int64_t)f.varint;
            break;
        case 8:
            ok = codec_fast_str(&f, d->sku, sizeof d->sku);
            break;
        default:
            break; /* unknown: the general path keeps it, and it counts for the hash */
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

/*
 * Decodes a request into r (zeroed, status CL_OK) when it is a batch issue or a redeem the fast
 * path takes: the request id (field 1), then issue_batch or redeem, and nothing else. Returns
 * false with r and b as they were otherwise.
 */
static bool
s_fast_request(codec_batch_t *b, const uint8_t *p, size_t len, codec_request_t *r)
{
    const uint8_t *start = p, *end = p + len;
    codec_field_t id, cmd;
    bool ok = len > 0 && codec_fast_field(&p, end, &id) && id.number == 1 &&
              codec_fast_str(&id, r->cmd.request_id, sizeof r->cmd.request_id) && p != end &&
              codec_fast_field(&p, end, &cmd) && cmd.wire_type == CODEC_WT_LEN && p == end;
    if (ok && cmd.number == CL_CMD_ISSUE_BATCH) {
        ok = s_fast_issue_batch(b, cmd.data, cmd.len, &r->cmd);
    } else if (ok && cmd.number == CL_CMD_REDEEM) {
        ok = s_fast_redeem(cmd.data, cmd.len, &r->cmd.u.redeem);
    } else {
        ok = false;
    }
    if (!ok) {
        memset(&r->cmd, 0, sizeof r->cmd);
        return false;
    }
    r->cmd.type = (cl_command_type_t)cmd.number;
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits(start, len));
    memcpy(r->content_hash, canonical.digest, 16);
    return true;
}

void
codec_batch_fast_path(codec_batch_t *b, bool on)
{
    b->no_fast_path = !on;
}

/* Decodes one request's bytes into r. Returns 0 (r->status says whether it was refused) or
 * CODEC_EMALFORMED, which refuses the whole frame. */
static int
s_decode_one(codec_batch_t *b, const uint8_t *p, size_t len, codec_request_t *r)
{
    codec_walk_t *w = &b->walk;
    memset(r, 0, sizeof *r);
    r->status = CL_OK;
    if (!b->no_fast_path && s_fast_request(b, p, len, r)) {
        return 0;
    }

    int rc = codec_walk(w, &cardledger__v1__request__descriptor, p, len);
    if (rc != 0) {
        return rc;
    }
    /* The id is taken from the wire, so even a request refused before unpacking echoes it. */
    if (w->has_top_id && w->top_id_len > 0 && w->top_id_len <= CL_REQUEST_ID_MAX &&
        memchr(w->top_id, '\0', w->top_id_len) == NULL &&
        codec_utf8_valid(w->top_id, w->top_id_len)) {
        memcpy(r->cmd.request_id, w->top_id, w->top_id_len);
        r->cmd.request_id[w->top_id_len] = '\0';
    }
    if (w->problem == CODEC_ELIMIT) {
        r->cmd.type = s_peek_command(p, len);
        s_refuse(r, CL_TOO_LARGE, "%s", w->problem_msg);
        return 0;
    }

    codec_arena_reset(&b->arena);
    Cardledger__V1__Request *m = cardledger__v1__request__unpack(&b->arena.base, len, p);
    if (m == NULL) {
        return CODEC_EMALFORMED; /* the walker lets through nothing else protobuf-c refuses */
    }
    s_content_hash(b, m, r->content_hash);
    r->cmd.type = (cl_command_type_t)m->command_case;

    size_t id_len = strlen(m->request_id);
    if (w->problem == CODEC_EINVALID) {
        s_refuse(r, CL_INVALID_ARGUMENT, "%s", w->problem_msg);
    } else if (id_len == 0) {
        s_refuse(r, CL_INVALID_ARGUMENT, "request_id is missing; every request needs one");
    } else if (id_len > CL_REQUEST_ID_MAX) {
        s_refuse(r, CL_TOO_LARGE, "request_id is %zu bytes, the limit is %d", id_len,
                 CL_REQUEST_ID_MAX);
    } else if (m->command_case == CARDLEDGER__V1__REQUEST__COMMAND__NOT_SET) {
        if (w->top_unknown != 0) {
            s_refuse(r, CL_UNKNOWN_COMMAND,
                     "the request has no command this ledger knows (it carries field %u)",
                     (unsigned)w->top_unknown);
        } else {
            s_refuse(r, CL_UNKNOWN_COMMAND, "the request has no command");
        }
    } else {
        size_t rows_before = b->rows_used;
        const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(
            &cardledger__v1__request__descriptor, (unsigned)m->command_case);
        assert(fd != NULL);
        codec_in_t in;
        codec_in_init(&in, r->message, sizeof r->message, true);
        codec_in_push(&in, fd->name, -1);
        s_command_in(b, &in, m, &r->cmd);
        if (in.err != 0) {
            r->status = in.status;
            memset(&r->cmd.u, 0, sizeof r->cmd.u);
            r->cmd.batch_rows = NULL;
            b->rows_used = rows_before;
        }
    }
    cardledger__v1__request__free_unpacked(m, &b->arena.base);
    assert(r->status == CL_OK || r->message[0] != '\0');
    return 0;
}

int
codec_batch_decode(codec_batch_t *b, const void *frame, size_t len)
{
    if (b == NULL || (frame == NULL && len > 0)) {
        return CODEC_EINVAL;
    }
    b->count = 0;
    b->rows_used = 0;
    if (len > CL_FRAME_MAX_BYTES) {
        return CODEC_ETOOLARGE;
    }

    /* The top level by hand: count the requests before decoding any. */
    const uint8_t *p = frame;
    const uint8_t *end = p + len;
    size_t n = 0;
    while (p < end) {
        codec_field_t f;
        if (codec_field_next(&p, end, &f) != 0) {
            return CODEC_EMALFORMED;
        }
        if (f.number != 1) {
            continue; /* unknown fields of the batch are tolerated */
        }
        if (f.wire_type != CODEC_WT_LEN) {
            return CODEC_EMALFORMED;
        }
        if (n < CL_BATCH_REQUESTS_MAX) {
            b->spans[n] = f.data;
            b->span_lens[n] = f.len;
        }
        n++;
    }
    if (n > CL_BATCH_REQUESTS_MAX) {
        return CODEC_ETOOLARGE;
    }

    for (size_t i = 0; i < n; i++) {
        int rc = s_decode_one(b, b->spans[i], b->span_lens[i], &b->reqs[i]);
        if (rc != 0) {
            b->rows_used = 0;
            return rc;
        }
    }
    codec_arena_reset(&b->arena);
    b->count = n;
    assert(b->rows_used <= CODEC_BATCH_ROWS_MAX);
    return 0;
}

/* ---- Encoding ----------------------------------------------------------------------------- */

/* One of each command message, for the encoder; only the one for cmd->type is used. */
typedef union s_command_pb {
    Cardledger__V1__RegisterMerchant register_merchant;
    Cardledger__V1__RegisterStore register_store;
    Cardledger__V1__DefineProgram define_program;
    Cardledger__V1__UpdateProgram update_program;
    Cardledger__V1__CloseProgram close_program;
    Cardledger__V1__IssueCard issue_card;
    Cardledger__V1__OfferGift offer_gift;
    Cardledger__V1__ClaimGift claim_gift;
    Cardledger__V1__RecallGift recall_gift;
    Cardledger__V1__TransferCard transfer_card;
    Cardledger__V1__Redeem redeem;
    Cardledger__V1__ReverseRedemption reverse_redemption;
    Cardledger__V1__Reload reload;
    Cardledger__V1__TransferBalance transfer_balance;
    Cardledger__V1__Adjust adjust;
    Cardledger__V1__Freeze freeze;
    Cardledger__V1__Unfreeze unfreeze;
    Cardledger__V1__Unlock unlock;
    Cardledger__V1__AdvanceClock advance_clock;
    Cardledger__V1__GetCard get_card;
    Cardledger__V1__GetRequest get_request;
    Cardledger__V1__GetStatus get_status;
    /* Room for any projector query, built from its descriptor. */
    alignas(max_align_t) unsigned char query[256];
} s_command_pb_t;

static void
s_issue_card_out(int *err, const cl_cmd_issue_card_t *s, Cardledger__V1__IssueCard *m)
{
    cardledger__v1__issue_card__init(m);
    m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
    m->program_id = CODEC_OUT_STR(err, s->program_id);
    m->holder = CODEC_OUT_STR(err, s->holder);
    m->channel = (Cardledger__V1__Channel)s->channel;
    m->store_id = CODEC_OUT_STR(err, s->store_id);
    m->region = CODEC_OUT_STR(err, s->region);
    m->face_value_minor = s->face_value_minor;
    m->price_paid_minor = s->price_paid_minor;
    m->paid_nothing = s->paid_nothing;
    m->import_code = CODEC_OUT_STR(err, s->import_code);
    m->import_pin = CODEC_OUT_STR(err, s->import_pin);
    m->row_key = CODEC_OUT_STR(err, s->row_key);
}

/* An IssueCard row, field by field as protobuf_c_message_pack() writes it (codec-private.h). */
static void
s_issue_row_out(codec_out_t *o, const cl_cmd_issue_card_t *s)
{
    CODEC_OUT_ARRAY(o, 1, s->merchant_id);
    CODEC_OUT_ARRAY(o, 2, s->program_id);
    CODEC_OUT_ARRAY(o, 3, s->holder);
    codec_out_int32(o, 4, (int32_t)s->channel);
    CODEC_OUT_ARRAY(o, 5, s->store_id);
    CODEC_OUT_ARRAY(o, 6, s->region);
    codec_out_varint(o, 7, (uint64_t)s->face_value_minor);
    codec_out_varint(o, 8, (uint64_t)s->price_paid_minor);
    codec_out_varint(o, 9, s->paid_nothing);
    CODEC_OUT_ARRAY(o, 10, s->import_code);
    CODEC_OUT_ARRAY(o, 11, s->import_pin);
    CODEC_OUT_ARRAY(o, 12, s->row_key);
}

/* The IssueBatch message: its header fields, then each row as field 4 (a repeated message field
 * is the concatenation of its elements). A row's length comes before it, so it is counted first
 * (a codec_out_t without p only counts). */
static void
s_issue_batch_out(codec_out_t *o, const cl_cmd_issue_batch_t *s, const cl_cmd_issue_card_t *rows)
{
    CODEC_OUT_ARRAY(o, 1, s->merchant_id);
    CODEC_OUT_ARRAY(o, 2, s->program_id);
    CODEC_OUT_ARRAY(o, 3, s->batch_ref);
    for (uint32_t i = 0; i < s->rows_count; i++) {
        codec_out_t row = { NULL, 0, 0 };
        s_issue_row_out(&row, &rows[i]);
        codec_out_head(o, 4, row.n);
        s_issue_row_out(o, &rows[i]); /* and a string without its NUL sets o->err */
    }
}

/*
 * IssueBatch, the largest request (up to CL_ISSUE_BATCH_MAX rows), is written straight to the
 * wire, with no protobuf-c message in between: the Request's request_id, then field 21 holding
 * the IssueBatch. The bytes are protobuf-c's own (tests/test-codec.c packs the same rows with
 * protobuf-c and compares). A string without its NUL is CODEC_ELIMIT, before CODEC_ENOSPC.
 */
static int
s_encode_issue_batch(const cl_command_t *cmd, uint8_t *buf, size_t cap, size_t *out_len)
{
    const cl_cmd_issue_batch_t *s = &cmd->u.issue_batch;
    if (s->rows_count > 0 && cmd->batch_rows == NULL) {
        return CODEC_EINVAL;
    }
    codec_out_t body = { NULL, 0, 0 };
    s_issue_batch_out(&body, s, cmd->batch_rows);
    const char *id_end = memchr(cmd->request_id, '\0', sizeof cmd->request_id);
    if (body.err != 0 || id_end == NULL) {
        return CODEC_ELIMIT;
    }
    size_t id_len = (size_t)(id_end - cmd->request_id);
    size_t total = (id_len > 0 ? codec_len_field_size(1, id_len) : 0) +
                   codec_len_field_size(CL_CMD_ISSUE_BATCH, body.n);
    if (total > cap) {
        return CODEC_ENOSPC;
    }
    codec_out_t o = { buf, 0, 0 };
    codec_out_bytes(&o, 1, cmd->request_id, id_len);
    codec_out_head(&o, CL_CMD_ISSUE_BATCH, body.n);
    s_issue_batch_out(&o, s, cmd->batch_rows);
    assert(o.n == total && o.err == 0);
    *out_len = total;
    return 0;
}

int
codec_request_encode(const cl_command_t *cmd, uint8_t *buf, size_t cap, size_t *out_len)
{
    if (cmd == NULL || out_len == NULL || (buf == NULL && cap > 0)) {
        return CODEC_EINVAL;
    }
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&cardledger__v1__request__descriptor, cmd->type);
    if (cmd->type < CL_CMD_REGISTER_MERCHANT || fd == NULL) {
        return CODEC_EINVAL;
    }
    if (cmd->type == CL_CMD_ISSUE_BATCH) {
        return s_encode_issue_batch(cmd, buf, cap, out_len);
    }

    int err = 0;
    Cardledger__V1__Request r;
    s_command_pb_t pb;
    Cardledger__V1__CardRef ref1;
    Cardledger__V1__CardRef ref2;
    Cardledger__V1__ProgramSpec spec;
    codec_spec_scratch_t scratch;
    ProtobufCMessage *msg = NULL;

    cardledger__v1__request__init(&r);
    r.request_id = CODEC_OUT_STR(&err, cmd->request_id);
    switch (cmd->type) {
    case CL_CMD_REGISTER_MERCHANT: {
        Cardledger__V1__RegisterMerchant *m = &pb.register_merchant;
        cardledger__v1__register_merchant__init(m);
        m->merchant_id = CODEC_OUT_STR(&err, cmd->u.register_merchant.merchant_id);
        m->name = CODEC_OUT_STR(&err, cmd->u.register_merchant.name);
        msg = &m->base;
        break;
    }
    case CL_CMD_REGISTER_STORE: {
        const cl_ev_store_registered_t *s = &cmd->u.register_store;
        Cardledger__V1__RegisterStore *m = &pb.register_store;
        cardledger__v1__register_store__init(m);
        m->merchant_id = CODEC_OUT_STR(&err, s->merchant_id);
        m->store_id = CODEC_OUT_STR(&err, s->store_id);
        m->name = CODEC_OUT_STR(&err, s->name);
        m->region = CODEC_OUT_STR(&err, s->region);
        msg = &m->base;
        break;
    }
    case CL_CMD_DEFINE_PROGRAM:
        cardledger__v1__define_program__init(&pb.define_program);
        codec_out_spec(&err, &cmd->u.program, &spec, &scratch);
        pb.define_program.spec = &spec;
        msg = &pb.define_program.base;
        break;
    case CL_CMD_UPDATE_PROGRAM:
        cardledger__v1__update_program__init(&pb.update_program);
        codec_out_spec(&err, &cmd->u.program, &spec, &scratch);
        pb.update_program.spec = &spec;
        msg = &pb.update_program.base;
        break;
    case CL_CMD_CLOSE_PROGRAM: {
        const cl_ev_program_closed_t *s = &cmd->u.close_program;
        Cardledger__V1__CloseProgram *m = &pb.close_program;
        cardledger__v1__close_program__init(m);
        m->merchant_id = CODEC_OUT_STR(&err, s->merchant_id);
        m->program_id = CODEC_OUT_STR(&err, s->program_id);
        m->reason = CODEC_OUT_STR(&err, s->reason);
        msg = &m->base;
        break;
    }
    case CL_CMD_ISSUE_CARD:
        s_issue_card_out(&err, &cmd->u.issue_card, &pb.issue_card);
        msg = &pb.issue_card.base;
        break;
    case CL_CMD_OFFER_GIFT: {
        const cl_cmd_gift_t *s = &cmd->u.gift;
        Cardledger__V1__OfferGift *m = &pb.offer_gift;
        cardledger__v1__offer_gift__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->pin = CODEC_OUT_STR(&err, s->pin);
        m->from_holder = CODEC_OUT_STR(&err, s->from_holder);
        m->to_holder = CODEC_OUT_STR(&err, s->to_holder);
        msg = &m->base;
        break;
    }
    case CL_CMD_TRANSFER_CARD: {
        const cl_cmd_gift_t *s = &cmd->u.gift;
        Cardledger__V1__TransferCard *m = &pb.transfer_card;
        cardledger__v1__transfer_card__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->pin = CODEC_OUT_STR(&err, s->pin);
        m->from_holder = CODEC_OUT_STR(&err, s->from_holder);
        m->to_holder = CODEC_OUT_STR(&err, s->to_holder);
        msg = &m->base;
        break;
    }
    case CL_CMD_CLAIM_GIFT: {
        const cl_cmd_gift_close_t *s = &cmd->u.gift_close;
        Cardledger__V1__ClaimGift *m = &pb.claim_gift;
        cardledger__v1__claim_gift__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->offer_id = s->offer_id;
        m->claim_secret = CODEC_OUT_STR(&err, s->claim_secret);
        m->new_holder = CODEC_OUT_STR(&err, s->holder);
        msg = &m->base;
        break;
    }
    case CL_CMD_RECALL_GIFT: {
        const cl_cmd_gift_close_t *s = &cmd->u.gift_close;
        Cardledger__V1__RecallGift *m = &pb.recall_gift;
        cardledger__v1__recall_gift__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->offer_id = s->offer_id;
        m->holder = CODEC_OUT_STR(&err, s->holder);
        msg = &m->base;
        break;
    }
    case CL_CMD_REDEEM: {
        const cl_cmd_redeem_t *s = &cmd->u.redeem;
        Cardledger__V1__Redeem *m = &pb.redeem;
        cardledger__v1__redeem__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->pin = CODEC_OUT_STR(&err, s->pin);
        m->store_id = CODEC_OUT_STR(&err, s->store_id);
        m->order_ref = CODEC_OUT_STR(&err, s->order_ref);
        m->amount_minor = s->amount_minor;
        m->uses = s->uses;
        m->order_amount_minor = s->order_amount_minor;
        m->sku = CODEC_OUT_STR(&err, s->sku);
        msg = &m->base;
        break;
    }
    case CL_CMD_REVERSE_REDEMPTION: {
        const cl_cmd_reverse_t *s = &cmd->u.reverse;
        Cardledger__V1__ReverseRedemption *m = &pb.reverse_redemption;
        cardledger__v1__reverse_redemption__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->redemption_seq = s->redemption_seq;
        m->store_id = CODEC_OUT_STR(&err, s->store_id);
        m->amount_minor = s->amount_minor;
        m->uses = s->uses;
        m->reason = CODEC_OUT_STR(&err, s->reason);
        msg = &m->base;
        break;
    }
    case CL_CMD_RELOAD: {
        const cl_cmd_reload_t *s = &cmd->u.reload;
        Cardledger__V1__Reload *m = &pb.reload;
        cardledger__v1__reload__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->amount_minor = s->amount_minor;
        m->price_paid_minor = s->price_paid_minor;
        m->channel = (Cardledger__V1__Channel)s->channel;
        m->store_id = CODEC_OUT_STR(&err, s->store_id);
        msg = &m->base;
        break;
    }
    case CL_CMD_TRANSFER_BALANCE: {
        const cl_cmd_transfer_balance_t *s = &cmd->u.transfer_balance;
        Cardledger__V1__TransferBalance *m = &pb.transfer_balance;
        cardledger__v1__transfer_balance__init(m);
        m->from_card = codec_out_card_ref(&err, &s->from_card, &ref1);
        m->from_pin = CODEC_OUT_STR(&err, s->from_pin);
        m->to_card = codec_out_card_ref(&err, &s->to_card, &ref2);
        m->amount_minor = s->amount_minor;
        msg = &m->base;
        break;
    }
    case CL_CMD_ADJUST: {
        const cl_cmd_adjust_t *s = &cmd->u.adjust;
        Cardledger__V1__Adjust *m = &pb.adjust;
        cardledger__v1__adjust__init(m);
        m->card = codec_out_card_ref(&err, &s->card, &ref1);
        m->delta_minor = s->delta_minor;
        m->delta_uses = s->delta_uses;
        m->reason = CODEC_OUT_STR(&err, s->reason);
        msg = &m->base;
        break;
    }
    case CL_CMD_FREEZE:
        cardledger__v1__freeze__init(&pb.freeze);
        pb.freeze.card = codec_out_card_ref(&err, &cmd->u.card_flag.card, &ref1);
        pb.freeze.reason = CODEC_OUT_STR(&err, cmd->u.card_flag.reason);
        msg = &pb.freeze.base;
        break;
    case CL_CMD_UNFREEZE:
        cardledger__v1__unfreeze__init(&pb.unfreeze);
        pb.unfreeze.card = codec_out_card_ref(&err, &cmd->u.card_flag.card, &ref1);
        pb.unfreeze.reason = CODEC_OUT_STR(&err, cmd->u.card_flag.reason);
        msg = &pb.unfreeze.base;
        break;
    case CL_CMD_UNLOCK:
        cardledger__v1__unlock__init(&pb.unlock);
        pb.unlock.card = codec_out_card_ref(&err, &cmd->u.card_flag.card, &ref1);
        pb.unlock.reason = CODEC_OUT_STR(&err, cmd->u.card_flag.reason);
        msg = &pb.unlock.base;
        break;
    case CL_CMD_ADVANCE_CLOCK:
        cardledger__v1__advance_clock__init(&pb.advance_clock);
        pb.advance_clock.set_now_us = cmd->u.set_now_us;
        msg = &pb.advance_clock.base;
        break;
    case CL_CMD_GET_CARD:
        cardledger__v1__get_card__init(&pb.get_card);
        pb.get_card.card = codec_out_card_ref(&err, &cmd->u.card_flag.card, &ref1);
        msg = &pb.get_card.base;
        break;
    case CL_CMD_GET_REQUEST:
        cardledger__v1__get_request__init(&pb.get_request);
        pb.get_request.request_id = CODEC_OUT_STR(&err, cmd->u.get_request_id);
        msg = &pb.get_request.base;
        break;
    case CL_CMD_GET_STATUS:
        cardledger__v1__get_status__init(&pb.get_status);
        msg = &pb.get_status.base;
        break;
    default:
        /* A projector query: an empty message of its type. */
        assert(fd->type == PROTOBUF_C_TYPE_MESSAGE);
        if (fd->descriptor == NULL ||
            ((const ProtobufCMessageDescriptor *)fd->descriptor)->sizeof_message >
                sizeof pb.query) {
            return CODEC_EINVAL;
        }
        protobuf_c_message_init(fd->descriptor, pb.query);
        msg = (ProtobufCMessage *)(void *)pb.query;
        break;
    }
    if (err != 0) {
        return err;
    }
    /* Every command is a message in the oneof; its pointer sits at the field's offset. */
    r.command_case = (Cardledger__V1__Request__CommandCase)cmd->type;
    memcpy((char *)&r + fd->offset, &msg, sizeof msg);
    return codec_pack(&r.base, buf, cap, out_len);
}

int
codec_request_batch_frame(const uint8_t *const *reqs, const size_t *lens, size_t n, uint8_t *buf,
                          size_t cap, size_t *out_len)
{
    if (out_len == NULL || (n > 0 && (reqs == NULL || lens == NULL)) || (buf == NULL && cap > 0)) {
        return CODEC_EINVAL;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (reqs[i] == NULL && lens[i] > 0) {
            return CODEC_EINVAL;
        }
        total += codec_len_field_size(1, lens[i]);
    }
    if (total > cap) {
        return CODEC_ENOSPC;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        o += codec_len_field_head(buf + o, 1, lens[i]);
        if (lens[i] > 0) {
            memcpy(buf + o, reqs[i], lens[i]);
        }
        o += lens[i];
    }
    assert(o == total);
    *out_len = total;
    return 0;
}
