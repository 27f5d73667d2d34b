"""One configuration for the cluster, in etcd with its history: the first
server stores its file as version 1; `understudy config apply` checks a
file (errors change nothing and are printed as FILE:LINE), shows what
changes and what needs a restart, and stores the next version; of two
applies that race exactly one wins; history, show (--version, --at),
diff and rollback give the right texts, also after an etcd compaction
and a restart of every server; a worker restarted after its local file
was edited runs the version in etcd and says the file differs; every
call record carries the version in effect when its call started."""
import json
import os
import subprocess
import threading
import time

from conftest import AUTH, CLI, Cluster, http, wait_for


def cli(c, *args, check=None):
    out = subprocess.run([CLI, "config"] + list(args) + ["--config", c.config],
                         capture_output=True, text=True, timeout=60)
    if check is not None:
        assert out.returncode == check, (out.stdout, out.stderr)
    return out


def edited(c, old, new, name="edit.conf"):
    with open(c.config) as f:
        text = f.read()
    assert old in text, old
    path = os.path.join(c.tmp, name)
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))
    return path, text.replace(old, new, 1)


def history(c):
    out = cli(c, "history", "--json", check=0)
    return json.loads(out.stdout)


def test_versions_apply_history_rollback(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "failover": ["PA3"]},
                                  {"name": "PA2", "failover": ["PA3"]},
                                  {"name": "PA3", "spare": True}]).start()
    try:
        with open(c.config) as f:
            v1 = f.read()
        # bootstrap: the first server's file is version 1
        h = history(c)
        assert h["in_effect"] == 1 and len(h["versions"]) == 1, h
        st = c.status("PA2")
        assert st["config"]["version"] == 1 and st["config"]["in_effect"] == 1, st["config"]
        assert st["config"]["local_file_differs"] is False
        out = cli(c, "show", check=0)
        assert out.stdout == v1

        # an apply with errors changes nothing and says where
        bad, _ = edited(c, "media_ports = 4", "media_ports = many", "bad.conf")
        out = cli(c, "apply", bad, check=1)
        assert "bad.conf:" in out.stderr and "error" in out.stderr, out.stderr
        assert "nothing changed" in out.stderr
        assert len(history(c)["versions"]) == 1

        # a dry run shows the change and stores nothing
        f2, v2 = edited(c, "failover = PA3", "failover = PA3, PA2")
        out = cli(c, "apply", f2, "--dry-run", check=0)
        assert "[server PA1] failover: PA3 -> PA3, PA2" in out.stdout, out.stdout
        assert "nothing stored" in out.stdout
        assert len(history(c)["versions"]) == 1
        t_between = int(time.time() * 1000)
        wait_for(lambda: int(time.time() * 1000) > t_between + 20, 1)

        # applied: version 2, with its comment and what changed
        out = cli(c, "apply", f2, "--comment", "PA2 covers PA1 too", check=0)
        assert "stored as version 2" in out.stdout, out.stdout
        h = history(c)
        assert h["in_effect"] == 2
        last = h["versions"][-1]
        assert last["comment"] == "PA2 covers PA1 too"
        assert "[server PA1] failover" in last["summary"]
        assert last["replaces"] == 1 and "@" in last["author"]
        # the same file again: no new version
        out = cli(c, "apply", f2, check=0)
        assert "nothing to store" in out.stdout
        assert len(history(c)["versions"]) == 2

        # an option that cannot change live is reported as such
        f3, v3 = edited(c, "failover = PA3", "failover = PA3, PA2", "f3.conf")
        with open(f3, "w") as f:
            f.write(v2.replace("api_port = %d" % c.spec["PA2"]["api"],
                               "api_port = %d" % (c.spec["PA2"]["api"] + 1000), 1))
        out = cli(c, "apply", f3, "--dry-run", check=0)
        assert "needs a restart of PA2: api_port changed" in out.stdout, out.stdout

        # show, show --version, show --at, diff
        assert cli(c, "show", check=0).stdout == v2
        assert cli(c, "show", "--version", "1", check=0).stdout == v1
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_between / 1000)) + \
            ".%03dZ" % (t_between % 1000)
        assert cli(c, "show", "--at", at, check=0).stdout == v1
        out = cli(c, "diff", "1", "2", check=0)
        assert out.stdout.strip() == "[server PA1] failover: PA3 -> PA3, PA2"

        # two applies that race: exactly one wins
        f4, v4 = edited(c, "failover = PA3", "failover = PA2", "f4.conf")
        bodies = [{"text": v4, "name": "f4.conf", "author": "a", "base": 2},
                  {"text": v4.replace("media_ports = 4", "media_ports = 5", 1),
                   "name": "f5.conf", "author": "b", "base": 2}]
        results = [None, None]

        def send(i):
            results[i] = http("POST", c.url(["PA1", "PA2"][i]) + "/v1/config",
                              json.dumps(bodies[i]).encode(), headers=AUTH, timeout=10)
        threads = [threading.Thread(target=send, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r[0] for r in results)
        assert codes == [200, 409], results
        loser = next(r[1] for r in results if r[0] == 409)
        assert loser["error"] == "ECONFLICT" and loser["in_effect"] == 3, (loser, results)
        assert history(c)["in_effect"] == 3

        # rollback: version 1's text as version 4
        out = cli(c, "rollback", "1", check=0)
        assert "stored as version 4" in out.stdout, out.stdout
        assert cli(c, "show", check=0).stdout == v1
        assert history(c)["versions"][-1]["comment"].startswith("rollback to version 1")

        # history survives an etcd compaction and a restart of every server
        st, body = etcd1.call("/v3/kv/range", {"key": "L3VuZGVyc3R1ZHk="})
        rev = int(body["header"]["revision"])
        st, body = etcd1.call("/v3/kv/compaction", {"revision": str(rev)})
        assert st == 200, body
        for n in c.spec:
            c.srv[n].stop()
        c.start()
        h = history(c)
        assert [v["version"] for v in h["versions"]] == [1, 2, 3, 4]
        assert cli(c, "show", "--version", "2", check=0).stdout == v2
        assert cli(c, "show", check=0).stdout == v1
    finally:
        c.stop_all()


def test_a_restarted_worker_runs_the_version_in_etcd(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "failover": ["PA2"]},
                                  {"name": "PA2"}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        # a call's record carries the version it started under
        st, call = c.call("PA1", via="PA1")
        assert st == 201, call
        assert http("DELETE", c.url("PA1") + "/v1/calls/" + call["call"],
                    headers=AUTH)[0] == 200

        def rec():
            st, body = http("GET", c.url("PA1") + "/v1/records", headers=AUTH)
            return [r for r in body["records"] if r["call"] == call["call"]]
        assert wait_for(rec, 10)
        assert rec()[0]["config_version"] == 1
        # the local file is edited, but not applied
        with open(c.config) as f:
            text = f.read()
        with open(c.config, "w") as f:
            f.write(text.replace("media_ports = 4", "media_ports = 6", 1))
        old = c.srv["PA1"].worker()
        os.kill(old, 9)
        assert wait_for(lambda: c.srv["PA1"].worker() not in (None, old) and
                        c.healthy("PA1"), 15)
        st = c.status("PA1")
        assert st["config"]["version"] == 1 and st["config"]["local_file_differs"], st["config"]
        assert "differs from version 1 in effect" in c.srv["PA1"].logtext()
        out = subprocess.run([CLI, "status", "--server", c.url("PA1")],
                             capture_output=True, text=True, timeout=30)
        assert "local config file of PA1 differs from version 1" in out.stdout, out.stdout
        # what it runs is etcd's version, not the file
        assert history(c)["in_effect"] == 1
        assert len(c.post("PA1", via="PA1")["ports"]) == 4, c.post("PA1", via="PA1")
    finally:
        c.stop_all()


def test_an_apply_runs_live(tmp_path, etcd1):
    """A new failover list runs on every server within a second, without
    a restart: the next failure goes to the new cover. An option that
    needs a restart is not applied by the server it concerns, which says
    so; the others run the new version."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "failover": ["PA3"]},
                                  {"name": "PA2", "failover": ["PA3"]},
                                  {"name": "PA3", "spare": True}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        f2, v2 = edited(c, "failover = PA3", "failover = PA2")
        out = cli(c, "apply", f2, "--comment", "PA2 covers PA1", check=0)
        assert "needs a restart of" not in out.stdout, out.stdout

        def runs(n, v):
            st = c.status(n)
            return st and st["config"]["version"] == v
        for n in c.spec:
            assert wait_for(lambda: runs(n, 2), 5), c.status(n)["config"]
        assert "config: running version 2 from now on" in c.srv["PA3"].logtext()
        c.kill("PA1")
        assert c.wait_owner("PA1", "PA2", 10), c.owner_key("PA1")

        # PA2's api_port: PA2 keeps version 2 and says why; PA3 runs 3
        with open(f2, "w") as f:
            f.write(v2.replace("api_port = %d" % c.spec["PA2"]["api"],
                               "api_port = %d" % (c.spec["PA2"]["api"] + 1000), 1))
        out = cli(c, "apply", f2, check=0)
        assert "needs a restart of PA2: api_port changed" in out.stdout, out.stdout
        assert wait_for(lambda: runs("PA3", 3), 5)

        def waits():
            st = c.status("PA2")["config"]
            return st["version"] == 2 and st["in_effect"] == 3 and \
                st["restart_needed"] == ["api_port changed"]
        assert wait_for(waits, 5), c.status("PA2")["config"]
        out = subprocess.run([CLI, "status", "--server", c.url("PA2")],
                             capture_output=True, text=True, timeout=30)
        assert "version 3 is in effect; PA2 runs version 2 until it restarts" \
            in out.stdout, out.stdout
    finally:
        c.stop_all()


def test_growing_media_ports_gives_the_new_ports_at_once(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 4, "max": 8}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        f2, _ = edited(c, "media_ports = 4", "media_ports = 6")
        out = cli(c, "apply", f2, check=0)
        assert "[server PA1] media_ports: 4 -> 6" in out.stdout, out.stdout
        assert "needs a restart" not in out.stdout.split("stored as")[0], out.stdout
        assert wait_for(lambda: len(c.post("PA1")["ports"]) == 6, 5), c.post("PA1")
        taken = [c.call("PA1") for _ in range(7)]
        assert [st for st, _ in taken[:6]] == [201] * 6, taken
        assert taken[6][0] != 201, taken[6]
        # every call ends on its port, the new ones too
        for st, body in taken[:6]:
            assert c.end(body)[0] == 200
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 0, 5)
    finally:
        c.stop_all()


def test_a_new_route_point_is_registered_live(kam_cluster, kam):
    """A version that gives PA1 a new route point: its owner registers the
    new one at Kamailio and takes the old one back, without a restart,
    and a call through Kamailio to the new one is answered."""
    from test_registrar import calls_via, registered
    c = kam_cluster
    old = c.rp["PA1"]
    assert wait_for(lambda: old in registered(c, "PA1"), 5)
    f2, _ = edited(c, "route_point = %s" % old, "route_point = 6050")
    out = cli(c, "apply", f2, check=0)
    assert "[server PA1] route_point: %s -> 6050" % old in out.stdout, out.stdout
    assert "needs a restart of" not in out.stdout, out.stdout
    assert wait_for(lambda: set(registered(c, "PA1")) == {"6050"}, 10), registered(c, "PA1")
    assert "unregistered %s" % old in c.srv["PA1"].logtext()
    c.rp["PA1"] = "6050"
    assert calls_via(kam, c, "PA1", calls=2) == 0


def test_the_log_level_changes_live(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}, {"name": "PA2"}]).start()
    try:
        with open(c.config) as f:
            text = f.read()
        path = os.path.join(c.tmp, "quiet.conf")
        with open(path, "w") as f:
            f.write(text.replace("[cluster]\n", "[cluster]\nlog_level = error\n", 1))
        cli(c, "apply", path, check=0)
        for n in c.spec:
            assert wait_for(lambda: c.status(n)["config"]["version"] == 2, 5)
        # an audited action logs an info line: not at level error
        marks = {n: len(c.srv[n].logtext()) for n in c.spec}
        assert c.control("stop", "PA2")[0] == 202
        assert c.control("start", "PA2")[0] == 202
        for n in c.spec:
            new = c.srv[n].logtext()[marks[n]:]
            assert " info " not in new and "audit:" not in new, new
        # and back to info: the next action is audited again
        cli(c, "rollback", "1", check=0)
        for n in c.spec:
            assert wait_for(lambda: c.status(n)["config"]["version"] == 3, 5)
        assert c.control("stop", "PA2")[0] == 202
        assert wait_for(lambda: "audit: POST /v1/servers/PA2/stop" in
                        c.srv["PA1"].logtext() + c.srv["PA2"].logtext(), 5)
    finally:
        c.stop_all()


def test_shrinking_media_ports_lets_calls_end_there(tmp_path, etcd1):
    """Fewer media ports: the calls on the cut ports go on until they end,
    their ends are seen, and no new call takes a cut port."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 4, "max": 8}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        held = [c.call("PA1") for _ in range(4)]
        assert [st for st, _ in held] == [201] * 4, held
        f2, _ = edited(c, "media_ports = 4", "media_ports = 2")
        out = cli(c, "apply", f2, check=0)
        assert "needs a restart of" not in out.stdout, out.stdout
        assert wait_for(lambda: c.status("PA1")["config"]["version"] == 2, 5)
        post = c.post("PA1")
        assert post["media_ports"] == 2 and post["ports_in_use"] == 4, post
        assert c.call("PA1")[0] != 201          # both remaining ports busy
        base = c.spec["PA1"].get("port_base", 5001)
        cut = [b for _, b in held if b["port"] >= base + 2]
        kept = [b for _, b in held if b["port"] < base + 2]
        for b in cut:
            assert c.end(b)[0] == 200
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 2, 5), c.post("PA1")
        assert len(c.post("PA1")["ports"]) == 2
        assert c.call("PA1")[0] != 201          # the cut ports are not taken
        assert c.end(kept[0])[0] == 200
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 1, 5)
        st, again = c.call("PA1")
        assert st == 201 and again["port"] < base + 2, again
        for b in kept[1:] + [again]:
            assert c.end(b)[0] == 200
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 0, 5)
    finally:
        c.stop_all()
