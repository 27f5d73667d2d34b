/*
 * Checking the configuration across the file: the cluster section, TLS
 * and credentials, each server, pairs of servers (ports), numbers (route
 * points, interceptor patterns), capacity, users and channels. Also the
 * diagnostics every problem goes into, and interceptor pattern matching
 * (the checker and the calls part both match patterns).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define ERR(d, line, ...) config_diag_add(d, line, CONFIG_ERROR, __VA_ARGS__)
#define WARN(d, line, ...) config_diag_add(d, line, CONFIG_WARNING, __VA_ARGS__)

/* ---- diagnostics ---- */

void
config_diag_add(struct config_diags *d, int line, enum config_severity sev,
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

/* ---- checks across the whole file ---- */

/*
 * lines[] holds, per option, the line that set it: positive when the value
 * was taken, negative when it was rejected (and reported), 0 when unset.
 */
static int
line_raw(const int *lines, enum config_section sec, const char *name)
{
	size_t idx;

	return config_option_find(sec, name, &idx) ? lines[idx] : 0;
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
	if (s->desk_port && s->desk_port == s->api_port)
		ERR(d, SLINE(s, "desk_port"),
		    "desk_port %ld of %s is its api_port: leave desk_port out "
		    "(desks use api_port) or give it a port of its own",
		    s->desk_port, s->name);
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
		if (b->desk_port &&
		    (b->desk_port == a->api_port ||
			b->desk_port == a->desk_port))
			ERR(d, SLINE(b, "desk_port"),
			    "desk_port %ld of %s is already used by %s on %s",
			    b->desk_port, b->name, a->name, a->address);
		if (a->desk_port && a->desk_port == b->api_port)
			ERR(d, SLINE(b, "api_port"),
			    "api_port %ld of %s is already used by %s on %s "
			    "(its desk_port)",
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

#define VLINE(v, key) line_of((v)->lines, CONFIG_SEC_SERVICE, key, (v)->line)

/* Depth-first search from service i for a path back to it through after. */
static bool
after_cycle(const struct config *cfg, size_t i, size_t at, unsigned char *seen)
{
	const struct config_service *v = &cfg->services[at];

	for (size_t j = 0; j < v->after.n; j++) {
		const struct config_service *w =
		    config_service_find(cfg, v->after.v[j]);
		size_t k;

		if (w == NULL)
			continue;
		k = (size_t)(w - cfg->services);
		if (k == i)
			return true;
		if (seen[k])
			continue;
		seen[k] = 1;
		if (after_cycle(cfg, i, k, seen))
			return true;
	}
	return false;
}

static void
check_services(const struct config *cfg, struct config_diags *d)
{
	const char **names = server_names(cfg);
	unsigned char *seen = calloc(cfg->n_services + 1, 1);

	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct config_service *v = &cfg->services[i];
		const struct config_server *home;

		if (v->command == NULL &&
		    line_raw(v->lines, CONFIG_SEC_SERVICE, "command") == 0)
			ERR(d, v->line, "service %s needs a command", v->name);
		if (v->scope == CONFIG_SCOPE_POST) {
			if (v->post == NULL) {
				ERR(d, VLINE(v, "scope"),
				    "service %s: scope = post needs post = "
				    "NAME",
				    v->name);
			} else if ((home = config_server_find(cfg, v->post)) ==
			    NULL) {
				const char *sug = names
				    ? str_suggest(
					  v->post, names, cfg->n_servers)
				    : NULL;

				ERR(d, VLINE(v, "post"),
				    "post: no post '%s'%s%s%s", v->post,
				    sug ? "; did you mean '" : "",
				    sug ? sug : "", sug ? "'?" : "");
			} else if (home->spare) {
				ERR(d, VLINE(v, "post"),
				    "post: %s is a spare: it has no post",
				    v->post);
			}
			if (v->servers.n)
				ERR(d, VLINE(v, "servers"),
				    "servers: a post service runs where its "
				    "post is; servers is for scope = server");
		} else if (v->post) {
			ERR(d, VLINE(v, "post"), "post: only for scope = post");
		}
		for (size_t j = 0; j < v->servers.n; j++)
			if (config_server_find(cfg, v->servers.v[j]) == NULL)
				ERR(d, VLINE(v, "servers"),
				    "servers: unknown server '%s'",
				    v->servers.v[j]);
		for (size_t j = 0; j < v->after.n; j++) {
			const struct config_service *w =
			    config_service_find(cfg, v->after.v[j]);

			if (w == NULL)
				ERR(d, VLINE(v, "after"),
				    "after: unknown service '%s'",
				    v->after.v[j]);
			else if (w == v)
				ERR(d, VLINE(v, "after"),
				    "after: service %s cannot wait for itself",
				    v->name);
			else if (w->scope == CONFIG_SCOPE_POST &&
			    (v->scope != CONFIG_SCOPE_POST || v->post == NULL ||
				w->post == NULL ||
				strcmp(v->post, w->post) != 0))
				WARN(d, VLINE(v, "after"),
				    "after: %s runs only where post %s is "
				    "owned; %s waits for it elsewhere",
				    w->name, w->post ? w->post : "?", v->name);
		}
		if (seen) {
			memset(seen, 0, cfg->n_services + 1);
			if (after_cycle(cfg, i, i, seen))
				ERR(d, VLINE(v, "after"),
				    "after: service %s waits for itself "
				    "through a cycle",
				    v->name);
		}
	}
	for (size_t j = 0; j < cfg->cluster.health_requires.n; j++)
		if (config_service_find(
			cfg, cfg->cluster.health_requires.v[j]) == NULL)
			ERR(d, CLINE(&cfg->cluster, "health_requires"),
			    "health_requires: unknown service '%s'",
			    cfg->cluster.health_requires.v[j]);
	free(seen);
	free(names);
}

void
config_check(struct config *cfg, struct config_diags *d)
{
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
	check_services(cfg, d);
	if (d->n > 1)
		qsort(d->v, d->n, sizeof(*d->v), diag_cmp);
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
