/*
 * The agent's view of the cluster: what its one watch on
 * /understudy/<cluster>/ tells, applied in revision order (owner keys,
 * port keys, journal entries, stops, failback requests, death notices,
 * members, license slots).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* ---- what the watch tells ---- */

void
agent_owner_record(struct agent_post *p, const char *server, int64_t epoch,
    int64_t lease, int64_t rev)
{
	/* a late watch event never undoes a newer txn answer */
	if (rev < p->owner_rev)
		return;
	p->owner_rev = rev;
	if (p->owned && (server == NULL || strcmp(p->owner, server) != 0)) {
		/* how it moved, for the history of the post */
		str_copy(p->lost_owner, p->owner, sizeof(p->lost_owner));
		p->lost_lease = p->owner_lease;
		p->lost_at = time_wall_ms();
		p->lost_handover = server != NULL;
	}
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
	json_int_t claimed = 0;

	if (ev->type == ETCD_EVENT_DELETE) {
		agent_owner_record(p, NULL, 0, 0, rev);
		return;
	}
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:s,s?I}", "server", &server, "claimed_ms",
		&claimed) != 0 ||
	    strlen(server) > CONFIG_NAME_MAX) {
		log_warn("post %s: unreadable owner key; ignoring it",
		    p->home->name);
		json_decref(o);
		return;
	}
	agent_owner_record(p, server, ev->kv.mod_revision, ev->kv.lease, rev);
	if (p->owner_rev == rev)
		p->owner_claimed_ms = claimed;
	json_decref(o);
}

void
agent_port_set(struct agent_post *p, long number, const char *server,
    const char *call, int64_t since, int64_t epoch, int64_t rev)
{
	long i = number - p->home->media_port_base;
	struct agent_port *port;
	bool reserved;

	if (i < 0 || i >= p->n_ports)
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
		if (i >= 0 && i < p->n_ports && p->ports[i].rev == rev)
			p->ports[i].lease = ev->kv.lease;
	}
	json_decref(o);
}

void
agent_journal_clear(struct agent_post *p)
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
	const char *why = "";
	json_t *o;

	memset(&a->gone[i], 0, sizeof(a->gone[i]));
	if (ev->type == ETCD_EVENT_DELETE)
		return;
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:I,s:I,s?s}", "lease", &lease, "at", &at, "why",
		&why) == 0) {
		a->gone[i].lease = lease;
		a->gone[i].at = at;
		str_copy(a->gone[i].why, why, sizeof(a->gone[i].why));
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
	if (strcmp(kind, "admin") == 0) {
		if (strcmp(rel, "primary") == 0)
			admin_event(a, ev);
		return;
	}
	if (strcmp(kind, "services") == 0) {
		/* services/<server>/<name>: what each master runs */
		json_t *o = NULL;

		if (ev->type != ETCD_EVENT_DELETE)
			o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
		if (o && json_is_object(o))
			json_object_set_new(a->services, rel, o);
		else {
			json_decref(o);
			json_object_del(a->services, rel);
		}
		return;
	}
	if (strcmp(kind, "licenses") == 0) {
		if (a->license)
			a->license(ev, a->resetting, a->license_arg);
		return;
	}
	if (strcmp(kind, "history") == 0) {
		if (a->on_history && ev->type == ETCD_EVENT_PUT &&
		    !a->resetting)
			a->on_history(&ev->kv, a->on_history_arg);
		return;
	}
	slash = strchr(rel, '/');
	str_copy(name, rel,
	    slash && (size_t)(slash - rel) < sizeof(name)
		? (size_t)(slash - rel) + 1
		: sizeof(name));
	if (strcmp(kind, "stopped") == 0) {
		if ((i = agent_server_index(a, name)) >= 0)
			a->stopped[i] = ev->type == ETCD_EVENT_PUT;
	} else if (strcmp(kind, "gone") == 0) {
		if ((i = agent_server_index(a, name)) >= 0)
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
			if (n >= 0 && n < p->n_ports && p->ports[n].busy &&
			    strcmp(p->ports[n].server, kv->key + ml) == 0)
				a->calls_dropped++;
		}
	}
}

void
agent_view_update(
    struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	struct agent *a = arg;

	(void)w;
	if (u->reset) {
		for (size_t i = 0; i < a->n_posts; i++) {
			struct agent_post *p = &a->posts[i];

			agent_owner_record(p, NULL, 0, 0, u->revision);
			p->failback_requested = false;
			agent_journal_clear(p);
			/* what the snapshot lacks is gone, unless newer */
			for (long n = 0; n < p->n_ports; n++)
				agent_port_set(p, p->home->media_port_base + n,
				    NULL, NULL, 0, 0, u->revision);
		}
		memset(a->stopped, 0, a->cfg->n_servers * sizeof(bool));
		json_object_clear(a->services);
		admin_reset(a);
		memset(a->gone, 0, a->cfg->n_servers * sizeof(*a->gone));
		members_reset(a->members, u->events, u->n_events);
		if (a->license)
			a->license(NULL, true, a->license_arg); /* forget */
		if (!a->synced) {
			a->synced = true;
			a->synced_at = time_mono_ms();
		}
	}
	if (!u->reset)
		count_dropped(a, u);
	a->resetting = u->reset;
	for (size_t i = 0; i < u->n_events; i++) {
		const struct etcd_kv *kv = &u->events[i].kv;

		if (kv->key_len > a->prefix_len &&
		    strncmp(kv->key, a->prefix, a->prefix_len) == 0)
			apply(a, kv->key + a->prefix_len, &u->events[i],
			    u->reset ? u->revision : kv->mod_revision);
	}
	a->resetting = false;
	agent_kick(a);
}
