/*
 * understudy check: the daily maintenance check of every server, from
 * any machine, through the servers' API only (src/check/cluster.c asks
 * them); --last shows the admin primary's last scheduled run.
 */
#include <stdlib.h>
#include <string.h>

#include "check/check.h"
#include "cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy check [--config FILE | --server URL] [--token "
	    "T] [--ca FILE]\n"
	    "                        [--since T] [--last] [--json]\n"
	    "\n"
	    "Checks every server of the cluster: its links (etcd members, "
	    "quorum and\n"
	    "leader, the registrar and its route points, NATS with JetStream "
	    "and the\n"
	    "streams, the other servers' API), its copy of the records, the "
	    "backups,\n"
	    "the errors it logged, the free space of its state directory and "
	    "the\n"
	    "config version it runs. One row per check and server, ✔ or ✘ "
	    "with what\n"
	    "is wrong.\n"
	    "\n"
	    "  --config FILE   the servers to check (default "
	    "$UNDERSTUDY_CONFIG, then\n"
	    "                  examples/contact-center.conf)\n"
	    "  --server URL    ask this server which servers there are\n"
	    "  --token T       the read_token or admin_token (default\n"
	    "                  $UNDERSTUDY_TOKEN, then the config's)\n"
	    "  --ca FILE       verify https:// servers with this CA\n"
	    "  --since T       errors logged since T count (ISO 8601, ms since "
	    "the\n"
	    "                  epoch, or an age: 24h); default: since the last "
	    "scheduled\n"
	    "                  check, else the last 24 h\n"
	    "  --last          the last scheduled check's result "
	    "(check_schedule)\n"
	    "  --json          the result as JSON\n"
	    "\n"
	    "Exit status: 0 every check passed, 1 some failed (or no server "
	    "answered),\n"
	    "2 bad usage.\n");
}

static const char *
str_of(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

/* The table and its summary; returns the exit status. */
static int
print_result(const json_t *res, bool as_json)
{
	const json_t *rows = json_object_get(res, "rows"), *r;
	bool ok = json_is_true(json_object_get(res, "ok"));
	size_t i, failed = 0;

	if (as_json) {
		char *s = json_dumps(res, JSON_INDENT(2));

		printf("%s\n", s ? s : "null");
		free(s);
		return ok ? 0 : 1;
	}
	printf(
	    "   %-8s %-10s %-15s %s\n", "SERVER", "GROUP", "CHECK", "DETAIL");
	json_array_foreach (rows, i, r) {
		bool pass = json_is_true(json_object_get(r, "ok"));

		failed += !pass;
		printf("%s  %-8s %-10s %-15s %s%s%s%s\n", pass ? "✔" : "✘",
		    str_of(r, "server"), str_of(r, "group"), str_of(r, "name"),
		    str_of(r, "detail"),
		    json_object_get(r, "reported_by") ? " (as " : "",
		    str_of(r, "reported_by"),
		    json_object_get(r, "reported_by") ? " sees it)" : "");
	}
	printf("%s: %zu checks, %zu failed (at %s; errors since %s)\n",
	    ok ? "ok" : "FAILED", json_array_size(rows), failed,
	    str_of(res, "time"), str_of(res, "since"));
	return ok ? 0 : 1;
}

/*
 * With --server only: the servers as that one knows them (/v1/status);
 * one that is down has no address there and fails as not answering.
 */
static int
servers_of(
    const char *url, const char *token, const char *ca, struct config *cfg)
{
	char u[1100], err[300];
	long status = 0;
	json_t *st = NULL, *m;
	size_t i, n;

	snprintf(u, sizeof(u), "%s/v1/status", url);
	if (cli_http("GET", u, token, ca, NULL, 5000, &status, &st, err,
		sizeof(err)) != 0 ||
	    status != 200) {
		fprintf(stderr, "understudy check: %s: %s\n", url,
		    status ? "no status" : err);
		json_decref(st);
		return -1;
	}
	n = json_array_size(json_object_get(st, "members"));
	cfg->servers = calloc(n ? n : 1, sizeof(*cfg->servers));
	cfg->cluster.name = strdup(str_of(st, "cluster"));
	if (strncmp(url, "https://", 8) == 0)
		cfg->cluster.tls_cert = strdup("(the API serves HTTPS)");
	json_array_foreach (json_object_get(st, "members"), i, m) {
		struct config_server *s = &cfg->servers[cfg->n_servers++];

		s->name = strdup(str_of(m, "name"));
		s->address =
		    strdup(json_object_get(m, "address") ? str_of(m, "address")
							 : "0.0.0.0");
		s->api_port =
		    (long)json_integer_value(json_object_get(m, "api_port"));
	}
	json_decref(st);
	return 0;
}

/*
 * GET /v1/check/last from the first server that answers at all: its
 * status in *status (404: no scheduled check yet) and its answer, or
 * NULL when none answered.
 */
static json_t *
fetch_last(
    const struct config *cfg, const char *token, const char *ca, long *status)
{
	char base[300], url[400], err[300];
	json_t *ans = NULL;

	*status = 0;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		config_api_url(cfg, cfg->servers[i].address,
		    cfg->servers[i].api_port, base, sizeof(base));
		snprintf(url, sizeof(url), "%s/v1/check/last", base);
		if (check_http("GET", url, NULL, token, ca, NULL, NULL, 3000,
			status, &ans, err, sizeof(err)) == 0 &&
		    *status != 503)
			return ans;
		json_decref(ans);
		ans = NULL;
	}
	return NULL;
}

static void
servers_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_servers; i++) {
		free(cfg->servers[i].name);
		free(cfg->servers[i].address);
	}
	free(cfg->servers);
	free(cfg->cluster.name);
	free(cfg->cluster.tls_cert);
}

int
cli_check(int argc, char **argv)
{
	const char *server = NULL, *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN"), *ca = NULL;
	const char *since = NULL;
	bool as_json = false, last = false;
	struct config_diags d = {0};
	struct config *cfg = NULL, bare = {0};
	struct check_target t = {0};
	char *cfg_ca = NULL;
	json_t *res = NULL, *ans = NULL;
	long status = 0;
	int rc = 1;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[i], "--last") == 0)
			last = true;
		else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc)
			since = argv[++i];
		else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
			token = argv[++i];
		else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
			server = argv[++i];
		else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
			ca = argv[++i];
		else {
			fprintf(stderr,
			    "understudy check: unknown argument '%s'\n\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	t.now_ms = time_wall_ms();
	if (since && time_parse(since, t.now_ms, &t.since_ms) != 0) {
		fprintf(stderr,
		    "understudy check: --since '%s' is not a time (ISO 8601 "
		    "such as 2026-11-22T09:30Z, ms since the epoch, or an age "
		    "such as 24h)\n",
		    since);
		return 2;
	}
	if (server == NULL) {
		if (file == NULL)
			file = "examples/contact-center.conf";
		if ((cfg = config_load(file, &d)) == NULL || d.errors) {
			config_diags_print(&d, stderr);
			fprintf(
			    stderr, "understudy check: %s has errors\n", file);
			goto out;
		}
		if (token == NULL)
			token = cfg->cluster.read_token
			    ? cfg->cluster.read_token
			    : cfg->cluster.admin_token;
		if (ca == NULL)
			ca = cfg_ca =
			    config_file_path(cfg, cfg->cluster.tls_ca);
	} else {
		if (servers_of(server, token, ca, &bare) != 0)
			goto out;
		cfg = &bare;
	}
	if (last || since == NULL)
		ans = fetch_last(cfg, token, ca, &status);
	if (last) {
		if (ans && status == 200)
			rc = print_result(ans, as_json);
		else
			fprintf(stderr, "understudy check: %s\n",
			    ans ? str_of(ans, "message")
				: "no server answered");
		goto out;
	}
	/* since the last scheduled check, else the last 24 h */
	if (since == NULL && status == 200)
		t.since_ms =
		    json_integer_value(json_object_get(ans, "time_ms"));
	if (t.since_ms <= 0)
		t.since_ms = t.now_ms - CHECK_SINCE_DEFAULT_MS;
	t.cfg = cfg;
	t.token = token;
	t.ca = ca;
	if ((res = check_cluster(&t)) == NULL) {
		fprintf(stderr, "understudy check: out of memory\n");
		goto out;
	}
	rc = print_result(res, as_json);
out:
	json_decref(res);
	json_decref(ans);
	free(cfg_ca);
	if (cfg == &bare)
		servers_free(&bare);
	else
		config_free(cfg);
	config_diags_free(&d);
	return rc;
}
