//! Crypto deposits: the invoice, the gateway's signed IPN webhook, and (on the
//! embedded default only) a development route that has the simulated gateway pay.

use actix_web::{web, HttpRequest, HttpResponse};
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_providers::gateway::{
    Invoice, SimulatedPayment, DEFAULT_PAY_CURRENCY, MAX_IPN_BYTES, SIGNATURE_HEADER,
};
use serde::Deserialize;
use tracing::{info, warn};

use super::auth::Customer;
use super::body::{read_limited, ObjectBody};
use super::error::{ApiError, Problem};
use super::route::{Auth, Method, Op, Route};
use super::schema::{path_param, rfc3339, schema_ref, string, string_enum, string_or_null};
use super::state::AppState;
use nexus_core::domain::account::ApiKeyScope;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/deposits",
        handler: |route| route.to(create),
        doc: || Op {
            summary: "Create a crypto deposit invoice",
            tag: "wallet",
            auth: Auth::Customer(ApiKeyScope::Orders),
            params: vec![],
            body: Some(schema_ref("DepositRequest")),
            success: (201, "Invoice", Some(schema_ref("Invoice"))),
            errors: vec![
                Problem::InvalidJson,
                Problem::EmailNotVerified,
                Problem::InvalidAmount,
                Problem::InvalidDeposit,
                Problem::UnsupportedCurrency,
                Problem::WalletConflict,
                Problem::Contention,
                Problem::Unavailable,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/payments/ipn",
        handler: |route| route.to(ipn),
        doc: || Op {
            summary: "Payment gateway notification (signed)",
            tag: "wallet",
            auth: Auth::None,
            params: vec![
                json!({ "name": "x-nowpayments-sig", "in": "header", "required": true,
                "description": "HMAC-SHA512 of the canonical body.", "schema": string() }),
            ],
            body: Some(json!({ "type": "object",
                "description": "The gateway's notification; fields Nexus does not read are ignored.",
                "required": ["payment_id", "payment_status", "order_id"],
                "properties": {
                    "payment_id": { "type": ["string", "integer"] },
                    "payment_status": string_enum(&["waiting", "confirming", "confirmed", "sending",
                        "partially_paid", "finished", "failed", "refunded", "expired"]),
                    "order_id": string(),
                    "price_amount": { "type": ["string", "number", "null"] },
                    "price_currency": string_or_null(),
                    "pay_amount": { "type": ["string", "number", "null"] },
                    "actually_paid": { "type": ["string", "number", "null"] },
                    "actually_paid_at_fiat": { "type": ["string", "number", "null"] },
                    "pay_currency": string_or_null(),
                    "outcome_amount": { "type": ["string", "number", "null"] },
                    "payin_hash": string_or_null() } })),
            success: (200, "Accepted", Some(schema_ref("Outcome"))),
            errors: vec![
                Problem::UnreadableBody,
                Problem::IpnMalformedBody,
                Problem::IpnUnsigned,
                Problem::IpnMalformedSignature,
                Problem::IpnBadSignature,
                Problem::UnknownDeposit,
                Problem::IpnMissingField,
                Problem::IpnInvalidField,
                Problem::IpnUnsupportedCurrency,
                Problem::IpnNothingPaid,
                Problem::IpnNotConfigured,
                Problem::IpnFailed,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/dev/payments/{id}/pay",
        handler: |route| route.to(dev_pay),
        doc: || Op {
            summary: "Pay an invoice with the simulated gateway (embedded default only)",
            tag: "wallet",
            auth: Auth::None,
            params: vec![path_param("id", "Invoice id.")],
            body: None,
            success: (200, "Paid", Some(schema_ref("Outcome"))),
            errors: vec![Problem::NotFound],
        },
    },
];

/// The failure recorded on a deposit whose invoice the gateway did not create.
const GATEWAY_REFUSED_STATUS: &str = "invoice_not_created";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositRequest {
    amount: String,
    pay_currency: Option<String>,
}

fn invoice_json(invoice: &Invoice, status: &str) -> serde_json::Value {
    serde_json::json!({
        "id": invoice.id,
        "amount": invoice.amount.to_string(),
        "status": status,
        "pay_currency": invoice.pay_currency,
        "pay_amount": invoice.pay_amount,
        "pay_address": invoice.pay_address,
        "expires_at": rfc3339(invoice.expires_at),
    })
}

async fn create(
    state: web::Data<AppState>,
    customer: Customer,
    body: ObjectBody<DepositRequest>,
) -> Result<HttpResponse, ApiError> {
    let amount = Micros::parse_positive(&body.amount)?;
    let currency = body.pay_currency.as_deref().unwrap_or(DEFAULT_PAY_CURRENCY);
    if !state.gateway.accepts_currency(currency) {
        return Err(ApiError::new(
            Problem::UnsupportedCurrency,
            "the payment gateway does not take this pay_currency",
        ));
    }
    let deposit = state
        .commerce
        .request_deposit(Owner::Account(customer.account), amount)
        .await?;
    let invoice = match state
        .gateway
        .create_invoice(deposit, amount, currency)
        .await
    {
        Ok(invoice) => invoice,
        Err(e) => {
            // The customer got no invoice: the deposit is closed so that its
            // history does not show it waiting for ever. A payment the gateway
            // made anyway (its answer lost) is still credited by its IPN.
            if let Err(fail) = state
                .commerce
                .fail_deposit(deposit, GATEWAY_REFUSED_STATUS)
                .await
            {
                warn!(%deposit, error = %fail, "an invoice the gateway refused stays waiting");
            }
            return Err(ApiError::unavailable(format!("the payment gateway: {e}")));
        }
    };
    Ok(HttpResponse::Created().json(invoice_json(&invoice, "waiting")))
}

/// The gateway's webhook: verified (signature over the canonical body) before
/// anything is read; a bad call changes nothing.
async fn ipn(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, MAX_IPN_BYTES).await?;
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    match state.ipn.handle(signature, &body).await {
        Ok(outcome) => {
            info!(outcome = outcome.as_str(), "payment notification");
            Ok(HttpResponse::Ok().json(serde_json::json!({ "outcome": outcome.as_str() })))
        }
        Err(e) => Err(e.into()),
    }
}

/// Development only: the simulated gateway pays invoice `id` in full.
async fn dev_pay(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(simulated) = state.simulated_gateway.as_ref() else {
        return Err(ApiError::not_found());
    };
    let deposit = DepositId::parse(&path).ok_or_else(ApiError::not_found)?;
    let signed = simulated
        .ipn(deposit, &SimulatedPayment::finished())
        .map_err(|_| ApiError::not_found())?;
    // The same verified path as the gateway's own call, without the network hop.
    let outcome = state
        .ipn
        .handle(Some(&signed.signature), signed.body.as_bytes())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "outcome": outcome.as_str() })))
}
