/* The cluster as this server sees it: the /v1/status document. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* ---- status ---- */

static json_t *
route_points_json(const struct config_server *s)
{
	json_t *arr = json_array();

	if (s->route_point)
		json_array_append_new(arr, json_string(s->route_point));
	if (s->aa_route_point)
		json_array_append_new(arr, json_string(s->aa_route_point));
	return arr;
}

static json_t *
post_json(const struct agent *a, const struct agent_post *p)
{
	json_t *ports = json_array(), *o;
	char since[32];
	long busy = 0;

	for (long i = 0; i < p->n_ports; i++) {
		const struct agent_port *pt = &p->ports[i];

		/* past the count a new version cut: shown while a call ends */
		if (i >= p->home->media_ports && !pt->busy)
			continue;
		const char *state = !pt->busy ? "idle"
		    : p->owned && strcmp(pt->server, p->owner) == 0
		    ? "busy"
		    : "returning";
		json_t *po = json_pack("{s:I,s:s}", "number",
		    (json_int_t)(p->home->media_port_base + i), "state", state);

		if (pt->busy) {
			busy++;
			time_iso8601(pt->since, since, sizeof(since));
			json_object_set_new(
			    po, "server", json_string(pt->server));
			json_object_set_new(po, "call", json_string(pt->call));
			json_object_set_new(po, "since", json_string(since));
		}
		json_array_append_new(ports, po);
	}
	time_iso8601(p->since, since, sizeof(since));
	o = json_pack("{s:s,s:s,s:s,s:o,s:I,s:s,s:o,s:I,s:I,s:o}", "name",
	    p->home->name, "home", p->home->name, "state",
	    post_state_name(p->state), "owner",
	    p->owned ? json_string(p->owner) : json_null(), "epoch",
	    (json_int_t)p->epoch, "since", since, "route_points",
	    route_points_json(p->home), "media_ports",
	    (json_int_t)p->home->media_ports, "ports_in_use", (json_int_t)busy,
	    "ports", ports);
	json_object_set_new(
	    o, "cover", p->cover[0] ? json_string(p->cover) : json_null());
	json_object_set_new(o, "reason", json_string(p->reason));
	json_object_set_new(
	    o, "failback_requested", json_boolean(p->failback_requested));
	(void)a;
	return o;
}

static json_t *
server_json(const struct agent *a, const struct config_server *s)
{
	json_t *covers = json_array(), *fo = json_array(), *o;
	bool up = members_is_up(a->members, s->name);
	const char *state;
	long in_use = 0;
	char since[32];

	if (s == a->self && !lease_valid(a->lease))
		state = "fenced";
	else if (agent_stopped(a, s->name))
		state = "stopped";
	else
		state = up ? "up" : "down";
	for (size_t i = 0; i < a->n_posts; i++) {
		const struct agent_post *p = &a->posts[i];

		in_use += agent_ports_held(p, s->name);
		if (p->owned && strcmp(p->owner, s->name) == 0 && p->home != s)
			json_array_append_new(
			    covers, json_string(p->home->name));
	}
	for (size_t i = 0; i < s->failover.n; i++)
		json_array_append_new(fo, json_string(s->failover.v[i]));
	time_iso8601(members_since(a->members, s->name), since, sizeof(since));
	o = json_pack("{s:s,s:s,s:b,s:s,s:s,s:i,s:b,s:I,s:I,s:I,s:o,s:o,s:o}",
	    "name", s->name, "state", state, "up", up, "since", since,
	    "address", s->address, "api_port", (int)s->api_port, "spare",
	    s->spare, "media_ports", (json_int_t)s->media_ports,
	    "max_media_ports", (json_int_t)s->max_media_ports, "ports_in_use",
	    (json_int_t)in_use, "route_points", route_points_json(s),
	    "failover", fo, "covers", covers);
	return o;
}

json_t *
agent_status_json(const struct agent *a)
{
	json_t *servers = json_array(), *posts = json_array();

	for (size_t i = 0; i < a->cfg->n_servers; i++)
		json_array_append_new(
		    servers, server_json(a, &a->cfg->servers[i]));
	for (size_t i = 0; i < a->n_posts; i++)
		json_array_append_new(posts, post_json(a, &a->posts[i]));
	json_t *owned = json_array();
	int64_t epoch;

	for (size_t i = 0; i < a->n_posts; i++)
		if (agent_owns(a, &a->posts[i], &epoch))
			json_array_append_new(owned,
			    json_pack("{s:s,s:I}", "post",
				a->posts[i].home->name, "epoch",
				(json_int_t)epoch));
	return json_pack("{s:o,s:o,s:o,s:b,s:s?}", "servers", servers, "posts",
	    posts, "owned", owned, "synced", a->synced, "admin_primary",
	    agent_admin(a));
}
