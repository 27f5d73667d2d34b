/*
 * The etcd side of calls (see calls_int.h): claims and ends committed in
 * batches, many calls a txn (group commit); the undo of a claim given up;
 * BUSY records, written in txns of their own.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "calls_int.h"

#define CALLS_UNKNOWN_TRIES 3 /* resends of a txn whose answer was lost */
#define CALLS_BUSY_QUEUE_MAX 10000 /* BUSY records waiting for etcd */

static void flush_soon(struct calls *c);
static void flush(struct calls *c);

/* ---- BUSY records: calls refused, written in txns of their own ---- */

/*
 * A call refused, for want of a port (ended_by "busy") or because this
 * server is overloaded ("overload"): its record, BUSY, queued for the
 * next txn of records.
 */
void
calls_commit_busy_record(struct calls *c, struct agent_post *p,
    const struct op *op, const char *ended_by)
{
	json_t *j = calls_journal_new(c, p, op, -1),
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

void
calls_commit_busyrec_free(struct busyrec *b)
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
		calls_commit_busyrec_free(b);
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

/* ---- claims: a port and the journal entry of each call ---- */

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
		calls_result_init(&r, US_ENOMEM, "out of memory");
		calls_answer(op, &r);
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
	calls_result_init(&r, 0, NULL);
	str_copy(r.call, k->id, sizeof(r.call));
	str_copy(r.post, p->home->name, sizeof(r.post));
	str_copy(r.server, agent_self(c->a), sizeof(r.server));
	r.port = k->port;
	r.epoch = k->epoch;
	log_debug("call %s on port %ld of %s, epoch %" PRId64, k->id, k->port,
	    p->home->name, k->epoch);
	calls_answer(op, &r);
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

/* Queue op for the next txn of its kind (at the head: a retry). */
void
calls_commit_enqueue(struct op *op, bool head)
{
	struct op **pp = op->record ? &op->c->endq : &op->c->claimq;

	if (!head)
		while (*pp)
			pp = &(*pp)->qnext;
	op->qnext = *pp;
	*pp = op;
	op->queued = true;
	/*
	 * The first end queued opens the window; a retry, and an end that
	 * a request waits for (DELETE /v1/calls/ID, a transfer), go at once
	 * and take what waits with them.
	 */
	if (op->record) {
		uint64_t due =
		    time_mono_ms() + (head || op->cb ? 0 : CALLS_END_GATHER_MS);

		if (op->c->end_due == 0 || due < op->c->end_due)
			op->c->end_due = due;
	}
	flush_soon(op->c);
}

void
calls_ends_now(struct calls *c)
{
	if (c && c->endq) {
		c->end_due = time_mono_ms();
		flush(c);
	}
}

/*
 * Pick the port op claims next, and its journal entry; the port is
 * reserved until the answer. 0, or -1 when no port is left to try.
 */
int
calls_commit_claim_prepare(struct op *op)
{
	struct calls *c = op->c;
	struct agent_post *p = op->post;
	long i;

	if ((i = calls_find_free_port(p, 0)) < 0) {
		if ((i = calls_find_other_port(
			 p, agent_self(c->a), op->next_other)) < 0)
			return -1;
		op->next_other = i + 1;
	}
	json_decref(op->journal);
	if ((op->journal = calls_journal_new(
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
	calls_commit_undo_claim(op->c, op->post, op->id);
	calls_result_init(&r, US_EUNAVAIL, msg);
	calls_answer(op, &r);
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
	    calls_commit_claim_prepare(op) == 0) {
		calls_commit_enqueue(op, true);
		return;
	}
	calls_commit_busy_record(c, p, op, "busy");
	calls_result_init(&r, US_EBUSY, NULL);
	snprintf(r.message, sizeof(r.message), "all %ld ports of %s are busy",
	    p->home->media_ports, p->home->name);
	calls_answer(op, &r);
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

void
calls_commit_batch_free(struct batch *b)
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
			calls_result_init(&r, US_ENOTFOUND,
			    "the call was lost with the lease");
			calls_answer(op, &r);
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
static void flush_cb(uv_timer_t *t);

/*
 * Whether the queued ends go now: their window is over, or a txn's worth
 * waits. Otherwise the end timer is set for the window's end.
 */
static bool
ends_due(struct calls *c)
{
	uint64_t now = time_mono_ms();
	size_t n = 0;

	if (c->endq == NULL) {
		c->end_due = 0;
		return false;
	}
	for (const struct op *op = c->endq; op && n < CALLS_BATCH_MAX;
	     op = op->qnext)
		n++;
	if (c->end_due <= now || n >= CALLS_BATCH_MAX)
		return true;
	if (!uv_is_active((uv_handle_t *)c->end_timer))
		uv_timer_start(c->end_timer, flush_cb, c->end_due - now, 0);
	return false;
}

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
		if (q == NULL && c->endq && !batch_out(c, true, NULL) &&
		    ends_due(c)) {
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
		/* what is left of the ends is due already: it goes next */
		if (end && c->endq == NULL)
			c->end_due = 0;
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
			    calls_commit_claim_prepare(op) == 0) {
				calls_commit_enqueue(op, true);
				continue;
			}
			calls_not_owner(c, p, &r);
			calls_answer(op, &r);
		} else {
			claim_one(op, i < res->n_subs ? &res->subs[i] : NULL,
			    res->revision);
		}
	}
	calls_commit_batch_free(b);
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
	calls_op_free(op);
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
		calls_op_free(op);
}

void
calls_commit_undo_claim(struct calls *c, struct agent_post *p, const char *id)
{
	struct op *op = calls_op_new(c, NULL, NULL);
	char *jkey = agent_key(c->a, "calls/%s/%s", p->home->name, id);

	if (op && jkey) {
		op->post = p;
		str_copy(op->id, id, sizeof(op->id));
		op->req =
		    etcd_kv_range(agent_etcd(c->a), jkey, false, undo_read, op);
	}
	if (op && op->req == NULL)
		calls_op_free(op);
	free(jkey);
}

/* ---- ends: port, journal entry and record, together ---- */

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
		calls_result_init(&r, US_EUNAVAIL, NULL);
		snprintf(r.message, sizeof(r.message),
		    "ending call %s: its part of the txn got no answer", k->id);
		calls_answer(op, &r);
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
		calls_result_init(&r, US_ENOTFOUND, NULL);
		snprintf(r.message, sizeof(r.message),
		    "call %s was lost with this server's lease", k->id);
		agent_port_set(k->post, k->port, NULL, NULL, 0, 0, rev);
		c->lost++;
		calls_call_remove(c, k);
		op->call = NULL;
		calls_answer(op, &r);
		return;
	}
	calls_result_init(&r, 0, NULL);
	str_copy(r.call, k->id, sizeof(r.call));
	str_copy(r.post, k->post->home->name, sizeof(r.post));
	str_copy(r.server, agent_self(c->a), sizeof(r.server));
	r.port = k->port;
	r.epoch = k->epoch;
	r.status = op->transferred ? "TRANSFERRED" : "NORMAL";
	c->ended[op->transferred]++;
	r.duration_ms = time_wall_ms() - k->started;
	agent_port_set(k->post, k->port, NULL, NULL, 0, 0, rev);
	calls_call_remove(c, k);
	op->call = NULL;
	calls_answer(op, &r);
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
			calls_result_init(&r, US_ENOTFOUND,
			    "the call was lost with the lease");
			calls_answer(op, &r);
		} else if (res->err) {
			op->call->ending = false;
			calls_result_init(&r, US_EUNAVAIL, NULL);
			snprintf(r.message, sizeof(r.message),
			    "ending call %s: %s", op->call->id,
			    us_strerror(res->err));
			calls_answer(op, &r);
		} else {
			end_one(op, i < res->n_subs ? &res->subs[i] : NULL,
			    res->revision);
		}
	}
	calls_commit_batch_free(b);
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
