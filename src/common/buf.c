/* Growable byte buffers with a hard cap fixed when they are created. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void
buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->max = max;
	b->err = 0;
}

/* Record the first refusal; later appends may still fit (a shorter one). */
static int
buf_refuse(struct buf *b, int err)
{
	if (b->err == 0)
		b->err = err;
	return err;
}

static int
buf_reserve(struct buf *b, size_t extra)
{
	size_t need, n;
	char *p;

	if (extra > b->max || b->len > b->max - extra)
		return buf_refuse(b, US_ETOOBIG);
	need = b->len + extra + 1;
	if (need <= b->alloc)
		return 0;
	n = b->alloc ? b->alloc : 256;
	while (n < need)
		n *= 2;
	if (n > b->max + 1)
		n = b->max + 1;
	if ((p = realloc(b->data, n)) == NULL)
		return buf_refuse(b, US_ENOMEM);
	b->data = p;
	b->alloc = n;
	return 0;
}

int
buf_append(struct buf *b, const void *data, size_t len)
{
	int rc;

	if ((rc = buf_reserve(b, len)) != 0)
		return rc;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return buf_refuse(b, US_EINVAL);
	if ((rc = buf_reserve(b, (size_t)n)) != 0)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		if (b->data)
			b->data[0] = '\0';
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

void
buf_reset(struct buf *b)
{
	b->err = 0;
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b, b->max);
}

int
buf_take_line(struct buf *b, char **line, size_t *len)
{
	char *nl, *p;
	size_t n;

	if (b->len == 0 || (nl = memchr(b->data, '\n', b->len)) == NULL)
		return 0;
	n = (size_t)(nl - b->data);
	if ((p = malloc(n + 1)) == NULL)
		return US_ENOMEM;
	memcpy(p, b->data, n);
	p[n] = '\0';
	buf_consume(b, n + 1);
	*line = p;
	*len = n;
	return 1;
}
