/*
 * Watches: a snapshot (range) first, delivered as a reset, then the
 * change stream from the revision after it. When the stream ends or its
 * member fails, the watch reconnects to the current endpoint and resumes
 * from the revision after the last one delivered, so no change is lost
 * or repeated. A compacted revision means the changes in between are
 * gone: the watch re-reads the range and delivers a new reset.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"

struct etcd_watch {
	struct etcd *e;
	char *key;
	bool prefix;
	int64_t next_rev; /* where the stream resumes; 0: snapshot first */
	etcd_watch_cb cb;
	void *arg;
	struct etcd_req *stream;
	struct etcd_req *range;
	uv_timer_t retry;
	unsigned failures;
	bool freeing;
	/* the snapshot, read in pages at one revision */
	bool pages; /* the consumer takes each page as it comes */
	int64_t snap_rev; /* 0: the first page is next */
	char *last_key; /* of the page before */
	size_t last_len;
	long limit;
	struct etcd_event *acc; /* pages kept for one reset (!pages) */
	size_t n_acc, cap_acc;
	size_t snap_keys;
};

#define WATCH_PAGE 1000 /* keys per page of a snapshot */

static void watch_start(struct etcd_watch *w);

static void
retry_cb(uv_timer_t *t)
{
	watch_start(t->data);
}

static void
watch_retry(struct etcd_watch *w)
{
	uint64_t delay = 0;

	if (w->freeing)
		return;
	/* at once the first time (likely another member), then back off */
	if (w->failures > 0) {
		unsigned k = w->failures - 1;

		delay = 50u << (k < 5 ? k : 5);
		if (delay > 1000)
			delay = 1000;
	}
	w->failures++;
	uv_timer_start(&w->retry, retry_cb, delay, 0);
}

static void
stream_drop(struct etcd_watch *w)
{
	etcd_req_cancel(w->stream);
	w->stream = NULL;
}

static void
on_line(struct etcd_req *req, const char *line, size_t len, void *arg)
{
	struct etcd_watch *w = arg;
	struct etcd_watch_update u;
	struct etcd_watch_msg m;
	int rc;

	(void)req;
	if ((rc = etcd_parse_watch(line, len, &m)) != 0) {
		log_warn("etcd watch on %s: %s in the stream; reconnecting",
		    etcd_request_endpoint(w->stream), us_strerror(rc));
		stream_drop(w);
		watch_retry(w);
		return;
	}
	if (m.created) {
		w->failures = 0;
	} else if (m.canceled) {
		if (m.compact_revision > 0) {
			log_info("etcd watch: revision %" PRId64
				 " is compacted (oldest %" PRId64
				 "); re-reading",
			    w->next_rev, m.compact_revision);
			w->next_rev = 0;
		} else {
			log_warn("etcd watch canceled by %s: %s",
			    etcd_request_endpoint(w->stream),
			    m.cancel_reason ? m.cancel_reason
					    : "no reason given");
		}
		stream_drop(w);
		watch_retry(w);
	} else if (m.n_events > 0) {
		memset(&u, 0, sizeof(u));
		u.revision = m.revision;
		u.events = m.events;
		u.n_events = m.n_events;
		u.endpoint = etcd_request_endpoint(w->stream);
		w->next_rev = m.events[m.n_events - 1].kv.mod_revision + 1;
		w->cb(w, &u, w->arg);
	} else if (m.revision >= w->next_rev) {
		/* a progress notice: every change up to it was sent */
		w->next_rev = m.revision + 1;
	}
	etcd_parse_watch_clear(&m);
}

static void
on_end(struct etcd_req *req, int err, void *arg)
{
	struct etcd_watch *w = arg;

	log_info("etcd watch stream on %s ended (%s); resuming from revision "
		 "%" PRId64,
	    etcd_request_endpoint(req), err ? us_strerror(err) : "closed",
	    w->next_rev);
	w->stream = NULL;
	watch_retry(w);
}

static void
stream_open(struct etcd_watch *w)
{
	json_t *cr = etcd_kv_key_json(w->key, w->prefix), *root;
	char rev[32];
	char *body = NULL;

	snprintf(rev, sizeof(rev), "%" PRId64, w->next_rev);
	if (cr &&
	    json_object_set_new(cr, "start_revision", json_string(rev)) == 0 &&
	    json_object_set_new(cr, "progress_notify", json_true()) == 0 &&
	    (root = json_pack("{s:O}", "create_request", cr)) != NULL) {
		body = json_dumps(root, JSON_COMPACT);
		json_decref(root);
	}
	json_decref(cr);
	w->stream =
	    etcd_request_stream(w->e, "/v3/watch", body, on_line, on_end, w);
	if (w->stream == NULL)
		watch_retry(w);
}

static void
acc_clear(struct etcd_watch *w)
{
	for (size_t i = 0; i < w->n_acc; i++) {
		free(w->acc[i].kv.key);
		free(w->acc[i].kv.value);
	}
	free(w->acc);
	w->acc = NULL;
	w->n_acc = w->cap_acc = 0;
}

static void
snap_reset(struct etcd_watch *w)
{
	w->snap_rev = 0;
	free(w->last_key);
	w->last_key = NULL;
	w->last_len = 0;
	w->snap_keys = 0;
	acc_clear(w);
}

/* Keep a page's keys until the last page (one reset for the consumer). */
static int
acc_add(struct etcd_watch *w, const struct etcd_res *res)
{
	if (w->n_acc + res->n_kvs > w->cap_acc) {
		size_t cap = (w->n_acc + res->n_kvs) * 2;
		struct etcd_event *v = realloc(w->acc, cap * sizeof(*v));

		if (v == NULL)
			return US_ENOMEM;
		w->acc = v;
		w->cap_acc = cap;
	}
	for (size_t i = 0; i < res->n_kvs; i++) {
		struct etcd_event *ev = &w->acc[w->n_acc];

		memset(ev, 0, sizeof(*ev));
		ev->type = ETCD_EVENT_PUT;
		ev->kv = res->kvs[i];
		ev->kv.key = malloc(res->kvs[i].key_len + 1);
		ev->kv.value = malloc(res->kvs[i].value_len + 1);
		if (ev->kv.key == NULL || ev->kv.value == NULL) {
			free(ev->kv.key);
			free(ev->kv.value);
			return US_ENOMEM;
		}
		memcpy(ev->kv.key, res->kvs[i].key, res->kvs[i].key_len + 1);
		memcpy(
		    ev->kv.value, res->kvs[i].value, res->kvs[i].value_len + 1);
		w->n_acc++;
	}
	return 0;
}

static void
deliver(struct etcd_watch *w, bool reset, bool partial,
    const struct etcd_event *evs, size_t n, const char *endpoint)
{
	struct etcd_watch_update u;

	memset(&u, 0, sizeof(u));
	u.reset = reset;
	u.partial = partial;
	u.revision = w->snap_rev;
	u.events = evs;
	u.n_events = n;
	u.endpoint = endpoint;
	w->cb(w, &u, w->arg);
}

static void page_next(struct etcd_watch *w);

static void
on_range(const struct etcd_res *res, void *arg)
{
	struct etcd_watch *w = arg;
	struct etcd_event *evs = NULL;
	bool first = w->snap_rev == 0;

	w->range = NULL;
	if (res->err == US_ETOOBIG && w->limit > 1) {
		w->limit /= 2; /* big values: smaller pages */
		log_info("etcd watch: a page of %s is over %u bytes; pages of "
			 "%ld keys now",
		    w->key, ETCD_RESPONSE_MAX, w->limit);
		page_next(w);
		return;
	}
	if (res->err) {
		log_warn("etcd watch: reading %s failed: %s%s%s", w->key,
		    us_strerror(res->err), res->message ? ": " : "",
		    res->message ? res->message : "");
		snap_reset(w); /* compacted meanwhile, maybe: from the start */
		watch_retry(w);
		return;
	}
	if (first)
		w->snap_rev = res->revision;
	w->snap_keys += res->n_kvs;
	if (res->n_kvs) {
		const struct etcd_kv *last = &res->kvs[res->n_kvs - 1];
		char *k = malloc(last->key_len + 1);

		if (k == NULL) {
			snap_reset(w);
			watch_retry(w);
			return;
		}
		memcpy(k, last->key, last->key_len + 1);
		free(w->last_key);
		w->last_key = k;
		w->last_len = last->key_len;
	}
	if (w->pages) {
		if (res->n_kvs &&
		    (evs = calloc(res->n_kvs, sizeof(*evs))) == NULL) {
			snap_reset(w);
			watch_retry(w);
			return;
		}
		for (size_t i = 0; i < res->n_kvs; i++) {
			evs[i].type = ETCD_EVENT_PUT;
			evs[i].kv = res->kvs[i]; /* borrowed for the callback */
		}
		deliver(w, first, res->more, evs, res->n_kvs, res->endpoint);
		free(evs);
	} else if (acc_add(w, res) != 0) {
		snap_reset(w);
		watch_retry(w);
		return;
	} else if (!res->more) {
		deliver(w, true, false, w->acc, w->n_acc, res->endpoint);
	}
	if (w->freeing)
		return;
	if (res->more && res->n_kvs) {
		page_next(w);
		return;
	}
	w->next_rev = w->snap_rev + 1;
	snap_reset(w);
	w->limit = WATCH_PAGE; /* the next snapshot starts with full pages */
	stream_open(w);
}

static void
page_next(struct etcd_watch *w)
{
	w->range = etcd_kv_range_page(w->e, w->key, w->last_key, w->last_len,
	    w->snap_rev, w->limit, on_range, w);
	if (w->range == NULL) {
		snap_reset(w);
		watch_retry(w);
	}
}

void
etcd_watch_pages(struct etcd_watch *w)
{
	w->pages = true;
}

static void
watch_start(struct etcd_watch *w)
{
	if (w->freeing || w->stream || w->range)
		return;
	if (w->next_rev == 0 && w->prefix) {
		snap_reset(w);
		page_next(w);
		return;
	}
	if (w->next_rev == 0) {
		w->range = etcd_kv_range(w->e, w->key, false, on_range, w);
		if (w->range == NULL)
			watch_retry(w);
		return;
	}
	stream_open(w);
}

struct etcd_watch *
etcd_watch_new(struct etcd *e, const char *key, bool prefix, int64_t start_rev,
    etcd_watch_cb cb, void *arg)
{
	struct etcd_watch *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	if ((w->key = strdup(key)) == NULL) {
		free(w);
		return NULL;
	}
	w->e = e;
	w->prefix = prefix;
	w->next_rev = start_rev > 0 ? start_rev : 0;
	w->cb = cb;
	w->arg = arg;
	w->limit = WATCH_PAGE;
	uv_timer_init(etcd_loop(e), &w->retry);
	w->retry.data = w;
	etcd_watch_attach(e, w);
	watch_start(w);
	return w;
}

static void
watch_closed(uv_handle_t *h)
{
	struct etcd_watch *w = h->data;

	snap_reset(w);
	free(w->key);
	free(w);
}

void
etcd_watch_free(struct etcd_watch *w)
{
	if (w == NULL || w->freeing)
		return;
	w->freeing = true;
	etcd_watch_detach(w->e, w);
	etcd_req_cancel(w->stream);
	etcd_req_cancel(w->range);
	uv_close((uv_handle_t *)&w->retry, watch_closed);
}

const char *
etcd_watch_endpoint(const struct etcd_watch *w)
{
	return w->stream ? etcd_request_endpoint(w->stream) : NULL;
}

void
etcd_watch_endpoint_failed(struct etcd_watch *w, const char *endpoint)
{
	if (w->stream == NULL ||
	    strcmp(etcd_request_endpoint(w->stream), endpoint) != 0)
		return;
	log_info("etcd watch: %s failed; moving the watch", endpoint);
	stream_drop(w);
	watch_retry(w);
}
