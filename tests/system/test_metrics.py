"""/metrics fits Prometheus: calls come and go and the page keeps the
same series (names and label sets): no call id, no time and no epoch in
a label, labels only from small bounded sets, times as values in
seconds, every counter ending in _total, every series typed."""
import re
import time

from conftest import AUTH, Cluster, http, wait_for

# every label of the page, and what bounds it: posts, ports, servers,
# the states of a post or port, call origins and termination statuses,
# route points and registrars of the config, log levels, the kinds of
# links and their targets (endpoints and peers of the config), services,
# the kinds of call transactions (claim, end) and of overload refusals
BOUNDED = {"post", "port", "state", "server", "owner", "origin", "status",
           "route_point", "registrar", "level", "link", "target", "service",
           "kind", "reason"}
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """({name: type}, [(name, {label: value}, value)])"""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split()
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, "not a sample: %r" % line
        labels = dict(LABEL.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def series(text):
    return {(n, tuple(sorted(l.items()))) for n, l, _ in parse(text)[1]}


def check_conventions(text, call_ids):
    types, samples = parse(text)
    for name, typ in types.items():
        assert re.match(r"^understudy_[a-z0-9_]+$", name), name
        assert (typ == "counter") == name.endswith("_total"), (name, typ)
        assert not re.search(r"_(ms|milliseconds|millis|usec|microseconds)$", name), name
        if re.search(r"(^|_)(since|time|timestamp|remaining|duration|age|latency)(_|$)", name):
            assert name.endswith(("_seconds", "_seconds_total")), name
    for name, labels, _ in samples:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in types and types.get(base) == "histogram":
            # a histogram's series: its buckets carry le, a bound of the code
            labels = {k: v for k, v in labels.items()
                      if not (k == "le" and name.endswith("_bucket"))}
        else:
            assert name in types, "%s has no TYPE" % name
        assert set(labels) <= BOUNDED, (name, labels)
        for k, v in labels.items():
            assert v not in call_ids, (name, labels)
            # neither a time (ms or s since the epoch) nor an epoch
            assert not re.match(r"^\d{4,}$", v) or k == "port", (name, labels)


def busy(text, on):
    return [l for n, l, v in parse(text)[1]
            if n == "understudy_port_busy" and v == 1 and l.get("state") == "busy"
            and l.get("server") == on]


def test_series_stay_the_same_call_after_call(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 2, "max": 4}])
    c.start()
    try:
        assert c.wait_owner("PA1", "PA1")

        def scrape():
            st, text = http("GET", c.url("PA1") + "/metrics", headers=AUTH)
            assert st == 200
            return text
        assert wait_for(lambda: not busy(scrape(), "PA1"), 5)
        idle = scrape()
        check_conventions(idle, set())
        ids, pages = [], []
        for _ in range(5):
            t0 = time.time()
            st, call = c.call("PA1")
            assert st == 201, call
            ids.append(call["call"])
            assert wait_for(lambda: busy(scrape(), "PA1"), 5)
            page = scrape()
            pages.append(page)
            check_conventions(page, set(ids))
            # when the call began is a value, in seconds since the epoch
            port = busy(page, "PA1")[0]["port"]
            since = [v for n, l, v in parse(page)[1]
                     if n == "understudy_port_busy_since_seconds" and l["port"] == port]
            assert since and t0 - 5 < since[0] < time.time() + 5, since
            assert call["call"] not in page
            assert c.end(call)[0] == 200
            assert wait_for(lambda: not busy(scrape(), "PA1"), 5)
        # one call after another: the same series every time
        assert all(series(p) == series(pages[0]) for p in pages)
        after = scrape()
        check_conventions(after, set(ids))
        assert series(after) == series(idle)
        # the counters counted them
        _, samples = parse(after)
        assert [v for n, l, v in samples if n == "understudy_calls_total" and
                l == {"origin": "http"}] == [5]
        # the post's epoch is a value, not a label
        epoch = c.post("PA1", via="PA1")["epoch"]
        assert [v for n, l, v in samples if n == "understudy_post_epoch"] == [epoch]
    finally:
        c.stop_all()
