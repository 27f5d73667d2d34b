/*
 * us-etcd-probe: drives the etcd client (src/coord) from stdin for the
 * system tests. One command per line; one JSON object per result or
 * watch update on stdout.
 *
 *   put KEY VALUE [LEASE]     get KEY        prefix KEY
 *   del KEY                   delprefix KEY
 *   create KEY VALUE [LEASE]  (txn: only if KEY does not exist)
 *   swap KEY OLD NEW          (txn: only if KEY's value is OLD)
 *   grant TTL   keepalive ID   revoke ID   ttl ID
 *   watch KEY [REV]  (a prefix watch, from REV if given; prints every
 *                     update)
 *   endpoint    (where requests and the watch go now)
 *   quit
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "coord/coord.h"

static struct etcd *client;
static struct etcd_watch *watch;
static uv_pipe_t in;
static struct buf inbuf;
static uv_loop_t *loop;

static void
emit(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);

	if (s) {
		printf("%s\n", s);
		fflush(stdout);
		free(s);
	}
	json_decref(o);
}

static json_t *
kv_json(const struct etcd_kv *kv)
{
	return json_pack("{s:s%,s:s%,s:I,s:I,s:I,s:I}", "key", kv->key,
	    kv->key_len, "value", kv->value, kv->value_len, "create",
	    (json_int_t)kv->create_revision, "mod",
	    (json_int_t)kv->mod_revision, "version", (json_int_t)kv->version,
	    "lease", (json_int_t)kv->lease);
}

static void
on_res(const struct etcd_res *res, void *arg)
{
	json_t *o = json_object(), *kvs = json_array();

	for (size_t i = 0; i < res->n_kvs; i++)
		json_array_append_new(kvs, kv_json(&res->kvs[i]));
	json_object_set_new(o, "cmd", json_string(arg));
	json_object_set_new(o, "err", json_string(us_err_name(res->err)));
	if (res->message)
		json_object_set_new(o, "message", json_string(res->message));
	json_object_set_new(o, "revision", json_integer(res->revision));
	json_object_set_new(o, "kvs", kvs);
	json_object_set_new(o, "succeeded", json_boolean(res->succeeded));
	json_object_set_new(o, "deleted", json_integer(res->deleted));
	json_object_set_new(o, "id", json_string(""));
	{
		char id[32];

		snprintf(id, sizeof(id), "%" PRId64, res->id);
		json_object_set_new(o, "id", json_string(id));
	}
	json_object_set_new(o, "ttl", json_integer(res->ttl));
	json_object_set_new(
	    o, "endpoint", json_string(res->endpoint ? res->endpoint : ""));
	emit(o);
	free(arg);
}

static void
on_watch(struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	json_t *evs = json_array();

	(void)w;
	(void)arg;
	for (size_t i = 0; i < u->n_events; i++) {
		json_t *e = kv_json(&u->events[i].kv);

		json_object_set_new(e, "type",
		    json_string(u->events[i].type == ETCD_EVENT_PUT
			    ? "put"
			    : "delete"));
		json_array_append_new(evs, e);
	}
	emit(json_pack("{s:s,s:b,s:I,s:o,s:s}", "cmd", "watch", "reset",
	    u->reset, "revision", (json_int_t)u->revision, "events", evs,
	    "endpoint", u->endpoint ? u->endpoint : ""));
}

static int64_t
num(const char *s)
{
	return s ? strtoll(s, NULL, 10) : 0;
}

static void
run(char *line)
{
	char *argv[5] = {0};
	int argc = 0;
	char *save = NULL, *tok, *tag;

	for (tok = strtok_r(line, " ", &save); tok && argc < 5;
	     tok = strtok_r(NULL, " ", &save))
		argv[argc++] = tok;
	if (argc == 0)
		return;
	tag = strdup(argv[0]);
	if (strcmp(argv[0], "quit") == 0) {
		free(tag);
		etcd_watch_free(watch);
		watch = NULL;
		etcd_free(client);
		uv_close((uv_handle_t *)&in, NULL);
		return;
	}
	if (strcmp(argv[0], "put") == 0 && argc >= 3)
		etcd_kv_put(client, argv[1], argv[2], strlen(argv[2]),
		    num(argv[3]), on_res, tag);
	else if (strcmp(argv[0], "get") == 0 && argc >= 2)
		etcd_kv_range(client, argv[1], false, on_res, tag);
	else if (strcmp(argv[0], "prefix") == 0 && argc >= 2)
		etcd_kv_range(client, argv[1], true, on_res, tag);
	else if (strcmp(argv[0], "del") == 0 && argc >= 2)
		etcd_kv_delete(client, argv[1], false, on_res, tag);
	else if (strcmp(argv[0], "delprefix") == 0 && argc >= 2)
		etcd_kv_delete(client, argv[1], true, on_res, tag);
	else if (strcmp(argv[0], "create") == 0 && argc >= 3) {
		struct etcd_txn *t = etcd_kv_txn_new();

		etcd_kv_txn_compare(
		    t, argv[1], ETCD_CMP_CREATE, ETCD_CMP_EQUAL, 0, NULL, 0);
		etcd_kv_txn_put(
		    t, true, argv[1], argv[2], strlen(argv[2]), num(argv[3]));
		etcd_kv_txn_get(t, false, argv[1], false);
		etcd_kv_txn_commit(client, t, on_res, tag);
	} else if (strcmp(argv[0], "swap") == 0 && argc >= 4) {
		struct etcd_txn *t = etcd_kv_txn_new();

		etcd_kv_txn_compare(t, argv[1], ETCD_CMP_VALUE, ETCD_CMP_EQUAL,
		    0, argv[2], strlen(argv[2]));
		etcd_kv_txn_put(t, true, argv[1], argv[3], strlen(argv[3]), 0);
		etcd_kv_txn_get(t, false, argv[1], false);
		etcd_kv_txn_commit(client, t, on_res, tag);
	} else if (strcmp(argv[0], "grant") == 0 && argc >= 2)
		etcd_lease_grant(client, num(argv[1]), on_res, tag);
	else if (strcmp(argv[0], "keepalive") == 0 && argc >= 2)
		etcd_lease_keepalive(client, num(argv[1]), on_res, tag);
	else if (strcmp(argv[0], "revoke") == 0 && argc >= 2)
		etcd_lease_revoke(client, num(argv[1]), on_res, tag);
	else if (strcmp(argv[0], "ttl") == 0 && argc >= 2)
		etcd_lease_timetolive(client, num(argv[1]), on_res, tag);
	else if (strcmp(argv[0], "watch") == 0 && argc >= 2) {
		free(tag);
		watch = etcd_watch_new(
		    client, argv[1], true, num(argv[2]), on_watch, NULL);
	} else if (strcmp(argv[0], "endpoint") == 0) {
		const char *we = watch ? etcd_watch_endpoint(watch) : NULL;

		emit(json_pack("{s:s,s:s,s:s}", "cmd", "endpoint", "requests",
		    etcd_endpoint(client), "watch", we ? we : ""));
		free(tag);
	} else {
		emit(json_pack("{s:s,s:s}", "cmd", argv[0], "err", "EINVAL"));
		free(tag);
	}
}

static void
read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	char *line;
	size_t len;

	(void)s;
	if (n < 0) {
		{
			char quit[] = "quit";

			run(quit);
		}
		return;
	}
	buf_append(&inbuf, b->base, (size_t)n);
	while (buf_take_line(&inbuf, &line, &len) == 1) {
		run(line);
		free(line);
	}
}

int
main(int argc, char **argv)
{
	struct strlist eps = {0};

	if (argc < 3 || strcmp(argv[1], "--endpoints") != 0) {
		fprintf(
		    stderr, "usage: us-etcd-probe --endpoints URL[,URL...]\n");
		return 2;
	}
	log_init("probe", LOG_LEVEL_INFO);
	strlist_split(&eps, argv[2]);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	loop = uv_default_loop();
	buf_init(&inbuf, 1 << 20);
	client = etcd_new(loop, (const char *const *)eps.v, eps.n, NULL);
	uv_pipe_init(loop, &in, 0);
	uv_pipe_open(&in, 0);
	uv_read_start((uv_stream_t *)&in, loop_read_buffer, read_cb);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	buf_free(&inbuf);
	strlist_free(&eps);
	curl_global_cleanup();
	return 0;
}
