/*
 * Transactions that osip2 has killed, freed after its execute functions
 * return: osip calls the kill callback from inside them, while it still
 * walks the very list the transaction is on, so it cannot be freed there.
 *
 * The queue is a list chained through each transaction's own reserved6
 * pointer, which osip leaves to its user (osip_transaction_set_your_
 * instance writes reserved1, which sip.c uses; nothing here touches it).
 * Queueing therefore allocates nothing: it cannot fail and has no cap to
 * reach, however many transactions die in one run. The only refusal is a
 * transaction queued twice, a broken invariant that is logged, never
 * freed twice.
 */
#include <sys/time.h>

#include <osip2/osip.h>

#include "calls.h"

/* The next pointer of the last queued transaction: not NULL, not one. */
#define SIP_REAP_END(r) ((void *)(r))

void
sip_reap_add(struct sip_reap *r, struct osip_transaction *tr)
{
	if (osip_transaction_get_reserved6(tr) != NULL) {
		log_error("sip: transaction %d killed twice; it is freed once",
		    tr->transactionid);
		return;
	}
	osip_transaction_set_reserved6(tr, r->head ? r->head : SIP_REAP_END(r));
	r->head = tr;
	r->n++;
}

size_t
sip_reap_free(struct sip_reap *r)
{
	size_t n = 0;

	while (r->head) {
		osip_transaction_t *tr = r->head;
		void *next = osip_transaction_get_reserved6(tr);

		r->head = next == SIP_REAP_END(r) ? NULL : next;
		osip_transaction_set_reserved6(tr, NULL);
		/* removes it from osip's lists too */
		osip_transaction_free(tr);
		n++;
	}
	r->n = 0;
	return n;
}
