/*
 * Admin requests at a server that is not the admin primary go to the
 * primary (src/agent/admin.c), and its answer comes back as it is: the
 * operator talks to whichever server answers. The request is sent from
 * the libuv thread pool, since curl's easy interface waits for the
 * answer; the loop only hands it over and replies.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "api.h"

#define FORWARD_TIMEOUT_MS 15000
#define FORWARD_CONNECT_MS 1000
/* forwards at once, at most: they share the thread pool with logins */
#define FORWARD_MAX 2

static unsigned in_flight; /* on the loop only */
#define FORWARD_ANSWER_MAX (4u * 1024 * 1024)

struct forward {
	uv_work_t work;
	struct http_req *req; /* NULL once it went away */
	char *url, *body, *auth, *ca, *self;
	size_t body_len;
	bool post;
	/* the answer */
	long status;
	struct buf answer;
	char error[CURL_ERROR_SIZE];
	char primary[CONFIG_NAME_MAX + 1];
};

static size_t
collect(char *data, size_t size, size_t nmemb, void *userp)
{
	struct buf *b = userp;

	return buf_append(b, data, size * nmemb) == 0 ? size * nmemb : 0;
}

static void
send_it(uv_work_t *w)
{
	struct forward *f = w->data;
	struct curl_slist *h = NULL;
	char hdr[1100];
	CURLcode rc;
	CURL *c = curl_easy_init();

	if (c == NULL) {
		snprintf(f->error, sizeof(f->error), "out of memory");
		return;
	}
	curl_easy_setopt(c, CURLOPT_URL, f->url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)FORWARD_TIMEOUT_MS);
	curl_easy_setopt(
	    c, CURLOPT_CONNECTTIMEOUT_MS, (long)FORWARD_CONNECT_MS);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &f->answer);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, f->error);
	if (f->ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, f->ca);
	if (f->post) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, f->body ? f->body : "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE,
		    (long)(f->body ? f->body_len : 0));
	}
	h = curl_slist_append(h, "Content-Type: application/json");
	if (f->auth) {
		snprintf(hdr, sizeof(hdr), "Authorization: %s", f->auth);
		h = curl_slist_append(h, hdr);
	}
	snprintf(hdr, sizeof(hdr), "X-Understudy-Forwarded-By: %s", f->self);
	h = curl_slist_append(h, hdr);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &f->status);
	else if (f->error[0] == '\0')
		snprintf(
		    f->error, sizeof(f->error), "%s", curl_easy_strerror(rc));
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
}

static void
forward_free(struct forward *f)
{
	free(f->url);
	free(f->body);
	if (f->auth)
		explicit_bzero(f->auth, strlen(f->auth));
	free(f->auth);
	free(f->ca);
	free(f->self);
	buf_free(&f->answer);
	free(f);
}

static void
gone(struct http_req *req, void *arg)
{
	struct forward *f = arg;

	(void)req;
	f->req = NULL; /* the answer, when it comes, goes nowhere */
}

static void
sent(uv_work_t *w, int status)
{
	struct forward *f = w->data;
	struct http_req *req = f->req;

	(void)status;
	in_flight--;
	if (req == NULL) {
		forward_free(f);
		return;
	}
	http_req_on_gone(req, NULL, NULL);
	if (f->status == 0) {
		/* not sent, or no answer: nothing says it was done */
		http_req_add_reply_header(req, "Retry-After", "1");
		http_reply_error(req, 503, US_EUNAVAIL,
		    "the admin primary %s did not answer (%s); if it failed, "
		    "another takes over within the lease TTL: try again",
		    f->primary, f->error);
	} else {
		http_req_add_reply_header(
		    req, "X-Understudy-Executed-By", f->primary);
		http_reply_text(req, (unsigned)f->status, "application/json",
		    f->answer.data ? f->answer.data : "", f->answer.len);
	}
	forward_free(f);
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

void
forward_to_primary(
    struct http_req *req, struct api_ctx *ctx, const char *primary)
{
	const struct config_server *s = config_server_find(ctx->cfg, primary);
	struct forward *f = calloc(1, sizeof(*f));
	const char *body;
	char base[300];
	size_t len = 0;

	if (in_flight >= FORWARD_MAX) {
		free(f);
		http_req_add_reply_header(req, "Retry-After", "1");
		http_reply_error(req, 503, US_EUNAVAIL,
		    "%d admin requests already wait for the admin primary %s: "
		    "try again",
		    FORWARD_MAX, primary);
		return;
	}
	if (f == NULL || s == NULL) {
		free(f);
		http_reply_error(req, 503, US_EUNAVAIL,
		    "the admin primary %s is not in this server's "
		    "configuration",
		    primary);
		return;
	}
	config_api_url(ctx->cfg, s->address, s->api_port, base, sizeof(base));
	body = http_req_body(req, &len);
	buf_init(&f->answer, FORWARD_ANSWER_MAX);
	f->req = req;
	f->work.data = f;
	f->post = strcmp(http_req_method(req), "POST") == 0;
	str_copy(f->primary, primary, sizeof(f->primary));
	f->self = strdup(ctx->self->name);
	f->auth = dup_or_null(http_req_header(req, "Authorization"));
	f->ca = config_file_path(ctx->cfg, ctx->cfg->cluster.tls_ca);
	if (body && len && (f->body = malloc(len + 1)) != NULL) {
		memcpy(f->body, body, len);
		f->body[len] = '\0';
		f->body_len = len;
	}
	if (asprintf(&f->url, "%s%s", base, http_req_path(req)) < 0)
		f->url = NULL;
	if (f->url == NULL || f->self == NULL ||
	    uv_queue_work(uv_default_loop(), &f->work, send_it, sent) != 0) {
		forward_free(f);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	in_flight++;
	http_req_on_gone(req, gone, f);
}
