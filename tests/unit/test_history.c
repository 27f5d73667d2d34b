/* Unit tests of the history's pure parts (src/agent/history.c). */
#include "agent/agent.h"
#include "test.h"

TEST(history_keys)
{
	char k[128];

	ASSERT_INT(history_key(k, sizeof(k), "/understudy/c/history/",
		       1795000000123LL, "PA1", 7),
	    0);
	ASSERT_STR(k, "/understudy/c/history/0001795000000123-PA1-7");
	/* keys sort by time whatever the server: 16 digits */
	ASSERT_INT(history_key(k, sizeof(k), "h/", 5, "SP", 0), 0);
	ASSERT_STR(k, "h/0000000000000005-SP-0");
	ASSERT(history_key(k, sizeof(k), "h/", -1, "SP", 0) == -1);
	ASSERT(history_key(k, 10, "h/", 5, "SP", 0) == -1);
}

TEST(history_pruning)
{
	ASSERT_INT(history_excess(0, HISTORY_KEEP), 0);
	ASSERT_INT(history_excess(HISTORY_KEEP, HISTORY_KEEP), 0);
	ASSERT_INT(history_excess(HISTORY_KEEP + 1, HISTORY_KEEP), 1);
	ASSERT_INT(history_excess(2500, 1000), 1500);
}

static json_t *
view(const char *text)
{
	json_t *v = json_loads(text, 0, NULL), *o;

	ASSERT(v != NULL);
	o = history_event_view(v);
	json_decref(v);
	return o;
}

TEST(history_event_words)
{
	json_t *o;

	o = view("{\"kind\":\"failover\",\"at\":1795000000000,\"post\":\"PA1\","
		 "\"takeover_ms\":1840,\"first_call_after_ms\":2400}");
	ASSERT(o != NULL);
	ASSERT_STR(json_string_value(json_object_get(o, "summary")),
	    "failover 1.8 s; first call 2.4 s after the failure");
	ASSERT_STR(json_string_value(json_object_get(o, "time")),
	    "2026-11-18T11:06:40.000Z");
	json_decref(o);
	o = view("{\"kind\":\"failover\",\"at\":1,\"takeover_ms\":12}");
	ASSERT_STR(json_string_value(json_object_get(o, "summary")),
	    "failover 12 ms; no call taken by the cover yet");
	json_decref(o);
	o = view("{\"kind\":\"failback\",\"at\":1,\"covered_ms\":185000,"
		 "\"returning_ms\":42000}");
	ASSERT_STR(json_string_value(json_object_get(o, "summary")),
	    "covered for 3 min 5 s; last busy port home 42 s after the "
	    "route point");
	json_decref(o);
	o = view("{\"kind\":\"fence\",\"at\":1,\"fenced_for_ms\":9000000}");
	ASSERT_STR(json_string_value(json_object_get(o, "summary")),
	    "fenced for 2 h 30 min");
	json_decref(o);
	o = view("{\"kind\":\"restart\",\"at\":1,\"down_ms\":5}");
	ASSERT_STR(json_string_value(json_object_get(o, "summary")),
	    "worker restarted 5 ms after it died");
	json_decref(o);
	/* not an event: no kind, or no time */
	ASSERT(view("{\"at\":1}") == NULL);
	ASSERT(view("{\"kind\":\"fence\"}") == NULL);
	ASSERT(view("[1]") == NULL);
}

TEST(history_kinds_list)
{
	unsigned k = 99;

	ASSERT_INT(history_kinds_parse(NULL, &k), 0);
	ASSERT_INT(k, 0);
	ASSERT_INT(history_kinds_parse("fence", &k), 0);
	ASSERT_INT(k, 1u << 2);
	ASSERT_INT(history_kinds_parse("failover,restart", &k), 0);
	ASSERT_INT(k, 1u | 1u << 3);
	ASSERT_INT(history_kinds_parse("failover,", &k), 0);
	ASSERT_INT(history_kinds_parse("fail", &k), -1);
	ASSERT_INT(history_kinds_parse("fence,,", &k), -1);
	ASSERT_INT(history_kinds_parse("failovers", &k), -1);
}
