/*
 * The cluster's configuration over HTTP (docs/api.md, "Configuration"):
 * the version in effect or any earlier one, the history, diffs between
 * versions, and applying a new text.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config/diff.h"
#include "config/versions.h"

/* One request across the versions it reads. */
struct creq {
	struct http_req *req;
	struct api_ctx *ctx;
	struct versions_op *op;
	json_t *body; /* POST: what was sent */
	struct config *next; /* POST: the parsed text; diff: version to */
	int64_t to; /* diff: the second version */
	bool dry_run;
};

static void
creq_gone(struct http_req *req, void *arg)
{
	struct creq *c = arg;

	(void)req;
	/* the request is going away: its operation must not answer it */
	versions_cancel(c->op);
	json_decref(c->body);
	config_free(c->next);
	free(c);
}

static struct creq *
creq_new(struct http_req *req, struct api_ctx *ctx)
{
	struct creq *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return NULL;
	}
	c->req = req;
	c->ctx = ctx;
	http_req_on_gone(req, creq_gone, c);
	return c;
}

static unsigned
status_of(int err)
{
	switch (err) {
	case US_ENOTFOUND:
		return 404;
	case US_ECONFLICT:
		return 409;
	case US_EINVAL:
	case US_ECONFIG:
		return 400;
	case US_ETOOBIG:
		return 500;
	default:
		return 503;
	}
}

/* Answer a failed read or store; true when r was a failure. */
static bool
failed(struct creq *c, const struct versions_res *r)
{
	c->op = NULL;
	if (r->err == 0)
		return false;
	if (r->err == US_ECONFLICT) {
		http_reply_json(c->req, 409,
		    json_pack("{s:s,s:s,s:I}", "error", us_err_name(r->err),
			"message", r->message, "in_effect",
			(json_int_t)r->in_effect));
		return true;
	}
	http_reply_error(c->req, status_of(r->err), r->err, "%s", r->message);
	return true;
}

/* A version's text, parsed; NULL with an answer given when it fails. */
static struct config *
parsed(struct creq *c, const json_t *version)
{
	const char *text = json_string_value(json_object_get(version, "text"));
	struct config_diags d = {0};
	struct config *cfg;
	char name[64];

	snprintf(name, sizeof(name), "version %" PRId64,
	    (int64_t)json_integer_value(json_object_get(version, "version")));
	cfg = text ? config_parse(name, text, strlen(text), &d) : NULL;
	if (cfg == NULL || d.errors) {
		http_reply_error(c->req, 500, US_ECONFIG,
		    "%s does not parse with this release%s%s", name,
		    d.n ? ": " : "", d.n ? d.v[0].message : "");
		config_free(cfg);
		cfg = NULL;
	}
	config_diags_free(&d);
	return cfg;
}

/* ---- GET /v1/config[?version=N|?at=TIME] ---- */

static void
got_one(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;

	if (failed(c, r))
		return;
	http_reply_json(c->req, 200, json_incref(r->version));
}

static bool
number_param(const char *v, int64_t *out)
{
	char *end;
	long long n;

	if (v == NULL || *v == '\0')
		return false;
	n = strtoll(v, &end, 10);
	if (*end != '\0' || n < 1)
		return false;
	*out = n;
	return true;
}

/* The version in effect at the time asked for: the last one before it. */
static void
got_log_at(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;
	int64_t at = c->to, n = 0;
	size_t i;
	json_t *v;

	if (failed(c, r))
		return;
	json_array_foreach (r->list, i, v)
		if (json_integer_value(json_object_get(v, "time_ms")) <= at)
			n = json_integer_value(json_object_get(v, "version"));
	if (n == 0) {
		char when[32];

		http_reply_error(c->req, 404, US_ENOTFOUND,
		    "no configuration was in effect at %s (the first version "
		    "came later)",
		    time_iso8601(at, when, sizeof(when)));
		return;
	}
	if ((c->op = versions_get(c->ctx->versions, n, got_one, c)) == NULL)
		http_reply_error(c->req, 500, US_ENOMEM, "out of memory");
}

void
config_get(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *ver = http_req_query(req, "version"),
		   *at = http_req_query(req, "at");
	struct creq *c;
	int64_t n;

	(void)pa;
	if (ver && !number_param(ver, &n)) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter version: '%.30s' is not a version number",
		    ver);
		return;
	}
	if (at && time_parse(at, time_wall_ms(), &n) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter at: '%.40s' is not a time (2026-12-01, "
		    "2026-12-01T09:00Z, 2h)",
		    at);
		return;
	}
	if ((c = creq_new(req, ctx)) == NULL)
		return;
	if (ver)
		c->op = versions_get(ctx->versions, n, got_one, c);
	else if (at) {
		c->to = n;
		c->op = versions_log(ctx->versions, got_log_at, c);
	} else
		c->op = versions_current(ctx->versions, NULL, NULL, got_one, c);
	if (c->op == NULL)
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
}

/* ---- GET /v1/config/history ---- */

static void
got_log(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;
	size_t n;

	if (failed(c, r))
		return;
	n = json_array_size(r->list);
	http_reply_json(c->req, 200,
	    json_pack("{s:I,s:I,s:O}", "in_effect",
		n ? json_integer_value(json_object_get(
			json_array_get(r->list, n - 1), "version"))
		  : 0,
		"running", (json_int_t)c->ctx->cfg->version, "versions",
		r->list));
}

void
config_history(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct creq *c = creq_new(req, ctx);

	(void)pa;
	if (c && (c->op = versions_log(ctx->versions, got_log, c)) == NULL)
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
}

/* ---- GET /v1/config/diff?from=N&to=M ---- */

static void
got_to(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;
	struct config *to;
	json_t *d;

	if (failed(c, r) || (to = parsed(c, r->version)) == NULL)
		return;
	d = config_diff(c->next, to);
	config_free(to);
	if (d == NULL) {
		http_reply_error(c->req, 500, US_ENOMEM, "out of memory");
		return;
	}
	json_object_set_new(d, "to", json_integer(c->to));
	http_reply_json(c->req, 200, d);
}

static void
got_from(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;

	if (failed(c, r) || (c->next = parsed(c, r->version)) == NULL)
		return;
	if ((c->op = versions_get(c->ctx->versions, c->to, got_to, c)) == NULL)
		http_reply_error(c->req, 500, US_ENOMEM, "out of memory");
}

void
config_diff_versions(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *from = http_req_query(req, "from"),
		   *to = http_req_query(req, "to");
	int64_t a, b;
	struct creq *c;

	(void)pa;
	if (!number_param(from, &a) || !number_param(to, &b)) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameters from and to: two version numbers");
		return;
	}
	if ((c = creq_new(req, ctx)) == NULL)
		return;
	c->to = b;
	if ((c->op = versions_get(ctx->versions, a, got_from, c)) == NULL)
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
}

/* ---- POST /v1/config ---- */

static json_t *
diags_json(const struct config_diags *d, const char *name)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < d->n; i++) {
		const struct config_diag *g = &d->v[i];
		const char *sev =
		    g->severity == CONFIG_ERROR ? "error" : "warning";
		char line[CONFIG_LINE_MAX + 300];

		if (g->line > 0)
			snprintf(line, sizeof(line), "%s:%d: %s: %s", name,
			    g->line, sev, g->message);
		else
			snprintf(line, sizeof(line), "%s: %s: %s", name, sev,
			    g->message);
		json_array_append_new(arr,
		    json_pack("{s:i,s:s,s:s,s:s}", "line", g->line, "severity",
			sev, "message", g->message, "text", line));
	}
	return arr;
}

static void
stored(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;
	json_t *out;

	if (failed(c, r))
		return;
	out = json_deep_copy(json_object_get(c->body, "diff"));
	json_object_set_new(out, "version", json_integer(r->in_effect));
	json_object_set_new(out, "replaces",
	    json_integer(
		json_integer_value(json_object_get(r->version, "replaces"))));
	json_object_set_new(
	    out, "executed_by", json_string(c->ctx->self->name));
	log_info("config: version %" PRId64 " stored by %s (%s)", r->in_effect,
	    json_string_value(json_object_get(c->body, "author")),
	    json_string_value(
		json_object_get(json_object_get(c->body, "diff"), "summary")));
	http_reply_json(c->req, 200, out);
}

/* The version in effect came: diff against it, then store (or not). */
static void
got_base(const struct versions_res *r, void *arg)
{
	struct creq *c = arg;
	const json_t *b = c->body;
	json_t *base_j = json_object_get(b, "base"), *d;
	struct config *cur;
	int64_t base =
	    json_integer_value(json_object_get(r->version, "version"));
	char author[300];

	if (failed(c, r) || (cur = parsed(c, r->version)) == NULL)
		return;
	d = config_diff(cur, c->next);
	config_free(cur);
	if (d == NULL) {
		http_reply_error(c->req, 500, US_ENOMEM, "out of memory");
		return;
	}
	json_object_set_new(d, "base", json_integer(base));
	json_object_set_new(d, "dry_run", json_boolean(c->dry_run));
	/* the same text again (a retry after a lost answer): done once */
	if (json_array_size(json_object_get(d, "changes")) == 0) {
		json_object_set_new(d, "version", json_integer(base));
		json_object_set_new(d, "stored", json_false());
		json_object_set_new(
		    d, "executed_by", json_string(c->ctx->self->name));
		http_reply_json(c->req, 200, d);
		return;
	}
	if (json_is_integer(base_j) && json_integer_value(base_j) != base) {
		json_decref(d);
		http_reply_json(c->req, 409,
		    json_pack("{s:s,s:s,s:I}", "error", "ECONFLICT", "message",
			"the configuration changed meanwhile: look at the "
			"version in effect and apply again",
			"in_effect", (json_int_t)base));
		return;
	}
	if (c->dry_run || json_array_size(json_object_get(d, "changes")) == 0) {
		json_object_set_new(d, "version", json_integer(base));
		json_object_set_new(d, "stored", json_false());
		http_reply_json(c->req, 200, d);
		return;
	}
	snprintf(author, sizeof(author), "%s from %s",
	    json_string_value(json_object_get(b, "author"))
		? json_string_value(json_object_get(b, "author"))
		: "?",
	    http_req_peer(c->req));
	json_object_set_new(c->body, "author", json_string(author));
	json_object_set_new(c->body, "diff", d);
	c->op = versions_store(c->ctx->versions,
	    json_string_value(json_object_get(b, "text")), base, author,
	    json_string_value(json_object_get(b, "comment")),
	    json_string_value(json_object_get(d, "summary")), stored, c);
	if (c->op == NULL)
		http_reply_error(c->req, 500, US_ENOMEM, "out of memory");
}

void
config_apply(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	size_t len;
	const char *raw = http_req_body(req, &len), *text, *name;
	struct config_diags d = {0};
	json_error_t jerr;
	struct creq *c;
	json_t *body;

	(void)pa;
	body = json_loadb(raw ? raw : "", raw ? len : 0, 0, &jerr);
	text = json_string_value(json_object_get(body, "text"));
	name = json_string_value(json_object_get(body, "name"));
	if (body == NULL) {
		http_reply_error(req, 400, US_EINVAL,
		    "the body is not JSON (line %d: %s)", jerr.line, jerr.text);
		return;
	}
	if (text == NULL) {
		http_reply_error(req, 400, US_EINVAL,
		    "the body needs \"text\": the configuration");
		json_decref(body);
		return;
	}
	if (strlen(text) > VERSIONS_TEXT_MAX) {
		http_reply_error(req, 400, US_ETOOBIG,
		    "the configuration is over %d bytes", VERSIONS_TEXT_MAX);
		json_decref(body);
		return;
	}
	if ((c = creq_new(req, ctx)) == NULL) {
		json_decref(body);
		return;
	}
	c->body = body;
	c->dry_run = json_is_true(json_object_get(body, "dry_run"));
	c->next = config_parse(name ? name : "config", text, strlen(text), &d);
	if (c->next == NULL || d.errors) {
		http_reply_json(req, 400,
		    json_pack("{s:s,s:s,s:o}", "error", "ECONFIG", "message",
			"the configuration has errors: nothing changed",
			"diagnostics", diags_json(&d, name ? name : "config")));
		config_diags_free(&d);
		return;
	}
	config_diags_free(&d);
	c->op = versions_current(ctx->versions, NULL, NULL, got_base, c);
	if (c->op == NULL)
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
}
