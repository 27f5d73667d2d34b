/*
 * SIP on the worker's loop, with osip2: it parses, and runs the
 * transaction state machines; this file is its transport (one UDP
 * socket), its clock (a uv timer), and the user agent server behind it.
 * The media side is in sip_media.c, REGISTER in sip_register.c.
 *
 * An INVITE to a route point, AA route point or interceptor pattern of a
 * post this server owns takes a free media port through the call model
 * (calls.c), then is answered 200 with SDP offering that port's RTP port,
 * where everything the caller sends is echoed back. No free port: 486;
 * the server overloaded (calls.c): 503, Retry-After: 1.
 * A post owned elsewhere: 302 to its owner; owned by nobody: 480; still
 * this server's but fenced or being handed over: 503, Retry-After: 0. BYE
 * ends the call and frees the port; CANCEL before the answer gets 487.
 * A retransmitted BYE, CANCEL or OPTIONS gets its first answer again
 * from the answers kept for 32 s (sip_answer.c).
 *
 * osip2 calls back from inside its execute functions; transactions it
 * kills there are freed after execute returns (sip_reap.c).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sip_int.h"

struct sip *sip_one;

static void sip_run(struct sip *s);

/* ---- transport ---- */

static int
cb_send(osip_transaction_t *tr, osip_message_t *msg, char *host, int port,
    int out_socket)
{
	struct sip *s = sip_one;
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	const struct sockaddr *to;
	char *buf = NULL;
	size_t len = 0;
	uv_buf_t b;
	int rc;

	(void)tr;
	(void)out_socket;
	if (s == NULL || s->closing)
		return -1;
	if (uv_ip4_addr(host, port, &a4) == 0)
		to = (const struct sockaddr *)&a4;
	else if (uv_ip6_addr(host, port, &a6) == 0)
		to = (const struct sockaddr *)&a6;
	else {
		log_warn("sip: cannot send to %s:%d (not an IP address)", host,
		    port);
		return -1;
	}
	if (osip_message_to_str(msg, &buf, &len) != 0)
		return -1;
	b = uv_buf_init(buf, (unsigned)len);
	rc = uv_udp_try_send(&s->sock, &b, 1, to);
	if (tr && tr->ctx_type == NIST && MSG_IS_RESPONSE(msg) &&
	    msg->status_code >= 200)
		sip_keep_answer(s, tr, buf, len, to);
	osip_free(buf);
	return rc < 0 ? -1 : 0;
}

static void
cb_kill(int type, osip_transaction_t *tr)
{
	struct sip *s = sip_one;

	(void)type;
	for (struct sip_call *c = s->calls_list; c; c = c->next)
		if (c->ist == tr)
			c->ist = NULL;
	for (size_t i = 0; i < s->n_regs; i++)
		if (s->regs[i].nict == tr) {
			/* no answer at all (Timer F): try again soon */
			s->regs[i].nict = NULL;
			s->regs[i].retry_at = time_mono_ms() + SIP_REG_RETRY_MS;
		}
	/* freed after execute returns, not inside it */
	sip_reap_add(&s->dead, tr);
}

static void sip_release(struct sip *s);

static void
call_closed(uv_handle_t *h)
{
	struct sip_call *c = h->data;
	struct sip *s = c->s;

	free(c);
	sip_release(s);
}

void
sip_call_free(struct sip_call *c)
{
	struct sip *s = c->s;

	for (struct sip_call **pp = &s->calls_list; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	osip_free(c->their_from);
	osip_free(c->our_to);
	osip_free(c->their_contact);
	if (c->dialog) {
		/* the 200 resends point at the dialog: stop them first */
		osip_stop_retransmissions_from_dialog(s->osip, c->dialog);
		osip_dialog_free(c->dialog);
	}
	if (c->rtp_open) {
		c->rtp_open = false;
		uv_close((uv_handle_t *)&c->rtp, call_closed);
		return;
	}
	free(c);
}

static struct sip_call *
call_find(struct sip *s, const char *callid)
{
	for (struct sip_call *c = s->calls_list; c; c = c->next)
		if (strcmp(c->callid, callid) == 0)
			return c;
	return NULL;
}

/* The call model's side of the end: port, journal entry and record. */
void
sip_call_end_model(struct sip_call *c, const char *ended_by)
{
	struct calls_result r;

	if (c->call[0])
		calls_end(c->s->calls, c->call, false, "sip", ended_by, &r,
		    NULL, NULL);
	c->call[0] = '\0';
}

/* ---- the user agent server ---- */

static struct agent_post *
post_for(struct sip *s, const char *user)
{
	struct agent_post *p = agent_post_by_route_point(s->agent, user);

	for (size_t i = 0; p == NULL; i++) {
		struct agent_post *q = agent_post_at(s->agent, i);

		if (q == NULL)
			break;
		for (size_t k = 0; k < q->home->interceptor_ports.n; k++)
			if (config_pattern_match(
				q->home->interceptor_ports.v[k], user))
				return q;
	}
	return p;
}

static void
answer_200(struct sip_call *c, osip_message_t *req)
{
	struct sip *s = c->s;
	osip_message_t *r;
	char sdp[512], contact[160];

	if (sip_response_new(req, 200, c->totag, &r) != 0)
		return;
	snprintf(contact, sizeof(contact), "<sip:%s@%s:%ld>", c->user,
	    s->self->address, s->self->sip_port);
	osip_message_set_contact(r, contact);
	osip_list_clone(&req->record_routes, &r->record_routes,
	    (int (*)(void *, void **))osip_from_clone);
	sip_media_sdp(c, sdp, sizeof(sdp));
	osip_message_set_content_type(r, "application/sdp");
	osip_message_set_body(r, sdp, strlen(sdp));
	if (c->dialog == NULL) {
		osip_contact_t *ct = NULL;

		osip_dialog_init_as_uas(&c->dialog, req, r);
		osip_from_to_str(req->from, &c->their_from);
		osip_to_to_str(r->to, &c->our_to);
		if (osip_message_get_contact(req, 0, &ct) >= 0 && ct && ct->url)
			osip_uri_to_str(ct->url, &c->their_contact);
		c->bye_cseq = 1;
		c->last_media = time_mono_ms();
		sip_media_peer(c, req);
	}
	/* osip keeps its own copy for the resends until the ACK */
	osip_start_200ok_retransmissions(s->osip, c->dialog, r, -1);
	sip_respond(c->ist, r);
}

/* 503 with Retry-After: s seconds (this server cannot take it now). */
static void
retry_later(
    osip_transaction_t *tr, osip_message_t *req, const char *tag, const char *s)
{
	osip_message_t *r;

	if (tr == NULL || sip_response_new(req, 503, tag, &r) != 0)
		return;
	osip_message_set_header(r, "Retry-After", s);
	sip_respond(tr, r);
}

static void
placed(const struct calls_result *r, void *arg)
{
	struct sip_call *c = arg;
	struct sip *s = c->s;
	osip_message_t *req = c->ist ? c->ist->orig_request : NULL;

	if (r->err == 0)
		str_copy(c->call, r->call, sizeof(c->call));
	if (c->canceled || req == NULL) {
		/* answered 487 meanwhile: give the port back */
		sip_call_end_model(c, "canceled");
		sip_call_free(c);
		sip_run_soon(s);
		return;
	}
	switch (r->err) {
	case 0:
		c->port = r->port;
		c->rtp_port = (int)(c->post->home->rtp_port_base +
		    (r->port - c->post->home->media_port_base));
		for (size_t i = 0; i < s->n_prompts; i++)
			if (agent_post_at(s->agent, i) == c->post &&
			    s->prompts[i].len)
				c->prompt = &s->prompts[i];
		if (sip_media_open(c) != 0) {
			sip_call_end_model(c, "server");
			sip_answer(c->ist, req, 500, c->totag, NULL);
			c->state = SC_DONE;
			break;
		}
		answer_200(c, req);
		c->state = SC_ANSWERED;
		log_info("sip: call %s to %s answered on port %ld (call %s)",
		    c->callid, c->user, c->port, c->call);
		break;
	case US_EBUSY:
		if (r->overload)
			retry_later(c->ist, req, c->totag, SIP_OVERLOAD_RETRY);
		else
			sip_answer(c->ist, req, 486, c->totag, NULL);
		c->state = SC_DONE;
		break;
	case US_ENOTOWNER:
		sip_answer(c->ist, req, 480, c->totag, NULL);
		c->state = SC_DONE;
		break;
	default:
		sip_answer(c->ist, req, 503, c->totag, NULL);
		c->state = SC_DONE;
	}
	if (c->state == SC_DONE)
		sip_call_free(c);
	sip_run_soon(s);
}

static void
redirect(struct sip *s, osip_transaction_t *tr, osip_message_t *req,
    struct agent_post *p, const char *user)
{
	const struct config_server *owner =
	    config_server_find(s->cfg, p->owner);
	char contact[200], tag[32];

	sip_random_tag(tag, sizeof(tag));
	if (owner == NULL) {
		sip_answer(tr, req, 480, tag, NULL);
		return;
	}
	snprintf(contact, sizeof(contact), "<sip:%s@%s:%ld>", user,
	    owner->address, owner->sip_port);
	sip_answer(tr, req, 302, tag, contact);
}

/*
 * The post is still this server's in its view, but it may not act for
 * it: it is fencing itself (its lease is lost or about to be) or handing
 * the post over. Say so at once, so that the call manager tries the
 * route point again on whoever registers it next, instead of waiting
 * for an answer that will never come.
 */
static void
unavailable(osip_transaction_t *tr, osip_message_t *req,
    const struct agent_post *p, const char *tag)
{
	log_debug("sip: post %s is %s: 503 to a new call", p->home->name,
	    p->relinquishing ? "being handed over" : "fenced");
	retry_later(tr, req, tag, "0");
}

static void
cb_invite(int type, osip_transaction_t *tr, osip_message_t *req)
{
	struct sip *s = sip_one;
	struct calls_info info = {"sip", NULL, NULL};
	struct calls_result r;
	struct sip_call *c;
	struct agent_post *p;
	const char *user;
	char *callid = NULL, tag[32];
	osip_generic_param_t *totag = NULL;

	(void)type;
	if (req->req_uri == NULL || req->req_uri->username == NULL ||
	    req->call_id == NULL ||
	    osip_call_id_to_str(req->call_id, &callid) != 0) {
		sip_answer(tr, req, 400, "x", NULL);
		return;
	}
	osip_to_get_tag(req->to, &totag);
	if (totag && (c = call_find(s, callid)) != NULL) {
		/* a re-INVITE in a call: same media, same answer */
		c->ist = tr;
		if (c->state == SC_ANSWERED)
			answer_200(c, req);
		else
			sip_answer(tr, req, 491, c->totag, NULL);
		osip_free(callid);
		return;
	}
	if (totag) {
		sip_answer(tr, req, 481, NULL, NULL);
		osip_free(callid);
		return;
	}
	if ((c = call_find(s, callid)) != NULL) {
		/*
		 * The same call again in another branch (not a resend: osip
		 * matched those): a proxy that gave up waiting for this
		 * server and tried the route point again. One port per call:
		 * 482, and the first try's answer is the call's (RFC 3261
		 * 8.2.2.2, merged requests).
		 */
		log_debug(
		    "sip: call %s came again in another branch: 482", callid);
		sip_random_tag(tag, sizeof(tag));
		sip_answer(tr, req, 482, tag, NULL);
		osip_free(callid);
		return;
	}
	user = req->req_uri->username;
	sip_random_tag(tag, sizeof(tag));
	if ((p = post_for(s, user)) == NULL) {
		sip_answer(tr, req, 404, tag, NULL);
		osip_free(callid);
		return;
	}
	if (!agent_owns(s->agent, p, NULL)) {
		if (p->owned && strcmp(p->owner, s->self->name) != 0)
			redirect(s, tr, req, p, user);
		else if (p->owned)
			unavailable(tr, req, p, tag);
		else
			sip_answer(tr, req, 480, tag, NULL);
		osip_free(callid);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		sip_answer(tr, req, 500, tag, NULL);
		osip_free(callid);
		return;
	}
	c->s = s;
	str_copy(c->callid, callid, sizeof(c->callid));
	str_copy(c->totag, tag, sizeof(c->totag));
	str_copy(c->user, user, sizeof(c->user));
	osip_free(callid);
	c->post = p;
	c->ist = tr;
	c->state = SC_PENDING;
	c->next = s->calls_list;
	s->calls_list = c;
	sip_answer(tr, req, 100, NULL, NULL);
	info.route_point = user;
	info.caller = req->from && req->from->url && req->from->url->username
	    ? req->from->url->username
	    : "";
	if (calls_place_post(s->calls, p, &info, &r, placed, c) != 0)
		placed(&r, c);
}

/* The call a request's Call-ID names, or NULL. */
static struct sip_call *
call_of(struct sip *s, osip_message_t *req)
{
	struct sip_call *c = NULL;
	char *callid = NULL;

	if (req->call_id && osip_call_id_to_str(req->call_id, &callid) == 0)
		c = call_find(s, callid);
	osip_free(callid);
	return c;
}

static void
cb_bye(int type, osip_transaction_t *tr, osip_message_t *req)
{
	struct sip_call *c = call_of(sip_one, req);

	(void)type;
	if (c == NULL || c->dialog == NULL ||
	    osip_dialog_match_as_uas(c->dialog, req) != 0) {
		sip_answer(tr, req, 481, NULL, NULL);
		return;
	}
	sip_answer(tr, req, 200, NULL, NULL);
	log_info(
	    "sip: call %s ended by the caller (call %s)", c->callid, c->call);
	sip_call_end_model(c, "caller");
	sip_call_free(c);
}

static const char *
via_branch(osip_via_t *via)
{
	osip_generic_param_t *b = NULL;

	if (via == NULL || osip_via_param_get_byname(via, "branch", &b) != 0 ||
	    b == NULL)
		return NULL;
	return b->gvalue;
}

/*
 * The pending call a CANCEL is for: the one whose INVITE came in the
 * same branch. A proxy that tries a call again sends its INVITE once
 * more, with the same Call-ID, in a new branch, perhaps to this server
 * again: the Call-ID alone could name the wrong try.
 */
static struct sip_call *
call_of_cancel(struct sip *s, osip_message_t *req)
{
	const char *b = via_branch(osip_list_get(&req->vias, 0)), *cb;

	if (b == NULL)
		return call_of(s, req);
	for (struct sip_call *c = s->calls_list; c; c = c->next)
		if (c->ist && (cb = via_branch(c->ist->topvia)) != NULL &&
		    strcmp(b, cb) == 0)
			return c;
	return NULL;
}

static void
cb_cancel(int type, osip_transaction_t *tr, osip_message_t *req)
{
	struct sip_call *c = call_of_cancel(sip_one, req);

	(void)type;
	if (c == NULL || c->state != SC_PENDING || c->ist == NULL) {
		sip_answer(tr, req, 481, NULL, NULL);
		return;
	}
	sip_answer(tr, req, 200, NULL, NULL);
	sip_answer(c->ist, c->ist->orig_request, 487, c->totag, NULL);
	/* the port claim may still be out: placed() gives it back */
	c->canceled = true;
	c->ist = NULL;
}

static void
cb_options(int type, osip_transaction_t *tr, osip_message_t *req)
{
	char tag[32];

	(void)type;
	sip_random_tag(tag, sizeof(tag));
	sip_answer(tr, req, 200, tag, NULL);
}

static void
cb_other(int type, osip_transaction_t *tr, osip_message_t *req)
{
	char tag[32];

	(void)type;
	sip_random_tag(tag, sizeof(tag));
	/* not a registrar, not a presence server: say which methods work */
	if (MSG_IS_REQUEST(req)) {
		osip_message_t *r;

		if (sip_response_new(req, 405, tag, &r) == 0) {
			osip_message_set_header(
			    r, "Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS");
			sip_respond(tr, r);
		}
	}
}

/* ---- registrations ---- */

/*
 * Send a request of ours (REGISTER, BYE), given as text, in a client
 * transaction of its own; instance is what its answers are for. Returns
 * the transaction, or NULL when the text is not a request osip takes.
 */
osip_transaction_t *
sip_send_request(struct sip *s, const char *buf, int n, void *instance)
{
	osip_transaction_t *tr = NULL;
	osip_message_t *m = NULL;
	osip_event_t *evt;

	if (n < 0 || osip_message_init(&m) != 0)
		return NULL;
	if (osip_message_parse(m, buf, (size_t)n) != 0 ||
	    osip_transaction_init(&tr, NICT, s->osip, m) != 0) {
		osip_message_free(m);
		return NULL;
	}
	osip_transaction_set_your_instance(tr, instance);
	evt = osip_new_outgoing_sipmessage(m);
	evt->transactionid = tr->transactionid;
	osip_transaction_add_event(tr, evt);
	sip_run_soon(s);
	return tr;
}

/* ---- silent calls ---- */

/*
 * Hang up a call from our side: a BYE of our own, sent to the caller's
 * Contact with a Reason. Its answer is absorbed by the transaction;
 * nothing waits for it. ended_by NULL: the call model is ended by whoever
 * asked.
 */
void
sip_hang_up(
    struct sip *s, struct sip_call *c, const char *reason, const char *ended_by)
{
	char buf[2048], branch[40];
	int n;

	if (c->their_contact && c->their_from && c->our_to) {
		sip_random_tag(branch, sizeof(branch));
		n = snprintf(buf, sizeof(buf),
		    "BYE %s SIP/2.0\r\n"
		    "Via: SIP/2.0/UDP %s:%ld;rport;branch=z9hG4bK%s\r\n"
		    "Max-Forwards: 70\r\n"
		    "From: %s\r\n"
		    "To: %s\r\n"
		    "Call-ID: %s\r\n"
		    "CSeq: %u BYE\r\n"
		    "Reason: %s\r\n"
		    "Content-Length: 0\r\n\r\n",
		    c->their_contact, s->self->address, s->self->sip_port,
		    branch, c->our_to, c->their_from, c->callid, c->bye_cseq++,
		    reason);
		if (n > 0 && (size_t)n < sizeof(buf))
			sip_send_request(s, buf, n, NULL);
	}
	if (ended_by)
		sip_call_end_model(c, ended_by);
	c->call[0] = '\0';
	sip_call_free(c);
}

/* The call model ends a SIP call from elsewhere: hang up its caller. */
static void
hangup_cb(const char *call, void *arg)
{
	struct sip *s = arg;

	for (struct sip_call *c = s->calls_list; c; c = c->next)
		if (strcmp(c->call, call) == 0) {
			log_info("sip: call %s ended by the API (call %s)",
			    c->callid, call);
			sip_hang_up(s, c,
			    "Q.850;cause=16;text=\"ended by an operator\"",
			    NULL);
			return;
		}
}

/* ---- the loop ---- */

/*
 * Process every queued transaction event. Never re-entered: answers
 * queued from inside an osip callback (before osip has moved the
 * transaction on) are processed by the next round of the outer run.
 */
static void
sip_run(struct sip *s)
{
	if (s->closing || s->running)
		return;
	s->running = true;
	for (int i = 0; i < 3; i++) {
		osip_ist_execute(s->osip);
		osip_nist_execute(s->osip);
		osip_nict_execute(s->osip);
	}
	s->running = false;
	sip_reap_free(&s->dead);
}

static void
run_soon_cb(uv_idle_t *h)
{
	uv_idle_stop(h);
	sip_run(h->data);
}

/*
 * sip_run() once in the next loop turn, for every message and answer
 * that came meanwhile: each run walks osip's transaction lists several
 * times, so a run per datagram would cost each message the whole list
 * over again. (The lists hold only transactions still at work: answered
 * non-INVITE ones are forgotten at once, their answers kept in
 * sip_answer.c.)
 * An idle handle, not a 0 ms timer: libuv before 1.48 runs a 0 ms timer
 * started from a timer callback again in the same turn.
 */
void
sip_run_soon(struct sip *s)
{
	if (!s->closing)
		uv_idle_start(&s->run_soon, run_soon_cb);
}

static void
tick_cb(uv_timer_t *t)
{
	struct sip *s = t->data;

	osip_timers_ist_execute(s->osip);
	osip_timers_nist_execute(s->osip);
	osip_timers_nict_execute(s->osip);
	sip_register_check(s);
	for (struct sip_call *c = s->calls_list; c; c = c->next)
		if (c->prompt && c->state == SC_ANSWERED && c->rtp_open)
			sip_media_play(c, time_mono_ms());
	if (++s->ticks % (1000 / SIP_TICK_MS) == 0)
		sip_media_check(s);
	osip_retransmissions_execute(s->osip);
	sip_resend_expire(&s->resend, time_mono_ms());
	sip_run(s);
}

void
sip_input(
    struct sip *s, const char *buf, size_t len, const struct sockaddr *from)
{
	char host[INET6_ADDRSTRLEN] = "";
	osip_transaction_t *tr = NULL;
	osip_event_t *evt;
	char key[SIP_RESEND_KEY_MAX];
	bool keyed = false;
	int port = 0;

	if (from->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)from;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (from->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a =
		    (const struct sockaddr_in6 *)from;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	if ((evt = osip_parse(buf, len)) == NULL || evt->sip == NULL) {
		log_debug("sip: unparsable datagram of %zu bytes from %s:%d",
		    len, host, port);
		if (evt)
			osip_event_free(evt);
		return;
	}
	if (MSG_IS_REQUEST(evt->sip)) {
		if (evt->sip->sip_method == NULL || evt->sip->call_id == NULL ||
		    evt->sip->cseq == NULL || evt->sip->from == NULL ||
		    evt->sip->to == NULL ||
		    osip_list_size(&evt->sip->vias) == 0) {
			log_debug("sip: request from %s:%d lacks a header",
			    host, port);
			osip_event_free(evt);
			return;
		}
		osip_message_fix_last_via_header(evt->sip, host, port);
		if (!MSG_IS_INVITE(evt->sip) && !MSG_IS_ACK(evt->sip) &&
		    sip_resend_key(evt->sip, key, sizeof(key)) == 0) {
			keyed = true;
			if (sip_answered_before(s, key)) {
				osip_event_free(evt);
				return;
			}
		}
	}
	if (osip_find_transaction_and_add_event(s->osip, evt) == 0) {
		sip_run_soon(s);
		return;
	}
	if (MSG_IS_ACK(evt->sip)) {
		/* the ACK of a 2xx has no transaction: it ends the resends */
		osip_stop_200ok_retransmissions(s->osip, evt->sip);
		osip_event_free(evt);
		return;
	}
	if (!MSG_IS_REQUEST(evt->sip)) {
		osip_event_free(evt);
		return;
	}
	if (osip_transaction_init(&tr, MSG_IS_INVITE(evt->sip) ? IST : NIST,
		s->osip, evt->sip) != 0) {
		osip_event_free(evt);
		return;
	}
	/* its answer is kept for its retransmissions: osip forgets it */
	if (keyed && tr->nist_context)
		tr->nist_context->timer_j_length = 0;
	evt->transactionid = tr->transactionid;
	osip_transaction_add_event(tr, evt);
	sip_run_soon(s);
}

static void
sock_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *b,
    const struct sockaddr *from, unsigned flags)
{
	if (n <= 0 || from == NULL)
		return;
	if ((flags & UV_UDP_PARTIAL) || (size_t)n > SIP_DATAGRAM_MAX) {
		log_debug(
		    "sip: datagram over %d bytes dropped", SIP_DATAGRAM_MAX);
		return;
	}
	sip_input(u->data, b->base, (size_t)n, from);
}

int
sip_set_config(
    struct sip *s, const struct config *cfg, const struct config_server *self)
{
	/* media_timeout and interceptor patterns are read from it */
	s->cfg = cfg;
	s->self = self;
	if (s->regs == NULL)
		return 0;
	if (sip_register_update(s) != 0)
		return -1;
	sip_register_check(s);
	return 0;
}

struct sip *
sip_new(uv_loop_t *loop, struct agent *agent, struct calls *calls,
    const struct config *cfg, const struct config_server *self)
{
	struct sockaddr_in a;
	struct sip *s;
	int rc;

	if (sip_one != NULL || (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->loop = loop;
	s->agent = agent;
	s->calls = calls;
	s->cfg = cfg;
	s->self = self;
	if (osip_init(&s->osip) != 0) {
		free(s);
		return NULL;
	}
	sip_one = s;
	osip_set_cb_send_message(s->osip, cb_send);
	osip_set_message_callback(s->osip, OSIP_IST_INVITE_RECEIVED, cb_invite);
	osip_set_message_callback(s->osip, OSIP_NIST_BYE_RECEIVED, cb_bye);
	osip_set_message_callback(
	    s->osip, OSIP_NIST_CANCEL_RECEIVED, cb_cancel);
	osip_set_message_callback(
	    s->osip, OSIP_NIST_OPTIONS_RECEIVED, cb_options);
	osip_set_message_callback(
	    s->osip, OSIP_NIST_REGISTER_RECEIVED, cb_other);
	osip_set_message_callback(s->osip, OSIP_NIST_INFO_RECEIVED, cb_other);
	osip_set_message_callback(s->osip, OSIP_NIST_NOTIFY_RECEIVED, cb_other);
	osip_set_message_callback(
	    s->osip, OSIP_NIST_SUBSCRIBE_RECEIVED, cb_other);
	osip_set_message_callback(
	    s->osip, OSIP_NIST_UNKNOWN_REQUEST_RECEIVED, cb_other);
	for (int t = OSIP_NICT_STATUS_2XX_RECEIVED;
	     t <= OSIP_NICT_STATUS_6XX_RECEIVED; t++)
		osip_set_message_callback(s->osip, t, sip_register_answer);
	osip_set_kill_transaction_callback(
	    s->osip, OSIP_NICT_KILL_TRANSACTION, cb_kill);
	osip_set_kill_transaction_callback(
	    s->osip, OSIP_IST_KILL_TRANSACTION, cb_kill);
	osip_set_kill_transaction_callback(
	    s->osip, OSIP_NIST_KILL_TRANSACTION, cb_kill);
	uv_udp_init(loop, &s->sock);
	uv_timer_init(loop, &s->tick);
	uv_idle_init(loop, &s->run_soon);
	s->sock.data = s->tick.data = s->run_soon.data = s;
	s->open_handles = 3;
	if ((rc = uv_ip4_addr(self->address, (int)self->sip_port, &a)) != 0 ||
	    (rc = uv_udp_bind(&s->sock, (const struct sockaddr *)&a, 0)) != 0 ||
	    (rc = uv_udp_recv_start(&s->sock, loop_read_buffer, sock_recv)) !=
		0) {
		log_error("sip: cannot listen on %s:%ld: %s", self->address,
		    self->sip_port, uv_strerror(rc));
		sip_free(s);
		return NULL;
	}
	if (sip_register_setup(s) != 0 || sip_media_prompts_load(s) != 0) {
		sip_free(s);
		return NULL;
	}
	calls_set_hangup(calls, hangup_cb, s);
	uv_timer_start(&s->tick, tick_cb, SIP_TICK_MS, SIP_TICK_MS);
	log_info("sip: listening on %s:%ld/udp", self->address, self->sip_port);
	return s;
}

/* One handle less; the last one frees the stack. */
static void
sip_release(struct sip *s)
{
	if (--s->open_handles > 0)
		return;
	osip_release(s->osip);
	free(s);
}

static void
handle_closed(uv_handle_t *h)
{
	sip_release(h->data);
}

void
sip_free(struct sip *s)
{
	if (s == NULL)
		return;
	s->closing = true;
	calls_set_hangup(s->calls, NULL, NULL);
	while (s->calls_list)
		sip_call_free(s->calls_list);
	sip_reap_free(&s->dead);
	sip_resend_free(&s->resend);
	/* osip_release leaves live transactions to their owner */
	while (osip_list_size(&s->osip->osip_ist_transactions) > 0)
		osip_transaction_free(
		    osip_list_get(&s->osip->osip_ist_transactions, 0));
	while (osip_list_size(&s->osip->osip_nist_transactions) > 0)
		osip_transaction_free(
		    osip_list_get(&s->osip->osip_nist_transactions, 0));
	while (osip_list_size(&s->osip->osip_nict_transactions) > 0)
		osip_transaction_free(
		    osip_list_get(&s->osip->osip_nict_transactions, 0));
	free(s->regs);
	s->regs = NULL;
	s->n_regs = 0;
	for (size_t i = 0; i < s->n_prompts; i++)
		prompt_free(&s->prompts[i]);
	free(s->prompts);
	s->prompts = NULL;
	s->n_prompts = 0;
	sip_one = NULL;
	uv_close((uv_handle_t *)&s->sock, handle_closed);
	uv_close((uv_handle_t *)&s->tick, handle_closed);
	uv_close((uv_handle_t *)&s->run_soon, handle_closed);
}

json_t *
sip_calls_json(const struct sip *s)
{
	json_t *arr = json_array();

	for (const struct sip_call *c = s->calls_list; c; c = c->next)
		json_array_append_new(arr,
		    json_pack("{s:s,s:s,s:s,s:I,s:i,s:s}", "sip_call_id",
			c->callid, "to", c->user, "call", c->call, "port",
			(json_int_t)c->port, "rtp_port", c->rtp_port, "state",
			c->state == SC_ANSWERED ? "answered" : "pending"));
	return arr;
}
