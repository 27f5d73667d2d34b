"""understudy backup, backup verify and restore on a cluster that
understudy up runs: a backup taken while calls and a desk session run is
an archive (a tar operators can list) whose manifest matches its parts;
verify catches one flipped byte in the etcd snapshot, in a database and
in the manifest, and names the part; restore refuses while the cluster
runs and changes nothing for a damaged archive; a restore into a fresh
state directory, then understudy up, gives the same config history, the
same records and a desk session that resumes without a password."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from conftest import CLI, PASSWORDS, TOKEN, free_port, hashed, http, wait_for

AUTH = {"Authorization": "Bearer " + TOKEN}


def config(tmp_path):
    etcd_port = free_port(2)
    api = [free_port() for _ in range(2)]
    text = """[cluster]
name = bktest
etcd = local
local_etcd_port = %d
local_nats_port = %d
admin_token = %s

[server PA1]
address = 127.0.0.1
api_port = %d
sip_port = %d
route_point = 6000
media_port_base = 5001
media_ports = 4
max_media_ports = 8
rtp_port_base = %d
failover = PA2

[server PA2]
address = 127.0.0.1
api_port = %d
sip_port = %d
route_point = 6100
media_port_base = 5101
media_ports = 4
max_media_ports = 8
rtp_port_base = %d
failover = PA1

[user alice]
password = %s

[channel all]
""" % (etcd_port, free_port(), TOKEN, api[0], free_port(), free_port(4),
       api[1], free_port(), free_port(4), hashed(PASSWORDS["alice"]))
    path = tmp_path / "site.conf"
    path.write_text(text)
    return str(path), ["http://127.0.0.1:%d" % p for p in api]


class Up:
    """understudy up CONFIG --state-dir DIR, until stopped."""

    def __init__(self, path, state):
        self.p = subprocess.Popen([CLI, "up", path, "--state-dir", str(state)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        lines = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                return
        self.stop()
        pytest.fail("understudy up did not get ready:\n%s%s" %
                    ("".join(lines), self.p.stderr.read()))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def cli(*args, timeout=120):
    return subprocess.run([CLI] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def records(api):
    st, body = http("GET", api + "/v1/records?limit=100000", headers=AUTH, timeout=5)
    assert st == 200, body
    return sorted(r["call"] for r in body["records"])


def history(api):
    st, body = http("GET", api + "/v1/config/history", headers=AUTH, timeout=5)
    assert st == 200, body
    return [(v["version"], v.get("comment"), v.get("sha256")) for v in body["versions"]]


def flip(src, dst, member):
    """A copy of archive src with one byte flipped in the middle of member."""
    shutil.copy(src, dst)
    with tarfile.open(src) as t:
        m = t.getmember(member)
    with open(dst, "r+b") as f:
        f.seek(m.offset_data + m.size // 2)
        b = f.read(1)
        f.seek(m.offset_data + m.size // 2)
        f.write(bytes([b[0] ^ 0x01]))


def tree(path):
    """Every file under path with its size and mtime: to see that nothing changed."""
    out = {}
    for d, _, files in os.walk(path):
        for n in files:
            st = os.stat(os.path.join(d, n))
            out[os.path.join(d, n)] = (st.st_size, st.st_mtime_ns)
    return out


def test_backup_verify_restore(tmp_path):
    path, api = config(tmp_path)
    state = tmp_path / "var"
    up = Up(path, state)
    try:
        # a second config version, so that there is a history to keep
        text = open(path).read().replace("media_ports = 4\nmax_media_ports = 8\n"
                                         "rtp_port_base", "media_ports = 4\n"
                                         "max_media_ports = 6\nrtp_port_base", 1)
        open(tmp_path / "v2.conf", "w").write(text)
        r = cli("config", "apply", str(tmp_path / "v2.conf"), "--config", path,
                "--comment", "before the backup")
        assert r.returncode == 0, r.stderr
        # calls: some ended (records), one still running during the backup
        calls = []
        for i in range(6):
            st, body = http("POST", api[i % 2] + "/v1/route-points/%s/calls"
                            % ("6000" if i % 2 == 0 else "6100"), b"",
                            headers=AUTH, timeout=5)
            assert st == 201, body
            calls.append((api[i % 2], body["call"]))
        for a, c in calls[:-1]:
            assert http("DELETE", a + "/v1/calls/" + c, headers=AUTH, timeout=5)[0] == 200
        # every server copies every record
        assert wait_for(lambda: all(len(records(a)) == 5 for a in api), 15)
        # a desk logged in on PA1
        st, body = http("POST", api[0] + "/v1/desk/login",
                        json.dumps({"user": "alice", "password": PASSWORDS["alice"],
                                    "desk": "d1", "version": "0.1.0"}).encode(),
                        timeout=10)
        assert st == 200, body
        desk = body["token"]
        hist = history(api[0])
        assert len(hist) == 2
        recs = records(api[0])

        # the backup, while it all runs
        archive = str(tmp_path / "b.tar")
        r = cli("backup", "--to", archive, "--config", path, "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        m = out["manifest"]
        assert m["cluster"] == "bktest" and m["format"] == 1
        assert m["missing"] == []
        assert m["etcd"]["config_versions"] == 2
        assert m["etcd"]["config_version_in_effect"] == 2
        with tarfile.open(archive) as t:
            names = t.getnames()
            assert names == ["etcd.snapshot", "db/PA1.sqlite", "db/PA2.sqlite",
                             "manifest.json", "manifest.sha256"]
            assert json.loads(t.extractfile("manifest.json").read()) == m
            mj = t.extractfile("manifest.json").read()
            assert t.extractfile("manifest.sha256").read().decode().split()[0] == \
                hashlib.sha256(mj).hexdigest()
            for p in m["parts"]:
                data = t.extractfile(p["name"]).read()
                assert len(data) == p["size"]
                assert hashlib.sha256(data).hexdigest() == p["sha256"], p["name"]
            snap = t.extractfile("etcd.snapshot").read()
            assert hashlib.sha256(snap[:-32]).digest() == snap[-32:]
            assert snap[-32:].hex() == m["etcd"]["snapshot_sha256"]
        dbs = {p["server"]: p for p in m["parts"] if p["kind"] == "db"}
        assert dbs["PA1"]["counts"] == {"records": 5, "sessions": 1}
        assert dbs["PA2"]["counts"] == {"records": 5, "sessions": 0}
        # never overwrites
        r = cli("backup", "--to", archive, "--config", path)
        assert r.returncode == 1 and "never overwrites" in r.stderr, r.stderr

        r = cli("backup", "verify", archive, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        checks = json.loads(r.stdout)["checks"]
        assert all(c["ok"] for c in checks)
        assert any(c["check"] == "restore test" for c in checks)

        # one flipped byte in each kind of part is caught and named
        for member, word in (("etcd.snapshot", "etcd.snapshot: sha256: sha256 mismatch"),
                             ("db/PA2.sqlite", "db/PA2.sqlite: sha256: sha256 mismatch"),
                             ("manifest.json", "manifest.json: sha256: sha256 mismatch")):
            bad = str(tmp_path / ("bad-" + member.replace("/", "-") + ".tar"))
            flip(archive, bad, member)
            r = cli("backup", "verify", bad)
            assert r.returncode == 1, (member, r.stdout, r.stderr)
            assert "understudy backup verify: " + word in r.stderr, r.stderr
        # the snapshot's own hash catches it too
        r = cli("backup", "verify", str(tmp_path / "bad-etcd.snapshot.tar"))
        assert "etcd.snapshot: snapshot hash:" in r.stderr, r.stderr

        # restore refuses while the cluster runs, and names the servers
        r = cli("restore", archive, "--config", path, "--state-dir", str(tmp_path / "new"))
        assert r.returncode == 1, r.stderr
        assert "PA1 (" in r.stderr and "PA2 (" in r.stderr, r.stderr
        assert not os.path.exists(tmp_path / "new")
    finally:
        up.stop()

    # a damaged archive changes nothing, even with --force
    before = tree(state)
    r = cli("restore", str(tmp_path / "bad-db-PA2.sqlite.tar"), "--config", path,
            "--state-dir", str(state), "--force")
    assert r.returncode == 1, r.stderr
    assert "db/PA2.sqlite: sha256" in r.stderr, r.stderr
    assert tree(state) == before
    # what is in the way is refused without --force
    r = cli("restore", archive, "--config", path, "--state-dir", str(state))
    assert r.returncode == 1 and "in the way" in r.stderr, r.stderr
    assert tree(state) == before

    # restore into a fresh state directory, then run it
    fresh = tmp_path / "restored"
    r = cli("restore", archive, "--config", path, "--state-dir", str(fresh))
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.isdir(fresh / "etcd")
    assert os.path.exists(fresh / "PA1" / "understudy.db")
    up = Up(path, fresh)
    try:
        assert history(api[0]) == hist
        assert records(api[0]) == recs
        assert wait_for(lambda: records(api[1]) == recs, 10)
        st, body = http("GET", api[0] + "/v1/status", headers=AUTH, timeout=5)
        assert body["config"]["in_effect"] == 2
        # the desk resumes its session without a password
        st, body = http("POST", api[0] + "/v1/desk/resume", b"",
                        headers={"Authorization": "Bearer " + desk}, timeout=10)
        assert st == 200, body
    finally:
        up.stop()
