"""A loop that never stalls: another process holds a write lock on a
server's database for 5 s while desks log in, log out and join, and calls
run (their records are copied into that database). The worker keeps
answering (its master does not kill it), the post does not move, and
what waited for the lock is committed once it is free: the logins are
answered then, and the records are there."""
import json
import os
import sqlite3
import threading
import time

from conftest import AUTH, http, wait_for
from test_desk_api import call, login, make

LOCK_S = 5


def test_a_locked_database_stalls_nothing(tmp_path, etcd1):
    c = make(tmp_path, etcd1, servers=("PA1", "PA3"))
    try:
        assert c.wait_owner("PA1", "PA1")
        worker = c.srv["PA1"].worker()
        st, r = c.etcd.call("/v3/kv/range", {"key": __import__("conftest").b64(
            "/understudy/%s/owner/PA1" % c.cluster)})
        epoch = r["kvs"][0]["mod_revision"]
        before = login(c, "PA1", "alice")[1]["token"]
        db = sqlite3.connect(os.path.join(c.srv["PA1"].state_dir, "understudy.db"),
                             isolation_level=None, timeout=5)
        results, answered_at, calls, health = {}, {}, [], []

        def do(name, fn):
            results[name] = fn()
            answered_at[name] = time.monotonic()

        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO meta (k, v) VALUES ('held by a test', 1)")
        locked_at = time.monotonic()
        threads = [threading.Thread(target=do, args=(n, f)) for n, f in (
            ("bob", lambda: login(c, "PA1", "bob")),
            ("carol", lambda: login(c, "PA1", "carol")),
            ("alice-d2", lambda: login(c, "PA1", "alice", desk="d2")),
            ("logout", lambda: call(c, "PA1", "POST", "/v1/desk/logout", before,
                                    timeout=30)))]
        for t in threads:
            t.start()
        # calls run meanwhile, and the server answers its health checks
        while time.monotonic() - locked_at < LOCK_S:
            st, body = c.call("PA1")
            assert st == 201, body
            calls.append(body["call"])
            assert c.end(body)[0] == 200
            health.append(http("GET", c.url("PA1") + "/health", timeout=1)[0])
            time.sleep(0.1)     # a caller's pace, not a synchronisation
        db.execute("ROLLBACK")
        released = time.monotonic()
        db.close()
        for t in threads:
            t.join(30)
        for name in ("bob", "carol", "alice-d2", "logout"):
            assert results[name][0] == 200, (name, results[name])
            # it waited for the lock, and was answered once it was free
            assert answered_at[name] >= released - 0.05, name
        assert set(health) == {200}, health
        assert c.srv["PA1"].worker() == worker
        assert "killing it" not in c.srv["PA1"].logtext()
        st, r = c.etcd.call("/v3/kv/range", {"key": __import__("conftest").b64(
            "/understudy/%s/owner/PA1" % c.cluster)})
        assert r["kvs"][0]["mod_revision"] == epoch      # the post never moved
        # the records waited, and are in the database now
        def copied():
            st, body = http("GET", c.url("PA1") + "/v1/records?limit=1000",
                            headers=AUTH)
            return {r["call"] for r in body["records"]} >= set(calls)
        assert wait_for(copied, 10)
        assert "that waited are in" in c.srv["PA1"].logtext()
        # the sessions are in the database: three live, the old one gone
        tok = results["bob"][1]["token"]
        assert call(c, "PA1", "GET", "/v1/desk/channels", tok)[0] == 200
        assert call(c, "PA1", "GET", "/v1/desk/channels", before)[0] == 401
        print("%d calls during the lock; logins answered %.2f s after it began"
              % (len(calls), min(answered_at.values()) - locked_at))
    finally:
        c.stop_all()
