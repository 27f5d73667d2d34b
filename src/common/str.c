/* Small string helpers: numbers, names, lists and spelling suggestions. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

unsigned
str_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned row[101];

	if (la > 100 || lb > 100)
		return 100;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		unsigned diag = row[0];

		row[0] = (unsigned)i;
		for (size_t j = 1; j <= lb; j++) {
			unsigned up = row[j], best;
			int same = tolower((unsigned char)a[i - 1]) ==
			    tolower((unsigned char)b[j - 1]);

			best = diag + (same ? 0u : 1u);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb] > 100 ? 100 : row[lb];
}

const char *
str_suggest(const char *word, const char *const *candidates, size_t n)
{
	const char *best = NULL;
	unsigned best_d = 100, limit;

	for (size_t i = 0; i < n; i++) {
		unsigned d = str_distance(word, candidates[i]);

		if (d < best_d) {
			best_d = d;
			best = candidates[i];
		}
	}
	/* a third of the word's length, at least 1, at most 3 edits */
	limit = (unsigned)strlen(word) / 3;
	if (limit < 1)
		limit = 1;
	if (limit > 3)
		limit = 3;
	return best_d <= limit ? best : NULL;
}

size_t
str_copy(char *dst, const char *src, size_t len)
{
	size_t n = strlen(src);

	if (len == 0)
		return n;
	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

int
str_to_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	if (*s == '\0' || isspace((unsigned char)*s)) {
		errno = EINVAL;
		return -1;
	}
	v = strtol(s, &end, 10);
	if (*end != '\0') {
		errno = EINVAL;
		return -1;
	}
	if (errno == ERANGE || v < min || v > max) {
		errno = ERANGE;
		return -1;
	}
	*out = v;
	return 0;
}

bool
str_is_ip(const char *s)
{
	unsigned char tmp[16];

	return inet_pton(AF_INET, s, tmp) == 1 ||
	    inet_pton(AF_INET6, s, tmp) == 1;
}

bool
str_is_hostname(const char *s)
{
	size_t len = strlen(s), label = 0;
	bool alpha = false;

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-')
			return false;
		if (c == '-' && label == 0)
			return false;
		if (isalpha(c))
			alpha = true;
		if (++label > 63)
			return false;
	}
	return label > 0 && alpha;
}

int
strlist_add(struct strlist *l, const char *s)
{
	char **v, *copy;

	if ((copy = strdup(s)) == NULL)
		return US_ENOMEM;
	if ((v = realloc(l->v, (l->n + 1) * sizeof(*v))) == NULL) {
		free(copy);
		return US_ENOMEM;
	}
	l->v = v;
	l->v[l->n++] = copy;
	return 0;
}

int
strlist_split(struct strlist *l, const char *s)
{
	char item[256];
	int rc = 0;

	while (*s) {
		size_t n = 0;

		while (*s == ',' || isspace((unsigned char)*s))
			s++;
		while (*s && *s != ',' && !isspace((unsigned char)*s)) {
			if (n < sizeof(item) - 1)
				item[n++] = *s;
			else
				rc = US_ETOOBIG;
			s++;
		}
		item[n] = '\0';
		if (n && strlist_add(l, item) != 0)
			return US_ENOMEM;
	}
	return rc;
}

int
strlist_find(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return (int)i;
	return -1;
}

void
strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
