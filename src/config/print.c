/*
 * Printing the configuration: the normalised file, every option with its
 * value as the option table (options.c) says, secrets as "(set)".
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "config.h"

/*
 * A secret as a mark that changes when it does: a keyed hash of it (the
 * key is fixed, so the same secret gives the same mark in two texts),
 * cut to 8 hex digits, which says nothing of the secret itself.
 */
static void
secret_mark(FILE *f, const char *name, const char *v)
{
	static const unsigned char key[crypto_shorthash_KEYBYTES] =
	    "understudy-diff";
	unsigned char h[crypto_shorthash_BYTES];

	crypto_shorthash(h, (const unsigned char *)v, strlen(v), key);
	fprintf(
	    f, "%s = (set #%02x%02x%02x%02x)\n", name, h[0], h[1], h[2], h[3]);
}

static void
section_print(const struct config *cfg, enum config_section sec,
    const void *obj, FILE *f, bool marks)
{
	for (size_t i = 0; i < config_n_options; i++) {
		const struct config_option *o = &config_options[i];
		const char *field = (const char *)obj + o->offset;

		if (o->section != sec)
			continue;
		switch (o->type) {
		case CONFIG_TYPE_INT: {
			long v = *(const long *)(const void *)field;

			if (v == 0 && o->def == NULL)
				continue; /* unset, and no default */
			fprintf(f, "%s = %ld\n", o->name, v);
			break;
		}
		case CONFIG_TYPE_STRING:
		case CONFIG_TYPE_SECRET: {
			const char *v = *(char *const *)(const void *)field;

			if (v && o->type == CONFIG_TYPE_SECRET && marks)
				secret_mark(f, o->name, v);
			else if (v)
				fprintf(f, "%s = %s\n", o->name,
				    o->type == CONFIG_TYPE_SECRET ? "(set)"
								  : v);
			break;
		}
		case CONFIG_TYPE_BOOL:
			fprintf(f, "%s = %s\n", o->name,
			    *(const bool *)(const void *)field ? "yes" : "no");
			break;
		case CONFIG_TYPE_ENUM:
			fprintf(f, "%s = %s\n", o->name,
			    o->choices[*(const int *)(const void *)field]);
			break;
		case CONFIG_TYPE_LIST: {
			const struct strlist *l =
			    (const struct strlist *)(const void *)field;

			if (sec == CONFIG_SEC_CLUSTER &&
			    ((cfg->cluster.etcd_local &&
				 l == &cfg->cluster.etcd) ||
				(cfg->cluster.messaging_local &&
				    l == &cfg->cluster.messaging))) {
				fprintf(f, "%s = local\n", o->name);
				break;
			}
			if (l->n == 0)
				continue;
			fprintf(f, "%s = ", o->name);
			for (size_t j = 0; j < l->n; j++)
				fprintf(f, "%s%s", j ? ", " : "", l->v[j]);
			fputc('\n', f);
			break;
		}
		}
	}
}

static void
print_all(const struct config *cfg, FILE *f, bool marks)
{
	fprintf(f, "[cluster]\n");
	section_print(cfg, CONFIG_SEC_CLUSTER, &cfg->cluster, f, marks);
	for (size_t i = 0; i < cfg->n_servers; i++) {
		fprintf(f, "\n[server %s]\n", cfg->servers[i].name);
		section_print(
		    cfg, CONFIG_SEC_SERVER, &cfg->servers[i], f, marks);
	}
	for (size_t i = 0; i < cfg->n_users; i++) {
		fprintf(f, "\n[user %s]\n", cfg->users[i].name);
		section_print(cfg, CONFIG_SEC_USER, &cfg->users[i], f, marks);
	}
	for (size_t i = 0; i < cfg->n_channels; i++) {
		fprintf(f, "\n[channel %s]\n", cfg->channels[i].name);
		section_print(
		    cfg, CONFIG_SEC_CHANNEL, &cfg->channels[i], f, marks);
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		fprintf(f, "\n[service %s]\n", cfg->services[i].name);
		section_print(
		    cfg, CONFIG_SEC_SERVICE, &cfg->services[i], f, marks);
	}
}

void
config_print(const struct config *cfg, FILE *f)
{
	print_all(cfg, f, false);
}

void
config_print_marked(const struct config *cfg, FILE *f)
{
	print_all(cfg, f, true);
}
