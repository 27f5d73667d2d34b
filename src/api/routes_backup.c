/*
 * GET /v1/backup/etcd and GET /v1/backup/db: the parts of a cluster
 * backup (docs/api.md, docs/operations.md). Each part is made in the
 * libuv thread pool (src/backup/serve.c blocks), into an unlinked file,
 * then sent from that file with its size, sha256 and counts in headers.
 * Every server answers for itself: the database is this server's, so
 * these are admin reads, never forwarded to the admin primary. One part
 * at a time per server, from the start of the work until the answer is
 * sent: a second request gets 503 EBUSY with Retry-After.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "backup/backup.h"

#define BACKUP_PARTS_AT_ONCE 1
#define BACKUP_RETRY_AFTER "2"

static unsigned in_flight; /* on the loop only */

struct job {
	uv_work_t work;
	struct http_req *req; /* NULL once it went away */
	const struct config *cfg; /* the worker keeps every version run */
	char *state_dir, *db_path;
	char server[CONFIG_NAME_MAX + 1];
	bool db;
	bool worked; /* the thread is done with it */
	struct serve_part p;
};

static void
job_free(struct job *j)
{
	if (j->worked && j->p.fd >= 0)
		close(j->p.fd);
	free(j->state_dir);
	free(j->db_path);
	free(j);
	in_flight--;
}

static void
run(uv_work_t *w)
{
	struct job *j = w->data;

	if (j->db)
		serve_db(j->db_path, j->state_dir, &j->p);
	else
		serve_etcd(j->cfg, j->state_dir, &j->p);
}

static void
header_i64(struct http_req *req, const char *name, int64_t v)
{
	char s[32];

	snprintf(s, sizeof(s), "%" PRId64, v);
	http_req_add_reply_header(req, name, s);
}

static void
gone(struct http_req *req, void *arg)
{
	struct job *j = arg;

	(void)req;
	j->req = NULL;
	if (j->worked)
		job_free(j); /* answered and sent, or dropped */
}

static void
done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct http_req *req = j->req;
	const struct serve_part *p = &j->p;

	(void)status;
	j->worked = true;
	if (req == NULL) {
		job_free(j);
		return;
	}
	if (p->fd < 0) {
		log_error("backup: the %s part: %s", j->db ? "db" : "etcd",
		    p->message);
		if (p->err == US_EUNAVAIL)
			http_req_add_reply_header(
			    req, "Retry-After", BACKUP_RETRY_AFTER);
		http_reply_error(req, p->err == US_EUNAVAIL ? 503 : 500,
		    p->err ? p->err : US_EINTERNAL, "%s", p->message);
		return; /* freed when the request is gone */
	}
	http_req_add_reply_header(req, "X-Understudy-Server", j->server);
	http_req_add_reply_header(req, "X-Understudy-Sha256", p->sha256);
	if (j->db) {
		header_i64(req, "X-Understudy-Records", p->records);
		header_i64(req, "X-Understudy-Sessions", p->sessions);
	} else {
		header_i64(req, "X-Understudy-Etcd-Revision", p->revision);
		header_i64(req, "X-Understudy-Keys", p->keys);
		header_i64(
		    req, "X-Understudy-Config-Versions", p->config_versions);
		header_i64(
		    req, "X-Understudy-Config-In-Effect", p->config_in_effect);
	}
	log_info("backup: sending the %s part: %" PRIu64 " bytes, sha256 %s",
	    j->db ? "db" : "etcd", p->size, p->sha256);
	/* the answer owns the descriptor now */
	http_reply_file(req, 200, "application/octet-stream", p->fd, p->size);
	j->p.fd = -1;
}

static void
start(struct http_req *req, struct api_ctx *ctx, bool db)
{
	struct job *j;

	if (in_flight >= BACKUP_PARTS_AT_ONCE) {
		http_req_add_reply_header(
		    req, "Retry-After", BACKUP_RETRY_AFTER);
		http_reply_error(req, 503, US_EBUSY,
		    "%s is making or sending a backup part already: try again",
		    ctx->self->name);
		return;
	}
	if (ctx->state_dir == NULL || (db && ctx->db_path == NULL)) {
		http_reply_error(req, 503, US_EUNAVAIL,
		    "%s has no database open yet", ctx->self->name);
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL ||
	    (j->state_dir = strdup(ctx->state_dir)) == NULL ||
	    (db && (j->db_path = strdup(ctx->db_path)) == NULL)) {
		if (j)
			free(j->state_dir);
		free(j);
		http_reply_error(req, 500, US_ENOMEM, "out of memory");
		return;
	}
	in_flight++;
	j->req = req;
	j->cfg = ctx->cfg;
	j->db = db;
	j->p.fd = -1;
	j->work.data = j;
	str_copy(j->server, ctx->self->name, sizeof(j->server));
	if (uv_queue_work(uv_default_loop(), &j->work, run, done) != 0) {
		j->worked = true;
		job_free(j);
		http_reply_error(
		    req, 500, US_EINTERNAL, "cannot queue the backup work");
		return;
	}
	http_req_on_gone(req, gone, j);
}

void
backup_get_etcd(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	start(req, ctx, false);
}

void
backup_get_db(
    struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	start(req, ctx, true);
}

/* GET /v1/backups: the scheduled backups and their archives. */
void
get_backups(struct http_req *req, struct api_ctx *ctx, const struct params *pa)
{
	(void)pa;
	if (ctx->backups == NULL) {
		http_reply_error(
		    req, 503, US_EUNAVAIL, "this server is starting");
		return;
	}
	http_reply_json(req, 200, backups_status(ctx->backups));
}
