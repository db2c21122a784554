//! Orders: place (with an Idempotency-Key), read, the code (long-poll; the first
//! read is the delivery), resend, cancel, complete.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use nexus_core::domain::codec::Personal;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::idempotency::IdempotencyKey;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    CancelReason, Channel, CountryCode, DeliveryChannel, Order, OrderError, OrderStatus,
    ServiceCode,
};
use nexus_core::log::EventStore;
use nexus_core::service::commerce_service::CommandError;
use serde::{Deserialize, Serialize};

use super::auth::Customer;
use super::body::ObjectBody;
use super::error::{ApiError, Problem};
use super::route::{Auth, Method, Op, Route};
use super::schema::{
    idempotency_header, list_of, list_params, path_param, query_param, rfc3339, schema_ref,
};
use super::state::AppState;
use nexus_core::domain::account::ApiKeyScope;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/orders",
        handler: |route| route.to(place),
        doc: || Op {
            summary: "Buy a number",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Orders),
            params: vec![idempotency_header()],
            body: Some(schema_ref("PlaceOrder")),
            success: (
                201,
                "Placed (waits up to 3 s for a number)",
                Some(schema_ref("Order")),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::EmailNotVerified,
                Problem::UnknownService,
                Problem::UnknownCountry,
                Problem::InvalidChannel,
                Problem::InvalidAmount,
                Problem::InvalidIdempotencyKey,
                Problem::InsufficientFunds,
                Problem::NotFound,
                Problem::NoNumbers,
                Problem::PriceAboveMax,
                Problem::OrderExists,
                Problem::WalletConflict,
                Problem::Contention,
                Problem::IdempotencyKeyReused,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/orders",
        handler: |route| route.to(list),
        doc: || Op {
            summary: "List orders",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Read),
            params: list_params(super::wallet::DEFAULT_PAGE),
            body: None,
            success: (200, "Page", Some(list_of("Order"))),
            errors: vec![Problem::InvalidCursor, Problem::InvalidQuery],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/orders/{id}",
        handler: |route| route.to(get_order),
        doc: || Op {
            summary: "An order",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Read),
            params: order_id_param(),
            body: None,
            success: (200, "The order", Some(schema_ref("Order"))),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/orders/{id}/code",
        handler: |route| route.to(code),
        doc: || Op {
            summary: "Read the code (the first read is the delivery)",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Read),
            params: {
                let mut p = order_id_param();
                p.push(query_param(
                    "wait",
                    "Seconds to wait for a code (at most 60).",
                    json!({ "type": "integer", "minimum": 0, "maximum": 60 }),
                ));
                p
            },
            body: None,
            success: (
                200,
                "The code, or `code: null` with the status",
                Some(schema_ref("Code")),
            ),
            errors: vec![
                Problem::InvalidQuery,
                Problem::NotFound,
                Problem::OrderExpired,
                Problem::Contention,
                Problem::CodeErased,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/orders/{id}/resend",
        handler: |route| route.to(resend),
        doc: || Op {
            summary: "Ask for another code",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Orders),
            params: order_id_param(),
            body: None,
            success: (200, "The order", Some(schema_ref("Order"))),
            errors: vec![
                Problem::NotFound,
                Problem::OrderWrongStatus,
                Problem::OrderExpired,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/orders/{id}/cancel",
        handler: |route| route.to(cancel),
        doc: || Op {
            summary: "Cancel (full refund)",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Orders),
            params: order_id_param(),
            body: None,
            success: (200, "Cancelled", Some(schema_ref("Order"))),
            errors: vec![
                Problem::NotFound,
                Problem::OrderNotCancellable,
                Problem::CancelTooEarly,
                Problem::OrderWrongStatus,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/orders/{id}/complete",
        handler: |route| route.to(complete),
        doc: || Op {
            summary: "Complete",
            tag: "orders",
            auth: Auth::Customer(ApiKeyScope::Orders),
            params: order_id_param(),
            body: None,
            success: (200, "Completed", Some(schema_ref("Order"))),
            errors: vec![
                Problem::NotFound,
                Problem::OrderWrongStatus,
                Problem::NoCodeYet,
                Problem::Contention,
            ],
        },
    },
];

fn order_id_param() -> Vec<serde_json::Value> {
    vec![path_param("id", "Order id.")]
}

/// Longest wait for a number when placing (the provisioning promise).
const PLACE_WAIT: Duration = Duration::from_millis(3_000);
/// Longest long-poll for a code, in seconds.
const MAX_CODE_WAIT_SECS: u64 = 60;
const POLL_EVERY: Duration = Duration::from_millis(50);

#[derive(Serialize)]
pub struct OrderView {
    id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'static str>,
    phone: Option<String>,
    price: String,
    created_at: String,
    expires_at: String,
    cancel_available_at: Option<String>,
}

pub fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => "placed",
        OrderStatus::NumberAssigned => "number_assigned",
        OrderStatus::CodeReceived => "code_received",
        OrderStatus::CodeDelivered => "code_delivered",
        OrderStatus::Completed => "completed",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
    }
}

pub fn order_view(state: &AppState, id: OrderId, order: &Order) -> Option<OrderView> {
    let placed = order.placed.as_ref()?;
    let details = placed.details.plain();
    Some(OrderView {
        id: id.to_string(),
        status: status_name(order.status?),
        service: details.map(|d| d.service.as_str().to_owned()),
        country: details.map(|d| d.country.as_str().to_owned()),
        channel: details.map(|d| match d.channel {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }),
        phone: order.assigned.as_ref().and_then(|a| match &a.phone {
            Personal::Plain(p) => Some(p.phone.clone()),
            _ => None,
        }),
        price: placed.price.to_string(),
        created_at: rfc3339(placed.placed_at),
        expires_at: rfc3339(placed.expires_at),
        cancel_available_at: order
            .cancel_available_at(state.commerce.policy())
            .map(rfc3339),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceRequest {
    service: String,
    country: String,
    channel: Option<String>,
    max_price: Option<String>,
}

async fn place(
    state: web::Data<AppState>,
    customer: Customer,
    req: HttpRequest,
    body: ObjectBody<PlaceRequest>,
) -> Result<HttpResponse, ApiError> {
    let owner = Owner::Account(customer.account);
    let service = ServiceCode::new(&body.service).map_err(ApiError::from)?;
    let country = CountryCode::new(&body.country).map_err(ApiError::from)?;
    if !state.catalog.is_known_service(service.as_str()) {
        return Err(OrderError::InvalidService.into());
    }
    if !state.catalog.is_known_country(country) {
        return Err(OrderError::InvalidCountry.into());
    }
    let channel = match body.channel.as_deref() {
        None | Some("sms") => Channel::Sms,
        Some("voice") => Channel::Voice,
        Some(_) => {
            return Err(ApiError::new(
                Problem::InvalidChannel,
                "channel is \"sms\" or \"voice\"",
            ))
        }
    };
    let max_price = body
        .max_price
        .as_deref()
        .map(Micros::parse_positive)
        .transpose()?;
    let key = idempotency_key(&req, owner)?;
    let quote = state.router.quote(&service, country).await.ok_or_else(|| {
        ApiError::new(
            Problem::NoNumbers,
            "no upstream has numbers for this service and country",
        )
    })?;
    let price = state.pricing.sell_price(quote.cost);
    if max_price.is_some_and(|max| price > max) {
        return Err(ApiError::new(
            Problem::PriceAboveMax,
            format!("the price is {price}, above max_price"),
        ));
    }
    let request = PlaceOrder {
        service,
        country,
        channel,
        price,
    };
    let placed = state
        .commerce
        .place_order(owner, &request, key.as_ref())
        .await?;
    // Wait (bounded) for the number, as promised, folding the order only when
    // its stream moved (its version is an in-memory lookup). Not woken by the
    // log's head: under load it moves every few milliseconds.
    let started = Instant::now();
    let stream = placed.order.stream();
    let mut seen_version = 0;
    loop {
        let version = state
            .log
            .stream_version(&stream)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        if version == seen_version && started.elapsed() < PLACE_WAIT {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        }
        seen_version = version;
        let order = state.commerce.order(placed.order).await?;
        let status = order.status;
        let settled = !matches!(status, Some(OrderStatus::Placed));
        if settled || started.elapsed() >= PLACE_WAIT {
            if status == Some(OrderStatus::Cancelled) && !placed.replayed {
                return Err(ApiError::new(
                    Problem::NoNumbers,
                    "no upstream had a number; nothing was charged",
                ));
            }
            let view = order_view(&state, placed.order, &order).ok_or_else(ApiError::not_found)?;
            return Ok(HttpResponse::Created().json(view));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// My orders, newest first, from the orders read model.
async fn list(
    state: web::Data<AppState>,
    customer: Customer,
    query: web::Query<super::wallet::ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (cursor, limit) = query.page()?;
    state.catch_up(nexus_projections::orders::NAME).await;
    let orders = state
        .read_models
        .orders()
        .map_err(|e| ApiError::internal(&e))?;
    let page = orders
        .by_owner(&Owner::Account(customer.account), cursor, limit)
        .map_err(|e| ApiError::internal(&e))?;
    let policy = state.commerce.policy();
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|o| {
            let details = o.details.plain();
            serde_json::json!({
                "id": o.order.to_string(),
                "status": status_name(o.status),
                "service": details.map(|d| d.service.as_str().to_owned()),
                "country": details.map(|d| d.country.as_str().to_owned()),
                "channel": details.map(|d| match d.channel { Channel::Sms => "sms", Channel::Voice => "voice" }),
                "phone": o.phone.plain(),
                "price": o.price.to_string(),
                "created_at": rfc3339(o.placed_at),
                "expires_at": rfc3339(o.expires_at),
                "cancel_available_at": o.cancel_available_at(policy).map(rfc3339),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "next_cursor": page.next.map(|c| c.to_string()) }),
    ))
}

/// The request's `Idempotency-Key`, scoped to the caller (checked: 1–255
/// printable ASCII characters).
pub fn idempotency_key(
    req: &HttpRequest,
    owner: Owner,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            Problem::InvalidIdempotencyKey,
            "Idempotency-Key is 1-255 printable ASCII characters",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let scope = owner.wallet_stream();
    IdempotencyKey::new(scope.as_str(), text)
        .map(Some)
        .ok_or_else(invalid)
}

fn order_id(path: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(path).ok_or_else(ApiError::not_found)
}

/// The order if the customer owns it; anyone else's is "not found".
async fn owned(state: &AppState, customer: Customer, id: OrderId) -> Result<Order, ApiError> {
    let order = state.commerce.order(id).await?;
    match &order.placed {
        Some(p) if p.owner == Owner::Account(customer.account) => Ok(order),
        _ => Err(ApiError::not_found()),
    }
}

async fn get_order(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    let order = owned(&state, customer, id).await?;
    Ok(HttpResponse::Ok().json(order_view(&state, id, &order).ok_or_else(ApiError::not_found)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeQuery {
    wait: Option<CodeWait>,
}

/// A long-poll a client asked for: 0 to [`MAX_CODE_WAIT_SECS`] seconds. Any
/// other value fails the query's deserialization, so it is refused as 400
/// `invalid_query` like every bad query value (it was cut to the bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CodeWait(u64);

impl<'de> Deserialize<'de> for CodeWait {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = u64::deserialize(deserializer)?;
        if seconds <= MAX_CODE_WAIT_SECS {
            Ok(CodeWait(seconds))
        } else {
            Err(serde::de::Error::custom(format_args!(
                "wait must be 0 to {MAX_CODE_WAIT_SECS} seconds"
            )))
        }
    }
}

async fn code(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
    query: web::Query<CodeQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    let wait = Duration::from_secs(query.wait.map_or(0, |w| w.0));
    let owner = Owner::Account(customer.account);
    let started = Instant::now();
    loop {
        match state
            .commerce
            .read_code(id, owner, DeliveryChannel::Api)
            .await
        {
            Ok(read) => {
                return Ok(HttpResponse::Ok().json(serde_json::json!({
                    "code": read.code, "text": read.text, "received_at": rfc3339(read.received_at)
                })))
            }
            Err(CommandError::Refused(CommerceError::Order(OrderError::NoCodeYet)))
                if started.elapsed() < wait =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(CommandError::Refused(CommerceError::Order(OrderError::NoCodeYet)))
            | Err(CommandError::Refused(CommerceError::Order(OrderError::WrongStatus(_)))) => {
                let order = owned(&state, customer, id).await?;
                let status = order.status.map(status_name);
                return Ok(
                    HttpResponse::Ok().json(serde_json::json!({ "code": null, "status": status }))
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn resend(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    state
        .commerce
        .request_resend(id, Owner::Account(customer.account))
        .await?;
    respond_with_order(&state, customer, id).await
}

async fn cancel(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    state
        .commerce
        .cancel(
            id,
            Some(Owner::Account(customer.account)),
            CancelReason::Customer,
        )
        .await?;
    respond_with_order(&state, customer, id).await
}

async fn complete(
    state: web::Data<AppState>,
    customer: Customer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    // A code not read yet is delivered by completing, as finishActivation does.
    state
        .commerce
        .deliver_and_complete(id, Owner::Account(customer.account), DeliveryChannel::Api)
        .await?;
    respond_with_order(&state, customer, id).await
}

async fn respond_with_order(
    state: &AppState,
    customer: Customer,
    id: OrderId,
) -> Result<HttpResponse, ApiError> {
    let order = owned(state, customer, id).await?;
    Ok(HttpResponse::Ok().json(order_view(state, id, &order).ok_or_else(ApiError::not_found)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(query: &str) -> Result<Option<u64>, String> {
        web::Query::<CodeQuery>::from_query(query)
            .map(|q| q.wait.map(|w| w.0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_code_wait_is_0_to_the_bound_and_anything_else_refused() {
        assert_eq!(wait(""), Ok(None));
        assert_eq!(wait("wait=0"), Ok(Some(0)));
        assert_eq!(
            wait(&format!("wait={MAX_CODE_WAIT_SECS}")),
            Ok(Some(MAX_CODE_WAIT_SECS))
        );
        for refused in ["wait=61", "wait=12678031", "wait=-1", "wait=x", "wait="] {
            assert!(wait(refused).is_err(), "{refused}");
        }
    }
}
