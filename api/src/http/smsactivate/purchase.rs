//! `getNumber` / `getNumberV2`: buying a number, through the same order command
//! as `POST /v1/orders` (hold on the wallet, number within the provisioning
//! deadline).
//!
//! # One purchase per intent
//!
//! herosms retries a failed `getNumberV2` and then falls back to `getNumber`
//! with the same parameters (PROTOCOLS 6.7, rule 3). Two guarantees keep that to
//! one number:
//!
//! 1. A repeat of the same purchase (same API key, service, country) within
//!    [`nexus_core::domain::commerce::REPEAT_WINDOW_SECS`] of an earlier one that is still active answers that
//!    earlier activation, in either form, instead of buying again. The earlier
//!    purchase is found through idempotency keys derived from (key, request,
//!    window, n): the order command records each key in the same atomic append as
//!    the order, so the check survives restarts and concurrent requests (the
//!    second one to claim a key gets the first one's order). A purchase whose
//!    activation is already over (cancelled, completed) is not answered again: the
//!    next free key of the window buys anew.
//! 2. An error answer means nothing is held: if no number came within the
//!    deadline the order is cancelled with a full refund before `NO_NUMBERS` is
//!    answered.
//!
//! The cost: a client that wants several numbers for the same service and country
//! within the window gets the same activation until the earlier one is over; it
//! buys them through `POST /v1/orders` with distinct `Idempotency-Key`s.

use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use nexus_core::domain::codec::Personal;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::idempotency::fingerprint;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    CancelReason, Channel, CountryCode, Order, OrderError, OrderStatus,
};
use nexus_core::service::account_service::ApiKeyLogin;
use nexus_core::service::commerce_service::{CommandError, EarlierPurchase};
use serde::Serialize;

use super::activations::activation_id;
use super::answer::{json, protocol_time, text, Decimal, Refusal};
use super::catalog::{country_of_id, CURRENCY_USD};
use super::{refusal_of, Params};
use crate::http::state::AppState;

/// Longest wait for the number (the provisioning promise, as on `/v1/orders`).
const NUMBER_WAIT: Duration = Duration::from_millis(3_000);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Rounds of "claim a key, find it taken by a concurrent request".
const MAX_CLAIM_ROUNDS: usize = 4;
/// The SMS-Activate id of the country a client names when it names none (Russia).
const DEFAULT_COUNTRY_ID: &str = "0";

/// Which answer the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `ACCESS_NUMBER:<id>:<phone>`
    V1,
    /// The JSON object of PROTOCOLS 6.3.
    V2,
}

/// What the client asks to buy.
struct Intent {
    service: nexus_core::domain::order::ServiceCode,
    country_id: u32,
    country: CountryCode,
    /// `None`: none given; `Some(Err)`: given but not an amount.
    max_price: Option<Result<Micros, ()>>,
}

pub async fn get_number(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
    form: Form,
) -> Result<HttpResponse, Refusal> {
    let service = params
        .non_empty("service")
        .and_then(|raw| state.catalog.service(raw))
        .ok_or(Refusal::BadService)?
        .code
        .clone();
    let (country_id, country) = country_of_id(
        state,
        params.non_empty("country").unwrap_or(DEFAULT_COUNTRY_ID),
    )
    .ok_or(Refusal::WrongCountry)?;
    let intent = Intent {
        service,
        country_id,
        country,
        max_price: params
            .non_empty("maxPrice")
            .map(|raw| Micros::parse_positive(raw).map_err(|_| ())),
    };
    let order = buy(state, login, &intent).await?;
    let order_state = wait_for_number(state, login, order).await?;
    answer(state, order, &order_state, intent.country_id, form).await
}

/// The order for this intent: an earlier live one of the window, or a new one.
async fn buy(state: &AppState, login: ApiKeyLogin, intent: &Intent) -> Result<OrderId, Refusal> {
    let owner = Owner::Account(login.account);
    let request_print = fingerprint(&[
        b"sms-activate-get-number",
        login.key_id.0.as_bytes(),
        intent.service.as_str().as_bytes(),
        intent.country.as_str().as_bytes(),
    ]);
    for _ in 0..MAX_CLAIM_ROUNDS {
        let earlier = state.commerce.earlier_purchase(owner, &request_print).await;
        let free_key = match earlier.map_err(refusal_of)? {
            EarlierPurchase::Live(order) => return Ok(order),
            EarlierPurchase::None { free_key } => free_key,
        };
        let quote = state
            .router
            .quote(&intent.service, intent.country)
            .await
            .ok_or(Refusal::NoNumbers)?;
        let price = state.pricing.sell_price(quote.cost);
        match intent.max_price {
            Some(Err(())) => return Err(Refusal::WrongMaxPrice(price)),
            Some(Ok(max)) if price > max => return Err(Refusal::WrongMaxPrice(price)),
            _ => {}
        }
        let request = PlaceOrder {
            service: intent.service.clone(),
            country: intent.country,
            channel: Channel::Sms,
            price,
        };
        match state
            .commerce
            .place_order(owner, &request, free_key.as_ref())
            .await
        {
            Ok(placed) => return Ok(placed.order),
            // A concurrent request claimed the key first (at another price): look
            // again, and find its order.
            Err(CommandError::Refused(CommerceError::IdempotencyKeyReused)) => continue,
            Err(e) => return Err(refusal_of(e)),
        }
    }
    Err(Refusal::Unavailable)
}

/// Waits (bounded) for the number. No number in time: the order is cancelled
/// with a full refund and the answer is `NO_NUMBERS`, so an error never leaves
/// anything bought.
async fn wait_for_number(
    state: &AppState,
    login: ApiKeyLogin,
    id: OrderId,
) -> Result<Order, Refusal> {
    let started = Instant::now();
    loop {
        let order = state.commerce.order(id).await.map_err(refusal_of)?;
        match order.status {
            Some(OrderStatus::Placed) if started.elapsed() < NUMBER_WAIT => {
                tokio::time::sleep(POLL_EVERY).await;
            }
            Some(OrderStatus::Placed) => {
                let owner = Some(Owner::Account(login.account));
                match state
                    .commerce
                    .cancel(id, owner, CancelReason::NoNumbers)
                    .await
                {
                    Ok(_) => return Err(Refusal::NoNumbers),
                    // Settled meanwhile: look again.
                    Err(CommandError::Refused(CommerceError::Order(OrderError::WrongStatus(
                        _,
                    )))) => {}
                    Err(e) => return Err(refusal_of(e)),
                }
            }
            Some(OrderStatus::Cancelled | OrderStatus::Expired) | None => {
                return Err(Refusal::NoNumbers)
            }
            Some(_) => return Ok(order),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NumberV2 {
    activation_id: String,
    phone_number: String,
    activation_cost: Decimal,
    currency: u16,
    /// A string: one client accepts nothing else, and every other accepts it.
    country_code: String,
    country_phone_code: u16,
    can_get_another_sms: bool,
    activation_time: String,
    activation_end_time: String,
    activation_operator: &'static str,
    service_code: String,
    subtype: u8,
}

async fn answer(
    state: &AppState,
    id: OrderId,
    order: &Order,
    country_id: u32,
    form: Form,
) -> Result<HttpResponse, Refusal> {
    let placed = order
        .placed
        .as_ref()
        .ok_or_else(|| super::internal(&"an assigned order without its placement"))?;
    let phone = match order.assigned.as_ref().map(|a| &a.phone) {
        Some(Personal::Plain(p)) => p.phone.clone(),
        _ => return Err(super::internal(&"an assigned number that does not open")),
    };
    let activation = activation_id(state, id).await?;
    Ok(match form {
        Form::V1 => text(format!("ACCESS_NUMBER:{activation}:{phone}")),
        Form::V2 => {
            let details = placed.details.plain();
            let country = details.and_then(|d| state.catalog.country(d.country));
            json(&NumberV2 {
                activation_id: activation.to_string(),
                phone_number: phone,
                activation_cost: Decimal(placed.price),
                currency: CURRENCY_USD,
                country_code: country_id.to_string(),
                country_phone_code: country.map_or(0, |c| c.dial_code),
                can_get_another_sms: true,
                activation_time: protocol_time(placed.placed_at),
                activation_end_time: protocol_time(placed.expires_at),
                activation_operator: "any",
                service_code: details
                    .map(|d| d.service.as_str().to_owned())
                    .unwrap_or_default(),
                subtype: 1,
            })
        }
    })
}
