//! The admin surface under `/v1/admin/`: projection lags, provider health, the
//! retention schedule, legal holds and policy-change announcements.
//!
//! Off unless `NEXUS_ADMIN_TOKEN` is set: then every admin route answers 404, as
//! if it did not exist. When set, a request needs `Authorization: Bearer
//! <token>`; the presented token is compared with the configured one in
//! constant time (over their SHA-256 digests, so neither length nor content
//! leaks through timing). A wrong or missing token is a 401 problem. The token
//! is never logged nor echoed.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use nexus_core::domain::legal_hold::{CaseReference, HoldReason, HoldSubject, LegalHold};
use nexus_core::domain::policy::{AnnouncementKey, PolicyChangeAnnounced, PolicyChangeRequest};
use nexus_core::log::EventStore;
use nexus_projections::retention::{DueSubject, ScheduledSubject};
use nexus_projections::{RunState, MAX_PAGE_SIZE};
use nexus_providers::router::BreakerState;
use serde::Deserialize;

use super::body::ObjectBody;
use super::error::{ApiError, Problem};
use super::principal::{resolved, Principal, Resolution};
use super::route::{Auth, Method, Op, Route};
use super::schema::{
    array_of, boolean, idempotency_header, integer, items_of, list_of, list_params, nullable, obj,
    path_param, query_param, rfc3339, schema_ref, string, string_enum, string_or_null, time,
};
use super::state::AppState;
use super::wallet::PageLimit;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/admin/projections",
        handler: |route| route.to(projections),
        doc: || Op {
            summary: "Projection status",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![],
            body: None,
            success: (
                200,
                "Projections",
                Some(obj(
                    &["log_head", "items"],
                    json!({ "log_head": integer(), "items": array_of(obj(
                        &["name", "position", "head", "lag_events", "lag_seconds", "state", "failure"],
                        json!({ "name": string(), "position": integer(), "head": integer(),
                            "lag_events": integer(), "lag_seconds": { "type": ["number", "null"] },
                            "state": string_enum(&["running", "stopped", "failed"]),
                            "failure": nullable(obj(&["position", "reason"], json!({
                                "position": integer(), "reason": string() }))) }))) }),
                )),
            ),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/admin/providers",
        handler: |route| route.to(providers),
        doc: || {
            Op {
            summary: "Upstream providers: breaker state and counters since `counted_since` (the server's start; they are kept in memory)",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![],
            body: None,
            success: (
                200,
                "Providers",
                Some(with_counted_since(items_of(obj(
                    &[
                        "name",
                        "breaker",
                        "consecutive_failures",
                        "latency_ms",
                        "successes",
                        "failures",
                        "reconciled_cancelled",
                        "reconciled_absent",
                        "unreconciled",
                    ],
                    json!({ "name": string(),
                        "breaker": string_enum(&["closed", "open", "half_open"]),
                        "consecutive_failures": integer(), "latency_ms": integer(),
                        "successes": integer(), "failures": integer(),
                        "reconciled_cancelled": integer(), "reconciled_absent": integer(),
                        "unreconciled": integer() }),
                )))),
            ),
            errors: vec![Problem::NotFound],
        }
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/admin/retention",
        handler: |route| route.to(retention),
        doc: || Op {
            summary: "Retention schedule: subjects due by `until`",
            tag: "admin",
            auth: Auth::Admin,
            params: {
                let mut p = vec![query_param(
                    "until",
                    "RFC 3339 time; now when absent.",
                    json!({ "type": "string", "format": "date-time" }),
                )];
                p.extend(list_params(DEFAULT_PAGE));
                p
            },
            body: None,
            success: (
                200,
                "Page",
                Some(obj(
                    &["until", "due_now", "due_now_capped", "items", "next_cursor"],
                    json!({ "until": time(), "due_now": integer(), "due_now_capped": boolean(),
                        "items": array_of(obj(&["subject", "kind", "due_at", "held"], json!({
                            "subject": string(), "kind": string_enum(&["account", "anonymous"]),
                            "due_at": time(), "held": boolean() }))),
                        "next_cursor": string_or_null() }),
                )),
            ),
            errors: vec![
                Problem::InvalidQuery,
                Problem::InvalidTime,
                Problem::InvalidCursor,
                Problem::NotFound,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/admin/retention/sweep",
        handler: |route| route.to(retention_sweep),
        doc: || Op {
            summary: "Run the retention sweeps now: erase what is due and not held",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![],
            body: None,
            success: (
                200,
                "What the sweep did",
                Some(obj(
                    &[
                        "examined",
                        "accounts_erased",
                        "anonymous_erased",
                        "held",
                        "skipped",
                        "failed",
                        "more_due",
                    ],
                    json!({ "examined": integer(), "accounts_erased": integer(),
                        "anonymous_erased": integer(), "held": integer(), "skipped": integer(),
                        "failed": integer(), "more_due": boolean() }),
                )),
            ),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/admin/retention/verify",
        handler: |route| route.to(retention_verify),
        doc: || Op {
            summary:
                "Prove the sweeps: recorded erasures have no key left, nothing overdue unless held",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![],
            body: None,
            success: (
                200,
                "The proof",
                Some(obj(
                    &[
                        "ok",
                        "events_checked",
                        "erasures_recorded",
                        "keys_still_present",
                        "overdue",
                    ],
                    json!({ "ok": boolean(), "events_checked": integer(),
                        "erasures_recorded": integer(),
                        "keys_still_present": array_of(string()), "overdue": array_of(string()) }),
                )),
            ),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/admin/legal-holds",
        handler: |route| route.to(place_hold),
        doc: || Op {
            summary: "Place a legal hold",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![],
            body: Some(obj(
                &["subject", "reference"],
                json!({ "subject": string(), "reference": string(),
                    "reason": { "type": "string", "enum": ["litigation", "regulator", "law_enforcement"],
                        "default": "litigation" } }),
            )),
            success: (201, "Held", Some(schema_ref("LegalHold"))),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidSubject,
                Problem::InvalidReason,
                Problem::InvalidReference,
                Problem::NotFound,
                Problem::AlreadyHeld,
                Problem::TooManyHolds,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/admin/legal-holds/{subject}",
        handler: |route| route.to(release_hold),
        doc: || Op {
            summary: "Release a legal hold",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![path_param("subject", "Held subject.")],
            body: None,
            success: (204, "Released", None),
            errors: vec![Problem::NotFound, Problem::Contention],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/admin/legal-holds",
        handler: |route| route.to(list_holds),
        doc: || Op {
            summary: "Legal holds in force",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![],
            body: None,
            success: (200, "Holds", Some(items_of(schema_ref("LegalHold")))),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/admin/policy-changes",
        handler: |route| route.to(announce),
        doc: || Op {
            summary: "Announce a policy change (>= 14 days ahead)",
            tag: "admin",
            auth: Auth::Admin,
            params: vec![idempotency_header()],
            body: Some(obj(
                &["title", "summary", "effective_at"],
                json!({ "title": string(), "summary": string(),
                    "effective_at": time(), "url": { "type": "string", "format": "uri" } }),
            )),
            success: (
                201,
                "Announced (200 when an Idempotency-Key replays it)",
                Some(schema_ref("PolicyChange")),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidTime,
                Problem::InvalidIdempotencyKey,
                Problem::NotFound,
                Problem::TooManyAnnouncements,
                Problem::Contention,
                Problem::InvalidTitle,
                Problem::InvalidSummary,
                Problem::InvalidUrl,
                Problem::NoticeTooShort,
                Problem::NoticeTooLong,
                Problem::IdempotencyKeyReused,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/admin/policy-changes",
        handler: |route| route.to(list_policy_changes),
        doc: || Op {
            summary: "Policy changes",
            tag: "admin",
            auth: Auth::Admin,
            params: list_params(DEFAULT_PAGE),
            body: None,
            success: (200, "Page", Some(list_of("PolicyChange"))),
            errors: vec![
                Problem::InvalidCursor,
                Problem::InvalidQuery,
                Problem::NotFound,
            ],
        },
    },
];

/// Schedule entries counted for `due_now`, at most (the count says when it
/// stopped there).
const MAX_DUE_COUNT: usize = 100_000;
pub(super) const DEFAULT_PAGE: usize = 50;

/// An operator holding the admin token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admin;

fn admin_unauthorized() -> ApiError {
    ApiError::new(Problem::Unauthorized, "a valid admin token is required")
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Some(state) = req.app_data::<web::Data<AppState>>() else {
                return Err(ApiError::internal(&"application state missing"));
            };
            // No token configured: the admin surface does not exist.
            if state.admin_token.is_none() {
                return Err(ApiError::not_found());
            }
            match resolved(&req).await {
                Resolution::Verified(Principal::Admin) => Ok(Admin),
                _ => Err(admin_unauthorized()),
            }
        })
    }
}

fn parse_time(field: &'static str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::new(
                Problem::InvalidTime,
                format!("{field} must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"),
            )
        })
}

// ---------------------------------------------------------------------------
// Projections and providers
// ---------------------------------------------------------------------------

/// Each projection's position, lag (events and seconds) and state.
async fn projections(state: web::Data<AppState>, _: Admin) -> HttpResponse {
    let items: Vec<serde_json::Value> = state
        .runner
        .status()
        .await
        .into_iter()
        .map(|s| {
            let (run_state, failure) = match &s.state {
                RunState::Running => ("running", None),
                RunState::Stopped => ("stopped", None),
                RunState::Failed(f) => (
                    "failed",
                    Some(serde_json::json!({ "position": f.position, "reason": f.reason })),
                ),
            };
            serde_json::json!({
                "name": s.name,
                "position": s.position,
                "head": s.head,
                "lag_events": s.lag_events,
                "lag_seconds": s.lag_seconds,
                "state": run_state,
                "failure": failure,
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "log_head": state.log.head(), "items": items }))
}

/// The router's view of each upstream: breaker, recent failures, latency.
async fn providers(state: web::Data<AppState>, _: Admin) -> HttpResponse {
    let items: Vec<serde_json::Value> = state
        .router
        .health()
        .into_iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name,
                "breaker": match h.breaker {
                    BreakerState::Closed => "closed",
                    BreakerState::Open => "open",
                    BreakerState::HalfOpen => "half_open",
                },
                "consecutive_failures": h.consecutive_failures,
                "latency_ms": h.latency_ms.round() as u64,
                "successes": h.successes,
                "failures": h.failures,
                "reconciled_cancelled": h.reconciled_cancelled,
                "reconciled_absent": h.reconciled_absent,
                "unreconciled": h.unreconciled,
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "items": items,
        "counted_since": rfc3339(state.started_at),
    }))
}

/// `items_of(…)` with `counted_since`: when the counters started (the server's
/// start).
fn with_counted_since(mut list: serde_json::Value) -> serde_json::Value {
    if let Some(properties) = list["properties"].as_object_mut() {
        properties.insert(
            "counted_since".into(),
            json!({ "type": "string", "format": "date-time",
                    "description": "The server's start: the counters are kept in memory." }),
        );
    }
    if let Some(required) = list["required"].as_array_mut() {
        required.push(json!("counted_since"));
    }
    list
}

// ---------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionQuery {
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<PageLimit>,
}

fn due_subject_text(subject: DueSubject) -> String {
    subject.subject().as_str().to_owned()
}

/// A page cursor: `<due_at in µs since the epoch>.<subject>`.
fn retention_cursor(entry: &ScheduledSubject) -> String {
    format!(
        "{}.{}",
        entry.due_at.timestamp_micros(),
        due_subject_text(entry.subject)
    )
}

fn parse_retention_cursor(text: &str) -> Result<ScheduledSubject, ApiError> {
    let invalid = || {
        ApiError::new(
            Problem::InvalidCursor,
            "the cursor is not one this API gave",
        )
    };
    let (micros, subject) = text.split_once('.').ok_or_else(invalid)?;
    let due_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let subject = match HoldSubject::parse(subject).map_err(|_| invalid())? {
        HoldSubject::Account(id) => DueSubject::Account(id),
        HoldSubject::Anonymous(id) => DueSubject::Anonymous(id),
        HoldSubject::Order(_) => return Err(invalid()),
    };
    Ok(ScheduledSubject { subject, due_at })
}

/// Subjects due for erasure by `until` (default: now), earliest first, each
/// with whether a legal hold freezes it; and how many are due now.
async fn retention(
    state: web::Data<AppState>,
    _: Admin,
    query: web::Query<RetentionQuery>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let until = match query.until.as_deref() {
        Some(text) => parse_time("until", text)?,
        None => now,
    };
    let after = query
        .cursor
        .as_deref()
        .map(parse_retention_cursor)
        .transpose()?;
    let limit = PageLimit::or(query.limit, DEFAULT_PAGE);
    let view = state
        .read_models
        .retention()
        .map_err(|e| ApiError::internal(&e))?;
    let page = view
        .due(until, after, limit)
        .map_err(|e| ApiError::internal(&e))?;
    // The sweep's own rule: a hold on an order freezes its owner too.
    let frozen = state
        .retention
        .frozen()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    // Count what is due now, page by page, up to a bound.
    let mut due_now = 0usize;
    let mut counted_after = None;
    loop {
        let batch = view
            .due(now, counted_after, MAX_PAGE_SIZE)
            .map_err(|e| ApiError::internal(&e))?;
        due_now += batch.len();
        counted_after = batch.last().copied();
        if batch.len() < MAX_PAGE_SIZE || due_now >= MAX_DUE_COUNT {
            break;
        }
    }
    let items: Vec<serde_json::Value> = page
        .iter()
        .map(|entry| {
            serde_json::json!({
                "subject": due_subject_text(entry.subject),
                "kind": match entry.subject {
                    DueSubject::Account(_) => "account",
                    DueSubject::Anonymous(_) => "anonymous",
                },
                "due_at": rfc3339(entry.due_at),
                "held": frozen.contains(&entry.subject),
            })
        })
        .collect();
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(retention_cursor))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "until": rfc3339(until),
        "due_now": due_now,
        "due_now_capped": due_now >= MAX_DUE_COUNT,
        "items": items,
        "next_cursor": next_cursor,
    })))
}

/// Runs the retention sweeps now (they also run on a schedule): erases what is
/// due and not held.
async fn retention_sweep(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let report = state
        .retention
        .sweep()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "examined": report.examined,
        "accounts_erased": report.accounts_erased,
        "anonymous_erased": report.anonymous_erased,
        "held": report.held,
        "skipped": report.skipped,
        "failed": report.failed,
        "more_due": report.more_due,
    })))
}

/// The proof of the sweeps: every erasure recorded in the log has its key gone,
/// and nothing is overdue but what a legal hold freezes. Reads the whole log.
async fn retention_verify(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let report = state
        .retention
        .verify()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "ok": report.ok(),
        "events_checked": report.events_checked,
        "erasures_recorded": report.erasures_recorded,
        "keys_still_present": report.keys_still_present,
        "overdue": report.overdue,
    })))
}

// ---------------------------------------------------------------------------
// Legal holds
// ---------------------------------------------------------------------------

fn hold_view(hold: &LegalHold) -> serde_json::Value {
    serde_json::json!({
        "subject": hold.subject.to_string(),
        "reason": hold.reason_code.as_str(),
        "reference": hold.reference.as_str(),
        "placed_at": rfc3339(hold.placed_at),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceHold {
    subject: String,
    reference: String,
    /// `litigation` (default), `regulator` or `law_enforcement`.
    reason: Option<String>,
}

async fn place_hold(
    state: web::Data<AppState>,
    _: Admin,
    body: ObjectBody<PlaceHold>,
) -> Result<HttpResponse, ApiError> {
    let subject = HoldSubject::parse(&body.subject)?;
    let reference = CaseReference::new(&body.reference)?;
    let reason = match body.reason.as_deref() {
        None => HoldReason::Litigation,
        Some(text) => HoldReason::parse(text)?,
    };
    let hold = state.legal_holds.place(subject, reason, reference).await?;
    Ok(HttpResponse::Created().json(hold_view(&hold)))
}

async fn release_hold(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let subject = HoldSubject::parse(&path).map_err(|_| ApiError::not_found())?;
    state.legal_holds.release(subject).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Active holds in subject order (at most [`nexus_core::domain::legal_hold::MAX_ACTIVE_HOLDS`]).
async fn list_holds(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let holds = state.legal_holds.active().await?;
    let items: Vec<serde_json::Value> = holds.iter().map(hold_view).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

// ---------------------------------------------------------------------------
// Policy-change announcements
// ---------------------------------------------------------------------------

fn announcement_view(change: &PolicyChangeAnnounced) -> serde_json::Value {
    serde_json::json!({
        "id": change.id.to_string(),
        "title": change.title,
        "summary": change.summary,
        "effective_at": rfc3339(change.effective_at),
        "url": change.url,
        "announced_at": rfc3339(change.announced_at),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Announce {
    title: String,
    summary: String,
    effective_at: String,
    url: Option<String>,
}

/// Announces a policy change (at least 14 days ahead); every active account is
/// mailed once by the notifier. A repeat with the same `Idempotency-Key`
/// answers the first announcement (200) instead of announcing again.
async fn announce(
    state: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
    body: ObjectBody<Announce>,
) -> Result<HttpResponse, ApiError> {
    let key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(AnnouncementKey::new)
                .ok_or_else(|| {
                    ApiError::new(
                        Problem::InvalidIdempotencyKey,
                        "Idempotency-Key is 1-255 printable ASCII characters",
                    )
                })?,
        ),
    };
    let body = body.into_inner();
    let request = PolicyChangeRequest {
        effective_at: parse_time("effective_at", &body.effective_at)?,
        title: body.title,
        summary: body.summary,
        url: body.url,
    };
    let announced = state.policy.announce(&request, key).await?;
    let view = announcement_view(&announced.change);
    Ok(if announced.replayed {
        HttpResponse::Ok().json(view)
    } else {
        HttpResponse::Created().json(view)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnouncementsQuery {
    cursor: Option<String>,
    limit: Option<PageLimit>,
}

/// Announcements, oldest first; `cursor` is how many to skip (the list only grows).
async fn list_policy_changes(
    state: web::Data<AppState>,
    _: Admin,
    query: web::Query<AnnouncementsQuery>,
) -> Result<HttpResponse, ApiError> {
    let skip = match query.cursor.as_deref() {
        None => 0,
        Some(text) => text.parse::<usize>().map_err(|_| {
            ApiError::new(
                Problem::InvalidCursor,
                "the cursor is not one this API gave",
            )
        })?,
    };
    let limit = PageLimit::or(query.limit, DEFAULT_PAGE);
    let changes = state.policy.changes().await?.state;
    let all = changes.announced();
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(skip)
        .take(limit)
        .map(announcement_view)
        .collect();
    let next = skip.saturating_add(page.len());
    let next_cursor = (next < all.len()).then(|| next.to_string());
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": page, "next_cursor": next_cursor })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_cursors_round_trip() {
        let entry = ScheduledSubject {
            subject: DueSubject::Account(nexus_core::domain::ids::AccountId(
                uuid::Uuid::from_u128(9),
            )),
            due_at: DateTime::from_timestamp(1_764_000_000, 123_000).unwrap(),
        };
        let cursor = retention_cursor(&entry);
        assert_eq!(parse_retention_cursor(&cursor).unwrap(), entry);
        assert!(parse_retention_cursor("garbage").is_err());
        assert!(parse_retention_cursor("12.order-00000000000000000000000000000009").is_err());
    }
}
