/*
 * Calls on media ports. A call takes a free port of a post on the
 * server that owns the post: the port key /understudy/<c>/ports/<post>/<n>
 * is created on that server's lease, in a txn that also compares the
 * post's epoch, so a server that lost the post can never take a port.
 * The port stays with the server that took it until the call ends, even
 * when the post moves (failback): the call is never dropped.
 */
#ifndef US_CALLS_H
#define US_CALLS_H

#include <stdbool.h>

#include <jansson.h>

#include "agent/agent.h"
#include "store/store.h"

struct calls;
struct records;
struct store;
struct stream;
struct stream_config;

/* Who placed a call, and how it came. */
struct calls_info {
	const char *origin; /* "http", "sip" */
	const char *route_point; /* what was dialed */
	const char *caller; /* the caller's address or name, or "" */
};

struct calls_result {
	int err; /* 0 or US_ENOTFOUND, US_ENOTOWNER, US_EBUSY, US_EUNAVAIL */
	char message[256];
	char call[64];
	char post[CONFIG_NAME_MAX + 1];
	long port;
	int64_t epoch;
	char server[CONFIG_NAME_MAX + 1]; /* who took it, or who owns it */
	const char *status; /* at the end: NORMAL, TRANSFERRED, BUSY */
	int64_t duration_ms;
	bool overload; /* US_EBUSY: refused at once, the server is loaded */
};

typedef void (*calls_cb)(const struct calls_result *r, void *arg);

/* calls.c */

/*
 * The calls of this server, on the agent's view of the cluster; their
 * records go through rec.
 */
struct calls *calls_new(uv_loop_t *loop, struct agent *a, struct records *rec);

/* Forget every call (their ports go with the lease). NULL is a no-op. */
void calls_free(struct calls *c);

/*
 * Place a call to route point rp over HTTP. Returns 0 when the answer
 * will come through cb(arg) later, or an error code with *r filled now
 * (no cb).
 */
int calls_place(struct calls *c, const char *rp, const char *caller,
    struct calls_result *r, calls_cb cb, void *arg);

/*
 * Place a call on post p (info is copied). The port is taken in one txn
 * with the call's journal entry, its durable start: whatever becomes of
 * this server, the call gets a record. A call refused for want of a port
 * gets a BUSY record. Same returns as calls_place.
 */
int calls_place_post(struct calls *c, struct agent_post *p,
    const struct calls_info *info, struct calls_result *r, calls_cb cb,
    void *arg);

/*
 * End call id normally, or as transferred on (its port is free again and
 * it no longer belongs to the post), on behalf of origin: a SIP call ends
 * from SIP (a BYE) or, with a BYE of the server's, from elsewhere; it is
 * never transferred over HTTP (its caller's side would not know). ended_by
 * says how
 * ("caller", "server", "api", "canceled", "no media"). The port, the
 * journal entry and the record change in one txn. Same returns as
 * calls_place; a call held by another server gives US_ENOTOWNER with
 * r->server. cb may be NULL.
 */
int calls_end(struct calls *c, const char *id, bool transferred,
    const char *origin, const char *ended_by, struct calls_result *r,
    calls_cb cb, void *arg);

/*
 * Send the ends that wait for their txn now, not at the end of their
 * gather window (CALLS_END_GATHER_MS): the server is stopping.
 */
void calls_ends_now(struct calls *c);

/*
 * Free the ports this server holds on its lease for calls it does not
 * know (a claim given up whose txn etcd applied late): every reconcile.
 */
void calls_reap(struct calls *c);

/* Drop cb of every pending operation with this arg (its request went). */
void calls_forget(struct calls *c, void *arg);

/* The lease is gone: every call of this server is lost with it. */
void calls_lease_lost(struct calls *c);

/*
 * Counters since this worker started: calls taken (placed[0] by HTTP,
 * placed[1] by SIP), ended (ended[0] normally, ended[1] transferred),
 * lost with the lease, and the calls held now.
 */
void calls_counters(const struct calls *c, uint64_t placed[2],
    uint64_t ended[2], uint64_t *lost, uint64_t *active);

/*
 * How a SIP call ended from elsewhere (DELETE /v1/calls/ID) hangs up its
 * caller: fn(call, arg) sends the BYE and forgets the SIP side; the call
 * model then ends the call as usual.
 */
void calls_set_hangup(
    struct calls *c, void (*fn)(const char *call, void *arg), void *arg);

/* Calls taken per second on this server, over the last 10 s. */
double calls_per_second(const struct calls *c);

#define CALLS_TXN_BUCKETS 7 /* calls per txn: <= 1, 2, 4, .. 64 */

/*
 * The etcd txns of calls since this worker started, [0] the claims,
 * [1] the ends: txns sent (resends too), calls they carried, and how
 * many txns carried at most 1, 2, 4, .. 64 calls (hist, not cumulative).
 */
void calls_txn_counters(const struct calls *c, uint64_t txns[2],
    uint64_t carried[2], uint64_t hist[2][CALLS_TXN_BUCKETS]);

/*
 * Calls waiting for etcd now: taken in, their claim not answered yet
 * (or, ends: their end not answered yet).
 */
size_t calls_waiting(const struct calls *c, bool ends);

/*
 * Calls refused at once because this server was overloaded, since this
 * worker started (refused[0]: too many waited for etcd, see
 * calls_backlog_max; refused[1]: the loop ran late, loop_lag_max); how
 * late the loop runs now (ms); BUSY records waiting for their txn.
 */
void calls_overload_counters(const struct calls *c, uint64_t refused[2],
    uint64_t *lag_ms_now, size_t *records_waiting);

/* Calls refused for want of a free port since this worker started. */
uint64_t calls_busy(const struct calls *c);

/* The calls this server holds, as JSON. */
json_t *calls_json(const struct calls *c);

/* records.c */

/*
 * Close the records of calls lost with their server, for the posts this
 * server owns (after every reconcile: calls_new hooks it).
 */
void records_sweep(struct records *r);

/*
 * Call records. When a call ends, the txn that frees its port and deletes
 * its journal entry writes the record to the post's outbox in etcd,
 * /understudy/<cluster>/closed/<post>/<call>: by the server that ends the
 * call, or, for a call lost with its server, by the post's owner
 * (FAILED_SOFTWARE when the server's death notice names the call's lease,
 * FAILED_HARDWARE otherwise). The txn compares the journal entry, so a
 * record is closed exactly once. From the outbox, the record goes to the
 * cluster's records stream on NATS JetStream (the call id is the publish's
 * Msg-Id); once the stream acknowledged it, the outbox entry is deleted
 * (compared on its revision). The server that closed it sends it at
 * once; the post's owner sends what stays longer (its closer died, or
 * NATS was down). Every server copies the stream into its SQLite
 * database through its own durable consumer, from the first sequence its
 * copy lacks, and answers queries from there.
 */
struct records *records_new(uv_loop_t *loop, struct agent *a,
    struct store *store, const struct stream_config *sc);

/* Run cfg from now on (a new configuration version): its retention. */
void records_set_config(struct records *r, const struct config *cfg);

/* Stop. NULL is a no-op. */
void records_free(struct records *r);

/* The outbox key of a call's record, in a new string. */
char *records_key(const struct records *r, const char *post, const char *call);

/*
 * Hold back the records of calls for which pending(call, arg) is true
 * (an end whose answer is not in yet: the outbox entry is its proof).
 */
void records_hold(
    struct records *r, bool (*pending)(const char *call, void *arg), void *arg);

/*
 * A new record object from a journal entry: the journal's fields and
 * end, duration_ms (from the answer), ended_by, status, closed_by.
 */
json_t *records_from_journal(const json_t *journal, int64_t end_ms,
    const char *ended_by, const char *status, const char *closed_by);

/* Query the copy in this server's database (see store.h). */
json_t *records_query(struct records *r, const struct store_query *q,
    char *next, char *err, size_t errlen);

/*
 * Counters: records this server closed for calls lost with their server
 * (lost[0] software, lost[1] hardware), records copied into its
 * database, records waiting in the outbox of the posts this server owns
 * or closed, and whether the copy has caught up with the stream once.
 */
void records_counters(const struct records *r, uint64_t lost[2],
    uint64_t *copied, uint64_t *waiting, bool *synced);

/* stream.c */

#define STREAM_PREFIX "USREC_" /* the stream: USREC_<cluster> */
#define STREAM_QUEUE 256 /* publishes waiting for the thread, at most */

/* Where the records stream is and where this server's copy stands. */
struct stream_config {
	const char *cluster;
	const char *server;
	const char *const *urls;
	int n_urls;
	const char *ca, *cert, *key; /* PEM text, or NULL */
	const char *token, *user, *password;
	long retention_s;
	uint64_t start_seq; /* the first sequence the copy lacks */
	int64_t created; /* the stream it came from (ns), 0: none */
};

/* What the stream's thread says, handed to the loop. */
struct stream_state {
	bool up; /* connected, with the stream and the consumer */
	char error[200]; /* why not */
	int64_t created; /* the stream's creation (ns) */
	json_t *acked; /* call ids the stream took (owned by the caller) */
	json_t *refused; /* call ids not published: send again later */
	json_t *records; /* fetched: records (null for a malformed one) */
	uint64_t last_seq; /* the sequence of the last of records */
	uint64_t pending; /* what the stream holds past last_seq */
	bool caught_up; /* a fetch found nothing more (since the last one) */
	uint64_t gap_from,
	    gap_to; /* lacked by the copy, gone from the stream */
	size_t n_queue; /* publishes still queued */
};

typedef void (*stream_cb)(const struct stream_state *st, void *arg);

/*
 * Start the records stream's thread for this server. cb(arg) runs on the
 * loop whenever there is news; the arrays in it are freed after it.
 * Strings in c are copied.
 */
struct stream *stream_new(
    uv_loop_t *loop, const struct stream_config *c, stream_cb cb, void *arg);

/*
 * Queue a record to publish on us.<cluster>.rec.<post> with the call id
 * as Msg-Id. 0, or US_EBUSY when STREAM_QUEUE wait (try again later).
 */
int stream_publish(
    struct stream *s, const char *call, const char *post, const char *payload);

/*
 * The copy holds every record of the stream created at created up to
 * seq: the thread acks them and fetches more.
 */
void stream_committed(struct stream *s, uint64_t seq, int64_t created);

/* Keep records retention_s seconds from now on (the stream is updated). */
void stream_set_retention(struct stream *s, long retention_s);

/* Stop the thread and free. NULL is a no-op. */
void stream_free(struct stream *s);

/* prompt.c */

#define PROMPT_MAX (16u * 1024 * 1024) /* bytes: over half an hour */
#define PROMPT_FRAME 160 /* bytes of PCMU per 20 ms RTP packet */

/* A prompt's audio: PCMU bytes, as RTP carries them. */
struct prompt {
	uint8_t *pcmu;
	size_t len;
};

/*
 * Parse a prompt file's bytes: a WAV (mu-law, mono, 8000 Hz, 8 bits)
 * when wav, raw PCMU otherwise. 0, or an error with err saying why.
 */
int prompt_parse(const uint8_t *buf, size_t len, bool wav, struct prompt *out,
    char *err, size_t errlen);

/* Read and parse a prompt file (".wav": WAV; else raw PCMU). */
int prompt_load(const char *path, struct prompt *out, char *err, size_t errlen);

void prompt_free(struct prompt *p);

/*
 * The prompt file of a server's post as a path: relative ones are
 * relative to the config file's directory. NULL when it has none.
 */
char *prompt_path(const struct config *cfg, const struct config_server *s);

/* sip_reap.c */

struct osip_transaction;

/*
 * Transactions osip2 killed during a run of its execute functions, to
 * be freed once they return. Zeroed to start; nothing to free at the end
 * but what it holds.
 */
struct sip_reap {
	struct osip_transaction *head;
	size_t n; /* queued now */
};

/*
 * Queue tr (from osip's kill callback) to be freed by sip_reap_free.
 * Allocates nothing: it never fails and has no cap. tr's reserved6
 * pointer is the queue's until then. A transaction queued twice is
 * logged and queued once.
 */
void sip_reap_add(struct sip_reap *r, struct osip_transaction *tr);

/*
 * Free every queued transaction (osip_transaction_free: out of osip's
 * lists too), outside osip's execute functions. Returns how many.
 */
size_t sip_reap_free(struct sip_reap *r);

/* sip_answer.c: the answers kept */

struct osip_message;
struct sip_resend_entry;

#define SIP_RESEND_MAX 65536 /* answers kept; then the oldest goes */
#define SIP_RESEND_BUCKETS 16384 /* a power of two */
#define SIP_RESEND_KEEP_MS 32000 /* 64*T1: a request's retransmissions */
#define SIP_RESEND_KEY_MAX 320

/*
 * The final answers of non-INVITE server transactions, by request key,
 * for SIP_RESEND_KEEP_MS. Zeroed to start; sip_resend_free at the end.
 */
struct sip_resend {
	struct sip_resend_entry **table; /* SIP_RESEND_BUCKETS, on first put */
	struct sip_resend_entry *oldest, *newest;
	size_t n;
	uint64_t resent; /* retransmissions answered from here */
	uint64_t pushed_out; /* answers dropped early by the cap */
};

/*
 * The key of req (method, top Via's branch and sent-by) in key; -1 when
 * it has none (no Via, no branch with the RFC 3261 cookie, too long).
 */
int sip_resend_key(struct osip_message *req, char *key, size_t len);

/*
 * Keep the answer buf of len bytes, sent to to, under key. A key kept
 * already keeps its first answer. -1: out of memory (nothing kept).
 */
int sip_resend_put(struct sip_resend *r, const char *key, const char *buf,
    size_t len, const struct sockaddr *to, size_t tolen, uint64_t now_ms);

/* The answer kept under key (its length and address), or NULL. */
const char *sip_resend_get(struct sip_resend *r, const char *key,
    uint64_t now_ms, size_t *len, const struct sockaddr **to);

/* Drop the answers kept past their time; returns how many. */
size_t sip_resend_expire(struct sip_resend *r, uint64_t now_ms);

void sip_resend_free(struct sip_resend *r);

/* sip.c */

struct sip;

/*
 * SIP on address:sip_port of self (UDP): the user agent server of the
 * posts this server owns. One per process. NULL (logged) when the port
 * cannot be bound.
 */
/*
 * Run cfg from now on (a new configuration version with the same
 * servers): its media_timeout, interceptor patterns and route points
 * (the ones it drops are taken back, new ones registered by their
 * owner). -1 when the new route points find no room: they wait for a
 * restart. Prompts and the registrar need a restart.
 */
int sip_set_config(
    struct sip *s, const struct config *cfg, const struct config_server *self);

struct sip *sip_new(uv_loop_t *loop, struct agent *agent, struct calls *calls,
    const struct config *cfg, const struct config_server *self);

/* Drop every SIP call (its port with it) and close. NULL is a no-op. */
void sip_free(struct sip *s);

/*
 * One datagram received from from: what the socket feeds, and what the
 * fuzz target feeds. Bad input is dropped or answered, never trusted.
 */
void sip_input(
    struct sip *s, const char *buf, size_t len, const struct sockaddr *from);

/* The route points this server has registered now, with their epochs. */
json_t *sip_registrations_json(const struct sip *s);

/*
 * For the check: {"registrar": "HOST:PORT" or null, "route_points":
 * [{route_point, post, registered (under the post's epoch now),
 * expires_in_ms}]} for every route point of the posts this server owns.
 */
json_t *sip_check_json(const struct sip *s);

/* The SIP calls in progress, as JSON. */
json_t *sip_calls_json(const struct sip *s);

#endif
