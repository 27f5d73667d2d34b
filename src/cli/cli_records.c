/* understudy records: the call records, from any server's copy. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

static const char *const fields[] = {"call", "route_point", "post", "server",
    "port", "origin", "caller", "start", "answer", "end", "duration_ms",
    "ended_by", "status", "closed_by"};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy records [--config FILE | --server URL] "
	    "[--token T] [--ca FILE]\n"
	    "           [--since T] [--until T] [--route-point RP] [--post "
	    "NAME]\n"
	    "           [--status S] [--limit N] [--order oldest|newest] "
	    "[--after CURSOR]\n"
	    "           [--json | --csv]\n"
	    "\n"
	    "Prints the records of calls that ended in a time range, the "
	    "oldest\n"
	    "first unless --order newest: one per call, with how it ended "
	    "and its\n"
	    "termination status\n"
	    "(NORMAL, BUSY, TRANSFERRED, FAILED_SOFTWARE, FAILED_HARDWARE).\n"
	    "Every server holds a copy of every record; the first that "
	    "answers\n"
	    "is asked.\n"
	    "\n"
	    "  --config FILE      ask the servers of this config, in order\n"
	    "                     (default $UNDERSTUDY_CONFIG, then\n"
	    "                     examples/contact-center.conf)\n"
	    "  --server URL       ask this server (http://127.0.0.1:8001)\n"
	    "  --ca FILE          verify an https:// server with this CA\n"
	    "                     (default the config's tls_ca, else the\n"
	    "                     system's CAs)\n"
	    "  --since T          ended at or after T: ISO 8601 "
	    "(2026-11-22T09:00Z),\n"
	    "                     ms since the epoch, or an age (30m, 2h, "
	    "7d)\n"
	    "  --until T          ended before T\n"
	    "  --route-point RP   only calls to this route point\n"
	    "  --post NAME        only calls of this post\n"
	    "  --status S         only records with this status\n"
	    "  --limit N          at most N records (default 1000, at most "
	    "100000)\n"
	    "  --order O          oldest (the default) or newest first\n"
	    "  --after CURSOR     the next page: the \"next\" of a --json "
	    "answer\n"
	    "                     (with the same filters and order)\n"
	    "  --json             the server's answer, as JSON\n"
	    "  --csv              one line per record, with a header line\n"
	    "\n"
	    "Records hold caller ids: the server wants the read_token or the\n"
	    "admin_token, taken from --token, $UNDERSTUDY_TOKEN, or the "
	    "config.\n");
}

static const char *
field(json_t *r, const char *k, char *buf, size_t len)
{
	json_t *v = json_object_get(r, k);

	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(
		    buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return buf;
	}
	return "";
}

/* RFC 4180: quoted when it holds a comma, a quote or a line break */
static void
csv_cell(const char *v)
{
	if (strpbrk(v, ",\"\r\n") == NULL) {
		fputs(v, stdout);
		return;
	}
	putchar('"');
	for (; *v; v++) {
		if (*v == '"')
			putchar('"');
		putchar(*v);
	}
	putchar('"');
}

static void
print_csv(json_t *arr)
{
	size_t i;
	json_t *r;
	char num[32];

	for (size_t f = 0; f < ARRAY_SIZE(fields); f++)
		printf("%s%s", f ? "," : "", fields[f]);
	printf("\r\n");
	json_array_foreach (arr, i, r) {
		for (size_t f = 0; f < ARRAY_SIZE(fields); f++) {
			if (f)
				putchar(',');
			csv_cell(field(r, fields[f], num, sizeof(num)));
		}
		printf("\r\n");
	}
}

static void
print_table(json_t *arr)
{
	size_t i;
	json_t *r;
	char num[32], dur[32];

	printf("%-24s %-30s %-8s %-6s %-6s %-6s %9s %-15s %s\n", "END", "CALL",
	    "ROUTE", "POST", "SERVER", "PORT", "DURATION", "STATUS",
	    "ENDED BY");
	json_array_foreach (arr, i, r) {
		long long ms =
		    json_integer_value(json_object_get(r, "duration_ms"));

		snprintf(
		    dur, sizeof(dur), "%lld.%03llds", ms / 1000, ms % 1000);
		printf("%-24s %-30s %-8s %-6s %-6s %-6s %9s %-15s %s\n",
		    field(r, "end", num, sizeof(num)),
		    field(r, "call", num, sizeof(num)),
		    field(r, "route_point", num, sizeof(num)),
		    field(r, "post", num, sizeof(num)),
		    field(r, "server", num, sizeof(num)),
		    json_is_null(json_object_get(r, "port"))
			? "-"
			: field(r, "port", num, sizeof(num)),
		    dur, field(r, "status", num, sizeof(num)),
		    field(r, "ended_by", num, sizeof(num)));
	}
	printf("%zu record%s\n", json_array_size(arr),
	    json_array_size(arr) == 1 ? "" : "s");
}

int
cli_records(int argc, char **argv)
{
	static const struct {
		const char *opt, *param;
	} filters[] = {{"--since", "since"}, {"--until", "until"},
	    {"--route-point", "route_point"}, {"--post", "post"},
	    {"--status", "status"}, {"--limit", "limit"}, {"--order", "order"},
	    {"--after", "after"}};
	const char *server = NULL, *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN"), *ca = NULL;
	bool as_json = false, as_csv = false, known;
	char path[2048] = "/v1/records";
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
		else if (strcmp(argv[i], "--csv") == 0)
			as_csv = true;
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
			    "understudy records: unknown argument "
			    "'%s'\n\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (as_json && as_csv) {
		fprintf(stderr,
		    "understudy records: --json and --csv exclude each "
		    "other\n");
		return 2;
	}
	if (cli_ask("records", server, file, path, token, ca, &ans) != 0)
		return 1;
	arr = json_object_get(ans, "records");
	if (!json_is_array(arr)) {
		fprintf(
		    stderr, "understudy records: the answer has no records\n");
		goto out;
	}
	if (as_json) {
		char *s = json_dumps(ans, JSON_INDENT(2));

		printf("%s\n", s ? s : "null");
		free(s);
	} else if (as_csv) {
		print_csv(arr);
	} else {
		print_table(arr);
	}
	rc = 0;
out:
	json_decref(ans);
	return rc;
}
