/*
 * understudyd: a master process that runs one worker and watches it
 * (master.c), and the worker with the single libuv loop (worker.c).
 *
 * Master and worker talk over a pipe on the worker's fd 3, one line per
 * message: the master sends "ping", the worker answers "pong" from its
 * loop, and tells "lease ID" (hex, 0 for none) whenever it changes.
 */
#ifndef US_DAEMON_H
#define US_DAEMON_H

#include "common/common.h"

#define DAEMON_IPC_FD 3

struct daemon_args {
	const char *config_path;
	const char *server;
	const char *log_level;
	const char *state_dir; /* the database's directory */
	bool restarted; /* a worker the master started again after a death */
	struct config *cfg;
	const struct config_server *self;
};

/* master.c */

/*
 * Run the master until it is told to stop (SIGTERM, SIGINT) or gives up
 * on a worker that keeps dying. Returns the process exit status.
 */
int master_main(const struct daemon_args *a);

/* How long a worker may leave a ping unanswered before it is killed. */
unsigned master_hang_limit_ms(unsigned lease_ttl);

/* worker.c */

/* Run the worker until it stops. Returns the process exit status. */
int worker_main(const struct daemon_args *a);

#endif
