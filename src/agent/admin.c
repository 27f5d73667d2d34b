/*
 * The admin primary: the one server that executes admin actions (config
 * apply and rollback; stop, start, failback), elected by a key on its
 * lease, /understudy/<cluster>/admin/primary, taken with a compare on
 * absence. When its lease goes (a crash: the master revokes it within
 * ms; a lost host: the TTL) the key goes, and the next reconcile of
 * every other server races for it: one wins. The others forward admin
 * requests to it (src/api/forward.c).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

void
admin_event(struct agent *a, const struct etcd_event *ev)
{
	json_t *o;
	const char *who = NULL;

	a->admin[0] = '\0';
	a->admin_lease = 0;
	if (ev->type != ETCD_EVENT_PUT)
		return;
	o = json_loadb(ev->kv.value, ev->kv.value_len, 0, NULL);
	if (json_unpack(o, "{s:s}", "server", &who) == 0)
		str_copy(a->admin, who, sizeof(a->admin));
	a->admin_lease = ev->kv.lease;
	json_decref(o);
}

void
admin_reset(struct agent *a)
{
	a->admin[0] = '\0';
	a->admin_lease = 0;
}

static void
taken(const struct etcd_res *res, void *arg)
{
	struct agent *a = arg;

	a->admin_req = NULL;
	/* the watch tells who holds it; an unknown outcome shows there too */
	if (res->err == 0 && res->succeeded)
		log_info("admin primary: this server");
}

void
admin_reconcile(struct agent *a, bool valid)
{
	char *key, *value = NULL, now[32];
	struct etcd_txn *t;
	int64_t lease = lease_id(a->lease);
	json_t *o;

	if (!valid || a->admin[0] || a->admin_req || lease == 0)
		return;
	key = agent_key(a, "admin/primary");
	time_iso8601(time_wall_ms(), now, sizeof(now));
	o = json_pack("{s:s,s:s}", "server", a->self->name, "since", now);
	value = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	t = etcd_kv_txn_new();
	if (key && value && t &&
	    etcd_kv_txn_compare(
		t, key, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, key, value, strlen(value), lease) == 0) {
		a->admin_req = etcd_kv_txn_commit(a->e, t, taken, a);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(key);
	free(value);
}

const char *
agent_admin(const struct agent *a)
{
	return a->admin[0] ? a->admin : NULL;
}

bool
agent_is_admin(const struct agent *a)
{
	int64_t lease = lease_id(a->lease);

	return a->admin[0] && strcmp(a->admin, a->self->name) == 0 &&
	    lease != 0 && a->admin_lease == lease && lease_valid(a->lease);
}
