//! One trait for a number provider, whatever its wire protocol.
//!
//! The lifecycle is normalized (see the upstream fact sheet): a purchase is
//! `Waiting`, then `CodeReceived` (possibly several revisions after resends), and
//! ends `Completed`, `Cancelled` or `Expired`. Every upstream error maps to one
//! [`UpstreamError`]; whether an error proves that nothing was bought decides
//! whether a purchase may be retried elsewhere or must be reconciled.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};

use crate::inbound::{InboundError, InboundHint, InboundRequest};

/// What every upstream call returns: boxed, so upstreams can sit behind `dyn`.
pub type UpstreamFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + Send + 'a>>;

/// What to buy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuyRequest {
    pub service: ServiceCode,
    pub country: CountryCode,
    pub channel: Channel,
    /// The most Nexus will pay the upstream (its cost, not the sell price).
    pub max_cost: Option<Micros>,
    /// Nexus's order id: sent as the idempotency key where the upstream takes
    /// one, so a retried buy cannot buy twice.
    pub idempotency_key: String,
}

/// An upstream's handle on a purchase, opaque to everyone else (an activation id,
/// or for PVAPins the tuple that addresses the number). At most 512 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle(pub String);

/// A number bought.
#[derive(Clone, PartialEq, Eq)]
pub struct Purchase {
    pub handle: Handle,
    /// Digits only, with the country's dial code, no `+`.
    pub phone: String,
    /// What the upstream charges (or will charge), in micro-dollars.
    pub cost: Micros,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Purchase {
    /// The phone number is personal data: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purchase")
            .field("handle", &self.handle)
            .field("cost", &self.cost)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The normalized lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamState {
    Waiting,
    CodeReceived,
    Completed,
    Cancelled,
    Expired,
}

/// A status read.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: UpstreamState,
    /// The code, if the upstream (or Nexus's extractor over the text) found one.
    pub code: Option<String>,
    /// The whole SMS text or call transcript.
    pub text: Option<String>,
    /// Changes with every new message (after a resend): the upstream's revision,
    /// or a counter / timestamp-derived number kept by the adapter.
    pub revision: u64,
    /// The code came by a voice call.
    pub by_call: bool,
}

impl std::fmt::Debug for Snapshot {
    /// Codes and texts are secrets: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("state", &self.state)
            .field("has_code", &self.code.is_some())
            .field("revision", &self.revision)
            .field("by_call", &self.by_call)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// Refused for now; try again after the hint, if one was given.
    TooEarly {
        retry_after: Option<Duration>,
    },
    /// A code is already there: finish instead.
    AlreadyHasCode,
    /// Already closed (completed, cancelled or expired).
    AlreadyClosed,
}

/// What an upstream offers for a (service, country).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub service: ServiceCode,
    pub country: CountryCode,
    pub cost: Micros,
    /// Numbers really available.
    pub stock: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("no numbers available")]
    NoNumbers,
    #[error("the upstream account has no balance")]
    NoBalance,
    #[error("the upstream refused the API key")]
    BadKey,
    #[error("the upstream does not know this service")]
    BadService,
    #[error("the upstream does not know this country")]
    BadCountry,
    #[error("the price cap is below the upstream's price")]
    PriceTooHigh { min: Option<Micros> },
    #[error("the upstream account is banned")]
    Banned { retry_after: Option<Duration> },
    #[error("rate limited by the upstream")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the upstream does not know this purchase")]
    NotFound,
    /// Timeouts, connection failures, 5xx: the outcome of the call is unknown.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// An answer that fits no known shape (logged without secrets by the adapter).
    #[error("malformed upstream answer: {0}")]
    Malformed(String),
}

impl UpstreamError {
    /// True when the error proves the call did nothing: a failed buy may then be
    /// tried at another upstream. False for unknown outcomes (timeouts, 5xx,
    /// garbage), where a buy may have gone through and must be reconciled.
    pub fn is_definite(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Unavailable(_) | UpstreamError::Malformed(_)
        )
    }
}

/// A number provider.
pub trait Upstream: Send + Sync {
    /// The configured name, shown on orders and in health views.
    fn name(&self) -> &str;

    /// Prices and stock, optionally for one service and/or country.
    fn offers<'a>(
        &'a self,
        service: Option<&'a ServiceCode>,
        country: Option<CountryCode>,
    ) -> UpstreamFuture<'a, Vec<Offer>>;

    /// The upstream account's balance.
    fn balance(&self) -> UpstreamFuture<'_, Micros>;

    fn buy<'a>(&'a self, request: &'a BuyRequest) -> UpstreamFuture<'a, Purchase>;

    fn poll<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Snapshot>;

    /// Asks for another SMS; some upstreams hand back a new handle.
    fn resend<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, Handle>;

    /// Marks the activation done (no refund); a no-op where unsupported.
    fn finish<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, ()>;

    fn cancel<'a>(&'a self, handle: &'a Handle) -> UpstreamFuture<'a, CancelOutcome>;

    /// After a buy whose outcome is unknown (timeout, 5xx): the purchase it made,
    /// if any, so that it is used or cancelled, never left charged. Upstreams with
    /// idempotency keys replay the buy with the same key; others search their
    /// active activations. The default says it cannot tell.
    fn find_purchase<'a>(
        &'a self,
        request: &'a BuyRequest,
    ) -> UpstreamFuture<'a, Option<Purchase>> {
        let _ = request;
        Box::pin(async {
            Err(UpstreamError::Unavailable(
                "this upstream cannot reconcile a purchase".into(),
            ))
        })
    }

    /// The purchases this upstream account holds as active, at most `limit`,
    /// for the orphan sweep. `None`: this upstream cannot list them (the
    /// default).
    fn active_purchases(&self, limit: usize) -> UpstreamFuture<'_, Option<Vec<Handle>>> {
        let _ = limit;
        Box::pin(async { Ok(None) })
    }

    /// Verifies and reads a push (webhook) from this upstream; `Ok(None)` for a
    /// verified push that concerns no purchase (a test event). The default: this
    /// upstream sends no pushes.
    fn inbound(&self, request: &InboundRequest<'_>) -> Result<Option<InboundHint>, InboundError> {
        let _ = request;
        Err(InboundError::NotSupported)
    }
}
