//! `nexus bench`: `log` here (durable append and read throughput of the log on
//! this machine), `fulfilment` and `http` in their own files, what they compute
//! over samples in `stats`.
//!
//! Each workload runs in a fresh temp database so figures do not depend on what
//! ran before. Clients are tasks on the same runtime as the log, as in the server.

mod fulfilment;
mod http;
mod logins;
mod stats;

use stats::percentile_ms;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use nexus_core::log::{
    AppendRequest, EventId, EventStore, ExpectedVersion, NewEvent, SledLog, SledLogConfig,
    StreamName, SyncMode,
};
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
        match self.sync {
            SyncArg::Fdatasync => "nexus",
            SyncArg::Flush => "nexus-not-durable",
        }
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let duration = Duration::from_secs(args.seconds);
    if !args.json {
        println!(
            "{:<16} {:>7} {:>12} {:>12} {:>8} {:>8} {:>9} {:>10}",
            "workload", "clients", "ops/s", "events/s", "p50 ms", "p99 ms", "fsyncs", "ev/fsync"
        );
    }
    for &clients in &args.clients {
        let figure = runtime.block_on(appends(&args, clients, 1, duration))?;
        report(&figure, args.json)?;
    }
    let figure = runtime.block_on(appends(&args, BATCH_CLIENTS, BATCH_EVENTS, duration))?;
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
        println!(
            "{:<16} {:>7} {:>12.0} {:>12.0} {:>8.2} {:>8.2} {:>9} {:>10.1}",
            figure.workload,
            figure.clients,
            figure.ops_per_sec,
            figure.events_per_sec,
            figure.p50_ms,
            figure.p99_ms,
            figure.fsyncs,
            figure.events_per_fsync
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

/// `clients` writers, each appending `per_append` events to its own stream with
/// an exact expected version (conditional appends), for `duration`.
async fn appends(
    args: &LogBench,
    clients: usize,
    per_append: usize,
    duration: Duration,
) -> anyhow::Result<Figure> {
    let dir = temp_dir(args)?;
    let log = Arc::new(SledLog::open(&args.log_config(dir.path()))?);
    let syncs_before = log.stats().syncs;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let log = log.clone();
            let event_bytes = args.event_bytes;
            tokio::spawn(async move {
                let stream = StreamName::new(format!("bench-{client}"))?;
                let mut latencies_us = Vec::new();
                let mut version = 0u64;
                while Instant::now() < deadline {
                    let events = (0..per_append).map(|_| new_event(event_bytes)).collect();
                    let request = AppendRequest::single(
                        stream.clone(),
                        ExpectedVersion::Exact(version),
                        events,
                    );
                    let t = Instant::now();
                    let outcome = log.append(request).await?;
                    latencies_us.push(t.elapsed().as_micros() as u64);
                    version = outcome.events.last().map_or(version, |a| a.version);
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
    let fsyncs = log.stats().syncs - syncs_before;
    let ops = latencies_us.len() as u64;
    let events = ops * per_append as u64;
    latencies_us.sort_unstable();
    Ok(Figure {
        workload: if per_append == 1 {
            "append_single"
        } else {
            "append_batch"
        },
        system: args.system(),
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
