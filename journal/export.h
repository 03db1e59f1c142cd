/*
 * export: a journal written out as one portable, checksummed file, and read back in.
 *
 * An export holds entries 1 .. N of a journal. Each is an entry value of the journal's own
 * format (docs/journal-format.md section 3: the 40-byte header, then the payload), chained by
 * the same hash rule, between a fixed 64-byte header and a 64-byte trailer. Every integer has a
 * fixed byte order, so the file reads the same on any machine, and the trailer ends with an
 * XXH3-128 of every byte before it. Section 10 of that document specifies the bytes.
 *
 * The payloads are what the caller's transform made of the journal's: the journal knows bytes,
 * never card rules, so what an export leaves out of an event is the caller's to decide
 * (cardledger-journal uses codec_event_export()). The export's hash chain is over its own
 * bytes; its trailer also keeps the source journal's stored hash of entry N, which ties the
 * file to the journal it came from (compare it with `cardledger-journal stat` of the source).
 * The hashes and the checksum catch accidents, not forgery: anyone can write a consistent file.
 *
 * Reading one back (journal_import()) checks the whole file before it writes anything, and
 * appends its entries verbatim into an empty journal, where every journal tool and the replay
 * work on them as on any journal.
 */
#ifndef CARDLEDGER_JOURNAL_EXPORT_H
#define CARDLEDGER_JOURNAL_EXPORT_H

#include <stdint.h>

#include "journal.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The export format version this code writes and reads (the header's version field). */
#define JOURNAL_EXPORT_VERSION 1u
/** Sizes of the fixed parts of an export file. */
#define JOURNAL_EXPORT_HEADER_SIZE  64u
#define JOURNAL_EXPORT_TRAILER_SIZE 64u

/** What an export says of itself (filled by journal_export(), journal_export_check() and
 *  journal_import()). */
typedef struct journal_export_info {
    /** The source journal's id (journal.meta). */
    uint8_t journal_id[JOURNAL_ID_SIZE];
    /** When the export was written, microseconds since the Unix epoch. */
    int64_t exported_at_us;
    /** Entries in the file: sequence numbers 1 .. entries. */
    uint64_t entries;
    /** Sum of the entries' payload lengths. */
    uint64_t payload_bytes;
    /** The export's own chain hash of its last entry (zeros when it has none). */
    uint8_t last_hash[JOURNAL_HASH_SIZE];
    /** The source journal's stored hash of that entry (zeros when none). */
    uint8_t source_hash[JOURNAL_HASH_SIZE];
    /** After JOURNAL_ECORRUPT or JOURNAL_ECHAIN: the first bad entry's sequence number, or 0
     *  when the damage is outside the entries (header, trailer, checksum, a file cut short or
     *  grown, which moves the trailer). After a transform's failure in journal_export(): the
     *  entry it failed on. */
    uint64_t bad_seq;
} journal_export_info_t;

/**
 * Makes an export's payload out of one journal entry.
 *
 * @param e        the verified journal entry (its payload valid during the call only).
 * @param out      room for the new payload, @p cap (JOURNAL_PAYLOAD_MAX) bytes.
 * @param out_len  receives the new payload's length.
 * @return 0, or any non-zero value: journal_export() then stops and returns it.
 */
typedef int (*journal_export_fn)(const journal_entry_t *e, uint8_t *out, size_t cap,
                                 size_t *out_len, void *ctx);

/**
 * Writes entries 1 .. @p to_seq (0: up to the head) of @p j, each verified as read and passed
 * through @p fn, into a new file at @p path, mode 0600. The file is written as PATH.tmp (made
 * with O_EXCL, never through a symbolic link), synced, and linked to @p path, which never
 * replaces a file there: so @p path never holds half an export, nor does an export overwrite
 * anything.
 *
 * @return 0; -EEXIST when @p path or PATH.tmp exists (a crashed export leaves PATH.tmp: remove
 *         it); JOURNAL_ENOTFOUND when @p to_seq is past the head; JOURNAL_ECORRUPT or
 *         JOURNAL_ECHAIN for a damaged journal entry (info->bad_seq); fn's own non-zero value
 *         (info->bad_seq); JOURNAL_EINVAL; an MDB_* code; a negated errno. On failure nothing is
 *         left at @p path nor PATH.tmp, except when only the final sync of the directory failed:
 *         then the whole export is at @p path, its name maybe not yet durable.
 */
int journal_export(journal_t *j, uint64_t to_seq, const char *path, journal_export_fn fn, void *ctx,
                   journal_export_info_t *out_info);

/**
 * Checks an export file: its header (format, version), every entry's structure and its hash
 * chain from the first, the trailer's count and hashes, and the checksum over the whole file.
 *
 * @param out_info  may be NULL; filled as far as the file was read.
 * @return 0; JOURNAL_EVERSION (not an export, or one of another version); JOURNAL_ECORRUPT
 *         (structure, length, trailer or checksum: info->bad_seq names an entry when the
 *         damage is in one); JOURNAL_ECHAIN (an entry's hash: info->bad_seq); a negated errno.
 */
int journal_export_check(const char *path, journal_export_info_t *out_info);

/**
 * Checks the export at @p path as journal_export_check() does, then appends its entries
 * verbatim into @p dest, which must be an empty journal opened for writing, in transactions of
 * up to JOURNAL_TXN_ENTRIES_MAX entries. Nothing is written unless the whole file checked out;
 * a failure after that (a full disk) leaves the entries of the transactions committed so far:
 * import into a new directory and remove it on failure (as cardledger-journal and
 * cardledger-replay do).
 *
 * @return as journal_export_check(); JOURNAL_EINVAL when @p dest is not empty; then as
 *         journal_write().
 */
int journal_import(const char *path, journal_t *dest, journal_export_info_t *out_info);

#ifdef __cplusplus
}
#endif

#endif /* CARDLEDGER_JOURNAL_EXPORT_H */
