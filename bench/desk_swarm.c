/*
 * desk-swarm: many offline desks in one process, for bench/desks, each a
 * client of the desk API as libunderstudy is: it resumes its session
 * (POST /v1/desk/resume with its token), retrying with the library's
 * capped exponential backoff and full jitter while the server does not
 * answer, then holds the events long poll (GET /v1/desk/events?wait=)
 * as the library does. Event-driven: every desk's request is out at
 * once in one libcurl multi handle driven by socket events (epoll), so
 * the figures are the server's, not the swarm's.
 *
 * usage: desk-swarm SERVER_URL TOKENS_FILE FIRST COUNT TIMEOUT_S
 *                   [BACKOFF_MAX_MS [HOLD_S]]
 * TOKENS_FILE: one session token per line; desk i uses line i. Every desk
 * tries once, then "ready" is printed; per desk then "online I WALL_MS
 * REQ_MS" when its resume is answered 200 (the wall clock time, and how
 * long that request took), "out I STATUS ERROR" when the server says its
 * session is gone (logged out); once all are online, the long polls are
 * held HOLD_S more seconds (default 2), then "requests N refused N
 * failed N polls N out N" (resumes sent, refused connections, other
 * failures: an answer not 200 or a timeout; events requests; desks
 * logged out; resumes of desks that were online and lost their server),
 * per failed request "fail resume|poll WALL_MS CURLCODE STATUS";
 * "kinds resume-curl28 N poll-http503 N ..." (the failed requests by
 * kind: libcurl's error code, or the HTTP status of the answer) and
 * "done N".
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define TOKEN_MAX 80
#define BODY_CAP 65536
#define EVENTS_WAIT_S 15
#define BACKOFF_BASE_MS 250

enum desk_state { DESK_WAIT, DESK_RESUMING, DESK_POLLING, DESK_OUT };

struct desk {
	long id;
	char token[TOKEN_MAX];
	enum desk_state state;
	CURL *h;
	struct curl_slist *hdrs;
	char body[BODY_CAP];
	size_t len;
	unsigned fails;
	double next_at, sent_at;
	long long last_event;
	bool online, tried;
};

static long backoff_max = 10000;
static int epfd = -1;
static double curl_due = -1; /* when curl wants its timeout; -1: never */
static const char *server;
static CURLM *multi;
static long n_requests, n_failed, n_refused, n_polls, n_out, n_again, n_busy;
/* the failed requests by kind: curl's error (a timeout is 28, a reset
 * 56), or the HTTP status of an answer; [0] of each: resumes, [1]: polls */
#define CURL_CODES 100
#define HTTP_CODES 600
static long n_curl[2][CURL_CODES], n_http[2][HTTP_CODES];

static long long wall_ms(void);

static void
failed_kind(int poll, CURLcode cc, long status)
{
	printf("fail %s %lld %d %ld\n", poll ? "poll" : "resume", wall_ms(),
	    (int)cc, status);
	if (cc != CURLE_OK)
		n_curl[poll][cc < CURL_CODES ? cc : CURL_CODES - 1]++;
	else
		n_http[poll][status > 0 && status < HTTP_CODES ? status : 0]++;
}

static double
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

static long long
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The library's backoff: capped exponential, full jitter. */
static double
backoff_ms(unsigned fails)
{
	long b = BACKOFF_BASE_MS;

	for (unsigned i = 1; i < fails && b < backoff_max; i++)
		b *= 2;
	if (b > backoff_max)
		b = backoff_max;
	return (double)(random() % (b + 1));
}

static size_t
collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct desk *k = arg;
	size_t n = size * nmemb;

	if (k->len + n >= BODY_CAP)
		return 0; /* over the cap: the request fails */
	memcpy(k->body + k->len, ptr, n);
	k->len += n;
	k->body[k->len] = '\0';
	return n;
}

static void
send_request(struct desk *k, bool resume)
{
	char url[512], hdr[128];

	if (resume)
		snprintf(url, sizeof(url), "%s/v1/desk/resume", server);
	else
		snprintf(url, sizeof(url),
		    "%s/v1/desk/events?after=%lld&wait=%d", server,
		    k->last_event, EVENTS_WAIT_S);
	curl_easy_reset(k->h);
	curl_easy_setopt(k->h, CURLOPT_URL, url);
	curl_easy_setopt(k->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(k->h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(k->h, CURLOPT_TIMEOUT_MS,
	    resume ? 5000L : (EVENTS_WAIT_S + 5) * 1000L);
	if (resume)
		curl_easy_setopt(k->h, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(k->h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(k->h, CURLOPT_WRITEDATA, k);
	curl_easy_setopt(k->h, CURLOPT_PRIVATE, k);
	curl_slist_free_all(k->hdrs);
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", k->token);
	k->hdrs = curl_slist_append(NULL, hdr);
	curl_easy_setopt(k->h, CURLOPT_HTTPHEADER, k->hdrs);
	k->len = 0;
	k->body[0] = '\0';
	k->sent_at = mono_ms();
	k->state = resume ? DESK_RESUMING : DESK_POLLING;
	if (resume)
		n_requests++;
	else
		n_polls++;
	curl_multi_add_handle(multi, k->h);
}

/* The number after "key": in a JSON answer, or -1. */
static long long
json_number(const char *body, const char *key)
{
	const char *p = strstr(body, key);

	return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

static void
finished(struct desk *k, CURLcode cc, long *done)
{
	long status = 0;
	double now = mono_ms();

	curl_multi_remove_handle(multi, k->h);
	curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &status);
	k->tried = true;
	if (k->state == DESK_RESUMING) {
		if (cc == CURLE_OK && status == 200) {
			/* the first time counts; again after a loss, counted */
			if (!k->online) {
				k->online = true;
				(*done)++;
				printf("online %ld %lld %.3f\n", k->id,
				    wall_ms(), now - k->sent_at);
			} else {
				n_again++;
			}
			k->last_event = 0;
			send_request(k, false);
			return;
		}
		if (cc == CURLE_OK && status == 401) {
			printf("out %ld %ld %.200s\n", k->id, status, k->body);
			k->state = DESK_OUT;
			n_out++;
			return;
		}
		if (cc == CURLE_OK && status == 503 &&
		    strstr(k->body, "\"EBUSY\"")) {
			/* busy: back when the server says, as the library */
			curl_off_t ra = 0;

			if (curl_easy_getinfo(
				k->h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK &&
			    ra > 0) {
				n_busy++;
				k->state = DESK_WAIT;
				k->next_at = now + (double)ra * 1000 +
				    (double)(random() % (ra * 250 + 1));
				return;
			}
		}
		if (cc == CURLE_COULDNT_CONNECT) {
			n_refused++; /* no server there (yet) */
		} else {
			n_failed++; /* an answer other than 200, or a timeout */
			failed_kind(0, cc, status);
		}
		k->fails++;
		k->state = DESK_WAIT;
		k->next_at = now + backoff_ms(k->fails);
		return;
	}
	/* the long poll: again at once after an answer */
	if (cc == CURLE_OK && status == 200) {
		long long last = json_number(k->body, "\"last\":");

		if (last >= 0)
			k->last_event = last;
		send_request(k, false);
		return;
	}
	if (cc == CURLE_OK && status == 401) {
		printf("out %ld %ld %.200s\n", k->id, status, k->body);
		k->state = DESK_OUT;
		n_out++;
		return;
	}
	/* the server went away: resume again, as the library does */
	failed_kind(1, cc, status);
	k->fails = 1;
	k->state = DESK_WAIT;
	k->next_at = now + backoff_ms(k->fails);
}

/* curl's sockets into the epoll set, with the events it asks for. */
static int
sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev = {0};

	(void)e;
	(void)userp;
	if (what == CURL_POLL_REMOVE) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
		curl_multi_assign(multi, fd, NULL);
		return 0;
	}
	ev.data.fd = fd;
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
	    ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
	if (socketp == NULL) {
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
		curl_multi_assign(multi, fd, &epfd);
	} else {
		epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
	}
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	(void)userp;
	curl_due = timeout_ms < 0 ? -1 : mono_ms() + (double)timeout_ms;
	return 0;
}

/* A whole non-negative decimal number, or -1. */
static long
number(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	return *s && *end == '\0' && v >= 0 ? v : -1;
}

int
main(int argc, char **argv)
{
	struct rlimit rl;
	struct desk *desks;
	char line[256];
	long first, count, timeout, hold = 2, done = 0;
	double t_end, hold_end = 0;
	bool ready = false;
	FILE *f;

	if (argc < 6 || argc > 8) {
		fprintf(stderr,
		    "usage: desk-swarm SERVER_URL TOKENS_FILE "
		    "FIRST COUNT TIMEOUT_S [BACKOFF_MAX_MS "
		    "[HOLD_S]]\n");
		return 2;
	}
	server = argv[1];
	first = number(argv[3]);
	count = number(argv[4]);
	timeout = number(argv[5]);
	if (argc > 6)
		backoff_max = number(argv[6]);
	if (argc > 7)
		hold = number(argv[7]);
	if (first < 0 || count <= 0 || timeout <= 0 || backoff_max <= 0 ||
	    hold < 0) {
		fprintf(stderr,
		    "desk-swarm: FIRST, COUNT, TIMEOUT_S, "
		    "BACKOFF_MAX_MS and HOLD_S are numbers\n");
		return 2;
	}
	/* a socket per desk */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	srandom((unsigned)getpid() ^ (unsigned)wall_ms());
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 ||
	    (multi = curl_multi_init()) == NULL ||
	    (desks = calloc((size_t)count, sizeof(*desks))) == NULL) {
		fprintf(stderr, "desk-swarm: out of memory\n");
		return 1;
	}
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, count + 16);
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		perror("epoll_create1");
		return 1;
	}
	if ((f = fopen(argv[2], "r")) == NULL) {
		perror(argv[2]);
		return 1;
	}
	for (long i = 0, k = 0; k < count && fgets(line, sizeof(line), f);
	     i++) {
		if (i < first)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (strlen(line) >= TOKEN_MAX ||
		    (desks[k].h = curl_easy_init()) == NULL) {
			fprintf(stderr,
			    "desk-swarm: line %ld of %s: a token "
			    "of at most 79 characters\n",
			    i + 1, argv[2]);
			return 1;
		}
		desks[k].id = i;
		snprintf(desks[k].token, TOKEN_MAX, "%s", line);
		k++;
	}
	fclose(f);
	for (long k = 0; k < count; k++)
		if (desks[k].h == NULL) {
			fprintf(stderr,
			    "desk-swarm: %s has fewer than %ld lines\n",
			    argv[2], first + count);
			return 1;
		}
	for (long k = 0; k < count; k++)
		send_request(&desks[k], true);
	t_end = mono_ms() + (double)timeout * 1000;
	while (mono_ms() < t_end) {
		struct epoll_event evs[256];
		double now = mono_ms();
		int running, left, wait_ms = 10, n;
		CURLMsg *m;
		long tried = 0;

		if (curl_due >= 0 && curl_due - now < wait_ms)
			wait_ms =
			    curl_due <= now ? 0 : (int)(curl_due - now) + 1;
		n = epoll_wait(epfd, evs, 256, wait_ms);
		for (int i = 0; i < n; i++) {
			int flags = 0;

			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				flags |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (evs[i].events & EPOLLERR)
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(
			    multi, evs[i].data.fd, flags, &running);
		}
		if (curl_due >= 0 && mono_ms() >= curl_due) {
			curl_due = -1;
			curl_multi_socket_action(
			    multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		while ((m = curl_multi_info_read(multi, &left)))
			if (m->msg == CURLMSG_DONE) {
				struct desk *k = NULL;

				curl_easy_getinfo(
				    m->easy_handle, CURLINFO_PRIVATE, &k);
				finished(k, m->data.result, &done);
			}
		now = mono_ms();
		for (long k = 0; k < count; k++) {
			struct desk *d = &desks[k];

			tried += d->tried;
			if (d->state != DESK_WAIT)
				continue;
			if (now >= d->next_at)
				send_request(d, true);
		}
		if (!ready && tried == count) {
			ready = true;
			printf("ready\n");
		}
		fflush(stdout);
		if (done + n_out >= count && hold_end == 0)
			hold_end = now + (double)hold * 1000;
		if (hold_end > 0 && now >= hold_end)
			break;
	}
	printf("requests %ld refused %ld failed %ld polls %ld out %ld again "
	       "%ld busy %ld\n",
	    n_requests, n_refused, n_failed, n_polls, n_out, n_again, n_busy);
	printf("kinds");
	for (int p = 0; p < 2; p++) {
		for (int c = 0; c < CURL_CODES; c++)
			if (n_curl[p][c])
				printf(" %s-curl%d %ld", p ? "poll" : "resume",
				    c, n_curl[p][c]);
		for (int c = 0; c < HTTP_CODES; c++)
			if (n_http[p][c])
				printf(" %s-http%d %ld", p ? "poll" : "resume",
				    c, n_http[p][c]);
	}
	printf("\n");
	printf("done %ld\n", done);
	for (long k = 0; k < count; k++) {
		curl_multi_remove_handle(multi, desks[k].h);
		curl_easy_cleanup(desks[k].h);
		curl_slist_free_all(desks[k].hdrs);
	}
	curl_multi_cleanup(multi);
	free(desks);
	curl_global_cleanup();
	return done == count ? 0 : 1;
}
