/*
 * Schedules of work the admin primary does by itself (backup_schedule,
 * check_schedule): `daily HH:MM` in the server's local time, or
 * `every N` with a unit s, m, h or d, aligned on the Unix epoch. Time is
 * cut into slots, each starting at one scheduled time; the work is done
 * once per slot, also when the slot started before the server did.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"

#define SCHEDULE_EVERY_MIN 10
#define SCHEDULE_EVERY_MAX (31L * 86400)

int
config_schedule_parse(
    const char *s, struct config_schedule *out, char *err, size_t errlen)
{
	long n, h, m;
	char unit;
	int used = 0;

	memset(out, 0, sizeof(*out));
	if (strncmp(s, "daily ", 6) == 0) {
		const char *t = s + 6;

		if (strlen(t) != 5 || t[2] != ':' ||
		    sscanf(t, "%2ld:%2ld%n", &h, &m, &used) != 2 || used != 5 ||
		    h < 0 || h > 23 || m < 0 || m > 59) {
			snprintf(err, errlen,
			    "'%s': the time of day is HH:MM, 00:00 to 23:59",
			    s);
			return -1;
		}
		out->kind = CONFIG_SCHEDULE_DAILY;
		out->hour = (int)h;
		out->minute = (int)m;
		out->interval_s = 86400;
		return 0;
	}
	if (strncmp(s, "every ", 6) == 0) {
		const char *t = s + 6;
		size_t len = strlen(t);

		if (len < 2 || len > 12 || t[0] < '0' || t[0] > '9' ||
		    sscanf(t, "%ld%c%n", &n, &unit, &used) != 2 ||
		    (size_t)used != len) {
			snprintf(err, errlen,
			    "'%s': write every N with a unit: s, m, h or d "
			    "(every 6h)",
			    s);
			return -1;
		}
		switch (unit) {
		case 's':
			break;
		case 'm':
			n = n > SCHEDULE_EVERY_MAX ? n : n * 60;
			break;
		case 'h':
			n = n > SCHEDULE_EVERY_MAX ? n : n * 3600;
			break;
		case 'd':
			n = n > SCHEDULE_EVERY_MAX ? n : n * 86400;
			break;
		default:
			snprintf(err, errlen,
			    "'%s': the unit is s, m, h or d, not '%c'", s,
			    unit);
			return -1;
		}
		if (n < SCHEDULE_EVERY_MIN || n > SCHEDULE_EVERY_MAX) {
			snprintf(err, errlen,
			    "'%s': from every %ds to every %ldd", s,
			    SCHEDULE_EVERY_MIN, SCHEDULE_EVERY_MAX / 86400);
			return -1;
		}
		out->kind = CONFIG_SCHEDULE_EVERY;
		out->interval_s = n;
		return 0;
	}
	snprintf(err, errlen,
	    "'%s': write `daily HH:MM` (local time) or `every N` with a "
	    "unit s, m, h or d",
	    s);
	return -1;
}

bool
config_check_schedule(const char *v, char *err, size_t errlen)
{
	struct config_schedule s;

	return config_schedule_parse(v, &s, err, errlen) == 0;
}

/* The scheduled time of day on the day of t, local time, in ms. */
static int64_t
daily_at(const struct config_schedule *s, time_t t, int day_offset)
{
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL)
		return 0;
	tm.tm_mday += day_offset;
	tm.tm_hour = s->hour;
	tm.tm_min = s->minute;
	tm.tm_sec = 0;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm) * 1000;
}

int64_t
config_schedule_slot(const struct config_schedule *s, int64_t now_ms)
{
	time_t t = (time_t)(now_ms / 1000);
	int64_t at;

	switch (s->kind) {
	case CONFIG_SCHEDULE_EVERY:
		return now_ms / (s->interval_s * 1000) * (s->interval_s * 1000);
	case CONFIG_SCHEDULE_DAILY:
		at = daily_at(s, t, 0);
		return at <= now_ms ? at : daily_at(s, t, -1);
	default:
		return 0;
	}
}

int64_t
config_schedule_next(const struct config_schedule *s, int64_t now_ms)
{
	int64_t slot = config_schedule_slot(s, now_ms);

	switch (s->kind) {
	case CONFIG_SCHEDULE_EVERY:
		return slot + s->interval_s * 1000;
	case CONFIG_SCHEDULE_DAILY:
		return daily_at(s, (time_t)(slot / 1000), 1);
	default:
		return 0;
	}
}
