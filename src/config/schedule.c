/*
 * Schedules of work the admin primary runs by itself (check_schedule,
 * backup_schedule): `daily HH:MM` (UTC) or `every N[smhd]`. Both are a
 * period and an offset from the epoch, so that every server computes the
 * same slots from the wall clock alone.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

#define SCHEDULE_DAY_MS (86400LL * 1000)

/* A decimal number of at most 9 digits at *p; advances p. -1: none. */
static long
schedule_number(const char **p)
{
	long v = 0;
	int n = 0;

	while (isdigit((unsigned char)**p) && n < 9) {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	if (n == 0 || isdigit((unsigned char)**p))
		return -1;
	return v;
}

int
config_schedule_parse(
    const char *s, struct config_schedule *out, char *err, size_t errlen)
{
	const char *p = s;
	long n, h, m;
	int64_t unit;

	memset(out, 0, sizeof(*out));
	if (strncmp(p, "daily ", 6) == 0) {
		p += 6;
		while (*p == ' ')
			p++;
		if ((h = schedule_number(&p)) < 0 || *p++ != ':' ||
		    (m = schedule_number(&p)) < 0 || *p != '\0' || h > 23 ||
		    m > 59)
			goto bad;
		out->period_ms = SCHEDULE_DAY_MS;
		out->offset_ms = (h * 60 + m) * 60 * 1000LL;
		return 0;
	}
	if (strncmp(p, "every ", 6) == 0) {
		p += 6;
		while (*p == ' ')
			p++;
		if ((n = schedule_number(&p)) <= 0)
			goto bad;
		switch (*p) {
		case 's':
			unit = 1000;
			break;
		case 'm':
			unit = 60 * 1000;
			break;
		case 'h':
			unit = 3600 * 1000;
			break;
		case 'd':
			unit = SCHEDULE_DAY_MS;
			break;
		default:
			goto bad;
		}
		if (p[1] != '\0')
			goto bad;
		out->period_ms = n * unit;
		if (out->period_ms < CONFIG_SCHEDULE_MIN_MS ||
		    out->period_ms > CONFIG_SCHEDULE_MAX_MS) {
			snprintf(err, errlen,
			    "'%.40s': the period must be from %d s to %d days",
			    s, CONFIG_SCHEDULE_MIN_MS / 1000,
			    (int)(CONFIG_SCHEDULE_MAX_MS / SCHEDULE_DAY_MS));
			memset(out, 0, sizeof(*out));
			return US_EINVAL;
		}
		return 0;
	}
bad:
	snprintf(err, errlen,
	    "'%.40s' is not a schedule: `daily HH:MM` (UTC) or `every "
	    "N[smhd]` (every 6h)",
	    s);
	memset(out, 0, sizeof(*out));
	return US_EINVAL;
}

int
config_schedule_slot(
    const struct config_schedule *sc, int64_t now_ms, int64_t *slot_start_ms)
{
	int64_t t, k;

	if (sc->period_ms <= 0)
		return US_EINVAL;
	t = now_ms - sc->offset_ms;
	k = t / sc->period_ms;
	if (t % sc->period_ms < 0)
		k--; /* floor, before the epoch too */
	*slot_start_ms = k * sc->period_ms + sc->offset_ms;
	return 0;
}

bool
config_check_schedule(const char *v, char *err, size_t errlen)
{
	struct config_schedule sc;

	return config_schedule_parse(v, &sc, err, errlen) == 0;
}
