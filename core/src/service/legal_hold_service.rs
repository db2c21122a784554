//! The legal-hold service: the register of holds (one `legal-holds` stream)
//! loaded from the log, decided by `domain::legal_hold`, appended through the
//! [`Runner`]. The retention sweeps ask [`LegalHoldService::is_held`] before
//! erasing a subject and skip it while it is held.

use std::sync::Arc;

use super::repo::{load, Loaded};
use super::runner::{Runner, ServiceError};
use crate::domain::clock::Clock;
use crate::domain::legal_hold::{
    self, register_stream, CaseReference, HoldReason, HoldRegister, HoldSubject, LegalHold,
    LegalHoldError,
};
use crate::log::EventStore;
use crate::vault::Vault;

/// Why a legal-hold command did not happen.
pub type LegalHoldServiceError = ServiceError<LegalHoldError>;

impl From<LegalHoldError> for LegalHoldServiceError {
    fn from(e: LegalHoldError) -> Self {
        ServiceError::Refused(e)
    }
}

/// Loads the register from the log, decides, appends.
pub struct LegalHoldService<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
}

impl<S: EventStore> LegalHoldService<S> {
    pub fn new(store: Arc<S>, vault: Arc<Vault>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            vault,
            clock,
        }
    }

    /// The register as the log has it now.
    pub async fn register(&self) -> Result<Loaded<HoldRegister>, LegalHoldServiceError> {
        Ok(load(self.store.as_ref(), &self.vault, &register_stream()).await?)
    }

    /// Whether erasing `subject` is frozen now.
    pub async fn is_held(&self, subject: &HoldSubject) -> Result<bool, LegalHoldServiceError> {
        Ok(self.register().await?.state.is_held(subject))
    }

    /// Active holds in subject order.
    pub async fn active(&self) -> Result<Vec<LegalHold>, LegalHoldServiceError> {
        Ok(self.register().await?.state.active().cloned().collect())
    }

    /// Places a hold; answers it as recorded (its time is the decision's).
    pub async fn place(
        &self,
        subject: HoldSubject,
        reason_code: HoldReason,
        reference: CaseReference,
    ) -> Result<LegalHold, LegalHoldServiceError> {
        let (clock, reference) = (&self.clock, &reference);
        let committed = Runner::new(self.store.as_ref(), &self.vault)
            .run(|tx| {
                Box::pin(async move {
                    let register = tx.load::<HoldRegister>(&register_stream()).await?;
                    let now = clock.now();
                    let events =
                        legal_hold::place(&register, subject, reason_code, reference.clone(), now)?;
                    tx.emit(&register_stream(), &events)?;
                    Ok(LegalHold {
                        subject,
                        reason_code,
                        reference: reference.clone(),
                        placed_at: now,
                    })
                })
            })
            .await?;
        Ok(committed.value)
    }

    pub async fn release(&self, subject: HoldSubject) -> Result<(), LegalHoldServiceError> {
        let clock = &self.clock;
        Runner::new(self.store.as_ref(), &self.vault)
            .run(|tx| {
                Box::pin(async move {
                    let register = tx.load::<HoldRegister>(&register_stream()).await?;
                    let events = legal_hold::release(&register, subject, clock.now())?;
                    Ok(tx.emit(&register_stream(), &events)?)
                })
            })
            .await?;
        Ok(())
    }
}
