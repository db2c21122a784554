//! Leases for the singletons (the fulfilment worker, the notifier and mailer,
//! customer webhooks, the sweeps) when several nodes share one database: a
//! node holds a lease while it holds a session-level advisory lock on a
//! connection of its own. When the node dies its connection closes and the
//! server releases the lock at once; another node's next try takes it.
//!
//! A holder that loses its connection stops believing it holds the lease at
//! its next check (`check_ms`), and another node may take the lease as soon as
//! the server has noticed: for that moment two nodes may both work. What they
//! do is decided against the log (a buy, a mail or a webhook is recorded
//! before and reconciled after), so a failover never does anything twice.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use super::PgAddress;

/// How a lease is campaigned for.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// How often a node without the lease tries to take it, and a holder checks
    /// that its connection (hence its lock) is still alive.
    pub check_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        // Two seconds: a dead holder's lease moves within a few seconds, well
        // inside the ten the design promises.
        Self { check_ms: 2_000 }
    }
}

/// The advisory-lock key of a named lease (the first 8 bytes of a SHA-256).
pub fn lease_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("nexus-lease:{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Campaigns for the lease `name` until `stop` is dropped: the receiver says
/// whether this node holds it now.
pub fn campaign(
    address: PgAddress,
    name: &str,
    config: LeaseConfig,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (held_tx, held_rx) = watch::channel(false);
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        let pause = Duration::from_millis(config.check_ms.max(10));
        let key = lease_key(&name);
        // Runs until the task is aborted or every receiver is gone.
        while !held_tx.is_closed() {
            let client = match address.connect().await {
                Ok(client) => client,
                Err(e) => {
                    held_tx.send_replace(false);
                    warn!(lease = %name, error = %e, "cannot reach the database for a lease");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            hold_while_alive(&client, key, &name, &held_tx, pause).await;
            held_tx.send_replace(false);
        }
    });
    (held_rx, task)
}

/// Tries for the lock, then holds it while the connection answers; returns
/// when the connection fails (the lock is then gone with it).
async fn hold_while_alive(
    client: &tokio_postgres::Client,
    key: i64,
    name: &str,
    held: &watch::Sender<bool>,
    pause: Duration,
) {
    while !held.is_closed() {
        let query = if *held.borrow() {
            "SELECT true"
        } else {
            "SELECT pg_try_advisory_lock($1)"
        };
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            if *held.borrow() { &[] } else { &[&key] };
        let answer = tokio::time::timeout(pause, client.query_one(query, params)).await;
        match answer {
            Ok(Ok(row)) => {
                let now_held: bool = row.get(0);
                if now_held && !*held.borrow() {
                    info!(lease = %name, "lease taken");
                }
                held.send_replace(now_held);
            }
            Ok(Err(_)) | Err(_) => {
                if *held.borrow() {
                    warn!(lease = %name, "lease lost with its connection");
                }
                return;
            }
        }
        tokio::time::sleep(pause).await;
    }
}
