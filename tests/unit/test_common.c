/* Unit tests of src/common: buffers, base64, strings, error names. */
#include <stdbool.h>

#include "common/common.h"
#include "test.h"

TEST(buf_cap)
{
	struct buf b;

	buf_init(&b, 8);
	ASSERT_INT(buf_append(&b, "12345678", 8), 0);
	ASSERT_INT(b.len, 8);
	ASSERT_STR(b.data, "12345678");
	ASSERT_INT(b.err, 0);
	ASSERT_INT(buf_append(&b, "9", 1), US_ETOOBIG);
	ASSERT_INT(b.len, 8);
	ASSERT_INT(b.err, US_ETOOBIG);
	ASSERT_INT(buf_printf(&b, "%d", 1), US_ETOOBIG);
	buf_consume(&b, 3);
	ASSERT_STR(b.data, "45678");
	ASSERT_INT(buf_printf(&b, "%s", "ab"), 0);
	ASSERT_STR(b.data, "45678ab");
	/* sticky: a later append that fits does not hide the cut */
	ASSERT_INT(b.err, US_ETOOBIG);
	buf_consume(&b, 100);
	ASSERT_INT(b.err, US_ETOOBIG);
	buf_reset(&b);
	ASSERT_INT(b.err, 0);
	buf_free(&b);
}

TEST(buf_lines)
{
	struct buf b;
	char *line;
	size_t len;

	buf_init(&b, 1024);
	buf_append(&b, "one\ntw", 6);
	ASSERT_INT(buf_take_line(&b, &line, &len), 1);
	ASSERT_STR(line, "one");
	free(line);
	ASSERT_INT(buf_take_line(&b, &line, &len), 0);
	buf_append(&b, "o\n\n", 3);
	ASSERT_INT(buf_take_line(&b, &line, &len), 1);
	ASSERT_STR(line, "two");
	free(line);
	ASSERT_INT(buf_take_line(&b, &line, &len), 1);
	ASSERT_INT(len, 0);
	free(line);
	ASSERT_INT(b.len, 0);
	buf_free(&b);
}

TEST(base64_roundtrip)
{
	const char bin[] = {'a', 0, (char)0xff, 'z'};
	char *enc, *dec;
	size_t n;

	enc = base64_encode("/understudy/x", 13);
	ASSERT_STR(enc, "L3VuZGVyc3R1ZHkveA==");
	ASSERT_INT(base64_decode(enc, strlen(enc), &dec, &n), 0);
	ASSERT_INT(n, 13);
	ASSERT_STR(dec, "/understudy/x");
	free(enc);
	free(dec);
	enc = base64_encode(bin, sizeof(bin));
	ASSERT_INT(base64_decode(enc, strlen(enc), &dec, &n), 0);
	ASSERT_INT(n, 4);
	ASSERT(memcmp(dec, bin, 4) == 0);
	free(enc);
	free(dec);
	ASSERT_INT(base64_decode("not base64!", 11, &dec, &n), US_EPROTO);
	ASSERT_INT(base64_decode("YQ=", 3, &dec, &n), US_EPROTO);
}

TEST(str_numbers)
{
	long v;

	ASSERT_INT(str_to_long("42", 0, 100, &v), 0);
	ASSERT_INT(v, 42);
	ASSERT_INT(str_to_long("101", 0, 100, &v), -1);
	ASSERT_INT(str_to_long("4x", 0, 100, &v), -1);
	ASSERT_INT(str_to_long("", 0, 100, &v), -1);
	ASSERT_INT(str_to_long(" 4", 0, 100, &v), -1);
	ASSERT_INT(str_to_long("99999999999999999999999", 0, 100, &v), -1);
}

TEST(str_suggest)
{
	const char *keys[] = {"max_media_ports", "media_ports", "route_point"};

	ASSERT_STR(str_suggest("max_media_port", keys, 3), "max_media_ports");
	ASSERT_STR(str_suggest("rout_point", keys, 3), "route_point");
	ASSERT(str_suggest("colour", keys, 3) == NULL);
	ASSERT_INT(str_distance("kitten", "sitting"), 3);
}

TEST(str_addresses)
{
	ASSERT(str_is_ip("127.0.0.1"));
	ASSERT(str_is_ip("::1"));
	ASSERT(!str_is_ip("127.0.0"));
	ASSERT(str_is_hostname("pa1.example.com"));
	ASSERT(!str_is_hostname("pa1..example"));
	ASSERT(!str_is_hostname("-pa1"));
	ASSERT(!str_is_hostname("10.0.0.1"));
}

TEST(strlist_split)
{
	struct strlist l = {0};
	char big[300];

	ASSERT_INT(strlist_split(&l, "PA1, PA2,PA3  PA4,,"), 0);
	ASSERT_INT(l.n, 4);
	ASSERT_STR(l.v[3], "PA4");
	ASSERT_INT(strlist_find(&l, "PA2"), 1);
	strlist_free(&l);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ASSERT_INT(strlist_split(&l, big), US_ETOOBIG);
	strlist_free(&l);
}

TEST(error_names)
{
	ASSERT_STR(us_err_name(US_ENOTOWNER), "ENOTOWNER");
	ASSERT_STR(us_err_name(US_ENOLICENSE), "ENOLICENSE");
	ASSERT_STR(us_err_name(0), "OK");
	ASSERT_STR(us_err_name(-9999), "EUNKNOWN");
	ASSERT_STR(us_strerror(US_EBUSY), "no media port free");
}

TEST(time_iso)
{
	char buf[32];

	ASSERT_STR(time_iso8601(1700000000123, buf, sizeof(buf)),
	    "2023-11-14T22:13:20.123Z");
	ASSERT(time_mono_ms() > 0);
}

TEST(time_parse)
{
	int64_t now = 1700000000123, t;

	ASSERT_INT(time_parse("2023-11-14T22:13:20.123Z", now, &t), 0);
	ASSERT_INT(t, 1700000000123);
	ASSERT_INT(time_parse("2023-11-14T23:13:20.123+01:00", now, &t), 0);
	ASSERT_INT(t, 1700000000123);
	ASSERT_INT(time_parse("2023-11-14T22:13:20.1", now, &t), 0);
	ASSERT_INT(t, 1700000000100);
	ASSERT_INT(time_parse("2023-11-14 22:13", now, &t), 0);
	ASSERT_INT(t, 1699999980000);
	ASSERT_INT(time_parse("2023-11-14", now, &t), 0);
	ASSERT_INT(t, 1699920000000);
	ASSERT_INT(time_parse("1700000000123", now, &t), 0);
	ASSERT_INT(t, 1700000000123);
	ASSERT_INT(time_parse("2h", now, &t), 0);
	ASSERT_INT(t, now - 7200000);
	ASSERT_INT(time_parse("15m", now, &t), 0);
	ASSERT_INT(t, now - 900000);
	ASSERT_INT(time_parse("", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("yesterday", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("2023-13-01", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("2023-11-14T25:00", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("2023-11-14T22:13:20.Z", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("12x", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("-5", now, &t), US_EINVAL);
	ASSERT_INT(time_parse("99999999999999999999h", now, &t), US_EINVAL);
}

TEST(log_ring)
{
	struct log_entry out[4];
	struct log_summary sum;
	uint64_t w, e;
	int64_t t0 = time_wall_ms();
	size_t n;

	log_init("unit", LOG_LEVEL_ERROR);
	log_info("not kept");
	log_warn("warned %d", 1); /* below the level printed: still kept */
	log_error("failed %s", "here");
	log_counts(&w, &e);
	ASSERT_INT(w, 1);
	ASSERT_INT(e, 1);
	n = log_recent(LOG_LEVEL_WARN, t0, out, 4, &sum);
	ASSERT_INT(n, 2);
	ASSERT_STR(out[0].text, "warned 1");
	ASSERT_INT(out[0].level, LOG_LEVEL_WARN);
	ASSERT_STR(out[1].text, "failed here");
	ASSERT_INT(out[1].seq, 2);
	ASSERT_INT(sum.warnings, 1);
	ASSERT_INT(sum.errors, 1);
	ASSERT(!sum.truncated);
	n = log_recent(LOG_LEVEL_ERROR, t0, out, 4, &sum);
	ASSERT_INT(n, 1);
	ASSERT_INT(sum.matched, 1);
	ASSERT(log_recent(
		   LOG_LEVEL_WARN, time_wall_ms() + 1000, out, 4, &sum) == 0);
	/* the ring keeps the latest; older ones are said to be lost */
	for (int i = 0; i < LOG_RECENT_MAX + 10; i++)
		log_warn("w%d", i);
	n = log_recent(LOG_LEVEL_WARN, t0, out, 2, &sum);
	ASSERT_INT(n, 2);
	ASSERT_STR(out[1].text, "w265");
	ASSERT_INT(sum.matched, LOG_RECENT_MAX);
	ASSERT(sum.truncated);
	log_counts(&w, &e);
	ASSERT_INT(w, LOG_RECENT_MAX + 11);
}
