//! The middleware every request passes: the query-string limit and rate limits
//! before the handler, the usage log after it.

use std::net::IpAddr;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use chrono::Utc;

use super::credentials::bearer_token;
use super::error::ApiError;
use super::limits::{Budget, RateLimits};
use super::sessions::COOKIE_NAME;
use super::usage::{Caller, UsageLog, UsageRecord};
use super::MAX_QUERY_BYTES;

/// Shared by every worker: the limiters and the usage log.
pub struct Gate {
    pub limits: RateLimits,
    pub usage: Option<UsageLog>,
}

/// The SMS-Activate-compatible route carries its key in the query string.
const COMPAT_ROUTE: &str = "/stubs/handler_api.php";
/// Longest credential looked at for the limiter; longer ones are no valid
/// credential and fall back to the IP budget.
const MAX_CREDENTIAL_BYTES: usize = 256;

pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let started = Instant::now();
    let at = Utc::now();
    let Some(gate) = req.app_data::<web::Data<Gate>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let method = req.method().to_string();
    // The compatible endpoint bounds its parameters itself and answers in its
    // own tokens.
    let too_long = req.path() != COMPAT_ROUTE && req.query_string().len() > MAX_QUERY_BYTES;
    let answer = if too_long {
        Some(ApiError::query_too_long(MAX_QUERY_BYTES).error_response())
    } else {
        gate.limits.check(budget(&req)).err().map(|refusal| {
            if req.path() == COMPAT_ROUTE {
                compat_refusal(&refusal)
            } else {
                refusal.error_response()
            }
        })
    };
    let response = match answer {
        Some(answer) => {
            let (request, _) = req.into_parts();
            ServiceResponse::new(request, answer).map_into_right_body()
        }
        None => next.call(req).await?.map_into_left_body(),
    };
    if let Some(usage) = &gate.usage {
        let caller = response.request().extensions().get::<Caller>().copied();
        usage.record(UsageRecord::new(
            at,
            &method,
            response.request().match_pattern(),
            response.status().as_u16(),
            started.elapsed(),
            caller,
        ));
    }
    Ok(response)
}

/// Which budget pays for this request: its credential if it carries one, the
/// stricter sign-in budget on the routes that run bcrypt or spend tokens, its IP
/// otherwise.
fn budget(req: &ServiceRequest) -> Budget<'_> {
    let ip = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let path = req.path();
    // Withdrawing a deletion takes a password when no session is left; the
    // mail's verification link spends a token like its POST form.
    let signs_in = (req.method() == Method::POST
        && matches!(
            path,
            "/v1/accounts" | "/v1/accounts/verify" | "/v1/sessions"
        ))
        || (req.method() == Method::DELETE && path == "/v1/me/deletion")
        || (req.method() == Method::GET && path == "/verify");
    if signs_in {
        return Budget::Auth(ip);
    }
    if let Some(bearer) = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::as_bytes)
        .filter(|v| v.len() <= MAX_CREDENTIAL_BYTES)
    {
        return Budget::Credential(bearer);
    }
    if let Some(session) = req
        .headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| v.len() <= MAX_CREDENTIAL_BYTES)
    {
        return Budget::Credential(session.as_bytes());
    }
    if path == COMPAT_ROUTE {
        if let Some(key) = req
            .query_string()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "api_key")
            .map(|(_, value)| value)
            .filter(|v| !v.is_empty() && v.len() <= MAX_CREDENTIAL_BYTES)
        {
            return Budget::Credential(key.as_bytes());
        }
    }
    Budget::Ip(ip)
}

/// The compatible endpoint's clients read tokens, not problem documents: 429 with
/// `Retry-After` and the protocol's own too-many-requests token.
fn compat_refusal(refusal: &ApiError) -> actix_web::HttpResponse {
    let mut answer = actix_web::HttpResponse::TooManyRequests();
    if let Some(seconds) = refusal.retry_after_s {
        answer.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
    }
    answer.content_type("text/plain").body("CHANNELS_LIMIT")
}

/// Notes the authenticated caller for the usage log.
pub fn note_caller(req: &actix_web::HttpRequest, caller: Caller) {
    req.extensions_mut().insert(caller);
}
