/*
 * GET /v1/records: this server's copy of the call records, as JSON or
 * CSV, in pages (docs/api.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "calls/calls.h"

/* ---- records ---- */

#define RECORDS_LIMIT_DEFAULT 1000
#define RECORDS_LIMIT_MAX 100000
#define RECORDS_CSV_MAX (64u * 1024 * 1024) /* 100000 long records */

/* The columns of the CSV answer, in order (the CLI's, and the version). */
static const char *const csv_fields[] = {"call", "route_point", "post",
    "server", "port", "origin", "caller", "start", "answer", "end",
    "duration_ms", "ended_by", "status", "closed_by", "config_version"};

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

/* One cell, RFC 4180: quoted when it holds a comma, a quote or a break. */
static void
csv_cell(struct buf *b, const json_t *v)
{
	const char *s;

	if (json_is_integer(v)) {
		buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return;
	}
	if (!json_is_string(v))
		return; /* null: empty */
	s = json_string_value(v);
	if (strpbrk(s, ",\"\r\n") == NULL) {
		buf_append(b, s, strlen(s));
		return;
	}
	buf_append(b, "\"", 1);
	for (const char *q; (q = strchr(s, '"')) != NULL; s = q + 1) {
		buf_append(b, s, (size_t)(q - s) + 1);
		buf_append(b, "\"", 1);
	}
	buf_append(b, s, strlen(s));
	buf_append(b, "\"", 1);
}

/* Answer the records as CSV: a header line, one line per record. */
static void
reply_csv(struct http_req *req, json_t *arr, const char *next)
{
	struct buf b;
	char msg[256];
	size_t i;
	json_t *r;
	int err;

	buf_init(&b, RECORDS_CSV_MAX);
	for (size_t f = 0; f < ARRAY_SIZE(csv_fields); f++)
		buf_printf(&b, "%s%s", f ? "," : "", csv_fields[f]);
	buf_append(&b, "\r\n", 2);
	json_array_foreach (arr, i, r) {
		for (size_t f = 0; f < ARRAY_SIZE(csv_fields); f++) {
			if (f)
				buf_append(&b, ",", 1);
			csv_cell(&b, json_object_get(r, csv_fields[f]));
		}
		buf_append(&b, "\r\n", 2);
	}
	if ((err = routes_page_check(
		 &b, "the records' CSV", msg, sizeof(msg))) != 0) {
		http_reply_error(req, 500, err, "%s", msg);
	} else {
		http_req_add_reply_header(req, "Content-Disposition",
		    "attachment; filename=\"records.csv\"");
		if (*next)
			http_req_add_reply_header(
			    req, "X-Understudy-Next", next);
		http_reply_text(
		    req, 200, "text/csv; charset=utf-8", b.data, b.len);
	}
	buf_free(&b);
}

/*
 * The after parameter, "END_MS:CALL" as a page's next gave it, into q:
 * true; false when it is not one, and the request is answered 400.
 */
static bool
after_arg(struct http_req *req, struct store_query *q)
{
	const char *v = http_req_query(req, "after");
	char *end;
	long long ms;

	if (v == NULL || *v == '\0')
		return true;
	errno = 0;
	ms = strtoll(v, &end, 10);
	if (errno == 0 && end != v && *end == ':' && ms >= 0 &&
	    end[1] != '\0' && strlen(v) < STORE_CURSOR_MAX) {
		q->after_end_ms = ms;
		q->after_call = end + 1;
		return true;
	}
	http_reply_error(req, 400, US_EINVAL,
	    "query parameter after: '%.60s' is not a cursor (the next of a "
	    "page of records, such as 1796405470010:PA1-19ab3c2d1e0-7)",
	    v);
	return false;
}

/* CSV with format=csv or an Accept of text/csv; JSON otherwise. */
static int
format_arg(struct http_req *req, bool *csv)
{
	const char *f = http_req_query(req, "format");
	const char *acc = http_req_header(req, "Accept");

	if (f == NULL || *f == '\0') {
		*csv = acc && strstr(acc, "text/csv") != NULL;
		return 0;
	}
	*csv = strcmp(f, "csv") == 0;
	if (*csv || strcmp(f, "json") == 0)
		return 0;
	http_reply_error(req, 400, US_EINVAL,
	    "query parameter format: '%.30s' is not json or csv", f);
	return -1;
}

void
get_records(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	static const char *const statuses[] = {"NORMAL", "BUSY", "TRANSFERRED",
	    "FAILED_SOFTWARE", "FAILED_HARDWARE"};
	struct store_query q = {.limit = RECORDS_LIMIT_DEFAULT};
	const char *lim = http_req_query(req, "limit");
	const char *order = http_req_query(req, "order");
	uint64_t lost[2], copied, waiting;
	char err[256], next[STORE_CURSOR_MAX];
	json_t *arr;
	bool synced, ok, csv;

	(void)pa;
	if (!routes_time_arg(req, "since", &q.since_ms) ||
	    !routes_time_arg(req, "until", &q.until_ms) ||
	    !after_arg(req, &q) || format_arg(req, &csv) != 0)
		return;
	if (lim && str_to_long(lim, 1, RECORDS_LIMIT_MAX, &q.limit) != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter limit: '%.30s' is not a number from 1 to "
		    "%d",
		    lim, RECORDS_LIMIT_MAX);
		return;
	}
	if (order && strcmp(order, "newest") != 0 &&
	    strcmp(order, "oldest") != 0) {
		http_reply_error(req, 400, US_EINVAL,
		    "query parameter order: '%.30s' is not oldest or newest",
		    order);
		return;
	}
	q.newest_first = order && strcmp(order, "newest") == 0;
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
	if ((arr = records_query(ctx->records, &q, next, err, sizeof(err))) ==
	    NULL) {
		http_reply_error(req, 500, US_EIO, "%s", err);
		return;
	}
	if (csv) {
		reply_csv(req, arr, next);
		json_decref(arr);
		return;
	}
	http_reply_json(req, 200,
	    json_pack("{s:s,s:b,s:I,s:I,s:s?,s:o}", "server", ctx->self->name,
		"synced", synced, "waiting", (json_int_t)waiting, "count",
		(json_int_t)json_array_size(arr), "next", *next ? next : NULL,
		"records", arr));
}
