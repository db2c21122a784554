//! Either backend behind one type: what a binary holds when the backend is a
//! setting (sled by default, PostgreSQL when a database address is given).

use tokio::sync::watch;

use super::{
    AppendOutcome, AppendRequest, Direction, EventStore, LogError, PgLog, RecordedEvent, SledLog,
    StreamName, VerifyReport,
};

/// The log on sled or on PostgreSQL.
pub enum AnyLog {
    Sled(SledLog),
    Postgres(PgLog),
}

impl From<SledLog> for AnyLog {
    fn from(log: SledLog) -> Self {
        AnyLog::Sled(log)
    }
}

impl From<PgLog> for AnyLog {
    fn from(log: PgLog) -> Self {
        AnyLog::Postgres(log)
    }
}

impl AnyLog {
    /// Makes every write so far durable: on sled a flush and fdatasync (the
    /// vault's key writes ride on it); on PostgreSQL every acknowledged append
    /// is already committed.
    pub fn sync(&self) -> Result<(), LogError> {
        match self {
            AnyLog::Sled(log) => log.sync(),
            AnyLog::Postgres(_) => Ok(()),
        }
    }

    /// The backend's name, for messages and benchmarks.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyLog::Sled(_) => "sled",
            AnyLog::Postgres(_) => "postgres",
        }
    }
}

impl EventStore for AnyLog {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, LogError> {
        match self {
            AnyLog::Sled(log) => log.append(request).await,
            AnyLog::Postgres(log) => log.append(request).await,
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        match self {
            AnyLog::Sled(log) => {
                log.read_stream(stream, from_version, direction, max_count)
                    .await
            }
            AnyLog::Postgres(log) => {
                log.read_stream(stream, from_version, direction, max_count)
                    .await
            }
        }
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<u64, LogError> {
        match self {
            AnyLog::Sled(log) => log.stream_version(stream).await,
            AnyLog::Postgres(log) => log.stream_version(stream).await,
        }
    }

    async fn read_all(
        &self,
        from_position: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        match self {
            AnyLog::Sled(log) => log.read_all(from_position, max_count).await,
            AnyLog::Postgres(log) => log.read_all(from_position, max_count).await,
        }
    }

    fn head(&self) -> u64 {
        match self {
            AnyLog::Sled(log) => log.head(),
            AnyLog::Postgres(log) => log.head(),
        }
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        match self {
            AnyLog::Sled(log) => log.watch_head(),
            AnyLog::Postgres(log) => log.watch_head(),
        }
    }

    async fn verify(&self) -> Result<VerifyReport, LogError> {
        match self {
            AnyLog::Sled(log) => log.verify().await,
            AnyLog::Postgres(log) => log.verify().await,
        }
    }
}
