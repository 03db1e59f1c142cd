/*
 * cardledger-keys: makes a CurveZMQ key pair for the daemon or for one of its clients.
 *
 *   cardledger-keys SECRET_FILE
 *
 * Writes the new secret key (40 characters of Z85 and a newline) to SECRET_FILE, which must not
 * exist (made with mode 0600), and prints the public key on stdout. The daemon's secret key file
 * is its --curve-secret-key, and its public key is what every client is given; a client's public
 * key goes into the daemon's --principals file with the client's role, merchant and store, and
 * its secret key file stays with the client (cardledger --key-file, docs/client.md). See
 * docs/daemon.md, "Principals and CurveZMQ".
 *
 * Exit status: 0 done, 1 failure, 64 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <zmq.h>

#include "cardledger-config.h"

#define S_PROG "cardledger-keys"

int
main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: " S_PROG " SECRET_FILE\n"
               "Makes a CurveZMQ key pair: writes the secret key to SECRET_FILE (new, mode\n"
               "0600) and prints the public key. See docs/daemon.md.\n");
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf(S_PROG " %s\n", CARDLEDGER_VERSION);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "Usage: " S_PROG " SECRET_FILE (try --help)\n");
        return 64;
    }
    char public_key[41], secret_key[41];
    if (zmq_curve_keypair(public_key, secret_key) != 0) {
        fprintf(stderr, S_PROG ": cannot make a key pair: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    int fd = open(argv[1], O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        fprintf(stderr, S_PROG ": cannot make %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    char line[42];
    snprintf(line, sizeof(line), "%s\n", secret_key);
    bool ok = write(fd, line, 41) == 41 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    explicit_bzero(line, sizeof(line));
    explicit_bzero(secret_key, sizeof(secret_key));
    if (!ok) {
        fprintf(stderr, S_PROG ": cannot write %s: %s\n", argv[1], strerror(errno));
        unlink(argv[1]);
        return 1;
    }
    printf("%s\n", public_key);
    return fflush(stdout) == 0 ? 0 : 1;
}
