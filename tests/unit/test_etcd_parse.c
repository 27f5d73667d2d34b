/* Unit tests of the etcd gateway answer parser (src/coord/etcd_parse.c). */
#include "coord/coord.h"
#include "test.h"

#define S(s) s, sizeof(s) - 1

TEST(etcd_parse_range)
{
	struct etcd_res r;

	ASSERT_INT(etcd_parse_response(ETCD_OP_RANGE,
		       S("{\"header\":{\"revision\":\"2\"},\"kvs\":[{\"key\":"
			 "\"YQ==\",\"create_revision\":\"2\",\"mod_revision\":"
			 "\"3\",\"version\":\"1\",\"value\":\"Yg==\",\"lease\":"
			 "\"7587868212520003000\"}],\"count\":\"1\"}"),
		       &r),
	    0);
	ASSERT_INT(r.revision, 2);
	ASSERT_INT(r.n_kvs, 1);
	ASSERT_STR(r.kvs[0].key, "a");
	ASSERT_STR(r.kvs[0].value, "b");
	ASSERT_INT(r.kvs[0].mod_revision, 3);
	ASSERT(r.kvs[0].lease == 7587868212520003000LL);
	etcd_parse_res_clear(&r);
	/* zero values are omitted: an empty range has no kvs and no count */
	ASSERT_INT(etcd_parse_response(ETCD_OP_RANGE,
		       S("{\"header\":{\"revision\":\"9\"}}"), &r),
	    0);
	ASSERT_INT(r.n_kvs, 0);
	etcd_parse_res_clear(&r);
}

TEST(etcd_parse_txn)
{
	struct etcd_res r;

	ASSERT_INT(etcd_parse_response(ETCD_OP_TXN,
		       S("{\"header\":{\"revision\":\"2\"},\"responses\":[{"
			 "\"response_range\":{\"kvs\":[{\"key\":\"YQ==\","
			 "\"value\":\"Yg==\"}]}}]}"),
		       &r),
	    0);
	ASSERT(!r.succeeded);
	ASSERT_INT(r.n_kvs, 1);
	etcd_parse_res_clear(&r);
	ASSERT_INT(etcd_parse_response(ETCD_OP_TXN,
		       S("{\"header\":{},\"succeeded\":true,\"responses\":[{"
			 "\"response_put\":{}}]}"),
		       &r),
	    0);
	ASSERT(r.succeeded);
	etcd_parse_res_clear(&r);
}

TEST(etcd_parse_lease)
{
	struct etcd_res r;

	ASSERT_INT(etcd_parse_response(ETCD_OP_GRANT,
		       S("{\"ID\":\"2324035529581799941\",\"TTL\":\"2\"}"), &r),
	    0);
	ASSERT(r.id == 2324035529581799941LL);
	ASSERT_INT(r.ttl, 2);
	etcd_parse_res_clear(&r);
	ASSERT_INT(etcd_parse_response(ETCD_OP_KEEPALIVE,
		       S("{\"result\":{\"ID\":\"5\",\"TTL\":\"2\"}}\n"), &r),
	    0);
	ASSERT_INT(r.ttl, 2);
	etcd_parse_res_clear(&r);
	/* a dead lease: HTTP 200 and no TTL */
	ASSERT_INT(etcd_parse_response(ETCD_OP_KEEPALIVE,
		       S("{\"result\":{\"header\":{},\"ID\":\"12345\"}}"), &r),
	    US_ELEASELOST);
	ASSERT_INT(r.err, US_ELEASELOST);
	etcd_parse_res_clear(&r);
	/* precision: never through a double */
	ASSERT_INT(etcd_parse_response(ETCD_OP_GRANT,
		       S("{\"ID\":\"9223372036854775807\",\"TTL\":\"1\"}"), &r),
	    0);
	ASSERT(r.id == 9223372036854775807LL);
	etcd_parse_res_clear(&r);
}

TEST(etcd_parse_bad)
{
	struct etcd_res r;

	ASSERT_INT(
	    etcd_parse_response(ETCD_OP_RANGE, S("not json"), &r), US_EPROTO);
	ASSERT_INT(
	    etcd_parse_response(ETCD_OP_RANGE, S("[1,2]"), &r), US_EPROTO);
	ASSERT_INT(etcd_parse_response(
		       ETCD_OP_RANGE, S("{\"kvs\":[{\"key\":\"!!!\"}]}"), &r),
	    US_EPROTO);
	ASSERT_INT(etcd_parse_response(
		       ETCD_OP_RANGE, S("{\"kvs\":{\"key\":\"YQ==\"}}"), &r),
	    US_EPROTO);
	ASSERT_INT(etcd_parse_response(
		       ETCD_OP_GRANT, S("{\"ID\":\"12x\",\"TTL\":\"2\"}"), &r),
	    US_EPROTO);
	ASSERT_INT(etcd_parse_response(ETCD_OP_GRANT, S("{\"TTL\":\"2\"}"), &r),
	    US_EPROTO);
	ASSERT_INT(etcd_parse_response(ETCD_OP_RANGE, NULL, 0, &r), US_EPROTO);
}

TEST(etcd_parse_error_codes)
{
	struct etcd_res r;
	bool retry;

	memset(&r, 0, sizeof(r));
	ASSERT_INT(
	    etcd_parse_error(404,
		S("{\"error\":\"etcdserver: requested lease not found\","
		  "\"message\":\"etcdserver: requested lease not found\","
		  "\"code\":5}"),
		&r, &retry),
	    US_ENOTFOUND);
	ASSERT(!retry);
	ASSERT_STR(r.message, "etcdserver: requested lease not found");
	etcd_parse_res_clear(&r);
	ASSERT_INT(
	    etcd_parse_error(
		503, S("{\"code\":14,\"message\":\"no leader\"}"), &r, &retry),
	    US_EUNAVAIL);
	ASSERT(retry);
	etcd_parse_res_clear(&r);
	ASSERT_INT(
	    etcd_parse_error(404, S("Not Found"), &r, &retry), US_EPROTO);
	etcd_parse_res_clear(&r);
}

TEST(etcd_parse_watch_lines)
{
	struct etcd_watch_msg m;

	ASSERT_INT(etcd_parse_watch(S("{\"result\":{\"header\":{\"revision\":"
				      "\"6\"},\"created\":true}}"),
		       &m),
	    0);
	ASSERT(m.created);
	ASSERT_INT(m.revision, 6);
	etcd_parse_watch_clear(&m);
	ASSERT_INT(
	    etcd_parse_watch(S("{\"result\":{\"header\":{\"revision\":"
			       "\"7\"},\"events\":[{\"kv\":{\"key\":"
			       "\"cA==\",\"mod_revision\":\"6\",\"value\":"
			       "\"Yg==\"}},{\"type\":\"DELETE\",\"kv\":{"
			       "\"key\":\"cA==\",\"mod_revision\":\"7\"}}]}}"),
		&m),
	    0);
	ASSERT_INT(m.n_events, 2);
	ASSERT_INT(m.events[0].type, ETCD_EVENT_PUT);
	ASSERT_STR(m.events[0].kv.value, "b");
	ASSERT_INT(m.events[1].type, ETCD_EVENT_DELETE);
	ASSERT_INT(m.events[1].kv.mod_revision, 7);
	etcd_parse_watch_clear(&m);
	ASSERT_INT(etcd_parse_watch(S("{\"result\":{\"header\":{},\"canceled\":"
				      "true,\"compact_revision\":\"5\"}}"),
		       &m),
	    0);
	ASSERT(m.canceled);
	ASSERT_INT(m.compact_revision, 5);
	etcd_parse_watch_clear(&m);
	ASSERT_INT(etcd_parse_watch(S("{\"result\":{\"events\":[{\"type\":"
				      "\"EXPLODE\",\"kv\":{}}]}}"),
		       &m),
	    US_EPROTO);
	ASSERT_INT(
	    etcd_parse_watch(S("{\"result\":{\"events\":[{\"kv\":5}]}}"), &m),
	    US_EPROTO);
	ASSERT_INT(etcd_parse_watch(S("{\"error\":{\"grpc_code\":14}}"), &m),
	    US_EUNAVAIL);
}

TEST(etcd_prefix_end)
{
	size_t n;
	char *e = etcd_kv_prefix_end("/a/", 3, &n);

	ASSERT_INT(n, 3);
	ASSERT(memcmp(e, "/a0", 3) == 0);
	free(e);
	e = etcd_kv_prefix_end("a\xff", 2, &n);
	ASSERT_INT(n, 1);
	ASSERT(e[0] == 'b');
	free(e);
	e = etcd_kv_prefix_end("", 0, &n);
	ASSERT_INT(n, 1);
	ASSERT(e[0] == '\0');
	free(e);
}
