"""Row 20: 3,000 half-open heads from 127.0.0.1, 200 health probes from 127.0.0.2.
Usage: ulimit -n 10000; python3 halfopen.py SERVER_PID"""
import socket, sys, time
pid = sys.argv[1]
def rss():
    return int([l for l in open(f'/proc/{pid}/status') if l.startswith('VmRSS')][0].split()[1]) // 1024
print('rss before', rss())
socks = []
for i in range(3000):
    s = socket.create_connection(('127.0.0.1', 18900), timeout=1)
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    socks.append(s)
time.sleep(0.5)
alive = 0
for s in socks:
    s.setblocking(False)
    try:
        alive += s.recv(1) != b''
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
lat = []
for i in range(200):
    t = time.time()
    s = socket.socket(); s.bind(('127.0.0.2', 0)); s.settimeout(5)
    s.connect(('127.0.0.1', 18900))
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = s.recv(100); s.close()
    lat.append((time.time() - t) * 1000)
    assert r.startswith(b'HTTP/1.1 200'), r
lat.sort()
print(f'opened {len(socks)}, still open {alive}; probes 200/200: p50 {lat[100]:.1f} ms p99 {lat[197]:.1f} ms max {lat[-1]:.1f} ms; rss {rss()} MB')
for s in socks:
    s.close()
time.sleep(3)
print('rss after', rss())
