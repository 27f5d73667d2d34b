/*
 * Calls and control: place, end and transfer calls; stop, start and fail
 * back a server's post (the admin primary executes them).
 */
#include <inttypes.h>
#include <string.h>

#include "agent/agent.h"
#include "api.h"
#include "calls/calls.h"

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
		if (r->overload) /* loaded now: the client may try again */
			http_req_add_reply_header(req, "Retry-After", "1");
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

/* ---- calls ---- */

void
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

void
delete_call(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	end_call(req, ctx, pa, false);
}

void
transfer_call(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	end_call(req, ctx, pa, true);
}

void
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

void
post_stop(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	control(req, ctx, pa, "stop");
}

void
post_start(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	control(req, ctx, pa, "start");
}

void
post_failback(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	control(req, ctx, pa, "failback");
}
