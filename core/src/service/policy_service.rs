//! The policy-change service: the announcements (one `policy-changes` stream)
//! loaded from the log, decided by `domain::policy`, appended through the
//! [`Runner`].

use std::sync::Arc;

use super::repo::{load, Loaded};
use super::runner::{Runner, ServiceError};
use crate::domain::clock::Clock;
use crate::domain::policy::{
    self, changes_stream, AnnouncementKey, PolicyChangeAnnounced, PolicyChangeId,
    PolicyChangeRequest, PolicyChanges, PolicyError, PolicyEvent,
};
use crate::log::EventStore;
use crate::vault::Vault;

/// Why an announcement did not happen.
pub type PolicyServiceError = ServiceError<PolicyError>;

impl From<PolicyError> for PolicyServiceError {
    fn from(e: PolicyError) -> Self {
        ServiceError::Refused(e)
    }
}

/// An announcement and whether it was made by an earlier, identical request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    pub change: PolicyChangeAnnounced,
    pub replayed: bool,
}

/// Loads the announcements from the log, decides, appends.
pub struct PolicyService<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
}

impl<S: EventStore> PolicyService<S> {
    pub fn new(store: Arc<S>, vault: Arc<Vault>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            vault,
            clock,
        }
    }

    pub async fn changes(&self) -> Result<Loaded<PolicyChanges>, PolicyServiceError> {
        Ok(load(self.store.as_ref(), &self.vault, &changes_stream()).await?)
    }

    /// Announces a change; with a key, a repeat of the same request answers the
    /// first announcement.
    pub async fn announce(
        &self,
        request: &PolicyChangeRequest,
        key: Option<AnnouncementKey>,
    ) -> Result<Announced, PolicyServiceError> {
        let id = PolicyChangeId::new();
        let clock = &self.clock;
        let committed = Runner::new(self.store.as_ref(), &self.vault)
            .run(|tx| {
                Box::pin(async move {
                    let changes = tx.load::<PolicyChanges>(&changes_stream()).await?;
                    let events = policy::announce(&changes, id, request, key, clock.now())?;
                    tx.emit(&changes_stream(), &events)?;
                    let announced = match events.into_iter().next() {
                        Some(PolicyEvent::PolicyChangeAnnounced(change)) => Announced {
                            change,
                            replayed: false,
                        },
                        // A repeat: the decision found the first announcement by its key.
                        None => Announced {
                            change: key
                                .as_ref()
                                .and_then(|k| changes.by_key(k))
                                .cloned()
                                .expect("a decision without events is a keyed repeat"),
                            replayed: true,
                        },
                    };
                    Ok(announced)
                })
            })
            .await?;
        Ok(committed.value)
    }
}
