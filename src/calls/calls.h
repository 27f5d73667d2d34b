/*
 * Calls on media ports. A call takes a free port of a post on the
 * server that owns the post: the port key /understudy/<c>/ports/<post>/<n>
 * is created on that server's lease, in a txn that also compares the
 * post's epoch, so a server that lost the post can never take a port.
 * The port stays with the server that took it until the call ends, even
 * when the post moves (failback): the call is never dropped.
 */
#ifndef US_CALLS_H
#define US_CALLS_H

#include <stdbool.h>

#include <jansson.h>

#include "agent/agent.h"

struct calls;

struct calls_result {
	int err; /* 0 or US_ENOTFOUND, US_ENOTOWNER, US_EBUSY, US_EUNAVAIL */
	char message[256];
	char call[64];
	char post[CONFIG_NAME_MAX + 1];
	long port;
	int64_t epoch;
	char server[CONFIG_NAME_MAX + 1]; /* who took it, or who owns it */
	const char *status; /* at the end: NORMAL, TRANSFERRED */
	int64_t duration_ms;
};

typedef void (*calls_cb)(const struct calls_result *r, void *arg);

/* calls.c */

/* The calls of this server, on the agent's view of the cluster. */
struct calls *calls_new(struct agent *a);

/* Forget every call (their ports go with the lease). NULL is a no-op. */
void calls_free(struct calls *c);

/*
 * Place a call to route point rp. Returns 0 when the answer will come
 * through cb(arg) later, or an error code with *r filled now (no cb).
 */
int calls_place(struct calls *c, const char *rp, struct calls_result *r,
    calls_cb cb, void *arg);

/*
 * Place a call on post p for origin ("http", "sip"; copied). Same returns
 * as calls_place.
 */
int calls_place_post(struct calls *c, struct agent_post *p, const char *origin,
    struct calls_result *r, calls_cb cb, void *arg);

/*
 * End call id normally, or as transferred on (its port is free again and
 * it no longer belongs to the post), on behalf of origin: a SIP call ends
 * only from SIP (a BYE), the caller's leg being there. Same returns as
 * calls_place; a call held by another server gives US_ENOTOWNER with
 * r->server. cb may be NULL.
 */
int calls_end(struct calls *c, const char *id, bool transferred,
    const char *origin, struct calls_result *r, calls_cb cb, void *arg);

/* Drop cb of every pending operation with this arg (its request went). */
void calls_forget(struct calls *c, void *arg);

/* The lease is gone: every call of this server is lost with it. */
void calls_lease_lost(struct calls *c);

/*
 * Counters since this worker started: calls taken (placed[0] by HTTP,
 * placed[1] by SIP), ended (ended[0] normally, ended[1] transferred),
 * lost with the lease, and the calls held now.
 */
void calls_counters(const struct calls *c, uint64_t placed[2],
    uint64_t ended[2], uint64_t *lost, uint64_t *active);

/* The calls this server holds, as JSON. */
json_t *calls_json(const struct calls *c);

/* sip.c */

struct sip;

/*
 * SIP on address:sip_port of self (UDP): the user agent server of the
 * posts this server owns. One per process. NULL (logged) when the port
 * cannot be bound.
 */
struct sip *sip_new(uv_loop_t *loop, struct agent *agent, struct calls *calls,
    const struct config *cfg, const struct config_server *self);

/* Drop every SIP call (its port with it) and close. NULL is a no-op. */
void sip_free(struct sip *s);

/*
 * One datagram received from from: what the socket feeds, and what the
 * fuzz target feeds. Bad input is dropped or answered, never trusted.
 */
void sip_input(
    struct sip *s, const char *buf, size_t len, const struct sockaddr *from);

/* The route points this server has registered now, with their epochs. */
json_t *sip_registrations_json(const struct sip *s);

/* The SIP calls in progress, as JSON. */
json_t *sip_calls_json(const struct sip *s);

#endif
