//! The HTTP API: JSON under `/v1`, RFC 9457 errors. Handlers are thin: they parse,
//! call a domain service, and shape the answer.

mod accounts;
pub mod admin;
mod anonymous;
mod auth;
pub mod body;
mod catalog;
pub mod credentials;
mod deposits;
pub mod error;
pub mod gate;
pub mod limits;
mod me;
mod openapi;
mod orders;
mod problem;
pub mod sessions;
mod smsactivate;
pub mod state;
mod upstream_hooks;
pub mod usage;
mod wallet;
mod webhook;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpRequest, HttpResponse, ResponseError};
use nexus_core::log::EventStore;

use error::{ApiError, Problem};
use state::AppState;

/// Largest JSON body accepted, in bytes.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// Longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 2 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_JSON_BYTES)
            .error_handler(|e, _| json_error(&e).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::new(Problem::InvalidQuery, e.to_string()).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()))
    .service(health)
    .service(ready)
    .configure(accounts::routes)
    .configure(orders::routes)
    .configure(wallet::routes)
    .configure(deposits::routes)
    .configure(catalog::routes)
    .configure(anonymous::routes)
    .configure(webhook::routes)
    .configure(admin::routes)
    .configure(me::routes)
    .configure(smsactivate::routes)
    .configure(upstream_hooks::routes)
    .configure(openapi::routes)
    .default_service(web::to(unrouted));
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
            if message.starts_with("unknown field") || message.starts_with("missing field") {
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

#[get("/health")]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok", "log_head": state.log.head() }))
}

/// Projections further behind than this make the server not ready.
const READY_MAX_LAG_EVENTS: u64 = 10_000;

/// Ready: the log is open and every projection runs within the lag bound.
#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let statuses = state.runner.status().await;
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
    let ready = statuses.iter().all(|s| {
        matches!(s.state, nexus_projections::RunState::Running)
            && s.lag_events <= READY_MAX_LAG_EVENTS
    });
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "log_head": state.log.head(),
        "projections": projections,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
