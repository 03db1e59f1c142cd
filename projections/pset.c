/*
 * pset.c: the data directory, active pointers and blue/green rebuilds (see pset.h).
 */
#include "pset.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clcheck.h"
#include "plog.h"

#define S_ACTIVE       "ACTIVE"
#define S_ACTIVE_TMP   "ACTIVE.tmp"
#define S_PATH_MAX     4096
#define S_LOG_EVERY_NS (2000000000ull)

typedef struct slot {
    const proj_def_t *def;
    uint32_t code_schema;
    char dir[S_PATH_MAX]; /* DATA/<name> */
    proj_t *active;
    uint32_t active_gen;
    proj_t *building;
    uint32_t building_gen;
    fold_t *build_fold;
    uint64_t rate_eps; /* recent rebuild rate, events per second */
    uint64_t last_log_ns;
    uint64_t build_started_ns;
    bool error_logged;  /* the active environment's fold error was logged */
    uint64_t tokens;    /* events the rebuild may fold now (rebuild_events_per_s) */
    uint64_t bucket_ns; /* when tokens were last added */
} slot_t;

struct pset {
    journal_t *j;
    pset_opts_t opts;
    int lock_fd;
    slot_t slots[PROJ_COUNT];
    fold_t *live;
    char dir[S_PATH_MAX];
};

static int
s_path(char *out, const char *a, const char *b)
{
    int n = snprintf(out, S_PATH_MAX, "%s/%s", a, b);
    return n < 0 || n >= S_PATH_MAX ? PROJ_ELIMIT : 0;
}

static int
s_mkdir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Reads DATA/<name>/ACTIVE: "s<schema>-g<gen>". Returns 0, PROJ_ENOTFOUND, PROJ_ECORRUPT. */
static int
s_read_active(const slot_t *sl, uint32_t *out_schema, uint32_t *out_gen)
{
    char path[S_PATH_MAX];
    int rc = s_path(path, sl->dir, S_ACTIVE);
    if (rc != 0)
        return rc;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT ? PROJ_ENOTFOUND : -errno;
    unsigned schema = 0, gen = 0;
    int got = fscanf(f, "s%u-g%u", &schema, &gen);
    fclose(f);
    if (got != 2 || gen == 0)
        return PROJ_ECORRUPT;
    *out_schema = schema;
    *out_gen = gen;
    return 0;
}

/* Replaces ACTIVE atomically: write a temporary file, fsync it, rename, fsync the directory. */
static int
s_write_active(const slot_t *sl, uint32_t schema, uint32_t gen)
{
    char tmp[S_PATH_MAX], path[S_PATH_MAX], line[64];
    int rc = s_path(tmp, sl->dir, S_ACTIVE_TMP);
    if (rc == 0)
        rc = s_path(path, sl->dir, S_ACTIVE);
    if (rc != 0)
        return rc;
    int n = snprintf(line, sizeof(line), "s%u-g%u\n", schema, gen);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
        rc = errno != 0 ? -errno : -EIO;
        close(fd);
        unlink(tmp);
        return rc;
    }
    close(fd);
    if (rename(tmp, path) != 0)
        return -errno;
    return journal_fsync_dir(sl->dir);
}

static void
s_env_dir(const slot_t *sl, uint32_t schema, uint32_t gen, char out[S_PATH_MAX])
{
    int n = snprintf(out, S_PATH_MAX, "%s/s%u-g%u", sl->dir, schema, gen);
    /* pset_open() keeps the directory 64 bytes short of S_PATH_MAX: this always fits. */
    CL_CHECK(n > 0 && n < S_PATH_MAX);
}

/* Deletes an environment directory (LMDB's files and the directory). */
static void
s_remove_env(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
    if (rmdir(path) != 0)
        plog_warn("could not remove %s: %s", path, strerror(errno));
}

static int
s_open_env(pset_t *s, slot_t *sl, uint32_t schema, uint32_t gen, proj_t **out)
{
    char path[S_PATH_MAX];
    s_env_dir(sl, schema, gen, path);
    proj_opts_t o = { .schema_version = schema,
                      .no_sync = s->opts.no_sync,
                      .cache_bytes_max = s->opts.cache_bytes_max };
    int rc = proj_open(sl->def, path, &o, out);
    if (rc != 0)
        plog_error("%s: cannot open %s: %s", sl->def->name, path, proj_strerror(rc));
    return rc;
}

/* The live fold drives every active environment of the code's version. */
static int
s_refresh_live(pset_t *s)
{
    proj_t *live[PROJ_COUNT];
    size_t n = 0;
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->active != NULL && proj_schema(sl->active) == sl->code_schema)
            live[n++] = sl->active;
    }
    return fold_set(s->live, live, n);
}

static int
s_start_build(pset_t *s, slot_t *sl, uint32_t gen)
{
    assert(sl->building == NULL);
    int rc = s_open_env(s, sl, sl->code_schema, gen, &sl->building);
    if (rc == 0 && proj_schema(sl->building) != sl->code_schema)
        rc = PROJ_ESCHEMA;
    if (rc == 0)
        rc = fold_new(s->j, &sl->building, 1, &sl->build_fold);
    if (rc != 0) {
        proj_close(&sl->building);
        return rc;
    }
    /* The environment being built answers no queries until it takes over: its batches are
     * committed only when full or at the head, never just because time passed. */
    fold_set_commit_interval(sl->build_fold, 0);
    sl->building_gen = gen;
    sl->rate_eps = 0;
    sl->tokens = 0;
    sl->bucket_ns = fold_now_ns();
    sl->build_started_ns = fold_now_ns();
    sl->last_log_ns = sl->build_started_ns;
    plog_info("%s: building schema %u (generation %u) from sequence %llu beside the active "
              "schema %u",
              sl->def->name, sl->code_schema, gen,
              (unsigned long long)proj_checkpoint(sl->building) + 1,
              sl->active != NULL ? proj_schema(sl->active) : 0);
    return 0;
}

/* Opens one projection's directory: the active environment, leftovers, a rebuild. */
static int
s_open_slot(pset_t *s, slot_t *sl)
{
    int rc = s_mkdir(sl->dir);
    if (rc != 0)
        return rc;
    uint32_t act_schema = 0, act_gen = 0;
    rc = s_read_active(sl, &act_schema, &act_gen);
    if (rc != 0 && rc != PROJ_ENOTFOUND)
        return rc;
    bool have_active = rc == 0;
    if (have_active) {
        char path[S_PATH_MAX];
        struct stat stt;
        s_env_dir(sl, act_schema, act_gen, path);
        if (stat(path, &stt) != 0) {
            plog_warn("%s: ACTIVE names %s, which is gone; starting afresh", sl->def->name, path);
            have_active = false;
        }
    }

    /* The other environments: a rebuild of the code's version to resume, or leftovers. */
    uint32_t resume_gen = 0, max_gen = act_gen;
    DIR *d = opendir(sl->dir);
    if (d == NULL)
        return -errno;
    struct dirent *de;
    char doomed[16][sizeof(de->d_name)];
    size_t doomed_count = 0;
    while ((de = readdir(d)) != NULL) {
        unsigned schema, gen;
        char tail;
        if (sscanf(de->d_name, "s%u-g%u%c", &schema, &gen, &tail) != 2)
            continue;
        if (gen > max_gen)
            max_gen = gen;
        if (have_active && schema == act_schema && gen == act_gen)
            continue;
        if (schema == sl->code_schema && gen > act_gen && gen > resume_gen) {
            if (resume_gen != 0 && doomed_count < 16)
                snprintf(doomed[doomed_count++], sizeof(doomed[0]), "s%u-g%u", sl->code_schema,
                         resume_gen);
            resume_gen = gen;
            continue;
        }
        if (doomed_count < 16)
            memcpy(doomed[doomed_count++], de->d_name, sizeof(de->d_name));
    }
    closedir(d);
    for (size_t i = 0; i < doomed_count; i++) {
        char path[S_PATH_MAX];
        if (s_path(path, sl->dir, doomed[i]) == 0) {
            plog_info("%s: removing the leftover environment %s", sl->def->name, doomed[i]);
            s_remove_env(path);
        }
    }

    if (!have_active) {
        /* A first start (or a crash before the first ACTIVE): the code's version, active now. */
        uint32_t gen = resume_gen != 0 ? resume_gen : max_gen + 1;
        rc = s_open_env(s, sl, sl->code_schema, gen, &sl->active);
        if (rc == 0)
            rc = s_write_active(sl, sl->code_schema, gen);
        if (rc != 0)
            return rc;
        sl->active_gen = gen;
        return 0;
    }
    rc = s_open_env(s, sl, act_schema, act_gen, &sl->active);
    if (rc != 0)
        return rc;
    sl->active_gen = act_gen;
    if (proj_schema(sl->active) == sl->code_schema) {
        if (resume_gen != 0) /* an operator's rebuild at the same version: go on with it */
            return s_start_build(s, sl, resume_gen);
        return 0;
    }
    plog_info("%s: the active environment has schema %u, this build folds schema %u", sl->def->name,
              proj_schema(sl->active), sl->code_schema);
    return s_start_build(s, sl, resume_gen != 0 ? resume_gen : max_gen + 1);
}

int
pset_open(const char *dir, journal_t *j, const pset_opts_t *opts, pset_t **out)
{
    if (dir == NULL || j == NULL || out == NULL || strlen(dir) + 64 >= S_PATH_MAX)
        return PROJ_EINVAL;
    pset_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return PROJ_ENOMEM;
    s->j = j;
    s->lock_fd = -1;
    if (opts != NULL)
        s->opts = *opts;
    strcpy(s->dir, dir);
    int rc = s_mkdir(dir);
    char path[S_PATH_MAX];
    if (rc == 0)
        rc = s_path(path, dir, "lock");
    if (rc == 0) {
        s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (s->lock_fd < 0)
            rc = -errno;
        else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0)
            rc = -errno;
    }
    if (rc == 0)
        rc = fold_new(j, NULL, 0, &s->live);
    for (size_t i = 0; rc == 0 && i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        sl->def = proj_def_at(i);
        sl->code_schema = sl->def->schema_version + s->opts.schema_bump[i];
        rc = s_path(sl->dir, dir, sl->def->name);
        if (rc == 0)
            rc = s_open_slot(s, sl);
    }
    if (rc == 0)
        rc = s_refresh_live(s);
    if (rc != 0) {
        pset_close(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void
pset_close(pset_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    pset_t *s = *sp;
    /* The folds first: they commit their open batches, on their own threads. */
    fold_destroy(&s->live);
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        fold_destroy(&sl->build_fold);
        proj_close(&sl->building);
        proj_close(&sl->active);
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
    *sp = NULL;
}

proj_t *
pset_active(pset_t *s, size_t i)
{
    return i < PROJ_COUNT ? s->slots[i].active : NULL;
}

int
pset_rebuild(pset_t *s, const char *name)
{
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        if (strcmp(sl->def->name, name) != 0)
            continue;
        if (sl->building != NULL)
            return 0;
        plog_info("%s: rebuild requested", name);
        return s_start_build(s, sl, sl->active_gen + 1);
    }
    return PROJ_ENOTFOUND;
}

/* The rebuilt environment becomes the active one; the old one is deleted. */
static int
s_takeover(pset_t *s, slot_t *sl)
{
    int rc = s_write_active(sl, sl->code_schema, sl->building_gen);
    if (rc != 0) {
        plog_error("%s: cannot switch to the rebuilt environment: %s", sl->def->name,
                   proj_strerror(rc));
        return rc;
    }
    char old[S_PATH_MAX];
    uint32_t old_schema = proj_schema(sl->active);
    s_env_dir(sl, old_schema, sl->active_gen, old);
    uint64_t secs = (fold_now_ns() - sl->build_started_ns) / 1000000000u;
    plog_info("%s: schema %u (generation %u) took over at sequence %llu after %llu s; removing "
              "schema %u (generation %u)",
              sl->def->name, sl->code_schema, sl->building_gen,
              (unsigned long long)proj_checkpoint(sl->building), (unsigned long long)secs,
              old_schema, sl->active_gen);
    /* The old environment may still fold in the live set (a rebuild at the same version):
     * commit its open batch before closing it. */
    (void)fold_flush(s->live);
    proj_close(&sl->active);
    s_remove_env(old);
    fold_destroy(&sl->build_fold);
    sl->active = sl->building;
    sl->active_gen = sl->building_gen;
    sl->error_logged = false;
    sl->building = NULL;
    sl->building_gen = 0;
    return s_refresh_live(s);
}

static void
s_log_fold_error(const char *what, proj_t *p, int rc, const fold_t *f)
{
    uint64_t seq = 0;
    int perr = p != NULL ? proj_error(p, &seq) : 0;
    if (perr != 0)
        plog_error("%s: stopped at sequence %llu: %s", what, (unsigned long long)seq,
                   proj_strerror(perr));
    else if (rc == PROJ_EJOURNAL && fold_bad_seq(f) != 0)
        plog_error("%s: the journal is damaged at sequence %llu", what,
                   (unsigned long long)fold_bad_seq(f));
    else
        plog_error("%s: %s", what, proj_strerror(rc));
}

int
pset_step(pset_t *s, uint64_t to_seq, size_t events_max, uint64_t budget_ns, pset_round_t *out)
{
    pset_round_t r = { 0, 0, 0, false, false };
    int first_rc = 0;
    uint64_t half = budget_ns / 2;

    fold_step_stats_t st;
    int rc = fold_step(s->live, to_seq, events_max, half, &st);
    r.live_events = st.events;
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->active != NULL && !sl->error_logged && proj_stopped(sl->active)) {
            sl->error_logged = true;
            s_log_fold_error(sl->def->name, sl->active, 0, s->live);
        }
    }
    if (rc != 0) {
        s_log_fold_error("projections", NULL, rc, s->live);
        first_rc = rc;
    }

    journal_head_t head;
    memset(&head, 0, sizeof(head));
    int hrc = journal_head(s->j, &head);
    uint64_t target = to_seq != 0 ? to_seq : head.seq;
    if (hrc != 0 && first_rc == 0)
        first_rc = hrc;

    for (size_t i = 0; i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->building == NULL || proj_stopped(sl->building))
            continue;
        size_t step_max = events_max != 0 ? events_max : FOLD_BATCH_EVENTS_DEFAULT;
        uint64_t rate = s->opts.rebuild_events_per_s;
        if (rate != 0) {
            /* A token bucket holding at most one second of events. */
            uint64_t now = fold_now_ns();
            __extension__ unsigned __int128 add =
                (unsigned __int128)(now - sl->bucket_ns) * rate / 1000000000u;
            if (add > 0) {
                sl->tokens = sl->tokens + add > rate ? rate : sl->tokens + (uint64_t)add;
                sl->bucket_ns = now;
            }
            if (sl->tokens == 0) {
                r.throttled = true;
                continue;
            }
            if (sl->tokens < step_max)
                step_max = (size_t)sl->tokens;
        }
        rc = fold_step(sl->build_fold, to_seq, step_max, half, &st);
        r.rebuild_events += st.events;
        if (rate != 0)
            sl->tokens = st.events < sl->tokens ? sl->tokens - st.events : 0;
        if (rc != 0) {
            s_log_fold_error(sl->def->name, sl->building, rc, sl->build_fold);
            if (first_rc == 0)
                first_rc = rc;
            continue;
        }
        if (proj_error(sl->building, NULL) != 0) {
            if (proj_stopped(sl->building))
                s_log_fold_error(sl->def->name, sl->building, 0, sl->build_fold);
            continue;
        }
        if (st.events > 0 && st.elapsed_ns > 0) {
            uint64_t eps = st.events * 1000000000ull / st.elapsed_ns;
            sl->rate_eps = sl->rate_eps == 0 ? eps : (sl->rate_eps * 3 + eps) / 4;
        }
        uint64_t cp = proj_checkpoint(sl->building);
        if (hrc == 0 && cp >= target) {
            if ((rc = s_takeover(s, sl)) != 0 && first_rc == 0)
                first_rc = rc;
            else
                r.takeovers++;
            continue;
        }
        uint64_t now = fold_now_ns();
        if (now - sl->last_log_ns >= S_LOG_EVERY_NS) {
            sl->last_log_ns = now;
            uint64_t left = target > cp ? target - cp : 0;
            plog_info("%s: rebuilding schema %u: %llu of %llu events, %llu events/s, %llu left, "
                      "ETA %llu s",
                      sl->def->name, sl->code_schema, (unsigned long long)cp,
                      (unsigned long long)target, (unsigned long long)sl->rate_eps,
                      (unsigned long long)left,
                      (unsigned long long)(sl->rate_eps != 0 ? left / sl->rate_eps : 0));
        }
    }

    for (size_t i = 0; i < PROJ_COUNT; i++) {
        slot_t *sl = &s->slots[i];
        proj_t *ps[2] = { sl->active, sl->building };
        for (int k = 0; k < 2; k++) {
            if (ps[k] == NULL || proj_stopped(ps[k]))
                continue;
            if (k == 0 && proj_schema(ps[k]) != sl->code_schema)
                continue; /* frozen: it no longer folds */
            if (proj_checkpoint(ps[k]) < target)
                r.behind = true;
        }
    }
    if (out != NULL)
        *out = r;
    return first_rc;
}

void
pset_status(const pset_t *s, size_t i, uint64_t head, pset_status_t *out)
{
    assert(i < PROJ_COUNT);
    const slot_t *sl = &s->slots[i];
    memset(out, 0, sizeof(*out));
    out->name = sl->def->name;
    out->code_schema_version = sl->code_schema;
    if (sl->active != NULL) {
        out->schema_version = proj_schema(sl->active);
        out->checkpoint = proj_checkpoint(sl->active);
        out->frozen = out->schema_version != sl->code_schema;
        out->error = proj_error(sl->active, &out->error_seq);
    }
    if (sl->building != NULL) {
        out->rebuilding = true;
        out->rebuild_schema_version = proj_schema(sl->building);
        out->rebuild_checkpoint = proj_checkpoint(sl->building);
        out->rebuild_events_per_s = sl->rate_eps;
        uint64_t left = head > out->rebuild_checkpoint ? head - out->rebuild_checkpoint : 0;
        out->rebuild_eta_s = sl->rate_eps != 0 ? (left + sl->rate_eps - 1) / sl->rate_eps : 0;
    }
}
