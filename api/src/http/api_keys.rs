//! API keys: create (with a scope, a label and an address allow-list), list,
//! revoke. Creating and revoking need a fresh session (a stolen key cannot
//! make keys of its own, nor revoke its owner's).

use actix_web::{web, HttpRequest, HttpResponse};
use nexus_core::domain::account::{ApiKeyScope, ApiKeySettings, IpRange};
use nexus_core::domain::ids::ApiKeyId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Customer;
use super::body::{optional_object, read_limited};
use super::error::{ApiError, Problem};
use super::route::{Auth, Method, Op, Route};
use super::schema::{array_of, obj, path_param, rfc3339, schema_ref};
use super::state::AppState;
use super::MAX_JSON_BYTES;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/api-keys",
        handler: |route| route.to(create_api_key),
        doc: || Op {
            summary: "Create an API key (body optional: scope `orders`, no label, any address)",
            tag: "accounts",
            auth: Auth::FreshSession,
            params: vec![],
            body: Some(schema_ref("NewApiKeyRequest")),
            success: (201, "Created", Some(schema_ref("NewApiKey"))),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidLabel,
                Problem::InvalidAllowedIps,
                Problem::NotFound,
                Problem::TooManyApiKeys,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/api-keys",
        handler: |route| route.to(list_api_keys),
        doc: || Op {
            summary: "List API keys, newest first (all of them: their number is capped)",
            tag: "accounts",
            auth: Auth::Customer(ApiKeyScope::Full),
            params: vec![],
            body: None,
            success: (
                200,
                "Every key, revoked ones included",
                Some(obj(
                    &["items", "next_cursor"],
                    json!({ "items": array_of(schema_ref("ApiKey")), "next_cursor": { "type": "null" } }),
                )),
            ),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/api-keys/{id}",
        handler: |route| route.to(revoke_api_key),
        doc: || Op {
            summary: "Revoke an API key",
            tag: "accounts",
            auth: Auth::FreshSession,
            params: vec![path_param("id", "API key id.")],
            body: None,
            success: (204, "Revoked", None),
            errors: vec![Problem::NotFound, Problem::Contention],
        },
    },
];

/// What `POST /v1/api-keys` may carry; every field optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKeyRequest {
    #[serde(default)]
    scope: Option<WireScope>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum WireScope {
    Read,
    Orders,
    Full,
}

impl From<WireScope> for ApiKeyScope {
    fn from(scope: WireScope) -> ApiKeyScope {
        match scope {
            WireScope::Read => ApiKeyScope::Read,
            WireScope::Orders => ApiKeyScope::Orders,
            WireScope::Full => ApiKeyScope::Full,
        }
    }
}

#[derive(Serialize)]
struct ApiKeyView {
    id: String,
    prefix: String,
    scope: &'static str,
    label: Option<String>,
    allowed_ips: Vec<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

fn ranges(list: &[IpRange]) -> Vec<String> {
    list.iter().map(IpRange::to_string).collect()
}

/// The request's settings: an empty body is the defaults (clients from
/// before settings existed send none).
fn settings_of(req: &HttpRequest, body: &[u8]) -> Result<ApiKeySettings, ApiError> {
    let request: NewKeyRequest = optional_object(req, body)?.unwrap_or_default();
    let scope = request.scope.map_or(ApiKeyScope::Orders, ApiKeyScope::from);
    Ok(ApiKeySettings::new(
        scope,
        request.label.as_deref(),
        &request.allowed_ips,
    )?)
}

async fn create_api_key(
    state: web::Data<AppState>,
    customer: Customer,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, MAX_JSON_BYTES).await?;
    let settings = settings_of(&req, &body)?;
    let key = state
        .accounts
        .create_api_key(customer.account, &settings)
        .await?;
    Ok(HttpResponse::Created().json(ApiKeyView {
        id: key.id.to_string(),
        prefix: key.prefix,
        scope: settings.scope.name(),
        label: settings.label,
        allowed_ips: ranges(&settings.allowed_ips),
        created_at: rfc3339(state.accounts.now()),
        revoked_at: None,
        key: Some(key.key.expose().to_owned()),
    }))
}

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
            scope: k.scope.name(),
            label: k.label,
            allowed_ips: ranges(&k.allowed_ips),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
            key: None,
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}

async fn revoke_api_key(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = ApiKeyId::parse(&path).ok_or_else(ApiError::not_found)?;
    state.accounts.revoke_api_key(customer.account, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
