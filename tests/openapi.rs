//! `/api/openapi.json`: a valid OpenAPI 3 document that lists exactly the router's
//! routes, and says which of them need credentials.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use common::{Cred, Harness};

/// Every route of the router (src/api/mod.rs), and whether it is open to anyone.
const ROUTES: &[(&str, &str, bool)] = &[
    ("get", "/api/health", true),
    ("get", "/api/openapi.json", true),
    ("post", "/api/auth/login", true),
    ("post", "/api/auth/logout", false),
    ("get", "/api/auth/me", false),
    ("put", "/api/auth/password", false),
    ("post", "/api/auth/tokens", false),
    ("get", "/api/auth/tokens", false),
    ("delete", "/api/auth/tokens/{id}", false),
    ("get", "/api/users", false),
    ("post", "/api/users", false),
    ("put", "/api/users/{id}", false),
    ("delete", "/api/users/{id}", false),
    ("get", "/api/apps", false),
    ("post", "/api/apps", false),
    ("get", "/api/apps/r-versions", false),
    ("get", "/api/apps/{id}", false),
    ("put", "/api/apps/{id}", false),
    ("delete", "/api/apps/{id}", false),
    ("post", "/api/apps/{id}/start", false),
    ("post", "/api/apps/{id}/stop", false),
    ("post", "/api/apps/{id}/restart", false),
    ("post", "/api/apps/{id}/rebuild", false),
    ("post", "/api/apps/{id}/scale", false),
    ("get", "/api/apps/{id}/logs", false),
    ("post", "/api/apps/{id}/upload", false),
    ("get", "/api/apps/{id}/status/history", false),
    ("get", "/api/metrics/system", false),
    ("get", "/api/metrics/apps/{id}", false),
    ("get", "/api/status/history", false),
    ("get", "/api/audit", false),
    // Prometheus and alerts (issue #9 part B).
    ("get", "/metrics", false),
    ("get", "/api/alerts/deliveries", false),
];

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

async fn document(h: &Harness) -> Value {
    let r = h
        .call(Method::GET, "/api/openapi.json", &Cred::None, None)
        .await;
    let ct = r.headers["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    r.expect(StatusCode::OK).clone()
}

/// (method, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().expect("$ref is a string").to_string());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3() {
    let h = Harness::new().await;
    let doc = document(&h).await;

    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert_eq!(doc["info"]["title"], "rserve-proxy API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    // It reads back as an OpenAPI document.
    let parsed: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(
        parsed.paths.paths.len(),
        doc["paths"].as_object().unwrap().len()
    );

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["type"], "apiKey");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "rsp_session");

    let mut operation_ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|code| code.starts_with('2')),
            "{what}: no success response"
        );
        for (code, resp) in responses {
            assert!(
                code.len() == 3 && code.parse::<u16>().is_ok(),
                "{what}: status {code}"
            );
            assert!(
                resp["description"].is_string(),
                "{what} {code}: description"
            );
        }
        if let Some(id) = op["operationId"].as_str() {
            assert!(
                operation_ids.insert(id.to_string()),
                "duplicate operationId {id}"
            );
        }
        // Path parameters are declared, as UUIDs.
        if path.contains("{id}") {
            let params = op["parameters"].as_array().expect("parameters");
            let id = params
                .iter()
                .find(|p| p["name"] == "id" && p["in"] == "path")
                .unwrap_or_else(|| panic!("{what}: no id parameter"));
            assert_eq!(id["required"], true, "{what}");
            assert_eq!(id["schema"]["format"], "uuid", "{what}");
        }
        // Protected operations document the 401.
        let open = ROUTES
            .iter()
            .any(|(m, p, open)| *open && *m == method && *p == path);
        if !open {
            assert!(responses.contains_key("401"), "{what}: no 401 documented");
        }
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes() {
    let h = Harness::new().await;
    let doc = document(&h).await;
    let documented = operations(&doc);
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not in ROUTES: {extra:?}");

    // The list is the router's: every documented operation is routed (not the 404
    // or 405 fallback), and no other method is routed on a documented path.
    let id = uuid::Uuid::new_v4().to_string();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let concrete = path.replace("{id}", &id);
        for method in ["get", "put", "post", "delete", "patch"] {
            let r = h
                .call(
                    method.to_uppercase().parse().unwrap(),
                    &concrete,
                    &Cred::None,
                    None,
                )
                .await;
            if documented.contains(&(method.to_string(), path.clone())) {
                assert!(
                    r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not routed: {}",
                    r.status
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_document_says_which_routes_are_open() {
    let h = Harness::new().await;
    let doc = document(&h).await;
    // Credentials are required by default…
    let global: Vec<&str> = doc["security"]
        .as_array()
        .expect("global security")
        .iter()
        .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
        .collect();
    assert_eq!(global, ["bearer", "session"]);
    for (method, path, open) in ROUTES {
        let op = &doc["paths"][*path][*method];
        let security = op.get("security");
        if *open {
            // …and the open routes say so with an empty requirement.
            let requirements = security
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{method} {path}: open route without `security`"));
            assert!(
                requirements
                    .iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty())),
                "{method} {path}: {requirements:?}"
            );
        } else {
            assert!(security.is_none(), "{method} {path} overrides security");
        }
    }
    // And the router agrees: open routes answer without credentials.
    for (method, path, _) in ROUTES.iter().filter(|r| r.2) {
        let body = (*method == "post").then(|| serde_json::json!({}));
        let r = h
            .call(
                method.to_uppercase().parse().unwrap(),
                path,
                &Cred::None,
                body,
            )
            .await;
        assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

// ---------------------------------------------------------------------------
// The document and the server agree on every request body (issue #8, item 5).
// ---------------------------------------------------------------------------

/// The schema `$ref` points at.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).expect("ref"),
        None => schema,
    }
}

/// Whether `v` is valid for `schema`, for the subset of JSON Schema the document
/// uses. The test's own reading of the document: it is what a client may send.
fn valid(doc: &Value, schema: &Value, v: &Value) -> bool {
    let s = resolve(doc, schema);
    if let Some(not) = s.get("not") {
        if not.as_object().is_some_and(|o| o.is_empty()) || valid(doc, not, v) {
            return false;
        }
    }
    if let Some(one_of) = s.get("oneOf").and_then(Value::as_array) {
        if one_of.iter().filter(|alt| valid(doc, alt, v)).count() != 1 {
            return false;
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            return false;
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("type {t}"),
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.as_f64().is_some_and(|x| x.fract() == 0.0),
            "number" => v.is_number(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            other => panic!("type {other}"),
        });
        if !ok {
            return false;
        }
    }
    match v {
        Value::String(text) => {
            let n = text.chars().count() as u64;
            if s["minLength"].as_u64().is_some_and(|m| n < m)
                || s["maxLength"].as_u64().is_some_and(|m| n > m)
            {
                return false;
            }
            if let Some(p) = s["pattern"].as_str() {
                if !regex::Regex::new(p).unwrap().is_match(text) {
                    return false;
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            if s["minimum"].as_f64().is_some_and(|m| x < m)
                || s["maximum"].as_f64().is_some_and(|m| x > m)
            {
                return false;
            }
        }
        Value::Array(items) => {
            if s["maxItems"]
                .as_u64()
                .is_some_and(|m| items.len() as u64 > m)
                || s["minItems"]
                    .as_u64()
                    .is_some_and(|m| (items.len() as u64) < m)
            {
                return false;
            }
            if let Some(item) = s.get("items") {
                if !items.iter().all(|i| valid(doc, item, i)) {
                    return false;
                }
            }
        }
        Value::Object(fields) => {
            if let Some(required) = s["required"].as_array() {
                if !required
                    .iter()
                    .all(|r| fields.contains_key(r.as_str().unwrap()))
                {
                    return false;
                }
            }
            if let Some(props) = s["properties"].as_object() {
                for (k, fv) in fields {
                    if let Some(ps) = props.get(k) {
                        if !valid(doc, ps, fv) {
                            return false;
                        }
                    }
                }
            }
        }
        _ => {}
    }
    true
}

/// One request body field to probe: where it sits, a valid value, and where padding
/// keeps a value valid (so the test can build one at the documented maximum length).
struct Field {
    pointer: &'static str,
    sample: Value,
    pad_at: usize,
    pad: char,
    /// Strings to try besides the bounds: the server must accept exactly those the
    /// document allows.
    probes: &'static [&'static str],
}

fn field(pointer: &'static str, sample: Value) -> Field {
    Field {
        pointer,
        sample,
        pad_at: 0,
        pad: 'a',
        probes: &[],
    }
}

/// The values to try for one field, from its schema: each bound and one past it,
/// `null`, absence (`None`), every enum value and a non-member, the probes.
fn candidates(doc: &Value, schema: &Value, f: &Field) -> Vec<Option<Value>> {
    let s = core(doc, schema);
    let mut out = vec![None, Some(Value::Null), Some(f.sample.clone())];
    let mut strings: Vec<String> = f.probes.iter().map(|p| p.to_string()).collect();
    if let Some(sample) = f.sample.as_str() {
        let pad = |n: usize| {
            let mut chars: Vec<char> = sample.chars().collect();
            while chars.len() < n {
                chars.insert(f.pad_at, f.pad);
            }
            chars.into_iter().collect::<String>()
        };
        if let Some(max) = s["maxLength"].as_u64() {
            strings.push(pad(max as usize));
            strings.push(pad(max as usize + 1));
        }
        if let Some(min) = s["minLength"].as_u64().filter(|m| *m > 0) {
            strings.push(sample.chars().take(min as usize - 1).collect());
        }
        strings.push(String::new());
    }
    out.extend(strings.into_iter().map(|s| Some(Value::String(s))));
    for bound in ["minimum", "maximum"] {
        if let Some(b) = s[bound].as_f64() {
            let step = if f.sample.is_f64() { 0.01 } else { 1.0 };
            let past = if bound == "minimum" {
                b - step
            } else {
                b + step
            };
            for x in [b, past] {
                out.push(Some(if f.sample.is_f64() {
                    serde_json::json!(x)
                } else {
                    serde_json::json!(x as i64)
                }));
            }
        }
    }
    if let Some(max) = s["maxItems"].as_u64() {
        for n in [max, max + 1] {
            let items: Vec<Value> = (0..n)
                .map(|i| {
                    let mut item = f.sample[0].clone();
                    match &mut item {
                        Value::String(t) => t.push_str(&format!("{i}")),
                        Value::Object(o) => {
                            o.insert("key".into(), format!("K{i}").into());
                        }
                        _ => {}
                    }
                    item
                })
                .collect();
            out.push(Some(Value::Array(items)));
        }
    }
    if let Some(values) = s["enum"].as_array() {
        out.extend(values.iter().cloned().map(Some));
        out.push(Some("no-such-value".into()));
    }
    // An integer written as a float is still an integer to JSON Schema.
    if f.sample.is_i64() {
        out.push(Some(serde_json::json!(f.sample.as_i64().unwrap() as f64)));
        out.push(Some(serde_json::json!(
            f.sample.as_i64().unwrap() as f64 + 0.5
        )));
    }
    // A value of the wrong type.
    out.push(Some(if f.sample.is_string() {
        serde_json::json!(12)
    } else {
        serde_json::json!("12")
    }));
    out
}

/// Set (or, with `None`, remove) the field at a `/`-separated pointer.
fn set(body: &mut Value, pointer: &str, v: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        body
    } else {
        body.pointer_mut(parent).expect("parent exists")
    };
    match (target, v) {
        (Value::Object(obj), Some(v)) => {
            obj.insert(key.to_string(), v);
        }
        (Value::Object(obj), None) => {
            obj.remove(key);
        }
        (Value::Array(items), Some(v)) => items[key.parse::<usize>().unwrap()] = v,
        (Value::Array(items), None) => {
            items.remove(key.parse::<usize>().unwrap());
        }
        (other, _) => panic!("{pointer}: parent {other}"),
    }
}

/// The object schemas a schema may stand for (through `$ref` and `oneOf`).
fn alternatives<'a>(doc: &'a Value, schema: &'a Value, out: &mut Vec<&'a Value>) {
    let s = resolve(doc, schema);
    match s["oneOf"].as_array() {
        Some(alts) => alts.iter().for_each(|a| alternatives(doc, a, out)),
        None => out.push(s),
    }
}

/// The non-null schema behind an optional one (`oneOf: [null, $ref]`).
fn core<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut alts = Vec::new();
    alternatives(doc, schema, &mut alts);
    alts.into_iter()
        .find(|a| a["type"] != "null")
        .expect("a non-null alternative")
}

/// The schema of the field at `pointer` under the request body schema.
fn field_schema<'a>(
    doc: &'a Value,
    body_schema: &'a Value,
    body: &Value,
    pointer: &str,
) -> &'a Value {
    let mut schema = body_schema;
    let mut at = String::new();
    for segment in pointer.trim_start_matches('/').split('/') {
        let here = body.pointer(&at);
        let mut alts = Vec::new();
        alternatives(doc, schema, &mut alts);
        let s = alts
            .into_iter()
            .find(|a| {
                here.is_none_or(|h| valid(doc, a, h))
                    && (segment.parse::<usize>().is_ok() || !a["properties"][segment].is_null())
            })
            .unwrap_or_else(|| panic!("no schema for {pointer} at {segment}"));
        schema = if segment.parse::<usize>().is_ok() {
            &s["items"]
        } else {
            &s["properties"][segment]
        };
        assert!(!schema.is_null(), "no schema for {pointer}");
        at = format!("{at}/{segment}");
    }
    schema
}

/// The fields of an app body (create, or update where `slug` must be absent).
fn app_fields(create: bool) -> Vec<Field> {
    let slug = if create {
        Field {
            pad_at: 1,
            pad: 'b',
            probes: &[
                "abc", "Abc", "-ab", "ab-", "a_b", "api", "metrics", "users", "a--b",
            ],
            ..field("/slug", "s9-x".into())
        }
    } else {
        field("/slug", "probe-target".into())
    };
    vec![
        field("/name", "n".into()),
        slug,
        Field {
            probes: &[
                "latest",
                "4.2",
                "4.2.2",
                "4",
                "v4.2",
                "4.2.2.2",
                "1234.1",
                "\u{664}.\u{662}",
            ],
            ..field("/rVersion", "4.3".into())
        },
        field("/packages", serde_json::json!(["pkg"])),
        Field {
            probes: &["user/repo@v1", "a b", "x;rm", "bioc::Biobase", "r=1"],
            ..field("/packages/0", "pkg".into())
        },
        Field {
            probes: &["run.R", "../x.R", "x.r", ".R", "a/b.R"],
            ..field("/entryScript", "a.R".into())
        },
        field("/replicas", 2.into()),
        field("/memoryMb", 512.into()),
        field("/cpus", 0.5.into()),
        // Before the fields that replace the stored `K`.
        Field {
            pad: 'v',
            probes: &["a\u{0}b", "é ü"],
            ..field("/env/0/value", "v".into())
        },
        field("/env", serde_json::json!([{"key": "K", "value": "v"}])),
        Field {
            pad: 'K',
            probes: &["_x", "1A", "A-B", "é"],
            ..field("/env/0/key", "K".into())
        },
        Field {
            pad_at: 9,
            probes: &[
                "https://x",
                "http://x",
                "https:///x",
                "https://a b",
                "https://\u{e9}",
                "git@e.org:x",
                "https://x\u{7f}",
            ],
            ..field("/codeSource/repoUrl", "https://e.org/r".into())
        },
        Field {
            pad: 'm',
            probes: &["-x", "--upload-pack=x", "feat/x", "a b"],
            ..field("/codeSource/branch", "main".into())
        },
    ]
}

#[tokio::test]
async fn every_documented_limit_is_the_servers() {
    let h = Harness::new().await;
    let doc = document(&h).await;
    let admin = h.admin().await;
    let app = h.app(&admin, "probe-target").await;
    // A stored variable, so an update may send `K` without its value (kept).
    h.call(
        Method::PUT,
        &format!("/api/apps/{app}"),
        &admin,
        Some(serde_json::json!({"env": [{"key": "K", "value": "v"}]})),
    )
    .await
    .expect(StatusCode::OK);
    let (_, user) = h.user(&admin, "probe-user").await;
    let counter = std::sync::atomic::AtomicU32::new(0);
    let next = || counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    type Base<'a> = Box<dyn Fn() -> Value + 'a>;
    let ops: Vec<(Method, String, &str, Base, Vec<Field>)> = vec![
        (
            Method::POST,
            "/api/apps".into(),
            "CreateAppInput",
            Box::new(|| {
                serde_json::json!({"name": "n", "slug": format!("s{}-x", next()),
                    "codeSource": {"type": "git", "repoUrl": "https://e.org/r", "branch": "main"},
                    "env": [{"key": "K", "value": "v"}]})
            }),
            app_fields(true),
        ),
        (
            Method::PUT,
            format!("/api/apps/{app}"),
            "UpdateAppInput",
            Box::new(|| {
                serde_json::json!({"packages": ["pkg"],
                    "codeSource": {"type": "git", "repoUrl": "https://e.org/r", "branch": "main"},
                    "env": [{"key": "K", "value": "v"}]})
            }),
            app_fields(false),
        ),
        (
            Method::POST,
            format!("/api/apps/{app}/scale"),
            "ScaleInput",
            Box::new(|| serde_json::json!({"replicas": 1})),
            vec![field("/replicas", 1.into())],
        ),
        (
            Method::POST,
            "/api/users".into(),
            "CreateUserInput",
            Box::new(
                || serde_json::json!({"username": format!("u{}", next()), "password": "password1"}),
            ),
            vec![
                Field {
                    pad: 'u',
                    probes: &["a.b@c-d_e", "a b", "a/b", "é"],
                    ..field("/username", "u".into())
                },
                Field {
                    pad: 'p',
                    ..field("/password", "password".into())
                },
                Field {
                    probes: &[
                        "a@b.org",
                        "a@b",
                        "a@.b.org",
                        "@b.org",
                        "a b@c.org",
                        "a@b.",
                        "a@b.c@d.e",
                    ],
                    ..field("/email", "a@b.co".into())
                },
                field("/role", "user".into()),
            ],
        ),
        (
            Method::PUT,
            format!("/api/users/{user}"),
            "UpdateUserInput",
            Box::new(|| serde_json::json!({})),
            vec![
                field("/role", "user".into()),
                field("/email", "a@b.co".into()),
                Field {
                    pad: 'p',
                    ..field("/password", "password".into())
                },
            ],
        ),
        (
            Method::POST,
            "/api/auth/tokens".into(),
            "CreateTokenInput",
            Box::new(|| serde_json::json!({"name": "t"})),
            vec![
                field("/name", "t".into()),
                field("/expiresInDays", 30.into()),
            ],
        ),
        (
            Method::PUT,
            "/api/auth/password".into(),
            "ChangePasswordInput",
            // A wrong current password: a well-formed request is a 403, not a 400.
            Box::new(
                || serde_json::json!({"currentPassword": "wrong-password", "newPassword": "password1"}),
            ),
            vec![
                Field {
                    pad: 'p',
                    ..field("/currentPassword", "wrong".into())
                },
                Field {
                    pad: 'p',
                    ..field("/newPassword", "password".into())
                },
            ],
        ),
        (
            Method::POST,
            "/api/auth/login".into(),
            "LoginInput",
            Box::new(|| serde_json::json!({"username": "nobody", "password": "wrong"})),
            vec![
                Field {
                    pad: 'u',
                    ..field("/username", "u".into())
                },
                Field {
                    pad: 'p',
                    ..field("/password", "p".into())
                },
            ],
        ),
    ];

    let mut checked = 0;
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for (method, path, schema_name, base, fields) in &ops {
        let body_schema = &doc["components"]["schemas"][*schema_name];
        assert!(
            body_schema.is_object(),
            "{schema_name} is not in the document"
        );
        // The documented request body of the operation is this schema.
        let template = path.replace(&app, "{id}").replace(&user, "{id}");
        let op = &doc["paths"][&template][method.as_str().to_lowercase()];
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema_name}"),
            "{method} {template}"
        );
        assert!(
            op["responses"]["413"].is_object(),
            "{method} {template}: 413"
        );
        for f in fields {
            covered.insert(format!("{schema_name}{}", f.pointer));
            let sample_body = base();
            let schema = field_schema(&doc, body_schema, &sample_body, f.pointer);
            for candidate in candidates(&doc, schema, f) {
                let mut body = base();
                // A field inside an array item or the code source exists in the base.
                if body
                    .pointer(f.pointer.rsplit_once('/').unwrap().0)
                    .is_none()
                {
                    continue;
                }
                set(&mut body, f.pointer, candidate.clone());
                let documented = valid(&doc, body_schema, &body);
                // Login from an address of its own each time: the rate limit is not
                // what is tested here.
                let ip = format!("10.9.{}.{}", next() / 250 % 250, next() % 250 + 1);
                let r = h
                    .call_with(
                        method.clone(),
                        path,
                        &admin,
                        Some(body.clone()),
                        &[("x-forwarded-for", &ip)],
                    )
                    .await;
                assert!(
                    r.status.as_u16() < 500,
                    "{method} {path} {body}: {}",
                    r.text
                );
                let accepted = r.status != StatusCode::BAD_REQUEST;
                assert_eq!(
                    accepted,
                    documented,
                    "{method} {path}: {}={:?}: the document says {}, the server answered {} {}",
                    f.pointer,
                    candidate,
                    if documented { "valid" } else { "invalid" },
                    r.status,
                    r.text
                );
                checked += 1;
            }
        }
    }
    // Every constrained property of every request schema is probed.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ops.iter().map(|o| o.2) {
        for (prop, ps) in schemas[name]["properties"].as_object().unwrap() {
            let constrained = [
                "maxLength",
                "minLength",
                "pattern",
                "minimum",
                "maximum",
                "maxItems",
                "not",
                "enum",
            ]
            .iter()
            .any(|k| ps.get(k).is_some());
            if constrained {
                assert!(
                    covered.contains(&format!("{name}/{prop}")),
                    "{name}.{prop} has documented limits the test does not probe"
                );
            }
        }
    }
    assert!(checked > 200, "only {checked} probes");
}

/// The portable-regex rule: every pattern in the document is anchored and avoids the
/// classes whose meaning differs between ECMA-262, Python and Rust.
#[tokio::test]
async fn patterns_are_anchored_and_portable() {
    let h = Harness::new().await;
    let doc = document(&h).await;
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(p)) = m.get("pattern") {
                    out.push(p.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut patterns = Vec::new();
    walk(&doc, &mut patterns);
    assert!(patterns.len() >= 10, "{patterns:?}");
    for p in patterns {
        assert!(p.starts_with('^') && p.ends_with('$'), "unanchored {p}");
        for bad in [r"\d", r"\s", r"\w", r"\b", r"\p", "(?"] {
            assert!(!p.contains(bad), "{p} uses {bad}");
        }
        regex::Regex::new(&p).unwrap();
    }
    // The info says how bodies are read.
    let info = doc["info"]["description"].as_str().unwrap();
    assert!(info.contains("Unknown fields are ignored"), "{info}");
    assert!(info.contains("1 MiB"), "{info}");
}

const BODY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/apps"),
    ("PUT", "/api/apps/{app}"),
    ("POST", "/api/apps/{app}/scale"),
    ("POST", "/api/users"),
    ("PUT", "/api/users/{user}"),
    ("POST", "/api/auth/tokens"),
    ("PUT", "/api/auth/password"),
    ("POST", "/api/auth/login"),
];

#[tokio::test]
async fn bodies_must_be_json_objects_and_unknown_fields_are_ignored() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let app = h.app(&admin, "objects").await;
    let (_, user) = h.user(&admin, "objects-user").await;
    let apps_before = h.call(Method::GET, "/api/apps", &admin, None).await.body["apps"]
        .as_array()
        .unwrap()
        .len();
    for (method, path) in BODY_ROUTES {
        let path = path.replace("{app}", &app).replace("{user}", &user);
        for body in [
            r#"["a","a"]"#,
            "[null,null]",
            r#""x""#,
            "1",
            "true",
            "null",
            "[]",
        ] {
            let r = h
                .call_raw(
                    method.parse().unwrap(),
                    &path,
                    &admin,
                    "application/json",
                    body,
                )
                .await;
            r.expect_bad_request("expected a JSON object");
        }
    }
    let apps_after = h.call(Method::GET, "/api/apps", &admin, None).await.body["apps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(apps_before, apps_after, "an array body created an app");

    // Unknown fields are ignored everywhere (the documented choice).
    let extra = |mut v: Value| {
        v["noSuchField"] = serde_json::json!({"nested": [1]});
        Some(v)
    };
    let ok = [
        (
            "POST",
            "/api/apps".to_string(),
            serde_json::json!({"name": "x", "slug": "unknown-ok", "codeSource": {"type": "git", "repoUrl": "https://e.org/r", "extra": 1}, "env": [{"key": "A", "value": "b", "extra": 1}]}),
            StatusCode::CREATED,
        ),
        (
            "PUT",
            format!("/api/apps/{app}"),
            serde_json::json!({"name": "y"}),
            StatusCode::OK,
        ),
        (
            "POST",
            format!("/api/apps/{app}/scale"),
            serde_json::json!({"replicas": 2}),
            StatusCode::OK,
        ),
        (
            "POST",
            "/api/users".into(),
            serde_json::json!({"username": "unknown-ok", "password": "password1"}),
            StatusCode::CREATED,
        ),
        (
            "PUT",
            format!("/api/users/{user}"),
            serde_json::json!({"email": ""}),
            StatusCode::OK,
        ),
        (
            "POST",
            "/api/auth/tokens".into(),
            serde_json::json!({"name": "t"}),
            StatusCode::CREATED,
        ),
        (
            "PUT",
            "/api/auth/password".into(),
            serde_json::json!({"currentPassword": "wrong-one", "newPassword": "password1"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/api/auth/login".into(),
            serde_json::json!({"username": "admin", "password": common::ADMIN_PASSWORD}),
            StatusCode::OK,
        ),
    ];
    assert_eq!(ok.len(), BODY_ROUTES.len());
    for (method, path, body, status) in ok {
        let r = h
            .call(method.parse().unwrap(), &path, &admin, extra(body))
            .await;
        r.expect(status);
    }

    // Wrong types and `null` for a required field name the field.
    for (body, needle) in [
        (serde_json::json!({"name": null, "slug": "abc"}), "name"),
        (
            serde_json::json!({"name": "x", "slug": "abc", "replicas": "2"}),
            "replicas",
        ),
        (
            serde_json::json!({"name": "x", "slug": "abc", "env": [{"key": 1, "value": "v"}]}),
            "env[0].key",
        ),
        (
            serde_json::json!({"name": "x", "slug": "abc", "codeSource": {"type": "git"}}),
            "codeSource",
        ),
    ] {
        let r = h.call(Method::POST, "/api/apps", &admin, Some(body)).await;
        r.expect_bad_request(needle);
    }
}

#[tokio::test]
async fn oversize_json_bodies_are_413() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let limit = rserve_proxy::api::extract::JSON_BODY_LIMIT;
    // Just under the limit is read (and judged on its content)…
    let mut body = serde_json::json!({"name": "x", "slug": "big-ok"}).to_string();
    body.insert_str(1, &" ".repeat(limit - body.len()));
    assert_eq!(body.len(), limit);
    let r = h
        .call_raw(Method::POST, "/api/apps", &admin, "application/json", &body)
        .await;
    r.expect(StatusCode::CREATED);
    // …one byte more is a 413 on every JSON route, with the contract's error shape.
    body.insert(1, ' ');
    for (method, path) in BODY_ROUTES {
        let path = path
            .replace("{app}", &uuid::Uuid::new_v4().to_string())
            .replace("{user}", &uuid::Uuid::new_v4().to_string());
        let r = h
            .call_raw(
                method.parse().unwrap(),
                &path,
                &admin,
                "application/json",
                &body,
            )
            .await;
        r.expect_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large: the limit is 1 MiB",
        );
    }
}
