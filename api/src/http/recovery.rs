//! Account recovery: a forgotten password, and the undo of an e-mail change by
//! the old address.
//!
//! - `POST /v1/password-resets` `{"email"}`: always 202 with the same body. The
//!   answer is sent before anything is looked up: the lookup, the token and the
//!   mail run afterwards, in the background (at most
//!   [`super::MAX_RESET_REQUESTS_IN_FLIGHT`] at once), so neither the answer
//!   nor its timing tells whether the address has an account. An enabled
//!   account gets a mail with a single-use token valid 30 minutes; an unknown
//!   address, or an account whose deletion is pending or done, gets nothing.
//! - `POST /v1/password-resets/confirm` `{"token", "new_password"}`: sets the
//!   password and ends every session of the account.
//! - `POST /v1/email-changes/undo` `{"token", "new_password"}`: with the token
//!   mailed to the old address after an e-mail change (valid 7 days, once),
//!   sets that address back and a new password (whoever changed the address
//!   may also know the old password), and ends every session.
//!
//! - `POST /v1/verification-mails` `{"email"}`: a new verification mail for an
//!   account whose address is not verified yet (the first was lost), answered
//!   like a password-reset request (202 at once, the same body, the work
//!   afterwards); at most one per 5 minutes per account, earlier links stop
//!   working.
//!
//! All of them pay from the sign-in budget of the client IP (the gate) and of the
//! address or the account the token names (here).

use actix_web::{web, HttpRequest, HttpResponse};
use nexus_core::domain::account::{parse_verification_token, Email};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

use super::accounts::charge_sign_in_to;
use super::body::ObjectBody;
use super::error::{ApiError, Problem};
use super::gate::charge;
use super::limits::{Budget, SignInKey};
use super::route::{Auth, Method, Op, Route};
use super::schema::{obj, password_schema, string};
use super::state::{AppState, RecoveryKind};

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/verification-mails",
        handler: |route| route.to(resend_verification),
        doc: || {
            Op {
            summary: "Send the verification mail again (the same answer whether the address has an unverified account)",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(email_schema()),
            success: (
                202,
                "Accepted; a mail follows if an unverified account has the address and none was sent in the last 5 minutes",
                Some(accepted_schema()),
            ),
            errors: vec![Problem::InvalidJson, Problem::InvalidEmail],
        }
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/password-resets",
        handler: |route| route.to(request_reset),
        doc: || Op {
            summary:
                "Ask for a password reset (the same answer whether the address has an account)",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(email_schema()),
            success: (
                202,
                "Accepted; a mail follows if an account has the address",
                Some(accepted_schema()),
            ),
            errors: vec![Problem::InvalidJson, Problem::InvalidEmail],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/password-resets/confirm",
        handler: |route| route.to(confirm_reset),
        doc: || Op {
            summary: "Set a new password with the mailed reset token (every session ends)",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(token_and_password_schema()),
            success: (204, "The password is set", None),
            errors: vec![
                Problem::InvalidJson,
                Problem::PasswordTooShort,
                Problem::PasswordTooLong,
                Problem::RecoveryTokenInvalid,
                Problem::RecoveryTokenExpired,
                Problem::RecoveryTokenUsed,
                Problem::AccountDisabled,
                Problem::NotFound,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/email-changes/undo",
        handler: |route| route.to(undo_email_change),
        doc: || {
            Op {
            summary: "Undo an e-mail change with the token mailed to the old address (sets a new password; every session ends)",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(token_and_password_schema()),
            success: (204, "The old address and the new password are set", None),
            errors: vec![
                Problem::InvalidJson,
                Problem::PasswordTooShort,
                Problem::PasswordTooLong,
                Problem::RecoveryTokenInvalid,
                Problem::RecoveryTokenExpired,
                Problem::RecoveryTokenUsed,
                Problem::EmailUndoAddressTaken,
                Problem::NotFound,
                Problem::Contention,
            ],
        }
        },
    },
];

/// The one answer to a request that must not tell whether an address has an
/// account (a password-reset request, a registration): a fixed text.
#[derive(Serialize)]
pub(super) struct Accepted {
    pub(super) detail: &'static str,
}

pub(super) const RESET_ACCEPTED: Accepted = Accepted {
    detail:
        "If an account has this address, a mail with a link to reset its password is on its way.",
};

pub(super) const VERIFICATION_ACCEPTED: Accepted = Accepted {
    detail: "If an account whose address is not verified yet has this address, a new \
             verification mail is on its way (at most one every 5 minutes; earlier links \
             stop working).",
};

fn email_schema() -> serde_json::Value {
    obj(
        &["email"],
        json!({ "email": { "type": "string", "format": "email", "maxLength": 254 } }),
    )
}

pub(super) fn accepted_schema() -> serde_json::Value {
    obj(&["detail"], json!({ "detail": string() }))
}

fn token_and_password_schema() -> serde_json::Value {
    obj(
        &["token", "new_password"],
        json!({ "token": string(), "new_password": password_schema() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

/// Answers 202 at once; the work runs after the answer (see the module's doc).
async fn request_reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ObjectBody<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    accept_then(
        &state,
        &req,
        &body.email,
        RESET_ACCEPTED,
        "password reset",
        |state, email| async move {
            match state.accounts.request_password_reset(email.as_str()).await {
                Ok(Some(mail)) => state.mail_recovery(RecoveryKind::PasswordReset, &mail),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "password reset not issued"),
            }
        },
    )
}

/// Like [`request_reset`]: 202 at once, the lookup and the mail afterwards.
async fn resend_verification(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ObjectBody<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    accept_then(
        &state,
        &req,
        &body.email,
        VERIFICATION_ACCEPTED,
        "verification mail",
        |state, email| async move {
            match state.accounts.resend_verification(email.as_str()).await {
                Ok(Some((holder, token))) => {
                    state.mail_verification(holder.account, &holder.email, token.expose())
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "verification mail not sent again"),
            }
        },
    )
}

/// What a request that names only an address does: the address checked and
/// charged to the sign-in budget, then `accepted` answered at once, before
/// anything is looked up, and `work` run afterwards in the background. At most
/// [`super::MAX_RESET_REQUESTS_IN_FLIGHT`] such requests work at once; past
/// that a request is dropped (logged as `what`), with the same answer.
fn accept_then<Work, Done>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    email: &str,
    accepted: Accepted,
    what: &'static str,
    work: Work,
) -> Result<HttpResponse, ApiError>
where
    Work: FnOnce(web::Data<AppState>, Email) -> Done,
    Done: std::future::Future<Output = ()> + 'static,
{
    let email = Email::parse(email)?;
    charge_sign_in_to(req, email.as_str())?;
    match state.reset_requests.clone().try_acquire_owned() {
        Ok(permit) => {
            let done = work(state.clone(), email);
            actix_web::rt::spawn(async move {
                let _permit = permit;
                done.await;
            });
        }
        Err(_) => warn!(what, "request dropped: too many in flight"),
    }
    Ok(HttpResponse::Accepted().json(accepted))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenAndPassword {
    token: String,
    new_password: String,
}

/// Charges the sign-in budget of the account a token names (a malformed token
/// names none; it is refused without any work).
fn charge_token_account(req: &HttpRequest, token: &str) -> Result<(), ApiError> {
    match parse_verification_token(token) {
        Some((account, _)) => charge(req, |limits, _| {
            limits.check(Budget::AuthAccount(SignInKey::account(account)))
        }),
        None => Ok(()),
    }
}

/// Ends every session of the account after its password was set by a token.
fn end_sessions(
    state: &AppState,
    account: nexus_core::domain::ids::AccountId,
) -> Result<(), ApiError> {
    let ended = state
        .sessions
        .end_others(account, None)
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(account = %account, ended, "every session ended after an account recovery");
    Ok(())
}

async fn confirm_reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ObjectBody<TokenAndPassword>,
) -> Result<HttpResponse, ApiError> {
    charge_token_account(&req, &body.token)?;
    let account = state
        .accounts
        .reset_password(&body.token, &body.new_password)
        .await?;
    end_sessions(&state, account)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn undo_email_change(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ObjectBody<TokenAndPassword>,
) -> Result<HttpResponse, ApiError> {
    charge_token_account(&req, &body.token)?;
    let account = state
        .accounts
        .undo_email_change(&body.token, &body.new_password)
        .await?;
    end_sessions(&state, account)?;
    Ok(HttpResponse::NoContent().finish())
}
