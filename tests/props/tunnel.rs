//! The WebSocket tunnel's head rewriting (src/proxy/tunnel.rs `prepare` and
//! `rewrite_response`, reached through their `fuzz_*` wrappers): whatever the client
//! or the app sends, the head we write is one well-formed head holding exactly the
//! headers we mean to pass on plus our own, so nothing can be smuggled through it.

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use rserve_proxy::proxy::app_path;
use rserve_proxy::proxy::http1::{self, FORWARDING, HOP_BY_HOP};
use rserve_proxy::proxy::isolation;
use rserve_proxy::proxy::request_id;
use rserve_proxy::proxy::tunnel::{fuzz_rewrite_response, fuzz_upstream_head};

use super::heads::{any_path, headers, method, request_head};
use super::{check, Outcome};

/// Header names the rewriting treats specially, in assorted spellings.
fn special_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Connection"),
        Just("connection"),
        Just("Upgrade"),
        Just("UPGRADE"),
        Just("Keep-Alive"),
        Just("TE"),
        Just("Transfer-Encoding"),
        Just("Proxy-Authorization"),
        Just("Proxy-Connection"),
        Just("Trailer"),
        Just("X-Forwarded-For"),
        Just("x-forwarded-proto"),
        Just("X-Forwarded-Host"),
        Just("X-Request-Id"),
        Just("Host"),
        Just("Content-Length"),
        Just("Cookie"),
        Just("Set-Cookie"),
        Just("Strict-Transport-Security"),
        Just("X-Secret"),
    ]
    .prop_map(str::to_string)
}

fn special_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"upgrade".to_vec()),
        Just(b"websocket".to_vec()),
        Just(b"keep-alive, X-Secret, upgrade".to_vec()),
        Just(b"close".to_vec()),
        Just(b"12".to_vec()),
        Just(b"abc-123".to_vec()),
        Just(b"h.example:8080".to_vec()),
        Just(b"rsp_session=x; other=y".to_vec()),
        "[ -~]{0,30}".prop_map(String::into_bytes),
        vec(0x80u8..=0xff, 0..8),
    ]
}

fn mixed_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    (headers(), vec((special_name(), special_value()), 0..10)).prop_map(|(mut a, b)| {
        // Interleave deterministically: specials spread through the plain ones.
        for (i, h) in b.into_iter().enumerate() {
            let at = (i * 7) % (a.len() + 1);
            a.insert(at, h);
        }
        a
    })
}

/// Parse a head we produced; its headers as (lower-case name, value).
type Parsed = (Option<String>, Option<u16>, Vec<(String, Vec<u8>)>);

fn parse_request(out: &[u8]) -> Result<Parsed, TestCaseError> {
    let mut hs = [httparse::EMPTY_HEADER; 512];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(out) {
        Ok(httparse::Status::Complete(n)) if n == out.len() => {}
        other => {
            return Err(TestCaseError::fail(format!(
                "forwarded head is not exactly one head: {other:?} of {} bytes: {:?}",
                out.len(),
                String::from_utf8_lossy(out)
            )))
        }
    }
    prop_assert_eq!(req.version, Some(1));
    let list = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    Ok((req.path.map(str::to_string), None, list))
}

fn parse_response(out: &[u8]) -> Result<Parsed, TestCaseError> {
    let mut hs = [httparse::EMPTY_HEADER; 512];
    let mut resp = httparse::Response::new(&mut hs);
    match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) if n == out.len() => {}
        other => {
            return Err(TestCaseError::fail(format!(
                "rewritten head is not exactly one head: {other:?} of {} bytes: {:?}",
                out.len(),
                String::from_utf8_lossy(out)
            )))
        }
    }
    prop_assert_eq!(resp.version, Some(1));
    let list = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    Ok((None, resp.code, list))
}

fn count(list: &[(String, Vec<u8>)], name: &str) -> usize {
    list.iter().filter(|(n, _)| n == name).count()
}

fn value<'a>(list: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Headers of the input that are to be passed on, in order.
fn kept(input: &[(String, Vec<u8>)], extra_drop: &[&str]) -> Vec<(String, Vec<u8>)> {
    let hs: Vec<httparse::Header<'_>> = input
        .iter()
        .map(|(n, v)| httparse::Header { name: n, value: v })
        .collect();
    let tokens = http1::connection_tokens(&hs);
    input
        .iter()
        .filter(|(n, _)| !http1::is_hop_by_hop(n, &tokens))
        .filter(|(n, _)| !extra_drop.iter().any(|d| n.eq_ignore_ascii_case(d)))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// What credential isolation does to the passed-on request headers (the rules are
/// unit-tested in `proxy::isolation`; here: that the tunnel applies them, and nothing
/// else changes): our session cookie leaves `Cookie`, our bearer tokens leave
/// `Authorization`.
fn isolated_request(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    headers
        .into_iter()
        .filter_map(|(n, v)| match n.as_str() {
            "cookie" => isolation::app_cookie(&v).map(|c| (n.clone(), c.into_owned())),
            "authorization" if isolation::is_our_authorization(&v) => None,
            _ => Some((n, v)),
        })
        .collect()
}

/// An app's `Set-Cookie` for our session cookie never reaches the client.
fn isolated_response(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    headers
        .into_iter()
        .filter(|(n, v)| !(n == "set-cookie" && isolation::is_our_set_cookie(v)))
        .collect()
}

#[derive(Debug, Clone)]
enum RequestInput {
    Head {
        method: String,
        path: String,
        headers: Vec<(String, Vec<u8>)>,
    },
    Bytes(Vec<u8>),
}

fn request_input() -> impl Strategy<Value = RequestInput> {
    // Request targets as httparse takes them: visible ASCII, no spaces.
    let path = prop_oneof![
        3 => any_path().prop_map(|p| {
            let p: String = p.chars().filter(|c| ('!'..='~').contains(c)).collect();
            if p.is_empty() { "/".to_string() } else { p }
        }),
        1 => "/[a-z0-9-]{1,12}(/[!-~]{0,20})?",
    ];
    prop_oneof![
        6 => (method(), path, mixed_headers())
            .prop_map(|(method, path, headers)| RequestInput::Head { method, path, headers }),
        1 => vec(any::<u8>(), 0..300).prop_map(RequestInput::Bytes),
    ]
}

fn client() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
        any::<[u8; 16]>().prop_map(|o| Some(IpAddr::from(o))),
    ]
}

/// The head forwarded to the app: exactly one well-formed head, the path without the
/// slug, every client header but hop-by-hop and forwarding ones passed on unchanged
/// and in order, then exactly one each of ours.
pub fn prepare(cases: u32) -> Outcome {
    check(
        cases,
        (request_input(), client(), any::<bool>()),
        |(input, client, tls)| {
            let (head, path) = match &input {
                RequestInput::Bytes(b) => {
                    let _ = fuzz_upstream_head(b, client, tls);
                    return Ok(());
                }
                RequestInput::Head {
                    method,
                    path,
                    headers,
                } => (request_head(method, path, 1, headers, true), path),
            };
            let out = match fuzz_upstream_head(&head, client, tls) {
                None => {
                    return Err(TestCaseError::fail(format!(
                        "a valid head was refused: {:?}",
                        String::from_utf8_lossy(&head)
                    )))
                }
                // A path an app must not be sent (encoded slash, backslash, NUL): the
                // tunnel answers 400 and forwards nothing.
                Some(Err(_)) => {
                    prop_assert!(app_path::for_app(path).is_err(), "{path:?} refused");
                    return Ok(());
                }
                Some(Ok(out)) => out,
            };
            // The reference is what httparse read from the client (it trims values).
            let (_, _, input_headers) = parse_request(&head)?;
            let input_headers = &input_headers;
            let (target, _, list) = parse_request(&out)?;
            prop_assert!(out.starts_with(b"GET "));
            // What the app is sent: the path normalised, the slug stripped.
            if let Ok(Some((_, forwarded))) = app_path::for_app(path) {
                prop_assert_eq!(target, Some(forwarded));
            }

            let ours = [
                "upgrade",
                "connection",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-request-id",
            ];
            let passed: Vec<_> = list
                .iter()
                .filter(|(n, _)| !ours.contains(&n.as_str()))
                .cloned()
                .collect();
            prop_assert_eq!(passed, isolated_request(kept(input_headers, FORWARDING)));
            for name in HOP_BY_HOP.iter().filter(|h| !ours.contains(h)) {
                prop_assert_eq!(count(&list, name), 0, "{} forwarded", name);
            }
            prop_assert_eq!(count(&list, "upgrade"), 1);
            prop_assert_eq!(value(&list, "connection"), Some(&b"upgrade"[..]));
            prop_assert_eq!(count(&list, "connection"), 1);
            prop_assert_eq!(
                count(&list, "x-forwarded-for"),
                usize::from(client.is_some())
            );
            if let Some(ip) = client {
                let ip = ip.to_string();
                prop_assert_eq!(value(&list, "x-forwarded-for"), Some(ip.as_bytes()));
            }
            let proto: &[u8] = if tls { b"https" } else { b"http" };
            prop_assert_eq!(value(&list, "x-forwarded-proto"), Some(proto));
            prop_assert_eq!(count(&list, "x-forwarded-proto"), 1);
            prop_assert!(count(&list, "x-forwarded-host") <= 1);
            prop_assert_eq!(count(&list, "x-request-id"), 1);
            let id = value(&list, "x-request-id").unwrap_or_default();
            prop_assert!(
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(b)),
                "request id {:?}",
                String::from_utf8_lossy(id)
            );
            Ok(())
        },
    )
}

#[derive(Debug, Clone)]
enum ResponseInput {
    Head {
        status: u16,
        reason: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
    },
    Bytes(Vec<u8>),
}

fn response_input() -> impl Strategy<Value = ResponseInput> {
    let status = prop_oneof![Just(101u16), Just(200), Just(400), 100u16..600, 0u16..1000];
    // Reason-phrase bytes httparse accepts: HTAB, SP, VCHAR, obs-text.
    let reason = vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..24,
    );
    prop_oneof![
        6 => (status, reason, mixed_headers())
            .prop_map(|(status, reason, headers)| ResponseInput::Head { status, reason, headers }),
        1 => vec(any::<u8>(), 0..300).prop_map(ResponseInput::Bytes),
    ]
}

/// The app's answer as passed to the client: one well-formed head with the app's
/// status, its headers but hop-by-hop ones and its `x-request-id`, then exactly one
/// `connection` (upgrade for a 101, close otherwise), one `x-request-id` (ours) and
/// HSTS when on. An answer we cannot pass on well-formed is refused (`None`: 502).
pub fn rewrite_response(cases: u32) -> Outcome {
    let request_ids = prop_oneof![
        Just(None),
        any::<String>().prop_map(Some),
        "[a-z0-9:.-]{1,20}".prop_map(Some)
    ];
    check(
        cases,
        (response_input(), request_ids, any::<bool>()),
        |(input, client_id, hsts_on)| {
            let rid = request_id::accept_or_generate(client_id.as_deref());
            let hsts = hsts_on.then(|| http::HeaderValue::from_static("max-age=600"));
            let (head, status) = match &input {
                ResponseInput::Bytes(b) => {
                    if let Some((_, out, _)) = fuzz_rewrite_response(b, &rid, hsts.as_ref(), None) {
                        parse_response(&out)?;
                    }
                    return Ok(());
                }
                ResponseInput::Head {
                    status,
                    reason,
                    headers,
                } => {
                    let mut head = format!("HTTP/1.1 {status:03} ").into_bytes();
                    head.extend_from_slice(reason);
                    head.extend_from_slice(b"\r\n");
                    for (n, v) in headers {
                        head.extend_from_slice(n.as_bytes());
                        head.extend_from_slice(b": ");
                        head.extend_from_slice(v);
                        head.extend_from_slice(b"\r\n");
                    }
                    head.extend_from_slice(b"\r\n");
                    (head, *status)
                }
            };
            let Some((code, out, length)) = fuzz_rewrite_response(&head, &rid, hsts.as_ref(), None)
            else {
                // Refusing is right only for what cannot be passed on as it is.
                prop_assert!(status < 100, "refused a {} answer", status);
                return Ok(());
            };
            prop_assert_eq!(code, status);
            let (_, _, input_headers) = parse_response(&head)?;
            let input_headers = &input_headers;
            let (_, parsed_status, list) = parse_response(&out)?;
            prop_assert_eq!(parsed_status, Some(status));
            let ours = ["connection", "upgrade", "x-request-id"];
            let passed: Vec<_> = list
                .iter()
                .filter(|(n, _)| !ours.contains(&n.as_str()))
                .cloned()
                .collect();
            let mut expected = isolated_response(kept(input_headers, &["x-request-id"]));
            if hsts_on {
                expected.push(("strict-transport-security".into(), b"max-age=600".to_vec()));
            }
            prop_assert_eq!(passed, expected);
            prop_assert_eq!(count(&list, "connection"), 1);
            if status == 101 {
                prop_assert_eq!(value(&list, "connection"), Some(&b"upgrade"[..]));
                prop_assert_eq!(count(&list, "upgrade"), 1);
            } else {
                prop_assert_eq!(value(&list, "connection"), Some(&b"close"[..]));
                prop_assert_eq!(count(&list, "upgrade"), 0);
            }
            prop_assert_eq!(count(&list, "x-request-id"), 1);
            prop_assert_eq!(value(&list, "x-request-id"), Some(rid.as_bytes()));
            // `length` is the first content-length, when it is a number.
            let declared = input_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            prop_assert_eq!(length, declared);
            Ok(())
        },
    )
}
