/*
 * The services' routes (docs/api.md): GET /v1/services, every service on
 * every server as their masters published them in etcd, this server's
 * own fresh from its master; POST /v1/services/NAME/ACTION, an
 * operator's restart, stop, start or reset of this server's copy; and
 * what /health and /metrics say of them.
 */
#include <string.h>

#include "agent/agent.h"
#include "api.h"

static const char *const states[] = {"stopped", "starting", "ready",
    "unhealthy", "stopping", "restarting", "failed"};

/* One service's row, with where its post is now. */
static json_t *
row(struct api_ctx *ctx, const char *server, json_t *o)
{
	json_t *r = json_deep_copy(o);
	const char *post = json_string_value(json_object_get(o, "post"));

	json_object_set_new(r, "server", json_string(server));
	if (post) {
		struct agent_post *p = agent_post_find(ctx->agent, post);

		json_object_set_new(r, "post_owner",
		    p && p->owned ? json_string(p->owner) : json_null());
	}
	return r;
}

json_t *
routes_services_json(struct api_ctx *ctx)
{
	json_t *out = json_array(), *all = agent_services(ctx->agent), *o;
	const char *key, *name;

	/* this server's own, fresh from its master */
	json_object_foreach (ctx->services, name, o)
		json_array_append_new(out, row(ctx, ctx->self->name, o));
	json_object_foreach (all, key, o) {
		const char *slash = strchr(key, '/');
		char server[CONFIG_NAME_MAX + 1];

		if (slash == NULL || (size_t)(slash - key) >= sizeof(server))
			continue;
		str_copy(server, key, (size_t)(slash - key) + 1);
		if (strcmp(server, ctx->self->name) == 0)
			continue;
		json_array_append_new(out, row(ctx, server, o));
	}
	return out;
}

void
get_services(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	http_reply_json(req, 200,
	    json_pack("{s:s,s:o}", "server", ctx->self->name, "services",
		routes_services_json(ctx)));
}

void
post_service_action(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	static const char *const actions[] = {
	    "restart", "stop", "start", "reset"};
	const char *name = pa->v[0], *action = pa->v[1];
	bool known = false;
	char line[2 * ROUTE_PARAM_MAX + 16];

	for (size_t i = 0; i < ARRAY_SIZE(actions); i++)
		known |= strcmp(action, actions[i]) == 0;
	if (!known) {
		http_reply_error(req, 404, US_ENOTFOUND,
		    "no action '%s' (restart, stop, start, reset)", action);
		return;
	}
	if (json_object_get(ctx->services, name) == NULL) {
		http_reply_error(req, 404, US_ENOTFOUND,
		    "no service '%s' on %s", name, ctx->self->name);
		return;
	}
	if (ctx->services_say == NULL) {
		http_reply_error(
		    req, 503, US_EUNAVAIL, "this worker runs without a master");
		return;
	}
	snprintf(line, sizeof(line), "service %s %s\n", action, name);
	ctx->services_say(line, ctx->services_arg);
	http_reply_json(req, 202,
	    json_pack("{s:s,s:s,s:s}", "service", name, "action", action,
		"server", ctx->self->name));
}

/* Should the service run here now? */
static bool
due_here(struct api_ctx *ctx, const struct config_service *c)
{
	struct agent_post *p;

	if (c->scope == CONFIG_SCOPE_SERVER)
		return config_service_here(c, ctx->self->name);
	p = agent_post_find(ctx->agent, c->post);
	return p && agent_owns(ctx->agent, p, NULL);
}

const char *
routes_services_unhealthy(struct api_ctx *ctx, char *buf, size_t len)
{
	const struct strlist *req = &ctx->cfg->cluster.health_requires;

	for (size_t i = 0; i < req->n; i++) {
		const struct config_service *c =
		    config_service_find(ctx->cfg, req->v[i]);
		const char *state;

		if (c == NULL || !due_here(ctx, c))
			continue;
		state = json_string_value(json_object_get(
		    json_object_get(ctx->services, c->name), "state"));
		if (state && strcmp(state, "ready") == 0)
			continue;
		snprintf(buf, len, "service %s is %s", c->name,
		    state ? state : "not known yet");
		return buf;
	}
	return NULL;
}

void
routes_services_metrics(struct api_ctx *ctx, struct buf *b)
{
	const char *name;
	json_t *o;

	buf_printf(b,
	    "# HELP understudy_service_up 1 when the service is ready on "
	    "this server\n# TYPE understudy_service_up gauge\n");
	json_object_foreach (ctx->services, name, o)
		buf_printf(b, "understudy_service_up{service=\"%s\"} %d\n",
		    name,
		    strcmp(json_string_value(json_object_get(o, "state")),
			"ready") == 0);
	buf_printf(b,
	    "# HELP understudy_service_state The service's state on this "
	    "server (1 for the state it is in)\n"
	    "# TYPE understudy_service_state gauge\n");
	json_object_foreach (ctx->services, name, o) {
		const char *st = json_string_value(json_object_get(o, "state"));

		for (size_t i = 0; i < ARRAY_SIZE(states); i++)
			buf_printf(b,
			    "understudy_service_state{service=\"%s\",state="
			    "\"%s\"} %d\n",
			    name, states[i], st && strcmp(st, states[i]) == 0);
	}
	buf_printf(b,
	    "# HELP understudy_service_restarts_total Restarts of the "
	    "service on this server since understudyd started\n"
	    "# TYPE understudy_service_restarts_total counter\n");
	json_object_foreach (ctx->services, name, o)
		buf_printf(b,
		    "understudy_service_restarts_total{service=\"%s\"} "
		    "%" JSON_INTEGER_FORMAT "\n",
		    name, json_integer_value(json_object_get(o, "restarts")));
}
