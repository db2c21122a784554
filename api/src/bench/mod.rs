//! `nexus bench`: `log` here (durable append and read throughput of the log on
//! this machine), `fulfilment` and `http` in their own files, what they compute
//! over samples in `stats`.
//!
//! Each workload runs in a fresh temp database so figures do not depend on what
//! ran before. Clients are tasks on the same runtime as the log, as in the server.

mod fulfilment;
mod http;
mod logins;
mod peers;
mod stats;

use stats::percentile_ms;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use nexus_core::log::{
    AnyLog, AppendRequest, EventId, EventStore, ExpectedVersion, NewEvent, PgLog, PgLogConfig,
    SledLog, SledLogConfig, StreamName, SyncMode,
};
use nexus_core::postgres::{init_schema, PgAddress};
use serde::Serialize;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable appends (1, 16, 256 writers), batch appends, and read-all.
    Log(LogBench),
    /// Orders placed at a fixed rate against simulated upstreams: time from
    /// placed to number assigned.
    Fulfilment(fulfilment::FulfilmentBench),
    /// The HTTP API under load: `GET /v1/orders/{id}` and `POST /v1/orders`
    /// against the real server on the embedded default.
    Http(http::HttpBench),
    /// Other customers' sign-in latency while one account hammers the password
    /// routes, with the default limits on.
    Logins(logins::LoginsBench),
}

#[derive(Args)]
pub struct LogBench {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds each append workload runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent single-event writers, one workload each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 256])]
    clients: Vec<usize>,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 256)]
    event_bytes: usize,
    /// Events the read-all workload reads (the log is filled first).
    #[arg(long, default_value_t = 1_000_000)]
    read_events: u64,
    /// Where the temp databases go (default: the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// `flush` skips the fdatasync (NOT durable), to measure what it costs.
    #[arg(long, value_enum, default_value_t = SyncArg::Fdatasync)]
    sync: SyncArg,
    /// The backends Nexus's log is measured on.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![BackendArg::Sled])]
    backend: Vec<BackendArg>,
    /// Also measure, in the same run and per writer count, a plain append-only
    /// file with group commit (`file`, the machine's limit) and PostgreSQL used
    /// the common way (`postgres`, Message DB's `write_message` per event).
    #[arg(long)]
    peers: bool,
    /// A PostgreSQL database the benchmark may wipe, as a role that can create
    /// schemas and roles (the owner): for `--backend postgres` and `--peers`.
    /// The log runs as a role of its own with the runtime grants.
    #[arg(long, env = "NEXUS_BENCH_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    Sled,
    Postgres,
}

/// One system an append workload runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    /// Nexus on sled (`--sync` decides whether it is durable).
    NexusSled,
    NexusPostgres,
    File,
    MessageDb,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SyncArg {
    Fdatasync,
    Flush,
}

impl LogBench {
    fn log_config(&self, dir: &std::path::Path) -> SledLogConfig {
        let mut config = SledLogConfig::new(dir);
        config.sync = match self.sync {
            SyncArg::Fdatasync => SyncMode::Fdatasync,
            SyncArg::Flush => SyncMode::FlushOnlyNotDurable,
        };
        config
    }

    fn system(&self) -> &'static str {
        self.name(System::NexusSled)
    }

    fn name(&self, system: System) -> &'static str {
        match (system, self.sync) {
            (System::NexusSled, SyncArg::Fdatasync) => "nexus",
            (System::NexusSled, SyncArg::Flush) => "nexus-not-durable",
            (System::NexusPostgres, _) => "nexus-postgres",
            (System::File, _) => "file",
            (System::MessageDb, _) => "postgres",
        }
    }

    /// The systems measured per writer count, the file first (the others'
    /// ratio is to it).
    fn systems(&self) -> Vec<System> {
        let mut systems = Vec::new();
        if self.peers {
            systems.push(System::File);
        }
        if self.backend.contains(&BackendArg::Sled) {
            systems.push(System::NexusSled);
        }
        if self.backend.contains(&BackendArg::Postgres) {
            systems.push(System::NexusPostgres);
        }
        if self.peers {
            systems.push(System::MessageDb);
        }
        systems
    }

    fn postgres(&self) -> anyhow::Result<PgAddress> {
        let url = self.postgres_url.as_deref().context(
            "--backend postgres and --peers need --postgres-url (or NEXUS_BENCH_POSTGRES_URL)",
        )?;
        Ok(PgAddress::parse(url)?)
    }
}

/// Most clients one workload may start.
const MAX_CLIENTS: usize = 4096;
/// Events per append in the batch workload.
const BATCH_EVENTS: usize = 100;
const BATCH_CLIENTS: usize = 16;

#[derive(Serialize)]
struct Figure {
    workload: &'static str,
    system: &'static str,
    clients: usize,
    ops_per_sec: f64,
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ops: u64,
    events: u64,
    seconds: f64,
    fsyncs: u64,
    events_per_fsync: f64,
    /// Events/s over the plain file's in the same run and writer count.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_file: Option<f64>,
    /// Resident memory after the workload (Linux only).
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_mib: Option<f64>,
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    let args = match command {
        BenchCommand::Log(args) => args,
        BenchCommand::Fulfilment(args) => return fulfilment::run(args),
        BenchCommand::Http(args) => return http::run(args),
        BenchCommand::Logins(args) => return logins::run(args),
    };
    anyhow::ensure!(
        args.clients.iter().all(|c| (1..=MAX_CLIENTS).contains(c)),
        "--clients must be between 1 and {MAX_CLIENTS}"
    );
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(
        !args.backend.is_empty(),
        "--backend names at least one backend"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let duration = Duration::from_secs(args.seconds);
    if !args.json {
        println!(
            "{:<16} {:<18} {:>7} {:>12} {:>12} {:>8} {:>8} {:>9} {:>10} {:>7}",
            "workload",
            "system",
            "clients",
            "ops/s",
            "events/s",
            "p50 ms",
            "p99 ms",
            "commits",
            "ev/commit",
            "÷file"
        );
    }
    for &clients in &args.clients {
        let mut file_rate = None;
        for system in args.systems() {
            let mut figure = runtime.block_on(appends(&args, system, clients, 1, duration))?;
            if system == System::File {
                file_rate = Some(figure.events_per_sec);
            } else {
                figure.ratio_to_file = file_rate.map(|f| figure.events_per_sec / f);
            }
            report(&figure, args.json)?;
        }
    }
    if !args.backend.contains(&BackendArg::Sled) {
        return Ok(ExitCode::SUCCESS);
    }
    let figure = runtime.block_on(appends(
        &args,
        System::NexusSled,
        BATCH_CLIENTS,
        BATCH_EVENTS,
        duration,
    ))?;
    report(&figure, args.json)?;
    let [open, read] = runtime.block_on(open_and_read_all(&args))?;
    report(&open, args.json)?;
    report(&read, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn report(figure: &Figure, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(figure)?);
    } else {
        let ratio = figure
            .ratio_to_file
            .map_or(String::new(), |r| format!("{r:.2}"));
        println!(
            "{:<16} {:<18} {:>7} {:>12.0} {:>12.0} {:>8.2} {:>8.2} {:>9} {:>10.1} {:>7}",
            figure.workload,
            figure.system,
            figure.clients,
            figure.ops_per_sec,
            figure.events_per_sec,
            figure.p50_ms,
            figure.p99_ms,
            figure.fsyncs,
            figure.events_per_fsync,
            ratio
        );
    }
    Ok(())
}

fn temp_dir(args: &LogBench) -> anyhow::Result<tempfile::TempDir> {
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    };
    dir.context("creating a temp dir for the benchmark")
}

fn new_event(bytes: usize) -> NewEvent {
    NewEvent {
        id: EventId::new(),
        event_type: "BenchEvent".into(),
        schema_version: 1,
        payload: vec![0x5a; bytes],
        pii: None,
    }
}

/// What an append workload runs against, held open for the workload.
enum Target {
    /// The temp dir lives as long as the log in it.
    Nexus(Arc<AnyLog>, #[allow(dead_code)] Option<tempfile::TempDir>),
    File(
        peers::GroupCommitFile,
        #[allow(dead_code)] tempfile::TempDir,
    ),
    MessageDb(peers::MessageStore),
}

/// The role the PostgreSQL log runs as in the benchmark: the runtime grants.
const BENCH_RUNTIME_ROLE: &str = "nexus_bench_runtime";

impl Target {
    async fn open(args: &LogBench, system: System, clients: usize) -> anyhow::Result<Self> {
        Ok(match system {
            System::NexusSled => {
                let dir = temp_dir(args)?;
                let log = SledLog::open(&args.log_config(dir.path()))?;
                Target::Nexus(Arc::new(log.into()), Some(dir))
            }
            System::NexusPostgres => {
                let runtime = fresh_postgres_log(&args.postgres()?).await?;
                let log = PgLog::open(&PgLogConfig::new(runtime)).await?;
                Target::Nexus(Arc::new(log.into()), None)
            }
            System::File => {
                let dir = temp_dir(args)?;
                let file = peers::GroupCommitFile::create(&dir.path().join("log"))?;
                Target::File(file, dir)
            }
            System::MessageDb => {
                Target::MessageDb(peers::MessageStore::create(&args.postgres()?, clients).await?)
            }
        })
    }

    /// Durable points so far: fdatasyncs, or committed transactions.
    async fn commits(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Target::Nexus(log, _) => match log.as_ref() {
                AnyLog::Sled(log) => log.stats().syncs,
                AnyLog::Postgres(log) => log.groups(),
            },
            Target::File(file, _) => file.syncs(),
            Target::MessageDb(store) => store.commits().await?,
        })
    }

    /// Appends `per_append` events to `stream` at `version`; the new version.
    async fn append(
        &self,
        client: usize,
        stream: &StreamName,
        version: u64,
        per_append: usize,
        event_bytes: usize,
    ) -> anyhow::Result<u64> {
        match self {
            Target::Nexus(log, _) => {
                let events = (0..per_append).map(|_| new_event(event_bytes)).collect();
                let request =
                    AppendRequest::single(stream.clone(), ExpectedVersion::Exact(version), events);
                let outcome = log.append(request).await?;
                Ok(outcome.events.last().map_or(version, |a| a.version))
            }
            Target::File(file, _) => {
                let mut record = stream.as_str().as_bytes().to_vec();
                record.extend_from_slice(&version.to_be_bytes());
                record.extend_from_slice(&new_event(event_bytes).payload);
                file.append(record).await?;
                Ok(version + 1)
            }
            Target::MessageDb(store) => {
                anyhow::ensure!(
                    per_append == 1,
                    "the Message-DB peer writes one event a call"
                );
                let payload = serde_json::json!({ "data": "Z".repeat(event_bytes) });
                // Message DB counts positions from 0; -1 is "no stream yet".
                let expected = i64::try_from(version)? - 1;
                // Its lock is per category (the name before the first '-'):
                // a category per client, so its writers do not queue on one.
                let stream = format!("{}-0", stream.as_str().replace('-', ""));
                let position = store.write(client, &stream, &payload, expected).await?;
                Ok(u64::try_from(position + 1)?)
            }
        }
    }
}

/// Empties the Nexus schema and sets it up again, with the benchmark's runtime
/// role (created if missing, a new random password each time); the address to
/// serve as.
async fn fresh_postgres_log(owner: &PgAddress) -> anyhow::Result<PgAddress> {
    let client = owner.connect().await?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS nexus CASCADE;
             DO $$ BEGIN CREATE ROLE {BENCH_RUNTIME_ROLE} LOGIN;
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {BENCH_RUNTIME_ROLE} PASSWORD '{password}';"
        ))
        .await?;
    init_schema(&client, BENCH_RUNTIME_ROLE).await?;
    Ok(owner.as_role(BENCH_RUNTIME_ROLE, &password))
}

/// `clients` writers, each appending `per_append` events to its own stream with
/// an exact expected version (conditional appends), for `duration`.
async fn appends(
    args: &LogBench,
    system: System,
    clients: usize,
    per_append: usize,
    duration: Duration,
) -> anyhow::Result<Figure> {
    let target = Arc::new(Target::open(args, system, clients).await?);
    let commits_before = target.commits().await?;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let target = target.clone();
            let event_bytes = args.event_bytes;
            tokio::spawn(async move {
                let stream = StreamName::new(format!("bench-{client}"))?;
                let mut latencies_us = Vec::new();
                let mut version = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    version = target
                        .append(client, &stream, version, per_append, event_bytes)
                        .await?;
                    latencies_us.push(t.elapsed().as_micros() as u64);
                }
                anyhow::Ok(latencies_us)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let fsyncs = target.commits().await? - commits_before;
    let ops = latencies_us.len() as u64;
    let events = ops * per_append as u64;
    latencies_us.sort_unstable();
    Ok(Figure {
        workload: if per_append == 1 {
            "append_single"
        } else {
            "append_batch"
        },
        system: args.name(system),
        clients,
        ops_per_sec: ops as f64 / seconds,
        events_per_sec: events as f64 / seconds,
        p50_ms: percentile_ms(&latencies_us, 0.50),
        p99_ms: percentile_ms(&latencies_us, 0.99),
        ops,
        events,
        seconds,
        fsyncs,
        events_per_fsync: events as f64 / fsyncs.max(1) as f64,
        ratio_to_file: None,
        rss_mib: None,
    })
}

/// Fills a log with `read_events` events, reopens it (the open rebuilds the
/// in-memory indexes from the log), then reads everything once with read-all.
async fn open_and_read_all(args: &LogBench) -> anyhow::Result<[Figure; 2]> {
    const FILL_PER_APPEND: usize = 500;
    const READ_BATCH: usize = 10_000;
    let dir = temp_dir(args)?;
    {
        let log = Arc::new(SledLog::open(&args.log_config(dir.path()))?);
        let fillers = 8u64;
        let per_filler = args.read_events.div_ceil(fillers * FILL_PER_APPEND as u64);
        let tasks: Vec<_> = (0..fillers)
            .map(|f| {
                let log = log.clone();
                let event_bytes = args.event_bytes;
                tokio::spawn(async move {
                    let stream = StreamName::new(format!("fill-{f}"))?;
                    for _ in 0..per_filler {
                        let events = (0..FILL_PER_APPEND)
                            .map(|_| new_event(event_bytes))
                            .collect();
                        log.append(AppendRequest::single(
                            stream.clone(),
                            ExpectedVersion::Any,
                            events,
                        ))
                        .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
    }
    let rss_before = rss_mib();
    let opening = Instant::now();
    let log = SledLog::open(&args.log_config(dir.path()))?;
    let open_seconds = opening.elapsed().as_secs_f64();
    let head = log.head();
    let open = Figure {
        workload: "open",
        system: args.system(),
        clients: 1,
        ops_per_sec: 1.0 / open_seconds,
        events_per_sec: head as f64 / open_seconds,
        p50_ms: open_seconds * 1000.0,
        p99_ms: open_seconds * 1000.0,
        ops: 1,
        events: head,
        seconds: open_seconds,
        fsyncs: 0,
        events_per_fsync: 0.0,
        ratio_to_file: None,
        rss_mib: rss_mib()
            .zip(rss_before)
            .map(|(after, before)| after - before),
    };
    let started = Instant::now();
    let mut next = 1u64;
    let mut batch_latencies_us = Vec::new();
    // Bounded: each round moves `next` forward by at least one event.
    while next <= head {
        let t = Instant::now();
        let batch = log.read_all(next, READ_BATCH).await?;
        batch_latencies_us.push(t.elapsed().as_micros() as u64);
        let last = batch
            .last()
            .context("read-all returned nothing below the head")?;
        next = last.position + 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    batch_latencies_us.sort_unstable();
    let read = Figure {
        workload: "read_all",
        system: args.system(),
        clients: 1,
        ops_per_sec: batch_latencies_us.len() as f64 / seconds,
        events_per_sec: head as f64 / seconds,
        p50_ms: percentile_ms(&batch_latencies_us, 0.50),
        p99_ms: percentile_ms(&batch_latencies_us, 0.99),
        ops: batch_latencies_us.len() as u64,
        events: head,
        seconds,
        fsyncs: 0,
        events_per_fsync: 0.0,
        ratio_to_file: None,
        rss_mib: None,
    };
    Ok([open, read])
}

/// This process's resident memory, from /proc (None elsewhere).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
