//! Loading aggregates from the log and encoding their events: what every command
//! service does around its pure decisions.

use crate::log::{Direction, EventId, EventStore, LogError, NewEvent, StreamName, MAX_READ_COUNT};
use crate::vault::Vault;

use super::aggregate::Aggregate;
use super::codec::{CodecError, DomainEvent};

/// Longest stream a command will fold, in events. Every stream Nexus writes is
/// far shorter (an order has a dozen events; a wallet a few per order).
pub const MAX_STREAM_EVENTS: u64 = 1_000_000;

/// An aggregate and the version it was folded at (0: the stream does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("stream {0} is longer than {MAX_STREAM_EVENTS} events")]
    TooLong(StreamName),
}

/// Folds a stream's events, personal parts opened by the vault.
pub async fn load<S, A>(
    store: &S,
    vault: &Vault,
    stream: &StreamName,
) -> Result<Loaded<A>, LoadError>
where
    S: EventStore,
    A: Aggregate,
    A::Event: DomainEvent,
{
    let mut state = A::default();
    let mut version = 0u64;
    loop {
        let batch = store
            .read_stream(stream, version + 1, Direction::Forwards, MAX_READ_COUNT)
            .await?;
        for record in &batch {
            debug_assert_eq!(record.version, version + 1, "stream versions are dense");
            state.apply(&A::Event::from_recorded(record, vault)?);
            version = record.version;
        }
        if batch.len() < MAX_READ_COUNT {
            return Ok(Loaded { state, version });
        }
        if version >= MAX_STREAM_EVENTS {
            return Err(LoadError::TooLong(stream.clone()));
        }
    }
}

/// Log records for events, each with a fresh id, personal parts sealed.
pub fn encode<E: DomainEvent>(events: &[E], vault: &Vault) -> Result<Vec<NewEvent>, CodecError> {
    events
        .iter()
        .map(|e| e.to_new_event(EventId::new(), vault))
        .collect()
}
