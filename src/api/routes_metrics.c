/* /metrics: the Prometheus text format 0.0.4 (docs/operations.md). */
#include <inttypes.h>
#include <string.h>

#include "agent/agent.h"
#include "api.h"
#include "backup/backup.h"
#include "calls/calls.h"
#include "check/check.h"
#include "desks/desks.h"

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

void
get_metrics(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	uint64_t placed[2], ended[2], lost, active, failovers, dropped;
	uint64_t rlost[2], copied, rwait;
	uint64_t txns[2], carried[2], hist[2][CALLS_TXN_BUCKETS];
	uint64_t overload[2], lag;
	size_t busy_waiting;
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
	buf_printf(&b, "understudy_serving %d\n", routes_serving(ctx) ? 1 : 0);
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
	{
		int64_t t = history_last_takeover_ms(agent_history(ctx->agent));

		/* absent until this server covered a post: no false zero */
		if (t >= 0) {
			metric_head(&b,
			    "understudy_failover_last_duration_seconds",
			    "gauge",
			    "The last failover this server took as the "
			    "cover: from the failure to its claim");
			buf_printf(&b,
			    "understudy_failover_last_duration_seconds "
			    "%" PRId64 ".%03" PRId64 "\n",
			    t / 1000, t % 1000);
		}
	}
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
	calls_txn_counters(ctx->calls, txns, carried, hist);
	metric_head(&b, "understudy_call_txns_total", "counter",
	    "etcd txns of calls sent (group commit: many calls a txn)");
	buf_printf(&b,
	    "understudy_call_txns_total{kind=\"claim\"} %" PRIu64
	    "\nunderstudy_call_txns_total{kind=\"end\"} %" PRIu64 "\n",
	    txns[0], txns[1]);
	metric_head(&b, "understudy_call_txn_calls", "histogram",
	    "Calls carried by each etcd txn of calls");
	for (int k = 0; k < 2; k++) {
		const char *kind = k ? "end" : "claim";
		uint64_t cum = 0;

		for (int j = 0; j < CALLS_TXN_BUCKETS; j++) {
			cum += hist[k][j];
			buf_printf(&b,
			    "understudy_call_txn_calls_bucket{kind=\"%s\","
			    "le=\"%d\"} %" PRIu64 "\n",
			    kind, 1 << j, cum);
		}
		buf_printf(&b,
		    "understudy_call_txn_calls_bucket{kind=\"%s\",le=\"+Inf\"} "
		    "%" PRIu64 "\nunderstudy_call_txn_calls_sum{kind=\"%s\"} "
		    "%" PRIu64 "\nunderstudy_call_txn_calls_count{kind=\"%s\"} "
		    "%" PRIu64 "\n",
		    kind, cum, kind, carried[k], kind, txns[k]);
	}
	{
		uint64_t reqs, conns;

		etcd_counters(agent_etcd(ctx->agent), &reqs, &conns);
		metric_head(&b, "understudy_etcd_requests_total", "counter",
		    "Requests to etcd finished (each try counted)");
		buf_printf(
		    &b, "understudy_etcd_requests_total %" PRIu64 "\n", reqs);
		metric_head(&b, "understudy_etcd_connections_opened_total",
		    "counter",
		    "Connections to etcd opened for them: kept connections "
		    "serve request after request, so this grows when etcd "
		    "or the network closes one, when one idled for minutes, "
		    "or when more than 32 are busy at once");
		buf_printf(&b,
		    "understudy_etcd_connections_opened_total %" PRIu64 "\n",
		    conns);
	}
	metric_head(&b, "understudy_calls_waiting", "gauge",
	    "Calls whose claim (or end) etcd has not answered yet");
	buf_printf(&b,
	    "understudy_calls_waiting{kind=\"claim\"} %zu\n"
	    "understudy_calls_waiting{kind=\"end\"} %zu\n",
	    calls_waiting(ctx->calls, false), calls_waiting(ctx->calls, true));
	calls_overload_counters(ctx->calls, overload, &lag, &busy_waiting);
	metric_head(&b, "understudy_calls_overload_total", "counter",
	    "Calls refused at once, the server being overloaded (each has a "
	    "BUSY record)");
	buf_printf(&b,
	    "understudy_calls_overload_total{reason=\"backlog\"} %" PRIu64
	    "\nunderstudy_calls_overload_total{reason=\"lag\"} %" PRIu64 "\n",
	    overload[0], overload[1]);
	metric_head(&b, "understudy_loop_lag_seconds", "gauge",
	    "How late the worker's loop runs (a 100 ms timer's lateness)");
	buf_printf(
	    &b, "understudy_loop_lag_seconds %.3f\n", (double)lag / 1000);
	metric_head(&b, "understudy_busy_records_waiting", "gauge",
	    "BUSY records waiting for their etcd txn");
	buf_printf(&b, "understudy_busy_records_waiting %zu\n", busy_waiting);
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
	{
		unsigned conns, limit;

		conns = http_connections(req, &limit);
		metric_head(&b, "understudy_http_connections", "gauge",
		    "Connections to this server's API held now");
		buf_printf(&b, "understudy_http_connections %u\n", conns);
		metric_head(&b, "understudy_http_connection_limit", "gauge",
		    "Connections it holds at most; new ones wait past it");
		buf_printf(&b, "understudy_http_connection_limit %u\n", limit);
		if (ctx->desk_http) {
			conns = http_held(ctx->desk_http, &limit);
			metric_head(&b, "understudy_desk_http_connections",
			    "gauge",
			    "Connections to this server's desk_port held now");
			buf_printf(
			    &b, "understudy_desk_http_connections %u\n", conns);
			metric_head(&b, "understudy_desk_http_connection_limit",
			    "gauge",
			    "Connections desk_port holds at most; new ones "
			    "wait "
			    "past it");
			buf_printf(&b,
			    "understudy_desk_http_connection_limit %u\n",
			    limit);
		}
	}
	if (ctx->desks) {
		long sessions, licensed, waiting;
		struct desks_stats ds;

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
		desks_stats_get(ctx->desks, &ds);
		metric_head(&b, "understudy_desk_event_requests_total",
		    "counter",
		    "Desk event requests taken (GET /v1/desk/events)");
		buf_printf(&b,
		    "understudy_desk_event_requests_total %" PRIu64 "\n",
		    ds.event_requests);
		metric_head(&b, "understudy_desk_resumes_total", "counter",
		    "Desk sessions resumed (answered 200)");
		buf_printf(&b, "understudy_desk_resumes_total %" PRIu64 "\n",
		    ds.resumes);
		metric_head(&b, "understudy_desk_resume_seconds", "histogram",
		    "Desk resumes answered 200, by the time from their "
		    "request read to their answer (waiting their turn, the "
		    "licenses checked, the session's writes committed)");
		{
			uint64_t cum = 0;

			for (int k = 0; k < DESKS_RESUME_BUCKETS; k++) {
				cum += ds.resume_ms[k];
				buf_printf(&b,
				    "understudy_desk_resume_seconds_bucket{le="
				    "\"%g\"} %" PRIu64 "\n",
				    desks_resume_le_ms[k] / 1000.0, cum);
			}
			buf_printf(&b,
			    "understudy_desk_resume_seconds_bucket{le=\"+Inf\"}"
			    " "
			    "%" PRIu64 "\nunderstudy_desk_resume_seconds_sum "
			    "%.3f\nunderstudy_desk_resume_seconds_count "
			    "%" PRIu64 "\n",
			    ds.resume_ms_count, ds.resume_ms_sum / 1000.0,
			    ds.resume_ms_count);
		}
		metric_head(&b, "understudy_desk_commits_total", "counter",
		    "Transactions that wrote desk session activity, each for "
		    "as many requests as came in one loop turn");
		buf_printf(&b, "understudy_desk_commits_total %" PRIu64 "\n",
		    ds.commits);
		metric_head(&b, "understudy_desk_commits_failed_total",
		    "counter",
		    "Of those, transactions that failed (their requests "
		    "answered with an error)");
		buf_printf(&b,
		    "understudy_desk_commits_failed_total %" PRIu64 "\n",
		    ds.commits_failed);
		metric_head(&b, "understudy_desk_statements_prepared_total",
		    "counter",
		    "SQL statements of the desks parsed: each is kept "
		    "prepared after its first use, so this stays flat under "
		    "a storm of desks");
		buf_printf(&b,
		    "understudy_desk_statements_prepared_total %" PRIu64 "\n",
		    ds.statements_prepared);
		metric_head(&b, "understudy_desk_resumes_busy_total", "counter",
		    "Desk resumes refused with 503 EBUSY and Retry-After: "
		    "desk_resumes_waiting were waiting already");
		buf_printf(&b,
		    "understudy_desk_resumes_busy_total %" PRIu64 "\n",
		    ds.resumes_busy);
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
