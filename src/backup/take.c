/*
 * Take an archive of a cluster through its servers' API: the etcd
 * snapshot from the first server that makes one, then every server's
 * database from that server, each streamed into the archive and hashed
 * as it arrives and checked against the sha256 the server sent. A
 * server that does not answer is listed in the manifest as missing (a
 * backup during a failover still succeeds); without the etcd part there
 * is no backup. The file is written under a temporary name and linked
 * to its name only when complete, which fails rather than overwrite.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "backup.h"

#define TAKE_CONNECT_MS 2000
#define TAKE_STALL_S 300 /* a part may take this long to be made */
#define TAKE_ERROR_MAX (64u * 1024)
#define TAKE_BUSY_PASSES 30 /* 503 EBUSY: another backup is being sent */
#define TAKE_BUSY_WAIT_MAX_S 5

struct fetch {
	struct archive_writer *w;
	struct backup_progress *prog;
	backup_progress_fn fn;
	void *arg;
	long status;
	uint64_t length; /* Content-Length, 0: unknown; then the size */
	uint64_t body; /* where the part's bytes are in the archive */
	uint64_t before; /* bytes of the archive before this part */
	long retry_after;
	char sha256[65];
	int64_t revision, keys, config_versions, in_effect, records, sessions;
	struct buf answer; /* an error's body */
	char err[512];
	bool write_failed;
};

static size_t
on_header(char *data, size_t size, size_t nmemb, void *userp)
{
	struct fetch *f = userp;
	size_t n = size * nmemb, k;
	char line[256], *v;
	long num = 0;

	if (n >= sizeof(line))
		return n;
	memcpy(line, data, n);
	line[n] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	if ((v = strchr(line, ':')) == NULL)
		return n;
	*v++ = '\0';
	v += strspn(v, " \t");
	k = strlen(line);
	if (k == 19 && strcasecmp(line, "X-Understudy-Sha256") == 0) {
		str_copy(f->sha256, v, sizeof(f->sha256));
		return n;
	}
	if (str_to_long(v, 0, LONG_MAX, &num) != 0)
		return n;
	if (strcasecmp(line, "Content-Length") == 0)
		f->length = (uint64_t)num;
	else if (strcasecmp(line, "Retry-After") == 0)
		f->retry_after = num;
	else if (strcasecmp(line, "X-Understudy-Etcd-Revision") == 0)
		f->revision = num;
	else if (strcasecmp(line, "X-Understudy-Keys") == 0)
		f->keys = num;
	else if (strcasecmp(line, "X-Understudy-Config-Versions") == 0)
		f->config_versions = num;
	else if (strcasecmp(line, "X-Understudy-Config-In-Effect") == 0)
		f->in_effect = num;
	else if (strcasecmp(line, "X-Understudy-Records") == 0)
		f->records = num;
	else if (strcasecmp(line, "X-Understudy-Sessions") == 0)
		f->sessions = num;
	return n;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct fetch *f = userp;
	size_t n = size * nmemb;

	if (f->status != 200) {
		buf_append(&f->answer, data, n); /* capped: the rest is cut */
		return n;
	}
	if (archive_part_write(f->w, data, n, f->err, sizeof(f->err)) != 0) {
		f->write_failed = true;
		return 0;
	}
	if (f->prog) {
		struct backup_progress *p = f->prog;
		int left = p->parts_total - p->parts_done - 1;

		p->bytes += n;
		/* the parts still to come as large as those so far */
		if (f->length)
			p->bytes_expected = f->before + f->length +
			    (uint64_t)(left > 0 ? left : 0) *
				(p->parts_done
					? f->before / (uint64_t)p->parts_done
					: f->length);
		if (f->fn)
			f->fn(f->prog, f->arg);
	}
	return n;
}

/* The status line is read before the body: keep it for on_body. */
static size_t
on_header_status(char *data, size_t size, size_t nmemb, void *userp)
{
	struct fetch *f = userp;

	if (size * nmemb > 9 && strncmp(data, "HTTP/", 5) == 0) {
		const char *sp = memchr(data, ' ', size * nmemb);

		f->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		f->length = 0;
		return size * nmemb;
	}
	return on_header(data, size, nmemb, userp);
}

/* An error answer's message, for the operator. */
static void
answer_why(struct fetch *f, char *why, size_t len)
{
	json_t *o = json_loadb(
	    f->answer.data ? f->answer.data : "", f->answer.len, 0, NULL);
	const char *e = json_string_value(json_object_get(o, "error"));
	const char *m = json_string_value(json_object_get(o, "message"));

	snprintf(why, len, "answered %ld%s%s%s%s", f->status, e ? " " : "",
	    e ? e : "", m ? ": " : "", m ? m : "");
	json_decref(o);
}

/*
 * GET base+path into a new part name of w. 0 when the part is in; -1
 * with why (the part dropped), *busy when the server asked to wait.
 */
static int
fetch(const struct backup_target *t, const char *base, const char *path,
    const char *name, struct fetch *f, bool *busy, char *why, size_t wlen)
{
	struct curl_slist *h = NULL;
	char url[600], auth[600], cerr[CURL_ERROR_SIZE] = "";
	unsigned char sha[32];
	char hex[65];
	uint64_t size = 0, before = f->prog ? f->prog->bytes : 0;
	CURLcode rc;
	CURL *c;
	int ret = -1;

	*busy = false;
	f->before = before;
	f->status = 0;
	f->sha256[0] = '\0';
	f->write_failed = false;
	buf_reset(&f->answer);
	if ((c = curl_easy_init()) == NULL) {
		snprintf(why, wlen, "out of memory");
		return -1;
	}
	if (archive_part_begin(f->w, name, why, wlen) != 0) {
		curl_easy_cleanup(c);
		return -1;
	}
	snprintf(url, sizeof(url), "%s%s", base, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
	    t->token ? t->token : "");
	h = curl_slist_append(h, auth);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)TAKE_CONNECT_MS);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)TAKE_STALL_S);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header_status);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	if (t->ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, t->ca);
	rc = curl_easy_perform(c);
	if (f->write_failed)
		snprintf(why, wlen, "writing the archive: %s", f->err);
	else if (rc != CURLE_OK)
		snprintf(
		    why, wlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
	else if (f->status != 200) {
		answer_why(f, why, wlen);
		*busy = f->status == 503 && strstr(why, "EBUSY") != NULL;
	} else if (strlen(f->sha256) != 64)
		snprintf(why, wlen, "answered without its sha256");
	else if (archive_part_sha256(f->w, sha), archive_hex(sha, hex),
	    strcmp(hex, f->sha256) != 0)
		snprintf(why, wlen,
		    "sha256 mismatch (the server sent %s, %" PRIu64
		    " bytes arrived with %s)",
		    f->sha256, f->w->size, hex);
	else if (f->length && f->w->size != f->length)
		snprintf(why, wlen, "%" PRIu64 " of %" PRIu64 " bytes arrived",
		    f->w->size, f->length);
	else {
		f->body = f->w->body;
		ret = archive_part_end(f->w, sha, &size, why, wlen);
		f->length = size;
	}
	if (ret != 0) {
		char e2[256];

		archive_part_abort(f->w, e2, sizeof(e2));
		if (f->prog)
			f->prog->bytes = before;
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return ret;
}

/* fetch, waiting while the server says it is busy with another backup. */
static int
fetch_patiently(const struct backup_target *t, const char *base,
    const char *path, const char *name, struct fetch *f, char *why, size_t wlen)
{
	bool busy = false;

	for (int pass = 0; pass < TAKE_BUSY_PASSES; pass++) {
		long wait;

		if (fetch(t, base, path, name, f, &busy, why, wlen) == 0)
			return 0;
		if (!busy)
			return -1;
		wait = f->retry_after > 0 ? f->retry_after : 1;
		sleep((unsigned)(wait > TAKE_BUSY_WAIT_MAX_S
			? TAKE_BUSY_WAIT_MAX_S
			: wait));
	}
	return -1;
}

static json_t *
part_json(const char *name, const char *kind, const char *server, uint64_t size,
    const char *hex)
{
	return json_pack("{s:s,s:s,s:s,s:I,s:s}", "name", name, "kind", kind,
	    "server", server, "size", (json_int_t)size, "sha256", hex);
}

/* The tail of the etcd part: the snapshot's own sha256. */
static int
snapshot_tail(int fd, uint64_t end, char *hex)
{
	unsigned char tail[SNAPSHOT_HASH_LEN];

	if (end < SNAPSHOT_HASH_LEN ||
	    pread(fd, tail, sizeof(tail), (off_t)(end - SNAPSHOT_HASH_LEN)) !=
		(ssize_t)sizeof(tail))
		return -1;
	archive_hex(tail, hex);
	return 0;
}

static int
write_manifest(struct archive_writer *w, json_t *m, char *err, size_t errlen)
{
	char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS), hex[65];
	char line[160];
	unsigned char sha[32], sha2[32];
	int rc = -1;

	if (text == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (strlen(text) + 1 > ARCHIVE_MANIFEST_MAX) {
		snprintf(err, errlen, "the manifest is over %d bytes",
		    ARCHIVE_MANIFEST_MAX);
		goto out;
	}
	if (archive_add(
		w, "manifest.json", text, strlen(text), sha, err, errlen) != 0)
		goto out;
	archive_hex(sha, hex);
	/* as sha256sum writes it: `sha256sum -c manifest.sha256` checks */
	snprintf(line, sizeof(line), "%s  manifest.json\n", hex);
	rc = archive_add(
	    w, "manifest.sha256", line, strlen(line), sha2, err, errlen);
out:
	free(text);
	return rc;
}

/* The directory of path and a temporary name beside it. */
static int
temp_beside(const char *path, char *dir, size_t dlen, char *tmp, size_t tlen)
{
	const char *slash = strrchr(path, '/'),
		   *base = slash ? slash + 1 : path;

	if (*base == '\0')
		return -1;
	if (slash == NULL)
		str_copy(dir, ".", dlen);
	else if (slash == path)
		str_copy(dir, "/", dlen);
	else
		snprintf(dir, dlen, "%.*s", (int)(slash - path), path);
	if ((size_t)snprintf(tmp, tlen, "%s/.%s.partial-XXXXXX", dir, base) >=
	    tlen)
		return -1;
	return 0;
}

int
backup_take(const struct backup_target *t, const char *path,
    backup_progress_fn fn, void *arg, json_t **manifest, char *err,
    size_t errlen)
{
	const struct config *cfg = t->cfg;
	struct backup_progress prog = {0};
	struct archive_writer w;
	struct fetch f;
	struct stat st;
	char dir[PATH_MAX], tmp[PATH_MAX + 32], base[300], why[1024];
	char now[32], etcd_why[2048] = "", tail[65];
	json_t *m = NULL, *parts, *servers, *missing, *etcd = NULL;
	int fd = -1, dfd = -1, rc = -1;

	*manifest = NULL;
	memset(&f, 0, sizeof(f));
	buf_init(&f.answer, TAKE_ERROR_MAX);
	if (lstat(path, &st) == 0) {
		snprintf(
		    err, errlen, "%s exists; a backup never overwrites", path);
		errno = EEXIST;
		goto out;
	}
	if (temp_beside(path, dir, sizeof(dir), tmp, sizeof(tmp)) != 0) {
		snprintf(err, errlen, "%s: not a file name", path);
		errno = EINVAL;
		goto out;
	}
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "cannot write in %s: %s", dir,
		    strerror(errno));
		goto out;
	}
	archive_writer_init(&w, fd, time_wall_ms() / 1000);
	time_iso8601(time_wall_ms(), now, sizeof(now));
	parts = json_array();
	servers = json_array();
	missing = json_array();
	m = json_pack("{s:i,s:s,s:s,s:s,s:o,s:o,s:o}", "format", 1, "cluster",
	    cfg->cluster.name, "taken_at", now, "understudy_version",
	    US_VERSION, "parts", parts, "servers", servers, "missing", missing);
	if (m == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	f.w = &w;
	f.prog = &prog;
	f.fn = fn;
	f.arg = arg;
	prog.parts_total = 1 + (int)cfg->n_servers;
	/* the etcd part: from the first server that makes one */
	prog.part = "etcd.snapshot";
	for (size_t i = 0; i < cfg->n_servers && etcd == NULL; i++) {
		const struct config_server *s = &cfg->servers[i];
		json_t *pj;

		config_api_url(
		    cfg, s->address, s->api_port, base, sizeof(base));
		if (fetch_patiently(t, base, "/v1/backup/etcd", "etcd.snapshot",
			&f, why, sizeof(why)) != 0) {
			size_t n = strlen(etcd_why);

			snprintf(etcd_why + n, sizeof(etcd_why) - n, "%s%s: %s",
			    n ? "; " : "", s->name, why);
			continue;
		}
		if (snapshot_tail(fd, f.body + f.length, tail) != 0) {
			snprintf(err, errlen, "cannot read back the snapshot");
			goto out;
		}
		etcd = json_pack("{s:I,s:I,s:I,s:I,s:s,s:s}", "revision",
		    (json_int_t)f.revision, "keys", (json_int_t)f.keys,
		    "config_versions", (json_int_t)f.config_versions,
		    "config_version_in_effect", (json_int_t)f.in_effect,
		    "snapshot_sha256", tail, "from", s->name);
		pj = part_json(
		    "etcd.snapshot", "etcd", s->name, f.length, f.sha256);
		json_object_set_new(pj, "counts",
		    json_pack("{s:I,s:I}", "keys", (json_int_t)f.keys,
			"config_versions", (json_int_t)f.config_versions));
		json_array_append_new(parts, pj);
	}
	if (etcd == NULL) {
		snprintf(err, errlen, "no server gave the etcd snapshot: %s",
		    etcd_why[0] ? etcd_why : "the config lists no server");
		goto out;
	}
	json_object_set_new(m, "etcd", etcd);
	prog.parts_done = 1;
	if (fn)
		fn(&prog, arg);
	for (size_t i = 0; i < cfg->n_servers; i++) {
		const struct config_server *s = &cfg->servers[i];
		char name[ARCHIVE_NAME_MAX + 1];

		config_api_url(
		    cfg, s->address, s->api_port, base, sizeof(base));
		json_array_append_new(servers,
		    json_pack("{s:s,s:s}", "name", s->name, "api", base));
		snprintf(name, sizeof(name), "db/%s.sqlite", s->name);
		prog.part = name;
		if (fetch_patiently(t, base, "/v1/backup/db", name, &f, why,
			sizeof(why)) != 0) {
			json_array_append_new(missing,
			    json_pack(
				"{s:s,s:s}", "server", s->name, "why", why));
		} else {
			json_t *pj =
			    part_json(name, "db", s->name, f.length, f.sha256);

			json_object_set_new(pj, "counts",
			    json_pack("{s:I,s:I}", "records",
				(json_int_t)f.records, "sessions",
				(json_int_t)f.sessions));
			json_array_append_new(parts, pj);
		}
		prog.parts_done++;
		prog.part = NULL;
		if (prog.parts_done == prog.parts_total)
			prog.bytes_expected = prog.bytes;
		if (fn)
			fn(&prog, arg);
	}
	if (write_manifest(&w, m, err, errlen) != 0 ||
	    archive_finish(&w, err, errlen) != 0)
		goto out;
	if (fsync(fd) != 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	/* never overwrites: link fails with EEXIST */
	if (link(tmp, path) != 0) {
		int e = errno;

		snprintf(err, errlen, "%s: %s%s", path, strerror(e),
		    e == EEXIST ? " (made meanwhile; a backup never "
				  "overwrites)"
				: "");
		errno = e;
		goto out;
	}
	unlink(tmp);
	tmp[0] = '\0';
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	prog.bytes_expected = prog.bytes;
	*manifest = m;
	m = NULL;
	rc = 0;
out:
	if (fd >= 0) {
		int e = errno;

		close(fd);
		if (rc != 0 && tmp[0])
			unlink(tmp);
		errno = e;
	}
	json_decref(m);
	buf_free(&f.answer);
	return rc;
}
