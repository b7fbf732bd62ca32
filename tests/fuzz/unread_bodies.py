"""Regression probe for a schemathesis finding (tests/schemathesis.rs runs it).

Requests with a small JSON body that the control plane answers without reading it
(405 for an unrouted method, 401 before the JSON extractor) used to close the proxy's
pooled connection to the control plane, and a following request could get a 502:
5-6 in these 2,250 requests before the fix. Exit status 1 on any 5xx.
    python3 tests/fuzz/unread_bodies.py HOST PORT
"""
import collections
import http.client
import json
import sys

host, port = sys.argv[1], int(sys.argv[2])
body = json.dumps({"name": "0", "cpus": 0.05, "env": [], "memoryMb": 64})
paths = ["/api/apps/e3e70682-c209-1cac-a29f-6fbed82c07cd", "/api/apps", "/api/auth/me"]
headers = {"Content-Type": "application/json", "Authorization": "Bearer x"}
statuses = collections.Counter()
for _ in range(150):
    conn = http.client.HTTPConnection(host, port, timeout=20)
    for method in ["TRACE", "QUERY", "POST", "PATCH", "GET"]:
        for path in paths:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            statuses[r.status] += 1
            if r.will_close:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=20)
    conn.close()
print(dict(statuses))
sys.exit(1 if any(s >= 500 for s in statuses) else 0)
