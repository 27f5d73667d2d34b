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

TEST(etcd_parse_txn_nested)
{
	struct etcd_res r;

	/* one nested txn held, one failed with what it read back */
	ASSERT_INT(etcd_parse_response(ETCD_OP_TXN,
		       S("{\"header\":{\"revision\":\"7\"},\"succeeded\":true,"
			 "\"responses\":[{\"response_txn\":{\"succeeded\":"
			 "true,\"responses\":[{\"response_put\":{}}]}},{"
			 "\"response_txn\":{\"responses\":[{\"response_"
			 "range\":{\"kvs\":[{\"key\":\"YQ==\",\"value\":"
			 "\"Yg==\",\"create_revision\":\"3\"}]}}]}}]}"),
		       &r),
	    0);
	ASSERT(r.succeeded);
	ASSERT_INT(r.n_kvs, 0);
	ASSERT_INT(r.n_subs, 2);
	ASSERT(r.subs[0].succeeded);
	ASSERT(!r.subs[1].succeeded);
	ASSERT_INT(r.subs[1].n_kvs, 1);
	ASSERT_INT(r.subs[1].kvs[0].create_revision, 3);
	ASSERT_INT(r.subs[1].revision, 7);
	etcd_parse_res_clear(&r);
	/* a nested answer that is not an object, or nested too deep */
	ASSERT_INT(etcd_parse_response(ETCD_OP_TXN,
		       S("{\"responses\":[{\"response_txn\":[]}]}"), &r),
	    US_EPROTO);
	ASSERT_INT(etcd_parse_response(ETCD_OP_TXN,
		       S("{\"responses\":[{\"response_txn\":{\"responses\":[{"
			 "\"response_txn\":{\"responses\":[{\"response_txn\":"
			 "{\"responses\":[{\"response_txn\":{}}]}}]}}]}}]}"),
		       &r),
	    US_EPROTO);
}

TEST(etcd_txn_nest_limits)
{
	struct etcd_txn *t = etcd_kv_txn_new(), *sub;
	int n = 0, rc;

	ASSERT(t != NULL);
	ASSERT_INT(etcd_kv_txn_compare(
		       t, "o", ETCD_CMP_MOD, ETCD_CMP_EQUAL, 5, NULL, 0),
	    0);
	/* nested txns of 2 ops each: the outer's count plus 2 fit in 128 */
	do {
		sub = etcd_kv_txn_new();
		ASSERT(sub != NULL);
		etcd_kv_txn_compare(
		    sub, "k", ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0);
		etcd_kv_txn_put(sub, true, "k", "v", 1, 0);
		if ((rc = etcd_kv_txn_nest(t, true, sub)) == 0)
			n++;
	} while (rc == 0);
	ASSERT_INT(rc, US_ETOOBIG);
	ASSERT_INT(n, 125);
	ASSERT_INT(etcd_kv_txn_ops(t), 126);
	etcd_kv_txn_free(t);
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
