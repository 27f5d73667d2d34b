/*
 * understudyd: a master process that runs one worker and watches it
 * (master.c), and the worker with the single libuv loop (worker.c).
 *
 * Master and worker talk over a pipe on the worker's fd 3, one line per
 * message: the master sends "ping", the worker answers "pong" from its
 * loop, and tells "lease ID" (hex, 0 for none) whenever it changes,
 * "ready" once it serves and "status TEXT" when what it is changes
 * (notify.c).
 */
#ifndef US_DAEMON_H
#define US_DAEMON_H

#include "common/common.h"
#include "config/config.h"

#include <uv.h>

#define DAEMON_IPC_FD 3

struct daemon_args {
	const char *config_path;
	const char *server;
	const char *log_level; /* --log-level, or NULL: the config's */
	const char *state_dir; /* the database's directory */
	bool restarted; /* a worker the master started again after a death */
	struct config *cfg;
	const struct config_server *self;
};

/* master.c */

/*
 * Run the master until it is told to stop (SIGTERM, SIGINT) or gives up
 * on a worker that keeps dying. Returns the process exit status.
 */
int master_main(const struct daemon_args *a);

/* How long a worker may leave a ping unanswered before it is killed. */
unsigned master_hang_limit_ms(unsigned lease_ttl);

/* notify.c */

#define NOTIFY_STATUS_MAX 200 /* bytes of a STATUS= text */

/*
 * Read the watchdog interval systemd set (WATCHDOG_USEC); warn where it
 * is too short for the master to handle a hung worker (hang_limit_ms)
 * before systemd would.
 */
void notify_init(unsigned hang_limit_ms);

/*
 * Send WATCHDOG=1 when half the interval has passed since the last one
 * and the worker's loop answered within that half (silent_ms: since its
 * last line; UINT64_MAX with no worker). Call it often (every ping).
 */
void notify_watchdog(uint64_t silent_ms);

/* STATUS=text (cut at NOTIFY_STATUS_MAX), when it differs from the last. */
void notify_status(const char *text);

/* STOPPING=1, once; "ready" and "status" lines are ignored afterwards. */
void notify_stopping(void);

/*
 * A line from the worker: "ready" sends READY=1 (once), "status TEXT"
 * sends STATUS=TEXT. Returns false for any other line.
 */
bool notify_worker_line(const char *line);

struct api_ctx;

/*
 * The worker's side: what it is now (started: its parts are built;
 * before, it waits for the configuration), as a status text compared
 * with last (lastlen bytes, updated). When it changed, send(arg, line)
 * gets "ready\n" where the server serves (or an operator stopped it),
 * then "status TEXT\n".
 */
void notify_worker_report(const struct api_ctx *ctx, bool started, char *last,
    size_t lastlen, void (*send)(void *arg, const char *line), void *arg);

/* tls.c */

/*
 * Check every TLS file the server uses (tls_cert and tls_key, etcd_ca,
 * etcd_cert and etcd_key, messaging_ca, messaging_cert and
 * messaging_key): readable, parsed, pairs matching, the API's
 * certificate naming self's address. Each problem is logged as
 * "FILE:LINE: option: ...". Returns 0, or -1 when the server must not
 * start.
 */
int tls_check(const struct config *cfg, const struct config_server *self);

/*
 * The text of a file option's file (value as in the config, resolved
 * next to it), a new string the caller frees; NULL with err on failure.
 */
char *tls_read(
    const struct config *cfg, const char *value, char *err, size_t errlen);

/* A file's text (at most 1 MiB), a new string; NULL with err on failure. */
char *tls_read_path(const char *path, size_t *len, char *err, size_t errlen);

/* conf.c */

struct versions;

/*
 * The configuration the worker runs, and the master's services: the
 * version in effect in etcd (on an empty cluster, the local file stored
 * first as version 1), waited for on the loop (pings are answered
 * meanwhile) until it comes or *stop turns true. A local file that
 * differs is logged (unless quiet: the worker says it), and *differs
 * set. Returns the parsed config (version set), or NULL when stopped or
 * when the version cannot run here (logged).
 */
struct config *conf_effective(uv_loop_t *loop, struct versions *v,
    const struct daemon_args *a, const bool *stop, bool *differs, bool quiet);

struct etcd;
struct etcd_opts;

/*
 * The etcd client of the config: its endpoints, and its TLS files
 * (etcd_ca, etcd_cert, etcd_key) set in eo for the call. NULL on ENOMEM.
 */
struct etcd *tls_etcd_new(
    uv_loop_t *loop, const struct config *cfg, struct etcd_opts *eo);

/* fence.c */

/* Run a service's command and fence it (see fence.c). */
int fence_main(const char *command, const char *user, long stop_ms);

/* CLOCK_BOOTTIME in ms: the fence's clock, which runs through a suspend. */
uint64_t fence_boot_ms(void);

/* services.c: the supervisor of [service] sections, in the master */

struct services;

/* A line for the worker ("svc NAME {json}\n", "stopped POST\n"). */
typedef void (*services_say_fn)(const char *line, void *arg);

struct services *services_new(uv_loop_t *loop, const struct daemon_args *a,
    const char *exe, services_say_fn say, void *arg);

/* Start what may run now (server services). */
void services_start(struct services *ss);

/*
 * A line from the worker: "grant POST EPOCH UNTIL_MONO_MS",
 * "release POST", "service ACTION NAME". True when it was one.
 */
bool services_line(struct services *ss, const char *line);

/* Send every service's state to the worker (a new worker). */
void services_push_all(struct services *ss);

/*
 * The worker died: every post service lost its fence. done(arg) runs
 * once every one of them has stopped (at once when none runs).
 */
void services_revoke_posts(
    struct services *ss, void (*done)(void *arg), void *arg);

/* Stop everything, then free; done(arg) when the last process ended. */
void services_free(struct services *ss, void (*done)(void *arg), void *arg);

/* worker.c */

/* Run the worker until it stops. Returns the process exit status. */
int worker_main(const struct daemon_args *a);

#endif
