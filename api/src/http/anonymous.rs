//! Anonymous orders: no account, a tracking ID only. Creating one opens an
//! invoice; paying it starts the order; the tracking ID follows it (the first
//! read of the code through it is the delivery) and spends left credit on a
//! replacement.

use actix_web::{web, HttpResponse};
use nexus_core::domain::anonymous::TrackingId;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::order::{
    Channel, CountryCode, DeliveryChannel, OrderError, OrderStatus, ServiceCode,
};
use nexus_core::service::commerce_service::CommandError;
use nexus_providers::gateway::DEFAULT_PAY_CURRENCY;
use serde::Deserialize;

use super::body::ObjectBody;
use super::error::{ApiError, Problem};
use super::orders::order_view;
use super::route::{Auth, Method, Op, Route};
use super::schema::{money, obj, path_param, rfc3339, schema_ref, string, string_enum};
use super::state::AppState;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/anonymous/orders",
        handler: |route| route.to(create),
        doc: || Op {
            summary: "Anonymous order, paid by crypto",
            tag: "anonymous",
            auth: Auth::None,
            params: vec![],
            body: Some(schema_ref("PlaceAnonymousOrder")),
            success: (
                201,
                "Tracking id, order and invoice",
                Some(schema_ref("AnonymousOrder")),
            ),
            errors: vec![
                Problem::InvalidJson,
                Problem::UnknownService,
                Problem::UnknownCountry,
                Problem::InvalidChannel,
                Problem::InvalidDeposit,
                Problem::NoNumbers,
                Problem::AnonymousOrderConflict,
                Problem::Contention,
                Problem::Unavailable,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/track/{tracking_id}",
        handler: |route| route.to(track),
        doc: || Op {
            summary: "Follow an anonymous order",
            tag: "anonymous",
            auth: Auth::None,
            params: vec![path_param("tracking_id", "Tracking id.")],
            body: None,
            success: (
                200,
                "Awaiting payment, or the latest order with its code and the credit left",
                Some(json!({ "oneOf": [
                    obj(&["status", "credit"], json!({
                        "status": string_enum(&["awaiting_payment"]), "credit": money() })),
                    schema_ref("TrackedOrder")
                ] })),
            ),
            errors: vec![
                Problem::NotFound,
                Problem::OrderExpired,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/track/{tracking_id}/reorder",
        handler: |route| route.to(reorder),
        doc: || Op {
            summary: "Another number for an anonymous order, from its credit",
            tag: "anonymous",
            auth: Auth::None,
            params: vec![path_param("tracking_id", "Tracking id.")],
            body: None,
            success: (
                201,
                "Placed",
                Some(obj(
                    &["id", "status"],
                    json!({ "id": string(), "status": string_enum(&["placed"]) }),
                )),
            ),
            errors: vec![
                Problem::InsufficientFunds,
                Problem::NotFound,
                Problem::AnonymousOrderConflict,
                Problem::OrderExists,
                Problem::WalletConflict,
                Problem::Contention,
            ],
        },
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnonymousRequest {
    service: String,
    country: String,
    channel: Option<String>,
}

async fn create(
    state: web::Data<AppState>,
    body: ObjectBody<AnonymousRequest>,
) -> Result<HttpResponse, ApiError> {
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
    let quote = state.router.quote(&service, country).await.ok_or_else(|| {
        ApiError::new(
            Problem::NoNumbers,
            "no upstream has numbers for this service and country",
        )
    })?;
    let price = state.pricing.sell_price(quote.cost);
    let created = state
        .commerce
        .create_anonymous_order(&PlaceOrder {
            service,
            country,
            channel,
            price,
        })
        .await?;
    let invoice = state
        .gateway
        .create_invoice(created.invoice, price, DEFAULT_PAY_CURRENCY)
        .await
        .map_err(|e| ApiError::unavailable(format!("the payment gateway: {e}")))?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "tracking_id": created.tracking_id.as_str(),
        "order": { "status": "awaiting_payment", "price": price.to_string() },
        "invoice": {
            "id": invoice.id,
            "amount": invoice.amount.to_string(),
            "pay_currency": invoice.pay_currency,
            "pay_amount": invoice.pay_amount,
            "pay_address": invoice.pay_address,
            "expires_at": rfc3339(invoice.expires_at),
        },
    })))
}

fn tracking_id(path: &str) -> Result<TrackingId, ApiError> {
    TrackingId::parse(path).ok_or_else(ApiError::not_found)
}

/// The current order of a tracking ID, with its code once received.
async fn track(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tracking = tracking_id(&path)?;
    let tracked = state.commerce.track(&tracking).await?;
    let credit = tracked.wallet.available.to_string();
    let Some((id, order)) = tracked.orders.last() else {
        return Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "status": "awaiting_payment", "credit": credit })));
    };
    let mut view =
        serde_json::to_value(order_view(&state, *id, order).ok_or_else(ApiError::not_found)?)
            .map_err(|e| ApiError::internal(&e))?;
    let owner = Owner::Anonymous(tracked.anon);
    let code = match order.status {
        Some(OrderStatus::CodeReceived | OrderStatus::CodeDelivered | OrderStatus::Completed) => {
            match state
                .commerce
                .read_code(*id, owner, DeliveryChannel::Tracking)
                .await
            {
                Ok(read) => serde_json::json!(read.code),
                Err(CommandError::Refused(CommerceError::Order(OrderError::CodeErased))) => {
                    serde_json::Value::Null
                }
                Err(e) => return Err(e.into()),
            }
        }
        _ => serde_json::Value::Null,
    };
    view["code"] = code;
    view["credit"] = serde_json::json!(credit);
    Ok(HttpResponse::Ok().json(view))
}

/// Spends the tracking ID's credit on a replacement once its order failed.
async fn reorder(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tracking = tracking_id(&path)?;
    let order = state
        .commerce
        .start_anonymous_order(tracking.anonymous_id())
        .await?;
    Ok(HttpResponse::Created()
        .json(serde_json::json!({ "id": order.to_string(), "status": "placed" })))
}
