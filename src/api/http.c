/*
 * libmicrohttpd on the libuv loop, with no thread of its own: a uv_poll
 * on MHD's epoll fd and a uv_timer both run MHD_run, then re-arm the
 * timer from MHD_get_timeout (a 0 timeout matters: MHD keeps connections
 * with unread data on an internal list that only a 0 timeout reveals).
 *
 * A request is dispatched once its body is read. If dispatch does not
 * answer at once the connection is suspended; the answer resumes it and
 * kicks the timer, because resuming does not wake MHD without a thread.
 */
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "api.h"

struct reply_header {
	char *name;
	char *value;
	struct reply_header *next;
};

struct http_req {
	struct http *h;
	struct MHD_Connection *conn;
	char *method;
	char *path;
	struct buf body;
	bool too_big;
	bool dispatched;
	bool suspended;
	bool replied;
	unsigned status;
	char *content_type;
	char *reply;
	size_t reply_len;
	int reply_fd; /* an answer sent from a file, or -1 */
	uint64_t reply_fd_size;
	struct reply_header *headers;
	http_stream_fn stream; /* an answer of unknown length, or NULL */
	void *stream_arg;
	void (*gone)(struct http_req *, void *);
	void *gone_arg;
	char peer[64]; /* "address:port", filled on first use */
	/* both ways: a server holding 10,000 long polls frees in O(1) */
	struct http_req *next, **prevp;
};

struct http {
	uv_loop_t *loop;
	struct MHD_Daemon *d;
	uv_poll_t poll;
	uv_timer_t timer;
	uv_idle_t again; /* MHD has work now: on the next loop turn */
	uv_timer_t drain;
	size_t body_max;
	http_dispatch_fn dispatch;
	void *arg;
	struct http_req *reqs;
	unsigned open_handles;
	unsigned drain_rounds;
	bool closing;
	void (*done)(void *);
	void *done_arg;
	char *tls_cert; /* PEM, for the daemon's life; NULL: plain HTTP */
	char *tls_key;
	int listen_fd; /* to see connections waiting; -1: unknown */
	unsigned limit; /* connections MHD holds at most */
	char name[32]; /* its log lines begin with it */
	bool capped; /* the limit is http_listen's conns_max */
	bool at_limit; /* logged as reached, not yet well below again */
};

/*
 * MHD runs per loop turn while connections wait to be accepted, and
 * for how long at most: one run may take a long while under a storm,
 * and the master kills a worker that does not answer its pings.
 */
#define HTTP_ACCEPT_RUNS 64
#define HTTP_ACCEPT_MS 10
/*
 * A connection's memory unless the listener says otherwise: MHD's own
 * default, which a browser's request with many cookies needs.
 */
#define HTTP_CONN_MEMORY (32 * 1024)
/* The listening socket's backlog (the kernel caps it at somaxconn). */
#define HTTP_BACKLOG 65535
/* Connections held at most, whatever the file limit. */
#define HTTP_CONNECTIONS_MIN 1000
#define HTTP_CONNECTIONS_MAX 200000

static void http_run(struct http *h);

/* The connections MHD holds now. */
static unsigned
held_now(const struct http *h)
{
	const union MHD_DaemonInfo *info;

	if (h->d == NULL)
		return 0;
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return info ? info->num_connections : 0;
}

unsigned
http_held(const struct http *h, unsigned *limit)
{
	*limit = h ? h->limit : 0;
	return h ? held_now(h) : 0;
}

unsigned
http_connections(const struct http_req *req, unsigned *limit)
{
	return http_held(req->h, limit);
}

/*
 * At its connection limit MHD takes the listening socket out of its
 * epoll set without a word: new connections wait in the kernel's queue
 * until one closes. Say so, once, and again when it is over.
 */
static void
limit_watch(struct http *h)
{
	unsigned n = held_now(h);

	if (!h->at_limit && n >= h->limit) {
		h->at_limit = true;
		log_warn("%s: %u connections, the most this listener holds "
			 "(%s): new ones wait until one closes%s",
		    h->name, n,
		    h->capped ? "its cap"
			      : "its file limit less what calls and links need",
		    h->capped ? "" : "; raise the file limit (LimitNOFILE=)");
	} else if (h->at_limit && n < h->limit - h->limit / 10) {
		h->at_limit = false;
		log_info("%s: %u connections, under the limit of %u again",
		    h->name, n, h->limit);
	}
}

static void
timer_cb(uv_timer_t *t)
{
	http_run(t->data);
}

static void
again_cb(uv_idle_t *i)
{
	uv_idle_stop(i);
	http_run(i->data);
}

static void
poll_cb(uv_poll_t *p, int status, int events)
{
	(void)status;
	(void)events;
	http_run(p->data);
}

/* Connections waiting in the listening socket's accept queue? */
static bool
accept_pending(const struct http *h)
{
	struct pollfd p = {.fd = h->listen_fd, .events = POLLIN};

	return h->listen_fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void
http_run(struct http *h)
{
	MHD_UNSIGNED_LONG_LONG ms;
	uint64_t t0 = time_mono_ms();

	if (h->d == NULL)
		return;
	/*
	 * libmicrohttpd accepts a few connections per run. When thousands
	 * of desks come back at once the accept queue fills, the kernel
	 * drops their SYNs and each desk waits out TCP's retransmission (1
	 * s, then 3 s, ...): run again while connections wait and MHD
	 * takes them (not at its limit), starting no run after
	 * HTTP_ACCEPT_MS so that the rest of the loop still turns.
	 */
	for (int i = 0; i < HTTP_ACCEPT_RUNS; i++) {
		MHD_run(h->d);
		if (h->closing || !accept_pending(h) ||
		    held_now(h) >= h->limit ||
		    time_mono_ms() - t0 >= HTTP_ACCEPT_MS)
			break;
	}
	limit_watch(h);
	if (MHD_get_timeout(h->d, &ms) != MHD_YES) {
		uv_timer_stop(&h->timer);
		uv_idle_stop(&h->again);
	} else if (ms == 0) {
		/*
		 * Not a 0 ms timer: libuv 1.44 runs a timer that a timer
		 * callback starts for now in the same turn, so under a storm
		 * of requests MHD would run turn after turn inside the timer
		 * phase, the master's pings unread until it killed the
		 * worker as hung. An idle handle runs it on the next turn.
		 */
		uv_timer_stop(&h->timer);
		uv_idle_start(&h->again, again_cb);
	} else {
		uv_idle_stop(&h->again);
		uv_timer_start(&h->timer, timer_cb, (uint64_t)ms, 0);
	}
}

static void
req_free(struct http_req *req)
{
	struct http_req **pp;

	if (req->gone)
		req->gone(req, req->gone_arg);
	if ((pp = req->prevp) != NULL) {
		*pp = req->next;
		if (req->next)
			req->next->prevp = pp;
	}
	while (req->headers) {
		struct reply_header *rh = req->headers;

		req->headers = rh->next;
		free(rh->name);
		free(rh->value);
		free(rh);
	}
	buf_free(&req->body);
	free(req->method);
	free(req->path);
	free(req->content_type);
	free(req->reply);
	if (req->reply_fd >= 0)
		close(req->reply_fd);
	free(req);
}

/*
 * MHD asks for the next piece of a stream: with nothing to send, the
 * connection is suspended (MHD would call again at once, busy) until
 * http_stream_wake resumes it.
 */
static ssize_t
stream_cb(void *cls, uint64_t pos, char *out, size_t max)
{
	struct http_req *req = cls;
	ssize_t n;

	(void)pos;
	if (req->h->closing || req->stream == NULL)
		return MHD_CONTENT_READER_END_OF_STREAM;
	n = req->stream(req->stream_arg, out, max);
	if (n > 0)
		return n;
	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (!req->suspended) {
		req->suspended = true;
		MHD_suspend_connection(req->conn);
	}
	return 0;
}

static enum MHD_Result
queue_reply(struct http_req *req)
{
	struct MHD_Response *resp;
	enum MHD_Result rc;

	if (req->stream) {
		resp = MHD_create_response_from_callback(
		    MHD_SIZE_UNKNOWN, 16 * 1024, stream_cb, req, NULL);
	} else if (req->reply_fd >= 0) {
		/* the response owns the descriptor from here on */
		resp = MHD_create_response_from_fd64(
		    req->reply_fd_size, req->reply_fd);
		if (resp != NULL)
			req->reply_fd = -1;
	} else {
		resp = MHD_create_response_from_buffer(
		    req->reply_len, req->reply, MHD_RESPMEM_MUST_COPY);
	}
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    req->content_type ? req->content_type : "application/json");
	MHD_add_response_header(
	    resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	for (struct reply_header *rh = req->headers; rh; rh = rh->next)
		MHD_add_response_header(resp, rh->name, rh->value);
	rc = MHD_queue_response(req->conn, req->status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result
access_cb(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct http_req *req = *con_cls;

	(void)version;
	if (req == NULL) {
		const char *cl;
		long n;

		if ((req = calloc(1, sizeof(*req))) == NULL)
			return MHD_NO;
		req->h = h;
		req->conn = conn;
		req->reply_fd = -1;
		req->method = strdup(method);
		req->path = strdup(url);
		buf_init(&req->body, h->body_max);
		req->next = h->reqs;
		if (h->reqs)
			h->reqs->prevp = &req->next;
		req->prevp = &h->reqs;
		h->reqs = req;
		*con_cls = req;
		if (req->method == NULL || req->path == NULL)
			return MHD_NO;
		cl = MHD_lookup_connection_value(
		    conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && str_to_long(cl, 0, 1L << 40, &n) == 0 &&
		    (size_t)n > h->body_max) {
			/* answered before the body is read: MHD closes after */
			http_reply_error(req, 413, US_ETOOBIG,
			    "request body of %ld bytes is over the limit of "
			    "%zu",
			    n, h->body_max);
			return queue_reply(req);
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (!req->too_big &&
		    buf_append(&req->body, upload_data, *upload_data_size) != 0)
			req->too_big = true;
		/* keep reading what is over the cap; answer 413 at the end */
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->replied)
		return queue_reply(req);
	if (req->too_big) {
		http_reply_error(req, 413, US_ETOOBIG,
		    "request body is over the limit of %zu bytes", h->body_max);
		return queue_reply(req);
	}
	if (!req->dispatched) {
		req->dispatched = true;
		if (h->closing)
			http_reply_error(
			    req, 503, US_EUNAVAIL, "the server is stopping");
		else
			h->dispatch(req, h->arg);
		if (req->replied)
			return queue_reply(req);
	}
	if (!req->suspended) {
		req->suspended = true;
		MHD_suspend_connection(conn);
	}
	return MHD_YES;
}

static void
completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct http_req *req = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (req)
		req_free(req);
	*con_cls = NULL;
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	const struct http *h = cls;
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("%s: %s", h->name, msg);
}

static void
http_tls_free(struct http *h)
{
	free(h->tls_cert);
	if (h->tls_key) {
		explicit_bzero(h->tls_key, strlen(h->tls_key));
		free(h->tls_key);
	}
}

static void
handle_closed(uv_handle_t *hd)
{
	struct http *h = hd->data;

	if (--h->open_handles > 0)
		return;
	if (h->done)
		h->done(h->done_arg);
	http_tls_free(h);
	free(h);
}

/*
 * The address as the config checker takes it: an IPv4 literal, the one
 * SIP and RTP bind too. Nothing is resolved (no blocking lookup on the
 * loop, no API on a family the calls cannot use).
 */
static int
resolve(const char *address, unsigned port, struct sockaddr_storage *ss)
{
	struct sockaddr_in a;

	if (uv_ip4_addr(address, (int)port, &a) != 0) {
		log_error("http: %s is not an IPv4 address", address);
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &a, sizeof(a));
	return 0;
}

/*
 * Desks keep a connection each: take what the process may open (the
 * soft file limit raised to the hard one), less files_kept for the rest
 * of the process, and never under HTTP_CONNECTIONS_MIN.
 */
static unsigned
connection_limit(unsigned files_kept, rlim_t *files)
{
	struct rlimit rl;
	rlim_t n = HTTP_CONNECTIONS_MIN;

	*files = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
		*files = rl.rlim_cur;
		if (rl.rlim_cur > (rlim_t)files_kept + HTTP_CONNECTIONS_MIN)
			n = rl.rlim_cur - files_kept;
	}
	return (unsigned)(n > HTTP_CONNECTIONS_MAX ? HTTP_CONNECTIONS_MAX : n);
}

struct http *
http_new(uv_loop_t *loop, const struct http_listen *l,
    http_dispatch_fn dispatch, void *arg)
{
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *info;
	unsigned flags =
	    MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	struct http *h;
	rlim_t files;

	if (resolve(l->address, l->port, &ss) != 0)
		return NULL;
	if ((l->tls_cert == NULL) != (l->tls_key == NULL))
		return NULL;
	if (l->tls_cert &&
	    MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		log_error("%s: this libmicrohttpd has no TLS", l->name);
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return NULL;
	h->loop = loop;
	h->body_max = l->body_max;
	h->dispatch = dispatch;
	h->arg = arg;
	str_copy(h->name, l->name ? l->name : "http", sizeof(h->name));
	h->limit = connection_limit(l->files_kept, &files);
	if (l->conns_max && l->conns_max < h->limit) {
		h->limit = l->conns_max;
		h->capped = true;
	}
	if (l->tls_cert) {
		h->tls_cert = strdup(l->tls_cert);
		h->tls_key = strdup(l->tls_key);
		if (h->tls_cert == NULL || h->tls_key == NULL) {
			http_tls_free(h);
			free(h);
			return NULL;
		}
		/* GnuTLS in MHD's hands, still polled from our loop */
		flags |= MHD_USE_TLS;
	}
	signal(SIGPIPE, SIG_IGN);
	h->d = MHD_start_daemon(flags, (uint16_t)l->port, NULL, NULL, access_cb,
	    h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
	    MHD_OPTION_CONNECTION_LIMIT, h->limit,
	    MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)HTTP_BACKLOG,
	    MHD_OPTION_NOTIFY_COMPLETED, completed_cb, h,
	    MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    l->conn_memory ? l->conn_memory : (size_t)HTTP_CONN_MEMORY,
	    /* without TLS these two end the list */
	    h->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
	    h->tls_cert, MHD_OPTION_HTTPS_MEM_KEY, h->tls_key, MHD_OPTION_END);
	if (h->d == NULL) {
		log_error("%s: cannot listen on %s port %u%s", h->name,
		    l->address, l->port, h->tls_cert ? " with TLS" : "");
		http_tls_free(h);
		free(h);
		return NULL;
	}
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
	h->listen_fd = info ? info->listen_fd : -1;
	if (h->capped)
		log_info("%s: port %u, up to %u connections (its cap)", h->name,
		    l->port, h->limit);
	else
		log_info("%s: up to %u connections (file limit %llu, %u kept "
			 "for calls and links)",
		    h->name, h->limit, (unsigned long long)files,
		    l->files_kept);
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
	uv_poll_init(loop, &h->poll, info->epoll_fd);
	uv_timer_init(loop, &h->timer);
	uv_idle_init(loop, &h->again);
	uv_timer_init(loop, &h->drain);
	h->poll.data = h;
	h->timer.data = h;
	h->again.data = h;
	h->drain.data = h;
	h->open_handles = 4;
	uv_poll_start(&h->poll, UV_READABLE, poll_cb);
	http_run(h);
	return h;
}

static void
drain_cb(uv_timer_t *t)
{
	struct http *h = t->data;
	const union MHD_DaemonInfo *info;

	MHD_run(h->d);
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	/* let answers go out for up to about 200 ms, then close the rest */
	if ((info && info->num_connections > 0) && ++h->drain_rounds < 20)
		return;
	uv_timer_stop(&h->drain);
	uv_poll_stop(&h->poll);
	uv_timer_stop(&h->timer);
	uv_idle_stop(&h->again);
	MHD_stop_daemon(h->d);
	h->d = NULL;
	uv_close((uv_handle_t *)&h->poll, handle_closed);
	uv_close((uv_handle_t *)&h->timer, handle_closed);
	uv_close((uv_handle_t *)&h->again, handle_closed);
	uv_close((uv_handle_t *)&h->drain, handle_closed);
}

void
http_free(struct http *h, void (*done)(void *arg), void *arg)
{
	MHD_socket fd;

	if (h == NULL || h->closing)
		return;
	h->closing = true;
	h->done = done;
	h->done_arg = arg;
	/* quiesced, the listening socket is ours: closed, no one queues */
	if ((fd = MHD_quiesce_daemon(h->d)) != MHD_INVALID_SOCKET)
		close(fd);
	h->listen_fd = -1;
	/* a suspended connection must be resumed before MHD stops */
	for (struct http_req *req = h->reqs; req; req = req->next)
		if (req->dispatched && !req->replied)
			http_reply_error(
			    req, 503, US_EUNAVAIL, "the server is stopping");
		else if (req->stream)
			http_stream_wake(req); /* to end it */
	uv_timer_start(&h->drain, drain_cb, 0, 10);
}

const char *
http_req_method(const struct http_req *req)
{
	return req->method;
}

const char *
http_req_path(const struct http_req *req)
{
	return req->path;
}

const char *
http_req_body(const struct http_req *req, size_t *len)
{
	*len = req->body.len;
	return req->body.data ? req->body.data : "";
}

const char *
http_req_peer(struct http_req *req)
{
	const union MHD_ConnectionInfo *ci;
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (req->peer[0])
		return req->peer;
	ci = MHD_get_connection_info(
	    req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
		const struct sockaddr_in *a =
		    (const struct sockaddr_in *)(const void *)ci->client_addr;

		uv_ip4_name(a, ip, sizeof(ip));
		port = ntohs(a->sin_port);
	} else if (ci && ci->client_addr &&
	    ci->client_addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a =
		    (const struct sockaddr_in6 *)(const void *)ci->client_addr;

		uv_ip6_name(a, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
	}
	snprintf(req->peer, sizeof(req->peer), "%s:%d", ip, port);
	return req->peer;
}

const char *
http_req_header(const struct http_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *
http_req_query(const struct http_req *req, const char *name)
{
	return MHD_lookup_connection_value(
	    req->conn, MHD_GET_ARGUMENT_KIND, name);
}

void
http_req_on_gone(
    struct http_req *req, void (*fn)(struct http_req *, void *), void *arg)
{
	req->gone = fn;
	req->gone_arg = arg;
}

bool
http_req_replied(const struct http_req *req)
{
	return req->replied;
}

void
http_req_add_reply_header(
    struct http_req *req, const char *name, const char *value)
{
	struct reply_header *rh = calloc(1, sizeof(*rh));

	if (rh == NULL)
		return;
	rh->name = strdup(name);
	rh->value = strdup(value);
	rh->next = req->headers;
	req->headers = rh;
}

static void
reply_resume(struct http_req *req)
{
	if (req->suspended) {
		req->suspended = false;
		MHD_resume_connection(req->conn);
		/*
		 * resuming wakes nothing without MHD's own thread: MHD runs
		 * on the next turn (never a 0 ms timer: see http_run)
		 */
		uv_idle_start(&req->h->again, again_cb);
	}
}

void
http_reply_file(struct http_req *req, unsigned status, const char *content_type,
    int fd, uint64_t size)
{
	if (req->replied) {
		close(fd);
		return;
	}
	req->replied = true;
	req->status = status;
	req->content_type = strdup(content_type);
	req->reply_fd = fd;
	req->reply_fd_size = size;
	reply_resume(req);
}

void
http_reply_stream(struct http_req *req, unsigned status,
    const char *content_type, http_stream_fn fn, void *arg)
{
	if (req->replied)
		return;
	req->replied = true;
	req->status = status;
	req->content_type = strdup(content_type);
	req->stream = fn;
	req->stream_arg = arg;
	reply_resume(req);
}

void
http_stream_wake(struct http_req *req)
{
	reply_resume(req);
}

void
http_reply_text(struct http_req *req, unsigned status, const char *content_type,
    const char *text, size_t len)
{
	if (req->replied)
		return;
	req->replied = true;
	req->status = status;
	req->content_type = strdup(content_type);
	req->reply = malloc(len + 1);
	if (req->reply) {
		memcpy(req->reply, text, len);
		req->reply_len = len;
	}
	reply_resume(req);
}

void
http_reply_json(struct http_req *req, unsigned status, json_t *body)
{
	char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;

	json_decref(body);
	if (s == NULL) {
		static const char oom[] =
		    "{\"error\":\"ENOMEM\",\"message\":\"out "
		    "of memory\"}";

		http_reply_text(
		    req, 500, "application/json", oom, sizeof(oom) - 1);
		return;
	}
	http_reply_text(req, status, "application/json", s, strlen(s));
	free(s);
}

void
http_reply_error(
    struct http_req *req, unsigned status, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	http_reply_json(req, status,
	    json_pack("{s:s,s:s}", "error", us_err_name(err), "message", msg));
}
