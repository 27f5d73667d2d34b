/*
 * Calls on media ports (see calls.h). Operations that need etcd are
 * asynchronous; each keeps its callback until it answers or its caller
 * goes away (calls_forget).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "calls.h"

#define CALLS_RATE_S 10
#define CALLS_UNKNOWN_TRIES 3 /* resends of a txn whose answer was lost */

struct call {
	char id[64];
	struct agent_post *post;
	long port;
	int64_t epoch;
	int64_t started; /* wall ms */
	char origin[8]; /* "http" or "sip" */
	bool ending;
	json_t *journal; /* its durable start, as written */
	int64_t jrev; /* the journal key's create revision */
	struct call *next;
};

struct op {
	struct calls *c;
	struct agent_post *post;
	long port; /* the port being claimed */
	int64_t epoch;
	unsigned attempts;
	unsigned unknown; /* sends whose outcome was not known */
	long next_other; /* next port held by another server to try */
	struct call *call; /* ending */
	bool transferred;
	char id[64];
	char origin[8];
	char route_point[64];
	char caller[128];
	char ended_by[16];
	int64_t start; /* wall ms the call came */
	json_t *journal; /* of the claim in flight */
	calls_cb cb;
	void *arg;
	struct etcd_req *req;
	struct op *next;
};

struct calls {
	struct agent *a;
	struct records *rec;
	struct call *calls;
	struct op *ops;
	unsigned seq;
	uint64_t placed[2]; /* calls taken: by HTTP, by SIP */
	uint64_t ended[2]; /* calls ended: normally, transferred */
	uint64_t lost; /* calls lost with this server's lease */
	uint64_t busy; /* calls refused: no port free */
	void (*hangup)(const char *call, void *arg);
	void *hangup_arg;
	/* calls taken per second of the last CALLS_RATE_S (by mono second) */
	uint32_t rate[CALLS_RATE_S];
	uint64_t rate_sec[CALLS_RATE_S];
};

static void
op_free(struct op *op)
{
	struct op **pp;

	for (pp = &op->c->ops; *pp; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	json_decref(op->journal);
	free(op);
}

static void
answer(struct op *op, struct calls_result *r)
{
	if (op->cb)
		op->cb(r, op->arg);
	op_free(op);
}

static void
result_init(struct calls_result *r, int err, const char *msg)
{
	memset(r, 0, sizeof(*r));
	r->err = err;
	str_copy(r->message, msg ? msg : "", sizeof(r->message));
}

static struct call *
call_find(struct calls *c, const char *id)
{
	for (struct call *k = c->calls; k; k = k->next)
		if (strcmp(k->id, id) == 0)
			return k;
	return NULL;
}

static void
call_remove(struct calls *c, struct call *k)
{
	for (struct call **pp = &c->calls; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	json_decref(k->journal);
	free(k);
}

/* A port of the post no one holds or claims, at or after from; -1. */
static long
free_port(const struct agent_post *p, long from)
{
	for (long i = from; i < p->home->media_ports; i++)
		if (!p->ports[i].busy && !p->ports[i].reserved)
			return i;
	return -1;
}

/*
 * A port another server holds, at or after from, or -1. Its call may have
 * ended a moment ago without this server's watch showing it yet: trying
 * it costs one txn, and refusing a call while a port is free would drop
 * it.
 */
static long
other_port(const struct agent_post *p, const char *self, long from)
{
	for (long i = from; i < p->home->media_ports; i++)
		if (p->ports[i].busy && !p->ports[i].reserved &&
		    strcmp(p->ports[i].server, self) != 0)
			return i;
	return -1;
}

static int
not_owner(struct calls *c, struct agent_post *p, struct calls_result *r)
{
	const char *self = agent_self(c->a);

	if (!p->owned) {
		result_init(r, US_ENOTOWNER, NULL);
		snprintf(r->message, sizeof(r->message),
		    "no server serves post %s now: %s", p->home->name,
		    p->reason);
		return r->err;
	}
	result_init(r, US_ENOTOWNER, NULL);
	/* handing it over: send the caller where it is going */
	str_copy(r->server,
	    p->relinquishing && p->handing_to[0] && strcmp(p->owner, self) == 0
		? p->handing_to
		: p->owner,
	    sizeof(r->server));
	if (strcmp(r->server, p->owner) != 0) {
		snprintf(r->message, sizeof(r->message),
		    "%s is handing post %s to %s", self, p->home->name,
		    r->server);
		return r->err;
	}
	snprintf(r->message, sizeof(r->message), "%s does not own post %s%s%s",
	    self, p->home->name,
	    strcmp(p->owner, self) ? "; its owner is " : "",
	    strcmp(p->owner, self) ? p->owner : " (handing it over or fenced)");
	return r->err;
}

/* The journal entry of a call: what its record starts from. */
static json_t *
journal_new(
    struct calls *c, struct agent_post *p, const struct op *op, long port)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I}",
	    "call", op->id, "route_point", op->route_point, "post",
	    p->home->name, "server", agent_self(c->a), "port", (json_int_t)port,
	    "origin", op->origin, "caller", op->caller, "start",
	    (json_int_t)op->start, "answer",
	    (json_int_t)(port >= 0 ? time_wall_ms() : 0), "lease",
	    (json_int_t)agent_lease_id(c->a), "epoch", (json_int_t)op->epoch,
	    "config_version", (json_int_t)agent_config(c->a)->version);
}

static void
busy_written(const struct etcd_res *res, void *arg)
{
	char *id = arg;

	if (res->err)
		log_warn("the BUSY record of call %s was not written: %s", id,
		    us_strerror(res->err));
	free(id);
}

/* A call refused for want of a port: its record, BUSY, at once. */
static void
busy_record(struct calls *c, struct agent_post *p, const struct op *op)
{
	json_t *j = journal_new(c, p, op, -1),
	       *rec = j ? records_from_journal(j, time_wall_ms(), "busy",
			      "BUSY", agent_self(c->a))
			: NULL;
	char *key = records_key(c->rec, p->home->name, op->id), *value = NULL,
	     *id;

	c->busy++;
	value = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	if (key && value && (id = strdup(op->id)) != NULL &&
	    etcd_kv_put(agent_etcd(c->a), key, value, strlen(value), 0,
		busy_written, id) == NULL)
		free(id);
	json_decref(j);
	json_decref(rec);
	free(key);
	free(value);
}

static int claim_port(struct op *op);

static struct op *
op_new(struct calls *c, calls_cb cb, void *arg)
{
	struct op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->c = c;
	op->cb = cb;
	op->arg = arg;
	op->next = c->ops;
	c->ops = op;
	return op;
}

/*
 * The claim of op holds port (its number) with the journal entry created
 * at jrev, as written (journal, taken): the call is this server's.
 */
static void
call_taken(struct op *op, long port, json_t *journal, int64_t jrev, int64_t rev)
{
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	struct calls_result r;
	struct call *k;

	if ((k = calloc(1, sizeof(*k))) == NULL) {
		json_decref(journal);
		result_init(&r, US_ENOMEM, "out of memory");
		answer(op, &r);
		return;
	}
	str_copy(k->id, op->id, sizeof(k->id));
	k->post = p;
	k->port = port;
	k->epoch = op->epoch;
	k->started = op->start;
	k->journal = journal;
	k->jrev = jrev;
	str_copy(k->origin, op->origin, sizeof(k->origin));
	c->placed[strcmp(k->origin, "sip") == 0]++;
	{
		uint64_t sec = time_mono_ms() / 1000;
		size_t b = sec % CALLS_RATE_S;

		if (c->rate_sec[b] != sec) {
			c->rate_sec[b] = sec;
			c->rate[b] = 0;
		}
		c->rate[b]++;
	}
	k->next = c->calls;
	c->calls = k;
	agent_port_set(
	    p, k->port, agent_self(c->a), k->id, k->started, k->epoch, rev);
	agent_call_taken(c->a, p, time_wall_ms());
	result_init(&r, 0, NULL);
	str_copy(r.call, k->id, sizeof(r.call));
	str_copy(r.post, p->home->name, sizeof(r.post));
	str_copy(r.server, agent_self(c->a), sizeof(r.server));
	r.port = k->port;
	r.epoch = k->epoch;
	log_debug("call %s on port %ld of %s, epoch %" PRId64, k->id, k->port,
	    p->home->name, k->epoch);
	answer(op, &r);
}

/* The kv of a txn answer whose key holds part, or NULL. */
static const struct etcd_kv *
kv_with(const struct etcd_res *res, const char *part)
{
	for (size_t i = 0; i < res->n_kvs; i++)
		if (strstr(res->kvs[i].key, part))
			return &res->kvs[i];
	return NULL;
}

static void undo_claim(struct calls *c, struct agent_post *p, const char *id);

static void
claim_done(const struct etcd_res *res, void *arg)
{
	struct op *op = arg;
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	const struct etcd_kv *jkv;
	struct calls_result r;
	json_t *journal;
	char msg[160];

	op->req = NULL;
	p->ports[op->port].reserved = false;
	if (res->err) {
		/*
		 * done, not done or unknown: sent again, the journal's
		 * compare tells (a claim already done shows its entry)
		 */
		if (++op->unknown <= CALLS_UNKNOWN_TRIES &&
		    agent_owns(c->a, p, NULL) && p->epoch == op->epoch &&
		    claim_port(op) == 0)
			return;
		snprintf(msg, sizeof(msg), "taking a port of %s: %s",
		    p->home->name, us_strerror(res->err));
		log_warn("call %s: %s; its claim is undone if it was made",
		    op->id, msg);
		undo_claim(c, p, op->id);
		result_init(&r, US_EUNAVAIL, msg);
		answer(op, &r);
		return;
	}
	if (!res->succeeded && (jkv = kv_with(res, "/calls/")) != NULL) {
		/* an earlier send of this claim was done: its answer was lost
		 */
		json_t *j = json_loadb(jkv->value, jkv->value_len, 0, NULL);
		json_int_t port = -1;

		json_unpack(j, "{s:I}", "port", &port);
		if (j == NULL || port < p->home->media_port_base ||
		    port >= p->home->media_port_base + p->n_ports) {
			json_decref(j);
			log_warn("call %s: its journal entry is unreadable; "
				 "undoing the claim",
			    op->id);
			undo_claim(c, p, op->id);
			result_init(&r, US_EUNAVAIL, "taking a port failed");
			answer(op, &r);
			return;
		}
		log_info("call %s: a claim whose answer was lost was done "
			 "(port %" JSON_INTEGER_FORMAT ")",
		    op->id, port);
		call_taken(
		    op, (long)port, j, jkv->create_revision, res->revision);
		return;
	}
	if (!res->succeeded) {
		/* the post moved, or another call took the port first */
		if (!agent_owns(c->a, p, NULL) || p->epoch != op->epoch) {
			not_owner(c, p, &r);
			answer(op, &r);
			return;
		}
		if (kv_with(res, "/ports/"))
			p->ports[op->port].busy = true;
		if (++op->attempts > (unsigned)p->home->media_ports ||
		    claim_port(op) != 0) {
			busy_record(c, p, op);
			result_init(&r, US_EBUSY, NULL);
			snprintf(r.message, sizeof(r.message),
			    "all %ld ports of %s are busy",
			    p->home->media_ports, p->home->name);
			answer(op, &r);
		}
		return;
	}
	journal = op->journal;
	op->journal = NULL; /* the call holds it now */
	call_taken(op, p->home->media_port_base + op->port, journal,
	    res->revision, res->revision);
}

/* ---- a claim given up: undone, whether or not it was made ---- */

static void undo_read(const struct etcd_res *res, void *arg);

static void
undo_done(const struct etcd_res *res, void *arg)
{
	struct op *op = arg;

	op->req = NULL;
	if (res->err && ++op->attempts <= CALLS_UNKNOWN_TRIES) {
		char *jkey = agent_key(
		    op->c->a, "calls/%s/%s", op->post->home->name, op->id);

		op->req = jkey ? etcd_kv_range(agent_etcd(op->c->a), jkey,
				     false, undo_read, op)
			       : NULL;
		free(jkey);
		if (op->req)
			return;
	}
	if (res->err)
		log_error("call %s: its claim could not be undone (%s); the "
			  "post's owner closes it when this server's lease "
			  "goes",
		    op->id, us_strerror(res->err));
	op_free(op);
}

static void
undo_read(const struct etcd_res *res, void *arg)
{
	struct op *op = arg;
	struct calls *c = op->c;
	const char *post = op->post->home->name, *server = "";
	char *jkey = agent_key(c->a, "calls/%s/%s", post, op->id), *pkey = NULL;
	struct etcd_txn *t = NULL;
	json_int_t port = -1;
	json_t *j = NULL;

	op->req = NULL;
	if (res->err || res->n_kvs == 0 || jkey == NULL) {
		free(jkey);
		undo_done(res, op); /* retried, or nothing to undo */
		return;
	}
	j = json_loadb(res->kvs[0].value, res->kvs[0].value_len, 0, NULL);
	json_unpack(j, "{s:I,s:s}", "port", &port, "server", &server);
	if (port >= 0 && strcmp(server, agent_self(c->a)) == 0 &&
	    (pkey = agent_key(c->a, "ports/%s/%ld", post, (long)port)) &&
	    (t = etcd_kv_txn_new()) &&
	    etcd_kv_txn_compare(t, jkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL,
		res->kvs[0].create_revision, NULL, 0) == 0 &&
	    etcd_kv_txn_compare(t, pkey, ETCD_CMP_LEASE, ETCD_CMP_EQUAL,
		agent_lease_id(c->a), NULL, 0) == 0 &&
	    etcd_kv_txn_delete(t, true, jkey, false) == 0 &&
	    etcd_kv_txn_delete(t, true, pkey, false) == 0) {
		op->req =
		    etcd_kv_txn_commit(agent_etcd(c->a), t, undo_done, op);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	json_decref(j);
	free(jkey);
	free(pkey);
	if (op->req == NULL)
		op_free(op);
}

static void
undo_claim(struct calls *c, struct agent_post *p, const char *id)
{
	struct op *op = op_new(c, NULL, NULL);
	char *jkey = agent_key(c->a, "calls/%s/%s", p->home->name, id);

	if (op && jkey) {
		op->post = p;
		str_copy(op->id, id, sizeof(op->id));
		op->req =
		    etcd_kv_range(agent_etcd(c->a), jkey, false, undo_read, op);
	}
	if (op && op->req == NULL)
		op_free(op);
	free(jkey);
}

/* Claim the next free port for op; 0 when a txn is out, -1 when none. */
static int
claim_port(struct op *op)
{
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	char *okey, *pkey, *jkey, *value = NULL, *jvalue = NULL;
	struct etcd_txn *t;
	json_t *o;
	long i;
	int rc = -1;

	if ((i = free_port(p, 0)) < 0) {
		if ((i = other_port(p, agent_self(c->a), op->next_other)) < 0)
			return -1;
		op->next_other = i + 1;
	}
	op->port = i;
	okey = agent_key(c->a, "owner/%s", p->home->name);
	pkey = agent_key(
	    c->a, "ports/%s/%ld", p->home->name, p->home->media_port_base + i);
	jkey = agent_key(c->a, "calls/%s/%s", p->home->name, op->id);
	o = json_pack("{s:s,s:s,s:I,s:I,s:s}", "server", agent_self(c->a),
	    "call", op->id, "since", (json_int_t)time_wall_ms(), "epoch",
	    (json_int_t)op->epoch, "post", p->home->name);
	value = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	json_decref(op->journal);
	op->journal = journal_new(c, p, op, p->home->media_port_base + i);
	jvalue = op->journal ? json_dumps(op->journal, JSON_COMPACT) : NULL;
	t = etcd_kv_txn_new();
	/* the epoch travels with the claim: a stale owner's claim fails */
	if (okey && pkey && jkey && value && jvalue && t &&
	    etcd_kv_txn_compare(t, okey, ETCD_CMP_MOD, ETCD_CMP_EQUAL,
		op->epoch, NULL, 0) == 0 &&
	    etcd_kv_txn_compare(
		t, pkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0) == 0 &&
	    /* one durable start per call, however often this is sent */
	    etcd_kv_txn_compare(
		t, jkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, pkey, value, strlen(value),
		agent_lease_id(c->a)) == 0 &&
	    /* the durable start: no lease, it outlives this server */
	    etcd_kv_txn_put(t, true, jkey, jvalue, strlen(jvalue), 0) == 0 &&
	    etcd_kv_txn_get(t, false, pkey, false) == 0 &&
	    etcd_kv_txn_get(t, false, jkey, false) == 0) {
		op->req =
		    etcd_kv_txn_commit(agent_etcd(c->a), t, claim_done, op);
		t = NULL;
		if (op->req) {
			p->ports[i].reserved = true;
			rc = 0;
		}
	}
	etcd_kv_txn_free(t);
	free(okey);
	free(pkey);
	free(jkey);
	free(value);
	free(jvalue);
	return rc;
}

int
calls_place(struct calls *c, const char *rp, const char *caller,
    struct calls_result *r, calls_cb cb, void *arg)
{
	struct agent_post *p = agent_post_by_route_point(c->a, rp);
	struct calls_info info = {"http", rp, caller ? caller : ""};

	if (p == NULL) {
		result_init(r, US_ENOTFOUND, NULL);
		snprintf(
		    r->message, sizeof(r->message), "no route point %s", rp);
		return r->err;
	}
	return calls_place_post(c, p, &info, r, cb, arg);
}

int
calls_place_post(struct calls *c, struct agent_post *p,
    const struct calls_info *info, struct calls_result *r, calls_cb cb,
    void *arg)
{
	int64_t epoch;
	struct op *op;

	if (!agent_owns(c->a, p, &epoch))
		return not_owner(c, p, r);
	if ((op = op_new(c, cb, arg)) == NULL) {
		result_init(r, US_ENOMEM, "out of memory");
		return r->err;
	}
	op->post = p;
	op->epoch = epoch;
	op->start = time_wall_ms();
	str_copy(op->origin, info->origin, sizeof(op->origin));
	str_copy(op->route_point, info->route_point, sizeof(op->route_point));
	str_copy(
	    op->caller, info->caller ? info->caller : "", sizeof(op->caller));
	snprintf(op->id, sizeof(op->id), "%s-%" PRIx64 "-%u", agent_self(c->a),
	    (uint64_t)time_wall_ms(), ++c->seq);
	if (free_port(p, 0) < 0 && other_port(p, agent_self(c->a), 0) < 0) {
		busy_record(c, p, op);
		op_free(op);
		result_init(r, US_EBUSY, NULL);
		snprintf(r->message, sizeof(r->message),
		    "all %ld ports of %s are busy", p->home->media_ports,
		    p->home->name);
		return r->err;
	}
	if (claim_port(op) != 0) {
		op_free(op);
		result_init(
		    r, US_EUNAVAIL, "cannot reach the coordination store");
		return r->err;
	}
	return 0;
}

static struct etcd_req *end_txn(struct calls *c, struct call *k, struct op *op);

/* The record the failed txn read back is this server's end of k. */
static bool
own_end(struct calls *c, const struct call *k, const struct etcd_res *res)
{
	const struct etcd_kv *rkv = NULL;
	const char *by = "", *status = "";
	bool own;
	json_t *o;

	for (size_t i = 0; i < res->n_kvs; i++)
		if (strstr(res->kvs[i].key, k->id))
			rkv = &res->kvs[i];
	if (rkv == NULL)
		return false;
	o = json_loadb(rkv->value, rkv->value_len, 0, NULL);
	json_unpack(o, "{s:s,s:s}", "closed_by", &by, "status", &status);
	own = strcmp(by, agent_self(c->a)) == 0 &&
	    (strcmp(status, "NORMAL") == 0 ||
		strcmp(status, "TRANSFERRED") == 0);
	json_decref(o);
	return own;
}

static void
end_done(const struct etcd_res *res, void *arg)
{
	struct op *op = arg;
	struct calls *c = op->c;
	struct call *k = op->call;
	struct calls_result r;

	op->req = NULL;
	if (k == NULL) {
		result_init(
		    &r, US_ENOTFOUND, "the call was lost with the lease");
		answer(op, &r);
		return;
	}
	if (res->err) {
		/* sent again: the record's read-back tells a done end */
		if (++op->unknown <= CALLS_UNKNOWN_TRIES &&
		    (op->req = end_txn(c, k, op)) != NULL)
			return;
		k->ending = false;
		result_init(&r, US_EUNAVAIL, NULL);
		snprintf(r.message, sizeof(r.message), "ending call %s: %s",
		    k->id, us_strerror(res->err));
		answer(op, &r);
		return;
	}
	if (!res->succeeded && own_end(c, k, res)) {
		log_info(
		    "call %s: an end whose answer was lost was done", k->id);
	} else if (!res->succeeded) {
		/* its journal entry is gone: closed as lost with this server */
		log_warn(
		    "call %s was closed meanwhile as lost with this server",
		    k->id);
		result_init(&r, US_ENOTFOUND, NULL);
		snprintf(r.message, sizeof(r.message),
		    "call %s was lost with this server's lease", k->id);
		agent_port_set(
		    k->post, k->port, NULL, NULL, 0, 0, res->revision);
		c->lost++;
		call_remove(c, k);
		answer(op, &r);
		return;
	}
	result_init(&r, 0, NULL);
	str_copy(r.call, k->id, sizeof(r.call));
	str_copy(r.post, k->post->home->name, sizeof(r.post));
	str_copy(r.server, agent_self(c->a), sizeof(r.server));
	r.port = k->port;
	r.epoch = k->epoch;
	r.status = op->transferred ? "TRANSFERRED" : "NORMAL";
	c->ended[op->transferred]++;
	r.duration_ms = time_wall_ms() - k->started;
	agent_port_set(k->post, k->port, NULL, NULL, 0, 0, res->revision);
	call_remove(c, k);
	answer(op, &r);
}

/*
 * The txn that ends a call: its journal entry is still the one written
 * (no one closed it as lost), then port, journal entry and record change
 * together.
 */
static struct etcd_req *
end_txn(struct calls *c, struct call *k, struct op *op)
{
	const char *post = k->post->home->name;
	char *pkey = agent_key(c->a, "ports/%s/%ld", post, k->port),
	     *jkey = agent_key(c->a, "calls/%s/%s", post, k->id),
	     *rkey = records_key(c->rec, post, k->id), *value = NULL;
	json_t *rec =
	    records_from_journal(k->journal, time_wall_ms(), op->ended_by,
		op->transferred ? "TRANSFERRED" : "NORMAL", agent_self(c->a));
	struct etcd_txn *t = etcd_kv_txn_new();
	struct etcd_req *req = NULL;

	value = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	if (pkey && jkey && rkey && value && t &&
	    etcd_kv_txn_compare(t, jkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL,
		k->jrev, NULL, 0) == 0 &&
	    etcd_kv_txn_delete(t, true, pkey, false) == 0 &&
	    etcd_kv_txn_delete(t, true, jkey, false) == 0 &&
	    etcd_kv_txn_put(t, true, rkey, value, strlen(value), 0) == 0 &&
	    /* a failed compare shows whether this end was done before */
	    etcd_kv_txn_get(t, false, rkey, false) == 0) {
		req = etcd_kv_txn_commit(agent_etcd(c->a), t, end_done, op);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(pkey);
	free(jkey);
	free(rkey);
	free(value);
	return req;
}

int
calls_end(struct calls *c, const char *id, bool transferred, const char *origin,
    const char *ended_by, struct calls_result *r, calls_cb cb, void *arg)
{
	struct call *k = call_find(c, id);
	struct op *op;

	if (k == NULL) {
		struct agent_post *p;

		/* held by another server: say which */
		for (size_t i = 0; (p = agent_post_at(c->a, i)) != NULL; i++)
			for (long n = 0; n < p->n_ports; n++)
				if (p->ports[n].busy &&
				    strcmp(p->ports[n].call, id) == 0) {
					result_init(r, US_ENOTOWNER, NULL);
					str_copy(r->server, p->ports[n].server,
					    sizeof(r->server));
					snprintf(r->message, sizeof(r->message),
					    "call %s is on %s", id,
					    p->ports[n].server);
					return r->err;
				}
		result_init(r, US_ENOTFOUND, NULL);
		snprintf(r->message, sizeof(r->message),
		    "no call %s (it ended, or was lost with its server)", id);
		return r->err;
	}
	if (strcmp(k->origin, "sip") == 0 && strcmp(origin, "sip") != 0 &&
	    (transferred || c->hangup == NULL)) {
		result_init(r, US_EINVAL, NULL);
		snprintf(r->message, sizeof(r->message),
		    "call %s is a SIP call: %s", id,
		    transferred ? "its caller's side transfers it (REFER is "
				  "not supported)"
				: "it ends when a side hangs up (BYE)");
		return r->err;
	}
	if (k->ending) {
		result_init(r, US_EINVAL, NULL);
		snprintf(
		    r->message, sizeof(r->message), "call %s is ending", id);
		return r->err;
	}
	if ((op = op_new(c, cb, arg)) == NULL) {
		result_init(r, US_ENOMEM, "out of memory");
		return r->err;
	}
	op->call = k;
	op->transferred = transferred;
	str_copy(op->ended_by, ended_by, sizeof(op->ended_by));
	/* ended from elsewhere: the caller's leg gets our BYE first */
	if (strcmp(k->origin, "sip") == 0 && strcmp(origin, "sip") != 0)
		c->hangup(id, c->hangup_arg);
	if ((op->req = end_txn(c, k, op)) == NULL) {
		op_free(op);
		result_init(
		    r, US_EUNAVAIL, "cannot reach the coordination store");
		return r->err;
	}
	k->ending = true;
	return 0;
}

void
calls_reap(struct calls *c)
{
	const char *self = agent_self(c->a);
	int64_t lease = agent_lease_id(c->a);
	struct agent_post *p;

	for (size_t i = 0; (p = agent_post_at(c->a, i)) != NULL; i++)
		for (long n = 0; n < p->n_ports; n++) {
			struct agent_port *pt = &p->ports[n];
			bool out = false;

			if (!pt->busy || pt->reserved || pt->lease != lease ||
			    lease == 0 || strcmp(pt->server, self) != 0 ||
			    call_find(c, pt->call))
				continue;
			for (struct op *op = c->ops; op && !out; op = op->next)
				out = strcmp(op->id, pt->call) == 0;
			if (out)
				continue; /* its claim, end or undo is out */
			log_warn("call %s: port %ld of %s is held with no call "
				 "(a claim given up, done late): freeing it",
			    pt->call, p->home->media_port_base + n,
			    p->home->name);
			undo_claim(c, p, pt->call);
		}
}

void
calls_forget(struct calls *c, void *arg)
{
	for (struct op *op = c->ops; op; op = op->next)
		if (op->arg == arg)
			op->cb = NULL;
}

void
calls_lease_lost(struct calls *c)
{
	while (c->calls) {
		struct call *k = c->calls;

		c->lost++;
		log_warn("call %s on port %ld of %s is lost with the lease",
		    k->id, k->port, k->post->home->name);
		/* the keys go with the lease; the watch confirms it later */
		agent_port_set(k->post, k->port, NULL, NULL, 0, 0,
		    k->post->ports[k->port - k->post->home->media_port_base]
			.rev);
		c->calls = k->next;
		json_decref(k->journal);
		free(k);
	}
	for (struct op *op = c->ops; op; op = op->next)
		if (op->call)
			op->call = NULL;
}

/* After every reconcile of the agent. */
static void
reconciled(void *arg)
{
	struct calls *c = arg;

	records_sweep(c->rec);
	calls_reap(c);
}

/* An end whose answer is not in yet: its outbox entry stays as proof. */
static bool
ending(const char *call, void *arg)
{
	struct call *k = call_find(arg, call);

	return k && k->ending;
}

struct calls *
calls_new(struct agent *a, struct records *rec)
{
	struct calls *c = calloc(1, sizeof(*c));

	if (c) {
		c->a = a;
		c->rec = rec;
		agent_on_reconciled(a, reconciled, c);
		records_hold(rec, ending, c);
	}
	return c;
}

void
calls_free(struct calls *c)
{
	if (c == NULL)
		return;
	agent_on_reconciled(c->a, NULL, NULL);
	records_hold(c->rec, NULL, NULL);
	while (c->ops) {
		etcd_req_cancel(c->ops->req);
		op_free(c->ops);
	}
	while (c->calls)
		call_remove(c, c->calls);
	free(c);
}

json_t *
calls_json(const struct calls *c)
{
	json_t *arr = json_array();

	for (const struct call *k = c->calls; k; k = k->next) {
		char since[32];

		time_iso8601(k->started, since, sizeof(since));
		json_array_append_new(arr,
		    json_pack("{s:s,s:s,s:I,s:I,s:s,s:s}", "call", k->id,
			"post", k->post->home->name, "port",
			(json_int_t)k->port, "epoch", (json_int_t)k->epoch,
			"since", since, "origin", k->origin));
	}
	return arr;
}

void
calls_counters(const struct calls *c, uint64_t placed[2], uint64_t ended[2],
    uint64_t *lost, uint64_t *active)
{
	uint64_t n = 0;

	for (const struct call *k = c->calls; k; k = k->next)
		n++;
	placed[0] = c->placed[0];
	placed[1] = c->placed[1];
	ended[0] = c->ended[0];
	ended[1] = c->ended[1];
	*lost = c->lost;
	*active = n;
}

uint64_t
calls_busy(const struct calls *c)
{
	return c->busy;
}

void
calls_set_hangup(
    struct calls *c, void (*fn)(const char *call, void *arg), void *arg)
{
	c->hangup = fn;
	c->hangup_arg = arg;
}

double
calls_per_second(const struct calls *c)
{
	uint64_t sec = time_mono_ms() / 1000, n = 0;

	/* the last CALLS_RATE_S whole seconds, not the one under way */
	for (size_t i = 0; i < CALLS_RATE_S; i++)
		if (c->rate_sec[i] < sec &&
		    sec - c->rate_sec[i] <= CALLS_RATE_S)
			n += c->rate[i];
	return (double)n / CALLS_RATE_S;
}
