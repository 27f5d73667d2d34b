"""Overload control: when more calls wait for etcd than
calls_backlog_max, or the worker's loop runs later than loop_lag_max, a
new call is refused at once (SIP 503 and HTTP 503 EBUSY, each with
Retry-After), counted in /metrics, each with its BUSY record, instead of
being answered late. Shown with etcd frozen a moment (SIGSTOP, SIGCONT
in finally) and with the worker frozen a moment; the calls that waited
are taken once etcd is back, and new calls are taken again."""
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

from conftest import AUTH, Cluster, http, wait_for
from sipcaller import Caller, header

BACKLOG = 4


def metrics(c):
    st, text = http("GET", c.url("PA1") + "/metrics")
    assert st == 200
    return text


def metric(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def place(c, timeout=20):
    """(status, body, Retry-After) of a call to PA1's route point."""
    req = urllib.request.Request(
        c.url("PA1") + "/v1/route-points/%s/calls" % c.rp["PA1"], data=b"",
        method="POST", headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get("Retry-After")


def test_calls_past_the_bounds_are_refused_at_once(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 20, "max": 20}], ttl=4,
                extra=["calls_backlog_max = %d" % BACKLOG])
    c.start()
    etcd = etcd1.members[0]["proc"].pid
    try:
        assert c.wait_owner("PA1", "PA1")
        out = [None] * BACKLOG

        def one(i):
            out[i] = place(c)
        os.kill(etcd, signal.SIGSTOP)
        try:
            ts = [threading.Thread(target=one, args=(i,)) for i in range(BACKLOG)]
            for t in ts:
                t.start()
            assert wait_for(lambda: metric(metrics(c), "understudy_calls_waiting",
                                           kind="claim") == BACKLOG, 3)
            # past the bound: over HTTP, refused at once
            t0 = time.monotonic()
            refused = [place(c, timeout=2) for _ in range(2)]
            assert time.monotonic() - t0 < 0.5
            for st, body, retry in refused:
                assert st == 503 and body["error"] == "EBUSY", body
                assert "overloaded" in body["message"] and retry == "1"
            # and over SIP
            caller = Caller("127.0.0.1", c.spec["PA1"]["sip"])
            try:
                sc = caller.place(c.rp["PA1"])
                caller.settle(2)
            finally:
                caller.close()
            assert sc.final == 503 and sc.wait < 0.5, sc.codes
            assert header(sc.final_msg, "retry-after") == "1"
            assert metric(metrics(c), "understudy_calls_overload_total",
                          reason="backlog") == 3
        finally:
            os.kill(etcd, signal.SIGCONT)
        for t in ts:
            t.join(30)
        # the calls that waited are taken once etcd is back
        assert [o[0] for o in out] == [201] * BACKLOG, out
        assert wait_for(lambda: metric(metrics(c), "understudy_calls_waiting",
                                       kind="claim") == 0, 5)
        st, body, _ = place(c)
        assert st == 201, body
        taken = [o[1] for o in out] + [body]

        # a worker frozen for a second: its loop runs late, calls refused
        worker = c.srv["PA1"].worker()
        late = []
        os.kill(worker, signal.SIGSTOP)
        try:
            t = threading.Thread(target=lambda: late.append(place(c, timeout=10)))
            t.start()
            time.sleep(1.0)     # the freeze itself: the loop is 1 s late
        finally:
            os.kill(worker, signal.SIGCONT)
        t.join(15)
        st, body, retry = late[0]
        assert st == 503 and body["error"] == "EBUSY" and retry == "1", body
        assert "late" in body["message"]
        assert metric(metrics(c), "understudy_calls_overload_total", reason="lag") == 1
        # and taken again once it is on time (a call or two may still
        # come while the lag is fresh: refused the same way)
        assert wait_for(lambda: place(c)[0] == 201, 3)
        m = metrics(c)
        refusals = metric(m, "understudy_calls_overload_total", reason="backlog") + \
            metric(m, "understudy_calls_overload_total", reason="lag")
        assert refusals >= 4

        # each refusal has its BUSY record
        def busy():
            st, body = http("GET", c.url("PA1") + "/v1/records?status=BUSY", headers=AUTH)
            assert st == 200, body
            return body["records"]
        assert wait_for(lambda: len(busy()) == refusals, 10), (refusals, busy())
        assert {r["ended_by"] for r in busy()} == {"overload"}
        for call in taken:
            assert c.end(call)[0] == 200
    finally:
        c.stop_all()
