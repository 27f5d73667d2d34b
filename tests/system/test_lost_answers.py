"""etcd answers that never come: one server reaches etcd through a proxy
that forwards every write (txn, put, delete) and then, at random
moments, drops its answer or holds it past the client's timeout (the
write was applied, its answer lost), and now and then holds back the
watch stream, while calls run through that server and posts move to it
and away from it (operator stops and starts). Shown: no post is ever
believed owned by a server after etcd gave it to another (each
server's view polled every few ms, against the owner keys' history),
no port and no journal entry is left behind, and every call that was
answered has exactly one record, NORMAL, and no other call has one but
a BUSY refusal.

Operators' stops and starts go to A (through the proxy) as often as to
C: each answer is checked against etcd at once, 202 only where the
action was applied, 503 only where it was not. A second test loses the
answers of stop, start and failback on purpose, every attempt of them,
and refuses the requests themselves: the caller is told the truth, read
back from etcd, and an answer that never comes is called unknown.

US_LOST_ANSWERS sets how many answers are lost (make soak: 400),
US_SEED replays a run."""
import base64
import json
import os
import random
import socket
import threading
import time

from conftest import AUTH, Cluster, b64, http, unb64, wait_for

WRITES = ("/v3/kv/txn", "/v3/kv/put", "/v3/kv/deleterange")


class LossyProxy(threading.Thread):
    """HTTP/1.1 between one server and etcd: writes are forwarded, and
    their answers dropped or held with the probabilities given; the
    watch stream is piped, held back now and then."""

    def __init__(self, target_port, rng, drop=0.12, hold=0.08, hold_s=1.3,
                 watch_pause=0.02):
        super().__init__(daemon=True)
        self.target, self.rng = target_port, rng
        self.drop, self.hold, self.hold_s = drop, hold, hold_s
        self.watch_pause = watch_pause
        self.lock = threading.Lock()
        self.lost = 0            # answers dropped or held past the timeout
        self.writes = 0
        self.faulty = False
        # faults for operators' actions: "drop" (applied, its answer
        # lost) or "swallow" (never sent, the connection cut), for every
        # write of an action (actions), for the next ones (plan), or for
        # the next txns on a fence alone (fences)
        self.actions = None
        self.plan = []
        self.fences = []
        self.blackhole = False   # every /v3/kv/ request swallowed
        self.running = True
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def run(self):
        while self.running:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                continue
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def read_head(f):
        lines = []
        while True:
            line = f.readline(65536)
            if not line:
                return None
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                return lines

    @staticmethod
    def header(lines, name):
        for l in lines[1:]:
            k, _, v = l.decode("latin-1").partition(":")
            if k.strip().lower() == name:
                return v.strip()
        return None

    def read_body(self, f, head):
        n = self.header(head, "content-length")
        if n is not None:
            return f.read(int(n))
        if (self.header(head, "transfer-encoding") or "").lower() == "chunked":
            out = b""
            while True:
                size = f.readline()
                out += size
                k = int(size.split(b";")[0], 16)
                out += f.read(k + 2)
                if k == 0:
                    return out
        return b""

    def pipe(self, src, dst, pause):
        try:
            while self.running:
                data = src.recv(65536)
                if not data:
                    break
                if pause and self.faulty and self.rng.random() < self.watch_pause:
                    time.sleep(0.3)     # the watch falls behind a while
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    @staticmethod
    def control_write(path, body):
        """"action": a write of an operator's action (a stop or a start,
        on stopped/; a failback request, not the agent's delete of it);
        "fence": a txn on a control fence alone; else None."""
        keys = []

        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k == "key" and isinstance(v, str):
                        keys.append(base64.b64decode(v).decode("latin-1"))
                    else:
                        walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        try:
            walk(json.loads(body or b"{}"))
        except ValueError:
            return None
        if any("/stopped/" in k or
               ("/failback/" in k and path != "/v3/kv/deleterange") for k in keys):
            return "action"
        if path == "/v3/kv/txn" and any("/control/" in k for k in keys):
            return "fence"
        return None

    def serve(self, c):
        try:
            up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            c.close()
            return
        cf, uf = c.makefile("rb"), up.makefile("rb")
        try:
            while self.running:
                head = self.read_head(cf)
                if head is None:
                    break
                body = self.read_body(cf, head)
                path = head[0].split()[1].decode()
                planned = None
                if self.blackhole and path.startswith("/v3/kv/"):
                    planned = "swallow"
                elif path in WRITES and (self.actions or self.plan or self.fences):
                    kind = self.control_write(path, body)
                    with self.lock:
                        if kind == "action" and self.actions:
                            planned = self.actions
                        elif kind == "action" and self.plan:
                            planned = self.plan.pop(0)
                        elif kind == "fence" and self.fences:
                            planned = self.fences.pop(0)
                if planned == "swallow":
                    break                       # never sent
                up.sendall(b"".join(head) + body)
                if path.startswith("/v3/watch"):
                    up.settimeout(None)
                    threading.Thread(target=self.pipe, args=(c, up, False),
                                     daemon=True).start()
                    self.pipe(up, c, True)
                    return
                rhead = self.read_head(uf)
                if rhead is None:
                    break
                rbody = self.read_body(uf, rhead)
                fault = planned
                if fault is None and path in WRITES and self.faulty:
                    with self.lock:
                        self.writes += 1
                        r = self.rng.random()
                        if r < self.drop:
                            fault = "drop"
                        elif r < self.drop + self.hold:
                            fault = "hold"
                        if fault:
                            self.lost += 1
                if fault == "hold":
                    time.sleep(self.hold_s)     # past the request timeout
                if fault:
                    break                       # applied, answer lost
                c.sendall(b"".join(rhead) + rbody)
        except (OSError, ValueError):
            pass
        for s in (c, up):
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.running = False
        self.join(2)
        self.lsock.close()


class OwnerHistory(threading.Thread):
    """Every owner key's revisions, with when this test first saw each."""

    def __init__(self, etcd, cluster):
        super().__init__(daemon=True)
        self.etcd, self.prefix = etcd, "/understudy/%s/owner/" % cluster
        self.seen = {}      # post -> [(mod_revision, server, first seen)]
        self.running = True
        self.start()

    def run(self):
        while self.running:
            try:
                st, r = self.etcd.call("/v3/kv/range", {
                    "key": b64(self.prefix),
                    "range_end": b64(self.prefix[:-1] + "0")}, timeout=1)
            except OSError:
                continue
            now = time.monotonic()
            for kv in r.get("kvs", []) if st == 200 else []:
                post = unb64(kv["key"]).rsplit("/", 1)[1]
                rev = int(kv["mod_revision"])
                h = self.seen.setdefault(post, [])
                if not h or h[-1][0] != rev:
                    h.append((rev, json.loads(unb64(kv["value"]))["server"], now))
            time.sleep(0.003)

    def replaced_before(self, post, epoch, t):
        """The first newer owner seen before t, or None."""
        for rev, server, seen in self.seen.get(post, []):
            if rev > epoch and seen < t:
                return rev, server
        return None

    def stop(self):
        self.running = False
        self.join(2)


def test_lost_answers_leave_nothing_behind(tmp_path, etcd1):
    seed = int(os.environ.get("US_SEED", random.randrange(1 << 32)))
    target = int(os.environ.get("US_LOST_ANSWERS", "80"))
    print("seed %d, %d answers to lose (replay: US_SEED=%d)" % (seed, target, seed))
    rng = random.Random(seed)
    proxy = LossyProxy(int(etcd1.endpoints[0].rsplit(":", 1)[1]), random.Random(seed + 1))
    servers = [{"name": "A", "ports": 4, "max": 12, "failover": ["C"]},
               {"name": "B", "ports": 4, "max": 12, "failover": ["A"]},
               {"name": "C", "ports": 4, "max": 12, "failover": ["A"]}]
    c = Cluster(tmp_path, etcd1, servers, ttl=2, delay=1)
    # A, and only A, reaches etcd through the proxy
    with open(c.config) as f:
        text = f.read()
    a_conf = os.path.join(c.tmp, "a.conf")
    with open(a_conf, "w") as f:
        f.write(text.replace("etcd = " + ", ".join(etcd1.endpoints),
                             "etcd = " + proxy.url, 1))
    c.srv["A"].config = a_conf
    history = OwnerHistory(etcd1, c.cluster)
    stop = threading.Event()
    problems, answered, refused, other = [], [], [], []

    def watch_beliefs():
        while not stop.is_set():
            for n in c.spec:
                t0 = time.monotonic()
                try:
                    st, body = http("GET", c.url(n) + "/v1/status", timeout=1)
                except OSError:
                    continue
                if st != 200:
                    continue
                for o in body["owned"]:
                    newer = history.replaced_before(o["post"], o["epoch"], t0)
                    if newer:
                        problems.append("%s still owned %s at epoch %d after "
                                        "etcd gave it to %s at %d" %
                                        (n, o["post"], o["epoch"], newer[1], newer[0]))
            time.sleep(0.002)

    def run_calls():
        crng = random.Random(seed + 2)
        held = []
        while not stop.is_set():
            post = crng.choice(["A", "B", "C"])
            try:
                st, body = c.call(post, via="A")
            except OSError as e:
                other.append(("place", str(e)))
                continue
            if st == 201:
                answered.append(body["call"])
                held.append(body)
            elif st == 503 and body.get("error") == "EBUSY":
                refused.append(body)
            else:
                other.append(("place", st, body))
            while held and (len(held) > 6 or crng.random() < 0.5):
                call = held.pop(0)
                for _ in range(50):     # an end may need a retry
                    try:
                        st, body = c.end(call)
                    except OSError:
                        st, body = 0, {}
                    if st == 200 or (st == 404 and "no call" in body.get("message", "")):
                        break
                    if st == 421 and "location" in body:
                        call = dict(call, server=body["owner"])
                    time.sleep(0.05)
                else:
                    problems.append("call %s could not be ended: %s" % (call["call"], body))
        for call in held:
            c.end(call)

    threads = [threading.Thread(target=watch_beliefs, daemon=True),
               threading.Thread(target=run_calls, daemon=True)]
    try:
        # A first: it is the admin primary, so every operator's action,
        # sent to A or to C (which forwards it), is written through the
        # proxy
        a_primary(c)
        proxy.faulty = True
        for t in threads:
            t.start()
        deadline = time.monotonic() + 240
        moves = 0
        controls = {}
        while proxy.lost < target and time.monotonic() < deadline and not problems:
            who = rng.choice(["A", "B"])     # A gives its post away, or
            control(c, "stop", who, rng.choice(["A", "C"]), controls)  # B gives A its
            wait_for(lambda: c.owner_key(who) not in (who, None), 8)
            time.sleep(rng.uniform(0.1, 0.6))               # calls run meanwhile
            control(c, "start", who, rng.choice(["A", "C"]), controls)
            wait_for(lambda: c.owner_key(who) == who, 10)
            moves += 1
        print("control answers:", controls)
        proxy.faulty = False
        stop.set()
        for t in threads:
            t.join(60)
        print("lost %d of %d write answers; %d post moves; %d calls answered, "
              "%d busy, %d other" % (proxy.lost, proxy.writes, moves, len(answered),
                                     len(refused), len(other)))
        kinds = {}
        for o in other:
            k = (o[1], o[2].get("error")) if len(o) > 2 else o
            kinds[k] = kinds.get(k, 0) + 1
        print("other answers:", kinds)
        assert not problems, problems[:5]
        assert proxy.lost >= target, "only %d answers lost" % proxy.lost
        # nothing left behind: no port, no journal entry
        pre = "/understudy/%s/" % c.cluster

        def left(what):
            st, r = etcd1.call("/v3/kv/range", {"key": b64(pre + what),
                                                "range_end": b64(pre + what[:-1] + "0")})
            return [unb64(kv["key"]) for kv in r.get("kvs", [])]
        assert wait_for(lambda: left("ports/") == [] and left("calls/") == [], 15), \
            (left("ports/"), left("calls/"))
        # every answered call exactly one record, NORMAL; busy ones BUSY
        recs = {}

        def read_records():
            recs.clear()
            st, body = http("GET", c.url("B") + "/v1/records?limit=100000",
                            headers=AUTH, timeout=10)
            for r in body["records"]:
                recs.setdefault(r["call"], []).append(r["status"])
            return all(cid in recs for cid in answered)
        assert wait_for(read_records, 20), [cid for cid in answered if cid not in recs][:5]
        for cid in answered:
            assert recs[cid] == ["NORMAL"], (cid, recs[cid])
        extra = {cid: s for cid, s in recs.items() if cid not in answered}
        assert all(s == ["BUSY"] for s in extra.values()), \
            {k: v for k, v in extra.items() if v != ["BUSY"]}
        assert len(extra) == len(refused), (len(extra), len(refused))
        assert not [o for o in other if o[0] != "place" or o[1] not in (503, 421)], other[:5]
    finally:
        stop.set()
        history.stop()
        c.stop_all()
        proxy.close()


def a_primary(c):
    """Start A, wait until it is the admin primary, then B and C."""
    c.start("A")
    assert wait_for(lambda: (c.status("A") or {}).get("admin_primary") == "A", 10)
    c.start("B", "C")


def stopped(c, name):
    return c.etcd.get("/understudy/%s/stopped/%s" % (c.cluster, name)) is not None


def control(c, action, name, via, tally=None, timeout=30):
    """Ask via to stop or start name until it is done; every answer is
    checked against etcd at once: 202 only where it was applied, 503 (not
    done) only where it was not."""
    for _ in range(20):
        st, body = http("POST", c.url(via) + "/v1/servers/%s/%s" % (name, action),
                        b"", headers=AUTH, timeout=timeout)
        now = stopped(c, name)
        if tally is not None:
            k = "%s via %s: %d%s" % (action, via, st,
                                     " read back" if isinstance(body, dict)
                                     and body.get("read_back") else "")
            tally[k] = tally.get(k, 0) + 1
        if st == 503 and "admin primary" in body.get("message", ""):
            time.sleep(0.1)     # none elected just now: sent again
            continue
        if st == 202:
            assert body["executed_by"] == "A", body
            assert now == (action == "stop"), \
                "%s %s via %s: 202, but etcd says otherwise" % (action, name, via)
            return body
        assert st == 503 and "was not done" in body["message"], (action, name, via, st, body)
        assert now == (action != "stop"), \
            "%s %s via %s: 'not done', but etcd has it done" % (action, name, via)
    raise AssertionError("%s %s via %s never done" % (action, name, via))


def test_control_actions_under_lost_answers(tmp_path, etcd1):
    """Stop, start and failback sent to a server whose etcd answers are
    lost (every attempt of the client's), or whose requests never arrive:
    202 where etcd applied them, 503 'not done' where it did not (and
    never will: the read-back fences the lost request), 504 'unknown'
    where etcd does not even answer the read-back."""
    proxy = LossyProxy(int(etcd1.endpoints[0].rsplit(":", 1)[1]), random.Random(1))
    servers = [{"name": "A", "ports": 2, "max": 4, "failover": ["C"]},
               {"name": "B", "ports": 2, "max": 4, "failover": ["A"]},
               {"name": "C", "ports": 2, "max": 4, "failover": ["A"]}]
    c = Cluster(tmp_path, etcd1, servers, ttl=2, failback="manual", delay=1)
    with open(c.config) as f:
        text = f.read()
    a_conf = os.path.join(c.tmp, "a.conf")
    with open(a_conf, "w") as f:
        f.write(text.replace("etcd = " + ", ".join(etcd1.endpoints),
                             "etcd = " + proxy.url, 1))
    c.srv["A"].config = a_conf

    def post(action, name, timeout=30):
        return http("POST", c.url("A") + "/v1/servers/%s/%s" % (name, action), b"",
                    headers=AUTH, timeout=timeout)
    try:
        a_primary(c)
        assert c.wait_owner("B", "B")
        # every attempt applied, every answer lost: done, read back
        proxy.actions = "drop"
        st, body = post("stop", "B")
        proxy.actions = None
        assert st == 202 and body["read_back"] is True, (st, body)
        assert stopped(c, "B")
        assert c.wait_owner("B", "A")       # its cover has it
        proxy.actions = "drop"
        st, body = post("start", "B")
        proxy.actions = None
        assert st == 202 and body["read_back"] is True, (st, body)
        assert not stopped(c, "B")
        # manual failback: B's post stays with A until asked

        def covered():
            st = c.status("A") or {"posts": []}
            return any(p["name"] == "B" and p["state"] == "COVERED" for p in st["posts"])
        assert wait_for(covered, 10), c.status("A")
        proxy.actions = "drop"
        st, body = post("failback", "B")
        proxy.actions = None
        assert st == 202 and body["read_back"] is True, (st, body)
        assert c.wait_owner("B", "B")
        # never sent: not done, and the lost request fenced for good
        proxy.actions = "swallow"
        st, body = post("stop", "B")
        proxy.actions = None
        assert st == 503 and body["error"] == "EUNAVAIL" and \
            "was not done" in body["message"], (st, body)
        assert not stopped(c, "B")
        # never sent, and the fence's own answer lost: still not done
        proxy.actions, proxy.fences = "swallow", ["drop"]
        st, body = post("stop", "B")
        proxy.actions = None
        assert st == 503 and "was not done" in body["message"], (st, body)
        assert not stopped(c, "B") and proxy.fences == []
        # sent once, then a normal answer to the retry: done
        proxy.plan = ["drop"]
        st, body = post("stop", "B")
        assert st == 202 and body["read_back"] is True and stopped(c, "B"), (st, body)
        assert proxy.plan == []
        st, body = post("start", "B")
        assert st == 202 and body["read_back"] is False and not stopped(c, "B")
        # nothing answers, not even the read-back: unknown, said so
        proxy.blackhole = True
        st, body = post("stop", "B")
        proxy.blackhole = False
        assert st == 504 and body["error"] == "ETIMEDOUT" and \
            "outcome is unknown" in body["message"], (st, body)
        # the fences of these actions are few, and swept later
        pre = "/understudy/%s/control/" % c.cluster
        st, r = etcd1.call("/v3/kv/range", {"key": b64(pre),
                                            "range_end": b64(pre[:-1] + "0"),
                                            "count_only": True})
        assert int(r.get("count", "0")) <= 8, r
        log = c.srv["A"].logtext()
        assert "operator: stop B: done (read back after a lost answer" in log
        assert "operator: stop B: not done (read back" in log
    finally:
        c.stop_all()
        proxy.close()
