/*
 * The cluster's history: failovers, failbacks, fences and restarts, each
 * written by the server that saw it (docs/protocol.md, History).
 *
 * One write is out at a time, in the order the events came. An event's
 * key is unique to its writer (time, server, a number drawn at random
 * for this process and then counted up), and it is created with a txn
 * that compares its create_revision with 0: a send whose answer was lost
 * is sent again as it was, and a failed compare then says that the
 * first send was done. The completion of a failover with its first call
 * compares the key's mod_revision, and a failed compare reads the key
 * back in the same txn: first_call_ms there means it was done.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agent.h"

#define HISTORY_PRUNE_PAGE 500 /* keys deleted at most per round */
#define HISTORY_POSTS 64 /* failovers followed for their first call */

enum item_kind { ITEM_CREATE, ITEM_FIRST_CALL, ITEM_PRUNE };

struct item {
	enum item_kind kind;
	char *key;
	json_t *value; /* CREATE */
	char post[CONFIG_NAME_MAX + 1]; /* a failover's post */
	int64_t at; /* FIRST_CALL: the call's wall ms */
	struct item *next;
};

/* The last failover this server wrote for a post. */
struct followed {
	char post[CONFIG_NAME_MAX + 1];
	char *key;
	json_t *value; /* as written */
	int64_t mod_rev; /* 0 until the create is done */
	bool first_call; /* asked for */
};

struct history {
	struct etcd *e;
	char *prefix; /* "/understudy/<cluster>/history/" */
	char server[CONFIG_NAME_MAX + 1];
	uint64_t n;
	struct item *head, *tail;
	unsigned queued;
	struct etcd_req *req; /* the write out */
	uv_timer_t retry;
	struct followed fo[HISTORY_POSTS];
	int64_t fenced_at; /* 0: not fenced */
	char fenced_why[160];
	int64_t last_takeover_ms;
};

static void history_next(struct history *h);

/* ---- pure parts ---- */

const char *const history_kinds[HISTORY_KINDS] = {
    "failover", "failback", "fence", "restart"};

int
history_kinds_parse(const char *s, unsigned *out)
{
	*out = 0;
	while (s && *s) {
		size_t n = strcspn(s, ","), i;

		for (i = 0; i < HISTORY_KINDS; i++)
			if (strlen(history_kinds[i]) == n &&
			    strncmp(s, history_kinds[i], n) == 0)
				break;
		if (i == HISTORY_KINDS)
			return -1;
		*out |= 1u << i;
		s += n + (s[n] == ',');
	}
	return 0;
}

int
history_key(char *buf, size_t len, const char *prefix, int64_t at,
    const char *server, uint64_t n)
{
	int k;

	if (at < 0 || at > 9999999999999999LL)
		return -1;
	k = snprintf(
	    buf, len, "%s%016" PRId64 "-%s-%" PRIu64, prefix, at, server, n);
	return k < 0 || (size_t)k >= len ? -1 : 0;
}

int64_t
history_excess(int64_t count, int64_t keep)
{
	return count > keep ? count - keep : 0;
}

/* ms as people read a duration: "850 ms", "1.8 s", "42 s", "3 min 5 s" */
static void
words(int64_t ms, char *buf, size_t len)
{
	if (ms < 0)
		ms = 0;
	if (ms < 1000)
		snprintf(buf, len, "%" PRId64 " ms", ms);
	else if (ms < 10000)
		snprintf(buf, len, "%" PRId64 ".%" PRId64 " s", ms / 1000,
		    ms % 1000 / 100);
	else if (ms < 120000)
		snprintf(buf, len, "%" PRId64 " s", ms / 1000);
	else if (ms < 7200000)
		snprintf(buf, len, "%" PRId64 " min %" PRId64 " s", ms / 60000,
		    ms % 60000 / 1000);
	else
		snprintf(buf, len, "%" PRId64 " h %" PRId64 " min",
		    ms / 3600000, ms % 3600000 / 60000);
}

static int64_t
num(const json_t *v, const char *name)
{
	const json_t *x = json_object_get(v, name);

	return json_is_integer(x) ? (int64_t)json_integer_value(x) : -1;
}

json_t *
history_event_view(const json_t *v)
{
	const char *kind = json_string_value(json_object_get(v, "kind"));
	char a[48], b[48], s[200];
	json_t *o;

	if (!json_is_object(v) || kind == NULL || num(v, "at") < 0)
		return NULL;
	s[0] = '\0';
	if (strcmp(kind, "failover") == 0) {
		words(num(v, "takeover_ms"), a, sizeof(a));
		if (num(v, "first_call_after_ms") >= 0) {
			words(num(v, "first_call_after_ms"), b, sizeof(b));
			snprintf(s, sizeof(s),
			    "failover %s; first call %s after the failure", a,
			    b);
		} else {
			snprintf(s, sizeof(s),
			    "failover %s; no call taken by the cover yet", a);
		}
	} else if (strcmp(kind, "failback") == 0) {
		words(num(v, "covered_ms"), a, sizeof(a));
		words(num(v, "returning_ms"), b, sizeof(b));
		snprintf(s, sizeof(s),
		    "covered for %s; last busy port home %s after the route "
		    "point",
		    a, b);
	} else if (strcmp(kind, "fence") == 0) {
		words(num(v, "fenced_for_ms"), a, sizeof(a));
		snprintf(s, sizeof(s), "fenced for %s", a);
	} else if (strcmp(kind, "restart") == 0) {
		words(num(v, "down_ms"), a, sizeof(a));
		snprintf(s, sizeof(s), "worker restarted %s after it died", a);
	}
	if ((o = json_deep_copy(v)) == NULL)
		return NULL;
	time_iso8601(num(v, "at"), a, sizeof(a));
	json_object_set_new(o, "time", json_string(a));
	if (s[0])
		json_object_set_new(o, "summary", json_string(s));
	return o;
}

/* ---- the queue ---- */

static void
item_free(struct item *it)
{
	if (it == NULL)
		return;
	free(it->key);
	json_decref(it->value);
	free(it);
}

static int
enqueue(struct history *h, struct item *it)
{
	/* a prune may always go: it is what keeps the prefix bounded */
	if (h->queued >= HISTORY_QUEUE_MAX && it->kind != ITEM_PRUNE) {
		log_error("history: %u events wait for etcd, the most kept "
			  "(HISTORY_QUEUE_MAX): dropping a %s event",
		    h->queued, it->kind == ITEM_CREATE ? "new" : "first-call");
		item_free(it);
		return -1;
	}
	if (h->tail)
		h->tail->next = it;
	else
		h->head = it;
	h->tail = it;
	h->queued++;
	if (h->req == NULL && !uv_is_active((uv_handle_t *)&h->retry))
		history_next(h);
	return 0;
}

static void
dequeue(struct history *h)
{
	struct item *it = h->head;

	h->head = it->next;
	if (h->head == NULL)
		h->tail = NULL;
	h->queued--;
	item_free(it);
}

static void
retry_cb(uv_timer_t *t)
{
	history_next(t->data);
}

/* The head failed or got no answer: the same again, later. */
static void
later(struct history *h)
{
	uv_timer_start(&h->retry, retry_cb, HISTORY_RETRY_MS, 0);
}

static struct followed *
followed_find(struct history *h, const char *post)
{
	for (size_t i = 0; i < HISTORY_POSTS; i++)
		if (h->fo[i].key && strcmp(h->fo[i].post, post) == 0)
			return &h->fo[i];
	return NULL;
}

static void
followed_clear(struct followed *f)
{
	free(f->key);
	json_decref(f->value);
	memset(f, 0, sizeof(*f));
}

/* ---- pruning ---- */

static void
pruned(const struct etcd_res *res, void *arg)
{
	struct history *h = arg;

	h->req = NULL;
	if (res->err)
		log_warn("history: deleting old events failed: %s; the next "
			 "write tries again",
		    us_strerror(res->err));
	dequeue(h);
	history_next(h);
}

/* The oldest excess+1 keys are read: delete up to the last one. */
static void
prune_page(const struct etcd_res *res, void *arg)
{
	struct history *h = arg;
	size_t n;

	h->req = NULL;
	n = res->err ? 0 : res->n_kvs;
	if (n >= 2) {
		log_info("history: deleting the %zu oldest events (keeping "
			 "%d)",
		    n - 1, HISTORY_KEEP);
		h->req = etcd_kv_delete_range(
		    h->e, res->kvs[0].key, res->kvs[n - 1].key, pruned, h);
		if (h->req)
			return;
	}
	dequeue(h);
	history_next(h);
}

static void
prune_count(const struct etcd_res *res, void *arg)
{
	struct history *h = arg;
	int64_t excess =
	    res->err ? 0 : history_excess(res->count, HISTORY_KEEP);

	h->req = NULL;
	if (excess > 0) {
		if (excess > HISTORY_PRUNE_PAGE)
			excess = HISTORY_PRUNE_PAGE;
		h->req = etcd_kv_range_page(h->e, h->prefix, NULL, 0, 0,
		    (long)excess + 1, prune_page, h);
		if (h->req)
			return;
	}
	dequeue(h);
	history_next(h);
}

/* ---- writes ---- */

static void
created(const struct etcd_res *res, void *arg)
{
	struct history *h = arg;
	struct item *it = h->head, *p;
	struct followed *f;

	h->req = NULL;
	if (res->err) {
		log_warn("history: writing %s: %s; sending it again",
		    it->key + strlen(h->prefix), us_strerror(res->err));
		later(h);
		return;
	}
	if (!res->succeeded)
		log_info("history: %s was already written (an answer was "
			 "lost)",
		    it->key + strlen(h->prefix));
	f = it->post[0] ? followed_find(h, it->post) : NULL;
	if (f && strcmp(f->key, it->key) == 0)
		f->mod_rev = res->succeeded ? res->revision
		    : res->n_kvs            ? res->kvs[0].mod_revision
					    : 0;
	dequeue(h);
	if ((p = calloc(1, sizeof(*p))) != NULL) {
		p->kind = ITEM_PRUNE;
		enqueue(h, p);
	}
	history_next(h);
}

static void
completed(const struct etcd_res *res, void *arg)
{
	struct history *h = arg;
	struct item *it = h->head;
	struct followed *f = followed_find(h, it->post);
	json_t *o = NULL;

	h->req = NULL;
	if (res->err) {
		log_warn("history: completing %s with its first call: %s; "
			 "sending it again",
		    it->key + strlen(h->prefix), us_strerror(res->err));
		later(h);
		return;
	}
	if (res->succeeded) {
		if (f && strcmp(f->key, it->key) == 0) {
			f->mod_rev = res->revision;
			json_decref(f->value);
			f->value = it->value;
			it->value = NULL;
		}
	} else if (res->n_kvs == 0) {
		log_info("history: %s is gone (pruned): its first call is "
			 "not written",
		    it->key + strlen(h->prefix));
	} else if ((o = json_loadb(res->kvs[0].value, res->kvs[0].value_len, 0,
			NULL)) != NULL &&
	    json_object_get(o, "first_call_ms")) {
		log_info("history: %s already has its first call (an answer "
			 "was lost)",
		    it->key + strlen(h->prefix));
	} else if (f && strcmp(f->key, it->key) == 0 &&
	    f->mod_rev != res->kvs[0].mod_revision) {
		/* changed by nobody but this server: compare on what it is */
		f->mod_rev = res->kvs[0].mod_revision;
		json_decref(o);
		later(h);
		return;
	}
	json_decref(o);
	dequeue(h);
	history_next(h);
}

static void
send_create(struct history *h, struct item *it)
{
	struct etcd_txn *t = etcd_kv_txn_new();
	char *v = json_dumps(it->value, JSON_COMPACT);

	if (t && v &&
	    etcd_kv_txn_compare(
		t, it->key, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, it->key, v, strlen(v), 0) == 0 &&
	    etcd_kv_txn_get(t, false, it->key, false) == 0) {
		h->req = etcd_kv_txn_commit(h->e, t, created, h);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(v);
	if (h->req == NULL)
		later(h);
}

static void
send_first_call(struct history *h, struct item *it)
{
	struct followed *f = followed_find(h, it->post);
	struct etcd_txn *t;
	int64_t failure;
	char *v = NULL;

	if (f == NULL || strcmp(f->key, it->key) != 0 || f->mod_rev == 0) {
		/* its create was dropped or refused: nothing to complete */
		dequeue(h);
		history_next(h);
		return;
	}
	json_decref(it->value);
	it->value = json_deep_copy(f->value);
	failure = num(f->value, "at");
	if (it->value == NULL ||
	    json_object_set_new(it->value, "first_call_ms",
		json_integer((json_int_t)it->at)) != 0 ||
	    json_object_set_new(it->value, "first_call_after_ms",
		json_integer((json_int_t)(it->at - failure))) != 0 ||
	    (v = json_dumps(it->value, JSON_COMPACT)) == NULL ||
	    (t = etcd_kv_txn_new()) == NULL) {
		free(v);
		later(h);
		return;
	}
	if (etcd_kv_txn_compare(t, it->key, ETCD_CMP_MOD, ETCD_CMP_EQUAL,
		f->mod_rev, NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, it->key, v, strlen(v), 0) == 0 &&
	    etcd_kv_txn_get(t, false, it->key, false) == 0) {
		h->req = etcd_kv_txn_commit(h->e, t, completed, h);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(v);
	if (h->req == NULL)
		later(h);
}

static void
history_next(struct history *h)
{
	struct item *it = h->head;

	if (it == NULL || h->req)
		return;
	switch (it->kind) {
	case ITEM_CREATE:
		send_create(h, it);
		break;
	case ITEM_FIRST_CALL:
		send_first_call(h, it);
		break;
	case ITEM_PRUNE:
		h->req = etcd_kv_count(h->e, h->prefix, prune_count, h);
		if (h->req == NULL)
			later(h);
		break;
	}
}

/* ---- what the servers tell ---- */

int
history_add(struct history *h, json_t *ev)
{
	const char *kind = json_string_value(json_object_get(ev, "kind"));
	const char *post = json_string_value(json_object_get(ev, "post"));
	struct item *it = calloc(1, sizeof(*it));
	char key[ETCD_KEY_MAX];
	struct followed *f = NULL;

	if (h == NULL || it == NULL || kind == NULL ||
	    history_key(key, sizeof(key), h->prefix, num(ev, "at"), h->server,
		h->n++) != 0 ||
	    (it->key = strdup(key)) == NULL) {
		log_error("history: cannot queue a %s event",
		    kind ? kind : "malformed");
		item_free(it);
		json_decref(ev);
		return -1;
	}
	json_object_set_new(ev, "server", json_string(h->server));
	json_object_set_new(ev, "id", json_string(key + strlen(h->prefix)));
	it->kind = ITEM_CREATE;
	it->value = ev;
	if (strcmp(kind, "failover") == 0 && post &&
	    strlen(post) < sizeof(it->post)) {
		str_copy(it->post, post, sizeof(it->post));
		h->last_takeover_ms = num(ev, "takeover_ms");
		if ((f = followed_find(h, post)) == NULL)
			for (size_t i = 0; i < HISTORY_POSTS && !f; i++)
				if (h->fo[i].key == NULL)
					f = &h->fo[i];
		if (f) {
			followed_clear(f);
			str_copy(f->post, post, sizeof(f->post));
			f->key = strdup(key);
			f->value = json_deep_copy(ev);
			if (f->key == NULL || f->value == NULL)
				followed_clear(f);
		}
	}
	log_info("history: %s %s%s%s", kind, key + strlen(h->prefix),
	    post ? " of " : "", post ? post : "");
	return enqueue(h, it);
}

bool
history_awaits_first_call(const struct history *h, const char *post)
{
	for (size_t i = 0; h && i < HISTORY_POSTS; i++)
		if (h->fo[i].key && strcmp(h->fo[i].post, post) == 0)
			return !h->fo[i].first_call;
	return false;
}

void
history_first_call(struct history *h, const char *post, int64_t at)
{
	struct followed *f = h ? followed_find(h, post) : NULL;
	struct item *it;

	if (f == NULL || f->first_call)
		return;
	f->first_call = true;
	if ((it = calloc(1, sizeof(*it))) == NULL ||
	    (it->key = strdup(f->key)) == NULL) {
		item_free(it);
		return;
	}
	it->kind = ITEM_FIRST_CALL;
	it->at = at;
	str_copy(it->post, post, sizeof(it->post));
	log_info("history: first call on %s, %" PRId64 " ms after its failure",
	    post, at - num(f->value, "at"));
	enqueue(h, it);
}

void
history_fenced(struct history *h, int64_t at, const char *why)
{
	if (h == NULL || h->fenced_at)
		return;
	h->fenced_at = at;
	str_copy(h->fenced_why, why ? why : "", sizeof(h->fenced_why));
}

void
history_unfenced(struct history *h, int64_t at)
{
	json_t *ev;

	if (h == NULL || h->fenced_at == 0)
		return;
	ev = json_pack("{s:s,s:I,s:s,s:I,s:I}", "kind", "fence", "at",
	    (json_int_t)h->fenced_at, "cause", h->fenced_why, "unfenced_ms",
	    (json_int_t)at, "fenced_for_ms", (json_int_t)(at - h->fenced_at));
	h->fenced_at = 0;
	if (ev)
		history_add(h, ev);
}

int64_t
history_last_takeover_ms(const struct history *h)
{
	return h ? h->last_takeover_ms : -1;
}

struct history *
history_new(
    uv_loop_t *loop, struct etcd *e, const char *cluster, const char *server)
{
	struct history *h = calloc(1, sizeof(*h));
	uint32_t r = 0;

	if (h == NULL)
		return NULL;
	if (asprintf(&h->prefix, "/understudy/%s/history/", cluster) < 0) {
		free(h);
		return NULL;
	}
	h->e = e;
	h->last_takeover_ms = -1;
	str_copy(h->server, server, sizeof(h->server));
	/* another process of this server starts far from this one's numbers */
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = (uint32_t)time_mono_ms();
	h->n = (uint64_t)r << 16;
	uv_timer_init(loop, &h->retry);
	h->retry.data = h;
	return h;
}

static void
history_closed(uv_handle_t *t)
{
	struct history *h = t->data;

	while (h->head)
		dequeue(h);
	for (size_t i = 0; i < HISTORY_POSTS; i++)
		followed_clear(&h->fo[i]);
	free(h->prefix);
	free(h);
}

void
history_free(struct history *h)
{
	if (h == NULL)
		return;
	if (h->queued)
		log_warn("history: %u events not written (etcd did not "
			 "answer)",
		    h->queued);
	etcd_req_cancel(h->req);
	h->req = NULL;
	uv_close((uv_handle_t *)&h->retry, history_closed);
}
