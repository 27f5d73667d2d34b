"""Desks (understudy-desk on libunderstudy) against real servers, etcd
and NATS JetStream: channel traffic between desks, server down with the
desk up, communications cut by a proxy, local login, NATS down and back
with three desks sending, and a long run with the server and NATS killed
at random moments: every message delivered to every member exactly once,
in order."""
import json
import os
import random
import shutil
import subprocess
import time

import pytest

from conftest import PASSWORDS, Cluster, Desk, Nats, Proxy, hashed, http, wait_for



def cluster(tmp_path, etcd, nats, extra=()):
    sections = ("[user alice]\npassword = %s\ngroups = dispatch\n\n"
                "[user bob]\npassword = %s\ngroups = dispatch\n\n"
                "[user carol]\npassword = %s\ngroups = dispatch\n\n"
                "[channel fire]\nallow = @dispatch\n\n[channel police]\nallow = @dispatch\n"
                % tuple(hashed(PASSWORDS[u]) for u in ("alice", "bob", "carol")))
    c = Cluster(tmp_path, etcd, [{"name": "PA1", "ports": 1, "max": 2}],
                extra=["messaging = " + nats.url] + (list(extra) or ["session_timeout = 600"]),
                sections=sections)
    c.start()
    return c


def online_desk(tmp_path, c, name, user, servers=None):
    d = Desk(str(tmp_path), name, servers or [c.url("PA1")])
    r = d.cmd("login %s %s" % (user, PASSWORDS[user]))
    assert r["ok"], r
    assert d.wait(lambda e: e.get("kind") == "messaging" and "up" in e["text"], 10)
    return d


def texts(d, channel="fire"):
    return [m["text"] for m in d.messages(channel) if m["text"] != "end-mark"]


def drained(desks, channel="fire"):
    """A last message through the channel reached every desk: whatever
    came before it in the stream (a duplicate too) has been delivered."""
    assert desks[0].cmd("send %s end-mark" % channel)["ok"]
    for d in desks:
        assert wait_for(lambda: any(m["text"] == "end-mark"
                                    for m in d.messages(channel)), 30), d.name


@pytest.fixture
def env(tmp_path, etcd1, nats):
    c = cluster(tmp_path, etcd1, nats)
    desks = []
    yield c, desks
    for d in desks:
        d.stop()
    c.stop_all()


def test_messages_flow_between_desks(env, tmp_path):
    c, desks = env
    a = online_desk(tmp_path, c, "a", "alice")
    b = online_desk(tmp_path, c, "b", "bob")
    desks += [a, b]
    assert a.cmd("join fire")["ok"] and b.cmd("join fire")["ok"]
    assert a.cmd("send fire hello from alice")["ok"]
    assert b.cmd("send fire hi alice")["ok"]
    for d in (a, b):
        assert wait_for(lambda: len(d.messages("fire")) == 2, 10), d.events
        assert texts(d) == texts(a)            # the same order everywhere
    assert {m["from"] for m in b.messages()} == {"alice", "bob"}
    r = a.cmd("send police not joined")
    assert not r["ok"] and r["error"] == "ENOTFOUND"


def test_server_down_desk_up_then_resumes_without_login(env, tmp_path):
    c, desks = env
    a = online_desk(tmp_path, c, "a", "alice")
    b = online_desk(tmp_path, c, "b", "bob")
    desks += [a, b]
    assert a.cmd("join fire")["ok"] and b.cmd("join fire")["ok"]
    c.kill("PA1")                                  # SIGKILL, master and worker
    assert a.wait(lambda e: e.get("event") == "state" and
                  e["text"].startswith("online -> offline (PA1 unreachable"), 10)
    # offline: existing channels kept (NATS still up), new ones refused
    r = a.cmd("join police")
    assert not r["ok"] and r["error"] == "EOFFLINE"
    assert a.cmd("send fire while the server is down")["ok"]
    assert wait_for(lambda: "while the server is down" in texts(b), 10)
    st = a.cmd("status")
    assert st["online"] is False and st["messaging"] is True
    # the server restarts from its database: the desk resumes, no new login
    mark = len(a.events)
    c.srv["PA1"].start()
    assert a.wait(lambda e: e.get("event") == "state" and
                  e["text"] == "offline -> online (PA1)", 20, mark)
    assert not [e for e in a.events[mark:] if e.get("kind") == "relogin"]
    assert a.wait(lambda e: e.get("kind") == "channels_refreshed", 5, mark)
    assert a.cmd("join police")["ok"]


def test_communications_cut_by_a_proxy(env, tmp_path):
    c, desks = env
    proxy = Proxy(c.spec["PA1"]["api"])
    try:
        a = online_desk(tmp_path, c, "a", "alice", servers=[proxy.url])
        desks.append(a)
        proxy.cut()
        assert a.wait(lambda e: e.get("event") == "state" and
                      e["text"].startswith("online -> offline"), 10)
        assert a.cmd("join fire")["error"] == "EOFFLINE"
        proxy.restore()
        assert a.wait(lambda e: e.get("event") == "state" and
                      e["text"] == "offline -> online (PA1)", 20)
        assert a.cmd("join fire")["ok"]
    finally:
        proxy.close()


def test_local_login_only_for_a_user_seen_online(env, tmp_path):
    c, desks = env
    a = online_desk(tmp_path, c, "a", "alice")
    assert a.cmd("join fire")["ok"]
    a.stop()
    c.kill("PA1")                                  # no server answers now
    a2 = Desk(str(tmp_path), "a", [c.url("PA1")], profile=a.profile)
    desks.append(a2)
    r = a2.cmd("login bob " + PASSWORDS["bob"])
    assert not r["ok"] and r["error"] == "EUNAUTHORIZED"
    assert "never logged in online" in r["message"]
    r = a2.cmd("login alice wrong-password")
    assert not r["ok"]
    r = a2.cmd("login alice " + PASSWORDS["alice"])
    assert r["ok"]
    assert a2.wait(lambda e: e.get("event") == "state" and "local login" in e["text"], 5)
    chans = a2.cmd("channels")["channels"]
    assert [ch["name"] for ch in chans if ch["joined"]] == ["fire"]
    assert a2.cmd("status")["online"] is False


def test_nats_down_and_back_three_desks(tmp_path, etcd1):
    n = Nats(str(tmp_path))
    c = cluster(tmp_path, etcd1, n)
    desks = []
    try:
        for name, user in (("a", "alice"), ("b", "bob"), ("c", "carol")):
            d = online_desk(tmp_path, c, name, user)
            assert d.cmd("join fire")["ok"]
            desks.append(d)
        n.kill()
        for d in desks:
            assert d.wait(lambda e: e.get("kind") == "messaging" and "down" in e["text"], 10)
        r = desks[0].cmd("join police")                 # no new channels now
        assert not r["ok"] and r["error"] == "EOFFLINE"
        for i in range(5):
            for d in desks:
                assert d.cmd("send fire %s-%d" % (d.name, i))["ok"]
        assert all(d.cmd("status")["outbox"] == 5 for d in desks)
        n.start()
        want = sorted("%s-%d" % (x, i) for x in "abc" for i in range(5))
        for d in desks:
            assert wait_for(lambda: len(d.messages("fire")) >= 15, 30), d.events[-5:]
        drained(desks)                                  # nothing more comes
        orders = [texts(d) for d in desks]
        for o in orders:
            assert sorted(o) == want                    # each once
            assert o == orders[0]                       # one order for all
            for x in "abc":                             # a sender's own order
                mine = [t for t in o if t.startswith(x + "-")]
                assert mine == ["%s-%d" % (x, i) for i in range(5)]
        assert all(d.cmd("status")["outbox"] == 0 for d in desks)
    finally:
        for d in desks:
            d.stop()
        c.stop_all()
        n.stop()


def test_nats_back_without_its_store(tmp_path, etcd1):
    """NATS comes back without its store (a replaced disk): the desks say
    what was lost, recreate the stream, and messages flow again; what
    waited in an outbox goes out."""
    n = Nats(str(tmp_path))
    c = cluster(tmp_path, etcd1, n)
    desks = []
    try:
        for name, user in (("a", "alice"), ("b", "carol")):
            d = online_desk(tmp_path, c, name, user)
            assert d.cmd("join fire")["ok"]
            desks.append(d)
        a, b = desks
        for i in range(3):
            assert a.cmd("send fire before-%d" % i)["ok"]
        assert wait_for(lambda: len(texts(b)) == 3, 15), texts(b)
        n.kill()
        shutil.rmtree(n.dir)                            # the store is gone
        assert a.wait(lambda e: e.get("kind") == "messaging" and "down" in e["text"], 10)
        assert a.cmd("send fire during")["ok"]          # waits in the outbox
        mark = [len(d.events) for d in desks]
        n.start()
        for d, m in zip(desks, mark):
            assert d.wait(lambda e: e.get("kind") == "store_lost", 20, m), d.events[-5:]
        assert wait_for(lambda: a.cmd("status")["outbox"] == 0, 20)
        assert a.cmd("send fire after")["ok"]
        want = ["before-0", "before-1", "before-2", "during", "after"]
        assert wait_for(lambda: texts(b) == want, 20), texts(b)
        drained(desks)
        assert texts(a) == want and texts(b) == want
    finally:
        for d in desks:
            d.stop()
        c.stop_all()
        n.stop()


def test_thousand_messages_with_server_and_nats_killed(tmp_path, etcd1):
    """1,000 messages from one desk to two others while the server and NATS
    are each killed twice at random moments: none lost, none twice."""
    n = Nats(str(tmp_path))
    c = cluster(tmp_path, etcd1, n)
    seed = int(os.environ.get("US_SEED", random.randrange(1 << 32)))
    print("seed %d (replay: US_SEED=%d)" % (seed, seed))
    rnd = random.Random(seed)
    desks = []
    try:
        for name, user in (("s", "alice"), ("r1", "bob"), ("r2", "carol")):
            d = online_desk(tmp_path, c, name, user)
            assert d.cmd("join fire")["ok"]
            desks.append(d)
        sender = desks[0]
        kills = sorted(rnd.sample(range(50, 950), 4))
        what = ["server", "nats", "server", "nats"]
        rnd.shuffle(what)
        plan = dict(zip(kills, what))
        for i in range(1000):
            if i in plan:
                if plan[i] == "server":
                    c.kill("PA1")
                    time.sleep(rnd.uniform(0.2, 1.0))
                    c.srv["PA1"].start()
                else:
                    n.kill()
                    time.sleep(rnd.uniform(0.2, 1.0))
                    n.start()
            assert sender.cmd("send fire m%04d" % i)["ok"]
        want = ["m%04d" % i for i in range(1000)]
        for d in desks:
            assert wait_for(lambda: len(d.messages("fire")) >= 1000, 90), \
                (d.name, len(d.messages("fire")), plan)
        drained(desks)
        for d in desks:
            got = texts(d)
            assert got == want, (d.name, plan, len(got),
                                 [t for t in want if t not in got][:5])
            seqs = [m["seq"] for m in d.messages("fire") if m["text"] != "end-mark"]
            assert seqs == sorted(set(seqs))
    finally:
        for d in desks:
            d.stop()
        c.stop_all()
        n.stop()


def test_expired_session_logs_in_again(tmp_path, etcd1, nats):
    """Offline longer than session_timeout: when the server is back the
    session is gone, and the desk logs in again with the password it
    holds for this run."""
    c = cluster(tmp_path, etcd1, nats, extra=["session_timeout = 10"])
    a = None
    try:
        a = online_desk(tmp_path, c, "a", "alice")
        c.kill("PA1")
        assert a.wait(lambda e: e.get("event") == "state" and "offline" in e["text"], 10)
        # the passage of time is what this test is about: idle past
        # session_timeout while the server is down
        time.sleep(11)
        mark = len(a.events)
        c.srv["PA1"].start()
        assert a.wait(lambda e: e.get("kind") == "relogin", 30, mark)
        assert a.wait(lambda e: e.get("event") == "state" and
                      e["text"] == "offline -> online (PA1)", 30, mark)
        assert a.cmd("join fire")["ok"]
    finally:
        if a:
            a.stop()
        c.stop_all()


def test_desk_finds_the_other_servers_of_the_cluster(tmp_path, etcd1, nats):
    """A desk that knows only PA1 learns the cluster's servers from its
    session: with PA1 gone it goes on at PA3 (a new session there)."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 1, "max": 2},
                                  {"name": "PA3", "ports": 1, "max": 2}],
                extra=["messaging = " + nats.url],
                sections="[user alice]\npassword = %s\n\n[channel fire]\n"
                % hashed(PASSWORDS["alice"]))
    a = None
    try:
        c.start()
        a = online_desk(tmp_path, c, "a", "alice")
        c.kill("PA1")
        assert a.wait(lambda e: e.get("event") == "state" and
                      e["text"] == "offline -> online (PA3)", 20), a.events
        assert a.cmd("join fire")["ok"]
    finally:
        if a:
            a.stop()
        c.stop_all()


def test_restarted_desk_resumes_without_password(env, tmp_path):
    """A desk program started again goes on with its stored session; once
    the server has forgotten that session, resume ends logged out."""
    import sqlite3
    from conftest import http
    c, desks = env
    a = online_desk(tmp_path, c, "a", "alice")
    assert a.cmd("join fire")["ok"]
    a.stop()
    a2 = Desk(str(tmp_path), "a", [c.url("PA1")], profile=a.profile)
    desks.append(a2)
    assert a2.cmd("resume")["ok"]
    assert a2.wait(lambda e: e.get("event") == "state" and
                   e["text"] == "offline -> online (PA1)", 10)
    chans = a2.cmd("channels")["channels"]
    assert [ch["name"] for ch in chans if ch["joined"]] == ["fire"]
    a2.stop()
    # the session is logged out elsewhere: the next resume cannot go on
    db = sqlite3.connect(a.profile + "/desk.db")
    token = db.execute("SELECT v FROM kv WHERE k = 'token'").fetchone()[0]
    db.close()
    assert http("POST", c.url("PA1") + "/v1/desk/logout", b"",
                headers={"Authorization": "Bearer " + token})[0] == 200
    a3 = Desk(str(tmp_path), "a", [c.url("PA1")], profile=a.profile)
    desks.append(a3)
    assert a3.cmd("resume")["ok"]
    assert a3.wait(lambda e: e.get("event") == "state" and
                   e["text"].startswith("offline -> logged out"), 10)
    assert a3.cmd("join fire")["error"] == "EUNAUTHORIZED"
    r = a3.cmd("resume")
    assert not r["ok"] and r["error"] == "ENOTFOUND"


def desk_metrics(c, name="PA1"):
    """The desk counters of a server's /metrics, by name."""
    text = http("GET", c.url(name) + "/metrics", timeout=2)[1]
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines()
            if l.startswith("understudy_desk_")}


def test_events_come_through_a_held_long_poll(env, tmp_path):
    """The library holds one events request open at the server: an event
    reaches the desk at once, the desk program answers its commands while
    the request is held, and an idle desk asks about once per hold, not
    twice a second."""
    c, desks = env
    a = online_desk(tmp_path, c, "a", "alice")
    desks.append(a)
    assert wait_for(lambda: desk_metrics(c)["understudy_desk_requests_waiting"] == 1, 5)
    # the program stays responsive while its request is held
    t = time.monotonic()
    assert a.cmd("status")["online"] is True
    assert time.monotonic() - t < 1.0
    assert desk_metrics(c)["understudy_desk_requests_waiting"] == 1
    # an idle desk: one request held, not one per 500 ms
    before = desk_metrics(c)["understudy_desk_event_requests_total"]
    t = time.monotonic()
    assert not wait_for(lambda: desk_metrics(c)["understudy_desk_event_requests_total"]
                        > before + 1, 4, step=0.2)
    assert time.monotonic() - t >= 4
    # an event for its session (a resume with its token, as another
    # process could do) reaches it through the held request, at once
    db = __import__("sqlite3").connect(os.path.join(a.profile, "desk.db"))
    token = db.execute("SELECT v FROM kv WHERE k = 'token'").fetchone()[0]
    db.close()
    mark = len(a.events)
    t = time.monotonic()
    assert http("POST", c.url("PA1") + "/v1/desk/resume", b"",
                headers={"Authorization": "Bearer " + token})[0] == 200
    assert a.wait(lambda e: e.get("kind") == "channels_refreshed", 5, mark)
    assert time.monotonic() - t < 0.4
    # the server goes away while the request is held: offline at once
    c.kill("PA1")
    assert a.wait(lambda e: e.get("event") == "state" and
                  e["text"].startswith("online -> offline (PA1 unreachable"), 5, mark)
