"""License slots never leak and are never counted twice: a new login on
the same desk (here or on another server) takes the desk's slot over, a
restarted server claims slots again for the sessions it restored, and a
random run of logins, re-logins, logouts, abandoned desks (they expire)
and SIGKILLs of servers against two servers with license_policy =
enforce keeps, after every step, the slots in etcd equal to the live
sessions, and never refuses a login within the limit.

US_LICENSE_STEPS sets the length of the random run (make soak runs
1,000), US_SEED replays one."""
import json
import os
import random
import re
import time

from conftest import PASSWORDS, Cluster, b64, http, unb64, wait_for
from test_desk_api import call, login, make, sections

LIMIT = 3
SERVERS = ("PA1", "PA3")


def slots(c):
    """[(n, server, user, desk, lease)] of the slot keys in etcd."""
    st, r = c.etcd.call("/v3/kv/range", {
        "key": b64("/understudy/%s/licenses/" % c.cluster),
        "range_end": b64("/understudy/%s/licenses0" % c.cluster)})
    assert st == 200, r
    out = []
    for kv in r.get("kvs", []):
        v = json.loads(unb64(kv["value"]))
        out.append((unb64(kv["key"]).rsplit("/", 1)[1], v["server"], v["user"],
                    v["desk"], kv.get("lease", "0")))
    return out


def counts(c, name):
    """(live sessions, slots held) as the server's /metrics says."""
    text = http("GET", c.url(name) + "/metrics", timeout=2)[1]
    s = re.search(r"^understudy_desk_sessions (\d+)$", text, re.M)
    h = re.search(r"^understudy_desk_licenses_held (\d+)$", text, re.M)
    return int(s.group(1)), int(h.group(1))


def consistent(c, why):
    """The slots in etcd equal the live sessions of every server."""
    have = slots(c)
    desks = [(s[2], s[3]) for s in have]
    if len(desks) != len(set(desks)):
        why.append("two slots for one desk: %s" % have)
        return False
    for name in SERVERS:
        try:
            live, held = counts(c, name)
        except OSError as e:
            why.append("%s: %s" % (name, e))
            return False
        mine = [s for s in have if s[1] == name]
        if not (live == held == len(mine)):
            why[:] = ["%s: %d live sessions, %d slots held, %d slots in etcd: %s"
                      % (name, live, held, len(mine), have)]
            return False
    return True


def wait_consistent(c, timeout=10):
    why = []
    ok = wait_for(lambda: consistent(c, why), timeout, step=0.05)
    assert ok, "; ".join(why[-1:])


def live_total(c):
    return sum(counts(c, n)[0] for n in SERVERS)


def test_relogin_on_the_same_desk_keeps_its_license(tmp_path, etcd1):
    c = make(tmp_path, etcd1, extra=["licenses = 1", "license_policy = enforce"],
             servers=SERVERS)
    try:
        first = login(c, "PA1", "alice")
        assert first[0] == 200
        # a restarted desk program logs in again: the desk's slot is its
        again = login(c, "PA1", "alice")
        assert again[0] == 200, again
        assert call(c, "PA1", "GET", "/v1/desk/channels", first[1]["token"])[0] == 401
        wait_consistent(c)
        # and again on the other server: the old session ends there
        there = login(c, "PA3", "alice")
        assert there[0] == 200, there
        wait_consistent(c)
        st, body = call(c, "PA1", "POST", "/v1/desk/resume", again[1]["token"])
        assert st == 401 and body["error"] == "EEXPIRED"
        assert "replaced by a new login on this desk at PA3" in body["message"]
        # another desk is over the limit; a logout frees the slot for it
        assert login(c, "PA1", "bob")[0] == 403
        assert call(c, "PA3", "POST", "/v1/desk/logout", there[1]["token"])[0] == 200
        assert login(c, "PA1", "bob")[0] == 200
        wait_consistent(c)
    finally:
        c.stop_all()


def test_a_restarted_server_claims_slots_for_its_restored_sessions(tmp_path, etcd1):
    c = make(tmp_path, etcd1, extra=["licenses = 2", "license_policy = enforce"],
             servers=SERVERS)
    try:
        tok = login(c, "PA1", "alice")[1]["token"]
        assert login(c, "PA1", "bob")[0] == 200
        c.kill("PA1")       # the slots go when its lease expires
        assert wait_for(lambda: slots(c) == [], 10)
        c.start("PA1")
        # without any desk coming back, its two sessions hold slots again
        assert wait_for(lambda: len(slots(c)) == 2, 10), slots(c)
        wait_consistent(c)
        st, body = login(c, "PA3", "carol")
        assert st == 403 and body["error"] == "ENOLICENSE"
        assert call(c, "PA1", "POST", "/v1/desk/resume", tok)[0] == 200
    finally:
        c.stop_all()


def test_random_steps_keep_slots_equal_to_sessions(tmp_path, etcd1):
    seed = int(os.environ.get("US_SEED", random.randrange(1 << 32)))
    steps = int(os.environ.get("US_LICENSE_STEPS", "120"))
    print("seed %d, %d steps (replay: US_SEED=%d)" % (seed, steps, seed))
    rng = random.Random(seed)
    c = make(tmp_path, etcd1, extra=["licenses = %d" % LIMIT,
                                     "license_policy = enforce",
                                     "session_timeout = 10"], servers=SERVERS)
    kept = {}       # (user, desk) -> [server, token, last touched]
    tally = {}
    try:

        def touch(step):
            """Keep the kept sessions alive (a session may idle 10 s)."""
            for key, k in list(kept.items()):
                if time.monotonic() - k[2] > 2:
                    st, body = call(c, k[0], "GET", "/v1/desk/channels", k[1])
                    assert st == 200, (step, key, body)
                    k[2] = time.monotonic()

        for step in range(steps):
            t0 = time.monotonic()
            touch(step)
            op = rng.choice(["login"] * 4 + ["relogin"] * 3 + ["logout"] * 2 +
                            ["abandon", "resume", "kill"])
            if not kept and op not in ("login", "kill"):
                op = "login"
            tally[op] = tally.get(op, 0) + 1
            server = rng.choice(SERVERS)
            if op in ("login", "relogin"):
                if op == "login":
                    key = (rng.choice(sorted(PASSWORDS)), "d%d" % rng.randrange(4))
                else:
                    key = rng.choice(sorted(kept))
                within = live_total(c) < LIMIT or key in kept
                st, body = login(c, server, key[0], desk=key[1])
                if within:
                    assert st == 200, ("step %d: a login within the limit "
                                       "refused" % step, st, body)
                else:
                    assert st in (200, 403), (step, st, body)
                if st == 200:
                    kept[key] = [server, body["token"], time.monotonic()]
            elif op == "logout":
                key = rng.choice(sorted(kept))
                st, body = call(c, kept[key][0], "POST", "/v1/desk/logout",
                                kept[key][1])
                assert st == 200, (step, body)
                del kept[key]
            elif op == "abandon":       # the desk never comes back
                del kept[rng.choice(sorted(kept))]
            elif op == "resume":
                key = rng.choice(sorted(kept))
                st, body = call(c, kept[key][0], "POST", "/v1/desk/resume",
                                kept[key][1])
                assert st == 200, (step, body)
                kept[key][2] = time.monotonic()
            else:                       # SIGKILL of a server, and back
                c.kill(server)
                c.start(server)
                for key, k in list(kept.items()):
                    if k[0] != server:
                        continue
                    # back with the slot, or ended for want of one
                    st, body = call(c, server, "POST", "/v1/desk/resume", k[1])
                    if st == 200:
                        k[2] = time.monotonic()
                    else:
                        assert body["error"] == "EEXPIRED" and \
                            "no license free" in body["message"], (step, body)
                        del kept[key]
            wait_consistent(c)
        # the abandoned desks' sessions expire; the rest hold their slots
        def settled():
            touch(-1)
            return live_total(c) == len(kept)
        assert wait_for(settled, 25, step=0.2), (live_total(c), kept, slots(c))
        wait_consistent(c)
        print("steps by kind:", tally)
    finally:
        c.stop_all()


def test_logins_and_the_reconciler_page_through_many_slots(tmp_path, etcd1):
    """Past about 30,000 slot keys one answer for the whole prefix is over
    the etcd client's 8 MiB cap: logins (a free slot, the desk's own
    slot) and the reconciler read the slots in pages, and no server logs
    ETOOBIG or fails to read them."""
    ghosts, desk = 32000, "x" * 64
    spec = [{"name": n, "ports": 1, "max": 2} for n in SERVERS]
    # a lease of 4 s (hang limit 1.75 s): the snapshot of 32,000 slots
    # takes about 80 ms on the loop in a normal build, several times that
    # under ASan on two shared cores
    c = Cluster(tmp_path, etcd1, spec, ttl=4,
                extra=["licenses = %d" % (ghosts + 2), "license_policy = enforce"],
                sections=sections())
    pre = "/understudy/%s/licenses/" % c.cluster
    takeover = ghosts - 5       # carol's desk dC holds it, on a gone server

    def write(first, last):
        """Slots of a server that is gone but kept them (no lease): the
        test's own writes, 128 to a txn."""
        for at in range(first, last, 128):
            ops = []
            for n in range(at, min(at + 128, last)):
                v = {"server": "GONE", "user": "u%05d" % n, "desk": desk}
                if n == takeover:
                    v = {"server": "GONE", "user": "carol", "desk": "dC"}
                ops.append({"request_put": {"key": b64(pre + str(n)),
                                            "value": b64(json.dumps(v))}})
            st, r = etcd1.call("/v3/kv/txn", {"success": ops}, timeout=10)
            assert st == 200, r
    try:
        # most before the servers start (their watches read them at
        # once), the last ones while they run (the watches bring them)
        write(0, ghosts - 2000)
        c.start()
        write(ghosts - 2000, ghosts)
        st, r = etcd1.call("/v3/kv/range", {"key": b64(pre),
                                            "range_end": b64(pre[:-1] + "0")},
                           timeout=20)
        size = len(json.dumps(r))
        print("one answer for all %d slots: %d bytes" % (ghosts, size))
        assert st == 200 and size > 8 * 1024 * 1024, size
        took = []

        def timed(*args, **kw):
            t0 = time.monotonic()
            r = login(*args, **kw)
            took.append("%.0f" % ((time.monotonic() - t0) * 1000))
            return r
        a = timed(c, "PA1", "alice")
        assert a[0] == 200, a
        b = timed(c, "PA3", "bob")
        assert b[0] == 200, b
        st, body = timed(c, "PA1", "carol", desk="d2")
        print("logins over %d slots took %s ms (a password check is ~60 ms)"
              % (ghosts, ", ".join(took)))
        assert st == 403 and body["error"] == "ENOLICENSE", (st, body)
        # a desk whose slot is deep in the prefix takes it over
        assert login(c, "PA1", "carol", desk="dC")[0] == 200
        v = json.loads(etcd1.get(pre + str(takeover)))
        assert v == {"server": "PA1", "user": "carol", "desk": "dC"}, v
        # a re-login of alice's desk elsewhere keeps her slot
        held = {k: s for k, s in mine(etcd1, pre).items() if s[1] == "alice"}
        st, body = login(c, "PA3", "alice")
        assert st == 200, body
        again_tok = body["token"]
        again = {k: s for k, s in mine(etcd1, pre).items() if s[1] == "alice"}
        assert list(again) == list(held) and again[list(held)[0]][0] == "PA3", \
            (held, again)
        # a logout frees a slot that a login then finds
        assert call(c, "PA3", "POST", "/v1/desk/logout", b[1]["token"])[0] == 200
        assert login(c, "PA1", "carol", desk="d2")[0] == 200

        def settled():
            have = mine(etcd1, pre)
            return all(counts(c, n) == (len([s for s in have.values() if s[0] == n]),) * 2
                       for n in SERVERS)
        # a restarted server reads all the slots again (its watch's reset)
        # and accounts for its sessions
        c.kill("PA3")
        c.start("PA3")
        assert call(c, "PA3", "POST", "/v1/desk/resume", again_tok)[0] == 200
        # the reconciler has read them all since, twice, on both servers
        mark = {n: checks(c, n) for n in SERVERS}
        assert wait_for(lambda: all(checks(c, n) >= mark[n] + 2 for n in SERVERS), 20), \
            ({n: checks(c, n) for n in SERVERS}, mark)
        assert wait_for(settled, 10), (mine(etcd1, pre), [counts(c, n) for n in SERVERS])
        for n in SERVERS:
            bad = [l for l in c.srv[n].logtext().splitlines()
                   if "ETOOBIG" in l or "cannot read the license slots" in l
                   or "cannot count licenses" in l or "(it hung)" in l]
            assert not bad, (n, bad[:3])
    finally:
        c.stop_all()


def checks(c, name):
    """Passes of the server's license reconciler that read every slot."""
    text = http("GET", c.url(name) + "/metrics", timeout=2)[1]
    m = re.search(r"^understudy_desk_license_checks_total (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def mine(etcd, pre):
    """{slot: (server, user, desk)} of the slots of the cluster's servers."""
    st, r = etcd.call("/v3/kv/range", {"key": b64(pre),
                                       "range_end": b64(pre[:-1] + "0")}, timeout=20)
    out = {}
    for kv in r.get("kvs", []):
        v = json.loads(unb64(kv["value"]))
        if v["server"] in SERVERS:
            out[unb64(kv["key"]).rsplit("/", 1)[1]] = (v["server"], v["user"], v["desk"])
    return out
