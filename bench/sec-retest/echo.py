"""Echo backend for bench/sec-retest/attack.py: records every request head in /tmp/rv/seen.log."""
import http.server, sys, json
class H(http.server.BaseHTTPRequestHandler):
    protocol_version="HTTP/1.1"
    def handle_one(self): pass
    def do_ANY(self):
        n=int(self.headers.get('Content-Length') or 0)
        body=self.rfile.read(n) if n else b''
        rec={"path":self.path,"headers":dict(self.headers.items()),"body":body.decode('latin1')[:200]}
        open('/tmp/rv/seen.log','a').write(json.dumps(rec)+"\n")
        if self.headers.get('Upgrade','').lower()=='websocket':
            import base64,hashlib
            k=self.headers['Sec-WebSocket-Key']
            acc=base64.b64encode(hashlib.sha1((k+'258EAFA5-E914-47DA-95CA-C5AB0DC11B85').encode()).digest()).decode()
            self.send_response(101); self.send_header('Upgrade','websocket'); self.send_header('Connection','Upgrade'); self.send_header('Sec-WebSocket-Accept',acc); self.end_headers(); self.wfile.flush(); return
        out=json.dumps(rec).encode()
        self.send_response(200)
        self.send_header('Content-Type','text/html')
        self.send_header('Set-Cookie','rsp_session=planted; Path=/')
        self.send_header('Set-Cookie','__Host-rsp_session=planted2; Path=/; Secure')
        self.send_header('Set-Cookie','appc=ok; Path=/')
        self.send_header('Content-Length',str(len(out)))
        self.end_headers(); self.wfile.write(out)
    do_GET=do_POST=do_PUT=do_DELETE=do_ANY
http.server.ThreadingHTTPServer(('127.0.0.1',18901),H).serve_forever()
