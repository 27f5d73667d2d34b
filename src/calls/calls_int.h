/*
 * Between the files of the call model (calls.c, calls_commit.c) only:
 * their shared state and the functions they call in each other.
 */
#ifndef US_CALLS_INT_H
#define US_CALLS_INT_H

#include "calls.h"

#define CALLS_RATE_S 10
/*
 * Calls per txn, at most: each is a nested txn of 2 compares and 2 ops
 * a branch, beside the outer one's compare: 64 fit in etcd's default
 * --max-txn-ops (128), and the request stays near 100 KB.
 */
#define CALLS_BATCH_MAX 64
/*
 * Ends wait this long for others to share their txn: etcd's cost is
 * mostly per txn. A SIP BYE's answer does not wait for its end (the
 * port and the record come up to 50 ms later); an end that a request
 * waits for goes at once, with the ends queued before it.
 */
#define CALLS_END_GATHER_MS 50

struct call {
	char id[64];
	struct agent_post *post;
	long port;
	int64_t epoch;
	int64_t started; /* wall ms */
	char origin[8]; /* "http" or "sip" */
	bool ending;
	json_t *journal; /* its durable start, as written */
	int64_t jrev; /* the journal key's create revision */
	struct call *next;
};

struct op {
	struct calls *c;
	struct agent_post *post;
	long port; /* the port being claimed */
	int64_t epoch;
	unsigned attempts;
	unsigned unknown; /* sends whose outcome was not known */
	long next_other; /* next port held by another server to try */
	struct call *call; /* ending */
	bool transferred;
	char id[64];
	char origin[8];
	char route_point[64];
	char caller[128];
	char ended_by[16];
	int64_t start; /* wall ms the call came */
	json_t *journal; /* of the claim in flight */
	char *record; /* of an end: its record, as sent */
	calls_cb cb;
	void *arg;
	struct etcd_req *req; /* an undo's */
	struct op *qnext; /* in its queue, waiting for a txn */
	bool queued;
	bool waits; /* counted in calls->waiting */
	struct batch *batch; /* the txn carrying it */
	struct op *next;
};

/*
 * One txn carrying the claims of many calls on one post (the post's
 * epoch compared once), or the ends of many calls: each call's part is a
 * nested txn that holds or fails alone. At most one claim batch per post
 * and one end batch are out at a time: what comes meanwhile waits in the
 * queues and goes into the next one (group commit).
 */
struct batch {
	struct calls *c;
	bool end;
	struct agent_post *post; /* of the claims */
	int64_t epoch;
	struct op *ops[CALLS_BATCH_MAX];
	size_t n;
	unsigned unknown; /* sends whose outcome was not known */
	struct etcd_req *req;
	struct batch *next;
};

/* A BUSY record waiting for its txn. */
struct busyrec {
	char *key, *value;
	char id[64];
	struct busyrec *next;
};

struct calls {
	struct agent *a;
	struct records *rec;
	struct call *calls;
	struct op *ops;
	struct op *claimq, *endq; /* waiting for a txn, oldest first */
	struct batch *batches; /* out now */
	size_t waiting[2]; /* claims, ends not answered yet (queued or out) */
	uint64_t txns[2]; /* txns sent: of claims, of ends */
	uint64_t txn_calls[2]; /* calls they carried */
	uint64_t txn_hist[2][CALLS_TXN_BUCKETS]; /* txns by calls carried */
	uv_timer_t *flush_timer; /* its own: freed once closed */
	uv_timer_t *end_timer; /* the ends' gather window; freed once closed */
	uint64_t end_due; /* mono ms the queued ends go; 0: none queued */
	uv_timer_t *lag_timer; /* due every CALLS_LAG_TICK_MS */
	uint64_t lag_due; /* monotonic ms it is due next */
	uint64_t lag; /* ms it fired late last */
	uint64_t overload[2]; /* calls refused: backlog, loop lag */
	struct busyrec *busyq, **busyq_tail; /* BUSY records to write */
	size_t n_busyq;
	struct busyrec *busy_out; /* in the txn out */
	struct etcd_req *busy_req;
	unsigned busy_unknown;
	unsigned seq;
	uint64_t placed[2]; /* calls taken: by HTTP, by SIP */
	uint64_t ended[2]; /* calls ended: normally, transferred */
	uint64_t lost; /* calls lost with this server's lease */
	uint64_t busy; /* calls refused: no port free */
	void (*hangup)(const char *call, void *arg);
	void *hangup_arg;
	/* calls taken per second of the last CALLS_RATE_S (by mono second) */
	uint32_t rate[CALLS_RATE_S];
	uint64_t rate_sec[CALLS_RATE_S];
};

/* calls.c */

/* Forget op: out of its queue and its batch (whose answer skips it). */
void calls_op_free(struct op *op);

/* A new op of c, answered to cb with arg; NULL when out of memory. */
struct op *calls_op_new(struct calls *c, calls_cb cb, void *arg);

/* Give r to op's callback, if its caller is still there; op is freed. */
void calls_answer(struct op *op, struct calls_result *r);

/* r cleared, with err and msg (NULL: none). */
void calls_result_init(struct calls_result *r, int err, const char *msg);

/* Forget k, one of c's calls. */
void calls_call_remove(struct calls *c, struct call *k);

/* A port of p no one holds or claims, at or after from; -1. */
long calls_find_free_port(const struct agent_post *p, long from);

/* A port of p another server than self holds, at or after from; -1. */
long calls_find_other_port(
    const struct agent_post *p, const char *self, long from);

/* r says who serves p instead of this server; returns r->err. */
int calls_not_owner(
    struct calls *c, struct agent_post *p, struct calls_result *r);

/* The journal entry of op's call on port (-1: none, a BUSY), or NULL. */
json_t *calls_journal_new(
    struct calls *c, struct agent_post *p, const struct op *op, long port);

/* calls_commit.c */

/* Queue op for the next txn of its kind (head: a retry, first). */
void calls_commit_enqueue(struct op *op, bool head);

/*
 * Pick the port op claims next, and its journal entry; the port is
 * reserved until the answer. 0, or -1 when no port is left to try.
 */
int calls_commit_claim_prepare(struct op *op);

/* Queue the BUSY record of op, refused for ended_by ("busy", "overload"). */
void calls_commit_busy_record(struct calls *c, struct agent_post *p,
    const struct op *op, const char *ended_by);

/* Free b, a BUSY record not (or no longer) queued. */
void calls_commit_busyrec_free(struct busyrec *b);

/* Free b, out of c's batches; its ops no longer point at it. */
void calls_commit_batch_free(struct batch *b);

/* Undo this server's claim of call id on p, if it was made. */
void calls_commit_undo_claim(
    struct calls *c, struct agent_post *p, const char *id);

#endif
