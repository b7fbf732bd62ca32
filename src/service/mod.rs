//! Domain operations: plain async functions with no HTTP types. The REST handlers (and
//! the UI later) only extract, call one of these, and map the result — so the two
//! cannot disagree.

pub mod app_code;
pub mod apps;
pub mod auth;
pub mod metrics;
pub mod users;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::rate_limit::RateLimiter;
use crate::config::Config;
use crate::model::{Role, User};
use crate::spawner::{Spawner, SpawnerError};
use crate::store::{Store, StoreError};

/// Everything the control plane shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub spawner: Arc<dyn Spawner>,
    pub config: Arc<Config>,
    pub login_limiter: Arc<RateLimiter>,
    /// `upload_max_mb` and `session_ttl_hours` as a config reload last set them.
    pub limits: Arc<LiveLimits>,
    /// Uploads swap directories in place; one at a time keeps two swaps of the same
    /// app from interleaving. Uploads are rare, so one lock for all apps is enough.
    pub upload_lock: Arc<tokio::sync::Mutex<()>>,
    /// Signalled when apps are created, changed or deleted, so the runtime republishes
    /// the proxy's routes (a new app answers 503, a deleted one 404, at once).
    pub apps_changed: Arc<tokio::sync::Notify>,
    /// The collector's latest round (container and traffic samples), read lock-free.
    pub metrics: crate::metrics::Latest,
    /// What `/metrics` and the alert API read (the proxy's routes and counters, the
    /// alert handle, the TLS certificate). The server fills it; the default is empty.
    pub observe: crate::prometheus::Sources,
    token_touch: mpsc::Sender<(Uuid, OffsetDateTime)>,
}

/// Limits a config reload changes while running (reload.rs), read per request
/// without a lock.
#[derive(Debug)]
pub struct LiveLimits {
    upload_max_bytes: std::sync::atomic::AtomicU64,
    session_ttl_secs: std::sync::atomic::AtomicU64,
}

impl LiveLimits {
    pub fn new(config: &Config) -> Self {
        LiveLimits {
            upload_max_bytes: config.upload_max_bytes.into(),
            session_ttl_secs: config.session_ttl.as_secs().into(),
        }
    }

    pub fn upload_max_bytes(&self) -> u64 {
        self.upload_max_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(
            self.session_ttl_secs
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub fn set_upload_max_bytes(&self, bytes: u64) {
        self.upload_max_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_session_ttl(&self, ttl: Duration) {
        self.session_ttl_secs
            .store(ttl.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl AppState {
    /// Must be called inside a tokio runtime: it starts the task that records API
    /// tokens' `lastUsedAt` off the request path.
    pub fn new(store: Store, spawner: Arc<dyn Spawner>, config: Arc<Config>) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(auth::record_token_use(store.clone(), rx));
        AppState {
            login_limiter: Arc::new(RateLimiter::new(
                config.login_attempts_per_minute,
                Duration::from_secs(60),
            )),
            limits: Arc::new(LiveLimits::new(&config)),
            upload_lock: Arc::new(tokio::sync::Mutex::new(())),
            apps_changed: Arc::new(tokio::sync::Notify::new()),
            metrics: crate::metrics::Latest::new(),
            observe: Default::default(),
            store,
            spawner,
            config,
            token_touch: tx,
        }
    }
}

/// Who is asking: the authenticated user and how they authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The session id when authenticated by cookie.
    pub session_id: Option<String>,
    /// The token id when authenticated by bearer token.
    pub token_id: Option<Uuid>,
    /// What the credential allows (`Full` for sessions).
    pub scope: crate::model::TokenScope,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
}

/// Facts about the request that services record (audit) or act on (rate limit, cookies).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    /// The request reached us over TLS.
    pub tls: bool,
    pub now: Option<Instant>,
}

/// One domain error; the API (and later the UI) map it to responses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Too many login attempts; try again in {} s", retry_after.as_secs().max(1))]
    TooManyRequests { retry_after: Duration },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{message}")]
    BuildFailed { message: String, log: Vec<String> },
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn access_denied() -> Self {
        ServiceError::Forbidden("Access denied".into())
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken(name) => {
                ServiceError::Conflict(format!("A user named \"{name}\" already exists"))
            }
            StoreError::SlugTaken(slug) => {
                ServiceError::Conflict(format!("An app with slug \"{slug}\" already exists"))
            }
            StoreError::LastAdmin => ServiceError::Conflict(
                "This is the last admin; make another user admin first".into(),
            ),
            StoreError::UserOwnsApps(n) => ServiceError::Conflict(format!(
                "This user still owns {n} app(s); delete them first"
            )),
            StoreError::NotFound => ServiceError::NotFound("Not found".into()),
            // A request that reached a process in the middle of handing over (binary
            // upgrade): the new process answers the retry.
            StoreError::Closed => ServiceError::Unavailable(StoreError::Closed.to_string()),
            other => ServiceError::Internal(format!("storage error: {other}")),
        }
    }
}

impl From<SpawnerError> for ServiceError {
    fn from(e: SpawnerError) -> Self {
        match e {
            SpawnerError::Unavailable(_) => ServiceError::Unavailable(e.to_string()),
            SpawnerError::BuildFailed { reason, log } => ServiceError::BuildFailed {
                message: format!("Build failed: {reason}"),
                log,
            },
            SpawnerError::Conflict(m) => ServiceError::Conflict(m),
            SpawnerError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Run a short synchronous store operation off the async workers.
pub async fn with_store<T, F>(store: &Store, f: F) -> ServiceResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ServiceError::Internal(format!("store task failed: {e}")))?
        .map_err(ServiceError::from)
}

/// Run CPU-heavy or blocking work (password hashing, extraction) off the async workers.
pub async fn blocking<T, F>(f: F) -> ServiceResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("worker task failed: {e}")))
}
