/*
 * test-journal: the journal library and the cardledger-journal tool, end to end on disk.
 *
 * Each test gets its own directory under one mkdtemp() root (in $TMPDIR or /tmp) that is
 * removed at the end. Checks use this file's CHECK macros, never assert(), so they stay in
 * NDEBUG builds; a failed check prints file:line and ends that test. Multi-process tests fork
 * a reader or a writer child that opens its own journal (a journal_t never crosses fork()).
 * The tool is found through $CARDLEDGER_JOURNAL_TOOL or $CARDLEDGER_BUILD_ROOT (set by
 * tests/meson.build). Run one test by naming it (or part of its name) on the command line.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cardledger-config.h"
#include "codec.h"
#include "ahead.h"
#include "export.h"
#include "journal.h"
#include "journal-format.h"

/* ---- A tiny test harness ------------------------------------------------------------------ */

static bool s_test_failed;
static char s_root[PATH_MAX];     /* mkdtemp root, removed at exit */
static char s_test_dir[PATH_MAX]; /* this test's directory */

static void s_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    s_test_failed = true;
}

#define CHECK(cond)                                                \
    do {                                                           \
        if (!(cond)) {                                             \
            s_fail(__FILE__, __LINE__, "check failed: %s", #cond); \
            return;                                                \
        }                                                          \
    } while (0)

#define CHECK_RC(expr, want)                                                                \
    do {                                                                                    \
        int rc_ = (expr);                                                                   \
        int want_ = (want);                                                                 \
        if (rc_ != want_) {                                                                 \
            s_fail(__FILE__, __LINE__, "%s returned %d (%s), expected %d (%s)", #expr, rc_, \
                   journal_strerror(rc_), want_, journal_strerror(want_));                  \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, 0)

#define CHECK_U64(got, want)                                                                       \
    do {                                                                                           \
        uint64_t got_ = (got);                                                                     \
        uint64_t want_ = (want);                                                                   \
        if (got_ != want_) {                                                                       \
            s_fail(__FILE__, __LINE__, "%s is %" PRIu64 ", expected %" PRIu64, #got, got_, want_); \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Joins @p dir and @p name into @p dst (PATH_MAX bytes); a path that long is a broken test
 * setup, not a test result, so it ends the run. */
static void
s_join(char *dst, const char *dir, const char *name)
{
    int n = snprintf(dst, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(2);
    }
}

/* A path inside this test's directory; a few rotating buffers so calls can be combined. */
static const char *
s_path(const char *name)
{
    static char bufs[8][PATH_MAX];
    static unsigned next;
    char *b = bufs[next++ % 8];
    s_join(b, s_test_dir, name);
    return b;
}

/* ---- Helpers ------------------------------------------------------------------------------- */

#define S_TS_BASE_US      INT64_C(1700000000000000) /* 2023-11-14T22:13:20Z */
#define S_MARKER_LEN      19u                       /* "entry-000123-marker" */
#define S_PAYLOAD_LEN     60u                       /* a typical small event */
#define S_CHILD_TIMEOUT_S 90

/* The payload of entry @p seq: "entry-%06u-marker" then letters, so every entry's marker is
 * unique in the file and easy to find. s_payload_at() gives byte @p i of it. */
static size_t
s_payload_head(uint64_t seq, char head[32])
{
    int n = snprintf(head, 32, "entry-%06" PRIu64 "-marker", seq);
    return n > 0 && n < 32 ? (size_t)n : 0;
}

static uint8_t
s_payload_at(uint64_t seq, const char *head, size_t head_len, size_t i)
{
    return i < head_len ? (uint8_t)head[i] : (uint8_t)('a' + (seq + i) % 26);
}

static void
s_payload(uint64_t seq, size_t len, uint8_t *buf)
{
    char head[32];
    size_t hn = s_payload_head(seq, head);
    for (size_t i = 0; i < len; i++) {
        buf[i] = s_payload_at(seq, head, hn, i);
    }
}

/* Whether an entry carries the payload s_payload() makes for its sequence (thread-safe). */
static bool
s_payload_ok(const journal_entry_t *e, size_t len)
{
    if (e->payload_len != len) {
        return false;
    }
    char head[32];
    size_t hn = s_payload_head(e->seq, head);
    const uint8_t *p = e->payload;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != s_payload_at(e->seq, head, hn, i)) {
            return false;
        }
    }
    return true;
}

static int
s_open(const char *dir, bool read_only, uint64_t map_size_bytes, journal_t **out)
{
    journal_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.read_only = read_only;
    opts.map_size_bytes = map_size_bytes;
    return journal_open(dir, &opts, out);
}

/* Appends entries head+1 .. head+n with payloads of @p len bytes, in one transaction. */
static int
s_append_n(journal_t *j, size_t n, size_t len, journal_head_t *out_head)
{
    journal_head_t head;
    int rc = journal_head(j, &head);
    if (rc != 0) {
        return rc;
    }
    journal_record_t *recs = calloc(n, sizeof(*recs));
    uint8_t *bufs = malloc(n * (len > 0 ? len : 1));
    if (recs == NULL || bufs == NULL) {
        free(recs);
        free(bufs);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = head.seq + 1 + i;
        s_payload(seq, len, bufs + i * len);
        recs[i].timestamp_us = S_TS_BASE_US + (int64_t)seq;
        recs[i].payload = bufs + i * len;
        recs[i].payload_len = len;
    }
    rc = journal_append(j, recs, n, out_head);
    free(recs);
    free(bufs);
    return rc;
}

/* Reads every entry from @p from_seq with a reader; true if they are exactly from..to with
 * the payloads s_payload() makes. */
static bool
s_read_all_ok(journal_t *j, uint64_t from_seq, uint64_t to_seq, size_t len)
{
    journal_reader_t *r = NULL;
    if (journal_reader_open(j, from_seq, &r) != 0) {
        return false;
    }
    uint64_t expect = from_seq;
    journal_entry_t e;
    int rc = 0;
    bool ok = true;
    while (ok && (rc = journal_reader_next(r, &e)) == 0) {
        ok = e.seq == expect && e.timestamp_us == S_TS_BASE_US + (int64_t)e.seq &&
             s_payload_ok(&e, len);
        expect++;
    }
    ok = ok && rc == JOURNAL_END && expect == to_seq + 1;
    journal_reader_close(&r);
    return ok;
}

static bool
s_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

static uint8_t *
s_read_file(const char *path, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 1 << 16;
    size_t len = 0;
    uint8_t *buf = malloc(cap + 1);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            uint8_t *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                free(buf);
            }
            buf = nb;
        }
    }
    fclose(f);
    if (buf != NULL) {
        buf[len] = '\0';
        *out_len = len;
    }
    return buf;
}

/* Finds the single occurrence of @p marker in @p path and XORs the byte at marker + offset
 * with 0x01. Returns false if the marker is missing or occurs more than once. */
static bool
s_flip_byte(const char *path, const char *marker, long offset)
{
    size_t len = 0;
    uint8_t *data = s_read_file(path, &len);
    if (data == NULL) {
        return false;
    }
    size_t mlen = strlen(marker);
    const uint8_t *hit = memmem(data, len, marker, mlen);
    bool ok = hit != NULL && memmem(hit + 1, len - (size_t)(hit + 1 - data), marker, mlen) == NULL;
    long pos = ok ? (long)(hit - data) + offset : -1;
    ok = ok && pos >= 0 && (size_t)pos < len;
    if (ok) {
        uint8_t b = (uint8_t)(data[pos] ^ 0x01);
        int fd = open(path, O_WRONLY);
        ok = fd >= 0 && pwrite(fd, &b, 1, pos) == 1;
        ok = fd >= 0 && fsync(fd) == 0 && ok;
        if (fd >= 0) {
            close(fd);
        }
    }
    free(data);
    return ok;
}

/* ---- Export files --------------------------------------------------------------------------- */

/* The export transform of the journal module's own tests: the payload as it is. */
static int
s_export_same(const journal_entry_t *e, uint8_t *out, size_t cap, size_t *out_len, void *ctx)
{
    (void)ctx;
    if (e->payload_len > cap)
        return -ENOSPC;
    memcpy(out, e->payload, e->payload_len);
    *out_len = e->payload_len;
    return 0;
}

/* Fails at the entry whose sequence *ctx names. */
static int
s_export_fail_at(const journal_entry_t *e, uint8_t *out, size_t cap, size_t *out_len, void *ctx)
{
    if (e->seq == *(const uint64_t *)ctx)
        return 42;
    return s_export_same(e, out, cap, out_len, NULL);
}

static bool
s_write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    bool ok = f != NULL && fwrite(p, 1, n, f) == n;
    return f != NULL && fclose(f) == 0 && ok;
}

/* Export entries are 40 + payload bytes after the 64-byte header. */
#define S_EXPORT_LEN 100u
#define S_EXPORT_AT(seq) \
    (JOURNAL_EXPORT_HEADER_SIZE + ((seq)-1) * (JOURNAL_HEADER_SIZE + S_EXPORT_LEN))

/* An export of the payloads as they are has the journal's own chain, checks out, and imports
 * into a journal equal to the source: the same entries, the same head hash. So does an export
 * of an empty journal, and one that stops at --to. */
static void
test_export_of_the_same_payloads_checks_out_and_imports_as_the_journal(void)
{
    journal_t *j = NULL, *dest = NULL;
    CHECK_OK(s_open(s_path("src"), false, 0, &j));
    char file[PATH_MAX], empty[PATH_MAX], part[PATH_MAX];
    s_join(file, s_test_dir, "all.export");
    s_join(empty, s_test_dir, "empty.export");
    s_join(part, s_test_dir, "part.export");
    journal_export_info_t info, seen;
    CHECK_OK(journal_export(j, 0, empty, s_export_same, NULL, &info));
    CHECK_U64(info.entries, 0);
    CHECK_OK(journal_export_check(empty, &seen));
    CHECK_U64(seen.entries, 0);

    journal_head_t head, ten;
    CHECK_OK(s_append_n(j, 10, S_EXPORT_LEN, &ten));
    CHECK_OK(s_append_n(j, 290, S_EXPORT_LEN, &head));
    CHECK_OK(journal_export(j, 0, file, s_export_same, NULL, &info));
    CHECK_U64(info.entries, 300);
    CHECK_U64(info.payload_bytes, 300 * S_EXPORT_LEN);
    CHECK(memcmp(info.last_hash, head.hash, JOURNAL_HASH_SIZE) == 0);
    CHECK(memcmp(info.source_hash, head.hash, JOURNAL_HASH_SIZE) == 0);
    journal_stat_t st;
    CHECK_OK(journal_stat(j, &st));
    CHECK_OK(journal_export_check(file, &seen));
    CHECK_U64(seen.entries, 300);
    CHECK(memcmp(seen.journal_id, st.journal_id, JOURNAL_ID_SIZE) == 0);
    CHECK(seen.exported_at_us == info.exported_at_us);
    CHECK(memcmp(seen.source_hash, head.hash, JOURNAL_HASH_SIZE) == 0);
    size_t len = 0;
    uint8_t *bytes = s_read_file(file, &len);
    CHECK(bytes != NULL);
    free(bytes);
    CHECK_U64(len, S_EXPORT_AT(301) + JOURNAL_EXPORT_TRAILER_SIZE);

    CHECK_OK(journal_export(j, 10, part, s_export_same, NULL, &info));
    CHECK_U64(info.entries, 10);
    CHECK(memcmp(info.source_hash, ten.hash, JOURNAL_HASH_SIZE) == 0);
    journal_close(&j);

    CHECK_OK(s_open(s_path("dest"), false, 0, &dest));
    CHECK_OK(journal_import(file, dest, &seen));
    journal_head_t got;
    CHECK_OK(journal_head(dest, &got));
    CHECK_U64(got.seq, 300);
    CHECK(memcmp(got.hash, head.hash, JOURNAL_HASH_SIZE) == 0);
    CHECK(s_read_all_ok(dest, 1, 300, S_EXPORT_LEN));
    /* Into a journal that is not empty: refused, nothing added. */
    CHECK_RC(journal_import(part, dest, &seen), JOURNAL_EINVAL);
    CHECK_OK(journal_head(dest, &got));
    CHECK_U64(got.seq, 300);
    journal_close(&dest);
}

/* Every kind of damage to an export is refused: in an entry with its sequence number named, in
 * the header, trailer or checksum as the file's; a file that is no export as such. An import of
 * a damaged file writes nothing. */
static void
test_damaged_export_is_refused_with_the_entry_named_and_imports_nothing(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("src"), false, 0, &j));
    CHECK_OK(s_append_n(j, 20, S_EXPORT_LEN, NULL));
    char file[PATH_MAX], bad[PATH_MAX];
    s_join(file, s_test_dir, "good.export");
    s_join(bad, s_test_dir, "bad.export");
    CHECK_OK(journal_export(j, 0, file, s_export_same, NULL, NULL));
    journal_close(&j);
    size_t len = 0;
    uint8_t *good = s_read_file(file, &len);
    CHECK(good != NULL);
    uint8_t *copy = malloc(len + 1);
    CHECK(copy != NULL);
    static const struct {
        size_t at;    /* the byte flipped (SIZE_MAX: the file cut one byte short; SIZE_MAX - 1:
                         a byte added) */
        int rc;       /* what the check returns */
        uint64_t seq; /* the entry it names (0: the file's parts) */
    } cases[] = {
        { S_EXPORT_AT(7) + JOURNAL_HEADER_SIZE + 5, JOURNAL_ECHAIN, 7 }, /* a payload byte */
        { S_EXPORT_AT(12) + 24, JOURNAL_ECHAIN, 12 },                    /* a stored hash */
        { S_EXPORT_AT(3), JOURNAL_ECORRUPT, 3 },                         /* a sequence */
        { S_EXPORT_AT(20) + 16, JOURNAL_ECORRUPT, 20 },                  /* a payload length */
        { 50, JOURNAL_ECORRUPT, 0 },                                     /* reserved header */
        { 20, JOURNAL_ECORRUPT, 0 },                   /* the source journal's id */
        { S_EXPORT_AT(21) + 8, JOURNAL_ECORRUPT, 0 },  /* the trailer's count */
        { S_EXPORT_AT(21) + 40, JOURNAL_ECORRUPT, 0 }, /* the trailer's source hash */
        { S_EXPORT_AT(21) + 63, JOURNAL_ECORRUPT, 0 }, /* the checksum */
        { 8, JOURNAL_EVERSION, 0 },                    /* the version */
        { 0, JOURNAL_EVERSION, 0 },                    /* the magic */
        { SIZE_MAX, JOURNAL_ECORRUPT, 0 },             /* one byte short: no trailer there */
        { SIZE_MAX - 1, JOURNAL_ECORRUPT, 0 },         /* one byte more: no trailer there */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(copy, good, len);
        size_t n = len;
        if (cases[i].at == SIZE_MAX)
            n--;
        else if (cases[i].at == SIZE_MAX - 1)
            copy[n++] = 0; /* copy has a byte of room */
        else
            copy[cases[i].at] ^= 0x01;
        CHECK(s_write_file(bad, copy, n));
        journal_export_info_t info;
        int rc = journal_export_check(bad, &info);
        if (rc != cases[i].rc || info.bad_seq != cases[i].seq) {
            s_fail(__FILE__, __LINE__, "case %zu: returned %d (%s) at sequence %" PRIu64, i, rc,
                   journal_strerror(rc), info.bad_seq);
            break;
        }
        char dest_name[32];
        snprintf(dest_name, sizeof(dest_name), "dest%zu", i);
        journal_t *dest = NULL;
        CHECK_OK(s_open(s_path(dest_name), false, 0, &dest));
        CHECK_RC(journal_import(bad, dest, &info), cases[i].rc);
        journal_head_t h;
        CHECK_OK(journal_head(dest, &h));
        journal_close(&dest);
        CHECK_U64(h.seq, 0);
    }
    CHECK(s_write_file(bad, (const uint8_t *)"hello", 5));
    CHECK_RC(journal_export_check(bad, NULL), JOURNAL_EVERSION);
    free(copy);
    free(good);
}

/* An export never overwrites a file, and a failed one leaves none (not even its .tmp). */
static void
test_export_never_overwrites_and_a_failed_one_leaves_no_file(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("src"), false, 0, &j));
    CHECK_OK(s_append_n(j, 20, S_EXPORT_LEN, NULL));
    char file[PATH_MAX], tmp[PATH_MAX + 8];
    s_join(file, s_test_dir, "x.export");
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    CHECK(s_write_file(file, (const uint8_t *)"keep", 4));
    CHECK_RC(journal_export(j, 0, file, s_export_same, NULL, NULL), -EEXIST);
    size_t len = 0;
    uint8_t *kept = s_read_file(file, &len);
    CHECK(kept != NULL && len == 4 && memcmp(kept, "keep", 4) == 0);
    free(kept);
    CHECK(unlink(file) == 0);
    journal_export_info_t info;
    uint64_t fail_at = 7;
    CHECK_RC(journal_export(j, 0, file, s_export_fail_at, &fail_at, &info), 42);
    CHECK_U64(info.bad_seq, 7);
    struct stat sb;
    CHECK(stat(file, &sb) != 0 && errno == ENOENT);
    CHECK(stat(tmp, &sb) != 0 && errno == ENOENT);
    CHECK_RC(journal_export(j, 21, file, s_export_same, NULL, NULL), JOURNAL_ENOTFOUND);
    CHECK(stat(file, &sb) != 0 && errno == ENOENT);
    /* A PATH.tmp that is there already (a link to another file, say) is never written through. */
    char victim[PATH_MAX];
    s_join(victim, s_test_dir, "victim");
    CHECK(s_write_file(victim, (const uint8_t *)"keep", 4));
    CHECK(symlink(victim, tmp) == 0);
    CHECK_RC(journal_export(j, 0, file, s_export_same, NULL, NULL), -EEXIST);
    kept = s_read_file(victim, &len);
    CHECK(kept != NULL && len == 4 && memcmp(kept, "keep", 4) == 0);
    free(kept);
    CHECK(stat(file, &sb) != 0 && errno == ENOENT);
    CHECK(unlink(tmp) == 0);
    /* The export itself is the owner's only. */
    CHECK_OK(journal_export(j, 0, file, s_export_same, NULL, NULL));
    CHECK(stat(file, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK(lstat(tmp, &sb) != 0 && errno == ENOENT);
    journal_close(&j);
}

/* ---- Running the tool ---------------------------------------------------------------------- */

struct s_tool_result {
    int status; /* exit status, or -1 if it did not exit normally */
    char *out;  /* its stdout */
    char *err;  /* its stderr */
};

static const char *
s_tool_path(void)
{
    static char path[PATH_MAX];
    const char *p = getenv("CARDLEDGER_JOURNAL_TOOL");
    if (p != NULL && *p != '\0') {
        return p;
    }
    const char *root = getenv("CARDLEDGER_BUILD_ROOT");
    if (root == NULL || *root == '\0') {
        return NULL;
    }
    s_join(path, root, "tools/cardledger-journal");
    return path;
}

static void
s_tool_result_free(struct s_tool_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

#define S_TOOL_ARGS_MAX 15

/* Runs the tool with the NULL-terminated arguments @p args, capturing its output. */
static bool
s_tool_argv(struct s_tool_result *res, const char *const *args)
{
    const char *tool = s_tool_path();
    memset(res, 0, sizeof(*res));
    res->status = -1;
    if (tool == NULL || access(tool, X_OK) != 0) {
        fprintf(stderr, "  cannot find the tool (set CARDLEDGER_JOURNAL_TOOL or build it)\n");
        return false;
    }
    const char *argv[S_TOOL_ARGS_MAX + 2];
    int argc = 0;
    argv[argc++] = tool;
    for (; args[argc - 1] != NULL && argc <= S_TOOL_ARGS_MAX; argc++) {
        argv[argc] = args[argc - 1];
    }
    argv[argc] = NULL;

    char out_path[PATH_MAX];
    char err_path[PATH_MAX];
    s_join(out_path, s_test_dir, "tool.out");
    s_join(err_path, s_test_dir, "tool.err");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        return false;
    }
    if (pid == 0) {
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0) {
            _exit(126);
        }
        execv(tool, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    int ws = 0;
    if (waitpid(pid, &ws, 0) != pid) {
        return false;
    }
    res->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    size_t n = 0;
    res->out = (char *)s_read_file(out_path, &n);
    res->err = (char *)s_read_file(err_path, &n);
    return res->out != NULL && res->err != NULL;
}

/* Runs the tool with the arguments given (NULL-terminated). */
static bool
s_tool(struct s_tool_result *res, ...)
{
    const char *args[S_TOOL_ARGS_MAX + 1];
    size_t n = 0;
    va_list ap;
    va_start(ap, res);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < S_TOOL_ARGS_MAX) {
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return s_tool_argv(res, args);
}

/* ---- Child processes ----------------------------------------------------------------------- */

static int64_t
s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the child writes a byte on @p fd (or exits); false on timeout. */
static bool
s_wait_ready(int fd)
{
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, S_CHILD_TIMEOUT_S * 1000) != 1) {
        return false;
    }
    char c;
    return read(fd, &c, 1) == 1;
}

static int
s_wait_child(pid_t pid)
{
    int ws = 0;
    if (waitpid(pid, &ws, 0) != pid) {
        return -1;
    }
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

/* Iterates the journal again and again, from the start and from the middle, checking order,
 * gap-freeness and payloads (the reader checks structure and chain), until it has seen
 * @p total entries. Signals @p ready_fd (if >= 0) after the first pass; gives up when @p stop
 * (if not NULL) is set. Returns 0, or a code naming the check that failed. Used by reader
 * processes and reader threads. */
static int
s_reader_loop(journal_t *j, uint64_t total, int ready_fd, const atomic_bool *stop)
{
    int64_t deadline = s_mono_ms() + S_CHILD_TIMEOUT_S * 1000;
    uint64_t seen = 0;
    bool signalled = ready_fd < 0;
    for (unsigned pass = 0; seen < total; pass++) {
        if (s_mono_ms() > deadline || (stop != NULL && atomic_load(stop))) {
            return 12;
        }
        uint64_t from = (pass % 2 == 0 || seen == 0) ? 1 : seen / 2 + 1;
        journal_reader_t *r = NULL;
        if (journal_reader_open(j, from, &r) != 0) {
            return 13;
        }
        uint64_t expect = from;
        journal_entry_t e;
        int rc;
        while ((rc = journal_reader_next(r, &e)) == 0) {
            if (e.seq != expect) {
                journal_reader_close(&r);
                return 14;
            }
            if (e.payload_len < S_MARKER_LEN || !s_payload_ok(&e, e.payload_len)) {
                journal_reader_close(&r);
                return 15;
            }
            expect++;
        }
        journal_reader_close(&r);
        if (rc != JOURNAL_END) {
            fprintf(stderr, "  reader: %s\n", journal_strerror(rc));
            return 16;
        }
        if (expect - 1 < seen) {
            return 17; /* the journal went backwards */
        }
        seen = expect - 1;
        if (!signalled) {
            signalled = write(ready_fd, "r", 1) == 1;
        }
    }
    journal_verify_stats_t vs;
    uint64_t bad = 0;
    if (journal_verify(j, 0, 0, &bad, &vs) != 0 || vs.entries_checked < total) {
        return 18;
    }
    return 0;
}

/* Child: opens the journal read-only and runs s_reader_loop(); also checks that this process
 * had to adopt the writer's grown map (MDB_MAP_RESIZED). Returns an exit code. */
static int
s_child_reader(const char *dir, uint64_t total, int ready_fd)
{
    journal_t *j = NULL;
    if (s_open(dir, true, 0, &j) != 0) {
        return 10;
    }
    journal_stat_t st0;
    if (journal_stat(j, &st0) != 0) {
        return 11;
    }
    int rc = s_reader_loop(j, total, ready_fd, NULL);
    if (rc != 0) {
        return rc;
    }
    journal_stat_t st1;
    if (journal_stat(j, &st1) != 0 || st1.map_size_bytes <= st0.map_size_bytes) {
        return 19; /* this process never had to adopt the writer's larger map */
    }
    journal_close(&j);
    return 0;
}

/* Child: appends @p batches batches (0: until killed) of @p per_batch entries, signalling
 * after the first. */
static int
s_child_writer(const char *dir, unsigned batches, unsigned per_batch, size_t len, int ready_fd)
{
    journal_t *j = NULL;
    if (s_open(dir, false, JOURNAL_MAP_SIZE_MIN, &j) != 0) {
        return 20;
    }
    for (unsigned b = 0; batches == 0 || b < batches; b++) {
        if (s_append_n(j, per_batch, len, NULL) != 0) {
            return 21;
        }
        if (b == 0 && ready_fd >= 0 && write(ready_fd, "w", 1) != 1) {
            return 22;
        }
    }
    journal_close(&j);
    return 0;
}

/* ---- Tests: opening, appending, reading ---------------------------------------------------- */

static void
test_open_creates_directory_and_empty_journal(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK(j != NULL);
    CHECK(!journal_is_read_only(j));
    CHECK(journal_env(j) != NULL);
    struct stat sb;
    CHECK(stat(s_path("j/data.mdb"), &sb) == 0);
    journal_head_t head;
    CHECK_OK(journal_head(j, &head));
    CHECK_U64(head.seq, 0);
    CHECK(s_all_zero(head.hash, JOURNAL_HASH_SIZE));
    journal_stat_t st;
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.format_version, JOURNAL_FORMAT_VERSION);
    CHECK_U64(st.entries, 0);
    CHECK(!s_all_zero(st.journal_id, JOURNAL_ID_SIZE));
    CHECK(st.created_us > S_TS_BASE_US);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);
    CHECK(j == NULL);
    journal_close(&j);   /* idempotent */
    journal_close(NULL); /* accepts NULL */
    journal_reader_t *r = NULL;
    journal_reader_close(&r);
    journal_reader_close(NULL);

    /* A reopen keeps the journal id. */
    CHECK_OK(s_open(s_path("j"), true, 0, &j));
    journal_stat_t st2;
    CHECK_OK(journal_stat(j, &st2));
    CHECK(memcmp(st.journal_id, st2.journal_id, JOURNAL_ID_SIZE) == 0);
    CHECK(st.created_us == st2.created_us);
    journal_close(&j);
}

static void
test_read_only_open_of_a_missing_journal_is_not_found(void)
{
    journal_t *j = (journal_t *)&s_test_failed; /* a sentinel that must stay untouched */
    journal_t *const sentinel = j;
    CHECK_RC(s_open(s_path("nope"), true, 0, &j), JOURNAL_ENOTFOUND);
    CHECK(j == sentinel);
    CHECK_RC(s_open(s_path("no/such/parent"), false, 0, &j), JOURNAL_ENOTFOUND);
    CHECK(j == sentinel);
    struct stat sb;
    CHECK(stat(s_path("nope"), &sb) != 0);
}

static void
test_options_out_of_range_are_refused(void)
{
    journal_t *j = NULL;
    journal_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.max_dbs = 4;
    CHECK_RC(journal_open(s_path("j"), &opts, &j), JOURNAL_EINVAL);
    opts.max_dbs = JOURNAL_MAX_DBS_MAX + 1;
    CHECK_RC(journal_open(s_path("j"), &opts, &j), JOURNAL_EINVAL);
    memset(&opts, 0, sizeof(opts));
    opts.map_size_bytes = 4096;
    CHECK_RC(journal_open(s_path("j"), &opts, &j), JOURNAL_EINVAL);
    opts.map_size_bytes = 8 * JOURNAL_MAP_SIZE_MIN;
    opts.map_size_max_bytes = 4 * JOURNAL_MAP_SIZE_MIN;
    CHECK_RC(journal_open(s_path("j"), &opts, &j), JOURNAL_EINVAL);
    CHECK_RC(journal_open("", NULL, &j), JOURNAL_EINVAL);
    CHECK(j == NULL);
    /* The defaults are valid. */
    CHECK_OK(journal_open(s_path("j"), NULL, &j));
    journal_close(&j);
}

static void
test_append_then_reopen_keeps_entries_and_head(void)
{
    journal_t *j = NULL;
    journal_head_t head;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    CHECK_U64(head.seq, 10);
    CHECK(head.timestamp_us == S_TS_BASE_US + 10);
    CHECK(!s_all_zero(head.hash, JOURNAL_HASH_SIZE));
    CHECK(s_read_all_ok(j, 1, 10, S_PAYLOAD_LEN));
    journal_close(&j);

    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    journal_head_t again;
    CHECK_OK(journal_head(j, &again));
    CHECK(memcmp(&head, &again, sizeof(head)) == 0);
    CHECK(s_read_all_ok(j, 1, 10, S_PAYLOAD_LEN));
    journal_close(&j);

    CHECK_OK(s_open(s_path("j"), true, 0, &j));
    CHECK(journal_is_read_only(j));
    CHECK_OK(journal_head(j, &again));
    CHECK(memcmp(&head, &again, sizeof(head)) == 0);
    CHECK(s_read_all_ok(j, 1, 10, S_PAYLOAD_LEN));
    journal_close(&j);
}

static void
test_sequence_numbers_are_gap_free_across_batches_and_reopen(void)
{
    journal_t *j = NULL;
    journal_head_t head;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 1, S_PAYLOAD_LEN, &head));
    CHECK_U64(head.seq, 1);
    CHECK_OK(s_append_n(j, 5, S_PAYLOAD_LEN, &head));
    CHECK_U64(head.seq, 6);
    CHECK_OK(s_append_n(j, 7, S_PAYLOAD_LEN, &head));
    CHECK_U64(head.seq, 13);
    journal_close(&j);
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 3, S_PAYLOAD_LEN, &head));
    CHECK_U64(head.seq, 16);
    CHECK(s_read_all_ok(j, 1, 16, S_PAYLOAD_LEN));
    journal_verify_stats_t vs;
    CHECK_OK(journal_verify(j, 0, 0, NULL, &vs));
    CHECK_U64(vs.entries_checked, 16);
    journal_stat_t st;
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.entries, 16);
    CHECK_U64(st.first_seq, 1);
    CHECK_U64(st.head_seq, 16);
    journal_close(&j);
}

/* A fill that appends three entries, writes its own database, then fails. */
#define S_FILL_FAILURE -4242

static int
s_fill_three_then_fail(journal_txn_t *txn, void *ctx)
{
    int *runs = ctx;
    (*runs)++;
    uint8_t p[S_PAYLOAD_LEN];
    for (int i = 0; i < 3; i++) {
        journal_head_t h;
        journal_txn_head(txn, &h);
        s_payload(h.seq + 1, sizeof(p), p);
        int rc = journal_txn_append(txn, S_TS_BASE_US, p, sizeof(p), NULL);
        if (rc != 0) {
            return rc;
        }
    }
    MDB_dbi dbi;
    int mrc = mdb_dbi_open(journal_txn_mdb(txn), "test.state", MDB_CREATE, &dbi);
    if (mrc != 0) {
        return mrc;
    }
    MDB_val k = { 1, (void *)(uintptr_t) "k" };
    MDB_val v = { 1, (void *)(uintptr_t) "v" };
    mrc = mdb_put(journal_txn_mdb(txn), dbi, &k, &v, 0);
    return mrc != 0 ? mrc : S_FILL_FAILURE;
}

static void
test_failed_fill_leaves_no_trace_and_next_append_gets_next_seq(void)
{
    journal_t *j = NULL;
    journal_head_t head;
    journal_head_t after;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 5, S_PAYLOAD_LEN, &head));
    int runs = 0;
    journal_head_t untouched;
    memset(&untouched, 0xab, sizeof(untouched));
    CHECK_RC(journal_write(j, s_fill_three_then_fail, &runs, &untouched), S_FILL_FAILURE);
    CHECK(runs == 1);
    CHECK(untouched.seq == UINT64_C(0xabababababababab)); /* out param untouched on failure */
    CHECK_OK(journal_head(j, &after));
    CHECK(memcmp(&head, &after, sizeof(head)) == 0);
    CHECK(s_read_all_ok(j, 1, 5, S_PAYLOAD_LEN));

    /* Nothing of the failed transaction is on disk, not even the caller's database. */
    MDB_txn *txn = NULL;
    CHECK_OK(journal_read_txn_begin(j, &txn));
    MDB_dbi dbi;
    int mrc = mdb_dbi_open(txn, "test.state", 0, &dbi);
    journal_read_txn_end(j, &txn);
    CHECK(txn == NULL);
    CHECK(mrc == MDB_NOTFOUND);

    CHECK_OK(s_append_n(j, 1, S_PAYLOAD_LEN, &after));
    CHECK_U64(after.seq, 6);
    journal_close(&j);
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK(s_read_all_ok(j, 1, 6, S_PAYLOAD_LEN));
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);
}

static int
s_fill_entry_and_state(journal_txn_t *txn, void *ctx)
{
    uint64_t *seq = ctx;
    uint8_t p[S_PAYLOAD_LEN];
    journal_head_t h;
    journal_txn_head(txn, &h);
    s_payload(h.seq + 1, sizeof(p), p);
    int rc = journal_txn_append(txn, S_TS_BASE_US + (int64_t)h.seq + 1, p, sizeof(p), seq);
    if (rc != 0) {
        return rc;
    }
    MDB_dbi dbi;
    int mrc = mdb_dbi_open(journal_txn_mdb(txn), "test.state", MDB_CREATE, &dbi);
    if (mrc == 0) {
        MDB_val k = { 7, (void *)(uintptr_t) "applied" };
        MDB_val v = { sizeof(*seq), seq };
        mrc = mdb_put(journal_txn_mdb(txn), dbi, &k, &v, 0);
    }
    return mrc;
}

static void
test_fill_writes_its_own_database_in_the_same_transaction(void)
{
    journal_t *j = NULL;
    journal_head_t head;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    uint64_t seq = 0;
    CHECK_OK(journal_write(j, s_fill_entry_and_state, &seq, &head));
    CHECK_U64(seq, 1);
    CHECK_OK(journal_write(j, s_fill_entry_and_state, &seq, &head));
    CHECK_U64(seq, 2);
    CHECK_U64(head.seq, 2);
    journal_close(&j);

    CHECK_OK(s_open(s_path("j"), true, 0, &j));
    MDB_txn *txn = NULL;
    CHECK_OK(journal_read_txn_begin(j, &txn));
    MDB_dbi dbi;
    MDB_val k = { 7, (void *)(uintptr_t) "applied" };
    MDB_val v = { 0, NULL };
    int mrc = mdb_dbi_open(txn, "test.state", 0, &dbi);
    if (mrc == 0) {
        mrc = mdb_get(txn, dbi, &k, &v);
    }
    uint64_t applied = 0;
    if (mrc == 0 && v.mv_size == sizeof(applied)) {
        memcpy(&applied, v.mv_data, sizeof(applied));
    }
    journal_read_txn_end(j, &txn);
    CHECK(mrc == 0);
    CHECK_U64(applied, 2);
    CHECK(s_read_all_ok(j, 1, 2, S_PAYLOAD_LEN));
    journal_close(&j);
}

struct s_copy_ctx {
    journal_t *src;
    uint64_t from_seq;
    uint64_t to_seq;
};

static int
s_fill_copy_entries(journal_txn_t *txn, void *ctx)
{
    const struct s_copy_ctx *c = ctx;
    journal_reader_t *r = NULL;
    int rc = journal_reader_open(c->src, c->from_seq, &r);
    journal_entry_t e;
    while (rc == 0 && (rc = journal_reader_next(r, &e)) == 0 && e.seq <= c->to_seq) {
        rc = journal_txn_append_entry(txn, &e);
    }
    journal_reader_close(&r);
    return rc == JOURNAL_END || rc == 0 ? 0 : rc;
}

static void
test_append_entry_copies_a_journal_verbatim(void)
{
    journal_t *src = NULL;
    journal_t *dst = NULL;
    journal_head_t src_head;
    journal_head_t dst_head;
    CHECK_OK(s_open(s_path("src"), false, 0, &src));
    CHECK_OK(s_append_n(src, 20, S_PAYLOAD_LEN, &src_head));
    CHECK_OK(s_open(s_path("dst"), false, 0, &dst));
    struct s_copy_ctx c = { src, 1, 12 };
    CHECK_OK(journal_write(dst, s_fill_copy_entries, &c, &dst_head));
    CHECK_U64(dst_head.seq, 12);
    c.from_seq = 13;
    c.to_seq = UINT64_MAX;
    CHECK_OK(journal_write(dst, s_fill_copy_entries, &c, &dst_head));
    CHECK(memcmp(&src_head, &dst_head, sizeof(src_head)) == 0);
    CHECK(s_read_all_ok(dst, 1, 20, S_PAYLOAD_LEN));
    CHECK_OK(journal_verify(dst, 0, 0, NULL, NULL));
    journal_close(&src);
    journal_close(&dst);
}

struct s_entry_ctx {
    journal_entry_t e;
    int rc; /* what journal_txn_append_entry() said */
};

static int
s_fill_one_entry(journal_txn_t *txn, void *ctx)
{
    struct s_entry_ctx *c = ctx;
    c->rc = journal_txn_append_entry(txn, &c->e);
    return c->rc;
}

static void
test_append_entry_refuses_a_gap_and_a_bad_hash_and_changes_nothing(void)
{
    journal_t *src = NULL;
    journal_t *dst = NULL;
    CHECK_OK(s_open(s_path("src"), false, 0, &src));
    CHECK_OK(s_append_n(src, 3, S_PAYLOAD_LEN, NULL));
    CHECK_OK(s_open(s_path("dst"), false, 0, &dst));

    uint8_t buf[S_PAYLOAD_LEN];
    struct s_entry_ctx c;
    CHECK_OK(journal_read(src, 2, buf, sizeof(buf), &c.e));
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_EGAP); /* 2 onto empty */

    CHECK_OK(journal_read(src, 1, buf, sizeof(buf), &c.e));
    c.e.hash[7] ^= 0x40;
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_ECHAIN);
    c.e.hash[7] ^= 0x40;
    buf[30] ^= 0x01; /* payload changed, hash kept */
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_ECHAIN);
    buf[30] ^= 0x01;
    c.e.timestamp_us++; /* header changed, hash kept */
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_ECHAIN);
    c.e.timestamp_us--;
    c.e.flags = 1;
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_ECORRUPT);
    c.e.flags = 0;
    c.e.version = 2;
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_ECORRUPT);
    c.e.version = JOURNAL_ENTRY_VERSION;

    journal_head_t head;
    CHECK_OK(journal_head(dst, &head));
    CHECK_U64(head.seq, 0);

    CHECK_OK(journal_write(dst, s_fill_one_entry, &c, &head));
    CHECK_U64(head.seq, 1);
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_EGAP); /* 1 again */
    CHECK_OK(journal_read(src, 3, buf, sizeof(buf), &c.e));
    CHECK_RC(journal_write(dst, s_fill_one_entry, &c, NULL), JOURNAL_EGAP); /* skips 2 */
    CHECK_OK(journal_head(dst, &head));
    CHECK_U64(head.seq, 1);
    CHECK_OK(journal_verify(dst, 0, 0, NULL, NULL));
    journal_close(&src);
    journal_close(&dst);
}

static void
test_oversized_payload_or_batch_is_refused_and_changes_nothing(void)
{
    journal_t *j = NULL;
    journal_head_t head;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 2, S_PAYLOAD_LEN, &head));
    uint8_t *big = calloc(1, JOURNAL_PAYLOAD_MAX + 1);
    CHECK(big != NULL);
    journal_record_t recs[2] = {
        { S_TS_BASE_US, big, 10 },
        { S_TS_BASE_US, big, JOURNAL_PAYLOAD_MAX + 1 },
    };
    int rc_big = journal_append(j, recs, 2, NULL);
    recs[1].payload_len = JOURNAL_PAYLOAD_MAX;
    int rc_max = journal_append(j, recs, 2, NULL);
    recs[1].payload = NULL;
    int rc_null = journal_append(j, recs, 2, NULL);
    free(big);
    CHECK_RC(rc_big, JOURNAL_ETOOBIG);
    CHECK_OK(rc_max);
    CHECK_RC(rc_null, JOURNAL_EINVAL);
    CHECK_RC(journal_append(j, recs, 0, NULL), JOURNAL_EINVAL);
    CHECK_RC(journal_append(j, recs, JOURNAL_TXN_ENTRIES_MAX + 1, NULL), JOURNAL_ETOOBIG);
    journal_head_t after;
    CHECK_OK(journal_head(j, &after));
    CHECK_U64(after.seq, head.seq + 2);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);
}

static void
test_read_only_journal_refuses_writes(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 1, S_PAYLOAD_LEN, NULL));
    journal_close(&j);
    CHECK_OK(s_open(s_path("j"), true, 0, &j));
    CHECK_RC(s_append_n(j, 1, S_PAYLOAD_LEN, NULL), JOURNAL_EREADONLY);
    int runs = 0;
    CHECK_RC(journal_write(j, s_fill_three_then_fail, &runs, NULL), JOURNAL_EREADONLY);
    CHECK(runs == 0);
    journal_head_t head;
    CHECK_OK(journal_head(j, &head));
    CHECK_U64(head.seq, 1);
    journal_close(&j);
}

static void
test_verify_accepts_the_whole_chain_and_ranges(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 60, S_PAYLOAD_LEN, NULL));
    CHECK_OK(s_append_n(j, 40, S_PAYLOAD_LEN, NULL));
    journal_verify_stats_t vs;
    uint64_t bad = 99;
    CHECK_OK(journal_verify(j, 0, 0, &bad, &vs));
    CHECK_U64(bad, 0);
    CHECK_U64(vs.entries_checked, 100);
    CHECK_U64(vs.first_seq, 1);
    CHECK_U64(vs.last_seq, 100);
    CHECK_U64(vs.payload_bytes, 100 * S_PAYLOAD_LEN);
    CHECK_OK(journal_verify(j, 10, 20, &bad, &vs));
    CHECK_U64(vs.entries_checked, 11);
    CHECK_U64(vs.first_seq, 10);
    CHECK_U64(vs.last_seq, 20);
    CHECK_OK(journal_verify(j, 100, 100, NULL, &vs));
    CHECK_U64(vs.entries_checked, 1);
    CHECK_OK(journal_verify(j, 57, 0, NULL, &vs));
    CHECK_U64(vs.entries_checked, 44);
    CHECK_OK(journal_verify(j, 101, 0, NULL, &vs)); /* nothing new yet */
    CHECK_U64(vs.entries_checked, 0);
    CHECK_RC(journal_verify(j, 102, 0, NULL, NULL), JOURNAL_ENOTFOUND);
    CHECK_RC(journal_verify(j, 1, 101, NULL, NULL), JOURNAL_ENOTFOUND);
    CHECK_RC(journal_verify(j, 20, 10, NULL, NULL), JOURNAL_EINVAL);
    journal_close(&j);
    CHECK_OK(s_open(s_path("j"), true, 0, &j));
    CHECK_OK(journal_verify(j, 0, 0, NULL, &vs));
    CHECK_U64(vs.entries_checked, 100);
    journal_close(&j);
}

static void
test_reader_from_the_middle_returns_the_rest_in_order(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 100, S_PAYLOAD_LEN, NULL));
    CHECK(s_read_all_ok(j, 50, 100, S_PAYLOAD_LEN));
    CHECK(s_read_all_ok(j, 100, 100, S_PAYLOAD_LEN));
    journal_reader_t *r = NULL;
    journal_entry_t e;
    CHECK_OK(journal_reader_open(j, 101, &r));
    CHECK_U64(journal_reader_next_seq(r), 101);
    CHECK_RC(journal_reader_next(r, &e), JOURNAL_END);
    CHECK_U64(journal_reader_bad_seq(r), 0);
    journal_reader_close(&r);
    CHECK(r == NULL);
    CHECK_RC(journal_reader_open(j, 102, &r), JOURNAL_ENOTFOUND);
    CHECK(r == NULL);
    CHECK_OK(journal_reader_open(j, 0, &r)); /* 0 means from the start */
    CHECK_OK(journal_reader_next(r, &e));
    CHECK_U64(e.seq, 1);
    CHECK_U64(journal_reader_next_seq(r), 2);
    journal_reader_close(&r);
    journal_close(&j);
}

static void
test_reader_returns_entries_appended_after_it_reached_the_end(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 3, S_PAYLOAD_LEN, NULL));
    journal_reader_t *r = NULL;
    journal_entry_t e;
    CHECK_OK(journal_reader_open(j, 1, &r));
    for (uint64_t i = 1; i <= 3; i++) {
        CHECK_OK(journal_reader_next(r, &e));
        CHECK_U64(e.seq, i);
    }
    CHECK_RC(journal_reader_next(r, &e), JOURNAL_END);
    CHECK_RC(journal_reader_next(r, &e), JOURNAL_END);
    CHECK_OK(s_append_n(j, 2, S_PAYLOAD_LEN, NULL));
    CHECK_OK(journal_reader_next(r, &e));
    CHECK_U64(e.seq, 4);
    CHECK(s_payload_ok(&e, S_PAYLOAD_LEN));
    CHECK_OK(journal_reader_next(r, &e));
    CHECK_U64(e.seq, 5);
    CHECK_RC(journal_reader_next(r, &e), JOURNAL_END);
    journal_reader_close(&r);
    journal_close(&j);
}

static void
test_reader_spans_many_refills_and_largest_payloads(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    uint64_t small = 3 * JOURNAL_READER_TXN_ENTRIES_MAX + 7;
    CHECK_OK(s_append_n(j, small, S_PAYLOAD_LEN, NULL));
    CHECK_OK(s_append_n(j, 3, JOURNAL_PAYLOAD_MAX, NULL));
    CHECK_OK(s_append_n(j, 5, 0, NULL)); /* empty payloads are fine too */
    journal_reader_t *r = NULL;
    journal_entry_t e;
    CHECK_OK(journal_reader_open(j, 1, &r));
    uint64_t expect = 1;
    int rc;
    while ((rc = journal_reader_next(r, &e)) == 0) {
        size_t len = expect <= small       ? S_PAYLOAD_LEN
                     : expect <= small + 3 ? JOURNAL_PAYLOAD_MAX
                                           : 0;
        CHECK_U64(e.seq, expect);
        CHECK(s_payload_ok(&e, len));
        expect++;
    }
    CHECK_RC(rc, JOURNAL_END);
    CHECK_U64(expect, small + 3 + 5 + 1);
    journal_reader_close(&r);
    journal_close(&j);
}

static void
test_read_copies_one_entry_and_refuses_a_small_buffer(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 5, S_PAYLOAD_LEN, NULL));
    uint8_t buf[S_PAYLOAD_LEN];
    journal_entry_t e;
    CHECK_OK(journal_read(j, 3, buf, sizeof(buf), &e));
    CHECK_U64(e.seq, 3);
    CHECK(e.payload == buf);
    CHECK(s_payload_ok(&e, S_PAYLOAD_LEN));
    CHECK_OK(journal_read(j, 1, buf, sizeof(buf), &e));
    CHECK_U64(e.seq, 1);
    CHECK_RC(journal_read(j, 3, buf, sizeof(buf) - 1, &e), JOURNAL_ETOOBIG);
    CHECK_RC(journal_read(j, 0, buf, sizeof(buf), &e), JOURNAL_ENOTFOUND);
    CHECK_RC(journal_read(j, 6, buf, sizeof(buf), &e), JOURNAL_ENOTFOUND);
    CHECK_RC(journal_read(j, 7, buf, sizeof(buf), &e), JOURNAL_ENOTFOUND);
    journal_close(&j);
}

static void
test_stat_reports_entries_sizes_and_timestamps(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    journal_head_t head;
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    journal_stat_t st;
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.entries, 10);
    CHECK_U64(st.first_seq, 1);
    CHECK_U64(st.head_seq, 10);
    CHECK(memcmp(st.head_hash, head.hash, JOURNAL_HASH_SIZE) == 0);
    CHECK(st.first_timestamp_us == S_TS_BASE_US + 1);
    CHECK(st.last_timestamp_us == S_TS_BASE_US + 10);
    CHECK(st.page_size_bytes >= 512);
    CHECK(st.map_size_bytes >= JOURNAL_MAP_SIZE_DEFAULT);
    CHECK(st.map_used_bytes > 0 && st.map_used_bytes <= st.map_size_bytes);
    CHECK(st.file_size_bytes >= st.map_used_bytes);
    CHECK(st.entries_leaf_pages >= 1);
    CHECK(st.entries_depth >= 1);
    journal_close(&j);
}

/* ---- Tests: corruption --------------------------------------------------------------------- */

/* Builds a journal of @p n entries in "src" and a hot copy of it in "copy"; closes both. */
static bool
s_make_copy(uint64_t n)
{
    journal_t *j = NULL;
    bool ok = s_open(s_path("src"), false, 0, &j) == 0 &&
              s_append_n(j, n / 2, S_PAYLOAD_LEN, NULL) == 0 &&
              s_append_n(j, n - n / 2, S_PAYLOAD_LEN, NULL) == 0 &&
              journal_copy(j, s_path("copy")) == 0;
    journal_close(&j);
    return ok;
}

static void
test_flipped_payload_byte_is_reported_at_its_sequence(void)
{
    CHECK(s_make_copy(300));
    /* One bit inside entry 123's payload, found by its unique marker. */
    CHECK(s_flip_byte(s_path("copy/data.mdb"), "entry-000123-marker", 13));

    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("copy"), true, 0, &j));
    uint64_t bad = 0;
    journal_verify_stats_t vs;
    CHECK_RC(journal_verify(j, 0, 0, &bad, &vs), JOURNAL_ECHAIN);
    CHECK_U64(bad, 123);
    CHECK_U64(vs.entries_checked, 122);
    CHECK_RC(journal_verify(j, 100, 200, &bad, NULL), JOURNAL_ECHAIN);
    CHECK_U64(bad, 123);
    CHECK_OK(journal_verify(j, 1, 122, NULL, NULL));
    /* A range after it is anchored at entry 123's stored hash, which is intact. */
    CHECK_OK(journal_verify(j, 124, 0, NULL, NULL));

    /* A reader hands out 1..122, then the error, again and again. */
    journal_reader_t *r = NULL;
    journal_entry_t e;
    CHECK_OK(journal_reader_open(j, 1, &r));
    uint64_t expect = 1;
    int rc;
    while ((rc = journal_reader_next(r, &e)) == 0) {
        CHECK_U64(e.seq, expect);
        expect++;
    }
    CHECK_RC(rc, JOURNAL_ECHAIN);
    CHECK_U64(expect, 123);
    CHECK_U64(journal_reader_bad_seq(r), 123);
    CHECK_RC(journal_reader_next(r, &e), JOURNAL_ECHAIN);
    journal_reader_close(&r);
    uint8_t buf[S_PAYLOAD_LEN];
    CHECK_RC(journal_read(j, 123, buf, sizeof(buf), &e), JOURNAL_ECHAIN);
    CHECK_OK(journal_read(j, 124, buf, sizeof(buf), &e));
    journal_close(&j);

    /* The original is intact. */
    CHECK_OK(s_open(s_path("src"), true, 0, &j));
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);

    struct s_tool_result t;
    bool ran = s_tool(&t, "verify", s_path("copy"), NULL);
    bool ok = ran && t.status == 3 && strstr(t.err, " 123") != NULL && t.out[0] == '\0';
    if (!ok) {
        fprintf(stderr, "  tool status %d, stderr: %s\n", t.status, t.err ? t.err : "");
    }
    s_tool_result_free(&t);
    CHECK(ok);
}

/* Another hot copy of "src" into @p name. */
static bool
s_copy_again(const char *name)
{
    journal_t *j = NULL;
    bool ok = s_open(s_path("src"), true, 0, &j) == 0 && journal_copy(j, s_path(name)) == 0;
    journal_close(&j);
    return ok;
}

/* Verifies @p dir read-only; true if it fails with @p want_rc at @p want_seq. */
static bool
s_verify_fails_at(const char *dir, int want_rc, uint64_t want_seq)
{
    journal_t *j = NULL;
    uint64_t bad = 0;
    int rc = s_open(dir, true, 0, &j);
    if (rc == 0) {
        rc = journal_verify(j, 0, 0, &bad, NULL);
    }
    journal_close(&j);
    if (rc != want_rc || bad != want_seq) {
        fprintf(stderr, "  %s: verify said %d (%s) at %" PRIu64 "\n", dir, rc, journal_strerror(rc),
                bad);
    }
    return rc == want_rc && bad == want_seq;
}

static void
test_flipped_header_bytes_are_reported_at_their_sequence(void)
{
    CHECK(s_make_copy(300));
    CHECK(s_copy_again("copy-flags"));
    CHECK(s_copy_again("copy-version"));
    CHECK(s_copy_again("copy-length"));
    CHECK(s_copy_again("copy-hash"));
    /* The header is the 40 bytes in front of the payload (found by its marker). */
    const long hdr = -(long)JOURNAL_HEADER_SIZE;
    CHECK(s_flip_byte(s_path("copy/data.mdb"), "entry-000200-marker", hdr + 0));
    CHECK(s_flip_byte(s_path("copy-flags/data.mdb"), "entry-000210-marker", hdr + 22));
    CHECK(s_flip_byte(s_path("copy-version/data.mdb"), "entry-000220-marker", hdr + 20));
    CHECK(s_flip_byte(s_path("copy-length/data.mdb"), "entry-000230-marker", hdr + 16));
    CHECK(s_flip_byte(s_path("copy-hash/data.mdb"), "entry-000240-marker", hdr + 24 + 15));
    CHECK(s_verify_fails_at(s_path("copy"), JOURNAL_ECORRUPT, 200));       /* seq != key */
    CHECK(s_verify_fails_at(s_path("copy-flags"), JOURNAL_ECORRUPT, 210)); /* unknown flag */
    CHECK(s_verify_fails_at(s_path("copy-version"), JOURNAL_ECORRUPT, 220));
    CHECK(s_verify_fails_at(s_path("copy-length"), JOURNAL_ECORRUPT, 230));
    CHECK(s_verify_fails_at(s_path("copy-hash"), JOURNAL_ECHAIN, 240));

    struct s_tool_result t;
    bool ran = s_tool(&t, "verify", s_path("copy"), NULL);
    bool ok = ran && t.status == 3 && strstr(t.err, " 200") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_writer_refuses_a_journal_whose_last_entry_is_damaged(void)
{
    CHECK(s_make_copy(50));
    CHECK(s_flip_byte(s_path("copy/data.mdb"), "entry-000050-marker", 20));
    journal_t *j = NULL;
    CHECK_RC(s_open(s_path("copy"), false, 0, &j), JOURNAL_ECHAIN);
    CHECK(j == NULL);
    CHECK_OK(s_open(s_path("copy"), true, 0, &j)); /* readers may still look at it */
    uint64_t bad = 0;
    CHECK_RC(journal_verify(j, 0, 0, &bad, NULL), JOURNAL_ECHAIN);
    CHECK_U64(bad, 50);
    journal_close(&j);
}

/* ---- Tests: format and errors -------------------------------------------------------------- */

/* Puts (or, with val NULL, deletes) a raw key in database @p db with plain LMDB, no journal
 * code involved. */
static int
s_raw_put(const char *dir, const char *db, const void *key, size_t key_len, const void *val,
          size_t len)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int mrc = mdb_env_create(&env);
    if (mrc == 0) {
        mrc = mdb_env_set_maxdbs(env, JOURNAL_MAX_DBS_DEFAULT);
    }
    if (mrc == 0) {
        mrc = mdb_env_open(env, dir, 0, 0600);
    }
    if (mrc == 0) {
        mrc = mdb_txn_begin(env, NULL, 0, &txn);
    }
    if (mrc == 0) {
        mrc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi);
    }
    if (mrc == 0) {
        MDB_val k = { key_len, (void *)(uintptr_t)key };
        MDB_val v = { len, (void *)(uintptr_t)val };
        mrc = val != NULL ? mdb_put(txn, dbi, &k, &v, 0) : mdb_del(txn, dbi, &k, NULL);
    }
    if (txn != NULL) {
        if (mrc == 0) {
            mrc = mdb_txn_commit(txn);
        } else {
            mdb_txn_abort(txn);
        }
    }
    mdb_env_close(env);
    return mrc;
}

static int
s_raw_meta(const char *dir, const char *key, const void *val, size_t len)
{
    return s_raw_put(dir, JOURNAL_DB_META, key, strlen(key), val, len);
}

static void
test_missing_entry_is_reported_as_corrupt_at_its_sequence(void)
{
    CHECK(s_make_copy(100));
    uint8_t key[JOURNAL_FORMAT_KEY_SIZE];
    journal_format_key_encode(40, key);
    CHECK(s_raw_put(s_path("copy"), JOURNAL_DB_ENTRIES, key, sizeof(key), NULL, 0) == 0);
    journal_t *j = NULL;
    CHECK_RC(s_open(s_path("copy"), false, 0, &j), JOURNAL_ECORRUPT); /* 99 entries, head 100 */
    CHECK_OK(s_open(s_path("copy"), true, 0, &j));
    uint64_t bad = 0;
    CHECK_RC(journal_verify(j, 0, 0, &bad, NULL), JOURNAL_ECORRUPT);
    CHECK_U64(bad, 40);
    CHECK_RC(journal_verify(j, 41, 0, &bad, NULL), JOURNAL_ECORRUPT); /* anchor 40 is missing */
    CHECK_U64(bad, 40);
    CHECK_OK(journal_verify(j, 42, 0, &bad, NULL));
    journal_reader_t *r = NULL;
    journal_entry_t e;
    CHECK_OK(journal_reader_open(j, 39, &r));
    CHECK_OK(journal_reader_next(r, &e));
    CHECK_U64(e.seq, 39);
    CHECK_RC(journal_reader_next(r, &e), JOURNAL_ECORRUPT);
    CHECK_U64(journal_reader_bad_seq(r), 40);
    journal_reader_close(&r);
    journal_close(&j);
}

static void
test_different_format_version_is_refused(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 2, S_PAYLOAD_LEN, NULL));
    journal_close(&j);
    const uint8_t v2[4] = { 2, 0, 0, 0 };
    CHECK(s_raw_meta(s_path("j"), "format", v2, sizeof(v2)) == 0);
    CHECK_RC(s_open(s_path("j"), false, 0, &j), JOURNAL_EVERSION);
    CHECK_RC(s_open(s_path("j"), true, 0, &j), JOURNAL_EVERSION);
    const uint8_t v1_short[2] = { 1, 0 };
    CHECK(s_raw_meta(s_path("j"), "format", v1_short, sizeof(v1_short)) == 0);
    CHECK_RC(s_open(s_path("j"), false, 0, &j), JOURNAL_EVERSION);
    CHECK(s_raw_meta(s_path("j"), "format", NULL, 0) == 0); /* key deleted */
    CHECK_RC(s_open(s_path("j"), false, 0, &j), JOURNAL_EVERSION);
    const uint8_t v1[4] = { 1, 0, 0, 0 };
    CHECK(s_raw_meta(s_path("j"), "format", v1, sizeof(v1)) == 0);
    CHECK_OK(s_open(s_path("j"), false, 0, &j)); /* back to version 1: accepted again */
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);
    CHECK(j == NULL);
}

static void
test_other_lmdb_environment_is_refused(void)
{
    CHECK(mkdir(s_path("other"), 0700) == 0);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int mrc = mdb_env_create(&env);
    mrc = mrc ? mrc : mdb_env_set_maxdbs(env, 4);
    mrc = mrc ? mrc : mdb_env_open(env, s_path("other"), 0, 0600);
    mrc = mrc ? mrc : mdb_txn_begin(env, NULL, 0, &txn);
    mrc = mrc ? mrc : mdb_dbi_open(txn, "something.else", MDB_CREATE, &dbi);
    mrc = mrc ? mrc : mdb_txn_commit(txn);
    mdb_env_close(env);
    CHECK(mrc == 0);
    journal_t *j = NULL;
    CHECK_RC(s_open(s_path("other"), false, 0, &j), JOURNAL_EVERSION);
    CHECK_RC(s_open(s_path("other"), true, 0, &j), JOURNAL_EVERSION);
    CHECK(j == NULL);
}

static void
test_strerror_names_every_code(void)
{
    const int own[] = {
        JOURNAL_EGAP,      JOURNAL_ECORRUPT, JOURNAL_ECHAIN,    JOURNAL_EVERSION, JOURNAL_EFULL,
        JOURNAL_ENOTFOUND, JOURNAL_EINVAL,   JOURNAL_EREADONLY, JOURNAL_ETOOBIG,
    };
    const size_t n = sizeof(own) / sizeof(own[0]);
    CHECK_U64(n, JOURNAL_ERRCODE_LAST - JOURNAL_ERRCODE_FIRST + 1);
    const char *unknown = journal_strerror(12345);
    CHECK(unknown != NULL && unknown[0] != '\0');
    for (size_t i = 0; i < n; i++) {
        const char *s = journal_strerror(own[i]);
        CHECK(s != NULL && s[0] != '\0' && strcmp(s, unknown) != 0);
        CHECK(own[i] < MDB_KEYEXIST && own[i] <= -4096); /* clear of LMDB's and errno's */
        for (size_t k = 0; k < i; k++) {
            CHECK(strcmp(s, journal_strerror(own[k])) != 0);
        }
    }
    for (int c = JOURNAL_ERRCODE_FIRST; c <= JOURNAL_ERRCODE_LAST; c++) {
        CHECK(strcmp(journal_strerror(c), unknown) != 0);
    }
    CHECK(strcmp(journal_strerror(0), unknown) != 0);
    CHECK(strcmp(journal_strerror(JOURNAL_END), unknown) != 0);
    for (int c = MDB_KEYEXIST; c <= MDB_LAST_ERRCODE; c++) {
        CHECK(strcmp(journal_strerror(c), mdb_strerror(c)) == 0);
    }
    CHECK(strcmp(journal_strerror(-ENOENT), strerror(ENOENT)) == 0);
    CHECK(strcmp(journal_strerror(-ENOSPC), strerror(ENOSPC)) == 0);
    CHECK(strcmp(journal_strerror(JOURNAL_ERRCODE_FIRST - 1), unknown) == 0);
}

/* The example in docs/journal-format.md, byte for byte. If this fails, the format changed,
 * which version 1 must never do. */
#define S_DOC_HASH1 "3c083b40ff9a1380832e07570ba8f719"
#define S_DOC_HASH2 "8fa42550155506f30039869c810868dc"
static const char s_doc_example_hex[] = "0100000000000000" /* seq 1 */
                                        "00401e18240a0600" /* timestamp_us 1700000000000000 */
                                        "05000000"         /* payload length 5 */
                                        "0100"             /* entry version 1 */
                                        "0000"             /* flags 0 */
                                        "@HASH1@"          /* hash, filled in below */
                                        "68656c6c6f";      /* "hello" */

static void
s_to_hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    }
}

static void
test_worked_example_in_the_docs_matches_the_encoder(void)
{
    uint8_t zero[JOURNAL_HASH_SIZE] = { 0 };
    uint8_t v1[JOURNAL_HEADER_SIZE + 5];
    uint8_t h1[JOURNAL_HASH_SIZE];
    journal_format_encode(v1, 1, S_TS_BASE_US, 0, "hello", 5, zero, h1);
    char hex[2 * sizeof(v1) + 1];
    s_to_hex(v1, sizeof(v1), hex);
    char want[sizeof(s_doc_example_hex) + 64];
    const char *at = strstr(s_doc_example_hex, "@HASH1@");
    CHECK(at != NULL);
    snprintf(want, sizeof(want), "%.*s%s%s", (int)(at - s_doc_example_hex), s_doc_example_hex,
             S_DOC_HASH1, at + strlen("@HASH1@"));
    if (strcmp(hex, want) != 0) {
        fprintf(stderr, "  encoded %s\n  wanted  %s\n", hex, want);
    }
    CHECK(strcmp(hex, want) == 0);

    /* Entry 2 chains onto entry 1. */
    uint8_t v2[JOURNAL_HEADER_SIZE + 5];
    uint8_t h2[JOURNAL_HASH_SIZE];
    journal_format_encode(v2, 2, S_TS_BASE_US + 1, 0, "world", 5, h1, h2);
    char h2hex[2 * JOURNAL_HASH_SIZE + 1];
    s_to_hex(h2, sizeof(h2), h2hex);
    if (strcmp(h2hex, S_DOC_HASH2) != 0) {
        fprintf(stderr, "  hash 2 %s\n", h2hex);
    }
    CHECK(strcmp(h2hex, S_DOC_HASH2) == 0);

    /* And the key of entry 1 is big-endian. */
    uint8_t key[JOURNAL_FORMAT_KEY_SIZE];
    journal_format_key_encode(UINT64_C(0x0102030405060708), key);
    CHECK(key[0] == 1 && key[7] == 8);
}

/* ---- Tests: map growth and processes ------------------------------------------------------- */

struct s_count_ctx {
    unsigned runs; /* how often the fill ran */
    size_t n;      /* entries per run */
    size_t len;    /* payload length */
    uint8_t *buf;  /* scratch payload */
};

static int
s_fill_counted(journal_txn_t *txn, void *ctx)
{
    struct s_count_ctx *c = ctx;
    c->runs++;
    for (size_t i = 0; i < c->n; i++) {
        journal_head_t h;
        journal_txn_head(txn, &h);
        s_payload(h.seq + 1, c->len, c->buf);
        int rc = journal_txn_append(txn, S_TS_BASE_US + (int64_t)h.seq + 1, c->buf, c->len, NULL);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void
test_map_grows_from_1_mib_to_hold_20_mib_of_entries(void)
{
    /* 4000 + 40 bytes fill one 4 KiB overflow page: 5120 entries are 20 MiB. */
    const size_t len = 4000;
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    journal_stat_t st0;
    CHECK_OK(journal_stat(j, &st0));
    CHECK_U64(st0.map_size_bytes, JOURNAL_MAP_SIZE_MIN);

    /* One transaction of 8 MiB: the fill must be rerun after each doubling. */
    uint8_t *buf = malloc(len);
    CHECK(buf != NULL);
    struct s_count_ctx c = { 0, 2048, len, buf };
    journal_head_t head;
    int rc = journal_write(j, s_fill_counted, &c, &head);
    free(buf);
    CHECK_OK(rc);
    CHECK(c.runs >= 2);
    CHECK_U64(head.seq, 2048); /* earlier runs left nothing behind */
    for (int b = 0; b < 24; b++) {
        CHECK_OK(s_append_n(j, 128, len, &head)); /* 12 more MiB in 0.5 MiB batches */
    }
    CHECK_U64(head.seq, 2048 + 24 * 128);
    journal_stat_t st;
    CHECK_OK(journal_stat(j, &st));
    CHECK(st.map_size_bytes >= 20 * JOURNAL_MAP_SIZE_MIN);
    CHECK(st.map_used_bytes >= 20 * JOURNAL_MAP_SIZE_MIN);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    CHECK(s_read_all_ok(j, 2049, head.seq, len));
    journal_close(&j);

    /* Reopening with the small initial size keeps the grown map. */
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    journal_stat_t st2;
    CHECK_OK(journal_stat(j, &st2));
    CHECK(st2.map_size_bytes >= st.map_size_bytes);
    CHECK_OK(s_append_n(j, 1, len, &head));
    CHECK_U64(head.seq, 2048 + 24 * 128 + 1);
    journal_close(&j);
}

/* True when bytes [from, to) of the file at path are all zero. */
static bool
s_file_zero(const char *path, uint64_t from, uint64_t to)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return false;
    }
    uint8_t buf[65536];
    bool zero = true;
    for (uint64_t off = from; zero && off < to;) {
        size_t want = to - off < sizeof(buf) ? (size_t)(to - off) : sizeof(buf);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            zero = false;
            break;
        }
        zero = s_all_zero(buf, (size_t)n);
        off += (uint64_t)n;
    }
    close(fd);
    return zero;
}

static void
test_grow_ahead_puts_synced_zeros_past_the_used_pages(void)
{
    const uint64_t ahead = 1024 * 1024;
    journal_t *j = NULL;
    journal_head_t head;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    journal_stat_t st0;
    CHECK_OK(journal_stat(j, &st0));
    CHECK_U64(st0.file_size_bytes, st0.map_used_bytes); /* LMDB's own file: no tail */

    /* At most max_bytes per call, then up to `ahead` past the used pages, then nothing. */
    uint64_t w = 0;
    CHECK_OK(journal_grow_ahead(j, ahead, 256 * 1024, &w));
    CHECK_U64(w, 256 * 1024);
    journal_stat_t st;
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.file_size_bytes, st0.file_size_bytes + w);
    CHECK_OK(journal_grow_ahead(j, ahead, UINT64_MAX, &w));
    CHECK_U64(w, ahead - 256 * 1024);
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.file_size_bytes, st.map_used_bytes + ahead);
    CHECK_U64(st.map_used_bytes, st0.map_used_bytes); /* the environment did not change */
    CHECK_OK(journal_grow_ahead(j, ahead, UINT64_MAX, &w));
    CHECK_U64(w, 0);
    CHECK(s_file_zero(s_path("j/data.mdb"), st.map_used_bytes, st.file_size_bytes));

    /* Entries land on the zeros and past them; every one reads back, also after a reopen. */
    CHECK_OK(s_append_n(j, 400, 4000, &head)); /* about 1.6 MiB: past the zeros */
    CHECK_OK(journal_stat(j, &st));
    CHECK(st.map_used_bytes > st0.map_used_bytes + ahead);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    CHECK(s_read_all_ok(j, 11, head.seq, 4000));
    journal_close(&j);
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    journal_head_t again;
    CHECK_OK(journal_head(j, &again));
    CHECK(memcmp(&head, &again, sizeof(head)) == 0);
    CHECK_OK(journal_grow_ahead(j, ahead, UINT64_MAX, &w));
    CHECK(w > 0);
    journal_close(&j);

    /* A read-only opener writes nothing, and reads the journal whatever its file's tail. */
    CHECK_OK(s_open(s_path("j"), true, 0, &j));
    CHECK(journal_grow_ahead(j, ahead, UINT64_MAX, &w) == JOURNAL_EREADONLY);
    CHECK_U64(w, 0);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    CHECK(s_read_all_ok(j, 11, head.seq, 4000));
    journal_close(&j);
}

static void
test_grow_ahead_stops_at_its_limits(void)
{
    journal_t *j = NULL;
    journal_head_t head;
    uint64_t w = 0;
    journal_stat_t st0, st;

    /* Never more than max_bytes per call, whatever the piece size. */
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    CHECK_OK(journal_stat(j, &st0));
    CHECK_OK(journal_grow_ahead(j, 1024 * 1024, 100000, &w));
    CHECK_U64(w, 100000);
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.file_size_bytes, st0.file_size_bytes + 100000);

    /* A file size limit (EFBIG, with SIGXFSZ ignored) is reported and changes no entry. */
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    struct rlimit lim = old;
    lim.rlim_cur = (rlim_t)(st.file_size_bytes + 128 * 1024);
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    int rc = journal_grow_ahead(j, 1024 * 1024, UINT64_MAX, &w);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, was);
    CHECK(rc == -EFBIG);
    CHECK_U64(w, 128 * 1024); /* the pieces written before the limit */
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    CHECK(s_read_all_ok(j, 11, 20, S_PAYLOAD_LEN));
    journal_close(&j);

    /* Never past the map's ceiling: LMDB could not use those bytes. */
    journal_opts_t o;
    memset(&o, 0, sizeof(o));
    o.map_size_bytes = JOURNAL_MAP_SIZE_MIN;
    o.map_size_max_bytes = 2 * JOURNAL_MAP_SIZE_MIN;
    CHECK_OK(journal_open(s_path("k"), &o, &j));
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    CHECK_OK(journal_grow_ahead(j, 64 * 1024 * 1024, UINT64_MAX, &w));
    CHECK(w > 0);
    CHECK_OK(journal_stat(j, &st));
    CHECK_U64(st.file_size_bytes, 2 * JOURNAL_MAP_SIZE_MIN);
    journal_close(&j);
}

/* A fill that stays inside its transaction until told to go on. */
struct s_parked {
    journal_t *j;
    atomic_int stage; /* 1: inside the transaction; 2: may commit; 3: committed */
    atomic_int grown; /* the other thread's journal_grow_ahead() returned */
    int rc;
};

static int
s_parked_fill(journal_txn_t *txn, void *ctx)
{
    struct s_parked *p = ctx;
    uint8_t payload[4000];
    memset(payload, 'p', sizeof(payload));
    for (int i = 0; i < 64; i++) { /* 256 KiB of new pages, past the file's end */
        int rc = journal_txn_append(txn, S_TS_BASE_US, payload, sizeof(payload), NULL);
        if (rc != 0) {
            return rc;
        }
    }
    atomic_store(&p->stage, 1);
    while (atomic_load(&p->stage) != 2) {
        poll(NULL, 0, 1);
    }
    return 0;
}

static void *
s_parked_writer(void *arg)
{
    struct s_parked *p = arg;
    p->rc = journal_write(p->j, s_parked_fill, p, NULL);
    atomic_store(&p->stage, 3);
    return NULL;
}

static void *
s_parked_grower(void *arg)
{
    struct s_parked *p = arg;
    uint64_t w = 0;
    (void)journal_grow_ahead(p->j, 1024 * 1024, UINT64_MAX, &w);
    atomic_store(&p->grown, 1);
    return NULL;
}

static void
test_grow_ahead_waits_for_an_open_write_transaction(void)
{
    struct s_parked p;
    memset(&p, 0, sizeof(p));
    atomic_init(&p.stage, 0);
    atomic_init(&p.grown, 0);
    CHECK_OK(s_open(s_path("j"), false, 0, &p.j));
    pthread_t writer, grower;
    CHECK(pthread_create(&writer, NULL, s_parked_writer, &p) == 0);
    while (atomic_load(&p.stage) == 0) {
        poll(NULL, 0, 1);
    }
    CHECK(pthread_create(&grower, NULL, s_parked_grower, &p) == 0);
    poll(NULL, 0, 100);
    bool early = atomic_load(&p.grown) != 0; /* it wrote while the transaction was open */
    atomic_store(&p.stage, 2);
    pthread_join(writer, NULL);
    pthread_join(grower, NULL);
    CHECK(!early);
    CHECK_OK(p.rc);
    CHECK_OK(journal_verify(p.j, 0, 0, NULL, NULL));
    journal_stat_t st;
    CHECK_OK(journal_stat(p.j, &st));
    CHECK_U64(st.entries, 64);
    CHECK_U64(st.file_size_bytes, st.map_used_bytes + 1024 * 1024);
    journal_close(&p.j);
}

struct s_hammer {
    journal_t *j;
    atomic_int stop;
    atomic_uint_fast64_t calls;
    atomic_int rc; /* read by the main thread while it waits for calls */
};

/* journal_grow_ahead() as often as it can go, with a margin the commits keep eating. */
static void *
s_hammer_main(void *arg)
{
    struct s_hammer *h = arg;
    while (!atomic_load(&h->stop) && atomic_load(&h->rc) == 0) {
        uint64_t w = 0;
        atomic_store(&h->rc, journal_grow_ahead(h->j, 128 * 1024, 64 * 1024, &w));
        atomic_fetch_add(&h->calls, 1);
    }
    return NULL;
}

static void s_hammer_round(const char *dir);

static void
test_grow_ahead_survives_map_growth(void)
{
    /* The map starts at 1 MiB and doubles six times under a thread that grows the file without
     * a pause: the thread must never read the map while a growth remaps it (it once read the
     * meta pages outside the write lock, and the daemon died of it). */
    for (int round = 0; round < 3; round++) {
        char name[8];
        snprintf(name, sizeof(name), "j%d", round);
        s_hammer_round(s_path(name));
        if (s_test_failed) {
            return;
        }
    }
}

static void
s_hammer_round(const char *dir)
{
    struct s_hammer h;
    memset(&h, 0, sizeof(h));
    atomic_init(&h.stop, 0);
    atomic_init(&h.calls, 0);
    atomic_init(&h.rc, 0);
    CHECK_OK(s_open(dir, false, JOURNAL_MAP_SIZE_MIN, &h.j));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, s_hammer_main, &h) == 0);
    journal_head_t head;
    int rc = 0;
    bool waited_out = false;
    for (int b = 0; b < 160 && rc == 0 && !waited_out; b++) {
        /* The thread calls at least once before each commit, however busy the machine is
         * (counting its calls after the fact failed on a loaded 2-core VM). */
        int64_t deadline = s_mono_ms() + 10000;
        while (atomic_load(&h.calls) <= (uint64_t)b && atomic_load(&h.rc) == 0 && !waited_out) {
            waited_out = s_mono_ms() > deadline;
            sched_yield();
        }
        rc = s_append_n(h.j, 100, 4000, &head); /* 400 KiB per commit, 64 MiB in all */
    }
    atomic_store(&h.stop, 1);
    pthread_join(t, NULL);
    CHECK_OK(rc);
    CHECK_OK(atomic_load(&h.rc));
    CHECK(!waited_out);
    CHECK(atomic_load(&h.calls) > 160);
    journal_stat_t st;
    CHECK_OK(journal_stat(h.j, &st));
    CHECK(st.map_size_bytes >= 64 * JOURNAL_MAP_SIZE_MIN);
    CHECK_OK(journal_verify(h.j, 0, 0, NULL, NULL));
    CHECK(s_read_all_ok(h.j, 1, head.seq, 4000));
    journal_close(&h.j);
}

static void
test_ahead_thread_never_writes_over_a_commit(void)
{
    /*
     * A small margin and big entries: the thread keeps writing at the very end of the file
     * while commits extend it. A zero written over a committed page would break the chain or
     * a payload.
     */
    journal_t *j = NULL;
    journal_head_t head;
    /* From the smallest map, which doubles four times on the way: a growth remaps the file
     * under the thread's feet (the thread once read the meta pages outside the write lock, and
     * the daemon died of it in a remap). */
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    journal_ahead_t *a = NULL;
    CHECK_OK(journal_ahead_start(j, 256 * 1024, &a));
    for (int b = 0; b < 200; b++) {
        CHECK_OK(s_append_n(j, 16, 4000, &head)); /* 64 KiB per commit, 12.5 MiB in all */
    }
    /* Wait (a bounded time) for the thread to catch up with the last commit. */
    journal_stat_t st;
    for (int i = 0; i < 500; i++) {
        CHECK_OK(journal_stat(j, &st));
        if (st.file_size_bytes >= st.map_used_bytes + 256 * 1024) {
            break;
        }
        poll(NULL, 0, 10);
    }
    CHECK(st.file_size_bytes >= st.map_used_bytes + 256 * 1024);
    CHECK_OK(journal_ahead_error(a));
    journal_ahead_stop(&a);
    CHECK(a == NULL);
    CHECK(s_file_zero(s_path("j/data.mdb"), st.map_used_bytes, st.file_size_bytes));
    CHECK_U64(head.seq, 200 * 16);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    CHECK(s_read_all_ok(j, 1, head.seq, 4000));
    journal_close(&j);
}

static void
test_map_growth_stops_at_the_configured_maximum(void)
{
    journal_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.map_size_bytes = JOURNAL_MAP_SIZE_MIN;
    opts.map_size_max_bytes = 2 * JOURNAL_MAP_SIZE_MIN;
    journal_t *j = NULL;
    CHECK_OK(journal_open(s_path("j"), &opts, &j));
    journal_head_t head;
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &head));
    /* 4 MiB in one batch cannot fit in 2 MiB. */
    CHECK_RC(s_append_n(j, 1024, 4096, NULL), JOURNAL_EFULL);
    journal_head_t after;
    CHECK_OK(journal_head(j, &after));
    CHECK(memcmp(&head, &after, sizeof(head)) == 0);
    /* Small appends still fit. */
    CHECK_OK(s_append_n(j, 10, S_PAYLOAD_LEN, &after));
    CHECK_U64(after.seq, 20);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);
}

static void
test_reader_process_sees_a_gap_free_chain_while_the_writer_grows_the_map(void)
{
    const uint64_t initial = 10;
    const unsigned batches = 100;
    const unsigned per_batch = 40;
    const size_t len = 1000;
    const uint64_t total = initial + (uint64_t)batches * per_batch;
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    CHECK_OK(s_append_n(j, initial, len, NULL));
    journal_close(&j); /* nothing open across fork() */

    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        _exit(s_child_reader(s_path("j"), total, pipefd[1]));
    }
    close(pipefd[1]);
    bool ready = s_wait_ready(pipefd[0]);
    close(pipefd[0]);
    int rc = ready ? s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j) : -1;
    for (unsigned b = 0; rc == 0 && b < batches; b++) {
        rc = s_append_n(j, per_batch, len, NULL);
    }
    journal_stat_t st;
    memset(&st, 0, sizeof(st));
    if (rc == 0) {
        rc = journal_stat(j, &st);
    } else {
        kill(pid, SIGKILL); /* it would wait for entries that never come */
    }
    journal_close(&j);
    int child = s_wait_child(pid);
    CHECK(ready);
    CHECK_OK(rc);
    if (child != 0) {
        fprintf(stderr, "  reader child exited with %d\n", child);
    }
    CHECK(child == 0);
    CHECK(st.map_size_bytes >= 4 * JOURNAL_MAP_SIZE_MIN); /* the map grew while it read */
}

static void
test_hot_copy_while_a_writer_process_appends_is_a_verified_prefix(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    CHECK_OK(s_append_n(j, 100, S_PAYLOAD_LEN, NULL));
    journal_close(&j);

    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        _exit(s_child_writer(s_path("j"), 150, 20, 500, pipefd[1]));
    }
    close(pipefd[1]);
    bool ready = s_wait_ready(pipefd[0]);
    close(pipefd[0]);
    int rc = ready ? s_open(s_path("j"), true, 0, &j) : -1;
    if (rc == 0) {
        rc = journal_copy(j, s_path("copy"));
    }
    int rc_again = rc == 0 ? journal_copy(j, s_path("copy")) : 0;
    journal_close(&j);
    int child = s_wait_child(pid);
    CHECK(ready);
    CHECK_OK(rc);
    CHECK_RC(rc_again, -EEXIST); /* never overwrites a backup */
    CHECK(child == 0);

    journal_t *orig = NULL;
    journal_t *copy = NULL;
    CHECK_OK(s_open(s_path("j"), true, 0, &orig));
    CHECK_OK(s_open(s_path("copy"), true, 0, &copy));
    journal_verify_stats_t vs;
    CHECK_OK(journal_verify(copy, 0, 0, NULL, &vs));
    journal_head_t oh;
    journal_head_t ch;
    CHECK_OK(journal_head(orig, &oh));
    CHECK_OK(journal_head(copy, &ch));
    CHECK_U64(oh.seq, 100 + 150 * 20);
    CHECK(ch.seq >= 100 + 20 && ch.seq <= oh.seq);
    CHECK_U64(vs.entries_checked, ch.seq);
    journal_stat_t os;
    journal_stat_t cs;
    CHECK_OK(journal_stat(orig, &os));
    CHECK_OK(journal_stat(copy, &cs));
    CHECK(memcmp(os.journal_id, cs.journal_id, JOURNAL_ID_SIZE) == 0);

    /* Every entry of the copy is the original's, byte for byte. */
    journal_reader_t *ro = NULL;
    journal_reader_t *rcpy = NULL;
    CHECK_OK(journal_reader_open(orig, 1, &ro));
    CHECK_OK(journal_reader_open(copy, 1, &rcpy));
    journal_entry_t a;
    journal_entry_t b;
    uint64_t n = 0;
    bool same = true;
    while (same && journal_reader_next(rcpy, &b) == 0) {
        same = journal_reader_next(ro, &a) == 0 && a.seq == b.seq &&
               a.timestamp_us == b.timestamp_us && a.payload_len == b.payload_len &&
               memcmp(a.hash, b.hash, JOURNAL_HASH_SIZE) == 0 &&
               memcmp(a.payload, b.payload, a.payload_len) == 0;
        n++;
    }
    journal_reader_close(&ro);
    journal_reader_close(&rcpy);
    journal_close(&orig);
    journal_close(&copy);
    CHECK(same);
    CHECK_U64(n, ch.seq);
}

struct s_thread_arg {
    journal_t *j;            /* the journal, shared with the writing thread */
    uint64_t total;          /* entries to wait for */
    const atomic_bool *stop; /* set when the writer failed */
    int result;              /* s_reader_loop()'s result */
};

static void *
s_reader_thread(void *p)
{
    struct s_thread_arg *a = p;
    a->result = s_reader_loop(a->j, a->total, -1, a->stop);
    return NULL;
}

static void
test_reader_threads_keep_reading_while_the_writer_grows_the_map(void)
{
    const uint64_t initial = 10;
    const unsigned batches = 100;
    const unsigned per_batch = 40;
    const size_t len = 1000;
    const uint64_t total = initial + (uint64_t)batches * per_batch;
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    CHECK_OK(s_append_n(j, initial, len, NULL));
    pthread_t th[2];
    struct s_thread_arg args[2];
    atomic_bool stop;
    atomic_init(&stop, false);
    size_t started = 0;
    for (size_t i = 0; i < 2; i++) {
        args[i] = (struct s_thread_arg){ j, total, &stop, -1 };
        if (pthread_create(&th[i], NULL, s_reader_thread, &args[i]) == 0) {
            started++;
        }
    }
    int rc = 0;
    for (unsigned b = 0; rc == 0 && started == 2 && b < batches; b++) {
        rc = s_append_n(j, per_batch, len, NULL);
    }
    if (rc != 0 || started != 2) {
        atomic_store(&stop, true); /* no reader waits for entries that will never come */
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    journal_stat_t st;
    int rc_stat = journal_stat(j, &st);
    journal_close(&j);
    CHECK(started == 2);
    CHECK_OK(rc);
    CHECK_OK(rc_stat);
    CHECK(args[0].result == 0 && args[1].result == 0);
    CHECK(st.map_size_bytes >= 4 * JOURNAL_MAP_SIZE_MIN);
}

#define S_BLOBS     300u
#define S_BLOB_SIZE 8192u

static int
s_fill_entry_and_big_state(journal_txn_t *txn, void *ctx)
{
    unsigned *runs = ctx;
    (*runs)++;
    uint8_t p[S_PAYLOAD_LEN];
    journal_head_t h;
    journal_txn_head(txn, &h);
    s_payload(h.seq + 1, sizeof(p), p);
    int rc = journal_txn_append(txn, S_TS_BASE_US + (int64_t)h.seq + 1, p, sizeof(p), NULL);
    if (rc != 0) {
        return rc;
    }
    MDB_dbi dbi;
    int mrc = mdb_dbi_open(journal_txn_mdb(txn), "test.blobs", MDB_CREATE, &dbi);
    static uint8_t blob[S_BLOB_SIZE];
    for (uint32_t i = 0; mrc == 0 && i < S_BLOBS; i++) {
        MDB_val k = { sizeof(i), &i };
        MDB_val v = { sizeof(blob), blob };
        mrc = mdb_put(journal_txn_mdb(txn), dbi, &k, &v, 0);
    }
    return mrc; /* MDB_MAP_FULL as is: journal_write() grows the map and runs us again */
}

static void
test_fill_whose_own_put_fills_the_map_is_rerun_after_growth(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    unsigned runs = 0;
    journal_head_t head;
    CHECK_OK(journal_write(j, s_fill_entry_and_big_state, &runs, &head));
    CHECK(runs >= 2);
    CHECK_U64(head.seq, 1);
    MDB_txn *txn = NULL;
    CHECK_OK(journal_read_txn_begin(j, &txn));
    MDB_dbi dbi;
    MDB_stat ms;
    int mrc = mdb_dbi_open(txn, "test.blobs", 0, &dbi);
    if (mrc == 0) {
        mrc = mdb_stat(txn, dbi, &ms);
    }
    journal_read_txn_end(j, &txn);
    CHECK(mrc == 0);
    CHECK_U64(ms.ms_entries, S_BLOBS);
    CHECK(s_read_all_ok(j, 1, 1, S_PAYLOAD_LEN));
    journal_close(&j);
}

static void
test_growing_the_map_while_this_thread_holds_a_read_txn_is_refused_not_deadlocked(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    MDB_txn *txn = NULL;
    CHECK_OK(journal_read_txn_begin(j, &txn));
    int rc_small = s_append_n(j, 1, S_PAYLOAD_LEN, NULL); /* fits: no remap needed */
    int rc_big = s_append_n(j, 600, 4000, NULL);          /* needs the map to grow */
    journal_read_txn_end(j, &txn);
    CHECK_OK(rc_small);
    CHECK_RC(rc_big, -EDEADLK);
    journal_head_t head;
    CHECK_OK(journal_head(j, &head));
    CHECK_U64(head.seq, 1);
    CHECK_OK(s_append_n(j, 600, 4000, &head));
    CHECK_U64(head.seq, 601);
    CHECK_OK(journal_verify(j, 0, 0, NULL, NULL));
    journal_close(&j);
}

static void
test_appends_of_a_second_writer_process_are_chained_onto(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    CHECK_OK(s_append_n(j, 5, S_PAYLOAD_LEN, NULL));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child never touches the parent's journal_t; it opens its own. */
        _exit(s_child_writer(s_path("j"), 3, 200, 4000, -1));
    }
    int child = s_wait_child(pid);
    CHECK(child == 0);
    /* This writer's head in memory is 5; the disk says 605 and a grown map. */
    uint8_t buf[S_PAYLOAD_LEN];
    struct s_count_ctx c = { 0, 1, sizeof(buf), buf };
    journal_head_t head;
    CHECK_OK(journal_write(j, s_fill_counted, &c, &head));
    CHECK_U64(head.seq, 606);
    journal_verify_stats_t vs;
    CHECK_OK(journal_verify(j, 0, 0, NULL, &vs));
    CHECK_U64(vs.entries_checked, 606);
    journal_entry_t e;
    CHECK_OK(journal_read(j, 606, buf, sizeof(buf), &e));
    CHECK(s_payload_ok(&e, S_PAYLOAD_LEN));
    journal_close(&j);
}

static void
test_writer_killed_mid_stream_leaves_whole_batches_and_an_intact_chain(void)
{
    const unsigned per_batch = 10;
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    journal_close(&j);
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        _exit(s_child_writer(s_path("j"), 0, per_batch, 200, pipefd[1]));
    }
    close(pipefd[1]);
    bool ready = s_wait_ready(pipefd[0]);
    close(pipefd[0]);
    int rc = ready ? s_open(s_path("j"), true, 0, &j) : -1;
    journal_head_t head = { 0 };
    int64_t deadline = s_mono_ms() + S_CHILD_TIMEOUT_S * 1000;
    while (rc == 0 && head.seq < 300 && s_mono_ms() < deadline) {
        rc = journal_head(j, &head);
    }
    kill(pid, SIGKILL);
    int child = s_wait_child(pid);
    journal_close(&j);
    CHECK(ready);
    CHECK_OK(rc);
    CHECK(child == 128 + SIGKILL);

    CHECK_OK(s_open(s_path("j"), false, JOURNAL_MAP_SIZE_MIN, &j));
    CHECK_OK(journal_head(j, &head));
    CHECK(head.seq >= 300);
    CHECK_U64(head.seq % per_batch, 0); /* no half batch */
    journal_verify_stats_t vs;
    CHECK_OK(journal_verify(j, 0, 0, NULL, &vs));
    CHECK_U64(vs.entries_checked, head.seq);
    uint64_t before = head.seq;
    CHECK_OK(s_append_n(j, 1, 200, &head));
    CHECK_U64(head.seq, before + 1);
    CHECK(s_read_all_ok(j, 1, head.seq, 200));
    journal_close(&j);
}

/* ---- Tests: the tool ------------------------------------------------------------------------ */

static void
test_tool_help_and_version_exit_zero(void)
{
    struct s_tool_result t;
    CHECK(s_tool(&t, "--help", NULL));
    bool ok = t.status == 0 && strstr(t.out, "Usage:") != NULL &&
              strstr(t.out, "Exit status") != NULL && t.err[0] == '\0';
    s_tool_result_free(&t);
    CHECK(ok);
    CHECK(s_tool(&t, "--version", NULL));
    ok = t.status == 0 && strcmp(t.out, "cardledger-journal " CARDLEDGER_VERSION "\n") == 0;
    s_tool_result_free(&t);
    CHECK(ok);
    CHECK(s_tool(&t, "verify", "--help", NULL));
    ok = t.status == 0 && strstr(t.out, "Usage:") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_tool_usage_errors_exit_1(void)
{
    struct s_tool_result t;
    const char *cases[][8] = {
        { NULL },
        { "frobnicate", "x", NULL },
        { "--bogus", NULL },
        { "verify", NULL },
        { "verify", "a", "b", NULL },
        { "verify", "x", "--from", "abc", NULL },
        { "verify", "x", "--from", "-1", NULL },
        { "dump", "x", "--from", "9", "--to", "3", NULL },
        { "stat", "x", "--from", "1", NULL },
        { "copy", "x", NULL },
        { "verify", "x", "--json", NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool ran = s_tool_argv(&t, cases[i]);
        bool ok = ran && t.status == 1 && t.out[0] == '\0' && strstr(t.err, "--help") != NULL;
        if (!ok) {
            fprintf(stderr, "  case %zu: status %d\n", i, t.status);
        }
        s_tool_result_free(&t);
        CHECK(ok);
    }
}

static void
test_tool_on_a_missing_journal_exits_2(void)
{
    struct s_tool_result t;
    const char *cmds[] = { "stat", "dump", "verify" };
    for (size_t i = 0; i < 3; i++) {
        CHECK(s_tool(&t, cmds[i], s_path("missing"), NULL));
        bool ok = t.status == 2 && strstr(t.err, "cannot open") != NULL;
        s_tool_result_free(&t);
        CHECK(ok);
    }
    CHECK(s_tool(&t, "copy", s_path("missing"), s_path("dest"), NULL));
    bool ok = t.status == 2;
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_tool_verify_counts_the_entries_of_an_intact_journal(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 42, S_PAYLOAD_LEN, NULL));
    journal_close(&j);
    struct s_tool_result t;
    CHECK(s_tool(&t, "verify", s_path("j"), NULL));
    bool ok = t.status == 0 && strstr(t.out, "42 entries checked") != NULL && t.err[0] == '\0';
    s_tool_result_free(&t);
    CHECK(ok);
    CHECK(s_tool(&t, "verify", s_path("j"), "--from", "10", "--to", "19", NULL));
    ok = t.status == 0 && strstr(t.out, "10 entries checked") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
    CHECK(s_tool(&t, "verify", s_path("j"), "--to", "43", NULL));
    ok = t.status == 2;
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_tool_dump_prints_one_json_line_per_entry(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    journal_record_t recs[5];
    for (int i = 0; i < 5; i++) {
        recs[i].timestamp_us = S_TS_BASE_US + i * 1000001;
        recs[i].payload = "hello";
        recs[i].payload_len = (size_t)i; /* "", "h", "he", "hel", "hell" */
    }
    journal_head_t head;
    CHECK_OK(journal_append(j, recs, 5, &head));
    journal_close(&j);

    struct s_tool_result t;
    CHECK(s_tool(&t, "dump", s_path("j"), "--from", "2", "--to", "4", NULL));
    int lines = 0;
    for (const char *p = t.out; (p = strchr(p, '\n')) != NULL; p++) {
        lines++;
    }
    bool ok = t.status == 0 && lines == 3 && strncmp(t.out, "{\"seq\":2,", 9) == 0 &&
              strstr(t.out, "\"timestamp_us\":1700000001000001,") != NULL &&
              strstr(t.out, "\"time\":\"2023-11-14T22:13:21.000001Z\"") != NULL &&
              /* Not JournalEntry envelopes: named by the reason, their bytes never shown. */
              strstr(t.out, "\"payload_len\":1,\"event_error\":\"") != NULL &&
              strstr(t.out, "\"payload_len\":3,\"event_error\":\"") != NULL &&
              strstr(t.out, "aGVs") == NULL && strstr(t.out, "\"hel") == NULL &&
              strstr(t.out, "\"seq\":5") == NULL && strstr(t.out, "\"seq\":1,") == NULL;
    if (!ok) {
        fprintf(stderr, "  dump said (%d):\n%s%s", t.status, t.out, t.err);
    }
    s_tool_result_free(&t);
    CHECK(ok);

    char hash_hex[2 * JOURNAL_HASH_SIZE + 1];
    s_to_hex(head.hash, JOURNAL_HASH_SIZE, hash_hex);
    CHECK(s_tool(&t, "dump", s_path("j"), NULL));
    ok = t.status == 0 && strstr(t.out, "{\"seq\":1,") == t.out &&
         strstr(t.out, "\"payload_len\":0,\"event") != NULL && strstr(t.out, hash_hex) != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_tool_dump_masks_card_codes_and_never_prints_pin_hashes(void)
{
    static cl_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = CL_EV_CARD_ISSUED;
    snprintf(ev.request_id, sizeof(ev.request_id), "r1");
    ev.u.card_issued.card_id = 1;
    snprintf(ev.u.card_issued.merchant_id, sizeof(ev.u.card_issued.merchant_id), "m1");
    snprintf(ev.u.card_issued.program_id, sizeof(ev.u.card_issued.program_id), "gift");
    snprintf(ev.u.card_issued.code, sizeof(ev.u.card_issued.code), "8103474348283058075");
    ev.u.card_issued.has_pin = true;
    memset(ev.u.card_issued.pin_hash, 0xab, sizeof(ev.u.card_issued.pin_hash));
    ev.u.card_issued.channel = CL_CHANNEL_ONLINE;
    ev.u.card_issued.face_value_minor = 20000;
    uint8_t buf[CODEC_EVENT_MAX_BYTES];
    size_t len = 0;
    CHECK(codec_event_encode(&ev, buf, sizeof(buf), &len) == 0);

    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    journal_record_t rec = { S_TS_BASE_US, buf, len };
    CHECK_OK(journal_append(j, &rec, 1, NULL));
    journal_close(&j);

    struct s_tool_result t;
    CHECK(s_tool(&t, "dump", s_path("j"), NULL));
    bool ok = t.status == 0 && strstr(t.out, "CardIssued") != NULL &&
              strstr(t.out, "8075") != NULL && strstr(t.out, "8103474348283058075") == NULL &&
              strstr(t.out, "abab") == NULL && strstr(t.out, "ABAB") == NULL &&
              strstr(t.out, "q6ur") == NULL; /* nor in base64 */
    if (!ok) {
        fprintf(stderr, "  dump said (%d):\n%s%s", t.status, t.out, t.err);
    }
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_tool_stat_prints_text_and_json(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 7, S_PAYLOAD_LEN, NULL));
    journal_close(&j);
    struct s_tool_result t;
    CHECK(s_tool(&t, "stat", s_path("j"), NULL));
    bool ok = t.status == 0 && strstr(t.out, "entries:           7\n") != NULL &&
              strstr(t.out, "head seq:          7\n") != NULL &&
              strstr(t.out, "format version:    1\n") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
    CHECK(s_tool(&t, "stat", "--json", s_path("j"), NULL));
    ok = t.status == 0 && t.out[0] == '{' && strstr(t.out, "\"entries\":7,") != NULL &&
         strstr(t.out, "\"head_seq\":7,") != NULL && strstr(t.out, "}\n") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
}

static void
test_tool_copy_makes_a_verified_backup_and_never_overwrites_one(void)
{
    journal_t *j = NULL;
    CHECK_OK(s_open(s_path("j"), false, 0, &j));
    CHECK_OK(s_append_n(j, 33, S_PAYLOAD_LEN, NULL));
    journal_close(&j);
    struct s_tool_result t;
    CHECK(s_tool(&t, "copy", s_path("j"), s_path("backup"), NULL));
    bool ok = t.status == 0 && strstr(t.out, "33 entries checked") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
    CHECK_OK(s_open(s_path("backup"), true, 0, &j));
    CHECK(s_read_all_ok(j, 1, 33, S_PAYLOAD_LEN));
    journal_close(&j);
    CHECK(s_tool(&t, "copy", s_path("j"), s_path("backup"), NULL));
    ok = t.status == 2 && strstr(t.err, "exists") != NULL;
    s_tool_result_free(&t);
    CHECK(ok);
}

/* ---- Benchmark (not a test: `test-journal --bench [ENTRIES [BATCH [PAYLOAD_BYTES]]]`) ------ */

static int64_t
s_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double
s_secs_since(int64_t t0_us)
{
    int64_t us = s_mono_us() - t0_us;
    return (double)(us > 0 ? us : 1) / 1e6;
}

static int
s_bench(int argc, char **argv)
{
    uint64_t entries = argc > 2 ? strtoull(argv[2], NULL, 10) : 200000;
    uint64_t batch = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000;
    uint64_t len = argc > 4 ? strtoull(argv[4], NULL, 10) : S_PAYLOAD_LEN;
    if (entries == 0 || batch == 0 || batch > JOURNAL_TXN_ENTRIES_MAX ||
        len > JOURNAL_PAYLOAD_MAX) {
        fprintf(stderr, "usage: test-journal --bench [ENTRIES [BATCH [PAYLOAD_BYTES]]]\n");
        return 1;
    }
    s_join(s_test_dir, s_root, "bench");
    if (mkdir(s_test_dir, 0700) != 0) {
        fprintf(stderr, "mkdir %s: %s\n", s_test_dir, strerror(errno));
        return 1;
    }
    journal_t *j = NULL;
    journal_record_t *recs = calloc(batch, sizeof(*recs));
    uint8_t *bufs = malloc(batch * (len > 0 ? len : 1));
    int rc = recs != NULL && bufs != NULL ? s_open(s_path("j"), false, 0, &j) : -ENOMEM;
    int64_t t0 = s_mono_us();
    uint64_t done = 0;
    while (rc == 0 && done < entries) {
        size_t n = (size_t)(entries - done < batch ? entries - done : batch);
        for (size_t i = 0; i < n; i++) {
            s_payload(done + 1 + i, len, bufs + i * len);
            recs[i] = (journal_record_t){ S_TS_BASE_US + (int64_t)(done + i), bufs + i * len, len };
        }
        rc = journal_append(j, recs, n, NULL);
        done += n;
    }
    double append_s = s_secs_since(t0);
    free(recs);
    free(bufs);
    journal_stat_t st;
    if (rc == 0) {
        rc = journal_stat(j, &st);
    }
    if (rc != 0) {
        fprintf(stderr, "bench: %s\n", journal_strerror(rc));
        journal_close(&j);
        return 1;
    }
    printf("append:  %" PRIu64 " entries of %" PRIu64 " payload bytes in batches of %" PRIu64
           " (one durable commit each): %.3f s, %.0f entries/s, %.0f commits/s\n",
           entries, len, batch, append_s, (double)entries / append_s,
           (double)((entries + batch - 1) / batch) / append_s);
    printf("disk:    data.mdb %" PRIu64 " bytes, map used %" PRIu64 " bytes: %.1f bytes/entry "
           "(used), %.1f bytes/entry (file); entries tree %" PRIu64 " leaf + %" PRIu64
           " branch pages\n",
           st.file_size_bytes, st.map_used_bytes, (double)st.map_used_bytes / (double)entries,
           (double)st.file_size_bytes / (double)entries, st.entries_leaf_pages,
           st.entries_branch_pages);

    t0 = s_mono_us();
    journal_reader_t *r = NULL;
    journal_entry_t e;
    uint64_t n_read = 0;
    rc = journal_reader_open(j, 1, &r);
    while (rc == 0 && (rc = journal_reader_next(r, &e)) == 0) {
        n_read++;
    }
    journal_reader_close(&r);
    double read_s = s_secs_since(t0);
    t0 = s_mono_us();
    journal_verify_stats_t vs;
    int vrc = journal_verify(j, 0, 0, NULL, &vs);
    double verify_s = s_secs_since(t0);
    t0 = s_mono_us();
    int crc = journal_copy(j, s_path("copy"));
    double copy_s = s_secs_since(t0);
    journal_close(&j);
    struct stat sb;
    if (rc != JOURNAL_END || n_read != entries || vrc != 0 || crc != 0 ||
        stat(s_path("copy/data.mdb"), &sb) != 0) {
        fprintf(stderr, "bench: read/verify/copy failed\n");
        return 1;
    }
    printf("read:    reader (verifying, copying out) %.0f entries/s; journal_verify %.0f "
           "entries/s\n",
           (double)n_read / read_s, (double)vs.entries_checked / verify_s);
    printf("copy:    compacting hot copy %.3f s, %lld bytes: %.1f bytes/entry\n", copy_s,
           (long long)sb.st_size, (double)sb.st_size / (double)entries);
    return 0;
}

/* ---- Runner ------------------------------------------------------------------------------- */

struct s_test {
    const char *name;
    void (*fn)(void);
};

#define S_TEST(name)       \
    {                      \
#name, test_##name \
    }

static const struct s_test s_tests[] = {
    S_TEST(open_creates_directory_and_empty_journal),
    S_TEST(read_only_open_of_a_missing_journal_is_not_found),
    S_TEST(options_out_of_range_are_refused),
    S_TEST(append_then_reopen_keeps_entries_and_head),
    S_TEST(grow_ahead_puts_synced_zeros_past_the_used_pages),
    S_TEST(grow_ahead_stops_at_its_limits),
    S_TEST(grow_ahead_waits_for_an_open_write_transaction),
    S_TEST(grow_ahead_survives_map_growth),
    S_TEST(ahead_thread_never_writes_over_a_commit),
    S_TEST(sequence_numbers_are_gap_free_across_batches_and_reopen),
    S_TEST(failed_fill_leaves_no_trace_and_next_append_gets_next_seq),
    S_TEST(fill_writes_its_own_database_in_the_same_transaction),
    S_TEST(append_entry_copies_a_journal_verbatim),
    S_TEST(append_entry_refuses_a_gap_and_a_bad_hash_and_changes_nothing),
    S_TEST(oversized_payload_or_batch_is_refused_and_changes_nothing),
    S_TEST(read_only_journal_refuses_writes),
    S_TEST(verify_accepts_the_whole_chain_and_ranges),
    S_TEST(reader_from_the_middle_returns_the_rest_in_order),
    S_TEST(reader_returns_entries_appended_after_it_reached_the_end),
    S_TEST(reader_spans_many_refills_and_largest_payloads),
    S_TEST(read_copies_one_entry_and_refuses_a_small_buffer),
    S_TEST(stat_reports_entries_sizes_and_timestamps),
    S_TEST(flipped_payload_byte_is_reported_at_its_sequence),
    S_TEST(flipped_header_bytes_are_reported_at_their_sequence),
    S_TEST(writer_refuses_a_journal_whose_last_entry_is_damaged),
    S_TEST(missing_entry_is_reported_as_corrupt_at_its_sequence),
    S_TEST(different_format_version_is_refused),
    S_TEST(other_lmdb_environment_is_refused),
    S_TEST(strerror_names_every_code),
    S_TEST(worked_example_in_the_docs_matches_the_encoder),
    S_TEST(map_grows_from_1_mib_to_hold_20_mib_of_entries),
    S_TEST(map_growth_stops_at_the_configured_maximum),
    S_TEST(reader_process_sees_a_gap_free_chain_while_the_writer_grows_the_map),
    S_TEST(hot_copy_while_a_writer_process_appends_is_a_verified_prefix),
    S_TEST(reader_threads_keep_reading_while_the_writer_grows_the_map),
    S_TEST(fill_whose_own_put_fills_the_map_is_rerun_after_growth),
    S_TEST(growing_the_map_while_this_thread_holds_a_read_txn_is_refused_not_deadlocked),
    S_TEST(appends_of_a_second_writer_process_are_chained_onto),
    S_TEST(writer_killed_mid_stream_leaves_whole_batches_and_an_intact_chain),
    S_TEST(export_of_the_same_payloads_checks_out_and_imports_as_the_journal),
    S_TEST(damaged_export_is_refused_with_the_entry_named_and_imports_nothing),
    S_TEST(export_never_overwrites_and_a_failed_one_leaves_no_file),
    S_TEST(tool_help_and_version_exit_zero),
    S_TEST(tool_usage_errors_exit_1),
    S_TEST(tool_on_a_missing_journal_exits_2),
    S_TEST(tool_verify_counts_the_entries_of_an_intact_journal),
    S_TEST(tool_dump_prints_one_json_line_per_entry),
    S_TEST(tool_dump_masks_card_codes_and_never_prints_pin_hashes),
    S_TEST(tool_stat_prints_text_and_json),
    S_TEST(tool_copy_makes_a_verified_backup_and_never_overwrites_one),
};

static int
s_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static bool
s_selected(int argc, char **argv, const char *name)
{
    if (argc < 2) {
        return true;
    }
    for (int i = 1; i < argc; i++) {
        if (strstr(name, argv[i]) != NULL) {
            return true;
        }
    }
    return false;
}

int
main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    s_join(s_root, (tmp != NULL && *tmp != '\0') ? tmp : "/tmp", "test-journal-XXXXXX");
    if (mkdtemp(s_root) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", s_root, strerror(errno));
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        int rc = s_bench(argc, argv);
        nftw(s_root, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return rc;
    }
    int passed = 0;
    int failed = 0;
    for (size_t i = 0; i < sizeof(s_tests) / sizeof(s_tests[0]); i++) {
        const struct s_test *t = &s_tests[i];
        if (!s_selected(argc, argv, t->name)) {
            continue;
        }
        char num[32];
        snprintf(num, sizeof(num), "%zu", i);
        s_join(s_test_dir, s_root, num);
        if (mkdir(s_test_dir, 0700) != 0) {
            fprintf(stderr, "mkdir %s: %s\n", s_test_dir, strerror(errno));
            return 1;
        }
        printf("%-75s ", t->name);
        fflush(stdout);
        s_test_failed = false;
        int64_t t0 = s_mono_ms();
        t->fn();
        int64_t ms = s_mono_ms() - t0;
        printf("%s (%" PRId64 " ms)\n", s_test_failed ? "FAIL" : "ok", ms);
        fflush(stdout);
        if (s_test_failed) {
            failed++;
        } else {
            passed++;
        }
    }
    nftw(s_root, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
