/*
 * What systemd is told (sd_notify(3), docs/operations.md "Running under
 * systemd"). Only the master speaks to systemd (NotifyAccess=main): the
 * worker tells the master, over their pipe, "ready" once it serves and
 * "status TEXT" when what it owns changes; the master passes both on,
 * and vouches for the worker with WATCHDOG=1 only while the worker's
 * loop answers its pings. Without NOTIFY_SOCKET, sd_notify does nothing.
 */
#include <inttypes.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "agent/agent.h"
#include "api/api.h"
#include "daemon.h"

static uint64_t notify_wd_ms; /* the watchdog interval; 0: none */
static uint64_t notify_wd_last; /* monotonic ms of the last WATCHDOG=1 */
static bool notify_ready_sent;
static bool notify_stopping_sent;
static char notify_last[NOTIFY_STATUS_MAX + 1];

void
notify_init(unsigned hang_limit_ms)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return;
	notify_wd_ms = usec / 1000 ? usec / 1000 : 1;
	log_info("systemd watchdog: %" PRIu64 " ms; pinged every %" PRIu64
		 " ms while the worker answers",
	    notify_wd_ms, notify_wd_ms / 2);
	/* a hung worker is killed and back within the hang limit */
	if (notify_wd_ms < 2 * (uint64_t)hang_limit_ms)
		log_warn("systemd watchdog: %" PRIu64 " ms is under twice the "
			 "hang limit (%u ms): systemd may restart this whole "
			 "server for a hung worker before the master "
			 "restarts the worker; set WatchdogSec= above "
			 "lease_ttl",
		    notify_wd_ms, hang_limit_ms);
}

void
notify_watchdog(uint64_t silent_ms)
{
	uint64_t now, half = notify_wd_ms / 2;

	if (notify_wd_ms == 0 || silent_ms >= half)
		return;
	now = time_mono_ms();
	if (notify_wd_last && now - notify_wd_last < half)
		return;
	notify_wd_last = now;
	sd_notify(0, "WATCHDOG=1");
}

void
notify_status(const char *text)
{
	char t[NOTIFY_STATUS_MAX + 1];

	str_copy(t, text, sizeof(t));
	if (strcmp(t, notify_last) == 0)
		return;
	str_copy(notify_last, t, sizeof(notify_last));
	sd_notifyf(0, "STATUS=%s", t);
}

void
notify_stopping(void)
{
	if (notify_stopping_sent)
		return;
	notify_stopping_sent = true;
	str_copy(notify_last, "stopping", sizeof(notify_last));
	sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

bool
notify_worker_line(const char *line)
{
	if (strcmp(line, "ready") == 0) {
		if (!notify_ready_sent && !notify_stopping_sent) {
			notify_ready_sent = true;
			log_debug("systemd: ready");
			sd_notify(0, "READY=1");
		}
		return true;
	}
	if (strncmp(line, "status ", 7) == 0) {
		if (!notify_stopping_sent)
			notify_status(line + 7);
		return true;
	}
	return false;
}

/* ---- the worker's side ---- */

/*
 * "; owns PA1 (home), PA3 (covering)" into b: the posts this server acts
 * for; those that would not fit are counted, never silently left out.
 */
static void
owned_posts(const struct api_ctx *ctx, struct buf *b)
{
	struct agent_post *p;
	int64_t epoch;
	unsigned n = 0, more = 0;

	for (size_t i = 0; (p = agent_post_at(ctx->agent, i)) != NULL; i++) {
		if (!agent_owns(ctx->agent, p, &epoch))
			continue;
		if (more || b->len + strlen(p->home->name) + 64 > b->max) {
			more++;
			continue;
		}
		buf_printf(b, "%s%s (%s)", n++ ? ", " : "; owns ",
		    p->home->name, p->home == ctx->self ? "home" : "covering");
	}
	if (more)
		buf_printf(b, " and %u more", more);
	else if (n == 0)
		buf_printf(b, "; owns no post");
}

void
notify_worker_report(const struct api_ctx *ctx, bool started, char *last,
    size_t lastlen, void (*send)(void *arg, const char *line), void *arg)
{
	char line[NOTIFY_STATUS_MAX + 16];
	const char *why = NULL;
	struct buf b;

	buf_init(&b, NOTIFY_STATUS_MAX);
	if (!started) {
		buf_printf(&b, "starting: reading the configuration in effect");
	} else if ((why = routes_unhealthy(ctx, false)) != NULL) {
		buf_printf(&b, "not serving: %s", why);
	} else {
		buf_printf(&b, "%s%s",
		    agent_stopped(ctx->agent, ctx->self->name)
			? "stopped by an operator"
			: "serving",
		    ctx->self->spare ? " (spare)" : "");
		owned_posts(ctx, &b);
		if (agent_is_admin(ctx->agent))
			buf_printf(&b, "; admin primary");
	}
	if (b.data && strcmp(b.data, last) != 0) {
		str_copy(last, b.data, lastlen);
		if (started && why == NULL)
			send(arg, "ready\n");
		snprintf(line, sizeof(line), "status %s\n", b.data);
		send(arg, line);
	}
	buf_free(&b);
}
