/*
 * The check of a whole cluster: every server of the config is asked for
 * its own check (GET /v1/check) at once, one thread each; a server that
 * does not answer gets a failing row, and the rows other servers made
 * about it (its record copy) stand in for its own. Then the config
 * version each server runs is compared, and the backups' state added.
 * The CLI and the admin primary's scheduled run both call this.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "check.h"

#define CLUSTER_ASK_MS 20000 /* a server's probes, each bounded */
#define BACKUPS_MARGIN_MS (10LL * 60 * 1000)

/* A string field of a row, "" when absent. */
static const char *
field(const json_t *r, const char *key)
{
	const char *v = json_string_value(json_object_get(r, key));

	return v ? v : "";
}

static const char *const groups[] = {
    "links", "archiving", "backups", "errors", "disk", "config"};

json_t *
check_row(const char *group, const char *name, const char *server, bool ok,
    const char *fmt, ...)
{
	char detail[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	return json_pack("{s:s,s:s,s:s,s:b,s:s}", "name", name, "group", group,
	    "server", server, "ok", ok, "detail", detail);
}

static size_t
collect(char *data, size_t size, size_t nmemb, void *userp)
{
	struct buf *b = userp;

	return buf_append(b, data, size * nmemb) == 0 ? size * nmemb : 0;
}

int
check_http(const char *method, const char *url, const char *body,
    const char *token, const char *ca, const char *cert, const char *key,
    long timeout_ms, long *status, json_t **out, char *err, size_t errlen)
{
	struct curl_slist *h = NULL;
	char auth[600], why[CURL_ERROR_SIZE] = "";
	struct buf b;
	CURLcode rc;
	CURL *c;

	*out = NULL;
	*status = 0;
	if ((c = curl_easy_init()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	buf_init(&b, CHECK_ANSWER_MAX);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
	    timeout_ms < 1000 ? timeout_ms : 1000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, why);
	/* the peer is always verified: against ca, or the system's CAs */
	if (ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (cert && key) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, key);
	}
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
		h = curl_slist_append(h, "Content-Type: application/json");
	}
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
		explicit_bzero(auth, sizeof(auth));
	}
	if (h)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
		*out = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
	} else {
		snprintf(
		    err, errlen, "%s", why[0] ? why : curl_easy_strerror(rc));
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	buf_free(&b);
	return rc == CURLE_OK ? 0 : -1;
}

/* ---- backups: the other half of the daily maintenance ---- */

/* A duration as people read it: 25 s, 14 min, 3.5 h, 2.0 days. */
static void
age_text(int64_t ms, char *buf, size_t len)
{
	if (ms < 0)
		ms = 0;
	if (ms < 120000)
		snprintf(buf, len, "%" PRId64 " s", ms / 1000);
	else if (ms < 2 * 3600000LL)
		snprintf(buf, len, "%" PRId64 " min", ms / 60000);
	else if (ms < 2 * 86400000LL)
		snprintf(buf, len, "%.1f h", (double)ms / 3600000);
	else
		snprintf(buf, len, "%.1f days", (double)ms / 86400000);
}

json_t *
check_backups_row(long status, const json_t *ans, int64_t now_ms)
{
	const json_t *ok = json_object_get(ans, "last_ok");
	const json_t *last = json_object_get(ans, "last");
	const char *sched = json_string_value(json_object_get(ans, "schedule"));
	const char *result = json_string_value(json_object_get(last, "result"));
	const char *error = json_string_value(json_object_get(last, "error"));
	int64_t interval_ms =
	    json_integer_value(json_object_get(ans, "interval_s")) * 1000;
	int64_t finished = json_integer_value(json_object_get(ok, "finished"));
	int64_t age_ms = now_ms - finished, margin = interval_ms / 2;
	char age[32], why[600] = "";
	size_t n = 0;
	json_t *row;

	if (status == 404)
		return check_row("backups", "last backup", "cluster", false,
		    "backups: not available on this server");
	if (status != 200 || !json_is_object(ans))
		return check_row("backups", "last backup", "cluster", false,
		    "GET /v1/backups answered %ld", status);
	if (sched == NULL)
		return check_row("backups", "last backup", "cluster", false,
		    "no backup_schedule: no backups are taken");
	/*
	 * too old: a slot was missed. A slot's backup takes its time, so
	 * half an interval more (at most BACKUPS_MARGIN_MS) is allowed.
	 */
	margin = margin < BACKUPS_MARGIN_MS ? margin : BACKUPS_MARGIN_MS;
	age_text(age_ms, age, sizeof(age));
	if (!json_is_object(ok))
		n += (size_t)snprintf(why + n, sizeof(why) - n,
		    "no backup has succeeded yet (schedule %s)", sched);
	else if (age_ms > interval_ms + margin)
		n += (size_t)snprintf(why + n, sizeof(why) - n,
		    "the last good backup is %s old; the schedule is %s", age,
		    sched);
	else if (json_integer_value(json_object_get(ok, "missing")) > 0)
		n += (size_t)snprintf(why + n, sizeof(why) - n,
		    "the last backup lacks the database of "
		    "%" JSON_INTEGER_FORMAT " server(s) that did not answer",
		    json_integer_value(json_object_get(ok, "missing")));
	else if (!json_is_true(json_object_get(ok, "verified")))
		n += (size_t)snprintf(why + n, sizeof(why) - n,
		    "the last backup (%.200s) was not verified",
		    json_string_value(json_object_get(ok, "file"))
			? json_string_value(json_object_get(ok, "file"))
			: "?");
	if (result && strcmp(result, "ok") != 0 && n < sizeof(why))
		n += (size_t)snprintf(why + n, sizeof(why) - n,
		    "%sthe last attempt failed: %.300s", n ? "; " : "",
		    error ? error : result);
	if (n)
		row = check_row(
		    "backups", "last backup", "cluster", false, "%s", why);
	else
		row = check_row("backups", "last backup", "cluster", true,
		    "%s old, verified, %" JSON_INTEGER_FORMAT
		    " bytes (schedule %s)",
		    age, json_integer_value(json_object_get(ok, "size")),
		    sched);
	if (json_is_object(ok))
		json_object_set_new(
		    row, "age_seconds", json_integer(age_ms / 1000));
	return row;
}

/* ---- asking every server at once ---- */

struct ask {
	pthread_t thread;
	bool started;
	const struct check_target *t;
	const struct config_server *s;
	char url[600];
	long status;
	json_t *ans;
	char err[300];
};

static void *
ask_run(void *arg)
{
	struct ask *a = arg;

	if (check_http("GET", a->url, NULL, a->t->token, a->t->ca, NULL, NULL,
		CLUSTER_ASK_MS, &a->status, &a->ans, a->err,
		sizeof(a->err)) == 0 &&
	    a->status != 200)
		snprintf(a->err, sizeof(a->err), "it answered %ld%s%s",
		    a->status,
		    json_string_value(json_object_get(a->ans, "message")) ? ": "
									  : "",
		    json_string_value(json_object_get(a->ans, "message"))
			? json_string_value(json_object_get(a->ans, "message"))
			: "");
	return NULL;
}

static bool
answered(const struct ask *a)
{
	return a->status == 200 &&
	    json_is_array(json_object_get(a->ans, "checks"));
}

/* The row named name of group about server, from server's own answer. */
static int64_t
measure(const struct ask *a, const char *name, const char *key)
{
	size_t i;
	json_t *r;

	json_array_foreach (json_object_get(a->ans, "checks"), i, r)
		if (strcmp(field(r, "name"), name) == 0)
			return json_integer_value(json_object_get(r, key));
	return -1;
}

/* Add the rows of group about server to out: its own, or others' words. */
static void
rows_about(
    struct ask *asks, size_t n, size_t self, const char *group, json_t *out)
{
	const char *name = asks[self].s->name;
	size_t i;
	json_t *r;

	if (answered(&asks[self])) {
		json_array_foreach (
		    json_object_get(asks[self].ans, "checks"), i, r)
			if (strcmp(field(r, "group"), group) == 0 &&
			    strcmp(field(r, "server"), name) == 0)
				json_array_append(out, r);
		return;
	}
	/* what the first server that answered says about this one */
	for (size_t k = 0; k < n; k++) {
		bool any = false;

		if (k == self || !answered(&asks[k]))
			continue;
		json_array_foreach (
		    json_object_get(asks[k].ans, "checks"), i, r)
			if (strcmp(field(r, "group"), group) == 0 &&
			    strcmp(field(r, "server"), name) == 0) {
				json_t *c = json_deep_copy(r);

				json_object_set_new(c, "reported_by",
				    json_string(asks[k].s->name));
				json_array_append_new(out, c);
				any = true;
			}
		if (any)
			return;
	}
}

json_t *
check_cluster(const struct check_target *t)
{
	const struct config *cfg = t->cfg;
	struct ask *asks =
	    calloc(cfg->n_servers ? cfg->n_servers : 1, sizeof(*asks));
	json_t *out = json_object(), *rows = json_array(),
	       *names = json_array();
	json_t *backups = NULL, *r;
	int64_t newest = -1;
	size_t failures = 0, i;
	char base[300], since[32], now[32];

	if (asks == NULL || out == NULL || rows == NULL || names == NULL) {
		free(asks);
		json_decref(out);
		json_decref(rows);
		json_decref(names);
		return NULL;
	}
	for (i = 0; i < cfg->n_servers; i++) {
		struct ask *a = &asks[i];

		a->t = t;
		a->s = &cfg->servers[i];
		config_api_url(
		    cfg, a->s->address, a->s->api_port, base, sizeof(base));
		snprintf(a->url, sizeof(a->url), "%s/v1/check?since=%" PRId64,
		    base, t->since_ms);
		a->started = pthread_create(&a->thread, NULL, ask_run, a) == 0;
		if (!a->started)
			ask_run(a);
	}
	for (i = 0; i < cfg->n_servers; i++)
		if (asks[i].started)
			pthread_join(asks[i].thread, NULL);
	for (i = 0; i < cfg->n_servers; i++)
		if (answered(&asks[i]) &&
		    measure(&asks[i], "config version", "version") > newest)
			newest = measure(&asks[i], "config version", "version");
	for (i = 0; i < cfg->n_servers; i++) {
		struct ask *a = &asks[i];
		const char *name = a->s->name;

		json_array_append_new(names, json_string(name));
		for (size_t g = 0; g < ARRAY_SIZE(groups); g++) {
			if (strcmp(groups[g], "links") == 0)
				json_array_append_new(rows,
				    answered(a)
					? check_row("links", "api", name, true,
					      "answers /v1/check")
					: check_row("links", "api", name, false,
					      "does not answer /v1/check: %s",
					      a->err[0] ? a->err : "no JSON"));
			rows_about(asks, cfg->n_servers, i, groups[g], rows);
			if (strcmp(groups[g], "config") == 0 && answered(a)) {
				int64_t v =
				    measure(a, "config version", "version");

				json_array_append_new(rows,
				    check_row("config", "same version", name,
					v == newest,
					v == newest
					    ? "runs version %" PRId64
					      ", as the others do"
					    : "runs version %" PRId64
					      "; another server runs %" PRId64,
					v, newest));
			}
		}
		/* the backups are the cluster's: one server tells */
		if (backups == NULL && answered(a)) {
			long st = 0;
			json_t *ans = NULL;
			char url[600], err[256];

			config_api_url(cfg, a->s->address, a->s->api_port, base,
			    sizeof(base));
			snprintf(url, sizeof(url), "%s/v1/backups", base);
			if (check_http("GET", url, NULL, t->token, t->ca, NULL,
				NULL, 5000, &st, &ans, err, sizeof(err)) == 0)
				backups = check_backups_row(st, ans, t->now_ms);
			json_decref(ans);
		}
	}
	json_array_append_new(rows,
	    backups ? backups
		    : check_row("backups", "last backup", "cluster", false,
			  "no server answered GET /v1/backups"));
	json_array_foreach (rows, i, r)
		if (!json_is_true(json_object_get(r, "ok")))
			failures++;
	for (i = 0; i < cfg->n_servers; i++)
		json_decref(asks[i].ans);
	free(asks);
	time_iso8601(t->now_ms, now, sizeof(now));
	time_iso8601(t->since_ms, since, sizeof(since));
	json_object_set_new(out, "time", json_string(now));
	json_object_set_new(out, "time_ms", json_integer(t->now_ms));
	json_object_set_new(out, "since", json_string(since));
	json_object_set_new(out, "ok", json_boolean(failures == 0));
	json_object_set_new(
	    out, "failures", json_integer((json_int_t)failures));
	json_object_set_new(out, "servers", names);
	json_object_set_new(out, "rows", rows);
	return out;
}
