/*
 * The streaming JSON writer (see json.h). It tracks, per nesting level, whether a comma is due,
 * so callers write members in order without thinking about separators.
 */
#include "json.h"

#include <assert.h>
#include <inttypes.h>

void
json_init(json_t *j, FILE *f)
{
    assert(j != NULL && f != NULL);
    j->f = f;
    j->depth = 0;
    j->has_items[0] = false;
}

void
json_write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7F)
                fprintf(f, "\\u%04x", (unsigned)*p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* Writes the separator and the key before a value at the current level. */
static void
s_member(json_t *j, const char *key)
{
    if (j->has_items[j->depth])
        fputc(',', j->f);
    j->has_items[j->depth] = true;
    if (key != NULL) {
        json_write_string(j->f, key);
        fputc(':', j->f);
    }
}

static void
s_open(json_t *j, const char *key, char ch)
{
    assert(j->depth + 1 < JSON_DEPTH_MAX);
    s_member(j, key);
    fputc(ch, j->f);
    j->depth++;
    j->has_items[j->depth] = false;
}

static void
s_close(json_t *j, char ch)
{
    assert(j->depth > 0);
    j->depth--;
    fputc(ch, j->f);
    if (j->depth == 0) {
        fputc('\n', j->f);
        j->has_items[0] = false; /* the next top-level value is a new line, not a list */
    }
}

void
json_object_begin(json_t *j, const char *key)
{
    s_open(j, key, '{');
}

void
json_object_end(json_t *j)
{
    s_close(j, '}');
}

void
json_array_begin(json_t *j, const char *key)
{
    s_open(j, key, '[');
}

void
json_array_end(json_t *j)
{
    s_close(j, ']');
}

void
json_str(json_t *j, const char *key, const char *value)
{
    s_member(j, key);
    if (value == NULL)
        fputs("null", j->f);
    else
        json_write_string(j->f, value);
}

void
json_i64(json_t *j, const char *key, int64_t value)
{
    s_member(j, key);
    fprintf(j->f, "%" PRId64, value);
}

void
json_u64(json_t *j, const char *key, uint64_t value)
{
    s_member(j, key);
    fprintf(j->f, "%" PRIu64, value);
}

void
json_bool(json_t *j, const char *key, bool value)
{
    s_member(j, key);
    fputs(value ? "true" : "false", j->f);
}
