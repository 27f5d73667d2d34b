/*
 * Unit tests of src/calls/sip_answer.c: the kept answers of non-INVITE
 * requests, found by RFC 3261's matching key, expired after 64*T1 in
 * order, and capped with the oldest going first.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <osip2/osip.h>

#include "calls/calls.h"
#include "test.h"

static osip_message_t *
request(const char *method, const char *via_tail)
{
	osip_message_t *m = NULL;
	char text[512];
	int n;

	parser_init(); /* osip_init does it in the server */
	n = snprintf(text, sizeof(text),
	    "%s sip:rp@127.0.0.1 SIP/2.0\r\n"
	    "Via: SIP/2.0/UDP %s\r\n"
	    "Max-Forwards: 70\r\n"
	    "From: <sip:caller@127.0.0.1>;tag=a\r\n"
	    "To: <sip:rp@127.0.0.1>;tag=b\r\n"
	    "Call-ID: resend@127.0.0.1\r\n"
	    "CSeq: 2 %s\r\n"
	    "Content-Length: 0\r\n\r\n",
	    method, via_tail, method);
	ASSERT_INT(osip_message_init(&m), 0);
	ASSERT_INT(osip_message_parse(m, text, (size_t)n), 0);
	return m;
}

/* The key is method, branch and sent-by; RFC 2543 branches have none. */
TEST(sip_resend_key)
{
	char k1[SIP_RESEND_KEY_MAX], k2[SIP_RESEND_KEY_MAX];
	osip_message_t *bye = request("BYE", "10.0.0.1:5070;branch=z9hG4bK-1");
	osip_message_t *cancel =
	    request("CANCEL", "10.0.0.1:5070;branch=z9hG4bK-1");
	osip_message_t *old = request("BYE", "10.0.0.1:5070;branch=1234");
	osip_message_t *noport = request("BYE", "10.0.0.1;branch=z9hG4bK-1");

	ASSERT_INT(sip_resend_key(bye, k1, sizeof(k1)), 0);
	ASSERT_STR(k1, "BYE z9hG4bK-1 10.0.0.1:5070");
	ASSERT_INT(sip_resend_key(cancel, k2, sizeof(k2)), 0);
	ASSERT(strcmp(k1, k2) != 0);
	ASSERT_INT(sip_resend_key(old, k2, sizeof(k2)), -1);
	ASSERT_INT(sip_resend_key(noport, k2, sizeof(k2)), 0);
	ASSERT_STR(k2, "BYE z9hG4bK-1 10.0.0.1:5060");
	ASSERT_INT(sip_resend_key(bye, k2, 10), -1); /* too long: none */
	ASSERT_INT(sip_resend_key(NULL, k2, sizeof(k2)), -1);
	osip_message_free(bye);
	osip_message_free(cancel);
	osip_message_free(old);
	osip_message_free(noport);
}

/* Kept answers come back byte for byte until they expire, oldest first. */
TEST(sip_resend_keep_and_expire)
{
	struct sip_resend r = {0};
	struct sockaddr_in a;
	const struct sockaddr *to = NULL;
	const char *got;
	size_t len = 0;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(5070);
	inet_pton(AF_INET, "10.0.0.1", &a.sin_addr);
	ASSERT(sip_resend_get(&r, "BYE x 1:1", 0, &len, &to) == NULL);
	ASSERT_INT(sip_resend_put(&r, "BYE x 1:1", "SIP/2.0 200 OK\r\n", 16,
		       (struct sockaddr *)&a, sizeof(a), 1000),
	    0);
	ASSERT_INT(sip_resend_put(&r, "BYE y 1:1", "SIP/2.0 481 No\r\n", 16,
		       (struct sockaddr *)&a, sizeof(a), 2000),
	    0);
	/* a second answer under one key leaves the first */
	ASSERT_INT(sip_resend_put(&r, "BYE x 1:1", "SIP/2.0 500 No\r\n", 16,
		       (struct sockaddr *)&a, sizeof(a), 2000),
	    0);
	ASSERT_INT(r.n, 2);
	got = sip_resend_get(&r, "BYE x 1:1", 1500, &len, &to);
	ASSERT(got != NULL);
	ASSERT_INT(len, 16);
	ASSERT(memcmp(got, "SIP/2.0 200 OK\r\n", 16) == 0);
	ASSERT_INT(to->sa_family, AF_INET);
	ASSERT_INT(ntohs(((const struct sockaddr_in *)to)->sin_port), 5070);
	ASSERT_INT(r.resent, 1);

	ASSERT_INT(sip_resend_expire(&r, 1000 + SIP_RESEND_KEEP_MS - 1), 0);
	ASSERT_INT(sip_resend_expire(&r, 1000 + SIP_RESEND_KEEP_MS), 1);
	ASSERT(sip_resend_get(&r, "BYE x 1:1", 1000 + SIP_RESEND_KEEP_MS, &len,
		   &to) == NULL);
	ASSERT(sip_resend_get(&r, "BYE y 1:1", 1000 + SIP_RESEND_KEEP_MS, &len,
		   &to) != NULL);
	ASSERT_INT(sip_resend_expire(&r, 1u << 30), 1);
	ASSERT_INT(r.n, 0);
	ASSERT(r.oldest == NULL && r.newest == NULL);
	sip_resend_free(&r);
}

/* At the cap the oldest answer goes, counted; the newest stay. */
TEST(sip_resend_cap)
{
	struct sip_resend r = {0};
	struct sockaddr_in a = {.sin_family = AF_INET};
	const struct sockaddr *to;
	char key[64];
	size_t len;

	for (int i = 0; i < SIP_RESEND_MAX + 10; i++) {
		snprintf(key, sizeof(key), "BYE z9hG4bK%d 1:1", i);
		ASSERT_INT(sip_resend_put(&r, key, "x", 1,
			       (struct sockaddr *)&a, sizeof(a), 5),
		    0);
	}
	ASSERT_INT(r.n, SIP_RESEND_MAX);
	ASSERT_INT(r.pushed_out, 10);
	ASSERT(sip_resend_get(&r, "BYE z9hG4bK9 1:1", 6, &len, &to) == NULL);
	ASSERT(sip_resend_get(&r, "BYE z9hG4bK10 1:1", 6, &len, &to) != NULL);
	snprintf(key, sizeof(key), "BYE z9hG4bK%d 1:1", SIP_RESEND_MAX + 9);
	ASSERT(sip_resend_get(&r, key, 6, &len, &to) != NULL);
	sip_resend_free(&r);
	ASSERT_INT(r.n, 0);
}
