/*
 * auth: who may send the daemon commands, and as whom it decides them (PRODUCT.md section 8).
 *
 * With CurveZMQ configured (--curve-secret-key and --principals), the command socket is a CURVE
 * server: every connection is encrypted, and ZeroMQ asks this module's ZAP handler (RFC 27,
 * inproc://zeromq.zap.01) whether the client's public key may connect. Only the keys listed in
 * the principals file may; ZeroMQ then tags each message from that connection with the key
 * (its "User-Id" property, the key in Z85), and the server decides the message's commands on
 * behalf of the key's principal: its role, merchant and store (decide.c's s_may() and
 * s_at_own_store() apply them).
 *
 * The principals file, one principal per line (a line whose first non-blank character is '#'
 * is a comment, blank lines are skipped; a '#' elsewhere is part of a key: Z85 uses it):
 *
 *     PUBLIC_KEY  ROLE  MERCHANT  STORE  NAME
 *
 * PUBLIC_KEY is the client's CurveZMQ public key in Z85 (40 characters, as
 * `cardledger-keys` prints it); ROLE one of operator, merchant_admin, issuer, store_terminal,
 * analyst; MERCHANT and STORE an id or '-' (operators have no merchant, only store terminals a
 * store); NAME a label for the audit trail (events record it as their actor). Each key once.
 */
#ifndef CARDLEDGER_AUTH_H
#define CARDLEDGER_AUTH_H

#include <stddef.h>

#include "domain.h"

#define AUTH_KEY_Z85_LEN 40  /* a CurveZMQ key in Z85, without the NUL */
#define AUTH_WHY_MAX     320 /* the sentence of a refusal */

typedef struct auth auth_t;

/*
 * Reads the principals file and the server's secret key file (one line: the secret key in Z85).
 * Returns 0, or -1 with a sentence in why that names the file, the line and what is wrong.
 */
int auth_load(const char *principals_path, const char *secret_key_path, auth_t **out, char *why,
              size_t why_cap);

/* Frees it (after auth_zap_stop()); accepts NULL and clears the pointer. */
void auth_destroy(auth_t **a);

/* The principal of a public key in Z85, or NULL when the file does not list it. */
const cl_principal_t *auth_find(const auth_t *a, const char *key_z85);

/* Principals listed. */
size_t auth_count(const auth_t *a);

/* The place of a principal auth_find() returned: 0 .. auth_count() - 1. */
size_t auth_index(const auth_t *a, const cl_principal_t *who);

/* The public key (Z85, AUTH_KEY_Z85_LEN characters) of a principal auth_find() returned. */
const char *auth_key(const auth_t *a, const cl_principal_t *who);

/*
 * Starts the ZAP handler on zctx (before any CURVE socket of zctx binds: ZeroMQ refuses
 * connections it cannot ask about) and makes `sock` a CURVE server with the secret key that
 * asks it. Returns 0 or -1 (errno from ZeroMQ or pthread).
 */
int auth_zap_start(auth_t *a, void *zctx);
int auth_curve_server(const auth_t *a, void *sock);

/* Joins the ZAP handler thread. Call it after zmq_ctx_term(), which ends the handler (its
 * socket gets ETERM and is closed); joining before would wait forever. */
void auth_zap_stop(auth_t *a);

#endif /* CARDLEDGER_AUTH_H */
