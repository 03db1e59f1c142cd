/*
 * Stable names and sentences of the contract's enums, and card codes: masked, normalised, hashed.
 *
 * Status names ("insufficient_balance") and event names ("CardRedeemed") are part of the
 * contract: logs, the CLI, PUB topics and journal dumps print them and scripts match on them,
 * so they never change once released. The sentences are the default human text of a Reply
 * (docs/protocol.md lists them all); programs never parse them. Nothing here allocates.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include "domain.h"

/* One row of the status table: the number, its stable name and its default sentence. */
typedef struct s_status_row {
    cl_status_t status;
    const char *name;
    const char *sentence;
} s_status_row_t;

static const s_status_row_t s_statuses[] = {
    { CL_OK, "ok", "Done." },
    { CL_MALFORMED, "malformed", "The message could not be read as a RequestBatch." },
    { CL_TOO_LARGE, "too_large", "The message, the batch or one of its fields is over its limit." },
    { CL_UNKNOWN_COMMAND, "unknown_command", "The request carries no command this service knows." },
    { CL_INVALID_ARGUMENT, "invalid_argument",
      "A field is missing, empty or outside its allowed values." },
    { CL_REQUEST_ID_REUSED, "request_id_reused",
      "This request id was already used for a different request." },
    { CL_WRONG_SERVICE, "wrong_service", "This query is answered by another service." },
    { CL_UNKNOWN_MERCHANT, "unknown_merchant", "There is no such merchant." },
    { CL_UNKNOWN_STORE, "unknown_store", "There is no such store." },
    { CL_UNKNOWN_PROGRAM, "unknown_program", "There is no such program." },
    { CL_UNKNOWN_CARD, "unknown_card", "There is no such card." },
    { CL_WRONG_MERCHANT, "wrong_merchant", "It belongs to another merchant." },
    { CL_STORE_NOT_ACCEPTING, "store_not_accepting", "This store does not accept this card." },
    { CL_ALREADY_EXISTS, "already_exists", "It already exists." },
    { CL_UNKNOWN_REDEMPTION, "unknown_redemption", "There is no such redemption on this card." },
    { CL_UNKNOWN_OFFER, "unknown_offer", "There is no open gift offer with this id on this card." },
    { CL_AMOUNT_INVALID, "amount_invalid", "The amount must be greater than zero." },
    { CL_AMOUNT_ABOVE_LIMIT, "amount_above_limit", "The amount is above the allowed maximum." },
    { CL_OVERFLOW, "overflow", "The amounts involved are too large to add up." },
    { CL_DENOMINATION_INVALID, "denomination_invalid",
      "This face value is not one of the program's denominations." },
    { CL_CURRENCY_MISMATCH, "currency_mismatch", "The two cards are in different currencies." },
    { CL_CARD_FROZEN, "card_frozen", "The card is frozen." },
    { CL_CARD_LOCKED, "card_locked", "The card is locked after too many wrong PINs." },
    { CL_CARD_EXPIRED, "card_expired", "The card has expired." },
    { CL_CARD_CLOSED, "card_closed", "The card can no longer be used." },
    { CL_INSUFFICIENT_BALANCE, "insufficient_balance",
      "The card's balance or remaining uses are too low for this." },
    { CL_NOT_TRANSFERABLE, "not_transferable", "This card cannot be given or transferred." },
    { CL_NOT_RELOADABLE, "not_reloadable", "This card cannot be reloaded." },
    { CL_MAX_BALANCE_EXCEEDED, "max_balance_exceeded",
      "This would take the card above its maximum balance." },
    { CL_PIN_REQUIRED, "pin_required", "This card needs its PIN." },
    { CL_PIN_WRONG, "pin_wrong", "The PIN is wrong." },
    { CL_GIFT_PENDING, "gift_pending", "The card has an open gift offer." },
    { CL_NOT_YET_VALID, "not_yet_valid", "The card is not valid yet." },
    { CL_THRESHOLD_NOT_MET, "threshold_not_met",
      "The order is below the voucher's minimum amount." },
    { CL_ITEM_NOT_ELIGIBLE, "item_not_eligible",
      "This item cannot be exchanged with this voucher." },
    { CL_REVERSAL_EXCEEDS, "reversal_exceeds",
      "This is more than what is left to reverse of that redemption." },
    { CL_WRONG_KIND, "wrong_kind", "This does not apply to this kind of card." },
    { CL_STATE_CONFLICT, "state_conflict", "The card is not in a state that allows this." },
    { CL_PROGRAM_CLOSED, "program_closed", "The program is closed." },
    { CL_STOCK_EXHAUSTED, "stock_exhausted", "The program has no cards left to issue." },
    { CL_HOLDER_LIMIT_REACHED, "holder_limit_reached",
      "The holder already has as many cards of this program as allowed." },
    { CL_UNAUTHENTICATED, "unauthenticated", "The caller is not authenticated." },
    { CL_PERMISSION_DENIED, "permission_denied", "The caller is not allowed to do this." },
    { CL_RATE_LIMITED, "rate_limited", "Too many requests; try again later." },
    { CL_UNAVAILABLE, "unavailable",
      "The ledger is not available right now; retry with the same request id." },
    { CL_INTERNAL, "internal", "An internal error occurred; the request was not applied." },
    { CL_STORAGE_FULL, "storage_full", "The journal is full; the request was not applied." },
};

static const s_status_row_t *
s_status_row(cl_status_t status)
{
    for (size_t i = 0; i < sizeof s_statuses / sizeof s_statuses[0]; i++) {
        if (s_statuses[i].status == status) {
            return &s_statuses[i];
        }
    }
    return NULL;
}

const char *
cl_status_name(cl_status_t status)
{
    const s_status_row_t *row = s_status_row(status);
    return row != NULL ? row->name : "unknown";
}

const char *
cl_status_sentence(cl_status_t status)
{
    const s_status_row_t *row = s_status_row(status);
    return row != NULL ? row->sentence
                       : "The ledger answered with a status this client does not know.";
}

const char *
cl_event_name(cl_event_type_t type)
{
    switch (type) {
    case CL_EV_MERCHANT_REGISTERED:
        return "MerchantRegistered";
    case CL_EV_STORE_REGISTERED:
        return "StoreRegistered";
    case CL_EV_PROGRAM_DEFINED:
        return "ProgramDefined";
    case CL_EV_PROGRAM_UPDATED:
        return "ProgramUpdated";
    case CL_EV_PROGRAM_CLOSED:
        return "ProgramClosed";
    case CL_EV_CARD_ISSUED:
        return "CardIssued";
    case CL_EV_BATCH_ISSUED:
        return "BatchIssued";
    case CL_EV_GIFT_OFFERED:
        return "GiftOffered";
    case CL_EV_GIFT_CLAIMED:
        return "GiftClaimed";
    case CL_EV_GIFT_RECALLED:
        return "GiftRecalled";
    case CL_EV_GIFT_RETURNED:
        return "GiftReturned";
    case CL_EV_CARD_REDEEMED:
        return "CardRedeemed";
    case CL_EV_REDEMPTION_REVERSED:
        return "RedemptionReversed";
    case CL_EV_CARD_RELOADED:
        return "CardReloaded";
    case CL_EV_BALANCE_TRANSFERRED:
        return "BalanceTransferred";
    case CL_EV_CARD_ADJUSTED:
        return "CardAdjusted";
    case CL_EV_CARD_FROZEN:
        return "CardFrozen";
    case CL_EV_CARD_UNFROZEN:
        return "CardUnfrozen";
    case CL_EV_CARD_EXPIRED:
        return "CardExpired";
    case CL_EV_EXPIRY_REMINDED:
        return "ExpiryReminded";
    case CL_EV_PIN_REJECTED:
        return "PinRejected";
    case CL_EV_CARD_LOCKED:
        return "CardLocked";
    case CL_EV_CARD_UNLOCKED:
        return "CardUnlocked";
    case CL_EV_CLOCK_ADVANCED:
        return "ClockAdvanced";
    case CL_EV_NONE:
        break;
    }
    return "unknown";
}

int
cl_key_file_read(const char *path, char out[CL_KEY_Z85_LEN + 1])
{
    FILE *f = path != NULL ? fopen(path, "r") : NULL;
    if (f == NULL)
        return path != NULL ? -errno : -EINVAL;
    char buf[128] = { 0 };
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    char *save = NULL;
    char *tok = strtok_r(buf, " \t\r\n", &save);
    bool ok = n > 0 && tok != NULL && strlen(tok) == CL_KEY_Z85_LEN &&
              strtok_r(NULL, " \t\r\n", &save) == NULL;
    if (ok)
        memcpy(out, tok, CL_KEY_Z85_LEN + 1);
    explicit_bzero(buf, sizeof(buf));
    return ok ? 0 : -EINVAL;
}

bool
cl_id_ok(const char *id)
{
    if (id[0] == '\0')
        return false;
    for (const char *p = id; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    }
    return true;
}

void
cl_code_normalize(const char *in, char out[CL_CODE_MAX + 1])
{
    size_t n = 0;
    for (const char *p = in; *p != '\0' && n < CL_CODE_MAX; p++) {
        if (*p == ' ' || *p == '-')
            continue;
        out[n++] = (char)toupper((unsigned char)*p);
    }
    out[n] = '\0';
}

void
cl_code_hash(const char *code, uint8_t out[CL_HASH_LEN])
{
    char norm[CL_CODE_MAX + 1];
    cl_code_normalize(code, norm);
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits(norm, strlen(norm)));
    _Static_assert(sizeof(canon.digest) == CL_HASH_LEN, "a code hash is a hash's length");
    memcpy(out, canon.digest, CL_HASH_LEN);
}

void
cl_code_mask(const char *code, char *out, size_t out_cap)
{
    if (out == NULL || out_cap == 0) {
        return;
    }
    size_t n = code != NULL ? strlen(code) : 0;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < out_cap; i++) {
        /* A dash before every group of 4 counted from the end, except before the first. */
        if (i > 0 && (n - i) % 4 == 0) {
            out[o++] = '-';
            if (o + 1 >= out_cap) {
                break;
            }
        }
        unsigned char c = (unsigned char)code[i];
        bool shown = n > 4 && i >= n - 4 && c > 0x20 && c < 0x7f;
        out[o++] = shown ? (char)c : '*';
    }
    out[o] = '\0';
}
