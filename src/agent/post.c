/*
 * The post state machine. Every server runs one per post, fed with
 * events the agent derives from etcd (who owns the post, who still holds
 * its ports), so every server logs the same life of every post:
 *
 *   UNSERVED --HOME_CLAIMED--> HOME --COVER_CLAIMED--> COVERED(X)
 *   COVERED(X) --HANDED_HOME--> FAILING_BACK(X) --PORTS_RETURNED--> HOME
 *   any --OWNER_LOST--> UNSERVED
 *
 * Every transition goes through post_set_state, which logs it.
 */
#include <string.h>

#include "agent.h"

static const char *const state_names[] = {
    "UNSERVED", "HOME", "COVERED", "FAILING_BACK"};

const char *
post_state_name(enum post_state s)
{
	return (unsigned)s < ARRAY_SIZE(state_names) ? state_names[s] : "?";
}

static void
describe(const struct agent_post *p, enum post_state s, const char *cover,
    char *buf, size_t len)
{
	if (s == POST_STATE_COVERED || s == POST_STATE_FAILING_BACK)
		snprintf(buf, len, "%s(%s)", post_state_name(s), cover);
	else
		snprintf(buf, len, "%s", post_state_name(s));
	(void)p;
}

static void
post_set_state(
    struct agent_post *p, enum post_state s, const char *cover, const char *why)
{
	char from[64], to[64];

	describe(p, p->state, p->cover, from, sizeof(from));
	describe(p, s, cover ? cover : "", to, sizeof(to));
	if (strcmp(from, to) == 0)
		return;
	log_info("post %s: %s -> %s (%s)", p->home->name, from, to, why);
	p->state = s;
	str_copy(p->cover, cover ? cover : "", sizeof(p->cover));
	p->since = time_wall_ms();
}

void
post_fsm(struct agent_post *p, enum post_event ev, const char *server,
    const char *why)
{
	bool home = server && strcmp(server, p->home->name) == 0;

	/* events that mean the same in every state */
	switch (ev) {
	case POST_EV_OWNER_LOST:
		post_set_state(p, POST_STATE_UNSERVED, NULL, why);
		return;
	case POST_EV_COVER_CLAIMED:
		if (!home)
			post_set_state(p, POST_STATE_COVERED, server, why);
		return;
	default:
		break;
	}
	switch (p->state) {
	case POST_STATE_UNSERVED:
	case POST_STATE_HOME:
	case POST_STATE_COVERED:
		switch (ev) {
		case POST_EV_HOME_CLAIMED:
			post_set_state(p, POST_STATE_HOME, NULL, why);
			break;
		case POST_EV_HANDED_HOME:
			/* ports still held elsewhere: failing back from a cover
			 */
			if (p->state == POST_STATE_COVERED)
				post_set_state(
				    p, POST_STATE_FAILING_BACK, server, why);
			else
				post_set_state(p, POST_STATE_HOME, NULL, why);
			break;
		default:
			break;
		}
		break;
	case POST_STATE_FAILING_BACK:
		switch (ev) {
		case POST_EV_PORTS_RETURNED:
		case POST_EV_HOME_CLAIMED:
			post_set_state(p, POST_STATE_HOME, NULL, why);
			break;
		default:
			break;
		}
		break;
	}
}
