/* What changes between two configurations (see diff.c). */
#ifndef US_CONFIG_DIFF_H
#define US_CONFIG_DIFF_H

#include <jansson.h>

#include "config/config.h"

/*
 * The changes from a to b: {"changes": [{"section","key","from","to",
 * "secret","line"}, ...] (a whole section added or removed has "what"
 * instead of a key), "restart": [{"server","because"}] for changes that
 * do not take effect while a server runs, "summary": one line}. Secrets
 * are shown as changed, never in clear. NULL on ENOMEM.
 */
json_t *config_diff(const struct config *a, const struct config *b);

#endif
