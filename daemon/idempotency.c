/*
 * idempotency: request id -> (content hash, time, Reply) in LMDB (see idempotency.h).
 */
#include "idempotency.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bytes.h"
#include "domain.h"

#define S_TIME_KEY_MAX (8 + CL_REQUEST_ID_MAX)

/* Times before 1970 sort first; none are expected, but the key stays ordered either way. */
static uint64_t
s_time_key(int64_t at_us)
{
    return (uint64_t)at_us ^ (UINT64_C(1) << 63);
}

static size_t
s_make_time_key(uint8_t *key, int64_t at_us, const char *request_id, size_t id_len)
{
    cl_put_be64(key, s_time_key(at_us));
    memcpy(key + 8, request_id, id_len);
    return 8 + id_len;
}

int
idem_open(MDB_txn *txn, idem_dbs_t *out)
{
    idem_dbs_t d;
    int rc = mdb_dbi_open(txn, IDEM_DB_RECORDS, MDB_CREATE, &d.records);
    if (rc == 0)
        rc = mdb_dbi_open(txn, IDEM_DB_BY_TIME, MDB_CREATE, &d.by_time);
    if (rc == 0)
        *out = d;
    return rc;
}

/* The head of a packed Reply: its request_id field (number 1, length-delimited), which comes
 * first. Returns its length (at most S_ID_HEAD_MAX). */
#define S_ID_HEAD_MAX (1 + 2 + CL_REQUEST_ID_MAX)
static size_t
s_id_head(const char *request_id, size_t id_len, uint8_t *out)
{
    size_t n = 0;
    out[n++] = (1u << 3) | 2u;
    for (size_t v = id_len;; v >>= 7) {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    memcpy(out + n, request_id, id_len);
    return n + id_len;
}

/* Decodes a record's value; *out_whole says whether its reply holds the request id field. */
static int
s_decode(const MDB_val *v, idem_record_t *out, bool *out_whole)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < IDEM_HEADER_LEN ||
        (p[0] != IDEM_RECORD_VERSION && p[0] != IDEM_RECORD_VERSION_WHOLE))
        return IDEM_ECORRUPT;
    *out_whole = p[0] == IDEM_RECORD_VERSION_WHOLE;
    size_t reply_len = cl_get_le32(p + 1 + IDEM_HASH_LEN + 8);
    if (reply_len > v->mv_size - IDEM_HEADER_LEN)
        return IDEM_ECORRUPT;
    memcpy(out->content_hash, p + 1, IDEM_HASH_LEN);
    out->at_us = (int64_t)cl_get_le64(p + 1 + IDEM_HASH_LEN);
    out->reply = p + IDEM_HEADER_LEN;
    out->reply_len = reply_len;
    out->sealed = p + IDEM_HEADER_LEN + reply_len;
    out->sealed_len = v->mv_size - IDEM_HEADER_LEN - reply_len;
    out->owned = NULL;
    return 0;
}

void
idem_record_release(idem_record_t *r)
{
    if (r == NULL)
        return;
    free(r->owned);
    r->owned = NULL;
}

int
idem_get(MDB_txn *txn, const idem_dbs_t *dbs, const char *request_id, idem_record_t *out)
{
    size_t id_len = strlen(request_id);
    if (id_len == 0 || id_len > CL_REQUEST_ID_MAX)
        return MDB_NOTFOUND;
    MDB_val k = { id_len, (void *)(uintptr_t)request_id };
    MDB_val v;
    int rc = mdb_get(txn, dbs->records, &k, &v);
    if (rc != 0)
        return rc;
    idem_record_t r;
    bool whole;
    rc = s_decode(&v, &r, &whole);
    if (rc != 0)
        return rc;
    if (!whole) {
        /* Put the request id back in front: the bytes the reply was sent with. */
        uint8_t head[S_ID_HEAD_MAX];
        size_t head_len = s_id_head(request_id, id_len, head);
        r.owned = malloc(head_len + r.reply_len);
        if (r.owned == NULL)
            return IDEM_ENOMEM;
        memcpy(r.owned, head, head_len);
        memcpy(r.owned + head_len, r.reply, r.reply_len);
        r.reply = r.owned;
        r.reply_len += head_len;
    }
    *out = r;
    return 0;
}

/*
 * mdb_put(), first as an append. For the time index: the daemon's clock never goes back, so a
 * record's time key is almost always the last one, and an append skips the search down the
 * tree. For the records: time-ordered request ids put in order (the daemon sorts a commit's) are
 * mostly past the last one, and an append also splits a full page at its end, not in the middle,
 * so the pages it leaves behind stay full. A key that does not sort after the last one (the same
 * microsecond as the one before with a smaller request id; an id older than the newest, or one
 * not made by time) is put the usual way.
 */
static int
s_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags)
{
    int rc = mdb_put(txn, dbi, k, v, flags | MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        rc = mdb_put(txn, dbi, k, v, flags);
    return rc;
}

int
idem_put(MDB_txn *txn, const idem_dbs_t *dbs, const char *request_id,
         const uint8_t content_hash[IDEM_HASH_LEN], int64_t at_us, const uint8_t *reply,
         size_t reply_len, const uint8_t *sealed, size_t sealed_len)
{
    uint8_t tkey[S_TIME_KEY_MAX];
    size_t id_len = strlen(request_id);
    if (id_len == 0 || id_len > CL_REQUEST_ID_MAX || (reply == NULL && reply_len > 0) ||
        (sealed == NULL && sealed_len > 0) || reply_len > UINT32_MAX)
        return IDEM_EINVAL;

    /* The request id field is left out when the reply begins with it (the key holds it). */
    uint8_t head[S_ID_HEAD_MAX];
    size_t head_len = s_id_head(request_id, id_len, head);
    uint8_t version = IDEM_RECORD_VERSION_WHOLE;
    if (reply_len >= head_len && memcmp(reply, head, head_len) == 0) {
        reply += head_len;
        reply_len -= head_len;
        version = IDEM_RECORD_VERSION;
    }

    MDB_val k = { id_len, (void *)(uintptr_t)request_id };
    MDB_val v = { IDEM_HEADER_LEN + reply_len + sealed_len, NULL };
    int rc = s_put(txn, dbs->records, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    uint8_t *p = v.mv_data;
    p[0] = version;
    memcpy(p + 1, content_hash, IDEM_HASH_LEN);
    cl_put_le64(p + 1 + IDEM_HASH_LEN, (uint64_t)at_us);
    cl_put_le32(p + 1 + IDEM_HASH_LEN + 8, (uint32_t)reply_len);
    if (reply_len > 0)
        memcpy(p + IDEM_HEADER_LEN, reply, reply_len);
    if (sealed_len > 0)
        memcpy(p + IDEM_HEADER_LEN + reply_len, sealed, sealed_len);

    MDB_val tk = { s_make_time_key(tkey, at_us, request_id, id_len), tkey };
    MDB_val tv = { 0, NULL };
    return s_put(txn, dbs->by_time, &tk, &tv, 0);
}

int
idem_purge(MDB_txn *txn, const idem_dbs_t *dbs, int64_t cutoff_us, size_t max_records,
           size_t *out_purged)
{
    MDB_cursor *cur = NULL;
    MDB_val tk, tv;
    size_t purged = 0;
    int rc = mdb_cursor_open(txn, dbs->by_time, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &tk, &tv, MDB_FIRST);
    while (rc == 0 && purged < max_records) {
        if (tk.mv_size <= 8 || tk.mv_size > S_TIME_KEY_MAX) {
            rc = IDEM_ECORRUPT;
            break;
        }
        const uint8_t *key = tk.mv_data;
        int64_t at_us = (int64_t)(cl_get_be64(key) ^ (UINT64_C(1) << 63));
        if (at_us >= cutoff_us)
            break;
        /* The id may have been stored again later (after this record aged out but before it
         * was purged): only the record with this very time goes. */
        MDB_val k = { tk.mv_size - 8, (void *)(uintptr_t)(key + 8) };
        MDB_val v;
        idem_record_t r;
        bool whole;
        rc = mdb_get(txn, dbs->records, &k, &v);
        if (rc == 0 && s_decode(&v, &r, &whole) == 0 && r.at_us == at_us)
            rc = mdb_del(txn, dbs->records, &k, NULL);
        else if (rc == MDB_NOTFOUND || rc == 0)
            rc = 0;
        if (rc != 0)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0)
            break;
        purged++;
        /* After mdb_cursor_del() the cursor rests on the following item, and MDB_NEXT returns
         * that item rather than skipping it. */
        rc = mdb_cursor_get(cur, &tk, &tv, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 && out_purged != NULL)
        *out_purged = purged;
    return rc;
}

/* ---- PINs shown once: sealed apart from the stored reply ---------------------------------- */

/* The PIN slots of a reply: the issue result's one, or one per batch row. */
static size_t
s_pin_slots(cl_reply_t *r, char **out_slots, size_t cap)
{
    size_t n = 0;
    if (r->result == CL_RES_ISSUED && cap > 0) {
        out_slots[n++] = r->pin;
    } else if (r->result == CL_RES_BATCH && r->rows != NULL) {
        for (uint32_t i = 0; i < r->rows_count && n < cap; i++)
            out_slots[n++] = r->rows[i].pin;
    }
    return n;
}

bool
idem_reply_has_pins(const cl_reply_t *r)
{
    if (r->result == CL_RES_ISSUED)
        return r->pin[0] != '\0';
    if (r->result == CL_RES_BATCH && r->rows != NULL) {
        for (uint32_t i = 0; i < r->rows_count; i++) {
            if (r->rows[i].pin[0] != '\0')
                return true;
        }
    }
    return false;
}

static void
s_pin_key(const uint8_t key[IDEM_KEY_LEN], uint8_t out[crypto_secretbox_KEYBYTES])
{
    static const char context[] = "cardledger idempotency pins v1";
    crypto_generichash(out, crypto_secretbox_KEYBYTES, (const unsigned char *)context,
                       sizeof(context) - 1, key, IDEM_KEY_LEN);
}

/* Plain text: u16 slot count, then per slot a length byte and the PIN's digits. */
int
idem_seal_pins(const uint8_t key[IDEM_KEY_LEN], cl_reply_t *r, uint8_t **out_sealed,
               size_t *out_len)
{
    char *slots[CL_ISSUE_BATCH_MAX];
    size_t n = s_pin_slots(r, slots, CL_ISSUE_BATCH_MAX);
    if (n == 0)
        return IDEM_EINVAL;
    size_t plain_len = 2 + n * (1 + CL_PIN_MAX);
    uint8_t *plain = malloc(plain_len);
    size_t box_len = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plain_len;
    uint8_t *box = malloc(box_len);
    if (plain == NULL || box == NULL) {
        free(plain);
        free(box);
        return IDEM_ENOMEM;
    }
    size_t used = 0;
    plain[used++] = (uint8_t)(n & 0xff);
    plain[used++] = (uint8_t)(n >> 8);
    for (size_t i = 0; i < n; i++) {
        size_t len = strnlen(slots[i], CL_PIN_MAX);
        plain[used++] = (uint8_t)len;
        memcpy(plain + used, slots[i], len);
        used += len;
        sodium_memzero(slots[i], CL_PIN_MAX + 1);
    }
    uint8_t k[crypto_secretbox_KEYBYTES];
    s_pin_key(key, k);
    randombytes_buf(box, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, plain, used, box, k);
    sodium_memzero(k, sizeof(k));
    sodium_memzero(plain, plain_len);
    free(plain);
    *out_sealed = box;
    *out_len = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + used;
    return 0;
}

int
idem_unseal_pins(const uint8_t key[IDEM_KEY_LEN], const uint8_t *sealed, size_t len, cl_reply_t *r)
{
    if (len < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + 2)
        return IDEM_ECORRUPT;
    size_t plain_len = len - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    uint8_t *plain = malloc(plain_len);
    if (plain == NULL)
        return IDEM_ENOMEM;
    uint8_t k[crypto_secretbox_KEYBYTES];
    s_pin_key(key, k);
    int rc = crypto_secretbox_open_easy(plain, sealed + crypto_secretbox_NONCEBYTES,
                                        len - crypto_secretbox_NONCEBYTES, sealed, k);
    sodium_memzero(k, sizeof(k));
    char *slots[CL_ISSUE_BATCH_MAX];
    size_t n = s_pin_slots(r, slots, CL_ISSUE_BATCH_MAX);
    size_t stored_n = rc == 0 ? (size_t)plain[0] | (size_t)plain[1] << 8 : 0;
    if (rc != 0 || stored_n != n) {
        sodium_memzero(plain, plain_len);
        free(plain);
        return IDEM_ECORRUPT;
    }
    size_t at = 2;
    for (size_t i = 0; i < n; i++) {
        size_t pin_len = at < plain_len ? plain[at] : CL_PIN_MAX + 1;
        if (pin_len > CL_PIN_MAX || at + 1 + pin_len > plain_len) {
            rc = IDEM_ECORRUPT;
            break;
        }
        memcpy(slots[i], plain + at + 1, pin_len);
        slots[i][pin_len] = '\0';
        at += 1 + pin_len;
    }
    sodium_memzero(plain, plain_len);
    free(plain);
    return rc;
}
