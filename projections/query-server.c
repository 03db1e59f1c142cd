/*
 * query-server.c: the ROUTER loop of the projector's queries (see query-server.h).
 */
#include "query-server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "domain.h"
#include "plog.h"
#include "qanswer.h"

struct qserver {
    void *router;
    qanswer_t *answer;
};

static void s_why(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_why(char *why, size_t cap, const char *fmt, ...)
{
    if (why == NULL || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

int
qserver_open(void *zmq_ctx, const char *endpoint, qserver_t **out, char *why, size_t why_cap)
{
    qserver_t *s = calloc(1, sizeof(*s));
    if (s == NULL || qanswer_new(&s->answer) != 0) {
        s_why(why, why_cap, "out of memory");
        free(s);
        return -1;
    }
    s->router = zmq_socket(zmq_ctx, ZMQ_ROUTER);
    int64_t max_size = CL_FRAME_MAX_BYTES;
    int linger = 0;
    if (s->router == NULL ||
        zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &max_size, sizeof(max_size)) != 0 ||
        zmq_setsockopt(s->router, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
        zmq_bind(s->router, endpoint) != 0) {
        s_why(why, why_cap, "cannot listen on %s: %s", endpoint, zmq_strerror(zmq_errno()));
        qserver_close(&s);
        return -1;
    }
    *out = s;
    return 0;
}

void
qserver_close(qserver_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    qserver_t *s = *sp;
    if (s->router != NULL)
        zmq_close(s->router);
    qanswer_destroy(&s->answer);
    free(s);
    *sp = NULL;
}

void *
qserver_socket(const qserver_t *s)
{
    return s->router;
}

/* Receives one message: envelope frames and the request. 1 with a message, 0 when none is
 * waiting, -1 when one was dropped. */
static int
s_recv(qserver_t *s, zmq_msg_t *env, size_t *env_count, zmq_msg_t *body)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, s->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return 0;
    }
    size_t n = 0;
    bool overflow = false;
    while (zmq_msg_more(&frame)) {
        if (n < QSERVER_ENVELOPE_FRAMES_MAX) {
            zmq_msg_init(&env[n]);
            zmq_msg_move(&env[n++], &frame);
        } else {
            overflow = true;
        }
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, s->router, 0) < 0) {
            zmq_msg_close(&frame);
            for (size_t i = 0; i < n; i++)
                zmq_msg_close(&env[i]);
            return -1;
        }
    }
    if (overflow || n == 0) {
        plog_warn("a query with an envelope of %s frames was dropped",
                  overflow ? "too many" : "no");
        zmq_msg_close(&frame);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&env[i]);
        return -1;
    }
    zmq_msg_init(body);
    zmq_msg_move(body, &frame);
    zmq_msg_close(&frame);
    *env_count = n;
    return 1;
}

size_t
qserver_serve(qserver_t *s, pset_t *ps, journal_t *j, size_t max_messages)
{
    size_t served = 0;
    while (served < max_messages) {
        zmq_msg_t env[QSERVER_ENVELOPE_FRAMES_MAX], body;
        size_t env_count = 0;
        int got = s_recv(s, env, &env_count, &body);
        if (got == 0)
            break;
        served++;
        if (got < 0)
            continue;
        const uint8_t *reply = NULL;
        size_t reply_len = 0;
        int rc = qanswer_batch(s->answer, ps, j, zmq_msg_data(&body), zmq_msg_size(&body), &reply,
                               &reply_len);
        zmq_msg_close(&body);
        bool ok = rc == 0;
        for (size_t i = 0; i < env_count; i++) {
            if (ok && zmq_msg_send(&env[i], s->router, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
                ok = false;
            zmq_msg_close(&env[i]);
        }
        if (ok && zmq_send(s->router, reply, reply_len, ZMQ_DONTWAIT) < 0)
            ok = false;
        if (!ok)
            plog_debug("a query's reply was not sent: %s",
                       rc != 0 ? proj_strerror(rc) : zmq_strerror(zmq_errno()));
    }
    return served;
}

bool
qserver_endpoint_local(const char *endpoint, char *why, size_t why_cap)
{
    /* The policy is cl_endpoint_check()'s; the projector only words the refusal. */
    switch (cl_endpoint_check(endpoint)) {
    case CL_ENDPOINT_LOCAL:
        return true;
    case CL_ENDPOINT_BAD_TRANSPORT:
        s_why(why, why_cap,
              "%s is not ipc://, inproc:// or tcp://, and only those are allowed without "
              "CurveZMQ keys",
              endpoint);
        return false;
    case CL_ENDPOINT_HAS_SOURCE:
        s_why(why, why_cap, "%s names a source address, which is not allowed", endpoint);
        return false;
    case CL_ENDPOINT_BAD_TCP:
        s_why(why, why_cap, "%s is not tcp://HOST:PORT", endpoint);
        return false;
    case CL_ENDPOINT_NOT_LOOPBACK:
    default:
        s_why(why, why_cap,
              "%s is not a loopback address; without CurveZMQ keys the projector only uses "
              "ipc://, inproc:// or tcp:// on loopback (127.0.0.0/8, [::1], localhost)",
              endpoint);
        return false;
    }
}
