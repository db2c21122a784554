//! `nexus audit verify|balance|export`: the finance audit, replayed from the
//! log on a stopped server (sled locks the store while `nexus serve` runs).
//!
//! - `verify`: the hash chain end to end, the ledger replayed (sums to zero,
//!   no wallet below zero), and the wallets read model equal to the replay.
//!   Exit status 2 when anything fails.
//! - `balance [--at TIME]`: the trial balance at a time (RFC 3339; now without).
//! - `export [--from TIME] [--to TIME] [--output FILE]`: every ledger entry of
//!   the range as JSON lines.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use nexus_core::log::EventStore;
use nexus_core::Store;
use nexus_projections::audit::{self, TrialBalance};

use crate::config::StoreSettings;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain, the ledger's invariants, and the wallets read
    /// model against the replayed ledger.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// The trial balance at a time (RFC 3339, e.g. 2026-12-31T23:59:59Z).
    Balance {
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every ledger entry in a time range, one JSON object per line.
    Export {
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

fn parse_time(what: &str, text: Option<&str>) -> anyhow::Result<Option<DateTime<Utc>>> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| {
                format!("--{what} must be an RFC 3339 time, e.g. 2026-12-31T23:59:59Z")
            })
    })
    .transpose()
}

pub fn run(config: StoreSettings, command: AuditCommand) -> anyhow::Result<ExitCode> {
    // Arguments first: a typo costs no store open.
    let (at, from, to) = match &command {
        AuditCommand::Balance { at, .. } => (parse_time("at", at.as_deref())?, None, None),
        AuditCommand::Export { from, to, .. } => (
            None,
            parse_time("from", from.as_deref())?,
            parse_time("to", to.as_deref())?,
        ),
        AuditCommand::Verify { .. } => (None, None, None),
    };
    let store = Store::open(&config.existing_store()?).context(
        "opening the store (a running `nexus serve` holds it: stop the server first; \
         the audit reads the log alone)",
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let _entered = runtime.enter();
    runtime.block_on(async {
        match command {
            AuditCommand::Verify { json } => verify(&config, &store, json).await,
            AuditCommand::Balance { json, .. } => {
                let trial = audit::trial_balance(store.log.as_ref(), at).await?;
                print_balance(&trial, json);
                Ok(if trial.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                })
            }
            AuditCommand::Export { output, .. } => {
                let written = match output {
                    Some(path) => {
                        let file = std::fs::File::create(&path)
                            .with_context(|| format!("creating {}", path.display()))?;
                        let mut out = std::io::BufWriter::new(file);
                        let n =
                            audit::export_entries(store.log.as_ref(), from, to, &mut out).await?;
                        out.flush()?;
                        n
                    }
                    None => {
                        let stdout = std::io::stdout();
                        let mut out = std::io::BufWriter::new(stdout.lock());
                        let n =
                            audit::export_entries(store.log.as_ref(), from, to, &mut out).await?;
                        out.flush()?;
                        n
                    }
                };
                eprintln!("{written} ledger entries exported");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn verify(config: &StoreSettings, store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let chain = store.log.verify().await?;
    let trial = audit::trial_balance(store.log.as_ref(), None).await?;
    let models = crate::replay::caught_up(config, store, "wallets").await?;
    let (mismatches, mismatch_count) =
        audit::compare_with_read_model(&trial, &models.wallets().context("the wallets view")?)?;
    let ok = chain.first_broken.is_none() && trial.ok() && mismatch_count == 0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": ok,
                "events_checked": chain.events_checked,
                "chain_broken_at": chain.first_broken.as_ref().map(|b| b.position),
                "entries_posted": trial.entries_posted,
                "ledger_total_micros": trial.total().to_string(),
                "negative_wallets": trial.negative_wallets_count,
                "read_model_mismatches": mismatch_count,
            })
        );
    } else {
        match &chain.first_broken {
            None => println!("hash chain: ok, {} events", chain.events_checked),
            Some(b) => println!(
                "hash chain: BROKEN at position {}: {}",
                b.position, b.reason
            ),
        }
        println!(
            "ledger: {} entries, total {} micro-dollars (must be 0), {} wallets below zero",
            trial.entries_posted,
            trial.total(),
            trial.negative_wallets_count
        );
        for (account, balance) in &trial.negative_wallets {
            println!("  below zero: {} {balance}", audit::account_name(account));
        }
        println!("wallets read model: {mismatch_count} accounts differ from the replay");
        for m in &mismatches {
            println!(
                "  {}: replayed {}, read model {}",
                m.account, m.replayed, m.read_model
            );
        }
        println!("{}", if ok { "ok" } else { "FAILED" });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print_balance(trial: &TrialBalance, json: bool) {
    let summary = trial.summary();
    if json {
        let accounts: serde_json::Map<String, serde_json::Value> = summary
            .iter()
            .map(|(name, micros)| {
                (
                    name.clone(),
                    serde_json::Value::String(micros_text(*micros)),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "ok": trial.ok(),
                "position": trial.position,
                "entries_posted": trial.entries_posted,
                "accounts": accounts,
                "total": micros_text(trial.total()),
                "negative_wallets": trial.negative_wallets_count,
            })
        );
        return;
    }
    println!(
        "trial balance through log position {} ({} entries):",
        trial.position, trial.entries_posted
    );
    for (name, micros) in &summary {
        println!("  {name:<20} {:>20}", micros_text(*micros));
    }
    println!("  {:<20} {:>20}", "total", micros_text(trial.total()));
    if trial.negative_wallets_count > 0 {
        println!(
            "  {} wallet accounts below zero",
            trial.negative_wallets_count
        );
    }
}

/// An i128 sum of micro-dollars as a decimal USD string (`-12.50`).
fn micros_text(micros: i128) -> String {
    match i64::try_from(micros) {
        Ok(m) => nexus_core::domain::money::Micros(m).to_string(),
        Err(_) => format!("{micros} micro-dollars"),
    }
}
