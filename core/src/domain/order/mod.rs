//! The order aggregate (stream `order-<hex>`).
//!
//! `Placed → NumberAssigned → CodeReceived → CodeDelivered → Completed`, plus
//! `Cancelled` and `Expired` (both refund in full) and resend requests. Money moves
//! in the owner's wallet stream, in the same atomic append as the order event that
//! causes it: the hold with `OrderPlaced`, the capture with `OrderCodeDelivered` (or
//! an expiry with a code that was never read), the void with a cancel or an expiry.
//!
//! # Map
//!
//! - this file: [`OrderError`], every refusal;
//! - `events.rs`: the event types and the values they carry (service, country,
//!   channel), and the vault subject of each code;
//! - `state.rs`: [`Order`] and its [`OrderStatus`], folded from the events;
//! - `decide.rs`: the [`OrderPolicy`] and the pure decisions, deadlines and
//!   erasures.
//!
//! Each file's tests sit at its bottom.

mod decide;
mod events;
mod state;

pub use decide::*;
pub use events::*;
pub use state::*;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("unknown service code")]
    InvalidService,
    #[error("a country is an ISO 3166-1 alpha-2 code")]
    InvalidCountry,
    #[error("no such order")]
    NotFound,
    #[error("the order exists already")]
    AlreadyPlaced,
    #[error("the order is {0:?}; this is not possible now")]
    WrongStatus(OrderStatus),
    #[error("a code was received upstream; the order can no longer be cancelled")]
    CodeAlreadyReceived,
    #[error("cancelling is possible from {0}")]
    CancelTooEarly(DateTime<Utc>),
    #[error("the order has no code yet")]
    NoCodeYet,
    #[error("the code was delivered and its delivery window is over")]
    CodeErased,
    #[error("the order is past its deadline")]
    PastDeadline,
}
