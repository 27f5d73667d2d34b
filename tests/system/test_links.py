"""The state of every link of a server (GET /v1/links): each etcd
member, the registrar and the route points registered there, each NATS
server, every peer's API, each with its state, since when, its latency
and its last error. A stopped NATS and a stopped registrar show as down
in /v1/links, in /v1/status and `understudy status`, in /metrics and in
the log; NATS started again shows as up again."""
import re
import subprocess

from conftest import AUTH, CLI, Cluster, Kamailio, http, wait_for


def links(c, name):
    try:
        st, body = http("GET", c.url(name) + "/v1/links", headers=AUTH)
    except OSError:
        return None
    return body["links"] if st == 200 else None


def state(c, name, link, target=None):
    for k in links(c, name) or []:
        if k["link"] == link and (target is None or k["target"] == target):
            return k
    return None


def test_links_show_what_is_down(tmp_path, etcd1):
    kam = Kamailio(str(tmp_path))
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "failover": ["PA2"]},
                                  {"name": "PA2", "failover": ["PA1"]}],
                registrar=kam.address)
    try:
        c.start()
        assert c.wait_owner("PA1", "PA1")

        def all_up():
            ls = links(c, "PA1")
            kinds = {k["link"] for k in ls or [] if k["state"] == "up"}
            want = {"etcd member", "etcd quorum", "registrar", "route point",
                    "nats server", "api of peer"}
            return ls if want <= kinds and all(k["state"] == "up" for k in ls) else None
        ls = wait_for(all_up, 20, 0.2)
        assert ls, links(c, "PA1")
        etcd = state(c, "PA1", "etcd member", etcd1.endpoints[0])
        assert etcd and etcd["latency_ms"] is not None and etcd["since"], etcd
        assert state(c, "PA1", "api of peer", "PA2")["state"] == "up"
        assert state(c, "PA1", "route point", c.rp["PA1"])["state"] == "up"

        # NATS stops: down everywhere the server says so
        c.nats.stop()
        nats = wait_for(lambda: (lambda k: k if k and k["state"] == "down" else None)(
            state(c, "PA1", "nats server", c.nats.url)), 15, 0.2)
        assert nats, links(c, "PA1")
        assert nats["last_error"] and "does not answer" in nats["detail"], nats
        st = c.status("PA1")
        assert [k for k in st["links"] if k["link"] == "nats server"
                and k["state"] == "down"], st["links"]
        out = subprocess.run([CLI, "status", "--config", c.config, "--server",
                              c.url("PA1")], capture_output=True, text=True, timeout=10)
        assert re.search(r"^DOWN\s+nats server\s+" + re.escape(c.nats.url), out.stdout,
                         re.M), out.stdout
        text = http("GET", c.url("PA1") + "/metrics", headers=AUTH)[1]
        assert 'understudy_link_up{link="nats server",target="%s"} 0' % c.nats.url in text
        assert re.search(r'^understudy_link_latency_seconds\{link="etcd member",'
                         r'target="[^"]+"\} \d', text, re.M), text
        assert wait_for(lambda: "link down: nats server" in c.srv["PA1"].logtext(), 5)

        # the registrar stops
        kam.stop()
        reg = wait_for(lambda: (lambda k: k if k and k["state"] == "down" else None)(
            state(c, "PA2", "registrar")), 15, 0.2)
        assert reg and kam.address in reg["target"], links(c, "PA2")
        assert wait_for(lambda: "link down: registrar" in c.srv["PA2"].logtext(), 5)

        # NATS back: up again, the down time said in the log
        c.nats.start()
        assert wait_for(lambda: (state(c, "PA1", "nats server", c.nats.url) or {})
                        .get("state") == "up", 20, 0.2), links(c, "PA1")
        assert wait_for(lambda: "link up again: nats server" in c.srv["PA1"].logtext(), 5)
        assert state(c, "PA1", "nats server", c.nats.url)["last_error"]
    finally:
        c.stop_all()
        kam.stop()
