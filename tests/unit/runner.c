/*
 * The unit test runner: runs every test of test-list.h (or those whose
 * name contains an argument), each in a child process with a time limit,
 * and ends with the line "N passed, N failed".
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define TEST_SECONDS 20

struct test {
	const char *name;
	void (*fn)(void);
};

static const struct test tests[] = {
#define X(name) {#name, test_##name},
#include "test-list.h"
#undef X
};

static int
run(const struct test *t)
{
	int status;
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		alarm(TEST_SECONDS);
		t->fn();
		exit(0);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "%s: killed by signal %d%s\n", t->name,
		    WTERMSIG(status),
		    WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
		return -1;
	}
	return WEXITSTATUS(status) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	unsigned passed = 0, failed = 0;

	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		bool want = argc < 2;

		for (int a = 1; a < argc; a++)
			if (strstr(tests[i].name, argv[a]))
				want = true;
		if (!want)
			continue;
		if (run(&tests[i]) == 0) {
			printf("ok     %s\n", tests[i].name);
			passed++;
		} else {
			printf("FAILED %s\n", tests[i].name);
			failed++;
		}
	}
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
