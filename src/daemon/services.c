/*
 * The supervisor of [service NAME] sections. It lives in the master,
 * which outlives the worker: a crash of the worker leaves server-scope
 * services running (docs/protocol.md, Services).
 *
 * Each service runs under a fence (fence.c), a process of ours between
 * the master and the service, which kills the service's process group
 * at the deadline the master last gave it, even when the master cannot
 * run. A post service runs only while the worker grants its post
 * ("grant POST EPOCH UNTIL", renewed with the lease) and is stopped
 * before the post is handed over ("release POST", answered "stopped
 * POST"), before the fencing deadline, and when the worker dies, before
 * its lease is revoked.
 *
 * Readiness and health probes run on the master's loop: a TCP connect,
 * an HTTP/1.0 GET, a command (/bin/sh -c) or READY=1 on a datagram
 * socket passed in NOTIFY_SOCKET.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "daemon.h"

extern char **environ;

#define PROBE_RETRY_MS 200
#define PROBE_TIMEOUT_MS 1000
#define MAX_CRASHES 1000

enum svc_state {
	SVC_STOPPED,
	SVC_STARTING,
	SVC_READY,
	SVC_UNHEALTHY,
	SVC_STOPPING,
	SVC_RESTARTING,
	SVC_FAILED
};

static const char *const state_names[] = {"stopped", "starting", "ready",
    "unhealthy", "stopping", "restarting", "failed"};

struct svc;

struct probe {
	struct svc *v;
	bool health;
	uv_tcp_t tcp;
	uv_connect_t conn;
	uv_write_t wr;
	uv_process_t proc;
	uv_timer_t timeout;
	char req[512];
	char got[16];
	size_t n_got;
	bool finished;
	bool detached; /* its service let go of it */
	unsigned open_handles;
};

struct grant {
	char post[CONFIG_NAME_MAX + 1];
	int64_t epoch;
	uint64_t until; /* monotonic ms; 0: not granted */
	bool releasing; /* the worker waits for "stopped POST" */
	uv_timer_t deadline;
};

struct svc {
	struct services *ss;
	const struct config_service *c;
	enum svc_state state;
	bool held; /* stopped by an operator */
	bool crash_pending; /* it is being stopped for failed health */
	/* the fence and the service */
	struct child_proc {
		uv_process_t proc;
		uv_pipe_t pipe;
		struct buf in;
		struct svc *v;
		unsigned open_handles;
		bool exited;
	} * ch;
	long pid; /* the service's, as the fence told */
	int64_t epoch; /* a post service: the epoch it runs with */
	int64_t since; /* wall ms of the last state change */
	unsigned restarts;
	char last_exit[64];
	uint64_t crashes[MAX_CRASHES];
	size_t n_crashes;
	uint64_t delay;
	uv_timer_t timer; /* backoff, probe retry, health interval */
	struct probe *probe;
	unsigned health_failed;
	int notify_fd;
	uv_poll_t notify;
	bool notify_open;
	char notify_name[108];
	char why[160]; /* why it is in its state */
};

struct services {
	uv_loop_t *loop;
	const struct daemon_args *a;
	const char *exe;
	services_say_fn say;
	void *arg;
	struct svc *v;
	size_t n;
	struct grant *g;
	size_t n_g;
	unsigned window_ms; /* SIGTERM before a post's deadline */
	void (*revoked)(void *arg); /* services_revoke_posts */
	void *revoked_arg;
	void (*freed)(void *arg);
	void *freed_arg;
	void (*free_done)(void *arg); /* services_free's caller */
	void *free_arg;
	bool freeing;
	unsigned open_handles;
};

static void svc_consider_all(struct services *ss);
static void svc_stop(struct svc *v, long ms, const char *why);
static void probe_run(struct svc *v, bool health);

/* ---- state ---- */

static struct grant *
grant_of(struct services *ss, const char *post)
{
	for (size_t i = 0; i < ss->n_g; i++)
		if (strcmp(ss->g[i].post, post) == 0)
			return &ss->g[i];
	return NULL;
}

static json_t *
svc_json(const struct svc *v)
{
	json_t *o =
	    json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:s,s:s}", "name", v->c->name,
		"scope", v->c->scope == CONFIG_SCOPE_POST ? "post" : "server",
		"state", state_names[v->state], "pid", (json_int_t)v->pid,
		"since", (json_int_t)v->since, "restarts", (int)v->restarts,
		"last_exit", v->last_exit, "why", v->why);

	if (v->c->scope == CONFIG_SCOPE_POST) {
		json_object_set_new(o, "post", json_string(v->c->post));
		json_object_set_new(o, "epoch", json_integer(v->epoch));
	}
	if (v->held)
		json_object_set_new(o, "held", json_true());
	return o;
}

static void
svc_push(struct svc *v)
{
	json_t *o = svc_json(v);
	char *s = json_dumps(o, JSON_COMPACT), *line = NULL;

	if (s && asprintf(&line, "svc %s %s\n", v->c->name, s) >= 0)
		v->ss->say(line, v->ss->arg);
	free(line);
	free(s);
	json_decref(o);
}

void
services_push_all(struct services *ss)
{
	for (size_t i = 0; i < ss->n; i++)
		svc_push(&ss->v[i]);
}

static void
svc_set(struct svc *v, enum svc_state s, const char *why)
{
	if (v->state != s)
		log_msg(s == SVC_FAILED ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO,
		    "service %s: %s -> %s (%s)", v->c->name,
		    state_names[v->state], state_names[s], why);
	v->state = s;
	v->since = time_wall_ms();
	str_copy(v->why, why, sizeof(v->why));
	svc_push(v);
}

static bool
svc_running(const struct svc *v)
{
	return v->ch != NULL;
}

/* The grant the post service may run on now, or NULL. */
static struct grant *
svc_grant(struct svc *v)
{
	struct grant *g;

	if (v->c->scope != CONFIG_SCOPE_POST)
		return NULL;
	g = grant_of(v->ss, v->c->post);
	if (g == NULL || g->until == 0 || g->releasing ||
	    g->until <= time_mono_ms() + v->ss->window_ms)
		return NULL;
	return g;
}

static bool
svc_deps_ready(const struct svc *v)
{
	for (size_t i = 0; i < v->c->after.n; i++)
		for (size_t j = 0; j < v->ss->n; j++)
			if (strcmp(v->ss->v[j].c->name, v->c->after.v[i]) ==
				0 &&
			    v->ss->v[j].state != SVC_READY &&
			    v->ss->v[j].state != SVC_UNHEALTHY)
				return false;
	return true;
}

/* ---- the fence and its pipe ---- */

static void
child_closed(uv_handle_t *h)
{
	struct child_proc *ch = h->data;

	if (--ch->open_handles == 0) {
		buf_free(&ch->in);
		free(ch);
	}
}

static void
fence_say(struct svc *v, const char *line)
{
	uv_buf_t b = uv_buf_init((char *)line, (unsigned)strlen(line));

	if (v->ch && !v->ch->exited)
		uv_try_write((uv_stream_t *)&v->ch->pipe, &b, 1);
}

/* Tell the fence the post's deadline, on the fence's clock. */
static void
fence_until(struct svc *v, const struct grant *g)
{
	uint64_t now = time_mono_ms(), boot = fence_boot_ms();
	char line[96];

	snprintf(line, sizeof(line), "until %" PRIu64 " %u\n",
	    boot + (g->until > now ? g->until - now : 0), v->ss->window_ms);
	fence_say(v, line);
}

static void
notify_close(struct svc *v)
{
	if (!v->notify_open)
		return;
	v->notify_open = false;
	uv_poll_stop(&v->notify);
	uv_close((uv_handle_t *)&v->notify, NULL);
	close(v->notify_fd);
}

static void
probe_detach(struct svc *v)
{
	if (v->probe) {
		v->probe->detached = true;
		v->probe = NULL;
	}
}

static void svc_start(struct svc *v);

static void
timer_start_cb(uv_timer_t *t)
{
	struct svc *v = t->data;

	if (v->state == SVC_RESTARTING)
		svc_start(v);
}

/* The service ended: the fence said how, or the fence itself died. */
static void
svc_ended(struct svc *v, const char *how, bool failure)
{
	struct services *ss = v->ss;
	bool asked = v->state == SVC_STOPPING && !v->crash_pending;
	uint64_t now = time_mono_ms(),
		 window = (uint64_t)v->c->crash_window * 1000;
	size_t keep = 0;

	if (v->crash_pending) {
		how = "unhealthy";
		failure = true;
	}
	v->crash_pending = false;
	str_copy(v->last_exit, how, sizeof(v->last_exit));
	v->pid = 0;
	uv_timer_stop(&v->timer);
	probe_detach(v);
	notify_close(v);
	if (v->ch && !v->ch->exited) {
		v->ch->exited = true;
		uv_close((uv_handle_t *)&v->ch->proc, child_closed);
		uv_close((uv_handle_t *)&v->ch->pipe, child_closed);
	}
	v->ch = NULL;
	if (asked || ss->freeing) {
		svc_set(v, SVC_STOPPED, how);
		goto out;
	}
	/* a crash */
	for (size_t i = 0; i < v->n_crashes; i++)
		if (now - v->crashes[i] < window)
			v->crashes[keep++] = v->crashes[i];
	v->n_crashes = keep;
	if (v->n_crashes < MAX_CRASHES)
		v->crashes[v->n_crashes++] = now;
	log_warn("service %s: pid ended: %s", v->c->name, how);
	if (v->c->restart == CONFIG_RESTART_NO ||
	    (v->c->restart == CONFIG_RESTART_ON_FAILURE && !failure)) {
		svc_set(v, SVC_STOPPED, how);
		goto out;
	}
	if ((long)v->n_crashes >= v->c->crash_limit) {
		char why[160];

		snprintf(why, sizeof(why),
		    "%zu crashes within %ld s, the last: %s; "
		    "'understudy service reset %s' starts it again",
		    v->n_crashes, v->c->crash_window, how, v->c->name);
		svc_set(v, SVC_FAILED, why);
		goto out;
	}
	v->delay =
	    v->n_crashes <= 1 ? (uint64_t)v->c->restart_delay : v->delay * 2;
	if (v->delay > (uint64_t)v->c->restart_delay_max)
		v->delay = (uint64_t)v->c->restart_delay_max;
	{
		char why[160];

		snprintf(why, sizeof(why), "%s; again in %" PRIu64 " ms", how,
		    v->delay);
		svc_set(v, SVC_RESTARTING, why);
	}
	uv_timer_start(&v->timer, timer_start_cb, v->delay, 0);
out:
	svc_consider_all(ss);
}

static void
fence_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct child_proc *ch = p->data;
	struct svc *v = ch->v;
	char how[64];

	if (v == NULL || v->ch != ch) {
		/* a fence its service already let go of */
		if (!ch->exited) {
			ch->exited = true;
			uv_close((uv_handle_t *)&ch->proc, child_closed);
			uv_close((uv_handle_t *)&ch->pipe, child_closed);
		}
		return;
	}
	snprintf(how, sizeof(how), "fence %s %" PRId64, sig ? "signal" : "exit",
	    sig ? (int64_t)sig : status);
	svc_ended(v, how, true);
}

static void
fence_line(struct svc *v, const char *line)
{
	long n;
	char how[64];

	if (strncmp(line, "pid ", 4) == 0 &&
	    str_to_long(line + 4, 1, 1L << 30, &n) == 0) {
		v->pid = n;
		svc_push(v);
	} else if (strncmp(line, "exit ", 5) == 0 &&
	    str_to_long(line + 5, 0, 255, &n) == 0) {
		snprintf(how, sizeof(how), "exit %ld", n);
		svc_ended(v, how, n != 0);
	} else if (strncmp(line, "signal ", 7) == 0 &&
	    str_to_long(line + 7, 0, 128, &n) == 0) {
		snprintf(how, sizeof(how), "signal %ld", n);
		svc_ended(v, how, true);
	}
}

static void
fence_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct child_proc *ch = s->data;
	char *line;
	size_t len;

	if (n < 0) {
		uv_read_stop(s);
		return;
	}
	if (buf_append(&ch->in, b->base, (size_t)n) != 0) {
		buf_reset(&ch->in);
		return;
	}
	while (ch->v && ch->v->ch == ch &&
	    buf_take_line(&ch->in, &line, &len) == 1) {
		fence_line(ch->v, line);
		free(line);
	}
}

/* ---- readiness ---- */

static void
svc_ready(struct svc *v, const char *why)
{
	svc_set(v, SVC_READY, why);
	v->health_failed = 0;
	if (v->c->health)
		probe_run(v, true);
	svc_consider_all(v->ss);
}

static void
notify_cb(uv_poll_t *h, int status, int events)
{
	struct svc *v = h->data;
	char buf[4096];
	ssize_t n;

	(void)events;
	if (status < 0)
		return;
	while (
	    (n = recv(v->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
		buf[n] = '\0';
		if ((strncmp(buf, "READY=1", 7) == 0 ||
			strstr(buf, "\nREADY=1") != NULL) &&
		    v->state == SVC_STARTING)
			svc_ready(v, "it sent READY=1");
	}
}

static int
notify_open(struct svc *v)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len;

	snprintf(v->notify_name, sizeof(v->notify_name), "@understudy-%d-%s-%s",
	    (int)getpid(), v->ss->a->server, v->c->name);
	len = strlen(v->notify_name);
	/* an abstract socket: no path to clean up, no length limit issue */
	memcpy(sa.sun_path + 1, v->notify_name + 1, len - 1);
	v->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (v->notify_fd < 0)
		return -1;
	if (bind(v->notify_fd, (struct sockaddr *)&sa,
		(socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) !=
	    0) {
		close(v->notify_fd);
		return -1;
	}
	uv_poll_init(v->ss->loop, &v->notify, v->notify_fd);
	v->notify.data = v;
	v->notify_open = true;
	uv_poll_start(&v->notify, UV_READABLE, notify_cb);
	return 0;
}

/* ---- probes ---- */

static void
probe_closed(uv_handle_t *h)
{
	struct probe *p = h->data;

	if (--p->open_handles == 0)
		free(p);
}

static void probe_result(struct svc *v, bool health, bool ok);

static void
probe_finish(struct probe *p, bool ok)
{
	if (p->finished)
		return;
	p->finished = true;
	uv_timer_stop(&p->timeout);
	uv_close((uv_handle_t *)&p->timeout, probe_closed);
	if (p->tcp.data)
		uv_close((uv_handle_t *)&p->tcp, probe_closed);
	if (!p->detached && p->v->probe == p) {
		p->v->probe = NULL;
		probe_result(p->v, p->health, ok);
	}
}

static void
probe_timeout_cb(uv_timer_t *t)
{
	struct probe *p = t->data;

	if (p->proc.data && !p->finished)
		uv_process_kill(&p->proc, SIGKILL);
	probe_finish(p, false);
}

static void
probe_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
	struct probe *p = proc->data;

	uv_close((uv_handle_t *)&p->proc, probe_closed);
	probe_finish(p, status == 0 && sig == 0);
}

static void
probe_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct probe *p = s->data;

	if (n < 0) {
		/* "HTTP/1.x 2xx" */
		probe_finish(p, p->n_got >= 10 && p->got[9] == '2');
		return;
	}
	for (ssize_t i = 0; i < n && p->n_got < sizeof(p->got); i++)
		p->got[p->n_got++] = b->base[i];
	if (p->n_got >= 10)
		probe_finish(
		    p, strncmp(p->got, "HTTP/", 5) == 0 && p->got[9] == '2');
}

static void
probe_written_cb(uv_write_t *w, int status)
{
	struct probe *p = w->data;

	if (status < 0 && !p->finished)
		probe_finish(p, false);
}

static void
probe_connect_cb(uv_connect_t *c, int status)
{
	struct probe *p = c->data;
	uv_buf_t b;

	if (p->finished)
		return;
	if (status < 0) {
		probe_finish(p, false);
		return;
	}
	if (p->req[0] == '\0') {
		probe_finish(p, true); /* tcp: accepting */
		return;
	}
	b = uv_buf_init(p->req, (unsigned)strlen(p->req));
	p->wr.data = p;
	uv_write(&p->wr, (uv_stream_t *)&p->tcp, &b, 1, probe_written_cb);
	uv_read_start((uv_stream_t *)&p->tcp, loop_read_buffer, probe_read_cb);
}

/* "HOST:PORT" (up to end) into an address. */
static int
probe_addr(const char *hp, size_t len, struct sockaddr_storage *out)
{
	char host[256], *colon;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;

	if (len >= sizeof(host))
		return -1;
	memcpy(host, hp, len);
	host[len] = '\0';
	if ((colon = strrchr(host, ':')) == NULL)
		return -1;
	*colon = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
		return -1;
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static char **svc_env(struct svc *v);
static void env_free(char **env);

static void
probe_run(struct svc *v, bool health)
{
	const char *spec = health ? v->c->health : v->c->ready;
	struct probe *p = calloc(1, sizeof(*p));
	struct sockaddr_storage sa;
	int rc = -1;

	if (p == NULL)
		return;
	p->v = v;
	p->health = health;
	v->probe = p;
	uv_timer_init(v->ss->loop, &p->timeout);
	p->timeout.data = p;
	p->open_handles = 1;
	if (strncmp(spec, "exec:", 5) == 0) {
		char *args[] = {
		    (char *)"/bin/sh", (char *)"-c", (char *)spec + 5, NULL};
		uv_process_options_t o = {0};
		uv_stdio_container_t stdio[3];
		char **env = svc_env(v);

		stdio[0].flags = UV_IGNORE;
		stdio[1].flags = UV_IGNORE;
		stdio[2].flags = UV_INHERIT_FD;
		stdio[2].data.fd = 2;
		o.file = "/bin/sh";
		o.args = args;
		o.env = env;
		o.exit_cb = probe_exit_cb;
		o.stdio = stdio;
		o.stdio_count = 3;
		p->proc.data = p;
		if ((rc = uv_spawn(v->ss->loop, &p->proc, &o)) == 0)
			p->open_handles++;
		else
			p->proc.data = NULL;
		env_free(env);
	} else {
		const char *hp = spec + (spec[0] == 't' ? 4 : 7);
		size_t len = strcspn(hp, "/");

		if (spec[0] == 'h')
			snprintf(p->req, sizeof(p->req),
			    "GET %s HTTP/1.0\r\nHost: %.*s\r\n\r\n",
			    hp[len] ? hp + len : "/", (int)len, hp);
		if (probe_addr(hp, len, &sa) == 0) {
			uv_tcp_init(v->ss->loop, &p->tcp);
			p->tcp.data = p;
			p->conn.data = p;
			p->open_handles++;
			rc = uv_tcp_connect(&p->conn, &p->tcp,
			    (struct sockaddr *)&sa, probe_connect_cb);
		}
	}
	if (rc != 0) {
		probe_finish(p, false);
		return;
	}
	uv_timer_start(&p->timeout, probe_timeout_cb, PROBE_TIMEOUT_MS, 0);
}

static void
timer_probe_cb(uv_timer_t *t)
{
	struct svc *v = t->data;

	if ((v->state == SVC_STARTING || v->state == SVC_READY ||
		v->state == SVC_UNHEALTHY) &&
	    v->probe == NULL)
		probe_run(v, v->state != SVC_STARTING);
}

static void
probe_result(struct svc *v, bool health, bool ok)
{
	if (!health) {
		if (v->state != SVC_STARTING)
			return;
		if (ok)
			svc_ready(v, "its ready probe passed");
		else
			uv_timer_start(
			    &v->timer, timer_probe_cb, PROBE_RETRY_MS, 0);
		return;
	}
	if (v->state != SVC_READY && v->state != SVC_UNHEALTHY)
		return;
	if (ok) {
		v->health_failed = 0;
		if (v->state == SVC_UNHEALTHY)
			svc_set(v, SVC_READY, "its health probe passed again");
	} else if (++v->health_failed >= (unsigned)v->c->health_failures) {
		char why[96];

		snprintf(why, sizeof(why), "%u health probes failed in a row",
		    v->health_failed);
		v->crash_pending = true;
		svc_stop(v, v->c->stop_timeout, why);
		return;
	} else if (v->state == SVC_READY) {
		svc_set(v, SVC_UNHEALTHY, "a health probe failed");
	}
	uv_timer_start(
	    &v->timer, timer_probe_cb, (uint64_t)v->c->health_interval, 0);
}

/* ---- starting and stopping ---- */

static int
env_add(char ***env, size_t *n, const char *item)
{
	char **e = realloc(*env, (*n + 2) * sizeof(*e));
	size_t klen = strcspn(item, "=");

	if (e == NULL)
		return -1;
	*env = e;
	/* a later item overrides an earlier one of the same key */
	for (size_t i = 0; i < *n; i++)
		if (strncmp(e[i], item, klen + 1) == 0) {
			free(e[i]);
			e[i] = strdup(item);
			return 0;
		}
	e[(*n)++] = strdup(item);
	e[*n] = NULL;
	return 0;
}

static void
env_free(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
}

static char **
svc_env(struct svc *v)
{
	char **env = NULL, item[512];
	size_t n = 0;

	for (char **e = environ; *e; e++)
		if (strncmp(*e, "NOTIFY_SOCKET=", 14) != 0 &&
		    strncmp(*e, "UNDERSTUDY_", 11) != 0)
			env_add(&env, &n, *e);
	snprintf(item, sizeof(item), "UNDERSTUDY_SERVICE=%s", v->c->name);
	env_add(&env, &n, item);
	snprintf(item, sizeof(item), "UNDERSTUDY_SERVER=%s", v->ss->a->server);
	env_add(&env, &n, item);
	if (v->c->scope == CONFIG_SCOPE_POST) {
		snprintf(item, sizeof(item), "UNDERSTUDY_POST=%s", v->c->post);
		env_add(&env, &n, item);
		snprintf(
		    item, sizeof(item), "UNDERSTUDY_EPOCH=%" PRId64, v->epoch);
		env_add(&env, &n, item);
	}
	if (v->notify_open) {
		snprintf(
		    item, sizeof(item), "NOTIFY_SOCKET=%s", v->notify_name);
		env_add(&env, &n, item);
	}
	for (size_t i = 0; i < v->c->env.n; i++)
		env_add(&env, &n, v->c->env.v[i]);
	if (env == NULL)
		env = calloc(1, sizeof(*env));
	return env;
}

static void
svc_start(struct svc *v)
{
	struct services *ss = v->ss;
	struct child_proc *ch;
	struct grant *g = svc_grant(v);
	uv_process_options_t o = {0};
	uv_stdio_container_t stdio[4];
	char stop_ms[32], *args[6], **env, *cwd = NULL;
	int rc;

	if (v->c->scope == CONFIG_SCOPE_POST) {
		if (g == NULL)
			return;
		v->epoch = g->epoch;
	}
	if (v->c->ready && strcmp(v->c->ready, "notify") == 0 &&
	    notify_open(v) != 0)
		log_warn("service %s: cannot open its notify socket: %s",
		    v->c->name, strerror(errno));
	if ((ch = calloc(1, sizeof(*ch))) == NULL)
		return;
	ch->v = v;
	buf_init(&ch->in, 4096);
	uv_pipe_init(ss->loop, &ch->pipe, 0);
	ch->pipe.data = ch;
	ch->proc.data = ch;
	snprintf(stop_ms, sizeof(stop_ms), "%ld", v->c->stop_timeout);
	args[0] = (char *)ss->exe;
	args[1] = (char *)"--fence";
	args[2] = stop_ms;
	args[3] = (char *)(v->c->user ? v->c->user : "-");
	args[4] = v->c->command;
	args[5] = NULL;
	memset(stdio, 0, sizeof(stdio));
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_INHERIT_FD;
	stdio[1].data.fd = 1;
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = 2;
	stdio[DAEMON_IPC_FD].flags =
	    UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
	stdio[DAEMON_IPC_FD].data.stream = (uv_stream_t *)&ch->pipe;
	env = svc_env(v);
	cwd = v->c->working_dir
	    ? config_file_path(ss->a->cfg, v->c->working_dir)
	    : strdup(ss->a->state_dir);
	o.file = ss->exe;
	o.args = args;
	o.env = env;
	o.cwd = cwd;
	o.exit_cb = fence_exit_cb;
	o.stdio = stdio;
	o.stdio_count = 4;
	rc = uv_spawn(ss->loop, &ch->proc, &o);
	env_free(env);
	free(cwd);
	ch->open_handles = 2;
	if (rc != 0) {
		char why[128];

		log_error("service %s: cannot start its fence: %s", v->c->name,
		    uv_strerror(rc));
		uv_close((uv_handle_t *)&ch->proc, child_closed);
		uv_close((uv_handle_t *)&ch->pipe, child_closed);
		notify_close(v);
		snprintf(why, sizeof(why), "cannot start: %s", uv_strerror(rc));
		svc_set(v, SVC_FAILED, why);
		return;
	}
	v->ch = ch;
	uv_read_start((uv_stream_t *)&ch->pipe, loop_read_buffer, fence_read);
	if (g)
		fence_until(v, g);
	if (v->state == SVC_RESTARTING)
		v->restarts++;
	svc_set(
	    v, SVC_STARTING, g ? "its post is owned here" : "its turn came");
	if (v->c->ready == NULL)
		svc_ready(v, "started (no ready probe)");
	else if (strcmp(v->c->ready, "notify") != 0)
		uv_timer_start(&v->timer, timer_probe_cb, 0, 0);
}

static void
svc_stop(struct svc *v, long ms, const char *why)
{
	char line[64];

	uv_timer_stop(&v->timer);
	probe_detach(v);
	if (!svc_running(v)) {
		if (v->state != SVC_FAILED)
			svc_set(v, SVC_STOPPED, why);
		return;
	}
	snprintf(line, sizeof(line), "stop %ld\n", ms);
	fence_say(v, line);
	if (v->state != SVC_STOPPING)
		svc_set(v, SVC_STOPPING, why);
}

/* Post services whose grant went: stop. Then start what may start. */
static void
svc_consider_all(struct services *ss)
{
	bool again = true;

	for (size_t i = 0; i < ss->n; i++) {
		struct svc *v = &ss->v[i];

		if (v->c->scope != CONFIG_SCOPE_POST || !svc_running(v) ||
		    v->state == SVC_STOPPING)
			continue;
		struct grant *g = svc_grant(v);

		if (g == NULL || g->epoch != v->epoch)
			svc_stop(
			    v, v->c->stop_timeout, "its post is not granted");
	}
	/* each round can make one more service ready to start */
	while (again && !ss->freeing) {
		again = false;
		for (size_t i = 0; i < ss->n; i++) {
			struct svc *v = &ss->v[i];

			if (v->state != SVC_STOPPED || v->held ||
			    !svc_deps_ready(v))
				continue;
			if (v->c->scope == CONFIG_SCOPE_POST &&
			    svc_grant(v) == NULL)
				continue;
			svc_start(v);
			again = v->state != SVC_STOPPED;
		}
	}
	/* the worker waits for these */
	for (size_t i = 0; i < ss->n_g; i++) {
		struct grant *g = &ss->g[i];
		bool busy = false;
		char line[64];

		if (!g->releasing)
			continue;
		for (size_t j = 0; j < ss->n; j++)
			if (ss->v[j].c->scope == CONFIG_SCOPE_POST &&
			    strcmp(ss->v[j].c->post, g->post) == 0 &&
			    svc_running(&ss->v[j]))
				busy = true;
		if (busy)
			continue;
		g->releasing = false;
		g->until = 0;
		snprintf(line, sizeof(line), "stopped %s\n", g->post);
		ss->say(line, ss->arg);
	}
	if (ss->revoked) {
		for (size_t j = 0; j < ss->n; j++)
			if (ss->v[j].c->scope == CONFIG_SCOPE_POST &&
			    svc_running(&ss->v[j]))
				return;
		void (*cb)(void *) = ss->revoked;

		ss->revoked = NULL;
		/*
		 * the callback may free the services (the master stops: it
		 * calls services_free, which comes back here): ss is not
		 * touched after it
		 */
		cb(ss->revoked_arg);
		return;
	}
	if (ss->freeing && ss->freed) {
		for (size_t j = 0; j < ss->n; j++)
			if (svc_running(&ss->v[j]))
				return;
		void (*cb)(void *) = ss->freed;

		ss->freed = NULL;
		ss->revoked = ss->free_done;
		ss->revoked_arg = ss->free_arg;
		cb(ss->freed_arg);
	}
}

/* ---- grants ---- */

static void
grant_deadline_cb(uv_timer_t *t)
{
	struct services *ss = t->data;

	/* a grant ran out: svc_grant() now says no for its post */
	svc_consider_all(ss);
}

static void
grant_arm(struct services *ss, struct grant *g)
{
	uint64_t now = time_mono_ms(),
		 at = g->until > ss->window_ms ? g->until - ss->window_ms : 0;

	g->deadline.data = ss;
	uv_timer_start(
	    &g->deadline, grant_deadline_cb, at > now ? at - now : 0, 0);
}

static void
post_grant(struct services *ss, const char *post, int64_t epoch, uint64_t until)
{
	struct grant *g = grant_of(ss, post);

	if (g == NULL || g->releasing)
		return;
	if (g->epoch != epoch && g->until)
		log_info("services of post %s: epoch %" PRId64 " -> %" PRId64,
		    post, g->epoch, epoch);
	g->epoch = epoch;
	g->until = until;
	grant_arm(ss, g);
	for (size_t i = 0; i < ss->n; i++)
		if (ss->v[i].c->scope == CONFIG_SCOPE_POST &&
		    strcmp(ss->v[i].c->post, post) == 0 &&
		    svc_running(&ss->v[i]) && ss->v[i].epoch == epoch)
			fence_until(&ss->v[i], g);
	svc_consider_all(ss);
}

static void
post_release(struct services *ss, const char *post)
{
	struct grant *g = grant_of(ss, post);
	char line[64];

	if (g == NULL) {
		/* no service follows it: nothing to wait for */
		snprintf(line, sizeof(line), "stopped %s\n", post);
		ss->say(line, ss->arg);
		return;
	}
	g->until = 0;
	g->releasing = true;
	uv_timer_stop(&g->deadline);
	svc_consider_all(ss);
}

void
services_revoke_posts(struct services *ss, void (*done)(void *arg), void *arg)
{
	for (size_t i = 0; i < ss->n_g; i++) {
		ss->g[i].until = 0;
		ss->g[i].releasing = false;
		uv_timer_stop(&ss->g[i].deadline);
	}
	ss->revoked = done;
	ss->revoked_arg = arg;
	svc_consider_all(ss);
}

/* ---- operators ---- */

static void
svc_action(struct services *ss, const char *action, const char *name)
{
	struct svc *v = NULL;

	for (size_t i = 0; i < ss->n; i++)
		if (strcmp(ss->v[i].c->name, name) == 0)
			v = &ss->v[i];
	if (v == NULL)
		return;
	log_info("service %s: %s by an operator", name, action);
	if (strcmp(action, "stop") == 0) {
		v->held = true;
		uv_timer_stop(&v->timer);
		svc_stop(v, v->c->stop_timeout, "stopped by an operator");
	} else if (strcmp(action, "start") == 0) {
		v->held = false;
		if (v->state == SVC_FAILED)
			svc_set(v, SVC_STOPPED, "started by an operator");
	} else if (strcmp(action, "reset") == 0) {
		v->held = false;
		v->n_crashes = 0;
		v->delay = 0;
		if (v->state == SVC_FAILED || v->state == SVC_RESTARTING) {
			uv_timer_stop(&v->timer);
			svc_set(v, SVC_STOPPED, "reset by an operator");
		}
	} else if (strcmp(action, "restart") == 0) {
		v->held = false;
		if (svc_running(v)) {
			/* stopped as asked, then started again below */
			svc_stop(
			    v, v->c->stop_timeout, "restarted by an operator");
			return;
		}
		if (v->state == SVC_FAILED || v->state == SVC_RESTARTING) {
			uv_timer_stop(&v->timer);
			svc_set(v, SVC_STOPPED, "restarted by an operator");
		}
	}
	svc_consider_all(ss);
}

bool
services_line(struct services *ss, const char *line)
{
	char post[CONFIG_NAME_MAX + 1], action[16], name[CONFIG_NAME_MAX + 1];
	long long epoch;
	unsigned long long until;

	if (sscanf(line, "grant %32s %lld %llu", post, &epoch, &until) == 3) {
		post_grant(ss, post, (int64_t)epoch, (uint64_t)until);
		return true;
	}
	if (sscanf(line, "release %32s", post) == 1) {
		post_release(ss, post);
		return true;
	}
	if (sscanf(line, "service %15s %32s", action, name) == 2) {
		svc_action(ss, action, name);
		return true;
	}
	return false;
}

/* ---- life ---- */

struct services *
services_new(uv_loop_t *loop, const struct daemon_args *a, const char *exe,
    services_say_fn say, void *arg)
{
	struct services *ss = calloc(1, sizeof(*ss));
	const struct config *cfg = a->cfg;
	unsigned quarter = (unsigned)cfg->cluster.lease_ttl * 1000 / 4;

	if (ss == NULL)
		return NULL;
	ss->loop = loop;
	ss->a = a;
	ss->exe = exe;
	ss->say = say;
	ss->arg = arg;
	ss->window_ms = quarter;
	ss->v = calloc(cfg->n_services + 1, sizeof(*ss->v));
	ss->g = calloc(cfg->n_services + 1, sizeof(*ss->g));
	if (ss->v == NULL || ss->g == NULL) {
		free(ss->v);
		free(ss->g);
		free(ss);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct config_service *c = &cfg->services[i];
		struct svc *v;

		if (!config_service_here(c, a->server))
			continue;
		v = &ss->v[ss->n++];
		v->ss = ss;
		v->c = c;
		v->since = time_wall_ms();
		str_copy(v->why,
		    c->scope == CONFIG_SCOPE_POST ? "its post is not owned here"
						  : "not started yet",
		    sizeof(v->why));
		uv_timer_init(loop, &v->timer);
		v->timer.data = v;
		ss->open_handles++;
		if (c->scope == CONFIG_SCOPE_POST &&
		    grant_of(ss, c->post) == NULL) {
			struct grant *g = &ss->g[ss->n_g++];

			str_copy(g->post, c->post, sizeof(g->post));
			uv_timer_init(loop, &g->deadline);
			g->deadline.data = ss;
			ss->open_handles++;
		}
	}
	return ss;
}

void
services_start(struct services *ss)
{
	svc_consider_all(ss);
}

static void
handle_closed(uv_handle_t *h)
{
	struct services *ss = h->data;

	if (--ss->open_handles == 0) {
		free(ss->v);
		free(ss->g);
		free(ss);
	}
}

/* Every service has stopped: close the handles, then free. */
static void
free_done(void *arg)
{
	struct services *ss = arg;
	void (*done)(void *) = ss->revoked;
	void *darg = ss->revoked_arg;

	for (size_t i = 0; i < ss->n; i++) {
		ss->v[i].timer.data = ss;
		uv_close((uv_handle_t *)&ss->v[i].timer, handle_closed);
	}
	for (size_t i = 0; i < ss->n_g; i++) {
		ss->g[i].deadline.data = ss;
		uv_close((uv_handle_t *)&ss->g[i].deadline, handle_closed);
	}
	if (ss->open_handles == 0) {
		free(ss->v);
		free(ss->g);
		free(ss);
	}
	if (done)
		done(darg);
}

void
services_free(struct services *ss, void (*done)(void *arg), void *arg)
{
	if (ss == NULL) {
		if (done)
			done(arg);
		return;
	}
	ss->freeing = true;
	/* kept here for free_done: no revocation waits any more */
	ss->revoked = NULL;
	ss->freed = free_done;
	ss->freed_arg = ss;
	ss->free_done = done;
	ss->free_arg = arg;
	for (size_t i = 0; i < ss->n; i++) {
		struct svc *v = &ss->v[i];

		uv_timer_stop(&v->timer);
		if (svc_running(v))
			svc_stop(v, v->c->stop_timeout, "understudyd stops");
	}
	svc_consider_all(ss);
}
