/* The desk API: /v1/desk/... (docs/api.md), on the desks module. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "desks/desks.h"

/* A request waiting for the desks module's answer. */
struct wait {
	struct http_req *req;
	struct api_ctx *ctx;
	bool answered; /* the desks module holds nothing of it any more */
	uint64_t resume_t0; /* a resume: when it was read (ms); else 0 */
};

static void
reply(struct http_req *req, struct desks_res *r)
{
	if (r->retry_after > 0) {
		char v[24];

		snprintf(v, sizeof(v), "%ld", r->retry_after);
		http_req_add_reply_header(req, "Retry-After", v);
	}
	if (r->err == 0) {
		http_reply_json(req, r->status, r->body);
		return;
	}
	if (r->body) {
		json_object_set_new(
		    r->body, "error", json_string(us_err_name(r->err)));
		json_object_set_new(
		    r->body, "message", json_string(r->message));
		http_reply_json(req, r->status, r->body);
		return;
	}
	http_reply_error(req, r->status, r->err, "%s", r->message);
}

static void
wait_gone(struct http_req *req, void *arg)
{
	struct wait *w = arg;

	(void)req;
	/* a search of every waiting request, only where one may hold it */
	if (!w->answered)
		desks_forget(w->ctx->desks, w);
	free(w);
}

static void
wait_answer(struct desks_res *r, void *arg)
{
	struct wait *w = arg;

	w->answered = true;
	if (w->resume_t0 && r->err == 0 && r->status == 200)
		desks_resume_timed(
		    w->ctx->desks, time_mono_ms() - w->resume_t0);
	reply(w->req, r);
}

static struct wait *
wait_new(struct http_req *req, struct api_ctx *ctx)
{
	struct wait *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return NULL;
	}
	w->req = req;
	w->ctx = ctx;
	http_req_on_gone(req, wait_gone, w);
	return w;
}

/* The session token of "Authorization: Bearer TOKEN", or NULL. */
static const char *
token_of(struct http_req *req)
{
	const char *h = http_req_header(req, "Authorization");

	return h && strncmp(h, "Bearer ", 7) == 0 ? h + 7 : NULL;
}

static bool
serving(struct http_req *req, struct api_ctx *ctx)
{
	if (ctx->desks && !ctx->stopping && lease_valid(ctx->lease))
		return true;
	http_reply_error(req, 503, US_EFENCED,
	    "%s cannot serve desks now (%s); try another server",
	    ctx->self->name, ctx->stopping ? "stopping" : "no valid lease");
	return false;
}

void
desk_versions(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	if (serving(req, ctx))
		http_reply_json(req, 200, desks_versions(ctx->desks));
}

void
desk_login(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	size_t len;
	const char *body = http_req_body(req, &len);
	struct wait *w;

	(void)pa;
	if (serving(req, ctx) && (w = wait_new(req, ctx)) != NULL)
		desks_login(
		    ctx->desks, body, len, http_req_peer(req), wait_answer, w);
}

void
desk_resume(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct wait *w;

	(void)pa;
	if (serving(req, ctx) && (w = wait_new(req, ctx)) != NULL) {
		w->resume_t0 = time_mono_ms();
		desks_resume(ctx->desks, token_of(req), wait_answer, w);
	}
}

void
desk_logout(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct wait *w;

	(void)pa;
	if (serving(req, ctx) && (w = wait_new(req, ctx)) != NULL)
		desks_logout(ctx->desks, token_of(req), wait_answer, w);
}

void
desk_channels(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	struct desks_res r;

	(void)pa;
	if (!serving(req, ctx))
		return;
	desks_channels(ctx->desks, token_of(req), &r);
	reply(req, &r);
}

static void
join_or_leave(struct http_req *req, struct api_ctx *ctx,
    const struct params *pa, bool join)
{
	struct wait *w;

	if (serving(req, ctx) && (w = wait_new(req, ctx)) != NULL)
		desks_join(
		    ctx->desks, token_of(req), pa->v[0], join, wait_answer, w);
}

void
desk_join(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	join_or_leave(req, ctx, pa, true);
}

void
desk_leave(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	join_or_leave(req, ctx, pa, false);
}

void
desk_events(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *after = http_req_query(req, "after"),
		   *wait = http_req_query(req, "wait");
	long a = 0, s = 0;
	struct wait *w;

	(void)pa;
	if (!serving(req, ctx))
		return;
	if ((after && str_to_long(after, 0, 2000000000L, &a) != 0) ||
	    (wait && str_to_long(wait, 0, 3600, &s) != 0)) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameters: after is a sequence number (0 or "
		    "more), wait a number of seconds (0 to %d)",
		    DESKS_WAIT_MAX);
		return;
	}
	if ((w = wait_new(req, ctx)) != NULL)
		desks_events(ctx->desks, token_of(req), a, s, wait_answer, w);
}

/* ---- GET /v1/desks: the sessions for operators (read token) ---- */

void
desk_sessions_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	bool toobig;
	json_t *o;

	(void)pa;
	if ((o = desks_sessions_json(ctx->desks, &toobig)) != NULL) {
		http_reply_json(req, 200, o);
		return;
	}
	if (toobig)
		http_reply_error(req, 500, US_ETOOBIG,
		    "%s has more than %d live desk sessions: too many to list",
		    ctx->self->name, DESKS_LIST_MAX);
	else
		http_reply_error(req, 500, US_EIO,
		    "%s could not read its desk sessions (see its log)",
		    ctx->self->name);
}
