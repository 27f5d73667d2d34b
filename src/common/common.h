/*
 * Common helpers: logging, time, bounded buffers, base64 and strings.
 * The configuration has its own part (config/config.h).
 */
#ifndef US_COMMON_H
#define US_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "understudy/errors.h"

#define US_VERSION "0.1.0"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* log.c */

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR
};

/*
 * Set who is speaking ("PA1", "PA1 master") and the lowest level printed.
 * The strings are copied. Until called, lines carry "understudy".
 */
void log_init(const char *who, enum log_level min);

/* The lowest level printed from now on. */
void log_set_level(enum log_level min);

/* Parse "debug", "info", "warn" or "error"; -1 on anything else. */
int log_level_parse(const char *s);

/* One line to stderr: "2026-11-21T10:00:00.123Z info PA1: message". */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "debug", "info", "warn", "error". */
const char *log_level_name(enum log_level level);

/*
 * Warnings and errors are counted and the latest LOG_RECENT_MAX kept
 * (each cut to LOG_TEXT_MAX bytes), whatever the level printed.
 */
#define LOG_RECENT_MAX 256
#define LOG_TEXT_MAX 300

struct log_entry {
	int64_t time_ms; /* wall */
	enum log_level level;
	uint64_t seq; /* 1 for the first warning or error of the process */
	char text[LOG_TEXT_MAX]; /* the message, without time and level */
};

struct log_summary {
	size_t warnings, errors; /* kept since since_ms */
	size_t matched; /* of them, at the level asked or above */
	bool truncated; /* the ring lost some that may be since since_ms */
};

/* Warnings and errors logged by this process since it started. */
void log_counts(uint64_t *warnings, uint64_t *errors);

/*
 * The latest (at most max) kept entries of level min or above logged at
 * or after since_ms (wall), oldest first, copied into out; *sum counts
 * every kept one since since_ms. Returns how many were copied.
 */
size_t log_recent(enum log_level min, int64_t since_ms, struct log_entry *out,
    size_t max, struct log_summary *sum);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* loop.c */

#define LOOP_READ_MAX (64 * 1024)

/*
 * The alloc callback of every uv read in the process: one shared buffer
 * of LOOP_READ_MAX bytes. Readers that take less check their own cap.
 */
void loop_read_buffer(uv_handle_t *h, size_t size, uv_buf_t *b);

/* time.c */

/* Monotonic clock in milliseconds; use for every timeout. */
uint64_t time_mono_ms(void);

/* Wall clock in milliseconds since the epoch; use only for display. */
int64_t time_wall_ms(void);

/*
 * Format a wall-clock time (ms since the epoch) as ISO 8601 UTC with
 * milliseconds into buf (at least 25 bytes). Returns buf.
 */
char *time_iso8601(int64_t wall_ms, char *buf, size_t len);

/*
 * A point in time as people write it: ISO 8601 (2026-11-22,
 * 2026-11-22T09:30, 2026-11-22T09:30:00.250Z, ...+01:00; UTC without a
 * zone), ms since the epoch (1795000000000), or an age before now_ms
 * (90s, 15m, 2h, 7d). 0 with *out set, or US_EINVAL.
 */
int time_parse(const char *s, int64_t now_ms, int64_t *out);

/* buf.c */

/*
 * A growable byte buffer with a hard cap set at creation. The data is
 * always NUL-terminated (the NUL is not counted in len).
 *
 * err is sticky: the first append refused since buf_init or buf_reset
 * (US_ETOOBIG at the cap, US_ENOMEM, US_EINVAL), 0 while none was.
 * Whoever builds a whole answer with many appends may ignore each
 * return and check err once at the end: a buffer with err set holds a
 * cut text that must not go out as if it were whole.
 */
struct buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t max;
	int err;
};

/* Start an empty buffer that may hold at most max bytes. */
void buf_init(struct buf *b, size_t max);

/*
 * Append; returns 0, or US_ETOOBIG past the cap, or US_ENOMEM (and sets
 * err if it was 0). A refused append adds nothing.
 */
int buf_append(struct buf *b, const void *data, size_t len);

/* Append formatted text; same returns as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Drop the first n bytes; err stays as it is. */
void buf_consume(struct buf *b, size_t n);

/* Empty the buffer, keeping its memory; err back to 0. */
void buf_reset(struct buf *b);

/* Free the memory; the buffer may be reused after buf_init. */
void buf_free(struct buf *b);

/*
 * Take the first newline-terminated line out of b into *line (without
 * the newline, NUL-terminated, owned by the caller). Returns 1 when a
 * line was taken, 0 when no complete line is buffered, US_ENOMEM.
 */
int buf_take_line(struct buf *b, char **line, size_t *len);

/* base64.c */

/*
 * Encode len bytes as standard base64 (with padding). Returns a new
 * NUL-terminated string owned by the caller, or NULL on ENOMEM.
 */
char *base64_encode(const void *data, size_t len);

/*
 * Decode standard base64. On success *out is a new buffer owned by the
 * caller with a NUL after the *outlen decoded bytes. Returns 0, US_EPROTO
 * on malformed input, US_ENOMEM.
 */
int base64_decode(const char *in, size_t inlen, char **out, size_t *outlen);

/* str.c */

/* Edit distance between two strings, capped at 100. */
unsigned str_distance(const char *a, const char *b);

/*
 * The candidate nearest to word, or NULL when none is close enough to be
 * a plausible misspelling.
 */
const char *str_suggest(
    const char *word, const char *const *candidates, size_t n);

/* Copy src into dst of size len, truncating; always NUL-terminates. */
size_t str_copy(char *dst, const char *src, size_t len);

/*
 * Parse a whole decimal integer in [min, max]. Returns 0, or -1 when s is
 * not a number or out of range (errno says which: EINVAL or ERANGE).
 */
int str_to_long(const char *s, long min, long max, long *out);

/* True when s is an IPv4 or IPv6 literal. */
bool str_is_ip(const char *s);

/* True when s is a syntactically valid DNS host name. */
bool str_is_hostname(const char *s);

/* A list of strings, owned by the list. */
struct strlist {
	char **v;
	size_t n;
};

/*
 * Split s on commas and white space into l (appending). Empty items are
 * skipped. Returns 0, US_ENOMEM, or US_ETOOBIG when an item was longer
 * than 255 bytes (it is kept, cut short).
 */
int strlist_split(struct strlist *l, const char *s);

/* Append a copy of s. Returns 0 or US_ENOMEM. */
int strlist_add(struct strlist *l, const char *s);

/* Index of s in l, or -1. */
int strlist_find(const struct strlist *l, const char *s);

/* Free every string and the array; the list is empty afterwards. */
void strlist_free(struct strlist *l);

#endif
