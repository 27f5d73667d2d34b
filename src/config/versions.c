/* The configuration's versions in etcd (see versions.h). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/common.h"
#include "coord/coord.h"
#include "versions.h"

#define VERSIONS_PAGE 500 /* log entries read at once */
#define VERSIONS_TRIES 3 /* a store that lost its answer: reads back */

enum op_kind { OP_CURRENT, OP_GET, OP_STORE, OP_LOG };

struct versions_op {
	struct versions *v;
	enum op_kind kind;
	versions_cb cb;
	void *arg;
	struct etcd_req *req;
	/* a store, and the bootstrap of OP_CURRENT */
	char *text, *author, *comment, *summary;
	int64_t base;
	int64_t next; /* the number it takes */
	int64_t cur_mod; /* the pointer's mod_revision as read, 0: absent */
	char id[33];
	int tries;
	bool stored; /* OP_CURRENT: the bootstrap is done, read again */
	/* OP_LOG */
	json_t *list;
	char *after;
	int64_t rev;
	struct versions_op *link;
};

struct versions {
	struct etcd *e;
	char *prefix; /* /understudy-config/<cluster>/ */
	struct versions_op *ops;
	struct etcd_watch *watch;
	void (*changed)(int64_t version, void *arg);
	void *changed_arg;
};

void
versions_sha256(const char *text, char *buf)
{
	unsigned char h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256(h, (const unsigned char *)text, strlen(text));
	sodium_bin2hex(buf, 65, h, sizeof(h));
}

static char *
key_of(const struct versions *v, const char *kind, int64_t n)
{
	char *k = NULL;

	if (n < 0 ? asprintf(&k, "%s%s", v->prefix, kind) < 0
		  : asprintf(&k, "%s%s/%010" PRId64, v->prefix, kind, n) < 0)
		return NULL;
	return k;
}

static void
op_free(struct versions_op *op)
{
	if (op == NULL)
		return;
	for (struct versions_op **pp = &op->v->ops; *pp; pp = &(*pp)->link)
		if (*pp == op) {
			*pp = op->link;
			break;
		}
	etcd_req_cancel(op->req);
	free(op->text);
	free(op->author);
	free(op->comment);
	free(op->summary);
	json_decref(op->list);
	free(op->after);
	free(op);
}

static struct versions_op *
op_new(struct versions *v, enum op_kind kind, versions_cb cb, void *arg)
{
	struct versions_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->v = v;
	op->kind = kind;
	op->cb = cb;
	op->arg = arg;
	op->link = v->ops;
	v->ops = op;
	return op;
}

/* Answer and free the operation. */
static void
finish(struct versions_op *op, struct versions_res *r)
{
	op->req = NULL;
	op->cb(r, op->arg);
	op_free(op);
}

static void fail(struct versions_op *op, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail(struct versions_op *op, int err, const char *fmt, ...)
{
	struct versions_res r = {.err = err};
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r.message, sizeof(r.message), fmt, ap);
	va_end(ap);
	finish(op, &r);
}

/* The JSON of a kv, or NULL. */
static json_t *
kv_json(const struct etcd_kv *kv)
{
	return json_loadb(kv->value, kv->value_len, 0, NULL);
}

/* What went wrong, in etcd's or curl's words where they say more. */
static const char *
why(const struct etcd_res *res)
{
	return res->message && *res->message ? res->message
					     : us_strerror(res->err);
}

static int64_t
number_of(const json_t *o)
{
	return json_integer_value(json_object_get(o, "version"));
}

/* ---- reading one version ---- */

static void
got_version(const struct etcd_res *res, void *arg)
{
	struct versions_op *op = arg;
	struct versions_res r = {0};

	op->req = NULL;
	if (res->err) {
		fail(op, res->err, "reading the configuration: %s", why(res));
		return;
	}
	if (res->n_kvs == 0) {
		fail(op, US_ENOTFOUND, "no configuration version %" PRId64,
		    op->next);
		return;
	}
	if ((r.version = kv_json(&res->kvs[0])) == NULL) {
		fail(op, US_EPROTO,
		    "configuration version %" PRId64 " is not JSON", op->next);
		return;
	}
	r.in_effect = op->base;
	finish(op, &r);
	json_decref(r.version);
}

static void
read_version(struct versions_op *op, int64_t n)
{
	char *k = key_of(op->v, "v", n);

	op->next = n;
	op->req = k ? etcd_kv_range(op->v->e, k, false, got_version, op) : NULL;
	free(k);
	if (op->req == NULL)
		fail(op, US_ENOMEM, "out of memory");
}

struct versions_op *
versions_get(struct versions *v, int64_t n, versions_cb cb, void *arg)
{
	struct versions_op *op = op_new(v, OP_GET, cb, arg);
	char *k;

	if (op == NULL)
		return NULL;
	k = key_of(v, "v", n);
	op->next = n;
	op->req = k ? etcd_kv_range(v->e, k, false, got_version, op) : NULL;
	free(k);
	if (op->req == NULL) {
		op_free(op);
		return NULL;
	}
	return op;
}

/* ---- storing ---- */

static void store_send(struct versions_op *op);
static bool read_current(struct versions_op *op, etcd_cb cb);
static void got_current(const struct etcd_res *res, void *arg);

static void
read_back(const struct etcd_res *res, void *arg)
{
	struct versions_op *op = arg;
	json_t *o;
	const char *id;

	op->req = NULL;
	if (res->err) {
		if (++op->tries < VERSIONS_TRIES) {
			store_send(op); /* resolved by its compare, or read */
			return;
		}
		fail(op, US_EUNAVAIL,
		    "whether version %" PRId64
		    " was stored is unknown (etcd did not answer); see "
		    "`understudy config history`",
		    op->next);
		return;
	}
	o = res->n_kvs ? kv_json(&res->kvs[0]) : NULL;
	id = json_string_value(json_object_get(o, "id"));
	if (o && op->kind == OP_CURRENT &&
	    (id == NULL || strcmp(id, op->id) != 0)) {
		/* another server stored the first version: run that one */
		read_version(op, op->next);
		json_decref(o);
		return;
	}
	if (o && id && strcmp(id, op->id) == 0) {
		struct versions_res r = {.version = o, .in_effect = op->next};

		finish(op, &r);
	} else if (o) {
		struct versions_res r = {
		    .err = US_ECONFLICT, .in_effect = op->next};
		const char *by =
		    json_string_value(json_object_get(o, "author"));

		snprintf(r.message, sizeof(r.message),
		    "the configuration changed meanwhile: version %" PRId64
		    " was stored by %s; look at it and apply again",
		    op->next, by ? by : "another");
		finish(op, &r);
	} else {
		/* not there: the txn was not applied; send it again */
		if (++op->tries < VERSIONS_TRIES) {
			store_send(op);
			json_decref(o);
			return;
		}
		fail(op, US_EUNAVAIL, "version %" PRId64 " was not stored",
		    op->next);
	}
	json_decref(o);
}

static void
stored(const struct etcd_res *res, void *arg)
{
	struct versions_op *op = arg;
	char *k;

	op->req = NULL;
	if (res->err) {
		/* done, not done or unknown: the version's key tells */
		k = key_of(op->v, "v", op->next);
		op->req =
		    k ? etcd_kv_range(op->v->e, k, false, read_back, op) : NULL;
		free(k);
		if (op->req == NULL)
			fail(op, US_ENOMEM, "out of memory");
		return;
	}
	if (!res->succeeded && op->kind == OP_CURRENT) {
		/* another server stored the first version: run that one */
		if (!read_current(op, got_current))
			fail(op, US_ENOMEM, "out of memory");
		return;
	}
	if (!res->succeeded) {
		json_t *cur = NULL;
		int64_t won = 0;

		for (size_t i = 0; i < res->n_kvs; i++)
			if ((cur = kv_json(&res->kvs[i])) != NULL)
				break;
		won = number_of(cur);
		json_decref(cur);
		/* an earlier send of this same store may be the winner */
		if (won == op->next) {
			k = key_of(op->v, "v", op->next);
			op->req = k
			    ? etcd_kv_range(op->v->e, k, false, read_back, op)
			    : NULL;
			free(k);
			if (op->req == NULL)
				fail(op, US_ENOMEM, "out of memory");
			return;
		}
		{
			struct versions_res r = {
			    .err = US_ECONFLICT, .in_effect = won};

			snprintf(r.message, sizeof(r.message),
			    "the configuration changed meanwhile: version "
			    "%" PRId64 " is in effect now (this one was "
			    "made against %" PRId64 "); look at it and apply "
			    "again",
			    won, op->base);
			finish(op, &r);
		}
		return;
	}
	if (op->kind == OP_CURRENT) {
		/* bootstrapped: read what is in effect now, with its text */
		op->base = op->next;
		read_version(op, op->next);
		return;
	}
	{
		struct versions_res r = {.in_effect = op->next};

		r.version =
		    json_pack("{s:I,s:I,s:s}", "version", (json_int_t)op->next,
			"replaces", (json_int_t)op->base, "id", op->id);
		finish(op, &r);
		json_decref(r.version);
	}
}

/*
 * One txn: the version in effect is still base (its key absent for 0),
 * the new number is free; then the version, its log entry and the
 * pointer to it. The failure branch reads the pointer, to name the
 * winner.
 */
static void
store_send(struct versions_op *op)
{
	struct versions *v = op->v;
	char *ck = key_of(v, "current", -1), *vk = key_of(v, "v", op->next),
	     *lk = key_of(v, "log", op->next), *vs = NULL, *ls = NULL,
	     *cs = NULL, sha[65], when[32];
	struct etcd_txn *t = etcd_kv_txn_new();
	json_t *o;
	int64_t now = time_wall_ms();

	versions_sha256(op->text, sha);
	time_iso8601(now, when, sizeof(when));
	o = json_pack("{s:I,s:s,s:s,s:s,s:I,s:s,s:I,s:s,s:s}", "version",
	    (json_int_t)op->next, "sha256", sha, "author", op->author, "time",
	    when, "time_ms", (json_int_t)now, "comment", op->comment,
	    "replaces", (json_int_t)op->base, "summary", op->summary, "id",
	    op->id);
	if (o) {
		ls = json_dumps(o, JSON_COMPACT);
		json_object_set_new(o, "text", json_string(op->text));
		vs = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	o = json_pack(
	    "{s:I,s:s}", "version", (json_int_t)op->next, "sha256", sha);
	cs = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (ck && vk && lk && vs && ls && cs && t &&
	    etcd_kv_txn_compare(
		t, vk, ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0) == 0 &&
	    /* the pointer unchanged since it was read (absent: 0) */
	    etcd_kv_txn_compare(t, ck, ETCD_CMP_MOD, ETCD_CMP_EQUAL,
		op->cur_mod, NULL, 0) == 0 &&
	    etcd_kv_txn_put(t, true, vk, vs, strlen(vs), 0) == 0 &&
	    etcd_kv_txn_put(t, true, lk, ls, strlen(ls), 0) == 0 &&
	    etcd_kv_txn_put(t, true, ck, cs, strlen(cs), 0) == 0 &&
	    etcd_kv_txn_get(t, false, ck, false) == 0) {
		op->req = etcd_kv_txn_commit(v->e, t, stored, op);
		t = NULL;
	}
	etcd_kv_txn_free(t);
	free(ck);
	free(vk);
	free(lk);
	free(vs);
	free(ls);
	free(cs);
	if (op->req == NULL)
		fail(op, US_ENOMEM, "out of memory");
}

/* The pointer as it is now: the base and the next number. */
static void
got_current_for_store(const struct etcd_res *res, void *arg)
{
	struct versions_op *op = arg;
	json_t *cur;
	int64_t now_in = 0;

	op->req = NULL;
	if (res->err) {
		fail(op, res->err, "reading the version in effect: %s",
		    why(res));
		return;
	}
	cur = res->n_kvs ? kv_json(&res->kvs[0]) : NULL;
	now_in = number_of(cur);
	op->cur_mod = res->n_kvs ? res->kvs[0].mod_revision : 0;
	json_decref(cur);
	if (op->base >= 0 && op->base != now_in) {
		struct versions_res r = {
		    .err = US_ECONFLICT, .in_effect = now_in};

		snprintf(r.message, sizeof(r.message),
		    "the configuration changed meanwhile: version %" PRId64
		    " is in effect now (this one was made against %" PRId64
		    "); look at it and apply again",
		    now_in, op->base);
		finish(op, &r);
		return;
	}
	op->base = now_in;
	op->next = now_in + 1;
	store_send(op);
}

static struct versions_op *
store_new(struct versions *v, enum op_kind kind, const char *text, int64_t base,
    const char *author, const char *comment, const char *summary,
    versions_cb cb, void *arg)
{
	struct versions_op *op = op_new(v, kind, cb, arg);
	unsigned char nonce[16];

	if (op == NULL)
		return NULL;
	randombytes_buf(nonce, sizeof(nonce));
	sodium_bin2hex(op->id, sizeof(op->id), nonce, sizeof(nonce));
	op->base = base;
	op->text = strdup(text);
	op->author = strdup(author ? author : "");
	op->comment = strdup(comment ? comment : "");
	op->summary = strdup(summary ? summary : "");
	if (!op->text || !op->author || !op->comment || !op->summary) {
		op_free(op);
		return NULL;
	}
	return op;
}

static bool
read_current(struct versions_op *op, etcd_cb cb)
{
	char *k = key_of(op->v, "current", -1);

	op->req = k ? etcd_kv_range(op->v->e, k, false, cb, op) : NULL;
	free(k);
	return op->req != NULL;
}

struct versions_op *
versions_store(struct versions *v, const char *text, int64_t base,
    const char *author, const char *comment, const char *summary,
    versions_cb cb, void *arg)
{
	struct versions_op *op;

	if (strlen(text) > VERSIONS_TEXT_MAX)
		return NULL;
	op = store_new(
	    v, OP_STORE, text, base, author, comment, summary, cb, arg);
	if (op && !read_current(op, got_current_for_store)) {
		op_free(op);
		return NULL;
	}
	return op;
}

/* ---- the version in effect, stored first on an empty cluster ---- */

static void
got_current(const struct etcd_res *res, void *arg)
{
	struct versions_op *op = arg;
	json_t *cur;
	int64_t n;

	op->req = NULL;
	if (res->err) {
		fail(op, res->err, "reading the version in effect: %s",
		    why(res));
		return;
	}
	cur = res->n_kvs ? kv_json(&res->kvs[0]) : NULL;
	n = number_of(cur);
	op->cur_mod = res->n_kvs ? res->kvs[0].mod_revision : 0;
	json_decref(cur);
	if (n > 0) {
		op->base = n;
		read_version(op, n);
		return;
	}
	if (op->text == NULL || op->stored) {
		fail(op, US_ENOTFOUND, "no configuration is stored yet");
		return;
	}
	/* an empty cluster: this server's file becomes version 1 */
	op->base = 0;
	op->next = 1;
	op->stored = true;
	store_send(op);
}

struct versions_op *
versions_current(struct versions *v, const char *text, const char *author,
    versions_cb cb, void *arg)
{
	struct versions_op *op;

	if (text)
		op = store_new(v, OP_CURRENT, text, 0, author,
		    "the first server's file", "the first version", cb, arg);
	else
		op = op_new(v, OP_CURRENT, cb, arg);
	if (op && !read_current(op, got_current)) {
		op_free(op);
		return NULL;
	}
	return op;
}

/* ---- the log ---- */

static void
got_page(const struct etcd_res *res, void *arg)
{
	struct versions_op *op = arg;
	char *prefix = NULL;

	op->req = NULL;
	if (res->err) {
		fail(op, res->err, "reading the configuration history: %s",
		    why(res));
		return;
	}
	if (op->rev == 0)
		op->rev = res->revision;
	for (size_t i = 0; i < res->n_kvs; i++) {
		json_t *o = kv_json(&res->kvs[i]);

		if (o)
			json_array_append_new(op->list, o);
	}
	if (json_array_size(op->list) > VERSIONS_LOG_MAX) {
		fail(op, US_ETOOBIG,
		    "the configuration history holds over %d versions",
		    VERSIONS_LOG_MAX);
		return;
	}
	if (!res->more || res->n_kvs == 0) {
		struct versions_res r = {.list = op->list};

		finish(op, &r);
		return;
	}
	free(op->after);
	op->after = strndup(
	    res->kvs[res->n_kvs - 1].key, res->kvs[res->n_kvs - 1].key_len);
	if (op->after && asprintf(&prefix, "%slog/", op->v->prefix) >= 0)
		op->req = etcd_kv_range_page(op->v->e, prefix, op->after,
		    strlen(op->after), op->rev, VERSIONS_PAGE, got_page, op);
	free(prefix);
	if (op->req == NULL)
		fail(op, US_ENOMEM, "out of memory");
}

struct versions_op *
versions_log(struct versions *v, versions_cb cb, void *arg)
{
	struct versions_op *op = op_new(v, OP_LOG, cb, arg);
	char *prefix = NULL;

	if (op == NULL)
		return NULL;
	if ((op->list = json_array()) == NULL ||
	    asprintf(&prefix, "%slog/", v->prefix) < 0) {
		op_free(op);
		return NULL;
	}
	op->req = etcd_kv_range_page(
	    v->e, prefix, NULL, 0, 0, VERSIONS_PAGE, got_page, op);
	free(prefix);
	if (op->req == NULL) {
		op_free(op);
		return NULL;
	}
	return op;
}

void
versions_cancel(struct versions_op *op)
{
	op_free(op);
}

struct versions *
versions_new(struct etcd *e, const char *cluster)
{
	struct versions *v = calloc(1, sizeof(*v));

	if (v == NULL)
		return NULL;
	v->e = e;
	if (asprintf(&v->prefix, "/understudy-config/%s/", cluster) < 0) {
		free(v);
		return NULL;
	}
	return v;
}

static void
on_current(struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	struct versions *v = arg;

	(void)w;
	for (size_t i = 0; i < u->n_events; i++) {
		json_t *o;
		int64_t n;

		if (u->events[i].type != ETCD_EVENT_PUT)
			continue;
		o = kv_json(&u->events[i].kv);
		n = number_of(o);
		json_decref(o);
		if (n > 0 && v->changed)
			v->changed(n, v->changed_arg);
	}
}

int
versions_watch(
    struct versions *v, void (*changed)(int64_t version, void *arg), void *arg)
{
	char *k = key_of(v, "current", -1);

	v->changed = changed;
	v->changed_arg = arg;
	etcd_watch_free(v->watch);
	v->watch = k ? etcd_watch_new(v->e, k, false, 0, on_current, v) : NULL;
	free(k);
	return v->watch ? 0 : US_ENOMEM;
}

void
versions_free(struct versions *v)
{
	if (v == NULL)
		return;
	etcd_watch_free(v->watch);
	while (v->ops)
		op_free(v->ops);
	free(v->prefix);
	free(v);
}
