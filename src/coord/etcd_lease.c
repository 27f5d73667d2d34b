/* Lease requests: grant, keepalive (one renewal each), revoke, time to live. */
#include <inttypes.h>
#include <stdlib.h>

#include "coord.h"

static char *
id_body(const char *field, int64_t v)
{
	char *s = NULL;

	if (asprintf(&s, "{\"%s\":\"%" PRId64 "\"}", field, v) < 0)
		return NULL;
	return s;
}

struct etcd_req *
etcd_lease_grant(struct etcd *e, int64_t ttl, etcd_cb cb, void *arg)
{
	/* the field is "TTL": a misspelling is silently the minimum TTL */
	return etcd_request(
	    e, ETCD_OP_GRANT, "/v3/lease/grant", id_body("TTL", ttl), cb, arg);
}

struct etcd_req *
etcd_lease_keepalive(struct etcd *e, int64_t id, etcd_cb cb, void *arg)
{
	return etcd_request(e, ETCD_OP_KEEPALIVE, "/v3/lease/keepalive",
	    id_body("ID", id), cb, arg);
}

struct etcd_req *
etcd_lease_revoke(struct etcd *e, int64_t id, etcd_cb cb, void *arg)
{
	return etcd_request(
	    e, ETCD_OP_REVOKE, "/v3/lease/revoke", id_body("ID", id), cb, arg);
}

struct etcd_req *
etcd_lease_timetolive(struct etcd *e, int64_t id, etcd_cb cb, void *arg)
{
	return etcd_request(e, ETCD_OP_TIMETOLIVE, "/v3/lease/timetolive",
	    id_body("ID", id), cb, arg);
}
