"""understudy up runs a whole cluster on this machine (a local etcd and
every local server), shows what listens where, and on SIGTERM or Ctrl-C
stops everything it started and exits 0."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

import shutil

from conftest import CLI, ROOT, free_port, http, wait_for


def config(tmp_path):
    etcd_port = free_port(2)
    ports = [free_port() for _ in range(3)]
    sips = [free_port() for _ in range(3)]
    text = """[cluster]
name = uptest
etcd = local
local_etcd_port = %d
registrar = local
local_registrar_port = %d
local_nats_port = %d

[server PA1]
address = 127.0.0.1
api_port = %d
sip_port = %d
route_point = 6000
media_port_base = 5001
media_ports = 18
max_media_ports = 36
rtp_port_base = 41000
failover = PA3

[server PA2]
address = 127.0.0.1
api_port = %d
sip_port = %d
spare = yes
max_media_ports = 18

[server PA3]
address = 127.0.0.1
api_port = %d
sip_port = %d
route_point = 6100
media_port_base = 5101
media_ports = 18
max_media_ports = 36
rtp_port_base = 41100
failover = PA1
""" % (etcd_port, free_port(), free_port(), ports[0], sips[0], ports[1], sips[1],
       ports[2], sips[2])
    path = tmp_path / "site.conf"
    path.write_text(text)
    shutil.copy(os.path.join(ROOT, "examples", "kamailio.cfg"), tmp_path / "kamailio.cfg")
    return str(path), ports


def run_up(path, tmp_path, *extra):
    p = subprocess.Popen([CLI, "up", path, "--state-dir", str(tmp_path / "var")] + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line or line.startswith("{"):
            return p, lines
    p.kill()
    out, err = p.communicate()
    pytest.fail("understudy up did not get ready:\n%s%s" % ("".join(lines), err))


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_up_runs_three_healthy_servers_and_stops_them(tmp_path):
    path, ports = config(tmp_path)
    p, lines = run_up(path, tmp_path)
    try:
        table = {m.group(1): int(m.group(2)) for m in
                 (re.match(r"(\S+)\s+(\d+)\s", l) for l in lines) if m}
        assert set(table) == {"etcd", "kamailio", "nats", "PA1", "PA2", "PA3"}
        # the servers run the cluster's version in etcd: the file, at first
        assert "configuration version 1, from etcd\n" in lines, lines
        assert not any(l.startswith("warning:") for l in lines), lines
        for port in ports:
            st, body = http("GET", "http://127.0.0.1:%d/health" % port)
            assert st == 200 and body["status"] == "ok"
        def status():
            return subprocess.run([CLI, "status", "--config", path],
                                  capture_output=True, text=True, timeout=10)
        # servers learn of each other from their watches, a moment later
        assert wait_for(lambda: status().stdout.count("▲ up") == 3, 5), status().stdout
        assert status().returncode == 0
        # the owners registered their route points at the local Kamailio
        def registered(port):
            st = http("GET", "http://127.0.0.1:%d/v1/status" % port)[1]
            return [r["route_point"] for r in st.get("registrations", [])]
        assert wait_for(lambda: registered(ports[0]) == ["6000"], 5)
        assert wait_for(lambda: registered(ports[2]) == ["6100"], 5)
        assert os.path.exists(tmp_path / "var" / "log" / "PA1.log")
        assert os.path.isdir(tmp_path / "var" / "etcd")
        assert os.path.isdir(tmp_path / "var" / "nats" / "jetstream")
        # the desks' data plane is the NATS that up runs
        nats = http("GET", "http://127.0.0.1:%d/v1/desk/versions" % ports[0])
        assert nats[0] == 200
        assert os.path.exists(tmp_path / "var" / "PA1" / "understudy.db")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        for name, pid in table.items():
            assert wait_for(lambda: not alive(pid), 5), name
        for port in ports:
            with pytest.raises(OSError):
                http("GET", "http://127.0.0.1:%d/health" % port, timeout=0.5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_up_ctrl_c_and_json(tmp_path):
    path, ports = config(tmp_path)
    p, lines = run_up(path, tmp_path, "--json")
    try:
        info = json.loads(lines[-1])
        assert info["cluster"] == "uptest"
        assert [x["name"] for x in info["processes"]] == ["etcd", "kamailio", "nats",
                                                          "PA1", "PA2", "PA3"]
        assert all(x["healthy"] for x in info["processes"])
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
        for x in info["processes"]:
            assert wait_for(lambda: not alive(x["pid"]), 5), x["name"]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_up_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[cluster]\nname = x\n[server PA1]\naddress = 127.0.0.1\nspare = maybe\n")
    r = subprocess.run([CLI, "up", str(bad), "--state-dir", str(tmp_path / "v")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "bad.conf:5: error: spare: 'maybe' is not yes or no" in r.stderr
    assert "nothing started" in r.stderr
