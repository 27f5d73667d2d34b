"""Route points registered at a real Kamailio by whoever owns their post,
and calls through it: answered at home, at the cover after a failover
(the cover registers), and never at a stale owner, which must not
register again after it lost its epoch."""
import os
import subprocess
import time

import pytest

from conftest import ROOT, Cluster, free_port, wait_for

UAC = os.path.join(ROOT, "tests", "sip", "uac.xml")


@pytest.fixture
def cluster(kam_cluster):
    return kam_cluster


def registered(c, server):
    st = c.status(server)
    return {r["route_point"]: r["epoch"] for r in st.get("registrations", [])} if st else {}


def calls_via(kam, c, post, calls=4):
    r = subprocess.run(["sipp", kam.address, "-sf", UAC, "-s", c.rp[post], "-m", str(calls),
                        "-r", "10", "-d", "200", "-i", "127.0.0.1", "-p", str(free_port()),
                        "-nostdin", "-timeout", "30s", "-timeout_error"],
                       capture_output=True, text=True, timeout=60, cwd=c.tmp)
    return r.returncode


def answered(c, server, rp):
    return c.srv[server].logtext().count("to %s answered" % rp)


def test_owner_registers_and_calls_land_there(cluster, kam):
    c = cluster
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    assert registered(c, "PA1")[c.rp["PA1"]] == c.post("PA1", via="PA1")["epoch"]
    assert c.rp["PA1"] not in registered(c, "PA3")
    assert calls_via(kam, c, "PA1") == 0
    assert answered(c, "PA1", c.rp["PA1"]) == 4
    assert calls_via(kam, c, "PA3") == 0
    assert answered(c, "PA3", c.rp["PA3"]) == 4


def test_cover_registers_after_failover(cluster, kam):
    c = cluster
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    c.kill_worker("PA1")
    assert c.wait_owner("PA1", "PA3", 5)
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA3"), 5)
    assert calls_via(kam, c, "PA1") == 0
    assert answered(c, "PA3", c.rp["PA1"]) == 4
    # failback: the home registers again, the cover takes its contact back
    assert wait_for(lambda: c.healthy("PA1"), 10)
    assert c.control("failback", "PA1", via="PA3")[0] == 202
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    assert wait_for(lambda: c.rp["PA1"] not in registered(c, "PA3"), 5)
    assert "unregistered %s" % c.rp["PA1"] in c.srv["PA3"].logtext()
    before = answered(c, "PA1", c.rp["PA1"])
    assert calls_via(kam, c, "PA1") == 0
    assert answered(c, "PA1", c.rp["PA1"]) == before + 4


def test_stale_owner_never_registers_again(cluster, kam):
    c = cluster
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    c.freeze("PA1")
    assert c.wait_owner("PA1", "PA3", 6)
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA3"), 5)
    mark = len(c.srv["PA1"].logtext())
    c.thaw("PA1")
    # until it serves again on a new lease and sees the cover own its
    # post: a stale registration would have gone out before that
    assert wait_for(lambda: c.healthy("PA1") and
                    c.post("PA1", via="PA1")["owner"] == "PA3", 10)
    after = c.srv["PA1"].logtext()[mark:]
    assert "registered %s" % c.rp["PA1"] not in after.replace("unregistered", "")
    # its old contact, replaced by the cover's, is taken back after a
    # linger (docs/sip.md)
    assert wait_for(lambda: c.rp["PA1"] not in registered(c, "PA1"), 5)
    assert calls_via(kam, c, "PA1") == 0   # still the cover's
    assert answered(c, "PA3", c.rp["PA1"]) == 4


def metrics(c, server):
    from conftest import http
    st, text = http("GET", c.url(server) + "/metrics")
    assert st == 200
    return text


def metric(text, name, **labels):
    """The value of the first sample of name whose labels include these."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics(cluster, kam):
    c = cluster
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    epoch = c.post("PA1", via="PA1")["epoch"]
    text = metrics(c, "PA1")
    assert metric(text, "understudy_serving") == 1
    assert metric(text, "understudy_route_point_registered", route_point=c.rp["PA1"],
                  registrar=kam.address) == 1
    assert metric(text, "understudy_route_point_epoch", route_point=c.rp["PA1"],
                  post="PA1") == epoch
    assert metric(text, "understudy_post_epoch", post="PA1") == epoch
    holder = subprocess.Popen(["sipp", kam.address, "-sf", UAC, "-s", c.rp["PA1"],
                               "-m", "1", "-d", "8000", "-i", "127.0.0.1",
                               "-p", str(free_port()), "-nostdin", "-timeout", "20s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=c.tmp)
    try:
        assert wait_for(lambda: metric(metrics(c, "PA1"), "understudy_port_busy",
                                       post="PA1", port="5001", state="busy",
                                       server="PA1") == 1, 10)
        text = metrics(c, "PA1")
        since = metric(text, "understudy_port_busy_since_seconds", post="PA1", port="5001")
        assert abs(since - time.time()) < 30, since
        assert metric(text, "understudy_calls_total", origin="sip") == 1
        assert metric(text, "understudy_calls_active") == 1
        c.kill_worker("PA1")               # the held call is lost with it
        assert c.wait_owner("PA1", "PA3", 5)
        assert wait_for(lambda: metric(metrics(c, "PA3"),
                                       "understudy_calls_dropped_by_failover_total") == 1, 5)
        text = metrics(c, "PA3")
        assert metric(text, "understudy_failovers_total") == 1
        assert metric(text, "understudy_post_owned", post="PA1", owner="PA3",
                      state="COVERED") == 1
    finally:
        holder.kill()
        holder.wait()


def test_failback_with_sipp_calls_held_through_kamailio(tmp_path, etcd1, kam):
    """SIPp holds calls on the cover's ports across failback: none is
    dropped, and a new call lands at home at once."""
    c = Cluster(tmp_path, etcd1, [
        {"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
        {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
        failback="manual", registrar=kam.address)
    holders = None
    try:
        c.start()
        assert c.wait_owner("PA1", "PA1")
        c.kill_worker("PA1")
        assert c.wait_owner("PA1", "PA3", 5)
        assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA3"), 5)
        holders = subprocess.Popen(
            ["sipp", kam.address, "-sf", UAC, "-s", c.rp["PA1"], "-m", "3", "-l", "3",
             "-r", "10", "-d", "8000", "-i", "127.0.0.1", "-p", str(free_port()),
             "-nostdin", "-timeout", "30s", "-timeout_error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=c.tmp)
        assert wait_for(lambda: c.post("PA1", via="PA3")["ports_in_use"] == 3, 10)
        assert wait_for(lambda: c.healthy("PA1"), 10)
        assert c.control("failback", "PA1", via="PA3")[0] == 202
        assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
        # a new call goes home at once, on the one port the cover does not hold
        before = answered(c, "PA1", c.rp["PA1"])
        assert calls_via(kam, c, "PA1", calls=1) == 0
        assert answered(c, "PA1", c.rp["PA1"]) == before + 1
        # the held calls end normally, on the cover, with their BYE
        assert holders.wait(60) == 0, holders.stderr.read()
        assert c.srv["PA3"].logtext().count("ended by the caller") >= 3
        assert c.wait_state("PA1", "HOME", 10, via="PA1")
    finally:
        if holders and holders.poll() is None:
            holders.kill()
            holders.wait()
        c.stop_all()
