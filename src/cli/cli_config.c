/* understudy config check|doc */
#include <string.h>

#include "cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy config check [--print] [--json] FILE\n"
	    "       understudy config doc\n"
	    "       understudy config apply|history|show|diff|rollback ... "
	    "(--help)\n"
	    "\n"
	    "check  reads FILE and prints every problem as\n"
	    "       FILE:LINE: error|warning: message, then a summary line.\n"
	    "       Exit status 1 when there is an error (warnings alone: 0).\n"
	    "  --print  also print the normalised config: every option with\n"
	    "           its value, defaults included, secrets as (set)\n"
	    "           (only when error-free)\n"
	    "  --json   print {file, errors, warnings, problems[]} instead\n"
	    "doc    prints the reference of every option (docs/config.md).\n");
}

static void
print_json(const struct config_diags *d)
{
	json_t *arr = json_array(), *o;
	char *s;

	for (size_t i = 0; i < d->n; i++)
		json_array_append_new(arr,
		    json_pack("{s:i,s:s,s:s}", "line", d->v[i].line, "severity",
			d->v[i].severity == CONFIG_ERROR ? "error" : "warning",
			"message", d->v[i].message));
	o = json_pack("{s:s,s:i,s:i,s:o}", "file", d->path, "errors",
	    (int)d->errors, "warnings", (int)d->warnings, "problems", arr);
	s = json_dumps(o, JSON_INDENT(2));
	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(o);
}

static int
check(int argc, char **argv)
{
	bool print = false, as_json = false;
	const char *file = NULL;
	struct config_diags d = {0};
	struct config *cfg;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--print") == 0)
			print = true;
		else if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (argv[i][0] == '-' || file) {
			usage(stderr);
			return 2;
		} else
			file = argv[i];
	}
	if (file == NULL) {
		usage(stderr);
		return 2;
	}
	cfg = config_load(file, &d);
	rc = d.errors ? 1 : 0;
	if (as_json) {
		print_json(&d);
	} else {
		config_diags_print(&d, stdout);
		if (d.errors || d.warnings)
			printf("%s: %zu error%s, %zu warning%s\n", file,
			    d.errors, d.errors == 1 ? "" : "s", d.warnings,
			    d.warnings == 1 ? "" : "s");
		else
			printf("%s: ok\n", file);
		if (print && cfg && d.errors == 0) {
			printf("\n");
			config_print(cfg, stdout);
		}
	}
	config_free(cfg);
	config_diags_free(&d);
	return rc;
}

int
cli_config(int argc, char **argv)
{
	if (argc >= 2 &&
	    (strcmp(argv[1], "apply") == 0 || strcmp(argv[1], "history") == 0 ||
		strcmp(argv[1], "show") == 0 || strcmp(argv[1], "diff") == 0 ||
		strcmp(argv[1], "rollback") == 0))
		return cli_versions(argc - 1, argv + 1);
	if (argc < 2 || cli_wants_help(argc, argv)) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "check") == 0)
		return check(argc - 1, argv + 1);
	if (strcmp(argv[1], "doc") == 0 && argc == 2) {
		config_doc(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
