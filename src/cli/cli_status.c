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
    const char *ca, long timeout_ms, long *status, json_t **out, char *err,
    size_t errlen)
{
	return cli_http(
	    method, url, token, ca, NULL, timeout_ms, status, out, err, errlen);
}

int
cli_http(const char *method, const char *url, const char *token, const char *ca,
    const char *body, long timeout_ms, long *status, json_t **out, char *err,
    size_t errlen)
{
	struct curl_slist *h = NULL;
	char auth[512], why[CURL_ERROR_SIZE] = "";
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
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, why);
	/* curl verifies the peer and its name by default: never turned off */
	if (ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
	if (body)
		h = curl_slist_append(h, "Content-Type: application/json");
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
	}
	if (h)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
		*out = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
	} else {
		snprintf(err, errlen, "%s: %s", url,
		    why[0] ? why : curl_easy_strerror(rc));
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
	    "usage: understudy status [--config FILE | --server URL] "
	    "[--token T] [--ca FILE]\n"
	    "                         [--json]\n"
	    "       understudy status --input FILE\n"
	    "\n"
	    "The whole cluster as one server sees it: every server (▲ up, ▼ "
	    "down,\n"
	    "■ stopped by an operator, ! fenced), every post (owner, state,\n"
	    "epoch), and every media port (. idle, # busy, r returning: still\n"
	    "held by the cover until its call ends).\n"
	    "\n"
	    "  --server URL   ask this server (http://127.0.0.1:8001)\n"
	    "  --config FILE  ask the first server of FILE that answers "
	    "(default\n"
	    "                 $UNDERSTUDY_CONFIG, then "
	    "examples/contact-center.conf)\n"
	    "  --ca FILE      verify an https:// server with this CA "
	    "(default the\n"
	    "                 config's tls_ca, else the system's CAs)\n"
	    "  --json         print the server's answer as it is\n"
	    "  --input FILE   show a saved --json answer instead of asking\n"
	    "\n"
	    "Where the config sets a read_token, the server wants it (or the\n"
	    "admin_token): from --token, $UNDERSTUDY_TOKEN, or the config.\n");
}

static const char *
str_of(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "-";
}

static void
join(json_t *arr, char *buf, size_t len, const char *sep)
{
	json_t *v;
	size_t i;

	buf[0] = '\0';
	json_array_foreach (arr, i, v) {
		if (i)
			strncat(buf, sep, len - strlen(buf) - 1);
		strncat(buf, json_string_value(v) ? json_string_value(v) : "?",
		    len - strlen(buf) - 1);
	}
	if (buf[0] == '\0')
		str_copy(buf, "-", len);
}

static const char *
mark(const char *state)
{
	if (strcmp(state, "up") == 0)
		return "▲";
	if (strcmp(state, "stopped") == 0)
		return "■";
	if (strcmp(state, "fenced") == 0)
		return "!";
	return "▼";
}

static void
print_table(json_t *st)
{
	json_t *servers = json_object_get(st, "servers");
	json_t *posts = json_object_get(st, "posts"), *v;
	char rp[64], fo[128], cov[128], use[32], state[64];
	size_t i;

	printf("cluster %s, as seen by %s at %s\n", str_of(st, "cluster"),
	    str_of(st, "server"), str_of(st, "time"));
	if ((v = json_object_get(st, "config")) != NULL) {
		long long n = json_integer_value(json_object_get(v, "version"));

		long long in =
		    json_integer_value(json_object_get(v, "in_effect"));
		json_t *why = json_object_get(v, "restart_needed");

		printf("configuration version %lld%s%s\n", n,
		    json_is_string(json_object_get(st, "admin_primary"))
			? ", admin primary "
			: "",
		    json_is_string(json_object_get(st, "admin_primary"))
			? str_of(st, "admin_primary")
			: "");
		if (in > n)
			printf("warning: version %lld is in effect; %s runs "
			       "version %lld until it restarts (%s)\n",
			    in, str_of(st, "server"), n,
			    json_string_value(json_array_get(why, 0))
				? json_string_value(json_array_get(why, 0))
				: "reading it");
		if (json_is_true(json_object_get(v, "local_file_differs")))
			printf("warning: the local config file of %s differs "
			       "from version %lld, which it runs (`understudy "
			       "config show`, `understudy config apply "
			       "FILE`)\n",
			    str_of(st, "server"), n);
	}
	printf("\n");
	printf("%-8s %-11s %-24s %-12s %-8s %-10s %s\n", "SERVER", "STATE",
	    "SINCE", "ROUTE PTS", "IN USE", "FAILOVER", "COVERS");
	json_array_foreach (servers, i, v) {
		const char *s = str_of(v, "state");

		join(json_object_get(v, "route_points"), rp, sizeof(rp), " ");
		join(json_object_get(v, "failover"), fo, sizeof(fo), ",");
		join(json_object_get(v, "covers"), cov, sizeof(cov), ",");
		snprintf(use, sizeof(use), "%lld/%lld",
		    (long long)json_integer_value(
			json_object_get(v, "ports_in_use")),
		    (long long)json_integer_value(
			json_object_get(v, "max_media_ports")));
		snprintf(state, sizeof(state), "%s %s", mark(s), s);
		/* the marks are 3 bytes, 1 column: pad by bytes + 2 */
		printf("%-8s %-13s %-24s %-12s %-8s %-10s %s\n",
		    str_of(v, "name"), state, str_of(v, "since"), rp, use, fo,
		    cov);
	}
	printf("\n%-6s %-18s %-6s %-7s %-10s %-7s %s\n", "POST", "STATE",
	    "OWNER", "EPOCH", "ROUTE PTS", "IN USE", "PORTS");
	json_array_foreach (posts, i, v) {
		json_t *ports = json_object_get(v, "ports"), *pt;
		const char *cover =
		    json_string_value(json_object_get(v, "cover"));
		json_t *owner = json_object_get(v, "owner");
		char strip[1024] = "", epoch[24] = "-";
		long long first = 0, last = 0;
		size_t j, n = 0;

		json_array_foreach (ports, j, pt) {
			const char *ps = str_of(pt, "state");
			long long num =
			    json_integer_value(json_object_get(pt, "number"));

			if (j == 0)
				first = num;
			last = num;
			if (n < sizeof(strip) - 1)
				strip[n++] = strcmp(ps, "busy") == 0 ? '#'
				    : strcmp(ps, "returning") == 0   ? 'r'
								     : '.';
		}
		strip[n] = '\0';
		if (cover)
			snprintf(state, sizeof(state), "%s(%s)",
			    str_of(v, "state"), cover);
		else
			snprintf(
			    state, sizeof(state), "%s", str_of(v, "state"));
		if (json_integer_value(json_object_get(v, "epoch")))
			snprintf(epoch, sizeof(epoch), "%lld",
			    (long long)json_integer_value(
				json_object_get(v, "epoch")));
		join(json_object_get(v, "route_points"), rp, sizeof(rp), " ");
		snprintf(use, sizeof(use), "%lld/%lld",
		    (long long)json_integer_value(
			json_object_get(v, "ports_in_use")),
		    (long long)json_integer_value(
			json_object_get(v, "media_ports")));
		printf("%-6s %-18s %-6s %-7s %-10s %-7s %lld %s %lld\n",
		    str_of(v, "name"), state,
		    json_is_string(owner) ? json_string_value(owner) : "-",
		    epoch, rp, use, first, strip, last);
		if (strcmp(str_of(v, "state"), "HOME") != 0)
			printf("%-6s %s\n", "", str_of(v, "reason"));
	}
	printf("\nports: . idle  # busy  r returning (the cover keeps it until "
	       "its call ends)\n");
	if ((v = json_object_get(st, "counters")) != NULL)
		printf("\n%s: %.1f calls/s (last 10 s), %lld active, %lld "
		       "refused busy, %lld failovers seen, %lld calls dropped "
		       "by failover\n",
		    str_of(st, "server"),
		    json_number_value(json_object_get(v, "calls_per_second")),
		    (long long)json_integer_value(
			json_object_get(v, "calls_active")),
		    (long long)json_integer_value(
			json_object_get(v, "calls_busy")),
		    (long long)json_integer_value(
			json_object_get(v, "failovers")),
		    (long long)json_integer_value(
			json_object_get(v, "calls_dropped_by_failover")));
	json_array_foreach (json_object_get(st, "registrations"), i, v)
		printf("route point %s registered at %s, epoch %lld\n",
		    str_of(v, "route_point"), str_of(v, "registrar"),
		    (long long)json_integer_value(json_object_get(v, "epoch")));
	if (json_array_size(json_object_get(st, "links")) > 0)
		printf("\nlinks of %s:\n%-4s %-14s %-34s %-8s %s\n",
		    str_of(st, "server"), "", "LINK", "TARGET", "LATENCY",
		    "SINCE / WHY");
	json_array_foreach (json_object_get(st, "links"), i, v) {
		bool up = strcmp(str_of(v, "state"), "up") == 0;
		json_t *lat = json_object_get(v, "latency_ms");
		char ms[24] = "-";

		if (json_is_integer(lat))
			snprintf(ms, sizeof(ms), "%lld ms",
			    (long long)json_integer_value(lat));
		printf("%-4s %-14s %-34s %-8s %s%s%s\n", up ? "up" : "DOWN",
		    str_of(v, "link"), str_of(v, "target"), ms,
		    str_of(v, "since"), up ? "" : ": ",
		    up ? "" : str_of(v, "detail"));
	}
	if (json_array_size(json_object_get(st, "services")))
		cli_services_print(json_object_get(st, "services"));
}

void
cli_services_print(json_t *services)
{
	json_t *v;
	size_t i;

	printf("\n%-14s %-6s %-11s %-8s %-8s %-12s %s\n", "SERVICE", "ON",
	    "STATE", "PID", "RESTARTS", "POST", "LAST EXIT / WHY");
	json_array_foreach (services, i, v) {
		char post[64] = "-", pid[16] = "-";
		const char *st = str_of(v, "state");

		if (json_is_string(json_object_get(v, "post")))
			snprintf(post, sizeof(post), "%s@%s", str_of(v, "post"),
			    json_is_string(json_object_get(v, "post_owner"))
				? str_of(v, "post_owner")
				: "-");
		if (json_integer_value(json_object_get(v, "pid")))
			snprintf(pid, sizeof(pid), "%lld",
			    (long long)json_integer_value(
				json_object_get(v, "pid")));
		printf("%-14s %-6s %s%-10s %-8s %-8lld %-12s %s%s%s\n",
		    str_of(v, "name"), str_of(v, "server"),
		    strcmp(st, "failed") == 0 ? "!" : " ", st, pid,
		    (long long)json_integer_value(
			json_object_get(v, "restarts")),
		    post, str_of(v, "last_exit"),
		    str_of(v, "last_exit")[0] ? "; " : "", str_of(v, "why"));
	}
}

static json_t *
load_file(const char *path)
{
	json_error_t err;
	json_t *o = json_load_file(path, 0, &err);

	if (o == NULL)
		fprintf(stderr, "understudy status: %s:%d: %s\n", path,
		    err.line, err.text);
	return o;
}

int
cli_ask(const char *cmd, const char *server, const char *file, const char *path,
    const char *token, const char *ca, json_t **out)
{
	struct config_diags d = {0};
	struct config *cfg = NULL;
	char err[512] = "", url[1024], base[300], *cfg_ca = NULL;
	struct buf why; /* every server's failure, for the operator */
	long status = 0;
	int rc = -1;

	*out = NULL;
	buf_init(&why, 4096);
	if (server) {
		snprintf(url, sizeof(url), "%s%s", server, path);
		if (cli_status_http("GET", url, token, ca, 5000, &status, out,
			err, sizeof(err)) != 0)
			buf_printf(&why, "%s", err);
	} else {
		if (file == NULL)
			file = "examples/contact-center.conf";
		if ((cfg = config_load(file, &d)) == NULL || d.errors) {
			config_diags_print(&d, stderr);
			fprintf(stderr, "understudy %s: %s has errors\n", cmd,
			    file);
			goto out;
		}
		/* the operator who holds the config holds its tokens */
		if (token == NULL)
			token = cfg->cluster.read_token
			    ? cfg->cluster.read_token
			    : cfg->cluster.admin_token;
		if (ca == NULL)
			ca = cfg_ca =
			    config_file_path(cfg, cfg->cluster.tls_ca);
		for (size_t i = 0; i < cfg->n_servers && status != 200; i++) {
			const struct config_server *s = &cfg->servers[i];

			json_decref(*out);
			*out = NULL;
			config_api_url(
			    cfg, s->address, s->api_port, base, sizeof(base));
			snprintf(url, sizeof(url), "%s%s", base, path);
			if (cli_status_http("GET", url, token, ca, 3000,
				&status, out, err, sizeof(err)) != 0)
				buf_printf(
				    &why, "%s%s", why.len ? "; " : "", err);
			/* a refusal is an answer: every server would say it */
			if (status == 400 || status == 401 || status == 403)
				break;
		}
	}
	if (*out && (status == 400 || status == 401 || status == 403)) {
		fprintf(stderr, "understudy %s: %s\n", cmd,
		    json_string_value(json_object_get(*out, "message")));
	} else if (*out == NULL || status != 200) {
		fprintf(stderr, "understudy %s: no server answered%s%s\n", cmd,
		    why.len ? ": " : "", why.len ? why.data : "");
	} else {
		rc = 0;
	}
out:
	if (rc != 0) {
		json_decref(*out);
		*out = NULL;
	}
	buf_free(&why);
	free(cfg_ca);
	config_free(cfg);
	config_diags_free(&d);
	return rc;
}

int
cli_status(int argc, char **argv)
{
	const char *server = NULL, *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN");
	const char *input = NULL, *ca = NULL;
	bool as_json = false;
	json_t *st = NULL;
	int rc = 1;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
			token = argv[++i];
		else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
			server = argv[++i];
		else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--input") == 0 && i + 1 < argc)
			input = argv[++i];
		else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
			ca = argv[++i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (input) {
		if ((st = load_file(input)) == NULL)
			goto out;
	} else if (cli_ask("status", server, file, "/v1/status", token, ca,
		       &st) != 0) {
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
	return rc;
}
