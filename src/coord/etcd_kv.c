/* Key-value requests: range, put, delete, and transactions. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"

#define TXN_MAX_OPS 128 /* etcd's default --max-txn-ops */

struct etcd_txn {
	json_t *root;
	json_t *compare;
	json_t *success;
	json_t *failure;
	unsigned ops;
	unsigned sub_ops; /* of the largest nested txn */
};

/* Add a base64 string field; a NULL or failed string fails the object. */
static int
set_b64(json_t *o, const char *name, const char *data, size_t len)
{
	char *s = base64_encode(data, len);
	int rc;

	if (s == NULL)
		return US_ENOMEM;
	rc = json_object_set_new(o, name, json_string(s)) == 0 ? 0 : US_ENOMEM;
	free(s);
	return rc;
}

/* int64 values travel as strings through the gateway */
static int
set_i64(json_t *o, const char *name, int64_t v)
{
	char s[32];

	snprintf(s, sizeof(s), "%" PRId64, v);
	return json_object_set_new(o, name, json_string(s)) == 0 ? 0
								 : US_ENOMEM;
}

char *
etcd_kv_prefix_end(const char *key, size_t len, size_t *outlen)
{
	char *end = malloc(len + 1);

	if (end == NULL)
		return NULL;
	memcpy(end, key, len);
	/* the smallest key greater than every key with this prefix */
	while (len > 0) {
		unsigned char c = (unsigned char)end[len - 1];

		if (c < 0xff) {
			end[len - 1] = (char)(c + 1);
			*outlen = len;
			return end;
		}
		len--;
	}
	/* every key: range_end "\0" */
	end[0] = '\0';
	*outlen = 1;
	return end;
}

json_t *
etcd_kv_key_json(const char *key, bool prefix)
{
	json_t *o = json_object();
	size_t len = strlen(key), elen;
	char *end;

	if (o == NULL || set_b64(o, "key", key, len) != 0)
		goto fail;
	if (prefix) {
		if ((end = etcd_kv_prefix_end(key, len, &elen)) == NULL)
			goto fail;
		if (set_b64(o, "range_end", end, elen) != 0) {
			free(end);
			goto fail;
		}
		free(end);
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

/* Serialise o (reference taken) into a body for etcd_request. */
static char *
body_of(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

struct etcd_req *
etcd_kv_range(
    struct etcd *e, const char *key, bool prefix, etcd_cb cb, void *arg)
{
	return etcd_request(e, ETCD_OP_RANGE, "/v3/kv/range",
	    body_of(etcd_kv_key_json(key, prefix)), cb, arg);
}

struct etcd_req *
etcd_kv_range_page(struct etcd *e, const char *prefix, const char *after,
    size_t after_len, int64_t rev, long limit, etcd_cb cb, void *arg)
{
	json_t *o = etcd_kv_key_json(prefix, true);
	char *from = NULL;

	if (o && after) {
		/* the key right after the last one given: after + "\0" */
		if ((from = malloc(after_len + 1)) == NULL ||
		    (memcpy(from, after, after_len), from[after_len] = '\0',
			set_b64(o, "key", from, after_len + 1)) != 0) {
			json_decref(o);
			o = NULL;
		}
		free(from);
	}
	if (o &&
	    ((rev > 0 && set_i64(o, "revision", rev) != 0) ||
		set_i64(o, "limit", limit) != 0)) {
		json_decref(o);
		o = NULL;
	}
	return etcd_request(
	    e, ETCD_OP_RANGE, "/v3/kv/range", body_of(o), cb, arg);
}

struct etcd_req *
etcd_kv_count(struct etcd *e, const char *prefix, etcd_cb cb, void *arg)
{
	json_t *o = etcd_kv_key_json(prefix, true);

	if (o && json_object_set_new(o, "count_only", json_true()) != 0) {
		json_decref(o);
		o = NULL;
	}
	return etcd_request(
	    e, ETCD_OP_RANGE, "/v3/kv/range", body_of(o), cb, arg);
}

struct etcd_req *
etcd_kv_put(struct etcd *e, const char *key, const char *value, size_t vlen,
    int64_t lease, etcd_cb cb, void *arg)
{
	json_t *o = etcd_kv_key_json(key, false);

	if (o &&
	    (set_b64(o, "value", value, vlen) != 0 ||
		(lease && set_i64(o, "lease", lease) != 0))) {
		json_decref(o);
		o = NULL;
	}
	return etcd_request(e, ETCD_OP_PUT, "/v3/kv/put", body_of(o), cb, arg);
}

struct etcd_req *
etcd_kv_delete(
    struct etcd *e, const char *key, bool prefix, etcd_cb cb, void *arg)
{
	json_t *o = etcd_kv_key_json(key, prefix);

	if (o && json_object_set_new(o, "prev_kv", json_true()) != 0) {
		json_decref(o);
		o = NULL;
	}
	return etcd_request(
	    e, ETCD_OP_DELETE, "/v3/kv/deleterange", body_of(o), cb, arg);
}

struct etcd_req *
etcd_kv_delete_range(
    struct etcd *e, const char *from, const char *to, etcd_cb cb, void *arg)
{
	json_t *o = etcd_kv_key_json(from, false);

	if (o && set_b64(o, "range_end", to, strlen(to)) != 0) {
		json_decref(o);
		o = NULL;
	}
	return etcd_request(
	    e, ETCD_OP_DELETE, "/v3/kv/deleterange", body_of(o), cb, arg);
}

struct etcd_txn *
etcd_kv_txn_new(void)
{
	struct etcd_txn *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->root = json_object();
	t->compare = json_array();
	t->success = json_array();
	t->failure = json_array();
	if (!t->root || !t->compare || !t->success || !t->failure ||
	    json_object_set(t->root, "compare", t->compare) != 0 ||
	    json_object_set(t->root, "success", t->success) != 0 ||
	    json_object_set(t->root, "failure", t->failure) != 0) {
		etcd_kv_txn_free(t);
		return NULL;
	}
	return t;
}

void
etcd_kv_txn_free(struct etcd_txn *t)
{
	if (t == NULL)
		return;
	json_decref(t->compare);
	json_decref(t->success);
	json_decref(t->failure);
	json_decref(t->root);
	free(t);
}

static int
txn_add(struct etcd_txn *t, json_t *arr, json_t *item)
{
	if (item == NULL)
		return US_ENOMEM;
	if (t->ops >= TXN_MAX_OPS) {
		json_decref(item);
		return US_ETOOBIG;
	}
	if (json_array_append_new(arr, item) != 0)
		return US_ENOMEM;
	t->ops++;
	return 0;
}

int
etcd_kv_txn_compare(struct etcd_txn *t, const char *key,
    enum etcd_cmp_target target, enum etcd_cmp_result result, int64_t num,
    const char *value, size_t vlen)
{
	static const char *const targets[] = {
	    "VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
	static const char *const fields[] = {
	    "version", "create_revision", "mod_revision", "value", "lease"};
	static const char *const results[] = {
	    "EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
	json_t *c = etcd_kv_key_json(key, false);
	int rc;

	if (c == NULL)
		return US_ENOMEM;
	if (json_object_set_new(c, "target", json_string(targets[target])) !=
		0 ||
	    json_object_set_new(c, "result", json_string(results[result])) !=
		0) {
		json_decref(c);
		return US_ENOMEM;
	}
	rc = target == ETCD_CMP_VALUE ? set_b64(c, "value", value, vlen)
				      : set_i64(c, fields[target], num);
	if (rc != 0) {
		json_decref(c);
		return rc;
	}
	return txn_add(t, t->compare, c);
}

static json_t *
wrap(const char *name, json_t *inner)
{
	json_t *o;

	if (inner == NULL)
		return NULL;
	if ((o = json_object()) == NULL ||
	    json_object_set_new(o, name, inner) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int
etcd_kv_txn_put(struct etcd_txn *t, bool success, const char *key,
    const char *value, size_t vlen, int64_t lease)
{
	json_t *o = etcd_kv_key_json(key, false);

	if (o &&
	    (set_b64(o, "value", value, vlen) != 0 ||
		(lease && set_i64(o, "lease", lease) != 0))) {
		json_decref(o);
		o = NULL;
	}
	return txn_add(
	    t, success ? t->success : t->failure, wrap("request_put", o));
}

int
etcd_kv_txn_delete(
    struct etcd_txn *t, bool success, const char *key, bool prefix)
{
	return txn_add(t, success ? t->success : t->failure,
	    wrap("request_delete_range", etcd_kv_key_json(key, prefix)));
}

int
etcd_kv_txn_get(struct etcd_txn *t, bool success, const char *key, bool prefix)
{
	return txn_add(t, success ? t->success : t->failure,
	    wrap("request_range", etcd_kv_key_json(key, prefix)));
}

int
etcd_kv_txn_nest(struct etcd_txn *t, bool success, struct etcd_txn *sub)
{
	unsigned need;
	int rc;

	if (sub == NULL)
		return US_ENOMEM;
	/* etcd checks a nested txn against what the outer one leaves */
	need = sub->ops > sub->sub_ops ? sub->ops : sub->sub_ops;
	if (t->ops + 1 + (need > t->sub_ops ? need : t->sub_ops) >
	    TXN_MAX_OPS) {
		etcd_kv_txn_free(sub);
		return US_ETOOBIG;
	}
	rc = txn_add(t, success ? t->success : t->failure,
	    wrap("request_txn", json_incref(sub->root)));
	if (rc == 0 && need > t->sub_ops)
		t->sub_ops = need;
	etcd_kv_txn_free(sub);
	return rc;
}

unsigned
etcd_kv_txn_ops(const struct etcd_txn *t)
{
	return t->ops;
}

struct etcd_req *
etcd_kv_txn_commit(struct etcd *e, struct etcd_txn *t, etcd_cb cb, void *arg)
{
	char *body = json_dumps(t->root, JSON_COMPACT);

	etcd_kv_txn_free(t);
	return etcd_request(e, ETCD_OP_TXN, "/v3/kv/txn", body, cb, arg);
}
