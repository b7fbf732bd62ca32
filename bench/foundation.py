#!/usr/bin/env python3
"""Foundation figures (issue #2): start to first 200, idle RSS, bearer GET /api/apps
latency with 100 apps, start time with 1,000 apps + 10,000 users, binary size.

Usage: python3 bench/foundation.py  (builds the release binary; needs wrk)
Prints a markdown section for docs/benchmarks.md.
"""
import json, os, platform, re, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/rserve-proxy")
SEED = os.path.join(ROOT, "target/release/examples/seed")
PW = "bench-password"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def health_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start(data, port):
    env = dict(os.environ, RSP_ADMIN_PASSWORD=PW, RSP_SHUTDOWN_GRACE_SECS="0", RSP_LOG_LEVEL="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "--data-dir", data, "--listen", f"127.0.0.1:{port}", "serve"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not health_ok(port):
        if time.perf_counter() - t0 > 20:
            p.kill(); raise SystemExit("server did not start")
        time.sleep(0.0005)
    return p, (time.perf_counter() - t0) * 1000


def stop(p):
    p.terminate(); p.wait(15)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def api(port, method, path, body=None, token=None, cookie=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if token: req.add_header("authorization", f"Bearer {token}")
    if cookie: req.add_header("cookie", cookie)
    with urllib.request.urlopen(req) as r:
        return r.headers, json.loads(r.read() or b"null")


def startup_runs(data, n):
    times = []
    for _ in range(n):
        port = free_port()
        p, ms = start(data, port)
        times.append(ms)
        stop(p)
    return times


def wrk_latency(port, token, conns, secs=10):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency",
                          "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/api/apps"],
                         check=True, capture_output=True, text=True).stdout
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
    return pct.get("50"), pct.get("99"), rps


def main():
    if not shutil.which("wrk"):
        raise SystemExit("wrk missing: apt-get install wrk")
    sh("cargo", "build", "--release", "--locked", "--bin", "rserve-proxy", "--example", "seed")
    size_mb = os.path.getsize(BIN) / 1e6
    tmp = tempfile.mkdtemp(prefix="rsp-bench-")
    try:
        # First start ever (creates admin: one argon2 hash), then restarts.
        first = startup_runs(os.path.join(tmp, "fresh"), 1)[0]
        warm = startup_runs(os.path.join(tmp, "fresh"), 20)

        # Idle RSS after a little traffic.
        port = free_port()
        p, _ = start(os.path.join(tmp, "fresh"), port)
        for _ in range(20): health_ok(port)
        time.sleep(3)
        idle_rss = rss_kb(p.pid) / 1024

        # 100 apps, bearer GET /api/apps.
        hdrs, _ = api(port, "POST", "/api/auth/login", {"username": "admin", "password": PW})
        cookie = hdrs["set-cookie"].split(";")[0]
        for i in range(100):
            api(port, "POST", "/api/apps", {"name": f"App {i}", "slug": f"bench-app-{i}"}, cookie=cookie)
        _, tok = api(port, "POST", "/api/auth/tokens", {"name": "bench"}, cookie=cookie)
        token = tok["token"]["token"]
        _, apps = api(port, "GET", "/api/apps", token=token)
        assert len(apps["apps"]) == 100
        c1 = wrk_latency(port, token, 1)
        c10 = wrk_latency(port, token, 10)
        loaded_rss = rss_kb(p.pid) / 1024
        stop(p)

        # 1,000 apps and 10,000 users.
        big = os.path.join(tmp, "big")
        sh(SEED, big, "10000", "1000")
        big_times = startup_runs(big, 10)
        big_size = os.path.getsize(os.path.join(big, "state.redb")) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    med = statistics.median
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores ({cpu}); "
          f"{time.strftime('%Y-%m-%d')}; release build (thin LTO, stripped)\n")
    print("| figure | result | goal |\n|---|---|---|")
    print(f"| start → first 200 `/api/health`, first start (creates admin) | {first:.1f} ms | ≤ 50 ms |")
    print(f"| start → first 200, restart (median of 20; min {min(warm):.1f}, max {max(warm):.1f}) | {med(warm):.1f} ms | ≤ 50 ms |")
    print(f"| idle RSS (after 20 requests, 3 s idle) | {idle_rss:.1f} MB | ≤ 15 MB |")
    print(f"| bearer `GET /api/apps`, 100 apps, 1 connection: p50 / p99 / req/s | {c1[0]} / {c1[1]} / {c1[2]} | — |")
    print(f"| bearer `GET /api/apps`, 100 apps, 10 connections: p50 / p99 / req/s | {c10[0]} / {c10[1]} / {c10[2]} | — |")
    print(f"| RSS after that load | {loaded_rss:.1f} MB | — |")
    print(f"| start → first 200 with 10,000 users + 1,000 apps ({big_size:.1f} MB state.redb; median of 10, max {max(big_times):.1f}) | {med(big_times):.1f} ms | ≤ 1 s |")
    print(f"| binary size (release, stripped) | {size_mb:.1f} MB | — |")


if __name__ == "__main__":
    main()
