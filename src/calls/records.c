/* Call records (see calls.h). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "calls.h"

struct close_op {
	struct records *r;
	char post[CONFIG_NAME_MAX + 1];
	char call[64];
	bool software;
	struct etcd_req *req;
	struct close_op *next;
};

/* A record in a post's outbox: closed in etcd, not yet in the stream. */
enum outbox_state {
	OUTBOX_WAIT, /* to send */
	OUTBOX_SENT, /* queued for the stream */
	OUTBOX_DELETING /* the stream has it; its key goes */
};

struct outbox {
	struct records *r;
	char *key;
	char post[CONFIG_NAME_MAX + 1];
	char call[64];
	char *value;
	int64_t mod_rev;
	bool mine; /* closed by this server */
	enum outbox_state state;
	uint64_t seen; /* monotonic ms */
	uint64_t retry_at;
	struct etcd_req *del;
	struct outbox *next;
};

struct records {
	uv_loop_t *loop;
	struct agent *a;
	struct store *store;
	const struct config *cfg;
	char *prefix; /* /understudy/<cluster>/closed/ */
	struct etcd_watch *watch;
	struct outbox *outbox;
	size_t n_outbox;
	struct close_op *ops;
	bool (*pending)(const char *call, void *arg);
	void *pending_arg;
	struct stream *stream;
	bool up;
	char error[200];
	uint64_t down_logged;
	int64_t created; /* the stream the copy comes from */
	uint64_t lost[2];
	uint64_t copied;
	bool synced;
	bool caught_up;
	bool store_failed;
	/* records the stream brought, committed together off its callback */
	json_t *batch;
	uint64_t batch_seq;
	int64_t batch_created;
	bool batch_due; /* a new stream: its mark is written even if empty */
	bool copying; /* a long way behind: progress in the log */
	uint64_t copy_started; /* monotonic ms */
	uint64_t copy_logged;
	int64_t copy_count;
	uint64_t pending_n; /* what the stream holds past the batch */
	uint64_t gap_logged;
	uv_timer_t flush;
	uv_timer_t tick;
	int closing;
};

/* Records waiting for one commit, at most; the stream holds the rest. */
#define RECORDS_RETRY_MS 100
#define RECORDS_TICK_MS 200
/* an outbox entry its closer has not sent by then: the owner sends it */
#define RECORDS_ADOPT_MS 3000
#define RECORDS_RESEND_MS 1000

char *
records_key(const struct records *r, const char *post, const char *call)
{
	char *key = NULL;

	if (asprintf(&key, "%s%s/%s", r->prefix, post, call) < 0)
		return NULL;
	return key;
}

void
records_hold(
    struct records *r, bool (*pending)(const char *call, void *arg), void *arg)
{
	r->pending = pending;
	r->pending_arg = arg;
}

json_t *
records_from_journal(const json_t *journal, int64_t end_ms,
    const char *ended_by, const char *status, const char *closed_by)
{
	json_t *o = json_deep_copy(journal), *ans;
	int64_t answer;

	if (o == NULL)
		return NULL;
	json_object_del(o, "lease");
	json_object_del(o, "epoch");
	ans = json_object_get(o, "answer");
	answer = json_is_integer(ans) ? json_integer_value(ans) : 0;
	if (end_ms < answer)
		end_ms = answer;
	json_object_set_new(o, "end", json_integer(end_ms));
	json_object_set_new(
	    o, "duration_ms", json_integer(answer ? end_ms - answer : 0));
	json_object_set_new(o, "ended_by", json_string(ended_by));
	json_object_set_new(o, "status", json_string(status));
	json_object_set_new(o, "closed_by", json_string(closed_by));
	return o;
}

/* ---- closing the records of calls lost with their server ---- */

static void
op_free(struct close_op *op)
{
	for (struct close_op **pp = &op->r->ops; *pp; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	free(op);
}

static struct agent_journal *
journal_find(struct records *r, const char *post, const char *call)
{
	struct agent_post *p = agent_post_find(r->a, post);

	for (struct agent_journal *j = p ? p->journal : NULL; j; j = j->next)
		if (strcmp(j->call, call) == 0)
			return j;
	return NULL;
}

static void
closed(const struct etcd_res *res, void *arg)
{
	struct close_op *op = arg;
	struct records *r = op->r;
	struct agent_journal *j = journal_find(r, op->post, op->call);

	op->req = NULL;
	if (j)
		j->closing = false; /* gone at the next watch event if closed */
	if (res->err)
		log_warn("records: closing call %s: %s", op->call,
		    us_strerror(res->err));
	else if (res->succeeded) {
		r->lost[!op->software]++;
		log_info("records: call %s of post %s closed %s", op->call,
		    op->post,
		    op->software ? "FAILED_SOFTWARE" : "FAILED_HARDWARE");
	}
	op_free(op);
}

/* Close the record of a call whose server is gone; the owner does it. */
static void
close_lost(struct records *r, struct agent_post *p, struct agent_journal *j,
    int64_t epoch, bool software, int64_t at)
{
	char *okey = agent_key(r->a, "owner/%s", p->home->name),
	     *jkey = agent_key(r->a, "calls/%s/%s", p->home->name, j->call),
	     *mkey = agent_key(r->a, "members/%s", j->server),
	     *rkey = records_key(r, p->home->name, j->call), *value = NULL;
	json_t *rec = records_from_journal(j->value, at, "failover",
	    software ? "FAILED_SOFTWARE" : "FAILED_HARDWARE", agent_self(r->a));
	struct etcd_txn *t = etcd_kv_txn_new();
	struct close_op *op = calloc(1, sizeof(*op));

	value = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	/*
	 * this server still owns the post, the entry is the one seen, and
	 * its server's lease is not the lease of a live member (etcd's view)
	 */
	if (okey && jkey && mkey && rkey && value && t && op &&
	    etcd_kv_txn_compare(
		t, okey, ETCD_CMP_MOD, ETCD_CMP_EQUAL, epoch, NULL, 0) == 0 &&
	    etcd_kv_txn_compare(t, jkey, ETCD_CMP_CREATE, ETCD_CMP_EQUAL,
		j->create_rev, NULL, 0) == 0 &&
	    etcd_kv_txn_compare(t, mkey, ETCD_CMP_LEASE, ETCD_CMP_NOT_EQUAL,
		j->lease, NULL, 0) == 0 &&
	    etcd_kv_txn_delete(t, true, jkey, false) == 0 &&
	    etcd_kv_txn_put(t, true, rkey, value, strlen(value), 0) == 0) {
		op->r = r;
		str_copy(op->post, p->home->name, sizeof(op->post));
		str_copy(op->call, j->call, sizeof(op->call));
		op->software = software;
		op->req = etcd_kv_txn_commit(agent_etcd(r->a), t, closed, op);
		t = NULL;
		if (op->req) {
			op->next = r->ops;
			r->ops = op;
			j->closing = true;
			op = NULL;
		}
	}
	etcd_kv_txn_free(t);
	free(op);
	free(okey);
	free(jkey);
	free(mkey);
	free(rkey);
	free(value);
}

/* ---- the outbox: closed in etcd until the stream has the record ---- */

static struct outbox *
outbox_find(struct records *r, const char *key)
{
	for (struct outbox *e = r->outbox; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static struct outbox *
outbox_of_call(struct records *r, const char *call)
{
	for (struct outbox *e = call ? r->outbox : NULL; e; e = e->next)
		if (strcmp(e->call, call) == 0)
			return e;
	return NULL;
}

static void
outbox_remove(struct records *r, struct outbox *e)
{
	for (struct outbox **pp = &r->outbox; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	etcd_req_cancel(e->del);
	r->n_outbox--;
	free(e->key);
	free(e->value);
	free(e);
}

static void
outbox_clear(struct records *r)
{
	while (r->outbox)
		outbox_remove(r, r->outbox);
}

/* An outbox key as the watch shows it: add it, or take its new value. */
static void
outbox_put(struct records *r, const struct etcd_kv *kv)
{
	const char *rest = kv->key + strlen(r->prefix),
		   *slash = strchr(rest, '/');
	struct outbox *e = outbox_find(r, kv->key);
	json_t *o;
	const char *by = "";
	char *value;

	if (slash == NULL || slash == rest || slash[1] == '\0' ||
	    (size_t)(slash - rest) >= sizeof(e->post) ||
	    strlen(slash + 1) >= sizeof(e->call))
		return;
	if ((value = strndup(kv->value, kv->value_len)) == NULL)
		return;
	if (e == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL ||
		    (e->key = strdup(kv->key)) == NULL) {
			free(e);
			free(value);
			return;
		}
		e->r = r;
		memcpy(e->post, rest, (size_t)(slash - rest));
		str_copy(e->call, slash + 1, sizeof(e->call));
		e->seen = time_mono_ms();
		e->next = r->outbox;
		r->outbox = e;
		r->n_outbox++;
	}
	free(e->value);
	e->value = value;
	e->mod_rev = kv->mod_revision;
	o = json_loads(value, 0, NULL);
	json_unpack(o, "{s:s}", "closed_by", &by);
	e->mine = strcmp(by, agent_self(r->a)) == 0;
	json_decref(o);
	if (e->state != OUTBOX_SENT)
		e->state = OUTBOX_WAIT;
}

static void
deleted(const struct etcd_res *res, void *arg)
{
	struct outbox *e = arg;

	e->del = NULL;
	/* done or compared false: the watch tells what is there now */
	if (res->err && e->state == OUTBOX_DELETING) {
		e->state = OUTBOX_WAIT; /* sent again: the stream drops it */
		e->retry_at = time_mono_ms() + RECORDS_RESEND_MS;
	}
}

/* The stream has it: its outbox key goes, if it is still the one sent. */
static void
outbox_done(struct records *r, struct outbox *e)
{
	struct etcd_txn *t = etcd_kv_txn_new();

	/*
	 * a delete of an older value may still be out (the key was written
	 * again meanwhile): its answer no longer matters, and only one
	 * request may point at e
	 */
	etcd_req_cancel(e->del);
	e->del = NULL;
	e->state = OUTBOX_DELETING;
	if (t &&
	    etcd_kv_txn_compare(t, e->key, ETCD_CMP_MOD, ETCD_CMP_EQUAL,
		e->mod_rev, NULL, 0) == 0 &&
	    etcd_kv_txn_delete(t, true, e->key, false) == 0) {
		e->del = etcd_kv_txn_commit(agent_etcd(r->a), t, deleted, e);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	if (e->del == NULL) {
		e->state = OUTBOX_WAIT;
		e->retry_at = time_mono_ms() + RECORDS_RESEND_MS;
	}
}

/* Whether this server sends this entry now. */
static bool
outbox_ours(struct records *r, const struct outbox *e, uint64_t now)
{
	struct agent_post *p;
	int64_t epoch;

	if (e->mine)
		return r->pending == NULL ||
		    !r->pending(e->call, r->pending_arg);
	p = agent_post_find(r->a, e->post);
	return p && agent_owns(r->a, p, &epoch) &&
	    now - e->seen >= RECORDS_ADOPT_MS;
}

/* Hand the stream what this server sends, while it takes them. */
static void
ship(struct records *r)
{
	uint64_t now = time_mono_ms();

	if (!r->up || r->stream == NULL)
		return;
	for (struct outbox *e = r->outbox; e; e = e->next) {
		if (e->state != OUTBOX_WAIT || now < e->retry_at ||
		    !outbox_ours(r, e, now))
			continue;
		if (stream_publish(r->stream, e->call, e->post, e->value) != 0)
			return; /* its queue is full: the rest at the next turn
				 */
		e->state = OUTBOX_SENT;
	}
}

static size_t
waiting(const struct records *r)
{
	uint64_t now = time_mono_ms();
	size_t n = 0;

	for (const struct outbox *e = r->outbox; e; e = e->next)
		n += e->mine ||
		    outbox_ours((struct records *)r, e, now + RECORDS_ADOPT_MS);
	return n;
}

static void
on_watch(struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	struct records *r = arg;
	size_t plen = strlen(r->prefix);

	(void)w;
	if (u->reset)
		outbox_clear(r);
	for (size_t i = 0; i < u->n_events; i++) {
		const struct etcd_kv *kv = &u->events[i].kv;
		struct outbox *e;

		if (kv->key_len <= plen ||
		    strncmp(kv->key, r->prefix, plen) != 0)
			continue;
		if (u->events[i].type == ETCD_EVENT_PUT)
			outbox_put(r, kv);
		else if ((e = outbox_find(r, kv->key)))
			outbox_remove(r, e);
	}
	ship(r);
}

void
records_sweep(struct records *r)
{
	struct agent_post *p;

	for (size_t i = 0; (p = agent_post_at(r->a, i)) != NULL; i++) {
		int64_t epoch, at;
		bool software;

		if (p->journal == NULL || !agent_owns(r->a, p, &epoch))
			continue;
		for (struct agent_journal *j = p->journal; j; j = j->next)
			if (!j->closing &&
			    agent_journal_orphaned(r->a, j, &software, &at))
				close_lost(r, p, j, epoch, software, at);
	}
	ship(r);
}

/* ---- the copy in SQLite ---- */

/*
 * One commit for what the stream brought since the last one: on the loop
 * but outside its callback, and never waiting for a lock held by another
 * process for more than the store's few ms (it tries again). The stream
 * holds what waits meanwhile: the thread fetches no more until then.
 */
static void
flush_cb(uv_timer_t *t)
{
	struct records *r = t->data;
	size_t n = json_array_size(r->batch);
	unsigned added = 0, bad = 0;
	uint64_t now = time_mono_ms();

	if (!r->batch_due && n == 0)
		return;
	if ((r->store_failed && !store_writable(r->store)) ||
	    store_records_add(r->store, r->batch, (int64_t)r->batch_seq,
		r->batch_created, &added, &bad) != 0) {
		if (!r->store_failed) {
			r->store_failed = true;
			log_warn("records: %s %s; %zu record(s) wait",
			    store_path(r->store),
			    store_busy(r->store) ? "is locked by another "
						   "process"
						 : "cannot be written",
			    n);
		}
		uv_timer_start(&r->flush, flush_cb, RECORDS_RETRY_MS, 0);
		return;
	}
	if (r->store_failed)
		log_info("records: %zu record(s) that waited are in %s", n,
		    store_path(r->store));
	r->store_failed = false;
	r->copied += added;
	if (bad)
		log_warn("records: %u malformed record(s) up to sequence "
			 "%" PRIu64 " of the records stream skipped",
		    bad, r->batch_seq);
	if (r->copying) {
		r->copy_count += (int64_t)n;
		if (r->pending_n == 0) {
			log_info("records: copied %" PRId64
				 " records in %.1f s; complete up to "
				 "sequence %" PRIu64,
			    r->copy_count,
			    (double)(now - r->copy_started) / 1000,
			    r->batch_seq);
			r->copying = false;
		} else if (now - r->copy_logged >= 2000) {
			log_info("records: copying: %" PRId64
				 " so far, %" PRIu64 " to go",
			    r->copy_count, r->pending_n);
			r->copy_logged = now;
		}
	}
	json_array_clear(r->batch);
	r->batch_due = false;
	if (r->stream)
		stream_committed(r->stream, r->batch_seq, r->batch_created);
	if (r->caught_up)
		r->synced = true;
}

static void
on_stream(const struct stream_state *st, void *arg)
{
	struct records *r = arg;
	uint64_t now = time_mono_ms();
	size_t i;
	json_t *v;

	if (st->up != r->up ||
	    (!st->up && strcmp(st->error, r->error) != 0 &&
		now - r->down_logged >= 30000)) {
		if (st->up)
			log_info("records: the records stream is up; %zu "
				 "record(s) to send",
			    waiting(r));
		else
			log_warn("records: the records stream is "
				 "unreachable (%s); %zu record(s) wait in "
				 "etcd",
			    st->error[0] ? st->error : "connecting",
			    waiting(r));
		r->down_logged = now;
		snprintf(r->error, sizeof(r->error), "%s", st->error);
	}
	r->up = st->up;
	if (st->gap_to && st->gap_to != r->gap_logged) {
		log_warn("records: the records stream no longer holds "
			 "sequences %" PRIu64 " to %" PRIu64
			 " (older than record_retention), which this copy "
			 "lacks: those records are missing here",
		    st->gap_from, st->gap_to);
		r->gap_logged = st->gap_to;
	}
	if (st->up && st->created != r->created) {
		if (r->created != 0)
			log_warn("records: the records stream was made anew "
				 "(NATS came back without its store): "
				 "records it held that this copy lacked are "
				 "lost for it; the copy goes on from the new "
				 "stream's start");
		r->created = st->created;
		r->batch_created = st->created;
		json_array_clear(r->batch);
		r->batch_seq = 0;
		r->batch_due = true;
	}
	json_array_foreach (st->acked, i, v) {
		struct outbox *e = outbox_of_call(r, json_string_value(v));

		if (e && e->state == OUTBOX_SENT)
			outbox_done(r, e);
	}
	json_array_foreach (st->refused, i, v) {
		struct outbox *e = outbox_of_call(r, json_string_value(v));

		if (e && e->state == OUTBOX_SENT) {
			e->state = OUTBOX_WAIT;
			e->retry_at = now + RECORDS_RESEND_MS;
		}
	}
	if (json_array_size(st->records) > 0) {
		json_array_extend(r->batch, st->records);
		if (st->last_seq > r->batch_seq)
			r->batch_seq = st->last_seq;
		r->batch_created = r->created;
		r->pending_n = st->pending;
		if (!r->copying && st->pending > 0) {
			r->copying = true;
			r->copy_started = r->copy_logged = now;
			r->copy_count = 0;
			log_info("records: copying the records stream: %" PRIu64
				 " record(s) to go",
			    st->pending + json_array_size(st->records));
		}
	}
	r->caught_up = st->caught_up;
	if (r->caught_up && json_array_size(r->batch) == 0 && !r->batch_due)
		r->synced = true;
	if (json_array_size(r->batch) > 0 || r->batch_due)
		uv_timer_start(&r->flush, flush_cb, 0, 0);
	ship(r);
}

static void
tick_cb(uv_timer_t *t)
{
	ship(t->data);
}

json_t *
records_query(struct records *r, const struct store_query *q, char *next,
    char *err, size_t errlen)
{
	return store_records_query(r->store, q, next, err, errlen);
}

void
records_counters(const struct records *r, uint64_t lost[2], uint64_t *copied,
    uint64_t *wait, bool *synced)
{
	lost[0] = r->lost[0];
	lost[1] = r->lost[1];
	*copied = r->copied;
	*wait = waiting(r);
	*synced = r->synced;
}

void
records_set_config(struct records *r, const struct config *cfg)
{
	r->cfg = cfg;
	if (r->stream)
		stream_set_retention(r->stream, cfg->cluster.record_retention);
}

struct records *
records_new(uv_loop_t *loop, struct agent *a, struct store *store,
    const struct stream_config *sc)
{
	struct records *r = calloc(1, sizeof(*r));
	struct stream_config c = *sc;
	const struct config *cfg;

	if (r == NULL)
		return NULL;
	r->loop = loop;
	r->a = a;
	r->store = store;
	r->cfg = cfg = agent_config(a);
	uv_timer_init(loop, &r->flush);
	uv_timer_init(loop, &r->tick);
	r->flush.data = r->tick.data = r;
	if (asprintf(&r->prefix, "/understudy/%s/closed/", cfg->cluster.name) <
		0 ||
	    (r->batch = json_array()) == NULL) {
		r->prefix = NULL;
		records_free(r);
		return NULL;
	}
	c.start_seq = (uint64_t)store_records_seq(store) + 1;
	c.created = r->created = r->batch_created = store_records_stream(store);
	/* a copy from an earlier run answers at once */
	r->synced = c.start_seq > 1;
	r->watch =
	    etcd_watch_new(agent_etcd(a), r->prefix, true, 0, on_watch, r);
	if (r->watch)
		etcd_watch_pages(r->watch);
	/* no messaging at all (a test harness): records wait in etcd */
	r->stream = c.n_urls > 0 ? stream_new(loop, &c, on_stream, r) : NULL;
	if (r->watch == NULL || (c.n_urls > 0 && r->stream == NULL)) {
		records_free(r);
		return NULL;
	}
	uv_timer_start(&r->tick, tick_cb, RECORDS_TICK_MS, RECORDS_TICK_MS);
	return r;
}

static void
timer_closed(uv_handle_t *h)
{
	struct records *r = h->data;

	if (++r->closing < 2)
		return;
	json_decref(r->batch);
	free(r->prefix);
	free(r);
}

void
records_free(struct records *r)
{
	if (r == NULL)
		return;
	etcd_watch_free(r->watch);
	stream_free(r->stream);
	outbox_clear(r);
	while (r->ops) {
		etcd_req_cancel(r->ops->req);
		op_free(r->ops);
	}
	uv_close((uv_handle_t *)&r->flush, timer_closed);
	uv_close((uv_handle_t *)&r->tick, timer_closed);
}
