/*
 * The maintenance check's routes (docs/api.md): GET /v1/check runs this
 * server's own checks in the thread pool (src/check/probe.c); GET
 * /v1/check/last is the last scheduled result; GET /v1/log the warnings
 * and errors this worker logged lately.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "api.h"
#include "calls/calls.h"
#include "check/check.h"

#define CHECK_RUNS_MAX 2 /* checks at once: they share the thread pool */
#define LOG_LIMIT_DEFAULT 100

static unsigned check_running; /* on the loop only */

struct check_run {
	uv_work_t work;
	struct http_req *req; /* NULL once it went away */
	struct check_probe p;
	json_t *rows;
	char server[CONFIG_NAME_MAX + 1];
	int64_t since_ms;
};

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static char **
dup_list(const struct strlist *l)
{
	char **v = calloc(l->n ? l->n : 1, sizeof(char *));

	for (size_t i = 0; v && i < l->n; i++)
		v[i] = strdup(l->v[i]);
	return v;
}

/* The errors group: what this worker logged since since_ms. */
static json_t *
errors_row(const char *self, int64_t since_ms)
{
	struct log_entry last;
	struct log_summary sum;
	char at[32], since[32];
	json_t *row;

	time_iso8601(since_ms, since, sizeof(since));
	if (log_recent(LOG_LEVEL_ERROR, since_ms, &last, 1, &sum) == 1) {
		time_iso8601(last.time_ms, at, sizeof(at));
		row = check_row("errors", "errors logged", self, false,
		    "%s%zu error(s) and %zu warning(s) since %s; the last at "
		    "%s: %.200s",
		    sum.truncated ? "at least " : "", sum.errors, sum.warnings,
		    since, at, last.text);
	} else {
		row = check_row("errors", "errors logged", self, true,
		    "no error since %s; %s%zu warning(s)", since,
		    sum.truncated ? "at least " : "", sum.warnings);
	}
	json_object_set_new(
	    row, "errors", json_integer((json_int_t)sum.errors));
	json_object_set_new(
	    row, "warnings", json_integer((json_int_t)sum.warnings));
	return row;
}

/* The config group: the version this server runs, and its local file. */
static json_t *
config_rows(const struct api_ctx *ctx)
{
	const char *self = ctx->self->name;
	int64_t v = ctx->cfg->version, want = ctx->config_in_effect;
	json_t *rows = json_array(), *row;

	if (v == want && ctx->config_restart == NULL)
		row = check_row("config", "config version", self, true,
		    "runs version %" PRId64 ", the version in effect", v);
	else
		row = check_row("config", "config version", self, false,
		    "runs version %" PRId64 "; version %" PRId64
		    " is in effect%s%s",
		    v, want,
		    json_string_value(json_array_get(ctx->config_restart, 0))
			? ": it needs a restart for "
			: "",
		    json_string_value(json_array_get(ctx->config_restart, 0))
			? json_string_value(
			      json_array_get(ctx->config_restart, 0))
			: "");
	json_object_set_new(row, "version", json_integer(v));
	json_object_set_new(row, "in_effect", json_integer(want));
	json_array_append_new(rows, row);
	json_array_append_new(rows,
	    ctx->config_differs
		? check_row("config", "local file", self, false,
		      "the local file differs from version %" PRId64
		      " in effect (the server runs the version in effect)",
		      want)
		: check_row("config", "local file", self, true,
		      "the local file is the version in effect"));
	return rows;
}

int
routes_check_fill(
    struct check_probe *p, const struct api_ctx *ctx, int64_t since)
{
	const struct config *cfg = ctx->cfg;
	const struct config_cluster *cl = &cfg->cluster;
	json_t *sip = ctx->sip ? sip_check_json(ctx->sip) : NULL;
	const char *reg = json_string_value(json_object_get(sip, "registrar"));
	char base[300];
	size_t k = 0;

	p->cluster = strdup(cl->name);
	p->self = strdup(ctx->self->name);
	p->address = strdup(ctx->self->address);
	p->etcd = dup_list(&cl->etcd);
	p->n_etcd = cl->etcd.n;
	p->etcd_ca = config_file_path(cfg, cl->etcd_ca);
	p->etcd_cert = config_file_path(cfg, cl->etcd_cert);
	p->etcd_key = config_file_path(cfg, cl->etcd_key);
	if (reg && strrchr(reg, ':')) {
		p->registrar_host =
		    strndup(reg, (size_t)(strrchr(reg, ':') - reg));
		p->registrar_port =
		    (int)strtol(strrchr(reg, ':') + 1, NULL, 10);
	}
	p->route_points = json_incref(json_object_get(sip, "route_points"));
	json_decref(sip);
	p->nats = dup_list(&cl->messaging);
	p->n_nats = cl->messaging.n;
	p->nats_ca = config_file_path(cfg, cl->messaging_ca);
	p->nats_cert = config_file_path(cfg, cl->messaging_cert);
	p->nats_key = config_file_path(cfg, cl->messaging_key);
	p->nats_token = dup_or_null(cl->messaging_token);
	p->nats_user = dup_or_null(cl->messaging_user);
	p->nats_password = dup_or_null(cl->messaging_password);
	p->peers = calloc(cfg->n_servers, sizeof(char *));
	p->peer_urls = calloc(cfg->n_servers, sizeof(char *));
	p->servers = calloc(cfg->n_servers, sizeof(char *));
	if (p->peers == NULL || p->peer_urls == NULL || p->servers == NULL)
		return -1;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		const struct config_server *s = &cfg->servers[i];

		p->servers[p->n_servers++] = strdup(s->name);
		if (s == ctx->self || strcmp(s->name, ctx->self->name) == 0)
			continue;
		config_api_url(
		    cfg, s->address, s->api_port, base, sizeof(base));
		p->peers[k] = strdup(s->name);
		p->peer_urls[k] = strdup(base);
		p->n_peers = ++k;
	}
	p->api_ca = config_file_path(cfg, cl->tls_ca);
	p->state_dir = strdup(ctx->state_dir ? ctx->state_dir : ".");
	p->min_free_bytes = (int64_t)cl->check_disk_min_free * 1024 * 1024;
	p->errors_row = errors_row(ctx->self->name, since);
	p->config_rows = config_rows(ctx);
	for (size_t i = 0; i < p->n_etcd; i++)
		if (p->etcd[i] == NULL)
			return -1;
	for (size_t i = 0; i < p->n_nats; i++)
		if (p->nats[i] == NULL)
			return -1;
	for (size_t i = 0; i < cfg->n_servers; i++)
		if (p->servers[i] == NULL ||
		    (i < p->n_peers && (!p->peers[i] || !p->peer_urls[i])))
			return -1;
	return p->cluster && p->self && p->address && p->state_dir &&
		p->errors_row && p->config_rows
	    ? 0
	    : -1;
}

static void
run_free(struct check_run *r)
{
	check_probe_clear(&r->p);
	json_decref(r->rows);
	free(r);
}

static void
run_gone(struct http_req *req, void *arg)
{
	struct check_run *r = arg;

	(void)req;
	r->req = NULL; /* the answer, when it comes, goes nowhere */
}

static void
run_work(uv_work_t *w)
{
	struct check_run *r = w->data;

	r->rows = check_probe_run(&r->p);
}

static void
run_done(uv_work_t *w, int status)
{
	struct check_run *r = w->data;
	char now[32], since[32];
	size_t failures = 0, i;
	json_t *row;

	(void)status;
	check_running--;
	if (r->req == NULL) {
		run_free(r);
		return;
	}
	http_req_on_gone(r->req, NULL, NULL);
	if (r->rows == NULL) {
		http_reply_error(r->req, 500, US_ENOMEM, "out of memory");
		run_free(r);
		return;
	}
	json_array_foreach (r->rows, i, row)
		if (!json_is_true(json_object_get(row, "ok")))
			failures++;
	time_iso8601(time_wall_ms(), now, sizeof(now));
	time_iso8601(r->since_ms, since, sizeof(since));
	http_reply_json(r->req, 200,
	    json_pack("{s:s,s:s,s:s,s:b,s:I,s:O}", "server", r->server, "time",
		now, "since", since, "ok", failures == 0, "failures",
		(json_int_t)failures, "checks", r->rows));
	run_free(r);
}

void
check_get(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct check_run *r;
	int64_t since;

	(void)pa;
	if (!routes_time_arg(req, "since", &since))
		return;
	if (since == 0)
		since = time_wall_ms() - CHECK_SINCE_DEFAULT_MS;
	if (check_running >= CHECK_RUNS_MAX) {
		http_req_add_reply_header(req, "Retry-After", "1");
		http_reply_error(req, 503, US_EBUSY,
		    "%d checks already run on this server: try again",
		    CHECK_RUNS_MAX);
		return;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    routes_check_fill(&r->p, ctx, since) != 0) {
		if (r)
			run_free(r);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	r->req = req;
	r->since_ms = since;
	r->work.data = r;
	str_copy(r->server, ctx->self->name, sizeof(r->server));
	if (uv_queue_work(uv_default_loop(), &r->work, run_work, run_done) !=
	    0) {
		run_free(r);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	check_running++;
	http_req_on_gone(req, run_gone, r);
}

void
check_last(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const json_t *last = check_sched_last(ctx->check);

	(void)pa;
	if (last == NULL) {
		http_reply_error(req, 404, US_ENOTFOUND,
		    "no scheduled check has run yet (check_schedule: %s)",
		    ctx->cfg->cluster.check_schedule
			? ctx->cfg->cluster.check_schedule
			: "not set");
		return;
	}
	http_reply_json(req, 200, json_deep_copy(last));
}

void
log_get(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *lv = http_req_query(req, "level");
	const char *lim = http_req_query(req, "limit");
	struct log_entry *e;
	struct log_summary sum;
	long limit = LOG_LIMIT_DEFAULT;
	int level = LOG_LEVEL_WARN;
	int64_t since;
	uint64_t warns, errs;
	char at[32];
	json_t *arr;
	size_t n;

	(void)pa;
	if (lv && ((level = log_level_parse(lv)) < LOG_LEVEL_WARN)) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter level: '%.20s' is not warn or error", lv);
		return;
	}
	if (lim && str_to_long(lim, 1, LOG_RECENT_MAX, &limit) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter limit: '%.30s' is not a number from 1 to "
		    "%d",
		    lim, LOG_RECENT_MAX);
		return;
	}
	if (!routes_time_arg(req, "since", &since))
		return;
	if ((e = calloc((size_t)limit, sizeof(*e))) == NULL ||
	    (arr = json_array()) == NULL) {
		free(e);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	n = log_recent((enum log_level)level, since, e, (size_t)limit, &sum);
	for (size_t i = 0; i < n; i++) {
		time_iso8601(e[i].time_ms, at, sizeof(at));
		json_array_append_new(arr,
		    json_pack("{s:s,s:I,s:s,s:I,s:s}", "time", at, "time_ms",
			(json_int_t)e[i].time_ms, "level",
			log_level_name(e[i].level), "seq", (json_int_t)e[i].seq,
			"message", e[i].text));
	}
	free(e);
	log_counts(&warns, &errs);
	http_reply_json(req, 200,
	    json_pack("{s:s,s:{s:I,s:I},s:{s:I,s:I},s:I,s:b,s:o}", "server",
		ctx->self->name, "counts", "warn", (json_int_t)warns, "error",
		(json_int_t)errs, "since_counts", "warn",
		(json_int_t)sum.warnings, "error", (json_int_t)sum.errors,
		"matched", (json_int_t)sum.matched, "truncated", sum.truncated,
		"entries", arr));
}
