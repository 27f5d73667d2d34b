/* understudy passwd: an argon2id hash for a [user NAME] password. */
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"

static int
read_password(const char *prompt, char *buf, size_t len)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO);
	size_t n;

	if (tty) {
		fprintf(stderr, "%s", prompt);
		tcgetattr(STDIN_FILENO, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	if (fgets(buf, (int)len, stdin) == NULL)
		buf[0] = '\0';
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return n ? 0 : -1;
}

int
cli_passwd_hash(const char *cmd, char *hash, size_t len)
{
	char pw[256], again[256];
	int rc = -1;

	if (len < crypto_pwhash_STRBYTES)
		return -1;
	if (read_password("password: ", pw, sizeof(pw)) != 0) {
		fprintf(stderr, "understudy %s: empty password\n", cmd);
		goto out;
	}
	if (isatty(STDIN_FILENO) &&
	    (read_password("again: ", again, sizeof(again)) != 0 ||
		strcmp(pw, again) != 0)) {
		fprintf(stderr, "understudy %s: passwords differ\n", cmd);
		goto out;
	}
	if (crypto_pwhash_str_alg(hash, pw, strlen(pw),
		crypto_pwhash_OPSLIMIT_INTERACTIVE,
		crypto_pwhash_MEMLIMIT_INTERACTIVE,
		crypto_pwhash_ALG_ARGON2ID13) != 0) {
		fprintf(stderr, "understudy %s: out of memory\n", cmd);
		goto out;
	}
	rc = 0;
out:
	sodium_memzero(pw, sizeof(pw));
	sodium_memzero(again, sizeof(again));
	return rc;
}

int
cli_passwd(int argc, char **argv)
{
	char hash[crypto_pwhash_STRBYTES];

	if (cli_wants_help(argc, argv) || argc > 1) {
		fprintf(
		    argc > 1 && !cli_wants_help(argc, argv) ? stderr : stdout,
		    "usage: understudy passwd\n\n"
		    "Reads a password (twice on a terminal, once from a pipe) "
		    "and\n"
		    "prints its argon2id hash for 'password =' in a [user "
		    "NAME]\n"
		    "section. The password itself is never stored. To add a "
		    "user\n"
		    "or change a password in the cluster, see understudy "
		    "user.\n");
		return cli_wants_help(argc, argv) ? 0 : 2;
	}
	if (cli_passwd_hash("passwd", hash, sizeof(hash)) != 0)
		return 1;
	printf("%s\n", hash);
	return 0;
}
