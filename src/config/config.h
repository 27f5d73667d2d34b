/*
 * The configuration: one INI file for the whole cluster. options.c holds
 * the option table (every option defined once) with the checks of single
 * values and the option reference; load.c reads a file into a struct
 * config and looks things up in it; check.c checks across the file and
 * keeps the diagnostics; print.c prints the normalised file.
 */
#ifndef US_CONFIG_H
#define US_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"

#define CONFIG_NAME_MAX 32
#define CONFIG_LINE_MAX 1024
#define CONFIG_FILE_MAX (1024 * 1024)

enum config_section {
	CONFIG_SEC_CLUSTER,
	CONFIG_SEC_SERVER,
	CONFIG_SEC_USER,
	CONFIG_SEC_CHANNEL,
	CONFIG_SEC_SERVICE,
	CONFIG_SEC_COUNT
};

enum config_failback { CONFIG_FAILBACK_AUTO, CONFIG_FAILBACK_MANUAL };
enum config_license_policy { CONFIG_LICENSE_WARN, CONFIG_LICENSE_ENFORCE };
enum config_scope { CONFIG_SCOPE_SERVER, CONFIG_SCOPE_POST };
enum config_restart {
	CONFIG_RESTART_ALWAYS,
	CONFIG_RESTART_ON_FAILURE,
	CONFIG_RESTART_NO
};

/* Every option of every section; the table in options.c defines them. */
#define CONFIG_MAX_OPTIONS 96

struct config_cluster {
	char *name;
	struct strlist etcd; /* endpoints, "http://host:port" */
	bool etcd_local; /* etcd = local: understudy up runs one */
	long local_etcd_port;
	long lease_ttl; /* seconds */
	int failback; /* enum config_failback */
	long failback_delay; /* seconds */
	char *admin_token; /* for the control API; NULL: control is off */
	char *read_token; /* for read-only requests; never admin_token */
	char *registrar; /* "local", "IP:PORT", or NULL: no registration */
	long local_registrar_port;
	long media_timeout; /* seconds without RTP before a call is ended */
	long calls_backlog_max; /* calls waiting for etcd, then refused */
	long loop_lag_max; /* ms the loop may run late, then refused; 0: off */
	long record_retention; /* seconds a record stays in etcd */
	long licenses; /* concurrent desk sessions; 0: no limit */
	int license_policy; /* enum config_license_policy */
	int log_level; /* enum log_level */
	long session_timeout; /* seconds idle before a session expires */
	long login_failures; /* per user and per address a minute; 0: off */
	long desk_resumes_waiting; /* resumes queued; past it 503 EBUSY */
	struct strlist desk_versions; /* accepted at login */
	struct strlist messaging; /* NATS URLs */
	bool messaging_local; /* messaging = local: understudy up runs one */
	long local_nats_port;
	/* file names as written; config_file_path resolves them */
	char *backup_schedule; /* NULL: no scheduled backups */
	char *backup_dir; /* relative to a server's state directory */
	long backup_keep; /* archives kept in backup_dir */
	char *tls_cert; /* the API serves HTTPS where set (with tls_key) */
	char *tls_key;
	char *tls_ca; /* what clients verify the API with */
	char *etcd_ca;
	char *etcd_cert;
	char *etcd_key;
	char *messaging_ca; /* NATS over TLS where set */
	char *messaging_cert;
	char *messaging_key;
	char *messaging_user;
	char *messaging_password;
	char *messaging_token;
	char *check_schedule; /* the admin primary's daily check, or NULL */
	long check_disk_min_free; /* MiB a state dir must have free */
	struct strlist health_requires; /* services /health needs here */
	int line; /* of the [cluster] header, 0 when absent */
	int lines[CONFIG_MAX_OPTIONS];
};

struct config_server {
	char *name;
	char *address;
	long api_port;
	long desk_port; /* 0: desks use api_port */
	long sip_port;
	long max_media_ports;
	char *route_point;
	char *aa_route_point;
	long media_port_base;
	long media_ports;
	long rtp_port_base;
	struct strlist interceptor_ports;
	struct strlist failover; /* server names, in order of preference */
	char *prompt; /* file the media ports play, or NULL: echo */
	bool spare;
	int line;
	int lines[CONFIG_MAX_OPTIONS];
};

struct config_user {
	char *name;
	char *password; /* argon2id hash */
	struct strlist groups;
	int line;
	int lines[CONFIG_MAX_OPTIONS];
};

struct config_channel {
	char *name;
	struct strlist allow; /* user names and @group names */
	int line;
	int lines[CONFIG_MAX_OPTIONS];
};

/* [service NAME]: a process the master supervises (src/daemon/services.c) */
struct config_service {
	char *name;
	char *command; /* run by /bin/sh -c */
	int scope; /* enum config_scope */
	struct strlist servers; /* scope = server: where; empty: every server */
	char *post; /* scope = post: the post it follows */
	struct strlist after; /* services that must be ready first */
	char *ready; /* probe: http://, tcp:, exec:, notify; NULL: started */
	char *health; /* probe run every health_interval, or NULL */
	long health_interval; /* ms */
	long health_failures; /* in a row: a crash */
	int restart; /* enum config_restart */
	long restart_delay; /* ms, the first backoff, doubled each time */
	long restart_delay_max; /* ms, the backoff's cap */
	long crash_limit; /* crashes within crash_window: failed */
	long crash_window; /* s */
	long stop_timeout; /* ms from SIGTERM to SIGKILL */
	struct strlist env; /* KEY=VALUE */
	char *user;
	char *working_dir;
	int line;
	int lines[CONFIG_MAX_OPTIONS];
};

struct config {
	char *path;
	int64_t version; /* the cluster's version this is (0: a file) */
	struct config_cluster cluster;
	struct config_server *servers;
	size_t n_servers;
	struct config_user *users;
	size_t n_users;
	struct config_channel *channels;
	size_t n_channels;
	struct config_service *services;
	size_t n_services;
};

enum config_severity { CONFIG_ERROR, CONFIG_WARNING };

struct config_diag {
	int line; /* 0: about the file as a whole */
	enum config_severity severity;
	char *message;
	unsigned seq; /* order of finding */
};

/* Problems found in one file, in line order once loading is done. */
struct config_diags {
	char *path;
	struct config_diag *v;
	size_t n;
	size_t errors;
	size_t warnings;
};

/* options.c */

/*
 * CONFIG_TYPE_SECRET is text that is never shown: config_print writes
 * "(set)" in its place, and its check never quotes the value in a problem.
 */
enum config_type {
	CONFIG_TYPE_INT,
	CONFIG_TYPE_STRING,
	CONFIG_TYPE_BOOL,
	CONFIG_TYPE_ENUM,
	CONFIG_TYPE_LIST,
	CONFIG_TYPE_SECRET
};

/* syntax checks beyond the type; they write a reason into err */
typedef bool (*config_check_fn)(const char *v, char *err, size_t errlen);

struct config_option {
	enum config_section section;
	const char *name;
	enum config_type type;
	long min, max;
	const char *def; /* default as written in the file; NULL: none */
	const char *const *choices;
	size_t offset; /* of the value in its section's struct */
	config_check_fn check;
	bool runtime; /* may change while the cluster runs */
	const char *doc;
};

/*
 * The option table: config_n_options entries (at most
 * CONFIG_MAX_OPTIONS), in the order of the reference and of the printed
 * file.
 */
extern const struct config_option config_options[];
extern const size_t config_n_options;

/*
 * "cluster", "server", "user", "channel", "service", indexed by enum
 * config_section.
 */
extern const char *const config_section_names[CONFIG_SEC_COUNT];

/*
 * The option name of section sec, with its index in config_options in
 * *idx; NULL when there is none.
 */
const struct config_option *config_option_find(
    enum config_section sec, const char *name, size_t *idx);

/* True when option name of sec may change while the cluster runs. */
bool config_option_runtime(enum config_section sec, const char *name);

/*
 * The check of a name (a cluster, a section, a group): true when v is
 * one, else false with the reason in err.
 */
bool config_check_name(const char *v, char *err, size_t errlen);

/* Print the option reference (Markdown) from the option table. */
void config_doc(FILE *f);

/* schedule.c: when the admin primary does scheduled work */

enum config_schedule_kind {
	CONFIG_SCHEDULE_NONE,
	CONFIG_SCHEDULE_DAILY, /* at hour:minute, local time */
	CONFIG_SCHEDULE_EVERY /* every interval_s, aligned on the epoch */
};

struct config_schedule {
	int kind; /* enum config_schedule_kind */
	int hour, minute;
	int64_t interval_s; /* between two slots (daily: 86400) */
};

/*
 * Parse `daily HH:MM` or `every N` (unit s, m, h or d; 10 s to 31 d)
 * into out. Returns 0, or -1 with the reason in err.
 */
int config_schedule_parse(
    const char *s, struct config_schedule *out, char *err, size_t errlen);

/* The option check of a schedule (config_check_fn). */
bool config_check_schedule(const char *v, char *err, size_t errlen);

/*
 * The start of the slot now_ms (Unix ms) is in: the latest scheduled
 * time at or before it. 0 for CONFIG_SCHEDULE_NONE.
 */
int64_t config_schedule_slot(const struct config_schedule *s, int64_t now_ms);

/* The start of the slot after the one now_ms is in. */
int64_t config_schedule_next(const struct config_schedule *s, int64_t now_ms);

/* load.c */

/*
 * Read, parse and check the file at path. Every problem goes into d
 * (which the caller frees with config_diags_free); the returned config
 * is usable only when d->errors is 0. Returns NULL only when the file
 * cannot be read (d says why) or memory runs out.
 */
struct config *config_load(const char *path, struct config_diags *d);

/* The same from a buffer; name is used in messages. */
struct config *config_parse(
    const char *name, const char *text, size_t len, struct config_diags *d);

/* Free a config; NULL is a no-op. */
void config_free(struct config *cfg);

/* The server named name, or NULL. */
const struct config_server *config_server_find(
    const struct config *cfg, const char *name);

/* The [user NAME] or [channel NAME] of that name, or NULL. */
const struct config_user *config_user_find(
    const struct config *cfg, const char *name);
const struct config_channel *config_channel_find(
    const struct config *cfg, const char *name);
const struct config_service *config_service_find(
    const struct config *cfg, const char *name);

/*
 * True when the service may run on server: a server-scope service
 * listed for it (or for every server), or any post-scope service (it
 * runs wherever its post is owned).
 */
bool config_service_here(const struct config_service *sv, const char *server);

/*
 * A probe ("http://HOST:PORT/PATH", "tcp:HOST:PORT", "exec:COMMAND",
 * "notify") is well formed; else false with the reason in err. notify
 * is allowed only where allow_notify.
 */
bool config_check_probe(
    const char *v, bool allow_notify, char *err, size_t errlen);

/*
 * A file option's value as a path: relative to the config file's
 * directory unless absolute. A new string (the caller frees it), or NULL
 * for NULL.
 */
char *config_file_path(const struct config *cfg, const char *value);

/*
 * The base URL of a server's API, "https://ADDRESS:PORT" where the
 * cluster serves HTTPS (tls_cert), else "http://...", into buf.
 */
void config_api_url(const struct config *cfg, const char *address, long port,
    char *buf, size_t len);

/* True when the server is meant to run on this machine. */
bool config_address_is_local(const char *address);

/* check.c */

/*
 * Check cfg across the file (the cluster section, TLS, each server, pairs
 * of servers, numbers, capacity, users and channels); every problem goes
 * into d, which is then sorted by line. Fills in what follows from the
 * file: local etcd and NATS URLs, max_media_ports, desk_versions.
 */
void config_check(struct config *cfg, struct config_diags *d);

/*
 * Add a problem at line (0: the file as a whole) to d; the message is
 * formatted and copied. Out of memory, the problem is dropped.
 */
void config_diag_add(struct config_diags *d, int line, enum config_severity sev,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Free the diagnostics' contents. */
void config_diags_free(struct config_diags *d);

/* Print "FILE:LINE: error: message" lines to f. */
void config_diags_print(const struct config_diags *d, FILE *f);

/* The line of a server's option (its section's line when not given). */
int config_server_line(const struct config_server *s, const char *key);

/* The line of a [cluster] option (the section's line when not given). */
int config_cluster_line(const struct config *cfg, const char *key);

/*
 * A route point or interceptor pattern matches an extension. The checker
 * (a pattern that takes a route point's calls) and calls/sip.c (where an
 * INVITE goes) both use it: it stays in this part, below calls.
 */
bool config_pattern_match(const char *pattern, const char *extension);

/* print.c */

/*
 * Print the normalised config, every option with its value, as INI;
 * a secret (admin_token, read_token, a user's password) as "(set)".
 */
void config_print(const struct config *cfg, FILE *f);

/*
 * The same, with each secret as "(set #MARK)": a short keyed hash that
 * differs when the secret does, for diffs that must not show secrets.
 */
void config_print_marked(const struct config *cfg, FILE *f);

#endif
