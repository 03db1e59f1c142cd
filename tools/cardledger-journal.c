/*
 * cardledger-journal: the operator's and analyst's tool for a journal directory.
 *
 * It opens journals read-only (it never writes a journal; `copy` and `import` write a new one)
 * and offers six subcommands: `stat` (counts, sizes and the head, as text or JSON), `dump` (one
 * JSON object per entry and line), `verify` (structure, gap-free sequence numbers and the hash
 * chain; names the first bad sequence number; also of an export file), `copy` (a consistent hot
 * backup that is then verified), `export` (a portable, checksummed file for analysts, card
 * codes masked: journal/export.h, codec_event_export()) and `import` (an export back into a
 * journal, for the replay). Everything it knows about entries comes from the journal library,
 * so the tool reads exactly what the daemon writes. The exit status is the contract scripts rely
 * on: 0 ok, 1 usage error, 2 cannot open, read or write, 3 verification failed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cardledger-config.h"
#include "codec.h"
#include "export.h"
#include "journal.h"

#define S_PROG "cardledger-journal"

/* Exit statuses (documented in --help and docs/journal-format.md). */
#define S_EXIT_OK     0
#define S_EXIT_USAGE  1
#define S_EXIT_IO     2
#define S_EXIT_VERIFY 3
/* Room for an ISO-8601 UTC time with microseconds: "-292277-01-01T00:00:00.000000Z". */
#define S_TIME_BUF_SIZE 48

static const char s_usage[] =
    "Usage: " S_PROG " [--help] [--version] COMMAND [ARGS]\n"
    "\n"
    "Inspect, verify, back up and export a cardledger journal (an LMDB directory). Journals\n"
    "are opened read-only; the tool never modifies one.\n"
    "\n"
    "Commands:\n"
    "  stat DIR [--json]              entries, sequence range, head hash, sizes\n"
    "  dump DIR [--from N] [--to N]   one JSON object per entry and line: seq, timestamp_us,\n"
    "                                 time (ISO-8601 UTC), hash, payload_len and the event\n"
    "                                 (card codes masked, PIN hashes never shown)\n"
    "  verify DIR [--from N] [--to N] check structure, gap-free sequence numbers and the\n"
    "                                 hash chain; names the first bad sequence number\n"
    "  verify FILE                    check an export file (the same, and its checksum)\n"
    "  copy DIR DEST                  consistent hot backup of DIR into DEST (created, must\n"
    "                                 not hold a data.mdb), then verify the copy\n"
    "  export DIR FILE [--to N]       entries 1..N (default: all) as one portable,\n"
    "                                 checksummed file for analysts (FILE must not exist):\n"
    "                                 card codes masked to their last 4 characters, PIN and\n"
    "                                 claim hashes left out; cardledger-replay reads it.\n"
    "                                 Keep it private: it holds the codes' fast hashes\n"
    "                                 (docs/journal-format.md section 10)\n"
    "  import FILE DEST               check an export, then write its entries into a new\n"
    "                                 journal DEST (created, must not hold a data.mdb)\n"
    "\n"
    "Options:\n"
    "  -h, --help      show this help and exit\n"
    "  -V, --version   show the version and exit\n"
    "\n"
    "Exit status:\n"
    "  0  success (verify: the checked range is intact)\n"
    "  1  usage error\n"
    "  2  cannot open, read or write a journal or a file\n"
    "  3  verification failed (a corrupt entry, a broken hash chain, a bad checksum)\n";

static void s_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
s_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(S_PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" S_PROG " --help' for more information.\n", stderr);
}

/* Exit status for a journal error: corruption is a verification failure, the rest is I/O. */
static int
s_exit_for(int rc)
{
    return (rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN) ? S_EXIT_VERIFY : S_EXIT_IO;
}

static bool
s_parse_seq(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

static void
s_hex(FILE *out, const uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        fprintf(out, "%02x", bytes[i]);
    }
}

/* Formats microseconds since the epoch as ISO-8601 UTC; false if out of gmtime's range. */
static bool
s_iso_time(int64_t us, char buf[S_TIME_BUF_SIZE])
{
    int64_t secs = us / 1000000;
    int64_t frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if ((int64_t)t != secs || gmtime_r(&t, &tm) == NULL) {
        return false;
    }
    char date[S_TIME_BUF_SIZE];
    if (strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        return false;
    }
    int n = snprintf(buf, S_TIME_BUF_SIZE, "%s.%06" PRId64 "Z", date, frac);
    return n > 0 && n < S_TIME_BUF_SIZE;
}

/* Prints a JSON string value (quotes included) with the escapes JSON requires. */
static void
s_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p);
        } else if (*p < 0x20) {
            fprintf(out, "\\u%04x", *p);
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void
s_json_time(FILE *out, const char *name, int64_t us)
{
    char buf[S_TIME_BUF_SIZE];
    if (s_iso_time(us, buf)) {
        fprintf(out, "\"%s\":\"%s\"", name, buf);
    } else {
        fprintf(out, "\"%s\":null", name);
    }
}

/*
 * A payload in `dump` output: the JournalEntry decoded by the codec and printed as the event's
 * JSON, card codes masked and PIN and claim hashes never printed (codec_event_json()). A payload
 * that does not decode is named by the reason only: its bytes are never printed, since they
 * could hold a card code in clear.
 */
static void
dump_payload_json(FILE *out, const void *payload, size_t len)
{
    static cl_event_t ev;
    static char json[CODEC_EVENT_JSON_MAX + 1];
    size_t json_len = 0;
    int rc = codec_event_decode(payload, len, &ev);
    if (rc == 0)
        rc = codec_event_json(&ev, json, sizeof(json), &json_len);
    if (rc == 0)
        fprintf(out, "\"event\":%.*s", (int)json_len, json);
    else
        fprintf(out, "\"event_error\":\"%s\"", codec_strerror(rc));
}

static int
s_open(const char *dir, journal_t **out)
{
    journal_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.read_only = true;
    int rc = journal_open(dir, &opts, out);
    if (rc != 0) {
        fprintf(stderr, S_PROG ": cannot open journal %s: %s\n", dir, journal_strerror(rc));
        return rc == JOURNAL_EVERSION ? S_EXIT_IO : s_exit_for(rc);
    }
    return S_EXIT_OK;
}

/* Parses "DIR [--from N] [--to N] [--json]" for a subcommand; which options are allowed is
 * given by the flags. Returns S_EXIT_OK, S_EXIT_USAGE, or -1 for --help (exit 0). */
struct s_args {
    const char *dir;
    const char *dest;
    uint64_t from_seq;
    uint64_t to_seq;
    bool json;
};

static int
s_parse_args(int argc, char **argv, bool range, bool json, bool dest, struct s_args *a)
{
    static const struct option longopts[] = {
        { "from", required_argument, NULL, 'f' },
        { "to", required_argument, NULL, 't' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *cmd = argv[0];
    memset(a, 0, sizeof(*a));
    optind = 0; /* glibc: full re-initialization for the subcommand's argv */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(s_usage, stdout);
            return -1;
        case 'f':
        case 't':
            if (!range) {
                s_usage_error("%s: --from and --to are not options of this command", cmd);
                return S_EXIT_USAGE;
            }
            if (!s_parse_seq(optarg, c == 'f' ? &a->from_seq : &a->to_seq)) {
                s_usage_error("not a sequence number: '%s'", optarg);
                return S_EXIT_USAGE;
            }
            break;
        case 'j':
            if (!json) {
                s_usage_error("%s: --json is not an option of this command", cmd);
                return S_EXIT_USAGE;
            }
            a->json = true;
            break;
        case ':':
            s_usage_error("%s: option needs an argument", argv[optind - 1]);
            return S_EXIT_USAGE;
        default:
            s_usage_error("%s: no such option", argv[optind - 1]);
            return S_EXIT_USAGE;
        }
    }
    int want = dest ? 2 : 1;
    if (argc - optind != want) {
        s_usage_error(dest ? "%s: needs two paths (see --help)" : "%s: needs exactly one DIR", cmd);
        return S_EXIT_USAGE;
    }
    a->dir = argv[optind];
    a->dest = dest ? argv[optind + 1] : NULL;
    if (a->to_seq != 0 && a->from_seq > a->to_seq) {
        s_usage_error("%s: --from is after --to", cmd);
        return S_EXIT_USAGE;
    }
    return S_EXIT_OK;
}

static void
s_stat_text(const char *dir, const journal_stat_t *st)
{
    char buf[S_TIME_BUF_SIZE];
    printf("journal:           %s\n", dir);
    printf("format version:    %" PRIu32 "\n", st->format_version);
    printf("journal id:        ");
    s_hex(stdout, st->journal_id, JOURNAL_ID_SIZE);
    printf("\ncreated:           %s\n", s_iso_time(st->created_us, buf) ? buf : "?");
    printf("entries:           %" PRIu64 "\n", st->entries);
    printf("first seq:         %" PRIu64 "\n", st->first_seq);
    printf("head seq:          %" PRIu64 "\n", st->head_seq);
    printf("head hash:         ");
    s_hex(stdout, st->head_hash, JOURNAL_HASH_SIZE);
    printf("\n");
    if (st->entries > 0) {
        printf("first timestamp:   %s\n", s_iso_time(st->first_timestamp_us, buf) ? buf : "?");
        printf("last timestamp:    %s\n", s_iso_time(st->last_timestamp_us, buf) ? buf : "?");
    }
    printf("data file bytes:   %" PRIu64 "\n", st->file_size_bytes);
    printf("map size bytes:    %" PRIu64 "\n", st->map_size_bytes);
    printf("map used bytes:    %" PRIu64 "\n", st->map_used_bytes);
    printf("page size bytes:   %" PRIu32 "\n", st->page_size_bytes);
    printf("entries pages:     %" PRIu64 " branch, %" PRIu64 " leaf, %" PRIu64
           " overflow, depth %" PRIu32 "\n",
           st->entries_branch_pages, st->entries_leaf_pages, st->entries_overflow_pages,
           st->entries_depth);
    if (st->entries > 0) {
        printf("used bytes/entry:  %.1f\n", (double)st->map_used_bytes / (double)st->entries);
    }
}

static void
s_stat_json(const char *dir, const journal_stat_t *st)
{
    printf("{\"journal\":");
    s_json_string(stdout, dir);
    printf(",\"format_version\":%" PRIu32 ",\"journal_id\":\"", st->format_version);
    s_hex(stdout, st->journal_id, JOURNAL_ID_SIZE);
    printf("\",\"created_us\":%" PRId64 ",", st->created_us);
    s_json_time(stdout, "created", st->created_us);
    printf(",\"entries\":%" PRIu64 ",\"first_seq\":%" PRIu64 ",\"head_seq\":%" PRIu64
           ",\"head_hash\":\"",
           st->entries, st->first_seq, st->head_seq);
    s_hex(stdout, st->head_hash, JOURNAL_HASH_SIZE);
    printf("\",\"first_timestamp_us\":%" PRId64 ",\"last_timestamp_us\":%" PRId64
           ",\"file_size_bytes\":%" PRIu64 ",\"map_size_bytes\":%" PRIu64
           ",\"map_used_bytes\":%" PRIu64 ",\"page_size_bytes\":%" PRIu32
           ",\"entries_branch_pages\":%" PRIu64 ",\"entries_leaf_pages\":%" PRIu64
           ",\"entries_overflow_pages\":%" PRIu64 ",\"entries_depth\":%" PRIu32 "}\n",
           st->first_timestamp_us, st->last_timestamp_us, st->file_size_bytes, st->map_size_bytes,
           st->map_used_bytes, st->page_size_bytes, st->entries_branch_pages,
           st->entries_leaf_pages, st->entries_overflow_pages, st->entries_depth);
}

static int
s_cmd_stat(int argc, char **argv)
{
    struct s_args a;
    int status = s_parse_args(argc, argv, false, true, false, &a);
    if (status != S_EXIT_OK) {
        return status < 0 ? S_EXIT_OK : status;
    }
    journal_t *j = NULL;
    status = s_open(a.dir, &j);
    if (status != S_EXIT_OK) {
        return status;
    }
    journal_stat_t st;
    int rc = journal_stat(j, &st);
    journal_close(&j);
    if (rc != 0) {
        fprintf(stderr, S_PROG ": stat %s: %s\n", a.dir, journal_strerror(rc));
        return s_exit_for(rc);
    }
    if (a.json) {
        s_stat_json(a.dir, &st);
    } else {
        s_stat_text(a.dir, &st);
    }
    return S_EXIT_OK;
}

static int
s_cmd_dump(int argc, char **argv)
{
    struct s_args a;
    int status = s_parse_args(argc, argv, true, false, false, &a);
    if (status != S_EXIT_OK) {
        return status < 0 ? S_EXIT_OK : status;
    }
    journal_t *j = NULL;
    status = s_open(a.dir, &j);
    if (status != S_EXIT_OK) {
        return status;
    }
    journal_reader_t *r = NULL;
    int rc = journal_reader_open(j, a.from_seq, &r);
    if (rc == 0) {
        journal_entry_t e;
        while ((rc = journal_reader_next(r, &e)) == 0) {
            if (a.to_seq != 0 && e.seq > a.to_seq) {
                break;
            }
            printf("{\"seq\":%" PRIu64 ",\"timestamp_us\":%" PRId64 ",", e.seq, e.timestamp_us);
            s_json_time(stdout, "time", e.timestamp_us);
            printf(",\"hash\":\"");
            s_hex(stdout, e.hash, JOURNAL_HASH_SIZE);
            printf("\",\"payload_len\":%zu,", e.payload_len);
            dump_payload_json(stdout, e.payload, e.payload_len);
            printf("}\n");
        }
        if (rc == JOURNAL_END) {
            rc = 0;
        }
    }
    uint64_t bad_seq = r != NULL ? journal_reader_bad_seq(r) : 0;
    journal_reader_close(&r);
    journal_close(&j);
    if (fflush(stdout) != 0) {
        fprintf(stderr, S_PROG ": dump: writing output: %s\n", strerror(errno));
        return S_EXIT_IO;
    }
    if (rc != 0) {
        if (bad_seq != 0) {
            fprintf(stderr, S_PROG ": dump %s: sequence %" PRIu64 ": %s\n", a.dir, bad_seq,
                    journal_strerror(rc));
        } else {
            fprintf(stderr, S_PROG ": dump %s: %s\n", a.dir, journal_strerror(rc));
        }
        return s_exit_for(rc);
    }
    return S_EXIT_OK;
}

/* Verifies an open journal and reports like `verify` does. */
static int
s_verify_report(journal_t *j, const char *dir, uint64_t from_seq, uint64_t to_seq)
{
    uint64_t bad_seq = 0;
    journal_verify_stats_t st;
    int rc = journal_verify(j, from_seq, to_seq, &bad_seq, &st);
    if (rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN) {
        fprintf(stderr,
                S_PROG ": verify %s: FAILED at sequence %" PRIu64 ": %s (%" PRIu64
                       " entries before it are intact)\n",
                dir, bad_seq, journal_strerror(rc), st.entries_checked);
        return S_EXIT_VERIFY;
    }
    if (rc != 0) {
        fprintf(stderr, S_PROG ": verify %s: %s\n", dir, journal_strerror(rc));
        return S_EXIT_IO;
    }
    printf("%s: %" PRIu64 " entries checked (seq %" PRIu64 "..%" PRIu64 ", %" PRIu64
           " payload bytes): structure, sequence and hash chain intact\n",
           dir, st.entries_checked, st.first_seq, st.last_seq, st.payload_bytes);
    return S_EXIT_OK;
}

static bool
s_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Reports a failed check of an export file (verify, import) and returns the exit status. */
static int
s_export_failed(const char *what, const char *path, int rc, const journal_export_info_t *info)
{
    if (rc == JOURNAL_EVERSION) {
        fprintf(stderr,
                S_PROG ": %s %s: not a cardledger export file (or one of a later version)\n", what,
                path);
        return S_EXIT_IO;
    }
    if ((rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN) && info->bad_seq != 0) {
        fprintf(stderr,
                S_PROG ": %s %s: FAILED at sequence %" PRIu64 ": %s (%" PRIu64
                       " entries before it are intact)\n",
                what, path, info->bad_seq, journal_strerror(rc), info->bad_seq - 1);
    } else if (rc == JOURNAL_ECORRUPT) {
        fprintf(stderr,
                S_PROG ": %s %s: FAILED: the file is cut short, or its header, trailer or "
                       "checksum is damaged\n",
                what, path);
    } else {
        fprintf(stderr, S_PROG ": %s %s: %s\n", what, path, journal_strerror(rc));
    }
    return s_exit_for(rc);
}

/* Prints what an export says of itself: entries, source journal, hashes. */
static void
s_export_report(const char *path, const journal_export_info_t *info)
{
    char buf[S_TIME_BUF_SIZE];
    printf("%s: %" PRIu64 " entries (seq 1..%" PRIu64 ", %" PRIu64 " payload bytes) exported %s"
           " from journal ",
           path, info->entries, info->entries, info->payload_bytes,
           s_iso_time(info->exported_at_us, buf) ? buf : "?");
    s_hex(stdout, info->journal_id, JOURNAL_ID_SIZE);
    printf("; the source's hash of the last entry ");
    s_hex(stdout, info->source_hash, JOURNAL_HASH_SIZE);
    printf("; structure, sequence, hash chain and checksum intact\n");
}

static int
s_cmd_verify(int argc, char **argv)
{
    struct s_args a;
    int status = s_parse_args(argc, argv, true, false, false, &a);
    if (status != S_EXIT_OK) {
        return status < 0 ? S_EXIT_OK : status;
    }
    if (s_is_file(a.dir)) {
        if (a.from_seq != 0 || a.to_seq != 0) {
            s_usage_error("verify: an export file is checked whole (no --from or --to)");
            return S_EXIT_USAGE;
        }
        journal_export_info_t info;
        int rc = journal_export_check(a.dir, &info);
        if (rc != 0) {
            return s_export_failed("verify", a.dir, rc, &info);
        }
        s_export_report(a.dir, &info);
        return S_EXIT_OK;
    }
    journal_t *j = NULL;
    status = s_open(a.dir, &j);
    if (status != S_EXIT_OK) {
        return status;
    }
    status = s_verify_report(j, a.dir, a.from_seq, a.to_seq);
    journal_close(&j);
    return status;
}

static int
s_cmd_copy(int argc, char **argv)
{
    struct s_args a;
    int status = s_parse_args(argc, argv, false, false, true, &a);
    if (status != S_EXIT_OK) {
        return status < 0 ? S_EXIT_OK : status;
    }
    journal_t *j = NULL;
    status = s_open(a.dir, &j);
    if (status != S_EXIT_OK) {
        return status;
    }
    int rc = journal_copy(j, a.dest);
    journal_close(&j);
    if (rc != 0) {
        fprintf(stderr, S_PROG ": copy %s to %s: %s\n", a.dir, a.dest, journal_strerror(rc));
        return S_EXIT_IO;
    }
    status = s_open(a.dest, &j);
    if (status != S_EXIT_OK) {
        return status;
    }
    printf("copied %s to %s\n", a.dir, a.dest);
    status = s_verify_report(j, a.dest, 0, 0);
    journal_close(&j);
    return status;
}

/* An export's payload: the entry's event with codes masked and PIN and claim hashes left out. */
static int
s_export_entry(const journal_entry_t *e, uint8_t *out, size_t cap, size_t *out_len, void *ctx)
{
    int *codec_rc = ctx;
    *codec_rc = codec_event_export(e->payload, e->payload_len, out, cap, out_len);
    return *codec_rc;
}

static int
s_cmd_export(int argc, char **argv)
{
    struct s_args a;
    int status = s_parse_args(argc, argv, true, false, true, &a);
    if (status != S_EXIT_OK) {
        return status < 0 ? S_EXIT_OK : status;
    }
    if (a.from_seq > 1) {
        s_usage_error("export: an export starts at sequence 1 (only --to is an option)");
        return S_EXIT_USAGE;
    }
    journal_t *j = NULL;
    status = s_open(a.dir, &j);
    if (status != S_EXIT_OK) {
        return status;
    }
    journal_export_info_t info;
    int codec_rc = 0;
    int rc = journal_export(j, a.to_seq, a.dest, s_export_entry, &codec_rc, &info);
    journal_close(&j);
    if (rc == 0) {
        s_export_report(a.dest, &info);
        return S_EXIT_OK;
    }
    if (codec_rc != 0) {
        fprintf(stderr, S_PROG ": export %s: sequence %" PRIu64 ": %s; nothing written\n", a.dir,
                info.bad_seq, codec_strerror(codec_rc));
        return S_EXIT_VERIFY;
    }
    if (rc == -EEXIST) {
        fprintf(stderr, S_PROG ": export: %s exists; an export never overwrites a file\n", a.dest);
        return S_EXIT_IO;
    }
    if (rc == JOURNAL_ENOTFOUND) {
        fprintf(stderr, S_PROG ": export %s: --to %" PRIu64 " is past the journal's head\n", a.dir,
                a.to_seq);
        return S_EXIT_IO; /* as verify's range beyond the head */
    }
    if ((rc == JOURNAL_ECORRUPT || rc == JOURNAL_ECHAIN) && info.bad_seq != 0) {
        fprintf(stderr, S_PROG ": export %s: sequence %" PRIu64 ": %s; nothing written\n", a.dir,
                info.bad_seq, journal_strerror(rc));
        return S_EXIT_VERIFY;
    }
    fprintf(stderr, S_PROG ": export %s to %s: %s\n", a.dir, a.dest, journal_strerror(rc));
    return s_exit_for(rc);
}

static int
s_cmd_import(int argc, char **argv)
{
    struct s_args a;
    int status = s_parse_args(argc, argv, false, false, true, &a);
    if (status != S_EXIT_OK) {
        return status < 0 ? S_EXIT_OK : status;
    }
    /* The whole file is checked before DEST is made: a bad file creates nothing. */
    journal_export_info_t info;
    int rc = journal_export_check(a.dir, &info);
    if (rc != 0) {
        return s_export_failed("import", a.dir, rc, &info);
    }
    char data[4096], lock[4096];
    if (snprintf(data, sizeof(data), "%s/data.mdb", a.dest) >= (int)sizeof(data) ||
        snprintf(lock, sizeof(lock), "%s/lock.mdb", a.dest) >= (int)sizeof(lock)) {
        fprintf(stderr, S_PROG ": import: the path %s is too long\n", a.dest);
        return S_EXIT_USAGE;
    }
    if (s_is_file(data)) {
        fprintf(stderr, S_PROG ": import: %s already holds a journal\n", a.dest);
        return S_EXIT_IO;
    }
    struct stat sb;
    bool made_dir = stat(a.dest, &sb) != 0;
    journal_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    journal_t *j = NULL;
    rc = journal_open(a.dest, &opts, &j);
    if (rc == 0) {
        rc = journal_import(a.dir, j, &info);
    }
    if (rc != 0) {
        journal_close(&j);
        /* A failure after the check (a full disk) leaves no half journal behind. */
        (void)unlink(data);
        (void)unlink(lock);
        if (made_dir)
            (void)rmdir(a.dest);
        fprintf(stderr, S_PROG ": import %s into %s: %s; nothing left there\n", a.dir, a.dest,
                journal_strerror(rc));
        return s_exit_for(rc);
    }
    printf("imported %s into %s\n", a.dir, a.dest);
    status = s_verify_report(j, a.dest, 0, 0);
    journal_close(&j);
    return status;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    opterr = 0;
    int c;
    /* '+': stop at the command; its own options are parsed by the subcommand. */
    while ((c = getopt_long(argc, argv, "+hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(s_usage, stdout);
            return S_EXIT_OK;
        case 'V':
            printf(S_PROG " %s\n", CARDLEDGER_VERSION);
            return S_EXIT_OK;
        default:
            s_usage_error("%s: no such option", argv[optind - 1]);
            return S_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        s_usage_error("%s", "no command given");
        return S_EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    if (strcmp(cmd, "stat") == 0) {
        return s_cmd_stat(sub_argc, sub_argv);
    }
    if (strcmp(cmd, "dump") == 0) {
        return s_cmd_dump(sub_argc, sub_argv);
    }
    if (strcmp(cmd, "verify") == 0) {
        return s_cmd_verify(sub_argc, sub_argv);
    }
    if (strcmp(cmd, "copy") == 0) {
        return s_cmd_copy(sub_argc, sub_argv);
    }
    if (strcmp(cmd, "export") == 0) {
        return s_cmd_export(sub_argc, sub_argv);
    }
    if (strcmp(cmd, "import") == 0) {
        return s_cmd_import(sub_argc, sub_argv);
    }
    s_usage_error("unknown command '%s'", cmd);
    return S_EXIT_USAGE;
}
