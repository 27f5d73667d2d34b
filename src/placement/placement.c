/*
 * The placement function. See placement.h for the rules; the scenario
 * table in tests/placement/scenarios.txt shows them case by case.
 */
#include <stdio.h>
#include <string.h>

#include "placement.h"

#define PLACEMENT_MAX_SERVERS 256

struct state {
	const struct placement_in *in;
	struct placement_decision *out;
	long load[PLACEMENT_MAX_SERVERS]; /* ports run or held */
	unsigned covers[PLACEMENT_MAX_SERVERS]; /* posts covered */
	bool done[PLACEMENT_MAX_SERVERS * 4];
};

static bool
eligible(const struct placement_server *s)
{
	return s->up && !s->stopped;
}

static long
free_ports(const struct state *st, int s)
{
	return st->in->servers[s].max_ports - st->load[s];
}

static void
decide(struct state *st, size_t p, int owner, enum placement_kind kind,
    const char *fmt, const char *a, const char *b)
{
	struct placement_decision *d = &st->out[p];

	d->owner = owner;
	d->kind = kind;
	snprintf(d->why, sizeof(d->why), fmt, a ? a : "", b ? b : "");
	st->done[p] = true;
	if (owner >= 0) {
		st->load[owner] += st->in->posts[p].ports;
		if (owner != st->in->posts[p].home)
			st->covers[owner]++;
	}
}

static bool
listed(const struct placement_post *p, int s)
{
	for (size_t i = 0; i < p->n_failover; i++)
		if (p->failover[i] == s)
			return true;
	return false;
}

/* Pass 1: posts whose home is up and not stopped. */
static void
pass_homes(struct state *st)
{
	const struct placement_in *in = st->in;

	for (size_t p = 0; p < in->n_posts; p++) {
		const struct placement_post *post = &in->posts[p];
		const struct placement_server *home = &in->servers[post->home];
		int c = post->owner;

		if (!eligible(home))
			continue;
		if (c < 0 || c == post->home) {
			decide(st, p, post->home, PLACEMENT_HOME,
			    "home %s is up", home->name, NULL);
			continue;
		}
		if (!eligible(&in->servers[c])) {
			decide(st, p, post->home, PLACEMENT_HOME,
			    "cover %s is gone; home %s is up",
			    in->servers[c].name, home->name);
			continue;
		}
		if (post->failback_requested) {
			decide(st, p, post->home, PLACEMENT_HOME,
			    "failback of %s requested%s", home->name, NULL);
			continue;
		}
		if (in->failback_auto &&
		    home->up_for_ms >= in->failback_delay_ms) {
			decide(st, p, post->home, PLACEMENT_HOME,
			    "home %s ready%s", home->name, NULL);
			continue;
		}
		/* the cover keeps it; its ports are counted in pass 2 */
	}
}

/* Pass 2: existing covers that are still valid keep their posts. */
static void
pass_keep(struct state *st)
{
	const struct placement_in *in = st->in;

	for (size_t p = 0; p < in->n_posts; p++) {
		const struct placement_post *post = &in->posts[p];
		const struct placement_server *home = &in->servers[post->home];
		int c = post->owner;

		if (st->done[p] || c < 0 || c == post->home)
			continue;
		if (!eligible(&in->servers[c]) ||
		    (!listed(post, c) && !in->servers[c].spare) ||
		    free_ports(st, c) < post->ports) {
			/* the cover is no longer valid */
			if (eligible(home))
				decide(st, p, post->home, PLACEMENT_HOME,
				    "cover %s can no longer run it; home %s is "
				    "up",
				    in->servers[c].name, home->name);
			continue;
		}
		if (eligible(home))
			decide(st, p, c, PLACEMENT_KEEP_COVER,
			    in->failback_auto
				? "%s keeps it until home %s has been up for "
				  "failback_delay"
				: "%s keeps it until an operator fails %s back",
			    in->servers[c].name, home->name);
		else if (home->up)
			decide(st, p, c, PLACEMENT_KEEP_COVER,
			    "%s keeps covering it (home %s is stopped)",
			    in->servers[c].name, home->name);
		else
			decide(st, p, c, PLACEMENT_KEEP_COVER,
			    "%s keeps covering it (home %s is down)",
			    in->servers[c].name, home->name);
	}
}

static const char *
server_state(const struct placement_server *s)
{
	return !s->up ? "down" : s->stopped ? "stopped" : NULL;
}

/* Pass 3: the rest get the first listed cover, or a spare. */
static void
pass_cover(struct state *st)
{
	const struct placement_in *in = st->in;

	for (size_t p = 0; p < in->n_posts; p++) {
		const struct placement_post *post = &in->posts[p];
		const char *hname = in->servers[post->home].name;
		char why[PLACEMENT_WHY_MAX] = "", part[96];
		int best = -1;

		if (st->done[p])
			continue;
		for (size_t i = 0; i < post->n_failover; i++) {
			int c = post->failover[i];
			const struct placement_server *s = &in->servers[c];

			if (c == post->home)
				continue;
			if (eligible(s) && free_ports(st, c) >= post->ports) {
				decide(st, p, c, PLACEMENT_COVER,
				    "home %s is %s; first listed cover with "
				    "room",
				    hname,
				    server_state(&in->servers[post->home]));
				break;
			}
			if (server_state(s))
				snprintf(part, sizeof(part), "%s%s is %s",
				    why[0] ? ", " : "", s->name,
				    server_state(s));
			else
				snprintf(part, sizeof(part),
				    "%s%s has %ld of %ld ports free",
				    why[0] ? ", " : "", s->name,
				    free_ports(st, c), post->ports);
			strncat(why, part, sizeof(why) - strlen(why) - 1);
		}
		if (st->done[p])
			continue;
		for (size_t s = 0; s < in->n_servers; s++) {
			const struct placement_server *sv = &in->servers[s];

			if (!sv->spare || !eligible(sv) ||
			    (int)s == post->home ||
			    free_ports(st, (int)s) < post->ports)
				continue;
			if (best < 0 || st->covers[s] < st->covers[best] ||
			    (st->covers[s] == st->covers[best] &&
				strcmp(sv->name, in->servers[best].name) < 0))
				best = (int)s;
		}
		if (best >= 0) {
			decide(st, p, best, PLACEMENT_SPARE,
			    "home %s is %s; no listed cover has room, spare",
			    hname, server_state(&in->servers[post->home]));
			continue;
		}
		snprintf(part, sizeof(part),
		    "%sno spare up with %ld ports free", why[0] ? "; " : "",
		    post->ports);
		strncat(why, part, sizeof(why) - strlen(why) - 1);
		decide(st, p, -1, PLACEMENT_UNSERVED, "home %s is %s: ", hname,
		    server_state(&in->servers[post->home]));
		{
			size_t used = strlen(st->out[p].why);
			size_t room = sizeof(st->out[p].why) - used - 1;
			size_t n = strlen(why) < room ? strlen(why) : room;

			memcpy(st->out[p].why + used, why, n);
			st->out[p].why[used + n] = '\0';
		}
	}
}

void
placement_compute(const struct placement_in *in, struct placement_decision *out)
{
	struct state st;

	memset(&st, 0, sizeof(st));
	memset(out, 0, in->n_posts * sizeof(*out));
	st.in = in;
	st.out = out;
	if (in->n_servers > PLACEMENT_MAX_SERVERS ||
	    in->n_posts > PLACEMENT_MAX_SERVERS * 4) {
		for (size_t p = 0; p < in->n_posts; p++) {
			out[p].owner = -1;
			out[p].kind = PLACEMENT_UNSERVED;
			snprintf(
			    out[p].why, sizeof(out[p].why), "too many servers");
		}
		return;
	}
	for (size_t s = 0; s < in->n_servers; s++)
		st.load[s] = in->servers[s].returning;
	pass_homes(&st);
	pass_keep(&st);
	pass_cover(&st);
}

const char *
placement_kind_name(enum placement_kind k)
{
	static const char *const names[] = {
	    "HOME", "KEEP_COVER", "COVER", "SPARE", "UNSERVED"};

	return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}
