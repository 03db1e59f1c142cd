/*
 * The codec's shared translation helpers and its error strings.
 *
 * Requests, events and replies all carry strings with named limits, card references and (for
 * programs) a ProgramSpec; the helpers here translate those in both directions once, so the
 * three directions of traffic apply the very same limits. Translation into the domain goes
 * through a sticky context (codec_in_t) that keeps the first failure and the path of the field
 * that caused it, so a refusal can name "define_program.spec.accepting_store_ids[3]".
 * Translation out of the domain hands protobuf-c pointers into the domain structs (packing
 * only reads them), so nothing is copied or allocated.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codec-private.h"

const char *
codec_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case CODEC_EINVAL:
        return "invalid argument";
    case CODEC_ENOMEM:
        return "out of memory";
    case CODEC_EMALFORMED:
        return "the bytes are not the expected protobuf message";
    case CODEC_ETOOLARGE:
        return "the frame or batch is over its named limit";
    case CODEC_ELIMIT:
        return "a string or list is over its named limit";
    case CODEC_EUNKNOWN:
        return "an event this codec does not know";
    case CODEC_EINVALID:
        return "a string holds a NUL byte or invalid UTF-8, or a hash has the wrong length";
    case CODEC_ENOSPC:
        return "the output buffer is too small";
    case CODEC_EEND:
        return "no more replies";
    default:
        return "unknown codec error";
    }
}

int
codec_pack(const ProtobufCMessage *msg, uint8_t *buf, size_t cap, size_t *out_len)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    if (size > cap) {
        return CODEC_ENOSPC;
    }
    if (size > 0) {
        size_t written = protobuf_c_message_pack(msg, buf);
        assert(written == size);
        (void)written;
    }
    *out_len = size;
    return 0;
}

/* ---- protobuf-c -> domain ----------------------------------------------------------------- */

void
codec_in_init(codec_in_t *in, char *msg, size_t msg_cap, bool strict_enums)
{
    in->err = 0;
    in->status = CL_OK;
    in->msg = msg;
    in->msg_cap = msg_cap;
    in->strict_enums = strict_enums;
    in->path[0] = '\0';
    in->path_len = 0;
    if (msg != NULL && msg_cap > 0) {
        msg[0] = '\0';
    }
}

void
codec_in_fail(codec_in_t *in, int err, const char *fmt, ...)
{
    assert(err == CODEC_ELIMIT || err == CODEC_EINVALID);
    if (in->err != 0) {
        return;
    }
    in->err = err;
    in->status = err == CODEC_ELIMIT ? CL_TOO_LARGE : CL_INVALID_ARGUMENT;
    if (in->msg != NULL && in->msg_cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(in->msg, in->msg_cap, fmt, ap);
        va_end(ap);
    }
}

size_t
codec_in_push(codec_in_t *in, const char *name, long index)
{
    size_t saved = in->path_len;
    in->path_len = codec_path_append(in->path, sizeof in->path, in->path_len, name, index);
    return saved;
}

void
codec_in_pop(codec_in_t *in, size_t len)
{
    assert(len <= in->path_len);
    in->path_len = len;
    in->path[len] = '\0';
}

/* The full name of a field for a sentence: "path.field", or the path alone. */
static const char *
s_name(const codec_in_t *in, const char *field, char *buf, size_t cap)
{
    if (field == NULL) {
        return in->path;
    }
    if (in->path_len == 0) {
        return field;
    }
    snprintf(buf, cap, "%s.%s", in->path, field);
    return buf;
}

void
codec_in_str(codec_in_t *in, char *dst, size_t dst_cap, const char *src, const char *field)
{
    assert(dst != NULL && dst_cap > 0);
    if (in->err != 0) {
        return;
    }
    if (src == NULL) {
        src = "";
    }
    size_t len = strlen(src);
    if (len >= dst_cap) {
        char name[CODEC_PATH_MAX + 32];
        codec_in_fail(in, CODEC_ELIMIT, "%s is %zu bytes, the limit is %zu",
                      s_name(in, field, name, sizeof name), len, dst_cap - 1);
        return;
    }
    memcpy(dst, src, len + 1);
}

bool
codec_in_count(codec_in_t *in, size_t n, size_t max, const char *field)
{
    if (in->err != 0) {
        return false;
    }
    if (n > max) {
        char name[CODEC_PATH_MAX + 32];
        codec_in_fail(in, CODEC_ELIMIT, "%s has %zu entries, the limit is %zu",
                      s_name(in, field, name, sizeof name), n, max);
        return false;
    }
    return true;
}

int
codec_in_enum(codec_in_t *in, int value, int max, const char *field)
{
    if (in->strict_enums && (value < 0 || value > max) && in->err == 0) {
        char name[CODEC_PATH_MAX + 32];
        codec_in_fail(in, CODEC_EINVALID, "%s is %d, which is not one of its known values",
                      s_name(in, field, name, sizeof name), value);
    }
    return value;
}

void
codec_in_card_ref(codec_in_t *in, cl_card_ref_t *dst, const Cardledger__V1__CardRef *src,
                  const char *field)
{
    if (src == NULL) {
        return;
    }
    size_t saved = codec_in_push(in, field, -1);
    switch (src->ref_case) {
    case CARDLEDGER__V1__CARD_REF__REF_CODE:
        codec_in_str(in, dst->code, sizeof dst->code, src->code, "code");
        break;
    case CARDLEDGER__V1__CARD_REF__REF_CARD_ID:
        dst->card_id = src->card_id;
        break;
    case CARDLEDGER__V1__CARD_REF__REF__NOT_SET:
    default:
        break;
    }
    codec_in_pop(in, saved);
}

/* Copies a repeated string field into a fixed array of strings, naming each by its index. */
static void
s_in_str_list(codec_in_t *in, char *dst, size_t dst_cap, uint32_t *dst_count, size_t max,
              char *const *src, size_t n, const char *field)
{
    if (!codec_in_count(in, n, max, field)) {
        return;
    }
    for (size_t i = 0; i < n && in->err == 0; i++) {
        size_t saved = codec_in_push(in, field, (long)i);
        codec_in_str(in, dst + i * dst_cap, dst_cap, src[i], NULL);
        codec_in_pop(in, saved);
    }
    *dst_count = (uint32_t)n;
}

void
codec_in_spec(codec_in_t *in, cl_program_spec_t *d, const Cardledger__V1__ProgramSpec *s)
{
    d->accept_scope = CL_ACCEPT_ALL; /* ACCEPT_SCOPE_UNSPECIFIED reads as ALL_STORES */
    if (s == NULL) {
        return;
    }
    codec_in_str(in, d->merchant_id, sizeof d->merchant_id, s->merchant_id, "merchant_id");
    codec_in_str(in, d->program_id, sizeof d->program_id, s->program_id, "program_id");
    codec_in_str(in, d->name, sizeof d->name, s->name, "name");
    d->kind = (cl_kind_t)codec_in_enum(in, (int)s->kind, CL_KIND_VOUCHER_EXCHANGE, "kind");
    codec_in_str(in, d->currency, sizeof d->currency, s->currency, "currency");
    if (codec_in_count(in, s->n_denominations_minor, CL_DENOMS_MAX, "denominations_minor")) {
        for (size_t i = 0; i < s->n_denominations_minor; i++) {
            d->denoms_minor[i] = s->denominations_minor[i];
        }
        d->denoms_count = (uint32_t)s->n_denominations_minor;
    }
    d->custom_min_minor = s->custom_min_minor;
    d->custom_max_minor = s->custom_max_minor;
    switch (s->validity_case) {
    case CARDLEDGER__V1__PROGRAM_SPEC__VALIDITY_WINDOW:
        d->has_window = true;
        if (s->window != NULL) {
            d->valid_from_us = s->window->valid_from_us;
            d->valid_until_us = s->window->valid_until_us;
        }
        break;
    case CARDLEDGER__V1__PROGRAM_SPEC__VALIDITY_VALID_DAYS:
        d->valid_days = s->valid_days;
        break;
    case CARDLEDGER__V1__PROGRAM_SPEC__VALIDITY__NOT_SET:
    default:
        break;
    }
    int scope = codec_in_enum(in, (int)s->accept_scope, CL_ACCEPT_REGION_LIST, "accept_scope");
    d->accept_scope = scope == 0 ? CL_ACCEPT_ALL : (cl_accept_scope_t)scope;
    s_in_str_list(in, &d->accept_stores[0][0], sizeof d->accept_stores[0], &d->accept_stores_count,
                  CL_ACCEPT_STORES_MAX, s->accepting_store_ids, s->n_accepting_store_ids,
                  "accepting_store_ids");
    s_in_str_list(in, &d->accept_regions[0][0], sizeof d->accept_regions[0],
                  &d->accept_regions_count, CL_ACCEPT_REGIONS_MAX, s->accepting_regions,
                  s->n_accepting_regions, "accepting_regions");
    d->stock_max = s->stock_max;
    d->per_holder_max = s->per_holder_max;
    d->transferable = s->transferable != 0;
    d->transfers_max = s->transfers_max;
    d->pin_required = s->pin_required != 0;
    d->reloadable = s->reloadable != 0;
    d->balance_max_minor = s->balance_max_minor;
    codec_in_str(in, d->theme, sizeof d->theme, s->theme, "theme");
    d->uses_per_card = s->uses_per_card;
    if (s->voucher != NULL) {
        const Cardledger__V1__VoucherRule *v = s->voucher;
        size_t saved = codec_in_push(in, "voucher", -1);
        d->voucher.threshold_minor = v->threshold_minor;
        d->voucher.amount_off_minor = v->amount_off_minor;
        d->voucher.percent_off_bp = v->percent_off_bp;
        d->voucher.cap_minor = v->cap_minor;
        s_in_str_list(in, &d->voucher.skus[0][0], sizeof d->voucher.skus[0], &d->voucher.skus_count,
                      CL_SKUS_MAX, v->eligible_skus, v->n_eligible_skus, "eligible_skus");
        d->voucher.uses_per_card = v->uses_per_card;
        codec_in_pop(in, saved);
    }
    d->remind_days_before_expiry = s->remind_days_before_expiry;
    d->gift_offer_ttl_hours = s->gift_offer_ttl_hours;
}

/* ---- domain -> protobuf-c ----------------------------------------------------------------- */

char *
codec_out_str(int *err, const char *s, size_t cap)
{
    if (memchr(s, '\0', cap) == NULL) {
        *err = CODEC_ELIMIT;
        s = "";
    }
    /* protobuf-c declares strings `char *` but packing only reads them. */
    return (char *)(uintptr_t)s;
}

Cardledger__V1__CardRef *
codec_out_card_ref(int *err, const cl_card_ref_t *r, Cardledger__V1__CardRef *m)
{
    cardledger__v1__card_ref__init(m);
    if (r->card_id != 0) {
        m->ref_case = CARDLEDGER__V1__CARD_REF__REF_CARD_ID;
        m->card_id = r->card_id;
        return m;
    }
    if (r->code[0] != '\0') {
        m->ref_case = CARDLEDGER__V1__CARD_REF__REF_CODE;
        m->code = CODEC_OUT_STR(err, r->code);
        return m;
    }
    return NULL;
}

/* Points a protobuf-c repeated string field at a fixed array of strings. */
static size_t
s_out_str_list(int *err, char **ptrs, size_t max, const char *strs, size_t str_cap, uint32_t n)
{
    if (n > max) {
        *err = CODEC_ELIMIT;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = codec_out_str(err, strs + i * str_cap, str_cap);
    }
    return n;
}

void
codec_out_spec(int *err, const cl_program_spec_t *s, Cardledger__V1__ProgramSpec *m,
               codec_spec_scratch_t *x)
{
    cardledger__v1__program_spec__init(m);
    m->merchant_id = CODEC_OUT_STR(err, s->merchant_id);
    m->program_id = CODEC_OUT_STR(err, s->program_id);
    m->name = CODEC_OUT_STR(err, s->name);
    m->kind = (Cardledger__V1__CardKind)s->kind;
    m->currency = CODEC_OUT_STR(err, s->currency);
    if (s->denoms_count > CL_DENOMS_MAX) {
        *err = CODEC_ELIMIT;
    } else {
        m->n_denominations_minor = s->denoms_count;
        m->denominations_minor = (int64_t *)(uintptr_t)s->denoms_minor;
    }
    m->custom_min_minor = s->custom_min_minor;
    m->custom_max_minor = s->custom_max_minor;
    if (s->has_window) {
        cardledger__v1__validity_window__init(&x->window);
        x->window.valid_from_us = s->valid_from_us;
        x->window.valid_until_us = s->valid_until_us;
        m->validity_case = CARDLEDGER__V1__PROGRAM_SPEC__VALIDITY_WINDOW;
        m->window = &x->window;
    } else if (s->valid_days != 0) {
        m->validity_case = CARDLEDGER__V1__PROGRAM_SPEC__VALIDITY_VALID_DAYS;
        m->valid_days = s->valid_days;
    }
    m->accept_scope = (Cardledger__V1__AcceptScope)s->accept_scope;
    m->n_accepting_store_ids =
        s_out_str_list(err, x->stores, CL_ACCEPT_STORES_MAX, &s->accept_stores[0][0],
                       sizeof s->accept_stores[0], s->accept_stores_count);
    m->accepting_store_ids = x->stores;
    m->n_accepting_regions =
        s_out_str_list(err, x->regions, CL_ACCEPT_REGIONS_MAX, &s->accept_regions[0][0],
                       sizeof s->accept_regions[0], s->accept_regions_count);
    m->accepting_regions = x->regions;
    m->stock_max = s->stock_max;
    m->per_holder_max = s->per_holder_max;
    m->transferable = s->transferable;
    m->transfers_max = s->transfers_max;
    m->pin_required = s->pin_required;
    m->reloadable = s->reloadable;
    m->balance_max_minor = s->balance_max_minor;
    m->theme = CODEC_OUT_STR(err, s->theme);
    m->uses_per_card = s->uses_per_card;
    const cl_voucher_rule_t *v = &s->voucher;
    if (v->threshold_minor != 0 || v->amount_off_minor != 0 || v->percent_off_bp != 0 ||
        v->cap_minor != 0 || v->skus_count != 0 || v->uses_per_card != 0) {
        /* Only programs of the voucher kinds carry a rule; the others leave it out. */
        cardledger__v1__voucher_rule__init(&x->voucher);
        x->voucher.threshold_minor = v->threshold_minor;
        x->voucher.amount_off_minor = v->amount_off_minor;
        x->voucher.percent_off_bp = v->percent_off_bp;
        x->voucher.cap_minor = v->cap_minor;
        x->voucher.n_eligible_skus = s_out_str_list(err, x->skus, CL_SKUS_MAX, &v->skus[0][0],
                                                    sizeof v->skus[0], v->skus_count);
        x->voucher.eligible_skus = x->skus;
        x->voucher.uses_per_card = v->uses_per_card;
        m->voucher = &x->voucher;
    }
    m->remind_days_before_expiry = s->remind_days_before_expiry;
    m->gift_offer_ttl_hours = s->gift_offer_ttl_hours;
}
