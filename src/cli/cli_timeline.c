/* understudy timeline: failovers, failbacks, fences and restarts. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy timeline [--config FILE | --server URL] "
	    "[--token T] [--ca FILE]\n"
	    "           [--since T] [--until T] [--kind K[,K...]] [--limit "
	    "N] [--json]\n"
	    "\n"
	    "Prints the cluster's history, the newest first: failovers "
	    "(how long\n"
	    "from the failure to the cover's claim, and to the first call "
	    "the\n"
	    "cover took), failbacks (how long the post was covered, and "
	    "until its\n"
	    "last busy port came home), fences (how long a server did not "
	    "serve\n"
	    "for want of etcd) and restarts of a worker by its master, with "
	    "the\n"
	    "cause. The servers keep the newest 1000 events in etcd; the "
	    "first\n"
	    "server that answers is asked.\n"
	    "\n"
	    "  --config FILE      ask the servers of this config, in order\n"
	    "                     (default $UNDERSTUDY_CONFIG, then\n"
	    "                     examples/contact-center.conf)\n"
	    "  --server URL       ask this server (http://127.0.0.1:8001)\n"
	    "  --token T          the read_token or admin_token, where the\n"
	    "                     config sets a read_token (default\n"
	    "                     $UNDERSTUDY_TOKEN, then the config's)\n"
	    "  --ca FILE          verify an https:// server with this CA\n"
	    "  --since T          events at or after T: ISO 8601 "
	    "(2026-11-22T09:00Z),\n"
	    "                     ms since the epoch, or an age (30m, 2h, "
	    "7d)\n"
	    "  --until T          events at or before T\n"
	    "  --kind K           only failover, failback, fence or restart\n"
	    "                     (several with commas)\n"
	    "  --limit N          at most N events (default 100, at most "
	    "1000)\n"
	    "  --json             the server's answer, as JSON\n");
}

static const char *
str(json_t *e, const char *k)
{
	const char *v = json_string_value(json_object_get(e, k));

	return v ? v : "";
}

static void
print_table(json_t *arr)
{
	size_t i;
	json_t *e;
	char moved[80];

	printf("%-24s %-9s %-8s %-17s %s\n", "TIME", "KIND", "POST",
	    "FROM -> TO", "WHAT (CAUSE)");
	json_array_foreach (arr, i, e) {
		const char *kind = str(e, "kind");
		bool post = json_object_get(e, "post") != NULL;

		if (post)
			snprintf(moved, sizeof(moved), "%s -> %s",
			    str(e, "from"), str(e, "to"));
		else
			snprintf(moved, sizeof(moved), "%s", str(e, "server"));
		printf("%-24s %-9s %-8s %-17s %s (%s)\n", str(e, "time"), kind,
		    post ? str(e, "post") : "-", moved, str(e, "summary"),
		    str(e, "cause"));
	}
	printf("%zu event%s\n", json_array_size(arr),
	    json_array_size(arr) == 1 ? "" : "s");
}

int
cli_timeline(int argc, char **argv)
{
	static const struct {
		const char *opt, *param;
	} filters[] = {{"--since", "since"}, {"--until", "until"},
	    {"--kind", "kind"}, {"--limit", "limit"}};
	const char *server = NULL, *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN"), *ca = NULL;
	bool as_json = false, known;
	char path[2048] = "/v1/timeline";
	json_t *ans = NULL, *arr;
	int rc = 1;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		known = false;
		for (size_t f = 0; f < ARRAY_SIZE(filters) && !known; f++) {
			char *esc;

			if (strcmp(argv[i], filters[f].opt) != 0 ||
			    i + 1 >= argc)
				continue;
			known = true;
			if ((esc = curl_easy_escape(NULL, argv[++i], 0)) ==
			    NULL)
				return 1;
			snprintf(path + strlen(path),
			    sizeof(path) - strlen(path), "%c%s=%s",
			    strchr(path, '?') ? '&' : '?', filters[f].param,
			    esc);
			curl_free(esc);
		}
		if (known)
			continue;
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
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
			    "understudy timeline: unknown argument '%s'\n\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (cli_ask("timeline", server, file, path, token, ca, &ans) != 0)
		return 1;
	arr = json_object_get(ans, "events");
	if (!json_is_array(arr)) {
		fprintf(
		    stderr, "understudy timeline: the answer has no events\n");
		goto out;
	}
	if (as_json) {
		char *s = json_dumps(ans, JSON_INDENT(2));

		printf("%s\n", s ? s : "null");
		free(s);
	} else {
		print_table(arr);
	}
	rc = 0;
out:
	json_decref(ans);
	return rc;
}
