"""The etcd client of src/coord against real etcd on 127.0.0.1, through
us-etcd-probe: every request shape, leases, watches that resume across
member failures, compaction, and requests moving to another member."""
import json
import queue
import subprocess
import threading
import time

from conftest import PROBE, Etcd, b64, free_port, http


class Probe:
    def __init__(self, endpoints):
        self.p = subprocess.Popen([PROBE, "--endpoints", ",".join(endpoints)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.q = queue.Queue()
        self.watch = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            msg = json.loads(line)
            (self.watch if msg["cmd"] == "watch" else self.q).put(msg)

    def do(self, line, timeout=10):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.q.get(timeout=timeout)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def watch_events(self, want, timeout=15):
        """Collect watch updates until `want` events (after the reset)."""
        events, resets = [], []
        deadline = time.monotonic() + timeout
        while len(events) < want and time.monotonic() < deadline:
            try:
                u = self.watch.get(timeout=0.2)
            except queue.Empty:
                continue
            if u["reset"]:
                resets.append(u)
            else:
                events += u["events"]
        return events, resets

    def close(self):
        if self.p.poll() is None:
            try:
                self.send("quit")
                self.p.wait(5)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.p.kill()
                self.p.wait()


def test_kv_requests(etcd1):
    p = Probe(etcd1.endpoints)
    try:
        assert p.do("put /t/a 1")["err"] == "OK"
        assert p.do("put /t/b 2")["err"] == "OK"
        r = p.do("get /t/a")
        assert [kv["value"] for kv in r["kvs"]] == ["1"]
        r = p.do("prefix /t/")
        assert [kv["key"] for kv in r["kvs"]] == ["/t/a", "/t/b"]
        assert p.do("get /t/none")["kvs"] == []
        r = p.do("del /t/a")
        assert r["deleted"] == 1 and r["kvs"][0]["value"] == "1"
        r = p.do("delprefix /t/")
        assert r["deleted"] == 1
        assert p.do("prefix /t/")["kvs"] == []
        # etcd agrees
        assert etcd1.get("/t/b") is None
    finally:
        p.close()


def test_txn_compares(etcd1):
    p = Probe(etcd1.endpoints)
    try:
        first = p.do("create /x/owner PA1")
        assert first["succeeded"] is True
        second = p.do("create /x/owner PA2")
        assert second["succeeded"] is False
        assert second["kvs"][0]["value"] == "PA1"     # the failure branch read it
        assert p.do("swap /x/owner PA2 PA3")["succeeded"] is False
        assert p.do("swap /x/owner PA1 PA3")["succeeded"] is True
        assert etcd1.get("/x/owner") == "PA3"
    finally:
        p.close()


def test_leases(etcd1):
    p = Probe(etcd1.endpoints)
    try:
        g = p.do("grant 5")
        assert g["err"] == "OK" and g["ttl"] == 5
        lid = g["id"]
        assert p.do("put /l/k v %s" % lid)["err"] == "OK"
        r = p.do("get /l/k")
        assert str(r["kvs"][0]["lease"]) == lid
        t = p.do("ttl " + lid)
        assert 0 < t["ttl"] <= 5
        assert p.do("keepalive " + lid)["ttl"] == 5
        assert p.do("revoke " + lid)["err"] == "OK"
        assert p.do("get /l/k")["kvs"] == []          # its keys went with it
        assert p.do("keepalive " + lid)["err"] == "ELEASELOST"
        assert p.do("revoke " + lid)["err"] == "ENOTFOUND"
        assert p.do("put /l/k v 12345")["err"] == "ENOTFOUND"
    finally:
        p.close()


def test_watch_snapshot_then_changes(etcd1):
    etcd1.put("/w/a", "1")
    etcd1.put("/w/b", "2")
    p = Probe(etcd1.endpoints)
    try:
        p.send("watch /w/")
        u = p.watch.get(timeout=10)
        assert u["reset"] is True
        assert [(e["key"], e["value"]) for e in u["events"]] == [("/w/a", "1"), ("/w/b", "2")]
        etcd1.put("/w/c", "3")
        etcd1.call("/v3/kv/deleterange", {"key": b64("/w/a")})
        etcd1.put("/other", "x")                      # outside the prefix
        events, resets = p.watch_events(2)
        assert resets == []
        assert [(e["type"], e["key"]) for e in events] == [("put", "/w/c"), ("delete", "/w/a")]
    finally:
        p.close()


def test_watch_compacted_revision_rereads(etcd1):
    for i in range(5):
        etcd1.put("/c/k", str(i))
    st, r = etcd1.call("/v3/kv/range", {"key": b64("/c/k")})
    old = int(r["kvs"][0]["create_revision"])
    now = int(r["header"]["revision"])
    st, _ = etcd1.call("/v3/kv/compaction", {"revision": str(now)})
    assert st == 200
    p = Probe(etcd1.endpoints)
    try:
        p.send("watch /c/ %d" % old)                  # gone: compacted
        u = p.watch.get(timeout=10)
        assert u["reset"] is True
        assert [(e["key"], e["value"]) for e in u["events"]] == [("/c/k", "4")]
        etcd1.put("/c/k", "5")
        events, _ = p.watch_events(1)
        assert [e["value"] for e in events] == ["5"]
    finally:
        p.close()


def test_requests_skip_a_dead_endpoint(etcd1):
    dead = "http://127.0.0.1:%d" % free_port()
    p = Probe([dead] + etcd1.endpoints)
    try:
        r = p.do("put /d/k v")
        assert r["err"] == "OK"
        assert r["endpoint"] == etcd1.endpoints[0]
        assert p.do("endpoint")["requests"] == etcd1.endpoints[0]
    finally:
        p.close()


def test_no_endpoint_answers(tmp_path):
    p = Probe(["http://127.0.0.1:%d" % free_port()])
    try:
        r = p.do("put /d/k v")
        assert r["err"] == "EUNAVAIL"
    finally:
        p.close()


def test_three_members_watch_survives_killing_its_member(etcd3):
    p = Probe(etcd3.endpoints)
    try:
        p.send("watch /m/")
        assert p.watch.get(timeout=10)["reset"] is True
        for i in range(20):
            etcd3.put("/m/%03d" % i, str(i))
        first, _ = p.watch_events(20)
        assert len(first) == 20
        where = p.do("endpoint")["watch"]
        assert where in etcd3.endpoints
        victim = etcd3.endpoints.index(where)
        etcd3.kill(victim)
        survivors = [ep for i, ep in enumerate(etcd3.endpoints) if i != victim]
        for i in range(20, 40):
            for attempt in range(50):                 # a new leader may be elected
                ep = survivors[attempt % 2]
                try:
                    st, _ = http("POST", ep + "/v3/kv/put",
                                 {"key": b64("/m/%03d" % i), "value": b64(str(i))},
                                 timeout=1)
                    if st == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
        rest, resets = p.watch_events(20)
        got = [e["key"] for e in first + rest]
        assert got == ["/m/%03d" % i for i in range(40)]   # all, in order, once
        assert resets == []                                 # resumed, not re-read
        assert p.do("endpoint")["watch"] in survivors
        # and requests moved on as well
        r = p.do("put /m/after x")
        assert r["err"] == "OK" and r["endpoint"] in survivors
    finally:
        p.close()


def test_an_answer_over_the_cap_is_named_and_a_watch_reads_in_pages(etcd1):
    """A range whose answer is over the client's 8 MiB cap fails with
    ETOOBIG (never 'unreachable'); a watch reads the same prefix in
    pages, smaller ones when a page is over the cap, and delivers it."""
    big = "x" * (1100 * 1024)
    for i in range(8):                      # 8.8 MB of values, 11.7 as base64
        st, _ = etcd1.call("/v3/kv/put", {"key": b64("/big/%d" % i),
                                          "value": b64(big)}, timeout=10)
        assert st == 200
    p = Probe(etcd1.endpoints)
    try:
        r = p.do("prefix /big/", timeout=30)
        assert r["err"] == "ETOOBIG", r["err"]
        p.send("watch /big/")
        u = p.watch.get(timeout=60)
        assert u["reset"] is True
        assert [e["key"] for e in u["events"]] == ["/big/%d" % i for i in range(8)]
        assert all(e["value"] == big for e in u["events"])
    finally:
        p.close()
