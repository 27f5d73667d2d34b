/*
 * The placement scenario table: tests/placement/scenarios.txt (format at
 * its top). Every case is run and every post's decision compared.
 */
#include <ctype.h>

#include "placement/placement.h"
#include "test.h"

#define MAXS 32

struct scenario {
	char name[128];
	int line;
	char names[MAXS][32];
	struct placement_server servers[MAXS];
	int failover[MAXS][MAXS];
	size_t n_servers;
	struct placement_post posts[MAXS];
	size_t n_posts;
	bool failback_auto;
	int64_t delay;
	char expect[MAXS][32]; /* per post: server name or "-" */
	bool has_expect[MAXS];
	char why[MAXS][128];
};

static int
server_index(struct scenario *sc, const char *name)
{
	for (size_t i = 0; i < sc->n_servers; i++)
		if (strcmp(sc->names[i], name) == 0)
			return (int)i;
	fprintf(stderr, "line %d: unknown server %s\n", sc->line, name);
	exit(1);
}

static int
post_index(struct scenario *sc, const char *name)
{
	for (size_t i = 0; i < sc->n_posts; i++)
		if (strcmp(sc->posts[i].name, name) == 0)
			return (int)i;
	fprintf(stderr, "line %d: unknown post %s\n", sc->line, name);
	exit(1);
}

static void
parse_servers(struct scenario *sc, char *rest)
{
	char *save = NULL;

	for (char *t = strtok_r(rest, " ", &save); t;
	     t = strtok_r(NULL, " ", &save)) {
		struct placement_server *s = &sc->servers[sc->n_servers];
		char *colon = strchr(t, ':'), *slash, *gt;

		ASSERT(colon && sc->n_servers < MAXS);
		*colon = '\0';
		snprintf(sc->names[sc->n_servers], 32, "%s", t);
		s->name = sc->names[sc->n_servers];
		s->up_for_ms = 1000000000;
		slash = strchr(colon + 1, '/');
		ASSERT(slash);
		*slash = '\0';
		gt = strchr(slash + 1, '>');
		if (gt)
			*gt = '\0';
		s->max_ports = strtol(slash + 1, NULL, 10);
		if (strcmp(colon + 1, "spare") == 0) {
			s->spare = true;
		} else {
			struct placement_post *p = &sc->posts[sc->n_posts++];

			p->name = s->name;
			p->home = (int)sc->n_servers;
			p->ports = strtol(colon + 1, NULL, 10);
			p->owner = -1;
			p->failover = sc->failover[sc->n_posts - 1];
			/* names resolved once every server is known */
			if (gt)
				snprintf(sc->why[sc->n_posts - 1], 128, "%s",
				    gt + 1);
		}
		sc->n_servers++;
	}
	/* the failover lists, kept in why[] until now */
	for (size_t p = 0; p < sc->n_posts; p++) {
		char *save2 = NULL, list[128];

		snprintf(list, sizeof(list), "%s", sc->why[p]);
		sc->why[p][0] = '\0';
		for (char *t = strtok_r(list, ",", &save2); t;
		     t = strtok_r(NULL, ",", &save2))
			sc->failover[p][sc->posts[p].n_failover++] =
			    server_index(sc, t);
	}
}

static void
run_case(struct scenario *sc, unsigned *failures)
{
	struct placement_in in = {sc->servers, sc->n_servers, sc->posts,
	    sc->n_posts, sc->failback_auto, sc->delay};
	struct placement_decision out[MAXS];
	bool ok = true;

	placement_compute(&in, out);
	for (size_t p = 0; p < sc->n_posts; p++) {
		const char *got =
		    out[p].owner < 0 ? "-" : sc->names[out[p].owner];

		if (!sc->has_expect[p]) {
			fprintf(stderr, "case '%s': no expectation for %s\n",
			    sc->name, sc->posts[p].name);
			ok = false;
		} else if (strcmp(got, sc->expect[p]) != 0) {
			fprintf(stderr,
			    "case '%s' (line %d): %s: got %s (%s: %s), "
			    "expected %s\n",
			    sc->name, sc->line, sc->posts[p].name, got,
			    placement_kind_name(out[p].kind), out[p].why,
			    sc->expect[p]);
			ok = false;
		}
		if (sc->why[p][0] && !strstr(out[p].why, sc->why[p])) {
			fprintf(stderr,
			    "case '%s' (line %d): %s: reason '%s' lacks '%s'\n",
			    sc->name, sc->line, sc->posts[p].name, out[p].why,
			    sc->why[p]);
			ok = false;
		}
	}
	if (!ok)
		(*failures)++;
}

static void
apply(struct scenario *sc, const char *key, char *rest)
{
	char *save = NULL;

	if (strcmp(key, "servers") == 0) {
		parse_servers(sc, rest);
		return;
	}
	if (strcmp(key, "failback") == 0) {
		sc->failback_auto = strncmp(rest, "auto", 4) == 0;
		if (sc->failback_auto && strlen(rest) > 5)
			sc->delay = strtol(rest + 5, NULL, 10);
		return;
	}
	if (strcmp(key, "why") == 0) {
		char *tilde = strstr(rest, " ~ ");

		ASSERT(tilde);
		*tilde = '\0';
		snprintf(sc->why[post_index(sc, rest)], 128, "%s", tilde + 3);
		return;
	}
	for (char *t = strtok_r(rest, " ", &save); t;
	     t = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(t, '=');

		if (eq)
			*eq = '\0';
		if (strcmp(key, "up") == 0)
			sc->servers[server_index(sc, t)].up = true;
		else if (strcmp(key, "stopped") == 0)
			sc->servers[server_index(sc, t)].stopped = true;
		else if (strcmp(key, "requested") == 0)
			sc->posts[post_index(sc, t)].failback_requested = true;
		else if (strcmp(key, "owners") == 0 && eq)
			sc->posts[post_index(sc, t)].owner =
			    strcmp(eq + 1, "-") ? server_index(sc, eq + 1) : -1;
		else if (strcmp(key, "returning") == 0 && eq)
			sc->servers[server_index(sc, t)].returning =
			    strtol(eq + 1, NULL, 10);
		else if (strcmp(key, "upfor") == 0 && eq)
			sc->servers[server_index(sc, t)].up_for_ms =
			    strtol(eq + 1, NULL, 10);
		else if (strcmp(key, "expect") == 0 && eq) {
			int p = post_index(sc, t);

			snprintf(sc->expect[p], 32, "%s", eq + 1);
			sc->has_expect[p] = true;
		} else {
			fprintf(stderr, "line %d: cannot read '%s %s'\n",
			    sc->line, key, t);
			exit(1);
		}
	}
}

static void
scenario_reset(struct scenario *sc, const char *name, int line)
{
	memset(sc, 0, sizeof(*sc));
	snprintf(sc->name, sizeof(sc->name), "%s", name);
	sc->line = line;
	sc->failback_auto = true;
	sc->delay = 10000;
}

TEST(placement_scenarios)
{
	FILE *f = fopen(PLACEMENT_SCENARIOS, "r");
	struct scenario *sc = calloc(1, sizeof(*sc));
	unsigned cases = 0, failures = 0;
	char line[1024];
	int lineno = 0;
	bool open = false;

	ASSERT(f != NULL && sc != NULL);
	while (fgets(line, sizeof(line), f)) {
		char *key = line, *rest;
		size_t n = strlen(line);

		lineno++;
		while (n && isspace((unsigned char)line[n - 1]))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		rest = strchr(line, ' ');
		if (rest)
			*rest++ = '\0';
		else
			rest = line + n;
		if (strcmp(key, "case") == 0) {
			if (open)
				run_case(sc, &failures);
			scenario_reset(sc, rest, lineno);
			open = true;
			cases++;
			continue;
		}
		sc->line = lineno;
		apply(sc, key, rest);
	}
	if (open)
		run_case(sc, &failures);
	fclose(f);
	free(sc);
	fprintf(stderr, "placement: %u cases, %u failed\n", cases, failures);
	ASSERT(cases >= 40);
	ASSERT_INT(failures, 0);
}

TEST(placement_deterministic)
{
	/* the same inputs always give the same decision */
	struct placement_server sv[3] = {{"PA1", false, false, false, 36, 0, 0},
	    {"PA2", true, false, true, 18, 0, 0},
	    {"PA3", true, false, false, 36, 0, 0}};
	int f1[] = {2}, f3[] = {0};
	struct placement_post po[2] = {
	    {"PA1", 0, 18, f1, 1, -1, false}, {"PA3", 2, 18, f3, 1, 2, false}};
	struct placement_in in = {sv, 3, po, 2, true, 10000};
	struct placement_decision a[2], b[2];

	placement_compute(&in, a);
	placement_compute(&in, b);
	ASSERT(memcmp(a, b, sizeof(a)) == 0);
	ASSERT_INT(a[0].owner, 2);
	ASSERT_INT(a[0].kind, PLACEMENT_COVER);
}
