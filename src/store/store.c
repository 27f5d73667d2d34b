/* The server's SQLite database (see store.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "common/common.h"
#include "store.h"

#define STORE_FILE "understudy.db"
/*
 * How long a write waits for a lock another process holds: on the loop,
 * a small fraction of the worker's hang limit (the caller retries).
 * Opening and migrating, before the loop runs, may wait longer.
 */
#define STORE_BUSY_MS 20
#define STORE_OPEN_BUSY_MS 2000

struct store {
	bool busy; /* the last failure was a lock held elsewhere */
	sqlite3 *db;
	char *path;
	sqlite3_stmt *rec_insert;
	sqlite3_stmt *meta_put;
};

/* Each entry takes the schema from version i to i + 1. */
static const char *const migrations[] = {
    /* 1: call records, and the revision they are complete up to */
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
    "CREATE TABLE records ("
    " call TEXT PRIMARY KEY, route_point TEXT NOT NULL, post TEXT NOT NULL,"
    " server TEXT NOT NULL, port INTEGER NOT NULL, origin TEXT NOT NULL,"
    " caller TEXT NOT NULL, start_ms INTEGER NOT NULL,"
    " answer_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,"
    " duration_ms INTEGER NOT NULL, ended_by TEXT NOT NULL,"
    " status TEXT NOT NULL, closed_by TEXT NOT NULL,"
    " rev INTEGER NOT NULL);"
    "CREATE INDEX records_end ON records (end_ms);"
    "CREATE INDEX records_rp ON records (route_point, end_ms);",
    /* 2: desk sessions, their channels and their events */
    "CREATE TABLE sessions ("
    " token TEXT PRIMARY KEY, user TEXT NOT NULL, desk TEXT NOT NULL,"
    " version TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " seen_ms INTEGER NOT NULL, expired_ms INTEGER NOT NULL DEFAULT 0,"
    " seq INTEGER NOT NULL DEFAULT 0, slot INTEGER NOT NULL DEFAULT -1,"
    " slot_lease INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX sessions_seen ON sessions (expired_ms, seen_ms);"
    "CREATE TABLE joined ("
    " token TEXT NOT NULL REFERENCES sessions (token) ON DELETE CASCADE,"
    " channel TEXT NOT NULL, since_ms INTEGER NOT NULL,"
    " PRIMARY KEY (token, channel));"
    "CREATE TABLE events ("
    " token TEXT NOT NULL REFERENCES sessions (token) ON DELETE CASCADE,"
    " seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, type TEXT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (token, seq));",
    /* 3: the license slot key's mod_revision, and why a session ended */
    "ALTER TABLE sessions ADD COLUMN slot_rev INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sessions ADD COLUMN ended TEXT NOT NULL DEFAULT '';"
    "CREATE INDEX sessions_desk ON sessions (user, desk, expired_ms);",
    /* 4: the configuration version in effect when the call started */
    "ALTER TABLE records ADD COLUMN config_version INTEGER NOT NULL DEFAULT 0;",
};

static bool
is_busy(int rc)
{
	return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

static int
exec(struct store *s, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	int rc;

	if ((rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg)) == SQLITE_OK) {
		s->busy = false;
		return 0;
	}
	if ((s->busy = is_busy(rc)) && err == NULL) {
		/* the caller waits and tries again: not an error yet */
		log_debug("store %s: %s: busy", s->path, sql);
		sqlite3_free(msg);
		return US_EIO;
	}
	if (err)
		snprintf(err, errlen, "%s: %s", s->path,
		    msg ? msg : sqlite3_errmsg(s->db));
	else
		log_error(
		    "store %s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
	sqlite3_free(msg);
	return US_EIO;
}

static int
user_version(struct store *s)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int
migrate(struct store *s, char *err, size_t errlen)
{
	int v = user_version(s), want = (int)ARRAY_SIZE(migrations);
	char sql[64];

	if (v < 0) {
		snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
		return US_EIO;
	}
	if (v > want) {
		snprintf(err, errlen,
		    "%s: schema version %d is newer than this program's (%d); "
		    "run the newer understudyd, or restore a backup",
		    s->path, v, want);
		return US_ECONFIG;
	}
	for (; v < want; v++) {
		if (exec(s, "BEGIN IMMEDIATE", err, errlen) ||
		    exec(s, migrations[v], err, errlen)) {
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return US_EIO;
		}
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if (exec(s, sql, err, errlen) ||
		    exec(s, "COMMIT", err, errlen)) {
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return US_EIO;
		}
		log_info("store %s: schema now at version %d", s->path, v + 1);
	}
	return 0;
}

static int
mkdirs(const char *dir, char *err, size_t errlen)
{
	char path[4096];

	if (str_copy(path, dir, sizeof(path)) >= sizeof(path)) {
		snprintf(err, errlen, "state directory path too long");
		return US_EINVAL;
	}
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0750) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", path,
			    strerror(errno));
			return US_EIO;
		}
		*p = '/';
	}
	if (mkdir(path, 0750) != 0 && errno != EEXIST) {
		snprintf(
		    err, errlen, "cannot create %s: %s", path, strerror(errno));
		return US_EIO;
	}
	return 0;
}

sqlite3 *
store_db(struct store *s)
{
	return s->db;
}

int
store_exec(struct store *s, const char *sql)
{
	return exec(s, sql, NULL, 0);
}

bool
store_busy(const struct store *s)
{
	return s->busy;
}

bool
store_writable(struct store *s)
{
	int rc;

	/* a probe that never waits: the lock is free, or it is not */
	sqlite3_busy_timeout(s->db, 0);
	rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	sqlite3_busy_timeout(s->db, STORE_BUSY_MS);
	if (rc != SQLITE_OK) {
		s->busy = is_busy(rc);
		return false;
	}
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	s->busy = false;
	return true;
}

struct store *
store_open(const char *dir, char *err, size_t errlen)
{
	struct store *s;

	if (mkdirs(dir, err, errlen) != 0)
		return NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    asprintf(&s->path, "%s/%s", dir, STORE_FILE) < 0) {
		free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (sqlite3_open_v2(s->path, &s->db,
		SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
		    SQLITE_OPEN_NOMUTEX,
		NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", s->path,
		    s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, STORE_OPEN_BUSY_MS);
	/* a file that is not a database fails here, at the first read */
	if (exec(s, "PRAGMA journal_mode = WAL", err, errlen) ||
	    exec(s, "PRAGMA synchronous = FULL", err, errlen) ||
	    exec(s, "PRAGMA foreign_keys = ON", err, errlen) ||
	    migrate(s, err, errlen) != 0)
		goto fail;
	if (sqlite3_prepare_v3(s->db,
		"INSERT OR IGNORE INTO records (call, route_point, post, "
		"server, port, origin, caller, start_ms, answer_ms, end_ms, "
		"duration_ms, ended_by, status, closed_by, rev, "
		"config_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		-1, SQLITE_PREPARE_PERSISTENT, &s->rec_insert,
		NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(s->db,
		"INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO "
		"UPDATE SET v = excluded.v",
		-1, SQLITE_PREPARE_PERSISTENT, &s->meta_put,
		NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
		goto fail;
	}
	sqlite3_busy_timeout(s->db, STORE_BUSY_MS);
	return s;
fail:
	store_close(s);
	return NULL;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	sqlite3_finalize(s->rec_insert);
	sqlite3_finalize(s->meta_put);
	sqlite3_close_v2(s->db);
	free(s->path);
	free(s);
}

const char *
store_path(const struct store *s)
{
	return s->path;
}

static int64_t
meta_get(struct store *s, const char *k)
{
	sqlite3_stmt *st;
	int64_t v = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = ?", -1, &st,
		NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int
meta_put(struct store *s, const char *k, int64_t v)
{
	int rc;

	sqlite3_reset(s->meta_put);
	sqlite3_bind_text(s->meta_put, 1, k, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s->meta_put, 2, v);
	rc = sqlite3_step(s->meta_put);
	sqlite3_reset(s->meta_put);
	return rc == SQLITE_DONE ? 0 : US_EIO;
}

/* Bind one record; false when a field is missing or of the wrong type. */
static bool
bind_record(sqlite3_stmt *st, json_t *r, int64_t rev)
{
	static const char *const text[] = {
	    "call", "route_point", "post", "server"};
	static const char *const text2[] = {"origin", "caller"};
	static const char *const nums[] = {
	    "start", "answer", "end", "duration_ms"};
	static const char *const text3[] = {"ended_by", "status", "closed_by"};
	int col = 1;
	json_t *v;

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	for (size_t i = 0; i < ARRAY_SIZE(text); i++) {
		if (!json_is_string(v = json_object_get(r, text[i])))
			return false;
		sqlite3_bind_text(
		    st, col++, json_string_value(v), -1, SQLITE_TRANSIENT);
	}
	if (!json_is_integer(v = json_object_get(r, "port")))
		return false;
	sqlite3_bind_int64(st, col++, json_integer_value(v));
	for (size_t i = 0; i < ARRAY_SIZE(text2); i++) {
		v = json_object_get(r, text2[i]);
		sqlite3_bind_text(st, col++,
		    json_is_string(v) ? json_string_value(v) : "", -1,
		    SQLITE_TRANSIENT);
	}
	for (size_t i = 0; i < ARRAY_SIZE(nums); i++) {
		if (!json_is_integer(v = json_object_get(r, nums[i])))
			return false;
		sqlite3_bind_int64(st, col++, json_integer_value(v));
	}
	for (size_t i = 0; i < ARRAY_SIZE(text3); i++) {
		if (!json_is_string(v = json_object_get(r, text3[i])))
			return false;
		sqlite3_bind_text(
		    st, col++, json_string_value(v), -1, SQLITE_TRANSIENT);
	}
	sqlite3_bind_int64(st, col++, rev);
	/* 0: closed by a server from before configuration versions */
	v = json_object_get(r, "config_version");
	sqlite3_bind_int64(
	    st, col, json_is_integer(v) ? json_integer_value(v) : 0);
	return true;
}

int
store_records_add(struct store *s, json_t *records, int64_t seq, int64_t stream,
    unsigned *added, unsigned *bad)
{
	size_t i;
	json_t *r;

	*added = *bad = 0;
	s->busy = false;
	if (exec(s, "BEGIN IMMEDIATE", NULL, 0) != 0)
		return US_EIO;
	json_array_foreach (records, i, r) {
		int rc;

		if (!bind_record(s->rec_insert, r, seq)) {
			(*bad)++;
			continue;
		}
		if ((rc = sqlite3_step(s->rec_insert)) != SQLITE_DONE) {
			s->busy = is_busy(rc);
			goto fail;
		}
		*added += (unsigned)sqlite3_changes(s->db);
	}
	sqlite3_reset(s->rec_insert);
	if (meta_put(s, "records_seq", seq) != 0 ||
	    meta_put(s, "records_stream", stream) != 0 ||
	    exec(s, "COMMIT", NULL, 0) != 0)
		goto fail;
	return 0;
fail:
	s->busy = s->busy || is_busy(sqlite3_errcode(s->db));
	if (!s->busy)
		log_error("store %s: %s", s->path, sqlite3_errmsg(s->db));
	sqlite3_reset(s->rec_insert);
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	*added = 0;
	return US_EIO;
}

int64_t
store_records_seq(struct store *s)
{
	return meta_get(s, "records_seq");
}

int64_t
store_records_stream(struct store *s)
{
	return meta_get(s, "records_stream");
}

int64_t
store_records_count(struct store *s)
{
	sqlite3_stmt *st;
	int64_t n = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM records", -1, &st,
		NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static json_t *
time_json(int64_t ms)
{
	char t[40];

	return ms > 0 ? json_string(time_iso8601(ms, t, sizeof(t)))
		      : json_null();
}

json_t *
store_records_query(struct store *s, const struct store_query *q, char *next,
    char *err, size_t errlen)
{
	static const char *const names[] = {"call", "route_point", "post",
	    "server", "port", "origin", "caller", "start", "answer", "end",
	    "duration_ms", "ended_by", "status", "closed_by", "config_version"};
	sqlite3_stmt *st;
	json_t *out;
	int64_t last_end = 0;
	int rc;

#define RECORDS_SELECT                                                         \
	"SELECT call, route_point, post, server, port, origin, "               \
	"caller, start_ms, answer_ms, end_ms, duration_ms, ended_by, "         \
	"status, closed_by, config_version FROM records WHERE "                \
	"end_ms >= ?1 AND "                                                    \
	"(?2 = 0 OR end_ms < ?2) AND (?3 IS NULL OR route_point = ?3) "        \
	"AND (?4 IS NULL OR post = ?4) AND (?5 IS NULL OR status = ?5) "
	static const char oldest[] = RECORDS_SELECT
	    "AND (?7 IS NULL OR end_ms > ?8 OR (end_ms = ?8 AND call > ?7)) "
	    "ORDER BY end_ms, call LIMIT ?6";
	static const char newest[] = RECORDS_SELECT
	    "AND (?7 IS NULL OR end_ms < ?8 OR (end_ms = ?8 AND call < ?7)) "
	    "ORDER BY end_ms DESC, call DESC LIMIT ?6";
#undef RECORDS_SELECT

	if (sqlite3_prepare_v2(s->db, q->newest_first ? newest : oldest, -1,
		&st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
		return NULL;
	}
	sqlite3_bind_int64(st, 1, q->since_ms);
	sqlite3_bind_int64(st, 2, q->until_ms);
	if (q->route_point)
		sqlite3_bind_text(st, 3, q->route_point, -1, SQLITE_STATIC);
	if (q->post)
		sqlite3_bind_text(st, 4, q->post, -1, SQLITE_STATIC);
	if (q->status)
		sqlite3_bind_text(st, 5, q->status, -1, SQLITE_STATIC);
	/* one more than the limit: whether there is a next page */
	sqlite3_bind_int64(st, 6, q->limit > 0 ? q->limit + 1 : -1);
	if (q->after_call) {
		sqlite3_bind_text(st, 7, q->after_call, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 8, q->after_end_ms);
	}
	next[0] = '\0';
	out = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o;

		if (q->limit > 0 && (long)json_array_size(out) == q->limit) {
			o = json_array_get(out, json_array_size(out) - 1);
			snprintf(next, STORE_CURSOR_MAX, "%" PRId64 ":%s",
			    last_end,
			    json_string_value(json_object_get(o, "call")));
			rc = SQLITE_DONE;
			break;
		}
		o = json_object();
		last_end = sqlite3_column_int64(st, 9);

		for (int c = 0; c < (int)ARRAY_SIZE(names); c++) {
			json_t *v;

			if (c >= 7 && c <= 9)
				v = time_json(sqlite3_column_int64(st, c));
			else if (c == 4 && sqlite3_column_int64(st, c) < 0)
				v = json_null(); /* no port: BUSY */
			else if (sqlite3_column_type(st, c) == SQLITE_INTEGER)
				v = json_integer(sqlite3_column_int64(st, c));
			else
				v = json_string(
				    (const char *)sqlite3_column_text(st, c));
			json_object_set_new(o, names[c], v);
		}
		json_array_append_new(out, o);
	}
	if (rc != SQLITE_DONE) {
		snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
		json_decref(out);
		out = NULL;
	}
	sqlite3_finalize(st);
	return out;
}
