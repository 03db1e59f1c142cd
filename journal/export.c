/*
 * export.c: journal export files (see export.h; the bytes are docs/journal-format.md section
 * 10).
 *
 *   header   64 bytes: "CLEXPORT", version (u32 LE), flags (u32 LE, 0), the source journal's
 *            id (16 bytes), exported_at_us (i64 LE), 24 zero bytes
 *   entries  entry values of the journal format, sequence 1 .. N, hash-chained from zeros
 *   trailer  64 bytes: "CLEXTAIL", N (u64 LE), the last entry's hash, the source journal's
 *            hash of entry N, then XXH3-128 (canonical) of every byte of the file before it
 */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "journal-format.h"

static const char s_head_magic[8] = { 'C', 'L', 'E', 'X', 'P', 'O', 'R', 'T' };
static const char s_tail_magic[8] = { 'C', 'L', 'E', 'X', 'T', 'A', 'I', 'L' };

/* Offsets in the header and the trailer. */
enum {
    S_H_VERSION = 8,
    S_H_FLAGS = 12,
    S_H_JOURNAL_ID = 16,
    S_H_EXPORTED_AT = 32,
    S_H_RESERVED = 40,
    S_T_ENTRIES = 8,
    S_T_LAST_HASH = 16,
    S_T_SOURCE_HASH = 32,
    S_T_CHECKSUM = 48,
};

_Static_assert(S_T_CHECKSUM + JOURNAL_HASH_SIZE == JOURNAL_EXPORT_TRAILER_SIZE, "trailer size");

/* The fewest bytes that can say "an export of this version": the magic and the version. */
#define S_MAGIC_AND_VERSION (S_H_VERSION + 4)

/* ---- Writing ------------------------------------------------------------------------------ */

/* A file being written: its stream and the running checksum of what went into it. */
typedef struct s_out {
    FILE *f;
    XXH3_state_t *sum;
    int err; /* the first write error, as a negated errno */
} s_out_t;

static void
s_write(s_out_t *o, const void *p, size_t n)
{
    if (o->err != 0 || n == 0)
        return;
    if (fwrite(p, 1, n, o->f) != n) {
        o->err = errno != 0 ? -errno : -EIO;
        return;
    }
    (void)XXH3_128bits_update(o->sum, p, n);
}

/* Syncs the directory holding path, so a link into it is durable. */
static int
s_sync_dir(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -ENOMEM;
    int rc = journal_fsync_dir(dirname(copy));
    free(copy);
    return rc;
}

/* Writes the header, the entries and the trailer into o; fills info. */
static int
s_export_into(journal_t *j, uint64_t to_seq, const journal_stat_t *st, s_out_t *o,
              journal_export_fn fn, void *ctx, journal_export_info_t *info)
{
    uint8_t head[JOURNAL_EXPORT_HEADER_SIZE] = { 0 };
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    info->exported_at_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    memcpy(info->journal_id, st->journal_id, JOURNAL_ID_SIZE);
    memcpy(head, s_head_magic, sizeof(s_head_magic));
    journal_format_put_le32(head + S_H_VERSION, JOURNAL_EXPORT_VERSION);
    journal_format_put_le32(head + S_H_FLAGS, 0);
    memcpy(head + S_H_JOURNAL_ID, st->journal_id, JOURNAL_ID_SIZE);
    journal_format_put_le64(head + S_H_EXPORTED_AT, (uint64_t)info->exported_at_us);
    s_write(o, head, sizeof(head));

    uint8_t *payload = malloc(JOURNAL_PAYLOAD_MAX);
    journal_reader_t *r = NULL;
    int rc = payload == NULL ? -ENOMEM : 0;
    if (rc == 0 && to_seq > 0)
        rc = journal_reader_open(j, 1, &r);
    for (uint64_t seq = 1; rc == 0 && seq <= to_seq && o->err == 0; seq++) {
        journal_entry_t e;
        rc = journal_reader_next(r, &e);
        if (rc == JOURNAL_END) {
            rc = JOURNAL_ECORRUPT; /* the head said it was there */
        }
        if (rc != 0) {
            info->bad_seq = journal_reader_bad_seq(r) != 0 ? journal_reader_bad_seq(r) : seq;
            break;
        }
        size_t len = 0;
        rc = fn(&e, payload, JOURNAL_PAYLOAD_MAX, &len, ctx);
        if (rc == 0 && len > JOURNAL_PAYLOAD_MAX)
            rc = JOURNAL_EINVAL;
        if (rc != 0) {
            info->bad_seq = seq;
            break;
        }
        uint8_t hdr[JOURNAL_HEADER_SIZE];
        journal_format_header_encode(hdr, seq, e.timestamp_us, (uint32_t)len, 0);
        journal_format_hash(info->last_hash, hdr, payload, len,
                            hdr + JOURNAL_HEADER_SIZE - JOURNAL_HASH_SIZE);
        memcpy(info->last_hash, hdr + JOURNAL_HEADER_SIZE - JOURNAL_HASH_SIZE, JOURNAL_HASH_SIZE);
        memcpy(info->source_hash, e.hash, JOURNAL_HASH_SIZE);
        s_write(o, hdr, sizeof(hdr));
        s_write(o, payload, len);
        info->entries = seq;
        info->payload_bytes += len;
    }
    journal_reader_close(&r);
    free(payload);
    if (rc != 0)
        return rc;

    uint8_t tail[JOURNAL_EXPORT_TRAILER_SIZE] = { 0 };
    memcpy(tail, s_tail_magic, sizeof(s_tail_magic));
    journal_format_put_le64(tail + S_T_ENTRIES, info->entries);
    memcpy(tail + S_T_LAST_HASH, info->last_hash, JOURNAL_HASH_SIZE);
    memcpy(tail + S_T_SOURCE_HASH, info->source_hash, JOURNAL_HASH_SIZE);
    s_write(o, tail, S_T_CHECKSUM);
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(o->sum));
    if (o->err == 0 && fwrite(canon.digest, 1, JOURNAL_HASH_SIZE, o->f) != JOURNAL_HASH_SIZE)
        o->err = errno != 0 ? -errno : -EIO;
    return o->err;
}

int
journal_export(journal_t *j, uint64_t to_seq, const char *path, journal_export_fn fn, void *ctx,
               journal_export_info_t *out_info)
{
    journal_export_info_t info_local;
    journal_export_info_t *info = out_info != NULL ? out_info : &info_local;
    memset(info, 0, sizeof(*info));
    if (j == NULL || path == NULL || fn == NULL)
        return JOURNAL_EINVAL;
    journal_stat_t st;
    int rc = journal_stat(j, &st);
    if (rc != 0)
        return rc;
    if (to_seq == 0)
        to_seq = st.head_seq;
    if (to_seq > st.head_seq)
        return JOURNAL_ENOTFOUND;
    struct stat sb;
    if (lstat(path, &sb) == 0)
        return -EEXIST; /* early, for a clear answer; link() below is the guard */

    size_t tmp_len = strlen(path) + sizeof(".tmp");
    char *tmp = malloc(tmp_len);
    if (tmp == NULL)
        return -ENOMEM;
    snprintf(tmp, tmp_len, "%s.tmp", path);
    /* Made here and only here (O_EXCL, never through a link), readable by the owner only: the
     * file holds holders, stores and amounts. */
    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        free(tmp);
        return rc;
    }
    s_out_t o = { .f = fdopen(fd, "wb"), .sum = XXH3_createState() };
    if (o.f == NULL || o.sum == NULL) {
        rc = o.f == NULL ? -errno : -ENOMEM;
        if (o.f == NULL)
            close(fd);
    } else {
        (void)XXH3_128bits_reset(o.sum);
        rc = s_export_into(j, to_seq, &st, &o, fn, ctx, info);
        if (rc == 0 && fflush(o.f) != 0)
            rc = -errno;
        if (rc == 0 && fsync(fileno(o.f)) != 0)
            rc = -errno;
    }
    if (o.f != NULL && fclose(o.f) != 0 && rc == 0)
        rc = -errno;
    XXH3_freeState(o.sum);
    /* link() never replaces a file that appeared at path meanwhile, as rename() would. */
    if (rc == 0 && link(tmp, path) != 0)
        rc = -errno;
    (void)unlink(tmp);
    free(tmp);
    if (rc == 0)
        rc = s_sync_dir(path); /* on failure the whole file is at path, its name not synced */
    return rc;
}

/* ---- Reading ------------------------------------------------------------------------------ */

/* An export file mapped for reading. */
typedef struct s_map {
    const uint8_t *p;
    size_t len;
} s_map_t;

static int
s_map_open(const char *path, s_map_t *m)
{
    memset(m, 0, sizeof(*m));
    /* O_NONBLOCK: a FIFO given by mistake must not hang the open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat sb;
    int rc = fstat(fd, &sb) != 0 ? -errno : 0;
    if (rc == 0 && (!S_ISREG(sb.st_mode) || sb.st_size < S_MAGIC_AND_VERSION))
        rc = JOURNAL_EVERSION; /* not an export file at all */
    if (rc == 0 && (uint64_t)sb.st_size > SIZE_MAX)
        rc = -EFBIG;
    if (rc == 0) {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = -errno;
        } else {
            m->p = p;
            m->len = (size_t)sb.st_size;
        }
    }
    close(fd);
    return rc;
}

static void
s_map_close(s_map_t *m)
{
    if (m->p != NULL)
        munmap((void *)(uintptr_t)m->p, m->len);
    m->p = NULL;
}

/* Reads the entry that should be sequence seq at off, bounded by end: its structure decoded
 * into *e (the chain is the caller's), its length in *len. Returns 0 or JOURNAL_ECORRUPT. */
static int
s_entry_at(const s_map_t *m, size_t off, size_t end, uint64_t seq, journal_entry_t *e, size_t *len)
{
    if (end - off < JOURNAL_HEADER_SIZE)
        return JOURNAL_ECORRUPT;
    const uint8_t *val = m->p + off;
    *len = JOURNAL_HEADER_SIZE + journal_format_get_le32(val + JOURNAL_FORMAT_OFF_LEN);
    if (*len > end - off)
        return JOURNAL_ECORRUPT;
    uint8_t key[JOURNAL_FORMAT_KEY_SIZE];
    journal_format_key_encode(seq, key);
    return journal_format_decode(key, sizeof(key), val, *len, e);
}

/* Checks the mapped file (at least S_MAGIC_AND_VERSION bytes); fills info. A file that does not
 * begin with the magic and this version is not an export (JOURNAL_EVERSION); one that does but
 * is cut short or damaged is corrupt. */
static int
s_check(const s_map_t *m, journal_export_info_t *info)
{
    const uint8_t *head = m->p;
    if (memcmp(head, s_head_magic, sizeof(s_head_magic)) != 0 ||
        journal_format_get_le32(head + S_H_VERSION) != JOURNAL_EXPORT_VERSION)
        return JOURNAL_EVERSION;
    if (m->len < JOURNAL_EXPORT_HEADER_SIZE + JOURNAL_EXPORT_TRAILER_SIZE)
        return JOURNAL_ECORRUPT;
    memcpy(info->journal_id, head + S_H_JOURNAL_ID, JOURNAL_ID_SIZE);
    info->exported_at_us = (int64_t)journal_format_get_le64(head + S_H_EXPORTED_AT);
    if (journal_format_get_le32(head + S_H_FLAGS) != 0)
        return JOURNAL_ECORRUPT;
    for (size_t i = S_H_RESERVED; i < JOURNAL_EXPORT_HEADER_SIZE; i++) {
        if (head[i] != 0)
            return JOURNAL_ECORRUPT;
    }
    /* The trailer is the last 64 bytes: a file cut short or grown has no trailer there, and is
     * refused as a whole before its entries are blamed. */
    const uint8_t *tail = m->p + m->len - JOURNAL_EXPORT_TRAILER_SIZE;
    if (memcmp(tail, s_tail_magic, sizeof(s_tail_magic)) != 0)
        return JOURNAL_ECORRUPT;

    /* The entries, as a journal reader checks them: structure, sequence, chain. */
    size_t off = JOURNAL_EXPORT_HEADER_SIZE;
    size_t end = m->len - JOURNAL_EXPORT_TRAILER_SIZE;
    uint8_t prev[JOURNAL_HASH_SIZE] = { 0 };
    uint64_t seq = 0;
    while (off < end) {
        seq++;
        info->bad_seq = seq;
        journal_entry_t e;
        size_t len;
        int rc = s_entry_at(m, off, end, seq, &e, &len);
        if (rc != 0)
            return rc;
        rc = journal_format_check_chain(prev, m->p + off, &e);
        if (rc != 0)
            return rc;
        memcpy(prev, e.hash, JOURNAL_HASH_SIZE);
        info->payload_bytes += e.payload_len;
        info->entries = seq;
        off += len;
    }
    info->bad_seq = 0;

    memcpy(info->last_hash, prev, JOURNAL_HASH_SIZE);
    memcpy(info->source_hash, tail + S_T_SOURCE_HASH, JOURNAL_HASH_SIZE);
    if (journal_format_get_le64(tail + S_T_ENTRIES) != seq ||
        memcmp(tail + S_T_LAST_HASH, prev, JOURNAL_HASH_SIZE) != 0)
        return JOURNAL_ECORRUPT;
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits(m->p, m->len - JOURNAL_HASH_SIZE));
    if (memcmp(canon.digest, tail + S_T_CHECKSUM, JOURNAL_HASH_SIZE) != 0)
        return JOURNAL_ECORRUPT;
    return 0;
}

int
journal_export_check(const char *path, journal_export_info_t *out_info)
{
    journal_export_info_t info_local;
    journal_export_info_t *info = out_info != NULL ? out_info : &info_local;
    memset(info, 0, sizeof(*info));
    if (path == NULL)
        return JOURNAL_EINVAL;
    s_map_t m;
    int rc = s_map_open(path, &m);
    if (rc == 0)
        rc = s_check(&m, info);
    s_map_close(&m);
    return rc;
}

/* The import's position: where the next transaction starts (advanced after each commit). */
typedef struct s_import {
    const s_map_t *m;
    size_t off;
    size_t end;
    size_t txn_end; /* where the last fill stopped */
} s_import_t;

/* Appends up to JOURNAL_TXN_ENTRIES_MAX entries from imp->off (a re-run starts there again). */
static int
s_import_fill(journal_txn_t *txn, void *ctx)
{
    s_import_t *imp = ctx;
    size_t off = imp->off;
    journal_head_t h;
    journal_txn_head(txn, &h);
    for (unsigned n = 0; n < JOURNAL_TXN_ENTRIES_MAX && off < imp->end; n++) {
        /* (Read and bounded again: the file may have changed since s_check() read it.) */
        journal_entry_t e;
        size_t len;
        int rc = s_entry_at(imp->m, off, imp->end, h.seq + n + 1, &e, &len);
        if (rc == 0)
            rc = journal_txn_append_entry(txn, &e); /* checks the chain once more */
        if (rc != 0)
            return rc;
        off += len;
    }
    imp->txn_end = off;
    return 0;
}

int
journal_import(const char *path, journal_t *dest, journal_export_info_t *out_info)
{
    journal_export_info_t info_local;
    journal_export_info_t *info = out_info != NULL ? out_info : &info_local;
    memset(info, 0, sizeof(*info));
    if (path == NULL || dest == NULL)
        return JOURNAL_EINVAL;
    journal_head_t h;
    int rc = journal_head(dest, &h);
    if (rc != 0)
        return rc;
    if (h.seq != 0)
        return JOURNAL_EINVAL;
    s_map_t m;
    rc = s_map_open(path, &m);
    if (rc == 0)
        rc = s_check(&m, info);
    s_import_t imp = { &m, JOURNAL_EXPORT_HEADER_SIZE, 0, 0 };
    if (rc == 0)
        imp.end = m.len - JOURNAL_EXPORT_TRAILER_SIZE; /* s_check() saw that much */
    while (rc == 0 && imp.off < imp.end) {
        rc = journal_write(dest, s_import_fill, &imp, NULL);
        if (rc == 0)
            imp.off = imp.txn_end;
    }
    s_map_close(&m);
    return rc;
}
