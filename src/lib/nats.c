/*
 * The desk's data plane: channels on NATS JetStream.
 *
 * One stream per cluster, US_<cluster>, on the subjects us.<cluster>.ch.>,
 * file storage, with a dedupe window of an hour. Sending: every message
 * is a row of the outbox first, with an id (desk, profile salt, counter)
 * that becomes the publish's Msg-Id; it leaves the outbox when JetStream
 * acknowledged it, so a resend after a timeout or a restart is dropped by
 * the stream. Receiving: one ordered consumer per joined channel, from
 * the sequence after the last one delivered; that sequence is stored per
 * channel as each message is handed to the program, and anything at or
 * below it is dropped. Together: each message once, in order.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "lib.h"

#define NATS_DUPLICATES_NS (3600LL * 1000 * 1000 * 1000)
#define NATS_FLUSH_MAX 100
#define NATS_DELIVER_MAX 200

static void
stream_name(const us_desk *d, char *buf, size_t len)
{
	snprintf(buf, len, "US_%s", d->cluster);
}

static void
unsubscribe_all(us_desk *d)
{
	for (size_t i = 0; i < d->n_subs; i++)
		natsSubscription_Destroy(d->subs[i].sub);
	d->n_subs = 0;
}

void
lib_nats_close(us_desk *d)
{
	unsubscribe_all(d);
	jsCtx_Destroy(d->js);
	d->js = NULL;
	if (d->nc) {
		natsConnection_Close(d->nc);
		natsConnection_Destroy(d->nc);
		d->nc = NULL;
	}
	d->nats_ok = false;
}

static void
secret_free(char *s)
{
	if (s) {
		sodium_memzero(s, strlen(s));
		free(s);
	}
}

void
lib_nats_configure(us_desk *d)
{
	char *text = lib_kv_get(d, "messaging");
	char *auth = lib_kv_get(d, "messaging_auth");
	json_t *arr = text ? json_loads(text, 0, NULL) : NULL;
	bool same = (int)json_array_size(arr) == d->n_nats;
	size_t i;
	json_t *u;

	free(text);
	json_array_foreach (arr, i, u)
		same = same && (int)i < d->n_nats &&
		    strcmp(d->nats_urls[i], json_string_value(u)) == 0;
	/* new credentials or a new CA: connect again with them */
	same = same &&
	    (auth == NULL ? d->nats_auth == NULL
			  : d->nats_auth && strcmp(auth, d->nats_auth) == 0);
	if (same) {
		secret_free(auth);
		json_decref(arr);
		return;
	}
	lib_nats_close(d);
	secret_free(d->nats_auth);
	d->nats_auth = auth;
	d->nats_error[0] = '\0';
	for (int k = 0; k < d->n_nats; k++)
		free(d->nats_urls[k]);
	d->n_nats = 0;
	json_array_foreach (arr, i, u)
		if (d->n_nats < LIB_NATS_MAX && json_is_string(u))
			d->nats_urls[d->n_nats++] =
			    strdup(json_string_value(u));
	json_decref(arr);
	d->next_nats = 0;
}

void
lib_nats_channels_changed(us_desk *d)
{
	d->resubscribe = true;
}

/*
 * The stream this desk's channels live in: created if it is not there,
 * and compared with the one this desk knew. A stream created since (a
 * NATS server back without its store, a new node) means the messages
 * the old one held are gone: the desk says so, and its channels go on
 * from the start of the new stream instead of waiting for sequences it
 * will never have. 0, or -1 when NATS does not answer.
 */
static int
check_stream(us_desk *d)
{
	char name[100], subject[120], created[32], *known;
	const char *subjects[1] = {subject};
	jsStreamInfo *si = NULL;
	jsStreamConfig sc;
	jsErrCode jerr = 0;
	natsStatus s;

	stream_name(d, name, sizeof(name));
	if (js_GetStreamInfo(&si, d->js, name, NULL, &jerr) != NATS_OK) {
		snprintf(subject, sizeof(subject), "us.%s.ch.>", d->cluster);
		jsStreamConfig_Init(&sc);
		sc.Name = name;
		sc.Subjects = subjects;
		sc.SubjectsLen = 1;
		sc.Storage = js_FileStorage;
		sc.Duplicates = NATS_DUPLICATES_NS;
		s = js_AddStream(&si, d->js, &sc, NULL, &jerr);
		/* another desk may have made it meanwhile */
		if (s != NATS_OK && jerr == JSStreamNameExistErr)
			s = js_GetStreamInfo(&si, d->js, name, NULL, &jerr);
		if (s != NATS_OK) {
			jsStreamInfo_Destroy(si);
			return -1;
		}
	}
	snprintf(created, sizeof(created), "%lld", (long long)si->Created);
	jsStreamInfo_Destroy(si);
	known = lib_kv_get(d, "stream_created");
	if (known && strcmp(known, created) != 0) {
		sqlite3_stmt *st = lib_prep(d,
		    "UPDATE channels SET last_seq = 0 WHERE last_seq > 0 "
		    "RETURNING name");
		char lost[512] = "";

		while (st && sqlite3_step(st) == SQLITE_ROW)
			snprintf(lost + strlen(lost),
			    sizeof(lost) - strlen(lost), "%s%s",
			    lost[0] ? ", " : "",
			    (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
		lib_emit(d, US_EV_NOTICE, "store_lost",
		    "the messaging store was lost (NATS came back without "
		    "it): messages it held%s%s may be missing; channels go on "
		    "from the new store",
		    lost[0] ? " for " : "", lost);
		d->resubscribe = true;
	}
	free(known);
	lib_kv_put(d, "stream_created", created);
	return 0;
}

/*
 * What the session says NATS needs: TLS with its CA (libnats then checks
 * each server's chain and its URL's host), a client certificate, a
 * token or a user and password. NATS_OK, or the failing status.
 */
static natsStatus
apply_auth(us_desk *d, natsOptions *o)
{
	json_t *a = d->nats_auth ? json_loads(d->nats_auth, 0, NULL) : NULL;
	const char *ca = json_string_value(json_object_get(a, "ca"));
	const char *cert = json_string_value(json_object_get(a, "cert"));
	const char *key = json_string_value(json_object_get(a, "key"));
	const char *token = json_string_value(json_object_get(a, "token"));
	const char *user = json_string_value(json_object_get(a, "user"));
	const char *pw = json_string_value(json_object_get(a, "password"));
	natsStatus s = NATS_OK;

	if (d->nats_auth && a == NULL)
		s = NATS_INVALID_ARG;
	if (s == NATS_OK && ca) {
		s = natsOptions_SetSecure(o, true);
		if (s == NATS_OK)
			s = natsOptions_SetCATrustedCertificates(o, ca);
	}
	if (s == NATS_OK && cert && key)
		s = natsOptions_SetCertificatesChain(o, cert, key);
	if (s == NATS_OK && token)
		s = natsOptions_SetToken(o, token);
	if (s == NATS_OK && user && pw)
		s = natsOptions_SetUserInfo(o, user, pw);
	json_decref(a);
	return s;
}

/* Tell the program why NATS refused, once per new reason. */
static void
connect_failed(us_desk *d, natsStatus s)
{
	const char *last = nats_GetLastError(NULL);
	char why[sizeof(d->nats_error)];

	snprintf(why, sizeof(why), "%s",
	    last && *last ? last : natsStatus_GetText(s));
	if (strcmp(why, d->nats_error) != 0) {
		snprintf(d->nats_error, sizeof(d->nats_error), "%s", why);
		lib_emit(d, US_EV_NOTICE, "messaging_error",
		    "cannot connect to messaging: %s", why);
	}
	d->nc = NULL;
	d->nats_fails++;
	d->next_nats = time_mono_ms() + lib_backoff_ms(d, d->nats_fails);
}

static void
connect_now(us_desk *d)
{
	natsOptions *o = NULL;
	natsStatus s;
	jsOptions jo;

	s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetServers(
		    o, (const char **)d->nats_urls, d->n_nats);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 250);
	if (s == NATS_OK)
		s = apply_auth(d, o);
	if (s == NATS_OK)
		s = natsConnection_Connect(&d->nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		connect_failed(d, s);
		return;
	}
	d->nats_error[0] = '\0';
	jsOptions_Init(&jo);
	jo.Wait = 2000;
	if (natsConnection_JetStream(&d->js, d->nc, &jo) != NATS_OK ||
	    check_stream(d) != 0) {
		lib_nats_close(d);
		d->nats_fails++;
		d->next_nats =
		    time_mono_ms() + lib_backoff_ms(d, d->nats_fails);
		return;
	}
	d->nats_fails = 0;
	d->resubscribe = true;
}

static int64_t
last_seq(us_desk *d, const char *channel)
{
	sqlite3_stmt *st = lib_prep(d,
	    "SELECT last_seq FROM channels WHERE "
	    "name = ?");
	int64_t v = 0;

	if (st == NULL)
		return 0;
	sqlite3_bind_text(st, 1, channel, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void
set_last_seq(us_desk *d, const char *channel, int64_t seq)
{
	sqlite3_stmt *st = lib_prep(d,
	    "UPDATE channels SET last_seq = ? "
	    "WHERE name = ?");

	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, seq);
	sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
	sqlite3_step(st);
	sqlite3_finalize(st);
}

void
lib_nats_mark_start(us_desk *d, const char *channel)
{
	char name[100];
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	int64_t seq = 0;
	sqlite3_stmt *st;

	if (!d->nats_ok)
		return;
	stream_name(d, name, sizeof(name));
	if (js_GetStreamInfo(&si, d->js, name, NULL, &jerr) == NATS_OK) {
		seq = (int64_t)si->State.LastSeq;
		jsStreamInfo_Destroy(si);
	}
	if ((st = lib_prep(d,
		 "INSERT INTO channels (name, joined, subject, "
		 "last_seq) VALUES (?1, 0, '', ?2) ON CONFLICT "
		 "(name) DO UPDATE SET last_seq = max(last_seq, "
		 "?2)"))) {
		sqlite3_bind_text(st, 1, channel, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, seq);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
}

/* Subscriptions follow the joined channels. */
static void
resubscribe(us_desk *d)
{
	sqlite3_stmt *st = lib_prep(d,
	    "SELECT name, subject, last_seq FROM "
	    "channels WHERE joined = 1");

	unsubscribe_all(d);
	d->resubscribe = false;
	if (st == NULL)
		return;
	while (sqlite3_step(st) == SQLITE_ROW && d->n_subs < LIB_CHANNELS_MAX) {
		struct lib_channel *c = &d->subs[d->n_subs];
		jsSubOptions so;
		jsErrCode jerr = 0;

		snprintf(c->name, sizeof(c->name), "%s",
		    (const char *)sqlite3_column_text(st, 0));
		snprintf(c->subject, sizeof(c->subject), "%s",
		    (const char *)sqlite3_column_text(st, 1));
		jsSubOptions_Init(&so);
		so.Ordered = true;
		so.Config.DeliverPolicy = js_DeliverByStartSequence;
		so.Config.OptStartSeq =
		    (uint64_t)sqlite3_column_int64(st, 2) + 1;
		if (js_SubscribeSync(&c->sub, d->js, c->subject, NULL, &so,
			&jerr) == NATS_OK)
			d->n_subs++;
		else
			d->resubscribe = true; /* try again at the next work */
	}
	sqlite3_finalize(st);
}

/* Hand what came to the program, each message once. */
static void
deliver(us_desk *d)
{
	for (size_t i = 0; i < d->n_subs; i++) {
		struct lib_channel *c = &d->subs[i];
		int64_t last = last_seq(d, c->name);

		for (int n = 0; n < NATS_DELIVER_MAX; n++) {
			natsMsg *m = NULL;
			jsMsgMetaData *meta = NULL;
			struct us_event *ev;
			json_t *o;
			int64_t seq;

			if (natsSubscription_NextMsg(&m, c->sub, 1) != NATS_OK)
				break;
			if (natsMsg_GetMetaData(&meta, m) != NATS_OK) {
				natsMsg_Destroy(m);
				continue; /* not a stream message */
			}
			seq = (int64_t)meta->Sequence.Stream;
			jsMsgMetaData_Destroy(meta);
			if (seq <= last || (ev = lib_emit_slot(d)) == NULL) {
				natsMsg_Destroy(m);
				continue; /* seen already, or no room: later */
			}
			o = json_loadb(natsMsg_GetData(m),
			    (size_t)natsMsg_GetDataLength(m), 0, NULL);
			ev->type = US_EV_MESSAGE;
			ev->seq = (uint64_t)seq;
			snprintf(
			    ev->channel, sizeof(ev->channel), "%s", c->name);
			snprintf(ev->from, sizeof(ev->from), "%s",
			    json_string_value(json_object_get(o, "from"))
				? json_string_value(json_object_get(o, "from"))
				: "?");
			snprintf(ev->id, sizeof(ev->id), "%s",
			    json_string_value(json_object_get(o, "id"))
				? json_string_value(json_object_get(o, "id"))
				: "");
			snprintf(ev->text, sizeof(ev->text), "%s",
			    json_string_value(json_object_get(o, "text"))
				? json_string_value(json_object_get(o, "text"))
				: "");
			json_decref(o);
			natsMsg_Destroy(m);
			last = seq;
			set_last_seq(d, c->name, seq);
		}
	}
}

/* Publish the outbox, oldest first, until one does not go. */
static void
flush(us_desk *d)
{
	for (int n = 0; n < NATS_FLUSH_MAX; n++) {
		sqlite3_stmt *st = lib_prep(d,
		    "SELECT n, id, channel, payload "
		    "FROM outbox ORDER BY n LIMIT 1");
		char subject[200], id[96];
		jsPubOptions po;
		jsPubAck *ack = NULL;
		jsErrCode jerr = 0;
		int64_t row;
		char *payload;
		natsStatus s;

		if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
			sqlite3_finalize(st);
			return;
		}
		row = sqlite3_column_int64(st, 0);
		snprintf(id, sizeof(id), "%s", sqlite3_column_text(st, 1));
		snprintf(subject, sizeof(subject), "us.%s.ch.%s", d->cluster,
		    (const char *)sqlite3_column_text(st, 2));
		payload = strdup((const char *)sqlite3_column_text(st, 3));
		sqlite3_finalize(st);
		if (payload == NULL)
			return;
		jsPubOptions_Init(&po);
		po.MsgId = id;
		po.MaxWait = 2000;
		s = js_Publish(&ack, d->js, subject, payload,
		    (int)strlen(payload), &po, &jerr);
		free(payload);
		jsPubAck_Destroy(ack);
		if (s == NATS_NO_RESPONDERS || jerr == JSStreamNotFoundErr) {
			/* no stream takes the subject: NATS lost its store */
			check_stream(d);
			return;
		}
		if (s != NATS_OK)
			return; /* stays; the same id goes again later */
		if ((st = lib_prep(d, "DELETE FROM outbox WHERE n = ?"))) {
			sqlite3_bind_int64(st, 1, row);
			sqlite3_step(st);
			sqlite3_finalize(st);
		}
	}
}

void
lib_nats_work(us_desk *d)
{
	if (d->n_nats == 0 || !d->cluster[0])
		return;
	if (d->nc == NULL && time_mono_ms() >= d->next_nats)
		connect_now(d);
	d->nats_ok =
	    d->nc && natsConnection_Status(d->nc) == NATS_CONN_STATUS_CONNECTED;
	/* back after a disconnect: the stream may be a new one */
	if (d->nats_ok && !d->nats_was_ok && d->js)
		check_stream(d);
	if (d->nats_ok != d->nats_was_ok) {
		lib_emit(d, US_EV_NOTICE, "messaging",
		    d->nats_ok ? "messaging up: channels active"
			       : "messaging down: channels paused, sending "
				 "queued");
		d->nats_was_ok = d->nats_ok;
	}
	if (!d->nats_ok)
		return;
	if (d->resubscribe)
		resubscribe(d);
	flush(d);
	deliver(d);
}

void
lib_nats_wait(us_desk *d, int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	if (ms <= 0)
		return;
	/* an event that the held request brings ends the wait at once */
	if (d->ev_busy &&
	    curl_multi_poll(d->multi, NULL, 0, ms, NULL) == CURLM_OK)
		return;
	nanosleep(&ts, NULL);
}

bool
us_messaging(const us_desk *d)
{
	return d->nats_ok;
}

int
us_send(us_desk *d, const char *channel, const char *text)
{
	sqlite3_stmt *st;
	char id[96], *salt, *payload;
	int64_t n = 0;
	json_t *o;
	int rc;

	if (!d->logged_in)
		return US_EUNAUTHORIZED;
	if (text == NULL || strlen(text) > US_TEXT_MAX)
		return US_ETOOBIG;
	if ((st = lib_prep(d, "SELECT joined FROM channels WHERE name = ?"))) {
		sqlite3_bind_text(st, 1, channel, -1, SQLITE_STATIC);
		rc =
		    sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
		if (!rc) {
			snprintf(d->why, sizeof(d->why),
			    "channel %s is not joined", channel);
			return US_ENOTFOUND;
		}
	}
	if ((salt = lib_kv_get(d, "salt")) == NULL) {
		unsigned char raw[8];
		char hex[17];

		randombytes_buf(raw, sizeof(raw));
		sodium_bin2hex(hex, sizeof(hex), raw, sizeof(raw));
		lib_kv_put(d, "salt", hex);
		salt = strdup(hex);
	}
	if (lib_sql(d, "BEGIN IMMEDIATE") != 0) {
		free(salt);
		return US_EIO;
	}
	if ((st = lib_prep(d, "SELECT coalesce(max(n), 0) + 1 FROM outbox"))) {
		if (sqlite3_step(st) == SQLITE_ROW)
			n = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	{
		char *c = lib_kv_get(d, "sent");
		int64_t sent = c ? strtoll(c, NULL, 10) + 1 : 1;
		char num[32];

		free(c);
		if (sent > n)
			n = sent;
		snprintf(num, sizeof(num), "%lld", (long long)n);
		lib_kv_put(d, "sent", num);
	}
	snprintf(id, sizeof(id), "%s-%s-%lld", d->desk_id, salt ? salt : "",
	    (long long)n);
	free(salt);
	o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", id, "from", d->user,
	    "desk", d->desk_id, "channel", channel, "text", text);
	payload = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	rc = US_EIO;
	if (payload &&
	    (st = lib_prep(d,
		 "INSERT INTO outbox (id, channel, "
		 "payload) VALUES (?, ?, ?)"))) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, payload, -1, SQLITE_STATIC);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : US_EIO;
		sqlite3_finalize(st);
	}
	free(payload);
	if (rc != 0 || lib_sql(d, "COMMIT") != 0) {
		lib_sql(d, "ROLLBACK");
		return US_EIO;
	}
	if (d->nats_ok)
		flush(d);
	return 0;
}

long
us_outbox(us_desk *d)
{
	sqlite3_stmt *st = lib_prep(d, "SELECT count(*) FROM outbox");
	long n = -1;

	if (st && sqlite3_step(st) == SQLITE_ROW)
		n = (long)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}
