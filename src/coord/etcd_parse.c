/*
 * Parsing what the etcd v3 gateway answers. Untrusted input: every field
 * is optional (the gateway omits zero values), 64-bit numbers come as
 * strings, keys and values as base64. Nothing here trusts a length or a
 * type it has not checked.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"

/* A missing field is 0; a present one must be an integer or its string. */
static int
get_i64(json_t *obj, const char *name, int64_t *out)
{
	json_t *v = json_object_get(obj, name);
	const char *s;
	char *end;
	long long n;

	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return US_EPROTO;
	s = json_string_value(v);
	if (*s == '\0')
		return US_EPROTO;
	errno = 0;
	n = strtoll(s, &end, 10);
	if (*end != '\0' || errno == ERANGE)
		return US_EPROTO;
	*out = (int64_t)n;
	return 0;
}

static bool
get_bool(json_t *obj, const char *name)
{
	return json_is_true(json_object_get(obj, name));
}

static int
get_b64(json_t *obj, const char *name, char **out, size_t *len)
{
	json_t *v = json_object_get(obj, name);
	const char *s;

	*out = NULL;
	*len = 0;
	if (v == NULL) {
		if ((*out = strdup("")) == NULL)
			return US_ENOMEM;
		return 0;
	}
	if (!json_is_string(v))
		return US_EPROTO;
	s = json_string_value(v);
	return base64_decode(s, json_string_length(v), out, len);
}

static int
parse_kv(json_t *o, struct etcd_kv *kv)
{
	int rc;

	memset(kv, 0, sizeof(*kv));
	if (!json_is_object(o))
		return US_EPROTO;
	if ((rc = get_b64(o, "key", &kv->key, &kv->key_len)) != 0 ||
	    (rc = get_b64(o, "value", &kv->value, &kv->value_len)) != 0 ||
	    (rc = get_i64(o, "create_revision", &kv->create_revision)) != 0 ||
	    (rc = get_i64(o, "mod_revision", &kv->mod_revision)) != 0 ||
	    (rc = get_i64(o, "version", &kv->version)) != 0 ||
	    (rc = get_i64(o, "lease", &kv->lease)) != 0)
		return rc;
	return 0;
}

static void
kv_clear(struct etcd_kv *kv)
{
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

/* Append the kvs of array arr (may be absent) to res. */
static int
add_kvs(struct etcd_res *res, json_t *arr)
{
	struct etcd_kv *v;
	size_t n;
	int rc;

	if (arr == NULL)
		return 0;
	if (!json_is_array(arr))
		return US_EPROTO;
	n = json_array_size(arr);
	if (n == 0)
		return 0;
	if ((v = realloc(res->kvs, (res->n_kvs + n) * sizeof(*v))) == NULL)
		return US_ENOMEM;
	res->kvs = v;
	for (size_t i = 0; i < n; i++) {
		if ((rc = parse_kv(
			 json_array_get(arr, i), &res->kvs[res->n_kvs])) != 0) {
			kv_clear(&res->kvs[res->n_kvs]);
			return rc;
		}
		res->n_kvs++;
	}
	return 0;
}

static int
parse_header(json_t *root, struct etcd_res *res)
{
	json_t *h = json_object_get(root, "header");

	if (h == NULL)
		return 0;
	if (!json_is_object(h))
		return US_EPROTO;
	return get_i64(h, "revision", &res->revision);
}

static int
parse_txn(json_t *root, struct etcd_res *res, unsigned depth)
{
	json_t *arr = json_object_get(root, "responses"), *r;
	size_t i, n_subs = 0;
	int rc;

	res->succeeded = get_bool(root, "succeeded");
	if (arr == NULL)
		return 0;
	if (!json_is_array(arr))
		return US_EPROTO;
	json_array_foreach (arr, i, r) {
		json_t *rr = json_object_get(r, "response_range");

		if (!json_is_object(r))
			return US_EPROTO;
		if (rr && !json_is_object(rr))
			return US_EPROTO;
		if (rr && (rc = add_kvs(res, json_object_get(rr, "kvs"))) != 0)
			return rc;
		n_subs += json_object_get(r, "response_txn") != NULL;
	}
	if (n_subs == 0)
		return 0;
	if (depth >= ETCD_TXN_DEPTH)
		return US_EPROTO;
	if ((res->subs = calloc(n_subs, sizeof(*res->subs))) == NULL)
		return US_ENOMEM;
	json_array_foreach (arr, i, r) {
		json_t *rt = json_object_get(r, "response_txn");

		if (rt == NULL)
			continue;
		if (!json_is_object(rt))
			return US_EPROTO;
		/* counted before parsing: a failed one is cleared too */
		res->subs[res->n_subs].revision = res->revision;
		if ((rc = parse_txn(
			 rt, &res->subs[res->n_subs++], depth + 1)) != 0)
			return rc;
	}
	return 0;
}

int
etcd_parse_response(
    enum etcd_op op, const char *body, size_t len, struct etcd_res *res)
{
	json_t *root, *obj;
	int rc = 0;

	memset(res, 0, sizeof(*res));
	if (body == NULL || len == 0)
		return res->err = US_EPROTO;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		return res->err = US_EPROTO;
	}
	obj = root;
	/* the keepalive answer is one message of a stream: {"result":{..}} */
	if (op == ETCD_OP_KEEPALIVE) {
		if (json_object_get(root, "error")) {
			rc = US_ELEASELOST;
			goto out;
		}
		obj = json_object_get(root, "result");
		if (!json_is_object(obj)) {
			rc = US_EPROTO;
			goto out;
		}
	}
	if ((rc = parse_header(obj, res)) != 0)
		goto out;
	switch (op) {
	case ETCD_OP_RANGE:
		if ((rc = add_kvs(res, json_object_get(obj, "kvs"))) == 0)
			rc = get_i64(obj, "count", &res->count);
		res->more = json_is_true(json_object_get(obj, "more"));
		break;
	case ETCD_OP_DELETE:
		if ((rc = add_kvs(res, json_object_get(obj, "prev_kvs"))) == 0)
			rc = get_i64(obj, "deleted", &res->deleted);
		break;
	case ETCD_OP_TXN:
		rc = parse_txn(obj, res, 0);
		break;
	case ETCD_OP_GRANT:
		if ((rc = get_i64(obj, "ID", &res->id)) == 0)
			rc = get_i64(obj, "TTL", &res->ttl);
		if (rc == 0 && res->id == 0)
			rc = US_EPROTO;
		break;
	case ETCD_OP_KEEPALIVE:
		if ((rc = get_i64(obj, "ID", &res->id)) == 0)
			rc = get_i64(obj, "TTL", &res->ttl);
		/* a dead lease is answered with no TTL at all */
		if (rc == 0 && res->ttl <= 0)
			rc = US_ELEASELOST;
		break;
	case ETCD_OP_TIMETOLIVE:
		if ((rc = get_i64(obj, "ID", &res->id)) == 0 &&
		    (rc = get_i64(obj, "TTL", &res->ttl)) == 0)
			rc = get_i64(obj, "grantedTTL", &res->granted_ttl);
		break;
	case ETCD_OP_PUT:
	case ETCD_OP_REVOKE:
	case ETCD_OP_WATCH:
		break;
	}
out:
	json_decref(root);
	if (rc != 0) {
		etcd_parse_res_clear(res);
		res->err = rc;
	}
	return rc;
}

int
etcd_parse_error(
    long http, const char *body, size_t len, struct etcd_res *res, bool *retry)
{
	json_t *root = NULL, *msg;
	int64_t code = -1;

	*retry = false;
	if (body && len)
		root = json_loadb(body, len, 0, NULL);
	if (json_is_object(root)) {
		json_t *err = json_object_get(root, "error");

		/* streaming answers nest it: {"error":{"grpc_code":..}} */
		if (json_is_object(err)) {
			json_t *inner = err;

			if (get_i64(inner, "grpc_code", &code) != 0)
				code = -1;
			msg = json_object_get(inner, "message");
		} else {
			if (get_i64(root, "code", &code) != 0)
				code = -1;
			msg = json_object_get(root, "message");
		}
		if (json_is_string(msg) && res->message == NULL)
			res->message = strndup(json_string_value(msg), 400);
	}
	json_decref(root);
	switch (code) {
	case 3: /* InvalidArgument */
		res->err = US_EINVAL;
		break;
	case 5: /* NotFound: a lease */
		res->err = US_ENOTFOUND;
		break;
	case 11: /* OutOfRange: compacted */
		res->err = US_ECOMPACTED;
		break;
	case 4: /* DeadlineExceeded */
	case 14: /* Unavailable: no leader, stopping */
		res->err = US_EUNAVAIL;
		*retry = true;
		break;
	default:
		if (http == 503 || http == 502) {
			res->err = US_EUNAVAIL;
			*retry = true;
		} else if (http == 404 && code < 0) {
			res->err = US_EPROTO; /* not an etcd v3 gateway */
		} else {
			res->err = US_EETCD;
		}
	}
	return res->err;
}

void
etcd_parse_res_clear(struct etcd_res *res)
{
	for (size_t i = 0; i < res->n_kvs; i++)
		kv_clear(&res->kvs[i]);
	for (size_t i = 0; i < res->n_subs; i++)
		etcd_parse_res_clear(&res->subs[i]);
	free(res->subs);
	free(res->kvs);
	free(res->message);
	memset(res, 0, sizeof(*res));
}

int
etcd_parse_watch(const char *line, size_t len, struct etcd_watch_msg *m)
{
	json_t *root, *r, *evs, *ev;
	size_t i;
	int rc = 0;

	memset(m, 0, sizeof(*m));
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		return US_EPROTO;
	}
	if (json_object_get(root, "error")) {
		rc = US_EUNAVAIL;
		goto out;
	}
	r = json_object_get(root, "result");
	if (!json_is_object(r)) {
		rc = US_EPROTO;
		goto out;
	}
	m->created = get_bool(r, "created");
	m->canceled = get_bool(r, "canceled");
	if ((rc = get_i64(r, "compact_revision", &m->compact_revision)) != 0)
		goto out;
	if (json_is_string(json_object_get(r, "cancel_reason")))
		m->cancel_reason = strndup(
		    json_string_value(json_object_get(r, "cancel_reason")),
		    400);
	if (json_object_get(r, "header")) {
		json_t *h = json_object_get(r, "header");

		if (!json_is_object(h) ||
		    (rc = get_i64(h, "revision", &m->revision)) != 0) {
			rc = US_EPROTO;
			goto out;
		}
	}
	evs = json_object_get(r, "events");
	if (evs == NULL)
		goto out;
	if (!json_is_array(evs)) {
		rc = US_EPROTO;
		goto out;
	}
	if (json_array_size(evs) == 0)
		goto out;
	m->events = calloc(json_array_size(evs), sizeof(*m->events));
	if (m->events == NULL) {
		rc = US_ENOMEM;
		goto out;
	}
	json_array_foreach (evs, i, ev) {
		json_t *type = json_object_get(ev, "type");
		struct etcd_event *e = &m->events[m->n_events];

		if (!json_is_object(ev)) {
			rc = US_EPROTO;
			goto out;
		}
		if (type == NULL ||
		    (json_is_string(type) &&
			strcmp(json_string_value(type), "PUT") == 0))
			e->type = ETCD_EVENT_PUT;
		else if (json_is_string(type) &&
		    strcmp(json_string_value(type), "DELETE") == 0)
			e->type = ETCD_EVENT_DELETE;
		else {
			rc = US_EPROTO;
			goto out;
		}
		if ((rc = parse_kv(json_object_get(ev, "kv"), &e->kv)) != 0) {
			kv_clear(&e->kv);
			goto out;
		}
		m->n_events++;
	}
out:
	json_decref(root);
	if (rc != 0)
		etcd_parse_watch_clear(m);
	return rc;
}

void
etcd_parse_watch_clear(struct etcd_watch_msg *m)
{
	for (size_t i = 0; i < m->n_events; i++)
		kv_clear(&m->events[i].kv);
	free(m->events);
	free(m->cancel_reason);
	memset(m, 0, sizeof(*m));
}
