/* understudy status: the cluster as one of its servers sees it. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

#define CLI_ANSWER_MAX (4u * 1024 * 1024)

static size_t
collect(char *data, size_t size, size_t nmemb, void *userp)
{
	struct buf *b = userp;

	return buf_append(b, data, size * nmemb) == 0 ? size * nmemb : 0;
}

int
cli_status_http(const char *method, const char *url, const char *token,
    long timeout_ms, long *status, json_t **out, char *err, size_t errlen)
{
	struct curl_slist *h = NULL;
	char auth[512];
	struct buf b;
	CURLcode rc;
	CURL *c;

	*out = NULL;
	*status = 0;
	buf_init(&b, CLI_ANSWER_MAX);
	if ((c = curl_easy_init()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	}
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
		*out = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
	} else {
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	buf_free(&b);
	return rc == CURLE_OK ? 0 : -1;
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy status [--config FILE | --server URL] [--json]\n"
	    "\n"
	    "Asks one server for its view of the cluster: --server names it\n"
	    "(http://127.0.0.1:8001); otherwise each server of the config is\n"
	    "tried in turn (default examples/contact-center.conf, or\n"
	    "$UNDERSTUDY_CONFIG). ▲ up, ▼ down.\n"
	    "  --json   print the server's answer as it is\n");
}

static void
print_table(json_t *st)
{
	json_t *members = json_object_get(st, "members"), *m;
	size_t i;

	printf("cluster %s, as seen by %s at %s\n\n",
	    json_string_value(json_object_get(st, "cluster")),
	    json_string_value(json_object_get(st, "server")),
	    json_string_value(json_object_get(st, "time")));
	printf("%-10s %-7s %-26s %s\n", "SERVER", "STATE", "SINCE", "API");
	json_array_foreach (members, i, m) {
		bool up = json_is_true(json_object_get(m, "up"));
		const char *addr =
		    json_string_value(json_object_get(m, "address"));
		char api[80] = "-";

		if (addr)
			snprintf(api, sizeof(api), "%s:%lld", addr,
			    (long long)json_integer_value(
				json_object_get(m, "api_port")));
		printf("%-10s %s %-5s %-26s %s\n",
		    json_string_value(json_object_get(m, "name")),
		    up ? "▲" : "▼", up ? "up" : "down",
		    json_string_value(json_object_get(m, "since")), api);
	}
}

int
cli_status(int argc, char **argv)
{
	const char *server = NULL, *file = getenv("UNDERSTUDY_CONFIG");
	bool as_json = false;
	struct config_diags d = {0};
	struct config *cfg = NULL;
	json_t *st = NULL;
	char err[256] = "", url[512];
	long status = 0;
	int rc = 1;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
			server = argv[++i];
		else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[++i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (server) {
		snprintf(url, sizeof(url), "%s/v1/status", server);
		cli_status_http(
		    "GET", url, NULL, 3000, &status, &st, err, sizeof(err));
	} else {
		if (file == NULL)
			file = "examples/contact-center.conf";
		if ((cfg = config_load(file, &d)) == NULL || d.errors) {
			config_diags_print(&d, stderr);
			fprintf(
			    stderr, "understudy status: %s has errors\n", file);
			goto out;
		}
		for (size_t i = 0; i < cfg->n_servers && st == NULL; i++) {
			const struct config_server *s = &cfg->servers[i];

			snprintf(url, sizeof(url), "http://%s:%ld/v1/status",
			    s->address, s->api_port);
			cli_status_http("GET", url, NULL, 2000, &status, &st,
			    err, sizeof(err));
		}
	}
	if (st == NULL || status != 200) {
		fprintf(stderr, "understudy status: no server answered%s%s\n",
		    err[0] ? ": " : "", err);
		goto out;
	}
	if (as_json) {
		char *s = json_dumps(st, JSON_INDENT(2));

		printf("%s\n", s ? s : "null");
		free(s);
	} else {
		print_table(st);
	}
	rc = 0;
out:
	json_decref(st);
	config_free(cfg);
	config_diags_free(&d);
	return rc;
}
