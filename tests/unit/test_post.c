/* Unit tests of the post state machine (src/agent/post.c). */
#include "agent/agent.h"
#include "test.h"

static struct config_server home = {.name = (char *)"PA1"};

static struct agent_post
fresh(void)
{
	struct agent_post p;

	memset(&p, 0, sizeof(p));
	p.home = &home;
	p.state = POST_STATE_UNSERVED;
	return p;
}

TEST(post_life)
{
	struct agent_post p = fresh();

	post_fsm(&p, POST_EV_HOME_CLAIMED, "PA1", "home took it");
	ASSERT_INT(p.state, POST_STATE_HOME);
	post_fsm(&p, POST_EV_COVER_CLAIMED, "PA3", "home lost");
	ASSERT_INT(p.state, POST_STATE_COVERED);
	ASSERT_STR(p.cover, "PA3");
	post_fsm(&p, POST_EV_COVER_CLAIMED, "SP", "PA3 lost");
	ASSERT_STR(p.cover, "SP");
	post_fsm(&p, POST_EV_HANDED_HOME, "SP", "home ready");
	ASSERT_INT(p.state, POST_STATE_FAILING_BACK);
	ASSERT_STR(p.cover, "SP");
	post_fsm(&p, POST_EV_HANDED_HOME, "SP", "still");
	ASSERT_INT(p.state, POST_STATE_FAILING_BACK);
	post_fsm(&p, POST_EV_PORTS_RETURNED, "PA1", "released");
	ASSERT_INT(p.state, POST_STATE_HOME);
	ASSERT_STR(p.cover, "");
}

TEST(post_edges)
{
	struct agent_post p = fresh();

	/* a claim by the home is never "covered" */
	post_fsm(&p, POST_EV_COVER_CLAIMED, "PA1", "x");
	ASSERT_INT(p.state, POST_STATE_UNSERVED);
	/* ports returning while nobody covered it: home */
	post_fsm(&p, POST_EV_HANDED_HOME, "PA3", "x");
	ASSERT_INT(p.state, POST_STATE_HOME);
	/* PORTS_RETURNED means nothing outside FAILING_BACK */
	post_fsm(&p, POST_EV_PORTS_RETURNED, "PA1", "x");
	ASSERT_INT(p.state, POST_STATE_HOME);
	/* a cover lost while failing back: home keeps it */
	post_fsm(&p, POST_EV_COVER_CLAIMED, "PA3", "x");
	post_fsm(&p, POST_EV_HANDED_HOME, "PA3", "x");
	ASSERT_INT(p.state, POST_STATE_FAILING_BACK);
	post_fsm(&p, POST_EV_HOME_CLAIMED, "PA1", "PA3 lost");
	ASSERT_INT(p.state, POST_STATE_HOME);
	post_fsm(&p, POST_EV_OWNER_LOST, NULL, "x");
	ASSERT_INT(p.state, POST_STATE_UNSERVED);
	ASSERT_STR(post_state_name(POST_STATE_FAILING_BACK), "FAILING_BACK");
}
