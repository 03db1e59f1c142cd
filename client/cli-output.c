/*
 * How the CLI shows replies: sentences for people, one JSON object per reply for programs.
 *
 * Human output names cards by their masked code (the full code is printed only when a card is
 * issued, as the ledger shows it only then) and money in major units with the currency. JSON
 * output carries every result field with money as integers of minor units, the status by its
 * stable name, and is one line per reply so scripts can read it line by line.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "units.h"

const char *
cli_kind_name(cl_kind_t kind)
{
    switch (kind) {
    case CL_KIND_STORED_VALUE:
        return "stored-value";
    case CL_KIND_PUNCH:
        return "punch";
    case CL_KIND_VOUCHER_THRESHOLD:
        return "voucher-threshold";
    case CL_KIND_VOUCHER_PERCENT:
        return "voucher-percent";
    case CL_KIND_VOUCHER_CASH:
        return "voucher-cash";
    case CL_KIND_VOUCHER_EXCHANGE:
        return "voucher-exchange";
    case CL_KIND_NONE:
        break;
    }
    return "unknown";
}

const char *
cli_channel_name(cl_channel_t channel)
{
    switch (channel) {
    case CL_CHANNEL_ONLINE:
        return "online";
    case CL_CHANNEL_STORE:
        return "store";
    case CL_CHANNEL_ENTERPRISE:
        return "enterprise";
    case CL_CHANNEL_PLATFORM:
        return "platform";
    case CL_CHANNEL_NONE:
        break;
    }
    return "none";
}

const char *
cli_state_name(cl_card_state_t state)
{
    switch (state) {
    case CL_CARDSTATE_ACTIVE:
        return "active";
    case CL_CARDSTATE_EXPIRED:
        return "expired";
    case CL_CARDSTATE_EXHAUSTED:
        return "exhausted";
    }
    return "unknown";
}

static const char *
s_result_name(cl_result_type_t result)
{
    switch (result) {
    case CL_RES_NONE:
        return "none";
    case CL_RES_CARD:
        return "card";
    case CL_RES_ISSUED:
        return "issued";
    case CL_RES_BATCH:
        return "batch";
    case CL_RES_REDEEMED:
        return "redeemed";
    case CL_RES_GIFT:
        return "gift";
    case CL_RES_TRANSFER:
        return "transfer";
    case CL_RES_REQUEST:
        return "request";
    case CL_RES_STATUS:
        return "status";
    }
    return "other";
}

const char *
cli_money(int64_t minor, const char *currency, char *buf, size_t cap)
{
    char num[UNITS_FORMAT_MAX];
    units_amount_format(minor, num, sizeof(num));
    snprintf(buf, cap, "%s%s%s", num, currency[0] ? " " : "", currency);
    return buf;
}

/* What a card holds, as a phrase: "187.50 CNY", "9 uses", "1 use". */
static const char *
s_holds(const cl_card_view_t *v, char *buf, size_t cap)
{
    if (v->kind == CL_KIND_STORED_VALUE)
        return cli_money(v->balance_minor, v->currency, buf, cap);
    snprintf(buf, cap, "%" PRIu32 " use%s", v->uses_left, v->uses_left == 1 ? "" : "s");
    return buf;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void
s_json_card(json_t *j, const char *key, const cl_card_view_t *v)
{
    json_object_begin(j, key);
    json_u64(j, "card_id", v->card_id);
    json_str(j, "code_masked", v->code_masked);
    json_str(j, "merchant_id", v->merchant_id);
    json_str(j, "program_id", v->program_id);
    json_str(j, "kind", cli_kind_name(v->kind));
    json_str(j, "currency", v->currency);
    json_str(j, "state", cli_state_name(v->state));
    json_bool(j, "frozen", v->frozen);
    json_bool(j, "locked", v->locked);
    json_i64(j, "balance_minor", v->balance_minor);
    json_u64(j, "uses_left", v->uses_left);
    json_i64(j, "face_value_minor", v->face_value_minor);
    json_i64(j, "issued_at_us", v->issued_at_us);
    json_i64(j, "valid_from_us", v->valid_from_us);
    json_i64(j, "expires_at_us", v->expires_at_us);
    json_str(j, "holder", v->holder);
    json_u64(j, "pin_failures", v->pin_failures);
    json_u64(j, "open_offer_id", v->open_offer_id);
    json_u64(j, "transfers_done", v->transfers_done);
    json_i64(j, "redeemed_minor", v->redeemed_minor);
    json_object_end(j);
}

/* The reply's members (inside an object already open). */
static void
s_json_reply_members(json_t *j, const cl_reply_t *r)
{
    json_str(j, "request_id", r->request_id);
    json_str(j, "status", cl_status_name(r->status));
    json_u64(j, "status_code", (uint64_t)r->status);
    json_str(j, "message", r->message);
    json_bool(j, "replayed", r->replayed);
    json_u64(j, "last_seq", r->last_seq);
    json_u64(j, "as_of_seq", r->as_of_seq);
    json_str(j, "result", s_result_name(r->result));
    switch (r->result) {
    case CL_RES_NONE:
        break;
    case CL_RES_CARD:
        s_json_card(j, "card", &r->card);
        break;
    case CL_RES_ISSUED:
        s_json_card(j, "card", &r->card);
        json_str(j, "code", r->code);
        json_str(j, "pin", r->pin);
        break;
    case CL_RES_BATCH:
        json_u64(j, "batch_id", r->batch_id);
        json_u64(j, "issued", r->batch_issued);
        json_u64(j, "already_issued", r->batch_already_issued);
        json_array_begin(j, "rows");
        for (uint32_t i = 0; i < r->rows_count && r->rows != NULL; i++) {
            const cl_issued_row_t *row = &r->rows[i];
            json_object_begin(j, NULL);
            json_str(j, "row_key", row->row_key);
            json_str(j, "status", cl_status_name(row->status));
            json_str(j, "message", row->message);
            json_bool(j, "already_issued", row->already_issued);
            json_u64(j, "card_id", row->card_id);
            json_str(j, "code", row->code);
            json_str(j, "pin", row->pin);
            json_object_end(j);
        }
        json_array_end(j);
        break;
    case CL_RES_REDEEMED:
        s_json_card(j, "card", &r->card);
        json_u64(j, "redemption_seq", r->redemption_seq);
        json_i64(j, "amount_minor", r->amount_minor);
        json_u64(j, "uses", r->uses);
        json_i64(j, "discount_minor", r->discount_minor);
        json_str(j, "sku", r->sku);
        break;
    case CL_RES_GIFT:
        s_json_card(j, "card", &r->card);
        json_u64(j, "offer_id", r->offer_id);
        json_str(j, "claim_secret", r->claim_secret);
        json_i64(j, "offer_expires_at_us", r->offer_expires_at_us);
        break;
    case CL_RES_TRANSFER:
        s_json_card(j, "from_card", &r->card);
        s_json_card(j, "to_card", &r->card2);
        json_i64(j, "amount_minor", r->amount_minor);
        break;
    case CL_RES_REQUEST:
        json_bool(j, "found", r->found);
        break;
    case CL_RES_STATUS:
        json_str(j, "version", r->status_version);
        json_u64(j, "head_seq", r->status_head_seq);
        json_i64(j, "now_us", r->status_now_us);
        json_u64(j, "cards", r->status_cards);
        json_u64(j, "checkpoint_seq", r->status_checkpoint_seq);
        break;
    }
}

void
cli_print_json(const cl_reply_t *r, const cl_reply_t *stored)
{
    json_t j;
    json_init(&j, stdout);
    json_object_begin(&j, NULL);
    s_json_reply_members(&j, r);
    if (stored != NULL) {
        json_object_begin(&j, "stored_reply");
        s_json_reply_members(&j, stored);
        json_object_end(&j);
    }
    json_object_end(&j);
}

/* ---- Human ---------------------------------------------------------------------------------- */

void
cli_print_refusal(const cl_reply_t *r)
{
    fprintf(stderr, "cardledger: refused: %s: %s\n", cl_status_name(r->status),
            r->message[0] ? r->message : cl_status_sentence(r->status));
}

static void
s_print_card(const cl_card_view_t *v)
{
    char a[64], b[64];
    printf("card        %s (id %" PRIu64 ")\n", v->code_masked, v->card_id);
    printf("merchant    %s\n", v->merchant_id);
    printf("program     %s (%s, %s)\n", v->program_id, cli_kind_name(v->kind), v->currency);
    printf("state       %s%s%s\n", cli_state_name(v->state), v->frozen ? ", frozen" : "",
           v->locked ? ", locked" : "");
    if (v->kind == CL_KIND_STORED_VALUE) {
        printf("balance     %s\n", cli_money(v->balance_minor, v->currency, a, sizeof(a)));
        printf("face value  %s\n", cli_money(v->face_value_minor, v->currency, a, sizeof(a)));
        printf("redeemed    %s\n", cli_money(v->redeemed_minor, v->currency, a, sizeof(a)));
    } else {
        printf("uses left   %" PRIu32 "\n", v->uses_left);
    }
    printf("holder      %s\n", v->holder[0] ? v->holder : "-");
    units_time_format(v->issued_at_us, a, sizeof(a));
    printf("issued      %s\n", a);
    units_time_format(v->valid_from_us, a, sizeof(a));
    if (v->expires_at_us > 0) {
        units_time_format(v->expires_at_us, b, sizeof(b));
        printf("valid       %s to %s\n", a, b);
    } else {
        printf("valid       from %s, no expiry\n", a);
    }
    if (v->pin_failures > 0)
        printf("wrong PINs  %" PRIu32 " in a row\n", v->pin_failures);
    if (v->open_offer_id != 0)
        printf("gift offer  %" PRIu64 " open\n", v->open_offer_id);
    if (v->transfers_done > 0)
        printf("transfers   %" PRIu32 "\n", v->transfers_done);
}

static void
s_print_redeemed(const cl_reply_t *r)
{
    const cl_card_view_t *v = &r->card;
    char a[64], b[64];
    if (v->kind == CL_KIND_STORED_VALUE) {
        printf("redeemed %s from %s; balance %s",
               cli_money(r->amount_minor, v->currency, a, sizeof(a)), v->code_masked,
               cli_money(v->balance_minor, v->currency, b, sizeof(b)));
    } else if (v->kind == CL_KIND_PUNCH) {
        printf("redeemed %" PRIu32 " use%s from %s; %s left", r->uses, r->uses == 1 ? "" : "s",
               v->code_masked, s_holds(v, b, sizeof(b)));
    } else if (v->kind == CL_KIND_VOUCHER_EXCHANGE) {
        printf("exchanged voucher %s for %s; %s left", v->code_masked, r->sku,
               s_holds(v, b, sizeof(b)));
    } else {
        printf("redeemed voucher %s: %s off; %s left", v->code_masked,
               cli_money(r->discount_minor != 0 ? r->discount_minor : r->amount_minor, v->currency,
                         a, sizeof(a)),
               s_holds(v, b, sizeof(b)));
    }
    printf(" (redemption %" PRIu64 ")\n", r->redemption_seq);
}

/* A reply's result without the command that caused it (a stored reply). */
static void
s_print_result(const cl_reply_t *r)
{
    char a[64];
    switch (r->result) {
    case CL_RES_CARD:
        s_print_card(&r->card);
        break;
    case CL_RES_ISSUED:
        printf("issued card %s (id %" PRIu64 ") holding %s\n", r->card.code_masked, r->card.card_id,
               s_holds(&r->card, a, sizeof(a)));
        break;
    case CL_RES_BATCH:
        printf("batch %" PRIu64 ": %" PRIu32 " issued, %" PRIu32 " already issued\n", r->batch_id,
               r->batch_issued, r->batch_already_issued);
        break;
    case CL_RES_REDEEMED:
        s_print_redeemed(r);
        break;
    case CL_RES_GIFT:
        printf("gift offer %" PRIu64 " of card %s\n", r->offer_id, r->card.code_masked);
        break;
    case CL_RES_TRANSFER:
        printf("moved %s", cli_money(r->amount_minor, r->card.currency, a, sizeof(a)));
        printf(" from %s to %s\n", r->card.code_masked, r->card2.code_masked);
        break;
    default:
        break;
    }
    if (r->last_seq != 0)
        printf("journal sequence %" PRIu64 "\n", r->last_seq);
}

void
cli_print_human(const cl_command_t *cmd, const cl_reply_t *r, const cl_reply_t *stored)
{
    char a[64], b[64];
    const cl_card_view_t *v = &r->card;
    switch (cmd->type) {
    case CL_CMD_REGISTER_MERCHANT:
        printf("registered merchant %s\n", cmd->u.register_merchant.merchant_id);
        break;
    case CL_CMD_REGISTER_STORE:
        printf("registered store %s of merchant %s in region %s\n", cmd->u.register_store.store_id,
               cmd->u.register_store.merchant_id, cmd->u.register_store.region);
        break;
    case CL_CMD_DEFINE_PROGRAM:
    case CL_CMD_UPDATE_PROGRAM:
        printf("%s program %s of merchant %s (%s, %s)\n",
               cmd->type == CL_CMD_DEFINE_PROGRAM ? "defined" : "updated",
               cmd->u.program.program_id, cmd->u.program.merchant_id,
               cli_kind_name(cmd->u.program.kind), cmd->u.program.currency);
        break;
    case CL_CMD_CLOSE_PROGRAM:
        printf("closed program %s of merchant %s\n", cmd->u.close_program.program_id,
               cmd->u.close_program.merchant_id);
        break;
    case CL_CMD_ISSUE_CARD:
        printf("issued card %s (id %" PRIu64 ") holding %s", r->code[0] ? r->code : v->code_masked,
               v->card_id, s_holds(v, a, sizeof(a)));
        if (v->expires_at_us > 0) {
            units_time_format(v->expires_at_us, b, sizeof(b));
            printf(", valid until %s", b);
        }
        printf("\n");
        if (r->pin[0] != '\0')
            printf("PIN %s (shown only this once)\n", r->pin);
        break;
    case CL_CMD_REDEEM:
        s_print_redeemed(r);
        break;
    case CL_CMD_REVERSE_REDEMPTION:
        if (v->kind == CL_KIND_STORED_VALUE)
            printf("reversed %s on %s; balance %s\n",
                   cli_money(r->amount_minor, v->currency, a, sizeof(a)), v->code_masked,
                   s_holds(v, b, sizeof(b)));
        else
            printf("reversed %" PRIu32 " use%s on %s; %s left\n", r->uses, r->uses == 1 ? "" : "s",
                   v->code_masked, s_holds(v, b, sizeof(b)));
        break;
    case CL_CMD_RELOAD:
        printf("reloaded %s onto %s; balance %s\n",
               cli_money(cmd->u.reload.amount_minor, v->currency, a, sizeof(a)), v->code_masked,
               s_holds(v, b, sizeof(b)));
        break;
    case CL_CMD_TRANSFER_BALANCE:
        printf("moved %s from %s (balance %s)",
               cli_money(r->amount_minor, v->currency, a, sizeof(a)), v->code_masked,
               s_holds(v, b, sizeof(b)));
        printf(" to %s (balance %s)\n", r->card2.code_masked, s_holds(&r->card2, b, sizeof(b)));
        break;
    case CL_CMD_ADJUST:
        if (v->kind == CL_KIND_STORED_VALUE && cmd->u.adjust.delta_minor != 0)
            printf("adjusted %s by %s; balance %s\n", v->code_masked,
                   cli_money(cmd->u.adjust.delta_minor, v->currency, a, sizeof(a)),
                   s_holds(v, b, sizeof(b)));
        else
            printf("adjusted %s by %" PRId32 " uses; %s left\n", v->code_masked,
                   cmd->u.adjust.delta_uses, s_holds(v, b, sizeof(b)));
        break;
    case CL_CMD_FREEZE:
        printf("froze card %s\n", v->code_masked);
        break;
    case CL_CMD_UNFREEZE:
        printf("unfroze card %s\n", v->code_masked);
        break;
    case CL_CMD_UNLOCK:
        printf("unlocked card %s\n", v->code_masked);
        break;
    case CL_CMD_OFFER_GIFT:
        units_time_format(r->offer_expires_at_us, a, sizeof(a));
        printf("offered card %s as a gift: offer %" PRIu64 "\n", v->code_masked, r->offer_id);
        printf("claim secret %s (shown only this once)\n", r->claim_secret);
        printf("unclaimed, it returns to %s at %s\n", v->holder, a);
        break;
    case CL_CMD_CLAIM_GIFT:
        printf("claimed card %s; its holder is now %s\n", v->code_masked, v->holder);
        break;
    case CL_CMD_RECALL_GIFT:
        printf("recalled gift offer %" PRIu64 " of card %s; its holder is %s\n",
               cmd->u.gift_close.offer_id, v->code_masked, v->holder);
        break;
    case CL_CMD_TRANSFER_CARD:
        printf("transferred card %s to %s\n", v->code_masked, v->holder);
        break;
    case CL_CMD_GET_CARD:
        s_print_card(v);
        break;
    case CL_CMD_GET_REQUEST:
        if (!r->found) {
            printf("request %s: not found (never seen, or past its retention)\n",
                   cmd->u.get_request_id);
        } else if (stored == NULL) {
            printf("request %s: found\n", cmd->u.get_request_id);
        } else {
            printf("request %s: found; the ledger answered %s: %s\n", cmd->u.get_request_id,
                   cl_status_name(stored->status), stored->message);
            if (stored->status == CL_OK)
                s_print_result(stored);
        }
        break;
    case CL_CMD_GET_STATUS:
        units_time_format(r->status_now_us, a, sizeof(a));
        printf("cardledgerd %s: head sequence %" PRIu64 ", clock %s, %" PRIu64
               " cards, checkpoint at %" PRIu64 "\n",
               r->status_version[0] ? r->status_version : "?", r->status_head_seq, a,
               r->status_cards, r->status_checkpoint_seq);
        break;
    case CL_CMD_ADVANCE_CLOCK:
        units_time_format(cmd->u.set_now_us, a, sizeof(a));
        printf("clock set to %s\n", a);
        break;
    default:
        printf("%s\n", r->message[0] ? r->message : "done");
        break;
    }
    if (r->replayed)
        printf("(replayed: this request id was already answered; nothing was applied again)\n");
}
