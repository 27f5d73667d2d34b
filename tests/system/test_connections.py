"""The API's connections: a server holds as many as its file limit allows
(less what its calls and links keep), shows both in /metrics, says in its
log when it reaches the limit and when it is under it again; a request
past the limit waits for a free connection instead of being lost."""
import socket

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

        # clients that connect and say nothing, as many as the limit
        for _ in range(limit):
            s = socket.create_connection(("127.0.0.1", c.spec["PA1"]["api"]), timeout=5)
            held.append(s)
        assert wait_for(lambda: "connections, the most this server holds" in srv.logtext(),
                        20), srv.logtext()[-2000:]
        # one more request waits in the kernel's queue: no answer yet
        try:
            http("GET", c.url("PA1") + "/health", timeout=1)
            answered = True
        except OSError:
            answered = False
        assert not answered, "a request past the limit was served"
        # a tenth and more closes: the server takes new ones again, says so
        for s in held[:limit // 5]:
            s.close()
        del held[:limit // 5]
        assert wait_for(lambda: c.healthy("PA1"), 15), srv.logtext()[-2000:]
        assert wait_for(lambda: "under the limit of %d again" % limit in srv.logtext(),
                        10), srv.logtext()[-2000:]
        assert srv.proc.poll() is None
    finally:
        for s in held:
            s.close()
        c.stop_all()
