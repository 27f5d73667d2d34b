/*
 * understudy, the operator's command line. Each command lives in its own
 * file; every one takes --help, and --json where it prints results.
 */
#ifndef US_CLI_H
#define US_CLI_H

#include <stdbool.h>

#include <jansson.h>

#include "common/common.h"
#include "config/config.h"

/* cli_config.c: config check|doc, and the versions below */
int cli_config(int argc, char **argv);

/* cli_versions.c: config apply|history|show|diff|rollback */
int cli_versions(int argc, char **argv);

/* The options of the commands that read and store config versions. */
struct cli_versions_opts {
	const char *cmd; /* in messages: "understudy CMD: ..."; NULL: config */
	const char *config, *server, *token, *ca, *comment, *at;
	long version;
	bool json, dry_run;
	const char *args[3];
	int n_args;
};

/* Whom to ask and with what, from the options and a config file. */
struct cli_versions_target {
	struct config *cfg; /* NULL when --server and a token were given */
	char *cfg_ca;
	const char *token, *ca;
};

/*
 * Fill t from o: the token (--token, $UNDERSTUDY_TOKEN, the config's
 * admin_token), the CA and the config file whose servers are asked
 * (--config, $UNDERSTUDY_CONFIG, fallback, the example). Returns 0, or
 * -1 with the config's problems on stderr. Free t with
 * cli_versions_target_free, also after a failure.
 */
int cli_versions_target(const struct cli_versions_opts *o, const char *fallback,
    struct cli_versions_target *t);
void cli_versions_target_free(struct cli_versions_target *t);

/*
 * method path (with body, NULL: none) to --server, or to the servers of
 * the config in order until one answers (a 503 is no answer). Returns 0
 * with the status and the JSON answer in *out (the caller's), or -1
 * (said on stderr).
 */
int cli_versions_ask(const struct cli_versions_opts *o,
    const struct cli_versions_target *t, const char *method, const char *path,
    const char *body, long *status, json_t **out);

/*
 * POST /v1/config: text as the next version, checked against base (the
 * version it was made from; 0: whatever is in effect), with name in its
 * diagnostics and comment in the history. Returns 0 with the status and
 * the answer in *out (the caller's), or -1 (said on stderr).
 */
int cli_versions_post(const struct cli_versions_opts *o,
    const struct cli_versions_target *t, const char *name, const char *text,
    const char *comment, int64_t base, long *status, json_t **out);

/*
 * Print an answer of POST /v1/config as apply does: what changed and
 * what was stored, or the refusal with its diagnostics on stderr (with
 * --json, the answer as it came). Returns the exit status, 0 or 1.
 */
int cli_versions_print_answer(
    const struct cli_versions_opts *o, long status, const json_t *out);

/* An error answer (with its diagnostics) on stderr; returns 1. */
int cli_versions_refused(const struct cli_versions_opts *o, const json_t *out);

/* cli_users.c: user add|passwd|del */
int cli_users(int argc, char **argv);

/* cli_passwd.c: passwd */
int cli_passwd(int argc, char **argv);

/*
 * Read a password from the terminal (twice, without echo) or from
 * standard input when it is not a terminal (one line), and put its
 * argon2id hash in hash (crypto_pwhash_STRBYTES). The clear password is
 * wiped before returning. Returns 0, or -1 with the reason on stderr as
 * "understudy CMD: ...".
 */
int cli_passwd_hash(const char *cmd, char *hash, size_t len);

/*
 * An admin action answered 503 by every server (no admin primary for a
 * moment: one is being elected) is sent again, this many times, this
 * long apart.
 */
#define CLI_PASSES 20
#define CLI_PASS_WAIT_MS 250

/* cli_status.c: status */
int cli_status(int argc, char **argv);

/*
 * GET or POST url with a bounded wait; the JSON answer in *out (owned by
 * the caller), the HTTP status in *status. An https:// server is always
 * verified: against the CA file ca, or the system's CAs when it is NULL.
 * Returns 0, or -1 when the server could not be reached or verified
 * (message in err).
 */
int cli_status_http(const char *method, const char *url, const char *token,
    const char *ca, long timeout_ms, long *status, json_t **out, char *err,
    size_t errlen);

/* The same with a request body (POST; NULL: none). */
int cli_http(const char *method, const char *url, const char *token,
    const char *ca, const char *body, long timeout_ms, long *status,
    json_t **out, char *err, size_t errlen);

/*
 * GET path from server (a base URL), or else from the servers of the
 * config file in order until one answers 200, with token as the bearer
 * (NULL: the config's read_token, else its admin_token), verifying
 * https:// servers with ca (NULL: the config's tls_ca where it reads
 * one). Errors go to stderr as "understudy CMD: ...". Returns 0 with
 * *out, or -1.
 */
int cli_ask(const char *cmd, const char *server, const char *file,
    const char *path, const char *token, const char *ca, json_t **out);

/* cli_check.c: check */
int cli_check(int argc, char **argv);
/* The services' table of status and service list. */
void cli_services_print(json_t *services);

/* cli_services.c: service list|restart|stop|start|reset */
int cli_services(int argc, char **argv);

/* cli_records.c: records */
int cli_records(int argc, char **argv);

/* cli_timeline.c: timeline */
int cli_timeline(int argc, char **argv);

/* cli_control.c: stop, start, failback (argv[0] is which) */
int cli_control(int argc, char **argv);

/* cli_backup_status.c: backup status */
int cli_backup_status(int argc, char **argv);
/*
 * cli_backup.c: backup [verify FILE], and restore. backup status (the
 * scheduled backups) is not here: cli_backup routes the subcommands.
 */
int cli_backup(int argc, char **argv);
int cli_restore(int argc, char **argv);

/* cli_up.c: up */
int cli_up(int argc, char **argv);

/* True when argv holds "-h" or "--help". */
bool cli_wants_help(int argc, char **argv);

#endif
