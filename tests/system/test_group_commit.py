"""Group commit: the etcd work of the calls that arrive while a txn is
out goes into the next one. Shown with etcd frozen a moment (SIGSTOP,
SIGCONT in finally) while calls come: many calls' port claims with
their journal entries are written by one txn (their journal entries
share one create revision, and /metrics counts fewer txns than calls),
their ends likewise, and each call still gets its one NORMAL record.
Then, through a proxy that loses every answer of one claim txn (each
send is applied, its answer held past a moment and dropped): the calls
that txn carried, and only those, are refused after the read-back
resends, their claims undone; the calls that came meanwhile are taken
by the next txn."""
import base64
import json
import os
import random
import re
import signal
import threading

from conftest import AUTH, Cluster, b64, http, unb64, wait_for
from test_lost_answers import LossyProxy

N = 20


def metrics(c, server):
    st, text = http("GET", c.url(server) + "/metrics")
    assert st == 200
    return text


def metric(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def journal(c, post):
    """{call id: create revision} of the post's journal entries."""
    prefix = "/understudy/%s/calls/%s/" % (c.cluster, post)
    st, r = c.etcd.call("/v3/kv/range", {"key": b64(prefix),
                                         "range_end": b64(prefix[:-1] + "0")})
    assert st == 200, r
    return {unb64(kv["key"])[len(prefix):]: int(kv["create_revision"])
            for kv in r.get("kvs", [])}


def ports_held(c, post):
    prefix = "/understudy/%s/ports/%s/" % (c.cluster, post)
    st, r = c.etcd.call("/v3/kv/range", {"key": b64(prefix),
                                         "range_end": b64(prefix[:-1] + "0")})
    assert st == 200, r
    return [json.loads(unb64(kv["value"]))["call"] for kv in r.get("kvs", [])]


def at_once(fns):
    out = [None] * len(fns)

    def run(i):
        out[i] = fns[i]()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    return ts, out


def place(c):
    return http("POST", c.url("PA1") + "/v1/route-points/%s/calls" % c.rp["PA1"],
                headers=AUTH, timeout=20)


def test_calls_that_come_together_share_a_txn(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 30, "max": 30}], ttl=4)
    c.start()
    etcd = etcd1.members[0]["proc"].pid
    try:
        assert c.wait_owner("PA1", "PA1")
        m0 = metrics(c, "PA1")
        os.kill(etcd, signal.SIGSTOP)
        try:
            ts, out = at_once([lambda: place(c)] * N)
            waiting = wait_for(lambda: metric(metrics(c, "PA1"), "understudy_calls_waiting",
                                              kind="claim") == N, 3)
        finally:
            os.kill(etcd, signal.SIGCONT)
        for t in ts:
            t.join(30)
        assert waiting
        assert [st for st, _ in out] == [201] * N, out
        calls = [b for _, b in out]
        m1 = metrics(c, "PA1")
        txns = metric(m1, "understudy_call_txns_total", kind="claim") - \
            metric(m0, "understudy_call_txns_total", kind="claim")
        # the first one or two went out at once; the rest waited for one txn
        assert 1 <= txns <= 3, m1
        assert metric(m1, "understudy_call_txn_calls_sum", kind="claim") >= N
        assert metric(m1, "understudy_call_txn_calls_bucket", kind="claim", le="8") < \
            metric(m1, "understudy_call_txn_calls_count", kind="claim")
        # etcd's own view: the journal entries were written by that few txns
        j = journal(c, "PA1")
        assert {b["call"] for b in calls} == set(j)
        assert len(set(j.values())) <= 3, j
        assert sorted(ports_held(c, "PA1")) == sorted(j)

        # the ends, likewise
        os.kill(etcd, signal.SIGSTOP)
        try:
            ts, out = at_once([lambda b=b: http("DELETE", c.url("PA1") + "/v1/calls/" + b["call"],
                                                headers=AUTH, timeout=20) for b in calls])
            waiting = wait_for(lambda: metric(metrics(c, "PA1"), "understudy_calls_waiting",
                                              kind="end") == N, 3)
        finally:
            os.kill(etcd, signal.SIGCONT)
        for t in ts:
            t.join(30)
        assert waiting
        assert [st for st, _ in out] == [200] * N, out
        m2 = metrics(c, "PA1")
        assert 1 <= metric(m2, "understudy_call_txns_total", kind="end") <= 3, m2
        assert journal(c, "PA1") == {} and ports_held(c, "PA1") == []

        def recs():
            st, body = http("GET", c.url("PA1") + "/v1/records?limit=100", headers=AUTH)
            assert st == 200, body
            return body["records"]
        assert wait_for(lambda: len(recs()) == N, 10), recs()
        assert sorted(r["call"] for r in recs()) == sorted(b["call"] for b in calls)
        assert {r["status"] for r in recs()} == {"NORMAL"}
    finally:
        c.stop_all()


class BatchLoser(LossyProxy):
    """Loses every answer of the first claim txn carrying several calls
    (nested txns) sent once armed, and of each send of it again: each is
    applied, its answer held a moment and dropped."""

    def __init__(self, target_port):
        super().__init__(target_port, random.Random(1), hold_s=0.3)
        self.armed = False
        self.lose = None      # the journal keys of the txn whose answers go
        self.sends = 0

    @staticmethod
    def journal_keys(body):
        keys = set()

        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k == "key" and isinstance(v, str):
                        keys.add(base64.b64decode(v).decode("latin-1"))
                    else:
                        walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(json.loads(body or b"{}"))
        return {k for k in keys if "/calls/" in k}

    def control_write(self, path, body):
        if path != "/v3/kv/txn" or b"request_txn" not in body:
            return None
        keys = self.journal_keys(body)
        with self.lock:
            if self.armed and self.lose is None and keys:
                self.lose = keys
            if self.lose and keys & self.lose:
                self.sends += 1
                return "action"
        return None


def test_a_txn_whose_answers_are_lost_refuses_only_its_calls(tmp_path, etcd1):
    proxy = BatchLoser(int(etcd1.endpoints[0].rsplit(":", 1)[1]))
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 30, "max": 30}], ttl=4)
    with open(c.config) as f:
        text = f.read()
    with open(c.config, "w") as f:
        f.write(text.replace("etcd = " + ", ".join(etcd1.endpoints), "etcd = " + proxy.url, 1))
    c.start()
    try:
        assert c.wait_owner("PA1", "PA1")
        proxy.actions = "hold"
        proxy.armed = True
        first, out1 = at_once([lambda: place(c)] * 6)
        assert wait_for(lambda: proxy.lose is not None, 5)
        # these come while that txn is out: they wait for the next one
        second, out2 = at_once([lambda: place(c)] * 6)
        for t in first + second:
            t.join(30)
        out = out1 + out2
        lost = {k.rsplit("/", 1)[1] for k in proxy.lose}
        refused, taken = [], []
        for st, body in out:
            if st == 201:
                taken.append(body["call"])
            else:
                assert st == 503 and body["error"] == "EUNAVAIL", body
                refused.append(re.match(r"call (\S+):", body["message"]).group(1))
        # the lost txn's calls, and no other, were refused, after resends
        assert sorted(refused) == sorted(lost) and refused, (refused, lost)
        assert proxy.sends >= 4
        assert all(st == 201 for st, _ in out2), out2
        assert len(taken) == 12 - len(refused)
        # their claims, applied each time, were undone; the others hold
        assert wait_for(lambda: set(journal(c, "PA1")) == set(taken), 5), journal(c, "PA1")
        assert sorted(ports_held(c, "PA1")) == sorted(taken)
        proxy.actions = None
        for call in taken:
            assert c.end({"server": "PA1", "call": call})[0] == 200
        assert journal(c, "PA1") == {} and ports_held(c, "PA1") == []
    finally:
        c.stop_all()
        proxy.close()
