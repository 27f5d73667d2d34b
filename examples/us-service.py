#!/usr/bin/python3
"""A small service for understudy's [service] sections (examples, tests).

It appends one JSON line per start and stop to --log (service, server,
post, epoch, pid, time), answers GET on --http PORT with 200 (a ready
and health probe), sends READY=1 to NOTIFY_SOCKET with --notify, and
stops on SIGTERM (after --term-delay seconds)."""
import argparse
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--log")
ap.add_argument("--http", type=int)
ap.add_argument("--notify", action="store_true")
ap.add_argument("--exit-after", type=float, help="exit 1 after this many s")
ap.add_argument("--term-delay", type=float, default=0)
ap.add_argument("--ready-delay", type=float, default=0,
                help="wait this long before serving HTTP or sending READY=1")
args = ap.parse_args()

ME = {k: os.environ.get("UNDERSTUDY_" + k.upper()) for k in
      ("service", "server", "post", "epoch")}


def record(event):
    if not args.log:
        return
    line = dict(ME, event=event, pid=os.getpid(), t=time.time())
    with open(args.log, "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def on_term(sig, frame):
    time.sleep(args.term_delay)
    record("stop")
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
record("start")


class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(ME).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


time.sleep(args.ready_delay)
if args.http:
    http.server.HTTPServer.allow_reuse_address = True
    srv = http.server.HTTPServer(("127.0.0.1", args.http), Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
if args.notify and os.environ.get("NOTIFY_SOCKET"):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", addr)
    s.close()
start = time.monotonic()
while True:
    time.sleep(0.05)
    if args.exit_after is not None and time.monotonic() - start > args.exit_after:
        record("exit")
        sys.exit(1)
