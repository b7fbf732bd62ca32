//! Per-app container settings: limits and environment, secrets never returned.

mod common;

use axum::http::{Method, StatusCode};
use common::Harness;
use serde_json::json;

#[tokio::test]
async fn defaults_validation_and_secret_env() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "settings-app").await;
    let path = format!("/api/apps/{id}");

    let r = h.call(Method::GET, &path, &admin, None).await;
    assert_eq!(r.body["app"]["memoryMb"], 512);
    assert_eq!(r.body["app"]["cpus"], 1.0);
    assert_eq!(r.body["app"]["env"], json!([]));

    let r = h
        .call(
            Method::PUT,
            &path,
            &admin,
            Some(json!({"memoryMb": 256, "cpus": 0.5, "env": [
                {"key": "MODE", "value": "prod"},
                {"key": "API_KEY", "value": "s3cr3t-value", "secret": true}
            ]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["app"]["memoryMb"], 256);
    assert_eq!(r.body["app"]["cpus"], 0.5);
    assert_eq!(
        r.body["app"]["env"][0],
        json!({"key": "MODE", "value": "prod", "secret": false})
    );
    assert_eq!(
        r.body["app"]["env"][1],
        json!({"key": "API_KEY", "secret": true})
    );
    assert!(!r.text.contains("s3cr3t-value"));
    for listing in [
        h.call(Method::GET, &path, &admin, None).await,
        h.call(Method::GET, "/api/apps", &admin, None).await,
    ] {
        assert!(
            !listing.text.contains("s3cr3t-value"),
            "secret leaked: {}",
            listing.text
        );
    }

    // Sending the secret back without a value keeps it; the store still has it.
    let r = h
        .call(
            Method::PUT,
            &path,
            &admin,
            Some(json!({"env": [{"key": "API_KEY", "secret": true}, {"key": "MODE", "value": "dev"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let app = h.state.store.get_app(id.parse().unwrap()).unwrap().unwrap();
    assert_eq!(app.settings.env[0].value, "s3cr3t-value");
    assert_eq!(app.settings.env[1].value, "dev");

    // Bad input changes nothing.
    for bad in [
        json!({"memoryMb": 1}),
        json!({"cpus": 0}),
        json!({"cpus": "two"}),
        json!({"env": [{"key": "1BAD", "value": "x"}]}),
        json!({"env": [{"key": "A", "value": "x"}, {"key": "A", "value": "y"}]}),
        json!({"env": [{"key": "NEW_ONE"}]}),
    ] {
        let r = h.call(Method::PUT, &path, &admin, Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(r.body["error"].is_string());
    }
    let after = h.state.store.get_app(id.parse().unwrap()).unwrap().unwrap();
    assert_eq!(after, app, "refused updates left the app as it was");
}

#[tokio::test]
async fn scale_applies_now_to_a_running_app_and_later_to_a_stopped_one() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "scale-app").await;
    let scale = |n: serde_json::Value| {
        let path = format!("/api/apps/{id}/scale");
        let body = json!({ "replicas": n });
        let h = &h;
        let admin = admin.clone();
        async move { h.call(Method::POST, &path, &admin, Some(body)).await }
    };

    // Stopped: stored, nothing started.
    let r = scale(json!(3)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"ok": true, "replicas": 3, "status": "stopped"})
    );
    assert!(h.spawner.calls.lock().unwrap().is_empty());

    // Running: brought to the new count at once.
    let r = h
        .call(Method::POST, &format!("/api/apps/{id}/start"), &admin, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = scale(json!(2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["replicas"], 2);
    let r = h
        .call(Method::GET, &format!("/api/apps/{id}"), &admin, None)
        .await;
    assert_eq!(r.body["app"]["replicas"], 2);
    assert_eq!(r.body["app"]["containers"].as_array().unwrap().len(), 2);

    for bad in [json!(0), json!(11), json!("2")] {
        let r = scale(bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = h
        .call(Method::GET, &format!("/api/apps/{id}"), &admin, None)
        .await;
    assert_eq!(
        r.body["app"]["replicas"], 2,
        "refused scales changed nothing"
    );
}
