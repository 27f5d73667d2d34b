/*
 * understudy backup [--to FILE], backup verify FILE, restore FILE: the
 * operator's side of src/backup/. (backup status, the scheduled
 * backups' state, is routed from cli_backup too, once it exists.)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "cli.h"

#define BAR_REDRAW_MS 100
#define BAR_WIDTH 20

static void
usage_backup(FILE *f)
{
	fprintf(f,
	    "usage: understudy backup [--to FILE] [--config FILE] [--token T] "
	    "[--ca FILE]\n"
	    "                         [--json]\n"
	    "       understudy backup verify FILE [--scratch DIR] [--json]\n"
	    "       understudy backup status [--json] (see backup status "
	    "--help)\n"
	    "\n"
	    "backup   one archive of the whole cluster, taken while it "
	    "serves: the\n"
	    "         etcd snapshot (with its hash) and every server's "
	    "database\n"
	    "         (SQLite's online backup), each checked by its sha256, "
	    "and a\n"
	    "         manifest. The archive is a tar file, by default\n"
	    "         understudy-CLUSTER-YYYYMMDDTHHMMSSZ.tar here; it is "
	    "written\n"
	    "         under a temporary name and never overwrites a file. A "
	    "server\n"
	    "         that does not answer is named and left out (a "
	    "warning); no\n"
	    "         etcd snapshot, no backup. Needs the admin token "
	    "(--token,\n"
	    "         $UNDERSTUDY_TOKEN or the config's admin_token).\n"
	    "verify   every checksum, the snapshot's own hash, each "
	    "database's\n"
	    "         integrity_check, then a restore test: a throwaway etcd "
	    "from\n"
	    "         the snapshot (etcd and etcdctl on PATH) in a scratch\n"
	    "         directory (--scratch, $TMPDIR or /tmp), every count "
	    "compared\n"
	    "         with the manifest. Exit 0 when every check passed, 1 "
	    "when\n"
	    "         one failed (each named with why), 2 when it could not "
	    "run.\n"
	    "\n"
	    "The servers asked are those of --config FILE "
	    "($UNDERSTUDY_CONFIG,\n"
	    "or examples/contact-center.conf). On a terminal a progress bar "
	    "shows\n"
	    "bytes, parts, rate and time left; --json prints only the "
	    "summary.\n");
}

static void
usage_restore(FILE *f)
{
	fprintf(f,
	    "usage: understudy restore FILE [--state-dir DIR] [--config FILE] "
	    "[--force]\n"
	    "                          [--ca FILE] [--json]\n"
	    "\n"
	    "Verifies FILE (as understudy backup verify does; nothing changes "
	    "when\n"
	    "a check fails), refuses while any server of its cluster or its "
	    "local\n"
	    "etcd answers (and names them), then restores the etcd snapshot "
	    "into\n"
	    "DIR/etcd and each server's database into "
	    "DIR/SERVER/understudy.db,\n"
	    "the layout understudy up uses (DIR defaults to ./var). Then\n"
	    "`understudy up CONFIG --state-dir DIR` runs the restored "
	    "cluster.\n"
	    "  --config FILE  the cluster's config (default "
	    "$UNDERSTUDY_CONFIG or\n"
	    "                 examples/contact-center.conf); its cluster "
	    "name must\n"
	    "                 be the archive's\n"
	    "  --force        move what is in the way (DIR/etcd, a "
	    "database) aside\n"
	    "                 as NAME.before-restore-TIME instead of "
	    "refusing\n"
	    "Exit status: 0 restored, 1 refused or a check failed (nothing "
	    "changed),\n"
	    "2 usage, or it could not run.\n");
}

static void
print_json(const json_t *o)
{
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (s)
		printf("%s\n", s);
	free(s);
}

static void
human(uint64_t n, char *out, size_t len)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < ARRAY_SIZE(unit)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%llu B", (unsigned long long)n);
	else
		snprintf(out, len, "%.1f %s", v, unit[u]);
}

/* ---- backup ---- */

struct bar {
	uint64_t t0, drawn;
	bool on;
	size_t width; /* of the last line drawn */
};

static void
bar_draw(const struct backup_progress *p, void *arg)
{
	struct bar *b = arg;
	uint64_t now = time_mono_ms(), ms = now - b->t0;
	char got[32], all[32], rate[32], left[32] = "", line[256], fill[64];
	double bps = ms ? (double)p->bytes * 1000 / (double)ms : 0;
	int n, filled = 0;

	if (!b->on || (now - b->drawn < BAR_REDRAW_MS && p->part))
		return;
	b->drawn = now;
	human(p->bytes, got, sizeof(got));
	human((uint64_t)bps, rate, sizeof(rate));
	if (p->bytes_expected > p->bytes && bps > 0)
		snprintf(left, sizeof(left), "  %.0f s left",
		    (double)(p->bytes_expected - p->bytes) / bps + 0.5);
	if (p->bytes_expected) {
		human(p->bytes_expected, all, sizeof(all));
		filled = (int)((double)p->bytes * BAR_WIDTH /
		    (double)p->bytes_expected);
	} else {
		str_copy(all, "?", sizeof(all));
	}
	if (filled > BAR_WIDTH)
		filled = BAR_WIDTH;
	for (n = 0; n < BAR_WIDTH; n++)
		fill[n] = n < filled ? '#' : '-';
	fill[BAR_WIDTH] = '\0';
	n = snprintf(line, sizeof(line),
	    "[%s] %s of ~%s  %d/%d parts  %s/s%s  %s", fill, got, all,
	    p->parts_done, p->parts_total, rate, left, p->part ? p->part : "");
	fprintf(stderr, "\r%s%*s", line,
	    (int)(b->width > (size_t)n ? b->width - (size_t)n : 0), "");
	b->width = (size_t)n;
	fflush(stderr);
}

static void
print_summary(const char *file, const json_t *m, double secs)
{
	const json_t *e = json_object_get(m, "etcd"), *p;
	uint64_t total = 0;
	char size[32];
	size_t i;

	printf("backup of cluster %s in %s\n",
	    json_string_value(json_object_get(m, "cluster")), file);
	json_array_foreach (json_object_get(m, "parts"), i, p) {
		const json_t *c = json_object_get(p, "counts");
		uint64_t n =
		    (uint64_t)json_integer_value(json_object_get(p, "size"));

		total += n;
		human(n, size, sizeof(size));
		if (strcmp(json_string_value(json_object_get(p, "kind")),
			"etcd") == 0)
			printf("  %-22s %10s  revision %lld, %lld keys, %lld "
			       "config versions (in effect: %lld), from %s\n",
			    json_string_value(json_object_get(p, "name")), size,
			    (long long)json_integer_value(
				json_object_get(e, "revision")),
			    (long long)json_integer_value(
				json_object_get(e, "keys")),
			    (long long)json_integer_value(
				json_object_get(e, "config_versions")),
			    (long long)json_integer_value(
				json_object_get(e, "config_version_in_effect")),
			    json_string_value(json_object_get(p, "server")));
		else
			printf("  %-22s %10s  %lld records, %lld sessions\n",
			    json_string_value(json_object_get(p, "name")), size,
			    (long long)json_integer_value(
				json_object_get(c, "records")),
			    (long long)json_integer_value(
				json_object_get(c, "sessions")));
	}
	human(total, size, sizeof(size));
	printf("%zu parts, %s in %.1f s; missing: %zu\n",
	    json_array_size(json_object_get(m, "parts")), size, secs,
	    json_array_size(json_object_get(m, "missing")));
}

static int
take(int argc, char **argv)
{
	struct cli_versions_opts o = {.cmd = "backup"};
	struct cli_versions_target t;
	struct backup_target bt;
	struct bar bar = {0};
	const char *to = NULL;
	char name[512], err[2048];
	json_t *m = NULL, *miss, *x;
	uint64_t t0;
	size_t i;
	int rc = 1;

	for (int i2 = 1; i2 < argc; i2++) {
		if (strcmp(argv[i2], "--to") == 0 && i2 + 1 < argc)
			to = argv[++i2];
		else if (strcmp(argv[i2], "--config") == 0 && i2 + 1 < argc)
			o.config = argv[++i2];
		else if (strcmp(argv[i2], "--token") == 0 && i2 + 1 < argc)
			o.token = argv[++i2];
		else if (strcmp(argv[i2], "--ca") == 0 && i2 + 1 < argc)
			o.ca = argv[++i2];
		else if (strcmp(argv[i2], "--json") == 0)
			o.json = true;
		else {
			usage_backup(stderr);
			return 2;
		}
	}
	if (cli_versions_target(&o, NULL, &t) != 0)
		goto out;
	if (t.token == NULL) {
		fprintf(stderr,
		    "understudy backup: no admin token (--token, "
		    "$UNDERSTUDY_TOKEN or the config's admin_token)\n");
		goto out;
	}
	if (to == NULL) {
		time_t now = time(NULL);
		struct tm tm;
		char stamp[32];

		gmtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
		snprintf(name, sizeof(name), "understudy-%s-%s.tar",
		    t.cfg->cluster.name, stamp);
		to = name;
	}
	bt.cfg = t.cfg;
	bt.token = t.token;
	bt.ca = t.ca;
	bar.on = !o.json && isatty(STDERR_FILENO);
	bar.t0 = t0 = time_mono_ms();
	if (backup_take(&bt, to, bar.on ? bar_draw : NULL, &bar, &m, err,
		sizeof(err)) != 0) {
		if (bar.on)
			fprintf(stderr, "\n");
		fprintf(stderr, "understudy backup: %s\n", err);
		goto out;
	}
	if (bar.on)
		fprintf(stderr, "\n");
	miss = json_object_get(m, "missing");
	json_array_foreach (miss, i, x) {
		fprintf(stderr,
		    "understudy backup: warning: %s: no database in the "
		    "archive: %s\n",
		    json_string_value(json_object_get(x, "server")),
		    json_string_value(json_object_get(x, "why")));
	}
	if (o.json) {
		json_t *s = json_pack("{s:s,s:O,s:f}", "file", to, "manifest",
		    m, "seconds", (double)(time_mono_ms() - t0) / 1000);

		print_json(s);
		json_decref(s);
	} else {
		print_summary(to, m, (double)(time_mono_ms() - t0) / 1000);
	}
	rc = 0;
out:
	json_decref(m);
	cli_versions_target_free(&t);
	return rc;
}

/* ---- verify ---- */

static void
print_checks(const char *cmd, const json_t *report, bool table)
{
	const json_t *c;
	size_t i;

	if (table)
		printf("  %-24s %-16s %s\n", "PART", "CHECK", "RESULT");
	json_array_foreach (json_object_get(report, "checks"), i, c) {
		bool ok = json_is_true(json_object_get(c, "ok"));
		const char *part =
		    json_string_value(json_object_get(c, "part"));
		const char *what =
		    json_string_value(json_object_get(c, "check"));
		const char *why = json_string_value(json_object_get(c, "why"));

		if (table)
			printf("%s %-24s %-16s %s\n", ok ? "✔" : "✘", part,
			    what, why);
		if (!ok)
			fprintf(stderr, "understudy %s: %s: %s: %s\n", cmd,
			    part, what, why);
	}
}

static int
verify(int argc, char **argv)
{
	const char *file = NULL, *scratch = NULL;
	json_t *report = NULL;
	char err[1024];
	bool as_json = false;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (strcmp(argv[i], "--scratch") == 0 && i + 1 < argc)
			scratch = argv[++i];
		else if (argv[i][0] != '-' && file == NULL)
			file = argv[i];
		else {
			usage_backup(stderr);
			return 2;
		}
	}
	if (file == NULL) {
		usage_backup(stderr);
		return 2;
	}
	rc = backup_verify(file, scratch, &report, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "understudy backup verify: %s\n", err);
		return 2;
	}
	if (as_json) {
		json_t *o = json_pack("{s:s,s:b,s:O}", "archive", file, "ok",
		    rc == 0, "checks", json_object_get(report, "checks"));

		print_json(o);
		json_decref(o);
		print_checks("backup verify", report, false);
	} else {
		print_checks("backup verify", report, true);
		printf("%s: %s\n", file,
		    rc == 0 ? "every check passed" : "FAILED");
	}
	json_decref(report);
	return rc == 0 ? 0 : 1;
}

int
cli_backup(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "status") == 0)
		return cli_backup_status(argc - 1, argv + 1);
	if (cli_wants_help(argc, argv)) {
		usage_backup(stdout);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "verify") == 0)
		return verify(argc - 1, argv + 1);
	return take(argc, argv);
}

/* ---- restore ---- */

int
cli_restore(int argc, char **argv)
{
	struct cli_versions_opts o = {.cmd = "restore"};
	struct cli_versions_target t;
	struct backup_restore_opts ro = {.state_dir = "var"};
	json_t *report = NULL, *r;
	const char *refused;
	char err[1024];
	size_t i;
	int rc = 2;

	if (cli_wants_help(argc, argv)) {
		usage_restore(stdout);
		return 0;
	}
	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--state-dir") == 0 && k + 1 < argc)
			ro.state_dir = argv[++k];
		else if (strcmp(argv[k], "--config") == 0 && k + 1 < argc)
			o.config = argv[++k];
		else if (strcmp(argv[k], "--ca") == 0 && k + 1 < argc)
			o.ca = argv[++k];
		else if (strcmp(argv[k], "--force") == 0)
			ro.force = true;
		else if (strcmp(argv[k], "--json") == 0)
			o.json = true;
		else if (argv[k][0] != '-' && ro.path == NULL)
			ro.path = argv[k];
		else {
			usage_restore(stderr);
			return 2;
		}
	}
	if (ro.path == NULL) {
		usage_restore(stderr);
		return 2;
	}
	if (cli_versions_target(&o, NULL, &t) != 0)
		goto out;
	ro.cfg = t.cfg;
	ro.ca = t.ca;
	rc = backup_restore(&ro, &report, err, sizeof(err));
	if (o.json)
		print_json(report);
	else if (json_object_get(report, "verify"))
		print_checks(
		    "restore", json_object_get(report, "verify"), false);
	if (rc < 0) {
		fprintf(stderr, "understudy restore: %s%s\n", err,
		    json_array_size(json_object_get(report, "restored")) == 0
			? " (nothing was changed)"
			: "");
		rc = 2;
		goto out;
	}
	refused = json_string_value(json_object_get(report, "refused"));
	if (refused) {
		fprintf(stderr, "understudy restore: refused: %s\n", refused);
		rc = 1;
		goto out;
	}
	if (!o.json) {
		printf("restored %s into %s:\n", ro.path, ro.state_dir);
		json_array_foreach (
		    json_object_get(report, "moved_aside"), i, r)
			printf("  moved aside %s -> %s\n",
			    json_string_value(json_object_get(r, "from")),
			    json_string_value(json_object_get(r, "to")));
		json_array_foreach (json_object_get(report, "restored"), i, r)
			printf("  %-22s -> %s\n",
			    json_string_value(json_object_get(r, "part")),
			    json_string_value(json_object_get(r, "to")));
		printf("run it: understudy up %s --state-dir %s\n",
		    t.cfg->path ? t.cfg->path : "CONFIG", ro.state_dir);
	}
	rc = 0;
out:
	json_decref(report);
	cli_versions_target_free(&t);
	return rc;
}
