/*
 * proto/codec: the one translation layer between the wire and the ledger's own C structs.
 *
 * cardledger.proto is the contract; protoc-c turns it into structs whose memory belongs to
 * protobuf-c's allocator. Everything else in the ledger works on the fixed-size structs of
 * domain.h, and this module is the only place (with the client library) that sees both. On
 * the way in it checks the shape of every message and every named limit, so a domain struct
 * that leaves the codec is already within its limits; it never checks business rules (amount
 * > 0, card exists, ...), which are the daemon's to decide.
 *
 * Four groups of functions:
 *   - requests: a preallocated decoder for one ZeroMQ frame holding a RequestBatch, and an
 *     encoder for clients and tests;
 *   - events: JournalEntry encode/decode for the journal and the publisher, and a JSON form
 *     with card codes masked for dumps;
 *   - replies: Reply encode for the daemon, ReplyBatch framing (including the replay of a
 *     stored reply byte for byte plus replayed = true), and decode for clients and tests;
 *   - errors: CODEC_E* codes in their own range, with codec_strerror().
 *
 * Every function that can fail returns 0 or a negative CODEC_E* code. Out-parameters come last
 * and are untouched on failure, except caller-provided output buffers (buf, rows), whose
 * contents are unspecified after a failure.
 */
#ifndef CARDLEDGER_CODEC_H
#define CARDLEDGER_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain.h"

/* ---- Errors ------------------------------------------------------------------------------- */

/* The codec's own range, clear of errno values and of other modules' ranges. */
#define CODEC_EBASE      (-32000)
#define CODEC_EINVAL     (-32001) /* a NULL or inconsistent argument, or an unknown type */
#define CODEC_ENOMEM     (-32002) /* an allocation failed */
#define CODEC_EMALFORMED (-32003) /* the bytes are not the expected protobuf message */
#define CODEC_ETOOLARGE  (-32004) /* a frame over CL_FRAME_MAX_BYTES or CL_BATCH_REQUESTS_MAX */
#define CODEC_ELIMIT     (-32005) /* a string or list over its named limit */
#define CODEC_EUNKNOWN   (-32006) /* an event this codec does not know */
#define CODEC_EINVALID   (-32007) /* a string with a NUL byte or invalid UTF-8, a bad hash */
#define CODEC_ENOSPC     (-32008) /* the output buffer is too small */
#define CODEC_EEND       (-32009) /* no more replies in the ReplyBatch (end of iteration) */

/* A short sentence for a CODEC_E* code; "unknown codec error" for anything else. */
const char *codec_strerror(int err);

/* ---- Sizes -------------------------------------------------------------------------------- */

/* No event encodes to more than this (a ProgramDefined with every list and string full and
 * the largest actor measures 4.4 KB). Size journal and publisher buffers with it. */
#define CODEC_EVENT_MAX_BYTES 8192

/* No event's JSON form is longer than this, NUL excluded (every string byte escaped as
 * \u00XX, every number at its longest). */
#define CODEC_EVENT_JSON_MAX 32768

/* IssueBatch rows one decoded frame can hold, over all its IssueBatch requests together. A
 * request whose rows do not fit in what is left is refused with CL_TOO_LARGE and the client
 * sends it in another frame. Four full batches per frame also keep the ReplyBatch, whose rows
 * carry codes and PINs, well under CL_FRAME_MAX_BYTES. */
#define CODEC_BATCH_ROWS_MAX (4 * CL_ISSUE_BATCH_MAX)

/* ---- Requests ----------------------------------------------------------------------------- */

/* One decoded request of a batch. */
typedef struct codec_request {
    cl_command_t cmd;   /* valid when status == CL_OK; see codec_batch_decode() otherwise */
    cl_status_t status; /* CL_OK, or this request's own refusal */
    char message[CL_MESSAGE_MAX + 1]; /* the sentence for a refusal, naming the field */
    uint8_t content_hash[16]; /* XXH3-128 of the Request re-packed by protobuf-c (canonical) */
} codec_request_t;

/* A reusable decoder for one frame: every buffer it needs is allocated by codec_batch_new(). */
typedef struct codec_batch codec_batch_t;

/*
 * Allocates a decoder (about 3.3 MiB: the request slots, the IssueBatch row pool of
 * CODEC_BATCH_ROWS_MAX rows and a 1 MiB unpack arena). A decoder is used by one thread at a
 * time; every other function of the codec keeps no state and may run on any thread.
 * Returns 0 or CODEC_EINVAL, CODEC_ENOMEM.
 */
int codec_batch_new(codec_batch_t **out);

/* Frees a decoder and sets *b to NULL. NULL and *b == NULL are allowed. */
void codec_batch_destroy(codec_batch_t **b);

/*
 * Decodes one frame holding a RequestBatch into b's request slots, replacing what the
 * previous decode left there.
 *
 * Returns 0, or:
 *   CODEC_EINVAL     b is NULL, or frame is NULL with len > 0;
 *   CODEC_ETOOLARGE  len > CL_FRAME_MAX_BYTES or more than CL_BATCH_REQUESTS_MAX requests;
 *   CODEC_EMALFORMED the frame is not a RequestBatch (bad wire format anywhere, a known field
 *                    with the wrong wire type, nesting deeper than the contract allows).
 * After a failure codec_batch_count() is 0.
 *
 * A decode that returns 0 may still hold refused requests: each request gets its own status,
 * and the others of the batch still decode. Refusals (checked in this order):
 *   - a list over its limit (denominations, accepting stores or regions, eligible SKUs,
 *     IssueBatch cards over CL_ISSUE_BATCH_MAX, or rows beyond what is left of the frame's
 *     CODEC_BATCH_ROWS_MAX pool): CL_TOO_LARGE;
 *   - a string with a NUL byte or invalid UTF-8: CL_INVALID_ARGUMENT;
 *   - request_id missing or empty: CL_INVALID_ARGUMENT; over CL_REQUEST_ID_MAX: CL_TOO_LARGE;
 *   - no command set, or a command field this contract does not know: CL_UNKNOWN_COMMAND;
 *   - a string over its CL_*_MAX: CL_TOO_LARGE ("redeem.order_ref is 80 bytes, the limit
 *     is 64");
 *   - an enum value outside the known set: CL_INVALID_ARGUMENT.
 * On a refusal, cmd.request_id still holds the request id when the id itself is valid (so
 * the reply can echo it), cmd.type holds the command when it is known, and the rest of cmd is
 * zero. Projector queries (Request fields 60..68) decode with cmd.type = the field number
 * (>= CL_CMD_PROJECTOR_FIRST) and no payload.
 *
 * content_hash is over the Request as protobuf-c re-packs it (field order canonical, unknown
 * fields kept), so the same request id with the same hash is the same request. It is all
 * zero for a request refused before unpacking (a list over its limit). A batch issue whose
 * bytes are already what protobuf-c packs is neither unpacked nor re-packed: its rows are read
 * from the wire and its received bytes hashed, which gives the same hash.
 *
 * Nothing is allocated per decode beyond what protobuf-c's unpack takes from b's arena (it
 * falls back to malloc only for a request larger than the arena); every unpacked message is
 * freed before returning.
 */
int codec_batch_decode(codec_batch_t *b, const void *frame, size_t len);

/* The number of requests the last successful decode holds (0 for NULL). */
size_t codec_batch_count(const codec_batch_t *b);

/*
 * Request i of the last decode, or NULL when i >= codec_batch_count(b). The pointer, and
 * cmd.batch_rows of an IssueBatch (which points into b's row pool), are valid until the next
 * codec_batch_decode() or codec_batch_destroy() on b.
 */
const codec_request_t *codec_batch_request(const codec_batch_t *b, size_t i);

/*
 * Encodes one command as a packed Request (for clients and tests). A card reference goes on
 * the wire by card_id when card_id != 0, else by code when the code is not empty, else not at
 * all. IssueBatch takes cmd->u.issue_batch.rows_count rows from cmd->batch_rows. Projector
 * query types (>= CL_CMD_PROJECTOR_FIRST) encode an empty query message.
 *
 * Returns 0 and the length in *out_len, or CODEC_EINVAL (NULL argument, unknown cmd->type,
 * rows_count > 0 with batch_rows NULL), CODEC_ELIMIT (a string not NUL-terminated inside its
 * array, or a list count over its array), CODEC_ENOSPC (cap too small).
 */
int codec_request_encode(const cl_command_t *cmd, uint8_t *buf, size_t cap, size_t *out_len);

/*
 * Frames n packed Requests as one RequestBatch: each goes in as field 1, length-delimited (a
 * repeated message field is just the concatenation). n is not limited here, so tests can
 * build over-limit frames. Returns 0, CODEC_EINVAL or CODEC_ENOSPC.
 */
int codec_request_batch_frame(const uint8_t *const *reqs, const size_t *lens, size_t n,
                              uint8_t *buf, size_t cap, size_t *out_len);

/* ---- Events ------------------------------------------------------------------------------- */

/*
 * Encodes ev as a packed JournalEntry: the request id (as the bytes it encodes, in
 * request_id_b32, when it is unpadded base32 text in the ledger's alphabet, RFC 4648's characters
 * with the digit values in ASCII order ("234567a..z"), such as libcardledger's 26-character ids;
 * as text in request_id otherwise), actor when ev->actor.role != CL_ROLE_NONE
 * (or, so that decoding and encoding stay inverse, when any of its strings is set), and the
 * event. seq and at_us are not encoded (the journal header carries them). Zero and
 * empty fields are omitted, as proto3 does. A card's pin_hash goes out only when has_pin; a
 * gift's claim_hash only when it is not all zero.
 *
 * Returns 0 and the length in *out_len (never more than CODEC_EVENT_MAX_BYTES), or
 * CODEC_EINVAL (NULL argument, unknown ev->type), CODEC_ELIMIT (a string not NUL-terminated
 * inside its array, a list count over its array), CODEC_ENOSPC.
 */
int codec_event_encode(const cl_event_t *ev, uint8_t *buf, size_t cap, size_t *out_len);

/*
 * Decodes a packed JournalEntry into *out, which is zeroed first, so equal bytes give
 * memcmp-equal structs; out->seq and out->at_us are left 0 for the caller to fill from the
 * journal header. Unknown enum values are kept as their numbers (readers tolerate them). The
 * request id reads the same whichever form it was written in: request_id_b32 comes back as
 * its base32 text, so entries written before that field existed decode as they always did.
 *
 * Returns 0, or CODEC_EINVAL, CODEC_EMALFORMED (not a JournalEntry), CODEC_EUNKNOWN (no event,
 * or one this codec does not know), CODEC_ELIMIT (a string or list over its CL_*_MAX: refused,
 * never truncated), CODEC_EINVALID (a NUL byte or invalid UTF-8 in a string, or a pin_hash or
 * claim_hash that is neither empty nor CL_HASH_LEN bytes, or request_id and request_id_b32
 * both set), CODEC_ENOMEM.
 */
int codec_event_decode(const void *buf, size_t len, cl_event_t *out);

/* codec_event_decode() straight into *scratch, without the copy that keeps *out untouched on
 * failure: on failure *scratch holds garbage. For hot loops that decode into a buffer of their
 * own (the projections' fold). Same returns. */
int codec_event_decode_scratch(const void *buf, size_t len, cl_event_t *scratch);

/*
 * codec_event_decode_scratch() for a fold that reads only the member of ev->u that ev->type
 * names: on success the envelope (type, seq and at_us zero, request_id, actor) and that member
 * are written in full (zero-filled, then decoded), and the rest of the union may be left as it
 * was; the commonest card events are read straight from the wire, without protobuf-c (the
 * same bytes as the full decode, which takes everything else). On failure *ev holds garbage.
 * Same returns as codec_event_decode().
 */
int codec_event_decode_fold(const void *buf, size_t len, cl_event_t *ev);

/*
 * The entry an export (cardledger-journal export) writes in place of the journal entry buf: the
 * same event with what never leaves the ledger taken out (PRODUCT.md section 8), and no more,
 * so that the projections fold it to the same bytes:
 * - CardIssued: the code keeps its length and its last 4 bytes, the others become '*' (a code
 *   of 4 bytes or fewer becomes all '*'), which is all of it the projections keep; code_hash is
 *   set to cl_code_hash() of the code, the key of the balances projection's code index; the PIN
 *   hash becomes zeros (has_pin stays, the projections show it).
 * - GiftOffered: the claim hash is dropped.
 * - every other event, and a CardIssued that has a code hash (an export's own: exporting a
 *   journal imported from an export gives the same entries), is decoded and encoded again
 *   unchanged.
 * Returns 0 and the length in *out_len, or what codec_event_decode() returns (an entry this
 * codec cannot read is not exported: it might hold anything) or codec_event_encode() returns.
 */
int codec_event_export(const void *buf, size_t len, uint8_t *out, size_t cap, size_t *out_len);

/*
 * The request id that the bytes of a JournalEntry's request_id_b32 stand for: their unpadded
 * base32 in the ledger's alphabet (see codec_event_encode()), NUL-terminated in out. Also how
 * libcardledger writes the request ids it makes. For code that unpacks a JournalEntry itself
 * rather than through codec_event_decode() (the projector's history answers). Returns 0,
 * CODEC_EINVAL (NULL argument, len 0) or CODEC_ELIMIT (an id over CL_REQUEST_ID_MAX: more than
 * 40 bytes); out is untouched on failure.
 */
int codec_request_id_b32_text(const uint8_t *raw, size_t len, char out[CL_REQUEST_ID_MAX + 1]);

/*
 * The event type of a packed JournalEntry without decoding it (for topics and filters): the
 * last event field on the wire, as protobuf reads a oneof. Returns 0, CODEC_EINVAL,
 * CODEC_EMALFORMED, or CODEC_EUNKNOWN when there is no event this codec knows.
 */
int codec_event_peek_type(const void *buf, size_t len, cl_event_type_t *out_type);

/*
 * Writes ev as one JSON object, without a newline, NUL-terminated: "seq", "at_us", "type"
 * (cl_event_name), "request_id", "actor" (when role != CL_ROLE_NONE), then the event's fields
 * by their proto names, all of them, zero or not. Card codes are masked with cl_code_mask();
 * pin_hash, claim_hash and an export's code_hash are never written (CardIssued says "has_pin":
 * true/false instead).
 * Enums are written as lower-case names ("store_terminal", "online", "stored_value",
 * "store_list"), or as their number when unknown. Strings are JSON-escaped; bytes that are not
 * valid UTF-8 come out as \ufffd. Numbers are plain JSON integers.
 *
 * Returns 0 and the length without the NUL in *out_len (never more than
 * CODEC_EVENT_JSON_MAX), or CODEC_EINVAL (NULL argument, unknown type), CODEC_ENOSPC.
 */
int codec_event_json(const cl_event_t *ev, char *buf, size_t cap, size_t *out_len);

/* ---- Replies ------------------------------------------------------------------------------ */

/*
 * Encodes r as a packed Reply with the result oneof chosen by r->result:
 *   CL_RES_NONE      no result;
 *   CL_RES_CARD      card = r->card;
 *   CL_RES_ISSUED    issued {card, code, pin};
 *   CL_RES_BATCH     batch {batch_id, rows (r->rows_count from r->rows), issued =
 *                    r->batch_issued, already_issued = r->batch_already_issued};
 *   CL_RES_REDEEMED  redeemed {card, redemption_seq, amount_minor, uses, discount_minor, sku};
 *   CL_RES_GIFT      gift {card, offer_id, claim_secret, offer_expires_at_us};
 *   CL_RES_TRANSFER  transfer {from_card = r->card, to_card = r->card2, amount_minor};
 *   CL_RES_REQUEST   request {found, reply = the r->stored_reply_len bytes at r->stored_reply,
 *                    embedded as they are (a message field's bytes are its encoding), when
 *                    stored_reply is not NULL};
 *   CL_RES_STATUS    daemon_status {version = CARDLEDGER_VERSION, head_seq, now_us, cards,
 *                    checkpoint_seq} from r->status_*.
 * Returns 0 and the length in *out_len, or CODEC_EINVAL (NULL argument, unknown result,
 * rows_count > 0 with rows NULL), CODEC_ELIMIT (rows_count over CL_ISSUE_BATCH_MAX, a string
 * not NUL-terminated inside its array), CODEC_EMALFORMED (stored_reply is not a Reply),
 * CODEC_ENOSPC.
 */
int codec_reply_encode(const cl_reply_t *r, uint8_t *buf, size_t cap, size_t *out_len);

/* The length codec_reply_encode() would produce for r, for sizing buffers. Same errors. */
int codec_reply_encoded_size(const cl_reply_t *r, size_t *out_len);

/*
 * Appends one packed Reply to the ReplyBatch being built in buf[0..*inout_len) as field 1;
 * start with *inout_len = 0 (an empty ReplyBatch is zero bytes). With mark_replayed the
 * varint field replayed = true (field 4) is appended to the reply's own bytes, inside its
 * length prefix; protobuf keeps the last value of a field, so a stored reply is sent byte
 * for byte plus the flag. Returns 0 and advances *inout_len, or CODEC_EINVAL, CODEC_ENOSPC
 * (*inout_len unchanged).
 */
int codec_reply_batch_append(uint8_t *buf, size_t cap, size_t *inout_len, const uint8_t *reply,
                             size_t reply_len, bool mark_replayed);

/*
 * Iterates the replies of a ReplyBatch without copying: start with *inout_off = 0; each call
 * returns 0 and the next Reply's bytes (pointing into batch) in *out_reply, *out_len, and
 * advances *inout_off. Returns CODEC_EEND after the last one, CODEC_EMALFORMED when batch is
 * not a ReplyBatch, CODEC_EINVAL. Unknown fields of the ReplyBatch are skipped.
 */
int codec_reply_batch_next(const void *batch, size_t len, size_t *inout_off,
                           const uint8_t **out_reply, size_t *out_len);

/*
 * Decodes a packed Reply into *out (zeroed first). The rows of a batch result are written to
 * rows[0..rows_cap) and out->rows points to rows. On failure *out is left as it was, and rows
 * may have been written. For a request result, out->stored_reply points into buf (valid as long
 * as buf is) at the embedded Reply's bytes. The version of a daemon status goes to
 * out->status_version. Results this codec does not translate yet (the projector's, fields
 * 20..27) set out->result to the field number with no payload.
 *
 * Returns 0, or CODEC_EINVAL, CODEC_EMALFORMED, CODEC_ELIMIT (a string over its limit, more
 * than CL_ISSUE_BATCH_MAX rows), CODEC_EINVALID (NUL or invalid UTF-8 in a string),
 * CODEC_ENOSPC (more rows than rows_cap), CODEC_ENOMEM.
 */
int codec_reply_decode(const void *buf, size_t len, cl_reply_t *out, cl_issued_row_t *rows,
                       size_t rows_cap);

#endif /* CARDLEDGER_CODEC_H */
