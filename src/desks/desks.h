/*
 * Desk sessions: login, channels, events, licenses. The control plane of
 * the desks (the data plane, channel traffic, goes through NATS between
 * the desks themselves).
 *
 * Every change of a session (its creation, its channels, its events, its
 * expiry) is committed to the server's SQLite database before the answer,
 * so a restarted server (SIGKILL included) knows every session and a desk
 * that reconnects goes on with its token. Licenses are slots in etcd,
 * /understudy/<cluster>/licenses/<n> for n < licenses, each created on
 * the lease of the server holding the session: a server that dies frees
 * its slots with its lease.
 */
#ifndef US_DESKS_H
#define US_DESKS_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

#include "agent/agent.h"
#include "store/store.h"

/* The longest a desk may wait for events in one request, in seconds. */
#define DESKS_WAIT_MAX 60

struct desks;

/* An answer: an HTTP status, and a body or an error. */
struct desks_res {
	unsigned status;
	int err; /* 0 or US_E... */
	char message[256];
	json_t *body; /* on success; the receiver takes it */
	long retry_after; /* seconds, for a Retry-After header; 0: none */
	bool db_busy; /* the database was locked by another process */
};

typedef void (*desks_cb)(struct desks_res *r, void *arg);

struct desks *desks_new(uv_loop_t *loop, struct agent *a, struct store *st);

/* Answer every waiting request (503) and free. NULL is a no-op. */
void desks_free(struct desks *d);

/*
 * Run cfg from now on (a new configuration version): users, passwords,
 * groups, channels, licenses and their policy, session timeout, desk
 * versions and login limits take effect at once.
 */
void desks_set_config(struct desks *d, const struct config *cfg);

/*
 * The NATS TLS files (PEM text, copied; NULL where not set) that
 * sessions hand to desks, with the config's NATS credentials, as
 * "messaging_auth" (docs/desks.md). Returns 0 or US_ENOMEM.
 */
int desks_messaging_tls(
    struct desks *d, const char *ca, const char *cert, const char *key);

/* GET /v1/desk/versions. */
json_t *desks_versions(struct desks *d);

#define DESKS_BODY_MAX 4096

/* What a login body says, checked. */
struct desks_login {
	char user[CONFIG_NAME_MAX + 1];
	char desk[65];
	char version[32];
	char password[257];
};

/*
 * Parse and check a login body {"user","password","desk","version"}
 * (JSON, at most DESKS_BODY_MAX bytes) against the config's accepted
 * versions. 0, or the error in *r (400 EINVAL naming the field, 413,
 * 409 EVERSION with the accepted "versions" in r->body).
 */
int desks_login_parse(const struct config *cfg, const char *body, size_t len,
    struct desks_login *out, struct desks_res *r);

/*
 * Log in with a login body from peer ("address:port"). The answer comes
 * through cb (maybe before this returns): 200 with the session, the
 * refusals of desks_login_parse, 401 EUNAUTHORIZED, 403 ENOLICENSE, 429
 * ELIMITED (too many failures for the user or the address: retry_after),
 * 503 EUNAVAIL (too many password checks waiting).
 */
void desks_login(struct desks *d, const char *body, size_t len,
    const char *peer, desks_cb cb, void *arg);

/*
 * A desk comes back with its token: the session goes on (licenses
 * checked, channels refreshed), or 401 EEXPIRED. Taken in turn, a few
 * a loop turn; answered once its writes are committed.
 */
void desks_resume(struct desks *d, const char *token, desks_cb cb, void *arg);

/*
 * Logout, join, leave: answered through cb, at once or, while another
 * process holds the database's lock, once the write is done (503
 * EUNAVAIL after 20 s).
 */
void desks_logout(struct desks *d, const char *token, desks_cb cb, void *arg);
void desks_join(struct desks *d, const char *token, const char *channel,
    bool join, desks_cb cb, void *arg);

/* The channels of a session; *r filled. */
void desks_channels(struct desks *d, const char *token, struct desks_res *r);

/*
 * The session's events after sequence after; when there are none, wait
 * up to wait seconds for one (capped). Through cb; taken in turn, with
 * the resumes, a few a loop turn.
 */
void desks_events(struct desks *d, const char *token, int64_t after, long wait,
    desks_cb cb, void *arg);

/* The request behind arg went away: never call its cb. */
void desks_forget(struct desks *d, void *arg);

/* Add an event for every live session (a server notice). */
void desks_notice_all(struct desks *d, const char *text);

/* This server's lease changed: reclaim the slots of its sessions. */
void desks_lease_changed(struct desks *d);

/*
 * This server lost its lease (why says how): every desk's waiting long
 * poll and every request waiting its turn is answered 503 EFENCED now,
 * so that its desk goes offline or to another server at once instead
 * of holding a poll that this server may no longer answer.
 */
void desks_lease_lost(struct desks *d, const char *why);

/* The upper bounds (ms) of the resume latency buckets; then +Inf. */
#define DESKS_RESUME_BUCKETS 10
extern const unsigned desks_resume_le_ms[DESKS_RESUME_BUCKETS];

/* What the desks module did so far (counters, for /metrics). */
struct desks_stats {
	uint64_t event_requests; /* GET /v1/desk/events taken */
	uint64_t resumes; /* resumes answered 200 */
	uint64_t commits; /* transactions of batched session writes */
	uint64_t commits_failed; /* of those, failed (their requests too) */
	uint64_t statements_prepared; /* SQL statements parsed (desks_prep) */
	uint64_t resumes_busy; /* refused: desk_resumes_waiting reached */
	/* resumes answered 200, by ms from the request read to its answer */
	uint64_t resume_ms[DESKS_RESUME_BUCKETS];
	uint64_t resume_ms_sum;
	uint64_t resume_ms_count;
};

void desks_stats_get(const struct desks *d, struct desks_stats *out);

/* A resume answered 200, ms after its request was read. */
void desks_resume_timed(struct desks *d, uint64_t ms);

/*
 * GET /v1/desks: this server's live sessions (user, desk, version,
 * since, seen, state online or offline, licensed) and the licenses
 * (limit, policy, in use across the cluster, held here); never a session
 * token. NULL (logged) on a database error, or past DESKS_LIST_MAX
 * sessions (*toobig set).
 */
#define DESKS_LIST_MAX 10000
#define DESKS_ONLINE_MS ((DESKS_WAIT_MAX + 15) * 1000LL)
json_t *desks_sessions_json(struct desks *d, bool *toobig);

/* Passes of the license reconciler that read every slot, so far. */
uint64_t licenses_checks(const struct desks *d);

/* Sessions live on this server, licenses held, requests waiting. */
void desks_counters(
    const struct desks *d, long *sessions, long *licensed, long *waiting);

/*
 * ---- inside src/desks only ----
 * desks.c: sessions, logins, channels, events; licenses.c: the license
 * slots in etcd, claimed for a login and kept equal, by a reconciler, to
 * the live sessions of this server.
 */

#define DESKS_TOKEN_LEN 64 /* hex of 32 random bytes */

/* A login or resume on its way: password check, then a license slot. */
struct desks_pending {
	struct desks *d;
	uv_work_t work;
	bool working; /* on the thread pool */
	bool queued; /* its password check waits for a turn */
	bool resume;
	char token[DESKS_TOKEN_LEN + 1];
	char user[CONFIG_NAME_MAX + 1];
	char desk[65];
	char version[32];
	const char *hash;
	char *password;
	bool unknown; /* no such user: checked against another's hash */
	char address[64]; /* the client's, for the failure limits */
	bool verified;
	bool parked; /* its session's write waits for a locked database */
	int64_t park_slot, park_rev, park_until;
	int64_t park_lease; /* the lease the slot was claimed on */
	bool park_over;
	unsigned tries;
	long claiming; /* the slot its claim txn is out for, or -1 */
	struct licenses_scan *scan; /* its read of the slots */
	struct etcd_req *req;
	desks_cb cb;
	void *arg;
	struct desks_pending *next;
};

struct desks_held;
struct desks_resuming;
struct desks_waiter;
struct licenses_claim;
struct licenses_scan;
struct slot_seen;

/* statements kept prepared: more than the module's distinct ones */
#define DESKS_STMTS 64

struct desks {
	uv_loop_t *loop;
	struct agent *a;
	struct store *st;
	struct sqlite3 *db;
	const struct config *cfg;
	uv_timer_t sweep;
	struct desks_waiter *waiters;
	json_t *waiting_tokens; /* token: how many of its requests wait */
	struct desks_pending *pending;
	long waiting;
	bool freeing;
	unsigned open_handles;
	unsigned verifying; /* password checks waiting or running */
	unsigned verify_running; /* of them, on the thread pool */
	struct limits *limits;
	/* batch.c: session writes of this loop turn, and their answers */
	json_t *ev_queue; /* the writes, in order (batch.c says which) */
	json_t *touched; /* tokens marked active in this batch: true */
	struct desks_held *held, **held_tail;
	/* login.c: resumes waiting for their turn (a few a loop turn) */
	struct desks_resuming *resuming, **resuming_tail;
	uv_timer_t resume_timer;
	size_t resumes_waiting; /* resumes in the turn queue */
	uint64_t busy_said; /* mono ms the cap was last logged; 0: never */
	uint64_t batch_queued, batch_done; /* writes ever queued, committed */
	uv_timer_t ev_timer;
	uv_idle_t ev_idle; /* a flush on the next loop turn */
	bool ev_retrying; /* the last flush met a locked database */
	/* login.c: logins, logouts and joins waiting for a locked database */
	struct desks_parked *parked;
	uv_timer_t park_timer;
	/* licenses.c */
	uv_timer_t lic_timer;
	struct licenses_scan *lic_scan; /* the reconciler's read */
	/* the slots as the agent's watch shows them, [licenses] */
	struct slot_seen **lic_view;
	long lic_view_n;
	long lic_view_hint; /* no free slot below it */
	bool lic_view_synced; /* a reset filled it */
	bool lic_view_strays; /* keys past licenses: a count says nothing */
	struct sqlite3_stmt *lic_desk_st; /* a live session of a desk? */
	struct licenses_claim *lic_claims; /* its claims out */
	bool lic_again; /* a pass was asked for while one ran */
	int64_t lic_lease; /* the lease the last pass ran on */
	uint64_t lic_passes;
	/* desks.c: statements kept prepared (desks_prep) */
	struct desks_stmt {
		struct sqlite3_stmt *st; /* NULL: a free place */
		bool busy; /* handed out, not given back yet */
	} stmts[DESKS_STMTS];
	/* what desks need to reach NATS, in every session; NULL: nothing */
	json_t *messaging_auth;
	struct desks_stats stats;
};

struct desks_session {
	char user[CONFIG_NAME_MAX + 1];
	char desk[65];
	char version[32];
	int64_t created, seen, expired, seq;
	int64_t slot, slot_lease, slot_rev; /* rev: the slot key's mod_rev */
};

/* desks.c: sessions, channels, expiry, life */

/* The last handle of a freed desks module closed: free it. */
void desks_gone(struct desks *d);

void desks_res_ok(struct desks_res *r, json_t *body);

/* A channel with no allow list is open to every user. */
bool desks_allowed(const struct config *cfg, const struct config_channel *ch,
    const char *user);

/* Letters, digits, '.', '_' or '-', 1 to max of them. */
bool desks_word_ok(const char *s, size_t max);

/* The channels user may join, and which of them the session joined. */
json_t *desks_channels_json(
    struct desks *d, const char *token, const char *user);

/* The session's JSON, as login and resume answer it. */
json_t *desks_session_json(struct desks *d, const char *token,
    const struct desks_session *s, bool over);

void desks_res_error(struct desks_res *r, unsigned status, int err,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Log the database's error and fill *r with 500 EIO. */
void desks_db_error(struct desks *d, struct desks_res *r);

/*
 * A prepared statement of sql, or NULL (logged): one kept prepared from
 * an earlier use where there is one. Give it back with desks_unprep.
 */
struct sqlite3_stmt *desks_prep(struct desks *d, const char *sql);

/* Done with st from desks_prep: reset and kept, or finalized. NULL: no-op. */
void desks_unprep(struct desks *d, struct sqlite3_stmt *st);

/* Finalize the statements kept prepared and not in use. */
void desks_unprep_all(struct desks *d);

/*
 * The live session of token, touched. 0, or 401 EUNAUTHORIZED / EEXPIRED
 * in *r.
 */
int desks_session_get(struct desks *d, const char *token,
    struct desks_session *s, struct desks_res *r);

/* End a live session now (why: "idle", "replaced by ..."); its slot goes. */
void desks_session_expire(struct desks *d, const char *token,
    const struct desks_session *s, const char *why);

/* login.c: logins and resumes */

/*
 * The slot (its key's mod_revision rev) is claimed for p, or none (-1,
 * over the limit): write the session and answer.
 */
void desks_finish(
    struct desks_pending *p, int64_t slot, int64_t rev, bool over);

/* Answer p and free it. */
void desks_pending_done(struct desks_pending *p, struct desks_res *r);

/*
 * The resumes' queue: desks_resume and desks_events take a request in,
 * a few are run each loop turn; at the end, the waiting ones are
 * answered 503.
 */
void desks_resumes_init(struct desks *d);
void desks_resumes_close(struct desks *d, uv_close_cb closed);
/* Answer every request waiting its turn with r (its body is dropped). */
void desks_resumes_refuse(struct desks *d, const struct desks_res *r);

/* The request behind arg went away (desks_forget). */
void desks_resumes_forget(struct desks *d, void *arg);

/* desks.c: try the parked requests and logins again soon. */
void desks_park(struct desks *d);

/* The request behind arg went away (desks_forget). */
void desks_forget_parked(struct desks *d, void *arg);

/* events.c: a session's events and the requests waiting for them */

/*
 * Add an event to a session (data taken): written with the other session
 * writes of this loop turn in one transaction, then its waiting requests
 * are woken. 0, or -1 (out of memory, or the queue is full: logged).
 */
int desks_event_add(
    struct desks *d, const char *token, const char *type, json_t *data);

/* batch.c: the session writes of a loop turn, in one transaction */

/* The queue and its timer; at the end, a last write and the close. */
void desks_batch_init(struct desks *d);
void desks_batch_close(struct desks *d, uv_close_cb closed);

/*
 * Queue a write for the next commit (on the next loop turn): an event
 * (text: its data as JSON), the session marked active now (once a
 * batch), a channel left. 0, or -1 (logged).
 */
int desks_batch_event(
    struct desks *d, const char *token, const char *type, const char *text);
int desks_batch_touch(struct desks *d, const char *token);
int desks_batch_unjoin(struct desks *d, const char *token, const char *channel);

/*
 * Answer with r (its body taken) once every write queued so far is
 * committed; when that commit fails, 503 EUNAVAIL instead (the write
 * stays queued; the request may try again).
 */
void desks_batch_answer(
    struct desks *d, desks_cb cb, void *arg, struct desks_res *r);

/* The request behind arg went away: its held answer is dropped. */
void desks_batch_forget(struct desks *d, void *arg);

/* Flush on the next loop turn. */
void desks_batch_soon(struct desks *d);

/* desks_events, its turn come. */
void desks_events_now(struct desks *d, const char *token, int64_t after,
    long wait, desks_cb cb, void *arg);

/* Answer the requests of token waiting for events (new ones, or none). */
void desks_events_wake(struct desks *d, const char *token);

/* A request of token waits for events now: its desk is connected. */
bool desks_events_waiting(const struct desks *d, const char *token);

/* Answer a waiting request with r and remove it. */
void desks_waiter_answer(struct desks_waiter *w, struct desks_res *r);

/* limits.c */

/* Failed logins, at most max per key a minute (0: no limit). */
struct limits *limits_new(unsigned max);
void limits_free(struct limits *l);
/* A new number of failures allowed a minute (0: no limit). */
void limits_set_max(struct limits *l, unsigned max);

/*
 * How long key must wait before its next try (ms), 0 when it may; its
 * limit is times the configured one.
 */
int64_t limits_wait_ms(struct limits *l, const char *key, unsigned times);

/* Count a failure of key; a success clears it. */
void limits_failed(struct limits *l, const char *key);
void limits_clear(struct limits *l, const char *key);

/* licenses.c */

/* Start the reconciler (its timer). */
void licenses_init(struct desks *d);

/* Cancel what is out and close the timer (desks_free). */
void licenses_close(struct desks *d, uv_close_cb closed);

/* A slot for p: kept, claimed, taken over from the same desk, or none. */
void licenses_acquire(struct desks_pending *p);

/*
 * Free a slot held on this server's current lease, if the key is still
 * the one claimed (mod_revision rev): a retry cannot free another's.
 * A failure leaves it to the reconciler.
 */
void licenses_release(
    struct desks *d, int64_t slot, int64_t lease, int64_t rev);

/*
 * A claim of slot (its key now at mod_revision rev) for the session of
 * token came back: record it in the session, or give the slot back when
 * the session ended or holds another one. 0 kept, -1 given back.
 */
int licenses_keep(
    struct desks *d, const char *token, int64_t slot, int64_t rev);

/* Run the reconciler after ms (0: on the next loop turn). */
void licenses_reconcile_soon(struct desks *d, uint64_t ms);

/*
 * The licenses: {"limit","policy","in_use","held_here"}; in_use counts
 * the slots in etcd as the watch shows them (null while unknown, or with
 * no limit set).
 */
json_t *licenses_json(const struct desks *d, long held_here);

/* Cancel a read of the slots (a login's, the reconciler's) and free it. */
void licenses_scan_free(struct licenses_scan *sc);

#endif
