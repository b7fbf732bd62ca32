//! Static files embedded at compile time and served under content-hashed URLs
//! (`/static/<name>.<hash8>.<ext>`): a changed file gets a new URL, so every answer
//! can be cached for a year (`immutable`). Unknown names, and the unhashed names,
//! are 404 (a stale page asking for an old hash gets a clear miss, not a wrong file).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::service::AppState;

/// One embedded file.
pub struct Asset {
    /// The hashed URL, e.g. `/static/app.1a2b3c4d.css`.
    pub url: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// gzip of `bytes`, made once at first use, when it is smaller (text files).
    pub gzip: Option<Vec<u8>>,
}

/// Our files (`static/`) and htmx (from its crate, never copied into the repository).
const FILES: &[(&str, &[u8])] = &[
    ("app.css", include_bytes!("../../static/app.css")),
    ("app.js", include_bytes!("../../static/app.js")),
    ("favicon.svg", include_bytes!("../../static/favicon.svg")),
    ("htmx.js", super::htmx::HTMX_JS),
    ("htmx-LICENSE.txt", super::htmx::HTMX_LICENSE),
];

struct Table {
    /// Logical name (`app.css`) → asset.
    by_name: HashMap<&'static str, Asset>,
    /// Hashed file name (`app.1a2b3c4d.css`) → logical name.
    by_file: HashMap<String, &'static str>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut by_file = HashMap::new();
        for (name, bytes) in FILES {
            let file = hashed_name(name, bytes);
            by_file.insert(file.clone(), *name);
            by_name.insert(
                *name,
                Asset {
                    url: format!("/static/{file}"),
                    content_type: content_type(name),
                    bytes,
                    gzip: gzip(bytes).filter(|gz| gz.len() < bytes.len()),
                },
            );
        }
        Table { by_name, by_file }
    })
}

/// `app.css` + contents → `app.<first 8 hex of sha256>.css`.
fn hashed_name(name: &str, bytes: &[u8]) -> String {
    let hash = hex::encode(Sha256::digest(bytes));
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{}.{ext}", &hash[..8]),
        None => format!("{name}.{}", &hash[..8]),
    }
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).ok()?;
    enc.finish().ok()
}

/// Does the client take gzip (`Accept-Encoding: gzip` without `q=0`)?
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The hashed URL of an embedded file (`url("app.css")` → `/static/app.1a2b3c4d.css`).
/// Templates get these through [`super::page::Assets`]. An unknown name is a
/// programming error; it yields a URL that answers 404 rather than a panic.
pub fn url(name: &str) -> String {
    table()
        .by_name
        .get(name)
        .map(|a| a.url.clone())
        .unwrap_or_else(|| format!("/static/missing/{name}"))
}

/// The embedded file behind a logical name (tests, benchmarks: byte counts).
pub fn asset(name: &str) -> Option<&'static Asset> {
    table().by_name.get(name)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/static/{file}", get(serve))
        .route("/favicon.ico", get(favicon))
}

/// Browsers ask for `/favicon.ico` on pages that name no icon (JSON answers, the
/// proxy's own error pages); a 404 there shows up as a console error.
async fn favicon() -> Response {
    let Some(asset) = asset("favicon.svg") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let t = table();
    let Some(asset) = t.by_file.get(&file).and_then(|n| t.by_name.get(n)) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Not found: no such static file (the page may be from an older version; reload it)",
        )
            .into_response();
    };
    let mut resp = match &asset.gzip {
        // Compressed once at start, not per request: the cold load of a page stays small.
        Some(gz) if accepts_gzip(&headers) => {
            let mut r = gz.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => asset.bytes.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names() {
        let n = hashed_name("app.css", b"body{}");
        assert!(
            n.starts_with("app.") && n.ends_with(".css") && n.len() == "app.12345678.css".len()
        );
        assert_ne!(n, hashed_name("app.css", b"body{ }"));
        assert!(url("app.css").starts_with("/static/app."));
        assert!(url("htmx.js").starts_with("/static/htmx."));
    }

    #[test]
    fn gzip_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        let css = asset("htmx.js").unwrap();
        assert!(css.gzip.as_ref().unwrap().len() < css.bytes.len() / 2);
    }
}
