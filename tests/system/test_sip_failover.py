"""Callers who dial while a post fails over are not lost: the example
Kamailio (examples/kamailio.cfg) tries a route point's failed branch again
on the contact registered now and follows a redirect itself, and a call
placed through it while the owner is frozen, or at the moment the owner's
worker is killed, is answered by the cover, with no redirect and no
timeout reaching the caller (docs/sip.md, "What the proxy must do")."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

from conftest import ROOT, free_port, wait_for
from sipcaller import Caller, call_once, header


UAC = os.path.join(ROOT, "tests", "sip", "uac.xml")


def sipp_call(kam, c, post):
    """SIPp places one call to post's route point through Kamailio (INVITE
    retransmitted at 0.5 s, doubling; a 3xx or a 408 fails it)."""
    return subprocess.Popen(
        ["sipp", kam.address, "-sf", UAC, "-s", c.rp[post], "-m", "1",
         "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
         "-timeout", "20s", "-timeout_error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=c.tmp)


class FakeServer(threading.Thread):
    """A stand-in for a server behind Kamailio: registers ext with its
    own contact and answers every INVITE as behave(self, n) says: a
    status code (with extra headers), or None for silence."""

    def __init__(self, kam, ext, behave):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.kam, self.ext, self.behave = kam, ext, behave
        self.invites = 0
        self.stopping = False
        self.start()

    def register(self):
        n = time.monotonic_ns()
        msg = ("REGISTER sip:%s SIP/2.0\r\n"
               "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%x\r\n"
               "Max-Forwards: 70\r\n"
               "From: <sip:%s@127.0.0.1>;tag=f%x\r\nTo: <sip:%s@127.0.0.1>\r\n"
               "Call-ID: reg-%d-%x\r\nCSeq: 1 REGISTER\r\n"
               "Contact: <sip:%s@127.0.0.1:%d>\r\nExpires: 60\r\n"
               "Content-Length: 0\r\n\r\n") % (
                   self.kam.address, self.port, n, self.ext, n, self.ext,
                   self.port, n, self.ext, self.port)
        self.sock.sendto(msg.encode(), ("127.0.0.1", self.kam.port))

    def run(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            msg = data.decode(errors="replace")
            if not msg.startswith("INVITE"):
                continue
            self.invites += 1
            r = self.behave(self, self.invites)
            if r is None:
                continue
            code, extra = r
            keep = [l for l in msg.split("\r\n")[1:]
                    if re.match(r"(?i)^(via|from|to|call-id|cseq):", l)]
            keep = [l + ";tag=fake" if l.lower().startswith("to:") else l
                    for l in keep]
            if code < 300:
                extra += "Contact: <sip:%s@127.0.0.1:%d>\r\n" % (self.ext, self.port)
            out = "SIP/2.0 %d X\r\n%s\r\n%sContent-Length: 0\r\n\r\n" % (
                code, "\r\n".join(keep), extra)
            self.sock.sendto(out.encode(), peer)

    def stop(self):
        self.stopping = True
        self.join()
        self.sock.close()


def test_example_proxy_retries_and_follows_redirects(kam):
    """The example configuration against stand-in servers: a 503 or no
    answer from one contact is tried again on the contact registered
    next; a 302 is followed; a 486 reaches the caller as it is."""
    ext = "7000"
    good = FakeServer(kam, ext, lambda s, n: (200, ""))
    servers = [good]
    try:
        def ask(srv):
            srv.register()
            time.sleep(0.1)       # a REGISTER has no answer we read here

        # refused at once (fencing, handing over): tried again after a pause
        refusing = FakeServer(kam, ext, lambda s, n: (503, "Retry-After: 0\r\n"))
        servers.append(refusing)
        ask(refusing)
        threading.Timer(0.2, good.register).start()
        c = call_once("127.0.0.1", kam.port, ext)
        assert c.final == 200 and c.contact.endswith(":%d" % good.port), c.codes
        assert refusing.invites >= 2 and c.codes == [100, 200], c.codes

        # no answer at all (a frozen owner): tried again after 300 ms
        silent = FakeServer(kam, ext, lambda s, n: None)
        servers.append(silent)
        ask(silent)
        threading.Timer(1.0, good.register).start()
        c = call_once("127.0.0.1", kam.port, ext)
        assert c.final == 200 and c.contact.endswith(":%d" % good.port), c.codes
        assert 3 <= silent.invites <= 5, silent.invites
        assert 1.0 <= c.wait < 1.5, c.wait

        # a redirect is followed inside the proxy
        redirecting = FakeServer(kam, ext, lambda s, n: (
            302, "Contact: <sip:%s@127.0.0.1:%d>\r\n" % (ext, good.port)))
        servers.append(redirecting)
        ask(redirecting)
        c = call_once("127.0.0.1", kam.port, ext)
        assert c.final == 200 and not c.redirected, c.codes
        assert c.contact.endswith(":%d" % good.port)

        # busy is an answer: the caller gets it
        busy = FakeServer(kam, ext, lambda s, n: (486, ""))
        servers.append(busy)
        ask(busy)
        c = call_once("127.0.0.1", kam.port, ext)
        assert c.final == 486 and busy.invites == 1, c.codes

        # a redirect to itself for ever: bounded, and not the caller's
        looping = FakeServer(kam, ext, lambda s, n: (
            302, "Contact: <sip:%s@127.0.0.1:%d>\r\n" % (ext, s.port)))
        servers.append(looping)
        ask(looping)
        c = call_once("127.0.0.1", kam.port, ext)
        assert c.final == 480 and not c.redirected, c.codes
        assert looping.invites >= 10 and c.wait < 4, (looping.invites, c.wait)

        # nobody ever answers: bounded, the caller hears 408
        ask(silent)
        c = call_once("127.0.0.1", kam.port, ext)
        assert c.final == 408 and 7.5 <= c.wait <= 10, (c.codes, c.wait)
    finally:
        for s in servers:
            s.stop()


def sip_port(c, name):
    return c.spec[name]["sip"]


def registered_at(c, server, post):
    """server owns post and has registered it under the post's epoch."""
    st = c.status(server)
    if not st:
        return False
    p = next(x for x in st["posts"] if x["name"] == post)
    return p.get("owner") == server and any(
        r["route_point"] == c.rp[post] and r["epoch"] == p.get("epoch")
        for r in st.get("registrations", []))


def answered_by(c, server):
    return c.srv[server].logtext().count("to %s answered" % c.rp["PA1"])


def udp_queued(port):
    """Bytes waiting in the receive queue of UDP 127.0.0.1:port."""
    want = ":%04X" % port
    with open("/proc/net/udp") as f:
        for line in list(f)[1:]:
            w = line.split()
            if w[1].endswith(want):
                return int(w[4].split(":")[1], 16)
    return 0


def test_call_during_sigstop_answered_by_cover(kam_cluster, kam):
    """The whole owner frozen: a call placed right after reaches the
    frozen contact first, and is answered by the cover once it has taken
    the post over, within the failover time and half a second."""
    c = kam_cluster
    assert wait_for(lambda: registered_at(c, "PA1", "PA1"), 5)
    caller = Caller("127.0.0.1", kam.port)
    try:
        c.freeze("PA1")
        t0 = time.monotonic()
        call = caller.place(c.rp["PA1"])
        sipp = sipp_call(kam, c, "PA1")       # and a real phone's call
        assert c.owner_key("PA1") == "PA1"    # placed before the failover
        assert caller.settle(15)
        assert sipp.wait(30) == 0, sipp.stderr.read()
        assert c.wait_owner("PA1", "PA3", 1)
        took = time.monotonic() - t0
        assert call.final == 200, call.codes
        assert call.contact.endswith(":%d" % sip_port(c, "PA3")), call.contact
        assert not call.redirected
        assert answered_by(c, "PA3") == 2   # ours and SIPp's
        # about the lease TTL (2 s) for the failover, then at once
        assert call.wait < 4.0, (call.wait, took)
    finally:
        caller.close()
        c.thaw("PA1")


def test_call_at_sigkill_answered_without_redirect(kam_cluster, kam):
    """A call in flight when the owner's worker dies (its INVITE waiting
    in the dead worker's socket) is answered by the cover; the restarted
    worker's redirect, if it sees the call, never reaches the caller."""
    c = kam_cluster
    assert wait_for(lambda: registered_at(c, "PA1", "PA1"), 5)
    worker = c.srv["PA1"].worker()
    caller = Caller("127.0.0.1", kam.port)
    try:
        os.kill(worker, signal.SIGSTOP)
        call = caller.place(c.rp["PA1"])
        # relayed by Kamailio, not yet read by the worker
        assert wait_for(lambda: caller.run(time.monotonic() + 0.005) or
                        udp_queued(sip_port(c, "PA1")) > 0, 2)
        os.kill(worker, signal.SIGKILL)
        assert caller.settle(15)
        assert call.final == 200, call.codes
        assert not call.redirected, call.codes
        assert call.contact.endswith(":%d" % sip_port(c, "PA3")), call.contact
        assert call.wait < 1.5, call.wait
        assert c.wait_owner("PA1", "PA3", 1)
        assert answered_by(c, "PA3") == 1
        # and a call placed now is the cover's at once
        after = call_once("127.0.0.1", kam.port, c.rp["PA1"])
        assert after.final == 200 and after.codes == [100, 200], after.codes
        assert after.contact.endswith(":%d" % sip_port(c, "PA3"))
    finally:
        caller.close()


def test_fenced_owner_answers_503_at_once(kam_cluster):
    """An owner that fences itself (no lease renewal: etcd frozen) while
    its view still names it the owner answers a new call to its post at
    once with 503 and Retry-After: 0, so a proxy moves on."""
    c = kam_cluster
    etcd = c.etcd.members[0]["proc"]
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: not c.healthy("PA1"), 5)
        call = call_once("127.0.0.1", sip_port(c, "PA1"), c.rp["PA1"], timeout=5)
        assert call.final == 503, call.codes
        assert header(call.final_msg, "retry-after") == "0"
        assert call.sends == 1 and call.wait < 0.5, (call.sends, call.wait)
    finally:
        os.kill(etcd.pid, signal.SIGCONT)


def test_same_call_in_another_branch_takes_one_port(kam_cluster):
    """A proxy that gave up waiting and tries the route point again sends
    the same call in a new branch, perhaps to the same server: that one
    gets 482, and only the first try takes a port and is answered."""
    c = kam_cluster
    caller = Caller("127.0.0.1", sip_port(c, "PA1"))
    try:
        call = caller.place(c.rp["PA1"])
        caller.sock.sendto(caller._invite(call, "again1").encode(), caller.proxy)
        assert wait_for(lambda: caller.run(time.monotonic() + 0.01) or
                        (200 in call.codes and 482 in call.codes), 5), call.codes
        assert call.codes.count(200) >= 1 and call.codes.count(482) == 1, call.codes
        assert c.srv["PA1"].logtext().count("to %s answered" % c.rp["PA1"]) == 1
        assert caller.settle(5)
        assert wait_for(lambda: c.post("PA1", via="PA1")["ports_in_use"] == 0, 5)
    finally:
        caller.close()
