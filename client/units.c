/*
 * Exact parsing and formatting of the units the CLI reads and prints (see units.h).
 *
 * Everything here works on characters and int64 arithmetic with explicit overflow checks
 * (the GCC/Clang __builtin_*_overflow family), so no value is ever rounded.
 */
#include "units.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define US_PER_S   INT64_C(1000000)
#define S_PER_DAY  INT64_C(86400)
#define YEAR_FIRST 1970
#define YEAR_LAST  9999

const char *
units_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case UNITS_EINVAL:
        return "not in the accepted form";
    case UNITS_ERANGE:
        return "out of range";
    default:
        return "unknown units error";
    }
}

static bool
s_is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Appends one decimal digit to *acc (non-negative), checking for overflow. */
static int
s_push_digit(int64_t *acc, char ch)
{
    assert(s_is_digit(ch));
    int64_t v;
    if (__builtin_mul_overflow(*acc, 10, &v) || __builtin_add_overflow(v, ch - '0', &v))
        return UNITS_ERANGE;
    *acc = v;
    return 0;
}

/*
 * Parses [+-]digits[.digits] with at most `decimals` digits after the point, scaled to an integer
 * of 10^-decimals units. Negative values are built as the negation of a non-negative one, so
 * INT64_MIN is out of range; no amount the ledger accepts comes near it.
 */
static int
s_decimal_parse(const char *s, unsigned decimals, int64_t *out)
{
    if (s == NULL || out == NULL)
        return UNITS_EINVAL;
    const char *p = s;
    bool negative = false;
    if (*p == '+' || *p == '-') {
        negative = *p == '-';
        p++;
    }
    int64_t acc = 0;
    unsigned int_digits = 0;
    while (s_is_digit(*p)) {
        int rc = s_push_digit(&acc, *p++);
        if (rc < 0)
            return rc;
        int_digits++;
    }
    unsigned frac_digits = 0;
    if (*p == '.') {
        p++;
        while (s_is_digit(*p)) {
            if (frac_digits == decimals)
                return UNITS_EINVAL; /* more precision than the unit has: never round */
            int rc = s_push_digit(&acc, *p++);
            if (rc < 0)
                return rc;
            frac_digits++;
        }
        if (frac_digits == 0)
            return UNITS_EINVAL; /* "12." */
    }
    if (int_digits == 0 && frac_digits == 0)
        return UNITS_EINVAL;
    if (*p != '\0')
        return UNITS_EINVAL;
    for (; frac_digits < decimals; frac_digits++) {
        if (__builtin_mul_overflow(acc, 10, &acc))
            return UNITS_ERANGE;
    }
    *out = negative ? -acc : acc;
    return 0;
}

int
units_amount_parse(const char *s, bool minor, int64_t *out_minor)
{
    return s_decimal_parse(s, minor ? 0 : UNITS_MINOR_DIGITS, out_minor);
}

void
units_amount_format(int64_t minor, char *buf, size_t cap)
{
    assert(buf != NULL && cap > 0);
    /* Work on the magnitude as uint64 so INT64_MIN prints too. */
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    snprintf(buf, cap, "%s%" PRIu64 ".%02" PRIu64, minor < 0 ? "-" : "", mag / 100, mag % 100);
}

int
units_u64_parse(const char *s, uint64_t max, uint64_t *out)
{
    if (s == NULL || out == NULL || *s == '\0')
        return UNITS_EINVAL;
    uint64_t acc = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (!s_is_digit(*p))
            return UNITS_EINVAL;
        if (__builtin_mul_overflow(acc, 10, &acc) ||
            __builtin_add_overflow(acc, (uint64_t)(*p - '0'), &acc))
            return UNITS_ERANGE;
    }
    if (acc > max)
        return UNITS_ERANGE;
    *out = acc;
    return 0;
}

int
units_i64_parse(const char *s, int64_t min, int64_t max, int64_t *out)
{
    assert(min <= max);
    if (s == NULL || out == NULL)
        return UNITS_EINVAL;
    int64_t v;
    int rc = s_decimal_parse(s, 0, &v);
    if (rc < 0)
        return rc;
    if (strchr(s, '.') != NULL)
        return UNITS_EINVAL;
    if (v < min || v > max)
        return UNITS_ERANGE;
    *out = v;
    return 0;
}

int
units_percent_parse(const char *s, uint32_t *out_bp)
{
    if (s == NULL || out_bp == NULL)
        return UNITS_EINVAL;
    size_t len = strlen(s);
    int64_t bp;
    if (len > 0 && s[len - 1] == '%') {
        /* "12.5%": percent with up to two decimals is basis points exactly. */
        char tmp[UNITS_FORMAT_MAX];
        if (len >= sizeof(tmp))
            return UNITS_EINVAL;
        memcpy(tmp, s, len - 1);
        tmp[len - 1] = '\0';
        if (tmp[0] == '+' || tmp[0] == '-')
            return UNITS_EINVAL;
        int rc = s_decimal_parse(tmp, 2, &bp);
        if (rc < 0)
            return rc;
    } else {
        uint64_t v;
        int rc = units_u64_parse(s, UINT32_MAX, &v);
        if (rc < 0)
            return rc;
        bp = (int64_t)v;
    }
    if (bp < 1 || bp > 10000)
        return UNITS_ERANGE;
    *out_bp = (uint32_t)bp;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t
s_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    assert(m >= 1 && m <= 12 && d >= 1 && d <= 31);
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* The inverse of s_days_from_civil(). */
static void
s_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static bool
s_is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Reads exactly n digits at *p into *out and advances *p. */
static bool
s_fixed_digits(const char **p, unsigned n, unsigned *out)
{
    unsigned v = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!s_is_digit((*p)[i]))
            return false;
        v = v * 10 + (unsigned)((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

int
units_time_parse(const char *s, int64_t *out_us)
{
    if (s == NULL || out_us == NULL)
        return UNITS_EINVAL;
    if (s[0] == '@') {
        int64_t v;
        int rc = units_i64_parse(s + 1, 0, INT64_MAX, &v);
        if (rc < 0)
            return rc;
        *out_us = v;
        return 0;
    }
    static const unsigned mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    const char *p = s;
    unsigned y, mo, d, hh = 0, mi = 0, ss = 0;
    if (!s_fixed_digits(&p, 4, &y) || *p++ != '-' || !s_fixed_digits(&p, 2, &mo) || *p++ != '-' ||
        !s_fixed_digits(&p, 2, &d))
        return UNITS_EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!s_fixed_digits(&p, 2, &hh) || *p++ != ':' || !s_fixed_digits(&p, 2, &mi))
            return UNITS_EINVAL;
        if (*p == ':') {
            p++;
            if (!s_fixed_digits(&p, 2, &ss))
                return UNITS_EINVAL;
        }
        if (*p == 'Z' || *p == 'z')
            p++;
    }
    if (*p != '\0')
        return UNITS_EINVAL;
    if (y < YEAR_FIRST || y > YEAR_LAST || mo < 1 || mo > 12 || d < 1)
        return UNITS_ERANGE;
    unsigned dim = mdays[mo - 1] + (mo == 2 && s_is_leap(y) ? 1u : 0u);
    if (d > dim || hh > 23 || mi > 59 || ss > 59)
        return UNITS_ERANGE;
    int64_t days = s_days_from_civil(y, mo, d);
    int64_t secs = days * S_PER_DAY + (int64_t)hh * 3600 + (int64_t)mi * 60 + (int64_t)ss;
    *out_us = secs * US_PER_S;
    return 0;
}

int
units_duration_parse(const char *s, int64_t *out_us)
{
    if (s == NULL || out_us == NULL || s[0] != '+')
        return UNITS_EINVAL;
    size_t len = strlen(s);
    if (len < 3 || len >= UNITS_FORMAT_MAX)
        return UNITS_EINVAL;
    int64_t unit_us;
    switch (s[len - 1]) {
    case 'd':
        unit_us = S_PER_DAY * US_PER_S;
        break;
    case 'h':
        unit_us = 3600 * US_PER_S;
        break;
    case 'm':
        unit_us = 60 * US_PER_S;
        break;
    case 's':
        unit_us = US_PER_S;
        break;
    default:
        return UNITS_EINVAL;
    }
    char digits[UNITS_FORMAT_MAX];
    memcpy(digits, s + 1, len - 2);
    digits[len - 2] = '\0';
    uint64_t n;
    int rc = units_u64_parse(digits, (uint64_t)INT64_MAX, &n);
    if (rc < 0)
        return rc;
    int64_t v;
    if (__builtin_mul_overflow((int64_t)n, unit_us, &v))
        return UNITS_ERANGE;
    *out_us = v;
    return 0;
}

void
units_time_format(int64_t us, char *buf, size_t cap)
{
    assert(buf != NULL && cap > 0);
    int64_t secs = us / US_PER_S;
    if (us < 0 && us % US_PER_S != 0)
        secs--; /* floor, so times before the epoch still print */
    int64_t days = secs / S_PER_DAY;
    int64_t rem = secs % S_PER_DAY;
    if (rem < 0) {
        rem += S_PER_DAY;
        days--;
    }
    int64_t y;
    unsigned m, d;
    s_civil_from_days(days, &y, &m, &d);
    snprintf(buf, cap, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02uZ", y, m, d, (unsigned)(rem / 3600),
             (unsigned)(rem % 3600 / 60), (unsigned)(rem % 60));
}
