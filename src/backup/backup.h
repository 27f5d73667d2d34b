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

/* schedule.c: scheduled backups, in the worker (on its loop) */

struct agent;
struct etcd;
struct uv_loop_s;
struct backups;

/*
 * Scheduled backups of cfg's cluster (backup_schedule, backup_dir,
 * backup_keep): every server follows the slots in etcd; the one that is
 * the admin primary (a) takes them. state_dir is where a relative
 * backup_dir is. Returns NULL on ENOMEM.
 */
struct backups *backups_new(struct uv_loop_s *loop, struct etcd *e,
    struct agent *a, const struct config *cfg, const char *self,
    const char *state_dir);

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
