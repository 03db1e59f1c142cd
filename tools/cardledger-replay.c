/*
 * cardledger-replay: folds a journal into the projector's projections, offline.
 *
 *   cardledger-replay JOURNAL OUT_DIR [--to SEQ] [--digest]
 *
 * For analysts: copy a journal (cardledger-journal copy, or any consistent snapshot) or export
 * it (cardledger-journal export), replay it into a directory of projections, and read them with
 * the same queries the projector answers.
 * The fold is projections/ itself (pset, fold, the three projections): exactly the code the
 * live projector runs, so OUT_DIR at sequence N holds byte for byte what the projector's data
 * directory holds at checkpoint N. --digest prints one line per projection,
 * "NAME SEQ DIGEST", the XXH3-128 of its environment's contents (cardledger-projector
 * --print-digests prints the same for its own directory).
 *
 * JOURNAL is a journal environment (the directory with data.mdb) or a daemon data directory
 * (its journal/ is used), opened read-only, so a live daemon's journal works too; or an export
 * file, which is checked whole and imported into OUT_DIR/export-journal (made afresh each time)
 * before the fold. An export folds to the same bytes as its journal: it leaves out only what the
 * projections do not keep (codec_event_export()). OUT_DIR may hold an earlier replay: the fold
 * continues from its checkpoints.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cardledger-config.h"
#include "export.h"
#include "fold.h"
#include "journal.h"
#include "plog.h"
#include "proj.h"
#include "pset.h"

#define S_EXIT_OK      0
#define S_EXIT_FAILURE 1
#define S_EXIT_USAGE   64

/* Events per batch unless --batch-events says otherwise: the projector's default. A batch
 * writes every record it changed once, so larger batches write fewer: over a 639,920-event
 * journal 262144 took 5 % fewer instructions than 65536 (the balances worker 14 % fewer), and
 * 0.91 s against 1.09 s (medians of 6 alternated runs, 2026-12-07), although each worker then
 * outgrows the heap the fold faults in at once (fold.c) and the replay took 38,450 page faults
 * instead of 11,340 (on 2026-11-23, when fewer faults were worth more than fewer writes, the
 * default was a quarter of this). */
#define S_BATCH_EVENTS_DEFAULT FOLD_BATCH_EVENTS_DEFAULT

static void
s_usage(FILE *to)
{
    fprintf(to,
            "Usage: cardledger-replay JOURNAL OUT_DIR [OPTION]...\n"
            "Folds a journal into the projector's projections (balances, stores, analytics)\n"
            "offline, with the projector's own code.\n"
            "\n"
            "  JOURNAL              a journal environment, a daemon data directory, or an\n"
            "                       export file (cardledger-journal export), which is checked\n"
            "                       and imported into OUT_DIR/export-journal first\n"
            "  OUT_DIR              the projections' directory (created; an earlier replay\n"
            "                       continues from its checkpoints)\n"
            "  --to SEQ             stop at this sequence (default: the journal's head)\n"
            "  --digest             print \"NAME SEQ DIGEST\" for each projection\n"
            "  --batch-events N     events per batch (default %u)\n"
            "  --log-level LEVEL    error, warn, info (default) or debug\n"
            "  --help               show this and exit\n"
            "  --version            show the version and exit\n"
            "\n"
            "Exit status: 0 done, 1 failure, 64 bad usage. See docs/projections.md.\n",
            (unsigned)S_BATCH_EVENTS_DEFAULT);
}

/* A daemon data directory holds journal/data.mdb; a journal environment holds data.mdb. */
static void
s_journal_path(const char *dir, char out[PATH_MAX])
{
    char probe[PATH_MAX];
    struct stat st;
    snprintf(probe, sizeof(probe), "%s/journal/data.mdb", dir);
    if (stat(probe, &st) == 0)
        snprintf(out, PATH_MAX, "%s/journal", dir);
    else
        snprintf(out, PATH_MAX, "%s", dir);
}

/* What an import directory of this tool holds besides the journal: its mark. */
#define S_IMPORT_DIR  "export-journal"
#define S_IMPORT_MARK "MADE-BY-CARDLEDGER-REPLAY"

/* Removes an import directory: the journal's two files, the mark, the directory. */
static void
s_remove_import(const char *dir)
{
    static const char *const names[] = { "data.mdb", "lock.mdb", S_IMPORT_MARK };
    char path[PATH_MAX + 64];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        (void)unlink(path);
    }
    (void)rmdir(dir);
}

/*
 * Checks the export file and imports it into OUT_DIR/export-journal, which jpath receives. The
 * import is made in a new directory beside it and renamed into place, so a failed one leaves
 * nothing; an earlier import is replaced only when it carries this tool's mark, so no other
 * journal is ever touched (a daemon data directory given as OUT_DIR keeps its own journal/).
 */
static int
s_import_export(const char *file, const char *out_dir, char jpath[PATH_MAX])
{
    journal_export_info_t info;
    int rc = journal_export_check(file, &info);
    if (rc != 0) {
        if (rc == JOURNAL_EVERSION)
            plog_error("%s is not a journal export file (nor a journal directory)", file);
        else if (info.bad_seq != 0)
            plog_error("the export %s is damaged at sequence %llu: %s", file,
                       (unsigned long long)info.bad_seq, journal_strerror(rc));
        else
            plog_error("the export %s is damaged (cut short, or its header, trailer or "
                       "checksum): %s",
                       file, journal_strerror(rc));
        return rc;
    }
    if (mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        plog_error("cannot make %s: %s", out_dir, strerror(-rc));
        return rc;
    }
    char mark[PATH_MAX + 64], tmp[PATH_MAX];
    snprintf(jpath, PATH_MAX, "%s/%s", out_dir, S_IMPORT_DIR);
    snprintf(mark, sizeof(mark), "%s/%s", jpath, S_IMPORT_MARK);
    struct stat sb;
    if (stat(jpath, &sb) == 0 && stat(mark, &sb) != 0) {
        plog_error("%s exists and was not made by cardledger-replay: give another OUT_DIR", jpath);
        return -EEXIST;
    }
    snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", out_dir, S_IMPORT_DIR);
    if (mkdtemp(tmp) == NULL) {
        rc = -errno;
        plog_error("cannot make a directory in %s: %s", out_dir, strerror(-rc));
        return rc;
    }
    journal_t *j = NULL;
    journal_opts_t jo = { .read_only = false };
    rc = journal_open(tmp, &jo, &j);
    if (rc == 0)
        rc = journal_import(file, j, &info);
    journal_close(&j);
    if (rc == 0) {
        snprintf(mark, sizeof(mark), "%s/%s", tmp, S_IMPORT_MARK);
        FILE *f = fopen(mark, "w");
        rc = f != NULL && fprintf(f, "imported from %s: %llu entries\n", file,
                                  (unsigned long long)info.entries) > 0
                 ? 0
                 : -EIO;
        if (f != NULL && fclose(f) != 0)
            rc = -EIO;
    }
    if (rc == 0) {
        s_remove_import(jpath); /* an earlier import of this tool, if any */
        if (rename(tmp, jpath) != 0)
            rc = -errno;
    }
    if (rc != 0) {
        s_remove_import(tmp);
        plog_error("cannot import %s into %s: %s", file, jpath, journal_strerror(rc));
        return rc;
    }
    plog_info("imported the export %s into %s: %llu entries", file, jpath,
              (unsigned long long)info.entries);
    return 0;
}

static bool
s_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        return false;
    *out = v;
    return true;
}

int
main(int argc, char **argv)
{
    enum { O_TO = 256, O_DIGEST, O_BATCH, O_LOG, O_HELP, O_VERSION };
    static const struct option opts[] = {
        { "to", required_argument, NULL, O_TO },
        { "digest", no_argument, NULL, O_DIGEST },
        { "batch-events", required_argument, NULL, O_BATCH },
        { "log-level", required_argument, NULL, O_LOG },
        { "help", no_argument, NULL, O_HELP },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 },
    };
    uint64_t to = 0, batch = S_BATCH_EVENTS_DEFAULT;
    bool digest = false;
    plog_level_t level = PLOG_INFO;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_TO:
            if (!s_parse_u64(optarg, &to) || to == 0) {
                fprintf(stderr, "cardledger-replay: --to needs a sequence number >= 1\n");
                return S_EXIT_USAGE;
            }
            break;
        case O_DIGEST:
            digest = true;
            break;
        case O_BATCH:
            if (!s_parse_u64(optarg, &batch) || batch == 0 || batch > 16777216) {
                fprintf(stderr, "cardledger-replay: --batch-events needs 1..16777216\n");
                return S_EXIT_USAGE;
            }
            break;
        case O_LOG:
            if (plog_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "cardledger-replay: unknown log level %s\n", optarg);
                return S_EXIT_USAGE;
            }
            break;
        case O_HELP:
            s_usage(stdout);
            return S_EXIT_OK;
        case O_VERSION:
            printf("cardledger-replay %s\n", CARDLEDGER_VERSION);
            return S_EXIT_OK;
        default:
            s_usage(stderr);
            return S_EXIT_USAGE;
        }
    }
    if (argc - optind != 2) {
        s_usage(stderr);
        return S_EXIT_USAGE;
    }
    plog_setup("cardledger-replay", level);
    /* Batches allocate and free a lot (LMDB's dirty pages, the cache's chunks): keep the heap
     * instead of giving it back and faulting it in again every batch. */
    mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    const char *out_dir = argv[optind + 1];
    char jpath[PATH_MAX];
    struct stat sb;
    if (stat(argv[optind], &sb) == 0 && S_ISREG(sb.st_mode)) {
        if (s_import_export(argv[optind], out_dir, jpath) != 0)
            return S_EXIT_FAILURE;
    } else {
        s_journal_path(argv[optind], jpath);
    }

    journal_t *j = NULL;
    journal_opts_t jo = { .read_only = true };
    int rc = journal_open(jpath, &jo, &j);
    if (rc != 0) {
        plog_error("cannot open the journal in %s: %s", jpath, journal_strerror(rc));
        return S_EXIT_FAILURE;
    }
    journal_head_t head;
    rc = journal_head(j, &head);
    if (rc != 0) {
        plog_error("cannot read the journal's head: %s", journal_strerror(rc));
        journal_close(&j);
        return S_EXIT_FAILURE;
    }
    if (to == 0)
        to = head.seq;
    if (to > head.seq) {
        plog_error("--to %llu is beyond the journal's head (%llu)", (unsigned long long)to,
                   (unsigned long long)head.seq);
        journal_close(&j);
        return S_EXIT_FAILURE;
    }

    pset_t *ps = NULL;
    pset_opts_t po = { .no_sync = true };
    rc = pset_open(out_dir, j, &po, &ps);
    if (rc != 0) {
        plog_error("cannot open %s: %s", out_dir,
                   rc == -EWOULDBLOCK ? "another process uses it" : proj_strerror(rc));
        journal_close(&j);
        return S_EXIT_FAILURE;
    }
    int exit_code = S_EXIT_OK;
    for (size_t i = 0; i < PROJ_COUNT; i++) {
        uint64_t cp = proj_checkpoint(pset_active(ps, i));
        pset_status_t st;
        pset_status(ps, i, to, &st);
        if (cp > to && !st.rebuilding) {
            plog_error("%s in %s is already at sequence %llu, past --to %llu", st.name, out_dir,
                       (unsigned long long)cp, (unsigned long long)to);
            exit_code = S_EXIT_FAILURE;
        }
    }

    uint64_t t0 = fold_now_ns(), events = 0;
    while (exit_code == S_EXIT_OK) {
        pset_round_t r;
        rc = pset_step(ps, to, (size_t)batch, 0, &r);
        events += r.live_events + r.rebuild_events;
        if (rc != 0) {
            plog_error("the replay stopped: %s", proj_strerror(rc));
            exit_code = S_EXIT_FAILURE;
            break;
        }
        if (!r.behind)
            break;
    }
    double secs = (double)(fold_now_ns() - t0) / 1e9;
    for (size_t i = 0; i < PROJ_COUNT && exit_code == S_EXIT_OK; i++) {
        pset_status_t st;
        pset_status(ps, i, to, &st);
        if (st.error != 0 || st.checkpoint != to) {
            plog_error("%s stopped at sequence %llu: %s", st.name,
                       (unsigned long long)st.checkpoint,
                       st.error != 0 ? proj_strerror(st.error) : "not at --to");
            exit_code = S_EXIT_FAILURE;
        }
    }
    if (exit_code == S_EXIT_OK) {
        plog_info("folded %llu events to sequence %llu in %.2f s (%.0f events/s)",
                  (unsigned long long)events, (unsigned long long)to, secs,
                  secs > 0 ? (double)events / secs : 0.0);
    }
    for (size_t i = 0; i < PROJ_COUNT && exit_code == S_EXIT_OK && digest; i++) {
        uint8_t d[16];
        char hex[33];
        proj_t *p = pset_active(ps, i);
        rc = proj_digest(p, d);
        if (rc != 0) {
            plog_error("%s: digest failed: %s", proj_def(p)->name, proj_strerror(rc));
            exit_code = S_EXIT_FAILURE;
            break;
        }
        proj_digest_hex(d, hex);
        printf("%s %llu %s\n", proj_def(p)->name, (unsigned long long)proj_checkpoint(p), hex);
    }
    pset_close(&ps);
    journal_close(&j);
    if (fflush(stdout) != 0)
        exit_code = S_EXIT_FAILURE;
    return exit_code;
}
