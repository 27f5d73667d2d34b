/*
 * GET /v1/events: server-sent events (text/event-stream) on the loop.
 *
 * A timer computes the status (the JSON of GET /v1/status) at most every
 * EVENTS_TICK_MS while a stream is open, and queues it to every stream
 * when it differs from the last one sent, leaving out the fields that
 * change on every read (time, lease_remaining_ms). Each event has an id
 * from one sequence per worker. A new stream, also one that reconnects
 * with Last-Event-ID, starts with the current full status: the events it
 * missed are not replayed, the state they led to is. A comment line goes
 * out every EVENTS_PING_MS so that proxies and the page see a live
 * stream. Streams are capped per server; a stream whose reader does not
 * keep up is dropped once EVENTS_QUEUE_MAX bytes wait for it.
 *
 * Each event of the cluster's history that the agent's watch brings (a
 * failover, failback, fence or restart written, a failover's first call
 * added) goes out at once as a "timeline" event, in the view of
 * GET /v1/timeline; these are not replayed on a reconnect either.
 */
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "api.h"

#define SLOW_READER "its queue reached its cap: the reader does not keep up"

struct stream {
	struct events *ev; /* NULL once the events are gone */
	struct http_req *req;
	struct buf q; /* what waits to be sent */
	bool end; /* dropped, or the server stops: end when q is sent */
	struct stream *next;
};

struct events {
	struct api_ctx *ctx;
	uv_timer_t timer;
	char *last; /* the last status sent, without its volatile fields */
	char *last_full; /* and as sent: a new stream starts with it */
	uint64_t seq;
	uint64_t last_ping;
	unsigned n;
	struct stream *streams;
};

/* The status as JSON text, and without what changes on every read. */
static int
status_texts(struct events *ev, char **full, char **cmp)
{
	json_t *o = routes_status_json(ev->ctx);

	*full = *cmp = NULL;
	if (o == NULL)
		return -1;
	*full = json_dumps(o, JSON_COMPACT);
	json_object_del(o, "time");
	json_object_del(o, "lease_remaining_ms");
	*cmp = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (*full == NULL || *cmp == NULL) {
		free(*full);
		free(*cmp);
		*full = *cmp = NULL;
		return -1;
	}
	return 0;
}

static void
stream_drop(struct stream *s, const char *why)
{
	log_warn("events: dropping the stream to %s: %s (%u bytes)",
	    http_req_peer(s->req), why, EVENTS_QUEUE_MAX);
	buf_free(&s->q);
	buf_init(&s->q, EVENTS_QUEUE_MAX);
	s->end = true;
	http_stream_wake(s->req);
}

/* Queue text to s; a reader too slow for it is dropped. */
static void
stream_put(struct stream *s, const char *text, size_t len)
{
	if (s->end)
		return;
	if (buf_append(&s->q, text, len) != 0) {
		stream_drop(s, SLOW_READER);
		return;
	}
	http_stream_wake(s->req);
}

static void
stream_event(struct stream *s, uint64_t id, const char *type, const char *data)
{
	char head[96];
	int n = snprintf(head, sizeof(head),
	    "id: %llu\nevent: %s\ndata: ", (unsigned long long)id, type);

	/* one line of compact JSON: nothing to split into data lines */
	if (buf_append(&s->q, head, (size_t)n) != 0 ||
	    buf_append(&s->q, data, strlen(data)) != 0 ||
	    buf_append(&s->q, "\n\n", 2) != 0) {
		stream_drop(s, SLOW_READER);
		return;
	}
	http_stream_wake(s->req);
}

/* A history event from the watch: a "timeline" event to every stream. */
static void
history_event(const struct etcd_kv *kv, void *arg)
{
	struct events *ev = arg;
	json_t *v, *view;
	char *text;

	if (ev->streams == NULL)
		return;
	v = json_loadb(kv->value, kv->value_len, 0, NULL);
	view = v ? history_event_view(v) : NULL;
	text = view ? json_dumps(view, JSON_COMPACT) : NULL;
	json_decref(v);
	json_decref(view);
	if (text == NULL)
		return; /* not an event of ours, or out of memory */
	ev->seq++;
	for (struct stream *s = ev->streams; s; s = s->next)
		if (!s->end)
			stream_event(s, ev->seq, "timeline", text);
	free(text);
}

static void
tick(uv_timer_t *t)
{
	struct events *ev = t->data;
	uint64_t now = time_mono_ms();
	char *full, *cmp;

	if (ev->streams == NULL)
		return;
	if (now - ev->last_ping >= EVENTS_PING_MS) {
		ev->last_ping = now;
		for (struct stream *s = ev->streams; s; s = s->next)
			stream_put(s, ": ping\n\n", 8);
	}
	if (status_texts(ev, &full, &cmp) != 0)
		return;
	if (ev->last && strcmp(ev->last, cmp) == 0) {
		free(full);
		free(cmp);
		return;
	}
	free(ev->last);
	free(ev->last_full);
	ev->last = cmp;
	ev->last_full = full;
	ev->seq++;
	for (struct stream *s = ev->streams; s; s = s->next)
		if (!s->end)
			stream_event(s, ev->seq, "status", full);
}

static ssize_t
stream_read(void *arg, char *out, size_t max)
{
	struct stream *s = arg;
	size_t n = s->q.len < max ? s->q.len : max;

	if (n == 0)
		return s->end ? -1 : 0;
	memcpy(out, s->q.data, n);
	buf_consume(&s->q, n);
	return (ssize_t)n;
}

static void
stream_gone(struct http_req *req, void *arg)
{
	struct stream *s = arg;

	(void)req;
	if (s->ev) {
		for (struct stream **pp = &s->ev->streams; *pp;
		     pp = &(*pp)->next)
			if (*pp == s) {
				*pp = s->next;
				break;
			}
		s->ev->n--;
	}
	buf_free(&s->q);
	free(s);
}

struct events *
events_new(uv_loop_t *loop, struct api_ctx *ctx)
{
	struct events *ev = calloc(1, sizeof(*ev));

	if (ev == NULL)
		return NULL;
	ev->ctx = ctx;
	uv_timer_init(loop, &ev->timer);
	ev->timer.data = ev;
	uv_timer_start(&ev->timer, tick, EVENTS_TICK_MS, EVENTS_TICK_MS);
	agent_on_history(ctx->agent, history_event, ev);
	return ev;
}

static void
events_closed(uv_handle_t *h)
{
	free(h->data);
}

void
events_free(struct events *ev)
{
	if (ev == NULL)
		return;
	agent_on_history(ev->ctx->agent, NULL, NULL);
	for (struct stream *s = ev->streams; s; s = s->next) {
		s->ev = NULL;
		s->end = true;
		http_stream_wake(s->req);
	}
	free(ev->last);
	free(ev->last_full);
	uv_timer_stop(&ev->timer);
	uv_close((uv_handle_t *)&ev->timer, events_closed);
}

void
events_get(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct events *ev = ctx->events;
	char *full, *cmp;
	struct stream *s;

	(void)pa;
	if (ev == NULL || ctx->stopping) {
		http_reply_error(req, 503, US_EUNAVAIL, "the server is %s",
		    ev ? "stopping" : "starting");
		return;
	}
	if (ev->n >= EVENTS_STREAMS_MAX) {
		log_warn("events: refusing a stream to %s: %u are open, the "
			 "most a server serves",
		    http_req_peer(req), ev->n);
		http_req_add_reply_header(req, "Retry-After", "5");
		http_reply_error(req, 503, US_EBUSY,
		    "%s already serves %d event streams, its limit: try "
		    "another "
		    "server, or again later",
		    ctx->self->name, EVENTS_STREAMS_MAX);
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    status_texts(ev, &full, &cmp) != 0) {
		free(s);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	buf_init(&s->q, EVENTS_QUEUE_MAX);
	s->ev = ev;
	s->req = req;
	s->next = ev->streams;
	ev->streams = s;
	ev->n++;
	/* a new id even for the same state: ids only grow on a stream */
	free(ev->last);
	free(ev->last_full);
	ev->last = cmp;
	ev->last_full = full;
	ev->seq++;
	if (ev->n == 1)
		ev->last_ping = time_mono_ms();
	/* the reconnect delay browsers use, then the state as it is now */
	buf_append(&s->q, "retry: 1000\n\n", 13);
	stream_event(s, ev->seq, "status", ev->last_full);
	http_req_on_gone(req, stream_gone, s);
	http_req_add_reply_header(req, "X-Accel-Buffering", "no");
	http_reply_stream(req, 200, "text/event-stream", stream_read, s);
}
