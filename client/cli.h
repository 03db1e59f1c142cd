/*
 * The cardledger CLI's shared pieces: the command table, parsed arguments, and the helpers the
 * subcommands use to turn arguments into a cl_command_t, send it and print the reply.
 *
 * cli.c parses the command line and dispatches; cli-commands.c has the table of subcommands and
 * builds their commands; cli-output.c prints replies for people and as JSON; cli-batch.c is the
 * spreadsheet batch issue; cli-queries.c asks the projector (through queries.c, the protobuf
 * edge for the projector's queries). All of them talk to the ledger through libcardledger.
 */
#ifndef CARDLEDGER_CLI_H
#define CARDLEDGER_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cardledger.h"

/* Exit codes: documented in --help and docs/client.md. */
#define CLI_EXIT_OK          0 /* the ledger accepted (or answered) every request */
#define CLI_EXIT_USAGE       1 /* the command line or an input file is wrong; nothing was sent */
#define CLI_EXIT_UNREACHABLE 2 /* no reply from the ledger after every retry */
#define CLI_EXIT_REFUSED     3 /* the ledger refused; its status name is on stderr */
#define CLI_EXIT_INTERNAL    4 /* a protocol or internal error */

#define CLI_OPTS_MAX       48 /* options of one subcommand */
#define CLI_POSITIONAL_MAX 4  /* positional arguments of one subcommand */

#define CLI_CONNECT_DEFAULT   "tcp://127.0.0.1:7700"
#define CLI_PROJECTOR_DEFAULT "tcp://127.0.0.1:7702"

/* One --option of a subcommand. */
typedef struct cli_opt {
    const char *name; /* without the leading "--" */
    const char *meta; /* the value's placeholder ("AMOUNT"), NULL for a flag */
    const char *help; /* one line */
} cli_opt_t;

typedef struct cli cli_t;
typedef struct cli_args cli_args_t;

typedef int (*cli_run_fn)(cli_t *cli, const cli_args_t *a);

/* One subcommand. */
typedef struct cli_cmd {
    const char *group;     /* "gift", or NULL for a top-level command */
    const char *name;      /* "offer" */
    const char *synopsis;  /* positionals and required options, e.g. "CARD --store STORE" */
    size_t positional_min; /* positionals required */
    size_t positional_max; /* positionals allowed */
    const char *summary;   /* one line for the command list */
    const char *details;   /* more lines for --help, or NULL */
    const cli_opt_t *opts; /* terminated by an entry with name NULL */
    cli_run_fn run;
} cli_cmd_t;

/* The parsed arguments of one subcommand. */
struct cli_args {
    const cli_cmd_t *cmd;                       /* which subcommand */
    const char *values[CLI_OPTS_MAX];           /* per cmd->opts entry: value, "" for a flag */
    const char *positional[CLI_POSITIONAL_MAX]; /* positional arguments in order */
    size_t positional_n;
};

/* Global state: the global options and the client, opened on first use. */
struct cli {
    const char *connect;           /* --connect, $CARDLEDGER_CONNECT or the default */
    const char *server_key_file;   /* --server-key-file, $CARDLEDGER_SERVER_KEY_FILE, or NULL */
    const char *key_file;          /* --key-file, $CARDLEDGER_KEY_FILE, or NULL */
    const char *projector;         /* --projector, $CARDLEDGER_PROJECTOR or the default */
    const char *request_id;        /* --request-id, or NULL to generate */
    bool json;                     /* --json */
    bool minor;                    /* --minor: amounts are integers of minor units */
    int timeout_ms;                /* --timeout-ms */
    int retries;                   /* --retries */
    cl_client_t *client;           /* opened by cli_client() */
    cl_client_t *projector_client; /* opened by the projector's queries (cli-queries.c) */
};

/* The subcommand table (cli-commands.c), terminated by an entry with name NULL. */
extern const cli_cmd_t cli_commands[];

/* The value of option `name` of the parsed subcommand, or NULL when it was not given.
 * A flag given reads as "". The name must be in the subcommand's table. */
const char *cli_value(const cli_args_t *a, const char *name);
bool cli_flag(const cli_args_t *a, const char *name);

/* Prints "cardledger <cmd>: <message>" and a hint to --help on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_args_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Argument helpers: each returns 0, or prints a usage error and returns CLI_EXIT_USAGE. When the
 * option is absent, *out is left alone (so a default set before stays) unless `required`. */
int cli_get_str(const cli_args_t *a, const char *name, bool required, char *out, size_t cap);
int cli_get_amount(cli_t *cli, const cli_args_t *a, const char *name, bool required, int64_t *out);
int cli_get_u32(const cli_args_t *a, const char *name, bool required, uint32_t max, uint32_t *out);
int cli_get_u64(const cli_args_t *a, const char *name, bool required, uint64_t *out);
int cli_get_time(const cli_args_t *a, const char *name, bool required, int64_t *out_us);
int cli_get_channel(const cli_args_t *a, const char *name, uint32_t *out);

/* Copies a positional or other string into a fixed field, or fails with a usage error naming
 * `what` when it is empty or too long. */
int cli_copy(const cli_args_t *a, const char *what, const char *s, char *out, size_t cap);

/* Parses a card argument: "id:N" names the ledger's card id, anything else is a code. */
int cli_card_ref(const cli_args_t *a, const char *s, cl_card_ref_t *out);

/* Parses a channel name (online, store, enterprise, platform); false when unknown. */
bool cli_channel_parse(const char *s, uint32_t *out);

/* The client, opened on first use with the global options. Returns 0 or an exit code. */
int cli_client(cli_t *cli, cl_client_t **out);

/* Maps a CLIENT_E* code to an exit code after printing what went wrong on stderr. */
int cli_client_error(int rc);

/*
 * Sends one command (with --request-id when given and the command has none), prints the reply
 * (JSON or human) and returns the exit code: CLI_EXIT_OK, CLI_EXIT_REFUSED (the status name and
 * sentence on stderr), CLI_EXIT_UNREACHABLE or CLI_EXIT_INTERNAL. When out is not NULL the
 * reply is copied there too (its rows pointer valid until the next call on the client).
 */
int cli_run_command(cli_t *cli, cl_command_t *cmd, cl_reply_t *out);

/* cli-output.c: the reply as one JSON object on one line of stdout; stored (may be NULL) is the
 * decoded stored reply of a GetRequest, printed as "stored_reply". */
void cli_print_json(const cl_reply_t *r, const cl_reply_t *stored);

/* cli-output.c: an accepted reply for people, on stdout. */
void cli_print_human(const cl_command_t *cmd, const cl_reply_t *r, const cl_reply_t *stored);

/* cli-output.c: "refused: <status>: <sentence>" on stderr. */
void cli_print_refusal(const cl_reply_t *r);

/* cli-output.c: names of kinds and channels as the CLI spells them ("stored-value"). */
const char *cli_kind_name(cl_kind_t kind);
const char *cli_channel_name(cl_channel_t channel);

/* cli-batch.c: `cardledger issue-batch FILE.csv`. */
int cli_issue_batch(cli_t *cli, const cli_args_t *a);

/* cli-output.c: "12.50 CNY" (major units; no currency when it is empty). */
const char *cli_money(int64_t minor, const char *currency, char *buf, size_t cap);

/* cli-output.c: the state of a card ("active"). */
const char *cli_state_name(cl_card_state_t state);

/* cli-queries.c: the projector's queries; their options are in the tables below. */
int cli_history(cli_t *cli, const cli_args_t *a);
int cli_wallet(cli_t *cli, const cli_args_t *a);
int cli_liability(cli_t *cli, const cli_args_t *a);
int cli_store_day(cli_t *cli, const cli_args_t *a);
int cli_store_redemptions(cli_t *cli, const cli_args_t *a);
int cli_settlement(cli_t *cli, const cli_args_t *a);
int cli_analytics(cli_t *cli, const cli_args_t *a);
int cli_projections_status(cli_t *cli, const cli_args_t *a);
int cli_projections_rebuild(cli_t *cli, const cli_args_t *a);
extern const cli_opt_t cli_history_opts[];
extern const cli_opt_t cli_liability_opts[];
extern const cli_opt_t cli_store_day_opts[];
extern const cli_opt_t cli_store_redemptions_opts[];
extern const cli_opt_t cli_settlement_opts[];
extern const cli_opt_t cli_analytics_opts[];
extern const cli_opt_t cli_no_opts[];

#endif /* CARDLEDGER_CLI_H */
