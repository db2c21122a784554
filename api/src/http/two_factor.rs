//! Two-factor authentication of the signed-in account: enrol (a secret, then
//! a first code turns it on and hands out recovery codes) and turn it off.
//! A session only: an API key cannot change how the account is signed in to;
//! enrolment needs the password entered within the last minutes (a stolen
//! session cookie must not lock the owner out), turning off the password and a code.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{web, HttpResponse};
use nexus_core::domain::account::SecondFactor;
use serde::Deserialize;
use serde_json::json;

use super::auth::Customer;
use super::body::ObjectBody;
use super::error::{ApiError, Problem};
use super::route::{Auth, Method, Op, Route};
use super::schema::{array_of, obj, string};
use super::state::AppState;

/// This module's routes (registered and documented from here).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/me/two-factor",
        handler: |route| route.to(start),
        doc: || Op {
            summary: "Start two-factor enrolment: a new TOTP secret, shown once",
            tag: "accounts",
            auth: Auth::FreshSession,
            params: vec![],
            body: None,
            success: (
                201,
                "Started; add the secret to an authenticator app, then confirm with a code",
                Some(obj(
                    &["secret", "otpauth_uri"],
                    json!({
                        "secret": { "type": "string", "description": "base32 (RFC 4648, no padding); shown only once." },
                        "otpauth_uri": { "type": "string", "description": "otpauth://totp/… for a QR code; shown only once." } }),
                )),
            ),
            errors: vec![
                Problem::NotFound,
                Problem::TwoFactorAlreadyEnabled,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/me/two-factor/confirm",
        handler: |route| route.to(confirm),
        doc: || Op {
            summary: "Turn two-factor on with a first code; answers the recovery codes, shown once",
            tag: "accounts",
            auth: Auth::FreshSession,
            params: vec![],
            body: Some(obj(&["code"], json!({ "code": string() }))),
            success: (
                200,
                "On: every sign-in now needs a code",
                Some(obj(
                    &["recovery_codes"],
                    json!({ "recovery_codes": array_of(string()) }),
                )),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::NotFound,
                Problem::TwoFactorNotPending,
                Problem::TwoFactorAlreadyEnabled,
                Problem::TwoFactorCodeInvalid,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/me/two-factor",
        handler: |route| route.to(disable),
        doc: || Op {
            summary: "Turn two-factor off (the password and a TOTP or recovery code)",
            tag: "accounts",
            auth: Auth::Session,
            params: vec![],
            body: Some(obj(
                &["password", "code"],
                json!({ "password": string(), "code": string() }),
            )),
            success: (204, "Off", None),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidCredentials,
                Problem::NotFound,
                Problem::TwoFactorNotEnabled,
                Problem::TwoFactorCodeInvalid,
                Problem::Contention,
            ],
        },
    },
];

async fn start(state: web::Data<AppState>, me: Customer) -> Result<HttpResponse, ApiError> {
    let enrolment = state.accounts.start_two_factor(me.account).await?;
    Ok(HttpResponse::Created()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({
            "secret": enrolment.secret.expose(),
            "otpauth_uri": enrolment.uri.expose(),
        })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    code: String,
}

async fn confirm(
    state: web::Data<AppState>,
    me: Customer,
    body: ObjectBody<Confirm>,
) -> Result<HttpResponse, ApiError> {
    let codes = state
        .accounts
        .confirm_two_factor(me.account, body.code.trim())
        .await?;
    let codes: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "recovery_codes": codes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    password: String,
    code: String,
}

async fn disable(
    state: web::Data<AppState>,
    me: Customer,
    body: ObjectBody<Disable>,
) -> Result<HttpResponse, ApiError> {
    let code = SecondFactor::from_code(&body.code);
    state
        .accounts
        .disable_two_factor(me.account, &body.password, &code)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
