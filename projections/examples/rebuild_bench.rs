//! Full rebuild of every projection over a log of realistic events.
//!
//! ```sh
//! cargo run --release -p nexus-projections --example rebuild_bench -- --events 1000000
//! ```
//!
//! Options: `--events N` (default 1,000,000), `--tasks N` concurrent writers
//! while filling (default 64), `--dir PATH` to keep the store there and reuse
//! it on the next run (default: a temp dir, removed at the end), `--window N`
//! events per rebuild window (rows idle for a window are written; default:
//! `RebuildOptions::default()`).
//!
//! The fill appends domain events encoded as the command services encode them
//! (personal parts sealed by the vault), one append per command, from many
//! concurrent customers: registrations, e-mail reservations, deposits (invoice,
//! payment guard, credit), orders with their holds and a realistic mix of
//! outcomes (delivered and completed, cancelled, expired, no number), cashback,
//! code erasures, and anonymous buyers. What was ordered and the phone number
//! are sealed under the owner's subject, so the catalog's vault reads at
//! settlement are part of the figure.
//!
//! Then it drops and rebuilds all five projections and prints events/s.

mod workload;

/// The `nexus` binary's allocator, so this measures what `nexus replay` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use chrono::DateTime;
use nexus_core::domain::account::LookupKey;
use nexus_core::log::EventStore;
use nexus_core::vault::MasterKeySource;
use nexus_core::{Store, StoreConfig};
use nexus_projections::{rebuild, ReadModels, ReadModelsConfig, RebuildOptions, PROJECTION_NAMES};
use workload::{Rng, Writer};

struct Args {
    events: u64,
    tasks: u64,
    dir: Option<PathBuf>,
    window: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        events: 1_000_000,
        tasks: 64,
        dir: None,
        window: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => args.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--tasks" => args.tasks = value()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--window" => {
                args.window = Some(value()?.parse().map_err(|e| format!("--window: {e}"))?)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = Store::open(&StoreConfig {
        dir: dir.join("store"),
        master_key: MasterKeySource::GenerateAt(dir.join("master.key")),
        cache_capacity_bytes: 1 << 30,
    })?;
    let log = store.log.clone();
    if log.head() >= args.events {
        println!(
            "reusing the log in {} ({} events)",
            dir.display(),
            log.head()
        );
    } else {
        let started = Instant::now();
        let written = Arc::new(AtomicU64::new(log.head()));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..args.tasks)
                .map(|task| {
                    let writer = Writer {
                        log: log.clone(),
                        vault: store.vault.clone(),
                        lookup: LookupKey::new([0x5a; 32]),
                        rng: Rng(
                            0x9E37_79B9_7F4A_7C15 ^ (task + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
                        ),
                        now: DateTime::from_timestamp(1_764_000_000, 0).expect("a time"),
                        written: written.clone(),
                        target: args.events,
                    };
                    tokio::spawn(writer.run(task, args.tasks))
                })
                .collect();
            for task in tasks {
                task.await.expect("a writer");
            }
        });
        let secs = started.elapsed().as_secs_f64();
        println!(
            "filled the log: {} events in {secs:.1} s ({:.0} events/s)",
            log.head(),
            log.head() as f64 / secs
        );
    }

    let models = ReadModels::open(
        &ReadModelsConfig::new(dir.join("projections")),
        store.vault.clone(),
    )?;
    let mut options = RebuildOptions::default();
    if let Some(window) = args.window {
        options.window_events = window;
        options.max_staged_keys = usize::MAX;
    }
    let cpu_before = process_cpu_seconds();
    let report = runtime.block_on(rebuild(
        &log,
        &models,
        models.projections(),
        &options,
        |_, _| {},
    ))?;
    for outcome in &report.outcomes {
        if let Some(failure) = &outcome.failure {
            return Err(format!("{} failed {failure}", outcome.name).into());
        }
    }
    let keys: Vec<String> = PROJECTION_NAMES
        .iter()
        .map(|name| Ok(format!("{name} {}", models.tree(name)?.len())))
        .collect::<Result<_, nexus_projections::StorageError>>()?;
    let cpu = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => format!(", {:.2} CPU-s", after - before),
        _ => String::new(),
    };
    println!(
        "rebuilt {} projections over {} events in {:.2} s{cpu}: {:.0} events/s (keys: {})",
        report.outcomes.len(),
        report.head,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        keys.join(", ")
    );
    Ok(())
}

/// User and system CPU time of this process so far (Linux: `/proc/self/stat`,
/// in clock ticks of 10 ms), or `None` where that is not available.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): state is the
    // 3rd field of the line, utime the 14th and stime the 15th.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    const TICKS_PER_SECOND: f64 = 100.0;
    Some((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND)
}
