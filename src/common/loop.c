/* What every libuv reader of the process shares. */
#include "common.h"

void
loop_read_buffer(uv_handle_t *h, size_t size, uv_buf_t *b)
{
	/*
	 * One loop, one thread: each read callback consumes its data
	 * before the next allocation, so one buffer serves every reader.
	 */
	static char mem[LOOP_READ_MAX];

	(void)h;
	(void)size;
	b->base = mem;
	b->len = sizeof(mem);
}
