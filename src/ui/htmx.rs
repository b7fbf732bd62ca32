//! htmx 2 (2.0.3), embedded from the file `build.rs` copies into OUT_DIR after checking
//! its pinned SHA-256; scripts/fetch-htmx.sh fetches it from PyPI
//! (django-js-lib-htmx, 0BSD). Not a copy in this repository, no CDN.
//! docs/architecture.md ("htmx source") has the measurement behind the choice.

pub const HTMX_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/htmx.min.js"));
/// htmx's licence (Zero-Clause BSD), served beside it.
pub const HTMX_LICENSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/htmx-LICENSE.txt"));
