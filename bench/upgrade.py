#!/usr/bin/env python3
"""Binary upgrade under WebSocket load (docs/benchmarks.md, "Binary upgrade").

Starts an echo backend (wsbench echo) and rserve-proxy with a static route to it,
puts WebSocket load through the proxy (wsbench rtt: every connection echoes in a loop),
opens new HTTP connections one request each in a loop, runs `rserve-proxy upgrade`
in the middle, and reports: failed/dropped WebSockets, failed new connections, the
upgrade command's time, and how long the old process lived after the switch.

    cargo build --release --example wsbench && cargo build --release
    python3 bench/upgrade.py [--bin target/release/rserve-proxy] [--conns 100] [--rounds 3]

Loopback only; everything it starts is stopped at the end.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port, path, timeout=10):
    """One request on a new connection; the status, or an exception."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed before a status line")
            data += chunk
        return int(data.split(b" ", 2)[1])


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def one_round(args, wsbench):
    data = tempfile.mkdtemp(prefix="rsp-upgrade-bench.")
    echo_port, port = free_port(), free_port()
    procs = []
    try:
        echo = subprocess.Popen([wsbench, "echo", "--listen", f"127.0.0.1:{echo_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(echo)
        env = dict(os.environ, RSP_STATIC_ROUTES=f"echo=127.0.0.1:{echo_port}",
                   RSP_ADMIN_PASSWORD="bench-password", RSP_LOG_FORMAT="json",
                   RSP_SHUTDOWN_GRACE_SECS="0")
        log = open(os.path.join(data, "server.log"), "w")
        server = subprocess.Popen([args.bin, "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                                   "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        procs.append(server)
        deadline = time.time() + 30
        while True:
            try:
                if http_status(port, "/api/health") == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.05)

        # WebSocket load through the proxy, long enough to span the upgrade.
        load = subprocess.Popen([wsbench, "rtt", "--url", f"ws://127.0.0.1:{port}/echo/",
                                 "--conns", str(args.conns), "--msgs", str(args.msgs),
                                 "--size", "64"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(load)

        stop = threading.Event()
        counts = {"ok": 0, "failed": 0, "errors": []}

        def new_connections():
            paths = ["/api/health", "/echo/x"]
            i = 0
            while not stop.is_set():
                try:
                    status = http_status(port, paths[i % 2])
                    if status == 200:
                        counts["ok"] += 1
                    else:
                        counts["failed"] += 1
                        counts["errors"].append(f"{paths[i % 2]}: {status}")
                except OSError as e:
                    counts["failed"] += 1
                    counts["errors"].append(f"{paths[i % 2]}: {e}")
                i += 1

        loop = threading.Thread(target=new_connections)
        loop.start()
        time.sleep(args.before)
        old = server.pid
        t0 = time.time()
        out = subprocess.run([args.bin, "--data-dir", data, "upgrade"], capture_output=True,
                             text=True)
        upgrade_secs = time.time() - t0
        if out.returncode != 0:
            raise SystemExit(f"upgrade failed: {out.stdout}{out.stderr}")
        with open(os.path.join(data, "rserve-proxy.pid")) as f:
            new = int(f.read().strip())
        switched = time.time()
        report = None
        for line in load.communicate(timeout=600)[0].splitlines():
            ev = json.loads(line)
            if ev.get("event") == "rtt":
                report = ev
        stop.set()
        loop.join()
        # The old process exits once its last WebSocket has ended (the load is over).
        while running(old) and time.time() - switched < args.drain_wait:
            time.sleep(0.05)
        old_lived = time.time() - switched
        os.kill(new, signal.SIGTERM)
        deadline = time.time() + 20
        while running(new) and time.time() < deadline:
            time.sleep(0.05)
        return {
            "ws_conns": args.conns,
            "ws_failed": report and report.get("failed_conns"),
            "ws_dropped": report and report.get("dropped_conns"),
            "ws_msgs_per_s": report and round(report.get("msgs_per_sec", 0)),
            "new_connections": counts["ok"] + counts["failed"],
            "new_connections_failed": counts["failed"],
            "errors": counts["errors"][:5],
            "upgrade_command_secs": round(upgrade_secs, 2),
            "old_process_exited_after_secs": round(old_lived, 1) if not running(old) else None,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/rserve-proxy")
    ap.add_argument("--wsbench", default=None, help="default: beside --bin, examples/wsbench")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--msgs", type=int, default=3000, help="echoes per connection")
    ap.add_argument("--before", type=float, default=1.0, help="seconds of load before the upgrade")
    ap.add_argument("--drain-wait", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    wsbench = args.wsbench or os.path.join(os.path.dirname(args.bin), "examples", "wsbench")
    for r in range(args.rounds):
        print(json.dumps({"round": r + 1, **one_round(args, wsbench)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
