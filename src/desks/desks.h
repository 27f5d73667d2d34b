/*
 * Desk sessions: login, channels, events, licenses. The control plane of
 * the desks (the data plane, channel traffic, goes through NATS between
 * the desks themselves).
 *
 * Every change of a session (its creation, its channels, its events, its
 * expiry) is committed to the server's SQLite database before the answer,
 * so a restarted server (SIGKILL included) knows every session and a desk
 * that reconnects goes on with its token. Licenses are slots in etcd,
 * /understudy/<cluster>/licenses/<n> for n < licenses, each created on
 * the lease of the server holding the session: a server that dies frees
 * its slots with its lease.
 */
#ifndef US_DESKS_H
#define US_DESKS_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "agent/agent.h"
#include "store/store.h"

/* The longest a desk may wait for events in one request, in seconds. */
#define DESKS_WAIT_MAX 60

struct desks;

/* An answer: an HTTP status, and a body or an error. */
struct desks_res {
	unsigned status;
	int err; /* 0 or US_E... */
	char message[256];
	json_t *body; /* on success; the receiver takes it */
};

typedef void (*desks_cb)(struct desks_res *r, void *arg);

struct desks *desks_new(uv_loop_t *loop, struct agent *a, struct store *st);

/* Answer every waiting request (503) and free. NULL is a no-op. */
void desks_free(struct desks *d);

/* GET /v1/desk/versions. */
json_t *desks_versions(struct desks *d);

#define DESKS_BODY_MAX 4096

/* What a login body says, checked. */
struct desks_login {
	char user[CONFIG_NAME_MAX + 1];
	char desk[65];
	char version[32];
	char password[257];
};

/*
 * Parse and check a login body {"user","password","desk","version"}
 * (JSON, at most DESKS_BODY_MAX bytes) against the config's accepted
 * versions. 0, or the error in *r (400 EINVAL naming the field, 413,
 * 409 EVERSION with the accepted "versions" in r->body).
 */
int desks_login_parse(const struct config *cfg, const char *body, size_t len,
    struct desks_login *out, struct desks_res *r);

/*
 * Log in with a login body. The answer comes through cb (maybe before
 * this returns): 200 with the session, the refusals of
 * desks_login_parse, 401 EUNAUTHORIZED, 403 ENOLICENSE.
 */
void desks_login(
    struct desks *d, const char *body, size_t len, desks_cb cb, void *arg);

/*
 * A desk comes back with its token: the session goes on (licenses
 * checked, channels refreshed), or 401 EEXPIRED.
 */
void desks_resume(struct desks *d, const char *token, desks_cb cb, void *arg);

/* Synchronous requests of a session; *r filled. */
void desks_logout(struct desks *d, const char *token, struct desks_res *r);
void desks_channels(struct desks *d, const char *token, struct desks_res *r);
void desks_join(struct desks *d, const char *token, const char *channel,
    bool join, struct desks_res *r);

/*
 * The session's events after sequence after; when there are none, wait
 * up to wait seconds for one (capped). Through cb.
 */
void desks_events(struct desks *d, const char *token, int64_t after, long wait,
    desks_cb cb, void *arg);

/* The request behind arg went away: never call its cb. */
void desks_forget(struct desks *d, void *arg);

/* Add an event for every live session (a server notice). */
void desks_notice_all(struct desks *d, const char *text);

/* Sessions live on this server, licenses held, requests waiting. */
void desks_counters(
    const struct desks *d, long *sessions, long *licensed, long *waiting);

#endif
