"""The web console (docs/console.md) in a real, headless Chromium, and its
event stream GET /v1/events from Python, against a real cluster: two
servers and a spare on one etcd. The page is served by the daemon with a
strict CSP, follows the cluster live without a reload, goes on through
another server when its own dies, acts only with the admin token, and
shows every value from the cluster as text."""
import http.client
import json
import os
import shutil
import time

import pytest

from conftest import ROOT, TOKEN, Cluster, http as request, wait_for

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

DOCS_SHOTS = os.path.join(ROOT, "docs", "console")
SERVERS = [{"name": "PA1", "ports": 4, "max": 8, "failover": ["PA2"]},
           {"name": "PA2", "ports": 4, "max": 8, "failover": ["PA3"]},
           {"name": "PA3", "spare": True, "max": 8}]


def start_cluster(tmp_path, etcd, **kw):
    # manual failback: a covered post stays covered until the operator acts
    c = Cluster(tmp_path, etcd, SERVERS, failback="manual", **kw).start()
    assert c.wait_state("PA1", "HOME") and c.wait_state("PA2", "HOME")
    return c


@pytest.fixture
def cluster(tmp_path, etcd1):
    c = start_cluster(tmp_path, etcd1)
    yield c
    c.stop_all()


@pytest.fixture
def cluster_fast(tmp_path, etcd1_fast):
    """A 1 s lease: a whole server lost shows within 2 s."""
    c = start_cluster(tmp_path, etcd1_fast, ttl=1)
    yield c
    c.stop_all()


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
              "--window-size=1200,900", "--user-data-dir=" + str(tmp_path / "chrome")):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    yield d
    d.quit()


def shot(d, tmp_path, name, docs=False):
    """A screenshot in the test's directory; with US_DOCS_SHOTS=1 the
    ones docs/console.md shows are written there too (make test leaves
    the tree as it was)."""
    path = str(tmp_path / (name + ".png"))
    d.save_screenshot(path)
    if docs and os.environ.get("US_DOCS_SHOTS") == "1":
        os.makedirs(DOCS_SHOTS, exist_ok=True)
        shutil.copy(path, os.path.join(DOCS_SHOTS, name + ".png"))


def until(d, cond, timeout=5):
    return WebDriverWait(d, timeout, poll_frequency=0.02).until(lambda _: cond())


def cell(d, table, key, attr, cls):
    """The text of a cell; the tables are redrawn on every status event,
    so an element found may be gone a moment later: None, ask again."""
    try:
        els = d.find_elements(By.CSS_SELECTOR,
                              '#%s tr[data-%s="%s"] td.%s' % (table, attr, key, cls))
        return els[0].text if els else None
    except StaleElementReferenceException:
        return None


def click(d, css):
    """Click what css finds, again if it was redrawn meanwhile."""
    def once():
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True
        except StaleElementReferenceException:
            return False
    until(d, once)


def enabled(d, css):
    try:
        return d.find_element(By.CSS_SELECTOR, css).is_enabled()
    except StaleElementReferenceException:
        return False


def open_console(d, c, via):
    d.get(c.url(via) + "/")
    until(d, lambda: cell(d, "posts", "PA1", "post", "state") is not None)


def give_token(d, token):
    """Answer the token dialog the page opens."""
    until(d, lambda: d.find_element(By.ID, "token-dialog").get_attribute("open") is not None)
    d.find_element(By.ID, "token-input").send_keys(token)
    d.find_element(By.ID, "token-ok").click()


def control(d, action, name):
    d.find_element(By.ID, "nav-control").click()
    click(d, '#control tr[data-server="%s"] button.act-%s' % (name, action))
    until(d, lambda: d.find_element(By.ID, "confirm").get_attribute("open") is not None)
    cmd = d.find_element(By.ID, "confirm-cmd").text
    assert cmd == "understudy %s %s" % (action, name)
    d.find_element(By.ID, "confirm-yes").click()


def test_console_headers_and_files(cluster):
    """/ and /console/* come from the daemon with a strict CSP that lets
    the page reach every server's API, the right types and nosniff."""
    c = cluster
    st, body = request("GET", c.url("PA1") + "/")
    assert st == 200 and "<script src=\"/console/console.js\"" in body
    for path, ctype in (("/", "text/html"), ("/console/console.js", "text/javascript"),
                        ("/console/console.css", "text/css")):
        r = http.client.HTTPConnection("127.0.0.1", c.spec["PA1"]["api"], timeout=2)
        r.request("GET", path)
        resp = r.getresponse()
        data = resp.read()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith(ctype)
        assert len(data) < 300 * 1024
        csp = resp.getheader("Content-Security-Policy")
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp
        for n in ("PA1", "PA2", "PA3"):
            assert c.url(n) in csp.split("connect-src")[1].split(";")[0]
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        assert resp.getheader("Referrer-Policy") == "no-referrer"
        r.close()
    assert request("GET", c.url("PA1") + "/console/nope.js")[0] == 404
    # another server's page may read this one (CORS), a stranger may not
    for origin, ok in ((c.url("PA2"), True), ("http://evil.example", False)):
        r = http.client.HTTPConnection("127.0.0.1", c.spec["PA1"]["api"], timeout=2)
        r.request("OPTIONS", "/v1/events", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        resp = r.getresponse()
        resp.read()
        assert (resp.status == 204) == ok
        assert (resp.getheader("Access-Control-Allow-Origin") == origin) == ok
        r.close()


def read_events(resp, n, timeout=5):
    """The next n events of an open text/event-stream: [(id, type, data)]."""
    out, cur = [], {}
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        line = resp.fp.readline().decode()
        if line in ("\n", "\r\n"):
            if "data" in cur:
                out.append((int(cur["id"]), cur["event"], json.loads(cur["data"])))
            cur = {}
        elif line and not line.startswith(":"):
            k, _, v = line.rstrip("\r\n").partition(": ")
            cur[k] = v
    return out


def open_stream(c, name, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", c.spec[name]["api"], timeout=5)
    conn.request("GET", "/v1/events", headers=headers or {})
    return conn, conn.getresponse()


def test_console_events_stream(cluster):
    """GET /v1/events: a full status first, then a status event on each
    change with growing ids, and the failover as a timeline event; a
    reconnect with Last-Event-ID starts with the full status; past 32
    streams a server answers 503 EBUSY."""
    c = cluster
    conn, resp = open_stream(c, "PA2")
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    first = read_events(resp, 1)
    assert first and first[0][1] == "status" and first[0][2]["server"] == "PA2"
    assert {p["name"] for p in first[0][2]["posts"]} == {"PA1", "PA2"}
    c.kill_worker("PA1")
    seen = [first[0]]
    assert wait_for(lambda: seen.extend(read_events(resp, 1, 1)) or any(
        next(p for p in e[2]["posts"] if p["name"] == "PA1")["state"] == "COVERED"
        for e in seen if e[1] == "status"), 15)
    # the history's new event, pushed as the cover writes it
    assert wait_for(lambda: seen.extend(read_events(resp, 1, 1)) or any(
        e[1] == "timeline" and e[2]["kind"] == "failover" and e[2]["post"] == "PA1"
        and e[2]["to"] == "PA2" and e[2]["summary"].startswith("failover ")
        for e in seen), 15)
    ids = [e[0] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    conn.close()
    conn, resp = open_stream(c, "PA2", {"Last-Event-ID": str(ids[-1])})
    again = read_events(resp, 1)
    assert again and again[0][0] > ids[-1] and again[0][1] == "status"
    assert "servers" in again[0][2] and "posts" in again[0][2]
    conn.close()
    # the cap: 32 streams per server, then 503 EBUSY
    open_ = [open_stream(c, "PA3") for _ in range(32)]
    assert all(r.status == 200 for _, r in open_)
    conn, resp = open_stream(c, "PA3")
    assert resp.status == 503
    assert json.loads(resp.read())["error"] == "EBUSY"
    conn.close()
    for cn, _ in open_:
        cn.close()
    # the streams closed by their readers free their places
    def room():
        cn, r = open_stream(c, "PA3")
        ok = r.status == 200
        cn.close()
        return ok
    assert wait_for(room, 20, step=0.2)


def test_console_status_live(cluster_fast, browser, tmp_path):
    """The status page lists every server and port; killing a post
    owner's worker shows its post COVERED by the right cover within 2 s,
    and a whole server lost shows ▼ and its post covered within 2 s,
    all without a reload."""
    c, d = cluster_fast, browser
    open_console(d, c, "PA3")
    until(d, lambda: cell(d, "posts", "PA1", "post", "state") == "HOME")
    for n in ("PA1", "PA2", "PA3"):
        until(d, lambda: cell(d, "servers", n, "server", "state") == "▲ up")
    until(d, lambda: cell(d, "servers", "PA3", "server", "rp") == "(spare)")
    ports = d.execute_script("""return [...document.querySelectorAll(
        '#posts tr[data-post="PA1"] .port')].map(e => [e.dataset.port, e.textContent])""")
    assert ports == [["5001", "○"], ["5002", "○"], ["5003", "○"], ["5004", "○"]]
    until(d, lambda: cell(d, "servers", "PA1", "server", "failover") == "PA2")
    until(d, lambda: cell(d, "servers", "PA1", "server", "capacity") ==
          "0 / 8 (own post: 4)")
    assert "Live through" in d.find_element(By.ID, "conn").text
    st, call = c.call("PA1")                     # one port busy
    assert st == 201, call
    until(d, lambda: cell(d, "posts", "PA1", "post", "portcell") == "○●○○ 1 of 4 busy"
          or cell(d, "posts", "PA1", "post", "portcell") == "●○○○ 1 of 4 busy")
    shot(d, tmp_path, "status", docs=True)
    d.execute_script("window.mark = 1")
    # the worker dies: its master restarts it at once, the post stays
    # with its cover (manual failback)
    t0 = time.monotonic()
    c.kill_worker("PA1")
    until(d, lambda: cell(d, "posts", "PA1", "post", "state") == "COVERED" and
          cell(d, "posts", "PA1", "post", "owner") == "PA2", 2)
    took = time.monotonic() - t0
    assert took < 2, took
    until(d, lambda: cell(d, "servers", "PA2", "server", "covers") == "PA1")
    # a whole server gone (master and worker): down until it comes back
    t0 = time.monotonic()
    c.kill("PA2")
    until(d, lambda: cell(d, "servers", "PA2", "server", "state") == "▼ down" and
          cell(d, "posts", "PA2", "post", "state") == "COVERED" and
          cell(d, "posts", "PA2", "post", "owner") == "PA3", 2)
    took = time.monotonic() - t0
    assert took < 2, took
    assert d.execute_script("return window.mark") == 1    # no reload
    shot(d, tmp_path, "covered", docs=True)
    assert c.post("PA2", via="PA3")["owner"] == "PA3"


def test_console_reconnects_through_another_server(cluster, browser, tmp_path):
    """A page loaded from PA1 says so in words when PA1 dies and goes on
    through the next server, without a reload."""
    c, d = cluster, browser
    open_console(d, c, "PA1")
    d.execute_script("""
        window.mark = 1;
        window.conn = [];
        const c = document.getElementById('conn');
        new MutationObserver(() => window.conn.push(c.textContent))
          .observe(c, {childList: true, characterData: true, subtree: true});""")
    c.kill_worker("PA1")
    pa2 = c.url("PA2")
    until(d, lambda: d.find_element(By.ID, "conn").text == "Live through %s." % pa2 and
          cell(d, "posts", "PA1", "post", "state") == "COVERED", 5)
    said = d.execute_script("return window.conn")
    assert any(t.startswith("Connection lost") and ("through " + pa2) in t
               for t in said), said
    assert d.execute_script("return window.mark") == 1    # no reload
    shot(d, tmp_path, "reconnected")


def test_console_stop_and_failback(cluster, browser, tmp_path):
    """Stop in the control center moves the post and the page shows it;
    start and failback bring it home. The admin token is asked once and
    kept for the session."""
    c, d = cluster, browser
    open_console(d, c, "PA3")
    control(d, "stop", "PA1")
    give_token(d, TOKEN)
    until(d, lambda: "accepted" in d.find_element(By.ID, "control-msg").text, 5)
    until(d, lambda: cell(d, "control", "PA1", "server", "state") == "■ stopped")
    d.find_element(By.ID, "nav-status").click()
    until(d, lambda: cell(d, "posts", "PA1", "post", "state") == "COVERED" and
          cell(d, "posts", "PA1", "post", "owner") == "PA2", 5)
    shot(d, tmp_path, "stopped")
    assert c.post("PA1")["owner"] == "PA2"
    control(d, "start", "PA1")                   # no token asked again
    until(d, lambda: "start PA1: accepted" in d.find_element(By.ID, "control-msg").text, 5)
    until(d, lambda: cell(d, "control", "PA1", "server", "state") == "▲ up", 5)
    until(d, lambda: enabled(d, '#control tr[data-server="PA1"] button.act-failback'), 5)
    control(d, "failback", "PA1")
    until(d, lambda: "failback PA1: accepted" in d.find_element(By.ID, "control-msg").text, 5)
    d.find_element(By.ID, "nav-status").click()
    until(d, lambda: cell(d, "posts", "PA1", "post", "state") == "HOME" and
          cell(d, "posts", "PA1", "post", "owner") == "PA1", 10)
    assert d.execute_script("return sessionStorage.length") == 1
    assert "token" not in d.current_url and not d.get_cookies()
    d.find_element(By.ID, "nav-control").click()
    until(d, lambda: cell(d, "control", "PA1", "server", "post") == "HOME on PA1")
    shot(d, tmp_path, "control", docs=True)


def test_console_without_token_cannot_act(cluster, browser, tmp_path):
    """A page without the admin token gets 401 and says so in words;
    nothing moves."""
    c, d = cluster, browser
    open_console(d, c, "PA2")
    control(d, "stop", "PA1")
    give_token(d, "not-the-token")
    until(d, lambda: "401" in d.find_element(By.ID, "control-msg").text, 5)
    msg = d.find_element(By.ID, "control-msg").text
    assert "refused" in msg and "admin token" in msg
    shot(d, tmp_path, "unauthorized")
    assert c.post("PA1")["state"] == "HOME"
    assert d.execute_script("return sessionStorage.length") == 0


def test_console_cluster_text_is_not_html(cluster, browser, tmp_path):
    """A status whose texts hold HTML (a reason is free text) is shown as
    that text: no element is made from it and no script runs."""
    c, d = cluster, browser
    open_console(d, c, "PA2")
    evil = '<img src=x onerror="window.pwned=1">'
    d.execute_script("""
        window.understudyConsole.pause();
        const st = JSON.parse(arguments[0]);
        window.understudyConsole.render(st);""", json.dumps({
        "cluster": evil, "server": "PA2", "time": "t",
        "servers": [{"name": evil, "state": "down", "route_points": [evil],
                     "ports_in_use": 0, "max_media_ports": 8, "media_ports": 4,
                     "failover": [evil], "covers": []}],
        "posts": [{"name": "X", "home": evil, "state": "UNSERVED", "owner": None,
                   "cover": evil, "reason": evil, "media_ports": 1, "ports_in_use": 0,
                   "ports": [{"number": 1, "state": "idle"}]}]}))
    assert cell(d, "posts", "X", "post", "reason") == evil
    assert d.find_element(By.ID, "cluster").text == evil
    assert not d.find_elements(By.CSS_SELECTOR, "main img, header img")
    assert d.execute_script("return window.pwned === undefined")
    shot(d, tmp_path, "text-not-html")


def test_console_pauses_when_hidden(cluster, browser, tmp_path):
    """A hidden tab closes its stream and says so; shown again, it
    reconnects and catches up with what changed meanwhile."""
    c, d = cluster, browser
    open_console(d, c, "PA3")
    until(d, lambda: d.find_element(By.ID, "conn").text.startswith("Live through"))
    # headless Chromium never hides a tab: make the page believe it is
    d.execute_script("""
        window.vis = 'hidden';
        Object.defineProperty(document, 'visibilityState',
                              {configurable: true, get: () => window.vis});
        document.dispatchEvent(new Event('visibilitychange'));""")
    until(d, lambda: d.find_element(By.ID, "conn").text ==
          "Paused while this tab is hidden.")
    c.kill_worker("PA1")
    assert c.wait_state("PA1", "COVERED", 5, via="PA3")
    assert cell(d, "posts", "PA1", "post", "state") == "HOME"    # not following
    d.execute_script("""window.vis = 'visible';
        document.dispatchEvent(new Event('visibilitychange'));""")
    until(d, lambda: cell(d, "posts", "PA1", "post", "state") == "COVERED", 3)
    assert d.find_element(By.ID, "conn").text.startswith("Live through")
