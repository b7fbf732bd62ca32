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
