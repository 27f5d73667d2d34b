"""Closed records go through the records stream on NATS JetStream, never
through a growing prefix of etcd: the txn that ends a call leaves the
record in its post's outbox in etcd, the stream takes it (the call id is
its Msg-Id), the outbox entry goes, and every server copies the stream
into its database. While NATS is down the records wait in the outbox and
flow when it is back; a record its closer left half sent is finished by
the post's owner, once; a NATS server back without its store is not a
dead end, and the loss is said in the log."""
import json
import os
import re
import shutil

from conftest import AUTH, Cluster, b64, http, wait_for


def records(c, server, **q):
    st, body = http("GET", c.url(server) + "/v1/records?limit=1000", headers=AUTH)
    assert st == 200, body
    return body


def calls_of(c, server):
    return {r["call"] for r in records(c, server)["records"]}


def outbox(c):
    st, body = c.etcd.call("/v3/kv/range", {
        "key": b64("/understudy/%s/closed/" % c.cluster),
        "range_end": b64("/understudy/%s/closed0" % c.cluster)})
    assert st == 200, body
    return body.get("kvs", [])


def metric(c, server, name):
    text = http("GET", c.url(server) + "/metrics", headers=AUTH)[1]
    m = re.search(r"^%s (\d+)$" % name, text, re.M)
    return int(m.group(1)) if m else None


def stream(c):
    return c.nats.stream("USREC_" + c.cluster)


def place_and_end(c, n, via="PA1"):
    assert c.wait_state("PA1", "HOME", via=via)
    ids = []
    for _ in range(n):
        st, body = c.call("PA1", via=via)
        assert st == 201, body
        ids.append(body["call"])
        st, body = c.end(body)
        assert st == 200, body
    return ids


def test_records_go_through_the_stream(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "failover": ["PA2"]},
                                  {"name": "PA2"}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        ids = place_and_end(c, 5)
        # every server's copy, from the stream
        for s in ("PA1", "PA2"):
            assert wait_for(lambda: calls_of(c, s) >= set(ids), 10), records(c, s)
        st = stream(c)
        assert st and st["messages"] == 5, st
        # the outbox is empty again: etcd does not keep closed records
        assert wait_for(lambda: outbox(c) == [], 10), outbox(c)
        assert metric(c, "PA1", "understudy_records_waiting") == 0
        assert records(c, "PA2")["synced"] is True
        # one durable consumer per server
        names = {x["name"] for x in stream(c)["consumers"]}
        assert names == {"rec_PA1", "rec_PA2"}, names
    finally:
        c.stop_all()


def test_connections_to_etcd_are_kept(tmp_path, etcd1):
    """Calls taken, ended and their records streamed (60) reuse the server's
    connections to etcd: an outbox entry's delete, whose answer comes
    after the watch has shown the key gone, used to be cut off and its
    connection closed, one new connection to etcd per call."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        assert wait_for(lambda: metric(c, "PA1", "understudy_etcd_requests_total"), 10)
        reqs0 = metric(c, "PA1", "understudy_etcd_requests_total")
        conns0 = metric(c, "PA1", "understudy_etcd_connections_opened_total")
        ids = place_and_end(c, 60)
        assert wait_for(lambda: calls_of(c, "PA1") >= set(ids), 15)
        assert wait_for(lambda: outbox(c) == [], 10), outbox(c)
        reqs = metric(c, "PA1", "understudy_etcd_requests_total") - reqs0
        conns = metric(c, "PA1", "understudy_etcd_connections_opened_total") - conns0
        assert reqs >= 120, reqs                # a claim, an end, a delete each
        # (a request timed out closes its connection: some slack for load)
        assert conns <= 15, (conns, reqs)
    finally:
        c.stop_all()


def test_records_wait_while_nats_is_down(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}]).start()
    try:
        first = place_and_end(c, 2)
        assert wait_for(lambda: calls_of(c, "PA1") >= set(first), 10)
        c.nats.kill()
        ids = place_and_end(c, 4)
        # they wait in the outbox, counted, said in the log
        assert wait_for(lambda: len(outbox(c)) == 4, 10), outbox(c)
        assert wait_for(lambda: metric(c, "PA1", "understudy_records_waiting") == 4, 10)
        assert wait_for(lambda: "the records stream is unreachable" in
                        c.srv["PA1"].logtext(), 10)
        assert not calls_of(c, "PA1") & set(ids)
        c.nats.start()          # back, with its store
        assert wait_for(lambda: calls_of(c, "PA1") >= set(ids), 20), records(c, "PA1")
        assert wait_for(lambda: outbox(c) == [], 10), outbox(c)
        assert stream(c)["messages"] == 6
        assert len(records(c, "PA1")["records"]) == 6
    finally:
        c.stop_all()


def test_the_owner_finishes_what_a_dead_server_left(tmp_path, etcd1):
    """Two outbox entries a server that is gone left behind: one the
    stream never had, one it had (the server died between the ack and
    deleting the entry). The post's owner sends both; the stream and the
    copy hold each once."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}]).start()
    try:
        c.wait_owner("PA1", "PA1")
        place_and_end(c, 1)    # the stream exists
        assert wait_for(lambda: stream(c) and stream(c)["messages"] == 1, 10)
        t = 1700000000000
        recs = []
        for i in (1, 2):
            recs.append({"call": "PA1-left-%d" % i, "route_point": c.rp["PA1"],
                         "post": "PA1", "server": "PX", "port": 5001, "origin": "sip",
                         "caller": "sip:1@127.0.0.1", "start": t, "answer": t + 5,
                         "end": t + 60000, "duration_ms": 59995, "ended_by": "caller",
                         "status": "NORMAL", "closed_by": "PX"})
        c.nats.publish("us.%s.rec.PA1" % c.cluster, [json.dumps(recs[1])],
                       msg_ids=[recs[1]["call"]])
        for r in recs:
            c.etcd.put("/understudy/%s/closed/PA1/%s" % (c.cluster, r["call"]),
                       json.dumps(r))
        assert wait_for(lambda: outbox(c) == [], 15), outbox(c)
        assert wait_for(lambda: {"PA1-left-1", "PA1-left-2"} <= calls_of(c, "PA1"), 10)
        assert stream(c)["messages"] == 3, stream(c)
        got = [r["call"] for r in records(c, "PA1")["records"]]
        assert len(got) == len(set(got)) == 3, got
    finally:
        c.stop_all()


def test_a_nats_server_back_without_its_store(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}]).start()
    try:
        first = place_and_end(c, 2)
        assert wait_for(lambda: calls_of(c, "PA1") >= set(first), 10)
        created = stream(c)["created"]
        c.nats.kill()
        shutil.rmtree(c.nats.dir)    # a replaced disk
        c.nats.start()
        ids = place_and_end(c, 3)
        # the stream is made again and records flow
        assert wait_for(lambda: calls_of(c, "PA1") >= set(ids), 20), records(c, "PA1")
        st = stream(c)
        assert st["created"] != created and st["messages"] == 3, st
        assert wait_for(lambda: outbox(c) == [], 10)
        assert "the records stream was made anew" in c.srv["PA1"].logtext()
        # what the copy had is kept
        assert calls_of(c, "PA1") >= set(first)
    finally:
        c.stop_all()


def test_a_blank_disk_copies_from_the_start(tmp_path, etcd1):
    """A server whose durable consumer has acked everything, restarted on
    a blank state directory, copies the whole stream again."""
    c = Cluster(tmp_path, etcd1, [{"name": "PA1"}]).start()
    try:
        ids = place_and_end(c, 3)
        assert wait_for(lambda: calls_of(c, "PA1") >= set(ids), 10)
        c.srv["PA1"].stop()
        shutil.rmtree(c.srv["PA1"].state_dir)
        c.start("PA1")
        assert wait_for(lambda: calls_of(c, "PA1") >= set(ids), 15), records(c, "PA1")
        assert records(c, "PA1")["synced"] is True
    finally:
        c.stop_all()
