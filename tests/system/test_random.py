"""A randomized run: 200 steps of SIGKILL, SIGSTOP, SIGCONT and restart
on four servers, with an audit after every step: no post is ever owned
twice (by etcd or by what each server believes), and once the cluster has
settled every post is served when capacity allows."""
import json
import os
import random
import time

import pytest

from conftest import Cluster, Etcd, wait_for

STEPS = int(os.environ.get("US_RANDOM_STEPS", "200"))
SEED = int(os.environ.get("US_RANDOM_SEED", "20261121"))
TTL = 1
PORTS = 4


def beliefs(c):
    """{server: set of posts it says it owns}, from every server that answers."""
    out = {}
    for n in c.spec:
        if n in c.frozen or not c.running(n):
            continue
        st = c.status(n, timeout=0.5)
        if st is not None:
            out[n] = {o["post"] for o in st["owned"]}
    return out


def owners(c):
    return {p: c.owner_key(p) for p in c.rp}


def settled(c, problems):
    """True when the cluster is where it should be; else says why."""
    problems.clear()
    live = {n for n in c.spec if c.running(n) and n not in c.frozen}
    own = owners(c)
    load = {n: 0 for n in c.spec}
    for p, o in own.items():
        if o is not None:
            load[o] += PORTS
            if o not in live:
                problems.append("%s owned by %s, which is not live" % (p, o))
    for p, o in own.items():
        if o is not None:
            continue
        cands = [p] + c.spec[p].get("failover", []) + \
            [n for n in c.spec if c.spec[n].get("spare")]
        for s in cands:
            if s in live and c.spec[s]["max"] - load[s] >= PORTS:
                problems.append("%s unserved though %s is live with room" % (p, s))
                break
    b = beliefs(c)
    for n in live:
        if n not in b:
            problems.append("%s does not answer" % n)
            continue
        mine = {p for p, o in own.items() if o == n}
        if b[n] != mine:
            problems.append("%s believes it owns %s, etcd says %s" % (n, sorted(b[n]), sorted(mine)))
    return not problems


def audit_safety(c, log):
    seen = {}
    for n, posts in beliefs(c).items():
        for p in posts:
            assert p not in seen, "post %s owned by %s and %s\n%s" % (
                p, seen[p], n, "\n".join(log))
            seen[p] = n


def test_random_200_steps(tmp_path):
    etcd = Etcd(1, str(tmp_path))
    servers = [{"name": "A1", "ports": PORTS, "max": 8, "failover": ["A2"]},
               {"name": "A2", "ports": PORTS, "max": 8, "failover": ["A3"]},
               {"name": "A3", "ports": PORTS, "max": 8, "failover": ["A1"]},
               {"name": "SP", "spare": True, "max": 4}]
    c = Cluster(tmp_path, etcd, servers, ttl=TTL, delay=1)
    rnd = random.Random(SEED)
    print("seed %d (replay: US_RANDOM_SEED=%d)" % (SEED, SEED))
    log = ["seed %d" % SEED]
    problems = []
    try:
        c.start()
        assert wait_for(lambda: settled(c, problems), 10), problems
        for step in range(STEPS):
            names = list(c.spec)
            n = rnd.choice(names)
            action = rnd.choice(["kill", "kill", "freeze", "thaw", "restart"])
            running = c.running(n)
            if action == "kill" and running and n not in c.frozen:
                c.kill_worker(n)
            elif action == "freeze" and running and n not in c.frozen and \
                    len(c.frozen) < 2:
                c.freeze(n)
            elif action == "thaw" and c.frozen:
                n = rnd.choice(sorted(c.frozen))
                c.thaw(n)
            elif action == "restart":
                if running:
                    c.terminate(n)
                else:
                    c.srv[n].start()
            else:
                action = "nothing"
            log.append("step %d: %s %s" % (step, action, n))
            audit_safety(c, log)
            ok = wait_for(lambda: settled(c, problems), TTL + 6, step=0.05)
            audit_safety(c, log)
            assert ok, "step %d did not settle: %s\n%s" % (step, problems, "\n".join(log[-15:]))
    finally:
        c.stop_all()
        etcd.stop()
