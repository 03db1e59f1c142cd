/*
 * Unit tests of the CLI's socket-free pieces: exact amount, percentage and time parsing
 * (client/units.c), the RFC 4180 CSV reader and writer (client/csv.c), the JSON writer
 * (client/json.c), and the request ids of libcardledger.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cardledger.h"
#include "check.h"
#include "csv.h"
#include "json.h"
#include "units.h"

/* ---- amounts -------------------------------------------------------------------------------- */

static int64_t
s_amount(const char *s, bool minor, int *out_rc)
{
    int64_t v = -12345;
    *out_rc = units_amount_parse(s, minor, &v);
    return v;
}

static void
amounts_in_major_units_become_exact_minor_units(void)
{
    int rc;
    CHECK_EQ_INT(s_amount("12.50", false, &rc), 1250);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s_amount("12.5", false, &rc), 1250);
    CHECK_EQ_INT(s_amount("12", false, &rc), 1200);
    CHECK_EQ_INT(s_amount("0.01", false, &rc), 1);
    CHECK_EQ_INT(s_amount(".5", false, &rc), 50);
    CHECK_EQ_INT(s_amount("-5.00", false, &rc), -500);
    CHECK_EQ_INT(s_amount("+3", false, &rc), 300);
    CHECK_EQ_INT(s_amount("0.29", false, &rc), 29); /* 0.29 is not 28.999... here */
    CHECK_EQ_INT(s_amount("92233720368547758.07", false, &rc), INT64_MAX);
    CHECK_EQ_INT(rc, 0);
}

static void
amounts_in_minor_units_are_whole_numbers(void)
{
    int rc;
    CHECK_EQ_INT(s_amount("1250", true, &rc), 1250);
    CHECK_EQ_INT(rc, 0);
    s_amount("12.50", true, &rc);
    CHECK_EQ_INT(rc, UNITS_EINVAL);
}

static void
amounts_that_would_round_or_overflow_are_refused(void)
{
    const char *bad[] = { "12.505", "1.", "", "-", "abc", "12,50", "1e3", "12.5x", " 12", "--1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc;
        int64_t v = s_amount(bad[i], false, &rc);
        CHECK_EQ_INT(rc, UNITS_EINVAL);
        CHECK_EQ_INT(v, -12345); /* untouched on failure */
    }
    int rc;
    s_amount("92233720368547758.08", false, &rc);
    CHECK_EQ_INT(rc, UNITS_ERANGE);
    s_amount("99999999999999999999", true, &rc);
    CHECK_EQ_INT(rc, UNITS_ERANGE);
}

static void
amounts_format_with_two_decimals(void)
{
    char buf[UNITS_FORMAT_MAX];
    units_amount_format(1250, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "12.50");
    units_amount_format(-5, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "-0.05");
    units_amount_format(0, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "0.00");
    units_amount_format(INT64_MIN, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "-92233720368547758.08");
}

static void
percentages_read_as_basis_points(void)
{
    uint32_t bp = 0;
    CHECK_EQ_INT(units_percent_parse("15%", &bp), 0);
    CHECK_EQ_INT(bp, 1500);
    CHECK_EQ_INT(units_percent_parse("12.5%", &bp), 0);
    CHECK_EQ_INT(bp, 1250);
    CHECK_EQ_INT(units_percent_parse("0.01%", &bp), 0);
    CHECK_EQ_INT(bp, 1);
    CHECK_EQ_INT(units_percent_parse("1500", &bp), 0);
    CHECK_EQ_INT(bp, 1500);
    CHECK_EQ_INT(units_percent_parse("100%", &bp), 0);
    CHECK_EQ_INT(bp, 10000);
    CHECK(units_percent_parse("0%", &bp) < 0);
    CHECK(units_percent_parse("101%", &bp) < 0);
    CHECK(units_percent_parse("10001", &bp) < 0);
    CHECK(units_percent_parse("12.345%", &bp) < 0);
    CHECK(units_percent_parse("-5%", &bp) < 0);
}

static void
whole_numbers_respect_their_bounds(void)
{
    uint64_t u;
    CHECK_EQ_INT(units_u64_parse("42", 100, &u), 0);
    CHECK_EQ_U64(u, 42);
    CHECK_EQ_INT(units_u64_parse("101", 100, &u), UNITS_ERANGE);
    CHECK_EQ_INT(units_u64_parse("18446744073709551616", UINT64_MAX, &u), UNITS_ERANGE);
    CHECK_EQ_INT(units_u64_parse("-1", 100, &u), UNITS_EINVAL);
    int64_t i;
    CHECK_EQ_INT(units_i64_parse("-3", -10, 10, &i), 0);
    CHECK_EQ_INT(i, -3);
    CHECK_EQ_INT(units_i64_parse("1.5", -10, 10, &i), UNITS_EINVAL);
    CHECK_EQ_INT(units_i64_parse("-11", -10, 10, &i), UNITS_ERANGE);
}

/* ---- times ---------------------------------------------------------------------------------- */

static void
times_parse_as_utc_microseconds(void)
{
    int64_t us = 0;
    CHECK_EQ_INT(units_time_parse("1970-01-01", &us), 0);
    CHECK_EQ_INT(us, 0);
    CHECK_EQ_INT(units_time_parse("2026-01-01", &us), 0);
    CHECK_EQ_INT(us, 1767225600000000LL);
    CHECK_EQ_INT(units_time_parse("2026-01-01T00:00:01Z", &us), 0);
    CHECK_EQ_INT(us, 1767225601000000LL);
    CHECK_EQ_INT(units_time_parse("2024-02-29 12:30", &us), 0);
    CHECK_EQ_INT(us, 1709209800000000LL);
    CHECK_EQ_INT(units_time_parse("@123", &us), 0);
    CHECK_EQ_INT(us, 123);
    CHECK(units_time_parse("2025-02-29", &us) < 0); /* not a leap year */
    CHECK(units_time_parse("2026-13-01", &us) < 0);
    CHECK(units_time_parse("2026-01-01T24:00", &us) < 0);
    CHECK(units_time_parse("2026-1-1", &us) < 0);
    CHECK(units_time_parse("2026-01-01X", &us) < 0);
}

static void
times_format_back_to_what_was_parsed(void)
{
    const char *samples[] = { "1970-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                              "2024-02-29T23:59:59Z", "2099-12-31T12:00:00Z" };
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        int64_t us;
        char buf[UNITS_FORMAT_MAX];
        CHECK_EQ_INT(units_time_parse(samples[i], &us), 0);
        units_time_format(us, buf, sizeof(buf));
        CHECK_EQ_STR(buf, samples[i]);
    }
}

static void
durations_step_the_clock_forward(void)
{
    int64_t us;
    CHECK_EQ_INT(units_duration_parse("+30d", &us), 0);
    CHECK_EQ_INT(us, 30LL * 86400 * 1000000);
    CHECK_EQ_INT(units_duration_parse("+12h", &us), 0);
    CHECK_EQ_INT(us, 12LL * 3600 * 1000000);
    CHECK_EQ_INT(units_duration_parse("+1s", &us), 0);
    CHECK_EQ_INT(us, 1000000);
    CHECK(units_duration_parse("30d", &us) < 0);
    CHECK(units_duration_parse("+d", &us) < 0);
    CHECK(units_duration_parse("+3w", &us) < 0);
    CHECK(units_duration_parse("+99999999999999d", &us) < 0);
}

/* ---- CSV ------------------------------------------------------------------------------------ */

/* Reads every record of text; returns the records as "a|b|c" lines joined by "\n". */
static int
s_csv_all(const char *text, char *out, size_t cap, unsigned long *lines)
{
    csv_t *r = NULL;
    int rc = csv_open(text, strlen(text), NULL, &r);
    if (rc < 0)
        return rc;
    out[0] = '\0';
    size_t k = 0;
    for (;;) {
        char *const *f;
        size_t n;
        unsigned long line;
        rc = csv_next(r, &f, &n, &line);
        if (rc != 0)
            break;
        if (lines != NULL)
            lines[k] = line;
        k++;
        for (size_t i = 0; i < n; i++) {
            strncat(out, f[i], cap - strlen(out) - 1);
            strncat(out, i + 1 < n ? "|" : "\n", cap - strlen(out) - 1);
        }
    }
    if (rc < 0)
        rc = -(int)csv_line(r) * 1000 + rc % 1000; /* line and code in one number */
    csv_close(&r);
    return rc == CSV_END ? 0 : rc;
}

static void
csv_reads_a_bom_quotes_and_line_breaks(void)
{
    char out[512];
    unsigned long lines[8];
    const char *text = "\xEF\xBB\xBFrow_key,holder,face_value\r\n"
                       "e1,\"Zhang, San\",200.00\r\n"
                       "e2,\"say \"\"hi\"\"\",\r\n"
                       "\r\n"
                       "e3,\"two\nlines\",100\n"
                       "e4,\xE5\xBC\xA0\xE4\xB8\x89,1";
    CHECK_EQ_INT(s_csv_all(text, out, sizeof(out), lines), 0);
    CHECK_EQ_STR(out, "row_key|holder|face_value\n"
                      "e1|Zhang, San|200.00\n"
                      "e2|say \"hi\"|\n"
                      "e3|two\nlines|100\n"
                      "e4|\xE5\xBC\xA0\xE4\xB8\x89|1\n");
    CHECK_EQ_INT(lines[0], 1);
    CHECK_EQ_INT(lines[1], 2);
    CHECK_EQ_INT(lines[2], 3);
    CHECK_EQ_INT(lines[3], 5); /* the empty line 4 is skipped */
    CHECK_EQ_INT(lines[4], 7); /* e3 spans lines 5 and 6 */
}

static void
csv_keeps_empty_fields(void)
{
    char out[128];
    CHECK_EQ_INT(s_csv_all("a,,c\n,,\n\"\",x\n", out, sizeof(out), NULL), 0);
    CHECK_EQ_STR(out, "a||c\n||\n|x\n");
}

static void
csv_refuses_what_would_change_a_value(void)
{
    char out[128];
    /* A stray quote, text after a closing quote, an unterminated quote: line and code. */
    CHECK_EQ_INT(s_csv_all("a,b\nx,y\"z\n", out, sizeof(out), NULL), -2000 + CSV_ESTRAY % 1000);
    CHECK_EQ_INT(s_csv_all("a,b\n\"x\"y,z\n", out, sizeof(out), NULL), -2000 + CSV_ESTRAY % 1000);
    CHECK_EQ_INT(s_csv_all("a,b\nx,\"open\n\n", out, sizeof(out), NULL), -2000 + CSV_EQUOTE % 1000);
    /* Invalid UTF-8 (a Latin-1 byte, an overlong slash, a NUL) is named with its line. */
    unsigned long line = 0;
    csv_t *r = NULL;
    const char latin1[] = "a\nb\n\xE9t\xE9\n";
    CHECK_EQ_INT(csv_open(latin1, strlen(latin1), &line, &r), CSV_EUTF8);
    CHECK_EQ_INT(line, 3);
    CHECK(r == NULL);
    const char overlong[] = "\xC0\xAF";
    CHECK_EQ_INT(csv_open(overlong, 2, &line, &r), CSV_EUTF8);
    const char nul[] = "a\0b";
    CHECK_EQ_INT(csv_open(nul, 3, &line, &r), CSV_EUTF8);
}

static void
csv_limits_fields_and_their_length(void)
{
    char *text = malloc(CSV_FIELD_MAX + 8);
    REQUIRE(text != NULL);
    memset(text, 'x', CSV_FIELD_MAX + 1);
    text[CSV_FIELD_MAX + 1] = '\0';
    char out[16];
    CHECK_EQ_INT(s_csv_all(text, out, sizeof(out), NULL), -1000 + CSV_ELONG % 1000);
    free(text);

    char many[CSV_FIELDS_MAX * 2 + 4];
    size_t k = 0;
    for (int i = 0; i <= CSV_FIELDS_MAX; i++) {
        many[k++] = 'a';
        many[k++] = ',';
    }
    many[k - 1] = '\0';
    CHECK_EQ_INT(s_csv_all(many, out, sizeof(out), NULL), -1000 + CSV_EFIELDS % 1000);
}

static void
csv_writer_quotes_only_when_needed(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != NULL);
    csv_write_field(f, "plain");
    fputc('|', f);
    csv_write_field(f, "a,b");
    fputc('|', f);
    csv_write_field(f, "say \"hi\"");
    fputc('|', f);
    csv_write_field(f, "two\nlines");
    fclose(f);
    CHECK_EQ_STR(buf, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"");
    free(buf);
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void
json_escapes_strings_and_separates_members(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != NULL);
    json_t j;
    json_init(&j, f);
    json_object_begin(&j, NULL);
    json_str(&j, "s", "a\"b\\c\n\x01\xE5\xBC\xA0");
    json_i64(&j, "i", -5);
    json_u64(&j, "u", UINT64_MAX);
    json_bool(&j, "b", true);
    json_str(&j, "n", NULL);
    json_array_begin(&j, "a");
    json_i64(&j, NULL, 1);
    json_object_begin(&j, NULL);
    json_object_end(&j);
    json_array_end(&j);
    json_object_end(&j);
    json_object_begin(&j, NULL);
    json_object_end(&j);
    fclose(f);
    CHECK_EQ_STR(buf, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xE5\xBC\xA0\",\"i\":-5,"
                      "\"u\":18446744073709551615,\"b\":true,\"n\":null,\"a\":[1,{}]}\n{}\n");
    free(buf);
}

/* ---- request ids and options ---------------------------------------------------------------- */

static void
request_ids_are_short_base32_and_fresh(void)
{
    char a[CL_REQUEST_ID_MAX + 1], b[CL_REQUEST_ID_MAX + 1];
    cl_client_new_request_id(a);
    cl_client_new_request_id(b);
    CHECK_EQ_INT(strlen(a), CL_CLIENT_REQUEST_ID_LEN);
    CHECK(strspn(a, "abcdefghijklmnopqrstuvwxyz234567") == strlen(a));
    CHECK(strcmp(a, b) != 0);
}

/* The value of the first 10 characters of an id (50 bits: 48 of milliseconds, then 2 random). */
static uint64_t
s_id_prefix(const char *id)
{
    static const char digits[] = "234567abcdefghijklmnopqrstuvwxyz";
    uint64_t v = 0;
    for (int i = 0; i < 10; i++)
        v = (v << 5) | (uint64_t)(strchr(digits, id[i]) - digits);
    return v;
}

static void
request_ids_start_with_the_time_and_sort_later_when_made_later(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    char a[CL_REQUEST_ID_MAX + 1], b[CL_REQUEST_ID_MAX + 1];
    cl_client_new_request_id(a);
    struct timespec pause = { .tv_sec = 0, .tv_nsec = 3 * 1000 * 1000 };
    nanosleep(&pause, NULL);
    cl_client_new_request_id(b);
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t after_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    CHECK(strcmp(a, b) < 0);
    uint64_t a_ms = s_id_prefix(a) >> 2, b_ms = s_id_prefix(b) >> 2;
    CHECK(a_ms >= before_ms && a_ms <= after_ms);
    CHECK(b_ms >= a_ms + 3 && b_ms <= after_ms);
    /* The random part differs between ids of the same millisecond. */
    char c[CL_REQUEST_ID_MAX + 1], d[CL_REQUEST_ID_MAX + 1];
    cl_client_new_request_id(c);
    cl_client_new_request_id(d);
    CHECK(strcmp(c + 10, d + 10) != 0);
}

/* Ids draw their random bits from a per-thread pool: a forked child must not repeat the
 * parent's next id (same millisecond, same pool bytes). */
static void
a_forked_child_does_not_repeat_its_parents_ids(void)
{
    char warm[CL_REQUEST_ID_MAX + 1], mine[CL_REQUEST_ID_MAX + 1];
    char theirs[CL_REQUEST_ID_MAX + 1] = "";
    cl_client_new_request_id(warm); /* the pool is filled now */
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char id[CL_REQUEST_ID_MAX + 1];
        cl_client_new_request_id(id);
        ssize_t n = write(fds[1], id, CL_CLIENT_REQUEST_ID_LEN + 1);
        _exit(n == CL_CLIENT_REQUEST_ID_LEN + 1 ? 0 : 1);
    }
    cl_client_new_request_id(mine);
    CHECK(read(fds[0], theirs, CL_CLIENT_REQUEST_ID_LEN + 1) == CL_CLIENT_REQUEST_ID_LEN + 1);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    CHECK_EQ_INT(strlen(theirs), CL_CLIENT_REQUEST_ID_LEN);
    /* The last 16 characters are random bits only. */
    CHECK(strcmp(mine + 10, theirs + 10) != 0);
    CHECK(strcmp(warm + 10, theirs + 10) != 0);
}

static void
client_open_refuses_bad_options_and_endpoints(void)
{
    cl_client_t *c = NULL;
    cl_client_opts_t o;
    cl_client_opts_init(&o);
    CHECK_EQ_INT(o.timeout_ms, CL_CLIENT_TIMEOUT_MS_DEFAULT);
    CHECK_EQ_INT(o.retries, CL_CLIENT_RETRIES_DEFAULT);
    o.timeout_ms = 0;
    CHECK_EQ_INT(cl_client_open("ipc:///tmp/x", &o, &c), CLIENT_EINVAL);
    cl_client_opts_init(&o);
    o.window = 0;
    CHECK_EQ_INT(cl_client_open("ipc:///tmp/x", &o, &c), CLIENT_EINVAL);
    CHECK_EQ_INT(cl_client_open("nonsense", NULL, &c), CLIENT_EINVAL);
    CHECK_EQ_INT(cl_client_open(NULL, NULL, &c), CLIENT_EINVAL);
    CHECK(c == NULL);
    CHECK(strcmp(cl_client_strerror(CLIENT_ETIMEOUT), cl_client_strerror(CLIENT_EPROTO)) != 0);
    cl_client_close(NULL);
    cl_client_close(&c);
}

static void
client_send_refuses_empty_and_oversized_batches(void)
{
    cl_client_t *c = NULL;
    REQUIRE(cl_client_open("ipc:///nonexistent/cardledger.sock", NULL, &c) == 0);
    static cl_command_t cmds[CL_BATCH_REQUESTS_MAX + 1];
    static cl_reply_t replies[CL_BATCH_REQUESTS_MAX + 1];
    uint64_t tag = 0;
    CHECK_EQ_INT(cl_client_send(c, cmds, 0, &tag), CLIENT_EINVAL);
    CHECK_EQ_INT(cl_client_send(c, cmds, CL_BATCH_REQUESTS_MAX + 1, &tag), CLIENT_EINVAL);
    CHECK_EQ_INT(cl_client_call_batch(c, cmds, CL_BATCH_REQUESTS_MAX + 1, replies), CLIENT_EINVAL);
    size_t n = 0;
    CHECK_EQ_INT(cl_client_recv(c, 0, replies, 1, &n, &tag), CLIENT_EEMPTY);
    /* An unknown command type cannot be encoded: refused before anything is sent. */
    cmds[0].type = (cl_command_type_t)999;
    CHECK_EQ_INT(cl_client_send(c, cmds, 1, &tag), CLIENT_EENCODE);
    CHECK_EQ_INT(cl_client_outstanding(c), 0);
    cl_client_close(&c);
    CHECK(c == NULL);
}

int
main(int argc, char **argv)
{
    static const check_case_t cases[] = {
        CHECK_CASE(amounts_in_major_units_become_exact_minor_units),
        CHECK_CASE(amounts_in_minor_units_are_whole_numbers),
        CHECK_CASE(amounts_that_would_round_or_overflow_are_refused),
        CHECK_CASE(amounts_format_with_two_decimals),
        CHECK_CASE(percentages_read_as_basis_points),
        CHECK_CASE(whole_numbers_respect_their_bounds),
        CHECK_CASE(times_parse_as_utc_microseconds),
        CHECK_CASE(times_format_back_to_what_was_parsed),
        CHECK_CASE(durations_step_the_clock_forward),
        CHECK_CASE(csv_reads_a_bom_quotes_and_line_breaks),
        CHECK_CASE(csv_keeps_empty_fields),
        CHECK_CASE(csv_refuses_what_would_change_a_value),
        CHECK_CASE(csv_limits_fields_and_their_length),
        CHECK_CASE(csv_writer_quotes_only_when_needed),
        CHECK_CASE(json_escapes_strings_and_separates_members),
        CHECK_CASE(request_ids_are_short_base32_and_fresh),
        CHECK_CASE(request_ids_start_with_the_time_and_sort_later_when_made_later),
        CHECK_CASE(a_forked_child_does_not_repeat_its_parents_ids),
        CHECK_CASE(client_open_refuses_bad_options_and_endpoints),
        CHECK_CASE(client_send_refuses_empty_and_oversized_batches),
    };
    return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
