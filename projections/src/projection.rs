//! The projection trait, and the applier that feeds one projection and
//! commits it.

use std::sync::Arc;

use nexus_core::log::RecordedEvent;

use crate::error::ApplyError;
use crate::staging::Staging;

/// A read model fed by the log. A projection writes only to its own tree (named
/// after it), through the [`Staging`] it is given.
///
/// `apply` must be a function of the event and of what the tree holds, nothing
/// else (no clock, no randomness, no other tree), so that a rebuild from
/// position 0 writes byte for byte what the incremental build wrote. The one
/// documented exception is the catalog, which opens sealed sections with the
/// vault (see docs/PROJECTIONS.md).
pub trait Projection: Send {
    /// The projection's name, which is also its tree's name.
    fn name(&self) -> &'static str;

    /// The version of the format of the rows this projection writes. Bump it
    /// whenever a row's encoding or the key layout changes: a tree written
    /// with another version is dropped and rebuilt from position 0 when the
    /// runner starts, instead of read.
    fn format_version(&self) -> u32 {
        1
    }

    /// Applies one event: events of categories it does not read are ignored.
    /// An error stops the projection at this event, with nothing of it applied
    /// (what the event staged before failing is discarded by the caller).
    fn apply(&mut self, event: &RecordedEvent, staging: &mut Staging) -> Result<(), ApplyError>;
}

/// Where and why a projection stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub position: u64,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at position {}: {}", self.position, self.reason)
    }
}

/// A projection with its staging: applies batches of events in order, and
/// commits what it applied with the checkpoint.
///
/// If an event fails, everything staged since the last commit is discarded
/// and the events before the failing one are applied again (they are kept
/// until the commit), so the state can be committed exactly up to the event
/// before the failure. Failures are rare; the common path copies nothing.
pub struct Applier {
    projection: Box<dyn Projection>,
    staging: Staging,
    /// The next position to apply.
    next: u64,
    /// The last position committed.
    committed: u64,
    /// The batches applied since the last commit.
    window: Vec<Arc<Vec<RecordedEvent>>>,
}

impl Applier {
    /// Starts after the staging's checkpoint.
    pub fn new(
        projection: Box<dyn Projection>,
        staging: Staging,
    ) -> Result<Self, crate::StorageError> {
        let committed = staging.checkpoint()?;
        let mut staging = staging;
        if crate::staging::read_format(staging.tree())? != Some(projection.format_version()) {
            staging.write_format_with_next_commit(projection.format_version());
        }
        Ok(Self {
            projection,
            staging,
            next: committed + 1,
            committed,
            window: Vec::new(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// The last position applied (committed or not).
    pub fn applied(&self) -> u64 {
        self.next - 1
    }

    /// The last position committed.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Keys staged since the last commit.
    pub fn staged_keys(&self) -> usize {
        self.staging.dirty_len()
    }

    /// Applies a batch (events at or below the last applied position are
    /// skipped; a gap is a failure). On a failure, the state is what it was
    /// just before the failing event.
    pub fn apply(&mut self, events: Arc<Vec<RecordedEvent>>) -> Result<(), Failure> {
        let result = apply_events(
            &mut *self.projection,
            &mut self.staging,
            &events,
            &mut self.next,
        );
        self.window.push(events);
        if let Err(failure) = result {
            self.rewind(failure.position)?;
            return Err(failure);
        }
        Ok(())
    }

    /// Discards what is staged and applies the window again up to `before`.
    /// Should that fail too (apply is deterministic, so only the storage or the
    /// vault can make it), nothing of the window is kept.
    fn rewind(&mut self, before: u64) -> Result<(), Failure> {
        self.staging.discard_uncommitted();
        self.next = self.committed + 1;
        for batch in std::mem::take(&mut self.window) {
            let upto: Vec<RecordedEvent> = batch
                .iter()
                .filter(|e| e.position < before)
                .cloned()
                .collect();
            let replayed = apply_events(
                &mut *self.projection,
                &mut self.staging,
                &upto,
                &mut self.next,
            );
            if let Err(failure) = replayed {
                self.staging.discard_uncommitted();
                self.next = self.committed + 1;
                return Err(Failure {
                    position: self.next,
                    reason: format!(
                        "applying again before position {before}: {}",
                        failure.reason
                    ),
                });
            }
        }
        Ok(())
    }

    /// Commits what was applied since the last commit, with its checkpoint.
    pub fn commit(&mut self) -> Result<u64, Failure> {
        if self.next - 1 > self.committed {
            self.staging.commit(self.next - 1).map_err(|e| Failure {
                position: self.committed + 1,
                reason: format!("writing the read model: {e}"),
            })?;
            self.committed = self.next - 1;
        }
        self.window.clear();
        Ok(self.committed)
    }
}

/// Applies `events` (in order) from position `*next` on: earlier events are
/// skipped (already applied), a gap is a failure. `*next` moves past every
/// event applied. On a failure `*next` stays at the failing event, and what
/// that event staged is still in the staging: [`Applier`] takes care of it.
pub fn apply_events(
    projection: &mut dyn Projection,
    staging: &mut Staging,
    events: &[RecordedEvent],
    next: &mut u64,
) -> Result<(), Failure> {
    for event in events {
        if event.position < *next {
            continue;
        }
        if event.position > *next {
            return Err(Failure {
                position: *next,
                reason: format!("the log skipped from {} to {}", *next, event.position),
            });
        }
        projection.apply(event, staging).map_err(|e| Failure {
            position: event.position,
            reason: e.to_string(),
        })?;
        *next += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::log::{EventId, StreamName};

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: StreamName::new("test-1").unwrap(),
            version: position,
            id: EventId::new(),
            event_type: "Tick".into(),
            schema_version: 1,
            recorded_at: chrono::Utc::now(),
            correlation_id: None,
            causation_id: None,
            payload: Vec::new(),
            pii: None,
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    /// Counts events in one row and writes one key per event; fails at `fail_at`.
    struct Counter {
        fail_at: u64,
    }

    impl Projection for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }

        fn apply(&mut self, event: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
            *st.get_or_insert_with::<u64>(b"count", || 0)? += 1;
            st.put(event.position.to_be_bytes().to_vec(), ());
            if event.position == self.fail_at {
                return Err(ApplyError::Overflow {
                    event_type: event.event_type.clone(),
                });
            }
            Ok(())
        }
    }

    #[test]
    fn a_failure_keeps_exactly_the_events_before_it_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path())
            .unwrap()
            .open_tree("counter")
            .unwrap();
        let staging = Staging::new(tree.clone(), 1000).unwrap();
        let mut applier = Applier::new(Box::new(Counter { fail_at: 7 }), staging).unwrap();
        applier
            .apply(Arc::new((1..=4).map(event).collect()))
            .unwrap();
        let failure = applier
            .apply(Arc::new((5..=9).map(event).collect()))
            .unwrap_err();
        assert_eq!(failure.position, 7);
        assert_eq!(applier.commit().unwrap(), 6);
        let count =
            crate::value::decode::<u64>(b"count", &tree.get(b"count").unwrap().unwrap()).unwrap();
        assert_eq!(
            count, 6,
            "each event before the failure once, nothing of it"
        );
        assert!(tree.get(7u64.to_be_bytes()).unwrap().is_none());
        assert_eq!(crate::staging::read_checkpoint(&tree).unwrap(), 6);
        // Resumed later (the failure fixed), it goes on from 7.
        let staging = Staging::new(tree.clone(), 1000).unwrap();
        let mut applier = Applier::new(Box::new(Counter { fail_at: 0 }), staging).unwrap();
        applier
            .apply(Arc::new((5..=9).map(event).collect()))
            .unwrap();
        assert_eq!(applier.commit().unwrap(), 9);
        let count =
            crate::value::decode::<u64>(b"count", &tree.get(b"count").unwrap().unwrap()).unwrap();
        assert_eq!(count, 9);
    }

    #[test]
    fn a_gap_in_positions_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path())
            .unwrap()
            .open_tree("counter")
            .unwrap();
        let staging = Staging::new(tree, 1000).unwrap();
        let mut applier = Applier::new(Box::new(Counter { fail_at: 0 }), staging).unwrap();
        let failure = applier
            .apply(Arc::new(vec![event(1), event(3)]))
            .unwrap_err();
        assert_eq!(failure.position, 2);
        assert_eq!(applier.commit().unwrap(), 1);
    }
}
