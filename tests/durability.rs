//! Durability: `kill -9` the real binary in the middle of a stream of writes (apps,
//! users, tokens) from concurrent clients, start it again on the same data dir, and
//! every write that was acknowledged (2xx with its id) is there, whole.
//!
//! The store commits each change in one redb write transaction with redb's default
//! `Durability::Immediate` (fsync before `commit` returns), and the API answers only
//! after the commit: an acknowledged write has reached the disk.
//!
//! The figure for docs/benchmarks.md is the ignored `durability_rounds`:
//!   RSP_DURABILITY_ROUNDS=10 RSP_DURABILITY_WRITES=1000 \
//!     cargo test --release --test durability -- --ignored --nocapture

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{json_of, login, Server};

const PASSWORD: &str = "durability-test-pw";
const WRITERS: usize = 4;

/// A write the server acknowledged, with what it must read back as.
#[derive(Debug, Clone)]
enum Acked {
    App {
        id: String,
        name: String,
        slug: String,
        packages: Vec<String>,
    },
    User {
        id: String,
        username: String,
        email: String,
        password: String,
    },
    Token {
        id: String,
        name: String,
        prefix: String,
        raw: String,
    },
}

struct Round {
    acked: usize,
    /// Writes sent whose answer never came (cut by the kill): may or may not be there.
    unanswered: usize,
    present: usize,
    missing: Vec<String>,
    elapsed: Duration,
}

fn start(dir: &Path) -> Server {
    // No Docker needed: only records are written.
    Server::start_with(
        dir,
        &[("RSP_ADMIN_PASSWORD", PASSWORD)],
        &["--docker-socket", "/nonexistent/docker.sock"],
    )
}

fn bearer_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// An admin bearer token (itself an acknowledged write, checked like the others).
fn admin_token(s: &Server) -> String {
    let c = support::client();
    assert_eq!(login(&c, s, PASSWORD), 200);
    let (st, body) = json_of(
        c.post(s.url("/api/auth/tokens"))
            .json(&json!({"name": "durability-admin"}))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{body}");
    body["token"]["token"].as_str().unwrap().to_string()
}

/// One write; `Ok(None)` when the server answered something other than 2xx (a bug
/// while it is up), `Err` when the connection failed (the kill).
fn write_one(
    c: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    tag: &str,
    n: usize,
) -> Result<Result<Acked, String>, reqwest::Error> {
    let (path, body) = match n % 3 {
        0 => (
            "/api/apps",
            json!({"name": format!("Durable {tag}"), "slug": format!("dur-{tag}"),
                   "packages": [format!("pkg{tag}")]}),
        ),
        1 => (
            "/api/users",
            json!({"username": format!("user-{tag}"), "password": format!("password-{tag}"),
                   "email": format!("{tag}@example.org"), "role": "user"}),
        ),
        _ => ("/api/auth/tokens", json!({"name": format!("tok-{tag}")})),
    };
    let r = c
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()?;
    let status = r.status();
    let v: Value = r.json()?;
    if status != 201 {
        return Ok(Err(format!("POST {path} {body} → {status} {v}")));
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(Ok(match n % 3 {
        0 => Acked::App {
            id: s(&v["app"]["id"]),
            name: s(&body["name"]),
            slug: s(&body["slug"]),
            packages: vec![s(&body["packages"][0])],
        },
        1 => Acked::User {
            id: s(&v["user"]["id"]),
            username: s(&body["username"]),
            email: s(&body["email"]),
            password: s(&body["password"]),
        },
        _ => Acked::Token {
            id: s(&v["token"]["id"]),
            name: s(&body["name"]),
            prefix: s(&v["token"]["tokenPrefix"]),
            raw: s(&v["token"]["token"]),
        },
    }))
}

/// Stream writes from `WRITERS` clients, `kill -9` once `kill_after` are acknowledged
/// or `at_most` has passed (a loaded machine writes slowly), without waiting for the
/// writers; restart, and check every acknowledged record.
/// With `login_check`, the last acknowledged user also logs in (its password hash is
/// whole); logins are rate-limited per address, so only once per test.
fn round(
    dir: &Path,
    token: Option<String>,
    label: &str,
    kill_after: usize,
    at_most: Duration,
    login_check: bool,
) -> (Round, String, String) {
    let t0 = Instant::now();
    let server = start(dir);
    let token = token.unwrap_or_else(|| admin_token(&server));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (acked, count, sent, next, refused, stop) = (
                acked.clone(),
                count.clone(),
                sent.clone(),
                next.clone(),
                refused.clone(),
                stop.clone(),
            );
            let (base, token, label) = (server.base.clone(), token.clone(), label.to_string());
            std::thread::spawn(move || {
                let c = bearer_client();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    sent.fetch_add(1, Ordering::Relaxed);
                    match write_one(&c, &base, &token, &format!("{label}-{n}"), n) {
                        Ok(Ok(a)) => {
                            acked.lock().unwrap().push(a);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(why)) => refused.lock().unwrap().push(why),
                        // The server is gone.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + at_most;
    while count.load(Ordering::Relaxed) < kill_after && Instant::now() < deadline {
        assert!(
            refused.lock().unwrap().is_empty(),
            "writes refused: {:?}",
            refused.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        count.load(Ordering::Relaxed) >= 10,
        "only {} writes acknowledged in {at_most:?}",
        count.load(Ordering::Relaxed)
    );
    // In the middle of the stream: the writers are still sending.
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "writes refused: {refused:?}");
    let acked = acked.lock().unwrap().clone();
    let unanswered = sent.load(Ordering::Relaxed) - acked.len();

    let server = start(dir);
    let mut missing = verify(&server, &token, &acked);
    if login_check {
        let last_user = acked.iter().rev().find_map(|a| match a {
            Acked::User {
                username, password, ..
            } => Some((username.clone(), password.clone())),
            _ => None,
        });
        if let Some((username, password)) = last_user {
            let st = support::client()
                .post(server.url("/api/auth/login"))
                .json(&json!({"username": username, "password": password}))
                .send()
                .unwrap()
                .status();
            if st != 200 {
                missing.push(format!("user {username} cannot log in: {st}"));
            }
        }
    }
    let log = server.stop().2;
    (
        Round {
            acked: acked.len(),
            unanswered,
            present: acked.len() - missing.len(),
            missing,
            elapsed: t0.elapsed(),
        },
        token,
        log,
    )
}

/// Every acknowledged record, read back whole; the ones missing or different.
fn verify(s: &Server, token: &str, acked: &[Acked]) -> Vec<String> {
    let c = bearer_client();
    let get = |path: &str| json_of(c.get(s.url(path)).bearer_auth(token).send().unwrap());
    let (st, users) = get("/api/users");
    assert_eq!(st, 200, "{users}");
    let users: HashMap<String, Value> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_string(), u.clone()))
        .collect();
    let (st, tokens) = get("/api/auth/tokens");
    assert_eq!(st, 200, "{tokens}");
    let tokens: HashMap<String, Value> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect();

    let mut missing = Vec::new();
    for a in acked {
        let whole = match a {
            Acked::App {
                id,
                name,
                slug,
                packages,
            } => {
                let (st, v) = get(&format!("/api/apps/{id}"));
                st == 200
                    && v["app"]["name"] == name.as_str()
                    && v["app"]["slug"] == slug.as_str()
                    && v["app"]["packages"] == json!(packages)
            }
            Acked::User {
                id,
                username,
                email,
                ..
            } => users.get(id).is_some_and(|u| {
                u["username"] == username.as_str()
                    && u["email"] == email.as_str()
                    && u["role"] == "user"
            }),
            Acked::Token {
                id,
                name,
                prefix,
                raw,
            } => {
                let listed = tokens.get(id).is_some_and(|t| {
                    t["name"] == name.as_str() && t["tokenPrefix"] == prefix.as_str()
                });
                // The stored hash is whole: the raw token still authenticates.
                let (st, me) = json_of(
                    c.get(s.url("/api/auth/me"))
                        .bearer_auth(raw)
                        .send()
                        .unwrap(),
                );
                listed && st == 200 && me["user"]["username"] == "admin"
            }
        };
        if !whole {
            missing.push(format!("{a:?}"));
        }
    }
    missing
}

fn writes_per_round(default: usize) -> usize {
    std::env::var("RSP_DURABILITY_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _, log) = round(
        dir.path(),
        None,
        "a",
        writes_per_round(150),
        Duration::from_secs(30),
        true,
    );
    eprintln!(
        "durability: {} acknowledged, {} present after kill -9, {} unanswered at the kill, {:.1} s",
        r.acked,
        r.present,
        r.unanswered,
        r.elapsed.as_secs_f64()
    );
    assert!(r.missing.is_empty(), "lost after kill -9: {:#?}", r.missing);
    assert!(
        r.unanswered > 0,
        "the kill came between writes, not during them"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// The figure: several rounds on one data dir, each killed in the middle.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture (see the module docs)"]
fn durability_rounds() {
    let rounds: usize = std::env::var("RSP_DURABILITY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let writes = writes_per_round(1000);
    let dir = tempfile::tempdir().unwrap();
    let mut token = None;
    let (mut acked, mut present, mut unanswered) = (0, 0, 0);
    println!("round  acknowledged  present  lost  unanswered  secs");
    for i in 0..rounds {
        let (r, t, _) = round(
            dir.path(),
            token.take(),
            &format!("r{i}"),
            writes,
            Duration::from_secs(120),
            i == 0,
        );
        token = Some(t);
        println!(
            "{i:>5}  {:>12}  {:>7}  {:>4}  {:>10}  {:>4.1}",
            r.acked,
            r.present,
            r.missing.len(),
            r.unanswered,
            r.elapsed.as_secs_f64()
        );
        for m in &r.missing {
            println!("  lost: {m}");
        }
        acked += r.acked;
        present += r.present;
        unanswered += r.unanswered;
    }
    println!(
        "total  {acked:>12}  {present:>7}  {:>4}  {unanswered:>10}",
        acked - present
    );
    assert_eq!(acked, present, "acknowledged writes lost after kill -9");
}
