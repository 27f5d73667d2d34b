/* The archive's writer and its reader (a parser of untrusted files). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backup/backup.h"
#include "test.h"

static int
memfile(void)
{
	int fd = memfd_create("archive", 0);

	ASSERT(fd >= 0);
	return fd;
}

static uint64_t
size_of(int fd)
{
	return (uint64_t)lseek(fd, 0, SEEK_END);
}

/* a.txt (streamed in pieces), a dropped part, db/b.bin, then the end */
static int
sample(unsigned char *sha_a, unsigned char *sha_b)
{
	struct archive_writer w;
	char err[256], big[1500];
	unsigned char sha[32];
	uint64_t n = 0;
	int fd = memfile();

	memset(big, 'x', sizeof(big));
	archive_writer_init(&w, fd, 1700000000);
	ASSERT(archive_part_begin(&w, "a.txt", err, sizeof(err)) == 0);
	ASSERT(archive_part_write(&w, "hello ", 6, err, sizeof(err)) == 0);
	ASSERT(archive_part_write(&w, "world", 5, err, sizeof(err)) == 0);
	ASSERT(archive_part_end(&w, sha_a, &n, err, sizeof(err)) == 0);
	ASSERT_INT(n, 11);
	/* a server that failed half way leaves nothing */
	ASSERT(archive_part_begin(&w, "db/gone.sqlite", err, sizeof(err)) == 0);
	ASSERT(archive_part_write(&w, big, sizeof(big), err, sizeof(err)) == 0);
	ASSERT(archive_part_abort(&w, err, sizeof(err)) == 0);
	ASSERT(archive_add(&w, "db/b.bin", big, sizeof(big), sha_b, err,
		   sizeof(err)) == 0);
	ASSERT(archive_finish(&w, err, sizeof(err)) == 0);
	(void)sha;
	return fd;
}

TEST(archive_roundtrip)
{
	unsigned char sha_a[32], sha_b[32], sha[32];
	struct archive_index ix;
	const struct archive_entry *e;
	char err[256], hex[65], want[65];
	int fd = sample(sha_a, sha_b);

	/* headers, 11 bytes padded, header, 1500 padded, two end blocks */
	ASSERT_INT(size_of(fd), 512 + 512 + 512 + 1536 + 1024);
	ASSERT(archive_index_read(fd, size_of(fd), &ix, err, sizeof(err)) == 0);
	ASSERT_INT(ix.n, 2);
	ASSERT_STR(ix.v[0].name, "a.txt");
	ASSERT_STR(ix.v[1].name, "db/b.bin");
	ASSERT(archive_index_find(&ix, "db/gone.sqlite") == NULL);
	e = archive_index_find(&ix, "a.txt");
	ASSERT_INT(e->size, 11);
	ASSERT(archive_sha256(
		   fd, e->offset, e->size, -1, sha, err, sizeof(err)) == 0);
	ASSERT(memcmp(sha, sha_a, 32) == 0);
	archive_hex(sha, hex);
	/* sha256("hello world") */
	str_copy(want,
	    "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
	    sizeof(want));
	ASSERT_STR(hex, want);
	e = archive_index_find(&ix, "db/b.bin");
	ASSERT_INT(e->size, 1500);
	ASSERT(archive_sha256(
		   fd, e->offset, e->size, -1, sha, err, sizeof(err)) == 0);
	ASSERT(memcmp(sha, sha_b, 32) == 0);
	archive_index_free(&ix);
	archive_index_free(&ix); /* twice is harmless */
	close(fd);
}

static void
poke(int fd, off_t off, char c)
{
	ASSERT(pwrite(fd, &c, 1, off) == 1);
}

static void
refused(int fd, uint64_t size, const char *why)
{
	struct archive_index ix;
	char err[256];

	ASSERT(archive_index_read(fd, size, &ix, err, sizeof(err)) == -1);
	if (strstr(err, why) == NULL) {
		fprintf(stderr, "error '%s' lacks '%s'\n", err, why);
		exit(1);
	}
	archive_index_free(&ix);
}

TEST(archive_refusals)
{
	unsigned char a[32], b[32];
	struct archive_writer w;
	char err[256];
	int fd;

	/* a flipped byte in a header: its checksum */
	fd = sample(a, b);
	poke(fd, 3, 'X');
	refused(fd, size_of(fd), "checksum is wrong");
	close(fd);
	/* cut short: no end blocks */
	fd = sample(a, b);
	refused(fd, size_of(fd) - 1024, "without its end blocks");
	/* a body past the end */
	refused(fd, 512 + 512 + 512 + 100, "past the end");
	close(fd);
	/* names we never write */
	ASSERT(!archive_name_ok("../etc/passwd"));
	ASSERT(!archive_name_ok("/abs"));
	ASSERT(!archive_name_ok("db//x"));
	ASSERT(!archive_name_ok("db/.hidden"));
	ASSERT(!archive_name_ok(""));
	ASSERT(!archive_name_ok("a b"));
	ASSERT(archive_name_ok("db/PA1.sqlite"));
	fd = memfile();
	archive_writer_init(&w, fd, 0);
	ASSERT(archive_part_begin(&w, "../x", err, sizeof(err)) == -1);
	/* the same name twice */
	ASSERT(archive_add(&w, "x", "1", 1, a, err, sizeof(err)) == 0);
	ASSERT(archive_add(&w, "x", "2", 1, a, err, sizeof(err)) == 0);
	ASSERT(archive_finish(&w, err, sizeof(err)) == 0);
	refused(fd, size_of(fd), "twice");
	close(fd);
	/* not a tar at all */
	fd = memfile();
	for (int i = 0; i < 2048; i++)
		poke(fd, i, (char)('a' + i % 26));
	refused(fd, size_of(fd), "checksum");
	close(fd);
}

/* A snapshot of a real etcd 3.4 at revision 5 (the fuzz corpus's seed). */
TEST(snapshot_sample)
{
	char err[256], want[65], got[65];
	int64_t rev = 0;
	int fd = open(SNAPSHOT_SAMPLE, O_RDONLY), copy = memfile();
	uint64_t size;
	unsigned char sha[32];

	ASSERT(fd >= 0);
	size = size_of(fd);
	ASSERT(snapshot_revision(fd, size, &rev, err, sizeof(err)) == 0);
	ASSERT_INT(rev, 5);
	ASSERT_INT(
	    snapshot_hash_check(fd, size, want, got, err, sizeof(err)), 1);
	ASSERT_STR(want, got);
	/* one flipped byte: its own hash says so */
	ASSERT(archive_sha256(fd, 0, size, copy, sha, err, sizeof(err)) == 0);
	poke(copy, 5000, 0x5a);
	ASSERT_INT(
	    snapshot_hash_check(copy, size, want, got, err, sizeof(err)), 0);
	/* not a snapshot */
	ASSERT(snapshot_revision(copy, 100, &rev, err, sizeof(err)) == -1);
	ASSERT(strstr(err, "not an etcd snapshot") != NULL);
	close(fd);
	close(copy);
}
