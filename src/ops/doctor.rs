//! `rserve-proxy doctor`: checks what a server needs from its host, one line per
//! check, with a fix for each failure. Read-only: it opens no store and binds a port
//! only for the instant of asking whether it is free.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use bollard::{Docker, API_DEFAULT_VERSION};

use crate::config::{Config, TlsMode};

use super::socket::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Worth knowing, not a failure (exit code stays 0).
    Warn,
    Fail,
    /// Could not be checked because an earlier check failed.
    Skip,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    /// `FAIL  docker      cannot reach … — fix: …`
    pub fn line(&self) -> String {
        let tag = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        };
        let mut s = format!("{tag:<5} {:<11} {}", self.name, self.detail);
        if let Some(fix) = &self.fix {
            s.push_str(" — fix: ");
            s.push_str(fix);
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The base image new apps build on (`rVersion` "latest" by default).
    pub base_image: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base_image: format!("{}:latest", crate::spawner::docker::BASE_IMAGE_REPO),
        }
    }
}

/// Every check, in order.
pub fn run(config: &Config, options: &Options) -> Vec<Check> {
    let mut checks = Vec::new();
    let server = running_server(config);
    checks.push(match &server {
        Some(s) => Check::ok(
            "server",
            format!("running (pid {}, version {})", s.pid, s.version),
        ),
        None => Check::ok("server", "not running on this data dir"),
    });
    checks.push(data_dir(config));
    let docker_time = match super::runtime() {
        Ok(rt) => rt.block_on(docker_checks(config, options, &mut checks)),
        Err(e) => {
            checks.push(Check::fail("docker", e, "report this as a bug"));
            None
        }
    };
    checks.extend(ports(config, server.as_ref()));
    checks.push(clock(config, docker_time));
    checks.extend(tls(config));
    checks
}

/// The running server's own account, through the admin socket.
fn running_server(config: &Config) -> Option<Status> {
    if !super::server_running(config) {
        return None;
    }
    let rt = super::runtime().ok()?;
    let socket = super::socket::path(&config.data_dir);
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3),
            super::client::json::<Status>(&socket, http::Method::GET, "/v1/status", None),
        )
        .await
        .ok()?
        .ok()
    })
}

fn data_dir(config: &Config) -> Check {
    const NAME: &str = "data dir";
    let dir = &config.data_dir;
    let me = nix::unistd::geteuid().as_raw();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(
                NAME,
                format!(
                    "{} does not exist yet; the server creates it",
                    dir.display()
                ),
            )
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read {}: {e}", dir.display()),
                format!(
                    "make {} readable by the user the server runs as",
                    dir.display()
                ),
            )
        }
    };
    if !meta.is_dir() {
        return Check::fail(
            NAME,
            format!("{} is not a directory", dir.display()),
            "set data_dir (or --data-dir) to a directory",
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Check::fail(
            NAME,
            format!(
                "{} is mode {mode:04o}: other users can write into it (and replace the store or app code)",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        );
    }
    if meta.uid() != me && me != 0 {
        return Check::fail(
            NAME,
            format!(
                "{} belongs to uid {}, but this runs as uid {me}",
                dir.display(),
                meta.uid()
            ),
            format!(
                "run the server (and doctor) as its owner, e.g. `sudo -u rserve-proxy rserve-proxy doctor`, or `chown -R {me} {}`",
                dir.display()
            ),
        );
    }
    let state = config.state_file();
    if let Ok(m) = std::fs::metadata(&state) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Check::fail(
                NAME,
                format!(
                    "{} is mode {mode:04o}: it holds password hashes, sessions and TLS keys",
                    state.display()
                ),
                format!("chmod 600 {}", state.display()),
            );
        }
        if m.uid() != meta.uid() {
            return Check::fail(
                NAME,
                format!(
                    "{} belongs to uid {}, its data dir to uid {}",
                    state.display(),
                    m.uid(),
                    meta.uid()
                ),
                format!("chown -R {} {}", meta.uid(), dir.display()),
            );
        }
    }
    Check::ok(
        NAME,
        format!(
            "{} (owner uid {}, mode {mode:04o})",
            dir.display(),
            meta.uid()
        ),
    )
}

/// Docker reachable and its version, then the base image. Returns the daemon's clock.
async fn docker_checks(
    config: &Config,
    options: &Options,
    checks: &mut Vec<Check>,
) -> Option<SystemTime> {
    let socket = config.docker_socket.display().to_string();
    let fix = format!(
        "start Docker (`systemctl start docker`), check docker_socket (now {socket}), and let this user use it (`usermod -aG docker $USER`, then log in again)"
    );
    if !config.docker_socket.exists() {
        checks.push(Check::fail(
            "docker",
            format!("{socket} does not exist"),
            fix,
        ));
        checks.push(Check::skip("base image", "Docker unreachable"));
        return None;
    }
    let connected = async {
        let d = Docker::connect_with_unix(&socket, 5, API_DEFAULT_VERSION)
            .map_err(|e| e.to_string())?;
        let d = d.negotiate_version().await.map_err(|e| e.to_string())?;
        let v = d.version().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((d, v))
    };
    let (docker, version) = match tokio::time::timeout(Duration::from_secs(5), connected).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            checks.push(Check::fail(
                "docker",
                format!("cannot use the Docker Engine at {socket}: {e}"),
                fix,
            ));
            checks.push(Check::skip("base image", "Docker unreachable"));
            return None;
        }
        Err(_) => {
            checks.push(Check::fail(
                "docker",
                format!("the Docker Engine at {socket} did not answer within 5 s"),
                fix,
            ));
            checks.push(Check::skip("base image", "Docker unreachable"));
            return None;
        }
    };
    checks.push(Check::ok(
        "docker",
        format!(
            "Docker {} (API {}) at {socket}",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ),
    ));
    checks.push(match docker.inspect_image(&options.base_image).await {
        Ok(i) => Check::ok(
            "base image",
            format!(
                "{} present ({})",
                options.base_image,
                i.id.unwrap_or_default().chars().take(19).collect::<String>()
            ),
        ),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Check::fail(
            "base image",
            format!("{} is missing: apps on it cannot be built until it exists", options.base_image),
            "`rserve-proxy images build-base --from-debian` (a minute or two), or start an app: the server then builds it first",
        ),
        Err(e) => Check::fail(
            "base image",
            format!("cannot inspect {}: {e}", options.base_image),
            "check that Docker works (`docker image ls`)",
        ),
    });
    let info = docker.info().await.ok()?;
    let t = time::OffsetDateTime::parse(
        info.system_time.as_deref()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(SystemTime::from(t))
}

fn ports(config: &Config, server: Option<&Status>) -> Vec<Check> {
    let mut wanted = vec![("listen", config.listen)];
    if config.tls_mode != TlsMode::Off {
        wanted.push(("tls_listen", config.tls_listen));
    }
    if let Some(m) = config.metrics_listen {
        wanted.push(("metrics_listen", m));
    }
    wanted
        .into_iter()
        .map(|(key, addr)| port(key, addr, server))
        .collect()
}

fn port(key: &'static str, addr: SocketAddr, server: Option<&Status>) -> Check {
    let ours = server.is_some_and(|s| {
        [
            Some(&s.listen),
            s.tls_listen.as_ref(),
            s.metrics_listen.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|a| a == &addr.to_string())
    });
    if ours {
        return Check::ok(key, format!("{addr} is served by this rserve-proxy"));
    }
    match TcpListener::bind(addr) {
        Ok(_) => Check::ok(key, format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Check::fail(
            key,
            format!("{addr} is taken by another process"),
            format!(
                "`ss -ltnp 'sport = :{}'` shows which; stop it or set {key} to another address",
                addr.port()
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::fail(
            key,
            format!("may not bind {addr}: {e}"),
            "ports below 1024 need CAP_NET_BIND_SERVICE: the systemd unit grants it; otherwise `sudo setcap cap_net_bind_service=+ep $(command -v rserve-proxy)` or use a port from 1024 up",
        ),
        Err(e) => Check::fail(
            key,
            format!("cannot bind {addr}: {e}"),
            format!("set {key} to an address of this host"),
        ),
    }
}

/// The clock: certificates, sessions, API token expiry and the metrics history all
/// trust it. Compared with a floor (a clock at 1970 after a dead RTC battery), the
/// newest write to the store (a clock that went back) and Docker's (a remote daemon,
/// or a container's view).
fn clock(config: &Config, docker_time: Option<SystemTime>) -> Check {
    const NAME: &str = "clock";
    let fix = "turn on time synchronisation (`timedatectl set-ntp true`; check with `timedatectl`)";
    let now = SystemTime::now();
    let floor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600); // 2025-01-01
    let show = |t: SystemTime| {
        time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if now < floor {
        return Check::fail(
            NAME,
            format!("the clock says {}, before this release was made", show(now)),
            fix,
        );
    }
    if let Ok(m) = std::fs::metadata(config.state_file()).and_then(|m| m.modified()) {
        if let Ok(ahead) = m.duration_since(now) {
            if ahead > Duration::from_secs(60) {
                return Check::fail(
                    NAME,
                    format!(
                        "{} was written at {}, {} s after now ({}): the clock went back",
                        config.state_file().display(),
                        show(m),
                        ahead.as_secs(),
                        show(now)
                    ),
                    fix,
                );
            }
        }
    }
    if let Some(d) = docker_time {
        let skew = match d.duration_since(now) {
            Ok(ahead) => ahead,
            Err(e) => e.duration(),
        };
        if skew > Duration::from_secs(30) {
            return Check::fail(
                NAME,
                format!(
                    "this host says {}, the Docker daemon {} ({} s apart)",
                    show(now),
                    show(d),
                    skew.as_secs()
                ),
                fix,
            );
        }
        return Check::ok(
            NAME,
            format!(
                "{} (Docker daemon within {} ms)",
                show(now),
                skew.as_millis()
            ),
        );
    }
    Check::ok(NAME, show(now))
}

fn tls(config: &Config) -> Vec<Check> {
    match config.tls_mode {
        TlsMode::Off => vec![Check::ok(
            "tls",
            "off: plain HTTP on listen (fine behind a TLS proxy; for a public server set tls_mode = \"acme\")",
        )],
        TlsMode::Files => [
            ("tls_cert_file", &config.tls_cert_file),
            ("tls_key_file", &config.tls_key_file),
        ]
        .into_iter()
        .map(|(key, path)| match path {
            Some(p) => match std::fs::File::open(p) {
                Ok(_) => Check::ok("tls", format!("{key} {} is readable", p.display())),
                Err(e) => Check::fail(
                    "tls",
                    format!("{key} {}: {e}", p.display()),
                    format!("make {} readable by the server's user", p.display()),
                ),
            },
            None => Check::fail("tls", format!("{key} is not set"), format!("set {key}")),
        })
        .collect(),
        TlsMode::Acme => acme(config),
    }
}

/// ACME HTTP-01: the CA connects to port 80 of each domain, so each must resolve to
/// this host and port 80 must reach our listener.
fn acme(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let local = local_addresses();
    for domain in &config.acme_domains {
        let resolved: Vec<IpAddr> = match (domain.as_str(), 80).to_socket_addrs() {
            Ok(a) => a.map(|a| a.ip()).collect(),
            Err(e) => {
                out.push(Check::fail(
                    "acme domain",
                    format!("{domain} does not resolve: {e}"),
                    format!("create an A (and AAAA) record for {domain} with this server's public address"),
                ));
                continue;
            }
        };
        let list = resolved
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if resolved.iter().any(|a| local.contains(a)) {
            out.push(Check::ok(
                "acme domain",
                format!("{domain} resolves to {list}, an address of this host"),
            ));
        } else {
            out.push(Check::warn(
                "acme domain",
                format!("{domain} resolves to {list}, none of them an address of this host"),
                format!("fine if the address forwards port 80 here (NAT, cloud public IP); otherwise point {domain} at this server"),
            ));
        }
    }
    if config.listen.port() != 80 {
        out.push(Check::warn(
            "acme port 80",
            format!(
                "listen is {}, but the CA connects to port 80",
                config.listen
            ),
            "set listen = \"0.0.0.0:80\", unless port 80 is forwarded to it",
        ));
    }
    let target = SocketAddr::new(
        if config.listen.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            config.listen.ip()
        },
        config.listen.port(),
    );
    let host = config.acme_domains.first().cloned().unwrap_or_default();
    out.push(match probe_challenge(target, &host) {
        Ok(status) => Check::ok(
            "acme port 80",
            format!("{target} answers challenge requests ({status})"),
        ),
        Err(e) => Check::fail(
            "acme port 80",
            format!("{target} does not answer an HTTP-01 challenge request: {e}"),
            "start the server (`systemctl start rserve-proxy`) and let nothing else hold port 80",
        ),
    });
    out
}

/// `GET /.well-known/acme-challenge/…` as the CA would send it; any HTTP answer from
/// our responder (404 for an unknown token) proves the path works.
fn probe_challenge(target: SocketAddr, host: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /.well-known/acme-challenge/rserve-proxy-doctor HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&head[..n]);
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.starts_with("HTTP/1.") {
        Ok(line)
    } else {
        Err(format!("not an HTTP answer: {line:?}"))
    }
}

fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}
