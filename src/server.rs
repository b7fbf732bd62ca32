//! `rserve-proxy serve`: pingora owns the public listener; the control plane (axum)
//! runs beside it as a pingora background service on a unix socket in the data dir.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::config::Config;
use crate::proxy::limits::Limits;
use crate::proxy::routes::Routes;
use crate::proxy::FrontDoor;
use crate::service::AppState;
use crate::spawner::docker::DockerSpawner;
use crate::spawner::Spawner;
use crate::store::{Store, StoreError};
use crate::upgrade::services::{Listening, UntilHandOver};
use crate::{api, bootstrap, runtime};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}; is another server using it? Set listen to another address")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create the control socket {path}: {source}")]
    ControlSocket {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the proxy: {0}")]
    Proxy(String),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Run the server until SIGTERM/SIGINT; returns after a graceful drain. SIGHUP
/// reloads the config from nowhere but the environment (see [`serve_as`]).
pub fn serve(config: Config) -> Result<(), ServeError> {
    serve_as(config, false, crate::reload::Source::default())
}

/// [`serve`], with SIGHUP re-reading the config from `source` (reload.rs). With
/// `upgrade`: started by a running server to take over from it (`serve --upgrade`, see
/// `crate::upgrade`): the listening sockets come from it, the store and the control
/// socket once it lets go of them.
pub fn serve_as(
    config: Config,
    upgrade: bool,
    source: crate::reload::Source,
) -> Result<(), ServeError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    // How this process was started, for its successor (before a package replaces it).
    let relaunch = crate::upgrade::Relaunch::of_this_process().ok();

    let mut server = pingora_server(&config, upgrade);
    let (store, control) = if upgrade {
        // The old process sends the listening sockets over the upgrade socket (pingora's
        // bootstrap waits for them; it exits with status 1 when none come).
        server.bootstrap();
        let control =
            crate::upgrade::take_control_socket(&config.control_socket()).map_err(|source| {
                ServeError::ControlSocket {
                    path: config.control_socket().display().to_string(),
                    source,
                }
            })?;
        let store = crate::upgrade::open_store_when_free(
            &config.state_file(),
            std::time::Duration::from_secs(60),
        )?;
        (store, Some(control))
    } else {
        // Opening the store first also takes its lock: a second server on the same data
        // dir stops here, before touching the socket of the first.
        let store = Store::open(&config.state_file())?;
        // Fail with a clear message if the port is taken (pingora would only log it).
        check_free(config.listen)?;
        if config.tls_mode != crate::config::TlsMode::Off {
            check_free(config.tls_listen)?;
        }
        server.bootstrap();
        (store, None)
    };
    bootstrap::ensure_admin(&store, &data_dir, config.admin_password.as_deref())?;

    let started = std::time::SystemTime::now();
    let metrics_listener = match config.metrics_listen {
        // The old process closes its own once it has let go of the store.
        Some(addr) if upgrade => Some(retry_for(std::time::Duration::from_secs(10), || {
            bind_metrics_listener(addr)
        })?),
        Some(addr) => Some(bind_metrics_listener(addr)?),
        None => None,
    };
    let alerts = crate::alerts::Alerts::from_config(&config);
    // Before pingora: a certificate at hand is served from the first handshake, and
    // an unusable cert file stops the start with a message naming it.
    let mut tls = crate::tls::prepare(&config, &store)?;
    if let Some(crate::tls::Keeper::Acme(m)) = tls.as_mut().map(|t| &mut t.keeper) {
        m.set_alerts(alerts.clone());
    }
    let control = match control {
        Some(c) => c,
        None => bind_control_socket(&config)?,
    };
    // `backup` and `admin …` reach the running server here (ops/socket.rs); after an
    // upgrade, the new process binds it afresh at the same path.
    let admin =
        crate::ops::socket::bind(&data_dir).map_err(|source| ServeError::ControlSocket {
            path: crate::ops::socket::path(&data_dir).display().to_string(),
            source,
        })?;
    raise_nofile_limit();

    // The hand-over's signals (see `crate::upgrade`): stop what uses the store, stop
    // accepting; and the control plane reporting that it has stopped.
    let hand_over = tokio::sync::watch::channel(false).0;
    let stop_accepting = tokio::sync::watch::channel(false).0;
    let (control_stopped_tx, control_stopped) = tokio::sync::watch::channel(false);

    // The runtime publishes app routes here (see proxy::routes::Routes).
    let store_handle = store.clone();
    let routes = Routes::new();
    let static_entries = publish_static_routes(&routes, &config.static_routes);
    let trusted = Arc::new(crate::proxy::forwarded::TrustedProxies::new(
        config.trusted_proxies.clone(),
    ));
    let login_limiter = Arc::new(crate::auth::rate_limit::RateLimiter::new(
        config.login_attempts_per_minute,
        std::time::Duration::from_secs(60),
    ));
    let live_limits = Arc::new(crate::service::LiveLimits::new(&config));
    server.add_service(background_service(
        "config reload",
        crate::reload::Reloader::new(
            source,
            config.clone(),
            crate::reload::Targets {
                trusted: trusted.clone(),
                login_limiter: login_limiter.clone(),
                limits: live_limits.clone(),
                alerts: alerts.clone(),
            },
        ),
    ));
    let config = Arc::new(config);
    let control_plane = ControlPlane {
        login_limiter,
        live_limits,
        listener: Mutex::new(Some(control)),
        admin_listener: Mutex::new(Some(admin)),
        stopped: control_stopped_tx,
        instance: store.instance_id()?.to_string(),
        store: store.clone(),
        config: config.clone(),
        routes: routes.clone(),
        static_entries,
        observe: crate::prometheus::Sources {
            routes: routes.clone(),
            alerts,
            tls: tls.as_ref().map(|t| t.resolver.clone()),
            started,
        },
        metrics_listener: Mutex::new(metrics_listener),
    };
    server.add_service(background_service(
        "control plane",
        UntilHandOver::new(control_plane, hand_over.subscribe()),
    ));

    let limits = limits(&config);
    let mut front = FrontDoor::new(&config.control_socket(), routes.clone(), limits)
        .map_err(|e| ServeError::Proxy(e.to_string()))?
        .with_isolation(isolation(&config))
        .with_trusted_proxies(trusted.clone());
    let mut tls_listener = None;
    if let Some(tls) = tls {
        front = front.with_https(crate::proxy::https::HttpsPolicy::new(
            tls.challenges.clone(),
            config.tls_listen.port(),
            config.hsts_max_age_secs,
        ));
        let tls_keeper_name = tls.keeper.name();
        // HTTP/1.1 only (no h2 in ALPN), like the plain listener: the data plane's
        // WebSocket handling is HTTP/1.1.
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| ServeError::Proxy(e.to_string()))?;
        settings.set_cert_resolver(tls.resolver.clone());
        tls_listener = Some(settings);
        let keeper = UntilHandOver::new(tls.keeper, hand_over.subscribe());
        server.add_service(background_service(tls_keeper_name, keeper));
    }
    let mut proxy = crate::proxy::service(&server.configuration, front, routes, limits)
        .map_err(|e| ServeError::Proxy(format!("cannot start the relay threads: {e}")))?;
    proxy.add_listener(crate::proxy::listener(&config.listen.to_string()));
    if let Some(settings) = tls_listener {
        crate::proxy::add_tls_listener(&mut proxy, config.tls_listen, settings);
    }
    let Some(plane) = proxy.app_logic() else {
        return Err(ServeError::Proxy("the data plane is missing".into()));
    };
    let (admission, drain) = (plane.admission(), plane.drain());
    let trim = crate::proxy::memory::TrimAfterBursts {
        admission: admission.clone(),
    };
    server.add_service(background_service("memory trim", trim));
    let listen_fds = Arc::new(Mutex::new(None));
    server.add_service(Listening::new(
        proxy,
        stop_accepting.subscribe(),
        listen_fds.clone(),
    ));
    let upgrader = relaunch.map(|relaunch| {
        Arc::new(crate::upgrade::Upgrader {
            relaunch,
            data_dir: data_dir.clone(),
            control_socket: config.control_socket(),
            fds: listen_fds,
            stop_accepting,
            hand_over,
            control_stopped,
            store: store_handle,
            drain,
            admission,
            drain_limit: config.upgrade_drain,
            busy: std::sync::atomic::AtomicBool::new(false),
        })
    });
    // Under systemd: READY=1 once the listener and control plane answer, then the
    // watchdog (src/systemd.rs). Does nothing elsewhere.
    server.add_service(background_service(
        "systemd notifier",
        crate::systemd::Notifier {
            control_socket: config.control_socket(),
            listen: config.listen,
            status: format!("serving on {}", config.listen),
        },
    ));

    tracing::info!(
        listen = %config.listen,
        tls = config.tls_mode.as_str(),
        tls_listen = %config.tls_listen,
        data_dir = %config.data_dir.display(),
        upgrade,
        "rserve-proxy serving"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            upgrader,
            data_dir: data_dir.clone(),
            upgraded: upgrade,
        }),
    });
    if crate::upgrade::handed_over() {
        // The control socket and the pid file are the new process's now.
        tracing::info!("rserve-proxy stopped after handing over");
        return Ok(());
    }
    let _ = std::fs::remove_file(config.control_socket());
    let _ = std::fs::remove_file(crate::ops::socket::path(&config.data_dir));
    crate::upgrade::forget_pid_file(&data_dir);
    tracing::info!("rserve-proxy stopped");
    Ok(())
}

/// The pingora server: our own `ServerConf`; with `upgrade`, its bootstrap receives
/// the listening sockets of the running server.
fn pingora_server(config: &Config, upgrade: bool) -> Server {
    let data_dir = &config.data_dir;
    let mut conf = ServerConf {
        threads: config.threads,
        // Per instance, not pingora's shared /tmp defaults: tests run several servers.
        // (pingora writes its pid file only when daemonizing; ours: `crate::upgrade`.)
        pid_file: crate::upgrade::pid_file(data_dir)
            .to_string_lossy()
            .into_owned(),
        upgrade_sock: crate::upgrade::upgrade_sock(data_dir)
            .to_string_lossy()
            .into_owned(),
        // The old process sends the sockets within seconds of seeing the upgrade socket.
        upgrade_sock_connect_accept_max_retries: Some(30),
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        // pingora's "fast" timer keeps a thread waking 100 times a second for ever once
        // any connection has used it (every accepted connection does, for its 60 s
        // handshake timeout). Those wake-ups land between the hops of proxied messages
        // and show in the tail latency; tokio's timers cost nothing while nothing is due.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    };
    conf.daemon = false;
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    Server::new_with_opt_and_conf(Some(opt), conf)
}

/// Fail with a clear message if `addr` is taken (pingora would only log it).
fn check_free(addr: std::net::SocketAddr) -> Result<(), ServeError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// `f` until it succeeds or `limit` passes (the last error then).
fn retry_for<T, E>(
    limit: std::time::Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match f() {
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// `static_routes` from the config: each slug a running app (not in the store, not in
/// the API) whose replicas are the given addresses. Meant for benchmarks and debugging,
/// hence the warning.
pub fn publish_static_routes(
    routes: &Routes,
    static_routes: &[(String, std::net::SocketAddr)],
) -> Vec<crate::proxy::routes::AppEntry> {
    use crate::proxy::routes::{AppEntry, AppPhase, ReplicaEntry};
    let mut entries: Vec<AppEntry> = Vec::new();
    for (slug, addr) in static_routes {
        let replica = ReplicaEntry {
            addr: *addr,
            healthy: true,
        };
        match entries.iter_mut().find(|e| &e.slug == slug) {
            Some(e) => e.replicas.push(replica),
            None => entries.push(AppEntry {
                app_id: uuid::Uuid::new_v4(),
                slug: slug.clone(),
                phase: AppPhase::Running,
                replicas: vec![replica],
            }),
        }
    }
    for e in &entries {
        let replicas: Vec<String> = e.replicas.iter().map(|r| r.addr.to_string()).collect();
        tracing::warn!(slug = %e.slug, replicas = %replicas.join(","), "static route from config (static_routes)");
        routes.upsert(e.clone());
    }
    entries
}

/// The data plane's limits from the config.
pub fn limits(config: &Config) -> Limits {
    Limits {
        max_websockets_per_app: config.app_max_websockets,
        idle_timeout: config.app_idle_timeout,
        max_body_bytes: config.app_max_body_bytes,
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        head_timeout: config.request_head_timeout,
        tls_handshake_timeout: config.tls_handshake_timeout,
    }
}

/// The front door's isolation settings from the config.
pub fn isolation(config: &Config) -> crate::proxy::isolation::Isolation {
    crate::proxy::isolation::Isolation {
        admin_host: config.admin_host.clone(),
        csp_sandbox: config.app_csp_sandbox,
    }
}

/// Raise the soft open-files limit to the hard limit: every proxied connection holds
/// two descriptors, and distributions start services with a soft limit of 1024.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return None;
        }
    };
    if soft >= hard {
        tracing::info!(limit = soft, "open-files limit");
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = hard, "open-files limit raised");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
            Some(soft)
        }
    }
}

/// `metrics_listen`, bound before pingora starts so a taken port stops the start.
fn bind_metrics_listener(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let err = |source| ServeError::Listen {
        addr: format!("{addr} (metrics_listen)"),
        source,
    };
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

fn bind_control_socket(config: &Config) -> Result<StdUnixListener, ServeError> {
    let path = config.control_socket();
    let err = |source| ServeError::ControlSocket {
        path: path.display().to_string(),
        source,
    };
    // A socket file left by a crashed run would make bind fail; the store lock above
    // proves no live server owns it.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = StdUnixListener::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// SIGTERM and SIGINT both drain gracefully (pingora's default makes SIGINT abrupt).
/// SIGUSR2 hands over to the binary at this process's path (`crate::upgrade`).
struct Signals {
    upgrader: Option<Arc<crate::upgrade::Upgrader>>,
    data_dir: std::path::PathBuf,
    /// Started by `serve --upgrade`.
    upgraded: bool,
}

/// A SIGTERM/SIGINT shutdown: tell systemd (STOPPING=1), then drain. Not used by a
/// process that has handed over to its successor: that one is the service now.
fn stopping() -> ShutdownSignal {
    crate::systemd::stopping();
    ShutdownSignal::GracefulTerminate
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int, mut usr2) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        ) {
            (Ok(t), Ok(i), Ok(u)) => (t, i, u),
            _ => {
                tracing::error!("cannot install signal handlers; use SIGKILL to stop");
                return std::future::pending().await;
            }
        };
        // Serving, and SIGUSR2 no longer kills: name this process in the pid file.
        crate::upgrade::announce(&self.data_dir, self.upgraded);
        loop {
            tokio::select! {
                _ = term.recv() => return stopping(),
                _ = int.recv() => return stopping(),
                _ = usr2.recv() => {}
            }
            let Some(upgrader) = &self.upgrader else {
                tracing::error!("upgrade requested, but this process cannot find its own binary; restart the service instead");
                continue;
            };
            tracing::info!("upgrade requested (SIGUSR2)");
            match upgrader.hand_over().await {
                Ok(new_pid) => {
                    let interrupt = async {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                    };
                    upgrader.drain(new_pid, interrupt).await;
                    return ShutdownSignal::GracefulTerminate;
                }
                Err(e) => {
                    tracing::error!(error = %e, "upgrade failed");
                    crate::upgrade::record_failure(&self.data_dir, &e);
                }
            }
        }
    }
}

/// The control plane: axum on the unix socket, plus its housekeeping loops.
struct ControlPlane {
    listener: Mutex<Option<StdUnixListener>>,
    /// `<data>/admin.sock`: backup and user administration for the local operator.
    admin_listener: Mutex<Option<StdUnixListener>>,
    /// Set once it has stopped serving (the hand-over then closes the store).
    stopped: tokio::sync::watch::Sender<bool>,
    /// Labels this data dir's containers (see `Store::instance_id`).
    instance: String,
    /// The proxy's route table, which the runtime keeps in step with the apps.
    routes: Routes,
    /// Routes from `static_routes`, kept in every table the runtime publishes.
    static_entries: Vec<crate::proxy::routes::AppEntry>,
    store: Store,
    config: Arc<Config>,
    /// For `/metrics` and the alert API; the alert tasks start with the control plane.
    observe: crate::prometheus::Sources,
    /// `metrics_listen`, when set: served from here without authentication.
    metrics_listener: Mutex<Option<std::net::TcpListener>>,
    /// Shared with the config reload (`login_attempts_per_minute`).
    login_limiter: Arc<crate::auth::rate_limit::RateLimiter>,
    /// Shared with the config reload (`upload_max_mb`, `session_ttl_hours`).
    live_limits: Arc<crate::service::LiveLimits>,
}

#[async_trait]
impl BackgroundService for ControlPlane {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
        let Some(std_listener) = taken else {
            return;
        };
        let listener = match tokio::net::UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "control plane cannot use its socket");
                return;
            }
        };
        let docker = DockerSpawner::new(&self.config.docker_socket, &self.instance);
        tokio::spawn(docker.clone().run_watcher(shutdown.clone()));
        let spawner: Arc<dyn Spawner> = Arc::new(docker);
        let mut state = AppState::new(self.store.clone(), spawner.clone(), self.config.clone());
        state.observe = self.observe.clone();
        state.login_limiter = self.login_limiter.clone();
        state.limits = self.live_limits.clone();
        self.observe.alerts.start(shutdown.clone());
        let open_metrics = self.metrics_listener.lock().ok().and_then(|mut l| l.take());
        if let Some(l) = open_metrics {
            tokio::spawn(serve_open_metrics(l, state.clone(), shutdown.clone()));
        }
        if self.config.metrics_interval_secs > 0 {
            tokio::spawn(crate::metrics::collector::run(
                crate::metrics::collector::Collector {
                    spawner: spawner.clone(),
                    routes: self.routes.clone(),
                    store: self.store.clone(),
                    latest: state.metrics.clone(),
                    interval: std::time::Duration::from_secs(self.config.metrics_interval_secs),
                    retention: self.config.retention(),
                    audit_retention: (self.config.audit_retention_days > 0).then(|| {
                        std::time::Duration::from_secs(self.config.audit_retention_days * 86_400)
                    }),
                },
                shutdown.clone(),
            ));
        }
        tokio::spawn(runtime::run(
            runtime::Runtime {
                store: self.store.clone(),
                spawner,
                routes: self.routes.clone(),
                static_entries: self.static_entries.clone(),
                apps_changed: state.apps_changed.clone(),
                alerts: self.observe.alerts.clone(),
            },
            shutdown.clone(),
        ));
        tokio::spawn(purge_sessions(self.store.clone(), shutdown.clone()));
        let admin = self.admin_listener.lock().ok().and_then(|mut l| l.take());
        if let Some(l) = admin {
            tokio::spawn(crate::ops::socket::serve(
                l,
                state.clone(),
                shutdown.clone(),
            ));
        }
        let app = api::router(state);
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "control plane stopped with an error");
        }
        self.stopped.send_replace(true);
    }
}

/// `metrics_listen`: `/metrics` without authentication, until shutdown.
async fn serve_open_metrics(
    listener: std::net::TcpListener,
    state: AppState,
    mut shutdown: ShutdownWatch,
) {
    let addr = listener.local_addr().ok();
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics_listen: cannot use the listener");
            return;
        }
    };
    tracing::info!(addr = ?addr, "serving /metrics without authentication (metrics_listen)");
    let result = axum::serve(listener, api::prometheus::open_router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "metrics_listen stopped with an error");
    }
}

/// Remove expired sessions every ten minutes.
async fn purge_sessions(store: Store, mut shutdown: ShutdownWatch) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let store = store.clone();
        let now = time::OffsetDateTime::now_utc();
        match tokio::task::spawn_blocking(move || store.purge_expired_sessions(now)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "expired sessions removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not purge expired sessions"),
            _ => {}
        }
    }
}
