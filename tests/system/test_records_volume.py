"""Records at any volume: after 100,000 calls' records (in the records
stream, as the servers publish them), a server started on a blank state
directory (a replaced disk) copies them all, in batches with progress in
its log, and says synced only when it has. etcd holds none of them.

US_RECORDS sets the volume."""
import json
import os
import re
import shutil
import time

from conftest import AUTH, Cluster, http, wait_for

N = int(os.environ.get("US_RECORDS", "100000"))


def record(i, t0):
    return {"call": "PA1-%012x-%d" % (t0, i), "route_point": "6000", "post": "PA1",
            "server": "PA1", "port": 5001 + i % 4, "origin": "sip",
            "caller": "sip:%d@127.0.0.1" % (1000 + i % 9000),
            "start": t0 + i, "answer": t0 + i + 5, "end": t0 + i + 60000,
            "duration_ms": 59995, "ended_by": "caller", "status": "NORMAL",
            "closed_by": "PA1"}


def copied(c, name):
    text = http("GET", c.url(name) + "/metrics", timeout=5)[1]
    m = re.search(r"^understudy_records_copied_total (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def synced(c, name):
    st, body = http("GET", c.url(name) + "/v1/records?limit=1", headers=AUTH, timeout=5)
    return st == 200 and body["synced"]


def test_a_blank_server_copies_every_record(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 4, "max": 8}])
    stream = "USREC_" + c.cluster
    t0 = int(time.time() * 1000) - 86400000
    try:
        c.start()       # makes the stream and its consumer
        assert wait_for(lambda: c.nats.stream(stream) is not None, 10)
        c.srv["PA1"].stop()
        shutil.rmtree(c.srv["PA1"].state_dir)    # a replaced disk
        # the records of N calls, as the servers publish them
        recs = [json.dumps(record(i, t0), separators=(",", ":")) for i in range(N)]
        c.nats.publish("us.%s.rec.PA1" % c.cluster, recs,
                       msg_ids=[record(i, t0)["call"] for i in range(N)])
        assert wait_for(lambda: c.nats.stream(stream)["messages"] == N, 60)
        begun = time.monotonic()
        c.start()
        assert wait_for(lambda: copied(c, "PA1") >= N, 600, step=0.5), copied(c, "PA1")
        took = time.monotonic() - begun
        assert wait_for(lambda: synced(c, "PA1"), 10)
        log = c.srv["PA1"].logtext()
        assert "records: copying the records stream" in log
        m = re.search(r"records: copied (\d+) records in ([\d.]+) s", log)
        assert m and int(m.group(1)) == N, log[-2000:]
        assert "ETOOBIG" not in log
        # a query finds the oldest and the newest
        st, body = http("GET", c.url("PA1") + "/v1/records?limit=1", headers=AUTH)
        assert body["records"][0]["call"] == record(0, t0)["call"]
        print("a blank server copied %d records in %.1f s (the server's own "
              "count: %s s)" % (N, took, m.group(2)))
    finally:
        c.stop_all()
