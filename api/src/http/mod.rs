//! The HTTP API: JSON under `/v1`, RFC 9457 errors. Handlers are thin: they parse,
//! call a domain service, and shape the answer.

mod accounts;
pub mod admin;
mod anonymous;
mod api_keys;
mod auth;
pub mod body;
mod catalog;
pub mod credentials;
mod deposits;
pub mod error;
pub mod forwarded;
pub mod gate;
pub mod limits;
mod me;
mod openapi;
mod orders;
mod pages;
pub mod principal;
mod problem;
mod recovery;
mod route;
mod schema;
pub mod sessions;
mod smsactivate;
pub mod state;
mod two_factor;
mod upstream_hooks;
pub mod usage;
mod wallet;
mod webhook;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use nexus_core::log::EventStore;

pub use me::{Exports, EXPORT_IDLE_READER_TIMEOUT_S};

use error::{ApiError, Problem};
use route::{Auth, Method, Op, Route};
use schema::{array_of, boolean, integer, obj, string, string_enum};
use serde_json::json;
use state::AppState;

/// Largest JSON body accepted, in bytes.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// Password-reset requests worked on after their answer at once; past it a
/// request is dropped (with the same answer).
pub const MAX_RESET_REQUESTS_IN_FLIGHT: usize = 64;
/// Longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 2 * 1024;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/health",
        handler: |route| route.to(health),
        doc: || Op {
            summary: "Liveness",
            tag: "ops",
            auth: Auth::None,
            params: vec![],
            body: None,
            success: (
                200,
                "Up",
                Some(obj(&["status"], json!({ "status": string_enum(&["ok"]) }))),
            ),
            errors: vec![],
        },
    },
    Route {
        method: Method::Get,
        path: "/ready",
        handler: |route| route.to(ready),
        doc: || Op {
            summary: "Readiness: projections within lag bound (details with the admin token)",
            tag: "ops",
            auth: Auth::None,
            params: vec![],
            body: None,
            success: (
                200,
                "Ready (503 with the same body, `status: not_ready`, when not). \
                 `log_head` and `projections` only with `Authorization: Bearer` \
                 and the admin token.",
                Some(obj(
                    &["status"],
                    json!({
                        "status": string_enum(&["ready", "not_ready"]),
                        "log_head": integer(),
                        "projections": array_of(obj(
                            &["name", "position", "lag_events", "lag_seconds", "running"],
                            json!({
                                "name": string(), "position": integer(), "lag_events": integer(),
                                "lag_seconds": { "type": ["number", "null"] },
                                "running": boolean() }))) }),
                )),
            ),
            errors: vec![],
        },
    },
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_JSON_BYTES)
            .error_handler(|e, _| json_error(&e).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::new(Problem::InvalidQuery, query_problem(&e)).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()))
    .default_service(web::to(unrouted));
    route::register(cfg, table());
    openapi::publish(table());
}

/// Every route the server answers, in registration order: each module's own
/// table. The server registers these and the OpenAPI document describes these.
pub(crate) fn table() -> impl Iterator<Item = &'static Route> {
    [
        orders::ROUTES,
        ROUTES,
        pages::ROUTES,
        accounts::ROUTES,
        api_keys::ROUTES,
        wallet::ROUTES,
        deposits::ROUTES,
        catalog::ROUTES,
        anonymous::ROUTES,
        webhook::ROUTES,
        admin::ROUTES,
        me::ROUTES,
        recovery::ROUTES,
        two_factor::ROUTES,
        smsactivate::ROUTES,
        upstream_hooks::ROUTES,
        openapi::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// The problem with a JSON body: 413 over the limit, else 400 `invalid_json`.
fn json_error(e: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match e {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::body_too_large(MAX_JSON_BYTES)
        }
        _ => ApiError::new(Problem::InvalidJson, json_problem(e)),
    }
}

/// What is wrong with a JSON body, without echoing the body.
fn json_problem(e: &actix_web::error::JsonPayloadError) -> String {
    use actix_web::error::JsonPayloadError as E;
    match e {
        E::ContentType => "the body must be application/json".into(),
        E::Deserialize(e) => {
            // Only messages that name fields, never values: a wrong value could be
            // a password.
            let message = e.to_string();
            if message.starts_with("unknown field")
                || message.starts_with("missing field")
                || message.starts_with("field `")
            {
                message
            } else {
                format!(
                    "the body does not match the expected shape (line {}, column {})",
                    e.line(),
                    e.column()
                )
            }
        }
        _ => "the body could not be read".into(),
    }
}

/// What is wrong with a query string, in the API's words (not the framework's),
/// never echoing a value.
fn query_problem(e: &actix_web::error::QueryPayloadError) -> String {
    let message = match e {
        actix_web::error::QueryPayloadError::Deserialize(e) => e.to_string(),
        _ => String::new(),
    };
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return format!("the query string: {message}");
    }
    match body::field_problem("?", &message) {
        Some(problem) => format!(
            "the query string has a parameter of the wrong kind ({})",
            problem.trim_start_matches("field `?`: ")
        ),
        None => "the query string does not match this route's parameters".into(),
    }
}

/// No route took the request: 405 with `Allow` when the path is one the API
/// serves with other methods (RFC 9110 15.5.6), else 404.
async fn unrouted(req: HttpRequest) -> HttpResponse {
    let allowed = openapi::methods_for(req.path());
    if allowed.is_empty() {
        return ApiError::not_found().error_response();
    }
    let allow = allowed.join(", ");
    let mut response = ApiError::new(
        Problem::MethodNotAllowed,
        format!("this path answers {allow}"),
    )
    .error_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// Up: nothing more (the log's head is business volume).
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Projections further behind than this make the server not ready.
const READY_MAX_LAG_EVENTS: u64 = 10_000;

/// Ready: the log is open and every projection runs within the lag bound. The
/// details (projection names, positions, lags) only for the operator.
async fn ready(state: web::Data<AppState>, admin: Option<admin::Admin>) -> HttpResponse {
    let statuses = state.runner.status().await;
    let ready = statuses.iter().all(|s| {
        matches!(s.state, nexus_projections::RunState::Running)
            && s.lag_events <= READY_MAX_LAG_EVENTS
    });
    let status = if ready { "ready" } else { "not_ready" };
    let body = if admin.is_some() {
        let projections: Vec<_> = statuses
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "position": s.position,
                    "lag_events": s.lag_events,
                    "lag_seconds": s.lag_seconds,
                    "running": matches!(s.state, nexus_projections::RunState::Running),
                })
            })
            .collect();
        serde_json::json!({
            "status": status,
            "log_head": state.log.head(),
            "projections": projections,
        })
    } else {
        serde_json::json!({ "status": status })
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
