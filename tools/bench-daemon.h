/*
 * bench-daemon: the cardledgerd that cardledger-bench starts, measures and stops.
 *
 * With --spawn-daemon the benchmark measures a real daemon process over ZeroMQ, like a
 * deployment, not a library call. This module owns that process: a temporary directory with two
 * ipc:// endpoints (commands, events) and, unless the caller names one, the data directory; the
 * daemon's stderr goes to DIR/daemon.log so its own timings ("state loaded in ...", "ready in
 * ...") can be quoted. It starts the daemon and waits until a GetStatus request is answered, and
 * reads what the kernel knows of it (peak resident memory, CPU time). It can kill it with SIGKILL
 * and start it again on the same data, timing the restart to the first answered GetStatus, and
 * stops it with SIGTERM at the end.
 *
 * Errors: functions returning int give 0 on success or -1 after printing why on stderr (a
 * benchmark only needs to know that its setup failed, and the reason).
 */
#ifndef CARDLEDGER_BENCH_DAEMON_H
#define CARDLEDGER_BENCH_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cardledger.h"

#define BENCH_DAEMON_ARGS_MAX     32     /* extra daemon arguments (--daemon-arg) */
#define BENCH_DAEMON_PATH_MAX     512    /* paths and endpoints */
#define BENCH_DAEMON_READY_MAX_MS 300000 /* a start slower than 5 minutes is a failure */
#define BENCH_DAEMON_STOP_MAX_MS  300000 /* SIGTERM, then SIGKILL after this */

typedef struct bench_daemon bench_daemon_t;

typedef struct bench_daemon_opts {
    const char *daemon_path; /* the cardledgerd binary; NULL: found next to this program */
    const char *data_dir;    /* NULL: DIR/data, removed with the temporary directory */
    const char *extra_args[BENCH_DAEMON_ARGS_MAX]; /* appended to the daemon's argv */
    size_t extra_count;                            /* entries of extra_args in use */
    int log_to_stderr; /* nonzero: the daemon's stderr is ours, not DIR/daemon.log */
} bench_daemon_opts_t;

/*
 * The cardledgerd binary to run: opts-style override first, then ../daemon/cardledgerd next to
 * /proc/self/exe (a build directory's tools/ and daemon/), then $CARDLEDGER_BUILD_ROOT/daemon/.
 * Writes the path into out (cap bytes). Returns 0, or -1 when none is executable.
 */
int bench_daemon_find(const char *override, char *out, size_t cap);

/*
 * Makes the temporary directory, starts
 *   cardledgerd --data DATA --listen ipc://DIR/cmd.sock --publish ipc://DIR/pub.sock [extra]
 * and waits until GetStatus is answered. *out_ready_ms (may be NULL) gets the time from fork to
 * that answer. On failure nothing is left behind and *out is untouched.
 */
int bench_daemon_start(const bench_daemon_opts_t *opts, bench_daemon_t **out, double *out_ready_ms);

/* The command endpoint, the data directory and the log path; valid until destroy. */
const char *bench_daemon_endpoint(const bench_daemon_t *d);
const char *bench_daemon_data_dir(const bench_daemon_t *d);
const char *bench_daemon_log_path(const bench_daemon_t *d);

/* The running daemon's pid, or 0. */
pid_t bench_daemon_pid(const bench_daemon_t *d);

/* What /proc/PID/status says of the running daemon's memory, in KiB. RSS counts the pages of
 * the memory-mapped journal it has touched (RssFile) besides its own heap (RssAnon). */
typedef struct bench_daemon_mem {
    uint64_t hwm_kb;      /* VmHWM: peak resident set */
    uint64_t rss_kb;      /* VmRSS: resident set now */
    uint64_t rss_anon_kb; /* RssAnon: heap, stacks, anonymous maps */
    uint64_t rss_file_kb; /* RssFile: file pages mapped (LMDB's data.mdb) */
} bench_daemon_mem_t;

/* Fills *out for the running daemon. Returns 0 or -1. */
int bench_daemon_memory(const bench_daemon_t *d, bench_daemon_mem_t *out);

/* Bytes the running daemon has caused to be written to the disk so far (/proc/PID/io
 * write_bytes: its share of page-cache write-back, what its fsyncs wait for). Returns 0 or -1. */
int bench_daemon_disk_written(const bench_daemon_t *d, uint64_t *out_bytes);

/* CPU seconds (user + system) the running daemon has used so far. Returns 0 or -1. */
int bench_daemon_cpu_s(const bench_daemon_t *d, double *out_cpu_s);

/*
 * Time on the CPU and time runnable but waiting for one (the run queue), in seconds so far, from
 * /proc/PID/task/TID/schedstat: for the command loop (the main thread), the commit thread
 * ("cl-commit") and all threads together. On a machine the bench shares with the daemon, a
 * thread that waits to run delays every request it handles: this says how much.
 */
typedef struct bench_sched {
    double loop_run_s, loop_wait_s;
    double commit_run_s, commit_wait_s;
    double all_run_s, all_wait_s;
} bench_sched_t;

/* Fills *out for the running daemon. Returns 0, or -1 (not running, or no schedstat: a kernel
 * without CONFIG_SCHED_INFO). */
int bench_daemon_sched(const bench_daemon_t *d, bench_sched_t *out);

/* The same for this process (its threads together in all_*; loop_* is its main thread). */
int bench_self_sched(bench_sched_t *out);

/* SIGKILL and reap. Returns 0, or -1 when it was not running. */
int bench_daemon_kill9(bench_daemon_t *d);

/* Starts the daemon again on the same data and endpoints and waits for GetStatus; the time from
 * fork to the answer goes to *out_ready_ms. The daemon must not be running. Returns 0 or -1. */
int bench_daemon_restart(bench_daemon_t *d, double *out_ready_ms);

/* SIGTERM and wait (SIGKILL after BENCH_DAEMON_STOP_MAX_MS). *out_stop_ms gets how long the
 * clean stop took (its final checkpoint). Returns the exit status (0 expected, 128 + signal when
 * a signal ended it), or -1 when it was not running. */
int bench_daemon_stop(bench_daemon_t *d, double *out_stop_ms);

/*
 * The last line of the daemon's log that contains `needle`, without its timestamp prefix, into
 * out (cap bytes, always NUL-terminated). Returns 0, or -1 when no line matches.
 */
int bench_daemon_log_line(const bench_daemon_t *d, const char *needle, char *out, size_t cap);

/* Stops the daemon if it runs, removes the temporary directory (and the data directory when this
 * module made it), frees d and sets *d to NULL. Accepts NULL and *d NULL. */
void bench_daemon_destroy(bench_daemon_t **d);

/*
 * Waits until the ledger at `endpoint` answers GetStatus, probing every 10 ms on a fresh socket
 * (so a reconnect back-off never inflates the time). When pid is not 0 and that child exits, gives
 * up at once. Returns 0 with the milliseconds waited in *out_ms (may be NULL), or -1.
 */
int bench_wait_ready(const char *endpoint, pid_t pid, int timeout_ms, double *out_ms);

/* CurveZMQ keys for every client the bench opens, for a daemon started with keys: read once at
 * start (cl_client_opts_load_keys()). Returns 0 or a CLIENT_E* code. */
int bench_set_keys(const char *server_key_file, const char *key_file);

/* cl_client_opts_init() with the keys of bench_set_keys(), if any. */
void bench_client_opts(cl_client_opts_t *o);

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

#endif /* CARDLEDGER_BENCH_DAEMON_H */
