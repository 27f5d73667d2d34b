/*
 * understudy backup status: the scheduled backups of the cluster, as the
 * administrator's daily check wants them said ("Backups completed
 * today", "Last backup finished at"), from any server (GET /v1/backups).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy backup status [--config FILE | --server URL] "
	    "[--token T]\n"
	    "           [--ca FILE] [--json]\n"
	    "\n"
	    "Prints the scheduled backups of the cluster: how many finished "
	    "today,\n"
	    "when the last one finished, its size and whether it was "
	    "verified, the\n"
	    "last failure, what runs now, the next scheduled time and the "
	    "kept\n"
	    "archives. Times are this machine's local time.\n"
	    "\n"
	    "  --config FILE  ask the servers of this config, in order "
	    "(default\n"
	    "                 $UNDERSTUDY_CONFIG, then "
	    "examples/contact-center.conf)\n"
	    "  --server URL   ask this server\n"
	    "  --token T      the read_token or admin_token (default\n"
	    "                 $UNDERSTUDY_TOKEN, then the config's)\n"
	    "  --ca FILE      verify an https:// server with this CA\n"
	    "  --json         the server's answer, as JSON\n"
	    "\n"
	    "Exit status: 0, or 1 when the last attempt failed or no server "
	    "answered.\n");
}

static const char *
local_time(json_int_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0 || localtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, len, "-");
	return buf;
}

static const char *
size_text(json_int_t n, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%lld B", (long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

static json_int_t
num(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *
str(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

static void
print_status(const json_t *b)
{
	const json_t *ok = json_object_get(b, "last_ok"),
		     *last = json_object_get(b, "last"), *a;
	char t[32], sz[32];
	size_t i;

	printf("Backups completed today: %lld\n",
	    (long long)num(b, "completed_today"));
	if (json_is_object(ok))
		printf("Status: Last backup finished at %s, %s, %s%s\n",
		    local_time(num(ok, "finished"), t, sizeof(t)),
		    size_text(num(ok, "size"), sz, sizeof(sz)),
		    json_is_true(json_object_get(ok, "verified"))
			? "verified"
			: "NOT verified",
		    num(ok, "missing") > 0 ? ", WITHOUT the database of a "
					     "server that did not answer"
					   : "");
	else
		printf("Status: no backup has finished\n");
	if (json_is_object(last) && strcmp(str(last, "result"), "failed") == 0)
		printf("Last attempt FAILED at %s on %s: %s\n",
		    local_time(num(last, "finished"), t, sizeof(t)),
		    str(last, "server"), str(last, "error"));
	json_array_foreach (json_object_get(b, "running"), i, a)
		printf("Running: since %s on %s (attempt %lld)\n",
		    local_time(num(a, "started"), t, sizeof(t)),
		    str(a, "server"), (long long)num(a, "attempt"));
	if (json_is_string(json_object_get(b, "schedule")))
		printf("Schedule: %s, next at %s; keeping %lld in %s on the "
		       "admin primary (%s)\n",
		    str(b, "schedule"),
		    local_time(num(b, "next"), t, sizeof(t)),
		    (long long)num(b, "keep"), str(b, "dir"),
		    str(b, "primary"));
	else
		printf("Schedule: none (set backup_schedule in [cluster])\n");
	if (json_array_size(json_object_get(b, "archives")) == 0)
		return;
	printf("\nKept archives:\n%-19s  %10s  %-8s  %-6s  %s\n", "FINISHED",
	    "SIZE", "VERIFIED", "SERVER", "FILE");
	json_array_foreach (json_object_get(b, "archives"), i, a)
		printf("%-19s  %10s  %-8s  %-6s  %s\n",
		    local_time(num(a, "finished"), t, sizeof(t)),
		    size_text(num(a, "size"), sz, sizeof(sz)),
		    json_is_true(json_object_get(a, "verified")) ? "yes" : "NO",
		    str(a, "server"), str(a, "file"));
}

int
cli_backup_status(int argc, char **argv)
{
	const char *server = NULL, *file = getenv("UNDERSTUDY_CONFIG");
	const char *token = getenv("UNDERSTUDY_TOKEN"), *ca = NULL;
	bool as_json = false;
	json_t *ans = NULL;
	int rc;

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
		else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
			ca = argv[++i];
		else {
			fprintf(stderr,
			    "understudy backup status: unknown argument "
			    "'%s'\n\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (cli_ask("backup status", server, file, "/v1/backups", token, ca,
		&ans) != 0)
		return 1;
	if (as_json) {
		char *s = json_dumps(ans, JSON_INDENT(2));

		printf("%s\n", s ? s : "null");
		free(s);
	} else {
		print_status(ans);
	}
	/* for cron: the last attempt failed */
	rc = strcmp(str(json_object_get(ans, "last"), "result"), "failed") == 0;
	json_decref(ans);
	return rc;
}
