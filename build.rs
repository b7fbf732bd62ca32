//! Embeds htmx (fetched by scripts/fetch-htmx.sh from PyPI into target/htmx/) into the
//! binary: copies it into OUT_DIR after checking its SHA-256, or stops the build with
//! what to run. See docs/architecture.md ("htmx source").

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// htmx 2.0.3 `htmx.min.js` from django-js-lib-htmx 2.0.3.1.
const HTMX_SHA256: &str = "491955cd1810747d7d7b9ccb936400afb760e06d25d53e4572b64b6563b2784e";

fn main() {
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
