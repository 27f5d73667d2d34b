"""A SIP caller that behaves as a phone does: it sends an INVITE and
retransmits it at 0.5, 1, 2, 4, 4... s until a provisional answer
(RFC 3261 timer A, T1 = 0.5 s, capped at T2 = 4 s), gives up after 32 s
(timer B), ACKs the final answer and hangs up an answered call at once
with a BYE, resent until it is answered. One UDP socket carries many calls, so calls can be placed
every few milliseconds from one thread.

Every answer is kept: a test or a benchmark asks what each call got
(every status code, in order), when, and from where."""
import random
import select
import socket
import time

T1, T2, TIMER_B = 0.5, 4.0, 32.0


class Call:
    def __init__(self, callid, ruri, t0):
        self.callid, self.ruri, self.t0 = callid, ruri, t0
        self.codes = []             # every status code received, in order
        self.final = None           # the first final code
        self.final_msg = None       # the text of that answer
        self.t_final = None         # monotonic time of it
        self.contact = None         # the Contact of the 2xx (who answered)
        self.totag = None
        self.sends = 0              # INVITEs sent (1 + retransmissions)
        self.next_send = t0
        self.interval = T1
        self.bye_done = False
        self.bye = None             # our BYE, resent until answered
        self.bye_next = None
        self.bye_sends = 0
        self.bye_answered = False

    @property
    def wait(self):
        """Seconds from the first INVITE to the final answer, or None."""
        return None if self.t_final is None else self.t_final - self.t0

    @property
    def redirected(self):
        return any(300 <= c < 400 for c in self.codes)


def header(msg, name):
    for line in msg.split("\r\n")[1:]:
        if not line:
            break
        k, _, v = line.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


class Caller:
    """Places calls to sip:EXT@proxy from 127.0.0.1 (one socket)."""

    def __init__(self, proxy_host, proxy_port, seed=None):
        self.proxy = (proxy_host, proxy_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.rng = random.Random(seed)
        self.calls = {}
        self.order = []

    def close(self):
        self.sock.close()

    def _invite(self, c, branch):
        return ("INVITE %s SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:%d;rport;branch=z9hG4bK%s\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:caller@127.0.0.1>;tag=%s\r\n"
                "To: <%s>\r\n"
                "Call-ID: %s\r\n"
                "CSeq: 1 INVITE\r\n"
                "Contact: <sip:caller@127.0.0.1:%d>\r\n"
                "Content-Type: application/sdp\r\n"
                "Content-Length: %d\r\n\r\n%s") % (
                    c.ruri, self.port, branch, c.fromtag, c.ruri, c.callid,
                    self.port, len(self.sdp), self.sdp)

    @property
    def sdp(self):
        return ("v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
                "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
                "a=rtpmap:0 PCMU/8000\r\n")

    def place(self, ext):
        """Start a call to ext now; returns its Call."""
        now = time.monotonic()
        callid = "%x@caller" % self.rng.getrandbits(64)
        c = Call(callid, "sip:%s@%s:%d" % ((ext,) + self.proxy), now)
        c.fromtag = "%x" % self.rng.getrandbits(32)
        c.branch = "%x" % self.rng.getrandbits(48)
        self.calls[callid] = c
        self.order.append(c)
        self._send_invite(c, now)
        return c

    def _send_invite(self, c, now):
        self.sock.sendto(self._invite(c, c.branch).encode(), self.proxy)
        c.sends += 1
        c.next_send = now + c.interval
        c.interval = min(c.interval * 2, T2)

    def _ack_and_bye(self, c, msg, code):
        to = header(msg, "to") or header(msg, "t")
        via = "SIP/2.0/UDP 127.0.0.1:%d;rport;branch=z9hG4bK" % self.port
        if code >= 300:
            # the ACK of a failure goes hop by hop, in the INVITE's branch
            ack = ("ACK %s SIP/2.0\r\nVia: %s%s\r\nMax-Forwards: 70\r\n"
                   "From: <sip:caller@127.0.0.1>;tag=%s\r\nTo: %s\r\n"
                   "Call-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n") % (
                       c.ruri, via, c.branch, c.fromtag, to, c.callid)
            self.sock.sendto(ack.encode(), self.proxy)
            return
        contact = header(msg, "contact") or header(msg, "m") or ""
        uri = contact.strip("<>").split(">")[0]
        c.contact = uri
        # a resent 2xx is ACKed again; the ACK of a 2xx and the BYE go to the answering server's
        # Contact through the proxy (no record-routing)
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            if method == "BYE" and c.bye_done:
                continue
            req = ("%s %s SIP/2.0\r\nVia: %s%x\r\nMax-Forwards: 70\r\n"
                   "From: <sip:caller@127.0.0.1>;tag=%s\r\nTo: %s\r\n"
                   "Call-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n") % (
                       method, uri, via, self.rng.getrandbits(48), c.fromtag, to,
                       c.callid, cseq, method)
            self.sock.sendto(req.encode(), self.proxy)
            if method == "BYE":
                c.bye = req.encode()
                c.bye_sends = 1
                c.bye_next = time.monotonic() + T1
        c.bye_done = True

    def _receive(self, data):
        msg = data.decode(errors="replace")
        if not msg.startswith("SIP/2.0 "):
            # a request to us (a BYE of the server's): answer 200
            if not msg.startswith("ACK"):
                hdrs = [l for l in msg.split("\r\n")[1:]
                        if l.split(":")[0].strip().lower() in
                        ("via", "from", "to", "call-id", "cseq")]
                self.sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(hdrs) +
                                  "\r\nContent-Length: 0\r\n\r\n").encode(), self.proxy)
            return
        code = int(msg.split(" ", 2)[1])
        c = self.calls.get(header(msg, "call-id") or header(msg, "i"))
        cseq = header(msg, "cseq") or ""
        if c is not None and cseq.endswith("BYE") and code >= 200:
            c.bye_answered = True
        if c is None or not cseq.endswith("INVITE"):
            return
        c.codes.append(code)
        if code >= 200:
            if c.final is None:
                c.final, c.t_final = code, time.monotonic()
                c.final_msg = msg
            self._ack_and_bye(c, msg, code)

    def pending(self):
        """Calls without a final answer, or whose BYE is unanswered."""
        return [c for c in self.order if c.final is None or
                (c.bye and not c.bye_answered and c.bye_sends < 8)]

    def run(self, until):
        """Send, resend and receive until monotonic time until."""
        while True:
            now = time.monotonic()
            if now >= until:
                return
            for c in self.order:
                if c.bye and not c.bye_answered and now >= c.bye_next \
                        and c.bye_sends < 8:
                    # a lost BYE would hold the server's port (timer E)
                    self.sock.sendto(c.bye, self.proxy)
                    c.bye_sends += 1
                    c.bye_next = now + min(T1 * 2 ** c.bye_sends, T2)
                if c.final is not None or c.codes:
                    continue            # answered, or a provisional came
                if now - c.t0 >= TIMER_B:
                    c.final, c.t_final = 408, now   # what a phone says
                elif now >= c.next_send:
                    self._send_invite(c, now)
            r, _, _ = select.select([self.sock], [], [], min(0.005, until - now))
            if r:
                try:
                    data, _ = self.sock.recvfrom(65535)
                except OSError:
                    continue
                self._receive(data)

    def settle(self, timeout):
        """Run until every call has its final answer, or timeout s."""
        end = time.monotonic() + timeout
        while self.pending() and time.monotonic() < end:
            self.run(min(end, time.monotonic() + 0.05))
        # a little longer, for the BYEs' answers and resent 2xx
        self.run(time.monotonic() + 0.1)
        return not self.pending()


def call_once(proxy_host, proxy_port, ext, timeout=35.0):
    """Place one call and wait for its final answer; returns the Call."""
    caller = Caller(proxy_host, proxy_port)
    try:
        c = caller.place(ext)
        caller.settle(timeout)
        return c
    finally:
        caller.close()
