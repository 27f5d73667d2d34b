"""Posts fail over and fail back on real etcd with several understudyd:
spare and active takeover, the choice among listed covers, unserved posts,
failback with calls in progress, a frozen owner fencing itself, operator
stop and start."""
import os
import signal
import subprocess
import time

import pytest

from conftest import AUTH, CLI, TOKEN, Cluster, http, wait_for


@pytest.fixture
def cluster_factory(tmp_path, etcd1):
    made = []

    def make(servers, **kw):
        c = Cluster(tmp_path, etcd1, servers, **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop_all()


def test_spare_takeover(cluster_factory):
    """A post whose listed cover has no room goes to the spare."""
    c = cluster_factory([{"name": "PA1", "ports": 4, "max": 4, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 4, "failover": ["PA1"]},
                         {"name": "SP", "spare": True, "max": 4}]).start()
    assert c.wait_owner("PA1", "PA1")
    c.terminate("PA1")
    assert c.wait_owner("PA1", "SP", 5)
    assert c.wait_state("PA1", "COVERED", 5, via="PA3")
    assert c.post("PA1")["cover"] == "SP"
    st, body = c.call("PA1", via="PA3")            # redirected to the spare
    assert st == 201 and body["server"] == "SP" and body["post"] == "PA1"


def test_active_takeover(cluster_factory):
    """An active server with room covers its listed peer, not the spare."""
    c = cluster_factory([{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]},
                         {"name": "SP", "spare": True, "max": 4}]).start()
    assert c.wait_owner("PA1", "PA1")
    t0 = time.monotonic()
    c.kill_worker("PA1")
    assert c.wait_owner("PA1", "PA3", 5)
    took = time.monotonic() - t0
    st, body = c.call("PA1", via="PA3")
    assert st == 201 and body["server"] == "PA3"
    assert took < 2, "active takeover after a crash took %.3f s" % took
    st = c.status("PA3")
    sv = {s["name"]: s for s in st["servers"]}
    assert sv["PA3"]["covers"] == ["PA1"] and sv["SP"]["covers"] == []


def test_only_one_of_several_listed_covers(cluster_factory):
    """PA2 is first but full; PA3 takes all of PA1, PA4 takes nothing."""
    c = cluster_factory([
        {"name": "PA1", "ports": 4, "max": 4, "failover": ["PA2", "PA3", "PA4"]},
        {"name": "PA2", "ports": 4, "max": 4},
        {"name": "PA3", "ports": 4, "max": 8},
        {"name": "PA4", "ports": 4, "max": 8}]).start()
    assert c.wait_owner("PA1", "PA1")
    c.terminate("PA1")
    assert c.wait_owner("PA1", "PA3", 5)
    # PA4 redirects once its own watch has shown it the new owner
    assert c.wait_state("PA1", "COVERED", 5, via="PA4")
    calls = [c.call("PA1", via="PA4") for _ in range(4)]
    assert [st for st, _ in calls] == [201] * 4, calls
    assert {b["server"] for _, b in calls} == {"PA3"}       # never split
    st, body = c.call("PA1", via="PA3")
    assert st == 503 and body["error"] == "EBUSY"
    sv = {s["name"]: s for s in c.status("PA2")["servers"]}
    assert sv["PA3"]["covers"] == ["PA1"]
    assert sv["PA2"]["covers"] == [] and sv["PA4"]["covers"] == []
    assert sv["PA4"]["ports_in_use"] == 0


def test_unserved_then_served_when_capacity_frees(cluster_factory):
    """Nothing fits: the post is unserved and says why; a spare that comes
    up serves it."""
    c = cluster_factory([{"name": "PA1", "ports": 8, "max": 8, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]},
                         {"name": "SP", "spare": True, "max": 8}])
    c.start("PA1", "PA3")
    assert c.wait_owner("PA1", "PA1")
    c.terminate("PA1")
    assert c.wait_state("PA1", "UNSERVED", 5)
    # while PA1 leaves, its member key may outlive its post for a moment
    # ("home PA1 is up"); then the reason is what stops a cover
    assert wait_for(lambda: "PA3 has 4 of 8 ports free" in c.post("PA1")["reason"], 5), \
        c.post("PA1")["reason"]
    post = c.post("PA1")
    assert post["owner"] is None
    assert "no spare up" in post["reason"]
    st, body = c.call("PA1", via="PA3")
    assert st == 503 and body["error"] == "ENOTOWNER"
    assert "no server serves post PA1" in body["message"]
    out = subprocess.run([CLI, "status", "--server", c.url("PA3")],
                         capture_output=True, text=True, timeout=10).stdout
    assert "UNSERVED" in out and "PA3 has 4 of 8 ports free" in out
    c.start("SP")
    assert c.wait_owner("PA1", "SP", 10)
    assert c.wait_state("PA1", "COVERED", 5, via="PA3")
    st, body = c.call("PA1", via="PA3")
    assert st == 201 and body["server"] == "SP"


def test_failback_with_calls_in_progress(cluster_factory):
    """Calls placed on the cover before failback, and at home during it,
    all end normally; none is refused while a port is free in the post."""
    c = cluster_factory([{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
                        failback="manual").start()
    assert c.wait_owner("PA1", "PA1")
    c.terminate("PA1")
    assert c.wait_owner("PA1", "PA3", 5)
    before = []
    for _ in range(3):
        st, body = c.call("PA1", via="PA3")
        assert st == 201 and body["server"] == "PA3"
        before.append(body)
    c.start("PA1")
    # manual: no failback, even once PA1 is up past failback_delay (2 s)
    # and the cover has reconciled since
    assert wait_for(lambda: c.up_for("PA1", via="PA3") > 3.5, 10)
    assert c.owner_key("PA1") == "PA3"
    st, body = c.control("failback", "PA1")
    assert st == 202, body
    assert c.wait_owner("PA1", "PA1", 5)
    assert c.wait_state("PA1", "FAILING_BACK", 5)
    ports = {p["number"]: p for p in c.post("PA1")["ports"]}
    assert sorted(p["state"] for p in ports.values()) == ["idle", "returning",
                                                          "returning", "returning"]
    during = []
    st, body = c.call("PA1", via="PA3")            # the one free port, at home
    assert st == 201 and body["server"] == "PA1", body
    during.append(body)
    st, body = c.call("PA1")
    assert st == 503 and body["error"] == "EBUSY"  # every port is busy now
    for call in before:                            # each cover call ends well
        st, body = c.end(call)
        assert st == 200 and body["status"] == "NORMAL", body
        st, body = c.call("PA1")                   # and its port is home's now
        assert st == 201 and body["server"] == "PA1", body
        during.append(body)
    assert c.wait_state("PA1", "HOME", 5)
    for call in during:
        st, body = c.end(call)
        assert st == 200 and body["status"] == "NORMAL", body
    assert "FAILING_BACK(PA3) -> HOME" in c.srv["PA3"].logtext()


def test_frozen_owner_is_replaced_and_fences_itself(cluster_factory):
    """SIGSTOP of a whole owner: the cover takes over after the TTL, and
    the continued server never acts for the post without a new claim."""
    ttl = 2
    c = cluster_factory([{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
                        ttl=ttl, failback="manual").start()
    assert c.wait_owner("PA1", "PA1")
    old_epoch = c.post("PA1")["epoch"]
    t0 = time.monotonic()
    c.freeze("PA1")
    assert c.wait_owner("PA1", "PA3", ttl + 3)
    took = time.monotonic() - t0
    assert ttl - ttl / 4 - 0.1 <= took <= ttl + 1.5, "cover took over after %.2f s" % took
    st, body = c.call("PA1", via="PA3")
    assert st == 201 and body["server"] == "PA3" and body["epoch"] > old_epoch
    c.thaw("PA1")
    # from the moment it runs again it refuses: it no longer holds the epoch
    for _ in range(20):
        st, body = http("POST", c.url("PA1") + "/v1/route-points/%s/calls" % c.rp["PA1"],
                        headers=AUTH)
        assert st in (421, 503), body
        assert body["error"] == "ENOTOWNER"
        time.sleep(0.05)
    assert body.get("owner") == "PA3"
    st = c.status("PA1")
    assert st["owned"] == []
    assert "fenced" in c.srv["PA1"].logtext()
    assert c.owner_key("PA1") == "PA3"


def test_operator_stop_and_start(cluster_factory):
    """A stopped server hands its post over (calls finish where they are),
    stays stopped across a restart, and takes the post back when started."""
    c = cluster_factory([{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
                        delay=1).start()
    assert c.wait_owner("PA1", "PA1")
    st, call = c.call("PA1", via="PA1")
    assert st == 201 and call["server"] == "PA1"
    assert c.control("stop", "PA1", token=None)[0] == 401
    assert c.control("stop", "PA1", token="wrong-token-0123456789")[0] == 401
    r = subprocess.run([CLI, "stop", "PA1", "--config", c.config, "--token", TOKEN],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert c.wait_owner("PA1", "PA3", 5)
    assert http("GET", c.url("PA1") + "/health")[1]["reason"] == "stopped by an operator"
    def pa1_as_pa3_sees_it():
        return {s["name"]: s for s in c.status("PA3")["servers"]}["PA1"]["state"]
    assert wait_for(lambda: pa1_as_pa3_sees_it() == "stopped", 5), pa1_as_pa3_sees_it()
    st, body = c.end(call)                         # finished where it was
    assert st == 200 and body["status"] == "NORMAL"
    c.terminate("PA1")
    c.srv["PA1"].start()
    # past failback_delay as the cover sees it: still stopped
    assert wait_for(lambda: c.up_for("PA1", via="PA3") > 3.5, 10)
    assert c.owner_key("PA1") == "PA3"
    r = subprocess.run([CLI, "start", "PA1", "--config", c.config, "--token", TOKEN],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert c.wait_owner("PA1", "PA1", 5)
    st, body = c.call("PA1", via="PA3")
    assert st == 201 and body["server"] == "PA1"


def test_stop_all_and_start_all(cluster_factory):
    c = cluster_factory([{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
                        delay=0).start()
    assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA3", "PA3")
    r = subprocess.run([CLI, "stop", "--all", "--config", c.config],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: c.owner_key("PA1") is None and c.owner_key("PA3") is None, 5)
    r = subprocess.run([CLI, "start", "--all", "--config", c.config, "--json"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.count('"accepted"') == 2
    assert c.wait_owner("PA1", "PA1", 5) and c.wait_owner("PA3", "PA3", 5)


def test_transfer_frees_the_port(cluster_factory):
    c = cluster_factory([{"name": "PA1", "ports": 1, "max": 2, "failover": ["PA3"]},
                         {"name": "PA3", "ports": 1, "max": 2, "failover": ["PA1"]}]).start()
    assert c.wait_owner("PA1", "PA1")
    st, call = c.call("PA1")
    assert st == 201
    assert c.call("PA1")[0] == 503
    st, body = c.end(call, transfer=True)
    assert st == 200 and body["status"] == "TRANSFERRED"
    assert c.call("PA1")[0] == 201
    st, body = http("DELETE", c.url("PA1") + "/v1/calls/nope", headers=AUTH)
    assert st == 404 and body["error"] == "ENOTFOUND"
