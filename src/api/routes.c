/*
 * The routes of the HTTP API. One table: path pattern ('*' is one path
 * segment), method, handler, the credential it needs. A path that matches
 * nothing is 404; one that matches with another method is 405 with an
 * Allow header.
 */
#include <inttypes.h>
#include <string.h>

#include <sodium.h>

#include "agent/agent.h"
#include "api.h"
#include "backup/backup.h"
#include "desks/desks.h"
#include "calls/calls.h"
#include "check/check.h"

/* Who may: the credential a route needs (docs/api.md). */
enum access {
	ACCESS_OPEN, /* health, the desk API (its own sessions) */
	ACCESS_STATUS, /* read_token or admin_token, when read_token is set */
	ACCESS_READ, /* personal data: read_token or admin_token, always */
	ACCESS_ADMIN /* changes: admin_token */
};

struct route {
	const char *pattern;
	const char *method;
	route_fn fn;
	enum access access;
	bool primary; /* an admin action: the admin primary executes it */
};

/* ---- helpers ---- */

static bool
serving(const struct api_ctx *ctx)
{
	return !ctx->stopping && lease_valid(ctx->lease) &&
	    members_registered(ctx->members);
}

static void
reply_not_owner(
    struct http_req *req, struct api_ctx *ctx, const struct calls_result *r)
{
	const char *addr = NULL;
	long port = 0;
	char loc[256];
	json_t *o;

	if (r->server[0])
		addr = members_address(ctx->members, r->server, &port);
	o = json_pack(
	    "{s:s,s:s}", "error", us_err_name(r->err), "message", r->message);
	if (r->server[0] && strcmp(r->server, ctx->self->name) != 0) {
		json_object_set_new(o, "owner", json_string(r->server));
		if (addr) {
			config_api_url(ctx->cfg, addr, port, loc, sizeof(loc));
			json_object_set_new(o, "location", json_string(loc));
			http_req_add_reply_header(req, "Location", loc);
		}
		/* 421: this request belongs on another server */
		http_reply_json(req, 421, o);
		return;
	}
	http_reply_json(req, 503, o);
}

static unsigned
status_of(int err)
{
	switch (err) {
	case US_ENOTFOUND:
		return 404;
	case US_EBUSY:
	case US_EUNAVAIL:
		return 503;
	case US_EINVAL:
		return 409;
	default:
		return 500;
	}
}

static void
reply_result(struct http_req *req, struct api_ctx *ctx,
    const struct calls_result *r, unsigned ok_status)
{
	json_t *o;

	if (r->err == US_ENOTOWNER) {
		reply_not_owner(req, ctx, r);
		return;
	}
	if (r->err) {
		http_reply_error(
		    req, status_of(r->err), r->err, "%s", r->message);
		return;
	}
	o = json_pack("{s:s,s:s,s:s,s:I,s:I}", "call", r->call, "post", r->post,
	    "server", r->server, "port", (json_int_t)r->port, "epoch",
	    (json_int_t)r->epoch);
	if (r->status) {
		json_object_set_new(o, "status", json_string(r->status));
		json_object_set_new(
		    o, "duration_ms", json_integer(r->duration_ms));
	}
	http_reply_json(req, ok_status, o);
}

/* ---- asynchronous answers ---- */

struct pending {
	struct http_req *req;
	struct api_ctx *ctx;
	unsigned ok_status;
};

static void
pending_gone(struct http_req *req, void *arg)
{
	struct pending *pd = arg;

	(void)req;
	/* the request is going away: its operation must not answer it */
	calls_forget(pd->ctx->calls, pd);
	free(pd);
}

static void
pending_answer(const struct calls_result *r, void *arg)
{
	struct pending *pd = arg;

	reply_result(pd->req, pd->ctx, r, pd->ok_status);
}

static struct pending *
pending_new(struct http_req *req, struct api_ctx *ctx, unsigned ok_status)
{
	struct pending *pd = calloc(1, sizeof(*pd));

	if (pd == NULL)
		return NULL;
	pd->req = req;
	pd->ctx = ctx;
	pd->ok_status = ok_status;
	http_req_on_gone(req, pending_gone, pd);
	return pd;
}

/* ---- health and status ---- */

const char *
routes_unhealthy(const struct api_ctx *ctx, bool operator_stop)
{
	if (ctx->stopping)
		return "stopping";
	if (!lease_valid(ctx->lease))
		return lease_reason(ctx->lease);
	if (!members_registered(ctx->members))
		return "registering";
	if (!agent_synced(ctx->agent) ||
	    !members_is_up(ctx->members, ctx->self->name))
		return "reading the cluster's state";
	if (operator_stop && agent_stopped(ctx->agent, ctx->self->name))
		return "stopped by an operator";
	return NULL;
}

static void
get_health(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *why = routes_unhealthy(ctx, true);
	char buf[128];

	(void)pa;
	if (why == NULL)
		why = routes_services_unhealthy(ctx, buf, sizeof(buf));
	if (why) {
		http_reply_json(req, 503,
		    json_pack("{s:s,s:s,s:s}", "status", "unavailable",
			"server", ctx->self->name, "reason", why));
		return;
	}
	http_reply_json(req, 200,
	    json_pack("{s:s,s:s}", "status", "ok", "server", ctx->self->name));
}

json_t *
routes_status_json(struct api_ctx *ctx)
{
	json_t *o = agent_status_json(ctx->agent);
	char now[32];
	uint64_t placed[2], ended[2], lost, active, failovers, dropped;

	if (o == NULL)
		return NULL;
	time_iso8601(time_wall_ms(), now, sizeof(now));
	json_object_set_new(o, "cluster", json_string(ctx->cfg->cluster.name));
	json_object_set_new(o, "server", json_string(ctx->self->name));
	json_object_set_new(o, "time", json_string(now));
	json_object_set_new(o, "serving", json_boolean(serving(ctx)));
	json_object_set_new(o, "config",
	    json_pack("{s:I,s:I,s:b,s:O?}", "version",
		(json_int_t)ctx->cfg->version, "in_effect",
		(json_int_t)ctx->config_in_effect, "local_file_differs",
		ctx->config_differs, "restart_needed", ctx->config_restart));
	json_object_set_new(o, "lease_remaining_ms",
	    json_integer(lease_remaining_ms(ctx->lease)));
	json_object_set_new(o, "members", members_json(ctx->members));
	json_object_set_new(o, "links", links_json(ctx->links));
	json_object_set_new(o, "services", routes_services_json(ctx));
	if (ctx->sip)
		json_object_set_new(
		    o, "registrations", sip_registrations_json(ctx->sip));
	calls_counters(ctx->calls, placed, ended, &lost, &active);
	agent_counters(ctx->agent, &failovers, &dropped);
	json_object_set_new(o, "counters",
	    json_pack("{s:f,s:I,s:I,s:I,s:I,s:I}", "calls_per_second",
		calls_per_second(ctx->calls), "calls_taken",
		(json_int_t)(placed[0] + placed[1]), "calls_active",
		(json_int_t)active, "calls_busy",
		(json_int_t)calls_busy(ctx->calls), "failovers",
		(json_int_t)failovers, "calls_dropped_by_failover",
		(json_int_t)dropped));
	return o;
}

static void
get_status(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	http_reply_json(req, 200, routes_status_json(ctx));
}

/* ---- calls ---- */

static void
post_call(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct pending *pd = pending_new(req, ctx, 201);
	struct calls_result r;

	if (pd == NULL) {
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	if (calls_place(ctx->calls, pa->v[0], http_req_query(req, "caller"), &r,
		pending_answer, pd) != 0)
		reply_result(req, ctx, &r, 201);
}

static void
end_call(struct http_req *req, struct api_ctx *ctx, const struct params *pa,
    bool transferred)
{
	struct pending *pd = pending_new(req, ctx, 200);
	struct calls_result r;

	if (pd == NULL) {
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	if (calls_end(ctx->calls, pa->v[0], transferred, "http",
		transferred ? "transfer" : "api", &r, pending_answer, pd) != 0)
		reply_result(req, ctx, &r, 200);
}

static void
delete_call(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	end_call(req, ctx, pa, false);
}

static void
transfer_call(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	end_call(req, ctx, pa, true);
}

static void
get_calls(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	http_reply_json(req, 200,
	    json_pack("{s:s,s:o}", "server", ctx->self->name, "calls",
		calls_json(ctx->calls)));
}

/* ---- control ---- */

struct control {
	struct http_req *req;
	char server[CONFIG_NAME_MAX + 1];
	char self[CONFIG_NAME_MAX + 1]; /* who executed it */
	const char *action;
	bool gone;
};

static void
control_gone(struct http_req *req, void *arg)
{
	struct control *ct = arg;

	(void)req;
	ct->gone = true;
}

static void
control_done(const struct agent_control_result *res, void *arg)
{
	struct control *ct = arg;

	if (!ct->gone) {
		http_req_on_gone(ct->req, NULL, NULL);
		if (res->outcome == AGENT_CONTROL_DONE)
			http_reply_json(ct->req, 202,
			    json_pack("{s:s,s:s,s:s,s:s,s:b}", "server",
				ct->server, "action", ct->action, "result",
				"accepted", "executed_by", ct->self,
				"read_back", res->read_back));
		else if (res->outcome == AGENT_CONTROL_NOT_DONE)
			http_reply_error(ct->req, 503, US_EUNAVAIL,
			    "%s %s was not done (its answer was lost, and "
			    "reading it back showed it not applied; it never "
			    "will be): try again",
			    ct->action, ct->server);
		else
			http_reply_error(ct->req, 504, US_ETIMEDOUT,
			    "%s %s: the outcome is unknown (%s): the "
			    "coordination store did not answer, even to "
			    "reading it back; see understudy status",
			    ct->action, ct->server, us_strerror(res->err));
	}
	free(ct);
}

static void
control(struct http_req *req, struct api_ctx *ctx, const struct params *pa,
    const char *action)
{
	const char *name = pa->v[0];
	struct agent_post *post = agent_post_find(ctx->agent, name);
	struct control *ct;
	char now[32], *value = NULL;
	int rc = US_ENOMEM;

	if (config_server_find(ctx->cfg, name) == NULL) {
		http_reply_error(req, 404, US_ENOTFOUND, "no server %s", name);
		return;
	}
	if (strcmp(action, "failback") == 0 &&
	    (post == NULL || post->state != POST_STATE_COVERED)) {
		http_reply_error(req, 409, US_EINVAL,
		    "%s has no covered post to fail back (%s)", name,
		    post ? post_state_name(post->state) : "a spare");
		return;
	}
	if ((ct = calloc(1, sizeof(*ct))) == NULL) {
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	ct->req = req;
	ct->action = action;
	str_copy(ct->server, name, sizeof(ct->server));
	str_copy(ct->self, ctx->self->name, sizeof(ct->self));
	time_iso8601(time_wall_ms(), now, sizeof(now));
	if (asprintf(&value, "{\"by\":\"%s\",\"at\":\"%s\"}", ctx->self->name,
		now) >= 0) {
		rc = agent_control(
		    ctx->agent, action, name, value, control_done, ct);
		free(value);
	}
	if (rc != 0) {
		free(ct);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	log_info("operator: %s %s", action, name);
	http_req_on_gone(req, control_gone, ct);
}

static void
post_stop(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	control(req, ctx, pa, "stop");
}

static void
post_start(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	control(req, ctx, pa, "start");
}

static void
post_failback(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	control(req, ctx, pa, "failback");
}

/* ---- metrics (Prometheus text format 0.0.4) ---- */

void
routes_label(struct buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			buf_printf(b, "\\n");
		else
			buf_append(b, v, 1);
	}
}

int
routes_page_check(
    const struct buf *b, const char *what, char *msg, size_t msglen)
{
	switch (b->err) {
	case 0:
		return 0;
	case US_ETOOBIG:
		log_error("api: %s is over its cap of %zu bytes; answering "
			  "500 ETOOBIG instead of a cut page",
		    what, b->max);
		snprintf(msg, msglen,
		    "%s is over its cap of %zu bytes; nothing of it was sent",
		    what, b->max);
		return US_ETOOBIG;
	default:
		log_error("api: %s could not be built: %s", what,
		    us_strerror(b->err));
		snprintf(msg, msglen, "%s could not be built: %s", what,
		    us_strerror(b->err));
		return b->err;
	}
}

/* Send a page built with unchecked appends: whole, or an error. */
static void
reply_page(struct http_req *req, const struct buf *b, const char *what,
    const char *content_type)
{
	char msg[256];
	int err;

	if ((err = routes_page_check(b, what, msg, sizeof(msg))) != 0)
		http_reply_error(req, 500, err, "%s", msg);
	else
		http_reply_text(
		    req, 200, content_type, b->data ? b->data : "", b->len);
}

static void
metric_head(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The log's counters and the last scheduled check's result. */
static void
metrics_check(struct buf *b, const struct api_ctx *ctx)
{
	const json_t *last = check_sched_last(ctx->check);
	uint64_t warns, errs;

	log_counts(&warns, &errs);
	metric_head(b, "understudy_log_messages_total", "counter",
	    "Warnings and errors this worker logged since it started");
	buf_printf(b,
	    "understudy_log_messages_total{level=\"warn\"} %" PRIu64
	    "\nunderstudy_log_messages_total{level=\"error\"} %" PRIu64 "\n",
	    warns, errs);
	if (last == NULL)
		return;
	metric_head(b, "understudy_check_ok", "gauge",
	    "1 when every check of the last scheduled check passed, else 0");
	buf_printf(b, "understudy_check_ok %d\n",
	    json_is_true(json_object_get(last, "ok")) ? 1 : 0);
	metric_head(b, "understudy_check_failures", "gauge",
	    "Checks that failed in the last scheduled check");
	buf_printf(b, "understudy_check_failures %" JSON_INTEGER_FORMAT "\n",
	    json_integer_value(json_object_get(last, "failures")));
	metric_head(b, "understudy_check_last_timestamp_seconds", "gauge",
	    "When the last scheduled check ran (seconds since the epoch)");
	buf_printf(b, "understudy_check_last_timestamp_seconds %.3f\n",
	    (double)json_integer_value(json_object_get(last, "time_ms")) /
		1000);
}

/*
 * Posts: who owns each, and its epoch as a value: an epoch label would
 * make a new series at every failover.
 */
static void
metric_post_lines(struct buf *b, struct api_ctx *ctx)
{
	struct agent_post *p;
	size_t i;

	metric_head(b, "understudy_post_owned", "gauge",
	    "1 when the post has an owner now; its state and owner");
	for (i = 0; (p = agent_post_at(ctx->agent, i)) != NULL; i++) {
		buf_printf(b, "understudy_post_owned{post=\"");
		routes_label(b, p->home->name);
		buf_printf(
		    b, "\",state=\"%s\",owner=\"", post_state_name(p->state));
		routes_label(b, p->owned ? p->owner : "");
		buf_printf(b, "\"} %d\n", p->owned ? 1 : 0);
	}
	metric_head(b, "understudy_post_epoch", "gauge",
	    "The post's epoch: the etcd revision its owner took it at (the "
	    "fencing token)");
	for (i = 0; (p = agent_post_at(ctx->agent, i)) != NULL; i++) {
		buf_printf(b, "understudy_post_epoch{post=\"");
		routes_label(b, p->home->name);
		buf_printf(b, "\"} %" PRId64 "\n", p->epoch);
	}
}

/*
 * Media ports: one series per port and state, never per call; when the
 * call began is a value of its own.
 */
static void
metric_port_lines(struct buf *b, struct api_ctx *ctx)
{
	struct agent_post *p;
	size_t i;

	metric_head(b, "understudy_port_busy", "gauge",
	    "1 when the media port has a call; state idle, busy or returning, "
	    "server the one holding the call");
	for (i = 0; (p = agent_post_at(ctx->agent, i)) != NULL; i++)
		for (long n = 0; n < p->home->media_ports; n++) {
			const struct agent_port *pt = &p->ports[n];
			const char *st = !pt->busy ? "idle"
			    : p->owned && strcmp(pt->server, p->owner) == 0
			    ? "busy"
			    : "returning";

			buf_printf(b, "understudy_port_busy{post=\"");
			routes_label(b, p->home->name);
			buf_printf(b, "\",port=\"%ld\",state=\"%s\",server=\"",
			    p->home->media_port_base + n, st);
			routes_label(b, pt->busy ? pt->server : "");
			buf_printf(b, "\"} %d\n", pt->busy ? 1 : 0);
		}
	metric_head(b, "understudy_port_busy_since_seconds", "gauge",
	    "When the media port's call began (unix time), 0 when idle");
	for (i = 0; (p = agent_post_at(ctx->agent, i)) != NULL; i++)
		for (long n = 0; n < p->home->media_ports; n++) {
			const struct agent_port *pt = &p->ports[n];

			buf_printf(
			    b, "understudy_port_busy_since_seconds{post=\"");
			routes_label(b, p->home->name);
			buf_printf(b, "\",port=\"%ld\"} %.3f\n",
			    p->home->media_port_base + n,
			    pt->busy ? (double)pt->since / 1000 : 0.0);
		}
}

static void
get_metrics(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	uint64_t placed[2], ended[2], lost, active, failovers, dropped;
	uint64_t rlost[2], copied, rwait;
	int64_t last_ok;
	bool synced;
	json_t *regs = ctx->sip ? sip_registrations_json(ctx->sip) : NULL, *r;
	struct buf b;
	size_t i;

	(void)pa;
	buf_init(&b, ROUTES_METRICS_MAX);
	calls_counters(ctx->calls, placed, ended, &lost, &active);
	agent_counters(ctx->agent, &failovers, &dropped);
	metric_head(&b, "understudy_serving", "gauge",
	    "1 when this server serves (valid lease, registered, synced)");
	buf_printf(&b, "understudy_serving %d\n", serving(ctx) ? 1 : 0);
	metric_head(&b, "understudy_lease_remaining_seconds", "gauge",
	    "Time left before this server must fence itself");
	buf_printf(&b, "understudy_lease_remaining_seconds %.3f\n",
	    (double)lease_remaining_ms(ctx->lease) / 1000);
	metric_head(&b, "understudy_calls_total", "counter",
	    "Calls this server took on a media port (rate() gives calls/s)");
	buf_printf(&b,
	    "understudy_calls_total{origin=\"http\"} %" PRIu64
	    "\nunderstudy_calls_total{origin=\"sip\"} %" PRIu64 "\n",
	    placed[0], placed[1]);
	metric_head(&b, "understudy_calls_ended_total", "counter",
	    "Calls of this server that ended, by how");
	buf_printf(&b,
	    "understudy_calls_ended_total{status=\"NORMAL\"} %" PRIu64
	    "\nunderstudy_calls_ended_total{status=\"TRANSFERRED\"} %" PRIu64
	    "\n",
	    ended[0], ended[1]);
	metric_head(&b, "understudy_calls_active", "gauge",
	    "Calls this server holds now");
	buf_printf(&b, "understudy_calls_active %" PRIu64 "\n", active);
	metric_head(&b, "understudy_calls_lost_total", "counter",
	    "Calls this server lost with its own lease");
	buf_printf(&b, "understudy_calls_lost_total %" PRIu64 "\n", lost);
	metric_head(&b, "understudy_failovers_total", "counter",
	    "Posts this server saw move to a cover");
	buf_printf(&b, "understudy_failovers_total %" PRIu64 "\n", failovers);
	metric_head(&b, "understudy_calls_dropped_by_failover_total", "counter",
	    "Busy ports this server saw go with their server's lease");
	buf_printf(&b,
	    "understudy_calls_dropped_by_failover_total %" PRIu64 "\n",
	    dropped);
	records_counters(ctx->records, rlost, &copied, &rwait, &synced);
	metric_head(&b, "understudy_calls_busy_total", "counter",
	    "Calls refused with no media port free (each has a BUSY record)");
	buf_printf(&b, "understudy_calls_busy_total %" PRIu64 "\n",
	    calls_busy(ctx->calls));
	metric_head(&b, "understudy_records_closed_lost_total", "counter",
	    "Records this server closed for calls lost with their server");
	buf_printf(&b,
	    "understudy_records_closed_lost_total{status=\"FAILED_SOFTWARE\"} "
	    "%" PRIu64 "\nunderstudy_records_closed_lost_total{status=\""
	    "FAILED_HARDWARE\"} %" PRIu64 "\n",
	    rlost[0], rlost[1]);
	metric_head(&b, "understudy_records_copied_total", "counter",
	    "Records this server copied into its database since it started");
	buf_printf(&b, "understudy_records_copied_total %" PRIu64 "\n", copied);
	metric_head(&b, "understudy_admin_primary", "gauge",
	    "1 when this server is the admin primary (it executes admin "
	    "actions), else 0");
	buf_printf(&b, "understudy_admin_primary %d\n",
	    agent_is_admin(ctx->agent) ? 1 : 0);
	metric_head(&b, "understudy_records_waiting", "gauge",
	    "Closed records this server sends that the records stream has not "
	    "taken yet (they wait in etcd)");
	buf_printf(&b, "understudy_records_waiting %" PRIu64 "\n", rwait);
	if (ctx->desks) {
		long sessions, licensed, waiting;

		desks_counters(ctx->desks, &sessions, &licensed, &waiting);
		metric_head(&b, "understudy_desk_sessions", "gauge",
		    "Desk sessions live on this server");
		buf_printf(&b, "understudy_desk_sessions %ld\n", sessions);
		metric_head(&b, "understudy_desk_licenses_held", "gauge",
		    "License slots this server's sessions hold now");
		buf_printf(&b, "understudy_desk_licenses_held %ld\n", licensed);
		metric_head(&b, "understudy_desk_license_checks_total",
		    "counter",
		    "Passes of the license reconciler that read every slot");
		buf_printf(&b,
		    "understudy_desk_license_checks_total %" PRIu64 "\n",
		    licenses_checks(ctx->desks));
		metric_head(&b, "understudy_desk_requests_waiting", "gauge",
		    "Desk event requests waiting (long polls)");
		buf_printf(
		    &b, "understudy_desk_requests_waiting %ld\n", waiting);
	}
	metrics_check(&b, ctx);
	links_metrics(ctx->links, &b);
	metric_post_lines(&b, ctx);
	metric_port_lines(&b, ctx);
	metric_head(&b, "understudy_route_point_registered", "gauge",
	    "1 for each route point this server has registered, and where");
	json_array_foreach (regs, i, r) {
		buf_printf(
		    &b, "understudy_route_point_registered{route_point=\"");
		routes_label(
		    &b, json_string_value(json_object_get(r, "route_point")));
		buf_printf(&b, "\",post=\"");
		routes_label(&b, json_string_value(json_object_get(r, "post")));
		buf_printf(&b, "\",registrar=\"");
		routes_label(
		    &b, json_string_value(json_object_get(r, "registrar")));
		buf_printf(&b, "\"} 1\n");
	}
	metric_head(&b, "understudy_route_point_epoch", "gauge",
	    "The epoch (fencing token) each route point this server has "
	    "registered was registered under");
	json_array_foreach (regs, i, r) {
		buf_printf(&b, "understudy_route_point_epoch{route_point=\"");
		routes_label(
		    &b, json_string_value(json_object_get(r, "route_point")));
		buf_printf(&b, "\",post=\"");
		routes_label(&b, json_string_value(json_object_get(r, "post")));
		buf_printf(&b, "\"} %" JSON_INTEGER_FORMAT "\n",
		    json_integer_value(json_object_get(r, "epoch")));
	}
	json_decref(regs);
	if (ctx->backups && backups_last_ok(ctx->backups, &last_ok)) {
		metric_head(&b, "understudy_backup_last_success_age_seconds",
		    "gauge",
		    "Seconds since the last backup of the cluster that was "
		    "written and verified");
		buf_printf(&b,
		    "understudy_backup_last_success_age_seconds %" PRId64 "\n",
		    (time_wall_ms() - last_ok) / 1000);
		metric_head(&b,
		    "understudy_backup_last_success_timestamp_seconds", "gauge",
		    "When the last verified backup of the cluster finished");
		buf_printf(&b,
		    "understudy_backup_last_success_timestamp_seconds %" PRId64
		    "\n",
		    last_ok / 1000);
	}
	routes_services_metrics(ctx, &b);
	reply_page(req, &b, "/metrics", "text/plain; version=0.0.4");
	buf_free(&b);
}

/* ---- records ---- */

#define RECORDS_LIMIT_DEFAULT 1000
#define RECORDS_LIMIT_MAX 100000

bool
routes_time_arg(struct http_req *req, const char *name, int64_t *out)
{
	const char *v = http_req_query(req, name);

	*out = 0;
	if (v == NULL || *v == '\0')
		return true;
	if (time_parse(v, time_wall_ms(), out) == 0)
		return true;
	http_reply_error(req, 400, US_EINVAL,
	    "query parameter %s: '%.60s' is not a time (ISO 8601 such as "
	    "2026-11-22T09:30:00Z, ms since the epoch, or an age such as 2h)",
	    name, v);
	return false;
}

static void
get_records(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	static const char *const statuses[] = {"NORMAL", "BUSY", "TRANSFERRED",
	    "FAILED_SOFTWARE", "FAILED_HARDWARE"};
	struct store_query q = {.limit = RECORDS_LIMIT_DEFAULT};
	const char *lim = http_req_query(req, "limit");
	uint64_t lost[2], copied, waiting;
	char err[256];
	json_t *arr;
	bool synced, ok;

	(void)pa;
	if (!routes_time_arg(req, "since", &q.since_ms) ||
	    !routes_time_arg(req, "until", &q.until_ms))
		return;
	if (lim && str_to_long(lim, 1, RECORDS_LIMIT_MAX, &q.limit) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter limit: '%.30s' is not a number from 1 to "
		    "%d",
		    lim, RECORDS_LIMIT_MAX);
		return;
	}
	q.route_point = http_req_query(req, "route_point");
	q.post = http_req_query(req, "post");
	q.status = http_req_query(req, "status");
	if (q.status) {
		ok = false;
		for (size_t i = 0; i < ARRAY_SIZE(statuses); i++)
			ok = ok || strcmp(q.status, statuses[i]) == 0;
		if (!ok) {
			http_reply_error(req, 400, US_EINVAL,
			    "query parameter status: '%.30s' is not one of "
			    "NORMAL, BUSY, TRANSFERRED, FAILED_SOFTWARE, "
			    "FAILED_HARDWARE",
			    q.status);
			return;
		}
	}
	records_counters(ctx->records, lost, &copied, &waiting, &synced);
	if ((arr = records_query(ctx->records, &q, err, sizeof(err))) == NULL) {
		http_reply_error(req, 500, US_EIO, "%s", err);
		return;
	}
	http_reply_json(req, 200,
	    json_pack("{s:s,s:b,s:I,s:I,s:o}", "server", ctx->self->name,
		"synced", synced, "waiting", (json_int_t)waiting, "count",
		(json_int_t)json_array_size(arr), "records", arr));
}

/* ---- backups ---- */

static void
get_backups(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	if (ctx->backups == NULL) {
		http_reply_error(
		    req, 503, US_EUNAVAIL, "this server is starting");
		return;
	}
	http_reply_json(req, 200, backups_status(ctx->backups));
}

static const struct route routes[] = {
    {"/metrics", "GET", get_metrics, ACCESS_STATUS, false},
    {"/health", "GET", get_health, ACCESS_OPEN, false},
    {"/v1/status", "GET", get_status, ACCESS_STATUS, false},
    {"/v1/services", "GET", get_services, ACCESS_STATUS, false},
    {"/v1/services/*/*", "POST", post_service_action, ACCESS_ADMIN, false},
    {"/v1/calls", "GET", get_calls, ACCESS_READ, false},
    {"/v1/route-points/*/calls", "POST", post_call, ACCESS_ADMIN, false},
    {"/v1/calls/*", "DELETE", delete_call, ACCESS_ADMIN, false},
    {"/v1/calls/*/transfer", "POST", transfer_call, ACCESS_ADMIN, false},
    {"/v1/records", "GET", get_records, ACCESS_READ, false},
    {"/v1/backups", "GET", get_backups, ACCESS_READ, false},
    {"/v1/check", "GET", check_get, ACCESS_READ, false},
    {"/v1/check/last", "GET", check_last, ACCESS_READ, false},
    {"/v1/log", "GET", log_get, ACCESS_READ, false},
    {"/v1/links", "GET", links_get, ACCESS_STATUS, false},
    {"/v1/events", "GET", events_get, ACCESS_STATUS, false},
    {"/", "GET", console_get, ACCESS_OPEN, false},
    {"/console/*", "GET", console_get, ACCESS_OPEN, false},
    {"/v1/desk/versions", "GET", desk_versions, ACCESS_OPEN, false},
    {"/v1/desk/login", "POST", desk_login, ACCESS_OPEN, false},
    {"/v1/desk/resume", "POST", desk_resume, ACCESS_OPEN, false},
    {"/v1/desk/logout", "POST", desk_logout, ACCESS_OPEN, false},
    {"/v1/desk/channels", "GET", desk_channels, ACCESS_OPEN, false},
    {"/v1/desk/channels/*/join", "POST", desk_join, ACCESS_OPEN, false},
    {"/v1/desk/channels/*/leave", "POST", desk_leave, ACCESS_OPEN, false},
    {"/v1/desk/events", "GET", desk_events, ACCESS_OPEN, false},
    {"/v1/servers/*/stop", "POST", post_stop, ACCESS_ADMIN, true},
    {"/v1/servers/*/start", "POST", post_start, ACCESS_ADMIN, true},
    {"/v1/servers/*/failback", "POST", post_failback, ACCESS_ADMIN, true},
    {"/v1/config", "GET", config_get, ACCESS_ADMIN, false},
    {"/v1/config", "POST", config_apply, ACCESS_ADMIN, true},
    {"/v1/config/history", "GET", config_history, ACCESS_READ, false},
    {"/v1/config/diff", "GET", config_diff_versions, ACCESS_ADMIN, false},
    /* each server's own parts: admin reads, not forwarded */
    {"/v1/backup/etcd", "GET", backup_get_etcd, ACCESS_ADMIN, false},
    {"/v1/backup/db", "GET", backup_get_db, ACCESS_ADMIN, false},
};

/* Match path against pattern; '*' takes one non-empty segment. */
static bool
match(const char *pattern, const char *path, struct params *pa)
{
	pa->n = 0;
	while (*pattern && *path) {
		if (*pattern == '*') {
			size_t n = strcspn(path, "/");

			if (n == 0 || n >= ROUTE_PARAM_MAX ||
			    pa->n >= ROUTE_PARAMS)
				return false;
			memcpy(pa->v[pa->n], path, n);
			pa->v[pa->n++][n] = '\0';
			path += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return *pattern == '\0' && *path == '\0';
}

/* The bearer token of the request is token (in constant time). */
static bool
bearer_is(struct http_req *req, const char *token)
{
	const char *h = http_req_header(req, "Authorization");
	size_t n = token ? strlen(token) : 0;

	return token && h && strncmp(h, "Bearer ", 7) == 0 &&
	    strlen(h + 7) == n && sodium_memcmp(h + 7, token, n) == 0;
}

/*
 * May this request go on? If not, it is answered (401, or 403 where the
 * config sets no token that could open it).
 */
static bool
authorized(struct http_req *req, const struct api_ctx *ctx, enum access a)
{
	const char *admin = ctx->cfg->cluster.admin_token;
	const char *read = ctx->cfg->cluster.read_token;

	if (a == ACCESS_OPEN || (a == ACCESS_STATUS && read == NULL))
		return true;
	if (bearer_is(req, admin) ||
	    (a != ACCESS_ADMIN && bearer_is(req, read)))
		return true;
	if (a == ACCESS_ADMIN && admin == NULL) {
		http_reply_error(req, 403, US_EUNAUTHORIZED,
		    "control is disabled: the config has no admin_token");
		return false;
	}
	if (admin == NULL && read == NULL) {
		http_reply_error(req, 403, US_EUNAUTHORIZED,
		    "%s holds caller data: it is closed until the config "
		    "sets read_token or admin_token",
		    http_req_path(req));
		return false;
	}
	log_warn("api: %s %s from %s refused: %s", http_req_method(req),
	    http_req_path(req), http_req_peer(req),
	    http_req_header(req, "Authorization") ? "wrong token" : "no token");
	http_req_add_reply_header(req, "WWW-Authenticate", "Bearer");
	http_reply_error(req, 401, US_EUNAUTHORIZED,
	    a == ACCESS_ADMIN ? "this needs 'Authorization: Bearer "
				"<admin_token>'"
			      : "this needs 'Authorization: Bearer "
				"<read_token or admin_token>'");
	return false;
}

/*
 * Admin actions run on the admin primary: true when it is this server;
 * else the request goes there (forward.c) or, while there is none or
 * it moves, is refused with 503 and Retry-After, never run twice.
 */
static bool
admin_here(struct http_req *req, struct api_ctx *ctx)
{
	const char *primary = agent_admin(ctx->agent),
		   *via = http_req_header(req, "X-Understudy-Forwarded-By");

	if (agent_is_admin(ctx->agent))
		return true;
	http_req_add_reply_header(req, "Retry-After", "1");
	if (primary == NULL)
		http_reply_error(req, 503, US_EUNAVAIL,
		    "there is no admin primary now (one is being elected): "
		    "try again");
	else if (via || strcmp(primary, ctx->self->name) == 0)
		http_reply_error(req, 503, US_EUNAVAIL,
		    "%s is not the admin primary now (%s%s): try again",
		    ctx->self->name, via ? "the request came from " : "",
		    via ? via : "its lease is not valid");
	else
		forward_to_primary(req, ctx, primary);
	return false;
}

void
routes_dispatch(struct http_req *req, void *arg)
{
	const char *path = http_req_path(req), *method = http_req_method(req);
	struct api_ctx *ctx = arg;
	char allow[64] = "";
	struct params pa;
	bool known = false;

	if (console_cors(req, ctx))
		return; /* a preflight, answered */
	for (size_t i = 0; i < ARRAY_SIZE(routes); i++) {
		if (!match(routes[i].pattern, path, &pa))
			continue;
		known = true;
		if (strcmp(routes[i].method, method) == 0 ||
		    (strcmp(method, "HEAD") == 0 &&
			strcmp(routes[i].method, "GET") == 0)) {
			if (!authorized(req, ctx, routes[i].access))
				return;
			if (routes[i].primary && !admin_here(req, ctx))
				return; /* forwarded, or refused */
			if (routes[i].access == ACCESS_ADMIN)
				log_info("audit: %s %s from %s%s%s", method,
				    path, http_req_peer(req),
				    http_req_header(
					req, "X-Understudy-Forwarded-By")
					? " forwarded by "
					: "",
				    http_req_header(
					req, "X-Understudy-Forwarded-By")
					? http_req_header(
					      req, "X-Understudy-Forwarded-By")
					: "");
			routes[i].fn(req, ctx, &pa);
			return;
		}
		if (allow[0])
			strncat(allow, ", ", sizeof(allow) - strlen(allow) - 1);
		strncat(
		    allow, routes[i].method, sizeof(allow) - strlen(allow) - 1);
	}
	if (known) {
		http_req_add_reply_header(req, "Allow", allow);
		http_reply_error(req, 405, US_EMETHOD,
		    "%s is not allowed on %s (allowed: %s)", method, path,
		    allow);
		return;
	}
	http_reply_error(req, 404, US_ENOTFOUND, "no such path: %s", path);
}
