/*
 * The media side of SIP calls: each call's RTP socket, where everything
 * the caller sends is echoed back, or its post's prompt played; the SDP
 * of the answer; calls hung up when their media stops; prompts loaded.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <osipparser2/sdp_message.h>
#include <sodium.h>

#include "sip_int.h"

/* ---- media ---- */

static void
rtp_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
    unsigned flags)
{
	uv_buf_t out;

	(void)flags;
	if (n <= 0 || from == NULL || (size_t)n > SIP_RTP_MAX)
		return;
	((struct sip_call *)u->data)->last_media = time_mono_ms();
	if (((struct sip_call *)u->data)->prompt)
		return; /* it plays its prompt, not the echo */
	/* the echo: every packet goes back to where it came from */
	out = uv_buf_init(b->base, (unsigned)n);
	uv_udp_try_send(u, &out, 1, from);
}

int
sip_media_open(struct sip_call *c)
{
	struct sockaddr_in a;
	int rc;

	if (uv_ip4_addr(c->s->self->address, c->rtp_port, &a) != 0)
		return -1;
	uv_udp_init(c->s->loop, &c->rtp);
	c->rtp.data = c;
	c->rtp_open = true;
	c->s->open_handles++;
	if ((rc = uv_udp_bind(&c->rtp, (const struct sockaddr *)&a, 0)) ==
	    UV_EADDRINUSE) {
		struct sockaddr_storage got;
		int len = sizeof(got);

		/*
		 * held by another process (a frozen server that ran the post
		 * on this host): any port will do, the SDP names it
		 */
		a.sin_port = 0;
		if ((rc = uv_udp_bind(
			 &c->rtp, (const struct sockaddr *)&a, 0)) == 0 &&
		    (rc = uv_udp_getsockname(
			 &c->rtp, (struct sockaddr *)&got, &len)) == 0) {
			log_warn("sip: RTP port %d is in use; call %s uses %d",
			    c->rtp_port, c->callid,
			    ntohs(((struct sockaddr_in *)&got)->sin_port));
			c->rtp_port =
			    ntohs(((struct sockaddr_in *)&got)->sin_port);
		}
	}
	if (rc != 0 ||
	    (rc = uv_udp_recv_start(&c->rtp, loop_read_buffer, rtp_recv)) !=
		0) {
		log_warn("sip: RTP port %d: %s", c->rtp_port, uv_strerror(rc));
		return -1;
	}
	return 0;
}

/* Where the caller wants its RTP: the c= and m=audio of its offer. */
void
sip_media_peer(struct sip_call *c, osip_message_t *req)
{
	osip_body_t *body = NULL;
	sdp_message_t *sdp = NULL;
	const char *addr, *port;
	long p;

	if (osip_message_get_body(req, 0, &body) < 0 || body == NULL ||
	    body->body == NULL || sdp_message_init(&sdp) != 0)
		return;
	if (sdp_message_parse(sdp, body->body) == 0) {
		addr = sdp_message_c_addr_get(sdp, 0, 0);
		if (addr == NULL)
			addr = sdp_message_c_addr_get(sdp, -1, 0);
		port = sdp_message_m_port_get(sdp, 0);
		if (addr && port && str_to_long(port, 1, 65535, &p) == 0 &&
		    uv_ip4_addr(addr, (int)p, &c->peer) == 0)
			c->has_peer = true;
	}
	sdp_message_free(sdp);
	if (!c->has_peer)
		log_warn("sip: call %s: no IPv4 audio address in the offer; "
			 "its prompt waits for the caller's first packet",
		    c->callid);
}

/* Send the prompt's frames that are due (20 ms each, looped). */
void
sip_media_play(struct sip_call *c, uint64_t now)
{
	const struct prompt *pr = c->prompt;
	uint8_t pkt[12 + PROMPT_FRAME];
	uint64_t due;
	uv_buf_t b;

	if (!c->has_peer)
		return;
	if (c->play_t0 == 0) {
		c->play_t0 = now;
		randombytes_buf(&c->seq, sizeof(c->seq));
		randombytes_buf(&c->ts, sizeof(c->ts));
		randombytes_buf(&c->ssrc, sizeof(c->ssrc));
	}
	due = (now - c->play_t0) / 20 + 1;
	/* after a stall, catch up a little, never in a burst */
	if (due > c->frames + 5)
		c->frames = due - 5;
	for (; c->frames < due; c->frames++) {
		pkt[0] = 0x80; /* version 2 */
		pkt[1] = (uint8_t)(c->frames == 0 ? 0x80 : 0); /* M, PCMU */
		pkt[2] = (uint8_t)(c->seq >> 8);
		pkt[3] = (uint8_t)c->seq;
		for (int i = 0; i < 4; i++) {
			pkt[4 + i] = (uint8_t)(c->ts >> (24 - 8 * i));
			pkt[8 + i] = (uint8_t)(c->ssrc >> (24 - 8 * i));
		}
		for (size_t i = 0; i < PROMPT_FRAME; i++) {
			pkt[12 + i] = pr->pcmu[c->play_pos++];
			if (c->play_pos == pr->len)
				c->play_pos = 0;
		}
		c->seq++;
		c->ts += PROMPT_FRAME;
		b = uv_buf_init((char *)pkt, sizeof(pkt));
		uv_udp_try_send(
		    &c->rtp, &b, 1, (const struct sockaddr *)&c->peer);
	}
}

void
sip_media_sdp(struct sip_call *c, char *buf, size_t len)
{
	const char *addr = c->s->self->address;
	int64_t id = time_wall_ms();

	snprintf(buf, len,
	    "v=0\r\n"
	    "o=understudy %" PRId64 " %" PRId64 " IN IP4 %s\r\n"
	    "s=understudy\r\n"
	    "c=IN IP4 %s\r\n"
	    "t=0 0\r\n"
	    "m=audio %d RTP/AVP 0\r\n"
	    "a=rtpmap:0 PCMU/8000\r\n"
	    "a=sendrecv\r\n",
	    id, id, addr, addr, c->rtp_port);
}

void
sip_media_check(struct sip *s)
{
	uint64_t now = time_mono_ms(), limit;
	struct sip_call *c, *next;

	if (s->cfg->cluster.media_timeout <= 0)
		return;
	limit = (uint64_t)s->cfg->cluster.media_timeout * 1000;
	for (c = s->calls_list; c; c = next) {
		next = c->next;
		if (c->state != SC_ANSWERED || now - c->last_media < limit)
			continue;
		log_warn("sip: call %s had no media for %" PRIu64
			 " s; hanging up (call %s)",
		    c->callid, (now - c->last_media) / 1000, c->call);
		sip_hang_up(
		    s, c, "Q.850;cause=102;text=\"no media\"", "no media");
	}
}

/* Every post's prompt: any post may come to this server. */
int
sip_media_prompts_load(struct sip *s)
{
	struct agent_post *p;
	size_t n = 0;

	while (agent_post_at(s->agent, n))
		n++;
	if ((s->prompts = calloc(n ? n : 1, sizeof(*s->prompts))) == NULL)
		return -1;
	s->n_prompts = n;
	for (size_t i = 0; (p = agent_post_at(s->agent, i)) != NULL; i++) {
		char *path = prompt_path(s->cfg, p->home), err[512];

		if (path &&
		    prompt_load(path, &s->prompts[i], err, sizeof(err)) != 0) {
			log_error(
			    "sip: prompt of post %s: %s", p->home->name, err);
			free(path);
			return -1;
		}
		if (path)
			log_info("sip: post %s plays %s (%zu ms)",
			    p->home->name, path, s->prompts[i].len / 8);
		free(path);
	}
	return 0;
}
