/*
 * The worker: one libuv loop that holds the lease, the membership key
 * and the HTTP API, and answers the master's pings.
 *
 * Stopping (SIGTERM, SIGINT, or the master's pipe closing) revokes the
 * lease first, so the cluster sees the server go at once, then closes
 * the HTTP server and the etcd client and lets the loop run dry.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "agent/agent.h"
#include "api/api.h"
#include "backup/backup.h"
#include "calls/calls.h"
#include "check/check.h"
#include "coord/coord.h"
#include "config/diff.h"
#include "config/versions.h"
#include "daemon.h"
#include "desks/desks.h"

/*
 * Files the worker keeps for what is not a desk's or a client's HTTP
 * connection (etcd, SQLite, SIP, NATS, services, logs), besides one RTP
 * socket per media port it may hold.
 */
#define WORKER_FILES_KEPT 2000
/* With a desk_port: the API's connections at most (the desks', the rest) */
#define WORKER_API_CONNS 2000
/* A desk connection's memory on desk_port (MHD's default: 32 KiB) */
#define WORKER_DESK_CONN_MEMORY (8 * 1024)

enum {
	TLS_API_CERT,
	TLS_API_KEY,
	TLS_NATS_CA,
	TLS_NATS_CERT,
	TLS_NATS_KEY,
	TLS_FILES
};

struct worker {
	uv_loop_t *loop;
	const struct daemon_args *a;
	struct etcd *etcd;
	struct versions *versions;
	struct versions_op *following; /* reading a new version */
	struct config **cfgs; /* every version run; the last is current */
	size_t n_cfgs;
	uv_signal_t sighup;
	uv_timer_t config_retry; /* a version that could not be read */
	bool ready; /* its parts are built */
	struct lease *lease;
	struct members *members;
	struct agent *agent;
	struct calls *calls;
	struct store *store;
	struct records *records;
	struct desks *desks;
	struct sip *sip;
	struct backups *backups;
	struct check_sched *check;
	struct http *http;
	struct http *desk_http; /* desk_port's listener, or NULL */
	struct api_ctx api;
	uv_pipe_t ipc;
	bool ipc_open;
	struct buf ipc_in;
	char reported[NOTIFY_STATUS_MAX + 1]; /* the status the master has */
	uv_signal_t sigterm, sigint;
	uv_timer_t grants; /* tells the master which posts it may run */
	json_t *services; /* this server's, as the master tells: name -> {} */
	bool stopping;
	int status;
	char *tls[TLS_FILES]; /* PEM text while the worker starts */
};

/*
 * The TLS files the worker hands on, read again at each start (a
 * renewed certificate takes effect when the worker restarts). The
 * master checked them; one that went bad since stops the worker.
 */
static int
worker_tls_read(struct worker *w)
{
	const struct config_cluster *c = &w->a->cfg->cluster;
	const char *v[TLS_FILES] = {c->tls_cert, c->tls_key, c->messaging_ca,
	    c->messaging_cert, c->messaging_key};
	char err[512];

	for (int i = 0; i < TLS_FILES; i++) {
		if (v[i] == NULL)
			continue;
		if ((w->tls[i] = tls_read(w->a->cfg, v[i], err, sizeof(err))) ==
		    NULL) {
			log_error("%s", err);
			return -1;
		}
	}
	return 0;
}

static void
worker_tls_free(struct worker *w)
{
	for (int i = 0; i < TLS_FILES; i++) {
		if (w->tls[i])
			explicit_bzero(w->tls[i], strlen(w->tls[i]));
		free(w->tls[i]);
		w->tls[i] = NULL;
	}
}

static void worker_stop(struct worker *w, const char *why);

static void
ipc_send(struct worker *w, const char *line)
{
	uv_buf_t b = uv_buf_init((char *)line, (unsigned)strlen(line));

	if (w->ipc_open)
		uv_try_write((uv_stream_t *)&w->ipc, &b, 1);
}

/* ---- services (run by the master; src/daemon/services.c) ---- */

/* services/<server>/<name> on the lease: every server shows it */
static void
service_publish(struct worker *w, const char *name, json_t *o)
{
	int64_t lease = w->lease ? lease_id(w->lease) : 0;
	char *key, *value;

	if (lease == 0 || w->agent == NULL || w->stopping)
		return;
	key = agent_key(w->agent, "services/%s/%s", w->a->self->name, name);
	value = json_dumps(o, JSON_COMPACT);
	if (key && value)
		etcd_kv_put(
		    w->etcd, key, value, strlen(value), lease, NULL, NULL);
	free(key);
	free(value);
}

static void
services_publish_all(struct worker *w)
{
	const char *name;
	json_t *o;

	json_object_foreach (w->services, name, o)
		service_publish(w, name, o);
}

/*
 * Every 100 ms, and so at every lease renewal: each post owned here
 * with its epoch and this server's fencing deadline (monotonic ms), for
 * the post services. A post not in the list is not granted any more; its
 * services stop by the last deadline told.
 */
static void
grants_cb(uv_timer_t *t)
{
	struct worker *w = t->data;
	const struct config *cfg = w->cfgs[w->n_cfgs - 1];
	struct agent_post *p;
	int64_t epoch;
	char line[128];

	if (w->stopping || w->agent == NULL)
		return;
	for (size_t i = 0; (p = agent_post_at(w->agent, i)) != NULL; i++) {
		bool followed = false;

		for (size_t j = 0; j < cfg->n_services; j++)
			if (cfg->services[j].scope == CONFIG_SCOPE_POST &&
			    strcmp(cfg->services[j].post, p->home->name) == 0)
				followed = true;
		if (!followed || !agent_owns(w->agent, p, &epoch))
			continue;
		snprintf(line, sizeof(line),
		    "grant %s %" PRId64 " %" PRIu64 "\n", p->home->name, epoch,
		    time_mono_ms() + (uint64_t)lease_remaining_ms(w->lease));
		ipc_send(w, line);
	}
}

static void
api_services_say(const char *line, void *arg)
{
	ipc_send(arg, line);
}

/* The agent is about to hand a post over: its services stop first. */
static void
post_release(struct agent_post *p, void *arg)
{
	struct worker *w = arg;
	char line[64];

	snprintf(line, sizeof(line), "release %s\n", p->home->name);
	ipc_send(w, line);
}

/* A line from the master about the services. */
static void
services_ipc(struct worker *w, const char *line)
{
	if (strncmp(line, "stopped ", 8) == 0) {
		if (w->agent)
			agent_post_released(w->agent, line + 8);
	} else if (strncmp(line, "svc ", 4) == 0) {
		const char *sp = strchr(line + 4, ' ');
		char name[CONFIG_NAME_MAX + 1];
		json_t *o;

		if (sp == NULL || (size_t)(sp - line - 4) >= sizeof(name))
			return;
		str_copy(name, line + 4, (size_t)(sp - line - 4) + 1);
		if ((o = json_loads(sp + 1, 0, NULL)) == NULL)
			return;
		json_object_set(w->services, name, o);
		service_publish(w, name, o);
		json_decref(o);
	}
}

static void
report_send(void *arg, const char *line)
{
	ipc_send(arg, line);
}

static void
on_acquired(struct lease *l, int64_t id, void *arg)
{
	struct worker *w = arg;
	char line[64];

	(void)l;
	history_unfenced(agent_history(w->agent), time_wall_ms());
	snprintf(line, sizeof(line), "lease %" PRIx64 "\n", (uint64_t)id);
	/* the master must know it before anything else is written on it */
	ipc_send(w, line);
	members_register(w->members, id);
	agent_lease_changed(w->agent);
	desks_lease_changed(w->desks);
	services_publish_all(w);
}

static void
on_lost(struct lease *l, const char *why, void *arg)
{
	struct worker *w = arg;

	(void)l;
	log_error("not serving: %s", why);
	if (!w->stopping)
		history_fenced(agent_history(w->agent), time_wall_ms(), why);
	members_register(w->members, 0);
	calls_lease_lost(w->calls);
	desks_lease_lost(w->desks, why);
	agent_lease_changed(w->agent);
	ipc_send(w, "lease 0\n");
}

static void
ipc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct worker *w = s->data;
	char *line;
	size_t len;

	if (n < 0) {
		worker_stop(w, "the master is gone");
		return;
	}
	if (buf_append(&w->ipc_in, b->base, (size_t)n) != 0) {
		buf_reset(&w->ipc_in);
		return;
	}
	while (buf_take_line(&w->ipc_in, &line, &len) == 1) {
		if (strcmp(line, "ping") == 0) {
			ipc_send(w, "pong\n");
			/* checked each ping: a change reaches systemd at once
			 */
			notify_worker_report(&w->api, w->ready, w->reported,
			    sizeof(w->reported), report_send, w);
		} else {
			services_ipc(w, line);
		}
		free(line);
	}
}

static void
signal_cb(uv_signal_t *s, int signum)
{
	worker_stop(s->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void
http_closed(void *arg)
{
	(void)arg;
}

static void
revoked(void *arg)
{
	struct worker *w = arg;

	events_free(w->api.events);
	w->api.events = NULL;
	links_free(w->api.links);
	w->api.links = NULL;
	check_sched_free(w->check);
	w->check = NULL;
	w->api.check = NULL;
	sip_free(w->sip);
	w->sip = NULL;
	calls_free(w->calls);
	w->calls = NULL;
	records_free(w->records);
	w->records = NULL;
	backups_free(w->backups, NULL, NULL);
	w->backups = NULL;
	desks_free(w->desks);
	w->desks = NULL;
	store_close(w->store);
	w->store = NULL;
	agent_free(w->agent);
	w->agent = NULL;
	members_free(w->members);
	w->members = NULL;
	lease_free(w->lease);
	w->lease = NULL;
	versions_free(w->versions);
	w->versions = NULL;
	etcd_free(w->etcd);
	w->etcd = NULL;
}

static void
gone_written(const struct etcd_res *res, void *arg)
{
	struct worker *w = arg;

	(void)res;
	lease_revoke(w->lease, revoked, w);
}

static void
worker_stop(struct worker *w, const char *why)
{
	if (w->stopping)
		return;
	w->stopping = true;
	if (!w->ready) {
		/* still waiting for its configuration: nothing to undo */
		log_info("stopping: %s", why);
		if (w->ipc_open) {
			w->ipc_open = false;
			uv_close((uv_handle_t *)&w->ipc, NULL);
		}
		return;
	}
	w->api.stopping = true;
	log_info("stopping: %s", why);
	uv_close((uv_handle_t *)&w->sigterm, NULL);
	uv_close((uv_handle_t *)&w->sigint, NULL);
	uv_close((uv_handle_t *)&w->sighup, NULL);
	uv_close((uv_handle_t *)&w->config_retry, NULL);
	uv_close((uv_handle_t *)&w->grants, NULL);
	versions_cancel(w->following);
	w->following = NULL;
	if (w->ipc_open) {
		w->ipc_open = false;
		uv_close((uv_handle_t *)&w->ipc, NULL);
	}
	http_free(w->http, http_closed, w);
	w->http = NULL;
	http_free(w->desk_http, http_closed, w);
	w->desk_http = w->api.desk_http = NULL;
	/* the key goes with the lease; do not write it back */
	members_register(w->members, 0);
	/*
	 * ends that wait for their txn go now, not at the end of their
	 * window (one txn; more follow as it is answered, if the lease
	 * lasts that long)
	 */
	calls_ends_now(w->calls);
	/* calls still held here end with it: say so before the lease goes */
	if (lease_id(w->lease) == 0 ||
	    agent_write_gone(w->etcd, w->a->cfg->cluster.name, w->a->self->name,
		lease_id(w->lease), "stopped", gone_written, w) == NULL)
		lease_revoke(w->lease, revoked, w);
}

/*
 * The API's listener, and desk_port's if the server has one: desks
 * there get 8 KiB a connection (they hold theirs for the long poll),
 * the API keeps libmicrohttpd's 32 KiB (browsers' cookies) and at most
 * WORKER_API_CONNS connections, the desks the rest of the files.
 */
static int
listen_http(struct worker *w, const struct daemon_args *a)
{
	unsigned kept = WORKER_FILES_KEPT + (unsigned)a->self->max_media_ports;
	struct http_listen api = {.address = a->self->address,
	    .port = (unsigned)a->self->api_port,
	    .body_max = HTTP_BODY_MAX,
	    .files_kept = kept,
	    .tls_cert = w->tls[TLS_API_CERT],
	    .tls_key = w->tls[TLS_API_KEY],
	    .name = "http"};
	struct http_listen desks = api;

	if (a->self->desk_port) {
		api.conns_max = WORKER_API_CONNS;
		desks.port = (unsigned)a->self->desk_port;
		desks.files_kept = kept + WORKER_API_CONNS;
		desks.conn_memory = WORKER_DESK_CONN_MEMORY;
		desks.name = "http (desks)";
	}
	if ((w->http = http_new(w->loop, &api, routes_dispatch, &w->api)) ==
	    NULL)
		return -1;
	if (a->self->desk_port &&
	    (w->desk_http = w->api.desk_http = http_new(
		 w->loop, &desks, routes_dispatch_desks, &w->api)) == NULL)
		return -1;
	return 0;
}

/* ---- a new configuration version while running ---- */

/* What of a diff this server cannot run without a restart. */
static json_t *
restart_reasons(const json_t *diff, const char *self)
{
	json_t *out = json_array(), *r;
	size_t i;

	json_array_foreach (json_object_get(diff, "restart"), i, r) {
		const char *who =
		    json_string_value(json_object_get(r, "server"));

		if (who &&
		    (strcmp(who, self) == 0 ||
			strcmp(who, "every server") == 0))
			json_array_append_new(out,
			    json_string(json_string_value(
				json_object_get(r, "because"))));
	}
	return out;
}

static void
local_file_check(struct worker *w, const char *sha)
{
	char err[512], mine[65];
	size_t len;
	char *text = tls_read_path(w->a->config_path, &len, err, sizeof(err));

	if (text == NULL)
		return;
	versions_sha256(text, mine);
	w->api.config_differs = sha == NULL || strcmp(sha, mine) != 0;
	free(text);
}

static void config_changed(int64_t n, void *arg);

static void
config_retry_cb(uv_timer_t *t)
{
	struct worker *w = t->data;

	config_changed(w->api.config_in_effect, w);
}

static void
config_got(const struct versions_res *r, void *arg)
{
	struct worker *w = arg;
	const struct config *cur = w->cfgs[w->n_cfgs - 1];
	const char *text =
	    json_string_value(json_object_get(r->version, "text"));
	int64_t n = json_integer_value(json_object_get(r->version, "version"));
	struct config_diags d = {0};
	struct config *next, **all;
	const struct config_server *self;
	json_t *diff = NULL, *why = NULL;

	w->following = NULL;
	if (r->err) {
		log_warn("config: reading the version in effect: %s; trying "
			 "again",
		    r->message);
		uv_timer_start(&w->config_retry, config_retry_cb, 1000, 0);
		return;
	}
	w->api.config_in_effect = n;
	if (n == cur->version || text == NULL) {
		json_decref(w->api.config_restart);
		w->api.config_restart = NULL;
		return;
	}
	next = config_parse(w->a->config_path, text, strlen(text), &d);
	if (next == NULL || d.errors) {
		log_error("config: version %" PRId64
			  " does not parse with this release; running version "
			  "%" PRId64,
		    n, cur->version);
		goto out;
	}
	next->version = n;
	diff = config_diff(cur, next);
	why = diff ? restart_reasons(diff, w->a->server) : NULL;
	self = config_server_find(next, w->a->server);
	if (why == NULL || self == NULL || json_array_size(why) > 0 ||
	    agent_set_config(w->agent, next) != 0) {
		if (why && self && json_array_size(why) == 0)
			json_array_append_new(why,
			    json_string("servers, spares or media ports "
					"changed"));
		else if (self == NULL)
			json_array_append_new(
			    why, json_string("this server is not in it"));
		log_warn("config: version %" PRId64
			 " needs a restart of this server (%s); running "
			 "version %" PRId64 " until then",
		    n,
		    json_string_value(json_array_get(why, 0))
			? json_string_value(json_array_get(why, 0))
			: "?",
		    cur->version);
		json_decref(w->api.config_restart);
		w->api.config_restart = why;
		why = NULL;
		goto out;
	}
	if ((all = realloc(w->cfgs, (w->n_cfgs + 1) * sizeof(*all))) == NULL) {
		/* cannot keep it: the agent runs it already, so must we */
		log_error("config: out of memory keeping version %" PRId64, n);
		abort();
	}
	w->cfgs = all;
	w->cfgs[w->n_cfgs++] = next;
	desks_set_config(w->desks, next);
	records_set_config(w->records, next);
	backups_set_config(w->backups, next);
	check_sched_set_config(w->check, next);
	if (sip_set_config(w->sip, next, self) != 0)
		log_error("config: the route points of version %" PRId64
			  " are registered at the next restart (too many "
			  "versions changed them since this one started)",
		    n);
	w->api.cfg = next;
	w->api.self = self;
	json_decref(w->api.config_restart);
	w->api.config_restart = NULL;
	local_file_check(
	    w, json_string_value(json_object_get(r->version, "sha256")));
	log_info("config: running version %" PRId64 " from now on (%s)", n,
	    json_string_value(json_object_get(diff, "summary")));
	if (w->a->log_level == NULL)
		log_set_level((enum log_level)next->cluster.log_level);
	next = NULL; /* kept in w->cfgs */
out:
	config_free(next);
	config_diags_free(&d);
	json_decref(diff);
	json_decref(why);
}

static void
config_changed(int64_t n, void *arg)
{
	struct worker *w = arg;

	if (w->stopping)
		return;
	w->api.config_in_effect = n;
	if (n == w->cfgs[w->n_cfgs - 1]->version) {
		/* back to the version it runs (a rollback): nothing waits */
		json_decref(w->api.config_restart);
		w->api.config_restart = NULL;
		return;
	}
	versions_cancel(w->following);
	w->following = versions_get(w->versions, n, config_got, w);
}

static void
sighup_cb(uv_signal_t *h, int signum)
{
	struct worker *w = h->data;

	(void)signum;
	log_info("SIGHUP: reading the configuration version in effect");
	versions_cancel(w->following);
	w->following = versions_current(w->versions, NULL, NULL, config_got, w);
}

int
worker_main(const struct daemon_args *a)
{
	const struct config_cluster *cl = &a->cfg->cluster;
	struct etcd_opts eo;
	struct stream_config sc = {0};
	struct daemon_args eff;
	struct lease_cbs cbs = {on_acquired, on_lost};
	struct worker w;
	char err[512];

	memset(&w, 0, sizeof(w));
	memset(&eo, 0, sizeof(eo));
	w.loop = uv_default_loop();
	w.a = a;
	signal(SIGPIPE, SIG_IGN);
	/* a renewal must be answered, or given up, well within the TTL */
	eo.request_timeout_ms = (unsigned)cl->lease_ttl * 1000 / 4;
	if (eo.request_timeout_ms < 200)
		eo.request_timeout_ms = 200;
	/*
	 * backups, checks, link probes, logins and forwards share the
	 * thread pool: more than libuv's 4, so that one slow backup part
	 * does not hold logins up. The master's pipe is not for children.
	 */
	setenv("UV_THREADPOOL_SIZE", "8", 0);
	fcntl(DAEMON_IPC_FD, F_SETFD, FD_CLOEXEC);
	buf_init(&w.ipc_in, 4096);
	w.services = json_object();
	w.api.services = w.services;
	w.api.services_say = api_services_say;
	w.api.services_arg = &w;
	if (uv_pipe_init(w.loop, &w.ipc, 0) == 0 &&
	    uv_pipe_open(&w.ipc, DAEMON_IPC_FD) == 0) {
		w.ipc_open = true;
		w.ipc.data = &w;
		uv_read_start(
		    (uv_stream_t *)&w.ipc, loop_read_buffer, ipc_read);
	} else {
		log_warn("no master pipe on fd %d; running without a master",
		    DAEMON_IPC_FD);
		uv_close((uv_handle_t *)&w.ipc, NULL);
	}
	w.etcd = tls_etcd_new(w.loop, a->cfg, &eo);
	if (w.etcd == NULL ||
	    (w.versions = versions_new(w.etcd, cl->name)) == NULL) {
		log_error("cannot create the etcd client");
		return 1;
	}
	/* from here on, the cluster's version in effect, not the file */
	eff = *a;
	eff.cfg = conf_effective(
	    w.loop, w.versions, a, &w.stopping, &w.api.config_differs, false);
	if (eff.cfg == NULL) {
		versions_free(w.versions);
		etcd_free(w.etcd);
		if (w.ipc_open)
			uv_close((uv_handle_t *)&w.ipc, NULL);
		uv_run(w.loop, UV_RUN_DEFAULT);
		buf_free(&w.ipc_in);
		return w.stopping ? 0 : 2;
	}
	eff.self = config_server_find(eff.cfg, a->server);
	if (a->log_level == NULL)
		log_set_level((enum log_level)eff.cfg->cluster.log_level);
	a = w.a = &eff;
	cl = &a->cfg->cluster;
	serve_sweep(a->state_dir);
	if ((w.store = store_open(a->state_dir, err, sizeof(err))) == NULL) {
		log_error("cannot open the database: %s", err);
		etcd_free(w.etcd);
		return 1;
	}
	log_info("database %s", store_path(w.store));
	w.members = members_new(w.etcd, a->cfg, a->self->name, NULL, &w);
	w.api.cfg = a->cfg;
	w.api.self = a->self;
	w.api.state_dir = a->state_dir;
	w.api.db_path = store_path(w.store);
	if (worker_tls_read(&w) == 0 && listen_http(&w, a) != 0) {
		http_free(w.http, http_closed, &w);
		w.http = NULL;
	}
	if (w.members == NULL || w.http == NULL) {
		worker_tls_free(&w);
		members_free(w.members);
		etcd_free(w.etcd);
		if (w.ipc_open)
			uv_close((uv_handle_t *)&w.ipc, NULL);
		uv_run(w.loop, UV_RUN_DEFAULT);
		uv_loop_close(w.loop);
		buf_free(&w.ipc_in);
		return 1;
	}
	w.lease = lease_new(w.loop, w.etcd, (unsigned)cl->lease_ttl, &cbs, &w);
	w.agent = agent_new(
	    w.loop, w.etcd, a->cfg, a->self, w.lease, w.members, a->restarted);
	sc.cluster = cl->name;
	sc.server = a->self->name;
	sc.urls = (const char *const *)cl->messaging.v;
	sc.n_urls = (int)cl->messaging.n;
	sc.ca = w.tls[TLS_NATS_CA];
	sc.cert = w.tls[TLS_NATS_CERT];
	sc.key = w.tls[TLS_NATS_KEY];
	sc.token = cl->messaging_token;
	sc.user = cl->messaging_user;
	sc.password = cl->messaging_password;
	sc.retention_s = cl->record_retention;
	w.records = w.agent ? records_new(w.loop, w.agent, w.store, &sc) : NULL;
	w.calls = w.records ? calls_new(w.loop, w.agent, w.records) : NULL;
	w.desks = w.agent ? desks_new(w.loop, w.agent, w.store) : NULL;
	if (w.lease == NULL || w.agent == NULL || w.calls == NULL ||
	    w.desks == NULL ||
	    desks_messaging_tls(w.desks, w.tls[TLS_NATS_CA],
		w.tls[TLS_NATS_CERT], w.tls[TLS_NATS_KEY]) != 0) {
		log_error("out of memory starting the worker");
		return 1;
	}
	worker_tls_free(&w);
	w.sip = sip_new(w.loop, w.agent, w.calls, a->cfg, a->self);
	if (w.sip == NULL)
		return 1; /* logged; the master restarts, then gives up */
	w.api.lease = w.lease;
	w.api.members = w.members;
	w.api.agent = w.agent;
	w.api.calls = w.calls;
	w.api.records = w.records;
	w.api.desks = w.desks;
	w.api.sip = w.sip;
	w.backups = backups_new(w.loop, w.etcd, w.agent, w.members, a->cfg,
	    a->self->name, a->state_dir);
	if (w.backups == NULL) {
		log_error("out of memory starting the worker");
		return 1;
	}
	w.api.backups = w.backups;
	{
		char *ca = config_file_path(a->cfg, cl->tls_ca);

		w.check = check_sched_new(w.loop, w.agent, w.etcd, ca);
		free(ca);
	}
	if (w.check == NULL) {
		log_error("out of memory starting the worker");
		return 1;
	}
	w.api.check = w.check;
	if ((w.api.links = links_new(w.loop, &w.api)) == NULL ||
	    (w.api.events = events_new(w.loop, &w.api)) == NULL) {
		log_error("out of memory starting the worker");
		return 1;
	}
	uv_signal_init(w.loop, &w.sigterm);
	uv_signal_init(w.loop, &w.sigint);
	w.sigterm.data = w.sigint.data = &w;
	uv_signal_start(&w.sigterm, signal_cb, SIGTERM);
	uv_signal_start(&w.sigint, signal_cb, SIGINT);
	uv_signal_init(w.loop, &w.sighup);
	w.sighup.data = &w;
	uv_timer_init(w.loop, &w.config_retry);
	w.config_retry.data = &w;
	uv_signal_start(&w.sighup, sighup_cb, SIGHUP);
	w.api.versions = w.versions;
	w.api.config_in_effect = a->cfg->version;
	if ((w.cfgs = calloc(1, sizeof(*w.cfgs))) == NULL ||
	    versions_watch(w.versions, config_changed, &w) != 0) {
		log_error("out of memory starting the worker");
		return 1;
	}
	w.cfgs[w.n_cfgs++] = eff.cfg;
	agent_on_release(w.agent, post_release, &w);
	uv_timer_init(w.loop, &w.grants);
	w.grants.data = &w;
	uv_timer_start(&w.grants, grants_cb, 0, 100);
	w.ready = true;
	log_info("serving HTTP on %s:%ld; etcd %s", a->self->address,
	    a->self->api_port, etcd_endpoint(w.etcd));
	uv_run(w.loop, UV_RUN_DEFAULT);
	uv_loop_close(w.loop);
	buf_free(&w.ipc_in);
	log_info("stopped");
	json_decref(w.api.config_restart);
	json_decref(w.services);
	for (size_t i = 0; i < w.n_cfgs; i++)
		config_free(w.cfgs[i]);
	if (w.n_cfgs == 0)
		config_free(eff.cfg);
	free(w.cfgs);
	return w.status;
}
