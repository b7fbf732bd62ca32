"""Row 19 of "Security: attack re-test": 2,000 aborted connections (half heads + RST,
POSTs to the app reset mid-body). Compare the server log size before and after."""
import socket, struct, time
for i in range(2000):
    s = socket.create_connection(('127.0.0.1', 18900))
    if i % 2:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    else:
        s.sendall(b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.close()
time.sleep(2)
