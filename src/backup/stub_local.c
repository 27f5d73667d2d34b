#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include "backup/backup.h"
int backup_take(const struct backup_target *t, const char *path,
    backup_progress_fn fn, void *arg, json_t **manifest, char *err, size_t errlen)
{
	char tmp[4200]; int fd; (void)t;(void)fn;(void)arg;
	*manifest = json_object();
	snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, getpid());
	fd = open(tmp, O_CREAT|O_WRONLY|O_TRUNC, 0644);
	if (fd < 0) { snprintf(err, errlen, "%s", tmp); return -1; }
	if (write(fd, "x", 1) != 1) {}
	sleep(1);
	close(fd);
	if (link(tmp, path) != 0) { int e = errno; unlink(tmp); snprintf(err, errlen, "exists"); errno = e; return -1; }
	unlink(tmp);
	return 0;
}
int backup_verify(const char *path, const char *scratch, json_t **report, char *err, size_t errlen)
{ (void)path;(void)scratch;(void)err;(void)errlen; *report = json_object(); sleep(1); return 0; }
