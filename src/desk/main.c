/*
 * understudy-desk: the desk program on libunderstudy. A line-oriented
 * prompt (commands from the terminal, or from stdin when it is not one)
 * that prints what happens: state changes, channel messages, server
 * events, and the result of each command. --json prints one JSON object
 * per line, for programs and tests.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "understudy/understudy.h"

#define LINE_MAX_LEN 8192

static bool as_json;

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy-desk --profile DIR --desk ID --server URL "
	    "[--server URL ...]\n"
	    "                       [--ca FILE] [--version V] [--json]\n"
	    "\n"
	    "An understudy desk. Commands, one per line:\n"
	    "  login USER PASSWORD   log in (locally when no server answers,\n"
	    "                        for a user who logged in online here "
	    "before)\n"
	    "  resume                go on with the session of the last run "
	    "(no password)\n"
	    "  logout\n"
	    "  channels              the channels, joined or not, and their "
	    "state\n"
	    "  join CHANNEL          join (online only)\n"
	    "  leave CHANNEL\n"
	    "  send CHANNEL TEXT     send to a joined channel (queued while "
	    "offline)\n"
	    "  status                online or offline, server, messaging, "
	    "outbox\n"
	    "  quit\n"
	    "\n"
	    "  --profile DIR  the desk's state: sessions, channels, outbox\n"
	    "  --desk ID      this desk's name (letters, digits, . _ -)\n"
	    "  --server URL   a server's API (http://127.0.0.1:8001, or "
	    "https://...),\n"
	    "                 or its desk_port where it has one; the first "
	    "that\n"
	    "                 answers is used, in order\n"
	    "  --ca FILE      the CA (PEM) that https:// servers are verified "
	    "with\n"
	    "                 (default the system's CAs); a server that "
	    "fails the\n"
	    "                 check is never spoken to\n"
	    "  --version V    the version to announce (default the "
	    "library's)\n"
	    "  --json         one JSON object per line\n");
}

static void
out_json(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);

	printf("%s\n", s ? s : "{}");
	free(s);
	json_decref(o);
	fflush(stdout);
}

static void
result(const char *cmd, int rc, us_desk *d, const char *detail)
{
	(void)d;
	if (as_json) {
		json_t *o = json_pack("{s:s,s:s,s:b}", "event", "result",
		    "command", cmd, "ok", rc == 0);

		if (rc) {
			json_object_set_new(
			    o, "error", json_string(us_err_name(rc)));
			json_object_set_new(o, "message",
			    json_string(
				detail && *detail ? detail : us_strerror(rc)));
		}
		out_json(o);
		return;
	}
	if (rc == 0)
		printf("ok %s\n", cmd);
	else
		printf("error %s: %s: %s\n", cmd, us_err_name(rc),
		    detail && *detail ? detail : us_strerror(rc));
	fflush(stdout);
}

static void
show_event(const struct us_event *ev)
{
	static const char *const names[] = {
	    "state", "message", "server", "notice"};

	if (as_json) {
		json_t *o = json_pack("{s:s}", "event", names[ev->type]);

		if (ev->kind[0])
			json_object_set_new(o, "kind", json_string(ev->kind));
		if (ev->type == US_EV_MESSAGE) {
			json_object_set_new(
			    o, "channel", json_string(ev->channel));
			json_object_set_new(o, "from", json_string(ev->from));
			json_object_set_new(o, "id", json_string(ev->id));
			json_object_set_new(
			    o, "seq", json_integer((json_int_t)ev->seq));
		}
		json_object_set_new(o, "text", json_string(ev->text));
		out_json(o);
		return;
	}
	switch (ev->type) {
	case US_EV_STATE:
		printf("state %s\n", ev->text);
		break;
	case US_EV_MESSAGE:
		printf("[%s] %s: %s\n", ev->channel, ev->from, ev->text);
		break;
	case US_EV_SERVER:
		printf("server %s %s\n", ev->kind, ev->text);
		break;
	default:
		printf("notice %s: %s\n", ev->kind, ev->text);
	}
	fflush(stdout);
}

static bool
command(us_desk *d, char *line)
{
	char *cmd = strtok(line, " \t"), *a1, *rest;
	int rc;

	if (cmd == NULL)
		return true;
	a1 = strtok(NULL, " \t");
	rest = a1 ? strtok(NULL, "") : NULL;
	if (strcmp(cmd, "quit") == 0 || strcmp(cmd, "exit") == 0)
		return false;
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return true;
	}
	if (strcmp(cmd, "login") == 0 && a1 && rest) {
		rc = us_login(d, a1, rest);
		result("login", rc, d, us_desk_why(d));
	} else if (strcmp(cmd, "resume") == 0) {
		rc = us_resume(d);
		result("resume", rc, d, us_desk_why(d));
	} else if (strcmp(cmd, "logout") == 0) {
		result("logout", us_logout(d), d, NULL);
	} else if (strcmp(cmd, "channels") == 0) {
		char *j = NULL;

		rc = us_channels(d, &j);
		if (rc == 0 && as_json) {
			json_t *o = json_pack("{s:s,s:s,s:b,s:o}", "event",
			    "result", "command", "channels", "ok", 1,
			    "channels", json_loads(j, 0, NULL));

			out_json(o);
		} else if (rc == 0) {
			json_t *arr = json_loads(j, 0, NULL), *c;
			size_t i;

			json_array_foreach (arr, i, c)
				printf("%-16s %-7s %s\n",
				    json_string_value(
					json_object_get(c, "name")),
				    json_is_true(json_object_get(c, "joined"))
					? "joined"
					: "-",
				    json_string_value(
					json_object_get(c, "state")));
			json_decref(arr);
			fflush(stdout);
		} else {
			result("channels", rc, d, NULL);
		}
		free(j);
	} else if ((strcmp(cmd, "join") == 0 || strcmp(cmd, "leave") == 0) &&
	    a1) {
		rc = cmd[0] == 'j' ? us_join(d, a1) : us_leave(d, a1);
		result(cmd, rc, d, rc ? us_desk_why(d) : NULL);
	} else if (strcmp(cmd, "send") == 0 && a1 && rest) {
		rc = us_send(d, a1, rest);
		result("send", rc, d, rc ? us_desk_why(d) : NULL);
	} else if (strcmp(cmd, "status") == 0) {
		if (as_json) {
			out_json(json_pack("{s:s,s:s,s:b,s:s?,s:b,s:I}",
			    "event", "result", "command", "status", "online",
			    us_online(d), "server", us_server(d), "messaging",
			    us_messaging(d), "outbox",
			    (json_int_t)us_outbox(d)));
		} else {
			printf("%s%s%s, messaging %s, %ld queued\n",
			    us_online(d) ? "online at " : "offline",
			    us_online(d) ? us_server(d) : "", "",
			    us_messaging(d) ? "up" : "down", us_outbox(d));
			fflush(stdout);
		}
	} else {
		result(cmd, US_EINVAL, d,
		    "unknown command or missing arguments (login USER "
		    "PASSWORD, resume, logout, channels, join CH, leave CH, "
		    "send CH TEXT, status, help, quit)");
	}
	return true;
}

/* The prompt of a terminal: where the desk stands. */
static void
prompt(us_desk *d)
{
	printf("%s%s> ", us_online(d) ? us_server(d) : "offline",
	    us_messaging(d) ? "" : " (messaging down)");
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	const char *servers[16];
	struct us_desk_config cfg = {0};
	char line[LINE_MAX_LEN];
	size_t have = 0;
	bool tty = isatty(STDIN_FILENO), open_in = true, go = true;
	us_desk *d;
	int rc;

	cfg.servers = servers;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = true;
		} else if (i + 1 < argc && strcmp(argv[i], "--profile") == 0) {
			cfg.profile_dir = argv[++i];
		} else if (i + 1 < argc && strcmp(argv[i], "--desk") == 0) {
			cfg.desk_id = argv[++i];
		} else if (i + 1 < argc && strcmp(argv[i], "--version") == 0) {
			cfg.version = argv[++i];
		} else if (i + 1 < argc && strcmp(argv[i], "--ca") == 0) {
			cfg.ca_file = argv[++i];
		} else if (i + 1 < argc && strcmp(argv[i], "--server") == 0 &&
		    cfg.n_servers < 16) {
			servers[cfg.n_servers++] = argv[++i];
		} else {
			fprintf(stderr,
			    "understudy-desk: unknown argument '%s'\n\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (cfg.profile_dir == NULL || cfg.desk_id == NULL ||
	    cfg.n_servers == 0) {
		usage(stderr);
		return 2;
	}
	if (cfg.ca_file && access(cfg.ca_file, R_OK) != 0) {
		fprintf(stderr, "understudy-desk: --ca %s: %s\n", cfg.ca_file,
		    strerror(errno));
		return 2;
	}
	if ((rc = us_desk_open(&cfg, &d)) != 0) {
		fprintf(stderr,
		    "understudy-desk: cannot open the profile %s: %s\n",
		    cfg.profile_dir, us_strerror(rc));
		return 1;
	}
	if (tty && !as_json) {
		printf("understudy-desk %s: type a command (help, quit)\n",
		    cfg.desk_id);
		prompt(d);
	}
	while (go) {
		struct pollfd p = {STDIN_FILENO, POLLIN, 0};
		struct us_event ev;

		while (us_poll(d, 0, &ev) == 1)
			show_event(&ev);
		if (!open_in)
			break; /* stdin ended: like quit */
		if (poll(&p, 1, 50) <= 0)
			continue;
		{
			ssize_t n = read(
			    STDIN_FILENO, line + have, sizeof(line) - 1 - have);
			char *nl;

			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				open_in = false;
				continue;
			}
			have += (size_t)n;
			line[have] = '\0';
			while (go && (nl = strchr(line, '\n')) != NULL) {
				*nl = '\0';
				if (nl > line && nl[-1] == '\r')
					nl[-1] = '\0';
				go = command(d, line);
				if (go && tty && !as_json)
					prompt(d);
				have -= (size_t)(nl + 1 - line);
				memmove(line, nl + 1, have + 1);
			}
			if (have == sizeof(line) - 1) {
				result("?", US_ETOOBIG, d, "line too long");
				have = 0;
			}
		}
	}
	us_desk_close(d);
	return 0;
}
