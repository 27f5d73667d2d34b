/*
 * The fence: one small process per running service, between the master
 * and the service (understudyd --fence). It starts the service's
 * command in a process group of its own and kills that group when
 *
 * - the deadline the master last gave (`until BOOT_MS WINDOW_MS`, on
 *   CLOCK_BOOTTIME) passes: SIGTERM at BOOT_MS - WINDOW_MS, SIGKILL at
 *   BOOT_MS. A post service therefore dies by its post's fencing
 *   deadline even while the master and the worker are frozen or hung;
 * - the master asks (`stop MS`: SIGTERM now, SIGKILL MS later);
 * - the master is gone (its pipe closes): nothing supervises the
 *   service any more, so it stops rather than run unseen.
 *
 * It tells the master "pid N" once the service runs and "exit N" or
 * "signal N" when it ends, then exits. It uses no loop library: one
 * poll() on the master's pipe, woken at least every 20 ms.
 */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

#define FENCE_TICK_MS 20

uint64_t
fence_boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
say(const char *fmt, long v)
{
	char line[64];
	int n = snprintf(line, sizeof(line), fmt, v);

	if (n > 0 && write(DAEMON_IPC_FD, line, (size_t)n) < 0) {
		/* the master is gone; the pipe's end tells the loop */
	}
}

static pid_t
fence_spawn(const char *command, const char *user)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	setpgid(0, 0);
	if (user) {
		struct passwd *pw = getpwnam(user);

		if (pw == NULL || initgroups(user, pw->pw_gid) != 0 ||
		    setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
			fprintf(stderr, "fence: cannot become user %s\n", user);
			_exit(126);
		}
	}
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	close(DAEMON_IPC_FD);
	execl("/bin/sh", "sh", "-c", command, (char *)NULL);
	_exit(127);
}

static void
handle_line(char *line, uint64_t *term_at, uint64_t *kill_at)
{
	unsigned long long a = 0, b = 0;
	uint64_t now = fence_boot_ms();

	if (sscanf(line, "until %llu %llu", &a, &b) == 2) {
		*term_at = a > b ? a - b : 0;
		*kill_at = a;
	} else if (sscanf(line, "stop %llu", &a) == 1) {
		if (*term_at == 0 || *term_at > now)
			*term_at = now;
		if (*kill_at == 0 || *kill_at > now + a)
			*kill_at = now + a;
	}
}

int
fence_main(const char *command, const char *user, long stop_ms)
{
	uint64_t term_at = 0, kill_at = 0;
	bool termed = false, killed = false, eof = false;
	char buf[4096];
	size_t have = 0;
	pid_t pid;
	int status;

	signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the master, which stops */
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if ((pid = fence_spawn(command, user)) < 0) {
		say("exit %ld\n", 127);
		return 1;
	}
	setpgid(pid, pid); /* also here: no race with the first kill */
	say("pid %ld\n", (long)pid);
	for (;;) {
		struct pollfd pf = {.fd = DAEMON_IPC_FD, .events = POLLIN};
		pid_t r = waitpid(pid, &status, WNOHANG);
		uint64_t now = fence_boot_ms();

		if (r == pid) {
			if (WIFSIGNALED(status))
				say("signal %ld\n", WTERMSIG(status));
			else
				say("exit %ld\n", WEXITSTATUS(status));
			/* whatever it left in its group goes with it */
			kill(-pid, SIGKILL);
			return 0;
		}
		if (kill_at && now >= kill_at && !killed) {
			kill(-pid, SIGKILL);
			killed = true;
		} else if (term_at && now >= term_at && !termed) {
			kill(-pid, SIGTERM);
			termed = true;
		}
		if (eof) {
			poll(NULL, 0, FENCE_TICK_MS);
			continue;
		}
		if (poll(&pf, 1, FENCE_TICK_MS) > 0) {
			ssize_t n = read(
			    DAEMON_IPC_FD, buf + have, sizeof(buf) - 1 - have);
			char *nl;

			if (n <= 0 && !(n < 0 && errno == EINTR)) {
				/* the master is gone */
				eof = true;
				term_at = now;
				if (kill_at == 0 ||
				    kill_at > now + (uint64_t)stop_ms)
					kill_at = now + (uint64_t)stop_ms;
				continue;
			}
			if (n < 0)
				continue;
			have += (size_t)n;
			buf[have] = '\0';
			while ((nl = strchr(buf, '\n')) != NULL) {
				*nl = '\0';
				handle_line(buf, &term_at, &kill_at);
				have -= (size_t)(nl + 1 - buf);
				memmove(buf, nl + 1, have + 1);
			}
			if (have == sizeof(buf) - 1)
				have = 0;
		}
	}
}
