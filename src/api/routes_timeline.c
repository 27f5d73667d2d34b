/*
 * GET /v1/timeline: the cluster's history of failovers, failbacks,
 * fences and restarts (src/agent/history.c), read from etcd in pages,
 * newest first.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "api.h"

#define TIMELINE_LIMIT_DEFAULT 100
#define TIMELINE_LIMIT_MAX HISTORY_KEEP
#define TIMELINE_PAGE 250
/* keys read at most: pruning keeps HISTORY_KEEP, this leaves room */
#define TIMELINE_READ_MAX (4 * HISTORY_KEEP)

struct treq {
	struct http_req *req;
	struct api_ctx *ctx;
	struct etcd_req *op;
	char *prefix;
	int64_t since, until;
	long limit;
	unsigned kinds; /* bit i: history_kinds[i]; 0: all */
	int64_t rev; /* the first page's: one snapshot */
	size_t read;
	json_t *events; /* matching, oldest first */
};

static void
treq_gone(struct http_req *req, void *arg)
{
	struct treq *t = arg;

	(void)req;
	etcd_req_cancel(t->op);
	json_decref(t->events);
	free(t->prefix);
	free(t);
}

static bool
wanted(const struct treq *t, const json_t *v)
{
	const char *kind = json_string_value(json_object_get(v, "kind"));
	json_int_t at = json_integer_value(json_object_get(v, "at"));

	if (kind == NULL || (t->since && at < t->since) ||
	    (t->until && at > t->until))
		return false;
	if (t->kinds == 0)
		return true;
	for (size_t i = 0; i < HISTORY_KINDS; i++)
		if ((t->kinds & (1u << i)) &&
		    strcmp(kind, history_kinds[i]) == 0)
			return true;
	return false;
}

static void
answer(struct treq *t)
{
	size_t n = json_array_size(t->events);
	json_t *out = json_array();

	for (size_t i = n;
	     out && i > 0 && json_array_size(out) < (size_t)t->limit; i--) {
		json_t *e =
		    history_event_view(json_array_get(t->events, i - 1));

		if (e)
			json_array_append_new(out, e);
	}
	if (out == NULL) {
		http_reply_error(t->req, 500, US_ENOMEM, "out of memory");
		return;
	}
	http_reply_json(t->req, 200,
	    json_pack("{s:s,s:I,s:I,s:b,s:I,s:o}", "server", t->ctx->self->name,
		"count", (json_int_t)json_array_size(out), "matching",
		(json_int_t)n, "more", n > json_array_size(out), "kept",
		(json_int_t)HISTORY_KEEP, "events", out));
}

static void
got_page(const struct etcd_res *res, void *arg)
{
	struct treq *t = arg;
	const struct etcd_kv *last;

	t->op = NULL;
	if (res->err) {
		http_reply_error(t->req, 503, US_EUNAVAIL,
		    "cannot read the history from etcd: %s",
		    us_strerror(res->err));
		return;
	}
	if (t->rev == 0)
		t->rev = res->revision;
	for (size_t i = 0; i < res->n_kvs; i++) {
		json_t *v = json_loadb(
		    res->kvs[i].value, res->kvs[i].value_len, 0, NULL);

		if (v && wanted(t, v))
			json_array_append(t->events, v);
		json_decref(v);
	}
	t->read += res->n_kvs;
	if (!res->more || res->n_kvs == 0) {
		answer(t);
		return;
	}
	if (t->read >= TIMELINE_READ_MAX) {
		log_error("timeline: more than %d events under %s "
			  "(TIMELINE_READ_MAX): old ones are not being "
			  "deleted",
		    TIMELINE_READ_MAX, t->prefix);
		http_reply_error(t->req, 500, US_ETOOBIG,
		    "the history holds more than %d events, the most read "
		    "at once: narrow it with since",
		    TIMELINE_READ_MAX);
		return;
	}
	last = &res->kvs[res->n_kvs - 1];
	t->op = etcd_kv_range_page(agent_etcd(t->ctx->agent), t->prefix,
	    last->key, last->key_len, t->rev, TIMELINE_PAGE, got_page, t);
	if (t->op == NULL)
		http_reply_error(t->req, 500, US_ENOMEM, "out of memory");
}

void
get_timeline(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *lim = http_req_query(req, "limit"),
		   *kind = http_req_query(req, "kind");
	char after[ETCD_KEY_MAX];
	struct treq *t;
	int64_t since, until;
	unsigned kinds;
	long limit = TIMELINE_LIMIT_DEFAULT;

	(void)pa;
	if (!routes_time_arg(req, "since", &since) ||
	    !routes_time_arg(req, "until", &until))
		return;
	if (lim && str_to_long(lim, 1, TIMELINE_LIMIT_MAX, &limit) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter limit: '%.30s' is not a number from 1 to "
		    "%d",
		    lim, TIMELINE_LIMIT_MAX);
		return;
	}
	if (history_kinds_parse(kind, &kinds) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter kind: '%.60s' is not a list of failover, "
		    "failback, fence, restart",
		    kind);
		return;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->events = json_array()) == NULL ||
	    (t->prefix = agent_key(ctx->agent, "history/")) == NULL) {
		if (t)
			json_decref(t->events);
		free(t);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	t->req = req;
	t->ctx = ctx;
	t->since = since;
	t->until = until;
	t->limit = limit;
	t->kinds = kinds;
	http_req_on_gone(req, treq_gone, t);
	/* keys sort by time: start at since ("<since-1>~" sorts before it) */
	if (since > 0 &&
	    history_key(after, sizeof(after), t->prefix, since - 1, "~", 0) ==
		0) {
		after[strlen(t->prefix) + 16] = '~';
		after[strlen(t->prefix) + 17] = '\0';
		t->op = etcd_kv_range_page(agent_etcd(ctx->agent), t->prefix,
		    after, strlen(after), 0, TIMELINE_PAGE, got_page, t);
	} else {
		t->op = etcd_kv_range_page(agent_etcd(ctx->agent), t->prefix,
		    NULL, 0, 0, TIMELINE_PAGE, got_page, t);
	}
	if (t->op == NULL)
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
}
