/*
 * cardledger: the command-line client of the ledger.
 *
 * This file parses the command line and dispatches to a subcommand of the table in
 * cli-commands.c. Global options (--connect, --json, ...) are accepted before and after the
 * subcommand's name. Every subcommand has --help; `cardledger --help` lists them all with the
 * exit codes. The subcommands share the argument helpers below, which turn text into the
 * ledger's fixed-size fields exactly (amounts without floating point, strings checked against
 * the named limits) and report mistakes as usage errors before anything is sent.
 */
#include "cli.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cardledger-config.h"
#include "units.h"

/* The global options, accepted anywhere on the line. */
static const cli_opt_t s_global_opts[] = {
    { "connect", "ENDPOINT",
      "the daemon's command endpoint (default $CARDLEDGER_CONNECT, else " CLI_CONNECT_DEFAULT ")" },
    { "projector", "ENDPOINT",
      "the projector's query endpoint (default $CARDLEDGER_PROJECTOR, else " CLI_PROJECTOR_DEFAULT
      ")" },
    { "server-key-file", "FILE",
      "the daemon's CurveZMQ public key, for a daemon started with keys (default "
      "$CARDLEDGER_SERVER_KEY_FILE)" },
    { "key-file", "FILE",
      "this client's CurveZMQ secret key, made by cardledger-keys (default $CARDLEDGER_KEY_FILE)" },
    { "json", NULL, "print one JSON object per reply instead of sentences" },
    { "request-id", "ID", "the request's idempotency key (default: a fresh random one)" },
    { "timeout-ms", "MS", "how long one try waits for the reply (default 5000)" },
    { "retries", "N", "tries after the first when no reply comes (default 3; same request id)" },
    { "minor", NULL, "amounts are integers of minor units (1250) instead of major units (12.50)" },
    { "help", NULL, "show help for the command and exit" },
    { "version", NULL, "show the version and exit" },
    { NULL, NULL, NULL },
};

static const char s_exit_codes[] =
    "Exit codes:\n"
    "  0  the ledger accepted the command (or answered the query)\n"
    "  1  usage error: a wrong option, value or input file; nothing was sent\n"
    "  2  could not reach the ledger: no reply after every retry\n"
    "  3  refused by the ledger: the status name and the reason are on stderr\n"
    "  4  internal or protocol error\n";

/* Global options seen while parsing; applied to cli_t once the line is known to be good. */
typedef struct s_globals {
    const char *connect;
    const char *server_key_file;
    const char *key_file;
    const char *projector;
    const char *request_id;
    const char *timeout_ms;
    const char *retries;
    bool json;
    bool minor;
    bool help;
    bool version;
} s_globals_t;

static size_t
s_opts_count(const cli_opt_t *opts)
{
    size_t n = 0;
    while (opts != NULL && opts[n].name != NULL)
        n++;
    return n;
}

static const cli_opt_t *
s_find_opt(const cli_opt_t *opts, const char *name, size_t name_len, size_t *out_index)
{
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++) {
        if (strlen(opts[i].name) == name_len && strncmp(opts[i].name, name, name_len) == 0) {
            if (out_index != NULL)
                *out_index = i;
            return &opts[i];
        }
    }
    return NULL;
}

static void
s_print_opts(FILE *f, const cli_opt_t *opts)
{
    for (size_t i = 0; opts != NULL && opts[i].name != NULL; i++) {
        char left[64];
        if (opts[i].meta != NULL)
            snprintf(left, sizeof(left), "--%s %s", opts[i].name, opts[i].meta);
        else
            snprintf(left, sizeof(left), "--%s", opts[i].name);
        fprintf(f, "  %-26s %s\n", left, opts[i].help);
    }
}

/* The full name of a subcommand ("gift offer"). */
static void
s_cmd_name(const cli_cmd_t *c, char *buf, size_t cap)
{
    if (c->group != NULL)
        snprintf(buf, cap, "%s %s", c->group, c->name);
    else
        snprintf(buf, cap, "%s", c->name);
}

static void
s_print_command_list(FILE *f, const char *group)
{
    for (const cli_cmd_t *c = cli_commands; c->name != NULL; c++) {
        if (group != NULL && (c->group == NULL || strcmp(c->group, group) != 0))
            continue;
        char name[48];
        s_cmd_name(c, name, sizeof(name));
        fprintf(f, "  %-22s %s\n", name, c->summary);
    }
}

static void
s_print_main_help(FILE *f)
{
    fprintf(f, "Usage: cardledger [GLOBAL OPTIONS] COMMAND [ARGS] [OPTIONS]\n"
               "\n"
               "The command-line client of the cardledger gift-card ledger. Each command is sent\n"
               "to the daemon with a request id; a retry after a timeout reuses it, so a command\n"
               "never applies twice.\n"
               "\n"
               "Commands:\n");
    s_print_command_list(f, NULL);
    fprintf(f, "\nGlobal options:\n");
    s_print_opts(f, s_global_opts);
    fprintf(
        f,
        "\nhistory, wallet, liability, store-day, store-redemptions, settlement, analytics and\n"
        "projections ask the projector (--projector); the other commands ask the daemon.\n"
        "Cards are named by their code, or by the ledger's card id as id:N.\n"
        "Amounts are major units with up to two decimals (12.50), or minor units with --minor.\n"
        "Times are UTC: 2026-05-01, 2026-05-01T09:30:00Z, or @MICROSECONDS.\n"
        "\n%s"
        "\nRun 'cardledger COMMAND --help' for a command's options.\n",
        s_exit_codes);
}

static void
s_print_group_help(FILE *f, const char *group)
{
    fprintf(f, "Usage: cardledger %s SUBCOMMAND [ARGS] [OPTIONS]\n\nSubcommands:\n", group);
    s_print_command_list(f, group);
    fprintf(f, "\nRun 'cardledger %s SUBCOMMAND --help' for its options.\n", group);
}

static void
s_print_cmd_help(FILE *f, const cli_cmd_t *c)
{
    char name[48];
    s_cmd_name(c, name, sizeof(name));
    fprintf(f, "Usage: cardledger %s %s\n\n%s\n", name, c->synopsis, c->summary);
    if (c->details != NULL)
        fprintf(f, "\n%s", c->details);
    if (s_opts_count(c->opts) > 0) {
        fprintf(f, "\nOptions:\n");
        s_print_opts(f, c->opts);
    }
    fprintf(f, "\nGlobal options:\n");
    s_print_opts(f, s_global_opts);
    fprintf(f, "\n%s", s_exit_codes);
}

/*
 * Tries argv[*i] as a global option. Returns 1 when it was one (and consumed its value),
 * 0 when it is not a global option, or -1 after printing why it is wrong.
 */
static int
s_parse_global(int argc, char **argv, int *i, s_globals_t *g, const char *where)
{
    const char *arg = argv[*i];
    if (strcmp(arg, "-h") == 0) {
        g->help = true;
        return 1;
    }
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    const cli_opt_t *o = s_find_opt(s_global_opts, name, name_len, NULL);
    if (o == NULL)
        return 0;
    const char *value = NULL;
    if (o->meta != NULL) {
        if (eq != NULL) {
            value = eq + 1;
        } else if (*i + 1 < argc) {
            value = argv[++*i];
        } else {
            fprintf(stderr, "cardledger%s%s: --%s needs a value (%s)\n", where[0] ? " " : "", where,
                    o->name, o->meta);
            return -1;
        }
    } else if (eq != NULL) {
        fprintf(stderr, "cardledger%s%s: --%s takes no value\n", where[0] ? " " : "", where,
                o->name);
        return -1;
    }
    if (strcmp(o->name, "connect") == 0)
        g->connect = value;
    else if (strcmp(o->name, "server-key-file") == 0)
        g->server_key_file = value;
    else if (strcmp(o->name, "key-file") == 0)
        g->key_file = value;
    else if (strcmp(o->name, "projector") == 0)
        g->projector = value;
    else if (strcmp(o->name, "json") == 0)
        g->json = true;
    else if (strcmp(o->name, "request-id") == 0)
        g->request_id = value;
    else if (strcmp(o->name, "timeout-ms") == 0)
        g->timeout_ms = value;
    else if (strcmp(o->name, "retries") == 0)
        g->retries = value;
    else if (strcmp(o->name, "minor") == 0)
        g->minor = true;
    else if (strcmp(o->name, "help") == 0)
        g->help = true;
    else if (strcmp(o->name, "version") == 0)
        g->version = true;
    return 1;
}

/* Applies the global options to cli; returns 0 or CLI_EXIT_USAGE. */
static int
s_apply_globals(cli_t *cli, const s_globals_t *g)
{
    cli->json = g->json;
    cli->minor = g->minor;
    cli->connect = g->connect;
    if (cli->connect == NULL)
        cli->connect = getenv("CARDLEDGER_CONNECT");
    if (cli->connect == NULL || cli->connect[0] == '\0')
        cli->connect = CLI_CONNECT_DEFAULT;
    if (strlen(cli->connect) >= CL_CLIENT_ENDPOINT_MAX) {
        fprintf(stderr, "cardledger: --connect: the endpoint is too long\n");
        return CLI_EXIT_USAGE;
    }
    cli->server_key_file =
        g->server_key_file != NULL ? g->server_key_file : getenv("CARDLEDGER_SERVER_KEY_FILE");
    cli->key_file = g->key_file != NULL ? g->key_file : getenv("CARDLEDGER_KEY_FILE");
    if (cli->server_key_file != NULL && cli->server_key_file[0] == '\0')
        cli->server_key_file = NULL;
    if (cli->key_file != NULL && cli->key_file[0] == '\0')
        cli->key_file = NULL;
    if ((cli->server_key_file == NULL) != (cli->key_file == NULL)) {
        fprintf(stderr, "cardledger: --server-key-file and --key-file go together\n");
        return CLI_EXIT_USAGE;
    }
    cli->projector = g->projector;
    if (cli->projector == NULL)
        cli->projector = getenv("CARDLEDGER_PROJECTOR");
    if (cli->projector == NULL || cli->projector[0] == '\0')
        cli->projector = CLI_PROJECTOR_DEFAULT;
    if (strlen(cli->projector) >= CL_CLIENT_ENDPOINT_MAX) {
        fprintf(stderr, "cardledger: --projector: the endpoint is too long\n");
        return CLI_EXIT_USAGE;
    }
    if (g->request_id != NULL) {
        size_t len = strlen(g->request_id);
        if (len == 0 || len > CL_REQUEST_ID_MAX) {
            fprintf(stderr, "cardledger: --request-id must be 1 to %d characters\n",
                    CL_REQUEST_ID_MAX);
            return CLI_EXIT_USAGE;
        }
        cli->request_id = g->request_id;
    }
    cli->timeout_ms = CL_CLIENT_TIMEOUT_MS_DEFAULT;
    if (g->timeout_ms != NULL) {
        uint64_t v;
        if (units_u64_parse(g->timeout_ms, 3600000, &v) < 0 || v == 0) {
            fprintf(stderr, "cardledger: --timeout-ms must be 1 to 3600000\n");
            return CLI_EXIT_USAGE;
        }
        cli->timeout_ms = (int)v;
    }
    cli->retries = CL_CLIENT_RETRIES_DEFAULT;
    if (g->retries != NULL) {
        uint64_t v;
        if (units_u64_parse(g->retries, CL_CLIENT_RETRIES_MAX, &v) < 0) {
            fprintf(stderr, "cardledger: --retries must be 0 to %d\n", CL_CLIENT_RETRIES_MAX);
            return CLI_EXIT_USAGE;
        }
        cli->retries = (int)v;
    }
    return 0;
}

/* Parses the subcommand's arguments from argv[start..]; returns 0 or CLI_EXIT_USAGE. */
static int
s_parse_cmd_args(int argc, char **argv, int start, const cli_cmd_t *c, s_globals_t *g,
                 cli_args_t *a, const char *where)
{
    assert(s_opts_count(c->opts) <= CLI_OPTS_MAX);
    memset(a, 0, sizeof(*a));
    a->cmd = c;
    bool options_done = false;
    for (int i = start; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (!options_done && (strncmp(arg, "--", 2) == 0 || strcmp(arg, "-h") == 0)) {
            int rc = s_parse_global(argc, argv, &i, g, where);
            if (rc < 0)
                return CLI_EXIT_USAGE;
            if (rc == 1)
                continue;
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
            size_t index;
            const cli_opt_t *o = s_find_opt(c->opts, name, name_len, &index);
            if (o == NULL) {
                fprintf(stderr, "cardledger %s: unknown option '%s'\nTry 'cardledger %s --help'.\n",
                        where, arg, where);
                return CLI_EXIT_USAGE;
            }
            if (a->values[index] != NULL) {
                fprintf(stderr, "cardledger %s: --%s given twice\n", where, o->name);
                return CLI_EXIT_USAGE;
            }
            if (o->meta == NULL) {
                if (eq != NULL) {
                    fprintf(stderr, "cardledger %s: --%s takes no value\n", where, o->name);
                    return CLI_EXIT_USAGE;
                }
                a->values[index] = "";
            } else if (eq != NULL) {
                a->values[index] = eq + 1;
            } else if (i + 1 < argc) {
                a->values[index] = argv[++i];
            } else {
                fprintf(stderr, "cardledger %s: --%s needs a value (%s)\n", where, o->name,
                        o->meta);
                return CLI_EXIT_USAGE;
            }
            continue;
        }
        if (a->positional_n == c->positional_max || a->positional_n == CLI_POSITIONAL_MAX) {
            fprintf(stderr,
                    "cardledger %s: unexpected argument '%s'\nTry 'cardledger %s --help'.\n", where,
                    arg, where);
            return CLI_EXIT_USAGE;
        }
        a->positional[a->positional_n++] = arg;
    }
    return 0;
}

static const cli_cmd_t *
s_find_cmd(const char *group, const char *name)
{
    for (const cli_cmd_t *c = cli_commands; c->name != NULL; c++) {
        bool group_match =
            group == NULL ? c->group == NULL : c->group != NULL && strcmp(c->group, group) == 0;
        if (group_match && strcmp(c->name, name) == 0)
            return c;
    }
    return NULL;
}

static bool
s_is_group(const char *word)
{
    for (const cli_cmd_t *c = cli_commands; c->name != NULL; c++) {
        if (c->group != NULL && strcmp(c->group, word) == 0)
            return true;
    }
    return false;
}

static int
s_main(int argc, char **argv, cli_t *cli)
{
    s_globals_t g = { 0 };
    int i = 1;
    /* Global options before the command's name. */
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        int rc = s_parse_global(argc, argv, &i, &g, "");
        if (rc < 0)
            return CLI_EXIT_USAGE;
        if (rc == 0)
            break;
    }
    if (g.version) {
        printf("cardledger %s\n", CARDLEDGER_VERSION);
        return CLI_EXIT_OK;
    }
    if (i >= argc) {
        if (g.help) {
            s_print_main_help(stdout);
            return CLI_EXIT_OK;
        }
        s_print_main_help(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strncmp(argv[i], "--", 2) == 0) {
        fprintf(stderr, "cardledger: unknown option '%s'\nTry 'cardledger --help'.\n", argv[i]);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        s_print_main_help(stdout);
        return CLI_EXIT_OK;
    }

    const char *word = argv[i++];
    const cli_cmd_t *c = NULL;
    if (s_is_group(word)) {
        /* The subcommand may follow global options too: "gift --json offer ...". */
        while (i < argc && strncmp(argv[i], "-", 1) == 0 && strcmp(argv[i], "-") != 0) {
            int rc = s_parse_global(argc, argv, &i, &g, word);
            if (rc < 0)
                return CLI_EXIT_USAGE;
            if (rc == 0)
                break;
            i++;
        }
        if (g.version) {
            printf("cardledger %s\n", CARDLEDGER_VERSION);
            return CLI_EXIT_OK;
        }
        if (i >= argc || strncmp(argv[i], "-", 1) == 0) {
            if (g.help && i >= argc) {
                s_print_group_help(stdout, word);
                return CLI_EXIT_OK;
            }
            fprintf(stderr, "cardledger %s: which one?\n", word);
            s_print_group_help(stderr, word);
            return CLI_EXIT_USAGE;
        }
        c = s_find_cmd(word, argv[i]);
        if (c == NULL) {
            fprintf(stderr, "cardledger %s: unknown subcommand '%s'\n", word, argv[i]);
            s_print_group_help(stderr, word);
            return CLI_EXIT_USAGE;
        }
        i++;
    } else {
        c = s_find_cmd(NULL, word);
        if (c == NULL) {
            fprintf(stderr, "cardledger: unknown command '%s'\nTry 'cardledger --help'.\n", word);
            return CLI_EXIT_USAGE;
        }
    }

    char where[48];
    s_cmd_name(c, where, sizeof(where));
    cli_args_t a;
    int rc = s_parse_cmd_args(argc, argv, i, c, &g, &a, where);
    if (rc != 0)
        return rc;
    if (g.version) {
        printf("cardledger %s\n", CARDLEDGER_VERSION);
        return CLI_EXIT_OK;
    }
    if (g.help) {
        s_print_cmd_help(stdout, c);
        return CLI_EXIT_OK;
    }
    if (a.positional_n < c->positional_min) {
        fprintf(stderr, "cardledger %s: missing arguments\nUsage: cardledger %s %s\n", where, where,
                c->synopsis);
        return CLI_EXIT_USAGE;
    }
    rc = s_apply_globals(cli, &g);
    if (rc != 0)
        return rc;
    return c->run(cli, &a);
}

int
main(int argc, char **argv)
{
    cli_t cli = { 0 };
    int rc = s_main(argc, argv, &cli);
    cl_client_close(&cli.client);
    cl_client_close(&cli.projector_client);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) {
        perror("cardledger: writing the output");
        rc = CLI_EXIT_INTERNAL;
    }
    return rc;
}

/* ---- Helpers shared by the subcommands ---------------------------------------------------- */

static size_t
s_opt_index(const cli_args_t *a, const char *name)
{
    size_t index = 0;
    const cli_opt_t *o = s_find_opt(a->cmd->opts, name, strlen(name), &index);
    if (o == NULL) {
        /* A bug in the subcommand table: a name not declared. Fail loudly in every build. */
        fprintf(stderr, "cardledger: internal error: option --%s is not declared\n", name);
        abort();
    }
    return index;
}

const char *
cli_value(const cli_args_t *a, const char *name)
{
    return a->values[s_opt_index(a, name)];
}

bool
cli_flag(const cli_args_t *a, const char *name)
{
    return cli_value(a, name) != NULL;
}

int
cli_usage_error(const cli_args_t *a, const char *fmt, ...)
{
    char where[48];
    s_cmd_name(a->cmd, where, sizeof(where));
    fprintf(stderr, "cardledger %s: ", where);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'cardledger %s --help'.\n", where);
    return CLI_EXIT_USAGE;
}

int
cli_copy(const cli_args_t *a, const char *what, const char *s, char *out, size_t cap)
{
    assert(cap > 0);
    size_t len = strlen(s);
    if (len == 0)
        return cli_usage_error(a, "%s must not be empty", what);
    if (len >= cap)
        return cli_usage_error(a, "%s is %zu bytes, over the limit of %zu", what, len, cap - 1);
    memcpy(out, s, len + 1);
    return 0;
}

int
cli_get_str(const cli_args_t *a, const char *name, bool required, char *out, size_t cap)
{
    const char *v = cli_value(a, name);
    if (v == NULL) {
        if (required)
            return cli_usage_error(a, "--%s is required", name);
        return 0;
    }
    char what[48];
    snprintf(what, sizeof(what), "--%s", name);
    return cli_copy(a, what, v, out, cap);
}

int
cli_get_amount(cli_t *cli, const cli_args_t *a, const char *name, bool required, int64_t *out)
{
    const char *v = cli_value(a, name);
    if (v == NULL) {
        if (required)
            return cli_usage_error(a, "--%s is required", name);
        return 0;
    }
    int rc = units_amount_parse(v, cli->minor, out);
    if (rc < 0) {
        if (cli->minor)
            return cli_usage_error(a,
                                   "--%s '%s': an amount in minor units is a whole number "
                                   "(1250)",
                                   name, v);
        return cli_usage_error(a,
                               "--%s '%s': an amount is a number with up to two decimals "
                               "(12.50)%s",
                               name, v,
                               rc == UNITS_ERANGE ? ", and this one "
                                                    "is too large"
                                                  : "");
    }
    return 0;
}

int
cli_get_u32(const cli_args_t *a, const char *name, bool required, uint32_t max, uint32_t *out)
{
    const char *v = cli_value(a, name);
    if (v == NULL) {
        if (required)
            return cli_usage_error(a, "--%s is required", name);
        return 0;
    }
    uint64_t x;
    if (units_u64_parse(v, max, &x) < 0)
        return cli_usage_error(a, "--%s '%s': a whole number from 0 to %u is needed", name, v,
                               (unsigned)max);
    *out = (uint32_t)x;
    return 0;
}

int
cli_get_u64(const cli_args_t *a, const char *name, bool required, uint64_t *out)
{
    const char *v = cli_value(a, name);
    if (v == NULL) {
        if (required)
            return cli_usage_error(a, "--%s is required", name);
        return 0;
    }
    if (units_u64_parse(v, UINT64_MAX, out) < 0)
        return cli_usage_error(a, "--%s '%s': a whole number is needed", name, v);
    return 0;
}

int
cli_get_time(const cli_args_t *a, const char *name, bool required, int64_t *out_us)
{
    const char *v = cli_value(a, name);
    if (v == NULL) {
        if (required)
            return cli_usage_error(a, "--%s is required", name);
        return 0;
    }
    if (units_time_parse(v, out_us) < 0)
        return cli_usage_error(a,
                               "--%s '%s': a UTC date or time is needed (2026-05-01, "
                               "2026-05-01T09:30:00Z or @MICROSECONDS)",
                               name, v);
    return 0;
}

bool
cli_channel_parse(const char *s, uint32_t *out)
{
    static const struct {
        const char *name;
        cl_channel_t channel;
    } names[] = {
        { "online", CL_CHANNEL_ONLINE },
        { "store", CL_CHANNEL_STORE },
        { "enterprise", CL_CHANNEL_ENTERPRISE },
        { "platform", CL_CHANNEL_PLATFORM },
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = (uint32_t)names[i].channel;
            return true;
        }
    }
    return false;
}

int
cli_get_channel(const cli_args_t *a, const char *name, uint32_t *out)
{
    const char *v = cli_value(a, name);
    if (v == NULL)
        return 0;
    if (!cli_channel_parse(v, out))
        return cli_usage_error(a, "--%s '%s': one of online, store, enterprise, platform", name, v);
    return 0;
}

int
cli_card_ref(const cli_args_t *a, const char *s, cl_card_ref_t *out)
{
    memset(out, 0, sizeof(*out));
    if (strncmp(s, "id:", 3) == 0) {
        uint64_t id;
        if (units_u64_parse(s + 3, UINT64_MAX, &id) < 0 || id == 0)
            return cli_usage_error(a, "card '%s': id:N needs a card id number", s);
        out->card_id = id;
        return 0;
    }
    return cli_copy(a, "the card code", s, out->code, sizeof(out->code));
}

int
cli_client(cli_t *cli, cl_client_t **out)
{
    if (cli->client == NULL) {
        cl_client_opts_t opts;
        cl_client_opts_init(&opts);
        opts.timeout_ms = cli->timeout_ms;
        opts.retries = cli->retries;
        if (cli->key_file != NULL &&
            cl_client_opts_load_keys(&opts, cli->server_key_file, cli->key_file) != 0) {
            fprintf(stderr,
                    "cardledger: cannot read the CurveZMQ keys: %s or %s does not hold one "
                    "key\n",
                    cli->server_key_file, cli->key_file);
            return CLI_EXIT_USAGE;
        }
        int rc = cl_client_open(cli->connect, &opts, &cli->client);
        sodium_memzero(opts.curve_secret_key, sizeof(opts.curve_secret_key));
        if (rc < 0) {
            fprintf(stderr, "cardledger: cannot use endpoint '%s': %s\n", cli->connect,
                    cl_client_strerror(rc));
            return rc == CLIENT_ENOMEM ? CLI_EXIT_INTERNAL : CLI_EXIT_USAGE;
        }
    }
    *out = cli->client;
    return 0;
}

int
cli_client_error(int rc)
{
    assert(rc < 0);
    if (rc == CLIENT_ETIMEOUT) {
        fprintf(stderr, "cardledger: %s\n", cl_client_strerror(rc));
        return CLI_EXIT_UNREACHABLE;
    }
    fprintf(stderr, "cardledger: %s\n", cl_client_strerror(rc));
    return CLI_EXIT_INTERNAL;
}

int
cli_run_command(cli_t *cli, cl_command_t *cmd, cl_reply_t *out)
{
    cl_client_t *c;
    int rc = cli_client(cli, &c);
    if (rc != 0)
        return rc;
    if (cmd->request_id[0] == '\0' && cli->request_id != NULL)
        snprintf(cmd->request_id, sizeof(cmd->request_id), "%s", cli->request_id);

    /* A reply is large (two card views, strings): keep it off the stack. */
    static cl_reply_t reply;
    memset(&reply, 0, sizeof(reply));
    rc = cl_client_call(c, cmd, &reply);
    if (rc < 0)
        return cli_client_error(rc);
    if (out != NULL)
        *out = reply;
    static cl_reply_t stored;
    const cl_reply_t *stored_p = NULL;
    if (reply.status == CL_OK && reply.result == CL_RES_REQUEST && reply.found) {
        rc = cl_client_stored_reply(c, &reply, &stored);
        if (rc < 0)
            return cli_client_error(rc);
        stored_p = &stored;
    }
    if (cli->json)
        cli_print_json(&reply, stored_p);
    if (reply.status != CL_OK) {
        cli_print_refusal(&reply);
        return CLI_EXIT_REFUSED;
    }
    if (!cli->json)
        cli_print_human(cmd, &reply, stored_p);
    return CLI_EXIT_OK;
}
