#!/usr/bin/env python3
"""Does scraping /metrics cost the data plane anything? The same rserve-proxy (release
build, `static_routes` to the wsbench echo backend) measured with `/metrics` scraped
every second by a metrics-scoped token and without scraping, in alternating rounds.

Per phase: WebSocket echo throughput and round trip at --conns connections (wsbench
rtt, 64-byte messages) and HTTP req/s with wrk. Prints a markdown table of medians with
the ratio scraped/unscraped, plus what a scrape costs (its time and size). Reuses
bench/dataplane.py's machinery (process start, wsbench, wrk, cleanup).

    python3 bench/metrics_scrape.py              # 4 rounds of each
    python3 bench/metrics_scrape.py --quick      # smoke run
"""
import argparse, datetime, json, os, shlex, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataplane as dp  # noqa: E402


def api(port, method, path, body=None, cookie=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if cookie:
        req.add_header("cookie", cookie)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read()


def metrics_token(port):
    _, headers, _ = api(port, "POST", "/api/auth/login",
                        {"username": "admin", "password": "bench-password-1"})
    cookie = headers["set-cookie"].split(";")[0]
    _, _, body = api(port, "POST", "/api/auth/tokens",
                     {"name": "bench", "scope": "metrics"}, cookie=cookie)
    return json.loads(body)["token"]["token"]


class Scraper:
    """GET /metrics every `every` seconds until stopped; records time and size."""

    def __init__(self, port, token, every=1.0):
        self.port, self.token, self.every = port, token, every
        self.times, self.sizes, self.errors = [], [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                st, _, body = api(self.port, "GET", "/metrics", token=self.token)
                if st == 200:
                    self.times.append(time.monotonic() - t0)
                    self.sizes.append(len(body))
                else:
                    self.errors += 1
            except Exception:
                self.errors += 1
            self.stop.wait(max(0.0, self.every - (time.monotonic() - t0)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def phase(t, args):
    r = dp.rtt(t, args.conns, args.msgs, max(1, args.msgs // 10), args)
    w = dp.wrk(t, args)
    time.sleep(args.settle_secs)
    return {"ws_msgs_per_s": r and r.get("msgs_per_sec"), "ws_p50_us": r and r.get("p50_us"),
            "ws_p99_us": r and r.get("p99_us"), "http_rps": w and w["rps"],
            "http_p99_us": w and w["p99_us"], "ws_raw": r, "wrk_raw": w}


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="rounds; each round runs both conditions")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--msgs", type=int, default=2000, help="messages per connection per phase")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--wrk-secs", type=int, default=5)
    ap.add_argument("--wrk-conns", type=int, default=64)
    ap.add_argument("--settle-secs", type=float, default=2)
    ap.add_argument("--scrape-every", type=float, default=1.0)
    ap.add_argument("--rsp-threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--backend-threads", type=int, default=1)
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=int, default=20)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--debug", action="store_true",
                    help="use the debug builds (only to try the harness: absolute numbers mean nothing)")
    ap.add_argument("--out", default=os.path.join(dp.ROOT, "bench/results"))
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.msgs, args.wrk_secs = 1, 300, 2
    profile = ["--release"]
    if args.debug:
        profile = []
        dp.WSBENCH = os.path.join(dp.TARGET_DIR, "debug/examples/wsbench")
        dp.RSP_BIN = os.path.join(dp.TARGET_DIR, "debug/rserve-proxy")
    if not args.no_build:
        subprocess.run(["cargo", "build", *profile, "--locked", "--bin", "rserve-proxy", "--example", "wsbench"],
                       cwd=dp.ROOT, check=True)
    for tool in ("wrk",):
        if not dp.shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    tmp = tempfile.mkdtemp(prefix="rsp-metrics-bench-")
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in ["python3", "bench/metrics_scrape.py", *sys.argv[1:]]),
            "machine": dp.machine(), "loadavg_start": dp.loadavg(),
            "build": "debug" if args.debug else "release"}
    try:
        bproc, bport = dp.start_backend(args, tmp)
        p, port, why = dp.start_rserve_proxy(args, tmp, bport)
        if p is None:
            raise SystemExit(f"rserve-proxy did not start: {why}")
        token = metrics_token(port)
        t = {"ws_url": f"ws://127.0.0.1:{port}/{dp.SLUG}/", "http_url": f"http://127.0.0.1:{port}/{dp.SLUG}/",
             "proxy_pids": dp.tree(p.pid), "backend_pids": [bproc.pid]}
        rows = {"off": [], "on": []}
        scrapes = []
        deadline = time.monotonic() + args.max_minutes * 60
        for rnd in range(args.repeat):
            # Alternate which condition goes first, so drift over the run cancels out.
            for cond in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
                if time.monotonic() > deadline:
                    break
                dp.log(f"==> round {rnd + 1}/{args.repeat}: scraping {cond}")
                if cond == "on":
                    with Scraper(port, token, args.scrape_every) as s:
                        rows["on"].append(phase(t, args))
                    scrapes.append({"n": len(s.times), "errors": s.errors, "times": s.times,
                                    "sizes": s.sizes})
                else:
                    rows["off"].append(phase(t, args))
        meta["loadavg_end"] = dp.loadavg()
    finally:
        dp.cleanup()

    times = [x for s in scrapes for x in s["times"]]
    sizes = [x for s in scrapes for x in s["sizes"]]
    errors = sum(s["errors"] for s in scrapes)
    out = [f"Run {meta['date']} on {meta['machine']} ({meta['build']} build); `{meta['command']}`; "
           f"load average {meta['loadavg_start']} → {meta.get('loadavg_end')}.", "",
           f"{args.conns} WebSockets × {args.msgs} × {args.size}-byte echoes per phase, then "
           f"wrk -t1 -c{args.wrk_conns} -d{args.wrk_secs}s; {args.repeat} rounds of each condition "
           f"(alternating order), medians.", "",
           "| | not scraped | /metrics every %gs | ratio |" % args.scrape_every, "|---|---|---|---|"]
    for key, label in [("ws_msgs_per_s", "WebSocket msg/s"), ("ws_p50_us", "WebSocket p50 µs"),
                       ("ws_p99_us", "WebSocket p99 µs"), ("http_rps", "HTTP req/s"),
                       ("http_p99_us", "HTTP p99 µs")]:
        a, b = med(rows["off"], key), med(rows["on"], key)
        ratio = f"{b / a:.3f}" if a and b else "—"
        out.append(f"| {label} | {a if a is None else round(a, 1)} | {b if b is None else round(b, 1)} | {ratio} |")
    if times:
        out += ["", f"Scrapes during the 'on' phases: {len(times)} ({errors} failed); time p50 "
                    f"{statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms; "
                    f"body {statistics.median(sizes) / 1024:.1f} KiB."]
    report = "\n".join(out)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"metrics-scrape-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows, "scrapes": scrapes, "report": report}, f, indent=1)
    dp.log(f"saved {path}")


if __name__ == "__main__":
    main()
