/*
 * The routes of the HTTP API. One table: path, method, handler. A path
 * that is not in it is 404; a path in it with another method is 405
 * with an Allow header.
 */
#include <string.h>

#include "agent/agent.h"
#include "api.h"

typedef void (*route_fn)(struct http_req *req, struct api_ctx *ctx);

struct route {
	const char *path;
	const char *method;
	route_fn fn;
};

static void
get_health(struct http_req *req, struct api_ctx *ctx)
{
	const char *why = NULL;

	if (ctx->stopping)
		why = "stopping";
	else if (!lease_valid(ctx->lease))
		why = lease_reason(ctx->lease);
	else if (!members_registered(ctx->members))
		why = "registering";
	if (why) {
		http_reply_json(req, 503,
		    json_pack("{s:s,s:s,s:s}", "status", "unavailable",
			"server", ctx->self->name, "reason", why));
		return;
	}
	http_reply_json(req, 200,
	    json_pack("{s:s,s:s}", "status", "ok", "server", ctx->self->name));
}

static void
get_status(struct http_req *req, struct api_ctx *ctx)
{
	char now[32];

	time_iso8601(time_wall_ms(), now, sizeof(now));
	http_reply_json(req, 200,
	    json_pack("{s:s,s:s,s:s,s:b,s:I,s:o}", "cluster",
		ctx->cfg->cluster.name, "server", ctx->self->name, "time", now,
		"serving", lease_valid(ctx->lease) && !ctx->stopping,
		"lease_remaining_ms",
		(json_int_t)lease_remaining_ms(ctx->lease), "members",
		members_json(ctx->members)));
}

static const struct route routes[] = {
    {"/health", "GET", get_health},
    {"/v1/status", "GET", get_status},
};

void
routes_dispatch(struct http_req *req, void *arg)
{
	const char *path = http_req_path(req), *method = http_req_method(req);
	char allow[64] = "";
	bool known = false;

	for (size_t i = 0; i < ARRAY_SIZE(routes); i++) {
		if (strcmp(routes[i].path, path) != 0)
			continue;
		known = true;
		if (strcmp(routes[i].method, method) == 0 ||
		    (strcmp(method, "HEAD") == 0 &&
			strcmp(routes[i].method, "GET") == 0)) {
			routes[i].fn(req, arg);
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
