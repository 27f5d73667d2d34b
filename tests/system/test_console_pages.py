"""The web console's other pages (docs/console.md) in a real, headless
Chromium against a real cluster of two servers and a spare: Calls and
records (calls in progress, the FAILED_SOFTWARE records of calls held at
a crash, filters, pages, a CSV download read back from the disk), Desks
(sessions and licenses used against the limit), Configuration (history,
the diff with the admin token only), Services and Links. The shared
helpers and the browser come from test_console.py."""
import csv
import io
import json
import os
import urllib.parse

import pytest

from conftest import AUTH, PASSWORDS, TOKEN, Cluster, hashed, http, wait_for
from test_console import SERVERS, browser, shot, until  # noqa: F401 (fixture)

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

SVC = "exec /usr/bin/python3 %s" % os.path.join(
    os.path.dirname(__file__), "..", "..", "examples", "us-service.py")
CSV_HEADER = ["call", "route_point", "post", "server", "port", "origin", "caller",
              "start", "answer", "end", "duration_ms", "ended_by", "status",
              "closed_by", "config_version"]


def sections():
    return ("[user alice]\npassword = %s\n\n[user bob]\npassword = %s\n\n"
            "[channel all]\n\n"
            "[service recorder]\ncommand = %s\nworking_dir = .\n\n"
            % (hashed(PASSWORDS["alice"]), hashed(PASSWORDS["bob"]), SVC))


@pytest.fixture
def cluster(tmp_path, etcd1):
    c = Cluster(tmp_path, etcd1, SERVERS, failback="manual",
                extra=["licenses = 3", "license_policy = enforce"],
                sections=sections()).start()
    assert c.wait_state("PA1", "HOME") and c.wait_state("PA2", "HOME")
    yield c
    c.stop_all()


def rows(d, table, attr):
    """The data-ATTR of the rows of a table (None while it is redrawn)."""
    try:
        return [e.get_attribute("data-" + attr) for e in
                d.find_elements(By.CSS_SELECTOR, "#%s tbody tr" % table)]
    except StaleElementReferenceException:
        return None


def texts(d, table, cls):
    try:
        return [e.text for e in
                d.find_elements(By.CSS_SELECTOR, "#%s tbody td.%s" % (table, cls))]
    except StaleElementReferenceException:
        return None


def text(d, id_):
    try:
        return d.find_element(By.ID, id_).text
    except StaleElementReferenceException:
        return ""


def open_page(d, c, via, page):
    """The console of via, the admin token entered (the Control center's
    button), then the page."""
    d.get(c.url(via) + "/")
    until(d, lambda: text(d, "conn").startswith("Live through"))
    d.find_element(By.ID, "nav-control").click()
    assert text(d, "forget-token") == "Enter a token"
    d.find_element(By.ID, "forget-token").click()
    until(d, lambda: d.find_element(By.ID, "token-dialog").get_attribute("open")
          is not None)
    d.find_element(By.ID, "token-input").send_keys(TOKEN)
    d.find_element(By.ID, "token-ok").click()
    assert text(d, "forget-token") == "Change or forget the token"
    d.find_element(By.ID, "nav-" + page).click()


def filters(d, **kw):
    """Fill the records' filters (None leaves one as it is) and Show."""
    for k, id_ in (("since", "rec-since"), ("until", "rec-until"),
                   ("route_point", "rec-rp"), ("post", "rec-post")):
        if kw.get(k) is not None:
            e = d.find_element(By.ID, id_)
            e.clear()
            e.send_keys(kw[k])
    if kw.get("status") is not None:
        Select(d.find_element(By.ID, "rec-status")).select_by_value(kw["status"])
    if kw.get("limit") is not None:
        Select(d.find_element(By.ID, "rec-limit")).select_by_value(str(kw["limit"]))
    if kw.get("order") is not None:
        Select(d.find_element(By.ID, "rec-order")).select_by_value(kw["order"])
    d.find_element(By.ID, "rec-show").click()


def api_records(c, **q):
    st, body = http("GET", c.url("PA3") + "/v1/records?" + urllib.parse.urlencode(q),
                    headers=AUTH)
    assert st == 200, body
    return body


def test_console_records_page(cluster, browser, tmp_path):
    """Calls held on PA1 show as in progress; a SIGKILL of PA1's worker
    closes them, and the records page lists them FAILED_SOFTWARE; the
    filters narrow the list, the pages walk it without a gap or a
    repeat, a bad filter is said in words, and the CSV download holds
    the header and every record, quoted where it must be."""
    c, d = cluster, browser
    held = []
    for _ in range(2):
        st, call = c.call("PA1")
        assert st == 201, call
        held.append(call["call"])
    # twelve short calls on PA2, one with a caller that CSV must quote
    for i in range(12):
        caller = 'ann, "the boss"' if i == 0 else "c%d" % i
        st, call = http("POST", c.url("PA2") + "/v1/route-points/%s/calls?caller=%s"
                        % (c.rp["PA2"], urllib.parse.quote(caller)), headers=AUTH)
        assert st == 201, call
        assert c.end(call)[0] in (200, 204)
    assert wait_for(lambda: api_records(c, route_point=c.rp["PA2"])["count"] == 12, 10)

    open_page(d, c, "PA3", "calls")
    until(d, lambda: sorted(rows(d, "calls", "call") or []) == sorted(held), 5)
    assert set(texts(d, "calls", "server")) == {"PA1"}
    shot(d, tmp_path, "calls")

    c.kill_worker("PA1")
    assert c.wait_state("PA1", "COVERED", 10, via="PA3")
    # the calls are gone from the servers; their records are closed
    until(d, lambda: rows(d, "calls", "call") == [], 5)

    def failed_listed():
        filters(d, status="FAILED_SOFTWARE")
        return until(d, lambda: "Asking" not in text(d, "rec-msg"), 3) and \
            sorted(rows(d, "records", "call") or []) == sorted(held)
    assert wait_for(failed_listed, 10, step=0.3), text(d, "rec-msg")
    assert set(texts(d, "records", "status")) == {"FAILED_SOFTWARE"}
    assert set(texts(d, "records", "closed")) == {"PA2"}
    assert set(texts(d, "records", "ended")) == {"failover"}
    assert "Records 1 to 2" in text(d, "rec-msg")
    shot(d, tmp_path, "records", docs=True)

    # filters: a post, a status, a time
    filters(d, status="", post="PA2")
    until(d, lambda: len(rows(d, "records", "call") or []) == 12)
    assert set(texts(d, "records", "post")) == {"PA2"}
    filters(d, post="", status="NORMAL", since="2099-01-01")
    until(d, lambda: "No record matches" in text(d, "rec-msg"))
    assert rows(d, "records", "call") == []
    filters(d, since="yesterday")
    until(d, lambda: "could not be read" in text(d, "rec-msg"))
    msg = text(d, "rec-msg")
    assert "400" in msg and "since" in msg and "yesterday" in msg, msg
    assert "bad" in d.find_element(By.ID, "rec-msg").get_attribute("class")

    # pages of 10 through the 12 records of PA2, the newest first (the
    # page's default), then the oldest first
    want = [r["call"] for r in api_records(c, route_point=c.rp["PA2"])["records"]]
    newest = [r["call"] for r in api_records(
        c, route_point=c.rp["PA2"], order="newest")["records"]]
    assert len(want) == 12 and newest == want[::-1], (want, newest)
    filters(d, since="", status="", route_point=c.rp["PA2"], limit=10)
    until(d, lambda: rows(d, "records", "call") == newest[:10])
    assert "Records 1 to 10, more follow, the newest first" in text(d, "rec-msg")
    assert not d.find_element(By.ID, "rec-prev").is_enabled()
    d.find_element(By.ID, "rec-next").click()
    until(d, lambda: rows(d, "records", "call") == newest[10:])
    assert "Records 11 to 12," in text(d, "rec-msg")
    assert not d.find_element(By.ID, "rec-next").is_enabled()
    filters(d, order="oldest")
    until(d, lambda: rows(d, "records", "call") == want[:10])
    assert "the oldest first" in text(d, "rec-msg")
    d.find_element(By.ID, "rec-next").click()
    until(d, lambda: rows(d, "records", "call") == want[10:])
    d.find_element(By.ID, "rec-prev").click()
    until(d, lambda: rows(d, "records", "call") == want[:10])

    # the CSV of the filters, downloaded by the browser into a directory
    dl = tmp_path / "downloads"
    dl.mkdir()
    d.execute_cdp_cmd("Browser.setDownloadBehavior",
                      {"behavior": "allow", "downloadPath": str(dl)})
    d.find_element(By.ID, "rec-csv").click()
    path = dl / "records.csv"
    assert wait_for(lambda: path.exists() and "records.csv: 12 records" in
                    text(d, "rec-msg"), 10), (os.listdir(dl), text(d, "rec-msg"))
    raw = path.read_bytes().decode()
    assert raw.startswith(",".join(CSV_HEADER) + "\r\n")
    assert '"ann, ""the boss"""' in raw
    got = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert [r["call"] for r in got] == want
    api = {r["call"]: r for r in api_records(c, route_point=c.rp["PA2"])["records"]}
    for r in got:
        a = api[r["call"]]
        for k in CSV_HEADER:
            v = a.get(k)
            assert r[k] == ("" if v is None else str(v)), (k, r[k], v)
    assert got[0]["caller"] == 'ann, "the boss"'
    # the token went in a header, never into a URL the browser kept
    urls = d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert not any(TOKEN in u for u in urls + [d.current_url])

    # a phone-sized screen: the page itself never scrolls sideways (wide
    # tables scroll in their own box), and the keyboard reaches the pager
    d.set_window_size(400, 850)
    until(d, lambda: d.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"))
    d.execute_script("document.activeElement.blur()")
    reached = set()
    for _ in range(40):
        d.switch_to.active_element.send_keys(Keys.TAB)
        reached.add(d.switch_to.active_element.get_attribute("id"))
    want = {"nav-status", "nav-desks", "nav-links", "rec-since", "rec-status",
            "rec-show", "rec-csv", "rec-next"}
    assert want <= reached, want - reached
    shot(d, tmp_path, "records-phone", docs=True)


def test_console_desks_page(cluster, browser, tmp_path):
    """Desks logged in to PA1 and PA2 show with their user, desk, server
    and state, and the licenses in use against the limit with the
    policy; a logout shows within the page's refresh."""
    c, d = cluster, browser
    tokens = {}
    for user, desk, server in (("alice", "d1", "PA1"), ("bob", "d2", "PA2")):
        st, body = http("POST", c.url(server) + "/v1/desk/login", json.dumps(
            {"user": user, "password": PASSWORDS[user], "desk": desk,
             "version": "0.1.0"}).encode(), timeout=10)
        assert st == 200, body
        tokens[user] = body["token"]
    open_page(d, c, "PA3", "desks")
    until(d, lambda: sorted(rows(d, "desks", "desk") or []) == ["d1", "d2"], 8)
    row = {e: d.find_element(By.CSS_SELECTOR, '#desks tr[data-desk="d1"] td.%s' % e).text
           for e in ("state", "user", "server", "licensed")}
    assert row == {"state": "● online", "user": "alice", "server": "PA1",
                   "licensed": "held"}, row
    until(d, lambda: text(d, "lic").startswith("Licenses in use: 2 of 3 · policy enforce"))
    shot(d, tmp_path, "desks", docs=True)
    st, _ = http("POST", c.url("PA2") + "/v1/desk/logout", b"",
                 headers={"Authorization": "Bearer " + tokens["bob"]})
    assert st == 200
    until(d, lambda: rows(d, "desks", "desk") == ["d1"], 8)
    until(d, lambda: text(d, "lic").startswith("Licenses in use: 1 of 3"), 8)
    # the API: no session token ever goes out
    st, body = http("GET", c.url("PA1") + "/v1/desks", headers=AUTH)
    assert st == 200 and tokens["alice"] not in json.dumps(body)
    assert http("GET", c.url("PA1") + "/v1/desks")[0] == 401


def apply(c, text, base, comment):
    st, body = http("POST", c.url("PA1") + "/v1/config", json.dumps(
        {"text": text, "name": "edit.conf", "author": "tester",
         "comment": comment, "base": base}).encode(), headers=AUTH, timeout=10)
    assert st == 200, body


def diff_rows(d):
    try:
        return [(r.find_element(By.CSS_SELECTOR, "td.key").text,
                 r.find_element(By.CSS_SELECTOR, "td.from").text,
                 r.find_element(By.CSS_SELECTOR, "td.to").text)
                for r in d.find_elements(By.CSS_SELECTOR, "#cfg-diff tbody tr")]
    except StaleElementReferenceException:
        return None


def test_console_config_services_links(cluster, browser, tmp_path):
    """The configuration page says in words that it needs a token; with
    one it shows the version in effect and its history, live when a new
    version is applied, and what changed; with only the read token it
    says that the diff needs the admin token. Services show their state
    and pid from the stream; links every server's probes."""
    c, d = cluster, browser
    d.get(c.url("PA3") + "/")
    until(d, lambda: text(d, "conn").startswith("Live through"))
    d.find_element(By.ID, "nav-config").click()
    until(d, lambda: "could not be read" in text(d, "cfg-msg"), 5)
    assert "401" in text(d, "cfg-msg") and "token" in text(d, "cfg-msg")

    open_page(d, c, "PA3", "config")
    until(d, lambda: rows(d, "cfg-history", "version") == ["1"], 5)
    assert "Version in effect: 1." in text(d, "cfg-effect")
    assert not d.find_element(By.ID, "cfg-diff").is_displayed()

    # a second version, applied over HTTP: the page follows, with the diff
    v1 = open(c.config).read()
    v2 = v1.replace("failback_delay = 2", "failback_delay = 3", 1)
    apply(c, v2, 1, "slower failback")
    until(d, lambda: rows(d, "cfg-history", "version") == ["2", "1"], 8)
    assert "Version in effect: 2." in text(d, "cfg-effect")
    assert texts(d, "cfg-history", "comment")[0] == "slower failback"
    assert texts(d, "cfg-history", "author")[0].startswith("tester from ")
    until(d, lambda: diff_rows(d) == [("failback_delay", "2", "3")], 5)
    assert text(d, "cfg-diff-msg").startswith("From version 1 to 2:")
    shot(d, tmp_path, "config", docs=True)

    # a read token, set by a third version: it reads, it cannot compare
    read = "test-read-token-0123456789"
    apply(c, v2.replace("[cluster]\n", "[cluster]\nread_token = %s\n" % read, 1), 2,
          "a read token")
    until(d, lambda: rows(d, "cfg-history", "version") == ["3", "2", "1"], 8)
    until(d, lambda: diff_rows(d) == [("read_token", "(a secret)",
                                       "(a secret: changed)")], 5)
    d.find_element(By.ID, "nav-control").click()
    d.find_element(By.ID, "forget-token").click()
    d.find_element(By.ID, "token-input").send_keys(read)
    d.find_element(By.ID, "token-ok").click()
    d.find_element(By.ID, "nav-config").click()
    d.find_element(By.ID, "cfg-diff-show").click()
    until(d, lambda: "needs the admin token" in text(d, "cfg-diff-msg"), 5)
    assert "401" in text(d, "cfg-diff-msg")
    assert not d.find_element(By.ID, "cfg-diff").is_displayed()
    assert rows(d, "cfg-history", "version") == ["3", "2", "1"]

    # services, live from the stream: one per server
    d.find_element(By.ID, "nav-services").click()
    until(d, lambda: sorted(rows(d, "services", "server") or []) == ["PA1", "PA2", "PA3"]
          and set(texts(d, "services", "state") or []) == {"ready"}, 10)
    pids = texts(d, "services", "pid")
    assert all(p.isdigit() for p in pids), pids
    st, body = http("GET", c.url("PA3") + "/v1/services", headers=AUTH)
    assert st == 200 and sorted(pids) == sorted(str(s["pid"]) for s in body["services"])
    shot(d, tmp_path, "services", docs=True)

    # links: every server's, etcd and NATS up
    d.find_element(By.ID, "nav-links").click()

    def links_up():
        got = {}
        try:
            for r in d.find_elements(By.CSS_SELECTOR, "#links tbody tr"):
                got.setdefault(r.get_attribute("data-server"), {})[
                    r.get_attribute("data-link")] = \
                    r.find_element(By.CSS_SELECTOR, "td.state").text
        except StaleElementReferenceException:
            return False
        return all(got.get(n, {}).get("etcd member") == "▲ up" and
                   got[n].get("nats server") == "▲ up" for n in ("PA1", "PA2", "PA3"))
    until(d, links_up, 10)
    # the table is redrawn as the stream brings links: read it whole
    def latencies():
        lat = texts(d, "links", "latency")
        return lat and all(x.endswith(" ms") or x == "-" for x in lat)
    until(d, latencies, 5)
    shot(d, tmp_path, "links", docs=True)
