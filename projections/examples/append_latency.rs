//! How long a log append waits behind the projections' commits in one process.
//!
//! ```sh
//! cargo run --release -p nexus-projections --example append_latency -- --backlog 200000
//! ```
//!
//! sled's atomic batches take a process-wide lock: once a projection has
//! committed one, every sled operation of the process (the log's appends and
//! reads included) takes that lock, and a commit holds it exclusively while it
//! writes its keys. This example fills a log with a backlog of realistic
//! events (`--backlog N`, default 200,000), then appends one small event at a
//! steady rate (`--rate N` per second, default 200) for `--seconds N` (default
//! 5) in each phase, and prints each phase's append latency (p50, p99, max):
//!
//! 1. no projections running;
//! 2. the runner catching up over the backlog from position 0, with
//!    `--large-batch N` events per sled batch (default: the runner's default,
//!    1,000);
//! 3. the same with `--small-batch N` events per batch (default 100).
//!
//! Options: `--dir PATH` to keep the store there and reuse its log (default: a
//! temp dir). Every phase starts from empty read models.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nexus_core::domain::account::{AccountEvent, AccountObjectionSet, LookupKey};
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::ids::AccountId;
use nexus_core::log::{AnyLog, AppendRequest, EventId, EventStore, ExpectedVersion, StreamWrite};
use nexus_core::vault::{MasterKeySource, Vault};
use nexus_core::{Store, StoreConfig};
use nexus_projections::{ReadModels, ReadModelsConfig, Runner, RunnerConfig, DEFAULT_BATCH_EVENTS};

mod workload;

struct Args {
    backlog: u64,
    rate: u64,
    seconds: u64,
    small_batch: usize,
    large_batch: usize,
    dir: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        backlog: 200_000,
        rate: 200,
        seconds: 5,
        small_batch: 100,
        large_batch: DEFAULT_BATCH_EVENTS,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--backlog" => args.backlog = value()?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--rate" => args.rate = value()?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--small-batch" => {
                args.small_batch = value()?.parse().map_err(|e| format!("{arg}: {e}"))?
            }
            "--large-batch" => {
                args.large_batch = value()?.parse().map_err(|e| format!("{arg}: {e}"))?
            }
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.rate == 0 || args.seconds == 0 {
        return Err("--rate and --seconds must be positive".into());
    }
    Ok(args)
}

/// Appends one small event to an account stream every `1 / rate` seconds for
/// `seconds`; returns each append's latency, sorted.
async fn steady_appends(
    log: &Arc<AnyLog>,
    vault: &Vault,
    rate: u64,
    seconds: u64,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let account = AccountId::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latencies = Vec::with_capacity((rate * seconds) as usize);
    for n in 0..rate * seconds {
        tick.tick().await;
        let event = AccountEvent::AccountObjectionSet(AccountObjectionSet {
            object: n % 2 == 0,
            at: Utc::now(),
        });
        let request = AppendRequest {
            writes: vec![StreamWrite {
                stream: account.stream(),
                expected: ExpectedVersion::Any,
                events: vec![event.to_new_event(EventId::new(), vault)?],
            }],
            ..AppendRequest::default()
        };
        let started = Instant::now();
        log.append(request).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn report(phase: &str, latencies: &[Duration], applied: Option<(u64, u64)>) {
    let applied = match applied {
        Some((from, to)) => format!(", the runner applied {} events meanwhile", to - from),
        None => String::new(),
    };
    println!(
        "{phase}: {} appends, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{applied}",
        latencies.len(),
        quantile(latencies, 0.5),
        quantile(latencies, 0.99),
        quantile(latencies, 1.0),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = Store::open(&StoreConfig {
        dir: dir.join("store"),
        master_key: MasterKeySource::GenerateAt(dir.join("master.key")),
        cache_capacity_bytes: 1 << 30,
    })?;
    let log = store.log.clone();
    if log.head() < args.backlog {
        let written = Arc::new(AtomicU64::new(log.head()));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..64u64)
                .map(|task| {
                    let writer = workload::Writer {
                        log: log.clone(),
                        vault: store.vault.clone(),
                        lookup: LookupKey::new([0x5a; 32]),
                        rng: workload::Rng(
                            0x9E37_79B9_7F4A_7C15 ^ (task + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
                        ),
                        now: DateTime::from_timestamp(1_764_000_000, 0).expect("a time"),
                        written: written.clone(),
                        target: args.backlog,
                    };
                    tokio::spawn(writer.run(task, 64))
                })
                .collect();
            for task in tasks {
                task.await.expect("a writer");
            }
        });
    }
    println!(
        "backlog: {} events; {} appends per second for {} s per phase",
        log.head(),
        args.rate,
        args.seconds
    );

    let latencies =
        runtime.block_on(steady_appends(&log, &store.vault, args.rate, args.seconds))?;
    report("no projections", &latencies, None);

    for (phase, batch_size) in [
        ("runner catching up, large batch", args.large_batch),
        ("runner catching up, small batch", args.small_batch),
    ] {
        let models_dir = dir.join(format!("projections-{batch_size}"));
        if models_dir.exists() {
            std::fs::remove_dir_all(&models_dir)?;
        }
        let models = ReadModels::open(&ReadModelsConfig::new(&models_dir), store.vault.clone())?;
        let (latencies, applied) = runtime.block_on(async {
            let runner = Runner::start(
                log.clone(),
                &models,
                RunnerConfig {
                    batch_size,
                    ..RunnerConfig::default()
                },
            )?;
            let slowest = |runner: &Runner<AnyLog>| {
                runner
                    .names()
                    .iter()
                    .filter_map(|n| runner.progress(n))
                    .map(|p| p.position)
                    .min()
                    .unwrap_or(0)
            };
            // Let the runner start committing first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let from = slowest(&runner);
            let latencies = steady_appends(&log, &store.vault, args.rate, args.seconds).await?;
            let to = slowest(&runner);
            runner.stop().await;
            Ok::<_, Box<dyn std::error::Error>>((latencies, (from, to)))
        })?;
        report(
            &format!("{phase} ({batch_size} events per sled batch)"),
            &latencies,
            Some(applied),
        );
    }
    Ok(())
}
