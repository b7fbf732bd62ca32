//! HTTPS against the real binary: `files` mode with certificates made here, and `acme`
//! mode against a real ACME server (Pebble, from Debian's `pebble` package, with its
//! `pebble-challtestsrv` as the DNS server that resolves every name to 127.0.0.1).
//!
//! Pebble's HTTP-01 validation connects to our plain listener (its `httpPort` is set
//! to our `listen` port), so issuance goes through the same code path as production.
//! Clients here are rustls (reqwest) trusting only the test roots.
//!
//! Without Pebble the ACME tests skip with a message, except under CI=true, where they
//! fail: `scripts/install-test-deps.sh` installs it.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_rserve-proxy");
const PASSWORD: &str = "tls-test-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop, its stderr (or stdout) collected.
struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        Proc { child, output }
    }

    fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait (bounded).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not stop within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- certificates made here

/// A test CA that signs leaf certificates.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (chain PEM, key PEM) for `names` (DNS names or IP addresses).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Hex serial of a DER certificate.
fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(cert.raw_serial())
}

// ---------------------------------------------------------------- clients

/// A fresh client (no pooled connection: each request does a new handshake, so it
/// sees the certificate served now) trusting only `root_pem`, with `host` resolved to
/// loopback. Redirects are not followed.
fn tls_client(root_pem: &str, host: &str, port: u16) -> Client {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn plain_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The serial of the certificate the server presented for this response.
fn served_serial(r: &Response) -> String {
    let info = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    serial_of(info.peer_certificate().expect("a peer certificate"))
}

/// GET over HTTPS; the served serial, or `None` while the handshake fails.
fn probe(root_pem: &str, host: &str, port: u16) -> Option<String> {
    let r = tls_client(root_pem, host, port)
        .get(format!("https://{host}:{port}/api/health"))
        .send()
        .ok()?;
    (r.status() == StatusCode::OK).then(|| served_serial(&r))
}

// ---------------------------------------------------------------- the server

struct Server {
    proc: Proc,
    http_port: u16,
    https_port: u16,
}

impl Server {
    fn start(data: &Path, http_port: u16, https_port: u16, envs: &[(&str, String)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("serve")
            .env("RSP_ADMIN_PASSWORD", PASSWORD)
            .env("RSP_TLS_LISTEN", format!("127.0.0.1:{https_port}"))
            .env("RSP_SHUTDOWN_GRACE_SECS", "0")
            .env("RSP_LOG_FORMAT", "json")
            .env("RSP_LOG_LEVEL", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut server = Server {
            proc: Proc::spawn(cmd),
            http_port,
            https_port,
        };
        // Ready when the plain listener answers (with a redirect: TLS is on).
        wait_for("the plain listener", Duration::from_secs(20), || {
            assert!(
                server.proc.running(),
                "server exited:\n{}",
                server.proc.log()
            );
            plain_client()
                .get(format!("http://127.0.0.1:{http_port}/api/health"))
                .send()
                .ok()
        });
        server
    }

    fn log(&self) -> String {
        self.proc.log()
    }
}

// ---------------------------------------------------------------- files mode

fn write_pair(dir: &Path, name: &str, pair: &(String, String)) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &pair.0).unwrap();
    std::fs::write(&key, &pair.1).unwrap();
    (cert, key)
}

/// Replace a file the way renewal tools do: write aside, rename over.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn files_server(dir: &Path, ca: &TestCa, hsts: u64) -> (Server, PathBuf, PathBuf, String) {
    let first = ca.leaf(&["app.example", "127.0.0.1"]);
    let (cert, key) = write_pair(dir, "live", &first);
    let server = Server::start(
        &dir.join("data"),
        free_port(),
        free_port(),
        &[
            ("RSP_TLS_MODE", "files".into()),
            ("RSP_TLS_CERT_FILE", cert.display().to_string()),
            ("RSP_TLS_KEY_FILE", key.display().to_string()),
            ("RSP_HSTS_MAX_AGE_SECS", hsts.to_string()),
        ],
    );
    (server, cert, key, pem_serial(&first.0))
}

/// Serial of the first certificate in a PEM text.
fn pem_serial(pem_text: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem_text.as_bytes()).unwrap();
    serial_of(&der)
}

#[test]
fn files_mode_serves_the_certificate_and_reloads_replaced_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("rsp files test CA");
    let (server, cert, key, first_serial) = files_server(dir.path(), &ca, 0);
    let port = server.https_port;

    let serial = wait_for("HTTPS", Duration::from_secs(10), || {
        probe(&ca.pem(), "app.example", port)
    });
    assert_eq!(serial, first_serial);
    assert!(server.log().contains("TLS certificate loaded from files"));

    // Renewal: new pair written over the old files; served without a restart.
    let second = ca.leaf(&["app.example"]);
    let second_serial = pem_serial(&second.0);
    replace(&key, &second.1);
    replace(&cert, &second.0);
    let t0 = Instant::now();
    wait_for("the replaced certificate", Duration::from_secs(15), || {
        (probe(&ca.pem(), "app.example", port)? == second_serial).then_some(())
    });
    eprintln!("replaced certificate served after {:?}", t0.elapsed());
    assert!(server.log().contains("TLS certificate reloaded from files"));

    // A key that does not match: reported, and the working certificate stays.
    let third = ca.leaf(&["app.example"]);
    replace(&cert, &third.0);
    wait_for("the mismatch warning", Duration::from_secs(15), || {
        server
            .log()
            .contains("the private key does not belong to the certificate")
            .then_some(())
    });
    assert_eq!(
        probe(&ca.pem(), "app.example", port).as_deref(),
        Some(second_serial.as_str())
    );
    // Completing the pair fixes it.
    replace(&key, &third.1);
    let third_serial = pem_serial(&third.0);
    wait_for("the completed pair", Duration::from_secs(15), || {
        (probe(&ca.pem(), "app.example", port)? == third_serial).then_some(())
    });
}

#[test]
fn plain_http_redirects_to_https_except_acme_challenges() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("rsp redirect test CA");
    let (server, _, _, _) = files_server(dir.path(), &ca, 0);
    let (http, https) = (server.http_port, server.https_port);
    let c = plain_client();

    let r = c
        .get(format!("http://127.0.0.1:{http}/api/apps?x=1&y=a%20b"))
        .header("host", format!("app.example:{http}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!("https://app.example:{https}/api/apps?x=1&y=a%20b").as_str()
    );
    assert!(r.headers().get("strict-transport-security").is_none());
    assert!(r.headers().get("x-request-id").is_some());

    // Non-GET keeps its method with 308; an app path is redirected the same way.
    let r = c
        .post(format!("http://127.0.0.1:{http}/myapp/ws?token=1"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!("https://127.0.0.1:{https}/myapp/ws?token=1").as_str()
    );

    // The challenge path is answered here, not redirected (nothing pending in files
    // mode, so 404) — and not passed to the control plane.
    let r = c
        .get(format!(
            "http://127.0.0.1:{http}/.well-known/acme-challenge/some-token"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().unwrap().contains("No ACME challenge is pending"));

    // Over HTTPS the same request is served, not redirected.
    let r = tls_client(&ca.pem(), "app.example", https)
        .get(format!("https://app.example:{https}/api/health"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // HSTS is off unless configured.
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[test]
fn login_over_tls_sets_a_secure_cookie_and_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("rsp cookie test CA");
    let (server, _, _, _) = files_server(dir.path(), &ca, 31_536_000);
    let https = server.https_port;
    let c = tls_client(&ca.pem(), "app.example", https);

    // A client claiming plain HTTP gets overwritten: the proxy knows it was TLS.
    let r = c
        .post(format!("https://app.example:{https}/api/auth/login"))
        .header("x-forwarded-proto", "http")
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    // Over TLS the `__Host-` name: Secure, Path=/, no Domain (what the prefix needs).
    assert!(cookie.starts_with("__Host-rsp_session="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let session = cookie
        .strip_prefix("__Host-rsp_session=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();

    // That cookie authenticates; so does the plain name (read as a fallback), and
    // logout clears the name of the scheme and the other one the request carried.
    let me = c
        .get(format!("https://app.example:{https}/api/auth/me"))
        .header("cookie", format!("__Host-rsp_session={session}"))
        .send()
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let r = c
        .post(format!("https://app.example:{https}/api/auth/logout"))
        .header("cookie", format!("rsp_session={session}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cleared: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(
        cleared[0].starts_with("__Host-rsp_session=;") && cleared[0].contains("Max-Age=0"),
        "{cleared:?}"
    );
    assert!(cleared[1].starts_with("rsp_session=;"), "{cleared:?}");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");

    // Local answers (unknown app) carry HSTS too.
    let r = c
        .get(format!("https://app.example:{https}/no-such-app/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
}

#[test]
fn unusable_certificate_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("serve")
        .env("RSP_TLS_MODE", "files")
        .env("RSP_TLS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RSP_TLS_CERT_FILE", &missing)
        .env("RSP_TLS_KEY_FILE", &missing)
        .env("RSP_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "TLS: tls_cert_file {}: cannot read",
            missing.display()
        )),
        "{stderr}"
    );

    // A missing setting is a config error (exit 2) naming the key.
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("serve")
        .env("RSP_TLS_MODE", "acme")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid config: acme_domains: required when tls_mode is \"acme\""),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- Pebble

/// Both Pebble binaries, or `None` (skip) outside CI when they are not installed.
fn pebble_installed() -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            !support::in_ci(),
            "CI needs Pebble: run scripts/install-test-deps.sh (Debian package `pebble`)"
        );
        eprintln!("pebble / pebble-challtestsrv not installed: skipping (not CI)");
    }
    found
}

/// A Pebble ACME server on loopback ports, validating HTTP-01 against `http_port`, with
/// pebble-challtestsrv as its DNS server answering 127.0.0.1 for every name.
struct Pebble {
    _dir: tempfile::TempDir,
    pebble: Proc,
    _dns: Proc,
    /// PEM of the CA that signed Pebble's own HTTPS certificate (acme_ca_file).
    listener_ca_file: PathBuf,
    listener_ca_pem: String,
    directory: String,
    management: String,
}

impl Pebble {
    /// `validity_secs`: lifetime of issued certificates (Pebble's
    /// `certificateValidityPeriod`); `None` keeps Pebble's default (years).
    fn start(http_port: u16, validity_secs: Option<u64>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        // Pebble's own HTTPS listener needs a certificate: the Debian package ships
        // none, so make one with a CA of our own.
        let ca = TestCa::new("pebble listener test CA");
        let (chain, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        let (cert_file, key_file) = write_pair(dir.path(), "pebble-listener", &(chain, key));
        let listener_ca_file = dir.path().join("pebble-listener-ca.pem");
        std::fs::write(&listener_ca_file, ca.pem()).unwrap();

        let (acme_port, mgmt_port, dns_port, dns_mgmt_port, tls_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let mut pebble_conf = json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": cert_file,
            "privateKey": key_file,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        });
        if let Some(v) = validity_secs {
            pebble_conf["certificateValidityPeriod"] = json!(v);
        }
        let conf_file = dir.path().join("pebble.json");
        std::fs::write(
            &conf_file,
            serde_json::to_string_pretty(&json!({ "pebble": pebble_conf })).unwrap(),
        )
        .unwrap();

        // DNS only: A → 127.0.0.1, no AAAA (our listeners are IPv4 loopback).
        let mut dns_cmd = Command::new("pebble-challtestsrv");
        dns_cmd.args([
            "-dns01",
            &format!("127.0.0.1:{dns_port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_mgmt_port}"),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]);
        let mut dns = Proc::spawn(dns_cmd);
        wait_for("pebble-challtestsrv", Duration::from_secs(10), || {
            assert!(dns.running(), "pebble-challtestsrv exited:\n{}", dns.log());
            std::net::TcpStream::connect(("127.0.0.1", dns_mgmt_port))
                .ok()
                .map(|_| ())
        });

        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&conf_file)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            // No random 0–5 s sleep before each validation.
            .env("PEBBLE_VA_NOSLEEP", "1");
        let mut pebble = Proc::spawn(cmd);
        let directory = format!("https://127.0.0.1:{acme_port}/dir");
        let ca_pem = ca.pem();
        wait_for("pebble", Duration::from_secs(15), || {
            assert!(pebble.running(), "pebble exited:\n{}", pebble.log());
            let c = Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
                .build()
                .unwrap();
            let r = c.get(&directory).send().ok()?;
            r.status().is_success().then_some(())
        });
        Pebble {
            _dir: dir,
            pebble,
            _dns: dns,
            listener_ca_file,
            listener_ca_pem: ca_pem,
            directory,
            management: format!("https://127.0.0.1:{mgmt_port}"),
        }
    }

    /// The root that issued certificates chain to (it changes on every Pebble start).
    fn issuing_root(&self) -> String {
        Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.listener_ca_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap()
            .get(format!("{}/roots/0", self.management))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    fn acme_env(&self, domains: &str) -> Vec<(&'static str, String)> {
        vec![
            ("RSP_TLS_MODE", "acme".into()),
            ("RSP_ACME_DOMAINS", domains.into()),
            ("RSP_ACME_EMAIL", "ops@rsp.test".into()),
            ("RSP_ACME_DIRECTORY", self.directory.clone()),
            (
                "RSP_ACME_CA_FILE",
                self.listener_ca_file.display().to_string(),
            ),
        ]
    }
}

#[test]
fn acme_certificate_via_http01_is_served_stored_and_reused_after_restart() {
    if !pebble_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (http, https) = (free_port(), free_port());
    let mut pebble = Pebble::start(http, None);
    let mut env = pebble.acme_env("rsp.test,www.rsp.test");
    env.push(("RSP_HSTS_MAX_AGE_SECS", "600".into()));
    let mut server = Server::start(&data, http, https, &env);

    let t0 = Instant::now();
    let root = pebble.issuing_root();
    let serial = wait_for("the ACME certificate", Duration::from_secs(60), || {
        probe(&root, "rsp.test", https)
    });
    eprintln!("certificate issued and served after {:?}", t0.elapsed());
    // Both names are on it, and the served response is HTTPS with HSTS.
    let r = tls_client(&root, "www.rsp.test", https)
        .get(format!("https://www.rsp.test:{https}/api/health"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(served_serial(&r), serial);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=600");
    let log = server.log();
    assert!(log.contains("ACME account registered"), "{log}");
    assert!(log.contains("HTTP-01 challenge published"), "{log}");
    assert!(log.contains("TLS certificate installed"), "{log}");
    // Pebble validated over our plain listener, and we answered 200.
    let plog = pebble.pebble.log();
    assert!(
        plog.contains(&format!(
            "Attempting to validate w/ HTTP: http://rsp.test:{http}/.well-known/acme-challenge/"
        )),
        "{plog}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("/.well-known/acme-challenge/") && l.contains("\"status\":200")),
        "no answered challenge in the access log:\n{log}"
    );

    // Redirects on the plain listener name the HTTPS port.
    let r = plain_client()
        .get(format!("http://127.0.0.1:{http}/api/apps?a=1"))
        .header("host", format!("rsp.test:{http}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!("https://rsp.test:{https}/api/apps?a=1").as_str()
    );

    // Restart with another name set and contact: the account is reused (its contact
    // updated at the CA) and a certificate for the new names is ordered.
    server.proc.stop();
    let mut env = pebble.acme_env("rsp.test,new.rsp.test");
    env.push(("RSP_ACME_EMAIL", "new-ops@rsp.test".into()));
    let mut server = Server::start(&data, http, https, &env);
    let serial = wait_for(
        "the certificate for new names",
        Duration::from_secs(60),
        || probe(&root, "new.rsp.test", https),
    );
    let log = server.log();
    assert!(log.contains("ACME account contact updated"), "{log}");
    assert!(!log.contains("ACME account registered"), "{log}");

    // Restart with the CA gone: the stored certificate is served at once.
    server.proc.stop();
    pebble.pebble.stop();
    let server = Server::start(&data, http, https, &env);
    assert_eq!(
        probe(&root, "new.rsp.test", https).as_deref(),
        Some(serial.as_str())
    );
    assert!(server.log().contains("stored TLS certificate loaded"));
}

#[test]
fn acme_renews_short_lived_certificates_live() {
    if !pebble_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port(), free_port());
    // 15 s certificates: renewal is due 10 s after issuance.
    let pebble = Pebble::start(http, Some(15));
    let mut server = Server::start(
        &dir.path().join("data"),
        http,
        https,
        &pebble.acme_env("renew.rsp.test"),
    );
    let root = pebble.issuing_root();
    let first = wait_for("the first certificate", Duration::from_secs(60), || {
        probe(&root, "renew.rsp.test", https)
    });
    let t0 = Instant::now();
    // Generous bounds: a failed attempt is retried after a minute.
    let second = wait_for("a renewed certificate", Duration::from_secs(90), || {
        probe(&root, "renew.rsp.test", https).filter(|s| *s != first)
    });
    eprintln!("renewed after {:?}", t0.elapsed());
    let third = wait_for("a second renewal", Duration::from_secs(90), || {
        probe(&root, "renew.rsp.test", https).filter(|s| *s != second && *s != first)
    });
    assert_ne!(first, third);
    // Same process all along: swapped live.
    assert!(server.proc.running());
    let log = server.log();
    assert!(log.contains("renewing the TLS certificate"), "{log}");
    assert!(
        log.matches("TLS certificate installed").count() >= 3,
        "{log}"
    );
}

#[test]
fn acme_failure_says_what_to_check_and_keeps_serving_http() {
    if !pebble_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (http, https) = (free_port(), free_port());
    // Pebble validates against a port where nothing listens: like a closed port 80.
    let pebble = Pebble::start(free_port(), None);
    let server = Server::start(
        &dir.path().join("data"),
        http,
        https,
        &pebble.acme_env("unreachable.rsp.test"),
    );
    // The ACME manager's own report (the alert module logs the same event too).
    let report = |l: &&str| l.contains("ACME order for") && !l.contains("rserve_proxy::alerts");
    wait_for("the failure report", Duration::from_secs(60), || {
        server.log().lines().any(|l| report(&l)).then_some(())
    });
    let log = server.log();
    let line = log.lines().find(report).unwrap().to_string();
    assert!(line.contains("unreachable.rsp.test failed"), "{line}");
    assert!(line.contains("port 80"), "{line}");
    assert!(line.contains("Retrying at"), "{line}");
    assert!(
        line.contains("HTTPS has no certificate until then"),
        "{line}"
    );
    // No certificate: handshakes fail, the plain listener still works.
    assert_eq!(
        probe(&pebble.issuing_root(), "unreachable.rsp.test", https),
        None
    );
    let r = plain_client()
        .get(format!("http://127.0.0.1:{http}/api/health"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
}
