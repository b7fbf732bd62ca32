//! What the front door does when TLS is on (`tls_mode` files or acme):
//!
//! - `/.well-known/acme-challenge/<token>` is answered here, on either listener, from
//!   the lock-free challenge map (never the store, never the control plane);
//! - every other request on the plain listener gets a 308 to the same host, path and
//!   query on HTTPS (308 keeps the method and body, unlike 301);
//! - HTTPS responses carry `Strict-Transport-Security` when `hsts_max_age_secs` > 0.
//!
//! Whether a request came over TLS is read from the connection (pingora's TLS
//! digest), not from anything the client sends.

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::tls::Challenges;

pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

pub struct HttpsPolicy {
    challenges: Challenges,
    /// Port of the TLS listener, for redirect targets (omitted when 443).
    https_port: u16,
    hsts: Option<HeaderValue>,
}

/// Did this request arrive over TLS?
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

impl HttpsPolicy {
    pub fn new(challenges: Challenges, https_port: u16, hsts_max_age_secs: u64) -> Self {
        let hsts = (hsts_max_age_secs > 0)
            .then(|| HeaderValue::from_str(&format!("max-age={hsts_max_age_secs}")).ok())
            .flatten();
        HttpsPolicy {
            challenges,
            https_port,
            hsts,
        }
    }

    /// The HSTS header for a response to a request that came over TLS (browsers
    /// ignore it over plain HTTP, and it must not be sent there).
    pub fn hsts(&self, tls: bool) -> Option<HeaderValue> {
        if tls {
            self.hsts.clone()
        } else {
            None
        }
    }

    /// Where a plain-HTTP request must go instead (`None`: no usable Host). For the
    /// WebSocket tunnel, which answers upgrades without a pingora session.
    pub fn redirect_target(&self, req: &RequestHeader) -> Option<String> {
        redirect_location(req, self.https_port)
    }

    /// Answers the request itself when it is a challenge or must move to HTTPS.
    /// Returns `true` when a response was written.
    pub async fn intercept(
        &self,
        session: &mut Session,
        tls: bool,
        request_id: &str,
    ) -> Result<bool> {
        let req = session.req_header();
        if let Some(token) = req.uri.path().strip_prefix(CHALLENGE_PREFIX) {
            let answer = self.challenges.answer(token);
            let (status, body) = match answer {
                Some(key_authorization) => (200, key_authorization),
                None => (
                    404,
                    "No ACME challenge is pending for this token\n".to_string(),
                ),
            };
            write(session, status, body, None, request_id, self.hsts(tls)).await?;
            return Ok(true);
        }
        if tls {
            return Ok(false);
        }
        match redirect_location(req, self.https_port) {
            Some(location) => {
                let body = format!("Moved to {location}\n");
                write(session, 308, body, Some(location), request_id, None).await?;
            }
            None => {
                let body =
                    "This server answers over HTTPS; the request has no usable Host header\n";
                write(session, 400, body.to_string(), None, request_id, None).await?;
            }
        }
        Ok(true)
    }
}

async fn write(
    session: &mut Session,
    status: u16,
    body: String,
    location: Option<String>,
    request_id: &str,
    hsts: Option<HeaderValue>,
) -> Result<()> {
    let location = location.map(|l| (http::header::LOCATION, l));
    let plain = "text/plain; charset=utf-8";
    super::write_answer(
        session,
        status,
        plain,
        body,
        request_id,
        location,
        hsts.as_ref(),
    )
    .await
}

/// `https://<host>[:port]<path>?<query>` for a plain-HTTP request; `None` when the
/// host is missing or not a plain host name / IP literal (it is echoed into a
/// header, so nothing else gets through).
pub fn redirect_location(req: &RequestHeader, https_port: u16) -> Option<String> {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())?;
    let name = host_without_port(host)?;
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // An absolute-form or odd target that does not start with '/' would glue onto
    // the host; only origin-form paths are kept.
    let path_and_query = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    Some(format!("https://{name}{port}{path_and_query}"))
}

/// `example.org:8080` → `example.org`; `[::1]:80` → `[::1]`; rejects anything with
/// characters a host cannot have.
fn host_without_port(host: &str) -> Option<&str> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let inner = &rest[..end];
        if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        &host[..end + 2]
    } else {
        let name = host.split(':').next().unwrap_or("");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return None;
        }
        name
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn redirect_keeps_host_path_and_query() {
        let r = req("/api/apps?x=1&y=%20z", Some("example.org"));
        assert_eq!(
            redirect_location(&r, 443).as_deref(),
            Some("https://example.org/api/apps?x=1&y=%20z")
        );
        // The plain port is dropped; a non-default HTTPS port is added.
        let r = req("/a", Some("example.org:8080"));
        assert_eq!(
            redirect_location(&r, 8443).as_deref(),
            Some("https://example.org:8443/a")
        );
        let r = req("/", Some("[::1]:8080"));
        assert_eq!(
            redirect_location(&r, 443).as_deref(),
            Some("https://[::1]/")
        );
        let r = req("/", Some("127.0.0.1"));
        assert_eq!(
            redirect_location(&r, 9443).as_deref(),
            Some("https://127.0.0.1:9443/")
        );
    }

    #[test]
    fn redirect_refuses_odd_hosts() {
        assert_eq!(redirect_location(&req("/", None), 443), None);
        assert_eq!(redirect_location(&req("/", Some("")), 443), None);
        assert_eq!(redirect_location(&req("/", Some("a.org/evil")), 443), None);
        assert_eq!(redirect_location(&req("/", Some("a@b.org")), 443), None);
        assert_eq!(redirect_location(&req("/", Some("[zz]")), 443), None);
    }

    #[test]
    fn absolute_form_uses_its_path_only() {
        let mut r = req("/", None);
        r.set_uri(http::Uri::from_static("http://example.org/p?q=1"));
        assert_eq!(
            redirect_location(&r, 443).as_deref(),
            Some("https://example.org/p?q=1")
        );
    }

    #[test]
    fn hsts_only_over_tls_and_only_when_configured() {
        let p = HttpsPolicy::new(Challenges::default(), 443, 31_536_000);
        assert_eq!(p.hsts(true).unwrap(), "max-age=31536000");
        assert!(p.hsts(false).is_none());
        let off = HttpsPolicy::new(Challenges::default(), 443, 0);
        assert!(off.hsts(true).is_none());
    }
}
