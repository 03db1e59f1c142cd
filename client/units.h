/*
 * Units on the command line: money, counts, percentages and times, parsed exactly.
 *
 * The CLI takes money in decimal major units ("12.50" is 1250 minor units) or, with --minor, as
 * an integer count of minor units. Parsing is done on the digits of the string, never through
 * floating point, and every step is overflow-checked, so what the user typed is exactly what
 * the ledger receives. Major units have two decimals (fen, cents): the exponent of CNY, USD, EUR
 * and most currencies; for others, use --minor.
 *
 * Times are UTC. Dates are ISO 8601 ("2026-05-01", "2026-05-01T09:30:00Z"); "@N" is N
 * microseconds since the Unix epoch, as the wire carries them.
 */
#ifndef CARDLEDGER_UNITS_H
#define CARDLEDGER_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UNITS_EINVAL (-36101) /* not a number, date or percentage in the accepted form */
#define UNITS_ERANGE (-36102) /* well formed, but outside the allowed range */

/* Decimal places of a major unit on the command line. */
#define UNITS_MINOR_DIGITS 2

/* Room for any formatted amount ("-92233720368547758.08") or time, with the NUL. */
#define UNITS_FORMAT_MAX 32

const char *units_strerror(int rc);

/*
 * Parses an amount: "12.50", "12.5", "12", "-3.00", or with minor set an integer of minor units
 * ("1250"). An optional leading '+' or '-' is accepted (the ledger decides whether a sign is
 * allowed for the command). Returns 0, UNITS_EINVAL (more than two decimals, stray characters)
 * or UNITS_ERANGE (does not fit int64).
 */
int units_amount_parse(const char *s, bool minor, int64_t *out_minor);

/* Formats minor units as major units with two decimals: 1250 -> "12.50", -5 -> "-0.05". */
void units_amount_format(int64_t minor, char *buf, size_t cap);

/* Parses a decimal integer without sign in [0, max]. Returns 0, UNITS_EINVAL or UNITS_ERANGE. */
int units_u64_parse(const char *s, uint64_t max, uint64_t *out);

/* Parses a decimal integer with an optional sign in [min, max]. */
int units_i64_parse(const char *s, int64_t min, int64_t max, int64_t *out);

/* Parses a percentage as basis points: "1500" (basis points), "15%", "12.5%", "0.01%"; the
 * result is in 1..10000. */
int units_percent_parse(const char *s, uint32_t *out_bp);

/*
 * Parses a UTC time: "YYYY-MM-DD" (midnight), "YYYY-MM-DDTHH:MM[:SS][Z]" (a space may replace
 * the T) or "@N" (N microseconds since the epoch). Years 1970..9999.
 */
int units_time_parse(const char *s, int64_t *out_us);

/* Parses a duration "+N" followed by a unit: "d" days, "h" hours, "m" minutes, "s" seconds. */
int units_duration_parse(const char *s, int64_t *out_us);

/* Formats a UTC time as "YYYY-MM-DDTHH:MM:SSZ" (sub-second digits dropped). */
void units_time_format(int64_t us, char *buf, size_t cap);

#endif /* CARDLEDGER_UNITS_H */
