/*
 * REGISTER: the route points of the posts this server owns, at the
 * cluster's registrar, refreshed under the post's epoch and taken back
 * when the post goes.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sip_int.h"

static void
reg_send(struct sip *s, struct sip_reg *r, bool want, int64_t epoch)
{
	char buf[1024], branch[40];
	int n;

	sip_random_tag(branch, sizeof(branch));
	n = snprintf(buf, sizeof(buf),
	    "REGISTER sip:%s:%d SIP/2.0\r\n"
	    "Via: SIP/2.0/UDP %s:%ld;rport;branch=z9hG4bK%s\r\n"
	    "Max-Forwards: 70\r\n"
	    "From: <sip:%s@%s>;tag=%s\r\n"
	    "To: <sip:%s@%s>\r\n"
	    "Call-ID: %s\r\n"
	    "CSeq: %u REGISTER\r\n"
	    "Contact: <sip:%s@%s:%ld>\r\n"
	    "Expires: %d\r\n"
	    "User-Agent: understudy/" US_VERSION "\r\n"
	    "Content-Length: 0\r\n\r\n",
	    s->reg_host, s->reg_port, s->self->address, s->self->sip_port,
	    branch, r->user, s->reg_host, r->fromtag, r->user, s->reg_host,
	    r->callid, ++r->cseq, r->user, s->self->address, s->self->sip_port,
	    want ? SIP_REG_EXPIRES : 0);
	if (n < 0 || (size_t)n >= sizeof(buf) ||
	    (r->nict = sip_send_request(s, buf, n, r)) == NULL)
		return;
	r->want = want;
	r->want_epoch = epoch;
}

/*
 * Register what this server owns, and nothing else: a route point is
 * registered only under a valid epoch, never refreshed once the post is
 * not this server's to answer for, and taken back (Expires: 0, which
 * removes only this server's contact) SIP_REG_LINGER_MS later. Not at
 * once: until the next owner's REGISTER replaces it, this contact is
 * the route point's only one, and it answers (302 to the new owner, or
 * 503 while fenced), which a call manager retries; no contact at all
 * would be a 404 to the caller.
 */
void
sip_register_check(struct sip *s)
{
	uint64_t now = time_mono_ms();

	for (size_t i = 0; i < s->n_regs; i++) {
		struct sip_reg *r = &s->regs[i];
		int64_t epoch;
		bool own;

		if (r->nict || now < r->retry_at)
			continue;
		own = !r->retired && agent_owns(s->agent, r->post, &epoch);
		if (own)
			r->linger_until = 0;
		else if (r->registered && r->linger_until == 0)
			r->linger_until = now + SIP_REG_LINGER_MS;
		if (own &&
		    (!r->registered || r->epoch != epoch ||
			now >= r->refresh_at))
			reg_send(s, r, true, epoch);
		else if (!own && r->registered && now >= r->linger_until)
			reg_send(s, r, false, 0);
	}
}

void
sip_register_answer(int type, osip_transaction_t *tr, osip_message_t *resp)
{
	struct sip_reg *r = osip_transaction_get_your_instance(tr);
	uint64_t now = time_mono_ms();

	if (r == NULL || resp == NULL)
		return;
	/* osip keeps the transaction a while (Timer K); it is done for us */
	osip_transaction_set_your_instance(tr, NULL);
	r->nict = NULL;
	if (type == OSIP_NICT_STATUS_2XX_RECEIVED) {
		r->registered = r->want;
		r->epoch = r->want ? r->want_epoch : 0;
		r->refresh_at = now + SIP_REG_EXPIRES * 1000 / 2;
		r->expires_at = now + SIP_REG_EXPIRES * 1000;
		log_info("sip: %s %s at %s:%d%s",
		    r->want ? "registered" : "unregistered", r->user,
		    sip_one->reg_host, sip_one->reg_port,
		    r->want ? "" : " (the post is not ours now)");
		return;
	}
	log_warn("sip: registering %s: %d %s", r->user, resp->status_code,
	    resp->reason_phrase ? resp->reason_phrase : "");
	r->retry_at = now + SIP_REG_RETRY_MS;
}

json_t *
sip_registrations_json(const struct sip *s)
{
	json_t *arr = json_array();
	char at[96];

	snprintf(at, sizeof(at), "%s:%d", s->reg_host, s->reg_port);
	for (size_t i = 0; i < s->n_regs; i++)
		if (s->regs[i].registered)
			json_array_append_new(arr,
			    json_pack("{s:s,s:s,s:s,s:I}", "route_point",
				s->regs[i].user, "post",
				s->regs[i].post->home->name, "registrar", at,
				"epoch", (json_int_t)s->regs[i].epoch));
	return arr;
}

json_t *
sip_check_json(const struct sip *s)
{
	json_t *arr = json_array();
	uint64_t now = time_mono_ms();
	int64_t epoch;
	char at[96];

	for (size_t i = 0; i < s->n_regs; i++) {
		const struct sip_reg *r = &s->regs[i];

		if (r->retired || !agent_owns(s->agent, r->post, &epoch))
			continue;
		json_array_append_new(arr,
		    json_pack("{s:s,s:s,s:b,s:I}", "route_point", r->user,
			"post", r->post->home->name, "registered",
			r->registered && r->epoch == epoch, "expires_in_ms",
			(json_int_t)(r->registered && r->expires_at > now
				? r->expires_at - now
				: 0)));
	}
	snprintf(at, sizeof(at), "%s:%d", s->reg_host, s->reg_port);
	return json_pack("{s:s?,s:o}", "registrar",
	    s->cfg->cluster.registrar ? at : NULL, "route_points", arr);
}

static struct sip_reg *
reg_add(struct sip *s, struct agent_post *p, const char *user)
{
	struct sip_reg *r;

	if (s->n_regs >= s->cap_regs)
		return NULL;
	r = &s->regs[s->n_regs++];
	memset(r, 0, sizeof(*r));
	r->post = p;
	str_copy(r->user, user, sizeof(r->user));
	/* one Call-ID per route point and server, kept */
	snprintf(r->callid, sizeof(r->callid), "reg-%s-%s-%s", user,
	    s->self->name, s->cfg->cluster.name);
	sip_random_tag(r->fromtag, sizeof(r->fromtag));
	return r;
}

/*
 * The route points a new version names: ones it dropped are taken back
 * (as a post that is not ours), new ones registered by their owner.
 * 0, or -1 when there is no room for them (a restart applies them).
 */
int
sip_register_update(struct sip *s)
{
	struct agent_post *p;
	size_t need = 0;

	for (size_t i = 0; (p = agent_post_at(s->agent, i)) != NULL; i++) {
		const char *rps[2] = {
		    p->home->route_point, p->home->aa_route_point};

		for (int k = 0; k < 2; k++) {
			bool have = false;

			for (size_t j = 0; rps[k] && j < s->n_regs; j++)
				have = have ||
				    (!s->regs[j].retired &&
					s->regs[j].post == p &&
					strcmp(s->regs[j].user, rps[k]) == 0);
			need += rps[k] && !have;
		}
	}
	if (s->n_regs + need > s->cap_regs)
		return -1;
	for (size_t j = 0; j < s->n_regs; j++) {
		struct sip_reg *r = &s->regs[j];
		const char *rp = r->post->home->route_point,
			   *aa = r->post->home->aa_route_point;

		if (!r->retired && !(rp && strcmp(rp, r->user) == 0) &&
		    !(aa && strcmp(aa, r->user) == 0))
			r->retired = true;
	}
	for (size_t i = 0; (p = agent_post_at(s->agent, i)) != NULL; i++) {
		const char *rps[2] = {
		    p->home->route_point, p->home->aa_route_point};

		for (int k = 0; k < 2; k++) {
			bool have = false;

			for (size_t j = 0; rps[k] && j < s->n_regs; j++)
				have = have ||
				    (!s->regs[j].retired &&
					s->regs[j].post == p &&
					strcmp(s->regs[j].user, rps[k]) == 0);
			if (rps[k] && !have)
				reg_add(s, p, rps[k]);
		}
	}
	return 0;
}

int
sip_register_setup(struct sip *s)
{
	const struct config_cluster *cl = &s->cfg->cluster;
	struct agent_post *p;
	size_t n = 0;

	if (cl->registrar == NULL)
		return 0;
	if (strcmp(cl->registrar, "local") == 0) {
		str_copy(s->reg_host, "127.0.0.1", sizeof(s->reg_host));
		s->reg_port = (int)cl->local_registrar_port;
	} else {
		/* the config checker made sure it is IP:PORT */
		const char *colon = strrchr(cl->registrar, ':');
		size_t hl = (size_t)(colon - cl->registrar);
		long port = 5060;

		str_copy(s->reg_host, cl->registrar,
		    hl + 1 < sizeof(s->reg_host) ? hl + 1
						 : sizeof(s->reg_host));
		str_to_long(colon + 1, 1, 65535, &port);
		s->reg_port = (int)port;
	}
	for (size_t i = 0; agent_post_at(s->agent, i); i++)
		n += 2;
	/* room for the route points of later versions (reg_update) */
	s->cap_regs = n * SIP_REG_VERSIONS;
	if ((s->regs = calloc(
		 s->cap_regs ? s->cap_regs : 1, sizeof(*s->regs))) == NULL)
		return -1;
	for (size_t i = 0; (p = agent_post_at(s->agent, i)) != NULL; i++) {
		const char *rps[2] = {
		    p->home->route_point, p->home->aa_route_point};

		for (int k = 0; k < 2; k++)
			if (rps[k])
				reg_add(s, p, rps[k]);
	}
	log_info(
	    "sip: registering route points at %s:%d", s->reg_host, s->reg_port);
	return 0;
}
