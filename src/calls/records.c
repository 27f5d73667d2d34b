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

struct records {
	uv_loop_t *loop;
	struct agent *a;
	struct store *store;
	const struct config *cfg;
	char *prefix; /* /understudy-records/<cluster>/ */
	struct etcd_watch *watch;
	int64_t lease;
	uint64_t lease_at; /* monotonic ms of its grant */
	struct etcd_req *granting;
	uint64_t grant_retry_at;
	struct close_op *ops;
	uint64_t lost[2];
	uint64_t copied;
	bool synced;
	bool store_failed;
	/* records the watch brought, committed together off its callback */
	json_t *batch;
	int64_t batch_rev;
	bool batch_due; /* a reset or a first update: commit even if empty */
	bool copying; /* a snapshot comes in pages: not complete yet */
	int64_t known_rev; /* the revision the copy is complete up to */
	uint64_t copy_started; /* monotonic ms */
	uint64_t copy_logged;
	int64_t copy_count;
	uv_timer_t flush;
	bool freeing;
};

/* Records waiting for one commit, at most; past it the watch re-reads. */
#define RECORDS_BATCH_MAX 50000
#define RECORDS_RETRY_MS 100

char *
records_key(const struct records *r, const char *call)
{
	char *key = NULL;

	if (asprintf(&key, "%s%s", r->prefix, call) < 0)
		return NULL;
	return key;
}

static void
granted(const struct etcd_res *res, void *arg)
{
	struct records *r = arg;

	r->granting = NULL;
	if (res->err) {
		log_warn("records: cannot grant their lease: %s",
		    us_strerror(res->err));
		r->grant_retry_at = time_mono_ms() + 1000;
		return;
	}
	r->lease = res->id;
	r->lease_at = time_mono_ms();
	log_debug("records: lease %" PRIx64 " of %" PRId64 " s",
	    (uint64_t)r->lease, res->ttl);
}

int64_t
records_lease(struct records *r)
{
	uint64_t now = time_mono_ms(),
		 half = (uint64_t)r->cfg->cluster.record_retention * 500;

	/* a new lease every half retention: a record lives half to all of it */
	if (r->granting == NULL && now >= r->grant_retry_at &&
	    (r->lease == 0 || now - r->lease_at >= half))
		r->granting = etcd_lease_grant(agent_etcd(r->a),
		    r->cfg->cluster.record_retention, granted, r);
	return r->lease;
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
	     *rkey = records_key(r, j->call), *value = NULL;
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
	    etcd_kv_txn_put(
		t, true, rkey, value, strlen(value), records_lease(r)) == 0) {
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

void
records_sweep(struct records *r)
{
	struct agent_post *p;

	records_lease(r);
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
}

/* ---- the copy in SQLite ---- */

static void on_watch(
    struct etcd_watch *w, const struct etcd_watch_update *u, void *arg);

/* Watch again from the revision after the last one committed. */
static void
rewatch(struct records *r)
{
	int64_t rev = store_records_rev(r->store);

	etcd_watch_free(r->watch);
	json_array_clear(r->batch);
	r->batch_due = false;
	r->batch_rev = r->known_rev = rev;
	r->copying = false;
	r->watch = etcd_watch_new(
	    agent_etcd(r->a), r->prefix, true, rev ? rev + 1 : 0, on_watch, r);
	if (r->watch)
		etcd_watch_pages(r->watch);
}

/*
 * One commit for what the watch brought since the last one: on the loop
 * but outside curl's callbacks, and never waiting for a lock held by
 * another process for more than the store's few ms (it tries again).
 */
static void
flush_cb(uv_timer_t *t)
{
	struct records *r = t->data;
	unsigned added = 0, bad = 0;

	if (r->watch == NULL) {
		/* after the batch overflowed: read again once it can be written
		 */
		if (store_writable(r->store)) {
			r->store_failed = false;
			rewatch(r);
		} else {
			uv_timer_start(
			    &r->flush, flush_cb, RECORDS_RETRY_MS, 0);
		}
		return;
	}
	if (!r->batch_due && json_array_size(r->batch) == 0)
		return;
	if ((r->store_failed && !store_writable(r->store)) ||
	    store_records_add(r->store, r->batch, r->batch_rev, &added, &bad) !=
		0) {
		if (!r->store_failed) {
			r->store_failed = true;
			log_warn("records: %s %s; %zu record(s) wait",
			    store_path(r->store),
			    store_busy(r->store) ? "is locked by another "
						   "process"
						 : "cannot be written",
			    json_array_size(r->batch));
		}
		uv_timer_start(&r->flush, flush_cb, RECORDS_RETRY_MS, 0);
		return;
	}
	if (r->store_failed)
		log_info("records: %zu record(s) that waited are in %s",
		    json_array_size(r->batch), store_path(r->store));
	r->store_failed = false;
	r->copied += added;
	if (r->copying) {
		uint64_t now = time_mono_ms();

		r->copy_count += (int64_t)json_array_size(r->batch);
		if (r->batch_rev > r->known_rev) {
			log_info("records: copied %" PRId64
				 " records in %.1f s; "
				 "complete up to revision %" PRId64,
			    r->copy_count,
			    (double)(now - r->copy_started) / 1000,
			    r->batch_rev);
			r->copying = false;
		} else if (now - r->copy_logged >= 2000) {
			log_info("records: copying: %" PRId64 " so far",
			    r->copy_count);
			r->copy_logged = now;
		}
	}
	r->known_rev = r->batch_rev;
	if (!r->copying)
		r->synced = true;
	if (bad)
		log_warn("records: %u malformed record(s) up to revision "
			 "%" PRId64 " skipped",
		    bad, r->batch_rev);
	json_array_clear(r->batch);
	r->batch_due = false;
}

static void
on_watch(struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	struct records *r = arg;
	size_t plen = strlen(r->prefix);
	unsigned bad = 0;

	(void)w;
	for (size_t i = 0; i < u->n_events; i++) {
		const struct etcd_kv *kv = &u->events[i].kv;
		json_t *o;

		if (u->events[i].type != ETCD_EVENT_PUT ||
		    kv->key_len <= plen ||
		    strncmp(kv->key, r->prefix, plen) != 0)
			continue; /* a record leaving etcd stays in SQLite */
		if ((o = json_loadb(kv->value, kv->value_len, 0, NULL)))
			json_array_append_new(r->batch, o);
		else
			bad++;
	}
	if (bad)
		log_warn("records: %u malformed record(s) at revision %" PRId64
			 " skipped",
		    bad, u->revision);
	if (u->reset && u->partial && !r->copying) {
		r->copying = true;
		r->copy_started = r->copy_logged = time_mono_ms();
		r->copy_count = 0;
		log_info("records: copying the records etcd holds (revision "
			 "%" PRId64 "), in pages",
		    u->revision);
	}
	/* the mark moves only when the whole snapshot is in */
	if (!u->partial)
		r->batch_rev = u->revision;
	r->batch_due = r->batch_due || u->reset || !r->synced || !u->partial;
	if (json_array_size(r->batch) > RECORDS_BATCH_MAX) {
		/* the database refused for long: read again from its mark */
		log_error("records: ETOOBIG: over %d records wait for %s; "
			  "they are read again from etcd when it takes them",
		    RECORDS_BATCH_MAX, store_path(r->store));
		json_array_clear(r->batch);
		r->batch_due = false;
		etcd_watch_free(r->watch);
		r->watch = NULL;
		uv_timer_start(&r->flush, flush_cb, RECORDS_RETRY_MS, 0);
		return;
	}
	if (!r->store_failed)
		uv_timer_start(&r->flush, flush_cb, 0, 0);
}

json_t *
records_query(
    struct records *r, const struct store_query *q, char *err, size_t errlen)
{
	return store_records_query(r->store, q, err, errlen);
}

void
records_counters(
    const struct records *r, uint64_t lost[2], uint64_t *copied, bool *synced)
{
	lost[0] = r->lost[0];
	lost[1] = r->lost[1];
	*copied = r->copied;
	*synced = r->synced;
}

struct records *
records_new(uv_loop_t *loop, struct agent *a, struct store *store)
{
	struct records *r = calloc(1, sizeof(*r));
	const struct config *cfg;
	int64_t rev;

	if (r == NULL)
		return NULL;
	r->loop = loop;
	r->a = a;
	r->store = store;
	r->cfg = cfg = agent_config(a);
	if (asprintf(&r->prefix, "/understudy-records/%s/", cfg->cluster.name) <
	    0) {
		free(r);
		return NULL;
	}
	if ((r->batch = json_array()) == NULL) {
		free(r->prefix);
		free(r);
		return NULL;
	}
	uv_timer_init(loop, &r->flush);
	r->flush.data = r;
	rev = store_records_rev(store);
	r->synced = rev > 0; /* a copy from an earlier run answers at once */
	r->batch_rev = r->known_rev = rev;
	/* from the revision after the last one copied; all of it at first */
	r->watch = etcd_watch_new(
	    agent_etcd(a), r->prefix, true, rev ? rev + 1 : 0, on_watch, r);
	if (r->watch == NULL) {
		records_free(r);
		return NULL;
	}
	etcd_watch_pages(r->watch);
	records_lease(r);
	return r;
}

static void
flush_closed(uv_handle_t *h)
{
	struct records *r = h->data;

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
	etcd_req_cancel(r->granting);
	while (r->ops) {
		etcd_req_cancel(r->ops->req);
		op_free(r->ops);
	}
	r->freeing = true;
	uv_close((uv_handle_t *)&r->flush, flush_closed);
}
