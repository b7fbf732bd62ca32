//! Test harness: the real router over a real redb store in a temp dir. The only fake
//! is the spawner (allowed for these tests): it keeps app status in memory.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

use rserve_proxy::config::Config;
use rserve_proxy::service::AppState;
use rserve_proxy::spawner::{
    AppRuntime, AppSpec, AppStatus, ContainerInfo, LogSource, LogStream, Spawner, SpawnerError,
};
use rserve_proxy::store::Store;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// In-memory spawner: `start` makes an app running with `replicas` fake containers.
#[derive(Default)]
pub struct FakeSpawner {
    pub down: std::sync::atomic::AtomicBool,
    pub running: Mutex<HashMap<Uuid, u32>>,
    pub calls: Mutex<Vec<String>>,
}

impl FakeSpawner {
    fn check(&self) -> Result<(), SpawnerError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
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
        // The token-use recorder holds a store clone until its channel closes.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        Self::open(dir, |_| {}).await
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
        let b = Self::request(method, path, cred);
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

    /// Log in and return the session id from the cookie.
    pub async fn login(&self, username: &str, password: &str) -> Cred {
        let r = self
            .call(
                Method::POST,
                "/api/auth/login",
                &Cred::None,
                Some(serde_json::json!({ "username": username, "password": password })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login failed: {}", r.text);
        Cred::Cookie(session_from(&r.headers).expect("session cookie"))
    }

    pub async fn admin(&self) -> Cred {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Create a user (as admin) and log in as them.
    pub async fn user(&self, admin: &Cred, username: &str) -> (Cred, String) {
        let r = self
            .call(
                Method::POST,
                "/api/users",
                admin,
                Some(serde_json::json!({ "username": username, "password": "user-password-1" })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["user"]["id"].as_str().unwrap().to_string();
        (self.login(username, "user-password-1").await, id)
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

    /// Multipart upload of one file.
    pub async fn upload(&self, cred: &Cred, app_id: &str, filename: &str, data: &[u8]) -> Reply {
        let boundary = "----rsp-test-boundary";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = Self::request(Method::POST, &format!("/api/apps/{app_id}/upload"), cred)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
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
