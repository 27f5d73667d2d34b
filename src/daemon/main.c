/* understudyd: load and check the config, then run the master or worker. */
#include <getopt.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <sodium.h>

#include "calls/calls.h"
#include "daemon.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudyd --config FILE --server NAME [--state-dir DIR]\n"
	    "                   [--log-level LEVEL] [--log-format FORMAT]\n"
	    "\n"
	    "Runs one understudy server: a master process that starts the\n"
	    "worker, restarts it when it dies and revokes its lease at once "
	    "so\n"
	    "that its cover takes over.\n"
	    "\n"
	    "  -c, --config FILE      the cluster configuration (INI)\n"
	    "  -s, --server NAME      which [server NAME] of it this is\n"
	    "  -d, --state-dir DIR    where its database lives (default\n"
	    "                         /var/lib/understudy/NAME)\n"
	    "  -l, --log-level LEVEL  debug, info (default), warn or error\n"
	    "  -f, --log-format FORMAT\n"
	    "                         plain (time first), journal (syslog\n"
	    "                         priority first: <3> error ... <7> "
	    "debug)\n"
	    "                         or auto (default): journal where stderr\n"
	    "                         is systemd's journal (JOURNAL_STREAM)\n"
	    "  -h, --help             this text\n"
	    "  -V, --version          print the version\n"
	    "\n"
	    "Logs go to stderr, one line per event. SIGTERM or SIGINT stop "
	    "the\n"
	    "server cleanly (its lease is revoked) with exit status 0. Under\n"
	    "systemd (Type=notify) it sends READY=1 once it serves, "
	    "WATCHDOG=1\n"
	    "while its worker answers, and STATUS= lines.\n");
}

static int
check_prompts(const struct config *cfg)
{
	int bad = 0;

	for (size_t i = 0; i < cfg->n_servers; i++) {
		const struct config_server *s = &cfg->servers[i];
		char *path = prompt_path(cfg, s), err[512];
		struct prompt p;

		if (path && prompt_load(path, &p, err, sizeof(err)) != 0) {
			log_error("%s:%d: prompt of [server %s]: %s", cfg->path,
			    config_server_line(s, "prompt"), s->name, err);
			bad++;
		} else if (path) {
			prompt_free(&p);
		}
		free(path);
	}
	return bad ? -1 : 0;
}

/* The worker inherits the choice through the environment. */
static int
log_format(const char *f)
{
	if (strcmp(f, "auto") == 0)
		return unsetenv("UNDERSTUDY_LOG_FORMAT") == 0 ? 0 : -1;
	if (strcmp(f, "plain") == 0 || strcmp(f, "journal") == 0)
		return setenv("UNDERSTUDY_LOG_FORMAT", f, 1) == 0 ? 0 : -1;
	fprintf(stderr, "understudyd: unknown log format '%s'\n", f);
	return -1;
}

/*
 * The heap is kept rather than given back and taken again: under a
 * storm of desks tens of megabytes of connection memory are freed and
 * allocated again every second, and trimming the heap's top each time
 * (glibc's default: past 128 KiB free) cost a brk call and fresh pages
 * to fault in and zero on each regrowth (docs/performance.md, Desks).
 * Up to 64 MiB free stays with the process after a storm; more is given
 * back. (M_TOP_PAD is left alone: a padded heap cost an idle worker 2
 * MB more.)
 */
static void
heap_keep(void)
{
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"server", required_argument, NULL, 's'},
	    {"state-dir", required_argument, NULL, 'd'},
	    {"log-level", required_argument, NULL, 'l'},
	    {"log-format", required_argument, NULL, 'f'},
	    {"worker", no_argument, NULL, 'W'},
	    {"restarted", no_argument, NULL, 'R'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
	struct daemon_args a = {0};
	struct config_diags d = {0};
	bool worker = false;
	int c, level, rc;
	char who[64], state[512];

	heap_keep();
	/* understudyd --fence STOP_MS USER|- COMMAND: see fence.c */
	if (argc == 5 && strcmp(argv[1], "--fence") == 0) {
		long stop_ms;

		if (str_to_long(argv[2], 0, 86400000, &stop_ms) != 0)
			return 2;
		return fence_main(argv[4],
		    strcmp(argv[3], "-") == 0 ? NULL : argv[3], stop_ms);
	}
	while (
	    (c = getopt_long(argc, argv, "c:s:d:l:f:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			a.config_path = optarg;
			break;
		case 's':
			a.server = optarg;
			break;
		case 'd':
			a.state_dir = optarg;
			break;
		case 'l':
			a.log_level = optarg;
			break;
		case 'f':
			if (log_format(optarg) != 0)
				return 2;
			break;
		case 'W':
			worker = true;
			break;
		case 'R':
			a.restarted = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("understudyd %s\n", US_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (a.config_path == NULL || a.server == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (a.state_dir == NULL) {
		snprintf(
		    state, sizeof(state), "/var/lib/understudy/%s", a.server);
		a.state_dir = state;
	}
	if ((level = log_level_parse(a.log_level ? a.log_level : "info")) < 0) {
		fprintf(stderr, "understudyd: unknown log level '%s'\n",
		    a.log_level);
		return 2;
	}
	snprintf(who, sizeof(who), "%s%s", a.server, worker ? "" : " master");
	log_init(who, (enum log_level)level);
	a.cfg = config_load(a.config_path, &d);
	if (a.cfg == NULL || d.errors) {
		config_diags_print(&d, stderr);
		log_error("%s has errors; not starting", a.config_path);
		config_diags_free(&d);
		config_free(a.cfg);
		return 2;
	}
	config_diags_free(&d);
	if ((a.self = config_server_find(a.cfg, a.server)) == NULL) {
		log_error("no [server %s] in %s", a.server, a.config_path);
		config_free(a.cfg);
		return 2;
	}
	/* any server may cover any post: every prompt must play here */
	if (!worker && (check_prompts(a.cfg) | tls_check(a.cfg, a.self)) != 0) {
		log_error("%s: not starting", a.config_path);
		config_free(a.cfg);
		return 2;
	}
	if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		log_error("cannot initialise libsodium or libcurl");
		config_free(a.cfg);
		return 1;
	}
	rc = worker ? worker_main(&a) : master_main(&a);
	config_free(a.cfg);
	curl_global_cleanup();
	return rc;
}
