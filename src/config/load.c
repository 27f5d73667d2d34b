/*
 * Reading the configuration: one INI file read with libinih, each value
 * stored through the option table (options.c), defaults first; then the
 * checks across the file (check.c). Reading never stops at the first
 * problem: every problem is recorded with its line. Also the lookups in a
 * loaded config.
 */
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ini.h>

#include "config.h"

#define ERR(d, line, ...) config_diag_add(d, line, CONFIG_ERROR, __VA_ARGS__)

struct parse_state {
	const char *name;
	const char *text;
	size_t len, pos;
	int lineno;
	struct config *cfg;
	struct config_diags *d;
	enum config_section sec; /* current section */
	void *obj; /* its struct, NULL to skip its keys */
	int *lines; /* its lines[] */
	bool seen_cluster;
	bool seen_header;
};

/*
 * libinih's line buffer is 200 bytes and it reports only the first
 * syntax error. The reader therefore checks each line itself: a line
 * too long, or one that is neither a section, a key = value, a comment
 * nor blank, is reported here and handed to inih as a blank line.
 */
static char *
config_reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	const char *p, *end, *nl;
	size_t n;

	if (ps->pos >= ps->len)
		return NULL;
	p = ps->text + ps->pos;
	end = ps->text + ps->len;
	nl = memchr(p, '\n', (size_t)(end - p));
	n = nl ? (size_t)(nl - p) : (size_t)(end - p);
	ps->pos += n + (nl ? 1 : 0);
	ps->lineno++;
	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (memchr(p, '\0', n) != NULL) {
		ERR(ps->d, ps->lineno, "line contains a NUL byte");
		goto blank;
	}
	if (n + 2 > (size_t)num) {
		ERR(ps->d, ps->lineno,
		    "line is longer than %d characters; give a list option on "
		    "several lines instead",
		    num - 2);
		goto blank;
	}
	{
		const char *s = p, *e = p + n;

		while (s < e && isspace((unsigned char)*s))
			s++;
		while (e > s && isspace((unsigned char)e[-1]))
			e--;
		if (s == e || *s == ';' || *s == '#')
			goto copy;
		if (*s == '[') {
			if (e[-1] != ']') {
				ERR(ps->d, ps->lineno,
				    "section header is missing its ']'; the "
				    "keys "
				    "under it are skipped");
				/* keys up to the next header belong nowhere */
				ps->seen_header = true;
				ps->obj = NULL;
				ps->lines = NULL;
				goto blank;
			}
			goto copy;
		}
		if (memchr(s, '=', (size_t)(e - s)) == NULL) {
			ERR(ps->d, ps->lineno,
			    "expected 'key = value', a [section] or a comment");
			goto blank;
		}
		if (*s == '=') {
			ERR(ps->d, ps->lineno, "a key is missing before '='");
			goto blank;
		}
	}
copy:
	memcpy(str, p, n);
	str[n] = '\0';
	return str;
blank:
	str[0] = '\0';
	return str;
}

static const char *
option_suggest(enum config_section sec, const char *name)
{
	const char *names[CONFIG_MAX_OPTIONS];
	size_t n = 0;

	for (size_t i = 0; i < config_n_options; i++)
		if (config_options[i].section == sec)
			names[n++] = config_options[i].name;
	return str_suggest(name, names, n);
}

static bool
bool_parse(const char *v, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

/*
 * Store value into obj for option o. Problems are reported against line;
 * in a check run (line 0, from the defaults) they cannot happen.
 */
static void
option_set(struct config_diags *d, int line, const struct config_option *o,
    void *obj, const char *value)
{
	char *field = (char *)obj + o->offset, err[256];

	switch (o->type) {
	case CONFIG_TYPE_INT: {
		long v;

		if (str_to_long(value, o->min, o->max, &v) != 0) {
			if (errno == ERANGE)
				ERR(d, line, "%s: %s is out of range %ld..%ld",
				    o->name, value, o->min, o->max);
			else
				ERR(d, line, "%s: '%s' is not a whole number",
				    o->name, value);
			return;
		}
		*(long *)(void *)field = v;
		break;
	}
	case CONFIG_TYPE_STRING:
	case CONFIG_TYPE_SECRET: {
		char **sp = (char **)(void *)field;

		if (o->check && !o->check(value, err, sizeof(err))) {
			ERR(d, line, "%s: %s", o->name, err);
			return;
		}
		free(*sp);
		*sp = strdup(value);
		break;
	}
	case CONFIG_TYPE_BOOL:
		if (!bool_parse(value, (bool *)(void *)field))
			ERR(d, line, "%s: '%s' is not yes or no", o->name,
			    value);
		break;
	case CONFIG_TYPE_ENUM: {
		char list[128] = "";

		for (int i = 0; o->choices[i]; i++) {
			if (strcmp(value, o->choices[i]) == 0) {
				*(int *)(void *)field = i;
				return;
			}
			if (i)
				strncat(list, ", ",
				    sizeof(list) - strlen(list) - 1);
			strncat(list, o->choices[i],
			    sizeof(list) - strlen(list) - 1);
		}
		ERR(d, line, "%s: '%s' is not one of %s", o->name, value, list);
		break;
	}
	case CONFIG_TYPE_LIST: {
		struct strlist *l = (struct strlist *)(void *)field, tmp = {0};

		if (strlist_split(&tmp, value) == US_ETOOBIG)
			ERR(d, line,
			    "%s: an item is longer than 255 characters",
			    o->name);
		for (size_t i = 0; i < tmp.n; i++) {
			if (o->check && !o->check(tmp.v[i], err, sizeof(err))) {
				ERR(d, line, "%s: %s", o->name, err);
				continue;
			}
			if (strlist_find(l, tmp.v[i]) >= 0) {
				ERR(d, line, "%s: '%s' is listed twice",
				    o->name, tmp.v[i]);
				continue;
			}
			strlist_add(l, tmp.v[i]);
		}
		strlist_free(&tmp);
		break;
	}
	}
}

static void
defaults_apply(struct config_diags *d, enum config_section sec, void *obj)
{
	for (size_t i = 0; i < config_n_options; i++) {
		const struct config_option *o = &config_options[i];

		if (o->section == sec && o->def && o->def[0])
			option_set(d, 0, o, obj, o->def);
	}
}

/* Grow one of the section arrays by one zeroed element. */
static void *
array_push(void **arr, size_t *n, size_t size)
{
	char *p;

	if ((p = realloc(*arr, (*n + 1) * size)) == NULL)
		return NULL;
	*arr = p;
	memset(p + *n * size, 0, size);
	return p + (*n)++ * size;
}

static int
section_begin(struct parse_state *ps, const char *header)
{
	char word[CONFIG_LINE_MAX], name[CONFIG_LINE_MAX] = "", err[256];
	struct config *cfg = ps->cfg;
	int sec = -1, line = ps->lineno;
	const char *sp;

	ps->obj = NULL;
	ps->lines = NULL;
	sp = strpbrk(header, " \t");
	if (sp) {
		str_copy(word, header, (size_t)(sp - header) + 1);
		while (*sp == ' ' || *sp == '\t')
			sp++;
		str_copy(name, sp, sizeof(name));
	} else {
		str_copy(word, header, sizeof(word));
	}
	for (int i = 0; i < CONFIG_SEC_COUNT; i++)
		if (strcmp(word, config_section_names[i]) == 0)
			sec = i;
	if (sec < 0) {
		const char *s =
		    str_suggest(word, config_section_names, CONFIG_SEC_COUNT);

		if (s)
			ERR(ps->d, line,
			    "unknown section [%s]; did you mean [%s]?", word,
			    s);
		else
			ERR(ps->d, line,
			    "unknown section [%s] (known: cluster, server, "
			    "user, channel, service)",
			    word);
		return 1;
	}
	ps->sec = (enum config_section)sec;
	if (sec == CONFIG_SEC_CLUSTER) {
		if (name[0]) {
			ERR(ps->d, line,
			    "[cluster] takes no name; set 'name = %s' inside "
			    "it",
			    name);
			return 1;
		}
		if (ps->seen_cluster) {
			ERR(ps->d, line,
			    "duplicate [cluster] section (first at line %d)",
			    cfg->cluster.line);
			return 1;
		}
		ps->seen_cluster = true;
		cfg->cluster.line = line;
		ps->obj = &cfg->cluster;
		ps->lines = cfg->cluster.lines;
		return 1;
	}
	if (name[0] == '\0') {
		ERR(ps->d, line, "[%s] needs a name: [%s NAME]", word, word);
		return 1;
	}
	if (!config_check_name(name, err, sizeof(err))) {
		ERR(ps->d, line, "[%s %s]: %s", word, name, err);
		return 1;
	}
	switch (sec) {
	case CONFIG_SEC_SERVER: {
		struct config_server *s;

		for (size_t i = 0; i < cfg->n_servers; i++)
			if (strcmp(cfg->servers[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate server %s (first at line %d)",
				    name, cfg->servers[i].line);
				return 1;
			}
		s = array_push(
		    (void **)&cfg->servers, &cfg->n_servers, sizeof(*s));
		if (s == NULL)
			return 0;
		s->name = strdup(name);
		s->line = line;
		s->max_media_ports = -1;
		defaults_apply(ps->d, CONFIG_SEC_SERVER, s);
		ps->obj = s;
		ps->lines = s->lines;
		break;
	}
	case CONFIG_SEC_USER: {
		struct config_user *u;

		for (size_t i = 0; i < cfg->n_users; i++)
			if (strcmp(cfg->users[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate user %s (first at line %d)",
				    name, cfg->users[i].line);
				return 1;
			}
		u = array_push((void **)&cfg->users, &cfg->n_users, sizeof(*u));
		if (u == NULL)
			return 0;
		u->name = strdup(name);
		u->line = line;
		defaults_apply(ps->d, CONFIG_SEC_USER, u);
		ps->obj = u;
		ps->lines = u->lines;
		break;
	}
	case CONFIG_SEC_CHANNEL: {
		struct config_channel *c;

		for (size_t i = 0; i < cfg->n_channels; i++)
			if (strcmp(cfg->channels[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate channel %s (first at line %d)",
				    name, cfg->channels[i].line);
				return 1;
			}
		c = array_push(
		    (void **)&cfg->channels, &cfg->n_channels, sizeof(*c));
		if (c == NULL)
			return 0;
		c->name = strdup(name);
		c->line = line;
		defaults_apply(ps->d, CONFIG_SEC_CHANNEL, c);
		ps->obj = c;
		ps->lines = c->lines;
		break;
	}
	case CONFIG_SEC_SERVICE: {
		struct config_service *v;

		for (size_t i = 0; i < cfg->n_services; i++)
			if (strcmp(cfg->services[i].name, name) == 0) {
				ERR(ps->d, line,
				    "duplicate service %s (first at line %d)",
				    name, cfg->services[i].line);
				return 1;
			}
		v = array_push(
		    (void **)&cfg->services, &cfg->n_services, sizeof(*v));
		if (v == NULL)
			return 0;
		v->name = strdup(name);
		v->line = line;
		defaults_apply(ps->d, CONFIG_SEC_SERVICE, v);
		ps->obj = v;
		ps->lines = v->lines;
		break;
	}
	}
	return 1;
}

static int
config_handler(
    void *user, const char *section, const char *key, const char *value)
{
	struct parse_state *ps = user;
	const struct config_option *o;
	size_t idx, errors;

	(void)section;
	if (!ps->seen_header) {
		ERR(ps->d, ps->lineno,
		    "'%s' is outside any section; start with [cluster]", key);
		return 1;
	}
	if (ps->obj == NULL)
		return 1; /* a bad section header, reported already */
	if ((o = config_option_find(ps->sec, key, &idx)) == NULL) {
		const char *s = option_suggest(ps->sec, key);

		if (s)
			ERR(ps->d, ps->lineno,
			    "unknown key '%s' in [%s]; did you mean '%s'?", key,
			    config_section_names[ps->sec], s);
		else
			ERR(ps->d, ps->lineno, "unknown key '%s' in [%s]", key,
			    config_section_names[ps->sec]);
		return 1;
	}
	if (value[0] == '\0' && o->type != CONFIG_TYPE_LIST) {
		ERR(ps->d, ps->lineno, "%s: empty value", key);
		return 1;
	}
	if (ps->lines[idx] && o->type != CONFIG_TYPE_LIST) {
		ERR(ps->d, ps->lineno, "'%s' is already set at line %d", key,
		    abs(ps->lines[idx]));
		return 1;
	}
	/* a list given in the file replaces its default; repeats add up */
	if (ps->lines[idx] == 0 && o->type == CONFIG_TYPE_LIST)
		strlist_free(
		    (struct strlist *)(void *)((char *)ps->obj + o->offset));
	errors = ps->d->errors;
	option_set(ps->d, ps->lineno, o, ps->obj, value);
	ps->lines[idx] = ps->d->errors > errors ? -ps->lineno : ps->lineno;
	return 1;
}

/*
 * inih calls the handler only for keys, so the reader opens each section
 * when it hands inih the header line (a header without keys still counts).
 */
static char *
config_reader_sections(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	char *line = config_reader(str, num, stream), *s, *e;
	char header[CONFIG_LINE_MAX];
	size_t n;

	if (line == NULL)
		return NULL;
	s = line;
	while (isspace((unsigned char)*s))
		s++;
	if (*s != '[')
		return line;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	s++;
	e--; /* the reader made sure the line ends in ']' */
	while (s < e && isspace((unsigned char)*s))
		s++;
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	n = (size_t)(e - s);
	memcpy(header, s, n);
	header[n] = '\0';
	ps->seen_header = true;
	section_begin(ps, header);
	return line;
}

struct config *
config_parse(
    const char *name, const char *text, size_t len, struct config_diags *d)
{
	struct parse_state ps;
	struct config *cfg;

	if (d->path == NULL)
		d->path = strdup(name);
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
		return NULL;
	cfg->path = strdup(name);
	defaults_apply(d, CONFIG_SEC_CLUSTER, &cfg->cluster);
	memset(&ps, 0, sizeof(ps));
	ps.name = name;
	ps.text = text;
	ps.len = len;
	ps.cfg = cfg;
	ps.d = d;
	if (len > CONFIG_FILE_MAX) {
		ERR(d, 0, "file is larger than %d bytes", CONFIG_FILE_MAX);
		return cfg;
	}
	ini_parse_stream(config_reader_sections, &ps, config_handler, &ps);
	config_check(cfg, d);
	return cfg;
}

struct config *
config_load(const char *path, struct config_diags *d)
{
	struct config *cfg = NULL;
	struct buf b;
	char chunk[8192];
	FILE *f;
	size_t n;

	buf_init(&b, CONFIG_FILE_MAX + 1);
	if (d->path == NULL)
		d->path = strdup(path);
	if ((f = fopen(path, "r")) == NULL) {
		ERR(d, 0, "cannot read: %s", strerror(errno));
		return NULL;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(&b, chunk, n) != 0) {
			ERR(d, 0, "file is larger than %d bytes",
			    CONFIG_FILE_MAX);
			goto out;
		}
	if (ferror(f)) {
		ERR(d, 0, "cannot read: %s", strerror(errno));
		goto out;
	}
	cfg = config_parse(path, b.data ? b.data : "", b.len, d);
out:
	fclose(f);
	buf_free(&b);
	return cfg;
}

static void
section_free(enum config_section sec, void *obj)
{
	for (size_t i = 0; i < config_n_options; i++) {
		const struct config_option *o = &config_options[i];
		char *field = (char *)obj + o->offset;

		if (o->section != sec)
			continue;
		if (o->type == CONFIG_TYPE_STRING ||
		    o->type == CONFIG_TYPE_SECRET)
			free(*(char **)(void *)field);
		else if (o->type == CONFIG_TYPE_LIST)
			strlist_free((struct strlist *)(void *)field);
	}
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	section_free(CONFIG_SEC_CLUSTER, &cfg->cluster);
	for (size_t i = 0; i < cfg->n_servers; i++) {
		section_free(CONFIG_SEC_SERVER, &cfg->servers[i]);
		free(cfg->servers[i].name);
	}
	for (size_t i = 0; i < cfg->n_users; i++) {
		section_free(CONFIG_SEC_USER, &cfg->users[i]);
		free(cfg->users[i].name);
	}
	for (size_t i = 0; i < cfg->n_channels; i++) {
		section_free(CONFIG_SEC_CHANNEL, &cfg->channels[i]);
		free(cfg->channels[i].name);
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		section_free(CONFIG_SEC_SERVICE, &cfg->services[i]);
		free(cfg->services[i].name);
	}
	free(cfg->servers);
	free(cfg->users);
	free(cfg->channels);
	free(cfg->services);
	free(cfg->path);
	free(cfg);
}

/* The element of a config array whose name (at name_off) is name. */
static const void *
find_named(
    const void *base, size_t n, size_t size, size_t name_off, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		const char *el = (const char *)base + i * size;

		if (strcmp(*(char *const *)(const void *)(el + name_off),
			name) == 0)
			return el;
	}
	return NULL;
}

const struct config_server *
config_server_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->servers, cfg->n_servers, sizeof(*cfg->servers),
	    offsetof(struct config_server, name), name);
}

const struct config_user *
config_user_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->users, cfg->n_users, sizeof(*cfg->users),
	    offsetof(struct config_user, name), name);
}

const struct config_channel *
config_channel_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->channels, cfg->n_channels,
	    sizeof(*cfg->channels), offsetof(struct config_channel, name),
	    name);
}

const struct config_service *
config_service_find(const struct config *cfg, const char *name)
{
	return find_named(cfg->services, cfg->n_services,
	    sizeof(*cfg->services), offsetof(struct config_service, name),
	    name);
}

bool
config_service_here(const struct config_service *sv, const char *server)
{
	return sv->scope == CONFIG_SCOPE_POST || sv->servers.n == 0 ||
	    strlist_find(&sv->servers, server) >= 0;
}

bool
config_address_is_local(const char *address)
{
	struct ifaddrs *ifs, *ifa;
	bool found = false;

	if (strcmp(address, "localhost") == 0 ||
	    strncmp(address, "127.", 4) == 0 || strcmp(address, "::1") == 0)
		return true;
	if (getifaddrs(&ifs) != 0)
		return false;
	for (ifa = ifs; ifa && !found; ifa = ifa->ifa_next) {
		char host[NI_MAXHOST];
		socklen_t len;

		if (ifa->ifa_addr == NULL)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET)
			len = sizeof(struct sockaddr_in);
		else if (ifa->ifa_addr->sa_family == AF_INET6)
			len = sizeof(struct sockaddr_in6);
		else
			continue;
		if (getnameinfo(ifa->ifa_addr, len, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) == 0 &&
		    strcmp(host, address) == 0)
			found = true;
	}
	freeifaddrs(ifs);
	return found;
}

char *
config_file_path(const struct config *cfg, const char *value)
{
	const char *slash;
	char *path = NULL;

	if (value == NULL || value[0] == '\0')
		return NULL;
	if (value[0] == '/' || cfg->path == NULL ||
	    (slash = strrchr(cfg->path, '/')) == NULL)
		return strdup(value);
	if (asprintf(&path, "%.*s/%s", (int)(slash - cfg->path), cfg->path,
		value) < 0)
		return NULL;
	return path;
}

void
config_api_url(const struct config *cfg, const char *address, long port,
    char *buf, size_t len)
{
	snprintf(buf, len, "%s://%s:%ld",
	    cfg->cluster.tls_cert ? "https" : "http", address, port);
}
