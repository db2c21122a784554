//! Who is calling, verified once per request: the gate resolves the request's
//! credential before choosing its rate-limit budget and keeps the outcome in
//! the request's extensions, where the extractors ([`super::auth::Customer`],
//! [`super::auth::Holder`], [`super::admin::Admin`]) read it. Without the gate
//! (a bare test app) the first extractor resolves it the same way.
//!
//! A bearer credential is an API key or the admin token; without one, the
//! session cookie counts. A bearer that does not verify is never replaced by
//! the cookie.

use std::net::IpAddr;

use actix_web::{web, HttpMessage, HttpRequest};
use nexus_core::domain::account::{AccountError, AccountStatus};
use nexus_core::domain::ids::AccountId;
use nexus_core::service::account_service::ApiKeyLogin;

use super::credentials::{bearer_token, MAX_ADMIN_AUTHORIZATION_BYTES};
use super::forwarded::client_ip_of;
use super::sessions::COOKIE_NAME;
use super::state::AppState;

/// Longest API key looked at; a longer bearer can only be the admin token.
pub const MAX_API_KEY_BYTES: usize = 256;

/// A verified caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An API key of an active account.
    ApiKey(ApiKeyLogin),
    /// A session of an account that is active or whose deletion is pending.
    /// `fresh`: its password was entered within the last
    /// [`FRESH_PASSWORD_MINUTES`](super::sessions::FRESH_PASSWORD_MINUTES) (by the service clock).
    Session {
        account: AccountId,
        deletion_pending: bool,
        fresh: bool,
    },
    /// The operator holding the admin token.
    Admin,
}

impl Principal {
    /// The account behind the principal (none for the operator).
    pub fn account(&self) -> Option<AccountId> {
        match self {
            Principal::ApiKey(login) => Some(login.account),
            Principal::Session { account, .. } => Some(*account),
            Principal::Admin => None,
        }
    }

    /// Whether a bearer credential (an API key or the admin token) was shown.
    pub fn by_bearer(&self) -> bool {
        !matches!(self, Principal::Session { .. })
    }
}

/// What the request's credential came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No credential.
    Anonymous,
    /// A credential that verified.
    Verified(Principal),
    /// A credential that did not verify. `bearer`: it was an API key or admin
    /// token, whose guessing is throttled per IP; a session id (256 random
    /// bits) is not worth guessing, and an expired one is common.
    Failed { bearer: bool },
    /// A live API key used from an address outside its allow-list: refused
    /// (403), and counted like a failed bearer credential.
    IpRefused,
    /// A right API key of an account whose deletion is pending: refused (401
    /// `account_deletion_pending`) until the request is withdrawn.
    DeletionPending,
    /// The check itself failed (the store did not answer); logged.
    Unavailable,
}

/// The request's resolution: the one the gate stored, or resolved now and
/// stored for the next extractor.
pub async fn resolved(req: &HttpRequest) -> Resolution {
    if let Some(resolution) = req.extensions().get::<Resolution>().copied() {
        return resolution;
    }
    let resolution = resolve(req).await;
    req.extensions_mut().insert(resolution);
    resolution
}

/// The credential as presented, unchecked.
enum Presented {
    Bearer(String),
    Session(String),
    Nothing,
}

fn presented(req: &HttpRequest) -> Presented {
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= MAX_ADMIN_AUTHORIZATION_BYTES)
        .and_then(bearer_token);
    if let Some(token) = bearer {
        return Presented::Bearer(token.to_owned());
    }
    match req.cookie(COOKIE_NAME) {
        Some(cookie) => Presented::Session(cookie.value().to_owned()),
        None => Presented::Nothing,
    }
}

async fn resolve(req: &HttpRequest) -> Resolution {
    let presented = presented(req);
    if matches!(presented, Presented::Nothing) {
        return Resolution::Anonymous;
    }
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        tracing::error!("credential check: application state missing");
        return Resolution::Unavailable;
    };
    match presented {
        Presented::Bearer(token) => bearer(state, &token, client_ip_of(req)).await,
        Presented::Session(id) => session(state, &id).await,
        Presented::Nothing => Resolution::Anonymous,
    }
}

async fn bearer(state: &AppState, token: &str, client_ip: IpAddr) -> Resolution {
    if token.len() <= MAX_API_KEY_BYTES {
        match state.accounts.authenticate_api_key(token, client_ip).await {
            Ok(login) => return Resolution::Verified(Principal::ApiKey(login)),
            Err(e) if e.refusal() == Some(&AccountError::ApiKeyIpNotAllowed) => {
                return Resolution::IpRefused
            }
            Err(e) if e.refusal() == Some(&AccountError::AccountDisabled) => {
                return Resolution::DeletionPending
            }
            Err(e) if e.refusal().is_some() => {}
            Err(e) => {
                tracing::error!(cause = %e, "checking an API key");
                return Resolution::Unavailable;
            }
        }
    }
    match &state.admin_token {
        Some(admin) if admin.matches(token) => Resolution::Verified(Principal::Admin),
        _ => Resolution::Failed { bearer: true },
    }
}

async fn session(state: &AppState, id: &str) -> Resolution {
    let now = state.accounts.now();
    let live = match state.sessions.lookup(id, now) {
        Ok(Some(live)) => live,
        Ok(None) => return Resolution::Failed { bearer: false },
        Err(e) => {
            tracing::error!(cause = %e, "checking a session");
            return Resolution::Unavailable;
        }
    };
    let account = live.account;
    let loaded = match state.accounts.load_account(account).await {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(cause = %e, "loading a session's account");
            return Resolution::Unavailable;
        }
    };
    if loaded.state.is_erased() {
        return Resolution::Failed { bearer: false };
    }
    let deletion_pending = match loaded.state.status {
        AccountStatus::Active => false,
        AccountStatus::DeletionPending { .. } => true,
        AccountStatus::Unregistered => return Resolution::Failed { bearer: false },
    };
    Resolution::Verified(Principal::Session {
        account,
        deletion_pending,
        fresh: live.fresh_at(now),
    })
}
