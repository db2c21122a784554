//! Loading aggregates from the log and encoding their events: what every command
//! service does around its pure decisions.

use crate::log::{Direction, EventId, EventStore, LogError, NewEvent, StreamName, MAX_READ_COUNT};
use crate::vault::Vault;

use crate::domain::aggregate::Aggregate;
use crate::domain::codec::{CodecError, DomainEvent};

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
    fold_from(
        store,
        vault,
        stream,
        Loaded {
            state: A::default(),
            version: 0,
        },
    )
    .await
}

/// Folded aggregates kept between commands and reads, each valid only at the
/// stream version it was folded at and while no subject was erased since it was
/// filled ([`Vault::erasures`]): a hit is always what a fresh fold would give.
/// Folding is most of what a read costs (reading, decoding, opening sealed parts),
/// and the stream's version is an in-memory lookup.
pub struct AggregateCache {
    entries: std::sync::Mutex<std::collections::HashMap<CacheKey, CacheEntry>>,
    capacity: usize,
}

type CacheKey = (std::any::TypeId, StreamName);

struct CacheEntry {
    version: u64,
    erasures: u64,
    state: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

/// Aggregates a cache holds by default; past it, a tenth is evicted at random.
pub const DEFAULT_CACHED_AGGREGATES: usize = 100_000;

impl Default for AggregateCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CACHED_AGGREGATES)
    }
}

impl AggregateCache {
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "a cache holds at least one aggregate");
        Self {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity,
        }
    }

    /// The cached fold of `stream` if it is still valid (no erasure since), at
    /// its version; the caller folds in what came after.
    fn get<A: Clone + Send + Sync + 'static>(
        &self,
        stream: &StreamName,
        erasures: u64,
    ) -> Option<Loaded<A>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(&(std::any::TypeId::of::<A>(), stream.clone()))?;
        if entry.erasures != erasures {
            return None;
        }
        Some(Loaded {
            state: entry.state.downcast_ref::<A>()?.clone(),
            version: entry.version,
        })
    }

    fn put<A: Clone + Send + Sync + 'static>(
        &self,
        stream: &StreamName,
        version: u64,
        erasures: u64,
        state: &A,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let evict: Vec<CacheKey> = entries
                .keys()
                .take(self.capacity / 10 + 1)
                .cloned()
                .collect();
            for key in evict {
                entries.remove(&key);
            }
        }
        let key = (std::any::TypeId::of::<A>(), stream.clone());
        // Never replace a newer fold with an older one (two loads raced).
        if entries.get(&key).is_some_and(|e| e.version > version) {
            return;
        }
        entries.insert(
            key,
            CacheEntry {
                version,
                erasures,
                state: std::sync::Arc::new(state.clone()),
            },
        );
        assert!(entries.len() <= self.capacity);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`load`] through `cache`: the same result, without folding a stream whose
/// version has not moved since it was last folded.
pub async fn load_cached<S, A>(
    store: &S,
    vault: &Vault,
    stream: &StreamName,
    cache: &AggregateCache,
) -> Result<Loaded<A>, LoadError>
where
    S: EventStore,
    A: Aggregate + Clone + Send + Sync + 'static,
    A::Event: DomainEvent,
{
    // Read before folding: an erasure during the fold makes the entry stale.
    let erasures = vault.erasures();
    let version = store.stream_version(stream).await?;
    if version == 0 {
        return Ok(Loaded {
            state: A::default(),
            version: 0,
        });
    }
    let loaded = match cache.get::<A>(stream, erasures) {
        Some(hit) if hit.version == version => return Ok(hit),
        // Fold in only what came after the cached version.
        Some(hit) if hit.version < version => fold_from(store, vault, stream, hit).await?,
        _ => load::<S, A>(store, vault, stream).await?,
    };
    cache.put(stream, loaded.version, erasures, &loaded.state);
    Ok(loaded)
}

/// Folds the events after `from.version` into `from`.
async fn fold_from<S, A>(
    store: &S,
    vault: &Vault,
    stream: &StreamName,
    from: Loaded<A>,
) -> Result<Loaded<A>, LoadError>
where
    S: EventStore,
    A: Aggregate,
    A::Event: DomainEvent,
{
    let Loaded {
        mut state,
        mut version,
    } = from;
    loop {
        let batch = store
            .read_stream(stream, version + 1, Direction::Forwards, MAX_READ_COUNT)
            .await?;
        for record in &batch {
            assert_eq!(record.version, version + 1, "stream versions are dense");
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
