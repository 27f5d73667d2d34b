/*
 * A server's check of itself, run in the thread pool: each etcd member's
 * status, the registrar (a real SIP OPTIONS over UDP), NATS with
 * JetStream and the project's streams, every record copy's lag (from
 * the durable consumers, so a server that is down is still measured),
 * every other server's API, and the state directory's free space. Every
 * probe has its own bound; nothing here runs on the loop.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <nats/nats.h>
#include <sodium.h>

#include "calls/calls.h"
#include "check.h"

#define PROBE_SIP_MAX 4096

static void
free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void
free_secret(char *v)
{
	if (v)
		explicit_bzero(v, strlen(v));
	free(v);
}

void
check_probe_clear(struct check_probe *p)
{
	free(p->cluster);
	free(p->self);
	free(p->address);
	free_strv(p->etcd, p->n_etcd);
	free(p->etcd_ca);
	free(p->etcd_cert);
	free(p->etcd_key);
	free(p->registrar_host);
	json_decref(p->route_points);
	free_strv(p->nats, p->n_nats);
	free(p->nats_ca);
	free(p->nats_cert);
	free_secret(p->nats_key);
	free_secret(p->nats_token);
	free_secret(p->nats_user);
	free_secret(p->nats_password);
	free_strv(p->peers, p->n_peers);
	free_strv(p->peer_urls, p->n_peers);
	free_strv(p->servers, p->n_servers);
	free(p->api_ca);
	free(p->state_dir);
	json_decref(p->config_rows);
	json_decref(p->errors_row);
	memset(p, 0, sizeof(*p));
}

/* A row about one link: what it goes to, and how long the probe took. */
static json_t *
link_row(json_t *row, const char *target, uint64_t t0)
{
	json_object_set_new(row, "target", json_string(target));
	json_object_set_new(
	    row, "latency_ms", json_integer((json_int_t)(time_mono_ms() - t0)));
	return row;
}

/* ---- etcd: every member's status, then the quorum ---- */

static void
probe_etcd(struct check_probe *p, json_t *rows)
{
	size_t answering = 0;
	uint64_t leader = 0;
	bool split = false;
	char err[256];

	for (size_t i = 0; i < p->n_etcd; i++) {
		char url[512];
		long status = 0;
		json_t *ans = NULL, *hdr;
		const char *lead, *member, *ver;
		uint64_t l = 0, m = 0;

		uint64_t t0 = time_mono_ms();
		json_t *row;

		snprintf(
		    url, sizeof(url), "%s/v3/maintenance/status", p->etcd[i]);
		if (check_http("POST", url, "{}", NULL, p->etcd_ca,
			p->etcd_cert, p->etcd_key, CHECK_PROBE_MS, &status,
			&ans, err, sizeof(err)) != 0 ||
		    status != 200 || !json_is_object(ans)) {
			json_array_append_new(rows,
			    link_row(
				check_row("links", "etcd member", p->self,
				    false, "%s does not answer (%s)",
				    p->etcd[i], status ? "an HTTP error" : err),
				p->etcd[i], t0));
			json_decref(ans);
			continue;
		}
		answering++;
		/* 64-bit ids come as strings (notes/etcd.md) */
		hdr = json_object_get(ans, "header");
		lead = json_string_value(json_object_get(ans, "leader"));
		member = json_string_value(json_object_get(hdr, "member_id"));
		ver = json_string_value(json_object_get(ans, "version"));
		if (lead)
			l = strtoull(lead, NULL, 10);
		if (member)
			m = strtoull(member, NULL, 10);
		if (l && leader && l != leader)
			split = true;
		if (l)
			leader = l;
		row = check_row("links", "etcd member", p->self, l != 0,
		    "%s answers (etcd %s)%s%s", p->etcd[i], ver ? ver : "?",
		    l == 0 ? "; it sees no leader" : "",
		    l != 0 && l == m ? "; the leader" : "");
		json_array_append_new(rows, link_row(row, p->etcd[i], t0));
		json_decref(ans);
	}
	json_array_append_new(rows,
	    check_row("links", "etcd quorum", p->self,
		answering * 2 > p->n_etcd && leader != 0 && !split,
		"%zu of %zu members answer%s", answering, p->n_etcd,
		answering * 2 <= p->n_etcd ? ": no quorum"
		    : leader == 0          ? "; no leader"
		    : split                ? "; they name different leaders"
					   : "; a leader"));
}

/* ---- the registrar: a real OPTIONS, any final answer ---- */

static int
sip_options(struct check_probe *p, char *err, size_t errlen, int *code)
{
	struct sockaddr_in to = {0}, me = {0};
	socklen_t melen = sizeof(me);
	char msg[1024], in[PROBE_SIP_MAX + 1], callid[40], branch[24], tag[16];
	uint64_t start = time_mono_ms(), resend = start;
	int fd = -1, n, rc = -1;
	unsigned char r[12];

	*code = 0;
	to.sin_family = AF_INET;
	to.sin_port = htons((uint16_t)p->registrar_port);
	if (inet_pton(AF_INET, p->registrar_host, &to.sin_addr) != 1) {
		snprintf(err, errlen, "'%s' is not an IPv4 address",
		    p->registrar_host);
		return -1;
	}
	me.sin_family = AF_INET;
	if (inet_pton(AF_INET, p->address, &me.sin_addr) != 1 ||
	    (fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&me, &melen) != 0) {
		snprintf(err, errlen, "no UDP socket on %s: %s", p->address,
		    strerror(errno));
		goto out;
	}
	randombytes_buf(r, sizeof(r));
	snprintf(callid, sizeof(callid), "check-%02x%02x%02x%02x%02x%02x", r[0],
	    r[1], r[2], r[3], r[4], r[5]);
	snprintf(branch, sizeof(branch), "z9hG4bK%02x%02x%02x%02x", r[6], r[7],
	    r[8], r[9]);
	snprintf(tag, sizeof(tag), "%02x%02x", r[10], r[11]);
	n = snprintf(msg, sizeof(msg),
	    "OPTIONS sip:%s:%d SIP/2.0\r\n"
	    "Via: SIP/2.0/UDP %s:%d;branch=%s;rport\r\n"
	    "Max-Forwards: 70\r\n"
	    "From: <sip:check@%s>;tag=%s\r\n"
	    "To: <sip:%s:%d>\r\n"
	    "Call-ID: %s@%s\r\n"
	    "CSeq: 1 OPTIONS\r\n"
	    "User-Agent: understudy-check\r\n"
	    "Content-Length: 0\r\n\r\n",
	    p->registrar_host, p->registrar_port, p->address,
	    ntohs(me.sin_port), branch, p->address, tag, p->registrar_host,
	    p->registrar_port, callid, p->address);
	for (;;) {
		uint64_t now = time_mono_ms();
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		ssize_t got;

		if (now - start >= CHECK_PROBE_MS) {
			snprintf(err, errlen,
			    "no answer to OPTIONS within %d ms",
			    CHECK_PROBE_MS);
			goto out;
		}
		if (now >= resend) {
			/* UDP: sent again as a client transaction would */
			sendto(fd, msg, (size_t)n, 0, (struct sockaddr *)&to,
			    sizeof(to));
			resend = now + 500;
		}
		if (poll(&pf, 1, (int)(resend - now)) <= 0)
			continue;
		got = recv(fd, in, PROBE_SIP_MAX, 0);
		if (got <= 0) {
			if (got < 0 && errno == ECONNREFUSED) {
				snprintf(err, errlen,
				    "nothing listens there (ICMP port "
				    "unreachable)");
				goto out;
			}
			continue;
		}
		in[got] = '\0';
		if (strncmp(in, "SIP/2.0 ", 8) != 0 ||
		    strstr(in, callid) == NULL)
			continue; /* not the answer to this one */
		*code = (int)strtol(in + 8, NULL, 10);
		if (*code >= 200) {
			rc = 0;
			goto out;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

static void
probe_registrar(struct check_probe *p, json_t *rows)
{
	char err[256], target[300];
	int code;
	uint64_t t0 = time_mono_ms();
	size_t i;
	json_t *rp;

	if (p->registrar_host == NULL) {
		json_array_append_new(rows,
		    check_row("links", "registrar", p->self, true,
			"no registrar in the config: nothing registers"));
		return;
	}
	snprintf(target, sizeof(target), "%s:%d", p->registrar_host,
	    p->registrar_port);
	if (sip_options(p, err, sizeof(err), &code) != 0)
		json_array_append_new(rows,
		    link_row(check_row("links", "registrar", p->self, false,
				 "%s: %s", target, err),
			target, t0));
	else
		json_array_append_new(rows,
		    link_row(check_row("links", "registrar", p->self, true,
				 "%s answers OPTIONS (%d) in %" PRIu64 " ms",
				 target, code, time_mono_ms() - t0),
			target, t0));
	json_array_foreach (p->route_points, i, rp) {
		const char *name =
		    json_string_value(json_object_get(rp, "route_point"));
		const char *post =
		    json_string_value(json_object_get(rp, "post"));
		bool reg = json_is_true(json_object_get(rp, "registered"));
		json_int_t left =
		    json_integer_value(json_object_get(rp, "expires_in_ms"));
		json_t *row;

		row = reg && left > 0
		    ? check_row("links", "route point", p->self, true,
			  "%s of post %s: registered by its owner %s, %lld s "
			  "left",
			  name, post, p->self, (long long)left / 1000)
		    : check_row("links", "route point", p->self, false,
			  "%s of post %s: %s, though this server owns the "
			  "post",
			  name, post,
			  reg ? "its registration expired"
			      : "not registered at the registrar");
		json_object_set_new(row, "route_point", json_string(name));
		json_object_set_new(row, "target", json_string(name));
		json_array_append_new(rows, row);
	}
}

/* ---- NATS: JetStream, the streams, every record copy ---- */

/* Connect to one of urls (n of them), without reconnecting. */
static natsStatus
nats_connect(struct check_probe *p, char **urls, size_t n, natsConnection **nc)
{
	natsOptions *o = NULL;
	natsStatus st = natsOptions_Create(&o);

	if (st == NATS_OK)
		st = natsOptions_SetServers(o, (const char **)urls, (int)n);
	if (st == NATS_OK)
		st = natsOptions_SetName(o, "understudy-check");
	if (st == NATS_OK)
		st = natsOptions_SetTimeout(o, CHECK_PROBE_MS);
	if (st == NATS_OK)
		st = natsOptions_SetAllowReconnect(o, false);
	if (st == NATS_OK && p->nats_ca) {
		st = natsOptions_SetSecure(o, true);
		if (st == NATS_OK)
			st =
			    natsOptions_SetCATrustedCertificates(o, p->nats_ca);
	}
	if (st == NATS_OK && p->nats_cert && p->nats_key)
		st = natsOptions_SetCertificatesChain(
		    o, p->nats_cert, p->nats_key);
	if (st == NATS_OK && p->nats_token)
		st = natsOptions_SetToken(o, p->nats_token);
	if (st == NATS_OK && p->nats_user && p->nats_password)
		st = natsOptions_SetUserInfo(o, p->nats_user, p->nats_password);
	if (st == NATS_OK)
		st = natsConnection_Connect(nc, o);
	natsOptions_Destroy(o);
	return st;
}

static const char *
nats_why(natsStatus st)
{
	const char *last = nats_GetLastError(NULL);

	return last && *last ? last : natsStatus_GetText(st);
}

/*
 * The copy of server (its durable consumer rec_<server>): records the
 * stream holds past the consumer's ack floor, and the age of the first.
 */
static json_t *
probe_copy(jsCtx *js, const char *stream, const jsStreamInfo *si,
    const char *server, int64_t now_ms)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsMsg *m = NULL;
	char durable[80];
	uint64_t floor, lag = 0, first;
	int64_t age_ms = 0;
	natsStatus st;
	json_t *row;

	snprintf(durable, sizeof(durable), "rec_%s", server);
	st = js_GetConsumerInfo(&ci, js, stream, durable, NULL, &jerr);
	if (st != NATS_OK)
		return check_row("archiving", "records copy", server, false,
		    "consumer %s of %s: %s", durable, stream,
		    jerr == JSConsumerNotFoundErr
			? "none: this server never copied the records"
			: nats_why(st));
	floor = ci->AckFloor.Stream;
	jsConsumerInfo_Destroy(ci);
	first = si->State.FirstSeq;
	if (floor + 1 < first)
		floor = first ? first - 1 : 0; /* aged out: not owed */
	if (si->State.LastSeq > floor)
		lag = si->State.LastSeq - floor;
	if (lag > 0 &&
	    js_GetMsg(&m, js, stream, floor + 1, NULL, &jerr) == NATS_OK) {
		age_ms = now_ms - natsMsg_GetTime(m) / 1000000;
		if (age_ms < 0)
			age_ms = 0;
	}
	natsMsg_Destroy(m);
	if (lag == 0)
		row = check_row("archiving", "records copy", server, true,
		    "caught up (%" PRIu64 " records in %s)", si->State.Msgs,
		    stream);
	else
		row = check_row("archiving", "records copy", server,
		    age_ms <= CHECK_LAG_MAX_MS,
		    "%" PRIu64 " records behind, the oldest %" PRId64
		    " s old (copied up to sequence %" PRIu64 " of %s)",
		    lag, age_ms / 1000, floor, stream);
	json_object_set_new(row, "lag_records", json_integer((json_int_t)lag));
	json_object_set_new(
	    row, "lag_seconds", json_real((double)age_ms / 1000));
	return row;
}

static void
probe_nats(struct check_probe *p, json_t *rows, int64_t now_ms)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	jsOptions jo;
	jsAccountInfo *ai = NULL;
	jsStreamInfo *si = NULL, *di = NULL;
	jsErrCode jerr = 0;
	char rec[160], desks[160];
	natsStatus st;
	json_t *row;

	if (p->n_nats == 0) {
		json_array_append_new(rows,
		    check_row("links", "nats", p->self, false,
			"no messaging URL in the config"));
		return;
	}
	if ((st = nats_connect(p, p->nats, p->n_nats, &nc)) != NATS_OK) {
		json_array_append_new(rows,
		    check_row("links", "nats", p->self, false,
			"%s does not answer: %s", p->nats[0], nats_why(st)));
		goto out;
	}
	jsOptions_Init(&jo);
	jo.Wait = CHECK_PROBE_MS;
	if ((st = natsConnection_JetStream(&js, nc, &jo)) == NATS_OK)
		st = js_GetAccountInfo(&ai, js, NULL, &jerr);
	if (st != NATS_OK) {
		json_array_append_new(rows,
		    check_row("links", "nats", p->self, false,
			"%s answers, but not JetStream: %s",
			natsConnection_GetConnectedUrl(nc, rec, sizeof(rec)) ==
				NATS_OK
			    ? rec
			    : p->nats[0],
			nats_why(st)));
		goto out;
	}
	json_array_append_new(rows,
	    check_row("links", "nats", p->self, true,
		"answers with JetStream (%" PRId64 " streams, %" PRIu64
		" bytes stored)",
		(int64_t)ai->Streams, ai->Store));
	snprintf(rec, sizeof(rec), STREAM_PREFIX "%s", p->cluster);
	snprintf(desks, sizeof(desks), "US_%s", p->cluster);
	st = js_GetStreamInfo(&si, js, rec, NULL, &jerr);
	json_array_append_new(rows,
	    st == NATS_OK
		? check_row("links", "records stream", p->self, true,
		      "%s holds %" PRIu64 " records", rec, si->State.Msgs)
		: check_row("links", "records stream", p->self, false, "%s: %s",
		      rec,
		      jerr == JSStreamNotFoundErr
			  ? "missing (NATS lost its store?)"
			  : nats_why(st)));
	/* the desks' stream is made by the first desk that logs in */
	jerr = 0;
	st = js_GetStreamInfo(&di, js, desks, NULL, &jerr);
	if (st == NATS_OK)
		row = check_row("links", "desks stream", p->self, true,
		    "%s holds %" PRIu64 " messages", desks, di->State.Msgs);
	else if (jerr == JSStreamNotFoundErr)
		row = check_row("links", "desks stream", p->self, true,
		    "%s: not made yet (no desk has logged in)", desks);
	else
		row = check_row("links", "desks stream", p->self, false,
		    "%s: %s", desks, nats_why(st));
	json_array_append_new(rows, row);
	if (si)
		for (size_t i = 0; i < p->n_servers; i++)
			json_array_append_new(rows,
			    probe_copy(js, rec, si, p->servers[i], now_ms));
out:
	jsAccountInfo_Destroy(ai);
	jsStreamInfo_Destroy(si);
	jsStreamInfo_Destroy(di);
	jsCtx_Destroy(js);
	if (nc) {
		natsConnection_Close(nc);
		natsConnection_Destroy(nc);
	}
}

/* Each NATS server of the config on its own: it answers, with JetStream. */
static void
probe_nats_servers(struct check_probe *p, json_t *rows)
{
	for (size_t i = 0; i < p->n_nats; i++) {
		natsConnection *nc = NULL;
		jsCtx *js = NULL;
		jsOptions jo;
		jsAccountInfo *ai = NULL;
		jsErrCode jerr = 0;
		uint64_t t0 = time_mono_ms();
		natsStatus st = nats_connect(p, &p->nats[i], 1, &nc);
		json_t *row;

		if (st == NATS_OK) {
			jsOptions_Init(&jo);
			jo.Wait = CHECK_PROBE_MS;
			if ((st = natsConnection_JetStream(&js, nc, &jo)) ==
			    NATS_OK)
				st = js_GetAccountInfo(&ai, js, NULL, &jerr);
			row = st == NATS_OK
			    ? check_row("links", "nats server", p->self, true,
				  "%s answers with JetStream", p->nats[i])
			    : check_row("links", "nats server", p->self, false,
				  "%s answers, but not JetStream: %s",
				  p->nats[i], nats_why(st));
		} else {
			row = check_row("links", "nats server", p->self, false,
			    "%s does not answer: %s", p->nats[i], nats_why(st));
		}
		json_array_append_new(rows, link_row(row, p->nats[i], t0));
		jsAccountInfo_Destroy(ai);
		jsCtx_Destroy(js);
		if (nc) {
			natsConnection_Close(nc);
			natsConnection_Destroy(nc);
		}
	}
}

/* ---- every other server's API ---- */

static void
probe_peers(struct check_probe *p, json_t *rows)
{
	for (size_t i = 0; i < p->n_peers; i++) {
		char url[512], err[256];
		long status = 0;
		json_t *ans = NULL, *row;
		const char *why;

		uint64_t t0 = time_mono_ms();

		snprintf(url, sizeof(url), "%s/health", p->peer_urls[i]);
		if (check_http("GET", url, NULL, NULL, p->api_ca, NULL, NULL,
			CHECK_PROBE_MS, &status, &ans, err, sizeof(err)) != 0) {
			row = check_row("links", "api of peer", p->self, false,
			    "%s at %s does not answer: %s", p->peers[i],
			    p->peer_urls[i], err);
		} else {
			why = json_string_value(json_object_get(ans, "reason"));
			row = check_row("links", "api of peer", p->self, true,
			    "%s answers (%ld%s%s)", p->peers[i], status,
			    why ? ": " : "", why ? why : "");
		}
		json_object_set_new(row, "peer", json_string(p->peers[i]));
		json_array_append_new(rows, link_row(row, p->peers[i], t0));
		json_decref(ans);
	}
}

/* ---- the state directory ---- */

static void
probe_disk(struct check_probe *p, json_t *rows)
{
	struct statvfs vf;
	unsigned long long total, avail;
	double pct;
	json_t *row;

	if (statvfs(p->state_dir, &vf) != 0) {
		json_array_append_new(rows,
		    check_row("disk", "state dir", p->self, false, "%s: %s",
			p->state_dir, strerror(errno)));
		return;
	}
	total = (unsigned long long)vf.f_blocks * vf.f_frsize;
	avail = (unsigned long long)vf.f_bavail * vf.f_frsize;
	pct = total ? 100.0 * (double)avail / (double)total : 0;
	row = check_row("disk", "state dir", p->self,
	    avail >= (unsigned long long)p->min_free_bytes,
	    "%s: %.1f GiB free of %.1f GiB (%.0f%%; it fails under %.1f GiB, "
	    "check_disk_min_free)",
	    p->state_dir, (double)avail / (1 << 30), (double)total / (1 << 30),
	    pct, (double)p->min_free_bytes / (1 << 30));
	json_object_set_new(row, "free_bytes", json_integer((json_int_t)avail));
	json_object_set_new(row, "free_percent", json_real(pct));
	json_array_append_new(rows, row);
}

json_t *
check_links_run(struct check_probe *p)
{
	json_t *rows = json_array();

	if (rows == NULL)
		return NULL;
	probe_etcd(p, rows);
	probe_registrar(p, rows);
	probe_nats_servers(p, rows);
	probe_peers(p, rows);
	return rows;
}

json_t *
check_probe_run(struct check_probe *p)
{
	json_t *rows = json_array();

	if (rows == NULL)
		return NULL;
	probe_etcd(p, rows);
	probe_registrar(p, rows);
	probe_nats(p, rows, time_wall_ms());
	probe_peers(p, rows);
	probe_disk(p, rows);
	if (p->errors_row)
		json_array_append(rows, p->errors_row);
	if (p->config_rows)
		json_array_extend(rows, p->config_rows);
	return rows;
}
