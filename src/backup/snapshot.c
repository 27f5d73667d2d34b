/*
 * What an etcd snapshot says about itself. The snapshot API streams no
 * revision, so it is read from the file: a bbolt database (pages of
 * page_size bytes; two meta pages, the newer valid one naming the root
 * bucket) followed by the sha256 of everything before it. etcd's
 * revisions are the keys of its "key" bucket (8 bytes big-endian main
 * revision, '_', 8 bytes sub revision, and a 't' for a deletion): the
 * newest is the last key. Everything read is untrusted: page numbers,
 * element counts and offsets are checked against what was read, and the
 * depth of the tree is capped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup.h"

#define BOLT_MAGIC 0xED0CDAEDu
#define BOLT_BRANCH 0x01
#define BOLT_LEAF 0x02
#define BOLT_META 0x04
#define BOLT_BUCKET_FLAG 0x01
#define BOLT_PAGE_HEADER 16
#define BOLT_ELEMENT 16
#define BOLT_DEPTH_MAX 32
#define BOLT_PAGE_READ_MAX (64u * 1024 * 1024)

struct bolt {
	int fd;
	uint64_t size; /* of the bbolt part */
	uint32_t page_size;
	char *err;
	size_t errlen;
};

/* A page, or the inline page of a bucket, in memory. */
struct page {
	const unsigned char *p;
	size_t len;
	unsigned char *owned; /* what to free, or NULL */
};

static uint16_t
le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint64_t
be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static int
bad(struct bolt *b, const char *why)
{
	snprintf(b->err, b->errlen, "not an etcd snapshot: %s", why);
	return -1;
}

static int
read_at(int fd, uint64_t off, void *data, size_t len)
{
	char *p = data;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* FNV-1a 64, bbolt's checksum of a meta page. */
static uint64_t
fnv64a(const unsigned char *p, size_t n)
{
	uint64_t h = 14695981039346656037ull;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void
page_free(struct page *pg)
{
	free(pg->owned);
	memset(pg, 0, sizeof(*pg));
}

/* Read page id (with its overflow pages) into pg. */
static int
page_read(struct bolt *b, uint64_t id, struct page *pg)
{
	unsigned char h[BOLT_PAGE_HEADER];
	uint64_t off, len;

	memset(pg, 0, sizeof(*pg));
	if (id < 2 || id > b->size / b->page_size)
		return bad(b, "a page number is outside the file");
	off = id * b->page_size;
	if (off + b->page_size > b->size || read_at(b->fd, off, h, sizeof(h)))
		return bad(b, "a page is cut short");
	if (le64(h) != id)
		return bad(b, "a page does not carry its own number");
	len = ((uint64_t)le32(h + 12) + 1) * b->page_size;
	if (len > BOLT_PAGE_READ_MAX || off + len > b->size)
		return bad(b, "a page's overflow goes past the end");
	if ((pg->owned = malloc((size_t)len)) == NULL) {
		snprintf(b->err, b->errlen, "out of memory");
		return -1;
	}
	if (read_at(b->fd, off, pg->owned, (size_t)len) != 0) {
		page_free(pg);
		return bad(b, "a page cannot be read");
	}
	pg->p = pg->owned;
	pg->len = (size_t)len;
	return 0;
}

/*
 * Element i of pg: its key (and for a leaf its value and flags; for a
 * branch the child page in *child). Positions are relative to the
 * element, as bbolt writes them.
 */
static int
element(struct bolt *b, const struct page *pg, unsigned i,
    const unsigned char **key, uint32_t *klen, const unsigned char **val,
    uint32_t *vlen, uint32_t *flags, uint64_t *child)
{
	size_t at = BOLT_PAGE_HEADER + (size_t)i * BOLT_ELEMENT;
	const unsigned char *e;
	uint64_t pos, end;

	if (at + BOLT_ELEMENT > pg->len)
		return bad(b, "an element lies outside its page");
	e = pg->p + at;
	if (le16(pg->p + 8) & BOLT_BRANCH) {
		pos = le32(e);
		*klen = le32(e + 4);
		*child = le64(e + 8);
		*vlen = 0;
		*flags = 0;
	} else {
		*flags = le32(e);
		pos = le32(e + 4);
		*klen = le32(e + 8);
		*vlen = le32(e + 12);
	}
	end = at + pos + *klen + *vlen;
	if (end > pg->len)
		return bad(b, "a key or value lies outside its page");
	*key = e + pos;
	*val = e + pos + *klen;
	return 0;
}

static int
keycmp(const unsigned char *a, size_t alen, const char *bkey)
{
	size_t blen = strlen(bkey), n = alen < blen ? alen : blen;
	int c = memcmp(a, bkey, n);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/*
 * The value of key name in the tree rooted at pg (a bucket), copied
 * into *out (malloc'd, *outlen bytes) with its flags; 1 when found, 0
 * when not, -1 on a bad file. pg is consumed (freed).
 */
static int
lookup(struct bolt *b, struct page *pg, const char *name, unsigned char **out,
    size_t *outlen, uint32_t *oflags)
{
	const unsigned char *k, *v;
	uint32_t kl, vl, fl;
	uint64_t child = 0;
	int depth = 0, rc = -1;

	for (;;) {
		uint16_t fl_page, count;

		if (pg->len < BOLT_PAGE_HEADER) {
			bad(b, "a page is shorter than its header");
			break;
		}
		fl_page = le16(pg->p + 8);
		count = le16(pg->p + 10);
		if (fl_page & BOLT_LEAF) {
			rc = 0;
			for (unsigned i = 0; i < count; i++) {
				if (element(b, pg, i, &k, &kl, &v, &vl, &fl,
					&child) != 0) {
					rc = -1;
					break;
				}
				if (keycmp(k, kl, name) != 0)
					continue;
				if ((*out = malloc(vl ? vl : 1)) == NULL) {
					rc = -1;
					break;
				}
				memcpy(*out, v, vl);
				*outlen = vl;
				*oflags = fl;
				rc = 1;
				break;
			}
			break;
		}
		if (!(fl_page & BOLT_BRANCH) || count == 0 ||
		    ++depth > BOLT_DEPTH_MAX) {
			bad(b,
			    "a tree page is neither branch nor leaf, or "
			    "too deep");
			break;
		}
		/* the last element whose key is not after name */
		uint64_t next = 0;

		for (unsigned i = 0; i < count; i++) {
			if (element(b, pg, i, &k, &kl, &v, &vl, &fl, &child) !=
			    0) {
				page_free(pg);
				return -1;
			}
			if (i > 0 && keycmp(k, kl, name) > 0)
				break;
			next = child;
		}
		page_free(pg);
		if (page_read(b, next, pg) != 0)
			return -1;
	}
	page_free(pg);
	return rc;
}

/* The root page of a bucket, from its value (header and inline page). */
static int
bucket_root(struct bolt *b, unsigned char *val, size_t len, struct page *pg)
{
	uint64_t root;

	memset(pg, 0, sizeof(*pg));
	if (len < 16) {
		free(val);
		return bad(b, "a bucket's header is cut short");
	}
	root = le64(val);
	if (root != 0) {
		free(val);
		return page_read(b, root, pg);
	}
	/* an inline bucket: its page follows the header in the value */
	pg->owned = val;
	pg->p = val + 16;
	pg->len = len - 16;
	return 0;
}

/* The last key of the tree at pg (consumed): *klen 0 when empty. */
static int
last_key(struct bolt *b, struct page *pg, unsigned char *key, size_t keymax,
    size_t *klen)
{
	const unsigned char *k, *v;
	uint32_t kl, vl, fl;
	uint64_t child = 0;
	int depth = 0;

	*klen = 0;
	for (;;) {
		uint16_t count;

		if (pg->len < BOLT_PAGE_HEADER)
			break;
		count = le16(pg->p + 10);
		if (count == 0)
			break;
		if (element(b, pg, count - 1u, &k, &kl, &v, &vl, &fl, &child) !=
		    0) {
			page_free(pg);
			return -1;
		}
		if (le16(pg->p + 8) & BOLT_LEAF) {
			*klen = kl < keymax ? kl : keymax;
			memcpy(key, k, *klen);
			break;
		}
		if (!(le16(pg->p + 8) & BOLT_BRANCH) ||
		    ++depth > BOLT_DEPTH_MAX) {
			page_free(pg);
			return bad(b,
			    "a tree page is neither branch nor leaf, "
			    "or too deep");
		}
		page_free(pg);
		if (page_read(b, child, pg) != 0)
			return -1;
	}
	page_free(pg);
	return 0;
}

/* The valid meta page with the newest transaction: its root bucket page. */
static int
meta(struct bolt *b, uint64_t *root)
{
	unsigned char m[2][BOLT_PAGE_HEADER + 64];
	uint64_t best_tx = 0;
	bool found = false;

	if (b->size < sizeof(m[0]) ||
	    read_at(b->fd, 0, m[0], sizeof(m[0])) != 0)
		return bad(b, "too short");
	b->page_size = le32(m[0] + BOLT_PAGE_HEADER + 8);
	if (b->page_size < 512 || b->page_size > 65536 ||
	    (b->page_size & (b->page_size - 1)) != 0)
		return bad(b, "no page size in its first meta page");
	if (b->size < 2ull * b->page_size ||
	    read_at(b->fd, b->page_size, m[1], sizeof(m[1])) != 0)
		return bad(b, "too short for two meta pages");
	for (int i = 0; i < 2; i++) {
		const unsigned char *mt = m[i] + BOLT_PAGE_HEADER;

		if (!(le16(m[i] + 8) & BOLT_META) || le32(mt) != BOLT_MAGIC ||
		    le32(mt + 4) != 2 || le32(mt + 8) != b->page_size ||
		    fnv64a(mt, 56) != le64(mt + 56))
			continue;
		if (!found || le64(mt + 48) > best_tx) {
			best_tx = le64(mt + 48);
			*root = le64(mt + 16);
			found = true;
		}
	}
	return found ? 0 : bad(b, "no valid meta page");
}

/* A bucket of the root bucket, by name: 1 with its root page, 0 absent. */
static int
bucket(struct bolt *b, uint64_t root, const char *name, struct page *pg)
{
	unsigned char *val = NULL;
	size_t len = 0;
	uint32_t flags = 0;
	struct page top;
	int rc;

	if (page_read(b, root, &top) != 0)
		return -1;
	if ((rc = lookup(b, &top, name, &val, &len, &flags)) <= 0)
		return rc;
	if (!(flags & BOLT_BUCKET_FLAG)) {
		free(val);
		return bad(b, "a bucket's entry is not a bucket");
	}
	return bucket_root(b, val, len, pg) == 0 ? 1 : -1;
}

int
snapshot_revision(int fd, uint64_t size, int64_t *rev, char *err, size_t errlen)
{
	struct bolt b = {fd, size, 0, err, errlen};
	unsigned char key[32], *val = NULL;
	uint64_t root = 0, r = 0;
	size_t klen = 0, vlen = 0;
	uint32_t flags;
	struct page pg;
	int rc;

	/* with its hash the file is pages plus 32 bytes */
	if (size % 512 == SNAPSHOT_HASH_LEN)
		b.size = size - SNAPSHOT_HASH_LEN;
	if (meta(&b, &root) != 0)
		return -1;
	if ((rc = bucket(&b, root, "key", &pg)) < 0)
		return -1;
	if (rc == 0)
		return bad(&b, "it has no \"key\" bucket");
	if (last_key(&b, &pg, key, sizeof(key), &klen) != 0)
		return -1;
	if (klen != 0) {
		if ((klen != 17 && klen != 18) || key[8] != '_')
			return bad(&b,
			    "a key of the \"key\" bucket is not a "
			    "revision");
		r = be64(key);
	}
	/* a compaction may have removed the newest revision's key */
	if ((rc = bucket(&b, root, "meta", &pg)) < 0)
		return -1;
	if (rc == 1) {
		rc = lookup(&b, &pg, "finishedCompactRev", &val, &vlen, &flags);
		if (rc < 0)
			return -1;
		if (rc == 1 && vlen >= 8 && be64(val) > r)
			r = be64(val);
		free(val);
	}
	if (r > INT64_MAX)
		return bad(&b, "a revision is out of range");
	*rev = r ? (int64_t)r : 1;
	return 0;
}

int
snapshot_hash_check(
    int fd, uint64_t size, char *want, char *got, char *err, size_t errlen)
{
	unsigned char tail[SNAPSHOT_HASH_LEN], sha[32];

	want[0] = got[0] = '\0';
	if (size <= SNAPSHOT_HASH_LEN) {
		snprintf(err, errlen, "too short to carry its hash");
		return -1;
	}
	if (read_at(fd, size - SNAPSHOT_HASH_LEN, tail, sizeof(tail)) != 0) {
		snprintf(
		    err, errlen, "cannot read its hash: %s", strerror(errno));
		return -1;
	}
	if (archive_sha256(
		fd, 0, size - SNAPSHOT_HASH_LEN, -1, sha, err, errlen) != 0)
		return -1;
	archive_hex(tail, want);
	archive_hex(sha, got);
	return memcmp(tail, sha, 32) == 0 ? 1 : 0;
}
