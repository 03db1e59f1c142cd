/*
 * A minimal streaming JSON writer for the CLI's --json output.
 *
 * The CLI prints one JSON object per reply, on one line, so a script can read the output line by
 * line. Only what that needs is here: nested objects and arrays, strings (escaped per RFC 8259;
 * the input is UTF-8 and passes through), integers and booleans. Numbers are int64/uint64:
 * money is always minor units, never a float.
 */
#ifndef CARDLEDGER_JSON_H
#define CARDLEDGER_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_DEPTH_MAX 8 /* nesting of objects and arrays */

typedef struct json {
    FILE *f;                        /* where the text goes */
    unsigned depth;                 /* open objects and arrays */
    bool has_items[JSON_DEPTH_MAX]; /* per level: something written, a comma comes next */
} json_t;

/* Starts a writer on f. */
void json_init(json_t *j, FILE *f);

/* Opens an object or array; key is the member name inside an object, NULL inside an array or
 * at the top. */
void json_object_begin(json_t *j, const char *key);
void json_object_end(json_t *j);
void json_array_begin(json_t *j, const char *key);
void json_array_end(json_t *j);

/* Members (key != NULL) or array elements (key == NULL). json_str writes null for NULL. */
void json_str(json_t *j, const char *key, const char *value);
void json_i64(json_t *j, const char *key, int64_t value);
void json_u64(json_t *j, const char *key, uint64_t value);
void json_bool(json_t *j, const char *key, bool value);

/* Writes s as a quoted, escaped JSON string. */
void json_write_string(FILE *f, const char *s);

#endif /* CARDLEDGER_JSON_H */
