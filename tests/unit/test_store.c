/* The SQLite store: schema, call records, refusals. */
#include <stdlib.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/store.h"
#include "test.h"

static char *
tmpdir(void)
{
	char *d = strdup("/tmp/us-store-XXXXXX");

	ASSERT(d && mkdtemp(d));
	return d;
}

static void
rmdb(const char *dir)
{
	char p[256];

	snprintf(p, sizeof(p), "rm -rf '%s'", dir);
	ASSERT(system(p) == 0);
}

static json_t *
rec(const char *call, const char *rp, const char *status, long long end)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:s,"
			 "s:s,s:s}",
	    "call", call, "route_point", rp, "post", "PA1", "server", "PA1",
	    "port", (json_int_t)5001, "origin", "sip", "caller", "sipp",
	    "start", (json_int_t)(end - 3000), "answer",
	    (json_int_t)(end - 2000), "end", (json_int_t)end, "duration_ms",
	    (json_int_t)2000, "ended_by", "caller", "status", status,
	    "closed_by", "PA1");
}

TEST(store_records)
{
	char *dir = tmpdir(), err[256], next[STORE_CURSOR_MAX];
	struct store *s = store_open(dir, err, sizeof(err));
	struct store_query q = {0};
	unsigned added, bad;
	json_t *arr = json_array(), *out;

	ASSERT(s);
	ASSERT_INT(store_records_seq(s), 0);
	json_array_append_new(arr, rec("a", "6000", "NORMAL", 1700000001000));
	json_array_append_new(arr, rec("b", "6100", "BUSY", 1700000002000));
	json_array_append_new(arr, json_pack("{s:s}", "call", "broken"));
	ASSERT_INT(store_records_add(s, arr, 17, 5, &added, &bad), 0);
	ASSERT_INT(added, 2);
	ASSERT_INT(bad, 1);
	/* the same records again (a watch re-read): nothing changes */
	ASSERT_INT(store_records_add(s, arr, 18, 5, &added, &bad), 0);
	ASSERT_INT(added, 0);
	ASSERT_INT(store_records_count(s), 2);
	json_decref(arr);

	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 2);
	ASSERT_STR(
	    json_string_value(json_object_get(json_array_get(out, 0), "call")),
	    "a");
	ASSERT_STR(
	    json_string_value(json_object_get(json_array_get(out, 0), "end")),
	    "2023-11-14T22:13:21.000Z");
	json_decref(out);
	q.route_point = "6100";
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	json_decref(out);
	q.route_point = NULL;
	q.since_ms = 1700000001500;
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	json_decref(out);
	q.since_ms = 0;
	q.until_ms = 1700000001500;
	q.status = "NORMAL";
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	ASSERT_STR(next, "");
	json_decref(out);
	/* pages of one: the cursor of the first leads to the second, once */
	q.until_ms = 0;
	q.status = NULL;
	q.limit = 1;
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	ASSERT_STR(next, "1700000001000:a");
	json_decref(out);
	q.after_end_ms = 1700000001000;
	q.after_call = "a";
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	ASSERT_STR(
	    json_string_value(json_object_get(json_array_get(out, 0), "call")),
	    "b");
	ASSERT_STR(next, "");
	json_decref(out);
	/* the newest first: b, then a from b's cursor */
	q.newest_first = true;
	q.after_call = NULL;
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	ASSERT_STR(
	    json_string_value(json_object_get(json_array_get(out, 0), "call")),
	    "b");
	json_decref(out);
	ASSERT(strchr(next, ':') != NULL);
	q.after_end_ms = strtoll(next, NULL, 10);
	q.after_call = "b";
	out = store_records_query(s, &q, next, err, sizeof(err));
	ASSERT_INT(json_array_size(out), 1);
	ASSERT_STR(
	    json_string_value(json_object_get(json_array_get(out, 0), "call")),
	    "a");
	ASSERT_STR(next, "");
	json_decref(out);
	store_close(s);

	/* reopened: the records and their revision are there */
	ASSERT((s = store_open(dir, err, sizeof(err))) != NULL);
	ASSERT_INT(store_records_seq(s), 18);
	ASSERT_INT(store_records_stream(s), 5);
	ASSERT_INT(store_records_count(s), 2);
	store_close(s);
	rmdb(dir);
	free(dir);
}

TEST(store_refusals)
{
	char *dir = tmpdir(), err[512], path[256];
	struct store *s;
	sqlite3 *db;
	FILE *f;

	/* a schema newer than this program's */
	snprintf(path, sizeof(path), "%s/understudy.db", dir);
	ASSERT(sqlite3_open(path, &db) == SQLITE_OK);
	ASSERT(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) ==
	    SQLITE_OK);
	sqlite3_close(db);
	ASSERT(store_open(dir, err, sizeof(err)) == NULL);
	ASSERT(strstr(err, "schema version 99 is newer") != NULL);
	ASSERT(strstr(err, path) != NULL);
	rmdb(dir);

	/* a file that is not a database */
	free(dir);
	dir = tmpdir();
	snprintf(path, sizeof(path), "%s/understudy.db", dir);
	ASSERT((f = fopen(path, "w")) != NULL);
	fputs("this is not a database, it only has its name\n", f);
	for (int i = 0; i < 200; i++)
		fputs("garbage garbage garbage garbage\n", f);
	fclose(f);
	ASSERT((s = store_open(dir, err, sizeof(err))) == NULL);
	ASSERT(strstr(err, path) != NULL);
	rmdb(dir);

	/* a directory that cannot be made */
	ASSERT(store_open("/proc/us-no/such", err, sizeof(err)) == NULL);
	ASSERT(strstr(err, "cannot create") != NULL);
	free(dir);
}
