/*
 * The request engine of the etcd client: libcurl multi on the libuv loop
 * (one uv_poll per socket curl asks to watch, one uv_timer for curl's
 * timeouts), endpoint rotation and bounded retries.
 *
 * Requests are never handed to curl from the function that creates them:
 * they wait in a queue that a zero timer ("kick") drains. Callers may
 * therefore start requests from any callback, including curl's own,
 * where curl would refuse them (CURLM_RECURSIVE_API_CALL). Cancelled
 * requests and a freed client are torn down from the same kick.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "coord.h"

/* Idle connections to etcd kept for reuse (curl's connection cache). */
#define ETCD_CONNS_KEPT 32

struct etcd_sock {
	uv_poll_t poll;
	struct etcd *e;
	curl_socket_t fd;
	struct etcd_sock *next;
};

struct etcd_req {
	struct etcd *e;
	enum etcd_op op;
	char *path;
	char *body;
	CURL *easy;
	struct curl_slist *headers;
	struct buf resp;
	size_t endpoint; /* index the current attempt went to */
	unsigned attempts;
	bool stream;
	bool canceled;
	bool queued;
	uint64_t not_before; /* monotonic ms: retry backoff */
	etcd_cb cb;
	etcd_line_cb on_line;
	etcd_end_cb on_end;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
	struct etcd_req *next; /* every live request */
	struct etcd_req *qnext; /* the start queue */
};

struct watch_link {
	struct etcd_watch *w;
	struct watch_link *next;
};

struct etcd {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t curl_timer;
	uv_timer_t kick;
	char **endpoints;
	size_t n_endpoints;
	size_t current;
	struct etcd_opts opts; /* its file names point at ours below */
	char *ca_file, *cert_file, *key_file;
	struct etcd_req *reqs;
	struct etcd_req *queue;
	struct etcd_sock *socks;
	struct watch_link *watches;
	unsigned open_handles; /* uv handles not yet closed */
	bool closing;
	bool torn_down;
	uint64_t requests; /* transfers finished */
	uint64_t connections; /* connections opened for them */
};

static void kick_cb(uv_timer_t *t);
static void etcd_drain(struct etcd *e);

static void
kick(struct etcd *e, uint64_t ms)
{
	if (!e->torn_down)
		uv_timer_start(&e->kick, kick_cb, ms, 0);
}

static void
req_free(struct etcd_req *req)
{
	struct etcd_req **pp;

	for (pp = &req->e->reqs; *pp; pp = &(*pp)->next)
		if (*pp == req) {
			*pp = req->next;
			break;
		}
	if (req->easy) {
		curl_multi_remove_handle(req->e->multi, req->easy);
		curl_easy_cleanup(req->easy);
	}
	curl_slist_free_all(req->headers);
	buf_free(&req->resp);
	free(req->path);
	free(req->body);
	free(req);
}

static void
queue_push(struct etcd *e, struct etcd_req *req)
{
	struct etcd_req **pp = &e->queue;

	while (*pp)
		pp = &(*pp)->qnext;
	req->qnext = NULL;
	req->queued = true;
	*pp = req;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct etcd_req *req = userp;
	size_t n = size * nmemb;
	char *line;
	size_t len;
	int rc;

	/*
	 * a canceled stream ends here; a canceled request's answer is read
	 * and dropped, so that its connection is kept for the next ones
	 * (ending the transfer closes it: a server ending each call's
	 * record made a TCP connection to etcd per call that way)
	 */
	if (req->canceled)
		return req->stream ? 0 : n;
	if (buf_append(&req->resp, data, n) != 0)
		return 0; /* over the cap: curl ends the transfer (error 23) */
	if (!req->stream)
		return n;
	while ((rc = buf_take_line(&req->resp, &line, &len)) == 1) {
		if (len > 0 && !req->canceled)
			req->on_line(req, line, len, req->arg);
		free(line);
	}
	return rc < 0 ? 0 : n;
}

static int
req_send(struct etcd_req *req)
{
	struct etcd *e = req->e;
	char url[512];

	req->endpoint = e->current;
	snprintf(
	    url, sizeof(url), "%s%s", e->endpoints[req->endpoint], req->path);
	buf_reset(&req->resp);
	if ((req->easy = curl_easy_init()) == NULL)
		return US_ENOMEM;
	curl_easy_setopt(req->easy, CURLOPT_URL, url);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(req->easy, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(req->easy, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)e->opts.connect_timeout_ms);
	/* curl verifies an https:// peer by default; these only add files */
	if (e->ca_file)
		curl_easy_setopt(req->easy, CURLOPT_CAINFO, e->ca_file);
	if (e->cert_file && e->key_file) {
		curl_easy_setopt(req->easy, CURLOPT_SSLCERT, e->cert_file);
		curl_easy_setopt(req->easy, CURLOPT_SSLKEY, e->key_file);
	}
	if (req->stream) {
		/* never a whole-transfer timeout on a stream */
		curl_easy_setopt(req->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	} else {
		curl_easy_setopt(req->easy, CURLOPT_TIMEOUT_MS,
		    (long)e->opts.request_timeout_ms);
	}
	req->errbuf[0] = '\0';
	if (curl_multi_add_handle(e->multi, req->easy) != CURLM_OK) {
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
		return US_EINTERNAL;
	}
	return 0;
}

static void
endpoint_failed(struct etcd *e, size_t idx, const char *why)
{
	if (e->n_endpoints > 1 && e->current == idx) {
		e->current = (idx + 1) % e->n_endpoints;
		log_warn("etcd %s failed (%s); now using %s", e->endpoints[idx],
		    why, e->endpoints[e->current]);
	}
	for (struct watch_link *l = e->watches; l; l = l->next)
		etcd_watch_endpoint_failed(l->w, e->endpoints[idx]);
}

static void
req_complete(struct etcd_req *req, struct etcd_res *res)
{
	res->endpoint = req->e->endpoints[req->endpoint];
	if (!req->canceled && req->cb)
		req->cb(res, req->arg);
	etcd_parse_res_clear(res);
	req_free(req);
}

static bool
transport_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_SSL_CONNECT_ERROR: /* a member going away mid-handshake */
		return true;
	default:
		return false;
	}
}

/* One attempt is over: answer, retry elsewhere, or give up. */
static void
req_finish(struct etcd_req *req, CURLcode rc)
{
	struct etcd *e = req->e;
	struct etcd_res res;
	bool retry = false;
	long http = 0, conns = 0;
	int err = 0;

	memset(&res, 0, sizeof(res));
	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &http);
	if (curl_easy_getinfo(req->easy, CURLINFO_NUM_CONNECTS, &conns) ==
		CURLE_OK &&
	    conns > 0)
		e->connections += (uint64_t)conns;
	e->requests++;
	curl_multi_remove_handle(e->multi, req->easy);
	curl_easy_cleanup(req->easy);
	req->easy = NULL;
	req->attempts++;
	if (req->canceled) {
		req_free(req);
		return;
	}
	if (rc == CURLE_WRITE_ERROR && req->resp.err == US_ETOOBIG) {
		/* an answer over the cap is that, not an unreachable store */
		err = US_ETOOBIG;
		log_error("etcd: an answer to %s from %s is over %u bytes "
			  "(ETOOBIG)",
		    req->path, e->endpoints[req->endpoint], ETCD_RESPONSE_MAX);
	} else if (rc != CURLE_OK) {
		err =
		    rc == CURLE_OPERATION_TIMEDOUT ? US_ETIMEDOUT : US_EUNAVAIL;
		if (transport_error(rc)) {
			retry = true;
			endpoint_failed(
			    e, req->endpoint, curl_easy_strerror(rc));
		}
	} else if (http != 200) {
		err = etcd_parse_error(
		    http, req->resp.data, req->resp.len, &res, &retry);
		if (retry)
			endpoint_failed(e, req->endpoint, "unavailable");
	}
	if (req->stream) {
		etcd_parse_res_clear(&res);
		if (!req->canceled)
			req->on_end(req, err, req->arg);
		req_free(req);
		return;
	}
	if (err == 0) {
		etcd_parse_response(
		    req->op, req->resp.data, req->resp.len, &res);
		req_complete(req, &res);
		return;
	}
	if (retry && req->attempts < e->opts.max_attempts) {
		/* every endpoint once at once, then back off */
		unsigned extra = req->attempts >= e->n_endpoints
		    ? req->attempts - (unsigned)e->n_endpoints
		    : 0;
		uint64_t delay = req->attempts < e->n_endpoints
		    ? 0
		    : (uint64_t)(50u << (extra < 4 ? extra : 4));

		etcd_parse_res_clear(&res);
		req->not_before = time_mono_ms() + delay;
		queue_push(e, req);
		kick(e, delay);
		return;
	}
	res.err = err;
	if (res.message == NULL && req->errbuf[0])
		res.message = strdup(req->errbuf);
	else if (res.message == NULL && rc != CURLE_OK)
		res.message = strdup(curl_easy_strerror(rc));
	req_complete(req, &res);
}

static void
etcd_drain(struct etcd *e)
{
	CURLMsg *msg;
	int left;

	while (!e->torn_down && (msg = curl_multi_info_read(e->multi, &left))) {
		struct etcd_req *req = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &req);
		req_finish(req, msg->data.result);
	}
}

static void
poll_cb(uv_poll_t *p, int status, int events)
{
	struct etcd_sock *s = p->data;
	struct etcd *e = s->e;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(e->multi, s->fd, flags, &running);
	etcd_drain(e);
}

static void
client_free(struct etcd *e)
{
	for (size_t i = 0; i < e->n_endpoints; i++)
		free(e->endpoints[i]);
	free(e->endpoints);
	free(e->ca_file);
	free(e->cert_file);
	free(e->key_file);
	free(e);
}

static void
client_release(struct etcd *e)
{
	if (--e->open_handles > 0)
		return;
	client_free(e);
}

static void
handle_closed(uv_handle_t *h)
{
	client_release(h->data);
}

static void
sock_closed(uv_handle_t *h)
{
	struct etcd_sock *s = h->data;
	struct etcd *e = s->e;

	free(s);
	client_release(e);
}

static void
sock_close(struct etcd *e, struct etcd_sock *s)
{
	struct etcd_sock **pp;

	for (pp = &e->socks; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
	struct etcd *e = userp;
	struct etcd_sock *s = sockp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			curl_multi_assign(e->multi, fd, NULL);
			sock_close(e, s);
		}
		return 0;
	}
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL)
			return -1;
		if (uv_poll_init_socket(e->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->e = e;
		s->fd = fd;
		s->poll.data = s;
		s->next = e->socks;
		e->socks = s;
		e->open_handles++;
		curl_multi_assign(e->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, poll_cb);
	return 0;
}

static void
curl_timer_cb(uv_timer_t *t)
{
	struct etcd *e = t->data;
	int running;

	curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	etcd_drain(e);
}

static int
timer_cb(CURLM *multi, long ms, void *userp)
{
	struct etcd *e = userp;

	(void)multi;
	if (ms < 0)
		uv_timer_stop(&e->curl_timer);
	else
		uv_timer_start(&e->curl_timer, curl_timer_cb, (uint64_t)ms, 0);
	return 0;
}

static void
teardown(struct etcd *e)
{
	while (e->reqs)
		req_free(e->reqs);
	e->queue = NULL;
	curl_multi_cleanup(e->multi);
	e->multi = NULL;
	while (e->socks)
		sock_close(e, e->socks);
	while (e->watches) {
		struct watch_link *l = e->watches;

		e->watches = l->next;
		free(l);
	}
	e->torn_down = true;
	uv_close((uv_handle_t *)&e->curl_timer, handle_closed);
	uv_close((uv_handle_t *)&e->kick, handle_closed);
}

static void
kick_cb(uv_timer_t *t)
{
	struct etcd *e = t->data;
	struct etcd_req **pp, *req, *next;
	uint64_t now = time_mono_ms(), wait = 0;

	if (e->closing) {
		teardown(e);
		return;
	}
	for (req = e->reqs; req; req = next) {
		next = req->next;
		/* one in flight finishes (req_finish frees it): see write_cb */
		if (req->canceled && !req->queued &&
		    (req->stream || req->easy == NULL))
			req_free(req);
	}
	pp = &e->queue;
	while ((req = *pp) != NULL) {
		if (req->canceled) {
			*pp = req->qnext;
			req_free(req);
			continue;
		}
		if (req->not_before > now) {
			uint64_t w = req->not_before - now;

			if (wait == 0 || w < wait)
				wait = w;
			pp = &req->qnext;
			continue;
		}
		*pp = req->qnext;
		req->queued = false;
		if (req_send(req) != 0) {
			struct etcd_res res;

			memset(&res, 0, sizeof(res));
			res.err = US_ENOMEM;
			req_complete(req, &res);
		}
	}
	if (wait)
		kick(e, wait);
}

struct etcd *
etcd_new(uv_loop_t *loop, const char *const *endpoints, size_t n,
    const struct etcd_opts *opts)
{
	struct etcd *e;

	if (n == 0 || (e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	e->loop = loop;
	if (opts) {
		e->opts = *opts;
		if ((opts->ca_file && !(e->ca_file = strdup(opts->ca_file))) ||
		    (opts->cert_file &&
			!(e->cert_file = strdup(opts->cert_file))) ||
		    (opts->key_file && !(e->key_file = strdup(opts->key_file))))
			goto fail;
	}
	e->opts.ca_file = e->ca_file;
	e->opts.cert_file = e->cert_file;
	e->opts.key_file = e->key_file;
	if (e->opts.request_timeout_ms == 0)
		e->opts.request_timeout_ms = 1000;
	if (e->opts.connect_timeout_ms == 0)
		e->opts.connect_timeout_ms = 300;
	if (e->opts.max_attempts == 0)
		e->opts.max_attempts = (unsigned)(n * 2 < 3 ? 3 : n * 2);
	if ((e->endpoints = calloc(n, sizeof(char *))) == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(endpoints[i]);

		if ((e->endpoints[i] = strdup(endpoints[i])) == NULL)
			goto fail;
		e->n_endpoints++;
		if (len && e->endpoints[i][len - 1] == '/')
			e->endpoints[i][len - 1] = '\0';
	}
	if ((e->multi = curl_multi_init()) == NULL)
		goto fail;
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
	/*
	 * Connections kept for the next requests. By default curl keeps 4
	 * for each transfer in progress, and a transfer's connection goes
	 * back as it ends: with the watches' streams counted, a server
	 * taking 300 calls a second opened and closed about 200 connections
	 * to etcd a second (a TLS handshake each where etcd is on https).
	 */
	curl_multi_setopt(
	    e->multi, CURLMOPT_MAXCONNECTS, (long)ETCD_CONNS_KEPT);
	uv_timer_init(loop, &e->curl_timer);
	uv_timer_init(loop, &e->kick);
	e->curl_timer.data = e;
	e->kick.data = e;
	e->open_handles = 2;
	return e;
fail:
	client_free(e);
	return NULL;
}

void
etcd_free(struct etcd *e)
{
	if (e == NULL || e->closing)
		return;
	e->closing = true;
	kick(e, 0);
}

const char *
etcd_endpoint(const struct etcd *e)
{
	return e->endpoints[e->current];
}

uv_loop_t *
etcd_loop(const struct etcd *e)
{
	return e->loop;
}

void
etcd_req_cancel(struct etcd_req *req)
{
	if (req == NULL || req->canceled)
		return;
	req->canceled = true;
	/* freed from the kick: it may be inside its own curl callback now */
	kick(req->e, 0);
}

void
etcd_counters(const struct etcd *e, uint64_t *requests, uint64_t *connections)
{
	*requests = e->requests;
	*connections = e->connections;
}

const char *
etcd_request_endpoint(const struct etcd_req *req)
{
	return req->e->endpoints[req->endpoint];
}

static struct etcd_req *
req_new(struct etcd *e, enum etcd_op op, const char *path, char *body)
{
	struct curl_slist *h;
	struct etcd_req *req;

	if (body == NULL || e->closing)
		goto fail;
	if ((req = calloc(1, sizeof(*req))) == NULL)
		goto fail;
	req->e = e;
	req->op = op;
	req->body = body;
	buf_init(&req->resp, ETCD_RESPONSE_MAX);
	if ((req->path = strdup(path)) == NULL)
		goto fail_req;
	req->headers =
	    curl_slist_append(NULL, "Content-Type: application/json");
	if (req->headers == NULL)
		goto fail_req;
	/* a txn over 1 KiB would wait for "100 Continue": one RTT more */
	if ((h = curl_slist_append(req->headers, "Expect:")) == NULL)
		goto fail_req;
	req->headers = h;
	req->next = e->reqs;
	e->reqs = req;
	queue_push(e, req);
	kick(e, 0);
	return req;
fail_req:
	curl_slist_free_all(req->headers);
	free(req->path);
	free(req);
fail:
	free(body);
	return NULL;
}

struct etcd_req *
etcd_request(struct etcd *e, enum etcd_op op, const char *path, char *body,
    etcd_cb cb, void *arg)
{
	struct etcd_req *req = req_new(e, op, path, body);

	if (req) {
		req->cb = cb;
		req->arg = arg;
	}
	return req;
}

struct etcd_req *
etcd_request_stream(struct etcd *e, const char *path, char *body,
    etcd_line_cb on_line, etcd_end_cb on_end, void *arg)
{
	struct etcd_req *req = req_new(e, ETCD_OP_WATCH, path, body);
	struct curl_slist *h;

	if (req == NULL)
		return NULL;
	req->stream = true;
	req->on_line = on_line;
	req->on_end = on_end;
	req->arg = arg;
	/* without it a watch stays open, silent, on a member without quorum */
	h = curl_slist_append(req->headers, "Grpc-Metadata-hasleader: true");
	if (h)
		req->headers = h;
	return req;
}

void
etcd_watch_attach(struct etcd *e, struct etcd_watch *w)
{
	struct watch_link *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return;
	l->w = w;
	l->next = e->watches;
	e->watches = l;
}

void
etcd_watch_detach(struct etcd *e, struct etcd_watch *w)
{
	for (struct watch_link **pp = &e->watches; *pp; pp = &(*pp)->next)
		if ((*pp)->w == w) {
			struct watch_link *l = *pp;

			*pp = l->next;
			free(l);
			return;
		}
}
