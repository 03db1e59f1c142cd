/*
 * libcardledger: the C client of the cardledger daemon.
 *
 * A client holds one ZeroMQ DEALER socket connected to the daemon's ROUTER. One ZeroMQ message
 * carries one RequestBatch (up to CL_BATCH_REQUESTS_MAX requests); the daemon answers it with one
 * ReplyBatch frame holding one Reply per request, in the order of the requests. Commands and
 * replies are the ledger's own fixed-size structs from domain.h (installed beside this header);
 * the protobuf encoding stays inside the library.
 *
 * Every command carries a request id, the ledger's idempotency key: the same id with the same
 * content returns the first reply and applies nothing again. The library leans on that to retry
 * safely. cl_client_call() and cl_client_call_batch() wait up to the timeout for the reply; when
 * it does not come they close the socket (dropping any late reply of the lost try), open a new
 * one and send the very same requests again, with the same ids, up to `retries` times (the
 * "lazy pirate" pattern). A command therefore applies at most once however often it is sent,
 * and a reply that arrives says what happened to it.
 *
 * For throughput, cl_client_send() and cl_client_recv() pipeline up to `window` messages without
 * waiting. Replies are matched to what was sent by their request ids, not by arrival order.
 *
 * Errors: every function returns 0 on success or a negative CLIENT_E* code (cl_client_strerror()
 * names it). A reply from the ledger is a success whatever its status: a refusal such as
 * insufficient balance is a value in cl_reply_t.status with a sentence in cl_reply_t.message.
 * Out-parameters are last and untouched on failure.
 *
 * A client is not thread-safe: use one per thread (ZeroMQ sockets are not thread-safe either).
 */
#ifndef CARDLEDGER_CLIENT_H
#define CARDLEDGER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "domain.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Error codes, in their own range (clear of errno and of the other modules) ------------- */

#define CLIENT_EINVAL    (-36001) /* an argument out of its domain (NULL, n too large, ...) */
#define CLIENT_ENOMEM    (-36002) /* allocation failed */
#define CLIENT_ETIMEOUT  (-36003) /* no reply after every try: could not reach the ledger */
#define CLIENT_EPROTO    (-36004) /* the reply could not be decoded or does not match */
#define CLIENT_ETOOLARGE (-36005) /* the message would exceed CL_FRAME_MAX_BYTES */
#define CLIENT_EENCODE   (-36006) /* a command could not be encoded (a field over its limit) */
#define CLIENT_EZMQ      (-36007) /* ZeroMQ refused (bad endpoint, context terminated, ...) */
#define CLIENT_EFULL     (-36008) /* cl_client_send(): `window` messages already outstanding */
#define CLIENT_EEMPTY    (-36009) /* cl_client_recv(): nothing outstanding to wait for */
#define CLIENT_ENOSPC    (-36010) /* cl_client_recv(): `cap` is smaller than the reply count */
#define CLIENT_EBUSY     (-36011) /* a call while pipelined messages are still outstanding */

/* ---- Defaults and limits ------------------------------------------------------------------- */

#define CL_CLIENT_TIMEOUT_MS_DEFAULT 5000 /* per try */
#define CL_CLIENT_RETRIES_DEFAULT    3    /* tries after the first one */
#define CL_CLIENT_RETRIES_MAX        100
#define CL_CLIENT_WINDOW_DEFAULT     64 /* pipelined messages outstanding at most */
#define CL_CLIENT_WINDOW_MAX         1024
#define CL_CLIENT_ENDPOINT_MAX       512 /* bytes of an endpoint string */

/* Characters of a CurveZMQ key in Z85 (without the NUL). */
#define CL_CLIENT_KEY_LEN 40

/* Characters of a request id made by cl_client_new_request_id() (without the NUL). */
#define CL_CLIENT_REQUEST_ID_LEN 26

typedef struct cl_client cl_client_t;

typedef struct cl_client_opts {
    int timeout_ms;  /* how long one try waits for its reply (> 0) */
    int retries;     /* tries after the first when a reply does not come (0 = none) */
    unsigned window; /* pipelining: messages outstanding at most (1..CL_CLIENT_WINDOW_MAX) */
    /* A ZeroMQ context (zmq_ctx_new()) to open the client's socket in, so that the clients of
     * one process share its I/O thread, as ZeroMQ means a process to. The caller terminates it
     * after closing every client on it. NULL (the default): the client makes a context of its
     * own and terminates it on cl_client_close(). */
    void *zmq_context;
    /* CurveZMQ, for a daemon started with keys (docs/daemon.md): the daemon's public key and
     * this client's key pair, each CL_CLIENT_KEY_LEN characters of Z85 as cardledger-keys
     * prints them. All three empty (the default): no keys, for a daemon without them on this
     * machine. The daemon decides the client's commands as the principal its public key is
     * listed as. */
    char curve_server_key[CL_CLIENT_KEY_LEN + 1];
    char curve_public_key[CL_CLIENT_KEY_LEN + 1];
    char curve_secret_key[CL_CLIENT_KEY_LEN + 1];
} cl_client_opts_t;

/*
 * Fills the CurveZMQ keys of opts from two files: the daemon's public key (server_key_file) and
 * this client's secret key (key_file), each one Z85 key as cardledger-keys writes and prints
 * them; the client's public key is derived from its secret key. Returns 0, or CLIENT_EINVAL (a
 * file that cannot be read or does not hold one key; opts is then unchanged).
 */
int cl_client_opts_load_keys(cl_client_opts_t *opts, const char *server_key_file,
                             const char *key_file);

/* The name of a CLIENT_E* code as a sentence ("could not reach the ledger"); never NULL. */
const char *cl_client_strerror(int rc);

/* Fills *opts with the defaults: CL_CLIENT_TIMEOUT_MS_DEFAULT, CL_CLIENT_RETRIES_DEFAULT,
 * CL_CLIENT_WINDOW_DEFAULT, and no shared ZeroMQ context (zmq_context NULL). Start from this
 * and change what you need. */
void cl_client_opts_init(cl_client_opts_t *opts);

/*
 * Makes a fresh request id: 128 bits, the milliseconds since the Unix epoch (CLOCK_REALTIME) in
 * the top 48 and 80 bits from libsodium's CSPRNG below, as 26 lower-case base32 characters
 * (the RFC 4648 characters, digits in ASCII order "234567abc...xyz", so ids compare bytewise
 * as their values), NUL-terminated. Ids made later sort later (within one millisecond, at
 * random), which keeps the ledger's idempotency index appending at its right edge; the 80
 * random bits keep them unguessable, and two ids never collide in practice. Thread-safe: each
 * thread draws its random bits ahead into a pool of its own, which a forked child empties.
 * Aborts only when libsodium cannot start (no CSPRNG).
 */
void cl_client_new_request_id(char out[CL_REQUEST_ID_MAX + 1]);

/*
 * Writes 16 bytes as a request id the way cl_client_new_request_id() does: 26 lower-case base32
 * characters, most significant bits first, digit values in ASCII order (docs/client.md). For
 * callers that make their own 128 bits (a test, a load generator) and want ids the journal
 * stores compactly.
 */
void cl_client_request_id_from_bytes(const uint8_t raw[16], char out[CL_REQUEST_ID_MAX + 1]);

/*
 * Opens a client connected to `endpoint` (tcp://host:port or ipc://path). The connection is made
 * lazily by ZeroMQ: a daemon that is not there yet is not an error here, only a call that times
 * out. opts NULL means the defaults. Returns 0, CLIENT_EINVAL (bad options or endpoint, keys
 * that are not all three given or not Z85 keys), CLIENT_ENOMEM or CLIENT_EZMQ. A key the daemon
 * does not list gets no connection: every call times out (CLIENT_ETIMEOUT).
 */
int cl_client_open(const char *endpoint, const cl_client_opts_t *opts, cl_client_t **out);

/* Closes the client, dropping anything outstanding, and sets *c to NULL. Accepts NULL and *c
 * NULL; calling it twice is harmless. */
void cl_client_close(cl_client_t **c);

/*
 * Sends one command and waits for its reply, retrying with the same request id on timeout (see
 * the top of this file). When cmd->request_id is empty the client makes a fresh one, the same
 * for every try; out->request_id says which it was.
 *
 * Returns 0 when a reply arrived (accepted or refused: see out->status), CLIENT_ETIMEOUT when no
 * try got a reply (the command may or may not have been applied: call again with the same request
 * id to find out, or ask with a GetRequest query), CLIENT_EENCODE, CLIENT_ETOOLARGE,
 * CLIENT_EPROTO, CLIENT_EBUSY (pipelined messages outstanding), CLIENT_EZMQ or CLIENT_ENOMEM.
 *
 * Lifetime: out->rows (the rows of a batch issue) and out->stored_reply (GetRequest) point into
 * buffers the client owns; they stay valid until the next call, send, recv, resend or close on
 * `c`. After a failure the contents of *out are unspecified (replies are decoded in place).
 * For an IssueBatch command, cmd->batch_rows must point at cmd->u.issue_batch.rows_count rows.
 */
int cl_client_call(cl_client_t *c, const cl_command_t *cmd, cl_reply_t *out);

/*
 * Sends n commands (1..CL_BATCH_REQUESTS_MAX) in one message and waits for their n replies,
 * with the same retry rules as cl_client_call(). out has room for n replies; out[i] answers
 * cmds[i]. The commands are applied one after the other in the ledger, each on its own: a
 * refusal of one does not undo or stop the others. Returns and lifetimes as cl_client_call().
 */
int cl_client_call_batch(cl_client_t *c, const cl_command_t *cmds, size_t n, cl_reply_t *out);

/*
 * Sends one request the caller encoded itself and waits for its reply, with the same timeout
 * and retry rules as cl_client_call(): on a timeout the very same bytes (so the same request id)
 * go again on a fresh socket. This is for requests the library has no struct for, such as the
 * projector's queries (Request fields 60..68), encoded by a caller that links the contract's
 * generated code.
 *
 * request is one packed Request (not a RequestBatch: the library frames it) of request_len
 * bytes, and request_id must be the request id inside it (1..CL_REQUEST_ID_MAX characters): the
 * reply is matched to the request by it. A service that cannot read the frame answers with one
 * refusal under an empty id, which is handed out as the reply too.
 *
 * Returns 0 with the packed Reply in *out_reply, *out_reply_len (decode it yourself; its status
 * may be a refusal), or CLIENT_EINVAL, CLIENT_EBUSY, CLIENT_ETOOLARGE, CLIENT_ETIMEOUT,
 * CLIENT_EPROTO, CLIENT_EZMQ, CLIENT_ENOMEM; the out-parameters are untouched on failure.
 * Lifetime: *out_reply points into the message the client received; it is valid until the next
 * call, send, recv, resend or close on `c`. The caller's request buffer may change as soon as
 * this returns.
 */
int cl_client_call_raw(cl_client_t *c, const char *request_id, const uint8_t *request,
                       size_t request_len, const uint8_t **out_reply, size_t *out_reply_len);

/*
 * Pipelining: sends n commands (1..CL_BATCH_REQUESTS_MAX) as one message without waiting, and
 * says which tag (a number that only grows) the message got. Up to `window` messages may be
 * outstanding; past that, returns CLIENT_EFULL until cl_client_recv() takes a reply. Commands
 * with an empty request id get a fresh one. The client keeps a copy of what it sent, so the
 * caller's commands may change as soon as this returns. Returns 0, CLIENT_EFULL, CLIENT_EINVAL,
 * CLIENT_EENCODE, CLIENT_ETOOLARGE, CLIENT_EZMQ or CLIENT_ENOMEM.
 */
int cl_client_send(cl_client_t *c, const cl_command_t *cmds, size_t n, uint64_t *out_tag);

/*
 * Pipelining: waits up to timeout_ms (0 = do not wait, -1 = forever) for the reply to any
 * outstanding message and returns its replies in order: *out_n replies into out (room for cap),
 * and the tag cl_client_send() gave that message. Replies are matched to the message they answer
 * by their request ids, so they may come in any order; a reply that matches nothing outstanding
 * (a late answer to a message already answered) is dropped.
 *
 * There are no automatic retries here: on CLIENT_ETIMEOUT the messages stay outstanding and
 * cl_client_resend() sends them again, safely, with their original request ids.
 *
 * Returns 0, CLIENT_EEMPTY (nothing outstanding), CLIENT_ETIMEOUT, CLIENT_ENOSPC (cap is smaller
 * than the reply count; the reply is kept for the next call), CLIENT_EPROTO, CLIENT_EZMQ or
 * CLIENT_ENOMEM. Lifetime of rows and stored_reply as in cl_client_call().
 */
int cl_client_recv(cl_client_t *c, int timeout_ms, cl_reply_t *out, size_t cap, size_t *out_n,
                   uint64_t *out_tag);

/*
 * Pipelining: closes the socket (late replies of earlier tries are dropped with it), opens a new
 * one and sends every outstanding message again, with the same request ids and tags. The ledger
 * answers a request it already applied with its stored reply, so nothing applies twice.
 * Returns 0, CLIENT_EZMQ or CLIENT_ENOMEM.
 */
int cl_client_resend(cl_client_t *c);

/* Pipelining: the number of messages sent and not yet answered. */
size_t cl_client_outstanding(const cl_client_t *c);

/*
 * Pipelining in an event loop: sets *out_fd to a file descriptor that poll(), ppoll() or epoll
 * can wait on for POLLIN, so a caller can wait for a reply and for something else at once (a
 * timer of nanosecond precision, other descriptors) instead of in cl_client_recv(), whose
 * timeouts are whole milliseconds. It is the ZeroMQ socket's ZMQ_FD, with ZeroMQ's rules:
 *
 *  - It is edge-triggered: it becomes readable when something arrives after the client last
 *    looked, not while a reply is waiting. So before each wait, call cl_client_recv(c, 0, ...)
 *    until it returns CLIENT_ETIMEOUT (nothing there) or CLIENT_EEMPTY (nothing outstanding);
 *    any other call on `c` in between (a send, say) may take the signal and must be followed by
 *    that again. Waiting on it without that may sleep while a reply is there.
 *  - Readable does not mean a reply is there (ZeroMQ signals its own traffic on it too): after a
 *    wake, call cl_client_recv(c, 0, ...) again, and wait again when it says CLIENT_ETIMEOUT.
 *  - With nothing outstanding, cl_client_recv() does not look at the socket, so the fd may stay
 *    readable: wait on it only while cl_client_outstanding(c) > 0.
 *  - Only wait on it: never read, write or close it; it belongs to ZeroMQ.
 *
 * Lifetime: valid until the next cl_client_resend(), cl_client_call(), cl_client_call_batch(),
 * cl_client_call_raw() or cl_client_close() on `c` (a resend or a retry opens a new socket);
 * ask again after those. Asking is cheap (no system call). Returns 0, CLIENT_EINVAL (c or out_fd
 * NULL) or CLIENT_EZMQ (the client has no socket: opening the new one failed).
 */
int cl_client_fd(const cl_client_t *c, int *out_fd);

/*
 * Decodes the stored reply a GetRequest query returned (r->result == CL_RES_REQUEST and
 * r->found) into *out: what the ledger answered the first time that request id was used.
 * Returns 0, CLIENT_EINVAL (r holds no stored reply), CLIENT_EPROTO or CLIENT_ENOMEM.
 * Lifetime: out->rows points into a buffer the client owns, valid until the next
 * cl_client_stored_reply() or cl_client_close(); out->stored_reply is not set.
 */
int cl_client_stored_reply(cl_client_t *c, const cl_reply_t *r, cl_reply_t *out);

#ifdef __cplusplus
}
#endif

#endif /* CARDLEDGER_CLIENT_H */
