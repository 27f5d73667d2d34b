"""Fixtures for the system tests: real etcd members and real understudyd
processes on 127.0.0.1, each test stopping what it started, by PID."""
import base64
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("US_BUILD", os.path.join(ROOT, "build")))
DAEMON = os.path.join(BUILD, "src", "understudyd")
CLI = os.path.join(BUILD, "src", "understudy")
PROBE = os.path.join(BUILD, "tests", "us-etcd-probe")

_results = {"passed": 0, "failed": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.outcome == "passed":
            _results["passed"] += 1
        elif report.outcome == "failed":
            _results["failed"] += 1


def pytest_unconfigure(config):
    # the runners' common last line
    print("%d passed, %d failed" % (_results["passed"], _results["failed"]))


_used_ports = set()


def free_port(span=1):
    """A port p such that p .. p+span-1 are free on 127.0.0.1 now."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        # 30000-30999 and 40000-40999: the RTP ports of the test clusters
        if p + span > 65000 or any(q in _used_ports for q in range(p, p + span)) or \
                any(30000 <= q < 31000 or 40000 <= q < 41000 for q in range(p, p + span)):
            continue
        ok = True
        for q in range(p + 1, p + span):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", q))
            except OSError:
                ok = False
            t.close()
        if ok:
            _used_ports.update(range(p, p + span))
            return p
    raise RuntimeError("no free port")


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return base64.b64decode(s).decode()


def http(method, url, body=None, timeout=2.0, headers=None, context=None):
    """(status, parsed JSON or text) of one request; context: the
    ssl.SSLContext an https:// URL is verified with (None: the system's
    CAs)."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate,
    made with the openssl CLI under dir (PEM files: ca.crt, server.crt,
    server.key, client.crt, client.key; other.crt: a second CA)."""

    def __init__(self, dir):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.ca = self.path("ca.crt")
        self.other_ca = self.path("other.crt")
        self.ca_for("ca")
        self.ca_for("other")
        # etcd's gateway dials etcd itself with the server certificate
        self.issue("server", "subjectAltName=IP:127.0.0.1\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
        self.issue("client", "extendedKeyUsage=clientAuth\n")
        self.server, self.server_key = self.path("server.crt"), self.path("server.key")
        self.client, self.client_key = self.path("client.crt"), self.path("client.key")

    def path(self, name):
        return os.path.join(self.dir, name)

    def openssl(self, *args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr

    def ca_for(self, name):
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                     "-subj", "/CN=understudy test %s" % name,
                     "-keyout", self.path(name + ".key"), "-out", self.path(name + ".crt"))

    def issue(self, name, ext):
        with open(self.path(name + ".ext"), "w") as f:
            f.write(ext)
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-subj", "/CN=%s" % name, "-keyout",
                     self.path(name + ".key"), "-out", self.path(name + ".csr"))
        self.openssl("x509", "-req", "-in", self.path(name + ".csr"), "-CA", self.ca,
                     "-CAkey", self.path("ca.key"), "-CAcreateserial", "-days", "2",
                     "-extfile", self.path(name + ".ext"), "-out", self.path(name + ".crt"))

    def context(self, client=False):
        """An SSLContext that trusts the CA (and shows the client
        certificate where client is true)."""
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca)
        if client:
            ctx.load_cert_chain(self.client, self.client_key)
        return ctx


class Etcd:
    """A real etcd cluster of n members on 127.0.0.1. With certs (a
    Certs), clients speak https and must show a certificate of its CA."""

    def __init__(self, n=1, tmp=None, certs=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="us-etcd-")
        self.certs = certs
        self.context = certs.context(client=True) if certs else None
        self.scheme = "https" if certs else "http"
        self.members = []
        for i in range(n):
            port = free_port(2)
            self.members.append({"name": "m%d" % i, "client": port, "peer": port + 1,
                                 "proc": None})
        self.initial = ",".join("%s=http://127.0.0.1:%d" % (m["name"], m["peer"])
                                for m in self.members)
        for i in range(n):
            self.start(i)
        self.wait_ready()

    @property
    def endpoints(self):
        return ["%s://127.0.0.1:%d" % (self.scheme, m["client"]) for m in self.members]

    def start(self, i):
        m = self.members[i]
        log = open(os.path.join(self.tmp, "%s.log" % m["name"]), "ab")
        client = "%s://127.0.0.1:%d" % (self.scheme, m["client"])
        tls = []
        if self.certs:
            tls = ["--cert-file", self.certs.server, "--key-file", self.certs.server_key,
                   "--client-cert-auth", "--trusted-ca-file", self.certs.ca]
        m["proc"] = subprocess.Popen([
            "etcd", "--name", m["name"],
            "--data-dir", os.path.join(self.tmp, m["name"]),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", "http://127.0.0.1:%d" % m["peer"],
            "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % m["peer"],
            "--initial-cluster", self.initial, "--initial-cluster-state", "new",
            "--heartbeat-interval=50", "--election-timeout=250",
            "--log-level=warn", "--logger=zap"] + tls, stdout=log, stderr=log)

    def kill(self, i):
        p = self.members[i]["proc"]
        if p and p.poll() is None:
            p.kill()
            p.wait()

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ep in self.endpoints:
                try:
                    st, _ = http("POST", ep + "/v3/kv/put",
                                 {"key": b64("/ready"), "value": b64("1")}, timeout=0.5,
                                 context=self.context)
                    if st == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("etcd did not become ready")

    def call(self, path, body, timeout=2.0):
        last = None
        for ep in self.endpoints:
            try:
                return http("POST", ep + path, body, timeout=timeout,
                            context=self.context)
            except OSError as e:
                last = e
        raise last

    def get(self, key):
        st, r = self.call("/v3/kv/range", {"key": b64(key)})
        kvs = r.get("kvs", [])
        return unb64(kvs[0].get("value", "")) if kvs else None

    def put(self, key, value):
        return self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def stop(self):
        for i in range(len(self.members)):
            self.kill(i)


@pytest.fixture
def etcd1(tmp_path):
    e = Etcd(1, str(tmp_path))
    yield e
    e.stop()


@pytest.fixture
def etcd3(tmp_path):
    e = Etcd(3, str(tmp_path))
    yield e
    e.stop()


class KeyWatcher(threading.Thread):
    """Polls one key every 5 ms and records when it appears and goes."""

    def __init__(self, etcd, key):
        super().__init__(daemon=True)
        self.etcd, self.key = etcd, key
        self.events = []  # (monotonic time, present)
        self.stop_flag = False

    def run(self):
        last = None
        while not self.stop_flag:
            try:
                present = self.etcd.get(self.key) is not None
            except OSError:
                present = last
            if present != last:
                self.events.append((time.monotonic(), present))
                last = present
            time.sleep(0.005)

    def first(self, present, after):
        for t, p in self.events:
            if p == present and t >= after:
                return t
        return None

    def stop(self):
        self.stop_flag = True
        self.join(2)


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_for(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
               "UNDERSTUDY_LOG_FORMAT")


class Server:
    """One understudyd (master and worker) from a config file."""

    def __init__(self, config, name, tmp):
        self.config, self.name = config, name
        self.logpath = os.path.join(tmp, "%s.log" % name)
        self.state_dir = os.path.join(tmp, "state", name)
        self.proc = None

    def start(self, env=None, args=(), files=None):
        """env: variables set for it; systemd's (NOTIFY_SOCKET,
        WATCHDOG_USEC, JOURNAL_STREAM...) only where env sets them.
        files: its file limit (soft and hard), as LimitNOFILE= would."""
        self.log = open(self.logpath, "ab")
        e = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
        e.update(env or {})

        def limit():
            if files:
                resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        self.proc = subprocess.Popen([DAEMON, "--config", self.config, "--server",
                                      self.name, "--state-dir", self.state_dir] +
                                     list(args), stdout=self.log, stderr=self.log, env=e,
                                     preexec_fn=limit if files else None)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def worker(self):
        """The worker's pid: the master's child run with --worker (its
        other children are services and their fence processes)."""
        for kid in children(self.proc.pid):
            try:
                with open("/proc/%d/cmdline" % kid, "rb") as f:
                    if b"\0--worker\0" in f.read():
                        return kid
            except OSError:
                pass
        return None

    def logtext(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def sanitizer_reports(self):
        """Reports of ASan, UBSan or LeakSanitizer in this server's log."""
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
        return [l for l in self.logtext().splitlines() if any(m in l for m in marks)]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid] + ([self.worker()] if self.worker() else []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            w = self.worker()
            if w:
                os.kill(w, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()


def write_config(path, etcd_endpoints, servers, lease_ttl=2, extra_cluster=""):
    """servers: list of dicts with name, api_port, and optional keys."""
    lines = ["[cluster]", "name = t%d" % os.getpid(),
             "etcd = " + ", ".join(etcd_endpoints),
             "lease_ttl = %d" % lease_ttl, extra_cluster, ""]
    for i, s in enumerate(servers):
        lines.append("[server %s]" % s["name"])
        lines.append("address = 127.0.0.1")
        lines.append("api_port = %d" % s["api_port"])
        lines.append("sip_port = %d" % s.get("sip_port", free_port()))
        if s.get("spare"):
            lines += ["spare = yes", "max_media_ports = %d" % s.get("max", 18)]
        else:
            lines += ["route_point = %d" % (6000 + 100 * i),
                      "media_port_base = %d" % (5001 + 100 * i),
                      "media_ports = %d" % s.get("ports", 4),
                      "max_media_ports = %d" % s.get("max", 8),
                      "rtp_port_base = %d" % (30000 + 100 * i)]
            if s.get("failover"):
                lines.append("failover = " + ", ".join(s["failover"]))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


@pytest.fixture
def cluster_name():
    return "t%d" % os.getpid()


TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN}


class Cluster:
    """A cluster of understudyd servers on one real etcd.

    servers: [{"name", "ports", "max", "failover": [...]} or
              {"name", "spare": True, "max"}]; route point of the i-th
    server is 6000 + 100 * i."""

    def __init__(self, tmp_path, etcd, servers, ttl=2, failback="auto", delay=2,
                 token=TOKEN, registrar=None, extra=(), sections="", certs=None):
        """certs (a Certs): the API serves HTTPS with its server
        certificate (tls_cert, tls_key, tls_ca), and the helpers below
        verify it with its CA. Unless extra sets messaging, the cluster
        gets a NATS server of its own (self.nats): records go through
        its records stream."""
        self.tmp, self.etcd = str(tmp_path), etcd
        self.nats = None
        if not any(str(x).startswith("messaging") for x in extra):
            self.nats = Nats(self.tmp)
            extra = list(extra) + ["messaging = " + self.nats.url]
        self.context = certs.context() if certs else None
        self.scheme = "https" if certs else "http"
        self.cluster = "c%d%d" % (os.getpid(), free_port())
        self.spec = {s["name"]: dict(s) for s in servers}
        self.rp = {}
        lines = ["[cluster]", "name = " + self.cluster,
                 "etcd = " + ", ".join(etcd.endpoints), "lease_ttl = %d" % ttl,
                 "failback = " + failback, "failback_delay = %d" % delay]
        if token:
            lines.append("admin_token = " + token)
        if registrar:
            lines.append("registrar = " + registrar)
        if certs:
            lines += ["tls_cert = " + certs.server, "tls_key = " + certs.server_key,
                      "tls_ca = " + certs.ca]
        lines += list(extra)
        for i, s in enumerate(servers):
            s = self.spec[s["name"]]
            s["api"] = free_port()
            s["sip"] = free_port()
            lines += ["", "[server %s]" % s["name"], "address = 127.0.0.1",
                      "api_port = %d" % s["api"], "sip_port = %d" % s["sip"]]
            if s.get("desk_port"):
                s["desk"] = free_port()
                lines.append("desk_port = %d" % s["desk"])
            if s.get("spare"):
                lines += ["spare = yes", "max_media_ports = %d" % s.get("max", 8)]
            else:
                self.rp[s["name"]] = str(6000 + 100 * i)
                lines += ["route_point = " + self.rp[s["name"]],
                          "media_port_base = %d" % s.get("port_base", 5001 + 100 * i),
                          "media_ports = %d" % s.get("ports", 4),
                          "max_media_ports = %d" % s.get("max", 8),
                          "rtp_port_base = %d" % s.get("rtp_base", 40000 + 100 * i)]
                if s.get("failover"):
                    lines.append("failover = " + ", ".join(s["failover"]))
                if s.get("interceptors"):
                    lines.append("interceptor_ports = " + ", ".join(s["interceptors"]))
                if s.get("prompt"):
                    lines.append("prompt = " + s["prompt"])
        self.config = os.path.join(self.tmp, "cluster.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n\n" + sections)
        self.srv = {n: Server(self.config, n, self.tmp) for n in self.spec}
        self.frozen = set()

    # processes
    def start(self, *names, wait=True):
        for n in names or list(self.spec):
            self.srv[n].start()
        if wait:
            for n in names or list(self.spec):
                assert wait_for(lambda: self.healthy(n), 15), self.srv[n].logtext()
        return self

    def url(self, name):
        return "%s://127.0.0.1:%d" % (self.scheme, self.spec[name]["api"])

    def healthy(self, name):
        try:
            return http("GET", self.url(name) + "/health", timeout=0.5,
                        context=self.context)[0] == 200
        except OSError:
            return False

    def kill(self, name):
        """SIGKILL master and worker: the server is gone at once, and its
        lease expires after the TTL (nobody revokes it)."""
        s = self.srv[name]
        pids = [p for p in (s.worker(), s.pid) if p]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        s.proc.wait()
        s.log.close()

    def kill_worker(self, name):
        os.kill(self.srv[name].worker(), signal.SIGKILL)

    def freeze(self, name):
        s = self.srv[name]
        for pid in (s.pid, s.worker()):
            if pid:
                os.kill(pid, signal.SIGSTOP)
        self.frozen.add(name)

    def thaw(self, name):
        s = self.srv[name]
        for pid in (s.worker(), s.pid):
            if pid:
                os.kill(pid, signal.SIGCONT)
        self.frozen.discard(name)

    def running(self, name):
        p = self.srv[name].proc
        return p is not None and p.poll() is None

    def terminate(self, name):
        self.thaw(name)
        self.srv[name].stop()

    def stop_all(self):
        for n in self.spec:
            if self.srv[n].proc is None:
                continue                    # never started
            try:
                self.thaw(n)
            except (ProcessLookupError, TypeError):
                pass
            self.srv[n].stop()
        if self.nats:
            self.nats.stop()
        # memory errors and leaks anywhere in the run fail the test
        for n in self.spec:
            if self.srv[n].proc is None:
                continue
            reports = self.srv[n].sanitizer_reports()
            assert not reports, "%s: %s" % (n, reports[:3])

    # state
    def status(self, name=None, timeout=1.0):
        for n in [name] if name else list(self.spec):
            if n in self.frozen or not self.running(n):
                continue
            try:
                st, body = http("GET", self.url(n) + "/v1/status", timeout=timeout,
                                context=self.context)
                if st == 200:
                    return body
            except OSError:
                pass
        return None

    def post(self, post, via=None):
        st = self.status(via)
        return next(p for p in st["posts"] if p["name"] == post) if st else None

    def owner_key(self, post):
        v = self.etcd.get("/understudy/%s/owner/%s" % (self.cluster, post))
        return json.loads(v)["server"] if v else None

    def wait_owner(self, post, server, timeout=10):
        return wait_for(lambda: self.owner_key(post) == server, timeout)

    def up_for(self, name, via):
        """Seconds the server has been up as via's status says, or 0."""
        st = self.status(via)
        if not st:
            return 0
        srv = {x["name"]: x for x in st["servers"]}.get(name)
        if not srv or srv.get("state") not in ("up", "stopped"):
            return 0
        iso = "%Y-%m-%dT%H:%M:%S.%fZ"
        now = datetime.datetime.strptime(st["time"], iso)
        return (now - datetime.datetime.strptime(srv["since"], iso)).total_seconds()

    def wait_state(self, post, state, timeout=10, via=None):
        def ok():
            p = self.post(post, via)
            return p is not None and p["state"] == state
        return wait_for(ok, timeout, step=0.02)

    # calls
    def call(self, post, via=None, follow=True):
        """(status, body) of placing a call to the post's route point."""
        via = via or next(n for n in self.spec if self.running(n) and
                          n not in self.frozen)
        st, body = http("POST", self.url(via) + "/v1/route-points/%s/calls" % self.rp[post],
                        headers=AUTH, context=self.context)
        if st == 421 and follow and "location" in body:
            st, body = http("POST", body["location"] +
                            "/v1/route-points/%s/calls" % self.rp[post], headers=AUTH,
                            context=self.context)
        return st, body

    def end(self, call, transfer=False):
        url = self.url(call["server"]) + "/v1/calls/" + call["call"]
        if transfer:
            return http("POST", url + "/transfer", headers=AUTH, context=self.context)
        return http("DELETE", url, headers=AUTH, context=self.context)

    def control(self, action, name, token=TOKEN, via=None):
        """POST a control action; while the cluster has no admin primary
        (just started, or its primary just died) the answer is 503 with
        Retry-After, and the action is sent again, as the CLI does."""
        via = via or next(n for n in self.spec if self.running(n) and
                          n not in self.frozen)
        headers = {"Authorization": "Bearer " + token} if token else {}
        out = []

        def sent():
            out[:] = [http("POST", self.url(via) + "/v1/servers/%s/%s" % (name, action),
                           b"", headers=headers, context=self.context)]
            st, body = out[0]
            return not (st == 503 and "admin primary" in str(body.get("message", "")))
        wait_for(sent, 10, step=0.1)
        return out[0]


@pytest.fixture
def etcd1_fast(tmp_path):
    """One etcd member; elections fast enough for a 1 s lease TTL."""
    e = Etcd(1, str(tmp_path))
    yield e
    e.stop()


def udp_bound(port):
    """True when some socket is bound to UDP 127.0.0.1:port."""
    want = ":%04X" % port
    with open("/proc/net/udp") as f:
        return any(line.split()[1].endswith(want) for line in list(f)[1:])


class Kamailio:
    """Kamailio with examples/kamailio.cfg on 127.0.0.1:port; shm_mb of
    shared memory (64 MB runs out under sustained load: bench/calls
    gives it 256)."""

    def __init__(self, tmp, shm_mb=64):
        self.port = free_port()
        self.dir = os.path.join(tmp, "kamailio")
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen(
            ["kamailio", "-f", os.path.join(ROOT, "examples", "kamailio.cfg"),
             "-DD", "-E", "-m", str(shm_mb), "-M", "8", "-Y", self.dir,
             "-l", "udp:127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=self.log)
        # ready once its SIP socket is bound: what arrives then is queued
        assert wait_for(lambda: self.proc.poll() is not None or
                        udp_bound(self.port), 10), "kamailio did not bind"
        assert self.proc.poll() is None, open(os.path.join(self.dir, "log")).read()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        terminate(self.proc)


@pytest.fixture
def kam(tmp_path):
    k = Kamailio(str(tmp_path))
    yield k
    k.stop()


@pytest.fixture
def kam_cluster(tmp_path, etcd1, kam):
    """PA1 and PA3 (4 ports each, covering each other, manual failback),
    registering their route points at a real Kamailio."""
    c = Cluster(tmp_path, etcd1, [
        {"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
        {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
        failback="manual", registrar=kam.address)
    c.start()
    assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA3", "PA3")
    yield c
    c.stop_all()


def terminate(proc):
    """SIGTERM, then SIGKILL after 10 s."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


DESK = os.path.join(BUILD, "src", "understudy-desk")
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
_hashes = {}


def hashed(pw):
    """The argon2id hash understudy passwd prints for pw."""
    if pw not in _hashes:
        r = subprocess.run([CLI, "passwd"], input=pw + "\n" + pw + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        _hashes[pw] = r.stdout.strip().split()[-1]
    return _hashes[pw]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Nats:
    """A real nats-server with JetStream, its store under tmp. With certs
    (a Certs) it requires TLS with its server certificate; with token,
    clients must give it."""

    def __init__(self, tmp, certs=None, token=None):
        self.port = free_port()
        self.mport = free_port()
        self.dir = os.path.join(tmp, "nats-%d" % self.port)
        self.proc = None
        self.conf = None
        if certs or token:
            self.conf = self.dir + ".conf"
            with open(self.conf, "w") as f:
                if certs:
                    f.write('tls {\n  cert_file: "%s"\n  key_file: "%s"\n'
                            '  ca_file: "%s"\n}\n' % (certs.server, certs.server_key,
                                                      certs.ca))
                if token:
                    f.write('authorization {\n  token: "%s"\n}\n' % token)
        self.start()

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        self.log = open(self.dir + ".log", "ab")
        self.proc = subprocess.Popen(
            ["nats-server"] + (["-c", self.conf] if self.conf else []) +
            ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.mport), "-js",
             "-sd", self.dir, "-n", "n%d" % self.port],
            stdout=self.log, stderr=self.log)
        if self not in RUNNING_NATS:
            RUNNING_NATS.append(self)
        assert wait_for(lambda: port_open(self.port), 10), "nats did not start"

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if self in RUNNING_NATS:
            RUNNING_NATS.remove(self)

    def stop(self):
        terminate(self.proc)
        if not self.log.closed:
            self.log.close()
        if self in RUNNING_NATS:
            RUNNING_NATS.remove(self)

    def stream(self, name):
        """The state of a stream, from the monitoring port: messages,
        first_seq, last_seq, created; None without it."""
        body = json.loads(urllib.request.urlopen(
            "http://127.0.0.1:%d/jsz?streams=true&consumers=true" % self.mport,
            timeout=5).read())
        for acc in body.get("account_details", []):
            for st in acc.get("stream_detail", []):
                if st["name"] == name:
                    return dict(st["state"], created=st["created"],
                                consumers=st.get("consumer_detail", []))
        return None

    def publish(self, subject, payloads, msg_ids=None):
        """Publish raw to NATS (JetStream takes what its subjects cover),
        then wait for the server to have read it all (PING/PONG)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()                                  # INFO
            s.sendall(b'CONNECT {"verbose":false,"headers":true}\r\n')
            chunk = []
            for i, p in enumerate(payloads):
                data = p.encode() if isinstance(p, str) else p
                if msg_ids:
                    hdr = ("NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_ids[i]).encode()
                    chunk.append(b"HPUB %s %d %d\r\n%s%s\r\n" % (
                        subject.encode(), len(hdr), len(hdr) + len(data), hdr, data))
                else:
                    chunk.append(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(data), data))
                if len(chunk) >= 500:
                    s.sendall(b"".join(chunk))
                    chunk = []
            s.sendall(b"".join(chunk) + b"PING\r\n")
            while True:
                line = f.readline()
                assert line, "nats closed the connection"
                if line.startswith(b"PONG"):
                    return
                assert not line.startswith(b"-ERR"), line


@pytest.fixture(autouse=True)
def drop_etcd_logs(tmp_path):
    """After each test, the write-ahead logs and snapshots of the etcd
    members it ran are removed (each member preallocates 128 MB of WAL;
    a full run would fill the disk). The logs of every process stay."""
    yield
    for root, dirs, _ in os.walk(str(tmp_path)):
        if os.path.basename(root) == "member" and "wal" in dirs:
            for d in ("wal", "snap"):
                shutil.rmtree(os.path.join(root, d), ignore_errors=True)
            dirs[:] = []


RUNNING_NATS = []


@pytest.fixture(autouse=True)
def stop_left_nats():
    """A NATS server a test started and did not stop is stopped after it
    (one of a wider fixture was started before and stays)."""
    before = list(RUNNING_NATS)
    yield
    for n in list(RUNNING_NATS):
        if n not in before:
            n.stop()


@pytest.fixture
def nats(tmp_path):
    n = Nats(str(tmp_path))
    yield n
    n.stop()


class Proxy(threading.Thread):
    """A TCP proxy the test controls: cut() drops every connection and
    refuses new ones, restore() lets them through again."""

    def __init__(self, target_port):
        super().__init__(daemon=True)
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.cut_now = False
        self.conns = []
        self.lock = threading.Lock()
        self.running = True
        self.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def pipe(self, a, b):
        try:
            while self.running:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def run(self):
        while self.running:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                continue
            if self.cut_now:
                c.close()
                continue
            try:
                t = socket.create_connection(("127.0.0.1", self.target), timeout=1)
            except OSError:
                c.close()
                continue
            with self.lock:                 # a cut while connecting drops it too
                if self.cut_now:
                    c.close()
                    t.close()
                    continue
                self.conns += [c, t]
            for a, b in ((c, t), (t, c)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    def cut(self):
        with self.lock:
            self.cut_now = True
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.cut_now = False

    def close(self):
        self.running = False
        self.cut()
        self.join(2)
        self.lsock.close()


class Desk:
    """A real understudy-desk process driven through its stdin, reading
    its --json lines."""

    def __init__(self, tmp, name, servers, profile=None, ca=None):
        self.name = name
        self.profile = profile or os.path.join(tmp, "desk-" + name)
        cmd = [DESK, "--profile", self.profile, "--desk", name, "--json"]
        for s in servers:
            cmd += ["--server", s]
        if ca:
            cmd += ["--ca", ca]
        self.errlog = open(os.path.join(tmp, "desk-%s.err" % name), "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errlog, text=True, bufsize=1)
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "garbage", "text": line}
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def wait(self, pred, timeout=10, start=0):
        """The first event from index start on that matches pred."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events[start:]:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def cmd(self, line, timeout=15):
        """Run a command; its result event."""
        with self.cond:
            start = len(self.events)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        word = line.split()[0]
        ev = self.wait(lambda e: e.get("event") == "result" and e.get("command") == word,
                       timeout, start)
        assert ev is not None, "%s: no answer to %r; saw %r" % (self.name, line,
                                                                self.events[start:])
        return ev

    def messages(self, channel=None):
        with self.cond:
            return [e for e in self.events if e.get("event") == "message" and
                    (channel is None or e["channel"] == channel)]

    def states(self):
        with self.cond:
            return [e["text"] for e in self.events if e.get("event") == "state"]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()
        with open(self.errlog.name, errors="replace") as f:
            marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
            reports = [l for l in f if any(m in l for m in marks)]
        assert not reports, "desk %s: %s" % (self.name, reports[:3])
