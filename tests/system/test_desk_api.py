"""The desk API of real servers on real etcd: login (versions, passwords),
channels, events as a long poll, sessions restored after a SIGKILL from
the server's database, idle expiry, and licenses counted across the
cluster in both policies."""
import json
import os
import re
import resource
import sqlite3
import subprocess
import time

import pytest

from conftest import AUTH, PASSWORDS, Cluster, b64, hashed, http, wait_for



def sections():
    return ("[user alice]\npassword = %s\ngroups = dispatch\n\n"
            "[user bob]\npassword = %s\n\n"
            "[user carol]\npassword = %s\ngroups = dispatch\n\n"
            "[channel fire]\nallow = @dispatch\n\n"
            "[channel all]\n\n"
            "[channel ops]\nallow = bob\n" % tuple(hashed(PASSWORDS[u]) for u in
                                                  ("alice", "bob", "carol")))


def make(tmp_path, etcd, extra=(), servers=("PA1",)):
    spec = [{"name": n, "ports": 1, "max": 2} for n in servers]
    c = Cluster(tmp_path, etcd, spec, extra=list(extra), sections=sections())
    c.start()
    return c


def login(c, server, user, desk="d1", version="0.1.0", password=None):
    return http("POST", c.url(server) + "/v1/desk/login",
                json.dumps({"user": user, "password": password or PASSWORDS[user],
                            "desk": desk, "version": version}).encode(), timeout=10)


def call(c, server, method, path, token, timeout=5):
    return http(method, c.url(server) + path, b"" if method == "POST" else None,
                headers={"Authorization": "Bearer " + token}, timeout=timeout)


@pytest.fixture
def one(tmp_path, etcd1):
    c = make(tmp_path, etcd1)
    yield c
    c.stop_all()


def test_login_versions_and_refusals(one):
    c = one
    st, body = http("GET", c.url("PA1") + "/v1/desk/versions")
    assert st == 200 and body["versions"] == ["0.1.0"]
    st, body = login(c, "PA1", "alice", version="0.0.9")
    assert st == 409 and body["error"] == "EVERSION" and body["versions"] == ["0.1.0"]
    st, body = login(c, "PA1", "alice", password="wrong")
    assert st == 401 and body["error"] == "EUNAUTHORIZED"
    st, body = http("POST", c.url("PA1") + "/v1/desk/login",
                    json.dumps({"user": "mallory", "password": "x", "desk": "d1",
                                "version": "0.1.0"}).encode(), timeout=10)
    assert st == 401 and body["message"] == "wrong user or password"
    st, body = http("POST", c.url("PA1") + "/v1/desk/login", b'{"user": 1', timeout=5)
    assert st == 400 and "line 1" in body["message"]
    st, body = http("POST", c.url("PA1") + "/v1/desk/login", b'{"user": "alice"}')
    assert st == 400 and "password" in body["message"]
    st, body = call(c, "PA1", "GET", "/v1/desk/channels", "0" * 64)
    assert st == 401 and body["error"] == "EUNAUTHORIZED"
    st, body = login(c, "PA1", "alice")
    assert st == 200 and len(body["token"]) == 64 and body["user"] == "alice"
    assert body["messaging"] == [c.nats.url]
    assert {ch["name"] for ch in body["channels"]} == {"fire", "all"}


def test_channels_join_leave_and_events(one):
    c = one
    tok = login(c, "PA1", "alice")[1]["token"]
    assert call(c, "PA1", "POST", "/v1/desk/channels/fire/join", tok)[0] == 200
    st, body = call(c, "PA1", "POST", "/v1/desk/channels/ops/join", tok)
    assert st == 403 and body["error"] == "ENOTALLOWED"
    st, body = call(c, "PA1", "POST", "/v1/desk/channels/nope/join", tok)
    assert st == 404
    chans = {ch["name"]: ch for ch in call(c, "PA1", "GET", "/v1/desk/channels", tok)[1]["channels"]}
    assert chans["fire"]["joined"] and not chans["all"]["joined"]
    assert chans["fire"]["subject"].endswith(".ch.fire")
    assert call(c, "PA1", "POST", "/v1/desk/channels/fire/leave", tok)[0] == 200
    # a long poll with nothing to say waits its time, then answers empty
    t0 = time.monotonic()
    st, body = call(c, "PA1", "GET", "/v1/desk/events?after=0&wait=2", tok)
    assert st == 200 and body["events"] == [] and 1.5 < time.monotonic() - t0 < 5
    # a resume puts an event: a waiting poll returns at once with it
    st, body = call(c, "PA1", "POST", "/v1/desk/resume", tok)
    assert st == 200 and body["token"] == tok
    st, body = call(c, "PA1", "GET", "/v1/desk/events?after=0&wait=10", tok)
    assert st == 200 and [e["type"] for e in body["events"]] == ["channels_refreshed"]
    assert body["last"] == body["events"][0]["seq"]
    st, body = call(c, "PA1", "GET", "/v1/desk/events?after=x", tok)
    assert st == 400
    # logout: the token is no more
    assert call(c, "PA1", "POST", "/v1/desk/logout", tok)[0] == 200
    assert call(c, "PA1", "GET", "/v1/desk/channels", tok)[0] == 401


def test_sessions_survive_a_sigkill_of_the_server(one):
    c = one
    tok = login(c, "PA1", "carol")[1]["token"]
    assert call(c, "PA1", "POST", "/v1/desk/channels/fire/join", tok)[0] == 200
    c.kill("PA1")
    c.srv["PA1"].start()
    assert wait_for(lambda: c.healthy("PA1"), 15)
    assert "1 session(s) restored" in c.srv["PA1"].logtext()
    st, body = call(c, "PA1", "POST", "/v1/desk/resume", tok)
    assert st == 200 and body["user"] == "carol"
    assert [ch["name"] for ch in body["channels"] if ch["joined"]] == ["fire"]


def test_idle_session_expires(tmp_path, etcd1):
    c = make(tmp_path, etcd1, extra=["session_timeout = 10"])
    try:
        tok = login(c, "PA1", "bob")[1]["token"]
        assert call(c, "PA1", "GET", "/v1/desk/channels", tok)[0] == 200
        def expired():
            st, body = call(c, "PA1", "GET", "/v1/desk/channels", "f" * 64)
            return "expired" in c.srv["PA1"].logtext()
        assert wait_for(expired, 25, step=0.5)
        st, body = call(c, "PA1", "POST", "/v1/desk/resume", tok)
        assert st == 401 and body["error"] == "EEXPIRED"
        assert login(c, "PA1", "bob")[0] == 200      # a new login works
    finally:
        c.stop_all()


def licenses_in_etcd(c):
    st, r = c.etcd.call("/v3/kv/range", {
        "key": b64("/understudy/%s/licenses/" % c.cluster),
        "range_end": b64("/understudy/%s/licenses0" % c.cluster), "count_only": True})
    assert st == 200, r
    return int(r.get("count", 0))


def test_licenses_enforced_across_the_cluster(tmp_path, etcd1):
    c = make(tmp_path, etcd1, extra=["licenses = 2", "license_policy = enforce"],
             servers=("PA1", "PA3"))
    try:
        a = login(c, "PA1", "alice")
        assert a[0] == 200 and a[1]["license"]["over"] is False
        assert login(c, "PA3", "bob")[0] == 200
        st, body = login(c, "PA3", "carol")
        assert st == 403 and body["error"] == "ENOLICENSE"
        assert licenses_in_etcd(c) == 2
        text = http("GET", c.url("PA3") + "/metrics")[1]
        assert "understudy_desk_sessions 1\n" in text
        assert "understudy_desk_licenses_held 1\n" in text
        # a logout frees one
        assert call(c, "PA1", "POST", "/v1/desk/logout", a[1]["token"])[0] == 200
        assert login(c, "PA3", "carol")[0] == 200
        # a dead worker's slots go with its lease; the worker its master
        # restarts restores both sessions and claims their slots again
        c.kill_worker("PA3")
        assert wait_for(lambda: licenses_in_etcd(c) < 2, 5)
        assert wait_for(lambda: licenses_in_etcd(c) == 2, 10)
        assert login(c, "PA1", "alice", desk="d2")[0] == 403
    finally:
        c.stop_all()


def test_licenses_over_the_limit_warn(tmp_path, etcd1):
    c = make(tmp_path, etcd1, extra=["licenses = 1"])
    try:
        assert login(c, "PA1", "alice")[0] == 200
        st, body = login(c, "PA1", "bob")
        assert st == 200 and body["license"]["over"] is True
        st, ev = call(c, "PA1", "GET", "/v1/desk/events?after=0", body["token"])
        assert [e["type"] for e in ev["events"]] == ["license_warning"]
    finally:
        c.stop_all()


def test_resume_over_the_limit_is_refused_when_enforced(tmp_path, etcd1):
    """A server that died lost its license slots with its lease; meanwhile
    another desk took the last one: the restarted server ends the session
    it cannot license, the desk's resume is refused and so is a new login
    while the slot is taken."""
    c = make(tmp_path, etcd1, extra=["licenses = 1", "license_policy = enforce"],
             servers=("PA1", "PA3"))
    try:
        tok = login(c, "PA1", "alice")[1]["token"]
        assert login(c, "PA3", "bob")[0] == 403          # the one slot is alice's
        c.kill("PA1")                                    # her slot goes with the lease
        assert wait_for(lambda: login(c, "PA3", "bob")[0] == 200, 10)
        c.srv["PA1"].start()
        assert wait_for(lambda: c.healthy("PA1"), 15)
        st, body = call(c, "PA1", "POST", "/v1/desk/resume", tok)
        assert st == 401 and body["error"] == "EEXPIRED"
        assert "no license free" in body["message"]
        st, body = login(c, "PA1", "alice")
        assert st == 403 and body["error"] == "ENOLICENSE"
    finally:
        c.stop_all()


def burst(port, requests):
    """Send every request on its own connection at once (connected first,
    then all written), and read the answers: [(status, JSON)]."""
    import socket
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in requests]
    for s, (method, path, token) in zip(socks, requests):
        s.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 0\r\nConnection: close\r\n\r\n"
                   % (method, path, token)).encode())
    out = []
    for s in socks:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        out.append((int(head.split()[1]), json.loads(body)))
    return out


def desk_metric(c, name):
    text = http("GET", c.url("PA1") + "/metrics")[1]
    return [float(l.split()[1]) for l in text.splitlines() if l.startswith(name + " ")][0]


def test_desks_on_a_desk_port_of_their_own(tmp_path, etcd1):
    """With desk_port, desks are served on a listener of their own (8 KiB
    a connection: they hold theirs for the long poll), which serves the
    desk API and /health and refuses the rest, naming the API's port;
    the API's port keeps serving desks too, and a browser's request with
    a few KB of cookies, which is too much for a desk connection's
    memory."""
    import http.client as http_client
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 1, "max": 2, "desk_port": True}],
                sections=sections())
    c.start()
    try:
        spec = c.spec["PA1"]
        desk = "http://127.0.0.1:%d" % spec["desk"]
        st, body = http("POST", desk + "/v1/desk/login",
                        json.dumps({"user": "alice", "password": PASSWORDS["alice"],
                                    "desk": "d1", "version": "0.1.0"}).encode(), timeout=10)
        assert st == 200, body
        # the servers a desk fails over to name the port for desks
        assert body["servers"] == [desk], body["servers"]
        tok = {"Authorization": "Bearer " + body["token"]}
        st, body = http("GET", desk + "/v1/desk/events?after=0", headers=tok, timeout=10)
        assert st == 200 and "events" in body and "last" in body, body
        st, body = http("POST", desk + "/v1/desk/resume", b"", headers=tok, timeout=10)
        assert st == 200, body
        assert http("GET", desk + "/health", timeout=10)[0] == 200
        st, body = http("GET", desk + "/v1/status", headers=AUTH, timeout=10)
        assert st == 404 and body["error"] == "ENOTFOUND", body
        assert ("port %d serves desks only" % spec["desk"]) in body["message"], body
        assert ("API's port %d" % spec["api"]) in body["message"], body
        # the API's port still serves desks
        st, body = login(c, "PA1", "bob", desk="d2")
        assert st == 200, body
        # a desk connection's memory is small; the API's is not
        cookies = {"Cookie": "; ".join("site%d=%s" % (i, "x" * 90) for i in range(60))}
        try:
            st = http("GET", desk + "/health", headers=cookies, timeout=10)[0]
        except (OSError, http_client.HTTPException):
            st = "closed"
        assert st in (431, "closed"), st
        assert http("GET", c.url("PA1") + "/v1/status", headers=dict(AUTH, **cookies),
                    timeout=10)[0] == 200
        assert http("GET", desk + "/health", timeout=10)[0] == 200
        # both listeners said what they hold, and /metrics shows them
        log = c.srv["PA1"].logtext()
        assert "http (desks): up to " in log, log
        text = http("GET", c.url("PA1") + "/metrics", headers=AUTH, timeout=10)[1]
        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] > 4100:  # room for the cap
            assert "http: port %d, up to 2000 connections (its cap)" % spec["api"] in log, log
            assert re.search(r"^understudy_http_connection_limit 2000$", text, re.M), text
        assert re.search(r"^understudy_desk_http_connections \d+$", text, re.M), text
        assert re.search(r"^understudy_desk_http_connection_limit \d+$", text, re.M), text
    finally:
        c.stop_all()


def test_long_poll_ends_when_the_server_loses_its_lease(one, etcd1):
    """A desk's events long poll is answered 503 EFENCED as soon as its
    server loses its lease (etcd frozen), not when its wait runs out:
    the desk goes offline or to another server at once."""
    import signal
    import threading
    c = one
    st, body = login(c, "PA1", "alice")
    assert st == 200, body
    tok = body["token"]
    st, body = call(c, "PA1", "GET", "/v1/desk/events?after=0", tok)
    assert st == 200, body
    got = {}

    def poll():
        t0 = time.monotonic()
        got["answer"] = call(c, "PA1", "GET", "/v1/desk/events?after=%d&wait=30"
                             % body["last"], tok, timeout=40)
        got["at"] = time.monotonic()
        got["took"] = got["at"] - t0

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    # the poll is held (nothing to say) before the lease goes
    assert wait_for(lambda: "understudy_desk_event_requests_total" in
                    http("GET", c.url("PA1") + "/metrics")[1] and
                    desk_metric(c, "understudy_desk_event_requests_total") >= 2, 5)
    assert "answer" not in got
    etcd = etcd1.members[0]["proc"]
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: not c.healthy("PA1"), 10)
        fenced = time.monotonic()
        t.join(15)
        assert "answer" in got, "the long poll still held after the lease was lost"
        st, ans = got["answer"]
        assert st == 503 and ans["error"] == "EFENCED", (st, ans)
        assert "PA1 cannot serve desks now" in ans["message"], ans
        # at the loss, not at the end of its 30 s wait
        assert got["took"] < 20 and got["at"] - fenced < 5, got
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
    assert "ended: no lease" in c.srv["PA1"].logtext()


def test_a_burst_of_resumes_is_committed_in_batches(one):
    """Desks coming back together after a restart of their server: each
    resume is answered 200 after its writes (activity, the
    channels_refreshed event) are committed, many resumes to a commit;
    none is logged out, and a SIGKILL right after the answers loses none
    of what they said."""
    c = one
    n = 24
    toks = [login(c, "PA1", "alice", desk="b%d" % i)[1]["token"] for i in range(n)]
    c.kill("PA1")
    c.srv["PA1"].start()
    assert wait_for(lambda: c.healthy("PA1"), 15)
    commits = desk_metric(c, "understudy_desk_commits_total")
    parsed = desk_metric(c, "understudy_desk_statements_prepared_total")
    answers = burst(c.spec["PA1"]["api"], [("POST", "/v1/desk/resume", t) for t in toks])
    assert [st for st, _ in answers] == [200] * n, answers
    assert desk_metric(c, "understudy_desk_resumes_total") == n
    # each timed from its request read to its answer, in the histogram
    assert desk_metric(c, "understudy_desk_resume_seconds_count") == n
    text = http("GET", c.url("PA1") + "/metrics")[1]
    buckets = [(l.split("\"")[1], float(l.split()[1])) for l in text.splitlines()
               if l.startswith("understudy_desk_resume_seconds_bucket{")]
    assert [le for le, _ in buckets][-1] == "+Inf" and buckets[-1][1] == n, buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), buckets     # cumulative
    used = desk_metric(c, "understudy_desk_commits_total") - commits
    assert 1 <= used <= n / 3, used            # batched: many resumes a commit
    assert desk_metric(c, "understudy_desk_commits_failed_total") == 0
    # each statement parsed once, not once per resume (a dozen each)
    parsed = desk_metric(c, "understudy_desk_statements_prepared_total") - parsed
    assert parsed <= 30, parsed
    # committed before the answers: a SIGKILL now loses nothing
    c.kill("PA1")
    c.srv["PA1"].start()
    assert wait_for(lambda: c.healthy("PA1"), 15)
    for t in toks:
        st, body = call(c, "PA1", "GET", "/v1/desk/events?after=0", t)
        assert st == 200, body                  # not logged out
        assert "channels_refreshed" in [e["type"] for e in body["events"]], body


def test_a_resume_whose_commit_fails_is_refused_alone(one):
    """While another process holds the database's write lock, a resume
    cannot commit: it is answered 503 EUNAVAIL (the desk tries again),
    the server goes on, and the next resume after the lock is answered
    200."""
    c = one
    tok = login(c, "PA1", "alice", desk="f1")[1]["token"]
    db = sqlite3.connect(os.path.join(c.srv["PA1"].state_dir, "understudy.db"),
                         isolation_level=None, timeout=5)
    db.execute("BEGIN IMMEDIATE")
    try:
        st, body = call(c, "PA1", "POST", "/v1/desk/resume", tok)
        assert st == 503 and body["error"] == "EUNAVAIL", body
        assert desk_metric(c, "understudy_desk_commits_failed_total") >= 1
    finally:
        db.execute("ROLLBACK")
        db.close()
    st, body = call(c, "PA1", "POST", "/v1/desk/resume", tok)
    assert st == 200 and body["user"] == "alice", body


def test_a_storm_past_the_queue_is_told_when_to_come_back(tmp_path, etcd1):
    """Past desk_resumes_waiting resumes waiting their turn, a resume is
    refused at once with 503 EBUSY and Retry-After: 1 (counted), not
    left to time out; tried again when told, it resumes."""
    import socket
    c = make(tmp_path, etcd1, extra=["desk_resumes_waiting = 2"])
    try:
        n = 24
        toks = [login(c, "PA1", "alice", desk="s%d" % i)[1]["token"] for i in range(n)]
        c.kill("PA1")
        c.srv["PA1"].start()
        assert wait_for(lambda: c.healthy("PA1"), 15)
        socks = [socket.create_connection(("127.0.0.1", c.spec["PA1"]["api"]), timeout=10)
                 for _ in toks]
        for s, t in zip(socks, toks):
            s.sendall(("POST /v1/desk/resume HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Authorization: Bearer %s\r\nContent-Length: 0\r\n"
                       "Connection: close\r\n\r\n" % t).encode())
        answers = []
        for s in socks:
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            answers.append((int(head.split()[1]), head.decode(), json.loads(body)))
        busy = [i for i, (st, _, _) in enumerate(answers) if st == 503]
        assert busy, [a[0] for a in answers]
        assert all(answers[i][0] == 200 for i in range(n) if i not in busy)
        for i in busy:
            st, head, body = answers[i]
            assert body["error"] == "EBUSY" and "desk_resumes_waiting" in body["message"]
            assert "\r\nRetry-After: 1\r\n" in head, head
        assert desk_metric(c, "understudy_desk_resumes_busy_total") == len(busy)
        # told to come back in a second, each does, and resumes
        for i in busy:
            assert wait_for(lambda: call(c, "PA1", "POST", "/v1/desk/resume",
                                         toks[i])[0] == 200, 10, step=1.0)
    finally:
        c.stop_all()
