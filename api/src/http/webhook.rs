//! The customer's webhook endpoint: set (and rotate the signing secret), read,
//! remove. Deliveries are the dispatcher's (`nexus_providers::customer_webhooks`);
//! the wire format is in `docs/WEBHOOKS.md`.

use actix_web::{delete, get, put, web, HttpResponse};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use super::auth::Customer;
use super::body::ObjectBody;
use super::error::ApiError;
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(set_webhook)
        .service(get_webhook)
        .service(remove_webhook);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetWebhook {
    url: String,
}

#[derive(Serialize)]
struct WebhookView {
    url: String,
    set_at: String,
    /// Only in the answer to a PUT: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// Sets the endpoint, or replaces it; every PUT makes a new signing secret, shown
/// in this answer only.
#[put("/v1/me/webhook")]
async fn set_webhook(
    state: web::Data<AppState>,
    customer: Customer,
    body: ObjectBody<SetWebhook>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = state
        .accounts
        .set_webhook(customer.account, &body.url)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(WebhookView {
            url: endpoint.url,
            set_at: endpoint.set_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            secret: Some(endpoint.secret.into_string()),
        }))
}

#[get("/v1/me/webhook")]
async fn get_webhook(
    state: web::Data<AppState>,
    customer: Customer,
) -> Result<HttpResponse, ApiError> {
    let endpoint = state
        .accounts
        .webhook(customer.account)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(WebhookView {
        url: endpoint.url,
        set_at: endpoint.set_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        secret: None,
    }))
}

/// Removes the endpoint; no deliveries from now on (also when there was none).
#[delete("/v1/me/webhook")]
async fn remove_webhook(
    state: web::Data<AppState>,
    customer: Customer,
) -> Result<HttpResponse, ApiError> {
    state.accounts.remove_webhook(customer.account).await?;
    Ok(HttpResponse::NoContent().finish())
}
