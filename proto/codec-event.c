/*
 * Events: cl_event_t <-> a packed JournalEntry, the payload of every journal record and of
 * every message the daemon publishes.
 *
 * Encoding is on the daemon's hot path (every accepted command), decoding on the projector's
 * and the replay tool's (millions of events a second), so neither calls malloc: encoding
 * builds protobuf-c structs on the stack that point into the event, and decoding unpacks into
 * a stack arena. The journal's per-event size target (PRODUCT.md: <= 128 bytes for a redeem)
 * depends on proto3's rule that zero and empty fields are not written at all; the encoder keeps
 * it by leaving absent things absent (no actor for the ledger's own events, no pin_hash
 * without a PIN, no voucher rule for a gift card).
 */
#include <assert.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec-private.h"

/* A stack arena large enough that no valid event needs malloc to unpack (the largest, a
 * ProgramDefined with every list and string full, takes 11.9 KiB). */
#define S_EVENT_ARENA_BYTES 16384

/* The longest request_id_b32 a request id can come from: 40 bytes are 64 base32 characters,
 * CL_REQUEST_ID_MAX. */
#define S_REQUEST_ID_B32_MAX ((CL_REQUEST_ID_MAX * 5) / 8)

/* RFC 4648's base32 characters with the digit values in ASCII order (docs/protocol.md section
 * 6), so that ids compare bytewise as their bytes do: libcardledger's time-ordered ids then sort
 * by time as text too. */
static const char s_b32_alphabet[] = "234567abcdefghijklmnopqrstuvwxyz";

/* One of each event message, for the encoder; only the one for ev->type is used. */
typedef union s_event_pb {
    Cardledger__V1__MerchantRegistered merchant_registered;
    Cardledger__V1__StoreRegistered store_registered;
    Cardledger__V1__ProgramDefined program_defined;
    Cardledger__V1__ProgramUpdated program_updated;
    Cardledger__V1__ProgramClosed program_closed;
    Cardledger__V1__CardIssued card_issued;
    Cardledger__V1__BatchIssued batch_issued;
    Cardledger__V1__GiftOffered gift_offered;
    Cardledger__V1__GiftClaimed gift_claimed;
    Cardledger__V1__GiftRecalled gift_recalled;
    Cardledger__V1__GiftReturned gift_returned;
    Cardledger__V1__CardRedeemed card_redeemed;
    Cardledger__V1__RedemptionReversed redemption_reversed;
    Cardledger__V1__CardReloaded card_reloaded;
    Cardledger__V1__BalanceTransferred balance_transferred;
    Cardledger__V1__CardAdjusted card_adjusted;
    Cardledger__V1__CardFrozen card_frozen;
    Cardledger__V1__CardUnfrozen card_unfrozen;
    Cardledger__V1__CardExpired card_expired;
    Cardledger__V1__ExpiryReminded expiry_reminded;
    Cardledger__V1__PinRejected pin_rejected;
    Cardledger__V1__CardLocked card_locked;
    Cardledger__V1__CardUnlocked card_unlocked;
    Cardledger__V1__ClockAdvanced clock_advanced;
} s_event_pb_t;

static bool
s_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

/*
 * The bytes whose unpadded base32 text (s_b32_alphabet) is id, into out[S_REQUEST_ID_B32_MAX].
 * Returns their count, or 0 when id is no such text: empty, over CL_REQUEST_ID_MAX, a
 * character outside the alphabet, a length no byte string encodes to (1, 3 or 6 characters
 * modulo 8), or trailing bits that are not zero (so base32 of the bytes would differ from id).
 * Exactly the ids that come back unchanged from s_b32_text() are packed.
 */
static size_t
s_b32_bytes(const char *id, uint8_t *out)
{
    size_t n = strnlen(id, CL_REQUEST_ID_MAX + 1);
    if (n == 0 || n > CL_REQUEST_ID_MAX) {
        return 0;
    }
    size_t len = n * 5 / 8;
    if ((len * 8 + 4) / 5 != n) {
        return 0;
    }
    assert(len <= S_REQUEST_ID_B32_MAX);
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        uint32_t v;
        if (ch >= '2' && ch <= '7') {
            v = (uint32_t)(ch - '2');
        } else if (ch >= 'a' && ch <= 'z') {
            v = (uint32_t)(ch - 'a') + 6u;
        } else {
            return 0;
        }
        acc = (acc << 5) | v;
        bits += 5;
        if (bits >= 8) {
            out[o++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    if ((acc & ((1u << bits) - 1u)) != 0) {
        return 0;
    }
    assert(o == len && bits < 5);
    return len;
}

/* Writes the unpadded lower-case base32 text of raw[len] and a NUL into dst[cap]; false when
 * it does not fit. */
static bool
s_b32_text(const uint8_t *raw, size_t len, char *dst, size_t cap)
{
    size_t n = (len * 8 + 4) / 5;
    if (n >= cap) {
        return false;
    }
    size_t i = 0, o = 0;
    /* Five bytes are eight characters exactly: whole groups first, then the rest bit by bit. */
    for (; i + 5 <= len; i += 5) {
        uint64_t v = (uint64_t)raw[i] << 32 | (uint64_t)raw[i + 1] << 24 |
                     (uint64_t)raw[i + 2] << 16 | (uint64_t)raw[i + 3] << 8 | raw[i + 4];
        for (int k = 35; k >= 0; k -= 5)
            dst[o++] = s_b32_alphabet[(v >> k) & 31u];
    }
    uint32_t acc = 0;
    unsigned bits = 0;
    for (; i < len; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            dst[o++] = s_b32_alphabet[(acc >> (bits - 5)) & 31u];
            bits -= 5;
        }
    }
    if (bits > 0) {
        dst[o++] = s_b32_alphabet[(acc << (5 - bits)) & 31u];
    }
    assert(o == n);
    dst[o] = '\0';
    return true;
}

/* Fills e's event oneof from ev; returns CODEC_EINVAL for an unknown type. */
static int
s_event_out(int *err, const cl_event_t *ev, Cardledger__V1__JournalEntry *e, s_event_pb_t *pb,
            Cardledger__V1__ProgramSpec *spec, codec_spec_scratch_t *scratch)
{
    switch (ev->type) {
    case CL_EV_MERCHANT_REGISTERED: {
        const cl_ev_merchant_registered_t *s = &ev->u.merchant_registered;
        Cardledger__V1__MerchantRegistered *m = &pb->merchant_registered;
        cardledger__v1__merchant_registered__init(m);
        m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
        m->name = CODEC_OUT_STR(err, s->name);
        e->merchant_registered = m;
        break;
    }
    case CL_EV_STORE_REGISTERED: {
        const cl_ev_store_registered_t *s = &ev->u.store_registered;
        Cardledger__V1__StoreRegistered *m = &pb->store_registered;
        cardledger__v1__store_registered__init(m);
        m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
        m->store_id = CODEC_OUT_STR(err, s->store_id);
        m->name = CODEC_OUT_STR(err, s->name);
        m->region = CODEC_OUT_STR(err, s->region);
        e->store_registered = m;
        break;
    }
    case CL_EV_PROGRAM_DEFINED:
        cardledger__v1__program_defined__init(&pb->program_defined);
        codec_out_spec(err, &ev->u.program, spec, scratch);
        pb->program_defined.spec = spec;
        e->program_defined = &pb->program_defined;
        break;
    case CL_EV_PROGRAM_UPDATED:
        cardledger__v1__program_updated__init(&pb->program_updated);
        codec_out_spec(err, &ev->u.program, spec, scratch);
        pb->program_updated.spec = spec;
        e->program_updated = &pb->program_updated;
        break;
    case CL_EV_PROGRAM_CLOSED: {
        const cl_ev_program_closed_t *s = &ev->u.program_closed;
        Cardledger__V1__ProgramClosed *m = &pb->program_closed;
        cardledger__v1__program_closed__init(m);
        m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
        m->program_id = CODEC_OUT_STR(err, s->program_id);
        m->reason = CODEC_OUT_STR(err, s->reason);
        e->program_closed = m;
        break;
    }
    case CL_EV_CARD_ISSUED: {
        const cl_ev_card_issued_t *s = &ev->u.card_issued;
        Cardledger__V1__CardIssued *m = &pb->card_issued;
        cardledger__v1__card_issued__init(m);
        m->card_id = s->card_id;
        m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
        m->program_id = CODEC_OUT_STR(err, s->program_id);
        m->code = CODEC_OUT_STR(err, s->code);
        if (s->has_pin) {
            m->pin_hash.len = CL_HASH_LEN;
            m->pin_hash.data = (uint8_t *)(uintptr_t)s->pin_hash;
        }
        m->holder = CODEC_OUT_STR(err, s->holder);
        m->channel = (Cardledger__V1__Channel)s->channel;
        m->store_id = CODEC_OUT_STR(err, s->store_id);
        m->region = CODEC_OUT_STR(err, s->region);
        m->face_value_minor = s->face_value_minor;
        m->price_paid_minor = s->price_paid_minor;
        m->uses = s->uses;
        m->valid_from_us = s->valid_from_us;
        m->expires_at_us = s->expires_at_us;
        m->imported = s->imported;
        m->row_key = CODEC_OUT_STR(err, s->row_key);
        m->batch_id = s->batch_id;
        if (s->has_code_hash) {
            m->code_hash.len = CL_HASH_LEN;
            m->code_hash.data = (uint8_t *)(uintptr_t)s->code_hash;
        }
        e->card_issued = m;
        break;
    }
    case CL_EV_BATCH_ISSUED: {
        const cl_ev_batch_issued_t *s = &ev->u.batch_issued;
        Cardledger__V1__BatchIssued *m = &pb->batch_issued;
        cardledger__v1__batch_issued__init(m);
        m->batch_id = s->batch_id;
        m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
        m->program_id = CODEC_OUT_STR(err, s->program_id);
        m->batch_ref = CODEC_OUT_STR(err, s->batch_ref);
        m->cards_issued = s->cards_issued;
        m->rows_already_issued = s->rows_already_issued;
        e->batch_issued = m;
        break;
    }
    case CL_EV_GIFT_OFFERED: {
        const cl_ev_gift_offered_t *s = &ev->u.gift_offered;
        Cardledger__V1__GiftOffered *m = &pb->gift_offered;
        cardledger__v1__gift_offered__init(m);
        m->card_id = s->card_id;
        m->offer_id = s->offer_id;
        m->from_holder = CODEC_OUT_STR(err, s->from_holder);
        m->to_holder = CODEC_OUT_STR(err, s->to_holder);
        if (!s_all_zero(s->claim_hash, sizeof s->claim_hash)) {
            m->claim_hash.len = CL_HASH_LEN;
            m->claim_hash.data = (uint8_t *)(uintptr_t)s->claim_hash;
        }
        m->expires_at_us = s->expires_at_us;
        e->gift_offered = m;
        break;
    }
    case CL_EV_GIFT_CLAIMED: {
        const cl_ev_gift_closed_t *s = &ev->u.gift_closed;
        Cardledger__V1__GiftClaimed *m = &pb->gift_claimed;
        cardledger__v1__gift_claimed__init(m);
        m->card_id = s->card_id;
        m->offer_id = s->offer_id;
        m->new_holder = CODEC_OUT_STR(err, s->new_holder);
        m->previous_holder = CODEC_OUT_STR(err, s->previous_holder);
        e->gift_claimed = m;
        break;
    }
    case CL_EV_GIFT_RECALLED:
        cardledger__v1__gift_recalled__init(&pb->gift_recalled);
        pb->gift_recalled.card_id = ev->u.gift_closed.card_id;
        pb->gift_recalled.offer_id = ev->u.gift_closed.offer_id;
        e->gift_recalled = &pb->gift_recalled;
        break;
    case CL_EV_GIFT_RETURNED:
        cardledger__v1__gift_returned__init(&pb->gift_returned);
        pb->gift_returned.card_id = ev->u.gift_closed.card_id;
        pb->gift_returned.offer_id = ev->u.gift_closed.offer_id;
        e->gift_returned = &pb->gift_returned;
        break;
    case CL_EV_CARD_REDEEMED: {
        const cl_ev_card_redeemed_t *s = &ev->u.card_redeemed;
        Cardledger__V1__CardRedeemed *m = &pb->card_redeemed;
        cardledger__v1__card_redeemed__init(m);
        m->card_id = s->card_id;
        m->store_id = CODEC_OUT_STR(err, s->store_id);
        m->region = CODEC_OUT_STR(err, s->region);
        m->order_ref = CODEC_OUT_STR(err, s->order_ref);
        m->amount_minor = s->amount_minor;
        m->uses = s->uses;
        m->balance_after_minor = s->balance_after_minor;
        m->uses_after = s->uses_after;
        m->order_amount_minor = s->order_amount_minor;
        m->sku = CODEC_OUT_STR(err, s->sku);
        e->card_redeemed = m;
        break;
    }
    case CL_EV_REDEMPTION_REVERSED: {
        const cl_ev_redemption_reversed_t *s = &ev->u.redemption_reversed;
        Cardledger__V1__RedemptionReversed *m = &pb->redemption_reversed;
        cardledger__v1__redemption_reversed__init(m);
        m->card_id = s->card_id;
        m->redemption_seq = s->redemption_seq;
        m->store_id = CODEC_OUT_STR(err, s->store_id);
        m->amount_minor = s->amount_minor;
        m->uses = s->uses;
        m->balance_after_minor = s->balance_after_minor;
        m->uses_after = s->uses_after;
        m->reason = CODEC_OUT_STR(err, s->reason);
        e->redemption_reversed = m;
        break;
    }
    case CL_EV_CARD_RELOADED: {
        const cl_ev_card_reloaded_t *s = &ev->u.card_reloaded;
        Cardledger__V1__CardReloaded *m = &pb->card_reloaded;
        cardledger__v1__card_reloaded__init(m);
        m->card_id = s->card_id;
        m->amount_minor = s->amount_minor;
        m->price_paid_minor = s->price_paid_minor;
        m->balance_after_minor = s->balance_after_minor;
        m->channel = (Cardledger__V1__Channel)s->channel;
        m->store_id = CODEC_OUT_STR(err, s->store_id);
        e->card_reloaded = m;
        break;
    }
    case CL_EV_BALANCE_TRANSFERRED: {
        const cl_ev_balance_transferred_t *s = &ev->u.balance_transferred;
        Cardledger__V1__BalanceTransferred *m = &pb->balance_transferred;
        cardledger__v1__balance_transferred__init(m);
        m->from_card_id = s->from_card_id;
        m->to_card_id = s->to_card_id;
        m->amount_minor = s->amount_minor;
        m->from_balance_after_minor = s->from_balance_after_minor;
        m->to_balance_after_minor = s->to_balance_after_minor;
        e->balance_transferred = m;
        break;
    }
    case CL_EV_CARD_ADJUSTED: {
        const cl_ev_card_adjusted_t *s = &ev->u.card_adjusted;
        Cardledger__V1__CardAdjusted *m = &pb->card_adjusted;
        cardledger__v1__card_adjusted__init(m);
        m->card_id = s->card_id;
        m->delta_minor = s->delta_minor;
        m->delta_uses = s->delta_uses;
        m->balance_after_minor = s->balance_after_minor;
        m->uses_after = s->uses_after;
        m->reason = CODEC_OUT_STR(err, s->reason);
        e->card_adjusted = m;
        break;
    }
    case CL_EV_CARD_FROZEN:
        cardledger__v1__card_frozen__init(&pb->card_frozen);
        pb->card_frozen.card_id = ev->u.card_flag.card_id;
        pb->card_frozen.reason = CODEC_OUT_STR(err, ev->u.card_flag.reason);
        e->card_frozen = &pb->card_frozen;
        break;
    case CL_EV_CARD_UNFROZEN:
        cardledger__v1__card_unfrozen__init(&pb->card_unfrozen);
        pb->card_unfrozen.card_id = ev->u.card_flag.card_id;
        pb->card_unfrozen.reason = CODEC_OUT_STR(err, ev->u.card_flag.reason);
        e->card_unfrozen = &pb->card_unfrozen;
        break;
    case CL_EV_CARD_UNLOCKED:
        cardledger__v1__card_unlocked__init(&pb->card_unlocked);
        pb->card_unlocked.card_id = ev->u.card_flag.card_id;
        pb->card_unlocked.reason = CODEC_OUT_STR(err, ev->u.card_flag.reason);
        e->card_unlocked = &pb->card_unlocked;
        break;
    case CL_EV_CARD_EXPIRED:
        cardledger__v1__card_expired__init(&pb->card_expired);
        pb->card_expired.card_id = ev->u.card_expired.card_id;
        pb->card_expired.breakage_minor = ev->u.card_expired.breakage_minor;
        pb->card_expired.uses_left = ev->u.card_expired.uses_left;
        e->card_expired = &pb->card_expired;
        break;
    case CL_EV_EXPIRY_REMINDED:
        cardledger__v1__expiry_reminded__init(&pb->expiry_reminded);
        pb->expiry_reminded.card_id = ev->u.expiry_reminded.card_id;
        pb->expiry_reminded.expires_at_us = ev->u.expiry_reminded.expires_at_us;
        pb->expiry_reminded.balance_minor = ev->u.expiry_reminded.balance_minor;
        pb->expiry_reminded.uses_left = ev->u.expiry_reminded.uses_left;
        e->expiry_reminded = &pb->expiry_reminded;
        break;
    case CL_EV_PIN_REJECTED:
        cardledger__v1__pin_rejected__init(&pb->pin_rejected);
        pb->pin_rejected.card_id = ev->u.pin.card_id;
        pb->pin_rejected.failures_in_row = ev->u.pin.failures_in_row;
        e->pin_rejected = &pb->pin_rejected;
        break;
    case CL_EV_CARD_LOCKED:
        cardledger__v1__card_locked__init(&pb->card_locked);
        pb->card_locked.card_id = ev->u.pin.card_id;
        pb->card_locked.failures_in_row = ev->u.pin.failures_in_row;
        e->card_locked = &pb->card_locked;
        break;
    case CL_EV_CLOCK_ADVANCED:
        cardledger__v1__clock_advanced__init(&pb->clock_advanced);
        pb->clock_advanced.now_us = ev->u.clock_advanced.now_us;
        e->clock_advanced = &pb->clock_advanced;
        break;
    case CL_EV_NONE:
    default:
        return CODEC_EINVAL;
    }
    /* The oneof's case numbers are the event field numbers, which cl_event_type_t mirrors. */
    e->event_case = (Cardledger__V1__JournalEntry__EventCase)ev->type;
    return 0;
}

/* Whether an event's actor goes out: the ledger's own events have none. An actor with role 0
 * but a name still goes out, so whatever decodes also encodes back to the same event. */
static bool
s_has_actor(const cl_principal_t *a)
{
    return a->role != CL_ROLE_NONE || a->merchant_id[0] != '\0' || a->store_id[0] != '\0' ||
           a->name[0] != '\0';
}

/* The actor (a Principal), written by hand from the event. */
static void
s_out_actor(codec_out_t *o, const cl_principal_t *a)
{
    codec_out_int32(o, 1, (int32_t)a->role);
    CODEC_OUT_ARRAY(o, 2, a->merchant_id);
    CODEC_OUT_ARRAY(o, 3, a->store_id);
    CODEC_OUT_ARRAY(o, 4, a->name);
}

/*
 * Packs a JournalEntry exactly as protobuf_c_message_pack() would, but sizes each submessage
 * once. protobuf-c's pack sizes the whole entry first and then, while packing, sizes the actor
 * and the event again to write their lengths; here the top level (request_id = 1, actor = 2,
 * request_id_b32 = 3, the event oneof) and the actor are written by hand (codec-private.h,
 * "Writing a message by hand"), the event is sized once and packed once by protobuf-c. The bytes
 * are the same, field for field in number order (tests/test-codec.c checks every event type
 * against protobuf-c's own pack).
 */
static int
s_entry_pack(const Cardledger__V1__JournalEntry *e, const cl_principal_t *actor, uint8_t *buf,
             size_t cap, size_t *out_len)
{
    assert(e->event_case != CARDLEDGER__V1__JOURNAL_ENTRY__EVENT__NOT_SET);
    /* Every member of the event oneof is a pointer to a message: read it through the first. */
    const ProtobufCMessage *event = (const ProtobufCMessage *)e->merchant_registered;
    assert(event != NULL);
    codec_out_t count = { NULL, 0, 0 };
    size_t id_len = e->request_id != NULL ? strlen(e->request_id) : 0;
    size_t b32_len = e->request_id_b32.len;
    size_t actor_len = 0, event_len = 0;
    if (actor != NULL) {
        s_out_actor(&count, actor);
        actor_len = count.n;
    }
    if (count.err != 0) {
        return count.err;
    }
    event_len = protobuf_c_message_get_packed_size(event);
    uint32_t event_field = (uint32_t)e->event_case;
    /* codec_len_field_size() counts the tag, the length and the payload. */
    size_t total = (id_len > 0 ? codec_len_field_size(1, id_len) : 0) +
                   (actor != NULL ? codec_len_field_size(2, actor_len) : 0) +
                   (b32_len > 0 ? codec_len_field_size(3, b32_len) : 0) +
                   codec_len_field_size(event_field, event_len);
    if (total > cap) {
        return CODEC_ENOSPC;
    }
    codec_out_t o = { buf, 0, 0 };
    codec_out_bytes(&o, 1, e->request_id, id_len);
    if (actor != NULL) {
        codec_out_head(&o, 2, actor_len);
        s_out_actor(&o, actor);
    }
    codec_out_bytes(&o, 3, e->request_id_b32.data, b32_len);
    codec_out_head(&o, event_field, event_len);
    o.n += protobuf_c_message_pack(event, buf + o.n);
    assert(o.n == total);
    *out_len = total;
    return 0;
}

int
codec_event_encode_generic(const cl_event_t *ev, uint8_t *buf, size_t cap, size_t *out_len)
{
    if (ev == NULL || out_len == NULL || (buf == NULL && cap > 0)) {
        return CODEC_EINVAL;
    }
    Cardledger__V1__JournalEntry e;
    s_event_pb_t pb;
    Cardledger__V1__ProgramSpec spec;
    codec_spec_scratch_t scratch;
    uint8_t id_raw[S_REQUEST_ID_B32_MAX];
    int err = 0;

    cardledger__v1__journal_entry__init(&e);
    /* A base32 request id goes out as its bytes (cardledger.proto, JournalEntry), anything
     * else as text; an empty one not at all. */
    char *id = CODEC_OUT_STR(&err, ev->request_id);
    size_t id_raw_len = err == 0 ? s_b32_bytes(id, id_raw) : 0;
    if (id_raw_len > 0) {
        e.request_id_b32.len = id_raw_len;
        e.request_id_b32.data = id_raw;
    } else {
        e.request_id = id;
    }
    int rc = s_event_out(&err, ev, &e, &pb, &spec, &scratch);
    if (rc != 0) {
        return rc;
    }
    if (err != 0) {
        return err;
    }
    size_t len = 0;
    rc = s_entry_pack(&e, s_has_actor(&ev->actor) ? &ev->actor : NULL, buf, cap, &len);
    if (rc != 0) {
        return rc;
    }
    assert(len <= CODEC_EVENT_MAX_BYTES);
    *out_len = len;
    return 0;
}

/* ---- CardRedeemed and CardIssued, straight to the wire ------------------------------------- */

static void
s_direct_redeemed(codec_out_t *o, const cl_ev_card_redeemed_t *s)
{
    codec_out_varint(o, 1, s->card_id);
    CODEC_OUT_ARRAY(o, 2, s->store_id);
    CODEC_OUT_ARRAY(o, 3, s->region);
    CODEC_OUT_ARRAY(o, 4, s->order_ref);
    codec_out_varint(o, 5, (uint64_t)s->amount_minor);
    codec_out_varint(o, 6, s->uses);
    codec_out_varint(o, 7, (uint64_t)s->balance_after_minor);
    codec_out_varint(o, 8, s->uses_after);
    codec_out_varint(o, 9, (uint64_t)s->order_amount_minor);
    CODEC_OUT_ARRAY(o, 10, s->sku);
}

static void
s_direct_issued(codec_out_t *o, const cl_ev_card_issued_t *s)
{
    codec_out_varint(o, 1, s->card_id);
    CODEC_OUT_ARRAY(o, 2, s->merchant_id);
    CODEC_OUT_ARRAY(o, 3, s->program_id);
    CODEC_OUT_ARRAY(o, 4, s->code);
    if (s->has_pin) {
        codec_out_bytes(o, 5, s->pin_hash, CL_HASH_LEN);
    }
    CODEC_OUT_ARRAY(o, 6, s->holder);
    codec_out_int32(o, 7, (int32_t)s->channel);
    CODEC_OUT_ARRAY(o, 8, s->store_id);
    CODEC_OUT_ARRAY(o, 9, s->region);
    codec_out_varint(o, 10, (uint64_t)s->face_value_minor);
    codec_out_varint(o, 11, (uint64_t)s->price_paid_minor);
    codec_out_varint(o, 12, s->uses);
    codec_out_varint(o, 13, (uint64_t)s->valid_from_us);
    codec_out_varint(o, 14, (uint64_t)s->expires_at_us);
    codec_out_varint(o, 15, s->imported);
    CODEC_OUT_ARRAY(o, 16, s->row_key);
    codec_out_varint(o, 17, s->batch_id);
    if (s->has_code_hash) {
        codec_out_bytes(o, 18, s->code_hash, CL_HASH_LEN);
    }
}

static void
s_direct_event(codec_out_t *o, const cl_event_t *ev)
{
    if (ev->type == CL_EV_CARD_REDEEMED) {
        s_direct_redeemed(o, &ev->u.card_redeemed);
    } else {
        s_direct_issued(o, &ev->u.card_issued);
    }
}

/* Room for a CardRedeemed or CardIssued message and for an actor as s_encode_direct() writes
 * them: every string at its longest, and at most 16 bytes of tag, length and number a field. */
#define S_DIRECT_BODY_MAX  (sizeof(cl_ev_card_issued_t) + 17 * 16)
#define S_DIRECT_ACTOR_MAX (sizeof(cl_principal_t) + 4 * 16)
_Static_assert(sizeof(cl_ev_card_redeemed_t) + 10 * 16 <= S_DIRECT_BODY_MAX,
               "a CardRedeemed fits the room of a CardIssued");
_Static_assert(S_DIRECT_BODY_MAX + S_DIRECT_ACTOR_MAX + 3 * 16 + S_REQUEST_ID_B32_MAX +
                       CL_REQUEST_ID_MAX <=
                   CODEC_EVENT_MAX_BYTES,
               "a whole entry stays within CODEC_EVENT_MAX_BYTES");

/*
 * codec_event_encode() of a CardRedeemed or a CardIssued, the events written most (one per
 * redeem, one per card of a batch issue): field by field from ev to the wire, with no protobuf-c
 * message in between. The event and the actor are written once, into room of their own, then
 * copied behind the entry's top level. The rules are those of codec_event_encode_generic(): the
 * request id as its base32 bytes when it is such text, else as text, empty not at all; the
 * actor unless it is all empty; CODEC_ELIMIT for a string without its NUL, before
 * CODEC_ENOSPC. The bytes are the same (tests/test-codec.c compares both ways over random
 * events of both types).
 */
static int
s_encode_direct(const cl_event_t *ev, uint8_t *buf, size_t cap, size_t *out_len)
{
    const char *id_end = memchr(ev->request_id, '\0', sizeof ev->request_id);
    uint8_t id_raw[S_REQUEST_ID_B32_MAX];
    size_t id_raw_len = id_end != NULL ? s_b32_bytes(ev->request_id, id_raw) : 0;
    size_t id_len = id_end != NULL && id_raw_len == 0 ? (size_t)(id_end - ev->request_id) : 0;
    const cl_principal_t *a = &ev->actor;
    bool has_actor = s_has_actor(a);

    uint8_t actor[S_DIRECT_ACTOR_MAX];
    uint8_t body[S_DIRECT_BODY_MAX];
    codec_out_t ao = { actor, 0, id_end == NULL ? CODEC_ELIMIT : 0 };
    if (has_actor) {
        s_out_actor(&ao, a);
    }
    codec_out_t eo = { body, 0, ao.err };
    s_direct_event(&eo, ev);
    if (eo.err != 0) {
        return eo.err;
    }
    assert(ao.n <= sizeof actor && eo.n <= sizeof body);
    uint32_t event_field = ev->type == CL_EV_CARD_REDEEMED
                               ? CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_REDEEMED
                               : CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ISSUED;
    size_t total = (id_len > 0 ? codec_len_field_size(1, id_len) : 0) +
                   (has_actor ? codec_len_field_size(2, ao.n) : 0) +
                   (id_raw_len > 0 ? codec_len_field_size(3, id_raw_len) : 0) +
                   codec_len_field_size(event_field, eo.n);
    if (total > cap) {
        return CODEC_ENOSPC;
    }
    codec_out_t o = { buf, 0, 0 };
    codec_out_bytes(&o, 1, ev->request_id, id_len);
    if (has_actor) {
        codec_out_head(&o, 2, ao.n);
        memcpy(buf + o.n, actor, ao.n);
        o.n += ao.n;
    }
    codec_out_bytes(&o, 3, id_raw, id_raw_len);
    codec_out_head(&o, event_field, eo.n);
    memcpy(buf + o.n, body, eo.n);
    o.n += eo.n;
    assert(o.n == total && total <= CODEC_EVENT_MAX_BYTES);
    *out_len = total;
    return 0;
}

int
codec_event_encode(const cl_event_t *ev, uint8_t *buf, size_t cap, size_t *out_len)
{
    if (ev == NULL || out_len == NULL || (buf == NULL && cap > 0)) {
        return CODEC_EINVAL;
    }
    if (ev->type == CL_EV_CARD_REDEEMED || ev->type == CL_EV_CARD_ISSUED) {
        return s_encode_direct(ev, buf, cap, out_len);
    }
    return codec_event_encode_generic(ev, buf, cap, out_len);
}

/* ---- Decoding ----------------------------------------------------------------------------- */

/* A hash of CL_HASH_LEN bytes (a keyed PIN or claim hash, an export's code_hash): empty (false),
 * or exactly CL_HASH_LEN bytes (true); anything else fails. */
static bool
s_in_hash(codec_in_t *in, uint8_t *dst, const ProtobufCBinaryData *src, const char *field)
{
    if (src->len == 0) {
        return false;
    }
    if (src->len != CL_HASH_LEN) {
        codec_in_fail(in, CODEC_EINVALID, "%s is %zu bytes, it must be %d", field, src->len,
                      CL_HASH_LEN);
        return false;
    }
    memcpy(dst, src->data, CL_HASH_LEN);
    return true;
}

/* Fills ev's union from the unpacked entry; ev is zero. Returns CODEC_EUNKNOWN without an
 * event; other failures are left in *in. */
static int
s_event_in(codec_in_t *in, const Cardledger__V1__JournalEntry *e, cl_event_t *ev)
{
    switch (e->event_case) {
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_MERCHANT_REGISTERED: {
        const Cardledger__V1__MerchantRegistered *m = e->merchant_registered;
        cl_ev_merchant_registered_t *d = &ev->u.merchant_registered;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, m->merchant_id, "merchant_id");
        codec_in_str(in, d->name, sizeof d->name, m->name, "name");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_STORE_REGISTERED: {
        const Cardledger__V1__StoreRegistered *m = e->store_registered;
        cl_ev_store_registered_t *d = &ev->u.store_registered;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, m->merchant_id, "merchant_id");
        codec_in_str(in, d->store_id, sizeof d->store_id, m->store_id, "store_id");
        codec_in_str(in, d->name, sizeof d->name, m->name, "name");
        codec_in_str(in, d->region, sizeof d->region, m->region, "region");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_PROGRAM_DEFINED:
        codec_in_spec(in, &ev->u.program, e->program_defined->spec);
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_PROGRAM_UPDATED:
        codec_in_spec(in, &ev->u.program, e->program_updated->spec);
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_PROGRAM_CLOSED: {
        const Cardledger__V1__ProgramClosed *m = e->program_closed;
        cl_ev_program_closed_t *d = &ev->u.program_closed;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, m->merchant_id, "merchant_id");
        codec_in_str(in, d->program_id, sizeof d->program_id, m->program_id, "program_id");
        codec_in_str(in, d->reason, sizeof d->reason, m->reason, "reason");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ISSUED: {
        const Cardledger__V1__CardIssued *m = e->card_issued;
        cl_ev_card_issued_t *d = &ev->u.card_issued;
        d->card_id = m->card_id;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, m->merchant_id, "merchant_id");
        codec_in_str(in, d->program_id, sizeof d->program_id, m->program_id, "program_id");
        codec_in_str(in, d->code, sizeof d->code, m->code, "code");
        d->has_pin = s_in_hash(in, d->pin_hash, &m->pin_hash, "pin_hash");
        codec_in_str(in, d->holder, sizeof d->holder, m->holder, "holder");
        d->channel = (cl_channel_t)m->channel;
        codec_in_str(in, d->store_id, sizeof d->store_id, m->store_id, "store_id");
        codec_in_str(in, d->region, sizeof d->region, m->region, "region");
        d->face_value_minor = m->face_value_minor;
        d->price_paid_minor = m->price_paid_minor;
        d->uses = m->uses;
        d->valid_from_us = m->valid_from_us;
        d->expires_at_us = m->expires_at_us;
        d->imported = m->imported != 0;
        codec_in_str(in, d->row_key, sizeof d->row_key, m->row_key, "row_key");
        d->batch_id = m->batch_id;
        d->has_code_hash = s_in_hash(in, d->code_hash, &m->code_hash, "code_hash");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_BATCH_ISSUED: {
        const Cardledger__V1__BatchIssued *m = e->batch_issued;
        cl_ev_batch_issued_t *d = &ev->u.batch_issued;
        d->batch_id = m->batch_id;
        codec_in_str(in, d->merchant_id, sizeof d->merchant_id, m->merchant_id, "merchant_id");
        codec_in_str(in, d->program_id, sizeof d->program_id, m->program_id, "program_id");
        codec_in_str(in, d->batch_ref, sizeof d->batch_ref, m->batch_ref, "batch_ref");
        d->cards_issued = m->cards_issued;
        d->rows_already_issued = m->rows_already_issued;
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_OFFERED: {
        const Cardledger__V1__GiftOffered *m = e->gift_offered;
        cl_ev_gift_offered_t *d = &ev->u.gift_offered;
        d->card_id = m->card_id;
        d->offer_id = m->offer_id;
        codec_in_str(in, d->from_holder, sizeof d->from_holder, m->from_holder, "from_holder");
        codec_in_str(in, d->to_holder, sizeof d->to_holder, m->to_holder, "to_holder");
        (void)s_in_hash(in, d->claim_hash, &m->claim_hash, "claim_hash");
        d->expires_at_us = m->expires_at_us;
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_CLAIMED: {
        const Cardledger__V1__GiftClaimed *m = e->gift_claimed;
        cl_ev_gift_closed_t *d = &ev->u.gift_closed;
        d->card_id = m->card_id;
        d->offer_id = m->offer_id;
        codec_in_str(in, d->new_holder, sizeof d->new_holder, m->new_holder, "new_holder");
        codec_in_str(in, d->previous_holder, sizeof d->previous_holder, m->previous_holder,
                     "previous_holder");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_RECALLED:
        ev->u.gift_closed.card_id = e->gift_recalled->card_id;
        ev->u.gift_closed.offer_id = e->gift_recalled->offer_id;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_RETURNED:
        ev->u.gift_closed.card_id = e->gift_returned->card_id;
        ev->u.gift_closed.offer_id = e->gift_returned->offer_id;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_REDEEMED: {
        const Cardledger__V1__CardRedeemed *m = e->card_redeemed;
        cl_ev_card_redeemed_t *d = &ev->u.card_redeemed;
        d->card_id = m->card_id;
        codec_in_str(in, d->store_id, sizeof d->store_id, m->store_id, "store_id");
        codec_in_str(in, d->region, sizeof d->region, m->region, "region");
        codec_in_str(in, d->order_ref, sizeof d->order_ref, m->order_ref, "order_ref");
        d->amount_minor = m->amount_minor;
        d->uses = m->uses;
        d->balance_after_minor = m->balance_after_minor;
        d->uses_after = m->uses_after;
        d->order_amount_minor = m->order_amount_minor;
        codec_in_str(in, d->sku, sizeof d->sku, m->sku, "sku");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_REDEMPTION_REVERSED: {
        const Cardledger__V1__RedemptionReversed *m = e->redemption_reversed;
        cl_ev_redemption_reversed_t *d = &ev->u.redemption_reversed;
        d->card_id = m->card_id;
        d->redemption_seq = m->redemption_seq;
        codec_in_str(in, d->store_id, sizeof d->store_id, m->store_id, "store_id");
        d->amount_minor = m->amount_minor;
        d->uses = m->uses;
        d->balance_after_minor = m->balance_after_minor;
        d->uses_after = m->uses_after;
        codec_in_str(in, d->reason, sizeof d->reason, m->reason, "reason");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_RELOADED: {
        const Cardledger__V1__CardReloaded *m = e->card_reloaded;
        cl_ev_card_reloaded_t *d = &ev->u.card_reloaded;
        d->card_id = m->card_id;
        d->amount_minor = m->amount_minor;
        d->price_paid_minor = m->price_paid_minor;
        d->balance_after_minor = m->balance_after_minor;
        d->channel = (cl_channel_t)m->channel;
        codec_in_str(in, d->store_id, sizeof d->store_id, m->store_id, "store_id");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_BALANCE_TRANSFERRED: {
        const Cardledger__V1__BalanceTransferred *m = e->balance_transferred;
        cl_ev_balance_transferred_t *d = &ev->u.balance_transferred;
        d->from_card_id = m->from_card_id;
        d->to_card_id = m->to_card_id;
        d->amount_minor = m->amount_minor;
        d->from_balance_after_minor = m->from_balance_after_minor;
        d->to_balance_after_minor = m->to_balance_after_minor;
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ADJUSTED: {
        const Cardledger__V1__CardAdjusted *m = e->card_adjusted;
        cl_ev_card_adjusted_t *d = &ev->u.card_adjusted;
        d->card_id = m->card_id;
        d->delta_minor = m->delta_minor;
        d->delta_uses = m->delta_uses;
        d->balance_after_minor = m->balance_after_minor;
        d->uses_after = m->uses_after;
        codec_in_str(in, d->reason, sizeof d->reason, m->reason, "reason");
        break;
    }
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_FROZEN:
        ev->u.card_flag.card_id = e->card_frozen->card_id;
        codec_in_str(in, ev->u.card_flag.reason, sizeof ev->u.card_flag.reason,
                     e->card_frozen->reason, "reason");
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_UNFROZEN:
        ev->u.card_flag.card_id = e->card_unfrozen->card_id;
        codec_in_str(in, ev->u.card_flag.reason, sizeof ev->u.card_flag.reason,
                     e->card_unfrozen->reason, "reason");
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_UNLOCKED:
        ev->u.card_flag.card_id = e->card_unlocked->card_id;
        codec_in_str(in, ev->u.card_flag.reason, sizeof ev->u.card_flag.reason,
                     e->card_unlocked->reason, "reason");
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_EXPIRED:
        ev->u.card_expired.card_id = e->card_expired->card_id;
        ev->u.card_expired.breakage_minor = e->card_expired->breakage_minor;
        ev->u.card_expired.uses_left = e->card_expired->uses_left;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_EXPIRY_REMINDED:
        ev->u.expiry_reminded.card_id = e->expiry_reminded->card_id;
        ev->u.expiry_reminded.expires_at_us = e->expiry_reminded->expires_at_us;
        ev->u.expiry_reminded.balance_minor = e->expiry_reminded->balance_minor;
        ev->u.expiry_reminded.uses_left = e->expiry_reminded->uses_left;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_PIN_REJECTED:
        ev->u.pin.card_id = e->pin_rejected->card_id;
        ev->u.pin.failures_in_row = e->pin_rejected->failures_in_row;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_LOCKED:
        ev->u.pin.card_id = e->card_locked->card_id;
        ev->u.pin.failures_in_row = e->card_locked->failures_in_row;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CLOCK_ADVANCED:
        ev->u.clock_advanced.now_us = e->clock_advanced->now_us;
        break;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT__NOT_SET:
    default:
        return CODEC_EUNKNOWN;
    }
    ev->type = (cl_event_type_t)e->event_case;
    return 0;
}

/* The full decode (walker, protobuf-c, mapping), into *ev (zeroed first; garbage on
 * failure). */
static int
s_decode_full(const void *buf, size_t len, cl_event_t *ev)
{
    const uint8_t *p = buf;
    codec_walk_t walk;
    int rc = codec_walk(&walk, &cardledger__v1__journal_entry__descriptor, p, len);
    if (rc != 0) {
        return rc;
    }
    if (walk.problem != 0) {
        return walk.problem;
    }

    alignas(max_align_t) unsigned char mem[S_EVENT_ARENA_BYTES];
    codec_arena_t arena;
    codec_arena_init(&arena, mem, sizeof mem);
    Cardledger__V1__JournalEntry *e = cardledger__v1__journal_entry__unpack(&arena.base, len, p);
    if (e == NULL) {
        return CODEC_EMALFORMED; /* the walker lets through nothing else protobuf-c refuses */
    }

    memset(ev, 0, sizeof *ev);
    codec_in_t in;
    codec_in_init(&in, NULL, 0, false);
    if (e->request_id_b32.len == 0) {
        codec_in_str(&in, ev->request_id, sizeof ev->request_id, e->request_id, "request_id");
    } else if (e->request_id != NULL && e->request_id[0] != '\0') {
        codec_in_fail(&in, CODEC_EINVALID, "request_id and request_id_b32 are both set");
    } else if (e->request_id_b32.len > S_REQUEST_ID_B32_MAX ||
               !s_b32_text(e->request_id_b32.data, e->request_id_b32.len, ev->request_id,
                           sizeof ev->request_id)) {
        codec_in_fail(&in, CODEC_ELIMIT, "request_id_b32 is %zu bytes, the limit is %d",
                      e->request_id_b32.len, S_REQUEST_ID_B32_MAX);
    }
    if (e->actor != NULL) {
        ev->actor.role = (cl_role_t)e->actor->role;
        codec_in_str(&in, ev->actor.merchant_id, sizeof ev->actor.merchant_id,
                     e->actor->merchant_id, "actor.merchant_id");
        codec_in_str(&in, ev->actor.store_id, sizeof ev->actor.store_id, e->actor->store_id,
                     "actor.store_id");
        codec_in_str(&in, ev->actor.name, sizeof ev->actor.name, e->actor->name, "actor.name");
    }
    rc = s_event_in(&in, e, ev);
    cardledger__v1__journal_entry__free_unpacked(e, &arena.base);
    if (rc == 0) {
        rc = in.err;
    }
    if (rc != 0) {
        return rc;
    }
    assert(ev->type != CL_EV_NONE && ev->seq == 0 && ev->at_us == 0);
    return 0;
}

/* ---- Decoding straight from the wire (the fold's hot path) -------------------------------- */

/*
 * s_decode_fast() reads the commonest entries (card events with flat fields) straight from the
 * wire into cl_event_t, without the walker, protobuf-c's unpack and free, and the mapping above:
 * on a replay those were most of the reader thread's time. It is a strict subset: it takes only
 * entries in the plain form the encoder writes (each field once, with its declared wire type,
 * canonical varints that fit the field without truncation, strings of ASCII without NUL under
 * their limit, no unknown fields, one event). Anything else, valid or not, goes to the full
 * path, which then decides. Within that subset both paths give the same bytes, which
 * test-codec checks over encoded events and their mutations.
 */

enum {
    S_F_U64 = 1, /* uint64 */
    S_F_I64,     /* int64 */
    S_F_U32,     /* uint32 */
    S_F_I32,     /* int32 or an enum: non-negative values only (others take the full path) */
    S_F_BOOL,    /* bool: 0 or 1 */
    S_F_STR,     /* string into char[cap] */
    S_F_HASH,    /* bytes: empty, or CL_HASH_LEN bytes (cap is the offset of a bool to set) */
};

/* One field of an event message: where it goes in the union member. */
typedef struct s_fast_field {
    uint8_t number; /* 0 ends the list */
    uint8_t kind;   /* S_F_* */
    uint16_t off;   /* offset in cl_event_t */
    uint16_t cap;   /* S_F_STR: the array's size; S_F_HASH: offset of its "has" bool, or 0 */
} s_fast_field_t;

#define S_U(member) ((uint16_t)offsetof(cl_event_t, u.member))
#define S_STR(n, member)                                                       \
    {                                                                          \
        n, S_F_STR, S_U(member), (uint16_t)sizeof(((cl_event_t *)0)->u.member) \
    }

_Static_assert(sizeof(cl_event_t) < 65536, "offsets fit 16 bits");
_Static_assert(sizeof(cl_channel_t) == sizeof(int32_t), "an enum is stored as int32");
_Static_assert(sizeof(cl_role_t) == sizeof(int32_t), "an enum is stored as int32");

/* The event messages taken, by JournalEntry field number (= cl_event_type_t), exactly as
 * s_event_in() maps them. */
static const s_fast_field_t s_fast_issued[] = {
    { 1, S_F_U64, S_U(card_issued.card_id), 0 },
    S_STR(2, card_issued.merchant_id),
    S_STR(3, card_issued.program_id),
    S_STR(4, card_issued.code),
    { 5, S_F_HASH, S_U(card_issued.pin_hash), S_U(card_issued.has_pin) },
    S_STR(6, card_issued.holder),
    { 7, S_F_I32, S_U(card_issued.channel), 0 },
    S_STR(8, card_issued.store_id),
    S_STR(9, card_issued.region),
    { 10, S_F_I64, S_U(card_issued.face_value_minor), 0 },
    { 11, S_F_I64, S_U(card_issued.price_paid_minor), 0 },
    { 12, S_F_U32, S_U(card_issued.uses), 0 },
    { 13, S_F_I64, S_U(card_issued.valid_from_us), 0 },
    { 14, S_F_I64, S_U(card_issued.expires_at_us), 0 },
    { 15, S_F_BOOL, S_U(card_issued.imported), 0 },
    S_STR(16, card_issued.row_key),
    { 17, S_F_U64, S_U(card_issued.batch_id), 0 },
    { 18, S_F_HASH, S_U(card_issued.code_hash), S_U(card_issued.has_code_hash) },
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_redeemed[] = {
    { 1, S_F_U64, S_U(card_redeemed.card_id), 0 },
    S_STR(2, card_redeemed.store_id),
    S_STR(3, card_redeemed.region),
    S_STR(4, card_redeemed.order_ref),
    { 5, S_F_I64, S_U(card_redeemed.amount_minor), 0 },
    { 6, S_F_U32, S_U(card_redeemed.uses), 0 },
    { 7, S_F_I64, S_U(card_redeemed.balance_after_minor), 0 },
    { 8, S_F_U32, S_U(card_redeemed.uses_after), 0 },
    { 9, S_F_I64, S_U(card_redeemed.order_amount_minor), 0 },
    S_STR(10, card_redeemed.sku),
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_reversed[] = {
    { 1, S_F_U64, S_U(redemption_reversed.card_id), 0 },
    { 2, S_F_U64, S_U(redemption_reversed.redemption_seq), 0 },
    S_STR(3, redemption_reversed.store_id),
    { 4, S_F_I64, S_U(redemption_reversed.amount_minor), 0 },
    { 5, S_F_U32, S_U(redemption_reversed.uses), 0 },
    { 6, S_F_I64, S_U(redemption_reversed.balance_after_minor), 0 },
    { 7, S_F_U32, S_U(redemption_reversed.uses_after), 0 },
    S_STR(8, redemption_reversed.reason),
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_reloaded[] = {
    { 1, S_F_U64, S_U(card_reloaded.card_id), 0 },
    { 2, S_F_I64, S_U(card_reloaded.amount_minor), 0 },
    { 3, S_F_I64, S_U(card_reloaded.price_paid_minor), 0 },
    { 4, S_F_I64, S_U(card_reloaded.balance_after_minor), 0 },
    { 5, S_F_I32, S_U(card_reloaded.channel), 0 },
    S_STR(6, card_reloaded.store_id),
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_transferred[] = {
    { 1, S_F_U64, S_U(balance_transferred.from_card_id), 0 },
    { 2, S_F_U64, S_U(balance_transferred.to_card_id), 0 },
    { 3, S_F_I64, S_U(balance_transferred.amount_minor), 0 },
    { 4, S_F_I64, S_U(balance_transferred.from_balance_after_minor), 0 },
    { 5, S_F_I64, S_U(balance_transferred.to_balance_after_minor), 0 },
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_adjusted[] = {
    { 1, S_F_U64, S_U(card_adjusted.card_id), 0 },
    { 2, S_F_I64, S_U(card_adjusted.delta_minor), 0 },
    { 3, S_F_I32, S_U(card_adjusted.delta_uses), 0 },
    { 4, S_F_I64, S_U(card_adjusted.balance_after_minor), 0 },
    { 5, S_F_U32, S_U(card_adjusted.uses_after), 0 },
    S_STR(6, card_adjusted.reason),
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_flag[] = {
    { 1, S_F_U64, S_U(card_flag.card_id), 0 },
    S_STR(2, card_flag.reason),
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_expired[] = {
    { 1, S_F_U64, S_U(card_expired.card_id), 0 },
    { 2, S_F_I64, S_U(card_expired.breakage_minor), 0 },
    { 3, S_F_U32, S_U(card_expired.uses_left), 0 },
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_reminded[] = {
    { 1, S_F_U64, S_U(expiry_reminded.card_id), 0 },
    { 2, S_F_I64, S_U(expiry_reminded.expires_at_us), 0 },
    { 3, S_F_I64, S_U(expiry_reminded.balance_minor), 0 },
    { 4, S_F_U32, S_U(expiry_reminded.uses_left), 0 },
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_pin[] = {
    { 1, S_F_U64, S_U(pin.card_id), 0 },
    { 2, S_F_U32, S_U(pin.failures_in_row), 0 },
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_gift_offered[] = {
    { 1, S_F_U64, S_U(gift_offered.card_id), 0 },
    { 2, S_F_U64, S_U(gift_offered.offer_id), 0 },
    S_STR(3, gift_offered.from_holder),
    S_STR(4, gift_offered.to_holder),
    { 5, S_F_HASH, S_U(gift_offered.claim_hash), 0 },
    { 6, S_F_I64, S_U(gift_offered.expires_at_us), 0 },
    { 0, 0, 0, 0 },
};
static const s_fast_field_t s_fast_gift_claimed[] = {
    { 1, S_F_U64, S_U(gift_closed.card_id), 0 },
    { 2, S_F_U64, S_U(gift_closed.offer_id), 0 },
    S_STR(3, gift_closed.new_holder),
    S_STR(4, gift_closed.previous_holder),
    { 0, 0, 0, 0 },
};
/* GiftRecalled and GiftReturned. */
static const s_fast_field_t s_fast_gift_ended[] = {
    { 1, S_F_U64, S_U(gift_closed.card_id), 0 },
    { 2, S_F_U64, S_U(gift_closed.offer_id), 0 },
    { 0, 0, 0, 0 },
};
/* The actor (Principal), at its place in cl_event_t. */
static const s_fast_field_t s_fast_actor[] = {
    { 1, S_F_I32, (uint16_t)offsetof(cl_event_t, actor.role), 0 },
    { 2, S_F_STR, (uint16_t)offsetof(cl_event_t, actor.merchant_id),
      (uint16_t)sizeof(((cl_event_t *)0)->actor.merchant_id) },
    { 3, S_F_STR, (uint16_t)offsetof(cl_event_t, actor.store_id),
      (uint16_t)sizeof(((cl_event_t *)0)->actor.store_id) },
    { 4, S_F_STR, (uint16_t)offsetof(cl_event_t, actor.name),
      (uint16_t)sizeof(((cl_event_t *)0)->actor.name) },
    { 0, 0, 0, 0 },
};

/* The fields of an event message the fast path takes (NULL: not taken), and in *out_size the
 * size of its union member. */
static const s_fast_field_t *
s_fast_fields(uint32_t event_field, size_t *out_size)
{
    cl_event_t *ev = NULL; /* for sizeof only */
    switch (event_field) {
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ISSUED:
        *out_size = sizeof ev->u.card_issued;
        return s_fast_issued;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_REDEEMED:
        *out_size = sizeof ev->u.card_redeemed;
        return s_fast_redeemed;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_REDEMPTION_REVERSED:
        *out_size = sizeof ev->u.redemption_reversed;
        return s_fast_reversed;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_RELOADED:
        *out_size = sizeof ev->u.card_reloaded;
        return s_fast_reloaded;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_BALANCE_TRANSFERRED:
        *out_size = sizeof ev->u.balance_transferred;
        return s_fast_transferred;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_ADJUSTED:
        *out_size = sizeof ev->u.card_adjusted;
        return s_fast_adjusted;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_FROZEN:
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_UNFROZEN:
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_UNLOCKED:
        *out_size = sizeof ev->u.card_flag;
        return s_fast_flag;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_EXPIRED:
        *out_size = sizeof ev->u.card_expired;
        return s_fast_expired;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_EXPIRY_REMINDED:
        *out_size = sizeof ev->u.expiry_reminded;
        return s_fast_reminded;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_PIN_REJECTED:
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_CARD_LOCKED:
        *out_size = sizeof ev->u.pin;
        return s_fast_pin;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_OFFERED:
        *out_size = sizeof ev->u.gift_offered;
        return s_fast_gift_offered;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_CLAIMED:
        *out_size = sizeof ev->u.gift_closed;
        return s_fast_gift_claimed;
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_RECALLED:
    case CARDLEDGER__V1__JOURNAL_ENTRY__EVENT_GIFT_RETURNED:
        *out_size = sizeof ev->u.gift_closed;
        return s_fast_gift_ended;
    default:
        *out_size = 0;
        return NULL;
    }
}

/* A canonical varint (its shortest encoding, at most 10 bytes, no bits past 64) at *p; false
 * for anything else. */
static inline bool
s_fast_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    const uint8_t *q = *p;
    if (q < end && *q < 0x80) { /* one byte: every tag here, and most small values */
        *out = *q;
        *p = q + 1;
        return true;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; q < end && shift < 70; shift += 7) {
        uint8_t b = *q++;
        if (shift == 63 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (b == 0 && shift != 0)
                return false; /* a longer encoding than needed */
            *p = q;
            *out = v;
            return true;
        }
    }
    return false;
}

/* A field's tag and, for a length-delimited one, its payload. false when malformed. */
static inline bool
s_fast_tag(const uint8_t **p, const uint8_t *end, uint32_t *out_number, uint32_t *out_wt)
{
    uint64_t tag;
    if (!s_fast_varint(p, end, &tag) || tag > UINT32_MAX || (tag >> 3) == 0)
        return false;
    *out_number = (uint32_t)(tag >> 3);
    *out_wt = (uint32_t)(tag & 7u);
    return true;
}

static inline bool
s_fast_len(const uint8_t **p, const uint8_t *end, const uint8_t **out_data, size_t *out_len)
{
    uint64_t n;
    if (!s_fast_varint(p, end, &n) || n > (uint64_t)(end - *p))
        return false;
    *out_data = *p;
    *out_len = (size_t)n;
    *p += n;
    return true;
}

/* ASCII without NUL: valid UTF-8 that protobuf-c and the walker take as it is. */
static inline bool
s_fast_ascii(const uint8_t *s, size_t n)
{
    bool bad = false;
    for (size_t i = 0; i < n; i++)
        bad |= (uint8_t)(s[i] - 1u) >= 0x7fu; /* 0 wraps to 0xff; 0x80 and up stay >= 0x7f */
    return !bad;
}

/* Reads the fields of one flat message into ev; false when anything is outside the subset. */
static bool
s_fast_message(const uint8_t *p, const uint8_t *end, const s_fast_field_t *fields, cl_event_t *ev)
{
    uint8_t *base = (uint8_t *)ev;
    uint64_t seen = 0;
    /* The encoder writes fields in the order of their numbers, as the lists are: the search
     * starts after the field found last, and only a field not there starts it again. */
    const s_fast_field_t *next = fields;
    while (p < end) {
        uint32_t number, wt;
        if (!s_fast_tag(&p, end, &number, &wt) || number >= 64 || (seen >> number) & 1u)
            return false;
        seen |= (uint64_t)1 << number;
        const s_fast_field_t *f = next;
        while (f->number != 0 && f->number != number)
            f++;
        if (f->number == 0) {
            for (f = fields; f->number != 0 && f->number != number;)
                f++;
        }
        if (f->number == 0)
            return false; /* unknown here: the full path keeps or refuses it */
        next = f + 1;
        if (f->kind == S_F_STR || f->kind == S_F_HASH) {
            const uint8_t *data;
            size_t len;
            if (wt != CODEC_WT_LEN || !s_fast_len(&p, end, &data, &len))
                return false;
            if (f->kind == S_F_STR) {
                if (len >= f->cap || !s_fast_ascii(data, len))
                    return false;
                memcpy(base + f->off, data, len); /* the NUL is there: ev is zero */
            } else if (len != 0) {
                if (len != CL_HASH_LEN)
                    return false;
                memcpy(base + f->off, data, CL_HASH_LEN);
                if (f->cap != 0)
                    *(bool *)(void *)(base + f->cap) = true;
            }
            continue;
        }
        uint64_t v;
        if (wt != CODEC_WT_VARINT || !s_fast_varint(&p, end, &v))
            return false;
        switch (f->kind) {
        case S_F_U64:
        case S_F_I64:
            memcpy(base + f->off, &v, 8);
            break;
        case S_F_U32: {
            if (v > UINT32_MAX)
                return false;
            uint32_t x = (uint32_t)v;
            memcpy(base + f->off, &x, 4);
            break;
        }
        case S_F_I32: {
            if (v > INT32_MAX)
                return false;
            int32_t x = (int32_t)v;
            memcpy(base + f->off, &x, 4);
            break;
        }
        default: /* S_F_BOOL */
            if (v > 1)
                return false;
            *(bool *)(void *)(base + f->off) = v != 0;
            break;
        }
    }
    return true;
}

/* 0 when the entry was decoded into *ev; 1 when it is outside the subset (ev is garbage then,
 * and the caller decodes it the full way). With whole, all of *ev is zeroed first; without, only
 * the envelope and the event's own union member (codec_event_decode_fold()). */
static int
s_decode_fast(const uint8_t *p, size_t len, cl_event_t *ev, bool whole)
{
    size_t member = 0;
    const uint8_t *end = p + len;
    const uint8_t *id = NULL, *id_b32 = NULL, *actor = NULL, *event = NULL;
    size_t id_len = 0, id_b32_len = 0, actor_len = 0, event_len = 0;
    uint32_t event_field = 0;
    while (p < end) {
        uint32_t number, wt;
        const uint8_t *data;
        size_t n;
        if (!s_fast_tag(&p, end, &number, &wt) || wt != CODEC_WT_LEN ||
            !s_fast_len(&p, end, &data, &n))
            return 1;
        switch (number) {
        case 1:
            if (id != NULL)
                return 1;
            id = data;
            id_len = n;
            break;
        case 2:
            if (actor != NULL)
                return 1;
            actor = data;
            actor_len = n;
            break;
        case 3:
            if (id_b32 != NULL)
                return 1;
            id_b32 = data;
            id_b32_len = n;
            break;
        default:
            if (event != NULL || s_fast_fields(number, &member) == NULL)
                return 1;
            event = data;
            event_len = n;
            event_field = number;
            break;
        }
    }
    if (event == NULL)
        return 1;
    memset(ev, 0, whole ? sizeof *ev : offsetof(cl_event_t, u) + member);
    if (id_b32 != NULL && id_b32_len > 0) {
        if ((id != NULL && id_len > 0) || id_b32_len > S_REQUEST_ID_B32_MAX ||
            !s_b32_text(id_b32, id_b32_len, ev->request_id, sizeof ev->request_id))
            return 1;
    } else if (id != NULL) {
        if (id_len >= sizeof ev->request_id || !s_fast_ascii(id, id_len))
            return 1;
        memcpy(ev->request_id, id, id_len);
    }
    if (actor != NULL && !s_fast_message(actor, actor + actor_len, s_fast_actor, ev))
        return 1;
    if (!s_fast_message(event, event + event_len, s_fast_fields(event_field, &member), ev))
        return 1;
    ev->type = (cl_event_type_t)event_field;
    return 0;
}

/* The decode itself, into *ev (zeroed first; garbage on failure). */
static int
s_decode(const void *buf, size_t len, cl_event_t *ev)
{
    if (buf != NULL && s_decode_fast(buf, len, ev, true) == 0) {
        return 0;
    }
    return s_decode_full(buf, len, ev);
}

int
codec_event_decode_fold(const void *buf, size_t len, cl_event_t *ev)
{
    if (ev == NULL || (buf == NULL && len > 0)) {
        return CODEC_EINVAL;
    }
    if (buf != NULL && s_decode_fast(buf, len, ev, false) == 0) {
        return 0;
    }
    return s_decode_full(buf, len, ev);
}

int
codec_event_export(const void *buf, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    if (out == NULL || out_len == NULL) {
        return CODEC_EINVAL;
    }
    cl_event_t *ev = malloc(sizeof(*ev)); /* some kilobytes: not on a caller's stack */
    if (ev == NULL) {
        return CODEC_ENOMEM;
    }
    int rc = codec_event_decode(buf, len, ev);
    if (rc == 0 && ev->type == CL_EV_CARD_ISSUED && !ev->u.card_issued.has_code_hash) {
        /* (An entry with a code hash is an export's already: its code is masked, and its hash
         * is the real code's, which stays.) */
        cl_ev_card_issued_t *e = &ev->u.card_issued;
        cl_code_hash(e->code, e->code_hash);
        e->has_code_hash = true;
        size_t n = strlen(e->code);
        memset(e->code, '*', n > 4 ? n - 4 : n);
        memset(e->pin_hash, 0, sizeof(e->pin_hash));
    } else if (rc == 0 && ev->type == CL_EV_GIFT_OFFERED) {
        memset(ev->u.gift_offered.claim_hash, 0, sizeof(ev->u.gift_offered.claim_hash));
    }
    if (rc == 0) {
        rc = codec_event_encode(ev, out, cap, out_len);
    }
    free(ev);
    return rc;
}

int
codec_event_decode_fast(const void *buf, size_t len, cl_event_t *out)
{
    return buf != NULL && out != NULL ? s_decode_fast(buf, len, out, true) : 1;
}

int
codec_event_decode_full(const void *buf, size_t len, cl_event_t *out)
{
    if (out == NULL || (buf == NULL && len > 0)) {
        return CODEC_EINVAL;
    }
    cl_event_t ev;
    int rc = s_decode_full(buf, len, &ev);
    if (rc != 0) {
        return rc;
    }
    memcpy(out, &ev, sizeof ev);
    return 0;
}

int
codec_event_decode(const void *buf, size_t len, cl_event_t *out)
{
    if (out == NULL || (buf == NULL && len > 0)) {
        return CODEC_EINVAL;
    }
    cl_event_t ev;
    int rc = s_decode(buf, len, &ev);
    if (rc != 0) {
        return rc;
    }
    memcpy(out, &ev, sizeof ev); /* with the padding, so equal bytes give memcmp-equal events */
    return 0;
}

int
codec_request_id_b32_text(const uint8_t *raw, size_t len, char out[CL_REQUEST_ID_MAX + 1])
{
    if (raw == NULL || out == NULL || len == 0) {
        return CODEC_EINVAL;
    }
    if (len > S_REQUEST_ID_B32_MAX) {
        return CODEC_ELIMIT;
    }
    bool fits = s_b32_text(raw, len, out, CL_REQUEST_ID_MAX + 1);
    assert(fits);
    (void)fits;
    return 0;
}

int
codec_event_decode_scratch(const void *buf, size_t len, cl_event_t *scratch)
{
    if (scratch == NULL || (buf == NULL && len > 0)) {
        return CODEC_EINVAL;
    }
    return s_decode(buf, len, scratch);
}

int
codec_event_peek_type(const void *buf, size_t len, cl_event_type_t *out_type)
{
    if (out_type == NULL || (buf == NULL && len > 0)) {
        return CODEC_EINVAL;
    }
    const uint8_t *p = buf;
    const uint8_t *end = p + len;
    uint32_t type = 0;
    while (p < end) {
        codec_field_t f;
        if (codec_field_next(&p, end, &f) != 0) {
            return CODEC_EMALFORMED;
        }
        /* Fields 1 and 2 are the envelope; every known field from 10 on is an event. */
        if (f.number >= CL_EV_MERCHANT_REGISTERED &&
            protobuf_c_message_descriptor_get_field(&cardledger__v1__journal_entry__descriptor,
                                                    f.number) != NULL) {
            if (f.wire_type != CODEC_WT_LEN) {
                return CODEC_EMALFORMED;
            }
            type = f.number;
        }
    }
    if (type == 0) {
        return CODEC_EUNKNOWN;
    }
    *out_type = (cl_event_type_t)type;
    return 0;
}
