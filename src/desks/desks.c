/* Desk sessions (see desks.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "desks.h"

#define DESKS_SWEEP_MS 5000
#define DESKS_EVENTS_KEEP 1000 /* per session */
#define DESKS_EVENTS_PAGE 100
#define DESKS_EXPIRED_KEEP_MS (24 * 3600 * 1000LL)
#define DESKS_TOUCH_MS 5000 /* expiry may come this much later */
#define DESKS_VERIFY_MAX 32 /* password checks waiting for the pool */

struct desks_waiter {
	struct desks *d;
	char token[DESKS_TOKEN_LEN + 1];
	int64_t after;
	desks_cb cb;
	void *arg;
	uv_timer_t timer;
	struct desks_waiter *next;
};

/* ---- small helpers ---- */

/* The last handle of a freed desks module closed: free it. */
static void
desks_gone(struct desks *d)
{
	limits_free(d->limits);
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

static void
res_ok(struct desks_res *r, json_t *body)
{
	memset(r, 0, sizeof(*r));
	r->status = 200;
	r->body = body;
}

void
desks_db_error(struct desks *d, struct desks_res *r)
{
	log_error("desks: %s: %s", store_path(d->st), sqlite3_errmsg(d->db));
	desks_res_error(r, 500, US_EIO, "the server's database failed: %s",
	    sqlite3_errmsg(d->db));
}

sqlite3_stmt *
desks_prep(struct desks *d, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
		log_error("desks: %s", sqlite3_errmsg(d->db));
	return st;
}

/* A channel with no allow list is open to every user. */
static bool
allowed(
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

static bool
word_ok(const char *s, size_t max)
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

	if (st) {
		sqlite3_bind_int64(st, 1, time_wall_ms());
		sqlite3_bind_text(st, 2, why, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, token, -1, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
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
		sqlite3_finalize(st);
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
	sqlite3_finalize(st);
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
	if ((st = desks_prep(d,
		 "UPDATE sessions SET seen_ms = ? WHERE token = "
		 "?")) == NULL) {
		desks_db_error(d, r);
		return r->err;
	}
	sqlite3_bind_int64(st, 1, time_wall_ms());
	sqlite3_bind_text(st, 2, token, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		desks_db_error(d, r);
		return r->err;
	}
	return 0;
}

static json_t *
channels_json(struct desks *d, const char *token, const char *user)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < d->cfg->n_channels; i++) {
		const struct config_channel *ch = &d->cfg->channels[i];
		sqlite3_stmt *st;
		bool joined = false;
		char subject[200];

		if (!allowed(d->cfg, ch, user))
			continue;
		if ((st = desks_prep(d,
			 "SELECT 1 FROM joined WHERE token = ? AND "
			 "channel = ?")) != NULL) {
			sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, ch->name, -1, SQLITE_STATIC);
			joined = sqlite3_step(st) == SQLITE_ROW;
			sqlite3_finalize(st);
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

static json_t *
session_json(struct desks *d, const char *token, const struct desks_session *s,
    bool over)
{
	json_t *msg = json_array(), *servers = json_array();
	char created[32];

	for (size_t i = 0; i < d->cfg->cluster.messaging.n; i++)
		json_array_append_new(
		    msg, json_string(d->cfg->cluster.messaging.v[i]));
	/* every server of the cluster: a desk tries them after its own list */
	for (size_t i = 0; i < d->cfg->n_servers; i++) {
		char url[300];

		snprintf(url, sizeof(url), "http://%s:%ld",
		    d->cfg->servers[i].address, d->cfg->servers[i].api_port);
		json_array_append_new(servers, json_string(url));
	}
	time_iso8601(s->created, created, sizeof(created));
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:o,s:o,s:o,"
			 "s:{s:I,s:I,s:b,s:s}}",
	    "token", token, "user", s->user, "desk", s->desk, "version",
	    s->version, "server", agent_self(d->a), "cluster",
	    d->cfg->cluster.name, "created", created, "session_timeout",
	    (json_int_t)d->cfg->cluster.session_timeout, "last_event",
	    (json_int_t)s->seq, "channels", channels_json(d, token, s->user),
	    "messaging", msg, "servers", servers, "license", "limit",
	    (json_int_t)d->cfg->cluster.licenses, "slot", (json_int_t)s->slot,
	    "over", over, "policy",
	    d->cfg->cluster.license_policy == CONFIG_LICENSE_ENFORCE ? "enforce"
								     : "warn");
}

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
	sqlite3_finalize(st);
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
	int64_t lease = slot >= 0 ? agent_lease_id(d->a) : 0;
	struct desks_session s;
	struct desks_res r;
	sqlite3_stmt *st;
	int rc = SQLITE_ERROR;

	if (!p->resume) {
		if (store_exec(d->st, "BEGIN IMMEDIATE") != 0)
			goto db_failed;
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
			sqlite3_finalize(st);
		}
		if (rc != SQLITE_DONE || store_exec(d->st, "COMMIT") != 0) {
			store_exec(d->st, "ROLLBACK");
			goto db_failed;
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
	res_ok(&r, session_json(d, p->token, &s, over));
	desks_pending_done(p, &r);
	return;
db_failed:
	desks_db_error(d, &r);
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

static void
verify_done(uv_work_t *w, int status)
{
	struct desks_pending *p = w->data;
	struct desks *d = p->d;
	struct desks_res r;

	p->working = false;
	d->open_handles--;
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
		char key[96];

		log_warn("desks: login of %s on desk %s from %s refused: wrong "
			 "user or password",
		    p->user, p->desk, p->address);
		snprintf(key, sizeof(key), "user %s", p->user);
		limits_failed(d->limits, key);
		snprintf(key, sizeof(key), "address %s", p->address);
		limits_failed(d->limits, key);
		desks_res_error(
		    &r, 401, US_EUNAUTHORIZED, "wrong user or password");
		desks_pending_done(p, &r);
		return;
	}
	if (!p->resume) {
		char key[96];

		snprintf(key, sizeof(key), "user %s", p->user);
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
	if (!word_ok(user, CONFIG_NAME_MAX) || !word_ok(desk, 64) ||
	    strlen(pw) > 256 || !word_ok(version, 31)) {
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
	char ukey[96], akey[96];
	int64_t wait;

	snprintf(ukey, sizeof(ukey), "user %s", in->user);
	snprintf(akey, sizeof(akey), "address %s", address);
	wait = limits_wait_ms(d->limits, ukey);
	if (limits_wait_ms(d->limits, akey) > wait)
		wait = limits_wait_ms(d->limits, akey);
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
	p->work.data = p;
	p->working = true;
	d->open_handles++;
	d->verifying++;
	sodium_memzero(in.password, sizeof(in.password));
	if (uv_queue_work(d->loop, &p->work, verify_work, verify_done) != 0) {
		p->working = false;
		d->open_handles--;
		d->verifying--;
		desks_res_error(
		    &r, 500, US_EINTERNAL, "cannot check the password");
		desks_pending_done(p, &r);
	}
}

void
desks_resume(struct desks *d, const char *token, desks_cb cb, void *arg)
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

			if (c == NULL || !allowed(d->cfg, c, s.user))
				json_array_append_new(left, json_string(ch));
		}
		sqlite3_finalize(st);
	}
	for (size_t i = 0; i < json_array_size(left); i++) {
		if ((st = desks_prep(d,
			 "DELETE FROM joined WHERE token = ? AND "
			 "channel = ?")) == NULL)
			continue;
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2,
		    json_string_value(json_array_get(left, i)), -1,
		    SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
	desks_event_add(d, token, "channels_refreshed",
	    json_pack("{s:o,s:o}", "left", left, "channels",
		channels_json(d, token, s.user)));
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

/* ---- the other requests of a session ---- */

void
desks_logout(struct desks *d, const char *token, struct desks_res *r)
{
	struct desks_session s;
	sqlite3_stmt *st;
	int rc = SQLITE_ERROR;

	if (desks_session_get(d, token, &s, r) != 0)
		return;
	if ((st = desks_prep(d, "DELETE FROM sessions WHERE token = ?"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE) {
		desks_db_error(d, r);
		return;
	}
	licenses_release(d, s.slot, s.slot_lease, s.slot_rev);
	log_info("desks: %s logged out of desk %s", s.user, s.desk);
	res_ok(r, json_pack("{s:s}", "user", s.user));
}

void
desks_channels(struct desks *d, const char *token, struct desks_res *r)
{
	struct desks_session s;

	if (desks_session_get(d, token, &s, r) != 0)
		return;
	res_ok(
	    r, json_pack("{s:o}", "channels", channels_json(d, token, s.user)));
}

void
desks_join(struct desks *d, const char *token, const char *channel, bool join,
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
	if (join && !allowed(d->cfg, ch, s.user)) {
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
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE) {
		desks_db_error(d, r);
		return;
	}
	res_ok(r, json_pack("{s:s,s:b}", "channel", channel, "joined", join));
}

/* ---- events ---- */

static void waiters_wake(struct desks *d, const char *token);

int
desks_event_add(
    struct desks *d, const char *token, const char *type, json_t *data)
{
	char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
	sqlite3_stmt *st;
	int64_t seq = -1;
	int rc = -1;

	json_decref(data);
	if (text == NULL || store_exec(d->st, "BEGIN IMMEDIATE") != 0) {
		free(text);
		return -1;
	}
	if ((st = desks_prep(d,
		 "UPDATE sessions SET seq = seq + 1 WHERE token = ? "
		 "RETURNING seq"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW)
			seq = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	if (seq > 0 &&
	    (st = desks_prep(d,
		 "INSERT INTO events (token, seq, at_ms, "
		 "type, data) VALUES (?,?,?,?,?)"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, seq);
		sqlite3_bind_int64(st, 3, time_wall_ms());
		sqlite3_bind_text(st, 4, type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, text, -1, SQLITE_STATIC);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
		sqlite3_finalize(st);
	}
	if (rc == 0 &&
	    (st = desks_prep(
		 d, "DELETE FROM events WHERE token = ? AND seq <= ?"))) {
		sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, seq - DESKS_EVENTS_KEEP);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc != 0 || store_exec(d->st, "COMMIT") != 0) {
		store_exec(d->st, "ROLLBACK");
		rc = -1;
	}
	free(text);
	if (rc == 0)
		waiters_wake(d, token);
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
	sqlite3_finalize(st);
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

/* Answer a waiter (its events, or an error) and remove it. */
static void
waiter_answer(struct desks_waiter *w, struct desks_res *r)
{
	struct desks *d = w->d;

	for (struct desks_waiter **pp = &d->waiters; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	d->waiting--;
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
			res_ok(&r, body);
		else
			desks_db_error(w->d, &r);
	}
	waiter_answer(w, &r);
}

static void
waiter_timeout(uv_timer_t *t)
{
	waiter_fire(t->data);
}

static void
waiters_wake(struct desks *d, const char *token)
{
	struct desks_waiter *w = d->waiters, *next;

	for (; w; w = next) {
		next = w->next;
		if (strcmp(w->token, token) == 0)
			waiter_fire(w);
	}
}

void
desks_events(struct desks *d, const char *token, int64_t after, long wait,
    desks_cb cb, void *arg)
{
	long cap = d->cfg->cluster.session_timeout / 2;
	struct desks_res r;
	struct desks_session s;
	struct desks_waiter *w;
	json_t *body;

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
		res_ok(&r, body);
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
	d->waiters = w;
	d->waiting++;
}

void
desks_forget(struct desks *d, void *arg)
{
	for (struct desks_waiter *w = d->waiters; w; w = w->next)
		if (w->arg == arg) {
			struct desks_res r;

			w->cb = NULL;
			desks_res_error(&r, 503, US_ECANCELED, "gone");
			waiter_answer(w, &r);
			break;
		}
	for (struct desks_pending *p = d->pending; p; p = p->next)
		if (p->arg == arg)
			p->cb = NULL;
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
	sqlite3_finalize(st);
	json_array_foreach (tokens, i, t)
		desks_event_add(d, json_string_value(t), "notice",
		    json_pack("{s:s}", "message", text));
	json_decref(tokens);
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
		sqlite3_finalize(st);
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
		waiters_wake(d, token); /* they get EEXPIRED */
	}
	json_decref(gone);
	if ((st = desks_prep(d,
		 "DELETE FROM sessions WHERE expired_ms > 0 AND "
		 "expired_ms < ?"))) {
		sqlite3_bind_int64(st, 1, now - DESKS_EXPIRED_KEEP_MS);
		sqlite3_step(st);
		sqlite3_finalize(st);
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
	if ((d->limits = limits_new(
		 (unsigned)d->cfg->cluster.login_failures)) == NULL) {
		free(d);
		return NULL;
	}
	uv_timer_init(loop, &d->sweep);
	d->sweep.data = d;
	d->open_handles = 2; /* the sweep and the licenses' timer */
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
		waiter_answer(d->waiters, &r);
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
	uv_close((uv_handle_t *)&d->sweep, sweep_closed);
	licenses_close(d, sweep_closed);
}

void
desks_lease_changed(struct desks *d)
{
	if (d)
		licenses_reconcile_soon(d, 0);
}
