/*
 * The subcommands of the cardledger CLI: one table entry per command and query the daemon
 * answers, and the function that turns its arguments into a cl_command_t.
 *
 * Every run function only builds the command and hands it to cli_run_command(), which sends it
 * with libcardledger and prints the reply; validation here is about the shape of the input
 * (a number is a number, a string fits its named limit). What the input means (the card exists,
 * the balance suffices) is the ledger's to decide, and its refusal is what the user sees.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "units.h"

#define S_END            \
    {                    \
        NULL, NULL, NULL \
    }

/* Splits a comma-separated list into at most max items, each copied by `copy`. */
typedef int (*s_item_fn)(void *ctx, size_t index, const char *item);

static int
s_split(const cli_args_t *a, const char *name, size_t max, s_item_fn fn, void *ctx,
        uint32_t *out_count)
{
    const char *v = cli_value(a, name);
    if (v == NULL)
        return 0;
    char item[CL_NAME_MAX + 32];
    size_t count = 0;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == 0)
            return cli_usage_error(a, "--%s '%s': an empty item in the list", name, v);
        if (len >= sizeof(item))
            return cli_usage_error(a, "--%s: the item '%.*s' is too long", name, (int)len, p);
        if (count == max)
            return cli_usage_error(a, "--%s: more than %zu items", name, max);
        memcpy(item, p, len);
        item[len] = '\0';
        int rc = fn(ctx, count, item);
        if (rc != 0)
            return rc;
        count++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *out_count = (uint32_t)count;
    return 0;
}

/* ---- merchant, store ------------------------------------------------------------------------ */

static const cli_opt_t s_merchant_register_opts[] = {
    { "name", "NAME", "display name (default: the merchant id)" },
    S_END,
};

static int
s_merchant_register(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REGISTER_MERCHANT;
    cl_ev_merchant_registered_t *m = &cmd.u.register_merchant;
    int rc =
        cli_copy(a, "the merchant id", a->positional[0], m->merchant_id, sizeof(m->merchant_id));
    if (rc == 0) {
        snprintf(m->name, sizeof(m->name), "%s", m->merchant_id);
        rc = cli_get_str(a, "name", false, m->name, sizeof(m->name));
    }
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_store_register_opts[] = {
    { "merchant", "MERCHANT", "the merchant the store belongs to (required)" },
    { "region", "REGION", "the store's region code, e.g. 310000 (required)" },
    { "name", "NAME", "display name (default: the store id)" },
    S_END,
};

static int
s_store_register(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REGISTER_STORE;
    cl_ev_store_registered_t *s = &cmd.u.register_store;
    int rc = cli_copy(a, "the store id", a->positional[0], s->store_id, sizeof(s->store_id));
    if (rc == 0)
        rc = cli_get_str(a, "merchant", true, s->merchant_id, sizeof(s->merchant_id));
    if (rc == 0)
        rc = cli_get_str(a, "region", true, s->region, sizeof(s->region));
    if (rc == 0) {
        snprintf(s->name, sizeof(s->name), "%s", s->store_id);
        rc = cli_get_str(a, "name", false, s->name, sizeof(s->name));
    }
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

/* ---- program -------------------------------------------------------------------------------- */

static const cli_opt_t s_program_opts[] = {
    { "merchant", "MERCHANT", "the program's merchant (required)" },
    { "kind", "KIND",
      "stored-value, punch, voucher-threshold, voucher-percent, voucher-cash or "
      "voucher-exchange (required)" },
    { "currency", "CODE", "ISO 4217 currency, e.g. CNY (required)" },
    { "name", "NAME", "display name (default: the program id)" },
    { "denominations", "A,B,..", "the fixed face values (e.g. 100,200,500)" },
    { "custom-min", "AMOUNT", "without denominations: the smallest face value" },
    { "custom-max", "AMOUNT", "without denominations: the largest face value" },
    { "valid-days", "N", "cards are valid N days from issue" },
    { "valid-from", "TIME", "or a fixed window: valid from this UTC time" },
    { "valid-until", "TIME", "... until this UTC time (a date alone is 00:00 that day)" },
    { "stores", "S1,S2,..", "accepted only at these stores (default: all the merchant's)" },
    { "regions", "R1,R2,..", "accepted only in these regions" },
    { "stock", "N", "cards that may ever be issued (default unlimited)" },
    { "per-holder", "N", "cards one holder may hold (default unlimited)" },
    { "transferable", NULL, "cards may be gifted and transferred" },
    { "transfers-max", "N", "gifts per card (default unlimited when transferable)" },
    { "pin-required", NULL, "redeeming needs the card's PIN" },
    { "reloadable", NULL, "cards may be topped up" },
    { "balance-max", "AMOUNT", "reloadable: the largest balance" },
    { "uses", "N", "punch cards: uses per card; vouchers: uses per voucher (default 1)" },
    { "threshold", "AMOUNT", "vouchers: the smallest order the voucher applies to" },
    { "amount-off", "AMOUNT", "threshold and cash vouchers: the discount" },
    { "percent-off", "P", "percent vouchers: 15% or basis points (1500)" },
    { "cap", "AMOUNT", "percent vouchers: the largest discount" },
    { "skus", "SKU1,SKU2,..", "exchange vouchers: the eligible items" },
    { "remind-days", "N", "remind holders N days before expiry" },
    { "gift-ttl-hours", "N", "unclaimed gift offers return after N hours (default 72)" },
    { "theme", "LABEL", "the card face's template label" },
    S_END,
};

static const char s_program_details[] =
    "A program is defined whole and updated whole: 'program update' takes the same options\n"
    "and replaces the spec (the kind and currency never change; issued cards keep their\n"
    "value and expiry).\n";

static const struct {
    const char *name;
    cl_kind_t kind;
} s_kinds[] = {
    { "stored-value", CL_KIND_STORED_VALUE },
    { "punch", CL_KIND_PUNCH },
    { "voucher-threshold", CL_KIND_VOUCHER_THRESHOLD },
    { "voucher-percent", CL_KIND_VOUCHER_PERCENT },
    { "voucher-cash", CL_KIND_VOUCHER_CASH },
    { "voucher-exchange", CL_KIND_VOUCHER_EXCHANGE },
};

typedef struct s_list_ctx {
    cli_t *cli;
    const cli_args_t *a;
    cl_program_spec_t *spec;
} s_list_ctx_t;

static int
s_denom_item(void *vctx, size_t index, const char *item)
{
    s_list_ctx_t *ctx = vctx;
    if (units_amount_parse(item, ctx->cli->minor, &ctx->spec->denoms_minor[index]) < 0)
        return cli_usage_error(ctx->a, "--denominations: '%s' is not an amount", item);
    return 0;
}

static int
s_store_item(void *vctx, size_t index, const char *item)
{
    s_list_ctx_t *ctx = vctx;
    return cli_copy(ctx->a, "a store id in --stores", item, ctx->spec->accept_stores[index],
                    sizeof(ctx->spec->accept_stores[index]));
}

static int
s_region_item(void *vctx, size_t index, const char *item)
{
    s_list_ctx_t *ctx = vctx;
    return cli_copy(ctx->a, "a region in --regions", item, ctx->spec->accept_regions[index],
                    sizeof(ctx->spec->accept_regions[index]));
}

static int
s_sku_item(void *vctx, size_t index, const char *item)
{
    s_list_ctx_t *ctx = vctx;
    return cli_copy(ctx->a, "a SKU in --skus", item, ctx->spec->voucher.skus[index],
                    sizeof(ctx->spec->voucher.skus[index]));
}

/* Builds a whole program spec from the options. Returns 0 or an exit code. */
static int
s_program_spec(cli_t *cli, const cli_args_t *a, cl_program_spec_t *spec)
{
    memset(spec, 0, sizeof(*spec));
    int rc =
        cli_copy(a, "the program id", a->positional[0], spec->program_id, sizeof(spec->program_id));
    if (rc == 0)
        rc = cli_get_str(a, "merchant", true, spec->merchant_id, sizeof(spec->merchant_id));
    if (rc != 0)
        return rc;
    snprintf(spec->name, sizeof(spec->name), "%s", spec->program_id);
    rc = cli_get_str(a, "name", false, spec->name, sizeof(spec->name));
    if (rc != 0)
        return rc;

    const char *kind = cli_value(a, "kind");
    if (kind == NULL)
        return cli_usage_error(a, "--kind is required");
    for (size_t i = 0; i < sizeof(s_kinds) / sizeof(s_kinds[0]); i++) {
        if (strcmp(kind, s_kinds[i].name) == 0)
            spec->kind = s_kinds[i].kind;
    }
    if (spec->kind == CL_KIND_NONE)
        return cli_usage_error(a,
                               "--kind '%s': one of stored-value, punch, voucher-threshold, "
                               "voucher-percent, voucher-cash, voucher-exchange",
                               kind);

    const char *cur = cli_value(a, "currency");
    if (cur == NULL)
        return cli_usage_error(a, "--currency is required");
    if (strlen(cur) != CL_CURRENCY_LEN)
        return cli_usage_error(a, "--currency '%s': three letters (ISO 4217), e.g. CNY", cur);
    for (size_t i = 0; i < CL_CURRENCY_LEN; i++) {
        char ch = cur[i];
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        if (ch < 'A' || ch > 'Z')
            return cli_usage_error(a, "--currency '%s': three letters (ISO 4217), e.g. CNY", cur);
        spec->currency[i] = ch;
    }

    s_list_ctx_t ctx = { cli, a, spec };
    rc = s_split(a, "denominations", CL_DENOMS_MAX, s_denom_item, &ctx, &spec->denoms_count);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "custom-min", false, &spec->custom_min_minor);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "custom-max", false, &spec->custom_max_minor);
    if (rc != 0)
        return rc;

    bool window = cli_value(a, "valid-from") != NULL || cli_value(a, "valid-until") != NULL;
    if (window && cli_value(a, "valid-days") != NULL)
        return cli_usage_error(a, "give --valid-days or --valid-from/--valid-until, not both");
    if (window) {
        spec->has_window = true;
        rc = cli_get_time(a, "valid-from", false, &spec->valid_from_us);
        if (rc == 0)
            rc = cli_get_time(a, "valid-until", true, &spec->valid_until_us);
    } else {
        rc = cli_get_u32(a, "valid-days", false, CL_VALID_DAYS_MAX, &spec->valid_days);
    }
    if (rc != 0)
        return rc;

    spec->accept_scope = CL_ACCEPT_ALL;
    if (cli_value(a, "stores") != NULL && cli_value(a, "regions") != NULL)
        return cli_usage_error(a, "give --stores or --regions, not both");
    if (cli_value(a, "stores") != NULL) {
        spec->accept_scope = CL_ACCEPT_STORE_LIST;
        rc = s_split(a, "stores", CL_ACCEPT_STORES_MAX, s_store_item, &ctx,
                     &spec->accept_stores_count);
    } else if (cli_value(a, "regions") != NULL) {
        spec->accept_scope = CL_ACCEPT_REGION_LIST;
        rc = s_split(a, "regions", CL_ACCEPT_REGIONS_MAX, s_region_item, &ctx,
                     &spec->accept_regions_count);
    }
    if (rc == 0)
        rc = cli_get_u64(a, "stock", false, &spec->stock_max);
    if (rc == 0)
        rc = cli_get_u32(a, "per-holder", false, UINT32_MAX, &spec->per_holder_max);
    if (rc == 0)
        rc = cli_get_u32(a, "transfers-max", false, UINT32_MAX, &spec->transfers_max);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "balance-max", false, &spec->balance_max_minor);
    if (rc == 0)
        rc = cli_get_u32(a, "remind-days", false, CL_VALID_DAYS_MAX,
                         &spec->remind_days_before_expiry);
    if (rc == 0)
        rc = cli_get_u32(a, "gift-ttl-hours", false, UINT32_MAX, &spec->gift_offer_ttl_hours);
    if (rc == 0)
        rc = cli_get_str(a, "theme", false, spec->theme, sizeof(spec->theme));
    if (rc != 0)
        return rc;
    spec->transferable = cli_flag(a, "transferable");
    spec->pin_required = cli_flag(a, "pin-required");
    spec->reloadable = cli_flag(a, "reloadable");

    uint32_t uses = 0;
    rc = cli_get_u32(a, "uses", false, CL_USES_MAX, &uses);
    if (rc != 0)
        return rc;
    if (spec->kind == CL_KIND_PUNCH) {
        spec->uses_per_card = uses;
    } else if (spec->kind != CL_KIND_STORED_VALUE) {
        spec->voucher.uses_per_card = uses > 0 ? uses : 1;
    } else if (uses > 0) {
        return cli_usage_error(a, "--uses is for punch cards and vouchers");
    }
    rc = cli_get_amount(cli, a, "threshold", false, &spec->voucher.threshold_minor);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "amount-off", false, &spec->voucher.amount_off_minor);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "cap", false, &spec->voucher.cap_minor);
    if (rc == 0 && cli_value(a, "percent-off") != NULL &&
        units_percent_parse(cli_value(a, "percent-off"), &spec->voucher.percent_off_bp) < 0)
        rc = cli_usage_error(a,
                             "--percent-off '%s': a percentage from 0.01%% to 100%% (15%%) "
                             "or basis points from 1 to 10000 (1500)",
                             cli_value(a, "percent-off"));
    if (rc == 0)
        rc = s_split(a, "skus", CL_SKUS_MAX, s_sku_item, &ctx, &spec->voucher.skus_count);
    return rc;
}

static int
s_program_define(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = strcmp(a->cmd->name, "update") == 0 ? CL_CMD_UPDATE_PROGRAM : CL_CMD_DEFINE_PROGRAM;
    int rc = s_program_spec(cli, a, &cmd.u.program);
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_program_close_opts[] = {
    { "merchant", "MERCHANT", "the program's merchant (required)" },
    { "reason", "TEXT", "why (kept in the journal)" },
    S_END,
};

static int
s_program_close(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_CLOSE_PROGRAM;
    cl_ev_program_closed_t *p = &cmd.u.close_program;
    int rc = cli_copy(a, "the program id", a->positional[0], p->program_id, sizeof(p->program_id));
    if (rc == 0)
        rc = cli_get_str(a, "merchant", true, p->merchant_id, sizeof(p->merchant_id));
    if (rc == 0)
        rc = cli_get_str(a, "reason", false, p->reason, sizeof(p->reason));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

/* ---- issue ---------------------------------------------------------------------------------- */

static const cli_opt_t s_issue_opts[] = {
    { "merchant", "MERCHANT", "the program's merchant (required)" },
    { "program", "PROGRAM", "the program to issue from (required)" },
    { "face-value", "AMOUNT", "stored value: the card's value" },
    { "price-paid", "AMOUNT", "what the buyer paid (default: the face value)" },
    { "free", NULL, "the buyer paid nothing (a promotion)" },
    { "holder", "HOLDER", "the holder's reference in the merchant's systems" },
    { "channel", "CHANNEL", "online, store, enterprise or platform (default online)" },
    { "store", "STORE", "the selling store" },
    { "region", "REGION", "the selling region, when sold without a store" },
    { "import-code", "CODE", "a pre-printed or platform code instead of a generated one" },
    { "import-pin", "PIN", "with --import-code: the printed PIN" },
    S_END,
};

static int
s_issue(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_ISSUE_CARD;
    cl_cmd_issue_card_t *c = &cmd.u.issue_card;
    uint32_t channel = CL_CHANNEL_ONLINE;
    int rc = cli_get_str(a, "merchant", true, c->merchant_id, sizeof(c->merchant_id));
    if (rc == 0)
        rc = cli_get_str(a, "program", true, c->program_id, sizeof(c->program_id));
    if (rc == 0)
        rc = cli_get_amount(cli, a, "face-value", false, &c->face_value_minor);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "price-paid", false, &c->price_paid_minor);
    if (rc == 0)
        rc = cli_get_str(a, "holder", false, c->holder, sizeof(c->holder));
    if (rc == 0)
        rc = cli_get_channel(a, "channel", &channel);
    if (rc == 0)
        rc = cli_get_str(a, "store", false, c->store_id, sizeof(c->store_id));
    if (rc == 0)
        rc = cli_get_str(a, "region", false, c->region, sizeof(c->region));
    if (rc == 0)
        rc = cli_get_str(a, "import-code", false, c->import_code, sizeof(c->import_code));
    if (rc == 0)
        rc = cli_get_str(a, "import-pin", false, c->import_pin, sizeof(c->import_pin));
    if (rc != 0)
        return rc;
    if (cli_flag(a, "free") && cli_value(a, "price-paid") != NULL)
        return cli_usage_error(a, "give --free or --price-paid, not both");
    if (c->import_pin[0] != '\0' && c->import_code[0] == '\0')
        return cli_usage_error(a, "--import-pin needs --import-code");
    c->paid_nothing = cli_flag(a, "free");
    c->channel = (cl_channel_t)channel;
    return cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_issue_batch_opts[] = {
    { "merchant", "MERCHANT", "the program's merchant (required)" },
    { "program", "PROGRAM", "the program to issue from (required)" },
    { "out", "FILE", "write row_key,card_id,code,pin,status here (default: stdout)" },
    { "force", NULL, "overwrite --out when it exists" },
    { "batch-size", "N", "rows per IssueBatch command (default and at most 1000)" },
    { "face-value", "AMOUNT", "face value for rows without one" },
    { "channel", "CHANNEL", "channel for rows without one (default enterprise)" },
    { "batch-ref", "REF", "the reference recorded with each batch (default: csv:<file hash>)" },
    S_END,
};

static const char s_issue_batch_details[] =
    "FILE.csv is UTF-8 (a byte-order mark is fine) with a header row naming its columns:\n"
    "  row_key (required, unique in the file), holder, face_value, channel, store, region.\n"
    "Other columns are ignored. Fields may be quoted as RFC 4180 says. Every row is checked\n"
    "before anything is sent; errors name the line. Rows go in IssueBatch commands whose\n"
    "request ids are derived from the merchant, the program, the file's content and the\n"
    "batch's place, so running the same file again issues nothing twice: rows already\n"
    "issued come back as already_issued, without their PIN. PINs appear only for rows newly\n"
    "issued by this run: keep the output file safe, it is the only copy of them.\n";

/* ---- card commands -------------------------------------------------------------------------- */

static const cli_opt_t s_redeem_opts[] = {
    { "store", "STORE", "the redeeming store (required)" },
    { "amount", "AMOUNT", "stored value: the amount to take" },
    { "uses", "N", "punch cards: the uses to take (default 1)" },
    { "order-amount", "AMOUNT", "vouchers: the order the discount applies to" },
    { "sku", "SKU", "exchange vouchers: the item given" },
    { "order-ref", "REF", "the order's reference, for reconciliation" },
    { "pin", "PIN", "the card's PIN, when the program requires one" },
    S_END,
};

static int
s_redeem(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REDEEM;
    cl_cmd_redeem_t *r = &cmd.u.redeem;
    int rc = cli_card_ref(a, a->positional[0], &r->card);
    if (rc == 0)
        rc = cli_get_str(a, "store", true, r->store_id, sizeof(r->store_id));
    if (rc == 0)
        rc = cli_get_amount(cli, a, "amount", false, &r->amount_minor);
    if (rc == 0)
        rc = cli_get_u32(a, "uses", false, CL_USES_MAX, &r->uses);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "order-amount", false, &r->order_amount_minor);
    if (rc == 0)
        rc = cli_get_str(a, "sku", false, r->sku, sizeof(r->sku));
    if (rc == 0)
        rc = cli_get_str(a, "order-ref", false, r->order_ref, sizeof(r->order_ref));
    if (rc == 0)
        rc = cli_get_str(a, "pin", false, r->pin, sizeof(r->pin));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_reverse_opts[] = {
    { "redemption", "SEQ", "the redemption to reverse, as redeem printed it (required)" },
    { "store", "STORE", "the store doing the refund" },
    { "amount", "AMOUNT", "stored value: how much (default: all that is left)" },
    { "uses", "N", "punch cards and vouchers: how many uses (default: all)" },
    { "reason", "TEXT", "why (kept in the journal)" },
    S_END,
};

static int
s_reverse(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_REVERSE_REDEMPTION;
    cl_cmd_reverse_t *r = &cmd.u.reverse;
    int rc = cli_card_ref(a, a->positional[0], &r->card);
    if (rc == 0)
        rc = cli_get_u64(a, "redemption", true, &r->redemption_seq);
    if (rc == 0)
        rc = cli_get_str(a, "store", false, r->store_id, sizeof(r->store_id));
    if (rc == 0)
        rc = cli_get_amount(cli, a, "amount", false, &r->amount_minor);
    if (rc == 0)
        rc = cli_get_u32(a, "uses", false, CL_USES_MAX, &r->uses);
    if (rc == 0)
        rc = cli_get_str(a, "reason", false, r->reason, sizeof(r->reason));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_reload_opts[] = {
    { "amount", "AMOUNT", "the value to add (required)" },
    { "price-paid", "AMOUNT", "what the buyer paid (default: the amount)" },
    { "channel", "CHANNEL", "online, store, enterprise or platform (default online)" },
    { "store", "STORE", "the store selling the top-up" },
    S_END,
};

static int
s_reload(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_RELOAD;
    cl_cmd_reload_t *r = &cmd.u.reload;
    uint32_t channel = CL_CHANNEL_ONLINE;
    int rc = cli_card_ref(a, a->positional[0], &r->card);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "amount", true, &r->amount_minor);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "price-paid", false, &r->price_paid_minor);
    if (rc == 0)
        rc = cli_get_channel(a, "channel", &channel);
    if (rc == 0)
        rc = cli_get_str(a, "store", false, r->store_id, sizeof(r->store_id));
    r->channel = (cl_channel_t)channel;
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_transfer_opts[] = {
    { "amount", "AMOUNT", "how much to move (default: the whole balance)" },
    { "pin", "PIN", "the source card's PIN, when its program requires one" },
    S_END,
};

static int
s_transfer(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_TRANSFER_BALANCE;
    cl_cmd_transfer_balance_t *t = &cmd.u.transfer_balance;
    int rc = cli_card_ref(a, a->positional[0], &t->from_card);
    if (rc == 0)
        rc = cli_card_ref(a, a->positional[1], &t->to_card);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "amount", false, &t->amount_minor);
    if (rc == 0)
        rc = cli_get_str(a, "pin", false, t->from_pin, sizeof(t->from_pin));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_adjust_opts[] = {
    { "amount", "AMOUNT", "stored value: the correction, + or - (e.g. -5.00)" },
    { "uses", "N", "punch cards and vouchers: the correction in uses, + or -" },
    { "reason", "TEXT", "why (required; kept in the journal)" },
    S_END,
};

static int
s_adjust(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_ADJUST;
    cl_cmd_adjust_t *j = &cmd.u.adjust;
    int rc = cli_card_ref(a, a->positional[0], &j->card);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "amount", false, &j->delta_minor);
    if (rc == 0)
        rc = cli_get_str(a, "reason", true, j->reason, sizeof(j->reason));
    if (rc != 0)
        return rc;
    const char *uses = cli_value(a, "uses");
    if (uses != NULL) {
        int64_t v;
        if (units_i64_parse(uses, -CL_USES_MAX, CL_USES_MAX, &v) < 0)
            return cli_usage_error(a, "--uses '%s': a whole number from -%d to %d", uses,
                                   CL_USES_MAX, CL_USES_MAX);
        j->delta_uses = (int32_t)v;
    }
    if (cli_value(a, "amount") == NULL && uses == NULL)
        return cli_usage_error(a, "give --amount or --uses");
    return cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_reason_opts[] = {
    { "reason", "TEXT", "why (kept in the journal)" },
    S_END,
};

static int
s_card_flag(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    if (strcmp(a->cmd->name, "freeze") == 0)
        cmd.type = CL_CMD_FREEZE;
    else if (strcmp(a->cmd->name, "unfreeze") == 0)
        cmd.type = CL_CMD_UNFREEZE;
    else
        cmd.type = CL_CMD_UNLOCK;
    int rc = cli_card_ref(a, a->positional[0], &cmd.u.card_flag.card);
    if (rc == 0)
        rc =
            cli_get_str(a, "reason", false, cmd.u.card_flag.reason, sizeof(cmd.u.card_flag.reason));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_no_opts[] = {
    S_END,
};

static int
s_card_show(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_CARD;
    int rc = cli_card_ref(a, a->positional[0], &cmd.u.card_flag.card);
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

/* ---- gifts ---------------------------------------------------------------------------------- */

static const cli_opt_t s_gift_offer_opts[] = {
    { "from", "HOLDER", "the card's holder (required)" },
    { "to", "HOLDER", "the recipient (default: whoever has the claim secret)" },
    { "pin", "PIN", "the card's PIN, when its program requires one" },
    S_END,
};

static int
s_gift_offer(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type =
        strcmp(a->cmd->name, "transfer-card") == 0 ? CL_CMD_TRANSFER_CARD : CL_CMD_OFFER_GIFT;
    cl_cmd_gift_t *g = &cmd.u.gift;
    int rc = cli_card_ref(a, a->positional[0], &g->card);
    if (rc == 0)
        rc = cli_get_str(a, "from", true, g->from_holder, sizeof(g->from_holder));
    if (rc == 0)
        rc = cli_get_str(a, "to", cmd.type == CL_CMD_TRANSFER_CARD, g->to_holder,
                         sizeof(g->to_holder));
    if (rc == 0)
        rc = cli_get_str(a, "pin", false, g->pin, sizeof(g->pin));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static const cli_opt_t s_transfer_card_opts[] = {
    { "from", "HOLDER", "the card's holder (required)" },
    { "to", "HOLDER", "the new holder (required)" },
    { "pin", "PIN", "the card's PIN, when its program requires one" },
    S_END,
};

static const cli_opt_t s_gift_claim_opts[] = {
    { "offer", "ID", "the offer id, as 'gift offer' printed it (required)" },
    { "secret", "SECRET", "the claim secret (required)" },
    { "holder", "HOLDER", "the new holder (required)" },
    S_END,
};

static const cli_opt_t s_gift_recall_opts[] = {
    { "offer", "ID", "the offer id (required)" },
    { "holder", "HOLDER", "the holder who made the offer (required)" },
    S_END,
};

static int
s_gift_close(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    bool claim = strcmp(a->cmd->name, "claim") == 0;
    cmd.type = claim ? CL_CMD_CLAIM_GIFT : CL_CMD_RECALL_GIFT;
    cl_cmd_gift_close_t *g = &cmd.u.gift_close;
    int rc = cli_card_ref(a, a->positional[0], &g->card);
    if (rc == 0)
        rc = cli_get_u64(a, "offer", true, &g->offer_id);
    if (rc == 0 && claim)
        rc = cli_get_str(a, "secret", true, g->claim_secret, sizeof(g->claim_secret));
    if (rc == 0)
        rc = cli_get_str(a, "holder", true, g->holder, sizeof(g->holder));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

/* ---- queries and the clock ------------------------------------------------------------------ */

static int
s_request_show(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_REQUEST;
    int rc = cli_copy(a, "the request id", a->positional[0], cmd.u.get_request_id,
                      sizeof(cmd.u.get_request_id));
    return rc != 0 ? rc : cli_run_command(cli, &cmd, NULL);
}

static int
s_status(cli_t *cli, const cli_args_t *a)
{
    (void)a;
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_GET_STATUS;
    return cli_run_command(cli, &cmd, NULL);
}

static const char s_clock_details[] =
    "Only a daemon started with --test-clock accepts this (tests and drills). TIME is a UTC\n"
    "time (2026-05-01, 2026-05-01T09:30:00Z, @MICROSECONDS) or a step forward from the\n"
    "ledger's clock: +30d, +12h, +15m, +10s. The clock never goes backwards.\n";

static int
s_clock_set(cli_t *cli, const cli_args_t *a)
{
    static cl_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = CL_CMD_ADVANCE_CLOCK;
    const char *t = a->positional[0];
    if (t[0] == '+') {
        int64_t step;
        if (units_duration_parse(t, &step) < 0)
            return cli_usage_error(a, "'%s': a step is +N followed by d, h, m or s", t);
        /* A step is relative to the ledger's clock: ask for it first. */
        cl_client_t *c;
        int rc = cli_client(cli, &c);
        if (rc != 0)
            return rc;
        static cl_command_t q;
        static cl_reply_t r;
        memset(&q, 0, sizeof(q));
        q.type = CL_CMD_GET_STATUS;
        rc = cl_client_call(c, &q, &r);
        if (rc < 0)
            return cli_client_error(rc);
        if (r.status != CL_OK) {
            cli_print_refusal(&r);
            return CLI_EXIT_REFUSED;
        }
        if (__builtin_add_overflow(r.status_now_us, step, &cmd.u.set_now_us))
            return cli_usage_error(a, "'%s': the step is too large", t);
    } else if (units_time_parse(t, &cmd.u.set_now_us) < 0) {
        return cli_usage_error(a,
                               "'%s': a UTC time (2026-05-01T09:30:00Z, @MICROSECONDS) or a "
                               "step (+30d)",
                               t);
    }
    return cli_run_command(cli, &cmd, NULL);
}

/* ---- The table ------------------------------------------------------------------------------ */

const cli_cmd_t cli_commands[] = {
    { "merchant", "register", "MERCHANT [--name NAME]", 1, 1, "register a merchant (a tenant)",
      NULL, s_merchant_register_opts, s_merchant_register },
    { "store", "register", "STORE --merchant MERCHANT --region REGION [--name NAME]", 1, 1,
      "register a store of a merchant", NULL, s_store_register_opts, s_store_register },
    { "program", "define", "PROGRAM --merchant M --kind KIND --currency CODE [OPTIONS]", 1, 1,
      "define a card program", s_program_details, s_program_opts, s_program_define },
    { "program", "update", "PROGRAM --merchant M --kind KIND --currency CODE [OPTIONS]", 1, 1,
      "replace a program's spec", s_program_details, s_program_opts, s_program_define },
    { "program", "close", "PROGRAM --merchant M [--reason TEXT]", 1, 1,
      "close a program: no more issues, its cards stop working", NULL, s_program_close_opts,
      s_program_close },
    { NULL, "issue", "--merchant M --program P [--face-value AMOUNT] [OPTIONS]", 0, 0,
      "issue one card", NULL, s_issue_opts, s_issue },
    { NULL, "issue-batch", "FILE.csv --merchant M --program P [--out FILE] [OPTIONS]", 1, 1,
      "issue one card per row of a spreadsheet, idempotently", s_issue_batch_details,
      s_issue_batch_opts, cli_issue_batch },
    { NULL, "redeem", "CARD --store STORE [--amount AMOUNT | --uses N | --order-amount AMOUNT]", 1,
      1, "redeem value, uses or a voucher at a store", NULL, s_redeem_opts, s_redeem },
    { NULL, "reverse", "CARD --redemption SEQ [--amount AMOUNT | --uses N]", 1, 1,
      "reverse (refund) a redemption, in full or in part", NULL, s_reverse_opts, s_reverse },
    { NULL, "reload", "CARD --amount AMOUNT [OPTIONS]", 1, 1, "top up a reloadable card", NULL,
      s_reload_opts, s_reload },
    { NULL, "transfer", "FROM_CARD TO_CARD [--amount AMOUNT] [--pin PIN]", 2, 2,
      "move balance from one card to another", NULL, s_transfer_opts, s_transfer },
    { NULL, "adjust", "CARD --reason TEXT (--amount AMOUNT | --uses N)", 1, 1,
      "correct a card's balance or uses (admin)", NULL, s_adjust_opts, s_adjust },
    { NULL, "freeze", "CARD [--reason TEXT]", 1, 1, "freeze a card", NULL, s_reason_opts,
      s_card_flag },
    { NULL, "unfreeze", "CARD [--reason TEXT]", 1, 1, "unfreeze a card", NULL, s_reason_opts,
      s_card_flag },
    { NULL, "unlock", "CARD [--reason TEXT]", 1, 1, "unlock a card locked by wrong PINs", NULL,
      s_reason_opts, s_card_flag },
    { "gift", "offer", "CARD --from HOLDER [--to HOLDER] [--pin PIN]", 1, 1,
      "offer a card as a gift; prints the claim secret", NULL, s_gift_offer_opts, s_gift_offer },
    { "gift", "claim", "CARD --offer ID --secret SECRET --holder HOLDER", 1, 1,
      "claim a gift offer", NULL, s_gift_claim_opts, s_gift_close },
    { "gift", "recall", "CARD --offer ID --holder HOLDER", 1, 1, "recall an unclaimed gift offer",
      NULL, s_gift_recall_opts, s_gift_close },
    { NULL, "transfer-card", "CARD --from HOLDER --to HOLDER [--pin PIN]", 1, 1,
      "give a card to another holder directly (offer and claim in one)", NULL, s_transfer_card_opts,
      s_gift_offer },
    { "card", "show", "CARD", 1, 1, "show a card: state, balance or uses, expiry, holder", NULL,
      s_no_opts, s_card_show },
    { "request", "show", "REQUEST_ID", 1, 1,
      "did this request already happen, and what was the reply?", NULL, s_no_opts, s_request_show },
    { NULL, "status", "", 0, 0, "the ledger's version, head sequence, clock and card count", NULL,
      s_no_opts, s_status },
    { "clock", "set", "TIME|+STEP", 1, 1, "set the test clock (daemon --test-clock only)",
      s_clock_details, s_no_opts, s_clock_set },
    { NULL, "history", "CARD [--limit N]", 1, 1,
      "projector: a card's events, oldest first, and its chain of holders", NULL, cli_history_opts,
      cli_history },
    { NULL, "wallet", "MERCHANT HOLDER", 2, 2, "projector: the cards a holder holds at a merchant",
      NULL, cli_no_opts, cli_wallet },
    { NULL, "liability", "MERCHANT [--program P]", 1, 1,
      "projector: outstanding value per program and per currency", NULL, cli_liability_opts,
      cli_liability },
    { NULL, "store-day", "MERCHANT STORE [--day YYYY-MM-DD]", 2, 2,
      "projector: a store's redemptions and reversals of one UTC day", NULL, cli_store_day_opts,
      cli_store_day },
    { NULL, "store-redemptions", "MERCHANT STORE [--from T] [--to T] [--limit N] [--after SEQ]", 2,
      2, "projector: a store's redemptions, one line each, a page at a time", NULL,
      cli_store_redemptions_opts, cli_store_redemptions },
    { NULL, "settlement", "MERCHANT [--from T] [--to T]", 1, 1,
      "projector: redemptions by selling and redeeming store", NULL, cli_settlement_opts,
      cli_settlement },
    { NULL, "analytics", "MERCHANT [--from T] [--to T] [--group-by WHAT] [--program P]", 1, 1,
      "projector: sales, redemption, breakage and gift figures", NULL, cli_analytics_opts,
      cli_analytics },
    { "projections", "status", "", 0, 0,
      "projector: each projection's checkpoint, lag, schema and rebuild", NULL, cli_no_opts,
      cli_projections_status },
    { "projections", "rebuild", "NAME", 1, 1,
      "projector: rebuild a projection (balances, stores, analytics) blue/green", NULL, cli_no_opts,
      cli_projections_rebuild },
    { NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL },
};
