//! The customer's rights over their own data (the privacy policy's access,
//! correction, deletion, portability and objection):
//!
//! - `GET /v1/me`: the account (id, e-mail, verification, status with the
//!   deletion's due date, objection, creation time).
//! - `PATCH /v1/me` `{"email"}`: corrects the address; the new one is unverified
//!   and a verification mail goes to it; the old one is told, with a link that
//!   undoes the change for 7 days (`POST /v1/email-changes/undo`). Pays from
//!   the sign-in budget, per IP and per account, like a registration.
//! - `POST /v1/me/deletion` (optional `{"confirm_forfeit_balance": bool}`):
//!   requests the deletion (refused while orders are active, and while the
//!   wallet has money available unless its forfeit is confirmed: at the
//!   erasure it moves to unclaimed balances); the account is disabled at once
//!   and erased 30 days later.
//! - `DELETE /v1/me/deletion`: withdraws it within those 30 days.
//! - `PUT /v1/me/objection` `{"object": bool}`: objection to non-essential
//!   processing.
//! - `GET /v1/me/export`: everything held about the customer as one JSON
//!   document (schema in `docs/EXPORT.md`), streamed; one at a time per
//!   account, and stopped when its reader takes nothing for
//!   [`EXPORT_IDLE_READER_TIMEOUT_S`].
//!
//! # Who may call while a deletion is pending
//!
//! The account is disabled: API keys stop working at once (401), a new login is
//! refused (403 `account_disabled`), and every route but four refuses a session
//! (401). A session cookie of the account, made before the request or at any
//! time before, still reaches `GET /v1/me`, `GET /v1/me/export`, `POST
//! /v1/me/deletion` (409, already requested) and `DELETE /v1/me/deletion`.
//! Without a session left, `DELETE /v1/me/deletion` takes the account's
//! `{"email", "password"}` as its body instead, checked like a login (one bcrypt
//! check, one answer for every wrong pair): that is the way back in.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use nexus_core::domain::account::{Account, AccountError, AccountStatus, Email};
use nexus_core::domain::codec::Personal;

use nexus_core::domain::ids::AccountId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CancelReason, Channel, CodePii, DeliveryChannel, OrderStatus};
use nexus_core::domain::wallet::DepositOutcome;
use nexus_core::log::EventStore;
use nexus_core::service::runner::ServiceError;
use nexus_projections::orders::OrderView;
use nexus_projections::wallets::{DepositRecord, DepositStatus};
use nexus_projections::{Cursor, Page, QueryError, MAX_PAGE_SIZE};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::auth::{Customer, Holder};
use super::body::{optional_object, read_limited, ObjectBody};
use super::error::{ApiError, Problem};
use super::orders::status_name;
use super::route::{Auth, Method, Op, Route};
use super::schema::{boolean, obj, rfc3339, schema_ref};
use super::state::{AppState, RecoveryKind};
use super::wallet::ledger_entry;
use super::MAX_JSON_BYTES;
use nexus_core::domain::account::ApiKeyScope;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/me",
        handler: |route| route.to(me),
        doc: || Op {
            summary: "The account (also while a deletion is pending)",
            tag: "me",
            auth: Auth::Customer(ApiKeyScope::Full),
            params: vec![],
            body: None,
            success: (200, "Account", Some(schema_ref("Me"))),
            errors: vec![Problem::NotFound],
        },
    },
    Route {
        method: Method::Patch,
        path: "/v1/me",
        handler: |route| route.to(correct_email),
        doc: || Op {
            summary: "Correct the account (e-mail)",
            tag: "me",
            auth: Auth::FreshSession,
            params: vec![],
            body: Some(obj(
                &["email"],
                json!({ "email": { "type": "string", "format": "email", "maxLength": 254 } }),
            )),
            success: (200, "Account", Some(schema_ref("Me"))),
            errors: vec![
                Problem::InvalidJson,
                Problem::InvalidEmail,
                Problem::NotFound,
                Problem::EmailTaken,
                Problem::Contention,
                Problem::EmailUnchanged,
                Problem::TooManyEmailChanges,
            ],
        },
    },
    Route {
        method: Method::Post,
        path: "/v1/me/deletion",
        handler: |route| route.to(request_deletion),
        doc: || Op {
            summary: "Request deletion (erased 30 days later)",
            tag: "me",
            auth: Auth::FreshSession,
            params: vec![],
            body: Some(obj(&[], json!({ "confirm_forfeit_balance": boolean() }))),
            success: (202, "Requested", Some(schema_ref("Me"))),
            errors: vec![
                Problem::InvalidJson,
                Problem::UnreadableBody,
                Problem::NotFound,
                Problem::ActiveOrders,
                Problem::BalanceNotForfeited,
                Problem::DeletionAlreadyRequested,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Delete,
        path: "/v1/me/deletion",
        handler: |route| route.to(withdraw_deletion),
        doc: || Op {
            summary: "Withdraw the deletion request (session, or credentials in the body)",
            tag: "me",
            auth: Auth::Session,
            params: vec![],
            body: Some(schema_ref("SignIn")),
            success: (200, "Withdrawn", Some(schema_ref("Me"))),
            errors: vec![
                Problem::InvalidJson,
                Problem::UnreadableBody,
                Problem::InvalidCredentials,
                Problem::TwoFactorRequired,
                Problem::TwoFactorCodeInvalid,
                Problem::AccountDisabled,
                Problem::NotFound,
                Problem::NoDeletionPending,
                Problem::DeletionWindowOver,
                Problem::Contention,
            ],
        },
    },
    Route {
        method: Method::Put,
        path: "/v1/me/objection",
        handler: |route| route.to(set_objection),
        doc: || Op {
            summary: "Object to non-essential processing (or withdraw the objection)",
            tag: "me",
            auth: Auth::Customer(ApiKeyScope::Full),
            params: vec![],
            body: Some(obj(&["object"], json!({ "object": boolean() }))),
            success: (200, "Recorded", Some(schema_ref("Me"))),
            errors: vec![Problem::InvalidJson, Problem::NotFound, Problem::Contention],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/me/export",
        handler: |route| route.to(export),
        doc: || Op {
            summary: "Export all data (portability)",
            tag: "me",
            auth: Auth::Customer(ApiKeyScope::Full),
            params: vec![],
            body: None,
            success: (200, "Export (docs/EXPORT.md)", Some(schema_ref("Export"))),
            errors: vec![
                Problem::ExportInProgress,
                Problem::NotFound,
                Problem::Unavailable,
            ],
        },
    },
];

/// The version of the export document's schema (`docs/EXPORT.md`).
pub const EXPORT_SCHEMA_VERSION: u32 = 1;
/// Exports streaming at once, server-wide; one more is answered 503.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;
/// Seconds a reader may take no chunk of its export: then the export stops
/// (the document ends unfinished) and its slot is free again.
pub const EXPORT_IDLE_READER_TIMEOUT_S: u64 = 30;
/// Chunks (one page of a list each) produced ahead of a slow reader.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 2;
/// Longest wait for the read models to catch up with the log before an export.
const EXPORT_CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Seconds a refused export is told to wait before trying again.
const EXPORT_RETRY_AFTER_S: u64 = 5;

/// The exports streaming now: at most [`MAX_CONCURRENT_EXPORTS`] server-wide
/// and one per account, each dropped when its reader is idle too long. (Part
/// of the shared state, so a test can make the idle time short.)
pub struct Exports {
    slots: Arc<Semaphore>,
    accounts: Arc<Mutex<HashSet<AccountId>>>,
    idle_reader_timeout: Duration,
}

/// An export's place among those running; freed when dropped.
struct ExportSlot {
    account: AccountId,
    accounts: Arc<Mutex<HashSet<AccountId>>>,
    _slot: OwnedSemaphorePermit,
}

impl Exports {
    /// `idle_reader_timeout`: [`EXPORT_IDLE_READER_TIMEOUT_S`] in service.
    pub fn new(idle_reader_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXPORTS)),
            accounts: Arc::new(Mutex::new(HashSet::new())),
            idle_reader_timeout,
        }
    }

    /// A slot for `account`'s export: 409 while another of its exports runs,
    /// 503 while the server runs as many as it may.
    fn start(&self, account: AccountId) -> Result<ExportSlot, ApiError> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if accounts.contains(&account) {
            return Err(ApiError::new(
                Problem::ExportInProgress,
                "an export of this account is running; finish or close it first",
            ));
        }
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable("too many exports are running; try again shortly")
                .with_retry_after(EXPORT_RETRY_AFTER_S)
        })?;
        accounts.insert(account);
        Ok(ExportSlot {
            account,
            accounts: self.accounts.clone(),
            _slot: slot,
        })
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.account);
    }
}

// ---------------------------------------------------------------------------
// The account
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct DeletionView {
    requested_at: String,
    /// When the personal data is erased; the deletion can be withdrawn until then.
    erase_due_at: String,
    /// The wallet's available balance now: what moves to unclaimed balances
    /// at the erasure.
    forfeit_balance: String,
}

/// The account as its holder sees it (also the `account` of the export).
#[derive(Serialize)]
struct MeView {
    id: String,
    /// `None` once erased.
    email: Option<String>,
    verified: bool,
    verified_at: Option<String>,
    /// `active` or `deletion_pending`.
    status: &'static str,
    deletion: Option<DeletionView>,
    objection: bool,
    created_at: String,
}

/// The account's view, with what a pending deletion forfeits: the wallet's
/// available balance, read from the log.
async fn me_view_of(state: &AppState, account: &Account) -> Result<Option<MeView>, ApiError> {
    let forfeit = match (account.status, account.id) {
        (AccountStatus::DeletionPending { .. }, Some(id)) => {
            state.commerce.wallet(Owner::Account(id)).await?.available
        }
        _ => Micros(0),
    };
    Ok(me_view(account, forfeit))
}

fn me_view(account: &Account, forfeit: Micros) -> Option<MeView> {
    let (id, created_at) = (account.id?, account.registered_at?);
    let (status, deletion) = match account.status {
        AccountStatus::Unregistered => return None,
        AccountStatus::Active => ("active", None),
        AccountStatus::DeletionPending {
            requested_at,
            erase_due_at,
        } => (
            "deletion_pending",
            Some(DeletionView {
                requested_at: rfc3339(requested_at),
                erase_due_at: rfc3339(erase_due_at),
                forfeit_balance: forfeit.to_string(),
            }),
        ),
    };
    Some(MeView {
        id: id.to_string(),
        email: account.email.plain().cloned(),
        verified: account.verified,
        verified_at: account.verified_at.map(rfc3339),
        status,
        deletion,
        objection: account.objection,
        created_at: rfc3339(created_at),
    })
}

/// The account as it is now, as a response with `status`.
async fn respond_with_me(
    state: &AppState,
    account: AccountId,
    mut response: actix_web::HttpResponseBuilder,
) -> Result<HttpResponse, ApiError> {
    let loaded = state.accounts.load_account(account).await?;
    let view = me_view_of(state, &loaded.state)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(response.json(view))
}

async fn me(state: web::Data<AppState>, holder: Holder) -> Result<HttpResponse, ApiError> {
    respond_with_me(&state, holder.account, HttpResponse::Ok()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailCorrection {
    email: String,
}

/// Corrects the address. The new one must be free (409 `email_taken`), is
/// unverified from now on, and gets a verification mail; the old one no longer
/// logs in, and is mailed a link that undoes the change for 7 days.
async fn correct_email(
    state: web::Data<AppState>,
    customer: Customer,
    body: ObjectBody<EmailCorrection>,
) -> Result<HttpResponse, ApiError> {
    let correction = body.into_inner();
    let email = Email::parse(&correction.email)?;
    let change = state
        .accounts
        .change_email(customer.account, email.as_str())
        .await?;
    state.mail_verification(
        customer.account,
        email.as_str(),
        change.verification_token.expose(),
    );
    state.mail_recovery(RecoveryKind::EmailUndo, &change.undo);
    respond_with_me(&state, customer.account, HttpResponse::Ok()).await
}

// ---------------------------------------------------------------------------
// Deletion and objection
// ---------------------------------------------------------------------------

/// What `POST /v1/me/deletion` may carry: the confirmation that the wallet's
/// available balance is forfeited.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletionRequest {
    #[serde(default)]
    confirm_forfeit_balance: bool,
}

/// Requests the deletion: 202 with the account, whose `deletion.erase_due_at`
/// says when the data goes and `deletion.forfeit_balance` what moves to
/// unclaimed balances then. 409 `active_orders` while an order is not final,
/// 409 `balance_not_forfeited` while the wallet has money available and the
/// body does not confirm it (`{"confirm_forfeit_balance": true}`; no body,
/// an empty one and `{}` confirm nothing), 409 `deletion_already_requested`
/// if it is pending already.
async fn request_deletion(
    state: web::Data<AppState>,
    holder: Holder,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, MAX_JSON_BYTES).await?;
    let request: DeletionRequest = optional_object(&req, &body)?.unwrap_or_default();
    let requested = state
        .accounts
        .request_deletion(holder.account, request.confirm_forfeit_balance)
        .await;
    if let Err(ServiceError::Refused(AccountError::ActiveOrders)) = requested {
        return Err(active_orders_problem(&state, holder.account).await);
    }
    requested?;
    respond_with_me(&state, holder.account, HttpResponse::Accepted()).await
}

/// 409 `active_orders`, naming the orders that are still active.
async fn active_orders_problem(state: &AppState, account: AccountId) -> ApiError {
    let active = match state.commerce.active_orders(Owner::Account(account)).await {
        Ok(active) => active,
        Err(e) => return e.into(),
    };
    let ids: Vec<String> = active.iter().map(|(id, _)| id.to_string()).collect();
    ApiError::new(
        Problem::ActiveOrders,
        format!(
            "{} order(s) still active ({}): complete or cancel them, or let them expire, \
             then ask again",
            ids.len(),
            ids.join(", ")
        ),
    )
    .with_member("active_orders", serde_json::json!(ids))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderCredentials {
    email: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

/// Withdraws a pending deletion, within its window (409 `deletion_window_over`
/// after; 409 `no_deletion_pending` if none is). Authenticated by a session of
/// the account, or, with no session, by `{"email", "password"}` in the body
/// (and `totp` or `recovery_code` when two-factor is on, as at sign-in).
async fn withdraw_deletion(
    state: web::Data<AppState>,
    holder: Result<Holder, ApiError>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(payload, MAX_JSON_BYTES).await?;
    let credentials = optional_object::<HolderCredentials>(&req, &body)?;
    let account = if let Some(credentials) = credentials {
        super::accounts::charge_sign_in_to(&req, &credentials.email)?;
        let second =
            super::accounts::second_factor_of(&credentials.totp, &credentials.recovery_code)?;
        state
            .accounts
            .authenticate_holder_with(&credentials.email, &credentials.password, second.as_ref())
            .await
            .inspect_err(|e| super::accounts::charge_wrong_code(&req, &credentials.email, e))?
    } else {
        // Without credentials in the body, the caller's own refusal (an API
        // key is told the route takes a session).
        holder?.account
    };
    state.accounts.withdraw_deletion(account).await?;
    respond_with_me(&state, account, HttpResponse::Ok()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Objection {
    object: bool,
}

/// Sets (`true`) or lifts (`false`) the objection to non-essential processing;
/// setting it as it already is changes nothing.
async fn set_objection(
    state: web::Data<AppState>,
    customer: Customer,
    body: ObjectBody<Objection>,
) -> Result<HttpResponse, ApiError> {
    let objection = body.into_inner();
    state
        .accounts
        .set_objection(customer.account, objection.object)
        .await?;
    respond_with_me(&state, customer.account, HttpResponse::Ok()).await
}

// ---------------------------------------------------------------------------
// The export
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct ApiKeyExport {
    id: String,
    /// The public first characters of the key's secret part.
    prefix: String,
    scope: &'static str,
    label: Option<String>,
    allowed_ips: Vec<String>,
    created_at: String,
    revoked_at: Option<String>,
}

#[derive(Serialize)]
struct PaymentExport {
    network: String,
    tx_hash: String,
    amount: String,
    /// `exact`, `partial` or `over` (against the invoice).
    outcome: &'static str,
    late: bool,
    at: String,
}

#[derive(Serialize)]
struct DepositExport {
    id: String,
    amount: String,
    paid: String,
    status: &'static str,
    failure: Option<String>,
    created_at: String,
    expires_at: String,
    payment_count: u32,
    payments: Vec<PaymentExport>,
}

fn deposit_export(d: &DepositRecord) -> DepositExport {
    DepositExport {
        id: d.deposit.to_string(),
        amount: d.invoiced.to_string(),
        paid: d.paid.to_string(),
        status: match d.status {
            DepositStatus::Waiting => "waiting",
            DepositStatus::Paid => "paid",
            DepositStatus::Failed => "failed",
        },
        failure: d.failure.clone(),
        created_at: rfc3339(d.requested_at),
        expires_at: rfc3339(d.expires_at),
        payment_count: d.payment_count,
        payments: d
            .payments
            .iter()
            .map(|p| PaymentExport {
                network: p.network.clone(),
                tx_hash: p.tx_hash.clone(),
                amount: p.amount.to_string(),
                outcome: match p.outcome {
                    DepositOutcome::Exact => "exact",
                    DepositOutcome::Partial => "partial",
                    DepositOutcome::Over => "over",
                },
                late: p.late,
                at: rfc3339(p.at),
            })
            .collect(),
    }
}

/// Where an order's code stands in the export.
#[derive(Serialize)]
struct CodeExport {
    /// `none` (no code received), `awaiting_first_read` (received, not yet
    /// delivered: the export does not deliver it), `readable` (delivered, within
    /// the delivery window: `value` and `text` are given) or `erased`.
    state: &'static str,
    value: Option<String>,
    text: Option<String>,
    received_at: Option<String>,
}

#[derive(Serialize)]
struct OrderExport {
    id: String,
    status: &'static str,
    service: Option<String>,
    country: Option<String>,
    channel: Option<&'static str>,
    phone: Option<String>,
    price: String,
    placed_at: String,
    expires_at: String,
    number_assigned_at: Option<String>,
    provider: Option<String>,
    codes_received: u32,
    first_code_at: Option<String>,
    delivered_at: Option<String>,
    delivered_via: Option<&'static str>,
    resend_requested: bool,
    closed_at: Option<String>,
    cancel_reason: Option<&'static str>,
    code: CodeExport,
}

fn order_export(o: &OrderView, code: CodeExport) -> OrderExport {
    let details = o.details.plain();
    OrderExport {
        id: o.order.to_string(),
        status: status_name(o.status),
        service: details.map(|d| d.service.as_str().to_owned()),
        country: details.map(|d| d.country.as_str().to_owned()),
        channel: details.map(|d| match d.channel {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }),
        phone: o.phone.plain().cloned(),
        price: o.price.to_string(),
        placed_at: rfc3339(o.placed_at),
        expires_at: rfc3339(o.expires_at),
        number_assigned_at: o.assigned_at.map(rfc3339),
        provider: o.provider.clone(),
        codes_received: o.codes_received,
        first_code_at: o.first_code_at.map(rfc3339),
        delivered_at: o.delivered_at.map(rfc3339),
        delivered_via: o.delivered_via.map(|via| match via {
            DeliveryChannel::Api => "api",
            DeliveryChannel::CompatibleApi => "compatible_api",
            DeliveryChannel::Webhook => "webhook",
            DeliveryChannel::Tracking => "tracking",
        }),
        resend_requested: o.resend_requested,
        closed_at: o.closed_at.map(rfc3339),
        cancel_reason: o.cancel_reason.map(|r| match r {
            CancelReason::Customer => "customer",
            CancelReason::NoNumbers => "no_numbers",
        }),
        code,
    }
}

/// The code of an order as the export shows it: its value only while the owner
/// could read it again without side effects (delivered, within the delivery
/// window, key not erased). A code not yet delivered is not shown: its first
/// read is the delivery that captures the payment, which an export must not do.
async fn code_export(
    state: &AppState,
    o: &OrderView,
    now: DateTime<Utc>,
) -> Result<CodeExport, ApiError> {
    let mut code = CodeExport {
        state: "none",
        value: None,
        text: None,
        received_at: None,
    };
    if o.codes_received == 0 {
        return Ok(code);
    }
    code.state = "erased";
    if o.status == OrderStatus::CodeReceived {
        code.state = "awaiting_first_read";
        return Ok(code);
    }
    let window = state.commerce.policy().delivery_window;
    let within_window = o.delivered_at.is_some_and(|at| now < at + window);
    if !within_window
        || !matches!(
            o.status,
            OrderStatus::CodeDelivered | OrderStatus::Completed
        )
    {
        return Ok(code);
    }
    let order = state.commerce.order(o.order).await?;
    let Some(received) = order.code.as_ref() else {
        return Ok(code);
    };
    if order.erased_codes.contains(&received.sequence) {
        return Ok(code);
    }
    if let Personal::Plain(CodePii { code: value, text }) = &received.code {
        code.state = "readable";
        code.value = Some(value.clone());
        code.text = Some(text.clone());
        code.received_at = Some(rfc3339(received.at));
    }
    Ok(code)
}

/// Why an export stopped after its first byte: the connection is closed without
/// the document's end, so a reader sees it is incomplete.
#[derive(Debug, thiserror::Error)]
#[error("the export stopped before its end")]
struct ExportStopped;

/// A piece of the document; the last one ends it.
struct Chunk {
    bytes: Bytes,
    last: bool,
}

/// The streamed body: chunks from the producer task, in order. When the
/// producer stops before the last one (a failed read, an idle reader), the
/// body ends with an error: the connection is closed without the end of the
/// chunked encoding, and the reader knows the document is cut.
struct ExportBody {
    chunks: mpsc::Receiver<Chunk>,
    complete: bool,
}

impl MessageBody for ExportBody {
    type Error = ExportStopped;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => {
                self.complete |= chunk.last;
                Poll::Ready(Some(Ok(chunk.bytes)))
            }
            Poll::Ready(None) if self.complete => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(ExportStopped))),
        }
    }
}

/// Runs `produce` on a task of its own, which holds `slot` until it ends,
/// and answers the body it writes; the reader must take each chunk within
/// `idle_reader_timeout`.
fn stream_export<F>(
    slot: ExportSlot,
    idle_reader_timeout: Duration,
    produce: impl FnOnce(Sender) -> F,
) -> ExportBody
where
    F: std::future::Future<Output = ()> + 'static,
{
    let (chunks, receiver) = mpsc::channel(EXPORT_CHUNKS_IN_FLIGHT);
    let producing = produce(Sender {
        chunks,
        idle_reader_timeout,
    });
    actix_web::rt::spawn(async move {
        producing.await;
        drop(slot);
    });
    ExportBody {
        chunks: receiver,
        complete: false,
    }
}

/// The export's header: everything up to the first ledger entry.
#[derive(Serialize)]
struct ExportHeader {
    schema_version: u32,
    generated_at: String,
    as_of_log_position: u64,
    account: MeView,
    api_keys: Vec<ApiKeyExport>,
    webhook: Option<WebhookExport>,
}

/// The account's webhook endpoint: the URL, never its signing secret.
#[derive(Serialize)]
struct WebhookExport {
    url: String,
    set_at: String,
}

#[derive(Serialize)]
struct WalletHeader {
    currency: &'static str,
    balance: String,
    held: String,
    available: String,
}

/// Everything held about me as one JSON document (`docs/EXPORT.md`), streamed
/// one list page at a time. 409 while another export of the account streams;
/// 503 (with `Retry-After`) while [`MAX_CONCURRENT_EXPORTS`] are streaming or
/// the read models lag.
async fn export(state: web::Data<AppState>, holder: Holder) -> Result<HttpResponse, ApiError> {
    let slot = state.exports.start(holder.account)?;
    // Read-your-writes: the read models hold everything the log held just now.
    let position = state.log.head();
    for name in [
        nexus_projections::orders::NAME,
        nexus_projections::wallets::NAME,
    ] {
        state
            .runner
            .wait_for(Some(name), position, EXPORT_CATCH_UP_WAIT)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "export: the read models lag");
                ApiError::unavailable("the read models are catching up; try again shortly")
                    .with_retry_after(EXPORT_RETRY_AFTER_S)
            })?;
    }
    let loaded = state.accounts.load_account(holder.account).await?;
    let account = me_view_of(&state, &loaded.state)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let api_keys = loaded
        .state
        .api_key_summaries()
        .into_iter()
        .map(|k| ApiKeyExport {
            id: k.id.to_string(),
            prefix: k.prefix,
            scope: k.scope.name(),
            label: k.label,
            allowed_ips: k.allowed_ips.iter().map(|r| r.to_string()).collect(),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        })
        .collect();
    let webhook = loaded.state.webhook.as_ref().and_then(|w| {
        w.pii.plain().map(|pii| WebhookExport {
            url: pii.url.clone(),
            set_at: rfc3339(w.set_at),
        })
    });
    let header = ExportHeader {
        schema_version: EXPORT_SCHEMA_VERSION,
        generated_at: rfc3339(Utc::now()),
        as_of_log_position: position,
        account,
        api_keys,
        webhook,
    };
    let task_state = state.clone();
    let owner = Owner::Account(holder.account);
    let body = stream_export(
        slot,
        state.exports.idle_reader_timeout,
        |sender| async move {
            produce_export(&task_state, owner, header, &sender).await;
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"nexus-export-{}.json\"",
                holder.account
            ),
        ))
        .body(body))
}

/// Why the producer stopped early; the body ends with an error either way.
#[derive(Debug)]
enum Stop {
    /// The reader went away: nothing to report.
    Gone,
    /// The reader took no chunk for [`Exports::idle_reader_timeout`].
    Idle,
    /// A read failed: logged.
    Failed(String),
}

impl From<QueryError> for Stop {
    fn from(e: QueryError) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl From<serde_json::Error> for Stop {
    fn from(e: serde_json::Error) -> Self {
        Stop::Failed(e.to_string())
    }
}

/// The producer's end of an export.
struct Sender {
    chunks: mpsc::Sender<Chunk>,
    idle_reader_timeout: Duration,
}

async fn produce_export(state: &AppState, owner: Owner, header: ExportHeader, sender: &Sender) {
    match write_export(state, owner, header, sender).await {
        Ok(()) | Err(Stop::Gone) => {}
        Err(Stop::Idle) => tracing::info!("export: the reader took nothing for too long; stopped"),
        Err(Stop::Failed(cause)) => {
            tracing::error!(cause = %cause, "export: stopped before its end");
        }
    }
}

async fn send(sender: &Sender, chunk: Vec<u8>) -> Result<(), Stop> {
    send_chunk(sender, chunk, false).await
}

/// Sends the end of the document.
async fn send_last(sender: &Sender, chunk: Vec<u8>) -> Result<(), Stop> {
    send_chunk(sender, chunk, true).await
}

/// A full channel means the reader takes nothing: past the idle time the
/// export stops rather than hold its slot for a reader that may never read.
async fn send_chunk(sender: &Sender, chunk: Vec<u8>, last: bool) -> Result<(), Stop> {
    let chunk = Chunk {
        bytes: Bytes::from(chunk),
        last,
    };
    match sender
        .chunks
        .send_timeout(chunk, sender.idle_reader_timeout)
        .await
    {
        Ok(()) => Ok(()),
        Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Stop::Gone),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Stop::Idle),
    }
}

/// Appends `items` to a JSON array being written, after a comma unless first.
fn push_items<T: Serialize>(
    out: &mut Vec<u8>,
    first: &mut bool,
    items: impl IntoIterator<Item = T>,
) -> Result<(), Stop> {
    for item in items {
        if !std::mem::take(first) {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &item)?;
    }
    Ok(())
}

/// Writes every page of a newest-first list, one chunk per page.
async fn write_list<T, U: Serialize>(
    sender: &Sender,
    mut fetch: impl FnMut(Option<Cursor>) -> Result<Page<T>, QueryError>,
    to_export: impl Fn(&T) -> U,
) -> Result<(), Stop> {
    let mut first = true;
    let mut cursor = None;
    loop {
        let page = fetch(cursor)?;
        let mut chunk = Vec::new();
        push_items(&mut chunk, &mut first, page.items.iter().map(&to_export))?;
        if !chunk.is_empty() {
            send(sender, chunk).await?;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

async fn write_export(
    state: &AppState,
    owner: Owner,
    header: ExportHeader,
    sender: &Sender,
) -> Result<(), Stop> {
    let wallets = state
        .read_models
        .wallets()
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let orders = state
        .read_models
        .orders()
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let balance = wallets.balance(&owner)?;

    // `{…header…,"wallet":{…,"entries":[`
    let mut chunk = serde_json::to_vec(&header)?;
    chunk.pop(); // the header's closing brace: the document goes on
    chunk.extend_from_slice(b",\"wallet\":");
    let mut wallet = serde_json::to_vec(&WalletHeader {
        currency: "USD",
        balance: balance.balance().to_string(),
        held: balance.held.to_string(),
        available: balance.available.to_string(),
    })?;
    wallet.pop();
    chunk.extend_from_slice(&wallet);
    chunk.extend_from_slice(b",\"entries\":[");
    send(sender, chunk).await?;

    write_list(
        sender,
        |cursor| wallets.ledger(&owner, cursor, MAX_PAGE_SIZE),
        ledger_entry,
    )
    .await?;
    send(sender, b"]},\"deposits\":[".to_vec()).await?;

    write_list(
        sender,
        |cursor| wallets.deposits(&owner, cursor, MAX_PAGE_SIZE),
        deposit_export,
    )
    .await?;
    send(sender, b"],\"orders\":[".to_vec()).await?;

    // Orders: a code may need the order's stream, so this list is written here.
    let mut first = true;
    let mut cursor = None;
    loop {
        let page = orders.by_owner(&owner, cursor, MAX_PAGE_SIZE)?;
        let now = Utc::now();
        let mut items = Vec::with_capacity(page.items.len());
        for o in &page.items {
            items.push(order_export(o, code_export(state, o, now).await?));
        }
        let mut chunk = Vec::new();
        push_items(&mut chunk, &mut first, items)?;
        if !chunk.is_empty() {
            send(sender, chunk).await?;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    send_last(sender, b"],\"complete\":true}".to_vec()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next piece of a body, as the server would poll it.
    async fn next(body: &mut ExportBody) -> Option<Result<Bytes, ExportStopped>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).await
    }

    /// Waits, within a bound, until `account` may start an export again.
    async fn wait_free(exports: &Exports, account: AccountId) -> ExportSlot {
        for _ in 0..200 {
            if let Ok(slot) = exports.start(account) {
                return slot;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the export slot was never freed");
    }

    fn deletion_request(content_type: Option<&str>, body: &str) -> Result<bool, ApiError> {
        let mut req = actix_web::test::TestRequest::post();
        if let Some(content_type) = content_type {
            req = req.insert_header(("content-type", content_type));
        }
        let request: DeletionRequest =
            optional_object(&req.to_http_request(), body.as_bytes())?.unwrap_or_default();
        Ok(request.confirm_forfeit_balance)
    }

    #[test]
    fn a_deletion_request_confirms_the_forfeit_only_when_it_says_true() {
        let json = Some("application/json");
        // No body at all (with or without a content type), `{}` and false
        // confirm nothing.
        for (content_type, body) in [(None, ""), (json, ""), (json, " \n"), (json, "{}")] {
            assert_eq!(deletion_request(content_type, body), Ok(false), "{body:?}");
        }
        let off = r#"{"confirm_forfeit_balance": false}"#;
        assert_eq!(deletion_request(json, off), Ok(false));
        let on = r#"{"confirm_forfeit_balance": true}"#;
        assert_eq!(deletion_request(json, on), Ok(true));
        // A body is JSON, an object, of the known field with a boolean: an
        // amount or a destination sent along is refused (what moves, and
        // where, is the ledger's to say, never the client's).
        for (content_type, body) in [
            (
                json,
                r#"{"confirm_forfeit_balance": true, "forfeit_balance": "1000.00"}"#,
            ),
            (
                json,
                r#"{"confirm_forfeit_balance": true, "to": "another-account"}"#,
            ),
            (None, on),
            (Some("text/plain"), on),
            (json, "[true]"),
            (json, r#"{"confirm_forfeit_balance": "true"}"#),
            (json, r#"{"confirm": true}"#),
            (json, "true"),
        ] {
            let refused = deletion_request(content_type, body).unwrap_err();
            assert_eq!(refused.problem, Problem::InvalidJson, "{body}");
        }
    }

    #[test]
    fn an_unconfirmed_balance_is_refused_with_its_amount() {
        let refused = ApiError::from(AccountError::BalanceNotForfeited {
            available: Micros(9_610_000),
        });
        assert_eq!(refused.problem, Problem::BalanceNotForfeited);
        assert_eq!(refused.problem.status().as_u16(), 409);
        assert_eq!(refused.members["forfeit_balance"], "9.610000");
        assert!(
            refused.detail.contains("9.610000 USD"),
            "{}",
            refused.detail
        );
        assert!(
            refused
                .detail
                .contains(r#"{"confirm_forfeit_balance": true}"#),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn one_export_at_a_time_per_account_and_a_few_server_wide() {
        let exports = Exports::new(Duration::from_secs(EXPORT_IDLE_READER_TIMEOUT_S));
        let alice = AccountId::new();
        let running = exports.start(alice).unwrap();
        let refused = exports.start(alice).err().unwrap();
        assert_eq!(refused.problem, Problem::ExportInProgress);
        assert_eq!(refused.problem.status().as_u16(), 409);
        // Another account's export is not held up by Alice's.
        let others: Vec<ExportSlot> = (1..MAX_CONCURRENT_EXPORTS)
            .map(|_| exports.start(AccountId::new()).unwrap())
            .collect();
        // The server is full: 503 with a time to come back, for anyone.
        let full = exports.start(AccountId::new()).err().unwrap();
        assert_eq!(full.problem, Problem::Unavailable);
        assert_eq!(full.retry_after_s, Some(EXPORT_RETRY_AFTER_S));
        // Alice's export ends: she may start another.
        drop(running);
        drop(others);
        let again = exports.start(alice).unwrap();
        assert_eq!(
            exports.start(alice).err().unwrap().problem,
            Problem::ExportInProgress
        );
        drop(again);
    }

    #[actix_web::test]
    async fn a_reader_that_takes_nothing_loses_its_export_and_sees_it_cut() {
        let exports = Exports::new(Duration::from_millis(100));
        let alice = AccountId::new();
        let slot = exports.start(alice).unwrap();
        let (outcome, stopped) = tokio::sync::oneshot::channel();
        let mut body = stream_export(slot, exports.idle_reader_timeout, |sender| async move {
            let mut sent = 0;
            let stop = loop {
                match send(&sender, b"[".to_vec()).await {
                    Ok(()) => sent += 1,
                    Err(stop) => break stop,
                }
                if sent == 100 {
                    break Stop::Failed("the reader was never idle".into());
                }
            };
            let _ = outcome.send((sent, stop));
        });
        // Nobody reads: the producer fills the chunks in flight, then stops.
        let (sent, stop) = tokio::time::timeout(Duration::from_secs(10), stopped)
            .await
            .expect("the producer stops")
            .unwrap();
        assert_eq!(sent, EXPORT_CHUNKS_IN_FLIGHT);
        assert!(matches!(stop, Stop::Idle), "{stop:?}");
        // Its slot is free again for the account.
        drop(wait_free(&exports, alice).await);
        // A reader that comes back gets what was produced, then an error, not
        // a clean end: the document is visibly cut.
        for _ in 0..EXPORT_CHUNKS_IN_FLIGHT {
            assert_eq!(next(&mut body).await.unwrap().unwrap(), Bytes::from("["));
        }
        assert!(matches!(next(&mut body).await, Some(Err(ExportStopped))));
    }

    #[actix_web::test]
    async fn a_finished_export_ends_cleanly_and_frees_its_slot() {
        let exports = Exports::new(Duration::from_millis(100));
        let alice = AccountId::new();
        let slot = exports.start(alice).unwrap();
        let mut body = stream_export(slot, exports.idle_reader_timeout, |sender| async move {
            send(&sender, b"[1".to_vec()).await.unwrap();
            send_last(&sender, b"]".to_vec()).await.unwrap();
        });
        assert_eq!(next(&mut body).await.unwrap().unwrap(), Bytes::from("[1"));
        assert_eq!(next(&mut body).await.unwrap().unwrap(), Bytes::from("]"));
        assert!(next(&mut body).await.is_none());
        drop(wait_free(&exports, alice).await);
    }
}
