/*
 * The HTTP API: libmicrohttpd in external-poll mode on the worker's
 * libuv loop (http.c), and the routes (routes.c). Every error body is
 * {"error":"ENAME","message":"..."} with a name from the shared list.
 */
#ifndef US_API_H
#define US_API_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <uv.h>

#include "common/common.h"
#include "config/config.h"

#define HTTP_BODY_MAX (2u * 1024 * 1024) /* a config apply: 1 MiB of text */

struct http;
struct http_req;

/* Called once per request, with the whole body read. */
typedef void (*http_dispatch_fn)(struct http_req *req, void *arg);

/* http.c */

/*
 * Listen on address:port (address: an IPv4 literal, as the config
 * checker requires) and serve every request through dispatch.
 * Bodies over body_max get 413. With tls_cert and tls_key (PEM text,
 * copied; both or neither) it serves HTTPS only, still driven from the
 * loop. Returns NULL (logged) when the address cannot be bound or the
 * certificate is refused.
 */
struct http *http_new(uv_loop_t *loop, const char *address, unsigned port,
    size_t body_max, const char *tls_cert, const char *tls_key,
    http_dispatch_fn dispatch, void *arg);

/*
 * Stop accepting, answer every request still waiting (503), close every
 * connection, then free; done(arg) runs when the last handle is closed.
 * NULL is a no-op.
 */
void http_free(struct http *h, void (*done)(void *arg), void *arg);

const char *http_req_method(const struct http_req *req);
const char *http_req_path(const struct http_req *req);
const char *http_req_body(const struct http_req *req, size_t *len);
/* The client's "address:port" (IPv4 or IPv6), for logs and limits. */
const char *http_req_peer(struct http_req *req);

/* A request header or query argument, or NULL. */
const char *http_req_header(const struct http_req *req, const char *name);
const char *http_req_query(const struct http_req *req, const char *name);

/*
 * Answer with a JSON body (the reference is taken). May be called inside
 * dispatch or later, from any loop callback: a request not answered when
 * dispatch returns waits (suspended) until it is. Exactly once.
 */
void http_reply_json(struct http_req *req, unsigned status, json_t *body);

/* Answer {"error": us_err_name(err), "message": ...}. */
void http_reply_error(struct http_req *req, unsigned status, int err,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Answer with a text body of the given content type. */
void http_reply_text(struct http_req *req, unsigned status,
    const char *content_type, const char *text, size_t len);

/*
 * Call fn(req, arg) when the request is freed (answered and sent, or its
 * connection closed), so that whoever answers it later lets go of it.
 */
void http_req_on_gone(
    struct http_req *req, void (*fn)(struct http_req *, void *), void *arg);

/* True once the request has its answer. */
bool http_req_replied(const struct http_req *req);

/* Add a header to the answer to come (Allow, Location, ...). */
void http_req_add_reply_header(
    struct http_req *req, const char *name, const char *value);

/* routes.c */

struct lease;
struct members;
struct agent;
struct calls;
struct sip;
struct versions;

/* What the routes read; owned by the worker. */
struct api_ctx {
	const struct config *cfg;
	const struct config_server *self;
	struct lease *lease;
	struct members *members;
	struct agent *agent;
	struct calls *calls;
	struct records *records;
	struct desks *desks;
	struct sip *sip;
	struct versions *versions; /* the configuration's, in etcd */
	bool config_differs; /* the local file is not the version run */
	int64_t config_in_effect; /* the cluster's version in effect */
	json_t *config_restart; /* why that one needs a restart, or NULL */
	json_t *services; /* this server's, from its master: name -> {} */
	/* ask the master (a line: "service ACTION NAME\n") */
	void (*services_say)(const char *line, void *arg);
	void *services_arg;
	bool stopping;
};

#define ROUTE_PARAMS 3
#define ROUTE_PARAM_MAX 128

/* The '*' segments of a route's pattern, as the path had them. */
struct params {
	char v[ROUTE_PARAMS][ROUTE_PARAM_MAX];
	int n;
};

typedef void (*route_fn)(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_services.c: the services (docs/api.md) */
void get_services(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void post_service_action(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
/* Every service on every server, for /v1/services and /v1/status. */
json_t *routes_services_json(struct api_ctx *ctx);
/* Why /health must say 503 for health_requires (into buf), or NULL. */
const char *routes_services_unhealthy(
    struct api_ctx *ctx, char *buf, size_t len);
/* The services' lines of /metrics. */
void routes_services_metrics(struct api_ctx *ctx, struct buf *b);

/* routes_desk.c: the desk API under /v1/desk/ (docs/api.md) */
void desk_versions(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_login(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_resume(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_logout(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_channels(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_join(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_leave(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void desk_events(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_config.c: the configuration's versions (docs/api.md) */
void config_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void config_history(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void config_diff_versions(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void config_apply(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/*
 * forward.c: send an admin request to the admin primary and answer with
 * its answer (503 EUNAVAIL with Retry-After when it does not answer).
 */
void forward_to_primary(
    struct http_req *req, struct api_ctx *ctx, const char *primary);

/* The dispatcher for http_new; arg is a struct api_ctx. */
void routes_dispatch(struct http_req *req, void *arg);

/* The most bytes of one /metrics page. */
#define ROUTES_METRICS_MAX (4u * 1024 * 1024)

/*
 * Whether a page built in b with unchecked appends (named what, such as
 * "/metrics") may be sent: 0 when b holds all of it. When an append was
 * refused (b->err: the cap reached, or memory) nothing of it may go out,
 * never a cut page: the refusal is logged once, naming what and b's cap,
 * and returned (US_ETOOBIG at the cap) with the message for the error
 * answer written into msg. The caller answers 500 with that name.
 */
int routes_page_check(
    const struct buf *b, const char *what, char *msg, size_t msglen);

#endif
