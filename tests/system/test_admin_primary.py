"""One admin primary executes every admin action (config apply, stop,
start, failback); a request to any other server is forwarded to it, and
the answer names who executed it. When the primary's worker dies,
another server takes over at once, and an apply sent to a server that is
not the primary succeeds within a second; status and metrics name the
new primary."""
import json
import os
import re
import subprocess
import time

from conftest import AUTH, CLI, Cluster, http, wait_for


def primary(c, via):
    st = c.status(via)
    return st.get("admin_primary") if st else None


def metric(c, name):
    text = http("GET", c.url(name) + "/metrics")[1]
    return int(re.search(r"^understudy_admin_primary (\d)$", text, re.M).group(1))


def test_admin_actions_run_on_the_primary(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "failover": ["PA3"]},
                                  {"name": "PA2", "failover": ["PA3"]},
                                  {"name": "PA3", "spare": True}]).start()
    try:
        assert wait_for(lambda: all(primary(c, n) for n in c.spec), 5)
        p = primary(c, "PA1")
        assert {primary(c, n) for n in c.spec} == {p}
        assert [metric(c, n) for n in sorted(c.spec)].count(1) == 1
        assert metric(c, p) == 1
        other = next(n for n in sorted(c.spec) if n != p)

        # a control action sent to another server runs on the primary
        st, body = c.control("stop", "PA2", via=other)
        assert st == 202 and body["executed_by"] == p, body
        assert "audit: POST /v1/servers/PA2/stop" in c.srv[p].logtext()
        assert "forwarded by %s" % other in c.srv[p].logtext()
        st, body = c.control("start", "PA2", via=other)
        assert st == 202 and body["executed_by"] == p, body

        # so does a config apply
        with open(c.config) as f:
            text = f.read()
        body = {"text": text.replace("failover = PA3", "failover = PA3, PA2", 1),
                "name": "x.conf", "author": "t"}
        st, out = http("POST", c.url(other) + "/v1/config",
                       json.dumps(body).encode(), headers=AUTH, timeout=10)
        assert st == 200 and out["executed_by"] == p and out["version"] == 2, out

        # the primary's worker dies: another takes over, and an apply
        # sent to a server that is not the primary succeeds at once
        old = c.srv[p].worker()
        os.kill(old, 9)
        rest = [n for n in sorted(c.spec) if n != p]
        assert wait_for(lambda: primary(c, rest[0]) not in (None, p), 5), \
            primary(c, rest[0])
        q = primary(c, rest[0])
        via = next(n for n in rest if n != q)
        body["text"] = body["text"].replace("failover = PA3, PA2", "failover = PA2", 1)
        begun = time.monotonic()
        st, out = http("POST", c.url(via) + "/v1/config",
                       json.dumps(body).encode(), headers=AUTH, timeout=10)
        took = time.monotonic() - begun
        assert st == 200 and out["executed_by"] == q and out["version"] == 3, out
        print("apply through %s to the new primary %s took %.3f s" % (via, q, took))
        out = subprocess.run([CLI, "status", "--server", c.url(via)],
                             capture_output=True, text=True, timeout=30)
        assert "admin primary %s" % q in out.stdout, out.stdout
        # the same apply again (a retry after a lost answer): done once
        st, out = http("POST", c.url(via) + "/v1/config",
                       json.dumps(body).encode(), headers=AUTH, timeout=10)
        assert st == 200 and out["stored"] is False and out["version"] == 3, out
    finally:
        c.stop_all()
