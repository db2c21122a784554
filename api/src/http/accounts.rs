//! Accounts, sessions and API keys.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use nexus_core::domain::account::{AccountError, SecondFactor};
use nexus_core::service::account_service::AccountServiceError;
use nexus_core::service::runner::ServiceError;
use serde::Deserialize;

use super::auth::{Customer, Holder};
use super::body::ObjectBody;
use super::error::ApiError;
use super::error::Problem;
use super::gate::charge;
use super::limits::{Budget, SignInKey};
use super::recovery::{accepted_schema, Accepted};
use super::route::{Auth, Method, Op, Route};
use super::schema::{boolean, obj, password_schema, required_query_param, schema_ref, string};
use super::sessions::{COOKIE_NAME, SESSION_HOURS};
use super::state::AppState;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/accounts",
        handler: |route| route.to(register),
        doc: || {
            Op {
            summary: "Register (the same answer whether the address is free or taken)",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(schema_ref("Credentials")),
            success: (
                202,
                "Accepted: a free address gets its verification mail, a taken one a notice to its holder",
                Some(accepted_schema()),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidEmail,
                Problem::PasswordTooShort,
                Problem::PasswordTooLong,
                Problem::Contention,
            ],
        }
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/accounts/verify",
        handler: |route| route.to(verify),
        doc: || Op {
            summary: "Verify the e-mail with the mailed token",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(obj(&["token"], json!({ "token": string() }))),
            success: (
                200,
                "Verified",
                Some(obj(
                    &["id", "verified"],
                    json!({ "id": string(), "verified": { "const": true } }),
                )),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::VerificationTokenInvalid,
                Problem::NotFound,
                Problem::AlreadyVerified,
                Problem::VerificationTokenUsed,
                Problem::Contention,
                Problem::VerificationTokenExpired,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/verify",
        handler: |route| route.to(verify_link),
        doc: || Op {
            summary: "The verification mail's link: verifies and answers an HTML page",
            tag: "accounts",
            auth: Auth::None,
            params: vec![required_query_param(
                "token",
                "The token from the mail.",
                string(),
            )],
            body: None,
            success: (200, "Verified: a short HTML page (`text/html`)", None),
            errors: vec![
                Problem::InvalidQuery,
                Problem::VerificationTokenInvalid,
                Problem::NotFound,
                Problem::AlreadyVerified,
                Problem::VerificationTokenUsed,
                Problem::Contention,
                Problem::VerificationTokenExpired,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/sessions",
        handler: |route| route.to(login),
        doc: || Op {
            summary: "Sign in (sets the session cookie); with two-factor on, a code too",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: Some(schema_ref("SignIn")),
            success: (
                201,
                "Signed in; `Set-Cookie` carries the session",
                Some(obj(
                    &["account", "verified"],
                    json!({ "account": string(), "verified": boolean() }),
                )),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidCredentials,
                Problem::TwoFactorRequired,
                Problem::TwoFactorCodeInvalid,
                Problem::AccountDisabled,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/sessions",
        handler: |route| route.to(logout),
        doc: || Op {
            summary: "Sign out (ends the cookie's session, if any)",
            tag: "accounts",
            auth: Auth::None,
            params: vec![],
            body: None,
            success: (204, "Signed out", None),
            errors: vec![],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/sessions/confirm",
        handler: |route| route.to(confirm_session),
        doc: || Op {
            summary:
                "Enter the password again: the session may make sensitive changes for 10 minutes",
            tag: "accounts",
            auth: Auth::Session,
            params: vec![],
            body: Some(obj(&["password"], json!({ "password": string() }))),
            success: (204, "Confirmed", None),
            errors: vec![Problem::InvalidJson, Problem::InvalidCredentials],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/me/password",
        handler: |route| route.to(change_password),
        doc: || Op {
            summary: "Change the password (every other session of the account ends)",
            tag: "accounts",
            auth: Auth::FreshSession,
            params: vec![],
            body: Some(obj(
                &["old_password", "new_password"],
                json!({ "old_password": string(),
                    "new_password": password_schema() }),
            )),
            success: (204, "Changed", None),
            errors: vec![
                Problem::InvalidJson,
                Problem::PasswordTooShort,
                Problem::PasswordTooLong,
                Problem::InvalidCredentials,
                Problem::NotFound,
                Problem::Contention,
            ],
        },
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

/// The answer to every accepted registration, of a free address or a taken
/// one: nothing in it (status, body, headers) tells them apart.
const REGISTRATION_ACCEPTED: Accepted = Accepted {
    detail: "A mail is on its way to this address: confirm it with the link inside, then sign in.",
};

/// Registers, or, for a taken address, tells its holder that someone tried;
/// both answer 202 with [`REGISTRATION_ACCEPTED`], after the same bcrypt
/// hash, so the answer does not tell who has an account. Besides the IP's
/// sign-in budget (the gate), the address's own.
async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ObjectBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    charge_sign_in_to(&req, &body.email)?;
    match state.accounts.register(&body.email, &body.password).await {
        Ok(registration) => state.mail_verification(
            registration.account,
            &body.email,
            registration.verification_token.expose(),
        ),
        Err(ServiceError::Refused(AccountError::EmailTaken)) => {
            if let Some(holder) = state.accounts.holder_of(&body.email).await? {
                state.mail_registration_attempt(&holder);
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(HttpResponse::Accepted().json(REGISTRATION_ACCEPTED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    token: String,
}

async fn verify(
    state: web::Data<AppState>,
    body: ObjectBody<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let account = state.accounts.verify_email(&body.token).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": account.to_string(), "verified": true })))
}

#[derive(Deserialize)]
struct VerifyLink {
    token: String,
}

/// What a browser shows once the link of the verification mail has verified
/// the address. Static: nothing of the request is echoed.
const VERIFIED_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Nexus: address confirmed</title></head><body>\
<h1>Your e-mail address is confirmed</h1><p>You can close this page and sign in.</p>\
</body></html>\n";

/// The link in the verification mail (`<public_url>/verify?token=…`), opened
/// by a person's browser: the same check as `POST /v1/accounts/verify`, a
/// small page when it passes, the problem when it does not. Other query
/// parameters (mail clients add tracking ones) are ignored.
async fn verify_link(
    state: web::Data<AppState>,
    query: web::Query<VerifyLink>,
) -> Result<HttpResponse, ApiError> {
    state.accounts.verify_email(&query.token).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .insert_header((actix_web::http::header::REFERRER_POLICY, "no-referrer"))
        .body(VERIFIED_PAGE))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    email: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

impl SignIn {
    fn second_factor(&self) -> Result<Option<SecondFactor>, ApiError> {
        second_factor_of(&self.totp, &self.recovery_code)
    }
}

/// The second factor of a body with `totp` and `recovery_code` (at most one).
pub(super) fn second_factor_of(
    totp: &Option<String>,
    recovery_code: &Option<String>,
) -> Result<Option<SecondFactor>, ApiError> {
    match (totp, recovery_code) {
        (None, None) => Ok(None),
        (Some(code), None) => Ok(Some(SecondFactor::Totp(code.trim().to_owned()))),
        (None, Some(code)) => Ok(Some(SecondFactor::RecoveryCode(code.clone()))),
        (Some(_), Some(_)) => Err(ApiError::new(
            Problem::InvalidJson,
            "give `totp` or `recovery_code`, not both",
        )),
    }
}

/// Signs in. With two-factor on, the password and a code: a missing code is
/// `two_factor_required` (told only to someone who gave the right password),
/// a wrong one `two_factor_code_invalid`, which spends a second attempt from
/// the IP's and the address's sign-in budgets (see docs/SECURITY.md for the
/// bound this puts on guessing).
async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ObjectBody<SignIn>,
) -> Result<HttpResponse, ApiError> {
    charge_sign_in_to(&req, &body.email)?;
    let second = body.second_factor()?;
    let signed_in = state
        .accounts
        .sign_in(&body.email, &body.password, second.as_ref())
        .await;
    let login = signed_in.inspect_err(|e| charge_wrong_code(&req, &body.email, e))?;
    let id = state
        .sessions
        .create(login.account, state.accounts.now())
        .map_err(|e| ApiError::internal(&e))?;
    let cookie = Cookie::build(COOKIE_NAME, id)
        .http_only(true)
        .secure(state.cookie_secure)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(actix_web::cookie::time::Duration::hours(SESSION_HOURS))
        .finish();
    Ok(HttpResponse::Created().cookie(cookie).json(
        serde_json::json!({ "account": login.account.to_string(), "verified": login.verified }),
    ))
}

async fn logout(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(COOKIE_NAME) {
        state
            .sessions
            .remove(cookie.value())
            .map_err(|e| ApiError::internal(&e))?;
    }
    let mut gone = Cookie::build(COOKIE_NAME, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    password: String,
}

/// Checks the session's password and records it as entered now (the
/// sensitive routes need it within the last 10 minutes).
async fn confirm_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    holder: Holder,
    body: ObjectBody<Confirmation>,
) -> Result<HttpResponse, ApiError> {
    let cookie = req.cookie(COOKIE_NAME).ok_or_else(ApiError::unauthorized)?;
    state
        .accounts
        .confirm_password(holder.account, &body.password)
        .await?;
    let confirmed = state
        .sessions
        .confirm(cookie.value(), state.accounts.now())
        .map_err(|e| ApiError::internal(&e))?;
    if !confirmed {
        return Err(ApiError::unauthorized());
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

/// Changes the password and ends every other session of the account (the
/// caller's own session, if it called with one, stays).
async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    customer: Customer,
    body: ObjectBody<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .change_password(customer.account, &body.old_password, &body.new_password)
        .await?;
    let own = req.cookie(COOKIE_NAME);
    let ended = state
        .sessions
        .end_others(customer.account, own.as_ref().map(|c| c.value()))
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(account = %customer.account, ended, "other sessions ended after a password change");
    Ok(HttpResponse::NoContent().finish())
}

/// After a wrong two-factor code for the account of `email`: a second sign-in
/// attempt from the IP's and the address's budgets. The answer stays the 401
/// whether or not the budgets had room: what is spent slows the next guesses.
pub(super) fn charge_wrong_code(req: &HttpRequest, email: &str, error: &AccountServiceError) {
    if let ServiceError::Refused(AccountError::TwoFactorCodeInvalid) = error {
        let _spent = charge(req, |limits, ip| {
            limits.check(Budget::Auth(ip))?;
            limits.check(Budget::AuthAccount(SignInKey::email(email)))
        });
    }
}

/// An attempt to sign in to the account of `email` (a bcrypt check): besides
/// the client IP's sign-in budget, charged by the gate, the address's own, so
/// that many addresses cannot take turns on one account.
pub(super) fn charge_sign_in_to(req: &HttpRequest, email: &str) -> Result<(), ApiError> {
    charge(req, |limits, _| {
        limits.check(Budget::AuthAccount(SignInKey::email(email)))
    })
}
