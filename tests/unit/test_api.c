/* Unit tests of src/api that need no socket: a page over its cap. */
#include <stdbool.h>
#include <unistd.h>

#include "api/api.h"
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
