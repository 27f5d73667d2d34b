/*
 * Operator control actions (stop, start, failback) written to etcd with
 * an outcome that is always known or said to be unknown, never assumed.
 *
 * Each action is one txn that also creates a fence key,
 * control/<self>/<id> = "done", and applies only while that key is
 * absent. When its answer is lost (a timeout, a dropped connection), or
 * when the client's own retry finds the fence already there (the first
 * attempt was applied), the action reads the fence back:
 *
 * - "done": it was applied;
 * - absent: a second txn creates the fence as "void" if it is still
 *   absent, so the lost request can never apply later: not done;
 * - "void": an earlier read-back of this action fenced it: not done.
 *
 * A read-back that gets no answer either, CONTROL_TRIES times, leaves the
 * outcome unknown, and says so. Fences are kept CONTROL_FENCE_MS (a
 * request held inside etcd applies well within that) and deleted by the
 * next action of the same server; they carry no lease, so a fence never
 * goes with a lease and lies about an action that was applied.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

#define CONTROL_TRIES 5 /* read-backs, each retried by the client */
#define CONTROL_FENCE_MS 60000
#define CONTROL_DONE "done"
#define CONTROL_VOID "void"

struct agent_control {
	struct agent *a;
	struct etcd_req *req;
	char action[16];
	char server[CONFIG_NAME_MAX + 1];
	char *fence;
	unsigned tries;
	int first_err; /* why the write's answer was not taken as is */
	agent_control_cb cb;
	void *arg;
	struct agent_control *next;
};

static void
control_end(struct agent_control *c, enum agent_control_outcome outcome,
    bool read_back, int err)
{
	struct agent_control_result r;

	for (struct agent_control **pp = &c->a->controls; *pp;
	     pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	memset(&r, 0, sizeof(r));
	r.outcome = outcome;
	r.read_back = read_back;
	r.err = err;
	log_info("operator: %s %s: %s%s%s%s", c->action, c->server,
	    outcome == AGENT_CONTROL_DONE           ? "done"
		: outcome == AGENT_CONTROL_NOT_DONE ? "not done"
						    : "outcome unknown",
	    read_back ? " (read back after a lost answer: " : "",
	    read_back ? us_strerror(c->first_err) : "", read_back ? ")" : "");
	if (c->cb)
		c->cb(&r, c->arg);
	free(c->fence);
	free(c);
}

static void read_back(struct agent_control *c);

/* The fence's value decides, once it is known. */
static bool
fence_says(struct agent_control *c, const struct etcd_res *res)
{
	for (size_t i = 0; i < res->n_kvs; i++) {
		const struct etcd_kv *kv = &res->kvs[i];

		if (strcmp(kv->key, c->fence) != 0)
			continue;
		if (kv->value_len == strlen(CONTROL_DONE) &&
		    memcmp(kv->value, CONTROL_DONE, kv->value_len) == 0)
			control_end(c, AGENT_CONTROL_DONE, true, 0);
		else
			control_end(c, AGENT_CONTROL_NOT_DONE, true, 0);
		return true;
	}
	return false;
}

/* Another try, or the outcome stays unknown. */
static void
again(struct agent_control *c, int err)
{
	if (++c->tries < CONTROL_TRIES && !c->a->freeing) {
		read_back(c);
		return;
	}
	control_end(c, AGENT_CONTROL_UNKNOWN, true, err ? err : US_ETIMEDOUT);
}

static void
fenced(const struct etcd_res *res, void *arg)
{
	struct agent_control *c = arg;

	c->req = NULL;
	if (res->err) {
		again(c, res->err);
		return;
	}
	if (res->succeeded) {
		/* the fence is ours: the lost request can never apply now */
		control_end(c, AGENT_CONTROL_NOT_DONE, true, 0);
		return;
	}
	if (!fence_says(c, res))
		again(c, US_EPROTO); /* there, then gone: not ours to say */
}

static void
fence_read(const struct etcd_res *res, void *arg)
{
	struct agent_control *c = arg;
	struct etcd_txn *t;

	c->req = NULL;
	if (res->err) {
		again(c, res->err);
		return;
	}
	if (fence_says(c, res))
		return;
	if ((t = etcd_kv_txn_new()) != NULL &&
	    etcd_kv_txn_compare(t, c->fence, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0,
		NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, c->fence, CONTROL_VOID,
		strlen(CONTROL_VOID), 0) == 0 &&
	    etcd_kv_txn_get(t, false, c->fence, false) == 0) {
		c->req = etcd_kv_txn_commit(c->a->e, t, fenced, c);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	if (c->req == NULL)
		control_end(c, AGENT_CONTROL_UNKNOWN, true, US_ENOMEM);
}

static void
read_back(struct agent_control *c)
{
	c->req = etcd_kv_range(c->a->e, c->fence, false, fence_read, c);
	if (c->req == NULL)
		control_end(c, AGENT_CONTROL_UNKNOWN, true, US_ENOMEM);
}

static void
written(const struct etcd_res *res, void *arg)
{
	struct agent_control *c = arg;

	c->req = NULL;
	if (res->err == 0 && res->succeeded) {
		control_end(c, AGENT_CONTROL_DONE, false, 0);
		return;
	}
	/*
	 * no answer, or the fence was there already: a retry of the client
	 * after an attempt whose answer was lost
	 */
	c->first_err = res->err ? res->err : US_ETIMEDOUT;
	log_warn("operator: %s %s: %s; reading it back", c->action, c->server,
	    res->err ? us_strerror(res->err)
		     : "an earlier attempt was applied, its answer lost");
	read_back(c);
}

/* Delete this server's fences older than CONTROL_FENCE_MS. */
static void
fences_sweep(struct agent *a)
{
	char *from = agent_key(a, "control/%s/", a->self->name);
	char *to = agent_key(a, "control/%s/%015" PRId64, a->self->name,
	    time_wall_ms() - CONTROL_FENCE_MS);

	if (from && to)
		etcd_kv_delete_range(a->e, from, to, NULL, NULL);
	free(from);
	free(to);
}

int
agent_control(struct agent *a, const char *action, const char *server,
    const char *value, agent_control_cb cb, void *arg)
{
	struct agent_control *c = calloc(1, sizeof(*c));
	struct etcd_txn *t = etcd_kv_txn_new();
	char *key = NULL;
	int rc = US_ENOMEM;

	if (c == NULL || t == NULL)
		goto out;
	c->a = a;
	c->cb = cb;
	c->arg = arg;
	str_copy(c->action, action, sizeof(c->action));
	str_copy(c->server, server, sizeof(c->server));
	/* wall-clock ms first: fences sort by age, for the sweep */
	c->fence = agent_key(a, "control/%s/%015" PRId64 "-%" PRIu64,
	    a->self->name, time_wall_ms(), ++a->control_seq);
	key = agent_key(a, "%s/%s",
	    strcmp(action, "failback") == 0 ? "failback" : "stopped", server);
	if (c->fence == NULL || key == NULL ||
	    etcd_kv_txn_compare(t, c->fence, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0,
		NULL, 0) != 0 ||
	    etcd_kv_txn_put(
		t, true, c->fence, CONTROL_DONE, strlen(CONTROL_DONE), 0) != 0)
		goto out;
	/* stops are kept without a lease: they outlive restarts */
	if (strcmp(action, "start") == 0
		? etcd_kv_txn_delete(t, true, key, false) != 0
		: etcd_kv_txn_put(t, true, key, value, strlen(value), 0) != 0)
		goto out;
	fences_sweep(a);
	c->req = etcd_kv_txn_commit(a->e, t, written, c);
	t = NULL;
	if (c->req == NULL)
		goto out;
	c->next = a->controls;
	a->controls = c;
	c = NULL;
	rc = 0;
out:
	etcd_kv_txn_free(t);
	if (c)
		free(c->fence);
	free(c);
	free(key);
	return rc;
}

void
agent_control_cancel_all(struct agent *a)
{
	while (a->controls) {
		struct agent_control *c = a->controls;

		etcd_req_cancel(c->req);
		c->req = NULL;
		control_end(c, AGENT_CONTROL_UNKNOWN, false, US_ECANCELED);
	}
}
