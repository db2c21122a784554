//! Accounts, sessions and API keys.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::Utc;
use nexus_core::domain::ids::ApiKeyId;
use serde::{Deserialize, Serialize};

use super::auth::Customer;
use super::body::ObjectBody;
use super::error::ApiError;
use super::sessions::{COOKIE_NAME, SESSION_HOURS};
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(register)
        .service(verify)
        .service(verify_link)
        .service(login)
        .service(logout)
        .service(change_password)
        .service(create_api_key)
        .service(list_api_keys)
        .service(revoke_api_key);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct Created {
    id: String,
}

#[post("/v1/accounts")]
async fn register(
    state: web::Data<AppState>,
    body: ObjectBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let registration = state.accounts.register(&body.email, &body.password).await?;
    state.mail_verification(
        registration.account,
        &body.email,
        registration.verification_token.expose(),
    );
    Ok(HttpResponse::Created().json(Created {
        id: registration.account.to_string(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    token: String,
}

#[post("/v1/accounts/verify")]
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
#[get("/verify")]
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

#[post("/v1/sessions")]
async fn login(
    state: web::Data<AppState>,
    body: ObjectBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let login = state
        .accounts
        .authenticate(&body.email, &body.password)
        .await?;
    let id = state
        .sessions
        .create(login.account, Utc::now())
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

#[delete("/v1/sessions")]
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
struct PasswordChange {
    old_password: String,
    new_password: String,
}

#[post("/v1/me/password")]
async fn change_password(
    state: web::Data<AppState>,
    customer: Customer,
    body: ObjectBody<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .change_password(customer.account, &body.old_password, &body.new_password)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize)]
struct ApiKeyView {
    id: String,
    prefix: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[post("/v1/api-keys")]
async fn create_api_key(
    state: web::Data<AppState>,
    customer: Customer,
) -> Result<HttpResponse, ApiError> {
    let key = state.accounts.create_api_key(customer.account).await?;
    Ok(HttpResponse::Created().json(ApiKeyView {
        id: key.id.to_string(),
        prefix: key.prefix,
        created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        revoked_at: None,
        key: Some(key.key.expose().to_owned()),
    }))
}

#[get("/v1/api-keys")]
async fn list_api_keys(
    state: web::Data<AppState>,
    customer: Customer,
) -> Result<HttpResponse, ApiError> {
    let keys = state.accounts.list_api_keys(customer.account).await?;
    let items: Vec<ApiKeyView> = keys
        .into_iter()
        .rev()
        .map(|k| ApiKeyView {
            id: k.id.to_string(),
            prefix: k.prefix,
            created_at: k
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked_at: k
                .revoked_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            key: None,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[delete("/v1/api-keys/{id}")]
async fn revoke_api_key(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = ApiKeyId::parse(&path).ok_or_else(ApiError::not_found)?;
    state.accounts.revoke_api_key(customer.account, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
