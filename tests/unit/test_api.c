/* Unit tests of src/api that need no socket: a page over its cap. */
#include <stdbool.h>
#include <unistd.h>

#include "api/api.h"
#include "check/check.h"
#include "test.h"

/* routes_page_check on b, with what it logs (stderr) captured in log. */
static int
page_check(
    const struct buf *b, char *msg, size_t msglen, char *log, size_t loglen)
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO), err;
	size_t n;

	ASSERT(tmp != NULL && saved >= 0);
	fflush(stderr);
	dup2(fileno(tmp), STDERR_FILENO);
	err = routes_page_check(b, "/metrics", msg, msglen);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(tmp);
	n = fread(log, 1, loglen - 1, tmp);
	log[n] = '\0';
	fclose(tmp);
	return err;
}

/* One series per media port, as /metrics writes them. */
static void
port_lines(struct buf *b, int n)
{
	for (int i = 0; i < n; i++)
		buf_printf(b,
		    "understudy_port_busy{post=\"PA1\",port=\"%d\","
		    "state=\"idle\",server=\"\"} 0\n",
		    5001 + i);
}

/*
 * A page that reaches its cap is refused whole (ETOOBIG, 500) and the
 * log names the cap; one that fits to the byte goes out.
 */
TEST(metrics_page_cap)
{
	char msg[256], log[1024];
	struct buf b;
	size_t whole;

	/* the length of 100 port lines, then a cap of exactly that */
	buf_init(&b, ROUTES_METRICS_MAX);
	port_lines(&b, 100);
	whole = b.len;
	buf_free(&b);

	buf_init(&b, whole);
	port_lines(&b, 100);
	ASSERT_INT(b.len, whole);
	ASSERT_INT(page_check(&b, msg, sizeof(msg), log, sizeof(log)), 0);
	ASSERT_STR(log, "");

	/* one more line: over the cap */
	port_lines(&b, 1);
	ASSERT_INT(b.len, whole);
	ASSERT_INT(b.err, US_ETOOBIG);
	msg[0] = '\0';
	ASSERT_INT(
	    page_check(&b, msg, sizeof(msg), log, sizeof(log)), US_ETOOBIG);
	ASSERT_STR(us_err_name(US_ETOOBIG), "ETOOBIG");
	ASSERT(strstr(msg, "/metrics is over its cap of") != NULL);
	ASSERT(strstr(log, " error ") != NULL);
	ASSERT(strstr(log, "/metrics is over its cap of") != NULL);
	{
		char cap[64];

		snprintf(cap, sizeof(cap), "cap of %zu bytes", whole);
		ASSERT(strstr(msg, cap) != NULL);
		ASSERT(strstr(log, cap) != NULL);
	}
	buf_free(&b);
}

/* The backups row against the shape of GET /v1/backups. */
TEST(check_backups_row)
{
	const int64_t now = 1796346000000LL, day = 86400000LL;
	struct {
		long status;
		const char *ans;
		bool ok;
		const char *says;
	} cases[] = {
	    {404, "{\"error\":\"ENOTFOUND\"}", false, "not available"},
	    {200,
		"{\"schedule\":null,\"interval_s\":0,\"last_ok\":null,"
		"\"last\":null}",
		false, "no backup_schedule"},
	    {200,
		"{\"schedule\":\"daily 02:00\",\"interval_s\":86400,"
		"\"last_ok\":null,\"last\":{\"result\":\"failed\","
		"\"error\":\"disk full\",\"finished\":1}}",
		false,
		"no backup has succeeded yet (schedule daily 02:00); "
		"the last attempt failed: disk full"},
	    {200,
		"{\"schedule\":\"daily 02:00\",\"interval_s\":86400,"
		"\"last_ok\":null,\"last\":null}",
		false, "no backup has succeeded"},
	};
	char text[400];
	json_t *ans, *row;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ans = json_loads(cases[i].ans, 0, NULL);
		row = check_backups_row(cases[i].status, ans, now);
		ASSERT(json_is_true(json_object_get(row, "ok")) == cases[i].ok);
		ASSERT(strstr(json_string_value(json_object_get(row, "detail")),
			   cases[i].says) != NULL);
		json_decref(row);
		json_decref(ans);
	}
	/* fresh and verified passes; 1.5 days old, or unverified, fails */
	for (int k = 0; k < 3; k++) {
		snprintf(text, sizeof(text),
		    "{\"schedule\":\"daily 02:00\",\"interval_s\":86400,"
		    "\"last_ok\":{\"slot\":1,\"finished\":%lld,\"size\":10,"
		    "\"verified\":%s,\"file\":\"a.tar\"},\"last\":{\"result\":"
		    "\"ok\",\"finished\":1}}",
		    (long long)(now - (k == 1 ? day * 2 : day / 2)),
		    k == 2 ? "false" : "true");
		ans = json_loads(text, 0, NULL);
		row = check_backups_row(200, ans, now);
		ASSERT(json_is_true(json_object_get(row, "ok")) == (k == 0));
		ASSERT(
		    strstr(json_string_value(json_object_get(row, "detail")),
			k == 0       ? "verified"
			    : k == 1 ? "is 2.0 days old; the schedule is daily"
				     : "not verified") != NULL);
		json_decref(row);
		json_decref(ans);
	}
}
