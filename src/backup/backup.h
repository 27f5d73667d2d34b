/*
 * Archives of the whole cluster: take.c takes one through the servers'
 * API, archive.c reads and writes the archive (a POSIX tar of the etcd
 * snapshot, every server's database and the manifest), verify.c checks
 * one and restores it into a scratch directory, restore.c puts one back.
 * The CLI (understudy backup, restore) and the admin primary's scheduled
 * backups (schedule.c, in the worker) both use these; everything here
 * blocks, so the worker calls it from a thread of its own.
 */
#ifndef US_BACKUP_H
#define US_BACKUP_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"

/* Whom the parts are asked from, and with what. */
struct backup_target {
	const struct config *cfg; /* the cluster: its name and servers */
	const char *token; /* the admin token */
	const char *ca; /* the CA file for https:// servers, NULL: none */
};

/* How far a backup is, for a progress bar. */
struct backup_progress {
	uint64_t bytes; /* written to the archive so far */
	uint64_t bytes_expected; /* best estimate of the total, 0: unknown */
	int parts_done, parts_total;
	const char *part; /* the part being fetched, NULL between parts */
};

typedef void (*backup_progress_fn)(const struct backup_progress *p, void *arg);

/*
 * Take one archive of t's cluster into path: the etcd snapshot and every
 * server's database, each checked against its sha256, then the manifest.
 * It never overwrites: the archive is written under a temporary name in
 * path's directory and linked to path only when complete, so a crash
 * leaves no file at path. fn (may be NULL) is called as bytes arrive.
 * Returns 0 with the manifest in *manifest (the caller's), or -1 with the
 * reason in err (errno EEXIST when path exists); nothing is at path then.
 */
int backup_take(const struct backup_target *t, const char *path,
    backup_progress_fn fn, void *arg, json_t **manifest, char *err,
    size_t errlen);

/*
 * Verify the archive at path: every checksum, each database's
 * integrity_check, the snapshot's own hash, then a restore test (a
 * throwaway etcd started from the snapshot in a directory made under
 * scratch, NULL: $TMPDIR or /tmp, removed afterwards) with every count
 * compared to the manifest. Returns 0 when every check passed, 1 when
 * some failed, -1 when it could not run (err says why); *report (the
 * caller's, also on 1) lists each check with its part, ok and why.
 */
int backup_verify(const char *path, const char *scratch, json_t **report,
    char *err, size_t errlen);

/* ---- the parts below serve the two above, the API and the CLI ---- */

#include <sodium.h>

/* archive.c: POSIX ustar archives, written streaming, read as a parser */

#define ARCHIVE_NAME_MAX 99 /* a ustar name field, without the prefix */
#define ARCHIVE_PARTS_MAX 1024 /* entries one archive may hold */
#define ARCHIVE_PART_MAX (1ull << 40) /* bytes of one entry: 1 TiB */
#define ARCHIVE_MANIFEST_MAX (1024 * 1024)

struct archive_writer {
	int fd; /* the caller's */
	uint64_t off; /* where the next header goes */
	uint64_t body; /* the open part's first body byte */
	uint64_t size; /* of the open part so far */
	crypto_hash_sha256_state sha;
	char name[ARCHIVE_NAME_MAX + 1]; /* the open part, "" when none */
	int64_t mtime; /* seconds, in every header */
};

/* Start writing an archive at the start of fd (a new, empty file). */
void archive_writer_init(struct archive_writer *w, int fd, int64_t mtime);

/*
 * Open a part called name (checked: archive_name_ok): a placeholder
 * header now, the real one once its size is known. 0 or -1 (err).
 */
int archive_part_begin(
    struct archive_writer *w, const char *name, char *err, size_t errlen);

/* Append to the open part, hashing as it goes. 0 or -1 (err). */
int archive_part_write(struct archive_writer *w, const void *data, size_t len,
    char *err, size_t errlen);

/* The sha256 of the open part so far (it stays open), into sha. */
void archive_part_sha256(const struct archive_writer *w, unsigned char *sha);

/*
 * Drop the open part: the file is cut back to where its header was, as
 * if it had never begun (a server that failed half way).
 */
int archive_part_abort(struct archive_writer *w, char *err, size_t errlen);

/*
 * Close the open part: padding, then its real header. Its sha256 goes
 * into sha (32 bytes) and its size into *size. 0 or -1 (err).
 */
int archive_part_end(struct archive_writer *w, unsigned char *sha,
    uint64_t *size, char *err, size_t errlen);

/* A whole part from memory: begin, write, end. */
int archive_add(struct archive_writer *w, const char *name, const void *data,
    size_t len, unsigned char *sha, char *err, size_t errlen);

/* The two zero blocks that end an archive. 0 or -1 (err). */
int archive_finish(struct archive_writer *w, char *err, size_t errlen);

/* A part name we write and accept: [A-Za-z0-9._-] segments split by '/'. */
bool archive_name_ok(const char *name);

struct archive_entry {
	char name[ARCHIVE_NAME_MAX + 1];
	uint64_t offset; /* of its first body byte in the file */
	uint64_t size;
};

struct archive_index {
	struct archive_entry *v;
	size_t n;
};

/*
 * Read the headers of the archive in fd (size bytes): every entry, its
 * place and size. Capped: ARCHIVE_PARTS_MAX entries, ARCHIVE_PART_MAX
 * bytes each, names archive_name_ok, no name twice, every header's
 * checksum right, every body inside the file. 0, or -1 with the first
 * problem in err (with its offset). Free ix with archive_index_free.
 */
int archive_index_read(
    int fd, uint64_t size, struct archive_index *ix, char *err, size_t errlen);
void archive_index_free(struct archive_index *ix);

/* The entry called name, or NULL. */
const struct archive_entry *archive_index_find(
    const struct archive_index *ix, const char *name);

/*
 * The sha256 of len bytes of fd from off (pread), into sha (32 bytes);
 * with copy >= 0, the bytes are also written to copy. 0 or -1 (err).
 */
int archive_sha256(int fd, uint64_t off, uint64_t len, int copy,
    unsigned char *sha, char *err, size_t errlen);

/* sha (32 bytes) as 64 lower-case hex digits and a NUL into hex. */
void archive_hex(const unsigned char *sha, char *hex);

/* snapshot.c: what an etcd snapshot file says about itself */

#define SNAPSHOT_HASH_LEN 32

/*
 * The etcd revision of the snapshot in fd (size bytes, with or without
 * its trailing sha256): the newest revision in its bbolt "key" bucket,
 * or the compacted one where that is newer. The file is read as a
 * parser: pages, elements and depth are checked and capped. 0 with
 * *rev, or -1 with err.
 */
int snapshot_revision(
    int fd, uint64_t size, int64_t *rev, char *err, size_t errlen);

/*
 * Check the snapshot's own hash: the sha256 of all but its last 32
 * bytes must be those 32 bytes. 1 when it is, 0 when not (both written
 * as hex into want and got, 65 bytes each), -1 when unreadable (err).
 */
int snapshot_hash_check(
    int fd, uint64_t size, char *want, char *got, char *err, size_t errlen);

/* verify.c */

/*
 * etcdctl snapshot restore of snapshot into data_dir (which must not
 * exist) as the one member name with peer URL peer; etcdctl's output
 * goes to log. 0, or -1 with etcdctl's last words in why.
 */
int verify_etcd_restore(const char *snapshot, const char *data_dir,
    const char *name, const char *peer, const char *log, char *why,
    size_t wlen);

/* Remove path and everything under it (no symlink followed). */
void verify_remove_tree(const char *path);

/* serve.c: the parts a server serves (GET /v1/backup/etcd and /db) */

struct serve_part {
	int fd; /* an open, unlinked file holding the part; the caller's */
	uint64_t size;
	char sha256[65];
	int64_t revision, keys, config_versions, config_in_effect; /* etcd */
	int64_t records, sessions; /* db */
	int err; /* US_E* when it failed */
	char message[512];
};

/*
 * The etcd snapshot of cfg's cluster, through the v3 gateway of the
 * first of its endpoints that answers, in an unlinked file under tmpdir,
 * with its revision and the counts at that revision. Blocks: for a
 * thread. 0, or -1 with p->err and p->message.
 */
int serve_etcd(
    const struct config *cfg, const char *tmpdir, struct serve_part *p);

/*
 * A consistent copy of the database at db_path (SQLite's online backup,
 * from a connection of its own, the server running on) in an unlinked
 * file under tmpdir, with its counts. Blocks: for a thread. 0, or -1
 * with p->err and p->message.
 */
int serve_db(const char *db_path, const char *tmpdir, struct serve_part *p);

/*
 * Remove the temporary part files (.backup-*) a worker that stopped
 * while it made one left in dir; at the worker's start, before it serves.
 */
void serve_sweep(const char *dir);

/* restore.c: put an archive back on this machine */

struct backup_restore_opts {
	const char *path; /* the archive */
	const char *state_dir; /* as understudy up takes it */
	const struct config *cfg; /* the cluster's config */
	const char *token, *ca; /* to ask whether its servers run */
	bool force; /* move what is in the way aside instead of refusing */
};

/*
 * The name and peer URL of the one-member etcd that understudy up runs
 * for cfg (etcd = local), which a restored data directory must carry.
 */
void backup_etcd_member(const struct config *cfg, char *name, size_t namelen,
    char *peer, size_t peerlen);

/*
 * Verify the archive, refuse while any server of its cluster answers or
 * where something is in the way, then restore etcd into state_dir/etcd
 * and each database into state_dir/SERVER/understudy.db. Returns 0 when
 * restored, 1 when refused or verification failed (nothing changed), -1
 * when it failed (err; what it had begun is undone where it can be).
 * *report (the caller's) has the verification, what was refused and why,
 * and what was put where.
 */
int backup_restore(const struct backup_restore_opts *o, json_t **report,
    char *err, size_t errlen);
/* schedule.c: scheduled backups, in the worker (on its loop) */

struct agent;
struct etcd;
struct members;
struct uv_loop_s;
struct backups;

/*
 * Scheduled backups of cfg's cluster (backup_schedule, backup_dir,
 * backup_keep): every server follows the slots in etcd; the one that is
 * the admin primary (a) takes them. state_dir is where a relative
 * backup_dir is. Returns NULL on ENOMEM.
 */
struct backups *backups_new(struct uv_loop_s *loop, struct etcd *e,
    struct agent *a, struct members *m, const struct config *cfg,
    const char *self, const char *state_dir);

/* Run a new configuration version; cfg must outlive b or the next call. */
void backups_set_config(struct backups *b, const struct config *cfg);

/*
 * The schedule, the kept archives, the last good and the last backup,
 * what runs now (GET /v1/backups, docs/api.md); the caller's.
 */
json_t *backups_status(const struct backups *b);

/* The end of the last good backup in *finished_ms; false: none. */
bool backups_last_ok(const struct backups *b, int64_t *finished_ms);

/*
 * Stop; a backup in progress is waited for. done(arg) is called once
 * the handles are closed (the loop must run). NULL is a no-op (done is
 * still called).
 */
void backups_free(struct backups *b, void (*done)(void *arg), void *arg);

#endif
