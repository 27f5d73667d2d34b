/*
 * libFuzzer target: what the timeline reads back from etcd and from its
 * query. The first byte picks one: a stored event (any JSON) as
 * GET /v1/timeline shows it (history_event_view), or a kind= list
 * (history_kinds_parse).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "agent/agent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char t[256];
	unsigned k;
	json_t *v, *o;

	if (size < 1)
		return 0;
	if (data[0] % 2 == 0) {
		v = json_loadb(
		    (const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
		o = history_event_view(v);
		/* an event shown always has its kind and its time */
		if (o &&
		    (!json_is_string(json_object_get(o, "kind")) ||
			!json_is_string(json_object_get(o, "time"))))
			__builtin_trap();
		json_decref(o);
		json_decref(v);
		return 0;
	}
	if (size - 1 >= sizeof(t))
		return 0;
	memcpy(t, data + 1, size - 1);
	t[size - 1] = '\0';
	if (history_kinds_parse(t, &k) == 0 && k >= 1u << HISTORY_KINDS)
		__builtin_trap();
	return 0;
}
