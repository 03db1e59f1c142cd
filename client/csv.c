/*
 * RFC 4180 CSV reading and writing (see csv.h).
 *
 * The reader is a small state machine over the bytes of one record at a time. Field text is
 * copied, unquoted, into one scratch buffer owned by the reader (a record can never be longer
 * than the file, and each field is capped at CSV_FIELD_MAX), and the field pointers point there.
 */
#include "csv.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct csv {
    const char *buf;              /* the file's bytes (not owned) */
    size_t len;                   /* bytes in buf */
    size_t pos;                   /* where the next record starts */
    unsigned long line;           /* line of buf[pos], 1-based */
    char *scratch;                /* unquoted field text of the current record */
    size_t scratch_cap;           /* bytes of scratch */
    char *fields[CSV_FIELDS_MAX]; /* the current record's fields, into scratch */
};

const char *
csv_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case CSV_END:
        return "end of file";
    case CSV_EINVAL:
        return "invalid argument";
    case CSV_ENOMEM:
        return "out of memory";
    case CSV_EQUOTE:
        return "a quoted field is never closed";
    case CSV_ESTRAY:
        return "a double quote inside an unquoted field or after a closing quote "
               "(quote the whole field and double the quotes inside it)";
    case CSV_EUTF8:
        return "the file is not valid UTF-8 (save it as \"CSV UTF-8\")";
    case CSV_EFIELDS:
        return "too many fields in one row";
    case CSV_ELONG:
        return "a field is too long";
    default:
        return "unknown CSV error";
    }
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid or truncated. */
static size_t
s_utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    if (c >= 0x01 && c < 0x80)
        return 1;
    size_t n;
    uint32_t min, cp;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        min = 0x80;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        min = 0x800;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        min = 0x10000;
        cp = c & 0x07;
    } else {
        return 0; /* NUL, a continuation byte, or 0xF8.. */
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0; /* overlong, beyond Unicode, or a surrogate */
    return n;
}

int
csv_open(const char *buf, size_t len, unsigned long *out_bad_line, csv_t **out)
{
    if ((buf == NULL && len > 0) || out == NULL)
        return CSV_EINVAL;
    size_t start = 0;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        start = 3;

    unsigned long line = 1;
    const unsigned char *u = (const unsigned char *)buf;
    for (size_t i = start; i < len;) {
        size_t n = s_utf8_seq(u + i, len - i);
        if (n == 0) {
            if (out_bad_line != NULL)
                *out_bad_line = line;
            return CSV_EUTF8;
        }
        if (u[i] == '\n')
            line++;
        i += n;
    }

    csv_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return CSV_ENOMEM;
    r->buf = buf;
    r->len = len;
    r->pos = start;
    r->line = 1;
    *out = r;
    return 0;
}

void
csv_close(csv_t **r)
{
    if (r == NULL || *r == NULL)
        return;
    free((*r)->scratch);
    free(*r);
    *r = NULL;
}

unsigned long
csv_line(const csv_t *r)
{
    assert(r != NULL);
    return r->line;
}

/* Makes the scratch buffer hold at least `need` bytes. */
static int
s_scratch_reserve(csv_t *r, size_t need)
{
    if (need <= r->scratch_cap)
        return 0;
    size_t cap = r->scratch_cap > 0 ? r->scratch_cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(r->scratch, cap);
    if (p == NULL)
        return CSV_ENOMEM;
    r->scratch = p;
    r->scratch_cap = cap;
    return 0;
}

/* True at an end of line: LF, or CR LF. */
static bool
s_at_eol(const csv_t *r, size_t i)
{
    return r->buf[i] == '\n' || (r->buf[i] == '\r' && i + 1 < r->len && r->buf[i + 1] == '\n');
}

/* Index just past the end of line at i. */
static size_t
s_skip_eol(const csv_t *r, size_t i)
{
    assert(s_at_eol(r, i));
    return r->buf[i] == '\r' ? i + 2 : i + 1;
}

int
csv_next(csv_t *r, char *const **out_fields, size_t *out_n, unsigned long *out_line)
{
    if (r == NULL || out_fields == NULL || out_n == NULL)
        return CSV_EINVAL;

    /* Skip empty lines. */
    while (r->pos < r->len && s_at_eol(r, r->pos)) {
        r->pos = s_skip_eol(r, r->pos);
        r->line++;
    }
    if (r->pos >= r->len)
        return CSV_END;

    /* The unquoted text is never longer than the raw record, plus a NUL per field. The raw
     * record is at most the rest of the file, bounded by fields * (field + NUL) too. */
    size_t need = r->len - r->pos + CSV_FIELDS_MAX;
    size_t bound = (size_t)CSV_FIELDS_MAX * (CSV_FIELD_MAX + 1);
    int rc = s_scratch_reserve(r, need < bound ? need : bound);
    if (rc < 0)
        return rc;

    unsigned long start_line = r->line;
    size_t i = r->pos;
    size_t nfields = 0;
    size_t w = 0; /* write position in scratch */
    for (;;) {
        /* One field starts at i. */
        if (nfields == CSV_FIELDS_MAX)
            return CSV_EFIELDS;
        size_t field_start = w;
        r->fields[nfields++] = r->scratch + w;
        if (i < r->len && r->buf[i] == '"') {
            unsigned long quote_line = r->line;
            i++;
            for (;;) {
                if (i >= r->len) {
                    r->line = quote_line; /* name the line where the quote opened */
                    return CSV_EQUOTE;
                }
                char ch = r->buf[i];
                if (ch == '"') {
                    if (i + 1 < r->len && r->buf[i + 1] == '"') {
                        ch = '"';
                        i += 2;
                    } else {
                        i++;
                        break;
                    }
                } else {
                    if (ch == '\n')
                        r->line++;
                    i++;
                }
                if (w - field_start == CSV_FIELD_MAX)
                    return CSV_ELONG;
                r->scratch[w++] = ch;
            }
            if (i < r->len && r->buf[i] != ',' && !s_at_eol(r, i))
                return CSV_ESTRAY;
        } else {
            while (i < r->len && r->buf[i] != ',' && !s_at_eol(r, i)) {
                if (r->buf[i] == '"')
                    return CSV_ESTRAY;
                if (w - field_start == CSV_FIELD_MAX)
                    return CSV_ELONG;
                r->scratch[w++] = r->buf[i++];
            }
        }
        r->scratch[w++] = '\0';
        if (i < r->len && r->buf[i] == ',') {
            i++;
            continue;
        }
        break; /* end of line or of file */
    }
    if (i < r->len) {
        i = s_skip_eol(r, i);
        r->line++;
    }
    r->pos = i;
    *out_fields = r->fields;
    *out_n = nfields;
    if (out_line != NULL)
        *out_line = start_line;
    return 0;
}

void
csv_write_field(FILE *f, const char *s)
{
    assert(f != NULL);
    if (s == NULL)
        return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '"')
            fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}
