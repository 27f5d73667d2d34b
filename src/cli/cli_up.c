/*
 * understudy up: run a whole cluster on this machine. Where the config
 * says etcd = local, a one-member etcd first (data under the state
 * directory); then an understudyd for every server whose address is
 * local. It prints what listens where, waits for Ctrl-C or SIGTERM, and
 * stops what it started, by PID, servers first and etcd last.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backup/backup.h"
#include "cli.h"

#define UP_READY_MS 20000
#define UP_STOP_MS 5000

struct proc {
	char name[64];
	pid_t pid;
	char log[PATH_MAX];
	char listens[128];
	char health_url[256];
	bool ready;
	bool exited;
	int status;
};

struct up {
	const char *config;
	char config_abs[PATH_MAX];
	const char *state_dir;
	bool as_json;
	struct config *cfg;
	struct proc procs[64];
	size_t n;
	char *ca; /* the config's tls_ca, resolved, or NULL */
	char daemon[PATH_MAX + 16];
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy up [CONFIG] [--state-dir DIR] [--json]\n"
	    "\n"
	    "Runs the cluster of CONFIG (default "
	    "examples/contact-center.conf)\n"
	    "on this machine: a local etcd where the config says etcd = local\n"
	    "(data in DIR/etcd), Kamailio where it says registrar = local "
	    "(its\n"
	    "kamailio.cfg next to CONFIG), then understudyd for every server "
	    "whose\n"
	    "address is on this machine, each logging to DIR/log/NAME.log.\n"
	    "Waits until every server answers /health, prints what listens\n"
	    "where, and runs until Ctrl-C or SIGTERM, then stops everything "
	    "it\n"
	    "started and exits 0.\n"
	    "  --state-dir DIR  where data and logs go (default ./var)\n"
	    "  --json           print the table as one JSON object\n");
}

static int
mkdir_p(const char *path)
{
	char tmp[PATH_MAX];

	str_copy(tmp, path, sizeof(tmp));
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Start argv with stdout and stderr appended to log. */
static pid_t
start(char *const argv[], const char *log)
{
	pid_t pid = fork();
	int fd;

	if (pid != 0)
		return pid;
	/* the child: its own group, so Ctrl-C reaches only understudy up */
	setpgid(0, 0);
	{
		sigset_t none;

		/* the mask survives exec: give the child its signals back */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
	}
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		close(fd);
	}
	execvp(argv[0], argv);
	fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static struct proc *
proc_add(struct up *u, const char *name)
{
	struct proc *p;

	if (u->n >= ARRAY_SIZE(u->procs))
		return NULL;
	p = &u->procs[u->n++];
	memset(p, 0, sizeof(*p));
	str_copy(p->name, name, sizeof(p->name));
	snprintf(p->log, sizeof(p->log), "%s/log/%s.log", u->state_dir, name);
	return p;
}

/* Reap whatever exited; returns how many of ours did. */
static int
reap(struct up *u, bool report)
{
	int status, n = 0;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < u->n; i++) {
			struct proc *p = &u->procs[i];

			if (p->pid != pid)
				continue;
			p->exited = true;
			p->status = status;
			n++;
			if (report)
				fprintf(stderr,
				    "understudy up: %s (pid %d) %s %d; see "
				    "%s\n",
				    p->name, pid,
				    WIFSIGNALED(status) ? "was killed by signal"
							: "exited with status",
				    WIFSIGNALED(status) ? WTERMSIG(status)
							: WEXITSTATUS(status),
				    p->log);
		}
	}
	return n;
}

static bool
etcd_ready(const char *endpoint)
{
	char url[256], err[128];
	json_t *out = NULL;
	long status = 0;

	/* a read through the v3 gateway: the member is up and has quorum */
	snprintf(url, sizeof(url), "%s/v3/maintenance/status", endpoint);
	cli_status_http(
	    "POST", url, NULL, NULL, 300, &status, &out, err, sizeof(err));
	json_decref(out);
	return status == 200;
}

static bool
health_ok(const struct up *u, const char *url)
{
	char err[512];
	json_t *out = NULL;
	long status = 0;

	cli_status_http(
	    "GET", url, NULL, u->ca, 300, &status, &out, err, sizeof(err));
	json_decref(out);
	return status == 200;
}

static bool
etcd_ready_at(const void *client)
{
	return etcd_ready(client);
}

/*
 * Wait until ready(arg) says the process p answers: 0, or -1 when it
 * died or did not answer within UP_READY_MS (said, with its log).
 */
static int
wait_ready(struct up *u, struct proc *p, const char *what,
    bool (*ready)(const void *arg), const void *arg)
{
	for (uint64_t t0 = time_mono_ms(); time_mono_ms() - t0 < UP_READY_MS;) {
		if (ready(arg)) {
			p->ready = true;
			return 0;
		}
		if (reap(u, true) > 0)
			return -1;
		usleep(20000);
	}
	fprintf(stderr,
	    "understudy up: %s did not answer within %d s; see %s\n", what,
	    UP_READY_MS / 1000, p->log);
	return -1;
}

static int
start_etcd(struct up *u)
{
	const struct config_cluster *cl = &u->cfg->cluster;
	char name[96], data[PATH_MAX], client[64], peer[64], initial[160];
	char *argv[32];
	struct proc *p;
	int i = 0;

	/* the member a restore (src/backup/restore.c) puts back */
	backup_etcd_member(u->cfg, name, sizeof(name), peer, sizeof(peer));
	snprintf(data, sizeof(data), "%s/etcd", u->state_dir);
	snprintf(client, sizeof(client), "http://127.0.0.1:%ld",
	    cl->local_etcd_port);
	snprintf(initial, sizeof(initial), "%s=%s", name, peer);
	if ((p = proc_add(u, "etcd")) == NULL)
		return -1;
	snprintf(p->listens, sizeof(p->listens), "%s", client);
	argv[i++] = (char *)"etcd";
	argv[i++] = (char *)"--name";
	argv[i++] = name;
	argv[i++] = (char *)"--data-dir";
	argv[i++] = data;
	argv[i++] = (char *)"--listen-client-urls";
	argv[i++] = client;
	argv[i++] = (char *)"--advertise-client-urls";
	argv[i++] = client;
	argv[i++] = (char *)"--listen-peer-urls";
	argv[i++] = peer;
	argv[i++] = (char *)"--initial-advertise-peer-urls";
	argv[i++] = peer;
	argv[i++] = (char *)"--initial-cluster";
	argv[i++] = initial;
	/* a 1 s lease TTL needs elections well under a second */
	argv[i++] = (char *)"--heartbeat-interval=50";
	argv[i++] = (char *)"--election-timeout=250";
	argv[i++] = (char *)"--log-level=warn";
	argv[i++] = (char *)"--logger=zap";
	argv[i] = NULL;
	fprintf(stderr, "understudy up: starting etcd on %s (data in %s)\n",
	    client, data);
	if ((p->pid = start(argv, p->log)) < 0)
		return -1;
	return wait_ready(u, p, "etcd", etcd_ready_at, client);
}

/* True when something accepts TCP connections on 127.0.0.1:*port. */
static bool
tcp_ready(const void *arg)
{
	long port = *(const long *)arg;
	struct sockaddr_in a = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM, 0), rc;

	if (fd < 0)
		return false;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
	close(fd);
	return rc == 0;
}

/*
 * NATS with JetStream for the desks' channels where the config says
 * messaging = local; its store under the state directory.
 */
static int
start_nats(struct up *u)
{
	long port = u->cfg->cluster.local_nats_port;
	char dir[PATH_MAX], portstr[16], name[96];
	char *argv[16];
	struct proc *p;
	int i = 0;

	snprintf(dir, sizeof(dir), "%s/nats", u->state_dir);
	if (mkdir_p(dir) != 0 || (p = proc_add(u, "nats")) == NULL)
		return -1;
	snprintf(portstr, sizeof(portstr), "%ld", port);
	snprintf(name, sizeof(name), "understudy-%s", u->cfg->cluster.name);
	snprintf(p->listens, sizeof(p->listens), "nats://127.0.0.1:%ld", port);
	argv[i++] = (char *)"nats-server";
	argv[i++] = (char *)"-a";
	argv[i++] = (char *)"127.0.0.1";
	argv[i++] = (char *)"-p";
	argv[i++] = portstr;
	argv[i++] = (char *)"-js";
	argv[i++] = (char *)"-sd";
	argv[i++] = dir;
	argv[i++] = (char *)"-n";
	argv[i++] = name;
	argv[i] = NULL;
	fprintf(stderr, "understudy up: starting NATS on %s (data in %s)\n",
	    p->listens, dir);
	if ((p->pid = start(argv, p->log)) < 0)
		return -1;
	return wait_ready(u, p, "NATS", tcp_ready, &port);
}

/*
 * Kamailio as the registrar where the config says registrar = local, with
 * the kamailio.cfg that sits next to the cluster config.
 */
static int
start_kamailio(struct up *u)
{
	char cfg[PATH_MAX + 16], dir[PATH_MAX], listen[64], *slash;
	char *argv[16];
	struct proc *p;
	int i = 0;

	str_copy(dir, u->config_abs, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	snprintf(cfg, sizeof(cfg), "%s/kamailio.cfg", dir);
	if (access(cfg, R_OK) != 0) {
		fprintf(stderr,
		    "understudy up: registrar = local needs %s (see "
		    "examples/kamailio.cfg)\n",
		    cfg);
		return -1;
	}
	if ((p = proc_add(u, "kamailio")) == NULL)
		return -1;
	snprintf(listen, sizeof(listen), "udp:127.0.0.1:%ld",
	    u->cfg->cluster.local_registrar_port);
	snprintf(p->listens, sizeof(p->listens), "sip:127.0.0.1:%ld",
	    u->cfg->cluster.local_registrar_port);
	snprintf(dir, sizeof(dir), "%s/kamailio", u->state_dir);
	if (mkdir_p(dir) != 0)
		return -1;
	argv[i++] = (char *)"kamailio";
	argv[i++] = (char *)"-f";
	argv[i++] = cfg;
	argv[i++] = (char *)"-DD";
	argv[i++] = (char *)"-E";
	/* shared memory for load: 32 MB runs out at 300 calls/s */
	argv[i++] = (char *)"-m";
	argv[i++] = (char *)"256";
	argv[i++] = (char *)"-M";
	argv[i++] = (char *)"8";
	argv[i++] = (char *)"-Y";
	argv[i++] = dir;
	argv[i++] = (char *)"-l";
	argv[i++] = listen;
	argv[i] = NULL;
	if ((p->pid = start(argv, p->log)) < 0)
		return -1;
	usleep(300000);
	if (reap(u, true) > 0)
		return -1;
	p->ready = true;
	fprintf(stderr, "understudy up: started kamailio on %s (pid %d)\n",
	    p->listens, p->pid);
	return 0;
}

static int
start_servers(struct up *u)
{
	for (size_t i = 0; i < u->cfg->n_servers; i++) {
		const struct config_server *s = &u->cfg->servers[i];
		char state[4096], base[64];
		char *argv[] = {u->daemon, (char *)"--config", u->config_abs,
		    (char *)"--server", s->name, (char *)"--state-dir", state,
		    NULL};

		snprintf(state, sizeof(state), "%s/%s", u->state_dir, s->name);
		struct proc *p;

		if (!config_address_is_local(s->address)) {
			fprintf(stderr,
			    "understudy up: %s is at %s, not on this machine; "
			    "not starting it\n",
			    s->name, s->address);
			continue;
		}
		if ((p = proc_add(u, s->name)) == NULL)
			return -1;
		config_api_url(
		    u->cfg, s->address, s->api_port, base, sizeof(base));
		snprintf(p->listens, sizeof(p->listens), "%s sip %ld", base,
		    s->sip_port);
		snprintf(
		    p->health_url, sizeof(p->health_url), "%s/health", base);
		if ((p->pid = start(argv, p->log)) < 0)
			return -1;
		fprintf(stderr, "understudy up: started %s (pid %d)\n", s->name,
		    p->pid);
	}
	return 0;
}

static int
wait_healthy(struct up *u)
{
	uint64_t t0 = time_mono_ms();
	size_t waiting;

	do {
		waiting = 0;
		for (size_t i = 0; i < u->n; i++) {
			struct proc *p = &u->procs[i];

			if (p->ready || p->exited)
				continue;
			if (health_ok(u, p->health_url)) {
				p->ready = true;
				fprintf(stderr,
				    "understudy up: %s is healthy (%.1f s)\n",
				    p->name,
				    (double)(time_mono_ms() - t0) / 1000);
			} else {
				waiting++;
			}
		}
		if (reap(u, true) > 0)
			return -1;
		if (waiting)
			usleep(50000);
	} while (waiting && time_mono_ms() - t0 < UP_READY_MS);
	for (size_t i = 0; i < u->n; i++)
		if (!u->procs[i].ready) {
			fprintf(stderr,
			    "understudy up: %s is not healthy after %d s; see "
			    "%s\n",
			    u->procs[i].name, UP_READY_MS / 1000,
			    u->procs[i].log);
			return -1;
		}
	return 0;
}

/*
 * The configuration the servers run comes from etcd: after the first
 * run, an edited file changes nothing until it is applied. Say so.
 */
static void
config_notice(struct up *u)
{
	char url[600], err[512], *ca;
	json_t *st = NULL, *c;
	long status = 0;
	const char *token = u->cfg->cluster.read_token
	    ? u->cfg->cluster.read_token
	    : u->cfg->cluster.admin_token;

	for (size_t i = 0; i < u->n && st == NULL; i++) {
		const char *h = u->procs[i].health_url;
		size_t n = h ? strlen(h) : 0;

		if (n < 7 || strcmp(h + n - 7, "/health") != 0 ||
		    !u->procs[i].ready)
			continue;
		snprintf(url, sizeof(url), "%.*s/v1/status", (int)(n - 7), h);
		ca = config_file_path(u->cfg, u->cfg->cluster.tls_ca);
		if (cli_status_http("GET", url, token, ca, 3000, &status, &st,
			err, sizeof(err)) != 0 ||
		    status != 200) {
			json_decref(st);
			st = NULL;
		}
		free(ca);
	}
	if ((c = json_object_get(st, "config")) != NULL) {
		long long v = json_integer_value(json_object_get(c, "version"));

		printf("\nconfiguration version %lld, from etcd\n", v);
		if (json_is_true(json_object_get(c, "local_file_differs")))
			printf("warning: %s differs from version %lld, which "
			       "the servers run; `understudy config apply %s` "
			       "makes it the cluster's\n",
			    u->config, v, u->config);
	}
	json_decref(st);
}

/* Where the web console is: every server serves it at / */
static void
print_console(const struct up *u)
{
	bool any = false;

	for (size_t i = 0; i < u->n; i++) {
		const char *h = u->procs[i].health_url;
		size_t n = strlen(h);

		if (n < 7 || strcmp(h + n - 7, "/health") != 0)
			continue;
		printf(
		    "%s%.*s/", any ? "  " : "\nweb console: ", (int)(n - 7), h);
		any = true;
	}
	if (any)
		printf("  (any server's; docs/console.md)\n");
}

static void
print_table(struct up *u)
{
	if (u->as_json) {
		json_t *arr = json_array(), *o;
		char *s;

		for (size_t i = 0; i < u->n; i++)
			json_array_append_new(arr,
			    json_pack("{s:s,s:i,s:s,s:b,s:s}", "name",
				u->procs[i].name, "pid", (int)u->procs[i].pid,
				"listens", u->procs[i].listens, "healthy",
				u->procs[i].ready, "log", u->procs[i].log));
		o = json_pack("{s:s,s:s,s:o}", "cluster", u->cfg->cluster.name,
		    "config", u->config, "processes", arr);
		s = json_dumps(o, JSON_COMPACT);
		printf("%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		printf(
		    "cluster %s from %s\n\n", u->cfg->cluster.name, u->config);
		printf("%-8s %-8s %-36s %-8s %s\n", "WHAT", "PID", "LISTENS",
		    "HEALTH", "LOG");
		for (size_t i = 0; i < u->n; i++)
			printf("%-8s %-8d %-36s %-8s %s\n", u->procs[i].name,
			    (int)u->procs[i].pid, u->procs[i].listens,
			    u->procs[i].ready ? "ok" : "-", u->procs[i].log);
		print_console(u);
		config_notice(u);
		printf("\nPress Ctrl-C to stop.\n");
	}
	fflush(stdout);
}

/* etcd and Kamailio: stopped after the servers that use them */
static bool
is_infra(const char *name)
{
	return strcmp(name, "etcd") == 0 || strcmp(name, "kamailio") == 0;
}

/* Stop our processes: servers first, etcd last, each within a bound. */
static void
stop_all(struct up *u)
{
	for (int pass = 0; pass < 2; pass++) {
		bool any = false;
		uint64_t t0;

		for (size_t i = 0; i < u->n; i++) {
			struct proc *p = &u->procs[i];
			bool is_etcd = is_infra(p->name);

			if (p->exited || p->pid <= 0 || is_etcd != (pass == 1))
				continue;
			kill(p->pid, SIGTERM);
			any = true;
		}
		if (!any)
			continue;
		for (t0 = time_mono_ms(); time_mono_ms() - t0 < UP_STOP_MS;) {
			bool left = false;

			reap(u, false);
			for (size_t i = 0; i < u->n; i++)
				left |= !u->procs[i].exited &&
				    u->procs[i].pid > 0 &&
				    is_infra(u->procs[i].name) == (pass == 1);
			if (!left)
				break;
			usleep(20000);
		}
		for (size_t i = 0; i < u->n; i++) {
			struct proc *p = &u->procs[i];

			if (p->exited || p->pid <= 0 ||
			    is_infra(p->name) != (pass == 1))
				continue;
			fprintf(stderr,
			    "understudy up: %s (pid %d) did not stop; killing "
			    "it\n",
			    p->name, p->pid);
			kill(p->pid, SIGKILL);
			waitpid(p->pid, NULL, 0);
			p->exited = true;
		}
	}
}

static void
find_daemon(struct up *u)
{
	char self[PATH_MAX - 16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	str_copy(u->daemon, "understudyd", sizeof(u->daemon));
	if (n <= 0)
		return;
	self[n] = '\0';
	if ((slash = strrchr(self, '/')) == NULL)
		return;
	*slash = '\0';
	snprintf(u->daemon, sizeof(u->daemon), "%s/understudyd", self);
	if (access(u->daemon, X_OK) != 0)
		str_copy(u->daemon, "understudyd", sizeof(u->daemon));
}

int
cli_up(int argc, char **argv)
{
	struct config_diags d = {0};
	struct up u;
	sigset_t set;
	int rc = 1, sig;

	memset(&u, 0, sizeof(u));
	u.config = "examples/contact-center.conf";
	u.state_dir = "var";
	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc)
			u.state_dir = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			u.as_json = true;
		else if (argv[i][0] != '-')
			u.config = argv[i];
		else {
			usage(stderr);
			return 2;
		}
	}
	u.cfg = config_load(u.config, &d);
	config_diags_print(&d, stderr);
	if (u.cfg == NULL || d.errors) {
		fprintf(stderr,
		    "understudy up: %s has errors; nothing started\n",
		    u.config);
		goto out;
	}
	if (realpath(u.config, u.config_abs) == NULL) {
		fprintf(stderr, "understudy up: %s: %s\n", u.config,
		    strerror(errno));
		goto out;
	}
	{
		char logdir[PATH_MAX];

		snprintf(logdir, sizeof(logdir), "%s/log", u.state_dir);
		if (mkdir_p(logdir) != 0) {
			fprintf(stderr, "understudy up: cannot create %s: %s\n",
			    logdir, strerror(errno));
			goto out;
		}
	}
	find_daemon(&u);
	u.ca = config_file_path(u.cfg, u.cfg->cluster.tls_ca);
	/* signals are taken synchronously below, never by a handler */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (u.cfg->cluster.etcd_local && start_etcd(&u) != 0)
		goto stop;
	if (u.cfg->cluster.registrar &&
	    strcmp(u.cfg->cluster.registrar, "local") == 0 &&
	    start_kamailio(&u) != 0)
		goto stop;
	if (u.cfg->cluster.messaging_local && start_nats(&u) != 0)
		goto stop;
	if (start_servers(&u) != 0 || wait_healthy(&u) != 0)
		goto stop;
	print_table(&u);
	for (;;) {
		struct timespec ts = {1, 0};

		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGINT || sig == SIGTERM) {
			fprintf(stderr, "\nunderstudy up: stopping\n");
			break;
		}
		reap(&u, true);
	}
	rc = 0;
stop:
	stop_all(&u);
	if (rc == 0)
		fprintf(stderr, "understudy up: everything stopped\n");
out:
	free(u.ca);
	config_free(u.cfg);
	config_diags_free(&d);
	return rc;
}
