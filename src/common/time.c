/* Clocks: monotonic for every timeout, wall only for display. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

uint64_t
time_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t
time_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *
time_iso8601(int64_t wall_ms, char *buf, size_t len)
{
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, (int)(wall_ms % 1000));
	return buf;
}

/* n digits at *p into *out; advances *p. */
static bool
digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++, (*p)++) {
		if (!isdigit((unsigned char)**p))
			return false;
		v = v * 10 + (**p - '0');
	}
	*out = v;
	return true;
}

int
time_parse(const char *s, int64_t now_ms, int64_t *out)
{
	static const struct {
		char unit;
		int64_t ms;
	} units[] = {
	    {'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', 86400000}};
	int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, oh = 0, om = 0;
	const char *p = s;
	struct tm tm;
	char *end;
	long long v;
	int64_t t;

	if (s == NULL || *s == '\0' || strlen(s) > 40)
		return US_EINVAL;
	if (isdigit((unsigned char)s[0]) && strchr(s, '-') == NULL) {
		errno = 0;
		v = strtoll(s, &end, 10);
		if (errno || v < 0)
			return US_EINVAL;
		for (size_t i = 0; i < ARRAY_SIZE(units); i++)
			if (end[0] == units[i].unit && end[1] == '\0' &&
			    v <= INT64_MAX / units[i].ms / 2) {
				*out = now_ms - v * units[i].ms;
				return 0;
			}
		if (*end != '\0')
			return US_EINVAL;
		*out = v; /* ms since the epoch */
		return 0;
	}
	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) ||
	    *p++ != '-' || !digits(&p, 2, &d))
		return US_EINVAL;
	if (*p == 'T' || *p == ' ') {
		p++;
		if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
			return US_EINVAL;
		if (*p == ':' && (p++, !digits(&p, 2, &sec)))
			return US_EINVAL;
		if (*p == '.') {
			int n = 0;

			p++;
			while (isdigit((unsigned char)*p)) {
				if (n++ < 3)
					ms = ms * 10 + (*p - '0');
				p++;
			}
			if (n == 0)
				return US_EINVAL;
			for (; n < 3; n++)
				ms *= 10;
		}
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;

		if (!digits(&p, 2, &oh))
			return US_EINVAL;
		if (*p == ':')
			p++;
		if (!digits(&p, 2, &om))
			return US_EINVAL;
		oh *= sign;
		om *= sign;
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60)
		return US_EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = (int64_t)timegm(&tm);
	*out = (t - oh * 3600 - om * 60) * 1000 + ms;
	return 0;
}
