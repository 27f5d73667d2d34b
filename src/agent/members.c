/*
 * Membership: this server's key /understudy/<cluster>/members/<name>,
 * written on its lease (so it goes when the lease goes), and a watch on
 * every member key, so this server knows who is up and since when.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

struct member {
	char *name;
	bool configured;
	bool up;
	int64_t since; /* wall ms: up since (from its key), or seen down at */
	uint64_t seen_up; /* monotonic ms when this server saw it come up */
	bool ever_up; /* seen up since this process started */
	int64_t lease; /* the lease its key is on */
	char *address;
	long api_port;
};

struct members {
	struct etcd *e;
	const struct config *cfg;
	char *self;
	char *prefix;
	struct member *v;
	size_t n;
	members_cb cb;
	void *arg;
	int64_t lease; /* the lease to register on, 0: none */
	int64_t registered; /* the lease the key is written on */
	struct etcd_req *put;
	uv_timer_t retry;
	int64_t started;
};

char *
members_prefix(const char *cluster)
{
	char *s = NULL;

	if (asprintf(&s, "/understudy/%s/members/", cluster) < 0)
		return NULL;
	return s;
}

static struct member *
member_get(struct members *m, const char *name, bool create)
{
	struct member *v;

	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->v[i].name, name) == 0)
			return &m->v[i];
	if (!create || (v = realloc(m->v, (m->n + 1) * sizeof(*v))) == NULL)
		return NULL;
	m->v = v;
	v = &m->v[m->n];
	memset(v, 0, sizeof(*v));
	if ((v->name = strdup(name)) == NULL)
		return NULL;
	v->since = m->started;
	m->n++;
	return v;
}

static void
member_set(struct members *m, const char *name, bool up, const char *value,
    size_t vlen, int64_t lease)
{
	struct member *mb = member_get(m, name, true);
	bool changed;

	if (mb == NULL)
		return;
	changed = mb->up != up;
	mb->up = up;
	mb->lease = up ? lease : 0;
	if (changed && up) {
		mb->seen_up = time_mono_ms();
		mb->ever_up = true;
	}
	if (up) {
		json_t *o = json_loadb(value, vlen, 0, NULL);
		json_int_t since = 0;
		const char *addr = NULL;
		json_int_t port = 0;

		if (json_unpack(o, "{s?I,s?s,s?I}", "since", &since, "address",
			&addr, "api_port", &port) == 0) {
			free(mb->address);
			mb->address = addr ? strdup(addr) : NULL;
			mb->api_port = (long)port;
		}
		mb->since = since ? (int64_t)since : time_wall_ms();
		json_decref(o);
	} else if (changed) {
		mb->since = time_wall_ms();
	}
	if (changed) {
		log_info("member %s is %s", name, up ? "up" : "down");
		if (m->cb)
			m->cb(m, name, up, m->arg);
	}
}

void
members_reset(struct members *m, const struct etcd_event *evs, size_t n)
{
	size_t plen = strlen(m->prefix);

	/* everything absent from the snapshot is down */
	for (size_t i = 0; i < m->n; i++) {
		bool present = false;

		for (size_t j = 0; j < n; j++)
			if (evs[j].kv.key_len > plen &&
			    strncmp(evs[j].kv.key, m->prefix, plen) == 0 &&
			    strcmp(evs[j].kv.key + plen, m->v[i].name) == 0)
				present = true;
		if (!present && m->v[i].up)
			member_set(m, m->v[i].name, false, NULL, 0, 0);
	}
}

void
members_apply(struct members *m, const char *name, const struct etcd_event *ev)
{
	const struct etcd_kv *kv = &ev->kv;

	if (name[0] == '\0' || strchr(name, '/'))
		return;
	member_set(m, name, ev->type == ETCD_EVENT_PUT, kv->value,
	    kv->value_len, kv->lease);
	if (strcmp(name, m->self) == 0 && ev->type == ETCD_EVENT_DELETE &&
	    m->registered == m->lease && m->lease != 0) {
		/* our key went while our lease lives: write it again */
		log_warn("membership key deleted; writing it again");
		m->registered = 0;
		members_register(m, m->lease);
	}
}

void
members_set_config(struct members *m, const struct config *cfg)
{
	m->cfg = cfg;
}

struct members *
members_new(struct etcd *e, const struct config *cfg, const char *self,
    members_cb cb, void *arg)
{
	struct members *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	m->e = e;
	m->cfg = cfg;
	m->cb = cb;
	m->arg = arg;
	m->started = time_wall_ms();
	if ((m->self = strdup(self)) == NULL ||
	    (m->prefix = members_prefix(cfg->cluster.name)) == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		struct member *mb = member_get(m, cfg->servers[i].name, true);

		if (mb == NULL)
			goto fail;
		mb->configured = true;
	}
	uv_timer_init(etcd_loop(e), &m->retry);
	m->retry.data = m;
	return m;
fail:
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].name);
	free(m->v);
	free(m->self);
	free(m->prefix);
	free(m);
	return NULL;
}

static void
retry_closed(uv_handle_t *h)
{
	struct members *m = h->data;

	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].name);
		free(m->v[i].address);
	}
	free(m->v);
	free(m->self);
	free(m->prefix);
	free(m);
}

void
members_free(struct members *m)
{
	if (m == NULL)
		return;
	etcd_req_cancel(m->put);
	uv_close((uv_handle_t *)&m->retry, retry_closed);
}

static void
retry_cb(uv_timer_t *t)
{
	struct members *m = t->data;

	members_register(m, m->lease);
}

static void
put_cb(const struct etcd_res *res, void *arg)
{
	struct members *m = arg;
	int64_t lease = m->lease;

	m->put = NULL;
	if (res->err) {
		log_warn("writing the membership key failed: %s",
		    us_strerror(res->err));
		/* a lease unknown to etcd is the lease module's to notice */
		uv_timer_start(&m->retry, retry_cb, 200, 0);
		return;
	}
	m->registered = lease;
	log_info("registered as member %s", m->self);
}

void
members_register(struct members *m, int64_t lease)
{
	const struct config_server *s = config_server_find(m->cfg, m->self);
	char *key = NULL, *value = NULL;
	json_t *o;

	m->lease = lease;
	uv_timer_stop(&m->retry);
	etcd_req_cancel(m->put);
	m->put = NULL;
	if (lease == 0) {
		m->registered = 0;
		return;
	}
	o = json_pack("{s:s,s:s,s:i,s:I,s:i}", "server", m->self, "address",
	    s ? s->address : "", "api_port", s ? (int)s->api_port : 0, "since",
	    (json_int_t)time_wall_ms(), "pid", (int)getpid());
	if (o)
		value = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (value && asprintf(&key, "%s%s", m->prefix, m->self) >= 0)
		m->put = etcd_kv_put(
		    m->e, key, value, strlen(value), lease, put_cb, m);
	if (m->put == NULL)
		uv_timer_start(&m->retry, retry_cb, 200, 0);
	free(key);
	free(value);
}

bool
members_registered(const struct members *m)
{
	return m->lease != 0 && m->registered == m->lease;
}

bool
members_is_up(const struct members *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->v[i].name, name) == 0)
			return m->v[i].up;
	return false;
}

json_t *
members_json(const struct members *m)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < m->n; i++) {
		const struct member *mb = &m->v[i];
		char since[32];
		json_t *o;

		time_iso8601(mb->since, since, sizeof(since));
		o = json_pack("{s:s,s:b,s:s,s:b}", "name", mb->name, "up",
		    mb->up, "since", since, "configured", mb->configured);
		if (o && mb->address)
			json_object_set_new(
			    o, "address", json_string(mb->address));
		if (o && mb->api_port)
			json_object_set_new(
			    o, "api_port", json_integer(mb->api_port));
		json_array_append_new(arr, o);
	}
	return arr;
}

static const struct member *
member_find(const struct members *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->v[i].name, name) == 0)
			return &m->v[i];
	return NULL;
}

int64_t
members_lease(const struct members *m, const char *name)
{
	const struct member *mb = member_find(m, name);

	return mb && mb->up ? mb->lease : 0;
}

int64_t
members_up_for_ms(const struct members *m, const char *name)
{
	const struct member *mb = member_find(m, name);

	return mb && mb->up ? (int64_t)(time_mono_ms() - mb->seen_up) : 0;
}

int64_t
members_since(const struct members *m, const char *name)
{
	const struct member *mb = member_find(m, name);

	return mb ? mb->since : 0;
}

const char *
members_address(const struct members *m, const char *name, long *api_port)
{
	const struct member *mb = member_find(m, name);

	*api_port = mb ? mb->api_port : 0;
	return mb ? mb->address : NULL;
}

bool
members_ever_up(const struct members *m, const char *name)
{
	const struct member *mb = member_find(m, name);

	return mb && mb->ever_up;
}
