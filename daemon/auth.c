/*
 * auth.c: the principals file, the server's CURVE key and the ZAP handler (see auth.h).
 */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zmq.h>

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define S_LINE_MAX     1024
#define S_DOMAIN       "cardledger" /* the ZAP domain of the daemon's CURVE sockets */
#define S_DOMAIN_LEN   (sizeof(S_DOMAIN) - 1)

typedef struct s_entry {
    char key[AUTH_KEY_Z85_LEN + 1]; /* Z85, as ZeroMQ reports it in "User-Id" */
    cl_principal_t who;
    size_t line; /* where the file lists it */
} s_entry_t;

struct auth {
    s_entry_t *entries; /* sorted by key */
    size_t count;
    char secret[AUTH_KEY_Z85_LEN + 1];
    void *zap; /* the handler's REP socket, the thread's once it runs */
    pthread_t thread;
    bool running;
};

static const struct {
    const char *name;
    cl_role_t role;
} s_roles[] = {
    { "operator", CL_ROLE_OPERATOR }, { "merchant_admin", CL_ROLE_MERCHANT_ADMIN },
    { "issuer", CL_ROLE_ISSUER },     { "store_terminal", CL_ROLE_STORE_TERMINAL },
    { "analyst", CL_ROLE_ANALYST },
};

static int
s_entry_cmp(const void *x, const void *y)
{
    return strcmp(((const s_entry_t *)x)->key, ((const s_entry_t *)y)->key);
}

/* A Z85 key: 40 characters that decode to 32 bytes, not all zero. */
static bool
s_key_ok(const char *z85)
{
    uint8_t raw[32];
    return strlen(z85) == AUTH_KEY_Z85_LEN && zmq_z85_decode(raw, z85) != NULL &&
           !sodium_is_zero(raw, sizeof(raw));
}

/* Copies an id field ('-' means none); false when it is too long or not an id (cl_id_ok()). */
static bool
s_field(char *dst, size_t cap, const char *src)
{
    if (strcmp(src, "-") == 0)
        src = "";
    if (strlen(src) >= cap || (src[0] != '\0' && !cl_id_ok(src)))
        return false;
    memcpy(dst, src, strlen(src) + 1);
    return true;
}

/* Parses one principal line into e; false with a sentence in why. */
static bool
s_parse_line(char *line, s_entry_t *e, char *why, size_t why_cap)
{
    char *save = NULL;
    char *f[6];
    size_t n = 0;
    for (char *t = strtok_r(line, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
        if (n == 6)
            break;
        f[n++] = t;
    }
    if (n != 5) {
        snprintf(why, why_cap, "needs 5 fields (PUBLIC_KEY ROLE MERCHANT STORE NAME), has %s%zu",
                 n == 6 ? "more than " : "", n == 6 ? (size_t)5 : n);
        return false;
    }
    memset(e, 0, sizeof(*e));
    if (!s_key_ok(f[0])) {
        snprintf(why, why_cap, "'%.48s' is not a CurveZMQ public key in Z85 (40 characters)", f[0]);
        return false;
    }
    memcpy(e->key, f[0], AUTH_KEY_Z85_LEN + 1);
    e->who.role = CL_ROLE_NONE;
    for (size_t i = 0; i < sizeof(s_roles) / sizeof(s_roles[0]); i++) {
        if (strcmp(f[1], s_roles[i].name) == 0)
            e->who.role = s_roles[i].role;
    }
    if (e->who.role == CL_ROLE_NONE) {
        snprintf(why, why_cap,
                 "unknown role '%.32s' (operator, merchant_admin, issuer, store_terminal, analyst)",
                 f[1]);
        return false;
    }
    if (!s_field(e->who.merchant_id, sizeof(e->who.merchant_id), f[2]) ||
        !s_field(e->who.store_id, sizeof(e->who.store_id), f[3]) ||
        strlen(f[4]) >= sizeof(e->who.name)) {
        snprintf(why, why_cap,
                 "the merchant or store is not an id (letters, digits, '.', '_', "
                 "'-'), or an id or the name is too long");
        return false;
    }
    memcpy(e->who.name, f[4], strlen(f[4]) + 1); /* a name is a name, '-' too */
    bool is_operator = e->who.role == CL_ROLE_OPERATOR;
    bool terminal = e->who.role == CL_ROLE_STORE_TERMINAL;
    if (is_operator != (e->who.merchant_id[0] == '\0')) {
        snprintf(why, why_cap, "%s",
                 is_operator ? "an operator has no merchant ('-')"
                             : "every role but operator names its merchant");
        return false;
    }
    if (terminal != (e->who.store_id[0] != '\0')) {
        snprintf(why, why_cap, "%s",
                 terminal ? "a store terminal names its store"
                          : "only a store terminal names a store ('-')");
        return false;
    }
    return true;
}

/* Reads the server's secret key file: one Z85 key, whitespace around it allowed. */
static int
s_load_secret(const char *path, char out[AUTH_KEY_Z85_LEN + 1], char *why, size_t why_cap)
{
    _Static_assert(AUTH_KEY_Z85_LEN == CL_KEY_Z85_LEN, "one key length");
    int rc = cl_key_file_read(path, out);
    if (rc == 0 && s_key_ok(out))
        return 0;
    if (rc != 0 && rc != -EINVAL)
        snprintf(why, why_cap, "cannot open the secret key file %s: %s", path, strerror(-rc));
    else
        snprintf(why, why_cap, "%s does not hold one CurveZMQ secret key in Z85 (40 characters)",
                 path);
    sodium_memzero(out, AUTH_KEY_Z85_LEN + 1);
    return -1;
}

int
auth_load(const char *principals_path, const char *secret_key_path, auth_t **out, char *why,
          size_t why_cap)
{
    auth_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(why, why_cap, "out of memory");
        return -1;
    }
    if (s_load_secret(secret_key_path, a->secret, why, why_cap) != 0) {
        auth_destroy(&a);
        return -1;
    }
    FILE *f = fopen(principals_path, "r");
    if (f == NULL) {
        snprintf(why, why_cap, "cannot open the principals file %s: %s", principals_path,
                 strerror(errno));
        auth_destroy(&a);
        return -1;
    }
    char *line = NULL; /* getline(): a long line is one line, never two */
    size_t line_cap = 0;
    size_t cap = 0, lineno = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &line_cap, f) >= 0) {
        lineno++;
        if (strlen(line) > S_LINE_MAX) {
            snprintf(why, why_cap, "%s line %zu is longer than %d bytes", principals_path, lineno,
                     S_LINE_MAX);
            rc = -1;
            break;
        }
        /* A comment is a whole line: Z85 keys may hold '#'. */
        line[strcspn(line, "\r\n")] = '\0';
        size_t lead = strspn(line, " \t");
        if (line[lead] == '\0' || line[lead] == '#')
            continue;
        if (a->count == cap) {
            size_t ncap = cap != 0 ? cap * 2 : 16;
            s_entry_t *ne = realloc(a->entries, ncap * sizeof(*ne));
            if (ne == NULL) {
                snprintf(why, why_cap, "out of memory");
                rc = -1;
                break;
            }
            a->entries = ne;
            cap = ncap;
        }
        char sentence[AUTH_WHY_MAX];
        if (!s_parse_line(line, &a->entries[a->count], sentence, sizeof(sentence))) {
            snprintf(why, why_cap, "%s line %zu: %s", principals_path, lineno, sentence);
            rc = -1;
            break;
        }
        a->entries[a->count++].line = lineno;
    }
    free(line);
    fclose(f);
    if (rc == 0 && a->count == 0) {
        snprintf(why, why_cap, "%s lists no principal", principals_path);
        rc = -1;
    }
    if (rc == 0) {
        qsort(a->entries, a->count, sizeof(*a->entries), s_entry_cmp);
        for (size_t i = 1; i < a->count; i++) {
            if (strcmp(a->entries[i - 1].key, a->entries[i].key) == 0) {
                size_t l1 = a->entries[i - 1].line, l2 = a->entries[i].line;
                snprintf(why, why_cap, "%s lists the key %s twice (lines %zu and %zu)",
                         principals_path, a->entries[i].key, l1 < l2 ? l1 : l2, l1 < l2 ? l2 : l1);
                rc = -1;
                break;
            }
        }
    }
    if (rc != 0) {
        auth_destroy(&a);
        return -1;
    }
    *out = a;
    return 0;
}

void
auth_destroy(auth_t **ap)
{
    if (ap == NULL || *ap == NULL)
        return;
    auth_t *a = *ap;
    free(a->entries);
    sodium_memzero(a->secret, sizeof(a->secret));
    free(a);
    *ap = NULL;
}

const cl_principal_t *
auth_find(const auth_t *a, const char *key_z85)
{
    if (a == NULL || key_z85 == NULL || strlen(key_z85) != AUTH_KEY_Z85_LEN)
        return NULL;
    s_entry_t probe;
    memcpy(probe.key, key_z85, AUTH_KEY_Z85_LEN + 1);
    const s_entry_t *e = bsearch(&probe, a->entries, a->count, sizeof(*e), s_entry_cmp);
    return e != NULL ? &e->who : NULL;
}

size_t
auth_count(const auth_t *a)
{
    return a != NULL ? a->count : 0;
}

const char *
auth_key(const auth_t *a, const cl_principal_t *who)
{
    return a->entries[auth_index(a, who)].key;
}

size_t
auth_index(const auth_t *a, const cl_principal_t *who)
{
    const s_entry_t *e =
        (const s_entry_t *)(const void *)((const char *)who - offsetof(s_entry_t, who));
    return (size_t)(e - a->entries);
}

/* ---- The ZAP handler ---------------------------------------------------------------------- */

/* Receives one frame into buf (cut to cap); returns its length, or -1 when the context is
 * going away. *more: more follow. */
static int
s_frame(void *sock, uint8_t *buf, size_t cap, bool *more)
{
    int n;
    while ((n = zmq_recv(sock, buf, cap, 0)) < 0 && zmq_errno() == EINTR) {
    }
    if (n < 0)
        return -1;
    int m = 0;
    size_t ml = sizeof(m);
    zmq_getsockopt(sock, ZMQ_RCVMORE, &m, &ml);
    *more = m != 0;
    return n > (int)cap ? (int)cap : n;
}

/* zmq_send(), again after a signal. */
static int
s_send(void *sock, const void *p, size_t n, int flags)
{
    int rc;
    while ((rc = zmq_send(sock, p, n, flags)) < 0 && zmq_errno() == EINTR) {
    }
    return rc;
}

/* Answers ZAP requests on the socket auth_zap_start() bound, until the context is terminated. */
static void *
s_zap_main(void *arg)
{
    auth_t *a = arg;
    void *sock = a->zap;
    for (;;) {
        /* version, request id, domain, address, routing id, mechanism, credentials... */
        uint8_t frames[7][256];
        int lens[7] = { 0 };
        size_t n = 0;
        bool more = true;
        while (more) {
            uint8_t scratch[256];
            uint8_t *dst = n < 7 ? frames[n] : scratch;
            int len = s_frame(sock, dst, sizeof(scratch), &more);
            if (len < 0)
                goto out; /* ETERM: the context is going away */
            if (n < 7)
                lens[n] = len;
            n++;
        }
        /* Only CURVE with a listed key: NULL (6 frames) and PLAIN are refused with 400. */
        const char *status = "400", *text = "unknown key";
        char user[AUTH_KEY_Z85_LEN + 1] = "";
        if (n < 6 || lens[0] != 3 || memcmp(frames[0], "1.0", 3) != 0) {
            status = "500";
            text = "not a ZAP 1.0 request";
        } else if (n >= 7 && lens[2] == (int)S_DOMAIN_LEN &&
                   memcmp(frames[2], S_DOMAIN, S_DOMAIN_LEN) == 0 && lens[5] == 5 &&
                   memcmp(frames[5], "CURVE", 5) == 0 && lens[6] == 32) {
            zmq_z85_encode(user, frames[6], 32);
            if (auth_find(a, user) != NULL) {
                status = "200";
                text = "OK";
            } else {
                user[0] = '\0';
            }
        }
        /* The reply: version, request id, status, text, user id, metadata. */
        if (s_send(sock, "1.0", 3, ZMQ_SNDMORE) < 0 ||
            s_send(sock, frames[1], n > 1 ? (size_t)lens[1] : 0, ZMQ_SNDMORE) < 0 ||
            s_send(sock, status, 3, ZMQ_SNDMORE) < 0 ||
            s_send(sock, text, strlen(text), ZMQ_SNDMORE) < 0 ||
            s_send(sock, user, strlen(user), ZMQ_SNDMORE) < 0 || s_send(sock, "", 0, 0) < 0)
            goto out;
    }
out:
    zmq_close(sock);
    return NULL;
}

int
auth_zap_start(auth_t *a, void *zctx)
{
    /* Bound here, before any CURVE socket can ask, then handed to the thread (pthread_create()
     * is the memory barrier ZeroMQ asks for when a socket changes threads). */
    a->zap = zmq_socket(zctx, ZMQ_REP);
    int linger = 0;
    if (a->zap == NULL || zmq_setsockopt(a->zap, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
        zmq_bind(a->zap, S_ZAP_ENDPOINT) != 0) {
        if (a->zap != NULL)
            zmq_close(a->zap);
        a->zap = NULL;
        return -1;
    }
    /* The handler takes no signal (the daemon's SIGTERM goes to the loop): a handler that died
     * would leave libzmq letting every key in. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&a->thread, NULL, s_zap_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        zmq_close(a->zap);
        a->zap = NULL;
        return -1;
    }
    a->running = true;
    return 0;
}

int
auth_curve_server(const auth_t *a, void *sock)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, a->secret, AUTH_KEY_Z85_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, S_DOMAIN, S_DOMAIN_LEN) != 0)
        return -1;
    return 0;
}

void
auth_zap_stop(auth_t *a)
{
    if (a != NULL && a->running) {
        pthread_join(a->thread, NULL);
        a->running = false;
    }
}
