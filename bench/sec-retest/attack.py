"""Issue #8 attack re-test (docs/benchmarks.md, "Security: attack re-test").
Start bench/sec-retest/echo.py (127.0.0.1:18901, logs to /tmp/rv/seen.log) and the binary on
127.0.0.1:18900 with static_routes = "echo=127.0.0.1:18901", admin password adminpass123.
"""
import socket, json, http.client, os, time, base64
RUN=os.urandom(3).hex()  # unique names: the script can run again on the same data dir
H='127.0.0.1'; P=18900
def raw(data, host=H, port=P, to=3):
    s=socket.create_connection((host,port),timeout=to); s.sendall(data)
    out=b''
    try:
        while True:
            c=s.recv(65536)
            if not c: break
            out+=c
            if len(out)>200000: break
    except socket.timeout: pass
    s.close(); return out
def req(method, path, body=None, headers=None, ctype='application/json'):
    c=http.client.HTTPConnection(H,P,timeout=10)
    h=dict(headers or {})
    if body is not None and not isinstance(body,(bytes,str)): body=json.dumps(body)
    if body is not None and ctype and 'Content-Type' not in h: h['Content-Type']=ctype
    c.request(method,path,body=body,headers=h); r=c.getresponse(); b=r.read()
    return r.status, r.getheaders(), b
def res(name, sent, got, ok): print(f"{'PASS' if ok else 'FAIL'} | {name} | {sent} | {got}")
def seen_last():
    return json.loads(open('/tmp/rv/seen.log').read().strip().split('\n')[-1])
st,hd,b=req('POST','/api/auth/login',{"username":"admin","password":"adminpass123"})
ck=[v for k,v in hd if k.lower()=='set-cookie'][0].split(';')[0]
print("login",st,ck[:30])
st,hd,b=req('POST','/api/auth/tokens',{"name":"t1"},{'Cookie':ck}); tok=json.loads(b)['token']['token']
# 1 cookie/token to app HTTP
st,hd,b=req('GET','/echo/x',headers={'Cookie':ck+'; appc=1','Authorization':'Bearer '+tok})
s={k.title():v for k,v in seen_last()['headers'].items()}
res('cookie+bearer to app (HTTP)','GET /echo/x Cookie: session; appc=1 + Bearer',f"app saw Cookie={s.get('Cookie')!r} Authorization={s.get('Authorization')!r}", 'rsp_' not in json.dumps(s) and 'appc=1' in s.get('Cookie',''))
sc=[v for k,v in hd if k.lower()=='set-cookie']; csp=[v for k,v in hd if k.lower()=='content-security-policy']
res('app Set-Cookie rsp_session planting','app sends Set-Cookie rsp_session, __Host-rsp_session, appc',f"client got {sc}", not any('rsp_session' in x for x in sc) and any('appc' in x for x in sc))
res('CSP on app response','GET /echo/x',f"CSP={csp}", bool(csp) and 'sandbox' in csp[0] and 'allow-same-origin' not in csp[0])
# WS upgrade
key=base64.b64encode(os.urandom(16)).decode()
r=raw(f"GET /echo/ws HTTP/1.1\r\nHost: {H}:{P}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: {ck}; appc=2\r\nAuthorization: Bearer {tok}\r\n\r\n".encode(),to=2)
s={k.title():v for k,v in seen_last()['headers'].items()}
res('cookie+bearer to app (WS upgrade)','Upgrade GET /echo/ws with session cookie+bearer',f"status={r[:12]!r} app saw Cookie={s.get('Cookie')!r} Auth={s.get('Authorization')!r}", 'rsp_' not in json.dumps(s) and 'appc=2' in s.get('Cookie',''))
# CSRF
st,hd,b=req('POST','/api/apps',{"name":"a1","slug":"app-"+RUN,"codeSource":{"type":"upload"}},{'Cookie':ck}); print('create app',st,b[:200])
app=json.loads(b)['app']['id']
bnd='XbX'; mp=(f'--{bnd}\r\nContent-Disposition: form-data; name="file"; filename="app.R"\r\nContent-Type: text/plain\r\n\r\nprint(1)\r\n--{bnd}--\r\n').encode()
for orig in [{'Origin':'http://evil.example'},{'Origin':'null'},{'Sec-Fetch-Site':'cross-site'},{'Sec-Fetch-Site':'same-site'},{'Sec-Fetch-Site':'cross-site','Origin':f'http://{H}:{P}'},{'Origin':f'http://{H}:{P}.evil.example'},{'Origin':f'http://{H}'}]:
    st,_,b=req('POST',f'/api/apps/{app}/upload',mp,{'Cookie':ck,**orig},ctype=f'multipart/form-data; boundary={bnd}')
    res('CSRF multipart upload',f'cookie + {orig}',st,st==403)
st,_,b=req('POST',f'/api/apps/{app}/stop','',{'Cookie':ck,'Origin':'http://evil.example'},ctype='application/x-www-form-urlencoded')
res('CSRF form stop','cookie + Origin evil, form-encoded',st,st==403)
st,_,b=req('POST','/api/auth/logout','a=1',{'Cookie':ck,'Origin':'null'},ctype='application/x-www-form-urlencoded')
res('CSRF form logout','cookie + Origin null',st,st==403)
st,_,b=req('POST','/api/users',{"username":"bob"+RUN,"password":"bobpass123","role":"user"},{'Cookie':ck}); bob=json.loads(b)['user']['id']; print('bob',st)
st,_,b=req('PUT',f'/api/users/{bob}',{"role":"admin"},{'Cookie':ck,'Sec-Fetch-Site':'cross-site'})
res('CSRF JSON role change','cookie + Sec-Fetch-Site cross-site',st,st==403)
st,_,b=req('PUT',f'/api/users/{bob}',{"role":"admin"},{'Cookie':ck,'Origin':'http://evil.example'})
res('CSRF JSON role change','cookie + Origin evil',st,st==403)
st,_,b=req('GET','/api/users',headers={'Cookie':ck,'Sec-Fetch-Site':'cross-site'})
print('(GET cross-site read', st,')')
st,_,b=req('PUT',f'/api/users/{bob}',{"email":"b@x.org"},{'Cookie':ck,'Origin':f'http://{H}:{P}','Sec-Fetch-Site':'same-origin'})
res('same-origin cookie change passes','cookie + same-origin',st,st==200)
st,_,b=req('PUT',f'/api/users/{bob}',{"email":"b2@x.org"},{'Authorization':'Bearer '+tok,'Origin':'http://evil.example'})
res('bearer with evil Origin passes','bearer + Origin evil',st,st==200)
# tokens after password change
st,_,b=req('POST','/api/auth/login',{"username":"bob"+RUN,"password":"bobpass123"}); 
st,_,b=req('POST','/api/auth/login',{"username":"bob"+RUN,"password":"bobpass123"})
c=http.client.HTTPConnection(H,P); c.request('POST','/api/auth/login',json.dumps({"username":"bob"+RUN,"password":"bobpass123"}),{'Content-Type':'application/json'}); r=c.getresponse(); r.read()
bck=r.getheader('Set-Cookie').split(';')[0]
st,_,b=req('POST','/api/auth/tokens',{"name":"bt"},{'Cookie':bck}); btok=json.loads(b)['token']['token']
st,_,b=req('PUT',f'/api/users/{bob}',{"password":"newbobpass1"},{'Cookie':ck}); print('admin reset',st,b[:100])
st,_,b=req('GET','/api/auth/me',headers={'Authorization':'Bearer '+btok}); st2,_,_=req('GET','/api/auth/me',headers={'Cookie':bck})
res('bearer after admin reset','admin PUT /api/users/bob {password}; bob bearer + cookie GET /me',f'{st}, cookie {st2}',st==401 and st2==401)
c=http.client.HTTPConnection(H,P); c.request('POST','/api/auth/login',json.dumps({"username":"bob"+RUN,"password":"newbobpass1"}),{'Content-Type':'application/json'}); r=c.getresponse(); r.read()
bck=r.getheader('Set-Cookie').split(';')[0]
st,_,b=req('POST','/api/auth/tokens',{"name":"bt2"},{'Cookie':bck}); btok=json.loads(b)['token']['token']
st,_,b=req('PUT','/api/auth/password',{"currentPassword":"newbobpass1","newPassword":"newbobpass2"},{'Authorization':'Bearer '+btok}); print('self change',st,b[:200])
st,_,b=req('GET','/api/auth/me',headers={'Authorization':'Bearer '+btok}); st2,_,_=req('GET','/api/auth/me',headers={'Cookie':bck})
res('bearer after own password change (default)','PUT /api/auth/password by bob; GET /me bearer/cookie',f'bearer {st}, other-session cookie {st2}',st2==401)
# strict API
st,_,b=req('POST','/api/apps',["a","a"],{'Cookie':ck}); res('array body POST /api/apps','["a","a"]',f'{st} {b[:80]}',st in (400,415,422))
st,_,b=req('PUT',f'/api/users/{bob}',[None,None],{'Cookie':ck}); res('array body PUT /api/users/:id','[null,null]',f'{st} {b[:80]}',st in(400,422))
big=json.dumps({"name":"x"*(1100*1024)})
st,_,b=req('POST','/api/apps',big,{'Cookie':ck}); res('>1MB JSON','1.1 MB POST /api/apps',f'{st} {b[:80]}',st==413)
r=raw(b"GET /api/health HTTP/1.1\r\n\r\n"); res('HTTP/1.1 no Host','GET /api/health HTTP/1.1 w/o Host',r[:40],r.startswith(b'HTTP/1.1 400'))
r=raw(b"GET /echo/x HTTP/1.1\r\n\r\n"); res('HTTP/1.1 no Host (app)','GET /echo/x HTTP/1.1 w/o Host',r[:40],r.startswith(b'HTTP/1.1 400'))
# paths
for p in ['/echo/../api/users','/echo/%2e%2e/api/users','/echo/a%2fb','/echo/a%2Fb','/echo/a%00b','/echo/a/../../api/users','/echo/./x/./y','/echo/a%5c..%5cb']:
    open('/tmp/rv/seen.log','a').write(json.dumps({"path":"NONE","headers":{}})+"\n")
    r=raw(f"GET {p} HTTP/1.1\r\nHost: {H}:{P}\r\nCookie: {ck}\r\nConnection: close\r\n\r\n".encode())
    sp=seen_last()['path']
    res('app path',p,f'{r[:12]!r} app saw {sp}', (r[9:12] in (b'400',b'404')) or ('..' not in sp and '%2f' not in sp.lower() and '%00' not in sp))
