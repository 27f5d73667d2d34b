/* One line per event on stderr, with time, level and who speaks. */
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static char log_who[64] = "understudy";
static enum log_level log_min = LOG_LEVEL_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

void
log_init(const char *who, enum log_level min)
{
	str_copy(log_who, who, sizeof(log_who));
	log_min = min;
}

void
log_set_level(enum log_level min)
{
	log_min = min;
}

int
log_level_parse(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(log_names); i++)
		if (strcmp(s, log_names[i]) == 0)
			return (int)i;
	return -1;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1024], ts[32];
	va_list ap;
	int n, m;

	if (level < log_min)
		return;
	time_iso8601(time_wall_ms(), ts, sizeof(ts));
	n = snprintf(
	    line, sizeof(line), "%s %s %s: ", ts, log_names[level], log_who);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	/* what a client sent can reach a line: it never starts another */
	for (int i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[n++] = '\n';
	/* one write(2) per line keeps lines whole when processes share stderr
	 */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
