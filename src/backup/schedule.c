/*
 * Scheduled backups, in the worker. Every server watches the slots under
 * /understudy/<cluster>/backup/slot/ (one key per scheduled time, named
 * by its start in ms); the admin primary takes each slot with a compare
 * on absence, writes the archive from a thread of its own (backup_take,
 * then backup_verify: everything there blocks) and records the result in
 * the slot's key, compared on the revision it claimed it at. A primary
 * that dies during a slot leaves it "running": the next primary takes it
 * over (compared on that revision) and finishes it into the same file
 * name, which link(2) never overwrites, so a slot has one archive.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "agent/agent.h"
#include "backup.h"
#include "coord/coord.h"

#define SLOTS_MAX 256 /* keys kept under backup/slot/ */
#define FAILED_KEEP 20 /* failed slots kept for their history */
#define ATTEMPTS_MAX 3 /* per slot */
#define RETRY_MIN_MS 10000
#define RETRY_MAX_MS (10 * 60 * 1000)
#define TICK_MS 1000
#define ERR_MAX 400

enum slot_state { SLOT_RUNNING, SLOT_DONE, SLOT_FAILED };
static const char *const slot_states[] = {"running", "done", "failed"};

struct slot {
	int64_t slot; /* its start, Unix ms */
	int64_t mod_rev;
	int state; /* enum slot_state */
	char server[CONFIG_NAME_MAX + 1];
	char run[33]; /* who claimed it, this time */
	long attempt;
	int64_t started, finished, size;
	bool verified;
	long missing; /* servers whose database the archive lacks */
	char file[PATH_MAX];
	char sha256[65];
	char error[ERR_MAX];
};

/* What the thread is given and gives back. */
struct job {
	struct backups *b;
	uv_thread_t thread;
	struct backup_target target;
	char path[PATH_MAX];
	char *ca;
	int64_t slot;
	/* the result */
	int64_t finished;
	bool ok, verified;
	long missing;
	int64_t size;
	char sha256[65];
	char error[ERR_MAX];
};

struct backups {
	uv_loop_t *loop;
	struct etcd *etcd;
	struct agent *agent;
	struct members *members;
	uv_fs_t unlink_req;
	bool unlinking;
	const struct config *cfg;
	struct config_schedule sched;
	char *self;
	char *state_dir;
	char *prefix; /* /understudy/<cluster>/backup/slot/ */
	struct etcd_watch *watch;
	bool synced; /* the watch gave its first state */
	struct slot *slots; /* in key order: oldest first */
	size_t n_slots;
	uv_timer_t tick;
	uv_async_t done;
	struct etcd_req *req; /* a claim or a result in flight */
	struct job *job; /* the thread's, while it runs */
	struct job *finished; /* its result, until etcd has it */
	bool run_done; /* the job of the last claim has finished */
	int64_t job_rev; /* the revision the slot was claimed at */
	char run[33]; /* the claim this server made last */
	bool closing;
	void (*freed)(void *arg);
	void *freed_arg;
	int closed_handles;
};

/* ---- the slots, as the watch tells ---- */

static struct slot *
slot_find(struct backups *b, int64_t slot)
{
	for (size_t i = 0; i < b->n_slots; i++)
		if (b->slots[i].slot == slot)
			return &b->slots[i];
	return NULL;
}

static int64_t
slot_of_key(const struct backups *b, const char *key)
{
	long long v;
	char *end;

	if (strncmp(key, b->prefix, strlen(b->prefix)) != 0)
		return -1;
	key += strlen(b->prefix);
	errno = 0;
	v = strtoll(key, &end, 10);
	if (errno || *end || end == key || v < 0)
		return -1;
	return (int64_t)v;
}

static int
slot_parse(struct slot *s, const struct etcd_kv *kv)
{
	const char *state = NULL, *server = "", *run = "", *file = "",
		   *sha = "", *error = "";
	json_int_t attempt = 1, started = 0, finished = 0, size = 0,
		   missing = 0;
	int verified = 0;
	json_t *o = json_loadb(kv->value, kv->value_len, 0, NULL);
	int rc = -1;

	if (json_unpack(o, "{s:s,s?s,s?s,s?I,s?I,s?I,s?s,s?I,s?s,s?b,s?s,s?I}",
		"state", &state, "server", &server, "run", &run, "attempt",
		&attempt, "started", &started, "finished", &finished, "file",
		&file, "size", &size, "sha256", &sha, "verified", &verified,
		"error", &error, "missing", &missing) != 0)
		goto out;
	for (int i = 0; i <= SLOT_FAILED; i++)
		if (strcmp(state, slot_states[i]) == 0)
			s->state = i, rc = 0;
	str_copy(s->server, server, sizeof(s->server));
	str_copy(s->run, run, sizeof(s->run));
	str_copy(s->file, file, sizeof(s->file));
	str_copy(s->sha256, sha, sizeof(s->sha256));
	str_copy(s->error, error, sizeof(s->error));
	s->attempt = (long)attempt;
	s->started = started;
	s->finished = finished;
	s->size = size;
	s->verified = verified;
	s->missing = (long)missing;
	s->mod_rev = kv->mod_revision;
out:
	json_decref(o);
	return rc;
}

static int
slot_cmp(const void *x, const void *y)
{
	const struct slot *a = x, *b = y;

	return a->slot < b->slot ? -1 : a->slot > b->slot;
}

static void
slot_event(struct backups *b, const struct etcd_event *ev)
{
	int64_t n = slot_of_key(b, ev->kv.key);
	struct slot *s, parsed = {0};

	if (n < 0)
		return;
	s = slot_find(b, n);
	if (ev->type == ETCD_EVENT_DELETE) {
		if (s) {
			memmove(s, s + 1,
			    (size_t)(b->slots + b->n_slots - s - 1) *
				sizeof(*s));
			b->n_slots--;
		}
		return;
	}
	parsed.slot = n;
	if (slot_parse(&parsed, &ev->kv) != 0) {
		log_warn(
		    "backup: unreadable slot key %s; ignoring it", ev->kv.key);
		return;
	}
	if (s) {
		*s = parsed;
		return;
	}
	if (b->n_slots == SLOTS_MAX) {
		/* the oldest goes from memory; pruning deletes it in etcd */
		memmove(b->slots, b->slots + 1,
		    (SLOTS_MAX - 1) * sizeof(*b->slots));
		b->n_slots--;
	}
	b->slots[b->n_slots++] = parsed;
	qsort(b->slots, b->n_slots, sizeof(*b->slots), slot_cmp);
}

static void
watched(struct etcd_watch *w, const struct etcd_watch_update *u, void *arg)
{
	struct backups *b = arg;

	(void)w;
	if (u->reset)
		b->n_slots = 0;
	for (size_t i = 0; i < u->n_events; i++)
		slot_event(b, &u->events[i]);
	if (!u->partial)
		b->synced = true;
	uv_timer_start(&b->tick, NULL, 0, TICK_MS);
}

/* ---- the thread ---- */

static void
job_free(struct job *j)
{
	if (j == NULL)
		return;
	free(j->ca);
	free(j);
}

/* Is the archive at path a good one? err says why not. */
static bool
job_verify(struct job *j)
{
	json_t *report = NULL;
	char err[ERR_MAX];
	int rc = backup_verify(j->path, NULL, &report, err, sizeof(err));

	if (rc == 0) {
		json_decref(report);
		return true;
	}
	if (rc < 0) {
		snprintf(j->error, sizeof(j->error), "verify: %.300s", err);
	} else {
		json_t *c;
		size_t i;

		snprintf(j->error, sizeof(j->error), "verify failed");
		json_array_foreach (json_object_get(report, "checks"), i, c) {
			if (json_is_true(json_object_get(c, "ok")))
				continue;
			snprintf(j->error, sizeof(j->error), "verify: %s: %s",
			    json_string_value(json_object_get(c, "part"))
				?: "?",
			    json_string_value(json_object_get(c, "why"))
				?: "failed");
			break;
		}
	}
	json_decref(report);
	return false;
}

static void
job_sha256(struct job *j)
{
	crypto_hash_sha256_state st;
	unsigned char h[crypto_hash_sha256_BYTES], chunk[65536];
	FILE *f = fopen(j->path, "rb");
	size_t n;

	if (f == NULL)
		return;
	crypto_hash_sha256_init(&st);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		crypto_hash_sha256_update(&st, chunk, n);
	fclose(f);
	crypto_hash_sha256_final(&st, h);
	for (size_t i = 0; i < sizeof(h); i++)
		snprintf(j->sha256 + 2 * i, 3, "%02x", h[i]);
}

static int
mkdir_p(const char *path)
{
	char tmp[PATH_MAX];

	str_copy(tmp, path, sizeof(tmp));
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

/*
 * Remove what a backup that died left half-written: the temporary files
 * (.NAME.partial-XXXXXX, take.c) of the archives whose names start as
 * path's base name does.
 */
static void
sweep(const char *dir, const char *path)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	size_t n = strlen(base);
	char old[PATH_MAX + 256];
	struct dirent *de;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d)) != NULL) {
		const char *name = de->d_name + (de->d_name[0] == '.');

		if (strncmp(name, base, n) != 0 ||
		    strstr(name + n, ".partial-") == NULL)
			continue;
		snprintf(old, sizeof(old), "%s/%s", dir, de->d_name);
		if (unlink(old) == 0)
			log_warn("backup: removed %s, left by a backup that "
				 "did not finish",
			    old);
	}
	if (d)
		closedir(d);
}

static void
job_run(void *arg)
{
	struct job *j = arg;
	char dir[PATH_MAX], err[ERR_MAX], aside[PATH_MAX + 32];
	json_t *manifest = NULL;
	struct stat st;
	char *slash;

	str_copy(dir, j->path, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	snprintf(aside, sizeof(aside), "%s.failed", j->path);
	if (mkdir_p(dir) != 0) {
		snprintf(j->error, sizeof(j->error), "backup_dir %.200s: %s",
		    dir, strerror(errno));
		goto out;
	}
	sweep(dir, j->path);
	if (backup_take(&j->target, j->path, NULL, NULL, &manifest, err,
		sizeof(err)) != 0) {
		if (errno != EEXIST) {
			snprintf(j->error, sizeof(j->error), "%s", err);
			goto out;
		}
		/*
		 * a primary before this one wrote it and died before it said
		 * so: keep it if it is good, else put it aside and take again
		 */
		if (job_verify(j))
			goto verified;
		log_warn("backup %s: %s; moved aside to %s", j->path, j->error,
		    aside);
		if (rename(j->path, aside) != 0) {
			snprintf(j->error, sizeof(j->error), "%.200s: %s",
			    aside, strerror(errno));
			goto out;
		}
		if (backup_take(&j->target, j->path, NULL, NULL, &manifest, err,
			sizeof(err)) != 0) {
			snprintf(j->error, sizeof(j->error), "%s", err);
			goto out;
		}
	}
	if (!job_verify(j)) {
		/* one bad archive per slot is kept to look at, no more */
		if (rename(j->path, aside) != 0)
			unlink(j->path);
		goto out;
	}
verified:
	j->verified = true;
	j->ok = true;
	j->error[0] = '\0';
	if (stat(j->path, &st) == 0)
		j->size = (int64_t)st.st_size;
	job_sha256(j);
	j->missing =
	    (long)json_array_size(json_object_get(manifest, "missing"));
	unlink(aside);
out:
	json_decref(manifest);
	uv_async_send(&j->b->done);
}

/* ---- claims and results in etcd ---- */

static char *
slot_key(const struct backups *b, int64_t slot)
{
	char *k = NULL;

	if (asprintf(&k, "%s%016" PRId64, b->prefix, slot) < 0)
		return NULL;
	return k;
}

static json_t *
slot_json(const struct slot *s)
{
	json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:I,s:I}", "slot",
	    (json_int_t)s->slot, "state", slot_states[s->state], "server",
	    s->server, "run", s->run, "attempt", (json_int_t)s->attempt,
	    "started", (json_int_t)s->started);

	if (s->file[0])
		json_object_set_new(o, "file", json_string(s->file));
	if (s->state == SLOT_RUNNING)
		return o;
	json_object_set_new(o, "finished", json_integer(s->finished));
	json_object_set_new(o, "verified", json_boolean(s->verified));
	if (s->state == SLOT_DONE) {
		json_object_set_new(o, "missing", json_integer(s->missing));
		json_object_set_new(o, "size", json_integer(s->size));
		json_object_set_new(o, "sha256", json_string(s->sha256));
	} else {
		json_object_set_new(o, "error", json_string(s->error));
	}
	return o;
}

static void backups_kick(struct backups *b);

/* The archive of slot in this server's backup_dir. */
static void
archive_path(const struct backups *b, int64_t slot, char *out, size_t len)
{
	const char *dir = b->cfg->cluster.backup_dir;
	time_t t = (time_t)(slot / 1000);
	struct tm tm;
	char when[32] = "";

	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
	if (dir == NULL || *dir == '\0')
		dir = "backups";
	if (dir[0] == '/')
		snprintf(out, len, "%s/understudy-%s-%s.tar", dir,
		    b->cfg->cluster.name, when);
	else
		snprintf(out, len, "%s/%s/understudy-%s-%s.tar", b->state_dir,
		    dir, b->cfg->cluster.name, when);
}

static void
job_start(struct backups *b, const struct slot *s, int64_t rev)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return;
	j->b = b;
	j->slot = s->slot;
	archive_path(b, s->slot, j->path, sizeof(j->path));
	j->target.cfg = b->cfg;
	j->target.token = b->cfg->cluster.admin_token;
	j->ca = config_file_path(b->cfg, b->cfg->cluster.tls_ca);
	j->target.ca = j->ca;
	b->job_rev = rev;
	log_info("backup: slot %" PRId64 " (attempt %ld) into %s", s->slot,
	    s->attempt, j->path);
	if (uv_thread_create(&j->thread, job_run, j) != 0) {
		log_error("backup: cannot start a thread");
		job_free(j);
		return;
	}
	b->job = j;
}

struct claim {
	struct backups *b;
	struct slot s;
};

static void
claimed(const struct etcd_res *res, void *arg)
{
	struct claim *c = arg;
	struct backups *b = c->b;

	b->req = NULL;
	if (res->err == 0 && res->succeeded && !b->closing &&
	    agent_is_admin(b->agent))
		job_start(b, &c->s, res->revision);
	else if (res->err)
		log_warn("backup: claiming slot %" PRId64 ": %s", c->s.slot,
		    res->message ? res->message : us_strerror(res->err));
	free(c);
	backups_kick(b);
}

/* Claim s (absent: mod_rev 0) for this server, as attempt. */
static void
claim(struct backups *b, int64_t slot, const struct slot *old)
{
	struct claim *c = calloc(1, sizeof(*c));
	struct etcd_txn *t = etcd_kv_txn_new();
	char *key = slot_key(b, slot), *text = NULL;
	unsigned char rnd[16];
	json_t *o;

	if (c == NULL || t == NULL || key == NULL)
		goto fail;
	c->b = b;
	c->s.slot = slot;
	c->s.state = SLOT_RUNNING;
	c->s.attempt = old ? old->attempt + 1 : 1;
	c->s.started = time_wall_ms();
	str_copy(c->s.server, b->self, sizeof(c->s.server));
	randombytes_buf(rnd, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(c->s.run + 2 * i, 3, "%02x", rnd[i]);
	archive_path(b, slot, c->s.file, sizeof(c->s.file));
	if ((o = slot_json(&c->s)) == NULL ||
	    (text = json_dumps(o, JSON_COMPACT)) == NULL) {
		json_decref(o);
		goto fail;
	}
	json_decref(o);
	if (old)
		log_warn("backup: slot %" PRId64 " %s by %s (attempt %ld): "
			 "taking it over",
		    slot, slot_states[old->state], old->server, old->attempt);
	etcd_kv_txn_compare(t, key, old ? ETCD_CMP_MOD : ETCD_CMP_CREATE,
	    ETCD_CMP_EQUAL, old ? old->mod_rev : 0, NULL, 0);
	etcd_kv_txn_put(t, true, key, text, strlen(text), 0);
	str_copy(b->run, c->s.run, sizeof(b->run));
	b->run_done = false;
	b->req = etcd_kv_txn_commit(b->etcd, t, claimed, c);
	t = NULL;
	if (b->req == NULL)
		goto fail;
	free(key);
	free(text);
	return;
fail:
	etcd_kv_txn_free(t);
	free(c);
	free(key);
	free(text);
}

static void record(struct backups *b);

static void
recorded(const struct etcd_res *res, void *arg)
{
	struct backups *b = arg;

	b->req = NULL;
	if (res->err) {
		/* unknown or not done: the next turn writes it again */
		log_warn("backup: recording the result of slot %" PRId64
			 ": %s; trying again",
		    b->finished->slot,
		    res->message ? res->message : us_strerror(res->err));
		return;
	}
	if (!res->succeeded)
		log_warn("backup: slot %" PRId64 " was taken over meanwhile; "
			 "its result is the new holder's",
		    b->finished->slot);
	job_free(b->finished);
	b->finished = NULL;
	backups_kick(b);
}

/* Deletes of the failed slots past FAILED_KEEP. */
static void
prune(struct backups *b, struct etcd_txn *t, const struct job *j)
{
	size_t failed = 0, ops = 0;

	for (size_t i = b->n_slots; i-- > 0 && ops < 100;) {
		const struct slot *s = &b->slots[i];
		bool go = false;
		char *key;

		if (s->slot == j->slot || s->state == SLOT_RUNNING)
			continue;
		if (s->state == SLOT_FAILED)
			go = ++failed > FAILED_KEEP;
		if (!go || (key = slot_key(b, s->slot)) == NULL)
			continue;
		etcd_kv_txn_delete(t, true, key, false);
		free(key);
		ops++;
	}
}

/* Write the result of the finished job, compared on its claim. */
static void
record(struct backups *b)
{
	struct job *j = b->finished;
	struct etcd_txn *t;
	struct slot s;
	char *key = NULL, *text = NULL;
	json_t *o;

	memset(&s, 0, sizeof(s));
	if (slot_find(b, j->slot))
		s = *slot_find(b, j->slot);
	s.slot = j->slot;
	s.state = j->ok ? SLOT_DONE : SLOT_FAILED;
	str_copy(s.server, b->self, sizeof(s.server));
	str_copy(s.run, b->run, sizeof(s.run));
	str_copy(s.file, j->path, sizeof(s.file));
	s.finished = j->finished;
	s.size = j->size;
	s.verified = j->verified;
	s.missing = j->missing;
	str_copy(s.sha256, j->sha256, sizeof(s.sha256));
	str_copy(s.error, j->error, sizeof(s.error));
	if ((o = slot_json(&s)) == NULL ||
	    (text = json_dumps(o, JSON_COMPACT)) == NULL ||
	    (key = slot_key(b, j->slot)) == NULL ||
	    (t = etcd_kv_txn_new()) == NULL) {
		json_decref(o);
		goto out;
	}
	json_decref(o);
	etcd_kv_txn_compare(
	    t, key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, b->job_rev, NULL, 0);
	etcd_kv_txn_put(t, true, key, text, strlen(text), 0);
	prune(b, t, j);
	b->req = etcd_kv_txn_commit(b->etcd, t, recorded, b);
out:
	free(key);
	free(text);
}

static void
job_done(uv_async_t *h)
{
	struct backups *b = h->data;
	struct job *j = b->job;

	if (j == NULL)
		return;
	uv_thread_join(&j->thread);
	b->job = NULL;
	b->run_done = true;
	j->finished = time_wall_ms();
	if (j->ok)
		log_info("backup: slot %" PRId64 " written and verified: %s, "
			 "%" PRId64 " bytes",
		    j->slot, j->path, j->size);
	else
		log_error(
		    "backup: slot %" PRId64 " failed: %s", j->slot, j->error);
	if (b->closing) {
		job_free(j);
		return;
	}
	b->finished = j;
	record(b);
}

/* ---- retention: each server removes its own archives past keep ---- */

static void
forgotten(const struct etcd_res *res, void *arg)
{
	struct backups *b = arg;

	b->req = NULL;
	if (res->err)
		log_warn("backup: forgetting a removed archive: %s",
		    res->message ? res->message : us_strerror(res->err));
	backups_kick(b);
}

static void
unlinked(uv_fs_t *req)
{
	struct backups *b = req->data;
	int64_t slot = 0;
	struct etcd_txn *t;
	struct slot *s;
	char *key;

	b->unlinking = false;
	for (size_t i = 0; i < b->n_slots; i++)
		if (strcmp(b->slots[i].file, req->path) == 0 &&
		    strcmp(b->slots[i].server, b->self) == 0)
			slot = b->slots[i].slot;
	if (req->result < 0 && req->result != UV_ENOENT)
		log_warn("backup: removing %s: %s", req->path,
		    uv_strerror((int)req->result));
	else if (req->result == 0)
		log_info("backup: removed %s (backup_keep %ld)", req->path,
		    b->cfg->cluster.backup_keep);
	uv_fs_req_cleanup(req);
	if (b->closing || slot == 0 || b->req ||
	    (s = slot_find(b, slot)) == NULL ||
	    (key = slot_key(b, slot)) == NULL)
		return;
	if ((t = etcd_kv_txn_new()) == NULL) {
		free(key);
		return;
	}
	etcd_kv_txn_compare(
	    t, key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, s->mod_rev, NULL, 0);
	etcd_kv_txn_delete(t, true, key, false);
	b->req = etcd_kv_txn_commit(b->etcd, t, forgotten, b);
	free(key);
}

/*
 * The newest backup_keep complete archives stay (and partial ones newer
 * than the oldest of them); of the others, this server removes the ones
 * it wrote, one per turn, then forgets their slots. An archive on
 * another machine is removed by the server that wrote it.
 */
static bool
retain(struct backups *b)
{
	long complete = 0;

	if (b->unlinking)
		return true;
	for (size_t i = b->n_slots; i-- > 0;) {
		struct slot *s = &b->slots[i];

		if (s->state != SLOT_DONE)
			continue;
		if (complete < b->cfg->cluster.backup_keep) {
			complete += s->missing == 0;
			continue;
		}
		if (strcmp(s->server, b->self) != 0 || !s->file[0])
			continue;
		b->unlink_req.data = b;
		if (uv_fs_unlink(b->loop, &b->unlink_req, s->file, unlinked) !=
		    0)
			return false;
		b->unlinking = true;
		return true;
	}
	return false;
}

/* ---- the turn: is there a slot to take? ---- */

/*
 * Has the worker that claimed s gone? Its server is down, or came back
 * (its membership is newer than the claim): nothing finishes the slot
 * then. A holder that lives (it lost the admin key for a moment) is
 * left to finish: its result is compared on its claim.
 */
static bool
holder_gone(const struct backups *b, const struct slot *s)
{
	if (strcmp(s->server, b->self) == 0 && strcmp(s->run, b->run) != 0)
		return true;
	return !members_is_up(b->members, s->server) ||
	    members_since(b->members, s->server) > s->started;
}

static void
abandoned(const struct etcd_res *res, void *arg)
{
	struct backups *b = arg;

	b->req = NULL;
	(void)res;
	backups_kick(b);
}

/* A slot of a past time whose holder went: failed, for the record. */
static void
abandon(struct backups *b, const struct slot *old)
{
	struct slot s = *old;
	struct etcd_txn *t = NULL;
	char *key = slot_key(b, old->slot), *text = NULL;
	json_t *o;

	s.state = SLOT_FAILED;
	s.finished = time_wall_ms();
	snprintf(s.error, sizeof(s.error),
	    "abandoned: %s stopped during the backup, and its time had "
	    "passed",
	    old->server);
	if (key == NULL || (o = slot_json(&s)) == NULL)
		goto out;
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (text == NULL || (t = etcd_kv_txn_new()) == NULL)
		goto out;
	log_warn("backup: slot %" PRId64 ": %s", old->slot, s.error);
	etcd_kv_txn_compare(
	    t, key, ETCD_CMP_MOD, ETCD_CMP_EQUAL, old->mod_rev, NULL, 0);
	etcd_kv_txn_put(t, true, key, text, strlen(text), 0);
	b->req = etcd_kv_txn_commit(b->etcd, t, abandoned, b);
out:
	free(key);
	free(text);
}

static void
turn(uv_timer_t *tm)
{
	struct backups *b = tm->data;
	int64_t now = time_wall_ms(), slot, retry;
	struct slot *s;

	if (b->closing || b->job || b->req)
		return;
	if (b->finished) {
		record(b);
		return;
	}
	if (!b->synced || retain(b))
		return;
	if (b->sched.kind == CONFIG_SCHEDULE_NONE || !agent_is_admin(b->agent))
		return;
	slot = config_schedule_slot(&b->sched, now);
	for (size_t i = 0; i < b->n_slots; i++)
		if (b->slots[i].slot != slot &&
		    b->slots[i].state == SLOT_RUNNING &&
		    holder_gone(b, &b->slots[i])) {
			abandon(b, &b->slots[i]);
			return;
		}
	if ((s = slot_find(b, slot)) == NULL) {
		claim(b, slot, NULL);
		return;
	}
	switch (s->state) {
	case SLOT_RUNNING:
		/* a claim of ours whose answer was lost shows with our run */
		if (strcmp(s->server, b->self) == 0 &&
		    strcmp(s->run, b->run) == 0) {
			/* recorded, and the watch has not shown it yet */
			if (!b->run_done)
				job_start(b, s, s->mod_rev);
			return;
		}
		if (holder_gone(b, s))
			claim(b, slot, s);
		return;
	case SLOT_FAILED:
		retry = b->sched.interval_s * 1000 / 4;
		retry = retry < RETRY_MIN_MS ? RETRY_MIN_MS : retry;
		retry = retry > RETRY_MAX_MS ? RETRY_MAX_MS : retry;
		if (s->attempt < ATTEMPTS_MAX && now - s->finished >= retry)
			claim(b, slot, s);
		return;
	default:
		return;
	}
}

static void
backups_kick(struct backups *b)
{
	if (!b->closing)
		uv_timer_start(&b->tick, turn, 0, TICK_MS);
}

/* ---- life ---- */

void
backups_set_config(struct backups *b, const struct config *cfg)
{
	char err[256];

	b->cfg = cfg;
	memset(&b->sched, 0, sizeof(b->sched));
	if (cfg->cluster.backup_schedule &&
	    config_schedule_parse(
		cfg->cluster.backup_schedule, &b->sched, err, sizeof(err)) != 0)
		log_error("backup_schedule: %s; no backup is scheduled", err);
	backups_kick(b);
}

struct backups *
backups_new(uv_loop_t *loop, struct etcd *e, struct agent *a, struct members *m,
    const struct config *cfg, const char *self, const char *state_dir)
{
	struct backups *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return NULL;
	b->loop = loop;
	b->etcd = e;
	b->agent = a;
	b->members = m;
	b->self = strdup(self);
	b->state_dir = strdup(state_dir);
	b->slots = calloc(SLOTS_MAX, sizeof(*b->slots));
	if (asprintf(&b->prefix, "/understudy/%s/backup/slot/",
		cfg->cluster.name) < 0)
		b->prefix = NULL;
	if (!b->self || !b->state_dir || !b->slots || !b->prefix)
		goto fail;
	uv_timer_init(loop, &b->tick);
	b->tick.data = b;
	uv_async_init(loop, &b->done, job_done);
	b->done.data = b;
	b->watch = etcd_watch_new(e, b->prefix, true, 0, watched, b);
	backups_set_config(b, cfg);
	if (cfg->cluster.backup_dir == NULL ||
	    cfg->cluster.backup_dir[0] != '/') {
		/*
		 * this server's own directory: what its worker before this one
		 * left half-written goes (a shared one may hold a live
		 * backup of another server's)
		 */
		char dir[PATH_MAX], *slash;

		archive_path(b, 0, dir, sizeof(dir));
		if ((slash = strrchr(dir, '/')) != NULL) {
			*slash = '\0';
			snprintf(slash + 1,
			    sizeof(dir) - (size_t)(slash + 1 - dir),
			    "understudy-%s-", cfg->cluster.name);
			*slash = '\0';
			sweep(dir, slash + 1);
		}
	}

	return b;
fail:
	free(b->self);
	free(b->state_dir);
	free(b->slots);
	free(b->prefix);
	free(b);
	return NULL;
}

static void
closed(uv_handle_t *h)
{
	struct backups *b = h->data;

	if (++b->closed_handles < 2)
		return;
	if (b->freed)
		b->freed(b->freed_arg);
	free(b->self);
	free(b->state_dir);
	free(b->slots);
	free(b->prefix);
	free(b);
}

void
backups_free(struct backups *b, void (*done)(void *arg), void *arg)
{
	if (b == NULL) {
		if (done)
			done(arg);
		return;
	}
	b->closing = true;
	b->freed = done;
	b->freed_arg = arg;
	etcd_watch_free(b->watch);
	if (b->req)
		etcd_req_cancel(b->req);
	if (b->job) {
		/*
		 * a backup in progress is waited for; a worker stopped for
		 * too long is killed by its master, and then its throwaway
		 * etcd dies with it (verify.c) and the next worker sweeps the
		 * half-written file
		 */
		uv_thread_join(&b->job->thread);
		job_free(b->job);
		b->job = NULL;
	}
	job_free(b->finished);
	b->finished = NULL;
	uv_close((uv_handle_t *)&b->tick, closed);
	uv_close((uv_handle_t *)&b->done, closed);
}

/* ---- what the API shows ---- */

static const struct slot *
last_with(const struct backups *b, int state)
{
	for (size_t i = b->n_slots; i-- > 0;)
		if (b->slots[i].state == state ||
		    (state < 0 && b->slots[i].state != SLOT_RUNNING))
			return &b->slots[i];
	return NULL;
}

static json_t *
slot_status(const struct slot *s)
{
	json_t *o = slot_json(s);
	char at[32];

	json_object_del(o, "run");
	json_object_set_new(
	    o, "slot_at", json_string(time_iso8601(s->slot, at, sizeof(at))));
	if (s->state != SLOT_RUNNING)
		json_object_set_new(o, "finished_at",
		    json_string(time_iso8601(s->finished, at, sizeof(at))));
	return o;
}

json_t *
backups_status(const struct backups *b)
{
	int64_t now = time_wall_ms(), today;
	const struct slot *ok = last_with(b, SLOT_DONE),
			  *last = last_with(b, -1);
	json_t *o, *kept = json_array(), *runs = json_array();
	struct tm tm;
	time_t t = (time_t)(now / 1000);
	long n_today = 0;
	char at[32];

	localtime_r(&t, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	today = (int64_t)mktime(&tm) * 1000;
	for (size_t i = b->n_slots; i-- > 0;) {
		const struct slot *s = &b->slots[i];

		if (s->state == SLOT_DONE) {
			json_array_append_new(kept, slot_status(s));
			if (s->finished >= today)
				n_today++;
		} else if (s->state == SLOT_RUNNING) {
			json_array_append_new(runs, slot_status(s));
		}
	}
	o = json_pack("{s:s?,s:I,s:s?,s:I,s:I,s:o,s:o?,s:o?,s:o,s:s?}",
	    "schedule", b->cfg->cluster.backup_schedule, "interval_s",
	    (json_int_t)b->sched.interval_s, "dir", b->cfg->cluster.backup_dir,
	    "keep", (json_int_t)b->cfg->cluster.backup_keep, "completed_today",
	    (json_int_t)n_today, "archives", kept, "last_ok",
	    ok ? slot_status(ok) : NULL, "last",
	    last ? slot_status(last) : NULL, "running", runs, "primary",
	    agent_admin(b->agent));
	if (b->sched.kind != CONFIG_SCHEDULE_NONE) {
		int64_t next = config_schedule_next(&b->sched, now);

		json_object_set_new(o, "next", json_integer(next));
		json_object_set_new(o, "next_at",
		    json_string(time_iso8601(next, at, sizeof(at))));
	}
	if (last)
		json_object_set_new(json_object_get(o, "last"), "result",
		    json_string(last->state == SLOT_DONE ? "ok" : "failed"));
	if (ok)
		json_object_set_new(json_object_get(o, "last_ok"), "age_s",
		    json_integer((now - ok->finished) / 1000));
	return o;
}

bool
backups_last_ok(const struct backups *b, int64_t *finished_ms)
{
	const struct slot *ok = last_with(b, SLOT_DONE);

	if (ok)
		*finished_ms = ok->finished;
	return ok != NULL;
}
