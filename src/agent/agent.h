/*
 * The agent: this server's standing in the cluster. lease.c keeps the
 * server's etcd lease alive and fences the server when it cannot;
 * members.c writes the membership key on that lease and watches who else
 * is up.
 */
#ifndef US_AGENT_H
#define US_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/common.h"
#include "config/config.h"
#include "coord/coord.h"

struct agent;

/* lease.c */

struct lease;

struct lease_cbs {
	/* a lease is held (the first, or a fresh one after a loss) */
	void (*acquired)(struct lease *l, int64_t id, void *arg);
	/* the lease is gone or may be: stop serving now */
	void (*lost)(struct lease *l, const char *why, void *arg);
};

/*
 * Grant a lease of ttl seconds and keep it alive, renewing every quarter
 * of the TTL. The deadline of a held lease is the send time of its last
 * successful renewal + TTL - a margin: etcd counts from when it received
 * that renewal, which is later, so the server stops believing in the
 * lease before etcd can expire it. After a loss a fresh lease is granted;
 * the old one is never reused. cbs is copied.
 */
struct lease *lease_new(uv_loop_t *loop, struct etcd *e, unsigned ttl,
    const struct lease_cbs *cbs, void *arg);

/*
 * Revoke the lease (its keys go at once) and stop; done(arg) is called
 * when etcd answered or after a bound. NULL done is allowed.
 */
void lease_revoke(struct lease *l, void (*done)(void *arg), void *arg);

/* Stop renewing and free once closed. NULL is a no-op. */
void lease_free(struct lease *l);

/* The id of the lease held now, or 0. */
int64_t lease_id(const struct lease *l);

/* True when a lease is held and its deadline has not passed. */
bool lease_valid(const struct lease *l);

/* Why no valid lease is held ("granting", "fenced: ..."), or NULL. */
const char *lease_reason(const struct lease *l);

/* Milliseconds left before this server must consider itself fenced. */
int64_t lease_remaining_ms(const struct lease *l);

/* members.c */

struct members;

/* Called when some server comes or goes. */
typedef void (*members_cb)(
    struct members *m, const char *name, bool up, void *arg);

/*
 * Track every configured server from the member keys the agent's watch
 * passes on (members_reset, members_apply). self is this server's name
 * (copied).
 */
/* The configuration a new version brings (same servers). */
void members_set_config(struct members *m, const struct config *cfg);

struct members *members_new(struct etcd *e, const struct config *cfg,
    const char *self, members_cb cb, void *arg);

/* A watch reset: every member missing from evs is down. */
void members_reset(struct members *m, const struct etcd_event *evs, size_t n);

/* A change of the member key of name. */
void members_apply(
    struct members *m, const char *name, const struct etcd_event *ev);

/* The lease of an up member, or 0. */
int64_t members_lease(const struct members *m, const char *name);

/* How long this server has seen the member up (ms), 0 when down. */
int64_t members_up_for_ms(const struct members *m, const char *name);

/* True when this process has seen the member up at some point. */
bool members_ever_up(const struct members *m, const char *name);

/* Wall ms: up since, or seen down at. */
int64_t members_since(const struct members *m, const char *name);

/* The member's address and API port as it registered them, or NULL. */
const char *members_address(
    const struct members *m, const char *name, long *api_port);

/* Stop watching and free. NULL is a no-op. */
void members_free(struct members *m);

/*
 * Write this server's membership key on the lease (retrying until it is
 * written or the lease changes). A lease of 0 forgets the registration.
 */
void members_register(struct members *m, int64_t lease);

/* True once this server's key is written on the current lease. */
bool members_registered(const struct members *m);

/* True when the named server's key is present. */
bool members_is_up(const struct members *m, const char *name);

/* [{"name","up","since","address","api_port"}...] for /v1/status. */
json_t *members_json(const struct members *m);

/* The key prefix of a cluster's members: "/understudy/NAME/members/". */
char *members_prefix(const char *cluster);

/* history.c */

struct history;

#define HISTORY_KEEP 1000 /* events kept; older ones are deleted */
#define HISTORY_QUEUE_MAX 64 /* events waiting to be written */
#define HISTORY_RETRY_MS 1000 /* a write that failed is sent again */

/*
 * The cluster's history of failovers, failbacks, fences and restarts
 * (docs/protocol.md, History): each event is written by the server that
 * saw it, under history/<16-digit ms>-<server>-<n>, with a txn that
 * creates the key only if it is absent, so a send whose answer was lost
 * and is sent again never makes two events. Writes wait in a bounded
 * queue and are sent again every HISTORY_RETRY_MS until etcd answers
 * (a fenced server writes its fence once it has etcd again); after each
 * one, events past the newest HISTORY_KEEP are deleted. cluster and
 * server are copied. NULL on ENOMEM.
 */
struct history *history_new(
    uv_loop_t *loop, struct etcd *e, const char *cluster, const char *server);

/* Cancel what is out and free once closed. NULL is a no-op. */
void history_free(struct history *h);

/*
 * Queue the event ev (the reference is taken): kind "failover",
 * "failback", "fence" or "restart", at its "at" (ms). Adds "server"
 * (this one) and "id" (its key's last part). 0, or -1 when the queue
 * is full (logged: the event is lost) or on ENOMEM.
 */
int history_add(struct history *h, json_t *ev);

/*
 * The cover took its first call on post at wall ms at: the last
 * failover this server wrote for post gets first_call_ms and
 * first_call_after_ms (from its failure), with a txn that compares the
 * key's mod_revision. Once per failover; nothing if there is none.
 */
void history_first_call(struct history *h, const char *post, int64_t at);

/*
 * True while the last failover this server wrote for post has no first
 * call yet (the agent asks before it calls history_first_call).
 */
bool history_awaits_first_call(const struct history *h, const char *post);

/* The fence began at wall ms at, for why: remembered, not written. */
void history_fenced(struct history *h, int64_t at, const char *why);

/* A lease is held again at wall ms at: the fence event is queued. */
void history_unfenced(struct history *h, int64_t at);

/* The last failover this server wrote: its takeover ms, or -1. */
int64_t history_last_takeover_ms(const struct history *h);

/* pure parts, for the tests */

#define HISTORY_KINDS 4
/* "failover", "failback", "fence", "restart" */
extern const char *const history_kinds[HISTORY_KINDS];

/*
 * A list of kinds with commas ("failover,fence"; NULL or "": none) into
 * *out, bit i for history_kinds[i]: 0, or -1 for anything else.
 */
int history_kinds_parse(const char *s, unsigned *out);

/*
 * "<prefix><16-digit at>-<server>-<n>" into buf (len bytes): 0, or -1
 * when it does not fit or at is negative.
 */
int history_key(char *buf, size_t len, const char *prefix, int64_t at,
    const char *server, uint64_t n);

/* How many of count events to delete to keep keep: 0 or more. */
int64_t history_excess(int64_t count, int64_t keep);

/*
 * The event as the API gives it: a copy of the stored object v with
 * the words of its durations ("summary"), or NULL when v is not an
 * event (no kind or at).
 */
json_t *history_event_view(const json_t *v);

/* post.c */

/* A post's life as the cluster sees it (docs/protocol.md). */
enum post_state {
	POST_STATE_UNSERVED,
	POST_STATE_HOME,
	POST_STATE_COVERED, /* by cover */
	POST_STATE_FAILING_BACK /* home owns it; cover still holds ports */
};

enum post_event {
	POST_EV_HOME_CLAIMED, /* its home took it */
	POST_EV_COVER_CLAIMED, /* a cover took it */
	POST_EV_OWNER_LOST, /* nobody owns it */
	POST_EV_HANDED_HOME, /* the cover gave it back, holding busy ports */
	POST_EV_PORTS_RETURNED /* the cover released its last busy port */
};

struct agent_port {
	bool busy; /* a port key exists */
	bool reserved; /* this server is claiming it now */
	char server[CONFIG_NAME_MAX + 1];
	char call[64];
	int64_t since; /* wall ms */
	int64_t epoch;
	int64_t rev; /* etcd revision of the last change applied */
	int64_t lease; /* of the key, as the watch showed it (0: unknown) */
};

/*
 * An open call's durable start, calls/<post>/<call>: written without a
 * lease in the txn that takes the port, deleted in the txn that writes
 * its record, so a call whose server is gone is still known.
 */
struct agent_journal {
	char call[64];
	char server[CONFIG_NAME_MAX + 1];
	int64_t lease; /* of the server that took the call */
	int64_t create_rev; /* of the key: this incarnation */
	json_t *value; /* the journal object as written */
	bool closing; /* a txn closing it is out */
	struct agent_journal *next;
};

struct agent_post {
	struct agent *agent;
	const struct config_server *home;
	int index; /* of the home in the config's servers */
	/* the owner key as last seen */
	bool owned;
	char owner[CONFIG_NAME_MAX + 1];
	int64_t epoch; /* mod_revision of the owner key: the fencing token */
	int64_t owner_lease;
	struct agent_port *ports; /* home->media_ports of them, at least */
	long n_ports; /* allocated (a version that shrank keeps them) */
	enum post_state state;
	char cover[CONFIG_NAME_MAX + 1]; /* COVERED, FAILING_BACK: by whom */
	int64_t since; /* wall ms of the last transition */
	char reason[200]; /* placement's words */
	bool failback_requested;
	bool relinquishing; /* this server is handing it over: not serving */
	char handing_to[CONFIG_NAME_MAX + 1]; /* while relinquishing */
	char claimer[CONFIG_NAME_MAX + 1]; /* this server, for claim_done */
	int64_t claim_lease; /* the lease the pending write puts the key on */
	int64_t owner_rev; /* etcd revision of the last owner change seen */
	struct etcd_req *pending;
	struct agent_journal *journal; /* open calls of the post */
	int64_t release_asked; /* epoch whose services were asked to stop */
	int64_t released; /* epoch whose services have stopped */
	/* for the history (history.c): how the post last moved */
	int64_t owner_claimed_ms; /* claimed_ms of the owner key, or 0 */
	char lost_owner[CONFIG_NAME_MAX + 1]; /* the owner before */
	int64_t lost_lease; /* its lease */
	int64_t lost_at; /* wall ms this server saw it go, 0: never */
	bool lost_handover; /* it wrote the key over (a stop) */
	int64_t cover_claimed_ms; /* COVERED: when the cover took it */
	bool failback_operator; /* an operator asked for this failback */
};

/* The name of a state: "HOME", "COVERED", ... */
const char *post_state_name(enum post_state s);

/*
 * Feed an event; the post moves (and logs "post PA1: HOME -> COVERED(PA3)
 * (why)") if the event applies in its state. server is the new owner for
 * the claims, the cover for HANDED_HOME.
 */
void post_fsm(struct agent_post *p, enum post_event ev, const char *server,
    const char *why);

/* agent.c */

/*
 * The reconciler: watches everything of the cluster under
 * /understudy/<cluster>/, computes placement on every change and every
 * second, and converges: claims posts nobody owns that placement gives
 * it, hands over the posts it owns that placement gives another.
 * restarted: this worker replaces one that died; its covers get a short
 * head start on its own post, so the failover they began completes.
 */
struct agent *agent_new(uv_loop_t *loop, struct etcd *e,
    const struct config *cfg, const struct config_server *self,
    struct lease *lease, struct members *members, bool restarted);

/* Stop watching and acting; free. NULL is a no-op. */
void agent_free(struct agent *a);

/* The lease changed (granted or lost): act on it now. */
void agent_lease_changed(struct agent *a);

/* The post with this route point (or AA route point), or NULL. */
struct agent_post *agent_post_by_route_point(struct agent *a, const char *rp);

/* The i-th post (config order), or NULL past the last. */
struct agent_post *agent_post_at(struct agent *a, size_t i);

/* The post of that name (its home server's name), or NULL. */
struct agent_post *agent_post_find(struct agent *a, const char *name);

/*
 * True when this server may act for the post now: the owner key names
 * it, is on its current lease, the lease is valid, and it is not handing
 * the post over. *epoch gets the fencing token.
 */
bool agent_owns(
    const struct agent *a, const struct agent_post *p, int64_t *epoch);

/*
 * Counters since this worker started: posts it saw move to a cover, and
 * busy ports it saw go with their server's lease (calls lost).
 */
void agent_counters(
    const struct agent *a, uint64_t *failovers, uint64_t *calls_dropped);

/* The agent has read the cluster's state at least once. */
bool agent_synced(const struct agent *a);

/* An operator stopped that server. */
bool agent_stopped(const struct agent *a, const char *server);

/* "/understudy/<cluster>/<what>" in a new string. */
char *agent_key(const struct agent *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The whole cluster as this server sees it, for GET /v1/status. */
json_t *agent_status_json(const struct agent *a);

/* Ports of this post held by a server (busy or returning). */
long agent_ports_held(const struct agent_post *p, const char *server);

/*
 * After every reconcile (every change and every second): cb(arg), where
 * the calls module closes the records of calls lost with their server.
 */
void agent_on_reconciled(struct agent *a, void (*cb)(void *arg), void *arg);

/*
 * For every change of a license slot key (licenses/<n>) the watch
 * brings, also those of a reset: cb(ev, reset, arg), where the desks
 * module sees a slot of its session taken by a newer login elsewhere,
 * and keeps its view of the slots. A reset first calls cb(NULL, true,
 * arg): forget every slot; the events that follow (reset true) hold
 * every slot there is.
 */
void agent_on_license(struct agent *a,
    void (*cb)(const struct etcd_event *ev, bool reset, void *arg), void *arg);

/*
 * cb(kv, arg) for every event of the cluster's history (failover,
 * failback, fence, restart) written or rewritten (a failover's first
 * call) while this server watches; not for the ones a reset of the
 * watch reads again. NULL: no more.
 */
void agent_on_history(struct agent *a,
    void (*cb)(const struct etcd_kv *kv, void *arg), void *arg);

/*
 * True when the call's server is gone: its lease is no longer the lease
 * of a live member. *software is set when the server went down in
 * software (its master saw the worker die, or it stopped), with *at the
 * wall ms it went; otherwise its host or network was lost.
 */
bool agent_journal_orphaned(const struct agent *a,
    const struct agent_journal *j, bool *software, int64_t *at);

/*
 * Tell the cluster that a server's worker with this lease went down in
 * software (why: "crashed", "stopped"), before its lease is revoked:
 * gone/<server> = {"lease", "at", "why"}, without a lease.
 */
struct etcd_req *agent_write_gone(struct etcd *e, const char *cluster,
    const char *server, int64_t lease, const char *why, etcd_cb cb, void *arg);

/*
 * A call was taken on post p by this server at wall ms at: when it is
 * the first on a post this server covers since it took it, the
 * failover's event gets its first call (history.c).
 */
void agent_call_taken(struct agent *a, struct agent_post *p, int64_t at);

/* The history this server writes to (fences, in the worker). */
struct history *agent_history(const struct agent *a);

/* The configuration the agent runs on. */
const struct config *agent_config(const struct agent *a);

/* The admin primary's name, or NULL while there is none (admin.c). */
const char *agent_admin(const struct agent *a);

/* True when this server is the admin primary, on its valid lease. */
bool agent_is_admin(const struct agent *a);

/*
 * Run cfg from now on (a new configuration version): the same servers,
 * in the same order, with the same spares, or -1 and nothing changes (a
 * restart applies it). Placement runs at once. A post's media ports grow
 * at once (the view reads every key again); when they shrink, calls on
 * the cut ports are followed until they end and no new call takes them.
 * cfg must outlive the agent or the next call.
 */
int agent_set_config(struct agent *a, const struct config *cfg);

/* The etcd client and this server's lease, for the calls module. */
struct etcd *agent_etcd(const struct agent *a);
int64_t agent_lease_id(const struct agent *a);
const char *agent_self(const struct agent *a);

/*
 * Record a port key's state at etcd revision rev (server NULL: gone), as
 * a txn answer or the watch shows it. A change older than the last one
 * applied is ignored, so a late watch event never undoes a newer answer.
 */
void agent_port_set(struct agent_post *p, long number, const char *server,
    const char *call, int64_t since, int64_t epoch, int64_t rev);

/*
 * Before a post this server owns is handed over (or given up), its post
 * services must stop: release(p, arg) asks for that once per epoch, and
 * the hand-over waits (the post is not served meanwhile) until
 * agent_post_released() says they have stopped.
 */
void agent_on_release(struct agent *a,
    void (*release)(struct agent_post *p, void *arg), void *arg);

/* The services of the post named have stopped: the hand-over may go. */
void agent_post_released(struct agent *a, const char *post);

/*
 * Every service on every server, as the masters published them
 * (services/<server>/<name>): {"SERVER/NAME": {...}}; borrowed.
 */
json_t *agent_services(const struct agent *a);

/* control.c */

enum agent_control_outcome {
	AGENT_CONTROL_DONE, /* applied */
	AGENT_CONTROL_NOT_DONE, /* not applied, and it never will be */
	AGENT_CONTROL_UNKNOWN /* no answer, even to reading it back */
};

struct agent_control_result {
	enum agent_control_outcome outcome;
	bool read_back; /* the write's answer was lost; the fence told */
	int err; /* UNKNOWN: why (US_ETIMEDOUT, US_EUNAVAIL, US_ECANCELED) */
};

typedef void (*agent_control_cb)(
    const struct agent_control_result *r, void *arg);

/*
 * An operator's action on server: "stop" (writes stopped/SERVER =
 * value), "start" (deletes it) or "failback" (writes failback/SERVER =
 * value), in a txn whose outcome, when its answer is lost, is read back
 * (src/agent/control.c, docs/protocol.md). cb is called once, later, on
 * the loop (with UNKNOWN and US_ECANCELED when the agent is freed first).
 * Returns 0, or US_ENOMEM (and cb is never called).
 */
int agent_control(struct agent *a, const char *action, const char *server,
    const char *value, agent_control_cb cb, void *arg);

/*
 * ---- inside src/agent only ----
 * agent.c: reconciling and acting; view.c: the watch's view;
 * status.c: the status document.
 */

struct agent {
	uv_loop_t *loop;
	struct etcd *e;
	const struct config *cfg;
	const struct config_server *self;
	int self_index;
	struct lease *lease;
	struct members *members;
	char *prefix;
	size_t prefix_len;
	struct etcd_watch *watch;
	struct agent_post *posts;
	size_t n_posts;
	bool *stopped; /* per config server */
	uv_timer_t kick;
	uv_timer_t resync;
	bool synced;
	uint64_t synced_at;
	bool was_valid;
	bool restarted;
	uint64_t failovers; /* posts seen moving to a cover */
	uint64_t calls_dropped; /* busy ports seen going with their server */
	struct agent_gone {
		int64_t lease;
		int64_t at;
		char why[16];
	} * gone; /* per config server: its last software death */
	void (*reconciled)(void *arg);
	void *reconciled_arg;
	void (*license)(const struct etcd_event *ev, bool reset, void *arg);
	void *license_arg;
	void (*on_history)(const struct etcd_kv *kv, void *arg);
	void *on_history_arg;
	char admin[CONFIG_NAME_MAX + 1]; /* the admin primary, "" for none */
	int64_t admin_lease; /* the lease its key is on */
	struct etcd_req *admin_req; /* this server's bid */
	bool resetting; /* the events applied now are a reset's */
	struct agent_control *controls; /* control actions out */
	void (*release)(struct agent_post *p, void *arg);
	void *release_arg;
	json_t *services; /* services/<server>/<name> as the watch shows */
	uint64_t control_seq;
	struct history *history; /* the events this server saw */
	bool freeing;
	unsigned open_handles;
};

/* admin.c: the admin primary's key as the watch shows it, and the bid */
void admin_event(struct agent *a, const struct etcd_event *ev);
void admin_reset(struct agent *a);
void admin_reconcile(struct agent *a, bool valid);

/* agent.c */

/* The index of a configured server, or -1. */
int agent_server_index(const struct agent *a, const char *name);

/* Reconcile on the next loop turn. */
void agent_kick(struct agent *a);

/* control.c */

/* Cancel every action out: each gets its cb, UNKNOWN, US_ECANCELED. */
void agent_control_cancel_all(struct agent *a);

/* view.c */

/*
 * Record the owner key's state at revision rev (server NULL: no owner);
 * a change older than the last one applied is ignored.
 */
void agent_owner_record(struct agent_post *p, const char *server, int64_t epoch,
    int64_t lease, int64_t rev);

/* Forget a post's journal entries (a watch reset). */
void agent_journal_clear(struct agent_post *p);

/* The watch's callback: apply a change (or a reset), then reconcile. */
void agent_view_update(
    struct etcd_watch *w, const struct etcd_watch_update *u, void *arg);

#endif
