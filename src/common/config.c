/*
 * The configuration: one INI file read with libinih, every option defined
 * once in config_options[] below. The loader, the checker, the normalised
 * printer and the option reference (docs/config.md) all read that table.
 *
 * Loading never stops at the first problem: every problem is recorded
 * with its line, then the whole cluster is checked (names, ranges, port
 * overlaps, failover lists, capacity).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ini.h>

#include <sodium.h>

#include "common.h"

/*
 * CT_SECRET is text that is never shown: config_print writes "(set)" in
 * its place, and its check never quotes the value in a problem.
 */
enum config_type { CT_INT, CT_STRING, CT_BOOL, CT_ENUM, CT_LIST, CT_SECRET };

/* syntax checks beyond the type; they write a reason into err */
typedef bool (*config_check_fn)(const char *v, char *err, size_t errlen);

struct config_option {
	enum config_section section;
	const char *name;
	enum config_type type;
	long min, max;
	const char *def; /* default as written in the file; NULL: none */
	const char *const *choices;
	size_t offset;
	config_check_fn check;
	bool runtime; /* may change while the cluster runs */
	const char *doc;
};

static bool check_name(const char *v, char *err, size_t errlen);
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
static bool check_nats(const char *v, char *err, size_t errlen);
static bool check_version(const char *v, char *err, size_t errlen);
static bool check_file(const char *v, char *err, size_t errlen);
static bool check_nats_secret(const char *v, char *err, size_t errlen);

#define CL(f) offsetof(struct config_cluster, f)
#define SV(f) offsetof(struct config_server, f)
#define US(f) offsetof(struct config_user, f)
#define CH(f) offsetof(struct config_channel, f)

static const struct config_option config_options[] = {
    {CONFIG_SEC_CLUSTER, "name", CT_STRING, 0, 0, NULL, NULL, CL(name),
	check_name, false,
	"Name of the cluster; every key it keeps in etcd is under "
	"/understudy/NAME/. Required."},
    {CONFIG_SEC_CLUSTER, "etcd", CT_LIST, 0, 0, "local", NULL, CL(etcd),
	check_endpoint, false,
	"The coordination store: `local` (understudy up runs a one-member "
	"etcd on 127.0.0.1:local_etcd_port) or a list of client endpoints "
	"`http://HOST:PORT`, or all `https://HOST:PORT` (see etcd_ca, "
	"etcd_cert, etcd_key), tried in order."},
    {CONFIG_SEC_CLUSTER, "local_etcd_port", CT_INT, 1, 65534, "2379", NULL,
	CL(local_etcd_port), NULL, false,
	"Client port of the etcd that understudy up runs where etcd = local; "
	"its peer port is the next one."},
    {CONFIG_SEC_CLUSTER, "lease_ttl", CT_INT, 1, 60, "2", NULL, CL(lease_ttl),
	NULL, false,
	"Seconds after its last lease renewal at which a silent server is "
	"declared lost (hardware failover). 1 needs etcd with "
	"--election-timeout of 500 ms or less, as understudy up starts it."},
    {CONFIG_SEC_CLUSTER, "failback", CT_ENUM, 0, 0, "auto", failback_choices,
	CL(failback), NULL, true,
	"`auto`: a returning server takes its post back after failback_delay; "
	"`manual`: only when an operator runs `understudy failback NAME`."},
    {CONFIG_SEC_CLUSTER, "failback_delay", CT_INT, 0, 86400, "10", NULL,
	CL(failback_delay), NULL, true,
	"Seconds a returning server must stay healthy before automatic "
	"failback."},
    {CONFIG_SEC_CLUSTER, "registrar", CT_STRING, 0, 0, NULL, NULL,
	CL(registrar), check_hostport, false,
	"Where owners register their route points: `IPV4:PORT` of a SIP "
	"registrar (Kamailio), or `local` (understudy up runs Kamailio on "
	"127.0.0.1:local_registrar_port). Without it nothing is registered."},
    {CONFIG_SEC_CLUSTER, "local_registrar_port", CT_INT, 1, 65535, "5060", NULL,
	CL(local_registrar_port), NULL, false,
	"UDP port of the Kamailio that understudy up runs where registrar = "
	"local."},
    {CONFIG_SEC_CLUSTER, "media_timeout", CT_INT, 0, 86400, "60", NULL,
	CL(media_timeout), NULL, true,
	"Seconds without RTP from the caller after which a call is ended "
	"(the server sends BYE and frees the port); 0: never."},
    {CONFIG_SEC_CLUSTER, "record_retention", CT_INT, 60, 31536000, "86400",
	NULL, CL(record_retention), NULL, true,
	"Seconds a call record stays in the records stream on NATS "
	"JetStream, from which every server copies it into its own database "
	"(kept there); a server down for longer, or on a blank disk, misses "
	"the records closed meanwhile by the others."},
    {CONFIG_SEC_CLUSTER, "licenses", CT_INT, 0, 1000000, "0", NULL,
	CL(licenses), NULL, true,
	"Concurrent desk sessions the cluster is licensed for, counted across "
	"every server in etcd; 0: no limit."},
    {CONFIG_SEC_CLUSTER, "license_policy", CT_ENUM, 0, 0, "warn",
	license_choices, CL(license_policy), NULL, true,
	"Over the limit, `warn`: the login or reconnect succeeds and the desk "
	"is told (a license_warning event); `enforce`: it is refused with "
	"ENOLICENSE."},
    {CONFIG_SEC_CLUSTER, "session_timeout", CT_INT, 10, 604800, "1800", NULL,
	CL(session_timeout), NULL, true,
	"Seconds a desk session may stay idle (no request from its desk) "
	"before it expires; its desk is then asked to log in again."},
    {CONFIG_SEC_CLUSTER, "login_failures", CT_INT, 0, 100000, "10", NULL,
	CL(login_failures), NULL, true,
	"Failed desk logins allowed a minute per user name from one client "
	"address (and ten times that per address over any names); past it, "
	"logins are refused with 429 and Retry-After until the minute is "
	"over (no password is checked). 0: no limit."},
    {CONFIG_SEC_CLUSTER, "desk_versions", CT_LIST, 0, 0, "", NULL,
	CL(desk_versions), check_version, true,
	"Desk versions the servers accept at login, offered at "
	"GET /v1/desk/versions; empty: the version of this release only."},
    {CONFIG_SEC_CLUSTER, "messaging", CT_LIST, 0, 0, "local", NULL,
	CL(messaging), check_nats, false,
	"The channels' data plane: `local` (understudy up runs a NATS server "
	"with JetStream on 127.0.0.1:local_nats_port) or a list of "
	"`nats://HOST:PORT` URLs."},
    {CONFIG_SEC_CLUSTER, "local_nats_port", CT_INT, 1, 65535, "4222", NULL,
	CL(local_nats_port), NULL, false,
	"Client port of the NATS server that understudy up runs where "
	"messaging = local."},
    {CONFIG_SEC_CLUSTER, "admin_token", CT_SECRET, 0, 0, NULL, NULL,
	CL(admin_token), check_token, true,
	"Secret that control requests (stop, start, failback) must carry as "
	"`Authorization: Bearer TOKEN`; 16 to 200 characters, no spaces. "
	"Without it the control API is off."},
    {CONFIG_SEC_CLUSTER, "read_token", CT_SECRET, 0, 0, NULL, NULL,
	CL(read_token), check_token, true,
	"Secret for read-only requests (status, records, metrics), carried "
	"as `Authorization: Bearer TOKEN`; it never opens control. 16 to 200 "
	"characters, no spaces, and not the admin_token."},
    {CONFIG_SEC_CLUSTER, "tls_cert", CT_STRING, 0, 0, NULL, NULL, CL(tls_cert),
	check_file, false,
	"PEM certificate (chain) the API serves HTTPS with on every api_port, "
	"with tls_key; it must name each server's address "
	"(subjectAltName IP:...). Every file option is relative to the config "
	"file, and understudyd refuses to start when it cannot read or parse "
	"one. Without it the API is plain HTTP."},
    {CONFIG_SEC_CLUSTER, "tls_key", CT_STRING, 0, 0, NULL, NULL, CL(tls_key),
	check_file, false, "PEM private key of tls_cert."},
    {CONFIG_SEC_CLUSTER, "tls_ca", CT_STRING, 0, 0, NULL, NULL, CL(tls_ca),
	check_file, false,
	"PEM CA certificate(s) that clients of the API verify the servers "
	"with: the CLI where it reads this config (`--ca` elsewhere); desks "
	"are given theirs (`--ca`). Without it, the system's CAs."},
    {CONFIG_SEC_CLUSTER, "etcd_ca", CT_STRING, 0, 0, NULL, NULL, CL(etcd_ca),
	check_file, false,
	"PEM CA certificate(s) the servers verify etcd's https:// endpoints "
	"with; without it, the system's CAs."},
    {CONFIG_SEC_CLUSTER, "etcd_cert", CT_STRING, 0, 0, NULL, NULL,
	CL(etcd_cert), check_file, false,
	"PEM client certificate the servers present to etcd (etcd "
	"--client-cert-auth), with etcd_key; needs https:// endpoints."},
    {CONFIG_SEC_CLUSTER, "etcd_key", CT_STRING, 0, 0, NULL, NULL, CL(etcd_key),
	check_file, false, "PEM private key of etcd_cert."},
    {CONFIG_SEC_CLUSTER, "messaging_ca", CT_STRING, 0, 0, NULL, NULL,
	CL(messaging_ca), check_file, false,
	"PEM CA certificate(s) of the NATS servers: when set, desks connect "
	"to NATS over TLS and verify each server's certificate (chain and "
	"host) with it. The servers hand it to desks in the session."},
    {CONFIG_SEC_CLUSTER, "messaging_cert", CT_STRING, 0, 0, NULL, NULL,
	CL(messaging_cert), check_file, false,
	"PEM client certificate for NATS servers that verify clients, with "
	"messaging_key; needs messaging_ca. Handed to every desk in its "
	"session (docs/desks.md)."},
    {CONFIG_SEC_CLUSTER, "messaging_key", CT_STRING, 0, 0, NULL, NULL,
	CL(messaging_key), check_file, false,
	"PEM private key of messaging_cert."},
    {CONFIG_SEC_CLUSTER, "messaging_user", CT_STRING, 0, 0, NULL, NULL,
	CL(messaging_user), check_name, false,
	"User name that desks give NATS (its authorization users), with "
	"messaging_password."},
    {CONFIG_SEC_CLUSTER, "messaging_password", CT_SECRET, 0, 0, NULL, NULL,
	CL(messaging_password), check_nats_secret, false,
	"Password of messaging_user; handed to desks in their session. 16 to "
	"200 characters, no spaces, quotes or backslashes."},
    {CONFIG_SEC_CLUSTER, "messaging_token", CT_SECRET, 0, 0, NULL, NULL,
	CL(messaging_token), check_nats_secret, false,
	"Token that desks give NATS (authorization { token }), instead of a "
	"user and password; handed to desks in their session. 16 to 200 "
	"characters, no spaces, quotes or backslashes."},

    {CONFIG_SEC_SERVER, "address", CT_STRING, 0, 0, NULL, NULL, SV(address),
	check_address, false,
	"IPv4 address the server listens on (SIP, RTP and the HTTP API) "
	"and is reached at; not a host name, not IPv6, not 0.0.0.0. "
	"Required."},
    {CONFIG_SEC_SERVER, "api_port", CT_INT, 1, 65535, "8080", NULL,
	SV(api_port), NULL, false, "TCP port of the HTTP API and /health."},
    {CONFIG_SEC_SERVER, "sip_port", CT_INT, 1, 65535, "5070", NULL,
	SV(sip_port), NULL, false, "UDP port for SIP."},
    {CONFIG_SEC_SERVER, "max_media_ports", CT_INT, 0, 10000, NULL, NULL,
	SV(max_media_ports), NULL, true,
	"Capacity: the most media ports the server may run at once, its own "
	"and those of the posts it covers. Defaults to media_ports (no room "
	"to cover anyone)."},
    {CONFIG_SEC_SERVER, "route_point", CT_STRING, 0, 0, NULL, NULL,
	SV(route_point), check_extension, false,
	"The address callers dial for this post (`6000`). Required unless "
	"spare = yes."},
    {CONFIG_SEC_SERVER, "aa_route_point", CT_STRING, 0, 0, NULL, NULL,
	SV(aa_route_point), check_extension, false,
	"A second route point of the post, for the auto attendant."},
    {CONFIG_SEC_SERVER, "media_port_base", CT_INT, 1, 999999999, NULL, NULL,
	SV(media_port_base), NULL, false,
	"Number of the post's first media port; they run from here up. "
	"Required when media_ports > 0."},
    {CONFIG_SEC_SERVER, "media_ports", CT_INT, 0, 10000, "0", NULL,
	SV(media_ports), NULL, false,
	"Media ports of the post: one per simultaneous call."},
    {CONFIG_SEC_SERVER, "rtp_port_base", CT_INT, 1024, 65535, NULL, NULL,
	SV(rtp_port_base), NULL, false,
	"First UDP port for RTP; one per media port. Required when "
	"media_ports > 0."},
    {CONFIG_SEC_SERVER, "interceptor_ports", CT_LIST, 0, 0, "", NULL,
	SV(interceptor_ports), check_pattern, false,
	"Extension patterns whose calls the post intercepts: digits, X for any "
	"digit, dots between groups (`2007`, `2XXX`, `3.2XXX`)."},
    {CONFIG_SEC_SERVER, "failover", CT_LIST, 0, 0, "", NULL, SV(failover), NULL,
	true,
	"Server names that may cover this post, in order of preference. "
	"When none is up with room, a spare covers."},
    {CONFIG_SEC_SERVER, "prompt", CT_STRING, 0, 0, NULL, NULL, SV(prompt), NULL,
	true,
	"Audio the post's media ports play to callers instead of echoing "
	"them: a WAV file of mu-law, mono, 8000 Hz (`sox IN -r 8000 -c 1 "
	"-e mu-law OUT.wav`), or raw PCMU bytes under any other name; "
	"relative to the config file. understudyd refuses to start when it "
	"cannot read it."},
    {CONFIG_SEC_SERVER, "spare", CT_BOOL, 0, 0, "no", NULL, SV(spare), NULL,
	false,
	"`yes`: the server has no post of its own and only covers others."},

    {CONFIG_SEC_USER, "password", CT_SECRET, 0, 0, NULL, NULL, US(password),
	check_hash, true,
	"argon2id hash of the user's password, as `understudy passwd` prints "
	"it. Required."},
    {CONFIG_SEC_USER, "groups", CT_LIST, 0, 0, "", NULL, US(groups), check_name,
	true, "Groups the user belongs to."},

    {CONFIG_SEC_CHANNEL, "allow", CT_LIST, 0, 0, "", NULL, CH(allow),
	check_allow, true,
	"Users (`alice`) and groups (`@dispatch`) who may join the channel."},
};

#define N_OPTIONS ARRAY_SIZE(config_options)

static const char *const section_names[CONFIG_SEC_COUNT] = {
    "cluster", "server", "user", "channel"};

/* ---- diagnostics ---- */

static void diag_add(struct config_diags *d, int line, enum config_severity sev,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
diag_add(struct config_diags *d, int line, enum config_severity sev,
    const char *fmt, ...)
{
	struct config_diag *v;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if ((v = realloc(d->v, (d->n + 1) * sizeof(*v))) == NULL)
		return;
	d->v = v;
	if ((v[d->n].message = strdup(msg)) == NULL)
		return;
	v[d->n].line = line;
	v[d->n].severity = sev;
	v[d->n].seq = (unsigned)d->n;
	d->n++;
	if (sev == CONFIG_ERROR)
		d->errors++;
	else
		d->warnings++;
}

#define ERR(d, line, ...) diag_add(d, line, CONFIG_ERROR, __VA_ARGS__)
#define WARN(d, line, ...) diag_add(d, line, CONFIG_WARNING, __VA_ARGS__)

static int
diag_cmp(const void *a, const void *b)
{
	const struct config_diag *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	/* qsort is not stable: keep the order problems were found in */
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void
config_diags_free(struct config_diags *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].message);
	free(d->v);
	free(d->path);
	memset(d, 0, sizeof(*d));
}

void
config_diags_print(const struct config_diags *d, FILE *f)
{
	for (size_t i = 0; i < d->n; i++) {
		const char *sev =
		    d->v[i].severity == CONFIG_ERROR ? "error" : "warning";

		if (d->v[i].line > 0)
			fprintf(f, "%s:%d: %s: %s\n", d->path, d->v[i].line,
			    sev, d->v[i].message);
		else
			fprintf(
			    f, "%s: %s: %s\n", d->path, sev, d->v[i].message);
	}
}

/* ---- syntax checks of single values ---- */

static bool
check_name(const char *v, char *err, size_t errlen)
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
check_allow(const char *v, char *err, size_t errlen)
{
	return check_name(v[0] == '@' ? v + 1 : v, err, errlen);
}

/* ---- parsing ---- */

struct parse_state {
	const char *name;
	const char *text;
	size_t len, pos;
	int lineno;
	struct config *cfg;
	struct config_diags *d;
	enum config_section sec; /* current section */
	void *obj; /* its struct, NULL to skip its keys */
	int *lines; /* its lines[] */
	bool seen_cluster;
	bool seen_header;
};

/*
 * libinih's line buffer is 200 bytes and it reports only the first
 * syntax error. The reader therefore checks each line itself: a line
 * too long, or one that is neither a section, a key = value, a comment
 * nor blank, is reported here and handed to inih as a blank line.
 */
static char *
config_reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	const char *p, *end, *nl;
	size_t n;

	if (ps->pos >= ps->len)
		return NULL;
	p = ps->text + ps->pos;
	end = ps->text + ps->len;
	nl = memchr(p, '\n', (size_t)(end - p));
	n = nl ? (size_t)(nl - p) : (size_t)(end - p);
	ps->pos += n + (nl ? 1 : 0);
	ps->lineno++;
	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (memchr(p, '\0', n) != NULL) {
		ERR(ps->d, ps->lineno, "line contains a NUL byte");
		goto blank;
	}
	if (n + 2 > (size_t)num) {
		ERR(ps->d, ps->lineno,
		    "line is longer than %d characters; give a list option on "
		    "several lines instead",
		    num - 2);
		goto blank;
	}
	{
		const char *s = p, *e = p + n;

		while (s < e && isspace((unsigned char)*s))
			s++;
		while (e > s && isspace((unsigned char)e[-1]))
			e--;
		if (s == e || *s == ';' || *s == '#')
			goto copy;
		if (*s == '[') {
			if (e[-1] != ']') {
				ERR(ps->d, ps->lineno,
				    "section header is missing its ']'; the "
				    "keys "
				    "under it are skipped");
				/* keys up to the next header belong nowhere */
				ps->seen_header = true;
				ps->obj = NULL;
				ps->lines = NULL;
				goto blank;
			}
			goto copy;
		}
		if (memchr(s, '=', (size_t)(e - s)) == NULL) {
			ERR(ps->d, ps->lineno,
			    "expected 'key = value', a [section] or a comment");
			goto blank;
		}
		if (*s == '=') {
			ERR(ps->d, ps->lineno, "a key is missing before '='");
			goto blank;
		}
	}
copy:
	memcpy(str, p, n);
	str[n] = '\0';
	return str;
blank:
	str[0] = '\0';
	return str;
}

static const struct config_option *
option_find(enum config_section sec, const char *name, size_t *idx)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (config_options[i].section == sec &&
		    strcmp(config_options[i].name, name) == 0) {
			*idx = i;
			return &config_options[i];
		}
	return NULL;
}

static const char *
option_suggest(enum config_section sec, const char *name)
{
	const char *names[N_OPTIONS];
	size_t n = 0;

	for (size_t i = 0; i < N_OPTIONS; i++)
		if (config_options[i].section == sec)
			names[n++] = config_options[i].name;
	return str_suggest(name, names, n);
}

static bool
bool_parse(const char *v, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/*
 * Store value into obj for option o. Problems are reported against line;
 * in a check run (line 0, from the defaults) they cannot happen.
 */
static void
option_set(struct config_diags *d, int line, const struct config_option *o,
    void *obj, const char *value)
{
	char *field = (char *)obj + o->offset, err[256];

	switch (o->type) {
	case CT_INT: {
		long v;

		if (str_to_long(value, o->min, o->max, &v) != 0) {
			if (errno == ERANGE)
				ERR(d, line, "%s: %s is out of range %ld..%ld",
				    o->name, value, o->min, o->max);
			else
				ERR(d, line, "%s: '%s' is not a whole number",
				    o->name, value);
			return;
		}
		*(long *)(void *)field = v;
		break;
	}
	case CT_STRING:
	case CT_SECRET: {
		char **sp = (char **)(void *)field;

		if (o->check && !o->check(value, err, sizeof(err))) {
			ERR(d, line, "%s: %s", o->name, err);
			return;
		}
		free(*sp);
		*sp = strdup(value);
		break;
	}
	case CT_BOOL:
		if (!bool_parse(value, (bool *)(void *)field))
			ERR(d, line, "%s: '%s' is not yes or no", o->name,
			    value);
		break;
	case CT_ENUM: {
		char list[128] = "";

		for (int i = 0; o->choices[i]; i++) {
			if (strcmp(value, o->choices[i]) == 0) {
				*(int *)(void *)field = i;
				return;
			}
			if (i)
				strncat(list, ", ",
				    sizeof(list) - strlen(list) - 1);
			strncat(list, o->choices[i],
			    sizeof(list) - strlen(list) - 1);
		}
		ERR(d, line, "%s: '%s' is not one of %s", o->name, value, list);
		break;
	}
	case CT_LIST: {
		struct strlist *l = (struct strlist *)(void *)field, tmp = {0};

		if (strlist_split(&tmp, value) == US_ETOOBIG)
			ERR(d, line,
			    "%s: an item is longer than 255 characters",
			    o->name);
		for (size_t i = 0; i < tmp.n; i++) {
			if (o->check && !o->check(tmp.v[i], err, sizeof(err))) {
				ERR(d, line, "%s: %s", o->name, err);
				continue;
			}
			if (strlist_find(l, tmp.v[i]) >= 0) {
				ERR(d, line, "%s: '%s' is listed twice",
				    o->name, tmp.v[i]);
				continue;
			}
			strlist_add(l, tmp.v[i]);
		}
		strlist_free(&tmp);
		break;
	}
	}
}

static void
defaults_apply(struct config_diags *d, enum config_section sec, void *obj)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct config_option *o = &config_options[i];

		if (o->section == sec && o->def && o->def[0])
			option_set(d, 0, o, obj, o->def);
	}
}

/* Grow one of the section arrays by one zeroed element. */
static void *
array_push(void **arr, size_t *n, size_t size)
{
	char *p;

	if ((p = realloc(*arr, (*n + 1) * size)) == NULL)
		return NULL;
	*arr = p;
	memset(p + *n * size, 0, size);
	return p + (*n)++ * size;
}

static int
section_begin(struct parse_state *ps, const char *header)
{
	char word[CONFIG_LINE_MAX], name[CONFIG_LINE_MAX] = "", err[256];
	struct config *cfg = ps->cfg;
	int sec = -1, line = ps->lineno;
	const char *sp;

	ps->obj = NULL;
	ps->lines = NULL;
	sp = strpbrk(header, " \t");
	if (sp) {
		str_copy(word, header, (size_t)(sp - header) + 1);
		while (*sp == ' ' || *sp == '\t')
			sp++;
		str_copy(name, sp, sizeof(name));
	} else {
		str_copy(word, header, sizeof(word));
	}
	for (int i = 0; i < CONFIG_SEC_COUNT; i++)
		if (strcmp(word, section_names[i]) == 0)
			sec = i;
	if (sec < 0) {
		const char *s =
		    str_suggest(word, section_names, CONFIG_SEC_COUNT);

		if (s)
			ERR(ps->d, line,
			    "unknown section [%s]; did you mean [%s]?", word,
			    s);
		else
			ERR(ps->d, line,
			    "unknown section [%s] (known: cluster, server, "
			    "user, "
			    "channel)",
			    word);
		return 1;
	}
	ps->sec = (enum config_section)sec;
	if (sec == CONFIG_SEC_CLUSTER) {
		if (name[0]) {
			ERR(ps->d, line,
			    "[cluster] takes no name; set 'name = %s' inside "
			    "it",
			    name);
			return 1;
		}
		if (ps->seen_cluster) {
			ERR(ps->d, line,
			    "duplicate [cluster] section (first at line %d)",
			    cfg->cluster.line);
			return 1;
		}
		ps->seen_cluster = true;
		cfg->cluster.line = line;
		ps->obj = &cfg->cluster;
		ps->lines = cfg->cluster.lines;
		return 1;
	}
	if (name[0] == '\0') {
		ERR(ps->d, line, "[%s] needs a name: [%s NAME]", word, word);
		return 1;
	}
	if (!check_name(name, err, sizeof(err))) {
		ERR(ps->d, line, "[%s %s]: %s", word, name, err);
		return 1;
	}
	switch (sec) {
	case CONFIG_SEC_SERVER: {
		struct config_server *s;

		for (size_t i = 0; i < cfg->n_servers; i++)
			if (strcmp(cfg->servers[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate server %s (first at line %d)",
				    name, cfg->servers[i].line);
				return 1;
			}
		s = array_push(
		    (void **)&cfg->servers, &cfg->n_servers, sizeof(*s));
		if (s == NULL)
			return 0;
		s->name = strdup(name);
		s->line = line;
		s->max_media_ports = -1;
		defaults_apply(ps->d, CONFIG_SEC_SERVER, s);
		ps->obj = s;
		ps->lines = s->lines;
		break;
	}
	case CONFIG_SEC_USER: {
		struct config_user *u;

		for (size_t i = 0; i < cfg->n_users; i++)
			if (strcmp(cfg->users[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate user %s (first at line %d)",
				    name, cfg->users[i].line);
				return 1;
			}
		u = array_push((void **)&cfg->users, &cfg->n_users, sizeof(*u));
		if (u == NULL)
			return 0;
		u->name = strdup(name);
		u->line = line;
		defaults_apply(ps->d, CONFIG_SEC_USER, u);
		ps->obj = u;
		ps->lines = u->lines;
		break;
	}
	case CONFIG_SEC_CHANNEL: {
		struct config_channel *c;

		for (size_t i = 0; i < cfg->n_channels; i++)
			if (strcmp(cfg->channels[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate channel %s (first at line %d)",
				    name, cfg->channels[i].line);
				return 1;
			}
		c = array_push(
		    (void **)&cfg->channels, &cfg->n_channels, sizeof(*c));
		if (c == NULL)
			return 0;
		c->name = strdup(name);
		c->line = line;
		defaults_apply(ps->d, CONFIG_SEC_CHANNEL, c);
		ps->obj = c;
		ps->lines = c->lines;
		break;
	}
	}
	return 1;
}

static int
config_handler(
    void *user, const char *section, const char *key, const char *value)
{
	struct parse_state *ps = user;
	const struct config_option *o;
	size_t idx, errors;

	(void)section;
	if (!ps->seen_header) {
		ERR(ps->d, ps->lineno,
		    "'%s' is outside any section; start with [cluster]", key);
		return 1;
	}
	if (ps->obj == NULL)
		return 1; /* a bad section header, reported already */
	if ((o = option_find(ps->sec, key, &idx)) == NULL) {
		const char *s = option_suggest(ps->sec, key);

		if (s)
			ERR(ps->d, ps->lineno,
			    "unknown key '%s' in [%s]; did you mean '%s'?", key,
			    section_names[ps->sec], s);
		else
			ERR(ps->d, ps->lineno, "unknown key '%s' in [%s]", key,
			    section_names[ps->sec]);
		return 1;
	}
	if (value[0] == '\0' && o->type != CT_LIST) {
		ERR(ps->d, ps->lineno, "%s: empty value", key);
		return 1;
	}
	if (ps->lines[idx] && o->type != CT_LIST) {
		ERR(ps->d, ps->lineno, "'%s' is already set at line %d", key,
		    abs(ps->lines[idx]));
		return 1;
	}
	/* a list given in the file replaces its default; repeats add up */
	if (ps->lines[idx] == 0 && o->type == CT_LIST)
		strlist_free(
		    (struct strlist *)(void *)((char *)ps->obj + o->offset));
	errors = ps->d->errors;
	option_set(ps->d, ps->lineno, o, ps->obj, value);
	ps->lines[idx] = ps->d->errors > errors ? -ps->lineno : ps->lineno;
	return 1;
}

/*
 * inih calls the handler only for keys, so the reader opens each section
 * when it hands inih the header line (a header without keys still counts).
 */
static char *
config_reader_sections(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	char *line = config_reader(str, num, stream), *s, *e;
	char header[CONFIG_LINE_MAX];
	size_t n;

	if (line == NULL)
		return NULL;
	s = line;
	while (isspace((unsigned char)*s))
		s++;
	if (*s != '[')
		return line;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	s++;
	e--; /* the reader made sure the line ends in ']' */
	while (s < e && isspace((unsigned char)*s))
		s++;
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	n = (size_t)(e - s);
	memcpy(header, s, n);
	header[n] = '\0';
	ps->seen_header = true;
	section_begin(ps, header);
	return line;
}

/* ---- checks across the whole file ---- */

/*
 * lines[] holds, per option, the line that set it: positive when the value
 * was taken, negative when it was rejected (and reported), 0 when unset.
 */
static int
line_raw(const int *lines, enum config_section sec, const char *name)
{
	size_t idx;

	return option_find(sec, name, &idx) ? lines[idx] : 0;
}

static int
line_of(
    const int *lines, enum config_section sec, const char *name, int fallback)
{
	int l = line_raw(lines, sec, name);

	return l > 0 ? l : l < 0 ? -l : fallback;
}

#define SLINE(s, key) line_of((s)->lines, CONFIG_SEC_SERVER, key, (s)->line)
#define CLINE(c, key) line_of((c)->lines, CONFIG_SEC_CLUSTER, key, (c)->line)

int
config_server_line(const struct config_server *s, const char *key)
{
	return SLINE(s, key);
}

int
config_cluster_line(const struct config *cfg, const char *key)
{
	return CLINE(&cfg->cluster, key);
}
/* the key was written (maybe with a bad value, reported already) */
#define SGIVEN(s, key) (line_raw((s)->lines, CONFIG_SEC_SERVER, key) != 0)
#define SREJECTED(s, key) (line_raw((s)->lines, CONFIG_SEC_SERVER, key) < 0)

static const char **
server_names(const struct config *cfg)
{
	const char **v = calloc(cfg->n_servers + 1, sizeof(*v));

	for (size_t i = 0; v && i < cfg->n_servers; i++)
		v[i] = cfg->servers[i].name;
	return v;
}

static void
check_cluster_section(struct config *cfg, struct config_diags *d)
{
	struct config_cluster *c = &cfg->cluster;
	int eline = line_of(c->lines, CONFIG_SEC_CLUSTER, "etcd", c->line);

	if (c->line == 0) {
		ERR(d, 0, "missing [cluster] section");
		return;
	}
	if (c->name == NULL &&
	    line_raw(c->lines, CONFIG_SEC_CLUSTER, "name") == 0)
		ERR(d, c->line, "[cluster] needs a name ('name = ...')");
	if (c->admin_token && c->read_token &&
	    strcmp(c->admin_token, c->read_token) == 0)
		ERR(d, CLINE(c, "read_token"),
		    "read_token is the admin_token (line %d); a read-only "
		    "token must not open control",
		    CLINE(c, "admin_token"));
	if (c->etcd.n == 0) {
		ERR(d, eline,
		    "etcd: no endpoint given (list http://HOST:PORT, or "
		    "local)");
	} else if (strlist_find(&c->etcd, "local") >= 0) {
		char url[64];

		if (c->etcd.n > 1) {
			ERR(d, eline,
			    "etcd: 'local' cannot be mixed with endpoints");
			return;
		}
		c->etcd_local = true;
		strlist_free(&c->etcd);
		snprintf(url, sizeof(url), "http://127.0.0.1:%ld",
		    c->local_etcd_port);
		strlist_add(&c->etcd, url);
	}
	if (strlist_find(&c->messaging, "local") >= 0) {
		char url[64];

		if (c->messaging.n > 1) {
			ERR(d,
			    line_of(c->lines, CONFIG_SEC_CLUSTER, "messaging",
				c->line),
			    "messaging: 'local' cannot be mixed with URLs");
			return;
		}
		c->messaging_local = true;
		strlist_free(&c->messaging);
		snprintf(url, sizeof(url), "nats://127.0.0.1:%ld",
		    c->local_nats_port);
		strlist_add(&c->messaging, url);
	}
	if (c->desk_versions.n == 0)
		strlist_add(&c->desk_versions, US_VERSION);
}

#define CGIVEN(c, key) (line_raw((c)->lines, CONFIG_SEC_CLUSTER, key) != 0)

/* Both or neither: the second one of a pair missing is an error. */
static void
check_pair_set(const struct config_cluster *c, struct config_diags *d,
    const char *a, const char *b, const char *why)
{
	if (CGIVEN(c, a) == CGIVEN(c, b))
		return;
	if (CGIVEN(c, a))
		ERR(d, CLINE(c, a), "%s is set but %s is not: %s", a, b, why);
	else
		ERR(d, CLINE(c, b), "%s is set but %s is not: %s", b, a, why);
}

/*
 * TLS and credentials: pairs complete, and nothing set that the links
 * it is for would not use (an operator who sets etcd_cert believes the
 * etcd traffic is protected).
 */
static void
check_tls(const struct config *cfg, struct config_diags *d)
{
	const struct config_cluster *c = &cfg->cluster;
	static const char *const etcd_opts[] = {
	    "etcd_ca", "etcd_cert", "etcd_key"};
	static const char *const nats_opts[] = {"messaging_ca",
	    "messaging_cert", "messaging_key", "messaging_user",
	    "messaging_password", "messaging_token"};
	size_t https = 0, http = 0;

	check_pair_set(
	    c, d, "tls_cert", "tls_key", "the API needs both to serve HTTPS");
	if (CGIVEN(c, "tls_ca") && !CGIVEN(c, "tls_cert") &&
	    !CGIVEN(c, "tls_key"))
		ERR(d, CLINE(c, "tls_ca"),
		    "tls_ca is set but the API serves plain HTTP (no "
		    "tls_cert and tls_key)");
	check_pair_set(c, d, "etcd_cert", "etcd_key",
	    "etcd's client certificate needs both");
	for (size_t i = 0; i < c->etcd.n; i++) {
		https += strncmp(c->etcd.v[i], "https://", 8) == 0;
		http += strncmp(c->etcd.v[i], "http://", 7) == 0;
	}
	if (https > 0 && http > 0)
		ERR(d, CLINE(c, "etcd"),
		    "etcd: http:// and https:// endpoints mixed; list them "
		    "all with TLS or all without");
	for (size_t i = 0; i < ARRAY_SIZE(etcd_opts); i++) {
		if (!CGIVEN(c, etcd_opts[i]) || https > 0)
			continue;
		if (c->etcd_local)
			ERR(d, CLINE(c, etcd_opts[i]),
			    "%s is set but etcd = local, which understudy up "
			    "runs without TLS; list https:// endpoints",
			    etcd_opts[i]);
		else if (c->etcd.n > 0)
			ERR(d, CLINE(c, etcd_opts[i]),
			    "%s is set but the etcd endpoints are http://; "
			    "list them as https://HOST:PORT",
			    etcd_opts[i]);
	}
	check_pair_set(c, d, "messaging_cert", "messaging_key",
	    "the client certificate for NATS needs both");
	check_pair_set(c, d, "messaging_user", "messaging_password",
	    "NATS takes a user with its password");
	if (CGIVEN(c, "messaging_token") && CGIVEN(c, "messaging_user"))
		ERR(d, CLINE(c, "messaging_token"),
		    "messaging_token and messaging_user (line %d) are both "
		    "set; NATS takes one or the other",
		    CLINE(c, "messaging_user"));
	if (CGIVEN(c, "messaging_cert") && !CGIVEN(c, "messaging_ca"))
		ERR(d, CLINE(c, "messaging_cert"),
		    "messaging_cert is set but messaging_ca is not: TLS to "
		    "NATS is on where messaging_ca is set");
	for (size_t i = 0; i < ARRAY_SIZE(nats_opts); i++)
		if (CGIVEN(c, nats_opts[i]) && c->messaging_local)
			ERR(d, CLINE(c, nats_opts[i]),
			    "%s is set but messaging = local, which understudy "
			    "up runs without TLS or credentials; list the "
			    "nats:// URLs of your NATS servers",
			    nats_opts[i]);
}

static void
check_failover_list(const struct config *cfg, const struct config_server *s,
    struct config_diags *d)
{
	const char **names = server_names(cfg);
	int line = SLINE(s, "failover");

	for (size_t j = 0; names && j < s->failover.n; j++) {
		const char *f = s->failover.v[j];
		const struct config_server *by_addr = NULL;
		const char *sug;

		if (strcmp(f, s->name) == 0) {
			ERR(d, line, "failover: %s lists itself", s->name);
			continue;
		}
		if (config_server_find(cfg, f))
			continue;
		for (size_t k = 0; k < cfg->n_servers; k++)
			if (cfg->servers[k].address &&
			    strcmp(cfg->servers[k].address, f) == 0)
				by_addr = &cfg->servers[k];
		if (str_is_ip(f) || strchr(f, '.')) {
			if (by_addr)
				ERR(d, line,
				    "failover: '%s' is an address; list server "
				    "names (the server at %s is %s)",
				    f, f, by_addr->name);
			else
				ERR(d, line,
				    "failover: '%s' is an address or host "
				    "name; "
				    "list the names of [server NAME] sections",
				    f);
			continue;
		}
		sug = str_suggest(f, names, cfg->n_servers);
		if (sug)
			ERR(d, line,
			    "failover: unknown server '%s'; did you mean '%s'?",
			    f, sug);
		else
			ERR(d, line, "failover: unknown server '%s'", f);
	}
	free(names);
}

static void
check_server(
    const struct config *cfg, struct config_server *s, struct config_diags *d)
{
	if (s->address == NULL && !SGIVEN(s, "address"))
		ERR(d, s->line, "server %s needs an address", s->name);
	if (s->max_media_ports < 0)
		s->max_media_ports = s->media_ports;
	if (s->spare) {
		if (s->media_ports > 0)
			ERR(d, SLINE(s, "media_ports"),
			    "%s is a spare and cannot have media ports "
			    "(media_ports = %ld)",
			    s->name, s->media_ports);
		if (s->route_point || s->aa_route_point)
			ERR(d,
			    SLINE(s,
				s->route_point ? "route_point"
					       : "aa_route_point"),
			    "%s is a spare and has no route point of its own",
			    s->name);
		if (s->interceptor_ports.n)
			ERR(d, SLINE(s, "interceptor_ports"),
			    "%s is a spare and has no interceptor ports of its "
			    "own",
			    s->name);
		if (s->max_media_ports == 0)
			WARN(d, s->line,
			    "spare %s has max_media_ports 0 and can cover "
			    "nobody",
			    s->name);
	} else {
		if (s->route_point == NULL && !SGIVEN(s, "route_point"))
			ERR(d, s->line,
			    "%s needs a route_point (or spare = yes)", s->name);
		if (s->media_ports == 0 && !SREJECTED(s, "media_ports"))
			ERR(d, SLINE(s, "media_ports"),
			    "%s needs media_ports of at least 1 (or spare = "
			    "yes)",
			    s->name);
	}
	if (s->media_ports > 0) {
		if (s->media_port_base == 0 && !SGIVEN(s, "media_port_base"))
			ERR(d, s->line,
			    "%s has media ports but no media_port_base",
			    s->name);
		if (s->rtp_port_base == 0 && !SGIVEN(s, "rtp_port_base"))
			ERR(d, s->line,
			    "%s has media ports but no rtp_port_base", s->name);
		else if (s->rtp_port_base &&
		    s->rtp_port_base + s->media_ports - 1 > 65535)
			ERR(d, SLINE(s, "rtp_port_base"),
			    "RTP ports %ld-%ld of %s run past 65535",
			    s->rtp_port_base,
			    s->rtp_port_base + s->media_ports - 1, s->name);
		if (s->max_media_ports < s->media_ports)
			ERR(d, SLINE(s, "max_media_ports"),
			    "max_media_ports %ld of %s is less than its own "
			    "media_ports %ld",
			    s->max_media_ports, s->name, s->media_ports);
		if (s->rtp_port_base && s->sip_port >= s->rtp_port_base &&
		    s->sip_port < s->rtp_port_base + s->media_ports)
			ERR(d, SLINE(s, "sip_port"),
			    "sip_port %ld of %s is inside its own RTP ports "
			    "%ld-%ld",
			    s->sip_port, s->name, s->rtp_port_base,
			    s->rtp_port_base + s->media_ports - 1);
	}
	check_failover_list(cfg, s, d);
}

static bool
ranges_overlap(long a, long an, long b, long bn)
{
	return an > 0 && bn > 0 && a < b + bn && b < a + an;
}

/* Checks between two servers a (earlier in the file) and b. */
static void
check_pair(const struct config_server *a, const struct config_server *b,
    struct config_diags *d)
{
	bool same =
	    a->address && b->address && strcmp(a->address, b->address) == 0;

	if (same) {
		if (a->api_port == b->api_port)
			ERR(d, SLINE(b, "api_port"),
			    "api_port %ld of %s is already used by %s on %s",
			    b->api_port, b->name, a->name, a->address);
		if (a->sip_port == b->sip_port)
			ERR(d, SLINE(b, "sip_port"),
			    "sip_port %ld of %s is already used by %s on %s",
			    b->sip_port, b->name, a->name, a->address);
		if (a->media_port_base && b->media_port_base &&
		    ranges_overlap(a->media_port_base, a->media_ports,
			b->media_port_base, b->media_ports))
			ERR(d, SLINE(b, "media_port_base"),
			    "media ports %ld-%ld of %s overlap those of %s "
			    "(%ld-%ld) on %s",
			    b->media_port_base,
			    b->media_port_base + b->media_ports - 1, b->name,
			    a->name, a->media_port_base,
			    a->media_port_base + a->media_ports - 1,
			    a->address);
		if (a->rtp_port_base && b->rtp_port_base &&
		    ranges_overlap(a->rtp_port_base, a->media_ports,
			b->rtp_port_base, b->media_ports))
			ERR(d, SLINE(b, "rtp_port_base"),
			    "RTP ports %ld-%ld of %s overlap those of %s "
			    "(%ld-%ld) on %s",
			    b->rtp_port_base,
			    b->rtp_port_base + b->media_ports - 1, b->name,
			    a->name, a->rtp_port_base,
			    a->rtp_port_base + a->media_ports - 1, a->address);
		if (ranges_overlap(
			a->rtp_port_base, a->media_ports, b->sip_port, 1))
			ERR(d, SLINE(b, "sip_port"),
			    "sip_port %ld of %s is inside the RTP ports of %s "
			    "on %s",
			    b->sip_port, b->name, a->name, a->address);
		if (ranges_overlap(
			b->rtp_port_base, b->media_ports, a->sip_port, 1))
			ERR(d, SLINE(b, "rtp_port_base"),
			    "RTP ports of %s include sip_port %ld of %s on %s",
			    b->name, a->sip_port, a->name, a->address);
	}
}

/* Two patterns (or extensions) overlap when some extension matches both. */
static bool
patterns_overlap(const char *p, const char *q)
{
	char a[40], b[40];
	size_t n = 0, m = 0;

	for (; *p && n < sizeof(a) - 1; p++)
		if (*p != '.')
			a[n++] = *p;
	for (; *q && m < sizeof(b) - 1; q++)
		if (*q != '.')
			b[m++] = *q;
	if (n != m)
		return false;
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i] && a[i] != 'X' && b[i] != 'X')
			return false;
	return true;
}

static void
check_numbers(const struct config *cfg, struct config_diags *d)
{
	for (size_t i = 0; i < cfg->n_servers; i++) {
		const struct config_server *b = &cfg->servers[i];
		const char *rp[2] = {b->route_point, b->aa_route_point};
		const char *rpkey[2] = {"route_point", "aa_route_point"};

		for (int k = 0; k < 2; k++) {
			if (rp[k] == NULL)
				continue;
			if (k == 1 && b->route_point &&
			    strcmp(b->route_point, rp[1]) == 0)
				ERR(d, SLINE(b, "aa_route_point"),
				    "aa_route_point %s of %s is its "
				    "route_point too",
				    rp[1], b->name);
			for (size_t j = 0; j < i; j++) {
				const struct config_server *a =
				    &cfg->servers[j];

				if ((a->route_point &&
					strcmp(a->route_point, rp[k]) == 0) ||
				    (a->aa_route_point &&
					strcmp(a->aa_route_point, rp[k]) == 0))
					ERR(d, SLINE(b, rpkey[k]),
					    "route point %s of %s is already "
					    "used by "
					    "%s (line %d)",
					    rp[k], b->name, a->name, a->line);
			}
		}
		for (size_t p = 0; p < b->interceptor_ports.n; p++) {
			const char *pat = b->interceptor_ports.v[p];
			int line = SLINE(b, "interceptor_ports");

			for (size_t j = 0; j <= i; j++) {
				const struct config_server *a =
				    &cfg->servers[j];
				size_t until =
				    j == i ? p : a->interceptor_ports.n;

				for (size_t q = 0; q < until; q++) {
					const char *other =
					    a->interceptor_ports.v[q];

					if (strcmp(other, pat) == 0)
						ERR(d, line,
						    "interceptor pattern %s of "
						    "%s is "
						    "already %s's",
						    pat, b->name, a->name);
					else if (a != b &&
					    patterns_overlap(other, pat))
						WARN(d, line,
						    "interceptor pattern %s of "
						    "%s "
						    "overlaps %s of %s",
						    pat, b->name, other,
						    a->name);
				}
			}
			for (size_t j = 0; j < cfg->n_servers; j++) {
				const struct config_server *a =
				    &cfg->servers[j];

				if (a->route_point &&
				    config_pattern_match(pat, a->route_point))
					WARN(d, line,
					    "interceptor pattern %s of %s also "
					    "matches route point %s of %s",
					    pat, b->name, a->route_point,
					    a->name);
			}
		}
	}
}

static void
check_capacity(const struct config *cfg, struct config_diags *d)
{
	bool have_spare = false;

	for (size_t i = 0; i < cfg->n_servers; i++)
		have_spare |= cfg->servers[i].spare;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		const struct config_server *s = &cfg->servers[i];
		int line = SLINE(s, "failover");

		if (s->spare || s->media_ports == 0)
			continue;
		if (s->failover.n == 0 && !have_spare)
			WARN(d, s->line,
			    "%s has no failover server and the cluster has no "
			    "spare: its post is unserved while it is down",
			    s->name);
		for (size_t j = 0; j < s->failover.n; j++) {
			const struct config_server *c =
			    config_server_find(cfg, s->failover.v[j]);

			if (c == NULL || c == s)
				continue;
			if (c->spare && s->media_ports > c->max_media_ports)
				WARN(d, line,
				    "spare %s cannot cover %s: %ld ports > "
				    "max_media_ports %ld",
				    c->name, s->name, s->media_ports,
				    c->max_media_ports);
			else if (!c->spare &&
			    c->media_ports + s->media_ports >
				c->max_media_ports)
				WARN(d, line,
				    "%s covers %s: %ld + %ld ports > "
				    "max_media_ports %ld",
				    c->name, s->name, c->media_ports,
				    s->media_ports, c->max_media_ports);
		}
	}
}

static void
check_users_channels(const struct config *cfg, struct config_diags *d)
{
	struct strlist users = {0}, groups = {0};

	for (size_t i = 0; i < cfg->n_users; i++) {
		const struct config_user *u = &cfg->users[i];

		if (u->password == NULL)
			ERR(d, u->line, "user %s needs a password", u->name);
		strlist_add(&users, u->name);
		for (size_t g = 0; g < u->groups.n; g++)
			if (strlist_find(&groups, u->groups.v[g]) < 0)
				strlist_add(&groups, u->groups.v[g]);
	}
	for (size_t i = 0; i < cfg->n_channels; i++) {
		const struct config_channel *c = &cfg->channels[i];
		int line =
		    line_of(c->lines, CONFIG_SEC_CHANNEL, "allow", c->line);

		if (c->allow.n == 0)
			WARN(d, c->line, "channel %s allows nobody", c->name);
		for (size_t a = 0; a < c->allow.n; a++) {
			const char *who = c->allow.v[a];
			const struct strlist *l =
			    who[0] == '@' ? &groups : &users;
			const char *name = who[0] == '@' ? who + 1 : who;
			const char *sug;

			if (strlist_find(l, name) >= 0)
				continue;
			sug =
			    str_suggest(name, (const char *const *)l->v, l->n);
			if (sug)
				ERR(d, line,
				    "allow: unknown %s '%s'; did you mean "
				    "'%s%s'?",
				    who[0] == '@' ? "group" : "user", who,
				    who[0] == '@' ? "@" : "", sug);
			else
				ERR(d, line, "allow: unknown %s '%s'",
				    who[0] == '@' ? "group" : "user", who);
		}
	}
	strlist_free(&users);
	strlist_free(&groups);
}

/* ---- entry points ---- */

struct config *
config_parse(
    const char *name, const char *text, size_t len, struct config_diags *d)
{
	struct parse_state ps;
	struct config *cfg;

	_Static_assert(
	    N_OPTIONS <= CONFIG_MAX_OPTIONS, "raise CONFIG_MAX_OPTIONS");
	if (d->path == NULL)
		d->path = strdup(name);
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
		return NULL;
	cfg->path = strdup(name);
	defaults_apply(d, CONFIG_SEC_CLUSTER, &cfg->cluster);
	memset(&ps, 0, sizeof(ps));
	ps.name = name;
	ps.text = text;
	ps.len = len;
	ps.cfg = cfg;
	ps.d = d;
	if (len > CONFIG_FILE_MAX) {
		ERR(d, 0, "file is larger than %d bytes", CONFIG_FILE_MAX);
		return cfg;
	}
	ini_parse_stream(config_reader_sections, &ps, config_handler, &ps);
	check_cluster_section(cfg, d);
	check_tls(cfg, d);
	if (cfg->n_servers == 0)
		ERR(d, 0, "no [server NAME] section");
	for (size_t i = 0; i < cfg->n_servers; i++)
		check_server(cfg, &cfg->servers[i], d);
	for (size_t i = 0; i < cfg->n_servers; i++)
		for (size_t j = 0; j < i; j++)
			check_pair(&cfg->servers[j], &cfg->servers[i], d);
	check_numbers(cfg, d);
	check_capacity(cfg, d);
	check_users_channels(cfg, d);
	if (d->n > 1)
		qsort(d->v, d->n, sizeof(*d->v), diag_cmp);
	return cfg;
}

struct config *
config_load(const char *path, struct config_diags *d)
{
	struct config *cfg = NULL;
	struct buf b;
	char chunk[8192];
	FILE *f;
	size_t n;

	buf_init(&b, CONFIG_FILE_MAX + 1);
	if (d->path == NULL)
		d->path = strdup(path);
	if ((f = fopen(path, "r")) == NULL) {
		ERR(d, 0, "cannot read: %s", strerror(errno));
		return NULL;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(&b, chunk, n) != 0) {
			ERR(d, 0, "file is larger than %d bytes",
			    CONFIG_FILE_MAX);
			goto out;
		}
	if (ferror(f)) {
		ERR(d, 0, "cannot read: %s", strerror(errno));
		goto out;
	}
	cfg = config_parse(path, b.data ? b.data : "", b.len, d);
out:
	fclose(f);
	buf_free(&b);
	return cfg;
}

static void
section_free(enum config_section sec, void *obj)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct config_option *o = &config_options[i];
		char *field = (char *)obj + o->offset;

		if (o->section != sec)
			continue;
		if (o->type == CT_STRING || o->type == CT_SECRET)
			free(*(char **)(void *)field);
		else if (o->type == CT_LIST)
			strlist_free((struct strlist *)(void *)field);
	}
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	section_free(CONFIG_SEC_CLUSTER, &cfg->cluster);
	for (size_t i = 0; i < cfg->n_servers; i++) {
		section_free(CONFIG_SEC_SERVER, &cfg->servers[i]);
		free(cfg->servers[i].name);
	}
	for (size_t i = 0; i < cfg->n_users; i++) {
		section_free(CONFIG_SEC_USER, &cfg->users[i]);
		free(cfg->users[i].name);
	}
	for (size_t i = 0; i < cfg->n_channels; i++) {
		section_free(CONFIG_SEC_CHANNEL, &cfg->channels[i]);
		free(cfg->channels[i].name);
	}
	free(cfg->servers);
	free(cfg->users);
	free(cfg->channels);
	free(cfg->path);
	free(cfg);
}

/*
 * A secret as a mark that changes when it does: a keyed hash of it (the
 * key is fixed, so the same secret gives the same mark in two texts),
 * cut to 8 hex digits, which says nothing of the secret itself.
 */
static void
secret_mark(FILE *f, const char *name, const char *v)
{
	static const unsigned char key[crypto_shorthash_KEYBYTES] =
	    "understudy-diff";
	unsigned char h[crypto_shorthash_BYTES];

	crypto_shorthash(h, (const unsigned char *)v, strlen(v), key);
	fprintf(
	    f, "%s = (set #%02x%02x%02x%02x)\n", name, h[0], h[1], h[2], h[3]);
}

static void
section_print(const struct config *cfg, enum config_section sec,
    const void *obj, FILE *f, bool marks)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct config_option *o = &config_options[i];
		const char *field = (const char *)obj + o->offset;

		if (o->section != sec)
			continue;
		switch (o->type) {
		case CT_INT: {
			long v = *(const long *)(const void *)field;

			if (v == 0 && o->def == NULL)
				continue; /* unset, and no default */
			fprintf(f, "%s = %ld\n", o->name, v);
			break;
		}
		case CT_STRING:
		case CT_SECRET: {
			const char *v = *(char *const *)(const void *)field;

			if (v && o->type == CT_SECRET && marks)
				secret_mark(f, o->name, v);
			else if (v)
				fprintf(f, "%s = %s\n", o->name,
				    o->type == CT_SECRET ? "(set)" : v);
			break;
		}
		case CT_BOOL:
			fprintf(f, "%s = %s\n", o->name,
			    *(const bool *)(const void *)field ? "yes" : "no");
			break;
		case CT_ENUM:
			fprintf(f, "%s = %s\n", o->name,
			    o->choices[*(const int *)(const void *)field]);
			break;
		case CT_LIST: {
			const struct strlist *l =
			    (const struct strlist *)(const void *)field;

			if (sec == CONFIG_SEC_CLUSTER &&
			    ((cfg->cluster.etcd_local &&
				 l == &cfg->cluster.etcd) ||
				(cfg->cluster.messaging_local &&
				    l == &cfg->cluster.messaging))) {
				fprintf(f, "%s = local\n", o->name);
				break;
			}
			if (l->n == 0)
				continue;
			fprintf(f, "%s = ", o->name);
			for (size_t j = 0; j < l->n; j++)
				fprintf(f, "%s%s", j ? ", " : "", l->v[j]);
			fputc('\n', f);
			break;
		}
		}
	}
}

static void
print_all(const struct config *cfg, FILE *f, bool marks)
{
	fprintf(f, "[cluster]\n");
	section_print(cfg, CONFIG_SEC_CLUSTER, &cfg->cluster, f, marks);
	for (size_t i = 0; i < cfg->n_servers; i++) {
		fprintf(f, "\n[server %s]\n", cfg->servers[i].name);
		section_print(
		    cfg, CONFIG_SEC_SERVER, &cfg->servers[i], f, marks);
	}
	for (size_t i = 0; i < cfg->n_users; i++) {
		fprintf(f, "\n[user %s]\n", cfg->users[i].name);
		section_print(cfg, CONFIG_SEC_USER, &cfg->users[i], f, marks);
	}
	for (size_t i = 0; i < cfg->n_channels; i++) {
		fprintf(f, "\n[channel %s]\n", cfg->channels[i].name);
		section_print(
		    cfg, CONFIG_SEC_CHANNEL, &cfg->channels[i], f, marks);
	}
}

void
config_print(const struct config *cfg, FILE *f)
{
	print_all(cfg, f, false);
}

void
config_print_marked(const struct config *cfg, FILE *f)
{
	print_all(cfg, f, true);
}

bool
config_option_runtime(enum config_section sec, const char *name)
{
	size_t idx;
	const struct config_option *o = option_find(sec, name, &idx);

	return o && o->runtime;
}

void
config_doc(FILE *f)
{
	static const char *const types[] = {
	    "integer", "text", "yes/no", "choice", "list", "secret"};

	fprintf(f,
	    "# Configuration reference\n\n"
	    "Generated from the option table in `src/common/config.c` "
	    "by `understudy config doc`; do not edit by hand.\n\n"
	    "One INI file describes the whole cluster. Lines are at most "
	    "198 characters; a list option may be given on several "
	    "lines, each adding to the list. Comments start with `;` or "
	    "`#`. `understudy config check FILE` reports every problem "
	    "as `FILE:LINE: error|warning: message`. A secret is text "
	    "that is never shown: `config check --print` writes `(set)` "
	    "for it.\n");
	for (int sec = 0; sec < CONFIG_SEC_COUNT; sec++) {
		fprintf(f, "\n## [%s%s]\n\n", section_names[sec],
		    sec == CONFIG_SEC_CLUSTER ? "" : " NAME");
		fprintf(f,
		    "| option | type | default | range | changes at run "
		    "time | meaning |\n|---|---|---|---|---|---|\n");
		for (size_t i = 0; i < N_OPTIONS; i++) {
			const struct config_option *o = &config_options[i];
			char range[64] = "";

			if ((int)o->section != sec)
				continue;
			if (o->type == CT_INT)
				snprintf(range, sizeof(range), "%ld..%ld",
				    o->min, o->max);
			else if (o->type == CT_ENUM) {
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

/* The element of a config array whose name (at name_off) is name. */
static const void *
find_named(
    const void *base, size_t n, size_t size, size_t name_off, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		const char *el = (const char *)base + i * size;

		if (strcmp(*(char *const *)(const void *)(el + name_off),
			name) == 0)
			return el;
	}
	return NULL;
}

const struct config_server *
config_server_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->servers, cfg->n_servers, sizeof(*cfg->servers),
	    offsetof(struct config_server, name), name);
}

const struct config_user *
config_user_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->users, cfg->n_users, sizeof(*cfg->users),
	    offsetof(struct config_user, name), name);
}

const struct config_channel *
config_channel_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->channels, cfg->n_channels,
	    sizeof(*cfg->channels), offsetof(struct config_channel, name),
	    name);
}

bool
config_address_is_local(const char *address)
{
	struct ifaddrs *ifs, *ifa;
	bool found = false;

	if (strcmp(address, "localhost") == 0 ||
	    strncmp(address, "127.", 4) == 0 || strcmp(address, "::1") == 0)
		return true;
	if (getifaddrs(&ifs) != 0)
		return false;
	for (ifa = ifs; ifa && !found; ifa = ifa->ifa_next) {
		char host[NI_MAXHOST];
		socklen_t len;

		if (ifa->ifa_addr == NULL)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET)
			len = sizeof(struct sockaddr_in);
		else if (ifa->ifa_addr->sa_family == AF_INET6)
			len = sizeof(struct sockaddr_in6);
		else
			continue;
		if (getnameinfo(ifa->ifa_addr, len, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) == 0 &&
		    strcmp(host, address) == 0)
			found = true;
	}
	freeifaddrs(ifs);
	return found;
}

bool
config_pattern_match(const char *pattern, const char *extension)
{
	const char *p = pattern, *e = extension;

	for (; *p; p++) {
		if (*p == '.')
			continue;
		if (*e == '\0')
			return false;
		if (*p == 'X' ? !isdigit((unsigned char)*e) : *p != *e)
			return false;
		e++;
	}
	return *e == '\0';
}

char *
config_file_path(const struct config *cfg, const char *value)
{
	const char *slash;
	char *path = NULL;

	if (value == NULL || value[0] == '\0')
		return NULL;
	if (value[0] == '/' || cfg->path == NULL ||
	    (slash = strrchr(cfg->path, '/')) == NULL)
		return strdup(value);
	if (asprintf(&path, "%.*s/%s", (int)(slash - cfg->path), cfg->path,
		value) < 0)
		return NULL;
	return path;
}

void
config_api_url(const struct config *cfg, const char *address, long port,
    char *buf, size_t len)
{
	snprintf(buf, len, "%s://%s:%ld",
	    cfg->cluster.tls_cert ? "https" : "http", address, port);
}
