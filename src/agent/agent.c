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

struct agent {
	uv_loop_t *loop;
	struct etcd *e;
	const struct config *cfg;
	const struct config_server *self;
	int self_index;
	struct lease *lease;
	struct members *members;
	char *prefix;
	size_t prefix_len;
	struct etcd_watch *watch;
	struct agent_post *posts;
	size_t n_posts;
	bool *stopped; /* per config server */
	uv_timer_t kick;
	uv_timer_t resync;
	bool synced;
	uint64_t synced_at;
	bool was_valid;
	bool restarted;
	uint64_t failovers; /* posts seen moving to a cover */
	uint64_t calls_dropped; /* busy ports seen going with their server */
	struct agent_gone {
		int64_t lease;
		int64_t at;
	} * gone; /* per config server: its last software death */
	void (*reconciled)(void *arg);
	void *reconciled_arg;
	void (*license)(const struct etcd_event *ev, void *arg);
	void *license_arg;
	bool freeing;
	unsigned open_handles;
};

static void agent_reconcile(struct agent *a);

static void
kick_cb(uv_timer_t *t)
{
	agent_reconcile(t->data);
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

static int
server_index(const struct agent *a, const char *name)
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
	int i = server_index(a, server);

	return i >= 0 && a->stopped[i];
}

long
agent_ports_held(const struct agent_post *p, const char *server)
{
	long n = 0;

	for (long i = 0; i < p->home->media_ports; i++)
		if (p->ports[i].busy && strcmp(p->ports[i].server, server) == 0)
			n++;
	return n;
}

/* The server other than the owner still holding ports, or NULL. */
static const char *
returning_server(const struct agent_post *p)
{
	for (long i = 0; i < p->home->media_ports; i++)
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

/* ---- what the watch tells ---- */

static void
owner_record(struct agent_post *p, const char *server, int64_t epoch,
    int64_t lease, int64_t rev)
{
	/* a late watch event never undoes a newer txn answer */
	if (rev < p->owner_rev)
		return;
	p->owner_rev = rev;
	if (server == NULL) {
		p->owned = false;
		p->owner[0] = '\0';
		p->epoch = 0;
		p->owner_lease = 0;
		p->relinquishing = false;
		return;
	}
	if (p->owned && strcmp(p->owner, server) != 0)
		p->relinquishing = false;
	p->owned = true;
	str_copy(p->owner, server, sizeof(p->owner));
	p->epoch = epoch;
	p->owner_lease = lease;
}

static void
owner_set(struct agent_post *p, const struct etcd_event *ev, int64_t rev)
{
	json_t *o;
	const char *server = NULL;

	if (ev->type == ETCD_EVENT_DELETE) {
		owner_record(p, NULL, 0, 0, rev);
		return;
	}
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:s}", "server", &server) != 0 ||
	    strlen(server) > CONFIG_NAME_MAX) {
		log_warn("post %s: unreadable owner key; ignoring it",
		    p->home->name);
		json_decref(o);
		return;
	}
	owner_record(p, server, ev->kv.mod_revision, ev->kv.lease, rev);
	json_decref(o);
}

void
agent_port_set(struct agent_post *p, long number, const char *server,
    const char *call, int64_t since, int64_t epoch, int64_t rev)
{
	long i = number - p->home->media_port_base;
	struct agent_port *port;
	bool reserved;

	if (i < 0 || i >= p->home->media_ports)
		return;
	port = &p->ports[i];
	if (rev < port->rev)
		return;
	reserved = port->reserved;
	if (server == NULL) {
		memset(port, 0, sizeof(*port));
		port->rev = rev;
		port->reserved = reserved;
		return;
	}
	port->rev = rev;
	port->busy = true;
	str_copy(port->server, server, sizeof(port->server));
	str_copy(port->call, call ? call : "", sizeof(port->call));
	port->since = since;
	port->epoch = epoch;
}

/* rev: the revision the event is true at (a snapshot's, or its own) */
static void
port_event(struct agent_post *p, const char *num, const struct etcd_event *ev,
    int64_t rev)
{
	const char *server = NULL, *call = NULL;
	json_int_t since = 0, epoch = 0;
	long number;
	json_t *o;

	if (str_to_long(num, 0, 999999999 + 10000L, &number) != 0)
		return;
	if (ev->type == ETCD_EVENT_DELETE) {
		agent_port_set(p, number, NULL, NULL, 0, 0, rev);
		return;
	}
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:s,s?s,s?I,s?I}", "server", &server, "call",
		&call, "since", &since, "epoch", &epoch) == 0) {
		long i = number - p->home->media_port_base;

		agent_port_set(p, number, server, call, since, epoch, rev);
		if (i >= 0 && i < p->home->media_ports &&
		    p->ports[i].rev == rev)
			p->ports[i].lease = ev->kv.lease;
	}
	json_decref(o);
}

static void
journal_clear(struct agent_post *p)
{
	while (p->journal) {
		struct agent_journal *j = p->journal;

		p->journal = j->next;
		json_decref(j->value);
		free(j);
	}
}

static void
journal_event(
    struct agent_post *p, const char *call, const struct etcd_event *ev)
{
	struct agent_journal **pp, *j;
	const char *server = NULL;
	json_int_t lease = 0;
	json_t *o;

	for (pp = &p->journal; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->call, call) == 0)
			break;
	if (ev->type == ETCD_EVENT_DELETE) {
		if ((j = *pp) != NULL) {
			*pp = j->next;
			json_decref(j->value);
			free(j);
		}
		return;
	}
	if (*pp || strlen(call) >= sizeof(j->call))
		return; /* a journal key is written once */
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:s,s:I}", "server", &server, "lease", &lease) !=
		0 ||
	    strlen(server) > CONFIG_NAME_MAX ||
	    (j = calloc(1, sizeof(*j))) == NULL) {
		log_warn("post %s: ignoring a malformed call journal entry %s",
		    p->home->name, call);
		json_decref(o);
		return;
	}
	str_copy(j->call, call, sizeof(j->call));
	str_copy(j->server, server, sizeof(j->server));
	j->lease = lease;
	j->create_rev = ev->kv.create_revision;
	j->value = o;
	*pp = j;
}

static void
gone_event(struct agent *a, int i, const struct etcd_event *ev)
{
	json_int_t lease = 0, at = 0;
	json_t *o;

	memset(&a->gone[i], 0, sizeof(a->gone[i]));
	if (ev->type == ETCD_EVENT_DELETE)
		return;
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:I,s:I}", "lease", &lease, "at", &at) == 0) {
		a->gone[i].lease = lease;
		a->gone[i].at = at;
	}
	json_decref(o);
}

/* Apply one event whose key is relative to the cluster prefix. */
static void
apply(
    struct agent *a, const char *rel, const struct etcd_event *ev, int64_t rev)
{
	const char *slash = strchr(rel, '/');
	char kind[32], name[CONFIG_NAME_MAX + 1];
	struct agent_post *p;
	size_t klen;
	int i;

	if (slash == NULL || (klen = (size_t)(slash - rel)) >= sizeof(kind))
		return;
	memcpy(kind, rel, klen);
	kind[klen] = '\0';
	rel = slash + 1;
	if (strcmp(kind, "members") == 0) {
		members_apply(a->members, rel, ev);
		return;
	}
	if (strcmp(kind, "licenses") == 0) {
		if (a->license)
			a->license(ev, a->license_arg);
		return;
	}
	slash = strchr(rel, '/');
	str_copy(name, rel,
	    slash && (size_t)(slash - rel) < sizeof(name)
		? (size_t)(slash - rel) + 1
		: sizeof(name));
	if (strcmp(kind, "stopped") == 0) {
		if ((i = server_index(a, name)) >= 0)
			a->stopped[i] = ev->type == ETCD_EVENT_PUT;
	} else if (strcmp(kind, "gone") == 0) {
		if ((i = server_index(a, name)) >= 0)
			gone_event(a, i, ev);
	} else if ((p = agent_post_find(a, name)) == NULL) {
		return;
	} else if (strcmp(kind, "owner") == 0) {
		owner_set(p, ev, rev);
	} else if (strcmp(kind, "ports") == 0 && slash) {
		port_event(p, slash + 1, ev, rev);
	} else if (strcmp(kind, "failback") == 0) {
		p->failback_requested = ev->type == ETCD_EVENT_PUT;
	} else if (strcmp(kind, "calls") == 0 && slash) {
		journal_event(p, slash + 1, ev);
	}
}

/*
 * A lease that goes (revoked or expired) deletes all its keys at one
 * revision: busy port keys deleted with their holder's member key are
 * calls lost with that server.
 */
static void
count_dropped(struct agent *a, const struct etcd_watch_update *u)
{
	size_t ml = a->prefix_len + strlen("members/");

	for (size_t i = 0; i < u->n_events; i++) {
		const struct etcd_kv *kv = &u->events[i].kv;

		if (u->events[i].type != ETCD_EVENT_DELETE ||
		    kv->key_len <= ml ||
		    strncmp(kv->key, a->prefix, a->prefix_len) != 0 ||
		    strncmp(kv->key + a->prefix_len, "members/", 8) != 0)
			continue;
		for (size_t j = 0; j < u->n_events; j++) {
			const struct etcd_kv *pk = &u->events[j].kv;
			const char *rest, *slash;
			char name[CONFIG_NAME_MAX + 1];
			struct agent_post *p;
			long n;

			if (u->events[j].type != ETCD_EVENT_DELETE ||
			    pk->mod_revision != kv->mod_revision ||
			    pk->key_len <= a->prefix_len + 6 ||
			    strncmp(pk->key, a->prefix, a->prefix_len) != 0 ||
			    strncmp(pk->key + a->prefix_len, "ports/", 6) != 0)
				continue;
			rest = pk->key + a->prefix_len + 6;
			if ((slash = strchr(rest, '/')) == NULL ||
			    (size_t)(slash - rest) >= sizeof(name))
				continue;
			str_copy(name, rest, (size_t)(slash - rest) + 1);
			if ((p = agent_post_find(a, name)) == NULL ||
			    str_to_long(slash + 1, 0, 2000000000L, &n) != 0)
				continue;
			n -= p->home->media_port_base;
			if (n >= 0 && n < p->home->media_ports &&
			    p->ports[n].busy &&
			    strcmp(p->ports[n].server, kv->key + ml) == 0)
				a->calls_dropped++;
		}
	}
}

static void
on_watch(struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	struct agent *a = arg;

	(void)w;
	if (u->reset) {
		for (size_t i = 0; i < a->n_posts; i++) {
			struct agent_post *p = &a->posts[i];

			owner_record(p, NULL, 0, 0, u->revision);
			p->failback_requested = false;
			journal_clear(p);
			/* what the snapshot lacks is gone, unless newer */
			for (long n = 0; n < p->home->media_ports; n++)
				agent_port_set(p, p->home->media_port_base + n,
				    NULL, NULL, 0, 0, u->revision);
		}
		memset(a->stopped, 0, a->cfg->n_servers * sizeof(bool));
		memset(a->gone, 0, a->cfg->n_servers * sizeof(*a->gone));
		members_reset(a->members, u->events, u->n_events);
		if (!a->synced) {
			a->synced = true;
			a->synced_at = time_mono_ms();
		}
	}
	if (!u->reset)
		count_dropped(a, u);
	for (size_t i = 0; i < u->n_events; i++) {
		const struct etcd_kv *kv = &u->events[i].kv;

		if (kv->key_len > a->prefix_len &&
		    strncmp(kv->key, a->prefix, a->prefix_len) == 0)
			apply(a, kv->key + a->prefix_len, &u->events[i],
			    u->reset ? u->revision : kv->mod_revision);
	}
	uv_timer_start(&a->kick, kick_cb, 0, 0);
}

/* ---- acting ---- */

/* Feed the post's state machine with what etcd shows now. */
static void
observe(struct agent *a, struct agent_post *p)
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
		owner_record(p, p->claimer, res->revision, p->claim_lease,
		    res->revision);
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
		owner_record(p, NULL, 0, 0, res->revision);
		return;
	}
	o = json_loadb(res->kvs[0].value, res->kvs[0].value_len, 0, NULL);
	if (json_unpack(o, "{s:s}", "server", &server) == 0 &&
	    strlen(server) <= CONFIG_NAME_MAX) {
		bool same = p->owned && strcmp(server, p->owner) == 0 &&
		    res->kvs[0].mod_revision == p->epoch;

		owner_record(p, server, res->kvs[0].mod_revision,
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
		owner_record(p, p->handing_to[0] ? p->handing_to : NULL,
		    res->revision, p->claim_lease, res->revision);
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
	o = json_pack("{s:s,s:s,s:s}", "server", a->self->name, "home",
	    p->home->name, "claimed", now);
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
	time_iso8601(time_wall_ms(), now, sizeof(now));
	if (key && t &&
	    etcd_kv_txn_compare(
		t, key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, p->epoch, NULL, 0) == 0) {
		if (to) {
			o = json_pack("{s:s,s:s,s:s,s:s}", "server", to, "home",
			    p->home->name, "claimed", now, "from",
			    a->self->name);
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
		po[i].owner = p->owned ? server_index(a, p->owner) : -1;
		po[i].failback_requested = p->failback_requested;
		if ((fo[i] = calloc(f->n ? f->n : 1, sizeof(int))) == NULL)
			goto out;
		for (size_t j = 0; j < f->n; j++) {
			int k = server_index(a, f->v[j]);

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
agent_on_license(struct agent *a,
    void (*cb)(const struct etcd_event *ev, void *arg), void *arg)
{
	a->license = cb;
	a->license_arg = arg;
}

bool
agent_journal_orphaned(const struct agent *a, const struct agent_journal *j,
    bool *software, int64_t *at)
{
	int i = server_index(a, j->server);

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
		journal_clear(&a->posts[i]);
	}
	free(a->posts);
	free(a->stopped);
	free(a->gone);
	free(a->prefix);
	free(a);
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
	a->self_index = server_index(a, self->name);
	a->lease = lease;
	a->members = members;
	if (asprintf(&a->prefix, "/understudy/%s/", cfg->cluster.name) < 0)
		goto fail;
	a->prefix_len = strlen(a->prefix);
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
		p->ports =
		    calloc((size_t)p->home->media_ports + 1, sizeof(*p->ports));
		if (p->ports == NULL)
			goto fail;
	}
	uv_timer_init(loop, &a->kick);
	uv_timer_init(loop, &a->resync);
	a->kick.data = a->resync.data = a;
	a->open_handles = 2;
	a->watch = etcd_watch_new(e, a->prefix, true, 0, on_watch, a);
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
	etcd_watch_free(a->watch);
	for (size_t i = 0; i < a->n_posts; i++)
		etcd_req_cancel(a->posts[i].pending);
	uv_close((uv_handle_t *)&a->kick, handle_closed);
	uv_close((uv_handle_t *)&a->resync, handle_closed);
}

/* ---- status ---- */

static json_t *
route_points_json(const struct config_server *s)
{
	json_t *arr = json_array();

	if (s->route_point)
		json_array_append_new(arr, json_string(s->route_point));
	if (s->aa_route_point)
		json_array_append_new(arr, json_string(s->aa_route_point));
	return arr;
}

static json_t *
post_json(const struct agent *a, const struct agent_post *p)
{
	json_t *ports = json_array(), *o;
	char since[32];
	long busy = 0;

	for (long i = 0; i < p->home->media_ports; i++) {
		const struct agent_port *pt = &p->ports[i];
		const char *state = !pt->busy ? "idle"
		    : p->owned && strcmp(pt->server, p->owner) == 0
		    ? "busy"
		    : "returning";
		json_t *po = json_pack("{s:I,s:s}", "number",
		    (json_int_t)(p->home->media_port_base + i), "state", state);

		if (pt->busy) {
			busy++;
			time_iso8601(pt->since, since, sizeof(since));
			json_object_set_new(
			    po, "server", json_string(pt->server));
			json_object_set_new(po, "call", json_string(pt->call));
			json_object_set_new(po, "since", json_string(since));
		}
		json_array_append_new(ports, po);
	}
	time_iso8601(p->since, since, sizeof(since));
	o = json_pack("{s:s,s:s,s:s,s:o,s:I,s:s,s:o,s:I,s:I,s:o}", "name",
	    p->home->name, "home", p->home->name, "state",
	    post_state_name(p->state), "owner",
	    p->owned ? json_string(p->owner) : json_null(), "epoch",
	    (json_int_t)p->epoch, "since", since, "route_points",
	    route_points_json(p->home), "media_ports",
	    (json_int_t)p->home->media_ports, "ports_in_use", (json_int_t)busy,
	    "ports", ports);
	json_object_set_new(
	    o, "cover", p->cover[0] ? json_string(p->cover) : json_null());
	json_object_set_new(o, "reason", json_string(p->reason));
	json_object_set_new(
	    o, "failback_requested", json_boolean(p->failback_requested));
	(void)a;
	return o;
}

static json_t *
server_json(const struct agent *a, const struct config_server *s)
{
	json_t *covers = json_array(), *fo = json_array(), *o;
	bool up = members_is_up(a->members, s->name);
	const char *state;
	long in_use = 0;
	char since[32];

	if (s == a->self && !lease_valid(a->lease))
		state = "fenced";
	else if (agent_stopped(a, s->name))
		state = "stopped";
	else
		state = up ? "up" : "down";
	for (size_t i = 0; i < a->n_posts; i++) {
		const struct agent_post *p = &a->posts[i];

		in_use += agent_ports_held(p, s->name);
		if (p->owned && strcmp(p->owner, s->name) == 0 && p->home != s)
			json_array_append_new(
			    covers, json_string(p->home->name));
	}
	for (size_t i = 0; i < s->failover.n; i++)
		json_array_append_new(fo, json_string(s->failover.v[i]));
	time_iso8601(members_since(a->members, s->name), since, sizeof(since));
	o = json_pack("{s:s,s:s,s:b,s:s,s:s,s:i,s:b,s:I,s:I,s:I,s:o,s:o,s:o}",
	    "name", s->name, "state", state, "up", up, "since", since,
	    "address", s->address, "api_port", (int)s->api_port, "spare",
	    s->spare, "media_ports", (json_int_t)s->media_ports,
	    "max_media_ports", (json_int_t)s->max_media_ports, "ports_in_use",
	    (json_int_t)in_use, "route_points", route_points_json(s),
	    "failover", fo, "covers", covers);
	return o;
}

json_t *
agent_status_json(const struct agent *a)
{
	json_t *servers = json_array(), *posts = json_array();

	for (size_t i = 0; i < a->cfg->n_servers; i++)
		json_array_append_new(
		    servers, server_json(a, &a->cfg->servers[i]));
	for (size_t i = 0; i < a->n_posts; i++)
		json_array_append_new(posts, post_json(a, &a->posts[i]));
	json_t *owned = json_array();
	int64_t epoch;

	for (size_t i = 0; i < a->n_posts; i++)
		if (agent_owns(a, &a->posts[i], &epoch))
			json_array_append_new(owned,
			    json_pack("{s:s,s:I}", "post",
				a->posts[i].home->name, "epoch",
				(json_int_t)epoch));
	return json_pack("{s:o,s:o,s:o,s:b}", "servers", servers, "posts",
	    posts, "owned", owned, "synced", a->synced);
}
