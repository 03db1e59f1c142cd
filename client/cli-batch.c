/*
 * `cardledger issue-batch FILE.csv`: enterprise benefit cards from a spreadsheet.
 *
 * Three steps. First the whole file is read and checked (header, every row's fields, row keys
 * unique), and nothing is sent if any row is wrong: errors name their line. Then the rows go to
 * the ledger in IssueBatch commands of --batch-size rows. Each batch's request id is derived
 * from the merchant, the program, the file's content hash, the batch size and the batch's
 * index, so running the same file again sends the same requests: the ledger answers them with
 * its stored replies and issues nothing twice (and even without those, it refuses to issue a
 * row key twice in a program and reports the row as already issued).
 *
 * PINs are shown once. Before sending a batch the CLI asks the ledger whether its request id was
 * already answered (GetRequest): if so, an earlier run issued those rows and they are reported
 * as already issued without PINs. Otherwise this run issues them, and the PINs in the reply
 * (even one that came back on a retry, replayed) are new to the user and are written out.
 * The output CSV is written batch by batch and flushed, so an interrupted run keeps every PIN
 * it received.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "csv.h"
#include "json.h"
#include "units.h"

#define S_FILE_BYTES_MAX (256L * 1024 * 1024) /* the largest CSV file read */
#define S_ROWS_MAX       1000000              /* rows in one file */
#define S_ERRORS_SHOWN   20                   /* row errors printed before "and N more" */
#define S_PROGRESS_WIDTH 30                   /* characters of the progress bar */
#define S_ID_PREFIX      "ib-"                /* derived request ids start with this */

/* The columns the file may have. */
enum { COL_ROW_KEY, COL_HOLDER, COL_FACE_VALUE, COL_CHANNEL, COL_STORE, COL_REGION, COL_COUNT };

static const char *const s_col_names[COL_COUNT] = {
    "row_key", "holder", "face_value", "channel", "store", "region",
};

/* A row key and where it is, for the duplicate check. */
typedef struct s_key {
    char key[CL_ID_MAX + 1];
    unsigned long line;
} s_key_t;

typedef struct s_batch_run {
    cli_t *cli;
    const cli_args_t *a;
    char merchant[CL_ID_MAX + 1];
    char program[CL_ID_MAX + 1];
    char batch_ref[CL_NAME_MAX + 1];
    int64_t face_default;     /* --face-value */
    uint32_t channel_default; /* --channel */
    uint32_t batch_size;
    uint8_t file_hash[crypto_generichash_BYTES];
    int col[COL_COUNT]; /* field index of each column, -1 when absent */
    size_t ncols;       /* fields in the header */
    size_t rows;        /* data rows */
    unsigned errors;    /* row errors found */
    FILE *out;          /* the output CSV, or NULL (--json without --out) */
    bool tty;           /* stderr is a terminal: draw a bar */
    size_t done;        /* rows answered so far */
    size_t issued, already, refused;
} s_batch_run_t;

/* Reads a whole file (at most S_FILE_BYTES_MAX). Returns 0 or an exit code after printing. */
static int
s_read_file(const char *path, char **out_buf, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cardledger issue-batch: cannot open %s: %s\n", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    int rc = buf == NULL ? CLI_EXIT_INTERNAL : 0;
    while (rc == 0) {
        if (len == cap) {
            if (cap >= (size_t)S_FILE_BYTES_MAX) {
                fprintf(stderr, "cardledger issue-batch: %s is larger than %ld MiB; split it\n",
                        path, S_FILE_BYTES_MAX / (1024 * 1024));
                rc = CLI_EXIT_USAGE;
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (p == NULL) {
                rc = CLI_EXIT_INTERNAL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                fprintf(stderr, "cardledger issue-batch: reading %s: %s\n", path, strerror(errno));
                rc = CLI_EXIT_USAGE;
            }
            break;
        }
    }
    fclose(f);
    if (rc != 0) {
        if (rc == CLI_EXIT_INTERNAL)
            fprintf(stderr, "cardledger issue-batch: out of memory reading %s\n", path);
        free(buf);
        return rc;
    }
    *out_buf = buf;
    *out_len = len;
    return 0;
}

/* Trims spaces and tabs around a field (in place); spreadsheets leave them by accident. */
static char *
s_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static void s_row_error(s_batch_run_t *run, unsigned long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_row_error(s_batch_run_t *run, unsigned long line, const char *fmt, ...)
{
    run->errors++;
    if (run->errors > S_ERRORS_SHOWN)
        return;
    fprintf(stderr, "cardledger issue-batch: line %lu: ", line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Copies a field into a fixed string; false after reporting when it is too long. */
static bool
s_field(s_batch_run_t *run, unsigned long line, const char *col, const char *v, char *out,
        size_t cap)
{
    size_t len = strlen(v);
    if (len >= cap) {
        s_row_error(run, line, "%s is %zu bytes, over the limit of %zu", col, len, cap - 1);
        return false;
    }
    memcpy(out, v, len + 1);
    return true;
}

/*
 * Turns one record into an IssueCard row. Reports every problem of the row (so one pass shows
 * them all) and returns true when the row is good.
 */
static bool
s_parse_row(s_batch_run_t *run, char *const *fields, size_t n, unsigned long line,
            cl_cmd_issue_card_t *row)
{
    memset(row, 0, sizeof(*row));
    if (n != run->ncols) {
        s_row_error(run, line,
                    "%zu fields, but the header has %zu (a comma inside a value "
                    "needs the value in double quotes)",
                    n, run->ncols);
        return false;
    }
    bool ok = true;
    const char *v[COL_COUNT];
    for (int c = 0; c < COL_COUNT; c++)
        v[c] = run->col[c] >= 0 ? s_trim(fields[run->col[c]]) : "";

    if (v[COL_ROW_KEY][0] == '\0') {
        s_row_error(run, line, "row_key is missing");
        ok = false;
    } else {
        ok &= s_field(run, line, "row_key", v[COL_ROW_KEY], row->row_key, sizeof(row->row_key));
    }
    ok &= s_field(run, line, "holder", v[COL_HOLDER], row->holder, sizeof(row->holder));
    ok &= s_field(run, line, "store", v[COL_STORE], row->store_id, sizeof(row->store_id));
    ok &= s_field(run, line, "region", v[COL_REGION], row->region, sizeof(row->region));

    row->face_value_minor = run->face_default;
    if (v[COL_FACE_VALUE][0] != '\0') {
        int rc = units_amount_parse(v[COL_FACE_VALUE], run->cli->minor, &row->face_value_minor);
        if (rc < 0 || row->face_value_minor <= 0) {
            s_row_error(run, line, "face_value '%s' is not %s", v[COL_FACE_VALUE],
                        run->cli->minor ? "a positive whole number of minor units"
                                        : "a positive amount with up to two decimals (200.00)");
            ok = false;
        }
    }
    uint32_t channel = run->channel_default;
    if (v[COL_CHANNEL][0] != '\0' && !cli_channel_parse(v[COL_CHANNEL], &channel)) {
        s_row_error(run, line, "channel '%s' is not one of online, store, enterprise, platform",
                    v[COL_CHANNEL]);
        ok = false;
    }
    row->channel = (cl_channel_t)channel;
    return ok;
}

static int
s_key_cmp(const void *pa, const void *pb)
{
    const s_key_t *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c != 0)
        return c;
    return a->line < b->line ? -1 : a->line > b->line;
}

/* Reads the header: which field is which column. Returns 0 or an exit code. */
static int
s_header(s_batch_run_t *run, csv_t *r, const char *path)
{
    char *const *fields;
    size_t n;
    unsigned long line;
    int rc = csv_next(r, &fields, &n, &line);
    if (rc == CSV_END) {
        fprintf(stderr,
                "cardledger issue-batch: %s is empty; it needs a header row with "
                "row_key\n",
                path);
        return CLI_EXIT_USAGE;
    }
    if (rc < 0) {
        fprintf(stderr, "cardledger issue-batch: %s: line %lu: %s\n", path, csv_line(r),
                csv_strerror(rc));
        return CLI_EXIT_USAGE;
    }
    for (int c = 0; c < COL_COUNT; c++)
        run->col[c] = -1;
    run->ncols = n;
    for (size_t i = 0; i < n; i++) {
        char *name = s_trim(fields[i]);
        for (char *p = name; *p; p++) {
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        }
        int found = -1;
        for (int c = 0; c < COL_COUNT; c++) {
            if (strcmp(name, s_col_names[c]) == 0)
                found = c;
        }
        if (found < 0) {
            fprintf(stderr, "cardledger issue-batch: ignoring column '%s'\n", name);
            continue;
        }
        if (run->col[found] >= 0) {
            fprintf(stderr, "cardledger issue-batch: %s: line %lu: column %s appears twice\n", path,
                    line, name);
            return CLI_EXIT_USAGE;
        }
        run->col[found] = (int)i;
    }
    if (run->col[COL_ROW_KEY] < 0) {
        fprintf(stderr,
                "cardledger issue-batch: %s: line %lu: the header has no row_key column "
                "(columns: row_key, holder, face_value, channel, store, region)\n",
                path, line);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* Pass 1: checks every row and the uniqueness of row keys. Returns 0 or an exit code. */
static int
s_check(s_batch_run_t *run, const char *buf, size_t len, const char *path)
{
    unsigned long bad_line = 0;
    csv_t *r = NULL;
    int rc = csv_open(buf, len, &bad_line, &r);
    if (rc < 0) {
        fprintf(stderr, "cardledger issue-batch: %s: line %lu: %s\n", path, bad_line,
                csv_strerror(rc));
        return rc == CSV_ENOMEM ? CLI_EXIT_INTERNAL : CLI_EXIT_USAGE;
    }
    rc = s_header(run, r, path);
    size_t keys_cap = 1024;
    s_key_t *keys = rc == 0 ? malloc(keys_cap * sizeof(*keys)) : NULL;
    if (rc == 0 && keys == NULL)
        rc = CLI_EXIT_INTERNAL;
    size_t nkeys = 0;
    while (rc == 0) {
        char *const *fields;
        size_t n;
        unsigned long line;
        int crc = csv_next(r, &fields, &n, &line);
        if (crc == CSV_END)
            break;
        if (crc < 0) {
            fprintf(stderr, "cardledger issue-batch: %s: line %lu: %s\n", path, csv_line(r),
                    csv_strerror(crc));
            rc = crc == CSV_ENOMEM ? CLI_EXIT_INTERNAL : CLI_EXIT_USAGE;
            break;
        }
        if (run->rows == S_ROWS_MAX) {
            fprintf(stderr, "cardledger issue-batch: %s has more than %d rows; split it\n", path,
                    S_ROWS_MAX);
            rc = CLI_EXIT_USAGE;
            break;
        }
        run->rows++;
        cl_cmd_issue_card_t row;
        if (!s_parse_row(run, fields, n, line, &row) || row.row_key[0] == '\0')
            continue;
        if (nkeys == keys_cap) {
            s_key_t *p = realloc(keys, keys_cap * 2 * sizeof(*keys));
            if (p == NULL) {
                rc = CLI_EXIT_INTERNAL;
                break;
            }
            keys = p;
            keys_cap *= 2;
        }
        memcpy(keys[nkeys].key, row.row_key, sizeof(keys[nkeys].key));
        keys[nkeys].line = line;
        nkeys++;
    }
    csv_close(&r);
    if (rc == 0) {
        qsort(keys, nkeys, sizeof(*keys), s_key_cmp);
        for (size_t i = 1; i < nkeys; i++) {
            if (strcmp(keys[i].key, keys[i - 1].key) == 0)
                s_row_error(run, keys[i].line, "duplicate row_key '%s' (first on line %lu)",
                            keys[i].key, keys[i - 1].line);
        }
    }
    free(keys);
    if (rc == CLI_EXIT_INTERNAL)
        fprintf(stderr, "cardledger issue-batch: out of memory\n");
    if (rc != 0)
        return rc;
    if (run->errors > 0) {
        if (run->errors > S_ERRORS_SHOWN)
            fprintf(stderr, "cardledger issue-batch: ... and %u more errors\n",
                    run->errors - S_ERRORS_SHOWN);
        fprintf(stderr, "cardledger issue-batch: %u error%s in %s; nothing was sent\n", run->errors,
                run->errors == 1 ? "" : "s", path);
        return CLI_EXIT_USAGE;
    }
    if (run->rows == 0) {
        fprintf(stderr, "cardledger issue-batch: %s has a header but no rows; nothing to do\n",
                path);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* The request id of batch `index`: "ib-" and 26 base32 characters of a BLAKE2b-128 over
 * everything that decides the batch's content. */
static void
s_batch_request_id(const s_batch_run_t *run, uint32_t index, char out[CL_REQUEST_ID_MAX + 1])
{
    crypto_generichash_state st;
    uint8_t h[16];
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    static const char domain[] = "cardledger issue-batch v1";
    crypto_generichash_update(&st, (const uint8_t *)domain, sizeof(domain));
    crypto_generichash_update(&st, (const uint8_t *)run->merchant, strlen(run->merchant) + 1);
    crypto_generichash_update(&st, (const uint8_t *)run->program, strlen(run->program) + 1);
    crypto_generichash_update(&st, (const uint8_t *)run->batch_ref, strlen(run->batch_ref) + 1);
    crypto_generichash_update(&st, run->file_hash, sizeof(run->file_hash));
    char nums[96];
    int n = snprintf(nums, sizeof(nums), "%" PRId64 ",%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",%d",
                     run->face_default, run->channel_default, run->batch_size, index,
                     run->cli->minor ? 1 : 0);
    crypto_generichash_update(&st, (const uint8_t *)nums, (size_t)n);
    crypto_generichash_final(&st, h, sizeof(h));

    size_t o = strlen(S_ID_PREFIX);
    memcpy(out, S_ID_PREFIX, o);
    char id[CL_REQUEST_ID_MAX + 1];
    cl_client_request_id_from_bytes(h, id);
    memcpy(out + o, id, CL_CLIENT_REQUEST_ID_LEN + 1);
}

static void
s_progress(s_batch_run_t *run, uint32_t batch, uint32_t batches, size_t rows, bool earlier)
{
    if (run->tty) {
        size_t pct = run->done * 100 / run->rows;
        size_t fill = run->done * S_PROGRESS_WIDTH / run->rows;
        char bar[S_PROGRESS_WIDTH + 1];
        for (size_t i = 0; i < S_PROGRESS_WIDTH; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[S_PROGRESS_WIDTH] = '\0';
        fprintf(stderr, "\r[%s] %zu/%zu rows %3zu%%", bar, run->done, run->rows, pct);
        if (run->done == run->rows)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "issue-batch: batch %" PRIu32 "/%" PRIu32 ": %zu rows%s; %zu/%zu done\n",
                batch, batches, rows, earlier ? " (answered by an earlier run)" : "", run->done,
                run->rows);
    }
    fflush(stderr);
}

/* Writes the rows of one answered batch. earlier: the batch was done by an earlier run. */
static void
s_write_rows(s_batch_run_t *run, const cl_reply_t *r, const cl_cmd_issue_card_t *rows, size_t n,
             bool earlier)
{
    for (size_t i = 0; i < n; i++) {
        const cl_issued_row_t *row = i < r->rows_count && r->rows != NULL ? &r->rows[i] : NULL;
        const char *status;
        const char *pin = "";
        if (row == NULL) {
            status = cl_status_name(r->status);
            run->refused++;
        } else if (row->status != CL_OK) {
            status = cl_status_name(row->status);
            run->refused++;
            fprintf(stderr, "cardledger issue-batch: row %s refused: %s: %s\n", rows[i].row_key,
                    status, row->message);
        } else if (row->already_issued || earlier) {
            status = "already_issued";
            run->already++;
        } else {
            status = "issued";
            pin = row->pin;
            run->issued++;
        }
        if (run->out == NULL)
            continue;
        char id[24] = "";
        if (row != NULL && row->card_id != 0)
            snprintf(id, sizeof(id), "%" PRIu64, row->card_id);
        csv_write_field(run->out, rows[i].row_key);
        fputc(',', run->out);
        csv_write_field(run->out, id);
        fputc(',', run->out);
        csv_write_field(run->out, row != NULL ? row->code : "");
        fputc(',', run->out);
        csv_write_field(run->out, pin);
        fputc(',', run->out);
        csv_write_field(run->out, status);
        fputs("\r\n", run->out);
    }
}

/* Sends one batch (or finds it answered already) and writes its rows. Returns 0 or an exit
 * code. */
static int
s_send_batch(s_batch_run_t *run, uint32_t index, uint32_t batches, cl_cmd_issue_card_t *rows,
             size_t n)
{
    cl_client_t *c;
    int rc = cli_client(run->cli, &c);
    if (rc != 0)
        return rc;
    static cl_command_t cmd;
    static cl_reply_t reply, stored;
    memset(&cmd, 0, sizeof(cmd));
    s_batch_request_id(run, index, cmd.request_id);

    /* Did an earlier run send this very batch? Then its PINs were shown there, not here. */
    cl_command_t *q = &cmd;
    q->type = CL_CMD_GET_REQUEST;
    char rid[CL_REQUEST_ID_MAX + 1];
    memcpy(rid, cmd.request_id, sizeof(rid));
    memcpy(q->u.get_request_id, rid, sizeof(rid));
    q->request_id[0] = '\0'; /* the query gets its own fresh id */
    rc = cl_client_call(c, q, &reply);
    if (rc < 0)
        return cli_client_error(rc);
    if (reply.status != CL_OK) {
        cli_print_refusal(&reply);
        return CLI_EXIT_REFUSED;
    }
    const cl_reply_t *answer = &reply;
    bool earlier = false;
    if (reply.found) {
        rc = cl_client_stored_reply(c, &reply, &stored);
        if (rc < 0)
            return cli_client_error(rc);
        answer = &stored;
        earlier = true;
    } else {
        memset(&cmd, 0, sizeof(cmd));
        memcpy(cmd.request_id, rid, sizeof(rid));
        cmd.type = CL_CMD_ISSUE_BATCH;
        memcpy(cmd.u.issue_batch.merchant_id, run->merchant, sizeof(run->merchant));
        memcpy(cmd.u.issue_batch.program_id, run->program, sizeof(run->program));
        memcpy(cmd.u.issue_batch.batch_ref, run->batch_ref, sizeof(run->batch_ref));
        cmd.u.issue_batch.rows_count = (uint32_t)n;
        cmd.batch_rows = rows;
        rc = cl_client_call(c, &cmd, &reply);
        if (rc < 0)
            return cli_client_error(rc);
    }
    if (run->cli->json)
        cli_print_json(answer, NULL);
    if (answer->status != CL_OK) {
        /* The whole batch was refused (unknown program, closed, ...): no row was issued. */
        cli_print_refusal(answer);
        if (earlier)
            fprintf(stderr, "cardledger issue-batch: an earlier run of this file was refused "
                            "like this; the ledger keeps that answer for the same request id. "
                            "After fixing the cause, run again with a new --batch-ref\n");
        return CLI_EXIT_REFUSED;
    }
    if (answer->result != CL_RES_BATCH || answer->rows_count != n) {
        fprintf(stderr,
                "cardledger issue-batch: the ledger answered batch %" PRIu32 " with %" PRIu32
                " rows for %zu sent\n",
                index + 1, answer->rows_count, n);
        return CLI_EXIT_INTERNAL;
    }
    s_write_rows(run, answer, rows, n, earlier);
    if (run->out != NULL && fflush(run->out) != 0) {
        fprintf(stderr, "cardledger issue-batch: writing the output: %s\n", strerror(errno));
        return CLI_EXIT_INTERNAL;
    }
    run->done += n;
    s_progress(run, index + 1, batches, n, earlier);
    return 0;
}

/* Pass 2: sends the rows batch by batch. Returns 0 or an exit code. */
static int
s_send_all(s_batch_run_t *run, const char *buf, size_t len)
{
    csv_t *r = NULL;
    if (csv_open(buf, len, NULL, &r) < 0)
        return CLI_EXIT_INTERNAL; /* pass 1 read the same bytes */
    cl_cmd_issue_card_t *rows = calloc(run->batch_size, sizeof(*rows));
    if (rows == NULL) {
        csv_close(&r);
        return CLI_EXIT_INTERNAL;
    }
    char *const *fields;
    size_t n;
    unsigned long line;
    int rc = csv_next(r, &fields, &n, &line) == 0 ? 0 : CLI_EXIT_INTERNAL; /* the header */
    uint32_t batches = (uint32_t)((run->rows + run->batch_size - 1) / run->batch_size);
    uint32_t index = 0;
    size_t filled = 0;
    while (rc == 0) {
        int crc = csv_next(r, &fields, &n, &line);
        if (crc == 0) {
            if (!s_parse_row(run, fields, n, line, &rows[filled])) {
                rc = CLI_EXIT_INTERNAL; /* pass 1 accepted it */
                break;
            }
            filled++;
        } else if (crc != CSV_END) {
            rc = CLI_EXIT_INTERNAL;
            break;
        }
        if (filled == run->batch_size || (crc == CSV_END && filled > 0)) {
            rc = s_send_batch(run, index++, batches, rows, filled);
            filled = 0;
        }
        if (crc == CSV_END)
            break;
    }
    free(rows);
    csv_close(&r);
    return rc;
}

/* Opens --out, refusing to overwrite a file (it may hold the only copy of PINs) unless --force. */
static int
s_open_out(s_batch_run_t *run, const char *path, bool force)
{
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
    int fd = open(path, flags, 0600); /* PINs inside: readable by the owner only */
    if (fd < 0) {
        if (errno == EEXIST)
            fprintf(stderr,
                    "cardledger issue-batch: %s exists; it may hold the only copy of "
                    "PINs. Choose another --out, or add --force to overwrite it\n",
                    path);
        else
            fprintf(stderr, "cardledger issue-batch: cannot create %s: %s\n", path,
                    strerror(errno));
        return CLI_EXIT_USAGE;
    }
    run->out = fdopen(fd, "w");
    if (run->out == NULL) {
        close(fd);
        return CLI_EXIT_INTERNAL;
    }
    return 0;
}

int
cli_issue_batch(cli_t *cli, const cli_args_t *a)
{
    static s_batch_run_t run;
    memset(&run, 0, sizeof(run));
    run.cli = cli;
    run.a = a;
    run.batch_size = CL_ISSUE_BATCH_MAX;
    run.channel_default = CL_CHANNEL_ENTERPRISE;
    int rc = cli_get_str(a, "merchant", true, run.merchant, sizeof(run.merchant));
    if (rc == 0)
        rc = cli_get_str(a, "program", true, run.program, sizeof(run.program));
    if (rc == 0)
        rc = cli_get_u32(a, "batch-size", false, CL_ISSUE_BATCH_MAX, &run.batch_size);
    if (rc == 0 && run.batch_size == 0)
        rc = cli_usage_error(a, "--batch-size must be 1 to %d", CL_ISSUE_BATCH_MAX);
    if (rc == 0)
        rc = cli_get_amount(cli, a, "face-value", false, &run.face_default);
    if (rc == 0)
        rc = cli_get_channel(a, "channel", &run.channel_default);
    if (rc == 0)
        rc = cli_get_str(a, "batch-ref", false, run.batch_ref, sizeof(run.batch_ref));
    if (rc != 0)
        return rc;
    if (cli_flag(a, "force") && cli_value(a, "out") == NULL)
        return cli_usage_error(a, "--force goes with --out");

    const char *path = a->positional[0];
    char *buf = NULL;
    size_t len = 0;
    rc = s_read_file(path, &buf, &len);
    if (rc != 0)
        return rc;
    if (sodium_init() < 0) {
        free(buf);
        return CLI_EXIT_INTERNAL;
    }
    crypto_generichash(run.file_hash, sizeof(run.file_hash), (const uint8_t *)buf, len, NULL, 0);
    if (run.batch_ref[0] == '\0') {
        char hex[2 * 8 + 1];
        sodium_bin2hex(hex, sizeof(hex), run.file_hash, 8);
        snprintf(run.batch_ref, sizeof(run.batch_ref), "csv:%s", hex);
    }

    rc = s_check(&run, buf, len, path);
    if (rc == 0) {
        const char *out = cli_value(a, "out");
        if (out != NULL && strcmp(out, "-") != 0)
            rc = s_open_out(&run, out, cli_flag(a, "force"));
        else if (!cli->json)
            run.out = stdout;
    }
    if (rc == 0 && run.out != NULL)
        fputs("row_key,card_id,code,pin,status\r\n", run.out);
    if (rc == 0) {
        run.tty = isatty(STDERR_FILENO) == 1;
        rc = s_send_all(&run, buf, len);
        if (run.tty && run.done < run.rows && run.done > 0)
            fputc('\n', stderr);
    }
    if (run.out != NULL && run.out != stdout) {
        if (fclose(run.out) != 0 && rc == 0) {
            fprintf(stderr, "cardledger issue-batch: writing the output: %s\n", strerror(errno));
            rc = CLI_EXIT_INTERNAL;
        }
    }
    free(buf);
    if (run.done > 0 || rc == 0) {
        fprintf(stderr, "issue-batch: %zu rows: %zu issued, %zu already issued, %zu refused%s\n",
                run.rows, run.issued, run.already, run.refused,
                run.done < run.rows ? " (stopped early; run the same file again to finish)" : "");
        if (run.issued > 0)
            fprintf(stderr,
                    "issue-batch: PINs are shown only for the %zu rows issued by this "
                    "run; keep the output safe\n",
                    run.issued);
    }
    if (rc == 0 && run.refused > 0)
        rc = CLI_EXIT_REFUSED;
    return rc;
}
