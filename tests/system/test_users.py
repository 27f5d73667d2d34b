"""Users without editing files: `understudy user add` with a password on
standard input stores a new configuration version with which that user
logs in at a desk; `user passwd` changes the password (the old one is
refused, the new one works); `user del` removes the user and takes the
name out of channels' allow lists, and is refused where a channel would
be left open to everyone; adding a user twice, changing or removing one
that does not exist and a bad name fail with clear messages and change
nothing; no version in the history holds a clear password."""
from http.server import BaseHTTPRequestHandler, HTTPServer
import json
import subprocess
import threading

from conftest import AUTH, CLI, PASSWORDS, Cluster, hashed, http, wait_for

PW1, PW2 = "alice-first-secret", "alice-second-secret"


def user(c, *args, password=None, check=None):
    out = subprocess.run([CLI, "user"] + list(args) + ["--config", c.config],
                         input=(password + "\n") if password else "",
                         capture_output=True, text=True, timeout=60)
    if check is not None:
        assert out.returncode == check, (out.stdout, out.stderr)
    return out


def history(c):
    out = subprocess.run([CLI, "config", "history", "--json", "--config", c.config],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def text_of(c, version=None):
    path = "/v1/config" + ("?version=%d" % version if version else "")
    st, body = http("GET", c.url("PA1") + path, headers=AUTH, timeout=10)
    assert st == 200, body
    return body["text"]


def login(c, name, password):
    return http("POST", c.url("PA1") + "/v1/desk/login",
                json.dumps({"user": name, "password": password, "desk": "d1",
                            "version": "0.1.0"}).encode(), timeout=10)[0]


def runs(c, version):
    """Wait until PA1 runs the version (users change live, within a
    second); a server that would run it only at its next start is
    restarted."""
    def now():
        st = c.status("PA1")
        return st and st["config"]["version"] == version
    if not wait_for(now, 3):
        c.srv["PA1"].stop()
        c.start("PA1")
    assert wait_for(now, 5), c.status("PA1")


def test_user_add_passwd_del(tmp_path, etcd1):
    sections = ("[user bob]\npassword = %s\n\n"
                "[user carol]\npassword = %s\ngroups = dispatch\n\n"
                "[channel ops]\nallow = bob, carol\n\n"
                "[channel solo]\nallow = carol\n" %
                (hashed(PASSWORDS["bob"]), hashed(PASSWORDS["carol"])))
    c = Cluster(tmp_path, etcd1, [{"name": "PA1", "ports": 1, "max": 2}],
                sections=sections).start()
    try:
        assert login(c, "alice", PW1) == 401

        # add: a new version, the user logs in with the password given
        out = user(c, "add", "alice", "--groups", "dispatch, ops", password=PW1, check=0)
        assert "stored as version 2" in out.stdout, out.stdout
        assert "user alice" in out.stdout, out.stdout
        text = text_of(c)
        assert "[user alice]\npassword = $argon2id$" in text, text
        assert "groups = dispatch, ops\n" in text, text
        runs(c, 2)
        assert login(c, "alice", PW1) == 200
        assert login(c, "bob", PASSWORDS["bob"]) == 200

        # add again: refused, nothing stored
        out = user(c, "add", "alice", password=PW1, check=1)
        assert "user alice exists already" in out.stderr, out.stderr
        assert history(c)["in_effect"] == 2

        # passwd: the old password is refused, the new one works
        out = user(c, "passwd", "alice", password=PW2, check=0)
        assert "stored as version 3" in out.stdout, out.stdout
        runs(c, 3)
        assert login(c, "alice", PW1) == 401
        assert login(c, "alice", PW2) == 200
        out = user(c, "passwd", "nobody", password=PW2, check=1)
        assert "user nobody does not exist" in out.stderr, out.stderr

        # del: the section goes, and bob leaves the channel's allow list
        out = user(c, "del", "bob", check=0)
        assert "stored as version 4" in out.stdout, out.stdout
        text = text_of(c)
        assert "[user bob]" not in text and "allow = carol\n" in text, text
        runs(c, 4)
        assert login(c, "bob", PASSWORDS["bob"]) == 401
        assert login(c, "alice", PW2) == 200

        # del of the only user a channel allows: refused, naming it
        out = user(c, "del", "carol", check=1)
        assert "channels ops (line" in out.stderr, out.stderr
        assert "solo (line" in out.stderr and "allow only carol" in out.stderr
        out = user(c, "del", "nobody", check=1)
        assert "user nobody does not exist" in out.stderr, out.stderr

        # a bad name: the checker's FILE:LINE diagnostics, nothing stored
        out = user(c, "add", "bad.name", password=PW1, check=1)
        assert "version 4 + user add bad.name:" in out.stderr, out.stderr
        assert ": error: [user bad.name]: 'bad.name' is not a name" in out.stderr
        assert "nothing changed" in out.stderr
        assert history(c)["in_effect"] == 4

        # the history: every change, and no clear password anywhere
        h = history(c)
        assert [v["version"] for v in h["versions"]] == [1, 2, 3, 4], h
        assert [v["comment"] for v in h["versions"][1:]] == \
            ["user add alice", "user passwd alice", "user del bob"], h
        for v in h["versions"]:
            t = text_of(c, v["version"])
            for pw in (PW1, PW2):
                assert pw not in t, (v["version"], t)
        assert PW1 not in json.dumps(h) and PW2 not in json.dumps(h)
        assert PW1 not in c.srv["PA1"].logtext()
    finally:
        c.stop_all()


class FakeConfigServer(BaseHTTPRequestHandler):
    """GET and POST /v1/config where someone else stores a version
    between each read and write, `races` times."""
    races = 1
    version, text, posts = 1, "", []

    def log_message(self, *args):
        pass

    def answer(self, code, body):
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        cls = type(self)
        self.answer(200, {"version": cls.version, "text": cls.text})

    def do_POST(self):
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls.posts.append(body)
        if body.get("base") != cls.version or cls.races > 0:
            cls.races -= 1
            cls.version += 1                  # someone else's apply won
            cls.text = cls.text.replace("groups = a", "groups = a, b")
            self.answer(409, {"error": "ECONFLICT", "message": "changed",
                              "in_effect": cls.version})
            return
        cls.version += 1
        cls.text = body["text"]
        self.answer(200, {"changes": [{"line": "[user zed] added"}], "restart": [],
                          "version": cls.version, "replaces": cls.version - 1,
                          "executed_by": "fake"})


def test_user_add_retries_once_on_a_conflict(tmp_path):
    """A version stored by someone else between the read and the write:
    the change is made again on it, once; a second conflict is an error."""
    text = ("[cluster]\nname = f\netcd = http://127.0.0.1:1\n\n"
            "[server PA1]\naddress = 127.0.0.1\napi_port = 1\nsip_port = 2\n"
            "route_point = 6000\nmedia_port_base = 5001\nmedia_ports = 1\n"
            "rtp_port_base = 30000\n\n[user amy]\npassword = %s\ngroups = a\n"
            % hashed(PASSWORDS["bob"]))
    srv = HTTPServer(("127.0.0.1", 0), FakeConfigServer)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    try:
        def run():
            return subprocess.run([CLI, "user", "add", "zed", "--server", url,
                                   "--token", "t"], input=PW1 + "\n",
                                  capture_output=True, text=True, timeout=60)
        FakeConfigServer.version, FakeConfigServer.text = 1, text
        FakeConfigServer.races, FakeConfigServer.posts = 1, []
        out = run()
        assert out.returncode == 0, out.stderr
        assert "stored as version 3" in out.stdout, out.stdout
        posts = FakeConfigServer.posts
        assert [p["base"] for p in posts] == [1, 2], posts
        # made again on the version that won: its change is kept
        assert "groups = a, b\n" in posts[1]["text"] and "[user zed]" in posts[1]["text"]
        assert all(PW1 not in json.dumps(p) for p in posts)

        FakeConfigServer.version, FakeConfigServer.text = 1, text
        FakeConfigServer.races, FakeConfigServer.posts = 2, []
        out = run()
        assert out.returncode == 1, out.stdout
        assert "ECONFLICT" in out.stderr and "run it again" in out.stderr, out.stderr
        assert len(FakeConfigServer.posts) == 2
    finally:
        srv.shutdown()
        srv.server_close()
