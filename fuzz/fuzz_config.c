/* libFuzzer target: the config loader and checker on arbitrary files. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"
#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_diags d = {0};
	struct config *cfg;

	cfg = config_parse("fuzz.conf", (const char *)data, size, &d);
	if (cfg && d.errors == 0) {
		/* what was accepted must print */
		FILE *f = fopen("/dev/null", "w");

		if (f) {
			config_print(cfg, f);
			fclose(f);
		}
	}
	config_free(cfg);
	config_diags_free(&d);
	return 0;
}
