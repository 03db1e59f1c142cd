/*
 * Tests of proto/codec: requests, events, replies, names and masking.
 *
 * Round trips fill every field with distinctive non-zero values (strings at their full named
 * length, lists at their full named count), so a field the codec forgets or truncates shows up
 * as a memcmp difference. Bad input is built byte by byte with the small wire writer below,
 * which also checks the codec against the protobuf wire format independently of protobuf-c.
 * The CHECK macro is this file's own: it never relies on assert(), so the suite means the same
 * with -Db_ndebug=true.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cardledger-config.h"
#include "codec.h"
#include "codec-private.h"

/* ---- A tiny test harness ------------------------------------------------------------------ */

static int s_passed;
static int s_failed;
static bool s_ok;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            s_ok = false;                                                                \
        }                                                                                \
    } while (0)

#define CHECK_RC(expr, want)                                                                  \
    do {                                                                                      \
        int rc_ = (expr);                                                                     \
        if (rc_ != (want)) {                                                                  \
            fprintf(stderr, "    %s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__,   \
                    __LINE__, #expr, rc_, codec_strerror(rc_), (want), codec_strerror(want)); \
            s_ok = false;                                                                     \
        }                                                                                     \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        if (strcmp((got), (want)) != 0) {                                                          \
            fprintf(stderr, "    %s:%d: got \"%s\", expected \"%s\"\n", __FILE__, __LINE__, (got), \
                    (want));                                                                       \
            s_ok = false;                                                                          \
        }                                                                                          \
    } while (0)

#define RUN(test) s_run(#test, test)

static void
s_run(const char *name, void (*test)(void))
{
    s_ok = true;
    printf("test %s ...\n", name);
    fflush(stdout);
    test();
    printf("%s %s\n", s_ok ? "ok  " : "FAIL", name);
    if (s_ok) {
        s_passed++;
    } else {
        s_failed++;
    }
}

/* ---- Distinctive values ------------------------------------------------------------------- */

static unsigned s_seed = 1;

/* Fills a string array to its full length with a pattern that differs per call. */
static void
s_fill(char *dst, size_t cap)
{
    static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    unsigned seed = s_seed++;
    for (size_t i = 0; i < cap - 1; i++) {
        dst[i] = alphabet[(seed * 7u + i * 13u) % (sizeof alphabet - 1)];
    }
    dst[cap - 1] = '\0';
}
#define FILL(x) s_fill((x), sizeof(x))

/* A distinctive 64-bit number per call, with high bits set so varints are long. */
static uint64_t
s_u64(void)
{
    return 0x0123456789abcdefULL ^ ((uint64_t)s_seed++ * 0x9e3779b97f4a7c15ULL);
}

static uint32_t
s_u32(void)
{
    return (uint32_t)(s_u64() >> 40) | 1u;
}

static int64_t
s_i64(void)
{
    return -(int64_t)(s_u64() >> 2); /* negative: the longest varints */
}

static void
s_make_spec(cl_program_spec_t *s, bool window)
{
    FILL(s->merchant_id);
    FILL(s->program_id);
    strcpy(s->name, "Spring \xe6\x98\xa5\xe5\xad\xa3 200 gift card"); /* UTF-8 survives */
    s->kind = CL_KIND_VOUCHER_PERCENT;
    strcpy(s->currency, "CNY");
    s->denoms_count = CL_DENOMS_MAX;
    for (uint32_t i = 0; i < CL_DENOMS_MAX; i++) {
        s->denoms_minor[i] = (int64_t)(i + 1) * 10000;
    }
    s->custom_min_minor = s_i64();
    s->custom_max_minor = (int64_t)s_u32();
    s->has_window = window;
    if (window) {
        s->valid_from_us = s_i64();
        s->valid_until_us = (int64_t)s_u64() >> 1;
    } else {
        s->valid_days = s_u32();
    }
    s->accept_scope = CL_ACCEPT_STORE_LIST;
    s->accept_stores_count = CL_ACCEPT_STORES_MAX;
    for (uint32_t i = 0; i < CL_ACCEPT_STORES_MAX; i++) {
        FILL(s->accept_stores[i]);
    }
    s->accept_regions_count = CL_ACCEPT_REGIONS_MAX;
    for (uint32_t i = 0; i < CL_ACCEPT_REGIONS_MAX; i++) {
        FILL(s->accept_regions[i]);
    }
    s->stock_max = s_u64();
    s->per_holder_max = s_u32();
    s->transferable = true;
    s->transfers_max = s_u32();
    s->pin_required = true;
    s->reloadable = true;
    s->balance_max_minor = s_i64();
    FILL(s->theme);
    s->uses_per_card = s_u32();
    s->voucher.threshold_minor = s_i64();
    s->voucher.amount_off_minor = s_i64();
    s->voucher.percent_off_bp = s_u32();
    s->voucher.cap_minor = s_i64();
    s->voucher.skus_count = CL_SKUS_MAX;
    for (uint32_t i = 0; i < CL_SKUS_MAX; i++) {
        FILL(s->voucher.skus[i]);
    }
    s->voucher.uses_per_card = s_u32();
    s->remind_days_before_expiry = s_u32();
    s->gift_offer_ttl_hours = s_u32();
}

/* ---- Events ------------------------------------------------------------------------------- */

static const cl_event_type_t s_event_types[] = {
    CL_EV_MERCHANT_REGISTERED, CL_EV_STORE_REGISTERED, CL_EV_PROGRAM_DEFINED,
    CL_EV_PROGRAM_UPDATED,     CL_EV_PROGRAM_CLOSED,   CL_EV_CARD_ISSUED,
    CL_EV_BATCH_ISSUED,        CL_EV_GIFT_OFFERED,     CL_EV_GIFT_CLAIMED,
    CL_EV_GIFT_RECALLED,       CL_EV_GIFT_RETURNED,    CL_EV_CARD_REDEEMED,
    CL_EV_REDEMPTION_REVERSED, CL_EV_CARD_RELOADED,    CL_EV_BALANCE_TRANSFERRED,
    CL_EV_CARD_ADJUSTED,       CL_EV_CARD_FROZEN,      CL_EV_CARD_UNFROZEN,
    CL_EV_CARD_EXPIRED,        CL_EV_EXPIRY_REMINDED,  CL_EV_PIN_REJECTED,
    CL_EV_CARD_LOCKED,         CL_EV_CARD_UNLOCKED,    CL_EV_CLOCK_ADVANCED,
};
#define S_EVENT_TYPES (sizeof s_event_types / sizeof s_event_types[0])

/* Fills every field an event of this type carries; seq and at_us stay 0. */
static void
s_make_event(cl_event_type_t type, cl_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    FILL(ev->request_id);
    ev->actor.role = CL_ROLE_STORE_TERMINAL;
    FILL(ev->actor.merchant_id);
    FILL(ev->actor.store_id);
    FILL(ev->actor.name);
    switch (type) {
    case CL_EV_MERCHANT_REGISTERED:
        FILL(ev->u.merchant_registered.merchant_id);
        FILL(ev->u.merchant_registered.name);
        break;
    case CL_EV_STORE_REGISTERED:
        FILL(ev->u.store_registered.merchant_id);
        FILL(ev->u.store_registered.store_id);
        FILL(ev->u.store_registered.name);
        FILL(ev->u.store_registered.region);
        break;
    case CL_EV_PROGRAM_DEFINED:
        s_make_spec(&ev->u.program, true);
        break;
    case CL_EV_PROGRAM_UPDATED:
        s_make_spec(&ev->u.program, false);
        break;
    case CL_EV_PROGRAM_CLOSED:
        FILL(ev->u.program_closed.merchant_id);
        FILL(ev->u.program_closed.program_id);
        FILL(ev->u.program_closed.reason);
        break;
    case CL_EV_CARD_ISSUED: {
        cl_ev_card_issued_t *e = &ev->u.card_issued;
        e->card_id = s_u64();
        FILL(e->merchant_id);
        FILL(e->program_id);
        FILL(e->code);
        e->has_pin = true;
        for (int i = 0; i < CL_HASH_LEN; i++) {
            e->pin_hash[i] = (uint8_t)(0xa0 + i);
        }
        FILL(e->holder);
        e->channel = CL_CHANNEL_PLATFORM;
        FILL(e->store_id);
        FILL(e->region);
        e->face_value_minor = s_i64();
        e->price_paid_minor = s_i64();
        e->uses = s_u32();
        e->valid_from_us = s_i64();
        e->expires_at_us = s_i64();
        e->imported = true;
        FILL(e->row_key);
        e->batch_id = s_u64();
        e->has_code_hash = true; /* as in an export */
        for (int i = 0; i < CL_HASH_LEN; i++) {
            e->code_hash[i] = (uint8_t)(0xc0 + i);
        }
        break;
    }
    case CL_EV_BATCH_ISSUED:
        ev->u.batch_issued.batch_id = s_u64();
        FILL(ev->u.batch_issued.merchant_id);
        FILL(ev->u.batch_issued.program_id);
        FILL(ev->u.batch_issued.batch_ref);
        ev->u.batch_issued.cards_issued = s_u32();
        ev->u.batch_issued.rows_already_issued = s_u32();
        break;
    case CL_EV_GIFT_OFFERED:
        ev->u.gift_offered.card_id = s_u64();
        ev->u.gift_offered.offer_id = s_u64();
        FILL(ev->u.gift_offered.from_holder);
        FILL(ev->u.gift_offered.to_holder);
        for (int i = 0; i < CL_HASH_LEN; i++) {
            ev->u.gift_offered.claim_hash[i] = (uint8_t)(0x10 + i);
        }
        ev->u.gift_offered.expires_at_us = s_i64();
        break;
    case CL_EV_GIFT_CLAIMED:
        ev->u.gift_closed.card_id = s_u64();
        ev->u.gift_closed.offer_id = s_u64();
        FILL(ev->u.gift_closed.new_holder);
        FILL(ev->u.gift_closed.previous_holder);
        break;
    case CL_EV_GIFT_RECALLED:
    case CL_EV_GIFT_RETURNED:
        ev->u.gift_closed.card_id = s_u64();
        ev->u.gift_closed.offer_id = s_u64();
        break;
    case CL_EV_CARD_REDEEMED:
        ev->u.card_redeemed.card_id = s_u64();
        FILL(ev->u.card_redeemed.store_id);
        FILL(ev->u.card_redeemed.region);
        FILL(ev->u.card_redeemed.order_ref);
        ev->u.card_redeemed.amount_minor = s_i64();
        ev->u.card_redeemed.uses = s_u32();
        ev->u.card_redeemed.balance_after_minor = s_i64();
        ev->u.card_redeemed.uses_after = s_u32();
        ev->u.card_redeemed.order_amount_minor = s_i64();
        FILL(ev->u.card_redeemed.sku);
        break;
    case CL_EV_REDEMPTION_REVERSED:
        ev->u.redemption_reversed.card_id = s_u64();
        ev->u.redemption_reversed.redemption_seq = s_u64();
        FILL(ev->u.redemption_reversed.store_id);
        ev->u.redemption_reversed.amount_minor = s_i64();
        ev->u.redemption_reversed.uses = s_u32();
        ev->u.redemption_reversed.balance_after_minor = s_i64();
        ev->u.redemption_reversed.uses_after = s_u32();
        FILL(ev->u.redemption_reversed.reason);
        break;
    case CL_EV_CARD_RELOADED:
        ev->u.card_reloaded.card_id = s_u64();
        ev->u.card_reloaded.amount_minor = s_i64();
        ev->u.card_reloaded.price_paid_minor = s_i64();
        ev->u.card_reloaded.balance_after_minor = s_i64();
        ev->u.card_reloaded.channel = CL_CHANNEL_STORE;
        FILL(ev->u.card_reloaded.store_id);
        break;
    case CL_EV_BALANCE_TRANSFERRED:
        ev->u.balance_transferred.from_card_id = s_u64();
        ev->u.balance_transferred.to_card_id = s_u64();
        ev->u.balance_transferred.amount_minor = s_i64();
        ev->u.balance_transferred.from_balance_after_minor = s_i64();
        ev->u.balance_transferred.to_balance_after_minor = s_i64();
        break;
    case CL_EV_CARD_ADJUSTED:
        ev->u.card_adjusted.card_id = s_u64();
        ev->u.card_adjusted.delta_minor = s_i64();
        ev->u.card_adjusted.delta_uses = -(int32_t)(s_u32() >> 1);
        ev->u.card_adjusted.balance_after_minor = s_i64();
        ev->u.card_adjusted.uses_after = s_u32();
        FILL(ev->u.card_adjusted.reason);
        break;
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
        ev->u.card_flag.card_id = s_u64();
        FILL(ev->u.card_flag.reason);
        break;
    case CL_EV_CARD_EXPIRED:
        ev->u.card_expired.card_id = s_u64();
        ev->u.card_expired.breakage_minor = s_i64();
        ev->u.card_expired.uses_left = s_u32();
        break;
    case CL_EV_EXPIRY_REMINDED:
        ev->u.expiry_reminded.card_id = s_u64();
        ev->u.expiry_reminded.expires_at_us = s_i64();
        ev->u.expiry_reminded.balance_minor = s_i64();
        ev->u.expiry_reminded.uses_left = s_u32();
        break;
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
        ev->u.pin.card_id = s_u64();
        ev->u.pin.failures_in_row = s_u32();
        break;
    case CL_EV_CLOCK_ADVANCED:
        ev->u.clock_advanced.now_us = s_i64();
        break;
    case CL_EV_NONE:
        break;
    }
}

static void
every_event_type_round_trips_unchanged(void)
{
    static cl_event_t ev, back;
    static uint8_t buf[CODEC_EVENT_MAX_BYTES];
    for (size_t i = 0; i < S_EVENT_TYPES; i++) {
        s_make_event(s_event_types[i], &ev);
        size_t len = 0;
        CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
        memset(&back, 0xee, sizeof back); /* decode must zero what it does not fill */
        CHECK_RC(codec_event_decode(buf, len, &back), 0);
        if (memcmp(&ev, &back, sizeof ev) != 0) {
            fprintf(stderr, "    %s does not round-trip\n", cl_event_name(ev.type));
            s_ok = false;
        }
        cl_event_type_t peeked = CL_EV_NONE;
        CHECK_RC(codec_event_peek_type(buf, len, &peeked), 0);
        CHECK(peeked == ev.type);
    }
}

/* Decodes buf both ways (codec_event_decode() and codec_event_decode_fold(), which try the wire
 * fast path first, and the full walker + protobuf-c path) and checks they agree: the same
 * return, and on success the same bytes. */
static bool
s_decode_agrees(const uint8_t *buf, size_t len)
{
    static cl_event_t a, b;
    memset(&a, 0x5a, sizeof a);
    memset(&b, 0xa5, sizeof b);
    int ra = codec_event_decode(buf, len, &a);
    int rb = codec_event_decode_full(buf, len, &b);
    if (ra != rb)
        return false;
    if (ra == 0 && memcmp(&a, &b, sizeof a) != 0)
        return false;
    /* The fold's decode writes the envelope and the event's member, and nothing else: over
     * zeros it gives the whole event, over garbage at least the same envelope. */
    static cl_event_t c;
    memset(&c, 0, sizeof c);
    if (codec_event_decode_fold(buf, len, &c) != rb || (rb == 0 && memcmp(&c, &b, sizeof c) != 0))
        return false;
    memset(&c, 0x33, sizeof c);
    if (codec_event_decode_fold(buf, len, &c) != rb ||
        (rb == 0 && memcmp(&c, &b, offsetof(cl_event_t, u)) != 0))
        return false;
    return true;
}

/* A CardIssued as an export writes it (code_hash set) and as the daemon writes it (none) are read
 * by the fast path, and it gives what the full path gives: a replay of an export folds its
 * issues as fast as a journal's. */
static void
card_issued_with_and_without_code_hash_decodes_by_the_fast_path(void)
{
    static cl_event_t ev, fast, full;
    static uint8_t buf[CODEC_EVENT_MAX_BYTES];
    for (int with_hash = 0; with_hash < 2; with_hash++) {
        s_make_event(CL_EV_CARD_ISSUED, &ev);
        ev.u.card_issued.has_code_hash = with_hash != 0;
        if (!with_hash)
            memset(ev.u.card_issued.code_hash, 0, sizeof ev.u.card_issued.code_hash);
        size_t len = 0;
        CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
        CHECK_RC(codec_event_decode_fast(buf, len, &fast), 0);
        CHECK_RC(codec_event_decode_full(buf, len, &full), 0);
        CHECK(memcmp(&fast, &full, sizeof fast) == 0);
        CHECK(fast.u.card_issued.has_code_hash == (with_hash != 0));
        CHECK(memcmp(fast.u.card_issued.code_hash, ev.u.card_issued.code_hash, CL_HASH_LEN) == 0);
    }
}

/* What an export keeps of each event (codec_event_export()): a CardIssued's code masked to its
 * length and last 4 bytes with the hash of the real code beside it and its PIN hash zeroed, a
 * GiftOffered without its claim hash, every other event as it was. */
static void
export_masks_codes_and_drops_secrets_and_keeps_everything_else(void)
{
    static cl_event_t ev, in, out;
    static uint8_t buf[CODEC_EVENT_MAX_BYTES], exp[CODEC_EVENT_MAX_BYTES];
    for (size_t i = 0; i < S_EVENT_TYPES; i++) {
        s_make_event(s_event_types[i], &ev);
        if (ev.type == CL_EV_CARD_ISSUED) {
            snprintf(ev.u.card_issued.code, sizeof ev.u.card_issued.code, "7KQ4-M9XW 2RPA8D3F");
            ev.u.card_issued.has_code_hash = false;
            memset(ev.u.card_issued.code_hash, 0, sizeof ev.u.card_issued.code_hash);
        }
        size_t len = 0, exp_len = 0;
        CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
        CHECK_RC(codec_event_export(buf, len, exp, sizeof exp, &exp_len), 0);
        CHECK_RC(codec_event_decode(buf, len, &in), 0);
        CHECK_RC(codec_event_decode(exp, exp_len, &out), 0);
        /* An export of an export is the same export (its code hash is the real code's). */
        static uint8_t again[CODEC_EVENT_MAX_BYTES];
        size_t again_len = 0;
        CHECK_RC(codec_event_export(exp, exp_len, again, sizeof again, &again_len), 0);
        CHECK(again_len == exp_len && memcmp(again, exp, exp_len) == 0);
        if (in.type == CL_EV_CARD_ISSUED) {
            cl_ev_card_issued_t *a = &in.u.card_issued, *b = &out.u.card_issued;
            CHECK_STR(b->code, "**************8D3F");
            CHECK(b->has_code_hash);
            uint8_t want[CL_HASH_LEN];
            cl_code_hash("7KQ4M9XW2RPA8D3F", want);
            CHECK(memcmp(b->code_hash, want, CL_HASH_LEN) == 0);
            CHECK(a->has_pin && b->has_pin);
            static const uint8_t zero[CL_HASH_LEN];
            CHECK(memcmp(b->pin_hash, zero, CL_HASH_LEN) == 0);
            CHECK(memmem(exp, exp_len, "2RPA", 4) == NULL);
            CHECK(memmem(exp, exp_len, a->pin_hash, CL_HASH_LEN) == NULL);
            /* The rest is the journal's. */
            memcpy(b->code, a->code, sizeof b->code);
            memcpy(b->pin_hash, a->pin_hash, sizeof b->pin_hash);
            b->has_code_hash = false;
            memset(b->code_hash, 0, sizeof b->code_hash);
        } else if (in.type == CL_EV_GIFT_OFFERED) {
            CHECK(memmem(exp, exp_len, in.u.gift_offered.claim_hash, CL_HASH_LEN) == NULL);
            static const uint8_t zero[CL_HASH_LEN];
            CHECK(memcmp(out.u.gift_offered.claim_hash, zero, CL_HASH_LEN) == 0);
            memcpy(out.u.gift_offered.claim_hash, in.u.gift_offered.claim_hash, CL_HASH_LEN);
        }
        if (memcmp(&in, &out, sizeof in) != 0) {
            printf("    %s changed in the export\n", cl_event_name(in.type));
            CHECK(memcmp(&in, &out, sizeof in) == 0);
        }
    }
    size_t exp_len = 0;
    CHECK(codec_event_export("\x0a\x05\xff", 3, exp, sizeof exp, &exp_len) != 0);
}

/* The wire fast path of codec_event_decode() gives exactly what the full path gives, for every
 * event type as the encoder writes it (with and without actor and request id, with values of
 * every width and sign, strings at their limit, request ids in both forms), and for thousands
 * of corruptions of those bytes: flipped bits, changed bytes, cut-off entries. */
static void
event_fast_decode_gives_the_bytes_of_the_full_decode(void)
{
    static cl_event_t ev;
    static uint8_t buf[CODEC_EVENT_MAX_BYTES], bad[CODEC_EVENT_MAX_BYTES];
    size_t checked = 0;
    for (int variant = 0; variant < 4; variant++) {
        for (size_t i = 0; i < S_EVENT_TYPES; i++) {
            s_make_event(s_event_types[i], &ev);
            if (variant == 1) {
                memset(&ev.actor, 0, sizeof ev.actor);
                memset(ev.request_id, 0, sizeof ev.request_id);
                if (ev.type == CL_EV_GIFT_OFFERED) /* an empty claim hash */
                    memset(ev.u.gift_offered.claim_hash, 0, sizeof ev.u.gift_offered.claim_hash);
            } else if (variant == 2) {
                /* A request id in base32 (written as request_id_b32), small and negative
                 * numbers, an empty string. */
                snprintf(ev.request_id, sizeof ev.request_id, "%s", "01jd2x7k9q3m4n5p6r7s8t9v0w");
                ev.u.card_adjusted.delta_uses = -3;
                ev.u.card_redeemed.amount_minor = -1;
                ev.u.card_issued.channel = (cl_channel_t)2;
                ev.u.card_issued.imported = true;
                ev.u.card_issued.has_pin = false;
                memset(ev.u.card_issued.pin_hash, 0, sizeof ev.u.card_issued.pin_hash);
                ev.u.card_issued.has_code_hash = false; /* as in a journal */
                memset(ev.u.card_issued.code_hash, 0, sizeof ev.u.card_issued.code_hash);
            } else if (variant == 3) {
                snprintf(ev.request_id, sizeof ev.request_id, "%s", "2345abcd");
                ev.actor.role = CL_ROLE_NONE;
                memset(ev.u.card_redeemed.store_id, 0, sizeof ev.u.card_redeemed.store_id);
                snprintf(ev.u.card_redeemed.order_ref, sizeof ev.u.card_redeemed.order_ref, "%s",
                         "caf\xc3\xa9"); /* UTF-8: the full path's business */
            }
            size_t len = 0;
            if (codec_event_encode(&ev, buf, sizeof buf, &len) != 0)
                continue; /* a variant this type cannot carry */
            CHECK(s_decode_agrees(buf, len));
            checked++;
            for (size_t cut = 0; cut < len; cut++) {
                if (!s_decode_agrees(buf, cut)) {
                    fprintf(stderr, "    %s cut at %zu: the paths disagree\n",
                            cl_event_name(ev.type), cut);
                    s_ok = false;
                }
            }
            static const uint8_t masks[] = { 0x01, 0x02, 0x08, 0x40, 0x80, 0xff };
            for (size_t at = 0; at < len; at++) {
                for (size_t m = 0; m < sizeof masks + 2; m++) {
                    memcpy(bad, buf, len);
                    if (m < sizeof masks)
                        bad[at] ^= masks[m];
                    else
                        bad[at] = m == sizeof masks ? 0x00 : 0x80;
                    if (!s_decode_agrees(bad, len)) {
                        fprintf(stderr, "    %s byte %zu changed (%zu): the paths disagree\n",
                                cl_event_name(ev.type), at, m);
                        s_ok = false;
                    }
                    checked++;
                }
            }
        }
    }
    CHECK(checked > 10000);
}

/* The journal's bytes must be protobuf-c's own encoding of the entry, whoever writes them: the
 * encoder packs the entry's top level by hand, so compare it with protobuf-c's pack of the same
 * entry (unpacked from those bytes) for every event type, with and without actor and id. */
static void
event_encoding_is_protobuf_cs_own_byte_for_byte(void)
{
    static cl_event_t ev;
    static uint8_t buf[CODEC_EVENT_MAX_BYTES], again[CODEC_EVENT_MAX_BYTES];
    for (int bare = 0; bare < 2; bare++) {
        for (size_t i = 0; i < S_EVENT_TYPES; i++) {
            s_make_event(s_event_types[i], &ev);
            if (bare) {
                memset(&ev.actor, 0, sizeof ev.actor);
                memset(ev.request_id, 0, sizeof ev.request_id);
            }
            size_t len = 0;
            CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
            Cardledger__V1__JournalEntry *m = cardledger__v1__journal_entry__unpack(NULL, len, buf);
            CHECK(m != NULL);
            if (m == NULL) {
                continue;
            }
            size_t size = protobuf_c_message_get_packed_size(&m->base);
            CHECK(size == len);
            if (size == len) {
                CHECK(protobuf_c_message_pack(&m->base, again) == len);
                if (memcmp(buf, again, len) != 0) {
                    fprintf(stderr, "    %s%s: bytes differ from protobuf-c's\n",
                            cl_event_name(ev.type), bare ? " (bare)" : "");
                    s_ok = false;
                }
            }
            /* Too small a buffer is refused, never overrun. */
            size_t short_len = 12345;
            CHECK_RC(codec_event_encode(&ev, buf, len - 1, &short_len), CODEC_ENOSPC);
            CHECK(short_len == 12345);
            cardledger__v1__journal_entry__free_unpacked(m, NULL);
        }
    }
}

/* xorshift64*, for the random events below (a fixed seed: the same events every run). */
static uint64_t
s_next(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1DULL;
}

/* A random string in char[cap]: mostly empty or short, sometimes full length, sometimes with
 * bytes past ASCII, and one time in 64 with no NUL at all (which the encoder must refuse). */
static void
s_rand_str(uint64_t *x, char *dst, size_t cap)
{
    uint64_t r = s_next(x);
    size_t n = r % 4 == 0 ? 0 : r % 4 == 1 ? cap - 1 : (size_t)(r >> 8) % cap;
    bool high = (r >> 40) % 8 == 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)(s_next(x) >> 56);
        dst[i] = (char)(high ? (b | 0x80u) : (uint8_t)(0x20u + b % 0x5fu));
    }
    memset(dst + n, 0, cap - n);
    if ((r >> 48) % 64 == 0) {
        memset(dst, 'z', cap);
    }
}

/* A random number: zero a quarter of the time, else small, large or negative. */
static uint64_t
s_rand_num(uint64_t *x)
{
    uint64_t r = s_next(x);
    switch (r % 4) {
    case 0:
        return 0;
    case 1:
        return r >> 56;
    case 2:
        return s_next(x);
    default:
        return (uint64_t)(-(int64_t)(r >> 40)); /* negative */
    }
}

/* A request id: empty, libcardledger's 26 base32 characters, other base32 lengths, text that is
 * not base32, or no NUL at all. */
static void
s_rand_request_id(uint64_t *x, char id[CL_REQUEST_ID_MAX + 1])
{
    uint64_t r = s_next(x);
    uint8_t raw[40];
    for (size_t i = 0; i < sizeof raw; i++) {
        raw[i] = (uint8_t)(s_next(x) >> 56);
    }
    memset(id, 0, CL_REQUEST_ID_MAX + 1);
    switch (r % 5) {
    case 0:
        break;
    case 1:
        CHECK_RC(codec_request_id_b32_text(raw, 16, id), 0);
        break;
    case 2:
        CHECK_RC(codec_request_id_b32_text(raw, 1 + (size_t)(r >> 8) % 40, id), 0);
        break;
    case 3:
        s_rand_str(x, id, CL_REQUEST_ID_MAX + 1);
        break;
    default:
        memset(id, 'a', CL_REQUEST_ID_MAX + 1);
        break;
    }
}

/* codec_event_encode() writes CardRedeemed and CardIssued straight from the event; its bytes,
 * return code and length must be codec_event_encode_generic()'s (protobuf-c's own pack of the
 * message filled field by field) for any event of those types, and for a buffer too small. */
static void
redeemed_and_issued_encode_straight_as_protobuf_c_does(void)
{
    static cl_event_t ev;
    static uint8_t fast[CODEC_EVENT_MAX_BYTES], full[CODEC_EVENT_MAX_BYTES];
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    size_t compared = 0, refused = 0, short_bufs = 0;
    for (int i = 0; i < 20000; i++) {
        memset(&ev, 0, sizeof ev);
        ev.type = i % 2 == 0 ? CL_EV_CARD_REDEEMED : CL_EV_CARD_ISSUED;
        s_rand_request_id(&x, ev.request_id);
        uint64_t r = s_next(&x);
        if (r % 3 != 0) {
            ev.actor.role = (cl_role_t)(int32_t)s_rand_num(&x); /* negative ones too */
            s_rand_str(&x, ev.actor.merchant_id, sizeof ev.actor.merchant_id);
            s_rand_str(&x, ev.actor.store_id, sizeof ev.actor.store_id);
            s_rand_str(&x, ev.actor.name, sizeof ev.actor.name);
        }
        if (ev.type == CL_EV_CARD_REDEEMED) {
            cl_ev_card_redeemed_t *m = &ev.u.card_redeemed;
            m->card_id = s_rand_num(&x);
            s_rand_str(&x, m->store_id, sizeof m->store_id);
            s_rand_str(&x, m->region, sizeof m->region);
            s_rand_str(&x, m->order_ref, sizeof m->order_ref);
            m->amount_minor = (int64_t)s_rand_num(&x);
            m->uses = (uint32_t)s_rand_num(&x);
            m->balance_after_minor = (int64_t)s_rand_num(&x);
            m->uses_after = (uint32_t)s_rand_num(&x);
            m->order_amount_minor = (int64_t)s_rand_num(&x);
            s_rand_str(&x, m->sku, sizeof m->sku);
        } else {
            cl_ev_card_issued_t *m = &ev.u.card_issued;
            m->card_id = s_rand_num(&x);
            s_rand_str(&x, m->merchant_id, sizeof m->merchant_id);
            s_rand_str(&x, m->program_id, sizeof m->program_id);
            s_rand_str(&x, m->code, sizeof m->code);
            /* has_pin alone says whether the hash goes out, whatever its bytes. */
            m->has_pin = s_next(&x) % 2 == 0;
            bool zero_hash = s_next(&x) % 4 == 0;
            for (size_t k = 0; k < sizeof m->pin_hash; k++) {
                m->pin_hash[k] = zero_hash ? 0 : (uint8_t)(s_next(&x) >> 56);
            }
            s_rand_str(&x, m->holder, sizeof m->holder);
            m->channel = (cl_channel_t)(int32_t)s_rand_num(&x);
            s_rand_str(&x, m->store_id, sizeof m->store_id);
            s_rand_str(&x, m->region, sizeof m->region);
            m->face_value_minor = (int64_t)s_rand_num(&x);
            m->price_paid_minor = (int64_t)s_rand_num(&x);
            m->uses = (uint32_t)s_rand_num(&x);
            m->valid_from_us = (int64_t)s_rand_num(&x);
            m->expires_at_us = (int64_t)s_rand_num(&x);
            m->imported = s_next(&x) % 2 == 0;
            s_rand_str(&x, m->row_key, sizeof m->row_key);
            m->batch_id = s_rand_num(&x);
            /* has_code_hash alone says whether the hash goes out, as has_pin. */
            m->has_code_hash = s_next(&x) % 2 == 0;
            for (size_t k = 0; k < sizeof m->code_hash; k++) {
                m->code_hash[k] = (uint8_t)(s_next(&x) >> 56);
            }
        }
        size_t fast_len = 777, full_len = 777;
        memset(fast, 0xa5, sizeof fast);
        int fast_rc = codec_event_encode(&ev, fast, sizeof fast, &fast_len);
        /* Nothing is written past the entry. */
        for (size_t k = fast_rc == 0 ? fast_len : 0; k < sizeof fast; k++) {
            if (fast[k] != 0xa5) {
                fprintf(stderr, "    event %d: byte %zu written past the entry\n", i, k);
                s_ok = false;
                break;
            }
        }
        int full_rc = codec_event_encode_generic(&ev, full, sizeof full, &full_len);
        if (fast_rc != full_rc || fast_len != full_len ||
            (fast_rc == 0 && memcmp(fast, full, fast_len) != 0)) {
            fprintf(stderr, "    event %d (%s): rc %d/%d, length %zu/%zu\n", i,
                    cl_event_name(ev.type), fast_rc, full_rc, fast_len, full_len);
            s_ok = false;
            continue;
        }
        if (fast_rc != 0) {
            /* A string without its NUL is refused first, whatever the room. */
            CHECK_RC(fast_rc, CODEC_ELIMIT);
            CHECK(fast_len == 777 && full_len == 777);
            CHECK_RC(codec_event_encode(&ev, NULL, 0, &fast_len), CODEC_ELIMIT);
            CHECK_RC(codec_event_encode_generic(&ev, NULL, 0, &full_len), CODEC_ELIMIT);
            refused++;
            continue;
        }
        compared++;
        /* Both paths share the actor's writer: protobuf-c's own pack of what they wrote checks
         * it (and everything else) once more. */
        Cardledger__V1__JournalEntry *pe =
            cardledger__v1__journal_entry__unpack(NULL, fast_len, fast);
        CHECK(pe != NULL);
        if (pe != NULL) {
            CHECK(protobuf_c_message_get_packed_size(&pe->base) == fast_len &&
                  protobuf_c_message_pack(&pe->base, full) == fast_len &&
                  memcmp(fast, full, fast_len) == 0);
            cardledger__v1__journal_entry__free_unpacked(pe, NULL);
        }
        /* Too little room (one byte short, or less): both refuse, write nothing at or past the
         * room and leave the length alone. */
        size_t cap = i % 4 < 2 ? fast_len - 1 : (size_t)(s_next(&x) % fast_len);
        memset(fast, 0xa5, sizeof fast);
        memset(full, 0xa5, sizeof full);
        fast_len = full_len = 777;
        CHECK_RC(codec_event_encode(&ev, fast, cap, &fast_len), CODEC_ENOSPC);
        CHECK_RC(codec_event_encode_generic(&ev, full, cap, &full_len), CODEC_ENOSPC);
        CHECK(fast_len == 777 && full_len == 777);
        for (size_t k = cap; k < sizeof fast; k++) {
            if (fast[k] != 0xa5 || full[k] != 0xa5) {
                fprintf(stderr, "    event %d: a refused encode wrote byte %zu\n", i, k);
                s_ok = false;
                break;
            }
        }
        short_bufs++;
    }
    CHECK(compared > 10000);
    CHECK(refused > 100);
    CHECK(short_bufs == compared);
}

static void
event_without_actor_round_trips_and_leaves_the_actor_out(void)
{
    cl_event_t ev, back;
    uint8_t with[256], without[256];
    size_t with_len = 0, without_len = 0;
    s_make_event(CL_EV_CARD_EXPIRED, &ev);
    CHECK_RC(codec_event_encode(&ev, with, sizeof with, &with_len), 0);
    memset(&ev.actor, 0, sizeof ev.actor);
    memset(ev.request_id, 0, sizeof ev.request_id); /* the ledger's own events have neither */
    CHECK_RC(codec_event_encode(&ev, without, sizeof without, &without_len), 0);
    CHECK(without_len < with_len - 100);
    CHECK_RC(codec_event_decode(without, without_len, &back), 0);
    CHECK(memcmp(&ev, &back, sizeof ev) == 0);
    CHECK(back.actor.role == CL_ROLE_NONE);
}

static void
card_redeemed_with_short_ids_encodes_well_under_70_bytes(void)
{
    cl_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CL_EV_CARD_REDEEMED;
    strcpy(ev.request_id, "r-7f3a9c2e");
    ev.actor.role = CL_ROLE_STORE_TERMINAL;
    strcpy(ev.actor.merchant_id, "m1");
    strcpy(ev.actor.store_id, "s1");
    ev.u.card_redeemed.card_id = 123456789;
    strcpy(ev.u.card_redeemed.store_id, "s1");
    strcpy(ev.u.card_redeemed.order_ref, "o-1001");
    ev.u.card_redeemed.amount_minor = 1500;
    ev.u.card_redeemed.balance_after_minor = 18500;
    uint8_t buf[CODEC_EVENT_MAX_BYTES];
    size_t len = 0;
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
    printf("    CardRedeemed with a store terminal actor: %zu bytes\n", len);
    CHECK(len <= 52);

    /* What cardledger-bench's redeems are: a libcardledger request id, the local operator,
     * store "s1", a 16-character order reference, a card id of 3 varint bytes. Before the
     * request id went out as bytes and the region stopped being written: 83 bytes. */
    cl_event_t bench = ev;
    strcpy(bench.request_id, "222k62s62o52i42d3c7ks5ci3w");
    memset(&bench.actor, 0, sizeof bench.actor);
    bench.actor.role = CL_ROLE_OPERATOR;
    strcpy(bench.actor.name, "local");
    bench.u.card_redeemed.card_id = 60389;
    strcpy(bench.u.card_redeemed.order_ref, "o020000000000060");
    bench.u.card_redeemed.amount_minor = 142;
    bench.u.card_redeemed.balance_after_minor = 99858;
    CHECK_RC(codec_event_encode(&bench, buf, sizeof buf, &len), 0);
    printf("    CardRedeemed as cardledger-bench makes them: %zu bytes\n", len);
    CHECK(len == 65);

    memset(&ev.actor, 0, sizeof ev.actor);
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
    printf("    CardRedeemed without an actor: %zu bytes\n", len);

    s_make_event(CL_EV_CARD_ISSUED, &ev);
    strcpy(ev.request_id, "r-7f3a9c2e");
    ev.actor.role = CL_ROLE_ISSUER;
    strcpy(ev.actor.merchant_id, "m1");
    strcpy(ev.actor.store_id, "");
    strcpy(ev.actor.name, "shop");
    cl_ev_card_issued_t *ci = &ev.u.card_issued;
    ci->card_id = 123456789;
    strcpy(ci->merchant_id, "m1");
    strcpy(ci->program_id, "p1");
    strcpy(ci->code, "7KQ4M9XW2RPA8D3F");
    strcpy(ci->holder, "u-88321");
    ci->channel = CL_CHANNEL_ONLINE;
    ci->store_id[0] = '\0';
    strcpy(ci->region, "310000");
    ci->face_value_minor = 20000;
    ci->price_paid_minor = 18000;
    ci->uses = 0;
    ci->valid_from_us = 1767225600000000;
    ci->expires_at_us = 1798761600000000;
    ci->imported = false;
    ci->row_key[0] = '\0';
    ci->batch_id = 0;
    ci->has_code_hash = false; /* as the daemon writes it */
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
    printf("    CardIssued online with a PIN: %zu bytes\n", len);
    CHECK(len < 128);
}

static void
largest_events_fit_their_named_bounds(void)
{
    static cl_event_t ev;
    static uint8_t buf[CODEC_EVENT_MAX_BYTES * 2];
    static char json[CODEC_EVENT_JSON_MAX * 2];
    s_make_event(CL_EV_PROGRAM_DEFINED, &ev);
    ev.actor.role = CL_ROLE_MERCHANT_ADMIN;
    size_t len = 0;
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
    printf("    the largest ProgramDefined: %zu bytes (bound %d)\n", len, CODEC_EVENT_MAX_BYTES);
    CHECK(len <= CODEC_EVENT_MAX_BYTES);
    static cl_event_t back;
    CHECK_RC(codec_event_decode(buf, len, &back), 0);
    CHECK(memcmp(&ev, &back, sizeof ev) == 0);

    /* Every string byte a control character: each one becomes a six-byte escape. */
    char *strings[] = { ev.request_id,     ev.actor.merchant_id,     ev.actor.store_id,
                        ev.actor.name,     ev.u.program.merchant_id, ev.u.program.program_id,
                        ev.u.program.name, ev.u.program.theme };
    size_t caps[] = {
        sizeof ev.request_id,     sizeof ev.actor.merchant_id,     sizeof ev.actor.store_id,
        sizeof ev.actor.name,     sizeof ev.u.program.merchant_id, sizeof ev.u.program.program_id,
        sizeof ev.u.program.name, sizeof ev.u.program.theme
    };
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        memset(strings[i], 0x01, caps[i] - 1);
    }
    for (int i = 0; i < CL_ACCEPT_STORES_MAX; i++) {
        memset(ev.u.program.accept_stores[i], 0x01, CL_ID_MAX);
    }
    for (int i = 0; i < CL_ACCEPT_REGIONS_MAX; i++) {
        memset(ev.u.program.accept_regions[i], 0x01, CL_REGION_MAX);
    }
    for (int i = 0; i < CL_SKUS_MAX; i++) {
        memset(ev.u.program.voucher.skus[i], 0x01, CL_SKU_MAX);
    }
    ev.seq = UINT64_MAX;
    ev.at_us = INT64_MIN;
    CHECK_RC(codec_event_json(&ev, json, sizeof json, &len), 0);
    printf("    its JSON with every byte escaped: %zu bytes (bound %d)\n", len,
           CODEC_EVENT_JSON_MAX);
    CHECK(len <= CODEC_EVENT_JSON_MAX);
    CHECK(strlen(json) == len);
}

/* ---- A small wire writer for hand-made messages ------------------------------------------ */

typedef struct s_wire {
    uint8_t b[16384];
    size_t n;
} s_wire_t;

static void
w_varint(s_wire_t *w, uint64_t v)
{
    while (v >= 0x80) {
        w->b[w->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    w->b[w->n++] = (uint8_t)v;
}

static void
w_uint(s_wire_t *w, uint32_t field, uint64_t v)
{
    w_varint(w, (uint64_t)field << 3);
    w_varint(w, v);
}

static void
w_bytes(s_wire_t *w, uint32_t field, const void *p, size_t len)
{
    w_varint(w, (uint64_t)field << 3 | 2);
    w_varint(w, len);
    memcpy(w->b + w->n, p, len);
    w->n += len;
}

static void
w_str(s_wire_t *w, uint32_t field, const char *s)
{
    w_bytes(w, field, s, strlen(s));
}

static void
w_msg(s_wire_t *w, uint32_t field, const s_wire_t *inner)
{
    w_bytes(w, field, inner->b, inner->n);
}

static void
w_repeat(s_wire_t *w, uint32_t field, char c, size_t len)
{
    char tmp[1024];
    memset(tmp, c, len);
    w_bytes(w, field, tmp, len);
}

/* Decodes a frame of one request; NULL (and a failed check) when the frame does not decode. */
static const codec_request_t *
s_decode_one(codec_batch_t *b, const s_wire_t *req)
{
    static uint8_t frame[1 << 16];
    const uint8_t *reqs[1] = { req->b };
    size_t lens[1] = { req->n };
    size_t len = 0;
    CHECK_RC(codec_request_batch_frame(reqs, lens, 1, frame, sizeof frame, &len), 0);
    int rc = codec_batch_decode(b, frame, len);
    CHECK_RC(rc, 0);
    CHECK(codec_batch_count(b) == (rc == 0 ? 1u : 0u));
    return rc == 0 ? codec_batch_request(b, 0) : NULL;
}

static void
event_decode_refuses_what_it_cannot_hold(void)
{
    cl_event_t ev;
    cl_event_t untouched;
    memset(&ev, 0x5a, sizeof ev);
    memcpy(&untouched, &ev, sizeof ev);
    s_wire_t w = { .n = 0 }, inner = { .n = 0 };

    w_str(&w, 1, "r1");
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_EUNKNOWN); /* no event at all */
    w_msg(&w, 99, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_EUNKNOWN); /* an event from the future */

    w.n = 0;
    w_str(&w, 1, "r1");
    w_uint(&inner, 1, 7);
    w_repeat(&inner, 4, 'x', CL_ORDER_REF_MAX + 1);
    w_msg(&w, CL_EV_CARD_REDEEMED, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_ELIMIT); /* refused, not truncated */

    w.n = 0;
    inner.n = 0;
    w_uint(&inner, 1, 7);
    w_bytes(&inner, 5, "short", 5);
    w_msg(&w, CL_EV_CARD_ISSUED, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_EINVALID); /* a pin_hash of 5 bytes */

    w.n = 0;
    inner.n = 0;
    w_bytes(&inner, 4, "o\0x", 3);
    w_msg(&w, CL_EV_CARD_REDEEMED, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_EINVALID); /* a NUL inside a string */

    const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    CHECK_RC(codec_event_decode(garbage, sizeof garbage, &ev), CODEC_EMALFORMED);
    CHECK_RC(codec_event_decode(NULL, 0, NULL), CODEC_EINVAL);
    CHECK(memcmp(&ev, &untouched, sizeof ev) == 0);

    /* Unknown fields inside a known event are tolerated (a newer writer). */
    w.n = 0;
    inner.n = 0;
    w_uint(&inner, 1, 7);
    w_uint(&inner, 77, 1);
    w_msg(&w, CL_EV_PIN_REJECTED, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), 0);
    CHECK(ev.type == CL_EV_PIN_REJECTED && ev.u.pin.card_id == 7);
}

/* Encodes a CardFrozen with request id `id`; returns the packed length, the entry in buf. */
static size_t
s_encode_with_id(const char *id, uint8_t *buf, size_t cap)
{
    cl_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CL_EV_CARD_FROZEN;
    snprintf(ev.request_id, sizeof ev.request_id, "%s", id);
    ev.u.card_flag.card_id = 42;
    size_t len = 0;
    CHECK_RC(codec_event_encode(&ev, buf, cap, &len), 0);
    cl_event_t back;
    CHECK_RC(codec_event_decode(buf, len, &back), 0);
    CHECK_STR(back.request_id, id);
    CHECK(memcmp(&ev, &back, sizeof ev) == 0);
    return len;
}

static void
base32_request_ids_are_stored_as_their_bytes_and_read_back_as_the_same_text(void)
{
    /* base32 of the bytes 00 01 .. 0f, as libcardledger writes 16 random bytes. */
    static const char id[] = "222k62s62o52i42d3c7ks5ci3w";
    uint8_t buf[256], text[256];
    size_t len = s_encode_with_id(id, buf, sizeof buf);
    /* Field 3 (tag 0x1a), 16 bytes, the id's bytes; no field 1. */
    CHECK(len >= 18 && buf[0] == 0x1a && buf[1] == 16);
    for (int i = 0; i < 16 && len >= 18; i++) {
        CHECK(buf[2 + i] == i);
    }
    /* The same id in capitals is not base32 of anything (lower case is the form): text. */
    char upper[sizeof id];
    for (size_t i = 0; i < sizeof id; i++) {
        upper[i] = (char)(id[i] >= 'a' && id[i] <= 'z' ? id[i] - 'a' + 'A' : id[i]);
    }
    size_t text_len = s_encode_with_id(upper, text, sizeof text);
    CHECK(text[0] == 0x0a && text[1] == 26);
    CHECK(text_len == len + 10);
    printf("    a 26-character base32 request id: %zu bytes as text, %zu as bytes\n", text_len,
           len);

    /* Ids that stay text: trailing bits set ('x' is 29, 11101), lengths no byte string has, other
     * characters, the longest id of all; and ones that pack: 2, 4 and 64 characters. */
    static const char *const texts[] = {
        "222k62s62o52i42d3c7ks5ci3x",
        "222k62s62o52i42d3c7ks5ci3",
        "2",
        "234",
        "ib-222k62s62o52i42d3c7ks5ci3w",
        "0123456789",
        "222k62s62o52i42d3c7ks5ci3w=",
        "r-7f3a9c2e",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        s_encode_with_id(texts[i], buf, sizeof buf);
        CHECK(buf[0] == 0x0a);
    }
    static const char *const packed[] = {
        "22",
        "zk",
        "2222",
        "zzzzzzzzzzzzzzzzzzzzzzzzzw",
        "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt",
    };
    for (size_t i = 0; i < sizeof packed / sizeof packed[0]; i++) {
        len = s_encode_with_id(packed[i], buf, sizeof buf);
        CHECK(buf[0] == 0x1a && buf[1] == strlen(packed[i]) * 5 / 8);
    }

    /* Every string over the alphabet reads back as itself, packed or not. */
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567A=";
    unsigned x = 12345;
    for (int round = 0; round < 20000; round++) {
        char some[CL_REQUEST_ID_MAX + 1];
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 16) % CL_REQUEST_ID_MAX;
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            /* mostly the base32 alphabet, now and then a character outside it */
            some[i] = alphabet[(x >> 16) % ((x >> 8) % 50 == 0 ? sizeof alphabet - 1 : 32)];
        }
        some[n] = '\0';
        s_encode_with_id(some, buf, sizeof buf);
    }
}

static void
an_entry_written_before_request_id_b32_decodes_to_the_same_id(void)
{
    /* Journals written before field 3 carry every id as text in field 1. */
    static const char id[] = "222k62s62o52i42d3c7ks5ci3w";
    s_wire_t old = { .n = 0 }, inner = { .n = 0 };
    w_uint(&inner, 1, 42);
    w_str(&old, 1, id);
    w_msg(&old, CL_EV_CARD_FROZEN, &inner);
    cl_event_t ev;
    CHECK_RC(codec_event_decode(old.b, old.n, &ev), 0);
    CHECK_STR(ev.request_id, id);
    CHECK(ev.type == CL_EV_CARD_FROZEN && ev.u.card_flag.card_id == 42);
    /* Written again, it takes the short form and still reads as the same event. */
    uint8_t buf[256];
    size_t len = s_encode_with_id(id, buf, sizeof buf);
    CHECK(len == old.n - 10);
    cl_event_t again;
    CHECK_RC(codec_event_decode(buf, len, &again), 0);
    CHECK(memcmp(&ev, &again, sizeof ev) == 0);
}

/*
 * The text of a packed request id, for every length a packed id may have, against a plain
 * bit-by-bit base32 (the codec turns whole groups of five bytes into eight characters first).
 */
static void
packed_request_ids_of_every_length_read_as_plain_base32(void)
{
    static const char alphabet[] = "234567abcdefghijklmnopqrstuvwxyz";
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t len = 1; len * 8 <= CL_REQUEST_ID_MAX * 5; len++) {
        for (int round = 0; round < 50; round++) {
            uint8_t raw[64];
            for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                raw[i] = (uint8_t)(round == 0 ? 0xff : x); /* all ones once: every bit counts */
            }
            char want[CL_REQUEST_ID_MAX + 2];
            size_t o = 0;
            uint32_t acc = 0;
            unsigned bits = 0;
            for (size_t i = 0; i < len; i++) {
                acc = (acc << 8) | raw[i];
                for (bits += 8; bits >= 5; bits -= 5)
                    want[o++] = alphabet[(acc >> (bits - 5)) & 31u];
            }
            if (bits > 0)
                want[o++] = alphabet[(acc << (5 - bits)) & 31u];
            want[o] = '\0';
            char got[CL_REQUEST_ID_MAX + 1];
            CHECK_RC(codec_request_id_b32_text(raw, len, got), 0);
            CHECK_STR(got, want);
        }
    }
}

static void
a_redemption_written_with_its_region_decodes_to_the_same_event(void)
{
    /* How the daemon wrote a redemption before it stopped recording the store's region: the id
     * as text, the region in CardRedeemed field 3. */
    s_wire_t old = { .n = 0 }, inner = { .n = 0 }, actor = { .n = 0 };
    w_uint(&actor, 1, CL_ROLE_OPERATOR);
    w_str(&actor, 4, "local");
    w_uint(&inner, 1, 60389);
    w_str(&inner, 2, "s1");
    w_str(&inner, 3, "310000");
    w_str(&inner, 4, "o020000000000060");
    w_uint(&inner, 5, 142);
    w_uint(&inner, 7, 99858);
    w_str(&old, 1, "ejeolo6pru27p2kn2zhf2m65vi");
    w_msg(&old, 2, &actor);
    w_msg(&old, CL_EV_CARD_REDEEMED, &inner);
    CHECK(old.n == 83); /* the 82.3 B average payload of docs/BENCHMARKS.md's redeem runs */

    cl_event_t ev;
    CHECK_RC(codec_event_decode(old.b, old.n, &ev), 0);
    CHECK(ev.type == CL_EV_CARD_REDEEMED);
    CHECK_STR(ev.request_id, "ejeolo6pru27p2kn2zhf2m65vi");
    CHECK(ev.actor.role == CL_ROLE_OPERATOR);
    CHECK_STR(ev.actor.name, "local");
    const cl_ev_card_redeemed_t *r = &ev.u.card_redeemed;
    CHECK(r->card_id == 60389 && r->amount_minor == 142 && r->balance_after_minor == 99858);
    CHECK_STR(r->store_id, "s1");
    CHECK_STR(r->region, "310000");
    CHECK_STR(r->order_ref, "o020000000000060");

    /* The codec writes what the struct holds, so the old event encodes back to its bytes. */
    uint8_t buf[256];
    size_t len = 0;
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), 0);
    CHECK(len == old.n && memcmp(buf, old.b, len) == 0);
}

static void
request_id_b32_is_refused_when_too_long_or_beside_a_text_id(void)
{
    cl_event_t ev;
    s_wire_t w = { .n = 0 }, inner = { .n = 0 };
    uint8_t raw[64];
    memset(raw, 0xab, sizeof raw);
    w_uint(&inner, 1, 7);

    w_bytes(&w, 3, raw, 40); /* 64 characters: the longest id */
    w_msg(&w, CL_EV_CARD_FROZEN, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), 0);
    CHECK(strlen(ev.request_id) == CL_REQUEST_ID_MAX);

    w.n = 0;
    w_bytes(&w, 3, raw, 41);
    w_msg(&w, CL_EV_CARD_FROZEN, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_ELIMIT);

    w.n = 0;
    w_str(&w, 1, "r1");
    w_bytes(&w, 3, raw, 16);
    w_msg(&w, CL_EV_CARD_FROZEN, &inner);
    CHECK_RC(codec_event_decode(w.b, w.n, &ev), CODEC_EINVALID);
}

static void
event_json_masks_the_code_and_never_shows_the_pin_hash(void)
{
    cl_event_t ev;
    char json[CODEC_EVENT_JSON_MAX + 1];
    size_t len = 0;
    s_make_event(CL_EV_CARD_ISSUED, &ev);
    strcpy(ev.u.card_issued.code, "7KQ4M9XW2RPA8D3F");
    memcpy(ev.u.card_issued.pin_hash, "PINHASHSECRET123", CL_HASH_LEN);
    strcpy(ev.u.card_issued.holder, "say \"hi\"\\\n\x01 \xe7\xa4\xbc \xff"
                                    " end");
    CHECK_RC(codec_event_json(&ev, json, sizeof json, &len), 0);
    printf("    %.160s...\n", json);
    CHECK(strlen(json) == len);
    CHECK(json[0] == '{' && json[len - 1] == '}');
    CHECK(strchr(json, '\n') == NULL);
    CHECK(strstr(json, "\"type\":\"CardIssued\"") != NULL);
    CHECK(strstr(json, "\"code\":\"****-****-****-8D3F\"") != NULL);
    CHECK(strstr(json, "7KQ4M9XW2RPA8D3F") == NULL);
    CHECK(strstr(json, "PINHASH") == NULL);
    CHECK(strstr(json, "pin_hash") == NULL);
    CHECK(strstr(json, "\"has_pin\":true") != NULL);
    CHECK(strstr(json, "\"channel\":\"platform\"") != NULL);
    CHECK(strstr(json, "\"role\":\"store_terminal\"") != NULL);
    CHECK(strstr(json, "\"holder\":\"say \\\"hi\\\"\\\\\\n\\u0001 \xe7\xa4\xbc \\ufffd end\"") !=
          NULL);

    s_make_event(CL_EV_GIFT_OFFERED, &ev);
    memcpy(ev.u.gift_offered.claim_hash, "CLAIMHASHSECRET1", CL_HASH_LEN);
    CHECK_RC(codec_event_json(&ev, json, sizeof json, &len), 0);
    CHECK(strstr(json, "CLAIMHASH") == NULL);
    CHECK(strstr(json, "claim_hash") == NULL);

    size_t untouched = 12345;
    CHECK_RC(codec_event_json(&ev, json, 40, &untouched), CODEC_ENOSPC);
    CHECK(untouched == 12345);
    CHECK(strlen(json) < 40);
}

static void
event_json_writes_every_type(void)
{
    cl_event_t ev;
    char json[CODEC_EVENT_JSON_MAX + 1];
    for (size_t i = 0; i < S_EVENT_TYPES; i++) {
        size_t len = 0;
        s_make_event(s_event_types[i], &ev);
        CHECK_RC(codec_event_json(&ev, json, sizeof json, &len), 0);
        char want[64];
        snprintf(want, sizeof want, "\"type\":\"%s\"", cl_event_name(ev.type));
        CHECK(strstr(json, want) != NULL);
    }
    ev.type = CL_EV_NONE;
    size_t len = 0;
    CHECK_RC(codec_event_json(&ev, json, sizeof json, &len), CODEC_EINVAL);
}

/* ---- Requests ----------------------------------------------------------------------------- */

static const cl_command_type_t s_command_types[] = {
    CL_CMD_REGISTER_MERCHANT,
    CL_CMD_REGISTER_STORE,
    CL_CMD_DEFINE_PROGRAM,
    CL_CMD_UPDATE_PROGRAM,
    CL_CMD_CLOSE_PROGRAM,
    CL_CMD_ISSUE_CARD,
    CL_CMD_ISSUE_BATCH,
    CL_CMD_OFFER_GIFT,
    CL_CMD_CLAIM_GIFT,
    CL_CMD_RECALL_GIFT,
    CL_CMD_TRANSFER_CARD,
    CL_CMD_REDEEM,
    CL_CMD_REVERSE_REDEMPTION,
    CL_CMD_RELOAD,
    CL_CMD_TRANSFER_BALANCE,
    CL_CMD_ADJUST,
    CL_CMD_FREEZE,
    CL_CMD_UNFREEZE,
    CL_CMD_UNLOCK,
    CL_CMD_ADVANCE_CLOCK,
    CL_CMD_GET_CARD,
    CL_CMD_GET_REQUEST,
    CL_CMD_GET_STATUS,
};
#define S_COMMAND_TYPES (sizeof s_command_types / sizeof s_command_types[0])

static void
s_make_ref(cl_card_ref_t *r, bool by_code)
{
    if (by_code) {
        FILL(r->code);
    } else {
        r->card_id = s_u64();
    }
}

static void
s_make_issue_card(cl_cmd_issue_card_t *d)
{
    FILL(d->merchant_id);
    FILL(d->program_id);
    FILL(d->holder);
    d->channel = CL_CHANNEL_ENTERPRISE;
    FILL(d->store_id);
    FILL(d->region);
    d->face_value_minor = s_i64();
    d->price_paid_minor = s_i64();
    d->paid_nothing = true;
    FILL(d->import_code);
    FILL(d->import_pin);
    FILL(d->row_key);
}

/* Fills every field a command of this type carries; rows[] receives IssueBatch rows. */
static void
s_make_command(cl_command_type_t type, cl_command_t *c, cl_cmd_issue_card_t *rows, uint32_t n_rows)
{
    static unsigned flip;
    bool by_code = (flip++ & 1) != 0;
    memset(c, 0, sizeof *c);
    c->type = type;
    FILL(c->request_id);
    switch (type) {
    case CL_CMD_REGISTER_MERCHANT:
        FILL(c->u.register_merchant.merchant_id);
        FILL(c->u.register_merchant.name);
        break;
    case CL_CMD_REGISTER_STORE:
        FILL(c->u.register_store.merchant_id);
        FILL(c->u.register_store.store_id);
        FILL(c->u.register_store.name);
        FILL(c->u.register_store.region);
        break;
    case CL_CMD_DEFINE_PROGRAM:
    case CL_CMD_UPDATE_PROGRAM:
        s_make_spec(&c->u.program, type == CL_CMD_DEFINE_PROGRAM);
        break;
    case CL_CMD_CLOSE_PROGRAM:
        FILL(c->u.close_program.merchant_id);
        FILL(c->u.close_program.program_id);
        FILL(c->u.close_program.reason);
        break;
    case CL_CMD_ISSUE_CARD:
        s_make_issue_card(&c->u.issue_card);
        break;
    case CL_CMD_ISSUE_BATCH:
        FILL(c->u.issue_batch.merchant_id);
        FILL(c->u.issue_batch.program_id);
        FILL(c->u.issue_batch.batch_ref);
        memset(rows, 0, n_rows * sizeof rows[0]);
        for (uint32_t i = 0; i < n_rows; i++) {
            s_make_issue_card(&rows[i]);
        }
        c->u.issue_batch.rows_count = n_rows;
        c->batch_rows = rows;
        break;
    case CL_CMD_OFFER_GIFT:
    case CL_CMD_TRANSFER_CARD:
        s_make_ref(&c->u.gift.card, by_code);
        FILL(c->u.gift.pin);
        FILL(c->u.gift.from_holder);
        FILL(c->u.gift.to_holder);
        break;
    case CL_CMD_CLAIM_GIFT:
        s_make_ref(&c->u.gift_close.card, by_code);
        c->u.gift_close.offer_id = s_u64();
        FILL(c->u.gift_close.claim_secret);
        FILL(c->u.gift_close.holder);
        break;
    case CL_CMD_RECALL_GIFT:
        s_make_ref(&c->u.gift_close.card, by_code);
        c->u.gift_close.offer_id = s_u64();
        FILL(c->u.gift_close.holder);
        break;
    case CL_CMD_REDEEM:
        s_make_ref(&c->u.redeem.card, by_code);
        FILL(c->u.redeem.pin);
        FILL(c->u.redeem.store_id);
        FILL(c->u.redeem.order_ref);
        c->u.redeem.amount_minor = s_i64();
        c->u.redeem.uses = s_u32();
        c->u.redeem.order_amount_minor = s_i64();
        FILL(c->u.redeem.sku);
        break;
    case CL_CMD_REVERSE_REDEMPTION:
        s_make_ref(&c->u.reverse.card, by_code);
        c->u.reverse.redemption_seq = s_u64();
        FILL(c->u.reverse.store_id);
        c->u.reverse.amount_minor = s_i64();
        c->u.reverse.uses = s_u32();
        FILL(c->u.reverse.reason);
        break;
    case CL_CMD_RELOAD:
        s_make_ref(&c->u.reload.card, by_code);
        c->u.reload.amount_minor = s_i64();
        c->u.reload.price_paid_minor = s_i64();
        c->u.reload.channel = CL_CHANNEL_ONLINE;
        FILL(c->u.reload.store_id);
        break;
    case CL_CMD_TRANSFER_BALANCE:
        s_make_ref(&c->u.transfer_balance.from_card, true);
        FILL(c->u.transfer_balance.from_pin);
        s_make_ref(&c->u.transfer_balance.to_card, false);
        c->u.transfer_balance.amount_minor = s_i64();
        break;
    case CL_CMD_ADJUST:
        s_make_ref(&c->u.adjust.card, by_code);
        c->u.adjust.delta_minor = s_i64();
        c->u.adjust.delta_uses = -12345;
        FILL(c->u.adjust.reason);
        break;
    case CL_CMD_FREEZE:
    case CL_CMD_UNFREEZE:
    case CL_CMD_UNLOCK:
        s_make_ref(&c->u.card_flag.card, by_code);
        FILL(c->u.card_flag.reason);
        break;
    case CL_CMD_ADVANCE_CLOCK:
        c->u.set_now_us = s_i64();
        break;
    case CL_CMD_GET_CARD:
        s_make_ref(&c->u.card_flag.card, by_code);
        break;
    case CL_CMD_GET_REQUEST:
        FILL(c->u.get_request_id);
        break;
    default:
        break;
    }
}

/* Encodes cmds[0..n) into one frame. */
static size_t
s_frame(const cl_command_t *cmds, size_t n, uint8_t *frame, size_t cap)
{
    static uint8_t bufs[8][1 << 16];
    const uint8_t *reqs[8];
    size_t lens[8];
    for (size_t i = 0; i < n && i < 8; i++) {
        CHECK_RC(codec_request_encode(&cmds[i], bufs[i], sizeof bufs[i], &lens[i]), 0);
        reqs[i] = bufs[i];
    }
    size_t len = 0;
    CHECK_RC(codec_request_batch_frame(reqs, lens, n, frame, cap, &len), 0);
    return len;
}

static codec_batch_t *
s_batch(void)
{
    codec_batch_t *b = NULL;
    CHECK_RC(codec_batch_new(&b), 0);
    CHECK(b != NULL);
    if (b == NULL) {
        abort(); /* nothing below can run without it */
    }
    return b;
}

/* A string of random content that ends with its NUL (the last byte of its array, at least). */
static void
s_rand_str_nul(uint64_t *x, char *dst, size_t cap)
{
    s_rand_str(x, dst, cap);
    dst[cap - 1] = '\0';
}

/* codec_request_encode() writes an IssueBatch field by field; its bytes must be protobuf-c's own
 * pack of the same Request, for any rows, and a string without its NUL or a buffer too small
 * must be refused with nothing written past the room. */
static void
issue_batch_requests_encode_as_protobuf_c_packs_them(void)
{
    enum { n_max = 24 };
    static cl_command_t cmd;
    static cl_cmd_issue_card_t rows[n_max];
    static Cardledger__V1__IssueCard pb_rows[n_max];
    static Cardledger__V1__IssueCard *pb_ptrs[n_max];
    static uint8_t fast[n_max * 700 + 512], full[sizeof fast];
    uint64_t x = 0xD1B54A32D192ED03ULL;
    size_t compared = 0, refused = 0;
    for (int i = 0; i < 4000; i++) {
        /* One batch in four may hold a string without its NUL; the others never do. */
        bool clean = i % 4 != 0;
        void (*str)(uint64_t *, char *, size_t) = clean ? s_rand_str_nul : s_rand_str;
        memset(&cmd, 0, sizeof cmd);
        cmd.type = CL_CMD_ISSUE_BATCH;
        s_rand_request_id(&x, cmd.request_id);
        if (clean) {
            cmd.request_id[CL_REQUEST_ID_MAX] = '\0';
        }
        cl_cmd_issue_batch_t *b = &cmd.u.issue_batch;
        str(&x, b->merchant_id, sizeof b->merchant_id);
        str(&x, b->program_id, sizeof b->program_id);
        str(&x, b->batch_ref, sizeof b->batch_ref);
        b->rows_count = (uint32_t)(s_next(&x) % (n_max + 1));
        cmd.batch_rows = rows;
        for (uint32_t k = 0; k < b->rows_count; k++) {
            cl_cmd_issue_card_t *r = &rows[k];
            memset(r, 0, sizeof *r);
            str(&x, r->merchant_id, sizeof r->merchant_id);
            str(&x, r->program_id, sizeof r->program_id);
            str(&x, r->holder, sizeof r->holder);
            r->channel = (cl_channel_t)(int32_t)s_rand_num(&x); /* negative ones too */
            str(&x, r->store_id, sizeof r->store_id);
            str(&x, r->region, sizeof r->region);
            r->face_value_minor = (int64_t)s_rand_num(&x);
            r->price_paid_minor = (int64_t)s_rand_num(&x);
            r->paid_nothing = s_next(&x) % 2 == 0;
            str(&x, r->import_code, sizeof r->import_code);
            str(&x, r->import_pin, sizeof r->import_pin);
            str(&x, r->row_key, sizeof r->row_key);

            Cardledger__V1__IssueCard *m = &pb_rows[k];
            cardledger__v1__issue_card__init(m);
            m->merchant_id = r->merchant_id;
            m->program_id = r->program_id;
            m->holder = r->holder;
            m->channel = (Cardledger__V1__Channel)r->channel;
            m->store_id = r->store_id;
            m->region = r->region;
            m->face_value_minor = r->face_value_minor;
            m->price_paid_minor = r->price_paid_minor;
            m->paid_nothing = r->paid_nothing;
            m->import_code = r->import_code;
            m->import_pin = r->import_pin;
            m->row_key = r->row_key;
            pb_ptrs[k] = m;
        }
        size_t fast_len = 777;
        memset(fast, 0xa5, sizeof fast);
        int rc = codec_request_encode(&cmd, fast, sizeof fast, &fast_len);
        if (!clean && rc != 0) {
            CHECK_RC(rc, CODEC_ELIMIT);
            CHECK(fast_len == 777);
            CHECK_RC(codec_request_encode(&cmd, NULL, 0, &fast_len), CODEC_ELIMIT);
            for (size_t k = 0; k < sizeof fast; k++) {
                if (fast[k] != 0xa5) {
                    fprintf(stderr, "    batch %d: a refused encode wrote byte %zu\n", i, k);
                    s_ok = false;
                    break;
                }
            }
            refused++;
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "    batch %d (%u rows): rc %d\n", i, b->rows_count, rc);
            s_ok = false;
            continue;
        }
        for (size_t k = fast_len; k < sizeof fast; k++) {
            if (fast[k] != 0xa5) {
                fprintf(stderr, "    batch %d: byte %zu written past the request\n", i, k);
                s_ok = false;
                break;
            }
        }
        /* The strings of a batch that encodes all hold their NUL, so protobuf-c may read them. */
        Cardledger__V1__IssueBatch ib;
        cardledger__v1__issue_batch__init(&ib);
        ib.merchant_id = b->merchant_id;
        ib.program_id = b->program_id;
        ib.batch_ref = b->batch_ref;
        ib.n_cards = b->rows_count;
        ib.cards = pb_ptrs;
        Cardledger__V1__Request req;
        cardledger__v1__request__init(&req);
        req.request_id = cmd.request_id;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_ISSUE_BATCH;
        req.issue_batch = &ib;
        size_t full_len = protobuf_c_message_get_packed_size(&req.base);
        if (full_len != fast_len || full_len > sizeof full ||
            protobuf_c_message_pack(&req.base, full) != full_len ||
            memcmp(fast, full, full_len) != 0) {
            fprintf(stderr, "    batch %d (%u rows): %zu bytes, protobuf-c packs %zu\n", i,
                    b->rows_count, fast_len, full_len);
            s_ok = false;
            continue;
        }
        compared++;
        /* Too little room (one byte short, or less): refused, nothing written at or past it. */
        size_t cap = i % 2 == 0 ? fast_len - 1 : (size_t)(s_next(&x) % fast_len);
        memset(fast, 0xa5, sizeof fast);
        size_t len = 777;
        CHECK_RC(codec_request_encode(&cmd, fast, cap, &len), CODEC_ENOSPC);
        CHECK(len == 777);
        for (size_t k = cap; k < sizeof fast; k++) {
            if (fast[k] != 0xa5) {
                fprintf(stderr, "    batch %d: a refused encode wrote byte %zu\n", i, k);
                s_ok = false;
                break;
            }
        }
    }
    /* Both kinds were met many times over. */
    CHECK(compared > 2500 && refused > 500);
}

static void
every_command_type_round_trips_through_a_request(void)
{
    static cl_command_t cmd;
    static cl_cmd_issue_card_t rows[3];
    static uint8_t frame[1 << 16];
    codec_batch_t *b = s_batch();
    for (size_t i = 0; i < S_COMMAND_TYPES; i++) {
        s_make_command(s_command_types[i], &cmd, rows, 3);
        size_t len = s_frame(&cmd, 1, frame, sizeof frame);
        CHECK_RC(codec_batch_decode(b, frame, len), 0);
        CHECK(codec_batch_count(b) == 1);
        const codec_request_t *r = codec_batch_request(b, 0);
        if (r == NULL) {
            continue;
        }
        CHECK(r->status == CL_OK);
        CHECK_STR(r->message, "");
        if (cmd.type == CL_CMD_ISSUE_BATCH) {
            CHECK(r->cmd.batch_rows != NULL && r->cmd.batch_rows != rows);
            CHECK(r->cmd.batch_rows != NULL && memcmp(r->cmd.batch_rows, rows, sizeof rows) == 0);
            cmd.batch_rows = r->cmd.batch_rows;
        }
        if (memcmp(&cmd, &r->cmd, sizeof cmd) != 0) {
            fprintf(stderr, "    command %d does not round-trip (%s)\n", (int)cmd.type, r->message);
            s_ok = false;
        }
    }
    CHECK(codec_batch_request(b, 1) == NULL);
    codec_batch_destroy(&b);
    CHECK(b == NULL);
    codec_batch_destroy(&b);
    codec_batch_destroy(NULL);
}

static void
projector_queries_decode_to_their_type_without_payload(void)
{
    static uint8_t frame[4096];
    codec_batch_t *b = s_batch();
    for (int type = CL_CMD_PROJECTOR_FIRST; type <= 68; type++) {
        cl_command_t cmd;
        memset(&cmd, 0, sizeof cmd);
        cmd.type = (cl_command_type_t)type;
        snprintf(cmd.request_id, sizeof cmd.request_id, "q-%d", type);
        size_t len = s_frame(&cmd, 1, frame, sizeof frame);
        CHECK_RC(codec_batch_decode(b, frame, len), 0);
        const codec_request_t *r = codec_batch_request(b, 0);
        CHECK(r != NULL && r->status == CL_OK && (int)r->cmd.type == type);
        CHECK(r != NULL && memcmp(&r->cmd, &cmd, sizeof cmd) == 0);
    }
    /* With a payload from a client that knows more: still the type alone. */
    s_wire_t req = { .n = 0 }, inner = { .n = 0 };
    w_str(&req, 1, "q-61");
    w_str(&inner, 1, "m1");
    w_str(&inner, 2, "holder-9");
    w_msg(&req, 61, &inner);
    const codec_request_t *r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_OK && r->cmd.type == 61);

    cl_command_t cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = (cl_command_type_t)69;
    size_t len = 0;
    CHECK_RC(codec_request_encode(&cmd, frame, sizeof frame, &len), CODEC_EINVAL);
    cmd.type = (cl_command_type_t)1;
    CHECK_RC(codec_request_encode(&cmd, frame, sizeof frame, &len), CODEC_EINVAL);
    codec_batch_destroy(&b);
}

static void
over_limit_string_is_refused_naming_the_field(void)
{
    codec_batch_t *b = s_batch();
    s_wire_t req = { .n = 0 }, inner = { .n = 0 };
    w_str(&req, 1, "r-1");
    w_uint(&inner, 5, 1500);
    w_repeat(&inner, 4, 'o', 80);
    w_msg(&req, CL_CMD_REDEEM, &inner);
    const codec_request_t *r = s_decode_one(b, &req);
    if (r != NULL) {
        CHECK(r->status == CL_TOO_LARGE);
        CHECK_STR(r->message, "redeem.order_ref is 80 bytes, the limit is 64");
        CHECK_STR(r->cmd.request_id, "r-1");
        CHECK(r->cmd.type == CL_CMD_REDEEM);
        CHECK(r->cmd.u.redeem.amount_minor == 0); /* the rest of a refused command is zero */
    }

    /* Nested: a card code inside a card reference. */
    s_wire_t ref = { .n = 0 };
    req.n = 0;
    inner.n = 0;
    w_repeat(&ref, 1, 'C', CL_CODE_MAX + 1);
    w_str(&req, 1, "r-2");
    w_msg(&inner, 1, &ref);
    w_msg(&req, CL_CMD_TRANSFER_BALANCE, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL && strcmp(r->message, "transfer_balance.from_card.code is 33 bytes, the "
                                          "limit is 32") == 0);

    /* Deeper still: one entry of a list inside the spec. */
    s_wire_t spec = { .n = 0 };
    req.n = 0;
    inner.n = 0;
    w_str(&spec, 12, "store-a");
    w_str(&spec, 12, "store-b");
    w_repeat(&spec, 12, 's', CL_ID_MAX + 3);
    w_str(&req, 1, "r-3");
    w_msg(&inner, 1, &spec);
    w_msg(&req, CL_CMD_DEFINE_PROGRAM, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL && strcmp(r->message, "define_program.spec.accepting_store_ids[2] is 35 "
                                          "bytes, the limit is 32") == 0);

    /* An issue batch row names its index. */
    s_wire_t row = { .n = 0 };
    req.n = 0;
    inner.n = 0;
    w_str(&row, 12, "row-ok");
    w_msg(&inner, 4, &row);
    row.n = 0;
    w_repeat(&row, 3, 'h', CL_HOLDER_MAX + 1);
    w_msg(&inner, 4, &row);
    w_str(&req, 1, "r-4");
    w_msg(&req, CL_CMD_ISSUE_BATCH, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE && r->cmd.batch_rows == NULL);
    CHECK(r != NULL &&
          strcmp(r->message, "issue_batch.cards[1].holder is 65 bytes, the limit is 64") == 0);
    codec_batch_destroy(&b);
}

static void
a_request_larger_than_the_unpack_arena_still_decodes(void)
{
    /* A 1.5 MB name: protobuf-c's unpack outgrows the decoder's arena and falls back to
     * malloc (the sanitizer build checks that it is all freed); the codec then refuses it. */
    enum { name_len = 1500000 };
    uint8_t *req = malloc(name_len + 64);
    uint8_t *frame = malloc(name_len + 128);
    CHECK(req != NULL && frame != NULL);
    if (req == NULL || frame == NULL) {
        free(req);
        free(frame);
        return;
    }
    size_t n = 0;
    const uint8_t id[] = { 0x0a, 0x03, 'r', '-', 'b' };
    memcpy(req + n, id, sizeof id);
    n += sizeof id;
    /* RegisterMerchant (field 10) { name (field 2) }, lengths as 3-byte varints. */
    size_t inner = 1 + 3 + name_len;
    const uint8_t head[] = { 0x52,
                             (uint8_t)(inner | 0x80),
                             (uint8_t)((inner >> 7) | 0x80),
                             (uint8_t)(inner >> 14),
                             0x12,
                             (uint8_t)(name_len | 0x80),
                             (uint8_t)((name_len >> 7) | 0x80),
                             (uint8_t)(name_len >> 14) };
    memcpy(req + n, head, sizeof head);
    n += sizeof head;
    memset(req + n, 'n', name_len);
    n += name_len;
    const uint8_t *reqs[1] = { req };
    size_t lens[1] = { n }, len = 0;
    CHECK_RC(codec_request_batch_frame(reqs, lens, 1, frame, name_len + 128, &len), 0);
    codec_batch_t *b = s_batch();
    CHECK_RC(codec_batch_decode(b, frame, len), 0);
    const codec_request_t *r = codec_batch_request(b, 0);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL &&
          strcmp(r->message, "register_merchant.name is 1500000 bytes, the limit is 64") == 0);
    CHECK(r != NULL && strcmp(r->cmd.request_id, "r-b") == 0);
    codec_batch_destroy(&b);
    free(req);
    free(frame);
}

static void
over_limit_list_is_refused_before_unpacking(void)
{
    codec_batch_t *b = s_batch();
    static s_wire_t req, inner, spec;
    req.n = inner.n = spec.n = 0;
    for (int i = 0; i < CL_DENOMS_MAX + 1; i++) {
        w_uint(&spec, 6, 1000); /* unpacked form */
    }
    w_str(&req, 1, "r-denoms");
    w_msg(&inner, 1, &spec);
    w_msg(&req, CL_CMD_DEFINE_PROGRAM, &inner);
    const codec_request_t *r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL && strcmp(r->message, "define_program.spec.denominations_minor has 17 "
                                          "entries, the limit is 16") == 0);
    CHECK(r != NULL && strcmp(r->cmd.request_id, "r-denoms") == 0);
    CHECK(r != NULL && r->cmd.type == CL_CMD_DEFINE_PROGRAM);

    /* The packed form counts the same. */
    s_wire_t packed = { .n = 0 };
    for (int i = 0; i < CL_DENOMS_MAX + 2; i++) {
        w_varint(&packed, 1000);
    }
    req.n = inner.n = spec.n = 0;
    w_msg(&spec, 6, &packed);
    w_str(&req, 1, "r-packed");
    w_msg(&inner, 1, &spec);
    w_msg(&req, CL_CMD_UPDATE_PROGRAM, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL && strstr(r->message, "has 18 entries, the limit is 16") != NULL);

    /* Eligible SKUs inside the voucher rule. */
    s_wire_t voucher = { .n = 0 };
    req.n = inner.n = spec.n = 0;
    for (int i = 0; i < CL_SKUS_MAX + 1; i++) {
        w_str(&voucher, 5, "sku");
    }
    w_msg(&spec, 23, &voucher);
    w_str(&req, 1, "r-skus");
    w_msg(&inner, 1, &spec);
    w_msg(&req, CL_CMD_DEFINE_PROGRAM, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL && strcmp(r->message, "define_program.spec.voucher.eligible_skus has 33 "
                                          "entries, the limit is 32") == 0);

    /* An issue batch of CL_ISSUE_BATCH_MAX + 1 rows, each as small as a row can be. */
    req.n = inner.n = 0;
    w_str(&inner, 1, "m1");
    for (int i = 0; i < CL_ISSUE_BATCH_MAX + 1; i++) {
        w_bytes(&inner, 4, "", 0);
    }
    w_str(&req, 1, "r-rows");
    w_msg(&req, CL_CMD_ISSUE_BATCH, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL &&
          strcmp(r->message, "issue_batch.cards has 1001 entries, the limit is 1000") == 0);
    uint8_t zero[16] = { 0 };
    CHECK(r != NULL && memcmp(r->content_hash, zero, 16) == 0);
    codec_batch_destroy(&b);
}

static void
issue_batch_rows_beyond_the_frame_pool_are_refused(void)
{
    enum { n_req = CODEC_BATCH_ROWS_MAX / CL_ISSUE_BATCH_MAX + 1 };
    static cl_command_t cmds[n_req];
    static cl_cmd_issue_card_t rows[CL_ISSUE_BATCH_MAX];
    static uint8_t bufs[n_req][CL_ISSUE_BATCH_MAX * 16 + 64];
    static uint8_t frame[n_req * (CL_ISSUE_BATCH_MAX * 16 + 80)];
    const uint8_t *reqs[n_req];
    size_t lens[n_req];
    memset(rows, 0, sizeof rows);
    for (int i = 0; i < CL_ISSUE_BATCH_MAX; i++) {
        snprintf(rows[i].row_key, sizeof rows[i].row_key, "k%d", i);
    }
    for (int i = 0; i < n_req; i++) {
        memset(&cmds[i], 0, sizeof cmds[i]);
        cmds[i].type = CL_CMD_ISSUE_BATCH;
        snprintf(cmds[i].request_id, sizeof cmds[i].request_id, "batch-%d", i);
        cmds[i].u.issue_batch.rows_count = CL_ISSUE_BATCH_MAX;
        cmds[i].batch_rows = rows;
        CHECK_RC(codec_request_encode(&cmds[i], bufs[i], sizeof bufs[i], &lens[i]), 0);
        reqs[i] = bufs[i];
    }
    size_t len = 0;
    CHECK_RC(codec_request_batch_frame(reqs, lens, n_req, frame, sizeof frame, &len), 0);
    codec_batch_t *b = s_batch();
    CHECK_RC(codec_batch_decode(b, frame, len), 0);
    CHECK(codec_batch_count(b) == n_req);
    for (int i = 0; i < n_req && codec_batch_count(b) == n_req; i++) {
        const codec_request_t *r = codec_batch_request(b, (size_t)i);
        if (i < n_req - 1) {
            CHECK(r->status == CL_OK && r->cmd.u.issue_batch.rows_count == CL_ISSUE_BATCH_MAX);
            CHECK(memcmp(r->cmd.batch_rows, rows, sizeof rows) == 0);
        } else {
            CHECK(r->status == CL_TOO_LARGE);
            CHECK(strstr(r->message, "another frame") != NULL);
            CHECK_STR(r->cmd.request_id, "batch-4");
        }
    }
    codec_batch_destroy(&b);
}

/* A Reply whose request result embeds a Reply whose request result embeds ..., levels deep
 * (every length stays a one-byte varint: 5 bytes a level). */
static size_t
s_nested_reply(uint8_t *out, int levels)
{
    uint8_t tmp[256];
    size_t n = 0;
    for (int i = 0; i < levels; i++) {
        size_t t = 0;
        tmp[t++] = 0x12; /* RequestRecord.reply */
        tmp[t++] = (uint8_t)n;
        memcpy(tmp + t, out, n);
        t += n;
        n = 0;
        out[n++] = 0x82; /* Reply.request (field 16) */
        out[n++] = 0x01;
        out[n++] = (uint8_t)t;
        memcpy(out + n, tmp, t);
        n += t;
    }
    return n;
}

static void
garbage_bytes_are_malformed(void)
{
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        { "hello world", 11 }, /* a group tag */
        { "\x0a\x05"
          "ab",
          4 },                         /* a request longer than the frame */
        { "\x08\x01", 2 },             /* requests as a varint */
        { "\x0a\x02\x08\x01", 4 },     /* request_id as a varint */
        { "\x0a\x03\xd2\x01\x05", 5 }, /* a redeem longer than its request */
        { "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11 }, /* a varint of 11 bytes */
        { "\x00\x00", 2 },                                      /* field number 0 */
        { "\x0a\x02\x0f\x00", 4 },                              /* wire type 7 */
    };
    codec_batch_t *b = s_batch();
    /* A good frame first, so a failed decode visibly drops it. */
    s_wire_t req = { .n = 0 };
    w_str(&req, 1, "r-1");
    w_bytes(&req, CL_CMD_GET_STATUS, "", 0);
    CHECK(s_decode_one(b, &req) != NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = codec_batch_decode(b, cases[i].bytes, cases[i].len);
        if (rc != CODEC_EMALFORMED) {
            fprintf(stderr, "    case %zu: %d (%s)\n", i, rc, codec_strerror(rc));
            s_ok = false;
        }
        CHECK(codec_batch_count(b) == 0);
        CHECK(codec_batch_request(b, 0) == NULL);
    }
    CHECK_RC(codec_batch_decode(b, "", 0), 0); /* an empty batch is a batch */
    CHECK(codec_batch_count(b) == 0);
    CHECK_RC(codec_batch_decode(NULL, "", 0), CODEC_EINVAL);
    CHECK_RC(codec_batch_decode(b, NULL, 3), CODEC_EINVAL);

    /* Nesting deeper than the contract allows: a stored reply inside a reply, 24 times over. */
    static uint8_t deep[256];
    cl_reply_t reply;
    size_t n = s_nested_reply(deep, 3);
    CHECK_RC(codec_reply_decode(deep, n, &reply, NULL, 0), 0);
    CHECK(reply.result == CL_RES_REQUEST && reply.stored_reply != NULL);
    n = s_nested_reply(deep, 24);
    CHECK_RC(codec_reply_decode(deep, n, &reply, NULL, 0), CODEC_EMALFORMED);
    codec_batch_destroy(&b);
}

static void
more_than_the_batch_limit_of_requests_is_too_large(void)
{
    static uint8_t req[64];
    static const uint8_t *reqs[CL_BATCH_REQUESTS_MAX + 1];
    static size_t lens[CL_BATCH_REQUESTS_MAX + 1];
    static uint8_t frame[(CL_BATCH_REQUESTS_MAX + 1) * 80];
    cl_command_t cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = CL_CMD_GET_STATUS;
    strcpy(cmd.request_id, "status");
    size_t req_len = 0;
    CHECK_RC(codec_request_encode(&cmd, req, sizeof req, &req_len), 0);
    for (size_t i = 0; i <= CL_BATCH_REQUESTS_MAX; i++) {
        reqs[i] = req;
        lens[i] = req_len;
    }
    codec_batch_t *b = s_batch();
    size_t len = 0;
    CHECK_RC(
        codec_request_batch_frame(reqs, lens, CL_BATCH_REQUESTS_MAX, frame, sizeof frame, &len), 0);
    CHECK_RC(codec_batch_decode(b, frame, len), 0);
    CHECK(codec_batch_count(b) == CL_BATCH_REQUESTS_MAX);

    CHECK_RC(
        codec_request_batch_frame(reqs, lens, CL_BATCH_REQUESTS_MAX + 1, frame, sizeof frame, &len),
        0);
    CHECK_RC(codec_batch_decode(b, frame, len), CODEC_ETOOLARGE);
    CHECK(codec_batch_count(b) == 0);

    uint8_t *big = calloc(1, (size_t)CL_FRAME_MAX_BYTES + 1);
    CHECK(big != NULL);
    if (big != NULL) {
        CHECK_RC(codec_batch_decode(b, big, (size_t)CL_FRAME_MAX_BYTES + 1), CODEC_ETOOLARGE);
        free(big);
    }
    codec_batch_destroy(&b);
}

static void
a_bad_request_does_not_spoil_the_good_ones_in_its_batch(void)
{
    static uint8_t bufs[4][512];
    static uint8_t frame[4096];
    const uint8_t *reqs[4];
    size_t lens[4];
    cl_command_t good;
    s_make_command(CL_CMD_REDEEM, &good, NULL, 0);
    CHECK_RC(codec_request_encode(&good, bufs[0], sizeof bufs[0], &lens[0]), 0);
    s_wire_t no_id = { .n = 0 }, unknown = { .n = 0 }, inner = { .n = 0 };
    w_str(&inner, 2, "lost");
    w_msg(&no_id, CL_CMD_FREEZE, &inner);
    memcpy(bufs[1], no_id.b, no_id.n);
    lens[1] = no_id.n;
    CHECK_RC(codec_request_encode(&good, bufs[2], sizeof bufs[2], &lens[2]), 0);
    w_str(&unknown, 1, "r-future");
    w_msg(&unknown, 45, &inner);
    memcpy(bufs[3], unknown.b, unknown.n);
    lens[3] = unknown.n;
    for (int i = 0; i < 4; i++) {
        reqs[i] = bufs[i];
    }
    size_t len = 0;
    CHECK_RC(codec_request_batch_frame(reqs, lens, 4, frame, sizeof frame, &len), 0);
    codec_batch_t *b = s_batch();
    CHECK_RC(codec_batch_decode(b, frame, len), 0);
    CHECK(codec_batch_count(b) == 4);
    if (codec_batch_count(b) == 4) {
        const codec_request_t *r0 = codec_batch_request(b, 0);
        const codec_request_t *r1 = codec_batch_request(b, 1);
        const codec_request_t *r2 = codec_batch_request(b, 2);
        const codec_request_t *r3 = codec_batch_request(b, 3);
        CHECK(r0->status == CL_OK && memcmp(&r0->cmd, &good, sizeof good) == 0);
        CHECK(r1->status == CL_INVALID_ARGUMENT);
        CHECK_STR(r1->message, "request_id is missing; every request needs one");
        CHECK(r1->cmd.type == CL_CMD_FREEZE && r1->cmd.u.card_flag.reason[0] == '\0');
        CHECK(r2->status == CL_OK && memcmp(&r2->cmd, &good, sizeof good) == 0);
        CHECK(r3->status == CL_UNKNOWN_COMMAND);
        CHECK_STR(r3->message,
                  "the request has no command this ledger knows (it carries field 45)");
        CHECK_STR(r3->cmd.request_id, "r-future");
        CHECK(memcmp(r0->content_hash, r2->content_hash, 16) == 0);
    }
    codec_batch_destroy(&b);
}

static void
request_ids_must_be_present_and_within_their_limit(void)
{
    codec_batch_t *b = s_batch();
    s_wire_t req = { .n = 0 };
    w_str(&req, 1, "");
    w_bytes(&req, CL_CMD_GET_STATUS, "", 0);
    const codec_request_t *r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_INVALID_ARGUMENT);

    req.n = 0;
    w_repeat(&req, 1, 'i', CL_REQUEST_ID_MAX + 1);
    w_bytes(&req, CL_CMD_GET_STATUS, "", 0);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_TOO_LARGE);
    CHECK(r != NULL && strcmp(r->message, "request_id is 65 bytes, the limit is 64") == 0);
    CHECK(r != NULL && r->cmd.request_id[0] == '\0'); /* not echoed: it is not a valid id */

    req.n = 0;
    w_repeat(&req, 1, 'i', CL_REQUEST_ID_MAX);
    w_bytes(&req, CL_CMD_GET_STATUS, "", 0);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_OK && strlen(r->cmd.request_id) == CL_REQUEST_ID_MAX);

    req.n = 0;
    w_str(&req, 1, "r-nothing");
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_UNKNOWN_COMMAND);
    CHECK(r != NULL && strcmp(r->message, "the request has no command") == 0);
    codec_batch_destroy(&b);
}

static void
unknown_enum_value_is_invalid_argument(void)
{
    codec_batch_t *b = s_batch();
    s_wire_t req = { .n = 0 }, inner = { .n = 0 };
    w_str(&req, 1, "r-chan");
    w_uint(&inner, 4, 9);
    w_msg(&req, CL_CMD_ISSUE_CARD, &inner);
    const codec_request_t *r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_INVALID_ARGUMENT);
    CHECK(r != NULL &&
          strcmp(r->message, "issue_card.channel is 9, which is not one of its known values") == 0);

    s_wire_t spec = { .n = 0 };
    req.n = inner.n = 0;
    w_uint(&spec, 11, 4);
    w_str(&req, 1, "r-scope");
    w_msg(&inner, 1, &spec);
    w_msg(&req, CL_CMD_DEFINE_PROGRAM, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_INVALID_ARGUMENT);
    CHECK(r != NULL && strstr(r->message, "define_program.spec.accept_scope is 4") != NULL);

    /* ACCEPT_SCOPE_UNSPECIFIED reads as all stores. */
    req.n = inner.n = spec.n = 0;
    w_str(&spec, 1, "m1");
    w_str(&req, 1, "r-scope0");
    w_msg(&inner, 1, &spec);
    w_msg(&req, CL_CMD_DEFINE_PROGRAM, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_OK && r->cmd.u.program.accept_scope == CL_ACCEPT_ALL);
    codec_batch_destroy(&b);
}

static void
embedded_nul_and_invalid_utf8_are_invalid_argument(void)
{
    codec_batch_t *b = s_batch();
    s_wire_t req = { .n = 0 }, inner = { .n = 0 };
    w_str(&req, 1, "r-nul");
    w_bytes(&inner, 4, "o-1\0evil", 8);
    w_msg(&req, CL_CMD_REDEEM, &inner);
    const codec_request_t *r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_INVALID_ARGUMENT);
    CHECK(r != NULL && strcmp(r->message, "redeem.order_ref contains a NUL byte") == 0);
    CHECK(r != NULL && strcmp(r->cmd.request_id, "r-nul") == 0);

    const char *bad_utf8[] = {
        "\xff",             /* never valid */
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xe6\x98",         /* truncated */
    };
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        s_wire_t row = { .n = 0 };
        req.n = inner.n = 0;
        w_str(&row, 3, bad_utf8[i]);
        w_msg(&inner, 4, &row);
        w_str(&req, 1, "r-utf8");
        w_msg(&req, CL_CMD_ISSUE_BATCH, &inner);
        r = s_decode_one(b, &req);
        CHECK(r != NULL && r->status == CL_INVALID_ARGUMENT);
        CHECK(r != NULL &&
              strcmp(r->message, "issue_batch.cards[0].holder is not valid UTF-8") == 0);
    }

    req.n = inner.n = 0;
    w_str(&inner, 3, "\xe7\xa4\xbc\xe5\x93\x81\xe5\x8d\xa1 \xf0\x9f\x8e\x81");
    w_str(&req, 1, "r-good-utf8");
    w_msg(&req, CL_CMD_ISSUE_CARD, &inner);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_OK);

    req.n = inner.n = 0;
    w_bytes(&req, 1, "r\0x", 3);
    w_bytes(&req, CL_CMD_GET_STATUS, "", 0);
    r = s_decode_one(b, &req);
    CHECK(r != NULL && r->status == CL_INVALID_ARGUMENT);
    CHECK(r != NULL && strcmp(r->message, "request_id contains a NUL byte") == 0);
    codec_batch_destroy(&b);
}

static void
same_content_gives_the_same_hash_and_one_changed_field_a_different_one(void)
{
    static uint8_t frame[1 << 16];
    cl_command_t cmds[4];
    s_make_command(CL_CMD_REDEEM, &cmds[0], NULL, 0);
    cmds[1] = cmds[0];
    cmds[2] = cmds[0];
    cmds[2].u.redeem.amount_minor += 1;
    cmds[3] = cmds[0];
    cmds[3].request_id[0] ^= 1;
    size_t len = s_frame(cmds, 4, frame, sizeof frame);
    codec_batch_t *b = s_batch();
    CHECK_RC(codec_batch_decode(b, frame, len), 0);
    CHECK(codec_batch_count(b) == 4);
    if (codec_batch_count(b) == 4) {
        const uint8_t *h0 = codec_batch_request(b, 0)->content_hash;
        CHECK(memcmp(h0, codec_batch_request(b, 1)->content_hash, 16) == 0);
        CHECK(memcmp(h0, codec_batch_request(b, 2)->content_hash, 16) != 0);
        CHECK(memcmp(h0, codec_batch_request(b, 3)->content_hash, 16) != 0);
    }

    /* The same fields in another order on the wire: re-packing makes them the same request. */
    s_wire_t a = { .n = 0 }, ai = { .n = 0 }, z = { .n = 0 }, zi = { .n = 0 };
    w_str(&ai, 3, "s1");
    w_uint(&ai, 5, 1500);
    w_str(&ai, 4, "o-1");
    w_str(&a, 1, "r-order");
    w_msg(&a, CL_CMD_REDEEM, &ai);
    w_str(&zi, 4, "o-1");
    w_uint(&zi, 5, 1500);
    w_str(&zi, 3, "s1");
    w_msg(&z, CL_CMD_REDEEM, &zi);
    w_str(&z, 1, "r-order");
    uint8_t ha[16], hz[16];
    const codec_request_t *r = s_decode_one(b, &a);
    CHECK(r != NULL);
    if (r != NULL) {
        memcpy(ha, r->content_hash, 16);
    }
    r = s_decode_one(b, &z);
    CHECK(r != NULL);
    if (r != NULL) {
        memcpy(hz, r->content_hash, 16);
        CHECK(memcmp(ha, hz, 16) == 0);
    }

    /* A zero written out is the same as absent; a field this version does not know is not. */
    w_uint(&ai, 6, 0);
    a.n = 0;
    w_str(&a, 1, "r-order");
    w_msg(&a, CL_CMD_REDEEM, &ai);
    r = s_decode_one(b, &a);
    CHECK(r != NULL && memcmp(ha, r->content_hash, 16) == 0);
    w_uint(&ai, 99, 1);
    a.n = 0;
    w_str(&a, 1, "r-order");
    w_msg(&a, CL_CMD_REDEEM, &ai);
    r = s_decode_one(b, &a);
    CHECK(r != NULL && r->status == CL_OK && memcmp(ha, r->content_hash, 16) != 0);
    codec_batch_destroy(&b);
}

static void
request_encoders_refuse_small_buffers_and_leave_out_len_alone(void)
{
    cl_command_t cmd;
    uint8_t buf[64];
    size_t len = 777;
    s_make_command(CL_CMD_REDEEM, &cmd, NULL, 0);
    CHECK_RC(codec_request_encode(&cmd, buf, sizeof buf, &len), CODEC_ENOSPC);
    CHECK(len == 777);
    static cl_cmd_issue_card_t rows[2];
    s_make_command(CL_CMD_ISSUE_BATCH, &cmd, rows, 2);
    CHECK_RC(codec_request_encode(&cmd, buf, sizeof buf, &len), CODEC_ENOSPC);
    cmd.batch_rows = NULL;
    CHECK_RC(codec_request_encode(&cmd, buf, sizeof buf, &len), CODEC_EINVAL);
    CHECK(len == 777);
    const uint8_t *reqs[1] = { buf };
    size_t lens[1] = { 10 };
    CHECK_RC(codec_request_batch_frame(reqs, lens, 1, buf, 11, &len), CODEC_ENOSPC);
    CHECK(len == 777);
    CHECK_RC(codec_request_batch_frame(reqs, lens, 0, buf, 0, &len), 0);
    CHECK(len == 0);

    cl_event_t ev;
    s_make_event(CL_EV_CARD_REDEEMED, &ev);
    len = 777;
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), CODEC_ENOSPC);
    CHECK(len == 777);
    ev.u.card_redeemed.sku[CL_SKU_MAX] = 'x'; /* no NUL inside the array */
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), CODEC_ELIMIT);
    ev.type = CL_EV_NONE;
    CHECK_RC(codec_event_encode(&ev, buf, sizeof buf, &len), CODEC_EINVAL);
}

/* ---- Replies ------------------------------------------------------------------------------ */

static void
s_make_view(cl_card_view_t *v)
{
    char code[CL_CODE_MAX + 1];
    FILL(code);
    v->card_id = s_u64();
    cl_code_mask(code, v->code_masked, sizeof v->code_masked);
    FILL(v->merchant_id);
    FILL(v->program_id);
    v->kind = CL_KIND_PUNCH;
    strcpy(v->currency, "CNY");
    v->state = CL_CARDSTATE_EXHAUSTED;
    v->frozen = true;
    v->locked = true;
    v->balance_minor = s_i64();
    v->uses_left = s_u32();
    v->face_value_minor = s_i64();
    v->issued_at_us = s_i64();
    v->valid_from_us = s_i64();
    v->expires_at_us = s_i64();
    FILL(v->holder);
    v->pin_failures = s_u32();
    v->open_offer_id = s_u64();
    v->transfers_done = s_u32();
    v->redeemed_minor = s_i64();
}

static void
s_make_reply(cl_result_type_t result, cl_reply_t *r, cl_issued_row_t *rows, uint32_t n_rows,
             const uint8_t *stored, size_t stored_len)
{
    memset(r, 0, sizeof *r);
    FILL(r->request_id);
    r->status = CL_INSUFFICIENT_BALANCE;
    FILL(r->message);
    r->last_seq = s_u64();
    r->as_of_seq = s_u64();
    r->result = result;
    switch (result) {
    case CL_RES_CARD:
        s_make_view(&r->card);
        break;
    case CL_RES_ISSUED:
        s_make_view(&r->card);
        FILL(r->code);
        FILL(r->pin);
        break;
    case CL_RES_BATCH:
        r->batch_id = s_u64();
        r->batch_issued = s_u32();
        r->batch_already_issued = s_u32();
        memset(rows, 0, n_rows * sizeof rows[0]);
        for (uint32_t i = 0; i < n_rows; i++) {
            FILL(rows[i].row_key);
            rows[i].status = i % 2 ? CL_OK : CL_ALREADY_EXISTS;
            FILL(rows[i].message);
            rows[i].already_issued = i % 2 == 0;
            rows[i].card_id = s_u64();
            FILL(rows[i].code);
            FILL(rows[i].pin);
        }
        r->rows_count = n_rows;
        r->rows = rows;
        break;
    case CL_RES_REDEEMED:
        s_make_view(&r->card);
        r->redemption_seq = s_u64();
        r->amount_minor = s_i64();
        r->uses = s_u32();
        r->discount_minor = s_i64();
        FILL(r->sku);
        break;
    case CL_RES_GIFT:
        s_make_view(&r->card);
        r->offer_id = s_u64();
        FILL(r->claim_secret);
        r->offer_expires_at_us = s_i64();
        break;
    case CL_RES_TRANSFER:
        s_make_view(&r->card);
        s_make_view(&r->card2);
        r->amount_minor = s_i64();
        break;
    case CL_RES_REQUEST:
        r->found = stored != NULL;
        r->stored_reply = stored;
        r->stored_reply_len = stored_len;
        break;
    case CL_RES_STATUS:
        r->status_head_seq = s_u64();
        r->status_now_us = s_i64();
        r->status_cards = s_u64();
        r->status_checkpoint_seq = s_u64();
        strcpy(r->status_version, CARDLEDGER_VERSION); /* what a decoder reads back */
        break;
    case CL_RES_NONE:
        break;
    }
}

/* Text that a reply may carry: with its NUL, and either any bytes (utf8 false) or valid UTF-8,
 * sometimes past ASCII. */
static void
s_rand_text(uint64_t *x, char *dst, size_t cap, bool utf8)
{
    s_rand_str_nul(x, dst, cap);
    if (!utf8) {
        return;
    }
    size_t n = strlen(dst);
    for (size_t i = 0; i < n; i++) {
        dst[i] = (uint8_t)dst[i] >= 0x80u ? 'a' : dst[i];
    }
    if (n >= 2 && s_next(x) % 8 == 0) {
        memcpy(dst, "\xc3\xa9", 2); /* U+00E9 */
    }
}

/* Decodes buf both ways (codec_reply_decode() and its general path) and says whether the
 * results are the same: return code, the reply, and on success the rows. */
static bool
s_reply_both_ways(const uint8_t *buf, size_t len, size_t rows_cap, int *out_rc)
{
    static cl_reply_t a, b;
    static cl_issued_row_t rows_a[CL_ISSUE_BATCH_MAX], rows_b[CL_ISSUE_BATCH_MAX];
    memset(&a, 0xee, sizeof a);
    memset(&b, 0xee, sizeof b);
    int rc_a = codec_reply_decode(buf, len, &a, rows_a, rows_cap);
    int rc_b = codec_reply_decode_general(buf, len, &b, rows_b, rows_cap);
    *out_rc = rc_a;
    if (rc_a != rc_b) {
        return false;
    }
    if (rc_a != 0) {
        /* A refused reply leaves *out as it was. */
        static cl_reply_t untouched;
        memset(&untouched, 0xee, sizeof untouched);
        return memcmp(&a, &untouched, sizeof a) == 0 && memcmp(&b, &untouched, sizeof b) == 0;
    }
    if (a.rows_count != b.rows_count || (a.rows == rows_a) != (b.rows == rows_b) ||
        memcmp(rows_a, rows_b, a.rows_count * sizeof rows_a[0]) != 0) {
        return false;
    }
    b.rows = a.rows;
    return memcmp(&a, &b, sizeof a) == 0;
}

/* A card view of random content (text as s_rand_text() makes it). */
static void
s_rand_view(uint64_t *x, cl_card_view_t *v, bool utf8)
{
    /* Text in UTF-8 goes with enums in their C range, so that such a reply is all plain. */
    int32_t mask = utf8 ? INT32_MAX : -1;
    v->card_id = s_rand_num(x);
    s_rand_text(x, v->code_masked, sizeof v->code_masked, utf8);
    s_rand_text(x, v->merchant_id, sizeof v->merchant_id, utf8);
    s_rand_text(x, v->program_id, sizeof v->program_id, utf8);
    v->kind = (cl_kind_t)((int32_t)s_rand_num(x) & mask); /* negative ones too */
    s_rand_text(x, v->currency, sizeof v->currency, utf8);
    v->state = (cl_card_state_t)((int32_t)s_rand_num(x) & mask);
    v->frozen = s_next(x) % 2 == 0;
    v->locked = s_next(x) % 2 == 0;
    v->balance_minor = (int64_t)s_rand_num(x);
    v->uses_left = (uint32_t)s_rand_num(x);
    v->face_value_minor = (int64_t)s_rand_num(x);
    v->issued_at_us = (int64_t)s_rand_num(x);
    v->valid_from_us = (int64_t)s_rand_num(x);
    v->expires_at_us = (int64_t)s_rand_num(x);
    s_rand_text(x, v->holder, sizeof v->holder, utf8);
    v->pin_failures = (uint32_t)s_rand_num(x);
    v->open_offer_id = s_rand_num(x);
    v->transfers_done = (uint32_t)s_rand_num(x);
    v->redeemed_minor = (int64_t)s_rand_num(x);
}

/* codec_reply_decode() reads a reply whose result is none, a card, an issued card, a batch or a
 * redemption by a fast path; for any bytes, well made or damaged, its result must be the
 * general path's, and the fast path must take every plain reply of those kinds. */
static void
replies_decode_the_same_by_the_fast_path(void)
{
    enum { n_max = 40 };
    static const cl_result_type_t kinds[] = { CL_RES_NONE,  CL_RES_CARD,     CL_RES_ISSUED,
                                              CL_RES_BATCH, CL_RES_REDEEMED, CL_RES_GIFT };
    static cl_reply_t r, fast;
    static cl_issued_row_t rows[n_max], fast_rows[n_max];
    static uint8_t buf[n_max * 400 + 2048], bad[sizeof buf + 64];
    uint64_t x = 0xA0761D6478BD642FULL;
    size_t good = 0, refused = 0, damaged_same = 0, fast_taken = 0;
    for (int i = 0; i < 6000; i++) {
        memset(&r, 0, sizeof r);
        /* One reply in four may hold text that is not UTF-8 and negative enums; the others are
         * plain. */
        bool utf8 = i % 4 != 0;
        int32_t mask = utf8 ? INT32_MAX : -1;
        r.result = kinds[s_next(&x) % (sizeof kinds / sizeof kinds[0])];
        s_rand_text(&x, r.request_id, sizeof r.request_id, utf8);
        r.status = (cl_status_t)((int32_t)s_rand_num(&x) & mask);
        s_rand_text(&x, r.message, sizeof r.message, utf8);
        r.replayed = s_next(&x) % 4 == 0;
        r.last_seq = s_rand_num(&x);
        r.as_of_seq = s_rand_num(&x);
        switch (r.result) {
        case CL_RES_CARD:
        case CL_RES_GIFT: /* the general path's alone */
            s_rand_view(&x, &r.card, utf8);
            break;
        case CL_RES_ISSUED:
            s_rand_view(&x, &r.card, utf8);
            s_rand_text(&x, r.code, sizeof r.code, utf8);
            s_rand_text(&x, r.pin, sizeof r.pin, utf8);
            break;
        case CL_RES_REDEEMED:
            s_rand_view(&x, &r.card, utf8);
            r.redemption_seq = s_rand_num(&x);
            r.amount_minor = (int64_t)s_rand_num(&x);
            r.uses = (uint32_t)s_rand_num(&x);
            r.discount_minor = (int64_t)s_rand_num(&x);
            s_rand_text(&x, r.sku, sizeof r.sku, utf8);
            break;
        case CL_RES_BATCH:
            r.batch_id = s_rand_num(&x);
            r.batch_issued = (uint32_t)s_rand_num(&x);
            r.batch_already_issued = (uint32_t)s_rand_num(&x);
            r.rows_count = (uint32_t)(s_next(&x) % (n_max + 1));
            r.rows = rows;
            memset(rows, 0, sizeof rows);
            for (uint32_t k = 0; k < r.rows_count; k++) {
                cl_issued_row_t *w = &rows[k];
                s_rand_text(&x, w->row_key, sizeof w->row_key, utf8);
                w->status = (cl_status_t)((int32_t)s_rand_num(&x) & mask);
                s_rand_text(&x, w->message, sizeof w->message, utf8);
                w->already_issued = s_next(&x) % 2 == 0;
                w->card_id = s_rand_num(&x);
                s_rand_text(&x, w->code, sizeof w->code, utf8);
                s_rand_text(&x, w->pin, sizeof w->pin, utf8);
            }
            break;
        default:
            break;
        }
        size_t len = 0;
        CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), 0);
        int rc = 0;
        /* As written; then with room for one row fewer than it holds. */
        if (!s_reply_both_ways(buf, len, n_max, &rc)) {
            fprintf(stderr, "    reply %d (result %d): the two paths differ (rc %d)\n", i,
                    (int)r.result, rc);
            s_ok = false;
            continue;
        }
        rc == 0 ? good++ : refused++;
        /* An empty reply (every field at its default) is the general path's. */
        bool taken = codec_reply_decode_fast(buf, len, &fast, fast_rows, n_max);
        if (utf8 && r.result != CL_RES_GIFT && len > 0 && !taken) {
            fprintf(stderr, "    reply %d (result %d): a plain reply went the general way\n", i,
                    (int)r.result);
            s_ok = false;
        }
        fast_taken += taken;
        if (r.rows_count > 0 && !s_reply_both_ways(buf, len, r.rows_count - 1, &rc)) {
            fprintf(stderr, "    reply %d, short of room: the two paths differ\n", i);
            s_ok = false;
        }
        /* Damaged: a byte changed, the end cut off, an unknown field or a second result added
         * at the end (a oneof keeps the last). */
        for (int d = 0; d < 5; d++) {
            size_t bad_len = len;
            memcpy(bad, buf, len);
            uint64_t how = s_next(&x);
            if (d == 0 && len > 0) {
                bad[how % len] ^= (uint8_t)(1u << (how >> 32) % 8);
            } else if (d == 1 && len > 0) {
                bad[how % len] = (uint8_t)(how >> 40);
            } else if (d == 2) {
                bad_len = len > 0 ? (size_t)(how % len) : 0;
            } else if (d == 3) {
                bad[bad_len++] = 0x98; /* field 99, a varint */
                bad[bad_len++] = 0x06;
                bad[bad_len++] = 0x01;
            } else {
                bad[bad_len++] = how % 2 == 0 ? 0x52 : 0x6a; /* an empty card or redemption */
                bad[bad_len++] = 0x00;
            }
            if (!s_reply_both_ways(bad, bad_len, n_max, &rc)) {
                fprintf(stderr, "    reply %d, damage %d: the two paths differ\n", i, d);
                s_ok = false;
            } else {
                damaged_same++;
            }
        }
    }
    /* Enough of each kind were met: decoded, refused (bytes past ASCII that are not UTF-8),
     * damaged. */
    printf("    %zu decoded (%zu by the fast path), %zu refused, %zu damaged the same\n", good,
           fast_taken, refused, damaged_same);
    CHECK(good > 3500 && fast_taken > 3000 && refused > 500 && damaged_same == 5 * 6000);

    /* Hand-made replies: one field past what its C type or array holds (protobuf-c keeps a
     * count's low 32 bits, the general path refuses a string as long as its array). Both paths
     * must say the same, and the fast one must leave each to the general one. */
    for (int k = 0; k < 8; k++) {
        s_wire_t card = { .n = 0 }, res = { .n = 0 }, rep = { .n = 0 };
        w_uint(&card, 1, 7);
        w_uint(&card, 5, k == 0 ? 0x80000000u : 1);   /* kind */
        w_uint(&card, 11, k == 1 ? 0x100000005u : 5); /* uses_left */
        if (k == 2) {
            w_repeat(&card, 16, 'h', CL_HOLDER_MAX + 1);
        }
        if (k == 3) {
            w_repeat(&rep, 1, 'r', CL_REQUEST_ID_MAX + 1);
        } else {
            w_str(&rep, 1, "r-1");
        }
        w_uint(&rep, 2, k == 4 ? 0xffffffffffffffffu : 1); /* status, a negative int32 */
        if (k < 6) {
            w_msg(&res, 1, &card);
            w_uint(&res, 4, k == 5 ? 0x100000002u : 2); /* uses */
            w_msg(&rep, CL_RES_REDEEMED, &res);
        } else {
            s_wire_t row = { .n = 0 };
            w_str(&row, 1, "k-1");
            w_uint(&row, 5, 3);
            if (k == 6) {
                w_repeat(&row, 6, 'c', CL_CODE_MAX + 1);
            }
            w_uint(&res, 1, 9);
            w_msg(&res, 2, &row);
            w_uint(&res, 3, k == 7 ? 0x200000001u : 1); /* issued */
            w_msg(&rep, CL_RES_BATCH, &res);
        }
        int rc = 0;
        CHECK(s_reply_both_ways(rep.b, rep.n, n_max, &rc));
        if (codec_reply_decode_fast(rep.b, rep.n, &fast, fast_rows, n_max)) {
            fprintf(stderr, "    hand-made reply %d went the fast way\n", k);
            s_ok = false;
        }
    }
}

static void
every_reply_result_round_trips_unchanged(void)
{
    static const cl_result_type_t results[] = { CL_RES_NONE,     CL_RES_CARD,     CL_RES_ISSUED,
                                                CL_RES_BATCH,    CL_RES_REDEEMED, CL_RES_GIFT,
                                                CL_RES_TRANSFER, CL_RES_REQUEST,  CL_RES_STATUS };
    static cl_issued_row_t rows[CL_ISSUE_BATCH_MAX], back_rows[CL_ISSUE_BATCH_MAX];
    static uint8_t buf[1 << 20], stored[4096];
    static cl_reply_t r, back;
    size_t stored_len = 0;
    s_make_reply(CL_RES_REDEEMED, &r, NULL, 0, NULL, 0);
    CHECK_RC(codec_reply_encode(&r, stored, sizeof stored, &stored_len), 0);

    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        uint32_t n_rows = results[i] == CL_RES_BATCH ? CL_ISSUE_BATCH_MAX : 0;
        s_make_reply(results[i], &r, rows, n_rows, stored, stored_len);
        size_t len = 0, size = 0;
        CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), 0);
        CHECK_RC(codec_reply_encoded_size(&r, &size), 0);
        CHECK(size == len);
        memset(&back, 0xee, sizeof back);
        CHECK_RC(codec_reply_decode(buf, len, &back, back_rows, CL_ISSUE_BATCH_MAX), 0);
        if (results[i] == CL_RES_BATCH) {
            printf("    a batch reply of %u full rows: %zu bytes\n", n_rows, len);
            CHECK(back.rows == back_rows && back.rows_count == n_rows);
            CHECK(memcmp(rows, back_rows, n_rows * sizeof rows[0]) == 0);
            r.rows = back_rows;
        }
        if (results[i] == CL_RES_REQUEST) {
            CHECK(back.stored_reply != NULL && back.stored_reply_len == stored_len);
            CHECK(back.stored_reply != NULL && memcmp(back.stored_reply, stored, stored_len) == 0);
            CHECK(back.stored_reply >= buf && back.stored_reply < buf + len);
            r.stored_reply = back.stored_reply;
        }
        if (memcmp(&r, &back, sizeof r) != 0) {
            fprintf(stderr, "    result %d does not round-trip\n", (int)results[i]);
            s_ok = false;
        }
    }

    /* A request that was not found. */
    s_make_reply(CL_RES_REQUEST, &r, NULL, 0, NULL, 0);
    size_t len = 0;
    CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), 0);
    CHECK_RC(codec_reply_decode(buf, len, &back, NULL, 0), 0);
    CHECK(memcmp(&r, &back, sizeof r) == 0);

    /* Too few rows to decode into; a stored reply that is not a reply. */
    s_make_reply(CL_RES_BATCH, &r, rows, 3, NULL, 0);
    CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), 0);
    CHECK_RC(codec_reply_decode(buf, len, &back, back_rows, 2), CODEC_ENOSPC);
    r.rows_count = CL_ISSUE_BATCH_MAX + 1;
    CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), CODEC_ELIMIT);
    s_make_reply(CL_RES_REQUEST, &r, NULL, 0, (const uint8_t *)"\xff\xff", 2);
    CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), CODEC_EMALFORMED);
    s_make_reply(CL_RES_CARD, &r, NULL, 0, NULL, 0);
    size_t untouched = 99;
    CHECK_RC(codec_reply_encode(&r, buf, 10, &untouched), CODEC_ENOSPC);
    CHECK(untouched == 99);
    r.result = (cl_result_type_t)99;
    CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), CODEC_EINVAL);
}

/* Unpacks a reply with protobuf-c and packs it again: the bytes must be the same. */
static bool
s_repacks_the_same(const uint8_t *buf, size_t len)
{
    static uint8_t again[1 << 20];
    Cardledger__V1__Reply *m = cardledger__v1__reply__unpack(NULL, len, buf);
    if (m == NULL) {
        return false;
    }
    size_t size = protobuf_c_message_get_packed_size(&m->base);
    bool same = size == len && protobuf_c_message_pack(&m->base, again) == len &&
                memcmp(buf, again, len) == 0;
    cardledger__v1__reply__free_unpacked(m, NULL);
    return same;
}

/*
 * Replies are written by hand (proto/codec-reply.c): for every result, filled, all zero and with
 * negative numbers, the bytes are exactly what protobuf-c's own pack writes.
 */
static void
hand_written_replies_are_the_bytes_protobuf_c_writes(void)
{
    static const cl_result_type_t results[] = { CL_RES_NONE,     CL_RES_CARD,     CL_RES_ISSUED,
                                                CL_RES_BATCH,    CL_RES_REDEEMED, CL_RES_GIFT,
                                                CL_RES_TRANSFER, CL_RES_REQUEST,  CL_RES_STATUS };
    static cl_issued_row_t rows[8];
    static uint8_t buf[1 << 16], stored[4096];
    static cl_reply_t r;
    size_t stored_len = 0;
    s_make_reply(CL_RES_REDEEMED, &r, NULL, 0, NULL, 0);
    CHECK_RC(codec_reply_encode(&r, stored, sizeof stored, &stored_len), 0);
    for (int variant = 0; variant < 3; variant++) {
        for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
            s_make_reply(results[i], &r, rows, 8, stored, stored_len);
            if (variant == 1) { /* all zero: proto3 leaves every field out */
                memset(&r, 0, sizeof r);
                memset(rows, 0, sizeof rows);
                r.result = results[i];
                r.rows = rows;
                r.rows_count = results[i] == CL_RES_BATCH ? 8 : 0;
            } else if (variant == 2) { /* negative int64s take ten bytes, big uint32s five */
                r.card.balance_minor = -1;
                r.card.uses_left = UINT32_MAX;
                r.uses = UINT32_MAX;
                r.card.redeemed_minor = INT64_MIN;
                r.card2.expires_at_us = -12345;
                r.amount_minor = -7;
                r.discount_minor = -1;
                r.offer_expires_at_us = -2;
                r.status_now_us = -3;
            }
            size_t len = 0;
            CHECK_RC(codec_reply_encode(&r, buf, sizeof buf, &len), 0);
            if (!s_repacks_the_same(buf, len)) {
                fprintf(stderr, "    result %d (variant %d): bytes differ from protobuf-c's\n",
                        (int)results[i], variant);
                s_ok = false;
            }
        }
    }
}

static void
a_replayed_reply_reads_replayed_and_otherwise_identical(void)
{
    static uint8_t reply[4096], batch[16384];
    static cl_reply_t r, first, second, third;
    size_t reply_len = 0, batch_len = 0;
    s_make_reply(CL_RES_REDEEMED, &r, NULL, 0, NULL, 0);
    CHECK_RC(codec_reply_encode(&r, reply, sizeof reply, &reply_len), 0);
    CHECK_RC(codec_reply_batch_append(batch, sizeof batch, &batch_len, reply, reply_len, false), 0);
    CHECK_RC(codec_reply_batch_append(batch, sizeof batch, &batch_len, reply, reply_len, true), 0);
    r.replayed = true; /* a reply stored with the flag already set stays replayed */
    CHECK_RC(codec_reply_encode(&r, reply, sizeof reply, &reply_len), 0);
    CHECK_RC(codec_reply_batch_append(batch, sizeof batch, &batch_len, reply, reply_len, true), 0);

    size_t off = 0, len = 0;
    const uint8_t *p = NULL;
    CHECK_RC(codec_reply_batch_next(batch, batch_len, &off, &p, &len), 0);
    CHECK_RC(codec_reply_decode(p, len, &first, NULL, 0), 0);
    CHECK_RC(codec_reply_batch_next(batch, batch_len, &off, &p, &len), 0);
    CHECK_RC(codec_reply_decode(p, len, &second, NULL, 0), 0);
    CHECK_RC(codec_reply_batch_next(batch, batch_len, &off, &p, &len), 0);
    CHECK_RC(codec_reply_decode(p, len, &third, NULL, 0), 0);
    CHECK_RC(codec_reply_batch_next(batch, batch_len, &off, &p, &len), CODEC_EEND);
    CHECK(off == batch_len);

    CHECK(!first.replayed);
    CHECK(second.replayed);
    CHECK(third.replayed);
    second.replayed = false;
    third.replayed = false;
    CHECK(memcmp(&first, &second, sizeof first) == 0);
    CHECK(memcmp(&first, &third, sizeof first) == 0);

    size_t full = batch_len;
    CHECK_RC(codec_reply_batch_append(batch, full + 3, &batch_len, reply, reply_len, true),
             CODEC_ENOSPC);
    CHECK(batch_len == full);
    off = 0;
    CHECK_RC(codec_reply_batch_next("\x0a\x09", 2, &off, &p, &len), CODEC_EMALFORMED);
    off = 0;
    CHECK_RC(codec_reply_batch_next("", 0, &off, &p, &len), CODEC_EEND);
}

/* ---- Names and masking -------------------------------------------------------------------- */

static void
card_codes_are_masked_but_for_their_last_four(void)
{
    char out[CL_CODE_MAX + 8];
    cl_code_mask("ABCD2345EFGH4821", out, sizeof out);
    CHECK_STR(out, "****-****-****-4821");
    cl_code_mask("A2345EFGH4821", out, sizeof out);
    CHECK_STR(out, "*-****-****-4821");
    cl_code_mask("12345", out, sizeof out);
    CHECK_STR(out, "*-2345");
    cl_code_mask("1234", out, sizeof out);
    CHECK_STR(out, "****");
    cl_code_mask("12", out, sizeof out);
    CHECK_STR(out, "**");
    cl_code_mask("", out, sizeof out);
    CHECK_STR(out, "");
    cl_code_mask(NULL, out, sizeof out);
    CHECK_STR(out, "");
    cl_code_mask("SECRET\xe7\xa4\xbc", out, sizeof out); /* never half a UTF-8 character */
    CHECK_STR(out, "*-****-T***");
    char code[CL_CODE_MAX + 1];
    memset(code, 'Z', CL_CODE_MAX);
    memcpy(code + CL_CODE_MAX - 4, "9876", 4);
    code[CL_CODE_MAX] = '\0';
    cl_code_mask(code, out, sizeof out);
    CHECK_STR(out, "****-****-****-****-****-****-****-9876");
    CHECK(strlen(out) == sizeof out - 1);
    char small[8];
    cl_code_mask("ABCD2345EFGH4821", small, sizeof small);
    CHECK_STR(small, "****-**");
    cl_code_mask("ABCD2345EFGH4821", small, 0); /* no room at all: nothing written */
}

static void
every_status_has_a_stable_name_and_a_sentence(void)
{
    static const struct {
        cl_status_t status;
        const char *name;
    } known[] = {
        { CL_OK, "ok" },
        { CL_MALFORMED, "malformed" },
        { CL_TOO_LARGE, "too_large" },
        { CL_UNKNOWN_COMMAND, "unknown_command" },
        { CL_INVALID_ARGUMENT, "invalid_argument" },
        { CL_REQUEST_ID_REUSED, "request_id_reused" },
        { CL_WRONG_SERVICE, "wrong_service" },
        { CL_UNKNOWN_MERCHANT, "unknown_merchant" },
        { CL_UNKNOWN_STORE, "unknown_store" },
        { CL_UNKNOWN_PROGRAM, "unknown_program" },
        { CL_UNKNOWN_CARD, "unknown_card" },
        { CL_WRONG_MERCHANT, "wrong_merchant" },
        { CL_STORE_NOT_ACCEPTING, "store_not_accepting" },
        { CL_ALREADY_EXISTS, "already_exists" },
        { CL_UNKNOWN_REDEMPTION, "unknown_redemption" },
        { CL_UNKNOWN_OFFER, "unknown_offer" },
        { CL_AMOUNT_INVALID, "amount_invalid" },
        { CL_AMOUNT_ABOVE_LIMIT, "amount_above_limit" },
        { CL_OVERFLOW, "overflow" },
        { CL_DENOMINATION_INVALID, "denomination_invalid" },
        { CL_CURRENCY_MISMATCH, "currency_mismatch" },
        { CL_CARD_FROZEN, "card_frozen" },
        { CL_CARD_LOCKED, "card_locked" },
        { CL_CARD_EXPIRED, "card_expired" },
        { CL_CARD_CLOSED, "card_closed" },
        { CL_INSUFFICIENT_BALANCE, "insufficient_balance" },
        { CL_NOT_TRANSFERABLE, "not_transferable" },
        { CL_NOT_RELOADABLE, "not_reloadable" },
        { CL_MAX_BALANCE_EXCEEDED, "max_balance_exceeded" },
        { CL_PIN_REQUIRED, "pin_required" },
        { CL_PIN_WRONG, "pin_wrong" },
        { CL_GIFT_PENDING, "gift_pending" },
        { CL_NOT_YET_VALID, "not_yet_valid" },
        { CL_THRESHOLD_NOT_MET, "threshold_not_met" },
        { CL_ITEM_NOT_ELIGIBLE, "item_not_eligible" },
        { CL_REVERSAL_EXCEEDS, "reversal_exceeds" },
        { CL_WRONG_KIND, "wrong_kind" },
        { CL_STATE_CONFLICT, "state_conflict" },
        { CL_PROGRAM_CLOSED, "program_closed" },
        { CL_STOCK_EXHAUSTED, "stock_exhausted" },
        { CL_HOLDER_LIMIT_REACHED, "holder_limit_reached" },
        { CL_UNAUTHENTICATED, "unauthenticated" },
        { CL_PERMISSION_DENIED, "permission_denied" },
        { CL_RATE_LIMITED, "rate_limited" },
        { CL_UNAVAILABLE, "unavailable" },
        { CL_INTERNAL, "internal" },
        { CL_STORAGE_FULL, "storage_full" },
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        CHECK_STR(cl_status_name(known[i].status), known[i].name);
        const char *sentence = cl_status_sentence(known[i].status);
        CHECK(sentence != NULL && strlen(sentence) > 3 && strlen(sentence) <= CL_MESSAGE_MAX);
        CHECK(sentence != NULL && sentence[strlen(sentence) - 1] == '.');
    }
    CHECK_STR(cl_status_name((cl_status_t)0), "unknown");
    CHECK_STR(cl_status_name((cl_status_t)999), "unknown");
    CHECK(cl_status_sentence((cl_status_t)999) != NULL);

    CHECK_STR(cl_event_name(CL_EV_CARD_REDEEMED), "CardRedeemed");
    CHECK_STR(cl_event_name(CL_EV_CLOCK_ADVANCED), "ClockAdvanced");
    CHECK_STR(cl_event_name((cl_event_type_t)99), "unknown");
    for (size_t i = 0; i < S_EVENT_TYPES; i++) {
        CHECK(strcmp(cl_event_name(s_event_types[i]), "unknown") != 0);
    }
    CHECK_STR(codec_strerror(CODEC_ETOOLARGE), "the frame or batch is over its named limit");
    for (int err = CODEC_EINVAL; err >= CODEC_EEND; err--) {
        CHECK(strcmp(codec_strerror(err), "unknown codec error") != 0);
    }
    CHECK_STR(codec_strerror(-1), "unknown codec error");
}

/* Content hashes are stored with every idempotency record: a new build must compute the very
 * same hash for the same request, or a retry after an upgrade would be refused as a reused id.
 * These values were computed by this build (protobuf-c's pack_to_buffer streamed into XXH3-128);
 * a faster way to the hash must give the same. */
static void
content_hashes_stay_what_earlier_builds_stored(void)
{
    s_wire_t req[4];
    memset(req, 0, sizeof req);
    s_wire_t card = { .n = 0 }, redeem = { .n = 0 };
    w_uint(&card, 2, 123456789);
    w_msg(&redeem, 1, &card);
    w_str(&redeem, 3, "s1");
    w_str(&redeem, 4, "POS-1002");
    w_uint(&redeem, 5, 1250);
    w_str(&req[0], 1, "aaaaaaaaaabbbbbbbbbbcccccc");
    w_msg(&req[0], CL_CMD_REDEEM, &redeem);
    /* An unknown field inside the command counts. */
    s_wire_t redeem_x = redeem;
    w_uint(&redeem_x, 99, 7);
    w_str(&req[1], 1, "r-2");
    w_msg(&req[1], CL_CMD_REDEEM, &redeem_x);
    /* A batch issue with repeated rows. */
    s_wire_t batch = { .n = 0 };
    w_str(&batch, 1, "bakery");
    w_str(&batch, 2, "gift200");
    w_str(&batch, 3, "csv:1");
    for (int k = 0; k < 3; k++) {
        s_wire_t row = { .n = 0 };
        char key[8];
        snprintf(key, sizeof key, "E-%03d", k);
        w_str(&row, 3, "crm-1");
        w_uint(&row, 7, 10000 + (uint64_t)k);
        w_str(&row, 12, key);
        w_msg(&batch, 4, &row);
    }
    w_str(&req[2], 1, "ib-x");
    w_msg(&req[2], CL_CMD_ISSUE_BATCH, &batch);
    /* A query with an empty body. */
    w_str(&req[3], 1, "q");
    w_bytes(&req[3], CL_CMD_GET_STATUS, "", 0);
    static const char *const want[4] = {
        "abe5670117c7b629e365c84dd1e78860",
        "b6b3053a13493b5c9304361cdebc3267",
        "ab3d039d696e73760d701d0acec6b061",
        "c4eacb61b7573f8a8e023412c3399274",
    };
    codec_batch_t *b = s_batch();
    for (int k = 0; k < 4; k++) {
        const codec_request_t *r = s_decode_one(b, &req[k]);
        CHECK(r != NULL && r->status == CL_OK);
        if (r == NULL)
            continue;
        char hex[33];
        for (int j = 0; j < 16; j++)
            snprintf(hex + 2 * j, 3, "%02x", r->content_hash[j]);
        CHECK_STR(hex, want[k]);
    }
    codec_batch_destroy(&b);
}

/* Decodes frame both ways (the fast path for batch issues allowed, then not) and checks that
 * the two decodes agree on everything: count, status, sentence, command, rows and content hash.
 * Returns how many requests the frame held. */
static size_t
s_decode_both_ways(codec_batch_t *b, const uint8_t *frame, size_t len)
{
    static codec_request_t fast[CL_BATCH_REQUESTS_MAX];
    static cl_cmd_issue_card_t fast_rows[CODEC_BATCH_ROWS_MAX];
    codec_batch_fast_path(b, true);
    int rc = codec_batch_decode(b, frame, len);
    size_t n = codec_batch_count(b);
    size_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        const codec_request_t *r = codec_batch_request(b, i);
        fast[i] = *r;
        if (r->cmd.batch_rows != NULL) {
            memcpy(fast_rows + rows, r->cmd.batch_rows,
                   r->cmd.u.issue_batch.rows_count * sizeof fast_rows[0]);
            rows += r->cmd.u.issue_batch.rows_count;
        }
    }
    codec_batch_fast_path(b, false);
    CHECK_RC(codec_batch_decode(b, frame, len), rc);
    CHECK(codec_batch_count(b) == n);
    rows = 0;
    for (size_t i = 0; i < n && i < codec_batch_count(b); i++) {
        const codec_request_t *r = codec_batch_request(b, i);
        CHECK(r->status == fast[i].status);
        CHECK_STR(r->message, fast[i].message);
        CHECK(memcmp(r->content_hash, fast[i].content_hash, 16) == 0);
        CHECK(memcmp(&r->cmd, &fast[i].cmd, sizeof r->cmd) == 0);
        if (r->cmd.batch_rows != NULL) {
            size_t k = r->cmd.u.issue_batch.rows_count;
            CHECK(memcmp(r->cmd.batch_rows, fast_rows + rows, k * sizeof fast_rows[0]) == 0);
            rows += k;
        }
    }
    codec_batch_fast_path(b, true);
    return n;
}

/* One hand-made IssueBatch request: a row with the given extra bytes, between two plain ones. */
static void
s_batch_request(s_wire_t *req, const s_wire_t *odd_row, const char *request_id)
{
    s_wire_t batch = { .n = 0 };
    w_str(&batch, 1, "bakery");
    w_str(&batch, 2, "gift200");
    w_str(&batch, 3, "csv:1");
    for (int k = 0; k < 3; k++) {
        s_wire_t row = { .n = 0 };
        if (k == 1 && odd_row != NULL) {
            row = *odd_row;
        } else {
            char key[16];
            snprintf(key, sizeof key, "E-%03d", k);
            w_str(&row, 3, "crm-1");
            w_uint(&row, 4, CL_CHANNEL_ENTERPRISE);
            w_uint(&row, 7, 10000 + (uint64_t)k);
            w_str(&row, 12, key);
        }
        w_msg(&batch, 4, &row);
    }
    req->n = 0;
    w_str(req, 1, request_id);
    w_msg(req, CL_CMD_ISSUE_BATCH, &batch);
}

/* Redeems, like batch issues, are read straight from the wire when packed as protobuf-c packs
 * them; every other layout and every refusal takes the general path, and the decode is the same
 * either way: the command, the refusal and its sentence, the content hash. */
static void
redeems_decode_the_same_by_the_fast_path_and_the_general_one(void)
{
    static uint8_t frame[CL_FRAME_MAX_BYTES];
    codec_batch_t *b = s_batch();
    size_t len = 0;

    /* As libcardledger packs them: by code and by card id, every field set, a negative amount. */
    {
        static uint8_t bufs[4][4096];
        const uint8_t *reqs[4];
        size_t lens[4];
        for (size_t i = 0; i < 4; i++) {
            cl_command_t cmd;
            s_make_command(CL_CMD_REDEEM, &cmd, NULL, 0);
            if (i == 2) {
                cmd.u.redeem.amount_minor = -1;
                cmd.u.redeem.uses = UINT32_MAX;
            }
            CHECK_RC(codec_request_encode(&cmd, bufs[i], sizeof bufs[i], &lens[i]), 0);
            reqs[i] = bufs[i];
        }
        CHECK_RC(codec_request_batch_frame(reqs, lens, 4, frame, sizeof frame, &len), 0);
        CHECK(s_decode_both_ways(b, frame, len) == 4);
    }

    /* Hand-made Redeem bodies. */
    enum { ODD_MAX = 32 };
    s_wire_t odd[ODD_MAX], ref;
    size_t n_odd = 0;
#define ODD (odd[n_odd].n = 0, &odd[n_odd++])
    s_wire_t *w;
    w = ODD; /* by card id, plain */
    ref.n = 0;
    w_uint(&ref, 2, 42);
    w_msg(w, 1, &ref);
    w_str(w, 3, "s1");
    w_uint(w, 5, 100);
    w = ODD; /* by code, every field */
    ref.n = 0;
    w_str(&ref, 1, "ABCD2345EFGH");
    w_msg(w, 1, &ref);
    w_str(w, 2, "123456");
    w_str(w, 3, "s1");
    w_str(w, 4, "POS-1");
    w_uint(w, 5, (uint64_t)-5);
    w_uint(w, 6, 3);
    w_uint(w, 7, 20000);
    w_str(w, 8, "sku-1");
    w = ODD; /* a card ref with both a code and an id (the last one wins) */
    ref.n = 0;
    w_str(&ref, 1, "ABCD2345EFGH");
    w_uint(&ref, 2, 42);
    w_msg(w, 1, &ref);
    w = ODD; /* a card id of 0 written out, an empty code, an empty card ref */
    ref.n = 0;
    w_uint(&ref, 2, 0);
    w_msg(w, 1, &ref);
    w = ODD;
    ref.n = 0;
    w_str(&ref, 1, "");
    w_msg(w, 1, &ref);
    w = ODD;
    ref.n = 0;
    w_msg(w, 1, &ref);
    w = ODD; /* a code over its limit */
    ref.n = 0;
    w_repeat(&ref, 1, 'C', CL_CODE_MAX + 1);
    w_msg(w, 1, &ref);
    w = ODD; /* uses over 32 bits, a zero written out */
    w_uint(w, 6, UINT64_C(1) << 32);
    w = ODD;
    w_uint(w, 5, 0);
    w = ODD; /* out of order, the same field twice, an unknown field */
    w_str(w, 4, "o");
    w_str(w, 3, "s");
    w = ODD;
    w_str(w, 3, "s");
    w_str(w, 3, "t");
    w = ODD;
    w_str(w, 3, "s");
    w_uint(w, 99, 1);
    w = ODD; /* a store id over its limit, invalid UTF-8, a NUL */
    w_repeat(w, 3, 's', CL_ID_MAX + 1);
    w = ODD;
    w_bytes(w, 4, "\xff", 1);
    w = ODD;
    w_bytes(w, 8, "a\0b", 3);
    w = ODD; /* a varint longer than it needs to be */
    w->b[w->n++] = 5 << 3;
    w->b[w->n++] = 0x81;
    w->b[w->n++] = 0x00;
    w = ODD; /* an empty Redeem */
#undef ODD
    assert(n_odd <= ODD_MAX);
    for (size_t i = 0; i < n_odd; i++) {
        s_wire_t req = { .n = 0 };
        w_str(&req, 1, "rd-odd");
        w_msg(&req, CL_CMD_REDEEM, &odd[i]);
        const uint8_t *reqs[1] = { req.b };
        size_t lens[1] = { req.n };
        CHECK_RC(codec_request_batch_frame(reqs, lens, 1, frame, sizeof frame, &len), 0);
        CHECK(s_decode_both_ways(b, frame, len) == 1);
    }
    codec_batch_destroy(&b);
}

/* A batch issue packed as protobuf-c packs it is read straight from the wire; anything else is
 * left to the general path. Either way the decode must be the very same: the same rows, the same
 * refusal with the same sentence, and the same content hash, so that a retry of a request
 * decoded one way is recognised when it is decoded the other. */
static void
batch_issues_decode_the_same_by_the_fast_path_and_the_general_one(void)
{
    static uint8_t frame[CL_FRAME_MAX_BYTES];
    static cl_cmd_issue_card_t rows[CL_ISSUE_BATCH_MAX + 1];
    codec_batch_t *b = s_batch();
    size_t len = 0;

    /* As libcardledger packs them: every field set, strings at their limits, negative amounts
     * (the longest varints), and five full batches in one frame (the fifth over the pool). */
    {
        static uint8_t bufs[5][1 << 20];
        const uint8_t *reqs[5];
        size_t lens[5];
        for (size_t i = 0; i < 5; i++) {
            cl_command_t cmd;
            s_make_command(CL_CMD_ISSUE_BATCH, &cmd, rows, CL_ISSUE_BATCH_MAX);
            rows[7].paid_nothing = false;
            rows[8].channel = CL_CHANNEL_NONE;
            rows[9].face_value_minor = 0;
            rows[10].holder[0] = '\0';
            rows[11].price_paid_minor = 1;
            CHECK_RC(codec_request_encode(&cmd, bufs[i], sizeof bufs[i], &lens[i]), 0);
            reqs[i] = bufs[i];
        }
        CHECK_RC(codec_request_batch_frame(reqs, lens, 5, frame, sizeof frame, &len), 0);
        CHECK(s_decode_both_ways(b, frame, len) == 5);
        CHECK(codec_batch_count(b) == 5 && codec_batch_request(b, 3)->status == CL_OK &&
              codec_batch_request(b, 4)->status == CL_TOO_LARGE);
    }

    /* Hand-made rows, each in a request of its own between two plain rows. */
    enum { ODD_MAX = 32 };
    s_wire_t odd[ODD_MAX];
    size_t n_odd = 0;
#define ODD (odd[n_odd].n = 0, &odd[n_odd++])
    s_wire_t *w;
    w = ODD; /* plain */
    w_str(w, 12, "plain");
    w = ODD; /* every field, in order */
    w_str(w, 1, "m");
    w_str(w, 2, "p");
    w_str(w, 3, "h");
    w_uint(w, 4, CL_CHANNEL_PLATFORM);
    w_str(w, 5, "s");
    w_str(w, 6, "310000");
    w_uint(w, 7, (uint64_t)-5);
    w_uint(w, 8, 7);
    w_uint(w, 9, 1);
    w_str(w, 10, "CODE12345678");
    w_str(w, 11, "123456");
    w_str(w, 12, "all");
    w = ODD; /* out of order */
    w_str(w, 12, "late");
    w_str(w, 3, "h");
    w = ODD; /* a zero written out */
    w_uint(w, 7, 0);
    w_str(w, 12, "zero");
    w = ODD; /* an empty string written out */
    w_str(w, 3, "");
    w_str(w, 12, "empty");
    w = ODD; /* a bool written as 2 */
    w_uint(w, 9, 2);
    w_str(w, 12, "bool2");
    w = ODD; /* channel none written out, an unknown channel, a negative one */
    w_uint(w, 4, 0);
    w_str(w, 12, "ch0");
    w = ODD;
    w_uint(w, 4, 9);
    w_str(w, 12, "ch9");
    w = ODD;
    w_uint(w, 4, (uint64_t)-1);
    w_str(w, 12, "chneg");
    w = ODD; /* a string one byte over its limit, at its limit */
    w_repeat(w, 12, 'k', CL_ID_MAX + 1);
    w = ODD;
    w_repeat(w, 12, 'k', CL_ID_MAX);
    w = ODD; /* a NUL, invalid UTF-8, valid UTF-8 */
    w_bytes(w, 3, "a\0b", 3);
    w_str(w, 12, "nul");
    w = ODD;
    w_bytes(w, 3, "\xff\xfe", 2);
    w_str(w, 12, "utf8bad");
    w = ODD;
    w_str(w, 3, "\xe6\x98\xa5");
    w_str(w, 12, "utf8");
    w = ODD; /* an unknown field */
    w_str(w, 12, "unknown");
    w_uint(w, 99, 1);
    w = ODD; /* the same field twice */
    w_str(w, 12, "twice-a");
    w_str(w, 12, "twice-b");
    w = ODD; /* a varint longer than it needs to be */
    w_str(w, 12, "longvarint");
    w->b[w->n++] = 7 << 3;
    w->b[w->n++] = 0x85;
    w->b[w->n++] = 0x00;
    w = ODD; /* a tag written longer than it needs to be */
    w->b[w->n++] = (uint8_t)(12 << 3 | 2) | 0x80;
    w->b[w->n++] = 0x00;
    w->b[w->n++] = 3;
    memcpy(w->b + w->n, "tag", 3);
    w->n += 3;
    w = ODD; /* a negative amount (ten bytes) */
    w_uint(w, 8, (uint64_t)INT64_MIN);
    w_str(w, 12, "neg");
    w = ODD; /* a fixed-width value where a varint belongs: the whole frame is malformed */
    w_str(w, 12, "fixed");
    w_varint(w, 7 << 3 | 1);
    memset(w->b + w->n, 1, 8);
    w->n += 8;
#undef ODD
    assert(n_odd <= ODD_MAX);
    for (size_t i = 0; i < n_odd; i++) {
        s_wire_t req;
        s_batch_request(&req, &odd[i], "ib-odd");
        const uint8_t *reqs[1] = { req.b };
        size_t lens[1] = { req.n };
        CHECK_RC(codec_request_batch_frame(reqs, lens, 1, frame, sizeof frame, &len), 0);
        CHECK(s_decode_both_ways(b, frame, len) == (i + 1 < n_odd ? 1u : 0u));
    }

    /* A varint over 64 bits: the frame is malformed, whichever path reads it. */
    {
        s_wire_t bad = { .n = 0 }, req = { .n = 0 };
        w_str(&bad, 12, "over64");
        bad.b[bad.n++] = 7 << 3;
        for (int k = 0; k < 10; k++)
            bad.b[bad.n++] = 0xff;
        bad.b[bad.n++] = 0x01;
        s_batch_request(&req, &bad, "ib-bad");
        const uint8_t *reqs[1] = { req.b };
        size_t lens[1] = { req.n };
        CHECK_RC(codec_request_batch_frame(reqs, lens, 1, frame, sizeof frame, &len), 0);
        CHECK(s_decode_both_ways(b, frame, len) == 0);
    }

    /* The request around the batch: the id after the command, an unknown field, an empty id,
     * an id over its limit, a batch field twice, rows split by another field, no rows. */
    s_wire_t batch = { .n = 0 }, req = { .n = 0 }, row = { .n = 0 };
    w_str(&row, 12, "r1");
    w_str(&batch, 1, "bakery");
    w_msg(&batch, 4, &row);
    s_wire_t variants[8];
    size_t n_var = 0;
    w = &variants[n_var++];
    w->n = 0;
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch);
    w_str(w, 1, "id-after");
    w = &variants[n_var++];
    w->n = 0;
    w_str(w, 1, "id");
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch);
    w_uint(w, 7, 1);
    w = &variants[n_var++];
    w->n = 0;
    w_str(w, 1, "");
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch);
    w = &variants[n_var++];
    w->n = 0;
    w_repeat(w, 1, 'i', CL_REQUEST_ID_MAX + 1);
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch);
    w = &variants[n_var++];
    w->n = 0;
    w_repeat(w, 1, 'i', CL_REQUEST_ID_MAX);
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch);
    s_wire_t batch2 = batch;
    w_str(&batch2, 1, "again");
    w = &variants[n_var++];
    w->n = 0;
    w_str(w, 1, "id");
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch2);
    s_wire_t batch3 = batch;
    w_str(&batch3, 3, "ref");
    w_msg(&batch3, 4, &row);
    w = &variants[n_var++];
    w->n = 0;
    w_str(w, 1, "id");
    w_msg(w, CL_CMD_ISSUE_BATCH, &batch3);
    s_wire_t empty = { .n = 0 };
    w_str(&empty, 1, "bakery");
    w = &variants[n_var++];
    w->n = 0;
    w_str(w, 1, "id");
    w_msg(w, CL_CMD_ISSUE_BATCH, &empty);
    for (size_t i = 0; i < n_var; i++) {
        const uint8_t *reqs[1] = { variants[i].b };
        size_t lens[1] = { variants[i].n };
        CHECK_RC(codec_request_batch_frame(reqs, lens, 1, frame, sizeof frame, &len), 0);
        CHECK(s_decode_both_ways(b, frame, len) == 1);
    }
    (void)req;

    /* The same rows out of order hash as the rows in order: the same request either way. */
    s_wire_t in_order = { .n = 0 }, shuffled = { .n = 0 }, r1 = { .n = 0 }, r2 = { .n = 0 };
    w_str(&r1, 3, "h");
    w_str(&r1, 12, "k");
    w_str(&r2, 12, "k");
    w_str(&r2, 3, "h");
    s_batch_request(&in_order, &r1, "ib-same");
    s_batch_request(&shuffled, &r2, "ib-same");
    uint8_t h1[16];
    const codec_request_t *r = s_decode_one(b, &in_order);
    CHECK(r != NULL && r->status == CL_OK);
    if (r != NULL) {
        memcpy(h1, r->content_hash, 16);
        r = s_decode_one(b, &shuffled);
        CHECK(r != NULL && r->status == CL_OK && memcmp(h1, r->content_hash, 16) == 0);
    }
    codec_batch_destroy(&b);
}

/* Field paths in refusal sentences are built without snprintf on the hot path: they must read
 * exactly as snprintf would have written them, also when cut at the buffer's end. */
static void
field_paths_read_as_snprintf_would_write_them(void)
{
    static const char *const names[] = { "", "redeem", "issue_batch", "cards", "x" };
    static const long indexes[] = { -1, 0, 7, 10, 999, 123456789 };
    for (size_t cap = 1; cap <= 40; cap++) {
        for (size_t len = 0; len < cap && len <= 24; len++) {
            for (size_t ni = 0; ni < sizeof(names) / sizeof(names[0]); ni++) {
                for (size_t ii = 0; ii < sizeof(indexes) / sizeof(indexes[0]); ii++) {
                    char want[64], got[64];
                    memset(want, 'p', len);
                    memset(got, 'p', len);
                    want[len] = got[len] = '\0';
                    size_t room = cap - len;
                    const char *dot = len > 0 ? "." : "";
                    int n = indexes[ii] >= 0 ? snprintf(want + len, room, "%s%s[%ld]", dot,
                                                        names[ni], indexes[ii])
                                             : snprintf(want + len, room, "%s%s", dot, names[ni]);
                    size_t want_len = (size_t)n >= room ? cap - 1 : len + (size_t)n;
                    size_t got_len = codec_path_append(got, cap, len, names[ni], indexes[ii]);
                    CHECK(got_len == want_len);
                    CHECK_STR(got, want);
                }
            }
        }
    }
}

int
main(void)
{
    RUN(every_event_type_round_trips_unchanged);
    RUN(event_fast_decode_gives_the_bytes_of_the_full_decode);
    RUN(card_issued_with_and_without_code_hash_decodes_by_the_fast_path);
    RUN(export_masks_codes_and_drops_secrets_and_keeps_everything_else);
    RUN(event_without_actor_round_trips_and_leaves_the_actor_out);
    RUN(event_encoding_is_protobuf_cs_own_byte_for_byte);
    RUN(redeemed_and_issued_encode_straight_as_protobuf_c_does);
    RUN(issue_batch_requests_encode_as_protobuf_c_packs_them);
    RUN(replies_decode_the_same_by_the_fast_path);
    RUN(card_redeemed_with_short_ids_encodes_well_under_70_bytes);
    RUN(base32_request_ids_are_stored_as_their_bytes_and_read_back_as_the_same_text);
    RUN(an_entry_written_before_request_id_b32_decodes_to_the_same_id);
    RUN(packed_request_ids_of_every_length_read_as_plain_base32);
    RUN(a_redemption_written_with_its_region_decodes_to_the_same_event);
    RUN(request_id_b32_is_refused_when_too_long_or_beside_a_text_id);
    RUN(largest_events_fit_their_named_bounds);
    RUN(event_decode_refuses_what_it_cannot_hold);
    RUN(event_json_masks_the_code_and_never_shows_the_pin_hash);
    RUN(event_json_writes_every_type);
    RUN(every_command_type_round_trips_through_a_request);
    RUN(projector_queries_decode_to_their_type_without_payload);
    RUN(over_limit_string_is_refused_naming_the_field);
    RUN(a_request_larger_than_the_unpack_arena_still_decodes);
    RUN(over_limit_list_is_refused_before_unpacking);
    RUN(issue_batch_rows_beyond_the_frame_pool_are_refused);
    RUN(garbage_bytes_are_malformed);
    RUN(more_than_the_batch_limit_of_requests_is_too_large);
    RUN(a_bad_request_does_not_spoil_the_good_ones_in_its_batch);
    RUN(request_ids_must_be_present_and_within_their_limit);
    RUN(unknown_enum_value_is_invalid_argument);
    RUN(embedded_nul_and_invalid_utf8_are_invalid_argument);
    RUN(same_content_gives_the_same_hash_and_one_changed_field_a_different_one);
    RUN(request_encoders_refuse_small_buffers_and_leave_out_len_alone);
    RUN(every_reply_result_round_trips_unchanged);
    RUN(hand_written_replies_are_the_bytes_protobuf_c_writes);
    RUN(a_replayed_reply_reads_replayed_and_otherwise_identical);
    RUN(card_codes_are_masked_but_for_their_last_four);
    RUN(every_status_has_a_stable_name_and_a_sentence);
    RUN(field_paths_read_as_snprintf_would_write_them);
    RUN(content_hashes_stay_what_earlier_builds_stored);
    RUN(batch_issues_decode_the_same_by_the_fast_path_and_the_general_one);
    RUN(redeems_decode_the_same_by_the_fast_path_and_the_general_one);
    printf("%d passed, %d failed\n", s_passed, s_failed);
    return s_failed == 0 ? 0 : 1;
}
