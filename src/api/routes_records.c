/* GET /v1/records: this server's copy of the call records. */
#include <inttypes.h>
#include <string.h>

#include "api.h"
#include "calls/calls.h"

/* ---- records ---- */

#define RECORDS_LIMIT_DEFAULT 1000
#define RECORDS_LIMIT_MAX 100000

bool
routes_time_arg(struct http_req *req, const char *name, int64_t *out)
{
	const char *v = http_req_query(req, name);

	*out = 0;
	if (v == NULL || *v == '\0')
		return true;
	if (time_parse(v, time_wall_ms(), out) == 0)
		return true;
	http_reply_error(req, 400, US_EINVAL,
	    "query parameter %s: '%.60s' is not a time (ISO 8601 such as "
	    "2026-11-22T09:30:00Z, ms since the epoch, or an age such as 2h)",
	    name, v);
	return false;
}

void
get_records(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	static const char *const statuses[] = {"NORMAL", "BUSY", "TRANSFERRED",
	    "FAILED_SOFTWARE", "FAILED_HARDWARE"};
	struct store_query q = {.limit = RECORDS_LIMIT_DEFAULT};
	const char *lim = http_req_query(req, "limit");
	uint64_t lost[2], copied, waiting;
	char err[256];
	json_t *arr;
	bool synced, ok;

	(void)pa;
	if (!routes_time_arg(req, "since", &q.since_ms) ||
	    !routes_time_arg(req, "until", &q.until_ms))
		return;
	if (lim && str_to_long(lim, 1, RECORDS_LIMIT_MAX, &q.limit) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter limit: '%.30s' is not a number from 1 to "
		    "%d",
		    lim, RECORDS_LIMIT_MAX);
		return;
	}
	q.route_point = http_req_query(req, "route_point");
	q.post = http_req_query(req, "post");
	q.status = http_req_query(req, "status");
	if (q.status) {
		ok = false;
		for (size_t i = 0; i < ARRAY_SIZE(statuses); i++)
			ok = ok || strcmp(q.status, statuses[i]) == 0;
		if (!ok) {
			http_reply_error(req, 400, US_EINVAL,
			    "query parameter status: '%.30s' is not one of "
			    "NORMAL, BUSY, TRANSFERRED, FAILED_SOFTWARE, "
			    "FAILED_HARDWARE",
			    q.status);
			return;
		}
	}
	records_counters(ctx->records, lost, &copied, &waiting, &synced);
	if ((arr = records_query(ctx->records, &q, err, sizeof(err))) == NULL) {
		http_reply_error(req, 500, US_EIO, "%s", err);
		return;
	}
	http_reply_json(req, 200,
	    json_pack("{s:s,s:b,s:I,s:I,s:o}", "server", ctx->self->name,
		"synced", synced, "waiting", (json_int_t)waiting, "count",
		(json_int_t)json_array_size(arr), "records", arr));
}
