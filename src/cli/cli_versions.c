/* understudy config apply|history|show|diff|rollback */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"

#define CMD(o) ((o)->cmd ? (o)->cmd : "config")

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy config apply FILE [--comment TEXT] [--dry-run]\n"
	    "       understudy config history\n"
	    "       understudy config show [--version N | --at TIME]\n"
	    "       understudy config diff N M\n"
	    "       understudy config rollback N [--comment TEXT]\n"
	    "  each with [--config FILE | --server URL] [--token T] [--ca "
	    "FILE] [--json]\n"
	    "\n"
	    "The cluster runs one configuration, stored in etcd as numbered\n"
	    "versions with their history; every server runs the version in\n"
	    "effect, whatever its local file says.\n"
	    "\n"
	    "apply     check FILE (any error stops it: nothing changes), show\n"
	    "          what changes against the version in effect and which\n"
	    "          servers need a restart for it, then store it as the "
	    "next\n"
	    "          version. Of two applies that race, one wins; the other\n"
	    "          gets ECONFLICT. --dry-run stores nothing.\n"
	    "history   every version: number, time, author, comment, what "
	    "changed\n"
	    "show      the text in effect, at version N, or at a time\n"
	    "          (2026-12-01T09:00Z, 2026-12-01, 2h for two hours ago)\n"
	    "diff      what changed from version N to version M\n"
	    "rollback  store version N's text again as a new version, through\n"
	    "          the same checks as apply\n"
	    "\n"
	    "The request goes to --server, else to the first server that "
	    "answers\n"
	    "of --config FILE ($UNDERSTUDY_CONFIG, the FILE being applied, or\n"
	    "examples/contact-center.conf). Every command but history needs "
	    "the\n"
	    "admin token: --token, $UNDERSTUDY_TOKEN, or the config's "
	    "admin_token.\n");
}

void
cli_versions_target_free(struct cli_versions_target *t)
{
	free(t->cfg_ca);
	config_free(t->cfg);
}

int
cli_versions_target(const struct cli_versions_opts *o, const char *fallback,
    struct cli_versions_target *t)
{
	const char *file = o->config ? o->config : getenv("UNDERSTUDY_CONFIG");
	struct config_diags d = {0};

	memset(t, 0, sizeof(*t));
	t->token = o->token ? o->token : getenv("UNDERSTUDY_TOKEN");
	t->ca = o->ca;
	if (o->server && t->token)
		return 0;
	if (file == NULL)
		file = fallback ? fallback : "examples/contact-center.conf";
	if ((t->cfg = config_load(file, &d)) == NULL || d.errors) {
		config_diags_print(&d, stderr);
		fprintf(stderr, "understudy %s: %s has errors\n", CMD(o), file);
		config_diags_free(&d);
		return -1;
	}
	config_diags_free(&d);
	if (t->token == NULL)
		t->token = t->cfg->cluster.admin_token;
	if (t->ca == NULL)
		t->ca = t->cfg_ca =
		    config_file_path(t->cfg, t->cfg->cluster.tls_ca);
	return 0;
}

int
cli_versions_ask(const struct cli_versions_opts *o,
    const struct cli_versions_target *t, const char *method, const char *path,
    const char *body, long *status, json_t **out)
{
	char err[512] = "", url[1024], base[300];
	struct buf why;
	int rc = -1;

	*out = NULL;
	*status = 0;
	buf_init(&why, 4096);
	if (o->server) {
		snprintf(url, sizeof(url), "%s%s", o->server, path);
		if (cli_http(method, url, t->token, t->ca, body, 15000, status,
			out, err, sizeof(err)) == 0)
			rc = 0;
		else
			buf_printf(&why, "%s", err);
	}
	for (int pass = 0;
	     !o->server && pass < CLI_PASSES && (pass == 0 || *status == 503);
	     pass++) {
		if (pass)
			usleep(CLI_PASS_WAIT_MS * 1000);
		for (size_t i = 0; i < t->cfg->n_servers; i++) {
			const struct config_server *s = &t->cfg->servers[i];

			json_decref(*out);
			*out = NULL;
			config_api_url(t->cfg, s->address, s->api_port, base,
			    sizeof(base));
			snprintf(url, sizeof(url), "%s%s", base, path);
			if (cli_http(method, url, t->token, t->ca, body, 15000,
				status, out, err, sizeof(err)) != 0) {
				buf_printf(
				    &why, "%s%s", why.len ? "; " : "", err);
				continue;
			}
			rc = 0;
			if (*status != 503)
				break;
		}
	}
	if (rc != 0)
		fprintf(stderr, "understudy %s: no server answered%s%s\n",
		    CMD(o), why.len ? ": " : "", why.len ? why.data : "");
	else if (*out == NULL) {
		fprintf(stderr, "understudy %s: %s answered %ld without JSON\n",
		    CMD(o), url, *status);
		rc = -1;
	}
	buf_free(&why);
	return rc;
}

static void
print_json(const json_t *o)
{
	char *s = json_dumps(o, JSON_INDENT(2));

	if (s)
		printf("%s\n", s);
	free(s);
}

int
cli_versions_refused(const struct cli_versions_opts *o, const json_t *out)
{
	const json_t *dg = json_object_get(out, "diagnostics");
	size_t i;
	json_t *g;

	json_array_foreach (dg, i, g)
		fprintf(stderr, "%s\n",
		    json_string_value(json_object_get(g, "text")));
	fprintf(stderr, "understudy %s: %s: %s\n", CMD(o),
	    json_string_value(json_object_get(out, "error")),
	    json_string_value(json_object_get(out, "message")));
	return 1;
}

static void
print_changes(const json_t *d)
{
	const json_t *ch = json_object_get(d, "changes"),
		     *re = json_object_get(d, "restart");
	size_t i;
	json_t *c;

	if (json_array_size(ch) == 0)
		printf("no change\n");
	json_array_foreach (ch, i, c)
		printf("  %s\n", json_string_value(json_object_get(c, "line")));
	json_array_foreach (re, i, c)
		printf("needs a restart of %s: %s\n",
		    json_string_value(json_object_get(c, "server")),
		    json_string_value(json_object_get(c, "because")));
}

static char *
author(void)
{
	struct passwd *pw = getpwuid(getuid());
	char host[100] = "?", *a = NULL;

	gethostname(host, sizeof(host) - 1);
	if (asprintf(&a, "%s@%s", pw ? pw->pw_name : "?", host) < 0)
		return NULL;
	return a;
}

int
cli_versions_post(const struct cli_versions_opts *o,
    const struct cli_versions_target *t, const char *name, const char *text,
    const char *comment, int64_t base, long *status, json_t **out)
{
	char *who = author(), *body;
	json_t *req;
	int rc = -1;

	*out = NULL;
	req = json_pack("{s:s,s:s,s:s,s:s,s:b}", "text", text, "name", name,
	    "comment", comment ? comment : "", "author", who ? who : "?",
	    "dry_run", o->dry_run);
	if (req && base > 0)
		json_object_set_new(req, "base", json_integer(base));
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	free(who);
	if (body == NULL)
		fprintf(stderr, "understudy %s: out of memory\n", CMD(o));
	else
		rc = cli_versions_ask(
		    o, t, "POST", "/v1/config", body, status, out);
	free(body);
	return rc;
}

int
cli_versions_print_answer(
    const struct cli_versions_opts *o, long status, const json_t *out)
{
	if (o->json)
		print_json(out);
	if (status != 200) {
		if (!o->json)
			cli_versions_refused(o, out);
		return 1;
	}
	if (o->json)
		return 0;
	print_changes(out);
	if (json_is_true(json_object_get(out, "dry_run")))
		printf("dry run: nothing stored; version %lld stays in "
		       "effect\n",
		    (long long)json_integer_value(
			json_object_get(out, "version")));
	else if (json_is_false(json_object_get(out, "stored")))
		printf("nothing to store: version %lld stays in effect\n",
		    (long long)json_integer_value(
			json_object_get(out, "version")));
	else
		printf("stored as version %lld (it replaces %lld), by %s. "
		       "Every server runs it within a second, but one that "
		       "needs a restart for it (above) keeps its version until "
		       "then: `understudy status` shows what each runs.\n",
		    (long long)json_integer_value(
			json_object_get(out, "version")),
		    (long long)json_integer_value(
			json_object_get(out, "replaces")),
		    json_string_value(json_object_get(out, "executed_by")));
	return 0;
}

/* POST text as the next version; rollback says which it came from. */
static int
store(const struct cli_versions_opts *o, const struct cli_versions_target *t,
    const char *name, const char *text, const char *comment)
{
	json_t *out = NULL;
	long status;
	int rc = 1;

	if (cli_versions_post(o, t, name, text, comment, 0, &status, &out) == 0)
		rc = cli_versions_print_answer(o, status, out);
	json_decref(out);
	return rc;
}

static int
apply(const struct cli_versions_opts *o)
{
	const char *file = o->args[0];
	struct config_diags d = {0};
	struct config *cfg;
	struct cli_versions_target t;
	char err[512], *text;
	FILE *f;
	size_t len = 0;
	int rc = 1;

	/* the same checker the servers run: nothing leaves with an error */
	cfg = config_load(file, &d);
	if (cfg == NULL || d.errors) {
		config_diags_print(&d, stderr);
		fprintf(stderr,
		    "understudy config apply: %s has errors: nothing "
		    "changed\n",
		    file);
		config_free(cfg);
		config_diags_free(&d);
		return 1;
	}
	config_free(cfg);
	config_diags_free(&d);
	if ((f = fopen(file, "r")) == NULL) {
		snprintf(err, sizeof(err), "%s", strerror(errno));
		fprintf(stderr, "understudy config apply: %s: %s\n", file, err);
		return 1;
	}
	text = calloc(1, CONFIG_FILE_MAX + 1);
	if (text)
		len = fread(text, 1, CONFIG_FILE_MAX, f);
	fclose(f);
	if (text == NULL)
		return 1;
	text[len] = '\0';
	if (cli_versions_target(o, file, &t) == 0)
		rc = store(o, &t, file, text, o->comment);
	cli_versions_target_free(&t);
	free(text);
	return rc;
}

static int
history(const struct cli_versions_opts *o)
{
	struct cli_versions_target t;
	json_t *out = NULL, *v;
	long status;
	size_t i;
	int rc = 1;

	if (cli_versions_target(o, NULL, &t) != 0)
		return 1;
	if (cli_versions_ask(
		o, &t, "GET", "/v1/config/history", NULL, &status, &out) == 0) {
		if (status != 200)
			cli_versions_refused(o, out);
		else if (o->json)
			print_json(out);
		else {
			int64_t in = json_integer_value(
			    json_object_get(out, "in_effect"));

			printf("%-8s %-24s %-28s %s\n", "VERSION", "TIME",
			    "AUTHOR", "COMMENT / WHAT CHANGED");
			json_array_foreach (
			    json_object_get(out, "versions"), i, v) {
				int64_t n = json_integer_value(
				    json_object_get(v, "version"));
				const char *c = json_string_value(
				    json_object_get(v, "comment"));

				printf("%c%-7lld %-24s %-28.28s %s%s%s\n",
				    n == in ? '*' : ' ', (long long)n,
				    json_string_value(
					json_object_get(v, "time")),
				    json_string_value(
					json_object_get(v, "author")),
				    c && *c ? c : "", c && *c ? ": " : "",
				    json_string_value(
					json_object_get(v, "summary")));
			}
			printf("* in effect\n");
		}
		rc = status == 200 ? 0 : 1;
	}
	json_decref(out);
	cli_versions_target_free(&t);
	return rc;
}

/* GET one version (NULL path: the one in effect); 0 with *out. */
static int
get_version(const struct cli_versions_opts *o, struct cli_versions_target *t,
    const char *path, json_t **out)
{
	long status;

	if (cli_versions_ask(o, t, "GET", path, NULL, &status, out) != 0)
		return -1;
	if (status != 200) {
		cli_versions_refused(o, *out);
		json_decref(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static int
show(const struct cli_versions_opts *o)
{
	char path[300];
	struct cli_versions_target t;
	json_t *out = NULL;
	int rc = 1;

	if (o->version > 0)
		snprintf(
		    path, sizeof(path), "/v1/config?version=%ld", o->version);
	else if (o->at) {
		char *q = curl_easy_escape(NULL, o->at, 0);

		snprintf(path, sizeof(path), "/v1/config?at=%s", q ? q : "");
		curl_free(q);
	} else
		snprintf(path, sizeof(path), "/v1/config");
	if (cli_versions_target(o, NULL, &t) != 0)
		return 1;
	if (get_version(o, &t, path, &out) == 0) {
		if (o->json)
			print_json(out);
		else
			fputs(json_string_value(json_object_get(out, "text")),
			    stdout);
		rc = 0;
	}
	json_decref(out);
	cli_versions_target_free(&t);
	return rc;
}

static int
diff(const struct cli_versions_opts *o)
{
	char path[300];
	struct cli_versions_target t;
	json_t *out = NULL;
	int rc = 1;

	snprintf(path, sizeof(path), "/v1/config/diff?from=%s&to=%s",
	    o->args[0], o->args[1]);
	if (cli_versions_target(o, NULL, &t) != 0)
		return 1;
	if (get_version(o, &t, path, &out) == 0) {
		if (o->json)
			print_json(out);
		else
			print_changes(out);
		rc = 0;
	}
	json_decref(out);
	cli_versions_target_free(&t);
	return rc;
}

static int
rollback(const struct cli_versions_opts *o)
{
	char path[300], comment[600], name[64];
	struct cli_versions_target t;
	json_t *out = NULL;
	int rc = 1;

	snprintf(path, sizeof(path), "/v1/config?version=%s", o->args[0]);
	if (cli_versions_target(o, NULL, &t) != 0)
		return 1;
	if (get_version(o, &t, path, &out) == 0) {
		snprintf(comment, sizeof(comment), "rollback to version %s%s%s",
		    o->args[0], o->comment ? ": " : "",
		    o->comment ? o->comment : "");
		snprintf(name, sizeof(name), "version %s", o->args[0]);
		rc = store(o, &t, name,
		    json_string_value(json_object_get(out, "text")), comment);
	}
	json_decref(out);
	cli_versions_target_free(&t);
	return rc;
}

static bool
is_number(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int
cli_versions(int argc, char **argv)
{
	const char *cmd = argv[0];
	struct cli_versions_opts o = {0};

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i],
			   *next = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--json") == 0)
			o.json = true;
		else if (strcmp(a, "--dry-run") == 0)
			o.dry_run = true;
		else if (next && strcmp(a, "--config") == 0)
			o.config = argv[++i];
		else if (next && strcmp(a, "--server") == 0)
			o.server = argv[++i];
		else if (next && strcmp(a, "--token") == 0)
			o.token = argv[++i];
		else if (next && strcmp(a, "--ca") == 0)
			o.ca = argv[++i];
		else if (next && strcmp(a, "--comment") == 0)
			o.comment = argv[++i];
		else if (next && strcmp(a, "--at") == 0)
			o.at = argv[++i];
		else if (next && strcmp(a, "--version") == 0 && is_number(next))
			o.version = strtol(argv[++i], NULL, 10);
		else if (a[0] != '-' && o.n_args < 3)
			o.args[o.n_args++] = a;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (strcmp(cmd, "apply") == 0 && o.n_args == 1)
		return apply(&o);
	if (strcmp(cmd, "history") == 0 && o.n_args == 0)
		return history(&o);
	if (strcmp(cmd, "show") == 0 && o.n_args == 0 &&
	    !(o.version > 0 && o.at))
		return show(&o);
	if (strcmp(cmd, "diff") == 0 && o.n_args == 2 && is_number(o.args[0]) &&
	    is_number(o.args[1]))
		return diff(&o);
	if (strcmp(cmd, "rollback") == 0 && o.n_args == 1 &&
	    is_number(o.args[0]))
		return rollback(&o);
	usage(stderr);
	return 2;
}
