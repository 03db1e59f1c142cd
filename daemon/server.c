/*
 * server: the command loop, its group commit and the commit thread (see server.h).
 *
 * Two windows take turns. The loop fills one (the current window) while the commit thread
 * writes the other (the window in flight), so deciding never waits for an fsync unless the
 * current window is full. A cycle of the loop:
 *   1. zmq_poll() until a message comes, the commit in flight is done, a timer is due or a
 *      checkpoint is due;
 *   2. when the commit in flight is done: land it (below);
 *   3. fire due ledger timers (CardExpired, ExpiryReminded, GiftReturned);
 *   4. take every message already waiting, without blocking, up to the window's limits, and for
 *      each request in order: the idempotency check, decide(), ledger_apply() of its events at
 *      once (so the next request sees them), decide_finish(), the encoded reply;
 *   5. fire the timers the clock moved past (an AdvanceClock in this cycle);
 *   6. submit: when no commit is in flight, hand the current window to the commit thread,
 *      which makes ONE journal_write() of its events and idempotency records, durable; the
 *      other window becomes the current one;
 *   7. a checkpoint when enough events or time have gone by: the dirty records are frozen as of
 *      the last decided sequence and copied S_COPY_STEP per cycle (a record about to change is
 *      copied first), then handed to the writer once that sequence has landed.
 * Landing a window: its replies go out (to the messages whose requests are all in it), then its
 * events are published. Nothing is ever answered or published before the commit that makes it
 * durable, and windows land in the order they were decided.
 *
 * A window that would outgrow its limits (events, bytes, requests) is submitted early, in the
 * middle of a message if need be, waiting for the one in flight; the message moves on to the
 * next window with copies of its replies so far, and is answered when that window lands.
 *
 * The ledger is ahead of the journal by the windows not yet landed. When a commit fails, the
 * ledger is rebuilt from disk (checkpoint + replay), and every request of the failed window and
 * of the current one (decided on top of it) is answered with CL_STORAGE_FULL or CL_INTERNAL;
 * their idempotency records were never written, so a retry with the same request id is decided
 * afresh. A checkpoint's batch goes to the writer only once every window up to its sequence has
 * landed; a full checkpoint (after a rebuild from the whole journal) waits for every window.
 */
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <sys/eventfd.h>

#include <sodium.h>
#include <zmq.h>

#include "ahead.h"
#include "auth.h"
#include "bytes.h"
#include "clcheck.h"
#include "codec.h"
#include "decide.h"
#include "log.h"
#include "prefault.h"

/* Idempotency records of one window: one per decided command. */
#define S_RECS_MAX (DAEMON_COMMIT_REQUESTS_MAX + CL_BATCH_REQUESTS_MAX)
/* Replies of one cycle: one per request, plus one per message refused whole. */
#define S_REPLIES_MAX (S_RECS_MAX + DAEMON_COMMIT_MESSAGES_MAX)
/* Slots of the in-window request id map (a power of two, at least twice S_RECS_MAX). */
#define S_MAP_SLOTS 16384u
/* A published journal entry: the 40-byte header and the payload. */
#define S_ENTRY_MAX (JOURNAL_HEADER_SIZE + CODEC_EVENT_MAX_BYTES)
/* A reply with no result: status, request id and a sentence. */
#define S_SMALL_REPLY_MAX 512
/* Free room in the reply arena a reply is first encoded into (most replies are a few hundred
 * bytes; a bigger one is sized and given room of its own). */
#define S_REPLY_ROOM 4096

_Static_assert(S_MAP_SLOTS >= 2 * S_RECS_MAX, "the request id map must stay half empty");
_Static_assert(CONFIG_COMMIT_EVENTS_MAX == DAEMON_COMMIT_EVENTS_MAX,
               "--commit-events is capped at the window's room");
_Static_assert(DAEMON_COMMIT_EVENTS_MAX + DECIDE_EVENTS_MAX <= JOURNAL_TXN_ENTRIES_MAX,
               "a commit must fit one journal transaction");

/* An event of the window: where its encoded JournalEntry is and what to publish it under. */
typedef struct s_event {
    uint64_t seq;                    /* the sequence it will get (checked at append) */
    int64_t at_us;                   /* its timestamp */
    size_t off;                      /* payload offset in ev_bytes */
    uint32_t len;                    /* payload length */
    cl_event_type_t type;            /* for the topic */
    char merchant[CL_ID_MAX + 1];    /* for the topic; empty = merchant-less */
    uint8_t hash[JOURNAL_HASH_SIZE]; /* its chain hash, known after the append */
} s_event_t;

/* An idempotency record of the window. */
typedef struct s_rec {
    char request_id[CL_REQUEST_ID_MAX + 1];
    uint8_t content_hash[IDEM_HASH_LEN];
    int64_t at_us;
    size_t reply;    /* index in replies[] of the reply sent */
    uint8_t *stored; /* when the reply shows PINs: the reply without them (malloc'd) */
    size_t stored_len;
    uint8_t *sealed; /* ... and the PINs, sealed (idem_seal_pins(); malloc'd) */
    size_t sealed_len;
    uint32_t map_slot; /* its slot in the window's request id map */
} s_rec_t;

/* One reply of a window. */
typedef struct s_reply {
    char request_id[CL_REQUEST_ID_MAX + 1]; /* to answer a failed commit */
    size_t off;                             /* packed Reply in rep_bytes */
    size_t len;
    bool replayed;      /* send with replayed = true */
    cl_status_t failed; /* non-zero: the commit failed; answer with this status instead */
} s_reply_t;

/* What one principal may still guess (s_guessing()). */
typedef struct s_guesses {
    double left;   /* unknown cards it may still name */
    int64_t at_us; /* when left was last brought up to date (0: never) */
} s_guesses_t;

/* One incoming message of a window. */
typedef struct s_msg {
    zmq_msg_t env[DAEMON_ENVELOPE_FRAMES_MAX]; /* the ROUTER envelope, sent back as it came */
    size_t env_count;
    size_t first_reply; /* its replies are replies[first_reply .. first_reply + reply_count) */
    size_t reply_count;
    bool complete; /* every request of it is decided */
    bool sent;     /* answered, or moved on to the next window */
    /* Whom its commands are decided for: the local operator without CurveZMQ, else the
     * principal of the key it came with. NULL (refused, unauthenticated): a message without a
     * listed key, which only a connection the ZAP handler was not asked about could bring. */
    const cl_principal_t *who;
} s_msg_t;

/*
 * A window: what one journal_write() commits, and the messages answered once it has. The loop
 * fills it; while it is in flight the commit thread reads the first group of fields and writes
 * the last, and the loop only reads it (the request id map, stored replies).
 */
typedef struct s_window {
    /* What the commit writes. */
    s_event_t *evs; /* DAEMON_COMMIT_EVENTS_MAX + DECIDE_EVENTS_MAX */
    size_t evs_count;
    uint8_t *ev_bytes;
    size_t ev_bytes_len, ev_bytes_cap;
    s_rec_t *recs; /* S_RECS_MAX */
    size_t recs_count;
    uint32_t *rec_order; /* S_RECS_MAX: s_fill()'s order of recs, by request id */
    uint32_t *map;       /* S_MAP_SLOTS: request id -> recs index + 1 */
    const idem_dbs_t *idem;
    int64_t purge_before_us; /* idempotency records older than this are purged */
    s_reply_t *replies;      /* S_REPLIES_MAX */
    size_t replies_count;
    uint8_t *rep_bytes;
    size_t rep_len, rep_cap;

    /* What the loop keeps to itself. */
    bool poisoned; /* the ledger took a change that must not be committed */
    s_msg_t *msgs; /* DAEMON_COMMIT_MESSAGES_MAX */
    size_t msgs_count;
    size_t requests; /* requests taken into it */

    /* What the commit did (written by the commit thread). */
    int rc;
    journal_head_t head;
    size_t purged;
    double took_ms;
} s_window_t;

/* The commit thread and its hand-over. */
typedef struct s_committer {
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    journal_t *journal;
    s_window_t *job; /* the window handed over, until landed */
    bool done;       /* job's commit is done */
    bool stop;
    int done_fd; /* an eventfd the thread signals when a job is done; in the loop's poll set */
} s_committer_t;

/* Random bytes drawn ahead for s_random(). */
#define S_RANDOM_POOL 4096
typedef struct s_random_pool {
    uint8_t bytes[S_RANDOM_POOL]; /* the unused ones are the last `left` */
    size_t left;
} s_random_pool_t;

struct server {
    const daemon_config_t *cfg;
    journal_t *journal;
    ledger_t *ledger;
    journal_t *state;            /* the checkpoint's environment */
    checkpoint_source_t *source; /* where the ledger reads what it does not hold */
    checkpointer_t *writer;      /* writes checkpoints in a thread of its own */
    prefault_t *prefault;        /* faults the ledger's next memory in (or NULL: --prefault off) */
    journal_ahead_t *ahead;      /* keeps the journal's file ahead (NULL: --journal-ahead-mb 0) */
    double ahead_checked_ms;     /* s_ahead_check(): when it last looked */
    double ahead_warned_ms;      /* ... and last warned (-1e9: never) */
    idem_dbs_t idem;
    void *router;
    void *pub;
    cl_principal_t principal; /* the local development principal (no CurveZMQ) */
    const auth_t *auth;       /* CurveZMQ principals, or NULL */
    /* Unknown cards each principal may still name (PRODUCT.md 8: codes are not guessed):
     * [0] the local principal's, [1 + auth_index()] each key's. */
    s_guesses_t *guesses;
    size_t guesses_count;

    /* Deciding. */
    codec_batch_t *batch;
    decide_ctx_t ctx;
    s_random_pool_t random; /* ctx.random's bytes */
    decide_out_t out;
    cl_event_t *events;    /* DECIDE_EVENTS_MAX */
    cl_issued_row_t *rows; /* CL_ISSUE_BATCH_MAX */
    cl_reply_t reply;
    cl_reply_t small;              /* for replies the server makes itself */
    cl_reply_t scratch;            /* a reply's stored form, or one restored from disk */
    cl_issued_row_t *rows_scratch; /* CL_ISSUE_BATCH_MAX rows for scratch */

    /* The windows. */
    s_window_t win[2];
    s_window_t *cur;    /* the window being filled */
    s_window_t *flying; /* the window the commit thread has, or NULL */
    s_committer_t committer;
    bool broken;         /* the state could not be rebuilt: stop without committing more */
    MDB_txn *rtxn;       /* read transaction for idempotency lookups, or NULL */
    bool timers_pending; /* more timers were due than one cycle fires */

    /* Buffers of the hot path. */
    uint8_t *send_buf;
    size_t send_cap;
    uint8_t *entry_buf; /* S_ENTRY_MAX */

    /* Checkpoints. */
    uint64_t checkpoint_seq; /* of the last checkpoint written */
    uint64_t events_since_checkpoint;
    double last_checkpoint_ms;
    bool full_checkpoint;
    bool checkpoint_in_hand; /* the writer has a batch whose result is not collected */
    bool checkpoint_failed;  /* the writer holds a batch it could not write */
    /* A checkpoint being copied a little each cycle (checkpointer_begin()): as of copy_seq,
     * begun at copy_t0. It goes to the writer once copied and landed_seq has reached it. */
    bool copying;
    size_t copy_left; /* records still to copy (0: waiting for copy_seq to land) */
    uint64_t copy_seq;
    double copy_t0;
    uint64_t landed_seq; /* the journal's head after the last window that landed */
    /* Landed events past this sequence count towards the next checkpoint (those up to it are in
     * the last one, or in the one being copied). */
    uint64_t counted_from_seq;
};

/* Changed records a checkpoint copies per cycle of the loop: about 1 to 2 ms of copying. */
#define S_COPY_STEP 4096
/* With --prefault on, the checkpoint's batch is made this large at start (two records of up to
 * 128 bytes per event between checkpoints, at most 64 MiB) and faulted in by the prefault
 * thread, so that the first checkpoints do not grow it on the loop. */
#define S_BATCH_RESERVE_PER_EVENT 256u
#define S_BATCH_RESERVE_MAX       (64u << 20)

/* ---- Small helpers ------------------------------------------------------------------------- */

static double
s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * CSPRNG bytes for decide() (card codes, PINs, claim secrets), drawn from libsodium
 * S_RANDOM_POOL bytes at a time: randombytes_buf() makes one getrandom() system call per call,
 * and a batch issue asks twice per card (code and PIN). Bytes handed out are wiped from the
 * pool. Only the loop's thread calls this, and the daemon never forks.
 */
static void
s_random(void *buf, size_t len, void *ctx)
{
    s_random_pool_t *pool = ctx;
    if (len > sizeof(pool->bytes) / 4) {
        randombytes_buf(buf, len);
        return;
    }
    if (pool->left < len) {
        randombytes_buf(pool->bytes, sizeof(pool->bytes));
        pool->left = sizeof(pool->bytes);
    }
    uint8_t *from = pool->bytes + sizeof(pool->bytes) - pool->left;
    memcpy(buf, from, len);
    sodium_memzero(from, len);
    pool->left -= len;
}

static void
s_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The daemon's clock: the test clock when it runs with one, else the wall clock; never earlier
 * than the last event, so journal timestamps never decrease. */
static int64_t
s_now(const server_t *s)
{
    const ledger_meta_t *m = ledger_meta(s->ledger);
    int64_t now;
    if (s->cfg->test_clock) {
        now = m->clock_us != 0 ? m->clock_us : s->cfg->test_clock_start_us;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    }
    return now < m->last_at_us ? m->last_at_us : now;
}

static uint32_t
s_id_hash(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static bool
s_grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap != 0 ? *cap : 65536;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* ---- The windows' request id maps ---------------------------------------------------------- */

static s_rec_t *
s_window_find(const s_window_t *w, const char *id)
{
    for (uint32_t i = s_id_hash(id) & (S_MAP_SLOTS - 1);; i = (i + 1) & (S_MAP_SLOTS - 1)) {
        uint32_t v = w->map[i];
        if (v == 0)
            return NULL;
        if (strcmp(w->recs[v - 1].request_id, id) == 0)
            return &w->recs[v - 1];
    }
}

/* The record of a request decided in a window not landed yet (the current one or the one in
 * flight), and that window; else NULL. */
static const s_rec_t *
s_map_find(const server_t *s, const char *id, const s_window_t **in)
{
    const s_rec_t *r = s_window_find(s->cur, id);
    *in = s->cur;
    if (r == NULL && s->flying != NULL) {
        r = s_window_find(s->flying, id);
        *in = s->flying;
    }
    return r;
}

static void
s_map_insert(s_window_t *w, size_t rec_index)
{
    const char *id = w->recs[rec_index].request_id;
    uint32_t i = s_id_hash(id) & (S_MAP_SLOTS - 1);
    while (w->map[i] != 0)
        i = (i + 1) & (S_MAP_SLOTS - 1);
    w->map[i] = (uint32_t)rec_index + 1;
    w->recs[rec_index].map_slot = i;
}

/* ---- Replies ------------------------------------------------------------------------------- */

/* Makes room in the current window for one more reply of up to len bytes; returns its entry or
 * NULL. */
static s_reply_t *
s_reply_reserve(server_t *s, const char *request_id, size_t len)
{
    s_window_t *w = s->cur;
    CL_CHECK(w->replies_count < S_REPLIES_MAX);
    if (!s_grow(&w->rep_bytes, &w->rep_cap, w->rep_len + len))
        return NULL;
    s_reply_t *e = &w->replies[w->replies_count];
    memset(e, 0, sizeof(*e));
    s_copy(e->request_id, sizeof(e->request_id), request_id);
    e->off = w->rep_len;
    return e;
}

static void
s_reply_commit(server_t *s, s_msg_t *m, s_reply_t *e, size_t len)
{
    e->len = len;
    s->cur->rep_len += len;
    s->cur->replies_count++;
    m->reply_count++;
}

/*
 * Encodes r as the next reply of message m (of the current window). Returns the reply's index,
 * or -1 (logged). The reply is encoded straight into the arena's free room (at least
 * S_REPLY_ROOM bytes); only a reply that does not fit (a batch issue's) is sized first, so a
 * common reply is built once.
 */
static long
s_reply_add(server_t *s, s_msg_t *m, const cl_reply_t *r)
{
    s_window_t *w = s->cur;
    size_t len = 0;
    int rc = 0;
    s_reply_t *e = s_reply_reserve(s, r->request_id, S_REPLY_ROOM);
    if (e != NULL)
        rc = codec_reply_encode(r, w->rep_bytes + e->off, w->rep_cap - e->off, &len);
    if (e != NULL && rc == CODEC_ENOSPC) {
        rc = codec_reply_encoded_size(r, &len);
        if (rc == 0 && !s_grow(&w->rep_bytes, &w->rep_cap, e->off + len))
            e = NULL;
        if (e != NULL && rc == 0)
            rc = codec_reply_encode(r, w->rep_bytes + e->off, len, &len);
    }
    if (rc != 0 || e == NULL) {
        log_error("a reply does not encode: %s", rc != 0 ? codec_strerror(rc) : "out of memory");
        return -1;
    }
    s_reply_commit(s, m, e, len);
    return (long)(w->replies_count - 1);
}

/* A reply with a status and a sentence but no result. */
static void
s_reply_simple(server_t *s, s_msg_t *m, const char *request_id, cl_status_t status,
               const char *message)
{
    cl_reply_t *r = &s->small;
    memset(r, 0, sizeof(*r));
    s_copy(r->request_id, sizeof(r->request_id), request_id);
    r->status = status;
    s_copy(r->message, sizeof(r->message),
           message != NULL && message[0] != '\0' ? message : cl_status_sentence(status));
    if (s_reply_add(s, m, r) < 0) {
        /* Out of memory for the reply arena: nothing sensible is left to send. */
        CL_CHECK(!"a small reply must always encode");
    }
}

/* A copy of stored reply bytes, to be sent with replayed = true. bytes_in_arena: they are in
 * the current window's reply arena, which may move while it grows. */
static void
s_reply_replay(server_t *s, s_msg_t *m, const char *request_id, const uint8_t *bytes, size_t len,
               bool bytes_in_arena)
{
    size_t src_off = bytes_in_arena ? (size_t)(bytes - s->cur->rep_bytes) : 0;
    s_reply_t *e = s_reply_reserve(s, request_id, len);
    if (e == NULL) {
        s_reply_simple(s, m, request_id, CL_INTERNAL, "the daemon is out of memory");
        return;
    }
    /* The arena may have moved while growing: find the source again by its offset. */
    const uint8_t *src = bytes_in_arena ? s->cur->rep_bytes + src_off : bytes;
    memmove(s->cur->rep_bytes + e->off, src, len);
    e->replayed = true;
    s_reply_commit(s, m, e, len);
}

/* ---- Events -------------------------------------------------------------------------------- */

/* The merchant an event belongs to, for its PUB topic (empty when it has none). */
static void
s_event_merchant(const ledger_t *l, const cl_event_t *ev, char out[CL_ID_MAX + 1])
{
    uint64_t card_id = 0;
    const char *m = "";
    switch (ev->type) {
    case CL_EV_MERCHANT_REGISTERED:
        m = ev->u.merchant_registered.merchant_id;
        break;
    case CL_EV_STORE_REGISTERED:
        m = ev->u.store_registered.merchant_id;
        break;
    case CL_EV_PROGRAM_DEFINED:
    case CL_EV_PROGRAM_UPDATED:
        m = ev->u.program.merchant_id;
        break;
    case CL_EV_PROGRAM_CLOSED:
        m = ev->u.program_closed.merchant_id;
        break;
    case CL_EV_CARD_ISSUED:
        m = ev->u.card_issued.merchant_id;
        break;
    case CL_EV_BATCH_ISSUED:
        m = ev->u.batch_issued.merchant_id;
        break;
    default:
        /* Card events (a transfer by its from card): the card's merchant. */
        card_id = cl_event_card_id(ev);
        break;
    }
    if (card_id != 0) {
        const ledger_card_t *c = ledger_card(l, card_id);
        if (c != NULL)
            m = c->merchant_id;
    }
    s_copy(out, CL_ID_MAX + 1, m);
}

/*
 * Folds the decided events into the ledger and adds them to the current window. Returns 0, or a
 * negative code after which the ledger holds part of the command: the window is poisoned.
 */
static int
s_take_events(server_t *s, size_t n)
{
    s_window_t *w = s->cur;
    for (size_t i = 0; i < n; i++) {
        const cl_event_t *ev = &s->events[i];
        CL_CHECK(ev->seq == ledger_meta(s->ledger)->last_seq + 1);
        int rc = ledger_apply(s->ledger, ev);
        if (rc != 0) {
            log_error("a decided %s event does not apply: %s", cl_event_name(ev->type),
                      ledger_strerror(rc));
            w->poisoned = true;
            return rc;
        }
        if (!s_grow(&w->ev_bytes, &w->ev_bytes_cap, w->ev_bytes_len + CODEC_EVENT_MAX_BYTES)) {
            log_error("out of memory for the events of a commit");
            w->poisoned = true;
            return SERVER_ENOMEM;
        }
        size_t len = 0;
        rc = codec_event_encode(ev, w->ev_bytes + w->ev_bytes_len, CODEC_EVENT_MAX_BYTES, &len);
        if (rc != 0) {
            log_error("a decided %s event does not encode: %s", cl_event_name(ev->type),
                      codec_strerror(rc));
            w->poisoned = true;
            return rc;
        }
        s_event_t *e = &w->evs[w->evs_count++];
        e->seq = ev->seq;
        e->at_us = ev->at_us;
        e->off = w->ev_bytes_len;
        e->len = (uint32_t)len;
        e->type = ev->type;
        s_event_merchant(s->ledger, ev, e->merchant);
        w->ev_bytes_len += len;
    }
    return 0;
}

/* ---- Windows --------------------------------------------------------------------------------- */

static bool
s_window_init(s_window_t *w, const idem_dbs_t *idem)
{
    w->idem = idem;
    w->evs = calloc(DAEMON_COMMIT_EVENTS_MAX + DECIDE_EVENTS_MAX, sizeof(*w->evs));
    w->recs = calloc(S_RECS_MAX, sizeof(*w->recs));
    w->rec_order = calloc(S_RECS_MAX, sizeof(*w->rec_order));
    w->map = calloc(S_MAP_SLOTS, sizeof(*w->map));
    w->msgs = calloc(DAEMON_COMMIT_MESSAGES_MAX, sizeof(*w->msgs));
    w->replies = calloc(S_REPLIES_MAX, sizeof(*w->replies));
    return w->evs != NULL && w->recs != NULL && w->rec_order != NULL && w->map != NULL &&
           w->msgs != NULL && w->replies != NULL &&
           s_grow(&w->ev_bytes, &w->ev_bytes_cap, 4u * 1024 * 1024) &&
           s_grow(&w->rep_bytes, &w->rep_cap, 4u * 1024 * 1024);
}

/* Forgets what the window's commit would write: its events and idempotency records. The
 * request id map is emptied slot by slot (every record is in it: s_map_insert()), not by a
 * memset of all S_MAP_SLOTS, which at one request per message cost a 64 KiB write per commit. */
static void
s_window_drop_writes(s_window_t *w)
{
    for (size_t i = 0; i < w->recs_count; i++) {
        free(w->recs[i].stored);
        free(w->recs[i].sealed);
        w->recs[i].stored = NULL;
        w->recs[i].stored_len = 0;
        w->recs[i].sealed = NULL;
        w->recs[i].sealed_len = 0;
        w->map[w->recs[i].map_slot] = 0;
    }
    w->recs_count = 0;
    w->evs_count = 0;
    w->ev_bytes_len = 0;
    w->poisoned = false;
}

/* Empties a landed window for its next turn. */
static void
s_window_reset(s_window_t *w)
{
    s_window_drop_writes(w);
    for (size_t i = 0; i < w->msgs_count; i++) {
        for (size_t k = 0; k < w->msgs[i].env_count; k++)
            zmq_msg_close(&w->msgs[i].env[k]);
        w->msgs[i].env_count = 0;
        w->msgs[i].who = NULL; /* set by s_recv() or s_window_carry() for its next message */
    }
    w->msgs_count = 0;
    w->requests = 0;
    w->replies_count = 0;
    w->rep_len = 0;
    w->rc = 0;
    w->purged = 0;
    w->took_ms = 0;
}

static void
s_window_free(s_window_t *w)
{
    if (w->recs != NULL && w->map != NULL)
        s_window_drop_writes(w);
    for (size_t i = 0; w->msgs != NULL && i < w->msgs_count; i++) {
        for (size_t k = 0; k < w->msgs[i].env_count; k++)
            zmq_msg_close(&w->msgs[i].env[k]);
    }
    free(w->evs);
    free(w->recs);
    free(w->rec_order);
    free(w->map);
    free(w->msgs);
    free(w->replies);
    free(w->ev_bytes);
    free(w->rep_bytes);
}

/* Every request of the window is answered with st instead of its reply. */
static void
s_window_fail(s_window_t *w, cl_status_t st)
{
    for (size_t i = 0; i < w->replies_count; i++)
        w->replies[i].failed = st;
}

/* Does the window hold anything to commit or to answer? */
static bool
s_window_busy(const s_window_t *w)
{
    return w->msgs_count > 0 || w->evs_count > 0 || w->recs_count > 0 || w->poisoned;
}

/*
 * Moves the message being decided (the last of `from`, not complete) on to the empty window
 * `to`, with copies of its replies so far: it is answered when `to` lands. The replies stay in
 * `from` too, for the idempotency records there that point at them. Returns the moved message.
 */
static s_msg_t *
s_window_carry(s_window_t *from, s_window_t *to)
{
    s_msg_t *m = &from->msgs[from->msgs_count - 1];
    s_msg_t *n = &to->msgs[0];
    CL_CHECK(to->msgs_count == 0 && to->replies_count == 0 && !m->complete);
    for (size_t k = 0; k < m->env_count; k++) {
        zmq_msg_init(&n->env[k]);
        zmq_msg_move(&n->env[k], &m->env[k]);
        zmq_msg_close(&m->env[k]);
    }
    n->env_count = m->env_count;
    n->first_reply = 0;
    n->reply_count = m->reply_count;
    n->complete = false;
    n->sent = false;
    n->who = m->who; /* its remaining commands are decided for the same principal */
    m->env_count = 0;
    m->sent = true;
    for (size_t i = 0; i < m->reply_count; i++) {
        const s_reply_t *e = &from->replies[m->first_reply + i];
        CL_CHECK(s_grow(&to->rep_bytes, &to->rep_cap, to->rep_len + e->len));
        s_reply_t *c = &to->replies[to->replies_count++];
        *c = *e;
        c->off = to->rep_len;
        memcpy(to->rep_bytes + c->off, from->rep_bytes + e->off, e->len);
        to->rep_len += e->len;
    }
    to->msgs_count = 1;
    return n;
}

/* ---- The commit ---------------------------------------------------------------------------- */

static int
s_rec_order_cmp(const void *x, const void *y, void *ctx)
{
    const s_rec_t *recs = ctx;
    return strcmp(recs[*(const uint32_t *)x].request_id, recs[*(const uint32_t *)y].request_id);
}

/*
 * journal_write()'s fill: the window's events, then its idempotency records, then a purge. Runs
 * in the commit thread. The records go in request id order: libcardledger's ids begin with the
 * time (docs/client.md), so a commit's records then mostly follow the last one in the tree and
 * go in as appends (idem_put()), which leave full pages behind. In arrival order the ids of
 * several clients interleave, and the pages that LMDB split in the middle stayed two thirds full.
 */
static int
s_fill(journal_txn_t *txn, void *ctx)
{
    s_window_t *w = ctx;
    for (size_t i = 0; i < w->evs_count; i++) {
        s_event_t *e = &w->evs[i];
        uint64_t seq = 0;
        journal_head_t head;
        int rc = journal_txn_append(txn, e->at_us, w->ev_bytes + e->off, e->len, &seq);
        if (rc != 0)
            return rc;
        /* The events were decided for this very sequence (gift offer ids are sequences). */
        CL_CHECK(seq == e->seq);
        journal_txn_head(txn, &head);
        memcpy(e->hash, head.hash, sizeof(e->hash));
    }
    MDB_txn *mt = journal_txn_mdb(txn);
    for (size_t i = 0; i < w->recs_count; i++)
        w->rec_order[i] = (uint32_t)i;
    qsort_r(w->rec_order, w->recs_count, sizeof(*w->rec_order), s_rec_order_cmp, w->recs);
    for (size_t i = 0; i < w->recs_count; i++) {
        const s_rec_t *r = &w->recs[w->rec_order[i]];
        const s_reply_t *rep = &w->replies[r->reply];
        const uint8_t *bytes = r->stored != NULL ? r->stored : w->rep_bytes + rep->off;
        size_t len = r->stored != NULL ? r->stored_len : rep->len;
        int rc = idem_put(mt, w->idem, r->request_id, r->content_hash, r->at_us, bytes, len,
                          r->sealed, r->sealed_len);
        if (rc != 0)
            return rc;
    }
    w->purged = 0;
    return idem_purge(mt, w->idem, w->purge_before_us, DAEMON_IDEMPOTENCY_PURGE_MAX, &w->purged);
}

static void *
s_committer_main(void *arg)
{
    s_committer_t *c = arg;
    (void)pthread_setname_np(pthread_self(), "cl-commit"); /* for top -H, perf and gdb */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && (c->job == NULL || c->done))
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        s_window_t *w = c->job;
        pthread_mutex_unlock(&c->mu);

        double t0 = s_mono_ms();
        w->rc = journal_write(c->journal, s_fill, w, &w->head);
        w->took_ms = s_mono_ms() - t0;

        pthread_mutex_lock(&c->mu);
        c->done = true;
        uint64_t one = 1;
        ssize_t n = write(c->done_fd, &one, sizeof(one));
        (void)n; /* an eventfd counter cannot overflow from this */
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void
s_committer_hand(s_committer_t *c, s_window_t *w)
{
    pthread_mutex_lock(&c->mu);
    CL_CHECK(c->job == NULL);
    c->job = w;
    c->done = false;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static bool
s_committer_done(s_committer_t *c)
{
    pthread_mutex_lock(&c->mu);
    bool done = c->job != NULL && c->done;
    pthread_mutex_unlock(&c->mu);
    return done;
}

/* Waits for the job's commit and takes the job back. */
static void
s_committer_take(s_committer_t *c)
{
    pthread_mutex_lock(&c->mu);
    while (!c->done)
        pthread_cond_wait(&c->cv, &c->mu);
    c->job = NULL;
    uint64_t count;
    ssize_t n = read(c->done_fd, &count, sizeof(count)); /* written before done was set */
    (void)n;
    pthread_mutex_unlock(&c->mu);
}

static void
s_rtxn_end(server_t *s)
{
    if (s->rtxn != NULL)
        journal_read_txn_end(s->journal, &s->rtxn);
    checkpoint_source_release(s->source);
}

static int
s_rebuild(server_t *s)
{
    checkpoint_info_t info;
    /* The rebuilt ledger's dirty records cover every change since the last checkpoint written,
     * a batch the writer failed to write included. */
    s_rtxn_end(s);
    checkpointer_discard(s->writer);
    s->checkpoint_in_hand = false;
    s->checkpoint_failed = false;
    s->copying = false; /* its freeze goes with the ledger */
    ledger_destroy(&s->ledger);
    int rc = ledger_new(&s->ledger);
    if (rc == 0)
        rc = checkpoint_load(s->journal, s->state, &s->ledger, true, s->source, &info);
    if (rc != 0) {
        log_error("the state cannot be rebuilt from disk: %s", checkpoint_strerror(rc));
        return rc;
    }
    if (s->prefault != NULL)
        ledger_set_ahead(s->ledger, prefault_ask, s->prefault);
    s->events_since_checkpoint = info.replayed;
    s->landed_seq = info.head_seq;
    s->counted_from_seq = info.head_seq;
    if (info.full_needed)
        s->full_checkpoint = true;
    log_warn("the state was rebuilt from disk: checkpoint at %llu, %llu events replayed, head "
             "%llu",
             (unsigned long long)info.checkpoint_seq, (unsigned long long)info.replayed,
             (unsigned long long)info.head_seq);
    return 0;
}

static void
s_send_replies(server_t *s, const s_window_t *w, s_msg_t *m)
{
    size_t need = 0;
    for (size_t i = 0; i < m->reply_count; i++)
        need += w->replies[m->first_reply + i].len + 16 + S_SMALL_REPLY_MAX;
    size_t len = 0;
    bool ok = s_grow(&s->send_buf, &s->send_cap, need);
    for (size_t i = 0; ok && i < m->reply_count; i++) {
        const s_reply_t *e = &w->replies[m->first_reply + i];
        int rc;
        if (e->failed != 0) {
            uint8_t small[S_SMALL_REPLY_MAX];
            size_t slen = 0;
            cl_reply_t *r = &s->small;
            memset(r, 0, sizeof(*r));
            s_copy(r->request_id, sizeof(r->request_id), e->request_id);
            r->status = e->failed;
            s_copy(r->message, sizeof(r->message),
                   e->failed == CL_STORAGE_FULL
                       ? "the journal cannot grow; the command was not applied"
                       : "the commit failed; the command was not applied");
            rc = codec_reply_encode(r, small, sizeof(small), &slen);
            if (rc == 0)
                rc = codec_reply_batch_append(s->send_buf, s->send_cap, &len, small, slen, false);
        } else {
            rc = codec_reply_batch_append(s->send_buf, s->send_cap, &len, w->rep_bytes + e->off,
                                          e->len, e->replayed);
        }
        if (rc != 0) {
            log_error("a reply batch does not build: %s", codec_strerror(rc));
            ok = false;
        }
    }
    for (size_t i = 0; i < m->env_count; i++) {
        if (ok && zmq_msg_send(&m->env[i], s->router, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            log_debug("a reply could not be sent: %s", zmq_strerror(zmq_errno()));
            ok = false;
        }
        zmq_msg_close(&m->env[i]);
    }
    m->env_count = 0;
    if (ok && zmq_send(s->router, s->send_buf, len, ZMQ_DONTWAIT) < 0)
        log_debug("a reply could not be sent: %s", zmq_strerror(zmq_errno()));
    m->sent = true;
}

/* Writes the 40-byte journal entry header (docs/journal-format.md) in front of the payload. */
static size_t
s_entry_frame(server_t *s, const s_window_t *w, const s_event_t *e)
{
    uint8_t *p = s->entry_buf;
    cl_put_le64(p + 0, e->seq);
    cl_put_le64(p + 8, (uint64_t)e->at_us);
    cl_put_le32(p + 16, (uint32_t)e->len);
    cl_put_le16(p + 20, JOURNAL_ENTRY_VERSION);
    cl_put_le16(p + 22, 0);
    memcpy(p + 24, e->hash, JOURNAL_HASH_SIZE);
    memcpy(p + JOURNAL_HEADER_SIZE, w->ev_bytes + e->off, e->len);
    return JOURNAL_HEADER_SIZE + e->len;
}

static void
s_publish(server_t *s, const s_window_t *w)
{
    char topic[DAEMON_TOPIC_MAX];
    for (size_t i = 0; i < w->evs_count; i++) {
        const s_event_t *e = &w->evs[i];
        /* "<merchant>/<EventName>", "-" for no merchant; built without snprintf(), which cost
         * as much as the rest of publishing an event. */
        const char *merchant = e->merchant[0] != '\0' ? e->merchant : "-";
        const char *name = cl_event_name(e->type);
        size_t m = strlen(merchant), k = strlen(name);
        CL_CHECK(m + 1 + k <= sizeof(topic));
        memcpy(topic, merchant, m);
        topic[m] = '/';
        memcpy(topic + m + 1, name, k);
        size_t len = s_entry_frame(s, w, e);
        if (zmq_send(s->pub, topic, m + 1 + k, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
            zmq_send(s->pub, s->entry_buf, len, ZMQ_DONTWAIT) < 0)
            log_debug("event %llu was not published: %s", (unsigned long long)e->seq,
                      zmq_strerror(zmq_errno()));
    }
}

/*
 * Lands a window whose commit is done (w->rc) and which is no longer the current one: answers
 * every message whose requests are all in it, then publishes its events. After a failed commit
 * the ledger is rebuilt from disk, and the current window, decided on top of w, is failed too.
 * Returns 0, or a negative code when the daemon cannot go on (the state could not be rebuilt).
 */
static int
s_land(server_t *s, s_window_t *w)
{
    int fatal = 0;
    /* The next idempotency lookup must see w's records, which leave the window's map now. */
    s_rtxn_end(s);
    if (w->rc != 0) {
        int rc = w->rc;
        cl_status_t st =
            rc == JOURNAL_EFULL || rc == -ENOSPC || rc == -EDQUOT ? CL_STORAGE_FULL : CL_INTERNAL;
        log_error("COMMIT FAILED: %zu events and %zu requests were not applied, nor the %zu "
                  "requests decided after them: %s",
                  w->evs_count, w->recs_count, s->cur->recs_count,
                  w->poisoned ? "a decided event did not apply" : journal_strerror(rc));
        s_window_fail(w, st);
        s_window_fail(s->cur, st);
        s_window_drop_writes(s->cur);
        fatal = s_rebuild(s);
        if (fatal != 0)
            s->broken = true;
    } else {
        CL_CHECK(w->evs_count == 0 || w->head.seq == w->evs[w->evs_count - 1].seq);
        if (w->evs_count > 0) {
            /* A window's events have consecutive sequence numbers. */
            uint64_t first = w->evs[0].seq;
            if (w->head.seq > s->counted_from_seq)
                s->events_since_checkpoint +=
                    w->head.seq - (first > s->counted_from_seq ? first - 1 : s->counted_from_seq);
            s->landed_seq = w->head.seq;
        }
        if (w->evs_count > 0 || w->recs_count > 0)
            log_debug("commit: %zu requests, %zu events, head %llu, %zu records purged, %.2f ms",
                      w->recs_count, w->evs_count, (unsigned long long)w->head.seq, w->purged,
                      w->took_ms);
    }
    for (size_t i = 0; i < w->msgs_count; i++) {
        if (w->msgs[i].complete && !w->msgs[i].sent)
            s_send_replies(s, w, &w->msgs[i]);
    }
    if (w->rc == 0)
        s_publish(s, w);
    s_window_reset(w);
    return fatal;
}

/* Waits for the window in flight, if any, and lands it. Returns 0 or a fatal code. */
static int
s_land_flying(server_t *s)
{
    if (s->flying == NULL)
        return 0;
    /* Read transactions first: the commit may need to grow the map, which waits for them. */
    s_rtxn_end(s);
    s_committer_take(&s->committer);
    s_window_t *w = s->flying;
    s->flying = NULL;
    return s_land(s, w);
}

/*
 * Ends the current window: lands the one in flight (waiting for it), then hands this one to the
 * commit thread, or lands it at once when it has nothing to write; the other window becomes the
 * current one, with the message being decided, if any. Returns 0 or a fatal code.
 */
static int
s_submit(server_t *s)
{
    int rc = s_land_flying(s);
    if (rc != 0)
        return rc;
    s_window_t *w = s->cur;
    s_window_t *next = w == &s->win[0] ? &s->win[1] : &s->win[0];
    if (w->msgs_count > 0 && !w->msgs[w->msgs_count - 1].complete)
        s_window_carry(w, next);
    s->cur = next;
    if (w->poisoned || (w->evs_count == 0 && w->recs_count == 0)) {
        w->rc = w->poisoned ? SERVER_ENOMEM : 0;
        return s_land(s, w);
    }
    w->purge_before_us = s_now(s) - (int64_t)s->cfg->idempotency_retention_hours * 3600 * 1000000;
    s->flying = w;
    s_committer_hand(&s->committer, w);
    return 0;
}

/* Submits and lands everything decided: afterwards the ledger holds only committed events. */
static int
s_drain(server_t *s)
{
    int rc = s_window_busy(s->cur) ? s_submit(s) : 0;
    if (rc == 0)
        rc = s_land_flying(s);
    return rc;
}

/* Submits first when one more command could take the current window past --commit-events
 * events (DAEMON_COMMIT_EVENTS_MAX at most), or past its other limits; *m, the message being
 * decided (or NULL), may move on to the next window. */
static int
s_ensure_room(server_t *s, s_msg_t **m)
{
    const s_window_t *w = s->cur;
    if ((w->evs_count == 0 || w->evs_count + DECIDE_EVENTS_MAX <= s->cfg->commit_events) &&
        w->ev_bytes_len <= DAEMON_COMMIT_EVENT_BYTES_MAX && w->recs_count < S_RECS_MAX)
        return 0;
    int rc = s_submit(s);
    if (m != NULL && s->cur->msgs_count > 0)
        *m = &s->cur->msgs[0];
    return rc;
}

/* ---- Requests ------------------------------------------------------------------------------ */

static int
s_rtxn(server_t *s)
{
    if (s->rtxn != NULL)
        return 0;
    return journal_read_txn_begin(s->journal, &s->rtxn);
}

static void
s_prepare_ctx(server_t *s)
{
    s->ctx.now_us = s_now(s);
    s->ctx.next_seq = ledger_meta(s->ledger)->last_seq + 1;
}

static void
s_get_status(server_t *s, s_msg_t *m, const cl_command_t *cmd)
{
    cl_reply_t *r = &s->small;
    const ledger_meta_t *meta = ledger_meta(s->ledger);
    memset(r, 0, sizeof(*r));
    s_copy(r->request_id, sizeof(r->request_id), cmd->request_id);
    r->status = CL_OK;
    s_copy(r->message, sizeof(r->message), cl_status_sentence(CL_OK));
    r->result = CL_RES_STATUS;
    r->as_of_seq = meta->last_seq;
    r->status_head_seq = meta->last_seq;
    r->status_now_us = s_now(s);
    r->status_cards = meta->cards;
    r->status_checkpoint_seq = s->checkpoint_seq;
    if (s_reply_add(s, m, r) < 0)
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
}

static void
s_get_request(server_t *s, s_msg_t *m, const cl_command_t *cmd)
{
    cl_reply_t *r = &s->small;
    const char *id = cmd->u.get_request_id;
    memset(r, 0, sizeof(*r));
    s_copy(r->request_id, sizeof(r->request_id), cmd->request_id);
    r->status = CL_OK;
    s_copy(r->message, sizeof(r->message), cl_status_sentence(CL_OK));
    r->result = CL_RES_REQUEST;
    r->as_of_seq = ledger_meta(s->ledger)->last_seq;

    const s_window_t *in = NULL;
    const s_rec_t *rec = s_map_find(s, id, &in);
    idem_record_t stored = { .owned = NULL };
    size_t arena_off = 0;
    bool in_arena = false;
    if (rec != NULL && rec->stored != NULL) {
        /* Decided but not landed, and shows PINs: answer with the form that will be stored. */
        r->found = true;
        r->stored_reply = rec->stored;
        r->stored_reply_len = rec->stored_len;
    } else if (rec != NULL) {
        const s_reply_t *e = &in->replies[rec->reply];
        r->found = true;
        r->stored_reply_len = e->len;
        /* The window in flight does not change; the current one's arena may move. */
        in_arena = in == s->cur;
        arena_off = e->off;
        if (!in_arena)
            r->stored_reply = in->rep_bytes + e->off;
    } else {
        int rc = s_rtxn(s);
        if (rc == 0)
            rc = idem_get(s->rtxn, &s->idem, id, &stored);
        if (rc == 0) {
            r->found = true;
            r->stored_reply = stored.reply;
            r->stored_reply_len = stored.reply_len;
        } else if (rc != MDB_NOTFOUND) {
            log_error("idempotency lookup failed: %s", journal_strerror(rc));
            s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
            return;
        }
    }
    /* The stored reply may live in the reply arena, which may move while the new reply makes
     * room for itself: size it with a stand-in, reserve, then point at the real bytes. */
    size_t len = 0;
    if (in_arena)
        r->stored_reply = s->cur->rep_bytes + arena_off;
    int rc = codec_reply_encoded_size(r, &len);
    s_reply_t *e = rc == 0 ? s_reply_reserve(s, cmd->request_id, len) : NULL;
    if (e != NULL) {
        if (in_arena)
            r->stored_reply = s->cur->rep_bytes + arena_off;
        rc = codec_reply_encode(r, s->cur->rep_bytes + e->off, len, &len);
    }
    idem_record_release(&stored);
    if (e == NULL || rc != 0) {
        log_error("a GetRequest reply does not encode: %s",
                  rc != 0 ? codec_strerror(rc) : "out of memory");
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
        return;
    }
    s_reply_commit(s, m, e, len);
}

/* ---- Guessing codes ------------------------------------------------------------------------ */

/*
 * A principal may name at most --unknown-cards-per-s cards that do not exist per second: a
 * token bucket of that size, refilled at that rate by the daemon's clock (the test clock in
 * tests). While it is empty every command of the principal that names a card by its code is
 * refused with rate_limited, before it is decided, so it changes nothing and is not remembered:
 * the same request id goes through once the guesses have aged. Commands naming cards by id (an
 * operator's) are not guesses. So a code (19 digits, about 2^60) is not found by trying.
 */
static s_guesses_t *
s_guesses_of(server_t *s, const s_msg_t *m)
{
    size_t i = m->who == &s->principal ? 0 : 1 + auth_index(s->auth, m->who);
    CL_CHECK(i < s->guesses_count);
    return &s->guesses[i];
}

/* Whether a command names a card by its code (what a guess is). */
static bool
s_names_a_code(const cl_command_t *c)
{
    switch (c->type) {
    case CL_CMD_OFFER_GIFT:
    case CL_CMD_TRANSFER_CARD:
        return c->u.gift.card.code[0] != '\0';
    case CL_CMD_CLAIM_GIFT:
    case CL_CMD_RECALL_GIFT:
        return c->u.gift_close.card.code[0] != '\0';
    case CL_CMD_REDEEM:
        return c->u.redeem.card.code[0] != '\0';
    case CL_CMD_REVERSE_REDEMPTION:
        return c->u.reverse.card.code[0] != '\0';
    case CL_CMD_RELOAD:
        return c->u.reload.card.code[0] != '\0';
    case CL_CMD_TRANSFER_BALANCE:
        return c->u.transfer_balance.from_card.code[0] != '\0' ||
               c->u.transfer_balance.to_card.code[0] != '\0';
    case CL_CMD_ADJUST:
        return c->u.adjust.card.code[0] != '\0';
    case CL_CMD_FREEZE:
    case CL_CMD_UNFREEZE:
    case CL_CMD_UNLOCK:
    case CL_CMD_GET_CARD:
        return c->u.card_flag.card.code[0] != '\0';
    default:
        return false;
    }
}

/* True when the command names a code and the principal's guesses are used up (s->ctx.now_us
 * is set). */
static bool
s_guessing(server_t *s, const s_msg_t *m, const cl_command_t *cmd)
{
    uint64_t rate = s->cfg->unknown_cards_per_s;
    if (rate == 0 || !s_names_a_code(cmd))
        return false;
    s_guesses_t *g = s_guesses_of(s, m);
    int64_t now = s->ctx.now_us;
    if (g->at_us == 0 || now < g->at_us) {
        g->left = (double)rate;
    } else {
        g->left += (double)(now - g->at_us) * (double)rate / 1e6;
        if (g->left > (double)rate)
            g->left = (double)rate;
    }
    g->at_us = now;
    return g->left < 1.0;
}

/* Counts a code that named no card against the principal. */
static void
s_guessed(server_t *s, const s_msg_t *m, const cl_command_t *cmd, const cl_reply_t *r)
{
    if (s->cfg->unknown_cards_per_s != 0 && r->status == CL_UNKNOWN_CARD && s_names_a_code(cmd))
        s_guesses_of(s, m)->left -= 1.0;
}

static void
s_refuse_guessing(server_t *s, s_msg_t *m, const cl_command_t *cmd)
{
    s_reply_simple(s, m, cmd->request_id, CL_RATE_LIMITED,
                   "too many cards that do not exist were named from this key; try again in a "
                   "second");
}

/* Queries decide() answers (GetCard) and projector queries, which it refuses. */
static void
s_query(server_t *s, s_msg_t *m, const cl_command_t *cmd)
{
    s_prepare_ctx(s);
    if (s_guessing(s, m, cmd)) {
        s_refuse_guessing(s, m, cmd);
        return;
    }
    int rc = decide(s->ledger, m->who, cmd, &s->ctx, &s->out);
    if (rc != 0 || s->out.events_count != 0) {
        log_error("decide() failed on a query: %s", decide_strerror(rc));
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
        return;
    }
    decide_finish(s->ledger, cmd, &s->out);
    s_guessed(s, m, cmd, &s->reply);
    if (s_reply_add(s, m, &s->reply) < 0)
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
}

/*
 * The stored form of a reply that shows PINs (an issue's): the reply without them, and the PINs
 * sealed apart, so no PIN rests on disk in clear. Returns 0, or -1 (logged).
 */
static int
s_seal_reply(server_t *s, s_rec_t *rec)
{
    cl_reply_t *c = &s->scratch;
    *c = s->reply;
    if (c->result == CL_RES_BATCH && c->rows != NULL) {
        memcpy(s->rows_scratch, c->rows, c->rows_count * sizeof(*c->rows));
        c->rows = s->rows_scratch;
    }
    size_t len = 0;
    int rc = idem_seal_pins(s->ctx.key, c, &rec->sealed, &rec->sealed_len);
    if (rc == 0)
        rc = codec_reply_encoded_size(c, &len);
    if (rc == 0 && (rec->stored = malloc(len)) == NULL)
        rc = IDEM_ENOMEM;
    if (rc == 0)
        rc = codec_reply_encode(c, rec->stored, len, &rec->stored_len);
    if (rc != 0) {
        log_error("the idempotency record of %s cannot be made (%d)", rec->request_id, rc);
        free(rec->stored);
        free(rec->sealed);
        rec->stored = NULL;
        rec->sealed = NULL;
        return -1;
    }
    return 0;
}

/* Replays a stored reply whose PINs were sealed: decode, unseal, encode, mark replayed. */
static void
s_reply_replay_sealed(server_t *s, s_msg_t *m, const char *request_id, const idem_record_t *stored)
{
    cl_reply_t *c = &s->scratch;
    int rc = codec_reply_decode(stored->reply, stored->reply_len, c, s->rows_scratch,
                                CL_ISSUE_BATCH_MAX);
    if (rc == 0)
        rc = idem_unseal_pins(s->ctx.key, stored->sealed, stored->sealed_len, c);
    long idx = rc == 0 ? s_reply_add(s, m, c) : -1;
    if (idx < 0) {
        log_error("the stored reply of %s cannot be replayed (%d)", request_id, rc);
        s_reply_simple(s, m, request_id, CL_INTERNAL, "the stored reply cannot be read");
        return;
    }
    s->cur->replies[idx].replayed = true;
}

static void
s_reused(server_t *s, s_msg_t *m, const char *request_id)
{
    s_reply_simple(s, m, request_id, CL_REQUEST_ID_REUSED,
                   "this request id was already used for a different request");
}

/*
 * The content hash a command is remembered by. With CurveZMQ it covers the principal's public
 * key too: the same request id and content from another key is another request, refused as
 * reused, so no key is ever given another's reply (an issue's holds the code).
 */
static void
s_content_hash(const server_t *s, const s_msg_t *m, const codec_request_t *rq,
               uint8_t out[IDEM_HASH_LEN])
{
    _Static_assert(IDEM_HASH_LEN == 16, "an XXH3-128");
    if (s->auth == NULL) {
        memcpy(out, rq->content_hash, IDEM_HASH_LEN);
        return;
    }
    /* BLAKE2b, not XXH3: no other key may make a request that lands on this one's record. */
    uint8_t buf[IDEM_HASH_LEN + AUTH_KEY_Z85_LEN];
    memcpy(buf, rq->content_hash, IDEM_HASH_LEN);
    memcpy(buf + IDEM_HASH_LEN, auth_key(s->auth, m->who), AUTH_KEY_Z85_LEN);
    crypto_generichash(out, IDEM_HASH_LEN, buf, sizeof(buf), NULL, 0);
}

/* A command: the idempotency check, decide, apply, record. */
static void
s_command(server_t *s, s_msg_t *m, const codec_request_t *rq)
{
    const cl_command_t *cmd = &rq->cmd;
    uint8_t content[IDEM_HASH_LEN];
    s_content_hash(s, m, rq, content);

    const s_window_t *in = NULL;
    const s_rec_t *prior = s_map_find(s, cmd->request_id, &in);
    if (prior != NULL) {
        if (memcmp(prior->content_hash, content, IDEM_HASH_LEN) != 0) {
            s_reused(s, m, cmd->request_id);
            return;
        }
        const s_reply_t *e = &in->replies[prior->reply];
        s_reply_replay(s, m, cmd->request_id, in->rep_bytes + e->off, e->len, in == s->cur);
        return;
    }
    idem_record_t stored;
    int rc = s_rtxn(s);
    if (rc == 0)
        rc = idem_get(s->rtxn, &s->idem, cmd->request_id, &stored);
    if (rc == 0) {
        if (memcmp(stored.content_hash, content, IDEM_HASH_LEN) != 0)
            s_reused(s, m, cmd->request_id);
        else if (stored.sealed_len > 0)
            s_reply_replay_sealed(s, m, cmd->request_id, &stored);
        else
            s_reply_replay(s, m, cmd->request_id, stored.reply, stored.reply_len, false);
        idem_record_release(&stored);
        return;
    }
    if (rc != MDB_NOTFOUND) {
        log_error("idempotency lookup failed: %s", journal_strerror(rc));
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
        return;
    }

    s_prepare_ctx(s);
    if (s_guessing(s, m, cmd)) {
        s_refuse_guessing(s, m, cmd);
        return;
    }
    rc = decide(s->ledger, m->who, cmd, &s->ctx, &s->out);
    if (rc != 0) {
        log_error("decide() failed: %s", decide_strerror(rc));
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
        return;
    }
    if (s_take_events(s, s->out.events_count) != 0) {
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
        return;
    }
    decide_finish(s->ledger, cmd, &s->out);
    s_guessed(s, m, cmd, &s->reply);
    long idx = s_reply_add(s, m, &s->reply);
    s_window_t *w = s->cur;
    if (idx < 0) {
        /* The events are in the ledger but their reply cannot be stored: do not commit them. */
        w->poisoned = true;
        s_reply_simple(s, m, cmd->request_id, CL_INTERNAL, NULL);
        return;
    }
    CL_CHECK(w->recs_count < S_RECS_MAX);
    s_rec_t *rec = &w->recs[w->recs_count];
    s_copy(rec->request_id, sizeof(rec->request_id), cmd->request_id);
    memcpy(rec->content_hash, content, IDEM_HASH_LEN);
    rec->at_us = s->ctx.now_us;
    rec->reply = (size_t)idx;
    rec->stored = NULL;
    rec->stored_len = 0;
    rec->sealed = NULL;
    rec->sealed_len = 0;
    if (idem_reply_has_pins(&s->reply) && s_seal_reply(s, rec) != 0) {
        /* The events are in the ledger but their record cannot be made: do not commit them. */
        w->poisoned = true;
        return;
    }
    s_map_insert(w, w->recs_count);
    w->recs_count++;
}

static void
s_request(server_t *s, s_msg_t *m, const codec_request_t *rq)
{
    const cl_command_t *cmd = &rq->cmd;
    CL_CHECK(m->who != NULL); /* s_handle() refused a message without one */
    if (rq->status != CL_OK) {
        s_reply_simple(s, m, cmd->request_id, rq->status, rq->message);
        return;
    }
    switch (cmd->type) {
    case CL_CMD_GET_STATUS:
        s_get_status(s, m, cmd);
        break;
    case CL_CMD_GET_REQUEST:
        /* Another key's reply is not this one's to read (an issue's holds the code): with
         * CurveZMQ only operators look requests up; others send the command again with its
         * request id, which replays their own reply. */
        if (s->auth != NULL && m->who->role != CL_ROLE_OPERATOR)
            s_reply_simple(s, m, cmd->request_id, CL_PERMISSION_DENIED,
                           "only an operator looks requests up; send the command again with its "
                           "request id");
        else
            s_get_request(s, m, cmd);
        break;
    case CL_CMD_GET_CARD:
        s_query(s, m, cmd);
        break;
    default:
        if (cmd->type >= CL_CMD_PROJECTOR_FIRST)
            s_query(s, m, cmd);
        else
            s_command(s, m, rq);
        break;
    }
}

/* ---- Timers -------------------------------------------------------------------------------- */

/* Fires due ledger timers. Returns 0 or a fatal code from a flush. */
static int
s_run_timers(server_t *s)
{
    ledger_timer_t t;
    size_t fired = 0;
    s->timers_pending = false;
    while (ledger_timer_peek(s->ledger, &t)) {
        if (t.due_us > s_now(s))
            return 0;
        if (fired == DAEMON_TIMERS_PER_CYCLE_MAX) {
            s->timers_pending = true;
            return 0;
        }
        int rc = s_ensure_room(s, NULL);
        if (rc != 0)
            return rc;
        ledger_timer_pop(s->ledger);
        s_prepare_ctx(s);
        rc = decide_timer(s->ledger, &t, &s->ctx, &s->out);
        if (rc != 0) {
            log_error("decide_timer() failed: %s", decide_strerror(rc));
            continue;
        }
        s_take_events(s, s->out.events_count);
        fired++;
    }
    return 0;
}

/* ---- Messages ------------------------------------------------------------------------------ */

/*
 * Takes one waiting message without blocking. Returns 1 and fills *m and body, 0 when nothing
 * waits, -1 when the socket failed.
 */
static int
s_recv(server_t *s, s_msg_t *m, zmq_msg_t *body)
{
    zmq_msg_t frame;
    bool dropped = false;
    m->env_count = 0;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, s->router, ZMQ_DONTWAIT) < 0) {
        int err = zmq_errno();
        zmq_msg_close(&frame);
        return err == EAGAIN || err == EINTR ? 0 : -1;
    }
    /* The last frame is the request; everything before it is the envelope. */
    while (zmq_msg_more(&frame)) {
        if (m->env_count < DAEMON_ENVELOPE_FRAMES_MAX) {
            zmq_msg_init(&m->env[m->env_count]);
            zmq_msg_move(&m->env[m->env_count++], &frame);
        } else {
            dropped = true;
        }
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, s->router, 0) < 0) {
            zmq_msg_close(&frame);
            return -1;
        }
    }
    if (dropped || m->env_count == 0) {
        log_warn("a message with an envelope of more than %d frames was dropped",
                 DAEMON_ENVELOPE_FRAMES_MAX);
        for (size_t i = 0; i < m->env_count; i++)
            zmq_msg_close(&m->env[i]);
        m->env_count = 0;
        zmq_msg_close(&frame);
        return 2;
    }
    /* With CurveZMQ, ZeroMQ tags the frame with the key its connection authenticated with. */
    m->who = &s->principal;
    if (s->auth != NULL)
        m->who = auth_find(s->auth, zmq_msg_gets(&frame, "User-Id"));
    zmq_msg_move(body, &frame);
    zmq_msg_close(&frame);
    return 1;
}

/* Decides every request of one message. Returns 0 or a fatal code. */
static int
s_handle(server_t *s, s_msg_t *m, zmq_msg_t *body)
{
    int rc = codec_batch_decode(s->batch, zmq_msg_data(body), zmq_msg_size(body));
    zmq_msg_close(body);
    m->first_reply = s->cur->replies_count;
    m->reply_count = 0;
    m->complete = false;
    m->sent = false;
    if (m->who == NULL) {
        s_reply_simple(s, m, "", CL_UNAUTHENTICATED, "this key is not a principal of the ledger");
        s->cur->requests++;
        m->complete = true;
        return 0;
    }
    if (rc != 0) {
        cl_status_t st = rc == CODEC_ETOOLARGE    ? CL_TOO_LARGE
                         : rc == CODEC_EMALFORMED ? CL_MALFORMED
                                                  : CL_INTERNAL;
        char sentence[CL_MESSAGE_MAX + 1];
        snprintf(sentence, sizeof(sentence), "the message is not a valid RequestBatch: %s",
                 codec_strerror(rc));
        s_reply_simple(s, m, "", st, sentence);
        s->cur->requests++;
        m->complete = true;
        return 0;
    }
    size_t n = codec_batch_count(s->batch);
    for (size_t i = 0; i < n; i++) {
        rc = s_ensure_room(s, &m); /* m may move on to the next window */
        if (rc != 0)
            return rc;
        s_request(s, m, codec_batch_request(s->batch, i));
        s->cur->requests++;
    }
    m->complete = true;
    return 0;
}

/* ---- The loop ------------------------------------------------------------------------------ */

/* Takes the result of a checkpoint the writer finished, if any. */
static void
s_checkpoint_collect(server_t *s)
{
    checkpoint_result_t res;
    if (!checkpointer_collect(s->writer, &res))
        return;
    s->checkpoint_in_hand = false;
    s->checkpoint_failed = res.rc != 0;
    if (res.rc != 0) {
        log_error("checkpoint failed (%s); nothing is lost: the journal has every event, and the "
                  "next checkpoint writes these records again",
                  checkpoint_strerror(res.rc));
        return;
    }
    s->checkpoint_seq = res.seq;
    log_debug("checkpoint: %zu records at sequence %llu in %.1f ms (in the background)",
              res.records, (unsigned long long)res.seq, res.took_ms);
    /* Every clean record is now on disk as it is, and no batch is in hand: memory can shrink.
     * A record forgotten now must be read back from this checkpoint, not from a snapshot taken
     * before it was written: the read transaction goes first. */
    CL_CHECK(!s->copying); /* a copy begins only once the last result is collected */
    s_rtxn_end(s);
    long forgotten = ledger_forget_clean(s->ledger, (size_t)s->cfg->cache_records);
    if (forgotten > 0)
        log_info("cache: %ld records forgotten after the checkpoint at sequence %llu", forgotten,
                 (unsigned long long)res.seq);
    else if (forgotten == LEDGER_ENOMEM)
        log_warn("cache: out of memory while forgetting records; they stay in memory");
}

/* Waits until the writer holds no batch and takes its result. The read transactions go first:
 * the writer may need to grow the state's map, which waits for them. */
static void
s_checkpoint_settle(server_t *s)
{
    s_rtxn_end(s);
    checkpointer_wait(s->writer);
    s_checkpoint_collect(s);
}

/*
 * A copy that failed (out of memory) left the ledger's freeze half done: everything decided is
 * landed, then the ledger is rebuilt from disk, whose dirty records then cover every change
 * since the last checkpoint written. Returns 0 or a fatal code.
 */
static int
s_copy_failed(server_t *s, int rc)
{
    log_error("checkpoint: copying the changed records failed (%s); the state is rebuilt from "
              "disk, nothing is lost",
              checkpoint_strerror(rc));
    int drc = s_drain(s);
    if (drc != 0)
        return drc;
    if (!s->copying)
        return 0; /* a commit that failed in the drain rebuilt the ledger already */
    int rrc = s_rebuild(s);
    if (rrc != 0)
        s->broken = true;
    return rrc;
}

/* Copies about max more records of the checkpoint being copied, and hands it to the writer
 * once all are copied and the journal holds its sequence. Returns 0 or a fatal code. */
static int
s_copy_step(server_t *s, size_t max)
{
    size_t left = 0;
    int rc = checkpointer_copy(s->writer, s->ledger, max, &left);
    if (rc != 0)
        return s_copy_failed(s, rc);
    s->copy_left = left;
    if (left > 0 || s->landed_seq < s->copy_seq)
        return 0; /* the next cycle goes on; a landing wakes the loop */
    checkpointer_hand(s->writer);
    s->copying = false;
    s->checkpoint_in_hand = true;
    log_debug("checkpoint: the records changed up to sequence %llu copied in %.1f ms, handed to "
              "the writer",
              (unsigned long long)s->copy_seq, s_mono_ms() - s->copy_t0);
    return 0;
}

/* Copies the rest of the checkpoint being copied and hands it over; everything decided must
 * have landed. Returns 0 or a fatal code. */
static int
s_copy_finish(server_t *s)
{
    CL_CHECK(s->landed_seq >= s->copy_seq);
    int rc = s_copy_step(s, SIZE_MAX);
    CL_CHECK(rc != 0 || !s->copying);
    return rc;
}

/*
 * Writes a checkpoint: a full one in this thread (every record; after the state was rebuilt
 * from the whole journal), else the dirty records through the background writer, waited for
 * when wait is set (at the stop). Everything decided must have landed (s_drain()): a checkpoint
 * is the state as of a committed sequence. Returns 0 or a code (logged).
 */
static int
s_checkpoint(server_t *s, const char *why, bool wait)
{
    CL_CHECK(s->flying == NULL && !s_window_busy(s->cur));
    double t0 = s_mono_ms();
    size_t records = 0;
    int rc;
    s->last_checkpoint_ms = t0;
    /* A copy under way ends first: a failure of it rebuilds the ledger, which may then need a
     * full checkpoint. */
    if (s->copying && !s->full_checkpoint && (rc = s_copy_finish(s)) != 0)
        return rc;
    if (s->full_checkpoint) {
        s_rtxn_end(s);
        if (s->copying) { /* a full checkpoint rewrites everything */
            ledger_frozen_drop(s->ledger);
            s->copying = false;
        }
        checkpointer_discard(s->writer);
        s->checkpoint_in_hand = false;
        s->checkpoint_failed = false;
        rc = checkpoint_write(s->state, s->ledger, true, &records);
        if (rc == 0) {
            /* From now on the ledger is a cache over what it just wrote, like after a start. */
            checkpoint_source_attach(s->source, s->ledger);
            s->checkpoint_seq = ledger_meta(s->ledger)->last_seq;
            log_info("checkpoint (%s, full): %zu records at sequence %llu in %.1f ms", why, records,
                     (unsigned long long)s->checkpoint_seq, s_mono_ms() - t0);
        }
    } else {
        if (s->checkpoint_in_hand)
            s_checkpoint_settle(s);
        rc = checkpointer_start(s->writer, s->ledger);
        if (rc == 0)
            s->checkpoint_in_hand = true;
        if (rc == 0 && wait) {
            s_checkpoint_settle(s);
            rc = s->checkpoint_failed ? -1 : 0; /* logged by s_checkpoint_collect() */
            if (rc == 0)
                log_info("checkpoint (%s): at sequence %llu in %.1f ms", why,
                         (unsigned long long)s->checkpoint_seq, s_mono_ms() - t0);
        }
    }
    if (rc != 0) {
        if (!s->checkpoint_failed)
            log_error("checkpoint (%s) failed (%s); nothing is lost: the journal has every event "
                      "and the next checkpoint, or the next start, catches up",
                      why, checkpoint_strerror(rc));
        return rc;
    }
    s->events_since_checkpoint = 0;
    s->counted_from_seq = ledger_meta(s->ledger)->last_seq;
    s->full_checkpoint = false;
    return 0;
}

/* Logs, at most once a minute, that the journal's file could not be grown ahead (a full disk,
 * most likely): commits then grow it themselves. Looked at once a second. */
static void
s_ahead_check(server_t *s)
{
    double now = s_mono_ms();
    if (s->ahead == NULL || now - s->ahead_checked_ms < 1000.0)
        return;
    s->ahead_checked_ms = now;
    int rc = journal_ahead_error(s->ahead);
    if (rc != 0 && now - s->ahead_warned_ms >= 60000.0) {
        s->ahead_warned_ms = now;
        log_warn("journal: could not grow the file ahead of its commits (%s); commits go on, "
                 "growing it themselves",
                 journal_strerror(rc));
    }
}

/* Writes a checkpoint when one is due and the writer is free: a full one at once, else one
 * copied a little each cycle (s_copy_step()). Returns 0 or a fatal code. */
static int
s_maybe_checkpoint(server_t *s)
{
    s_ahead_check(s);
    if (s->copying)
        return s_copy_step(s, S_COPY_STEP);
    s_checkpoint_collect(s);
    if (s->checkpoint_in_hand)
        return 0; /* the last one is still being written: a later cycle */
    if (s->events_since_checkpoint == 0 && !s->full_checkpoint && !s->checkpoint_failed)
        return 0;
    const char *why = NULL;
    if (s->events_since_checkpoint >= s->cfg->checkpoint_events)
        why = "events";
    else if (s_mono_ms() - s->last_checkpoint_ms >= (double)s->cfg->checkpoint_interval_ms)
        why = "interval";
    if (why == NULL)
        return 0;
    if (s->full_checkpoint) { /* written by the loop, as of a committed sequence */
        int rc = s_drain(s);
        if (rc == 0)
            (void)s_checkpoint(s, why, false);
        return rc;
    }
    /* No drain: the copy is as of the last decided sequence, and goes to the writer only once
     * the journal holds it. */
    int rc = checkpointer_begin(s->writer, s->ledger);
    if (rc != 0) {
        /* Out of memory before anything was frozen: the dirty records stay as they are, and a
         * later cycle tries again. */
        log_error("checkpoint (%s): could not begin (%s); nothing is lost, it is tried again", why,
                  checkpoint_strerror(rc));
        return 0;
    }
    s->copying = true;
    s->copy_left = SIZE_MAX;
    s->copy_seq = ledger_meta(s->ledger)->last_seq;
    s->copy_t0 = s_mono_ms();
    s->last_checkpoint_ms = s->copy_t0;
    s->events_since_checkpoint = 0;
    s->counted_from_seq = s->copy_seq;
    log_debug("checkpoint (%s): copying the records changed up to sequence %llu", why,
              (unsigned long long)s->copy_seq);
    return s_copy_step(s, S_COPY_STEP);
}

static long
s_poll_timeout_ms(server_t *s)
{
    long timeout = DAEMON_POLL_MAX_MS;
    ledger_timer_t t;
    if (s->copying && s->copy_left > 0) {
        /* Cycles go on back to back until the copy is done: no snapshot is kept across them
         * (a commit that grows the map waits for every read transaction). */
        s_rtxn_end(s);
        return 0;
    }
    if (s->timers_pending || (s->flying == NULL && s_window_busy(s->cur)))
        return 0;
    if (!s->cfg->test_clock && ledger_timer_peek(s->ledger, &t)) {
        int64_t wait_us = t.due_us - s_now(s);
        long ms = wait_us <= 0 ? 0 : (long)((wait_us + 999) / 1000);
        if (ms < timeout)
            timeout = ms;
    }
    /* The interval matters only when a checkpoint could begin: not while one is copied or
     * written (its end is noticed at the next wake-up, at most DAEMON_POLL_MAX_MS later). */
    if ((s->events_since_checkpoint > 0 || s->full_checkpoint || s->checkpoint_failed) &&
        !s->copying && !s->checkpoint_in_hand) {
        double left =
            (double)s->cfg->checkpoint_interval_ms - (s_mono_ms() - s->last_checkpoint_ms);
        long ms = left <= 0 ? 0 : (long)left + 1;
        if (ms < timeout)
            timeout = ms;
    }
    /* No snapshot held while waiting: a commit that grows the map waits for every read
     * transaction, and old pages are reused only once no reader holds them. */
    s_rtxn_end(s);
    return timeout;
}

/* One cycle. Returns 0 or a fatal code. */
static int
s_cycle(server_t *s)
{
    int rc = 0;
    if (s->flying != NULL && s_committer_done(&s->committer))
        rc = s_land_flying(s);
    if (rc == 0)
        rc = s_run_timers(s);
    while (rc == 0) {
        s_window_t *w = s->cur;
        if (w->requests >= DAEMON_COMMIT_REQUESTS_MAX ||
            w->msgs_count >= DAEMON_COMMIT_MESSAGES_MAX) {
            rc = s_submit(s); /* full: waits for the window in flight */
            break;
        }
        s_msg_t *m = &w->msgs[w->msgs_count];
        zmq_msg_t body;
        zmq_msg_init(&body);
        int got = s_recv(s, m, &body);
        if (got == 0 || got < 0) {
            zmq_msg_close(&body);
            if (got < 0) {
                log_error("the command socket failed: %s", zmq_strerror(zmq_errno()));
                rc = SERVER_EZMQ;
            }
            break;
        }
        if (got == 2) {
            zmq_msg_close(&body);
            continue;
        }
        w->msgs_count++;
        rc = s_handle(s, m, &body);
        if (rc == 0 && s->flying != NULL && s_committer_done(&s->committer)) {
            /* The commit thread is free again: give it what is decided so far. */
            rc = s_submit(s);
            break;
        }
    }
    if (rc == 0)
        rc = s_run_timers(s);
    if (rc == 0 && s->flying == NULL && s_window_busy(s->cur))
        rc = s_submit(s);
    if (rc == 0)
        rc = s_maybe_checkpoint(s);
    return rc;
}

int
server_run(server_t *s, volatile sig_atomic_t *stop, int wake_fd_read)
{
    int rc = 0;
    while (*stop == 0) {
        zmq_pollitem_t items[3] = {
            { .socket = s->router, .events = ZMQ_POLLIN },
            { .socket = NULL, .fd = s->committer.done_fd, .events = ZMQ_POLLIN },
            { .socket = NULL, .fd = wake_fd_read, .events = ZMQ_POLLIN },
        };
        int n = zmq_poll(items, wake_fd_read >= 0 ? 3 : 2, s_poll_timeout_ms(s));
        if (n < 0) {
            if (zmq_errno() == EINTR)
                continue;
            log_error("zmq_poll failed: %s", zmq_strerror(zmq_errno()));
            rc = SERVER_EZMQ;
            break;
        }
        rc = s_cycle(s);
        if (rc != 0)
            break;
    }
    /* What is decided is committed and answered, unless the state itself is lost. */
    if (!s->broken) {
        int drc = s_drain(s);
        if (rc == 0)
            rc = drc;
    }
    if (rc != 0)
        return rc;
    /* A failed final checkpoint loses nothing (the journal has every event; the next start
     * replays a longer tail), so it is logged by s_checkpoint() but does not fail the stop. */
    if (s->events_since_checkpoint > 0 || s->full_checkpoint || s->checkpoint_failed || s->copying)
        rc = s_checkpoint(s, "shutdown", true);
    else
        s_checkpoint_settle(s); /* the last routine one is on disk before the exit */
    if (s->broken)              /* the state could not be rebuilt after a failed copy */
        return rc != 0 ? rc : SERVER_ENOMEM;
    log_info("stopped cleanly at sequence %llu",
             (unsigned long long)ledger_meta(s->ledger)->last_seq);
    return 0;
}

/* ---- Life cycle ---------------------------------------------------------------------------- */

int
server_new(const server_opts_t *o, server_t **out)
{
    server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return SERVER_ENOMEM;
    s->cfg = o->cfg;
    s->journal = o->journal;
    s->idem = o->idem;
    s->router = o->router;
    s->pub = o->pub;
    s->principal.role = CL_ROLE_OPERATOR;
    s_copy(s->principal.name, sizeof(s->principal.name), "local");
    s->auth = o->auth;
    s->guesses_count = 1 + auth_count(o->auth);
    s->guesses = calloc(s->guesses_count, sizeof(*s->guesses));

    s->events = calloc(DECIDE_EVENTS_MAX, sizeof(*s->events));
    s->rows = calloc(CL_ISSUE_BATCH_MAX, sizeof(*s->rows));
    s->rows_scratch = calloc(CL_ISSUE_BATCH_MAX, sizeof(*s->rows_scratch));
    s->entry_buf = malloc(S_ENTRY_MAX);
    s->committer.done_fd = -1;
    bool ok = s->events != NULL && s->guesses != NULL && s->rows != NULL &&
              s->rows_scratch != NULL && s->entry_buf != NULL &&
              s_window_init(&s->win[0], &s->idem) && s_window_init(&s->win[1], &s->idem) &&
              s_grow(&s->send_buf, &s->send_cap, 1024u * 1024) && codec_batch_new(&s->batch) == 0;
    s->cur = &s->win[0];
    if (ok) {
        s_committer_t *c = &s->committer;
        c->journal = s->journal;
        c->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        c->running = c->done_fd >= 0 && pthread_create(&c->thread, NULL, s_committer_main, c) == 0;
        ok = c->running;
    }
    if (!ok) {
        server_destroy(&s);
        return SERVER_ENOMEM;
    }
    s->ctx.key = o->key;
    s->ctx.random = s_random;
    s->ctx.random_ctx = &s->random;
    s->ctx.test_clock = o->cfg->test_clock;
    s->out.events = s->events;
    s->out.events_cap = DECIDE_EVENTS_MAX;
    s->out.reply = &s->reply;
    s->out.rows = s->rows;
    s->out.rows_cap = CL_ISSUE_BATCH_MAX;

    if (o->cfg->journal_ahead_mb > 0) {
        int arc = journal_ahead_start(o->journal, o->cfg->journal_ahead_mb << 20, &s->ahead);
        if (arc != 0)
            log_warn("journal: no thread to grow the file ahead (%s); commits grow it themselves",
                     journal_strerror(arc));
    }
    if (o->cfg->prefault && prefault_start(&s->prefault) != 0)
        log_warn("prefault: no thread to fault memory in ahead; the loop does it itself");
    if (s->prefault != NULL) {
        ledger_set_ahead(o->ledger, prefault_ask, s->prefault);
        uint64_t events = o->cfg->checkpoint_events;
        size_t want = events < S_BATCH_RESERVE_MAX / S_BATCH_RESERVE_PER_EVENT
                          ? (size_t)events * S_BATCH_RESERVE_PER_EVENT
                          : S_BATCH_RESERVE_MAX;
        (void)checkpointer_reserve(o->writer, want, prefault_ask, s->prefault); /* grows later */
    }

    /* Taken over last, so a failure above leaves the caller's ledger alone. */
    s->ledger = o->ledger;
    s->state = o->state;
    s->source = o->source;
    s->writer = o->writer;
    s->checkpoint_seq = o->loaded->checkpoint_seq;
    s->events_since_checkpoint = o->loaded->replayed;
    s->landed_seq = o->loaded->head_seq;
    s->counted_from_seq = o->loaded->head_seq;
    s->full_checkpoint = o->loaded->full_needed;
    s->last_checkpoint_ms = s_mono_ms();
    s->ahead_warned_ms = -1e9;
    *out = s;
    return 0;
}

void
server_destroy(server_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    server_t *s = *sp;
    s_rtxn_end(s);
    s_committer_t *c = &s->committer;
    if (c->running) {
        if (s->flying != NULL)
            s_committer_take(c); /* its replies are never sent: the loop failed */
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
    }
    if (c->done_fd >= 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        close(c->done_fd);
    }
    codec_batch_destroy(&s->batch);
    journal_ahead_stop(&s->ahead);
    if (s->writer != NULL)
        (void)checkpointer_reserve(s->writer, 0, NULL, NULL); /* the prefault thread goes */
    prefault_stop(&s->prefault);
    ledger_destroy(&s->ledger);
    free(s->events);
    free(s->guesses);
    free(s->rows);
    free(s->rows_scratch);
    s_window_free(&s->win[0]);
    s_window_free(&s->win[1]);
    free(s->entry_buf);
    free(s->send_buf);
    sodium_memzero(&s->random, sizeof(s->random));
    free(s);
    *sp = NULL;
}
