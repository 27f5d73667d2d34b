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

/* cli_passwd.c: passwd */
int cli_passwd(int argc, char **argv);

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

/* cli_records.c: records */
int cli_records(int argc, char **argv);

/* cli_control.c: stop, start, failback (argv[0] is which) */
int cli_control(int argc, char **argv);

/* cli_up.c: up */
int cli_up(int argc, char **argv);

/* True when argv holds "-h" or "--help". */
bool cli_wants_help(int argc, char **argv);

#endif
