/*
 * SIP answers: built and sent on their server transaction, and the final
 * answers of non-INVITE server transactions (BYE, CANCEL, OPTIONS, INFO)
 * kept 64*T1, so that a retransmitted request gets the same answer
 * again, byte for byte, while osip2 forgets the transaction as soon as
 * it has answered.
 *
 * RFC 3261 17.2.2 has a server transaction linger (timer J, 32 s over
 * UDP) for that alone. In osip every lingering transaction stays on the
 * list that its timer and execute functions walk several times per loop
 * turn, and that matches every incoming message: at 300 calls/s that is
 * 9,600 BYE transactions, walked for every datagram. Here an answer costs
 * one hash lookup, and the list osip walks holds only the transactions
 * that have not answered yet.
 *
 * A request is found by what RFC 3261 17.2.3 matches a server
 * transaction on: the branch of its top Via (with the magic cookie), the
 * sent-by of that Via and its method. Requests of RFC 2543 peers (no
 * cookie) have no key; their transactions keep osip's timer J.
 *
 * The cap: SIP_RESEND_MAX answers. When it is reached the oldest answer
 * goes before its time (counted); a retransmission of its request then
 * meets no transaction and is answered as a new one.
 */
#include <sys/socket.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sip_int.h"

/* ---- answers ---- */

int
sip_response_new(
    osip_message_t *req, int code, const char *totag, osip_message_t **out)
{
	osip_generic_param_t *tp = NULL;
	osip_message_t *r;

	if (osip_message_init(&r) != 0)
		return -1;
	osip_message_set_version(r, osip_strdup("SIP/2.0"));
	osip_message_set_status_code(r, code);
	osip_message_set_reason_phrase(
	    r, osip_strdup(osip_message_get_reason(code)));
	if (osip_list_clone(&req->vias, &r->vias,
		(int (*)(void *, void **))osip_via_clone) != 0 ||
	    osip_from_clone(req->from, &r->from) != 0 ||
	    osip_to_clone(req->to, &r->to) != 0 ||
	    osip_call_id_clone(req->call_id, &r->call_id) != 0 ||
	    osip_cseq_clone(req->cseq, &r->cseq) != 0) {
		osip_message_free(r);
		return -1;
	}
	if (code > 100 && totag && totag[0] && osip_to_get_tag(r->to, &tp) != 0)
		osip_to_set_tag(r->to, osip_strdup(totag));
	*out = r;
	return 0;
}

void
sip_respond(osip_transaction_t *tr, osip_message_t *r)
{
	osip_event_t *evt = osip_new_outgoing_sipmessage(r);

	evt->transactionid = tr->transactionid;
	osip_transaction_add_event(tr, evt);
	if (sip_one)
		sip_run_soon(sip_one);
}

/* Answer req on tr with a bare status. */
void
sip_answer(osip_transaction_t *tr, osip_message_t *req, int code,
    const char *totag, const char *contact)
{
	osip_message_t *r;

	if (tr == NULL || sip_response_new(req, code, totag, &r) != 0)
		return;
	if (contact)
		osip_message_set_contact(r, contact);
	sip_respond(tr, r);
}

void
sip_random_tag(char *buf, size_t len)
{
	static unsigned seq;

	snprintf(buf, len, "us%" PRIx64 "%x", (uint64_t)time_wall_ms(), ++seq);
}

/* ---- the answers kept ---- */

struct sip_resend_entry {
	struct sip_resend_entry *chain; /* same bucket */
	struct sip_resend_entry *newer; /* expiry order */
	uint64_t expires_ms;
	struct sockaddr_storage to;
	size_t len;
	char *buf; /* in the same allocation, after key */
	char key[]; /* NUL-terminated */
};

int
sip_resend_key(struct osip_message *req, char *key, size_t len)
{
	osip_via_t *via = NULL;
	osip_generic_param_t *branch = NULL;
	int n;

	if (req == NULL || req->sip_method == NULL ||
	    osip_message_get_via(req, 0, &via) < 0 || via == NULL ||
	    via->host == NULL ||
	    osip_via_param_get_byname(via, "branch", &branch) != 0 ||
	    branch == NULL || branch->gvalue == NULL ||
	    strncmp(branch->gvalue, "z9hG4bK", 7) != 0)
		return -1;
	n = snprintf(key, len, "%s %s %s:%s", req->sip_method, branch->gvalue,
	    via->host, via->port ? via->port : "5060");
	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* FNV-1a */
static size_t
bucket_of(const char *key)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 1099511628211ULL;
	return (size_t)(h & (SIP_RESEND_BUCKETS - 1));
}

/* Unlink e from its bucket's chain. */
static void
unchain(struct sip_resend *r, struct sip_resend_entry *e)
{
	struct sip_resend_entry **pp = &r->table[bucket_of(e->key)];

	while (*pp && *pp != e)
		pp = &(*pp)->chain;
	if (*pp)
		*pp = e->chain;
}

/* Drop the oldest answer. */
static void
drop_oldest(struct sip_resend *r)
{
	struct sip_resend_entry *e = r->oldest;

	unchain(r, e);
	r->oldest = e->newer;
	if (r->oldest == NULL)
		r->newest = NULL;
	r->n--;
	free(e);
}

static struct sip_resend_entry *
find(const struct sip_resend *r, const char *key, size_t *bucket)
{
	struct sip_resend_entry *e;

	*bucket = bucket_of(key);
	if (r->table == NULL)
		return NULL;
	for (e = r->table[*bucket]; e; e = e->chain)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

int
sip_resend_put(struct sip_resend *r, const char *key, const char *buf,
    size_t len, const struct sockaddr *to, size_t tolen, uint64_t now_ms)
{
	struct sip_resend_entry *e;
	size_t b, klen = strlen(key);

	if (tolen > sizeof(e->to))
		return -1;
	if (r->table == NULL &&
	    (r->table = calloc(SIP_RESEND_BUCKETS, sizeof(*r->table))) == NULL)
		return -1;
	if (find(r, key, &b) != NULL)
		return 0; /* answered once; a second answer is not sent */
	if ((e = malloc(sizeof(*e) + klen + 1 + len)) == NULL)
		return -1;
	while (r->n >= SIP_RESEND_MAX) {
		drop_oldest(r);
		r->pushed_out++;
	}
	memcpy(e->key, key, klen + 1);
	e->buf = e->key + klen + 1;
	memcpy(e->buf, buf, len);
	e->len = len;
	memset(&e->to, 0, sizeof(e->to));
	memcpy(&e->to, to, tolen);
	e->expires_ms = now_ms + SIP_RESEND_KEEP_MS;
	e->chain = r->table[b];
	r->table[b] = e;
	e->newer = NULL;
	if (r->newest)
		r->newest->newer = e;
	else
		r->oldest = e;
	r->newest = e;
	r->n++;
	return 0;
}

const char *
sip_resend_get(struct sip_resend *r, const char *key, uint64_t now_ms,
    size_t *len, const struct sockaddr **to)
{
	struct sip_resend_entry *e;
	size_t b;

	if ((e = find(r, key, &b)) == NULL || e->expires_ms <= now_ms)
		return NULL;
	r->resent++;
	*len = e->len;
	*to = (const struct sockaddr *)&e->to;
	return e->buf;
}

size_t
sip_resend_expire(struct sip_resend *r, uint64_t now_ms)
{
	size_t n = 0;

	/* every answer is kept as long: the oldest expires first */
	while (r->oldest && r->oldest->expires_ms <= now_ms) {
		drop_oldest(r);
		n++;
	}
	return n;
}

void
sip_resend_free(struct sip_resend *r)
{
	while (r->oldest)
		drop_oldest(r);
	free(r->table);
	r->table = NULL;
}

/* ---- the glue to osip ---- */

/*
 * A non-INVITE server transaction's final answer, kept for the
 * retransmissions of its request (below); the transaction itself
 * ends at once (its timer J was set to 0 in sip_input).
 */
void
sip_keep_answer(struct sip *s, osip_transaction_t *tr, const char *buf,
    size_t len, const struct sockaddr *to)
{
	char key[SIP_RESEND_KEY_MAX];

	if (sip_resend_key(tr->orig_request, key, sizeof(key)) != 0)
		return;
	if (sip_resend_put(&s->resend, key, buf, len, to,
		to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					  : sizeof(struct sockaddr_in),
		time_mono_ms()) != 0)
		log_warn("sip: out of memory keeping an answer; a "
			 "retransmission of its request is answered anew");
}

/* A retransmitted non-INVITE request answered again from the kept ones. */
bool
sip_answered_before(struct sip *s, const char *key)
{
	const struct sockaddr *to;
	const char *buf;
	size_t len;
	uv_buf_t b;

	if ((buf = sip_resend_get(
		 &s->resend, key, time_mono_ms(), &len, &to)) == NULL)
		return false;
	b = uv_buf_init((char *)buf, (unsigned)len);
	(void)uv_udp_try_send(&s->sock, &b, 1, to);
	return true;
}
