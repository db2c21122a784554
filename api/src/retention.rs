//! `nexus retention status|run|verify`: the retention sweeps from the command
//! line, on a stopped server (sled locks the store: while `nexus serve` runs,
//! use `POST /v1/admin/retention/sweep` and `GET /v1/admin/retention/verify`,
//! and the server's own schedule, `NEXUS_RETENTION_SWEEP_SECS`).
//!
//! The read models are caught up with the log first, so the schedule is
//! current. Output is for people; `--json` gives one JSON object.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::SecondsFormat;
use clap::Subcommand;
use nexus_core::domain::clock::SystemClock;
use nexus_core::log::EventStore;
use nexus_core::service::account_service::Accounts;
use nexus_core::service::legal_hold_service::LegalHoldService;
use nexus_core::Store;
use nexus_retention::Sweeper;

use crate::config::{DomainSettings, StoreSettings};

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// What is scheduled, what is due now, what is held, and when each month of
    /// financial records is due.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run the sweeps now: erase every due subject not under a legal hold, then
    /// begin a new vault key epoch if anything was erased since the last one, so
    /// the erasures hold in any copy of the data directory taken afterwards.
    Run {
        #[arg(long)]
        json: bool,
    },
    /// Prove the sweeps: recorded erasures have no key left and nothing is
    /// overdue unless held. Exit status 2 when the proof fails.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(
    config: StoreSettings,
    domain: &DomainSettings,
    command: RetentionCommand,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.existing_store()?).context(
        "opening the store (while `nexus serve` runs, use the admin routes \
         /v1/admin/retention/sweep and /v1/admin/retention/verify)",
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let _entered = runtime.enter();
    let (commerce, accounts) = crate::serve::domain_services(domain, &store)?;
    let holds = Arc::new(LegalHoldService::new(
        store.log.clone(),
        store.vault.clone(),
        Arc::new(SystemClock),
    ));
    let models = runtime.block_on(crate::replay::caught_up(&config, &store, "retention"))?;
    let sweeper = Sweeper::new(
        store.log.clone(),
        store.vault.clone(),
        accounts.clone(),
        commerce,
        holds,
        models
            .retention()
            .context("opening the retention schedule")?,
        Arc::new(SystemClock),
    );
    runtime.block_on(async {
        match command {
            RetentionCommand::Status { json } => status(&sweeper, json).await,
            RetentionCommand::Run { json } => {
                let code = sweep(&sweeper, json).await?;
                rotate_keys(&store.vault, &accounts, json).await?;
                Ok(code)
            }
            RetentionCommand::Verify { json } => verify(&sweeper, json).await,
        }
    })
}

async fn status<S: EventStore>(sweeper: &Sweeper<S>, json: bool) -> anyhow::Result<ExitCode> {
    let status = sweeper.status().await?;
    let next_due = status.next_due.map(|next| {
        (
            next.subject.subject().as_str().to_owned(),
            next.due_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
    });
    if json {
        let months: Vec<_> = status
            .financial_months
            .iter()
            .map(|m| {
                serde_json::json!({
                    "month": format!("{:04}-{:02}", m.year, m.month),
                    "records": m.records,
                    "due_at": m.due_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "scheduled": status.scheduled,
                "due_now": status.due_now,
                "held": status.held,
                "next_due": next_due.map(|(subject, at)| serde_json::json!({"subject": subject, "due_at": at})),
                "financial_months": months,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "subjects scheduled for erasure: {} ({} due now, {} under a legal hold)",
        status.scheduled, status.due_now, status.held
    );
    if let Some((subject, at)) = next_due {
        println!("next due: {subject} at {at}");
    }
    println!("financial records (kept 7 years; pruning is not built yet):");
    for m in &status.financial_months {
        println!(
            "  {:04}-{:02}: {} records, due {}",
            m.year,
            m.month,
            m.records,
            m.due_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A new key epoch when erasures are pending: their keys, and the lookup
/// hashes of their addresses, become unrecoverable.
async fn rotate_keys<S: EventStore>(
    vault: &nexus_core::vault::Vault,
    accounts: &Accounts<S>,
    json: bool,
) -> anyhow::Result<()> {
    if !vault.erasures_pending()? {
        return Ok(());
    }
    let now_unix_s = crate::serve::now_unix_s();
    let k = accounts
        .rotate_keys(now_unix_s)
        .await
        .context("rotating the vault's key epoch")?;
    let r = &k.rotation;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "key_epoch": r.epoch,
                "rewrapped_keys": r.rewrapped_keys,
                "destroyed_epochs": r.destroyed_epochs,
                "moved_addresses": k.moved_addresses,
            })
        );
    } else {
        println!(
            "key epoch {} begun: {} keys wrapped anew, {} address lookups moved, \
             {} old epoch keys destroyed",
            r.epoch, r.rewrapped_keys, k.moved_addresses, r.destroyed_epochs
        );
    }
    Ok(())
}

async fn sweep<S: EventStore>(sweeper: &Sweeper<S>, json: bool) -> anyhow::Result<ExitCode> {
    let r = sweeper.sweep().await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "examined": r.examined,
                "accounts_erased": r.accounts_erased,
                "anonymous_erased": r.anonymous_erased,
                "held": r.held,
                "skipped": r.skipped,
                "failed": r.failed,
                "more_due": r.more_due,
            })
        );
    } else {
        println!(
            "examined {}: {} accounts erased, {} anonymous buyers erased, {} held, {} skipped, {} failed{}",
            r.examined,
            r.accounts_erased,
            r.anonymous_erased,
            r.held,
            r.skipped,
            r.failed,
            if r.more_due { " (more due: run again)" } else { "" }
        );
    }
    Ok(if r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn verify<S: EventStore>(sweeper: &Sweeper<S>, json: bool) -> anyhow::Result<ExitCode> {
    let r = sweeper.verify().await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": r.ok(),
                "events_checked": r.events_checked,
                "erasures_recorded": r.erasures_recorded,
                "keys_still_present": r.keys_still_present,
                "overdue": r.overdue,
            })
        );
    } else if r.ok() {
        println!(
            "ok: {} events checked, {} erasures recorded, every key gone, nothing overdue",
            r.events_checked, r.erasures_recorded
        );
    } else {
        println!(
            "FAILED: {} events checked, {} erasures recorded",
            r.events_checked, r.erasures_recorded
        );
        for subject in &r.keys_still_present {
            println!("  erasure recorded but its key is still in the vault: {subject}");
        }
        for subject in &r.overdue {
            println!("  overdue (not held, not erased): {subject}");
        }
    }
    Ok(if r.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
