/*
 * Between the files of the SIP side (sip.c, sip_media.c, sip_register.c)
 * only: their shared state and the functions they call in each other.
 */
#ifndef US_SIP_INT_H
#define US_SIP_INT_H

#include <osip2/osip.h>
#include <osip2/osip_dialog.h>

#include "calls.h"

#define SIP_DATAGRAM_MAX 4096
#define SIP_RTP_MAX 2048
#define SIP_TICK_MS 20
#define SIP_REG_VERSIONS 4 /* route point sets of later versions, room */
#define SIP_REG_EXPIRES 60
#define SIP_REG_RETRY_MS 1000
#define SIP_REG_LINGER_MS 2000
#define SIP_OVERLOAD_RETRY "1" /* s: Retry-After of a 503 when loaded */

enum sip_call_state { SC_PENDING, SC_ANSWERED, SC_DONE };

struct sip_call {
	struct sip *s;
	char callid[256];
	char totag[32];
	char user[64];
	struct agent_post *post;
	char call[64]; /* the call model's id, once a port is taken */
	long port;
	int rtp_port;
	uv_udp_t rtp;
	bool rtp_open;
	osip_transaction_t *ist; /* the INVITE, until its final answer */
	osip_dialog_t *dialog;
	enum sip_call_state state;
	bool canceled;
	/* for a BYE of our own: the caller's From, our To, its Contact */
	char *their_from;
	char *our_to;
	char *their_contact;
	unsigned bye_cseq;
	uint64_t last_media; /* monotonic ms of the last RTP packet */
	/* the prompt, when the post plays one instead of the echo */
	const struct prompt *prompt;
	struct sockaddr_in peer; /* where the caller's SDP wants RTP */
	bool has_peer;
	uint64_t play_t0; /* monotonic ms the playing began */
	uint64_t frames; /* sent so far */
	size_t play_pos;
	uint16_t seq;
	uint32_t ts, ssrc;
	struct sip_call *next;
};

/*
 * One registration: a route point (or AA route point) of a post, at the
 * registrar, while this server owns the post and only then.
 */
struct sip_reg {
	struct agent_post *post;
	char user[64];
	char callid[96];
	char fromtag[32];
	unsigned cseq;
	bool registered; /* the registrar holds this server's contact */
	uint64_t expires_at; /* monotonic ms: the registration lapses */
	int64_t epoch; /* the epoch it was registered under */
	int64_t want_epoch; /* of the REGISTER in flight */
	bool want; /* what the REGISTER in flight asks */
	uint64_t refresh_at; /* monotonic ms: renew the registration */
	uint64_t retry_at; /* monotonic ms: not before, after a failure */
	uint64_t linger_until; /* monotonic ms: take it back then (0: not) */
	bool retired; /* a route point a new version dropped: taken back */
	osip_transaction_t *nict;
};

struct sip {
	uv_loop_t *loop;
	struct agent *agent;
	struct calls *calls;
	const struct config *cfg;
	const struct config_server *self;
	uv_udp_t sock;
	uv_timer_t tick;
	uv_idle_t run_soon; /* sip_run() once in the next loop turn */
	osip_t *osip;
	struct sip_call *calls_list;
	struct sip_reap dead; /* killed in this run, freed after it */
	struct sip_resend resend; /* final answers of non-INVITE requests */
	struct sip_reg *regs;
	size_t n_regs;
	size_t cap_regs; /* osip holds pointers into regs: never moved */
	struct prompt *prompts; /* per post (agent order); len 0: echo */
	size_t n_prompts;
	char reg_host[64];
	int reg_port;
	unsigned open_handles;
	bool running; /* inside sip_run */
	unsigned ticks;
	bool closing;
};

/* osip2's callbacks carry no user pointer: one SIP stack per process */
extern struct sip *sip_one;

/* sip.c */

/* sip_run() once in the next loop turn. */
void sip_run_soon(struct sip *s);

/* Forget c: its dialog, its RTP socket (freed once closed). */
void sip_call_free(struct sip_call *c);

/* The call model's side of the end: port, journal entry and record. */
void sip_call_end_model(struct sip_call *c, const char *ended_by);

/* sip_answer.c */

/* A response to req with code, its To tagged totag (code > 100). */
int sip_response_new(
    osip_message_t *req, int code, const char *totag, osip_message_t **out);

/* Send r on server transaction tr (osip owns r now). */
void sip_respond(osip_transaction_t *tr, osip_message_t *r);

/* Answer req on tr with a bare status; tr NULL is a no-op. */
void sip_answer(osip_transaction_t *tr, osip_message_t *req, int code,
    const char *totag, const char *contact);

/* A fresh tag (or branch) in buf. */
void sip_random_tag(char *buf, size_t len);

/*
 * Keep the final answer buf (len bytes, sent to to) of non-INVITE server
 * transaction tr for its request's retransmissions.
 */
void sip_keep_answer(struct sip *s, osip_transaction_t *tr, const char *buf,
    size_t len, const struct sockaddr *to);

/*
 * true when the request with key was answered before: its answer has
 * been sent again, and the request is done with.
 */
bool sip_answered_before(struct sip *s, const char *key);

/*
 * Send a request of ours (REGISTER, BYE), given as text, in a client
 * transaction of its own; instance is what its answers are for. Returns
 * the transaction, or NULL when the text is not a request osip takes.
 */
osip_transaction_t *sip_send_request(
    struct sip *s, const char *buf, int n, void *instance);

/*
 * Hang up c from our side: a BYE with reason; then c is freed. ended_by
 * NULL: the call model is ended by whoever asked.
 */
void sip_hang_up(struct sip *s, struct sip_call *c, const char *reason,
    const char *ended_by);

/* sip_media.c */

/* Open c's RTP socket on c->rtp_port (another if it is taken): 0 or -1. */
int sip_media_open(struct sip_call *c);

/* Where the caller wants its RTP: the c= and m=audio of its offer. */
void sip_media_peer(struct sip_call *c, osip_message_t *req);

/* Send the prompt's frames that are due (20 ms each, looped). */
void sip_media_play(struct sip_call *c, uint64_t now);

/* The SDP answer of c, in buf. */
void sip_media_sdp(struct sip_call *c, char *buf, size_t len);

/* Hang up the answered calls with no media for media_timeout. */
void sip_media_check(struct sip *s);

/* Every post's prompt: any post may come to this server. 0 or -1. */
int sip_media_prompts_load(struct sip *s);

/* sip_register.c */

/* Register what this server owns, and nothing else (see the file). */
void sip_register_check(struct sip *s);

/* osip's callback for the answers to a REGISTER of ours. */
void sip_register_answer(
    int type, osip_transaction_t *tr, osip_message_t *resp);

/*
 * The route points a new version names: 0, or -1 when there is no room
 * for them (a restart applies them).
 */
int sip_register_update(struct sip *s);

/* The registrar and the route points to register: 0, or -1 (ENOMEM). */
int sip_register_setup(struct sip *s);

#endif
