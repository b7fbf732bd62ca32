#!/usr/bin/env python3
"""Connection-flood benchmark (issue #8): half-open connections against the release
binary, health probes from another address, RSS before / peak / after, and the log
volume of aborted connections.

    python3 bench/flood.py                      # all scenarios, 20,000 connections
    python3 bench/flood.py --conns 5000 --hold 10 --scenarios one
    RSP_BENCH_BIN=target/debug/rserve-proxy python3 bench/flood.py --quick

Scenarios:
  one     20,000 half-open connections (a request head cut after its first line and
          a header) from ONE client, 127.0.0.1, kept up for --hold seconds. With
          --churn every connection the server closes (cap, head timeout) is opened
          again at once. Default config (max_connections_per_ip 2048).
  many    the same from 250 addresses (127.0.1.1 …), 80 each: the per-client cap does
          not bite, the total cap (max_connections, sized from the open-files limit)
          does — this shows the memory of the connections the server does hold, and
          that probes are refused while it is full (that is what a total cap means).
  aborts  20,000 connections that send half a head and close (half of them with a
          reset): bytes of log written at the default level.

Probes: GET /api/health on a new connection from 127.0.0.2 every 20 ms during the
hold (p50/p99/max, errors). RSS from /proc/<pid>/status: before, peak (sampled every
100 ms), and 5 s after the flood closed.

Each flood worker is a process holding at most --per-worker sockets (the hard
open-files limit is per process). Loopback only; everything bounded in time.
"""
import argparse, json, multiprocessing as mp, os, platform, resource, selectors, signal
import socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
RSP_BIN = os.environ.get("RSP_BENCH_BIN", os.path.join(TARGET_DIR, "release/rserve-proxy"))
HALF_HEAD = b"GET /api/health HTTP/1.1\r\nHost: flood\r\n"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_server(data, port, extra_env):
    env = dict(os.environ)
    env.update({
        "RSP_ADMIN_PASSWORD": "flood-bench-password",
        "RSP_LOG_FORMAT": "json",
        "RSP_SHUTDOWN_GRACE_SECS": "0",
        "RSP_DOCKER_SOCKET": "/nonexistent/docker.sock",
    })
    env.update(extra_env)
    logf = open(os.path.join(data, "server.log"), "wb")
    proc = subprocess.Popen([RSP_BIN, "--data-dir", os.path.join(data, "d"), "--listen",
                             f"127.0.0.1:{port}", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=logf, preexec_fn=raise_nofile)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                s.close()
                time.sleep(0.5)
                return proc, logf
            s.close()
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start; see " + os.path.join(data, "server.log"))


def flood_worker(port, sources, count, hold, churn, out):
    """Open `count` half-open connections (round robin over `sources`) and keep them
    open for `hold` s; with `churn`, reopen at once any the server closes."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    opened = closed_by_server = failed = 0

    def open_one(i):
        nonlocal opened, failed
        s = socket.socket()
        try:
            s.bind((sources[i % len(sources)], 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE, ("connecting", i))
            opened += 1
        except OSError:
            failed += 1
            s.close()

    for i in range(count):
        open_one(i)
    t_end = time.time() + hold
    while time.time() < t_end:
        for key, ev in sel.select(timeout=0.2):
            s = key.fileobj
            state, i = key.data
            if state == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sel.unregister(s); s.close(); closed_by_server += 1
                    if churn:
                        open_one(i)
                    continue
                try:
                    s.send(HALF_HEAD)
                except OSError:
                    sel.unregister(s); s.close(); closed_by_server += 1
                    if churn:
                        open_one(i)
                    continue
                sel.modify(s, selectors.EVENT_READ, ("open", i))
            else:
                try:
                    data = s.recv(1024)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s); s.close(); closed_by_server += 1
                    if churn:
                        open_one(i)
    # Includes connections still in the server's accept queue.
    held = sum(1 for k in sel.get_map().values() if k.data[0] == "open")
    for k in list(sel.get_map().values()):
        k.fileobj.close()
    out.put({"opened": opened, "closed_by_server": closed_by_server, "failed": failed,
             "open_at_end": held})


def probe_loop(port, source, until, out):
    lat, errors = [], 0
    while time.time() < until:
        t0 = time.perf_counter()
        try:
            s = socket.socket()
            s.bind((source, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                got += b
            s.close()
            if got.startswith(b"HTTP/1.1 200"):
                lat.append((time.perf_counter() - t0) * 1000)
            else:
                errors += 1
        except OSError:
            errors += 1
        time.sleep(0.02)
    out.put({"lat": lat, "errors": errors})


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_flood(args, name, sources, extra_env=None):
    tmp = tempfile.mkdtemp(prefix="rsp-flood-")
    port = free_port()
    proc, logf = start_server(tmp, port, extra_env or {})
    try:
        before = rss_kb(proc.pid)
        q = mp.Queue()
        workers = []
        per = args.per_worker
        n = args.conns
        t_start = time.time()
        while n > 0:
            k = min(per, n)
            w = mp.Process(target=flood_worker, args=(port, sources, k, args.hold, args.churn, q))
            w.start()
            workers.append(w)
            n -= k
        pq = mp.Queue()
        prober = mp.Process(target=probe_loop, args=(port, "127.0.0.2", time.time() + args.hold, pq))
        prober.start()
        peak = before
        while any(w.is_alive() for w in workers):
            peak = max(peak, rss_kb(proc.pid))
            time.sleep(0.1)
        results = [q.get() for _ in workers]
        probe = pq.get()
        prober.join()
        for w in workers:
            w.join()
        time.sleep(5)
        after = rss_kb(proc.pid)
        lat = probe["lat"]
        row = {
            "scenario": name + (" churn" if args.churn else ""), "conns": args.conns, "sources": len(sources), "hold_s": args.hold,
            "opened": sum(r["opened"] for r in results),
            "closed_by_server": sum(r["closed_by_server"] for r in results),
            "open_at_end": sum(r["open_at_end"] for r in results),
            "probes_ok": len(lat), "probe_errors": probe["errors"],
            "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else None,
            "rss_before_mb": round(before / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
            "rss_after_mb": round(after / 1024, 1),
        }
        log(json.dumps(row))
        return row
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()


def run_aborts(args):
    tmp = tempfile.mkdtemp(prefix="rsp-aborts-")
    port = free_port()
    proc, logf = start_server(tmp, port, {})
    path = os.path.join(tmp, "server.log")
    try:
        size0 = os.path.getsize(path)
        for i in range(args.conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(HALF_HEAD)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        time.sleep(2)
        logf.flush()
        grown = os.path.getsize(path) - size0
        row = {"scenario": "aborts", "conns": args.conns, "log_bytes": grown}
        log(json.dumps(row))
        return row
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=20000)
    ap.add_argument("--hold", type=float, default=20)
    ap.add_argument("--per-worker", type=int, default=5000)
    ap.add_argument("--scenarios", default="one,many,aborts")
    ap.add_argument("--quick", action="store_true", help="2,000 connections, 5 s")
    ap.add_argument("--churn", action="store_true",
                    help="flood workers reopen every connection the server closes, at once")
    args = ap.parse_args()
    if args.quick:
        args.conns, args.hold = 2000, 5
    if not os.path.exists(RSP_BIN):
        raise SystemExit(f"{RSP_BIN} missing: cargo build --release (or set RSP_BENCH_BIN)")
    rows = []
    for sc in args.scenarios.split(","):
        if sc == "one":
            rows.append(run_flood(args, "one", ["127.0.0.1"]))
        elif sc == "many":
            rows.append(run_flood(args, "many", [f"127.0.1.{i}" for i in range(1, 251)]))
        elif sc == "aborts":
            rows.append(run_aborts(args))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}, " \
              f"nofile hard {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}"
    load = os.getloadavg()[0]
    print(f"machine: {machine}; load avg at end {load:.1f}; binary {RSP_BIN}")
    print(f"command: python3 bench/flood.py {' '.join(sys.argv[1:])}")
    print()
    print("| scenario | connections (sources) | closed by server | open at end (client view) | probes ok / errors | probe p50 / p99 / max ms | RSS before / peak / after MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["scenario"] == "aborts":
            continue
        print(f"| {r['scenario']} | {r['conns']} ({r['sources']}) | {r['closed_by_server']} | {r['open_at_end']} "
              f"| {r['probes_ok']} / {r['probe_errors']} | {r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} "
              f"| {r['rss_before_mb']} / {r['rss_peak_mb']} / {r['rss_after_mb']} |")
    for r in rows:
        if r["scenario"] == "aborts":
            print(f"\naborted connections: {r['conns']} → {r['log_bytes']} bytes of log at the default level")
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(ROOT, f"bench/results/flood-{stamp}.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
