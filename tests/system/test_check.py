"""understudy check, the daily maintenance check: it passes (exit 0) on a
healthy cluster, and it names the broken thing, with exit status 1, when
one etcd member of three is stopped, when Kamailio is stopped, when NATS
is stopped, when a server logged an error, when a server's record copy
lags, and when the last backup is older than its schedule.
check_schedule lets the admin primary run it by itself and keep the
result (understudy check --last, /metrics)."""
import os
import json
import re
import subprocess
import time

from conftest import AUTH, CLI, Cluster, Etcd, Kamailio, b64, http, wait_for


def check(c, *args):
    """(exit status, result) of understudy check --json on c's config."""
    r = subprocess.run([CLI, "check", "--config", c.config, "--json"] + list(args),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def failing(res, group=None):
    return [(r["server"], r["name"], r["detail"]) for r in res["rows"]
            if not r["ok"] and (group is None or r["group"] == group)]


def row(res, server, name, detail=""):
    return [r for r in res["rows"] if r["server"] == server and r["name"] == name
            and detail in r["detail"]]


def make_cluster(tmp_path, etcd, servers, schedule="every 1h", extra=(), **kw):
    """A cluster whose admin primary takes scheduled backups, as a healthy
    site does; it is returned once the first one is written and verified."""
    extra = list(extra) + ["backup_schedule = " + schedule,
                           "backup_dir = " + os.path.join(str(tmp_path), "backups")]
    c = Cluster(tmp_path, etcd, servers, extra=extra, **kw)
    c.start()
    for s in servers:
        if not s.get("spare"):
            assert c.wait_owner(s["name"], s["name"])

    def backed_up():
        st, b = http("GET", c.url(servers[0]["name"]) + "/v1/backups", headers=AUTH)
        return st == 200 and b["last_ok"] is not None
    assert wait_for(backed_up, 30, step=0.1), \
        http("GET", c.url(servers[0]["name"]) + "/v1/backups", headers=AUTH)
    return c


def test_check_links(tmp_path):
    """Healthy, then one etcd member of three down, then Kamailio down,
    then NATS down: each named by its row, the exit status 1."""
    etcd = Etcd(3, str(tmp_path))
    kam = Kamailio(str(tmp_path))
    c = None
    try:
        c = make_cluster(tmp_path, etcd, [
            {"name": "PA1", "failover": ["PA3"]},
            {"name": "PA3", "failover": ["PA1"]}], registrar=kam.address)

        def healthy():
            rc, res = check(c)
            return (rc, res) if not failing(res) else None
        got = wait_for(healthy, 20, step=0.5)
        assert got, failing(check(c)[1])
        rc, res = got
        assert rc == 0
        assert row(res, "cluster", "last backup", "verified")[0]["ok"]
        for srv in ("PA1", "PA3"):
            assert row(res, srv, "etcd quorum", "3 of 3 members answer")[0]["ok"]
            assert row(res, srv, "registrar", "answers OPTIONS")[0]["ok"]
            assert row(res, srv, "route point")[0]["ok"]
            assert row(res, srv, "nats", "JetStream")[0]["ok"]
            assert row(res, srv, "records copy", "caught up")[0]["ok"]
            assert row(res, srv, "api of peer", "answers")[0]["ok"]
            assert row(res, srv, "state dir")[0]["ok"]
            assert row(res, srv, "errors logged", "no error")[0]["ok"]
            assert row(res, srv, "same version")[0]["ok"]
        # the table: a row per check and server, a summary line
        r = subprocess.run([CLI, "check", "--config", c.config], capture_output=True,
                           text=True, timeout=60)
        assert "✔  PA1" in r.stdout and "checks," in r.stdout, r.stdout

        # one etcd member of three: that member fails, the quorum holds
        etcd.kill(2)
        rc, res = check(c)
        assert rc == 1
        down = etcd.endpoints[2]
        assert [f for f in failing(res) if f[1] == "etcd member" and down in f[2]], \
            failing(res)
        assert row(res, "PA1", "etcd quorum", "2 of 3")[0]["ok"]

        # Kamailio: the registrar does not answer OPTIONS
        kam.stop()
        rc, res = check(c)
        assert rc == 1
        assert [f for f in failing(res, "links") if f[1] == "registrar"
                and kam.address in f[2]], failing(res)

        # NATS: the servers' check says so
        c.nats.stop()
        rc, res = check(c)
        assert rc == 1
        assert {f[0] for f in failing(res) if f[1] == "nats"} == {"PA1", "PA3"}, \
            failing(res)
    finally:
        if c:
            c.stop_all()
        kam.stop()
        etcd.stop()


def test_check_errors(tmp_path, etcd1):
    """A server that logged an error fails the errors group, the others
    not; GET /v1/log lists it; --since after it passes again. The error
    is real: the server's etcd lease is revoked under it, as an operator
    with etcdctl could, and it logs that it is not serving."""
    c = make_cluster(tmp_path, etcd1, [
        {"name": "PA1", "failover": ["PA3"]},
        {"name": "PA3", "failover": ["PA1"]}])
    try:
        rc, res = check(c)
        assert not failing(res, "errors"), failing(res)
        st, members = etcd1.call("/v3/kv/range", {
            "key": b64("/understudy/%s/members/PA3" % c.cluster)})
        lease = members["kvs"][0]["lease"]
        st, _ = etcd1.call("/v3/lease/revoke", {"ID": lease})
        assert st == 200

        def logged():
            st, body = http("GET", c.url("PA3") + "/v1/log?level=error",
                            headers=AUTH)
            return body if st == 200 and body["entries"] else None
        body = wait_for(logged, 10, step=0.1)
        assert body and "not serving" in body["entries"][-1]["message"], body
        assert body["counts"]["error"] >= 1
        assert wait_for(lambda: c.healthy("PA3"), 15)
        rc, res = check(c)
        assert rc == 1
        errs = failing(res, "errors")
        assert [e[0] for e in errs] == ["PA3"], errs
        assert "not serving" in errs[0][2]
        # read access is needed for the log
        assert http("GET", c.url("PA3") + "/v1/log")[0] == 401
        metrics = http("GET", c.url("PA3") + "/metrics", headers=AUTH)[1]
        assert re.search(r'^understudy_log_messages_total\{level="error"\} [1-9]',
                         metrics, re.M), metrics
        # errors before --since do not count
        rc, res = check(c, "--since", str(int(time.time() * 1000)))
        assert not failing(res, "errors"), failing(res)

        # a state directory with less room than check_disk_min_free
        with open(c.config) as f:
            text = f.read()
        new = str(tmp_path / "disk.conf")
        with open(new, "w") as f:
            f.write(text.replace("[cluster]", "[cluster]\ncheck_disk_min_free = 10485760", 1))
        r = subprocess.run([CLI, "config", "apply", new, "--config", c.config],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr

        def full():
            rc, res = check(c)
            return res if len(failing(res, "disk")) == 2 else None
        res = wait_for(full, 10, step=0.5)
        assert res, failing(check(c)[1])
        assert all("fails under 10240.0 GiB" in f[2] for f in failing(res, "disk")), \
            failing(res, "disk")
    finally:
        c.stop_all()


def test_check_record_copy_lags(tmp_path, etcd1):
    """A server killed (master and worker) stops copying the records;
    calls on the others add records; the check names that server's
    record copy as lagging, from what its durable consumer shows, and
    says its API does not answer."""
    c = make_cluster(tmp_path, etcd1, [
        {"name": "PA1", "failover": ["PA2"]},
        {"name": "PA2", "spare": True},
        {"name": "PA3", "failover": ["PA2"]}])
    try:
        c.kill("PA3")
        for _ in range(5):
            st, call = c.call("PA1")
            assert st == 201, call
            assert c.end(call)[0] == 200

        def lagging():
            rc, res = check(c)
            rows = [f for f in failing(res, "archiving") if f[0] == "PA3"]
            return (rc, res) if rows else None
        got = wait_for(lagging, 40, step=1)
        assert got, failing(check(c)[1])
        rc, res = got
        assert rc == 1
        lag = row(res, "PA3", "records copy")[0]
        assert "records behind" in lag["detail"], lag
        assert lag["lag_records"] >= 5 and lag["lag_seconds"] > 10
        assert lag["reported_by"] in ("PA1", "PA2")
        assert not row(res, "PA3", "api")[0]["ok"]
        assert row(res, "PA1", "records copy")[0]["ok"]
    finally:
        c.stop_all()


def test_check_schedule(tmp_path, etcd1):
    """check_schedule: the admin primary runs the check by itself at each
    slot and keeps the result; understudy check --last prints it and
    /metrics has it, on every server."""
    c = make_cluster(tmp_path, etcd1, [
        {"name": "PA1", "failover": ["PA3"]},
        {"name": "PA3", "failover": ["PA1"]}],
        extra=["check_schedule = every 10s"])
    try:
        def last():
            r = subprocess.run([CLI, "check", "--config", c.config, "--last", "--json"],
                               capture_output=True, text=True, timeout=30)
            return (r.returncode, json.loads(r.stdout)) if r.stdout else None
        assert wait_for(last, 30, step=0.5), "no scheduled check ran"
        # a slot that ran before the first backup was written says so;
        # the next one, 10 s later, passes
        got = wait_for(lambda: (lambda r: r if r and not failing(r[1]) else None)(last()),
                       30, step=0.5)
        assert got, failing(last()[1])
        rc, res = got
        assert res["scheduled"] and res["by"] in ("PA1", "PA3")
        assert rc == 0 and res["ok"]
        for srv in ("PA1", "PA3"):
            def metrics():
                text = http("GET", c.url(srv) + "/metrics", headers=AUTH)[1]
                return text if "understudy_check_ok" in text else None
            text = wait_for(metrics, 10, step=0.2)
            assert text, srv
            assert re.search(r"^understudy_check_failures \d+$", text, re.M)
            assert re.search(r"^understudy_check_last_timestamp_seconds \d+", text,
                             re.M)
    finally:
        c.stop_all()


def test_check_backup_too_old(tmp_path, etcd1):
    """Backups every 10 s; then the archives cannot be written any more
    (backup_dir is applied under a regular file): once the last good
    backup is older than the schedule allows, the check's backups row
    fails, says how old it is and why the attempts fail."""
    c = make_cluster(tmp_path, etcd1, [
        {"name": "PA1", "failover": ["PA3"]},
        {"name": "PA3", "failover": ["PA1"]}], schedule="every 10s")
    try:
        rc, res = check(c)
        assert row(res, "cluster", "last backup", "verified")[0]["ok"], failing(res)
        blocker = os.path.join(str(tmp_path), "not-a-dir")
        with open(blocker, "w") as f:
            f.write("a file where backup_dir's parent should be\n")
        with open(c.config) as f:
            text = f.read()
        new = os.path.join(str(tmp_path), "cluster2.conf")
        with open(new, "w") as f:
            f.write(text.replace("backup_dir = " + os.path.join(str(tmp_path), "backups"),
                                 "backup_dir = " + os.path.join(blocker, "backups")))
        r = subprocess.run([CLI, "config", "apply", new, "--config", c.config],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr

        def stale():
            rc, res = check(c)
            bad = [f for f in failing(res, "backups") if " old; the schedule" in f[2]]
            return (rc, bad) if bad else None
        got = wait_for(stale, 60, step=1)
        assert got, failing(check(c)[1])
        rc, bad = got
        assert rc == 1
        assert "the schedule is every 10s" in bad[0][2], bad
        assert "the last attempt failed" in bad[0][2] and "not-a-dir" in bad[0][2], bad
        out = subprocess.run([CLI, "backup", "status", "--config", c.config],
                             capture_output=True, text=True, timeout=10).stdout
        assert "Last attempt FAILED" in out, out
    finally:
        c.stop_all()
