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
/*
 * Calls per txn, at most: each is a nested txn of 2 compares and 2 ops
 * a branch, beside the outer one's compare: 64 fit in etcd's default
 * --max-txn-ops (128), and the request stays near 100 KB.
 */
#define CALLS_BATCH_MAX 64
#define CALLS_BUSY_QUEUE_MAX 10000 /* BUSY records waiting for etcd */
#define CALLS_LAG_TICK_MS 100

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
	char *record; /* of an end: its record, as sent */
	calls_cb cb;
	void *arg;
	struct etcd_req *req; /* an undo's */
	struct op *qnext; /* in its queue, waiting for a txn */
	bool queued;
	bool waits; /* counted in calls->waiting */
	struct batch *batch; /* the txn carrying it */
	struct op *next;
};

/*
 * One txn carrying the claims of many calls on one post (the post's
 * epoch compared once), or the ends of many calls: each call's part is a
 * nested txn that holds or fails alone. At most one claim batch per post
 * and one end batch are out at a time: what comes meanwhile waits in the
 * queues and goes into the next one (group commit).
 */
struct batch {
	struct calls *c;
	bool end;
	struct agent_post *post; /* of the claims */
	int64_t epoch;
	struct op *ops[CALLS_BATCH_MAX];
	size_t n;
	unsigned unknown; /* sends whose outcome was not known */
	struct etcd_req *req;
	struct batch *next;
};

/* A BUSY record waiting for its txn. */
struct busyrec {
	char *key, *value;
	char id[64];
	struct busyrec *next;
};

struct calls {
	struct agent *a;
	struct records *rec;
	struct call *calls;
	struct op *ops;
	struct op *claimq, *endq; /* waiting for a txn, oldest first */
	struct batch *batches; /* out now */
	size_t waiting[2]; /* claims, ends not answered yet (queued or out) */
	uint64_t txns[2]; /* txns sent: of claims, of ends */
	uint64_t txn_calls[2]; /* calls they carried */
	uint64_t txn_hist[2][CALLS_TXN_BUCKETS]; /* txns by calls carried */
	uv_timer_t *flush_timer; /* its own: freed once closed */
	uv_timer_t *lag_timer; /* due every CALLS_LAG_TICK_MS */
	uint64_t lag_due; /* monotonic ms it is due next */
	uint64_t lag; /* ms it fired late last */
	uint64_t overload[2]; /* calls refused: backlog, loop lag */
	struct busyrec *busyq, **busyq_tail; /* BUSY records to write */
	size_t n_busyq;
	struct busyrec *busy_out; /* in the txn out */
	struct etcd_req *busy_req;
	unsigned busy_unknown;
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

/* Take op out of the queue it waits in. */
static void
unqueue(struct op *op)
{
	struct op **pp = op->record ? &op->c->endq : &op->c->claimq;

	if (!op->queued)
		return;
	for (; *pp; pp = &(*pp)->qnext)
		if (*pp == op) {
			*pp = op->qnext;
			break;
		}
	op->queued = false;
	op->qnext = NULL;
}

static void
op_free(struct op *op)
{
	struct op **pp;

	for (pp = &op->c->ops; *pp; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	unqueue(op);
	if (op->batch) /* the batch's answer skips it */
		for (size_t i = 0; i < op->batch->n; i++)
			if (op->batch->ops[i] == op)
				op->batch->ops[i] = NULL;
	if (op->waits)
		op->c->waiting[op->record != NULL]--;
	json_decref(op->journal);
	free(op->record);
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

static void flush_soon(struct calls *c);

/*
 * A call refused, for want of a port (ended_by "busy") or because this
 * server is overloaded ("overload"): its record, BUSY, queued for the
 * next txn of records.
 */
static void
busy_record(struct calls *c, struct agent_post *p, const struct op *op,
    const char *ended_by)
{
	json_t *j = journal_new(c, p, op, -1),
	       *rec = j ? records_from_journal(j, time_wall_ms(), ended_by,
			      "BUSY", agent_self(c->a))
			: NULL;
	struct busyrec *b = NULL;

	if (strcmp(ended_by, "busy") == 0)
		c->busy++;
	if (c->n_busyq >= CALLS_BUSY_QUEUE_MAX) {
		log_error("call %s: its BUSY record is not written: "
			  "%d records wait for etcd already (ETOOMANY)",
		    op->id, CALLS_BUSY_QUEUE_MAX);
	} else if (rec && (b = calloc(1, sizeof(*b))) != NULL &&
	    (b->key = records_key(c->rec, p->home->name, op->id)) != NULL &&
	    (b->value = json_dumps(rec, JSON_COMPACT)) != NULL) {
		str_copy(b->id, op->id, sizeof(b->id));
		*c->busyq_tail = b;
		c->busyq_tail = &b->next;
		c->n_busyq++;
		b = NULL;
		flush_soon(c);
	} else {
		log_error("call %s: its BUSY record is not written: out of "
			  "memory",
		    op->id);
	}
	if (b) {
		free(b->key);
		free(b);
	}
	json_decref(j);
	json_decref(rec);
}

static void
busyrec_free(struct busyrec *b)
{
	free(b->key);
	free(b->value);
	free(b);
}

static void busy_send(struct calls *c);

static void
busy_done(const struct etcd_res *res, void *arg)
{
	struct calls *c = arg;
	struct busyrec *b;

	c->busy_req = NULL;
	/* a put again is harmless: the same record under the same key */
	if (res->err && ++c->busy_unknown <= CALLS_UNKNOWN_TRIES) {
		busy_send(c);
		if (c->busy_req)
			return;
	}
	while ((b = c->busy_out) != NULL) {
		if (res->err)
			log_warn(
			    "the BUSY record of call %s was not written: %s",
			    b->id, us_strerror(res->err));
		c->busy_out = b->next;
		busyrec_free(b);
	}
	c->busy_unknown = 0;
	flush_soon(c);
}

/* Send the records in c->busy_out in one txn of puts. */
static void
busy_send(struct calls *c)
{
	struct etcd_txn *t = etcd_kv_txn_new();
	int rc = t ? 0 : US_ENOMEM;

	for (struct busyrec *b = c->busy_out; b && rc == 0; b = b->next)
		rc = etcd_kv_txn_put(
		    t, true, b->key, b->value, strlen(b->value), 0);
	if (rc == 0)
		c->busy_req =
		    etcd_kv_txn_commit(agent_etcd(c->a), t, busy_done, c);
	else
		etcd_kv_txn_free(t);
}

/* The BUSY records that wait, CALLS_BATCH_MAX a txn, one txn out. */
static void
busy_flush(struct calls *c)
{
	static const struct etcd_res failed = {.err = US_ENOMEM};
	struct busyrec **pp = &c->busy_out;

	if (c->busy_req || c->busy_out || c->busyq == NULL)
		return;
	for (size_t n = 0; c->busyq && n < CALLS_BATCH_MAX; n++) {
		*pp = c->busyq;
		c->busyq = c->busyq->next;
		pp = &(*pp)->next;
		*pp = NULL;
		c->n_busyq--;
	}
	if (c->busyq == NULL)
		c->busyq_tail = &c->busyq;
	c->busy_unknown = 0;
	busy_send(c);
	if (c->busy_req == NULL) {
		c->busy_unknown = CALLS_UNKNOWN_TRIES;
		busy_done(&failed, c);
	}
}

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

/* Queue op for the next txn of its kind (at the head: a retry). */
static void
enqueue(struct op *op, bool head)
{
	struct op **pp = op->record ? &op->c->endq : &op->c->claimq;

	if (!head)
		while (*pp)
			pp = &(*pp)->qnext;
	op->qnext = *pp;
	*pp = op;
	op->queued = true;
	flush_soon(op->c);
}

/*
 * Pick the port op claims next, and its journal entry; the port is
 * reserved until the answer. 0, or -1 when no port is left to try.
 */
static int
claim_prepare(struct op *op)
{
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	long i;

	if ((i = free_port(p, 0)) < 0) {
		if ((i = other_port(p, agent_self(c->a), op->next_other)) < 0)
			return -1;
		op->next_other = i + 1;
	}
	json_decref(op->journal);
	if ((op->journal = journal_new(
		 c, p, op, p->home->media_port_base + i)) == NULL)
		return -1;
	op->port = i;
	p->ports[i].reserved = true;
	return 0;
}

/* A claim that cannot be known to be made: undone, whether it was. */
static void
claim_fail(struct op *op, const char *why)
{
	struct calls_result r;
	char msg[160];

	snprintf(msg, sizeof(msg), "call %s: taking a port of %s: %s", op->id,
	    op->post->home->name, why);
	log_warn("%s; its claim is undone if it was made", msg);
	undo_claim(op->c, op->post, op->id);
	result_init(&r, US_EUNAVAIL, msg);
	answer(op, &r);
}

/* What op's nested txn in a claim batch gave (sub), at revision rev. */
static void
claim_one(struct op *op, const struct etcd_res *sub, int64_t rev)
{
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	const struct etcd_kv *jkv;
	struct calls_result r;
	json_t *journal;

	if (sub == NULL) {
		claim_fail(op, "its part of the txn got no answer");
		return;
	}
	if (sub->succeeded) {
		journal = op->journal;
		op->journal = NULL; /* the call holds it now */
		call_taken(
		    op, p->home->media_port_base + op->port, journal, rev, rev);
		return;
	}
	if ((jkv = kv_with(sub, "/calls/")) != NULL) {
		/* an earlier send of this claim was done: its answer was lost
		 */
		json_t *j = json_loadb(jkv->value, jkv->value_len, 0, NULL);
		json_int_t port = -1;

		json_unpack(j, "{s:I}", "port", &port);
		if (j == NULL || port < p->home->media_port_base ||
		    port >= p->home->media_port_base + p->n_ports) {
			json_decref(j);
			claim_fail(op, "its journal entry is unreadable");
			return;
		}
		log_info("call %s: a claim whose answer was lost was done "
			 "(port %" JSON_INTEGER_FORMAT ")",
		    op->id, port);
		call_taken(op, (long)port, j, jkv->create_revision, rev);
		return;
	}
	/* another call took the port first: the next free one */
	if (kv_with(sub, "/ports/"))
		p->ports[op->port].busy = true;
	if (++op->attempts <= (unsigned)p->home->media_ports &&
	    claim_prepare(op) == 0) {
		enqueue(op, true);
		return;
	}
	busy_record(c, p, op, "busy");
	result_init(&r, US_EBUSY, NULL);
	snprintf(r.message, sizeof(r.message), "all %ld ports of %s are busy",
	    p->home->media_ports, p->home->name);
	answer(op, &r);
}

/* The nested txn of op's claim: port and journal entry, both new. */
static struct etcd_txn *
claim_txn(struct op *op)
{
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	char *pkey = agent_key(c->a, "ports/%s/%ld", p->home->name,
		 p->home->media_port_base + op->port),
	     *jkey = agent_key(c->a, "calls/%s/%s", p->home->name, op->id),
	     *value = NULL, *jvalue = NULL;
	json_t *o =
	    json_pack("{s:s,s:s,s:I,s:I,s:s}", "server", agent_self(c->a),
		"call", op->id, "since", (json_int_t)time_wall_ms(), "epoch",
		(json_int_t)op->epoch, "post", p->home->name);
	struct etcd_txn *t = etcd_kv_txn_new();

	value = o ? json_dumps(o, JSON_COMPACT) : NULL;
	jvalue = op->journal ? json_dumps(op->journal, JSON_COMPACT) : NULL;
	if (!(pkey && jkey && value && jvalue && t &&
		etcd_kv_txn_compare(t, pkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0,
		    NULL, 0) == 0 &&
		/* one durable start per call, however often this is sent */
		etcd_kv_txn_compare(t, jkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0,
		    NULL, 0) == 0 &&
		etcd_kv_txn_put(t, true, pkey, value, strlen(value),
		    agent_lease_id(c->a)) == 0 &&
		/* the durable start: no lease, it outlives this server */
		etcd_kv_txn_put(t, true, jkey, jvalue, strlen(jvalue), 0) ==
		    0 &&
		etcd_kv_txn_get(t, false, pkey, false) == 0 &&
		etcd_kv_txn_get(t, false, jkey, false) == 0)) {
		etcd_kv_txn_free(t);
		t = NULL;
	}
	json_decref(o);
	free(pkey);
	free(jkey);
	free(value);
	free(jvalue);
	return t;
}

/* ---- batches: many calls' claims, or ends, in one txn ---- */

static void batch_done(const struct etcd_res *res, void *arg);
static struct etcd_txn *end_txn(struct op *op);

static void
batch_free(struct batch *b)
{
	for (struct batch **pp = &b->c->batches; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	for (size_t i = 0; i < b->n; i++)
		if (b->ops[i])
			b->ops[i]->batch = NULL;
	free(b);
}

/*
 * Send b's txn (again): its calls still there, each one's part a nested
 * txn, in order (the answers come back in that order). 0, or -1 when it
 * cannot be built.
 */
static int
batch_send(struct batch *b)
{
	struct calls *c = b->c;
	struct etcd_txn *t;
	char *okey = NULL;
	size_t n = 0, k;
	int rc = 0;

	for (size_t i = 0; b->end && i < b->n; i++) {
		struct op *op = b->ops[i];
		struct calls_result r;

		if (op && op->call == NULL) {
			/* lost with the lease while it waited */
			b->ops[i] = NULL;
			op->batch = NULL;
			result_init(&r, US_ENOTFOUND,
			    "the call was lost with the lease");
			answer(op, &r);
		}
	}
	for (size_t i = 0; i < b->n; i++)
		if (b->ops[i])
			b->ops[i - n] = b->ops[i];
		else
			n++;
	b->n -= n;
	if (b->n == 0)
		return -1;
	if ((t = etcd_kv_txn_new()) == NULL)
		return -1;
	if (!b->end) {
		okey = agent_key(c->a, "owner/%s", b->post->home->name);
		/* the epoch travels with the claims: a stale owner's fail */
		rc = okey ? etcd_kv_txn_compare(t, okey, ETCD_CMP_MOD,
				ETCD_CMP_EQUAL, b->epoch, NULL, 0)
			  : US_ENOMEM;
		free(okey);
	}
	for (size_t i = 0; rc == 0 && i < b->n; i++)
		rc = etcd_kv_txn_nest(t, true,
		    b->end ? end_txn(b->ops[i]) : claim_txn(b->ops[i]));
	if (rc != 0) {
		log_warn("calls: a txn of %zu calls cannot be built: %s", b->n,
		    us_strerror(rc));
		etcd_kv_txn_free(t);
		return -1;
	}
	if ((b->req = etcd_kv_txn_commit(agent_etcd(c->a), t, batch_done, b)) ==
	    NULL)
		return -1;
	c->txns[b->end]++;
	c->txn_calls[b->end] += b->n;
	for (k = 0; k + 1 < CALLS_TXN_BUCKETS && b->n > (1u << k); k++)
		;
	c->txn_hist[b->end][k]++;
	return 0;
}

/* Whether a batch of this kind (claims of post p, or ends) is out. */
static bool
batch_out(const struct calls *c, bool end, const struct agent_post *p)
{
	for (const struct batch *b = c->batches; b; b = b->next)
		if (b->end == end && (end || b->post == p))
			return true;
	return false;
}

static void claim_answer(struct batch *b, const struct etcd_res *res);
static void end_answer(struct batch *b, const struct etcd_res *res);

/*
 * Send what waits: the oldest claims of each post with no batch out, the
 * oldest ends if no end batch is out, CALLS_BATCH_MAX calls a txn.
 */
static void
flush(struct calls *c)
{
	static const struct etcd_res failed = {.err = US_ENOMEM};
	struct batch *b;

	for (;;) {
		struct op *op, **pp, **q = NULL;
		bool end = false;

		for (op = c->claimq; op && q == NULL; op = op->qnext)
			if (!batch_out(c, false, op->post))
				q = &c->claimq;
		if (q == NULL && c->endq && !batch_out(c, true, NULL)) {
			q = &c->endq;
			end = true;
		}
		if (q == NULL) {
			busy_flush(c);
			return;
		}
		if ((b = calloc(1, sizeof(*b))) == NULL) {
			flush_soon(c); /* try again next turn */
			return;
		}
		b->c = c;
		b->end = end;
		if (!end)
			for (op = c->claimq; op && b->post == NULL;
			     op = op->qnext)
				if (!batch_out(c, false, op->post)) {
					b->post = op->post;
					b->epoch = op->epoch;
				}
		for (pp = q; *pp && b->n < CALLS_BATCH_MAX;) {
			op = *pp;
			if (!end &&
			    (op->post != b->post || op->epoch != b->epoch)) {
				pp = &op->qnext;
				continue;
			}
			*pp = op->qnext;
			op->qnext = NULL;
			op->queued = false;
			op->batch = b;
			b->ops[b->n++] = op;
		}
		b->next = c->batches;
		c->batches = b;
		if (batch_send(b) != 0) {
			if (end)
				end_answer(b, &failed);
			else
				claim_answer(b, &failed);
		}
	}
}

static void
flush_cb(uv_timer_t *t)
{
	flush(t->data);
}

/* Flush on the next loop turn: what else comes in this one joins. */
static void
flush_soon(struct calls *c)
{
	if (c->flush_timer && !uv_is_active((uv_handle_t *)c->flush_timer))
		uv_timer_start(c->flush_timer, flush_cb, 0, 0);
}

/* The answer of a claim batch, for each call it carried. */
static void
claim_answer(struct batch *b, const struct etcd_res *res)
{
	struct calls *c = b->c;
	struct agent_post *p = b->post;
	struct calls_result r;

	for (size_t i = 0; i < b->n; i++) {
		struct op *op = b->ops[i];

		if (op == NULL)
			continue; /* its caller went */
		op->batch = NULL;
		b->ops[i] = NULL;
		p->ports[op->port].reserved = false;
		if (res->err) {
			claim_fail(op, us_strerror(res->err));
		} else if (!res->succeeded) {
			/* the post moved: unless this server's view lags */
			if (agent_owns(c->a, p, NULL) &&
			    p->epoch == op->epoch &&
			    ++op->attempts <= (unsigned)p->home->media_ports &&
			    claim_prepare(op) == 0) {
				enqueue(op, true);
				continue;
			}
			not_owner(c, p, &r);
			answer(op, &r);
		} else {
			claim_one(op, i < res->n_subs ? &res->subs[i] : NULL,
			    res->revision);
		}
	}
	batch_free(b);
}

static void
batch_done(const struct etcd_res *res, void *arg)
{
	struct batch *b = arg;
	struct calls *c = b->c;
	struct agent_post *p = b->post;

	b->req = NULL;
	/*
	 * done, not done or unknown: the same txn sent again tells (a claim
	 * already made shows its journal entry, an end its record)
	 */
	if (res->err && ++b->unknown <= CALLS_UNKNOWN_TRIES &&
	    (b->end || (agent_owns(c->a, p, NULL) && p->epoch == b->epoch)) &&
	    batch_send(b) == 0)
		return;
	if (b->end)
		end_answer(b, res);
	else
		claim_answer(b, res);
	flush(c);
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

/* How late the loop runs now, in ms: the lag timer's last lateness. */
static uint64_t
lag_ms(const struct calls *c)
{
	uint64_t now = time_mono_ms(),
		 late = now > c->lag_due ? now - c->lag_due : 0;

	return late > c->lag ? late : c->lag;
}

/*
 * Why a new call is refused at once (counted), or NULL: too many calls
 * wait for etcd, or the loop runs too late to answer in time.
 */
static const char *
overloaded(struct calls *c)
{
	const struct config_cluster *cl = &agent_config(c->a)->cluster;
	static char why[96];
	uint64_t lag;

	if (c->waiting[0] >= (size_t)cl->calls_backlog_max) {
		c->overload[0]++;
		snprintf(
		    why, sizeof(why), "%zu calls wait for etcd", c->waiting[0]);
		return why;
	}
	if (cl->loop_lag_max > 0 &&
	    (lag = lag_ms(c)) > (uint64_t)cl->loop_lag_max) {
		c->overload[1]++;
		snprintf(
		    why, sizeof(why), "its loop runs %" PRIu64 " ms late", lag);
		return why;
	}
	return NULL;
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
	const char *why;
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
	if ((why = overloaded(c)) != NULL) {
		busy_record(c, p, op, "overload");
		op_free(op);
		result_init(r, US_EBUSY, NULL);
		r->overload = true;
		snprintf(r->message, sizeof(r->message),
		    "%s is overloaded (%s): try again later", agent_self(c->a),
		    why);
		return r->err;
	}
	if (free_port(p, 0) < 0 && other_port(p, agent_self(c->a), 0) < 0) {
		busy_record(c, p, op, "busy");
		op_free(op);
		result_init(r, US_EBUSY, NULL);
		snprintf(r->message, sizeof(r->message),
		    "all %ld ports of %s are busy", p->home->media_ports,
		    p->home->name);
		return r->err;
	}
	if (claim_prepare(op) != 0) {
		op_free(op);
		result_init(r, US_ENOMEM, "out of memory");
		return r->err;
	}
	op->waits = true;
	c->waiting[0]++;
	enqueue(op, false);
	return 0;
}

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

/* What op's nested txn in an end batch gave (sub), at revision rev. */
static void
end_one(struct op *op, const struct etcd_res *sub, int64_t rev)
{
	struct calls *c = op->c;
	struct call *k = op->call;
	struct calls_result r;

	if (sub == NULL) {
		k->ending = false;
		result_init(&r, US_EUNAVAIL, NULL);
		snprintf(r.message, sizeof(r.message),
		    "ending call %s: its part of the txn got no answer", k->id);
		answer(op, &r);
		return;
	}
	if (!sub->succeeded && own_end(c, k, sub)) {
		log_info(
		    "call %s: an end whose answer was lost was done", k->id);
	} else if (!sub->succeeded) {
		/* its journal entry is gone: closed as lost with this server */
		log_warn(
		    "call %s was closed meanwhile as lost with this server",
		    k->id);
		result_init(&r, US_ENOTFOUND, NULL);
		snprintf(r.message, sizeof(r.message),
		    "call %s was lost with this server's lease", k->id);
		agent_port_set(k->post, k->port, NULL, NULL, 0, 0, rev);
		c->lost++;
		call_remove(c, k);
		op->call = NULL;
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
	agent_port_set(k->post, k->port, NULL, NULL, 0, 0, rev);
	call_remove(c, k);
	op->call = NULL;
	answer(op, &r);
}

/* The answer of an end batch, for each call it carried. */
static void
end_answer(struct batch *b, const struct etcd_res *res)
{
	struct calls_result r;

	for (size_t i = 0; i < b->n; i++) {
		struct op *op = b->ops[i];

		if (op == NULL)
			continue;
		op->batch = NULL;
		b->ops[i] = NULL;
		if (op->call == NULL) {
			result_init(&r, US_ENOTFOUND,
			    "the call was lost with the lease");
			answer(op, &r);
		} else if (res->err) {
			op->call->ending = false;
			result_init(&r, US_EUNAVAIL, NULL);
			snprintf(r.message, sizeof(r.message),
			    "ending call %s: %s", op->call->id,
			    us_strerror(res->err));
			answer(op, &r);
		} else {
			end_one(op, i < res->n_subs ? &res->subs[i] : NULL,
			    res->revision);
		}
	}
	batch_free(b);
}

/*
 * The nested txn that ends op's call: its journal entry is still the one
 * written (no one closed it as lost), then port, journal entry and record
 * change together.
 */
static struct etcd_txn *
end_txn(struct op *op)
{
	struct calls *c = op->c;
	struct call *k = op->call;
	const char *post = k->post->home->name;
	char *pkey = agent_key(c->a, "ports/%s/%ld", post, k->port),
	     *jkey = agent_key(c->a, "calls/%s/%s", post, k->id),
	     *rkey = records_key(c->rec, post, k->id);
	struct etcd_txn *t = etcd_kv_txn_new();

	if (!(pkey && jkey && rkey && t &&
		etcd_kv_txn_compare(t, jkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL,
		    k->jrev, NULL, 0) == 0 &&
		etcd_kv_txn_delete(t, true, pkey, false) == 0 &&
		etcd_kv_txn_delete(t, true, jkey, false) == 0 &&
		etcd_kv_txn_put(
		    t, true, rkey, op->record, strlen(op->record), 0) == 0 &&
		/* a failed compare shows whether this end was done before */
		etcd_kv_txn_get(t, false, rkey, false) == 0)) {
		etcd_kv_txn_free(t);
		t = NULL;
	}
	free(pkey);
	free(jkey);
	free(rkey);
	return t;
}

int
calls_end(struct calls *c, const char *id, bool transferred, const char *origin,
    const char *ended_by, struct calls_result *r, calls_cb cb, void *arg)
{
	struct call *k = call_find(c, id);
	struct op *op;
	json_t *rec;

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
	rec = records_from_journal(k->journal, time_wall_ms(), op->ended_by,
	    transferred ? "TRANSFERRED" : "NORMAL", agent_self(c->a));
	op->record = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	if (op->record == NULL) {
		op_free(op);
		result_init(r, US_ENOMEM, "out of memory");
		return r->err;
	}
	k->ending = true;
	op->waits = true;
	c->waiting[1]++;
	enqueue(op, false);
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

static void
timer_closed(uv_handle_t *h)
{
	free(h);
}

static void
lag_tick(uv_timer_t *t)
{
	struct calls *c = t->data;
	uint64_t now = time_mono_ms();

	c->lag = now > c->lag_due ? now - c->lag_due : 0;
	c->lag_due = now + CALLS_LAG_TICK_MS;
}

struct calls *
calls_new(uv_loop_t *loop, struct agent *a, struct records *rec)
{
	struct calls *c = calloc(1, sizeof(*c));

	if (c &&
	    ((c->flush_timer = malloc(sizeof(*c->flush_timer))) == NULL ||
		(c->lag_timer = malloc(sizeof(*c->lag_timer))) == NULL)) {
		free(c->flush_timer);
		free(c);
		c = NULL;
	}
	if (c) {
		uv_timer_init(loop, c->flush_timer);
		c->flush_timer->data = c;
		uv_timer_init(loop, c->lag_timer);
		c->lag_timer->data = c;
		c->lag_due = time_mono_ms() + CALLS_LAG_TICK_MS;
		uv_timer_start(c->lag_timer, lag_tick, CALLS_LAG_TICK_MS,
		    CALLS_LAG_TICK_MS);
		c->busyq_tail = &c->busyq;
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
	while (c->batches) {
		etcd_req_cancel(c->batches->req);
		batch_free(c->batches);
	}
	while (c->ops) {
		etcd_req_cancel(c->ops->req);
		op_free(c->ops);
	}
	etcd_req_cancel(c->busy_req);
	while (c->busy_out) {
		struct busyrec *b = c->busy_out;

		c->busy_out = b->next;
		busyrec_free(b);
	}
	while (c->busyq) {
		struct busyrec *b = c->busyq;

		c->busyq = b->next;
		busyrec_free(b);
	}
	uv_close((uv_handle_t *)c->flush_timer, timer_closed);
	uv_close((uv_handle_t *)c->lag_timer, timer_closed);
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

void
calls_txn_counters(const struct calls *c, uint64_t txns[2], uint64_t carried[2],
    uint64_t hist[2][CALLS_TXN_BUCKETS])
{
	for (int i = 0; i < 2; i++) {
		txns[i] = c->txns[i];
		carried[i] = c->txn_calls[i];
		for (int k = 0; k < CALLS_TXN_BUCKETS; k++)
			hist[i][k] = c->txn_hist[i][k];
	}
}

size_t
calls_waiting(const struct calls *c, bool ends)
{
	return c->waiting[ends];
}

void
calls_overload_counters(const struct calls *c, uint64_t refused[2],
    uint64_t *lag_ms_now, size_t *records_waiting)
{
	refused[0] = c->overload[0];
	refused[1] = c->overload[1];
	*lag_ms_now = lag_ms(c);
	*records_waiting = c->n_busyq;
}
