/*
 * libunderstudy (see include/understudy/understudy.h): the desk's control
 * plane (its server, over HTTP with libcurl), its profile (SQLite) and
 * the exactly-once rules. The data plane is in nats.c.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "lib.h"

#define PROFILE_FILE "desk.db"
#define HTTP_BODY_CAP (1024u * 1024)
/* how long the server may hold an events request (it may cap it) */
#define EVENTS_WAIT_S 15
#define EVENTS_RETRY_MS 500 /* after a refused events request */

static const char *const schema =
    "BEGIN;"
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY, hash TEXT "
    "NOT NULL);"
    "CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, joined "
    "INTEGER NOT NULL, subject TEXT NOT NULL, last_seq INTEGER NOT NULL "
    "DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS outbox (n INTEGER PRIMARY KEY "
    "AUTOINCREMENT, id TEXT UNIQUE NOT NULL, channel TEXT NOT NULL, "
    "payload TEXT NOT NULL);"
    "COMMIT;";

/* ---- time ---- */

uint64_t
lib_backoff_ms(const us_desk *d, unsigned fails)
{
	uint64_t cap = (uint64_t)d->backoff_max, b = (uint64_t)d->backoff_base;

	for (unsigned i = 1; i < fails && b < cap; i++)
		b *= 2;
	if (b > cap)
		b = cap;
	/* full jitter: anywhere from nothing to the backoff */
	return randombytes_uniform((uint32_t)b + 1);
}

/* ---- the profile ---- */

int
lib_sql(us_desk *d, const char *sql)
{
	return sqlite3_exec(d->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0
								       : US_EIO;
}

sqlite3_stmt *
lib_prep(us_desk *d, const char *sql)
{
	sqlite3_stmt *st = NULL;

	sqlite3_prepare_v2(d->db, sql, -1, &st, NULL);
	return st;
}

char *
lib_kv_get(us_desk *d, const char *k)
{
	sqlite3_stmt *st = lib_prep(d, "SELECT v FROM kv WHERE k = ?");
	char *v = NULL;

	if (st == NULL)
		return NULL;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return v;
}

int
lib_kv_put(us_desk *d, const char *k, const char *v)
{
	sqlite3_stmt *st = lib_prep(d,
	    v ? "INSERT OR REPLACE INTO kv (k, v) "
		"VALUES (?, ?)"
	      : "DELETE FROM kv WHERE k = ?");
	int rc;

	if (st == NULL)
		return US_EIO;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	if (v)
		sqlite3_bind_text(st, 2, v, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : US_EIO;
}

/* ---- events to the program ---- */

void
lib_emit(
    us_desk *d, enum us_event_type type, const char *kind, const char *fmt, ...)
{
	struct us_event *ev;
	va_list ap;

	if ((ev = lib_emit_slot(d)) == NULL)
		return; /* the program does not poll; the state is kept */
	ev->type = type;
	snprintf(ev->kind, sizeof(ev->kind), "%s", kind ? kind : "");
	va_start(ap, fmt);
	vsnprintf(ev->text, sizeof(ev->text), fmt, ap);
	va_end(ap);
}

struct us_event *
lib_emit_slot(us_desk *d)
{
	struct us_event *ev;

	if (d->q_len == d->q_cap) {
		size_t cap = d->q_cap ? d->q_cap * 2 : 8;
		struct us_event *q;

		if (cap > LIB_QUEUE_MAX ||
		    (q = malloc(cap * sizeof(*q))) == NULL)
			return NULL;
		/* unroll the ring into the new one */
		for (size_t i = 0; i < d->q_len; i++)
			q[i] = d->q[(d->q_head + i) % d->q_cap];
		free(d->q);
		d->q = q;
		d->q_cap = cap;
		d->q_head = 0;
	}
	ev = &d->q[(d->q_head + d->q_len++) % d->q_cap];
	memset(ev, 0, sizeof(*ev));
	return ev;
}

/* ---- HTTP to the servers ---- */

static size_t
collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct lib_body *b = arg;
	size_t n = size * nmemb;
	char *p;

	if (b->len + n > HTTP_BODY_CAP) {
		b->over = true;
		return 0;
	}
	if ((p = realloc(b->data, b->len + n + 1)) == NULL)
		return 0;
	b->data = p;
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* The error code of a name in an answer ("EOFFLINE"), or US_EPROTO. */
static int
code_of(const char *name)
{
	for (int e = -1; e > -64; e--)
		if (name && strcmp(us_err_name(e), name) == 0)
			return e;
	return US_EPROTO;
}

/*
 * Set c up for one request (reset first); the headers it needs go into
 * *h (the caller frees them once the request is over).
 */
static void
http_setup(us_desk *d, CURL *c, const char *url, const char *method,
    const char *body, bool auth, long timeout_ms, struct lib_body *b, char *err,
    struct curl_slist **h)
{
	char hdr[128];

	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)d->timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
	/* curl checks an https:// server's chain and name by default */
	if (d->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, d->ca_file);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	*h = NULL;
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		*h = curl_slist_append(*h, "Content-Type: application/json");
	} else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	}
	if (auth) {
		snprintf(
		    hdr, sizeof(hdr), "Authorization: Bearer %s", d->token);
		*h = curl_slist_append(*h, hdr);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, *h);
}

/*
 * What a finished request on c came back with (lib_http's returns); the
 * body b is freed.
 */
static int
http_result(us_desk *d, CURL *c, const char *base, CURLcode cc, const char *err,
    struct lib_body *b, json_t **out)
{
	long status = 0;
	curl_off_t ra = 0;
	json_t *o;
	int rc;

	*out = NULL;
	d->retry_after_ms = 0;
	/* the buffer must not outlive this request in curl's hands */
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (cc != CURLE_OK) {
		free(b->data);
		snprintf(d->why, sizeof(d->why), "%s: %s", base,
		    b->over      ? "answer over 1 MiB"
			: err[0] ? err
				 : curl_easy_strerror(cc));
		return US_EUNAVAIL;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status != 503 ||
	    curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) != CURLE_OK)
		ra = 0;
	o = b->data ? json_loads(b->data, 0, NULL) : NULL;
	free(b->data);
	if (o == NULL) {
		snprintf(
		    d->why, sizeof(d->why), "HTTP %ld without JSON", status);
		return status >= 500 ? US_EUNAVAIL : US_EPROTO;
	}
	if (status == 200) {
		*out = o;
		return 0;
	}
	rc = code_of(json_string_value(json_object_get(o, "error")));
	/*
	 * a server busy with a storm of desks says when to come back:
	 * then, not later (and not elsewhere); any other 503 is a reason
	 * to try another server
	 */
	if (rc == US_EBUSY && ra > 0)
		d->retry_after_ms = (uint64_t)(ra < 60 ? ra : 60) * 1000;
	snprintf(d->why, sizeof(d->why), "%s",
	    json_string_value(json_object_get(o, "message"))
		? json_string_value(json_object_get(o, "message"))
		: us_strerror(rc));
	*out = o; /* the caller may read "versions" */
	/* a server that cannot serve now: another may */
	return rc == US_EFENCED || rc == US_ECANCELED || status == 503
	    ? US_EUNAVAIL
	    : rc;
}

int
lib_http(us_desk *d, const char *base, const char *method, const char *path,
    const char *body, bool auth, json_t **out)
{
	char url[1024], err[CURL_ERROR_SIZE] = "";
	struct curl_slist *h = NULL;
	struct lib_body b = {0};
	CURLcode cc;

	snprintf(url, sizeof(url), "%s%s", base, path);
	http_setup(d, d->curl, url, method, body, auth, (long)d->timeout_ms, &b,
	    err, &h);
	cc = curl_easy_perform(d->curl);
	curl_slist_free_all(h);
	return http_result(d, d->curl, base, cc, err, &b, out);
}

/* ---- the session ---- */

static const char *
jstr(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

/*
 * Take the server's channel list: joined as it says, sequences kept.
 * Inside the caller's transaction.
 */
static void
channels_apply(us_desk *d, json_t *arr)
{
	size_t i;
	json_t *c;

	lib_sql(d, "UPDATE channels SET joined = 0");
	json_array_foreach (arr, i, c) {
		sqlite3_stmt *st = lib_prep(d,
		    "INSERT INTO channels (name, joined, subject) VALUES "
		    "(?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET joined = "
		    "?2, subject = ?3");

		if (st == NULL)
			continue;
		sqlite3_bind_text(st, 1, jstr(c, "name"), -1, SQLITE_STATIC);
		sqlite3_bind_int(
		    st, 2, json_is_true(json_object_get(c, "joined")));
		sqlite3_bind_text(st, 3, jstr(c, "subject"), -1, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
	lib_nats_channels_changed(d);
}

/* A session answer (login, resume): the desk is online at base. */
static void
session_apply(us_desk *d, const char *base, json_t *s)
{
	char *msg = json_dumps(json_object_get(s, "messaging"), JSON_COMPACT);
	json_t *auth = json_object_get(s, "messaging_auth");
	char *auth_text = auth ? json_dumps(auth, JSON_COMPACT) : NULL;

	snprintf(d->server, sizeof(d->server), "%s", jstr(s, "server"));
	snprintf(d->server_url, sizeof(d->server_url), "%s", base);
	snprintf(d->cluster, sizeof(d->cluster), "%s", jstr(s, "cluster"));
	/* a new session's events all come; a resumed one goes on */
	if (strcmp(d->token, jstr(s, "token")) != 0)
		d->last_event = 0;
	snprintf(d->token, sizeof(d->token), "%s", jstr(s, "token"));
	/* one commit (one sync) for all of it */
	lib_sql(d, "BEGIN IMMEDIATE");
	lib_kv_put(d, "token", d->token);
	lib_kv_put(d, "user", d->user);
	lib_kv_put(d, "server", d->server);
	lib_kv_put(d, "cluster", d->cluster);
	if (msg)
		lib_kv_put(d, "messaging", msg);
	free(msg);
	/* kept for NATS while offline, as the URLs are (docs/desks.md) */
	lib_kv_put(d, "messaging_auth", auth_text);
	if (auth_text) {
		sodium_memzero(auth_text, strlen(auth_text));
		free(auth_text);
	}
	if ((msg = json_dumps(json_object_get(s, "servers"), JSON_COMPACT))) {
		lib_kv_put(d, "servers", msg);
		free(msg);
	}
	channels_apply(d, json_object_get(s, "channels"));
	lib_sql(d, "COMMIT");
	lib_nats_configure(d);
	if (json_is_true(
		json_object_get(json_object_get(s, "license"), "over")))
		lib_emit(d, US_EV_NOTICE, "license",
		    "over the license limit: the server let this desk in with "
		    "a warning");
}

static void events_cancel(us_desk *d);

static void
go_online(us_desk *d)
{
	if (!d->online)
		lib_emit(d, US_EV_STATE, "online", "%s -> online (%s)",
		    d->logged_in ? "offline" : "logged out", d->server);
	d->online = true;
	d->logged_in = true;
	d->server_fails = 0;
	d->next_events = 0;
	events_cancel(d); /* it may carry another session's token */
}

static void
go_offline(us_desk *d, const char *why)
{
	if (d->online)
		lib_emit(
		    d, US_EV_STATE, "offline", "online -> offline (%s)", why);
	d->online = false;
	d->server_fails++;
	d->next_server = time_mono_ms() + lib_backoff_ms(d, d->server_fails);
	events_cancel(d);
}

/* Remember the password for a local login later (argon2id, salted). */
static void
remember(us_desk *d, const char *user, const char *password)
{
	char hash[crypto_pwhash_STRBYTES];
	sqlite3_stmt *st;

	if (crypto_pwhash_str_alg(hash, password, strlen(password),
		crypto_pwhash_OPSLIMIT_INTERACTIVE,
		crypto_pwhash_MEMLIMIT_INTERACTIVE,
		crypto_pwhash_ALG_ARGON2ID13) != 0)
		return;
	if ((st = lib_prep(d,
		 "INSERT OR REPLACE INTO users (user, hash) "
		 "VALUES (?, ?)"))) {
		sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
}

/* Log in online at base; 0, US_EUNAVAIL (try another), or a refusal. */
static int
login_at(us_desk *d, const char *base, const char *user, const char *password)
{
	json_t *req = json_pack("{s:s,s:s,s:s,s:s}", "user", user, "password",
	    password, "desk", d->desk_id, "version", d->version);
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_t *ans = NULL;
	int rc;

	json_decref(req);
	if (body == NULL)
		return US_ENOMEM;
	rc = lib_http(d, base, "POST", "/v1/desk/login", body, false, &ans);
	sodium_memzero(body, strlen(body));
	free(body);
	if (rc == US_EVERSION) {
		char *v =
		    json_dumps(json_object_get(ans, "versions"), JSON_COMPACT);

		snprintf(d->why + strlen(d->why),
		    sizeof(d->why) - strlen(d->why), "; the server accepts %s",
		    v ? v : "[]");
		free(v);
	}
	if (rc == 0) {
		snprintf(d->user, sizeof(d->user), "%s", user);
		session_apply(d, base, ans);
		go_online(d);
	}
	json_decref(ans);
	return rc;
}

static size_t candidates(us_desk *d, char **v, size_t max);
static void candidates_free(char **v, size_t n);

int
us_login(us_desk *d, const char *user, const char *password)
{
	sqlite3_stmt *st;
	bool ok = false;
	int rc = US_EUNAVAIL;

	char *v[2 * LIB_SERVERS_MAX];
	size_t n;

	if (user == NULL || password == NULL)
		return US_EINVAL;
	n = candidates(d, v, 2 * LIB_SERVERS_MAX);
	for (size_t i = 0; i < n && rc == US_EUNAVAIL; i++)
		if (v[i])
			rc = login_at(d, v[i], user, password);
	candidates_free(v, n);
	if (rc == 0) {
		remember(d, user, password);
		free(d->password);
		d->password = strdup(password);
		return 0;
	}
	if (rc != US_EUNAVAIL)
		return rc;
	/* no server answered: a local login, for a user seen online here */
	if ((st = lib_prep(d, "SELECT hash FROM users WHERE user = ?"))) {
		sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW)
			ok = crypto_pwhash_str_verify(
				 (const char *)sqlite3_column_text(st, 0),
				 password, strlen(password)) == 0;
		sqlite3_finalize(st);
	}
	if (!ok) {
		char last[sizeof(d->why)];

		/* say why the servers did not answer: a CA missing, maybe */
		snprintf(last, sizeof(last), "%s", d->why);
		snprintf(d->why, sizeof(d->why),
		    "no server answered (%.300s), and %s has never logged in "
		    "online on this desk (or the password is wrong): a local "
		    "login is not possible",
		    last[0] ? last : "none listed", user);
		return US_EUNAUTHORIZED;
	}
	snprintf(d->user, sizeof(d->user), "%s", user);
	free(d->password);
	d->password = strdup(password);
	{
		char *tok = lib_kv_get(d, "token"),
		     *who = lib_kv_get(d, "user"),
		     *cl = lib_kv_get(d, "cluster");

		/* the session of the last online login goes on, if it was ours
		 */
		snprintf(d->token, sizeof(d->token), "%s",
		    tok && who && strcmp(who, user) == 0 ? tok : "");
		snprintf(d->cluster, sizeof(d->cluster), "%s", cl ? cl : "");
		free(tok);
		free(who);
		free(cl);
	}
	d->logged_in = true;
	d->online = false;
	d->server[0] = '\0';
	lib_emit(d, US_EV_STATE, "offline", "logged out -> offline (%s)",
	    "no server answered: local login");
	d->server_fails = 1;
	d->next_server = time_mono_ms() + lib_backoff_ms(d, 1);
	lib_nats_configure(d);
	lib_nats_channels_changed(d);
	return 0;
}

int
us_resume(us_desk *d)
{
	char *tok = lib_kv_get(d, "token"), *who = lib_kv_get(d, "user"),
	     *cl = lib_kv_get(d, "cluster");
	int rc = US_ENOTFOUND;

	if (tok && who && *tok) {
		snprintf(d->token, sizeof(d->token), "%s", tok);
		snprintf(d->user, sizeof(d->user), "%s", who);
		snprintf(d->cluster, sizeof(d->cluster), "%s", cl ? cl : "");
		d->logged_in = true;
		d->online = false;
		d->server_fails = 0;
		d->next_server = 0; /* at the next us_poll */
		lib_nats_configure(d);
		lib_nats_channels_changed(d);
		rc = 0;
	} else {
		snprintf(d->why, sizeof(d->why),
		    "no session in this desk's profile: log in");
	}
	free(tok);
	free(who);
	free(cl);
	return rc;
}

int
us_logout(us_desk *d)
{
	json_t *ans = NULL;

	if (d->online)
		lib_http(d, d->server_url, "POST", "/v1/desk/logout", NULL,
		    true, &ans);
	json_decref(ans);
	events_cancel(d);
	lib_kv_put(d, "token", NULL);
	d->token[0] = '\0';
	d->online = d->logged_in = false;
	if (d->password) {
		sodium_memzero(d->password, strlen(d->password));
		free(d->password);
		d->password = NULL;
	}
	lib_nats_close(d);
	lib_emit(d, US_EV_STATE, "logged out", "logged out");
	return 0;
}

const char *
us_desk_why(const us_desk *d)
{
	return d->why;
}

bool
us_online(const us_desk *d)
{
	return d->online;
}

const char *
us_server(const us_desk *d)
{
	return d->online ? d->server : NULL;
}

/*
 * The servers to try, in order: the desk's own list, then the others of
 * the cluster that its last session named. Returns how many (each
 * malloc'ed in v).
 */
static size_t
candidates(us_desk *d, char **v, size_t max)
{
	char *text = lib_kv_get(d, "servers");
	json_t *arr = text ? json_loads(text, 0, NULL) : NULL, *u;
	size_t n = 0, i;

	free(text);
	for (i = 0; i < d->n_servers && n < max; i++)
		v[n++] = strdup(d->servers[i]);
	json_array_foreach (arr, i, u) {
		bool seen = false;

		for (size_t k = 0; k < n; k++)
			seen = seen ||
			    (v[k] && strcmp(v[k], json_string_value(u)) == 0);
		if (!seen && json_is_string(u) && n < max)
			v[n++] = strdup(json_string_value(u));
	}
	json_decref(arr);
	return n;
}

static void
candidates_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
}

/*
 * Back to a server: the session resumes (licenses checked, channels
 * refreshed), or, expired, a new login with the password this run
 * holds. The config's servers in order.
 */
static void
reconnect(us_desk *d)
{
	int rc = US_EUNAVAIL;
	json_t *ans = NULL;
	char *v[2 * LIB_SERVERS_MAX];
	size_t n = candidates(d, v, 2 * LIB_SERVERS_MAX);

	/* a server busy with a storm of desks says when: wait for it */
	d->retry_after_ms = 0;
	for (size_t i = 0; i < n && rc == US_EUNAVAIL && !d->retry_after_ms;
	     i++) {
		if (v[i] == NULL)
			continue;
		if (d->token[0]) {
			rc = lib_http(d, v[i], "POST", "/v1/desk/resume", NULL,
			    true, &ans);
			if (rc == 0) {
				session_apply(d, v[i], ans);
				go_online(d);
			}
			json_decref(ans);
			ans = NULL;
		}
		if ((rc == US_EEXPIRED || rc == US_EUNAUTHORIZED ||
			!d->token[0]) &&
		    d->password) {
			lib_emit(d, US_EV_NOTICE, "relogin",
			    "the session is gone at the server: logging in "
			    "again");
			rc = login_at(d, v[i], d->user, d->password);
		}
	}
	candidates_free(v, n);
	if (rc == 0)
		return;
	if (rc == US_EEXPIRED || rc == US_EUNAUTHORIZED) {
		/* no session, and no password that works: nothing to retry */
		lib_emit(d, US_EV_STATE, "logged out",
		    "offline -> logged out (%s: log in again)", d->why);
		d->logged_in = false;
		d->token[0] = '\0';
		lib_kv_put(d, "token", NULL);
		lib_nats_close(d);
		return;
	}
	if (rc != US_EUNAVAIL)
		lib_emit(d, US_EV_NOTICE, "refused",
		    "the server refuses the session for now (%s); trying "
		    "again",
		    d->why);
	if (d->retry_after_ms) {
		/* when the server said, spread over a quarter of that */
		d->next_server = time_mono_ms() + d->retry_after_ms +
		    randombytes_uniform((uint32_t)d->retry_after_ms / 4 + 1);
		return;
	}
	d->server_fails++;
	d->next_server = time_mono_ms() + lib_backoff_ms(d, d->server_fails);
}

/* ---- the session's events: one request held at the server ---- */

/* Drop the events request that is out, if any (its answer is not read). */
static void
events_cancel(us_desk *d)
{
	if (!d->ev_busy)
		return;
	curl_multi_remove_handle(d->multi, d->ev_curl);
	curl_easy_setopt(d->ev_curl, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(d->ev_hdrs);
	d->ev_hdrs = NULL;
	free(d->ev_body.data);
	memset(&d->ev_body, 0, sizeof(d->ev_body));
	d->ev_busy = false;
}

/*
 * Ask for the events after the last one seen; the server holds the
 * request up to EVENTS_WAIT_S when there is none. Only queued here:
 * us_poll drives it.
 */
static void
events_start(us_desk *d)
{
	char url[1024];

	snprintf(url, sizeof(url), "%s/v1/desk/events?after=%lld&wait=%d",
	    d->server_url, (long long)d->last_event, EVENTS_WAIT_S);
	d->ev_err[0] = '\0';
	memset(&d->ev_body, 0, sizeof(d->ev_body));
	/* a server that holds it longer than asked is not answering */
	http_setup(d, d->ev_curl, url, "GET", NULL, true,
	    (long)EVENTS_WAIT_S * 1000 + d->timeout_ms, &d->ev_body, d->ev_err,
	    &d->ev_hdrs);
	if (curl_multi_add_handle(d->multi, d->ev_curl) != CURLM_OK) {
		curl_slist_free_all(d->ev_hdrs);
		d->ev_hdrs = NULL;
		d->next_events = time_mono_ms() + EVENTS_RETRY_MS;
		return;
	}
	d->ev_busy = true;
	d->ev_requests++;
}

/* The answer to an events request: events to the program, or offline. */
static void
events_answer(us_desk *d, int rc, json_t *ans)
{
	json_t *e;
	size_t i;

	/* at once again after an answer; a refusal is not asked at once */
	d->next_events = rc == 0 ? 0 : time_mono_ms() + EVENTS_RETRY_MS;
	if (rc == US_EUNAVAIL) {
		char why[300];

		snprintf(why, sizeof(why), "%s unreachable", d->server);
		go_offline(d, why);
	} else if (rc == US_EEXPIRED || rc == US_EUNAUTHORIZED) {
		lib_emit(d, US_EV_STATE, "offline",
		    "online -> offline (%s: %s)", d->server, d->why);
		d->online = false;
		d->token[0] = '\0';
		d->next_server = 0; /* log in again at once */
	} else if (rc == 0) {
		json_array_foreach (json_object_get(ans, "events"), i, e) {
			char *data = json_dumps(
			    json_object_get(e, "data"), JSON_COMPACT);
			struct us_event *ev = lib_emit_slot(d);

			if (ev) {
				ev->type = US_EV_SERVER;
				snprintf(ev->kind, sizeof(ev->kind), "%s",
				    jstr(e, "type"));
				ev->seq = (uint64_t)json_integer_value(
				    json_object_get(e, "seq"));
				snprintf(ev->text, sizeof(ev->text), "%s",
				    data ? data : "{}");
			}
			free(data);
		}
		d->last_event =
		    json_integer_value(json_object_get(ans, "last"));
	}
}

/* Move the held request on without waiting; take its answer when in. */
static void
events_work(us_desk *d)
{
	CURLcode cc = CURLE_OK;
	bool done = false;
	json_t *ans = NULL;
	CURLMsg *m;
	int running, left, rc;

	if (!d->ev_busy)
		return;
	curl_multi_perform(d->multi, &running);
	while ((m = curl_multi_info_read(d->multi, &left)))
		if (m->msg == CURLMSG_DONE && m->easy_handle == d->ev_curl) {
			cc = m->data.result;
			done = true;
		}
	if (!done)
		return;
	curl_multi_remove_handle(d->multi, d->ev_curl);
	curl_slist_free_all(d->ev_hdrs);
	d->ev_hdrs = NULL;
	d->ev_busy = false;
	rc = http_result(
	    d, d->ev_curl, d->server_url, cc, d->ev_err, &d->ev_body, &ans);
	memset(&d->ev_body, 0, sizeof(d->ev_body));
	events_answer(d, rc, ans);
	json_decref(ans);
}

/* ---- channels ---- */

int
us_channels(us_desk *d, char **json)
{
	json_t *arr = json_array();
	sqlite3_stmt *st = lib_prep(d,
	    "SELECT name, joined, subject, "
	    "last_seq FROM channels ORDER BY name");

	*json = NULL;
	if (st == NULL) {
		json_decref(arr);
		return US_EIO;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(arr,
		    json_pack("{s:s,s:b,s:s,s:I,s:s}", "name",
			sqlite3_column_text(st, 0), "joined",
			sqlite3_column_int(st, 1), "subject",
			sqlite3_column_text(st, 2), "last_seq",
			(json_int_t)sqlite3_column_int64(st, 3), "state",
			!sqlite3_column_int(st, 1) ? "-"
			    : d->nats_ok           ? "active"
						   : "paused"));
	sqlite3_finalize(st);
	*json = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	return *json ? 0 : US_ENOMEM;
}

static int
join_or_leave(us_desk *d, const char *channel, bool join)
{
	char path[200];
	json_t *ans = NULL;
	int rc;

	if (!d->logged_in)
		return US_EUNAUTHORIZED;
	if (!d->online) {
		snprintf(d->why, sizeof(d->why),
		    "offline: channels cannot be %s until a server answers",
		    join ? "joined" : "left");
		return US_EOFFLINE;
	}
	if (join && !d->nats_ok) {
		snprintf(d->why, sizeof(d->why),
		    "messaging is down: new channels wait until it is back");
		return US_EOFFLINE;
	}
	if (strlen(channel) > 60 || strchr(channel, '/') || !channel[0])
		return US_EINVAL;
	snprintf(path, sizeof(path), "/v1/desk/channels/%s/%s", channel,
	    join ? "join" : "leave");
	rc = lib_http(d, d->server_url, "POST", path, NULL, true, &ans);
	json_decref(ans);
	if (rc == US_EUNAVAIL) {
		char why[300];

		snprintf(why, sizeof(why), "%s unreachable", d->server);
		go_offline(d, why);
		return US_EOFFLINE;
	}
	if (rc != 0)
		return rc;
	if ((rc = lib_http(d, d->server_url, "GET", "/v1/desk/channels", NULL,
		 true, &ans)) == 0) {
		if (join)
			lib_nats_mark_start(d, channel);
		lib_sql(d, "BEGIN IMMEDIATE");
		channels_apply(d, json_object_get(ans, "channels"));
		lib_sql(d, "COMMIT");
	}
	json_decref(ans);
	return rc == US_EUNAVAIL ? 0 : rc;
}

int
us_join(us_desk *d, const char *channel)
{
	return join_or_leave(d, channel, true);
}

int
us_leave(us_desk *d, const char *channel)
{
	return join_or_leave(d, channel, false);
}

/* ---- the loop ---- */

int
us_poll(us_desk *d, int timeout_ms, struct us_event *ev)
{
	uint64_t deadline =
	    time_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);

	for (;;) {
		uint64_t now = time_mono_ms();

		if (d->logged_in) {
			if (d->online)
				events_work(d);
			if (d->online && !d->ev_busy && now >= d->next_events)
				events_start(d);
			else if (!d->online && now >= d->next_server)
				reconnect(d);
			lib_nats_work(d);
		}
		if (d->q_len) {
			*ev = d->q[d->q_head];
			d->q_head = (d->q_head + 1) % d->q_cap;
			d->q_len--;
			return 1;
		}
		now = time_mono_ms();
		if (now >= deadline)
			return 0;
		lib_nats_wait(
		    d, deadline - now < 50 ? (int)(deadline - now) : 50);
	}
}

/* ---- life ---- */

static int
mkdirs(const char *dir)
{
	char path[4096];

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return US_EINVAL;
	for (char *p = path + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(path, 0700);
			*p = '/';
		}
	mkdir(path, 0700);
	return 0;
}

int
us_desk_open(const struct us_desk_config *cfg, us_desk **out)
{
	static bool inited;
	char path[4200];
	us_desk *d;
	size_t n;

	*out = NULL;
	if (cfg == NULL || cfg->profile_dir == NULL || cfg->desk_id == NULL ||
	    (n = strlen(cfg->desk_id)) == 0 || n > 64 ||
	    strspn(cfg->desk_id,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqr"
		"stuvwxyz0123456789._-") != n ||
	    cfg->n_servers > LIB_SERVERS_MAX ||
	    (cfg->ca_file && access(cfg->ca_file, R_OK) != 0))
		return US_EINVAL;
	if (!inited) {
		if (sodium_init() < 0 ||
		    curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
			return US_EINTERNAL;
		inited = true;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return US_ENOMEM;
	snprintf(d->desk_id, sizeof(d->desk_id), "%s", cfg->desk_id);
	snprintf(d->version, sizeof(d->version), "%s",
	    cfg->version ? cfg->version : US_DESK_VERSION);
	for (size_t i = 0; i < cfg->n_servers; i++)
		d->servers[d->n_servers++] = strdup(cfg->servers[i]);
	if (cfg->ca_file && (d->ca_file = strdup(cfg->ca_file)) == NULL) {
		us_desk_close(d);
		return US_ENOMEM;
	}
	d->timeout_ms =
	    cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 2000;
	d->backoff_base = cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 250;
	d->backoff_max = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 10000;
	mkdirs(cfg->profile_dir);
	snprintf(path, sizeof(path), "%s/%s", cfg->profile_dir, PROFILE_FILE);
	if (sqlite3_open(path, &d->db) != SQLITE_OK ||
	    lib_sql(d, "PRAGMA journal_mode = WAL") != 0 ||
	    lib_sql(d, "PRAGMA synchronous = FULL") != 0 ||
	    lib_sql(d, schema) != 0 || (d->curl = curl_easy_init()) == NULL ||
	    (d->ev_curl = curl_easy_init()) == NULL ||
	    (d->multi = curl_multi_init()) == NULL) {
		us_desk_close(d);
		return US_EIO;
	}
	sqlite3_busy_timeout(d->db, 2000);
	*out = d;
	return 0;
}

void
us_desk_close(us_desk *d)
{
	if (d == NULL)
		return;
	lib_nats_close(d);
	for (int i = 0; i < d->n_nats; i++)
		free(d->nats_urls[i]);
	if (d->nats_auth) {
		sodium_memzero(d->nats_auth, strlen(d->nats_auth));
		free(d->nats_auth);
	}
	for (size_t i = 0; i < d->n_servers; i++)
		free(d->servers[i]);
	free(d->ca_file);
	if (d->password) {
		sodium_memzero(d->password, strlen(d->password));
		free(d->password);
	}
	events_cancel(d);
	if (d->multi)
		curl_multi_cleanup(d->multi);
	if (d->ev_curl)
		curl_easy_cleanup(d->ev_curl);
	if (d->curl)
		curl_easy_cleanup(d->curl);
	sqlite3_close(d->db);
	free(d->q);
	free(d);
}
