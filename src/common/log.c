/*
 * One line per event on stderr, with time, level and who speaks. Where
 * stderr is the journal (systemd), each line starts with its syslog
 * priority instead of the time: journald stamps the time itself.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static char log_who[64] = "understudy";
static enum log_level log_min = LOG_LEVEL_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error"};
/* "<7>" debug, "<6>" info, "<4>" warning, "<3>" error (sd-daemon.h) */
static const char log_priorities[] = {'7', '6', '4', '3'};
static bool log_journal;

/*
 * UNDERSTUDY_LOG_FORMAT=journal or plain decides; else the journal is
 * stderr when JOURNAL_STREAM names stderr's device and inode, as systemd
 * sets it for StandardError=journal (and not for a redirect of it).
 */
static bool
log_to_journal(void)
{
	const char *f = getenv("UNDERSTUDY_LOG_FORMAT");
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (f && strcmp(f, "journal") == 0)
		return true;
	if (f && strcmp(f, "plain") == 0)
		return false;
	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_init(const char *who, enum log_level min)
{
	str_copy(log_who, who, sizeof(log_who));
	log_min = min;
	log_journal = log_to_journal();
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
	if (log_journal)
		n = snprintf(line, sizeof(line),
		    "<%c>%s %s: ", log_priorities[level], log_names[level],
		    log_who);
	else
		n = snprintf(line, sizeof(line),
		    "%s %s %s: ", time_iso8601(time_wall_ms(), ts, sizeof(ts)),
		    log_names[level], log_who);
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
