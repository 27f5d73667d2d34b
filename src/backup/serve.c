/*
 * The parts a server hands out for a backup, made in a thread of the
 * libuv pool (everything here blocks): the etcd snapshot, streamed from
 * the v3 gateway into a file, and a copy of the server's database made
 * by SQLite's online backup from a connection of its own. Each lands in
 * a temporary file under the state directory that is unlinked as soon
 * as it is open, so nothing is left behind by a crash; the API serves it
 * from the descriptor.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sqlite3.h>

#include "backup.h"

#define SERVE_CONNECT_MS 1000
#define SERVE_SNAPSHOT_MS (10 * 60 * 1000) /* a whole snapshot */
#define SERVE_LINE_MAX (8u * 1024 * 1024) /* one line of the stream */
#define SERVE_ANSWER_MAX (64u * 1024)
#define SERVE_DB_BUSY_MS 5000

static int failed(struct serve_part *p, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
failed(struct serve_part *p, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->message, sizeof(p->message), fmt, ap);
	va_end(ap);
	p->err = err;
	return -1;
}

/* A temporary file under dir, unlinked at once: its descriptor, or -1. */
static int
temp_file(const char *dir, const char *what, char *path, size_t len)
{
	int fd;

	snprintf(path, len, "%s/.backup-%s.XXXXXX", dir, what);
	if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
		return -1;
	return fd;
}

void
serve_sweep(const char *dir)
{
	struct dirent *de;
	char path[PATH_MAX];
	DIR *d = opendir(dir);

	while (d && (de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, ".backup-", 8) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == 0)
			log_warn("backup: removed %s, left by a worker that "
				 "stopped while it made a backup part",
			    path);
	}
	if (d)
		closedir(d);
}

/* ---- etcd ---- */

struct tls_files {
	char *ca, *cert, *key;
};

static void
tls_files_free(struct tls_files *t)
{
	free(t->ca);
	free(t->cert);
	free(t->key);
}

static void
setup(CURL *c, const struct tls_files *t, const char *url, long timeout_ms)
{
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)SERVE_CONNECT_MS);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	if (t->ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, t->ca);
	if (t->cert)
		curl_easy_setopt(c, CURLOPT_SSLCERT, t->cert);
	if (t->key)
		curl_easy_setopt(c, CURLOPT_SSLKEY, t->key);
}

static size_t
collect(char *data, size_t size, size_t nmemb, void *userp)
{
	return buf_append(userp, data, size * nmemb) == 0 ? size * nmemb : 0;
}

/* POST body to endpoint path; the JSON answer, or NULL (p says why). */
static json_t *
post(const char *endpoint, const struct tls_files *t, const char *path,
    const char *body, struct serve_part *p)
{
	struct curl_slist *h = NULL;
	char url[512], why[CURL_ERROR_SIZE] = "";
	json_t *out = NULL, *e;
	long status = 0;
	struct buf b;
	CURLcode rc;
	CURL *c = curl_easy_init();

	if (c == NULL) {
		failed(p, US_ENOMEM, "out of memory");
		return NULL;
	}
	buf_init(&b, SERVE_ANSWER_MAX);
	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	setup(c, t, url, 5000);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, why);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK)
		failed(p, US_EUNAVAIL, "etcd at %s: %s", endpoint,
		    why[0] ? why : curl_easy_strerror(rc));
	else if ((out = json_loadb(b.data ? b.data : "", b.len, 0, NULL)) ==
	    NULL)
		failed(p, US_EPROTO, "etcd at %s answered %ld without JSON",
		    endpoint, status);
	else if (status != 200) {
		e = json_object_get(out, "error");
		failed(p,
		    json_integer_value(json_object_get(out, "code")) == 11
			? US_ECOMPACTED
			: US_EETCD,
		    "etcd at %s: %s %ld: %s", endpoint, path, status,
		    json_is_string(e) ? json_string_value(e) : "refused");
		json_decref(out);
		out = NULL;
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	buf_free(&b);
	return out;
}

static int64_t
i64_of(const json_t *o, const char *name)
{
	const json_t *v = json_object_get(o, name);
	long n = 0;

	if (json_is_integer(v))
		return json_integer_value(v);
	/* 64-bit numbers come as strings; absent is zero */
	if (json_is_string(v) &&
	    str_to_long(json_string_value(v), 0, INT64_MAX, &n) == 0)
		return n;
	return 0;
}

/* A range request for the keys from key to end (NULL: key alone). */
static char *
range_body(const char *key, size_t klen, const char *end, size_t elen,
    int64_t rev, bool count_only)
{
	char *k = base64_encode(key, klen), *e = NULL, *s = NULL;

	if (k && end)
		e = base64_encode(end, elen);
	if (k && (end == NULL || e))
		if (asprintf(&s,
			"{\"key\":\"%s\"%s%s%s,\"revision\":\"%" PRId64 "\"%s}",
			k, e ? ",\"range_end\":\"" : "", e ? e : "",
			e ? "\"" : "", rev,
			count_only ? ",\"count_only\":true" : "") < 0)
			s = NULL;
	free(k);
	free(e);
	return s;
}

static int
count(const char *ep, const struct tls_files *t, const char *key, size_t klen,
    const char *end, size_t elen, int64_t rev, int64_t *n, struct serve_part *p)
{
	char *body = range_body(key, klen, end, elen, rev, true);
	json_t *out;

	if (body == NULL)
		return failed(p, US_ENOMEM, "out of memory");
	out = post(ep, t, "/v3/kv/range", body, p);
	free(body);
	if (out == NULL)
		return -1;
	*n = i64_of(out, "count");
	json_decref(out);
	return 0;
}

/* The version in effect at rev: /understudy-config/<c>/current. */
static int
in_effect(const char *ep, const struct tls_files *t, const char *cluster,
    int64_t rev, int64_t *version, struct serve_part *p)
{
	char key[256], *body, *val = NULL;
	json_t *out, *kv, *cur;
	const char *v64;
	size_t vlen = 0;

	*version = 0;
	snprintf(key, sizeof(key), "/understudy-config/%s/current", cluster);
	if ((body = range_body(key, strlen(key), NULL, 0, rev, false)) == NULL)
		return failed(p, US_ENOMEM, "out of memory");
	out = post(ep, t, "/v3/kv/range", body, p);
	free(body);
	if (out == NULL)
		return -1;
	kv = json_array_get(json_object_get(out, "kvs"), 0);
	v64 = json_string_value(json_object_get(kv, "value"));
	if (v64 && base64_decode(v64, strlen(v64), &val, &vlen) == 0) {
		cur = json_loadb(val, vlen, 0, NULL);
		*version = i64_of(cur, "version");
		json_decref(cur);
	}
	free(val);
	json_decref(out);
	return 0;
}

struct stream {
	int fd;
	uint64_t size;
	struct buf line;
	struct serve_part *p;
	bool failed;
};

/* One line of the snapshot stream: {"result":{"blob":"..."}}. */
static int
stream_line(struct stream *s, const char *line, size_t len)
{
	json_t *o = json_loadb(line, len, 0, NULL), *r, *e;
	const char *blob;
	char *bin = NULL;
	size_t n = 0;
	int rc = -1;

	r = json_object_get(o, "result");
	e = json_object_get(o, "error");
	if (o == NULL || (r == NULL && e == NULL)) {
		failed(
		    s->p, US_EPROTO, "the snapshot stream is not JSON lines");
		goto out;
	}
	if (e) {
		failed(s->p, US_EETCD, "the snapshot failed: %s",
		    json_string_value(json_object_get(e, "message")));
		goto out;
	}
	blob = json_string_value(json_object_get(r, "blob"));
	if (blob && *blob && base64_decode(blob, strlen(blob), &bin, &n) != 0) {
		failed(s->p, US_EPROTO, "a snapshot blob is not base64");
		goto out;
	}
	for (size_t done = 0; done < n;) {
		ssize_t w = pwrite(
		    s->fd, bin + done, n - done, (off_t)(s->size + done));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			failed(s->p, US_EIO, "writing the snapshot: %s",
			    strerror(errno));
			goto out;
		}
		done += (size_t)w;
	}
	s->size += n;
	rc = 0;
out:
	free(bin);
	json_decref(o);
	return rc;
}

static size_t
stream_write(char *data, size_t size, size_t nmemb, void *userp)
{
	struct stream *s = userp;
	char *line;
	size_t len;

	if (buf_append(&s->line, data, size * nmemb) != 0) {
		failed(s->p, US_ETOOBIG,
		    "a line of the snapshot stream is "
		    "over %u bytes",
		    SERVE_LINE_MAX);
		s->failed = true;
		return 0;
	}
	while (buf_take_line(&s->line, &line, &len) == 1) {
		int rc = len ? stream_line(s, line, len) : 0;

		free(line);
		if (rc != 0) {
			s->failed = true;
			return 0;
		}
	}
	return size * nmemb;
}

static int
snapshot(
    const char *ep, const struct tls_files *t, int fd, struct serve_part *p)
{
	struct stream s = {.fd = fd, .p = p};
	struct curl_slist *h = NULL;
	char url[512], why[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURLcode rc;
	CURL *c = curl_easy_init();

	if (c == NULL)
		return failed(p, US_ENOMEM, "out of memory");
	if (ftruncate(fd, 0) != 0) {
		curl_easy_cleanup(c);
		return failed(p, US_EIO, "%s", strerror(errno));
	}
	buf_init(&s.line, SERVE_LINE_MAX);
	snprintf(url, sizeof(url), "%s/v3/maintenance/snapshot", ep);
	setup(c, t, url, SERVE_SNAPSHOT_MS);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, why);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	/* a last line without its newline */
	if (rc == CURLE_OK && !s.failed && s.line.len &&
	    stream_line(&s, s.line.data, s.line.len) != 0)
		s.failed = true;
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	buf_free(&s.line);
	if (s.failed)
		return -1;
	if (rc != CURLE_OK)
		return failed(p, US_EUNAVAIL, "etcd at %s: %s", ep,
		    why[0] ? why : curl_easy_strerror(rc));
	if (status != 200)
		return failed(p, US_EETCD,
		    "etcd at %s answered %ld to the "
		    "snapshot",
		    ep, status);
	p->size = s.size;
	return 0;
}

static int
sha256_of(struct serve_part *p)
{
	unsigned char sha[32];
	char err[256];

	if (archive_sha256(p->fd, 0, p->size, -1, sha, err, sizeof(err)) != 0)
		return failed(p, US_EIO, "%s", err);
	archive_hex(sha, p->sha256);
	return 0;
}

/* The snapshot and its counts from one endpoint. */
static int
etcd_from(const char *ep, const struct tls_files *t, const char *cluster,
    struct serve_part *p)
{
	char want[65], got[65], err[256], prefix[256], end[256];
	size_t plen;
	int rc;

	if (snapshot(ep, t, p->fd, p) != 0)
		return -1;
	rc = snapshot_hash_check(p->fd, p->size, want, got, err, sizeof(err));
	if (rc < 0)
		return failed(p, US_EIO, "the snapshot: %s", err);
	if (rc == 0)
		return failed(p, US_EPROTO,
		    "the snapshot from %s does not "
		    "match its own sha256",
		    ep);
	if (snapshot_revision(p->fd, p->size, &p->revision, err, sizeof(err)))
		return failed(
		    p, US_EPROTO, "the snapshot from %s: %s", ep, err);
	plen = (size_t)snprintf(
	    prefix, sizeof(prefix), "/understudy-config/%s/v/", cluster);
	memcpy(end, prefix, plen);
	end[plen - 1]++; /* the end of the prefix: '/' + 1 */
	if (count(ep, t, "\0", 1, "\0", 1, p->revision, &p->keys, p) != 0 ||
	    count(ep, t, prefix, plen, end, plen, p->revision,
		&p->config_versions, p) != 0 ||
	    in_effect(ep, t, cluster, p->revision, &p->config_in_effect, p))
		return -1;
	return sha256_of(p);
}

int
serve_etcd(const struct config *cfg, const char *tmpdir, struct serve_part *p)
{
	const struct config_cluster *cl = &cfg->cluster;
	struct tls_files t = {config_file_path(cfg, cl->etcd_ca),
	    config_file_path(cfg, cl->etcd_cert),
	    config_file_path(cfg, cl->etcd_key)};
	char path[4096];
	int rc = -1;

	memset(p, 0, sizeof(*p));
	if ((p->fd = temp_file(tmpdir, "etcd", path, sizeof(path))) < 0) {
		failed(p, US_EIO, "cannot make a file under %s: %s", tmpdir,
		    strerror(errno));
		goto out;
	}
	unlink(path);
	/* every endpoint in turn; compacted meanwhile: once more */
	for (int pass = 0; pass < 2 && rc != 0; pass++)
		for (size_t i = 0; i < cl->etcd.n && rc != 0; i++)
			rc = etcd_from(cl->etcd.v[i], &t, cl->name, p);
out:
	if (rc != 0 && p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	if (rc == 0)
		p->err = 0;
	tls_files_free(&t);
	return rc;
}

/* ---- the database ---- */

static int
db_count(sqlite3 *db, const char *sql, int64_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		*n = sqlite3_column_int64(st, 0);
		rc = 0;
	}
	sqlite3_finalize(st);
	return rc;
}

int
serve_db(const char *db_path, const char *tmpdir, struct serve_part *p)
{
	sqlite3 *src = NULL, *dst = NULL;
	sqlite3_backup *bk;
	char path[4096];
	struct stat st;
	int fd, rc = -1;

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	if ((fd = temp_file(tmpdir, "db", path, sizeof(path))) < 0)
		return failed(p, US_EIO, "cannot make a file under %s: %s",
		    tmpdir, strerror(errno));
	close(fd);
	if (sqlite3_open_v2(db_path, &src,
		SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
		NULL) != SQLITE_OK) {
		failed(p, US_EIO, "%s: %s", db_path,
		    src ? sqlite3_errmsg(src) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(src, SERVE_DB_BUSY_MS);
	if (sqlite3_open_v2(path, &dst,
		SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
		NULL) != SQLITE_OK) {
		failed(p, US_EIO, "%s: %s", path,
		    dst ? sqlite3_errmsg(dst) : "out of memory");
		goto out;
	}
	/*
	 * All pages in one step: one read transaction of the source, so
	 * the copy is of one moment, and the server's writes (WAL) go on.
	 */
	if ((bk = sqlite3_backup_init(dst, "main", src, "main")) == NULL) {
		failed(p, US_EIO, "backup of %s: %s", db_path,
		    sqlite3_errmsg(dst));
		goto out;
	}
	rc = sqlite3_backup_step(bk, -1);
	sqlite3_backup_finish(bk);
	if (rc != SQLITE_DONE) {
		failed(
		    p, US_EIO, "backup of %s: %s", db_path, sqlite3_errstr(rc));
		rc = -1;
		goto out;
	}
	rc = -1;
	/* one file, whatever the source's journal mode */
	if (sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL,
		NULL) != SQLITE_OK ||
	    db_count(dst, "SELECT count(*) FROM records", &p->records) != 0 ||
	    db_count(dst, "SELECT count(*) FROM sessions", &p->sessions) != 0) {
		failed(p, US_EIO, "the copy of %s: %s", db_path,
		    sqlite3_errmsg(dst));
		goto out;
	}
	sqlite3_close(dst);
	dst = NULL;
	if ((p->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 ||
	    fstat(p->fd, &st) != 0) {
		failed(p, US_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	p->size = (uint64_t)st.st_size;
	rc = sha256_of(p);
out:
	sqlite3_close(dst);
	sqlite3_close(src);
	unlink(path);
	if (rc != 0 && p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	return rc;
}
