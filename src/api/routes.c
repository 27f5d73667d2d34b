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

/* This server serves: a valid lease, registered, not stopping. */
bool
routes_serving(const struct api_ctx *ctx)
{
	return !ctx->stopping && lease_valid(ctx->lease) &&
	    members_registered(ctx->members);
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
	json_object_set_new(o, "serving", json_boolean(routes_serving(ctx)));
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
    {"/v1/desks", "GET", desk_sessions_get, ACCESS_READ, false},
    {"/v1/backups", "GET", get_backups, ACCESS_READ, false},
    {"/v1/check", "GET", check_get, ACCESS_READ, false},
    {"/v1/check/last", "GET", check_last, ACCESS_READ, false},
    {"/v1/log", "GET", log_get, ACCESS_READ, false},
    {"/v1/links", "GET", links_get, ACCESS_STATUS, false},
    {"/v1/events", "GET", events_get, ACCESS_STATUS, false},
    {"/v1/timeline", "GET", get_timeline, ACCESS_STATUS, false},
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

void
routes_dispatch_desks(struct http_req *req, void *arg)
{
	const char *path = http_req_path(req);
	struct api_ctx *ctx = arg;

	if (strncmp(path, "/v1/desk/", 9) == 0 ||
	    strcmp(path, "/health") == 0) {
		routes_dispatch(req, arg);
		return;
	}
	http_reply_error(req, 404, US_ENOTFOUND,
	    "port %ld serves desks only (/v1/desk/..., /health): %s is on "
	    "the API's port %ld",
	    ctx->self->desk_port, path, ctx->self->api_port);
}
