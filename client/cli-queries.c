/*
 * The CLI's projector queries: history, wallet, liability, store-day, store-redemptions,
 * settlement, analytics, projections status and projections rebuild.
 *
 * Each subcommand fills a cliq_query_t from its arguments and sends it to the projector
 * (--projector) through queries.c, which holds the protobuf details and libcardledger's
 * timeout and retries with the same request id. The reply prints as one JSON object (every
 * field of the result) with --json, otherwise as a table: money in major units with the
 * currency where the reply names it, rates in ppm as percentages with four decimals, computed
 * on integers (250000 ppm is "25.0000%").
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "json.h"
#include "queries.h"
#include "units.h"

#define S_END            \
    {                    \
        NULL, NULL, NULL \
    }

const cli_opt_t cli_no_opts[] = {
    S_END,
};

const cli_opt_t cli_history_opts[] = {
    { "limit", "N", "the most recent N events (default 100, at most 1000)" },
    S_END,
};

const cli_opt_t cli_liability_opts[] = {
    { "program", "PROGRAM", "only this program (default: every program and a total per currency)" },
    S_END,
};

const cli_opt_t cli_store_day_opts[] = {
    { "day", "YYYY-MM-DD", "the UTC day (default: today)" },
    S_END,
};

const cli_opt_t cli_store_redemptions_opts[] = {
    { "from", "TIME", "redemptions at or after this UTC time (default: the first)" },
    { "to", "TIME", "redemptions before this UTC time (default: no end)" },
    { "limit", "N", "at most N lines (default 100, at most 1000)" },
    { "after", "SEQ", "the next page: lines after the one with this sequence" },
    S_END,
};

const cli_opt_t cli_settlement_opts[] = {
    { "from", "TIME", "from this UTC day (default: the first)" },
    { "to", "TIME", "to this UTC time, excluded (default: no end)" },
    S_END,
};

const cli_opt_t cli_analytics_opts[] = {
    { "from", "TIME", "from this UTC day (default: the first)" },
    { "to", "TIME", "to this UTC time, excluded (default: no end)" },
    { "group-by", "WHAT", "day, program, channel, region or store (default: one row)" },
    { "program", "PROGRAM", "only this program" },
    S_END,
};

/* "25.0000%" for 250000 ppm, on integers only. */
static const char *
s_ppm(uint32_t ppm, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRIu32 ".%04" PRIu32 "%%", ppm / 10000, ppm % 10000);
    return buf;
}

static const char *
s_time(int64_t us, char *buf, size_t cap)
{
    units_time_format(us, buf, cap);
    return buf;
}

/* "2026-01-01" */
static const char *
s_day(int64_t us, char *buf, size_t cap)
{
    char t[UNITS_FORMAT_MAX];
    units_time_format(us, t, sizeof(t));
    snprintf(buf, cap, "%.10s", t);
    return buf;
}

/* The projector's client, opened on first use with the global options. */
static int
s_projector(cli_t *cli, cl_client_t **out)
{
    if (cli->projector_client == NULL) {
        cl_client_opts_t opts;
        cl_client_opts_init(&opts);
        opts.timeout_ms = cli->timeout_ms;
        opts.retries = cli->retries;
        int rc = cl_client_open(cli->projector, &opts, &cli->projector_client);
        if (rc < 0) {
            fprintf(stderr, "cardledger: cannot use endpoint '%s': %s\n", cli->projector,
                    cl_client_strerror(rc));
            return rc == CLIENT_ENOMEM ? CLI_EXIT_INTERNAL : CLI_EXIT_USAGE;
        }
    }
    *out = cli->projector_client;
    return 0;
}

typedef void (*s_print_fn)(const cliq_reply_t *r);

/* Sends q to the projector, prints the reply (JSON or print_fn) and returns the exit code. */
static int
s_run(cli_t *cli, cliq_query_t *q, s_print_fn print_fn)
{
    cl_client_t *c;
    int rc = s_projector(cli, &c);
    if (rc != 0)
        return rc;
    if (cli->request_id != NULL)
        snprintf(q->request_id, sizeof(q->request_id), "%s", cli->request_id);
    else
        cl_client_new_request_id(q->request_id);

    cliq_reply_t *r = NULL;
    rc = cliq_call(c, q, &r);
    if (rc < 0) {
        if (rc == CLIENT_ETIMEOUT) {
            fprintf(stderr,
                    "cardledger: could not reach the projector at %s (no reply after every "
                    "retry)\n",
                    cli->projector);
            return CLI_EXIT_UNREACHABLE;
        }
        fprintf(stderr, "cardledger: %s\n", cliq_strerror(rc));
        return CLI_EXIT_INTERNAL;
    }
    if (cli->json) {
        json_t j;
        json_init(&j, stdout);
        json_object_begin(&j, NULL);
        cliq_reply_json(r, &j);
        json_object_end(&j);
    }
    int exit_code = CLI_EXIT_OK;
    if (r->status != CL_OK) {
        fprintf(stderr, "cardledger: refused: %s: %s\n", cl_status_name(r->status),
                r->message[0] ? r->message : cl_status_sentence(r->status));
        exit_code = CLI_EXIT_REFUSED;
    } else if (!cli->json) {
        print_fn(r);
    }
    cliq_reply_free(&r);
    return exit_code;
}

static void
s_print_as_of(const cliq_reply_t *r)
{
    printf("(as of sequence %" PRIu64 ")\n", r->as_of_seq);
}

/* ---- history, wallet ------------------------------------------------------------------------ */

static void
s_print_history(const cliq_reply_t *r)
{
    const cl_card_view_t *v = &r->card;
    char a[64];
    printf("card %s (id %" PRIu64 "), %s %s of %s, %s", v->code_masked, v->card_id,
           cli_kind_name(v->kind), v->program_id, v->merchant_id, cli_state_name(v->state));
    if (v->kind == CL_KIND_STORED_VALUE)
        printf(", balance %s\n", cli_money(v->balance_minor, v->currency, a, sizeof(a)));
    else
        printf(", %" PRIu32 " use%s left\n", v->uses_left, v->uses_left == 1 ? "" : "s");
    printf("holders: ");
    for (size_t i = 0; i < r->holders_n; i++)
        printf("%s%s", i > 0 ? " -> " : "", r->holders[i][0] ? r->holders[i] : "-");
    printf("%s\n", r->holders_n == 0 ? "-" : "");
    printf("%" PRIu64 " event%s, %zu shown\n\n", r->events_total, r->events_total == 1 ? "" : "s",
           r->entries_n);
    printf("%10s  %-20s  %-20s  %16s  %s\n", "SEQ", "TIME", "EVENT", "AMOUNT", "STORE");
    for (size_t i = 0; i < r->entries_n; i++) {
        const cliq_history_entry_t *e = &r->entries[i];
        char t[UNITS_FORMAT_MAX];
        a[0] = '\0';
        if (e->has_amount)
            cli_money(e->amount_minor, v->currency, a, sizeof(a));
        printf("%10" PRIu64 "  %-20s  %-20s  %16s  %s\n", e->seq, s_time(e->at_us, t, sizeof(t)),
               e->event, a, e->store_id);
    }
    s_print_as_of(r);
}

int
cli_history(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_HISTORY;
    int rc = cli_card_ref(a, a->positional[0], &q.card);
    if (rc == 0)
        rc = cli_get_u32(a, "limit", false, CLIQ_LIMIT_MAX, &q.limit);
    return rc != 0 ? rc : s_run(cli, &q, s_print_history);
}

static void
s_print_wallet(const cliq_reply_t *r)
{
    printf("%zu card%s\n", r->cards_n, r->cards_n == 1 ? "" : "s");
    if (r->cards_n > 0)
        printf("%10s  %-24s  %-16s  %-10s  %18s\n", "CARD ID", "CODE", "PROGRAM", "STATE", "HOLDS");
    for (size_t i = 0; i < r->cards_n; i++) {
        const cl_card_view_t *v = &r->cards[i];
        char holds[64];
        if (v->kind == CL_KIND_STORED_VALUE)
            cli_money(v->balance_minor, v->currency, holds, sizeof(holds));
        else
            snprintf(holds, sizeof(holds), "%" PRIu32 " use%s", v->uses_left,
                     v->uses_left == 1 ? "" : "s");
        char state[32];
        snprintf(state, sizeof(state), "%s%s%s", cli_state_name(v->state),
                 v->frozen ? ",frozen" : "", v->locked ? ",locked" : "");
        printf("%10" PRIu64 "  %-24s  %-16s  %-10s  %18s\n", v->card_id, v->code_masked,
               v->program_id, state, holds);
    }
    s_print_as_of(r);
}

int
cli_wallet(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_WALLET;
    int rc = cli_copy(a, "the merchant id", a->positional[0], q.merchant_id, sizeof(q.merchant_id));
    if (rc == 0)
        rc = cli_copy(a, "the holder", a->positional[1], q.holder, sizeof(q.holder));
    return rc != 0 ? rc : s_run(cli, &q, s_print_wallet);
}

/* ---- liability ------------------------------------------------------------------------------ */

static void
s_print_liability(const cliq_reply_t *r)
{
    printf("%-20s  %24s  %10s  %10s\n", "PROGRAM", "OUTSTANDING", "LIVE CARDS", "USES LEFT");
    for (size_t i = 0; i < r->liability_n; i++) {
        const cliq_liability_row_t *l = &r->liability[i];
        char money[64], name[48];
        snprintf(name, sizeof(name), "%s", l->program_id[0] ? l->program_id : "total");
        printf("%-20s  %24s  %10" PRIu64 "  %10" PRIu64 "\n", name,
               cli_money(l->outstanding_minor, l->currency, money, sizeof(money)), l->live_cards,
               l->uses_outstanding);
    }
    s_print_as_of(r);
}

int
cli_liability(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_LIABILITY;
    int rc = cli_copy(a, "the merchant id", a->positional[0], q.merchant_id, sizeof(q.merchant_id));
    if (rc == 0)
        rc = cli_get_str(a, "program", false, q.program_id, sizeof(q.program_id));
    return rc != 0 ? rc : s_run(cli, &q, s_print_liability);
}

/* ---- stores --------------------------------------------------------------------------------- */

static void
s_print_store_day(const cliq_reply_t *r)
{
    const cliq_store_day_t *d = &r->store_day;
    char a[64], b[64];
    printf("store %s, %s (UTC)\n", d->store_id, s_day(d->day_start_us, b, sizeof(b)));
    printf("redemptions  %" PRIu64 ", %s", d->redemptions,
           cli_money(d->redeemed_minor, "", a, sizeof(a)));
    printf(", %" PRIu64 " use%s", d->uses_redeemed, d->uses_redeemed == 1 ? "" : "s");
    printf(", discounts %s\n", cli_money(d->discount_minor, "", a, sizeof(a)));
    printf("reversals    %" PRIu64 ", %s\n", d->reversals,
           cli_money(d->reversed_minor, "", a, sizeof(a)));
    s_print_as_of(r);
}

int
cli_store_day(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_STORE_DAY;
    q.day_us = (int64_t)time(NULL) * 1000000;
    int rc = cli_copy(a, "the merchant id", a->positional[0], q.merchant_id, sizeof(q.merchant_id));
    if (rc == 0)
        rc = cli_copy(a, "the store id", a->positional[1], q.store_id, sizeof(q.store_id));
    if (rc == 0)
        rc = cli_get_time(a, "day", false, &q.day_us);
    return rc != 0 ? rc : s_run(cli, &q, s_print_store_day);
}

static void
s_print_redemptions(const cliq_reply_t *r)
{
    printf("%10s  %-20s  %-24s  %-16s  %14s  %5s  %14s  %12s\n", "SEQ", "TIME", "CARD", "ORDER",
           "AMOUNT", "USES", "REVERSED", "DISCOUNT");
    for (size_t i = 0; i < r->lines_n; i++) {
        const cliq_redemption_line_t *l = &r->lines[i];
        char t[UNITS_FORMAT_MAX], am[64], rev[64], disc[64];
        printf("%10" PRIu64 "  %-20s  %-24s  %-16s  %14s  %5" PRIu32 "  %14s  %12s\n", l->seq,
               s_time(l->at_us, t, sizeof(t)), l->code_masked, l->order_ref[0] ? l->order_ref : "-",
               cli_money(l->amount_minor, "", am, sizeof(am)), l->uses,
               cli_money(l->reversed_minor, "", rev, sizeof(rev)),
               cli_money(l->discount_minor, "", disc, sizeof(disc)));
    }
    if (r->more && r->lines_n > 0)
        printf("more: next page with --after %" PRIu64 "\n", r->lines[r->lines_n - 1].seq);
    s_print_as_of(r);
}

int
cli_store_redemptions(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_STORE_REDEMPTIONS;
    int rc = cli_copy(a, "the merchant id", a->positional[0], q.merchant_id, sizeof(q.merchant_id));
    if (rc == 0)
        rc = cli_copy(a, "the store id", a->positional[1], q.store_id, sizeof(q.store_id));
    if (rc == 0)
        rc = cli_get_time(a, "from", false, &q.from_us);
    if (rc == 0)
        rc = cli_get_time(a, "to", false, &q.to_us);
    if (rc == 0)
        rc = cli_get_u32(a, "limit", false, CLIQ_LIMIT_MAX, &q.limit);
    if (rc == 0)
        rc = cli_get_u64(a, "after", false, &q.after_seq);
    return rc != 0 ? rc : s_run(cli, &q, s_print_redemptions);
}

static void
s_print_settlement(const cliq_reply_t *r)
{
    printf("%-24s  %-24s  %11s  %16s\n", "SOLD AT", "REDEEMED AT", "REDEMPTIONS", "VALUE");
    for (size_t i = 0; i < r->cells_n; i++) {
        const cliq_settlement_cell_t *c = &r->cells[i];
        char v[64];
        printf("%-24s  %-24s  %11" PRIu64 "  %16s\n", c->sold_store_id, c->redeemed_store_id,
               c->redemptions, cli_money(c->value_minor, "", v, sizeof(v)));
    }
    s_print_as_of(r);
}

int
cli_settlement(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_SETTLEMENT;
    int rc = cli_copy(a, "the merchant id", a->positional[0], q.merchant_id, sizeof(q.merchant_id));
    if (rc == 0)
        rc = cli_get_time(a, "from", false, &q.from_us);
    if (rc == 0)
        rc = cli_get_time(a, "to", false, &q.to_us);
    return rc != 0 ? rc : s_run(cli, &q, s_print_settlement);
}

/* ---- analytics ------------------------------------------------------------------------------ */

static void
s_print_analytics(const cliq_reply_t *r)
{
    for (size_t i = 0; i < r->rows_n; i++) {
        const cliq_analytics_row_t *x = &r->rows[i];
        char a[64], b[64], p1[24], p2[24];
        const char *cur = x->currency;
        if (i > 0)
            printf("\n");
        printf("%s%s%s\n", x->key[0] ? x->key : "all", cur[0] ? ", " : "", cur);
        printf("  issued        %" PRIu64 " card%s, face %s", x->issued_count,
               x->issued_count == 1 ? "" : "s", cli_money(x->issued_face_minor, cur, a, sizeof(a)));
        printf(", paid %s\n", cli_money(x->price_paid_minor, cur, b, sizeof(b)));
        printf("  reloaded      %s\n", cli_money(x->reloaded_minor, cur, a, sizeof(a)));
        printf("  redeemed      %s net, %" PRIu64 " redemption%s\n",
               cli_money(x->redeemed_net_minor, cur, a, sizeof(a)), x->redemption_count,
               x->redemption_count == 1 ? "" : "s");
        printf("  outstanding   %s, breakage %s\n",
               cli_money(x->outstanding_minor, cur, a, sizeof(a)),
               cli_money(x->breakage_minor, cur, b, sizeof(b)));
        printf("  redemption    %s of value, %s of cards\n",
               s_ppm(x->value_redemption_rate_ppm, p1, sizeof(p1)),
               s_ppm(x->card_redemption_rate_ppm, p2, sizeof(p2)));
        printf("  gifted        %s of cards; cross-region %s of redemptions\n",
               s_ppm(x->gift_rate_ppm, p1, sizeof(p1)),
               s_ppm(x->cross_region_share_ppm, p2, sizeof(p2)));
    }
    if (r->rows_n == 0)
        printf("no rows\n");
    s_print_as_of(r);
}

int
cli_analytics(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_ANALYTICS;
    int rc = cli_copy(a, "the merchant id", a->positional[0], q.merchant_id, sizeof(q.merchant_id));
    if (rc == 0)
        rc = cli_get_time(a, "from", false, &q.from_us);
    if (rc == 0)
        rc = cli_get_time(a, "to", false, &q.to_us);
    if (rc == 0)
        rc = cli_get_str(a, "program", false, q.program_id, sizeof(q.program_id));
    const char *g = cli_value(a, "group-by");
    if (rc == 0 && g != NULL && !cliq_group_by_parse(g, &q.group_by))
        rc = cli_usage_error(a, "--group-by '%s': one of day, program, channel, region, store", g);
    return rc != 0 ? rc : s_run(cli, &q, s_print_analytics);
}

/* ---- projections ---------------------------------------------------------------------------- */

static void
s_print_projections(const cliq_reply_t *r)
{
    printf("%-10s  %-7s  %12s  %12s  %10s  %s\n", "NAME", "SCHEMA", "CHECKPOINT", "HEAD", "LAG",
           "STATE");
    for (size_t i = 0; i < r->projections_n; i++) {
        const cliq_projection_t *p = &r->projections[i];
        char schema[24], state[160];
        snprintf(schema, sizeof(schema), "%" PRIu32 "/%" PRIu32, p->schema_version,
                 p->code_schema_version);
        if (p->error[0] != '\0')
            snprintf(state, sizeof(state), "stopped: %s", p->error);
        else if (p->rebuilding)
            snprintf(state, sizeof(state),
                     "rebuilding schema %" PRIu32 ": at %" PRIu64 ", %" PRIu64
                     " events/s, ETA %" PRIu64 " s",
                     p->rebuild_schema_version, p->rebuild_checkpoint_seq, p->rebuild_events_per_s,
                     p->rebuild_eta_s);
        else
            snprintf(state, sizeof(state), "%s", p->lag_events == 0 ? "caught up" : "folding");
        printf("%-10s  %-7s  %12" PRIu64 "  %12" PRIu64 "  %10" PRIu64 "  %s\n", p->name, schema,
               p->checkpoint_seq, p->journal_head_seq, p->lag_events, state);
    }
}

int
cli_projections_status(cli_t *cli, const cli_args_t *a)
{
    (void)a;
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_PROJECTION_STATUS;
    return s_run(cli, &q, s_print_projections);
}

static void
s_print_rebuild(const cliq_reply_t *r)
{
    printf("%s\n", r->message[0] ? r->message : "rebuild started");
    if (r->projections_n > 0)
        s_print_projections(r);
}

int
cli_projections_rebuild(cli_t *cli, const cli_args_t *a)
{
    static cliq_query_t q;
    memset(&q, 0, sizeof(q));
    q.type = CLIQ_REBUILD;
    int rc = cli_copy(a, "the projection's name", a->positional[0], q.name, sizeof(q.name));
    return rc != 0 ? rc : s_run(cli, &q, s_print_rebuild);
}
