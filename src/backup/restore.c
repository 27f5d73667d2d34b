/*
 * Put an archive back, on this machine or a new one, for understudy up
 * to run: verified first; refused while any server of the cluster (or
 * its local etcd) answers, and where something is in the way unless
 * forced, which moves it aside and never deletes it. etcd is restored
 * with etcdctl into state_dir/etcd as the member understudy up runs;
 * each database goes to state_dir/SERVER/understudy.db under a
 * temporary name first. What it began is undone when a step fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "backup.h"

#define RESTORE_PROBE_MS 1000
#define RESTORE_UNDO_MAX 256

struct undo {
	char from[PATH_MAX]; /* moved aside from here... */
	char to[PATH_MAX]; /* ...to here; "" when it was made (remove it) */
};

struct restore {
	const struct backup_restore_opts *o;
	struct undo undo[RESTORE_UNDO_MAX];
	size_t n_undo;
	json_t *restored, *moved;
	char stamp[32];
};

void
backup_etcd_member(const struct config *cfg, char *name, size_t namelen,
    char *peer, size_t peerlen)
{
	snprintf(name, namelen, "understudy-%s", cfg->cluster.name);
	snprintf(peer, peerlen, "http://127.0.0.1:%ld",
	    cfg->cluster.local_etcd_port + 1);
}

static size_t
discard(char *data, size_t size, size_t nmemb, void *userp)
{
	(void)data;
	(void)userp;
	return size * nmemb;
}

/*
 * Does anything run at url? Only a refused or unreachable connection
 * says no: a timeout (a frozen server) or a TLS failure (a CA that does
 * not fit) is something there, and a restore must not run under it.
 */
static bool
answers(const char *url, const char *ca, bool post)
{
	CURLcode rc;
	CURL *c = curl_easy_init();

	if (c == NULL)
		return true;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)RESTORE_PROBE_MS);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	if (ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (post)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
	rc = curl_easy_perform(c);
	curl_easy_cleanup(c);
	return rc != CURLE_COULDNT_CONNECT && rc != CURLE_COULDNT_RESOLVE_HOST;
}

/* The servers (and local etcd) that answer: a text naming them, or "". */
static void
running(struct restore *r, const json_t *manifest, struct buf *who)
{
	const struct config *cfg = r->o->cfg;
	const json_t *servers = json_object_get(manifest, "servers"), *s;
	char url[600], base[300];
	size_t i;

	json_array_foreach (servers, i, s) {
		const char *name =
		    json_string_value(json_object_get(s, "name"));
		const char *api = json_string_value(json_object_get(s, "api"));

		if (name == NULL || api == NULL)
			continue;
		snprintf(url, sizeof(url), "%s/health", api);
		if (answers(url, r->o->ca, false))
			buf_printf(
			    who, "%s%s (%s)", who->len ? ", " : "", name, api);
	}
	for (i = 0; i < cfg->n_servers; i++) {
		const struct config_server *cs = &cfg->servers[i];

		config_api_url(
		    cfg, cs->address, cs->api_port, base, sizeof(base));
		if (who->data && strstr(who->data, base))
			continue;
		snprintf(url, sizeof(url), "%s/health", base);
		if (answers(url, r->o->ca, false))
			buf_printf(who, "%s%s (%s)", who->len ? ", " : "",
			    cs->name, base);
	}
	if (cfg->cluster.etcd_local) {
		snprintf(url, sizeof(url),
		    "http://127.0.0.1:%ld/v3/maintenance/status",
		    cfg->cluster.local_etcd_port);
		if (answers(url, NULL, true))
			buf_printf(who, "%setcd (http://127.0.0.1:%ld)",
			    who->len ? ", " : "", cfg->cluster.local_etcd_port);
	}
}

static bool
exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
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
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int
remember(struct restore *r, const char *from, const char *to)
{
	if (r->n_undo >= RESTORE_UNDO_MAX)
		return -1;
	str_copy(r->undo[r->n_undo].from, from, PATH_MAX);
	str_copy(r->undo[r->n_undo].to, to ? to : "", PATH_MAX);
	r->n_undo++;
	return 0;
}

static void
rm_tree(const char *path)
{
	verify_remove_tree(path);
}

static void
undo_all(struct restore *r)
{
	while (r->n_undo > 0) {
		struct undo *u = &r->undo[--r->n_undo];

		if (u->to[0])
			rename(u->to, u->from);
		else
			rm_tree(u->from);
	}
}

/* Move what is in the way of path aside (with --force). */
static int
aside(struct restore *r, const char *path, char *err, size_t errlen)
{
	char to[PATH_MAX + 64];

	if (!exists(path))
		return 0;
	snprintf(to, sizeof(to), "%s.before-restore-%s", path, r->stamp);
	if (rename(path, to) != 0 || remember(r, path, to) != 0) {
		snprintf(err, errlen, "cannot move %s aside: %s", path,
		    strerror(errno));
		return -1;
	}
	json_array_append_new(
	    r->moved, json_pack("{s:s,s:s}", "from", path, "to", to));
	return 0;
}

/* Copy entry e of the archive in fd to path (a new file), synced. */
static int
copy_out(int fd, const struct archive_entry *e, const char *path, char *err,
    size_t errlen)
{
	unsigned char sha[32];
	int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (out < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (archive_sha256(fd, e->offset, e->size, out, sha, err, errlen) !=
		0 ||
	    fsync(out) != 0) {
		if (errno)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(out);
		unlink(path);
		return -1;
	}
	close(out);
	return 0;
}

static int
restore_etcd(struct restore *r, int fd, const struct archive_entry *e,
    char *err, size_t errlen)
{
	const struct backup_restore_opts *o = r->o;
	char snap[PATH_MAX], data[PATH_MAX], tmp[PATH_MAX], log[PATH_MAX];
	char name[128], peer[64], why[512];

	if (!o->cfg->cluster.etcd_local) {
		/* an etcd of its own: the operator restores it there */
		snprintf(snap, sizeof(snap), "%s/etcd.snapshot", o->state_dir);
		if (copy_out(fd, e, snap, err, errlen) != 0 ||
		    remember(r, snap, NULL) != 0)
			return -1;
		json_array_append_new(r->restored,
		    json_pack("{s:s,s:s,s:s}", "part", e->name, "to", snap,
			"note",
			"etcd is not local: restore this snapshot into the "
			"cluster's etcd with etcdctl snapshot restore"));
		return 0;
	}
	snprintf(snap, sizeof(snap), "%s/.restore-etcd.snapshot", o->state_dir);
	snprintf(tmp, sizeof(tmp), "%s/.etcd.restoring", o->state_dir);
	snprintf(data, sizeof(data), "%s/etcd", o->state_dir);
	snprintf(log, sizeof(log), "%s/.restore-etcdctl.log", o->state_dir);
	backup_etcd_member(o->cfg, name, sizeof(name), peer, sizeof(peer));
	rm_tree(tmp);
	unlink(snap);
	if (copy_out(fd, e, snap, err, errlen) != 0)
		return -1;
	if (verify_etcd_restore(snap, tmp, name, peer, log, why, sizeof(why))) {
		snprintf(err, errlen, "etcdctl snapshot restore: %s", why);
		unlink(snap);
		unlink(log);
		rm_tree(tmp);
		return -1;
	}
	unlink(snap);
	unlink(log);
	if (rename(tmp, data) != 0 || remember(r, data, NULL) != 0) {
		snprintf(err, errlen, "%s: %s", data, strerror(errno));
		rm_tree(tmp);
		return -1;
	}
	json_array_append_new(r->restored,
	    json_pack("{s:s,s:s,s:s,s:s}", "part", e->name, "to", data,
		"member", name, "peer", peer));
	return 0;
}

static int
restore_db(struct restore *r, int fd, const struct archive_entry *e,
    const char *server, char *err, size_t errlen)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 32], db[PATH_MAX + 32];

	if (server == NULL || !archive_name_ok(server) || strchr(server, '/')) {
		snprintf(
		    err, errlen, "%s: no server name in the manifest", e->name);
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s/%s", r->o->state_dir, server);
	snprintf(tmp, sizeof(tmp), "%s/.understudy.db.restoring", dir);
	snprintf(db, sizeof(db), "%s/understudy.db", dir);
	if (mkdir_p(dir) != 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	unlink(tmp);
	if (copy_out(fd, e, tmp, err, errlen) != 0)
		return -1;
	if (rename(tmp, db) != 0 || remember(r, db, NULL) != 0) {
		snprintf(err, errlen, "%s: %s", db, strerror(errno));
		unlink(tmp);
		return -1;
	}
	json_array_append_new(r->restored,
	    json_pack(
		"{s:s,s:s,s:s}", "part", e->name, "to", db, "server", server));
	return 0;
}

/* The paths a restore writes to, and whether each is in the way. */
static void
in_the_way(struct restore *r, const json_t *parts, struct buf *paths,
    struct strlist *list)
{
	char p[PATH_MAX + 64];
	const json_t *part;
	size_t i;

	if (r->o->cfg->cluster.etcd_local) {
		snprintf(p, sizeof(p), "%s/etcd", r->o->state_dir);
		if (exists(p))
			strlist_add(list, p);
	}
	json_array_foreach (parts, i, part) {
		const char *server =
		    json_string_value(json_object_get(part, "server"));
		const char *kind =
		    json_string_value(json_object_get(part, "kind"));
		static const char *const suffix[] = {
		    "", "-wal", "-shm", "-journal"};

		if (server == NULL || kind == NULL || strcmp(kind, "db") != 0)
			continue;
		for (size_t k = 0; k < ARRAY_SIZE(suffix); k++) {
			/* an old WAL beside a new database would corrupt it */
			snprintf(p, sizeof(p), "%s/%s/understudy.db%s",
			    r->o->state_dir, server, suffix[k]);
			if (exists(p))
				strlist_add(list, p);
		}
	}
	for (i = 0; i < list->n; i++)
		buf_printf(paths, "%s%s", i ? ", " : "", list->v[i]);
}

int
backup_restore(const struct backup_restore_opts *o, json_t **report, char *err,
    size_t errlen)
{
	struct restore r;
	struct archive_index ix = {0};
	struct strlist way = {0};
	struct buf who, paths;
	json_t *vr = NULL, *manifest, *parts, *part;
	const char *cluster;
	struct stat st;
	time_t now = time(NULL);
	struct tm tm;
	int fd = -1, rc;
	size_t i;

	memset(&r, 0, sizeof(r));
	r.o = o;
	r.restored = json_array();
	r.moved = json_array();
	gmtime_r(&now, &tm);
	strftime(r.stamp, sizeof(r.stamp), "%Y%m%dT%H%M%SZ", &tm);
	buf_init(&who, 4096);
	buf_init(&paths, 8192);
	*report =
	    json_pack("{s:s,s:s,s:o,s:o}", "archive", o->path, "state_dir",
		o->state_dir, "restored", r.restored, "moved_aside", r.moved);
	rc = backup_verify(o->path, NULL, &vr, err, errlen);
	json_object_set(*report, "verify", vr ? vr : json_null());
	if (rc != 0) {
		if (rc > 0)
			json_object_set_new(*report, "refused",
			    json_string("the archive did not verify: nothing "
					"was changed"));
		goto out;
	}
	manifest = json_object_get(vr, "manifest");
	parts = json_object_get(manifest, "parts");
	cluster = json_string_value(json_object_get(manifest, "cluster"));
	rc = 1;
	if (cluster == NULL || strcmp(cluster, o->cfg->cluster.name) != 0) {
		json_object_set_new(*report, "refused",
		    json_sprintf("the archive is of cluster %s, the config of "
				 "cluster %s",
			cluster ? cluster : "?", o->cfg->cluster.name));
		goto out;
	}
	running(&r, manifest, &who);
	if (who.len) {
		json_object_set_new(*report, "refused",
		    json_sprintf("servers of cluster %s are running: %s; stop "
				 "them first",
			cluster, who.data));
		goto out;
	}
	in_the_way(&r, parts, &paths, &way);
	if (paths.len && !o->force) {
		json_object_set_new(*report, "refused",
		    json_sprintf("in the way: %s; --force moves them aside "
				 "(never deletes them)",
			paths.data));
		goto out;
	}
	rc = -1;
	if (mkdir_p(o->state_dir) != 0) {
		snprintf(err, errlen, "%s: %s", o->state_dir, strerror(errno));
		goto out;
	}
	for (i = 0; i < way.n; i++)
		if (aside(&r, way.v[i], err, errlen) != 0)
			goto fail;
	if ((fd = open(o->path, O_RDONLY | O_CLOEXEC)) < 0 ||
	    fstat(fd, &st) != 0 ||
	    archive_index_read(fd, (uint64_t)st.st_size, &ix, err, errlen)) {
		if (fd < 0)
			snprintf(
			    err, errlen, "%s: %s", o->path, strerror(errno));
		goto fail;
	}
	json_array_foreach (parts, i, part) {
		const char *name =
		    json_string_value(json_object_get(part, "name"));
		const char *kind =
		    json_string_value(json_object_get(part, "kind"));
		const struct archive_entry *e =
		    name ? archive_index_find(&ix, name) : NULL;

		if (e == NULL || kind == NULL) {
			snprintf(err, errlen, "%s: not in the archive",
			    name ? name : "a part");
			goto fail;
		}
		if (strcmp(kind, "etcd") == 0 &&
		    restore_etcd(&r, fd, e, err, errlen) != 0)
			goto fail;
		if (strcmp(kind, "db") == 0 &&
		    restore_db(&r, fd, e,
			json_string_value(json_object_get(part, "server")), err,
			errlen) != 0)
			goto fail;
	}
	rc = 0;
	goto out;
fail:
	undo_all(&r);
	json_array_clear(r.restored);
	json_array_clear(r.moved);
	rc = -1;
out:
	if (fd >= 0)
		close(fd);
	archive_index_free(&ix);
	strlist_free(&way);
	buf_free(&who);
	buf_free(&paths);
	json_decref(vr);
	return rc;
}
