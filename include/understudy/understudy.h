/*
 * libunderstudy: the desk side of understudy.
 *
 * A desk logs in to one of its servers (the control plane: sessions,
 * channels, licenses) and talks in channels over NATS JetStream (the data
 * plane, between desks). When no server answers, it goes on offline:
 * local login for a user who logged in online on this desk before, its
 * channels kept, new ones refused, what it sends queued; it keeps trying
 * its servers (in order, with capped exponential backoff and full
 * jitter) and resyncs when one answers. Every message is delivered to
 * every member exactly once, in order per channel, across disconnects
 * and restarts of servers and of NATS.
 *
 * The library never prints and never starts threads of its own (NATS's
 * client library runs its own). All work happens inside us_poll, which
 * the program calls in its loop; the other calls are blocking with
 * bounded timeouts. While online, the library holds one long poll for
 * the session's events at its server, which us_poll moves on without
 * blocking. One us_desk is used from one thread. Errors are negative
 * codes with stable names (understudy/errors.h).
 */
#ifndef UNDERSTUDY_H
#define UNDERSTUDY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "understudy/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct us_desk us_desk;

struct us_desk_config {
	const char *profile_dir; /* the desk's own state (created) */
	const char *desk_id; /* letters, digits, '.', '_', '-' */
	/* "http://HOST:PORT" or "https://HOST:PORT", in order */
	const char *const *servers;
	size_t n_servers;
	const char *version; /* the desk's version; NULL: the library's */
	int request_timeout_ms; /* one request to a server; 0: 2000 */
	int backoff_base_ms; /* first retry after a loss; 0: 250 */
	int backoff_max_ms; /* cap of the backoff; 0: 10000 */
	/*
	 * PEM file of the CA that https:// servers are verified with (their
	 * certificate and their address); NULL: the system's CAs. A server
	 * that fails the check is not spoken to: it counts as unreachable.
	 * The session then hands over what NATS needs (its CA, credentials).
	 */
	const char *ca_file;
};

enum us_event_type {
	US_EV_STATE, /* text: "online -> offline (PA1 unreachable)" */
	US_EV_MESSAGE, /* a channel message: channel, from, text, seq, id */
	US_EV_SERVER, /* a session event from the server: kind, text (JSON) */
	US_EV_NOTICE /* the library's own notices: kind, text */
};

#define US_TEXT_MAX 4096

struct us_event {
	enum us_event_type type;
	char kind[32]; /* US_EV_SERVER: its type; US_EV_NOTICE: what */
	char channel[64];
	char from[64];
	char id[96]; /* the message id */
	uint64_t seq; /* the message's sequence in its channel's stream */
	char text[US_TEXT_MAX + 1];
};

/*
 * Open a desk (its profile is created when missing). US_EINVAL for a bad
 * config, a ca_file that cannot be read included.
 */
int us_desk_open(const struct us_desk_config *cfg, us_desk **out);

/* Close; what is queued stays in the profile for the next run. */
void us_desk_close(us_desk *d);

/*
 * Log in: online at the first server that answers; when none does,
 * locally, for a user who logged in online on this desk before
 * (US_EUNAUTHORIZED otherwise). 0 online or offline (see us_online);
 * US_EVERSION, US_ENOLICENSE, US_EUNAUTHORIZED from the server.
 */
int us_login(us_desk *d, const char *user, const char *password);

/*
 * Go on with the session this desk's profile holds (a desk program that
 * restarted): it resumes at the first server that answers, without a
 * password. US_ENOTFOUND when the profile has none. A session the server
 * no longer knows needs us_login.
 */
int us_resume(us_desk *d);

/* Log out (online: the server forgets the session). */
int us_logout(us_desk *d);

/* True when the desk's session is live at a server now. */
bool us_online(const us_desk *d);

/* True when NATS answers now (channels are not paused). */
bool us_messaging(const us_desk *d);

/* The server the desk is logged in to, or NULL. */
const char *us_server(const us_desk *d);

/*
 * The channels as JSON text (malloc'ed; free it): online, the server's
 * list; offline, the last one known, each with "joined".
 */
int us_channels(us_desk *d, char **json);

/* Join or leave: online only (US_EOFFLINE), and NATS must answer. */
int us_join(us_desk *d, const char *channel);
int us_leave(us_desk *d, const char *channel);

/*
 * Send text to a joined channel. It goes into the outbox first (durable)
 * and leaves when NATS takes it; its id makes a resend harmless.
 */
int us_send(us_desk *d, const char *channel, const char *text);

/* Messages still in the outbox. */
long us_outbox(us_desk *d);

/*
 * Do the desk's work (deliver, flush, take the server's events,
 * reconnect) for up to timeout_ms, and return the next event: 1 with
 * *ev, 0 none. With timeout_ms 0 it never waits for the server (the
 * events request is held at the server meanwhile); with more, it
 * returns as soon as an event comes.
 */
int us_poll(us_desk *d, int timeout_ms, struct us_event *ev);

/* The last failure of a call, in words (empty when none yet). */
const char *us_desk_why(const us_desk *d);

/* Error names and texts: us_err_name, us_strerror (understudy/errors.h). */

#ifdef __cplusplus
}
#endif

#endif
