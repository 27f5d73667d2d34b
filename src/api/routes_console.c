/*
 * The web console: its files, built into the daemon
 * (scripts/embed-console), served at / and /console/NAME to anyone: the
 * page holds no data; it reads the API with the token its user gives.
 * Every answer carries a strict Content-Security-Policy whose
 * connect-src lists every server's API, so that a page loaded from one
 * server can go on through another when its own dies; those servers
 * answer the page's cross-origin requests (CORS) for the same origins.
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* The page and what it may connect to; NULL on ENOMEM (caller frees). */
static char *
csp(const struct api_ctx *ctx)
{
	struct buf b;
	char url[256];

	buf_init(&b, 64 * 1024);
	buf_printf(&b,
	    "default-src 'none'; script-src 'self'; "
	    "style-src 'self'; connect-src 'self'");
	for (size_t i = 0; i < ctx->cfg->n_servers; i++) {
		const struct config_server *s = &ctx->cfg->servers[i];

		config_api_url(
		    ctx->cfg, s->address, s->api_port, url, sizeof(url));
		buf_printf(&b, " %s", url);
	}
	buf_printf(&b,
	    "; img-src 'self'; base-uri 'none'; "
	    "form-action 'none'; frame-ancestors 'none'");
	if (b.err) {
		buf_free(&b);
		return NULL;
	}
	return b.data;
}

void
console_get(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	const char *name = pa->n > 0 ? pa->v[0] : "index.html";
	const struct console_asset *a = NULL;
	char *policy;

	for (size_t i = 0; i < console_assets_n; i++)
		if (strcmp(console_assets[i].name, name) == 0)
			a = &console_assets[i];
	if (a == NULL) {
		http_reply_error(req, 404, US_ENOTFOUND,
		    "the console has no file %.60s", name);
		return;
	}
	if ((policy = csp(ctx)) == NULL) {
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	http_req_add_reply_header(req, "Content-Security-Policy", policy);
	http_req_add_reply_header(req, "X-Content-Type-Options", "nosniff");
	http_req_add_reply_header(req, "Referrer-Policy", "no-referrer");
	http_req_add_reply_header(req, "X-Frame-Options", "DENY");
	http_reply_text(req, 200, a->type, (const char *)a->data, a->len);
	free(policy);
}

/* Origin is the API of one of the cluster's servers. */
static bool
cluster_origin(const struct api_ctx *ctx, const char *origin)
{
	char url[256];

	for (size_t i = 0; i < ctx->cfg->n_servers; i++) {
		const struct config_server *s = &ctx->cfg->servers[i];

		config_api_url(
		    ctx->cfg, s->address, s->api_port, url, sizeof(url));
		if (strcmp(url, origin) == 0)
			return true;
	}
	return false;
}

bool
console_cors(struct http_req *req, struct api_ctx *ctx)
{
	const char *origin = http_req_header(req, "Origin");
	bool preflight = strcmp(http_req_method(req), "OPTIONS") == 0;

	if (origin == NULL || !cluster_origin(ctx, origin)) {
		if (preflight)
			http_reply_error(req, 403, US_ENOTALLOWED,
			    "cross-origin requests come only from the "
			    "cluster's own servers");
		return preflight;
	}
	http_req_add_reply_header(req, "Access-Control-Allow-Origin", origin);
	http_req_add_reply_header(req, "Vary", "Origin");
	if (!preflight)
		return false;
	http_req_add_reply_header(
	    req, "Access-Control-Allow-Methods", "GET, POST");
	http_req_add_reply_header(req, "Access-Control-Allow-Headers",
	    "Authorization, Content-Type, Last-Event-ID");
	http_req_add_reply_header(req, "Access-Control-Max-Age", "600");
	http_reply_text(req, 204, "text/plain", "", 0);
	return true;
}
