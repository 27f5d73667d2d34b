/* understudy: the operator's command line. */
#include <string.h>

#include <curl/curl.h>
#include <sodium.h>

#include "cli.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy COMMAND [ARGS]\n"
	    "\n"
	    "  config check [--print] [--json] FILE\n"
	    "                      check a cluster config; print every "
	    "problem\n"
	    "  config doc          print the option reference (Markdown)\n"
	    "  config apply FILE   store FILE as the cluster's next "
	    "configuration version\n"
	    "  config history|show|diff|rollback\n"
	    "                      the versions in effect before, and back "
	    "to one\n"
	    "  up [CONFIG]         run the cluster of CONFIG on this machine\n"
	    "                      (default examples/contact-center.conf)\n"
	    "  status              servers, posts and ports, as a server sees "
	    "them\n"
	    "  stop NAME|--all     hand a server's posts to their covers; keep "
	    "it\n"
	    "                      stopped until started\n"
	    "  start NAME|--all    let a stopped server serve again\n"
	    "  failback NAME       move a covered post back to its home now\n"
	    "  records             call records: table, --json or --csv\n"
	    "  timeline            failovers, failbacks, fences and "
	    "restarts,\n"
	    "                      with their durations\n"
	    "  check [--last]      the daily maintenance check of every "
	    "server\n"
	    "  service list | restart|stop|start|reset NAME [--server S]\n"
	    "                      the services of [service] sections\n"
	    "  user add NAME [--groups G] | passwd NAME | del NAME\n"
	    "                      change the cluster's users: a new "
	    "config\n"
	    "                      version, the password hashed here\n"
	    "  passwd              print an argon2id hash for a [user] "
	    "password\n"
	    "  backup [--to FILE]  one archive of the whole cluster, taken "
	    "while it\n"
	    "                      serves\n"
	    "  backup verify FILE  every checksum, then a restore test\n"
	    "  backup status       the scheduled backups: today's, the last, "
	    "the kept\n"
	    "  restore FILE        put an archive back for understudy up\n"
	    "\n"
	    "Every command takes --help. Exit status: 0 done, 1 failed or\n"
	    "problems found, 2 bad usage.\n");
}

bool
cli_wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 ||
		    strcmp(argv[i], "--help") == 0)
			return true;
	return false;
}

int
main(int argc, char **argv)
{
	int rc;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("understudy %s\n", US_VERSION);
		return 0;
	}
	if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fprintf(stderr, "understudy: cannot initialise libraries\n");
		return 1;
	}
	if (strcmp(argv[1], "config") == 0)
		rc = cli_config(argc - 1, argv + 1);
	else if (strcmp(argv[1], "up") == 0)
		rc = cli_up(argc - 1, argv + 1);
	else if (strcmp(argv[1], "status") == 0)
		rc = cli_status(argc - 1, argv + 1);
	else if (strcmp(argv[1], "service") == 0)
		rc = cli_services(argc - 1, argv + 1);
	else if (strcmp(argv[1], "records") == 0)
		rc = cli_records(argc - 1, argv + 1);
	else if (strcmp(argv[1], "timeline") == 0)
		rc = cli_timeline(argc - 1, argv + 1);
	else if (strcmp(argv[1], "check") == 0)
		rc = cli_check(argc - 1, argv + 1);
	else if (strcmp(argv[1], "user") == 0)
		rc = cli_users(argc - 1, argv + 1);
	else if (strcmp(argv[1], "backup") == 0)
		rc = cli_backup(argc - 1, argv + 1);
	else if (strcmp(argv[1], "restore") == 0)
		rc = cli_restore(argc - 1, argv + 1);
	else if (strcmp(argv[1], "passwd") == 0)
		rc = cli_passwd(argc - 1, argv + 1);
	else if (strcmp(argv[1], "stop") == 0 ||
	    strcmp(argv[1], "start") == 0 || strcmp(argv[1], "failback") == 0)
		rc = cli_control(argc - 1, argv + 1);
	else {
		fprintf(
		    stderr, "understudy: unknown command '%s'\n\n", argv[1]);
		usage(stderr);
		rc = 2;
	}
	curl_global_cleanup();
	return rc;
}
