/*
 * An RFC 4180 CSV reader and writer for the enterprise batch-issue flow.
 *
 * The reader works on a whole file in memory (the CLI hashes the file's bytes anyway, to derive
 * its idempotent request ids). It accepts what spreadsheets write: a UTF-8 byte-order mark at the
 * start, CRLF or LF line ends, fields in double quotes holding commas, doubled quotes and line
 * breaks. It refuses what would silently change a value: a quote in the middle of an unquoted
 * field, text after a closing quote, an unterminated quote, invalid UTF-8, NUL bytes. Empty
 * lines are skipped. Every record carries the line it starts on, for error messages.
 */
#ifndef CARDLEDGER_CSV_H
#define CARDLEDGER_CSV_H

#include <stddef.h>
#include <stdio.h>

#define CSV_END     1        /* csv_next(): no more records */
#define CSV_EINVAL  (-36201) /* an argument out of its domain */
#define CSV_ENOMEM  (-36202) /* allocation failed */
#define CSV_EQUOTE  (-36203) /* an opened quote never closes */
#define CSV_ESTRAY  (-36204) /* a quote inside an unquoted field, or text after a closing one */
#define CSV_EUTF8   (-36205) /* the bytes are not valid UTF-8 (or hold a NUL) */
#define CSV_EFIELDS (-36206) /* more than CSV_FIELDS_MAX fields in a record */
#define CSV_ELONG   (-36207) /* a field longer than CSV_FIELD_MAX bytes */

#define CSV_FIELDS_MAX 64   /* fields in one record */
#define CSV_FIELD_MAX  1024 /* bytes in one field */

typedef struct csv csv_t;

const char *csv_strerror(int rc);

/*
 * Opens a reader over buf[0..len). The buffer must stay unchanged and alive until csv_close().
 * A leading UTF-8 byte-order mark is skipped. The whole buffer is checked to be UTF-8 first:
 * CSV_EUTF8 then, with *out_bad_line (when not NULL) set to the line of the first bad byte.
 */
int csv_open(const char *buf, size_t len, unsigned long *out_bad_line, csv_t **out);

void csv_close(csv_t **r);

/*
 * Reads the next non-empty record: *out_n fields, NUL-terminated, unquoted, in *out_fields, and
 * the line the record starts on (1-based). The strings belong to the reader and stay valid until
 * the next csv_next() or csv_close(). Returns 0, CSV_END, or a negative CSV_E* code; after an
 * error, csv_line() says the line of the problem (for CSV_EQUOTE, where the quote opened).
 */
int csv_next(csv_t *r, char *const **out_fields, size_t *out_n, unsigned long *out_line);

/* The line the reader is on (1-based); after an error, the line of the problem. */
unsigned long csv_line(const csv_t *r);

/* Writes one field, quoted when it holds a comma, a quote, CR or LF (RFC 4180). */
void csv_write_field(FILE *f, const char *s);

#endif /* CARDLEDGER_CSV_H */
