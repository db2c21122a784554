//! One trait for a number provider, whatever its wire protocol.
//!
//! The lifecycle is normalized (see the upstream fact sheet): a purchase is
//! `Waiting`, then `CodeReceived` (possibly several revisions after resends), and
//! ends `Completed`, `Cancelled` or `Expired`. Every upstream error maps to one
//! [`UpstreamError`]; whether an error proves that nothing was bought decides
//! whether a purchase may be retried elsewhere or must be reconciled.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, ServiceCode};

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

/// An open activation an upstream lists, read to find the purchase of a buy
/// whose answer was lost (see [`Upstream::open_purchases_like`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedPurchase {
    pub purchase: Purchase,
    /// When the upstream says it was bought, in UTC. `None` when the time is
    /// missing, unreadable, or written without a zone whose offset is not
    /// known yet (see [`ZonelessClock`]): such an activation is never claimed.
    pub bought_at: Option<DateTime<Utc>>,
}

/// How far an upstream that writes times without a zone (provider-local, such
/// as HeroSMS's `activationTime` or Proxnum's `date_created`) is from UTC,
/// learnt from its own answers: a buy's answer carries the time the upstream
/// wrote "now", and the adapter receives it within seconds. Zone offsets are
/// whole quarters of an hour, so the difference is rounded to the nearest 15
/// minutes, which also absorbs a few minutes of clock drift; a difference of
/// more than 14 hours is no zone (a fixed or bogus time) and teaches nothing.
#[derive(Debug, Default)]
pub struct ZonelessClock {
    offset_minutes: std::sync::Mutex<Option<i64>>,
}

/// The widest zone offset there is (UTC+14).
const MAX_ZONE_OFFSET_MINUTES: i64 = 14 * 60;

impl ZonelessClock {
    /// `written`: a zone-less time the upstream wrote as "now", read as if it
    /// were UTC; `received_at`: when its answer arrived, by this host's clock.
    pub fn learn(&self, written: DateTime<Utc>, received_at: DateTime<Utc>) {
        const QUARTER_SECONDS: i64 = 15 * 60;
        let seconds = (written - received_at).num_seconds();
        let quarters = (seconds + QUARTER_SECONDS / 2).div_euclid(QUARTER_SECONDS);
        let minutes = quarters * 15;
        if minutes.abs() <= MAX_ZONE_OFFSET_MINUTES {
            *self
                .offset_minutes
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(minutes);
        }
    }

    /// A zone-less upstream time (read as if UTC) placed in UTC; `None` until
    /// an offset has been learnt.
    pub fn to_utc(&self, written: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minutes = (*self
            .offset_minutes
            .lock()
            .unwrap_or_else(|p| p.into_inner()))?;
        Some(written - chrono::Duration::minutes(minutes))
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
    /// if any, so that it is used or cancelled, never left charged. Only for
    /// upstreams that can tell exactly, by replaying the buy under the same
    /// idempotency key; upstreams without keys list their open activations
    /// instead ([`Upstream::open_purchases_like`]) and leave the choice to the
    /// router. The default says it cannot tell.
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

    /// For a buy whose outcome is unknown at an upstream without idempotency
    /// keys: the open activations of this account that could be its purchase
    /// (same service, country and channel), each with the time the upstream
    /// says it was bought. `Ok(None)`: this upstream cannot list its purchases
    /// (the default); [`Upstream::find_purchase`] is asked instead.
    ///
    /// The list is not "the purchase of this buy": it may hold numbers that
    /// orders already hold, or that other lost buys made. Picking the one to
    /// close is the router's job, which knows every activation this process
    /// holds and every buy still in flight (see `router.rs`); an adapter must
    /// not answer [`Upstream::find_purchase`] from such a list.
    fn open_purchases_like<'a>(
        &'a self,
        request: &'a BuyRequest,
    ) -> UpstreamFuture<'a, Option<Vec<ListedPurchase>>> {
        let _ = request;
        Box::pin(async { Ok(None) })
    }

    /// The identity of the activation a handle addresses: the same for every
    /// handle of that activation (a handle may carry more, such as the
    /// revision reached at a resend). The default: the handle itself.
    fn activation_key(&self, handle: &Handle) -> String {
        handle.0.clone()
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

// -- pushes: what an adapter's `inbound` takes and gives (see `inbound.rs`) --

/// One push as it came in.
#[derive(Clone, Copy, Debug)]
pub struct InboundRequest<'a> {
    /// The value of the upstream's signature header, if any.
    pub signature: Option<&'a str>,
    /// The address the push came from (the TCP peer).
    pub peer: Option<IpAddr>,
    /// The raw body.
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
}

/// What a verified push says about one purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundHint {
    pub handle: Handle,
    /// The purchase's state as the (signed) push tells it; `None`: read the
    /// purchase from the upstream now.
    pub snapshot: Option<Snapshot>,
}

/// Why a push was refused. Nothing happens for a refused push.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("this upstream sends no pushes")]
    NotSupported,
    #[error("pushes from this upstream are not configured")]
    NotConfigured,
    #[error("the push carries no signature")]
    Unsigned,
    #[error("the push signature is malformed or does not match its body")]
    BadSignature,
    #[error("the push comes from an address that is not allowed")]
    SourceNotAllowed,
    #[error("the push is outside the accepted time window")]
    Stale,
    #[error("the push body is not this upstream's event")]
    Malformed,
    #[error("too many pushes waiting; retry later")]
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_zoneless_clock_learns_whole_quarter_hours_and_ignores_bogus_times() {
        let clock = ZonelessClock::default();
        let received = Utc.with_ymd_and_hms(2026, 5, 11, 6, 0, 0).unwrap();
        let written = Utc.with_ymd_and_hms(2026, 5, 11, 9, 0, 0).unwrap();
        assert_eq!(clock.to_utc(written), None, "nothing learnt yet");
        // UTC+3, written 40 s late by a drifting clock.
        clock.learn(written + chrono::Duration::seconds(40), received);
        assert_eq!(clock.to_utc(written), Some(received));
        // UTC+5:45 (Nepal).
        clock.learn(received + chrono::Duration::minutes(345), received);
        assert_eq!(
            clock.to_utc(received + chrono::Duration::minutes(345)),
            Some(received)
        );
        // A fixed time months away teaches nothing.
        clock.learn(received - chrono::Duration::days(90), received);
        assert_eq!(
            clock.to_utc(received + chrono::Duration::minutes(345)),
            Some(received)
        );
        // West of UTC.
        clock.learn(received - chrono::Duration::hours(5), received);
        assert_eq!(
            clock.to_utc(received - chrono::Duration::hours(5)),
            Some(received)
        );
    }
}
