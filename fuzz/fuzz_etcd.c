/*
 * libFuzzer target: every parser of what etcd's gateway sends back
 * (answers of each operation, error bodies, watch stream lines). The
 * first byte picks the parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "coord/coord.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct etcd_watch_msg m;
	struct etcd_res r;
	bool retry;
	unsigned which;

	if (size < 1)
		return 0;
	which = data[0] % 11;
	data++;
	size--;
	if (which <= ETCD_OP_WATCH) {
		etcd_parse_response(
		    (enum etcd_op)which, (const char *)data, size, &r);
		etcd_parse_res_clear(&r);
	} else if (which == 9) {
		memset(&r, 0, sizeof(r));
		etcd_parse_error(400, (const char *)data, size, &r, &retry);
		etcd_parse_res_clear(&r);
	} else {
		etcd_parse_watch((const char *)data, size, &m);
		etcd_parse_watch_clear(&m);
	}
	return 0;
}
