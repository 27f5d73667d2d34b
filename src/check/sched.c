/*
 * The scheduled check: the admin primary runs the cluster check at each
 * slot of check_schedule, in the thread pool (it blocks on every server's
 * answer), and writes the result to /understudy/<cluster>/check/last.
 * Every server reads that key every few seconds, for /metrics and
 * `understudy check --last`. The slot a result is for is in it, so a
 * new primary (after a failover) does not run a slot again.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "check.h"
#include "coord/coord.h"

#define SCHED_TICK_MS 1000
#define SCHED_READ_EVERY 2 /* ticks between two reads of check/last */

struct check_sched {
	uv_loop_t *loop;
	struct agent *agent;
	struct etcd *e;
	const struct config *cfg;
	char *ca;
	uv_timer_t tick;
	unsigned ticks;
	struct etcd_req *req; /* a read or a write of check/last */
	bool read_once; /* check/last was read (or found absent) once */
	json_t *last; /* the last result known */
	int64_t ran_slot; /* the slot this server last ran */
	/* a run in the thread pool */
	uv_work_t work;
	bool running;
	struct check_target target;
	json_t *result;
	int64_t slot;
	bool freeing;
};

static char *
sched_key(const struct check_sched *s)
{
	char *k = NULL;

	if (asprintf(&k, "/understudy/%s/check/last", s->cfg->cluster.name) < 0)
		return NULL;
	return k;
}

static void
sched_release(struct check_sched *s)
{
	json_decref(s->last);
	json_decref(s->result);
	free(s->ca);
	free(s);
}

static void
timer_closed(uv_handle_t *h)
{
	struct check_sched *s = h->data;

	/* a run in flight frees it when it ends */
	if (!s->running)
		sched_release(s);
	else
		s->freeing = true;
}

static void
read_done(const struct etcd_res *res, void *arg)
{
	struct check_sched *s = arg;
	json_t *o;

	s->req = NULL;
	if (res->err)
		return;
	s->read_once = true;
	if (res->n_kvs == 0)
		return;
	o = json_loadb(res->kvs[0].value, res->kvs[0].value_len, 0, NULL);
	if (json_is_object(o)) {
		json_decref(s->last);
		s->last = o;
		o = NULL;
	}
	json_decref(o);
}

static void
write_done(const struct etcd_res *res, void *arg)
{
	struct check_sched *s = arg;

	s->req = NULL;
	/* a lost answer: the next read shows which result is there */
	if (res->err)
		log_warn("check: keeping the result in etcd: %s",
		    res->message ? res->message : us_strerror(res->err));
}

static void
run_work(uv_work_t *w)
{
	struct check_sched *s = w->data;

	s->result = check_cluster(&s->target);
}

static void
run_done(uv_work_t *w, int status)
{
	struct check_sched *s = w->data;
	char *key, *text;
	json_t *r = s->result;

	(void)status;
	s->running = false;
	s->result = NULL;
	if (s->freeing) {
		json_decref(r);
		sched_release(s);
		return;
	}
	if (r == NULL) {
		log_error("check: the scheduled check ran out of memory");
		return;
	}
	json_object_set_new(r, "slot", json_integer(s->slot));
	json_object_set_new(r, "by", json_string(agent_self(s->agent)));
	json_object_set_new(r, "scheduled", json_true());
	if (json_is_true(json_object_get(r, "ok")))
		log_info("check: every check passed");
	else
		log_warn("check: %" JSON_INTEGER_FORMAT
			 " check(s) failed; see understudy check --last",
		    json_integer_value(json_object_get(r, "failures")));
	json_decref(s->last);
	s->last = r;
	key = sched_key(s);
	text = json_dumps(r, JSON_COMPACT);
	if (key && text) {
		etcd_req_cancel(s->req); /* a read older than this result */
		s->req = etcd_kv_put(
		    s->e, key, text, strlen(text), 0, write_done, s);
	}
	free(key);
	free(text);
}

/* The admin primary starts the run of a slot not run yet. */
static void
maybe_run(struct check_sched *s)
{
	const struct config_cluster *cl = &s->cfg->cluster;
	struct config_schedule sc;
	int64_t now = time_wall_ms(), slot, prev;
	char err[200];

	if (s->running || !s->read_once || cl->check_schedule == NULL ||
	    !agent_is_admin(s->agent) ||
	    config_schedule_parse(cl->check_schedule, &sc, err, sizeof(err)) !=
		0)
		return;
	slot = config_schedule_slot(&sc, now);
	prev = json_integer_value(json_object_get(s->last, "slot"));
	if (slot <= prev || slot <= s->ran_slot)
		return;
	if (s->ran_slot == 0 && prev == 0 &&
	    now - slot > sc.interval_s * 1000 / 2) {
		/* a fresh schedule runs at its next slot, not the past one */
		s->ran_slot = slot;
		return;
	}
	s->ran_slot = slot;
	s->slot = slot;
	memset(&s->target, 0, sizeof(s->target));
	s->target.cfg = s->cfg; /* the worker keeps every version it ran */
	s->target.token = cl->read_token ? cl->read_token : cl->admin_token;
	s->target.ca = s->ca;
	s->target.now_ms = now;
	s->target.since_ms =
	    json_integer_value(json_object_get(s->last, "time_ms"));
	if (s->target.since_ms <= 0)
		s->target.since_ms = now - CHECK_SINCE_DEFAULT_MS;
	s->work.data = s;
	if (uv_queue_work(s->loop, &s->work, run_work, run_done) == 0) {
		s->running = true;
		log_info("check: running the scheduled check (%s)",
		    cl->check_schedule);
	}
}

static void
tick_cb(uv_timer_t *t)
{
	struct check_sched *s = t->data;
	char *key;

	if (s->req == NULL && s->ticks++ % SCHED_READ_EVERY == 0 &&
	    (key = sched_key(s)) != NULL) {
		s->req = etcd_kv_range(s->e, key, false, read_done, s);
		free(key);
	}
	maybe_run(s);
}

struct check_sched *
check_sched_new(
    uv_loop_t *loop, struct agent *a, struct etcd *e, const char *ca)
{
	struct check_sched *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->loop = loop;
	s->agent = a;
	s->e = e;
	s->cfg = agent_config(a);
	if (ca && (s->ca = strdup(ca)) == NULL) {
		free(s);
		return NULL;
	}
	uv_timer_init(loop, &s->tick);
	s->tick.data = s;
	uv_timer_start(&s->tick, tick_cb, 0, SCHED_TICK_MS);
	return s;
}

void
check_sched_set_config(struct check_sched *s, const struct config *cfg)
{
	s->cfg = cfg;
}

const json_t *
check_sched_last(const struct check_sched *s)
{
	return s ? s->last : NULL;
}

void
check_sched_free(struct check_sched *s)
{
	if (s == NULL)
		return;
	etcd_req_cancel(s->req);
	s->req = NULL;
	uv_close((uv_handle_t *)&s->tick, timer_closed);
}
