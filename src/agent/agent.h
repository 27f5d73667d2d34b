/*
 * The agent: this server's standing in the cluster. lease.c keeps the
 * server's etcd lease alive and fences the server when it cannot;
 * members.c writes the membership key on that lease and watches who else
 * is up.
 */
#ifndef US_AGENT_H
#define US_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/common.h"
#include "coord/coord.h"

/* lease.c */

struct lease;

struct lease_cbs {
	/* a lease is held (the first, or a fresh one after a loss) */
	void (*acquired)(struct lease *l, int64_t id, void *arg);
	/* the lease is gone or may be: stop serving now */
	void (*lost)(struct lease *l, const char *why, void *arg);
};

/*
 * Grant a lease of ttl seconds and keep it alive, renewing every quarter
 * of the TTL. The deadline of a held lease is the send time of its last
 * successful renewal + TTL - a margin: etcd counts from when it received
 * that renewal, which is later, so the server stops believing in the
 * lease before etcd can expire it. After a loss a fresh lease is granted;
 * the old one is never reused. cbs is copied.
 */
struct lease *lease_new(uv_loop_t *loop, struct etcd *e, unsigned ttl,
    const struct lease_cbs *cbs, void *arg);

/*
 * Revoke the lease (its keys go at once) and stop; done(arg) is called
 * when etcd answered or after a bound. NULL done is allowed.
 */
void lease_revoke(struct lease *l, void (*done)(void *arg), void *arg);

/* Stop renewing and free once closed. NULL is a no-op. */
void lease_free(struct lease *l);

/* The id of the lease held now, or 0. */
int64_t lease_id(const struct lease *l);

/* True when a lease is held and its deadline has not passed. */
bool lease_valid(const struct lease *l);

/* Why no valid lease is held ("granting", "fenced: ..."), or NULL. */
const char *lease_reason(const struct lease *l);

/* Milliseconds left before this server must consider itself fenced. */
int64_t lease_remaining_ms(const struct lease *l);

/* members.c */

struct members;

/* Called when some server comes or goes. */
typedef void (*members_cb)(
    struct members *m, const char *name, bool up, void *arg);

/*
 * Watch /understudy/<cluster>/members/ and track every configured
 * server. self is this server's name (copied).
 */
struct members *members_new(struct etcd *e, const struct config *cfg,
    const char *self, members_cb cb, void *arg);

/* Stop watching and free. NULL is a no-op. */
void members_free(struct members *m);

/*
 * Write this server's membership key on the lease (retrying until it is
 * written or the lease changes). A lease of 0 forgets the registration.
 */
void members_register(struct members *m, int64_t lease);

/* True once this server's key is written on the current lease. */
bool members_registered(const struct members *m);

/* True when the named server's key is present. */
bool members_is_up(const struct members *m, const char *name);

/* [{"name","up","since","address","api_port"}...] for /v1/status. */
json_t *members_json(const struct members *m);

/* The key prefix of a cluster's members: "/understudy/NAME/members/". */
char *members_prefix(const char *cluster);

#endif
