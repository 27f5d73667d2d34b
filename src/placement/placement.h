/*
 * Placement: a pure function (no I/O, no clock) that says which server
 * should run each post, given the servers, which are up, which an
 * operator stopped, who owns what now, and the ports each holds. Every
 * server computes it from the same inputs, so they agree; the agent acts
 * to converge on it.
 */
#ifndef US_PLACEMENT_H
#define US_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_WHY_MAX 200

struct placement_server {
	const char *name;
	bool up; /* its membership key is present */
	bool stopped; /* an operator stopped it */
	bool spare;
	long max_ports;
	/* ports it still holds for posts it no longer owns (failing back) */
	long returning;
	/* how long it has been up, in ms (for failback_delay) */
	int64_t up_for_ms;
};

struct placement_post {
	const char *name;
	int home; /* index in servers */
	long ports;
	const int *failover; /* indices in servers, in order of preference */
	size_t n_failover;
	int owner; /* current owner, or -1 */
	bool failback_requested; /* by an operator */
};

struct placement_in {
	const struct placement_server *servers;
	size_t n_servers;
	const struct placement_post *posts;
	size_t n_posts;
	bool failback_auto;
	int64_t failback_delay_ms;
};

enum placement_kind {
	PLACEMENT_HOME, /* the home server runs it */
	PLACEMENT_KEEP_COVER, /* its cover keeps it (failback not due yet) */
	PLACEMENT_COVER, /* a server of its failover list */
	PLACEMENT_SPARE, /* a spare */
	PLACEMENT_UNSERVED /* nobody can */
};

struct placement_decision {
	int owner; /* index in servers, -1 when unserved */
	enum placement_kind kind;
	char why[PLACEMENT_WHY_MAX];
};

/*
 * Decide every post; out has n_posts entries. Rules, in order:
 * 1. a post's home runs it while up and not stopped, unless a cover runs
 *    it now and failback is not due (failback = auto and the home up for
 *    failback_delay, or an operator's request);
 * 2. an existing cover keeps it while it is up, not stopped, still in
 *    the list (or a spare) and it fits: no needless moves;
 * 3. otherwise the first server of the home's failover list that is up,
 *    not stopped and has free capacity for the whole post (free =
 *    max_ports - ports it runs or holds);
 * 4. otherwise the spare with room that covers the fewest posts, then
 *    the first by name;
 * 5. otherwise unserved, with the reason.
 * Ports are never split. Posts are decided in the order given.
 */
void placement_compute(
    const struct placement_in *in, struct placement_decision *out);

/* "HOME", "KEEP_COVER", ... */
const char *placement_kind_name(enum placement_kind k);

#endif
