//! The orphan sweep: activations an upstream account holds that no order of
//! ours holds are cancelled, so that no number stays charged.
//!
//! Orphans come from buys whose outcome was unknown (a timeout, a 5xx, an
//! unreadable answer) at upstreams without idempotency keys: the router could
//! not find the purchase again, but the upstream may have sold it. The sweep
//! asks every upstream that can list its active purchases
//! ([`Upstream::active_purchases`]), at most [`SweepConfig::max_listed`] per
//! upstream, and compares with the purchases the fulfilment worker holds for
//! open orders. An activation nobody holds is cancelled only once it has been
//! seen unheld for [`SweepConfig::grace`] (the time a real purchase takes to
//! reach its order is seconds), and at most [`SweepConfig::max_cancels`] per
//! sweep. A cancel refused because a code already came closes the activation
//! with `finish` instead (see [`cancel_until_done`]).
//!
//! Orphans are cancelled, not adopted: an order that waits for a number is
//! bought within its provisioning deadline or cancelled, so by the end of the
//! grace period no order waits for an orphan.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::router::{cancel_until_done, Router};
use crate::upstream::{Handle, Purchase};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepConfig {
    /// Time between sweeps.
    pub interval: Duration,
    /// How long an activation must be seen without an order before it is
    /// cancelled.
    pub grace: Duration,
    /// Activations read per upstream per sweep.
    pub max_listed: usize,
    /// Cancels per sweep over all upstreams.
    pub max_cancels: usize,
    /// Cancel attempts per orphan (waiting out "too early" answers).
    pub cancel_attempts: u32,
    pub cancel_interval: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(5 * 60),
            max_listed: 1_000,
            max_cancels: 50,
            cancel_attempts: 3,
            cancel_interval: Duration::from_secs(3),
        }
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Activations listed over all upstreams.
    pub listed: usize,
    /// Of those, held by no order.
    pub unheld: usize,
    pub cancelled: usize,
    /// Orphans whose cancel did not go through (tried again next sweep).
    pub failed: usize,
}

/// Remembers when each unheld activation was first seen, across sweeps.
pub struct OrphanSweep {
    config: SweepConfig,
    /// (upstream, handle) → first seen without an order. Only activations of
    /// the latest listing are kept, so it holds at most `max_listed` per
    /// upstream.
    first_seen: Mutex<HashMap<(String, Handle), Instant>>,
}

impl OrphanSweep {
    pub fn new(config: SweepConfig) -> Self {
        Self {
            config,
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &SweepConfig {
        &self.config
    }

    /// One sweep over every upstream of `router`. `held` is every (upstream,
    /// handle) an open order holds, taken before the listing starts.
    pub async fn sweep(&self, router: &Router, held: &HashSet<(String, Handle)>) -> SweepReport {
        let mut report = SweepReport::default();
        for upstream in router.upstreams() {
            let name = upstream.name().to_owned();
            let listed = match upstream.active_purchases(self.config.max_listed).await {
                Ok(Some(listed)) => listed,
                Ok(None) => continue,
                Err(e) => {
                    debug!(upstream = %name, error = %e, "orphan sweep: listing failed");
                    continue;
                }
            };
            report.listed += listed.len();
            let now = Instant::now();
            let due: Vec<Handle> = {
                let mut first_seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
                let listed_set: HashSet<&Handle> = listed.iter().collect();
                first_seen.retain(|(upstream, handle), _| {
                    upstream != &name || listed_set.contains(handle)
                });
                let mut due = Vec::new();
                for handle in listed {
                    let key = (name.clone(), handle);
                    if held.contains(&key) {
                        first_seen.remove(&key);
                        continue;
                    }
                    report.unheld += 1;
                    let seen = *first_seen.entry(key.clone()).or_insert(now);
                    if now.duration_since(seen) >= self.config.grace {
                        due.push(key.1);
                    }
                }
                due
            };
            for handle in due {
                if report.cancelled + report.failed >= self.config.max_cancels {
                    break;
                }
                let purchase = Purchase {
                    handle: handle.clone(),
                    phone: String::new(),
                    cost: Default::default(),
                    expires_at: None,
                };
                let closed = cancel_until_done(
                    &*upstream,
                    &purchase,
                    self.config.cancel_attempts,
                    self.config.cancel_interval,
                )
                .await;
                if closed {
                    report.cancelled += 1;
                    self.first_seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(name.clone(), handle));
                    info!(upstream = %name, "orphan sweep: an activation without an order was closed");
                } else {
                    report.failed += 1;
                    warn!(upstream = %name, "orphan sweep: an activation without an order could not be closed yet");
                }
            }
        }
        report
    }
}
