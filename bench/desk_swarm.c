/*
 * desk-swarm: many offline desks in one process, on libunderstudy, for
 * bench/desks. Each desk d<i> gets a profile holding a session (the
 * token given), resumes it with us_resume, and the swarm turns every
 * desk's us_poll round after round until all are online again.
 *
 * usage: desk-swarm SERVER_URL PROFILES_DIR TOKENS_FILE FIRST COUNT
 *                   CLUSTER TIMEOUT_S
 * TOKENS_FILE: one session token per line; desk i uses line i.
 * Prints "ready" once every desk tried its server once (and is offline),
 * then, per desk, "online I WALL_MS POLL_MS" when it resumed (the wall
 * clock time, and how long the us_poll that did it took), and "done N".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <sqlite3.h>

#include "understudy/understudy.h"

static long long
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

/* Put the session into the desk's profile, as an earlier run left it. */
static int
seed(const char *dir, const char *token, const char *cluster)
{
	const char *kv[][2] = {{"token", token}, {"user", "agent"},
	    {"cluster", cluster}, {"messaging", "[]"}};
	char path[4200];
	sqlite3 *db;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/desk.db", dir);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		return -1;
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
		sqlite3_stmt *st;

		if (sqlite3_prepare_v2(db,
			"INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", -1,
			&st, NULL) != SQLITE_OK) {
			rc = -1;
			break;
		}
		sqlite3_bind_text(st, 1, kv[i][0], -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, kv[i][1], -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = -1;
		sqlite3_finalize(st);
	}
	sqlite3_exec(db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* A whole non-negative decimal number, or -1. */
static long
number(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	return *s && *end == '\0' && v >= 0 ? v : -1;
}

int
main(int argc, char **argv)
{
	const char *servers[1];
	struct rlimit rl;
	us_desk **desks;
	bool *online;
	char line[256], dir[4096], id[32];
	long first, count, done = 0, timeout;
	FILE *f;
	double t_end;

	if (argc != 8) {
		fprintf(stderr,
		    "usage: desk-swarm SERVER_URL PROFILES_DIR "
		    "TOKENS_FILE FIRST COUNT CLUSTER TIMEOUT_S\n");
		return 2;
	}
	servers[0] = argv[1];
	first = number(argv[4]);
	count = number(argv[5]);
	timeout = number(argv[7]);
	if (first < 0 || count <= 0 || timeout <= 0) {
		fprintf(stderr,
		    "desk-swarm: FIRST, COUNT and TIMEOUT_S are "
		    "numbers\n");
		return 2;
	}
	/* three files per SQLite profile (the database, its WAL, its index) */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	desks = calloc((size_t)count, sizeof(*desks));
	online = calloc((size_t)count, sizeof(*online));
	if ((f = fopen(argv[3], "r")) == NULL || desks == NULL || !online) {
		perror(argv[3]);
		return 1;
	}
	for (long i = 0; i < first + count && fgets(line, sizeof(line), f);
	     i++) {
		struct us_desk_config cfg = {0};
		long k = i - first;

		if (i < first)
			continue;
		line[strcspn(line, "\n")] = '\0';
		snprintf(dir, sizeof(dir), "%s/d%ld", argv[2], i);
		snprintf(id, sizeof(id), "d%ld", i);
		cfg.profile_dir = dir;
		cfg.desk_id = id;
		cfg.servers = servers;
		cfg.n_servers = 1;
		cfg.request_timeout_ms = 5000;
		if (us_desk_open(&cfg, &desks[k]) != 0) {
			fprintf(stderr, "desk %ld: cannot open %s\n", i, dir);
			return 1;
		}
		us_desk_close(desks[k]); /* its profile exists now */
		if (seed(dir, line, argv[6]) != 0 ||
		    us_desk_open(&cfg, &desks[k]) != 0 ||
		    us_resume(desks[k]) != 0) {
			fprintf(stderr, "desk %ld: cannot seed %s\n", i, dir);
			return 1;
		}
	}
	fclose(f);
	for (long k = 0; k < count; k++) {
		struct us_event ev;

		while (us_poll(desks[k], 0, &ev) == 1)
			;
	}
	printf("ready\n");
	fflush(stdout);
	t_end = mono_ms() + (double)timeout * 1000;
	while (done < count && mono_ms() < t_end) {
		for (long k = 0; k < count; k++) {
			struct us_event ev;
			double t0;

			if (online[k])
				continue;
			t0 = mono_ms();
			while (us_poll(desks[k], 0, &ev) == 1)
				;
			if (us_online(desks[k])) {
				online[k] = true;
				done++;
				printf("online %ld %lld %.3f\n", first + k,
				    wall_ms(), mono_ms() - t0);
			}
		}
		fflush(stdout);
	}
	printf("done %ld\n", done);
	for (long k = 0; k < count; k++)
		us_desk_close(desks[k]);
	free(desks);
	free(online);
	return done == count ? 0 : 1;
}
