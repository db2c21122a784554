//! Who is calling: an extractor for the customer behind a bearer API key or a
//! session cookie. A disabled account (deletion pending) is refused either way.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use chrono::Utc;
use nexus_core::domain::account::AccountStatus;
use nexus_core::domain::ids::AccountId;

use super::error::ApiError;
use super::sessions::COOKIE_NAME;
use super::state::AppState;

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
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let session = req.cookie(COOKIE_NAME).map(|c| c.value().to_owned());
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
                AccountStatus::Active => Ok(Customer { account }),
                _ => Err(ApiError::unauthorized()),
            }
        })
    }
}
