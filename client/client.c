/*
 * libcardledger: one DEALER socket, request framing, reply matching and safe retries.
 *
 * Everything goes through "slots": a message sent and not yet answered. A slot keeps a copy of
 * its frame and the request ids in it, so the message can be sent again after a timeout (with
 * the same ids: the ledger replays the stored reply of a request it already applied), and so a
 * reply can be matched to its message by the ids it echoes. cl_client_call_batch() is the
 * simple case of the pipelined API: one slot, wait, resend on a fresh socket, up to `retries`
 * times, then give up and drop the slot.
 *
 * Why a fresh socket for every retry: ZeroMQ hides reconnection, so a DEALER cannot tell "the
 * daemon is gone" from "the reply is slow". Closing the socket (with linger 0) drops whatever
 * it still holds, including a late reply to the try we gave up on, so a reply that arrives on
 * the new socket answers a message sent on it. This is the "lazy pirate" pattern of the ZeroMQ
 * guide, which is safe here because the request id makes the resend idempotent.
 *
 * Buffers (frames, encoded requests, reply rows) are allocated on first need, grow up to the
 * named limits and are reused for the client's life; nothing is allocated per reply.
 */
#include "cardledger.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <zmq.h>

#include "codec.h"

/* Frames and encode buffers start at this size and double up to CL_FRAME_MAX_BYTES. */
#define S_BUF_INITIAL (16 * 1024)

/* One message sent and not yet answered. */
typedef struct s_slot {
    bool used;                          /* outstanding */
    uint64_t tag;                       /* what cl_client_send() returned */
    size_t n;                           /* requests in the message */
    uint8_t *frame;                     /* the RequestBatch as sent (for a resend) */
    size_t frame_len;                   /* bytes of frame in use */
    size_t frame_cap;                   /* bytes allocated */
    char (*ids)[CL_REQUEST_ID_MAX + 1]; /* the request ids, in order */
    size_t ids_cap;                     /* ids allocated */
} s_slot_t;

struct cl_client {
    void *ctx;                             /* the ZeroMQ context its sockets are made in */
    bool own_ctx;                          /* ctx is this client's own: terminate it */
    void *sock;                            /* the DEALER socket, replaced on every retry */
    int sock_fd;                           /* its ZMQ_FD (cl_client_fd()), -1 without a socket */
    char endpoint[CL_CLIENT_ENDPOINT_MAX]; /* where to connect */
    cl_client_opts_t opts;                 /* timeouts, retries, window, keys */
    bool curve;                            /* opts has CurveZMQ keys */
    uint64_t next_tag;                     /* the tag of the next message */
    s_slot_t *slots;                       /* opts.window slots */
    size_t outstanding;                    /* slots in use */
    uint8_t *enc;                          /* the requests of one message, packed back to back */
    size_t enc_cap;                        /* bytes allocated */
    size_t enc_off[CL_BATCH_REQUESTS_MAX]; /* where each request starts in enc */
    size_t enc_len[CL_BATCH_REQUESTS_MAX]; /* and its length */
    cl_command_t scratch;                  /* a command copied to give it a fresh request id */
    cl_reply_t raw_reply;                  /* cl_client_call_raw(): the reply, for matching */
    cl_issued_row_t *rows;                 /* rows of the replies last handed out */
    cl_issued_row_t *stored_rows;          /* rows of cl_client_stored_reply() */
    zmq_msg_t last;                        /* the reply message last handed out (or pending) */
    bool has_last;                         /* last is initialised and holds a message */
    bool pending;                          /* last was not handed out: cap was too small */
};

const char *
cl_client_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
    case CLIENT_EINVAL:
        return "invalid argument";
    case CLIENT_ENOMEM:
        return "out of memory";
    case CLIENT_ETIMEOUT:
        return "could not reach the ledger (no reply after every retry)";
    case CLIENT_EPROTO:
        return "the ledger's reply could not be read or does not match the request";
    case CLIENT_ETOOLARGE:
        return "the message is larger than the ledger accepts";
    case CLIENT_EENCODE:
        return "a command could not be encoded (a field over its limit or not terminated)";
    case CLIENT_EZMQ:
        return "ZeroMQ refused (bad endpoint?)";
    case CLIENT_EFULL:
        return "too many messages outstanding; receive replies first";
    case CLIENT_EEMPTY:
        return "no message outstanding";
    case CLIENT_ENOSPC:
        return "the reply has more replies than the room given";
    case CLIENT_EBUSY:
        return "pipelined messages are still outstanding";
    default:
        return "unknown client error";
    }
}

void
cl_client_opts_init(cl_client_opts_t *opts)
{
    if (opts == NULL)
        return;
    opts->timeout_ms = CL_CLIENT_TIMEOUT_MS_DEFAULT;
    opts->retries = CL_CLIENT_RETRIES_DEFAULT;
    opts->window = CL_CLIENT_WINDOW_DEFAULT;
    opts->zmq_context = NULL;
    opts->curve_server_key[0] = '\0';
    opts->curve_public_key[0] = '\0';
    opts->curve_secret_key[0] = '\0';
}

/* A CurveZMQ key in Z85: CL_CLIENT_KEY_LEN characters that decode to 32 bytes. */
static bool
s_key_ok(const char *z85)
{
    uint8_t raw[32];
    return strnlen(z85, CL_CLIENT_KEY_LEN + 1) == CL_CLIENT_KEY_LEN &&
           zmq_z85_decode(raw, z85) != NULL;
}

/* Reads one Z85 key, whitespace around it allowed, from a file. */
static bool
s_read_key(const char *path, char out[CL_CLIENT_KEY_LEN + 1])
{
    _Static_assert(CL_CLIENT_KEY_LEN == CL_KEY_Z85_LEN, "one key length");
    return cl_key_file_read(path, out) == 0 && s_key_ok(out);
}

int
cl_client_opts_load_keys(cl_client_opts_t *opts, const char *server_key_file, const char *key_file)
{
    char server[CL_CLIENT_KEY_LEN + 1], secret[CL_CLIENT_KEY_LEN + 1],
        public[CL_CLIENT_KEY_LEN + 1];
    if (opts == NULL || !s_read_key(server_key_file, server) || !s_read_key(key_file, secret) ||
        zmq_curve_public(public, secret) != 0) {
        sodium_memzero(secret, sizeof(secret));
        return CLIENT_EINVAL;
    }
    memcpy(opts->curve_server_key, server, sizeof(server));
    memcpy(opts->curve_public_key, public, sizeof(public));
    memcpy(opts->curve_secret_key, secret, sizeof(secret));
    sodium_memzero(secret, sizeof(secret));
    return 0;
}

/* The keys of opts: none (false, fine), or all three valid (true); *ok false when neither. */
static bool
s_curve(const cl_client_opts_t *o, bool *ok)
{
    bool any = o->curve_server_key[0] != '\0' || o->curve_public_key[0] != '\0' ||
               o->curve_secret_key[0] != '\0';
    *ok = !any || (s_key_ok(o->curve_server_key) && s_key_ok(o->curve_public_key) &&
                   s_key_ok(o->curve_secret_key));
    return any;
}

/*
 * Random bytes for request ids, drawn ahead per thread: randombytes_buf() makes one getrandom()
 * system call per call, which costs more than the rest of an id (about 1.5 us on a virtual
 * machine, measured with cardledger-bench); one call per S_ID_POOL_BYTES serves 400 ids. Bytes
 * handed out are wiped from the pool. A forked child must never hand out its parent's bytes:
 * pthread_atfork()'s child handler empties the pool of the thread that forked, the child's only
 * thread.
 */
#define S_ID_POOL_BYTES 4000
static _Thread_local struct {
    uint8_t bytes[S_ID_POOL_BYTES]; /* the unused ones are the last `left` */
    size_t left;
} s_id_pool;
static pthread_once_t s_id_pool_once = PTHREAD_ONCE_INIT;

static void
s_id_pool_forget(void)
{
    sodium_memzero(&s_id_pool, sizeof(s_id_pool));
}

static void
s_id_pool_init(void)
{
    if (sodium_init() < 0 || pthread_atfork(NULL, NULL, s_id_pool_forget) != 0)
        abort(); /* no CSPRNG, or no way to keep a child from repeating ids: nothing safe */
}

static void
s_id_random(uint8_t *out, size_t len)
{
    assert(len <= S_ID_POOL_BYTES);
    pthread_once(&s_id_pool_once, s_id_pool_init);
    if (s_id_pool.left < len) {
        randombytes_buf(s_id_pool.bytes, sizeof(s_id_pool.bytes));
        s_id_pool.left = sizeof(s_id_pool.bytes);
    }
    uint8_t *from = s_id_pool.bytes + sizeof(s_id_pool.bytes) - s_id_pool.left;
    memcpy(out, from, len);
    sodium_memzero(from, len);
    s_id_pool.left -= len;
}

void
cl_client_new_request_id(char out[CL_REQUEST_ID_MAX + 1])
{
    /* 128 bits: milliseconds since the Unix epoch in the top 48, then 80 random bits. Ids made
     * later sort later, so the daemon's idempotency B-tree (keyed by request id, memcmp order)
     * takes every new record at its right edge, as with UUIDv7 or ULID, instead of on a random
     * leaf page per command (docs/client.md, "Request ids"). */
    uint8_t raw[16];
    struct timespec ts;
    uint64_t ms = 0;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec > 0)
        ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    ms &= UINT64_C(0xffffffffffff); /* 48 bits: until the year 10889 */
    for (int i = 0; i < 6; i++)
        raw[i] = (uint8_t)(ms >> (40 - 8 * i));
    s_id_random(raw + 6, sizeof(raw) - 6);
    cl_client_request_id_from_bytes(raw, out);
}

void
cl_client_request_id_from_bytes(const uint8_t raw[16], char out[CL_REQUEST_ID_MAX + 1])
{
    /* The codec's base32: the journal then stores such an id as its 16 bytes
     * (JournalEntry.request_id_b32), and the text sorts as the bytes do. */
    int rc = codec_request_id_b32_text(raw, 16, out);
    assert(rc == 0 && strlen(out) == CL_CLIENT_REQUEST_ID_LEN);
    (void)rc;
}

/* Grows *buf to at least need bytes, doubling from S_BUF_INITIAL, never beyond max. */
static int
s_grow(uint8_t **buf, size_t *cap, size_t need, size_t max)
{
    if (need <= *cap)
        return 0;
    if (need > max)
        return CLIENT_ETOOLARGE;
    size_t n = *cap > 0 ? *cap : S_BUF_INITIAL;
    while (n < need)
        n = n > max / 2 ? max : n * 2;
    uint8_t *p = realloc(*buf, n);
    if (p == NULL)
        return CLIENT_ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

/* A new DEALER socket connected to the endpoint, replacing the old one (dropped unread). */
static int
s_socket_open(cl_client_t *c)
{
    if (c->sock != NULL) {
        zmq_close(c->sock);
        c->sock = NULL;
        c->sock_fd = -1;
    }
    void *s = zmq_socket(c->ctx, ZMQ_DEALER);
    if (s == NULL)
        return CLIENT_EZMQ;
    int linger = 0;
    int64_t maxmsg = CL_FRAME_MAX_BYTES;
    /* The window must never block a send: leave room for it and a retry's resend. */
    int hwm = (int)c->opts.window * 2 + 16;
    int fd = -1;
    size_t fd_len = sizeof(fd);
    if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm)) != 0 ||
        (c->curve && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->opts.curve_server_key,
                                     CL_CLIENT_KEY_LEN) != 0 ||
                      zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->opts.curve_public_key,
                                     CL_CLIENT_KEY_LEN) != 0 ||
                      zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->opts.curve_secret_key,
                                     CL_CLIENT_KEY_LEN) != 0)) ||
        zmq_getsockopt(s, ZMQ_FD, &fd, &fd_len) != 0 || zmq_connect(s, c->endpoint) != 0) {
        int err = errno;
        zmq_close(s);
        return err == EINVAL || err == EPROTONOSUPPORT || err == ENOCOMPATPROTO ? CLIENT_EINVAL
                                                                                : CLIENT_EZMQ;
    }
    assert(fd >= 0);
    c->sock = s;
    c->sock_fd = fd;
    return 0;
}

static void
s_last_release(cl_client_t *c)
{
    if (c->has_last) {
        zmq_msg_close(&c->last);
        c->has_last = false;
    }
    c->pending = false;
}

int
cl_client_open(const char *endpoint, const cl_client_opts_t *opts, cl_client_t **out)
{
    if (endpoint == NULL || out == NULL || strlen(endpoint) >= CL_CLIENT_ENDPOINT_MAX)
        return CLIENT_EINVAL;
    cl_client_opts_t o;
    cl_client_opts_init(&o);
    if (opts != NULL)
        o = *opts;
    bool keys_ok = false;
    bool curve = s_curve(&o, &keys_ok);
    if (o.timeout_ms <= 0 || o.retries < 0 || o.retries > CL_CLIENT_RETRIES_MAX || o.window == 0 ||
        o.window > CL_CLIENT_WINDOW_MAX || !keys_ok)
        return CLIENT_EINVAL;
    if (sodium_init() < 0)
        return CLIENT_ENOMEM;

    cl_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CLIENT_ENOMEM;
    c->opts = o;
    c->curve = curve;
    c->sock_fd = -1;
    c->next_tag = 1;
    memcpy(c->endpoint, endpoint, strlen(endpoint) + 1);
    c->slots = calloc(o.window, sizeof(*c->slots));
    c->own_ctx = o.zmq_context == NULL;
    c->ctx = c->own_ctx ? zmq_ctx_new() : o.zmq_context;
    int rc = c->slots == NULL ? CLIENT_ENOMEM : c->ctx == NULL ? CLIENT_EZMQ : 0;
    if (rc == 0)
        rc = s_socket_open(c);
    if (rc < 0) {
        cl_client_close(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void
cl_client_close(cl_client_t **cp)
{
    if (cp == NULL || *cp == NULL)
        return;
    cl_client_t *c = *cp;
    s_last_release(c);
    if (c->sock != NULL)
        zmq_close(c->sock);
    if (c->own_ctx && c->ctx != NULL)
        zmq_ctx_term(c->ctx);
    if (c->slots != NULL) {
        for (size_t i = 0; i < c->opts.window; i++) {
            free(c->slots[i].frame);
            free(c->slots[i].ids);
        }
    }
    free(c->slots);
    free(c->enc);
    free(c->rows);
    free(c->stored_rows);
    sodium_memzero(c->opts.curve_secret_key, sizeof(c->opts.curve_secret_key));
    free(c);
    *cp = NULL;
}

int
cl_client_fd(const cl_client_t *c, int *out_fd)
{
    if (c == NULL || out_fd == NULL)
        return CLIENT_EINVAL;
    /* No socket: a resend or a failed call could not open the new one. */
    if (c->sock == NULL)
        return CLIENT_EZMQ;
    assert(c->sock_fd >= 0);
    *out_fd = c->sock_fd;
    return 0;
}

size_t
cl_client_outstanding(const cl_client_t *c)
{
    return c != NULL ? c->outstanding : 0;
}

/* Encodes the commands into a free slot and returns it (not yet marked used). */
static int
s_build(cl_client_t *c, const cl_command_t *cmds, size_t n, s_slot_t **out_slot)
{
    s_slot_t *slot = NULL;
    for (size_t i = 0; i < c->opts.window; i++) {
        if (!c->slots[i].used) {
            slot = &c->slots[i];
            break;
        }
    }
    if (slot == NULL)
        return CLIENT_EFULL;
    if (slot->ids_cap < n) {
        void *p = realloc(slot->ids, n * sizeof(*slot->ids));
        if (p == NULL)
            return CLIENT_ENOMEM;
        slot->ids = p;
        slot->ids_cap = n;
    }

    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const cl_command_t *cmd = &cmds[i];
        if (cmd->request_id[0] == '\0') {
            /* cl_command_t is plain data: a copy with a fresh id encodes the same command. */
            c->scratch = cmd[0];
            cl_client_new_request_id(c->scratch.request_id);
            cmd = &c->scratch;
        }
        if (memchr(cmd->request_id, '\0', sizeof(cmd->request_id)) == NULL)
            return CLIENT_EENCODE;
        for (;;) {
            size_t len = 0;
            int rc = c->enc == NULL
                         ? CODEC_ENOSPC
                         : codec_request_encode(cmd, c->enc + off, c->enc_cap - off, &len);
            if (rc == 0) {
                c->enc_off[i] = off;
                c->enc_len[i] = len;
                off += len;
                break;
            }
            if (rc != CODEC_ENOSPC)
                return rc == CODEC_ENOMEM ? CLIENT_ENOMEM : CLIENT_EENCODE;
            if (c->enc_cap >= CL_FRAME_MAX_BYTES)
                return CLIENT_ETOOLARGE;
            size_t want = c->enc_cap > 0 ? c->enc_cap * 2 : S_BUF_INITIAL;
            rc = s_grow(&c->enc, &c->enc_cap, want < CL_FRAME_MAX_BYTES ? want : CL_FRAME_MAX_BYTES,
                        CL_FRAME_MAX_BYTES);
            if (rc < 0)
                return rc;
        }
        memcpy(slot->ids[i], cmd->request_id, sizeof(slot->ids[i]));
    }

    /* The frame is each request behind a one-byte tag and its length as a varint. */
    const uint8_t *reqs[CL_BATCH_REQUESTS_MAX];
    size_t frame_need = 0;
    for (size_t i = 0; i < n; i++) {
        reqs[i] = c->enc + c->enc_off[i];
        size_t varint = 1;
        for (size_t v = c->enc_len[i]; v >= 0x80; v >>= 7)
            varint++;
        frame_need += 1 + varint + c->enc_len[i];
    }
    int rc = s_grow(&slot->frame, &slot->frame_cap, frame_need, CL_FRAME_MAX_BYTES);
    if (rc < 0)
        return rc;
    size_t len = 0;
    rc = codec_request_batch_frame(reqs, c->enc_len, n, slot->frame, slot->frame_cap, &len);
    if (rc < 0)
        return rc == CODEC_ENOSPC ? CLIENT_ETOOLARGE : CLIENT_EENCODE;
    slot->frame_len = len;
    slot->n = n;
    *out_slot = slot;
    return 0;
}

static int
s_send_frame(cl_client_t *c, const s_slot_t *slot)
{
    if (zmq_send(c->sock, slot->frame, slot->frame_len, ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? CLIENT_EFULL : CLIENT_EZMQ;
    return 0;
}

int
cl_client_send(cl_client_t *c, const cl_command_t *cmds, size_t n, uint64_t *out_tag)
{
    if (c == NULL || cmds == NULL || n == 0 || n > CL_BATCH_REQUESTS_MAX)
        return CLIENT_EINVAL;
    s_slot_t *slot;
    int rc = s_build(c, cmds, n, &slot);
    if (rc < 0)
        return rc;
    rc = s_send_frame(c, slot);
    if (rc < 0)
        return rc;
    slot->used = true;
    slot->tag = c->next_tag++;
    c->outstanding++;
    if (out_tag != NULL)
        *out_tag = slot->tag;
    return 0;
}

/* Forgets every outstanding message and replaces the socket, so no late reply surfaces. */
static void
s_drop_all(cl_client_t *c)
{
    for (size_t i = 0; i < c->opts.window; i++)
        c->slots[i].used = false;
    c->outstanding = 0;
    s_last_release(c);
    (void)s_socket_open(c); /* on failure the next send reports it */
}

int
cl_client_resend(cl_client_t *c)
{
    if (c == NULL)
        return CLIENT_EINVAL;
    s_last_release(c);
    int rc = s_socket_open(c);
    if (rc < 0)
        return rc;
    /* Oldest first, so the ledger sees them in the order they were first sent. The loop ends
     * when no used slot is left after the last one sent, so it never depends on the count
     * agreeing with the slots (which it does: asserted below). */
    uint64_t after = 0;
    size_t sent = 0;
    for (;;) {
        s_slot_t *next = NULL;
        for (size_t i = 0; i < c->opts.window; i++) {
            s_slot_t *s = &c->slots[i];
            if (s->used && s->tag > after && (next == NULL || s->tag < next->tag))
                next = s;
        }
        if (next == NULL)
            break;
        rc = s_send_frame(c, next);
        if (rc < 0)
            return rc;
        after = next->tag;
        sent++;
    }
    assert(sent == c->outstanding);
    (void)sent;
    return 0;
}

static int64_t
s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Receives the next message into c->last (the last frame of a multipart message, so a
 * delimiter frame before it does not matter). Returns 0, CLIENT_ETIMEOUT or CLIENT_EZMQ. */
static int
s_recv_msg(cl_client_t *c, int timeout_ms)
{
    /* Not waiting at all needs no zmq_poll(): a receive with ZMQ_DONTWAIT looks at the socket's
     * pending commands itself before it says EAGAIN, as ZMQ_EVENTS does, so afterwards the
     * socket's ZMQ_FD signals the next arrival (cl_client_fd()). That saves an event loop,
     * which drains with a timeout of 0 after every wake, two system calls per look. */
    if (timeout_ms != 0) {
        zmq_pollitem_t item = { .socket = c->sock, .events = ZMQ_POLLIN };
        int n = zmq_poll(&item, 1, timeout_ms);
        if (n < 0)
            return errno == EINTR ? CLIENT_ETIMEOUT : CLIENT_EZMQ;
        if (n == 0)
            return CLIENT_ETIMEOUT;
    }
    s_last_release(c);
    zmq_msg_init(&c->last);
    c->has_last = true;
    for (;;) {
        if (zmq_msg_recv(&c->last, c->sock, ZMQ_DONTWAIT) < 0) {
            int err = errno;
            s_last_release(c);
            return err == EAGAIN || err == EINTR ? CLIENT_ETIMEOUT : CLIENT_EZMQ;
        }
        if (!zmq_msg_more(&c->last))
            return 0;
    }
}

/* The slot a decoded reply batch answers, or NULL. Replies echo their request ids; a request
 * the ledger could not read echoes an empty id, which matches any. A frame the ledger could not
 * read at all gets one refusal with an empty id: it answers the oldest message (the ledger
 * answers the messages of one connection in order). */
static s_slot_t *
s_match(cl_client_t *c, const cl_reply_t *r, size_t count, bool *out_frame_refusal)
{
    s_slot_t *frame_match = NULL;
    for (size_t i = 0; i < c->opts.window; i++) {
        s_slot_t *s = &c->slots[i];
        if (!s->used)
            continue;
        if (count == s->n) {
            bool all = true;
            bool any_id = false;
            for (size_t k = 0; k < count && all; k++) {
                if (r[k].request_id[0] == '\0')
                    continue;
                any_id = true;
                all = strcmp(r[k].request_id, s->ids[k]) == 0;
            }
            if (all && any_id) {
                *out_frame_refusal = false;
                return s;
            }
        }
        bool anonymous = count == 1 && r[0].request_id[0] == '\0' && r[0].status != CL_OK;
        if ((anonymous || count == 0) && (frame_match == NULL || s->tag < frame_match->tag))
            frame_match = s;
    }
    *out_frame_refusal = frame_match != NULL;
    return frame_match;
}

/* Decodes c->last into out (room for cap). Returns the count in *out_count, or CLIENT_EPROTO,
 * CLIENT_ENOSPC. */
static int
s_decode(cl_client_t *c, cl_reply_t *out, size_t cap, size_t *out_count)
{
    const uint8_t *data = zmq_msg_data(&c->last);
    size_t len = zmq_msg_size(&c->last);
    size_t off = 0;
    size_t count = 0;
    const uint8_t *rep;
    size_t rep_len;
    int rc;
    while ((rc = codec_reply_batch_next(data, len, &off, &rep, &rep_len)) == 0)
        count++;
    if (rc != CODEC_EEND)
        return CLIENT_EPROTO;
    if (count > cap)
        return CLIENT_ENOSPC;

    size_t rows_used = 0;
    off = 0;
    for (size_t i = 0; i < count; i++) {
        rc = codec_reply_batch_next(data, len, &off, &rep, &rep_len);
        assert(rc == 0);
        cl_issued_row_t *rows = c->rows != NULL ? c->rows + rows_used : NULL;
        size_t rows_cap = c->rows != NULL ? CODEC_BATCH_ROWS_MAX - rows_used : 0;
        rc = codec_reply_decode(rep, rep_len, &out[i], rows, rows_cap);
        if (rc == CODEC_ENOSPC && c->rows == NULL) {
            /* Rows are rare (batch issue replies): make room on first need. */
            c->rows = calloc(CODEC_BATCH_ROWS_MAX, sizeof(*c->rows));
            if (c->rows == NULL)
                return CLIENT_ENOMEM;
            rc = codec_reply_decode(rep, rep_len, &out[i], c->rows, CODEC_BATCH_ROWS_MAX);
        }
        if (rc == CODEC_ENOMEM)
            return CLIENT_ENOMEM;
        if (rc < 0)
            return CLIENT_EPROTO;
        if (out[i].rows_count == 0)
            out[i].rows = NULL;
        rows_used += out[i].rows_count;
    }
    *out_count = count;
    return 0;
}

/* Waits for the reply to any outstanding message (see cl_client_recv()). */
static int
s_recv(cl_client_t *c, int timeout_ms, cl_reply_t *out, size_t cap, size_t *out_n,
       uint64_t *out_tag)
{
    if (c->outstanding == 0)
        return CLIENT_EEMPTY;
    int64_t deadline = timeout_ms >= 0 ? s_now_ms() + timeout_ms : -1;
    for (;;) {
        int rc = 0;
        if (!c->pending) {
            int wait_ms = -1;
            if (deadline >= 0) {
                int64_t left = deadline - s_now_ms();
                wait_ms = left > 0 ? (int)left : 0;
            }
            rc = s_recv_msg(c, wait_ms);
            if (rc < 0)
                return rc;
        }
        c->pending = false;
        size_t count = 0;
        rc = s_decode(c, out, cap, &count);
        if (rc == CLIENT_ENOSPC) {
            c->pending = true;
            return rc;
        }
        if (rc < 0)
            return rc;
        bool frame_refusal = false;
        s_slot_t *slot = s_match(c, out, count, &frame_refusal);
        if (slot == NULL)
            continue; /* a late reply to something already answered: drop it */
        if (frame_refusal) {
            if (slot->n > cap) {
                c->pending = true;
                return CLIENT_ENOSPC;
            }
            /* One refusal for the whole frame: each request gets it, under its own id. */
            cl_reply_t refusal = out[0];
            if (count == 0) {
                memset(&refusal, 0, sizeof(refusal));
                refusal.status = CL_MALFORMED;
                snprintf(refusal.message, sizeof(refusal.message), "%s",
                         "The ledger answered the message with no replies.");
            }
            refusal.rows = NULL;
            refusal.rows_count = 0;
            for (size_t k = 0; k < slot->n; k++) {
                out[k] = refusal;
                memcpy(out[k].request_id, slot->ids[k], sizeof(out[k].request_id));
            }
            count = slot->n;
        }
        slot->used = false;
        c->outstanding--;
        *out_n = count;
        *out_tag = slot->tag;
        return 0;
    }
}

int
cl_client_recv(cl_client_t *c, int timeout_ms, cl_reply_t *out, size_t cap, size_t *out_n,
               uint64_t *out_tag)
{
    if (c == NULL || out == NULL || out_n == NULL || out_tag == NULL || timeout_ms < -1)
        return CLIENT_EINVAL;
    if (!c->pending)
        s_last_release(c);
    return s_recv(c, timeout_ms, out, cap, out_n, out_tag);
}

/* Waits for the reply to the one outstanding message `tag` (n requests), resending it on a new
 * socket after each timeout, up to opts.retries times; drops it on failure. */
static int
s_call_wait(cl_client_t *c, uint64_t tag, cl_reply_t *out, size_t n)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        size_t got = 0;
        uint64_t got_tag = 0;
        rc = s_recv(c, c->opts.timeout_ms, out, n, &got, &got_tag);
        if (rc == 0) {
            assert(got_tag == tag);
            if (got != n) {
                rc = CLIENT_EPROTO;
                break;
            }
            return 0;
        }
        if (rc != CLIENT_ETIMEOUT || attempt == c->opts.retries)
            break;
        /* Lazy pirate: a new socket, the same frame, the same request ids. */
        rc = cl_client_resend(c);
        if (rc < 0)
            break;
    }
    s_drop_all(c);
    return rc;
}

int
cl_client_call_batch(cl_client_t *c, const cl_command_t *cmds, size_t n, cl_reply_t *out)
{
    if (c == NULL || cmds == NULL || out == NULL || n == 0 || n > CL_BATCH_REQUESTS_MAX)
        return CLIENT_EINVAL;
    if (c->outstanding > 0)
        return CLIENT_EBUSY;
    s_last_release(c);
    uint64_t tag;
    int rc = cl_client_send(c, cmds, n, &tag);
    if (rc < 0)
        return rc;
    return s_call_wait(c, tag, out, n);
}

int
cl_client_call_raw(cl_client_t *c, const char *request_id, const uint8_t *request,
                   size_t request_len, const uint8_t **out_reply, size_t *out_reply_len)
{
    if (c == NULL || request_id == NULL || request == NULL || out_reply == NULL ||
        out_reply_len == NULL || request_len == 0)
        return CLIENT_EINVAL;
    size_t id_len = strlen(request_id);
    if (id_len == 0 || id_len > CL_REQUEST_ID_MAX)
        return CLIENT_EINVAL;
    if (c->outstanding > 0)
        return CLIENT_EBUSY;
    s_last_release(c);
    if (request_len > CL_FRAME_MAX_BYTES - 16)
        return CLIENT_ETOOLARGE;

    /* Nothing is outstanding, so every slot is free: use the first. */
    s_slot_t *slot = &c->slots[0];
    assert(!slot->used);
    if (slot->ids_cap < 1) {
        void *p = realloc(slot->ids, sizeof(*slot->ids));
        if (p == NULL)
            return CLIENT_ENOMEM;
        slot->ids = p;
        slot->ids_cap = 1;
    }
    memcpy(slot->ids[0], request_id, id_len + 1);
    /* A tag byte and at most a 5-byte varint in front of the request. */
    int rc = s_grow(&slot->frame, &slot->frame_cap, request_len + 6, CL_FRAME_MAX_BYTES);
    if (rc < 0)
        return rc;
    size_t len = 0;
    rc = codec_request_batch_frame(&request, &request_len, 1, slot->frame, slot->frame_cap, &len);
    if (rc < 0)
        return rc == CODEC_ENOSPC ? CLIENT_ETOOLARGE : CLIENT_EENCODE;
    slot->frame_len = len;
    slot->n = 1;
    rc = s_send_frame(c, slot);
    if (rc < 0)
        return rc;
    slot->used = true;
    slot->tag = c->next_tag++;
    c->outstanding++;

    rc = s_call_wait(c, slot->tag, &c->raw_reply, 1);
    if (rc < 0)
        return rc;
    /* The reply answering it is the first (and only) one of the message kept in c->last. */
    assert(c->has_last);
    size_t off = 0;
    const uint8_t *rep = NULL;
    size_t rep_len = 0;
    rc = codec_reply_batch_next(zmq_msg_data(&c->last), zmq_msg_size(&c->last), &off, &rep,
                                &rep_len);
    if (rc != 0)
        return CLIENT_EPROTO;
    *out_reply = rep;
    *out_reply_len = rep_len;
    return 0;
}

int
cl_client_call(cl_client_t *c, const cl_command_t *cmd, cl_reply_t *out)
{
    return cl_client_call_batch(c, cmd, 1, out);
}

int
cl_client_stored_reply(cl_client_t *c, const cl_reply_t *r, cl_reply_t *out)
{
    if (c == NULL || r == NULL || out == NULL)
        return CLIENT_EINVAL;
    if (r->result != CL_RES_REQUEST || !r->found || r->stored_reply == NULL)
        return CLIENT_EINVAL;
    if (c->stored_rows == NULL) {
        c->stored_rows = calloc(CL_ISSUE_BATCH_MAX, sizeof(*c->stored_rows));
        if (c->stored_rows == NULL)
            return CLIENT_ENOMEM;
    }
    int rc = codec_reply_decode(r->stored_reply, r->stored_reply_len, out, c->stored_rows,
                                CL_ISSUE_BATCH_MAX);
    if (rc == CODEC_ENOMEM)
        return CLIENT_ENOMEM;
    if (rc < 0)
        return CLIENT_EPROTO;
    if (out->rows_count == 0)
        out->rows = NULL;
    return 0;
}
