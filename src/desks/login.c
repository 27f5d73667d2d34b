/* Desk logins and resumes: the password, the limits, the session (desks.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "desks.h"

#define DESKS_VERIFY_MAX 32 /* password checks waiting or running */
/*
 * Password checks running at once. argon2id is bound by CPU and memory
 * (64 MiB each) by design: more at once than the cores only starve the
 * loop and the rest of the pool, and a login storm must not make the
 * master take the worker for hung.
 */
#define DESKS_VERIFY_RUN 2
#define DESKS_PARK_MS 20000 /* a login waits this long for a locked db */
/* resumes taken a loop turn: a storm of desks never stalls the loop */
#define DESKS_RESUMES_TURN 128 /* resumes and events requests */

/* A resume, or an events request, waiting for its turn. */
struct desks_resuming {
	char token[DESKS_TOKEN_LEN + 1]; /* empty: none, or not a token */
	bool events; /* GET /v1/desk/events: after, wait */
	int64_t after;
	long wait;
	desks_cb cb; /* NULL: the request went away */
	void *arg;
	struct desks_resuming *next;
};

/* ---- the end of a login or resume ---- */

/*
 * One session per desk: a new login ends the old ones of that user and
 * desk, and frees their slots (unless the new one took the same over).
 * In the transaction that writes the new session.
 */
static int
end_same_desk(struct desks_pending *p, int64_t slot)
{
	struct desks *d = p->d;
	sqlite3_stmt *st;
	json_t *old = json_array(), *o;
	size_t i;
	int rc;

	st = desks_prep(d,
	    "UPDATE sessions SET expired_ms = ?1, ended = 'replaced by a "
	    "new login on this desk' WHERE user = ?2 AND desk = ?3 AND "
	    "expired_ms = 0 RETURNING slot, slot_lease, slot_rev");
	if (st == NULL) {
		json_decref(old);
		return -1;
	}
	sqlite3_bind_int64(st, 1, time_wall_ms());
	sqlite3_bind_text(st, 2, p->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, p->desk, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(old,
		    json_pack("[I,I,I]",
			(json_int_t)sqlite3_column_int64(st, 0),
			(json_int_t)sqlite3_column_int64(st, 1),
			(json_int_t)sqlite3_column_int64(st, 2)));
	desks_unprep(d, st);
	json_array_foreach (old, i, o) {
		int64_t n = json_integer_value(json_array_get(o, 0));

		if (n != slot)
			licenses_release(d, n,
			    json_integer_value(json_array_get(o, 1)),
			    json_integer_value(json_array_get(o, 2)));
	}
	json_decref(old);
	return rc == SQLITE_DONE ? 0 : -1;
}

void
desks_finish(struct desks_pending *p, int64_t slot, int64_t rev, bool over)
{
	struct desks *d = p->d;
	/* a parked login keeps the lease its slot was claimed on */
	int64_t lease = slot < 0 ? 0
	    : p->park_lease      ? p->park_lease
				 : agent_lease_id(d->a);
	struct desks_session s;
	struct desks_res r;
	sqlite3_stmt *st;
	int rc = SQLITE_ERROR;

	if (!p->resume) {
		if (store_exec(d->st, "BEGIN IMMEDIATE") != 0) {
			desks_db_error(d, &r);
			goto failed;
		}
		if (end_same_desk(p, slot) == 0 &&
		    (st = desks_prep(d,
			 "INSERT INTO sessions (token, user, desk, version, "
			 "created_ms, seen_ms, slot, slot_lease, slot_rev) "
			 "VALUES (?,?,?,?,?,?,?,?,?)"))) {
			int64_t now = time_wall_ms();

			sqlite3_bind_text(st, 1, p->token, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, p->user, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, p->desk, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 4, p->version, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 5, now);
			sqlite3_bind_int64(st, 6, now);
			sqlite3_bind_int64(st, 7, slot);
			sqlite3_bind_int64(st, 8, lease);
			sqlite3_bind_int64(st, 9, rev);
			rc = sqlite3_step(st);
			desks_unprep(d, st);
		}
		if (rc != SQLITE_DONE || store_exec(d->st, "COMMIT") != 0) {
			desks_db_error(
			    d, &r); /* before the rollback clears it */
			store_exec(d->st, "ROLLBACK");
			goto failed;
		}
		log_info("desks: %s logged in on desk %s (version %s)%s",
		    p->user, p->desk, p->version,
		    over ? ", over the license limit" : "");
	} else if (slot >= 0) {
		/* the reconciler may have given it one meanwhile: keep one */
		licenses_keep(d, p->token, slot, rev);
	}
	if (over)
		desks_event_add(d, p->token, "license_warning",
		    json_pack("{s:I,s:s}", "licenses",
			(json_int_t)d->cfg->cluster.licenses, "message",
			"more desks are logged in than the cluster is "
			"licensed for"));
	if (desks_session_get(d, p->token, &s, &r) != 0) {
		desks_pending_done(p, &r);
		return;
	}
	desks_res_ok(&r, desks_session_json(d, p->token, &s, over));
	if (p->resume && p->cb) {
		struct desks_res none = {0};

		/* a resume's writes are batched: it is answered after them */
		desks_batch_answer(d, p->cb, p->arg, &r);
		p->cb = NULL;
		desks_pending_done(p, &none);
		return;
	}
	desks_pending_done(p, &r);
	return;
failed:
	if (r.db_busy) {
		/* another process holds the database: the answer waits */
		if (p->park_until == 0)
			p->park_until = (int64_t)time_mono_ms() + DESKS_PARK_MS;
		if ((int64_t)time_mono_ms() < p->park_until) {
			p->parked = true;
			p->park_slot = slot;
			p->park_rev = rev;
			p->park_over = over;
			p->park_lease = lease;
			p->claiming = slot; /* the reconciler leaves it alone */
			desks_park(d);
			return;
		}
	}
	licenses_release(d, slot, lease, rev);
	desks_pending_done(p, &r);
}

/* ---- login ---- */

static void
pending_free(struct desks_pending *p)
{
	for (struct desks_pending **pp = &p->d->pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	licenses_scan_free(p->scan);
	if (p->password) {
		sodium_memzero(p->password, strlen(p->password));
		free(p->password);
	}
	free(p);
}

void
desks_pending_done(struct desks_pending *p, struct desks_res *r)
{
	if (p->cb)
		p->cb(r, p->arg);
	else
		json_decref(r->body);
	pending_free(p);
}

/* On the thread pool: argon2id takes its time by design. */
static void
verify_work(uv_work_t *w)
{
	struct desks_pending *p = w->data;

	/*
	 * an unknown user costs one check against another user's hash, as
	 * a wrong password does: the time tells no names
	 */
	p->verified = p->hash &&
	    crypto_pwhash_str_verify(
		p->hash, p->password, strlen(p->password)) == 0 &&
	    !p->unknown;
}

static void verify_done(uv_work_t *w, int status);

/* Start the oldest waiting password checks while there is a turn. */
static void
verify_next(struct desks *d)
{
	while (!d->freeing && d->verify_running < DESKS_VERIFY_RUN) {
		struct desks_pending *p = NULL;
		struct desks_res r;

		/* d->pending is newest first: the last queued waited longest */
		for (struct desks_pending *q = d->pending; q; q = q->next)
			if (q->queued)
				p = q;
		if (p == NULL)
			return;
		p->queued = false;
		p->working = true;
		p->work.data = p;
		d->open_handles++;
		d->verify_running++;
		if (uv_queue_work(
			d->loop, &p->work, verify_work, verify_done) != 0) {
			p->working = false;
			d->open_handles--;
			d->verify_running--;
			d->verifying--;
			desks_res_error(
			    &r, 500, US_EINTERNAL, "cannot check the password");
			desks_pending_done(p, &r);
		}
	}
}

static void
verify_done(uv_work_t *w, int status)
{
	struct desks_pending *p = w->data;
	struct desks *d = p->d;
	struct desks_res r;

	p->working = false;
	d->open_handles--;
	d->verify_running--;
	verify_next(d);
	if (d->freeing) {
		pending_free(p); /* its cb was dropped by desks_free */
		d->verifying--;
		if (d->open_handles == 0)
			desks_gone(d);
		return;
	}
	if (status != 0) {
		d->verifying--;
		desks_res_error(
		    &r, 503, US_ECANCELED, "the password check failed");
		desks_pending_done(p, &r);
		return;
	}
	d->verifying--;
	if (!p->verified) {
		char key[160];

		log_warn("desks: login of %s on desk %s from %s refused: wrong "
			 "user or password",
		    p->user, p->desk, p->address);
		snprintf(
		    key, sizeof(key), "user %s from %s", p->user, p->address);
		limits_failed(d->limits, key);
		snprintf(key, sizeof(key), "address %s", p->address);
		limits_failed(d->limits, key);
		desks_res_error(
		    &r, 401, US_EUNAUTHORIZED, "wrong user or password");
		desks_pending_done(p, &r);
		return;
	}
	if (!p->resume) {
		char key[160];

		snprintf(
		    key, sizeof(key), "user %s from %s", p->user, p->address);
		limits_clear(d->limits, key);
	}
	licenses_acquire(p);
}

static struct desks_pending *
pending_new(struct desks *d, desks_cb cb, void *arg)
{
	struct desks_pending *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->d = d;
	p->cb = cb;
	p->arg = arg;
	p->claiming = -1;
	p->next = d->pending;
	d->pending = p;
	return p;
}

int
desks_login_parse(const struct config *cfg, const char *body, size_t len,
    struct desks_login *out, struct desks_res *r)
{
	const char *user = NULL, *pw = NULL, *desk = NULL, *version = NULL;
	json_error_t jerr;
	bool known = false;
	json_t *o;

	memset(out, 0, sizeof(*out));
	memset(r, 0, sizeof(*r));
	if (len > DESKS_BODY_MAX) {
		desks_res_error(r, 413, US_ETOOBIG, "login body over %u bytes",
		    DESKS_BODY_MAX);
		return r->err;
	}
	if ((o = json_loadb(body ? body : "", len, 0, &jerr)) == NULL) {
		desks_res_error(r, 400, US_EINVAL,
		    "login body, line %d column %d: %s", jerr.line, jerr.column,
		    jerr.text);
		return r->err;
	}
	if (json_unpack_ex(o, &jerr, 0, "{s:s,s:s,s:s,s:s}", "user", &user,
		"password", &pw, "desk", &desk, "version", &version) != 0) {
		desks_res_error(r, 400, US_EINVAL,
		    "login body: %s (it needs \"user\", \"password\", "
		    "\"desk\" and \"version\", all strings)",
		    jerr.text);
		json_decref(o);
		return r->err;
	}
	if (!desks_word_ok(user, CONFIG_NAME_MAX) || !desks_word_ok(desk, 64) ||
	    strlen(pw) > 256 || !desks_word_ok(version, 31)) {
		desks_res_error(r, 400, US_EINVAL,
		    "login body: user and desk are letters, digits, '.', '_' "
		    "or '-' (user at most %d, desk at most 64), version at "
		    "most 31, password at most 256",
		    CONFIG_NAME_MAX);
		json_decref(o);
		return r->err;
	}
	str_copy(out->user, user, sizeof(out->user));
	str_copy(out->desk, desk, sizeof(out->desk));
	str_copy(out->version, version, sizeof(out->version));
	str_copy(out->password, pw, sizeof(out->password));
	json_decref(o);
	for (size_t i = 0; i < cfg->cluster.desk_versions.n; i++)
		known = known ||
		    strcmp(cfg->cluster.desk_versions.v[i], out->version) == 0;
	if (!known) {
		json_t *v = json_array();

		for (size_t i = 0; i < cfg->cluster.desk_versions.n; i++)
			json_array_append_new(
			    v, json_string(cfg->cluster.desk_versions.v[i]));
		desks_res_error(r, 409, US_EVERSION,
		    "desk version %s is not accepted here", out->version);
		r->body = json_pack("{s:o}", "versions", v);
		sodium_memzero(out->password, sizeof(out->password));
		return r->err;
	}
	return 0;
}

/* The wait before this login may be tried, or 0; r filled when not 0. */
static int
login_limited(struct desks *d, const struct desks_login *in,
    const char *address, struct desks_res *r)
{
	char ukey[160], akey[160];
	int64_t wait;

	/*
	 * a user from an address: a guesser elsewhere cannot lock the agent
	 * out; an address, ten times as many: guesses over many names
	 */
	snprintf(ukey, sizeof(ukey), "user %s from %s", in->user, address);
	snprintf(akey, sizeof(akey), "address %s", address);
	wait = limits_wait_ms(d->limits, ukey, 1);
	if (limits_wait_ms(d->limits, akey, 10) > wait)
		wait = limits_wait_ms(d->limits, akey, 10);
	if (wait > 0) {
		log_warn("desks: login of %s from %s refused: over %ld failed "
			 "logins a minute",
		    in->user, address, d->cfg->cluster.login_failures);
		desks_res_error(r, 429, US_ELIMITED,
		    "too many failed logins for this user or from this "
		    "address; try again in %" PRId64 " s",
		    (wait + 999) / 1000);
		r->retry_after = (long)((wait + 999) / 1000);
		return r->err;
	}
	if (d->verifying >= DESKS_VERIFY_MAX) {
		log_warn(
		    "desks: EUNAVAIL: %d password checks waiting; login of "
		    "%s refused",
		    DESKS_VERIFY_MAX, in->user);
		desks_res_error(r, 503, US_EUNAVAIL,
		    "%d logins are being checked; try again in a second",
		    DESKS_VERIFY_MAX);
		r->retry_after = 1;
		return r->err;
	}
	return 0;
}

void
desks_login(struct desks *d, const char *body, size_t len, const char *peer,
    desks_cb cb, void *arg)
{
	char address[64];
	const struct config_user *u;
	unsigned char raw[DESKS_TOKEN_LEN / 2];
	struct desks_login in;
	struct desks_res r;
	struct desks_pending *p;
	const char *user, *desk, *version, *pw;

	/* the address without its port: a client's ports are many */
	str_copy(address, peer ? peer : "?", sizeof(address));
	if (strrchr(address, ':'))
		*strrchr(address, ':') = '\0';
	if (desks_login_parse(d->cfg, body, len, &in, &r) != 0 ||
	    login_limited(d, &in, address, &r) != 0) {
		sodium_memzero(in.password, sizeof(in.password));
		cb(&r, arg);
		return;
	}
	user = in.user;
	desk = in.desk;
	version = in.version;
	pw = in.password;
	if ((p = pending_new(d, cb, arg)) == NULL ||
	    (p->password = strdup(pw)) == NULL) {
		if (p)
			pending_free(p);
		desks_res_error(&r, 500, US_ENOMEM, "out of memory");
		cb(&r, arg);
		return;
	}
	u = config_user_find(d->cfg, user);
	p->unknown = u == NULL;
	if (u == NULL && d->cfg->n_users > 0)
		u = &d->cfg->users[0];
	p->hash = u ? u->password : NULL;
	str_copy(p->address, address, sizeof(p->address));
	str_copy(p->user, user, sizeof(p->user));
	str_copy(p->desk, desk, sizeof(p->desk));
	str_copy(p->version, version, sizeof(p->version));
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2hex(p->token, sizeof(p->token), raw, sizeof(raw));
	p->queued = true;
	d->verifying++;
	sodium_memzero(in.password, sizeof(in.password));
	verify_next(d);
}

static void
resume_now(struct desks *d, const char *token, desks_cb cb, void *arg)
{
	struct desks_res r;
	struct desks_session s;
	struct desks_pending *p;
	json_t *left = json_array();
	sqlite3_stmt *st;

	if (desks_session_get(d, token, &s, &r) != 0) {
		json_decref(left);
		cb(&r, arg);
		return;
	}
	/* channels it may no longer be in (the config changed meanwhile) */
	if ((st = desks_prep(
		 d, "SELECT channel FROM joined WHERE token = ?"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *ch =
			    (const char *)sqlite3_column_text(st, 0);
			const struct config_channel *c =
			    config_channel_find(d->cfg, ch);

			if (c == NULL || !desks_allowed(d->cfg, c, s.user))
				json_array_append_new(left, json_string(ch));
		}
		desks_unprep(d, st);
	}
	/* written with the rest of this turn's, before the answer */
	for (size_t i = 0; i < json_array_size(left); i++)
		desks_batch_unjoin(
		    d, token, json_string_value(json_array_get(left, i)));
	desks_event_add(d, token, "channels_refreshed",
	    json_pack("{s:o,s:o}", "left", left, "channels",
		desks_channels_json(d, token, s.user)));
	if ((p = pending_new(d, cb, arg)) == NULL) {
		desks_res_error(&r, 500, US_ENOMEM, "out of memory");
		cb(&r, arg);
		return;
	}
	p->resume = true;
	str_copy(p->token, token, sizeof(p->token));
	str_copy(p->user, s.user, sizeof(p->user));
	str_copy(p->desk, s.desk, sizeof(p->desk));
	licenses_acquire(p);
}

/* Up to DESKS_RESUMES_TURN resumes now, the rest on the next turn. */
static void
resumes_run(uv_timer_t *t)
{
	struct desks *d = t->data;

	for (int i = 0; i < DESKS_RESUMES_TURN && d->resuming; i++) {
		struct desks_resuming *r = d->resuming;

		if ((d->resuming = r->next) == NULL)
			d->resuming_tail = &d->resuming;
		d->resumes_waiting -= !r->events;
		if (r->cb && r->events)
			desks_events_now(
			    d, r->token, r->after, r->wait, r->cb, r->arg);
		else if (r->cb)
			resume_now(d, r->token, r->cb, r->arg);
		free(r);
	}
	/*
	 * 1 ms, not 0: libuv 1.44 runs a timer that a timer callback
	 * started for now in the same turn, and the rest would too
	 */
	if (d->resuming)
		uv_timer_start(&d->resume_timer, resumes_run, 1, 0);
}

/*
 * Queue a request for its turn; NULL when it is answered already: 500
 * out of memory, or 503 EBUSY for a resume past desk_resumes_waiting.
 */
static struct desks_resuming *
turn_new(
    struct desks *d, const char *token, bool resume, desks_cb cb, void *arg)
{
	struct desks_resuming *r;
	struct desks_res res;

	if (resume &&
	    d->resumes_waiting >=
		(size_t)d->cfg->cluster.desk_resumes_waiting) {
		uint64_t now = time_mono_ms();

		/* said once in a while, counted always */
		if (d->busy_said == 0 || now - d->busy_said >= 10000) {
			log_warn("desks: %zu resumes wait their turn "
				 "(desk_resumes_waiting): new ones are told "
				 "to come back in a second (503 EBUSY)",
			    d->resumes_waiting);
			d->busy_said = now;
		}
		d->stats.resumes_busy++;
		desks_res_error(&res, 503, US_EBUSY,
		    "%zu desks wait for their resume here already "
		    "(desk_resumes_waiting): come back in a second",
		    d->resumes_waiting);
		res.retry_after = 1;
		cb(&res, arg);
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		desks_res_error(&res, 500, US_ENOMEM, "out of memory");
		cb(&res, arg);
		return NULL;
	}
	/* a token of another length is refused when its turn comes */
	if (token && strlen(token) == DESKS_TOKEN_LEN)
		str_copy(r->token, token, sizeof(r->token));
	r->cb = cb;
	r->arg = arg;
	r->events = !resume;
	d->resumes_waiting += resume;
	*d->resuming_tail = r;
	d->resuming_tail = &r->next;
	if (!uv_is_active((uv_handle_t *)&d->resume_timer))
		uv_timer_start(&d->resume_timer, resumes_run, 0, 0);
	return r;
}

void
desks_resume(struct desks *d, const char *token, desks_cb cb, void *arg)
{
	turn_new(d, token, true, cb, arg);
}

void
desks_events(struct desks *d, const char *token, int64_t after, long wait,
    desks_cb cb, void *arg)
{
	struct desks_resuming *r = turn_new(d, token, false, cb, arg);

	if (r) {
		r->after = after;
		r->wait = wait;
	}
}

void
desks_resumes_init(struct desks *d)
{
	d->resuming = NULL;
	d->resuming_tail = &d->resuming;
	uv_timer_init(d->loop, &d->resume_timer);
	d->resume_timer.data = d;
}

void
desks_resumes_refuse(struct desks *d, const struct desks_res *r)
{
	while (d->resuming) {
		struct desks_resuming *k = d->resuming;
		struct desks_res each = *r;

		d->resuming = k->next;
		d->resumes_waiting -= !k->events;
		each.body = NULL;
		if (k->cb)
			k->cb(&each, k->arg);
		free(k);
	}
	d->resuming_tail = &d->resuming;
}

void
desks_resumes_close(struct desks *d, uv_close_cb closed)
{
	struct desks_res r;

	desks_res_error(&r, 503, US_ECANCELED, "the server is stopping");
	desks_resumes_refuse(d, &r);
	uv_close((uv_handle_t *)&d->resume_timer, closed);
}

void
desks_resumes_forget(struct desks *d, void *arg)
{
	for (struct desks_resuming *k = d->resuming; k; k = k->next)
		if (k->arg == arg)
			k->cb = NULL;
}
