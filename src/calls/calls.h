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
};

typedef void (*calls_cb)(const struct calls_result *r, void *arg);

/* calls.c */

/*
 * The calls of this server, on the agent's view of the cluster; their
 * records go through rec.
 */
struct calls *calls_new(struct agent *a, struct records *rec);

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
 * Call records. A record is written to etcd, under
 * /understudy-records/<cluster>/<call>, in the same txn that deletes the
 * call's journal entry: by the server that ends the call, or, for a call
 * lost with its server, by the post's owner (FAILED_SOFTWARE when the
 * server's death notice names the call's lease, FAILED_HARDWARE
 * otherwise). The txn compares the journal entry, so a record is written
 * exactly once. Record keys live on a lease of record_retention seconds
 * (renewed by a new grant every half of it); every server copies every
 * record into its SQLite database, resuming from the last revision it
 * copied, and answers queries from there.
 */
struct records *records_new(
    uv_loop_t *loop, struct agent *a, struct store *store);

/* Stop. NULL is a no-op. */
void records_free(struct records *r);

/* The record key of a call, in a new string. */
char *records_key(const struct records *r, const char *call);

/* The lease record keys go on now (0 while none is granted). */
int64_t records_lease(struct records *r);

/*
 * A new record object from a journal entry: the journal's fields and
 * end, duration_ms (from the answer), ended_by, status, closed_by.
 */
json_t *records_from_journal(const json_t *journal, int64_t end_ms,
    const char *ended_by, const char *status, const char *closed_by);

/* Query the copy in this server's database (see store.h). */
json_t *records_query(
    struct records *r, const struct store_query *q, char *err, size_t errlen);

/*
 * Counters: records this server closed for calls lost with their server
 * (lost[0] software, lost[1] hardware), records copied into its
 * database, and whether the copy has caught up with etcd once.
 */
void records_counters(
    const struct records *r, uint64_t lost[2], uint64_t *copied, bool *synced);

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

/* sip.c */

struct sip;

/*
 * SIP on address:sip_port of self (UDP): the user agent server of the
 * posts this server owns. One per process. NULL (logged) when the port
 * cannot be bound.
 */
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

/* The SIP calls in progress, as JSON. */
json_t *sip_calls_json(const struct sip *s);

#endif
