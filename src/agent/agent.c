/*
 * The agent: level-triggered reconciling of post ownership.
 *
 * One watch on /understudy/<cluster>/ feeds everything this server knows
 * of the cluster: members, owner keys, port keys, operator stops and
 * failback requests. After every change (and every second, so timers
 * like failback_delay take effect) it computes placement and converges:
 *
 * - a post nobody owns that placement gives to this server: claim it with
 *   a txn that succeeds only if the owner key does not exist;
 * - a post this server owns that placement gives to another: stop serving
 *   it first, then write the owner key over to the other server's lease
 *   with a txn that compares the key's revision (or delete it when nobody
 *   can take it);
 * - a post another live server owns: nothing; only an owner moves a live
 *   post, so two servers never both believe they own one.
 *
 * The owner key's mod_revision is the post's epoch, the fencing token:
 * every port claimed for a call compares it in the same txn.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "placement/placement.h"

#define AGENT_RESYNC_MS 1000
#define AGENT_HEADSTART_MS 250

static void agent_reconcile(struct agent *a);
static void observe_fsm(struct agent *a, struct agent_post *p);

static void
kick_cb(uv_timer_t *t)
{
	agent_reconcile(t->data);
}

void
agent_kick(struct agent *a)
{
	uv_timer_start(&a->kick, kick_cb, 0, 0);
}

char *
agent_key(const struct agent *a, const char *fmt, ...)
{
	char *tail = NULL, *key = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&tail, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (asprintf(&key, "%s%s", a->prefix, tail) < 0)
		key = NULL;
	free(tail);
	return key;
}

int
agent_server_index(const struct agent *a, const char *name)
{
	for (size_t i = 0; i < a->cfg->n_servers; i++)
		if (strcmp(a->cfg->servers[i].name, name) == 0)
			return (int)i;
	return -1;
}

struct agent_post *
agent_post_at(struct agent *a, size_t i)
{
	return i < a->n_posts ? &a->posts[i] : NULL;
}

struct agent_post *
agent_post_find(struct agent *a, const char *name)
{
	for (size_t i = 0; i < a->n_posts; i++)
		if (strcmp(a->posts[i].home->name, name) == 0)
			return &a->posts[i];
	return NULL;
}

struct agent_post *
agent_post_by_route_point(struct agent *a, const char *rp)
{
	for (size_t i = 0; i < a->n_posts; i++) {
		const struct config_server *h = a->posts[i].home;

		if ((h->route_point && strcmp(h->route_point, rp) == 0) ||
		    (h->aa_route_point && strcmp(h->aa_route_point, rp) == 0))
			return &a->posts[i];
	}
	return NULL;
}

void
agent_counters(
    const struct agent *a, uint64_t *failovers, uint64_t *calls_dropped)
{
	*failovers = a->failovers;
	*calls_dropped = a->calls_dropped;
}

bool
agent_synced(const struct agent *a)
{
	return a->synced;
}

bool
agent_stopped(const struct agent *a, const char *server)
{
	int i = agent_server_index(a, server);

	return i >= 0 && a->stopped[i];
}

long
agent_ports_held(const struct agent_post *p, const char *server)
{
	long n = 0;

	for (long i = 0; i < p->n_ports; i++)
		if (p->ports[i].busy && strcmp(p->ports[i].server, server) == 0)
			n++;
	return n;
}

/* The server other than the owner still holding ports, or NULL. */
static const char *
returning_server(const struct agent_post *p)
{
	for (long i = 0; i < p->n_ports; i++)
		if (p->ports[i].busy &&
		    (!p->owned || strcmp(p->ports[i].server, p->owner) != 0))
			return p->ports[i].server;
	return NULL;
}

bool
agent_owns(const struct agent *a, const struct agent_post *p, int64_t *epoch)
{
	if (!p->owned || p->relinquishing || !lease_valid(a->lease) ||
	    strcmp(p->owner, a->self->name) != 0 ||
	    p->owner_lease != lease_id(a->lease))
		return false;
	if (epoch)
		*epoch = p->epoch;
	return true;
}

const struct config *
agent_config(const struct agent *a)
{
	return a->cfg;
}

struct etcd *
agent_etcd(const struct agent *a)
{
	return a->e;
}

int64_t
agent_lease_id(const struct agent *a)
{
	return lease_id(a->lease);
}

const char *
agent_self(const struct agent *a)
{
	return a->self->name;
}

/* ---- acting ---- */

/*
 * This server took post p from a failed (or stopped) owner: its event,
 * timed from the failure (docs/protocol.md, History).
 */
static void
history_failover(struct agent *a, struct agent_post *p)
{
	const char *from = p->lost_at ? p->lost_owner : p->home->name;
	int64_t now = time_wall_ms(), claimed, failure;
	int i = agent_server_index(a, from);
	const char *cause, *basis;
	char why[64];
	json_t *ev;

	claimed = p->owner_claimed_ms > 0 ? p->owner_claimed_ms : now;
	if (p->lost_at && p->lost_handover) {
		cause = i >= 0 && a->stopped[i] ? "stopped by an operator"
						: "handed over";
		basis = "hand-over";
		failure = claimed;
	} else if (p->lost_at && i >= 0 && a->gone[i].lease &&
	    a->gone[i].lease == p->lost_lease) {
		snprintf(why, sizeof(why), "worker %s",
		    a->gone[i].why[0] ? a->gone[i].why : "died");
		cause = why;
		basis = "death notice";
		failure = a->gone[i].at;
	} else if (p->lost_at) {
		cause = "lease expired (host or network lost)";
		basis = "lease expiry";
		failure =
		    p->lost_at - (int64_t)a->cfg->cluster.lease_ttl * 1000;
	} else {
		cause = "home down";
		basis = "seen down";
		failure = members_is_up(a->members, from)
		    ? claimed
		    : members_since(a->members, from);
	}
	if (failure <= 0 || failure > claimed)
		failure = claimed;
	ev = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "kind",
	    "failover", "at", (json_int_t)failure, "post", p->home->name,
	    "from", from, "to", a->self->name, "cause", cause, "failure_basis",
	    basis, "claimed_ms", (json_int_t)claimed, "takeover_ms",
	    (json_int_t)(claimed - failure));
	if (ev)
		history_add(a->history, ev);
}

/* Post p came home to this server from cover: its event. */
static void
history_failback(struct agent *a, struct agent_post *p, const char *cover)
{
	int64_t now = time_wall_ms(), home, covered;
	json_t *ev;

	home = p->owner_claimed_ms > 0 && p->owner_claimed_ms <= now
	    ? p->owner_claimed_ms
	    : now;
	covered = p->cover_claimed_ms > 0 && p->cover_claimed_ms <= home
	    ? home - p->cover_claimed_ms
	    : 0;
	ev = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:I,s:I,s:I}", "kind",
	    "failback", "at", (json_int_t)home, "post", p->home->name, "from",
	    cover, "to", a->self->name, "cause",
	    p->failback_operator ? "an operator's failback"
				 : "automatic (home ready)",
	    "covered_ms", (json_int_t)covered, "returned_ms", (json_int_t)now,
	    "returning_ms", (json_int_t)(now - home));
	if (ev)
		history_add(a->history, ev);
}

/* What the history keeps of a transition this server saw. */
static void
history_moved(struct agent *a, struct agent_post *p, enum post_state was,
    const char *was_cover)
{
	bool self_cover = p->state == POST_STATE_COVERED &&
	    strcmp(p->cover, a->self->name) == 0;

	if (p->state == POST_STATE_COVERED &&
	    (was != POST_STATE_COVERED || strcmp(was_cover, p->cover) != 0))
		p->cover_claimed_ms = p->owner_claimed_ms > 0
		    ? p->owner_claimed_ms
		    : time_wall_ms();
	if (p->state == POST_STATE_FAILING_BACK && was == POST_STATE_COVERED)
		p->failback_operator = p->failback_requested;
	if (self_cover &&
	    (was != POST_STATE_COVERED || strcmp(was_cover, p->cover) != 0))
		history_failover(a, p);
	if (p->state == POST_STATE_HOME && p->index == a->self_index &&
	    (was == POST_STATE_COVERED || was == POST_STATE_FAILING_BACK)) {
		if (was == POST_STATE_COVERED)
			p->failback_operator = p->failback_requested;
		history_failback(a, p, was_cover);
	}
}

/* Feed the post's state machine with what etcd shows now. */
static void
observe(struct agent *a, struct agent_post *p)
{
	enum post_state was = p->state;
	char was_cover[CONFIG_NAME_MAX + 1];

	str_copy(was_cover, p->cover, sizeof(was_cover));
	observe_fsm(a, p);
	if (p->state != was || strcmp(p->cover, was_cover) != 0)
		history_moved(a, p, was, was_cover);
}

/* Feed the post's state machine with what etcd shows now. */
static void
observe_fsm(struct agent *a, struct agent_post *p)
{
	const char *ret = returning_server(p), *home = p->home->name;
	const char *hstate = agent_stopped(a, home) ? "stopped"
	    : members_is_up(a->members, home)       ? "up"
						    : "down";
	char why[160];

	if (!p->owned) {
		if (p->state == POST_STATE_UNSERVED)
			return;
		snprintf(why, sizeof(why), "%s gave it up or was lost",
		    p->state == POST_STATE_HOME ? home : p->cover);
		post_fsm(p, POST_EV_OWNER_LOST, NULL, why);
	} else if (strcmp(p->owner, home) != 0) {
		snprintf(why, sizeof(why), "home %s %s, %s took it", home,
		    hstate, p->owner);
		if (p->state != POST_STATE_COVERED ||
		    strcmp(p->cover, p->owner))
			a->failovers++;
		post_fsm(p, POST_EV_COVER_CLAIMED, p->owner, why);
	} else if (ret) {
		snprintf(why, sizeof(why), "home %s %s", home,
		    p->failback_requested ? "failed back by an operator"
					  : "ready");
		post_fsm(p, POST_EV_HANDED_HOME, ret, why);
	} else if (p->state == POST_STATE_FAILING_BACK) {
		snprintf(why, sizeof(why), "%s released its last busy port",
		    p->cover);
		post_fsm(p, POST_EV_PORTS_RETURNED, p->owner, why);
	} else {
		snprintf(why, sizeof(why), "home %s took it", home);
		post_fsm(p, POST_EV_HOME_CLAIMED, p->owner, why);
	}
}

static void
txn_done(const struct etcd_res *res, void *arg)
{
	struct agent_post *p = arg;

	p->pending = NULL;
	if (res->err)
		log_warn("post %s: ownership change failed: %s%s%s",
		    p->home->name, us_strerror(res->err),
		    res->message ? ": " : "", res->message ? res->message : "");
	if (res->err || !res->succeeded) {
		/* someone else moved first, or a lease was gone: start over */
		p->relinquishing = false;
	}
}

static void
claim_done(const struct etcd_res *res, void *arg)
{
	struct agent_post *p = arg;

	if (res->err == 0 && res->succeeded) {
		log_info("post %s: claimed, epoch %" PRId64, p->home->name,
		    res->revision);
		agent_owner_record(p, p->claimer, res->revision, p->claim_lease,
		    res->revision);
		p->owner_claimed_ms = time_wall_ms();
	}
	txn_done(res, arg);
}

/*
 * The owner key as etcd has it now, after a hand-over whose outcome is
 * not known (no answer, or a compare that failed perhaps because an
 * earlier send of it was done): only this decides whether this server
 * may serve the post again.
 */
static void
owner_reread(const struct etcd_res *res, void *arg)
{
	struct agent_post *p = arg;
	const char *server = NULL;
	json_t *o = NULL;

	p->pending = NULL;
	if (res->err) {
		log_warn("post %s: cannot read its owner back (%s): not "
			 "serving it until it can",
		    p->home->name, us_strerror(res->err));
		return; /* still relinquishing: the next round reads again */
	}
	if (res->n_kvs == 0) {
		agent_owner_record(p, NULL, 0, 0, res->revision);
		return;
	}
	o = json_loadb(res->kvs[0].value, res->kvs[0].value_len, 0, NULL);
	if (json_unpack(o, "{s:s}", "server", &server) == 0 &&
	    strlen(server) <= CONFIG_NAME_MAX) {
		bool same = p->owned && strcmp(server, p->owner) == 0 &&
		    res->kvs[0].mod_revision == p->epoch;

		agent_owner_record(p, server, res->kvs[0].mod_revision,
		    res->kvs[0].lease, res->revision);
		if (same) {
			log_info("post %s: the hand-over was not done; still "
				 "its owner",
			    p->home->name);
			p->relinquishing = false;
		}
	}
	json_decref(o);
}

static void
owner_read(struct agent *a, struct agent_post *p)
{
	char *key = agent_key(a, "owner/%s", p->home->name);

	p->pending =
	    key ? etcd_kv_range(a->e, key, false, owner_reread, p) : NULL;
	free(key);
}

static void
hand_over_done(const struct etcd_res *res, void *arg)
{
	struct agent_post *p = arg;

	p->pending = NULL;
	if (res->err == 0 && res->succeeded) {
		agent_owner_record(p, p->handing_to[0] ? p->handing_to : NULL,
		    res->revision, p->claim_lease, res->revision);
		p->owner_claimed_ms = time_wall_ms();
		return;
	}
	log_warn("post %s: hand-over %s%s: reading the owner back",
	    p->home->name, res->err ? "unanswered: " : "refused",
	    res->err ? us_strerror(res->err) : "");
	owner_read(p->agent, p);
}

static void
claim(struct agent *a, struct agent_post *p)
{
	char *key = agent_key(a, "owner/%s", p->home->name), *value = NULL;
	struct etcd_txn *t = etcd_kv_txn_new();
	char now[32];
	json_t *o;

	time_iso8601(time_wall_ms(), now, sizeof(now));
	o = json_pack("{s:s,s:s,s:s,s:I}", "server", a->self->name, "home",
	    p->home->name, "claimed", now, "claimed_ms",
	    (json_int_t)time_wall_ms());
	value = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (key && value && t &&
	    etcd_kv_txn_compare(
		t, key, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0) == 0 &&
	    etcd_kv_txn_put(
		t, true, key, value, strlen(value), lease_id(a->lease)) == 0) {
		log_info("post %s: claiming (%s)", p->home->name, p->reason);
		str_copy(p->claimer, a->self->name, sizeof(p->claimer));
		p->claim_lease = lease_id(a->lease);
		p->pending = etcd_kv_txn_commit(a->e, t, claim_done, p);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(key);
	free(value);
}

/* Give an owned post to server to (or to nobody when to is NULL). */
static void
hand_over(struct agent *a, struct agent_post *p, const char *to)
{
	char *key = agent_key(a, "owner/%s", p->home->name), *value = NULL;
	struct etcd_txn *t = etcd_kv_txn_new();
	int64_t lease = to ? members_lease(a->members, to) : 0;
	char now[32];
	json_t *o;
	int rc = -1;

	if (to && lease == 0) {
		etcd_kv_txn_free(t);
		free(key);
		return; /* its lease is not known yet: next round */
	}
	/* stop serving first: from here this server never acts for it */
	p->relinquishing = true;
	str_copy(p->handing_to, to ? to : "", sizeof(p->handing_to));
	/* its services stop first, so two copies never run (DESIGN 9) */
	if (a->release && p->released != p->epoch) {
		if (p->release_asked != p->epoch) {
			p->release_asked = p->epoch;
			log_info(
			    "post %s: stopping its services before handing "
			    "it %s%s",
			    p->home->name, to ? "to " : "back to nobody",
			    to ? to : "");
			a->release(p, a->release_arg);
		}
		etcd_kv_txn_free(t);
		free(key);
		return;
	}
	time_iso8601(time_wall_ms(), now, sizeof(now));
	if (key && t &&
	    etcd_kv_txn_compare(
		t, key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, p->epoch, NULL, 0) == 0) {
		if (to) {
			o = json_pack("{s:s,s:s,s:s,s:s,s:I}", "server", to,
			    "home", p->home->name, "claimed", now, "from",
			    a->self->name, "claimed_ms",
			    (json_int_t)time_wall_ms());
			value = o ? json_dumps(o, JSON_COMPACT) : NULL;
			json_decref(o);
			rc = value ? etcd_kv_txn_put(t, true, key, value,
					 strlen(value), lease)
				   : -1;
		} else {
			rc = etcd_kv_txn_delete(t, true, key, false);
		}
	}
	if (rc == 0) {
		log_info("post %s: handing it %s%s (%s)", p->home->name,
		    to ? "to " : "back to nobody", to ? to : "", p->reason);
		p->claim_lease = lease;
		p->pending = etcd_kv_txn_commit(a->e, t, hand_over_done, p);
		t = NULL;
	} else {
		p->relinquishing = false;
	}
	etcd_kv_txn_free(t);
	free(key);
	free(value);
}

static void
clear_failback_request(struct agent *a, struct agent_post *p)
{
	char *key = agent_key(a, "failback/%s", p->home->name);

	if (key)
		etcd_kv_delete(a->e, key, false, NULL, NULL);
	free(key);
	p->failback_requested = false;
}

static void
agent_reconcile(struct agent *a)
{
	struct placement_server *sv;
	struct placement_post *po;
	struct placement_decision *out;
	struct placement_in in;
	int **fo;
	bool valid, grace, headstart;

	if (!a->synced || a->freeing)
		return;
	valid = lease_valid(a->lease) && members_registered(a->members);
	admin_reconcile(a, valid);
	if (a->was_valid && !valid)
		for (size_t i = 0; i < a->n_posts; i++)
			if (strcmp(a->posts[i].owner, a->self->name) == 0)
				log_error(
				    "post %s: not serving it: this server "
				    "has no valid lease",
				    a->posts[i].home->name);
	a->was_valid = valid;
	sv = calloc(a->cfg->n_servers, sizeof(*sv));
	po = calloc(a->n_posts ? a->n_posts : 1, sizeof(*po));
	out = calloc(a->n_posts ? a->n_posts : 1, sizeof(*out));
	fo = calloc(a->n_posts ? a->n_posts : 1, sizeof(*fo));
	if (!sv || !po || !out || !fo)
		goto out;
	for (size_t i = 0; i < a->cfg->n_servers; i++) {
		const struct config_server *s = &a->cfg->servers[i];

		sv[i].name = s->name;
		sv[i].up = members_is_up(a->members, s->name);
		sv[i].stopped = a->stopped[i];
		sv[i].spare = s->spare;
		sv[i].max_ports = s->max_media_ports;
		sv[i].up_for_ms = members_up_for_ms(a->members, s->name);
	}
	for (size_t i = 0; i < a->n_posts; i++) {
		struct agent_post *p = &a->posts[i];
		const struct strlist *f = &p->home->failover;

		po[i].name = p->home->name;
		po[i].home = p->index;
		po[i].ports = p->home->media_ports;
		po[i].owner = p->owned ? agent_server_index(a, p->owner) : -1;
		po[i].failback_requested = p->failback_requested;
		if ((fo[i] = calloc(f->n ? f->n : 1, sizeof(int))) == NULL)
			goto out;
		for (size_t j = 0; j < f->n; j++) {
			int k = agent_server_index(a, f->v[j]);

			if (k >= 0)
				fo[i][po[i].n_failover++] = k;
		}
		po[i].failover = fo[i];
		for (size_t s = 0; s < a->cfg->n_servers; s++)
			if ((int)s != po[i].owner)
				sv[s].returning += agent_ports_held(
				    p, a->cfg->servers[s].name);
	}
	in.servers = sv;
	in.n_servers = a->cfg->n_servers;
	in.posts = po;
	in.n_posts = a->n_posts;
	in.failback_auto = a->cfg->cluster.failback == CONFIG_FAILBACK_AUTO;
	in.failback_delay_ms = a->cfg->cluster.failback_delay * 1000;
	placement_compute(&in, out);
	/*
	 * A server just up lets the others register before it covers them:
	 * for a home it has never seen up, it waits one TTL (a cold start of
	 * the whole cluster); a failure it saw happen it covers at once.
	 */
	grace = time_mono_ms() - a->synced_at <
	    (uint64_t)a->cfg->cluster.lease_ttl * 1000;
	headstart =
	    a->restarted && time_mono_ms() - a->synced_at < AGENT_HEADSTART_MS;
	/* look again the moment a wait ends, not at the next resync */
	if (headstart)
		uv_timer_start(&a->kick, kick_cb,
		    AGENT_HEADSTART_MS - (time_mono_ms() - a->synced_at) + 1,
		    0);
	else if (grace)
		uv_timer_start(&a->kick, kick_cb,
		    (uint64_t)a->cfg->cluster.lease_ttl * 1000 -
			(time_mono_ms() - a->synced_at) + 1,
		    0);
	for (size_t i = 0; i < a->n_posts; i++) {
		struct agent_post *p = &a->posts[i];
		int d = out[i].owner;
		bool mine = p->owned && strcmp(p->owner, a->self->name) == 0;

		str_copy(p->reason, out[i].why, sizeof(p->reason));
		observe(a, p);
		if (!valid || p->pending)
			continue;
		if (mine && p->owner_lease != lease_id(a->lease))
			continue; /* a key of an old lease; it goes with it */
		if (mine && p->relinquishing && d == a->self_index) {
			owner_read(a, p); /* a hand-over of unknown outcome */
		} else if (mine && d != a->self_index) {
			hand_over(
			    a, p, d >= 0 ? a->cfg->servers[d].name : NULL);
		} else if (!p->owned && d == a->self_index &&
		    (p->index == a->self_index ? !headstart
					       : !grace ||
				members_ever_up(a->members, p->home->name))) {
			claim(a, p);
		} else if (mine && p->index == a->self_index &&
		    p->failback_requested) {
			clear_failback_request(a, p);
		}
	}
	if (a->reconciled)
		a->reconciled(a->reconciled_arg);
out:
	if (fo)
		for (size_t i = 0; i < a->n_posts; i++)
			free(fo[i]);
	free(fo);
	free(sv);
	free(po);
	free(out);
}

void
agent_on_reconciled(struct agent *a, void (*cb)(void *arg), void *arg)
{
	a->reconciled = cb;
	a->reconciled_arg = arg;
}

void
agent_on_release(struct agent *a,
    void (*release)(struct agent_post *p, void *arg), void *arg)
{
	a->release = release;
	a->release_arg = arg;
}

void
agent_post_released(struct agent *a, const char *post)
{
	struct agent_post *p = agent_post_find(a, post);

	if (p == NULL)
		return;
	p->released = p->release_asked;
	agent_kick(a);
}

json_t *
agent_services(const struct agent *a)
{
	return a->services;
}

void
agent_on_license(struct agent *a,
    void (*cb)(const struct etcd_event *ev, bool reset, void *arg), void *arg)
{
	a->license = cb;
	a->license_arg = arg;
}

void
agent_on_history(
    struct agent *a, void (*cb)(const struct etcd_kv *kv, void *arg), void *arg)
{
	a->on_history = cb;
	a->on_history_arg = arg;
}

bool
agent_journal_orphaned(const struct agent *a, const struct agent_journal *j,
    bool *software, int64_t *at)
{
	int i = agent_server_index(a, j->server);

	*software = false;
	*at = time_wall_ms();
	if (members_lease(a->members, j->server) == j->lease)
		return false;
	if (i >= 0 && a->gone[i].lease == j->lease) {
		*software = true;
		*at = a->gone[i].at;
	}
	return true;
}

struct etcd_req *
agent_write_gone(struct etcd *e, const char *cluster, const char *server,
    int64_t lease, const char *why, etcd_cb cb, void *arg)
{
	json_t *o = json_pack("{s:I,s:I,s:s}", "lease", (json_int_t)lease, "at",
	    (json_int_t)time_wall_ms(), "why", why);
	char *key = NULL, *value = o ? json_dumps(o, JSON_COMPACT) : NULL;
	struct etcd_req *req = NULL;

	json_decref(o);
	if (value &&
	    asprintf(&key, "/understudy/%s/gone/%s", cluster, server) >= 0)
		req = etcd_kv_put(e, key, value, strlen(value), 0, cb, arg);
	free(key);
	free(value);
	return req;
}

void
agent_call_taken(struct agent *a, struct agent_post *p, int64_t at)
{
	if (p->state == POST_STATE_COVERED &&
	    strcmp(p->cover, a->self->name) == 0 &&
	    history_awaits_first_call(a->history, p->home->name))
		history_first_call(a->history, p->home->name, at);
}

struct history *
agent_history(const struct agent *a)
{
	return a->history;
}

void
agent_lease_changed(struct agent *a)
{
	uv_timer_start(&a->kick, kick_cb, 0, 0);
}

/* Free the memory; the handles are closed (or were never opened). */
static void
agent_destroy(struct agent *a)
{
	for (size_t i = 0; i < a->n_posts; i++) {
		free(a->posts[i].ports);
		agent_journal_clear(&a->posts[i]);
	}
	free(a->posts);
	history_free(a->history);
	free(a->stopped);
	free(a->gone);
	free(a->prefix);
	json_decref(a->services);
	free(a);
}

int
agent_set_config(struct agent *a, const struct config *cfg)
{
	bool grew = false;

	if (cfg->n_servers != a->cfg->n_servers)
		return -1;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		const struct config_server *o = &a->cfg->servers[i],
					   *n = &cfg->servers[i];

		if (strcmp(o->name, n->name) != 0 || o->spare != n->spare)
			return -1;
	}
	/*
	 * More ports: room for them first, nothing changes if there is none.
	 * Fewer: the table keeps its size, and calls on the cut ports are
	 * followed until they end; no new call takes them.
	 */
	for (size_t i = 0; i < a->n_posts; i++) {
		struct agent_post *p = &a->posts[i];
		long want = cfg->servers[p->index].media_ports;
		struct agent_port *v;

		if (want <= p->n_ports)
			continue;
		grew = true;
		if ((v = realloc(p->ports, (size_t)(want + 1) * sizeof(*v))) ==
		    NULL)
			return -1;
		memset(v + p->n_ports + 1, 0,
		    (size_t)(want - p->n_ports) * sizeof(*v));
		p->ports = v;
		p->n_ports = want;
	}
	/* the same servers and posts: only what placement reads changed */
	a->cfg = cfg;
	a->self = &cfg->servers[a->self_index];
	for (size_t i = 0; i < a->n_posts; i++)
		a->posts[i].home = &cfg->servers[a->posts[i].index];
	members_set_config(a->members, cfg);
	if (grew) {
		/* port keys of the new ports the view skipped: read them all */
		struct etcd_watch *w = etcd_watch_new(
		    a->e, a->prefix, true, 0, agent_view_update, a);

		if (w) {
			etcd_watch_free(a->watch);
			a->watch = w;
		}
	}
	agent_kick(a);
	return 0;
}

struct agent *
agent_new(uv_loop_t *loop, struct etcd *e, const struct config *cfg,
    const struct config_server *self, struct lease *lease,
    struct members *members, bool restarted)
{
	struct agent *a = calloc(1, sizeof(*a));
	size_t n = 0;

	if (a == NULL)
		return NULL;
	a->restarted = restarted;
	a->loop = loop;
	a->e = e;
	a->cfg = cfg;
	a->self = self;
	a->self_index = agent_server_index(a, self->name);
	a->lease = lease;
	a->members = members;
	if (asprintf(&a->prefix, "/understudy/%s/", cfg->cluster.name) < 0)
		goto fail;
	a->prefix_len = strlen(a->prefix);
	if ((a->services = json_object()) == NULL ||
	    (a->history = history_new(
		 loop, e, cfg->cluster.name, self->name)) == NULL)
		goto fail;
	a->stopped = calloc(cfg->n_servers, sizeof(bool));
	a->gone = calloc(cfg->n_servers ? cfg->n_servers : 1, sizeof(*a->gone));
	for (size_t i = 0; i < cfg->n_servers; i++)
		n += cfg->servers[i].spare ? 0 : 1;
	a->posts = calloc(n ? n : 1, sizeof(*a->posts));
	if (a->stopped == NULL || a->posts == NULL || a->gone == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		struct agent_post *p;

		if (cfg->servers[i].spare)
			continue;
		p = &a->posts[a->n_posts++];
		p->home = &cfg->servers[i];
		p->agent = a;
		p->index = (int)i;
		p->state = POST_STATE_UNSERVED;
		p->since = time_wall_ms();
		p->n_ports = p->home->media_ports;
		p->ports =
		    calloc((size_t)p->home->media_ports + 1, sizeof(*p->ports));
		if (p->ports == NULL)
			goto fail;
	}
	uv_timer_init(loop, &a->kick);
	uv_timer_init(loop, &a->resync);
	a->kick.data = a->resync.data = a;
	a->open_handles = 2;
	a->watch = etcd_watch_new(e, a->prefix, true, 0, agent_view_update, a);
	uv_timer_start(&a->resync, kick_cb, AGENT_RESYNC_MS, AGENT_RESYNC_MS);
	return a;
fail:
	agent_destroy(a);
	return NULL;
}

static void
handle_closed(uv_handle_t *h)
{
	struct agent *a = h->data;

	if (--a->open_handles == 0)
		agent_destroy(a);
}

void
agent_free(struct agent *a)
{
	if (a == NULL)
		return;
	a->freeing = true;
	agent_control_cancel_all(a);
	etcd_watch_free(a->watch);
	for (size_t i = 0; i < a->n_posts; i++)
		etcd_req_cancel(a->posts[i].pending);
	etcd_req_cancel(a->admin_req);
	a->admin_req = NULL;
	history_free(a->history);
	a->history = NULL;
	uv_close((uv_handle_t *)&a->kick, handle_closed);
	uv_close((uv_handle_t *)&a->resync, handle_closed);
}
