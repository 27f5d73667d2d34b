/*
 * libFuzzer target: the small parsers of operator and file input. The
 * first byte picks one: a prompt file as WAV or as raw PCMU
 * (prompt_parse), a time as GET /v1/records, GET /v1/check and
 * understudy records take it (time_parse), or a schedule
 * (config_schedule_parse, config_schedule_slot).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "calls/calls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct prompt p;
	struct config_schedule sc;
	char err[256] = "", t[64];
	int64_t out, now = 1700000000000;

	if (size < 1)
		return 0;
	switch (data[0] % 4) {
	case 0:
	case 1:
		if (prompt_parse(data + 1, size - 1, data[0] % 3 == 0, &p, err,
			sizeof(err)) == 0) {
			if (p.len < PROMPT_FRAME || p.len > size)
				__builtin_trap();
			prompt_free(&p);
		} else if (err[0] == '\0') {
			__builtin_trap(); /* a refusal always says why */
		}
		break;
	case 2:
		if (size - 1 >= sizeof(t))
			return 0;
		memcpy(t, data + 1, size - 1);
		t[size - 1] = '\0';
		time_parse(t, now, &out);
		break;
	default:
		if (size - 1 >= sizeof(t))
			return 0;
		memcpy(t, data + 1, size - 1);
		t[size - 1] = '\0';
		if (config_schedule_parse(t, &sc, err, sizeof(err)) != 0) {
			if (err[0] == '\0' || sc.kind != CONFIG_SCHEDULE_NONE)
				__builtin_trap();
			break;
		}
		/* the slot is the latest time of the schedule up to now */
		out = config_schedule_slot(&sc, now);
		if (sc.interval_s <= 0 || out > now ||
		    config_schedule_next(&sc, now) <= now ||
		    (sc.kind == CONFIG_SCHEDULE_EVERY &&
			now - out >= sc.interval_s * 1000))
			__builtin_trap();
	}
	return 0;
}
