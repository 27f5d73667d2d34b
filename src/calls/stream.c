/*
 * The records stream (see calls.h): one thread with its own NATS
 * connection, because every JetStream call blocks until its answer and
 * only a thread may wait that long. The loop and the thread meet in this
 * struct, under its mutex: the loop queues publishes and says what it
 * committed; the thread hands back acks, refusals, fetched records and
 * its state, then wakes the loop with uv_async_send.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "calls.h"

#define STREAM_FETCH 1000 /* records fetched at once */
#define STREAM_IDLE_MS 100 /* nothing to do: look again after */
#define STREAM_WAIT_MS 2000 /* a publish, a fetch, an API call */
#define STREAM_STALLS 3 /* timeouts in a row: a new connection */
#define STREAM_DUPLICATES_S 3600

struct stream_pub {
	char call[64];
	char subject[200];
	char *payload;
};

struct stream {
	uv_loop_t *loop;
	uv_async_t wake;
	stream_cb cb;
	void *arg;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool started;
	bool wake_open;
	/* set at creation, read by the thread only */
	char **urls;
	int n_urls;
	char *ca, *cert, *key, *token, *user, *password;
	char name[120]; /* the stream */
	char subjects[160]; /* us.<cluster>.rec.> */
	char prefix[160]; /* us.<cluster>.rec. */
	char durable[80];
	int64_t max_age_ns;
	/* the thread's own */
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub;
	natsMsgList held; /* fetched, acked once the loop committed them */
	uint64_t held_last;
	int stalls;
	int fails;
	/* shared, under mu */
	bool stop;
	bool resync; /* the stream's config changed: ensure it again */
	struct stream_pub queue[STREAM_QUEUE];
	size_t n_queue;
	uint64_t start_seq; /* the first sequence the copy lacks */
	int64_t created; /* the stream this server copied from */
	uint64_t committed; /* the loop's copy holds everything to here */
	struct stream_state out;
};

static void
out_reset(struct stream_state *o)
{
	o->acked = json_array();
	o->refused = json_array();
	o->records = json_array();
}

static void
wake_cb(uv_async_t *h)
{
	struct stream *s = h->data;
	struct stream_state o;

	/* take what came; the state stays for the next look */
	pthread_mutex_lock(&s->mu);
	o = s->out;
	o.n_queue = s->n_queue;
	out_reset(&s->out);
	pthread_mutex_unlock(&s->mu);
	s->cb(&o, s->arg);
	json_decref(o.acked);
	json_decref(o.refused);
	json_decref(o.records);
}

/* Tell the loop (with mu held). */
static void
tell(struct stream *s)
{
	uv_async_send(&s->wake);
}

static void
set_error(struct stream *s, const char *what, natsStatus st)
{
	const char *last = nats_GetLastError(NULL);

	pthread_mutex_lock(&s->mu);
	snprintf(s->out.error, sizeof(s->out.error), "%s: %s", what,
	    last && *last ? last : natsStatus_GetText(st));
	s->out.up = false;
	tell(s);
	pthread_mutex_unlock(&s->mu);
}

static void
drop_sub(struct stream *s)
{
	natsMsgList_Destroy(&s->held);
	s->held_last = 0;
	/* destroyed, not unsubscribed: the durable stays for the next run */
	natsSubscription_Destroy(s->sub);
	s->sub = NULL;
}

static void
disconnect(struct stream *s)
{
	natsConnection *nc;

	drop_sub(s);
	s->stalls = 0;
	jsCtx_Destroy(s->js);
	s->js = NULL;
	/* stream_free may close it meanwhile, from the loop */
	pthread_mutex_lock(&s->mu);
	nc = s->nc;
	s->nc = NULL;
	pthread_mutex_unlock(&s->mu);
	if (nc) {
		natsConnection_Close(nc);
		natsConnection_Destroy(nc);
	}
}

static natsStatus
connect_now(struct stream *s)
{
	natsConnection *nc = NULL;
	natsOptions *o = NULL;
	natsStatus st;
	jsOptions jo;

	st = natsOptions_Create(&o);
	if (st == NATS_OK)
		st = natsOptions_SetServers(
		    o, (const char **)s->urls, s->n_urls);
	if (st == NATS_OK)
		st = natsOptions_SetName(o, s->durable);
	if (st == NATS_OK)
		st = natsOptions_SetTimeout(o, 1000);
	if (st == NATS_OK)
		st = natsOptions_SetMaxReconnect(o, -1);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectWait(o, 250);
	if (st == NATS_OK && s->ca) {
		st = natsOptions_SetSecure(o, true);
		if (st == NATS_OK)
			st = natsOptions_SetCATrustedCertificates(o, s->ca);
	}
	if (st == NATS_OK && s->cert && s->key)
		st = natsOptions_SetCertificatesChain(o, s->cert, s->key);
	if (st == NATS_OK && s->token)
		st = natsOptions_SetToken(o, s->token);
	if (st == NATS_OK && s->user && s->password)
		st = natsOptions_SetUserInfo(o, s->user, s->password);
	if (st == NATS_OK)
		st = natsConnection_Connect(&nc, o);
	natsOptions_Destroy(o);
	if (st != NATS_OK)
		return st;
	pthread_mutex_lock(&s->mu);
	if (s->stop) {
		pthread_mutex_unlock(&s->mu);
		natsConnection_Close(nc);
		natsConnection_Destroy(nc);
		return NATS_CONNECTION_CLOSED;
	}
	s->nc = nc;
	pthread_mutex_unlock(&s->mu);
	jsOptions_Init(&jo);
	jo.Wait = STREAM_WAIT_MS;
	return natsConnection_JetStream(&s->js, s->nc, &jo);
}

/*
 * The stream, created where it is not (the first server, or a NATS
 * server back without its store), its retention set to the config's.
 * Its creation time names it: another one than the copy came from means
 * the copy goes on from its start, and the loop hears that records the
 * lost one held may be missing.
 */
static natsStatus
ensure_stream(struct stream *s, int64_t *created, uint64_t *first)
{
	const char *subjects[1] = {s->subjects};
	jsStreamInfo *si = NULL;
	jsStreamConfig sc;
	jsErrCode jerr = 0;
	natsStatus st;

	jsStreamConfig_Init(&sc);
	sc.Name = s->name;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	pthread_mutex_lock(&s->mu);
	sc.MaxAge = s->max_age_ns;
	pthread_mutex_unlock(&s->mu);
	sc.Duplicates = STREAM_DUPLICATES_S * 1000000000LL;
	if (sc.Duplicates > sc.MaxAge)
		sc.Duplicates = sc.MaxAge;
	st = js_GetStreamInfo(&si, s->js, s->name, NULL, &jerr);
	if (st == NATS_OK && si->Config->MaxAge != sc.MaxAge) {
		jsStreamInfo_Destroy(si);
		si = NULL;
		st = js_UpdateStream(&si, s->js, &sc, NULL, &jerr);
	} else if (st != NATS_OK && jerr == JSStreamNotFoundErr) {
		st = js_AddStream(&si, s->js, &sc, NULL, &jerr);
		/* another server may have made it meanwhile */
		if (st != NATS_OK && jerr == JSStreamNameExistErr)
			st = js_GetStreamInfo(&si, s->js, s->name, NULL, &jerr);
	}
	if (st == NATS_OK) {
		*created = si->Created;
		*first = si->State.FirstSeq;
	}
	jsStreamInfo_Destroy(si);
	return st;
}

/*
 * This server's durable consumer, delivering from the first sequence its
 * copy lacks. The copy in SQLite is what counts: a consumer that is
 * elsewhere (a blank disk, a copy restored from a backup) is made again.
 */
static natsStatus
ensure_consumer(struct stream *s, uint64_t start)
{
	jsConsumerInfo *ci = NULL;
	jsConsumerConfig cc;
	jsSubOptions so;
	jsErrCode jerr = 0;
	natsStatus st;
	bool keep = false;

	st = js_GetConsumerInfo(&ci, s->js, s->name, s->durable, NULL, &jerr);
	if (st == NATS_OK) {
		keep = ci->AckFloor.Stream + 1 == start ||
		    (start <= 1 && ci->AckFloor.Stream == 0);
		jsConsumerInfo_Destroy(ci);
		ci = NULL;
		if (!keep)
			js_DeleteConsumer(
			    s->js, s->name, s->durable, NULL, &jerr);
	}
	if (!keep) {
		jsConsumerConfig_Init(&cc);
		cc.Durable = s->durable;
		cc.AckPolicy = js_AckAll;
		cc.AckWait = 30 * 1000000000LL;
		cc.MaxAckPending = 4 * STREAM_FETCH;
		cc.FilterSubject = s->subjects;
		cc.DeliverPolicy =
		    start > 1 ? js_DeliverByStartSequence : js_DeliverAll;
		cc.OptStartSeq = start > 1 ? start : 0;
		st = js_AddConsumer(&ci, s->js, s->name, &cc, NULL, &jerr);
		jsConsumerInfo_Destroy(ci);
		if (st != NATS_OK)
			return st;
	}
	jsSubOptions_Init(&so);
	so.Stream = s->name;
	so.Consumer = s->durable;
	return js_PullSubscribe(
	    &s->sub, s->js, s->subjects, s->durable, NULL, &so, &jerr);
}

/* Connected, with the stream and the consumer: true; else say why. */
static bool
ready(struct stream *s)
{
	int64_t created = 0, known;
	uint64_t start, first = 0;
	natsStatus st;

	if (s->nc && s->stalls >= STREAM_STALLS) {
		/* connected, yet JetStream answers nothing: start over */
		set_error(s, "no answer from JetStream", NATS_TIMEOUT);
		disconnect(s);
	}
	if (s->nc == NULL && (st = connect_now(s)) != NATS_OK) {
		set_error(s, "cannot connect", st);
		disconnect(s);
		return false;
	}
	if (natsConnection_Status(s->nc) != NATS_CONN_STATUS_CONNECTED) {
		pthread_mutex_lock(&s->mu);
		if (s->out.up) {
			s->out.up = false;
			snprintf(s->out.error, sizeof(s->out.error),
			    "disconnected; reconnecting");
			tell(s);
		}
		pthread_mutex_unlock(&s->mu);
		drop_sub(s); /* the server may come back without its store */
		return false;
	}
	pthread_mutex_lock(&s->mu);
	if (s->resync) {
		/* a new retention: the stream is updated, the consumer kept */
		s->resync = false;
		pthread_mutex_unlock(&s->mu);
		drop_sub(s);
	} else {
		pthread_mutex_unlock(&s->mu);
	}
	if (s->sub)
		return true;
	if ((st = ensure_stream(s, &created, &first)) != NATS_OK) {
		/* connected but unanswered counts towards a new connection */
		s->stalls++;
		set_error(s, "stream " STREAM_PREFIX, st);
		return false;
	}
	pthread_mutex_lock(&s->mu);
	known = s->created;
	if (known != created) {
		/* the copy goes on from the start of this stream */
		s->start_seq = 1;
		s->committed = 0;
		s->created = created;
	}
	start = s->start_seq;
	pthread_mutex_unlock(&s->mu);
	if (start > 1 && first > start) {
		/* the stream no longer holds what the copy lacks: say so */
		pthread_mutex_lock(&s->mu);
		s->out.gap_from = start;
		s->out.gap_to = first - 1;
		tell(s);
		pthread_mutex_unlock(&s->mu);
	}
	if ((st = ensure_consumer(s, start)) != NATS_OK) {
		s->stalls++;
		set_error(s, "consumer", st);
		drop_sub(s);
		return false;
	}
	s->stalls = 0;
	pthread_mutex_lock(&s->mu);
	s->out.up = true;
	s->out.error[0] = '\0';
	s->out.created = created;
	tell(s);
	pthread_mutex_unlock(&s->mu);
	return true;
}

/* Publish what the loop queued, oldest first; true if any went. */
static bool
publish(struct stream *s)
{
	struct stream_pub p;
	jsPubOptions po;
	jsPubAck *ack = NULL;
	jsErrCode jerr = 0;
	natsStatus st;

	pthread_mutex_lock(&s->mu);
	if (s->n_queue == 0) {
		pthread_mutex_unlock(&s->mu);
		return false;
	}
	p = s->queue[0];
	pthread_mutex_unlock(&s->mu);
	jsPubOptions_Init(&po);
	po.MsgId = p.call; /* once in the stream, whatever the retries */
	po.MaxWait = STREAM_WAIT_MS;
	st = js_Publish(&ack, s->js, p.subject, p.payload,
	    (int)strlen(p.payload), &po, &jerr);
	jsPubAck_Destroy(ack);
	if (st == NATS_TIMEOUT)
		s->stalls++;
	else if (st == NATS_OK)
		s->stalls = 0;
	if (st == NATS_NO_RESPONDERS || jerr == JSStreamNotFoundErr)
		drop_sub(s); /* no stream takes it: NATS lost its store */
	pthread_mutex_lock(&s->mu);
	/* the loop may have emptied the queue meanwhile: only at free */
	if (s->n_queue > 0 && strcmp(s->queue[0].call, p.call) == 0) {
		memmove(&s->queue[0], &s->queue[1],
		    (s->n_queue - 1) * sizeof(s->queue[0]));
		s->n_queue--;
		json_array_append_new(
		    st == NATS_OK ? s->out.acked : s->out.refused,
		    json_string(p.call));
		if (st != NATS_OK)
			snprintf(s->out.error, sizeof(s->out.error),
			    "publish: %s", natsStatus_GetText(st));
		free(p.payload);
		tell(s);
	}
	pthread_mutex_unlock(&s->mu);
	return st == NATS_OK;
}

/* Ack what the loop committed; fetch more once it has. */
static bool
fetch(struct stream *s)
{
	jsFetchRequest fr;
	jsConsumerInfo *ci = NULL;
	jsMsgMetaData *meta = NULL;
	uint64_t avail = 0;
	json_t *batch;
	uint64_t committed, pending = 0;
	natsStatus st;
	jsErrCode jerr = 0;

	pthread_mutex_lock(&s->mu);
	committed = s->committed;
	pthread_mutex_unlock(&s->mu);
	if (s->held.Count > 0) {
		if (committed < s->held_last)
			return false; /* the loop has not written them yet */
		st = natsMsg_AckSync(
		    s->held.Msgs[s->held.Count - 1], NULL, &jerr);
		if (st == NATS_TIMEOUT)
			s->stalls++;
		/* not acked: delivered again later, and skipped then */
		natsMsgList_Destroy(&s->held);
		s->held_last = 0;
	}
	/*
	 * A fetch that asks for more than there is waits out its expiry
	 * (libnats 3.4): ask the consumer first, then for no more than that.
	 */
	st = js_GetConsumerInfo(&ci, s->js, s->name, s->durable, NULL, &jerr);
	if (st == NATS_OK) {
		s->stalls = 0;
		avail = ci->NumPending;
	}
	jsConsumerInfo_Destroy(ci);
	if (st != NATS_OK || avail == 0) {
		if (st == NATS_TIMEOUT)
			s->stalls++;
		else if (st != NATS_OK)
			drop_sub(s); /* the consumer is gone: made again */
		pthread_mutex_lock(&s->mu);
		if (st == NATS_OK && !s->out.caught_up) {
			s->out.pending = 0;
			s->out.caught_up = true;
			tell(s);
		}
		pthread_mutex_unlock(&s->mu);
		return false;
	}
	jsFetchRequest_Init(&fr);
	fr.Batch = avail < STREAM_FETCH ? (int)avail : STREAM_FETCH;
	fr.NoWait = true;
	fr.Expires = (int64_t)STREAM_WAIT_MS * 1000000;
	st = natsSubscription_FetchRequest(&s->held, s->sub, &fr);
	if (st != NATS_OK || s->held.Count == 0) {
		natsMsgList_Destroy(&s->held);
		if (st == NATS_TIMEOUT)
			s->stalls++;
		return false;
	}
	batch = json_array();
	for (int i = 0; i < s->held.Count; i++) {
		natsMsg *m = s->held.Msgs[i];
		uint64_t seq = 0;
		json_t *o;

		if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
			seq = meta->Sequence.Stream;
			pending = meta->NumPending;
			jsMsgMetaData_Destroy(meta);
		}
		/* delivered again (an ack that did not arrive): copied already
		 */
		if (seq <= committed)
			continue;
		if (seq > s->held_last)
			s->held_last = seq;
		o = json_loadb(natsMsg_GetData(m),
		    (size_t)natsMsg_GetDataLength(m), 0, NULL);
		/* a malformed one is counted by the loop as such */
		json_array_append_new(batch, o ? o : json_null());
	}
	if (json_array_size(batch) == 0) {
		/* all seen before: ack them (the last one acks all) and go on
		 */
		s->held_last = committed;
		json_decref(batch);
		return true;
	}
	pthread_mutex_lock(&s->mu);
	json_array_extend(s->out.records, batch);
	s->out.last_seq = s->held_last;
	s->out.pending = pending;
	s->out.caught_up = false;
	tell(s);
	pthread_mutex_unlock(&s->mu);
	json_decref(batch);
	return true;
}

static void *
run(void *arg)
{
	struct stream *s = arg;

	for (;;) {
		bool busy = false;
		struct timespec ts;
		int wait_ms;

		pthread_mutex_lock(&s->mu);
		if (s->stop) {
			pthread_mutex_unlock(&s->mu);
			break;
		}
		pthread_mutex_unlock(&s->mu);
		if (ready(s)) {
			s->fails = 0;
			busy = publish(s);
			if (s->sub)
				busy = fetch(s) || busy;
		} else {
			s->fails++;
		}
		if (busy)
			continue;
		wait_ms = s->fails ? (s->fails > 10 ? 2000 : 200 * s->fails)
				   : STREAM_IDLE_MS;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		ts.tv_sec += wait_ms / 1000 + ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_mutex_lock(&s->mu);
		if (!s->stop)
			pthread_cond_timedwait(&s->cond, &s->mu, &ts);
		pthread_mutex_unlock(&s->mu);
	}
	disconnect(s);
	return NULL;
}

static void
secret_free(char *v)
{
	if (v)
		explicit_bzero(v, strlen(v));
	free(v);
}

static char *
dup_or_null(const char *v)
{
	return v ? strdup(v) : NULL;
}

struct stream *
stream_new(
    uv_loop_t *loop, const struct stream_config *c, stream_cb cb, void *arg)
{
	struct stream *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;

	if (s == NULL)
		return NULL;
	s->loop = loop;
	s->cb = cb;
	s->arg = arg;
	snprintf(s->name, sizeof(s->name), STREAM_PREFIX "%s", c->cluster);
	snprintf(s->subjects, sizeof(s->subjects), "us.%s.rec.>", c->cluster);
	snprintf(s->prefix, sizeof(s->prefix), "us.%s.rec.", c->cluster);
	snprintf(s->durable, sizeof(s->durable), "rec_%s", c->server);
	s->max_age_ns = c->retention_s * 1000000000LL;
	s->start_seq = c->start_seq ? c->start_seq : 1;
	s->created = c->created;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	out_reset(&s->out);
	if ((s->urls = calloc(c->n_urls ? c->n_urls : 1, sizeof(char *))))
		for (int i = 0; i < c->n_urls; i++)
			if ((s->urls[s->n_urls] = strdup(c->urls[i])))
				s->n_urls++;
	s->ca = dup_or_null(c->ca);
	s->cert = dup_or_null(c->cert);
	s->key = dup_or_null(c->key);
	s->token = dup_or_null(c->token);
	s->user = dup_or_null(c->user);
	s->password = dup_or_null(c->password);
	if (uv_async_init(loop, &s->wake, wake_cb) != 0) {
		stream_free(s);
		return NULL;
	}
	s->wake_open = true;
	s->wake.data = s;
	if (s->urls == NULL || s->n_urls != c->n_urls || !s->out.acked ||
	    !s->out.refused || !s->out.records ||
	    pthread_create(&s->thread, NULL, run, s) != 0) {
		stream_free(s);
		return NULL;
	}
	s->started = true;
	return s;
}

int
stream_publish(
    struct stream *s, const char *call, const char *post, const char *payload)
{
	struct stream_pub *p;
	int rc = 0;

	pthread_mutex_lock(&s->mu);
	if (s->n_queue >= STREAM_QUEUE) {
		rc = US_EBUSY;
	} else {
		p = &s->queue[s->n_queue];
		snprintf(p->call, sizeof(p->call), "%s", call);
		snprintf(
		    p->subject, sizeof(p->subject), "%s%s", s->prefix, post);
		if ((p->payload = strdup(payload)) == NULL)
			rc = US_ENOMEM;
		else
			s->n_queue++;
		pthread_cond_signal(&s->cond);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void
stream_set_retention(struct stream *s, long retention_s)
{
	pthread_mutex_lock(&s->mu);
	if (s->max_age_ns != retention_s * 1000000000LL) {
		s->max_age_ns = retention_s * 1000000000LL;
		s->resync = true;
		pthread_cond_signal(&s->cond);
	}
	pthread_mutex_unlock(&s->mu);
}

void
stream_committed(struct stream *s, uint64_t seq, int64_t created)
{
	pthread_mutex_lock(&s->mu);
	/* a copy from an older stream says nothing of this one */
	if (created == s->created && seq > s->committed) {
		s->committed = seq;
		s->start_seq = seq + 1;
	}
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void
wake_closed(uv_handle_t *h)
{
	struct stream *s = h->data;

	for (size_t i = 0; i < s->n_queue; i++)
		free(s->queue[i].payload);
	json_decref(s->out.acked);
	json_decref(s->out.refused);
	json_decref(s->out.records);
	for (int i = 0; i < s->n_urls; i++)
		free(s->urls[i]);
	free(s->urls);
	free(s->ca);
	free(s->cert);
	secret_free(s->token);
	secret_free(s->user);
	secret_free(s->password);
	secret_free(s->key);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void
stream_free(struct stream *s)
{
	if (s == NULL)
		return;
	if (s->started) {
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		/*
		 * The thread sees it between two calls (each bounded by
		 * STREAM_WAIT_MS). Closing its connection from here would
		 * race libnats' reader thread with the thread's own teardown.
		 */
		pthread_cond_signal(&s->cond);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
	}
	s->wake.data = s;
	if (s->wake_open)
		uv_close((uv_handle_t *)&s->wake, wake_closed);
	else
		wake_closed((uv_handle_t *)&s->wake);
}
