"""The timeline: the servers keep a history of failovers, failbacks,
fences and restarts in etcd, and GET /v1/timeline (and `understudy
timeline`) shows it with durations: a failover measured from the
failure to the cover's claim and to the first call the cover took."""
import base64
import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import CLI, Cluster, b64, http, wait_for
from test_console import browser, shot, until  # noqa: F401 (a fixture)


@pytest.fixture
def cluster(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1,
                [{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA3"]},
                 {"name": "PA3", "ports": 4, "max": 8, "failover": ["PA1"]}],
                failback="manual")
    yield c
    c.stop_all()


def timeline(c, via, query=""):
    st, body = http("GET", c.url(via) + "/v1/timeline" + query)
    assert st == 200, body
    return body["events"]


def find(c, via, **want):
    """The events via's timeline holds that have every field of want."""
    return [e for e in timeline(c, via)
            if all(e.get(k) == v for k, v in want.items())]


def history_keys(c):
    st, r = c.etcd.call("/v3/kv/range", {
        "key": b64("/understudy/%s/history/" % c.cluster),
        "range_end": b64("/understudy/%s/history0" % c.cluster)})
    return [json.loads(base64.b64decode(kv["value"]))
            for kv in r.get("kvs", [])]


def test_timeline_crash_failover_first_call_failback(cluster):
    """A crash of PA1's worker gives a restart event written by PA1's
    master and one failover event by PA3 timed from the master's death
    notice; the first call PA3 takes on PA1 completes that event; an
    operator's failback, with a call still on the cover, gives a failback
    event once the call ended."""
    c = cluster.start()
    assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA3", "PA3")
    assert timeline(c, "PA3") == []
    c.kill_worker("PA1")
    assert c.wait_owner("PA1", "PA3", 5)

    assert wait_for(lambda: find(c, "PA3", kind="restart", server="PA1"), 10)
    r = find(c, "PA3", kind="restart", server="PA1")[0]
    assert r["cause"] == "killed by signal 9 (Killed)", r
    assert 0 <= r["down_ms"] < 2000 and r["restarted_ms"] >= r["at"], r
    assert r["summary"].startswith("worker restarted "), r

    # every server reads the same history: PA1's restarted worker too
    assert wait_for(lambda: c.healthy("PA1"), 10)
    assert wait_for(lambda: find(c, "PA1", kind="failover", post="PA1"), 10)
    f = find(c, "PA1", kind="failover", post="PA1")[0]
    assert (f["from"], f["to"], f["server"]) == ("PA1", "PA3", "PA3"), f
    assert f["cause"] == "worker crashed" and f["failure_basis"] == "death notice"
    # the crash is seen at once (software failover): well under a TTL
    assert 0 <= f["takeover_ms"] < 1500, f
    assert f["claimed_ms"] - f["at"] == f["takeover_ms"]
    assert "first_call_ms" not in f and "no call" in f["summary"], f

    st, call = c.call("PA1", via="PA3")
    assert st == 201 and call["server"] == "PA3", call
    assert wait_for(lambda: "first_call_ms" in
                    find(c, "PA3", kind="failover", post="PA1")[0], 5)
    f = find(c, "PA3", kind="failover", post="PA1")[0]
    assert f["first_call_after_ms"] == f["first_call_ms"] - f["at"]
    assert f["first_call_after_ms"] >= f["takeover_ms"], f
    assert "first call" in f["summary"] and "after the failure" in f["summary"]
    # a second call is not a first call: the event stays as it was
    st, call2 = c.call("PA1", via="PA3")
    assert st == 201
    c.end(call2)

    st, _ = c.control("failback", "PA1")
    assert st == 202
    assert c.wait_state("PA1", "FAILING_BACK", 10, via="PA1")
    assert find(c, "PA1", kind="failback") == []   # a call is still returning
    c.end(call)
    assert wait_for(lambda: find(c, "PA3", kind="failback", post="PA1"), 10)
    b = find(c, "PA3", kind="failback", post="PA1")[0]
    assert (b["from"], b["to"], b["server"]) == ("PA3", "PA1", "PA1"), b
    assert b["cause"] == "an operator's failback", b
    assert b["covered_ms"] > 0 and b["returning_ms"] > 0, b
    assert b["returned_ms"] - b["at"] == b["returning_ms"]

    # one event each, newest first, and the filters
    kinds = [e["kind"] for e in timeline(c, "PA1")]
    assert kinds == ["failback", "failover", "restart"], kinds
    assert [e["kind"] for e in timeline(c, "PA1", "?kind=failover,restart")] \
        == ["failover", "restart"]
    assert len(timeline(c, "PA1", "?limit=1")) == 1
    assert timeline(c, "PA1", "?since=%d" % (b["at"] + 1)) == []
    st, body = http("GET", c.url("PA1") + "/v1/timeline?kind=reboot")
    assert st == 400 and "kind" in body["message"], body
    assert len(history_keys(c)) == 3

    # /metrics: the cover's last failover, from the failure to its claim
    st, text = http("GET", c.url("PA3") + "/metrics")
    assert "understudy_failover_last_duration_seconds %.3f" % (
        f["takeover_ms"] / 1000) in text, text

    # the CLI: text and JSON
    out = subprocess.run([CLI, "timeline", "--server", c.url("PA3")],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "failback" in lines[1] and "PA3 -> PA1" in lines[1], out.stdout
    assert "failover" in lines[2] and "first call" in lines[2], out.stdout
    out = subprocess.run([CLI, "timeline", "--server", c.url("PA1"), "--json",
                          "--kind", "restart"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert [e["kind"] for e in json.loads(out.stdout)["events"]] == ["restart"]


def test_timeline_fence_after_etcd_returns(cluster):
    """etcd frozen longer than the lease: every server fences itself and,
    once etcd answers again, writes one fence event with how long it
    was fenced (no longer than etcd was away)."""
    c = cluster.start()
    assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA3", "PA3")
    etcd = c.etcd.members[0]["proc"]
    t0 = time.time()
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: not c.healthy("PA1") and not c.healthy("PA3"), 5)
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
    assert wait_for(lambda: c.healthy("PA1") and c.healthy("PA3"), 15)
    frozen_ms = (time.time() - t0) * 1000
    assert wait_for(lambda: len(find(c, "PA1", kind="fence")) == 2, 10), \
        timeline(c, "PA1")
    for e in find(c, "PA1", kind="fence"):
        assert e["server"] in ("PA1", "PA3")
        assert 0 < e["fenced_for_ms"] <= frozen_ms, (e, frozen_ms)
        assert e["unfenced_ms"] - e["at"] == e["fenced_for_ms"]
        assert e["cause"], e
        assert e["summary"].startswith("fenced for "), e
    assert {e["server"] for e in find(c, "PA3", kind="fence")} == {"PA1", "PA3"}


def test_console_timeline_page(cluster, browser, tmp_path):
    """The console's Timeline page shows the failover of a crashed
    worker's post with its cover and durations, and the restart, without
    a reload; the first call the cover takes appears in the row. The
    page polls only every 30 s: within 10 s, the stream's timeline
    events brought them."""
    from selenium.webdriver.common.by import By
    c, d = cluster.start(), browser
    assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA3", "PA3")
    d.get(c.url("PA3") + "/")
    until(d, lambda: d.find_element(By.ID, "nav-timeline").is_displayed())
    d.find_element(By.ID, "nav-timeline").click()
    until(d, lambda: "No failover" in d.find_element(By.ID, "timeline-msg").text)
    d.execute_script("window.mark = 1")
    c.kill_worker("PA1")

    def row(kind):
        return [r for r in rows(d) if r[1].endswith(kind)]
    until(d, lambda: row("failover") and row("restart"), 10)
    f = row("failover")[0]
    assert f[1] == "⇢ failover" and f[2] == "PA1" and f[3] == "PA1 → PA3", f
    assert f[4].startswith("failover ") and "no call" in f[4], f
    assert f[5] == "worker crashed", f
    r = row("restart")[0]
    assert r[2] == "-" and r[3] == "PA1" and r[5].startswith("killed by signal 9"), r
    st, call = c.call("PA1", via="PA3")
    assert st == 201
    until(d, lambda: "after the failure" in row("failover")[0][4], 10)
    assert d.execute_script("return window.mark") == 1    # no reload
    shot(d, tmp_path, "timeline", docs=True)
    c.end(call)


def rows(d):
    """The timeline's rows as lists of cell texts (redrawn while read:
    nothing, and ask again)."""
    try:
        return d.execute_script("""return [...document.querySelectorAll(
            '#timeline tbody tr')].map(r => [...r.cells].map(c => c.textContent))""")
    except Exception:
        return []


def test_timeline_lost_answers_make_no_duplicate(tmp_path, etcd1):
    """A server whose etcd answers to its history writes are lost (the
    write applied, its answer never back) sends them again: the failover
    it saw is in the history once, and its first call once; a writer
    that did not compare on the key's absence could not tell that the
    lost send was done."""
    from test_lost_answers import LossyProxy

    class HistoryProxy(LossyProxy):
        @staticmethod
        def control_write(path, body):
            keys = []
            try:
                for op in json.loads(body or b"{}").get("success", []):
                    for v in op.values():
                        keys.append(base64.b64decode(v.get("key", "")).decode())
            except (ValueError, AttributeError):
                return None
            return "action" if any("/history/" in k for k in keys) else None

    proxy = HistoryProxy(int(etcd1.endpoints[0].rsplit(":", 1)[1]), random.Random(1))
    c = Cluster(tmp_path, etcd1,
                [{"name": "A", "ports": 2, "max": 4, "failover": ["B"]},
                 {"name": "B", "ports": 2, "max": 4, "failover": ["A"]}],
                failback="manual")
    with open(c.config) as f:
        text = f.read()
    a_conf = os.path.join(c.tmp, "a.conf")
    with open(a_conf, "w") as f:
        f.write(text.replace("etcd = " + ", ".join(etcd1.endpoints),
                             "etcd = " + proxy.url, 1))
    c.srv["A"].config = a_conf
    try:
        c.start()
        assert c.wait_owner("A", "A") and c.wait_owner("B", "B")
        # the create applied, its answers lost: sent again, as it was
        proxy.plan = ["drop"] * 3
        c.kill_worker("B")
        assert c.wait_owner("B", "A", 5)

        def failovers():
            return [e for e in history_keys(c) if e["kind"] == "failover"]
        # the resend found its first send done, or (wrongly) wrote again
        assert wait_for(lambda: "was already written (an answer was lost)"
                        in c.srv["A"].logtext() or len(failovers()) > 1, 10)
        assert proxy.plan == []
        fo = failovers()
        assert len(fo) == 1 and fo[0]["post"] == "B" and fo[0]["to"] == "A", fo
        proxy.plan = ["drop"] * 3           # the first call's completion
        st, call = c.call("B", via="A")
        assert st == 201 and call["server"] == "A", call
        assert wait_for(lambda: "already has its first call"
                        in c.srv["A"].logtext(), 10)
        fo = failovers()
        assert len(fo) == 1 and "first_call_ms" in fo[0], fo
        c.end(call)
    finally:
        c.stop_all()
        proxy.close()
