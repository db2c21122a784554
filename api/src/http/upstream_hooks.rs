//! Pushes from upstream providers: `POST /v1/upstreams/{name}/webhook`, where
//! `name` is the upstream's configured name (SMSCode's signed webhooks, HeroSMS'
//! `smsIncoming`).
//!
//! The body is read up to [`MAX_INBOUND_BYTES`]; the adapter verifies it before
//! a field is read (signature in constant time, or source address, and age);
//! a verified push goes to the fulfilment worker's bounded queue and is
//! answered `200` at once (HeroSMS wants an answer within 3 s). A refused push
//! changes nothing and is answered with a problem: 401 unsigned or mis-signed,
//! 403 from an address not allowed, 400 stale or malformed, 404 an unknown
//! upstream or one without pushes, 413 too large, 503 queue full (the upstream
//! retries). Nothing of the body is logged.

use actix_web::{web, HttpRequest, HttpResponse};
use nexus_providers::inbound::{Hint, MAX_INBOUND_BYTES};
use nexus_providers::smscode::WEBHOOK_SIGNATURE_HEADER;
use nexus_providers::upstream::InboundRequest;
use tracing::{debug, info};

use super::body::read_limited;
use super::error::ApiError;
use super::error::Problem;
use super::route::{Auth, Method, Op, Route};
use super::schema::{obj, path_param, string_enum};
use super::state::AppState;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[Route {
    method: Method::Post,
    path: "/v1/upstreams/{name}/webhook",
    handler: |route| route.to(webhook),
    doc: || Op {
        summary: "Signed push from an upstream provider",
        tag: "upstreams",
        auth: Auth::None,
        params: vec![path_param("name", "Configured upstream name.")],
        body: Some(json!({ "type": "object",
                "description": "The upstream's own push format, verified by its signature before it is read." })),
        success: (
            200,
            "Accepted (queued for the worker) or ignored",
            Some(obj(
                &["status"],
                json!({ "status": string_enum(&["accepted", "ignored"]) }),
            )),
        ),
        errors: vec![
            Problem::UnreadableBody,
            Problem::PushStale,
            Problem::PushMalformed,
            Problem::PushUnsigned,
            Problem::PushBadSignature,
            Problem::PushSourceNotAllowed,
            Problem::NotFound,
            Problem::PushNotSupported,
            Problem::PushNotConfigured,
            Problem::PushBusy,
        ],
    },
}];

async fn webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(upstream) = state.router.upstream(&name) else {
        return Err(ApiError::not_found());
    };
    let body = read_limited(payload, MAX_INBOUND_BYTES).await?;
    let signature = req
        .headers()
        .get(WEBHOOK_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let request = InboundRequest {
        signature,
        peer: req.peer_addr().map(|a| a.ip()),
        body: &body,
        now: chrono::Utc::now(),
    };
    let provider = upstream.name().to_owned();
    let verified = upstream.inbound(&request).and_then(|hint| match hint {
        None => Ok(false),
        Some(hint) => state
            .upstream_hints
            .send(Hint {
                provider: provider.clone(),
                handle: hint.handle,
                snapshot: hint.snapshot,
            })
            .map(|()| true),
    });
    match verified {
        Ok(queued) => {
            debug!(upstream = %provider, queued, "upstream push accepted");
            Ok(HttpResponse::Ok().json(serde_json::json!({
                "status": if queued { "accepted" } else { "ignored" }
            })))
        }
        Err(e) => {
            let error = ApiError::from(e);
            info!(upstream = %provider, reason = error.problem.code(), "upstream push refused");
            Err(error)
        }
    }
}
