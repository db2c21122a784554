//! `nexus replay [NAME]`: drops the named projection (every projection without
//! a name) and rebuilds it from the log, with a progress line on a terminal and
//! a final count and rate. The server must not run meanwhile (sled locks the
//! store: opening it fails while `nexus serve` holds it).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nexus_core::log::EventStore;
use nexus_core::Store;
use nexus_projections::{
    rebuild, ReadModels, ReadModelsConfig, RebuildOptions, Runner, RunnerConfig, PROJECTION_NAMES,
};

use crate::config::StoreSettings;

/// Width of the progress bar, in characters.
const BAR_WIDTH: usize = 30;
/// How often the progress line is redrawn at most.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

pub fn run(config: StoreSettings, name: Option<String>) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.existing_store()?).context(
        "opening the store (a running `nexus serve` holds it: stop the server first; \
         GET /v1/admin/projections shows the read models while it runs)",
    )?;
    let models = ReadModels::open(
        &ReadModelsConfig::in_data_dir(&config.data_dir),
        store.vault.clone(),
    )
    .context("opening the read models")?;
    let projections = match &name {
        Some(name) => vec![models.projection(name).with_context(|| {
            format!(
                "no projection {name:?}; the projections are {}",
                PROJECTION_NAMES.join(", ")
            )
        })?],
        None => models.projections(),
    };
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let names = names.join(", ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;

    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut drawn: Option<Instant> = None;
    let report = runtime.block_on(rebuild(
        &store.log,
        &models,
        projections,
        &RebuildOptions::default(),
        |done, head| {
            if terminal && drawn.is_none_or(|at| at.elapsed() >= REDRAW_EVERY || done == head) {
                draw(done, head, started.elapsed());
                drawn = Some(Instant::now());
            }
        },
    ))?;
    if terminal {
        eprintln!();
    }

    let mut failed = false;
    for outcome in &report.outcomes {
        if let Some(failure) = &outcome.failure {
            failed = true;
            println!(
                "FAILED {}: stopped {failure} (applied up to {})",
                outcome.name, outcome.position
            );
        }
    }
    println!(
        "rebuilt {names}: {} events in {:.2} s ({:.0} events/s)",
        report.head,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// One progress line, redrawn in place: `[#####.....] 1234/5678 events, 42%, 1.2 s`.
fn draw(done: u64, head: u64, elapsed: Duration) {
    let fraction = if head == 0 {
        1.0
    } else {
        done as f64 / head as f64
    };
    let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{}{}] {done}/{head} events, {:.0}%, {:.1} s",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        fraction * 100.0,
        elapsed.as_secs_f64()
    );
    let _ = err.flush();
}

/// How long an offline command waits for a read model to catch up with the log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// The read models with projection `name` caught up to the log's head (the
/// runner stopped again): what the offline commands (`audit`, `retention`)
/// read after a stopped server.
pub async fn caught_up(
    config: &StoreSettings,
    store: &Store,
    name: &str,
) -> anyhow::Result<ReadModels> {
    let models = ReadModels::open(
        &ReadModelsConfig::in_data_dir(&config.data_dir),
        store.vault.clone(),
    )
    .context("opening the read models")?;
    let runner = Runner::start(store.log.clone(), &models, RunnerConfig::default())
        .context("starting the projections")?;
    runner
        .wait_for(Some(name), store.log.head(), CATCH_UP_TIMEOUT)
        .await
        .with_context(|| format!("catching the {name} read model up with the log"))?;
    runner.stop().await;
    Ok(models)
}
