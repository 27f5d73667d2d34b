/*
 * The archive: a POSIX ustar file that tar(1) lists and extracts. Parts
 * are streamed in as they arrive: a placeholder header first, the body
 * hashed while it is written, then the real header (whose size field
 * could not be known before) written over the placeholder. The reader
 * is a parser of untrusted input: every header's checksum, name, size
 * and place is checked, and the count of entries is capped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup.h"

#define BLOCK 512
#define COPY_CHUNK (256 * 1024)

static int
fail(char *err, size_t errlen, const char *fmt, const char *what)
{
	snprintf(err, errlen, fmt, what, strerror(errno));
	return -1;
}

static int
write_all(int fd, uint64_t off, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static void
octal(char *field, size_t width, uint64_t v)
{
	/* width - 1 digits and a NUL, as ustar wants */
	field[width - 1] = '\0';
	for (size_t i = width - 1; i-- > 0; v >>= 3)
		field[i] = (char)('0' + (v & 7));
}

bool
archive_name_ok(const char *name)
{
	size_t n = strlen(name);
	bool seg_start = true;

	if (n == 0 || n > ARCHIVE_NAME_MAX || name[n - 1] == '/')
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;

		if (c == '/') {
			if (seg_start)
				return false; /* leading '/' or "//" */
			seg_start = true;
			continue;
		}
		if (seg_start && c == '.')
			return false; /* ".", "..", hidden names */
		seg_start = false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '.' || c == '_' ||
			c == '-'))
			return false;
	}
	return true;
}

static void
header(char *h, const char *name, uint64_t size, int64_t mtime)
{
	unsigned sum = 0;

	memset(h, 0, BLOCK);
	memcpy(h, name, strlen(name));
	octal(h + 100, 8, 0644);
	octal(h + 108, 8, 0);
	octal(h + 116, 8, 0);
	if (size < (1ull << 33)) {
		octal(h + 124, 12, size);
	} else {
		/* the GNU/POSIX base-256 form for sizes of 8 GiB and more */
		h[124] = (char)0x80;
		for (int i = 0; i < 8; i++)
			h[135 - i] = (char)((size >> (8 * i)) & 0xff);
	}
	octal(h + 136, 12, (uint64_t)(mtime > 0 ? mtime : 0));
	h[156] = '0';
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memcpy(h + 265, "understudy", 10);
	memcpy(h + 297, "understudy", 10);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < BLOCK; i++)
		sum += (unsigned char)h[i];
	octal(h + 148, 7, sum);
	h[155] = ' ';
}

void
archive_writer_init(struct archive_writer *w, int fd, int64_t mtime)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->mtime = mtime;
}

int
archive_part_begin(
    struct archive_writer *w, const char *name, char *err, size_t errlen)
{
	char h[BLOCK];

	if (w->name[0] || !archive_name_ok(name)) {
		snprintf(err, errlen, "%s: %s", name,
		    w->name[0] ? "a part is already open"
			       : "not a name for a part");
		return -1;
	}
	header(h, name, 0, w->mtime);
	if (write_all(w->fd, w->off, h, BLOCK) != 0)
		return fail(err, errlen, "%s: %s", name);
	str_copy(w->name, name, sizeof(w->name));
	w->body = w->off + BLOCK;
	w->size = 0;
	crypto_hash_sha256_init(&w->sha);
	return 0;
}

int
archive_part_write(struct archive_writer *w, const void *data, size_t len,
    char *err, size_t errlen)
{
	if (w->name[0] == '\0') {
		snprintf(err, errlen, "no part is open");
		return -1;
	}
	if (w->size + len > ARCHIVE_PART_MAX) {
		snprintf(err, errlen, "%s: over %llu bytes", w->name,
		    (unsigned long long)ARCHIVE_PART_MAX);
		return -1;
	}
	if (write_all(w->fd, w->body + w->size, data, len) != 0)
		return fail(err, errlen, "%s: %s", w->name);
	crypto_hash_sha256_update(&w->sha, data, len);
	w->size += len;
	return 0;
}

void
archive_part_sha256(const struct archive_writer *w, unsigned char *sha)
{
	crypto_hash_sha256_state copy = w->sha;

	crypto_hash_sha256_final(&copy, sha);
}

int
archive_part_abort(struct archive_writer *w, char *err, size_t errlen)
{
	if (w->name[0] == '\0')
		return 0;
	w->name[0] = '\0';
	if (ftruncate(w->fd, (off_t)w->off) != 0)
		return fail(err, errlen, "%s: %s", "cutting a part");
	return 0;
}

int
archive_part_end(struct archive_writer *w, unsigned char *sha, uint64_t *size,
    char *err, size_t errlen)
{
	static const char zeros[BLOCK];
	char h[BLOCK];
	size_t pad = (size_t)((BLOCK - w->size % BLOCK) % BLOCK);

	if (w->name[0] == '\0') {
		snprintf(err, errlen, "no part is open");
		return -1;
	}
	if (pad && write_all(w->fd, w->body + w->size, zeros, pad) != 0)
		return fail(err, errlen, "%s: %s", w->name);
	header(h, w->name, w->size, w->mtime);
	if (write_all(w->fd, w->off, h, BLOCK) != 0)
		return fail(err, errlen, "%s: %s", w->name);
	crypto_hash_sha256_final(&w->sha, sha);
	if (size)
		*size = w->size;
	w->off = w->body + w->size + pad;
	w->name[0] = '\0';
	return 0;
}

int
archive_add(struct archive_writer *w, const char *name, const void *data,
    size_t len, unsigned char *sha, char *err, size_t errlen)
{
	if (archive_part_begin(w, name, err, errlen) != 0 ||
	    archive_part_write(w, data, len, err, errlen) != 0 ||
	    archive_part_end(w, sha, NULL, err, errlen) != 0)
		return -1;
	return 0;
}

int
archive_finish(struct archive_writer *w, char *err, size_t errlen)
{
	static const char zeros[2 * BLOCK];

	if (w->name[0]) {
		snprintf(err, errlen, "%s is still open", w->name);
		return -1;
	}
	if (write_all(w->fd, w->off, zeros, sizeof(zeros)) != 0)
		return fail(err, errlen, "%s: %s", "ending the archive");
	w->off += sizeof(zeros);
	return 0;
}

/* ---- reading ---- */

/* A numeric field: octal digits (spaces and NULs around), or base-256. */
static int
number(const unsigned char *f, size_t width, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -1; /* negative, or too big for us anyway */
		for (i = 1; i < width; i++) {
			if (v >> 56)
				return -1;
			v = (v << 8) | f[i];
		}
		*out = v;
		return 0;
	}
	while (i < width && f[i] == ' ')
		i++;
	if (i == width || f[i] < '0' || f[i] > '7')
		return -1;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return -1;
		v = (v << 3) | (uint64_t)(f[i] - '0');
	}
	for (; i < width; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -1;
	*out = v;
	return 0;
}

static bool
all_zero(const unsigned char *b)
{
	for (int i = 0; i < BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

/*
 * One header block: 1 with e filled, 0 for a zero block (the end), -1
 * with the reason in err.
 */
static int
parse_header(
    const unsigned char *h, struct archive_entry *e, char *err, size_t errlen)
{
	uint64_t sum, mine = 0;
	size_t n;

	if (all_zero(h))
		return 0;
	if (number(h + 148, 8, &sum) != 0) {
		snprintf(err, errlen, "a header's checksum field is garbled");
		return -1;
	}
	for (int i = 0; i < BLOCK; i++)
		mine += (i >= 148 && i < 156) ? ' ' : h[i];
	if (sum != mine) {
		snprintf(err, errlen,
		    "a header's checksum is wrong (says %llu, is %llu)",
		    (unsigned long long)sum, (unsigned long long)mine);
		return -1;
	}
	if (memcmp(h + 257, "ustar", 5) != 0) {
		snprintf(err, errlen, "a header is not ustar");
		return -1;
	}
	if (h[156] != '0' && h[156] != '\0') {
		snprintf(err, errlen,
		    "an entry is not a regular file (type %c)",
		    h[156] >= 32 && h[156] < 127 ? h[156] : '?');
		return -1;
	}
	if (h[345] != '\0') {
		snprintf(err, errlen, "an entry's name has a prefix");
		return -1;
	}
	n = strnlen((const char *)h, 100);
	if (n > ARCHIVE_NAME_MAX) {
		snprintf(err, errlen, "an entry's name is too long");
		return -1;
	}
	memcpy(e->name, h, n);
	e->name[n] = '\0';
	if (!archive_name_ok(e->name)) {
		snprintf(err, errlen, "entry '%.40s' has a name we never write",
		    e->name);
		return -1;
	}
	if (number(h + 124, 12, &e->size) != 0 || e->size > ARCHIVE_PART_MAX) {
		snprintf(err, errlen,
		    "%s: its size field is garbled or over "
		    "the cap",
		    e->name);
		return -1;
	}
	return 1;
}

static int
read_all(int fd, uint64_t off, void *data, size_t len)
{
	char *p = data;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int
archive_index_read(
    int fd, uint64_t size, struct archive_index *ix, char *err, size_t errlen)
{
	unsigned char h[BLOCK];
	struct archive_entry e;
	uint64_t off = 0;
	size_t alloc = 0;
	char why[200];
	int rc;

	memset(ix, 0, sizeof(*ix));
	for (;;) {
		if (off + BLOCK > size) {
			snprintf(err, errlen,
			    "the archive ends at byte %llu without its end "
			    "blocks (cut short?)",
			    (unsigned long long)size);
			return -1;
		}
		if (read_all(fd, off, h, BLOCK) != 0)
			return fail(
			    err, errlen, "%s: %s", "reading the archive");
		if ((rc = parse_header(h, &e, why, sizeof(why))) < 0) {
			snprintf(err, errlen, "at byte %llu: %s",
			    (unsigned long long)off, why);
			return -1;
		}
		if (rc == 0)
			break;
		e.offset = off + BLOCK;
		if (e.size > size - e.offset) {
			snprintf(err, errlen,
			    "%s: its %llu bytes go past the end of the archive",
			    e.name, (unsigned long long)e.size);
			return -1;
		}
		if (archive_index_find(ix, e.name)) {
			snprintf(
			    err, errlen, "%s is in the archive twice", e.name);
			return -1;
		}
		if (ix->n >= ARCHIVE_PARTS_MAX) {
			snprintf(err, errlen, "more than %d entries",
			    ARCHIVE_PARTS_MAX);
			return -1;
		}
		if (ix->n == alloc) {
			size_t na = alloc ? alloc * 2 : 8;
			struct archive_entry *v =
			    realloc(ix->v, na * sizeof(*v));

			if (v == NULL) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			ix->v = v;
			alloc = na;
		}
		ix->v[ix->n++] = e;
		off = e.offset + (e.size + BLOCK - 1) / BLOCK * BLOCK;
	}
	return 0;
}

void
archive_index_free(struct archive_index *ix)
{
	if (ix == NULL)
		return;
	free(ix->v);
	ix->v = NULL;
	ix->n = 0;
}

const struct archive_entry *
archive_index_find(const struct archive_index *ix, const char *name)
{
	for (size_t i = 0; i < ix->n; i++)
		if (strcmp(ix->v[i].name, name) == 0)
			return &ix->v[i];
	return NULL;
}

int
archive_sha256(int fd, uint64_t off, uint64_t len, int copy, unsigned char *sha,
    char *err, size_t errlen)
{
	crypto_hash_sha256_state st;
	uint64_t done = 0;
	char *chunk = malloc(COPY_CHUNK);
	int rc = -1;

	if (chunk == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	crypto_hash_sha256_init(&st);
	while (done < len) {
		size_t n =
		    len - done < COPY_CHUNK ? (size_t)(len - done) : COPY_CHUNK;

		if (read_all(fd, off + done, chunk, n) != 0) {
			fail(err, errlen, "%s: %s", "reading");
			goto out;
		}
		if (copy >= 0 && write_all(copy, done, chunk, n) != 0) {
			fail(err, errlen, "%s: %s", "copying");
			goto out;
		}
		crypto_hash_sha256_update(&st, (unsigned char *)chunk, n);
		done += n;
	}
	crypto_hash_sha256_final(&st, sha);
	rc = 0;
out:
	free(chunk);
	return rc;
}

void
archive_hex(const unsigned char *sha, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		hex[2 * i] = digits[sha[i] >> 4];
		hex[2 * i + 1] = digits[sha[i] & 15];
	}
	hex[64] = '\0';
}
