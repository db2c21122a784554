//! Who is calling: an extractor for the customer behind a bearer API key or a
//! session cookie. A disabled account (deletion pending) is refused either way,
//! except by [`Holder`] on the routes that withdraw or export (a session only).

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest};
use nexus_core::domain::ids::AccountId;

use super::error::{ApiError, Problem};
use super::gate::note_caller;
use super::principal::{resolved, Principal, Resolution};
use super::usage::Caller;

/// The authenticated customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Customer {
    pub account: AccountId,
}

/// The principal of a request, or the refusal of an extractor that needs one.
fn verified(resolution: Resolution) -> Result<Principal, ApiError> {
    match resolution {
        Resolution::Verified(principal) => Ok(principal),
        Resolution::Anonymous | Resolution::Failed { .. } => Err(ApiError::unauthorized()),
        Resolution::Unavailable => Err(ApiError::internal(&"the credential could not be checked")),
    }
}

/// Notes the caller for the usage log.
fn note(req: &HttpRequest, principal: Principal) {
    let (account, key_id) = match principal {
        Principal::ApiKey(login) => (login.account, Some(login.key_id)),
        Principal::Session { account, .. } => (account, None),
        Principal::Admin => return,
    };
    note_caller(req, Caller { account, key_id });
}

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = verified(resolved(&req).await)?;
            match principal {
                Principal::ApiKey(_)
                | Principal::Session {
                    deletion_pending: false,
                    ..
                } => {}
                Principal::Session { .. } | Principal::Admin => {
                    return Err(ApiError::unauthorized())
                }
            }
            note(&req, principal);
            let account = principal.account().ok_or_else(ApiError::unauthorized)?;
            Ok(Customer { account })
        })
    }
}

/// The account holder, also while a deletion is pending: for the few routes a
/// disabled account still reaches (see its status, export its data, withdraw the
/// deletion). A session cookie admits an active account or one whose deletion is
/// pending; an API key admits an active account only (keys stop working with the
/// deletion request). Every other route takes [`Customer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub account: AccountId,
    /// Whether the account's deletion is pending (the account is disabled).
    pub deletion_pending: bool,
}

impl FromRequest for Holder {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = verified(resolved(&req).await)?;
            let (account, deletion_pending) = match principal {
                Principal::ApiKey(login) => (login.account, false),
                Principal::Session {
                    account,
                    deletion_pending,
                } => (account, deletion_pending),
                Principal::Admin => return Err(ApiError::unauthorized()),
            };
            note(&req, principal);
            Ok(Holder {
                account,
                deletion_pending,
            })
        })
    }
}

/// An active account signed in by its session cookie; an API key is refused
/// (401): for the routes that change how the account itself is signed in to
/// (two-factor authentication), which a leaked key must not reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedIn {
    pub account: AccountId,
}

impl FromRequest for SignedIn {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = verified(resolved(&req).await)?;
            let Principal::Session {
                account,
                deletion_pending: false,
            } = principal
            else {
                return Err(ApiError::new(
                    Problem::Unauthorized,
                    "this route takes a session (sign in); an API key is not accepted",
                ));
            };
            note(&req, principal);
            Ok(SignedIn { account })
        })
    }
}
