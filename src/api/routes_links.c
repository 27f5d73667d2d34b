/*
 * The state of every external link of this server (GET /v1/links): each
 * etcd member, the registrar and each route point registered there, each
 * NATS server, every peer's API. The probes of the daily check
 * (src/check/probe.c) run every LINKS_EVERY_MS in the thread pool; what
 * they find is kept with the time each link last changed state, logged
 * when it does, and shown in /v1/status, /metrics and understudy status.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "check/check.h"

#define LINKS_EVERY_MS 3000
#define LINKS_MAX 256
#define LINK_TEXT_MAX 300

struct link {
	char name[32]; /* etcd member, registrar, route point, ... */
	char target[LINK_TEXT_MAX]; /* the endpoint, URL, peer or number */
	bool up;
	int64_t since_ms; /* wall clock of the last change */
	int64_t checked_ms;
	int64_t latency_ms; /* -1: not a request */
	char detail[LINK_TEXT_MAX];
	char last_error[LINK_TEXT_MAX];
	int64_t last_error_ms;
	bool seen; /* in the last round */
};

struct links {
	struct api_ctx *ctx;
	uv_timer_t timer;
	uv_work_t work;
	bool running, closing, timer_closed;
	struct check_probe p;
	json_t *rows;
	struct link *v;
	size_t n;
	int64_t round_ms; /* when the last round ended */
};

static void links_destroy(struct links *l);

static void
work(uv_work_t *w)
{
	struct links *l = w->data;

	l->rows = check_links_run(&l->p);
}

static struct link *
find(struct links *l, const char *name, const char *target)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].name, name) == 0 &&
		    strcmp(l->v[i].target, target) == 0)
			return &l->v[i];
	if (l->n == LINKS_MAX)
		return NULL;
	memset(&l->v[l->n], 0, sizeof(l->v[l->n]));
	str_copy(l->v[l->n].name, name, sizeof(l->v[l->n].name));
	str_copy(l->v[l->n].target, target, sizeof(l->v[l->n].target));
	return &l->v[l->n++];
}

static void
merge(struct links *l, const json_t *row, int64_t now)
{
	const char *name = json_string_value(json_object_get(row, "name"));
	const char *target = json_string_value(json_object_get(row, "target"));
	const char *detail = json_string_value(json_object_get(row, "detail"));
	const json_t *lat = json_object_get(row, "latency_ms");
	bool up = json_is_true(json_object_get(row, "ok")), fresh;
	struct link *k;

	if (name == NULL)
		return;
	if (target == NULL)
		target = "";
	if ((k = find(l, name, target)) == NULL) {
		log_error("links: more than %d links; %s %s is not followed",
		    LINKS_MAX, name, target);
		return;
	}
	fresh = k->checked_ms == 0;
	if (fresh || k->up != up) {
		if (!up)
			log_warn("link down: %s %s: %s", name, target,
			    detail ? detail : "");
		else if (!fresh)
			log_info("link up again: %s %s (down since %lld s)",
			    name, target,
			    (long long)((now - k->since_ms) / 1000));
		k->since_ms = now;
		k->up = up;
	}
	k->seen = true;
	k->checked_ms = now;
	k->latency_ms = json_is_integer(lat) ? json_integer_value(lat) : -1;
	str_copy(k->detail, detail ? detail : "", sizeof(k->detail));
	if (!up) {
		str_copy(k->last_error, k->detail, sizeof(k->last_error));
		k->last_error_ms = now;
	}
}

static void
done(uv_work_t *w, int status)
{
	struct links *l = w->data;
	int64_t now = time_wall_ms();
	size_t i, kept = 0;
	json_t *row;

	(void)status;
	l->running = false;
	check_probe_clear(&l->p);
	if (l->closing) {
		json_decref(l->rows);
		l->rows = NULL;
		links_destroy(l);
		return;
	}
	for (i = 0; i < l->n; i++)
		l->v[i].seen = false;
	json_array_foreach (l->rows, i, row)
		merge(l, row, now);
	/* a link no longer in the config (a new version) goes */
	for (i = 0; i < l->n; i++)
		if (l->v[i].seen)
			l->v[kept++] = l->v[i];
	l->n = kept;
	json_decref(l->rows);
	l->rows = NULL;
	l->round_ms = now;
}

static void
tick(uv_timer_t *t)
{
	struct links *l = t->data;

	if (l->running || l->closing)
		return;
	memset(&l->p, 0, sizeof(l->p));
	if (routes_check_fill(&l->p, l->ctx, time_wall_ms()) != 0) {
		check_probe_clear(&l->p);
		log_error("links: out of memory");
		return;
	}
	l->work.data = l;
	if (uv_queue_work(t->loop, &l->work, work, done) != 0) {
		check_probe_clear(&l->p);
		return;
	}
	l->running = true;
}

struct links *
links_new(uv_loop_t *loop, struct api_ctx *ctx)
{
	struct links *l = calloc(1, sizeof(*l));

	if (l == NULL || (l->v = calloc(LINKS_MAX, sizeof(*l->v))) == NULL) {
		free(l);
		return NULL;
	}
	l->ctx = ctx;
	uv_timer_init(loop, &l->timer);
	l->timer.data = l;
	uv_timer_start(&l->timer, tick, 0, LINKS_EVERY_MS);
	return l;
}

static void
links_destroy(struct links *l)
{
	if (l->running || !l->timer_closed)
		return;
	free(l->v);
	free(l);
}

static void
timer_closed(uv_handle_t *h)
{
	struct links *l = h->data;

	l->timer_closed = true;
	links_destroy(l);
}

void
links_free(struct links *l)
{
	if (l == NULL)
		return;
	l->closing = true;
	uv_close((uv_handle_t *)&l->timer, timer_closed);
}

json_t *
links_json(const struct links *l)
{
	json_t *arr = json_array();
	char at[32];

	for (size_t i = 0; l && i < l->n; i++) {
		const struct link *k = &l->v[i];
		json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s}", "link",
		    k->name, "target", k->target, "state",
		    k->up ? "up" : "down", "since",
		    time_iso8601(k->since_ms, at, sizeof(at)), "since_ms",
		    (json_int_t)k->since_ms, "detail", k->detail);

		json_object_set_new(o, "latency_ms",
		    k->latency_ms >= 0 ? json_integer(k->latency_ms)
				       : json_null());
		if (k->last_error[0]) {
			json_object_set_new(
			    o, "last_error", json_string(k->last_error));
			json_object_set_new(o, "last_error_at",
			    json_string(time_iso8601(
				k->last_error_ms, at, sizeof(at))));
		}
		json_array_append_new(arr, o);
	}
	return arr;
}

void
links_metrics(const struct links *l, struct buf *b)
{
	if (l == NULL || l->n == 0)
		return;
	buf_printf(b,
	    "# HELP understudy_link_up 1 when this server's link answers, "
	    "0 when it does not\n# TYPE understudy_link_up gauge\n");
	for (size_t i = 0; i < l->n; i++) {
		buf_printf(b, "understudy_link_up{link=\"");
		routes_label(b, l->v[i].name);
		buf_printf(b, "\",target=\"");
		routes_label(b, l->v[i].target);
		buf_printf(b, "\"} %d\n", l->v[i].up ? 1 : 0);
	}
	buf_printf(b,
	    "# HELP understudy_link_latency_seconds How long the last probe "
	    "of the link took\n# TYPE understudy_link_latency_seconds "
	    "gauge\n");
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].latency_ms < 0)
			continue;
		buf_printf(b, "understudy_link_latency_seconds{link=\"");
		routes_label(b, l->v[i].name);
		buf_printf(b, "\",target=\"");
		routes_label(b, l->v[i].target);
		buf_printf(b, "\"} %.3f\n", (double)l->v[i].latency_ms / 1000);
	}
}

void
links_get(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	char at[32];

	(void)pa;
	if (ctx->links == NULL || ctx->links->round_ms == 0) {
		http_req_add_reply_header(req, "Retry-After", "1");
		http_reply_error(req, 503, US_EUNAVAIL,
		    "the first probe of the links has not ended yet");
		return;
	}
	http_reply_json(req, 200,
	    json_pack("{s:s,s:s,s:i,s:o}", "server", ctx->self->name,
		"checked_at",
		time_iso8601(ctx->links->round_ms, at, sizeof(at)), "every_ms",
		LINKS_EVERY_MS, "links", links_json(ctx->links)));
}
