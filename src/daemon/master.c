/*
 * The master: starts the worker (this same program with --worker),
 * restarts it when it dies, and revokes the worker's lease the moment it
 * dies, so the cluster sees the death at once ("software failover")
 * instead of after the lease TTL.
 *
 * It pings the worker's loop over the pipe; a worker that leaves pings
 * unanswered for master_hang_limit_ms() is killed and handled as a
 * crash. Restarts back off, and a worker that dies MASTER_MAX_CRASHES
 * times within MASTER_CRASH_WINDOW_MS makes the master give up.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/agent.h"
#include "coord/coord.h"
#include "config/versions.h"
#include "daemon.h"

#define MASTER_PING_MS 50
#define MASTER_STARTUP_GRACE_MS 10000
#define MASTER_MAX_CRASHES 5
#define MASTER_CRASH_WINDOW_MS 60000
#define MASTER_STOP_GRACE_MS 5000
/* how long a starting master waits for the version in effect */
#define MASTER_CONF_WAIT_MS 10000

struct child {
	struct master *m;
	uv_process_t proc;
	uv_pipe_t ipc;
	struct buf in;
	int64_t lease;
	uint64_t started; /* master awake time at the start */
	uint64_t last_pong; /* master awake time of the last line */
	bool answered; /* a line came: the start grace is over */
	bool exited;
	bool hung;
	unsigned open_handles;
};

struct master {
	uv_loop_t *loop;
	const struct daemon_args *a;
	struct etcd *etcd;
	struct child *child;
	uv_timer_t ping;
	uv_timer_t restart;
	uv_timer_t stop_grace;
	uv_signal_t sigterm, sigint, sighup;
	uint64_t crashes[MASTER_MAX_CRASHES];
	unsigned n_crashes;
	unsigned hang_limit;
	uint64_t last_tick; /* monotonic ms when the ping timer last ran */
	/*
	 * Time the master itself was running, in ms: a tick that comes late
	 * (the host was frozen) counts as one interval. Silence is measured
	 * in it, so a freeze of the whole host never looks like a hang.
	 */
	uint64_t awake;
	unsigned restarts; /* workers started after the first */
	bool restart_pending;
	uint64_t restart_delay;
	bool stopping;
	bool finishing;
	unsigned revocations; /* lease revocations still out */
	struct history *history; /* the worker's restarts, for the timeline */
	int64_t died_ms; /* wall ms of the last death, 0: none to tell */
	char died_why[96];
	struct services *services;
	struct daemon_args svc_args; /* the services' config: in effect */
	bool conf_over; /* stop waiting for the version in effect */
	int status;
	char exe[4096];
};

static void master_spawn(struct master *m);
static void kick_restart(struct master *m);
static void master_finish(struct master *m);

static void
conf_wait_over(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

/*
 * The configuration of this server's services: the cluster's version in
 * effect, as the worker runs it, so that a version that changed services
 * ("needs a restart") runs once understudyd restarts. etcd silent for
 * MASTER_CONF_WAIT_MS: the local file's, said in the log.
 */
static struct config *
services_config(struct master *m)
{
	struct versions *v = versions_new(m->etcd, m->a->cfg->cluster.name);
	struct config *cfg = NULL;
	bool differs = false;
	uv_timer_t t;

	if (v == NULL)
		return m->a->cfg;
	uv_timer_init(m->loop, &t);
	t.data = &m->conf_over;
	uv_timer_start(&t, conf_wait_over, MASTER_CONF_WAIT_MS, 0);
	cfg = conf_effective(m->loop, v, m->a, &m->conf_over, &differs, true);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(m->loop, UV_RUN_NOWAIT);
	versions_free(v);
	if (cfg == NULL && !m->stopping) {
		log_warn("services: the configuration version in effect is "
			 "not known (etcd did not answer within %d s, or the "
			 "version cannot run here): the services of %s run "
			 "until understudyd restarts",
		    MASTER_CONF_WAIT_MS / 1000, m->a->config_path);
		return m->a->cfg;
	}
	if (cfg == NULL)
		return m->a->cfg;
	if (config_server_find(cfg, m->a->server) == NULL) {
		config_free(cfg);
		return m->a->cfg;
	}
	return cfg;
}

unsigned
master_hang_limit_ms(unsigned lease_ttl)
{
	/* the kill and the revocation both land within half the TTL */
	unsigned half = lease_ttl * 1000 / 2;

	return half > 500 ? half - 250 : 250;
}

static void
child_closed(uv_handle_t *h)
{
	struct child *c = h->data;

	if (--c->open_handles == 0) {
		buf_free(&c->in);
		free(c);
	}
}

struct revocation {
	struct master *m;
	uint64_t t0;
	int64_t lease;
};

static void
revoke_cb(const struct etcd_res *res, void *arg)
{
	struct revocation *r = arg;
	struct master *m = r->m;

	if (res->err && res->err != US_ENOTFOUND)
		log_error("revoking the dead worker's lease failed: %s; it "
			  "expires by itself",
		    us_strerror(res->err));
	else if (res->err == 0)
		log_info("dead worker's lease revoked %" PRIu64 " ms after its "
			 "death",
		    time_mono_ms() - r->t0);
	free(r);
	if (--m->revocations == 0 && m->finishing)
		master_finish(m);
	else if (m->revocations == 0 && m->restart_pending && !m->stopping)
		kick_restart(m);
}

/* gone/<server> is written (or could not be): revoke now */
static void
gone_written(const struct etcd_res *res, void *arg)
{
	struct revocation *r = arg;
	struct master *m = r->m;

	if (res->err)
		log_warn("cannot record the worker's death: %s; its calls "
			 "will read as lost with the host",
		    us_strerror(res->err));
	if (etcd_lease_revoke(m->etcd, r->lease, revoke_cb, r) == NULL) {
		struct etcd_res none = {.err = US_ENOMEM};

		revoke_cb(&none, r);
	}
}

static void
restart_cb(uv_timer_t *t)
{
	struct master *m = t->data;

	if (!m->stopping)
		master_spawn(m);
}

static void
kick_restart(struct master *m)
{
	m->restart_pending = false;
	uv_timer_start(&m->restart, restart_cb, m->restart_delay, 0);
}

/* Record a crash; returns the restart delay, or -1 to give up. */
static int64_t
crash_backoff(struct master *m)
{
	uint64_t now = time_mono_ms();
	unsigned recent = 0, keep = 0;

	for (unsigned i = 0; i < m->n_crashes; i++)
		if (now - m->crashes[i] < MASTER_CRASH_WINDOW_MS)
			m->crashes[keep++] = m->crashes[i];
	m->n_crashes = keep;
	if (m->n_crashes == MASTER_MAX_CRASHES)
		return -1;
	m->crashes[m->n_crashes++] = now;
	recent = m->n_crashes;
	/* at once after the first crash, then 100, 200, 400 ms ... */
	return recent <= 1 ? 0 : (int64_t)(100u << (recent - 2));
}

struct dead_worker {
	struct master *m;
	int64_t lease;
	const char *why;
	uint64_t t0;
};

/*
 * The post services are stopped (they lost their fence with the
 * worker): now the cluster may see the worker gone, and a cover may
 * claim its posts.
 */
static void
posts_released(void *arg)
{
	struct dead_worker *dw = arg;
	struct master *m = dw->m;
	struct revocation *r = malloc(sizeof(*r));

	m->revocations--; /* the stop counted as one */
	if (r && dw->lease) {
		r->m = m;
		r->t0 = dw->t0;
		r->lease = dw->lease;
		/*
		 * first the death notice, so that whoever closes the
		 * records of its calls knows the software failed
		 */
		if (agent_write_gone(m->etcd, m->a->cfg->cluster.name,
			m->a->self->name, dw->lease, dw->why, gone_written, r))
			m->revocations++;
		else
			free(r);
	} else {
		free(r);
	}
	free(dw);
	if (m->revocations == 0 && m->finishing)
		master_finish(m);
	else if (m->revocations == 0 && m->restart_pending && !m->stopping)
		kick_restart(m);
}

static void
exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct child *c = p->data;
	struct master *m = c->m;
	struct dead_worker *dw = calloc(1, sizeof(*dw));
	int64_t delay;

	c->exited = true;
	if (dw) {
		/* first: stop its post services, then revoke its lease */
		dw->m = m;
		dw->lease = c->lease;
		dw->why = sig || status ? "crashed" : "exited";
		dw->t0 = time_mono_ms();
		m->revocations++;
	}
	if (sig)
		log_msg(m->stopping ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR,
		    "worker pid %d killed by signal %d%s", p->pid, sig,
		    c->hung ? " (it hung)" : "");
	else
		log_msg(status == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR,
		    "worker pid %d exited with status %" PRId64, p->pid,
		    status);
	uv_close((uv_handle_t *)&c->proc, child_closed);
	uv_close((uv_handle_t *)&c->ipc, child_closed);
	m->child = NULL;
	if (m->stopping) {
		if (status != 0 || sig)
			m->status = 1;
		m->finishing = true;
		if (dw)
			services_revoke_posts(m->services, posts_released, dw);
		else
			master_finish(m);
		return;
	}
	if ((delay = crash_backoff(m)) < 0) {
		log_error("the worker died %d times within %d s; giving up",
		    MASTER_MAX_CRASHES + 1, MASTER_CRASH_WINDOW_MS / 1000);
		m->status = 1;
		m->stopping = true;
		m->finishing = true;
		if (dw)
			services_revoke_posts(m->services, posts_released, dw);
		else
			master_finish(m);
		return;
	}
	m->died_ms = time_wall_ms();
	if (c->hung)
		snprintf(m->died_why, sizeof(m->died_why),
		    "hung: silent for %u ms, killed", m->hang_limit);
	else if (sig)
		snprintf(m->died_why, sizeof(m->died_why),
		    "killed by signal %d (%s)", sig, strsignal(sig));
	else
		snprintf(m->died_why, sizeof(m->died_why),
		    "exited with status %" PRId64, status);
	log_info("restarting the worker in %" PRId64 " ms%s", delay,
	    m->revocations ? ", once its post services stopped and its lease "
			     "is revoked"
			   : "");
	notify_status("the worker died; restarting it");
	m->restart_delay = (uint64_t)delay;
	m->restart_pending = true;
	if (dw)
		services_revoke_posts(m->services, posts_released, dw);
	/* the cluster must see the death before the new worker appears */
	else if (m->revocations == 0)
		kick_restart(m);
}

static void
ipc_line(struct child *c, const char *line)
{
	/* any line shows the loop runs; the first one ends the start grace */
	c->last_pong = c->m->awake;
	c->answered = true;
	if (notify_worker_line(line))
		return;
	if (strncmp(line, "lease ", 6) == 0) {
		c->lease = (int64_t)strtoull(line + 6, NULL, 16);
		log_debug("worker lease is now %" PRIx64, (uint64_t)c->lease);
	} else if (c->m->services) {
		services_line(c->m->services, line);
	}
}

static void
ipc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct child *c = s->data;
	char *line;
	size_t len;

	if (n < 0) {
		uv_read_stop(s);
		return;
	}
	if (buf_append(&c->in, b->base, (size_t)n) != 0) {
		log_error("worker sent an over-long line; ignoring it");
		buf_reset(&c->in);
		return;
	}
	while (buf_take_line(&c->in, &line, &len) == 1) {
		ipc_line(c, line);
		free(line);
	}
}

/* systemd hears the master vouch for its worker's loop, or nothing */
static void
master_watchdog(struct master *m)
{
	const struct child *c = m->child;

	if (c && !c->exited && !c->hung && c->answered)
		notify_watchdog(m->awake - c->last_pong);
	else
		notify_watchdog(UINT64_MAX);
}

static void
ping_cb(uv_timer_t *t)
{
	struct master *m = t->data;
	struct child *c = m->child;
	static char ping[] = "ping\n";
	uv_buf_t b = uv_buf_init(ping, sizeof(ping) - 1);
	uint64_t now = time_mono_ms(), since, dt;

	dt = m->last_tick ? now - m->last_tick : 0;
	if (dt > 2 * MASTER_PING_MS) {
		if (dt > m->hang_limit / 2)
			log_warn(
			    "this server did not run for %" PRIu64 " ms", dt);
		dt = MASTER_PING_MS;
	}
	m->awake += dt;
	m->last_tick = now;
	master_watchdog(m);
	if (c == NULL || c->exited || c->hung)
		return;
	since = c->answered ? c->last_pong : c->started;
	if (m->awake > since &&
	    m->awake - since >
		(c->answered ? m->hang_limit : MASTER_STARTUP_GRACE_MS)) {
		log_error("worker pid %d has not answered for %" PRIu64
			  " ms; killing it",
		    c->proc.pid, m->awake - since);
		c->hung = true;
		uv_process_kill(&c->proc, SIGKILL);
		return;
	}
	uv_try_write((uv_stream_t *)&c->ipc, &b, 1);
}

/* A line for the worker, from the services. */
static void
master_say(const char *line, void *arg)
{
	struct master *m = arg;
	uv_buf_t b = uv_buf_init((char *)line, (unsigned)strlen(line));

	if (m->child && !m->child->exited)
		uv_try_write((uv_stream_t *)&m->child->ipc, &b, 1);
}

static void
master_spawn(struct master *m)
{
	struct child *c = calloc(1, sizeof(*c));
	uv_process_options_t o;
	uv_stdio_container_t stdio[4];
	char *args[12];
	int rc;

	if (c == NULL) {
		log_error("out of memory starting the worker");
		uv_timer_start(&m->restart, restart_cb, 1000, 0);
		return;
	}
	c->m = m;
	buf_init(&c->in, 4096);
	uv_pipe_init(m->loop, &c->ipc, 0);
	c->ipc.data = c;
	c->proc.data = c;
	args[0] = m->exe;
	args[1] = (char *)"--worker";
	args[2] = (char *)"--config";
	args[3] = (char *)m->a->config_path;
	args[4] = (char *)"--server";
	args[5] = (char *)m->a->server;
	args[6] = (char *)"--state-dir";
	args[7] = (char *)m->a->state_dir;
	args[8] = m->restarts ? (char *)"--restarted" : NULL;
	args[9] = NULL;
	/* a level given on the command line wins over the config's */
	if (m->a->log_level) {
		int k = m->restarts ? 9 : 8;

		args[k] = (char *)"--log-level";
		args[k + 1] = (char *)m->a->log_level;
		args[k + 2] = NULL;
	}
	memset(&o, 0, sizeof(o));
	memset(stdio, 0, sizeof(stdio));
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_INHERIT_FD;
	stdio[1].data.fd = 1;
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = 2;
	stdio[DAEMON_IPC_FD].flags =
	    UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
	stdio[DAEMON_IPC_FD].data.stream = (uv_stream_t *)&c->ipc;
	o.file = m->exe;
	o.args = args;
	o.exit_cb = exit_cb;
	o.stdio = stdio;
	o.stdio_count = 4;
	c->started = m->awake;
	if ((rc = uv_spawn(m->loop, &c->proc, &o)) != 0) {
		log_error(
		    "cannot start the worker %s: %s", m->exe, uv_strerror(rc));
		c->open_handles = 2;
		uv_close((uv_handle_t *)&c->proc, child_closed);
		uv_close((uv_handle_t *)&c->ipc, child_closed);
		m->status = 1;
		m->stopping = true;
		master_finish(m);
		return;
	}
	c->open_handles = 2;
	m->child = c;
	m->restarts++;
	uv_read_start((uv_stream_t *)&c->ipc, loop_read_buffer, ipc_read);
	log_info("worker pid %d started", c->proc.pid);
	if (m->died_ms) {
		int64_t now = time_wall_ms();
		json_t *ev = json_pack("{s:s,s:I,s:s,s:I,s:I}", "kind",
		    "restart", "at", (json_int_t)m->died_ms, "cause",
		    m->died_why, "restarted_ms", (json_int_t)now, "down_ms",
		    (json_int_t)(now - m->died_ms));

		m->died_ms = 0;
		if (ev)
			history_add(m->history, ev);
	}
	/* what runs here, for its /v1/services and /health */
	services_push_all(m->services);
}

static void
close_quiet(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void
services_done(void *arg)
{
	struct master *m = arg;

	m->services = NULL;
	history_free(m->history);
	m->history = NULL;
	etcd_free(m->etcd);
}

/*
 * The worker is gone and its lease revoked (or being revoked): close
 * everything once the last revocation landed, the services last.
 */
static void
master_finish(struct master *m)
{
	m->finishing = true;
	if (m->revocations)
		return; /* the last one calls again */
	if (uv_is_closing((uv_handle_t *)&m->ping))
		return;
	notify_stopping();
	uv_timer_stop(&m->ping);
	close_quiet((uv_handle_t *)&m->ping);
	close_quiet((uv_handle_t *)&m->restart);
	close_quiet((uv_handle_t *)&m->stop_grace);
	close_quiet((uv_handle_t *)&m->sigterm);
	close_quiet((uv_handle_t *)&m->sigint);
	close_quiet((uv_handle_t *)&m->sighup);
	services_free(m->services, services_done, m);
}

static void
stop_grace_cb(uv_timer_t *t)
{
	struct master *m = t->data;

	if (m->child && !m->child->exited) {
		log_error("worker pid %d did not stop within %d ms; killing it",
		    m->child->proc.pid, MASTER_STOP_GRACE_MS);
		uv_process_kill(&m->child->proc, SIGKILL);
	}
}

/* Stopping: the post services are down; now the worker. */
static void
posts_stopped(void *arg)
{
	struct master *m = arg;

	if (m->child && !m->child->exited) {
		uv_process_kill(&m->child->proc, SIGTERM);
		uv_timer_start(
		    &m->stop_grace, stop_grace_cb, MASTER_STOP_GRACE_MS, 0);
		return;
	}
	master_finish(m);
}

static void
signal_cb(uv_signal_t *s, int signum)
{
	struct master *m = s->data;

	if (signum == SIGHUP) {
		/* the worker reads the configuration version in effect again */
		if (m->child && !m->child->exited)
			uv_process_kill(&m->child->proc, SIGHUP);
		return;
	}
	if (m->stopping)
		return;
	log_info("%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	m->stopping = true;
	if (m->services == NULL) {
		/* still reading the configuration: end that wait */
		m->conf_over = true;
		return;
	}
	notify_stopping();
	uv_timer_stop(&m->restart);
	/* post services stop before the worker revokes its lease */
	services_revoke_posts(m->services, posts_stopped, m);
}

int
master_main(const struct daemon_args *a)
{
	const struct config_cluster *cl = &a->cfg->cluster;
	struct etcd_opts eo = {.request_timeout_ms = 500};
	struct master m;
	size_t len = sizeof(m.exe);
	int rc;

	memset(&m, 0, sizeof(m));
	m.loop = uv_default_loop();
	m.a = a;
	m.hang_limit = master_hang_limit_ms((unsigned)cl->lease_ttl);
	if ((rc = uv_exepath(m.exe, &len)) != 0) {
		log_error("cannot find my own executable: %s", uv_strerror(rc));
		return 1;
	}
	m.etcd = tls_etcd_new(m.loop, a->cfg, &eo);
	if (m.etcd == NULL) {
		log_error("cannot create the etcd client");
		return 1;
	}
	m.history =
	    history_new(m.loop, m.etcd, a->cfg->cluster.name, a->self->name);
	if (m.history == NULL) {
		log_error("out of memory");
		return 1;
	}
	uv_timer_init(m.loop, &m.ping);
	uv_timer_init(m.loop, &m.restart);
	uv_timer_init(m.loop, &m.stop_grace);
	m.ping.data = m.restart.data = m.stop_grace.data = &m;
	uv_signal_init(m.loop, &m.sigterm);
	uv_signal_init(m.loop, &m.sigint);
	uv_signal_init(m.loop, &m.sighup);
	m.sigterm.data = m.sigint.data = m.sighup.data = &m;
	uv_signal_start(&m.sigterm, signal_cb, SIGTERM);
	uv_signal_start(&m.sigint, signal_cb, SIGINT);
	uv_signal_start(&m.sighup, signal_cb, SIGHUP);
	signal(SIGPIPE, SIG_IGN);
	log_info("understudyd %s starting; hang limit %u ms", US_VERSION,
	    m.hang_limit);
	m.svc_args = *a;
	m.svc_args.cfg = services_config(&m);
	m.svc_args.self = config_server_find(m.svc_args.cfg, a->server);
	if (m.stopping) {
		/* stopped while it read the configuration: nothing runs yet */
		close_quiet((uv_handle_t *)&m.ping);
		close_quiet((uv_handle_t *)&m.restart);
		close_quiet((uv_handle_t *)&m.stop_grace);
		close_quiet((uv_handle_t *)&m.sigterm);
		close_quiet((uv_handle_t *)&m.sigint);
		close_quiet((uv_handle_t *)&m.sighup);
		history_free(m.history);
		etcd_free(m.etcd);
		uv_run(m.loop, UV_RUN_DEFAULT);
		uv_loop_close(m.loop);
		if (m.svc_args.cfg != a->cfg)
			config_free(m.svc_args.cfg);
		log_info("stopped");
		return 0;
	}
	notify_init(m.hang_limit);
	uv_timer_start(&m.ping, ping_cb, MASTER_PING_MS, MASTER_PING_MS);
	if ((m.services = services_new(
		 m.loop, &m.svc_args, m.exe, master_say, &m)) == NULL) {
		log_error("out of memory");
		return 1;
	}
	master_spawn(&m);
	services_start(m.services);
	uv_run(m.loop, UV_RUN_DEFAULT);
	uv_loop_close(m.loop);
	if (m.svc_args.cfg != a->cfg)
		config_free(m.svc_args.cfg);
	log_info("stopped");
	return m.status;
}
