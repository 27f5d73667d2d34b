/*
 * The option table: every option of the configuration defined once in
 * config_options[], with the checks of single values and the option
 * reference (config doc, docs/config.md). The loader, the checker and the
 * printer all read this table.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"

static bool check_address(const char *v, char *err, size_t errlen);
static bool check_extension(const char *v, char *err, size_t errlen);
static bool check_pattern(const char *v, char *err, size_t errlen);
static bool check_endpoint(const char *v, char *err, size_t errlen);
static bool check_hash(const char *v, char *err, size_t errlen);
static bool check_allow(const char *v, char *err, size_t errlen);
static bool check_token(const char *v, char *err, size_t errlen);
static bool check_hostport(const char *v, char *err, size_t errlen);

static const char *const failback_choices[] = {"auto", "manual", NULL};
static const char *const license_choices[] = {"warn", "enforce", NULL};
static const char *const log_choices[] = {
    "debug", "info", "warn", "error", NULL};
static bool check_nats(const char *v, char *err, size_t errlen);
static bool check_version(const char *v, char *err, size_t errlen);
static bool check_file(const char *v, char *err, size_t errlen);
static bool check_nats_secret(const char *v, char *err, size_t errlen);
static bool check_ready(const char *v, char *err, size_t errlen);
static bool check_health(const char *v, char *err, size_t errlen);
static bool check_env(const char *v, char *err, size_t errlen);

static const char *const scope_choices[] = {"server", "post", NULL};
static const char *const restart_choices[] = {
    "always", "on-failure", "no", NULL};

#define CL(f) offsetof(struct config_cluster, f)
#define SV(f) offsetof(struct config_server, f)
#define US(f) offsetof(struct config_user, f)
#define CH(f) offsetof(struct config_channel, f)
#define SC(f) offsetof(struct config_service, f)

const struct config_option config_options[] = {
    {CONFIG_SEC_CLUSTER, "name", CONFIG_TYPE_STRING, 0, 0, NULL, NULL, CL(name),
	config_check_name, false,
	"Name of the cluster; every key it keeps in etcd is under "
	"/understudy/NAME/. Required."},
    {CONFIG_SEC_CLUSTER, "etcd", CONFIG_TYPE_LIST, 0, 0, "local", NULL,
	CL(etcd), check_endpoint, false,
	"The coordination store: `local` (understudy up runs a one-member "
	"etcd on 127.0.0.1:local_etcd_port) or a list of client endpoints "
	"`http://HOST:PORT`, or all `https://HOST:PORT` (see etcd_ca, "
	"etcd_cert, etcd_key), tried in order."},
    {CONFIG_SEC_CLUSTER, "local_etcd_port", CONFIG_TYPE_INT, 1, 65534, "2379",
	NULL, CL(local_etcd_port), NULL, false,
	"Client port of the etcd that understudy up runs where etcd = local; "
	"its peer port is the next one."},
    {CONFIG_SEC_CLUSTER, "lease_ttl", CONFIG_TYPE_INT, 1, 60, "2", NULL,
	CL(lease_ttl), NULL, false,
	"Seconds after its last lease renewal at which a silent server is "
	"declared lost (hardware failover). 1 needs etcd with "
	"--election-timeout of 500 ms or less, as understudy up starts it."},
    {CONFIG_SEC_CLUSTER, "log_level", CONFIG_TYPE_ENUM, 0, 0, "info",
	log_choices, CL(log_level), NULL, true,
	"Lowest level the servers log: `debug`, `info`, `warn` or `error`. "
	"`understudyd --log-level` wins over it on that server."},
    {CONFIG_SEC_CLUSTER, "failback", CONFIG_TYPE_ENUM, 0, 0, "auto",
	failback_choices, CL(failback), NULL, true,
	"`auto`: a returning server takes its post back after failback_delay; "
	"`manual`: only when an operator runs `understudy failback NAME`."},
    {CONFIG_SEC_CLUSTER, "failback_delay", CONFIG_TYPE_INT, 0, 86400, "10",
	NULL, CL(failback_delay), NULL, true,
	"Seconds a returning server must stay healthy before automatic "
	"failback."},
    {CONFIG_SEC_CLUSTER, "registrar", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(registrar), check_hostport, false,
	"Where owners register their route points: `IPV4:PORT` of a SIP "
	"registrar (Kamailio), or `local` (understudy up runs Kamailio on "
	"127.0.0.1:local_registrar_port). Without it nothing is registered."},
    {CONFIG_SEC_CLUSTER, "local_registrar_port", CONFIG_TYPE_INT, 1, 65535,
	"5060", NULL, CL(local_registrar_port), NULL, false,
	"UDP port of the Kamailio that understudy up runs where registrar = "
	"local."},
    {CONFIG_SEC_CLUSTER, "media_timeout", CONFIG_TYPE_INT, 0, 86400, "60", NULL,
	CL(media_timeout), NULL, true,
	"Seconds without RTP from the caller after which a call is ended "
	"(the server sends BYE and frees the port); 0: never."},
    {CONFIG_SEC_CLUSTER, "calls_backlog_max", CONFIG_TYPE_INT, 1, 100000, "500",
	NULL, CL(calls_backlog_max), NULL, true,
	"Calls a server may hold waiting for etcd (their port claim sent or "
	"queued, not answered yet); past it new calls are refused at once, "
	"SIP 503 and HTTP 503 `EBUSY` with Retry-After, each with a BUSY "
	"record, instead of being answered late."},
    {CONFIG_SEC_CLUSTER, "loop_lag_max", CONFIG_TYPE_INT, 0, 60000, "500", NULL,
	CL(loop_lag_max), NULL, true,
	"Milliseconds a server's event loop may run late (a timer due every "
	"100 ms fires that much after its time) before new calls are "
	"refused at once, as past calls_backlog_max; 0: never for lag."},
    {CONFIG_SEC_CLUSTER, "record_retention", CONFIG_TYPE_INT, 60, 31536000,
	"86400", NULL, CL(record_retention), NULL, true,
	"Seconds a call record stays in the records stream on NATS "
	"JetStream, from which every server copies it into its own database "
	"(kept there); a server down for longer, or on a blank disk, misses "
	"the records closed meanwhile by the others."},
    {CONFIG_SEC_CLUSTER, "backup_schedule", CONFIG_TYPE_STRING, 0, 0, NULL,
	NULL, CL(backup_schedule), config_check_schedule, true,
	"When the admin primary takes a backup of the whole cluster (etcd "
	"and every server's database, verified as it is written): `daily "
	"HH:MM` (the server's local time) or `every N` with a unit s, m, h or "
	"d (`every 6h`, counted from the Unix epoch). One archive per "
	"scheduled "
	"time across the cluster; a slot that began before the cluster did "
	"is taken at once. Without it no backup is scheduled."},
    {CONFIG_SEC_CLUSTER, "backup_dir", CONFIG_TYPE_STRING, 0, 0, "backups",
	NULL, CL(backup_dir), NULL, true,
	"Directory of the scheduled archives on the admin primary's "
	"machine; a relative path is under the server's state directory. "
	"Use shared storage for it where the servers are on several "
	"machines."},
    {CONFIG_SEC_CLUSTER, "backup_keep", CONFIG_TYPE_INT, 1, 200, "7", NULL,
	CL(backup_keep), NULL, true,
	"Scheduled archives kept; older ones are removed once a newer one "
	"is written and verified."},
    {CONFIG_SEC_CLUSTER, "licenses", CONFIG_TYPE_INT, 0, 1000000, "0", NULL,
	CL(licenses), NULL, true,
	"Concurrent desk sessions the cluster is licensed for, counted across "
	"every server in etcd; 0: no limit."},
    {CONFIG_SEC_CLUSTER, "license_policy", CONFIG_TYPE_ENUM, 0, 0, "warn",
	license_choices, CL(license_policy), NULL, true,
	"Over the limit, `warn`: the login or reconnect succeeds and the desk "
	"is told (a license_warning event); `enforce`: it is refused with "
	"ENOLICENSE."},
    {CONFIG_SEC_CLUSTER, "session_timeout", CONFIG_TYPE_INT, 10, 604800, "1800",
	NULL, CL(session_timeout), NULL, true,
	"Seconds a desk session may stay idle (no request from its desk) "
	"before it expires; its desk is then asked to log in again."},
    {CONFIG_SEC_CLUSTER, "login_failures", CONFIG_TYPE_INT, 0, 100000, "10",
	NULL, CL(login_failures), NULL, true,
	"Failed desk logins allowed a minute per user name from one client "
	"address (and ten times that per address over any names); past it, "
	"logins are refused with 429 and Retry-After until the minute is "
	"over (no password is checked). 0: no limit."},
    {CONFIG_SEC_CLUSTER, "desk_resumes_waiting", CONFIG_TYPE_INT, 1, 1000000,
	"250", NULL, CL(desk_resumes_waiting), NULL, true,
	"Desk resumes a server holds waiting for their turn (a storm of "
	"desks coming back); past it, a resume is refused at once with 503 "
	"EBUSY and Retry-After: 1, which the desk library honours, instead "
	"of waiting until its request times out. A server resumes a few "
	"thousand desks a second, so 250 waiting is about a tenth of a "
	"second of work: a desk is answered soon or told to come back, not "
	"kept waiting seconds (docs/performance.md, Desks)."},
    {CONFIG_SEC_CLUSTER, "desk_versions", CONFIG_TYPE_LIST, 0, 0, "", NULL,
	CL(desk_versions), check_version, true,
	"Desk versions the servers accept at login, offered at "
	"GET /v1/desk/versions; empty: the version of this release only."},
    {CONFIG_SEC_CLUSTER, "messaging", CONFIG_TYPE_LIST, 0, 0, "local", NULL,
	CL(messaging), check_nats, false,
	"The channels' data plane: `local` (understudy up runs a NATS server "
	"with JetStream on 127.0.0.1:local_nats_port) or a list of "
	"`nats://HOST:PORT` URLs."},
    {CONFIG_SEC_CLUSTER, "local_nats_port", CONFIG_TYPE_INT, 1, 65535, "4222",
	NULL, CL(local_nats_port), NULL, false,
	"Client port of the NATS server that understudy up runs where "
	"messaging = local."},
    {CONFIG_SEC_CLUSTER, "admin_token", CONFIG_TYPE_SECRET, 0, 0, NULL, NULL,
	CL(admin_token), check_token, true,
	"Secret that control requests (stop, start, failback) must carry as "
	"`Authorization: Bearer TOKEN`; 16 to 200 characters, no spaces. "
	"Without it the control API is off."},
    {CONFIG_SEC_CLUSTER, "read_token", CONFIG_TYPE_SECRET, 0, 0, NULL, NULL,
	CL(read_token), check_token, true,
	"Secret for read-only requests (status, records, metrics), carried "
	"as `Authorization: Bearer TOKEN`; it never opens control. 16 to 200 "
	"characters, no spaces, and not the admin_token."},
    {CONFIG_SEC_CLUSTER, "tls_cert", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(tls_cert), check_file, false,
	"PEM certificate (chain) the API serves HTTPS with on every api_port "
	"(and desk_port), "
	"with tls_key; it must name each server's address "
	"(subjectAltName IP:...). Every file option is relative to the config "
	"file, and understudyd refuses to start when it cannot read or parse "
	"one. Without it the API is plain HTTP."},
    {CONFIG_SEC_CLUSTER, "tls_key", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(tls_key), check_file, false, "PEM private key of tls_cert."},
    {CONFIG_SEC_CLUSTER, "tls_ca", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(tls_ca), check_file, false,
	"PEM CA certificate(s) that clients of the API verify the servers "
	"with: the CLI where it reads this config (`--ca` elsewhere); desks "
	"are given theirs (`--ca`). Without it, the system's CAs."},
    {CONFIG_SEC_CLUSTER, "etcd_ca", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(etcd_ca), check_file, false,
	"PEM CA certificate(s) the servers verify etcd's https:// endpoints "
	"with; without it, the system's CAs."},
    {CONFIG_SEC_CLUSTER, "etcd_cert", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(etcd_cert), check_file, false,
	"PEM client certificate the servers present to etcd (etcd "
	"--client-cert-auth), with etcd_key; needs https:// endpoints."},
    {CONFIG_SEC_CLUSTER, "etcd_key", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(etcd_key), check_file, false, "PEM private key of etcd_cert."},
    {CONFIG_SEC_CLUSTER, "messaging_ca", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(messaging_ca), check_file, false,
	"PEM CA certificate(s) of the NATS servers: when set, desks connect "
	"to NATS over TLS and verify each server's certificate (chain and "
	"host) with it. The servers hand it to desks in the session."},
    {CONFIG_SEC_CLUSTER, "messaging_cert", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(messaging_cert), check_file, false,
	"PEM client certificate for NATS servers that verify clients, with "
	"messaging_key; needs messaging_ca. Handed to every desk in its "
	"session (docs/desks.md)."},
    {CONFIG_SEC_CLUSTER, "messaging_key", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(messaging_key), check_file, false,
	"PEM private key of messaging_cert."},
    {CONFIG_SEC_CLUSTER, "messaging_user", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(messaging_user), config_check_name, false,
	"User name that desks give NATS (its authorization users), with "
	"messaging_password."},
    {CONFIG_SEC_CLUSTER, "messaging_password", CONFIG_TYPE_SECRET, 0, 0, NULL,
	NULL, CL(messaging_password), check_nats_secret, false,
	"Password of messaging_user; handed to desks in their session. 16 to "
	"200 characters, no spaces, quotes or backslashes."},
    {CONFIG_SEC_CLUSTER, "messaging_token", CONFIG_TYPE_SECRET, 0, 0, NULL,
	NULL, CL(messaging_token), check_nats_secret, false,
	"Token that desks give NATS (authorization { token }), instead of a "
	"user and password; handed to desks in their session. 16 to 200 "
	"characters, no spaces, quotes or backslashes."},
    {CONFIG_SEC_CLUSTER, "check_schedule", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	CL(check_schedule), config_check_schedule, true,
	"When the admin primary runs the maintenance check of every server "
	"by itself (`understudy check`) and keeps the result "
	"(`understudy check --last`, `/metrics`): `daily HH:MM` (the server's "
	"local time) or "
	"`every N` with a unit s, m, h or d (10 s to 31 days, counted from the "
	"Unix epoch). Unset: only when asked."},
    {CONFIG_SEC_CLUSTER, "check_disk_min_free", CONFIG_TYPE_INT, 0, 10485760,
	"1024", NULL, CL(check_disk_min_free), NULL, true,
	"MiB of free space each server's state directory must have for the "
	"daily check's disk row to pass (its database, backup parts and "
	"scheduled archives grow there)."},
    {CONFIG_SEC_CLUSTER, "health_requires", CONFIG_TYPE_LIST, 0, 0, "", NULL,
	CL(health_requires), config_check_name, false,
	"Services without which a server's /health answers 503, so that a "
	"load balancer takes it out: each one that should run on that "
	"server now (a server-scope service of it, a post service of a post "
	"it owns) must be ready."},

    {CONFIG_SEC_SERVER, "address", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SV(address), check_address, false,
	"IPv4 address the server listens on (SIP, RTP and the HTTP API) "
	"and is reached at; not a host name, not IPv6, not 0.0.0.0. "
	"Required."},
    {CONFIG_SEC_SERVER, "api_port", CONFIG_TYPE_INT, 1, 65535, "8080", NULL,
	SV(api_port), NULL, false, "TCP port of the HTTP API and /health."},
    {CONFIG_SEC_SERVER, "desk_port", CONFIG_TYPE_INT, 0, 65535, "0", NULL,
	SV(desk_port), NULL, false,
	"TCP port of a listener for desks only: the desk API (/v1/desk/...) "
	"and /health, with 8 KiB of memory a connection instead of 32 KiB "
	"(a desk holds its connection open for its long poll; a browser's "
	"request with many cookies needs more, so the console and the rest "
	"of the API stay on api_port). Point desks at it (understudy-desk "
	"--server http://ADDRESS:DESK_PORT, https:// with tls_cert); the "
	"servers a desk session lists for failover name it too. The API's "
	"port then holds at most 2,000 connections: move the desks over "
	"before setting it on a server with more. A desk_port that cannot "
	"be bound stops the server, as api_port does. 0: no such listener; "
	"desks use api_port."},
    {CONFIG_SEC_SERVER, "sip_port", CONFIG_TYPE_INT, 1, 65535, "5070", NULL,
	SV(sip_port), NULL, false, "UDP port for SIP."},
    {CONFIG_SEC_SERVER, "max_media_ports", CONFIG_TYPE_INT, 0, 10000, NULL,
	NULL, SV(max_media_ports), NULL, true,
	"Capacity: the most media ports the server may run at once, its own "
	"and those of the posts it covers. Defaults to media_ports (no room "
	"to cover anyone)."},
    {CONFIG_SEC_SERVER, "route_point", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SV(route_point), check_extension, true,
	"The address callers dial for this post (`6000`). Required unless "
	"spare = yes."},
    {CONFIG_SEC_SERVER, "aa_route_point", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SV(aa_route_point), check_extension, true,
	"A second route point of the post, for the auto attendant."},
    {CONFIG_SEC_SERVER, "media_port_base", CONFIG_TYPE_INT, 1, 999999999, NULL,
	NULL, SV(media_port_base), NULL, false,
	"Number of the post's first media port; they run from here up. "
	"Required when media_ports > 0."},
    {CONFIG_SEC_SERVER, "media_ports", CONFIG_TYPE_INT, 0, 10000, "0", NULL,
	SV(media_ports), NULL, true,
	"Media ports of the post: one per simultaneous call. A new version "
	"that grows it gives the new ports at once; one that shrinks it "
	"lets calls on the cut ports end there, and no new call takes them."},
    {CONFIG_SEC_SERVER, "rtp_port_base", CONFIG_TYPE_INT, 1024, 65535, NULL,
	NULL, SV(rtp_port_base), NULL, false,
	"First UDP port for RTP; one per media port. Required when "
	"media_ports > 0."},
    {CONFIG_SEC_SERVER, "interceptor_ports", CONFIG_TYPE_LIST, 0, 0, "", NULL,
	SV(interceptor_ports), check_pattern, true,
	"Extension patterns whose calls the post intercepts: digits, X for any "
	"digit, dots between groups (`2007`, `2XXX`, `3.2XXX`)."},
    {CONFIG_SEC_SERVER, "failover", CONFIG_TYPE_LIST, 0, 0, "", NULL,
	SV(failover), NULL, true,
	"Server names that may cover this post, in order of preference. "
	"When none is up with room, a spare covers."},
    {CONFIG_SEC_SERVER, "prompt", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SV(prompt), NULL, false,
	"Audio the post's media ports play to callers instead of echoing "
	"them: a WAV file of mu-law, mono, 8000 Hz (`sox IN -r 8000 -c 1 "
	"-e mu-law OUT.wav`), or raw PCMU bytes under any other name; "
	"relative to the config file. understudyd refuses to start when it "
	"cannot read it."},
    {CONFIG_SEC_SERVER, "spare", CONFIG_TYPE_BOOL, 0, 0, "no", NULL, SV(spare),
	NULL, false,
	"`yes`: the server has no post of its own and only covers others."},

    {CONFIG_SEC_USER, "password", CONFIG_TYPE_SECRET, 0, 0, NULL, NULL,
	US(password), check_hash, true,
	"argon2id hash of the user's password, as `understudy passwd` prints "
	"it; `understudy user add|passwd` set it in the cluster's "
	"configuration without editing a file. Required."},
    {CONFIG_SEC_USER, "groups", CONFIG_TYPE_LIST, 0, 0, "", NULL, US(groups),
	config_check_name, true, "Groups the user belongs to."},

    {CONFIG_SEC_CHANNEL, "allow", CONFIG_TYPE_LIST, 0, 0, "", NULL, CH(allow),
	check_allow, true,
	"Users (`alice`) and groups (`@dispatch`) who may join the channel."},

    {CONFIG_SEC_SERVICE, "command", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SC(command), NULL, false,
	"What runs, given to `/bin/sh -c` (use `exec` so that the service is "
	"the shell's process). It gets UNDERSTUDY_SERVICE, UNDERSTUDY_SERVER, "
	"NOTIFY_SOCKET and, for a post service, UNDERSTUDY_POST and "
	"UNDERSTUDY_EPOCH in its environment. Required."},
    {CONFIG_SEC_SERVICE, "scope", CONFIG_TYPE_ENUM, 0, 0, "server",
	scope_choices, SC(scope), NULL, false,
	"`server`: runs on the servers listed in `servers` (all when empty) "
	"and keeps running across worker crashes; `post`: runs only on the "
	"server that owns `post` now, fenced like the post "
	"(docs/protocol.md)."},
    {CONFIG_SEC_SERVICE, "servers", CONFIG_TYPE_LIST, 0, 0, "", NULL,
	SC(servers), config_check_name, false,
	"scope = server: the servers it runs on; empty: every server."},
    {CONFIG_SEC_SERVICE, "post", CONFIG_TYPE_STRING, 0, 0, NULL, NULL, SC(post),
	config_check_name, false,
	"scope = post: the post (its home server's name) it follows."},
    {CONFIG_SEC_SERVICE, "after", CONFIG_TYPE_LIST, 0, 0, "", NULL, SC(after),
	config_check_name, false,
	"Services that must be ready (on this server) before this one "
	"starts."},
    {CONFIG_SEC_SERVICE, "ready", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SC(ready), check_ready, false,
	"How readiness is known: `http://HOST:PORT/PATH` answering 2xx, "
	"`tcp:HOST:PORT` accepting, `exec:COMMAND` exiting 0 (tried every "
	"200 ms), or `notify` (the service sends READY=1 to NOTIFY_SOCKET, "
	"as under systemd). Without it, ready once started."},
    {CONFIG_SEC_SERVICE, "health", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SC(health), check_health, false,
	"A probe of the same kinds but notify, run every health_interval "
	"once ready; health_failures failures in a row count as a crash."},
    {CONFIG_SEC_SERVICE, "health_interval", CONFIG_TYPE_INT, 100, 3600000,
	"5000", NULL, SC(health_interval), NULL, false,
	"Milliseconds between health probes (each probe may take as long)."},
    {CONFIG_SEC_SERVICE, "health_failures", CONFIG_TYPE_INT, 1, 1000, "3", NULL,
	SC(health_failures), NULL, false,
	"Failed health probes in a row that count as a crash."},
    {CONFIG_SEC_SERVICE, "restart", CONFIG_TYPE_ENUM, 0, 0, "always",
	restart_choices, SC(restart), NULL, false,
	"After the service exits: `always` start it again, `on-failure` only "
	"after a non-zero exit, a signal or failed health, `no` never."},
    {CONFIG_SEC_SERVICE, "restart_delay", CONFIG_TYPE_INT, 0, 3600000, "500",
	NULL, SC(restart_delay), NULL, false,
	"Milliseconds before the first restart; each crash within "
	"crash_window doubles it, up to restart_delay_max."},
    {CONFIG_SEC_SERVICE, "restart_delay_max", CONFIG_TYPE_INT, 0, 3600000,
	"30000", NULL, SC(restart_delay_max), NULL, false,
	"Cap of the restart backoff, in milliseconds."},
    {CONFIG_SEC_SERVICE, "crash_limit", CONFIG_TYPE_INT, 1, 1000, "5", NULL,
	SC(crash_limit), NULL, false,
	"Crashes within crash_window after which the service is marked "
	"`failed` (in status, metrics, the log and /health) and not started "
	"again until `understudy service reset NAME`."},
    {CONFIG_SEC_SERVICE, "crash_window", CONFIG_TYPE_INT, 1, 86400, "60", NULL,
	SC(crash_window), NULL, false,
	"Seconds over which crashes are counted against crash_limit."},
    {CONFIG_SEC_SERVICE, "stop_timeout", CONFIG_TYPE_INT, 0, 600000, "10000",
	NULL, SC(stop_timeout), NULL, false,
	"Milliseconds from SIGTERM to SIGKILL of the service's process group. "
	"A post service losing its fence gets at most lease_ttl/4."},
    {CONFIG_SEC_SERVICE, "env", CONFIG_TYPE_LIST, 0, 0, "", NULL, SC(env),
	check_env, false,
	"Extra environment, `KEY=VALUE` items (no spaces or commas in them)."},
    {CONFIG_SEC_SERVICE, "user", CONFIG_TYPE_STRING, 0, 0, NULL, NULL, SC(user),
	config_check_name, false,
	"User (and its group) the service runs as; understudyd must run as "
	"root to use it."},
    {CONFIG_SEC_SERVICE, "working_dir", CONFIG_TYPE_STRING, 0, 0, NULL, NULL,
	SC(working_dir), NULL, false,
	"Directory the service starts in (relative to the config file); "
	"default: the state directory."},
};

const size_t config_n_options = ARRAY_SIZE(config_options);

_Static_assert(ARRAY_SIZE(config_options) <= CONFIG_MAX_OPTIONS,
    "raise CONFIG_MAX_OPTIONS");

const char *const config_section_names[CONFIG_SEC_COUNT] = {
    "cluster", "server", "user", "channel", "service"};

/* ---- syntax checks of single values ---- */

bool
config_check_name(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);

	if (n == 0 || n > CONFIG_NAME_MAX) {
		snprintf(err, errlen, "'%s' is not a name (1 to %d characters)",
		    v, CONFIG_NAME_MAX);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!isalnum(c) && c != '_' && c != '-') {
			snprintf(err, errlen,
			    "'%s' is not a name (letters, digits, '_' and '-' "
			    "only)",
			    v);
			return false;
		}
	}
	return true;
}

/*
 * A server's address is bound as it is written, by SIP and RTP on IPv4
 * sockets and by the HTTP API, and it is what the registrar, the peers
 * and the callers' media reach the server at: an IPv4 literal, never a
 * name (nothing resolves it) nor the wildcard.
 */
static bool
check_address(const char *v, char *err, size_t errlen)
{
	struct in_addr a;
	unsigned char a6[16];

	if (inet_pton(AF_INET, v, &a) == 1) {
		if (a.s_addr != htonl(INADDR_ANY))
			return true;
		snprintf(err, errlen,
		    "'%s' is the wildcard; give the IPv4 address that peers, "
		    "the registrar and callers reach this server at",
		    v);
	} else if (inet_pton(AF_INET6, v, a6) == 1)
		snprintf(err, errlen,
		    "'%s' is an IPv6 address; the server binds SIP and RTP on "
		    "IPv4 only: give an IPv4 address (a.b.c.d)",
		    v);
	else if (str_is_hostname(v))
		snprintf(err, errlen,
		    "'%s' is a host name; the server binds SIP and RTP on IPv4 "
		    "only and resolves no names: give an IPv4 address "
		    "(a.b.c.d)",
		    v);
	else
		snprintf(err, errlen,
		    "'%s' is not an IPv4 address (a.b.c.d); the server binds "
		    "SIP and RTP on IPv4 only",
		    v);
	return false;
}

static bool
check_extension(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);

	if (n == 0 || n > 32)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!isalnum(c) && !strchr("+*#._-", c))
			goto bad;
	}
	return true;
bad:
	snprintf(err, errlen,
	    "'%s' is not an extension (1 to 32 of digits, letters, + * # . _ "
	    "-)",
	    v);
	return false;
}

static bool
check_pattern(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v), digits = 0;

	if (n == 0 || n > 32) {
		snprintf(
		    err, errlen, "pattern '%s' must be 1 to 32 characters", v);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (isdigit((unsigned char)v[i]) || v[i] == 'X') {
			digits++;
			continue;
		}
		if (v[i] == '.' && i > 0 && i + 1 < n && v[i + 1] != '.')
			continue;
		if (v[i] == 'x')
			snprintf(err, errlen,
			    "pattern '%s': write the wildcard as upper-case X",
			    v);
		else if (v[i] == '.')
			snprintf(err, errlen,
			    "pattern '%s': a dot only goes between digits", v);
		else
			snprintf(err, errlen,
			    "pattern '%s': '%c' is not allowed (digits, X for "
			    "any "
			    "digit, dots between groups)",
			    v, v[i]);
		return false;
	}
	return digits > 0;
}

static bool
check_endpoint(const char *v, char *err, size_t errlen)
{
	const char *hp, *colon;
	char host[256];
	long port;

	if (strcmp(v, "local") == 0)
		return true;
	if (strncmp(v, "http://", 7) == 0)
		hp = v + 7;
	else if (strncmp(v, "https://", 8) == 0)
		hp = v + 8;
	else
		goto bad;
	if ((colon = strrchr(hp, ':')) == NULL || colon == hp ||
	    (size_t)(colon - hp) >= sizeof(host))
		goto bad;
	memcpy(host, hp, (size_t)(colon - hp));
	host[colon - hp] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if (!str_is_ip(host) && !str_is_hostname(host))
		goto bad;
	if (str_to_long(colon + 1, 1, 65535, &port) != 0)
		goto bad;
	return true;
bad:
	snprintf(err, errlen,
	    "'%s' is not an etcd endpoint (http://HOST:PORT, "
	    "https://HOST:PORT, or local)",
	    v);
	return false;
}

static bool
check_nats(const char *v, char *err, size_t errlen)
{
	const char *colon;
	char host[256];
	long port;

	if (strcmp(v, "local") == 0)
		return true;
	if (strncmp(v, "nats://", 7) != 0 ||
	    (colon = strrchr(v + 7, ':')) == NULL || colon == v + 7 ||
	    (size_t)(colon - v - 7) >= sizeof(host) ||
	    str_to_long(colon + 1, 1, 65535, &port) != 0)
		goto bad;
	memcpy(host, v + 7, (size_t)(colon - v - 7));
	host[colon - v - 7] = '\0';
	if (str_is_ip(host) || str_is_hostname(host))
		return true;
bad:
	snprintf(err, errlen,
	    "'%s' is not a NATS URL (nats://HOST:PORT, or local)", v);
	return false;
}

static bool
check_version(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);

	if (n > 0 && n < 32 &&
	    strspn(v, "0123456789.-+abcdefghijklmnopqrstuvwxyz") == n)
		return true;
	snprintf(err, errlen,
	    "'%s' is not a version (digits, dots, lower-case letters, - and "
	    "+; under 32 characters)",
	    v);
	return false;
}

static bool
check_hash(const char *v, char *err, size_t errlen)
{
	if (strncmp(v, "$argon2id$", 10) == 0 && strlen(v) < 256)
		return true;
	snprintf(err, errlen,
	    "password must be an argon2id hash ($argon2id$...); make one with "
	    "'understudy passwd'");
	return false;
}

static bool
check_hostport(const char *v, char *err, size_t errlen)
{
	const char *colon = strrchr(v, ':');
	char host[256];
	long port;

	struct in_addr a;

	if (strcmp(v, "local") == 0)
		return true;
	if (colon && colon != v && (size_t)(colon - v) < sizeof(host)) {
		memcpy(host, v, (size_t)(colon - v));
		host[colon - v] = '\0';
		/* REGISTERs leave from the IPv4 SIP socket */
		if (inet_pton(AF_INET, host, &a) == 1 &&
		    str_to_long(colon + 1, 1, 65535, &port) == 0)
			return true;
	}
	snprintf(err, errlen,
	    "'%s' is not IPV4:PORT (or local); the server sends SIP from "
	    "IPv4 only",
	    v);
	return false;
}

static bool
check_token(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);

	if (n < 16 || n > 200) {
		snprintf(err, errlen,
		    "must be 16 to 200 characters (it has %zu)", n);
		return false;
	}
	for (size_t i = 0; i < n; i++)
		if (!isgraph((unsigned char)v[i])) {
			snprintf(
			    err, errlen, "no spaces or control characters");
			return false;
		}
	return true;
}

/* NATS puts it in its CONNECT line as a JSON string, unescaped */
static bool
check_nats_secret(const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);

	if (n < 16 || n > 200) {
		snprintf(err, errlen,
		    "must be 16 to 200 characters (it has %zu)", n);
		return false;
	}
	for (size_t i = 0; i < n; i++)
		if (!isgraph((unsigned char)v[i]) || v[i] == '"' ||
		    v[i] == '\\') {
			snprintf(err, errlen,
			    "no spaces, quotes, backslashes or control "
			    "characters");
			return false;
		}
	return true;
}

/* A file is read where the server runs: here only its name is checked. */
static bool
check_file(const char *v, char *err, size_t errlen)
{
	if (v[strlen(v) - 1] != '/')
		return true;
	snprintf(err, errlen, "'%s' is not a file name", v);
	return false;
}

static bool
check_env(const char *v, char *err, size_t errlen)
{
	const char *eq = strchr(v, '=');

	if (eq && eq != v) {
		for (const char *c = v; c < eq; c++)
			if (!isalnum((unsigned char)*c) && *c != '_')
				goto bad;
		return true;
	}
bad:
	snprintf(err, errlen, "'%s' is not KEY=VALUE", v);
	return false;
}

static bool
probe_hostport(const char *v, const char *end)
{
	const char *colon = NULL;
	char host[256];
	long port;
	char num[8];

	for (const char *c = v; c < end; c++)
		if (*c == ':')
			colon = c;
	if (colon == NULL || colon == v ||
	    (size_t)(colon - v) >= sizeof(host) ||
	    (size_t)(end - colon - 1) >= sizeof(num) || end == colon + 1)
		return false;
	memcpy(host, v, (size_t)(colon - v));
	host[colon - v] = '\0';
	memcpy(num, colon + 1, (size_t)(end - colon - 1));
	num[end - colon - 1] = '\0';
	return (str_is_ip(host) || str_is_hostname(host)) &&
	    str_to_long(num, 1, 65535, &port) == 0;
}

bool
config_check_probe(const char *v, bool allow_notify, char *err, size_t errlen)
{
	if (strcmp(v, "notify") == 0) {
		if (allow_notify)
			return true;
		snprintf(err, errlen,
		    "notify tells readiness only; a health probe is http://, "
		    "tcp: or exec:");
		return false;
	}
	if (strncmp(v, "exec:", 5) == 0 && v[5])
		return true;
	if (strncmp(v, "tcp:", 4) == 0 && probe_hostport(v + 4, v + strlen(v)))
		return true;
	if (strncmp(v, "http://", 7) == 0) {
		const char *slash = strchr(v + 7, '/');

		if (probe_hostport(v + 7, slash ? slash : v + strlen(v)))
			return true;
	}
	snprintf(err, errlen,
	    "'%s' is not a probe (http://HOST:PORT/PATH, tcp:HOST:PORT, "
	    "exec:COMMAND%s)",
	    v, allow_notify ? " or notify" : "");
	return false;
}

static bool
check_ready(const char *v, char *err, size_t errlen)
{
	return config_check_probe(v, true, err, errlen);
}

static bool
check_health(const char *v, char *err, size_t errlen)
{
	return config_check_probe(v, false, err, errlen);
}

static bool
check_allow(const char *v, char *err, size_t errlen)
{
	return config_check_name(v[0] == '@' ? v + 1 : v, err, errlen);
}

const struct config_option *
config_option_find(enum config_section sec, const char *name, size_t *idx)
{
	for (size_t i = 0; i < config_n_options; i++)
		if (config_options[i].section == sec &&
		    strcmp(config_options[i].name, name) == 0) {
			*idx = i;
			return &config_options[i];
		}
	return NULL;
}

void
config_doc(FILE *f)
{
	static const char *const types[] = {
	    "integer", "text", "yes/no", "choice", "list", "secret"};

	fprintf(f,
	    "# Configuration reference\n\n"
	    "Generated from the option table in `src/config/options.c` "
	    "by `understudy config doc`; do not edit by hand.\n\n"
	    "One INI file describes the whole cluster. Lines are at most "
	    "198 characters; a list option may be given on several "
	    "lines, each adding to the list. Comments start with `;` or "
	    "`#`. `understudy config check FILE` reports every problem "
	    "as `FILE:LINE: error|warning: message`. A secret is text "
	    "that is never shown: `config check --print` writes `(set)` "
	    "for it.\n");
	for (int sec = 0; sec < CONFIG_SEC_COUNT; sec++) {
		fprintf(f, "\n## [%s%s]\n\n", config_section_names[sec],
		    sec == CONFIG_SEC_CLUSTER ? "" : " NAME");
		fprintf(f,
		    "| option | type | default | range | changes at run "
		    "time | meaning |\n|---|---|---|---|---|---|\n");
		for (size_t i = 0; i < config_n_options; i++) {
			const struct config_option *o = &config_options[i];
			char range[64] = "";

			if ((int)o->section != sec)
				continue;
			if (o->type == CONFIG_TYPE_INT)
				snprintf(range, sizeof(range), "%ld..%ld",
				    o->min, o->max);
			else if (o->type == CONFIG_TYPE_ENUM) {
				for (int c = 0; o->choices[c]; c++) {
					if (c)
						strncat(range, ", ",
						    sizeof(range) -
							strlen(range) - 1);
					strncat(range, o->choices[c],
					    sizeof(range) - strlen(range) - 1);
				}
			}
			fprintf(f, "| `%s` | %s | %s | %s | %s | %s |\n",
			    o->name, types[o->type],
			    o->def ? (o->def[0] ? o->def : "(empty)") : "-",
			    range, o->runtime ? "yes" : "no", o->doc);
		}
	}
}

bool
config_option_runtime(enum config_section sec, const char *name)
{
	size_t idx;
	const struct config_option *o = config_option_find(sec, name, &idx);

	return o && o->runtime;
}
