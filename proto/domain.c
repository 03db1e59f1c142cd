/*
 * Small pure rules of the domain that more than one part of the ledger applies.
 *
 * The daemon decides commands and the projector folds events; both must agree on what a card
 * is worth, which card an event concerns and which endpoints may be bound before CurveZMQ keys
 * exist. Each rule lives here once, as plain functions over domain.h types and strings: no
 * allocation, no sockets, no storage, so the daemon, the projector and the tests share them.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <string.h>

#include "domain.h"

int64_t
cl_card_value_minor(cl_kind_t kind, int64_t face_minor, int64_t balance_minor, uint32_t uses_left,
                    uint32_t uses_per_card)
{
    if (kind == CL_KIND_STORED_VALUE)
        return balance_minor;
    if (uses_per_card == 0 || face_minor <= 0)
        return 0;
    /* face x uses may exceed int64 for hostile inputs; 128 bits hold it, the result saturates. */
    __extension__ typedef __int128 s_i128;
    s_i128 v = (s_i128)face_minor * uses_left / uses_per_card;
    assert(v >= 0);
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

uint64_t
cl_event_card_id(const cl_event_t *ev)
{
    assert(ev != NULL);
    switch (ev->type) {
    case CL_EV_CARD_ISSUED:
        return ev->u.card_issued.card_id;
    case CL_EV_GIFT_OFFERED:
        return ev->u.gift_offered.card_id;
    case CL_EV_GIFT_CLAIMED:
    case CL_EV_GIFT_RECALLED:
    case CL_EV_GIFT_RETURNED:
        return ev->u.gift_closed.card_id;
    case CL_EV_CARD_REDEEMED:
        return ev->u.card_redeemed.card_id;
    case CL_EV_REDEMPTION_REVERSED:
        return ev->u.redemption_reversed.card_id;
    case CL_EV_CARD_RELOADED:
        return ev->u.card_reloaded.card_id;
    case CL_EV_BALANCE_TRANSFERRED:
        return ev->u.balance_transferred.from_card_id;
    case CL_EV_CARD_ADJUSTED:
        return ev->u.card_adjusted.card_id;
    case CL_EV_CARD_FROZEN:
    case CL_EV_CARD_UNFROZEN:
    case CL_EV_CARD_UNLOCKED:
        return ev->u.card_flag.card_id;
    case CL_EV_CARD_EXPIRED:
        return ev->u.card_expired.card_id;
    case CL_EV_EXPIRY_REMINDED:
        return ev->u.expiry_reminded.card_id;
    case CL_EV_PIN_REJECTED:
    case CL_EV_CARD_LOCKED:
        return ev->u.pin.card_id;
    default:
        return 0;
    }
}

static bool
s_host_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

cl_endpoint_check_t
cl_endpoint_check(const char *endpoint)
{
    static const char tcp[] = "tcp://";
    char host[CL_ENDPOINT_HOST_MAX + 1];

    assert(endpoint != NULL);
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0)
        return CL_ENDPOINT_LOCAL;
    if (strncmp(endpoint, tcp, sizeof(tcp) - 1) != 0)
        return CL_ENDPOINT_BAD_TRANSPORT;
    const char *rest = endpoint + sizeof(tcp) - 1;
    const char *end;
    if (strchr(rest, ';') != NULL)
        return CL_ENDPOINT_HAS_SOURCE;
    if (rest[0] == '[') {
        rest++;
        end = strchr(rest, ']');
    } else {
        end = strrchr(rest, ':');
    }
    if (end == NULL || (size_t)(end - rest) >= sizeof(host))
        return CL_ENDPOINT_BAD_TCP;
    memcpy(host, rest, (size_t)(end - rest));
    host[end - rest] = '\0';
    return s_host_loopback(host) ? CL_ENDPOINT_LOCAL : CL_ENDPOINT_NOT_LOOPBACK;
}

bool
cl_endpoint_is_local(const char *endpoint)
{
    return cl_endpoint_check(endpoint) == CL_ENDPOINT_LOCAL;
}
