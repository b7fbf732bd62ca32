//! Test harness: the real router over a real redb store in a temp dir. The only fake
//! is the spawner (allowed for these tests): it keeps app status in memory.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

pub mod ui;

use rserve_proxy::config::Config;
use rserve_proxy::service::AppState;
use rserve_proxy::spawner::{
    AppRuntime, AppSpec, AppStatus, ContainerInfo, LogSource, LogStream, ReconcileReport, Spawner,
    SpawnerError,
};
use rserve_proxy::store::{Store, StoreError};

pub const ADMIN_PASSWORD: &str = "admin-password-1";
/// Password of users made by `Harness::user`.
pub const USER_PASSWORD: &str = "user-password-1";

/// In-memory spawner: `start` makes an app running with `replicas` fake containers.
#[derive(Default)]
pub struct FakeSpawner {
    pub down: AtomicBool,
    pub running: Mutex<HashMap<Uuid, u32>>,
    pub calls: Mutex<Vec<String>>,
    pub changes: tokio::sync::watch::Sender<u64>,
}

impl FakeSpawner {
    fn check(&self) -> Result<(), SpawnerError> {
        if self.down.load(Ordering::SeqCst) {
            Err(SpawnerError::Unavailable("fake Docker is down".into()))
        } else {
            Ok(())
        }
    }

    fn call(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }
}

#[async_trait]
impl Spawner for FakeSpawner {
    async fn runtimes(&self) -> HashMap<Uuid, AppRuntime> {
        let ids: Vec<Uuid> = self.running.lock().unwrap().keys().copied().collect();
        let mut out = HashMap::new();
        for id in ids {
            out.insert(id, self.runtime(id).await);
        }
        out
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    async fn reconcile(&self, known: &HashSet<Uuid>) -> Result<ReconcileReport, SpawnerError> {
        self.check()?;
        let mut running = self.running.lock().unwrap();
        let removed: Vec<Uuid> = running
            .keys()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        for id in &removed {
            running.remove(id);
        }
        Ok(ReconcileReport {
            adopted: running.keys().copied().collect(),
            removed,
            vanished: Vec::new(),
        })
    }

    async fn ping(&self) -> Result<(), SpawnerError> {
        self.check()
    }
    async fn r_versions(&self) -> Result<Vec<String>, SpawnerError> {
        self.check()?;
        Ok(vec!["4.4.1".into(), "4.2.2".into()])
    }
    async fn runtime(&self, app_id: Uuid) -> AppRuntime {
        match self.running.lock().unwrap().get(&app_id) {
            Some(n) => AppRuntime {
                status: AppStatus::Running,
                containers: (0..*n)
                    .map(|i| ContainerInfo {
                        container_id: format!("{:012x}", i + 1),
                        status: "running".into(),
                        health_status: Some("healthy".into()),
                        started_at: None,
                        port: 8081,
                        ..Default::default()
                    })
                    .collect(),
                error: None,
            },
            None => AppRuntime::stopped(),
        }
    }
    async fn start(&self, spec: &AppSpec) -> Result<AppStatus, SpawnerError> {
        self.check()?;
        self.call(format!("start {}", spec.slug));
        self.running.lock().unwrap().insert(spec.id, spec.replicas);
        Ok(AppStatus::Starting)
    }
    async fn stop(&self, app_id: Uuid) -> Result<(), SpawnerError> {
        self.check()?;
        self.call(format!("stop {app_id}"));
        self.running.lock().unwrap().remove(&app_id);
        Ok(())
    }
    async fn rebuild(&self, spec: &AppSpec) -> Result<(String, String), SpawnerError> {
        self.check()?;
        self.call(format!("rebuild {}", spec.slug));
        self.running.lock().unwrap().insert(spec.id, spec.replicas);
        Ok((format!("rserve-app-{}", spec.slug), "abc123".into()))
    }
    async fn remove(&self, app_id: Uuid) -> Result<(), SpawnerError> {
        self.check()?;
        self.call(format!("remove {app_id}"));
        self.running.lock().unwrap().remove(&app_id);
        Ok(())
    }
    async fn logs(&self, _app_id: Uuid, source: LogSource) -> Result<LogStream, SpawnerError> {
        self.check()?;
        let lines = match source {
            LogSource::Build => vec!["Step 1/3 : FROM rserve-base".to_string(), "done".into()],
            LogSource::Runtime => vec!["Rserve started".to_string()],
        };
        Ok(Box::pin(futures_util::stream::iter(lines)))
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Cred {
    None,
    Cookie(String),
    Bearer(String),
}

pub struct Harness {
    pub dir: TempDir,
    pub state: AppState,
    pub spawner: Arc<FakeSpawner>,
    pub router: Router,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Harness {
    /// A fresh data dir with `admin` (password `ADMIN_PASSWORD`).
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    pub async fn with_config(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(dir, tweak).await
    }

    /// Open (or reopen) the store in `dir`: what a restart of the server does.
    pub async fn open(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        tweak(&mut config);
        let store = Store::open(&config.state_file()).unwrap();
        rserve_proxy::bootstrap::ensure_admin(&store, dir.path(), Some(ADMIN_PASSWORD)).unwrap();
        let spawner = Arc::new(FakeSpawner::default());
        let state = AppState::new(store, spawner.clone(), Arc::new(config));
        let router = rserve_proxy::api::router(state.clone());
        Harness {
            dir,
            state,
            spawner,
            router,
        }
    }

    /// Drop the store and open it again from the same files.
    pub async fn restart(self) -> Self {
        let Harness {
            dir, state, router, ..
        } = self;
        drop(router);
        drop(state);
        // The token-use recorder holds a store clone until it sees its channel close:
        // wait (bounded) for the file lock to be free rather than guess a delay.
        let state_file = dir.path().join("state.redb");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Store::open(&state_file) {
                Ok(store) => break drop(store),
                Err(StoreError::InUse { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
        Self::open(dir, |_| {}).await
    }

    /// Make the fake Docker unreachable (or reachable again).
    pub fn docker_down(&self, down: bool) {
        self.spawner.down.store(down, Ordering::SeqCst);
    }

    /// The spawner calls made so far (`start <slug>`, `remove <id>`, …).
    pub fn spawner_calls(&self) -> Vec<String> {
        self.spawner.calls.lock().unwrap().clone()
    }

    /// Where an app's uploaded code lives: `<data>/uploads/<app-id>`.
    pub fn upload_dir(&self, app_id: &str) -> PathBuf {
        self.dir.path().join("uploads").join(app_id)
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn request(method: Method, path: &str, cred: &Cred) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("x-forwarded-for", "192.0.2.1");
        match cred {
            Cred::None => {}
            Cred::Cookie(c) => b = b.header(header::COOKIE, format!("rsp_session={c}")),
            Cred::Bearer(t) => b = b.header(header::AUTHORIZATION, format!("Bearer {t}")),
        }
        b
    }

    /// A JSON request (`body: None` sends no body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
    ) -> Reply {
        self.call_with(method, path, cred, body, &[]).await
    }

    /// Like `call`, with extra headers that replace the defaults (e.g. `x-forwarded-for`).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
        headers: &[(&'static str, &str)],
    ) -> Reply {
        let mut b = Self::request(method, path, cred);
        let h = b.headers_mut().unwrap();
        for (name, value) in headers {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    /// A raw body with a content type (for malformed-JSON tests).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        content_type: &str,
        body: &str,
    ) -> Reply {
        let req = Self::request(method, path, cred)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    /// Log in and return the session id from the cookie. Each helper login comes from
    /// an address of its own, so helpers never use up the login rate limit of the
    /// address the tests send from.
    pub async fn login(&self, username: &str, password: &str) -> Cred {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip = format!("198.51.{}.{}", (n / 250) % 250, n % 250 + 1);
        let r = self
            .call_with(
                Method::POST,
                "/api/auth/login",
                &Cred::None,
                Some(serde_json::json!({ "username": username, "password": password })),
                &[("x-forwarded-for", &ip)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login failed: {}", r.text);
        Cred::Cookie(session_from(&r.headers).expect("session cookie"))
    }

    pub async fn admin(&self) -> Cred {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Create a user (as admin, password `USER_PASSWORD`) and log in as them.
    pub async fn user(&self, admin: &Cred, username: &str) -> (Cred, String) {
        let r = self
            .call(
                Method::POST,
                "/api/users",
                admin,
                Some(serde_json::json!({ "username": username, "password": USER_PASSWORD })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["user"]["id"].as_str().unwrap().to_string();
        (self.login(username, USER_PASSWORD).await, id)
    }

    /// The id of the authenticated user.
    pub async fn me(&self, cred: &Cred) -> String {
        let r = self.call(Method::GET, "/api/auth/me", cred, None).await;
        r.expect(StatusCode::OK)["user"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Create an upload app and return its id.
    pub async fn app(&self, cred: &Cred, slug: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/api/apps",
                cred,
                Some(serde_json::json!({ "name": format!("App {slug}"), "slug": slug })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["app"]["id"].as_str().unwrap().to_string()
    }

    /// Multipart upload of one file (field `file`).
    pub async fn upload(&self, cred: &Cred, app_id: &str, filename: &str, data: &[u8]) -> Reply {
        self.multipart(cred, app_id, &[Part::file("file", filename, data)])
            .await
    }

    /// Multipart upload of any parts (files and plain fields).
    pub async fn multipart(&self, cred: &Cred, app_id: &str, parts: &[Part<'_>]) -> Reply {
        self.multipart_with(cred, app_id, parts, &[]).await
    }

    /// Like `multipart`, with extra headers (e.g. `origin`) that replace the defaults.
    pub async fn multipart_with(
        &self,
        cred: &Cred,
        app_id: &str,
        parts: &[Part<'_>],
        headers: &[(&'static str, &str)],
    ) -> Reply {
        let boundary = "----rsp-test-boundary";
        let mut body = Vec::new();
        for part in parts {
            let filename = part
                .filename
                .map(|f| format!("; filename=\"{f}\""))
                .unwrap_or_default();
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"{filename}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            );
            body.extend_from_slice(part.data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut b = Self::request(Method::POST, &format!("/api/apps/{app_id}/upload"), cred);
        let h = b.headers_mut().unwrap();
        for (name, value) in headers {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let req = b
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }
}

/// One part of a multipart body.
pub struct Part<'a> {
    pub name: &'a str,
    /// `None` makes a plain form field.
    pub filename: Option<&'a str>,
    pub data: &'a [u8],
}

impl<'a> Part<'a> {
    pub fn file(name: &'a str, filename: &'a str, data: &'a [u8]) -> Self {
        Part {
            name,
            filename: Some(filename),
            data,
        }
    }

    pub fn field(name: &'a str, data: &'a [u8]) -> Self {
        Part {
            name,
            filename: None,
            data,
        }
    }
}

impl Reply {
    /// Assert the status (showing the body when it differs); returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.text);
        &self.body
    }

    /// Assert a contract error: this status and exactly `{"error": message}`.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode, message: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.body, serde_json::json!({ "error": message }));
    }

    /// Assert a 400 validation error with a `details` entry containing `needle`.
    #[track_caller]
    pub fn expect_invalid(&self, needle: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "body: {}", self.text);
        let error = self.body["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("Validation failed: "), "{}", self.text);
        let details = self.body["details"].as_array().expect("details");
        assert!(
            details
                .iter()
                .any(|d| d.as_str().is_some_and(|d| d.contains(needle))),
            "no detail containing {needle:?}: {}",
            self.text
        );
    }

    /// Assert a 400 whose `error` contains `needle` (bodies, ids, uploads).
    #[track_caller]
    pub fn expect_bad_request(&self, needle: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "body: {}", self.text);
        let error = self.body["error"].as_str().expect("an error message");
        assert!(error.contains(needle), "error {error:?} lacks {needle:?}");
    }
}

/// The session id from a `Set-Cookie: rsp_session=…` header.
pub fn session_from(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("rsp_session="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
}
