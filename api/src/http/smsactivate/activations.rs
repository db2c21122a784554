//! Activations: the integer ids, status reads (the first read of a code is its
//! delivery and captures the hold, as on `/v1`), `setStatus` and its two
//! shorthands, and the list of active activations.
//!
//! # Activation ids
//!
//! An activation id is the global log position of the order's first event
//! (`OrderPlaced`, version 1 of its `order-…` stream). Positions are unique and
//! never reused, so no two orders share an id; they are permanent (the log is
//! append-only; a pruned record keeps its position), so ids survive restarts and
//! replays; and the mapping needs no storage of its own: an id is resolved by
//! reading that one record and checking it opens an order stream, and an order's
//! id is the position of its stream's first record. An id that is not the
//! caller's order reads as `WRONG_ACTIVATION_ID`, whoever's it is.

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use nexus_core::domain::codec::Personal;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::order::{
    CancelReason, Channel, CodePii, DeliveryChannel, Order, OrderError, OrderStatus,
};
use nexus_core::log::{Direction, EventStore};
use nexus_core::service::account_service::ApiKeyLogin;
use nexus_core::service::commerce_service::{CodeRead, CommandError};
use serde::Serialize;

use super::answer::{json, protocol_time, text, Decimal, Refusal};
use super::catalog::CURRENCY_USD;
use super::{internal, refusal_of, Params};
use crate::http::state::AppState;

/// Most items one `getActiveActivations` answer lists.
pub const MAX_ACTIVE_LISTED: usize = 500;

/// The activation id of an order: the position of its first event.
pub async fn activation_id(state: &AppState, order: OrderId) -> Result<u64, Refusal> {
    let first = state
        .log
        .read_stream(&order.stream(), 1, Direction::Forwards, 1)
        .await
        .map_err(|e| internal(&e))?;
    first
        .first()
        .map(|record| record.position)
        .ok_or_else(|| internal(&"an order stream without events"))
}

/// The caller's order behind an activation id.
async fn resolve(
    state: &AppState,
    login: ApiKeyLogin,
    raw: Option<&str>,
) -> Result<(u64, OrderId, Order), Refusal> {
    let position = raw
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|&p| p > 0 && p <= state.log.head())
        .ok_or(Refusal::WrongActivationId)?;
    let records = state
        .log
        .read_all(position, 1)
        .await
        .map_err(|e| internal(&e))?;
    let record = records
        .first()
        .filter(|r| r.position == position && r.version == 1)
        .ok_or(Refusal::WrongActivationId)?;
    let id = record
        .stream
        .as_str()
        .strip_prefix("order-")
        .and_then(OrderId::parse)
        .ok_or(Refusal::WrongActivationId)?;
    let order = state.commerce.order(id).await.map_err(refusal_of)?;
    match &order.placed {
        Some(placed) if placed.owner == Owner::Account(login.account) => Ok((position, id, order)),
        _ => Err(Refusal::WrongActivationId),
    }
}

/// The code as the owner reads it now (the first read delivers it), `None`
/// while there is none; a cancelled or expired activation is `STATUS_CANCEL`.
async fn read_code(
    state: &AppState,
    login: ApiKeyLogin,
    id: OrderId,
    order: &Order,
) -> Result<Option<CodeRead>, Refusal> {
    match order.status {
        Some(OrderStatus::Cancelled | OrderStatus::Expired) => Err(Refusal::StatusCancel),
        Some(OrderStatus::Placed | OrderStatus::NumberAssigned) | None => Ok(None),
        Some(OrderStatus::CodeReceived | OrderStatus::CodeDelivered | OrderStatus::Completed) => {
            let owner = Owner::Account(login.account);
            match state
                .commerce
                .read_code(id, owner, DeliveryChannel::CompatibleApi)
                .await
            {
                Ok(read) => Ok(Some(read)),
                Err(CommandError::Refused(CommerceError::Order(OrderError::NoCodeYet))) => Ok(None),
                // Cancelled or expired meanwhile.
                Err(CommandError::Refused(CommerceError::Order(OrderError::WrongStatus(
                    OrderStatus::Cancelled | OrderStatus::Expired,
                )))) => Err(Refusal::StatusCancel),
                Err(e) => Err(refusal_of(e)),
            }
        }
    }
}

/// `getStatus`: `STATUS_WAIT_CODE`, `STATUS_WAIT_RESEND`, `STATUS_OK:<code>`,
/// `STATUS_WAIT_RETRY:<code>` (a resend was asked after this code) or
/// `STATUS_CANCEL`.
pub async fn status_v1(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
) -> Result<HttpResponse, Refusal> {
    let (_, id, order) = resolve(state, login, params.get("id")).await?;
    let code = match read_code(state, login, id, &order).await {
        Err(Refusal::StatusCancel) => return Ok(text("STATUS_CANCEL")),
        other => other?,
    };
    let token = match code {
        None if order.resend_requested => "STATUS_WAIT_RESEND".to_owned(),
        None => "STATUS_WAIT_CODE".to_owned(),
        Some(read) if order.resend_requested => format!("STATUS_WAIT_RETRY:{}", read.code),
        Some(read) => format!("STATUS_OK:{}", read.code),
    };
    Ok(text(token))
}

#[derive(Serialize)]
struct SmsBody {
    #[serde(rename = "dateTime")]
    date_time: String,
    code: String,
    text: String,
}

#[derive(Serialize)]
struct CallBody {
    from: String,
    text: String,
    code: String,
    #[serde(rename = "dateTime")]
    date_time: String,
    url: Option<String>,
    #[serde(rename = "parsingCount")]
    parsing_count: u32,
}

#[derive(Serialize)]
struct StatusV2 {
    #[serde(rename = "verificationType")]
    verification_type: u8,
    sms: Option<SmsBody>,
    call: Option<CallBody>,
}

/// `getStatusV2`: always a JSON object; `sms` (or `call`, for a voice order)
/// once a code is there. Cancelled: 409 `STATUS_CANCEL` as JSON.
pub async fn status_v2(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
) -> Result<HttpResponse, Refusal> {
    let (_, id, order) = resolve(state, login, params.get("id")).await?;
    let code = read_code(state, login, id, &order).await?;
    let details = order.placed.as_ref().and_then(|p| p.details.plain());
    let voice = details.is_some_and(|d| d.channel == Channel::Voice);
    let body = match code {
        None => StatusV2 {
            verification_type: if voice { 2 } else { 0 },
            sms: None,
            call: None,
        },
        Some(read) if voice => StatusV2 {
            verification_type: 2,
            sms: None,
            call: Some(CallBody {
                from: details
                    .and_then(|d| state.catalog.service(d.service.as_str()))
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                text: read.text,
                code: read.code,
                date_time: protocol_time(read.received_at),
                url: None,
                parsing_count: 1,
            }),
        },
        Some(read) => StatusV2 {
            verification_type: 0,
            sms: Some(SmsBody {
                date_time: protocol_time(read.received_at),
                code: read.code,
                text: read.text,
            }),
            call: None,
        },
    };
    Ok(json(&body))
}

/// `setStatus`: 1 ready, 3 another SMS, 6 complete, 8 (or -1) cancel.
pub async fn set_status(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
) -> Result<HttpResponse, Refusal> {
    let (_, id, order) = resolve(state, login, params.get("id")).await?;
    match params.non_empty("status") {
        Some("1") => match order.status {
            Some(s) if !s.is_final() => Ok(text("ACCESS_READY")),
            _ => Err(Refusal::BadStatus),
        },
        Some("3") => {
            state
                .commerce
                .request_resend(id, Owner::Account(login.account))
                .await
                .map_err(refusal_of)?;
            Ok(text("ACCESS_RETRY_GET"))
        }
        Some("6") => finish_order(state, login, id, &order).await,
        Some("8" | "-1") => cancel_order(state, login, id).await,
        _ => Err(Refusal::BadStatus),
    }
}

/// `finishActivation`: `setStatus` 6.
pub async fn finish(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
) -> Result<HttpResponse, Refusal> {
    let (_, id, order) = resolve(state, login, params.get("id")).await?;
    finish_order(state, login, id, &order).await
}

/// `cancelActivation`: `setStatus` 8.
pub async fn cancel(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
) -> Result<HttpResponse, Refusal> {
    let (_, id, _) = resolve(state, login, params.get("id")).await?;
    cancel_order(state, login, id).await
}

/// Completes: a code not read yet is delivered first (the code was used, the
/// hold is captured); completing again answers as the first time did.
async fn finish_order(
    state: &AppState,
    login: ApiKeyLogin,
    id: OrderId,
    order: &Order,
) -> Result<HttpResponse, Refusal> {
    if order.status == Some(OrderStatus::Completed) {
        return Ok(text("ACCESS_ACTIVATION"));
    }
    let owner = Owner::Account(login.account);
    match state
        .commerce
        .deliver_and_complete(id, owner, DeliveryChannel::CompatibleApi)
        .await
    {
        Ok(_)
        | Err(CommandError::Refused(CommerceError::Order(OrderError::WrongStatus(
            OrderStatus::Completed,
        )))) => Ok(text("ACCESS_ACTIVATION")),
        Err(CommandError::Refused(CommerceError::Order(OrderError::WrongStatus(
            OrderStatus::Cancelled | OrderStatus::Expired,
        )))) => Err(Refusal::StatusCancel),
        Err(e) => Err(refusal_of(e)),
    }
}

/// Cancels with a full refund: not within the cancel guard after the number
/// came (`EARLY_CANCEL_DENIED`), not once a code came (`BAD_STATUS`); cancelling
/// again (or an activation that expired, refunded too) answers `ACCESS_CANCEL`.
async fn cancel_order(
    state: &AppState,
    login: ApiKeyLogin,
    id: OrderId,
) -> Result<HttpResponse, Refusal> {
    let owner = Some(Owner::Account(login.account));
    match state
        .commerce
        .cancel(id, owner, CancelReason::Customer)
        .await
    {
        Ok(_)
        | Err(CommandError::Refused(CommerceError::Order(OrderError::WrongStatus(
            OrderStatus::Cancelled | OrderStatus::Expired,
        )))) => Ok(text("ACCESS_CANCEL")),
        Err(CommandError::Refused(CommerceError::Order(OrderError::CancelTooEarly(_)))) => {
            Err(Refusal::EarlyCancelDenied {
                min_activation_secs: state.commerce.policy().cancel_guard.num_seconds(),
            })
        }
        Err(e) => Err(refusal_of(e)),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActiveItem {
    activation_id: String,
    service_code: String,
    phone_number: String,
    activation_cost: Decimal,
    activation_status: &'static str,
    sms_code: Option<String>,
    sms_text: Option<String>,
    activation_time: String,
    discount: &'static str,
    repeated: &'static str,
    can_get_another_sms: &'static str,
    country_code: String,
    country_name: String,
    currency: u16,
}

/// `getActiveActivations`: a bare JSON list (`[]` when none), oldest first;
/// `start` and `limit` page it. A code shows only once delivered (reading it
/// through a status call): listing never delivers, so it never charges.
pub async fn active(
    state: &AppState,
    login: ApiKeyLogin,
    params: &Params,
) -> Result<HttpResponse, Refusal> {
    let start: usize = params
        .non_empty("start")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = params
        .non_empty("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_ACTIVE_LISTED)
        .clamp(1, MAX_ACTIVE_LISTED);
    let owner = Owner::Account(login.account);
    let active = state
        .commerce
        .active_orders(owner)
        .await
        .map_err(refusal_of)?;
    let now = state.commerce.now();
    let mut rows: Vec<(u64, ActiveItem)> = Vec::new();
    for (id, order) in active {
        if let Some(item) = active_item(state, id, &order, now).await? {
            rows.push(item);
        }
    }
    rows.sort_by_key(|(position, _)| *position);
    let items: Vec<ActiveItem> = rows
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(_, item)| item)
        .collect();
    Ok(json(&items))
}

async fn active_item(
    state: &AppState,
    id: OrderId,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<Option<(u64, ActiveItem)>, Refusal> {
    let (Some(placed), Some(status)) = (&order.placed, order.status) else {
        return Ok(None);
    };
    let position = activation_id(state, id).await?;
    let details = placed.details.plain();
    let country = details.and_then(|d| {
        let sa_id = state.catalog.sms_activate_country(d.country)?;
        Some((sa_id, state.catalog.country(d.country)?.name.clone()))
    });
    let phone = order.assigned.as_ref().and_then(|a| match &a.phone {
        Personal::Plain(p) => Some(p.phone.clone()),
        _ => None,
    });
    let delivered_code = match (&order.code, status) {
        (Some(code), OrderStatus::CodeDelivered)
            if !order.erased_codes.contains(&code.sequence)
                && order
                    .delivery_window_ends_at(state.commerce.policy())
                    .is_some_and(|end| now < end) =>
        {
            match &code.code {
                Personal::Plain(CodePii { code, text }) => Some((code.clone(), text.clone())),
                _ => None,
            }
        }
        _ => None,
    };
    let activation_status = match status {
        OrderStatus::CodeReceived | OrderStatus::CodeDelivered if !order.resend_requested => "2",
        _ if order.resend_requested => "3",
        _ => "4",
    };
    let (sms_code, sms_text) = match delivered_code {
        Some((code, text)) => (Some(code), Some(text)),
        None => (None, None),
    };
    Ok(Some((
        position,
        ActiveItem {
            activation_id: position.to_string(),
            service_code: details
                .map(|d| d.service.as_str().to_owned())
                .unwrap_or_default(),
            phone_number: phone.unwrap_or_default(),
            activation_cost: Decimal(placed.price),
            activation_status,
            sms_code,
            sms_text,
            activation_time: protocol_time(placed.placed_at),
            discount: "0",
            repeated: "0",
            can_get_another_sms: "1",
            country_code: country
                .as_ref()
                .map(|(id, _)| id.to_string())
                .unwrap_or_default(),
            country_name: country.map(|(_, name)| name).unwrap_or_default(),
            currency: CURRENCY_USD,
        },
    )))
}
