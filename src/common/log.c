/*
 * One line per event on stderr, with time, level and who speaks. Where
 * stderr is the journal (systemd), each line starts with its syslog
 * priority instead of the time: journald stamps the time itself. The
 * warnings and errors are also counted and the latest LOG_RECENT_MAX of
 * them kept in a ring, for GET /v1/log and the daily check. Threads log
 * too (the thread pool, libnats' callbacks): the ring has a mutex.
 */
#include <pthread.h>
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

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct log_entry log_ring[LOG_RECENT_MAX];
static size_t log_next; /* where the next one goes */
static uint64_t log_counts_[2]; /* warn, error: since the start */

const char *
log_level_name(enum log_level level)
{
	return (unsigned)level < ARRAY_SIZE(log_names) ? log_names[level] : "?";
}

/* Keep a warning or an error (its text after the prefix) in the ring. */
static void
log_keep(enum log_level level, int64_t ms, const char *text)
{
	struct log_entry *e;

	pthread_mutex_lock(&log_mu);
	e = &log_ring[log_next % LOG_RECENT_MAX];
	e->time_ms = ms;
	e->level = level;
	log_counts_[level == LOG_LEVEL_ERROR ? 1 : 0]++;
	e->seq = log_counts_[0] + log_counts_[1];
	str_copy(e->text, text, sizeof(e->text));
	log_next++;
	pthread_mutex_unlock(&log_mu);
}

void
log_counts(uint64_t *warnings, uint64_t *errors)
{
	pthread_mutex_lock(&log_mu);
	*warnings = log_counts_[0];
	*errors = log_counts_[1];
	pthread_mutex_unlock(&log_mu);
}

size_t
log_recent(enum log_level min, int64_t since_ms, struct log_entry *out,
    size_t max, struct log_summary *sum)
{
	size_t n = 0, kept, i;

	memset(sum, 0, sizeof(*sum));
	pthread_mutex_lock(&log_mu);
	kept = log_next < LOG_RECENT_MAX ? log_next : LOG_RECENT_MAX;
	/* older ones went out of the ring: any may have been since since_ms */
	sum->truncated = log_next > LOG_RECENT_MAX &&
	    log_ring[log_next % LOG_RECENT_MAX].time_ms >= since_ms;
	for (i = log_next - kept; i < log_next; i++) {
		const struct log_entry *e = &log_ring[i % LOG_RECENT_MAX];

		if (e->time_ms < since_ms)
			continue;
		if (e->level == LOG_LEVEL_ERROR)
			sum->errors++;
		else
			sum->warnings++;
		if (e->level < min)
			continue;
		sum->matched++;
		/* the latest max of them, oldest first */
		if (n == max && max > 0) {
			memmove(out, out + 1, (max - 1) * sizeof(*out));
			n--;
		}
		if (n < max)
			out[n++] = *e;
	}
	pthread_mutex_unlock(&log_mu);
	return n;
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
	int64_t now;
	va_list ap;
	int n, m;
	size_t head;

	if (level < log_min && level < LOG_LEVEL_WARN)
		return;
	now = time_wall_ms();
	if (log_journal)
		n = snprintf(line, sizeof(line),
		    "<%c>%s %s: ", log_priorities[level], log_names[level],
		    log_who);
	else
		n = snprintf(line, sizeof(line),
		    "%s %s %s: ", time_iso8601(now, ts, sizeof(ts)),
		    log_names[level], log_who);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	head = (size_t)n; /* the ring keeps what follows the prefix */
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
	if (level >= LOG_LEVEL_WARN) {
		line[n] = '\0';
		log_keep(level, now, line + head);
		if (level < log_min)
			return;
	}
	line[n++] = '\n';
	/* one write(2) per line keeps lines whole when processes share stderr
	 */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
