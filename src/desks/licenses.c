/*
 * License slots (see desks.h and docs/protocol.md): a slot is the key
 * licenses/<n>, n < licenses, on the lease of the server holding the
 * session, its value {"server","user","desk"}. A session row remembers
 * its slot, the lease and the key's mod_revision at the claim, so a
 * release deletes exactly that key and nothing claimed since.
 *
 * Every way a session ends frees its slot at once; what a failure or an
 * unknown answer leaves behind is mended by the reconciler, which runs
 * when the lease changes (a restart: the restored sessions claim slots
 * again), after a failed release and every LICENSES_EVERY_MS. It makes
 * the slots on this server's lease equal to its live sessions.
 *
 * A login picks its slot from the view of the slots that the agent's
 * watch keeps (its desk's, or a free one), and reads etcd only when the
 * claim's compare shows the view behind, or the view looks full (then a
 * count of the keys says whether it is). Where the slots are read, it is
 * in pages of one snapshot (a cluster may have up to 1,000,000 licenses;
 * one answer for all of them is over the etcd client's cap past about
 * 30,000): a login keeps a bitmap of the slots taken and its desk's
 * slot, the reconciler what it needs of each slot.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "desks.h"

#define LICENSES_EVERY_MS 5000
#define LICENSES_RETRY_MS 500
#define LICENSES_TRIES 5 /* claims lost to another desk, per login */
#define LICENSES_PAGE 1000 /* slot keys per page of a read (~300 kB) */

/* A claim of the reconciler, for a live session without a slot. */
struct licenses_claim {
	struct desks *d;
	struct etcd_req *req;
	char token[DESKS_TOKEN_LEN + 1];
	long slot;
	struct licenses_claim *next;
};

/* One slot key as a range read it. */
struct slot_seen {
	bool present;
	int64_t mod_rev;
	int64_t lease;
	char server[CONFIG_NAME_MAX + 1];
	char user[CONFIG_NAME_MAX + 1];
	char desk[65];
};

static char *
slot_key(struct desks *d, long n)
{
	return agent_key(d->a, "licenses/%ld", n);
}

/* The slot number of a key under licenses/, or -1. */
static long
slot_number(const struct desks *d, const char *key)
{
	const char *slash = strrchr(key, '/');
	long n;

	if (slash == NULL ||
	    str_to_long(slash + 1, 0, d->cfg->cluster.licenses - 1, &n) != 0)
		return -1;
	return n;
}

/* One slot key of a range answer, or -1 when it is none. */
static long
slot_parse(const struct desks *d, const struct etcd_kv *kv, struct slot_seen *s)
{
	long n = slot_number(d, kv->key);
	const char *server = "", *user = "", *desk = "";
	json_t *o;

	if (n < 0)
		return -1;
	memset(s, 0, sizeof(*s));
	s->present = true;
	s->mod_rev = kv->mod_revision;
	s->lease = kv->lease;
	o = json_loadb(kv->value, kv->value_len, 0, NULL);
	json_unpack(o, "{s?s,s?s,s?s}", "server", &server, "user", &user,
	    "desk", &desk);
	str_copy(s->server, server, sizeof(s->server));
	str_copy(s->user, user, sizeof(s->user));
	str_copy(s->desk, desk, sizeof(s->desk));
	json_decref(o);
	return n;
}

/* ---- reading every slot, page by page, at one revision ---- */

struct licenses_scan;
typedef void (*scan_page_cb)(
    struct licenses_scan *sc, long n, const struct slot_seen *s);
typedef void (*scan_done_cb)(
    struct licenses_scan *sc, const struct etcd_res *res);

struct licenses_scan {
	struct desks *d;
	struct etcd_req *req;
	char *prefix;
	char *last; /* the last key given, the next page starts after it */
	size_t last_len;
	int64_t rev; /* of the first page: every page reads this snapshot */
	long limit;
	scan_page_cb page;
	scan_done_cb done;
	void *arg;
	/* what a login keeps: a bit per slot taken, its desk's slot */
	unsigned char *taken;
	long same;
	struct slot_seen same_slot;
	/* what the reconciler keeps: every slot, [licenses] */
	struct slot_seen *seen;
};

static void scan_next(struct licenses_scan *sc);

static void
scan_answer(const struct etcd_res *res, void *arg)
{
	struct licenses_scan *sc = arg;
	struct slot_seen s;
	char *k;

	sc->req = NULL;
	if (res->err == US_ETOOBIG && sc->limit > 1) {
		sc->limit /= 2; /* big values: smaller pages */
		log_info("desks: a page of license slots is over %u bytes; "
			 "pages of %ld keys now",
		    ETCD_RESPONSE_MAX, sc->limit);
		scan_next(sc);
		return;
	}
	if (res->err) {
		sc->done(sc, res);
		return;
	}
	if (sc->rev == 0)
		sc->rev = res->revision;
	for (size_t i = 0; i < res->n_kvs; i++) {
		long n = slot_parse(sc->d, &res->kvs[i], &s);

		if (n >= 0)
			sc->page(sc, n, &s);
	}
	if (!res->more || res->n_kvs == 0) {
		struct etcd_res end = *res;

		end.revision = sc->rev;
		sc->done(sc, &end);
		return;
	}
	k = malloc(res->kvs[res->n_kvs - 1].key_len + 1);
	if (k == NULL) {
		struct etcd_res oom;

		memset(&oom, 0, sizeof(oom));
		oom.err = US_ENOMEM;
		sc->done(sc, &oom);
		return;
	}
	memcpy(k, res->kvs[res->n_kvs - 1].key,
	    res->kvs[res->n_kvs - 1].key_len + 1);
	free(sc->last);
	sc->last = k;
	sc->last_len = res->kvs[res->n_kvs - 1].key_len;
	scan_next(sc);
}

static void
scan_next(struct licenses_scan *sc)
{
	struct etcd_res oom;

	sc->req = etcd_kv_range_page(agent_etcd(sc->d->a), sc->prefix, sc->last,
	    sc->last_len, sc->rev, sc->limit, scan_answer, sc);
	if (sc->req)
		return;
	memset(&oom, 0, sizeof(oom));
	oom.err = US_ENOMEM;
	sc->done(sc, &oom);
}

/*
 * Read every slot: page(n, slot) for each, then done(res) once, with
 * res->err, or the snapshot's revision. The caller frees the scan with
 * licenses_scan_free (in done, or before: that cancels it). NULL on
 * ENOMEM.
 */
static struct licenses_scan *
scan_start(struct desks *d, scan_page_cb page, scan_done_cb done, void *arg)
{
	struct licenses_scan *sc = calloc(1, sizeof(*sc));

	if (sc == NULL)
		return NULL;
	sc->d = d;
	sc->page = page;
	sc->done = done;
	sc->arg = arg;
	sc->limit = LICENSES_PAGE;
	sc->same = -1;
	if ((sc->prefix = agent_key(d->a, "licenses/")) == NULL) {
		free(sc);
		return NULL;
	}
	sc->req = etcd_kv_range_page(agent_etcd(d->a), sc->prefix, NULL, 0, 0,
	    sc->limit, scan_answer, sc);
	if (sc->req == NULL) {
		free(sc->prefix);
		free(sc);
		return NULL;
	}
	return sc;
}

void
licenses_scan_free(struct licenses_scan *sc)
{
	if (sc == NULL)
		return;
	etcd_req_cancel(sc->req);
	free(sc->prefix);
	free(sc->last);
	free(sc->taken);
	free(sc->seen);
	free(sc);
}

/*
 * A txn that claims slot n on this server's lease: when it is free
 * (rev 0) or still the key seen at rev (a slot of the same desk taken
 * over). It reads the key back, for its mod_revision. NULL on ENOMEM.
 */
static struct etcd_req *
claim_send(struct desks *d, long n, int64_t rev, const char *user,
    const char *desk, etcd_cb cb, void *arg)
{
	struct etcd_req *req = NULL;
	struct etcd_txn *t = etcd_kv_txn_new();
	char *key = slot_key(d, n), *value = NULL;
	json_t *o = json_pack("{s:s,s:s,s:s}", "server", agent_self(d->a),
	    "user", user, "desk", desk);

	value = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (key && value && t &&
	    etcd_kv_txn_compare(t, key, rev ? ETCD_CMP_MOD : ETCD_CMP_CREATE,
		ETCD_CMP_EQUAL, rev, NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, key, value, strlen(value),
		agent_lease_id(d->a)) == 0 &&
	    etcd_kv_txn_get(t, true, key, false) == 0) {
		req = etcd_kv_txn_commit(agent_etcd(d->a), t, cb, arg);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(key);
	free(value);
	return req;
}

/* The claimed key of a txn answer: its slot, its mod_revision. */
static long
claimed_slot(const struct desks *d, const struct etcd_res *res, int64_t *rev)
{
	for (size_t i = 0; i < res->n_kvs; i++) {
		long n = slot_number(d, res->kvs[i].key);

		if (n >= 0) {
			*rev = res->kvs[i].mod_revision;
			return n;
		}
	}
	return -1;
}

void
licenses_release(struct desks *d, int64_t slot, int64_t lease, int64_t rev)
{
	struct etcd_txn *t;
	char *key;

	if (slot < 0 || lease == 0 || lease != agent_lease_id(d->a))
		return; /* a slot of an old lease went with it */
	key = slot_key(d, (long)slot);
	t = etcd_kv_txn_new();
	/* rev 0: a session from before slot_rev was kept */
	if (key && t &&
	    etcd_kv_txn_compare(t, key, rev ? ETCD_CMP_MOD : ETCD_CMP_LEASE,
		ETCD_CMP_EQUAL, rev ? rev : lease, NULL, 0) == 0 &&
	    etcd_kv_txn_delete(t, true, key, false) == 0) {
		/*
		 * done, not done or unknown: the reconciler's next pass
		 * finds a slot on this lease that no session holds
		 */
		etcd_kv_txn_commit(agent_etcd(d->a), t, NULL, NULL);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(key);
	licenses_reconcile_soon(d, LICENSES_EVERY_MS);
}

/* ---- the slots as the watch shows them ---- */

/* Forget every slot (a reset of the watch: the slots follow). */
static void
view_forget(struct desks *d)
{
	for (long n = 0; d->lic_view && n < d->lic_view_n; n++) {
		free(d->lic_view[n]);
		d->lic_view[n] = NULL;
	}
	d->lic_view_strays = false;
	d->lic_view_hint = 0;
}

/*
 * Apply what the watch (or a claim's answer) says of one slot key; parsed
 * is its value parsed already, or NULL.
 */
static void
view_apply(struct desks *d, const struct etcd_event *ev,
    const struct slot_seen *parsed)
{
	struct slot_seen **v, s;
	long n;

	if (d->lic_view == NULL)
		return;
	if ((n = slot_number(d, ev->kv.key)) < 0 || n >= d->lic_view_n) {
		/* a key past licenses: a count of the keys says nothing */
		d->lic_view_strays = true;
		return;
	}
	v = &d->lic_view[n];
	if (*v && (*v)->mod_rev > ev->kv.mod_revision)
		return; /* older than what is known */
	if (ev->type == ETCD_EVENT_DELETE) {
		free(*v);
		*v = NULL;
		if (n < d->lic_view_hint)
			d->lic_view_hint = n;
		return;
	}
	if (parsed)
		s = *parsed;
	else if (slot_parse(d, &ev->kv, &s) < 0)
		return;
	if (*v == NULL && (*v = malloc(sizeof(**v))) == NULL)
		return;
	**v = s;
}

/* The slot of user's desk in the view, or -1. */
static long
view_desk(const struct desks *d, const char *user, const char *desk)
{
	for (long n = 0; n < d->lic_view_n; n++) {
		const struct slot_seen *s = d->lic_view[n];

		if (s && strcmp(s->user, user) == 0 &&
		    strcmp(s->desk, desk) == 0)
			return n;
	}
	return -1;
}

static bool claim_out(const struct desks *d, long n);

/* A slot free in the view, none of this server's claims out for; -1. */
static long
view_free(struct desks *d)
{
	long n;

	for (n = d->lic_view_hint; n < d->lic_view_n && d->lic_view[n]; n++)
		;
	d->lic_view_hint = n;
	for (; n < d->lic_view_n; n++)
		if (d->lic_view[n] == NULL && !claim_out(d, n))
			return n;
	return -1;
}

/* ---- a login's or a resume's slot ---- */

/* Answer p with an error. */
static void
fail(struct desks_pending *p, unsigned status, int err, const char *msg)
{
	struct desks_res r;

	desks_res_error(&r, status, err, "%s", msg);
	desks_pending_done(p, &r);
}

/* An etcd answer about the license slots failed: say so. */
static bool
slots_failed(struct desks_pending *p, const struct etcd_res *res)
{
	char msg[200];

	p->req = NULL;
	p->claiming = -1;
	if (res->err == 0)
		return false;
	snprintf(msg, sizeof(msg),
	    "cannot count licenses in the coordination store: %s",
	    us_strerror(res->err));
	fail(p, 503, US_EUNAVAIL, msg);
	return true;
}

static void
over_limit(struct desks_pending *p)
{
	struct desks_res r;

	if (p->d->cfg->cluster.license_policy == CONFIG_LICENSE_ENFORCE) {
		log_warn("desks: %s on desk %s refused: all %ld licenses are "
			 "in use",
		    p->user, p->desk, p->d->cfg->cluster.licenses);
		desks_res_error(&r, 403, US_ENOLICENSE,
		    "all %ld desk licenses of the cluster are in use",
		    p->d->cfg->cluster.licenses);
		desks_pending_done(p, &r);
		return;
	}
	desks_finish(p, -1, 0, true);
}

static void
slot_claimed(const struct etcd_res *res, void *arg)
{
	struct desks_pending *p = arg;
	int64_t rev = 0;
	long n;

	if (slots_failed(p, res))
		return;
	if (!res->succeeded) {
		if (++p->tries < LICENSES_TRIES) {
			licenses_acquire(p); /* another desk took it first */
			return;
		}
		over_limit(p);
		return;
	}
	n = claimed_slot(p->d, res, &rev);
	desks_finish(p, n, n >= 0 ? rev : 0, false);
}

/* A resume whose desk logged in again elsewhere: its session is over. */
static void
replaced(struct desks_pending *p, const struct slot_seen *s)
{
	struct desks_session sess;
	struct desks_res r;
	char why[128];

	snprintf(why, sizeof(why), "replaced by a new login on this desk at %s",
	    s->server);
	if (desks_session_get(p->d, p->token, &sess, &r) == 0)
		desks_session_expire(p->d, p->token, &sess, why);
	desks_res_error(&r, 401, US_EEXPIRED,
	    "the session ended (%s); log "
	    "in again",
	    why);
	desks_pending_done(p, &r);
}

/* A page of a login's read: note the slots taken and its desk's. */
static void
login_page(struct licenses_scan *sc, long n, const struct slot_seen *s)
{
	struct desks_pending *p = sc->arg;

	sc->taken[n / 8] |= (unsigned char)(1u << (n % 8));
	if (sc->same < 0 && strcmp(s->user, p->user) == 0 &&
	    strcmp(s->desk, p->desk) == 0) {
		sc->same = n;
		sc->same_slot = *s;
	}
}

static void
slots_read(struct licenses_scan *sc, const struct etcd_res *res)
{
	struct desks_pending *p = sc->arg;
	struct desks *d = p->d;
	long limit = d->cfg->cluster.licenses, n;
	int64_t rev = 0;

	p->scan = NULL; /* freed below, whatever happens */
	if (slots_failed(p, res)) {
		licenses_scan_free(sc);
		return;
	}
	if (p->resume && sc->same >= 0 &&
	    strcmp(sc->same_slot.server, agent_self(d->a)) != 0) {
		replaced(p, &sc->same_slot);
		licenses_scan_free(sc);
		return;
	}
	/*
	 * a live session of this desk here is the only one (a newer login
	 * here ends the older): a slot of the desk on this lease is a
	 * leftover of this server, and it goes to this session
	 */
	if (sc->same >= 0) {
		/* the same desk's slot goes to its new session */
		n = sc->same;
		rev = sc->same_slot.mod_rev;
	} else {
		for (n = 0; n < limit && sc->taken[n / 8] == 0xff; n += 8)
			;
		for (n = n < limit ? n : limit;
		     n < limit && (sc->taken[n / 8] & (1u << (n % 8))); n++)
			;
		if (n == limit) {
			licenses_scan_free(sc);
			over_limit(p);
			return;
		}
	}
	licenses_scan_free(sc);
	p->claiming = n;
	p->req = claim_send(d, n, rev, p->user, p->desk, slot_claimed, p);
	if (p->req == NULL) {
		p->claiming = -1;
		fail(p, 500, US_ENOMEM, "out of memory");
	}
}

/* The view's free slot was claimed, or the view was behind. */
static void
view_claimed(const struct etcd_res *res, void *arg)
{
	struct desks_pending *p = arg;
	int64_t rev = 0;
	long n;

	if (slots_failed(p, res))
		return;
	if (!res->succeeded) {
		p->tries++; /* the view was behind: read the slots */
		licenses_acquire(p);
		return;
	}
	if ((n = claimed_slot(p->d, res, &rev)) >= 0) {
		struct etcd_event ev;

		/* taken now, for the next login before the watch says so */
		memset(&ev, 0, sizeof(ev));
		ev.type = ETCD_EVENT_PUT;
		for (size_t i = 0; i < res->n_kvs; i++)
			if (slot_number(p->d, res->kvs[i].key) == n)
				ev.kv = res->kvs[i];
		if (ev.kv.key)
			view_apply(p->d, &ev, NULL);
	}
	desks_finish(p, n, n >= 0 ? rev : 0, false);
}

/* The view looks full: a count of the keys, not a read, says if it is. */
static void
view_counted(const struct etcd_res *res, void *arg)
{
	struct desks_pending *p = arg;
	struct desks *d = p->d;

	if (slots_failed(p, res))
		return;
	if (res->count >= d->cfg->cluster.licenses && !d->lic_view_strays) {
		over_limit(p);
		return;
	}
	p->tries++; /* one is free after all: read the slots */
	licenses_acquire(p);
}

static void
view_claim(struct desks_pending *p)
{
	struct desks *d = p->d;
	long n = view_desk(d, p->user, p->desk);
	int64_t rev = 0;
	char *prefix;

	if (n >= 0 && p->resume &&
	    strcmp(d->lic_view[n]->server, agent_self(d->a)) != 0) {
		replaced(p, d->lic_view[n]);
		return;
	}
	if (n >= 0) {
		rev = d->lic_view[n]->mod_rev; /* the desk's slot goes to it */
	} else if ((n = view_free(d)) < 0) {
		prefix = agent_key(d->a, "licenses/");
		p->req = prefix
		    ? etcd_kv_count(agent_etcd(d->a), prefix, view_counted, p)
		    : NULL;
		free(prefix);
		if (p->req == NULL)
			fail(p, 500, US_ENOMEM, "out of memory");
		return;
	}
	p->claiming = n;
	p->req = claim_send(d, n, rev, p->user, p->desk, view_claimed, p);
	if (p->req == NULL) {
		p->claiming = -1;
		fail(p, 500, US_ENOMEM, "out of memory");
	}
}

void
licenses_acquire(struct desks_pending *p)
{
	struct desks *d = p->d;
	struct desks_session s;
	struct desks_res r;

	if (d->cfg->cluster.licenses == 0) {
		desks_finish(p, -1, 0, false);
		return;
	}
	if (agent_lease_id(d->a) == 0) {
		desks_res_error(&r, 503, US_EFENCED,
		    "this server holds no lease now; try another server");
		desks_pending_done(p, &r);
		return;
	}
	if (p->resume && desks_session_get(d, p->token, &s, &r) == 0 &&
	    s.slot >= 0 && s.slot_lease == agent_lease_id(d->a)) {
		desks_finish(p, -1, 0, false); /* it holds one on this lease */
		return;
	}
	/*
	 * the watch's view first: a claim compares, so a view behind etcd
	 * costs a failed compare, then the slots are read
	 */
	if (p->tries == 0 && d->lic_view_synced && d->lic_view) {
		view_claim(p);
		return;
	}
	p->scan = scan_start(d, login_page, slots_read, p);
	if (p->scan &&
	    (p->scan->taken = calloc(
		 (size_t)(d->cfg->cluster.licenses + 7) / 8, 1)) == NULL) {
		licenses_scan_free(p->scan);
		p->scan = NULL;
	}
	if (p->scan == NULL)
		fail(p, 500, US_ENOMEM, "out of memory");
}

/* ---- the reconciler ---- */

static void again_if_asked(struct desks *d);

static void
claim_free(struct licenses_claim *c)
{
	struct desks *d = c->d;

	for (struct licenses_claim **pp = &d->lic_claims; *pp;
	     pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	free(c);
	again_if_asked(d);
}

int
licenses_keep(struct desks *d, const char *token, int64_t slot, int64_t rev)
{
	int64_t lease = agent_lease_id(d->a), has = -1, had_rev = 0;
	bool live = false;
	sqlite3_stmt *st;
	int rc = SQLITE_ERROR;

	if ((st = desks_prep(d,
		 "SELECT slot, slot_lease, slot_rev FROM sessions WHERE "
		 "token = ? AND expired_ms = 0")) == NULL)
		goto give_back;
	sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		live = true;
		if (sqlite3_column_int64(st, 0) >= 0 &&
		    sqlite3_column_int64(st, 1) == lease) {
			has = sqlite3_column_int64(st, 0);
			had_rev = sqlite3_column_int64(st, 2);
		}
	}
	desks_unprep(d, st);
	if (!live || (has >= 0 && has != slot))
		goto give_back; /* ended, or holds another one */
	if (has == slot && had_rev >= rev)
		return 0; /* a later claim of the same key is recorded */
	/* the same key claimed again (its mod_revision moved), or a first */
	if ((st = desks_prep(d,
		 "UPDATE sessions SET slot = ?, slot_lease = ?, slot_rev = ? "
		 "WHERE token = ?")) == NULL)
		goto give_back;
	sqlite3_bind_int64(st, 1, slot);
	sqlite3_bind_int64(st, 2, lease);
	sqlite3_bind_int64(st, 3, rev);
	sqlite3_bind_text(st, 4, token, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	desks_unprep(d, st);
	if (rc == SQLITE_DONE)
		return 0;
give_back:
	licenses_release(d, slot, lease, rev);
	return -1;
}

static void
reconcile_claimed(const struct etcd_res *res, void *arg)
{
	struct licenses_claim *c = arg;
	struct desks *d = c->d;
	int64_t rev = 0;
	long n;

	if (res->err || !res->succeeded) {
		/* taken meanwhile, or unknown: the next pass sees */
		licenses_reconcile_soon(d, LICENSES_RETRY_MS);
		claim_free(c);
		return;
	}
	if ((n = claimed_slot(d, res, &rev)) >= 0 &&
	    licenses_keep(d, c->token, n, rev) == 0)
		log_info("desks: a restored session holds license slot %ld "
			 "again",
		    n);
	claim_free(c);
}

/* True when a login or resume of this server has a claim out for n. */
static bool
claim_out(const struct desks *d, long n)
{
	for (const struct desks_pending *p = d->pending; p; p = p->next)
		if (p->claiming == n)
			return true;
	return false;
}

/* True when a login or resume of this session is on its way. */
static bool
pending_for(const struct desks *d, const char *token)
{
	for (const struct desks_pending *p = d->pending; p; p = p->next)
		if (strcmp(p->token, token) == 0)
			return true;
	return false;
}

/* Slots on this lease that no live session holds: free them. */
static void
drop_orphans(struct desks *d, const struct slot_seen *seen, int64_t lease)
{
	for (long n = 0; n < d->cfg->cluster.licenses; n++) {
		sqlite3_stmt *st;
		bool held = true;
		int rc;

		if (!seen[n].present || seen[n].lease != lease ||
		    claim_out(d, n))
			continue;
		if ((st = desks_prep(d,
			 "SELECT 1 FROM sessions WHERE expired_ms = 0 AND "
			 "slot = ? AND slot_lease = ? AND slot_rev IN (?, "
			 "0)")) == NULL)
			continue;
		sqlite3_bind_int64(st, 1, n);
		sqlite3_bind_int64(st, 2, lease);
		sqlite3_bind_int64(st, 3, seen[n].mod_rev);
		rc = sqlite3_step(st);
		/* a read that failed tells nothing: the next pass asks again */
		held = rc != SQLITE_DONE;
		desks_unprep(d, st);
		if (!held) {
			log_warn("desks: license slot %ld held by no session "
				 "(a lost answer): freed",
			    n);
			licenses_release(d, n, lease, seen[n].mod_rev);
		}
	}
}

/* A newer login of its desk on another server took its slot: it ends. */
static void
replaced_here(struct desks *d, const char *token, const struct desks_session *s,
    const struct slot_seen *k)
{
	char why[128];

	snprintf(why, sizeof(why), "replaced by a new login on this desk at %s",
	    k->server);
	desks_session_expire(d, token, s, why);
}

/* Give a live session a slot, or end it where none is free. */
static void
claim_for(struct desks *d, struct slot_seen *seen, int64_t lease,
    const char *token, const struct desks_session *s)
{
	struct licenses_claim *c;
	long n, limit = d->cfg->cluster.licenses;

	int64_t rev = 0;
	bool old_self = false;

	for (n = 0; n < limit; n++) {
		if (!seen[n].present || strcmp(seen[n].user, s->user) != 0 ||
		    strcmp(seen[n].desk, s->desk) != 0)
			continue;
		if (seen[n].lease == lease) {
			/* a leftover of this server's own (being freed) */
			licenses_reconcile_soon(d, LICENSES_RETRY_MS);
			return;
		}
		if (strcmp(seen[n].server, agent_self(d->a)) != 0) {
			replaced_here(d, token, s, &seen[n]);
			return;
		}
		/* this server's slot from before a restart: take it over */
		rev = seen[n].mod_rev;
		break;
	}
	if (n == limit)
		for (n = 0; n < limit && seen[n].present; n++)
			old_self = old_self ||
			    (seen[n].lease != lease &&
				strcmp(seen[n].server, agent_self(d->a)) == 0);
	if (n == limit && old_self) {
		/* slots of this server's dead lease go when it expires */
		licenses_reconcile_soon(d, LICENSES_RETRY_MS);
		return;
	}
	if (n == limit) {
		if (d->cfg->cluster.license_policy == CONFIG_LICENSE_ENFORCE)
			desks_session_expire(d, token, s,
			    "no license free for it after the server came "
			    "back");
		return; /* warn: it stays over the limit */
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->d = d;
	c->slot = n;
	str_copy(c->token, token, sizeof(c->token));
	c->req = claim_send(d, n, rev, s->user, s->desk, reconcile_claimed, c);
	if (c->req == NULL) {
		free(c);
		return;
	}
	seen[n].present = true; /* not twice in this pass */
	str_copy(seen[n].user, s->user, sizeof(seen[n].user));
	str_copy(seen[n].desk, s->desk, sizeof(seen[n].desk));
	c->next = d->lic_claims;
	d->lic_claims = c;
}

/*
 * Every live session: its slot still the one it claimed, taken over by
 * a newer login of its desk (it ends), gone (claimed again), or none.
 */
static void
check_sessions(
    struct desks *d, struct slot_seen *seen, int64_t lease, int64_t at_rev)
{
	struct desks_session *rows = NULL, *grown;
	char(*tokens)[DESKS_TOKEN_LEN + 1] = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st;

	/* read, not touched: the reconciler keeps no session alive */
	if ((st = desks_prep(d,
		 "SELECT token, user, desk, slot, slot_lease, slot_rev FROM "
		 "sessions WHERE expired_ms = 0 AND seen_ms >= ?")) == NULL)
		return;
	/* idle past the timeout: the sweep ends it, no slot for it now */
	sqlite3_bind_int64(
	    st, 1, time_wall_ms() - d->cfg->cluster.session_timeout * 1000);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (n == cap) {
			void *t2;

			cap = cap ? cap * 2 : 64;
			if ((grown = realloc(rows, cap * sizeof(*rows))) ==
			    NULL)
				break;
			rows = grown;
			if ((t2 = realloc(tokens, cap * sizeof(*tokens))) ==
			    NULL)
				break;
			tokens = t2;
		}
		memset(&rows[n], 0, sizeof(rows[n]));
		str_copy(tokens[n], (const char *)sqlite3_column_text(st, 0),
		    sizeof(tokens[n]));
		str_copy(rows[n].user, (const char *)sqlite3_column_text(st, 1),
		    sizeof(rows[n].user));
		str_copy(rows[n].desk, (const char *)sqlite3_column_text(st, 2),
		    sizeof(rows[n].desk));
		rows[n].slot = sqlite3_column_int64(st, 3);
		rows[n].slot_lease = sqlite3_column_int64(st, 4);
		rows[n].slot_rev = sqlite3_column_int64(st, 5);
		n++;
	}
	desks_unprep(d, st);
	for (size_t i = 0; i < n; i++) {
		struct desks_session *s = &rows[i];

		if (pending_for(d, tokens[i]))
			continue;
		if (s->slot >= 0 && s->slot_lease == lease) {
			struct slot_seen *k;

			if (s->slot >= d->cfg->cluster.licenses ||
			    s->slot_rev > at_rev || s->slot_rev == 0)
				continue; /* newer than what was read */
			k = &seen[s->slot];
			if (k->present && k->mod_rev == s->slot_rev)
				continue;
			if (k->present && k->lease != lease &&
			    strcmp(k->user, s->user) == 0 &&
			    strcmp(k->desk, s->desk) == 0) {
				replaced_here(d, tokens[i], s, k);
				continue;
			}
		}
		claim_for(d, seen, lease, tokens[i], s);
	}
	free(rows);
	free(tokens);
}

/*
 * A pass asked for while another ran (a slot event after its read
 * began): the snapshot it read may not show that event; run another.
 */
static void
again_if_asked(struct desks *d)
{
	if (d->lic_again && !d->freeing && d->lic_scan == NULL &&
	    d->lic_claims == NULL) {
		d->lic_again = false;
		licenses_reconcile_soon(d, 0);
	}
}

static void
reconcile_page(struct licenses_scan *sc, long n, const struct slot_seen *s)
{
	sc->seen[n] = *s;
}

static void
reconcile_read(struct licenses_scan *sc, const struct etcd_res *res)
{
	struct desks *d = sc->d;
	int64_t lease = agent_lease_id(d->a);

	d->lic_scan = NULL; /* freed below */
	if (res->err) {
		log_warn("desks: cannot read the license slots: %s%s%s",
		    us_strerror(res->err), res->message ? ": " : "",
		    res->message ? res->message : "");
		licenses_scan_free(sc);
		licenses_reconcile_soon(d, LICENSES_RETRY_MS * 2);
		return;
	}
	if (lease != 0 && !d->freeing) {
		drop_orphans(d, sc->seen, lease);
		check_sessions(d, sc->seen, lease, res->revision);
		d->lic_lease = lease;
		d->lic_passes++;
	}
	licenses_scan_free(sc);
	again_if_asked(d);
}

static void
reconcile(uv_timer_t *t)
{
	struct desks *d = t->data;
	struct slot_seen *seen;

	if (d->lic_scan || d->lic_claims) {
		/* one at a time; the next starts when this one is done */
		d->lic_again = true;
		return;
	}
	if (d->cfg->cluster.licenses == 0 || agent_lease_id(d->a) == 0 ||
	    d->freeing)
		return; /* the timer comes back */
	seen = calloc((size_t)d->cfg->cluster.licenses, sizeof(*seen));
	if (seen == NULL)
		return;
	if ((d->lic_scan = scan_start(d, reconcile_page, reconcile_read, d)) ==
	    NULL) {
		free(seen);
		return;
	}
	d->lic_scan->seen = seen;
}

uint64_t
licenses_checks(const struct desks *d)
{
	return d->lic_passes;
}

json_t *
licenses_json(const struct desks *d, long held_here)
{
	const struct config_cluster *c = &d->cfg->cluster;
	json_t *in_use = json_null();
	long n = 0;

	if (c->licenses > 0 && d->lic_view && d->lic_view_synced &&
	    !d->lic_view_strays) {
		for (long i = 0; i < d->lic_view_n; i++)
			n += d->lic_view[i] != NULL;
		in_use = json_integer(n);
	}
	return json_pack("{s:I,s:s,s:o,s:I}", "limit", (json_int_t)c->licenses,
	    "policy",
	    c->license_policy == CONFIG_LICENSE_ENFORCE ? "enforce" : "warn",
	    "in_use", in_use, "held_here", (json_int_t)held_here);
}

void
licenses_reconcile_soon(struct desks *d, uint64_t ms)
{
	uint64_t due = uv_timer_get_due_in(&d->lic_timer);

	if (d->freeing || d->cfg->cluster.licenses == 0)
		return;
	if (d->lic_scan || d->lic_claims)
		d->lic_again = true; /* after the pass that runs now */
	if (due == 0 || ms < due)
		uv_timer_start(&d->lic_timer, reconcile, ms, LICENSES_EVERY_MS);
}

/*
 * A slot written by another server for a desk with a live session here:
 * that session was replaced by a newer login; end it now, not at the
 * next pass. A reset's slots only fill the view: a burst of thousands,
 * where the reconciler's next pass finds what was replaced.
 */
static void
slot_event(const struct etcd_event *ev, bool reset, void *arg)
{
	struct desks *d = arg;
	struct slot_seen s, *was;
	sqlite3_stmt *st;
	bool here = false, parsed;
	long n;

	if (d->freeing)
		return;
	if (ev == NULL) {
		view_forget(d); /* every slot there is follows */
		d->lic_view_synced = true;
		return;
	}
	n = slot_number(d, ev->kv.key);
	was = n >= 0 && n < d->lic_view_n ? d->lic_view[n] : NULL;
	parsed = ev->type == ETCD_EVENT_PUT && slot_parse(d, &ev->kv, &s) >= 0;
	/* the same holder written again says nothing new */
	if (!reset && parsed && strcmp(s.server, agent_self(d->a)) != 0 &&
	    !(was && strcmp(was->server, s.server) == 0 &&
		strcmp(was->user, s.user) == 0 &&
		strcmp(was->desk, s.desk) == 0)) {
		/* prepared once: a burst of slots must not stall the loop */
		if (d->lic_desk_st == NULL)
			d->lic_desk_st = desks_prep(d,
			    "SELECT 1 FROM sessions WHERE user = ? AND desk = "
			    "? AND expired_ms = 0");
		if ((st = d->lic_desk_st) != NULL) {
			sqlite3_bind_text(st, 1, s.user, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, s.desk, -1, SQLITE_STATIC);
			here = sqlite3_step(st) == SQLITE_ROW;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
		}
	}
	view_apply(d, ev, parsed ? &s : NULL);
	if (here)
		licenses_reconcile_soon(d, 0);
}

void
licenses_init(struct desks *d)
{
	if (d->cfg->cluster.licenses > 0 &&
	    (d->lic_view = calloc((size_t)d->cfg->cluster.licenses,
		 sizeof(*d->lic_view))) != NULL)
		d->lic_view_n = d->cfg->cluster.licenses;
	agent_on_license(d->a, slot_event, d);
	uv_timer_init(d->loop, &d->lic_timer);
	d->lic_timer.data = d;
	if (d->cfg->cluster.licenses > 0)
		uv_timer_start(&d->lic_timer, reconcile, 0, LICENSES_EVERY_MS);
}

void
licenses_close(struct desks *d, uv_close_cb closed)
{
	agent_on_license(d->a, NULL, NULL);
	desks_unprep(d, d->lic_desk_st);
	d->lic_desk_st = NULL;
	view_forget(d);
	free(d->lic_view);
	d->lic_view = NULL;
	d->lic_view_n = 0;
	licenses_scan_free(d->lic_scan);
	d->lic_scan = NULL;
	while (d->lic_claims) {
		etcd_req_cancel(d->lic_claims->req);
		claim_free(d->lic_claims);
	}
	uv_close((uv_handle_t *)&d->lic_timer, closed);
}
