/*
 * The server's TLS files. understudyd checks them once, before its master
 * runs: each is read and parsed with GnuTLS (as libmicrohttpd will parse
 * the API's), a certificate and its key must match, and the API's
 * certificate must name this server's address, the one its URL carries.
 * Every problem is logged with the config's file:line, and the server
 * does not start. The worker then reads the PEM text it hands on: the
 * API's pair to libmicrohttpd, the NATS files to the desks.
 *
 * tls_ca is not read here: it is for the API's clients, on their
 * machines. An expired certificate is a warning only: refusing to start
 * would stop calls too, for want of a certificate that only the API and
 * the desks' links need.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "coord/coord.h"
#include "daemon.h"

#define TLS_FILE_MAX (1024 * 1024)

char *
tls_read_path(const char *path, size_t *len, char *err, size_t errlen)
{
	struct buf b;
	char chunk[8192];
	FILE *f;
	size_t n;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(
		    err, errlen, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	buf_init(&b, TLS_FILE_MAX);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (buf_append(&b, chunk, n) != 0)
			break;
	if (ferror(f) || b.err) {
		snprintf(err, errlen, "cannot read %s: %s", path,
		    b.err ? "larger than 1 MiB" : strerror(errno));
		fclose(f);
		buf_free(&b);
		return NULL;
	}
	fclose(f);
	if (b.data == NULL) {
		snprintf(err, errlen, "%s is empty", path);
		return NULL;
	}
	*len = b.len;
	return b.data;
}

char *
tls_read(const struct config *cfg, const char *value, char *err, size_t errlen)
{
	char *path = config_file_path(cfg, value), *text;
	size_t len;

	if (path == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	text = tls_read_path(path, &len, err, errlen);
	free(path);
	return text;
}

struct tls_checker {
	const struct config *cfg;
	const struct config_server *self;
	int bad;
};

static void problem(struct tls_checker *t, const char *opt, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
problem(struct tls_checker *t, const char *opt, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s:%d: %s: %s", t->cfg->path,
	    config_cluster_line(t->cfg, opt), opt, msg);
	t->bad++;
}

/*
 * The certificates of a PEM file, or NULL (reported); *n set, and the
 * file's text in *text (the caller frees it) when text is not NULL.
 */
static gnutls_x509_crt_t *
certs_load(struct tls_checker *t, const char *opt, const char *value,
    unsigned *n, char **text)
{
	gnutls_x509_crt_t *certs = NULL;
	gnutls_datum_t dt;
	char err[512], *pem;
	int rc;

	if ((pem = tls_read(t->cfg, value, err, sizeof(err))) == NULL) {
		problem(t, opt, "%s", err);
		return NULL;
	}
	dt.data = (unsigned char *)pem;
	dt.size = (unsigned)strlen(pem);
	rc = gnutls_x509_crt_list_import2(
	    &certs, n, &dt, GNUTLS_X509_FMT_PEM, 0);
	if (rc < 0 || *n == 0) {
		problem(t, opt, "%s holds no PEM certificate (%s)", value,
		    rc < 0 ? gnutls_strerror(rc) : "none found");
		free(pem);
		return NULL;
	}
	if (text)
		*text = pem;
	else
		free(pem);
	return certs;
}

static void
certs_free(gnutls_x509_crt_t *certs, unsigned n)
{
	for (unsigned i = 0; certs && i < n; i++)
		gnutls_x509_crt_deinit(certs[i]);
	gnutls_free(certs);
}

static void
check_dates(struct tls_checker *t, const char *opt, gnutls_x509_crt_t crt)
{
	time_t now = time(NULL), from, until;
	char when[32];

	from = gnutls_x509_crt_get_activation_time(crt);
	until = gnutls_x509_crt_get_expiration_time(crt);
	if (until != (time_t)-1 && until < now) {
		time_iso8601((int64_t)until * 1000, when, sizeof(when));
		log_warn("%s:%d: %s: the certificate expired at %s; peers "
			 "will refuse it",
		    t->cfg->path, config_cluster_line(t->cfg, opt), opt, when);
	} else if (from != (time_t)-1 && from > now) {
		time_iso8601((int64_t)from * 1000, when, sizeof(when));
		log_warn("%s:%d: %s: the certificate is valid only from %s; "
			 "peers will refuse it until then",
		    t->cfg->path, config_cluster_line(t->cfg, opt), opt, when);
	}
}

/* A certificate and its key: both parse, and they belong together. */
static void
check_pair(struct tls_checker *t, const char *copt, const char *cval,
    const char *kopt, const char *kval, bool api)
{
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_x509_privkey_t pk = NULL;
	gnutls_x509_crt_t *certs;
	gnutls_datum_t cd, kd;
	char err[512], *ctext = NULL, *ktext = NULL;
	unsigned n = 0;
	int rc;

	if (cval == NULL || kval == NULL)
		return;
	if ((certs = certs_load(t, copt, cval, &n, &ctext)) == NULL)
		return;
	check_dates(t, copt, certs[0]);
	if (api) {
		struct in_addr a;

		/* the address is what the API's URLs carry (config_api_url) */
		if (inet_pton(AF_INET, t->self->address, &a) == 1 &&
		    gnutls_x509_crt_check_ip(
			certs[0], (unsigned char *)&a, sizeof(a), 0) == 0)
			problem(t, copt,
			    "%s does not name %s, the address of %s "
			    "(subjectAltName IP:%s): clients would refuse it",
			    cval, t->self->address, t->self->name,
			    t->self->address);
	}
	if ((ktext = tls_read(t->cfg, kval, err, sizeof(err))) == NULL) {
		problem(t, kopt, "%s", err);
		goto out;
	}
	kd.data = (unsigned char *)ktext;
	kd.size = (unsigned)strlen(ktext);
	cd.data = (unsigned char *)ctext;
	cd.size = (unsigned)strlen(ctext);
	if (gnutls_x509_privkey_init(&pk) < 0 ||
	    gnutls_certificate_allocate_credentials(&cred) < 0) {
		problem(t, kopt, "out of memory");
		goto out;
	}
	if ((rc = gnutls_x509_privkey_import2(
		 pk, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0)
		problem(t, kopt,
		    "%s holds no PEM private key that can be read without a "
		    "password (%s)",
		    kval, gnutls_strerror(rc));
	else if ((rc = gnutls_certificate_set_x509_key_mem2(
		      cred, &cd, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0)
		problem(t, kopt, "%s does not go with %s (%s)", kval, cval,
		    gnutls_strerror(rc));
out:
	if (cred)
		gnutls_certificate_free_credentials(cred);
	if (pk)
		gnutls_x509_privkey_deinit(pk);
	free(ctext);
	if (ktext) {
		explicit_bzero(ktext, strlen(ktext));
		free(ktext);
	}
	certs_free(certs, n);
}

static void
check_ca(struct tls_checker *t, const char *opt, const char *value)
{
	gnutls_x509_crt_t *certs;
	unsigned n = 0;

	if (value && (certs = certs_load(t, opt, value, &n, NULL)) != NULL)
		certs_free(certs, n);
}

int
tls_check(const struct config *cfg, const struct config_server *self)
{
	const struct config_cluster *c = &cfg->cluster;
	struct tls_checker t = {cfg, self, 0};

	check_pair(&t, "tls_cert", c->tls_cert, "tls_key", c->tls_key, true);
	check_ca(&t, "etcd_ca", c->etcd_ca);
	check_pair(
	    &t, "etcd_cert", c->etcd_cert, "etcd_key", c->etcd_key, false);
	check_ca(&t, "messaging_ca", c->messaging_ca);
	check_pair(&t, "messaging_cert", c->messaging_cert, "messaging_key",
	    c->messaging_key, false);
	return t.bad ? -1 : 0;
}

struct etcd *
tls_etcd_new(uv_loop_t *loop, const struct config *cfg, struct etcd_opts *eo)
{
	const struct config_cluster *c = &cfg->cluster;
	char *ca = config_file_path(cfg, c->etcd_ca);
	char *cert = config_file_path(cfg, c->etcd_cert);
	char *key = config_file_path(cfg, c->etcd_key);
	struct etcd *e = NULL;

	if ((c->etcd_ca == NULL || ca) && (c->etcd_cert == NULL || cert) &&
	    (c->etcd_key == NULL || key)) {
		eo->ca_file = ca;
		eo->cert_file = cert;
		eo->key_file = key;
		/* it copies the names */
		e = etcd_new(
		    loop, (const char *const *)c->etcd.v, c->etcd.n, eo);
		eo->ca_file = eo->cert_file = eo->key_file = NULL;
	}
	free(ca);
	free(cert);
	free(key);
	return e;
}
