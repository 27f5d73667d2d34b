"""Calls over real SIP, straight to the servers (no proxy yet): real
callers (SIPp, Net::SIP) get their calls answered on media ports with the
RTP echoed byte for byte, busy at capacity, a redirect from a server that
does not own the route point, and the cover answering after a failover."""
import os
import socket
import subprocess
import time

import pytest

from conftest import AUTH, CLI, ROOT, Cluster, free_port, wait_for

ECHO = os.path.join(ROOT, "tests", "sip", "echo_call.pl")


@pytest.fixture
def cluster(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [
        {"name": "PA1", "ports": 2, "max": 4, "failover": ["PA3"],
         "interceptors": ["2XXX"]},
        {"name": "PA3", "ports": 2, "max": 4, "failover": ["PA1"]}],
        failback="manual")
    c.start()
    assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA3", "PA3")
    for via in ("PA1", "PA3"):               # each server knows both owners
        for post in ("PA1", "PA3"):
            assert c.wait_state(post, "HOME", via=via)
    yield c
    c.stop_all()


def echo_call(c, ext, server, tmp_path, size=8000):
    """Net::SIP calls ext at server; returns (final code, sent, echoed)."""
    data = os.urandom(size)
    src, dst = tmp_path / ("in-%s.pcmu" % ext), tmp_path / ("out-%s.pcmu" % ext)
    src.write_bytes(data)
    r = subprocess.run(["perl", ECHO, "sip:%s@127.0.0.1:%d" % (ext, c.spec[server]["sip"]),
                        "127.0.0.1:%d" % free_port(), str(src), str(dst)],
                       capture_output=True, text=True, timeout=60)
    words = r.stdout.split()
    code = int(words[-1]) if words[:1] == ["FINAL"] and words[-1].isdigit() else None
    assert code is not None, "the caller said: %r %r" % (r.stdout, r.stderr[-500:])
    return code, data, dst.read_bytes() if dst.exists() else b""


def sipp(c, server, ext, *extra, calls=1, timeout=30):
    cmd = ["sipp", "127.0.0.1:%d" % c.spec[server]["sip"], "-sn", "uac", "-s", ext,
           "-m", str(calls), "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
           "-timeout", "%ds" % timeout, "-timeout_error"] + list(extra)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=c.tmp)


def test_route_point_answered_with_rtp_echo(cluster, tmp_path):
    code, sent, got = echo_call(cluster, cluster.rp["PA1"], "PA1", tmp_path)
    assert code == 200
    assert got == sent                       # every byte, in order
    assert "answered on port 5001" in cluster.srv["PA1"].logtext()
    assert wait_for(lambda: cluster.post("PA1")["ports_in_use"] == 0, 5)


def test_sipp_calls_both_route_points(cluster):
    for post in ("PA1", "PA3"):
        p = sipp(cluster, post, cluster.rp[post], "-r", "5", "-l", "2", calls=10)
        assert p.wait(60) == 0, p.stderr.read()


def test_interceptor_pattern(cluster, tmp_path):
    code, sent, got = echo_call(cluster, "2007", "PA1", tmp_path, size=1600)
    assert code == 200 and got == sent
    code, _, _ = echo_call(cluster, "3007", "PA1", tmp_path, size=160)
    assert code == 404                       # matches nothing


def test_busy_at_capacity(cluster, tmp_path):
    holders = sipp(cluster, "PA1", cluster.rp["PA1"], "-d", "6000", "-l", "2", calls=2)
    assert wait_for(lambda: cluster.post("PA1")["ports_in_use"] == 2, 10)
    code, _, _ = echo_call(cluster, cluster.rp["PA1"], "PA1", tmp_path, size=160)
    assert code == 486
    assert holders.wait(60) == 0             # the held calls were not hurt
    assert wait_for(lambda: cluster.post("PA1")["ports_in_use"] == 0, 5)


def test_not_owner_redirects_to_owner(cluster, tmp_path):
    # asked at PA3, the caller is sent to PA1 (302) and answered there
    code, sent, got = echo_call(cluster, cluster.rp["PA1"], "PA3", tmp_path, size=1600)
    assert code == 200 and got == sent
    assert "answered" in cluster.srv["PA1"].logtext()
    assert "answered" not in cluster.srv["PA3"].logtext()


def test_cover_answers_after_failover(cluster, tmp_path):
    cluster.kill_worker("PA1")
    assert cluster.wait_owner("PA1", "PA3", 5)
    assert cluster.wait_state("PA1", "COVERED", 5, via="PA3")
    code, sent, got = echo_call(cluster, cluster.rp["PA1"], "PA3", tmp_path, size=1600)
    assert code == 200 and got == sent
    assert "to %s answered" % cluster.rp["PA1"] in cluster.srv["PA3"].logtext()


def test_options_and_garbage(cluster):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    port = cluster.spec["PA1"]["sip"]
    s.sendto(b"\x00\xffnot sip at all\r\n\r\n", ("127.0.0.1", port))
    me = s.getsockname()
    s.sendto(("OPTIONS sip:%s@127.0.0.1 SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKopt1\r\n"
              "From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:%s@127.0.0.1>\r\n"
              "Call-ID: opt1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
              "Content-Length: 0\r\n\r\n" % (cluster.rp["PA1"], me[1], cluster.rp["PA1"])
              ).encode(), ("127.0.0.1", port))
    reply = s.recv(4096).decode()
    assert reply.startswith("SIP/2.0 200")
    assert "Call-ID: opt1@127.0.0.1" in reply
    s.close()
    assert cluster.healthy("PA1")            # garbage did not hurt it


@pytest.fixture
def quick_timeout(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [
        {"name": "PA1", "ports": 2, "max": 4, "failover": ["PA3"]},
        {"name": "PA3", "ports": 2, "max": 4, "failover": ["PA1"]}],
        extra=["media_timeout = 2"])
    c.start()
    assert c.wait_owner("PA1", "PA1")
    yield c
    c.stop_all()


HUNGUP = os.path.join(ROOT, "tests", "sip", "uac_hungup.xml")


def waiting_caller(c, server, ext):
    """SIPp calls ext and waits for the server's BYE (exit 0 if it came)."""
    return subprocess.Popen(
        ["sipp", "127.0.0.1:%d" % c.spec[server]["sip"], "-sf", HUNGUP, "-s", ext,
         "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
         "-timeout", "40s", "-timeout_error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=c.tmp)


def test_silent_call_is_hung_up_and_its_port_freed(quick_timeout):
    c = quick_timeout
    # SIPp sends no RTP: after media_timeout the server hangs up itself
    p = waiting_caller(c, "PA1", c.rp["PA1"])
    try:
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 1, 10)
        t0 = time.monotonic()
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 0, 10)
        assert 1.5 <= time.monotonic() - t0 + 0.5 <= 6
        assert "had no media for" in c.srv["PA1"].logtext()
        assert p.wait(20) == 0, p.stderr.read()      # the BYE reached it
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sip_call_ended_over_http_gets_our_bye(cluster):
    c = cluster
    p = waiting_caller(c, "PA1", c.rp["PA1"])
    try:
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 1, 10)
        port = next(x for x in c.post("PA1")["ports"] if x.get("call"))
        call = {"server": "PA1", "call": port["call"]}
        st, body = c.end(call, transfer=True)
        assert st == 409 and "REFER" in body["message"]
        st, body = c.end(call)
        assert st == 200 and body["status"] == "NORMAL"
        assert p.wait(20) == 0, p.stderr.read()      # the caller got the BYE
        assert c.post("PA1")["ports_in_use"] == 0
        assert "ended by the API" in c.srv["PA1"].logtext()
        from conftest import http
        assert wait_for(lambda: http("GET", c.url("PA1") + "/v1/records", headers=AUTH)[1]["count"] == 1, 5)
        rec = http("GET", c.url("PA1") + "/v1/records", headers=AUTH)[1]["records"][0]
        assert rec["call"] == call["call"] and rec["ended_by"] == "api"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_call_with_media_is_not_hung_up(quick_timeout, tmp_path):
    # 3 s of audio, longer than the 2 s media_timeout
    code, sent, got = echo_call(quick_timeout, quick_timeout.rp["PA1"], "PA1",
                                tmp_path, size=24000)
    assert code == 200 and got == sent
    assert "had no media" not in quick_timeout.srv["PA1"].logtext()


def wav(path, payload, fmt=7, channels=1, rate=8000, bits=8):
    """A WAV file of the given format around payload."""
    import struct
    f = struct.pack("<HHIIHH", fmt, channels, rate, rate * channels * bits // 8,
                    channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(f)) + f + \
        b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return str(path)


def test_prompt_is_played_instead_of_the_echo(tmp_path, etcd1):
    """A post with a prompt plays it, looped, to every caller: what Net::SIP
    hears is the file's audio, in order."""
    prompt = os.urandom(4000)                  # half a second of PCMU
    wav(tmp_path / "welcome.wav", prompt)
    c = Cluster(tmp_path, etcd1, [
        {"name": "PA1", "ports": 2, "max": 4, "prompt": "welcome.wav"}])
    try:
        c.start()
        assert c.wait_owner("PA1", "PA1")
        assert "plays %s" % (tmp_path / "welcome.wav") in c.srv["PA1"].logtext()
        out = tmp_path / "heard.pcmu"
        r = subprocess.run(["perl", ECHO, "sip:%s@127.0.0.1:%d" % (c.rp["PA1"], c.spec["PA1"]["sip"]),
                            "127.0.0.1:%d" % free_port(), "-", str(out)],
                           capture_output=True, text=True, timeout=60)
        assert r.stdout.split()[-1] == "200", r.stdout + r.stderr[-500:]
        heard = out.read_bytes()
        assert len(heard) >= 8000              # 2 s of listening: 1 s at the least
        assert len(heard) % 160 == 0           # whole 20 ms frames
        assert heard[:160] in prompt           # the file's audio...
        start = prompt.index(heard[:160])
        looped = (prompt * (len(heard) // len(prompt) + 2))[start:start + len(heard)]
        assert heard == looped                 # ...every frame, in order, looped
    finally:
        c.stop_all()


def test_bad_prompt_refused_at_start(tmp_path, etcd1):
    wav(tmp_path / "pcm.wav", os.urandom(4000), fmt=1, bits=16)
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 2, "prompt": "pcm.wav"}])
    from conftest import DAEMON
    r = subprocess.run([DAEMON, "--config", c.config, "--server", "PA1",
                        "--state-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    line = next(i for i, l in enumerate(open(c.config).read().splitlines(), 1)
                if l.startswith("prompt"))
    assert "cluster.conf:%d: prompt of [server PA1]" % line in r.stderr
    assert "format 1" in r.stderr and "mu-law" in r.stderr


def test_a_new_interceptor_pattern_runs_live(cluster, tmp_path):
    """A configuration version that adds an interceptor pattern: calls to
    it are answered from then on, without a restart."""
    c = cluster
    code, _, _ = echo_call(c, "3007", "PA1", tmp_path, size=160)
    assert code == 404
    with open(c.config) as f:
        text = f.read()
    path = tmp_path / "next.conf"
    path.write_text(text.replace("interceptor_ports = 2XXX",
                                 "interceptor_ports = 2XXX, 3XXX", 1))
    out = subprocess.run([CLI, "config", "apply", str(path), "--config", c.config],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "needs a restart of" not in out.stdout, out
    assert wait_for(lambda: c.status("PA1")["config"]["version"] == 2, 5)
    code, sent, got = echo_call(c, "3007", "PA1", tmp_path, size=1600)
    assert code == 200 and got == sent


def raw_sip(sock, dest, text):
    sock.sendto(text.replace("\n", "\r\n").encode(), dest)


def raw_reply(sock, want):
    """The next response whose status line starts with want (up to 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if data.decode(errors="replace").startswith(want):
            return data
    return None


def test_retransmitted_bye_gets_the_same_answer(cluster):
    # osip forgets a BYE's transaction once it is answered; the answer
    # itself is kept 32 s, so the caller's retransmissions (their 200
    # lost) get it again, byte for byte, and never a 481
    c, rp = cluster, cluster.rp["PA1"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    me = s.getsockname()[1]
    dest = ("127.0.0.1", c.spec["PA1"]["sip"])
    head = ("Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%%s\nMax-Forwards: 70\n"
            "From: <sip:caller@127.0.0.1>;tag=c1\nTo: <sip:%s@127.0.0.1>%%s\n"
            "Call-ID: rebye@127.0.0.1\nContact: <sip:caller@127.0.0.1:%d>\n"
            % (me, rp, me))
    sdp = ("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
           "m=audio %d RTP/AVP 0\na=rtpmap:0 PCMU/8000\n" % free_port())
    try:
        raw_sip(s, dest, "INVITE sip:%s@127.0.0.1 SIP/2.0\n" % rp +
                head % ("z9hG4bK-inv1", "") + "CSeq: 1 INVITE\n"
                "Content-Type: application/sdp\nContent-Length: %d\n\n%s"
                % (len(sdp.replace("\n", "\r\n")), sdp))
        ok = raw_reply(s, "SIP/2.0 200")
        assert ok, "no 200 to the INVITE"
        totag = ok.decode().split("To:", 1)[1].split("\r\n", 1)[0].split("tag=")[1]
        raw_sip(s, dest, "ACK sip:%s@127.0.0.1 SIP/2.0\n" % rp +
                head % ("z9hG4bK-ack1", ";tag=" + totag) +
                "CSeq: 1 ACK\nContent-Length: 0\n\n")
        bye = ("BYE sip:%s@127.0.0.1 SIP/2.0\n" % rp +
               head % ("z9hG4bK-bye1", ";tag=" + totag) +
               "CSeq: 2 BYE\nContent-Length: 0\n\n")
        raw_sip(s, dest, bye)
        first = raw_reply(s, "SIP/2.0 ")
        assert first and first.startswith(b"SIP/2.0 200"), first
        assert wait_for(lambda: c.post("PA1")["ports_in_use"] == 0, 5)
        # the caller's timer E schedule: again after 0.5 s, then after 4 s
        for pause in (0.5, 4):
            time.sleep(pause)                # the protocol's timing, not a wait
            raw_sip(s, dest, bye)
            again = raw_reply(s, "SIP/2.0 ")
            assert again == first            # the same answer, not a 481
        # a new BYE (another branch) for the ended call is a new request
        raw_sip(s, dest, bye.replace("z9hG4bK-bye1", "z9hG4bK-bye2"))
        other = raw_reply(s, "SIP/2.0 ")
        assert other and other.startswith(b"SIP/2.0 481"), other
        assert c.srv["PA1"].logtext().count("ended by the caller") == 1
    finally:
        s.close()
