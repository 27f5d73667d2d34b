/*
 * understudy user add|passwd|del: a change of users made on the
 * configuration in effect and stored as its next version. The password
 * is hashed here, so only its argon2id hash leaves this machine.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli.h"

enum user_op { USER_ADD, USER_PASSWD, USER_DEL };

static const char *const op_names[] = {"add", "passwd", "del"};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: understudy user add NAME [--groups G1,G2]\n"
	    "       understudy user passwd NAME\n"
	    "       understudy user del NAME\n"
	    "  each with [--comment TEXT] [--dry-run] [--config FILE | "
	    "--server URL]\n"
	    "            [--token T] [--ca FILE] [--json]\n"
	    "\n"
	    "Changes the [user NAME] sections of the configuration in "
	    "effect and\n"
	    "stores the result as its next version, through the same checks "
	    "as\n"
	    "understudy config apply; nothing else in the text changes.\n"
	    "\n"
	    "add     a new user with a password and the groups given\n"
	    "passwd  a new password for an existing user\n"
	    "del     remove the user, and remove NAME from every channel's "
	    "allow\n"
	    "        list. When NAME is the only one a channel allows, del "
	    "is\n"
	    "        refused, naming the channel: a channel without an "
	    "allow list\n"
	    "        would be open to every user. Change that channel first.\n"
	    "\n"
	    "The password is read from the terminal (twice, not shown) or, "
	    "when\n"
	    "standard input is not a terminal, as one line from it. It is "
	    "hashed\n"
	    "(argon2id) on this machine: no server and no version of the "
	    "history\n"
	    "ever holds it in clear. If someone stores another version "
	    "meanwhile,\n"
	    "the change is made again on that version, once.\n"
	    "\n"
	    "The request goes to --server, else to the first server that "
	    "answers\n"
	    "of --config FILE ($UNDERSTUDY_CONFIG, or "
	    "examples/contact-center.conf),\n"
	    "with the admin token: --token, $UNDERSTUDY_TOKEN, or the "
	    "config's\n"
	    "admin_token.\n");
}

/* ---- the text, as lines ---- */

enum line_kind {
	LINE_BLANK,
	LINE_COMMENT,
	LINE_HEADER,
	LINE_KEY,
	LINE_MORE, /* an indented line: inih continues the key above */
	LINE_OTHER
};

struct line {
	const char *p;
	size_t n; /* bytes, its newline included */
	enum line_kind kind;
	const char *a; /* HEADER: the section's word; KEY: the key */
	size_t alen;
	const char *b; /* HEADER: the section's name */
	size_t blen;
};

struct lines {
	struct line *v;
	size_t n;
};

static void
trim(const char **s, const char **e)
{
	while (*s < *e && isspace((unsigned char)**s))
		(*s)++;
	while (*e > *s && isspace((unsigned char)(*e)[-1]))
		(*e)--;
}

/* Classify one line as the config reader and inih do. */
static void
line_classify(struct line *l, bool after_key)
{
	const char *s = l->p, *e = l->p + l->n, *w;

	trim(&s, &e);
	if (s == e)
		l->kind = LINE_BLANK;
	else if (*s == ';' || *s == '#')
		l->kind = LINE_COMMENT;
	else if (*s == '[' && e[-1] == ']') {
		l->kind = LINE_HEADER;
		s++;
		e--;
		trim(&s, &e);
		for (w = s; w < e && !isspace((unsigned char)*w); w++)
			;
		l->a = s;
		l->alen = (size_t)(w - s);
		trim(&w, &e);
		l->b = w;
		l->blen = (size_t)(e - w);
	} else if (after_key && s > l->p)
		l->kind = LINE_MORE;
	else if ((w = memchr(s, '=', (size_t)(e - s))) != NULL) {
		const char *k = s, *ke = w;

		for (const char *c = s; c < w; c++)
			if (*c == ':') {
				ke = c;
				break;
			}
		trim(&k, &ke);
		l->kind = LINE_KEY;
		l->a = k;
		l->alen = (size_t)(ke - k);
	} else
		l->kind = LINE_OTHER;
}

static void
lines_free(struct lines *ls)
{
	free(ls->v);
	ls->v = NULL;
	ls->n = 0;
}

static int
lines_split(struct lines *ls, const char *text)
{
	size_t cap = 0;
	bool after_key = false;

	ls->v = NULL;
	ls->n = 0;
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
		struct line *l;

		if (ls->n == cap) {
			struct line *v;

			cap = cap ? 2 * cap : 256;
			if ((v = realloc(ls->v, cap * sizeof(*v))) == NULL) {
				lines_free(ls);
				return -1;
			}
			ls->v = v;
		}
		l = &ls->v[ls->n++];
		memset(l, 0, sizeof(*l));
		l->p = p;
		l->n = n;
		line_classify(l, after_key);
		if (l->kind == LINE_HEADER)
			after_key = false;
		else if (l->kind == LINE_KEY)
			after_key = true;
		p += n;
	}
	return 0;
}

static bool
is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(s, word, n) == 0;
}

/*
 * The lines of section [word name]: its header at *first, up to the next
 * header at *end. False when there is none.
 */
static bool
lines_section(const struct lines *ls, const char *word, const char *name,
    size_t *first, size_t *end)
{
	for (size_t i = 0; i < ls->n; i++) {
		const struct line *l = &ls->v[i];

		if (l->kind != LINE_HEADER || !is(l->a, l->alen, word) ||
		    !is(l->b, l->blen, name))
			continue;
		*first = i;
		for (i++; i < ls->n && ls->v[i].kind != LINE_HEADER; i++)
			;
		*end = i;
		return true;
	}
	return false;
}

/*
 * Where a section's own lines end: blank lines and comments at its end
 * go with the header that follows them.
 */
static size_t
lines_content_end(const struct lines *ls, size_t first, size_t end)
{
	while (end > first + 1 &&
	    (ls->v[end - 1].kind == LINE_BLANK ||
		ls->v[end - 1].kind == LINE_COMMENT))
		end--;
	return end;
}

/* ---- edits: per line keep, drop or replace, and text inserted ---- */

struct edit {
	const struct lines *ls;
	bool *drop; /* ls->n */
	char **repl; /* ls->n: the line's new text, or NULL */
	char **before; /* ls->n + 1: text put before line i (n: at the end) */
};

static void
edit_free(struct edit *ed)
{
	for (size_t i = 0; ed->ls && i <= ed->ls->n; i++) {
		if (ed->repl && i < ed->ls->n)
			free(ed->repl[i]);
		if (ed->before)
			free(ed->before[i]);
	}
	free(ed->drop);
	free(ed->repl);
	free(ed->before);
	memset(ed, 0, sizeof(*ed));
}

static int
edit_init(struct edit *ed, const struct lines *ls)
{
	memset(ed, 0, sizeof(*ed));
	ed->ls = ls;
	ed->drop = calloc(ls->n + 1, sizeof(*ed->drop));
	ed->repl = calloc(ls->n + 1, sizeof(*ed->repl));
	ed->before = calloc(ls->n + 1, sizeof(*ed->before));
	if (ed->drop == NULL || ed->repl == NULL || ed->before == NULL) {
		edit_free(ed);
		return -1;
	}
	return 0;
}

/* Set *slot to a new formatted string; -1 when memory runs out. */
static int edit_set(char **slot, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
edit_set(char **slot, const char *fmt, ...)
{
	va_list ap;
	int rc;

	free(*slot);
	va_start(ap, fmt);
	rc = vasprintf(slot, fmt, ap);
	va_end(ap);
	if (rc < 0) {
		*slot = NULL;
		return -1;
	}
	return 0;
}

static void
ensure_newline(struct buf *out)
{
	if (out->len && out->data[out->len - 1] != '\n')
		buf_append(out, "\n", 1);
}

/* The edited text; NULL when memory runs out or it grows too big. */
static char *
edit_apply(const struct edit *ed)
{
	const struct lines *ls = ed->ls;
	struct buf out;
	char *text;

	buf_init(&out, CONFIG_FILE_MAX);
	for (size_t i = 0; i <= ls->n; i++) {
		if (ed->before[i]) {
			ensure_newline(&out);
			buf_printf(&out, "%s", ed->before[i]);
		}
		if (i == ls->n || ed->drop[i])
			continue;
		if (ed->repl[i]) {
			ensure_newline(&out);
			buf_printf(&out, "%s", ed->repl[i]);
		} else
			buf_append(&out, ls->v[i].p, ls->v[i].n);
	}
	if (out.err) {
		buf_free(&out);
		return NULL;
	}
	text = out.data ? out.data : strdup("");
	return text; /* the caller owns the buffer's memory now */
}

/* Drop the option key of lines [first, end), with its continuations. */
static void
edit_drop_key(struct edit *ed, size_t first, size_t end, const char *key)
{
	const struct lines *ls = ed->ls;

	for (size_t i = first; i < end; i++) {
		if (ls->v[i].kind != LINE_KEY ||
		    !is(ls->v[i].a, ls->v[i].alen, key))
			continue;
		ed->drop[i] = true;
		while (i + 1 < end && ls->v[i + 1].kind == LINE_MORE)
			ed->drop[++i] = true;
	}
}

/* add: a new section after the last [user], else at the end. */
static int
edit_add(
    struct edit *ed, const char *name, const char *hash, const char *groups)
{
	const struct lines *ls = ed->ls;
	size_t at = ls->n, end;
	const char *pre = "\n", *post = "";

	for (size_t i = 0; i < ls->n; i++) {
		if (ls->v[i].kind != LINE_HEADER ||
		    !is(ls->v[i].a, ls->v[i].alen, "user"))
			continue;
		for (end = i + 1; end < ls->n && ls->v[end].kind != LINE_HEADER;
		     end++)
			;
		at = lines_content_end(ls, i, end);
	}
	/* one blank line on each side of the new section */
	if (at == ls->n && (ls->n == 0 || ls->v[ls->n - 1].kind == LINE_BLANK))
		pre = "";
	if (at < ls->n && ls->v[at].kind != LINE_BLANK)
		post = "\n";
	return edit_set(&ed->before[at], "%s[user %s]\npassword = %s\n%s%s%s%s",
	    pre, name, hash, *groups ? "groups = " : "", groups,
	    *groups ? "\n" : "", post);
}

/* passwd: the section's password line replaced where it is. */
static int
edit_passwd(struct edit *ed, const char *name, const char *hash)
{
	const struct lines *ls = ed->ls;
	size_t first, end, at = 0;

	if (!lines_section(ls, "user", name, &first, &end))
		return -1;
	for (size_t i = end; i > first + 1; i--)
		if (ls->v[i - 1].kind == LINE_KEY &&
		    is(ls->v[i - 1].a, ls->v[i - 1].alen, "password"))
			at = i - 1;
	edit_drop_key(ed, first + 1, end, "password");
	if (at == 0)
		return edit_set(
		    &ed->before[first + 1], "password = %s\n", hash);
	ed->drop[at] = false;
	return edit_set(&ed->repl[at], "password = %s\n", hash);
}

/* del: the section, and the blank lines that would be left doubled. */
static int
edit_del(struct edit *ed, const char *name)
{
	const struct lines *ls = ed->ls;
	size_t first, end, stop;

	if (!lines_section(ls, "user", name, &first, &end))
		return -1;
	stop = lines_content_end(ls, first, end);
	while (stop < end && ls->v[stop].kind == LINE_BLANK)
		stop++;
	for (size_t i = first; i < stop; i++)
		ed->drop[i] = true;
	return 0;
}

/*
 * A channel's allow list without name: its allow lines become one, where
 * the first was.
 */
static int
edit_allow(struct edit *ed, const struct config_channel *c, const char *name)
{
	const struct lines *ls = ed->ls;
	size_t first, end, at = 0;
	struct buf list;
	int rc = -1;

	if (!lines_section(ls, "channel", c->name, &first, &end))
		return -1;
	for (size_t i = end; i > first; i--)
		if (ls->v[i - 1].kind == LINE_KEY &&
		    is(ls->v[i - 1].a, ls->v[i - 1].alen, "allow"))
			at = i - 1;
	if (at == 0)
		return -1;
	edit_drop_key(ed, first + 1, end, "allow");
	ed->drop[at] = false;
	buf_init(&list, CONFIG_LINE_MAX);
	for (size_t i = 0; i < c->allow.n; i++)
		if (strcmp(c->allow.v[i], name) != 0)
			buf_printf(
			    &list, "%s%s", list.len ? ", " : "", c->allow.v[i]);
	if (list.err == 0)
		rc = edit_set(&ed->repl[at], "allow = %s\n", list.data);
	buf_free(&list);
	return rc;
}

/* ---- the command ---- */

struct user_req {
	enum user_op op;
	const char *name;
	char groups[CONFIG_LINE_MAX]; /* "a, b" */
	char hash[crypto_pwhash_STRBYTES];
	bool hashed;
};

static bool
printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* --groups as "a, b", each a name; false with the reason said. */
static bool
groups_of(const char *arg, char *out, size_t len)
{
	struct strlist l = {0};
	char err[256];
	size_t n = 0;
	bool ok = true;

	out[0] = '\0';
	if (strlist_split(&l, arg) != 0) {
		fprintf(stderr, "understudy user: --groups: too long\n");
		strlist_free(&l);
		return false;
	}
	for (size_t i = 0; ok && i < l.n; i++) {
		if (!config_check_name(l.v[i], err, sizeof(err))) {
			fprintf(stderr, "understudy user: --groups: %s\n", err);
			ok = false;
		} else
			n += (size_t)snprintf(out + n, n < len ? len - n : 0,
			    "%s%s", i ? ", " : "", l.v[i]);
	}
	if (ok && n >= len) {
		fprintf(stderr, "understudy user: --groups: too long\n");
		ok = false;
	}
	strlist_free(&l);
	return ok;
}

/*
 * Say which channels allow only name (a channel without an allow list
 * is open to every user); true when there are any.
 */
static bool
lonely_channels(const struct config *cfg, const char *name)
{
	struct buf which;
	size_t n = 0;

	buf_init(&which, 4096);
	for (size_t i = 0; i < cfg->n_channels; i++) {
		const struct config_channel *c = &cfg->channels[i];

		if (c->allow.n == 1 && strcmp(c->allow.v[0], name) == 0)
			buf_printf(&which, "%s%s (line %d)", n++ ? ", " : "",
			    c->name, c->line);
	}
	if (n)
		fprintf(stderr,
		    "understudy user: %s %s allow%s only %s: without %s, "
		    "%s would be open to every user; change %s allow list "
		    "first. Nothing changed.\n",
		    n > 1 ? "channels" : "channel", which.data,
		    n > 1 ? "" : "s", name, name, n > 1 ? "they" : "it",
		    n > 1 ? "their" : "its");
	buf_free(&which);
	return n > 0;
}

/*
 * The text of version base with r applied, checked; NULL when r does not
 * fit that version or the result has errors (said on stderr). cfg is
 * base's text, parsed.
 */
static char *
edited(struct user_req *r, const char *text, const struct config *cfg,
    int64_t base)
{
	const struct config_user *u = config_user_find(cfg, r->name);
	struct config_diags d = {0};
	struct config *next;
	struct lines ls = {0};
	struct edit ed = {0};
	char label[200], *out = NULL;
	int rc = -1;

	if (r->op == USER_ADD && u) {
		fprintf(stderr,
		    "understudy user: user %s exists already (version %" PRId64
		    ", line %d); 'understudy user passwd %s' changes its "
		    "password\n",
		    r->name, base, u->line, r->name);
		return NULL;
	}
	if (r->op != USER_ADD && u == NULL) {
		fprintf(stderr,
		    "understudy user: user %s does not exist (version %" PRId64
		    ")\n",
		    r->name, base);
		return NULL;
	}
	if (r->op != USER_DEL && !r->hashed) {
		if (cli_passwd_hash("user", r->hash, sizeof(r->hash)) != 0)
			return NULL;
		r->hashed = true;
	}
	if (lines_split(&ls, text) == 0 && edit_init(&ed, &ls) == 0)
		rc = 0;
	if (rc == 0 && r->op == USER_ADD)
		rc = edit_add(&ed, r->name, r->hash, r->groups);
	else if (rc == 0 && r->op == USER_PASSWD)
		rc = edit_passwd(&ed, r->name, r->hash);
	else if (rc == 0)
		rc = edit_del(&ed, r->name);
	if (rc == 0 && r->op == USER_DEL && lonely_channels(cfg, r->name))
		goto out;
	for (size_t i = 0; rc == 0 && r->op == USER_DEL && i < cfg->n_channels;
	     i++)
		if (strlist_find(&cfg->channels[i].allow, r->name) >= 0)
			rc = edit_allow(&ed, &cfg->channels[i], r->name);
	if (rc != 0 || (out = edit_apply(&ed)) == NULL) {
		fprintf(stderr,
		    "understudy user: cannot edit version %" PRId64 "\n", base);
		goto out;
	}
	/* the checker the servers run, with its FILE:LINE diagnostics */
	snprintf(label, sizeof(label), "version %" PRId64 " + user %s %s", base,
	    op_names[r->op], r->name);
	next = config_parse(label, out, strlen(out), &d);
	if (next == NULL || d.errors) {
		config_diags_print(&d, stderr);
		fprintf(stderr,
		    "understudy user: the change has errors: nothing "
		    "changed\n");
		free(out);
		out = NULL;
	}
	config_free(next);
	config_diags_free(&d);
out:
	edit_free(&ed);
	lines_free(&ls);
	return out;
}

/* The version in effect: its text, parsed, and its number. */
static int
current(const struct cli_versions_opts *o, const struct cli_versions_target *t,
    json_t **v, struct config **cfg, int64_t *version)
{
	struct config_diags d = {0};
	const char *text;
	long status;
	char label[64];

	*cfg = NULL;
	if (cli_versions_ask(o, t, "GET", "/v1/config", NULL, &status, v) != 0)
		return -1;
	if (status != 200) {
		cli_versions_refused(o, *v);
		return -1;
	}
	text = json_string_value(json_object_get(*v, "text"));
	*version = json_integer_value(json_object_get(*v, "version"));
	if (text == NULL || *version < 1) {
		fprintf(stderr,
		    "understudy user: the server gave no configuration\n");
		return -1;
	}
	snprintf(label, sizeof(label), "version %" PRId64, *version);
	*cfg = config_parse(label, text, strlen(text), &d);
	if (*cfg == NULL || d.errors) {
		config_diags_print(&d, stderr);
		fprintf(stderr,
		    "understudy user: version %" PRId64 " does not parse "
		    "with this release\n",
		    *version);
		config_diags_free(&d);
		return -1;
	}
	config_diags_free(&d);
	return 0;
}

static bool
conflict(long status, const json_t *out)
{
	return status == 409 &&
	    strcmp(json_string_value(json_object_get(out, "error"))
		    ? json_string_value(json_object_get(out, "error"))
		    : "",
		"ECONFLICT") == 0;
}

static int
user_run(const struct cli_versions_opts *o, struct user_req *r)
{
	struct cli_versions_target t;
	char name[300], comment[700];
	int rc = 1;

	snprintf(name, sizeof(name), "user %s %s", op_names[r->op], r->name);
	snprintf(comment, sizeof(comment), "%s%s%s", name,
	    o->comment ? ": " : "", o->comment ? o->comment : "");
	if (cli_versions_target(o, NULL, &t) != 0)
		goto out;
	/* someone may store a version between our read and our write */
	for (int attempt = 0; attempt < 2; attempt++) {
		json_t *v = NULL, *ans = NULL;
		struct config *cfg = NULL;
		int64_t base = 0;
		char *text = NULL;
		long status = 0;
		bool again = false;

		if (current(o, &t, &v, &cfg, &base) == 0 &&
		    (text = edited(r,
			 json_string_value(json_object_get(v, "text")), cfg,
			 base)) != NULL &&
		    cli_versions_post(
			o, &t, name, text, comment, base, &status, &ans) == 0) {
			again = conflict(status, ans);
			if (!again)
				rc = cli_versions_print_answer(o, status, ans);
		}
		free(text);
		config_free(cfg);
		json_decref(v);
		json_decref(ans);
		if (!again)
			goto out;
	}
	fprintf(stderr,
	    "understudy user: ECONFLICT: the configuration changed twice "
	    "while this change was being stored; nothing changed: run it "
	    "again\n");
out:
	sodium_memzero(r->hash, sizeof(r->hash));
	cli_versions_target_free(&t);
	return rc;
}

int
cli_users(int argc, char **argv)
{
	struct cli_versions_opts o = {.cmd = "user"};
	struct user_req r = {0};
	const char *groups = NULL;
	size_t op;

	if (cli_wants_help(argc, argv)) {
		usage(stdout);
		return 0;
	}
	for (op = 0; argc > 1 && op < 3; op++)
		if (strcmp(argv[1], op_names[op]) == 0)
			break;
	if (argc < 2 || op == 3) {
		usage(stderr);
		return 2;
	}
	r.op = (enum user_op)op;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i],
			   *next = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--json") == 0)
			o.json = true;
		else if (strcmp(a, "--dry-run") == 0)
			o.dry_run = true;
		else if (next && strcmp(a, "--config") == 0)
			o.config = argv[++i];
		else if (next && strcmp(a, "--server") == 0)
			o.server = argv[++i];
		else if (next && strcmp(a, "--token") == 0)
			o.token = argv[++i];
		else if (next && strcmp(a, "--ca") == 0)
			o.ca = argv[++i];
		else if (next && strcmp(a, "--comment") == 0)
			o.comment = argv[++i];
		else if (next && r.op == USER_ADD && strcmp(a, "--groups") == 0)
			groups = argv[++i];
		else if (a[0] != '-' && r.name == NULL)
			r.name = a;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (r.name == NULL) {
		usage(stderr);
		return 2;
	}
	if (!printable(r.name) || strlen(r.name) > 200 ||
	    (o.comment && !printable(o.comment))) {
		fprintf(stderr, "understudy user: '%s' is not a name\n",
		    printable(r.name) ? r.name : "(control characters)");
		return 1;
	}
	if (groups && !groups_of(groups, r.groups, sizeof(r.groups)))
		return 1;
	return user_run(&o, &r);
}
