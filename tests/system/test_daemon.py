"""understudyd against a real etcd: the master revokes a dead or hung
worker's lease at once and restarts it; a frozen host is seen only when
its lease expires; SIGTERM stops cleanly; HTTP answers and errors."""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import (DAEMON, KeyWatcher, Server, children, free_port, http,
                      wait_for, write_config)


def start(tmp_path, etcd, ttl=2, spare=False):
    servers = [{"name": "PA1", "api_port": free_port(), "failover": ["PA2"]},
               {"name": "PA2", "api_port": free_port(), "spare": True}]
    cfg = write_config(str(tmp_path / "c.conf"), etcd.endpoints, servers, lease_ttl=ttl)
    names = ["PA1", "PA2"] if spare else ["PA1"]
    started = [Server(cfg, n, str(tmp_path)).start() for n in names]
    for s, spec in zip(started, servers):
        s.url = "http://127.0.0.1:%d" % spec["api_port"]
        assert wait_for(lambda: healthy(s), 15), s.logtext()
    return started


def healthy(s):
    try:
        return http("GET", s.url + "/health", timeout=0.5)[0] == 200
    except OSError:
        return False


def key(name):
    return "/understudy/t%d/members/%s" % (os.getpid(), name)


def test_health_status_and_membership(tmp_path, etcd1):
    pa1, pa2 = start(tmp_path, etcd1, spare=True)
    try:
        st, body = http("GET", pa1.url + "/health")
        assert st == 200 and body["status"] == "ok" and body["server"] == "PA1"
        assert etcd1.get(key("PA1")) is not None
        def members():
            st, body = http("GET", pa1.url + "/v1/status")
            assert st == 200
            return {m["name"]: m for m in body["members"]}
        # PA1 learns of PA2 from its watch, a moment after PA2 is healthy
        assert wait_for(lambda: members()["PA1"]["up"] and members()["PA2"]["up"], 5)
        assert members()["PA2"]["api_port"] == int(pa2.url.rsplit(":", 1)[1])
        pa2.stop()
        assert wait_for(lambda: not members()["PA2"]["up"], 5)
    finally:
        pa1.stop()
        pa2.stop()


def test_sigkill_worker_key_gone_at_once_then_back(tmp_path, etcd1):
    (pa1,) = start(tmp_path, etcd1)
    w = KeyWatcher(etcd1, key("PA1"))
    w.start()
    try:
        assert wait_for(lambda: w.events and w.events[-1][1], 5)
        worker = pa1.worker()
        t0 = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        gone = wait_for(lambda: w.first(False, t0), 5)
        assert gone is not None
        assert gone - t0 < 0.1, "key went %.3f s after the kill" % (gone - t0)
        back = wait_for(lambda: w.first(True, gone), 10)
        assert back is not None, pa1.logtext()
        new = pa1.worker()
        assert new and new != worker
        assert wait_for(lambda: healthy(pa1), 5)
        log = pa1.logtext()
        assert "killed by signal 9" in log and "lease revoked" in log
    finally:
        w.stop()
        pa1.stop()


def test_frozen_host_key_goes_after_ttl_not_before(tmp_path, etcd1):
    ttl = 2
    (pa1,) = start(tmp_path, etcd1, ttl=ttl)
    w = KeyWatcher(etcd1, key("PA1"))
    w.start()
    master, worker = pa1.pid, pa1.worker()
    try:
        assert wait_for(lambda: w.events and w.events[-1][1], 5)
        t0 = time.monotonic()
        os.kill(master, signal.SIGSTOP)
        os.kill(worker, signal.SIGSTOP)
        gone = wait_for(lambda: w.first(False, t0), ttl + 3)
        assert gone is not None
        # renewals go every ttl/4: the last one was at most that long ago
        assert gone - t0 >= ttl - ttl / 4 - 0.05, "gone %.3f s after the freeze" % (gone - t0)
        assert gone - t0 <= ttl + 1.5, "gone %.3f s after the freeze" % (gone - t0)
        os.kill(worker, signal.SIGCONT)
        os.kill(master, signal.SIGCONT)
        # it notices it was fenced, takes a fresh lease and comes back
        assert wait_for(lambda: w.first(True, gone), 10) is not None, pa1.logtext()
        assert wait_for(lambda: healthy(pa1), 5)
    finally:
        for pid in (master, worker):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        w.stop()
        pa1.stop()


def test_frozen_worker_killed_within_half_ttl(tmp_path, etcd1):
    ttl = 2
    (pa1,) = start(tmp_path, etcd1, ttl=ttl)
    w = KeyWatcher(etcd1, key("PA1"))
    w.start()
    worker = pa1.worker()
    try:
        assert wait_for(lambda: w.events and w.events[-1][1], 5)
        t0 = time.monotonic()
        os.kill(worker, signal.SIGSTOP)
        gone = wait_for(lambda: w.first(False, t0), ttl + 3)
        assert gone is not None
        assert gone - t0 <= ttl / 2, "gone %.3f s after the freeze" % (gone - t0)
        assert wait_for(lambda: w.first(True, gone), 10) is not None
        assert pa1.worker() != worker
        assert "has not answered" in pa1.logtext()
    finally:
        try:
            os.kill(worker, signal.SIGCONT)
        except ProcessLookupError:
            pass
        w.stop()
        pa1.stop()


def test_sigterm_revokes_and_exits_zero(tmp_path, etcd1):
    (pa1,) = start(tmp_path, etcd1)
    worker = pa1.worker()
    t0 = time.monotonic()
    pa1.proc.terminate()
    assert pa1.proc.wait(10) == 0
    assert time.monotonic() - t0 < 3
    assert etcd1.get(key("PA1")) is None          # revoked, not left to expire
    assert not os.path.exists("/proc/%d" % worker) or \
        open("/proc/%d/stat" % worker).read().split()[2] == "Z"
    assert "lease revoked" in pa1.logtext()


def test_master_killed_worker_stops_too(tmp_path, etcd1):
    (pa1,) = start(tmp_path, etcd1)
    worker = pa1.worker()
    os.kill(pa1.pid, signal.SIGKILL)
    pa1.proc.wait()
    assert wait_for(lambda: not os.path.exists("/proc/%d/status" % worker) or
                    "zombie" in open("/proc/%d/status" % worker).read(), 5)
    assert wait_for(lambda: etcd1.get(key("PA1")) is None, 2)


def test_gives_up_on_a_worker_that_keeps_dying(tmp_path, etcd1):
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    cfg = write_config(str(tmp_path / "c.conf"), etcd1.endpoints,
                       [{"name": "PA1", "api_port": port, "failover": ["PA2"]},
                        {"name": "PA2", "api_port": free_port(), "spare": True}])
    s = Server(cfg, "PA1", str(tmp_path)).start()
    try:
        assert s.proc.wait(30) == 1
        log = s.logtext()
        assert "cannot listen" in log
        assert "giving up" in log
        assert log.count("worker pid") >= 6
    finally:
        blocker.close()
        s.stop()


def test_http_errors_are_json(tmp_path, etcd1):
    (pa1,) = start(tmp_path, etcd1)
    try:
        st, body = http("GET", pa1.url + "/no/such/path")
        assert st == 404 and body["error"] == "ENOTFOUND"
        st, body = http("DELETE", pa1.url + "/health")
        assert st == 405 and body["error"] == "EMETHOD"
        # the cap is 2 MiB (a config apply carries up to 1 MiB of text):
        # the answer may come before the whole body went
        port = int(pa1.url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % (2 * 1024 * 1024 + 1))
        try:
            for _ in range(40):
                s.sendall(b"x" * 65536)
        except OSError:
            pass
        s.settimeout(5)
        reply = s.recv(4096)
        s.close()
        assert reply.startswith(b"HTTP/1.1 413") and b"ETOOBIG" in reply, reply
        # a chunked body over the cap, without Content-Length
        s = socket.create_connection(("127.0.0.1", int(pa1.url.rsplit(":", 1)[1])))
        s.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"y" * 65536
        try:
            for _ in range(40):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        s.settimeout(5)
        reply = s.recv(4096)
        s.close()
        assert reply.startswith(b"HTTP/1.1 413") and b"ETOOBIG" in reply
        # still serving
        assert http("GET", pa1.url + "/health")[0] == 200
    finally:
        pa1.stop()


def test_bad_config_is_refused_with_its_line(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text("[cluster]\nname = x\nlease_ttl = 0\n[server PA1]\naddress = 127.0.0.1\n"
                   "spare = yes\nmax_media_ports = 2\n")
    r = subprocess.run([DAEMON, "--config", str(cfg), "--server", "PA1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "bad.conf:3: error: lease_ttl: 0 is out of range 1..60" in r.stderr
    r = subprocess.run([DAEMON, "--config", str(cfg), "--server", "PA9"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    r = subprocess.run([DAEMON, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--config" in r.stdout
