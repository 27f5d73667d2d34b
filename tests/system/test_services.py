"""Services supervised with their post (issue 13): [service] sections run
by each server's master, server-scope services that outlive the worker,
post services fenced like their post (never two copies in the cluster),
/v1/services, understudy status and service actions, health_requires."""
import json
import os
import signal
import subprocess
import time

from conftest import (AUTH, CLI, Cluster, ROOT, TOKEN, free_port, http,
                      wait_for)

SVC = "exec /usr/bin/python3 %s" % os.path.join(ROOT, "examples", "us-service.py")


def section(name, args, **opts):
    lines = ["[service %s]" % name, "command = %s %s" % (SVC, args),
             "working_dir = ."]
    lines += ["%s = %s" % (k, v) for k, v in opts.items()]
    return "\n".join(lines) + "\n\n"


def events(c, log):
    path = os.path.join(c.tmp, log)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def services(c, via):
    st, body = http("GET", c.url(via) + "/v1/services", timeout=2)
    assert st == 200
    return {(s["server"], s["name"]): s for s in body["services"]}


def state(c, via, server, name):
    try:
        s = services(c, via).get((server, name))
    except (OSError, AssertionError):
        return None
    return s["state"] if s else None


def wait_state(c, via, server, name, want, timeout=10):
    return wait_for(lambda: state(c, via, server, name) == want, timeout, step=0.05)


def copies(evs):
    """[(server, epoch, start, stop)] of every copy, from its log lines."""
    out, open_ = [], {}
    for e in evs:
        if e["event"] == "start":
            open_[e["pid"]] = e
        elif e["event"] in ("stop", "exit") and e["pid"] in open_:
            s = open_.pop(e["pid"])
            out.append((s["server"], s["epoch"], s["t"], e["t"]))
    for s in open_.values():
        out.append((s["server"], s["epoch"], s["t"], None))
    return out


def assert_never_two(evs):
    cs = sorted(copies(evs), key=lambda x: x[2])
    for a, b in zip(cs, cs[1:]):
        assert a[3] is not None and a[3] <= b[2], "two copies at once: %s %s" % (a, b)


def test_after_order_and_readiness(tmp_path, etcd1):
    """Services start in their `after` order, each only once the ones it
    waits for are ready (an HTTP probe, then READY=1 on NOTIFY_SOCKET)."""
    port = free_port()
    secs = (section("db", "--log order.log --http %d --ready-delay 1" % port,
                    ready="http://127.0.0.1:%d/health" % port) +
            section("queue", "--log order.log --notify --ready-delay 0.5",
                    after="db", ready="notify") +
            section("web", "--log order.log", after="queue"))
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}], sections=secs)
    try:
        c.start()
        assert wait_state(c, "PA1", "PA1", "web", "ready", 15)
        assert wait_for(lambda: len(events(c, "order.log")) == 3, 5)
        starts = {e["service"]: e["t"] for e in events(c, "order.log")
                  if e["event"] == "start"}
        assert starts["queue"] - starts["db"] >= 1.0, starts
        assert starts["web"] - starts["queue"] >= 0.5, starts
    finally:
        c.stop_all()


def test_killed_service_restarts_with_backoff(tmp_path, etcd1):
    """A killed service is restarted after restart_delay, the next time
    after twice that; the other service and the worker are untouched."""
    secs = (section("a", "--log a.log", restart_delay="400") +
            section("b", "--log b.log"))
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}], sections=secs)
    try:
        c.start()
        assert wait_state(c, "PA1", "PA1", "a", "ready")
        assert wait_state(c, "PA1", "PA1", "b", "ready")
        worker, b_pid = c.srv["PA1"].worker(), services(c, "PA1")[("PA1", "b")]["pid"]
        gaps = []
        for n in (1, 2):
            assert wait_for(lambda: len(events(c, "a.log")) == n, 5)
            pid = services(c, "PA1")[("PA1", "a")]["pid"]
            assert events(c, "a.log")[-1]["pid"] == pid
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda: services(c, "PA1")[("PA1", "a")]["pid"] not in (0, pid)
                            and state(c, "PA1", "PA1", "a") == "ready", 10, step=0.02)
            assert wait_for(lambda: len(events(c, "a.log")) == n + 1, 5)
            gaps.append(events(c, "a.log")[-1]["t"] - t0)
        a = services(c, "PA1")[("PA1", "a")]
        assert a["restarts"] == 2 and a["last_exit"] == "signal 9", a
        assert 0.35 <= gaps[0] < gaps[1] and gaps[1] >= 0.75, gaps
        assert services(c, "PA1")[("PA1", "b")]["pid"] == b_pid
        assert c.srv["PA1"].worker() == worker
    finally:
        c.stop_all()


def test_crash_loop_is_failed_until_reset(tmp_path, etcd1):
    """A service that keeps crashing is marked failed (status, metrics, log,
    /health through health_requires) and runs again after `service reset`."""
    secs = section("crashy", "--log c.log --exit-after 0.2", restart_delay="50",
                   crash_limit="3")
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}], sections=secs,
                extra=["health_requires = crashy"])
    try:
        c.start(wait=False)
        assert wait_state(c, "PA1", "PA1", "crashy", "failed", 15)
        st, body = http("GET", c.url("PA1") + "/health")
        assert st == 503 and "crashy" in body["reason"], body
        st = c.status("PA1")
        assert any(s["name"] == "crashy" and s["state"] == "failed" for s in st["services"])
        out = subprocess.run([CLI, "status", "--config", c.config], capture_output=True,
                             text=True).stdout
        assert "crashy" in out and "failed" in out, out
        with urllib_open(c.url("PA1") + "/metrics") as m:
            assert 'understudy_service_state{service="crashy",state="failed"} 1' in m
        assert "service crashy: restarting -> failed" in c.srv["PA1"].logtext() or \
            "-> failed" in c.srv["PA1"].logtext()
        n = len([e for e in events(c, "c.log") if e["event"] == "start"])
        r = subprocess.run([CLI, "service", "reset", "crashy", "--config", c.config],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: len([e for e in events(c, "c.log")
                                     if e["event"] == "start"]) > n, 10)
    finally:
        c.stop_all()


def urllib_open(url):
    import contextlib
    import urllib.request

    @contextlib.contextmanager
    def cm():
        with urllib.request.urlopen(url, timeout=2) as r:
            yield r.read().decode()
    return cm()


def test_health_requires(tmp_path, etcd1):
    """/health answers 503 while a service of health_requires is not ready,
    and 200 once it is; `service stop` takes it out again."""
    secs = section("gate", "--log g.log --notify --ready-delay 1.5", ready="notify")
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}], sections=secs,
                extra=["health_requires = gate"])
    try:
        c.start(wait=False)
        assert wait_for(lambda: state(c, "PA1", "PA1", "gate") == "starting", 10)
        assert http("GET", c.url("PA1") + "/health")[0] == 503
        assert wait_for(lambda: c.healthy("PA1"), 10)
        st, _ = http("POST", c.url("PA1") + "/v1/services/gate/stop", b"", headers=AUTH)
        assert st == 202
        assert wait_for(lambda: not c.healthy("PA1"), 10)
        assert http("POST", c.url("PA1") + "/v1/services/gate/stop", b"")[0] == 401
    finally:
        c.stop_all()


def test_worker_crash_keeps_server_services(tmp_path, etcd1):
    """A killed worker does not restart the server's services."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}], sections=section("s", "--log s.log"))
    try:
        c.start()
        assert wait_state(c, "PA1", "PA1", "s", "ready")
        pid = services(c, "PA1")[("PA1", "s")]["pid"]
        old = c.srv["PA1"].worker()
        c.kill_worker("PA1")
        assert wait_for(lambda: c.srv["PA1"].worker() not in (None, old) and
                        c.healthy("PA1"), 15)
        assert wait_state(c, "PA1", "PA1", "s", "ready")
        assert services(c, "PA1")[("PA1", "s")]["pid"] == pid
        assert wait_for(lambda: len(events(c, "s.log")) == 1, 5)
        time.sleep(0.5)   # (a restart would write a second start line)
        assert len(events(c, "s.log")) == 1
    finally:
        c.stop_all()


def post_cluster(tmp_path, etcd, ttl=2):
    port = free_port()
    secs = section("rec", "--log post.log --http %d" % port, scope="post", post="PA1",
                   ready="http://127.0.0.1:%d/" % port, stop_timeout="2000")
    return Cluster(tmp_path, etcd, [{"name": "PA1", "failover": ["PA2"]},
                                    {"name": "PA2"}], ttl=ttl, delay=1, sections=secs)


def running_on(c, via, server):
    s = services(c, via).get((server, "rec"))
    return s and s["state"] == "ready"


def test_post_service_follows_its_post(tmp_path, etcd1):
    """A post service runs only where its post is owned, with the post and
    epoch in its environment; it moves to the cover when its home's worker
    is killed and back home on failback; never two copies at once."""
    c = post_cluster(tmp_path, etcd1)
    try:
        c.start()
        assert wait_for(lambda: running_on(c, "PA2", "PA1"), 10)
        assert state(c, "PA2", "PA2", "rec") == "stopped"
        first = events(c, "post.log")[0]
        assert first["post"] == "PA1" and first["server"] == "PA1" and int(first["epoch"]) > 0
        c.kill_worker("PA1")
        assert wait_for(lambda: running_on(c, "PA2", "PA2"), 10)
        assert wait_for(lambda: c.post("PA1", "PA2")["state"] == "HOME", 20)
        assert wait_for(lambda: running_on(c, "PA2", "PA1"), 10)
        assert state(c, "PA2", "PA2", "rec") == "stopped"
        evs = events(c, "post.log")
        assert [e["server"] for e in evs if e["event"] == "start"] == ["PA1", "PA2", "PA1"]
        assert len({e["epoch"] for e in evs if e["event"] == "start"}) == 3
        assert_never_two(evs)
        out = subprocess.run([CLI, "service", "list", "--config", c.config],
                             capture_output=True, text=True).stdout
        assert "rec" in out and "PA1@PA1" in out, out
    finally:
        c.stop_all()


def test_post_service_fenced_on_frozen_host(tmp_path, etcd1):
    """A frozen host (master and worker stopped) keeps no copy: the fence
    kills the post service by the fencing deadline, before the cover
    starts its own."""
    c = post_cluster(tmp_path, etcd1)
    try:
        c.start()
        assert wait_for(lambda: running_on(c, "PA2", "PA1"), 10)
        t0 = time.time()
        c.freeze("PA1")
        assert wait_for(lambda: running_on(c, "PA2", "PA2"), 15)
        stops = [e for e in events(c, "post.log") if e["event"] == "stop"]
        assert stops and stops[0]["server"] == "PA1" and stops[0]["t"] - t0 < 2.0
        assert_never_two(events(c, "post.log"))
        c.thaw("PA1")
        assert wait_for(lambda: running_on(c, "PA2", "PA1"), 20)
        assert_never_two(events(c, "post.log"))
    finally:
        c.stop_all()


def test_post_service_stops_when_etcd_is_cut(tmp_path, etcd1):
    """With etcd frozen no lease can be renewed: the post service stops
    before the fencing deadline, and starts again once etcd is back."""
    c = post_cluster(tmp_path, etcd1)
    try:
        c.start()
        assert wait_for(lambda: running_on(c, "PA2", "PA1"), 10)
        proc = etcd1.members[0]["proc"]
        t0 = time.time()
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            assert wait_for(lambda: any(e["event"] == "stop" for e in events(c, "post.log")), 5)
            stop = [e for e in events(c, "post.log") if e["event"] == "stop"][0]
            assert stop["t"] - t0 < 2.0   # lease_ttl 2 s
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert wait_for(lambda: any(running_on(c, "PA2", s) for s in ("PA1", "PA2")), 20)
        assert_never_two(events(c, "post.log"))
    finally:
        c.stop_all()


def test_services_of_the_version_in_effect(tmp_path, etcd1):
    """A configuration version that changes a server's services needs a
    restart of understudyd (config apply says so); after it the master
    runs the services of the version in effect, not those of its local
    file, which still has the old ones."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}], sections=section("s", "--log v1.log"))
    try:
        c.start()
        assert wait_state(c, "PA1", "PA1", "s", "ready")
        # the service of version 1 runs (its first line written)
        assert wait_for(lambda: [e["event"] for e in events(c, "v1.log")] == ["start"], 5)
        with open(c.config) as f:
            text = f.read()
        v2 = os.path.join(c.tmp, "v2.conf")
        with open(v2, "w") as f:
            f.write(text.replace("--log v1.log", "--log v2.log", 1))
        out = subprocess.run([CLI, "config", "apply", v2, "--comment", "s logs elsewhere",
                              "--config", c.config], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "needs a restart of every server: command changed" in out.stdout, out.stdout
        assert len(events(c, "v2.log")) == 0       # not before the restart
        c.srv["PA1"].stop()
        c.srv["PA1"].start()
        assert wait_for(lambda: c.healthy("PA1"), 15)
        assert wait_state(c, "PA1", "PA1", "s", "ready")
        assert wait_for(lambda: [e["event"] for e in events(c, "v2.log")] == ["start"], 5)
        # the local file was not touched: it still names v1.log
        with open(c.config) as f:
            assert "--log v1.log" in f.read()
        assert [e["event"] for e in events(c, "v1.log")].count("start") == 1
    finally:
        c.stop_all()
