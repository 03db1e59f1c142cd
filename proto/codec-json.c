/*
 * Events as JSON, for the journal tool's dump and for logs.
 *
 * One object per event, the fields by their proto names, so a dump reads like the contract.
 * Two things never leave: a card's full code (PRODUCT.md section 8: logs and exports show codes
 * masked) and the keyed hashes of PINs and claim secrets. The writer works in the caller's
 * buffer and allocates nothing; it is not on a hot path, so it favours plainness.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "codec-private.h"

typedef struct s_json {
    char *buf;
    size_t cap; /* including room for the NUL */
    size_t len;
    bool full;  /* something did not fit */
    bool comma; /* the next member or element needs a comma first */
} s_json_t;

static void
s_raw(s_json_t *j, const char *s, size_t n)
{
    if (j->full || n >= j->cap - j->len) {
        j->full = true;
        return;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

static void
s_lit(s_json_t *j, const char *s)
{
    s_raw(j, s, strlen(s));
}

static void
s_sep(s_json_t *j)
{
    if (j->comma) {
        s_raw(j, ",", 1);
    }
    j->comma = true;
}

static void
s_key(s_json_t *j, const char *key)
{
    s_sep(j);
    s_raw(j, "\"", 1);
    s_lit(j, key);
    s_raw(j, "\":", 2);
}

/* A JSON string of the n bytes at s: escapes for quotes, backslashes and control characters,
 * valid UTF-8 as it is, and U+FFFD for each byte that is not part of valid UTF-8. */
static void
s_escaped(s_json_t *j, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    s_raw(j, "\"", 1);
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            s_raw(j, tmp, 2);
            i++;
        } else if (c == '\n') {
            s_raw(j, "\\n", 2);
            i++;
        } else if (c == '\t') {
            s_raw(j, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)c);
            s_raw(j, tmp, 6);
            i++;
        } else if (c < 0x80) {
            s_raw(j, (const char *)&p[i], 1);
            i++;
        } else {
            size_t len = codec_utf8_seq(p + i, n - i);
            if (len == 0) {
                s_raw(j, "\\ufffd", 6);
                i++;
            } else {
                s_raw(j, (const char *)&p[i], len);
                i += len;
            }
        }
    }
    s_raw(j, "\"", 1);
}

/* A string member from a fixed array (read no further than the array). */
static void
s_str(s_json_t *j, const char *key, const char *array, size_t cap)
{
    const char *nul = memchr(array, '\0', cap);
    s_key(j, key);
    s_escaped(j, array, nul != NULL ? (size_t)(nul - array) : cap);
}
#define S_STR(j, key, array) s_str((j), (key), (array), sizeof(array))

static void
s_i64(s_json_t *j, const char *key, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    s_key(j, key);
    s_raw(j, tmp, (size_t)n);
}

static void
s_u64(s_json_t *j, const char *key, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    s_key(j, key);
    s_raw(j, tmp, (size_t)n);
}

static void
s_bool(s_json_t *j, const char *key, bool v)
{
    s_key(j, key);
    s_lit(j, v ? "true" : "false");
}

/* An enum by its name, or by its number when the name is unknown (NULL). */
static void
s_enum(s_json_t *j, const char *key, const char *name, int value)
{
    if (name != NULL) {
        s_key(j, key);
        s_escaped(j, name, strlen(name));
    } else {
        s_i64(j, key, value);
    }
}

static void
s_open(s_json_t *j, const char *key, const char *bracket)
{
    s_key(j, key);
    s_lit(j, bracket);
    j->comma = false;
}

static void
s_close(s_json_t *j, const char *bracket)
{
    s_lit(j, bracket);
    j->comma = true;
}

static const char *
s_role_name(cl_role_t role)
{
    static const char *const names[] = { "none",    "merchant_admin", "issuer", "store_terminal",
                                         "analyst", "operator",       "ledger" };
    return (unsigned)role < sizeof names / sizeof names[0] ? names[role] : NULL;
}

static const char *
s_channel_name(cl_channel_t channel)
{
    static const char *const names[] = { "unspecified", "online", "store", "enterprise",
                                         "platform" };
    return (unsigned)channel < sizeof names / sizeof names[0] ? names[channel] : NULL;
}

static const char *
s_kind_name(cl_kind_t kind)
{
    static const char *const names[] = { "unspecified",       "stored_value",    "punch",
                                         "voucher_threshold", "voucher_percent", "voucher_cash",
                                         "voucher_exchange" };
    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : NULL;
}

static const char *
s_scope_name(cl_accept_scope_t scope)
{
    static const char *const names[] = { "unspecified", "all_stores", "store_list", "region_list" };
    return (unsigned)scope < sizeof names / sizeof names[0] ? names[scope] : NULL;
}

static void
s_str_list(s_json_t *j, const char *key, const char *strs, size_t str_cap, uint32_t n, uint32_t max)
{
    s_open(j, key, "[");
    for (uint32_t i = 0; i < n && i < max; i++) {
        const char *s = strs + (size_t)i * str_cap;
        const char *nul = memchr(s, '\0', str_cap);
        s_sep(j);
        s_escaped(j, s, nul != NULL ? (size_t)(nul - s) : str_cap);
    }
    s_close(j, "]");
}

static void
s_spec(s_json_t *j, const cl_program_spec_t *s)
{
    s_open(j, "spec", "{");
    S_STR(j, "merchant_id", s->merchant_id);
    S_STR(j, "program_id", s->program_id);
    S_STR(j, "name", s->name);
    s_enum(j, "kind", s_kind_name(s->kind), (int)s->kind);
    S_STR(j, "currency", s->currency);
    s_open(j, "denominations_minor", "[");
    for (uint32_t i = 0; i < s->denoms_count && i < CL_DENOMS_MAX; i++) {
        char tmp[24];
        int n = snprintf(tmp, sizeof tmp, "%" PRId64, s->denoms_minor[i]);
        s_sep(j);
        s_raw(j, tmp, (size_t)n);
    }
    s_close(j, "]");
    s_i64(j, "custom_min_minor", s->custom_min_minor);
    s_i64(j, "custom_max_minor", s->custom_max_minor);
    if (s->has_window) {
        s_open(j, "window", "{");
        s_i64(j, "valid_from_us", s->valid_from_us);
        s_i64(j, "valid_until_us", s->valid_until_us);
        s_close(j, "}");
    } else {
        s_u64(j, "valid_days", s->valid_days);
    }
    s_enum(j, "accept_scope", s_scope_name(s->accept_scope), (int)s->accept_scope);
    s_str_list(j, "accepting_store_ids", &s->accept_stores[0][0], sizeof s->accept_stores[0],
               s->accept_stores_count, CL_ACCEPT_STORES_MAX);
    s_str_list(j, "accepting_regions", &s->accept_regions[0][0], sizeof s->accept_regions[0],
               s->accept_regions_count, CL_ACCEPT_REGIONS_MAX);
    s_u64(j, "stock_max", s->stock_max);
    s_u64(j, "per_holder_max", s->per_holder_max);
    s_bool(j, "transferable", s->transferable);
    s_u64(j, "transfers_max", s->transfers_max);
    s_bool(j, "pin_required", s->pin_required);
    s_bool(j, "reloadable", s->reloadable);
    s_i64(j, "balance_max_minor", s->balance_max_minor);
    S_STR(j, "theme", s->theme);
    s_u64(j, "uses_per_card", s->uses_per_card);
    s_open(j, "voucher", "{");
    s_i64(j, "threshold_minor", s->voucher.threshold_minor);
    s_i64(j, "amount_off_minor", s->voucher.amount_off_minor);
    s_u64(j, "percent_off_bp", s->voucher.percent_off_bp);
    s_i64(j, "cap_minor", s->voucher.cap_minor);
    s_str_list(j, "eligible_skus", &s->voucher.skus[0][0], sizeof s->voucher.skus[0],
               s->voucher.skus_count, CL_SKUS_MAX);
    s_u64(j, "uses_per_card", s->voucher.uses_per_card);
    s_close(j, "}");
    s_u64(j, "remind_days_before_expiry", s->remind_days_before_expiry);
    s_u64(j, "gift_offer_ttl_hours", s->gift_offer_ttl_hours);
    s_close(j, "}");
}

/* The event's own fields; false for an unknown type. */
static bool
s_event_fields(s_json_t *j, const cl_event_t *ev)
{
    switch (ev->type) {
    case CL_EV_MERCHANT_REGISTERED:
        S_STR(j, "merchant_id", ev->u.merchant_registered.merchant_id);
        S_STR(j, "name", ev->u.merchant_registered.name);
        return true;
    case CL_EV_STORE_REGISTERED:
        S_STR(j, "merchant_id", ev->u.store_registered.merchant_id);
        S_STR(j, "store_id", ev->u.store_registered.store_id);
        S_STR(j, "name", ev->u.store_registered.name);
        S_STR(j, "region", ev->u.store_registered.region);
        return true;
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        s_spec(j, &ev->u.program);
        return true;
    case CL_EV_PROGRAM_CLOSED:
        S_STR(j, "merchant_id", ev->u.program_closed.merchant_id);
        S_STR(j, "program_id", ev->u.program_closed.program_id);
        S_STR(j, "reason", ev->u.program_closed.reason);
        return true;
    case CL_EV_CARD_ISSUED: {
        const cl_ev_card_issued_t *s = &ev->u.card_issued;
        char masked[CL_CODE_MAX + 8];
        char code[CL_CODE_MAX + 1];
        memcpy(code, s->code, sizeof code);
        code[CL_CODE_MAX] = '\0';
        cl_code_mask(code, masked, sizeof masked);
        s_u64(j, "card_id", s->card_id);
        S_STR(j, "merchant_id", s->merchant_id);
        S_STR(j, "program_id", s->program_id);
        S_STR(j, "code", masked);
        s_bool(j, "has_pin", s->has_pin); /* never the hash itself */
        S_STR(j, "holder", s->holder);
        s_enum(j, "channel", s_channel_name(s->channel), (int)s->channel);
        S_STR(j, "store_id", s->store_id);
        S_STR(j, "region", s->region);
        s_i64(j, "face_value_minor", s->face_value_minor);
        s_i64(j, "price_paid_minor", s->price_paid_minor);
        s_u64(j, "uses", s->uses);
        s_i64(j, "valid_from_us", s->valid_from_us);
        s_i64(j, "expires_at_us", s->expires_at_us);
        s_bool(j, "imported", s->imported);
        S_STR(j, "row_key", s->row_key);
        s_u64(j, "batch_id", s->batch_id);
        return true;
    }
    case CL_EV_BATCH_ISSUED: {
        const cl_ev_batch_issued_t *s = &ev->u.batch_issued;
        s_u64(j, "batch_id", s->batch_id);
        S_STR(j, "merchant_id", s->merchant_id);
        S_STR(j, "program_id", s->program_id);
        S_STR(j, "batch_ref", s->batch_ref);
        s_u64(j, "cards_issued", s->cards_issued);
        s_u64(j, "rows_already_issued", s->rows_already_issued);
        return true;
    }
    case CL_EV_GIFT_OFFERED: {
        const cl_ev_gift_offered_t *s = &ev->u.gift_offered;
        s_u64(j, "card_id", s->card_id);
        s_u64(j, "offer_id", s->offer_id);
        S_STR(j, "from_holder", s->from_holder);
        S_STR(j, "to_holder", s->to_holder);
        s_i64(j, "expires_at_us", s->expires_at_us); /* claim_hash: never written */
        return true;
    }
    case CL_EV_GIFT_CLAIMED:
        s_u64(j, "card_id", ev->u.gift_closed.card_id);
        s_u64(j, "offer_id", ev->u.gift_closed.offer_id);
        S_STR(j, "new_holder", ev->u.gift_closed.new_holder);
        S_STR(j, "previous_holder", ev->u.gift_closed.previous_holder);
        return true;
    case CL_EV_GIFT_RECALLED:
    case CL_EV_GIFT_RETURNED:
        s_u64(j, "card_id", ev->u.gift_closed.card_id);
        s_u64(j, "offer_id", ev->u.gift_closed.offer_id);
        return true;
    case CL_EV_CARD_REDEEMED: {
        const cl_ev_card_redeemed_t *s = &ev->u.card_redeemed;
        s_u64(j, "card_id", s->card_id);
        S_STR(j, "store_id", s->store_id);
        S_STR(j, "region", s->region);
        S_STR(j, "order_ref", s->order_ref);
        s_i64(j, "amount_minor", s->amount_minor);
        s_u64(j, "uses", s->uses);
        s_i64(j, "balance_after_minor", s->balance_after_minor);
        s_u64(j, "uses_after", s->uses_after);
        s_i64(j, "order_amount_minor", s->order_amount_minor);
        S_STR(j, "sku", s->sku);
        return true;
    }
    case CL_EV_REDEMPTION_REVERSED: {
        const cl_ev_redemption_reversed_t *s = &ev->u.redemption_reversed;
        s_u64(j, "card_id", s->card_id);
        s_u64(j, "redemption_seq", s->redemption_seq);
        S_STR(j, "store_id", s->store_id);
        s_i64(j, "amount_minor", s->amount_minor);
        s_u64(j, "uses", s->uses);
        s_i64(j, "balance_after_minor", s->balance_after_minor);
        s_u64(j, "uses_after", s->uses_after);
        S_STR(j, "reason", s->reason);
        return true;
    }
    case CL_EV_CARD_RELOADED: {
        const cl_ev_card_reloaded_t *s = &ev->u.card_reloaded;
        s_u64(j, "card_id", s->card_id);
        s_i64(j, "amount_minor", s->amount_minor);
        s_i64(j, "price_paid_minor", s->price_paid_minor);
        s_i64(j, "balance_after_minor", s->balance_after_minor);
        s_enum(j, "channel", s_channel_name(s->channel), (int)s->channel);
        S_STR(j, "store_id", s->store_id);
        return true;
    }
    case CL_EV_BALANCE_TRANSFERRED: {
        const cl_ev_balance_transferred_t *s = &ev->u.balance_transferred;
        s_u64(j, "from_card_id", s->from_card_id);
        s_u64(j, "to_card_id", s->to_card_id);
        s_i64(j, "amount_minor", s->amount_minor);
        s_i64(j, "from_balance_after_minor", s->from_balance_after_minor);
        s_i64(j, "to_balance_after_minor", s->to_balance_after_minor);
        return true;
    }
    case CL_EV_CARD_ADJUSTED: {
        const cl_ev_card_adjusted_t *s = &ev->u.card_adjusted;
        s_u64(j, "card_id", s->card_id);
        s_i64(j, "delta_minor", s->delta_minor);
        s_i64(j, "delta_uses", s->delta_uses);
        s_i64(j, "balance_after_minor", s->balance_after_minor);
        s_u64(j, "uses_after", s->uses_after);
        S_STR(j, "reason", s->reason);
        return true;
    }
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
        s_u64(j, "card_id", ev->u.card_flag.card_id);
        S_STR(j, "reason", ev->u.card_flag.reason);
        return true;
    case CL_EV_CARD_EXPIRED:
        s_u64(j, "card_id", ev->u.card_expired.card_id);
        s_i64(j, "breakage_minor", ev->u.card_expired.breakage_minor);
        s_u64(j, "uses_left", ev->u.card_expired.uses_left);
        return true;
    case CL_EV_EXPIRY_REMINDED:
        s_u64(j, "card_id", ev->u.expiry_reminded.card_id);
        s_i64(j, "expires_at_us", ev->u.expiry_reminded.expires_at_us);
        s_i64(j, "balance_minor", ev->u.expiry_reminded.balance_minor);
        s_u64(j, "uses_left", ev->u.expiry_reminded.uses_left);
        return true;
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
        s_u64(j, "card_id", ev->u.pin.card_id);
        s_u64(j, "failures_in_row", ev->u.pin.failures_in_row);
        return true;
    case CL_EV_CLOCK_ADVANCED:
        s_i64(j, "now_us", ev->u.clock_advanced.now_us);
        return true;
    case CL_EV_NONE:
    default:
        return false;
    }
}

int
codec_event_json(const cl_event_t *ev, char *buf, size_t cap, size_t *out_len)
{
    if (ev == NULL || buf == NULL || out_len == NULL || cap == 0) {
        return CODEC_EINVAL;
    }
    s_json_t j = { .buf = buf, .cap = cap, .len = 0, .full = false, .comma = false };

    s_raw(&j, "{", 1);
    s_u64(&j, "seq", ev->seq);
    s_i64(&j, "at_us", ev->at_us);
    s_key(&j, "type");
    s_lit(&j, "\"");
    s_lit(&j, cl_event_name(ev->type));
    s_lit(&j, "\"");
    S_STR(&j, "request_id", ev->request_id);
    if (ev->actor.role != CL_ROLE_NONE) {
        s_open(&j, "actor", "{");
        s_enum(&j, "role", s_role_name(ev->actor.role), (int)ev->actor.role);
        S_STR(&j, "merchant_id", ev->actor.merchant_id);
        S_STR(&j, "store_id", ev->actor.store_id);
        S_STR(&j, "name", ev->actor.name);
        s_close(&j, "}");
    }
    if (!s_event_fields(&j, ev)) {
        buf[0] = '\0';
        return CODEC_EINVAL;
    }
    s_raw(&j, "}", 1);
    buf[j.len] = '\0';
    if (j.full) {
        return CODEC_ENOSPC;
    }
    *out_len = j.len;
    return 0;
}
