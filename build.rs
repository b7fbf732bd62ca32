//! Build script: embeds htmx (see embed_htmx) and records build metadata for
//! `rserve-proxy --version` (see version_metadata).
//!
//! Embeds htmx (fetched by scripts/fetch-htmx.sh from PyPI into target/htmx/) into the
//! binary: copies it into OUT_DIR after checking its SHA-256, or stops the build with
//! what to run. See docs/architecture.md ("htmx source").
//!
//! Build metadata for `rserve-proxy --version`: the git commit and the build date.
//! Outside a git checkout (a source tarball) the commit is "unknown"; the date honours
//! SOURCE_DATE_EPOCH for reproducible builds.

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    embed_htmx();
    version_metadata();
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn version_metadata() {
    // Only this package's own checkout counts: a tarball unpacked inside some other
    // repository must not report that repository's commit.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let own_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        std::fs::canonicalize(top).ok() == std::fs::canonicalize(&manifest_dir).ok()
    });
    let commit = own_checkout
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RSP_GIT_COMMIT={commit}");

    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days(epoch.div_euclid(86_400));
    println!("cargo:rustc-env=RSP_BUILD_DATE={y:04}-{m:02}-{d:02}");

    // Rebuild the metadata when the checked-out commit changes (HEAD, the branch it
    // points to, packed refs), not on every build.
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for p in watched.into_iter().filter(|_| own_checkout) {
        if let Some(path) = git(&["rev-parse", "--git-path", &p]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}

/// htmx 2.0.3 `htmx.min.js` from django-js-lib-htmx 2.0.3.1.
const HTMX_SHA256: &str = "491955cd1810747d7d7b9ccb936400afb760e06d25d53e4572b64b6563b2784e";

fn embed_htmx() {
    println!("cargo:rerun-if-env-changed=RSP_HTMX_JS");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = match std::env::var_os("RSP_HTMX_JS") {
        Some(js) => PathBuf::from(js)
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { manifest.join(t) })
            .unwrap_or_else(|| manifest.join("target"))
            .join("htmx"),
    };
    let js = std::env::var_os("RSP_HTMX_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("htmx.min.js"));
    let license = dir.join("LICENSE");
    println!("cargo:rerun-if-changed={}", js.display());
    println!("cargo:rerun-if-changed={}", license.display());
    let (Ok(bytes), Ok(license_text)) = (std::fs::read(&js), std::fs::read(&license)) else {
        panic!(
            "\n\nhtmx is missing: {} (and its LICENSE beside it) not found.\n\
             Run `bash scripts/fetch-htmx.sh` once (it downloads htmx from PyPI into \
             target/htmx/), or set RSP_HTMX_JS to an htmx.min.js with a LICENSE file \
             beside it.\n\n",
            js.display()
        );
    };
    let got = hex(&Sha256::digest(&bytes));
    if got != HTMX_SHA256 {
        panic!(
            "\n\n{} has SHA-256 {got}, not the pinned {HTMX_SHA256} (htmx 2.0.3). \
             Delete it and run `bash scripts/fetch-htmx.sh` again.\n\n",
            js.display()
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let write = |name: &str, data: &[u8]| {
        if let Err(e) = std::fs::write(out.join(name), data) {
            panic!("writing {name} into OUT_DIR: {e}");
        }
    };
    write("htmx.min.js", &bytes);
    write("htmx-LICENSE.txt", &license_text);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
