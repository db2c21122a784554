//! The SMS-Activate-compatible endpoint, `GET`/`POST /stubs/handler_api.php`: a
//! view over the same orders and wallet as `/v1`, for bots and client libraries
//! that speak that protocol (answers as in PROTOCOLS.md section 6).
//!
//! - Parameters come from the query string or an `application/x-www-form-urlencoded`
//!   body (the body wins where both name one; the last of a repeated name wins);
//!   unknown parameters are ignored.
//! - `api_key` is one of the customer's API keys, on every action. It is read
//!   from one place: given more than once with different values (query and
//!   body, compared after percent-decoding), it is `BAD_KEY`.
//! - Rate limits are charged here, once the key is checked (the gate cannot
//!   read a form body): a verified key pays from its account's budget, no key
//!   or a wrong one from the client IP's (a wrong one also from the IP's
//!   failed-credential budget); over a limit: 429 `CHANNELS_LIMIT`.
//! - Answers are exact plain tokens (`text/plain`) or JSON (`application/json`),
//!   with the HTTP status of the protocol's rule 2. `getStatusV2` always answers
//!   JSON, refusals included (`{title, details, info?}`).
//! - Activation ids are integers: the log position of the order's first event
//!   (see [`activations`]).
//! - Buying is idempotent per (API key, request, short window), see [`purchase`].

mod activations;
mod answer;

pub use answer::Refusal;
mod catalog;
mod purchase;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use nexus_core::domain::account::{AccountError, ApiKeyScope};
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::order::OrderError;
use nexus_core::domain::wallet::WalletError;
use nexus_core::service::account_service::ApiKeyLogin;
use nexus_core::service::commerce_service::CommandError;

use super::forwarded::client_ip_of;
use super::gate::{charge, compat_refusal, note_caller};
use super::principal::{Principal, Resolution, MAX_API_KEY_BYTES};
use super::route::{Auth, Method, Op, Route};
use super::schema::{query_param, string};
use super::state::AppState;
use super::usage::Caller;
use answer::text;
use serde_json::json;

/// The path every SMS-Activate client calls.
pub const PATH: &str = "/stubs/handler_api.php";
/// Longest query string, and longest form body, accepted, in bytes.
pub const MAX_PARAMS_BYTES: usize = 2 * 1024;
/// Most parameters read from one request (query and body together).
pub const MAX_PARAMS: usize = 64;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/stubs/handler_api.php",
        handler: |route| route.to(handle),
        doc: || Op {
            summary: "SMS-Activate-compatible endpoint (plain-text tokens)",
            tag: "compat",
            auth: Auth::None,
            params: vec![
                query_param(
                    "api_key",
                    "API key.",
                    json!({ "type": "string", "maxLength": 256 }),
                ),
                query_param("action", "SMS-Activate action.", string()),
            ],
            body: None,
            success: (200, "SMS-Activate answer", Some(string())),
            errors: vec![],
        },
    },
    Route {
        method: Method::Post,
        path: "/stubs/handler_api.php",
        handler: |route| route.to(handle),
        doc: || Op {
            summary: "SMS-Activate-compatible endpoint, form-encoded",
            tag: "compat",
            auth: Auth::None,
            params: vec![],
            body: None,
            success: (200, "SMS-Activate answer", Some(string())),
            errors: vec![],
        },
    },
];

/// The request's parameters, in order of arrival.
struct Params(Vec<(String, String)>);

impl Params {
    fn read(req: &HttpRequest, body: &[u8]) -> Result<Params, Refusal> {
        let query = req.query_string();
        if query.len() > MAX_PARAMS_BYTES || body.len() > MAX_PARAMS_BYTES {
            return Err(Refusal::BadAction);
        }
        let mut pairs = parse_pairs(query)?;
        if req.content_type() == "application/x-www-form-urlencoded" && !body.is_empty() {
            let body = std::str::from_utf8(body).map_err(|_| Refusal::BadAction)?;
            pairs.extend(parse_pairs(body)?);
        }
        if pairs.len() > MAX_PARAMS {
            return Err(Refusal::BadAction);
        }
        Ok(Params(pairs))
    }

    /// The value of `name` (the last one given), if any.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The one `api_key`: `BadKey` when it is given more than once with
    /// different values, none when absent or empty.
    fn api_key(&self) -> Result<Option<&str>, Refusal> {
        let mut keys = self
            .0
            .iter()
            .filter(|(k, _)| k == "api_key")
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty());
        let Some(first) = keys.next() else {
            return Ok(None);
        };
        if keys.any(|other| other != first) {
            return Err(Refusal::BadKey);
        }
        Ok(Some(first))
    }

    /// The value of `name`, empty values as absent.
    fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, Refusal> {
    web::Query::<Vec<(String, String)>>::from_query(text)
        .map(web::Query::into_inner)
        .map_err(|_| Refusal::BadAction)
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    // A body over the limit is refused in the protocol's own token, like a long
    // query; nothing past the limit is buffered.
    let Ok(Ok(body)) = payload.to_bytes_limited(MAX_PARAMS_BYTES).await else {
        return limited(&req, Resolution::Anonymous).unwrap_or_else(|| Refusal::BadAction.plain());
    };
    let params = match Params::read(&req, &body) {
        Ok(params) => params,
        Err(refusal) => {
            return limited(&req, Resolution::Anonymous).unwrap_or_else(|| refusal.plain())
        }
    };
    let action = params.get("action").unwrap_or_default().to_owned();
    // getStatusV2 answers JSON whatever happens (herosms validates the shape).
    let render = |refusal: Refusal| {
        if action == "getStatusV2" {
            refusal.json()
        } else {
            refusal.plain()
        }
    };
    let (resolution, login) = authenticate(&state, &req, &params).await;
    if let Some(refused) = limited(&req, resolution) {
        return refused;
    }
    let login = match login {
        Ok(login) => login,
        Err(refusal) => return render(refusal),
    };
    note_caller(
        &req,
        Caller {
            account: login.account,
            key_id: Some(login.key_id),
        },
    );
    match scope_of(&action) {
        None => return render(Refusal::BadAction),
        // The protocol has no token for a key that may not do this; a client
        // reads BAD_KEY as "this key will not do".
        Some(needed) if !login.scope.covers(needed) => return render(Refusal::BadKey),
        Some(_) => {}
    }
    let answer = match action.as_str() {
        "getBalance" => balance(&state, login).await,
        "getNumber" => purchase::get_number(&state, login, &params, purchase::Form::V1).await,
        "getNumberV2" => purchase::get_number(&state, login, &params, purchase::Form::V2).await,
        "getStatus" => activations::status_v1(&state, login, &params).await,
        "getStatusV2" => activations::status_v2(&state, login, &params).await,
        "setStatus" => activations::set_status(&state, login, &params).await,
        "finishActivation" => activations::finish(&state, login, &params).await,
        "cancelActivation" => activations::cancel(&state, login, &params).await,
        "getActiveActivations" => activations::active(&state, login, &params).await,
        "getPrices" => catalog::prices(&state, &params).await,
        "getCountries" => Ok(catalog::countries(&state)),
        "getServicesList" => Ok(catalog::services(&state)),
        "getOperators" => catalog::operators(&state, &params),
        _ => Err(Refusal::BadAction),
    };
    answer.unwrap_or_else(render)
}

/// Each action the endpoint answers and the API key scope it needs (as the
/// `/v1` routes: reading needs `read`, buying and changing an activation
/// `orders`).
pub const ACTIONS: &[(&str, ApiKeyScope)] = &[
    ("getBalance", ApiKeyScope::Read),
    ("getNumber", ApiKeyScope::Orders),
    ("getNumberV2", ApiKeyScope::Orders),
    ("getStatus", ApiKeyScope::Read),
    ("getStatusV2", ApiKeyScope::Read),
    ("setStatus", ApiKeyScope::Orders),
    ("finishActivation", ApiKeyScope::Orders),
    ("cancelActivation", ApiKeyScope::Orders),
    ("getActiveActivations", ApiKeyScope::Read),
    ("getPrices", ApiKeyScope::Read),
    ("getCountries", ApiKeyScope::Read),
    ("getServicesList", ApiKeyScope::Read),
    ("getOperators", ApiKeyScope::Read),
];

/// The scope `action` needs; `None` for an action the endpoint does not answer.
fn scope_of(action: &str) -> Option<ApiKeyScope> {
    ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map(|(_, scope)| *scope)
}

/// The API key's owner, and what the key came to for the rate limits.
async fn authenticate(
    state: &AppState,
    req: &HttpRequest,
    params: &Params,
) -> (Resolution, Result<ApiKeyLogin, Refusal>) {
    let failed = Resolution::Failed { bearer: true };
    let key = match params.api_key() {
        Ok(Some(key)) => key,
        Ok(None) => return (Resolution::Anonymous, Err(Refusal::NoKey)),
        Err(refusal) => return (failed, Err(refusal)),
    };
    if key.len() > MAX_API_KEY_BYTES {
        return (failed, Err(Refusal::BadKey));
    }
    match state
        .accounts
        .authenticate_api_key(key, client_ip_of(req))
        .await
    {
        Ok(login) => (Resolution::Verified(Principal::ApiKey(login)), Ok(login)),
        Err(e) if e.refusal() == Some(&AccountError::AccountDisabled) => {
            (Resolution::DeletionPending, Err(Refusal::DeletionPending))
        }
        // A key used outside its allow-list counts as a failed one too.
        Err(e) if e.refusal().is_some() => (failed, Err(Refusal::BadKey)),
        Err(e) => (Resolution::Unavailable, Err(internal(&e))),
    }
}

/// Charges the request's budget: the protocol's 429 when it is spent, `None`
/// when the request may go on.
fn limited(req: &HttpRequest, resolution: Resolution) -> Option<HttpResponse> {
    charge(req, |limits, ip| limits.check_resolved(ip, resolution))
        .err()
        .map(|refusal| compat_refusal(&refusal))
}

async fn balance(state: &AppState, login: ApiKeyLogin) -> Result<HttpResponse, Refusal> {
    let wallet = state
        .commerce
        .wallet(Owner::Account(login.account))
        .await
        .map_err(refusal_of)?;
    Ok(text(format!("ACCESS_BALANCE:{}", wallet.available)))
}

/// An internal failure: logged with its cause, answered without it.
fn internal(cause: &dyn std::fmt::Display) -> Refusal {
    tracing::error!(cause = %cause, "sms-activate endpoint: internal error");
    Refusal::Unavailable
}

/// A domain refusal as the protocol's token.
fn refusal_of(e: CommandError) -> Refusal {
    match e {
        CommandError::Refused(CommerceError::Order(OrderError::NotFound)) => {
            Refusal::WrongActivationId
        }
        CommandError::Refused(CommerceError::Order(OrderError::CodeErased)) => {
            Refusal::NoActivation
        }
        CommandError::Refused(CommerceError::Order(
            OrderError::WrongStatus(_)
            | OrderError::CodeAlreadyReceived
            | OrderError::NoCodeYet
            | OrderError::PastDeadline
            | OrderError::CancelTooEarly(_),
        )) => Refusal::BadStatus,
        CommandError::Refused(CommerceError::Order(OrderError::InvalidService)) => {
            Refusal::BadService
        }
        CommandError::Refused(CommerceError::Order(OrderError::InvalidCountry)) => {
            Refusal::WrongCountry
        }
        CommandError::Refused(CommerceError::Wallet(WalletError::InsufficientFunds { .. })) => {
            Refusal::NoBalance
        }
        CommandError::Refused(CommerceError::Account(
            AccountError::AccountDisabled
            | AccountError::AccountNotFound
            | AccountError::EmailNotVerified,
        )) => Refusal::BadKey,
        CommandError::Contention { .. } => Refusal::Unavailable,
        other => internal(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_needs_read_and_buying_or_changing_needs_orders() {
        for action in ["getBalance", "getPrices", "getStatus", "getStatusV2"] {
            assert_eq!(scope_of(action), Some(ApiKeyScope::Read), "{action}");
        }
        for action in ["getNumber", "getNumberV2", "setStatus", "cancelActivation"] {
            assert_eq!(scope_of(action), Some(ApiKeyScope::Orders), "{action}");
        }
        assert_eq!(scope_of("getFullSms"), None);
        assert!(ACTIONS.iter().all(|(_, scope)| *scope != ApiKeyScope::Full));
    }
}
