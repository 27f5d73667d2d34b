"""Call records: one per call, durable, closed exactly once. Calls come
through a real Kamailio from SIPp and over HTTP; failovers are a SIGKILL
of the owner's worker (FAILED_SOFTWARE) and a SIGSTOP of the whole owner
(FAILED_HARDWARE), after which the cover closes the lost calls' records
and answers new calls. Every server holds a copy of every record."""
import csv
import io
import json
import os
import subprocess
import urllib.parse

import pytest

from conftest import AUTH, CLI, ROOT, TOKEN, Cluster, free_port, http, wait_for

UAC = os.path.join(ROOT, "tests", "sip", "uac.xml")


@pytest.fixture
def cluster(kam_cluster):
    return kam_cluster


def records(c, server, **q):
    st, body = http("GET", c.url(server) + "/v1/records?" + urllib.parse.urlencode(q),
                    headers=AUTH)
    assert st == 200, body
    return body["records"]


def registered(c, server):
    st = c.status(server)
    return {r["route_point"] for r in st.get("registrations", [])} if st else set()


def sipp_via(kam, c, post, calls, hold_ms, wait=True):
    cmd = ["sipp", kam.address, "-sf", UAC, "-s", c.rp[post], "-m", str(calls),
           "-l", str(calls), "-r", "20", "-d", str(hold_ms), "-i", "127.0.0.1",
           "-p", str(free_port()), "-nostdin", "-timeout", "60s", "-timeout_error"]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                              cwd=c.tmp).returncode
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=c.tmp)


def same_everywhere(c, servers, n, **q):
    """Every server's copy holds the same n records; returns one copy."""
    def ok():
        copies = [sorted(json.dumps(r, sort_keys=True) for r in records(c, s, **q))
                  for s in servers]
        return all(len(x) == n for x in copies) and all(x == copies[0] for x in copies)
    assert wait_for(ok, 10), {s: records(c, s, **q) for s in servers}
    return records(c, servers[0], **q)


def test_records_of_normal_busy_and_transferred_calls(cluster, kam):
    c = cluster
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    assert sipp_via(kam, c, "PA1", 4, 300) == 0
    recs = same_everywhere(c, ["PA1", "PA3"], 4, route_point=c.rp["PA1"])
    for r in recs:
        assert r["status"] == "NORMAL" and r["ended_by"] == "caller"
        assert r["server"] == "PA1" and r["post"] == "PA1" and r["origin"] == "sip"
        assert r["caller"] == "sipp" and r["closed_by"] == "PA1"
        assert 5001 <= r["port"] <= 5004
        assert r["start"] <= r["answer"] < r["end"]
        assert 250 <= r["duration_ms"] < 10000       # held for 300 ms
    assert len({r["call"] for r in recs}) == 4
    # the status view counts them, and says where the route point is registered
    assert c.status("PA1")["counters"]["calls_taken"] == 4
    assert wait_for(lambda: c.status("PA1")["counters"]["calls_per_second"] > 0, 3)
    out = subprocess.run([CLI, "status", "--server", c.url("PA1")], capture_output=True,
                         text=True, timeout=10).stdout
    assert "calls/s (last 10 s)" in out
    assert "route point %s registered at %s" % (c.rp["PA1"], kam.address) in out

    # over HTTP on PA3: four ports taken, a fifth call is busy
    calls = []
    for _ in range(4):
        st, body = c.call("PA3", via="PA3")
        assert st == 201, body
        calls.append(body)
    st, body = c.call("PA3", via="PA3")
    assert st == 503 and body["error"] == "EBUSY"
    assert c.end(calls[0], transfer=True)[0] == 200
    for k in calls[1:]:
        assert c.end(k)[0] == 200
    recs = same_everywhere(c, ["PA1", "PA3"], 5, route_point=c.rp["PA3"])
    by = {}
    for r in recs:
        by.setdefault(r["status"], []).append(r)
    assert len(by["NORMAL"]) == 3 and len(by["TRANSFERRED"]) == 1 and len(by["BUSY"]) == 1
    assert by["BUSY"][0]["port"] is None and by["BUSY"][0]["answer"] is None
    assert by["TRANSFERRED"][0]["call"] == calls[0]["call"]
    assert {r["ended_by"] for r in by["NORMAL"]} == {"api"}

    # filters, and bad input named
    assert len(records(c, "PA1", status="BUSY")) == 1
    assert len(records(c, "PA1", limit=2)) == 2
    assert records(c, "PA1", since="2099-01-01") == []
    assert len(records(c, "PA1", since="1h")) == 9
    st, body = http("GET", c.url("PA1") + "/v1/records?since=yesterday", headers=AUTH)
    assert st == 400 and body["error"] == "EINVAL" and "since" in body["message"]
    st, body = http("GET", c.url("PA1") + "/v1/records?status=LOST", headers=AUTH)
    assert st == 400 and "status" in body["message"]

    # the command line: table, JSON, CSV
    base = [CLI, "records", "--server", c.url("PA3")]
    out = subprocess.run(base, capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "read_token or admin_token" in out.stderr
    base += ["--token", TOKEN]
    out = subprocess.run(base, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "9 records" in out.stdout and "BUSY" in out.stdout
    out = subprocess.run(base + ["--json", "--status", "TRANSFERRED"],
                         capture_output=True, text=True, timeout=10)
    assert json.loads(out.stdout)["records"][0]["call"] == calls[0]["call"]
    out = subprocess.run(base + ["--csv", "--route-point", c.rp["PA1"]],
                         capture_output=True, text=True, timeout=10)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 4 and all(r["status"] == "NORMAL" for r in rows)
    out = subprocess.run(base + ["--since", "yesterday"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 1 and "since" in out.stderr


def lost_then_covered(c, kam, fail, status):
    """Three calls held on PA1 through Kamailio, PA1 fails: three records
    with status, closed by the cover PA3; a new call lands on PA3."""
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA1"), 5)
    holders = sipp_via(kam, c, "PA1", 3, 60000, wait=False)
    try:
        assert wait_for(lambda: c.post("PA1", via="PA3")["ports_in_use"] == 3, 15)
        held = {p["call"] for p in c.post("PA1", via="PA3")["ports"] if p.get("call")}
        fail()
        assert c.wait_owner("PA1", "PA3", 10)
        recs = same_everywhere(c, ["PA3"], 3, route_point=c.rp["PA1"])
        assert {r["call"] for r in recs} == held
        for r in recs:
            assert r["status"] == status and r["ended_by"] == "failover"
            assert r["server"] == "PA1" and r["closed_by"] == "PA3"
            assert r["answer"] <= r["end"]
    finally:
        holders.kill()
        holders.wait()
    # the cover registered the route point: a new call is answered there
    assert wait_for(lambda: c.rp["PA1"] in registered(c, "PA3"), 5)
    assert sipp_via(kam, c, "PA1", 1, 100) == 0
    recs = same_everywhere(c, ["PA3"], 4, route_point=c.rp["PA1"])
    assert [r["server"] for r in recs if r["status"] == "NORMAL"] == ["PA3"]
    return held


def test_sigkill_of_the_owner_closes_its_calls_failed_software(cluster, kam):
    c = cluster
    held = lost_then_covered(c, kam, lambda: c.kill_worker("PA1"), "FAILED_SOFTWARE")
    # the restarted worker of PA1 catches up its copy from where it was
    assert wait_for(lambda: c.healthy("PA1"), 15)
    recs = same_everywhere(c, ["PA1", "PA3"], 4, route_point=c.rp["PA1"])
    assert {r["call"] for r in recs} >= held
    # exactly once: no other record of those calls anywhere
    assert len(records(c, "PA1")) == 4


def test_sigstop_of_the_owner_closes_its_calls_failed_hardware(cluster, kam):
    c = cluster
    lost_then_covered(c, kam, lambda: c.freeze("PA1"), "FAILED_HARDWARE")
    c.thaw("PA1")                      # a stale owner comes back, fenced
    assert wait_for(lambda: c.healthy("PA1"), 15)
    recs = same_everywhere(c, ["PA1", "PA3"], 4, route_point=c.rp["PA1"])
    assert sorted(r["status"] for r in recs) == ["FAILED_HARDWARE"] * 3 + ["NORMAL"]


def test_records_survive_a_restart_of_every_server(tmp_path, etcd1):
    """Each copy is in the server's database: a server down while records
    were written gets them when it returns, and keeps them across its own
    restart."""
    c = Cluster(tmp_path, etcd1, [
        {"name": "PA1", "ports": 2, "max": 4, "failover": ["PA3"]},
        {"name": "PA3", "ports": 2, "max": 4, "failover": ["PA1"]}], failback="manual")
    try:
        c.start()
        assert c.wait_owner("PA3", "PA3")
        st, k = c.call("PA3", via="PA3")
        assert st == 201 and c.end(k)[0] == 200
        same_everywhere(c, ["PA1", "PA3"], 1)
        c.terminate("PA1")
        st, k = c.call("PA3", via="PA3")
        assert st == 201 and c.end(k)[0] == 200
        c.srv["PA1"].start()
        assert wait_for(lambda: c.healthy("PA1"), 15)
        same_everywhere(c, ["PA1", "PA3"], 2)
        assert "schema now at version 1" not in c.srv["PA1"].logtext().split(
            "stopping")[-1]            # reopened, not created again
    finally:
        c.stop_all()
