/*
 * The configuration a worker runs: the cluster's version in effect in
 * etcd, never silently its local file (docs/operations.md). A worker
 * restarted by its master reads it again, so an edit of the file alone
 * changes nothing.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config/versions.h"
#include "daemon.h"

#define CONF_RETRY_MS 500

struct wait {
	bool done;
	int err;
	char message[256];
	json_t *version;
};

static void
fetched(const struct versions_res *r, void *arg)
{
	struct wait *w = arg;

	w->done = true;
	w->err = r->err;
	snprintf(w->message, sizeof(w->message), "%s", r->message);
	w->version = json_incref(r->version);
}

static void
timer_fired(uv_timer_t *t)
{
	*(bool *)t->data = true;
}

/* Run the loop until *flag or *stop. */
static void
run_until(uv_loop_t *loop, const bool *flag, const bool *stop)
{
	while (!*flag && !*stop)
		uv_run(loop, UV_RUN_ONCE);
}

static json_t *
fetch(uv_loop_t *loop, struct versions *v, const char *text, const char *author,
    const bool *stop)
{
	char last[256] = "";

	while (!*stop) {
		struct wait w = {0};
		struct versions_op *op =
		    versions_current(v, text, author, fetched, &w);
		uv_timer_t t;
		bool again = false;

		if (op == NULL) {
			log_error("config: out of memory");
			return NULL;
		}
		run_until(loop, &w.done, stop);
		if (!w.done) {
			versions_cancel(op);
			return NULL;
		}
		if (w.err == 0)
			return w.version;
		json_decref(w.version);
		if (strcmp(w.message, last) != 0) {
			log_warn("config: %s; trying again", w.message);
			snprintf(last, sizeof(last), "%s", w.message);
		}
		uv_timer_init(loop, &t);
		t.data = &again;
		uv_timer_start(&t, timer_fired, CONF_RETRY_MS, 0);
		run_until(loop, &again, stop);
		uv_close((uv_handle_t *)&t, NULL);
		uv_run(loop, UV_RUN_NOWAIT);
	}
	return NULL;
}

struct config *
conf_effective(uv_loop_t *loop, struct versions *v, const struct daemon_args *a,
    const bool *stop, bool *differs, bool quiet)
{
	char err[512], author[200], host[100] = "?", mine[65];
	const char *text, *sha, *by, *when;
	struct config_diags d = {0};
	struct config *cfg = NULL;
	char *local;
	json_t *ver;
	size_t len;
	int64_t n;

	*differs = false;
	if ((local = tls_read_path(a->config_path, &len, err, sizeof(err))) ==
	    NULL) {
		log_error("config: %s", err);
		return NULL;
	}
	gethostname(host, sizeof(host) - 1);
	snprintf(
	    author, sizeof(author), "%s (first start, on %s)", a->server, host);
	if ((ver = fetch(loop, v, local, author, stop)) == NULL) {
		free(local);
		return NULL;
	}
	n = json_integer_value(json_object_get(ver, "version"));
	text = json_string_value(json_object_get(ver, "text"));
	sha = json_string_value(json_object_get(ver, "sha256"));
	by = json_string_value(json_object_get(ver, "author"));
	when = json_string_value(json_object_get(ver, "time"));
	if (text == NULL) {
		log_error("config: version %" PRId64 " in etcd has no text", n);
		goto out;
	}
	versions_sha256(local, mine);
	if (sha == NULL || strcmp(sha, mine) != 0) {
		*differs = true;
	}
	if (*differs && !quiet) {
		log_warn("config: %s differs from version %" PRId64
			 " in effect (stored by %s at %s); running version "
			 "%" PRId64
			 ". `understudy config apply %s` makes the file the "
			 "cluster's; `understudy config show` prints the "
			 "version in effect",
		    a->config_path, n, by ? by : "?", when ? when : "?", n,
		    a->config_path);
	}
	/* relative file options resolve next to the local file, as before */
	cfg = config_parse(a->config_path, text, strlen(text), &d);
	if ((cfg == NULL || d.errors) && quiet) {
		config_free(cfg);
		cfg = NULL;
	} else if (cfg == NULL || d.errors) {
		config_diags_print(&d, stderr);
		log_error("config: version %" PRId64
			  " in effect has errors for this release; not "
			  "starting",
		    n);
		config_free(cfg);
		cfg = NULL;
	} else if (config_server_find(cfg, a->server) == NULL) {
		if (!quiet)
			log_error("config: version %" PRId64
				  " in effect has no [server %s]; not starting",
			    n, a->server);
		config_free(cfg);
		cfg = NULL;
	} else {
		cfg->version = n;
		if (!quiet)
			log_info("config: running version %" PRId64 "%s", n,
			    *differs ? "" : " (the same as the local file)");
	}
out:
	config_diags_free(&d);
	json_decref(ver);
	free(local);
	return cfg;
}
