//! Crypto deposits: the invoice, the gateway's signed IPN webhook, and (on the
//! embedded default only) a development route that has the simulated gateway pay.

use actix_web::{post, web, HttpRequest, HttpResponse};
use chrono::SecondsFormat;
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
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create).service(ipn).service(dev_pay);
}

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
        "expires_at": invoice.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

#[post("/v1/deposits")]
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
#[post("/v1/payments/ipn")]
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
#[post("/v1/dev/payments/{id}/pay")]
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
