/*
 * Calls on media ports (see calls.h). Operations that need etcd are
 * asynchronous; each keeps its callback until it answers or its caller
 * goes away (calls_forget). Their txns are built and answered in
 * calls_commit.c.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "calls_int.h"

#define CALLS_LAG_TICK_MS 100

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

void
calls_op_free(struct op *op)
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

void
calls_answer(struct op *op, struct calls_result *r)
{
	if (op->cb)
		op->cb(r, op->arg);
	calls_op_free(op);
}

void
calls_result_init(struct calls_result *r, int err, const char *msg)
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

void
calls_call_remove(struct calls *c, struct call *k)
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
long
calls_find_free_port(const struct agent_post *p, long from)
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
long
calls_find_other_port(const struct agent_post *p, const char *self, long from)
{
	for (long i = from; i < p->home->media_ports; i++)
		if (p->ports[i].busy && !p->ports[i].reserved &&
		    strcmp(p->ports[i].server, self) != 0)
			return i;
	return -1;
}

int
calls_not_owner(struct calls *c, struct agent_post *p, struct calls_result *r)
{
	const char *self = agent_self(c->a);

	if (!p->owned) {
		calls_result_init(r, US_ENOTOWNER, NULL);
		snprintf(r->message, sizeof(r->message),
		    "no server serves post %s now: %s", p->home->name,
		    p->reason);
		return r->err;
	}
	calls_result_init(r, US_ENOTOWNER, NULL);
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
json_t *
calls_journal_new(
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

struct op *
calls_op_new(struct calls *c, calls_cb cb, void *arg)
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
		calls_result_init(r, US_ENOTFOUND, NULL);
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
		return calls_not_owner(c, p, r);
	if ((op = calls_op_new(c, cb, arg)) == NULL) {
		calls_result_init(r, US_ENOMEM, "out of memory");
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
		calls_commit_busy_record(c, p, op, "overload");
		calls_op_free(op);
		calls_result_init(r, US_EBUSY, NULL);
		r->overload = true;
		snprintf(r->message, sizeof(r->message),
		    "%s is overloaded (%s): try again later", agent_self(c->a),
		    why);
		return r->err;
	}
	if (calls_find_free_port(p, 0) < 0 &&
	    calls_find_other_port(p, agent_self(c->a), 0) < 0) {
		calls_commit_busy_record(c, p, op, "busy");
		calls_op_free(op);
		calls_result_init(r, US_EBUSY, NULL);
		snprintf(r->message, sizeof(r->message),
		    "all %ld ports of %s are busy", p->home->media_ports,
		    p->home->name);
		return r->err;
	}
	if (calls_commit_claim_prepare(op) != 0) {
		calls_op_free(op);
		calls_result_init(r, US_ENOMEM, "out of memory");
		return r->err;
	}
	op->waits = true;
	c->waiting[0]++;
	calls_commit_enqueue(op, false);
	return 0;
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
					calls_result_init(
					    r, US_ENOTOWNER, NULL);
					str_copy(r->server, p->ports[n].server,
					    sizeof(r->server));
					snprintf(r->message, sizeof(r->message),
					    "call %s is on %s", id,
					    p->ports[n].server);
					return r->err;
				}
		calls_result_init(r, US_ENOTFOUND, NULL);
		snprintf(r->message, sizeof(r->message),
		    "no call %s (it ended, or was lost with its server)", id);
		return r->err;
	}
	if (strcmp(k->origin, "sip") == 0 && strcmp(origin, "sip") != 0 &&
	    (transferred || c->hangup == NULL)) {
		calls_result_init(r, US_EINVAL, NULL);
		snprintf(r->message, sizeof(r->message),
		    "call %s is a SIP call: %s", id,
		    transferred ? "its caller's side transfers it (REFER is "
				  "not supported)"
				: "it ends when a side hangs up (BYE)");
		return r->err;
	}
	if (k->ending) {
		calls_result_init(r, US_EINVAL, NULL);
		snprintf(
		    r->message, sizeof(r->message), "call %s is ending", id);
		return r->err;
	}
	if ((op = calls_op_new(c, cb, arg)) == NULL) {
		calls_result_init(r, US_ENOMEM, "out of memory");
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
		calls_op_free(op);
		calls_result_init(r, US_ENOMEM, "out of memory");
		return r->err;
	}
	k->ending = true;
	op->waits = true;
	c->waiting[1]++;
	calls_commit_enqueue(op, false);
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
			calls_commit_undo_claim(c, p, pt->call);
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
		(c->end_timer = malloc(sizeof(*c->end_timer))) == NULL ||
		(c->lag_timer = malloc(sizeof(*c->lag_timer))) == NULL)) {
		free(c->flush_timer);
		free(c->end_timer);
		free(c);
		c = NULL;
	}
	if (c) {
		uv_timer_init(loop, c->flush_timer);
		c->flush_timer->data = c;
		uv_timer_init(loop, c->end_timer);
		c->end_timer->data = c;
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
		calls_commit_batch_free(c->batches);
	}
	while (c->ops) {
		etcd_req_cancel(c->ops->req);
		calls_op_free(c->ops);
	}
	etcd_req_cancel(c->busy_req);
	while (c->busy_out) {
		struct busyrec *b = c->busy_out;

		c->busy_out = b->next;
		calls_commit_busyrec_free(b);
	}
	while (c->busyq) {
		struct busyrec *b = c->busyq;

		c->busyq = b->next;
		calls_commit_busyrec_free(b);
	}
	uv_close((uv_handle_t *)c->flush_timer, timer_closed);
	uv_close((uv_handle_t *)c->end_timer, timer_closed);
	uv_close((uv_handle_t *)c->lag_timer, timer_closed);
	while (c->calls)
		calls_call_remove(c, c->calls);
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
