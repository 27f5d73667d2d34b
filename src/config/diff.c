/*
 * What changes between two configurations, by section and key, on their
 * normalised print (every option with its value, defaults included), so
 * that a key left to its default and the same value written out are the
 * same. Secrets are compared by their marks and shown only as changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"

struct line {
	char *section; /* "cluster", "server PA1", ... */
	char *key;
	char *value;
};

struct printed {
	struct line *v;
	size_t n;
	char **sections;
	size_t n_sections;
	char *text;
};

static void
printed_free(struct printed *p)
{
	free(p->v);
	free(p->sections);
	free(p->text);
}

/* Split the print in place into its sections and key = value lines. */
static int
printed_of(const struct config *cfg, struct printed *p)
{
	size_t len = 0;
	FILE *f = open_memstream(&p->text, &len);
	char *save = NULL, *ln, *section = NULL;

	memset(p, 0, sizeof(*p));
	if (f == NULL)
		return -1;
	config_print_marked(cfg, f);
	if (fclose(f) != 0 || p->text == NULL)
		return -1;
	for (ln = strtok_r(p->text, "\n", &save); ln;
	     ln = strtok_r(NULL, "\n", &save)) {
		char *eq;

		if (ln[0] == '[') {
			char **s = realloc(
			    p->sections, (p->n_sections + 1) * sizeof(*s));

			if (s == NULL)
				return -1;
			p->sections = s;
			section = ln + 1;
			section[strcspn(section, "]")] = '\0';
			p->sections[p->n_sections++] = section;
		} else if (section && (eq = strstr(ln, " = ")) != NULL) {
			struct line *v = realloc(p->v, (p->n + 1) * sizeof(*v));

			if (v == NULL)
				return -1;
			p->v = v;
			*eq = '\0';
			p->v[p->n++] = (struct line){section, ln, eq + 3};
		}
	}
	return 0;
}

static const char *
value_of(const struct printed *p, const char *section, const char *key)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->v[i].section, section) == 0 &&
		    strcmp(p->v[i].key, key) == 0)
			return p->v[i].value;
	return NULL;
}

static bool
has_section(const struct printed *p, const char *section)
{
	for (size_t i = 0; i < p->n_sections; i++)
		if (strcmp(p->sections[i], section) == 0)
			return true;
	return false;
}

static enum config_section
kind_of(const char *section)
{
	if (strncmp(section, "server ", 7) == 0)
		return CONFIG_SEC_SERVER;
	if (strncmp(section, "user ", 5) == 0)
		return CONFIG_SEC_USER;
	if (strncmp(section, "channel ", 8) == 0)
		return CONFIG_SEC_CHANNEL;
	if (strncmp(section, "service ", 8) == 0)
		return CONFIG_SEC_SERVICE;
	return CONFIG_SEC_CLUSTER;
}

static void
add_change(json_t *changes, const char *section, const char *key,
    const char *from, const char *to)
{
	bool secret = (from && strncmp(from, "(set #", 6) == 0) ||
	    (to && strncmp(to, "(set #", 6) == 0);
	char line[CONFIG_LINE_MAX * 2 + 200];

	if (secret)
		snprintf(line, sizeof(line), "[%s] %s: %s", section, key,
		    from == NULL     ? "set"
			: to == NULL ? "removed"
				     : "changed");
	else
		snprintf(line, sizeof(line), "[%s] %s: %s -> %s", section, key,
		    from ? from : "(unset)", to ? to : "(unset)");
	json_array_append_new(changes,
	    json_pack("{s:s,s:s,s:o,s:o,s:b,s:s}", "section", section, "key",
		key, "from", secret || !from ? json_null() : json_string(from),
		"to", secret || !to ? json_null() : json_string(to), "secret",
		secret, "line", line));
}

/* Why a change needs a restart, and of whom; nothing when it is live. */
static void
add_restart(json_t *restart, const char *section, const char *key)
{
	enum config_section k = kind_of(section);
	char why[200];

	if (config_option_runtime(k, key))
		return;
	snprintf(why, sizeof(why), "%s changed", key);
	json_array_append_new(restart,
	    json_pack("{s:s,s:s}", "server",
		k == CONFIG_SEC_SERVER ? section + 7 : "every server",
		"because", why));
}

static void
diff_section(const struct printed *a, const struct printed *b,
    const char *section, json_t *changes, json_t *restart)
{
	for (size_t i = 0; i < a->n; i++) {
		const char *to;

		if (strcmp(a->v[i].section, section) != 0)
			continue;
		to = value_of(b, section, a->v[i].key);
		if (to == NULL || strcmp(to, a->v[i].value) != 0) {
			add_change(
			    changes, section, a->v[i].key, a->v[i].value, to);
			add_restart(restart, section, a->v[i].key);
		}
	}
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->v[i].section, section) == 0 &&
		    value_of(a, section, b->v[i].key) == NULL) {
			add_change(
			    changes, section, b->v[i].key, NULL, b->v[i].value);
			add_restart(restart, section, b->v[i].key);
		}
}

static void
whole_section(json_t *changes, json_t *restart, const char *section, bool added)
{
	char line[200];

	snprintf(line, sizeof(line), "[%s] %s", section,
	    added ? "added" : "removed");
	json_array_append_new(changes,
	    json_pack("{s:s,s:n,s:s,s:s}", "section", section, "key", "what",
		added ? "added" : "removed", "line", line));
	if (kind_of(section) == CONFIG_SEC_SERVER)
		json_array_append_new(restart,
		    json_pack("{s:s,s:s}", "server", section + 7, "because",
			added ? "it is new: start it"
			      : "it left the cluster: "
				"stop it"));
	/* the master reads its services when it starts */
	else if (kind_of(section) == CONFIG_SEC_SERVICE)
		json_array_append_new(restart,
		    json_pack("{s:s,s:s}", "server", "every server", "because",
			added ? "a service was added"
			      : "a service was removed"));
}

json_t *
config_diff(const struct config *a, const struct config *b)
{
	struct printed pa = {0}, pb = {0};
	json_t *changes = json_array(), *restart = json_array(), *out = NULL;
	char summary[200] = "";

	if (printed_of(a, &pa) != 0 || printed_of(b, &pb) != 0 ||
	    changes == NULL || restart == NULL)
		goto done;
	for (size_t i = 0; i < pa.n_sections; i++) {
		if (has_section(&pb, pa.sections[i]))
			diff_section(
			    &pa, &pb, pa.sections[i], changes, restart);
		else
			whole_section(changes, restart, pa.sections[i], false);
	}
	for (size_t i = 0; i < pb.n_sections; i++)
		if (!has_section(&pa, pb.sections[i]))
			whole_section(changes, restart, pb.sections[i], true);
	/* a one-line summary for the history */
	for (size_t i = 0; i < json_array_size(changes); i++) {
		json_t *c = json_array_get(changes, i);
		const char *key = json_string_value(json_object_get(c, "key"));
		char item[120];
		size_t used = strlen(summary);

		snprintf(item, sizeof(item), "%s[%s]%s%s", i ? ", " : "",
		    json_string_value(json_object_get(c, "section")),
		    key ? " " : " ",
		    key ? key : json_string_value(json_object_get(c, "what")));
		if (used + strlen(item) + 6 >= sizeof(summary)) {
			snprintf(
			    summary + used, sizeof(summary) - used, ", ...");
			break;
		}
		snprintf(summary + used, sizeof(summary) - used, "%s", item);
	}
	out = json_pack("{s:O,s:O,s:s}", "changes", changes, "restart", restart,
	    "summary", json_array_size(changes) ? summary : "no change");
done:
	printed_free(&pa);
	printed_free(&pb);
	json_decref(changes);
	json_decref(restart);
	return out;
}
