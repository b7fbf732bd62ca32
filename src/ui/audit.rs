//! Audit log (`/settings/audit`, admins only): paged, newest first, filtered by user
//! and action; the same service as `GET /api/audit`.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::page::{fmt_time, Nav};
use super::UiUser;
use crate::service::metrics::{self, AuditParams};
use crate::service::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/settings/audit", get(show))
}

pub struct AuditRow {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub ip: String,
}

#[derive(Template)]
#[template(path = "pages/audit.html")]
struct AuditContent {
    entries: Vec<AuditRow>,
    f_user: String,
    f_action: String,
    has_newer: bool,
    first_query: String,
    older_query: Option<String>,
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn show(
    State(state): State<AppState>,
    user: UiUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = user.require_admin() {
        return e.into_response();
    }
    let page = match metrics::audit(&state, &user.who, AuditParams::from_query(&q)).await {
        Ok(p) => p,
        Err(e) => return user.error(e).into_response(),
    };
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (f_user, f_action, limit) = (get("user"), get("action"), get("limit"));
    let keep = [
        ("user", f_user.as_str()),
        ("action", f_action.as_str()),
        ("limit", limit.as_str()),
    ];
    let older_query = page.next.map(|n| {
        let before = n.to_string();
        let mut pairs = keep.to_vec();
        pairs.push(("before", &before));
        query(&pairs)
    });
    let content = AuditContent {
        entries: page
            .entries
            .into_iter()
            .map(|(seq, e)| AuditRow {
                seq,
                at: fmt_time(e.at),
                actor: e.actor_name,
                action: e.action,
                target: e.target.unwrap_or_default(),
                ip: e.ip.unwrap_or_default(),
            })
            .collect(),
        has_newer: q.contains_key("before"),
        first_query: query(&keep),
        older_query,
        f_user,
        f_action,
    };
    user.page("Audit log", Nav::Audit).render(&content)
}
