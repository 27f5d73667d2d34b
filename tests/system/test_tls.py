"""A cluster with TLS on every link, certificates made here with openssl:
the API serves HTTPS (tls_cert, tls_key), the servers reach etcd over
https with a client certificate (etcd --client-cert-auth), and desks
reach NATS over TLS with a token (nats-server tls {} and
authorization { token }). It proves that a client holding the CA gets
/health; that one without it, or with another CA, is refused by TLS
verification (urllib, curl, the CLI, understudy-desk); that plain HTTP
gets no answer; that understudyd refuses to start on a certificate that
does not go with its key or does not name the server's address, or on
a CA file it cannot read or parse, saying FILE:LINE; that a wrong admin
token is refused (401) over HTTPS;
that `understudy status --config` verifies with the config's tls_ca;
that etcd refuses a client without a certificate (etcdctl, and a server
whose config has none never becomes healthy, while the same server with
the certificate does); that the URLs a server hands out are https://;
that NATS refuses a client without TLS or without the token; and that
desks with the CA log in and exchange a channel message over TLS NATS,
with the CA and the token they got in the session."""
import json
import os
import socket
import ssl
import subprocess
import urllib.error

import pytest

from conftest import (CLI, PASSWORDS, TOKEN, Certs, Cluster, Desk, Etcd, Nats, Server,
                      hashed, http, wait_for)

NATS_TOKEN = "nats-desk-token-0123456789"


def sections():
    return ("[user alice]\npassword = %s\ngroups = dispatch\n\n"
            "[user bob]\npassword = %s\ngroups = dispatch\n\n"
            "[channel fire]\nallow = @dispatch\n"
            % tuple(hashed(PASSWORDS[u]) for u in ("alice", "bob")))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    certs = Certs(tmp / "certs")
    etcd = Etcd(1, str(tmp), certs=certs)
    nats = Nats(str(tmp), certs=certs, token=NATS_TOKEN)
    c = None
    try:
        c = Cluster(tmp, etcd, [
            {"name": "PA1", "ports": 1, "max": 2, "failover": ["PA2"]},
            {"name": "PA2", "ports": 1, "max": 2, "failover": ["PA1"], "desk_port": True},
            {"name": "SP", "spare": True, "max": 2}],
            certs=certs, sections=sections(),
            extra=["etcd_ca = " + certs.ca, "etcd_cert = " + certs.client,
                   "etcd_key = " + certs.client_key,
                   "messaging = " + nats.url, "messaging_ca = " + certs.ca,
                   "messaging_token = " + NATS_TOKEN, "session_timeout = 600"])
        c.start("PA1", "PA2")
        assert c.wait_owner("PA1", "PA1") and c.wait_owner("PA2", "PA2")
        yield certs, etcd, nats, c
    finally:
        if c:
            c.stop_all()
        nats.stop()
        etcd.stop()


def refused_by_tls(url, context=None):
    """The reason urllib could not get url, which must be a failed TLS
    verification."""
    with pytest.raises(urllib.error.URLError) as e:
        http("GET", url, context=context)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError), e.value
    return e.value.reason


def run(*args, timeout=20):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def test_api_answers_https_only_to_clients_that_trust_its_ca(env):
    certs, _, _, c = env
    url = c.url("PA1") + "/health"
    assert url.startswith("https://")
    st, body = http("GET", url, context=certs.context())
    assert st == 200 and body["server"] == "PA1", body
    refused_by_tls(url)                        # the system's CAs
    refused_by_tls(url, ssl.create_default_context(cafile=certs.other_ca))
    r = run("curl", "-sS", "--max-time", "5", url)
    assert r.returncode == 60, (r.returncode, r.stderr)   # peer not verified
    r = run("curl", "-sS", "--max-time", "5", "--cacert", certs.ca, url)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "ok", r
    # plain HTTP on the same port gets no HTTP answer at all
    with pytest.raises(OSError):
        http("GET", "http://127.0.0.1:%d/health" % c.spec["PA1"]["api"])


def test_desk_port_serves_desks_over_https(env):
    """A desk_port (8 KiB a connection) serves HTTPS like the API: a desk
    with the CA logs in, polls and resumes there; plain HTTP gets no
    answer."""
    certs, _, _, c = env
    url = "https://127.0.0.1:%d" % c.spec["PA2"]["desk"]
    ctx = certs.context()
    st, body = http("POST", url + "/v1/desk/login",
                    json.dumps({"user": "bob", "password": PASSWORDS["bob"],
                                "desk": "tls-d1", "version": "0.1.0"}).encode(),
                    timeout=10, context=ctx)
    assert st == 200, body
    tok = {"Authorization": "Bearer " + body["token"]}
    st, body = http("GET", url + "/v1/desk/events?after=0", headers=tok, context=ctx,
                    timeout=10)
    assert st == 200 and "last" in body, body
    st, body = http("POST", url + "/v1/desk/resume", b"", headers=tok, context=ctx,
                    timeout=10)
    assert st == 200, body
    refused_by_tls(url + "/health")
    with pytest.raises((OSError, urllib.error.URLError)):
        http("GET", url.replace("https", "http") + "/health", timeout=3)


def test_understudyd_refuses_to_start_on_a_bad_certificate(env, tmp_path):
    certs, _, _, c = env
    with open(c.config) as f:
        text = f.read()
    lines = text.splitlines()
    at = {l.split(" = ")[0]: i + 1 for i, l in enumerate(lines) if " = " in l}

    def start_with(**swap):
        conf = tmp_path / "bad.conf"
        conf.write_text("\n".join(
            "%s = %s" % (l.split(" = ")[0], swap[l.split(" = ")[0]])
            if l.split(" = ")[0] in swap else l for l in lines) + "\n")
        r = run(os.path.join(os.path.dirname(CLI), "understudyd"), "--config",
                str(conf), "--server", "PA1", "--state-dir", str(tmp_path / "st"))
        return r.returncode, r.stderr

    rc, err = start_with(tls_key=certs.client_key)
    assert rc == 2 and "bad.conf:%d: tls_key: " % at["tls_key"] in err, err
    assert "does not go with" in err, err
    rc, err = start_with(tls_cert=certs.client, tls_key=certs.client_key)
    assert rc == 2 and "does not name 127.0.0.1" in err, err
    rc, err = start_with(etcd_ca=str(tmp_path / "missing.crt"))
    assert rc == 2 and "bad.conf:%d: etcd_ca: cannot read" % at["etcd_ca"] in err, err
    rc, err = start_with(messaging_ca=certs.server_key)
    assert rc == 2 and "messaging_ca: " in err and "no PEM certificate" in err, err


def test_wrong_admin_token_is_refused_over_https(env):
    certs, _, _, c = env
    st, body = c.control("start", "PA2", token="wrong-token-0123456789")
    assert st == 401 and body["error"] == "EUNAUTHORIZED", (st, body)
    assert c.control("start", "PA2", token=None)[0] == 401
    assert c.control("start", "PA2", token=TOKEN)[0] in (200, 202)
    r = run(CLI, "start", "PA2", "--config", c.config, "--token",
            "wrong-token-0123456789")
    assert r.returncode == 1 and "EUNAUTHORIZED" in r.stderr, r
    r = run(CLI, "start", "PA2", "--config", c.config)
    assert r.returncode == 0 and "accepted" in r.stdout, r


def test_cli_verifies_with_the_configs_ca_or_its_own(env, tmp_path):
    certs, _, _, c = env
    r = run(CLI, "status", "--config", c.config)
    assert r.returncode == 0, r.stderr
    assert "PA1" in r.stdout and "PA2" in r.stdout
    # the same config without tls_ca: the system's CAs do not know ours
    with open(c.config) as f:
        text = f.read()
    bare = tmp_path / "no-ca.conf"
    bare.write_text("\n".join(l for l in text.splitlines() if not l.startswith("tls_ca")))
    r = run(CLI, "status", "--config", str(bare))
    assert r.returncode == 1 and "certificate" in r.stderr, r
    r = run(CLI, "status", "--config", str(bare), "--ca", certs.ca)
    assert r.returncode == 0, r.stderr
    base = c.url("PA1")
    r = run(CLI, "status", "--server", base)
    assert r.returncode == 1 and "certificate" in r.stderr, r
    r = run(CLI, "status", "--server", base, "--ca", certs.other_ca)
    assert r.returncode == 1 and "certificate" in r.stderr, r
    r = run(CLI, "records", "--server", base, "--ca", certs.ca, "--token", TOKEN)
    assert r.returncode == 0, r.stderr


def test_urls_handed_out_are_https(env):
    certs, _, _, c = env
    st, body = c.call("PA2", via="PA1", follow=False)
    assert st == 421 and body["location"] == c.url("PA2"), (st, body)
    st, body = http("POST", c.url("PA1") + "/v1/desk/login",
                    {"user": "alice", "password": PASSWORDS["alice"], "desk": "probe",
                     "version": "0.1.0"}, timeout=10, context=certs.context())
    assert st == 200, body
    # PA2's desks' port where it has one (https:// too)
    assert body["servers"] == [c.url("PA1"), "https://127.0.0.1:%d" % c.spec["PA2"]["desk"],
                               c.url("SP")], body["servers"]
    auth = body["messaging_auth"]
    assert auth["token"] == NATS_TOKEN
    with open(certs.ca) as f:
        assert auth["ca"] == f.read()
    assert "cert" not in auth and "key" not in auth
    http("POST", c.url("PA1") + "/v1/desk/logout", b"", context=certs.context(),
         headers={"Authorization": "Bearer " + body["token"]})


def test_etcd_refuses_a_client_without_a_certificate(env, tmp_path):
    certs, etcd, _, c = env
    ep = etcd.endpoints[0]
    assert ep.startswith("https://")
    base = ["etcdctl", "--endpoints", ep, "--dial-timeout", "2s",
            "--command-timeout", "3s", "--cacert", certs.ca]
    env_ = dict(os.environ, ETCDCTL_API="3")
    members = "/understudy/%s/members/" % c.cluster
    r = subprocess.run(base + ["get", members, "--prefix", "--keys-only"],
                       capture_output=True, text=True, timeout=20, env=env_)
    assert r.returncode != 0, r.stdout
    r = subprocess.run(base + ["--cert", certs.client, "--key", certs.client_key,
                               "get", members, "--prefix", "--keys-only"],
                       capture_output=True, text=True, timeout=20, env=env_)
    assert r.returncode == 0 and members + "PA1" in r.stdout, r
    # the spare, with a config that has no client certificate: etcd never
    # lets it in, so it never serves
    with open(c.config) as f:
        text = f.read()
    nocert = tmp_path / "no-cert.conf"
    nocert.write_text("\n".join(l for l in text.splitlines()
                                if not l.startswith(("etcd_cert", "etcd_key"))))
    sp = Server(str(nocert), "SP", str(tmp_path)).start()
    try:
        assert not wait_for(lambda: c.healthy("SP"), 5)
        assert etcd.get(members + "SP") is None
        log = sp.logtext()
        assert "certificate" in log or "alert" in log, log[-2000:]
    finally:
        sp.stop()
    # the same server with the certificate gets in
    c.start("SP")
    assert etcd.get(members + "SP") is not None
    c.terminate("SP")


def nats_hello(port, context=None, token=None):
    """The first line a NATS server answers to CONNECT and PING, after
    a TLS handshake with context where one is given."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        info = b""
        while not info.endswith(b"\r\n"):
            info += s.recv(1)
        assert info.startswith(b"INFO "), info
        assert json.loads(info[5:])["tls_required"], info
        if context:
            s = context.wrap_socket(s, server_hostname="127.0.0.1")
        hello = {"verbose": False, "pedantic": False, "tls_required": bool(context)}
        if token:
            hello["auth_token"] = token
        s.sendall(b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            try:
                b = s.recv(1)
            except OSError:             # reset, or a TLS alert
                break
            if not b:
                break
            line += b
        return line.decode().strip()
    finally:
        s.close()


def test_nats_wants_tls_and_the_token(env):
    certs, _, nats, _ = env
    # in plain text, the right token gets nothing: the server wanted a
    # TLS handshake and closes
    assert nats_hello(nats.port, token=NATS_TOKEN) == ""
    assert "Authorization Violation" in nats_hello(nats.port, certs.context())
    assert "Authorization Violation" in nats_hello(nats.port, certs.context(),
                                                   "wrong-token-0123456789")
    assert nats_hello(nats.port, certs.context(), NATS_TOKEN) == "PONG"


def test_desks_with_the_ca_talk_over_tls_nats(env, tmp_path):
    certs, _, _, c = env
    desks = []
    try:
        for name, user in (("a", "alice"), ("b", "bob")):
            d = Desk(str(tmp_path), name, [c.url("PA1")], ca=certs.ca)
            desks.append(d)
            r = d.cmd("login %s %s" % (user, PASSWORDS[user]))
            assert r["ok"], r
            assert d.wait(lambda e: e.get("kind") == "messaging" and
                          "up" in e["text"], 15), d.events
            assert d.cmd("join fire")["ok"]
        a, b = desks
        assert a.cmd("send fire over tls")["ok"]
        for d in desks:
            assert wait_for(lambda: [m["text"] for m in d.messages("fire")] ==
                            ["over tls"], 10), d.events
        assert b.messages("fire")[0]["from"] == "alice"
    finally:
        for d in desks:
            d.stop()


def test_a_desk_without_the_ca_cannot_log_in(env, tmp_path):
    certs, _, _, c = env
    for name, ca in (("noca", None), ("otherca", certs.other_ca)):
        d = Desk(str(tmp_path), name, [c.url("PA1")], ca=ca)
        try:
            r = d.cmd("login alice " + PASSWORDS["alice"])
            assert not r["ok"] and r["error"] == "EUNAUTHORIZED", r
            assert "certificate" in r["message"], r
            st = d.cmd("status")
            assert not st["online"] and not st["messaging"], st
        finally:
            d.stop()
