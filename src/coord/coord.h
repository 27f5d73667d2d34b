/*
 * The etcd v3 client on the libuv loop: JSON over HTTP to the v3 gateway
 * (etcd 3.4, paths under /v3/), driven by libcurl multi through socket
 * and timer callbacks. Every call is asynchronous; callbacks run on the
 * loop, never inside the call that started the request.
 *
 * Several endpoints: requests go to the current one; when it fails the
 * client moves to the next and retries, a bounded number of times.
 * Writes that time out may still have been applied: compare in a txn.
 */
#ifndef US_COORD_H
#define US_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/common.h"

#define ETCD_RESPONSE_MAX (8u * 1024 * 1024)
#define ETCD_KEY_MAX (1536)
#define ETCD_TXN_DEPTH 3 /* nested txns in answers, at most */

struct etcd;
struct etcd_req;
struct etcd_watch;
struct etcd_txn;

struct etcd_kv {
	char *key; /* NUL-terminated copies; key_len excludes the NUL */
	size_t key_len;
	char *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

/* What a request gives back; valid only during the callback. */
struct etcd_res {
	int err; /* 0 or a negative US_E* code */
	char *message; /* etcd's or curl's words on an error, or NULL */
	const char *endpoint;
	int64_t revision; /* of the store when it answered */
	struct etcd_kv *kvs; /* range; txn ranges; delete's previous kvs */
	size_t n_kvs;
	int64_t count; /* range: keys in the whole range */
	bool more; /* range: more keys follow the ones given (a page) */
	int64_t deleted; /* delete */
	bool succeeded; /* txn: the compares held */
	int64_t id; /* lease */
	int64_t ttl; /* lease: seconds left (keepalive, timetolive) */
	int64_t granted_ttl;
	/* txn: the answers of its nested txns, in order (see txn_nest) */
	struct etcd_res *subs;
	size_t n_subs;
};

typedef void (*etcd_cb)(const struct etcd_res *res, void *arg);

struct etcd_opts {
	unsigned request_timeout_ms; /* whole request, default 1000 */
	unsigned connect_timeout_ms; /* default 300, the TLS handshake too */
	unsigned max_attempts; /* default 2 per endpoint, at least 3 */
	/* PEM files for https:// endpoints, or NULL; the peer is verified */
	const char *ca_file; /* default: the system's CAs */
	const char *cert_file; /* a client certificate, with key_file */
	const char *key_file;
};

/* etcd.c */

/*
 * A client for the given endpoints ("http://host:port" or
 * "https://host:port"), copied, as are opts' file names. opts may be
 * NULL for defaults. Returns NULL on ENOMEM. curl_global_init must have
 * been called.
 */
struct etcd *etcd_new(uv_loop_t *loop, const char *const *endpoints, size_t n,
    const struct etcd_opts *opts);

/*
 * Cancel every request and watch (their callbacks are not called) and
 * free the client once its handles are closed; run the loop to finish.
 * Safe inside a callback. NULL is a no-op.
 */
void etcd_free(struct etcd *e);

/* The endpoint requests go to now. */
const char *etcd_endpoint(const struct etcd *e);

/*
 * Requests (and streams) this client finished, and the connections to
 * etcd it opened for them: kept connections serve request after request.
 */
void etcd_counters(
    const struct etcd *e, uint64_t *requests, uint64_t *connections);

/* Cancel a request: its callback will not be called. */
void etcd_req_cancel(struct etcd_req *req);

/* etcd_kv.c */

/*
 * Read key, or every key under the prefix key when prefix is true.
 * Returns the request (for etcd_req_cancel), or NULL on ENOMEM.
 */
struct etcd_req *etcd_kv_range(
    struct etcd *e, const char *key, bool prefix, etcd_cb cb, void *arg);

/*
 * One page of the keys under prefix: at most limit of them, from the key
 * after after (NULL: from the start), read at revision rev (0: now; give
 * the first page's res->revision to the next pages, so that all pages
 * are one snapshot). res->more says whether more follow. An answer over
 * ETCD_RESPONSE_MAX is US_ETOOBIG: a smaller limit fits.
 */
struct etcd_req *etcd_kv_range_page(struct etcd *e, const char *prefix,
    const char *after, size_t after_len, int64_t rev, long limit, etcd_cb cb,
    void *arg);

/* Count the keys under prefix, reading none of them: res->count. */
struct etcd_req *etcd_kv_count(
    struct etcd *e, const char *prefix, etcd_cb cb, void *arg);

/* Write key = value (vlen bytes), attached to lease unless it is 0. */
struct etcd_req *etcd_kv_put(struct etcd *e, const char *key, const char *value,
    size_t vlen, int64_t lease, etcd_cb cb, void *arg);

/* Delete key, or every key under it; res->kvs holds what was deleted. */
struct etcd_req *etcd_kv_delete(
    struct etcd *e, const char *key, bool prefix, etcd_cb cb, void *arg);

/* Delete every key k with from <= k < to (no previous kvs in res). */
struct etcd_req *etcd_kv_delete_range(
    struct etcd *e, const char *from, const char *to, etcd_cb cb, void *arg);

enum etcd_cmp_target {
	ETCD_CMP_VERSION,
	ETCD_CMP_CREATE,
	ETCD_CMP_MOD,
	ETCD_CMP_VALUE,
	ETCD_CMP_LEASE
};
enum etcd_cmp_result {
	ETCD_CMP_EQUAL,
	ETCD_CMP_NOT_EQUAL,
	ETCD_CMP_GREATER,
	ETCD_CMP_LESS
};

/* An empty transaction; NULL on ENOMEM. */
struct etcd_txn *etcd_kv_txn_new(void);

/*
 * Add a compare on key: target (create_revision, mod_revision, version or
 * lease) against num, or, for ETCD_CMP_VALUE, against value/vlen.
 * Returns 0 or US_ENOMEM, US_ETOOBIG past 128 operations.
 */
int etcd_kv_txn_compare(struct etcd_txn *t, const char *key,
    enum etcd_cmp_target target, enum etcd_cmp_result result, int64_t num,
    const char *value, size_t vlen);

/* Add a put / delete / range to the success (or failure) branch. */
int etcd_kv_txn_put(struct etcd_txn *t, bool success, const char *key,
    const char *value, size_t vlen, int64_t lease);
int etcd_kv_txn_delete(
    struct etcd_txn *t, bool success, const char *key, bool prefix);
int etcd_kv_txn_get(
    struct etcd_txn *t, bool success, const char *key, bool prefix);

/*
 * Add sub as a nested txn to the success (or failure) branch: it has
 * compares and branches of its own and succeeds or fails alone, in the
 * same revision as t. sub is consumed (freed) whatever happens; its
 * answer is in res->subs, in the order added (only those of the branch
 * that ran). A nested txn may hold nested txns, ETCD_TXN_DEPTH deep.
 * Returns 0, US_ENOMEM, or US_ETOOBIG when etcd would refuse the size
 * (its --max-txn-ops counts t's ops and each nested txn's together).
 */
int etcd_kv_txn_nest(struct etcd_txn *t, bool success, struct etcd_txn *sub);

/* How many operations t holds now (compares and both branches). */
unsigned etcd_kv_txn_ops(const struct etcd_txn *t);

/*
 * Send the transaction; it is consumed (freed) whatever happens. res has
 * succeeded, and the kvs of every range in the branch that ran.
 */
struct etcd_req *etcd_kv_txn_commit(
    struct etcd *e, struct etcd_txn *t, etcd_cb cb, void *arg);

/* Free a transaction that was not committed. NULL is a no-op. */
void etcd_kv_txn_free(struct etcd_txn *t);

/* etcd_lease.c */

/* Grant a lease of ttl seconds: res->id, res->ttl. */
struct etcd_req *etcd_lease_grant(
    struct etcd *e, int64_t ttl, etcd_cb cb, void *arg);

/* Renew once: res->ttl, or res->err US_ELEASELOST when it is gone. */
struct etcd_req *etcd_lease_keepalive(
    struct etcd *e, int64_t id, etcd_cb cb, void *arg);

/* Revoke: its keys are deleted at once. US_ENOTFOUND if already gone. */
struct etcd_req *etcd_lease_revoke(
    struct etcd *e, int64_t id, etcd_cb cb, void *arg);

/* Time to live: res->ttl (-1 when gone), res->granted_ttl. */
struct etcd_req *etcd_lease_timetolive(
    struct etcd *e, int64_t id, etcd_cb cb, void *arg);

/* etcd_watch.c */

enum etcd_event_type { ETCD_EVENT_PUT, ETCD_EVENT_DELETE };

struct etcd_event {
	enum etcd_event_type type;
	struct etcd_kv kv; /* a DELETE carries only key and mod_revision */
};

struct etcd_watch_update {
	/*
	 * reset: the consumer drops what it knew; events then hold every
	 * key now present (all PUT). It comes first, and again whenever the
	 * watch had to re-read (its revision was compacted).
	 */
	bool reset;
	/*
	 * partial: a page of a snapshot, more pages follow (with
	 * etcd_watch_pages: the first page has reset, the next ones not;
	 * all carry the snapshot's revision). Without it, a snapshot read
	 * in pages comes as one reset.
	 */
	bool partial;
	int64_t revision;
	const struct etcd_event *events;
	size_t n_events;
	const char *endpoint;
};

typedef void (*etcd_watch_cb)(
    struct etcd_watch *w, const struct etcd_watch_update *u, void *arg);

/*
 * Watch key (or every key under it): with start_rev 0, first a reset
 * with the current state, then every change in order; otherwise every
 * change from start_rev on (a reset if it is compacted). Across
 * disconnects and endpoint changes it resumes from the revision after
 * the last one delivered. Returns NULL on ENOMEM.
 */
struct etcd_watch *etcd_watch_new(struct etcd *e, const char *key, bool prefix,
    int64_t start_rev, etcd_watch_cb cb, void *arg);

/*
 * Deliver a snapshot page by page (a prefix that can hold more than is
 * wise to keep in memory at once); call it right after etcd_watch_new.
 */
void etcd_watch_pages(struct etcd_watch *w);

/* Stop and free; safe inside its own callback. NULL is a no-op. */
void etcd_watch_free(struct etcd_watch *w);

/* The endpoint the watch stream is on now, or NULL between streams. */
const char *etcd_watch_endpoint(const struct etcd_watch *w);

/* etcd_parse.c */

enum etcd_op {
	ETCD_OP_RANGE,
	ETCD_OP_PUT,
	ETCD_OP_DELETE,
	ETCD_OP_TXN,
	ETCD_OP_GRANT,
	ETCD_OP_KEEPALIVE,
	ETCD_OP_REVOKE,
	ETCD_OP_TIMETOLIVE,
	ETCD_OP_WATCH
};

/*
 * Parse a 200 answer of the gateway for op into res (zeroed first).
 * Returns res->err: 0, US_EPROTO, US_ELEASELOST, US_ENOMEM.
 */
int etcd_parse_response(
    enum etcd_op op, const char *body, size_t len, struct etcd_res *res);

/*
 * Parse an error body ({"error":..,"code":N}) into res->err and
 * res->message; http is the status. Returns res->err, and sets *retry
 * when another member may succeed (code 14, unavailable).
 */
int etcd_parse_error(
    long http, const char *body, size_t len, struct etcd_res *res, bool *retry);

/* Free what a parse put into res, and zero it. */
void etcd_parse_res_clear(struct etcd_res *res);

/* One line of a watch stream. */
struct etcd_watch_msg {
	bool created;
	bool canceled;
	int64_t compact_revision;
	int64_t revision;
	struct etcd_event *events;
	size_t n_events;
	char *cancel_reason;
};

/* Parse one watch line. Returns 0, US_EPROTO, US_ENOMEM. */
int etcd_parse_watch(const char *line, size_t len, struct etcd_watch_msg *m);

/* Free what etcd_parse_watch put into m, and zero it. */
void etcd_parse_watch_clear(struct etcd_watch_msg *m);

/* ---- between the files of src/coord only ---- */

/* Called for each line of a streaming answer, and when it ends. */
typedef void (*etcd_line_cb)(
    struct etcd_req *req, const char *line, size_t len, void *arg);
typedef void (*etcd_end_cb)(struct etcd_req *req, int err, void *arg);

/* Queue a request of op to path with a JSON body (taken over). */
struct etcd_req *etcd_request(struct etcd *e, enum etcd_op op, const char *path,
    char *body, etcd_cb cb, void *arg);

/* Queue a streaming request (a watch) on the current endpoint. */
struct etcd_req *etcd_request_stream(struct etcd *e, const char *path,
    char *body, etcd_line_cb on_line, etcd_end_cb on_end, void *arg);

/* The endpoint a request was sent to. */
const char *etcd_request_endpoint(const struct etcd_req *req);

/* The loop of the client. */
uv_loop_t *etcd_loop(const struct etcd *e);

/* Register and unregister a watch so endpoint failures reach it. */
void etcd_watch_attach(struct etcd *e, struct etcd_watch *w);
void etcd_watch_detach(struct etcd *e, struct etcd_watch *w);

/* Told by etcd.c that requests to endpoint failed: reconnect. */
void etcd_watch_endpoint_failed(struct etcd_watch *w, const char *endpoint);

/* The prefix's range_end: the key with its last byte incremented. */
char *etcd_kv_prefix_end(const char *key, size_t len, size_t *outlen);

/*
 * A JSON object {"key": base64} with "range_end" when prefix; NULL on
 * ENOMEM. The caller owns the reference.
 */
json_t *etcd_kv_key_json(const char *key, bool prefix);

#endif
