/*
 * The session writes of one loop turn in one transaction (desks.h):
 * events, activity marks, channels left; and the answers that wait for
 * that commit. A storm of desks coming back costs one sync per loop turn,
 * not one per desk.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "desks.h"

#define DESKS_EVENTS_KEEP 1000 /* per session */
#define DESKS_BATCH_RETRY_MS 50
#define DESKS_BATCH_MAX 100000 /* writes waiting */
/* writes in one transaction: a burst is spread over loop turns */
#define DESKS_BATCH_TURN 1024

/* An answer held until the writes queued before it are committed. */
struct desks_held {
	desks_cb cb; /* NULL: the request went away */
	void *arg;
	uint64_t need; /* the writes queued before it, ever */
	struct desks_res r;
	struct desks_held *next;
};

/* One event into the open transaction; 0 or -1. */
static int
event_write(struct desks *d, const char *token, const char *type,
    const char *text, int64_t at)
{
	sqlite3_stmt *st;
	int64_t seq = -1;
	int rc = -1;

	if ((st = desks_prep(d,
		 "UPDATE sessions SET seq = seq + 1 WHERE token = ? "
		 "RETURNING seq"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			seq = sqlite3_column_int64(st, 0);
		desks_unprep(d, st);
		if (rc == SQLITE_DONE)
			return 0; /* the session is gone: so is its event */
		rc = -1;
	}
	if (seq > 0 &&
	    (st = desks_prep(d,
		 "INSERT INTO events (token, seq, at_ms, "
		 "type, data) VALUES (?,?,?,?,?)"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, seq);
		sqlite3_bind_int64(st, 3, at);
		sqlite3_bind_text(st, 4, type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, text, -1, SQLITE_STATIC);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
		desks_unprep(d, st);
	}
	if (rc == 0 &&
	    (st = desks_prep(
		 d, "DELETE FROM events WHERE token = ? AND seq <= ?"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, seq - DESKS_EVENTS_KEEP);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
		desks_unprep(d, st);
	}
	return rc;
}

/* A statement of two text arguments and maybe a number; 0 or -1. */
static int
write2(
    struct desks *d, const char *sql, const char *a, const char *b, int64_t n)
{
	sqlite3_stmt *st = desks_prep(d, sql);
	int rc;

	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 2, n);
	rc = sqlite3_step(st);
	desks_unprep(d, st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* One queued write: ["e", token, type, data, at], ["t", token, at], ["u",
 * token, channel]. */
static int
op_write(struct desks *d, json_t *op)
{
	const char *kind = json_string_value(json_array_get(op, 0));
	const char *token = json_string_value(json_array_get(op, 1));

	switch (kind ? kind[0] : '?') {
	case 'e':
		return event_write(d, token,
		    json_string_value(json_array_get(op, 2)),
		    json_string_value(json_array_get(op, 3)),
		    json_integer_value(json_array_get(op, 4)));
	case 't':
		return write2(d,
		    "UPDATE sessions SET seen_ms = max(seen_ms, ?2) WHERE "
		    "token = ?1",
		    token, NULL, json_integer_value(json_array_get(op, 2)));
	case 'u':
		return write2(d,
		    "DELETE FROM joined WHERE token = ?1 AND channel = ?2",
		    token, json_string_value(json_array_get(op, 2)), 0);
	default:
		abort(); /* only this file queues them */
	}
}

/*
 * Hand the held answers whose writes are done (need <= upto) their
 * outcome: ok, or the commit that carried them failed.
 */
static void
held_answer(struct desks *d, uint64_t upto, bool ok)
{
	while (d->held && d->held->need <= upto) {
		struct desks_held *h = d->held;

		/* what comes in while answers are handed over waits its turn */
		if ((d->held = h->next) == NULL)
			d->held_tail = &d->held;
		if (!ok) {
			json_decref(h->r.body);
			desks_res_error(&h->r, 503, US_EUNAVAIL,
			    "the session's write did not commit; try again");
			h->r.retry_after = 1;
		} else if (h->r.err == 0 && h->r.status == 200) {
			d->stats.resumes++;
		}
		if (h->cb)
			h->cb(&h->r, h->arg);
		else
			json_decref(h->r.body);
		free(h);
	}
}

/*
 * The writes queued since the last flush in one transaction (one sync
 * for many; at most DESKS_BATCH_TURN, the rest on the next loop turn),
 * then the answers that waited for them, then the waiting event
 * requests woken. A transaction that fails answers the requests it
 * carried 503 (they may try again) and keeps the writes for the next
 * try, after DESKS_BATCH_RETRY_MS: the loop never waits for a locked
 * database.
 */
static void
batch_flush(uv_timer_t *t)
{
	struct desks *d = t->data;
	json_t *q = d->ev_queue, *rest, *e;
	size_t n = json_array_size(q), i;
	int rc = 0;

	if (n > DESKS_BATCH_TURN)
		n = DESKS_BATCH_TURN;
	if (n == 0) {
		held_answer(d, d->batch_done, true);
		return;
	}
	if ((d->ev_retrying && !store_writable(d->st)) ||
	    store_exec(d->st, "BEGIN IMMEDIATE") != 0) {
		d->ev_retrying = true;
		d->stats.commits_failed++;
		uv_timer_start(
		    &d->ev_timer, batch_flush, DESKS_BATCH_RETRY_MS, 0);
		held_answer(d, d->batch_done + n, false);
		return;
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = op_write(d, json_array_get(q, i));
	if (rc != 0 || store_exec(d->st, "COMMIT") != 0) {
		store_exec(d->st, "ROLLBACK");
		d->ev_retrying = true;
		d->stats.commits_failed++;
		uv_timer_start(
		    &d->ev_timer, batch_flush, DESKS_BATCH_RETRY_MS, 0);
		held_answer(d, d->batch_done + n, false);
		return;
	}
	d->stats.commits++;
	d->ev_retrying = false;
	d->batch_done += n;
	rest = json_array();
	for (i = n; i < json_array_size(q); i++)
		json_array_append(rest, json_array_get(q, i));
	d->ev_queue = rest;
	/* on the next turn (a timer for now would run in this one) */
	if (json_array_size(rest))
		uv_timer_start(&d->ev_timer, batch_flush, 1, 0);
	else
		json_object_clear(d->touched);
	held_answer(d, d->batch_done, true);
	for (i = 0; i < n; i++) {
		e = json_array_get(q, i);
		if (json_string_value(json_array_get(e, 0))[0] == 'e')
			desks_events_wake(
			    d, json_string_value(json_array_get(e, 1)));
	}
	json_decref(q);
}

/* Queue op (taken) for the next flush; 0 or -1 (logged). */
static int
batch_add(struct desks *d, json_t *op)
{
	if (op == NULL || d->ev_queue == NULL) {
		json_decref(op);
		return -1;
	}
	if (json_array_size(d->ev_queue) >= DESKS_BATCH_MAX) {
		log_error("desks: ETOOBIG: %d session writes wait for the "
			  "database; a %s write is dropped",
		    DESKS_BATCH_MAX, json_string_value(json_array_get(op, 0)));
		json_decref(op);
		return -1;
	}
	if (json_array_append_new(d->ev_queue, op) != 0)
		return -1;
	d->batch_queued++;
	desks_batch_soon(d);
	return 0;
}

static void
batch_idle(uv_idle_t *i)
{
	struct desks *d = i->data;

	uv_idle_stop(i);
	if (!uv_is_active((uv_handle_t *)&d->ev_timer))
		batch_flush(&d->ev_timer);
}

void
desks_batch_soon(struct desks *d)
{
	/*
	 * On the next loop turn, by an idle handle: a 0 ms timer started
	 * in libuv 1.44's timer phase runs in it again, and answers that
	 * wake MHD, whose requests queue writes that flush... would never
	 * leave it (the master's pings unread). A timer running (a retry,
	 * or the rest of a batch) flushes then.
	 */
	if (!uv_is_active((uv_handle_t *)&d->ev_timer))
		uv_idle_start(&d->ev_idle, batch_idle);
}

int
desks_batch_event(
    struct desks *d, const char *token, const char *type, const char *text)
{
	return batch_add(d,
	    json_pack("[s,s,s,s,I]", "e", token, type, text,
		(json_int_t)time_wall_ms()));
}

int
desks_batch_touch(struct desks *d, const char *token)
{
	if (json_object_get(d->touched, token))
		return 0; /* marked in this batch already */
	json_object_set_new(d->touched, token, json_true());
	return batch_add(
	    d, json_pack("[s,s,I]", "t", token, (json_int_t)time_wall_ms()));
}

int
desks_batch_unjoin(struct desks *d, const char *token, const char *channel)
{
	return batch_add(d, json_pack("[s,s,s]", "u", token, channel));
}

void
desks_batch_answer(struct desks *d, desks_cb cb, void *arg, struct desks_res *r)
{
	struct desks_held *h = calloc(1, sizeof(*h));

	if (h == NULL) {
		json_decref(r->body);
		desks_res_error(r, 500, US_ENOMEM, "out of memory");
		cb(r, arg);
		return;
	}
	h->cb = cb;
	h->arg = arg;
	h->need = d->batch_queued;
	h->r = *r; /* the body is the held answer's now */
	r->body = NULL;
	*d->held_tail = h;
	d->held_tail = &h->next;
	desks_batch_soon(d);
}

void
desks_batch_forget(struct desks *d, void *arg)
{
	for (struct desks_held *h = d->held; h; h = h->next)
		if (h->arg == arg)
			h->cb = NULL;
}

void
desks_batch_init(struct desks *d)
{
	d->ev_queue = json_array();
	d->touched = json_object();
	d->held = NULL;
	d->held_tail = &d->held;
	uv_timer_init(d->loop, &d->ev_timer);
	d->ev_timer.data = d;
	uv_idle_init(d->loop, &d->ev_idle);
	d->ev_idle.data = d;
}

void
desks_batch_close(struct desks *d, uv_close_cb closed)
{
	size_t left;

	/* what could not be written yet is tried once more, all of it */
	do {
		left = json_array_size(d->ev_queue);
		batch_flush(&d->ev_timer);
	} while (json_array_size(d->ev_queue) &&
	    json_array_size(d->ev_queue) < left);
	held_answer(d, UINT64_MAX, false);
	if (json_array_size(d->ev_queue))
		log_warn("desks: %zu session write(s) not done: the database "
			 "was locked",
		    json_array_size(d->ev_queue));
	json_decref(d->ev_queue);
	d->ev_queue = NULL;
	json_decref(d->touched);
	d->touched = NULL;
	uv_idle_stop(&d->ev_idle);
	uv_close((uv_handle_t *)&d->ev_idle, closed);
	uv_close((uv_handle_t *)&d->ev_timer, closed);
}
