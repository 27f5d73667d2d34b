/* Unit tests of the config loader and checker (src/config/). */
#include <stdbool.h>
#include <time.h>

#include "common/common.h"
#include "config/config.h"
#include "test.h"

static const char good[] =
    "[cluster]\n"
    "name = t\n"
    "etcd = http://127.0.0.1:2379, http://127.0.0.1:2479\n"
    "[server PA1]\n"
    "address = 127.0.0.1\n"
    "api_port = 8001\n"
    "sip_port = 5071\n"
    "route_point = 6000\n"
    "media_port_base = 5001\n"
    "media_ports = 18\n"
    "max_media_ports = 36\n"
    "rtp_port_base = 20000\n"
    "failover = PA2\n"
    "[server PA2]\n"
    "address = 127.0.0.1\n"
    "api_port = 8002\n"
    "sip_port = 5072\n"
    "spare = yes\n"
    "max_media_ports = 18\n";

static struct config *
parse(const char *text, struct config_diags *d)
{
	memset(d, 0, sizeof(*d));
	return config_parse("t.conf", text, strlen(text), d);
}

/* The diagnostic at line whose message contains needle, or NULL. */
static const struct config_diag *
find(const struct config_diags *d, int line, const char *needle)
{
	for (size_t i = 0; i < d->n; i++)
		if ((line < 0 || d->v[i].line == line) &&
		    strstr(d->v[i].message, needle))
			return &d->v[i];
	return NULL;
}

TEST(config_good)
{
	struct config_diags d;
	struct config *cfg = parse(good, &d);
	const struct config_server *s;

	ASSERT_INT(d.errors, 0);
	ASSERT_INT(d.warnings, 0);
	ASSERT_STR(cfg->cluster.name, "t");
	ASSERT_INT(cfg->cluster.etcd.n, 2);
	ASSERT(!cfg->cluster.etcd_local);
	ASSERT_INT(cfg->cluster.lease_ttl, 2);
	ASSERT_INT(cfg->cluster.failback, CONFIG_FAILBACK_AUTO);
	s = config_server_find(cfg, "PA1");
	ASSERT(s != NULL);
	ASSERT_INT(s->media_ports, 18);
	ASSERT_STR(s->failover.v[0], "PA2");
	ASSERT(config_server_find(cfg, "PA2")->spare);
	ASSERT(config_server_find(cfg, "PA9") == NULL);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_local_etcd)
{
	struct config_diags d;
	struct config *cfg = parse("[cluster]\nname=x\netcd = local\n"
				   "local_etcd_port = 3000\n"
				   "[server A]\naddress=127.0.0.1\nspare=yes\n"
				   "max_media_ports=4\n",
	    &d);

	ASSERT_INT(d.errors, 0);
	ASSERT(cfg->cluster.etcd_local);
	ASSERT_STR(cfg->cluster.etcd.v[0], "http://127.0.0.1:3000");
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_print_roundtrip)
{
	struct config_diags d, d2;
	struct config *cfg = parse(good, &d), *cfg2;
	char *text = NULL, *text2 = NULL;
	size_t len, len2;
	FILE *f = open_memstream(&text, &len);

	config_print(cfg, f);
	fclose(f);
	cfg2 = parse(text, &d2);
	ASSERT_INT(d2.errors, 0);
	f = open_memstream(&text2, &len2);
	config_print(cfg2, f);
	fclose(f);
	ASSERT_STR(text2, text);
	free(text);
	free(text2);
	config_free(cfg);
	config_free(cfg2);
	config_diags_free(&d);
	config_diags_free(&d2);
}

/* Secrets print as (set), and no problem quotes one. */
TEST(config_print_hides_secrets)
{
	static const char hash[] =
	    "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA";
	struct config_diags d;
	struct config *cfg;
	char text[2048], *out = NULL;
	size_t len;
	FILE *f;

	snprintf(text, sizeof(text),
	    "[cluster]\nname = t\netcd = http://127.0.0.1:2379\n"
	    "admin_token = admin-0123456789abc\n"
	    "read_token = read-0123456789abcd\n"
	    "[server PA1]\naddress = 127.0.0.1\nspare = yes\n"
	    "max_media_ports = 2\n"
	    "[user alice]\npassword = %s\n",
	    hash);
	cfg = parse(text, &d);
	ASSERT_INT(d.errors, 0);
	ASSERT_STR(cfg->cluster.read_token, "read-0123456789abcd");
	f = open_memstream(&out, &len);
	config_print(cfg, f);
	fclose(f);
	ASSERT(strstr(out, "admin_token = (set)\n") != NULL);
	ASSERT(strstr(out, "read_token = (set)\n") != NULL);
	ASSERT(strstr(out, "password = (set)\n") != NULL);
	ASSERT(strstr(out, "admin-0123") == NULL);
	ASSERT(strstr(out, "read-0123") == NULL);
	ASSERT(strstr(out, "argon2id") == NULL);
	free(out);
	config_free(cfg);
	config_diags_free(&d);

	cfg = parse("[cluster]\nname = t\n"
		    "admin_token = admin secret 0123456789\n"
		    "read_token = rd\n"
		    "[user bob]\npassword = hunter2\n",
	    &d);
	ASSERT(find(&d, 3, "admin_token: no spaces") != NULL);
	ASSERT(find(&d, 4, "read_token: must be 16 to 200") != NULL);
	ASSERT(find(&d, 6, "argon2id hash") != NULL);
	for (size_t i = 0; i < d.n; i++) {
		ASSERT(strstr(d.v[i].message, "admin secret") == NULL);
		ASSERT(strstr(d.v[i].message, "'rd'") == NULL);
		ASSERT(strstr(d.v[i].message, "hunter2") == NULL);
	}
	config_free(cfg);
	config_diags_free(&d);
}

/*
 * TLS: https endpoints taken, the API's URLs follow tls_cert, file
 * options resolve next to the config, pairs are complete, secrets of
 * NATS are hidden, and an option for a link that does not use it is an
 * error.
 */
TEST(config_tls)
{
	static const char tls[] =
	    "[cluster]\nname = t\n"
	    "etcd = https://127.0.0.1:2379\n"
	    "tls_cert = api.crt\ntls_key = /keys/api.key\n"
	    "etcd_cert = e.crt\netcd_key = e.key\n"
	    "messaging = nats://127.0.0.1:4222\n"
	    "messaging_ca = ca.crt\n"
	    "messaging_token = nats-token-0123456789\n"
	    "[server A]\naddress = 127.0.0.1\napi_port = 8443\n"
	    "spare = yes\nmax_media_ports = 2\n";
	struct config_diags d;
	struct config *cfg;
	char url[64], *path, *out = NULL;
	size_t len;
	FILE *f;

	memset(&d, 0, sizeof(d));
	cfg = config_parse("/etc/us/cluster.conf", tls, strlen(tls), &d);
	ASSERT_INT(d.errors, 0);
	config_api_url(cfg, "127.0.0.1", 8443, url, sizeof(url));
	ASSERT_STR(url, "https://127.0.0.1:8443");
	path = config_file_path(cfg, cfg->cluster.tls_cert);
	ASSERT_STR(path, "/etc/us/api.crt");
	free(path);
	path = config_file_path(cfg, cfg->cluster.tls_key);
	ASSERT_STR(path, "/keys/api.key");
	free(path);
	ASSERT(config_file_path(cfg, cfg->cluster.tls_ca) == NULL);
	f = open_memstream(&out, &len);
	config_print(cfg, f);
	fclose(f);
	ASSERT(strstr(out, "messaging_token = (set)\n") != NULL);
	ASSERT(strstr(out, "nats-token") == NULL);
	free(out);
	config_free(cfg);
	config_diags_free(&d);

	cfg = parse("[cluster]\nname = t\netcd = http://127.0.0.1:2379\n"
		    "[server A]\naddress = 127.0.0.1\napi_port = 80\n"
		    "spare = yes\nmax_media_ports = 2\n",
	    &d);
	config_api_url(cfg, "127.0.0.1", 80, url, sizeof(url));
	ASSERT_STR(url, "http://127.0.0.1:80");
	config_free(cfg);
	config_diags_free(&d);

	cfg = parse("[cluster]\nname = t\n"
		    "etcd = http://127.0.0.1:2379, https://127.0.0.1:2479\n"
		    "tls_key = k\n"
		    "etcd_ca = ca\n"
		    "messaging = nats://127.0.0.1:4222\n"
		    "messaging_password = nats-password-0123456789\n"
		    "messaging_key = k\n"
		    "[server A]\naddress = 127.0.0.1\n"
		    "spare = yes\nmax_media_ports = 2\n",
	    &d);
	ASSERT(find(&d, 3, "http:// and https:// endpoints mixed") != NULL);
	ASSERT(find(&d, 4, "tls_key is set but tls_cert is not") != NULL);
	ASSERT(find(&d, 7,
		   "messaging_password is set but messaging_user "
		   "is not") != NULL);
	ASSERT(find(&d, 8,
		   "messaging_key is set but messaging_cert is "
		   "not") != NULL);
	ASSERT_INT(d.errors, 4);
	for (size_t i = 0; i < d.n; i++)
		ASSERT(strstr(d.v[i].message, "nats-password") == NULL);
	config_free(cfg);
	config_diags_free(&d);

	cfg = parse("[cluster]\nname = t\netcd = local\n"
		    "etcd_cert = c\netcd_key = k\nmessaging_ca = ca\n"
		    "[server A]\naddress = 127.0.0.1\n"
		    "spare = yes\nmax_media_ports = 2\n",
	    &d);
	ASSERT(find(&d, 4, "etcd = local") != NULL);
	ASSERT(find(&d, 5, "etcd = local") != NULL);
	ASSERT(find(&d, 6, "messaging = local") != NULL);
	ASSERT_INT(d.errors, 3);
	config_free(cfg);
	config_diags_free(&d);
}

/* A read-only token that opens control too is refused. */
TEST(config_read_token_not_admin)
{
	struct config_diags d;
	struct config *cfg = parse("[cluster]\nname = t\n"
				   "admin_token = 0123456789abcdef\n"
				   "read_token = 0123456789abcdef\n"
				   "[server A]\naddress = 127.0.0.1\n"
				   "spare = yes\nmax_media_ports = 2\n",
	    &d);

	ASSERT_INT(d.errors, 1);
	ASSERT(find(&d, 4, "read_token is the admin_token (line 3)") != NULL);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_reports_every_problem)
{
	struct config_diags d;
	struct config *cfg = parse("[cluster]\n" /* 1 */
				   "name = t\n" /* 2 */
				   "lease_tll = 3\n" /* 3 */
				   "[servr PA1]\n" /* 4 */
				   "[server PA1]\n" /* 5 */
				   "address = 127.0.0.1\n" /* 6 */
				   "api_port = 99999\n" /* 7 */
				   "sip_port = abc\n" /* 8 */
				   "route_point = 6000\n" /* 9 */
				   "media_ports = 2\n" /* 10 */
				   "media_port_base = 1\n" /* 11 */
				   "rtp_port_base = 30000\n" /* 12 */
				   "failover = PA1, 10.0.0.2, PA3\n" /* 13 */
				   "this line is wrong\n" /* 14 */
				   "[server PA1]\n", /* 15 */
	    &d);

	ASSERT(find(&d, 3, "did you mean 'lease_ttl'") != NULL);
	ASSERT(find(&d, 4, "did you mean [server]") != NULL);
	ASSERT(find(&d, 7, "out of range 1..65535") != NULL);
	ASSERT(find(&d, 8, "not a whole number") != NULL);
	ASSERT(find(&d, 13, "lists itself") != NULL);
	ASSERT(find(&d, 13, "'10.0.0.2' is an address") != NULL);
	ASSERT(find(&d, 13, "unknown server 'PA3'") != NULL);
	ASSERT(find(&d, 14, "expected 'key = value'") != NULL);
	ASSERT(find(&d, 15, "duplicate server PA1 (first at line 5)") != NULL);
	ASSERT(d.errors >= 9);
	/* in line order */
	for (size_t i = 1; i < d.n; i++)
		ASSERT(d.v[i - 1].line <= d.v[i].line);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_capacity_warning)
{
	struct config_diags d;
	struct config *cfg = parse("[cluster]\nname=t\netcd=http://a:1\n"
				   "[server PA1]\naddress=10.0.0.1\n"
				   "route_point=6000\nmedia_port_base=5001\n"
				   "media_ports=24\nmax_media_ports=42\n"
				   "rtp_port_base=20000\nfailover=PA2\n"
				   "[server PA2]\naddress=10.0.0.2\n"
				   "route_point=6100\nmedia_port_base=5101\n"
				   "media_ports=18\nmax_media_ports=36\n"
				   "rtp_port_base=20000\nfailover=PA1\n",
	    &d);

	ASSERT_INT(d.errors, 0);
	ASSERT(
	    find(&d, 11,
		"PA2 covers PA1: 18 + 24 ports > max_media_ports 36") != NULL);
	ASSERT(find(&d, -1, "PA1 covers PA2") == NULL);
	ASSERT_INT(d.v[0].severity, CONFIG_WARNING);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_long_line)
{
	struct config_diags d;
	char text[1024];
	struct config *cfg;

	snprintf(text, sizeof(text), "[cluster]\nname = %0300d\n", 1);
	cfg = parse(text, &d);
	ASSERT(find(&d, 2, "longer than") != NULL);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_list_repeats_add_up)
{
	struct config_diags d;
	struct config *cfg = parse(
	    "[cluster]\nname=t\netcd=http://a:1\n"
	    "[server A]\naddress=10.0.0.1\nroute_point=1\nmedia_port_base=1\n"
	    "media_ports=1\nmax_media_ports=3\nrtp_port_base=20000\n"
	    "failover = B\nfailover = C\n"
	    "[server B]\naddress=10.0.0.2\nspare=yes\nmax_media_ports=1\n"
	    "[server C]\naddress=10.0.0.3\nspare=yes\nmax_media_ports=1\n",
	    &d);

	ASSERT_INT(d.errors, 0);
	ASSERT_INT(config_server_find(cfg, "A")->failover.n, 2);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_patterns)
{
	ASSERT(config_pattern_match("2XXX", "2007"));
	ASSERT(config_pattern_match("3.2XXX", "32007"));
	ASSERT(!config_pattern_match("3.2XXX", "2007"));
	ASSERT(!config_pattern_match("2XXX", "200"));
	ASSERT(!config_pattern_match("2XXX", "20a7"));
	ASSERT(config_pattern_match("2007", "2007"));
}

TEST(config_no_file)
{
	struct config_diags d = {0};

	ASSERT(config_load("/nonexistent/x.conf", &d) == NULL);
	ASSERT_INT(d.errors, 1);
	ASSERT(strstr(d.v[0].message, "cannot read") != NULL);
	config_diags_free(&d);
}

TEST(config_binary_garbage)
{
	struct config_diags d;
	char junk[4096];
	struct config *cfg;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)((i * 7919u) & 0xff);
	memset(&d, 0, sizeof(d));
	cfg = config_parse("junk", junk, sizeof(junk), &d);
	ASSERT(d.errors > 0);
	config_free(cfg);
	config_diags_free(&d);
}

TEST(config_schedules)
{
	struct config_schedule s;
	char err[256];
	int64_t now, slot, next;
	struct tm tm;
	time_t t;

	ASSERT_INT(config_schedule_parse("every 6h", &s, err, sizeof(err)), 0);
	ASSERT_INT(s.kind, CONFIG_SCHEDULE_EVERY);
	ASSERT_INT(s.interval_s, 6 * 3600);
	/* aligned on the epoch: 1795000000000 is 2026-11-18T11:06:40Z */
	now = 1795000000000;
	ASSERT_INT(config_schedule_slot(&s, now), 1794981600000);
	ASSERT_INT(config_schedule_next(&s, now), 1794981600000 + 21600000);
	ASSERT_INT(config_schedule_parse("every 10s", &s, err, sizeof(err)), 0);
	ASSERT_INT(config_schedule_slot(&s, 1795000000999), 1795000000000);
	ASSERT_INT(config_schedule_parse("every 2d", &s, err, sizeof(err)), 0);
	ASSERT_INT(s.interval_s, 2 * 86400);

	/* daily: the latest HH:MM local at or before now, then the next */
	ASSERT_INT(
	    config_schedule_parse("daily 02:00", &s, err, sizeof(err)), 0);
	ASSERT_INT(s.interval_s, 86400);
	slot = config_schedule_slot(&s, now);
	next = config_schedule_next(&s, now);
	ASSERT(slot <= now && now < next);
	t = (time_t)(slot / 1000);
	localtime_r(&t, &tm);
	ASSERT_INT(tm.tm_hour, 2);
	ASSERT_INT(tm.tm_min, 0);
	ASSERT_INT(tm.tm_sec, 0);
	ASSERT(next - slot >= 23 * 3600000LL && next - slot <= 25 * 3600000LL);
	ASSERT_INT(config_schedule_slot(&s, slot), slot);
	ASSERT_INT(config_schedule_slot(&s, slot - 1) < slot, 1);

	/* what is refused says why */
	ASSERT_INT(config_schedule_parse("every 5s", &s, err, sizeof(err)), -1);
	ASSERT(strstr(err, "every 10s") != NULL);
	ASSERT_INT(config_schedule_parse("every 6x", &s, err, sizeof(err)), -1);
	ASSERT(strstr(err, "unit") != NULL);
	ASSERT_INT(config_schedule_parse("every h", &s, err, sizeof(err)), -1);
	ASSERT_INT(
	    config_schedule_parse("daily 24:00", &s, err, sizeof(err)), -1);
	ASSERT_INT(
	    config_schedule_parse("daily 2:00", &s, err, sizeof(err)), -1);
	ASSERT_INT(
	    config_schedule_parse("every 99999999999d", &s, err, sizeof(err)),
	    -1);
	ASSERT_INT(config_schedule_parse("weekly", &s, err, sizeof(err)), -1);
	ASSERT(strstr(err, "daily HH:MM") != NULL);
	ASSERT_INT(config_schedule_parse("", &s, err, sizeof(err)), -1);
}
