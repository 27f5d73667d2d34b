/* understudy stop|start|failback NAME|--all */
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "cli.h"

static void
usage(FILE *f, const char *cmd)
{
	fprintf(f,
	    "usage: understudy %s NAME|--all [--config FILE] [--token TOKEN] "
	    "[--ca FILE]\n"
	    "                            [--json]\n"
	    "\n"
	    "stop      hand the server's post and covers to their covers "
	    "(calls\n"
	    "          in progress finish where they are); it stays stopped,\n"
	    "          across restarts, until started\n"
	    "start     let a stopped server serve again\n"
	    "failback  move a covered post back to its home server now: new\n"
	    "          calls go home at once, busy ports return as calls end\n"
	    "\n"
	    "The request goes to the first server of the config that answers;\n"
	    "a 'not done' goes to the next. Exit status: 0 done, 1 not done,\n"
	    "2 usage, 3 the outcome is unknown (see understudy status).\n"
	    "The admin token comes from --token, $UNDERSTUDY_TOKEN, or the\n"
	    "config's admin_token. An https:// server is verified with --ca "
	    "FILE,\n"
	    "else the config's tls_ca, else the system's CAs.\n",
	    cmd);
}

/* POST to the first server that answers; 0 when accepted. */
static int
send_one(const struct config *cfg, const char *name, const char *action,
    const char *token, const char *ca, bool as_json)
{
	char url[512], base[300], err[512] = "";
	struct buf why; /* every server's failure, for the operator */
	json_t *out = NULL;
	long status = 0;
	int rc = 1;

	buf_init(&why, 4096);
	/* 503: no admin primary for a moment (elected anew): ask again */
	for (int pass = 0; pass < CLI_PASSES && (pass == 0 || status == 503);
	     pass++) {
		if (pass)
			usleep(CLI_PASS_WAIT_MS * 1000);
		status = 0;
		for (size_t i = 0; i < cfg->n_servers; i++) {
			const struct config_server *s = &cfg->servers[i];

			config_api_url(
			    cfg, s->address, s->api_port, base, sizeof(base));
			snprintf(url, sizeof(url), "%s/v1/servers/%s/%s", base,
			    name, action);
			json_decref(out);
			out = NULL;
			if (cli_status_http("POST", url, token, ca, 5000,
				&status, &out, err, sizeof(err)) != 0)
				buf_printf(
				    &why, "%s%s", why.len ? "; " : "", err);
			else if (status != 503)
				break;
		}
	}
	if (as_json) {
		char *s = out ? json_dumps(out, JSON_COMPACT) : NULL;

		printf("%s\n", s ? s : "{\"error\":\"EUNAVAIL\"}");
		free(s);
	} else if (status == 202) {
		printf("%s %s: accepted\n", action, name);
	} else if (out) {
		fprintf(stderr, "understudy %s %s: %s: %s\n", action, name,
		    json_string_value(json_object_get(out, "error")),
		    json_string_value(json_object_get(out, "message")));
	} else {
		fprintf(stderr, "understudy %s %s: no server answered%s%s\n",
		    action, name, why.len ? ": " : "", why.len ? why.data : "");
	}
	/* 504: etcd answered neither the write nor its read-back */
	rc = status == 202 ? 0 : status == 504 ? 3 : 1;
	buf_free(&why);
	json_decref(out);
	return rc;
}

int
cli_control(int argc, char **argv)
{
	const char *action = argv[0], *name = NULL;
	const char *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN"), *ca = NULL;
	struct config_diags d = {0};
	struct config *cfg = NULL;
	char *cfg_ca = NULL;
	bool all = false, as_json = false;
	int rc = 1;

	if (cli_wants_help(argc, argv)) {
		usage(stdout, action);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--all") == 0)
			all = true;
		else if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
			token = argv[++i];
		else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
			ca = argv[++i];
		else if (argv[i][0] != '-' && name == NULL)
			name = argv[i];
		else {
			usage(stderr, action);
			return 2;
		}
	}
	if ((name == NULL) == !all ||
	    (all && strcmp(action, "failback") == 0)) {
		usage(stderr, action);
		return 2;
	}
	if (file == NULL)
		file = "examples/contact-center.conf";
	if ((cfg = config_load(file, &d)) == NULL || d.errors) {
		config_diags_print(&d, stderr);
		fprintf(stderr, "understudy %s: %s has errors\n", action, file);
		goto out;
	}
	if (token == NULL)
		token = cfg->cluster.admin_token;
	if (token == NULL) {
		fprintf(stderr,
		    "understudy %s: no admin token (--token, "
		    "$UNDERSTUDY_TOKEN or admin_token in %s)\n",
		    action, file);
		goto out;
	}
	if (ca == NULL)
		ca = cfg_ca = config_file_path(cfg, cfg->cluster.tls_ca);
	if (all) {
		rc = 0;
		for (size_t i = 0; i < cfg->n_servers; i++)
			rc |= send_one(cfg, cfg->servers[i].name, action, token,
			    ca, as_json);
	} else {
		rc = send_one(cfg, name, action, token, ca, as_json);
	}
out:
	free(cfg_ca);
	config_free(cfg);
	config_diags_free(&d);
	return rc;
}
