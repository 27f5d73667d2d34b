"""The API's connections: a server holds as many as its file limit allows
(less what its calls and links keep), shows both in /metrics, says in its
log when it reaches the limit and when it is under it again; a request
past the limit waits for a free connection instead of being lost."""
import http.client as http_client
import resource
import socket
import threading

from conftest import AUTH, Cluster, http, wait_for

FILES = 3200            # the server's file limit, as LimitNOFILE= would set it
KEPT = 2000             # the worker keeps these for etcd, SQLite, SIP, NATS...
MAX_PORTS = 4           # ... and one RTP socket per media port it may hold


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def test_connection_limit_is_shown_reached_and_left(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 2, "max": MAX_PORTS}])
    srv = c.srv["PA1"]
    srv.start(files=FILES)
    held = []
    try:
        assert wait_for(lambda: c.healthy("PA1"), 15), srv.logtext()
        st, text = http("GET", c.url("PA1") + "/metrics", headers=AUTH)
        assert st == 200
        limit = metric(text, "understudy_http_connection_limit")
        assert limit == FILES - KEPT - MAX_PORTS, text
        assert metric(text, "understudy_http_connections") >= 1
        assert "http: up to %d connections (file limit %d" % (limit, FILES) in srv.logtext()

        # clients that connect and say nothing, as many as the limit (the
        # test's own file limit raised for them); MHD closes an idle
        # connection after 30 s, so every step below stays well under that
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert hard >= limit + 200, "the test needs %d files, may open %d" % (
            limit + 200, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit + 200), hard))
        for _ in range(limit):
            s = socket.create_connection(("127.0.0.1", c.spec["PA1"]["api"]), timeout=5)
            held.append(s)
        assert wait_for(lambda: "connections, the most this listener holds" in srv.logtext(),
                        10), srv.logtext()[-2000:]
        # one more request waits in the kernel's queue: no answer yet...
        got = []
        waiting = threading.Thread(target=lambda: got.append(
            http("GET", c.url("PA1") + "/health", timeout=15)[0]), daemon=True)
        waiting.start()
        waiting.join(1.5)
        assert waiting.is_alive() and not got, "a request past the limit was served"
        # ... and is served once a fifth close; the server says it is under
        # the limit again
        for s in held[:limit // 5]:
            s.close()
        del held[:limit // 5]
        waiting.join(10)
        assert got == [200], got
        assert wait_for(lambda: "under the limit of %d again" % limit in srv.logtext(),
                        5), srv.logtext()[-2000:]
        assert srv.proc.poll() is None
    finally:
        for s in held:
            s.close()
        c.stop_all()


def test_headers_past_a_connections_memory_are_refused(tmp_path, etcd1):
    """A browser's request with a few KB of cookies is served (a smaller
    connection memory than libmicrohttpd's 32 KiB refused it); one whose
    headers pass the connection's memory is refused, and the server goes
    on."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 2}])
    c.start()
    try:
        url = c.url("PA1") + "/v1/status"
        cookies = {"Cookie": "; ".join("site%d=%s" % (i, "x" * 90) for i in range(60))}
        st, _ = http("GET", url, headers=dict(AUTH, **cookies))
        assert st == 200, "a request with %d bytes of cookies: %s" % (
            len(cookies["Cookie"]), st)
        # past it: 431, or, when not even that answer's headers fit
        # (libmicrohttpd builds them in the same memory), the connection
        # closed without an answer; the server logs it either way
        big = {"X-Filler-%d" % i: "y" * 1000 for i in range(48)}
        try:
            st = http("GET", url, headers=dict(AUTH, **big))[0]
        except (OSError, http_client.HTTPException):
            st = "closed"
        assert st in (431, "closed"), st
        if st == "closed":
            assert wait_for(lambda: "http: Closing connection (failed to create "
                            "response header)" in c.srv["PA1"].logtext(), 5)
        assert http("GET", url, headers=AUTH)[0] == 200
        assert c.srv["PA1"].proc.poll() is None
    finally:
        c.stop_all()
