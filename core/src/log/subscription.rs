//! Catch-up subscriptions to the whole log.
//!
//! A subscription reads history in batches and, at the head, waits for the head to
//! move. Every read is bounded by the durable head and positions are dense, so the
//! switch from history to live can neither skip nor repeat a position.

use std::sync::Arc;

use tokio::sync::watch;

use super::{EventStore, LogError, RecordedEvent};

/// Delivers every event from a position on, in order, history then live.
pub struct AllSubscription<S: EventStore> {
    store: Arc<S>,
    next_position: u64,
    head: watch::Receiver<u64>,
    batch_size: usize,
}

impl<S: EventStore> AllSubscription<S> {
    /// Starts at `from_position` (inclusive; 0 and 1 both mean the beginning).
    pub fn new(store: Arc<S>, from_position: u64, batch_size: usize) -> Self {
        let head = store.watch_head();
        Self {
            store,
            next_position: from_position.max(1),
            head,
            batch_size: batch_size.clamp(1, super::MAX_READ_COUNT),
        }
    }

    /// The position the next delivered event will have.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// The next non-empty batch, waiting for new events at the head.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, LogError> {
        loop {
            let events = self
                .store
                .read_all(self.next_position, self.batch_size)
                .await?;
            if let Some(last) = events.last() {
                assert_eq!(events[0].position, self.next_position, "no event skipped");
                self.next_position = last.position + 1;
                return Ok(events);
            }
            let wanted = self.next_position;
            self.head
                .wait_for(|head| *head >= wanted)
                .await
                .map_err(|_| LogError::Closed)?;
        }
    }
}
