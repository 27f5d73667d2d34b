/*
 * Failed logins counted per key ("user NAME", "address IP") in windows
 * of LIMITS_WINDOW_MS: past the configured number, a key waits for the
 * end of its window, and no password is checked for it meanwhile (the
 * argon2 cost is what a guesser would spend our CPU on). The table has
 * a fixed size; when full, the entry whose window started first goes,
 * which is logged (at most once a window) as what it is.
 */
#include <stdlib.h>
#include <string.h>

#include "desks.h"

#define LIMITS_KEYS 4096
#define LIMITS_WINDOW_MS 60000

struct limits_entry {
	char key[160];
	int64_t start; /* monotonic ms of the window's first failure */
	unsigned fails;
};

struct limits {
	struct limits_entry *v;
	size_t n;
	unsigned max;
	int64_t full_logged;
};

struct limits *
limits_new(unsigned max)
{
	struct limits *l = calloc(1, sizeof(*l));

	if (l == NULL || (l->v = calloc(LIMITS_KEYS, sizeof(*l->v))) == NULL) {
		free(l);
		return NULL;
	}
	l->max = max;
	return l;
}

void
limits_set_max(struct limits *l, unsigned max)
{
	if (l)
		l->max = max;
}

void
limits_free(struct limits *l)
{
	if (l == NULL)
		return;
	free(l->v);
	free(l);
}

static struct limits_entry *
find(struct limits *l, const char *key, int64_t now)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].key, key) == 0) {
			if (now - l->v[i].start >= LIMITS_WINDOW_MS) {
				l->v[i].start = now; /* a new window */
				l->v[i].fails = 0;
			}
			return &l->v[i];
		}
	return NULL;
}

int64_t
limits_wait_ms(struct limits *l, const char *key, unsigned times)
{
	int64_t now = (int64_t)time_mono_ms();
	struct limits_entry *e;

	if (l == NULL || l->max == 0 || (e = find(l, key, now)) == NULL ||
	    e->fails < l->max * times)
		return 0;
	return e->start + LIMITS_WINDOW_MS - now;
}

void
limits_failed(struct limits *l, const char *key)
{
	int64_t now = time_mono_ms();
	struct limits_entry *e;
	size_t oldest = 0;

	if (l == NULL || l->max == 0)
		return;
	if ((e = find(l, key, now)) == NULL) {
		for (size_t i = 0; i < l->n && l->n == LIMITS_KEYS; i++) {
			if (now - l->v[i].start >= LIMITS_WINDOW_MS) {
				oldest = i; /* over: reuse it */
				break;
			}
			if (l->v[i].start < l->v[oldest].start)
				oldest = i;
		}
		if (l->n < LIMITS_KEYS) {
			e = &l->v[l->n++];
		} else {
			e = &l->v[oldest];
			if (now - e->start < LIMITS_WINDOW_MS &&
			    now - l->full_logged >= LIMITS_WINDOW_MS) {
				log_error("desks: ETOOBIG: the failed-login "
					  "table is full (%d users and "
					  "addresses with failures this "
					  "minute); the oldest are forgotten",
				    LIMITS_KEYS);
				l->full_logged = now;
			}
		}
		str_copy(e->key, key, sizeof(e->key));
		e->start = now;
		e->fails = 0;
	}
	e->fails++;
}

void
limits_clear(struct limits *l, const char *key)
{
	struct limits_entry *e;

	if (l && (e = find(l, key, time_mono_ms())) != NULL)
		e->fails = 0;
}
