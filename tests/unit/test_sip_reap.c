/*
 * Unit tests of src/calls/sip_reap.c with a real osip2 stack and no
 * socket: the send callback fails, so every client transaction dies in
 * the one execute call that tries to send its request.
 */
#include <stdio.h>
#include <sys/time.h>

#include <osip2/osip.h>

#include "calls/calls.h"
#include "test.h"

static struct sip_reap reap;
static int killed;

static int
send_fails(osip_transaction_t *tr, osip_message_t *msg, char *host, int port,
    int out_socket)
{
	(void)tr;
	(void)msg;
	(void)host;
	(void)port;
	(void)out_socket;
	return -1;
}

static void
kill_cb(int type, osip_transaction_t *tr)
{
	(void)type;
	killed++;
	sip_reap_add(&reap, tr);
}

/* A client transaction for an OPTIONS request of its own branch. */
static void
options_nict(osip_t *osip, int i)
{
	osip_transaction_t *tr = NULL;
	osip_message_t *m = NULL;
	osip_event_t *evt;
	char text[512];
	int n;

	n = snprintf(text, sizeof(text),
	    "OPTIONS sip:peer@127.0.0.1:5060 SIP/2.0\r\n"
	    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-reap-%d\r\n"
	    "Max-Forwards: 70\r\n"
	    "From: <sip:us@127.0.0.1>;tag=t%d\r\n"
	    "To: <sip:peer@127.0.0.1>\r\n"
	    "Call-ID: reap-%d@127.0.0.1\r\n"
	    "CSeq: 1 OPTIONS\r\n"
	    "Content-Length: 0\r\n\r\n",
	    i, i, i);
	ASSERT_INT(osip_message_init(&m), 0);
	ASSERT_INT(osip_message_parse(m, text, (size_t)n), 0);
	ASSERT_INT(osip_transaction_init(&tr, NICT, osip, m), 0);
	evt = osip_new_outgoing_sipmessage(m);
	evt->transactionid = tr->transactionid;
	ASSERT_INT(osip_transaction_add_event(tr, evt), 0);
}

/*
 * Far more transactions than the old fixed queue of 64 die in one run:
 * every one is freed, and osip's list is empty afterwards (a leaked one
 * would stay on it, killed, forever). Queueing one twice frees it once.
 */
TEST(sip_reap_many)
{
	enum { N = 1000 };
	osip_t *osip = NULL;
	osip_transaction_t *tr;

	ASSERT_INT(osip_init(&osip), 0);
	osip_set_cb_send_message(osip, send_fails);
	osip_set_kill_transaction_callback(
	    osip, OSIP_NICT_KILL_TRANSACTION, kill_cb);
	for (int i = 0; i < N; i++)
		options_nict(osip, i);
	ASSERT_INT(osip_list_size(&osip->osip_nict_transactions), N);

	osip_nict_execute(osip);
	ASSERT_INT(killed, N);
	ASSERT_INT(reap.n, N);
	/* killed, still on osip's list until freed */
	ASSERT_INT(osip_list_size(&osip->osip_nict_transactions), N);
	ASSERT_INT(sip_reap_free(&reap), N);
	ASSERT_INT(reap.n, 0);
	ASSERT(reap.head == NULL);
	ASSERT_INT(osip_list_size(&osip->osip_nict_transactions), 0);

	/* a transaction queued twice is freed once */
	options_nict(osip, N);
	tr = osip_list_get(&osip->osip_nict_transactions, 0);
	sip_reap_add(&reap, tr);
	sip_reap_add(&reap, tr);
	ASSERT_INT(reap.n, 1);
	ASSERT_INT(sip_reap_free(&reap), 1);
	ASSERT_INT(osip_list_size(&osip->osip_nict_transactions), 0);
	ASSERT_INT(sip_reap_free(&reap), 0);
	osip_release(osip);
}
