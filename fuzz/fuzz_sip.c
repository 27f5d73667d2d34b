/*
 * libFuzzer target: arbitrary datagrams into the SIP entry point of a
 * real server stack (config, agent, calls, SIP on the loop). etcd is not
 * reachable, so the server owns nothing: requests are parsed, checked,
 * matched to transactions and answered (404, 480, 481, 405, 200).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "calls/calls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf[] =
    "[cluster]\nname = fuzz\netcd = http://127.0.0.1:9\n"
    "[server PA1]\naddress = 127.0.0.1\napi_port = 9\nsip_port = 45061\n"
    "route_point = 6000\nmedia_port_base = 5001\nmedia_ports = 2\n"
    "rtp_port_base = 45100\ninterceptor_ports = 2XXX\n";

static struct sip *stack;
static uv_loop_t *loop;

static char dir[] = "/tmp/us-fuzz-sip-XXXXXX";

/* the database of the run goes with it */
static void
cleanup(void)
{
	static const char *const files[] = {
	    "understudy.db", "understudy.db-wal", "understudy.db-shm"};
	char path[128];

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void
setup(void)
{
	struct records *r;
	struct store *st;
	char err[256];
	static struct config_diags d;
	static struct config *cfg;
	struct etcd *e;
	struct members *m;
	struct lease *l;
	struct agent *a;
	struct lease_cbs cbs = {NULL, NULL};
	struct stream_config sc = {.cluster = "fuzz", .server = "PA1"};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	log_init("fuzz", LOG_LEVEL_ERROR);
	loop = uv_default_loop();
	cfg = config_parse("fuzz.conf", conf, sizeof(conf) - 1, &d);
	e = etcd_new(loop, (const char *const *)cfg->cluster.etcd.v, 1, NULL);
	m = members_new(e, cfg, "PA1", NULL, NULL);
	l = lease_new(loop, e, 2, &cbs, NULL);
	a = agent_new(loop, e, cfg, &cfg->servers[0], l, m, false);
	if (mkdtemp(dir) == NULL ||
	    (st = store_open(dir, err, sizeof(err))) == NULL)
		return;
	atexit(cleanup);
	r = records_new(loop, a, st, &sc);
	stack = sip_new(loop, a, calls_new(loop, a, r), cfg, &cfg->servers[0]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in from;

	if (stack == NULL)
		setup();
	if (stack == NULL || size > 4096)
		return 0;
	uv_ip4_addr("127.0.0.1", 9, &from);
	sip_input(
	    stack, (const char *)data, size, (const struct sockaddr *)&from);
	uv_run(loop, UV_RUN_NOWAIT);
	return 0;
}
