/*
 * The projector's queries on the wire: packing a cliq_query_t into a Request, unpacking the
 * Reply into cliq_reply_t, and the reply as JSON.
 *
 * This is the only file of client/ that includes the generated cardledger.pb-c.h (queries.h
 * says why). Unpacked messages are kept inside the cliq_reply_t so its strings can point into
 * them without copies; cliq_reply_free() frees both. The JSON writer walks the message
 * descriptors, so every field the contract has (now and after it grows) is printed without a
 * list to keep in step here.
 */
#include "queries.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cardledger.pb-c.h"

typedef Cardledger__V1__Request s_request_t;
typedef Cardledger__V1__Reply s_reply_t;
typedef Cardledger__V1__CardView s_card_view_t;

const char *
cliq_strerror(int rc)
{
    switch (rc) {
    case CLIQ_ENOMEM:
        return "out of memory";
    case CLIQ_EPROTO:
        return "the projector's reply could not be read or is not the answer to the query";
    case CLIQ_EENCODE:
        return "the query could not be encoded";
    default:
        return cl_client_strerror(rc);
    }
}

bool
cliq_group_by_parse(const char *s, uint32_t *out)
{
    static const char *const names[] = { "day", "program", "channel", "region", "store" };
    for (uint32_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i + 1;
            return true;
        }
    }
    return false;
}

/* ---- Encoding ------------------------------------------------------------------------------ */

/* Packs q as a Request into a new buffer. The generated structs are filled on the stack and
 * point at the strings of m, a copy of q (the generated structs want mutable strings, though
 * packing only reads them). */
static int
s_encode(const cliq_query_t *q, cliq_query_t *m, uint8_t **out, size_t *out_len)
{
    s_request_t req;
    Cardledger__V1__CardRef ref;
    Cardledger__V1__CardHistory history;
    Cardledger__V1__HolderWallet wallet;
    Cardledger__V1__GetLiability liability;
    Cardledger__V1__StoreDay store_day;
    Cardledger__V1__StoreRedemptions redemptions;
    Cardledger__V1__Settlement settlement;
    Cardledger__V1__Analytics analytics;
    Cardledger__V1__ProjectionStatus status;
    Cardledger__V1__RebuildProjection rebuild;

    cardledger__v1__request__init(&req);
    cardledger__v1__card_ref__init(&ref);
    cardledger__v1__card_history__init(&history);
    cardledger__v1__holder_wallet__init(&wallet);
    cardledger__v1__get_liability__init(&liability);
    cardledger__v1__store_day__init(&store_day);
    cardledger__v1__store_redemptions__init(&redemptions);
    cardledger__v1__settlement__init(&settlement);
    cardledger__v1__analytics__init(&analytics);
    cardledger__v1__projection_status__init(&status);
    cardledger__v1__rebuild_projection__init(&rebuild);

    /* Every string must be terminated inside its array: the struct may come from anywhere. */
    if (memchr(q->request_id, '\0', sizeof(q->request_id)) == NULL || q->request_id[0] == '\0' ||
        memchr(q->card.code, '\0', sizeof(q->card.code)) == NULL ||
        memchr(q->merchant_id, '\0', sizeof(q->merchant_id)) == NULL ||
        memchr(q->holder, '\0', sizeof(q->holder)) == NULL ||
        memchr(q->program_id, '\0', sizeof(q->program_id)) == NULL ||
        memchr(q->store_id, '\0', sizeof(q->store_id)) == NULL ||
        memchr(q->name, '\0', sizeof(q->name)) == NULL || q->group_by > CLIQ_GROUP_BY_MAX)
        return CLIQ_EENCODE;
    *m = *q;
    req.request_id = m->request_id;

    switch (q->type) {
    case CLIQ_HISTORY:
        if (q->card.card_id != 0) {
            ref.ref_case = CARDLEDGER__V1__CARD_REF__REF_CARD_ID;
            ref.card_id = q->card.card_id;
        } else {
            ref.ref_case = CARDLEDGER__V1__CARD_REF__REF_CODE;
            ref.code = m->card.code;
        }
        history.card = &ref;
        history.limit = q->limit;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_CARD_HISTORY;
        req.card_history = &history;
        break;
    case CLIQ_WALLET:
        wallet.merchant_id = m->merchant_id;
        wallet.holder = m->holder;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_HOLDER_WALLET;
        req.holder_wallet = &wallet;
        break;
    case CLIQ_LIABILITY:
        liability.merchant_id = m->merchant_id;
        liability.program_id = m->program_id;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_GET_LIABILITY;
        req.get_liability = &liability;
        break;
    case CLIQ_STORE_DAY:
        store_day.merchant_id = m->merchant_id;
        store_day.store_id = m->store_id;
        store_day.day_start_us = q->day_us;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_STORE_DAY;
        req.store_day = &store_day;
        break;
    case CLIQ_STORE_REDEMPTIONS:
        redemptions.merchant_id = m->merchant_id;
        redemptions.store_id = m->store_id;
        redemptions.from_us = q->from_us;
        redemptions.to_us = q->to_us;
        redemptions.limit = q->limit;
        redemptions.after_seq = q->after_seq;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_STORE_REDEMPTIONS;
        req.store_redemptions = &redemptions;
        break;
    case CLIQ_SETTLEMENT:
        settlement.merchant_id = m->merchant_id;
        settlement.from_us = q->from_us;
        settlement.to_us = q->to_us;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_SETTLEMENT;
        req.settlement = &settlement;
        break;
    case CLIQ_ANALYTICS:
        analytics.merchant_id = m->merchant_id;
        analytics.from_us = q->from_us;
        analytics.to_us = q->to_us;
        analytics.group_by = (Cardledger__V1__GroupBy)q->group_by;
        analytics.program_id = m->program_id;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_ANALYTICS;
        req.analytics = &analytics;
        break;
    case CLIQ_PROJECTION_STATUS:
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_PROJECTION_STATUS;
        req.projection_status = &status;
        break;
    case CLIQ_REBUILD:
        rebuild.name = m->name;
        req.command_case = CARDLEDGER__V1__REQUEST__COMMAND_REBUILD_PROJECTION;
        req.rebuild_projection = &rebuild;
        break;
    default:
        return CLIQ_EENCODE;
    }

    size_t len = cardledger__v1__request__get_packed_size(&req);
    if (len == 0 || len > CL_FRAME_MAX_BYTES)
        return CLIQ_EENCODE;
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return CLIQ_ENOMEM;
    size_t packed = cardledger__v1__request__pack(&req, buf);
    assert(packed == len);
    *out = buf;
    *out_len = packed;
    return 0;
}

/* ---- Decoding ------------------------------------------------------------------------------ */

/* Copies a string of the reply into a fixed field, truncated to fit (views are for display). */
static void
s_copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static void
s_card_view(const s_card_view_t *v, cl_card_view_t *out)
{
    memset(out, 0, sizeof(*out));
    if (v == NULL)
        return;
    out->card_id = v->card_id;
    s_copy(out->code_masked, sizeof(out->code_masked), v->code_masked);
    s_copy(out->merchant_id, sizeof(out->merchant_id), v->merchant_id);
    s_copy(out->program_id, sizeof(out->program_id), v->program_id);
    out->kind = (cl_kind_t)v->kind;
    s_copy(out->currency, sizeof(out->currency), v->currency);
    out->state = (cl_card_state_t)v->state;
    out->frozen = v->frozen;
    out->locked = v->locked;
    out->balance_minor = v->balance_minor;
    out->uses_left = v->uses_left;
    out->face_value_minor = v->face_value_minor;
    out->issued_at_us = v->issued_at_us;
    out->valid_from_us = v->valid_from_us;
    out->expires_at_us = v->expires_at_us;
    s_copy(out->holder, sizeof(out->holder), v->holder);
    out->pin_failures = v->pin_failures;
    out->open_offer_id = v->open_offer_id;
    out->transfers_done = v->transfers_done;
    out->redeemed_minor = v->redeemed_minor;
}

/* calloc(n, size) that is not NULL for n == 0, so "no rows" and "out of memory" differ. */
static void *
s_array(size_t n, size_t size)
{
    return calloc(n > 0 ? n : 1, size);
}

/* The field of a message by name, or NULL; used to find the amount and store of any event. */
static const ProtobufCFieldDescriptor *
s_field(const ProtobufCMessage *m, const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
}

/* A history entry's event: its name, and an amount and a store when it has them. */
static void
s_history_event(const Cardledger__V1__JournalEntry *e, cliq_history_entry_t *out)
{
    out->event = "unknown";
    out->store_id = "";
    if (e == NULL || e->event_case == CARDLEDGER__V1__JOURNAL_ENTRY__EVENT__NOT_SET)
        return;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &cardledger__v1__journal_entry__descriptor, (unsigned)e->event_case);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return;
    out->event = f->name;
    const ProtobufCMessage *ev = *(ProtobufCMessage *const *)((const char *)e + f->offset);
    if (ev == NULL)
        return;
    static const char *const amounts[] = { "amount_minor", "delta_minor", "face_value_minor",
                                           "breakage_minor" };
    for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]) && !out->has_amount; i++) {
        const ProtobufCFieldDescriptor *a = s_field(ev, amounts[i]);
        if (a != NULL && a->type == PROTOBUF_C_TYPE_INT64) {
            out->has_amount = true;
            out->amount_minor = *(const int64_t *)((const char *)ev + a->offset);
        }
    }
    const ProtobufCFieldDescriptor *s = s_field(ev, "store_id");
    if (s != NULL && s->type == PROTOBUF_C_TYPE_STRING) {
        const char *store = *(char *const *)((const char *)ev + s->offset);
        out->store_id = store != NULL ? store : "";
    }
}

static int
s_decode_result(const s_reply_t *p, cliq_reply_t *r)
{
    switch (p->result_case) {
    case CARDLEDGER__V1__REPLY__RESULT_HISTORY: {
        const Cardledger__V1__HistoryResult *h = p->history;
        s_card_view(h->card, &r->card);
        r->events_total = h->events_total;
        r->entries = s_array(h->n_entries, sizeof(*r->entries));
        r->holders = s_array(h->n_holders, sizeof(*r->holders));
        if (r->entries == NULL || r->holders == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < h->n_entries; i++) {
            r->entries[i].seq = h->entries[i]->seq;
            r->entries[i].at_us = h->entries[i]->at_us;
            s_history_event(h->entries[i]->entry, &r->entries[i]);
        }
        r->entries_n = h->n_entries;
        for (size_t i = 0; i < h->n_holders; i++)
            r->holders[i] = h->holders[i];
        r->holders_n = h->n_holders;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_WALLET: {
        const Cardledger__V1__WalletResult *w = p->wallet;
        r->cards = s_array(w->n_cards, sizeof(*r->cards));
        if (r->cards == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < w->n_cards; i++)
            s_card_view(w->cards[i], &r->cards[i]);
        r->cards_n = w->n_cards;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_LIABILITY: {
        const Cardledger__V1__LiabilityResult *l = p->liability;
        r->liability = s_array(l->n_rows, sizeof(*r->liability));
        if (r->liability == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < l->n_rows; i++) {
            const Cardledger__V1__LiabilityRow *row = l->rows[i];
            r->liability[i] = (cliq_liability_row_t){
                .merchant_id = row->merchant_id,
                .program_id = row->program_id,
                .currency = row->currency,
                .outstanding_minor = row->outstanding_minor,
                .live_cards = row->live_cards,
                .uses_outstanding = row->uses_outstanding,
            };
        }
        r->liability_n = l->n_rows;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_STORE_DAY: {
        const Cardledger__V1__StoreDayResult *d = p->store_day;
        r->store_day = (cliq_store_day_t){
            .store_id = d->store_id,
            .day_start_us = d->day_start_us,
            .redemptions = d->redemptions,
            .redeemed_minor = d->redeemed_minor,
            .reversals = d->reversals,
            .reversed_minor = d->reversed_minor,
            .uses_redeemed = d->uses_redeemed,
            .discount_minor = d->discount_minor,
        };
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_REDEMPTIONS: {
        const Cardledger__V1__RedemptionList *l = p->redemptions;
        r->lines = s_array(l->n_lines, sizeof(*r->lines));
        if (r->lines == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < l->n_lines; i++) {
            const Cardledger__V1__RedemptionLine *x = l->lines[i];
            r->lines[i] = (cliq_redemption_line_t){
                .seq = x->seq,
                .at_us = x->at_us,
                .card_id = x->card_id,
                .code_masked = x->code_masked,
                .order_ref = x->order_ref,
                .amount_minor = x->amount_minor,
                .uses = x->uses,
                .reversed_minor = x->reversed_minor,
                .reversed_uses = x->reversed_uses,
                .discount_minor = x->discount_minor,
            };
        }
        r->lines_n = l->n_lines;
        r->more = l->more;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_SETTLEMENT: {
        const Cardledger__V1__SettlementResult *s = p->settlement;
        r->cells = s_array(s->n_cells, sizeof(*r->cells));
        if (r->cells == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < s->n_cells; i++) {
            const Cardledger__V1__SettlementCell *c = s->cells[i];
            r->cells[i] = (cliq_settlement_cell_t){
                .sold_store_id = c->sold_store_id,
                .redeemed_store_id = c->redeemed_store_id,
                .redemptions = c->redemptions,
                .value_minor = c->value_minor,
            };
        }
        r->cells_n = s->n_cells;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_ANALYTICS: {
        const Cardledger__V1__AnalyticsResult *a = p->analytics;
        r->rows = s_array(a->n_rows, sizeof(*r->rows));
        if (r->rows == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < a->n_rows; i++) {
            const Cardledger__V1__AnalyticsRow *x = a->rows[i];
            r->rows[i] = (cliq_analytics_row_t){
                .key = x->key,
                .currency = x->currency,
                .issued_count = x->issued_count,
                .issued_face_minor = x->issued_face_minor,
                .price_paid_minor = x->price_paid_minor,
                .reloaded_minor = x->reloaded_minor,
                .redeemed_net_minor = x->redeemed_net_minor,
                .redemption_count = x->redemption_count,
                .breakage_minor = x->breakage_minor,
                .outstanding_minor = x->outstanding_minor,
                .value_redemption_rate_ppm = x->value_redemption_rate_ppm,
                .card_redemption_rate_ppm = x->card_redemption_rate_ppm,
                .gift_rate_ppm = x->gift_rate_ppm,
                .cross_region_share_ppm = x->cross_region_share_ppm,
            };
        }
        r->rows_n = a->n_rows;
        break;
    }
    case CARDLEDGER__V1__REPLY__RESULT_PROJECTIONS: {
        const Cardledger__V1__ProjectionStatusResult *s = p->projections;
        r->projections = s_array(s->n_projections, sizeof(*r->projections));
        if (r->projections == NULL)
            return CLIQ_ENOMEM;
        for (size_t i = 0; i < s->n_projections; i++) {
            const Cardledger__V1__ProjectionInfo *x = s->projections[i];
            r->projections[i] = (cliq_projection_t){
                .name = x->name,
                .schema_version = x->schema_version,
                .code_schema_version = x->code_schema_version,
                .checkpoint_seq = x->checkpoint_seq,
                .journal_head_seq = x->journal_head_seq,
                .lag_events = x->lag_events,
                .rebuilding = x->rebuilding,
                .rebuild_schema_version = x->rebuild_schema_version,
                .rebuild_checkpoint_seq = x->rebuild_checkpoint_seq,
                .rebuild_events_per_s = x->rebuild_events_per_s,
                .rebuild_eta_s = x->rebuild_eta_s,
                .error = x->error,
            };
        }
        r->projections_n = s->n_projections;
        break;
    }
    default:
        break; /* none, or a result the CLI does not show: --json still prints it */
    }
    return 0;
}

/* The result a query is answered with. */
static int
s_expected_result(cliq_type_t type)
{
    switch (type) {
    case CLIQ_HISTORY:
        return CARDLEDGER__V1__REPLY__RESULT_HISTORY;
    case CLIQ_WALLET:
        return CARDLEDGER__V1__REPLY__RESULT_WALLET;
    case CLIQ_LIABILITY:
        return CARDLEDGER__V1__REPLY__RESULT_LIABILITY;
    case CLIQ_STORE_DAY:
        return CARDLEDGER__V1__REPLY__RESULT_STORE_DAY;
    case CLIQ_STORE_REDEMPTIONS:
        return CARDLEDGER__V1__REPLY__RESULT_REDEMPTIONS;
    case CLIQ_SETTLEMENT:
        return CARDLEDGER__V1__REPLY__RESULT_SETTLEMENT;
    case CLIQ_ANALYTICS:
        return CARDLEDGER__V1__REPLY__RESULT_ANALYTICS;
    case CLIQ_PROJECTION_STATUS:
    case CLIQ_REBUILD:
        return CARDLEDGER__V1__REPLY__RESULT_PROJECTIONS;
    }
    return -1;
}

int
cliq_call(cl_client_t *c, const cliq_query_t *q, cliq_reply_t **out)
{
    if (c == NULL || q == NULL || out == NULL)
        return CLIENT_EINVAL;
    uint8_t *req = NULL;
    size_t req_len = 0;
    cliq_query_t copy;
    int rc = s_encode(q, &copy, &req, &req_len);
    if (rc < 0)
        return rc;
    const uint8_t *rep = NULL;
    size_t rep_len = 0;
    rc = cl_client_call_raw(c, q->request_id, req, req_len, &rep, &rep_len);
    free(req);
    if (rc < 0)
        return rc;

    s_reply_t *p = cardledger__v1__reply__unpack(NULL, rep_len, rep);
    if (p == NULL)
        return CLIQ_EPROTO;
    cliq_reply_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        cardledger__v1__reply__free_unpacked(p, NULL);
        return CLIQ_ENOMEM;
    }
    r->priv = p;
    r->request_id = p->request_id;
    r->status = (cl_status_t)p->status;
    r->message = p->message;
    r->replayed = p->replayed;
    r->last_seq = p->last_seq;
    r->as_of_seq = p->as_of_seq;
    r->result = (int)p->result_case;
    /* An answer must be the query's result, or a refusal (which carries none). */
    if (p->status == CARDLEDGER__V1__STATUS__STATUS_UNSPECIFIED ||
        (p->status == CARDLEDGER__V1__STATUS__STATUS_OK &&
         r->result != s_expected_result(q->type) && !(q->type == CLIQ_REBUILD && r->result == 0)))
        rc = CLIQ_EPROTO;
    if (rc == 0)
        rc = s_decode_result(p, r);
    if (rc < 0) {
        cliq_reply_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

void
cliq_reply_free(cliq_reply_t **rp)
{
    if (rp == NULL || *rp == NULL)
        return;
    cliq_reply_t *r = *rp;
    if (r->priv != NULL)
        cardledger__v1__reply__free_unpacked(r->priv, NULL);
    free(r->entries);
    free(r->holders);
    free(r->cards);
    free(r->liability);
    free(r->lines);
    free(r->cells);
    free(r->rows);
    free(r->projections);
    free(r);
    *rp = NULL;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

/* An enum value as the CLI spells it: without the enum's prefix, lower case, '-' for '_'
 * (CARD_KIND_STORED_VALUE -> "stored-value"). The prefix is what the value named *UNSPECIFIED
 * has before "UNSPECIFIED"; an unknown number is printed as a number. */
static void
s_json_enum(json_t *j, const char *key, const ProtobufCEnumDescriptor *d, int value)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    if (v == NULL) {
        json_i64(j, key, value);
        return;
    }
    size_t prefix = 0;
    const ProtobufCEnumValue *zero = protobuf_c_enum_descriptor_get_value(d, 0);
    if (zero != NULL) {
        const char *u = strstr(zero->name, "UNSPECIFIED");
        if (u != NULL && strncmp(v->name, zero->name, (size_t)(u - zero->name)) == 0)
            prefix = (size_t)(u - zero->name);
    }
    char buf[64];
    size_t n = 0;
    for (const char *s = v->name + prefix; *s != '\0' && n + 1 < sizeof(buf); s++)
        buf[n++] = *s == '_' ? '-' : (char)tolower((unsigned char)*s);
    buf[n] = '\0';
    json_str(j, key, buf);
}

static void s_json_message(json_t *j, const char *key, const ProtobufCMessage *m);

/* One value of field f at p (a member or an element of a repeated field). */
static void
s_json_value(json_t *j, const char *key, const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        json_i64(j, key, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        json_i64(j, key, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        json_u64(j, key, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        json_u64(j, key, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        json_bool(j, key, *(const protobuf_c_boolean *)p);
        break;
    case PROTOBUF_C_TYPE_ENUM:
        s_json_enum(j, key, f->descriptor, *(const int *)p);
        break;
    case PROTOBUF_C_TYPE_STRING:
        json_str(j, key, *(char *const *)p != NULL ? *(char *const *)p : "");
        break;
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        static const char hex[] = "0123456789abcdef";
        char buf[2 * 64 + 1];
        size_t n = 0;
        for (size_t i = 0; i < b->len && n + 2 < sizeof(buf); i++) {
            buf[n++] = hex[b->data[i] >> 4];
            buf[n++] = hex[b->data[i] & 15];
        }
        buf[n] = '\0';
        json_str(j, key, buf);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        s_json_message(j, key, *(ProtobufCMessage *const *)p);
        break;
    default:
        /* float and double: the contract has none (no floating point anywhere). */
        json_str(j, key, NULL);
        break;
    }
}

/* Size in memory of one element of a repeated field. */
static size_t
s_elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_FLOAT:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    }
    return 0;
}

/* A message as an object with every field: proto3 scalars always (zero or not), a oneof's
 * member only when it is the one set, a message field as null when absent. Nesting past the
 * writer's depth is cut (as null), which the contract never reaches. */
static void
s_json_message(json_t *j, const char *key, const ProtobufCMessage *m)
{
    if (m == NULL || j->depth + 1 >= JSON_DEPTH_MAX) {
        json_str(j, key, NULL);
        return;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    json_object_begin(j, key);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        /* A journal entry's request id in its compact storage form (field 3): the projector
         * answers with it as text in request_id (qanswer.c), so this is always empty here. */
        if (d == &cardledger__v1__journal_entry__descriptor && f->id == 3)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        const void *p = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(const char *const *)p;
            if (j->depth + 1 >= JSON_DEPTH_MAX)
                continue;
            json_array_begin(j, f->name);
            for (size_t k = 0; k < n && arr != NULL; k++)
                s_json_value(j, NULL, f, arr + k * s_elem_size(f));
            json_array_end(j);
            continue;
        }
        s_json_value(j, f->name, f, p);
    }
    json_object_end(j);
}

void
cliq_reply_json(const cliq_reply_t *r, json_t *j)
{
    assert(r != NULL && j != NULL);
    const s_reply_t *p = r->priv;
    json_str(j, "request_id", r->request_id);
    json_str(j, "status", cl_status_name(r->status));
    json_u64(j, "status_code", (uint64_t)r->status);
    json_str(j, "message", r->message);
    json_bool(j, "replayed", r->replayed);
    json_u64(j, "last_seq", r->last_seq);
    json_u64(j, "as_of_seq", r->as_of_seq);
    const ProtobufCFieldDescriptor *f =
        r->result != 0 ? protobuf_c_message_descriptor_get_field(&cardledger__v1__reply__descriptor,
                                                                 (unsigned)r->result)
                       : NULL;
    json_str(j, "result", f != NULL ? f->name : "none");
    if (f != NULL && p != NULL)
        s_json_value(j, f->name, f, (const char *)p + f->offset);
}
