/*
 * harness: runs the real cardledgerd as a child process for integration tests.
 *
 * Each harness owns a fresh temporary directory with the daemon's data directory and two ipc://
 * endpoints in it (commands and events), so tests never bind a TCP port and never share state.
 * The daemon runs with a test clock that only moves when a test sends AdvanceClock, so nothing
 * here or in the tests sleeps on a clock. harness_start() returns once the daemon answers a
 * GetStatus request over ZeroMQ.
 *
 * The daemon binary is $CARDLEDGER_BUILD_ROOT/daemon/cardledgerd (tests/meson.build sets the
 * variable). Its stderr is the test's stderr.
 *
 * Errors: functions returning int give 0 on success and -1 on failure, after printing why on
 * stderr (a test only needs to know that its setup failed).
 */
#ifndef CARDLEDGER_HARNESS_H
#define CARDLEDGER_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "domain.h"

typedef struct harness harness_t;

/* The default test clock start: 2026-01-01T00:00:00Z in microseconds. */
#define HARNESS_CLOCK_START_US_DEFAULT 1767225600000000LL

/* How long harness_start()/harness_restart() wait for the daemon to answer. */
#define HARNESS_READY_TIMEOUT_MS 10000

typedef struct harness_opts {
    int64_t test_clock_start_us; /* 0 = HARNESS_CLOCK_START_US_DEFAULT */
    const char *extra_args;      /* appended to the daemon's argv, space-separated, may be NULL */
    /* For a daemon started with CurveZMQ keys (in extra_args): the keys the readiness GetStatus
     * connects with, in Z85: the daemon's public key, then a listed client's public and secret
     * keys. NULL: no keys. */
    const char *curve_keys[3];
} harness_opts_t;

/*
 * Makes a temporary directory and starts
 *   cardledgerd --data DIR/data --listen ipc://DIR/cmd.sock --publish ipc://DIR/pub.sock
 *               --test-clock START [extra_args]
 * then waits (up to HARNESS_READY_TIMEOUT_MS) until a GetStatus request is answered.
 * opts may be NULL. On failure nothing is left behind and *out is untouched.
 */
int harness_start(const harness_opts_t *opts, harness_t **out);

/* The temporary directory, the endpoints and the data directory. Valid until destroy. */
const char *harness_dir(const harness_t *h);
const char *harness_cmd_endpoint(const harness_t *h);
const char *harness_pub_endpoint(const harness_t *h);
const char *harness_data_dir(const harness_t *h);

/* The running daemon's process id, or 0 when it is not running. */
pid_t harness_pid(const harness_t *h);

/*
 * Sends SIGTERM and waits for the daemon to exit. Returns its exit status (0 expected), 128 +
 * the signal number when a signal ended it, or -1 when it was not running or did not exit within
 * a minute (it is then killed).
 */
int harness_stop(harness_t *h);

/* Sends SIGKILL and reaps the daemon. Returns 0, or -1 when it was not running. */
int harness_kill9(harness_t *h);

/* Starts the daemon again on the same data directory and endpoints and waits until it answers.
 * Returns 0 or -1. The daemon must not be running. */
int harness_restart(harness_t *h);

/* Stops the daemon if it runs, removes the temporary directory, frees the harness and sets *h to
 * NULL. Accepts NULL and *h NULL. */
void harness_destroy(harness_t **h);

/* The path of the daemon binary under test. */
const char *harness_daemon_path(void);

/*
 * Runs the daemon binary with the given arguments (a NULL-terminated list, not including the
 * program name) to completion, for one-shot modes such as --print-digest or for start-up
 * refusals. Captures stdout and stderr together into out (NUL-terminated, truncated to
 * out_cap - 1 bytes; out may be NULL). A process that has not exited after timeout_ms is killed.
 * Returns 0 and the exit status in *out_status (128 + signal when killed), or -1.
 */
int harness_exec(const char *const *args, int timeout_ms, char *out, size_t out_cap,
                 int *out_status);

/*
 * Sends one raw message (one frame) to the command endpoint on a fresh DEALER socket and waits up
 * to timeout_ms for the one-frame answer. *out_reply is malloc'ed (the caller frees it).
 * Returns 0, or -1 on a timeout or a ZeroMQ error.
 */
int harness_roundtrip(const harness_t *h, const void *msg, size_t len, int timeout_ms,
                      void **out_reply, size_t *out_len);

/*
 * A minimal test client on a DEALER socket with its own ZeroMQ context (so a forked child can
 * open one after fork). Commands and replies are domain.h structs, encoded by proto/codec.
 */
typedef struct harness_client harness_client_t;

/* Replies one harness_client_recv() can return: a full RequestBatch's worth. */
#define HARNESS_CLIENT_REPLIES_MAX CL_BATCH_REQUESTS_MAX

/* Connects to an endpoint. Returns 0 or -1. */
int harness_client_open(const char *endpoint, harness_client_t **out);

/* Closes the client; accepts NULL and clears the pointer. */
void harness_client_close(harness_client_t **c);

/* Sends n commands (1..CL_BATCH_REQUESTS_MAX) as one message. Returns 0 or -1. */
int harness_client_send(harness_client_t *c, const cl_command_t *cmds, size_t n);

/*
 * Sends a raw frame as one message (for malformed and over-limit frames). Returns 0 or -1.
 */
int harness_client_send_raw(harness_client_t *c, const void *frame, size_t len);

/*
 * Waits up to timeout_ms for one ReplyBatch and decodes up to cap replies into out. The rows of
 * a batch result and a GetRequest's stored reply point into the client's buffers, valid until
 * the next recv. Returns 0 with *out_n, or -1 on a timeout or an undecodable reply.
 */
int harness_client_recv(harness_client_t *c, int timeout_ms, cl_reply_t *out, size_t cap,
                        size_t *out_n);

/* Sends n commands as one message and waits for their n replies. Returns 0 or -1. */
int harness_client_call(harness_client_t *c, const cl_command_t *cmds, size_t n, cl_reply_t *out,
                        int timeout_ms);

#endif /* CARDLEDGER_HARNESS_H */
