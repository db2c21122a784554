//! The middleware every request passes: the client's address, the
//! query-string limit, the credential's verification and the rate limits
//! before the handler, the usage log after it.

use std::net::IpAddr;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use chrono::Utc;

use super::error::ApiError;
use super::forwarded::{client_ip_of, ClientIp, TrustedProxies};
use super::limits::{Budget, RateLimits, SignInKey};
use super::principal::{resolved, Resolution};
use super::usage::{Caller, UsageLog, UsageRecord};
use super::MAX_QUERY_BYTES;

/// Shared by every worker: the limiters, the proxies whose `X-Forwarded-For`
/// is believed, and the usage log.
pub struct Gate {
    pub limits: RateLimits,
    pub trusted_proxies: TrustedProxies,
    pub usage: Option<UsageLog>,
}

/// The SMS-Activate-compatible route carries its key in the query string or
/// the body: its handler charges the budget once it has read the key.
const COMPAT_ROUTE: &str = "/stubs/handler_api.php";

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
    let ip = client_ip(&gate.trusted_proxies, &req);
    req.extensions_mut().insert(ClientIp(ip));
    // The compatible endpoint bounds its parameters itself and answers in its
    // own tokens.
    let answer = if req.path() == COMPAT_ROUTE {
        None
    } else if req.query_string().len() > MAX_QUERY_BYTES {
        Some(ApiError::query_too_long(MAX_QUERY_BYTES).error_response())
    } else {
        admit(&gate.limits, &req, ip)
            .await
            .err()
            .map(|refusal| refusal.error_response())
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

fn client_ip(trusted: &TrustedProxies, req: &ServiceRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok());
    trusted.client(peer, forwarded)
}

/// How a route is charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charge {
    /// Runs bcrypt or spends a token before anyone is known: the sign-in
    /// budget of the IP (and, in the handler, of the address signed in to).
    SignIn,
    /// Runs bcrypt for a signed-in account (a password change, a session's
    /// confirmation), or changes its address (as costly to abuse as a
    /// registration): the sign-in budget of the IP and of the account, besides
    /// the principal's own.
    SignedInBcrypt,
    /// Everything else: the principal's budget, or the IP's.
    Regular,
}

fn charge_of(req: &ServiceRequest) -> Charge {
    let path = req.path();
    let method = req.method();
    // Withdrawing a deletion takes a password when no session is left; the
    // mail's verification link spends a token like its POST form; the
    // recovery routes mail or spend a token.
    let signs_in = (method == Method::POST
        && matches!(
            path,
            "/v1/accounts"
                | "/v1/accounts/verify"
                | "/v1/sessions"
                | "/v1/password-resets"
                | "/v1/password-resets/confirm"
                | "/v1/email-changes/undo"
        ))
        || (method == Method::DELETE && path == "/v1/me/deletion")
        || (method == Method::GET && path == "/verify");
    if signs_in {
        Charge::SignIn
    } else if (method == Method::POST && matches!(path, "/v1/me/password" | "/v1/sessions/confirm"))
        || (method == Method::PATCH && path == "/v1/me")
        || (method == Method::DELETE && path == "/v1/me/two-factor")
    {
        Charge::SignedInBcrypt
    } else {
        Charge::Regular
    }
}

/// Charges the request's budgets, verifying its credential first where the
/// budget depends on it; `Err` is the 429 to answer.
async fn admit(limits: &RateLimits, req: &ServiceRequest, ip: IpAddr) -> Result<(), ApiError> {
    match charge_of(req) {
        Charge::SignIn => limits.check(Budget::Auth(ip)),
        Charge::SignedInBcrypt => {
            limits.check(Budget::Auth(ip))?;
            let resolution = resolved(req.request()).await;
            limits.check_resolved(ip, resolution)?;
            match resolution {
                Resolution::Verified(principal) => match principal.account() {
                    Some(account) => limits.check(Budget::AuthAccount(SignInKey::account(account))),
                    None => Ok(()),
                },
                _ => Ok(()),
            }
        }
        Charge::Regular => limits.check_resolved(ip, resolved(req.request()).await),
    }
}

/// For a handler that learns the credential or the account itself (the
/// compatible endpoint's key, the address of a log-in): charges `budget` with
/// the client's address. Without the gate (a bare test app) nothing is charged.
pub fn charge(
    req: &HttpRequest,
    budget: impl FnOnce(&RateLimits, IpAddr) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let Some(gate) = req.app_data::<web::Data<Gate>>() else {
        return Ok(());
    };
    budget(&gate.limits, client_ip_of(req))
}

/// The compatible endpoint's clients read tokens, not problem documents: 429 with
/// `Retry-After` and the protocol's own too-many-requests token.
pub fn compat_refusal(refusal: &ApiError) -> actix_web::HttpResponse {
    let mut answer = actix_web::HttpResponse::TooManyRequests();
    if let Some(seconds) = refusal.retry_after_s {
        answer.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
    }
    answer.content_type("text/plain").body("CHANNELS_LIMIT")
}

/// Notes the authenticated caller for the usage log.
pub fn note_caller(req: &HttpRequest, caller: Caller) {
    req.extensions_mut().insert(caller);
}
