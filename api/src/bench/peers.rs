//! What `nexus bench log --peers` measures Nexus against, in the same run:
//! `file`, a plain append-only file with group commit (one writer thread, one
//! write and one fdatasync per group: the machine's durable-write limit), and
//! `postgres`, PostgreSQL used the common way (Message DB's shape: a
//! `write_message` function per event, in its own transaction, taking the
//! category's advisory lock, checking the expected version, inserting one row
//! with a global position from a sequence; `synchronous_commit = on`).
//!
//! Each client appends single 256-byte events to a stream of its own, as the
//! Nexus workloads do; for the Message-DB peer each stream is in a category of
//! its own, its best case (its advisory lock is per category).

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use nexus_core::postgres::PgAddress;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

/// Appends waiting for the file's writer thread.
const MAX_QUEUED: usize = 16 * 1024;
/// Most appends one file group takes.
const MAX_GROUP: usize = 8 * 1024;
/// Most connections the Message-DB peer opens; its clients share them (each
/// connection pipelines its clients' calls, each call its own transaction).
const MAX_PEER_CONNECTIONS: usize = 64;

type Reply = oneshot::Sender<std::io::Result<()>>;

/// The plain file: appends `[len u32][bytes]` records with group commit.
pub(super) struct GroupCommitFile {
    jobs: Option<mpsc::Sender<(Vec<u8>, Reply)>>,
    writer: Option<std::thread::JoinHandle<()>>,
    syncs: Arc<std::sync::atomic::AtomicU64>,
}

impl GroupCommitFile {
    pub(super) fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let mut file = std::fs::File::create(path).context("creating the peer file")?;
        let (tx, mut rx) = mpsc::channel::<(Vec<u8>, Reply)>(MAX_QUEUED);
        let syncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = syncs.clone();
        let writer = std::thread::spawn(move || {
            let mut buffer = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                buffer.clear();
                for (bytes, _) in &group {
                    buffer.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    buffer.extend_from_slice(bytes);
                }
                let result = file.write_all(&buffer).and_then(|()| file.sync_data());
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (_, reply) in group {
                    let answer = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    };
                    let _ = reply.send(answer);
                }
            }
        });
        Ok(Self {
            jobs: Some(tx),
            writer: Some(writer),
            syncs,
        })
    }

    /// Appends one record; returns once it is fdatasync-durable.
    pub(super) async fn append(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        let jobs = self.jobs.as_ref().context("the file is closed")?;
        jobs.send((bytes, reply))
            .await
            .context("the file writer stopped")?;
        Ok(answer.await.context("the file writer stopped")??)
    }

    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for GroupCommitFile {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The Message-DB-shaped schema and function, written afresh for each workload.
const MESSAGE_STORE: &str = r"
DROP SCHEMA IF EXISTS bench_message_store CASCADE;
CREATE SCHEMA bench_message_store;
CREATE TABLE bench_message_store.messages (
    global_position bigserial PRIMARY KEY,
    position bigint NOT NULL,
    time timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    stream_name text NOT NULL,
    type text NOT NULL,
    data jsonb,
    metadata jsonb,
    id uuid NOT NULL UNIQUE
);
CREATE UNIQUE INDEX messages_stream ON bench_message_store.messages (stream_name, position);
CREATE INDEX messages_category ON bench_message_store.messages
    (split_part(stream_name, '-', 1), global_position);
CREATE FUNCTION bench_message_store.write_message(
    _id uuid, _stream_name text, _type text, _data jsonb, _metadata jsonb,
    _expected_version bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    _version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(split_part(_stream_name, '-', 1), 0));
    SELECT coalesce(max(position), -1) INTO _version
        FROM bench_message_store.messages WHERE stream_name = _stream_name;
    IF _expected_version IS NOT NULL AND _expected_version <> _version THEN
        RAISE EXCEPTION 'Wrong expected version: % (stream %, version %)',
            _expected_version, _stream_name, _version;
    END IF;
    INSERT INTO bench_message_store.messages (id, stream_name, position, type, data, metadata)
        VALUES (_id, _stream_name, _version + 1, _type, _data, _metadata);
    RETURN _version + 1;
END;
$$;
";

/// The Message-DB peer: connections sharing its clients' calls.
pub(super) struct MessageStore {
    clients: Vec<Client>,
}

impl MessageStore {
    /// Recreates the schema (as `owner`) and opens `min(clients, 64)` connections.
    pub(super) async fn create(owner: &PgAddress, clients: usize) -> anyhow::Result<Self> {
        let setup = owner.connect().await?;
        setup.batch_execute(MESSAGE_STORE).await?;
        let mut connections = Vec::new();
        for _ in 0..clients.clamp(1, MAX_PEER_CONNECTIONS) {
            let client = owner.connect().await?;
            client.batch_execute("SET synchronous_commit = on").await?;
            connections.push(client);
        }
        Ok(Self {
            clients: connections,
        })
    }

    /// Writes one message with the version the client expects; the new version.
    pub(super) async fn write(
        &self,
        client: usize,
        stream: &str,
        payload: &serde_json::Value,
        expected_version: i64,
    ) -> anyhow::Result<i64> {
        let connection = &self.clients[client % self.clients.len()];
        let id = uuid::Uuid::now_v7();
        let row = connection
            .query_one(
                "SELECT bench_message_store.write_message($1, $2, 'BenchEvent', $3::text::jsonb, \
                 NULL, $4)",
                &[&id, &stream, &payload.to_string(), &expected_version],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Transactions committed so far (each call is one).
    pub(super) async fn commits(&self) -> anyhow::Result<u64> {
        let row = self.clients[0]
            .query_one("SELECT count(*) FROM bench_message_store.messages", &[])
            .await?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}
