/*
 * Verify an archive without trusting it: the archive's structure (a
 * parser, archive.c), the manifest against its own sha256, every part
 * against the manifest, the etcd snapshot against its own hash and
 * revision, each database's integrity_check and counts; then a restore
 * test: the snapshot restored with etcdctl into a scratch directory, a
 * throwaway etcd started on it on free 127.0.0.1 ports, and its counts
 * at the manifest's revision compared. Every check is reported with its
 * part, so an operator knows which part failed and why.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sqlite3.h>

#include "backup.h"

#define VERIFY_SHA_LINE_MAX 200
#define VERIFY_ETCD_READY_MS 20000
#define VERIFY_ETCD_STOP_MS 5000
#define VERIFY_ANSWER_MAX (64u * 1024)
#define VERIFY_WHY_MAX 400

extern char **environ;

struct verify {
	int fd;
	const char *path;
	char dir[PATH_MAX]; /* scratch, "" until made */
	struct archive_index ix;
	json_t *checks;
	json_t *manifest; /* NULL when unreadable */
	int failed;
};

static void check(struct verify *v, const char *part, const char *what, bool ok,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
check(struct verify *v, const char *part, const char *what, bool ok,
    const char *fmt, ...)
{
	char why[VERIFY_WHY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	json_array_append_new(v->checks,
	    json_pack("{s:s,s:s,s:b,s:s}", "part", part, "check", what, "ok",
		ok, "why", why));
	if (!ok)
		v->failed++;
}

/* ---- processes and files of the restore test ---- */

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(p);
	return 0;
}

void
verify_remove_tree(const char *dir)
{
	if (dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A TCP port free on 127.0.0.1 now, or 0. */
static unsigned
free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	unsigned port = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/*
 * Start argv with its output into log; its PID, or -1. It dies with the
 * thread that started it (PR_SET_PDEATHSIG), so a worker that stops or
 * crashes during a verify leaves no throwaway etcd behind. Between fork
 * and exec only async-signal-safe calls: the process has other threads.
 */
static pid_t
spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();
	int fd;

	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if ((fd = open("/dev/null", O_RDONLY)) >= 0) {
		dup2(fd, STDIN_FILENO);
		close(fd);
	}
	if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600)) >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	/* etcdctl 3.4 speaks the v3 API by default */
	execvp(argv[0], argv);
	_exit(127);
}

/* The last line of a log, for a why. */
static void
last_line(const char *log, char *out, size_t len)
{
	char buf[2048];
	ssize_t n;
	int fd = open(log, O_RDONLY | O_CLOEXEC);
	off_t end;

	out[0] = '\0';
	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	n = pread(fd, buf, sizeof(buf) - 1,
	    end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	{
		char *nl = strrchr(buf, '\n');

		str_copy(out, nl ? nl + 1 : buf, len);
	}
}

int
verify_etcd_restore(const char *snapshot, const char *data_dir,
    const char *name, const char *peer, const char *log, char *why, size_t wlen)
{
	char initial[512];
	char *argv[] = {(char *)"etcdctl", (char *)"snapshot",
	    (char *)"restore", (char *)snapshot, (char *)"--data-dir",
	    (char *)data_dir, (char *)"--name", (char *)name,
	    (char *)"--initial-cluster", initial,
	    (char *)"--initial-advertise-peer-urls", (char *)peer, NULL};
	int status = 0;
	pid_t pid;

	snprintf(initial, sizeof(initial), "%s=%s", name, peer);
	if ((pid = spawn(argv, log)) < 0) {
		snprintf(why, wlen, "cannot run etcdctl: %s", strerror(errno));
		return -1;
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	last_line(log, why, wlen);
	if (why[0] == '\0')
		snprintf(why, wlen, "etcdctl snapshot restore failed (%d)",
		    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return -1;
}

static size_t
collect(char *data, size_t size, size_t nmemb, void *userp)
{
	return buf_append(userp, data, size * nmemb) == 0 ? size * nmemb : 0;
}

/* POST body to url: the JSON answer when 200, else NULL. */
static json_t *
post(const char *url, const char *body, long timeout_ms)
{
	struct curl_slist *h = NULL;
	json_t *out = NULL;
	long status = 0;
	struct buf b;
	CURL *c = curl_easy_init();

	if (c == NULL)
		return NULL;
	buf_init(&b, VERIFY_ANSWER_MAX);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (curl_easy_perform(c) == CURLE_OK &&
	    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
	    status == 200)
		out = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
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
	if (json_is_string(v) &&
	    str_to_long(json_string_value(v), 0, INT64_MAX, &n) == 0)
		return n;
	return 0;
}

/* Keys from key to end (both raw) at rev on the etcd at base, or -1. */
static int64_t
count_at(const char *base, const char *key, size_t klen, const char *end,
    size_t elen, int64_t rev)
{
	char *k = base64_encode(key, klen), *e = base64_encode(end, elen);
	char url[300], *body = NULL;
	json_t *out = NULL;
	int64_t n = -1;

	snprintf(url, sizeof(url), "%s/v3/kv/range", base);
	if (k && e &&
	    asprintf(&body,
		"{\"key\":\"%s\",\"range_end\":\"%s\",\"count_only\":true,"
		"\"revision\":\"%" PRId64 "\"}",
		k, e, rev) >= 0 &&
	    (out = post(url, body, 5000)) != NULL)
		n = i64_of(out, "count");
	json_decref(out);
	free(body);
	free(k);
	free(e);
	return n;
}

static void
stop(pid_t pid)
{
	uint64_t t0 = time_mono_ms();

	kill(pid, SIGTERM);
	while (time_mono_ms() - t0 < VERIFY_ETCD_STOP_MS) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		usleep(20000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/*
 * The restore test of the snapshot at snap: restore, start, count at the
 * manifest's revision, compare, stop. Its check goes into v.
 */
static void
restore_test(struct verify *v, const char *part, const char *snap)
{
	const json_t *e = json_object_get(v->manifest, "etcd");
	const char *cluster =
	    json_string_value(json_object_get(v->manifest, "cluster"));
	int64_t rev = i64_of(e, "revision"), keys = i64_of(e, "keys");
	int64_t cvs = i64_of(e, "config_versions"), n_keys, n_cvs;
	unsigned cport = free_port(), pport = free_port();
	char data[PATH_MAX + 16], log[PATH_MAX + 16], peer[64], client[64];
	char initial[128], why[VERIFY_WHY_MAX], prefix[256], pend[256];
	char statusurl[128];
	char *argv[] = {(char *)"etcd", (char *)"--name",
	    (char *)"understudy-verify", (char *)"--data-dir", data,
	    (char *)"--listen-client-urls", client,
	    (char *)"--advertise-client-urls", client,
	    (char *)"--listen-peer-urls", peer,
	    (char *)"--initial-advertise-peer-urls", peer,
	    (char *)"--initial-cluster", initial, (char *)"--log-level=error",
	    (char *)"--logger=zap", NULL};
	json_t *st = NULL;
	uint64_t t0;
	size_t plen;
	pid_t pid;

	if (cport == 0 || pport == 0 || cport == pport) {
		check(v, part, "restore test", false,
		    "no free port on 127.0.0.1 for a throwaway etcd");
		return;
	}
	snprintf(data, sizeof(data), "%s/etcd-data", v->dir);
	snprintf(log, sizeof(log), "%s/etcd.log", v->dir);
	snprintf(client, sizeof(client), "http://127.0.0.1:%u", cport);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%u", pport);
	snprintf(initial, sizeof(initial), "understudy-verify=%s", peer);
	if (verify_etcd_restore(snap, data, "understudy-verify", peer, log, why,
		sizeof(why)) != 0) {
		check(v, part, "restore test", false,
		    "etcdctl snapshot restore: %s", why);
		return;
	}
	if ((pid = spawn(argv, log)) < 0) {
		check(v, part, "restore test", false, "cannot run etcd: %s",
		    strerror(errno));
		return;
	}
	snprintf(
	    statusurl, sizeof(statusurl), "%s/v3/maintenance/status", client);
	for (t0 = time_mono_ms(); time_mono_ms() - t0 < VERIFY_ETCD_READY_MS;) {
		if ((st = post(statusurl, "{}", 300)) != NULL)
			break;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			last_line(log, why, sizeof(why));
			check(v, part, "restore test", false,
			    "the restored etcd exited: %s", why);
			return;
		}
		usleep(20000);
	}
	if (st == NULL) {
		stop(pid);
		check(v, part, "restore test", false,
		    "the restored etcd did not answer within %d s",
		    VERIFY_ETCD_READY_MS / 1000);
		return;
	}
	json_decref(st);
	plen = (size_t)snprintf(prefix, sizeof(prefix),
	    "/understudy-config/%s/v/", cluster ? cluster : "");
	if (plen >= sizeof(prefix)) {
		stop(pid);
		check(v, part, "restore test", false,
		    "the manifest's cluster name is too long");
		return;
	}
	memcpy(pend, prefix, plen);
	pend[plen - 1]++;
	/* at the manifest's revision: leases restored with it expire soon */
	n_keys = count_at(client, "\0", 1, "\0", 1, rev);
	n_cvs = count_at(client, prefix, plen, pend, plen, rev);
	stop(pid);
	if (n_keys < 0 || n_cvs < 0)
		check(v, part, "restore test", false,
		    "the restored etcd cannot be read at revision %" PRId64,
		    rev);
	else if (n_keys != keys || n_cvs != cvs)
		check(v, part, "restore test", false,
		    "restored: %" PRId64 " keys, %" PRId64
		    " config versions at revision %" PRId64
		    "; the manifest says %" PRId64 " and %" PRId64,
		    n_keys, n_cvs, rev, keys, cvs);
	else
		check(v, part, "restore test", true,
		    "a throwaway etcd started from it: %" PRId64
		    " keys, %" PRId64 " config versions at revision %" PRId64,
		    n_keys, n_cvs, rev);
}

/* ---- the parts ---- */

/* Copy a part into a new scratch file: its path in out, 0 or -1. */
static int
extract(struct verify *v, const struct archive_entry *e, const char *as,
    char *out, size_t len, unsigned char *sha)
{
	char err[256] = "";
	int fd, rc;

	snprintf(out, len, "%s/%s", v->dir, as);
	if ((fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) <
	    0) {
		check(v, e->name, "extract", false, "%s: %s", out,
		    strerror(errno));
		return -1;
	}
	rc = archive_sha256(
	    v->fd, e->offset, e->size, fd, sha, err, sizeof(err));
	close(fd);
	if (rc != 0)
		check(v, e->name, "extract", false, "%s", err);
	return rc;
}

static void
verify_etcd(struct verify *v, const json_t *part, const struct archive_entry *e)
{
	const json_t *me = json_object_get(v->manifest, "etcd");
	const char *want_tail =
	    json_string_value(json_object_get(me, "snapshot_sha256"));
	char snap[PATH_MAX + 32], want[65], got[65], err[256];
	unsigned char sha[32];
	int64_t rev = 0;
	int fd, rc;

	(void)part;
	if (extract(v, e, "etcd.snapshot", snap, sizeof(snap), sha) != 0)
		return;
	if ((fd = open(snap, O_RDONLY | O_CLOEXEC)) < 0) {
		check(v, e->name, "snapshot hash", false, "%s: %s", snap,
		    strerror(errno));
		return;
	}
	rc = snapshot_hash_check(fd, e->size, want, got, err, sizeof(err));
	if (rc < 0)
		check(v, e->name, "snapshot hash", false, "%s", err);
	else if (rc == 0)
		check(v, e->name, "snapshot hash", false,
		    "the snapshot's own sha256 does not match its content "
		    "(it says %s, the content has %s)",
		    want, got);
	else if (want_tail == NULL || strcmp(want_tail, want) != 0)
		check(v, e->name, "snapshot hash", false,
		    "the snapshot's sha256 is %s, the manifest says %s", want,
		    want_tail ? want_tail : "nothing");
	else
		check(v, e->name, "snapshot hash", true, "%s", want);
	if (snapshot_revision(fd, e->size, &rev, err, sizeof(err)) != 0)
		check(v, e->name, "revision", false, "%s", err);
	else if (rev != i64_of(me, "revision"))
		check(v, e->name, "revision", false,
		    "the snapshot is at revision %" PRId64
		    ", the manifest says %" PRId64,
		    rev, i64_of(me, "revision"));
	else
		check(v, e->name, "revision", true, "%" PRId64, rev);
	close(fd);
	if (rc == 1)
		restore_test(v, e->name, snap);
	else
		check(v, e->name, "restore test", false,
		    "not run: the snapshot is damaged");
}

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

static void
verify_db(struct verify *v, const json_t *part, const struct archive_entry *e,
    size_t i)
{
	const json_t *counts = json_object_get(part, "counts");
	char file[PATH_MAX + 32], as[32];
	unsigned char sha[32];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t records = -1, sessions = -1;
	const char *res = NULL;

	snprintf(as, sizeof(as), "db-%zu.sqlite", i);
	if (extract(v, e, as, file, sizeof(file), sha) != 0)
		return;
	if (sqlite3_open_v2(file, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		check(v, e->name, "integrity_check", false, "cannot open: %s",
		    db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return;
	}
	if (sqlite3_prepare_v2(
		db, "PRAGMA integrity_check(5)", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		res = (const char *)sqlite3_column_text(st, 0);
	if (res && strcmp(res, "ok") == 0)
		check(v, e->name, "integrity_check", true, "ok");
	else
		check(v, e->name, "integrity_check", false, "%s",
		    res ? res : sqlite3_errmsg(db));
	sqlite3_finalize(st);
	if (db_count(db, "SELECT count(*) FROM records", &records) != 0 ||
	    db_count(db, "SELECT count(*) FROM sessions", &sessions) != 0)
		check(v, e->name, "counts", false, "cannot count: %s",
		    sqlite3_errmsg(db));
	else if (records != i64_of(counts, "records") ||
	    sessions != i64_of(counts, "sessions"))
		check(v, e->name, "counts", false,
		    "%" PRId64 " records, %" PRId64
		    " sessions; the manifest says %" PRId64 " and %" PRId64,
		    records, sessions, i64_of(counts, "records"),
		    i64_of(counts, "sessions"));
	else
		check(v, e->name, "counts", true,
		    "%" PRId64 " records, %" PRId64 " sessions", records,
		    sessions);
	sqlite3_close(db);
}

/* The manifest, checked against manifest.sha256: v->manifest or NULL. */
static void
read_manifest(struct verify *v)
{
	const struct archive_entry *m =
	    archive_index_find(&v->ix, "manifest.json");
	const struct archive_entry *s =
	    archive_index_find(&v->ix, "manifest.sha256");
	char line[VERIFY_SHA_LINE_MAX + 1], hex[65], err[256];
	unsigned char sha[32];
	json_error_t je;
	char *text;

	if (m == NULL || s == NULL) {
		check(v, m ? "manifest.sha256" : "manifest.json", "present",
		    false, "the archive has none");
		return;
	}
	if (m->size > ARCHIVE_MANIFEST_MAX || s->size > VERIFY_SHA_LINE_MAX) {
		check(v, m->size > ARCHIVE_MANIFEST_MAX ? m->name : s->name,
		    "size", false, "over its cap");
		return;
	}
	if (pread(v->fd, line, s->size, (off_t)s->offset) != (ssize_t)s->size) {
		check(v, s->name, "read", false, "%s", strerror(errno));
		return;
	}
	line[s->size] = '\0';
	if (archive_sha256(
		v->fd, m->offset, m->size, -1, sha, err, sizeof(err))) {
		check(v, m->name, "sha256", false, "%s", err);
		return;
	}
	archive_hex(sha, hex);
	if (strncmp(line, hex, 64) != 0) {
		check(v, m->name, "sha256", false,
		    "sha256 mismatch (manifest.sha256 says %.64s, the manifest "
		    "has %s)",
		    line, hex);
		return;
	}
	check(v, m->name, "sha256", true, "%s", hex);
	if ((text = malloc(m->size + 1)) == NULL)
		return;
	if (pread(v->fd, text, m->size, (off_t)m->offset) == (ssize_t)m->size)
		v->manifest = json_loadb(text, m->size, 0, &je);
	free(text);
	if (v->manifest == NULL || !json_is_object(v->manifest) ||
	    i64_of(v->manifest, "format") != 1 ||
	    !json_is_array(json_object_get(v->manifest, "parts")) ||
	    !json_is_string(json_object_get(v->manifest, "cluster")) ||
	    strlen(json_string_value(json_object_get(v->manifest, "cluster"))) >
		CONFIG_NAME_MAX ||
	    !config_check_name(
		json_string_value(json_object_get(v->manifest, "cluster")), err,
		sizeof(err))) {
		check(
		    v, m->name, "format", false, "not a manifest of format 1");
		json_decref(v->manifest);
		v->manifest = NULL;
	}
}

/* Every part: in the archive, its size and sha256 as the manifest says. */
static void
verify_parts(struct verify *v)
{
	const json_t *parts = json_object_get(v->manifest, "parts"), *p;
	bool etcd_seen = false;
	size_t i;

	json_array_foreach (parts, i, p) {
		const char *name =
		    json_string_value(json_object_get(p, "name"));
		const char *kind =
		    json_string_value(json_object_get(p, "kind"));
		const char *want =
		    json_string_value(json_object_get(p, "sha256"));
		const struct archive_entry *e;
		unsigned char sha[32];
		char hex[65], err[256];

		if (name == NULL || kind == NULL || want == NULL) {
			check(v, "manifest.json", "parts", false,
			    "part %zu lacks a name, kind or sha256", i);
			continue;
		}
		if ((e = archive_index_find(&v->ix, name)) == NULL) {
			check(v, name, "present", false,
			    "in the manifest, not in the archive");
			continue;
		}
		if (e->size != (uint64_t)i64_of(p, "size")) {
			check(v, name, "size", false,
			    "%" PRIu64 " bytes; the manifest says %" PRId64,
			    e->size, i64_of(p, "size"));
		}
		if (archive_sha256(v->fd, e->offset, e->size, -1, sha, err,
			sizeof(err)) != 0) {
			check(v, name, "sha256", false, "%s", err);
			continue;
		}
		archive_hex(sha, hex);
		if (strcmp(hex, want) != 0)
			check(v, name, "sha256", false,
			    "sha256 mismatch (manifest %s, archive %s)", want,
			    hex);
		else
			check(v, name, "sha256", true, "%s", hex);
		if (strcmp(kind, "etcd") == 0) {
			etcd_seen = true;
			verify_etcd(v, p, e);
		} else if (strcmp(kind, "db") == 0) {
			verify_db(v, p, e, i);
		} else {
			check(v, name, "kind", false, "unknown kind '%.20s'",
			    kind);
		}
	}
	if (!etcd_seen)
		check(v, "etcd.snapshot", "present", false,
		    "the manifest lists no etcd snapshot");
	for (i = 0; i < v->ix.n; i++) {
		const char *n = v->ix.v[i].name;
		bool listed = strcmp(n, "manifest.json") == 0 ||
		    strcmp(n, "manifest.sha256") == 0;
		size_t k;

		json_array_foreach (parts, k, p) {
			const char *pn =
			    json_string_value(json_object_get(p, "name"));

			listed = listed || (pn && strcmp(pn, n) == 0);
		}
		if (!listed)
			check(v, n, "listed", false,
			    "in the archive, not in the manifest");
	}
}

int
backup_verify(const char *path, const char *scratch, json_t **report, char *err,
    size_t errlen)
{
	struct verify v;
	struct stat st;
	char why[512];
	int rc = -1;

	memset(&v, 0, sizeof(v));
	*report = NULL;
	v.path = path;
	if ((v.fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 ||
	    fstat(v.fd, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (scratch == NULL)
		scratch = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(v.dir, sizeof(v.dir), "%s/understudy-verify-XXXXXX", scratch);
	if (mkdtemp(v.dir) == NULL) {
		snprintf(err, errlen,
		    "cannot make a scratch directory in %s: %s", scratch,
		    strerror(errno));
		v.dir[0] = '\0';
		goto out;
	}
	v.checks = json_array();
	if (archive_index_read(
		v.fd, (uint64_t)st.st_size, &v.ix, why, sizeof(why)) != 0)
		check(&v, "archive", "format", false, "%s", why);
	else
		read_manifest(&v);
	if (v.manifest)
		verify_parts(&v);
	*report = json_pack("{s:s,s:b,s:O,s:O?}", "archive", path, "ok",
	    v.failed == 0, "checks", v.checks, "manifest", v.manifest);
	rc = v.failed ? 1 : 0;
out:
	verify_remove_tree(v.dir);
	if (v.fd >= 0)
		close(v.fd);
	archive_index_free(&v.ix);
	json_decref(v.checks);
	json_decref(v.manifest);
	return rc;
}
