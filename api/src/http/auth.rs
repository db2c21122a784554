//! Who is calling: an extractor for the customer behind a bearer API key or a
//! session cookie. A disabled account (deletion pending) is refused either way,
//! except by [`Holder`] on the routes that withdraw or export (a session only).

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use chrono::Utc;
use nexus_core::domain::account::AccountStatus;
use nexus_core::domain::ids::AccountId;

use super::credentials::bearer_token;
use super::error::ApiError;
use super::gate::note_caller;
use super::sessions::COOKIE_NAME;
use super::state::AppState;
use super::usage::Caller;

/// The authenticated customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Customer {
    pub account: AccountId,
}

/// Longest Authorization header value considered.
const MAX_AUTHORIZATION_BYTES: usize = 256;

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let bearer = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_AUTHORIZATION_BYTES)
            .and_then(bearer_token)
            .map(str::to_owned);
        let session = req.cookie(COOKIE_NAME).map(|c| c.value().to_owned());
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(&"application state missing"))?;
            if let Some(key) = bearer {
                let login = state
                    .accounts
                    .authenticate_api_key(&key)
                    .await
                    .map_err(|e| match e.refusal() {
                        Some(_) => ApiError::unauthorized(),
                        None => ApiError::from(e),
                    })?;
                note_caller(
                    &req,
                    Caller {
                        account: login.account,
                        key_id: Some(login.key_id),
                    },
                );
                return Ok(Customer {
                    account: login.account,
                });
            }
            let Some(session) = session else {
                return Err(ApiError::unauthorized());
            };
            let account = state
                .sessions
                .account(&session, Utc::now())
                .map_err(|e| ApiError::internal(&e))?
                .ok_or_else(ApiError::unauthorized)?;
            let loaded = state.accounts.load_account(account).await?;
            match loaded.state.status {
                AccountStatus::Active => {
                    note_caller(
                        &req,
                        Caller {
                            account,
                            key_id: None,
                        },
                    );
                    Ok(Customer { account })
                }
                _ => Err(ApiError::unauthorized()),
            }
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

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let has_bearer = req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION);
        if has_bearer {
            let customer = Customer::from_request(req, payload);
            return Box::pin(async move {
                let customer = customer.await?;
                Ok(Holder {
                    account: customer.account,
                    deletion_pending: false,
                })
            });
        }
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let session = req.cookie(COOKIE_NAME).map(|c| c.value().to_owned());
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(&"application state missing"))?;
            let session = session.ok_or_else(ApiError::unauthorized)?;
            let account = state
                .sessions
                .account(&session, Utc::now())
                .map_err(|e| ApiError::internal(&e))?
                .ok_or_else(ApiError::unauthorized)?;
            let loaded = state.accounts.load_account(account).await?;
            if loaded.state.is_erased() {
                return Err(ApiError::unauthorized());
            }
            let deletion_pending = match loaded.state.status {
                AccountStatus::Active => false,
                AccountStatus::DeletionPending { .. } => true,
                AccountStatus::Unregistered => return Err(ApiError::unauthorized()),
            };
            note_caller(
                &req,
                Caller {
                    account,
                    key_id: None,
                },
            );
            Ok(Holder {
                account,
                deletion_pending,
            })
        })
    }
}
