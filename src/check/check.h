/*
 * The maintenance check (docs/operations.md, "The daily check"). Each
 * server checks itself (probe.c: GET /v1/check, in the thread pool); the
 * cluster check (cluster.c) asks every server of a config and merges
 * their rows, for `understudy check` and for the admin primary's
 * scheduled run (sched.c). Everything in probe.c and cluster.c blocks:
 * call it from a thread, never from the loop.
 *
 * A row: {"name", "group" (links, archiving, backups, errors, disk,
 * config), "server" (whom it is about), "ok", "detail", measures...}.
 */
#ifndef US_CHECK_H
#define US_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"

#define CHECK_PROBE_MS 1500 /* each probe's own bound */
#define CHECK_LAG_MAX_MS 10000 /* a record copy this far behind fails */
#define CHECK_SINCE_DEFAULT_MS (24LL * 3600 * 1000)
#define CHECK_ANSWER_MAX (4u * 1024 * 1024)

/* A new row (the caller's), with detail formatted. */
json_t *check_row(const char *group, const char *name, const char *server,
    bool ok, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * method url with a bounded wait (connect included); body: JSON to POST,
 * or NULL; token: a bearer, or NULL; ca, cert, key: PEM files or NULL.
 * Returns 0 with the HTTP status and the JSON answer (NULL when it is
 * not JSON; the caller's), or -1 with the reason in err.
 */
int check_http(const char *method, const char *url, const char *body,
    const char *token, const char *ca, const char *cert, const char *key,
    long timeout_ms, long *status, json_t **out, char *err, size_t errlen);

/* probe.c */

/* What a server's own check needs, copied on the loop (all owned). */
struct check_probe {
	char *cluster, *self, *address;
	char **etcd; /* endpoints */
	size_t n_etcd;
	char *etcd_ca, *etcd_cert, *etcd_key;
	char *registrar_host; /* NULL: no registrar */
	int registrar_port;
	json_t *route_points; /* [{route_point, post, registered, ...}] */
	char **nats; /* URLs */
	size_t n_nats;
	char *nats_ca, *nats_cert, *nats_key, *nats_token, *nats_user,
	    *nats_password;
	char **peers; /* other servers: name */
	char **peer_urls; /* and their API's base URL */
	size_t n_peers;
	char **servers; /* every server: whose record copies to look at */
	size_t n_servers;
	char *api_ca; /* the cluster's tls_ca, for https:// peers */
	char *state_dir;
	int64_t min_free_bytes; /* check_disk_min_free */
	json_t *config_rows; /* made on the loop */
	json_t *errors_row; /* made on the loop */
};

/* Free p's contents. */
void check_probe_clear(struct check_probe *p);

/*
 * Run every probe of p (links, archiving, disk), bounded by
 * CHECK_PROBE_MS each, and return every row, config_rows and errors_row
 * included (the caller's).
 */
json_t *check_probe_run(struct check_probe *p);

/*
 * Only the probes of this server's links (each etcd member and the
 * quorum, the registrar and the route points it registers, each NATS
 * server, every peer's API), each row with its "target" and, where it
 * is a request, "latency_ms" (the caller's). For GET /v1/links.
 */
json_t *check_links_run(struct check_probe *p);

/* cluster.c */

/* Whom the cluster check asks, and with what. */
struct check_target {
	const struct config *cfg;
	const char *token; /* read_token or admin_token */
	const char *ca; /* for https:// servers, NULL: the system's */
	int64_t since_ms; /* errors logged since then count */
	int64_t now_ms;
};

/*
 * Ask every server of t->cfg for its check and the cluster for its
 * backups, and merge: {"time", "since", "ok", "failures", "servers":
 * [name...], "rows": [...]} (the caller's). Never NULL but out of memory.
 */
json_t *check_cluster(const struct check_target *t);

/*
 * The backups row from an answer of GET /v1/backups (status 404: the
 * server has no backups yet). In one place, to follow that route.
 */
json_t *check_backups_row(long status, const json_t *ans, int64_t now_ms);

/* sched.c */

struct check_sched;
struct agent;
struct etcd;

/*
 * On the admin primary, run the cluster check at each slot of
 * cfg->cluster.check_schedule (in the thread pool) and keep the result
 * in etcd at /understudy/<cluster>/check/last; on every server, keep a
 * copy of that key for /metrics. NULL on ENOMEM.
 */
struct check_sched *check_sched_new(
    uv_loop_t *loop, struct agent *a, struct etcd *e, const char *ca);

/* The configuration running now (a new version). */
void check_sched_set_config(struct check_sched *s, const struct config *cfg);

/*
 * The last result known (borrowed; NULL: none yet), read from etcd every
 * few seconds.
 */
const json_t *check_sched_last(const struct check_sched *s);

/* Stop and free; a run in flight finishes first. NULL is a no-op. */
void check_sched_free(struct check_sched *s);

#endif
