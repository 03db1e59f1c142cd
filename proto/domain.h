/*
 * The contract as the ledger's own C types.
 *
 * cardledger.proto is the wire and journal contract; protoc-c turns it into structs whose
 * memory is owned by protobuf-c's allocator. The domain code (deciding commands, folding events
 * into state) must not depend on those rules, so it works on the plain, fixed-size structs
 * below: no pointers, no allocation, copyable by assignment. proto/codec.c is the one small
 * translation layer between the two; it checks every named limit on the way in, so a domain
 * struct that exists is already within its limits.
 *
 * Strings are NUL-terminated char arrays of a named maximum (the array has room for the NUL).
 * Money is int64 minor units; times are int64 microseconds since the Unix epoch (UTC).
 */
#ifndef CARDLEDGER_DOMAIN_H
#define CARDLEDGER_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Named limits (docs/protocol.md lists them; the codec refuses anything over) ---------- */

#define CL_ID_MAX                 32   /* merchant, store, program ids: [A-Za-z0-9._-], 1..32 */
#define CL_REGION_MAX             16   /* region codes */
#define CL_NAME_MAX               64   /* display names, batch refs, themes */
#define CL_HOLDER_MAX             64   /* opaque holder reference */
#define CL_CODE_MAX               32   /* card codes, generated or imported */
#define CL_PIN_MAX                12   /* PINs, generated (6 digits) or imported */
#define CL_SECRET_MAX             32   /* gift claim secrets */
#define CL_ORDER_REF_MAX          64   /* order references */
#define CL_REASON_MAX             128  /* free-text reasons and memos */
#define CL_SKU_MAX                32   /* item codes of exchange vouchers */
#define CL_REQUEST_ID_MAX         64   /* client request ids */
#define CL_CURRENCY_LEN           3    /* ISO 4217 letters */
#define CL_DENOMS_MAX             16   /* fixed denominations per program */
#define CL_ACCEPT_STORES_MAX      64   /* accepting stores listed per program */
#define CL_ACCEPT_REGIONS_MAX     32   /* accepting regions listed per program */
#define CL_SKUS_MAX               32   /* eligible SKUs per exchange voucher */
#define CL_BATCH_REQUESTS_MAX     256  /* requests in one RequestBatch message */
#define CL_ISSUE_BATCH_MAX        1000 /* cards in one IssueBatch command */
#define CL_FRAME_MAX_BYTES        (4 * 1024 * 1024) /* one ZeroMQ message (ZMQ_MAXMSGSIZE) */
#define CL_AMOUNT_MAX_MINOR       100000000000LL    /* one amount or balance: 1e9 major units */
#define CL_USES_MAX               10000             /* uses on one card */
#define CL_PIN_FAILURES_LOCK      5                 /* wrong PINs in a row that lock a card */
#define CL_VALID_DAYS_MAX         3660              /* validity of N days from issue */
#define CL_GIFT_TTL_HOURS_DEFAULT 72
#define CL_HASH_LEN               16 /* keyed hashes of PINs and claim secrets */

/* ---- Enumerations: numerically identical to the .proto enums ------------------------------ */

/* Reply status codes. The numbers are the wire's (cardledger.proto, enum Status). */
typedef enum cl_status {
    CL_OK = 1,
    CL_MALFORMED = 10,
    CL_TOO_LARGE = 11,
    CL_UNKNOWN_COMMAND = 12,
    CL_INVALID_ARGUMENT = 13,
    CL_REQUEST_ID_REUSED = 14,
    CL_WRONG_SERVICE = 15,
    CL_UNKNOWN_MERCHANT = 20,
    CL_UNKNOWN_STORE = 21,
    CL_UNKNOWN_PROGRAM = 22,
    CL_UNKNOWN_CARD = 23,
    CL_WRONG_MERCHANT = 24,
    CL_STORE_NOT_ACCEPTING = 25,
    CL_ALREADY_EXISTS = 26,
    CL_UNKNOWN_REDEMPTION = 27,
    CL_UNKNOWN_OFFER = 28,
    CL_AMOUNT_INVALID = 30,
    CL_AMOUNT_ABOVE_LIMIT = 31,
    CL_OVERFLOW = 32,
    CL_DENOMINATION_INVALID = 33,
    CL_CURRENCY_MISMATCH = 34,
    CL_CARD_FROZEN = 40,
    CL_CARD_LOCKED = 41,
    CL_CARD_EXPIRED = 42,
    CL_CARD_CLOSED = 43,
    CL_INSUFFICIENT_BALANCE = 44,
    CL_NOT_TRANSFERABLE = 45,
    CL_NOT_RELOADABLE = 46,
    CL_MAX_BALANCE_EXCEEDED = 47,
    CL_PIN_REQUIRED = 48,
    CL_PIN_WRONG = 49,
    CL_GIFT_PENDING = 50,
    CL_NOT_YET_VALID = 51,
    CL_THRESHOLD_NOT_MET = 52,
    CL_ITEM_NOT_ELIGIBLE = 53,
    CL_REVERSAL_EXCEEDS = 54,
    CL_WRONG_KIND = 55,
    CL_STATE_CONFLICT = 56,
    CL_PROGRAM_CLOSED = 60,
    CL_STOCK_EXHAUSTED = 61,
    CL_HOLDER_LIMIT_REACHED = 62,
    CL_UNAUTHENTICATED = 70,
    CL_PERMISSION_DENIED = 71,
    CL_RATE_LIMITED = 72,
    CL_UNAVAILABLE = 90,
    CL_INTERNAL = 91,
    CL_STORAGE_FULL = 92,
} cl_status_t;

/* The stable lower-case name of a status ("insufficient_balance"), for logs and the CLI;
 * "unknown" for a number that is not a status. */
const char *cl_status_name(cl_status_t status);

/* The default human sentence of a status, for a Reply's message when nothing more specific is
 * known ("The card is frozen."); never NULL. docs/protocol.md lists them all. */
const char *cl_status_sentence(cl_status_t status);

typedef enum cl_kind {
    CL_KIND_NONE = 0,
    CL_KIND_STORED_VALUE = 1,
    CL_KIND_PUNCH = 2,
    CL_KIND_VOUCHER_THRESHOLD = 3,
    CL_KIND_VOUCHER_PERCENT = 4,
    CL_KIND_VOUCHER_CASH = 5,
    CL_KIND_VOUCHER_EXCHANGE = 6,
} cl_kind_t;

typedef enum cl_channel {
    CL_CHANNEL_NONE = 0,
    CL_CHANNEL_ONLINE = 1,
    CL_CHANNEL_STORE = 2,
    CL_CHANNEL_ENTERPRISE = 3,
    CL_CHANNEL_PLATFORM = 4,
} cl_channel_t;

typedef enum cl_card_state {
    CL_CARDSTATE_ACTIVE = 1,
    CL_CARDSTATE_EXPIRED = 2,
    CL_CARDSTATE_EXHAUSTED = 3,
} cl_card_state_t;

typedef enum cl_accept_scope {
    CL_ACCEPT_ALL = 1,
    CL_ACCEPT_STORE_LIST = 2,
    CL_ACCEPT_REGION_LIST = 3,
} cl_accept_scope_t;

typedef enum cl_role {
    CL_ROLE_NONE = 0,
    CL_ROLE_MERCHANT_ADMIN = 1,
    CL_ROLE_ISSUER = 2,
    CL_ROLE_STORE_TERMINAL = 3,
    CL_ROLE_ANALYST = 4,
    CL_ROLE_OPERATOR = 5,
    CL_ROLE_LEDGER = 6,
} cl_role_t;

/* ---- Shared shapes ------------------------------------------------------------------------ */

/* Who acts: an explicit argument of every decision (PRODUCT.md section 8). */
typedef struct cl_principal {
    cl_role_t role;
    char merchant_id[CL_ID_MAX + 1]; /* empty: operator or ledger, all merchants */
    char store_id[CL_ID_MAX + 1];    /* store terminals: the one store they are bound to */
    char name[CL_NAME_MAX + 1];      /* key name, for the audit trail */
} cl_principal_t;

/* A card as a command names it: by code, or (card_id != 0) by the ledger's id. */
typedef struct cl_card_ref {
    uint64_t card_id;
    char code[CL_CODE_MAX + 1];
} cl_card_ref_t;

/*
 * Masks a card code for logs, exports and replies: every byte but the last 4 becomes '*', the
 * last 4 stay when they are printable ASCII (else '*' too), and the result is grouped in 4s
 * counted from the end, joined by '-': "ABCD2345EFGH4821" -> "****-****-****-4821",
 * "A2345EFGH4821" -> "*-****-****-4821". A code of 4 bytes or fewer becomes all '*' ("12" ->
 * "**"). A code of n > 0 bytes needs n + (n - 1) / 4 + 1 bytes of out; CL_CODE_MAX bytes fit
 * the CL_CODE_MAX + 8 of cl_card_view_t.code_masked. A shorter out_cap truncates; out is always
 * NUL-terminated when out_cap > 0. code NULL reads as "".
 */
void cl_code_mask(const char *code, char *out, size_t out_cap);

/* Characters of a CurveZMQ key in Z85 (without the NUL). */
#define CL_KEY_Z85_LEN 40

/*
 * Reads a key file as cardledger-keys writes it: one token of CL_KEY_Z85_LEN characters,
 * whitespace around it allowed. Whether it is a valid key is the caller's to check (ZeroMQ's
 * Z85). The file's bytes are wiped from memory. Returns 0, a negated errno (cannot open), or
 * -EINVAL (not one token of that length).
 */
int cl_key_file_read(const char *path, char out[CL_KEY_Z85_LEN + 1]);

/* An id (merchant, store, program, row key) as the ledger accepts it: letters, digits, '.', '_'
 * and '-', at least one. */
bool cl_id_ok(const char *id);

/* A code as people may type it, normalised: spaces and dashes dropped, letters upper-cased, at
 * most CL_CODE_MAX bytes kept. The daemon and the projector compare codes in this form. */
void cl_code_normalize(const char *in, char out[CL_CODE_MAX + 1]);

/* XXH3-128 of the normalised code, in canonical (big-endian) bytes: the key of the balances
 * projection's code index, and what an export carries instead of the code (CardIssued.code_hash).
 */
void cl_code_hash(const char *code, uint8_t out[CL_HASH_LEN]);

typedef struct cl_voucher_rule {
    int64_t threshold_minor;
    int64_t amount_off_minor;
    uint32_t percent_off_bp;
    int64_t cap_minor;
    uint32_t skus_count;
    char skus[CL_SKUS_MAX][CL_SKU_MAX + 1];
    uint32_t uses_per_card;
} cl_voucher_rule_t;

typedef struct cl_program_spec {
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char name[CL_NAME_MAX + 1];
    cl_kind_t kind;
    char currency[CL_CURRENCY_LEN + 1];
    uint32_t denoms_count;
    int64_t denoms_minor[CL_DENOMS_MAX];
    int64_t custom_min_minor;
    int64_t custom_max_minor;
    bool has_window; /* validity: a fixed window ... */
    int64_t valid_from_us;
    int64_t valid_until_us;
    uint32_t valid_days; /* ... or N days from issue (when !has_window) */
    cl_accept_scope_t accept_scope;
    uint32_t accept_stores_count;
    char accept_stores[CL_ACCEPT_STORES_MAX][CL_ID_MAX + 1];
    uint32_t accept_regions_count;
    char accept_regions[CL_ACCEPT_REGIONS_MAX][CL_REGION_MAX + 1];
    uint64_t stock_max;
    uint32_t per_holder_max;
    bool transferable;
    uint32_t transfers_max;
    bool pin_required;
    bool reloadable;
    int64_t balance_max_minor;
    char theme[CL_NAME_MAX + 1];
    uint32_t uses_per_card;
    cl_voucher_rule_t voucher;
    uint32_t remind_days_before_expiry;
    uint32_t gift_offer_ttl_hours;
} cl_program_spec_t;

/* ---- Events: one struct per journal event, in a tagged union ------------------------------ */

typedef enum cl_event_type {
    CL_EV_NONE = 0,
    CL_EV_MERCHANT_REGISTERED = 10,
    CL_EV_STORE_REGISTERED = 11,
    CL_EV_PROGRAM_DEFINED = 12,
    CL_EV_PROGRAM_UPDATED = 13,
    CL_EV_PROGRAM_CLOSED = 14,
    CL_EV_CARD_ISSUED = 20,
    CL_EV_BATCH_ISSUED = 21,
    CL_EV_GIFT_OFFERED = 22,
    CL_EV_GIFT_CLAIMED = 23,
    CL_EV_GIFT_RECALLED = 24,
    CL_EV_GIFT_RETURNED = 25,
    CL_EV_CARD_REDEEMED = 26,
    CL_EV_REDEMPTION_REVERSED = 27,
    CL_EV_CARD_RELOADED = 28,
    CL_EV_BALANCE_TRANSFERRED = 29,
    CL_EV_CARD_ADJUSTED = 30,
    CL_EV_CARD_FROZEN = 31,
    CL_EV_CARD_UNFROZEN = 32,
    CL_EV_CARD_EXPIRED = 33,
    CL_EV_EXPIRY_REMINDED = 34,
    CL_EV_PIN_REJECTED = 35,
    CL_EV_CARD_LOCKED = 36,
    CL_EV_CARD_UNLOCKED = 37,
    CL_EV_CLOCK_ADVANCED = 40,
} cl_event_type_t;

/* The stable name of an event type ("CardRedeemed"), for topics, logs and dumps. */
const char *cl_event_name(cl_event_type_t type);

typedef struct cl_ev_merchant_registered {
    char merchant_id[CL_ID_MAX + 1];
    char name[CL_NAME_MAX + 1];
} cl_ev_merchant_registered_t;

typedef struct cl_ev_store_registered {
    char merchant_id[CL_ID_MAX + 1];
    char store_id[CL_ID_MAX + 1];
    char name[CL_NAME_MAX + 1];
    char region[CL_REGION_MAX + 1];
} cl_ev_store_registered_t;

typedef struct cl_ev_program_closed {
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char reason[CL_REASON_MAX + 1];
} cl_ev_program_closed_t;

typedef struct cl_ev_card_issued {
    uint64_t card_id;
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char code[CL_CODE_MAX + 1];
    bool has_pin;
    uint8_t pin_hash[CL_HASH_LEN];
    char holder[CL_HOLDER_MAX + 1];
    cl_channel_t channel;
    char store_id[CL_ID_MAX + 1];
    char region[CL_REGION_MAX + 1];
    int64_t face_value_minor;
    int64_t price_paid_minor;
    uint32_t uses;
    int64_t valid_from_us;
    int64_t expires_at_us;
    bool imported;
    char row_key[CL_ID_MAX + 1];
    uint64_t batch_id;
    /* Only in an export, where code is masked: cl_code_hash() of the real code. */
    bool has_code_hash;
    uint8_t code_hash[CL_HASH_LEN];
} cl_ev_card_issued_t;

typedef struct cl_ev_batch_issued {
    uint64_t batch_id;
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char batch_ref[CL_NAME_MAX + 1];
    uint32_t cards_issued;
    uint32_t rows_already_issued;
} cl_ev_batch_issued_t;

typedef struct cl_ev_gift_offered {
    uint64_t card_id;
    uint64_t offer_id; /* the sequence number of this event */
    char from_holder[CL_HOLDER_MAX + 1];
    char to_holder[CL_HOLDER_MAX + 1];
    uint8_t claim_hash[CL_HASH_LEN];
    int64_t expires_at_us;
} cl_ev_gift_offered_t;

/* GiftClaimed, GiftRecalled and GiftReturned. */
typedef struct cl_ev_gift_closed {
    uint64_t card_id;
    uint64_t offer_id;
    char new_holder[CL_HOLDER_MAX + 1];      /* claimed only */
    char previous_holder[CL_HOLDER_MAX + 1]; /* claimed only */
} cl_ev_gift_closed_t;

typedef struct cl_ev_card_redeemed {
    uint64_t card_id;
    char store_id[CL_ID_MAX + 1];
    /* The store's region as journals written before the daemon stopped recording it carry it;
     * "" in new events. Readers take the region of store_id's StoreRegistered instead. */
    char region[CL_REGION_MAX + 1];
    char order_ref[CL_ORDER_REF_MAX + 1];
    int64_t amount_minor;
    uint32_t uses;
    int64_t balance_after_minor;
    uint32_t uses_after;
    int64_t order_amount_minor;
    char sku[CL_SKU_MAX + 1];
} cl_ev_card_redeemed_t;

typedef struct cl_ev_redemption_reversed {
    uint64_t card_id;
    uint64_t redemption_seq;
    char store_id[CL_ID_MAX + 1];
    int64_t amount_minor;
    uint32_t uses;
    int64_t balance_after_minor;
    uint32_t uses_after;
    char reason[CL_REASON_MAX + 1];
} cl_ev_redemption_reversed_t;

typedef struct cl_ev_card_reloaded {
    uint64_t card_id;
    int64_t amount_minor;
    int64_t price_paid_minor;
    int64_t balance_after_minor;
    cl_channel_t channel;
    char store_id[CL_ID_MAX + 1];
} cl_ev_card_reloaded_t;

typedef struct cl_ev_balance_transferred {
    uint64_t from_card_id;
    uint64_t to_card_id;
    int64_t amount_minor;
    int64_t from_balance_after_minor;
    int64_t to_balance_after_minor;
} cl_ev_balance_transferred_t;

typedef struct cl_ev_card_adjusted {
    uint64_t card_id;
    int64_t delta_minor;
    int32_t delta_uses;
    int64_t balance_after_minor;
    uint32_t uses_after;
    char reason[CL_REASON_MAX + 1];
} cl_ev_card_adjusted_t;

/* CardFrozen, CardUnfrozen, CardUnlocked. */
typedef struct cl_ev_card_flag {
    uint64_t card_id;
    char reason[CL_REASON_MAX + 1];
} cl_ev_card_flag_t;

typedef struct cl_ev_card_expired {
    uint64_t card_id;
    int64_t breakage_minor;
    uint32_t uses_left;
} cl_ev_card_expired_t;

typedef struct cl_ev_expiry_reminded {
    uint64_t card_id;
    int64_t expires_at_us;
    int64_t balance_minor;
    uint32_t uses_left;
} cl_ev_expiry_reminded_t;

/* PinRejected and CardLocked. */
typedef struct cl_ev_pin {
    uint64_t card_id;
    uint32_t failures_in_row;
} cl_ev_pin_t;

typedef struct cl_ev_clock_advanced {
    int64_t now_us;
} cl_ev_clock_advanced_t;

/* One journal event with its envelope fields. seq and at_us come from the journal header. */
typedef struct cl_event {
    cl_event_type_t type;
    uint64_t seq;  /* journal sequence number (0 until appended) */
    int64_t at_us; /* journal timestamp */
    char request_id[CL_REQUEST_ID_MAX + 1];
    cl_principal_t actor; /* role CL_ROLE_NONE when absent */
    union {
        cl_ev_merchant_registered_t merchant_registered;
        cl_ev_store_registered_t store_registered;
        cl_program_spec_t program; /* ProgramDefined, ProgramUpdated */
        cl_ev_program_closed_t program_closed;
        cl_ev_card_issued_t card_issued;
        cl_ev_batch_issued_t batch_issued;
        cl_ev_gift_offered_t gift_offered;
        cl_ev_gift_closed_t gift_closed; /* GiftClaimed, GiftRecalled, GiftReturned */
        cl_ev_card_redeemed_t card_redeemed;
        cl_ev_redemption_reversed_t redemption_reversed;
        cl_ev_card_reloaded_t card_reloaded;
        cl_ev_balance_transferred_t balance_transferred;
        cl_ev_card_adjusted_t card_adjusted;
        cl_ev_card_flag_t card_flag; /* CardFrozen, CardUnfrozen, CardUnlocked */
        cl_ev_card_expired_t card_expired;
        cl_ev_expiry_reminded_t expiry_reminded;
        cl_ev_pin_t pin; /* PinRejected, CardLocked */
        cl_ev_clock_advanced_t clock_advanced;
    } u;
} cl_event_t;

/* ---- Shared rules (proto/domain.c) --------------------------------------------------------- */

/*
 * What a card is worth now, in minor units. A stored-value card is worth its balance; a punch
 * card or voucher is worth its face value x uses_left / uses_per_card, rounded down (0 when
 * uses_per_card is 0 or the face value is not positive; saturates at INT64_MAX). The daemon's
 * breakage on expiry and the projector's views both use this, so they never disagree.
 */
int64_t cl_card_value_minor(cl_kind_t kind, int64_t face_minor, int64_t balance_minor,
                            uint32_t uses_left, uint32_t uses_per_card);

/*
 * The card an event concerns, or 0 for an event without a card (merchants, stores, programs,
 * batches, the clock). BalanceTransferred concerns two cards: this returns its from card; read
 * ev->u.balance_transferred.to_card_id for the other.
 */
uint64_t cl_event_card_id(const cl_event_t *ev);

#define CL_ENDPOINT_HOST_MAX 255 /* host part of a tcp:// endpoint that the check reads */

/* Why an endpoint may or may not be bound before CurveZMQ keys exist. */
typedef enum cl_endpoint_check {
    CL_ENDPOINT_LOCAL = 0,     /* ipc://, inproc://, or tcp:// on a loopback address */
    CL_ENDPOINT_BAD_TRANSPORT, /* not ipc://, inproc:// or tcp:// */
    CL_ENDPOINT_HAS_SOURCE,    /* tcp://SOURCE;HOST:PORT */
    CL_ENDPOINT_BAD_TCP,       /* not tcp://HOST:PORT (or the host is over its maximum) */
    CL_ENDPOINT_NOT_LOOPBACK,  /* tcp:// on an address other machines can reach */
} cl_endpoint_check_t;

/*
 * The dev-mode endpoint policy: until CurveZMQ keys exist, sockets only use ipc://, inproc://
 * or tcp:// on loopback (127.0.0.0/8, [::1], localhost). Pure string logic; endpoint must be
 * NUL-terminated. Returns CL_ENDPOINT_LOCAL or the reason it is refused, so each program can
 * word its own message.
 */
cl_endpoint_check_t cl_endpoint_check(const char *endpoint);

/* True when cl_endpoint_check(endpoint) is CL_ENDPOINT_LOCAL. */
bool cl_endpoint_is_local(const char *endpoint);

/* ---- Commands: one struct per command and query, in a tagged union ------------------------ */

/* The numbers are the Request oneof's field numbers in cardledger.proto. */
typedef enum cl_command_type {
    CL_CMD_NONE = 0,
    CL_CMD_REGISTER_MERCHANT = 10,
    CL_CMD_REGISTER_STORE = 11,
    CL_CMD_DEFINE_PROGRAM = 12,
    CL_CMD_UPDATE_PROGRAM = 13,
    CL_CMD_CLOSE_PROGRAM = 14,
    CL_CMD_ISSUE_CARD = 20,
    CL_CMD_ISSUE_BATCH = 21,
    CL_CMD_OFFER_GIFT = 22,
    CL_CMD_CLAIM_GIFT = 23,
    CL_CMD_RECALL_GIFT = 24,
    CL_CMD_TRANSFER_CARD = 25,
    CL_CMD_REDEEM = 26,
    CL_CMD_REVERSE_REDEMPTION = 27,
    CL_CMD_RELOAD = 28,
    CL_CMD_TRANSFER_BALANCE = 29,
    CL_CMD_ADJUST = 30,
    CL_CMD_FREEZE = 31,
    CL_CMD_UNFREEZE = 32,
    CL_CMD_UNLOCK = 33,
    CL_CMD_ADVANCE_CLOCK = 40,
    CL_CMD_GET_CARD = 50,
    CL_CMD_GET_REQUEST = 51,
    CL_CMD_GET_STATUS = 52,
    CL_CMD_PROJECTOR_FIRST = 60, /* 60..99: projector queries; the daemon refuses them */
} cl_command_type_t;

typedef struct cl_cmd_issue_card {
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char holder[CL_HOLDER_MAX + 1];
    cl_channel_t channel;
    char store_id[CL_ID_MAX + 1];
    char region[CL_REGION_MAX + 1];
    int64_t face_value_minor;
    int64_t price_paid_minor;
    bool paid_nothing;
    char import_code[CL_CODE_MAX + 1];
    char import_pin[CL_PIN_MAX + 1];
    char row_key[CL_ID_MAX + 1];
} cl_cmd_issue_card_t;

/* The rows of a batch live outside the command (they are many); see cl_command_t.batch_rows. */
typedef struct cl_cmd_issue_batch {
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    char batch_ref[CL_NAME_MAX + 1];
    uint32_t rows_count;
} cl_cmd_issue_batch_t;

/* OfferGift and TransferCard. */
typedef struct cl_cmd_gift {
    cl_card_ref_t card;
    char pin[CL_PIN_MAX + 1];
    char from_holder[CL_HOLDER_MAX + 1];
    char to_holder[CL_HOLDER_MAX + 1];
} cl_cmd_gift_t;

/* ClaimGift and RecallGift (holder = new holder for a claim, the offering holder for a recall). */
typedef struct cl_cmd_gift_close {
    cl_card_ref_t card;
    uint64_t offer_id;
    char claim_secret[CL_SECRET_MAX + 1];
    char holder[CL_HOLDER_MAX + 1];
} cl_cmd_gift_close_t;

typedef struct cl_cmd_redeem {
    cl_card_ref_t card;
    char pin[CL_PIN_MAX + 1];
    char store_id[CL_ID_MAX + 1];
    char order_ref[CL_ORDER_REF_MAX + 1];
    int64_t amount_minor;
    uint32_t uses;
    int64_t order_amount_minor;
    char sku[CL_SKU_MAX + 1];
} cl_cmd_redeem_t;

typedef struct cl_cmd_reverse {
    cl_card_ref_t card;
    uint64_t redemption_seq;
    char store_id[CL_ID_MAX + 1];
    int64_t amount_minor;
    uint32_t uses;
    char reason[CL_REASON_MAX + 1];
} cl_cmd_reverse_t;

typedef struct cl_cmd_reload {
    cl_card_ref_t card;
    int64_t amount_minor;
    int64_t price_paid_minor;
    cl_channel_t channel;
    char store_id[CL_ID_MAX + 1];
} cl_cmd_reload_t;

typedef struct cl_cmd_transfer_balance {
    cl_card_ref_t from_card;
    char from_pin[CL_PIN_MAX + 1];
    cl_card_ref_t to_card;
    int64_t amount_minor;
} cl_cmd_transfer_balance_t;

typedef struct cl_cmd_adjust {
    cl_card_ref_t card;
    int64_t delta_minor;
    int32_t delta_uses;
    char reason[CL_REASON_MAX + 1];
} cl_cmd_adjust_t;

/* Freeze, Unfreeze, Unlock, GetCard. */
typedef struct cl_cmd_card_flag {
    cl_card_ref_t card;
    char reason[CL_REASON_MAX + 1];
} cl_cmd_card_flag_t;

/* One command or query with its request id. */
typedef struct cl_command {
    cl_command_type_t type;
    char request_id[CL_REQUEST_ID_MAX + 1];
    union {
        cl_ev_merchant_registered_t register_merchant;
        cl_ev_store_registered_t register_store;
        cl_program_spec_t program; /* DefineProgram, UpdateProgram */
        cl_ev_program_closed_t close_program;
        cl_cmd_issue_card_t issue_card;
        cl_cmd_issue_batch_t issue_batch;
        cl_cmd_gift_t gift;             /* OfferGift, TransferCard */
        cl_cmd_gift_close_t gift_close; /* ClaimGift, RecallGift */
        cl_cmd_redeem_t redeem;
        cl_cmd_reverse_t reverse;
        cl_cmd_reload_t reload;
        cl_cmd_transfer_balance_t transfer_balance;
        cl_cmd_adjust_t adjust;
        cl_cmd_card_flag_t card_flag;               /* Freeze, Unfreeze, Unlock, GetCard */
        int64_t set_now_us;                         /* AdvanceClock */
        char get_request_id[CL_REQUEST_ID_MAX + 1]; /* GetRequest */
    } u;
    /* IssueBatch rows, owned by whoever decoded the command (NULL otherwise). */
    const cl_cmd_issue_card_t *batch_rows;
} cl_command_t;

/* ---- Replies ------------------------------------------------------------------------------ */

#define CL_MESSAGE_MAX 200 /* the human sentence of a reply */

typedef enum cl_result_type {
    CL_RES_NONE = 0,
    CL_RES_CARD = 10,     /* card */
    CL_RES_ISSUED = 11,   /* card, code, pin */
    CL_RES_BATCH = 12,    /* batch_id, rows */
    CL_RES_REDEEMED = 13, /* card, redemption_seq, amount_minor, uses, discount_minor, sku */
    CL_RES_GIFT = 14,     /* card, offer_id, claim_secret, offer_expires_at_us */
    CL_RES_TRANSFER = 15, /* card (from), card2 (to), amount_minor */
    CL_RES_REQUEST = 16,  /* found, stored_reply */
    CL_RES_STATUS = 17,   /* status_* */
} cl_result_type_t;

/* A card as replies show it: the code only masked. */
typedef struct cl_card_view {
    uint64_t card_id;
    char code_masked[CL_CODE_MAX + 8];
    char merchant_id[CL_ID_MAX + 1];
    char program_id[CL_ID_MAX + 1];
    cl_kind_t kind;
    char currency[CL_CURRENCY_LEN + 1];
    cl_card_state_t state;
    bool frozen;
    bool locked;
    int64_t balance_minor;
    uint32_t uses_left;
    int64_t face_value_minor;
    int64_t issued_at_us;
    int64_t valid_from_us;
    int64_t expires_at_us;
    char holder[CL_HOLDER_MAX + 1];
    uint32_t pin_failures;
    uint64_t open_offer_id;
    uint32_t transfers_done;
    int64_t redeemed_minor;
} cl_card_view_t;

typedef struct cl_issued_row {
    char row_key[CL_ID_MAX + 1];
    cl_status_t status;
    char message[CL_MESSAGE_MAX + 1];
    bool already_issued;
    uint64_t card_id;
    char code[CL_CODE_MAX + 1];
    char pin[CL_PIN_MAX + 1];
} cl_issued_row_t;

/* One reply. A flat struct: result says which of the result fields are meaningful. */
typedef struct cl_reply {
    char request_id[CL_REQUEST_ID_MAX + 1];
    cl_status_t status;
    char message[CL_MESSAGE_MAX + 1];
    bool replayed;
    uint64_t last_seq;
    uint64_t as_of_seq;
    cl_result_type_t result;

    cl_card_view_t card;
    cl_card_view_t card2;
    char code[CL_CODE_MAX + 1];
    char pin[CL_PIN_MAX + 1];
    uint64_t redemption_seq;
    int64_t amount_minor;
    uint32_t uses;
    int64_t discount_minor;
    char sku[CL_SKU_MAX + 1];
    uint64_t offer_id;
    char claim_secret[CL_SECRET_MAX + 1];
    int64_t offer_expires_at_us;
    uint64_t batch_id;
    uint32_t batch_issued;
    uint32_t batch_already_issued;
    uint32_t rows_count;
    cl_issued_row_t *rows;       /* owned by whoever filled the reply; CL_ISSUE_BATCH_MAX at most */
    bool found;                  /* GetRequest */
    const uint8_t *stored_reply; /* GetRequest: the stored Reply's protobuf bytes */
    size_t stored_reply_len;
    uint64_t status_head_seq; /* GetStatus */
    int64_t status_now_us;
    uint64_t status_cards;
    uint64_t status_checkpoint_seq;
    char status_version[CL_ID_MAX + 1]; /* GetStatus, decoded replies: the daemon's version */
} cl_reply_t;

#endif /* CARDLEDGER_DOMAIN_H */
