//! The customer's webhook endpoint: set (and rotate the signing secret), read,
//! remove. Deliveries are the dispatcher's (`nexus_providers::customer_webhooks`);
//! the wire format is in `docs/WEBHOOKS.md`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Customer;
use super::body::ObjectBody;
use super::error::ApiError;
use super::error::Problem;
use super::route::{Auth, Method, Op, Route};
use super::schema::{rfc3339, schema_ref};
use super::state::AppState;
use nexus_core::domain::account::ApiKeyScope;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Put,
        path: "/v1/me/webhook",
        handler: |route| route.to(set_webhook),
        doc: || Op {
            summary: "Set the order webhook",
            tag: "webhook",
            auth: Auth::FreshSession,
            params: vec![],
            body: Some(schema_ref("SetWebhook")),
            success: (
                200,
                "Set; the signing secret is shown only here",
                Some(schema_ref("NewWebhook")),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::EmailNotVerified,
                Problem::InvalidWebhookUrl,
                Problem::NotFound,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/me/webhook",
        handler: |route| route.to(get_webhook),
        doc: || Op {
            summary: "The order webhook",
            tag: "webhook",
            auth: Auth::Customer(ApiKeyScope::Full),
            params: vec![],
            body: None,
            success: (200, "Webhook", Some(schema_ref("Webhook"))),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/me/webhook",
        handler: |route| route.to(remove_webhook),
        doc: || Op {
            summary: "Remove the order webhook",
            tag: "webhook",
            auth: Auth::FreshSession,
            params: vec![],
            body: None,
            success: (204, "Removed", None),
            errors: vec![Problem::NotFound, Problem::Contention],
        },
    },
];

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
            set_at: rfc3339(endpoint.set_at),
            secret: Some(endpoint.secret.into_string()),
        }))
}

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
        set_at: rfc3339(endpoint.set_at),
        secret: None,
    }))
}

/// Removes the endpoint; no deliveries from now on (also when there was none).
async fn remove_webhook(
    state: web::Data<AppState>,
    customer: Customer,
) -> Result<HttpResponse, ApiError> {
    state.accounts.remove_webhook(customer.account).await?;
    Ok(HttpResponse::NoContent().finish())
}
