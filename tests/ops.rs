//! Operations commands against the real binary: `backup` while a running server takes
//! writes, `restore` (and its refusals), `admin` through the admin socket, `doctor`
//! against a healthy setup and against each failure it detects.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::multipart;
use serde_json::{json, Value};
use support::{cli, client, json_of, login, Server};

const PASSWORD: &str = "ops-test-password-1";

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Exit code 1 and stderr, for a command that must fail.
fn refused(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing of a failed restore is left: the target does not exist and no temp dir
/// is beside it.
fn assert_nothing_written(parent: &Path, target: &Path) {
    assert!(!target.exists(), "{} was created", target.display());
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rserve-proxy-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn backup_while_writes_happen_restores_whole_into_a_new_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let c = client();
    assert_eq!(login(&c, &s, PASSWORD), 200);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (st, body) = json_of(
            c.post(s.url("/api/apps"))
                .json(&json!({"name": format!("App {i}"), "slug": format!("ops-app-{i}")}))
                .send()
                .unwrap(),
        );
        assert_eq!(st, 201, "{body}");
        ids.push(body["app"]["id"].as_str().unwrap().to_string());
    }
    let script = b"library(Rserve)\nrun.Rserve()\n".to_vec();
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(script.clone()).file_name("run_rserve.R"),
    );
    let r = c
        .post(s.url(&format!("/api/apps/{}/upload", ids[0])))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // Writers: app updates and token creations in a loop, through the API.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (c, base, ids, stop, writes) = (
            c.clone(),
            s.base.clone(),
            ids.clone(),
            stop.clone(),
            writes.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[n % ids.len()];
                let r = c
                    .put(format!("{base}/api/apps/{id}"))
                    .json(&json!({"name": format!("App renamed {n}")}))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                let r = c
                    .post(format!("{base}/api/auth/tokens"))
                    .json(&json!({"name": format!("t{n}"), "expiresInDays": 30}))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 201);
                n += 1;
                writes.fetch_add(2, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let archive = dir.path().join("backup.tar.gz");
    for _ in 0..3 {
        let line = ok(&cli(&data, &["backup", archive.to_str().unwrap()], None));
        assert!(line.contains("through the running server"), "{line}");
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        writes.load(Ordering::Relaxed) > 10,
        "the writers barely ran"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the archive holds secrets");

    // The public side cannot reach the admin socket's routes.
    let r = c.get(s.url("/v1/backup")).send().unwrap();
    assert_ne!(r.status(), 200);
    s.stop();

    let restored = dir.path().join("restored");
    let line = ok(&cli(
        &restored,
        &["restore", archive.to_str().unwrap()],
        None,
    ));
    let tokens_in_backup: usize = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" API tokens"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no token count in {line:?}"));
    assert!(line.contains("5 apps"), "{line}");
    assert!(tokens_in_backup > 0, "{line}");
    assert_eq!(
        std::fs::read(restored.join(format!("uploads/{}/run_rserve.R", ids[0]))).unwrap(),
        script
    );

    // A server on the restored data dir: every record there and whole.
    let s = Server::start(&restored, &[]);
    let c = client();
    assert_eq!(login(&c, &s, PASSWORD), 200);
    let (st, apps) = json_of(c.get(s.url("/api/apps")).send().unwrap());
    assert_eq!(st, 200, "{apps}");
    let apps = apps["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 5);
    for a in apps {
        assert!(a["name"].as_str().unwrap().starts_with("App "), "{a}");
        let (st, detail) = json_of(
            c.get(s.url(&format!("/api/apps/{}", a["id"].as_str().unwrap())))
                .send()
                .unwrap(),
        );
        assert_eq!(st, 200, "{detail}");
    }
    let (st, tokens) = json_of(c.get(s.url("/api/auth/tokens")).send().unwrap());
    assert_eq!(st, 200, "{tokens}");
    assert_eq!(
        tokens["tokens"].as_array().unwrap().len(),
        tokens_in_backup,
        "the tokens listed are those the backup counted"
    );
    s.stop();
}

/// A stopped data dir with a user, backed up directly (no server).
fn stopped_backup(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let data = dir.join("data");
    ok(&cli(
        &data,
        &[
            "admin",
            "create-user",
            "--username",
            "dora",
            "--password-stdin",
        ],
        Some("dora-password-123\n"),
    ));
    let archive = dir.join("b.tar.gz");
    let line = ok(&cli(&data, &["backup", archive.to_str().unwrap()], None));
    assert!(line.contains("directly (no server running)"), "{line}");
    let bytes = std::fs::read(&archive).unwrap();
    (archive, bytes)
}

/// The archive with `edit` applied to each entry (name, data), re-packed validly.
fn repack(bytes: &[u8], edit: impl Fn(&str, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            edit(&name, &mut data);
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &name, &data[..]).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }
    out
}

#[test]
fn restore_refuses_truncated_tampered_and_newer_archives_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, bytes) = stopped_backup(dir.path());
    let bad = dir.path().join("bad.tar.gz");
    let target = dir.path().join("target");

    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = refused(&cli(&target, &["restore", bad.to_str().unwrap()], None));
    assert!(
        e.contains("truncated") && e.contains("nothing was restored"),
        "{e}"
    );
    assert_nothing_written(dir.path(), &target);

    let tampered = repack(&bytes, |name, data| {
        if name == "state.redb" {
            let mid = data.len() / 2;
            data[mid] ^= 0xff;
        }
    });
    std::fs::write(&bad, tampered).unwrap();
    let e = refused(&cli(&target, &["restore", bad.to_str().unwrap()], None));
    assert!(e.contains("state.redb does not match its checksum"), "{e}");
    assert_nothing_written(dir.path(), &target);

    let newer = repack(&bytes, |name, data| {
        if name == "manifest.json" {
            let mut m: Value = serde_json::from_slice(data).unwrap();
            m["schema_version"] = json!(99);
            *data = serde_json::to_vec(&m).unwrap();
        }
    });
    std::fs::write(&bad, newer).unwrap();
    let e = refused(&cli(&target, &["restore", bad.to_str().unwrap()], None));
    assert!(
        e.contains("schema version 99") && e.contains("newer than this binary supports"),
        "{e}"
    );
    assert_nothing_written(dir.path(), &target);

    // A file the manifest does not list.
    let extra = repack(&bytes, |_, _| {});
    let mut extra_tar = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut extra_tar, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&extra[..]));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            b.append_data(&mut h, &name, &data[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "uploads/x/evil.R", &b"1\n\n"[..])
            .unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    std::fs::write(&bad, extra_tar).unwrap();
    let e = refused(&cli(&target, &["restore", bad.to_str().unwrap()], None));
    assert!(e.contains("not in the manifest"), "{e}");
    assert_nothing_written(dir.path(), &target);

    // A non-empty data dir is refused without --force, and moved aside with it.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "old").unwrap();
    let e = refused(&cli(&target, &["restore", archive.to_str().unwrap()], None));
    assert!(e.contains("is not empty") && e.contains("--force"), "{e}");
    assert!(target.join("keep.txt").exists());
    assert!(!target.join("state.redb").exists());
    let line = ok(&cli(
        &target,
        &["restore", "--force", archive.to_str().unwrap()],
        None,
    ));
    assert!(line.contains("previous contents are in"), "{line}");
    assert!(target.join("state.redb").exists());
    let users = ok(&cli(&target, &["admin", "list-users"], None));
    assert!(users.contains("dora"), "{users}");
}

#[test]
fn admin_commands_work_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let out = ok(&cli(
        &data,
        &[
            "admin",
            "create-user",
            "--username",
            "carol",
            "--password-stdin",
        ],
        Some("carol-password-123\n"),
    ));
    assert!(out.contains("created carol (user,"), "{out}");
    let c = client();
    let r = c
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "carol", "password": "carol-password-123"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let out = ok(&cli(
        &data,
        &[
            "admin",
            "reset-password",
            "--username",
            "carol",
            "--password-stdin",
        ],
        Some("carol-password-456\n"),
    ));
    assert!(out.contains("password of carol reset"), "{out}");
    let r = c
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "carol", "password": "carol-password-456"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let list = ok(&cli(&data, &["admin", "list-users"], None));
    assert!(list.contains("admin") && list.contains("carol"), "{list}");
    // Errors come back whole.
    let e = refused(&cli(
        &data,
        &[
            "admin",
            "create-user",
            "--username",
            "carol",
            "--password-stdin",
        ],
        Some("another-password-1\n"),
    ));
    assert!(e.contains("already exists"), "{e}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("admin.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    s.stop();
    assert!(!data.join("admin.sock").exists());
}

fn doctor(data: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let out = cli(data, &all, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(out: &'a str, tag: &str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{tag:<5} {name} ")))
        .unwrap_or_else(|| panic!("no `{tag} {name}` line in:\n{out}"))
}

#[test]
fn doctor_passes_a_healthy_setup_and_names_each_failure_with_a_fix() {
    let docker = Path::new("/var/run/docker.sock");
    if !docker.exists() {
        assert!(!support::in_ci(), "CI set and no Docker socket");
        eprintln!("SKIPPED: doctor tests need Docker");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(
        &data,
        &[
            "admin",
            "create-user",
            "--username",
            "erin",
            "--password-stdin",
        ],
        Some("erin-password-123\n"),
    ));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let port = support::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    // The base image the test suite uses (rserve-base:latest, from install-test-deps).
    let base = ["--base-image", "rserve-base:latest"];
    let mut healthy = vec!["--listen", listen.as_str()];
    healthy.extend_from_slice(&base);

    let (code, out) = doctor(&data, &healthy);
    assert_eq!(code, Some(0), "{out}");
    for name in [
        "server",
        "data dir",
        "docker",
        "base image",
        "listen",
        "clock",
        "tls",
    ] {
        line(&out, "ok", name);
    }
    assert!(!out.contains("FAIL"), "{out}");

    // Data dir writable by others.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, out) = doctor(&data, &healthy);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "FAIL", "data dir").contains("fix: chmod 700"),
        "{out}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The store readable by others.
    let state = data.join("state.redb");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = doctor(&data, &healthy);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "FAIL", "data dir").contains("chmod 600"),
        "{out}"
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The port taken by another process.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mut args = vec!["--listen", taken_addr.as_str()];
    args.extend_from_slice(&base);
    let (code, out) = doctor(&data, &args);
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "FAIL", "listen");
    assert!(
        l.contains("taken by another process") && l.contains("ss -ltnp"),
        "{l}"
    );
    drop(taken);

    // Docker socket path wrong.
    let mut args = healthy.clone();
    args.extend_from_slice(&["--docker-socket", "/nonexistent/docker.sock"]);
    let (code, out) = doctor(&data, &args);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "FAIL", "docker").contains("does not exist"),
        "{out}"
    );
    line(&out, "skip", "base image");

    // Base image missing.
    let args = [
        "--listen",
        listen.as_str(),
        "--base-image",
        "rserve-base:no-such-tag",
    ];
    let (code, out) = doctor(&data, &args);
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "FAIL", "base image");
    assert!(l.contains("images build-base"), "{l}");

    // The clock went back: the store was written "tomorrow".
    let st = std::process::Command::new("touch")
        .args(["-d", "tomorrow"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out) = doctor(&data, &healthy);
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "FAIL", "clock");
    assert!(
        l.contains("the clock went back") && l.contains("timedatectl"),
        "{l}"
    );
    let st = std::process::Command::new("touch")
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success());

    // ACME: a domain that does not resolve, and nothing answering on the port.
    let (code, out) = {
        let out = std::process::Command::new(support::BIN)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", listen.as_str(), "doctor"])
            .args(base)
            .env("RSP_TLS_MODE", "acme")
            .env("RSP_ACME_DOMAINS", "no-such-host.invalid")
            .env("RSP_ACME_EMAIL", "ops@example.org")
            .env(
                "RSP_TLS_LISTEN",
                format!("127.0.0.1:{}", support::free_port()),
            )
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "FAIL", "acme domain").contains("does not resolve"),
        "{out}"
    );
    assert!(
        line(&out, "FAIL", "acme port 80").contains("start the server"),
        "{out}"
    );

    // With the server running, its own port is "ours", not "taken".
    let s = Server::start_with(&data, &[], &[]);
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let ours = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", ours.as_str()];
    args.extend_from_slice(&base);
    let (code, out) = doctor(&data, &args);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        line(&out, "ok", "listen").contains("served by this rserve-proxy"),
        "{out}"
    );
    assert!(line(&out, "ok", "server").contains("running (pid"), "{out}");
    s.stop();
}
