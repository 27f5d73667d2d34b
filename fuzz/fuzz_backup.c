/*
 * libFuzzer target: the files a backup reads back. The input, as a file,
 * goes through the archive's reader (tar headers, names, sizes, counts)
 * and through the etcd snapshot's reader (bbolt pages, its revision and
 * its own hash): each must refuse with a reason or give values within
 * their caps, never read outside the file.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backup/backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	struct archive_index ix;
	char err[512], want[65], got[65];
	int64_t rev = 0;

	if (fd < 0 && (fd = memfd_create("fuzz", 0)) < 0)
		__builtin_trap();
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		__builtin_trap();
	err[0] = '\0';
	if (archive_index_read(fd, size, &ix, err, sizeof(err)) == 0) {
		if (ix.n > ARCHIVE_PARTS_MAX)
			__builtin_trap();
		for (size_t i = 0; i < ix.n; i++)
			if (ix.v[i].offset + ix.v[i].size > size ||
			    !archive_name_ok(ix.v[i].name))
				__builtin_trap();
	} else if (err[0] == '\0') {
		__builtin_trap();
	}
	archive_index_free(&ix);
	err[0] = '\0';
	if (snapshot_revision(fd, size, &rev, err, sizeof(err)) == 0) {
		if (rev < 1)
			__builtin_trap();
	} else if (err[0] == '\0') {
		__builtin_trap();
	}
	snapshot_hash_check(fd, size, want, got, err, sizeof(err));
	return 0;
}
