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
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/upstreams/{name}/webhook")
            .route(web::post().to(webhook))
            .default_service(web::to(super::unrouted)),
    );
}

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
