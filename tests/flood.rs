//! Connection floods against the real binary, on loopback: the per-client cap closes
//! the extra connections at once while a client at another address (127.0.0.2) is
//! served; places come back when the flood goes; a stalled request head is closed
//! after `request_head_timeout_secs`; and clients that abort connections (before,
//! during the head, during the TLS handshake) leave the log quiet.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::Server;

/// Raise this process's soft open-files limit to the hard one (the flood needs a few
/// thousand sockets).
fn raise_nofile() {
    // SAFETY: plain libc calls with a valid, owned struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

fn addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection that sent half a request head (and never sends the rest).
fn half_open(to: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(to).unwrap();
    // The server may have closed it already (refused): a failed write is fine.
    let _ = s.write_all(b"GET /api/health HTTP/1.1\r\nHost: flood\r\n");
    s
}

/// Has the server closed (or reset) this connection? Does not wait.
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let gone = match s.peek(&mut b) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    gone
}

/// Wait (bounded) until `s` is closed by the server; how long it took.
fn time_to_close(s: &mut TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => t0.elapsed(),
        Ok(_) => panic!(
            "the server answered a stalled head: {:?}",
            String::from_utf8_lossy(&b)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => t0.elapsed(),
        Err(e) => panic!("not closed within {limit:?}: {e}"),
    }
}

/// `/api/health` from another client address.
fn probe_from(server: &Server, from: &str) -> StatusCode {
    let client = reqwest::blocking::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(server.url("/api/health"))
        .send()
        .unwrap()
        .status()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn per_client_cap_closes_the_flood_and_others_are_served() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("RSP_ADMIN_PASSWORD", "flood-test-password"),
            ("RSP_MAX_CONNECTIONS_PER_IP", "200"),
            ("RSP_REQUEST_HEAD_TIMEOUT_SECS", "120"),
        ],
    );
    // Let the readiness probe's connection close before the flood counts.
    std::thread::sleep(Duration::from_millis(300));
    let to = addr(&server);
    const FLOOD: usize = 3000;
    let conns: Vec<TcpStream> = (0..FLOOD).map(|_| half_open(to)).collect();

    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held = conns.iter().filter(|c| !closed(c)).count();
        if held <= 200 || Instant::now() > deadline {
            break held;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Exactly the cap, unless 127.0.0.2's bucket is 127.0.0.1's (1 in 16,384).
    assert_eq!(held, 200, "connections the server kept from one client");

    // Meanwhile another client is served.
    for _ in 0..20 {
        assert_eq!(probe_from(&server, "127.0.0.2"), StatusCode::OK);
    }
    // Still held: the cap closes the new ones, not the old.
    assert_eq!(conns.iter().filter(|c| !closed(c)).count(), 200);

    // The flood goes: its places come back.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(5);
    let again: Vec<TcpStream> = loop {
        std::thread::sleep(Duration::from_millis(200));
        let again: Vec<TcpStream> = (0..200).map(|_| half_open(to)).collect();
        std::thread::sleep(Duration::from_millis(200));
        if again.iter().all(|c| !closed(c)) {
            break again;
        }
        assert!(Instant::now() < deadline, "places did not come back");
    };
    drop(again);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(probe_from(&server, "127.0.0.1"), StatusCode::OK);

    // 2,800 refusals, rate-limited to a line or two.
    let log = server.log();
    let refused = count(&log, "connection refused");
    assert!(
        (1..=2).contains(&refused),
        "{refused} refusal lines:\n{log}"
    );
    assert!(log.contains("max_connections_per_ip"), "{log}");
}

#[test]
fn a_stalled_head_is_closed_after_the_head_timeout_but_keepalive_is_longer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("RSP_ADMIN_PASSWORD", "flood-test-password"),
            ("RSP_REQUEST_HEAD_TIMEOUT_SECS", "1"),
        ],
    );
    let to = addr(&server);
    let mut half = half_open(to);
    let mut silent = TcpStream::connect(to).unwrap();
    let t = time_to_close(&mut half, Duration::from_secs(10));
    assert!(
        t >= Duration::from_millis(800) && t < Duration::from_secs(4),
        "{t:?}"
    );
    let t = time_to_close(&mut silent, Duration::from_secs(10));
    assert!(t < Duration::from_secs(4), "{t:?}");

    // A keepalive connection may stay idle longer than the head timeout between
    // requests.
    let mut c = TcpStream::connect(to).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"status\"") {
            let n = c.read(&mut b).unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        std::thread::sleep(Duration::from_millis(2500));
    }
}

/// Set SO_LINGER 0: closing then sends a reset instead of a FIN.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn aborted_connections_leave_the_log_quiet() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let cert = support::certs::test_cert(dir.path(), "localhost");
    let tls_port = support::free_port();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("RSP_ADMIN_PASSWORD", "flood-test-password"),
            ("RSP_TLS_MODE", "files"),
            ("RSP_TLS_LISTEN", &format!("127.0.0.1:{tls_port}")),
            ("RSP_TLS_CERT_FILE", cert.cert_file.to_str().unwrap()),
            ("RSP_TLS_KEY_FILE", cert.key_file.to_str().unwrap()),
        ],
    );
    let plain = addr(&server);
    let tls: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    std::thread::sleep(Duration::from_millis(300));
    let before = server.log().len();

    // The first bytes of a TLS ClientHello record, cut short.
    let hello_start: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    const EACH: usize = 400;
    for i in 0..EACH {
        // Connect and close at once, on both listeners.
        drop(TcpStream::connect(plain).unwrap());
        drop(TcpStream::connect(tls).unwrap());
        // Half a head, then close (EOF mid-head) or reset.
        let s = half_open(plain);
        if i % 2 == 0 {
            reset_on_close(&s);
        }
        drop(s);
        // Half a handshake, then close or reset.
        let mut s = TcpStream::connect(tls).unwrap();
        let _ = s.write_all(hello_start);
        if i % 2 == 0 {
            reset_on_close(&s);
        }
        drop(s);
    }
    // Not TLS at all on the TLS port: a handshake failure, worth a (rate-limited) line.
    for _ in 0..100 {
        let mut s = TcpStream::connect(tls).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = s.read(&mut [0u8; 64]);
    }
    // The server is still fine.
    assert_eq!(
        probe_from(&server, "127.0.0.2"),
        StatusCode::PERMANENT_REDIRECT
    );
    std::thread::sleep(Duration::from_millis(500));

    let log = server.log();
    let after = &log[before..];
    let lines: Vec<&str> = after.lines().collect();
    eprintln!(
        "{} aborted connections, {} refused handshakes: {} log lines, {} bytes",
        EACH * 4,
        100,
        lines.len(),
        after.len()
    );
    // The probe's access line and at most two rate-limited handshake warnings.
    assert!(lines.len() <= 3, "{after}");
    assert!(!after.contains("\"ERROR\""), "{after}");
    let failed = count(after, "TLS handshake failed");
    assert!((1..=2).contains(&failed), "{after}");
}

/// A client flooding an app that fails (here: a backend that hangs up on every
/// request) used to write one pingora "Fail to proxy" ERROR line per request; now it
/// is one rate-limited WARN line with a count (the access log still has every request).
#[test]
fn a_failing_app_under_a_flood_leaves_the_log_quiet() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in backend.incoming() {
            let Ok(mut s) = s else { continue };
            // Read the head, then hang up without an answer.
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut [0u8; 4096]);
            drop(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let route = format!("bad={backend_addr}");
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("RSP_ADMIN_PASSWORD", "flood-test-password"),
            ("RSP_STATIC_ROUTES", &route),
        ],
    );
    let to = addr(&server);
    std::thread::sleep(Duration::from_millis(300));
    let before = server.log().len();
    const N: usize = 200;
    let mut bad_gateway = 0;
    for _ in 0..N {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /bad/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() && &head[9..12] == b"502" {
            bad_gateway += 1;
        }
    }
    assert_eq!(bad_gateway, N, "every request answers 502");
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    let after = &log[before..];
    assert!(!after.contains("\"ERROR\""), "{after}");
    assert_eq!(count(after, "Fail to proxy"), 0, "{after}");
    let warned = count(after, "request to an app failed");
    assert!((1..=2).contains(&warned), "{warned} lines:\n{after}");
    // One access line per request, plus at most a few rate-limited warnings.
    assert!(after.lines().count() <= N + 4, "{after}");
}
