//! Credential isolation and app path rules through the real front door (in-process,
//! real sockets, a recording backend): on pingora's HTTP path and on the WebSocket
//! tunnel, the admin's session cookie and API token never reach an app, an app cannot
//! set our cookie, app responses carry the sandbox CSP, paths are normalised before
//! routing and encoded slashes are refused, HTTP/1.1 needs a Host, and `admin_host`
//! splits the planes. (tests/binary_isolation.rs does the same with a real login.)

mod common_dataplane;

use common_dataplane::backend::{Backend, Seen};
use common_dataplane::*;
use rserve_proxy::proxy::isolation::{Isolation, SANDBOX_CSP};
use rserve_proxy::proxy::limits::Limits;

const CREDENTIALS: &str = "Cookie: theirs=1; rsp_session=admin-session; __Host-rsp_session=tls-session\r\nCookie: rsp_session=again\r\nAuthorization: Bearer rsp_0123456789abcdefghijklmnopqrstuvwxyzABCD\r\n";

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n{extra}\r\n")
        .into_bytes()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The app saw its own cookie only, and no Authorization at all.
fn assert_no_admin_credentials(seen: &Seen) {
    let cookies: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, vec!["theirs=1"], "{seen:?}");
    assert_eq!(seen.header("authorization"), None, "{seen:?}");
    let all = format!("{:?}", seen.headers);
    assert!(
        !all.contains("session") && !all.contains("rsp_0123"),
        "{all}"
    );
}

fn set_cookies(r: &RawResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn csps(r: &RawResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-security-policy"))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_apps_never_see_admin_credentials_nor_set_our_cookie() {
    let proxy = Proxy::start(Limits::default());
    let b = Backend::start("a").await;
    proxy.app("iso", &[b.addr]);
    let addr = proxy.addr;

    let r = blocking(move || raw_http(addr, &get("/iso/plant", CREDENTIALS))).await;
    assert_eq!(r.status, 200);
    assert_no_admin_credentials(&b.last_seen());
    // The app's own cookie arrives; none of its attempts at ours.
    assert_eq!(set_cookies(&r), vec!["app=1; Path=/"], "{:?}", r.headers);
    // Its own CSP is kept and ours added next to it: the browser enforces both.
    assert_eq!(
        csps(&r),
        vec!["default-src 'self'", SANDBOX_CSP],
        "{:?}",
        r.headers
    );
    assert!(SANDBOX_CSP.contains("allow-scripts") && !SANDBOX_CSP.contains("allow-same-origin"));

    // Only our cookie: the Cookie header goes; an app's own Authorization passes.
    let r = blocking(move || {
        raw_http(
            addr,
            &get(
                "/iso/x",
                "Cookie: __host-rsp_session=x\r\nAuthorization: Basic dXNlcjpwdw==\r\n",
            ),
        )
    })
    .await;
    assert_eq!(r.status, 200);
    let seen = b.last_seen();
    assert_eq!(seen.count("cookie"), 0, "{seen:?}");
    assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwdw=="));
    assert_eq!(csps(&r), vec![SANDBOX_CSP]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshakes_never_carry_admin_credentials() {
    let proxy = Proxy::start(Limits::default());
    let b = Backend::start("a").await;
    proxy.app("iso", &[b.addr]);
    let addr = proxy.addr;

    // 101: planted cookies dropped, no CSP (not a document).
    let r = blocking(move || raw_http(addr, &ws_request("/iso/plant", CREDENTIALS))).await;
    assert_eq!(r.status, 101);
    assert_eq!(set_cookies(&r), vec!["app=1; Path=/"], "{:?}", r.headers);
    assert!(csps(&r).is_empty());
    let seen = b.last_seen();
    assert_eq!(seen.path, "/plant");
    assert_no_admin_credentials(&seen);

    // A refused upgrade is passed on as the app's answer: same rules, plus the CSP.
    let r = blocking(move || raw_http(addr, &ws_request("/iso/refuse", CREDENTIALS))).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "no");
    assert_eq!(set_cookies(&r), vec!["app=1; Path=/"], "{:?}", r.headers);
    assert_eq!(csps(&r), vec![SANDBOX_CSP]);
    assert_no_admin_credentials(&b.last_seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_can_be_switched_off() {
    let proxy = Proxy::start_isolated(Isolation {
        admin_host: None,
        csp_sandbox: false,
    });
    let b = Backend::start("a").await;
    proxy.app("iso", &[b.addr]);
    let addr = proxy.addr;
    let r = blocking(move || raw_http(addr, &get("/iso/plant", CREDENTIALS))).await;
    assert_eq!(r.status, 200);
    assert_eq!(csps(&r), vec!["default-src 'self'"]);
    // Credentials are stripped whatever the switch says.
    assert_eq!(set_cookies(&r), vec!["app=1; Path=/"]);
    assert_no_admin_credentials(&b.last_seen());
    let r = blocking(move || raw_http(addr, &ws_request("/iso/refuse", ""))).await;
    assert_eq!((r.status, csps(&r).len()), (403, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing_and_encoded_slashes_refused() {
    let proxy = Proxy::start(Limits::default());
    let a = Backend::start("a").await;
    let o = Backend::start("o").await;
    proxy.app("iso", &[a.addr]);
    proxy.app("other", &[o.addr]);
    let addr = proxy.addr;

    let r = blocking(move || {
        for (path, backend, seen) in [
            ("/iso/a/./b/../c?q=/../x", "a", "/a/c?q=/../x"),
            ("/iso/a/%2e%2E/b", "a", "/b"),
            ("/iso/../other/x", "o", "/x"),
            ("/other/../iso/.%2e/iso/y/", "a", "/y/"),
        ] {
            let r = raw_http(addr, &get(path, ""));
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.json()["name"], backend, "{path}");
            assert_eq!(r.json()["path"], seen, "{path}");
        }
        // Over the tunnel too.
        let r = raw_http(addr, &ws_request("/iso/a/../ws", ""));
        assert_eq!(r.status, 101);
        raw_http(addr, &ws_request("/other/%2e%2e/iso/w", ""))
    })
    .await;
    assert_eq!(r.status, 101);
    assert_eq!(a.last_seen().path, "/w");
    let before = (a.seen().len(), o.seen().len());

    // Climbing out of an app is a request for the admin plane (no control plane runs
    // in this test: pingora's 502), never an app request for `/../api/users`.
    let r = blocking(move || {
        let mut out = Vec::new();
        for path in [
            "/iso/../api/users",
            "/iso/%2e%2e/api/users",
            "/iso/a/../../api/users",
        ] {
            out.push(raw_http(addr, &get(path, "")).status);
            out.push(raw_http(addr, &ws_request(path, "")).status);
        }
        out
    })
    .await;
    assert!(r.iter().all(|s| *s == 502), "{r:?}");

    // Encoded slash, backslash, NUL: 400 in our format, nothing sent to the app.
    let r = blocking(move || {
        let mut out = Vec::new();
        for path in [
            "/iso/..%2f..%2fapi/users",
            "/iso/a%2Fb",
            "/iso/a%5cb",
            "/iso/a%00",
        ] {
            let r = raw_http(addr, &get(path, ""));
            assert_eq!(r.status, 400, "{path}");
            assert!(
                r.json()["error"].as_str().unwrap().contains("path"),
                "{path}"
            );
            let r = raw_http(addr, &get(path, "Accept: text/html\r\n"));
            assert_eq!(r.status, 400, "{path}");
            assert!(r.text().starts_with("<!doctype html>"), "{path}");
            let r = raw_http(addr, &ws_request(path, ""));
            assert_eq!(r.status, 400, "{path}");
            out.push(r.json()["error"].as_str().unwrap().to_string());
        }
        out
    })
    .await;
    assert!(r[0].contains("%2F"), "{r:?}");
    assert_eq!(
        (a.seen().len(), o.seen().len()),
        before,
        "an app was sent a bad path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_is_refused_on_both_paths() {
    let proxy = Proxy::start(Limits::default());
    let b = Backend::start("a").await;
    proxy.app("iso", &[b.addr]);
    let addr = proxy.addr;
    let r = blocking(move || {
        let no_host = raw_http(addr, b"GET /iso/x HTTP/1.1\r\nConnection: close\r\n\r\n");
        let two = raw_http(
            addr,
            b"GET /iso/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        );
        let ws = raw_http(
            addr,
            b"GET /iso/ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        let admin = raw_http(addr, b"GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n");
        (no_host, two, ws, admin)
    })
    .await;
    // Two Host headers: pingora's own 400 (empty body) comes first.
    assert_eq!(r.1.status, 400);
    for (what, r) in [("http", &r.0), ("websocket", &r.2), ("admin", &r.3)] {
        assert_eq!(r.status, 400, "{what}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("Host"),
            "{what}"
        );
    }
    assert!(b.seen().is_empty(), "the app was contacted");
    // HTTP/1.0 may omit it.
    let r = blocking(move || raw_http(addr, b"GET /iso/x HTTP/1.0\r\n\r\n")).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.last_seen().path, "/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_host_splits_the_planes_on_both_paths() {
    let proxy = Proxy::start_isolated(Isolation {
        admin_host: Some("admin.test".into()),
        csp_sandbox: true,
    });
    let b = Backend::start("a").await;
    proxy.app("iso", &[b.addr]);
    let addr = proxy.addr;
    let host = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let ws = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes()
    };
    let statuses = blocking(move || {
        [
            // Apps on other names, over HTTP and WebSocket.
            raw_http(addr, &host("/iso/x", "apps.test")).status,
            raw_http(addr, &ws("/iso/ws", "apps.test:8080")).status,
            // Not on the admin host (any case, any port).
            raw_http(addr, &host("/iso/x", "ADMIN.test:8443")).status,
            raw_http(addr, &ws("/iso/ws", "admin.test")).status,
            // The admin plane only on the admin host (502: no control plane here).
            raw_http(addr, &host("/api/health", "apps.test")).status,
            raw_http(addr, &host("/metrics", "apps.test")).status,
            raw_http(addr, &host("/", "apps.test")).status,
            raw_http(addr, &host("/iso/../api/health", "apps.test")).status,
            raw_http(addr, &host("/api/health", "admin.test")).status,
            // ACME challenges on every name.
            raw_http(addr, &host("/.well-known/acme-challenge/t", "apps.test")).status,
        ]
    })
    .await;
    assert_eq!(
        statuses,
        [200, 101, 404, 404, 404, 404, 404, 404, 502, 502],
        "{statuses:?}"
    );
    assert_eq!(b.seen().len(), 2, "only the two requests on the apps host");
}
