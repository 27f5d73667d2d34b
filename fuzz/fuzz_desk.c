/*
 * libFuzzer target: desk API bodies. The login body (the only desk
 * request with a body) goes through the parser and checks the server
 * runs before anything else; every refusal must say why, every success
 * must hold fields within their caps.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "desks/desks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf[] = "[cluster]\nname = fuzz\netcd = http://127.0.0.1:9\n"
			   "desk_versions = 0.1.0, 0.2.0\n"
			   "[server PA1]\naddress = 127.0.0.1\nspare = yes\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config *cfg;
	static struct config_diags d;
	struct desks_login in;
	struct desks_res r;

	if (cfg == NULL) {
		log_init("fuzz", LOG_LEVEL_ERROR);
		cfg = config_parse("fuzz.conf", conf, sizeof(conf) - 1, &d);
		if (cfg == NULL)
			__builtin_trap();
	}
	if (desks_login_parse(cfg, (const char *)data, size, &in, &r) == 0) {
		if (strlen(in.user) == 0 || strlen(in.desk) == 0 ||
		    strlen(in.password) > 256)
			__builtin_trap();
	} else if (r.message[0] == '\0' || r.status < 400) {
		__builtin_trap();
	}
	json_decref(r.body);
	return 0;
}
