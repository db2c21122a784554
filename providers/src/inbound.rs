//! Pushes from upstreams: webhooks that say a purchase changed (a code came, the
//! order ended).
//!
//! An adapter verifies a push ([`Upstream::inbound`]) before it reads a field:
//! SMSCode signs its webhooks (HMAC-SHA256 over the raw body, compared in
//! constant time); HeroSMS signs nothing, so only configured source addresses
//! are heard and its push is a hint that makes the worker read the activation
//! (`getStatusV2`) at once. A refused push changes nothing.
//!
//! A verified push becomes a [`Hint`]: the upstream's name, its handle of the
//! purchase and, when the push is signed and carries the message, a
//! [`Snapshot`]. Hints go to the fulfilment worker through a bounded queue
//! ([`HintSender`]); the worker maps the handle to the order that holds it and
//! treats the snapshot exactly like the answer of a poll, so a code that comes
//! both by push and by poll (same revision) is recorded once.
//!
//! [`Upstream::inbound`]: crate::upstream::Upstream::inbound
//!
//! The push's request, verified hint and refusal are types of the upstream
//! contract (`upstream.rs`): every adapter takes and gives them.

use std::net::IpAddr;

use tokio::sync::mpsc;

use crate::upstream::{Handle, InboundError, Snapshot};

/// The largest push body read, in bytes (SMSCode's events are under 2 KiB).
pub const MAX_INBOUND_BYTES: usize = 64 * 1024;

/// Hints waiting for the worker, at most; a push that finds the queue full is
/// refused as [`InboundError::Busy`] (which the API answers so that the
/// upstream retries it).
pub const HINT_QUEUE_CAPACITY: usize = 4_096;

/// A verified push, addressed to the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The configured name of the upstream that pushed.
    pub provider: String,
    pub handle: Handle,
    pub snapshot: Option<Snapshot>,
}

/// The sending side of the worker's hint queue.
#[derive(Clone, Debug)]
pub struct HintSender(pub(crate) mpsc::Sender<Hint>);

impl HintSender {
    /// Queues a hint without waiting; `Busy` when the queue is full or the
    /// worker has stopped.
    pub fn send(&self, hint: Hint) -> Result<(), InboundError> {
        self.0.try_send(hint).map_err(|_| InboundError::Busy)
    }
}

/// Whether `peer` is one of `allowed` (IPv4-mapped IPv6 addresses compare as
/// their IPv4 form).
pub fn source_allowed(allowed: &[IpAddr], peer: Option<IpAddr>) -> bool {
    let Some(peer) = peer else {
        return false;
    };
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let peer = canonical(peer);
    allowed.iter().any(|ip| canonical(*ip) == peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_match_exactly_and_through_ipv4_mapping() {
        let allowed: Vec<IpAddr> = vec!["203.0.113.7".parse().unwrap()];
        assert!(source_allowed(
            &allowed,
            Some("203.0.113.7".parse().unwrap())
        ));
        assert!(source_allowed(
            &allowed,
            Some("::ffff:203.0.113.7".parse().unwrap())
        ));
        assert!(!source_allowed(
            &allowed,
            Some("203.0.113.8".parse().unwrap())
        ));
        assert!(!source_allowed(&allowed, None));
        assert!(!source_allowed(&[], Some("203.0.113.7".parse().unwrap())));
    }
}
