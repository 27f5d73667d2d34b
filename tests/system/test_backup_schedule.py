"""Scheduled backups: the admin primary takes one archive per slot of
backup_schedule across the whole cluster, verifies it as it is written,
keeps backup_keep of them and says so in GET /v1/backups, in
`understudy backup status` and in /metrics. When the primary's worker is
killed in the middle of a backup, the next primary finishes that slot:
still one archive for it, never two."""
import glob
import json
import os
import re
import subprocess

from conftest import AUTH, CLI, Cluster, b64, http, unb64, wait_for


def backups(c, name):
    try:
        st, body = http("GET", c.url(name) + "/v1/backups", headers=AUTH)
    except OSError:
        return None
    return body if st == 200 else None


def archives(d):
    return sorted(glob.glob(os.path.join(d, "understudy-*.tar")))


def slot_keys(c):
    prefix = "/understudy/%s/backup/slot/" % c.cluster
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    st, r = c.etcd.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
    return [(unb64(kv["key"]), int(kv.get("version", 0)), json.loads(unb64(kv["value"])))
            for kv in r.get("kvs", [])]


def cluster(tmp_path, etcd, schedule, keep):
    d = os.path.join(str(tmp_path), "backups")
    c = Cluster(tmp_path, etcd, [{"name": "PA1", "failover": ["PA3"]},
                                 {"name": "PA2", "failover": ["PA3"]},
                                 {"name": "PA3", "spare": True}],
                extra=["backup_schedule = " + schedule, "backup_dir = " + d,
                       "backup_keep = %d" % keep])
    return c, d


def done_slots(c, via):
    b = backups(c, via)
    return [a["slot"] for a in b["archives"]] if b else []


def test_one_archive_per_slot_across_three_servers(tmp_path, etcd1):
    c, d = cluster(tmp_path, etcd1, "every 10s", 1)
    c.start()
    try:
        # the slot the cluster started in is taken at once, by one server
        assert wait_for(lambda: done_slots(c, "PA1"), 30, 0.05), \
            (backups(c, "PA1"), [c.srv[n].logtext()[-3000:] for n in c.spec])
        first = done_slots(c, "PA1")[0]
        assert len(archives(d)) == 1, archives(d)
        b = backups(c, "PA2")
        assert b["schedule"] == "every 10s" and b["interval_s"] == 10
        assert b["last_ok"]["verified"] is True and b["last"]["result"] == "ok"
        assert b["last_ok"]["size"] == os.path.getsize(archives(d)[0])
        assert b["completed_today"] >= 1

        # the next slot: one new archive, the older one removed (keep 1)
        assert wait_for(lambda: any(s > first for s in done_slots(c, "PA3")),
                        40, 0.1), backups(c, "PA3")
        assert wait_for(lambda: len(archives(d)) == 1 and
                        len(done_slots(c, "PA3")) == 1, 5), \
            (archives(d), backups(c, "PA3"))
        # every slot key was claimed once and written once: no retake
        keys = slot_keys(c)
        assert keys and all(v == 2 for _, v, _ in keys), keys
        assert all(k[2]["attempt"] == 1 for k in keys), keys
        # every server shows the same, and the metric has its age
        assert len({json.dumps(done_slots(c, n)) for n in c.spec}) == 1
        text = http("GET", c.url("PA2") + "/metrics")[1]
        age = re.search(r"^understudy_backup_last_success_age_seconds (\d+)$",
                        text, re.M)
        assert age and int(age.group(1)) < 60, text

        # the operator's view
        out = subprocess.run([CLI, "backup", "status", "--config", c.config],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        assert re.search(r"^Backups completed today: \d+$", out.stdout, re.M), out.stdout
        assert re.search(r"^Status: Last backup finished at \d{4}-\d\d-\d\d "
                         r"\d\d:\d\d:\d\d, [\d.]+ [KMG]?i?B, verified$",
                         out.stdout, re.M), out.stdout
        assert os.path.basename(archives(d)[0]) in out.stdout
        out = subprocess.run([CLI, "backup", "status", "--config", c.config, "--json"],
                             capture_output=True, text=True, timeout=10)
        assert json.loads(out.stdout)["last_ok"]["verified"] is True
    finally:
        c.stop_all()


def test_primary_killed_during_a_backup(tmp_path, etcd1):
    c, d = cluster(tmp_path, etcd1, "every 1h", 7)
    c.start()
    try:
        running = wait_for(lambda: (backups(c, "PA1") or {}).get("running"), 30, 0.005)
        assert running, backups(c, "PA1")
        holder = running[0]["server"]
        slot = running[0]["slot"]
        os.kill(c.srv[holder].worker(), 9)

        # the next primary finishes the slot: one archive, verified
        def finished():
            for n in c.spec:
                b = backups(c, n)
                if b and b["last_ok"] and b["last_ok"]["slot"] == slot:
                    return b["last_ok"]
            return None
        last = wait_for(finished, 40, 0.05)
        assert last, [c.srv[n].logtext()[-2000:] for n in c.spec]
        assert last["verified"] is True
        assert last["server"] != holder and last["attempt"] == 2, last
        assert len(archives(d)) == 1, archives(d)
        assert "taking it over" in c.srv[last["server"]].logtext()
        # nothing half-written stays behind
        assert wait_for(lambda: [f for f in os.listdir(d) if not f.endswith(".tar")] == [],
                        10), os.listdir(d)
        keys = slot_keys(c)
        assert len(keys) == 1 and keys[0][2]["state"] == "done", keys
    finally:
        c.stop_all()
