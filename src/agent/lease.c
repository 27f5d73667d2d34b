/*
 * This server's lease: grant, renew every TTL/4, fence at the deadline.
 *
 * Self-fencing: the deadline is measured from when a successful renewal
 * was sent, so it always falls before etcd's own expiry. When the fence
 * timer fires first, the server gives the lease up for good (lost) and
 * asks for a new one: a server never serves on a lease it cannot prove.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

struct lease {
	uv_loop_t *loop;
	struct etcd *e;
	unsigned ttl;
	struct lease_cbs cbs;
	void *arg;
	int64_t id;
	uint64_t deadline; /* monotonic ms */
	uint64_t margin_ms;
	uv_timer_t renew; /* keepalive tick, or grant retry */
	uv_timer_t fence;
	uv_timer_t revoke_bound;
	struct etcd_req *pending;
	uint64_t pending_sent;
	bool closing;
	unsigned open_handles;
	char reason[128];
	void (*revoke_done)(void *);
	void *revoke_arg;
};

static void grant(struct lease *l);

static uint64_t
interval_ms(const struct lease *l)
{
	return (uint64_t)l->ttl * 1000 / 4;
}

static void
set_reason(struct lease *l, const char *why)
{
	str_copy(l->reason, why ? why : "", sizeof(l->reason));
}

static void
lose(struct lease *l, const char *why)
{
	int64_t old = l->id;

	if (old == 0)
		return;
	l->id = 0;
	l->deadline = 0;
	uv_timer_stop(&l->fence);
	set_reason(l, why);
	log_warn("lease %" PRIx64 " lost: %s", (uint64_t)old, why);
	if (l->cbs.lost)
		l->cbs.lost(l, why, l->arg);
}

static void
fence_cb(uv_timer_t *t)
{
	struct lease *l = t->data;
	char why[96];

	int64_t old = l->id;

	snprintf(why, sizeof(why), "fenced: no renewal within %u s", l->ttl);
	lose(l, why);
	/* whatever is left on the old lease goes now, not at its expiry */
	if (old)
		etcd_lease_revoke(l->e, old, NULL, NULL);
	etcd_req_cancel(l->pending);
	l->pending = NULL;
	grant(l);
}

static void
extend(struct lease *l, uint64_t sent, int64_t ttl)
{
	uint64_t now = time_mono_ms();

	l->deadline = sent + (uint64_t)ttl * 1000 - l->margin_ms;
	uv_timer_start(
	    &l->fence, fence_cb, l->deadline > now ? l->deadline - now : 0, 0);
}

static void
keepalive_cb(const struct etcd_res *res, void *arg)
{
	struct lease *l = arg;
	uint64_t sent = l->pending_sent;

	l->pending = NULL;
	if (l->closing || l->id == 0)
		return;
	if (res->err == US_ELEASELOST || res->err == US_ENOTFOUND) {
		lose(l, "etcd says the lease has expired");
		grant(l);
		return;
	}
	if (res->err) {
		log_warn("lease renewal failed: %s%s%s", us_strerror(res->err),
		    res->message ? ": " : "", res->message ? res->message : "");
		return; /* the next tick tries again; the fence timer decides */
	}
	if (time_mono_ms() < l->deadline || l->deadline == 0)
		extend(l, sent, res->ttl);
}

static void
renew_cb(uv_timer_t *t)
{
	struct lease *l = t->data;

	if (l->closing)
		return;
	if (l->id == 0) {
		grant(l);
		return;
	}
	if (l->pending)
		return; /* the previous renewal is still out */
	l->pending_sent = time_mono_ms();
	l->pending = etcd_lease_keepalive(l->e, l->id, keepalive_cb, l);
}

static void
grant_cb(const struct etcd_res *res, void *arg)
{
	struct lease *l = arg;
	uint64_t sent = l->pending_sent;

	l->pending = NULL;
	if (l->closing)
		return;
	if (res->err) {
		char why[160];

		snprintf(why, sizeof(why), "granting a lease: %s",
		    us_strerror(res->err));
		/* etcd's or curl's words (a TLS refusal) once per reason */
		if (strcmp(why, l->reason) != 0)
			log_warn("%s%s%s; retrying", why,
			    res->message ? ": " : "",
			    res->message ? res->message : "");
		set_reason(l, why);
		uv_timer_start(&l->renew, renew_cb, 250, 0);
		return;
	}
	if (res->ttl < l->ttl)
		log_warn("etcd granted a TTL of %" PRId64 " s instead of %u s",
		    res->ttl, l->ttl);
	l->id = res->id;
	set_reason(l, NULL);
	extend(l, sent, res->ttl);
	log_info("lease %" PRIx64 " granted, ttl %" PRId64 " s",
	    (uint64_t)l->id, res->ttl);
	uv_timer_start(&l->renew, renew_cb, interval_ms(l), interval_ms(l));
	if (l->cbs.acquired)
		l->cbs.acquired(l, l->id, l->arg);
}

static void
grant(struct lease *l)
{
	uv_timer_stop(&l->renew);
	if (l->pending || l->closing)
		return;
	if (l->reason[0] == '\0')
		set_reason(l, "granting a lease");
	l->pending_sent = time_mono_ms();
	l->pending = etcd_lease_grant(l->e, l->ttl, grant_cb, l);
	if (l->pending == NULL)
		uv_timer_start(&l->renew, renew_cb, 250, 0);
}

struct lease *
lease_new(uv_loop_t *loop, struct etcd *e, unsigned ttl,
    const struct lease_cbs *cbs, void *arg)
{
	struct lease *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->loop = loop;
	l->e = e;
	l->ttl = ttl;
	l->cbs = *cbs;
	l->arg = arg;
	/* an eighth of the TTL, between 100 and 500 ms */
	l->margin_ms = (uint64_t)ttl * 1000 / 8;
	if (l->margin_ms < 100)
		l->margin_ms = 100;
	if (l->margin_ms > 500)
		l->margin_ms = 500;
	uv_timer_init(loop, &l->renew);
	uv_timer_init(loop, &l->fence);
	uv_timer_init(loop, &l->revoke_bound);
	l->renew.data = l;
	l->fence.data = l;
	l->revoke_bound.data = l;
	l->open_handles = 3;
	grant(l);
	return l;
}

static void
revoke_finish(struct lease *l)
{
	void (*done)(void *) = l->revoke_done;

	uv_timer_stop(&l->revoke_bound);
	l->revoke_done = NULL;
	if (done)
		done(l->revoke_arg);
}

static void
revoke_cb(const struct etcd_res *res, void *arg)
{
	struct lease *l = arg;

	l->pending = NULL;
	if (res->err && res->err != US_ENOTFOUND)
		log_warn(
		    "revoking the lease failed: %s", us_strerror(res->err));
	else
		log_info("lease revoked");
	revoke_finish(l);
}

static void
revoke_bound_cb(uv_timer_t *t)
{
	struct lease *l = t->data;

	log_warn("no answer to the lease revocation; it will expire");
	etcd_req_cancel(l->pending);
	l->pending = NULL;
	revoke_finish(l);
}

void
lease_revoke(struct lease *l, void (*done)(void *arg), void *arg)
{
	int64_t id = l->id;

	l->closing = true;
	uv_timer_stop(&l->renew);
	uv_timer_stop(&l->fence);
	etcd_req_cancel(l->pending);
	l->pending = NULL;
	l->id = 0;
	set_reason(l, "stopping");
	l->revoke_done = done;
	l->revoke_arg = arg;
	if (id == 0) {
		revoke_finish(l);
		return;
	}
	l->pending = etcd_lease_revoke(l->e, id, revoke_cb, l);
	uv_timer_start(&l->revoke_bound, revoke_bound_cb, 1000, 0);
}

static void
handle_closed(uv_handle_t *h)
{
	struct lease *l = h->data;

	if (--l->open_handles == 0)
		free(l);
}

void
lease_free(struct lease *l)
{
	if (l == NULL)
		return;
	l->closing = true;
	etcd_req_cancel(l->pending);
	uv_close((uv_handle_t *)&l->renew, handle_closed);
	uv_close((uv_handle_t *)&l->fence, handle_closed);
	uv_close((uv_handle_t *)&l->revoke_bound, handle_closed);
}

int64_t
lease_id(const struct lease *l)
{
	return l->id;
}

bool
lease_valid(const struct lease *l)
{
	return l->id != 0 && time_mono_ms() < l->deadline;
}

const char *
lease_reason(const struct lease *l)
{
	if (lease_valid(l))
		return NULL;
	return l->reason[0] ? l->reason : "no lease";
}

int64_t
lease_remaining_ms(const struct lease *l)
{
	uint64_t now = time_mono_ms();

	if (l->id == 0 || now >= l->deadline)
		return 0;
	return (int64_t)(l->deadline - now);
}
