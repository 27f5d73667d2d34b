/* Desk sessions (see desks.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "desks.h"

#define DESKS_SWEEP_MS 5000
#define DESKS_EXPIRED_KEEP_MS (24 * 3600 * 1000LL)
#define DESKS_TOUCH_MS 5000 /* expiry may come this much later */
#define DESKS_PARK_RETRY_MS 50
#define DESKS_PARK_MS 20000 /* then 503: below MHD's 30 s idle close */

/* ---- small helpers ---- */

/* The last handle of a freed desks module closed: free it. */
void
desks_gone(struct desks *d)
{
	limits_free(d->limits);
	json_decref(d->messaging_auth);
	json_decref(d->waiting_tokens);
	free(d);
}

void
desks_res_error(
    struct desks_res *r, unsigned status, int err, const char *fmt, ...)
{
	va_list ap;

	memset(r, 0, sizeof(*r));
	r->status = status;
	r->err = err;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
}

void
desks_res_ok(struct desks_res *r, json_t *body)
{
	memset(r, 0, sizeof(*r));
	r->status = 200;
	r->body = body;
}

void
desks_db_error(struct desks *d, struct desks_res *r)
{
	int rc = sqlite3_errcode(d->db) & 0xff;

	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED ||
	    (rc == SQLITE_OK && store_busy(d->st))) {
		desks_res_error(r, 503, US_EUNAVAIL,
		    "the server's database is locked by another process; "
		    "try again");
		r->retry_after = 1;
		r->db_busy = true;
		return;
	}
	log_error("desks: %s: %s", store_path(d->st), sqlite3_errmsg(d->db));
	desks_res_error(r, 500, US_EIO, "the server's database failed: %s",
	    sqlite3_errmsg(d->db));
}

/*
 * A storm of desks runs the same few statements thousands of times a
 * second: each is prepared once and kept (reset between uses), not
 * parsed again for every request. One in use is never handed out twice;
 * a second user of the same text gets a statement of its own.
 */
sqlite3_stmt *
desks_prep(struct desks *d, const char *sql)
{
	struct desks_stmt *place = NULL;
	sqlite3_stmt *st = NULL;

	for (size_t i = 0; i < DESKS_STMTS && !d->freeing; i++) {
		struct desks_stmt *k = &d->stmts[i];

		if (k->st == NULL) {
			if (place == NULL)
				place = k;
		} else if (!k->busy && strcmp(sqlite3_sql(k->st), sql) == 0) {
			k->busy = true;
			return k->st;
		}
	}
	if (sqlite3_prepare_v3(d->db, sql, -1,
		place ? SQLITE_PREPARE_PERSISTENT : 0, &st,
		NULL) != SQLITE_OK) {
		log_error("desks: %s", sqlite3_errmsg(d->db));
		return NULL;
	}
	d->stats.statements_prepared++;
	if (place) {
		place->st = st;
		place->busy = true;
	}
	return st;
}

void
desks_unprep(struct desks *d, sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < DESKS_STMTS; i++) {
		struct desks_stmt *k = &d->stmts[i];

		if (k->st != st)
			continue;
		if (d->freeing) {
			k->st = NULL;
			break; /* finalized below */
		}
		sqlite3_reset(st);
		sqlite3_clear_bindings(
		    st); /* they point at the caller's text */
		k->busy = false;
		return;
	}
	sqlite3_finalize(st);
}

void
desks_unprep_all(struct desks *d)
{
	for (size_t i = 0; i < DESKS_STMTS; i++) {
		struct desks_stmt *k = &d->stmts[i];

		if (k->st && !k->busy) {
			sqlite3_finalize(k->st);
			k->st = NULL;
		}
	}
}

/* A channel with no allow list is open to every user. */
bool
desks_allowed(
    const struct config *cfg, const struct config_channel *ch, const char *user)
{
	const struct config_user *u = config_user_find(cfg, user);

	if (u == NULL)
		return false;
	if (ch->allow.n == 0)
		return true;
	for (size_t i = 0; i < ch->allow.n; i++) {
		const char *a = ch->allow.v[i];

		if (a[0] == '@') {
			if (strlist_find(&u->groups, a + 1) >= 0)
				return true;
		} else if (strcmp(a, user) == 0) {
			return true;
		}
	}
	return false;
}

bool
desks_word_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= max &&
	    strspn(s,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		"0123456789._-") == n;
}

/* ---- sessions ---- */

void
desks_session_expire(struct desks *d, const char *token,
    const struct desks_session *s, const char *why)
{
	sqlite3_stmt *st = desks_prep(d,
	    "UPDATE sessions SET expired_ms = ?, ended = ? WHERE "
	    "token = ? AND expired_ms = 0");
	bool changed = false;

	if (st) {
		sqlite3_bind_int64(st, 1, time_wall_ms());
		sqlite3_bind_text(st, 2, why, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, token, -1, SQLITE_STATIC);
		changed = sqlite3_step(st) == SQLITE_DONE &&
		    sqlite3_changes(d->db) > 0;
		desks_unprep(d, st);
	}
	if (!changed)
		return; /* not written (a locked database): the sweep tries
			   again */
	licenses_release(d, s->slot, s->slot_lease, s->slot_rev);
	log_info("desks: session of %s on desk %s expired (%s)", s->user,
	    s->desk, why);
}

int
desks_session_get(struct desks *d, const char *token, struct desks_session *s,
    struct desks_res *r)
{
	char ended[128];
	sqlite3_stmt *st;
	int rc;

	if (token == NULL || strlen(token) != DESKS_TOKEN_LEN) {
		desks_res_error(r, 401, US_EUNAUTHORIZED,
		    "this needs 'Authorization: Bearer <session token>' from "
		    "a login");
		return r->err;
	}
	if ((st = desks_prep(d,
		 "SELECT user, desk, version, created_ms, seen_ms, "
		 "expired_ms, seq, slot, slot_lease, slot_rev, ended "
		 "FROM sessions WHERE token = ?")) == NULL) {
		desks_db_error(d, r);
		return r->err;
	}
	sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		desks_unprep(d, st);
		if (rc != SQLITE_DONE) {
			desks_db_error(d, r);
			return r->err;
		}
		desks_res_error(r, 401, US_EUNAUTHORIZED,
		    "no such session (logged out, or never logged in): log "
		    "in");
		return r->err;
	}
	str_copy(
	    s->user, (const char *)sqlite3_column_text(st, 0), sizeof(s->user));
	str_copy(
	    s->desk, (const char *)sqlite3_column_text(st, 1), sizeof(s->desk));
	str_copy(s->version, (const char *)sqlite3_column_text(st, 2),
	    sizeof(s->version));
	s->created = sqlite3_column_int64(st, 3);
	s->seen = sqlite3_column_int64(st, 4);
	s->expired = sqlite3_column_int64(st, 5);
	s->seq = sqlite3_column_int64(st, 6);
	s->slot = sqlite3_column_int64(st, 7);
	s->slot_lease = sqlite3_column_int64(st, 8);
	s->slot_rev = sqlite3_column_int64(st, 9);
	str_copy(
	    ended, (const char *)sqlite3_column_text(st, 10), sizeof(ended));
	desks_unprep(d, st);
	/* idle too long, and the sweep has not come yet (a restart) */
	if (!s->expired &&
	    time_wall_ms() - s->seen > d->cfg->cluster.session_timeout * 1000) {
		desks_session_expire(d, token, s, "idle");
		s->expired = time_wall_ms();
		ended[0] = '\0';
	}
	if (s->expired && ended[0] && strcmp(ended, "idle") != 0) {
		desks_res_error(r, 401, US_EEXPIRED,
		    "the session ended (%s); log in again", ended);
		return r->err;
	}
	if (s->expired) {
		desks_res_error(r, 401, US_EEXPIRED,
		    "the session expired after %ld s without a request; log "
		    "in again",
		    d->cfg->cluster.session_timeout);
		return r->err;
	}
	/*
	 * a write (and a sync) per request would cap the desks a server
	 * holds: mark it active when the mark is DESKS_TOUCH_MS old
	 */
	if (time_wall_ms() - s->seen < DESKS_TOUCH_MS)
		return 0;
	/* with the other writes of this loop turn: one commit for many */
	desks_batch_touch(d, token);
	return 0;
}

json_t *
desks_channels_json(struct desks *d, const char *token, const char *user)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < d->cfg->n_channels; i++) {
		const struct config_channel *ch = &d->cfg->channels[i];
		sqlite3_stmt *st;
		bool joined = false;
		char subject[200];

		if (!desks_allowed(d->cfg, ch, user))
			continue;
		if ((st = desks_prep(d,
			 "SELECT 1 FROM joined WHERE token = ? AND "
			 "channel = ?")) != NULL) {
			sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, ch->name, -1, SQLITE_STATIC);
			joined = sqlite3_step(st) == SQLITE_ROW;
			desks_unprep(d, st);
		}
		snprintf(subject, sizeof(subject), "us.%s.ch.%s",
		    d->cfg->cluster.name, ch->name);
		json_array_append_new(arr,
		    json_pack("{s:s,s:b,s:s}", "name", ch->name, "joined",
			joined, "subject", subject));
	}
	return arr;
}

/* Add an event to a session and wake its waiting requests. */

json_t *
desks_session_json(struct desks *d, const char *token,
    const struct desks_session *s, bool over)
{
	json_t *msg = json_array(), *servers = json_array(), *o;
	char created[32];

	for (size_t i = 0; i < d->cfg->cluster.messaging.n; i++)
		json_array_append_new(
		    msg, json_string(d->cfg->cluster.messaging.v[i]));
	/*
	 * every server of the cluster: a desk tries them after its own list,
	 * on the port for desks where a server has one
	 */
	for (size_t i = 0; i < d->cfg->n_servers; i++) {
		const struct config_server *sv = &d->cfg->servers[i];
		char url[300];

		config_api_url(d->cfg, sv->address,
		    sv->desk_port ? sv->desk_port : sv->api_port, url,
		    sizeof(url));
		json_array_append_new(servers, json_string(url));
	}
	time_iso8601(s->created, created, sizeof(created));
	o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:o,"
		      "s:{s:I,s:I,s:b,s:s}}",
	    "token", token, "user", s->user, "desk", s->desk, "version",
	    s->version, "server", agent_self(d->a), "cluster",
	    d->cfg->cluster.name, "created", created, "session_timeout",
	    (json_int_t)d->cfg->cluster.session_timeout, "last_event",
	    (json_int_t)s->seq, "channels",
	    desks_channels_json(d, token, s->user), "messaging", msg, "servers",
	    servers, "license", "limit", (json_int_t)d->cfg->cluster.licenses,
	    "slot", (json_int_t)s->slot, "over", over, "policy",
	    d->cfg->cluster.license_policy == CONFIG_LICENSE_ENFORCE ? "enforce"
								     : "warn");
	/* the session's own channel is HTTPS where NATS needs secrets */
	if (o && d->messaging_auth)
		json_object_set(o, "messaging_auth", d->messaging_auth);
	return o;
}

/* ---- the other requests of a session ---- */

static void
logout_now(struct desks *d, const char *token, struct desks_res *r)
{
	struct desks_session s;
	sqlite3_stmt *st;
	int rc = SQLITE_ERROR;

	if (desks_session_get(d, token, &s, r) != 0)
		return;
	if ((st = desks_prep(d, "DELETE FROM sessions WHERE token = ?"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		desks_unprep(d, st);
	}
	if (rc != SQLITE_DONE) {
		desks_db_error(d, r);
		return;
	}
	licenses_release(d, s.slot, s.slot_lease, s.slot_rev);
	log_info("desks: %s logged out of desk %s", s.user, s.desk);
	desks_res_ok(r, json_pack("{s:s}", "user", s.user));
}

void
desks_channels(struct desks *d, const char *token, struct desks_res *r)
{
	struct desks_session s;

	if (desks_session_get(d, token, &s, r) != 0)
		return;
	desks_res_ok(r,
	    json_pack(
		"{s:o}", "channels", desks_channels_json(d, token, s.user)));
}

static void
join_now(struct desks *d, const char *token, const char *channel, bool join,
    struct desks_res *r)
{
	const struct config_channel *ch = config_channel_find(d->cfg, channel);
	struct desks_session s;
	sqlite3_stmt *st;
	int rc = SQLITE_ERROR;

	if (desks_session_get(d, token, &s, r) != 0)
		return;
	if (ch == NULL) {
		desks_res_error(r, 404, US_ENOTFOUND, "no channel %s", channel);
		return;
	}
	if (join && !desks_allowed(d->cfg, ch, s.user)) {
		desks_res_error(r, 403, US_ENOTALLOWED,
		    "%s may not join channel %s", s.user, channel);
		return;
	}
	st = desks_prep(d,
	    join ? "INSERT OR IGNORE INTO joined (token, channel, "
		   "since_ms) VALUES (?, ?, ?)"
		 : "DELETE FROM joined WHERE token = ? AND channel "
		   "= ?");
	if (st) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
		if (join)
			sqlite3_bind_int64(st, 3, time_wall_ms());
		rc = sqlite3_step(st);
		desks_unprep(d, st);
	}
	if (rc != SQLITE_DONE) {
		desks_db_error(d, r);
		return;
	}
	desks_res_ok(
	    r, json_pack("{s:s,s:b}", "channel", channel, "joined", join));
}

/* ---- requests that wait for a locked database ---- */

/* A logout, join or leave whose write met a lock held elsewhere. */
struct desks_parked {
	enum { PARKED_LOGOUT, PARKED_JOIN, PARKED_LEAVE } what;
	char token[DESKS_TOKEN_LEN + 1];
	char channel[CONFIG_NAME_MAX + 1];
	int64_t until; /* monotonic ms: then 503 */
	desks_cb cb;
	void *arg;
	struct desks_parked *next;
};

static void
run_parked(struct desks *d, struct desks_parked *k, struct desks_res *r)
{
	if (k->what == PARKED_LOGOUT)
		logout_now(d, k->token, r);
	else
		join_now(d, k->token, k->channel, k->what == PARKED_JOIN, r);
}

/*
 * Answer r, or, when the database was locked by another process, keep
 * the request and try it again every DESKS_PARK_RETRY_MS until
 * DESKS_PARK_MS have passed: the loop never waits for the lock.
 */
static void
answer_or_park(struct desks *d, struct desks_parked *k, struct desks_res *r)
{
	struct desks_parked *copy;

	if (!r->db_busy || (int64_t)time_mono_ms() >= k->until ||
	    (copy = malloc(sizeof(*copy))) == NULL) {
		if (k->cb)
			k->cb(r, k->arg);
		else
			json_decref(r->body);
		return;
	}
	*copy = *k;
	copy->next = d->parked;
	d->parked = copy;
	desks_park(d);
}

/* A parked login whose time is up: its slot back, 503. */
static void
give_up_login(struct desks_pending *p)
{
	struct desks_res r;

	licenses_release(p->d, p->park_slot, p->park_lease, p->park_rev);
	desks_res_error(&r, 503, US_EUNAVAIL,
	    "the server's database stayed locked by another process; try "
	    "again");
	r.retry_after = 1;
	desks_pending_done(p, &r);
}

/*
 * Every DESKS_PARK_RETRY_MS while something is parked: when the lock is
 * free, what waited is done, oldest first (a desk's newer login must
 * come after its older one); while it is not, what has waited its
 * DESKS_PARK_MS is answered 503.
 */
static void
park_cb(uv_timer_t *t)
{
	struct desks *d = t->data;
	bool writable = store_writable(d->st);
	int64_t now = (int64_t)time_mono_ms();
	struct desks_parked *list = d->parked, *old = NULL, *k;
	struct desks_pending **due = NULL, *p;
	size_t n = 0, cap = 0;
	struct desks_res r;

	d->parked = NULL;
	while ((k = list) != NULL) { /* the newest is at the head */
		list = k->next;
		k->next = old;
		old = k;
	}
	while ((k = old) != NULL) {
		old = k->next;
		if (writable || now >= k->until) {
			if (writable)
				run_parked(d, k, &r);
			else
				desks_res_error(&r, 503, US_EUNAVAIL,
				    "the server's database stayed locked by "
				    "another process; try again");
			answer_or_park(d, k, &r);
			free(k);
		} else {
			k->next = d->parked;
			d->parked = k;
		}
	}
	for (p = d->pending; p; p = p->next) {
		if (!p->parked)
			continue;
		if (n == cap) {
			struct desks_pending **v;

			cap = cap ? cap * 2 : 16;
			if ((v = realloc(due, cap * sizeof(*v))) == NULL)
				break;
			due = v;
		}
		due[n++] = p;
	}
	while (n > 0) { /* oldest first: the list holds the newest first */
		p = due[--n];
		if (writable) {
			p->parked = false;
			desks_finish(
			    p, p->park_slot, p->park_rev, p->park_over);
		} else if (now >= p->park_until) {
			p->parked = false;
			give_up_login(p);
		}
	}
	free(due);
	for (p = d->pending; p && !d->parked; p = p->next)
		if (p->parked)
			break;
	if (d->parked || p)
		desks_park(d);
}

void
desks_park(struct desks *d)
{
	if (!d->freeing && !uv_is_active((uv_handle_t *)&d->park_timer))
		uv_timer_start(&d->park_timer, park_cb, DESKS_PARK_RETRY_MS, 0);
}

static void
parked_request(struct desks *d, int what, const char *token,
    const char *channel, desks_cb cb, void *arg)
{
	struct desks_parked k = {.what = what, .cb = cb, .arg = arg};
	struct desks_res r;

	str_copy(k.token, token ? token : "", sizeof(k.token));
	str_copy(k.channel, channel ? channel : "", sizeof(k.channel));
	k.until = (int64_t)time_mono_ms() + DESKS_PARK_MS;
	run_parked(d, &k, &r);
	answer_or_park(d, &k, &r);
}

void
desks_logout(struct desks *d, const char *token, desks_cb cb, void *arg)
{
	parked_request(d, PARKED_LOGOUT, token, NULL, cb, arg);
}

void
desks_join(struct desks *d, const char *token, const char *channel, bool join,
    desks_cb cb, void *arg)
{
	parked_request(
	    d, join ? PARKED_JOIN : PARKED_LEAVE, token, channel, cb, arg);
}

/* ---- expiry ---- */

static void
sweep_cb(uv_timer_t *t)
{
	struct desks *d = t->data;
	int64_t now = time_wall_ms(),
		idle = d->cfg->cluster.session_timeout * 1000;
	sqlite3_stmt *st;
	json_t *gone = json_array();
	size_t i;
	json_t *g;

	st = desks_prep(d,
	    "UPDATE sessions SET expired_ms = ?1, ended = 'idle' WHERE "
	    "expired_ms = 0 AND seen_ms < ?2 RETURNING token, user, desk, "
	    "slot, slot_lease, slot_rev");
	if (st) {
		sqlite3_bind_int64(st, 1, now);
		sqlite3_bind_int64(st, 2, now - idle);
		while (sqlite3_step(st) == SQLITE_ROW)
			json_array_append_new(gone,
			    json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "token",
				sqlite3_column_text(st, 0), "user",
				sqlite3_column_text(st, 1), "desk",
				sqlite3_column_text(st, 2), "slot",
				(json_int_t)sqlite3_column_int64(st, 3),
				"lease",
				(json_int_t)sqlite3_column_int64(st, 4), "rev",
				(json_int_t)sqlite3_column_int64(st, 5)));
		desks_unprep(d, st);
	}
	json_array_foreach (gone, i, g) {
		const char *token =
		    json_string_value(json_object_get(g, "token"));

		log_info("desks: session of %s on desk %s expired (idle)",
		    json_string_value(json_object_get(g, "user")),
		    json_string_value(json_object_get(g, "desk")));
		licenses_release(d,
		    json_integer_value(json_object_get(g, "slot")),
		    json_integer_value(json_object_get(g, "lease")),
		    json_integer_value(json_object_get(g, "rev")));
		desks_events_wake(d, token); /* they get EEXPIRED */
	}
	json_decref(gone);
	if ((st = desks_prep(d,
		 "DELETE FROM sessions WHERE expired_ms > 0 AND "
		 "expired_ms < ?"))) {
		sqlite3_bind_int64(st, 1, now - DESKS_EXPIRED_KEEP_MS);
		sqlite3_step(st);
		desks_unprep(d, st);
	}
}

/* ---- life ---- */

json_t *
desks_versions(struct desks *d)
{
	json_t *v = json_array();

	for (size_t i = 0; i < d->cfg->cluster.desk_versions.n; i++)
		json_array_append_new(
		    v, json_string(d->cfg->cluster.desk_versions.v[i]));
	return json_pack("{s:o,s:s,s:s}", "versions", v, "server",
	    agent_self(d->a), "cluster", d->cfg->cluster.name);
}

void
desks_counters(
    const struct desks *d, long *sessions, long *licensed, long *waiting)
{
	sqlite3_stmt *st;

	*sessions = *licensed = 0;
	*waiting = d->waiting;
	if (sqlite3_prepare_v2(d->db,
		"SELECT count(*), count(CASE WHEN slot >= 0 AND slot_lease = "
		"? THEN 1 END) FROM sessions WHERE expired_ms = 0",
		-1, &st, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_int64(st, 1, agent_lease_id(d->a));
	if (sqlite3_step(st) == SQLITE_ROW) {
		*sessions = (long)sqlite3_column_int64(st, 0);
		*licensed = (long)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
}

const unsigned desks_resume_le_ms[DESKS_RESUME_BUCKETS] = {
    5, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000};

void
desks_stats_get(const struct desks *d, struct desks_stats *out)
{
	*out = d->stats;
}

void
desks_resume_timed(struct desks *d, uint64_t ms)
{
	for (int i = 0; i < DESKS_RESUME_BUCKETS; i++)
		if (ms <= desks_resume_le_ms[i]) {
			d->stats.resume_ms[i]++;
			break;
		}
	d->stats.resume_ms_sum += ms;
	d->stats.resume_ms_count++;
}

json_t *
desks_sessions_json(struct desks *d, bool *toobig)
{
	int64_t now = time_wall_ms(), lease = agent_lease_id(d->a);
	json_t *arr = json_array(), *lic;
	long held = 0;
	sqlite3_stmt *st;
	char since[32], seen[32];
	int rc = SQLITE_DONE;

	*toobig = false;
	if ((st = desks_prep(d,
		 "SELECT token, user, desk, version, created_ms, seen_ms, "
		 "slot, slot_lease FROM sessions WHERE expired_ms = 0 "
		 "ORDER BY created_ms, user, desk LIMIT ?")) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, DESKS_LIST_MAX + 1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *token = (const char *)sqlite3_column_text(st, 0);
		int64_t seen_ms = sqlite3_column_int64(st, 5);
		bool licensed = sqlite3_column_int64(st, 6) >= 0 &&
		    sqlite3_column_int64(st, 7) == lease;
		bool online = desks_events_waiting(d, token) ||
		    now - seen_ms < DESKS_ONLINE_MS;

		if (json_array_size(arr) == DESKS_LIST_MAX) {
			log_error("desks: more than %d live sessions: "
				  "GET /v1/desks refused",
			    DESKS_LIST_MAX);
			*toobig = true;
			goto fail;
		}
		held += licensed;
		time_iso8601(sqlite3_column_int64(st, 4), since, sizeof(since));
		time_iso8601(seen_ms, seen, sizeof(seen));
		json_array_append_new(arr,
		    json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:b}", "user",
			(const char *)sqlite3_column_text(st, 1), "desk",
			(const char *)sqlite3_column_text(st, 2), "version",
			(const char *)sqlite3_column_text(st, 3), "server",
			agent_self(d->a), "since", since, "seen", seen, "state",
			online ? "online" : "offline", "licensed", licensed));
	}
	if (rc != SQLITE_DONE) {
		log_error(
		    "desks: reading the sessions: %s", sqlite3_errmsg(d->db));
		goto fail;
	}
	desks_unprep(d, st);
	lic = licenses_json(d, held);
	return json_pack("{s:s,s:o,s:I,s:o}", "server", agent_self(d->a),
	    "licenses", lic, "session_timeout_s",
	    (json_int_t)d->cfg->cluster.session_timeout, "sessions", arr);
fail:
	desks_unprep(d, st);
	json_decref(arr);
	return NULL;
}

/* The config's NATS credentials, or NULL when it sets none. */
static json_t *
messaging_credentials(const struct config_cluster *c)
{
	json_t *o;

	if (c->messaging_token == NULL && c->messaging_user == NULL)
		return NULL;
	if ((o = json_object()) == NULL)
		return NULL;
	if (c->messaging_token)
		json_object_set_new(
		    o, "token", json_string(c->messaging_token));
	if (c->messaging_user) {
		json_object_set_new(o, "user", json_string(c->messaging_user));
		json_object_set_new(
		    o, "password", json_string(c->messaging_password));
	}
	return o;
}

int
desks_messaging_tls(
    struct desks *d, const char *ca, const char *cert, const char *key)
{
	json_t *o = d->messaging_auth ? d->messaging_auth : json_object();

	if (o == NULL)
		return US_ENOMEM;
	if (ca)
		json_object_set_new(o, "ca", json_string(ca));
	if (cert && key) {
		json_object_set_new(o, "cert", json_string(cert));
		json_object_set_new(o, "key", json_string(key));
	}
	if (json_object_size(o) == 0) {
		json_decref(o);
		o = NULL;
	}
	d->messaging_auth = o;
	return 0;
}

void
desks_set_config(struct desks *d, const struct config *cfg)
{
	/* users, groups, channels, licenses and timeouts are read from it */
	d->cfg = cfg;
	limits_set_max(d->limits, (unsigned)cfg->cluster.login_failures);
	licenses_reconcile_soon(d, 0);
}

struct desks *
desks_new(uv_loop_t *loop, struct agent *a, struct store *st)
{
	struct desks *d = calloc(1, sizeof(*d));
	long n, lic, w;

	if (d == NULL)
		return NULL;
	d->loop = loop;
	d->a = a;
	d->st = st;
	d->db = (sqlite3 *)store_db(st);
	d->cfg = agent_config(a);
	d->messaging_auth = messaging_credentials(&d->cfg->cluster);
	if ((d->limits = limits_new(
		 (unsigned)d->cfg->cluster.login_failures)) == NULL) {
		json_decref(d->messaging_auth);
		free(d);
		return NULL;
	}
	uv_timer_init(loop, &d->sweep);
	d->sweep.data = d;
	/* the sweep, the licenses', the batch's two, the parked, resumes' */
	d->open_handles = 6;
	uv_timer_init(loop, &d->park_timer);
	d->park_timer.data = d;
	desks_batch_init(d);
	desks_resumes_init(d);
	uv_timer_start(&d->sweep, sweep_cb, DESKS_SWEEP_MS, DESKS_SWEEP_MS);
	licenses_init(d);
	desks_counters(d, &n, &lic, &w);
	if (n)
		log_info("desks: %ld session(s) restored from %s", n,
		    store_path(st));
	return d;
}

static void
sweep_closed(uv_handle_t *h)
{
	struct desks *d = h->data;

	if (--d->open_handles == 0)
		desks_gone(d); /* the last of its handles and checks */
}

void
desks_free(struct desks *d)
{
	struct desks_res r;

	if (d == NULL)
		return;
	d->freeing = true;
	while (d->waiters) {
		desks_res_error(
		    &r, 503, US_ECANCELED, "the server is stopping");
		desks_waiter_answer(d->waiters, &r);
	}
	for (struct desks_pending *p = d->pending, *next; p; p = next) {
		next = p->next;
		etcd_req_cancel(p->req);
		p->req = NULL;
		if (p->working) {
			p->cb = NULL; /* verify_done frees it */
			uv_cancel((uv_req_t *)&p->work);
			continue;
		}
		desks_res_error(
		    &r, 503, US_ECANCELED, "the server is stopping");
		desks_pending_done(p, &r);
	}
	while (d->parked) {
		struct desks_parked *k = d->parked;

		d->parked = k->next;
		desks_res_error(
		    &r, 503, US_ECANCELED, "the server is stopping");
		if (k->cb)
			k->cb(&r, k->arg);
		free(k);
	}
	uv_close((uv_handle_t *)&d->sweep, sweep_closed);
	uv_close((uv_handle_t *)&d->park_timer, sweep_closed);
	desks_resumes_close(d, sweep_closed);
	desks_batch_close(d, sweep_closed);
	licenses_close(d, sweep_closed);
	/* the ones still handed out are finalized when given back */
	desks_unprep_all(d);
}

void
desks_forget_parked(struct desks *d, void *arg)
{
	for (struct desks_parked *k = d->parked; k; k = k->next)
		if (k->arg == arg)
			k->cb = NULL;
}

void
desks_lease_changed(struct desks *d)
{
	if (d)
		licenses_reconcile_soon(d, 0);
}

void
desks_lease_lost(struct desks *d, const char *why)
{
	struct desks_res r;
	long n = 0;

	if (d == NULL || d->freeing)
		return;
	while (d->waiters) {
		desks_res_error(&r, 503, US_EFENCED,
		    "%s cannot serve desks now (%s); try another server",
		    agent_self(d->a), why);
		desks_waiter_answer(d->waiters, &r);
		n++;
	}
	desks_res_error(&r, 503, US_EFENCED,
	    "%s cannot serve desks now (%s); try another server",
	    agent_self(d->a), why);
	desks_resumes_refuse(d, &r);
	if (n)
		log_warn(
		    "desks: %ld waiting event request(s) ended: no lease", n);
}
