/*
 * decide.c: what each command does to the ledger (see decide.h).
 *
 * One static function per command. Each one checks, in this order: who may do it, that the
 * things it names exist and belong together, the card's state, the PIN, then the amounts; only
 * when every check passed does it emit events. The order matters to the client: a frozen card
 * says "frozen" before it says "insufficient balance". A refusal is a status and a sentence
 * naming what was wrong; the only events a refusal writes are the security events of a wrong
 * PIN (PinRejected, and CardLocked at the CL_PIN_FAILURES_LOCK-th in a row).
 *
 * Decisions never change the ledger: the daemon folds the events with ledger_apply(). Within
 * one command that emits several card events (a batch issue), the code accounts for the
 * earlier events of the same command itself (stock, per-holder counts, codes, row keys).
 */
#include "decide.h"

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "clcheck.h"

#define US_PER_DAY  (86400LL * 1000000LL)
#define US_PER_HOUR (3600LL * 1000000LL)

/* Generated codes: 18 random digits and a Luhn check digit, about 2^60 possibilities. */
#define CODE_RANDOM_DIGITS 18
#define CODE_TRIES_MAX     16
#define PIN_DIGITS         6
#define PIN_MIN_DIGITS     4
#define SECRET_CHARS       16 /* base32: 80 bits */
#define IMPORT_CODE_MIN    6
#define GIFT_TTL_HOURS_MAX (24 * 366)

/* Everything one decision needs, passed to every helper. */
typedef struct pending pending_t;

typedef struct dec {
    const ledger_t *l;
    const cl_principal_t *who;
    const cl_command_t *cmd;
    const decide_ctx_t *ctx;
    decide_out_t *out;
    cl_reply_t *r;
    pending_t *pend; /* a batch issue's index of the cards it issued so far, or NULL */
} dec_t;

const char *
decide_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case DECIDE_EINVAL:
        return "decide: invalid argument";
    case DECIDE_ENOROOM:
        return "decide: the events buffer is too small for this command";
    default:
        return "decide: unknown error";
    }
}

/* ---- Replies and events ------------------------------------------------------------------- */

/* Refuses the command: status and a sentence. Always returns 0 (the decision was made). */
static int s_refuse(dec_t *d, cl_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
s_refuse(dec_t *d, cl_status_t status, const char *fmt, ...)
{
    va_list ap;
    d->r->status = status;
    va_start(ap, fmt);
    vsnprintf(d->r->message, sizeof(d->r->message), fmt, ap);
    va_end(ap);
    return 0;
}

static void
s_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, cap - n);
}

#define COPY(dst, src) s_copy((dst), sizeof(dst), (src))

/* Bytes of the union member an event of this type uses (the whole union for an unknown type). */
static size_t
s_variant_size(cl_event_type_t type)
{
    const cl_event_t *ev = NULL;
    switch (type) {
    case CL_EV_MERCHANT_REGISTERED:
        return sizeof(ev->u.merchant_registered);
    case CL_EV_STORE_REGISTERED:
        return sizeof(ev->u.store_registered);
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        return sizeof(ev->u.program);
    case CL_EV_PROGRAM_CLOSED:
        return sizeof(ev->u.program_closed);
    case CL_EV_CARD_ISSUED:
        return sizeof(ev->u.card_issued);
    case CL_EV_BATCH_ISSUED:
        return sizeof(ev->u.batch_issued);
    case CL_EV_GIFT_OFFERED:
        return sizeof(ev->u.gift_offered);
    case CL_EV_GIFT_CLAIMED:
    case CL_EV_GIFT_RECALLED:
    case CL_EV_GIFT_RETURNED:
        return sizeof(ev->u.gift_closed);
    case CL_EV_CARD_REDEEMED:
        return sizeof(ev->u.card_redeemed);
    case CL_EV_REDEMPTION_REVERSED:
        return sizeof(ev->u.redemption_reversed);
    case CL_EV_CARD_RELOADED:
        return sizeof(ev->u.card_reloaded);
    case CL_EV_BALANCE_TRANSFERRED:
        return sizeof(ev->u.balance_transferred);
    case CL_EV_CARD_ADJUSTED:
        return sizeof(ev->u.card_adjusted);
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
        return sizeof(ev->u.card_flag);
    case CL_EV_CARD_EXPIRED:
        return sizeof(ev->u.card_expired);
    case CL_EV_EXPIRY_REMINDED:
        return sizeof(ev->u.expiry_reminded);
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
        return sizeof(ev->u.pin);
    case CL_EV_CLOCK_ADVANCED:
        return sizeof(ev->u.clock_advanced);
    default:
        return sizeof(ev->u);
    }
}

/*
 * A new event of the given type, with its envelope filled and the union member its type uses
 * zeroed; NULL when out of room. Only that member is cleared: the union is 4.4 KB because of
 * ProgramDefined's spec, a redeem uses a few hundred bytes of it, and a batch issue emits a
 * thousand events. Every reader of an event (the codec, the fold) reads only its type's member.
 */
static cl_event_t *
s_emit(dec_t *d, cl_event_type_t type)
{
    decide_out_t *out = d->out;
    if (out->events_count >= out->events_cap)
        return NULL;
    cl_event_t *ev = &out->events[out->events_count];
    memset(&ev->u, 0, s_variant_size(type));
    ev->type = type;
    ev->seq = d->ctx->next_seq + out->events_count;
    ev->at_us = d->ctx->now_us;
    COPY(ev->request_id, d->cmd->request_id);
    if (d->who->role != CL_ROLE_NONE)
        ev->actor = *d->who;
    else
        memset(&ev->actor, 0, sizeof(ev->actor));
    out->events_count++;
    d->r->last_seq = ev->seq;
    return ev;
}

/* ---- Checks shared by many commands ------------------------------------------------------- */

static int
s_bad_id(dec_t *d, const char *field, const char *id)
{
    if (id[0] == '\0')
        return s_refuse(d, CL_INVALID_ARGUMENT, "%s is required", field);
    return s_refuse(d, CL_INVALID_ARGUMENT,
                    "%s \"%s\" may only hold letters, digits, '.', '_' and '-'", field, id);
}

/* A role's reach. */
static bool
s_role_in(const cl_principal_t *who, unsigned roles)
{
    return (roles & (1u << who->role)) != 0;
}

#define R(role) (1u << (role))
#define R_ADMIN (R(CL_ROLE_OPERATOR) | R(CL_ROLE_MERCHANT_ADMIN))
#define R_SELL  (R_ADMIN | R(CL_ROLE_ISSUER))
#define R_STORE (R_ADMIN | R(CL_ROLE_STORE_TERMINAL))
#define R_ANY   (R_SELL | R(CL_ROLE_STORE_TERMINAL) | R(CL_ROLE_ANALYST))

/*
 * May `who` act with one of `roles` on merchant_id's things? Operators reach every merchant;
 * everyone else only their own. Refuses and returns false otherwise.
 */
static bool
s_may(dec_t *d, unsigned roles, const char *merchant_id)
{
    const cl_principal_t *who = d->who;
    if (!s_role_in(who, roles)) {
        s_refuse(d, CL_PERMISSION_DENIED, "this key's role may not do this");
        return false;
    }
    if (who->role != CL_ROLE_OPERATOR && strcmp(who->merchant_id, merchant_id) != 0) {
        s_refuse(d, CL_WRONG_MERCHANT, "that belongs to another merchant");
        return false;
    }
    return true;
}

/* A store terminal acts only at its own store. */
static bool
s_at_own_store(dec_t *d, const char *store_id)
{
    if (d->who->role == CL_ROLE_STORE_TERMINAL && strcmp(d->who->store_id, store_id) != 0) {
        s_refuse(d, CL_PERMISSION_DENIED, "a store terminal acts only at its own store (%s)",
                 d->who->store_id);
        return false;
    }
    return true;
}

/* The card a command names, or a refusal. */
static const ledger_card_t *
s_card(dec_t *d, const cl_card_ref_t *ref, const char *field)
{
    const ledger_card_t *card = NULL;
    if (ref->card_id != 0) {
        card = ledger_card(d->l, ref->card_id);
    } else if (ref->code[0] != '\0') {
        char code[CL_CODE_MAX + 1];
        cl_code_normalize(ref->code, code);
        card = ledger_card_by_code(d->l, code);
    } else {
        s_refuse(d, CL_INVALID_ARGUMENT, "%s: a card code or card id is required", field);
        return NULL;
    }
    if (card == NULL)
        s_refuse(d, CL_UNKNOWN_CARD, "no such card");
    return card;
}

static const ledger_program_t *
s_card_program(dec_t *d, const ledger_card_t *card)
{
    const ledger_program_t *prog = ledger_program(d->l, card->merchant_id, card->program_id);
    CL_CHECK(prog != NULL); /* the fold never makes a card without its program */
    return prog;
}

static bool
s_expired(dec_t *d, const ledger_card_t *card)
{
    return card->state == CL_CARDSTATE_EXPIRED ||
           (card->expires_at_us != 0 && d->ctx->now_us >= card->expires_at_us);
}

/*
 * Can the card be used for value (redeem, gift, reload, transfer)? Locked, frozen, expired,
 * used up, not yet valid: in that order.
 */
static bool
s_usable(dec_t *d, const ledger_card_t *card)
{
    if (card->locked) {
        s_refuse(d, CL_CARD_LOCKED,
                 "the card is locked after %d wrong PINs; an admin can unlock it",
                 CL_PIN_FAILURES_LOCK);
        return false;
    }
    if (card->frozen) {
        s_refuse(d, CL_CARD_FROZEN, "the card is frozen");
        return false;
    }
    if (s_expired(d, card)) {
        s_refuse(d, CL_CARD_EXPIRED, "the card has expired");
        return false;
    }
    if (card->state == CL_CARDSTATE_EXHAUSTED) {
        s_refuse(d, CL_CARD_CLOSED, "the voucher is used up");
        return false;
    }
    if (d->ctx->now_us < card->valid_from_us) {
        s_refuse(d, CL_NOT_YET_VALID, "the card is not valid yet");
        return false;
    }
    return true;
}

static void
s_keyed_hash(const decide_ctx_t *ctx, const char *secret, uint8_t out[CL_HASH_LEN])
{
    crypto_generichash(out, CL_HASH_LEN, (const unsigned char *)secret, strlen(secret), ctx->key,
                       DECIDE_KEY_LEN);
}

/*
 * The PIN check. A card with a PIN needs it: every card of a program that requires PINs has one
 * from its issue, and a card sold before its program came to require them has none to check,
 * so it goes on without (an UpdateProgram that turns pin_required on gives PINs to the cards
 * issued after it). A wrong PIN writes PinRejected, and CardLocked at the limit; the command is
 * refused either way. Returns true when the command may go on.
 */
static bool
s_pin_ok(dec_t *d, const ledger_card_t *card, const char *pin)
{
    if (!card->has_pin)
        return true;
    if (pin[0] == '\0') {
        s_refuse(d, CL_PIN_REQUIRED, "this card needs its PIN");
        return false;
    }
    uint8_t hash[CL_HASH_LEN];
    s_keyed_hash(d->ctx, pin, hash);
    if (card->has_pin && sodium_memcmp(hash, card->pin_hash, CL_HASH_LEN) == 0)
        return true;

    uint32_t failures = card->pin_failures + 1;
    cl_event_t *ev = s_emit(d, CL_EV_PIN_REJECTED);
    if (ev != NULL) {
        ev->u.pin.card_id = card->card_id;
        ev->u.pin.failures_in_row = failures;
    }
    if (failures >= CL_PIN_FAILURES_LOCK) {
        ev = s_emit(d, CL_EV_CARD_LOCKED);
        if (ev != NULL) {
            ev->u.pin.card_id = card->card_id;
            ev->u.pin.failures_in_row = failures;
        }
        s_refuse(d, CL_PIN_WRONG, "wrong PIN; the card is now locked after %u wrong PINs in a row",
                 failures);
    } else {
        s_refuse(d, CL_PIN_WRONG, "wrong PIN (%u of %d before the card locks)", failures,
                 CL_PIN_FAILURES_LOCK);
    }
    return false;
}

/* Positive, within the ledger's limit. */
static bool
s_amount_ok(dec_t *d, const char *field, int64_t amount)
{
    if (amount <= 0) {
        s_refuse(d, CL_AMOUNT_INVALID, "%s must be more than zero", field);
        return false;
    }
    if (amount > CL_AMOUNT_MAX_MINOR) {
        s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "%s is above the limit of %lld minor units", field,
                 (long long)CL_AMOUNT_MAX_MINOR);
        return false;
    }
    return true;
}

static bool
s_is_voucher(cl_kind_t kind)
{
    return kind >= CL_KIND_VOUCHER_THRESHOLD && kind <= CL_KIND_VOUCHER_EXCHANGE;
}

/* Total uses a new card of the program starts with. */
static uint32_t
s_uses_per_card(const cl_program_spec_t *spec)
{
    if (spec->kind == CL_KIND_PUNCH)
        return spec->uses_per_card;
    if (s_is_voucher(spec->kind))
        return spec->voucher.uses_per_card != 0 ? spec->voucher.uses_per_card : 1;
    return 0;
}

static bool
s_store_accepts(const cl_program_spec_t *spec, const ledger_store_t *store)
{
    switch (spec->accept_scope) {
    case CL_ACCEPT_STORE_LIST:
        for (uint32_t i = 0; i < spec->accept_stores_count; i++) {
            if (strcmp(spec->accept_stores[i], store->store_id) == 0)
                return true;
        }
        return false;
    case CL_ACCEPT_REGION_LIST:
        for (uint32_t i = 0; i < spec->accept_regions_count; i++) {
            if (strcmp(spec->accept_regions[i], store->region) == 0)
                return true;
        }
        return false;
    default:
        return true;
    }
}

/* ---- Configuration: merchants, stores, programs ------------------------------------------- */

static int
s_register_merchant(dec_t *d)
{
    const cl_ev_merchant_registered_t *c = &d->cmd->u.register_merchant;
    if (!s_role_in(d->who, R(CL_ROLE_OPERATOR)))
        return s_refuse(d, CL_PERMISSION_DENIED, "only an operator registers merchants");
    if (!cl_id_ok(c->merchant_id))
        return s_bad_id(d, "merchant_id", c->merchant_id);
    if (ledger_merchant(d->l, c->merchant_id) != NULL)
        return s_refuse(d, CL_ALREADY_EXISTS, "merchant %s already exists", c->merchant_id);
    cl_event_t *ev = s_emit(d, CL_EV_MERCHANT_REGISTERED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.merchant_registered = *c;
    return 0;
}

static int
s_register_store(dec_t *d)
{
    const cl_ev_store_registered_t *c = &d->cmd->u.register_store;
    if (!cl_id_ok(c->merchant_id))
        return s_bad_id(d, "merchant_id", c->merchant_id);
    if (ledger_merchant(d->l, c->merchant_id) == NULL)
        return s_refuse(d, CL_UNKNOWN_MERCHANT, "no merchant %s", c->merchant_id);
    if (!s_may(d, R_ADMIN, c->merchant_id))
        return 0;
    if (!cl_id_ok(c->store_id))
        return s_bad_id(d, "store_id", c->store_id);
    if (c->region[0] == '\0')
        return s_refuse(d, CL_INVALID_ARGUMENT, "region is required");
    if (ledger_store(d->l, c->merchant_id, c->store_id) != NULL)
        return s_refuse(d, CL_ALREADY_EXISTS, "store %s already exists", c->store_id);
    cl_event_t *ev = s_emit(d, CL_EV_STORE_REGISTERED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.store_registered = *c;
    return 0;
}

/* Checks a program spec; refuses and returns false when something is off. */
static bool
s_spec_ok(dec_t *d, const cl_program_spec_t *s)
{
    if (s->kind < CL_KIND_STORED_VALUE || s->kind > CL_KIND_VOUCHER_EXCHANGE) {
        s_refuse(d, CL_INVALID_ARGUMENT, "program kind is required");
        return false;
    }
    if (strlen(s->currency) != CL_CURRENCY_LEN || !isupper((unsigned char)s->currency[0]) ||
        !isupper((unsigned char)s->currency[1]) || !isupper((unsigned char)s->currency[2])) {
        s_refuse(d, CL_INVALID_ARGUMENT, "currency must be three capital letters (ISO 4217)");
        return false;
    }
    for (uint32_t i = 0; i < s->denoms_count; i++) {
        if (!s_amount_ok(d, "each denomination", s->denoms_minor[i]))
            return false;
    }
    if (s->denoms_count == 0 && (s->custom_min_minor != 0 || s->custom_max_minor != 0)) {
        if (!s_amount_ok(d, "custom_min", s->custom_min_minor) ||
            !s_amount_ok(d, "custom_max", s->custom_max_minor))
            return false;
        if (s->custom_min_minor > s->custom_max_minor) {
            s_refuse(d, CL_INVALID_ARGUMENT, "custom_min is above custom_max");
            return false;
        }
    }
    if (s->kind == CL_KIND_STORED_VALUE && s->denoms_count == 0 && s->custom_max_minor == 0) {
        s_refuse(d, CL_INVALID_ARGUMENT,
                 "a stored-value program needs denominations or a custom range");
        return false;
    }
    if (s->has_window && s->valid_from_us >= s->valid_until_us) {
        s_refuse(d, CL_INVALID_ARGUMENT, "the validity window ends before it starts");
        return false;
    }
    if (!s->has_window && s->valid_days > CL_VALID_DAYS_MAX) {
        s_refuse(d, CL_INVALID_ARGUMENT, "valid_days is above %d", CL_VALID_DAYS_MAX);
        return false;
    }
    if (s->accept_scope == CL_ACCEPT_STORE_LIST) {
        if (s->accept_stores_count == 0) {
            s_refuse(d, CL_INVALID_ARGUMENT, "a store-list program needs accepting stores");
            return false;
        }
        for (uint32_t i = 0; i < s->accept_stores_count; i++) {
            if (ledger_store(d->l, s->merchant_id, s->accept_stores[i]) == NULL) {
                s_refuse(d, CL_UNKNOWN_STORE, "no store %s", s->accept_stores[i]);
                return false;
            }
        }
    } else if (s->accept_scope == CL_ACCEPT_REGION_LIST && s->accept_regions_count == 0) {
        s_refuse(d, CL_INVALID_ARGUMENT, "a region-list program needs accepting regions");
        return false;
    } else if (s->accept_scope > CL_ACCEPT_REGION_LIST) {
        s_refuse(d, CL_INVALID_ARGUMENT, "accept_scope is not one of the known scopes");
        return false;
    }
    if (s->reloadable && s->kind != CL_KIND_STORED_VALUE) {
        s_refuse(d, CL_WRONG_KIND, "only stored-value programs can be reloadable");
        return false;
    }
    if (s->balance_max_minor < 0 || s->balance_max_minor > CL_AMOUNT_MAX_MINOR) {
        s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "balance_max is outside 0..%lld",
                 (long long)CL_AMOUNT_MAX_MINOR);
        return false;
    }
    if (s->kind == CL_KIND_PUNCH && (s->uses_per_card == 0 || s->uses_per_card > CL_USES_MAX)) {
        s_refuse(d, CL_INVALID_ARGUMENT, "a punch card program needs 1..%d uses per card",
                 CL_USES_MAX);
        return false;
    }
    const cl_voucher_rule_t *v = &s->voucher;
    if (s_is_voucher(s->kind) && v->uses_per_card > CL_USES_MAX) {
        s_refuse(d, CL_INVALID_ARGUMENT, "a voucher allows at most %d uses", CL_USES_MAX);
        return false;
    }
    if (s->kind == CL_KIND_VOUCHER_THRESHOLD || s->kind == CL_KIND_VOUCHER_CASH) {
        if (!s_amount_ok(d, "amount_off", v->amount_off_minor))
            return false;
    }
    if (s->kind == CL_KIND_VOUCHER_THRESHOLD &&
        (v->threshold_minor < v->amount_off_minor || v->threshold_minor > CL_AMOUNT_MAX_MINOR)) {
        s_refuse(d, CL_INVALID_ARGUMENT, "the threshold must be at least the amount off");
        return false;
    }
    if (s->kind == CL_KIND_VOUCHER_PERCENT) {
        if (v->percent_off_bp == 0 || v->percent_off_bp > 10000) {
            s_refuse(d, CL_INVALID_ARGUMENT, "percent_off must be 1..10000 basis points");
            return false;
        }
        if (v->cap_minor < 0 || v->cap_minor > CL_AMOUNT_MAX_MINOR || v->threshold_minor < 0 ||
            v->threshold_minor > CL_AMOUNT_MAX_MINOR) {
            s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "cap or threshold outside 0..%lld",
                     (long long)CL_AMOUNT_MAX_MINOR);
            return false;
        }
    }
    if (s->kind == CL_KIND_VOUCHER_EXCHANGE && v->skus_count == 0) {
        s_refuse(d, CL_INVALID_ARGUMENT, "an exchange voucher needs eligible SKUs");
        return false;
    }
    if (s->gift_offer_ttl_hours > GIFT_TTL_HOURS_MAX) {
        s_refuse(d, CL_INVALID_ARGUMENT, "gift_offer_ttl_hours is above %d", GIFT_TTL_HOURS_MAX);
        return false;
    }
    if (s->remind_days_before_expiry > CL_VALID_DAYS_MAX) {
        s_refuse(d, CL_INVALID_ARGUMENT, "remind_days_before_expiry is above %d",
                 CL_VALID_DAYS_MAX);
        return false;
    }
    return true;
}

static int
s_define_program(dec_t *d)
{
    const cl_program_spec_t *s = &d->cmd->u.program;
    bool update = d->cmd->type == CL_CMD_UPDATE_PROGRAM;
    if (!cl_id_ok(s->merchant_id))
        return s_bad_id(d, "merchant_id", s->merchant_id);
    if (ledger_merchant(d->l, s->merchant_id) == NULL)
        return s_refuse(d, CL_UNKNOWN_MERCHANT, "no merchant %s", s->merchant_id);
    if (!s_may(d, R_ADMIN, s->merchant_id))
        return 0;
    if (!cl_id_ok(s->program_id))
        return s_bad_id(d, "program_id", s->program_id);
    const ledger_program_t *cur = ledger_program(d->l, s->merchant_id, s->program_id);
    if (!update && cur != NULL)
        return s_refuse(d, CL_ALREADY_EXISTS, "program %s already exists", s->program_id);
    if (update) {
        if (cur == NULL)
            return s_refuse(d, CL_UNKNOWN_PROGRAM, "no program %s", s->program_id);
        if (cur->closed)
            return s_refuse(d, CL_PROGRAM_CLOSED, "program %s is closed", s->program_id);
        if (cur->spec.kind != s->kind || strcmp(cur->spec.currency, s->currency) != 0)
            return s_refuse(d, CL_INVALID_ARGUMENT,
                            "a program's kind and currency never change; define a new program");
        /* A sold card's worth (and its breakage when it expires) is its face value times the
         * share of its uses left, counted against the program's uses per card. */
        if (cur->issued_count > 0 && s_uses_per_card(&cur->spec) != s_uses_per_card(s))
            return s_refuse(d, CL_INVALID_ARGUMENT,
                            "program %s has sold cards with %u uses each; its uses per card "
                            "never change; define a new program",
                            s->program_id, s_uses_per_card(&cur->spec));
    }
    if (!s_spec_ok(d, s))
        return 0;
    cl_event_t *ev = s_emit(d, update ? CL_EV_PROGRAM_UPDATED : CL_EV_PROGRAM_DEFINED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.program = *s;
    return 0;
}

static int
s_close_program(dec_t *d)
{
    const cl_ev_program_closed_t *c = &d->cmd->u.close_program;
    if (ledger_merchant(d->l, c->merchant_id) == NULL)
        return s_refuse(d, CL_UNKNOWN_MERCHANT, "no merchant %s", c->merchant_id);
    if (!s_may(d, R_ADMIN, c->merchant_id))
        return 0;
    const ledger_program_t *p = ledger_program(d->l, c->merchant_id, c->program_id);
    if (p == NULL)
        return s_refuse(d, CL_UNKNOWN_PROGRAM, "no program %s", c->program_id);
    if (p->closed)
        return s_refuse(d, CL_STATE_CONFLICT, "program %s is already closed", c->program_id);
    cl_event_t *ev = s_emit(d, CL_EV_PROGRAM_CLOSED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.program_closed = *c;
    return 0;
}

/* ---- Issuing ------------------------------------------------------------------------------ */

/* n random decimal digits, uniformly distributed (rejection sampling). */
static void
s_random_digits(dec_t *d, char *out, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t buf[32];
        d->ctx->random(buf, sizeof(buf), d->ctx->random_ctx);
        for (size_t k = 0; k < sizeof(buf) && i < n; k++) {
            if (buf[k] < 250)
                out[i++] = (char)('0' + buf[k] % 10);
        }
    }
    out[n] = '\0';
}

/* The Luhn check digit of a string of digits. */
static char
s_luhn(const char *digits)
{
    size_t n = strlen(digits);
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int v = digits[n - 1 - i] - '0';
        if (i % 2 == 0) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return (char)('0' + (10 - sum % 10) % 10);
}

/*
 * The cards a command has issued so far are not in the ledger yet, so stock, per-holder
 * limits, codes and row keys must also be checked against the command's own CardIssued events.
 * A single issue has at most a few events and scans them; a batch issue (up to
 * CL_ISSUE_BATCH_MAX rows) indexes them as it goes, so the checks stay linear in the batch.
 */
#define PENDING_SLOTS 4096 /* a power of two, more than twice CL_ISSUE_BATCH_MAX */

enum { PF_CODE, PF_HOLDER, PF_ROW, PF_COUNT };

struct pending {
    uint64_t issued;                      /* CardIssued events so far */
    uint32_t ev[PF_COUNT][PENDING_SLOTS]; /* per field: first event index + 1, 0 = empty */
    uint32_t holder_cards[PENDING_SLOTS]; /* per holder slot: cards issued to the holder */
};

_Static_assert(PENDING_SLOTS > 2 * CL_ISSUE_BATCH_MAX, "the pending index must stay half empty");

static const char *
s_pf_value(const cl_event_t *ev, int field)
{
    const cl_ev_card_issued_t *e = &ev->u.card_issued;
    return field == PF_CODE ? e->code : field == PF_HOLDER ? e->holder : e->row_key;
}

/* The slot of value in a field's index: the one holding it, or the empty one it would take. */
static size_t
s_pf_slot(dec_t *d, int field, const char *value)
{
    size_t mask = PENDING_SLOTS - 1;
    size_t pos = (size_t)XXH3_64bits(value, strlen(value)) & mask;
    for (;;) {
        uint32_t e = d->pend->ev[field][pos];
        if (e == 0 || strcmp(s_pf_value(&d->out->events[e - 1], field), value) == 0)
            return pos;
        pos = (pos + 1) & mask;
    }
}

/* Indexes the CardIssued event just emitted (the last one). */
static void
s_pending_add(dec_t *d)
{
    pending_t *p = d->pend;
    size_t index = d->out->events_count - 1;
    const cl_event_t *ev = &d->out->events[index];
    assert(ev->type == CL_EV_CARD_ISSUED && p->issued < CL_ISSUE_BATCH_MAX);
    p->issued++;
    for (int f = 0; f < PF_COUNT; f++) {
        const char *value = s_pf_value(ev, f);
        if (value[0] == '\0')
            continue;
        size_t slot = s_pf_slot(d, f, value);
        if (p->ev[f][slot] == 0)
            p->ev[f][slot] = (uint32_t)index + 1;
        if (f == PF_HOLDER)
            p->holder_cards[slot]++;
    }
}

/* The first of this command's CardIssued events whose field equals value, or NULL. */
static const cl_event_t *
s_pending_find(dec_t *d, int field, const char *value)
{
    if (d->pend != NULL) {
        uint32_t e = d->pend->ev[field][s_pf_slot(d, field, value)];
        return e != 0 ? &d->out->events[e - 1] : NULL;
    }
    for (size_t i = 0; i < d->out->events_count; i++) {
        const cl_event_t *ev = &d->out->events[i];
        if (ev->type == CL_EV_CARD_ISSUED && strcmp(s_pf_value(ev, field), value) == 0)
            return ev;
    }
    return NULL;
}

/* Is the code taken by a card, or by an earlier event of this command? */
static bool
s_code_taken(dec_t *d, const char *code)
{
    return ledger_card_by_code(d->l, code) != NULL || s_pending_find(d, PF_CODE, code) != NULL;
}

static uint32_t
s_pending_holder_cards(dec_t *d, const char *holder)
{
    if (d->pend != NULL)
        return d->pend->holder_cards[s_pf_slot(d, PF_HOLDER, holder)];
    uint32_t n = 0;
    for (size_t i = 0; i < d->out->events_count; i++) {
        const cl_event_t *ev = &d->out->events[i];
        if (ev->type == CL_EV_CARD_ISSUED && strcmp(ev->u.card_issued.holder, holder) == 0)
            n++;
    }
    return n;
}

static uint64_t
s_pending_issued(dec_t *d)
{
    if (d->pend != NULL)
        return d->pend->issued;
    uint64_t n = 0;
    for (size_t i = 0; i < d->out->events_count; i++)
        n += d->out->events[i].type == CL_EV_CARD_ISSUED;
    return n;
}

/* The card issued for a row key, by the ledger or earlier in this command; 0 if none. */
static uint64_t
s_row_card(dec_t *d, const cl_program_spec_t *spec, const char *row_key)
{
    uint64_t id = ledger_row_card(d->l, spec->merchant_id, spec->program_id, row_key);
    if (id == 0) {
        const cl_event_t *ev = s_pending_find(d, PF_ROW, row_key);
        id = ev != NULL ? ev->u.card_issued.card_id : 0;
    }
    return id;
}

/* The most a stored-value card of the program may hold (0 in the spec: the amount limit). */
static int64_t
s_balance_max(const cl_program_spec_t *spec)
{
    return spec->balance_max_minor != 0 ? spec->balance_max_minor : CL_AMOUNT_MAX_MINOR;
}

/* Is the face value one the program sells? */
static bool
s_denomination_ok(const cl_program_spec_t *spec, int64_t face)
{
    if (spec->denoms_count == 0)
        return face >= spec->custom_min_minor && face <= spec->custom_max_minor;
    for (uint32_t i = 0; i < spec->denoms_count; i++) {
        if (spec->denoms_minor[i] == face)
            return true;
    }
    return false;
}

/*
 * Issues one card: the checks and the CardIssued event. Writes the code and PIN (shown once)
 * to out_code/out_pin. Refuses through d->r like every decision; returns 0 or DECIDE_ENOROOM.
 */
static int
s_issue_one(dec_t *d, const ledger_program_t *prog, const cl_cmd_issue_card_t *c,
            char out_code[CL_CODE_MAX + 1], char out_pin[CL_PIN_MAX + 1], uint64_t *out_card_id)
{
    const cl_program_spec_t *spec = &prog->spec;
    int64_t now = d->ctx->now_us;

    if (spec->stock_max != 0 && prog->issued_count + s_pending_issued(d) >= spec->stock_max)
        return s_refuse(d, CL_STOCK_EXHAUSTED, "program %s has issued all %llu cards of its stock",
                        spec->program_id, (unsigned long long)spec->stock_max);
    if (spec->per_holder_max != 0 && c->holder[0] != '\0' &&
        ledger_holder_count(d->l, spec->merchant_id, spec->program_id, c->holder) +
                s_pending_holder_cards(d, c->holder) >=
            spec->per_holder_max)
        return s_refuse(d, CL_HOLDER_LIMIT_REACHED, "this holder already has %u cards of %s",
                        spec->per_holder_max, spec->program_id);
    if (c->channel < CL_CHANNEL_ONLINE || c->channel > CL_CHANNEL_PLATFORM)
        return s_refuse(d, CL_INVALID_ARGUMENT,
                        "channel is required (online, store, "
                        "enterprise or platform)");
    const char *region = c->region;
    if (c->store_id[0] != '\0') {
        const ledger_store_t *store = ledger_store(d->l, spec->merchant_id, c->store_id);
        if (store == NULL)
            return s_refuse(d, CL_UNKNOWN_STORE, "no store %s", c->store_id);
        if (!s_at_own_store(d, c->store_id))
            return 0;
        region = store->region;
    } else if (c->channel == CL_CHANNEL_STORE) {
        return s_refuse(d, CL_INVALID_ARGUMENT, "a card sold in a store names the store");
    }

    int64_t face = c->face_value_minor;
    bool stored = spec->kind == CL_KIND_STORED_VALUE;
    if (stored) {
        if (!s_amount_ok(d, "face_value", face))
            return 0;
    } else {
        if (face == 0 && spec->denoms_count > 0)
            face = spec->denoms_minor[0];
        if (face < 0 || face > CL_AMOUNT_MAX_MINOR)
            return s_refuse(d, CL_AMOUNT_INVALID, "face_value must be 0..%lld",
                            (long long)CL_AMOUNT_MAX_MINOR);
    }
    /* A card is sold at one of its program's prices: a stored-value program always has some; a
     * punch card or voucher program that lists none sells at any price. */
    if ((stored || spec->denoms_count > 0 || spec->custom_max_minor > 0) &&
        !s_denomination_ok(spec, face))
        return s_refuse(d, CL_DENOMINATION_INVALID,
                        "face value %lld is not one of program %s's denominations", (long long)face,
                        spec->program_id);
    if (stored && face > s_balance_max(spec))
        return s_refuse(d, CL_MAX_BALANCE_EXCEEDED,
                        "face value %lld is above program %s's maximum balance of %lld",
                        (long long)face, spec->program_id, (long long)s_balance_max(spec));
    int64_t price = c->price_paid_minor;
    if (price == 0 && !c->paid_nothing)
        price = face;
    if (price < 0)
        return s_refuse(d, CL_AMOUNT_INVALID, "price_paid must not be negative");
    if (price > CL_AMOUNT_MAX_MINOR)
        return s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "price_paid is above the limit");

    int64_t valid_from = now, expires = 0;
    if (spec->has_window) {
        valid_from = spec->valid_from_us;
        expires = spec->valid_until_us;
        if (now >= expires)
            return s_refuse(d, CL_CARD_EXPIRED, "program %s's validity window has ended",
                            spec->program_id);
    } else if (spec->valid_days != 0) {
        expires = now + (int64_t)spec->valid_days * US_PER_DAY;
    }

    char code[CL_CODE_MAX + 1];
    if (c->import_code[0] != '\0') {
        cl_code_normalize(c->import_code, code);
        size_t n = strlen(code);
        bool alnum = n >= IMPORT_CODE_MIN;
        for (size_t i = 0; alnum && i < n; i++)
            alnum = isalnum((unsigned char)code[i]) != 0;
        if (!alnum)
            return s_refuse(d, CL_INVALID_ARGUMENT,
                            "an imported code has at least %d letters or digits", IMPORT_CODE_MIN);
        if (s_code_taken(d, code))
            return s_refuse(d, CL_ALREADY_EXISTS, "that code is already a card");
    } else {
        int tries = 0;
        do {
            if (++tries > CODE_TRIES_MAX)
                return s_refuse(d, CL_INTERNAL, "could not make a unique card code");
            s_random_digits(d, code, CODE_RANDOM_DIGITS);
            code[CODE_RANDOM_DIGITS] = s_luhn(code);
            code[CODE_RANDOM_DIGITS + 1] = '\0';
        } while (s_code_taken(d, code));
    }

    char pin[CL_PIN_MAX + 1] = "";
    bool has_pin = false;
    if (c->import_pin[0] != '\0') {
        size_t n = strlen(c->import_pin);
        bool digits = n >= PIN_MIN_DIGITS;
        for (size_t i = 0; digits && i < n; i++)
            digits = isdigit((unsigned char)c->import_pin[i]) != 0;
        if (!digits)
            return s_refuse(d, CL_INVALID_ARGUMENT, "an imported PIN has %d to %d digits",
                            PIN_MIN_DIGITS, CL_PIN_MAX);
        COPY(pin, c->import_pin);
        has_pin = true;
    } else if (spec->pin_required) {
        s_random_digits(d, pin, PIN_DIGITS);
        has_pin = true;
    }

    uint64_t issued_before = s_pending_issued(d);
    cl_event_t *ev = s_emit(d, CL_EV_CARD_ISSUED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_card_issued_t *e = &ev->u.card_issued;
    e->card_id = ledger_meta(d->l)->next_card_id + issued_before;
    COPY(e->merchant_id, spec->merchant_id);
    COPY(e->program_id, spec->program_id);
    COPY(e->code, code);
    e->has_pin = has_pin;
    if (has_pin)
        s_keyed_hash(d->ctx, pin, e->pin_hash);
    COPY(e->holder, c->holder);
    e->channel = c->channel;
    COPY(e->store_id, c->store_id);
    COPY(e->region, region);
    e->face_value_minor = face;
    e->price_paid_minor = price;
    e->uses = s_uses_per_card(spec);
    e->valid_from_us = valid_from;
    e->expires_at_us = expires;
    e->imported = c->import_code[0] != '\0';
    COPY(e->row_key, c->row_key);
    if (d->pend != NULL)
        s_pending_add(d);

    s_copy(out_code, CL_CODE_MAX + 1, code);
    /* An imported PIN is the merchant's already; only a PIN the ledger made is shown. */
    s_copy(out_pin, CL_PIN_MAX + 1, c->import_pin[0] != '\0' ? "" : pin);
    *out_card_id = e->card_id;
    sodium_memzero(pin, sizeof(pin));
    return 0;
}

/* The program an issue names, checked for the principal; NULL after a refusal. */
static const ledger_program_t *
s_issue_program(dec_t *d, const char *merchant_id, const char *program_id)
{
    if (ledger_merchant(d->l, merchant_id) == NULL) {
        s_refuse(d, CL_UNKNOWN_MERCHANT, "no merchant %s", merchant_id);
        return NULL;
    }
    if (!s_may(d, R_SELL | R(CL_ROLE_STORE_TERMINAL), merchant_id))
        return NULL;
    const ledger_program_t *prog = ledger_program(d->l, merchant_id, program_id);
    if (prog == NULL) {
        s_refuse(d, CL_UNKNOWN_PROGRAM, "no program %s", program_id);
        return NULL;
    }
    if (prog->closed) {
        s_refuse(d, CL_PROGRAM_CLOSED, "program %s is closed", program_id);
        return NULL;
    }
    return prog;
}

static int
s_issue_card(dec_t *d)
{
    const cl_cmd_issue_card_t *c = &d->cmd->u.issue_card;
    const ledger_program_t *prog = s_issue_program(d, c->merchant_id, c->program_id);
    if (prog == NULL)
        return 0;
    uint64_t issued = c->row_key[0] != '\0' ? s_row_card(d, &prog->spec, c->row_key) : 0;
    if (issued != 0)
        return s_refuse(d, CL_ALREADY_EXISTS, "row key %s was already issued as card %llu",
                        c->row_key, (unsigned long long)issued);
    uint64_t card_id = 0;
    int rc = s_issue_one(d, prog, c, d->r->code, d->r->pin, &card_id);
    if (rc != 0 || d->r->status != CL_OK)
        return rc;
    d->r->result = CL_RES_ISSUED;
    d->r->card.card_id = card_id;
    return 0;
}

static int s_issue_rows(dec_t *d, const ledger_program_t *prog, const cl_cmd_issue_batch_t *b);

static int
s_issue_batch(dec_t *d)
{
    const cl_cmd_issue_batch_t *b = &d->cmd->u.issue_batch;
    const ledger_program_t *prog = s_issue_program(d, b->merchant_id, b->program_id);
    if (prog == NULL)
        return 0;
    if (b->rows_count == 0)
        return s_refuse(d, CL_INVALID_ARGUMENT, "the batch has no rows");
    if (b->rows_count > CL_ISSUE_BATCH_MAX || d->cmd->batch_rows == NULL)
        return s_refuse(d, CL_TOO_LARGE, "a batch holds at most %d cards", CL_ISSUE_BATCH_MAX);
    if (d->out->rows == NULL || d->out->rows_cap < b->rows_count ||
        d->out->events_cap < (size_t)b->rows_count + 1)
        return DECIDE_ENOROOM;

    d->pend = calloc(1, sizeof(*d->pend));
    if (d->pend == NULL)
        return s_refuse(d, CL_INTERNAL, "out of memory");
    int rc = s_issue_rows(d, prog, b);
    free(d->pend);
    d->pend = NULL;
    return rc;
}

/* The rows of a batch issue, each decided on its own (see s_issue_batch()). */
static int
s_issue_rows(dec_t *d, const ledger_program_t *prog, const cl_cmd_issue_batch_t *b)
{
    cl_reply_t *r = d->r;
    uint32_t issued = 0, already = 0;
    /* The row keys' index entries are fetched a few rows ahead: each lookup of a new key would
     * otherwise wait for memory (a random place in an index of millions). */
    enum { PREFETCH_ROWS = 8 };
    for (uint32_t i = 0; i < b->rows_count && i < PREFETCH_ROWS; i++)
        ledger_row_prefetch(d->l, b->merchant_id, b->program_id, d->cmd->batch_rows[i].row_key);
    for (uint32_t i = 0; i < b->rows_count; i++) {
        if (i + PREFETCH_ROWS < b->rows_count)
            ledger_row_prefetch(d->l, b->merchant_id, b->program_id,
                                d->cmd->batch_rows[i + PREFETCH_ROWS].row_key);
        cl_cmd_issue_card_t row = d->cmd->batch_rows[i];
        cl_issued_row_t *out = &d->out->rows[i];
        memset(out, 0, sizeof(*out));
        COPY(out->row_key, row.row_key);
        COPY(row.merchant_id, b->merchant_id);
        COPY(row.program_id, b->program_id);
        if (row.channel == CL_CHANNEL_NONE)
            row.channel = CL_CHANNEL_ENTERPRISE;
        if (row.row_key[0] == '\0') {
            out->status = CL_INVALID_ARGUMENT;
            COPY(out->message, "row_key is required");
            continue;
        }
        uint64_t existing = s_row_card(d, &prog->spec, row.row_key);
        if (existing != 0) {
            /* Issued by an earlier batch (or earlier in this one): report it, issue nothing. */
            const ledger_card_t *card = ledger_card(d->l, existing);
            const cl_event_t *pending =
                card == NULL ? s_pending_find(d, PF_ROW, row.row_key) : NULL;
            out->status = CL_OK;
            out->already_issued = true;
            out->card_id = existing;
            if (card != NULL)
                COPY(out->code, card->code);
            else if (pending != NULL)
                COPY(out->code, pending->u.card_issued.code);
            COPY(out->message, "already issued");
            already++;
            continue;
        }
        /* Each row is decided on its own: a refused row does not stop the others. */
        r->status = CL_OK;
        r->message[0] = '\0';
        int rc = s_issue_one(d, prog, &row, out->code, out->pin, &out->card_id);
        if (rc != 0)
            return rc;
        out->status = r->status;
        COPY(out->message, r->message);
        issued += r->status == CL_OK;
    }
    r->status = CL_OK;
    r->message[0] = '\0';
    if (issued > 0) {
        cl_event_t *ev = s_emit(d, CL_EV_BATCH_ISSUED);
        if (ev == NULL)
            return DECIDE_ENOROOM;
        cl_ev_batch_issued_t *e = &ev->u.batch_issued;
        e->batch_id = ledger_meta(d->l)->next_batch_id;
        COPY(e->merchant_id, b->merchant_id);
        COPY(e->program_id, b->program_id);
        COPY(e->batch_ref, b->batch_ref);
        e->cards_issued = issued;
        e->rows_already_issued = already;
        for (size_t i = 0; i + 1 < d->out->events_count; i++) {
            if (d->out->events[i].type == CL_EV_CARD_ISSUED)
                d->out->events[i].u.card_issued.batch_id = e->batch_id;
        }
        r->batch_id = e->batch_id;
    }
    r->result = CL_RES_BATCH;
    r->rows = d->out->rows;
    r->rows_count = b->rows_count;
    r->batch_issued = issued;
    r->batch_already_issued = already;
    snprintf(r->message, sizeof(r->message), "%u issued, %u already issued, %u refused", issued,
             already, b->rows_count - issued - already);
    return 0;
}

/* ---- Gifts -------------------------------------------------------------------------------- */

/* The checks before a card may be given away; refuses and returns false otherwise. */
static bool
s_giftable(dec_t *d, const ledger_card_t *card, const char *from_holder)
{
    const ledger_program_t *prog = s_card_program(d, card);
    if (!s_usable(d, card))
        return false;
    if (!prog->spec.transferable) {
        s_refuse(d, CL_NOT_TRANSFERABLE, "cards of program %s cannot be given away",
                 card->program_id);
        return false;
    }
    if (prog->spec.transfers_max != 0 && card->transfers_done >= prog->spec.transfers_max) {
        s_refuse(d, CL_NOT_TRANSFERABLE, "the card has been given away %u times, the most allowed",
                 card->transfers_done);
        return false;
    }
    if (card->open_offer_id != 0) {
        s_refuse(d, CL_GIFT_PENDING, "the card already has an open gift offer (%llu)",
                 (unsigned long long)card->open_offer_id);
        return false;
    }
    if (card->holder[0] != '\0' && strcmp(card->holder, from_holder) != 0) {
        s_refuse(d, CL_PERMISSION_DENIED, "only the card's holder can give it away");
        return false;
    }
    return true;
}

/* May `holder` receive one more card of the program? */
static bool
s_may_receive(dec_t *d, const ledger_card_t *card, const char *holder)
{
    const ledger_program_t *prog = s_card_program(d, card);
    if (holder[0] == '\0') {
        s_refuse(d, CL_INVALID_ARGUMENT, "the new holder is required");
        return false;
    }
    if (strcmp(holder, card->holder) == 0) {
        s_refuse(d, CL_INVALID_ARGUMENT, "the card already belongs to that holder");
        return false;
    }
    if (prog->spec.per_holder_max != 0 &&
        ledger_holder_count(d->l, card->merchant_id, card->program_id, holder) >=
            prog->spec.per_holder_max) {
        s_refuse(d, CL_HOLDER_LIMIT_REACHED, "the new holder already has %u cards of %s",
                 prog->spec.per_holder_max, card->program_id);
        return false;
    }
    return true;
}

static int64_t
s_offer_expiry(dec_t *d, const ledger_card_t *card)
{
    uint32_t hours = s_card_program(d, card)->spec.gift_offer_ttl_hours;
    if (hours == 0)
        hours = CL_GIFT_TTL_HOURS_DEFAULT;
    return d->ctx->now_us + (int64_t)hours * US_PER_HOUR;
}

static int
s_offer_gift(dec_t *d)
{
    const cl_cmd_gift_t *c = &d->cmd->u.gift;
    const ledger_card_t *card = s_card(d, &c->card, "offer_gift.card");
    if (card == NULL || !s_may(d, R_SELL, card->merchant_id))
        return 0;
    if (!s_giftable(d, card, c->from_holder) || !s_pin_ok(d, card, c->pin))
        return 0;
    if (c->to_holder[0] != '\0' && !s_may_receive(d, card, c->to_holder))
        return 0;

    static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    uint8_t raw[SECRET_CHARS];
    d->ctx->random(raw, sizeof(raw), d->ctx->random_ctx);
    char secret[SECRET_CHARS + 1];
    for (size_t i = 0; i < SECRET_CHARS; i++)
        secret[i] = alphabet[raw[i] % 32];
    secret[SECRET_CHARS] = '\0';

    cl_event_t *ev = s_emit(d, CL_EV_GIFT_OFFERED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_gift_offered_t *e = &ev->u.gift_offered;
    e->card_id = card->card_id;
    e->offer_id = ev->seq;
    COPY(e->from_holder, card->holder);
    COPY(e->to_holder, c->to_holder);
    s_keyed_hash(d->ctx, secret, e->claim_hash);
    e->expires_at_us = s_offer_expiry(d, card);

    cl_reply_t *r = d->r;
    r->result = CL_RES_GIFT;
    r->card.card_id = card->card_id;
    r->offer_id = e->offer_id;
    COPY(r->claim_secret, secret);
    r->offer_expires_at_us = e->expires_at_us;
    return 0;
}

static int
s_claim_or_recall(dec_t *d)
{
    const cl_cmd_gift_close_t *c = &d->cmd->u.gift_close;
    bool claim = d->cmd->type == CL_CMD_CLAIM_GIFT;
    const ledger_card_t *card = s_card(d, &c->card, claim ? "claim_gift.card" : "recall_gift.card");
    if (card == NULL || !s_may(d, R_SELL, card->merchant_id))
        return 0;
    const ledger_offer_t *offer = ledger_offer(d->l, c->offer_id);
    if (offer == NULL || card->open_offer_id != c->offer_id)
        return s_refuse(d, CL_UNKNOWN_OFFER, "the card has no open offer %llu",
                        (unsigned long long)c->offer_id);
    if (d->ctx->now_us >= offer->expires_at_us)
        return s_refuse(d, CL_UNKNOWN_OFFER, "the offer has timed out");
    if (claim) {
        if (!s_usable(d, card))
            return 0;
        uint8_t hash[CL_HASH_LEN];
        s_keyed_hash(d->ctx, c->claim_secret, hash);
        if (sodium_memcmp(hash, offer->claim_hash, CL_HASH_LEN) != 0)
            return s_refuse(d, CL_PERMISSION_DENIED, "wrong claim secret");
        if (offer->to_holder[0] != '\0' && strcmp(offer->to_holder, c->holder) != 0)
            return s_refuse(d, CL_PERMISSION_DENIED, "the offer is for another holder");
        if (!s_may_receive(d, card, c->holder))
            return 0;
    } else if (c->holder[0] != '\0' && strcmp(c->holder, offer->from_holder) != 0) {
        return s_refuse(d, CL_PERMISSION_DENIED, "only the offering holder can recall it");
    }
    cl_event_t *ev = s_emit(d, claim ? CL_EV_GIFT_CLAIMED : CL_EV_GIFT_RECALLED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.gift_closed.card_id = card->card_id;
    ev->u.gift_closed.offer_id = c->offer_id;
    if (claim) {
        COPY(ev->u.gift_closed.new_holder, c->holder);
        COPY(ev->u.gift_closed.previous_holder, card->holder);
    }
    d->r->result = CL_RES_GIFT;
    d->r->card.card_id = card->card_id;
    d->r->offer_id = c->offer_id;
    return 0;
}

static int
s_transfer_card(dec_t *d)
{
    const cl_cmd_gift_t *c = &d->cmd->u.gift;
    const ledger_card_t *card = s_card(d, &c->card, "transfer_card.card");
    if (card == NULL || !s_may(d, R_SELL, card->merchant_id))
        return 0;
    if (!s_giftable(d, card, c->from_holder) || !s_pin_ok(d, card, c->pin))
        return 0;
    if (!s_may_receive(d, card, c->to_holder))
        return 0;
    cl_event_t *offer = s_emit(d, CL_EV_GIFT_OFFERED);
    if (offer == NULL)
        return DECIDE_ENOROOM;
    offer->u.gift_offered.card_id = card->card_id;
    offer->u.gift_offered.offer_id = offer->seq;
    COPY(offer->u.gift_offered.from_holder, card->holder);
    COPY(offer->u.gift_offered.to_holder, c->to_holder);
    offer->u.gift_offered.expires_at_us = s_offer_expiry(d, card);
    uint64_t offer_id = offer->seq;
    cl_event_t *claimed = s_emit(d, CL_EV_GIFT_CLAIMED);
    if (claimed == NULL)
        return DECIDE_ENOROOM;
    claimed->u.gift_closed.card_id = card->card_id;
    claimed->u.gift_closed.offer_id = offer_id;
    COPY(claimed->u.gift_closed.new_holder, c->to_holder);
    COPY(claimed->u.gift_closed.previous_holder, card->holder);
    d->r->result = CL_RES_GIFT;
    d->r->card.card_id = card->card_id;
    d->r->offer_id = offer_id;
    return 0;
}

/* ---- Value: redeem, reverse, reload, transfer, adjust ------------------------------------- */

/* The discount a voucher gives on an order, or a refusal (returns false). */
static bool
s_voucher_discount(dec_t *d, const cl_program_spec_t *spec, const cl_cmd_redeem_t *c,
                   int64_t *out_discount)
{
    const cl_voucher_rule_t *v = &spec->voucher;
    if (spec->kind == CL_KIND_VOUCHER_EXCHANGE) {
        if (c->sku[0] == '\0') {
            s_refuse(d, CL_INVALID_ARGUMENT, "an exchange voucher needs the item's SKU");
            return false;
        }
        for (uint32_t i = 0; i < v->skus_count; i++) {
            if (strcmp(v->skus[i], c->sku) == 0) {
                *out_discount = 0;
                return true;
            }
        }
        s_refuse(d, CL_ITEM_NOT_ELIGIBLE, "item %s is not one this voucher can be exchanged for",
                 c->sku);
        return false;
    }
    int64_t order = c->order_amount_minor;
    if (!s_amount_ok(d, "order_amount", order))
        return false;
    int64_t discount = 0;
    switch (spec->kind) {
    case CL_KIND_VOUCHER_THRESHOLD:
    case CL_KIND_VOUCHER_PERCENT:
        if (order < v->threshold_minor) {
            s_refuse(d, CL_THRESHOLD_NOT_MET, "the order must be at least %lld minor units",
                     (long long)v->threshold_minor);
            return false;
        }
        if (spec->kind == CL_KIND_VOUCHER_THRESHOLD) {
            discount = v->amount_off_minor;
        } else {
            /* order <= CL_AMOUNT_MAX_MINOR (1e11) and bp <= 1e4: the product fits in int64. */
            discount = order * (int64_t)v->percent_off_bp / 10000;
            if (v->cap_minor != 0 && discount > v->cap_minor)
                discount = v->cap_minor;
        }
        break;
    default: /* CL_KIND_VOUCHER_CASH */
        discount = v->amount_off_minor;
        break;
    }
    *out_discount = discount < order ? discount : order;
    return true;
}

static int
s_redeem(dec_t *d)
{
    const cl_cmd_redeem_t *c = &d->cmd->u.redeem;
    const ledger_card_t *card = s_card(d, &c->card, "redeem.card");
    if (card == NULL || !s_may(d, R_STORE, card->merchant_id))
        return 0;
    if (c->store_id[0] == '\0')
        return s_refuse(d, CL_INVALID_ARGUMENT, "redeem.store_id is required");
    const ledger_store_t *store = ledger_store(d->l, card->merchant_id, c->store_id);
    if (store == NULL)
        return s_refuse(d, CL_UNKNOWN_STORE, "no store %s", c->store_id);
    if (!s_at_own_store(d, c->store_id))
        return 0;
    const cl_program_spec_t *spec = &s_card_program(d, card)->spec;
    if (!s_store_accepts(spec, store))
        return s_refuse(d, CL_STORE_NOT_ACCEPTING, "store %s does not accept program %s",
                        c->store_id, spec->program_id);
    if (!s_usable(d, card) || !s_pin_ok(d, card, c->pin))
        return 0;

    int64_t amount = 0, balance = card->balance_minor;
    uint32_t uses = 0, uses_after = card->uses_left;
    if (spec->kind == CL_KIND_STORED_VALUE) {
        if (!s_amount_ok(d, "amount", c->amount_minor))
            return 0;
        if (c->amount_minor > card->balance_minor)
            return s_refuse(d, CL_INSUFFICIENT_BALANCE,
                            "the balance is %lld, less than the %lld asked",
                            (long long)card->balance_minor, (long long)c->amount_minor);
        amount = c->amount_minor;
        balance = card->balance_minor - amount;
    } else {
        uses = c->uses != 0 ? c->uses : 1;
        if (s_is_voucher(spec->kind) && uses != 1)
            return s_refuse(d, CL_INVALID_ARGUMENT, "a voucher is used once per order");
        if (uses > CL_USES_MAX)
            return s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "at most %d uses at once", CL_USES_MAX);
        if (uses > card->uses_left)
            return s_refuse(d, CL_INSUFFICIENT_BALANCE, "the card has %u uses left, less than %u",
                            card->uses_left, uses);
        if (s_is_voucher(spec->kind) && !s_voucher_discount(d, spec, c, &amount))
            return 0;
        uses_after = card->uses_left - uses;
    }

    cl_event_t *ev = s_emit(d, CL_EV_CARD_REDEEMED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_card_redeemed_t *e = &ev->u.card_redeemed;
    e->card_id = card->card_id;
    COPY(e->store_id, store->store_id);
    /* No region: it is the store's, which every reader knows from StoreRegistered (journal
     * size; cardledger.proto, CardRedeemed). */
    COPY(e->order_ref, c->order_ref);
    e->amount_minor = amount;
    e->uses = uses;
    e->balance_after_minor = balance;
    e->uses_after = uses_after;
    e->order_amount_minor = s_is_voucher(spec->kind) ? c->order_amount_minor : 0;
    COPY(e->sku, spec->kind == CL_KIND_VOUCHER_EXCHANGE ? c->sku : "");

    cl_reply_t *r = d->r;
    r->result = CL_RES_REDEEMED;
    r->card.card_id = card->card_id;
    r->redemption_seq = ev->seq;
    r->amount_minor = amount;
    r->uses = uses;
    r->discount_minor = s_is_voucher(spec->kind) ? amount : 0;
    COPY(r->sku, e->sku);
    return 0;
}

static int
s_reverse(dec_t *d)
{
    const cl_cmd_reverse_t *c = &d->cmd->u.reverse;
    const ledger_card_t *card = s_card(d, &c->card, "reverse_redemption.card");
    if (card == NULL || !s_may(d, R_STORE, card->merchant_id))
        return 0;
    const ledger_redemption_t *red = ledger_redemption(d->l, c->redemption_seq);
    if (red == NULL || red->card_id != card->card_id)
        return s_refuse(d, CL_UNKNOWN_REDEMPTION, "the card has no redemption %llu",
                        (unsigned long long)c->redemption_seq);
    const char *store_id = c->store_id[0] != '\0' ? c->store_id : red->store_id;
    if (ledger_store(d->l, card->merchant_id, store_id) == NULL)
        return s_refuse(d, CL_UNKNOWN_STORE, "no store %s", store_id);
    if (!s_at_own_store(d, store_id))
        return 0;
    if (d->who->role == CL_ROLE_STORE_TERMINAL && strcmp(red->store_id, store_id) != 0)
        return s_refuse(d, CL_PERMISSION_DENIED, "a redemption is reversed at its own store (%s)",
                        red->store_id);
    if (s_expired(d, card))
        return s_refuse(d, CL_CARD_EXPIRED, "the card has expired; refund the order instead");

    const cl_program_spec_t *spec = &s_card_program(d, card)->spec;
    int64_t left_minor = red->amount_minor - red->reversed_minor;
    uint32_t left_uses = red->uses - red->reversed_uses;
    if (left_minor == 0 && left_uses == 0)
        return s_refuse(d, CL_REVERSAL_EXCEEDS, "redemption %llu is already fully reversed",
                        (unsigned long long)c->redemption_seq);
    int64_t amount = left_minor;
    uint32_t uses = left_uses;
    if (spec->kind == CL_KIND_STORED_VALUE) {
        if (c->amount_minor < 0)
            return s_refuse(d, CL_AMOUNT_INVALID, "amount must not be negative");
        if (c->amount_minor > left_minor)
            return s_refuse(d, CL_REVERSAL_EXCEEDS,
                            "only %lld of redemption %llu is left to reverse",
                            (long long)left_minor, (unsigned long long)c->redemption_seq);
        if (c->amount_minor != 0)
            amount = c->amount_minor;
    } else if (spec->kind == CL_KIND_PUNCH) {
        if (c->uses > left_uses)
            return s_refuse(d, CL_REVERSAL_EXCEEDS, "only %u uses of that redemption are left",
                            left_uses);
        if (c->uses != 0)
            uses = c->uses;
    }
    int64_t balance = card->balance_minor;
    if (spec->kind == CL_KIND_STORED_VALUE && __builtin_add_overflow(balance, amount, &balance))
        return s_refuse(d, CL_OVERFLOW, "the balance would overflow");

    cl_event_t *ev = s_emit(d, CL_EV_REDEMPTION_REVERSED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_redemption_reversed_t *e = &ev->u.redemption_reversed;
    e->card_id = card->card_id;
    e->redemption_seq = c->redemption_seq;
    COPY(e->store_id, store_id);
    e->amount_minor = amount;
    e->uses = uses;
    e->balance_after_minor = balance;
    e->uses_after = card->uses_left + uses;
    COPY(e->reason, c->reason);
    d->r->result = CL_RES_REDEEMED;
    d->r->card.card_id = card->card_id;
    d->r->redemption_seq = c->redemption_seq;
    d->r->amount_minor = amount;
    d->r->uses = uses;
    return 0;
}

static int
s_reload(dec_t *d)
{
    const cl_cmd_reload_t *c = &d->cmd->u.reload;
    const ledger_card_t *card = s_card(d, &c->card, "reload.card");
    if (card == NULL || !s_may(d, R_SELL | R(CL_ROLE_STORE_TERMINAL), card->merchant_id))
        return 0;
    const ledger_program_t *prog = s_card_program(d, card);
    if (prog->spec.kind != CL_KIND_STORED_VALUE || !prog->spec.reloadable)
        return s_refuse(d, CL_NOT_RELOADABLE, "cards of program %s cannot be reloaded",
                        card->program_id);
    if (prog->closed)
        return s_refuse(d, CL_PROGRAM_CLOSED, "program %s is closed", card->program_id);
    if (c->store_id[0] != '\0') {
        if (ledger_store(d->l, card->merchant_id, c->store_id) == NULL)
            return s_refuse(d, CL_UNKNOWN_STORE, "no store %s", c->store_id);
        if (!s_at_own_store(d, c->store_id))
            return 0;
    } else if (d->who->role == CL_ROLE_STORE_TERMINAL) {
        return s_refuse(d, CL_INVALID_ARGUMENT, "reload.store_id is required at a store");
    }
    if (!s_usable(d, card) || !s_amount_ok(d, "amount", c->amount_minor))
        return 0;
    int64_t price = c->price_paid_minor != 0 ? c->price_paid_minor : c->amount_minor;
    if (price < 0 || price > CL_AMOUNT_MAX_MINOR)
        return s_refuse(d, CL_AMOUNT_INVALID, "price_paid must be 0..%lld",
                        (long long)CL_AMOUNT_MAX_MINOR);
    int64_t balance;
    if (__builtin_add_overflow(card->balance_minor, c->amount_minor, &balance))
        return s_refuse(d, CL_OVERFLOW, "the balance would overflow");
    if (balance > s_balance_max(&prog->spec))
        return s_refuse(d, CL_MAX_BALANCE_EXCEEDED,
                        "the balance would be %lld, above the program's maximum of %lld",
                        (long long)balance, (long long)s_balance_max(&prog->spec));
    cl_event_t *ev = s_emit(d, CL_EV_CARD_RELOADED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_card_reloaded_t *e = &ev->u.card_reloaded;
    e->card_id = card->card_id;
    e->amount_minor = c->amount_minor;
    e->price_paid_minor = price;
    e->balance_after_minor = balance;
    e->channel = c->channel != CL_CHANNEL_NONE ? c->channel
                 : c->store_id[0] != '\0'      ? CL_CHANNEL_STORE
                                               : CL_CHANNEL_ONLINE;
    COPY(e->store_id, c->store_id);
    d->r->result = CL_RES_CARD;
    d->r->card.card_id = card->card_id;
    d->r->amount_minor = c->amount_minor;
    return 0;
}

static int
s_transfer_balance(dec_t *d)
{
    const cl_cmd_transfer_balance_t *c = &d->cmd->u.transfer_balance;
    const ledger_card_t *from = s_card(d, &c->from_card, "transfer_balance.from_card");
    if (from == NULL)
        return 0;
    const ledger_card_t *to = s_card(d, &c->to_card, "transfer_balance.to_card");
    if (to == NULL || !s_may(d, R_SELL, from->merchant_id))
        return 0;
    if (from == to)
        return s_refuse(d, CL_INVALID_ARGUMENT, "a card cannot transfer to itself");
    if (strcmp(from->merchant_id, to->merchant_id) != 0)
        return s_refuse(d, CL_WRONG_MERCHANT, "both cards must belong to the same merchant");
    const cl_program_spec_t *fs = &s_card_program(d, from)->spec;
    const cl_program_spec_t *ts = &s_card_program(d, to)->spec;
    if (fs->kind != CL_KIND_STORED_VALUE || ts->kind != CL_KIND_STORED_VALUE)
        return s_refuse(d, CL_WRONG_KIND, "only stored-value cards hold a balance to transfer");
    if (strcmp(fs->currency, ts->currency) != 0)
        return s_refuse(d, CL_CURRENCY_MISMATCH, "the cards are in %s and %s", fs->currency,
                        ts->currency);
    if (!s_usable(d, from) || !s_usable(d, to) || !s_pin_ok(d, from, c->from_pin))
        return 0;
    int64_t amount = c->amount_minor != 0 ? c->amount_minor : from->balance_minor;
    if (!s_amount_ok(d, "amount", amount))
        return c->amount_minor == 0 ? s_refuse(d, CL_INSUFFICIENT_BALANCE, "the balance is zero")
                                    : 0;
    if (amount > from->balance_minor)
        return s_refuse(d, CL_INSUFFICIENT_BALANCE, "the balance is %lld, less than %lld",
                        (long long)from->balance_minor, (long long)amount);
    int64_t to_balance;
    if (__builtin_add_overflow(to->balance_minor, amount, &to_balance))
        return s_refuse(d, CL_OVERFLOW, "the balance would overflow");
    if (to_balance > s_balance_max(ts))
        return s_refuse(d, CL_MAX_BALANCE_EXCEEDED, "the receiving card would exceed %lld",
                        (long long)s_balance_max(ts));
    cl_event_t *ev = s_emit(d, CL_EV_BALANCE_TRANSFERRED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_balance_transferred_t *e = &ev->u.balance_transferred;
    e->from_card_id = from->card_id;
    e->to_card_id = to->card_id;
    e->amount_minor = amount;
    e->from_balance_after_minor = from->balance_minor - amount;
    e->to_balance_after_minor = to_balance;
    d->r->result = CL_RES_TRANSFER;
    d->r->card.card_id = from->card_id;
    d->r->card2.card_id = to->card_id;
    d->r->amount_minor = amount;
    return 0;
}

static int
s_adjust(dec_t *d)
{
    const cl_cmd_adjust_t *c = &d->cmd->u.adjust;
    const ledger_card_t *card = s_card(d, &c->card, "adjust.card");
    if (card == NULL || !s_may(d, R_ADMIN, card->merchant_id))
        return 0;
    if (c->reason[0] == '\0')
        return s_refuse(d, CL_INVALID_ARGUMENT, "an adjustment needs a reason");
    if (c->delta_minor == 0 && c->delta_uses == 0)
        return s_refuse(d, CL_AMOUNT_INVALID, "an adjustment changes something");
    const cl_program_spec_t *spec = &s_card_program(d, card)->spec;
    if (spec->kind == CL_KIND_STORED_VALUE ? c->delta_uses != 0 : c->delta_minor != 0)
        return s_refuse(d, CL_WRONG_KIND, "%s cards are adjusted in %s",
                        spec->kind == CL_KIND_STORED_VALUE ? "stored-value" : "these",
                        spec->kind == CL_KIND_STORED_VALUE ? "money" : "uses");
    if (s_expired(d, card))
        return s_refuse(d, CL_CARD_EXPIRED, "the card has expired");
    if (c->delta_minor > CL_AMOUNT_MAX_MINOR || c->delta_minor < -CL_AMOUNT_MAX_MINOR)
        return s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "the adjustment is above the limit");
    int64_t balance, uses = (int64_t)card->uses_left + c->delta_uses;
    if (__builtin_add_overflow(card->balance_minor, c->delta_minor, &balance))
        return s_refuse(d, CL_OVERFLOW, "the balance would overflow");
    if (balance < 0 || uses < 0)
        return s_refuse(d, CL_INSUFFICIENT_BALANCE, "an adjustment never takes a card below zero");
    if (balance > CL_AMOUNT_MAX_MINOR || uses > CL_USES_MAX)
        return s_refuse(d, CL_AMOUNT_ABOVE_LIMIT, "the card would be above the ledger's limit");
    cl_event_t *ev = s_emit(d, CL_EV_CARD_ADJUSTED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    cl_ev_card_adjusted_t *e = &ev->u.card_adjusted;
    e->card_id = card->card_id;
    e->delta_minor = c->delta_minor;
    e->delta_uses = c->delta_uses;
    e->balance_after_minor = balance;
    e->uses_after = (uint32_t)uses;
    COPY(e->reason, c->reason);
    d->r->result = CL_RES_CARD;
    d->r->card.card_id = card->card_id;
    return 0;
}

/* Freeze, Unfreeze, Unlock. */
static int
s_card_flag(dec_t *d)
{
    const cl_cmd_card_flag_t *c = &d->cmd->u.card_flag;
    const ledger_card_t *card = s_card(d, &c->card, "card");
    if (card == NULL || !s_may(d, R_ADMIN, card->merchant_id))
        return 0;
    cl_event_type_t type;
    switch (d->cmd->type) {
    case CL_CMD_FREEZE:
        if (card->frozen)
            return s_refuse(d, CL_STATE_CONFLICT, "the card is already frozen");
        type = CL_EV_CARD_FROZEN;
        break;
    case CL_CMD_UNFREEZE:
        if (!card->frozen)
            return s_refuse(d, CL_STATE_CONFLICT, "the card is not frozen");
        type = CL_EV_CARD_UNFROZEN;
        break;
    default:
        if (!card->locked)
            return s_refuse(d, CL_STATE_CONFLICT, "the card is not locked");
        type = CL_EV_CARD_UNLOCKED;
        break;
    }
    cl_event_t *ev = s_emit(d, type);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.card_flag.card_id = card->card_id;
    COPY(ev->u.card_flag.reason, c->reason);
    d->r->result = CL_RES_CARD;
    d->r->card.card_id = card->card_id;
    return 0;
}

static int
s_get_card(dec_t *d)
{
    const ledger_card_t *card = s_card(d, &d->cmd->u.card_flag.card, "get_card.card");
    if (card == NULL || !s_may(d, R_ANY, card->merchant_id))
        return 0;
    d->r->result = CL_RES_CARD;
    d->r->card.card_id = card->card_id;
    d->r->as_of_seq = ledger_meta(d->l)->last_seq;
    return 0;
}

static int
s_advance_clock(dec_t *d)
{
    if (!d->ctx->test_clock)
        return s_refuse(d, CL_PERMISSION_DENIED, "the daemon does not run with a test clock");
    if (!s_role_in(d->who, R(CL_ROLE_OPERATOR)))
        return s_refuse(d, CL_PERMISSION_DENIED, "only an operator moves the clock");
    if (d->cmd->u.set_now_us < d->ctx->now_us)
        return s_refuse(d, CL_INVALID_ARGUMENT, "the clock never goes backwards");
    cl_event_t *ev = s_emit(d, CL_EV_CLOCK_ADVANCED);
    if (ev == NULL)
        return DECIDE_ENOROOM;
    ev->u.clock_advanced.now_us = d->cmd->u.set_now_us;
    return 0;
}

/* ---- Entry points ------------------------------------------------------------------------- */

int
decide(const ledger_t *l, const cl_principal_t *who, const cl_command_t *cmd,
       const decide_ctx_t *ctx, decide_out_t *out)
{
    if (l == NULL || who == NULL || cmd == NULL || ctx == NULL || out == NULL ||
        out->reply == NULL || out->events == NULL || ctx->random == NULL || ctx->key == NULL)
        return DECIDE_EINVAL;
    assert(ctx->next_seq > ledger_meta(l)->last_seq);

    dec_t d = { l, who, cmd, ctx, out, out->reply, NULL };
    cl_reply_t *r = out->reply;
    memset(r, 0, sizeof(*r));
    COPY(r->request_id, cmd->request_id);
    r->status = CL_OK;
    out->events_count = 0;

    int rc;
    switch (cmd->type) {
    case CL_CMD_REGISTER_MERCHANT:
        rc = s_register_merchant(&d);
        break;
    case CL_CMD_REGISTER_STORE:
        rc = s_register_store(&d);
        break;
    case CL_CMD_DEFINE_PROGRAM:
    case CL_CMD_UPDATE_PROGRAM:
        rc = s_define_program(&d);
        break;
    case CL_CMD_CLOSE_PROGRAM:
        rc = s_close_program(&d);
        break;
    case CL_CMD_ISSUE_CARD:
        rc = s_issue_card(&d);
        break;
    case CL_CMD_ISSUE_BATCH:
        rc = s_issue_batch(&d);
        break;
    case CL_CMD_OFFER_GIFT:
        rc = s_offer_gift(&d);
        break;
    case CL_CMD_CLAIM_GIFT:
    case CL_CMD_RECALL_GIFT:
        rc = s_claim_or_recall(&d);
        break;
    case CL_CMD_TRANSFER_CARD:
        rc = s_transfer_card(&d);
        break;
    case CL_CMD_REDEEM:
        rc = s_redeem(&d);
        break;
    case CL_CMD_REVERSE_REDEMPTION:
        rc = s_reverse(&d);
        break;
    case CL_CMD_RELOAD:
        rc = s_reload(&d);
        break;
    case CL_CMD_TRANSFER_BALANCE:
        rc = s_transfer_balance(&d);
        break;
    case CL_CMD_ADJUST:
        rc = s_adjust(&d);
        break;
    case CL_CMD_FREEZE:
    case CL_CMD_UNFREEZE:
    case CL_CMD_UNLOCK:
        rc = s_card_flag(&d);
        break;
    case CL_CMD_GET_CARD:
        rc = s_get_card(&d);
        break;
    case CL_CMD_ADVANCE_CLOCK:
        rc = s_advance_clock(&d);
        break;
    default:
        if (cmd->type >= CL_CMD_PROJECTOR_FIRST)
            rc = s_refuse(&d, CL_WRONG_SERVICE, "the projector answers this query, not the daemon");
        else
            rc = s_refuse(&d, CL_UNKNOWN_COMMAND, "the daemon does not know this command");
        break;
    }
    if (rc != 0) {
        out->events_count = 0;
        return rc;
    }
    /* A refusal appends nothing but the security events of a wrong PIN. */
    if (r->status != CL_OK) {
        for (size_t i = 0; i < out->events_count; i++) {
            CL_CHECK(out->events[i].type == CL_EV_PIN_REJECTED ||
                     out->events[i].type == CL_EV_CARD_LOCKED);
        }
        r->result = CL_RES_NONE;
    }
    if (r->message[0] == '\0')
        COPY(r->message, cl_status_sentence(r->status));
    return 0;
}

void
decide_finish(const ledger_t *l, const cl_command_t *cmd, decide_out_t *out)
{
    (void)cmd;
    cl_reply_t *r = out->reply;
    const ledger_card_t *card;
    switch (r->result) {
    case CL_RES_CARD:
    case CL_RES_ISSUED:
    case CL_RES_REDEEMED:
    case CL_RES_GIFT:
    case CL_RES_TRANSFER:
        card = ledger_card(l, r->card.card_id);
        if (card != NULL)
            ledger_card_view(l, card, &r->card);
        if (r->result == CL_RES_TRANSFER && (card = ledger_card(l, r->card2.card_id)) != NULL)
            ledger_card_view(l, card, &r->card2);
        break;
    default:
        break;
    }
}

int
decide_timer(const ledger_t *l, const ledger_timer_t *timer, const decide_ctx_t *ctx,
             decide_out_t *out)
{
    if (l == NULL || timer == NULL || ctx == NULL || out == NULL || out->reply == NULL)
        return DECIDE_EINVAL;
    static const cl_principal_t ledger_self = { .role = CL_ROLE_LEDGER, .name = "ledger" };
    static const cl_command_t none = { .type = CL_CMD_NONE };
    dec_t d = { l, &ledger_self, &none, ctx, out, out->reply, NULL };
    memset(out->reply, 0, sizeof(*out->reply));
    out->events_count = 0;

    const ledger_card_t *card = ledger_card(l, timer->card_id);
    if (card == NULL || timer->due_us > ctx->now_us)
        return 0;
    const ledger_program_t *prog = s_card_program(&d, card);
    cl_event_t *ev;
    switch (timer->kind) {
    case LEDGER_TIMER_OFFER:
        if (card->open_offer_id != timer->offer_id)
            return 0; /* claimed or recalled meanwhile */
        ev = s_emit(&d, CL_EV_GIFT_RETURNED);
        if (ev == NULL)
            return DECIDE_ENOROOM;
        ev->u.gift_closed.card_id = card->card_id;
        ev->u.gift_closed.offer_id = timer->offer_id;
        return 0;
    case LEDGER_TIMER_REMIND:
        if (card->state != CL_CARDSTATE_ACTIVE || card->reminded ||
            ctx->now_us >= card->expires_at_us ||
            (card->balance_minor == 0 && card->uses_left == 0))
            return 0;
        ev = s_emit(&d, CL_EV_EXPIRY_REMINDED);
        if (ev == NULL)
            return DECIDE_ENOROOM;
        ev->u.expiry_reminded.card_id = card->card_id;
        ev->u.expiry_reminded.expires_at_us = card->expires_at_us;
        ev->u.expiry_reminded.balance_minor = card->balance_minor;
        ev->u.expiry_reminded.uses_left = card->uses_left;
        return 0;
    case LEDGER_TIMER_EXPIRE:
        if (card->state != CL_CARDSTATE_ACTIVE || card->expires_at_us != timer->due_us)
            return 0; /* already expired, or a used-up voucher with nothing left to expire */
        if (card->open_offer_id != 0) {
            ev = s_emit(&d, CL_EV_GIFT_RETURNED);
            if (ev == NULL)
                return DECIDE_ENOROOM;
            ev->u.gift_closed.card_id = card->card_id;
            ev->u.gift_closed.offer_id = card->open_offer_id;
        }
        ev = s_emit(&d, CL_EV_CARD_EXPIRED);
        if (ev == NULL)
            return DECIDE_ENOROOM;
        ev->u.card_expired.card_id = card->card_id;
        ev->u.card_expired.uses_left = card->uses_left;
        /* Breakage is what the card is still worth: its balance, or for punch cards and
         * vouchers the unused share of what it was sold as (face value x uses left / uses). */
        ev->u.card_expired.breakage_minor =
            cl_card_value_minor(prog->spec.kind, card->face_value_minor, card->balance_minor,
                                card->uses_left, s_uses_per_card(&prog->spec));
        return 0;
    default:
        return DECIDE_EINVAL;
    }
}
