/*
 * The HTTP API: libmicrohttpd in external-poll mode on the worker's
 * libuv loop (http.c), and the routes (routes.c). Every error body is
 * {"error":"ENAME","message":"..."} with a name from the shared list.
 */
#ifndef US_API_H
#define US_API_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

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

/* One HTTP listener. */
struct http_listen {
	const char *address; /* an IPv4 literal, as the config checker asks */
	unsigned port;
	size_t body_max; /* bodies over it get 413 */
	unsigned files_kept; /* files the rest of the process needs */
	unsigned conns_max; /* 0: as many as the file limit allows */
	size_t conn_memory; /* a connection's memory; 0: libmicrohttpd's */
	const char *tls_cert, *tls_key; /* PEM text, both or neither */
	const char *name; /* its log lines begin with it: "http" */
};

/*
 * Listen on l->address:l->port and serve every request through
 * dispatch. It holds as many connections as the process may open files
 * (its soft limit raised to the hard one) less files_kept, at least
 * 1,000, and at most conns_max if set; reaching that is logged. With
 * tls_cert and tls_key (copied) it serves HTTPS only, still driven from
 * the loop. Returns NULL (logged) when the address cannot be bound or
 * the certificate is refused.
 */
struct http *http_new(uv_loop_t *loop, const struct http_listen *l,
    http_dispatch_fn dispatch, void *arg);

/* The connections held now, and at most (in *limit). */
unsigned http_connections(const struct http_req *req, unsigned *limit);
unsigned http_held(const struct http *h, unsigned *limit);

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

/*
 * Answer with the size bytes of the open file fd (sent from the file,
 * never held in memory); fd is the request's from here on, closed when
 * the answer is gone, also when it could not be sent.
 */
void http_reply_file(struct http_req *req, unsigned status,
    const char *content_type, int fd, uint64_t size);

/*
 * A stream's next bytes into out (at most max): how many; 0 when there
 * is nothing to send now (the connection waits, suspended, until
 * http_stream_wake); -1 to end the stream (its connection is closed).
 */
typedef ssize_t (*http_stream_fn)(void *arg, char *out, size_t max);

/*
 * Answer with a body of unknown length (chunked) read from fn(arg, ...)
 * on the loop as the connection can take it. The stream ends when fn
 * says so, when the connection closes (http_req_on_gone tells) or when
 * the server stops.
 */
void http_reply_stream(struct http_req *req, unsigned status,
    const char *content_type, http_stream_fn fn, void *arg);

/* Call the stream's fn again soon: it has something to send. */
void http_stream_wake(struct http_req *req);

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
struct check_sched;

/* What the routes read; owned by the worker. */
struct api_ctx {
	struct http *desk_http; /* desk_port's listener, or NULL */
	const struct config *cfg;
	const struct config_server *self;
	struct lease *lease;
	struct members *members;
	struct agent *agent;
	struct calls *calls;
	struct records *records;
	struct desks *desks;
	struct sip *sip;
	struct backups *backups; /* scheduled backups */
	struct versions *versions; /* the configuration's, in etcd */
	bool config_differs; /* the local file is not the version run */
	int64_t config_in_effect; /* the cluster's version in effect */
	json_t *config_restart; /* why that one needs a restart, or NULL */
	const char *state_dir; /* where the database is, and backup parts */
	struct check_sched *check; /* the scheduled check's last result */
	struct links *links; /* the state of every link (routes_links.c) */
	struct events *events; /* the streams of GET /v1/events */
	json_t *services; /* this server's, from its master: name -> {} */
	/* ask the master (a line: "service ACTION NAME\n") */
	void (*services_say)(const char *line, void *arg);
	void *services_arg;
	bool stopping;
	const char *db_path; /* this server's database, for its backups */
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

/* routes.c: this server serves (valid lease, registered, not stopping) */
bool routes_serving(const struct api_ctx *ctx);

/* routes_calls.c: calls and control (docs/api.md) */
void post_call(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void delete_call(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void transfer_call(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void get_calls(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void post_stop(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void post_start(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void post_failback(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_metrics.c: GET /metrics */
void get_metrics(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_records.c: GET /v1/records */
void get_records(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_timeline.c: GET /v1/timeline, the cluster's history */
void get_timeline(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_backup.c: GET /v1/backups */
void get_backups(
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
/* GET /v1/desks: this server's desk sessions and the licenses */
void desk_sessions_get(
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

/* routes_check.c: the maintenance check and the log (docs/api.md) */
void check_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void check_last(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void log_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

struct check_probe;

/*
 * Fill p (zeroed) on the loop with what this server's probes need in a
 * thread; errors logged since since count. 0, or -1 on ENOMEM (clear p
 * with check_probe_clear either way).
 */
int routes_check_fill(
    struct check_probe *p, const struct api_ctx *ctx, int64_t since);

/* routes_links.c: the state of every external link of this server */

struct links;

/* Probe the links of ctx's server every few seconds; NULL on ENOMEM. */
struct links *links_new(uv_loop_t *loop, struct api_ctx *ctx);

/* Stop; a round in flight finishes first. NULL is a no-op. */
void links_free(struct links *l);

/* Every link: link, target, state, since, latency_ms, last_error. */
json_t *links_json(const struct links *l);

/* understudy_link_up and understudy_link_latency_seconds into b. */
void links_metrics(const struct links *l, struct buf *b);

void links_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* A Prometheus label value into b: backslash, quote, newline escaped. */
void routes_label(struct buf *b, const char *v);

/*
 * The query parameter name as a time (ISO 8601, ms since the epoch, or
 * an age such as 2h) in *out, 0 when absent: true; false when it is not
 * one, and the request is answered 400.
 */
bool routes_time_arg(struct http_req *req, const char *name, int64_t *out);

/* routes_backup.c: the parts of a backup (docs/api.md) */
void backup_get_etcd(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);
void backup_get_db(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/*
 * forward.c: send an admin request to the admin primary and answer with
 * its answer (503 EUNAVAIL with Retry-After when it does not answer).
 */
void forward_to_primary(
    struct http_req *req, struct api_ctx *ctx, const char *primary);

/*
 * Why the server cannot serve now (the reason /health gives with its
 * 503), or NULL when it serves. With operator_stop false, a server an
 * operator stopped counts as serving: it runs as it should.
 */
const char *routes_unhealthy(const struct api_ctx *ctx, bool operator_stop);

/* The whole of GET /v1/status (new reference), or NULL on ENOMEM. */
json_t *routes_status_json(struct api_ctx *ctx);

/* events.c: GET /v1/events, server-sent events (docs/api.md) */

#define EVENTS_STREAMS_MAX 32 /* per server; past it 503 EBUSY */
#define EVENTS_QUEUE_MAX (256u * 1024) /* bytes waiting for one stream */
#define EVENTS_TICK_MS 200 /* the status is compared this often */
#define EVENTS_PING_MS 15000 /* a comment line this often */

struct events;

/* The event streams of ctx's server, on loop; NULL on ENOMEM. */
struct events *events_new(uv_loop_t *loop, struct api_ctx *ctx);

/*
 * Stop computing; open streams end once what they hold is sent, and
 * forget the events. Before ctx's agent goes. NULL is a no-op.
 */
void events_free(struct events *ev);

void events_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/* routes_console.c: the web console's files, built in (docs/console.md) */
void console_get(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa);

/*
 * Cross-origin requests from the console loaded from another server of
 * the cluster: adds the CORS headers for such an Origin; answers a
 * preflight (OPTIONS) and returns true, then the request is done.
 */
bool console_cors(struct http_req *req, struct api_ctx *ctx);

/* The console's files, generated at build time (scripts/embed-console). */
struct console_asset {
	const char *name;
	const char *type;
	const unsigned char *data;
	size_t len;
};
extern const struct console_asset console_assets[];
extern const size_t console_assets_n;

/* The dispatcher for http_new; arg is a struct api_ctx. */
void routes_dispatch(struct http_req *req, void *arg);
/* desk_port's: the desk API and /health; anything else 404 */
void routes_dispatch_desks(struct http_req *req, void *arg);

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
