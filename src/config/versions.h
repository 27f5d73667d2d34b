/*
 * The cluster's configuration as numbered versions in etcd, apart from
 * the state the agents watch (docs/protocol.md, "Configuration"):
 *
 *   /understudy-config/<cluster>/current   {"version","sha256"}
 *   /understudy-config/<cluster>/v/<N>     a version, with its text
 *   /understudy-config/<cluster>/log/<N>   the same without the text
 *
 * N is zero-padded to 10 digits so that keys sort by number. A version
 * is {"version","text","sha256","author","time","comment","replaces",
 * "summary","id"}: "replaces" is the version in effect before it, "id" a
 * random nonce that tells a store whose answer was lost whether it was
 * done. Versions are never changed or deleted: the history is data, kept
 * through compaction and restarts.
 */
#ifndef US_VERSIONS_H
#define US_VERSIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct etcd;
struct versions;
struct versions_op;

#define VERSIONS_TEXT_MAX (1024 * 1024) /* bytes of one version's text */
#define VERSIONS_LOG_MAX 100000 /* versions listed at most */

/* What an operation gives back; valid only during the callback. */
struct versions_res {
	int err; /* 0, US_ENOTFOUND, US_ECONFLICT, US_EUNAVAIL, ... */
	char message[256];
	json_t *version; /* the version (with its text where asked for) */
	json_t *list; /* versions_log: every version, oldest first */
	int64_t in_effect; /* the version in effect, 0: none yet */
};

typedef void (*versions_cb)(const struct versions_res *r, void *arg);

/* The versions of cluster on etcd e. NULL on ENOMEM. */
struct versions *versions_new(struct etcd *e, const char *cluster);

/* Cancel every operation (no callbacks) and free. NULL is a no-op. */
void versions_free(struct versions *v);

/*
 * The version in effect, with its text. On an empty cluster, text (a
 * server's own file) is stored first as version 1 by author, unless
 * text is NULL (then US_ENOTFOUND).
 */
struct versions_op *versions_current(struct versions *v, const char *text,
    const char *author, versions_cb cb, void *arg);

/* Version n, with its text (US_ENOTFOUND when there is none). */
struct versions_op *versions_get(
    struct versions *v, int64_t n, versions_cb cb, void *arg);

/*
 * Store text as the next version, if the version in effect is still
 * base (-1: whatever it is; 0: none yet). Of two stores that race,
 * exactly one wins; the other gets US_ECONFLICT with in_effect naming the
 * winner. An answer lost on the way is resolved by reading back (the
 * version's id), never assumed. text must be checked by the caller.
 */
struct versions_op *versions_store(struct versions *v, const char *text,
    int64_t base, const char *author, const char *comment, const char *summary,
    versions_cb cb, void *arg);

/* Every version without its text, oldest first, read in pages. */
struct versions_op *versions_log(struct versions *v, versions_cb cb, void *arg);

/*
 * Call changed(version, arg) with the version in effect now, then at
 * every change (a new version stored, a rollback). 0 or US_ENOMEM.
 */
int versions_watch(
    struct versions *v, void (*changed)(int64_t version, void *arg), void *arg);

/* Stop an operation: its callback never runs. NULL is a no-op. */
void versions_cancel(struct versions_op *op);

/* The sha256 of text, as 64 hex digits (buf holds 65). */
void versions_sha256(const char *text, char *buf);

#endif
