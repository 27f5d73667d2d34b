/*
 * The server's SQLite database (WAL, synchronous=FULL): what it must
 * remember across a restart. One file, <state dir>/understudy.db; its
 * schema version is PRAGMA user_version and every migration from an
 * older one runs at open. Calls block the loop for one commit (a fraction
 * of a millisecond on a disk that flushes fast; docs/performance.md).
 */
#ifndef US_STORE_H
#define US_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct store;

/*
 * Open (creating the directory and the file when missing) and migrate.
 * NULL with err filled when it cannot: a path, permission, a file that is
 * not a database, or a schema newer than this program knows.
 */
struct store *store_open(const char *dir, char *err, size_t errlen);

/* Close. NULL is a no-op. */
void store_close(struct store *s);

/* The file's path. */
const char *store_path(const struct store *s);

/*
 * The connection, for the modules that keep their own tables (desks):
 * one thread, one loop, so no locking. Their schema is here, in the
 * migrations.
 */
struct sqlite3 *store_db(struct store *s);

/*
 * Run SQL without results (BEGIN, COMMIT); 0 or US_EIO, logged unless
 * the database is locked by another process (store_busy).
 */
int store_exec(struct store *s, const char *sql);

/*
 * True when the last failure of store_exec or store_records_add was a
 * lock held elsewhere: a write waits at most a few ms on the loop, then
 * fails so, and its caller tries again later.
 */
bool store_busy(const struct store *s);

/*
 * True when a write could start now (no other process holds the lock),
 * found without waiting: what waits for the lock asks this first, so a
 * locked database costs the loop nothing.
 */
bool store_writable(struct store *s);

/* ---- call records ---- */

/*
 * Add records (a JSON array of record objects as the records stream
 * holds them) that are complete up to sequence seq of the stream created
 * at stream (ns), in one transaction. A record whose call id is already
 * present is left as it is (a record never changes). Objects that lack a
 * field are skipped and counted in *bad. Returns 0 or US_EIO.
 */
int store_records_add(struct store *s, json_t *records, int64_t seq,
    int64_t stream, unsigned *added, unsigned *bad);

/* The stream sequence the records are complete up to, or 0. */
int64_t store_records_seq(struct store *s);

/* The creation time (ns) of the stream that sequence is of, or 0. */
int64_t store_records_stream(struct store *s);

struct store_query {
	int64_t since_ms; /* ended at or after; 0: from the start */
	int64_t until_ms; /* ended before; 0: no bound */
	const char *route_point; /* NULL: any */
	const char *post;
	const char *status;
	long limit; /* at most this many */
	bool newest_first; /* the newest end first (else the oldest) */
	/* a page's cursor: only records past (after_end_ms, after_call) in
	 * the order asked */
	int64_t after_end_ms;
	const char *after_call; /* NULL: from the first */
};

/* A page's cursor: "END_MS:CALL" of its last record (docs/api.md). */
#define STORE_CURSOR_MAX 160

/*
 * The records that match, oldest end first (then by call id), as a JSON
 * array of objects with times in ISO 8601 (UTC, ms). When more match
 * past the limit, next (STORE_CURSOR_MAX bytes) gets the cursor of the
 * last one returned, to pass as the next page's after; else "". NULL on
 * failure (err filled).
 */
json_t *store_records_query(struct store *s, const struct store_query *q,
    char *next, char *err, size_t errlen);

/* Records in the database. */
int64_t store_records_count(struct store *s);

#endif
