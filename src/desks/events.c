/* A session's events, and the requests that wait for them (desks.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "desks.h"

#define DESKS_EVENTS_PAGE 100

struct desks_waiter {
	struct desks *d;
	char token[DESKS_TOKEN_LEN + 1];
	int64_t after;
	desks_cb cb;
	void *arg;
	uv_timer_t timer;
	struct desks_waiter *next, **pprev; /* taken out in O(1) */
};

/* ---- events ---- */

int
desks_event_add(
    struct desks *d, const char *token, const char *type, json_t *data)
{
	char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
	int rc;

	json_decref(data);
	if (text == NULL)
		return -1;
	rc = desks_batch_event(d, token, type, text);
	free(text);
	return rc;
}

/* The events after after, as the answer's body; NULL on a failure. */
static json_t *
events_json(struct desks *d, const char *token, int64_t after)
{
	json_t *arr = json_array();
	int64_t last = after;
	sqlite3_stmt *st;
	int rc;

	if ((st = desks_prep(d,
		 "SELECT seq, at_ms, type, data FROM events WHERE "
		 "token = ? AND seq > ? ORDER BY seq LIMIT ?")) == NULL) {
		json_decref(arr);
		return NULL;
	}
	sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, after);
	sqlite3_bind_int(st, 3, DESKS_EVENTS_PAGE);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char at[32];
		json_t *data = json_loads(
		    (const char *)sqlite3_column_text(st, 3), 0, NULL);

		last = sqlite3_column_int64(st, 0);
		time_iso8601(sqlite3_column_int64(st, 1), at, sizeof(at));
		json_array_append_new(arr,
		    json_pack("{s:I,s:s,s:s,s:o}", "seq", (json_int_t)last,
			"at", at, "type",
			(const char *)sqlite3_column_text(st, 2), "data",
			data ? data : json_object()));
	}
	desks_unprep(d, st);
	if (rc != SQLITE_DONE) {
		json_decref(arr);
		return NULL;
	}
	return json_pack("{s:o,s:I}", "events", arr, "last", (json_int_t)last);
}

static void
waiter_closed(uv_handle_t *h)
{
	struct desks_waiter *w = h->data;
	struct desks *d = w->d;

	free(w);
	if (--d->open_handles == 0 && d->freeing)
		desks_gone(d);
}

/* How many requests of token wait: a wake looks only where some do. */
static void
waiting_count(struct desks *d, const char *token, int by)
{
	json_int_t n;

	if (d->waiting_tokens == NULL &&
	    (d->waiting_tokens = json_object()) == NULL)
		return;
	n = json_integer_value(json_object_get(d->waiting_tokens, token)) + by;
	if (n > 0)
		json_object_set_new(d->waiting_tokens, token, json_integer(n));
	else
		json_object_del(d->waiting_tokens, token);
}

/* Answer a waiter (its events, or an error) and remove it. */
void
desks_waiter_answer(struct desks_waiter *w, struct desks_res *r)
{
	struct desks *d = w->d;

	*w->pprev = w->next;
	if (w->next)
		w->next->pprev = w->pprev;
	d->waiting--;
	waiting_count(d, w->token, -1);
	if (w->cb)
		w->cb(r, w->arg);
	else
		json_decref(r->body);
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void
waiter_fire(struct desks_waiter *w)
{
	struct desks_res r;
	struct desks_session s;
	json_t *body;

	if (desks_session_get(w->d, w->token, &s, &r) == 0) {
		if ((body = events_json(w->d, w->token, w->after)))
			desks_res_ok(&r, body);
		else
			desks_db_error(w->d, &r);
	}
	desks_waiter_answer(w, &r);
}

static void
waiter_timeout(uv_timer_t *t)
{
	waiter_fire(t->data);
}

void
desks_events_wake(struct desks *d, const char *token)
{
	struct desks_waiter *w = d->waiters, *next;

	if (json_object_get(d->waiting_tokens, token) == NULL)
		return; /* no request of it waits: no walk through them all */
	for (; w; w = next) {
		next = w->next;
		if (strcmp(w->token, token) == 0)
			waiter_fire(w);
	}
}

bool
desks_events_waiting(const struct desks *d, const char *token)
{
	return json_object_get(d->waiting_tokens, token) != NULL;
}

void
desks_events_now(struct desks *d, const char *token, int64_t after, long wait,
    desks_cb cb, void *arg)
{
	long cap = d->cfg->cluster.session_timeout / 2;
	struct desks_res r;
	struct desks_session s;
	struct desks_waiter *w;
	json_t *body;

	d->stats.event_requests++;
	if (desks_session_get(d, token, &s, &r) != 0) {
		cb(&r, arg);
		return;
	}
	if ((body = events_json(d, token, after)) == NULL) {
		desks_db_error(d, &r);
		cb(&r, arg);
		return;
	}
	if (cap > DESKS_WAIT_MAX)
		cap = DESKS_WAIT_MAX;
	if (wait > cap)
		wait = cap;
	if (wait <= 0 || json_array_size(json_object_get(body, "events")) > 0 ||
	    (w = calloc(1, sizeof(*w))) == NULL) {
		desks_res_ok(&r, body);
		cb(&r, arg);
		return;
	}
	json_decref(body);
	w->d = d;
	str_copy(w->token, token, sizeof(w->token));
	w->after = after;
	w->cb = cb;
	w->arg = arg;
	uv_timer_init(d->loop, &w->timer);
	w->timer.data = w;
	d->open_handles++;
	uv_timer_start(&w->timer, waiter_timeout, (uint64_t)wait * 1000, 0);
	w->next = d->waiters;
	if (w->next)
		w->next->pprev = &w->next;
	w->pprev = &d->waiters;
	d->waiters = w;
	d->waiting++;
	waiting_count(d, token, 1);
}

void
desks_forget(struct desks *d, void *arg)
{
	for (struct desks_waiter *w = d->waiters; w; w = w->next)
		if (w->arg == arg) {
			struct desks_res r;

			w->cb = NULL;
			desks_res_error(&r, 503, US_ECANCELED, "gone");
			desks_waiter_answer(w, &r);
			break;
		}
	for (struct desks_pending *p = d->pending; p; p = p->next)
		if (p->arg == arg)
			p->cb = NULL;
	desks_forget_parked(d, arg);
	desks_batch_forget(d, arg);
	desks_resumes_forget(d, arg);
}

void
desks_notice_all(struct desks *d, const char *text)
{
	sqlite3_stmt *st = desks_prep(d,
	    "SELECT token FROM sessions WHERE "
	    "expired_ms = 0");
	json_t *tokens = json_array();
	size_t i;
	json_t *t;

	if (st == NULL) {
		json_decref(tokens);
		return;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(tokens,
		    json_string((const char *)sqlite3_column_text(st, 0)));
	desks_unprep(d, st);
	json_array_foreach (tokens, i, t)
		desks_event_add(d, json_string_value(t), "notice",
		    json_pack("{s:s}", "message", text));
	json_decref(tokens);
}
