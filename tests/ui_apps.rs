//! Rendering tests of the apps pages (list, new/edit, detail, upload, logs) through
//! the real router over a real redb in a temp dir (the spawner is tests/common's
//! in-memory fake): status codes, key content and hooks, partial vs full page,
//! escaping, CSRF, form errors beside their fields, secrets never in the HTML, and
//! someone else's app answering 404.

mod common;

use std::io::{Cursor, Write};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

use common::ui::{location, UiSession};
use common::{Cred, Harness, Reply};

const XSS: &str = "<script>alert(1)</script>";

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The upload form as a browser posts it: multipart with the `csrf` field and `file`.
async fn post_upload(
    h: &Harness,
    s: &UiSession,
    app_id: &str,
    filename: &str,
    data: &[u8],
    hx: bool,
) -> Reply {
    let boundary = "----ui-apps-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{}\r\n",
            s.csrf
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut b = Harness::request(Method::POST, &format!("/apps/{app_id}/upload"), &s.cred)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("sec-fetch-site", "same-origin");
    if hx {
        b = b.header("hx-request", "true");
    }
    h.send(b.body(Body::from(body)).unwrap()).await
}

fn api_cred(s: &UiSession) -> &Cred {
    &s.cred
}

/// The app as the API returns it.
async fn api_app(h: &Harness, s: &UiSession, id: &str) -> Reply {
    h.call(Method::GET, &format!("/api/apps/{id}"), api_cred(s), None)
        .await
}

async fn app_count(h: &Harness, s: &UiSession) -> usize {
    let r = h.call(Method::GET, "/api/apps", api_cred(s), None).await;
    r.expect(StatusCode::OK)["apps"].as_array().unwrap().len()
}

/// The text of the element with `data-field="field"` (a field error).
fn field_error(html: &str, field: &str) -> String {
    let marker = format!("data-field=\"{field}\">");
    let Some(at) = html.find(&marker) else {
        return String::new();
    };
    let rest = &html[at + marker.len()..];
    rest[..rest.find("</p>").unwrap_or(0)].to_string()
}

fn assert_full_page(r: &Reply, title: &str) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.starts_with("<!doctype html>"), "{}", r.text);
    assert!(
        r.text
            .contains(&format!("<title>{title} — rserve-proxy</title>")),
        "title {title}: {}",
        r.text
    );
}

fn assert_partial(r: &Reply) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("<html"), "{}", r.text);
    assert!(!r.text.contains("id=\"sidebar\""), "{}", r.text);
}

#[tokio::test]
async fn apps_list_full_partial_and_polled_table() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let empty = admin.get(&h, "/apps").await;
    assert_full_page(&empty, "Apps");
    assert!(empty.text.contains("No apps yet"));

    let id = h.app(&admin.cred, "first-app").await;
    h.app(&admin.cred, "second-app").await;
    h.call(
        Method::POST,
        &format!("/api/apps/{id}/start"),
        &admin.cred,
        None,
    )
    .await
    .expect(StatusCode::OK);

    let page = admin.get(&h, "/apps").await;
    assert_full_page(&page, "Apps");
    for hook in [
        "id=\"apps-table\"",
        "id=\"new-app\" class=\"btn btn-primary\" href=\"/apps/new\"",
        "<tr data-slug=\"first-app\">",
        "<tr data-slug=\"second-app\">",
        "class=\"status-badge st-running\">running</span>",
        "class=\"status-badge st-stopped\">stopped</span>",
        "action-start",
        "action-stop",
        "action-restart",
        "<h1>Apps</h1>",
        "hx-trigger=\"every 5s\"",
    ] {
        assert!(page.text.contains(hook), "missing {hook}: {}", page.text);
    }

    let partial = admin.get_hx(&h, "/apps").await;
    assert_partial(&partial);
    assert!(partial.text.contains("<h1>Apps</h1>") && partial.text.contains("first-app"));

    let table = admin.get(&h, "/apps?part=table").await;
    assert_partial(&table);
    assert!(table.text.trim_start().starts_with("<div id=\"apps-live\""));
    assert!(!table.text.contains("<h1>"));
    assert!(table.text.contains("st-running"));
}

#[tokio::test]
async fn a_user_sees_only_their_apps_and_others_answer_404() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let (alice, _) = h.ui_user(&admin.cred, "alice").await;
    let id = h.app(&admin.cred, "admins-only").await;

    let list = alice.get(&h, "/apps").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.text.contains("admins-only"));

    for path in [
        format!("/apps/{id}"),
        format!("/apps/{id}/edit"),
        format!("/apps/{id}/upload"),
        format!("/apps/{id}/logs"),
        format!("/apps/{id}/logs/download"),
        "/apps/not-a-uuid".to_string(),
        format!("/apps/{}", uuid::Uuid::new_v4()),
    ] {
        let r = alice.get(&h, &path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
        assert!(!r.text.contains("admins-only"), "{path}");
    }
    for verb in ["start", "stop", "restart", "rebuild"] {
        let r = alice.post(&h, &format!("/apps/{id}/{verb}"), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{verb}: {}", r.text);
    }
    let r = alice
        .post(
            &h,
            &format!("/apps/{id}/delete"),
            &[("confirm_slug", "admins-only")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = alice
        .post(&h, &format!("/apps/{id}/edit"), &[("name", "mine now")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = alice
        .post(
            &h,
            &format!("/apps/{id}/entry"),
            &[("entry_script", "app.R")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post_upload(&h, &alice, &id, "app.R", b"1\n", false).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Nothing happened to the app.
    assert!(h.spawner_calls().is_empty(), "{:?}", h.spawner_calls());
    let app = api_app(&h, &admin, &id).await;
    assert_eq!(app.expect(StatusCode::OK)["app"]["name"], "App admins-only");
    assert!(!h.upload_dir(&id).exists());
}

#[tokio::test]
async fn app_names_are_escaped_everywhere() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let r = h
        .call(
            Method::POST,
            "/api/apps",
            &admin.cred,
            Some(
                json!({"name": XSS, "slug": "xss-app", "packages": ["dplyr"],
                        "env": [{"key": "NOTE", "value": XSS}]}),
            ),
        )
        .await;
    let id = r.expect(StatusCode::CREATED)["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        "/apps".to_string(),
        format!("/apps/{id}"),
        format!("/apps/{id}/edit"),
        format!("/apps/{id}/upload"),
        format!("/apps/{id}/logs"),
    ] {
        let r = admin.get(&h, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(!r.text.contains(XSS), "{path} renders the name raw");
        assert!(
            r.text.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn new_app_form_creates_through_the_service() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let form = admin.get(&h, "/apps/new").await;
    assert_full_page(&form, "New app");
    for hook in [
        "id=\"app-form\"",
        "name=\"name\"",
        "name=\"slug\"",
        "id=\"slug-check\"",
        "hx-get=\"/apps/check-slug\"",
        "<select id=\"f-r\" name=\"r_version\">",
        "<option value=\"4.4.1\">4.4.1</option>",
        "<option value=\"4.2.2\">4.2.2</option>",
        "name=\"packages\"",
        "name=\"code_source\" value=\"upload\"",
        "name=\"code_source\" value=\"git\"",
        "name=\"git_url\"",
        "name=\"git_branch\"",
        "name=\"entry_script\"",
        "name=\"replicas\"",
        "name=\"memory_mb\"",
        "name=\"cpus\"",
        "name=\"env_key_0\"",
        "name=\"env_secret_0\"",
        "id=\"app-submit\"",
    ] {
        assert!(form.text.contains(hook), "missing {hook}");
    }
    assert_partial(&admin.get_hx(&h, "/apps/new").await);

    let r = admin
        .post(
            &h,
            "/apps",
            &[
                ("name", "Sales"),
                ("slug", "sales"),
                ("r_version", "4.2.2"),
                ("packages", "dplyr, jsonlite ggplot2"),
                ("code_source", "upload"),
                ("git_url", ""),
                ("git_branch", ""),
                ("entry_script", "app.R"),
                ("replicas", "2"),
                ("memory_mb", "512"),
                ("cpus", "0.5"),
                ("env_key_0", "MODE"),
                ("env_value_0", "prod"),
                ("env_key_1", "API_KEY"),
                ("env_value_1", "s3cret-value"),
                ("env_secret_1", "on"),
                ("env_key_2", ""),
                ("env_value_2", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let to = location(&r).unwrap().to_string();
    assert!(
        to.starts_with("/apps/") && to.ends_with("/upload?flash=created"),
        "{to}"
    );
    let id = to.trim_start_matches("/apps/").split('/').next().unwrap();
    let app = api_app(&h, &admin, id).await;
    let app = &app.expect(StatusCode::OK)["app"];
    assert_eq!(app["name"], "Sales");
    assert_eq!(app["rVersion"], "4.2.2");
    assert_eq!(app["packages"], json!(["dplyr", "jsonlite", "ggplot2"]));
    assert_eq!(app["entryScript"], "app.R");
    assert_eq!(app["replicas"], 2);
    let stored = h.state.store.get_app(id.parse().unwrap()).unwrap().unwrap();
    assert_eq!(stored.settings.memory_mb, 512);
    assert_eq!(stored.settings.cpu_millis, 500);
    assert_eq!(stored.settings.env.len(), 2);
    assert!(stored.settings.env[1].secret);
    assert_eq!(stored.settings.env[1].value, "s3cret-value");

    // The upload page it leads to says so.
    let next = admin.get(&h, &to).await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(next.text.contains("App created."));

    // A git app goes to its page.
    let r = admin
        .post_hx(
            &h,
            "/apps",
            &[
                ("csrf", &admin.csrf),
                ("name", "From git"),
                ("slug", "from-git"),
                ("code_source", "git"),
                ("git_url", "https://example.com/repo.git"),
                ("git_branch", "main"),
            ],
        )
        .await;
    // htmx: HX-Redirect instead of a 303 the XHR would follow into a fragment.
    let to = r.headers.get("hx-redirect").unwrap().to_str().unwrap();
    assert!(
        to.ends_with("?flash=created") && !to.contains("upload"),
        "{to}"
    );
}

#[tokio::test]
async fn form_errors_sit_beside_their_fields_and_keep_the_values() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    h.app(&admin.cred, "taken").await;

    // Service rules: every problem at once.
    let r = admin
        .post(
            &h,
            "/apps",
            &[
                ("name", "Kept name"),
                ("slug", "Bad Slug"),
                ("r_version", "4.2.2"),
                ("packages", "ok-pkg, bad pkg!"),
                ("code_source", "git"),
                ("git_url", "http://plain.example.com/x.git"),
                ("replicas", "99"),
                ("memory_mb", "1"),
                ("env_key_0", "1BAD"),
                ("env_value_0", "v"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("<title>New app — rserve-proxy</title>"));
    for (field, needle) in [
        ("slug", "slug must be 3 to 64 characters"),
        ("packages", "is not a valid package reference"),
        ("git_url", "https:// URL"),
        ("replicas", "replicas must be from 1 to 10"),
        ("memory_mb", "memoryMb must be from 64"),
        ("env", "env key &#34;1BAD&#34;"),
    ] {
        let e = field_error(&r.text, field);
        assert!(e.contains(needle), "{field}: {e:?}");
    }
    assert_eq!(field_error(&r.text, "name"), "");
    for kept in [
        "value=\"Kept name\"",
        "value=\"Bad Slug\"",
        "value=\"ok-pkg, bad pkg!\"",
        "value=\"http://plain.example.com/x.git\"",
        "value=\"99\"",
        "value=\"1BAD\"",
        "<option value=\"4.2.2\" selected>",
        "value=\"git\" id=\"cs-git\" checked",
    ] {
        assert!(r.text.contains(kept), "lost {kept}");
    }
    assert_eq!(app_count(&h, &admin).await, 1);

    // Wrong types: caught before the service, beside their fields.
    let r = admin
        .post(
            &h,
            "/apps",
            &[
                ("name", "x"),
                ("slug", "typed"),
                ("replicas", "two"),
                ("cpus", "lots"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&r.text, "replicas").contains("whole number"));
    assert!(field_error(&r.text, "cpus").contains("a number"));
    assert_eq!(app_count(&h, &admin).await, 1);

    // A taken slug: the create's 409 message, beside the slug.
    let r = admin
        .post(&h, "/apps", &[("name", "x"), ("slug", "taken")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(field_error(&r.text, "slug").contains("already exists"));
    assert_eq!(app_count(&h, &admin).await, 1);

    // htmx posts get the same page as the partial, and it is swapped (4xx).
    let r = admin
        .post_hx(&h, "/apps", &[("name", ""), ("slug", "fine-slug")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text.contains("<html"));
    assert!(field_error(&r.text, "name").contains("name must be 1 to 128"));
}

#[tokio::test]
async fn slug_check_answers_like_create() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    h.app(&admin.cred, "taken").await;
    for (slug, needle) in [
        (
            "free-one",
            "Available: the app will be served at /free-one/",
        ),
        ("taken", "An app with slug &#34;taken&#34; already exists"),
        ("No", "slug must be 3 to 64 characters"),
        ("api", "is reserved for the admin interface"),
    ] {
        let r = admin
            .get_hx(&h, &format!("/apps/check-slug?slug={slug}"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.text.starts_with("<p id=\"slug-check\""), "{}", r.text);
        assert!(r.text.contains(needle), "{slug}: {}", r.text);
    }
    let r = admin.get_hx(&h, "/apps/check-slug?slug=%3Cscript%3E").await;
    assert!(!r.text.contains("<script>"), "{}", r.text);
}

#[tokio::test]
async fn csrf_guards_create_actions_and_delete() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let other = h.ui_admin().await; // a second session of the same user
    assert_ne!(admin.csrf, other.csrf);
    let id = h.app(&admin.cred, "guarded").await;

    let fields = [("name", "Sneaky"), ("slug", "sneaky")];
    let r = admin.post_without_csrf(&h, "/apps", &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin
        .post_with_token(&h, "/apps", &other.csrf, &fields)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app_count(&h, &admin).await, 1);

    for verb in ["start", "stop", "restart", "rebuild"] {
        let path = format!("/apps/{id}/{verb}");
        let r = admin.post_without_csrf(&h, &path, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{verb}");
        let r = admin.post_with_token(&h, &path, &other.csrf, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{verb}");
    }
    assert!(h.spawner_calls().is_empty(), "{:?}", h.spawner_calls());

    let path = format!("/apps/{id}/delete");
    let r = admin
        .post_without_csrf(&h, &path, &[("confirm_slug", "guarded")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin
        .post_with_token(&h, &path, &other.csrf, &[("confirm_slug", "guarded")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin
        .post_with_token(
            &h,
            &format!("/apps/{id}/edit"),
            &other.csrf,
            &[("name", "renamed")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let app = api_app(&h, &admin, &id).await;
    assert_eq!(app.expect(StatusCode::OK)["app"]["name"], "App guarded");

    // And with the token they work (so the 403s above were about the token).
    let r = admin.post(&h, &format!("/apps/{id}/start"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(h.spawner_calls(), ["start guarded"]);
}

#[tokio::test]
async fn delete_asks_for_the_slug() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let id = h.app(&admin.cred, "doomed").await;
    let page = admin.get(&h, &format!("/apps/{id}")).await;
    assert!(page.text.contains("id=\"delete-form\""));
    assert!(page.text.contains("name=\"confirm_slug\""));
    assert!(page.text.contains("id=\"delete-submit\""));

    for wrong in ["", "doome", "DOOMED", "other"] {
        let r = admin
            .post(
                &h,
                &format!("/apps/{id}/delete"),
                &[("confirm_slug", wrong)],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{wrong:?}");
        assert!(
            field_error(&r.text, "confirm_slug").contains("Type the app&#39;s slug, doomed"),
            "{}",
            r.text
        );
        api_app(&h, &admin, &id).await.expect(StatusCode::OK);
    }
    assert!(h.spawner_calls().is_empty());

    let r = admin
        .post(
            &h,
            &format!("/apps/{id}/delete"),
            &[("confirm_slug", "doomed")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), Some("/apps?flash=deleted"));
    let gone = api_app(&h, &admin, &id).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let list = admin.get(&h, "/apps?flash=deleted").await;
    assert!(list.text.contains("App deleted."));
    assert!(!list.text.contains("data-slug=\"doomed\""));
}

#[tokio::test]
async fn detail_page_shows_status_replicas_and_connection() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let r = h
        .call(
            Method::POST,
            "/api/apps",
            &admin.cred,
            Some(json!({"name": "Live", "slug": "live-app", "replicas": 2,
                        "packages": ["dplyr"], "env": [{"key": "MODE", "value": "prod"}]})),
        )
        .await;
    let id = r.expect(StatusCode::CREATED)["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let page = admin.get(&h, &format!("/apps/{id}")).await;
    assert_full_page(&page, "Live");
    for hook in [
        "<h1>Live</h1>",
        "id=\"app-status\" class=\"status-badge st-stopped\">stopped</span>",
        "id=\"replicas-table\"",
        "No replicas are running.",
        "id=\"action-start\"",
        "id=\"action-stop\"",
        "id=\"action-restart\"",
        "id=\"connect-url\">ws://localhost/live-app/</code>",
        "id=\"connect-snippet\"",
        "RserveClient.create({ host: &#34;ws://localhost/live-app/&#34; })",
        // OCAP mode: the snippet calls a capability, never eval.
        "const funs = await R.ocap(app);",
        "class=\"btn btn-small copy-btn\" data-copy=\"#connect-url\"",
        "data-copy=\"#connect-snippet\"",
        "<span class=\"tag\">dplyr</span>",
        "<code>MODE</code> = <code>prod</code>",
        // ui-dash's parts, included server-side.
        "<section id=\"app-metrics\"",
        "id=\"app-timeline\"",
        "class=\"chart\"",
    ] {
        assert!(page.text.contains(hook), "missing {hook}: {}", page.text);
    }

    // As the proxy forwards a browser that came over TLS.
    let req = Harness::request(Method::GET, &format!("/apps/{id}"), &admin.cred)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "r.example.org")
        .body(Body::empty())
        .unwrap();
    let tls = h.send(req).await;
    assert!(
        tls.text
            .contains("id=\"connect-url\">wss://r.example.org/live-app/</code>"),
        "{}",
        tls.text
    );

    // Start through the form: redirect with a message, then the live part changes.
    let r = admin.post(&h, &format!("/apps/{id}/start"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&r),
        Some(format!("/apps/{id}?flash=started").as_str())
    );
    let live = admin.get_hx(&h, &format!("/apps/{id}?part=live")).await;
    assert_partial(&live);
    assert!(live
        .text
        .trim_start()
        .starts_with("<section id=\"app-live\""));
    assert!(live
        .text
        .contains("id=\"app-status\" class=\"status-badge st-running\">running</span>"));
    assert_eq!(
        live.text
            .matches("<td data-label=\"Health\">healthy</td>")
            .count(),
        2,
        "{}",
        live.text
    );
    assert!(!live.text.contains("<h1>"));

    // htmx actions answer the page they came from, with the outcome.
    let r = admin
        .post_hx(&h, &format!("/apps/{id}/stop"), &[("return_to", "list")])
        .await;
    assert_partial(&r);
    // The live status says what happened (a message would go stale).
    assert!(r.text.contains("id=\"apps-table\""));
    assert!(r
        .text
        .contains("class=\"status-badge st-stopped\">stopped</span>"));
    assert!(!r.text.contains("flash-success"), "{}", r.text);
    let r = admin.post_hx(&h, &format!("/apps/{id}/restart"), &[]).await;
    assert_partial(&r);
    assert!(r.text.contains("st-running\">running</span>"), "{}", r.text);
    assert!(r.text.contains("id=\"connect-url\""));

    // Docker down: the page says so, nothing breaks.
    h.docker_down(true);
    let r = admin.post(&h, &format!("/apps/{id}/start"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("fake Docker is down"), "{}", r.text);
    let r = admin.post_hx(&h, &format!("/apps/{id}/start"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "htmx gets a swappable page");
    assert!(r.text.contains("fake Docker is down"));
}

#[tokio::test]
async fn secret_values_never_reach_the_html() {
    const SECRET: &str = "TOPSECRET-4711";
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let r = h
        .call(
            Method::POST,
            "/api/apps",
            &admin.cred,
            Some(json!({"name": "Keeper", "slug": "keeper",
                        "env": [{"key": "TOKEN", "value": SECRET, "secret": true},
                                {"key": "PLAIN", "value": "shown"}]})),
        )
        .await;
    let id = r.expect(StatusCode::CREATED)["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = admin.get(&h, &format!("/apps/{id}")).await;
    let edit = admin.get(&h, &format!("/apps/{id}/edit")).await;
    assert_full_page(&edit, "Edit app");
    for page in [&detail, &edit] {
        assert!(!page.text.contains(SECRET));
        assert!(page.text.contains("TOKEN"));
        assert!(page.text.contains("shown"));
    }
    assert!(edit.text.contains("unchanged (secret)"));
    assert!(edit.text.contains("readonly"), "the slug cannot be edited");

    // A refused save re-renders without it too.
    let r = admin
        .post(
            &h,
            &format!("/apps/{id}/edit"),
            &[
                ("name", "Keeper"),
                ("replicas", "0"),
                ("env_key_0", "TOKEN"),
                ("env_value_0", ""),
                ("env_secret_0", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.text.contains(SECRET));
    assert!(field_error(&r.text, "replicas").contains("replicas must be from 1 to 10"));

    // Saving with the secret left empty keeps it; the other variable changes.
    let r = admin
        .post(
            &h,
            &format!("/apps/{id}/edit"),
            &[
                ("name", "Keeper 2"),
                ("slug", "ignored-slug"),
                ("env_key_0", "TOKEN"),
                ("env_value_0", ""),
                ("env_secret_0", "on"),
                ("env_key_1", "PLAIN"),
                ("env_value_1", "changed"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(
        location(&r),
        Some(format!("/apps/{id}?flash=saved").as_str())
    );
    let stored = h.state.store.get_app(id.parse().unwrap()).unwrap().unwrap();
    assert_eq!(stored.name, "Keeper 2");
    assert_eq!(stored.slug, "keeper");
    let env: Vec<(&str, &str, bool)> = stored
        .settings
        .env
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str(), e.secret))
        .collect();
    assert_eq!(env, [("TOKEN", SECRET, true), ("PLAIN", "changed", false)]);

    // Unmarking the secret without typing its value again is refused (it would show).
    let r = admin
        .post(
            &h,
            &format!("/apps/{id}/edit"),
            &[
                ("name", "Keeper 2"),
                ("env_key_0", "TOKEN"),
                ("env_value_0", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(field_error(&r.text, "env").contains("type the value of TOKEN again"));
    assert!(!r.text.contains(SECRET));
}

#[tokio::test]
async fn upload_shows_the_tree_and_the_entry_choice() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let id = h.app(&admin.cred, "two-scripts").await;

    let empty = admin.get(&h, &format!("/apps/{id}/upload")).await;
    assert_full_page(&empty, "Upload code: App two-scripts");
    for hook in [
        "id=\"upload-form\"",
        "<input id=\"upload-file\" type=\"file\" name=\"file\"",
        "id=\"upload-progress\"",
        "id=\"drop-zone\"",
        "Nothing uploaded yet.",
    ] {
        assert!(empty.text.contains(hook), "missing {hook}");
    }
    assert!(!empty.text.contains("id=\"entry-form\""));

    let zip = zip_of(&[
        ("app.R", b"cat('a')\n"),
        ("other.R", b"cat('b')\n"),
        ("R/helper.R", b"1\n"),
        ("data/input.csv", b"x\n1\n"),
    ]);
    let r = post_upload(&h, &admin, &id, "code.zip", &zip, true).await;
    assert_partial(&r);
    assert!(
        r.text
            .contains("Uploaded code.zip: 4 file(s). Choose the entry script below."),
        "{}",
        r.text
    );
    for hook in [
        "id=\"file-tree\"",
        ">app.R <span",
        ">other.R <span",
        ">R/<",
        ">helper.R <span",
        ">input.csv <span",
        "id=\"entry-form\"",
        "name=\"entry_script\" value=\"app.R\"",
        "name=\"entry_script\" value=\"other.R\"",
        "id=\"entry-submit\"",
    ] {
        assert!(r.text.contains(hook), "missing {hook}: {}", r.text);
    }
    // Only top-level scripts can start the app.
    assert!(!r.text.contains("value=\"helper.R\""));
    assert!(!r.text.contains("value=\"R/helper.R\""));

    // A script that is not there is refused beside the choice; nothing changes.
    let r = admin
        .post(
            &h,
            &format!("/apps/{id}/entry"),
            &[("entry_script", "helper.R")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        field_error(&r.text, "entry_script").contains("not one of the uploaded R scripts"),
        "{}",
        r.text
    );
    let app = api_app(&h, &admin, &id).await;
    assert_eq!(
        app.expect(StatusCode::OK)["app"]["entryScript"],
        "run_rserve.R"
    );

    let r = admin
        .post(
            &h,
            &format!("/apps/{id}/entry"),
            &[("entry_script", "other.R")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(
        location(&r),
        Some(format!("/apps/{id}?flash=entry").as_str())
    );
    let app = api_app(&h, &admin, &id).await;
    assert_eq!(app.expect(StatusCode::OK)["app"]["entryScript"], "other.R");

    // Coming back (re-upload from the edit page) shows the current files and choice.
    let again = admin.get(&h, &format!("/apps/{id}/upload")).await;
    assert!(again.text.contains("From <code>code.zip</code>"));
    assert!(again
        .text
        .contains("name=\"entry_script\" value=\"other.R\" checked"));
    assert!(again
        .text
        .contains("<span class=\"tag\">entry script</span>"));
    let detail = admin.get(&h, &format!("/apps/{id}")).await;
    assert!(detail.text.contains(&format!("href=\"/apps/{id}/upload\"")));
    let edit = admin.get(&h, &format!("/apps/{id}/edit")).await;
    assert!(edit.text.contains("id=\"current-code\""));
    assert!(edit.text.contains("<li><code>R/helper.R</code></li>"));
    assert!(edit.text.contains("Entry script: <code>other.R</code></p>"));
    assert!(edit
        .text
        .contains(&format!("id=\"reupload\" href=\"/apps/{id}/upload\"")));

    // A refused upload leaves the files as they were and says why.
    let r = post_upload(&h, &admin, &id, "notes.txt", b"hello", false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("not a supported upload"));
    assert!(r.text.contains(">other.R <span"));

    // A single script becomes the entry script by itself.
    let r = post_upload(&h, &admin, &id, "solo.R", b"1\n", false).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .text
        .contains("Its only R script, solo.R, is the entry script."));
    let app = api_app(&h, &admin, &id).await;
    assert_eq!(app.expect(StatusCode::OK)["app"]["entryScript"], "solo.R");
}

#[tokio::test]
async fn upload_needs_the_csrf_token_too() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let other = h.ui_admin().await;
    let id = h.app(&admin.cred, "guarded-upload").await;
    let stolen = UiSession {
        cred: admin.cred.clone(),
        csrf: other.csrf.clone(),
    };
    let r = post_upload(&h, &stolen, &id, "app.R", b"1\n", false).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!h.upload_dir(&id).exists());
    let r = admin
        .post_with_token(
            &h,
            &format!("/apps/{id}/entry"),
            &other.csrf,
            &[("entry_script", "app.R")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn logs_page_and_download() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let id = h.app(&admin.cred, "chatty").await;

    let page = admin.get(&h, &format!("/apps/{id}/logs")).await;
    assert_full_page(&page, "Logs: App chatty");
    for hook in [
        "id=\"log-lines\"",
        &format!("data-stream=\"/api/apps/{id}/logs?source=build\""),
        "id=\"log-pause\"",
        &format!("id=\"log-download\" class=\"btn btn-small\" href=\"/apps/{id}/logs/download?source=build\""),
        "data-source=\"build\" aria-current=\"page\"",
        "data-source=\"runtime\"",
    ] {
        assert!(page.text.contains(hook), "missing {hook}: {}", page.text);
    }
    let runtime = admin
        .get_hx(&h, &format!("/apps/{id}/logs?source=runtime"))
        .await;
    assert_partial(&runtime);
    assert!(runtime.text.contains(&format!(
        "data-stream=\"/api/apps/{id}/logs?source=runtime\""
    )));
    let bad = admin
        .get(&h, &format!("/apps/{id}/logs?source=everything"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // The stream the page reads is the API's SSE route, open to the session cookie.
    let sse = h
        .call(
            Method::GET,
            &format!("/api/apps/{id}/logs?source=build"),
            &admin.cred,
            None,
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert!(sse
        .text
        .contains("event: log\ndata: Step 1/3 : FROM rserve-base"));

    let dl = admin
        .get(&h, &format!("/apps/{id}/logs/download?source=build"))
        .await;
    assert_eq!(dl.status, StatusCode::OK);
    assert_eq!(
        dl.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        dl.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"chatty-build.log\""
    );
    assert_eq!(dl.text, "Step 1/3 : FROM rserve-base\ndone\n");
    let dl = admin
        .get(&h, &format!("/apps/{id}/logs/download?source=runtime"))
        .await;
    assert_eq!(dl.text, "Rserve started\n");
}

#[tokio::test]
async fn logged_out_visitors_go_to_login_and_back() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let id = h.app(&admin.cred, "behind-login").await;
    let r = h
        .ui_get(&Cred::None, &format!("/apps/{id}/upload"), false)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let to = location(&r).unwrap();
    assert!(to.starts_with("/login?next="), "{to}");
    assert!(to.contains(&id), "{to}");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/apps")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from("name=x&slug=nobody-app"))
        .unwrap();
    let r = h.send(req).await;
    assert!(
        r.status == StatusCode::SEE_OTHER || r.status == StatusCode::FORBIDDEN,
        "{}",
        r.status
    );
    assert_eq!(app_count(&h, &admin).await, 1);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_changes_nothing() {
    let h = Harness::with_config(|c| c.upload_max_bytes = 1024 * 1024).await;
    let admin = h.ui_admin().await;
    let id = h.app(&admin.cred, "big-upload").await;
    let r = post_upload(&h, &admin, &id, "first.R", b"1\n", false).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let big = vec![b'#'; 1024 * 1024 + 10];
    let r = post_upload(&h, &admin, &id, "big.R", &big, false).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert!(
        r.text.contains("larger than the 1 MB upload limit"),
        "{}",
        r.text
    );
    assert_eq!(r.headers[header::CONNECTION], "close");
    // The previous upload is still what the page shows.
    assert!(r.text.contains(">first.R <span"), "{}", r.text);
    assert!(h.upload_dir(&id).join("first.R").is_file());
    assert!(!h.upload_dir(&id).join("big.R").exists());
}
