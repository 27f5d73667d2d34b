"""understudyd under systemd, with the test standing in for systemd (a
datagram socket in NOTIFY_SOCKET): READY=1 comes once /health answers
200 and not before, WATCHDOG=1 keeps coming while the worker's loop
answers and stops while it is frozen, until the master has replaced it;
STATUS= names the posts owned and the role; STOPPING=1 on SIGTERM. Log
lines carry journal priorities where stderr is the journal (or where
asked) and only there. The installed unit passes systemd-analyze verify
(its man page found), the sysusers and tmpfiles entries make the user
and /var/lib/understudy in a scratch root, and the man pages render
without warnings and name every option of their binary's --help."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BUILD, ROOT, Server, free_port, http, wait_for, write_config


class NotifySocket(threading.Thread):
    """An AF_UNIX datagram socket for NOTIFY_SOCKET; keeps every
    notification with the monotonic time it came."""

    def __init__(self):
        super().__init__(daemon=True)
        self.dir = tempfile.mkdtemp(prefix="us-sd-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.got = []  # (time, {field: value})
        self.lock = threading.Lock()
        self.running = True
        self.start()

    def run(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            with self.lock:
                self.got.append((time.monotonic(), fields))

    def values(self, field, after=0.0):
        """[(time, value)] of every notification that set field."""
        with self.lock:
            return [(t, f[field]) for t, f in self.got if field in f and t >= after]

    def times(self, field, after=0.0):
        return [t for t, _ in self.values(field, after)]

    def close(self):
        self.running = False
        self.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class HealthPoller(threading.Thread):
    """GET /health every 10 ms: (start time, status), 0 when refused."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.seen, self.running = url, [], True
        self.start()

    def run(self):
        while self.running:
            t = time.monotonic()
            try:
                st = http("GET", self.url + "/health", timeout=0.5)[0]
            except OSError:
                st = 0
            self.seen.append((t, st))
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.join(2)


def start_pa1(tmp_path, etcd, env, ttl=2, args=()):
    api = free_port()
    servers = [{"name": "PA1", "api_port": api, "failover": ["PA2"]},
               {"name": "PA2", "api_port": free_port(), "spare": True}]
    cfg = write_config(str(tmp_path / "c.conf"), etcd.endpoints, servers, lease_ttl=ttl)
    s = Server(cfg, "PA1", str(tmp_path)).start(env=env, args=args)
    s.url = "http://127.0.0.1:%d" % api
    return s


def serving_status(sd, after=0.0):
    return [v for _, v in sd.values("STATUS", after)
            if v.startswith("serving") and "owns PA1 (home)" in v]


def test_ready_watchdog_status_stopping_and_a_frozen_worker(tmp_path, etcd1):
    sd = NotifySocket()
    # hang limit 4 s / 2 - 250 ms = 1750 ms; WATCHDOG=1 every 300 ms
    s = start_pa1(tmp_path, etcd1, {"NOTIFY_SOCKET": sd.path, "WATCHDOG_USEC": "600000"},
                  ttl=4)
    poller = HealthPoller(s.url)
    try:
        assert wait_for(lambda: sd.times("READY"), 15), s.logtext()
        t_ready = sd.times("READY")[0]
        assert wait_for(lambda: any(t > t_ready for t, _ in poller.seen), 2)
        poller.stop()
        # /health failed (or was refused) before READY=1, and answers 200
        # in every poll that started after it
        assert any(st != 200 for t, st in poller.seen if t < t_ready)
        assert all(st == 200 for t, st in poller.seen if t > t_ready), poller.seen[-20:]
        assert sd.values("READY")[0][1] == "1"

        # STATUS: what it owns and its role
        assert wait_for(lambda: serving_status(sd), 5), sd.values("STATUS")
        # what came before READY=1 (if the worker reported before it
        # served) never says serving
        assert all(v.startswith(("starting", "not serving"))
                   for t, v in sd.values("STATUS") if t < t_ready), sd.values("STATUS")

        # WATCHDOG=1 keeps coming, at half the interval
        t1 = time.monotonic()
        assert wait_for(lambda: len(sd.times("WATCHDOG", t1)) >= 6, 5)
        w = sd.times("WATCHDOG", t1)
        assert max(b - a for a, b in zip(w, w[1:])) < 0.55, w
        assert {v for _, v in sd.values("WATCHDOG")} == {"1"}
        assert "under twice the hang limit" in s.logtext()

        # a frozen worker: the master stops vouching for it, kills it
        # after its hang limit, and vouches again for the new one
        worker = s.worker()
        t0 = time.monotonic()
        os.kill(worker, signal.SIGSTOP)
        new = wait_for(lambda: s.worker() not in (None, worker), 10)
        t_new = time.monotonic()
        assert new, s.logtext()
        assert t_new - t0 >= 1.5, "replaced %.3f s after the freeze" % (t_new - t0)
        # the last pong came at most one ping (50 ms) before the freeze
        silent = [t - t0 for t in sd.times("WATCHDOG", t0 + 0.4) if t < t_new]
        assert not silent, "WATCHDOG=1 from a frozen worker: %r" % silent
        assert wait_for(lambda: sd.times("WATCHDOG", t_new), 10), s.logtext()
        assert "the worker died; restarting it" in [v for _, v in sd.values("STATUS", t0)]
        assert wait_for(lambda: serving_status(sd, t_new), 10), sd.values("STATUS", t0)
        assert len(sd.times("READY")) == 1

        t_stop = time.monotonic()
        s.proc.terminate()
        assert s.proc.wait(15) == 0
        assert [v for _, v in sd.values("STOPPING", t_stop)] == ["1"]
        assert sd.values("STATUS", t_stop)[-1][1] == "stopping"
    finally:
        poller.stop()
        s.stop()
        sd.close()


PRIORITY = {"error": "<3>", "warn": "<4>", "info": "<6>", "debug": "<7>"}


def test_journal_priority_prefixes_only_under_the_journal(tmp_path, etcd1):
    # stderr is the log file; JOURNAL_STREAM naming it is what systemd
    # sets when stderr is its journal stream
    log = tmp_path / "PA1.log"
    log.write_bytes(b"")
    st = os.stat(log)
    sd = NotifySocket()
    env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino), "NOTIFY_SOCKET": sd.path,
           "WATCHDOG_USEC": "600000"}  # a warning: under twice the hang limit
    s = start_pa1(tmp_path, etcd1, env, args=["--log-level", "debug"])
    try:
        assert wait_for(lambda: sd.times("READY"), 15), s.logtext()
        worker = s.worker()
        os.kill(worker, signal.SIGKILL)  # an error line: killed by signal 9
        assert wait_for(lambda: s.worker() not in (None, worker), 10)
        assert wait_for(lambda: "killed by signal 9" in s.logtext(), 5)
    finally:
        s.stop()
        sd.close()
    lines = s.logtext().splitlines()
    for word, prefix in PRIORITY.items():
        assert any(l.startswith(prefix + word + " PA1") for l in lines), (word, lines[:20])
    assert all(re.match(r"<[3467]>(error|warn|info|debug) PA1", l) for l in lines), \
        [l for l in lines if not l.startswith("<")][:5]
    assert "<3>error PA1 master: worker pid %d killed by signal 9" % worker in lines

    # not the journal: JOURNAL_STREAM names another file, or is unset
    for n, env in enumerate(({"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino + 1)}, {})):
        s = Server(s.config, "PA1", str(tmp_path / ("plain%d" % n)))
        os.makedirs(str(tmp_path / ("plain%d" % n)))
        s.start(env=env)
        try:
            assert wait_for(lambda: "serving HTTP" in s.logtext(), 15), s.logtext()
        finally:
            s.stop()
        lines = s.logtext().splitlines()
        assert lines and all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z (info|warn|error|debug) ", l)
                             for l in lines), lines[:5]

    # and asked for, without a journal
    s = Server(s.config, "PA1", str(tmp_path / "asked"))
    os.makedirs(str(tmp_path / "asked"))
    s.start(args=["--log-format", "journal"])
    try:
        assert wait_for(lambda: "serving HTTP" in s.logtext(), 15), s.logtext()
    finally:
        s.stop()
    assert all(l.startswith("<6>info PA1") for l in s.logtext().splitlines()[:3])


@pytest.fixture(scope="module")
def installed():
    """meson install of the build into a scratch directory: its root."""
    dest = tempfile.mkdtemp(prefix="us-install-")
    r = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild",
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def find(root, name):
    for d, _, files in os.walk(root):
        if name in files:
            return os.path.join(d, name)
    raise AssertionError("%s not installed under %s" % (name, root))


def test_installed_unit_passes_systemd_analyze_verify(installed, tmp_path):
    unit = find(installed, "understudyd@.service")
    text = open(unit).read()
    exe = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
    assert os.path.isabs(exe) and exe.endswith("/bin/understudyd")
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure",
                 "KillMode=mixed", "User=understudy", "StateDirectory=understudy/%i"):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
    assert "--server %i --state-dir /var/lib/understudy/%i" in text
    # verify wants ExecStart's binary where it says, and the man pages
    # of Documentation=: the installed ones, from the scratch root
    units = tmp_path / "units"
    units.mkdir()
    (units / "understudyd@.service").write_text(text.replace(exe, installed + exe))
    os.symlink("understudyd@.service", str(units / "understudyd@PA1.service"))
    man = os.path.dirname(os.path.dirname(find(installed, "understudyd.8")))
    r = subprocess.run(["systemd-analyze", "verify", str(units / "understudyd@.service"),
                        str(units / "understudyd@PA1.service")],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MANPATH=man))
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # and the binary it names runs
    r = subprocess.run([installed + exe, "--version"], capture_output=True, text=True,
                       timeout=10, env=dict(os.environ, LD_LIBRARY_PATH=""))
    assert r.returncode == 0 and r.stdout.startswith("understudyd ")


def test_sysusers_and_tmpfiles_make_user_and_state_dir(installed, tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = tmpfiles = None
    for d, _, files in os.walk(installed):
        if d.endswith("sysusers.d") and "understudy.conf" in files:
            sysusers = os.path.join(d, "understudy.conf")
        if d.endswith("tmpfiles.d") and "understudy.conf" in files:
            tmpfiles = os.path.join(d, "understudy.conf")
    r = subprocess.run(["systemd-sysusers", "--root", str(root), sysusers],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    passwd = {l.split(":")[0]: l.split(":") for l in (root / "etc/passwd").read_text().splitlines()}
    assert "understudy" in passwd and passwd["understudy"][5] == "/var/lib/understudy"
    r = subprocess.run(["systemd-tmpfiles", "--root", str(root), "--create", tmpfiles],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    st = os.stat(str(root / "var/lib/understudy"))
    assert oct(st.st_mode & 0o7777) == "0o750"
    assert st.st_uid == int(passwd["understudy"][2])


PAGES = {"understudyd.8": "understudyd", "understudy.1": "understudy",
         "understudy-desk.1": "understudy-desk"}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_man_page_renders_without_warnings_and_names_every_option(installed, page):
    path = find(installed, page)
    r = subprocess.run(["man", "--warnings=all", "-E", "UTF-8", "-l", path],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MANWIDTH="80"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert PAGES[page] in r.stdout and "SYNOPSIS" in r.stdout
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # true to --help: every long option it names is in the page
    exe = os.path.join(BUILD, "src", PAGES[page])
    helps = [subprocess.run([exe, "--help"], capture_output=True, text=True,
                            timeout=10).stdout]
    if page == "understudy.1":
        for cmd in (["config", "check"], ["config", "apply"], ["up"], ["status"],
                    ["stop"], ["records"], ["user"], ["passwd"]):
            helps.append(subprocess.run([exe] + cmd + ["--help"], capture_output=True,
                                        text=True, timeout=10).stdout)
    want = set(re.findall(r"--[a-z][a-z-]+", "".join(helps)))
    assert want
    missing = [o for o in sorted(want) if o not in r_text(path)]
    assert not missing, missing


def r_text(path):
    """The page's text as rendered, hyphens plain."""
    out = subprocess.run(["man", "-E", "UTF-8", "-l", path], capture_output=True,
                         text=True, timeout=30, env=dict(os.environ, MANWIDTH="400"))
    return out.stdout.replace("\u2010", "-").replace("\u2212", "-")
