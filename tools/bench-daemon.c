/*
 * bench-daemon: starts, probes, kills, restarts and stops the cardledgerd of a benchmark run (see
 * bench-daemon.h). The readiness probe is an ordinary libcardledger GetStatus call, so "ready"
 * means what it means to a client: a command would be answered now.
 */
#include "bench-daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cardledger.h"

#define S_PROBE_MS      10 /* one readiness probe waits this long for its answer */
#define S_STOP_POLL_MS  5  /* how often a stop checks whether the daemon has exited */
#define S_LOG_LINE_MAX  1024
#define S_FIXED_ARGS    8 /* program, --data, --listen, --publish and their values */
#define S_SUN_PATH_ROOM 100
#define S_DIR_MAX       64 /* "/tmp/clbench.XXXXXX" */

struct bench_daemon {
    char dir[S_DIR_MAX];                  /* the temporary directory */
    char data_dir[BENCH_DAEMON_PATH_MAX]; /* --data */
    char cmd_ep[BENCH_DAEMON_PATH_MAX];   /* ipc://DIR/cmd.sock */
    char pub_ep[BENCH_DAEMON_PATH_MAX];   /* ipc://DIR/pub.sock */
    char log_path[BENCH_DAEMON_PATH_MAX]; /* DIR/daemon.log */
    char path[BENCH_DAEMON_PATH_MAX];     /* the cardledgerd binary */
    bench_daemon_opts_t opts;             /* as given (the strings stay the caller's) */
    bool own_data;                        /* the data directory is DIR/data: remove it */
    pid_t pid;                            /* the running daemon, or 0 */
};

uint64_t
bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
s_sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool
s_executable(const char *path)
{
    return access(path, X_OK) == 0;
}

int
bench_daemon_find(const char *override, char *out, size_t cap)
{
    if (override != NULL && override[0] != '\0') {
        if (!s_executable(override)) {
            fprintf(stderr, "cardledger-bench: %s: not an executable daemon\n", override);
            return -1;
        }
        snprintf(out, cap, "%s", override);
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char cand[PATH_MAX + 32];
        snprintf(cand, sizeof(cand), "%s/../daemon/cardledgerd", dirname(self));
        if (s_executable(cand)) {
            snprintf(out, cap, "%s", cand);
            return 0;
        }
    }
    const char *root = getenv("CARDLEDGER_BUILD_ROOT");
    if (root != NULL && root[0] != '\0') {
        char cand[PATH_MAX];
        snprintf(cand, sizeof(cand), "%s/daemon/cardledgerd", root);
        if (s_executable(cand)) {
            snprintf(out, cap, "%s", cand);
            return 0;
        }
    }
    fprintf(stderr, "cardledger-bench: cannot find cardledgerd next to this program "
                    "(../daemon/cardledgerd); name it with --daemon PATH\n");
    return -1;
}

/* Whether the child has exited, without reaping it (so the caller's pid stays valid). */
static bool
s_child_gone(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno == ECHILD;
    return info.si_pid == pid;
}

static cl_client_opts_t s_keys; /* only the curve_* keys are used */
static bool s_have_keys;

int
bench_set_keys(const char *server_key_file, const char *key_file)
{
    cl_client_opts_init(&s_keys);
    int rc = cl_client_opts_load_keys(&s_keys, server_key_file, key_file);
    s_have_keys = rc == 0;
    return rc;
}

void
bench_client_opts(cl_client_opts_t *o)
{
    cl_client_opts_init(o);
    if (s_have_keys) {
        memcpy(o->curve_server_key, s_keys.curve_server_key, sizeof(o->curve_server_key));
        memcpy(o->curve_public_key, s_keys.curve_public_key, sizeof(o->curve_public_key));
        memcpy(o->curve_secret_key, s_keys.curve_secret_key, sizeof(o->curve_secret_key));
    }
}

int
bench_wait_ready(const char *endpoint, pid_t pid, int timeout_ms, double *out_ms)
{
    uint64_t t0 = bench_now_ns();
    uint64_t deadline = t0 + (uint64_t)timeout_ms * 1000000u;
    cl_client_opts_t o;
    bench_client_opts(&o);
    o.timeout_ms = S_PROBE_MS;
    o.retries = 0;
    o.window = 1;
    cl_client_t *c = NULL;
    int rc = cl_client_open(endpoint, &o, &c);
    if (rc < 0) {
        fprintf(stderr, "cardledger-bench: %s: %s\n", endpoint, cl_client_strerror(rc));
        return -1;
    }
    cl_reply_t *r = malloc(sizeof(*r));
    int result = -1;
    while (r != NULL && bench_now_ns() < deadline) {
        cl_command_t cmd;
        memset(&cmd, 0, sizeof(cmd));
        cmd.type = CL_CMD_GET_STATUS;
        /* A timed-out call replaces the socket itself (lazy pirate), so each probe connects
         * afresh and no reconnect back-off of an old socket delays the answer. */
        rc = cl_client_call(c, &cmd, r);
        if (rc == 0 && r->status == CL_OK) {
            result = 0;
            break;
        }
        if (rc != CLIENT_ETIMEOUT) {
            fprintf(stderr, "cardledger-bench: GetStatus on %s: %s\n", endpoint,
                    rc < 0 ? cl_client_strerror(rc) : cl_status_name(r->status));
            break;
        }
        if (pid != 0 && s_child_gone(pid)) {
            fprintf(stderr, "cardledger-bench: the daemon exited before it was ready\n");
            break;
        }
    }
    if (result != 0 && r != NULL && bench_now_ns() >= deadline)
        fprintf(stderr, "cardledger-bench: %s did not answer within %d ms\n", endpoint, timeout_ms);
    if (result == 0 && out_ms != NULL)
        *out_ms = (double)(bench_now_ns() - t0) / 1e6;
    free(r);
    cl_client_close(&c);
    return result;
}

static int
s_spawn(bench_daemon_t *d)
{
    const char *argv[S_FIXED_ARGS + BENCH_DAEMON_ARGS_MAX + 1];
    size_t n = 0;
    argv[n++] = d->path;
    argv[n++] = "--data";
    argv[n++] = d->data_dir;
    argv[n++] = "--listen";
    argv[n++] = d->cmd_ep;
    argv[n++] = "--publish";
    argv[n++] = d->pub_ep;
    for (size_t i = 0; i < d->opts.extra_count; i++)
        argv[n++] = d->opts.extra_args[i];
    argv[n] = NULL;

    int log_fd = -1;
    if (!d->opts.log_to_stderr) {
        log_fd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (log_fd < 0) {
            fprintf(stderr, "cardledger-bench: %s: %s\n", d->log_path, strerror(errno));
            return -1;
        }
    }
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "cardledger-bench: fork: %s\n", strerror(errno));
        if (log_fd >= 0)
            close(log_fd);
        return -1;
    }
    if (pid == 0) {
        /* The daemon must not outlive a benchmark that died. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        if (log_fd >= 0 && dup2(log_fd, STDERR_FILENO) < 0)
            _exit(127);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
        }
        execv(argv[0], (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    if (log_fd >= 0)
        close(log_fd);
    d->pid = pid;
    return 0;
}

/* Reaps the child, whatever ended it; returns the exit status as bench_daemon_stop() does. */
static int
s_reap(bench_daemon_t *d)
{
    int st = 0;
    while (waitpid(d->pid, &st, 0) < 0 && errno == EINTR) {
    }
    d->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void
s_print_log_tail(const bench_daemon_t *d)
{
    if (d->opts.log_to_stderr)
        return;
    FILE *f = fopen(d->log_path, "r");
    if (f == NULL)
        return;
    char lines[8][S_LOG_LINE_MAX];
    size_t n = 0;
    char line[S_LOG_LINE_MAX];
    while (fgets(line, sizeof(line), f) != NULL)
        snprintf(lines[n++ % 8], S_LOG_LINE_MAX, "%s", line);
    fclose(f);
    size_t first = n > 8 ? n - 8 : 0;
    fprintf(stderr, "cardledger-bench: the daemon's log (%s) ends with:\n", d->log_path);
    for (size_t i = first; i < n; i++)
        fprintf(stderr, "  %s", lines[i % 8]);
}

static int
s_start_and_wait(bench_daemon_t *d, double *out_ready_ms)
{
    uint64_t t0 = bench_now_ns();
    if (s_spawn(d) != 0)
        return -1;
    if (bench_wait_ready(d->cmd_ep, d->pid, BENCH_DAEMON_READY_MAX_MS, NULL) != 0) {
        if (d->pid != 0) {
            kill(d->pid, SIGKILL);
            int st = s_reap(d);
            fprintf(stderr, "cardledger-bench: the daemon ended with status %d\n", st);
        }
        s_print_log_tail(d);
        return -1;
    }
    if (out_ready_ms != NULL)
        *out_ready_ms = (double)(bench_now_ns() - t0) / 1e6;
    return 0;
}

static int
s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "cardledger-bench: remove %s: %s\n", path, strerror(errno));
    return 0;
}

int
bench_daemon_start(const bench_daemon_opts_t *opts, bench_daemon_t **out, double *out_ready_ms)
{
    if (opts == NULL || out == NULL || opts->extra_count > BENCH_DAEMON_ARGS_MAX)
        return -1;
    bench_daemon_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -1;
    d->opts = *opts;
    if (bench_daemon_find(opts->daemon_path, d->path, sizeof(d->path)) != 0) {
        free(d);
        return -1;
    }
    /* ipc:// paths must fit sockaddr_un, so the directory lives in /tmp, not in $TMPDIR. */
    snprintf(d->dir, sizeof(d->dir), "/tmp/clbench.XXXXXX");
    if (mkdtemp(d->dir) == NULL) {
        fprintf(stderr, "cardledger-bench: mkdtemp: %s\n", strerror(errno));
        free(d);
        return -1;
    }
    snprintf(d->cmd_ep, sizeof(d->cmd_ep), "ipc://%s/cmd.sock", d->dir);
    snprintf(d->pub_ep, sizeof(d->pub_ep), "ipc://%s/pub.sock", d->dir);
    snprintf(d->log_path, sizeof(d->log_path), "%s/daemon.log", d->dir);
    if (opts->data_dir != NULL && opts->data_dir[0] != '\0') {
        snprintf(d->data_dir, sizeof(d->data_dir), "%s", opts->data_dir);
    } else {
        snprintf(d->data_dir, sizeof(d->data_dir), "%s/data", d->dir);
        d->own_data = true;
    }
    if (strlen(d->cmd_ep) - strlen("ipc://") > S_SUN_PATH_ROOM) {
        fprintf(stderr, "cardledger-bench: %s is too long for an ipc:// endpoint\n", d->cmd_ep);
        bench_daemon_destroy(&d);
        return -1;
    }
    if (s_start_and_wait(d, out_ready_ms) != 0) {
        bench_daemon_destroy(&d);
        return -1;
    }
    *out = d;
    return 0;
}

const char *
bench_daemon_endpoint(const bench_daemon_t *d)
{
    return d->cmd_ep;
}

const char *
bench_daemon_data_dir(const bench_daemon_t *d)
{
    return d->data_dir;
}

const char *
bench_daemon_log_path(const bench_daemon_t *d)
{
    return d->log_path;
}

pid_t
bench_daemon_pid(const bench_daemon_t *d)
{
    return d != NULL ? d->pid : 0;
}

int
bench_daemon_memory(const bench_daemon_t *d, bench_daemon_mem_t *out)
{
    if (d == NULL || d->pid == 0 || out == NULL)
        return -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    unsigned long long v = 0;
    bench_daemon_mem_t m;
    memset(&m, 0, sizeof(m));
    bool got_hwm = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmHWM: %llu kB", &v) == 1) {
            m.hwm_kb = v;
            got_hwm = true;
        } else if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
            m.rss_kb = v;
        } else if (sscanf(line, "RssAnon: %llu kB", &v) == 1) {
            m.rss_anon_kb = v;
        } else if (sscanf(line, "RssFile: %llu kB", &v) == 1) {
            m.rss_file_kb = v;
        }
    }
    fclose(f);
    if (!got_hwm)
        return -1;
    *out = m;
    return 0;
}

int
bench_daemon_disk_written(const bench_daemon_t *d, uint64_t *out_bytes)
{
    if (d == NULL || d->pid == 0 || out_bytes == NULL)
        return -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/io", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[128];
    unsigned long long v = 0;
    int found = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "write_bytes: %llu", &v) == 1) {
            *out_bytes = v;
            found = 0;
        }
    }
    fclose(f);
    return found;
}

int
bench_daemon_cpu_s(const bench_daemon_t *d, double *out_cpu_s)
{
    if (d == NULL || d->pid == 0)
        return -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which is in parentheses and may hold spaces: the state is
     * field 3, utime field 14, stime field 15. */
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    long tck = sysconf(_SC_CLK_TCK);
    *out_cpu_s = (double)(utime + stime) / (double)(tck > 0 ? tck : 100);
    return 0;
}

/* Reads one thread's schedstat ("run_ns wait_ns slices") and comm; false when unreadable. */
static bool
s_thread_sched(const char *task_dir, const char *tid, double *run_s, double *wait_s, char comm[32])
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s/schedstat", task_dir, tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    unsigned long long run_ns = 0, wait_ns = 0;
    bool ok = fscanf(f, "%llu %llu", &run_ns, &wait_ns) == 2;
    fclose(f);
    snprintf(path, sizeof(path), "%s/%s/comm", task_dir, tid);
    comm[0] = '\0';
    f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(comm, 32, f) == NULL)
            comm[0] = '\0';
        comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    *run_s = (double)run_ns / 1e9;
    *wait_s = (double)wait_ns / 1e9;
    return ok;
}

/* Sums the threads of process pid (its task directory) into *out. */
static int
s_sched_of(const char *task_dir, long pid, bench_sched_t *out)
{
    memset(out, 0, sizeof(*out));
    DIR *dir = opendir(task_dir);
    if (dir == NULL)
        return -1;
    size_t seen = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        double run_s = 0, wait_s = 0;
        char comm[32];
        if (!s_thread_sched(task_dir, e->d_name, &run_s, &wait_s, comm))
            continue; /* a thread that just ended */
        seen++;
        out->all_run_s += run_s;
        out->all_wait_s += wait_s;
        if (strtol(e->d_name, NULL, 10) == pid) {
            out->loop_run_s = run_s;
            out->loop_wait_s = wait_s;
        } else if (strcmp(comm, "cl-commit") == 0) {
            out->commit_run_s = run_s;
            out->commit_wait_s = wait_s;
        }
    }
    closedir(dir);
    return seen > 0 ? 0 : -1;
}

int
bench_daemon_sched(const bench_daemon_t *d, bench_sched_t *out)
{
    if (d == NULL || d->pid == 0)
        return -1;
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)d->pid);
    return s_sched_of(dir, (long)d->pid, out);
}

int
bench_self_sched(bench_sched_t *out)
{
    return s_sched_of("/proc/self/task", (long)getpid(), out);
}

int
bench_daemon_kill9(bench_daemon_t *d)
{
    if (d == NULL || d->pid == 0)
        return -1;
    kill(d->pid, SIGKILL);
    (void)s_reap(d);
    return 0;
}

int
bench_daemon_restart(bench_daemon_t *d, double *out_ready_ms)
{
    if (d == NULL || d->pid != 0)
        return -1;
    return s_start_and_wait(d, out_ready_ms);
}

int
bench_daemon_stop(bench_daemon_t *d, double *out_stop_ms)
{
    if (d == NULL || d->pid == 0)
        return -1;
    uint64_t t0 = bench_now_ns();
    kill(d->pid, SIGTERM);
    while (!s_child_gone(d->pid)) {
        if (bench_now_ns() - t0 > (uint64_t)BENCH_DAEMON_STOP_MAX_MS * 1000000u) {
            fprintf(stderr, "cardledger-bench: the daemon did not stop; killing it\n");
            kill(d->pid, SIGKILL);
            break;
        }
        s_sleep_ms(S_STOP_POLL_MS);
    }
    int st = s_reap(d);
    if (out_stop_ms != NULL)
        *out_stop_ms = (double)(bench_now_ns() - t0) / 1e6;
    if (st != 0)
        s_print_log_tail(d);
    return st;
}

int
bench_daemon_log_line(const bench_daemon_t *d, const char *needle, char *out, size_t cap)
{
    if (d == NULL || out == NULL || cap == 0 || d->opts.log_to_stderr)
        return -1;
    out[0] = '\0';
    FILE *f = fopen(d->log_path, "r");
    if (f == NULL)
        return -1;
    char line[S_LOG_LINE_MAX];
    int found = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, needle) == NULL)
            continue;
        line[strcspn(line, "\n")] = '\0';
        /* "2026-...Z cardledgerd[PID] info: sentence": keep the sentence. */
        const char *s = strstr(line, ": ");
        snprintf(out, cap, "%s", s != NULL ? s + 2 : line);
        found = 0;
    }
    fclose(f);
    return found;
}

void
bench_daemon_destroy(bench_daemon_t **dp)
{
    if (dp == NULL || *dp == NULL)
        return;
    bench_daemon_t *d = *dp;
    if (d->pid != 0)
        (void)bench_daemon_stop(d, NULL);
    if (d->dir[0] != '\0') {
        if (!d->own_data) {
            /* Keep the caller's data directory; remove only what this module made. */
            char p[BENCH_DAEMON_PATH_MAX + 16];
            snprintf(p, sizeof(p), "%s/cmd.sock", d->dir);
            (void)remove(p);
            snprintf(p, sizeof(p), "%s/pub.sock", d->dir);
            (void)remove(p);
            (void)remove(d->log_path);
            (void)rmdir(d->dir);
        } else {
            (void)nftw(d->dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
        }
    }
    free(d);
    *dp = NULL;
}
