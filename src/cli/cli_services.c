/* understudy service list | restart|stop|start|reset NAME [--server S] */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy service list [--json]\n"
	    "       understudy service restart|stop|start|reset NAME "
	    "[--server S]\n"
	    "       [--config FILE] [--token TOKEN] [--ca FILE]\n"
	    "\n"
	    "list     every service on every server: state, pid, restarts,\n"
	    "         where its post is\n"
	    "restart  stop the service and start it again\n"
	    "stop     stop it and keep it stopped (until start, or until\n"
	    "         understudyd restarts)\n"
	    "start    let a stopped or failed service run again\n"
	    "reset    forget its crashes: a failed service starts again\n"
	    "\n"
	    "An action goes to --server S, else to every server that runs the\n"
	    "service (for a post service, the post's owner). It needs the\n"
	    "admin token: --token, $UNDERSTUDY_TOKEN or the config's "
	    "admin_token.\n");
}

/* Send the action to one server; 0 when accepted. */
static int
act(const struct config *cfg, const char *server, const char *name,
    const char *action, const char *token, const char *ca)
{
	const struct config_server *s = config_server_find(cfg, server);
	char base[300], url[600], err[512];
	json_t *out = NULL;
	long status = 0;
	int rc = 1;

	if (s == NULL) {
		fprintf(stderr, "understudy service: no server %s\n", server);
		return 1;
	}
	config_api_url(cfg, s->address, s->api_port, base, sizeof(base));
	snprintf(url, sizeof(url), "%s/v1/services/%s/%s", base, name, action);
	if (cli_status_http("POST", url, token, ca, 5000, &status, &out, err,
		sizeof(err)) != 0)
		fprintf(stderr, "understudy service %s %s on %s: %s\n", action,
		    name, server, err);
	else if (status != 202)
		fprintf(stderr, "understudy service %s %s on %s: %s\n", action,
		    name, server,
		    json_string_value(json_object_get(out, "message")));
	else {
		printf("%s %s on %s: accepted\n", action, name, server);
		rc = 0;
	}
	json_decref(out);
	return rc;
}

int
cli_services(int argc, char **argv)
{
	const char *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN"), *ca = NULL;
	const char *action = NULL, *name = NULL, *server = NULL;
	struct config_diags d = {0};
	struct config *cfg = NULL;
	json_t *out = NULL, *v, *list;
	char *cfg_ca = NULL;
	bool as_json = false;
	size_t i;
	int rc = 1, sent = 0;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[k], "--config") == 0 && k + 1 < argc)
			file = argv[++k];
		else if (strcmp(argv[k], "--token") == 0 && k + 1 < argc)
			token = argv[++k];
		else if (strcmp(argv[k], "--ca") == 0 && k + 1 < argc)
			ca = argv[++k];
		else if (strcmp(argv[k], "--server") == 0 && k + 1 < argc)
			server = argv[++k];
		else if (argv[k][0] != '-' && action == NULL)
			action = argv[k];
		else if (argv[k][0] != '-' && name == NULL)
			name = argv[k];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (action == NULL || (strcmp(action, "list") == 0) != (name == NULL)) {
		usage(stderr);
		return 2;
	}
	if (file == NULL)
		file = "examples/contact-center.conf";
	if (cli_ask("service", NULL, file, "/v1/services", NULL, ca, &out) != 0)
		goto out;
	list = json_object_get(out, "services");
	if (strcmp(action, "list") == 0) {
		if (as_json) {
			char *s = json_dumps(list, JSON_INDENT(2));

			printf("%s\n", s ? s : "[]");
			free(s);
		} else {
			cli_services_print(list);
		}
		rc = 0;
		goto out;
	}
	if ((cfg = config_load(file, &d)) == NULL || d.errors) {
		config_diags_print(&d, stderr);
		goto out;
	}
	if (token == NULL)
		token = cfg->cluster.admin_token;
	if (ca == NULL)
		ca = cfg_ca = config_file_path(cfg, cfg->cluster.tls_ca);
	if (server) {
		rc = act(cfg, server, name, action, token, ca);
		goto out;
	}
	rc = 0;
	json_array_foreach (list, i, v) {
		const char *n = json_string_value(json_object_get(v, "name"));
		const char *on =
		    json_string_value(json_object_get(v, "server"));
		json_t *owner = json_object_get(v, "post_owner");

		if (n == NULL || on == NULL || strcmp(n, name) != 0)
			continue;
		/* a post service: where its post is, unless nobody has it */
		if (json_is_string(owner) &&
		    strcmp(json_string_value(owner), on) != 0)
			continue;
		rc |= act(cfg, on, name, action, token, ca);
		sent++;
	}
	if (sent == 0) {
		fprintf(stderr,
		    "understudy service %s: no server runs service %s now "
		    "(--server S)\n",
		    action, name);
		rc = 1;
	}
out:
	json_decref(out);
	free(cfg_ca);
	config_free(cfg);
	config_diags_free(&d);
	return rc;
}
